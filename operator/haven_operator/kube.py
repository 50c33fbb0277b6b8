"""The operator's Kubernetes API calls (blocking; handlers run them in worker threads).

Children are written with server-side apply under one field manager, so applying the same
manifest again is a no-op and an operator restart at any moment converges without duplicates.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import kubernetes
from kubernetes.client import ApiException

from .children import GROUP, MANAGER, VERSION

APPLY = "application/apply-patch+yaml"
# Every API call has a deadline: (connect, read) seconds. A hung call fails and is retried.
TIMEOUT = (5, 30)


def load_config() -> None:
    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()


class Kube:
    def __init__(self, api_client: kubernetes.client.ApiClient | None = None) -> None:
        client = api_client or kubernetes.client.ApiClient()
        self.core = kubernetes.client.CoreV1Api(client)
        self.apps = kubernetes.client.AppsV1Api(client)
        self.net = kubernetes.client.NetworkingV1Api(client)
        self.custom = kubernetes.client.CustomObjectsApi(client)

    def _verbs(self, kind: str) -> tuple[Any, Any, Any]:
        """(read, patch, delete) for a child kind."""
        return {
            "Deployment": (
                self.apps.read_namespaced_deployment,
                self.apps.patch_namespaced_deployment,
                self.apps.delete_namespaced_deployment,
            ),
            "Service": (
                self.core.read_namespaced_service,
                self.core.patch_namespaced_service,
                self.core.delete_namespaced_service,
            ),
            "PersistentVolumeClaim": (
                self.core.read_namespaced_persistent_volume_claim,
                self.core.patch_namespaced_persistent_volume_claim,
                self.core.delete_namespaced_persistent_volume_claim,
            ),
            "Ingress": (
                self.net.read_namespaced_ingress,
                self.net.patch_namespaced_ingress,
                self.net.delete_namespaced_ingress,
            ),
            "Secret": (self.core.read_namespaced_secret, None, None),
        }[kind]

    def get(self, kind: str, namespace: str, name: str) -> dict | None:
        """One child as a plain dict (camelCase, as the API has it), or None if absent.
        The JSON is parsed as is: the client's models cost several times the CPU (a profile
        of 1000 LiveStreams applied at once had them first)."""
        read = self._verbs(kind)[0]
        try:
            resp = read(name, namespace, _request_timeout=TIMEOUT, _preload_content=False)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        data = json.loads(resp.data)
        data["kind"] = kind
        return data

    def apply(self, manifest: dict[str, Any]) -> dict:
        """Server-side apply of one child we own, taking its fields back from other managers
        (someone's `kubectl scale` or edit). Ownership is checked before (ownership.py).
        Returns the object written, as a plain dict."""
        kind = manifest["kind"]
        name, namespace = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
        kwargs = {
            "field_manager": MANAGER,
            "force": True,
            "_content_type": APPLY,
            "_request_timeout": TIMEOUT,
            "_preload_content": False,
        }
        return json.loads(self._verbs(kind)[1](name, namespace, manifest, **kwargs).data)

    def delete(self, kind: str, namespace: str, name: str, uid: str) -> None:
        """Delete a child, only if it is still the object with `uid` (a precondition)."""
        body = kubernetes.client.V1DeleteOptions(
            preconditions=kubernetes.client.V1Preconditions(uid=uid)
        )
        try:
            self._verbs(kind)[2](name, namespace, body=body, _request_timeout=TIMEOUT)
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise

    def create_if_missing(self, manifest: dict[str, Any]) -> Any | None:
        """Create a Secret unless it exists: a new token must not replace the pod's.

        Returns None if it was created, else the Secret that exists."""
        name, namespace = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
        while True:
            try:
                self.core.create_namespaced_secret(namespace, manifest, _request_timeout=TIMEOUT)
                return None
            except ApiException as exc:
                if exc.status != 409:
                    raise
            try:
                return self.core.read_namespaced_secret(name, namespace, _request_timeout=TIMEOUT)
            except ApiException as exc:
                if exc.status != 404:  # deleted since: create it after all
                    raise

    def secret_value(self, namespace: str, name: str, key: str) -> str | None:
        try:
            secret = self.core.read_namespaced_secret(name, namespace, _request_timeout=TIMEOUT)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        data = (secret.data or {}).get(key)
        return base64.b64decode(data).decode() if data is not None else None

    def livestream(self, namespace: str, name: str) -> dict | None:
        try:
            return self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, "livestreams", name, _request_timeout=TIMEOUT
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def recordings_of(self, namespace: str, livestream: str) -> list[dict]:
        items = self.custom.list_namespaced_custom_object(
            GROUP, VERSION, namespace, "recordings", _request_timeout=TIMEOUT
        )
        return [r for r in items["items"] if r["spec"]["liveStreamRef"]["name"] == livestream]

    def patch_status(self, plural: str, namespace: str, name: str, status: dict) -> None:
        self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, plural, name, {"status": status}, _request_timeout=TIMEOUT
        )

    def create_recording(self, manifest: dict[str, Any]) -> bool:
        """Create a Recording; False if one of that name exists already (a repeat)."""
        try:
            self.custom.create_namespaced_custom_object(
                GROUP, VERSION, manifest["metadata"]["namespace"], "recordings", manifest,
                _request_timeout=TIMEOUT,
            )  # fmt: skip
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        return True

    def delete_recording(self, namespace: str, name: str, uid: str) -> None:
        """Delete a Recording, only if it is still the object with `uid`."""
        body = kubernetes.client.V1DeleteOptions(
            preconditions=kubernetes.client.V1Preconditions(uid=uid)
        )
        try:
            self.custom.delete_namespaced_custom_object(
                GROUP, VERSION, namespace, "recordings", name, body=body, _request_timeout=TIMEOUT
            )
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise

    def patch_recording_spec(self, namespace: str, name: str, spec: dict) -> None:
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, "recordings", name, {"spec": spec}, _request_timeout=TIMEOUT
        )


def api_error(exc: ApiException) -> tuple[str, str]:
    """(reason, message) the API server gave for a failed call, e.g. ('Invalid', '...')."""
    try:
        body = json.loads(exc.body or "{}")
    except ValueError:
        body = {}
    reason = body.get("reason") or (exc.reason or "").replace(" ", "") or str(exc.status)
    return reason, body.get("message") or str(exc.reason or exc)

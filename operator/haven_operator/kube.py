"""The operator's Kubernetes API calls (blocking; handlers run them in worker threads).

Children are written with server-side apply under one field manager, so applying the same
manifest again is a no-op and an operator restart at any moment converges without duplicates.
"""

from __future__ import annotations

import base64
from typing import Any

import kubernetes
from kubernetes.client import ApiException

from .children import GROUP, MANAGER, VERSION

APPLY = "application/apply-patch+yaml"


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

    def apply(self, manifest: dict[str, Any]) -> Any:
        """Server-side apply of one child, taking over fields from other managers."""
        kind = manifest["kind"]
        name, namespace = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
        kwargs = {"field_manager": MANAGER, "force": True, "_content_type": APPLY}
        patch = {
            "Deployment": self.apps.patch_namespaced_deployment,
            "Service": self.core.patch_namespaced_service,
            "PersistentVolumeClaim": self.core.patch_namespaced_persistent_volume_claim,
            "Ingress": self.net.patch_namespaced_ingress,
        }[kind]
        return patch(name, namespace, manifest, **kwargs)

    def create_if_missing(self, manifest: dict[str, Any]) -> Any | None:
        """Create a Secret unless it exists: a new token must not replace the pod's.

        Returns None if it was created, else the Secret that exists."""
        name, namespace = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
        while True:
            try:
                self.core.create_namespaced_secret(namespace, manifest)
                return None
            except ApiException as exc:
                if exc.status != 409:
                    raise
            try:
                return self.core.read_namespaced_secret(name, namespace)
            except ApiException as exc:
                if exc.status != 404:  # deleted since: create it after all
                    raise

    def secret_value(self, namespace: str, name: str, key: str) -> str | None:
        try:
            secret = self.core.read_namespaced_secret(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        data = (secret.data or {}).get(key)
        return base64.b64decode(data).decode() if data is not None else None

    def delete_ingress(self, namespace: str, name: str) -> None:
        try:
            self.net.delete_namespaced_ingress(name, namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def claim_phase(self, namespace: str, name: str) -> str | None:
        try:
            return self.core.read_namespaced_persistent_volume_claim(name, namespace).status.phase
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def stream_pods(self, namespace: str, livestream: str) -> list[Any]:
        selector = f"{GROUP}/livestream={livestream}"
        return self.core.list_namespaced_pod(namespace, label_selector=selector).items

    def livestream(self, namespace: str, name: str) -> dict | None:
        try:
            return self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, "livestreams", name
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def recordings_of(self, namespace: str, livestream: str) -> list[dict]:
        items = self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "recordings")
        return [r for r in items["items"] if r["spec"]["liveStreamRef"]["name"] == livestream]

    def patch_status(self, plural: str, namespace: str, name: str, status: dict) -> None:
        self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, plural, name, {"status": status}
        )

    def patch_recording_spec(self, namespace: str, name: str, spec: dict) -> None:
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, "recordings", name, {"spec": spec}
        )

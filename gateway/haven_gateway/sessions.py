"""Live sessions and recordings as custom resources: a session for a mint is the LiveStream
named after it, a recording is a Recording of that LiveStream. The cluster is the only state.

Calls block (the kubernetes client is synchronous); the app runs them in worker threads.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re
import time
from typing import Any

import kubernetes
from kubernetes.client import ApiException

GROUP, VERSION = "streams.haven.dev", "v1alpha1"
MINT_LABEL = f"{GROUP}/mint-id"
MANAGED_BY = {"app.kubernetes.io/managed-by": "haven-gateway"}
MINT = re.compile(r"^[1-9A-HJ-NP-Za-km-z]{32,44}$")  # base58, as the CRD's schema has it
FINAL = ("Completed", "Failed")
OUTPUT_FORMAT_ANNOTATION = f"{GROUP}/output-format"  # the client's output_format, verbatim


class InvalidMint(ValueError):
    pass


class SessionStopping(RuntimeError):
    """The mint's LiveStream is still being deleted."""


def check_mint(mint: str) -> str:
    if not MINT.match(mint):
        raise InvalidMint(f"invalid mint id {mint!r}: expected 32 to 44 base58 characters")
    return mint


def stream_name(mint: str) -> str:
    """The LiveStream for a mint: readable, DNS-safe, and unique (mints are case-sensitive)."""
    digest = hashlib.sha256(mint.encode()).hexdigest()[:8]
    return f"pump-{mint[:8].lower()}-{digest}"


def condition(obj: dict, type_: str) -> dict:
    conditions = obj.get("status", {}).get("conditions", [])
    return next((c for c in conditions if c["type"] == type_), {})


def _created(obj: dict) -> tuple[str, str]:
    return obj["metadata"]["creationTimestamp"], obj["metadata"]["name"]


def is_active(recording: dict) -> bool:
    """Recording now: not finalized, and not asked to stop. A stopped Recording that is still
    finalizing its file no longer counts: a new one may start beside it."""
    return (
        recording.get("status", {}).get("phase") not in FINAL
        and not recording["spec"].get("stopped")
        and not recording["metadata"].get("deletionTimestamp")
    )


def session_info(stream: dict) -> dict[str, Any]:
    status, mint = stream.get("status", {}), stream["metadata"]["labels"][MINT_LABEL]
    return {
        "mint_id": mint,
        "stream": stream["metadata"]["name"],
        "phase": status.get("phase", "Pending"),
        "live": status.get("phase") == "Live",
        "participant": status.get("participant"),
        "video": status.get("video"),
        "viewers": status.get("viewers", 0),
        "active_recordings": status.get("activeRecordings", 0),
        "websocket": f"/api/live-sessions/stream/{mint}",
        "started_at": stream["metadata"]["creationTimestamp"],
        "message": condition(stream, "Ready").get("message"),
    }


def recording_info(recording: dict) -> dict[str, Any]:
    spec, status = recording["spec"], recording.get("status", {})
    labels, annotations = recording["metadata"]["labels"], recording["metadata"].get("annotations")
    phase = status.get("phase", "Pending")
    return {
        "mint_id": labels[MINT_LABEL],
        "recording": recording["metadata"]["name"],
        # what the client asked for (e.g. "mpegts"), and the Recording's format it maps to
        "output_format": (annotations or {}).get(OUTPUT_FORMAT_ANNOTATION, spec.get("format")),
        "format": spec.get("format"),
        "container": spec.get("container"),  # unset: the format's own
        "video_quality": spec.get("quality"),
        "phase": phase,
        "active": is_active(recording),
        "stopped": bool(spec.get("stopped")),
        "final": phase in FINAL,
        "created_at": recording["metadata"].get("creationTimestamp"),
        "started_at": status.get("startedAt"),
        "stopped_at": status.get("stoppedAt"),
        "duration_seconds": status.get("durationSeconds", 0),
        "bytes_written": status.get("bytesWritten", 0),
        "frames_written": status.get("framesWritten", 0),
        "frames_dropped": status.get("framesDropped", 0),
        "video_codec": status.get("videoCodec"),
        "audio_codec": status.get("audioCodec"),
        "claim": status.get("claimName"),
        "files": status.get("files", []),
        "message": status.get("message"),
    }


class Store:
    """LiveStreams and Recordings in one namespace, keyed by mint."""

    def __init__(self, namespace: str, api_client: kubernetes.client.ApiClient | None = None):
        self.namespace = namespace
        client = api_client or kubernetes.client.ApiClient()
        self.api = kubernetes.client.CustomObjectsApi(client)
        self.core = kubernetes.client.CoreV1Api(client)

    def _list(self, plural: str, mint: str | None = None) -> list[dict]:
        selector = f"{MINT_LABEL}={mint}" if mint else MINT_LABEL
        items = self.api.list_namespaced_custom_object(
            GROUP, VERSION, self.namespace, plural, label_selector=selector
        )["items"]
        # creationTimestamp has whole seconds; the gateway's names carry milliseconds after it
        return sorted(items, key=_created)

    def stream(self, mint: str) -> dict | None:
        try:
            return self.api.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, "livestreams", stream_name(mint)
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def streams(self) -> list[dict]:
        return self._list("livestreams")

    def create_stream(self, mint: str, timeout: float = 30) -> tuple[dict, bool]:
        """The mint's LiveStream, created if missing and resumed if suspended; and whether it
        was created by this call. One still being deleted (a session just stopped) is waited
        out, up to `timeout` seconds, then made anew."""
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "LiveStream",
            "metadata": {"name": stream_name(mint), "labels": {MINT_LABEL: mint, **MANAGED_BY}},
            "spec": {"source": {"pumpfun": {"mintId": mint}}},
        }
        deadline = time.monotonic() + timeout
        while True:
            try:
                created = self.api.create_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, "livestreams", body
                )
                return created, True
            except ApiException as exc:
                if exc.status != 409:
                    raise
            existing = self.stream(mint)
            if existing is not None and not existing["metadata"].get("deletionTimestamp"):
                break
            if time.monotonic() > deadline:
                raise SessionStopping(f"the session for mint {mint} is still stopping")
            time.sleep(0.5)  # gone meanwhile, or going: create it again
        if existing["spec"].get("suspend"):
            existing = self.api.patch_namespaced_custom_object(
                GROUP, VERSION, self.namespace, "livestreams", stream_name(mint),
                {"spec": {"suspend": False}},
            )  # fmt: skip
        return existing, False

    def delete_stream(self, mint: str) -> None:
        try:
            self.api.delete_namespaced_custom_object(
                GROUP, VERSION, self.namespace, "livestreams", stream_name(mint)
            )
        except ApiException as exc:
            if exc.status != 404:
                raise

    def recordings(self, mint: str | None = None) -> list[dict]:
        return self._list("recordings", mint)

    def active_recording(self, mint: str) -> dict | None:
        active = [r for r in self.recordings(mint) if is_active(r)]
        return active[-1] if active else None

    def unfinished_recordings(self, mint: str) -> list[dict]:
        """Recordings not yet finalized, stopped or not."""
        return [r for r in self.recordings(mint) if r.get("status", {}).get("phase") not in FINAL]

    def recording(self, name: str) -> dict:
        return self.api.get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "recordings", name
        )

    def create_recording(
        self,
        mint: str,
        fmt: str,
        quality: str,
        output_format: str | None = None,
        container: str | None = None,
    ) -> dict:
        """A new Recording of the mint's LiveStream in Recording format `fmt` (and `container`,
        if not the format's own); `output_format` is what the client asked for, kept as an
        annotation. Names carry the time to the millisecond (a start right after a stop gets a
        name of its own)."""
        for _ in range(5):
            now = dt.datetime.now(dt.UTC)
            stamp = now.strftime("%Y%m%d-%H%M%S-") + f"{now.microsecond // 1000:03d}"
            body = {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "Recording",
                "metadata": {
                    "name": f"{stream_name(mint)}-{stamp}",
                    "labels": {MINT_LABEL: mint, **MANAGED_BY},
                    "annotations": {OUTPUT_FORMAT_ANNOTATION: output_format or fmt},
                },
                "spec": {
                    "liveStreamRef": {"name": stream_name(mint)},
                    "format": fmt,
                    "quality": quality,
                    **({"container": container} if container else {}),
                },
            }
            try:
                return self.api.create_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, "recordings", body
                )
            except ApiException as exc:
                if exc.status != 409:
                    raise
            time.sleep(0.002)  # the same millisecond as another replica's: take the next
        raise RuntimeError(f"could not name a new recording for mint {mint}")

    def control_token(self, stream: dict) -> str | None:
        """The stream pod's control token, from the LiveStream's control Secret."""
        name = f"{stream['metadata']['name']}-control"
        try:
            secret = self.core.read_namespaced_secret(name, self.namespace)
        except ApiException as exc:
            if exc.status in (403, 404):
                return None
            raise
        value = (secret.data or {}).get("token")
        return base64.b64decode(value).decode() if value else None

    def stop_recording(self, name: str) -> dict:
        return self.api.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "recordings", name, {"spec": {"stopped": True}}
        )

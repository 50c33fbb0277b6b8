"""Live sessions and recordings as custom resources: a session for a mint is the LiveStream
named after it, a recording is a Recording of that LiveStream. The cluster is the only state.

Calls block (the kubernetes client is synchronous); the app runs them in worker threads.
"""

from __future__ import annotations

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
    return {
        "mint_id": recording["metadata"]["labels"][MINT_LABEL],
        "recording": recording["metadata"]["name"],
        "output_format": spec.get("format"),
        "video_quality": spec.get("quality"),
        "phase": status.get("phase", "Pending"),
        "active": status.get("phase") not in FINAL,
        "started_at": status.get("startedAt"),
        "stopped_at": status.get("stoppedAt"),
        "duration_seconds": status.get("durationSeconds", 0),
        "bytes_written": status.get("bytesWritten", 0),
        "files": status.get("files", []),
        "message": status.get("message"),
    }


class Store:
    """LiveStreams and Recordings in one namespace, keyed by mint."""

    def __init__(self, namespace: str, api_client: kubernetes.client.ApiClient | None = None):
        self.namespace = namespace
        self.api = kubernetes.client.CustomObjectsApi(api_client or kubernetes.client.ApiClient())

    def _list(self, plural: str, mint: str | None = None) -> list[dict]:
        selector = f"{MINT_LABEL}={mint}" if mint else MINT_LABEL
        items = self.api.list_namespaced_custom_object(
            GROUP, VERSION, self.namespace, plural, label_selector=selector
        )["items"]
        return sorted(items, key=lambda o: o["metadata"]["creationTimestamp"])

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
        active = [r for r in self.recordings(mint) if r.get("status", {}).get("phase") not in FINAL]
        return active[-1] if active else None

    def recording(self, name: str) -> dict:
        return self.api.get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "recordings", name
        )

    def create_recording(self, mint: str, output_format: str, quality: str) -> dict:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Recording",
            "metadata": {
                "name": f"{stream_name(mint)}-{stamp}",
                "labels": {MINT_LABEL: mint, **MANAGED_BY},
            },
            "spec": {
                "liveStreamRef": {"name": stream_name(mint)},
                "format": output_format,
                "quality": quality,
            },
        }
        return self.api.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "recordings", body
        )

    def stop_recording(self, name: str) -> dict:
        return self.api.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "recordings", name, {"spec": {"stopped": True}}
        )

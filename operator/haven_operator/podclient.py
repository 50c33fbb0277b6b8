"""The operator's one typed client for a stream pod's control API (see docs/stream-pod.md).

Every call the operator makes to a stream pod goes through `StreamPodClient`, so the wire
format lives in one place on this side, as `haven_recorder.app` is its one place on the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx


class PodUnreachable(Exception):
    """The pod did not answer (not running yet, restarting, or the network is down)."""


class PodRejected(Exception):
    """The pod answered with a 4xx: the request itself is wrong."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class RecordingRequest:
    name: str
    format: str
    quality: str
    audio: bool
    max_width: int | None = None
    max_fps: int | None = None
    max_duration_seconds: float | None = None
    container: str | None = None  # None: the format's own
    resume_uploads: tuple[dict[str, str], ...] = ()  # {path, key, uploadId} a lost pod left open
    uploaded_files: tuple[dict[str, Any], ...] = ()  # status.files a lost pod had uploaded
    stopped: bool = False  # over: the pod only completes resume_uploads, records nothing

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": self.name,
            "format": self.format,
            "quality": self.quality,
            "audio": self.audio,
        }
        optional = {
            "maxWidth": self.max_width,
            "maxFps": self.max_fps,
            "maxDurationSeconds": self.max_duration_seconds,
            "container": self.container,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        if self.resume_uploads:
            body["resumeUploads"] = list(self.resume_uploads)
        if self.uploaded_files:
            body["uploadedFiles"] = list(self.uploaded_files)
        if self.stopped:
            body["stopped"] = True
        return body


class StreamPodClient:
    def __init__(self, base_url: str, token: str, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}
        self._timeout = timeout

    async def _call(self, method: str, path: str, json: dict | None = None) -> dict:
        try:
            async with httpx.AsyncClient(timeout=self._timeout) as client:
                resp = await client.request(
                    method, f"{self.base_url}{path}", json=json, headers=self._headers
                )
        except httpx.HTTPError as exc:
            raise PodUnreachable(f"{method} {self.base_url}{path}: {exc!r}") from exc
        if 400 <= resp.status_code < 500:
            try:
                detail = resp.json().get("detail", resp.text)
            except ValueError:
                detail = resp.text
            raise PodRejected(resp.status_code, str(detail))
        if resp.status_code >= 500:
            raise PodUnreachable(f"{method} {path}: {resp.status_code} {resp.text[:200]}")
        return resp.json()

    async def status(self) -> dict:
        return await self._call("GET", "/status")

    async def start_recording(self, request: RecordingRequest) -> dict:
        """Idempotent: the same request again returns the recording's current state."""
        return await self._call("POST", "/recordings", request.body())

    async def _call_or_none(self, method: str, path: str) -> dict | None:
        """The answer, or None when the pod has no such recording (404)."""
        try:
            return await self._call(method, path)
        except PodRejected as exc:
            if exc.status == 404:
                return None
            raise

    async def recording(self, name: str) -> dict | None:
        return await self._call_or_none("GET", f"/recordings/{name}")

    async def stop_recording(self, name: str) -> dict | None:
        """Finalize the file; returns the final state, or None if the pod never had it."""
        return await self._call_or_none("POST", f"/recordings/{name}/stop")

    async def delete_recording(self, name: str) -> dict | None:
        """Delete a finished recording's files (on the volume and in object storage); None if
        the pod has no such recording. 409 (PodRejected) while it still records."""
        return await self._call_or_none("DELETE", f"/recordings/{name}")

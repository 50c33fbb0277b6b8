"""Recording files for remote clients: `GET /api/recording/download/{mint_id}` streams a part
from the stream pod that holds its volume, passing HTTP Range through.

The stream pod's side of it (the contract this module is written against):

    GET /recordings/{recording}/files/{file}          on the pod's control port (8081)
    Authorization: Bearer <control token>             (the LiveStream's `<name>-control` Secret)
    Range: bytes=a-b | bytes=a- | bytes=-n             optional, one range

    200 the whole file; 206 with Content-Range for a satisfiable range; 416 with
    `Content-Range: bytes */<size>` otherwise. Each with Content-Length, `Accept-Ranges: bytes`
    and Content-Type (video/webm, video/mp4 or video/mp2t). `file` is the base name of one of the
    recording's parts (`status.files[].path` is `<recording>/<file>`); anything else, or a part
    not yet created, is 404 with a JSON `detail`. A part still being written is served as far
    as it is written when the request comes. 401 without the token.

With object storage, `?presign=true` answers JSON with a presigned GET URL of the part's object
instead (`presigned`; signed by haven_operator.upload with the keys of the Secret the
Recording's status.objectStorage names), so a client fetches the file from the bucket, not
through the gateway and the stream pod.

A pod that lacks the route answers FastAPI's bare `{"detail": "Not Found"}`; the gateway then
says plainly that the pod does not serve files (501), and serves nothing else in its place.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import posixpath
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
from kubernetes.client import ApiException, CoreV1Api

from haven_operator import upload
from haven_recorder import s3

DEFAULT_PRESIGN_SECONDS = upload.DEFAULT_PRESIGN_SECONDS
MAX_PRESIGN_SECONDS = s3.MAX_PRESIGN_SECONDS

PASSED_HEADERS = (
    "content-type",
    "content-length",
    "content-range",
    "accept-ranges",
    "etag",
    "last-modified",
)
CONTENT_TYPES = {".webm": "video/webm", ".mp4": "video/mp4", ".ts": "video/mp2t"}


class DownloadError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


CONTROL_PORT = 8081  # the stream pod's control API (the Service's `control` port)


def pod_base_url(endpoint: str) -> str:
    """http://host:8081, the control port of the pod's Service, from the LiveStream's
    `status.endpoint` (ws://<service>.<namespace>.svc.<domain>:8080/stream, the viewer port,
    which serves no control call)."""
    parts = urlsplit(endpoint)
    scheme = "https" if parts.scheme == "wss" else "http"
    host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname
    return f"{scheme}://{host}:{CONTROL_PORT}"


def file_url(base_url: str, recording: str, part_path: str) -> str:
    """The pod's URL for one of a recording's files. The pod knows the recording by the name
    the operator gave it, which is the directory of its files' paths (`status.files[].path` is
    `<pod's name>/<file>`); it may differ from the Recording's name."""
    directory, name = posixpath.split(part_path)
    pod_name = directory or recording
    return f"{base_url}/recordings/{quote(pod_name, safe='')}/files/{quote(name, safe='')}"


class PodFile:
    """One open response from the pod, streamed to the client, then closed."""

    def __init__(self, client: httpx.AsyncClient, response: httpx.Response, filename: str):
        self.client, self.response, self.filename = client, response, filename

    @property
    def status(self) -> int:
        return self.response.status_code

    def headers(self) -> dict[str, str]:
        headers = {k: v for k, v in self.response.headers.items() if k.lower() in PASSED_HEADERS}
        headers.setdefault("accept-ranges", "bytes")
        if "content-type" not in headers:
            ext = posixpath.splitext(self.filename)[1]
            headers["content-type"] = CONTENT_TYPES.get(ext, "application/octet-stream")
        headers["content-disposition"] = f'attachment; filename="{self.filename}"'
        return headers

    async def body(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self.response.aiter_bytes(256 * 1024):
                yield chunk
        finally:
            await self.close()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.response.aclose()
        await self.client.aclose()


async def open_part(
    base_url: str, token: str, recording: str, part_path: str, range_header: str | None
) -> PodFile:
    """Ask the pod for one part; raise DownloadError unless it answers 200, 206 or 416."""
    headers = {"Authorization": f"Bearer {token}"}
    if range_header:
        headers["Range"] = range_header
    client = httpx.AsyncClient(timeout=httpx.Timeout(30.0, read=120.0))
    url = file_url(base_url, recording, part_path)
    try:
        response = await client.send(client.build_request("GET", url, headers=headers), stream=True)
    except httpx.HTTPError as exc:
        await client.aclose()
        raise DownloadError(502, f"the stream pod is unreachable: {exc}") from exc
    if response.status_code in (200, 206, 416):
        return PodFile(client, response, posixpath.basename(part_path))
    try:
        await response.aread()
        detail = response.json().get("detail") if response.content else None
    except (ValueError, AttributeError, httpx.HTTPError):
        detail = None
    finally:
        await response.aclose()
        await client.aclose()
    if response.status_code == 404 and detail == "Not Found":
        raise DownloadError(
            501,
            "this stream pod does not serve recording files yet (it needs "
            "GET /recordings/{name}/files/{file}, see the gateway's README section)",
        )
    if response.status_code == 404:
        raise DownloadError(404, f"the stream pod has no file {part_path}: {detail}")
    raise DownloadError(
        502, f"the stream pod answered {response.status_code} for {part_path}: {detail}"
    )


def _secret(core: CoreV1Api, namespace: str, name: str) -> dict | None:
    try:
        secret = core.read_namespaced_secret(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise DownloadError(502, f"cannot read Secret {name}: {exc.status} {exc.reason}") from exc
    return {"data": secret.data or {}}


def presigned(core: CoreV1Api, recording: dict, part: int, expires: int) -> dict[str, Any]:
    """{recording_id, file, url, expires_at, expires_in, files} for one Recording (blocking:
    one Secret read). DownloadError (409) when it has no object storage or the part is not
    uploaded yet; the keys never leave this function."""
    name, status = recording["metadata"]["name"], recording.get("status") or {}
    storage = status.get("objectStorage")
    if not storage:
        raise DownloadError(
            409, f"recording {name} has no object storage (LiveStream spec.storage.upload)"
        )
    files = status.get("files") or []
    if part > len(files):
        raise DownloadError(404, f"recording {name} has {len(files)} part(s)")
    if not files[part - 1].get("uploaded"):
        cond = next((c for c in status.get("conditions") or [] if c["type"] == "Uploaded"), {})
        why = f"{cond.get('reason')}: {cond.get('message')}" if cond else "not started"
        raise DownloadError(409, f"{files[part - 1]['path']} is not uploaded yet ({why})")
    ref = storage["credentialsSecretRef"]
    secret = _secret(core, recording["metadata"]["namespace"], ref["name"])
    try:
        creds = upload.credentials(secret, {"s3": storage})
        one = {**status, "files": [files[part - 1]]}
        signed = upload.presign_files(one, creds, expires, dt.datetime.now(dt.UTC))
    except (upload.CredentialsError, ValueError) as exc:
        raise DownloadError(409, str(exc)) from exc
    return {
        "recording_id": name,
        "file": signed["files"][0]["path"],
        "url": signed["files"][0]["url"],
        "expires_at": signed["expiresAt"],
        "expires_in": expires,
        "size_bytes": signed["files"][0]["sizeBytes"],
    }

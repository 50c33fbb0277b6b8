"""Getting a recording's files out of the pod: list them and serve them, read-only, with HTTP
Range, on the control API (behind the control token).

    GET /recordings/{name}/files          the recording's files: path, size, duration, type
    GET /recordings/{name}/files/{file}   one file (HEAD too); `Range: bytes=a-b | a- | -n`

A file is served only if it is one of the recording's files (`parts` in its state: the
joined file, or the parts), by its base name: anything else (`..`, a path, an absolute name, a
hidden file, the state file, a symlink anywhere on the way) is 404 with a `detail`, and the
file is opened relative to the recording's directory with O_NOFOLLOW at each step. One range
is honoured (206 with Content-Range; 416 with `Content-Range: bytes */<size>` when it starts
past the end); several ranges, or a malformed one, get the whole file (200), as RFC 9110
allows. `If-Range` and `If-None-Match` take the ETag. A part still being written is served as
far as it was written when the request came (its size then is the Content-Length).

Reads go through a worker thread in chunks of CHUNK_BYTES, so a slow volume never blocks the
event loop and a download holds at most one chunk in memory.
"""

from __future__ import annotations

import asyncio
import os
import stat
import weakref
from collections.abc import AsyncIterator
from email.utils import formatdate
from pathlib import PurePosixPath
from urllib.parse import quote

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response, StreamingResponse

CHUNK_BYTES = 256 * 1024
MIME_TYPES = {".webm": "video/webm", ".mp4": "video/mp4", ".ts": "video/mp2t"}

router = APIRouter()


def _recording(request: Request, name: str):
    rec = request.app.state.pod.recordings.items.get(name)
    if rec is None:
        raise HTTPException(404, f"no recording named {name!r}")
    return rec


def _listed(rec, name: str) -> dict[str, object]:
    """The recording's files by base name: only these are ever served."""
    listed = {}
    for part in rec.progress.parts:
        path = PurePosixPath(part.path)
        if path.parent == PurePosixPath(name) and path.suffix in MIME_TYPES:
            listed[path.name] = part
    return listed


def _open(root: str, name: str, file: str) -> tuple[int, os.stat_result]:
    """Open `root`/`name`/`file` read-only, following no symlink (blocking)."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        dir_fd = os.open(name, flags | os.O_DIRECTORY, dir_fd=root_fd)
    finally:
        os.close(root_fd)
    try:
        fd = os.open(file, flags | os.O_NONBLOCK, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise FileNotFoundError(file)
    return fd, st


def etag(st: os.stat_result) -> str:
    return f'"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}"'


def byte_range(header: str | None, size: int) -> tuple[int, int] | bool | None:
    """(first, last) of one satisfiable range; None to serve the whole file (no header,
    several ranges, or one that is malformed); False if it cannot be satisfied (416)."""
    if not header:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    first, last = first.strip(), last.strip()
    if not dash or not (first.isdigit() or (not first and last.isdigit())):
        return None
    if last and not last.isdigit():
        return None
    if not first:  # the last n bytes
        n = int(last)
        return (max(0, size - n), size - 1) if n > 0 and size > 0 else False
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if last and int(last) < start:
        return None  # malformed (RFC 9110: invalid, so the range is ignored)
    if start >= size:
        return False
    return start, end


class _FileBody:
    """Bytes `first`..`last` of an open file, read in a worker thread chunk by chunk; the file
    is closed when the body ends, or when it is dropped unread (a client gone early)."""

    def __init__(self, fd: int, first: int, last: int) -> None:
        self.first, self.last = first, last
        self.fd = fd
        self.close = weakref.finalize(self, os.close, fd)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            offset = self.first
            while offset <= self.last:
                want = min(CHUNK_BYTES, self.last + 1 - offset)
                chunk = await asyncio.to_thread(os.pread, self.fd, want, offset)
                if not chunk:
                    break
                offset += len(chunk)
                yield chunk
        finally:
            self.close()


@router.get("/recordings/{name}/files")
async def list_files(request: Request, name: str) -> dict:
    """The recording's files, each with its size now, duration, type and URL."""
    rec = _recording(request, name)
    root = rec.root

    def describe() -> list[dict]:
        files = []
        for file, part in _listed(rec, name).items():
            try:
                size = os.stat(root / name / file, follow_symlinks=False).st_size
            except OSError:
                continue  # listed in the state but not (or no longer) on the volume
            files.append(
                {
                    "name": file,
                    "path": part.path,
                    "sizeBytes": size,
                    "durationSeconds": part.durationSeconds,
                    "mimeType": MIME_TYPES[PurePosixPath(file).suffix],
                    "complete": part.endedAt is not None,
                    "startedAt": part.startedAt,
                    "endedAt": part.endedAt,
                    "url": f"/recordings/{quote(name)}/files/{quote(file)}",
                }
            )
        return files

    data = rec.to_json()
    files = await asyncio.to_thread(describe)
    return {"name": name, "state": data["state"], "reason": data["reason"], "files": files}


@router.api_route("/recordings/{name}/files/{file:path}", methods=["GET", "HEAD"])
async def get_file(request: Request, name: str, file: str) -> Response:
    """One of the recording's files, read-only, with HTTP Range."""
    rec = _recording(request, name)
    if file not in _listed(rec, name):
        raise HTTPException(
            404,
            f"recording {name!r} has no file {file!r} (GET /recordings/{name}/files lists them)",
        )
    try:
        fd, st = await asyncio.to_thread(_open, str(rec.root), name, file)
    except OSError as exc:  # gone, a symlink (ELOOP), not a regular file
        raise HTTPException(
            404, f"recording {name!r} has no file {file!r}: {exc.strerror}"
        ) from exc
    size, tag = st.st_size, etag(st)
    headers = {
        "Accept-Ranges": "bytes",
        "ETag": tag,
        "Last-Modified": formatdate(st.st_mtime, usegmt=True),
        "Content-Disposition": f'attachment; filename="{file}"',
        "Cache-Control": "no-cache",
    }
    media_type = MIME_TYPES[PurePosixPath(file).suffix]
    if request.headers.get("if-none-match") in (tag, "*"):
        os.close(fd)
        return Response(status_code=304, headers=headers)
    wanted = request.headers.get("range")
    if_range = request.headers.get("if-range")
    if if_range is not None and if_range not in (tag, headers["Last-Modified"]):
        wanted = None  # the file changed since the client's copy: all of it
    chosen = byte_range(wanted, size)
    if chosen is False:
        os.close(fd)
        return Response(
            status_code=416,
            headers={**headers, "Content-Range": f"bytes */{size}"},
            media_type=media_type,
        )
    status = 200
    first, last = 0, size - 1
    if chosen is not None:
        status, (first, last) = 206, chosen
        headers["Content-Range"] = f"bytes {first}-{last}/{size}"
    headers["Content-Length"] = str(last + 1 - first)
    if request.method == "HEAD" or last < first:
        os.close(fd)
        return Response(status_code=status, headers=headers, media_type=media_type)
    return StreamingResponse(
        _FileBody(fd, first, last), status_code=status, headers=headers, media_type=media_type
    )

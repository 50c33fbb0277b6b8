"""The gateway's side of downloads against the stream pod's file contract
(gateway/haven_gateway/downloads.py), served here by a small app that implements the
contract on loopback: the bytes, Range, 416, 404, auth, and a pod that lacks the route."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI, Header, HTTPException
from fastapi.responses import FileResponse

from haven_gateway.downloads import DownloadError, open_part

TOKEN = "control-token"


def contract_pod(root: Path) -> FastAPI:
    app = FastAPI()

    @app.get("/recordings/{name}/files/{file}")
    async def recording_file(name: str, file: str, authorization: str = Header("")) -> FileResponse:
        if authorization != f"Bearer {TOKEN}":
            raise HTTPException(401, "a valid bearer token is required")
        path = root / name / file
        if "/" in file or not path.is_file():
            raise HTTPException(404, f"no file {name}/{file}")
        return FileResponse(path, media_type="video/webm")

    return app


@pytest.fixture
def pods(tmp_path):
    """Two servers on loopback: one with the contract's route, one without."""
    (tmp_path / "rec-1").mkdir()
    data = bytes(range(256)) * 40
    (tmp_path / "rec-1" / "rec-1-part001.webm").write_bytes(data)
    servers, urls = [], []
    for app in (contract_pod(tmp_path), FastAPI()):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        server = uvicorn.Server(config)
        threading.Thread(target=server.run, daemon=True).start()
        while not server.started:
            time.sleep(0.02)
        servers.append(server)
        urls.append(f"http://127.0.0.1:{port}")
    yield urls[0], urls[1], data
    for server in servers:
        server.should_exit = True


async def fetch(base: str, range_header: str | None = None, token: str = TOKEN, path: str = ""):
    f = await open_part(base, token, "rec-1", path or "rec-1/rec-1-part001.webm", range_header)
    body = b"".join([chunk async for chunk in f.body()])
    return f.status, f.headers(), body


def test_the_whole_file_a_range_and_an_unsatisfiable_one(pods):
    pod, _, data = pods
    status, headers, body = asyncio.run(fetch(pod))
    assert status == 200 and body == data
    assert headers["content-length"] == str(len(data)) and headers["accept-ranges"] == "bytes"
    assert headers["content-type"] == "video/webm"
    assert headers["content-disposition"] == 'attachment; filename="rec-1-part001.webm"'
    status, headers, body = asyncio.run(fetch(pod, "bytes=100-199"))
    assert status == 206 and body == data[100:200]
    assert headers["content-range"] == f"bytes 100-199/{len(data)}"
    # the pod's name for the recording is its files' directory, not the Recording's name
    other = asyncio.run(
        open_part(pod, TOKEN, "the-recordings-name", "rec-1/rec-1-part001.webm", None)
    )
    assert other.status == 200
    asyncio.run(other.close())
    status, headers, body = asyncio.run(fetch(pod, "bytes=-10"))
    assert status == 206 and body == data[-10:]
    status, headers, _ = asyncio.run(fetch(pod, f"bytes={len(data) + 5}-"))
    assert status == 416 and headers["content-range"] == f"bytes */{len(data)}"


def test_what_the_gateway_says_when_the_pod_cannot_serve(pods):
    pod, without_route, _ = pods
    with pytest.raises(DownloadError) as missing:
        asyncio.run(fetch(pod, path="rec-1/rec-1-part002.webm"))
    assert missing.value.status == 404
    assert "no file rec-1/rec-1-part002.webm" in missing.value.message
    with pytest.raises(DownloadError) as denied:
        asyncio.run(fetch(pod, token="wrong"))
    assert denied.value.status == 502 and "401" in denied.value.message
    with pytest.raises(DownloadError) as old_pod:
        asyncio.run(fetch(without_route))
    assert old_pod.value.status == 501
    assert "does not serve recording files yet" in old_pod.value.message
    with pytest.raises(DownloadError) as unreachable:
        asyncio.run(fetch("http://127.0.0.1:9"))
    assert unreachable.value.status == 502

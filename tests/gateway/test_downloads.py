"""The gateway's side of downloads against the stream pod's file contract
(gateway/haven_gateway/downloads.py), served here by a small app that implements the
contract on loopback: the bytes, Range, 416, 404, auth, and a pod that lacks the route. And
`?presign=true` over HTTP, through the chart's gateway on the local cluster, with the real
versitygw."""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Header, HTTPException
from fastapi.responses import FileResponse

from haven_gateway.downloads import DownloadError, open_part
from haven_gateway.sessions import MINT_LABEL
from haven_localcluster import release

from .conftest import BASE58

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


def test_presign_over_http_gives_a_url_at_the_public_endpoint_that_downloads(
    gateway, kubectl, s3_server
):
    """GET /api/recording/download/{mint}?presign=true: 409 with the reason while the Recording
    has no object storage, or its file is not up; then a presigned URL at the bucket's
    publicEndpoint (loopback here; the pods' endpoint is the node network's), which fetches the
    object. The Recording's status is written as the operator writes it once a file is up."""
    ns, mint = release.NAMESPACE, "".join(random.choices(BASE58, k=44))
    name = f"presign-{mint[:8].lower()}"
    bucket, key = s3_server.bucket("gateway-presign"), f"gw/{name}/{name}.webm"
    data = os.urandom(200_000)

    async def put() -> None:
        client = s3_server.client(bucket)
        try:
            await client.put_object(key, data, "video/webm")
        finally:
            await client.aclose()

    asyncio.run(put())
    keys = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": f"{name}-keys"},
        "stringData": {
            "accessKeyID": s3_server.access_key_id,
            "secretAccessKey": s3_server.secret_access_key,
        },
    }
    rec = {
        "apiVersion": "streams.haven.dev/v1alpha1",
        "kind": "Recording",
        "metadata": {"name": name, "labels": {MINT_LABEL: mint}},
        # No such LiveStream: stopped, the operator completes it at once and leaves it.
        "spec": {"liveStreamRef": {"name": f"{name}-gone"}, "stopped": True},
    }
    objects = json.dumps({"apiVersion": "v1", "kind": "List", "items": [keys, rec]})
    kubectl("apply", "-n", ns, "-f", "-", input=objects)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            got = json.loads(kubectl("get", "-n", ns, "rec", name, "-o", "json").stdout)
            if (got.get("status") or {}).get("phase") == "Completed":
                break
            time.sleep(0.5)

        def presign():
            with gateway.client() as api:
                url = f"/api/recording/download/{mint}"
                return api.get(url, params={"presign": "true", "expires": 120})

        def write_status(**status) -> None:
            patch = json.dumps({"status": status})
            kubectl("patch", "-n", ns, "rec", name, "--subresource=status", "--type=merge",
                    "-p", patch)  # fmt: skip

        refused = presign()
        assert refused.status_code == 409 and "no object storage" in refused.json()["detail"]
        storage = {
            "endpoint": s3_server.cluster_endpoint,
            "publicEndpoint": s3_server.endpoint,
            "bucket": bucket,
            "prefix": "gw/",
            "region": s3_server.region,
            "forcePathStyle": True,
            "credentialsSecretRef": {
                "name": f"{name}-keys",
                "accessKeyIDKey": "accessKeyID",
                "secretAccessKeyKey": "secretAccessKey",
            },
        }
        file = {"path": f"{name}/{name}.webm", "url": f"s3://{bucket}/{key}"}
        file["sizeBytes"] = len(data)
        write_status(objectStorage=storage, files=[{**file, "uploaded": False}])
        refused = presign()
        assert refused.status_code == 409 and "not uploaded yet" in refused.json()["detail"]

        write_status(files=[{**file, "uploaded": True}])
        answer = presign()
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["success"] is True and body["recording_id"] == name, body
        assert body["file"] == file["path"] and body["size_bytes"] == len(data), body
        assert body["expires_in"] == 120 and body["url"].startswith(f"{s3_server.endpoint}/")
        assert s3_server.secret_access_key not in answer.text
        fetched = httpx.get(body["url"], timeout=60)
        assert fetched.status_code == 200 and fetched.content == data
    finally:
        kubectl("delete", "-n", ns, f"rec/{name}", f"secret/{name}-keys", "--wait=false",
                check=False)  # fmt: skip

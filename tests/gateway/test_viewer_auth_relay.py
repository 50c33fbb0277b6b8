"""The gateway's WebSocket relay and viewer auth, on the local cluster: a session whose
LiveStream sets `spec.viewer.auth` is watched through the gateway, which reads the viewer
token from the Secret and passes it to the stream pod; the pod itself refuses a viewer
without it, and the token shows up neither in what the client gets nor in the gateway's log."""

from __future__ import annotations

import asyncio
import json
import secrets

import pytest
import websockets

from haven_gateway.sessions import MANAGED_BY, MINT_LABEL, stream_name
from haven_localcluster import release

from .test_gateway import NS, _proxied, get, wait_for


async def _refused(url: str) -> int:
    """The HTTP status the stream pod refuses a viewer's handshake with."""
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with asyncio.timeout(30), websockets.connect(url, max_size=None):
            pass
    return refused.value.response.status_code


async def _messages(url: str, token: str, count: int) -> list[str]:
    """The first `count` messages a client of the gateway gets, as sent."""
    headers = {"Authorization": f"Bearer {token}"}
    got: list[str] = []
    async with asyncio.timeout(60), websockets.connect(url, additional_headers=headers) as ws:
        while len(got) < count:
            got.append(await ws.recv())
    return got


def test_the_relay_passes_the_viewer_token_of_a_stream_with_viewer_auth(
    gateway, live_mint, kubectl
):
    mint = live_mint()
    name, token = stream_name(mint), secrets.token_hex(16)
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": f"{name}-viewers"},
        "stringData": {"viewer-token": token},
    }
    stream = {  # the session's LiveStream as the gateway names it, made first with viewer auth
        "apiVersion": "streams.haven.dev/v1alpha1",
        "kind": "LiveStream",
        "metadata": {"name": name, "labels": {MINT_LABEL: mint, **MANAGED_BY}},
        "spec": {
            "source": {"pumpfun": {"mintId": mint}},
            "viewer": {"auth": {"secretRef": {"name": f"{name}-viewers", "key": "viewer-token"}}},
        },
    }
    for obj in (secret, stream):
        kubectl("apply", "-n", NS, "-f", "-", input=json.dumps(obj))
    with gateway.client() as api:
        started = api.post("/api/live-sessions/start", json={"mint_id": mint})
        # 200 once it is Live, or 504 if its pod takes longer than the gateway waits.
        assert started.status_code in (200, 504), started.text
        wait_for(lambda: get(kubectl, "ls", name).get("status", {}).get("phase") == "Live", 180)

        ip = get(kubectl, "service", f"{name}-stream")["spec"]["clusterIP"]
        assert asyncio.run(_refused(f"ws://{ip}:8080/stream")) == 403  # the pod wants it

        url = f"{gateway.ws_url}/api/live-sessions/stream/{mint}"
        frame, audio, pong = asyncio.run(_proxied(url, gateway.token))
        assert frame["data"] and audio["data"] and pong == {"type": "pong"}
        messages = asyncio.run(_messages(url, gateway.token, 20))
        assert all(token not in m for m in messages)
        assert api.post("/api/live-sessions/stop", json={"mint_id": mint}).status_code == 200

    pods = kubectl(
        "get", "pods", "-n", release.NAMESPACE, "-o", "name",
        "-l", f"app.kubernetes.io/name={release.GATEWAY_SERVICE}",
    ).stdout.split()  # fmt: skip
    logs = "".join(
        kubectl("logs", "-n", release.NAMESPACE, pod, check=False).stdout for pod in pods
    )
    assert token not in logs

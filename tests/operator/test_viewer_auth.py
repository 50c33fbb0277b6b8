"""A LiveStream's viewer auth and video-track preference on the local cluster: the operator
passes the Secret's token and the preference to the stream pod, whose /stream then refuses a
viewer without the token and serves the preferred track to one with it."""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid

import pytest
import websockets

from haven_localcluster.publisher import SCREEN_COUNTER
from tests.recorder.conftest import decode_video_message

from .test_end_to_end import apply, credentials, get, livestream, wait_live


async def _counters(url: str, count: int) -> list[int | None]:
    counters: list[int | None] = []
    async with asyncio.timeout(60), websockets.connect(url, max_size=None) as ws:
        while len(counters) < count:
            message = json.loads(await ws.recv())
            if message["type"] == "video_frame":
                counters.append(decode_video_message(json.dumps(message))[0])
    return counters


async def _refused(url: str) -> int:
    """The HTTP status a viewer's WebSocket handshake is refused with."""
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with asyncio.timeout(30), websockets.connect(url, max_size=None):
            pass
    return refused.value.response.status_code


def test_viewer_auth_and_the_video_track_come_from_the_livestream(
    operator, kubectl, namespace, livekit_server, start_publisher
):
    room = f"auth-{uuid.uuid4().hex[:8]}"
    start_publisher(room, options=["--screen-share"])
    token = secrets.token_hex(16)
    viewers = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "viewers"},
        "stringData": {"token": token},
    }
    stream = livestream(
        "cam", livekit_server, room,
        viewer={"auth": {"secretRef": {"name": "viewers"}}}, videoTrack="screen_share",
    )  # fmt: skip
    apply(kubectl, namespace, credentials(livekit_server), viewers, stream)
    wait_live(kubectl, namespace, "cam")
    spec = get(kubectl, namespace, "ls", "cam")["spec"]
    assert spec["viewer"]["auth"]["secretRef"] == {"name": "viewers", "key": "token"}

    ip = get(kubectl, namespace, "service", "cam-stream")["spec"]["clusterIP"]
    url = f"ws://{ip}:8080/stream"
    assert asyncio.run(_refused(url)) == 403
    assert asyncio.run(_refused(f"{url}?token=wrong-{token}")) == 403
    counters = [c for c in asyncio.run(_counters(f"{url}?token={token}", 10)) if c is not None]
    assert len(counters) >= 8 and all(c >= SCREEN_COUNTER for c in counters), counters
    deployment = kubectl("get", "-n", namespace, "deploy", "-o", "json").stdout
    assert token not in deployment  # a secretKeyRef, never the value

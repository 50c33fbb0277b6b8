"""The control API's status as a long poll (haven_recorder/statuswait.py), on a real stream pod
against livekit-server: asked with the version it last saw, the pod answers when a viewer
arrives (a change the operator writes), and with the same version once the wait is over."""

from __future__ import annotations

import asyncio

import httpx
import websockets

from .conftest import livekit_args


async def test_a_waiting_status_request_answers_when_a_viewer_arrives(livekit_server, stream_pod):
    pod = stream_pod(*livekit_args(livekit_server, "status-wait"))
    await asyncio.to_thread(pod.wait_state, "offline")
    first = await asyncio.to_thread(pod.status)
    assert first["viewers"] == 0 and first["version"]

    # Nothing changes: the same version comes back once the wait is over.
    same = pod.http("GET", "/status", params={"since": first["version"], "wait": 1}).json()
    assert same["version"] == first["version"]
    # Another version (or none): answered at once, as before.
    other = pod.http("GET", "/status", params={"since": "x", "wait": 60}).json()
    assert other["version"] == first["version"]

    headers = {"Authorization": f"Bearer {pod.token}"}
    async with httpx.AsyncClient(timeout=90) as client:
        waiting = asyncio.create_task(
            client.get(
                f"{pod.url}/status",
                params={"since": first["version"], "wait": 60},
                headers=headers,
            )
        )
        async with websockets.connect(pod.ws_url):
            answer = (await waiting).json()
    assert answer["viewers"] == 1 and answer["version"] != first["version"]

    bad = pod.http("GET", "/status", params={"wait": -1})
    assert bad.status_code == 422

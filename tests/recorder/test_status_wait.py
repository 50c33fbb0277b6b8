"""The control API's status as a long poll (haven_recorder/statuswait.py), on a real stream pod
against livekit-server: asked with the version it last saw, the pod answers when a viewer
arrives (a change the operator writes), and with the same version once the wait is over."""

from __future__ import annotations

import asyncio
import signal
import threading
import time

import httpx
import websockets

from haven_localcluster.process import stop

from .conftest import StreamPod, livekit_args


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


def test_sigterm_answers_a_waiting_status_request_and_the_pod_exits(
    livekit_server, publisher, tmp_path
):
    """The operator keeps a long poll open on every pod. On SIGTERM it is answered at once, so
    the server's graceful shutdown (which waits up to 20 s for open requests) is not held by
    it: a deleted or rolled pod exits at once (before, every one took 20 s)."""
    pod = StreamPod(livekit_args(livekit_server, publisher), tmp_path / "rec", tmp_path / "pod")
    pod.start().wait_state("live")
    version = pod.status()["version"]
    answers: list[tuple[float, int]] = []
    headers = {"Authorization": f"Bearer {pod.token}"}

    def poll() -> None:
        url = f"{pod.url}/status?since={version}&wait=60"
        code = httpx.get(url, headers=headers, timeout=90).status_code
        answers.append((time.monotonic(), code))

    waiting = threading.Thread(target=poll)
    waiting.start()
    time.sleep(1)  # the request reaches the pod and waits (nothing changes: one viewer-less pod)
    assert not answers, "the poll was answered before SIGTERM: this test shows nothing"
    terminated = time.monotonic()
    stop([pod.proc], timeout=10)  # SIGTERM; SIGKILL if still running after 10 s (< 20 s)
    waiting.join(5)
    assert answers and answers[0][1] == 200 and answers[0][0] >= terminated, answers
    # It exited by itself (uvicorn re-raises SIGTERM once shut down), not by SIGKILL.
    assert pod.proc.popen.returncode in (0, -signal.SIGTERM), pod.proc.popen.returncode

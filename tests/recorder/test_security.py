"""The stream pod's two ports, its fail-closed control API, what viewers may see, the secrets
its log must never hold, and what happens when one of its core tasks dies: each on a real pod
(`python -m haven_recorder`) against the real livekit-server and publisher."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
import websockets
from livekit import api

from haven_localcluster.process import free_port
from haven_localcluster.pumpfun import PumpFunStandIn
from haven_recorder.config import parse
from haven_recorder.sources import LiveKitSource

from .conftest import StreamPod, livekit_args

JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
CONTROL_PATHS = ["/status", "/formats", "/recordings", "/recordings/x", "/metrics", "/debug/tasks"]


def metric(pod: StreamPod, series: str) -> float:
    """A series' value; 0 while it was never used (a labelled series appears at first use)."""
    text = pod.http("GET", "/metrics").text
    assert "haven_pod_task_failures_total" in text or "# HELP haven_pod_task_failures" in text
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0


async def first_status(url: str) -> dict:
    async with websockets.connect(url, max_size=None) as ws:
        async with asyncio.timeout(20):
            while True:
                message = await ws.recv()
                if isinstance(message, str) and '"status"' in message[:20]:
                    return json.loads(message)


async def test_the_control_api_and_metrics_are_on_the_control_port_only(
    livekit_server, publisher, stream_pod
):
    pod = stream_pod(*livekit_args(livekit_server, publisher))
    pod.wait_state("live")
    async with (
        httpx.AsyncClient(base_url=pod.viewer_url) as viewer,
        httpx.AsyncClient(base_url=pod.url) as control,
    ):
        auth = {"Authorization": f"Bearer {pod.token}"}
        for path in [*CONTROL_PATHS, "/openapi.json", "/docs"]:  # not served to viewers at all
            assert (await viewer.get(path, headers=auth)).status_code == 404, path
        assert (await viewer.post("/recordings", json={"name": "x"}, headers=auth)).status_code in (
            404,
            405,
        )
        assert (await viewer.get("/")).status_code == 200
        for path in ("/healthz", "/readyz"):  # the kubelet may probe either port
            assert (await viewer.get(path)).status_code == 200, path
            assert (await control.get(path)).status_code == 200, path

        assert (await control.get("/")).status_code == 404  # no viewer page on the control port
        assert (await control.get("/status")).status_code == 401  # the token is still needed
        assert (await control.get("/status", headers=auth)).json()["state"] == "live"
        assert "haven_frames_in_total" in (await control.get("/metrics")).text
        schema = (await control.get("/openapi.json")).json()
        assert "/recordings" in schema["paths"] and "/debug/tasks" not in schema["paths"]
    with pytest.raises(websockets.InvalidStatus):  # no /stream on the control port
        async with websockets.connect(f"ws://127.0.0.1:{pod.control_port}/stream"):
            pass
    assert (await first_status(pod.ws_url))["state"] == "live"


def run_pod(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HAVEN_")}
    return subprocess.Popen(
        [sys.executable, "-m", "haven_recorder", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**clean, **env},
    )


@pytest.mark.parametrize("token", [None, ""])
def test_without_a_control_token_a_network_bind_refuses_to_start(livekit_server, tmp_path, token):
    env = {} if token is None else {"HAVEN_CONTROL_TOKEN": token}
    args = [
        *livekit_args(livekit_server, "nobody"), "--host", "0.0.0.0",
        "--port", str(free_port()), "--control-port", str(free_port()),
        "--recordings-dir", str(tmp_path),
    ]  # fmt: skip
    proc = run_pod(args, env)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2, out
    assert "no control token" in out and "refusing to serve the control API" in out, out


def test_without_a_control_token_a_loopback_bind_serves_the_control_api(livekit_server, tmp_path):
    """A developer's machine: nothing off it can reach the port, so no token is needed."""
    viewer_port, control_port = free_port(), free_port()
    args = [
        *livekit_args(livekit_server, "nobody"), "--host", "127.0.0.1",
        "--port", str(viewer_port), "--control-port", str(control_port),
        "--recordings-dir", str(tmp_path),
    ]  # fmt: skip
    proc = run_pod(args, {})
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, proc.returncode
            try:
                resp = httpx.get(f"http://127.0.0.1:{control_port}/formats", timeout=2)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        assert resp.status_code == 200 and resp.json()["formats"] == ["av1", "h264", "vp9"]
        viewer = httpx.get(f"http://127.0.0.1:{viewer_port}/formats", timeout=5)
        assert viewer.status_code == 404
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


VIEWER_STATUS_KEYS = {
    "type", "state", "participant", "video", "audio", "reason", "message", "viewers",
    "maxViewers",
}  # fmt: skip


async def test_viewers_get_a_reduced_status_and_the_control_api_the_full_one(
    livekit_server, publisher, stream_pod
):
    pod = stream_pod(*livekit_args(livekit_server, publisher))
    pod.wait_state("live")
    status = await first_status(pod.ws_url)
    assert set(status) <= VIEWER_STATUS_KEYS, status
    assert status["state"] == "live" and status["message"] == "live"
    text = json.dumps(status)
    assert publisher not in text and livekit_server.url not in text
    full = pod.status()
    assert publisher in full["source"] and livekit_server.url in full["source"]
    assert full["healthy"] is True and full["taskFailures"] == []

    # A pod that cannot connect: the control API says why in the SDK's words, viewers get a
    # fixed sentence for the reason.
    closed = f"ws://127.0.0.1:{free_port()}"
    room = f"secret-room-{uuid.uuid4().hex[:6]}"
    broken = stream_pod(
        "--livekit-url", closed, "--room", room,
        "--api-key", livekit_server.api_key, "--api-secret", livekit_server.api_secret,
    )  # fmt: skip
    failed = broken.wait_state("offline", reason="ConnectFailed")
    assert failed["message"] and room in failed["source"] and closed in failed["source"]
    async with websockets.connect(broken.ws_url, max_size=None) as ws:
        async with asyncio.timeout(30):
            while True:
                message = json.loads(await ws.recv())
                if message["type"] == "status" and message["reason"] == "ConnectFailed":
                    break
    assert set(message) <= VIEWER_STATUS_KEYS, message
    assert message["message"] == "cannot reach the stream; retrying"
    assert room not in json.dumps(message) and closed not in json.dumps(message)
    assert failed["message"] not in json.dumps(message)


def test_settings_and_sources_keep_secrets_out_of_their_repr():
    settings = parse(
        ["--livekit-url", "ws://x", "--room", "r", "--api-key", "k"],
        env={
            "HAVEN_LIVEKIT_API_SECRET": "api-secret-value-1",
            "HAVEN_LIVEKIT_TOKEN": "fixed-token-value-2",
            "HAVEN_CONTROL_TOKEN": "control-token-value-3",
            "HAVEN_VIEWER_TOKEN": "viewer-token-value-4",
        },
    )
    shown = repr(settings) + str(settings) + repr(settings.make_source())
    shown += repr(LiveKitSource("ws://x", "r", "k", "api-secret-value-1"))
    for secret in settings.secrets():
        assert secret not in shown, secret
    assert len(settings.secrets()) == 4 and "<redacted>" in shown and "'k'" in shown


async def exercise(pod: StreamPod, viewer_token: str) -> None:
    """What a pod meets in a day: viewers with and without the token, control calls with and
    without it, a recording started and stopped, metrics read."""
    with pytest.raises(websockets.InvalidStatus):
        async with websockets.connect(pod.ws_url + "?token=wrong"):
            pass
    async with websockets.connect(f"{pod.ws_url}?token={viewer_token}", max_size=None) as ws:
        async with asyncio.timeout(20):
            frames = 0
            while frames < 5:
                frames += '"video_frame"' in (await ws.recv())[:40]
    async with httpx.AsyncClient(base_url=pod.url, timeout=30) as control:
        wrong = await control.get("/status", headers={"Authorization": "Bearer no"})
        assert wrong.status_code == 401
        auth = {"Authorization": f"Bearer {pod.token}"}
        body = {"name": "secret-test", "format": "h264"}
        assert (await control.post("/recordings", json=body, headers=auth)).status_code == 201
        await asyncio.sleep(2)
        stopped = await control.post("/recordings/secret-test/stop", headers=auth)
        assert stopped.json()["state"] == "completed", stopped.text
        assert (await control.get("/metrics")).status_code == 200
    async with httpx.AsyncClient(base_url=pod.viewer_url) as viewer:
        assert (await viewer.get("/", params={"token": viewer_token})).status_code == 200
        assert (await viewer.get("/", params={"token": "wrong"})).status_code == 401


async def test_no_secret_reaches_the_log(livekit_server, start_publisher, tmp_path):
    """Pods given every kind of secret (an API secret it mints LiveKit JWTs with, a LiveKit
    token, a pump.fun join that hands one out, control and viewer tokens), exercised, one
    that cannot connect, and then their whole output searched: no secret, and no JWT."""
    server = livekit_server
    room = f"room-{uuid.uuid4().hex[:8]}"
    start_publisher(room)
    viewer_token = f"viewer-{uuid.uuid4().hex}"
    fixed = (
        api.AccessToken(server.api_key, server.api_secret)
        .with_identity(f"fixed-{uuid.uuid4().hex[:6]}")
        .with_grants(api.VideoGrants(room_join=True, room=room, can_subscribe=True, hidden=True))
        .to_jwt()
    )
    standin = PumpFunStandIn(server.api_key, server.api_secret)
    standin.start()
    mint = "Hv3nSecretTestMint" + uuid.uuid4().hex[:20]
    standin.live[mint] = room
    common = {"HAVEN_VIEWER_TOKEN": viewer_token, "HAVEN_LOG_LEVEL": "debug"}
    specs = {
        "minted": (
            ["--livekit-url", server.url, "--room", room, "--api-key", server.api_key],
            {"HAVEN_LIVEKIT_API_SECRET": server.api_secret},
        ),
        "fixed": (
            ["--livekit-url", server.url, "--room", room],
            {"HAVEN_LIVEKIT_TOKEN": fixed},
        ),
        "pumpfun": (
            [
                "--source",
                "pumpfun",
                "--mint-id",
                mint,
                "--pumpfun-api-url",
                standin.url,
                "--pumpfun-livekit-url",
                server.url,
            ],
            {},
        ),
        "unreachable": (
            [
                "--livekit-url",
                f"ws://127.0.0.1:{free_port()}",
                "--room",
                room,
                "--api-key",
                server.api_key,
            ],
            {"HAVEN_LIVEKIT_API_SECRET": server.api_secret},
        ),
    }
    pods = {}
    try:
        for name, (args, env) in specs.items():
            pods[name] = StreamPod(
                args, tmp_path / name / "recordings", tmp_path / name, {**common, **env}
            ).start()
        for name in ("minted", "fixed", "pumpfun"):
            pods[name].wait_state("live", timeout=60)
            await exercise(pods[name], viewer_token)
        pods["unreachable"].wait_state("offline", reason="ConnectFailed")
        assert standin.joins  # the pump.fun pod joined with a token it was handed
    finally:
        for pod in pods.values():
            pod.stop()
        standin.stop()
    secrets = [server.api_secret, fixed, viewer_token] + [p.token for p in pods.values()]
    assert_no_secret_in_logs(pods, secrets)


def assert_no_secret_in_logs(pods: dict[str, StreamPod], secrets: list[str]) -> None:
    for name, pod in pods.items():
        log = Path(pod.log_path).read_text(errors="replace")
        assert "<redacted>" in log, f"{name}: the pod's settings line is missing:\n{log[-3000:]}"
        for secret in secrets:
            assert secret not in log, f"{name}: a secret is in its log ({pod.log_path})"
        assert not JWT.search(log), f"{name}: a JWT is in its log: {JWT.search(log)[0][:20]}..."


def test_a_core_task_that_dies_fails_healthz_and_is_counted(livekit_server, publisher, stream_pod):
    """Each core task ended as a crash would end it (POST /debug/tasks/{task}/cancel: no input
    is left that kills one, see docs/stream-pod.md): counted, and /healthz fails for good."""
    pod = stream_pod(*livekit_args(livekit_server, publisher))
    pod.wait_state("live")
    pod.start_recording(name="doomed", format="h264")
    pod.wait_recording("doomed", "recording")  # subscribed (lazily) and reading
    tasks = pod.http("GET", "/debug/tasks").json()["tasks"]
    assert {"stream-manager", "status", "viewer-video", "viewer-audio"} <= set(tasks), tasks
    assert "recording-doomed" in tasks and any(t.startswith("reader-") for t in tasks), tasks
    assert httpx.get(pod.viewer_url + "/healthz").status_code == 200
    assert pod.http("POST", "/debug/tasks/nope/cancel").status_code == 404

    kinds = {
        "viewer-video": "viewer-video", "recording-doomed": "recording",
        "stream-manager": "stream-manager", "viewer-audio": "viewer-audio",
    }  # fmt: skip
    for task, kind in kinds.items():
        series = f'haven_pod_task_failures_total{{task="{kind}"}}'
        before = metric(pod, series)
        assert pod.http("POST", f"/debug/tasks/{task}/cancel").status_code == 202
        deadline = time.monotonic() + 10
        while metric(pod, series) != before + 1:
            assert time.monotonic() < deadline, f"{series} stayed at {metric(pod, series)}"
            time.sleep(0.1)
        for url in (pod.viewer_url, pod.url):  # both ports answer the kubelet the same
            assert httpx.get(url + "/healthz").status_code == 503
            assert httpx.get(url + "/readyz").status_code == 503
        assert task not in pod.http("GET", "/debug/tasks").json()["tasks"]
    status = pod.status()
    assert status["healthy"] is False
    assert [f["task"] for f in status["taskFailures"]] == list(kinds), status["taskFailures"]
    log = Path(pod.log_path).read_text()
    assert "core task viewer-video (viewer-video) was cancelled while the pod runs" in log


def test_a_join_api_url_that_raises_outside_httpx_is_contained(tmp_path, stream_pod):
    """A port out of range makes httpx raise an ExceptionGroup, not an httpx.HTTPError: it once
    escaped the connection loop and ended it. Now the loop logs it, counts it and retries."""
    pod = stream_pod(
        "--source", "pumpfun", "--mint-id", "SomeMint", "--pumpfun-api-url",
        "http://127.0.0.1:99999",
    )  # fmt: skip
    failed = pod.wait_state("offline", reason="TokenFailed")
    assert failed["message"], failed  # the exception, for the operator
    deadline = time.monotonic() + 30
    while metric(pod, 'haven_pod_loop_errors_total{loop="connection"}') < 2:  # it retried
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert httpx.get(pod.viewer_url + "/healthz").status_code == 200
    assert pod.status()["healthy"] is True
    assert "getting a token for pump.fun mint SomeMint failed" in Path(pod.log_path).read_text()

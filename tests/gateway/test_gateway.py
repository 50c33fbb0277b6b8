"""The Haven Player API through the gateway, on the local cluster: the frontend's usage flow,
with kubectl's view checked at each step, the WebSocket proxy, bad input, and a schemathesis
run against its OpenAPI schema."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
import websockets

from haven_gateway import formats
from haven_gateway.sessions import stream_name
from haven_localcluster import release
from haven_localcluster.mediacheck import analyze
from haven_recorder.writer import FORMATS

from .conftest import BASE58

NS = release.NAMESPACE


def get(kubectl, kind: str, name: str) -> dict:
    result = kubectl("get", "-n", NS, kind, name, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else {}


def wait_for(fn, timeout: float = 60):
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        if last := fn():
            return last
        time.sleep(0.5)
    raise AssertionError(f"not true after {timeout}s")


def test_the_players_flow_end_to_end(gateway, live_mint, kubectl):
    mint = live_mint()
    with gateway.client() as api:
        # 1. start a session: the gateway makes the mint's LiveStream and waits for Live
        started = api.post("/api/live-sessions/start", json={"mint_id": mint})
        assert started.status_code == 200, started.text
        session = started.json()["session"]
        assert session["live"] is True and session["mint_id"] == mint
        stream = get(kubectl, "ls", session["stream"])
        assert stream["status"]["phase"] == "Live"
        assert stream["spec"]["source"]["pumpfun"]["mintId"] == mint
        # The same call again reuses it.
        again = api.post("/api/live-sessions/start", json={"mint_id": mint})
        assert again.json()["session"]["stream"] == session["stream"]

        # 2. start a recording
        rec = api.post(
            "/api/recording/start",
            json={"mint_id": mint, "output_format": "h264", "video_quality": "low"},
        )
        assert rec.status_code == 200, rec.text
        name = rec.json()["recording"]["recording"]
        assert get(kubectl, "rec", name)["spec"]["format"] == "h264"

        # 3. its status, as kubectl shows it too
        status = wait_for(
            lambda: (
                (r := api.get(f"/api/recording/status/{mint}").json()["recording"])[
                    "duration_seconds"
                ]
                >= 3
                and r
            )
        )
        assert status["phase"] == "Recording" and status["active"] is True
        assert get(kubectl, "rec", name)["status"]["phase"] == "Recording"

        # 4. the active sessions and recordings list it, whichever of the two replicas answers
        for _ in range(10):
            active = api.get("/api/live-sessions/active").json()["sessions"]
            assert [s["mint_id"] for s in active if s["mint_id"] == mint] == [mint]
        recording_active = api.get("/api/recording/active").json()["recordings"]
        assert name in [r["recording"] for r in recording_active]

        # 5. stop the recording: it comes back Completed, and its file decodes
        stopped = api.post("/api/recording/stop", json={"mint_id": mint})
        assert stopped.status_code == 200, stopped.text
        done = stopped.json()["recording"]
        assert done["phase"] == "Completed" and done["active"] is False
        assert get(kubectl, "rec", name)["status"]["phase"] == "Completed"
        claim = get(kubectl, "pvc", f"{session['stream']}-recordings")
        pv = json.loads(kubectl("get", "pv", claim["spec"]["volumeName"], "-o", "json").stdout)
        (part,) = done["files"]
        report = analyze(Path(pv["spec"]["hostPath"]["path"]) / part["path"])
        assert report.error is None and report.video_frames > 25

        # 6. stop the session: its LiveStream goes
        ended = api.post("/api/live-sessions/stop", json={"mint_id": mint})
        assert ended.status_code == 200, ended.text
        wait_for(lambda: not get(kubectl, "ls", session["stream"]))
        assert mint not in [
            s["mint_id"] for s in api.get("/api/live-sessions/active").json()["sessions"]
        ]


async def _proxied(url: str, token: str) -> tuple[dict, str]:
    headers = {"Authorization": f"Bearer {token}"}
    async with websockets.connect(url, additional_headers=headers, max_size=None) as ws:
        frame = None
        while frame is None:
            msg = json.loads(await asyncio.wait_for(ws.recv(), timeout=20))
            if msg["type"] == "video_frame":
                frame = msg
        await ws.send("ping")
        async with asyncio.timeout(20):
            while (reply := await ws.recv()) != "pong":
                json.loads(reply)  # frames keep coming, unchanged JSON, until the pong
    return frame, reply


def test_the_websocket_proxy_delivers_frames_and_answers_ping(gateway, live_mint):
    mint = live_mint()
    with gateway.client() as api:
        assert api.post("/api/live-sessions/start", json={"mint_id": mint}).status_code == 200
        url = f"{gateway.ws_url}/api/live-sessions/stream/{mint}"
        frame, pong = asyncio.run(_proxied(url, gateway.token))
        assert pong == "pong"
        assert frame["width"] > 0 and frame["height"] > 0 and frame["data"]
        api.post("/api/live-sessions/stop", json={"mint_id": mint})


def test_bad_input_gets_a_4xx_with_a_reason(gateway, kubectl):
    unknown = "".join(random.choices(BASE58, k=44))  # valid, but the stand-in says not live
    with gateway.client() as api:
        not_live = api.post("/api/live-sessions/start", json={"mint_id": unknown})
        assert not_live.status_code == 404 and "not live" in not_live.json()["detail"]
        assert not get(kubectl, "ls", stream_name(unknown))  # nothing left behind
        # At once again: the first attempt's LiveStream may still be going; same answer.
        again = api.post("/api/live-sessions/start", json={"mint_id": unknown})
        assert again.status_code == 404, again.text
        no_session = api.post("/api/recording/start", json={"mint_id": unknown})
        assert no_session.status_code == 409 and "no active live session" in no_session.text
        bad_format = api.post(
            "/api/recording/start", json={"mint_id": unknown, "output_format": "gif"}
        )
        assert bad_format.status_code == 422 and "output_format" in bad_format.text
        bad_mint = api.post("/api/live-sessions/start", json={"mint_id": "not-a-mint!"})
        assert bad_mint.status_code == 422 and "mint_id" in bad_mint.text
        assert api.get(f"/api/recording/status/{unknown}").status_code == 404
        assert api.post("/api/recording/stop", json={"mint_id": unknown}).status_code == 404
    with gateway.client(token="wrong") as intruder:
        assert intruder.get("/api/live-sessions/active").status_code == 401
        assert intruder.get("/api/recording/formats").status_code == 401


def test_the_formats_are_the_recorders(gateway):
    with gateway.client() as api:
        listed = api.get("/api/recording/formats").json()
    assert set(listed["formats"]) == set(FORMATS) == set(formats.FORMATS)
    for name, fmt in FORMATS.items():
        assert listed["formats"][name] == {
            "container": fmt.container,
            "video_codec": fmt.video_codec,
            "audio_codec": fmt.audio_codec,
        }
    assert listed["qualities"] == ["low", "medium", "high"]


@pytest.mark.timeout(900)
def test_schemathesis_finds_no_server_error(gateway, tmp_path):
    """Property-based requests from the OpenAPI schema: whatever they send, no 5xx but the
    documented ones (a mint that does not go live in time is a 504)."""
    result = subprocess.run(
        [
            sys.executable, "-m", "schemathesis.cli", "run", f"{gateway.url}/openapi.json",
            "--checks", "not_a_server_error", "--max-examples", "10", "--workers", "1",
            "--header", f"Authorization: Bearer {gateway.token}",
            "--request-timeout", "90",
        ],
        capture_output=True, text=True, timeout=880,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]

"""The Haven Player API through the gateway, on the local cluster: the frontend's usage flow,
with kubectl's view checked at each step, the WebSocket proxy, bad input, and a schemathesis
run against its OpenAPI schema."""

from __future__ import annotations

import asyncio
import base64
import contextlib
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
from haven_recorder.writer import AUDIO_KBPS, FORMATS, QUALITY, containers

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
        top = wait_for(
            lambda: (
                (r := api.get(f"/api/recording/status/{mint}").json())["duration_seconds"] >= 3
                and r
            )
        )
        assert top["success"] is True and top["is_recording"] is True
        status = top["recording"]
        assert top["duration_seconds"] == status["duration_seconds"]
        assert status["phase"] == "Recording" and status["active"] is True
        assert get(kubectl, "rec", name)["status"]["phase"] == "Recording"

        # 4. the active sessions and recordings list it (keyed by mint), whichever of the two
        # replicas answers
        for _ in range(10):
            active = api.get("/api/live-sessions/active").json()
            assert active["success"] is True
            assert active["sessions"][mint]["session_id"] == session["stream"]
        recording_active = api.get("/api/recording/active").json()["recordings"]
        assert recording_active[mint]["recording"]["recording"] == name
        assert recording_active[mint]["is_recording"] is True

        # 5. stop the recording: it comes back Completed, and its file decodes
        stopped = api.post("/api/recording/stop", json={"mint_id": mint})
        assert stopped.status_code == 200, stopped.text
        done = stopped.json()["recording"]
        assert done["phase"] == "Completed" and done["active"] is False
        assert stopped.json()["is_recording"] is False and stopped.json()["empty"] is False
        assert stopped.json()["file_size_bytes"] == done["bytes_written"] > 0
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
        assert mint not in api.get("/api/live-sessions/active").json()["sessions"]


async def _proxied(url: str, token: str | None) -> tuple[dict, dict, dict]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with websockets.connect(url, additional_headers=headers, max_size=None) as ws:
        frame = audio = None
        while frame is None or audio is None:
            msg = json.loads(await asyncio.wait_for(ws.recv(), timeout=20))
            if msg["type"] == "video_frame":
                frame = msg
            elif msg["type"] == "audio_frame":
                audio = msg
        await ws.send("ping")
        async with asyncio.timeout(20):
            while (reply := json.loads(await ws.recv()))["type"] != "pong":
                pass  # frames keep coming, JSON text, until the pong
    return frame, audio, reply


async def _closed(url: str, headers: dict | None = None) -> tuple[list, int, str]:
    messages = []
    async with websockets.connect(url, additional_headers=headers or {}) as ws:
        with contextlib.suppress(websockets.ConnectionClosed):  # a close other than 1000
            async for m in ws:
                messages.append(json.loads(m))
    return messages, ws.close_code, ws.close_reason


def test_starting_a_suspended_session_resumes_it(gateway, live_mint, kubectl):
    """A session's LiveStream suspended by hand (kubectl) is resumed by the next start: the
    gateway's one patch of a LiveStream."""
    mint = live_mint()
    with gateway.client() as api:
        started = api.post("/api/live-sessions/start", json={"mint_id": mint})
        assert started.status_code == 200, started.text
        stream = started.json()["session"]["stream"]
        suspend = '{"spec":{"suspend":true}}'
        kubectl("patch", "-n", NS, "ls", stream, "--type=merge", "-p", suspend)
        wait_for(lambda: get(kubectl, "ls", stream).get("status", {}).get("phase") == "Suspended")
        again = api.post("/api/live-sessions/start", json={"mint_id": mint})
        # 200 once it is Live again, or 504 if the new pod takes longer than the gateway waits.
        assert again.status_code in (200, 504), again.text
        assert get(kubectl, "ls", stream)["spec"]["suspend"] is False
        wait_for(lambda: get(kubectl, "ls", stream).get("status", {}).get("phase") == "Live", 180)
        assert api.post("/api/live-sessions/stop", json={"mint_id": mint}).status_code == 200


def test_the_websocket_proxy_delivers_frames_and_answers_ping(gateway, live_mint):
    mint = live_mint()
    with gateway.client() as api:
        assert api.post("/api/live-sessions/start", json={"mint_id": mint}).status_code == 200
        url = f"{gateway.ws_url}/api/live-sessions/stream/{mint}"
        frame, audio, pong = asyncio.run(_proxied(url, gateway.token))
        assert pong == {"type": "pong"}
        assert frame["width"] > 0 and frame["height"] > 0 and frame["data"]
        # the default: what the guide's player plays; ?audio=native: the pod's own
        assert (audio["sample_rate"], audio["channels"]) == (44100, 1)
        assert len(base64.b64decode(audio["data"])) % 2 == 0
        _, native, _ = asyncio.run(_proxied(f"{url}?audio=native", gateway.token))
        assert native["sample_rate"] == 48000 and native["channels"] >= 1
        # ?token= works where a browser's WebSocket cannot send headers
        token_url = f"{url}?token={gateway.token}"
        frame, _, _ = asyncio.run(_proxied(token_url, None))
        assert frame["data"]
        api.post("/api/live-sessions/stop", json={"mint_id": mint})


def test_a_refused_socket_says_why(gateway):
    """Accepted, then one JSON message with the reason, then a close with a code and it."""
    mint = "".join(random.choices(BASE58, k=44))
    url = f"{gateway.ws_url}/api/live-sessions/stream/{mint}"
    messages, code, reason = asyncio.run(_closed(url))  # no token
    assert messages == [{"type": "error", "mint_id": mint, "reason": reason}]
    assert code == 1008 and "token" in reason
    messages, code, reason = asyncio.run(_closed(f"{url}?token={gateway.token}"))
    assert messages[0]["type"] == "error" and code == 4404
    assert reason == f"no live session for mint {mint}: start one first"
    bad = f"{gateway.ws_url}/api/live-sessions/stream/not-a-mint?token={gateway.token}"
    messages, code, _ = asyncio.run(_closed(bad))
    assert messages[0]["type"] == "error" and code == 1008


def test_bad_input_gets_a_4xx_with_a_reason(gateway, kubectl):
    unknown = "".join(random.choices(BASE58, k=44))  # valid, but the stand-in says not live
    with gateway.client() as api:
        not_live = api.post("/api/live-sessions/start", json={"mint_id": unknown})
        assert not_live.status_code == 404 and "not live" in not_live.json()["detail"]
        body = not_live.json()
        assert body["success"] is False and body["error"] == body["detail"]
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
        # A validation error's detail is a sentence the client can show; the list stays too.
        invalid = bad_mint.json()
        assert invalid["success"] is False and isinstance(invalid["detail"], str)
        assert invalid["detail"].startswith("invalid request: body.mint_id: String should match")
        assert invalid["errors"][0]["loc"] == ["body", "mint_id"]
        # As Haven Player's backend answered it: 200, success false, not recording.
        none = api.get(f"/api/recording/status/{unknown}")
        assert none.status_code == 200
        assert none.json()["success"] is False and none.json()["is_recording"] is False
        stop = api.post("/api/recording/stop", json={"mint_id": unknown})
        assert stop.status_code == 404 and stop.json()["success"] is False
        download = api.get(f"/api/recording/download/{unknown}")
        assert download.status_code == 404 and download.json()["success"] is False
    with gateway.client(token="wrong") as intruder:
        assert intruder.get("/api/live-sessions/active").status_code == 401
        assert intruder.get("/api/recording/formats").status_code == 401


def test_the_formats_are_the_recorders(gateway):
    with gateway.client() as api:
        listed = api.get("/api/recording/formats").json()
    assert listed["success"] is True
    assert set(listed["recording_formats"]) == set(FORMATS) == set(formats.FORMATS)
    for name, fmt in FORMATS.items():
        assert listed["recording_formats"][name] == {
            "container": fmt.container,
            "containers": containers(name),
            "video_codec": fmt.video_codec,
            "audio_codec": fmt.audio_codec,
        }
        assert listed["formats"][name]["codec"] == fmt.video_codec
        assert listed["formats"][name]["container"] == fmt.container
        for quality in ("low", "medium", "high"):
            kbps = QUALITY[name][quality]["kbps"]
            preset = listed["quality_presets"][quality]
            assert preset["video_bitrate_by_format"][name] == f"{kbps}k"
            assert preset["audio_bitrate"] == f"{AUDIO_KBPS[quality]}k"
    # every output_format a Haven Player revision sent, and what it is recorded as
    mapping = {k: v["recording_format"] for k, v in listed["formats"].items()}
    assert mapping == formats.OUTPUT_FORMATS
    assert formats.recording_spec("mpegts") == {"format": "h264", "container": "mpegts"}
    assert listed["formats"]["mpegts"]["container"] == "mpegts"
    assert listed["formats"]["mp4"]["container"] == "mp4"
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
        capture_output=True, text=True, timeout=880, cwd=tmp_path,  # its cache goes there
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


def test_a_recording_stopped_at_once_says_so_and_the_next_starts(gateway, live_mint, kubectl):
    """The hook's two clicks in quick succession: a recording is recording (Pending
    included) from the moment start returns; a stop before its first frame says there is no
    file; a start right after the stop gets a new recording, not 409."""
    mint = live_mint()
    with gateway.client() as api:
        assert api.post("/api/live-sessions/start", json={"mint_id": mint}).status_code == 200
        first = api.post("/api/recording/start", json={"mint_id": mint, "output_format": "h264"})
        assert first.status_code == 200, first.text
        status = api.get(f"/api/recording/status/{mint}").json()
        assert status["is_recording"] is True, status  # whatever its phase, Pending included
        stopped = api.post("/api/recording/stop", json={"mint_id": mint})
        assert stopped.status_code == 200, stopped.text
        body = stopped.json()
        assert body["success"] is True and body["is_recording"] is False
        assert body["recording"]["phase"] == "Completed"
        if body["empty"]:  # stopped before the pod wrote a frame
            assert body["file_size_bytes"] == 0 and "before it recorded a frame" in body["message"]
        else:
            assert body["file_size_bytes"] > 0
        name = body["recording"]["recording"]
        assert get(kubectl, "rec", name)["status"]["phase"] == "Completed"

        again = api.post("/api/recording/start", json={"mint_id": mint, "output_format": "h264"})
        assert again.status_code == 200, again.text
        second = again.json()["recording"]["recording"]
        assert second != name
        wait_for(lambda: api.get(f"/api/recording/status/{mint}").json()["duration_seconds"] >= 2)
        done = api.post("/api/recording/stop", json={"mint_id": mint}).json()
        assert done["recording"]["recording"] == second and done["empty"] is False
        assert done["file_size_bytes"] > 0 and done["duration_seconds"] >= 2
        api.post("/api/live-sessions/stop", json={"mint_id": mint})


def test_download_the_latest_recording(gateway, live_mint):
    """GET /api/recording/download/{mint_id} through the stream pod's file API
    (gateway/haven_gateway/downloads.py): the whole file and a Range. A pod image without
    GET /recordings/{name}/files/{file} must get a plain 501, never anything like a file."""
    mint = live_mint()
    with gateway.client() as api:
        assert api.post("/api/live-sessions/start", json={"mint_id": mint}).status_code == 200
        api.post("/api/recording/start", json={"mint_id": mint, "output_format": "vp9"})
        wait_for(lambda: api.get(f"/api/recording/status/{mint}").json()["duration_seconds"] >= 2)
        done = api.post("/api/recording/stop", json={"mint_id": mint}).json()
        size = done["file_size_bytes"]
        assert size > 0
        whole = api.get(done["output_path"])
        if whole.status_code == 501:
            assert whole.json()["success"] is False
            assert "does not serve recording files yet" in whole.json()["detail"]
        else:
            assert whole.status_code == 200, whole.text[:500]
            assert whole.headers["content-type"] == "video/webm"
            assert len(whole.content) == size and whole.content[:4] == b"\x1a\x45\xdf\xa3"
            part = api.get(done["output_path"], headers={"Range": "bytes=4-11"})
            assert part.status_code == 206 and part.content == whole.content[4:12]
            assert part.headers["content-range"] == f"bytes 4-11/{size}"
        api.post("/api/live-sessions/stop", json={"mint_id": mint})
        gone = api.get(f"/api/recording/download/{mint}")
        assert gone.status_code == 410 and "PersistentVolumeClaim" in gone.json()["detail"]

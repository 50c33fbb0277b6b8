"""The stream pod against a real livekit-server and the synthetic publisher."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import socket
import statistics
import time

import pytest
import websockets
from livekit import api

from haven_localcluster.mediacheck import analyze

from .conftest import decode_video_message, livekit_args


async def collect_video(url: str, count: int) -> list[tuple[int | None, int, int]]:
    frames = []
    async with websockets.connect(url, max_size=None) as ws:
        async with asyncio.timeout(30):
            while len(frames) < count:
                message = await ws.recv()
                is_video = (
                    message[0] == 1
                    if isinstance(message, bytes)
                    else '"video_frame"' in message[:40]
                )
                if is_video:
                    frames.append(decode_video_message(message))
    return frames


async def test_one_connection_serves_five_viewers_and_two_recordings(
    livekit_server, publisher, stream_pod
):
    pod = stream_pod(*livekit_args(livekit_server, publisher))
    pod.wait_state("live")
    pod.start_recording(name="rec-a", format="h264")
    pod.start_recording(name="rec-b", format="vp9", quality="low")

    viewers = [collect_video(pod.ws_url + ("?mode=binary" if i % 2 else ""), 20) for i in range(5)]
    results = await asyncio.gather(*viewers)

    lk = api.LiveKitAPI(livekit_server.http_url, livekit_server.api_key, livekit_server.api_secret)
    try:
        listed = await lk.room.list_participants(api.ListParticipantsRequest(room=publisher))
    finally:
        await lk.aclose()
    subscribers = [p.identity for p in listed.participants if p.identity != "synthetic-publisher"]
    assert len(subscribers) == 1, subscribers  # the pod, once, for 5 viewers and 2 recordings
    status = pod.status()
    assert status["viewers"] == 0 and sorted(status["activeRecordings"]) == ["rec-a", "rec-b"]

    for frames in results:
        counters = [c for c, _, _ in frames]
        assert all(c is not None for c in counters), counters
        assert counters == sorted(counters) and len(set(counters)) == len(counters), counters
        assert {(w, h) for _, w, h in frames} == {(1280, 720)}
    for name in ("rec-a", "rec-b"):
        final = pod.stop_recording(name)
        assert final["state"] == "completed" and final["bytesWritten"] > 0, final


async def test_a_stalled_viewer_does_not_delay_the_others(livekit_server, publisher, stream_pod):
    pod = stream_pod(*livekit_args(livekit_server, publisher), "--max-fps", "15")
    pod.wait_state("live")
    # This viewer never reads: its socket fills and the pod must drop its frames, only its.
    # A small receive buffer makes the socket fill in seconds rather than megabytes.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", pod.port))
    sock.setblocking(False)
    stalled = await websockets.connect(pod.ws_url, sock=sock, max_size=None, max_queue=1)
    try:
        await asyncio.sleep(3)

        async def watch() -> tuple[int, list[float]]:
            lags, frames = [], 0
            async with websockets.connect(pod.ws_url, max_size=None) as ws:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(6):
                        while True:
                            msg = json.loads(await ws.recv())
                            if msg["type"] == "video_frame":
                                frames += 1
                                lags.append(time.monotonic() - msg["timestamp"])
            return frames, lags

        results = await asyncio.gather(watch(), watch(), watch())
    finally:
        await stalled.close()
    for frames, lags in results:
        assert frames >= 6 * 10, frames  # ~15 fps each, whatever the stalled viewer does
        assert statistics.median(lags) < 0.5, lags
    metrics = pod.http("GET", "/metrics").text
    dropped = [
        line
        for line in metrics.splitlines()
        if line.startswith('haven_frames_dropped_total{handler="viewer"}')
    ]
    assert dropped and float(dropped[0].split()[-1]) > 0, dropped


@pytest.mark.parametrize("fmt", ["av1", "h264", "vp9"])
async def test_recording_decodes_with_codec_duration_audio_and_sync(
    livekit_server, publisher, stream_pod, fmt
):
    pod = stream_pod(*livekit_args(livekit_server, publisher))
    pod.wait_state("live")
    pod.start_recording(name=f"rec-{fmt}", format=fmt)
    pod.wait_recording(f"rec-{fmt}", "recording")
    began = time.monotonic()
    await asyncio.sleep(10)
    final = pod.stop_recording(f"rec-{fmt}")
    elapsed = time.monotonic() - began

    assert final["state"] == "completed" and len(final["parts"]) == 1, final
    part = final["parts"][0]
    path = pod.recordings / part["path"]
    assert path.name == f"rec-{fmt}-part001.{'mp4' if fmt == 'h264' else 'webm'}"
    report = analyze(path)
    assert report.error is None
    assert report.video_codec == {"av1": "libdav1d", "h264": "h264", "vp9": "vp9"}[fmt]
    assert report.audio_codec == ("aac" if fmt == "h264" else "opus")
    assert report.duration == pytest.approx(elapsed, rel=0.05, abs=0.3)
    assert report.duration == pytest.approx(part["durationSeconds"], rel=0.05)
    assert report.audio_seconds == pytest.approx(report.duration, rel=0.05)
    assert part["sizeBytes"] == path.stat().st_size == final["bytesWritten"]
    offsets = report.av_offsets()
    print(f"{fmt}: A/V offsets (ms) {[round(o * 1000) for o in offsets]}")
    # Which source flash frames reached the file (by their counter), to tell a flash the
    # publisher or the network lost from one the encoder washed out.
    flash_frames = [c for c in report.counters if c is not None and c % 60 == 0]
    assert len(offsets) >= 3, (report.flashes, report.tones, flash_frames, final)
    assert statistics.median(abs(o) for o in offsets) <= 0.04, offsets
    assert max(abs(o) for o in offsets) <= 0.08, offsets


async def test_a_pod_kept_off_the_cpu_keeps_audio_and_video_in_sync(
    livekit_server, publisher, stream_pod
):
    """CPU contention delays frame deliveries; the clocks must not carry that into the file."""
    pod = stream_pod(*livekit_args(livekit_server, publisher))
    pod.wait_state("live")
    pod.start_recording(name="stalled", format="h264")
    pod.wait_recording("stalled", "recording")
    assert pod.proc is not None
    for _ in range(16):  # a 100 ms stall every 1.8 s: deliveries arrive late, in bursts
        await asyncio.sleep(1.7)
        os.kill(pod.proc.pid, signal.SIGSTOP)
        await asyncio.sleep(0.1)
        os.kill(pod.proc.pid, signal.SIGCONT)
    final = pod.stop_recording("stalled")
    report = analyze(pod.recordings / final["parts"][0]["path"])
    offsets = report.av_offsets()
    print(f"stalled: A/V offsets (ms) {[round(o * 1000) for o in offsets]}")
    assert report.error is None and len(offsets) >= 8, (report.flashes, report.tones)
    # Clocks taken from arrival times measured a median near 40 ms here, and up to 70 ms.
    assert statistics.median(abs(o) for o in offsets) <= 0.025, offsets
    assert max(abs(o) for o in offsets) <= 0.060, offsets


async def test_sigkill_leaves_a_decodable_file_and_the_recording_resumes_into_part_2(
    livekit_server, publisher, stream_pod
):
    args = livekit_args(livekit_server, publisher)
    pod = stream_pod(*args)
    pod.wait_state("live")
    pod.start_recording(name="crash", format="h264")
    pod.wait_recording("crash", "recording")
    began = time.monotonic()
    await asyncio.sleep(8)
    pod.kill()  # SIGKILL: no chance to finalize anything
    written = time.monotonic() - began

    part1 = pod.recordings / "crash" / "crash-part001.mp4"
    report = analyze(part1)
    assert report.video_frames > 0 and report.audio_seconds > 0
    assert report.duration >= written - 2.5, (report.duration, written, report.error)

    again = stream_pod(*args, recordings=pod.recordings)  # the Deployment's replacement pod
    again.wait_state("live")
    again.wait_recording("crash", "recording")
    await asyncio.sleep(4)
    final = again.stop_recording("crash")
    assert [p["path"] for p in final["parts"]] == [
        "crash/crash-part001.mp4",
        "crash/crash-part002.mp4",
    ]
    # Part 1 is kept, cut back to its last whole fragment if the kill fell inside one.
    assert final["parts"][0]["sizeBytes"] == part1.stat().st_size
    kept = analyze(part1)
    assert kept.error is None and kept.duration >= written - 2.5, kept.error
    assert final["parts"][0]["durationSeconds"] == pytest.approx(kept.duration, abs=0.2)
    part2 = analyze(pod.recordings / final["parts"][1]["path"])
    assert part2.error is None and part2.duration > 2 and part2.audio_seconds > 2
    # A repeated start of the same recording is a no-op, so the operator may re-assert it.
    resp = again.http("POST", "/recordings", json={"name": "crash", "format": "h264"})
    assert resp.status_code == 200 and resp.json()["state"] == "completed"


async def test_publisher_leaves_and_returns_while_viewers_and_recording_carry_on(
    livekit_server, start_publisher, stream_pod
):
    room = "comeback"
    first = start_publisher(room)
    pod = stream_pod(*livekit_args(livekit_server, room))
    pod.wait_state("live")
    pod.start_recording(name="through", format="h264")
    async with websockets.connect(pod.ws_url, max_size=None) as viewer:
        states = []

        async def read_until_live_again() -> None:
            seen_offline = False
            while True:
                msg = json.loads(await viewer.recv())
                if msg["type"] == "status":
                    states.append(msg["state"])
                    seen_offline |= msg["state"] == "offline"
                elif msg["type"] == "video_frame" and seen_offline and states[-1] == "live":
                    return

        reader = asyncio.create_task(read_until_live_again())
        await asyncio.sleep(2)
        from haven_localcluster.process import stop

        stop([first])
        offline = await asyncio.to_thread(pod.wait_state, "offline", 20)
        assert offline["reason"] in ("VideoUnpublished", "PublisherLeft", "NoPublisher"), offline
        start_publisher(room)
        await asyncio.wait_for(reader, 30)
        await asyncio.sleep(3)  # the recording takes in the second publisher too
    assert "offline" in states and states[-1] == "live", states
    rec = pod.recording("through")
    assert rec["state"] == "recording", rec
    final = pod.stop_recording("through")
    report = analyze(pod.recordings / final["parts"][0]["path"])
    # One part holds both publishers: the second one's counter starts again at 0.
    counters = [c for c in report.counters if c is not None]
    restarts = sum(1 for a, b in itertools.pairwise(counters) if b < a)
    assert restarts == 1 and len(final["parts"]) == 1, counters


async def test_bad_control_requests_get_clear_4xx(livekit_server, stream_pod):
    pod = stream_pod(*livekit_args(livekit_server, "nobody-here"))
    cases = [
        ({"name": "x", "format": "mpeg2"}, 422, "av1"),
        ({"name": "x", "quality": "ultra"}, 422, "low"),
        ({"name": "Bad_Name"}, 422, "lowercase"),
        ({"name": "x", "maxFps": 0}, 422, "maxFps"),
        ({"name": "x", "colour": "red"}, 422, "colour"),
    ]
    for body, code, word in cases:
        resp = pod.http("POST", "/recordings", json=body)
        assert resp.status_code == code and word in resp.text, (body, resp.status_code, resp.text)
    assert (
        pod.http("POST", "/recordings", json={"name": "dup", "format": "h264"}).status_code == 201
    )
    clash = pod.http("POST", "/recordings", json={"name": "dup", "format": "vp9"})
    assert clash.status_code == 409 and "other settings" in clash.text
    missing = pod.http("POST", "/recordings/nope/stop")
    assert missing.status_code == 404 and "nope" in missing.text
    unauthorized = pod.http("GET", "/status", headers={"Authorization": "Bearer wrong"})
    assert unauthorized.status_code == 401
    assert pod.http("GET", "/formats").json()["formats"] == ["av1", "h264", "vp9"]
    status = pod.status()
    assert status["state"] == "offline" and status["reason"] == "NoPublisher", status


async def test_max_viewers_closes_the_extra_connection_with_1013(
    livekit_server, publisher, stream_pod
):
    pod = stream_pod(*livekit_args(livekit_server, publisher), "--max-viewers", "2")
    async with websockets.connect(pod.ws_url) as a, websockets.connect(pod.ws_url) as b:
        await a.recv(), await b.recv()
        async with websockets.connect(pod.ws_url) as extra:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:
                    await extra.recv()
        assert closed.value.rcvd.code == 1013 and "maxViewers 2" in closed.value.rcvd.reason


async def test_max_width_and_max_fps_scale_the_recording_down(
    livekit_server, publisher, stream_pod
):
    pod = stream_pod(*livekit_args(livekit_server, publisher))
    pod.wait_state("live")
    pod.start_recording(name="small", format="h264", maxWidth=640, maxFps=10)
    pod.wait_recording("small", "recording")
    await asyncio.sleep(5)
    final = pod.stop_recording("small")
    report = analyze(pod.recordings / final["parts"][0]["path"])
    assert (report.width, report.height) == (640, 360)
    fps = (report.video_frames - 1) / report.duration
    assert 8 <= fps <= 10.5, fps
    assert report.counters and None not in report.counters[:5]  # readable after scaling


async def test_viewer_token_guards_the_websocket_and_the_page(
    livekit_server, publisher, stream_pod
):
    pod = stream_pod(*livekit_args(livekit_server, publisher), "--viewer-token", "let-me-in")
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(pod.ws_url):
            pass
    assert refused.value.response.status_code == 403
    async with websockets.connect(pod.ws_url + "?token=let-me-in") as ws:
        assert json.loads(await ws.recv())["type"] == "status"
    assert pod.http("GET", "/").status_code == 401
    assert pod.http("GET", "/?token=let-me-in").status_code == 200


async def test_each_frame_is_jpeg_encoded_once_whatever_the_viewer_count(
    livekit_server, publisher, stream_pod
):
    pod = stream_pod(*livekit_args(livekit_server, publisher), "--max-fps", "10")
    pod.wait_state("live")

    def encodes() -> float:
        for line in pod.http("GET", "/metrics").text.splitlines():
            if line.startswith('haven_encode_seconds_count{encoder="jpeg"}'):
                return float(line.split()[-1])
        return 0.0

    async def watch(seconds: float) -> int:
        frames = 0
        async with websockets.connect(pod.ws_url, max_size=None) as ws:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    while True:
                        frames += '"video_frame"' in (await ws.recv())[:40]
        return frames

    before = encodes()
    seen = await asyncio.gather(*(watch(4) for _ in range(6)))
    encoded = encodes() - before
    assert min(seen) >= 25, seen  # ~10 fps reached every viewer...
    assert encoded <= 4 * 10 + 5, encoded  # ...from at most one encode per frame at maxFps

"""Publishers' tracks as real publishers publish them, through the real livekit-server with the
synthetic publisher (the `livekit` SDK): camera and screen share at once, a camera unpublished
and published again, audio only, video only; and lazy subscription (an idle pod decodes no
video, the first viewer gets frames).

The publisher's screen share carries its camera's frame counter plus SCREEN_COUNTER, so the
counter a viewer reads says which track the pod follows; SIGUSR1 toggles its camera."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import time
import uuid

import websockets

from haven_localcluster.mediacheck import analyze
from haven_localcluster.publisher import SCREEN_COUNTER

from .conftest import decode_video_message, livekit_args

CAMERA, SCREEN = "camera", "screen"


def track_of(counter: int | None) -> str | None:
    if counter is None:
        return None
    return SCREEN if counter >= SCREEN_COUNTER else CAMERA


def room() -> str:
    return f"tracks-{uuid.uuid4().hex[:8]}"


def wait_for(pod, check, timeout: float = 60, what: str = "") -> dict:
    """Poll the pod's status until `check(status)` holds."""
    deadline = time.monotonic() + timeout
    status: dict = {}
    while time.monotonic() < deadline:
        status = pod.status()
        if check(status):
            return status
        time.sleep(0.3)
    raise AssertionError(f"not {what} after {timeout}s: {status}")


async def frames(url: str, count: int) -> list[tuple[int | None, int, int]]:
    """`count` video frames: (counter, width, height), within 60 s."""
    got = []
    async with asyncio.timeout(60), websockets.connect(url, max_size=None) as ws:
        while len(got) < count:
            message = json.loads(await ws.recv())
            if message["type"] == "video_frame":
                got.append(decode_video_message(json.dumps(message)))
    return got


def segments(tracks: list[str | None]) -> list[str | None]:
    """The tracks in the order they came, each run once."""
    return [track for track, _ in itertools.groupby(tracks)]


def in_order(got: list[tuple[int | None, int, int]]) -> bool:
    """Nearly every counter readable (a picture can be caught mid-change), and each track's
    in order."""
    counters = [c for c, _, _ in got if c is not None]
    if len(counters) < 0.9 * len(got):
        return False
    return all(
        [c for c in counters if track_of(c) == t] == sorted(c for c in counters if track_of(c) == t)
        for t in (CAMERA, SCREEN)
    )


async def test_camera_and_screen_share_one_video_track_by_the_rule(
    livekit_server, start_publisher, stream_pod
):
    name = room()
    start_publisher(name, options=["--screen-share"])
    # Default rule: the camera; a pod that prefers the screen share follows that instead.
    camera = stream_pod(*livekit_args(livekit_server, name))
    screen = stream_pod(*livekit_args(livekit_server, name), "--video-track", "screen_share")
    for pod, source in ((camera, "camera"), (screen, "screen_share")):
        status = wait_for(pod, lambda s: s["state"] == "live" and s["videoTrack"], what="live")
        assert status["videoTrack"]["source"] == source, status
    got_camera = await frames(camera.ws_url, 40)
    got_screen = await frames(screen.ws_url, 40)
    # One track each, never the two interleaved: every frame from the one track, in order.
    assert {track_of(c) for c, _, _ in got_camera} == {CAMERA}, got_camera
    assert {track_of(c) for c, _, _ in got_screen} == {SCREEN}, got_screen
    assert in_order(got_camera) and in_order(got_screen), (got_camera, got_screen)
    status = camera.status()
    assert status["subscribed"] == {"video": True, "audio": True}, status
    # A preference by track name works the same.
    named = stream_pod(*livekit_args(livekit_server, name), "--video-track", "screen")
    wait_for(named, lambda s: (s["videoTrack"] or {}).get("name") == "screen", what="on screen")


async def test_unpublished_camera_falls_back_and_its_return_replaces_the_reader_cleanly(
    livekit_server, start_publisher, stream_pod
):
    name = room()
    publisher = start_publisher(name, options=["--screen-share"])
    pod = stream_pod(*livekit_args(livekit_server, name))
    first = wait_for(pod, lambda s: (s["videoTrack"] or {}).get("source") == "camera")
    pod.start_recording(name="switch", format="h264")
    seen: list[tuple[int | None, int, int]] = []
    arrived = asyncio.Event()

    async def watch() -> None:
        async with websockets.connect(pod.ws_url, max_size=None) as ws:
            while True:
                message = json.loads(await ws.recv())
                if message["type"] == "video_frame":
                    seen.append(decode_video_message(json.dumps(message)))
                    arrived.set()

    async def until(track: str, count: int = 20) -> None:
        """The last `count` frames are from `track` (within 60 s)."""
        async with asyncio.timeout(60):
            while sum(1 for c, _, _ in seen[-count:] if track_of(c) == track) < count:
                arrived.clear()
                await arrived.wait()

    viewer = asyncio.create_task(watch())
    try:
        await until(CAMERA)
        os.kill(publisher.pid, signal.SIGUSR1)  # the camera is unpublished
        await until(SCREEN)
        fallback = pod.status()
        assert fallback["videoTrack"]["source"] == "screen_share", fallback
        assert fallback["state"] == "live" and fallback["reason"] == "Live", fallback
        os.kill(publisher.pid, signal.SIGUSR1)  # published again, as a new track
        await until(CAMERA)
    finally:
        viewer.cancel()
        await asyncio.gather(viewer, return_exceptions=True)
    again = pod.status()
    assert again["videoTrack"]["source"] == "camera", again
    assert again["videoTrack"]["sid"] != first["videoTrack"]["sid"], (first, again)
    assert again["healthy"] and again["taskFailures"] == [], again

    # Camera, screen share, camera again: three runs, never a frame of the other between, and
    # each track's counter in order (the camera's goes on after its return).
    tracks = [track_of(c) for c, _, _ in seen if c is not None]
    assert segments(tracks) == [CAMERA, SCREEN, CAMERA], [c for c, _, _ in seen]
    assert in_order(seen), seen

    # The recording went on through both switches (a part per picture shape: WebRTC crops
    # and scales each track its own way): the same three runs, each in order.
    final = pod.stop_recording("switch")
    assert final["state"] == "completed" and final["parts"], final
    recorded: list[int | None] = []
    for part in final["parts"]:  # a short part of a track's first, small pictures may be one
        report = analyze(pod.recordings / part["path"])
        assert report.error is None, report.error
        recorded += report.counters
    read = [c for c in recorded if c is not None]
    assert len(read) >= 0.9 * len(recorded), recorded
    assert segments([track_of(c) for c in read]) == [CAMERA, SCREEN, CAMERA], read
    assert in_order([(c, 0, 0) for c in read]), read


async def test_audio_only_publisher(livekit_server, start_publisher, stream_pod):
    name = room()
    start_publisher(name, options=["--no-video"])
    pod = stream_pod(*livekit_args(livekit_server, name))
    status = pod.wait_state("live", timeout=60, reason="AudioOnly")
    assert status["missing"] == ["video"] and status["videoTrack"] is None, status
    assert status["audio"]["sampleRate"] == 48000, status
    audio, video, statuses = 0, 0, []
    async with asyncio.timeout(60), websockets.connect(pod.ws_url, max_size=None) as ws:
        while audio < 50:
            message = json.loads(await ws.recv())
            audio += message["type"] == "audio_frame"
            video += message["type"] == "video_frame"
            if message["type"] == "status":
                statuses.append(message)
    assert video == 0
    assert statuses and statuses[-1]["reason"] == "AudioOnly", statuses
    assert "no video" in statuses[-1]["message"], statuses

    # Recordings need video: one started on an audio-only stream waits, writing nothing.
    pod.start_recording(name="sound", format="h264")
    await asyncio.sleep(5)
    waiting = pod.recording("sound")
    assert waiting["state"] == "starting" and waiting["framesWritten"] == 0, waiting
    assert waiting["reason"] == "WaitingForVideo", waiting
    assert pod.status()["reason"] == "AudioOnly"
    final = pod.stop_recording("sound")
    assert final["state"] == "completed" and final["parts"] == [], final


async def test_video_only_publisher(livekit_server, start_publisher, stream_pod):
    name = room()
    start_publisher(name, options=["--no-audio"])
    pod = stream_pod(*livekit_args(livekit_server, name))
    status = pod.wait_state("live", timeout=60, reason="VideoOnly")
    assert status["missing"] == ["audio"], status
    pod.start_recording(name="picture", format="h264")
    got, audio = [], 0
    async with asyncio.timeout(60), websockets.connect(pod.ws_url, max_size=None) as ws:
        while len(got) < 60:
            message = json.loads(await ws.recv())
            audio += message["type"] == "audio_frame"
            if message["type"] == "video_frame":
                got.append(decode_video_message(json.dumps(message)))
    assert audio == 0 and {track_of(c) for c, _, _ in got} == {CAMERA}, got
    final = pod.stop_recording("picture")
    assert final["state"] == "completed" and len(final["parts"]) == 1, final
    report = analyze(pod.recordings / final["parts"][0]["path"])
    assert report.error is None and report.duration > 1, report
    read = [c for c in report.counters if c is not None]
    assert read and read == sorted(read), report.counters


async def test_an_idle_pod_subscribes_to_no_video_and_the_first_viewer_gets_frames(
    livekit_server, start_publisher, stream_pod
):
    name = room()
    start_publisher(name)
    pod = stream_pod(*livekit_args(livekit_server, name))
    live = pod.wait_state("live", timeout=60)
    # Live from the publication: the size as published, nothing subscribed, nothing decoded.
    assert (live["video"]["width"], live["video"]["height"]) == (1280, 720), live
    await asyncio.sleep(5)
    idle = pod.status()
    assert idle["state"] == "live" and idle["subscribed"] == {"video": False, "audio": False}
    assert idle["framesDecoded"] == {"video": 0, "audio": 0}, idle
    assert idle["videoCodec"] and idle["audioCodec"], idle  # from the publications too

    got = await frames(pod.ws_url, 20)  # the first viewer subscribes
    assert {track_of(c) for c, _, _ in got} == {CAMERA}, got
    watched = pod.status()
    assert watched["framesDecoded"]["video"] >= 20, watched

    # The last viewer gone, the pod drops its subscriptions again (after a short linger).
    idle_again = wait_for(
        pod, lambda s: s["subscribed"] == {"video": False, "audio": False}, what="idle again"
    )
    await asyncio.sleep(3)
    assert pod.status()["framesDecoded"] == idle_again["framesDecoded"]
    assert pod.status()["state"] == "live"


async def test_the_publisher_unpublishes_and_republishes_on_a_timer(
    livekit_server, start_publisher, stream_pod
):
    """The timed options as a pod sees them: the camera goes (audio only), and comes back."""
    name = room()
    pod = stream_pod(*livekit_args(livekit_server, name))
    pod.wait_state("offline", reason="NoPublisher")  # there before the publisher
    start_publisher(name, options=["--unpublish-after", "6", "--republish-after", "4"])
    wait_for(pod, lambda s: s["reason"] == "AudioOnly", what="audio only")
    back = wait_for(pod, lambda s: s["reason"] == "Live" and s["videoTrack"], what="live again")
    assert back["missing"] == [], back

"""Inputs real publishers send, published by the `livekit` SDK through the real livekit-server:
odd sizes, a portrait camera sending landscape pictures with rotation metadata, two channels at
44.1 kHz. Viewers and recordings get upright, readable pictures of the right size; recordings
keep the stream's channels; viewers keep the documented audio format (48 kHz, mono).

What arrives is what the SDK's WebRTC sends: it crops a picture to its encoder's alignment
(720x405 arrives as 720x404, 641x359 as 640x356), and without a way to announce stereo (the
Python SDK has none) its Opus stream is mono. Odd sizes and stereo as the pod receives them
from other publishers are shown in process: tests/unit/test_media_properties.py and
test_recording_core.py."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pytest
import websockets

from haven_localcluster.mediacheck import analyze

from .conftest import decode_video_message, livekit_args

VIEWER_MAX_WIDTH = 480  # viewers get scaled pictures: the path that raised on odd sizes


@dataclass(frozen=True)
class Input:
    flags: list[str]
    upright: tuple[int, int]  # the picture sent, as it must be seen


INPUTS = {
    "odd-720x405": Input(["--width", "720", "--height", "405"], (720, 405)),
    "odd-641x359": Input(["--width", "641", "--height", "359"], (641, 359)),
    "portrait-by-rotation": Input(["--rotation", "90"], (720, 1280)),
    "upside-down-odd": Input(
        ["--width", "721", "--height", "405", "--rotation", "180"], (721, 405)
    ),
    "two-channels-44k1": Input(["--channels", "2", "--sample-rate", "44100"], (1280, 720)),
}


def viewer_size(width: int, height: int) -> tuple[int, int]:
    if width <= VIEWER_MAX_WIDTH:
        return width, height
    h = round(height * VIEWER_MAX_WIDTH / width)
    return VIEWER_MAX_WIDTH, h - h % 2


@pytest.fixture
def publish(start_publisher) -> Callable[[list[str]], str]:
    """Start a synthetic publisher with flags in a room of its own; returns the room."""

    def start(flags: list[str]) -> str:
        room = f"room-{uuid.uuid4().hex[:8]}"
        start_publisher(room, options=flags)
        return room

    return start


async def watch(url: str, videos: int) -> tuple[list[tuple[int | None, int, int]], list[dict]]:
    """`videos` video messages (counter, width, height) and the audio messages among them."""
    video, audio = [], []
    async with websockets.connect(url, max_size=None) as ws:
        async with asyncio.timeout(30):
            while len(video) < videos:
                message = json.loads(await ws.recv())
                if message["type"] == "video_frame":
                    video.append(decode_video_message(json.dumps(message)))
                elif message["type"] == "audio_frame":
                    audio.append(message)
    return video, audio


def audio_start(path: Path) -> float:
    """Media time (seconds) of the file's first audio sample."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        return float(stream.start_time * stream.time_base) if stream.start_time else 0.0


def stereo_levels(path: Path) -> tuple[int, float, float]:
    """The audio stream's channel count and the mean level of each of its first two channels."""
    levels = np.zeros(2)
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        channels = stream.codec_context.channels
        for frame in container.decode(stream):
            pcm = frame.to_ndarray().astype(np.float64)
            pcm = pcm if frame.format.is_planar else pcm.reshape(-1, channels).T
            levels += [np.abs(pcm[0]).mean(), np.abs(pcm[min(1, channels - 1)]).mean()]
    return channels, float(levels[0]), float(levels[1])


@pytest.mark.parametrize("name", list(INPUTS))
async def test_viewers_and_recordings_get_upright_readable_pictures(
    livekit_server, publish, stream_pod, name
):
    case = INPUTS[name]
    room = publish(case.flags)
    pod = stream_pod(*livekit_args(livekit_server, room), "--max-width", str(VIEWER_MAX_WIDTH))
    status = pod.wait_state("live")
    pod.start_recording(name="input", format="h264")
    pod.wait_recording("input", "recording")
    frames, audio = await watch(pod.ws_url, 30)
    await asyncio.sleep(3)
    final = pod.stop_recording("input")
    status = pod.status()

    # The stream and the viewers: upright, scaled with the aspect ratio kept, every counter read.
    got = (status["video"]["width"], status["video"]["height"])
    assert all(0 <= sent - seen <= 4 for sent, seen in zip(case.upright, got, strict=True)), got
    counters = [c for c, _, _ in frames]
    assert all(c is not None for c in counters), counters
    assert counters == sorted(counters), counters
    assert {(w, h) for _, w, h in frames} == {viewer_size(*got)}
    # Viewers keep the documented format: 48 kHz, one channel, whatever the source.
    assert audio and {(a["sample_rate"], a["channels"]) for a in audio} == {(48000, 1)}
    pcm = np.frombuffer(base64.b64decode(audio[-1]["data"]), np.int16)
    assert len(pcm) == round(audio[-1]["sample_rate"] * 0.04)  # one 40 ms message, mono

    # The recording: upright, even-sized, the counter readable, audio in the source's channels.
    assert final["state"] == "completed" and len(final["parts"]) == 1, final
    path = pod.recordings / final["parts"][0]["path"]
    report = analyze(path)
    assert report.error is None
    # The publication's size (even), whatever size the first pictures had: WebRTC crops 641x359
    # to 640x356, and the part is planned from what the track announced (see the test below).
    width, height = case.upright
    assert (report.width, report.height) == (width - width % 2, height - height % 2)
    read = [c for c in report.counters if c is not None]
    assert len(read) >= 0.9 * len(report.counters) and read == sorted(read), report.counters
    # Audio from its first sample to the last picture: with lazy subscription the sound comes
    # before the first picture (video waits for a keyframe), and the part keeps it.
    assert abs(report.audio_seconds - (report.last_video - audio_start(path))) < 0.5, report
    assert len(report.av_offsets()) >= 1, (report.flashes, report.tones)  # 44.1 kHz tones too
    channels, left, right = stereo_levels(path)
    assert channels == status["audio"]["channels"], status
    if channels == 2:  # the publisher sends the tone left at twice its level right
        assert 1.6 < left / right < 2.5, (left, right)


def _wait_status(pod, check: Callable[[dict], bool], what: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    status: dict = {}
    while time.monotonic() < deadline:
        if check(status := pod.status()):
            return status
        time.sleep(0.2)
    raise AssertionError(f"the pod's status did not show {what} in {timeout}s: {status}")


def test_a_recording_has_the_publications_size_not_its_first_pictures(
    livekit_server, start_publisher, stream_pod
):
    """A recording started on an idle pod subscribes while WebRTC ramps up, and a busy
    publisher's encoder scales down: its first pictures are smaller than the track. The
    publisher here announces 641x359 and sends half that until SIGUSR2; the part opens on a
    small picture and is still written at the publication's size (even: 640x358)."""
    room = f"room-{uuid.uuid4().hex[:8]}"
    flags = ["--width", "641", "--height", "359", "--start-small", "--no-audio"]
    publisher = start_publisher(room, options=flags)
    pod = stream_pod(*livekit_args(livekit_server, room))
    idle = pod.wait_state("live")
    assert idle["subscribed"]["video"] is False, idle  # lazy: the recording subscribes
    assert (idle["video"]["width"], idle["video"]["height"]) == (641, 359), idle  # published
    pod.start_recording(name="ramp", format="h264", audio=False)
    pod.wait_recording("ramp", "recording")
    small = pod.status()
    assert small["video"]["width"] <= 330, small  # the part opened on a half-size picture
    os.kill(publisher.pid, signal.SIGUSR2)  # full size from now on
    grown = _wait_status(pod, lambda s: s["video"]["width"] >= 600, "full-size pictures")
    decoded = grown["framesDecoded"]["video"]
    _wait_status(pod, lambda s: s["framesDecoded"]["video"] >= decoded + 30, "30 more frames")
    final = pod.stop_recording("ramp")

    assert final["state"] == "completed" and len(final["parts"]) == 1, final
    report = analyze(pod.recordings / final["parts"][0]["path"])
    assert report.error is None
    assert (report.width, report.height) == (640, 358), report
    read = [c for c in report.counters if c is not None]
    assert len(read) >= 30 and read == sorted(read), report.counters

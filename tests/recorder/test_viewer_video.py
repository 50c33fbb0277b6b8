"""`/stream?mode=video`: one shared H.264 + Opus encode, against a real pod and publisher, and
the page's WebCodecs path in Debian's headless Chromium."""

from __future__ import annotations

import asyncio
import shutil
import struct
import time

import av
import numpy as np
import pytest
import websockets
from playwright.sync_api import sync_playwright

from haven_localcluster import testsignal as ts
from haven_recorder.videohub import Chunk, VideoViewer

from .conftest import StreamPod, livekit_args
from .test_viewer_page import ARGS, CHROMIUM, canvas_counter

VIDEO_HEADER = struct.Struct(">BdBHH")
AUDIO_HEADER = struct.Struct(">BdIB")


async def read_video_mode(url: str, pictures: int) -> tuple[list, list]:
    """The first `pictures` video messages and the audio messages among them, as
    (timestamp, keyframe, width, height, access unit) and (timestamp, rate, channels, packet)."""
    video, audio = [], []
    async with websockets.connect(url + "?mode=video", max_size=None) as ws:
        async with asyncio.timeout(60):
            while len(video) < pictures:
                message = await ws.recv()
                if isinstance(message, str):
                    continue
                if message[0] == 3:
                    _kind, t, flags, w, h = VIDEO_HEADER.unpack_from(message)
                    video.append((t, bool(flags & 1), w, h, message[VIDEO_HEADER.size :]))
                elif message[0] == 4:
                    _kind, t, rate, channels = AUDIO_HEADER.unpack_from(message)
                    audio.append((t, rate, channels, message[AUDIO_HEADER.size :]))
                else:
                    raise AssertionError(f"a kind {message[0]} message in video mode")
    return video, audio


def decode_counters(video: list) -> list[int | None]:
    decoder = av.CodecContext.create("h264", "r")
    counters = []
    for _t, _key, w, h, au in video:
        for picture in decoder.decode(av.Packet(au)):
            assert (picture.width, picture.height) == (w, h)
            luma = picture.to_ndarray(format="gray")
            counters.append(ts.decode_counter(np.ascontiguousarray(luma)))
    return counters


def wait_encoding(pod: StreamPod, running: bool, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        mode = pod.status()["videoMode"]
        if mode["encoding"] is running:
            return mode
        time.sleep(0.1)
    raise AssertionError(f"videoMode.encoding is not {running} after {timeout} s: {mode}")


async def test_video_mode_starts_at_a_keyframe_decodes_and_stops_its_encoder(shared_pod):
    pod = shared_pod
    assert pod.status()["videoMode"]["encoding"] is False  # nobody in the mode: no encoder
    video, audio = await read_video_mode(pod.ws_url, 75)  # 5 s at maxFps 15
    assert video[0][1], "the first picture a viewer gets is a keyframe"
    assert (video[0][2], video[0][3]) == (1280, 720)
    keys = [t for t, key, *_ in video if key]
    gaps = np.diff(keys)
    assert len(keys) >= 3 and gaps.max() <= 2.1, keys  # at least every 2 s
    counters = decode_counters(video)
    assert len(counters) == len(video) and None not in counters, counters
    assert counters == sorted(counters) and counters[-1] - counters[0] >= 100, counters
    # Opus: 40 ms packets at 48 kHz that decode to the publisher's tone bursts.
    assert audio and {(rate, channels) for _t, rate, channels, _p in audio} == {(48000, 1)}
    decoder = av.CodecContext.create("opus", "r")
    decoder.sample_rate, decoder.layout = 48000, "mono"
    pcm = np.concatenate(
        [f.to_ndarray().reshape(-1) for *_, p in audio for f in decoder.decode(av.Packet(p))]
    )
    assert len(pcm) >= 48000 * 3 and np.abs(pcm).max() > 0.1, len(pcm)
    wait_encoding(pod, False)  # the last viewer left: the encoder goes


async def test_a_joining_viewer_gets_a_keyframe_on_demand(shared_pod):
    pod = shared_pod
    async with websockets.connect(pod.ws_url + "?mode=video", max_size=None) as first:

        async def drain() -> None:  # the first viewer reads on, as a player would
            async for _ in first:
                pass

        reader = asyncio.create_task(drain())
        await asyncio.to_thread(wait_encoding, pod, True)
        keyframes = pod.status()["videoMode"]["keyframes"]
        # A second viewer joins mid-GOP: it starts on a keyframe made for it (the first viewer
        # gets that keyframe too); it decodes from where it starts.
        second, _ = await read_video_mode(pod.ws_url, 3)
        assert second[0][1]
        assert pod.status()["videoMode"]["keyframes"] > keyframes
        assert None not in decode_counters(second)
        reader.cancel()


def test_a_backed_up_viewer_waits_for_the_next_keyframe():
    asked = []
    sent: list[bytes] = []
    writable = [True]

    def send_frame(frame: bytes) -> bool:
        if writable[0]:
            sent.append(frame)
        return writable[0]

    viewer = VideoViewer(send_frame, lambda: asked.append(1))
    key, delta = Chunk.of(b"K", True, True), Chunk.of(b"D", True, False)
    audio = Chunk.of(b"A", False, False)
    viewer.offer(delta)  # joined mid-GOP: nothing until a keyframe
    viewer.offer(audio)  # audio needs no keyframe
    viewer.offer(key)
    viewer.offer(delta)
    writable[0] = False
    viewer.offer(delta)  # backed up: lost, and it asks for a keyframe
    writable[0] = True
    viewer.offer(delta)  # drained, but this one refers to the lost one: skipped
    viewer.offer(key)
    viewer.offer(delta)
    assert sent == [c.frame for c in (audio, key, delta, key, delta)]
    assert asked == [1] and viewer.skipped == 3


def test_page_plays_video_mode_in_chromium(livekit_server, publisher, stream_pod):
    if not shutil.which("chromium"):
        pytest.fail("Debian's chromium is missing: run hack/debian-packages.sh")
    pod = stream_pod(*livekit_args(livekit_server, publisher))
    pod.wait_state("live")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page()
            page.goto(pod.viewer_url + "/")  # http on loopback: a secure context, WebCodecs
            page.wait_for_function("window.havenStats && havenStats.frames > 10")
            assert page.evaluate("havenStats.mode") == "video"
            assert pod.status()["videoMode"]["viewers"] == 1
            first = canvas_counter(page)
            page.wait_for_function(f"havenStats.frames > {page.evaluate('havenStats.frames')} + 15")
            second = canvas_counter(page)
            assert first is not None and second is not None and second > first, (first, second)
            page.click("#mute")  # unmute: Opus decoded by WebCodecs, played by WebAudio
            page.wait_for_function("havenStats.audioPlayed > 25")
            assert page.evaluate("audio.state") == "running"
            # ?mode=jpeg: the fallback for browsers without WebCodecs (or a plain-http page)
            page.goto(pod.viewer_url + "/?mode=jpeg")
            page.wait_for_function("window.havenStats && havenStats.frames > 10")
            assert page.evaluate("havenStats.mode") == "jpeg" and canvas_counter(page) is not None
        finally:
            browser.close()

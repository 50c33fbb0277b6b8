"""A LiveKit publisher of video noise, which no encoder can shrink: recordings of it grow by
megabytes a second, so uploads get past S3's 5 MiB part minimum within seconds (the test
pattern compresses to tens of kilobytes a second).

    python -m tests.recorder.noise_publisher --url ws://... --room r --api-key k --api-secret s
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from pathlib import Path

import numpy as np
from livekit import rtc

from haven_localcluster.process import Proc, spawn
from haven_localcluster.publisher import token

WIDTH, HEIGHT, FPS = 1280, 720, 30
DISTINCT_FRAMES = 1  # one still picture: little for WebRTC to carry, much for each keyframe


def spawn_noise_publisher(
    url: str, api_key: str, api_secret: str, room: str, log_dir: Path
) -> Proc:
    argv = [
        sys.executable, "-m", "tests.recorder.noise_publisher", "--url", url, "--room", room,
        "--api-key", api_key, "--api-secret", api_secret,
    ]  # fmt: skip
    return spawn(f"noise-publisher-{room}", argv, log_dir)


async def publish(url: str, access: str, stop: asyncio.Event) -> None:
    room = rtc.Room()
    await room.connect(url, access)
    source = rtc.VideoSource(WIDTH, HEIGHT)
    track = rtc.LocalVideoTrack.create_video_track("noise", source)
    options = rtc.TrackPublishOptions(
        source=rtc.TrackSource.SOURCE_CAMERA,
        simulcast=False,
        video_encoding=rtc.VideoEncoding(max_bitrate=8_000_000, max_framerate=FPS),
        # Fewer frames, never a smaller picture: a new size would start a new part.
        degradation_preference=rtc.DegradationPreference.MAINTAIN_RESOLUTION,
    )
    await room.local_participant.publish_track(track, options)
    rng = np.random.default_rng(11)
    size = WIDTH * HEIGHT * 3 // 2
    pictures = [
        rng.integers(0, 256, size, dtype=np.uint8).tobytes() for _ in range(DISTINCT_FRAMES)
    ]
    t0, n = time.time(), 0
    try:
        while not stop.is_set():
            delay = t0 + n / FPS - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            frame = rtc.VideoFrame(
                WIDTH, HEIGHT, rtc.VideoBufferType.I420, pictures[n % DISTINCT_FRAMES]
            )
            source.capture_frame(frame, timestamp_us=int((t0 + n / FPS) * 1e6))
            n += 1
    finally:
        await room.disconnect()


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--room", required=True)
    p.add_argument("--api-key", required=True)
    p.add_argument("--api-secret", required=True)
    a = p.parse_args()
    access = token(a.api_key, a.api_secret, a.room, "noise-publisher", publish=True)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await publish(a.url, access, stop)

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

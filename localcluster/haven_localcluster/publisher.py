"""A synthetic LiveKit publisher: joins a room with the `livekit` SDK and publishes the test
signal (see testsignal) in real time until stopped.

    python -m haven_localcluster.publisher --url ws://127.0.0.1:7880 --room demo \
        --api-key devkey --api-secret ...

Frame n is captured at wall time t0 + n / FPS, where t0 is published as the participant
attribute `haven.t0`; a receiver that decodes n gets its end-to-end latency from that.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time
from pathlib import Path

from livekit import api, rtc

from . import testsignal as ts
from .process import Proc, spawn

log = logging.getLogger("haven.publisher")

# The audio source queues this far ahead, so a stall of this process shorter than it costs
# nothing; after a longer one the audio skips ahead to the wall clock (AUDIO_MAX_LATE).
AUDIO_QUEUE_MS = 500
AUDIO_MAX_LATE = 0.03  # seconds


def spawn_publisher(
    url: str, api_key: str, api_secret: str, room: str, log_dir: Path,
    identity: str = "synthetic-publisher", *, detach: bool = False,
) -> Proc:  # fmt: skip
    """Run a publisher in a process of its own (its CPU is not the receiver's)."""
    argv = [
        sys.executable, "-m", "haven_localcluster.publisher", "--url", url, "--room", room,
        "--identity", identity, "--api-key", api_key, "--api-secret", api_secret,
    ]  # fmt: skip
    return spawn(f"publisher-{room}-{identity}", argv, log_dir, detach=detach)


def token(api_key: str, api_secret: str, room: str, identity: str, *, publish: bool) -> str:
    grants = api.VideoGrants(
        room_join=True,
        room=room,
        can_publish=publish,
        can_subscribe=not publish,
        can_update_own_metadata=publish,  # the publisher announces haven.t0
    )
    return (
        api.AccessToken(api_key, api_secret)
        .with_identity(identity)
        .with_name(identity)
        .with_grants(grants)
        .to_jwt()
    )


async def _video_loop(source: rtc.VideoSource, t0: float, stop: asyncio.Event) -> None:
    pattern = ts.VideoPattern()
    n = 0
    while not stop.is_set():
        due = t0 + n / ts.FPS
        delay = due - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -1:  # fell far behind (a stalled machine): skip ahead, keep the clock
            n = int((time.time() - t0) * ts.FPS)
            continue
        frame = rtc.VideoFrame(ts.WIDTH, ts.HEIGHT, rtc.VideoBufferType.I420, pattern.i420(n))
        source.capture_frame(frame, timestamp_us=int(due * 1e6))
        n += 1
        if n % (ts.FPS * 10) == 0:
            log.info("published %d video frames", n)


async def _audio_loop(source: rtc.AudioSource, t0: float, stop: asyncio.Event) -> None:
    # Sample s is due to leave the source at t0 + s / rate. The source plays its queue out in
    # real time and `capture_frame` waits while the queue is full, so its clock paces this loop.
    # When this process stalls for longer than the queue, the source runs dry and every later
    # sample would leave late for good; like a capture device, the loop skips the samples it
    # missed instead, muting a tone it joins halfway so no tone starts late.
    await asyncio.sleep(max(0.0, t0 - time.time()))
    sample, muted_until = 0, 0
    while not stop.is_set():
        late = time.time() + source.queued_duration - (t0 + sample / ts.SAMPLE_RATE)
        if late > AUDIO_MAX_LATE:
            skipped = int(late * ts.SAMPLE_RATE) // ts.AUDIO_FRAME_SAMPLES
            sample += skipped * ts.AUDIO_FRAME_SAMPLES
            muted_until = ts.tone_end(sample)
            log.info("audio %.0f ms late: skipped %d frames", late * 1000, skipped)
        data = ts.audio_samples(sample)
        if sample < muted_until:
            data[:] = 0
        frame = rtc.AudioFrame(data.tobytes(), ts.SAMPLE_RATE, ts.CHANNELS, len(data))
        await source.capture_frame(frame)
        sample += len(data)


async def publish(url: str, access_token: str, stop: asyncio.Event) -> None:
    room = rtc.Room()
    await room.connect(url, access_token)
    log.info("joined room %s as %s", room.name, room.local_participant.identity)
    # t0 is announced before the tracks exist, so every subscriber can read it.
    t0 = time.time() + 0.5
    await room.local_participant.set_attributes({"haven.t0": f"{t0:.6f}"})
    video = rtc.VideoSource(ts.WIDTH, ts.HEIGHT)
    audio = rtc.AudioSource(ts.SAMPLE_RATE, ts.CHANNELS, queue_size_ms=AUDIO_QUEUE_MS)
    video_track = rtc.LocalVideoTrack.create_video_track("test-pattern", video)
    audio_track = rtc.LocalAudioTrack.create_audio_track("test-tone", audio)
    video_opts = rtc.TrackPublishOptions(
        source=rtc.TrackSource.SOURCE_CAMERA,
        simulcast=False,
        video_encoding=rtc.VideoEncoding(max_framerate=ts.FPS, max_bitrate=3_000_000),
    )
    await room.local_participant.publish_track(video_track, video_opts)
    await room.local_participant.publish_track(
        audio_track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
    )
    log.info(
        "publishing %dx%d@%d video and %d Hz audio", ts.WIDTH, ts.HEIGHT, ts.FPS, ts.SAMPLE_RATE
    )
    try:
        await asyncio.gather(_video_loop(video, t0, stop), _audio_loop(audio, t0, stop))
    finally:
        await room.disconnect()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="LiveKit server URL, ws://...")
    parser.add_argument("--room", default="demo")
    parser.add_argument("--identity", default="synthetic-publisher")
    parser.add_argument("--api-key", help="mint a token with this key and secret")
    parser.add_argument("--api-secret")
    parser.add_argument("--token", help="join with this token instead")
    parser.add_argument("--duration", type=float, default=0, help="seconds; 0 runs until stopped")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    access = args.token or token(
        args.api_key, args.api_secret, args.room, args.identity, publish=True
    )

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if args.duration:
            loop.call_later(args.duration, stop.set)
        await publish(args.url, access, stop)

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A synthetic LiveKit publisher: joins a room with the `livekit` SDK and publishes the test
signal (see testsignal) in real time until stopped.

    python -m haven_localcluster.publisher --url ws://127.0.0.1:7880 --room demo \
        --api-key devkey --api-secret ...

Frame n is captured at wall time t0 + n / FPS, where t0 is published as the participant
attribute `haven.t0`; a receiver that decodes n gets its end-to-end latency from that.

What real publishers send can be imitated: `--width/--height` (any size, odd too) is the
picture as sent, `--rotation` the rotation it is sent with (the pattern is drawn so that it
reads upright once turned by it, as a phone's portrait camera does), `--channels 2` stereo
(the tone left, at half level right) and `--sample-rate` (44100, say). The defaults are the
1280x720 upright, mono, 48 kHz signal. `--frame-metadata` attaches each frame's capture time
(wall clock, microseconds) as its user timestamp, the SDK's frame-metadata feature.

Tracks as real publishers publish them: `--no-video` (audio only), `--no-audio` (video
only), `--screen-share` (a second video track, source screen share, named "screen", at
SCREEN_WIDTH x SCREEN_HEIGHT, its counter n + SCREEN_COUNTER, so a receiver tells them apart), and
`--unpublish-after S` (the camera track is unpublished S seconds after it was published) with
`--republish-after R` (then published again, as a new track, R seconds later); SIGUSR1 does
the same on demand (unpublish the camera, or publish it again). Frames keep their counter
through all of it: frame n is always captured at t0 + n / FPS.

`--start-small` sends the camera's pictures at half the size, while the track announces the
full size, until SIGUSR2 (as a WebRTC encoder ramping up, or scaling down under load, does).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from livekit import api, rtc

from . import testsignal as ts
from .process import Proc, spawn

log = logging.getLogger("haven.publisher")

# The audio source queues this far ahead, so a stall of this process shorter than it costs
# nothing; after a longer one the audio skips ahead to the wall clock (AUDIO_MAX_LATE). Its
# play-out runs in a realtime WebRTC thread; this Python loop only has to fill it, and on a
# busy test machine it was starved for 0.3-8 s at a time (500 ms of queue skipped tones).
AUDIO_QUEUE_MS = 3000
AUDIO_MAX_LATE = 0.03  # seconds
PUBLISHER_NICE = -10  # the niceness spawn_publisher asks for (root may raise priority)
SCREEN_WIDTH, SCREEN_HEIGHT = 640, 360  # the --screen-share track's picture
# The screen share's frame n carries counter n + SCREEN_COUNTER: a receiver tells the tracks
# apart by it (not by size: WebRTC scales a busy publisher's camera down too).
SCREEN_COUNTER = 1 << 15
ROTATIONS = {
    0: rtc.VideoRotation.VIDEO_ROTATION_0,
    90: rtc.VideoRotation.VIDEO_ROTATION_90,
    180: rtc.VideoRotation.VIDEO_ROTATION_180,
    270: rtc.VideoRotation.VIDEO_ROTATION_270,
}


@dataclass(frozen=True)
class Signal:
    """What the publisher sends: the picture as sent and its rotation, and the audio format."""

    width: int = ts.WIDTH
    height: int = ts.HEIGHT
    rotation: int = 0
    channels: int = ts.CHANNELS
    sample_rate: int = ts.SAMPLE_RATE
    frame_metadata: bool = False  # send each frame's capture time as its user timestamp
    camera: bool = True  # publish the camera track
    microphone: bool = True  # publish the microphone track
    screen_share: bool = False  # publish a second video track, source screen share
    unpublish_after: float = 0  # seconds; unpublish the camera track then (0: never)
    republish_after: float = 0  # seconds after that; publish it again (0: never)
    start_small: bool = False  # the camera's pictures at half size until `grow` is set

    @property
    def upright_size(self) -> tuple[int, int]:
        turned = self.rotation in (90, 270)
        return (self.height, self.width) if turned else (self.width, self.height)

    def picture(self, pattern: ts.VideoPattern, n: int) -> bytes:
        """Frame n as sent: the upright pattern turned back by the rotation."""
        if self.rotation == 0:
            return pattern.i420(n)
        # np.rot90 turns counter-clockwise: undoing the clockwise turn a receiver applies.
        luma = np.ascontiguousarray(np.rot90(pattern.luma(n), self.rotation // 90))
        chroma = 2 * ((self.width + 1) // 2) * ((self.height + 1) // 2)
        return luma.tobytes() + bytes([128]) * chroma

    def audio(self, first_sample: int) -> np.ndarray:
        """10 ms of samples (interleaved when stereo) from `first_sample` on."""
        mono = ts.audio_samples(first_sample, self.sample_rate // 100, self.sample_rate)
        return ts.stereo(mono) if self.channels == 2 else mono


def spawn_publisher(
    url: str, api_key: str, api_secret: str, room: str, log_dir: Path,
    identity: str = "synthetic-publisher", *, detach: bool = False,
    options: Sequence[str] = (),
) -> Proc:  # fmt: skip
    """Run a publisher in a process of its own (its CPU is not the receiver's); `options` are
    more flags, such as `--width 720 --height 405`. It runs at a raised priority where it may
    (`--nice`): it stands for a camera on a machine of its own, so a busy test machine should
    starve the receiver under test, not the source it is measured against."""
    argv = [
        sys.executable, "-m", "haven_localcluster.publisher", "--url", url, "--room", room,
        "--identity", identity, "--api-key", api_key, "--api-secret", api_secret,
        "--nice", str(PUBLISHER_NICE), *options,
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


async def _video_loop(
    source: rtc.VideoSource, t0: float, stop: asyncio.Event, media: Signal, counter: int = 0,
    grow: asyncio.Event | None = None,
) -> None:  # fmt: skip
    """Frame n (counter n + `counter`) at t0 + n / FPS into `source`, whether a track
    publishes it or not; at half size while `media.start_small` and `grow` is not set."""
    pattern = ts.VideoPattern(*media.upright_size)
    rotation = ROTATIONS[media.rotation]
    small = replace(media, width=max(2, media.width // 2), height=max(2, media.height // 2))
    small_pattern = ts.VideoPattern(*small.upright_size) if media.start_small else None
    n = 0
    while not stop.is_set():
        due = t0 + n / ts.FPS
        delay = due - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -1:  # fell far behind (a stalled machine): skip ahead, keep the clock
            n = int((time.time() - t0) * ts.FPS)
            continue
        sent, drawn = media, pattern
        if small_pattern is not None and not (grow is not None and grow.is_set()):
            sent, drawn = small, small_pattern  # announced at full size, sent at half
        data = sent.picture(drawn, n + counter)
        frame = rtc.VideoFrame(sent.width, sent.height, rtc.VideoBufferType.I420, data)
        metadata = (
            rtc.FrameMetadata(user_timestamp=int(due * 1e6)) if media.frame_metadata else None
        )
        source.capture_frame(
            frame, timestamp_us=int(due * 1e6), rotation=rotation, metadata=metadata
        )
        n += 1
        if n % (ts.FPS * 10) == 0:
            log.info("published %d video frames", n)


async def _audio_loop(
    source: rtc.AudioSource, t0: float, stop: asyncio.Event, media: Signal
) -> None:
    # Sample s is due to leave the source at t0 + s / rate. The source plays its queue out in
    # real time and `capture_frame` waits while the queue is full, so its clock paces this loop.
    # When this process stalls for longer than the queue, the source runs dry and every later
    # sample would leave late for good; like a capture device, the loop skips the samples it
    # missed instead, muting a tone it joins halfway so no tone starts late.
    await asyncio.sleep(max(0.0, t0 - time.time()))
    rate, frame_samples = media.sample_rate, media.sample_rate // 100
    sample, muted_until = 0, 0
    while not stop.is_set():
        late = time.time() + source.queued_duration - (t0 + sample / rate)
        if late > AUDIO_MAX_LATE:
            skipped = int(late * rate) // frame_samples
            sample += skipped * frame_samples
            muted_until = ts.tone_end(sample, rate)
            log.info("audio %.0f ms late: skipped %d frames", late * 1000, skipped)
        data = media.audio(sample)
        if sample < muted_until:
            data[:] = 0
        frame = rtc.AudioFrame(data.tobytes(), rate, media.channels, frame_samples)
        await source.capture_frame(frame)
        sample += frame_samples


def _video_options(media: Signal, source: int, max_bitrate: int) -> rtc.TrackPublishOptions:
    options = rtc.TrackPublishOptions(
        source=source,
        simulcast=False,
        video_encoding=rtc.VideoEncoding(max_framerate=ts.FPS, max_bitrate=max_bitrate),
    )
    if media.frame_metadata:
        options.frame_metadata_features.append(rtc.FrameMetadataFeature.FMF_USER_TIMESTAMP)
    return options


async def _camera(
    room: rtc.Room, source: rtc.VideoSource, media: Signal, stop: asyncio.Event,
    toggle: asyncio.Event,
) -> None:  # fmt: skip
    """Publish the camera track; unpublish it `unpublish_after` seconds later and publish it
    again (a new track, a new sid) `republish_after` seconds after that; and toggle it
    (unpublish, publish again) whenever `toggle` is set (SIGUSR1)."""
    options = _video_options(media, rtc.TrackSource.SOURCE_CAMERA, 3_000_000)
    timed = [t for t in (media.unpublish_after, media.republish_after) if t > 0]
    if not media.unpublish_after:
        timed = []
    pub: rtc.LocalTrackPublication | None = None
    while not stop.is_set():
        if pub is None:
            track = rtc.LocalVideoTrack.create_video_track("test-pattern", source)
            pub = await room.local_participant.publish_track(track, options)
            log.info("published camera track %s", pub.sid)
        else:
            await room.local_participant.unpublish_track(pub.sid)
            log.info("unpublished camera track %s", pub.sid)
            pub = None
        toggle.clear()
        waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(toggle.wait())]
        await asyncio.wait(
            waits, timeout=timed.pop(0) if timed else None, return_when=asyncio.FIRST_COMPLETED
        )
        for w in waits:
            w.cancel()


async def publish(
    url: str,
    access_token: str,
    stop: asyncio.Event,
    media: Signal | None = None,
    toggle: asyncio.Event | None = None,
    grow: asyncio.Event | None = None,
) -> None:
    """Publish until `stop`; setting `toggle` unpublishes the camera track, or publishes it
    again; setting `grow` ends `start_small`."""
    media = media or Signal()
    toggle = toggle or asyncio.Event()
    room = rtc.Room()
    await room.connect(url, access_token)
    log.info("joined room %s as %s", room.name, room.local_participant.identity)
    # t0 is announced before the tracks exist, so every subscriber can read it.
    t0 = time.time() + 0.5
    await room.local_participant.set_attributes({"haven.t0": f"{t0:.6f}"})
    log.info("frame n is captured at t0 + n / %d, t0 = %.6f (wall clock)", ts.FPS, t0)
    loops = []
    if media.camera:
        video = rtc.VideoSource(media.width, media.height)
        loops += [
            _video_loop(video, t0, stop, media, grow=grow),
            _camera(room, video, media, stop, toggle),
        ]
    if media.screen_share:  # upright, no rotation: a window as it is
        screen_media = Signal(SCREEN_WIDTH, SCREEN_HEIGHT, frame_metadata=media.frame_metadata)
        screen = rtc.VideoSource(SCREEN_WIDTH, SCREEN_HEIGHT)
        await room.local_participant.publish_track(
            rtc.LocalVideoTrack.create_video_track("screen", screen),
            _video_options(media, rtc.TrackSource.SOURCE_SCREENSHARE, 1_000_000),
        )
        loops.append(_video_loop(screen, t0, stop, screen_media, SCREEN_COUNTER))
    if media.microphone:
        audio = rtc.AudioSource(media.sample_rate, media.channels, queue_size_ms=AUDIO_QUEUE_MS)
        await room.local_participant.publish_track(
            rtc.LocalAudioTrack.create_audio_track("test-tone", audio),
            rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE),
        )
        loops.append(_audio_loop(audio, t0, stop, media))
    log.info(
        "publishing %s%dx%d@%d video (rotation %d)%s and %s %d Hz audio in %d channel(s)",
        "" if media.camera else "no ", media.width, media.height, ts.FPS, media.rotation,
        f", a {SCREEN_WIDTH}x{SCREEN_HEIGHT} screen share" if media.screen_share else "",
        "" if media.microphone else "no", media.sample_rate, media.channels,
    )  # fmt: skip
    try:
        await asyncio.gather(*loops, stop.wait())
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
    parser.add_argument("--width", type=int, default=ts.WIDTH, help="the picture as sent")
    parser.add_argument("--height", type=int, default=ts.HEIGHT)
    parser.add_argument("--rotation", type=int, choices=sorted(ROTATIONS), default=0)
    parser.add_argument("--channels", type=int, choices=[1, 2], default=ts.CHANNELS)
    parser.add_argument("--sample-rate", type=int, default=ts.SAMPLE_RATE)
    parser.add_argument(
        "--frame-metadata", action="store_true", help="send capture times as user timestamps"
    )
    parser.add_argument("--no-video", action="store_true", help="publish audio only")
    parser.add_argument("--no-audio", action="store_true", help="publish video only")
    parser.add_argument(
        "--screen-share", action="store_true", help="also publish a screen-share video track"
    )
    parser.add_argument(
        "--unpublish-after", type=float, default=0, help="unpublish the camera after S seconds"
    )
    parser.add_argument(
        "--republish-after", type=float, default=0, help="then publish it again R seconds later"
    )
    parser.add_argument(
        "--start-small", action="store_true",
        help="send the camera at half size (announced at full size) until SIGUSR2",
    )  # fmt: skip
    parser.add_argument(
        "--nice", type=int, default=0, help="niceness to run at (negative needs root)"
    )
    args = parser.parse_args(argv)
    if args.nice:  # before any thread starts: threads inherit it
        with contextlib.suppress(PermissionError):
            os.setpriority(os.PRIO_PROCESS, 0, args.nice)
    if not (2 <= args.width <= 4096 and 2 <= args.height <= 4096):
        parser.error("--width and --height must be in 2..4096")
    if args.no_video and args.no_audio and not args.screen_share:
        parser.error("--no-video and --no-audio leave nothing to publish")
    media = Signal(
        args.width, args.height, args.rotation, args.channels, args.sample_rate,
        args.frame_metadata, camera=not args.no_video, microphone=not args.no_audio,
        screen_share=args.screen_share, unpublish_after=args.unpublish_after,
        republish_after=args.republish_after, start_small=args.start_small,
    )  # fmt: skip
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    access = args.token or token(
        args.api_key, args.api_secret, args.room, args.identity, publish=True
    )

    async def run() -> None:
        stop, toggle, grow = asyncio.Event(), asyncio.Event(), asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGUSR1, toggle.set)  # the camera: off, or on again
        loop.add_signal_handler(signal.SIGUSR2, grow.set)  # --start-small: full size from now
        if args.duration:
            loop.call_later(args.duration, stop.set)
        await publish(args.url, access, stop, media, toggle, grow)

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

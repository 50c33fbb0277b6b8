"""The synthetic publisher's video and audio reach a real subscriber through livekit-server."""

from __future__ import annotations

import asyncio

import numpy as np
from livekit import rtc

from haven_localcluster import publisher as pub
from haven_localcluster import testsignal as ts


async def test_subscriber_receives_the_publishers_frames_and_tones(livekit_server, publisher):
    room = rtc.Room()
    tracks: asyncio.Queue[rtc.Track] = asyncio.Queue()
    room.on("track_subscribed", lambda track, *_: tracks.put_nowait(track))
    token = pub.token(
        livekit_server.api_key, livekit_server.api_secret, publisher, "subscriber", publish=False
    )
    await room.connect(livekit_server.url, token)
    try:
        by_kind = {}
        while len(by_kind) < 2:
            track = await asyncio.wait_for(tracks.get(), timeout=30)
            by_kind[track.kind] = track

        async def video() -> tuple[list[int | None], list[int], list[int], tuple[int, int]]:
            counters, flashes, times = [], [], []
            stream = rtc.VideoStream(
                by_kind[rtc.TrackKind.KIND_VIDEO], format=rtc.VideoBufferType.I420
            )
            async for event in stream:
                f = event.frame
                luma = np.frombuffer(f.data, np.uint8)[: f.width * f.height].reshape(
                    f.height, f.width
                )
                counters.append(ts.decode_counter(luma))
                times.append(event.timestamp_us)
                if ts.frame_is_flash(luma):
                    flashes.append(counters[-1])
                # 5 s of frames, and two flashes seen: the publisher's VP8 encoder drops some
                # flash frames (a costly scene change), more of them on a busy machine.
                if len(counters) >= 5 * ts.FPS and len(flashes) >= 2:
                    break
            await stream.aclose()
            return counters, flashes, times, (f.width, f.height)

        async def audio() -> np.ndarray:
            chunks, total = [], 0
            stream = rtc.AudioStream(
                by_kind[rtc.TrackKind.KIND_AUDIO], sample_rate=ts.SAMPLE_RATE, num_channels=1
            )
            async for event in stream:
                data = np.frombuffer(event.frame.data, np.int16)
                chunks.append(data)
                total += len(data)
                if total >= 5 * ts.SAMPLE_RATE:
                    break
            await stream.aclose()
            return np.concatenate(chunks)

        (counters, flashes, times, size), samples = await asyncio.wait_for(
            asyncio.gather(video(), audio()), timeout=120
        )
    finally:
        await room.disconnect()

    assert size == (ts.WIDTH, ts.HEIGHT)
    decoded = [c for c in counters if c is not None]
    assert len(decoded) >= 0.95 * len(counters), counters
    assert decoded == sorted(decoded) and len(set(decoded)) == len(decoded), decoded
    # Frames keep the publisher's timing: their WebRTC timestamps are as far apart as their
    # counters say. (A subscriber that cannot keep up loses frames in the SDK's native queue:
    # on a busy machine that is this test's Python, so lost frames alone prove nothing.)
    readable = [(t, c) for t, c in zip(times, counters, strict=True) if c is not None]
    (t0, c0), (t1, c1) = readable[0], readable[-1]
    assert abs((t1 - t0) / 1e6 - (c1 - c0) / ts.FPS) <= 0.1, (t0, c0, t1, c1)
    # Every white frame is a flash frame, and every flash frame that arrived is white.
    assert all(c is not None and ts.is_flash(c) for c in flashes), flashes
    assert set(flashes) == {c for c in decoded if ts.is_flash(c)}, (flashes, decoded)

    onsets = ts.tone_onsets(samples)
    assert len(onsets) >= 2, onsets
    period = ts.FLASH_EVERY / ts.FPS
    gaps = np.diff(onsets)
    # Counted in received samples: the receiver's jitter buffer (NetEq) stretches or shrinks
    # audio by some tens of ms as it adapts, so the period holds to within 0.1 s.
    assert np.all(np.abs(gaps - period) < 0.1), gaps

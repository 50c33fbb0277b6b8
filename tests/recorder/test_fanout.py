"""Fan-out: bounded per-handler queues, per kind and in bytes; a slow handler drops its own
oldest frames only, video before audio."""

from __future__ import annotations

import asyncio

import pytest

from haven_recorder.fanout import DropOldestQueue, FanOut
from haven_recorder.frames import AudioFrame, VideoFrame


def video(i: int) -> VideoFrame:
    return VideoFrame(2, 2, bytes(6), float(i))


async def test_full_queue_drops_its_oldest_and_counts():
    queue: DropOldestQueue[int] = DropOldestQueue(3)
    assert all(queue.put(i) for i in range(3))
    assert queue.put(3) is False and queue.dropped == 1
    assert [await queue.get() for _ in range(3)] == [1, 2, 3]
    queue.close()
    with pytest.raises(EOFError):
        await queue.get()


async def test_a_stalled_handler_does_not_delay_the_others():
    fanout = FanOut()
    fast = fanout.subscribe("fast", maxsize=4)
    stalled = fanout.subscribe("stalled", maxsize=4)  # never read
    received: list[float] = []

    async def consume() -> None:
        async for frame in fast:
            received.append(frame.pts)

    task = asyncio.create_task(consume())
    for i in range(100):
        fanout.publish(video(i))  # never blocks, whatever the handlers do
        await asyncio.sleep(0)
    await asyncio.sleep(0.01)
    fast.close()
    await task
    assert received == [float(i) for i in range(100)] and fast.dropped == 0
    assert stalled.dropped == 96 and len(stalled.queue) == 4
    assert [f.pts for f in stalled.queue.video.items] == [96.0, 97.0, 98.0, 99.0]


async def test_subscriptions_pick_their_media_kinds():
    fanout = FanOut()
    only_audio = fanout.subscribe("a", maxsize=10, video=False)
    fanout.publish(video(0))
    fanout.publish(AudioFrame(bytes(960), 48000, 1, 0.0))
    assert len(only_audio.queue) == 1
    only_audio.close()
    assert only_audio not in fanout.subscriptions


def audio(pts: float) -> AudioFrame:
    return AudioFrame(bytes(960), 48000, 1, pts)  # 10 ms


async def test_queues_are_bounded_in_bytes_per_kind_and_read_in_capture_order():
    fanout = FanOut()
    sub = fanout.subscribe("rec", maxsize=1000, video_bytes=3 * 6, audio_bytes=100 * 960)
    for i in range(10):
        fanout.publish(video(i))  # 6 bytes each: 3 fit
        fanout.publish(audio(i + 0.5))
    assert (sub.dropped_video, sub.dropped_audio, sub.dropped) == (7, 0, 7)
    assert sub.queue.nbytes == 3 * 6 + 10 * 960
    sub.queue.close()
    order = [(type(f).__name__[0], f.pts) async for f in sub]
    assert order == sorted(order, key=lambda kind_pts: kind_pts[1])
    assert [pts for kind, pts in order if kind == "V"] == [7.0, 8.0, 9.0]
    assert len([kind for kind, _ in order if kind == "A"]) == 10


async def test_a_frame_larger_than_the_bound_is_still_taken_alone():
    fanout = FanOut()
    sub = fanout.subscribe("rec", maxsize=10, video_bytes=4)
    fanout.publish(video(0))
    fanout.publish(video(1))
    assert len(sub.queue) == 1 and sub.dropped_video == 1


async def test_a_detached_subscription_takes_nothing_and_can_drop_its_backlog():
    fanout = FanOut()
    sub = fanout.subscribe("rec", maxsize=10)
    fanout.publish(video(0))
    fanout.publish(audio(0.5))
    sub.detach()
    fanout.publish(video(1))
    assert len(sub.queue) == 2
    assert sub.queue.close(discard=True) == 2 and sub.dropped == 2
    with pytest.raises(EOFError):
        await sub.queue.get()

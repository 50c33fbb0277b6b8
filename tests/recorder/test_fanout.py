"""Fan-out: bounded per-handler queues; a slow handler drops its own oldest frames only."""

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
    assert [f.pts for f in list(stalled.queue._items)] == [96.0, 97.0, 98.0, 99.0]


async def test_subscriptions_pick_their_media_kinds():
    fanout = FanOut()
    only_audio = fanout.subscribe("a", maxsize=10, video=False)
    fanout.publish(video(0))
    fanout.publish(AudioFrame(bytes(960), 48000, 1, 0.0))
    assert len(only_audio.queue) == 1
    only_audio.close()
    assert only_audio not in fanout.subscriptions

"""Fan-out of frames from the one LiveKit connection to many handlers.

`publish` never waits: each subscription has its own bounded queue, and a full queue drops its
own oldest frame and counts it. A slow handler therefore loses frames itself and slows
nobody else, neither other handlers nor the connection.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from typing import Generic, TypeVar

from . import metrics
from .frames import Frame, VideoFrame

T = TypeVar("T")


class DropOldestQueue(Generic[T]):
    """A bounded queue whose `put` never blocks: when full, the oldest item goes."""

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self._items: deque[T] = deque(maxlen=maxsize)
        self._ready = asyncio.Event()
        self.dropped = 0
        self.closed = False

    def put(self, item: T) -> bool:
        """Add `item`; return False if that pushed out the oldest one."""
        full = len(self._items) == self._items.maxlen
        if full:
            self.dropped += 1
        self._items.append(item)
        self._ready.set()
        return not full

    async def get(self) -> T:
        """The oldest item; raises EOFError once closed and drained."""
        while not self._items:
            if self.closed:
                raise EOFError
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()

    def close(self) -> None:
        self.closed = True
        self._ready.set()

    def __len__(self) -> int:
        return len(self._items)


class Subscription:
    """One handler's view of the stream: its own queue, its own drop count."""

    def __init__(self, fanout: FanOut, name: str, maxsize: int, video: bool, audio: bool) -> None:
        self._fanout = fanout
        self.name = name
        self.video = video
        self.audio = audio
        self.queue: DropOldestQueue[Frame] = DropOldestQueue(maxsize)
        self.delivered = 0

    @property
    def dropped(self) -> int:
        return self.queue.dropped

    def offer(self, frame: Frame) -> None:
        if not self.queue.put(frame):
            metrics.FRAMES_DROPPED.labels(handler=self.name).inc()

    async def __aiter__(self) -> AsyncIterator[Frame]:
        while True:
            try:
                frame = await self.queue.get()
            except EOFError:
                return
            self.delivered += 1
            yield frame

    def close(self) -> None:
        self._fanout.unsubscribe(self)
        self.queue.close()


class FanOut:
    def __init__(self) -> None:
        self._subs: list[Subscription] = []

    def subscribe(
        self, name: str, *, maxsize: int, video: bool = True, audio: bool = True
    ) -> Subscription:
        sub = Subscription(self, name, maxsize, video, audio)
        self._subs.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)

    def publish(self, frame: Frame) -> None:
        is_video = isinstance(frame, VideoFrame)
        metrics.FRAMES_IN.labels(kind="video" if is_video else "audio").inc()
        for sub in self._subs:
            if sub.video if is_video else sub.audio:
                sub.offer(frame)

    @property
    def subscriptions(self) -> list[Subscription]:
        return list(self._subs)

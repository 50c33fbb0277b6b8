"""Fan-out of frames from the one LiveKit connection to many handlers.

`publish` never waits: each subscription has its own bounded queues, one for video and one for
audio, each bounded in frames and in bytes, and a full queue drops its own oldest frame and
counts it. A slow handler therefore loses frames itself and slows nobody else, neither other
handlers nor the connection; and since a video frame weighs a hundred times an audio frame,
a handler that falls behind loses video long before it loses any audio.

Demand: a subscription that is `active` wants its kinds now (a recording always, the viewer
loops only while a viewer is connected). The StreamManager watches `wants(kind)` and
subscribes to a kind's track only while someone wants it (lazy subscription).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Generic, Literal, TypeVar

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


class KindQueue:
    """Frames of one kind, bounded in count and in bytes; the oldest go first."""

    def __init__(self, max_frames: int, max_bytes: int | None) -> None:
        if max_frames < 1:
            raise ValueError("maxsize must be at least 1")
        self.max_frames, self.max_bytes = max_frames, max_bytes
        self.items: deque[Frame] = deque()
        self.nbytes = 0
        self.dropped = 0

    def put(self, frame: Frame) -> int:
        """Add `frame` (always kept, even alone over the byte bound); returns frames dropped."""
        self.items.append(frame)
        self.nbytes += frame.nbytes
        dropped = 0
        while len(self.items) > 1 and (
            len(self.items) > self.max_frames
            or (self.max_bytes is not None and self.nbytes > self.max_bytes)
        ):
            self.nbytes -= self.items.popleft().nbytes
            dropped += 1
        self.dropped += dropped
        return dropped

    def pop(self) -> Frame:
        frame = self.items.popleft()
        self.nbytes -= frame.nbytes
        return frame

    def clear(self) -> int:
        """Drop everything queued (counted); returns how many."""
        n = len(self.items)
        self.items.clear()
        self.nbytes = 0
        self.dropped += n
        return n


class MediaQueue:
    """A video queue and an audio queue, read as one stream in capture order."""

    def __init__(
        self, maxsize: int, video_bytes: int | None = None, audio_bytes: int | None = None
    ) -> None:
        self.video = KindQueue(maxsize, video_bytes)
        self.audio = KindQueue(maxsize, audio_bytes)
        self._ready = asyncio.Event()
        self.closed = False

    def put(self, frame: Frame) -> bool:
        """Add `frame`; False if that pushed out an older one. Ignored once closed."""
        if self.closed:
            return True
        kind = self.video if isinstance(frame, VideoFrame) else self.audio
        dropped = kind.put(frame)
        self._ready.set()
        return dropped == 0

    async def get(self) -> Frame:
        """The earliest-captured queued frame; raises EOFError once closed and drained."""
        while True:
            v, a = self.video.items, self.audio.items
            if v and a:
                return (self.audio if a[0].pts <= v[0].pts else self.video).pop()
            if v or a:
                return (self.video if v else self.audio).pop()
            if self.closed:
                raise EOFError
            self._ready.clear()
            await self._ready.wait()

    def close(self, discard: bool = False) -> int:
        """No more frames; with `discard`, what is queued is dropped too (returns how many)."""
        self.closed = True
        self._ready.set()
        return self.video.clear() + self.audio.clear() if discard else 0

    @property
    def dropped(self) -> int:
        return self.video.dropped + self.audio.dropped

    @property
    def nbytes(self) -> int:
        return self.video.nbytes + self.audio.nbytes

    def __len__(self) -> int:
        return len(self.video.items) + len(self.audio.items)


class Subscription:
    """One handler's view of the stream: its own queues, its own drop counts."""

    def __init__(
        self,
        fanout: FanOut,
        name: str,
        maxsize: int,
        video: bool,
        audio: bool,
        video_bytes: int | None = None,
        audio_bytes: int | None = None,
        active: bool = True,
    ) -> None:
        self._fanout = fanout
        self.name = name
        self.video = video
        self.audio = audio
        self.active = active  # wants frames now (see FanOut.wants)
        self.queue = MediaQueue(maxsize, video_bytes, audio_bytes)
        self.delivered = 0

    def set_active(self, active: bool) -> None:
        if active != self.active:
            self.active = active
            self._fanout.demand_changed()

    @property
    def dropped(self) -> int:
        return self.queue.dropped

    @property
    def dropped_video(self) -> int:
        return self.queue.video.dropped

    @property
    def dropped_audio(self) -> int:
        return self.queue.audio.dropped

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

    def detach(self) -> None:
        """Take no more frames; what is queued can still be read."""
        self._fanout.unsubscribe(self)

    def close(self) -> None:
        self.detach()
        self.queue.close()


Kind = Literal["video", "audio"]


class FanOut:
    def __init__(self) -> None:
        self._subs: list[Subscription] = []
        self._watchers: list[Callable[[], None]] = []

    def wants(self, kind: Kind) -> bool:
        """Whether an active subscription takes frames of `kind`."""
        return any(s.active and getattr(s, kind) for s in self._subs)

    def watch_demand(self, callback: Callable[[], None]) -> None:
        """Call `callback` (on the loop, it must not block) whenever demand may have changed."""
        self._watchers.append(callback)

    def demand_changed(self) -> None:
        for callback in self._watchers:
            callback()

    def subscribe(
        self,
        name: str,
        *,
        maxsize: int,
        video: bool = True,
        audio: bool = True,
        video_bytes: int | None = None,
        audio_bytes: int | None = None,
        active: bool = True,
    ) -> Subscription:
        """`maxsize` bounds each kind's queue in frames; `video_bytes`, `audio_bytes` in bytes.
        An inactive subscription (`active=False`, see `Subscription.set_active`) creates no
        demand: it gets frames only while someone else wants them."""
        sub = Subscription(self, name, maxsize, video, audio, video_bytes, audio_bytes, active)
        self._subs.append(sub)
        self.demand_changed()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)
            self.demand_changed()

    def publish(self, frame: Frame) -> None:
        is_video = isinstance(frame, VideoFrame)
        metrics.FRAMES_IN.labels(kind="video" if is_video else "audio").inc()
        for sub in self._subs:
            if sub.video if is_video else sub.audio:
                sub.offer(frame)

    @property
    def subscriptions(self) -> list[Subscription]:
        return list(self._subs)

"""`mode=video` viewers: one shared H.264 + Opus encode, sent to every such viewer as binary
WebSocket messages (WebCodecs-ready), and handed to HLS (hls.py) when that is on.

The encoders run in one worker thread (videoenc.py); the event loop only moves bytes. Each
message and its WebSocket frame are built once and written to every viewer's socket.

Framing (big-endian), next to the JPEG mode's kinds 1 and 2 (viewer.py):
    kind 3, video: u8 kind, f64 timestamp (s), u8 flags (bit 0: keyframe), u16 width,
                   u16 height, then one H.264 access unit, Annex B (an IDR carries SPS + PPS)
    kind 4, audio: u8 kind, f64 timestamp (s), u32 sample rate, u8 channels, one Opus packet

A viewer starts at a keyframe: until it has one it gets no video (and asks for one, rate
limited). A viewer whose socket cannot take a video message (backed up) drops it and every
later one until the next keyframe, so its decoder never sees a picture whose reference it
lost. Keyframes come every KEYFRAME_SECONDS and, on demand, at most every KEYFRAME_MIN_GAP.
Nothing is encoded, and no encoder exists, while no viewer is in this mode (and HLS is off).
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from . import metrics, wsprotocol
from .fanout import FanOut, Subscription
from .frames import AudioFrame, VideoFrame
from .health import contained
from .videoenc import Encoded, H264Encoder, OpusEncoder

log = logging.getLogger("haven.videohub")

VIDEO_CHUNK_KIND, OPUS_KIND = 3, 4
_VIDEO_HEADER = struct.Struct(">BdBHH")
_AUDIO_HEADER = struct.Struct(">BdIB")
KEYFRAME_SECONDS = 2.0
KEYFRAME_MIN_GAP = 0.5  # on-demand keyframes (a viewer joined or fell behind) at most this often
VIEWER_QUEUE_BYTES = 1 << 20  # the ASGI fallback path's bound per viewer


def video_message(e: Encoded) -> bytes:
    return _VIDEO_HEADER.pack(VIDEO_CHUNK_KIND, e.pts, int(e.keyframe), e.width, e.height) + e.data


def audio_message(e: Encoded, sample_rate: int, channels: int) -> bytes:
    return _AUDIO_HEADER.pack(OPUS_KIND, e.pts, sample_rate, channels) + e.data


@dataclass(frozen=True, slots=True)
class Chunk:
    """One encoded message, shared by every viewer: its payload and its WebSocket frame."""

    payload: bytes
    frame: bytes
    video: bool
    keyframe: bool

    @classmethod
    def of(cls, payload: bytes, video: bool, keyframe: bool) -> Chunk:
        return cls(payload, wsprotocol.frame(payload), video, keyframe)


class ByteQueue:
    """A viewer's fallback queue, bounded in bytes: `put` refuses what does not fit."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.items: deque[bytes | str] = deque()
        self.nbytes = 0
        self._ready = asyncio.Event()
        self.closed = False

    def put(self, item: bytes | str) -> bool:
        size = len(item)
        if self.items and self.nbytes + size > self.max_bytes:
            return False
        self.items.append(item)
        self.nbytes += size
        self._ready.set()
        return True

    async def get(self) -> bytes | str:
        while not self.items:
            if self.closed:
                raise EOFError
            self._ready.clear()
            await self._ready.wait()
        item = self.items.popleft()
        self.nbytes -= len(item)
        return item

    def close(self) -> None:
        self.closed = True
        self._ready.set()

    def __len__(self) -> int:
        return len(self.items)


class VideoViewer:
    """One `mode=video` viewer: video from a keyframe on, and again from the next keyframe
    after anything it could not take."""

    binary = True
    video_mode = True

    def __init__(
        self, send_frame: Callable[[bytes], bool] | None, want_keyframe: Callable[[], None]
    ) -> None:
        self.send_frame = send_frame
        self.want_keyframe = want_keyframe
        self.queue = ByteQueue(VIEWER_QUEUE_BYTES)
        self.synced = False  # has had a keyframe, and every video message since
        self.skipped = 0  # video messages it did not get (waiting for a keyframe)

    def _send(self, chunk: Chunk) -> bool:
        if self.send_frame is not None:
            try:
                return self.send_frame(chunk.frame)
            except Exception as exc:
                contained("viewer-send", exc, "writing a frame failed; falling back to ASGI")
                self.send_frame = None
        return self.queue.put(chunk.payload)

    def offer(self, message: Chunk | str) -> None:
        if isinstance(message, str):  # status: JSON text, always queued
            self.queue.put(message)
            return
        if message.video and not (self.synced or message.keyframe):
            self.skipped += 1
            return
        sent = self._send(message)
        if message.video:
            if sent:
                self.synced = True
            else:
                self.synced = False
                self.skipped += 1
                metrics.FRAMES_DROPPED.labels(handler="viewer-video").inc()
                self.want_keyframe()


class VideoHub:
    """The shared encode and its viewers. `sinks` get every Encoded (HLS) from the loop."""

    def __init__(
        self,
        fanout: FanOut,
        *,
        max_fps: float,
        max_width: int,
        audio: bool,
        audio_channels: int,
        always: bool = False,
        keyframe_seconds: float = KEYFRAME_SECONDS,
    ) -> None:
        self.fanout = fanout
        self.max_fps = max_fps
        self.audio = audio
        self.channels = audio_channels
        self.always = always  # encode even with no viewer (HLS is on)
        self.keyframe_seconds = keyframe_seconds
        self.viewers: set[VideoViewer] = set()
        self.sinks: list[Callable[[Encoded], None]] = []
        self.video_enc = H264Encoder(max_width, max_fps)
        self.audio_enc = OpusEncoder(audio_channels)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="videoenc")
        self._subs: list[Subscription] = []
        self._tasks: list[asyncio.Task] = []
        self._key_wanted = False
        self._last_key = -1e9
        self.keyframes = 0
        self.bytes_out = 0

    @property
    def wanted(self) -> bool:
        return self.always or bool(self.viewers)

    def status(self) -> dict:
        return {
            "viewers": len(self.viewers),
            "encoding": self.video_enc.is_open or self.audio_enc.is_open,
            "keyframes": self.keyframes,
            "bytesOut": self.bytes_out,
        }

    def start(self) -> list[asyncio.Task]:
        self._tasks.append(asyncio.create_task(self._video_loop(), name="viewer-h264"))
        if self.audio:
            self._tasks.append(asyncio.create_task(self._audio_loop(), name="viewer-opus"))
        return list(self._tasks)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._executor.shutdown(wait=False, cancel_futures=True)

    def add(self, send_frame: Callable[[bytes], bool] | None) -> VideoViewer:
        viewer = VideoViewer(send_frame, self.want_keyframe)
        self.viewers.add(viewer)
        self.want_keyframe()
        self._demand_changed()
        return viewer

    def remove(self, viewer: VideoViewer) -> None:
        self.viewers.discard(viewer)
        viewer.queue.close()
        self._demand_changed()

    def want_keyframe(self) -> None:
        self._key_wanted = True

    def _demand_changed(self) -> None:
        for sub in self._subs:
            sub.set_active(self.wanted)
        if not self.wanted:  # the encoders go; the thread closes them after what it runs now
            self._executor.submit(self._close_idle)

    def _close_idle(self) -> None:
        if not self.wanted:
            self.video_enc.close()
            self.audio_enc.close()

    def _subscribe(self, name: str, maxsize: int, *, video: bool) -> Subscription:
        sub = self.fanout.subscribe(
            name, maxsize=maxsize, video=video, audio=not video, active=self.wanted
        )
        self._subs.append(sub)
        return sub

    def _broadcast(self, e: Encoded, chunk: Chunk) -> None:
        self.bytes_out += len(chunk.payload) * len(self.viewers)
        for viewer in list(self.viewers):
            try:
                viewer.offer(chunk)
            except Exception as exc:
                contained("viewer-send", exc, "offering a video message to a viewer failed")
        for sink in self.sinks:
            try:
                sink(e)
            except Exception as exc:
                contained("viewer-h264", exc, "handing a packet to HLS failed")

    def broadcast_status(self, text: str) -> None:
        for viewer in list(self.viewers):
            viewer.offer(text)

    def _encode_video(self, frame: VideoFrame, keyframe: bool) -> list[Encoded]:
        if not self.wanted:  # the last viewer left while this waited: no encoder stays open
            self._close_idle()
            return []
        return self.video_enc.encode(frame, keyframe)

    def _encode_audio(self, frame: AudioFrame) -> list[Encoded]:
        if not self.wanted:
            self._close_idle()
            return []
        return self.audio_enc.encode(frame)

    async def _video_loop(self) -> None:
        sub = self._subscribe("viewer-h264", 1, video=True)  # the newest picture only
        loop = asyncio.get_running_loop()
        interval = 1.0 / self.max_fps
        next_due = 0.0
        try:
            async for frame in sub:
                if not self.wanted or frame.pts < next_due:
                    continue
                next_due = max(next_due + interval, frame.pts + interval / 2)
                since = frame.pts - self._last_key
                # (with HLS on, keyframes come every second anyway, and segments stay whole)
                on_demand = self._key_wanted and not self.always and since >= KEYFRAME_MIN_GAP
                key = since >= self.keyframe_seconds - interval or on_demand
                try:
                    packets = await loop.run_in_executor(
                        self._executor, self._encode_video, frame, key
                    )
                except Exception as exc:  # a picture it cannot encode is skipped
                    size = f"{frame.width}x{frame.height} (rotation {frame.rotation})"
                    contained("viewer-h264", exc, f"encoding a {size} picture failed")
                    metrics.FRAMES_DROPPED.labels(handler="viewer-h264").inc()
                    continue
                for e in packets:
                    if e.keyframe:
                        self._last_key, self._key_wanted = e.pts, False
                        self.keyframes += 1
                    self._broadcast(e, Chunk.of(video_message(e), True, e.keyframe))
                metrics.FRAMES_OUT.labels(handler="viewer-h264").inc()
        finally:
            self._subs.remove(sub)
            sub.close()

    async def _audio_loop(self) -> None:
        sub = self._subscribe("viewer-opus", 100, video=False)
        loop = asyncio.get_running_loop()
        try:
            async for frame in sub:
                if not self.wanted:
                    continue
                try:
                    packets = await loop.run_in_executor(self._executor, self._encode_audio, frame)
                except Exception as exc:  # a piece it cannot encode is skipped
                    contained("viewer-opus", exc, f"encoding {frame.sample_rate} Hz audio failed")
                    continue
                for e in packets:
                    payload = audio_message(e, 48000, self.channels)
                    self._broadcast(e, Chunk.of(payload, False, False))
        finally:
            self._subs.remove(sub)
            sub.close()

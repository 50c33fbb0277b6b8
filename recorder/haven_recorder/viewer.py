"""The viewer handler: JPEG video and PCM audio for WebSocket viewers.

Each video frame is JPEG-encoded at most once (at `max_fps`, turned upright, scaled to
`max_width`; any size, odd or even), in a worker thread, and the message and its WebSocket
frame are built once and written to every viewer's socket (see wsprotocol). A viewer whose
socket is backed up skips frames until it drains: a stalled viewer loses frames, nobody else
does. Audio goes out in the configured channel count, whatever the source sends. The hub's
fan-out subscriptions are active only while a viewer is connected, so with no viewer the pod
need not subscribe to the stream's tracks at all (see fanout, manager).

Messages (JSON text, compatible with the old frontend):
    {"type": "video_frame", "data": <base64 JPEG>, "timestamp": s, "width": w, "height": h}
    {"type": "audio_frame", "data": <base64 s16le PCM>, "sample_rate": 48000,
     "channels": c, "timestamp": s}
    {"type": "status", "state": ..., "viewers": n, ...}
Binary mode (`?mode=binary`) sends media as binary messages instead, see `binary_message`.
Video mode (`?mode=video`) sends H.264 and Opus from one shared encoder, see videohub.py.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import struct
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import av
import simplejpeg

from . import hls, metrics, wsprotocol
from .fanout import DropOldestQueue, FanOut, Subscription
from .frames import AudioFrame, VideoFrame, remix
from .health import contained
from .videohub import KEYFRAME_SECONDS, VideoHub, VideoViewer

log = logging.getLogger("haven.viewer")

VIDEO_KIND, AUDIO_KIND = 1, 2
# Binary framing: kind (u8), timestamp (f64, seconds), then for video: width, height (u16
# each) and the JPEG; for audio: sample rate (u32), channels (u8) and s16le PCM. Big-endian.
_VIDEO_HEADER = struct.Struct(">BdHH")
_AUDIO_HEADER = struct.Struct(">BdIB")
AUDIO_CHUNK_SECONDS = 0.04  # audio is batched into 40 ms messages: fewer sends per viewer
VIEWER_QUEUE = 8


def binary_message(kind: int, timestamp: float, payload: bytes, a: int, b: int) -> bytes:
    header = (_VIDEO_HEADER if kind == VIDEO_KIND else _AUDIO_HEADER).pack(kind, timestamp, a, b)
    return header + payload


@dataclass(frozen=True, slots=True)
class Message:
    """One media message, encoded once for both modes and shared by every viewer: the payloads
    and, for connections that take them, the serialized WebSocket frames."""

    text: str
    binary: bytes
    text_frame: bytes
    binary_frame: bytes

    @classmethod
    def of(cls, text: str, binary: bytes) -> Message:
        return cls(text, binary, wsprotocol.frame(text), wsprotocol.frame(binary))


def scaled_size(width: int, height: int, max_width: int) -> tuple[int, int]:
    if width <= max_width:
        return width, height
    h = round(height * max_width / width)
    return max_width - max_width % 2, max(2, h - h % 2)


def encode_jpeg(frame: VideoFrame, max_width: int, quality: int) -> tuple[bytes, int, int]:
    """I420 of any size to an upright JPEG, scaled down to `max_width` (in a worker thread)."""
    started = time.perf_counter()
    frame = frame.upright()
    width, height = scaled_size(frame.width, frame.height, max_width)
    frame = frame.scaled(width, height)
    y, u, v = frame.planes()
    jpeg = simplejpeg.encode_jpeg_yuv_planes(y, u, v, quality=quality, fastdct=True)
    metrics.ENCODE_SECONDS.labels(encoder="jpeg").observe(time.perf_counter() - started)
    return jpeg, width, height


class Viewer:
    """One WebSocket viewer. Media goes straight to its socket as a pre-built frame when the
    server offers that (`send_frame`), else through its queue; status messages always queue."""

    def __init__(self, binary: bool, send_frame: Callable[[bytes], bool] | None = None) -> None:
        self.binary = binary
        self.send_frame = send_frame
        self.queue: DropOldestQueue[str | bytes] = DropOldestQueue(VIEWER_QUEUE)

    def offer(self, message: Message | str) -> None:
        if isinstance(message, Message):
            if self.send_frame is not None:
                try:
                    sent = self.send_frame(
                        message.binary_frame if self.binary else message.text_frame
                    )
                except Exception as exc:  # e.g. a uvicorn upgrade changed what wsprotocol reads
                    contained(
                        "viewer-send",
                        exc,
                        "writing a pre-built frame failed; this viewer falls back to the ASGI path",
                    )
                    self.send_frame = None
                    sent = self.queue.put(message.binary if self.binary else message.text)
            else:
                sent = self.queue.put(message.binary if self.binary else message.text)
        else:
            sent = self.queue.put(message)  # status: always JSON text
        if not sent:
            metrics.FRAMES_DROPPED.labels(handler="viewer").inc()


class ViewerHub:
    def __init__(
        self,
        fanout: FanOut,
        *,
        max_viewers: int = 100,
        max_fps: float = 15,
        max_width: int = 1280,
        jpeg_quality: int = 75,
        audio: bool = True,
        audio_channels: int = 1,
        status: Callable[[], str] | None = None,
        hls_dir: Path | None = None,
    ) -> None:
        self.fanout = fanout
        self.status = status  # the JSON status message, sent on joins, leaves and state changes
        self.max_viewers = max_viewers
        self.max_fps = max_fps
        self.max_width = max_width
        self.jpeg_quality = jpeg_quality
        self.audio = audio
        self.audio_channels = audio_channels  # what viewers get, whatever the source sends
        self.viewers: set[Viewer | VideoViewer] = set()
        self.video = VideoHub(  # mode=video; always encoding when HLS is on
            fanout,
            max_fps=max_fps,
            max_width=max_width,
            audio=audio,
            audio_channels=audio_channels,
            always=hls_dir is not None,
            # HLS: a keyframe on the first picture at least a second on (segments of 1 s and a
            # picture more); else on the last picture before 2 s
            keyframe_seconds=hls.KEYFRAME_SECONDS + 1 / max_fps if hls_dir else KEYFRAME_SECONDS,
        )
        self.hls = (
            None
            if hls_dir is None
            else hls.HlsWriter(hls_dir, audio=audio, channels=audio_channels)
        )
        if self.hls is not None:
            self.video.sinks.append(self.hls.offer)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="jpeg")
        self._tasks: list[asyncio.Task] = []
        self._subs: list[Subscription] = []  # the loops' fan-out subscriptions

    def start(self) -> list[asyncio.Task]:
        """Start the viewer loops; returns their tasks (the pod's health watches them)."""
        self._tasks.append(asyncio.create_task(self._video_loop(), name="viewer-video"))
        if self.audio:
            self._tasks.append(asyncio.create_task(self._audio_loop(), name="viewer-audio"))
        if self.hls is not None:
            self.hls.start()
        return list(self._tasks) + self.video.start()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._executor.shutdown(wait=False, cancel_futures=True)
        await self.video.stop()
        if self.hls is not None:
            await asyncio.to_thread(self.hls.stop)

    def add(
        self, binary: bool, send_frame: Callable[[bytes], bool] | None = None, video: bool = False
    ) -> Viewer | VideoViewer:
        viewer = self.video.add(send_frame) if video else Viewer(binary, send_frame)
        self.viewers.add(viewer)
        self._viewers_changed()
        return viewer

    def remove(self, viewer: Viewer | VideoViewer) -> None:
        self.viewers.discard(viewer)
        if isinstance(viewer, VideoViewer):
            self.video.remove(viewer)
        viewer.queue.close()
        self._viewers_changed()

    @property
    def jpeg_viewers(self) -> list[Viewer]:
        return [v for v in self.viewers if isinstance(v, Viewer)]

    def _viewers_changed(self) -> None:
        metrics.VIEWERS.set(len(self.viewers))
        wanted = bool(self.jpeg_viewers)
        for sub in self._subs:  # the JPEG/PCM loops want the stream while they have a viewer
            sub.set_active(wanted)
        if self.status:
            self.broadcast(self.status())

    def _subscribe(self, name: str, maxsize: int, *, video: bool) -> Subscription:
        sub = self.fanout.subscribe(
            name, maxsize=maxsize, video=video, audio=not video, active=bool(self.jpeg_viewers)
        )
        self._subs.append(sub)
        return sub

    def broadcast(self, message: Message | str) -> None:
        """A media message to the JPEG/PCM viewers; a status (text) to every viewer."""
        viewers = self.jpeg_viewers if isinstance(message, Message) else list(self.viewers)
        for viewer in viewers:
            try:
                viewer.offer(message)
            except Exception as exc:  # one viewer's failure is not the others'
                contained("viewer-send", exc, "offering a message to a viewer failed")

    async def _video_loop(self) -> None:
        # Only the newest frame matters: the queue holds one, so a slow encode skips frames.
        sub = self._subscribe("viewer-video", 1, video=True)
        loop = asyncio.get_running_loop()
        interval = 1.0 / self.max_fps
        next_due = 0.0
        try:
            async for frame in sub:
                if not self.jpeg_viewers or frame.pts < next_due:
                    continue
                next_due = max(next_due + interval, frame.pts + interval / 2)
                try:
                    jpeg, width, height = await loop.run_in_executor(
                        self._executor, encode_jpeg, frame, self.max_width, self.jpeg_quality
                    )
                except (ValueError, av.error.FFmpegError) as exc:  # a bad frame is skipped
                    log.warning("viewer: skipped a %dx%d frame: %s", frame.width, frame.height, exc)
                    metrics.FRAMES_DROPPED.labels(handler="viewer").inc()
                    continue
                except Exception as exc:  # anything else too, with its traceback
                    contained(
                        "viewer-video",
                        exc,
                        f"encoding a {frame.width}x{frame.height} frame "
                        f"(rotation {frame.rotation}) failed",
                    )
                    metrics.FRAMES_DROPPED.labels(handler="viewer").inc()
                    continue
                text = json.dumps(
                    {
                        "type": "video_frame",
                        "data": base64.b64encode(jpeg).decode(),
                        "timestamp": frame.pts,
                        "width": width,
                        "height": height,
                    }
                )
                binary = binary_message(VIDEO_KIND, frame.pts, jpeg, width, height)
                self.broadcast(Message.of(text, binary))
                metrics.FRAMES_OUT.labels(handler="viewer").inc()
        finally:
            self._subs.remove(sub)
            sub.close()

    async def _audio_loop(self) -> None:
        sub = self._subscribe("viewer-audio", 100, video=False)
        chunks: list[AudioFrame] = []
        channels = self.audio_channels
        try:
            async for frame in sub:
                if not self.jpeg_viewers:
                    chunks.clear()
                    continue
                if chunks and frame.sample_rate != chunks[0].sample_rate:
                    chunks.clear()  # the source changed its rate: one rate per message
                chunks.append(frame)
                if sum(c.duration for c in chunks) + 1e-6 < AUDIO_CHUNK_SECONDS:
                    continue
                first = chunks[0]
                try:
                    pcm = b"".join(remix(c.pcm(), channels).tobytes() for c in chunks)
                except Exception as exc:  # a chunk it cannot remix is skipped
                    contained(
                        "viewer-audio",
                        exc,
                        f"remixing {len(chunks)} audio frames ({first.sample_rate} Hz, "
                        f"{first.channels} channels) to {channels} channels failed",
                    )
                    chunks.clear()
                    continue
                chunks.clear()
                text = json.dumps(
                    {
                        "type": "audio_frame",
                        "data": base64.b64encode(pcm).decode(),
                        "sample_rate": first.sample_rate,
                        "channels": channels,
                        "timestamp": first.pts,
                    }
                )
                binary = binary_message(AUDIO_KIND, first.pts, pcm, first.sample_rate, channels)
                self.broadcast(Message.of(text, binary))
        finally:
            self._subs.remove(sub)
            sub.close()

"""Recording handlers: each recording subscribes to the fan-out and encodes in a worker
thread of its own, so several run at once on the one connection and the loop never encodes.

State lives on the volume (`<root>/<name>/recording.json`, written atomically and fsynced in a
thread of its own): a pod that restarts resumes the recordings that were running into a new
part, and never touches a part already written. A state file that cannot be read is listed
as failed (`StateUnreadable`), never skipped in silence.

Queues: video and audio queue separately, bounded in bytes (VIDEO_QUEUE_BYTES,
AUDIO_QUEUE_BYTES), so an encoder that falls behind loses video first; the drops are counted
per kind, and the recording says `degraded` (reason `EncoderBehind`) while it is losing frames.

Stop means stop: the recording takes no frame from the moment `stop` is called, writes what
was queued before it for at most STOP_DRAIN_SECONDS, then drops the queued video and writes
the queued audio for at most AUDIO_DRAIN_SECONDS more, drops the rest, and finalizes the part.
A stream that was away longer than `maxGapSeconds`, or a picture of another shape, starts a
new part; `maxDuration` ends the recording on a timer, whether frames arrive or not.

Picture size: a part's size is planned from the publication's announced size, not from its
first frame, which is often smaller (a new subscription's WebRTC ramps up, a busy publisher's
encoder scales down): a smaller first picture of the same shape is scaled up to the announced
size, and the writer scales every later one to the part's size.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import errno
import json
import logging
import math
import os
import re
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import av

from . import metrics
from .fanout import FanOut, Subscription
from .frames import AudioFrame, Frame, VideoFrame
from .join import join_parts, remove_parts
from .repair import fsync_dir, trim_unfinished
from .writer import (
    FORMATS,
    MAX_GAP_SECONDS,
    QUALITY,
    PartWriter,
    containers,
    output_size,
    probe_duration,
    resolve,
    same_shape,
)

if TYPE_CHECKING:
    from .upload import RecordingUpload, Uploads

log = logging.getLogger("haven.recording")

NAME_MAX = 100  # leaves room for "-partNNN.webm" and the state file beside it
NAME_RE = re.compile(rf"^[a-z0-9]([-a-z0-9.]{{0,{NAME_MAX - 2}}}[a-z0-9])?$")
STATE_FILE = "recording.json"
_PART_NUMBER = re.compile(r"-part([0-9]+)(?:-([0-9]+))?\.")  # ...-part003.mp4, -part001-003.mp4
# Room kept beside the state file while a recording runs and given up for its final state, so
# that state (say, DiskFull) reaches even a full volume and a restarted pod does not resume it.
RESERVE_FILE, RESERVE_BYTES = ".reserve", 256 * 1024
VIDEO_QUEUE_BYTES = 48 << 20  # about 1 s of 1080p30 I420, 2 s of 720p30
AUDIO_QUEUE_BYTES = 2 << 20  # about 10 s of 48 kHz stereo
QUEUE_FRAMES = 4096  # per kind; the byte bounds are the ones that bite
STOP_DRAIN_SECONDS = 1.0  # a stop writes what was queued before it for at most this long,
AUDIO_DRAIN_SECONDS = 0.5  # then drops the queued video and writes queued audio this long more
DEGRADED_SECONDS = 10.0  # degraded while frames were dropped this recently
PERSIST_EVERY = 5.0  # seconds between progress writes to the state file
MAX_DURATION = 31 * 86400.0  # seconds
MAX_GAP = 3600.0  # seconds
DEFAULT_MAX_RECORDINGS = 8


class RecordingState(StrEnum):
    STARTING = "starting"  # waiting for the stream's first frame
    RECORDING = "recording"
    STOPPING = "stopping"
    COMPLETED = "completed"
    FAILED = "failed"


ACTIVE = (RecordingState.STARTING, RecordingState.RECORDING)


class SpecError(ValueError):
    """A recording request that cannot be honoured; the API answers 4xx with its message."""


def _in_range(value: object, low: float, high: float, *, open_low: bool = False) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if not math.isfinite(value):
        return False
    return (low < value if open_low else low <= value) and value <= high


@dataclass(frozen=True)
class RecordingSpec:
    name: str
    format: str = "av1"
    quality: str = "medium"
    audio: bool = True
    max_width: int | None = None
    max_fps: int | None = None
    max_duration: float | None = None  # seconds
    max_gap: float = MAX_GAP_SECONDS  # seconds the stream may be away within one part
    keep_parts: bool = False  # keep the parts once they are joined into one file
    container: str | None = None  # None: the format's own (writer.FORMATS); h264 also mpegts

    def validate(self) -> RecordingSpec:
        if not isinstance(self.name, str) or not NAME_RE.match(self.name):
            raise SpecError(
                f"name {self.name!r} must be a lowercase DNS name (a-z, 0-9, '-', '.') "
                f"of at most {NAME_MAX} characters"
            )
        if self.format not in FORMATS:
            raise SpecError(f"unknown format {self.format!r}; use one of {', '.join(FORMATS)}")
        if self.quality not in QUALITY[self.format]:
            raise SpecError(f"unknown quality {self.quality!r}; use low, medium or high")
        if self.container is not None and self.container not in containers(self.format):
            raise SpecError(
                f"format {self.format} is not written as {self.container!r}; use "
                f"{' or '.join(containers(self.format))}"
            )
        if self.max_width is not None and not (
            isinstance(self.max_width, int) and _in_range(self.max_width, 16, 7680)
        ):
            raise SpecError("maxWidth must be a whole number between 16 and 7680")
        if self.max_fps is not None and not (
            isinstance(self.max_fps, int) and _in_range(self.max_fps, 1, 60)
        ):
            raise SpecError("maxFps must be a whole number between 1 and 60")
        if self.max_duration is not None and not _in_range(
            self.max_duration, 0, MAX_DURATION, open_low=True
        ):
            raise SpecError(f"maxDurationSeconds must be a number in (0, {MAX_DURATION:.0f}]")
        if not _in_range(self.max_gap, 0, MAX_GAP, open_low=True):
            raise SpecError(f"maxGapSeconds must be a number in (0, {MAX_GAP:.0f}]")
        if not isinstance(self.keep_parts, bool):
            raise SpecError("keepParts must be true or false")
        return self


@dataclass
class PartInfo:
    path: str  # relative to the recordings root
    sizeBytes: int = 0
    durationSeconds: float = 0.0
    startedAt: str | None = None
    endedAt: str | None = None
    # With object storage (upload.py): the object's s3://bucket/key, whether it is complete and
    # verified, and the multipart upload's id and chunks already up (to resume it).
    url: str | None = None
    uploaded: bool | None = None
    upload: dict[str, Any] | None = None


@dataclass
class Progress:
    state: RecordingState = RecordingState.STARTING
    parts: list[PartInfo] = field(default_factory=list)
    framesWritten: int = 0
    framesDropped: int = 0
    videoFramesDropped: int = 0
    audioFramesDropped: int = 0
    degraded: bool = False
    startedAt: str | None = None
    stoppedAt: str | None = None
    reason: str = "Starting"
    error: str | None = None
    joinedFrom: list[str] = field(default_factory=list)  # the parts the joined files hold
    joinError: str | None = None  # why some parts are not joined (they stay as they are)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def write_state(directory: Path, data: str) -> None:
    """Replace `directory`/recording.json with `data`, atomically and durably (blocking)."""
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{STATE_FILE}.tmp"
    with open(tmp, "w") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, directory / STATE_FILE)
    fsync_dir(directory)


def _mono() -> int:
    return 1


def _unknown_size() -> tuple[int, int] | None:
    return None


Size = Callable[[], tuple[int, int] | None]


# WebRTC's encoder crops a picture to its alignment (641x359 arrives as 640x356, a half-size
# 320x179 as 320x176): a picture this many pixels short of the announced shape has that shape.
ALIGN_PIXELS = 8


def announced_shape(size: tuple[int, int], announced: tuple[int, int]) -> bool:
    """Whether an upright picture of `size` is the announced picture (not turned) scaled by
    some factor and cropped by at most ALIGN_PIXELS per side."""
    (w, h), (aw, ah) = size, announced
    if min(w, h, aw, ah) <= 0:
        return False
    return max(w / aw, h / ah) <= min((w + ALIGN_PIXELS) / aw, (h + ALIGN_PIXELS) / ah)


def track_shape(size: tuple[int, int], announced: tuple[int, int] | None) -> tuple[int, int] | None:
    """The announced size turned as a picture of `size` is, if that picture has its shape."""
    if announced is None:
        return None
    for turned in (announced, announced[::-1]):
        if announced_shape(size, turned) or same_shape(size, turned):
            return turned
    return None


def opening_size(
    frame: VideoFrame, announced: tuple[int, int] | None, max_width: int | None
) -> tuple[int, int] | None:
    """The size to scale a part's first picture to, if not its own: the publication's
    announced size (turned as the picture is, to at most `max_width`) when the picture has its
    shape and is smaller. A picture as large or larger, or of another shape, plans the part."""
    width, height = frame.upright_size
    if (shape := track_shape((width, height), announced)) is None:
        return None
    w, h = shape
    planned, own = output_size(w, h, max_width), output_size(width, height, max_width)
    if (w <= width and h <= height) or planned == own:
        return None
    return planned


def same_track_shape(
    a: tuple[int, int] | None, b: tuple[int, int], announced: tuple[int, int] | None
) -> bool:
    """Whether two pictures are both of the publication's shape (as WebRTC crops it): not a
    shape change, though their aspect ratios differ by its alignment (a small layer's more)."""
    shape = track_shape(b, announced)
    return a is not None and shape is not None and announced_shape(a, shape)


class Recording:
    def __init__(
        self,
        spec: RecordingSpec,
        root: Path,
        fanout: FanOut,
        channels: Callable[[], int] = _mono,
        size: Size = _unknown_size,
    ) -> None:
        """`channels`: the stream's audio channels, for a part that opens before any audio;
        `size`: the video publication's announced size (before rotation), if known."""
        self.spec = spec
        self.channels_hint = channels
        self.size_hint = size
        self.root = root
        self.dir = root / spec.name
        self.fanout = fanout
        self.progress = Progress(startedAt=_now())
        self._sub: Subscription | None = None
        self._task: asyncio.Task | None = None
        self._writer: PartWriter | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"rec-{spec.name}"[:15])
        self._io = ThreadPoolExecutor(1, thread_name_prefix=f"state-{spec.name}"[:15])
        self._suspending = False
        self._drain_until: float | None = None  # loop time; set once the recording is ending
        self._limit: asyncio.TimerHandle | None = None
        self._channels: int | None = None  # of the latest audio: a new part starts with it
        self._frames_before = self._bytes_reported = 0
        self._drops_before = (0, 0)  # video, audio: dropped before this run (a pod restart)
        self._bad = [0, 0]  # video, audio frames the writer could not take
        self._drops_seen = 0
        self._last_drop: float | None = None
        self.upload: RecordingUpload | None = None  # set by Uploads.attach

    # -- state on disk -----------------------------------------------------------------------

    def to_json(self) -> dict:
        self._sync_counts()
        p = self.progress
        return {
            "name": self.spec.name,
            "spec": asdict(self.spec),
            "state": p.state.value,
            "reason": p.reason,
            "error": p.error,
            "format": self.spec.format,
            "quality": self.spec.quality,
            "container": resolve(self.spec.format, self.spec.container).container,
            "videoCodec": FORMATS[self.spec.format].video_codec,
            "audioCodec": FORMATS[self.spec.format].audio_codec if self.spec.audio else None,
            "parts": [asdict(part) for part in p.parts],
            "bytesWritten": sum(part.sizeBytes for part in p.parts),
            "durationSeconds": round(sum(part.durationSeconds for part in p.parts), 3),
            "framesWritten": p.framesWritten,
            "framesDropped": p.framesDropped,
            "videoFramesDropped": p.videoFramesDropped,
            "audioFramesDropped": p.audioFramesDropped,
            "degraded": p.degraded,
            "startedAt": p.startedAt,
            "stoppedAt": p.stoppedAt,
            "joinedFrom": p.joinedFrom,
            "joinError": p.joinError,
            **(self.upload.summary() if self.upload is not None else {}),
        }

    def _write_quietly(self, data: str) -> None:
        try:
            write_state(self.dir, data)
        except OSError as exc:  # a full disk is logged, not raised
            log.warning("could not save state of recording %s: %s", self.spec.name, exc)

    def persist(self) -> None:
        """Write the state file now (blocking: fsync). On the loop, use `save`."""
        self._write_quietly(json.dumps(self.to_json(), indent=2))

    def _persist_later(self) -> Future:
        """Queue a state write on this recording's I/O thread (in order, off the loop)."""
        return self._io.submit(self._write_quietly, json.dumps(self.to_json(), indent=2))

    async def save(self) -> None:
        await asyncio.wrap_future(self._persist_later())

    @classmethod
    def load(
        cls,
        state_file: Path,
        root: Path,
        fanout: FanOut,
        channels: Callable[[], int] = _mono,
        size: Size = _unknown_size,
    ) -> Recording:
        data = json.loads(state_file.read_text())
        rec = cls(RecordingSpec(**data["spec"]).validate(), root, fanout, channels, size)
        p = rec.progress
        p.state = RecordingState(data["state"])
        p.parts = [PartInfo(**part) for part in data["parts"]]
        p.framesWritten, p.framesDropped = data["framesWritten"], data["framesDropped"]
        p.videoFramesDropped = data.get("videoFramesDropped", p.framesDropped)
        p.audioFramesDropped = data.get("audioFramesDropped", 0)
        p.degraded = bool(data.get("degraded", False))
        p.startedAt, p.stoppedAt = data["startedAt"], data["stoppedAt"]
        p.reason, p.error = data["reason"], data["error"]
        p.joinedFrom, p.joinError = data.get("joinedFrom", []), data.get("joinError")
        if p.joinedFrom and not rec.spec.keep_parts:  # the pod died before it removed them
            listed = {part.path for part in p.parts}
            remove_parts(root, [path for path in p.joinedFrom if path not in listed])
        unfinished = p.parts[-1] if p.parts and p.parts[-1].endedAt is None else None
        if unfinished is not None:  # the pod died mid-part: keep what plays, and measure it
            path = root / unfinished.path
            if cut := trim_unfinished(path):
                log.info("cut %d bytes of an unfinished fragment off %s", cut, unfinished.path)
            unfinished.sizeBytes = path.stat().st_size if path.exists() else 0
            unfinished.durationSeconds = round(probe_duration(path), 3)
            unfinished.endedAt = _now()
        return rec

    @classmethod
    def unreadable(cls, state_file: Path, root: Path, fanout: FanOut, exc: Exception) -> Recording:
        """A recording whose state file cannot be read: listed as failed, with its files."""
        rec = cls(RecordingSpec(name=state_file.parent.name), root, fanout)
        p = rec.progress
        p.state, p.reason, p.startedAt = RecordingState.FAILED, "StateUnreadable", None
        p.error = f"{state_file.name} could not be read: {exc}"[:500]
        p.parts = [
            PartInfo(path=str(f.relative_to(root)), sizeBytes=f.stat().st_size)
            for f in sorted(state_file.parent.glob("*-part[0-9][0-9][0-9].*"))
        ]
        return rec

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def active(self) -> bool:
        return self.progress.state in ACTIVE

    def start(self) -> None:
        """Start (or, after a pod restart, resume into a new part)."""
        if self.progress.parts:
            self.progress.reason = "Resuming"
        self.progress.state = RecordingState.STARTING
        self._persist_later()
        self._io.submit(self._reserve)
        self._sub = self.fanout.subscribe(
            f"recording:{self.spec.name}",
            maxsize=QUEUE_FRAMES,
            audio=self.spec.audio,
            video_bytes=VIDEO_QUEUE_BYTES,
            audio_bytes=AUDIO_QUEUE_BYTES,
        )
        self._task = asyncio.create_task(self._run(), name=f"recording-{self.spec.name}")

    def _reserve(self) -> None:
        with contextlib.suppress(OSError), open(self.dir / RESERVE_FILE, "wb") as f:
            os.posix_fallocate(f.fileno(), 0, RESERVE_BYTES)

    def _end(self, reason: str | None) -> None:
        """Take no more frames from now on; what was queued is written for at most
        STOP_DRAIN_SECONDS. `reason` None suspends (the next pod resumes the recording)."""
        if self._sub is None or self._drain_until is not None or not self.active:
            return
        if reason is None:
            self._suspending = True
        else:
            self.progress.state, self.progress.reason = RecordingState.STOPPING, reason
        self._sub.detach()
        self._sub.queue.close()
        self._drain_until = asyncio.get_running_loop().time() + STOP_DRAIN_SECONDS
        if self._limit is not None:
            self._limit.cancel()

    async def stop(self, reason: str = "Stopped") -> dict:
        """Finalize the file and return the final state. Idempotent."""
        self._end(reason)
        if self._task is not None:
            await asyncio.shield(self._task)
        return self.to_json()

    async def suspend(self) -> None:
        """Close the current part cleanly but stay active: the next pod resumes it."""
        self._end(None)
        if self._task is not None:
            await asyncio.shield(self._task)

    def _new_part(self) -> PartWriter:
        listed = {p.path for p in self.progress.parts}  # another pod's too, in the bucket
        numbers = [int(n) for path in listed for m in _PART_NUMBER.findall(path) for n in m if n]
        number = max([len(self.progress.parts), *numbers]) + 1  # after every part listed
        ext = resolve(self.spec.format, self.spec.container).extension
        relative = f"{self.spec.name}/{self.spec.name}-part{number:03d}.{ext}"
        while (self.root / relative).exists() or relative in listed:  # never overwrite a part
            number += 1
            relative = f"{self.spec.name}/{self.spec.name}-part{number:03d}.{ext}"
        self.progress.parts.append(PartInfo(path=relative))
        return PartWriter(
            self.root / relative,
            self.spec.format,
            self.spec.quality,
            audio=self.spec.audio,
            container=self.spec.container,
            max_width=self.spec.max_width,
            max_fps=self.spec.max_fps,
            max_gap=self.spec.max_gap,
            channels=self._channels or self.channels_hint(),
        )

    def _sync_counts(self) -> None:
        if self._sub is None:
            return
        p = self.progress
        p.videoFramesDropped = self._drops_before[0] + self._sub.dropped_video + self._bad[0]
        p.audioFramesDropped = self._drops_before[1] + self._sub.dropped_audio + self._bad[1]
        p.framesDropped = p.videoFramesDropped + p.audioFramesDropped

    def _sync_part(self) -> None:
        self._sync_counts()
        if self._writer is None or not self.progress.parts:
            return
        part, stats = self.progress.parts[-1], self._writer.stats
        part.sizeBytes = stats.bytes_written
        part.durationSeconds = round(stats.video_duration, 3)
        self.progress.framesWritten = self._frames_before + stats.frames_written
        metrics.BYTES_WRITTEN.labels(recording=self.spec.name).inc(
            max(0, stats.bytes_written - self._bytes_reported)
        )
        self._bytes_reported = stats.bytes_written

    def _check_degraded(self, now: float) -> None:
        """Degraded (reason EncoderBehind) while the queues dropped frames in the last
        DEGRADED_SECONDS: the encoder does not keep up with the stream."""
        assert self._sub is not None
        if self._sub.dropped > self._drops_seen:
            self._drops_seen, self._last_drop = self._sub.dropped, now
        degraded = self._last_drop is not None and now - self._last_drop < DEGRADED_SECONDS
        p = self.progress
        if degraded == p.degraded:
            return
        p.degraded = degraded
        if p.state == RecordingState.RECORDING:
            p.reason = "EncoderBehind" if degraded else "Recording"
        if degraded:
            log.warning("recording %s is dropping frames: its encoder is behind", self.spec.name)

    def _write(self, frame: Frame, size: tuple[int, int] | None = None) -> None:
        """Write one frame (in the recording's thread), a picture scaled to `size` first if
        given (see opening_size); a frame it cannot take is skipped."""
        assert self._writer is not None
        is_video = isinstance(frame, VideoFrame)
        try:
            if is_video:
                if size is not None:
                    frame = frame.upright().scaled(*size)
                self._writer.write_video(frame)
            else:
                self._writer.write_audio(frame)
        except ValueError as exc:
            if isinstance(exc, av.error.FFmpegError):
                raise
            self._bad[0 if is_video else 1] += 1
            log.warning("recording %s skipped a frame: %s", self.spec.name, exc)

    def _late(self, frame: Frame, now: float) -> str:
        """What becomes of `frame` once a stop's drain time is over: video is dropped
        ("skip") with all queued video, audio (cheap) is still written ("write") for
        AUDIO_DRAIN_SECONDS more, and after that everything queued is dropped ("end")."""
        assert self._sub is not None and self._drain_until is not None
        queue, is_video = self._sub.queue, isinstance(frame, VideoFrame)
        if now > self._drain_until + AUDIO_DRAIN_SECONDS:
            (queue.video if is_video else queue.audio).dropped += 1
            left = queue.close(discard=True)
            log.warning("recording %s stopped with %d frames unwritten", self.spec.name, left + 1)
            return "end"
        dropped = queue.video.clear() + is_video
        queue.video.dropped += is_video
        if dropped:
            log.warning("recording %s dropped %d queued pictures", self.spec.name, dropped)
        return "skip" if is_video else "write"

    async def _roll(self, why: str) -> None:
        """End the current part and start the next."""
        assert self._writer is not None
        log.info("recording %s starts a new part: %s", self.spec.name, why)
        writer = self._writer
        await asyncio.get_running_loop().run_in_executor(self._executor, writer.close)
        self._end_part()
        self._frames_before += writer.stats.frames_written
        self._bytes_reported = 0
        self._writer = self._new_part()
        await self.save()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._sub is not None
        p = self.progress
        self._frames_before = p.framesWritten
        self._drops_before = (p.videoFramesDropped, p.audioFramesDropped)
        self._bytes_reported = 0
        self._writer = self._new_part()
        last_persist = loop.time()
        if (remaining := self._duration_left()) is not None:
            self._limit = loop.call_later(remaining, self._end, "MaxDurationReached")
        try:
            async for frame in self._sub:
                if self._drain_until is not None and loop.time() > self._drain_until:
                    late = self._late(frame, loop.time())
                    if late == "end":
                        break
                    if late == "skip":
                        continue
                if isinstance(frame, AudioFrame):
                    self._channels = frame.channels
                why = self._writer.split_reason(frame)
                if why == "ShapeChanged" and same_track_shape(
                    self._writer.source_size, frame.upright_size, self.size_hint()
                ):
                    why = None  # the same track's picture, cropped to another alignment
                if why:
                    await self._roll(why)
                size = None
                if isinstance(frame, VideoFrame) and not self._writer.is_open:
                    size = opening_size(frame, self.size_hint(), self.spec.max_width)
                await loop.run_in_executor(self._executor, self._write, frame, size)
                part = p.parts[-1]
                if p.state == RecordingState.STARTING and not self._writer.is_open:
                    p.reason = "WaitingForVideo"  # sound, no picture: a part opens on video
                if part.startedAt is None and self._writer.is_open:
                    part.startedAt = _now()
                    if p.state == RecordingState.STARTING:
                        p.state, p.reason = RecordingState.RECORDING, "Recording"
                    await self.save()
                self._check_degraded(loop.time())
                if isinstance(frame, VideoFrame):
                    metrics.FRAMES_OUT.labels(handler=f"recording:{self.spec.name}").inc()
                if loop.time() - last_persist > PERSIST_EVERY:
                    self._sync_part()
                    await self.save()
                    last_persist = loop.time()
            await loop.run_in_executor(self._executor, self._writer.close)
            if self._suspending:
                self._end_part()
                p.reason = "Interrupted"
                await self.save()
            else:
                reason = p.reason
                self._end_part()
                await self._join()
                await self._finish(RecordingState.COMPLETED, reason, ended=True)
        except (OSError, av.error.FFmpegError) as exc:
            disk_full = getattr(exc, "errno", None) == errno.ENOSPC
            reason = "DiskFull" if disk_full else "WriteFailed"
            message = f"disk full writing {p.parts[-1].path}" if disk_full else f"{exc}"
            log.error("recording %s failed: %s", self.spec.name, message)
            await loop.run_in_executor(self._executor, self._writer.abort)
            await self._finish(RecordingState.FAILED, reason, message)
        except Exception as exc:  # never leave a recording that says it records and does not
            log.exception("recording %s failed", self.spec.name)
            await loop.run_in_executor(self._executor, self._writer.abort)
            await self._finish(RecordingState.FAILED, "Error", repr(exc)[:300])
        finally:
            if self._limit is not None:
                self._limit.cancel()
            self._sub.close()
            self._executor.shutdown(wait=False)
            self._io.shutdown(wait=False)

    def _duration_left(self) -> float | None:
        if self.spec.max_duration is None or self.progress.startedAt is None:
            return None
        started = dt.datetime.fromisoformat(self.progress.startedAt.replace("Z", "+00:00"))
        elapsed = (dt.datetime.now(dt.UTC) - started).total_seconds()
        return max(0.0, self.spec.max_duration - elapsed)

    def _end_part(self) -> None:
        self._sync_part()
        part = self.progress.parts[-1] if self.progress.parts else None
        if part is None:
            return
        if part.startedAt is None:  # nothing was written: no empty part is left behind
            self.progress.parts.pop()
            with contextlib.suppress(OSError):
                (self.root / part.path).unlink()
        else:
            part.endedAt = _now()

    async def _join(self) -> None:
        """Join the finished parts into one seekable file (join.py, in the recording's
        thread; state `stopping`, reason `Joining`, meanwhile); the joined file is in the state
        on the volume before any part is removed. A failure leaves the parts as they are."""
        p = self.progress
        if not p.parts:
            return
        p.reason = "Joining"
        await self.save()
        loop = asyncio.get_running_loop()
        try:
            outcome = await loop.run_in_executor(
                self._executor, join_parts, self.root, self.spec.name, list(p.parts)
            )
        except Exception as exc:  # never fail a finished recording over its join
            log.exception("recording %s: joining its parts failed", self.spec.name)
            p.joinError = repr(exc)[:300]
            return
        p.parts, p.joinError = outcome.parts, outcome.error
        p.joinedFrom = [*p.joinedFrom, *outcome.joined_from]
        if outcome.joined_from and not self.spec.keep_parts:
            await self.save()
            await loop.run_in_executor(self._executor, remove_parts, self.root, outcome.joined_from)

    async def _finish(
        self, state: RecordingState, reason: str, error: str | None = None, *, ended: bool = False
    ) -> None:
        """Record the final state on the volume, then show it. `ended`: the part is ended."""
        if not ended:
            self._end_part()
        p = self.progress
        p.reason, p.error, p.stoppedAt = reason, error, _now()
        with contextlib.suppress(OSError):  # room for the final state, even on a full disk
            (self.dir / RESERVE_FILE).unlink()
        final = {**self.to_json(), "state": state.value}
        await asyncio.wrap_future(self._io.submit(self._write_quietly, json.dumps(final, indent=2)))
        p.state = state
        log.info("recording %s %s (%s)", self.spec.name, state, reason)


class TooManyRecordings(SpecError):
    """The pod already runs its maximum of recordings."""


class SpecConflict(SpecError):
    """The same name with different settings."""


class Recordings:
    """All recordings of this pod, by name."""

    def __init__(
        self,
        root: Path,
        fanout: FanOut,
        max_recordings: int = DEFAULT_MAX_RECORDINGS,
        channels: Callable[[], int] = _mono,
        uploads: Uploads | None = None,
        size: Size = _unknown_size,
    ) -> None:
        """`uploads`: object storage, if configured: every recording's parts go up; `size`:
        the video publication's announced size (Recording plans its pictures from it)."""
        self.uploads = uploads
        self.root = root
        self.fanout = fanout
        self.channels = channels
        self.size = size
        self.max_recordings = max_recordings
        self.items: dict[str, Recording] = {}

    def _load_all(self) -> list[Recording]:
        loaded = []
        for state_file in sorted(self.root.glob(f"*/{STATE_FILE}")):
            try:
                loaded.append(
                    Recording.load(state_file, self.root, self.fanout, self.channels, self.size)
                )
            except Exception as exc:  # listed as failed, never skipped
                log.error("unreadable recording state %s: %s", state_file, exc)
                loaded.append(Recording.unreadable(state_file, self.root, self.fanout, exc))
            rec = loaded[-1]
            if rec.progress.state == RecordingState.STOPPING:  # the stop was under way
                rec.progress.state, rec.progress.stoppedAt = RecordingState.COMPLETED, _now()
                rec.persist()
        return loaded

    async def resume(self) -> list[str]:
        """Load every recording on the volume; restart those that were running."""
        resumed = []
        for rec in await asyncio.to_thread(self._load_all):  # probing files is blocking I/O
            self.items[rec.spec.name] = rec
            if rec.active:
                rec.start()
                resumed.append(rec.spec.name)
            if self.uploads is not None and rec.progress.reason != "StateUnreadable":
                self.uploads.attach(rec)  # carries on where the last pod's upload was
        return resumed

    def start(
        self, spec: RecordingSpec, resume: list[dict] = (), stopped: bool = False
    ) -> tuple[Recording, bool]:
        """Start `spec`; a repeat of the same spec is a no-op. Returns (recording, created).
        `resume`: what another pod left in object storage: uploads open ({path, key, uploadId})
        and files complete ({path, url, uploaded: true, ...}); a new recording takes them as
        its first parts (upload.Uploads.adopt) and completes the open ones from what the server
        holds. `stopped`: the recording is over (its node was lost after it was asked to stop,
        or after it ended): it records nothing, only completes the open uploads."""
        spec.validate()
        existing = self.items.get(spec.name)
        if existing is not None:
            if existing.spec != spec:
                raise SpecConflict(
                    f"recording {spec.name!r} exists with other settings: {asdict(existing.spec)}"
                )
            return existing, False
        running = sum(r.active for r in self.items.values())
        if running >= self.max_recordings:
            raise TooManyRecordings(
                f"this stream pod already runs {running} recordings, its maximum "
                f"(--max-recordings {self.max_recordings}); stop one first"
            )
        rec = Recording(spec, self.root, self.fanout, self.channels, self.size)
        for entry in resume:  # a part of this recording, never a path elsewhere
            rest = entry["path"].removeprefix(f"{spec.name}/")
            if rest == entry["path"] or "/" in rest or rest.startswith("."):
                raise SpecError(f"resumeUploads: {entry['path']!r} is not a part of {spec.name}")
        if stopped and (self.uploads is None or not any("uploadId" in e for e in resume)):
            raise SpecError("stopped: only to complete resumeUploads, with object storage")
        if resume and self.uploads is not None:
            rec.progress.parts.extend(self.uploads.adopt(list(resume), _now()))
        self.items[spec.name] = rec
        if stopped:  # over: its state says so on this volume too, then the uploads go on
            rec.progress.state, rec.progress.reason = RecordingState.COMPLETED, "Stopped"
            rec.progress.stoppedAt = _now()
            rec._persist_later()
        else:
            rec.start()
        if self.uploads is not None:
            self.uploads.attach(rec)
        return rec, True

    async def suspend_all(self) -> None:
        """Pod shutdown: finalize every open part; the recordings resume in the next pod."""
        try:
            await asyncio.gather(*(r.suspend() for r in self.items.values() if r.active))
        finally:
            if self.uploads is not None:  # the next pod carries on from the state on the volume
                await self.uploads.stop()

"""Recording handlers: each recording subscribes to the fan-out and encodes in a worker
thread of its own, so several run at once on the one connection and the loop never encodes.

State lives on the volume (`<root>/<name>/recording.json`): a pod that restarts resumes the
recordings that were running into a new part, and never touches a part already written.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import errno
import json
import logging
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path

import av

from . import metrics
from .fanout import FanOut, Subscription
from .frames import VideoFrame
from .repair import trim_to_whole_fragments
from .writer import FORMATS, QUALITY, PartWriter, probe_duration

log = logging.getLogger("haven.recording")

NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
STATE_FILE = "recording.json"
# Room kept beside the state file while a recording runs and given up for its final state, so
# that state (say, DiskFull) reaches even a full volume and a restarted pod does not resume it.
RESERVE_FILE, RESERVE_BYTES = ".reserve", 256 * 1024
QUEUE_FRAMES = 240  # about 2 s of 30 fps video and its audio
PERSIST_EVERY = 5.0  # seconds between progress writes to the state file


class RecordingState(StrEnum):
    STARTING = "starting"  # waiting for the stream's first frame
    RECORDING = "recording"
    STOPPING = "stopping"
    COMPLETED = "completed"
    FAILED = "failed"


ACTIVE = (RecordingState.STARTING, RecordingState.RECORDING)


class SpecError(ValueError):
    """A recording request that cannot be honoured; the API answers 4xx with its message."""


@dataclass(frozen=True)
class RecordingSpec:
    name: str
    format: str = "av1"
    quality: str = "medium"
    audio: bool = True
    max_width: int | None = None
    max_fps: int | None = None
    max_duration: float | None = None  # seconds

    def validate(self) -> RecordingSpec:
        if not NAME_RE.match(self.name):
            raise SpecError(f"name {self.name!r} must be a lowercase DNS name (a-z, 0-9, '-', '.')")
        if self.format not in FORMATS:
            raise SpecError(f"unknown format {self.format!r}; use one of {', '.join(FORMATS)}")
        if self.quality not in QUALITY[self.format]:
            raise SpecError(f"unknown quality {self.quality!r}; use low, medium or high")
        if self.max_width is not None and not 16 <= self.max_width <= 7680:
            raise SpecError("maxWidth must be between 16 and 7680")
        if self.max_fps is not None and not 1 <= self.max_fps <= 60:
            raise SpecError("maxFps must be between 1 and 60")
        if self.max_duration is not None and self.max_duration <= 0:
            raise SpecError("maxDuration must be positive")
        return self


@dataclass
class PartInfo:
    path: str  # relative to the recordings root
    sizeBytes: int = 0
    durationSeconds: float = 0.0
    startedAt: str | None = None
    endedAt: str | None = None


@dataclass
class Progress:
    state: RecordingState = RecordingState.STARTING
    parts: list[PartInfo] = field(default_factory=list)
    framesWritten: int = 0
    framesDropped: int = 0
    startedAt: str | None = None
    stoppedAt: str | None = None
    reason: str = "Starting"
    error: str | None = None


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class Recording:
    def __init__(
        self, spec: RecordingSpec, root: Path, fanout: FanOut, fps_hint=lambda: 0.0
    ) -> None:
        self.spec = spec
        self.root = root
        self.dir = root / spec.name
        self.fanout = fanout
        self.fps_hint = fps_hint
        self.progress = Progress(startedAt=_now())
        self._sub: Subscription | None = None
        self._task: asyncio.Task | None = None
        self._writer: PartWriter | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"rec-{spec.name}"[:15])
        self._suspending = False
        self._frames_before = self._drops_before = self._bytes_reported = 0

    # -- state on disk -----------------------------------------------------------------------

    def to_json(self) -> dict:
        p = self.progress
        return {
            "name": self.spec.name,
            "spec": asdict(self.spec),
            "state": p.state.value,
            "reason": p.reason,
            "error": p.error,
            "format": self.spec.format,
            "quality": self.spec.quality,
            "videoCodec": FORMATS[self.spec.format].video_codec,
            "audioCodec": FORMATS[self.spec.format].audio_codec if self.spec.audio else None,
            "parts": [asdict(part) for part in p.parts],
            "bytesWritten": sum(part.sizeBytes for part in p.parts),
            "durationSeconds": round(sum(part.durationSeconds for part in p.parts), 3),
            "framesWritten": p.framesWritten,
            "framesDropped": p.framesDropped,
            "startedAt": p.startedAt,
            "stoppedAt": p.stoppedAt,
        }

    def persist(self) -> None:
        """Write the state file atomically; a full disk is logged, not raised."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            tmp = self.dir / f".{STATE_FILE}.tmp"
            tmp.write_text(json.dumps(self.to_json(), indent=2))
            os.replace(tmp, self.dir / STATE_FILE)
        except OSError as exc:
            log.warning("could not save state of recording %s: %s", self.spec.name, exc)

    @classmethod
    def load(cls, state_file: Path, root: Path, fanout: FanOut, fps_hint=lambda: 0.0) -> Recording:
        data = json.loads(state_file.read_text())
        rec = cls(RecordingSpec(**data["spec"]).validate(), root, fanout, fps_hint)
        p = rec.progress
        p.state = RecordingState(data["state"])
        p.parts = [PartInfo(**part) for part in data["parts"]]
        p.framesWritten, p.framesDropped = data["framesWritten"], data["framesDropped"]
        p.startedAt, p.stoppedAt = data["startedAt"], data["stoppedAt"]
        p.reason, p.error = data["reason"], data["error"]
        unfinished = p.parts[-1] if p.parts and p.parts[-1].endedAt is None else None
        if unfinished is not None:  # the pod died mid-part: keep what plays, and measure it
            path = root / unfinished.path
            if cut := trim_to_whole_fragments(path):
                log.info("cut %d bytes of an unfinished fragment off %s", cut, unfinished.path)
            unfinished.sizeBytes = path.stat().st_size if path.exists() else 0
            unfinished.durationSeconds = round(probe_duration(path), 3)
            unfinished.endedAt = _now()
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
        self.persist()
        with contextlib.suppress(OSError), open(self.dir / RESERVE_FILE, "wb") as f:
            os.posix_fallocate(f.fileno(), 0, RESERVE_BYTES)
        self._sub = self.fanout.subscribe(
            f"recording:{self.spec.name}", maxsize=QUEUE_FRAMES, audio=self.spec.audio
        )
        self._task = asyncio.create_task(self._run(), name=f"recording-{self.spec.name}")

    async def stop(self, reason: str = "Stopped") -> dict:
        """Finalize the file and return the final state. Idempotent."""
        if self.active and self._sub is not None:
            self.progress.state = RecordingState.STOPPING
            self.progress.reason = reason
            self._sub.queue.close()  # the loop drains what is queued, then ends
        if self._task is not None:
            await asyncio.shield(self._task)
        return self.to_json()

    async def suspend(self) -> None:
        """Close the current part cleanly but stay active: the next pod resumes it."""
        if self.active and self._sub is not None:
            self._suspending = True
            self._sub.queue.close()
        if self._task is not None:
            await asyncio.shield(self._task)

    def _new_part(self) -> PartWriter:
        number = len(self.progress.parts) + 1
        ext = FORMATS[self.spec.format].extension
        relative = f"{self.spec.name}/{self.spec.name}-part{number:03d}.{ext}"
        while (self.root / relative).exists():  # never overwrite a part
            number += 1
            relative = f"{self.spec.name}/{self.spec.name}-part{number:03d}.{ext}"
        hint = self.fps_hint() or 30
        fps = min(self.spec.max_fps or 60, max(1, round(hint)))
        self.progress.parts.append(PartInfo(path=relative))
        return PartWriter(
            self.root / relative,
            self.spec.format,
            self.spec.quality,
            audio=self.spec.audio,
            fps=fps,
            max_width=self.spec.max_width,
        )

    def _sync_part(self) -> None:
        if self._writer is None or not self.progress.parts:
            return
        part, stats = self.progress.parts[-1], self._writer.stats
        part.sizeBytes = stats.bytes_written
        part.durationSeconds = round(stats.video_duration, 3)
        self.progress.framesWritten = self._frames_before + stats.frames_written
        self.progress.framesDropped = self._drops_before + (self._sub.dropped if self._sub else 0)
        metrics.BYTES_WRITTEN.labels(recording=self.spec.name).inc(
            max(0, stats.bytes_written - self._bytes_reported)
        )
        self._bytes_reported = stats.bytes_written

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._sub is not None
        self._frames_before = self.progress.framesWritten
        self._drops_before = self.progress.framesDropped
        self._bytes_reported = 0
        self._writer = self._new_part()
        last_persist = loop.time()
        limit = self._duration_limit()
        try:
            async for frame in self._sub:
                is_video = isinstance(frame, VideoFrame)
                write = self._writer.write_video if is_video else self._writer.write_audio
                await loop.run_in_executor(self._executor, write, frame)
                if self.progress.state == RecordingState.STARTING and self._writer.is_open:
                    self.progress.state, self.progress.reason = (
                        RecordingState.RECORDING,
                        "Recording",
                    )
                    self.progress.parts[-1].startedAt = _now()
                    self.persist()
                if is_video:
                    metrics.FRAMES_OUT.labels(handler=f"recording:{self.spec.name}").inc()
                if loop.time() - last_persist > PERSIST_EVERY:
                    self._sync_part()
                    self.persist()
                    last_persist = loop.time()
                if limit is not None and loop.time() >= limit and self.active:
                    self.progress.state, self.progress.reason = (
                        RecordingState.STOPPING,
                        "MaxDurationReached",
                    )
                    self._sub.queue.close()
            await loop.run_in_executor(self._executor, self._writer.close)
            if self._suspending:
                self._end_part()
                self.progress.reason = "Interrupted"
                self.persist()
            else:
                self._finish(RecordingState.COMPLETED, self.progress.reason)
        except (OSError, av.error.FFmpegError) as exc:
            disk_full = getattr(exc, "errno", None) == errno.ENOSPC
            reason = "DiskFull" if disk_full else "WriteFailed"
            message = (
                f"disk full writing {self.progress.parts[-1].path}"
                if disk_full
                else f"write failed: {exc}"
            )
            log.error("recording %s failed: %s", self.spec.name, message)
            await loop.run_in_executor(self._executor, self._writer.abort)
            self._finish(RecordingState.FAILED, reason, message)
        finally:
            self._sub.close()
            self._executor.shutdown(wait=False)

    def _duration_limit(self) -> float | None:
        if self.spec.max_duration is None or self.progress.startedAt is None:
            return None
        started = dt.datetime.fromisoformat(self.progress.startedAt.replace("Z", "+00:00"))
        elapsed = (dt.datetime.now(dt.UTC) - started).total_seconds()
        return asyncio.get_running_loop().time() + max(0.0, self.spec.max_duration - elapsed)

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

    def _finish(self, state: RecordingState, reason: str, error: str | None = None) -> None:
        self._end_part()
        self.progress.state, self.progress.reason, self.progress.error = state, reason, error
        self.progress.stoppedAt = _now()
        with contextlib.suppress(OSError):  # room for the final state, even on a full disk
            (self.dir / RESERVE_FILE).unlink()
        self.persist()
        log.info("recording %s %s (%s)", self.spec.name, state, reason)


class Recordings:
    """All recordings of this pod, by name."""

    def __init__(self, root: Path, fanout: FanOut, fps_hint=lambda: 0.0) -> None:
        self.root = root
        self.fanout = fanout
        self.fps_hint = fps_hint
        self.items: dict[str, Recording] = {}

    def _load_all(self) -> list[Recording]:
        loaded = []
        for state_file in sorted(self.root.glob(f"*/{STATE_FILE}")):
            try:
                loaded.append(Recording.load(state_file, self.root, self.fanout, self.fps_hint))
            except (ValueError, KeyError, TypeError, OSError) as exc:
                log.warning("ignoring unreadable %s: %s", state_file, exc)
        return loaded

    async def resume(self) -> list[str]:
        """Load every recording on the volume; restart those that were running."""
        resumed = []
        for rec in await asyncio.to_thread(self._load_all):  # probing files is blocking I/O
            self.items[rec.spec.name] = rec
            if rec.progress.state == RecordingState.STOPPING:  # the stop was under way
                rec.progress.state, rec.progress.stoppedAt = RecordingState.COMPLETED, _now()
                rec.persist()
            elif rec.active:
                rec.start()
                resumed.append(rec.spec.name)
        return resumed

    def start(self, spec: RecordingSpec) -> tuple[Recording, bool]:
        """Start `spec`; a repeat of the same spec is a no-op. Returns (recording, created)."""
        spec.validate()
        existing = self.items.get(spec.name)
        if existing is not None:
            if existing.spec != spec:
                raise SpecConflict(
                    f"recording {spec.name!r} exists with other settings: {asdict(existing.spec)}"
                )
            return existing, False
        rec = Recording(spec, self.root, self.fanout, self.fps_hint)
        self.items[spec.name] = rec
        rec.start()
        return rec, True

    async def suspend_all(self) -> None:
        """Pod shutdown: finalize every open part; the recordings resume in the next pod."""
        await asyncio.gather(*(r.suspend() for r in self.items.values() if r.active))


class SpecConflict(SpecError):
    """The same name with different settings."""

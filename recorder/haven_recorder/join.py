"""Joining a finished recording's parts into files that play and seek like files.

Parts are written crash-safe (`live` WebM without Cues or Duration; fragmented MP4; MPEG-TS),
which plays but seeks poorly. When a recording completes, its parts are remuxed, without
re-encoding, into one file per run of consecutive parts that share their codec parameters:
WebM with Cues and Duration, MP4 with `moov` before `mdat` (faststart), one MPEG-TS. TS parts
could be joined by concatenating their bytes, but each part's clock starts again at zero: a
player would see the timestamps jump back at each join and mis-seek, so they are remuxed too
(one rising clock, one continuity count). Each part's packets
follow the previous part's end, so the gap between two parts (a pod restart, a stream away
longer than `maxGapSeconds`) is not in the joined file.

A joined file is checked before any part is removed: every packet of every part is in it,
its first picture and a picture past its middle decode, and its duration is the sum of the
parts' within JOIN_TOLERANCE seconds. Anything that fails leaves the parts as they are.

Everything here is blocking: the recording runs it in a worker thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av

from .repair import fsync_dir, fsync_path

log = logging.getLogger("haven.join")

JOIN_TOLERANCE = 1.0  # seconds the joined file's duration may differ from the parts' sum
CONTAINERS = {".webm": "webm", ".mp4": "mp4", ".ts": "mpegts"}
MUX_OPTIONS: dict[str, dict[str, str]] = {
    "mp4": {"movflags": "+faststart"},
    "webm": {},
    "mpegts": {},
}


class JoinError(Exception):
    """The parts could not be joined, or the joined file failed its check."""


@dataclass
class PartLayout:
    """What must be the same for two parts to share one file."""

    streams: tuple

    @classmethod
    def of(cls, container: av.container.InputContainer) -> PartLayout:
        described = []
        for s in container.streams:
            if s.type not in ("video", "audio"):
                continue
            cc = s.codec_context
            fmt = cc.format.name if cc.format else None
            if s.type == "audio":
                shape = (cc.sample_rate, cc.channels, fmt)
            else:
                shape = (cc.width, cc.height, fmt)
            described.append((s.type, cc.name, shape, bytes(cc.extradata or b"")))
        return cls(tuple(described))


@dataclass
class JoinResult:
    path: Path
    parts: list[Path]
    duration: float  # seconds of the joined file (its video)
    parts_duration: float  # the sum of the parts' durations
    size: int
    seconds: float  # remux and check, wall time
    packets: int = 0
    notes: list[str] = field(default_factory=list)


def _end_seconds(container: av.container.InputContainer, video_only: bool) -> tuple[float, dict]:
    """The container's end (the latest pts + duration over its streams, or its video) and
    its packet count per stream index."""
    counts: dict[int, int] = {}
    ends: dict[int, int] = {}  # per stream, in its time base (integers: Fractions are slow)
    wanted = [s for s in container.streams if s.type in ("video", "audio")]
    for packet in container.demux(*wanted):
        if packet.size == 0 or (packet.dts is None and packet.pts is None):
            continue
        index = packet.stream_index
        counts[index] = counts.get(index, 0) + 1
        if packet.pts is not None:
            end = packet.pts + (packet.duration or 0)
            if end > ends.get(index, end - 1):
                ends[index] = end
    seconds = [
        float(ends[s.index] * s.time_base)
        for s in wanted
        if s.index in ends and (s.type == "video" or not video_only)
    ]
    return max(seconds, default=0.0), counts


def video_duration(path: Path) -> float:
    """Seconds of video in a file, from its packets' timestamps."""
    with av.open(str(path)) as container:
        return _end_seconds(container, video_only=True)[0]


def layout(path: Path) -> PartLayout:
    with av.open(str(path)) as container:
        return PartLayout.of(container)


def runs(paths: list[Path]) -> list[list[Path]]:
    """Consecutive parts that can share a file (same streams, codecs, sizes, rates and codec
    parameters); a part that cannot be read is a run of its own (and is left as it is)."""
    groups: list[list[Path]] = []
    last: PartLayout | None = None
    for path in paths:
        try:
            this = layout(path)
        except (av.error.FFmpegError, OSError) as exc:
            log.warning("part %s cannot be read for joining: %s", path, exc)
            groups.append([path])
            last = None
            continue
        if last is not None and this == last:
            groups[-1].append(path)
        else:
            groups.append([path])
        last = this
    return groups


@dataclass
class Remuxed:
    packets: int  # written
    counts: dict[int, int]  # packets per stream index
    parts_duration: float  # the sum of the parts' durations (audio or video, the longer)
    notes: list[str]  # timestamps that had to be nudged


def remux(parts: list[Path], out: Path, container: str) -> Remuxed:
    """Write `parts` one after the other into `out` (blocking), without re-encoding, as
    `container` ("webm" or "mp4")."""
    notes: list[str] = []
    written = 0
    counts: dict[int, int] = {}
    parts_duration = 0.0
    with av.open(str(out), "w", format=container, options=MUX_OPTIONS[container]) as output:
        first = av.open(str(parts[0]))
        outs = {}
        try:
            for s in first.streams:
                if s.type in ("video", "audio"):
                    outs[s.index] = output.add_stream_from_template(s, opaque=True)
        finally:
            first.close()
        last_dts: dict[int, int] = {}
        offset = Fraction(0)  # seconds: where the current part starts in the joined file
        for path in parts:
            with av.open(str(path)) as part:
                streams = [s for s in part.streams if s.index in outs]
                # Per stream: the shift into the joined file and the part's end, in its own
                # time base (integers per packet: Fraction arithmetic per packet is slow).
                shifts = {s.index: round(offset / s.time_base) for s in streams}
                ends: dict[int, int] = {}
                for packet in part.demux(*streams):
                    index = packet.stream_index
                    if packet.size == 0 or (packet.dts is None and packet.pts is None):
                        continue
                    shift = shifts[index]
                    pts = packet.pts + shift if packet.pts is not None else None
                    dts = (packet.dts if packet.dts is not None else packet.pts) + shift
                    # Containers need rising timestamps per stream: a part's first audio packet
                    # (AAC priming) may reach back before the previous part's end.
                    last = last_dts.get(index)
                    if last is not None and dts <= last:
                        notes.append(f"{path.name} stream {index} dts {dts} -> {last + 1}")
                        dts = last + 1
                        if pts is not None and pts < dts:
                            pts = dts
                    last_dts[index] = dts
                    if packet.pts is not None:
                        end = packet.pts + (packet.duration or 0)
                        if end > ends.get(index, end - 1):
                            ends[index] = end
                    packet.pts, packet.dts = pts, dts
                    packet.stream = outs[index]
                    output.mux(packet)
                    written += 1
                    counts[index] = counts.get(index, 0) + 1
                offset += max(
                    (Fraction(ends[s.index]) * s.time_base for s in streams if s.index in ends),
                    default=Fraction(0),
                )
        parts_duration = float(offset)  # each part starts where the one before ends
    return Remuxed(written, counts, parts_duration, notes[:20])


def _decodes_at(path: Path, seconds: float) -> None:
    """Seek to `seconds` and decode a picture there (raises if it cannot)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if seconds > 0:
            container.seek(int(seconds / stream.time_base), stream=stream, backward=True)
        for frame in container.decode(stream):
            frame.to_ndarray(format="gray")
            return
    raise JoinError(f"no picture decodes at {seconds:.1f}s of {path.name}")


def check(out: Path, parts: list[Path], parts_duration: float, counts: dict[int, int]) -> float:
    """Check a joined file: every packet is there, it decodes at its start and past its
    middle, and its duration (audio or video, the longer) is the sum of the parts' within
    JOIN_TOLERANCE. Returns its video's duration.

    A part's audio can outlast its video (an encoder behind drops video first), so the next
    part starts after the longer of the two: compared by video alone, a joined file would
    seem longer than its parts."""
    with av.open(str(out)) as container:
        duration, got = _end_seconds(container, video_only=False)
    if got != counts:
        raise JoinError(f"{out.name} holds packets {got}, the parts {counts}")
    if abs(duration - parts_duration) > JOIN_TOLERANCE:
        raise JoinError(
            f"{out.name} lasts {duration:.2f}s, its parts {parts_duration:.2f}s together"
        )
    duration = video_duration(out)
    _decodes_at(out, 0.0)
    _decodes_at(out, duration * 0.6)
    return duration


def join(parts: list[Path], out: Path) -> JoinResult:
    """Remux `parts` into `out` (replacing it if there), check it, and make it durable; the
    parts are left for the caller to remove. Raises JoinError or OSError (say, a full disk)."""
    began = time.monotonic()
    tmp = out.with_name(f".{out.name}.joining")
    try:
        try:
            done = remux(parts, tmp, CONTAINERS[out.suffix])
            duration = check(tmp, parts, done.parts_duration, done.counts)
        except av.error.FFmpegError as exc:
            raise JoinError(f"{exc}") from exc
        fsync_path(tmp)
        os.replace(tmp, out)
        fsync_dir(out.parent)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    return JoinResult(
        path=out,
        parts=parts,
        duration=duration,
        parts_duration=done.parts_duration,
        size=out.stat().st_size,
        seconds=time.monotonic() - began,
        packets=done.packets,
        notes=done.notes,
    )


@dataclass
class JoinOutcome:
    parts: list  # the recording's files after the join (PartInfo), in order
    joined_from: list[str]  # parts (relative paths) now held by a joined file
    error: str | None = None
    results: list[JoinResult] = field(default_factory=list)


def _number(path: Path) -> str:
    return path.stem.rpartition("-part")[2]


def join_parts(root: Path, name: str, parts: list) -> JoinOutcome:
    """Join a finished recording's parts (PartInfo, paths relative to `root`) (blocking).

    One run of joinable parts (the usual case) becomes `<name>/<name>.<ext>`; with several
    runs (a resolution change between parts, say), each run of two or more parts becomes
    `<name>/<name>-partAAA-BBB.<ext>` and a part alone in its run stays as it is. A run that
    fails to join stays as its parts, and `error` says why."""
    present = [p for p in parts if (root / p.path).is_file()]
    if not present:
        return JoinOutcome(list(parts), [])
    by_path = {root / p.path: p for p in present}
    groups = runs(list(by_path))
    out_parts: list = []
    joined_from: list[str] = []
    errors: list[str] = []
    results: list[JoinResult] = []
    for group in groups:
        infos = [by_path[path] for path in group]
        if len(groups) > 1 and len(group) == 1:
            out_parts.extend(infos)
            continue
        ext = group[0].suffix
        if len(groups) == 1:
            out = root / name / f"{name}{ext}"
        else:
            out = root / name / f"{name}-part{_number(group[0])}-{_number(group[-1])}{ext}"
        try:
            result = join(group, out)
        except Exception as exc:  # JoinError, OSError (a full disk), anything: the parts stay
            log.warning("cannot join %s: %s", ", ".join(p.path for p in infos), exc)
            errors.append(f"{', '.join(p.path for p in infos)}: {exc}"[:300])
            out_parts.extend(infos)
            continue
        log.info(
            "joined %d parts into %s: %.1fs, %d bytes, in %.2fs",
            len(group), out.name, result.duration, result.size, result.seconds,
        )  # fmt: skip
        results.append(result)
        out_parts.append(  # a new file: nothing else (an upload's state, say) carries over
            type(infos[0])(
                path=str(out.relative_to(root)),
                sizeBytes=result.size,
                durationSeconds=round(result.duration, 3),
                startedAt=infos[0].startedAt,
                endedAt=infos[-1].endedAt,
            )
        )
        joined_from.extend(p.path for p in infos)
    missing = [p for p in parts if p not in present]  # listed but not on the volume: kept
    return JoinOutcome([*out_parts, *missing], joined_from, "; ".join(errors) or None, results)


def remove_parts(root: Path, paths: list[str]) -> None:
    """Remove parts a joined file holds (blocking)."""
    dirs = set()
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            (root / path).unlink()
        dirs.add((root / path).parent)
    for directory in dirs:
        with contextlib.suppress(OSError):
            fsync_dir(directory)

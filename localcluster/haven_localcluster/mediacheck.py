"""Decode a recording of the test signal and measure it: codecs, duration, frame counters,
and the A/V offset between each white flash and its tone burst."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

from . import testsignal as ts


@dataclass
class MediaReport:
    path: Path
    video_codec: str | None = None
    audio_codec: str | None = None
    width: int = 0
    height: int = 0
    video_frames: int = 0
    first_video: float | None = None
    last_video: float | None = None
    audio_seconds: float = 0.0
    counters: list[int | None] = field(default_factory=list)
    times: list[float] = field(default_factory=list)  # each video frame's media time
    # Media time of each flash: a white frame, or where the publisher's encoder dropped that
    # frame (libvpx drops some of these costly scene changes), the first frame after it less
    # its distance by counter.
    flashes: list[float] = field(default_factory=list)
    inferred_flashes: int = 0  # how many of `flashes` were inferred
    tones: list[float] = field(default_factory=list)  # media time of each tone onset
    error: str | None = None  # set when decoding stopped early (a truncated file)

    @property
    def duration(self) -> float:
        if self.first_video is None or self.last_video is None:
            return 0.0
        return self.last_video - self.first_video

    def counter_span(self) -> tuple[float, float]:
        """(media time, source time by the publisher's counters) between the first and the
        last frame whose counter reads: equal when the file keeps the source's timing."""
        readable = [(t, c) for t, c in zip(self.times, self.counters, strict=True) if c is not None]
        if len(readable) < 2:
            return 0.0, 0.0
        (t0, c0), (t1, c1) = readable[0], readable[-1]
        return t1 - t0, (c1 - c0) / ts.FPS

    def av_pairs(self, max_pair: float = 0.5) -> list[tuple[float, float]]:
        """(flash time, tone onset minus flash time) for each flash with a tone within
        `max_pair` s."""
        pairs = []
        for flash in self.flashes:
            near = [t - flash for t in self.tones if abs(t - flash) <= max_pair]
            if near:
                pairs.append((flash, min(near, key=abs)))
        return pairs

    def av_offsets(self, max_pair: float = 0.5) -> list[float]:
        """Tone onset minus flash time, for each flash with a tone within `max_pair` s."""
        return [offset for _, offset in self.av_pairs(max_pair)]


# How many frames after a dropped flash frame may stand in for it.
INFER_FRAMES = 3


def _flash_time(t: float, counter: int | None, white: bool) -> tuple[float, bool] | None:
    """The flash time this frame shows, and whether it is inferred; None if it shows none."""
    if counter is None or ts.is_flash(counter):
        return (t, False) if white else None
    since = counter % ts.FLASH_EVERY
    return (t - since / ts.FPS, True) if since <= INFER_FRAMES else None


@dataclass
class SyncSummary:
    """The A/V offsets (tone onset minus flash) of a recording, in milliseconds."""

    count: int
    median: float
    p90_abs: float
    max_abs: float
    slope: float  # least-squares trend, ms per minute
    slope_se: float  # its standard error
    per_minute: list[float]  # median offset of each whole or partial minute

    def __str__(self) -> str:
        return (
            f"{self.count} flashes; offset median {self.median:+.0f} ms, p90 |offset| "
            f"{self.p90_abs:.0f} ms, max {self.max_abs:.0f} ms; trend {self.slope:+.2f} "
            f"± {1.96 * self.slope_se:.2f} ms/min (95%); per minute "
            f"{[round(m) for m in self.per_minute]} ms"
        )


def sync_summary(pairs: list[tuple[float, float]]) -> SyncSummary:
    """Summarize (media time, offset) pairs, in seconds, as from `MediaReport.av_pairs`."""
    times, offsets = (np.array(v, dtype=float) for v in zip(*pairs, strict=True))
    ms = offsets * 1000
    slope, intercept = np.polyfit(times, ms, 1)
    residuals = ms - (slope * times + intercept)
    spread = np.sum((times - times.mean()) ** 2)
    se = float(np.sqrt(np.sum(residuals**2) / max(1, len(ms) - 2) / spread)) if spread else 0.0
    starts = np.arange(times[0], times[-1], 60.0)
    return SyncSummary(
        count=len(ms),
        median=float(np.median(ms)),
        p90_abs=float(np.percentile(np.abs(ms), 90)),
        max_abs=float(np.abs(ms).max()),
        slope=float(slope) * 60,
        slope_se=se * 60,
        per_minute=[float(np.median(ms[(times >= t) & (times < t + 60)])) for t in starts],
    )


def analyze(path: Path) -> MediaReport:
    report = MediaReport(Path(path))
    samples: list[np.ndarray] = []
    flashes: list[tuple[float, bool]] = []  # (time, inferred), the first of each flash
    audio_start: float | None = None
    try:
        with av.open(str(path)) as container:
            vstream = container.streams.video[0] if container.streams.video else None
            astream = container.streams.audio[0] if container.streams.audio else None
            if vstream:
                report.video_codec = vstream.codec_context.name
            if astream:
                report.audio_codec = astream.codec_context.name
            resampler = av.AudioResampler(format="s16", layout="mono", rate=ts.SAMPLE_RATE)
            streams = [s for s in (vstream, astream) if s is not None]
            for frame in container.decode(*streams):
                if isinstance(frame, av.VideoFrame):
                    t = float(frame.time or 0.0)
                    luma = frame.to_ndarray(format="gray")
                    report.width, report.height = frame.width, frame.height
                    report.video_frames += 1
                    report.first_video = t if report.first_video is None else report.first_video
                    report.last_video = t
                    counter = ts.decode_counter(luma)
                    report.counters.append(counter)
                    report.times.append(t)
                    flash = _flash_time(t, counter, ts.frame_is_flash(luma))
                    # Keep the first frame of each flash (a repeated picture, or the frames
                    # after a seen flash, would count it again).
                    if flash and (not flashes or flash[0] - flashes[-1][0] > 0.5):
                        flashes.append(flash)
                else:
                    for out in resampler.resample(frame):
                        if audio_start is None:
                            audio_start = float(out.time or 0.0)
                        samples.append(out.to_ndarray().reshape(-1))
    except (av.error.FFmpegError, OSError) as exc:
        report.error = repr(exc)
    if samples:
        pcm = np.concatenate(samples)
        report.audio_seconds = len(pcm) / ts.SAMPLE_RATE
        report.tones = [audio_start + t for t in ts.tone_onsets(pcm)]
    report.flashes = [t for t, _ in flashes]
    report.inferred_flashes = sum(inferred for _, inferred in flashes)
    return report

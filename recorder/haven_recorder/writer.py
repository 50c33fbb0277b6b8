"""Encoding one recording part with PyAV: video and audio into a crash-safe container.

This module is synchronous and owns its PyAV objects; the recording handler calls it from one
worker thread per recording, never from the event loop.

Timestamps: frames carry `pts` on the pod's monotonic clock, shared by audio and video. The
part's origin is the first frame's pts. Video keeps each frame's own timestamp (in
milliseconds, or 1/90000 s in MP4), thinned to at most `fps` frames a second; a gap (the
stream was offline) stays a gap in the PTS, which players show as the last picture. Audio is
placed by its pts too: a gap is filled with silence and an overlap is trimmed, so audio never
drifts from video.

Crash safety: WebM clusters and MP4 fragments are flushed as they are written (keyframes
every 2 s at most), so a killed writer leaves a file that plays up to its last fragment.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from . import metrics
from .frames import AudioFrame, VideoFrame
from .repair import trim_to_whole_fragments

os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1: errors only, not its banner per encoder

# Audio is written back to back while it stays near its timestamps, and padded with silence or
# trimmed to them when it strays: at once past AUDIO_SLACK, or once it has stayed more than
# AUDIO_SETTLE off for AUDIO_SETTLE_SECONDS. Without the second rule a clock step just past the
# slack one way and back just inside it the other left the audio up to 20 ms off for good.
AUDIO_SLACK = 0.02  # seconds
AUDIO_SETTLE = 0.003  # seconds
AUDIO_SETTLE_SECONDS = 1.0
KEYFRAME_SECONDS = 2


@dataclass(frozen=True)
class Format:
    name: str
    container: str
    extension: str
    video_codec: str
    audio_codec: str
    audio_format: str  # the sample format the audio encoder takes


FORMATS: dict[str, Format] = {
    "av1": Format("av1", "webm", "webm", "libsvtav1", "libopus", "s16"),
    "h264": Format("h264", "mp4", "mp4", "libx264", "aac", "fltp"),
    "vp9": Format("vp9", "webm", "webm", "libvpx-vp9", "libopus", "s16"),
}

# Video bitrate (kbit/s at 1280x720, scaled by pixel count) and encoder speed settings.
QUALITY: dict[str, dict[str, dict]] = {
    "av1": {
        "low": {"kbps": 800, "options": {"preset": "12"}},
        "medium": {"kbps": 1500, "options": {"preset": "12"}},
        "high": {"kbps": 3000, "options": {"preset": "11"}},
    },
    "h264": {
        "low": {"kbps": 1200, "options": {"preset": "ultrafast"}},
        "medium": {"kbps": 2500, "options": {"preset": "superfast"}},
        "high": {"kbps": 5000, "options": {"preset": "veryfast"}},
    },
    "vp9": {
        "low": {"kbps": 800, "options": {"cpu-used": "8"}},
        "medium": {"kbps": 1500, "options": {"cpu-used": "8"}},
        "high": {"kbps": 3000, "options": {"cpu-used": "7"}},
    },
}
AUDIO_KBPS = {"low": 64, "medium": 96, "high": 128}


def quality_table() -> list[dict]:
    """The published quality table (GET /formats and the docs)."""
    return [
        {
            "format": fmt,
            "quality": quality,
            "videoKbpsAt720p": q["kbps"],
            "audioKbps": AUDIO_KBPS[quality],
            "encoderOptions": q["options"],
            "keyframeIntervalSeconds": KEYFRAME_SECONDS,
            "videoCodec": FORMATS[fmt].video_codec,
            "audioCodec": FORMATS[fmt].audio_codec,
            "container": FORMATS[fmt].container,
        }
        for fmt, qualities in QUALITY.items()
        for quality, q in qualities.items()
    ]


def _even(n: float) -> int:
    return max(2, int(n) - int(n) % 2)


def output_size(width: int, height: int, max_width: int | None) -> tuple[int, int]:
    if max_width and width > max_width:
        return _even(max_width), _even(height * max_width / width)
    return _even(width), _even(height)


def _video_options(fmt: str, quality: str, fps: int, kbps: int) -> dict[str, str]:
    gop = str(fps * KEYFRAME_SECONDS)
    options = dict(QUALITY[fmt][quality]["options"])
    if fmt == "av1":
        # Realtime mode needs CBR; keyframes at a fixed interval bound what a crash loses.
        options["svtav1-params"] = f"rtc=1:rc=2:tbr={kbps}:keyint={gop}"
    elif fmt == "h264":
        options.update({"tune": "zerolatency", "g": gop, "bf": "0"})
    elif fmt == "vp9":
        options.update(
            {
                "deadline": "realtime",
                "row-mt": "1",
                "lag-in-frames": "0",
                "g": gop,
                "error-resilient": "1",
            }
        )
    return options


def _container_options(fmt: Format) -> dict[str, str]:
    if fmt.container == "mp4":
        return {
            "movflags": "frag_keyframe+empty_moov+default_base_moof",
            "frag_duration": "1000000",
            "flush_packets": "1",
        }
    return {"live": "1", "cluster_time_limit": "1000", "flush_packets": "1"}


def probe_duration(path: Path) -> float:
    """Seconds of video in a (possibly truncated) file, read from its packets' timestamps."""
    end = 0.0
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            for packet in container.demux(stream):
                if packet.pts is not None and stream.time_base is not None:
                    end = max(end, float((packet.pts + (packet.duration or 0)) * stream.time_base))
    except (av.error.FFmpegError, OSError, IndexError):
        pass
    return end


@dataclass
class PartStats:
    path: Path
    bytes_written: int = 0
    frames_written: int = 0
    audio_samples: int = 0
    video_duration: float = 0.0


class PartWriter:
    """One file: opened on the first video frame, closed (finalized) by `close`."""

    def __init__(
        self,
        path: Path,
        fmt: str,
        quality: str,
        *,
        audio: bool,
        fps: int,
        max_width: int | None,
        sample_rate: int = 48000,
        channels: int = 1,
    ) -> None:
        self.format = FORMATS[fmt]
        self.quality = quality
        self.audio = audio
        self.fps = fps
        self.max_width = max_width
        self.sample_rate = sample_rate
        self.channels = channels
        self.stats = PartStats(path)
        self.origin: float | None = None
        self._container: av.container.OutputContainer | None = None
        self._video: av.VideoStream | None = None
        self._audio: av.AudioStream | None = None
        self._resampler: av.AudioResampler | None = None
        self._last_pts = -1  # in video time-base units
        self._time_base = Fraction(1, 90000 if self.format.container == "mp4" else 1000)
        self._next_sample = 0  # audio sample position (from origin) expected next
        self._audio_off_since: float | None = None  # pts at which the audio strayed
        self._audio_trimming = False  # a trim longer than the frame goes on into the next
        self._pending_audio: list[AudioFrame] = []  # audio that came before the first video

    @property
    def is_open(self) -> bool:
        return self._container is not None

    # -- opening ----------------------------------------------------------------------------

    def _open(self, first: VideoFrame) -> None:
        width, height = output_size(first.width, first.height, self.max_width)
        kbps = round(
            QUALITY[self.format.name][self.quality]["kbps"] * width * height / (1280 * 720)
        )
        self.stats.path.parent.mkdir(parents=True, exist_ok=True)
        container = av.open(
            str(self.stats.path),
            "w",
            format=self.format.container,
            options=_container_options(self.format),
        )
        try:
            video = container.add_stream(
                self.format.video_codec,
                rate=self.fps,
                options=_video_options(self.format.name, self.quality, self.fps, kbps),
            )
            video.width, video.height, video.pix_fmt = width, height, "yuv420p"
            video.bit_rate = kbps * 1000
            video.time_base = self._time_base
            video.codec_context.time_base = self._time_base
            video.codec_context.framerate = Fraction(self.fps)  # the rate control's frame budget
            if self.audio:
                audio = container.add_stream(self.format.audio_codec, rate=self.sample_rate)
                audio.bit_rate = AUDIO_KBPS[self.quality] * 1000
                audio.layout = "mono" if self.channels == 1 else "stereo"
                audio.time_base = Fraction(1, self.sample_rate)
                self._audio = audio
            container.start_encoding()
        except BaseException:
            container.close()
            raise
        self._container, self._video = container, video
        if self._audio is not None:
            self._resampler = av.AudioResampler(
                format=self._audio.codec_context.format.name,
                layout=self._audio.layout.name,
                rate=self.sample_rate,
                frame_size=self._audio.codec_context.frame_size or None,
            )

    # -- writing ----------------------------------------------------------------------------

    def write_video(self, frame: VideoFrame) -> None:
        if self._container is None:
            if self.origin is None:
                self.origin = frame.pts
            self._open(frame)
            for pending in self._pending_audio:
                self.write_audio(pending)
            self._pending_audio.clear()
        assert self._video is not None and self.origin is not None
        pts = round((frame.pts - self.origin) / self._time_base)
        # Thin to `fps` (a little slack for jitter); never go back in time.
        if self._last_pts >= 0 and pts - self._last_pts < 0.8 / (self.fps * self._time_base):
            return
        started = time.perf_counter()
        picture = frame.to_av()
        width, height = self._video.width, self._video.height
        if (picture.width, picture.height) != (width, height):
            picture = picture.reformat(width=width, height=height, interpolation="AREA")
        picture.pts, picture.time_base = pts, self._time_base
        for packet in self._video.encode(picture):
            self._mux(packet)
        self._last_pts = pts
        self.stats.video_duration = float(pts * self._time_base) + 1 / self.fps
        self.stats.frames_written += 1
        metrics.ENCODE_SECONDS.labels(encoder=self.format.name).observe(
            time.perf_counter() - started
        )

    def write_audio(self, frame: AudioFrame) -> None:
        if not self.audio:
            return
        if self.origin is None:
            self.origin = frame.pts
        if self._container is None:
            self._pending_audio.append(frame)
            return
        assert self._resampler is not None and self._audio is not None
        position = round((frame.pts - self.origin) * self.sample_rate)
        pcm = np.frombuffer(frame.data, np.int16).reshape(-1, frame.channels)
        if frame.channels != self.channels:
            pcm = (
                pcm.mean(axis=1, keepdims=True).astype(np.int16)
                if self.channels == 1
                else np.repeat(pcm, 2, 1)
            )
        off = position - self._next_sample
        if self._audio_strayed(off, frame.pts):
            if off > 0:  # a gap: fill it with silence
                pcm = np.concatenate([np.zeros((off, self.channels), np.int16), pcm])
            else:  # an overlap: trim what was written already
                pcm = pcm[-off:]
        self._audio_trimming = len(pcm) == 0
        if len(pcm) == 0:
            return
        source = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(pcm.reshape(1, -1)),
            format="s16",
            layout="mono" if self.channels == 1 else "stereo",
        )
        source.sample_rate = self.sample_rate
        source.pts = self._next_sample
        source.time_base = Fraction(1, self.sample_rate)
        self._next_sample += len(pcm)
        self.stats.audio_samples += len(pcm)
        for resampled in self._resampler.resample(source):
            for packet in self._audio.encode(resampled):
                self._mux(packet)

    def _audio_strayed(self, off: int, pts: float) -> bool:
        """Whether audio `off` samples from where it is written next must be moved there."""
        if abs(off) <= AUDIO_SETTLE * self.sample_rate:
            self._audio_off_since = None
            return False
        if abs(off) > AUDIO_SLACK * self.sample_rate or self._audio_trimming:
            self._audio_off_since = None
            return True
        if self._audio_off_since is None:
            self._audio_off_since = pts
        if pts - self._audio_off_since < AUDIO_SETTLE_SECONDS:
            return False
        self._audio_off_since = None
        return True

    def _mux(self, packet: av.Packet) -> None:
        assert self._container is not None
        self._container.mux(packet)
        self.stats.bytes_written = self.stats.path.stat().st_size

    # -- closing ----------------------------------------------------------------------------

    def close(self) -> PartStats:
        """Flush the encoders and finalize the container."""
        container, self._container = self._container, None
        if container is None:
            return self.stats
        try:
            if self._audio is not None and self._resampler is not None:
                for resampled in self._resampler.resample(None):
                    for packet in self._audio.encode(resampled):
                        container.mux(packet)
                for packet in self._audio.encode(None):
                    container.mux(packet)
            if self._video is not None:
                for packet in self._video.encode(None):
                    container.mux(packet)
        finally:
            container.close()
        self.stats.bytes_written = self.stats.path.stat().st_size
        return self.stats

    def abort(self) -> None:
        """Close without flushing (after a write error, such as a full disk), then cut off the
        fragment the error left half-written so that the part still plays."""
        container, self._container = self._container, None
        if container is not None:
            with contextlib.suppress(OSError, av.error.FFmpegError):
                container.close()
        with contextlib.suppress(OSError):
            trim_to_whole_fragments(self.stats.path)
            self.stats.bytes_written = self.stats.path.stat().st_size

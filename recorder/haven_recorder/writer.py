"""Encoding one recording part with PyAV: video and audio into a crash-safe container.

This module is synchronous and owns its PyAV objects; the recording handler calls it from one
worker thread per recording, never from the event loop.

Timestamps: frames carry `pts` on the pod's monotonic clock, shared by audio and video. The
part's origin is its first frame's pts. Video keeps each frame's own timestamp (in
milliseconds in WebM, 1/90000 s in MP4 and TS): the file has the source's real, variable
frame rate, thinned only to a requested `max_fps`; keyframes come every 2 s of media time.
Audio is placed by its pts too: a short gap is filled with silence and an overlap is trimmed,
so audio never drifts from video. A gap longer than `max_gap`, or a picture of another shape, is for
the caller to end the part on (`split_reason`), never a block of silence.

Pictures of any size and rotation are turned upright, cropped to even sizes (at most one
row and column), scaled to `max_width` and padded up to the encoder's minimum (`fit`).

Containers: each format (codec) has its default container (FORMATS); H.264 may also be
written as MPEG-TS (`container: mpegts`, CONTAINERS), with in-band SPS/PPS at each keyframe
and AAC in ADTS, so any piece of the file from a keyframe on plays by itself.

Crash safety: WebM clusters, MP4 fragments and TS packets are flushed as they are written
(keyframes every 2 s at most), so a killed writer leaves a file that plays up to its last
fragment (MP4: trimmed to it) or its last whole 188-byte packet (TS); a closed part is
fsynced before it counts as finished.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.frame import PictureType

from . import metrics
from .frames import AudioFrame, VideoFrame, remix
from .repair import fsync_path, trim_unfinished

os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1: errors only, not its banner per encoder

# Audio is written back to back while it stays near its timestamps, and padded with silence or
# trimmed to them when it strays: at once past AUDIO_SLACK, or once it has stayed more than
# AUDIO_SETTLE off for AUDIO_SETTLE_SECONDS. Without the second rule a clock step just past the
# slack one way and back just inside it the other left the audio up to 20 ms off for good.
AUDIO_SLACK = 0.02  # seconds
AUDIO_SETTLE = 0.003  # seconds
AUDIO_SETTLE_SECONDS = 1.0
KEYFRAME_SECONDS = 2
NOMINAL_FPS = 30  # the rate control's frame budget when no maxFps is asked for
MAX_SOURCE_FPS = 60
PENDING_AUDIO_SECONDS = 5.0  # audio kept while waiting for the part's first picture
SILENCE_CHUNK_SECONDS = 1.0  # silence is encoded in pieces of at most this
ASPECT_TOLERANCE = 0.01  # a picture whose aspect ratio moves further starts a new part
MAX_GAP_SECONDS = 10.0


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
# Containers a format may be written in besides its default one, by (format, container).
CONTAINERS: dict[tuple[str, str], Format] = {
    ("h264", "mpegts"): Format("h264", "mpegts", "ts", "libx264", "aac", "fltp"),
}


def resolve(fmt: str, container: str | None = None) -> Format:
    """Format `fmt` in `container` (None: its default). KeyError if it is not written so."""
    default = FORMATS[fmt]
    if container is None or container == default.container:
        return default
    return CONTAINERS[(fmt, container)]


def containers(fmt: str) -> list[str]:
    """The containers format `fmt` is written in, its default first."""
    return [FORMATS[fmt].container, *(c for f, c in CONTAINERS if f == fmt)]


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
            "containers": containers(fmt),
        }
        for fmt, qualities in QUALITY.items()
        for quality, q in qualities.items()
    ]


# The smallest picture side each encoder takes (SVT-AV1 refuses under 64 pixels).
MIN_SIDE = {"av1": 64, "h264": 2, "vp9": 2}


def _even(n: float) -> int:
    return max(2, int(n) - int(n) % 2)


@dataclass(frozen=True)
class Geometry:
    """The picture's size in the file (`width` x `height`, even) and the encoded size, which is
    that padded up to the encoder's minimum."""

    width: int
    height: int
    out_width: int
    out_height: int


def plan_geometry(width: int, height: int, max_width: int | None, min_side: int = 2) -> Geometry:
    if max_width and width > max_width:
        w, h = _even(max_width), _even(height * max_width / width)
    else:
        w, h = _even(width), _even(height)
    return Geometry(w, h, max(w, min_side), max(h, min_side))


def output_size(width: int, height: int, max_width: int | None) -> tuple[int, int]:
    g = plan_geometry(width, height, max_width)
    return g.width, g.height


def same_shape(a: tuple[int, int], b: tuple[int, int]) -> bool:
    """Whether two picture sizes have the same aspect ratio (within ASPECT_TOLERANCE, or the
    one row or column an odd size loses)."""
    (aw, ah), (bw, bh) = a, b
    ra, rb = aw / ah, bw / bh
    slack = max(ASPECT_TOLERANCE, 1.5 / min(ah, bh), 1.5 * ra / min(aw, bw))
    return abs(ra - rb) <= slack * ra


def fit(frame: VideoFrame, g: Geometry) -> VideoFrame:
    """An upright picture as the encoder takes it: an odd row or column cropped, scaled to
    the part's size, and padded up to the encoder's minimum."""
    w, h = frame.width, frame.height
    if 0 <= w - g.width <= 1 and 0 <= h - g.height <= 1:
        frame = frame.cropped(g.width, g.height)
    else:
        frame = frame.scaled(g.width, g.height)
    return frame.padded(g.out_width, g.out_height)


def _video_options(fmt: str, quality: str, fps: int, kbps: int) -> dict[str, str]:
    # The encoders' own keyframe interval is a backstop: write_video forces one every
    # KEYFRAME_SECONDS of media time, whatever the frame rate.
    gop = str(MAX_SOURCE_FPS * KEYFRAME_SECONDS)
    options = dict(QUALITY[fmt][quality]["options"])
    if fmt == "av1":
        # Realtime mode needs CBR.
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
    if fmt.container == "mpegts":
        return {"flush_packets": "1"}
    if fmt.container == "mp4":
        return {
            "movflags": "frag_keyframe+delay_moov+default_base_moof",
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
        container: str | None = None,
        max_width: int | None,
        max_fps: int | None = None,
        max_gap: float = MAX_GAP_SECONDS,
        sample_rate: int = 48000,
        channels: int = 1,
    ) -> None:
        self.format = resolve(fmt, container)
        self.quality = quality
        self.audio = audio
        self.max_width = max_width
        self.max_fps = max_fps
        self.max_gap = max_gap
        self.sample_rate = sample_rate
        self.channels = channels  # taken from the first audio if any came before the picture
        self.stats = PartStats(path)
        self.origin: float | None = None
        self.source_size: tuple[int, int] | None = None  # the first upright picture's size
        self.geometry: Geometry | None = None
        self._container: av.container.OutputContainer | None = None
        self._video: av.VideoStream | None = None
        self._audio: av.AudioStream | None = None
        self._resampler: av.AudioResampler | None = None
        self._input_resamplers: dict[int, av.AudioResampler] = {}  # by source sample rate
        self._last_pts = -1  # in video time-base units
        self._last_key: float | None = None  # media seconds of the last keyframe
        self._last_seen: dict[bool, float] = {}  # is_video -> pts of the last frame seen
        self._time_base = Fraction(1, 1000 if self.format.container == "webm" else 90000)
        self._next_sample = 0  # audio sample position (from origin) expected next
        self._audio_off_since: float | None = None  # pts at which the audio strayed
        self._audio_trimming = False  # a trim longer than the frame goes on into the next
        self._pending_audio: deque[AudioFrame] = deque()  # audio before the first picture

    @property
    def is_open(self) -> bool:
        return self._container is not None

    def split_reason(self, frame: VideoFrame | AudioFrame) -> str | None:
        """Why `frame` belongs in a new part, if it does: the stream was away longer than
        `max_gap` (`Gap`), or the picture changed its aspect ratio (`ShapeChanged`)."""
        if not self.is_open:
            return None
        is_video = isinstance(frame, VideoFrame)
        last = self._last_seen.get(is_video)
        if last is not None and frame.pts - last > self.max_gap:
            return "Gap"
        if is_video and self.source_size and not same_shape(self.source_size, frame.upright_size):
            return "ShapeChanged"
        return None

    # -- opening ----------------------------------------------------------------------------

    def _open(self, first: VideoFrame) -> None:
        self.source_size = (first.width, first.height)
        g = plan_geometry(first.width, first.height, self.max_width, MIN_SIDE[self.format.name])
        if self._pending_audio:
            self.channels = self._pending_audio[-1].channels
        fps = self.max_fps or NOMINAL_FPS
        kbps = round(
            QUALITY[self.format.name][self.quality]["kbps"] * g.width * g.height / (1280 * 720)
        )
        kbps = max(kbps, 50)
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
                rate=fps,
                options=_video_options(self.format.name, self.quality, fps, kbps),
            )
            video.width, video.height, video.pix_fmt = g.out_width, g.out_height, "yuv420p"
            video.bit_rate = kbps * 1000
            video.time_base = self._time_base
            video.codec_context.time_base = self._time_base
            video.codec_context.framerate = Fraction(fps)  # the rate control's frame budget
            if self.audio:
                audio = container.add_stream(self.format.audio_codec, rate=self.sample_rate)
                audio.bit_rate = AUDIO_KBPS[self.quality] * 1000
                audio.layout = _layout(self.channels)
                audio.time_base = Fraction(1, self.sample_rate)
                self._audio = audio
            container.start_encoding()
        except BaseException:
            container.close()
            raise
        self._container, self._video, self.geometry = container, video, g
        if self._audio is not None:
            self._resampler = av.AudioResampler(
                format=self._audio.codec_context.format.name,
                layout=self._audio.layout.name,
                rate=self.sample_rate,
                frame_size=self._audio.codec_context.frame_size or None,
            )

    # -- writing ----------------------------------------------------------------------------

    def write_video(self, frame: VideoFrame) -> None:
        frame = frame.upright()
        if self._container is None:
            pending = self._pending_audio
            self.origin = min(frame.pts, pending[0].pts) if pending else frame.pts
            self._open(frame)
            pending, self._pending_audio = self._pending_audio, deque()
            for audio in pending:
                self.write_audio(audio)
        assert self._video is not None and self.origin is not None and self.geometry
        self._last_seen[True] = frame.pts
        pts = round((frame.pts - self.origin) / self._time_base)
        if pts <= self._last_pts:  # never go back in time, nor repeat a timestamp
            return
        if (
            self.max_fps
            and self._last_pts >= 0
            and pts - self._last_pts < 0.8 / (self.max_fps * self._time_base)
        ):
            return  # thinned to maxFps (a little slack for jitter)
        started = time.perf_counter()
        picture = fit(frame, self.geometry).to_av()
        seconds = float(pts * self._time_base)
        if self._last_key is None or seconds - self._last_key >= KEYFRAME_SECONDS:
            picture.pict_type = PictureType.I
        picture.pts, picture.time_base = pts, self._time_base
        for packet in self._video.encode(picture):
            if packet.is_keyframe and packet.pts is not None:
                self._last_key = float(packet.pts * packet.time_base)
            self._mux(packet)
        if self._last_key is None:
            self._last_key = seconds
        self._last_pts = pts
        self.stats.video_duration = seconds + 1 / NOMINAL_FPS
        self.stats.frames_written += 1
        metrics.ENCODE_SECONDS.labels(encoder=self.format.name).observe(
            time.perf_counter() - started
        )

    def write_audio(self, frame: AudioFrame) -> None:
        if not self.audio:
            return
        if self._container is None:  # kept, up to a few seconds, for the first picture
            pending = self._pending_audio
            pending.append(frame)
            while pending[-1].pts - pending[0].pts > PENDING_AUDIO_SECONDS:
                pending.popleft()
            return
        assert self._resampler is not None and self._audio is not None
        assert self.origin is not None
        self._last_seen[False] = frame.pts
        pcm = remix(frame.pcm(), self.channels)
        if frame.sample_rate != self.sample_rate:
            pcm = self._to_rate(pcm, frame.sample_rate)
        position = round((frame.pts - self.origin) * self.sample_rate)
        off = position - self._next_sample
        if self._audio_strayed(off, frame.pts):
            if off > 0:  # a gap (at most max_gap long): fill it with silence, a piece at a time
                chunk = int(SILENCE_CHUNK_SECONDS * self.sample_rate)
                while off > 0:
                    self._encode_pcm(np.zeros((min(off, chunk), self.channels), np.int16))
                    off -= chunk
            else:  # an overlap: trim what was written already
                pcm = pcm[-off:]
        self._audio_trimming = len(pcm) == 0
        if len(pcm):
            self._encode_pcm(pcm)

    def _to_rate(self, pcm: np.ndarray, rate: int) -> np.ndarray:
        """Samples at another rate (44.1 kHz, say) resampled to the part's."""
        resampler = self._input_resamplers.get(rate)
        if resampler is None:
            resampler = av.AudioResampler("s16", _layout(self.channels), self.sample_rate)
            self._input_resamplers[rate] = resampler
        source = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(pcm.reshape(1, -1)), format="s16", layout=_layout(self.channels)
        )
        source.sample_rate = rate
        out = [f.to_ndarray().reshape(-1, self.channels) for f in resampler.resample(source)]
        return np.concatenate(out) if out else np.zeros((0, self.channels), np.int16)

    def _encode_pcm(self, pcm: np.ndarray) -> None:
        assert self._resampler is not None and self._audio is not None
        source = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(pcm.reshape(1, -1)), format="s16", layout=_layout(self.channels)
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
        """Flush the encoders, finalize the container and make the file durable."""
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
        trim_unfinished(self.stats.path)  # a no-op for a cleanly closed part
        fsync_path(self.stats.path)
        self.stats.bytes_written = self.stats.path.stat().st_size
        return self.stats

    def abort(self) -> None:
        """Close without flushing (after a write error, such as a full disk), then cut off the
        fragment (or TS packet) the error left half-written so that the part still plays."""
        container, self._container = self._container, None
        if container is not None:
            with contextlib.suppress(OSError, av.error.FFmpegError):
                container.close()
        with contextlib.suppress(OSError):
            trim_unfinished(self.stats.path)
            self.stats.bytes_written = self.stats.path.stat().st_size
            fsync_path(self.stats.path)


def _layout(channels: int) -> str:
    return "mono" if channels == 1 else "stereo"

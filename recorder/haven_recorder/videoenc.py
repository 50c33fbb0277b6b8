"""The shared viewer encoder: H.264 video and Opus audio, encoded once for every viewer in
`mode=video` (and for HLS, see hls.py). These classes run in the encoder's worker thread,
never on the event loop; `videohub.py` drives them.

H.264 because Chromium decodes it with WebCodecs and with MSE, and HLS players expect it; the
encoder is libx264 with `tune=zerolatency` (no B-frames, no lookahead: a picture comes out as
soon as it goes in), Constrained Baseline (`preset=ultrafast`, no CABAC), Annex B with the SPS
and PPS in front of every IDR picture, so any keyframe starts a decoder. Keyframes come when
the caller forces them (every 2 s and on demand); x264's own GOP is only a backstop.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np
from av.video.frame import PictureType

from . import metrics
from .frames import AudioFrame, VideoFrame, remix

TIME_BASE = Fraction(1, 1000)  # video pts in milliseconds
OPUS_RATE = 48000
OPUS_FRAME = 1920  # 40 ms: 25 messages a second per viewer, as the JPEG mode's audio
VIDEO_KBPS = 1200  # the VBV cap at 1280 px wide, scaled by area below it
OPUS_KBPS = 48


@dataclass(frozen=True, slots=True)
class Encoded:
    """One encoded access unit (H.264, Annex B) or Opus packet."""

    data: bytes
    pts: float  # the capture time on the pod's clock, seconds
    video: bool
    keyframe: bool = False
    width: int = 0
    height: int = 0
    duration: float = 0.0  # audio: seconds of sound in the packet


def even_size(width: int, height: int, max_width: int) -> tuple[int, int]:
    """The encoded size: at most `max_width` wide, the aspect kept, both sides even (H.264's
    4:2:0 needs them so), at least 16 x 16."""
    if width > max_width:
        height, width = round(height * max_width / width), max_width
    return max(16, width - width % 2), max(16, height - height % 2)


def codec_string(access_unit: bytes) -> str | None:
    """`avc1.PPCCLL` from the SPS of an Annex B access unit (the profile, constraint flags and
    level a WebCodecs decoder is configured with); None if it holds no SPS."""
    i = 0
    while True:
        i = access_unit.find(b"\x00\x00\x01", i)
        if i < 0 or i + 6 > len(access_unit):
            return None
        if access_unit[i + 3] & 0x1F == 7:
            p, c, lvl = access_unit[i + 4 : i + 7]
            return f"avc1.{p:02X}{c:02X}{lvl:02X}"
        i += 3


class H264Encoder:
    """libx264 at `max_width` and `fps`, opened on the first picture and again when its size
    changes. Thread-confined: only the encoder thread calls it."""

    def __init__(self, max_width: int, fps: float) -> None:
        self.max_width = max_width
        self.fps = fps
        self._ctx: av.VideoCodecContext | None = None
        self._size: tuple[int, int] | None = None
        self._last_pts = -1
        self.origin: float | None = None

    @property
    def is_open(self) -> bool:
        return self._ctx is not None

    def _open(self, width: int, height: int) -> None:
        ctx = av.CodecContext.create("libx264", "w")
        ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
        ctx.time_base = TIME_BASE
        ctx.framerate = Fraction(round(self.fps * 1000), 1000)
        kbps = max(200, round(VIDEO_KBPS * width * height / (1280 * 720)))
        ctx.options = {
            "preset": "ultrafast",
            "tune": "zerolatency",
            "crf": "21",
            "maxrate": f"{kbps}k",
            "bufsize": f"{kbps}k",  # a second's worth: bounded bursts
            "g": str(max(1, round(self.fps * 4))),  # backstop; the caller forces every 2 s
            "bf": "0",
            "forced-idr": "1",
            "x264-params": "scenecut=0",  # keyframes only when asked: HLS segments stay even
            "threads": "1",  # the encoder thread is the one place it runs
        }
        ctx.open()
        self._ctx, self._size = ctx, (width, height)

    def encode(self, frame: VideoFrame, keyframe: bool) -> list[Encoded]:
        frame = frame.upright()
        width, height = even_size(frame.width, frame.height, self.max_width)
        if self._size != (width, height):
            self.close()
            self._open(width, height)
            keyframe = True
        assert self._ctx is not None
        if self.origin is None:
            self.origin = frame.pts
        pts = round((frame.pts - self.origin) * 1000)
        if pts <= self._last_pts:
            return []  # never back in time, nor the same timestamp twice
        started = time.perf_counter()
        if frame.width > self.max_width:
            frame = frame.scaled(width, height)
        elif (frame.width, frame.height) != (width, height):  # an odd side, or a tiny picture
            if frame.width < width or frame.height < height:
                frame = frame.padded(max(width, frame.width), max(height, frame.height))
            frame = frame.cropped(width, height)
        picture = frame.to_av()
        picture.pts, picture.time_base = pts, TIME_BASE
        if keyframe:
            picture.pict_type = PictureType.I
        self._last_pts = pts
        out = [
            Encoded(bytes(p), self.origin + p.pts / 1000, True, p.is_keyframe, width, height)
            for p in self._ctx.encode(picture)
        ]
        metrics.ENCODE_SECONDS.labels(encoder="viewer-h264").observe(time.perf_counter() - started)
        return out

    def close(self) -> None:
        self._ctx, self._size = None, None  # PyAV frees it; zerolatency holds no frames back


class OpusEncoder:
    """libopus, 40 ms packets at 48 kHz in `channels`; any input rate. Thread-confined."""

    def __init__(self, channels: int) -> None:
        self.channels = channels
        self.layout = "mono" if channels == 1 else "stereo"
        self._ctx: av.AudioCodecContext | None = None
        self._resamplers: dict[int, av.AudioResampler] = {}
        self._next: int | None = None  # the next sample's position, in 48 kHz samples
        self.origin: float | None = None

    @property
    def is_open(self) -> bool:
        return self._ctx is not None

    def _open(self) -> None:
        ctx = av.CodecContext.create("libopus", "w")
        ctx.sample_rate, ctx.layout, ctx.format = OPUS_RATE, self.layout, "s16"
        ctx.bit_rate = OPUS_KBPS * 1000 * self.channels
        ctx.time_base = Fraction(1, OPUS_RATE)
        ctx.options = {"application": "lowdelay", "frame_duration": "40"}
        ctx.open()
        self._ctx = ctx

    def encode(self, frame: AudioFrame) -> list[Encoded]:
        if self._ctx is None:
            self._open()
        assert self._ctx is not None
        if self.origin is None:
            self.origin = frame.pts
        position = round((frame.pts - self.origin) * OPUS_RATE)
        if self._next is None or abs(position - self._next) > OPUS_RATE // 10:
            self._next = position  # the first frame, or the clock jumped: follow it
        resampler = self._resamplers.get(frame.sample_rate)
        if resampler is None:
            resampler = av.AudioResampler("s16", self.layout, OPUS_RATE, frame_size=OPUS_FRAME)
            self._resamplers = {frame.sample_rate: resampler}
        pcm = remix(frame.pcm(), self.channels)
        source = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(pcm.reshape(1, -1)), format="s16", layout=self.layout
        )
        source.sample_rate = frame.sample_rate
        out = []
        for chunk in resampler.resample(source):
            chunk.pts, chunk.time_base = self._next, Fraction(1, OPUS_RATE)
            self._next += chunk.samples
            for p in self._ctx.encode(chunk):
                pts = self.origin + p.pts / OPUS_RATE
                out.append(Encoded(bytes(p), pts, False, duration=OPUS_FRAME / OPUS_RATE))
        return out

    def close(self) -> None:
        self._ctx, self._resamplers, self._next, self.origin = None, {}, None, None

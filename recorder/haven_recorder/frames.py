"""Decoded media as it flows from the StreamManager to its handlers.

Every frame carries `pts`: seconds on the pod's monotonic clock at which it was captured, as
well as the receive pipeline can tell. Audio and video share that clock, which is what keeps
recordings in sync.

Pictures come in any size, odd or even, and with the publisher's rotation; the helpers here
(pure, run in worker threads) turn them upright, crop, pad and convert them for the encoders.
"""

from __future__ import annotations

from dataclasses import dataclass

import av
import numpy as np

BLACK_Y, NEUTRAL_UV = 16, 128  # video-range black


@dataclass(frozen=True, slots=True)
class VideoFrame:
    """One I420 picture: the Y plane, then U, then V, each tightly packed; chroma planes are
    ceil(width / 2) x ceil(height / 2), so odd sizes are fine. `rotation` is how far (degrees
    clockwise) the picture must be turned to stand upright, as WebRTC reports it."""

    width: int
    height: int
    data: bytes
    pts: float
    rotation: int = 0

    @property
    def nbytes(self) -> int:
        return len(self.data)

    @property
    def upright_size(self) -> tuple[int, int]:
        turned = self.rotation % 180 == 90
        return (self.height, self.width) if turned else (self.width, self.height)

    def planes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        w, h = self.width, self.height
        cw, ch = (w + 1) // 2, (h + 1) // 2
        buf = np.frombuffer(self.data, np.uint8)
        y = buf[: w * h].reshape(h, w)
        u = buf[w * h : w * h + cw * ch].reshape(ch, cw)
        v = buf[w * h + cw * ch : w * h + 2 * cw * ch].reshape(ch, cw)
        return y, u, v

    @classmethod
    def from_planes(cls, y: np.ndarray, u: np.ndarray, v: np.ndarray, pts: float) -> VideoFrame:
        data = b"".join(np.ascontiguousarray(p).tobytes() for p in (y, u, v))
        return cls(y.shape[1], y.shape[0], data, pts)

    def upright(self) -> VideoFrame:
        """The picture turned by its rotation (itself if it needs none)."""
        turns = (self.rotation // 90) % 4
        if turns == 0:
            return self
        # np.rot90 turns counter-clockwise; the picture turns clockwise.
        y, u, v = (np.rot90(p, -turns) for p in self.planes())
        return VideoFrame.from_planes(y, u, v, self.pts)

    def cropped(self, width: int, height: int) -> VideoFrame:
        """The top-left `width` x `height` of the picture."""
        if (width, height) == (self.width, self.height):
            return self
        y, u, v = self.planes()
        cw, ch = (width + 1) // 2, (height + 1) // 2
        return VideoFrame.from_planes(y[:height, :width], u[:ch, :cw], v[:ch, :cw], self.pts)

    def padded(self, width: int, height: int) -> VideoFrame:
        """The picture centred on a black canvas of `width` x `height` (at least its size)."""
        if (width, height) == (self.width, self.height):
            return self
        left, top = (width - self.width) // 4 * 2, (height - self.height) // 4 * 2  # even
        cw, ch = (width + 1) // 2, (height + 1) // 2
        y = np.full((height, width), BLACK_Y, np.uint8)
        u = np.full((ch, cw), NEUTRAL_UV, np.uint8)
        v = u.copy()
        sy, su, sv = self.planes()
        y[top : top + self.height, left : left + self.width] = sy
        for dst, src in ((u, su), (v, sv)):
            dst[top // 2 : top // 2 + src.shape[0], left // 2 : left // 2 + src.shape[1]] = src
        return VideoFrame.from_planes(y, u, v, self.pts)

    def to_av(self) -> av.VideoFrame:
        """As a PyAV frame of the same size (any size, odd or even)."""
        frame = av.VideoFrame(self.width, self.height, "yuv420p")
        for plane, src in zip(frame.planes, self.planes(), strict=True):
            dst = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)
            dst[: src.shape[0], : src.shape[1]] = src
        return frame

    @classmethod
    def from_av(cls, frame: av.VideoFrame, pts: float) -> VideoFrame:
        if frame.format.name != "yuv420p":
            frame = frame.reformat(format="yuv420p")
        y, u, v = (
            np.frombuffer(p, np.uint8).reshape(-1, p.line_size)[: p.height, : p.width]
            for p in frame.planes
        )
        return cls.from_planes(y, u, v, pts)

    def scaled(self, width: int, height: int) -> VideoFrame:
        """The picture scaled to `width` x `height` (area averaging)."""
        if (width, height) == (self.width, self.height):
            return self
        av_frame = self.to_av().reformat(width=width, height=height, interpolation="AREA")
        return VideoFrame.from_av(av_frame, self.pts)


@dataclass(frozen=True, slots=True)
class AudioFrame:
    """Interleaved signed 16-bit PCM."""

    data: bytes
    sample_rate: int
    channels: int
    pts: float

    @property
    def nbytes(self) -> int:
        return len(self.data)

    @property
    def samples(self) -> int:
        return len(self.data) // (2 * self.channels)

    @property
    def duration(self) -> float:
        return self.samples / self.sample_rate

    def pcm(self) -> np.ndarray:
        """The samples as an (n, channels) int16 array."""
        return np.frombuffer(self.data, np.int16)[: self.samples * self.channels].reshape(
            -1, self.channels
        )


def remix(pcm: np.ndarray, channels: int) -> np.ndarray:
    """(n, c) int16 samples as (n, `channels`): channels averaged down or the first repeated."""
    have = pcm.shape[1]
    if have == channels:
        return pcm
    if channels == 1:
        return pcm.astype(np.int32).mean(axis=1, keepdims=True).astype(np.int16)
    return np.repeat(pcm[:, :1], channels, axis=1) if have == 1 else pcm[:, :channels]


class StereoDetector:
    """Tells a stereo source from a mono one decoded as two channels. A mono source's two
    channels are the same, except where WebRTC conceals a lost packet (its noise differs per
    channel, briefly); so a source is stereo once its channels have differed clearly
    (STEREO_DIFFERENCE of their level) in STEREO_FRAMES audible frames in a row. Silence and
    quiet frames neither count nor break the run."""

    STEREO_DIFFERENCE = 0.1
    STEREO_FRAMES = 25  # 250 ms of 10 ms frames
    AUDIBLE = 200  # mean absolute sample value (about -44 dBFS)

    def __init__(self) -> None:
        self.run = 0
        self.stereo = False

    def add(self, pcm: np.ndarray) -> bool:
        """Feed (n, 2) int16 samples; returns whether the source is stereo (for good, once so)."""
        if self.stereo or pcm.shape[1] < 2 or len(pcm) == 0:
            return self.stereo
        left, right = pcm[:, 0].astype(np.int32), pcm[:, 1].astype(np.int32)
        level = (np.abs(left).mean() + np.abs(right).mean()) / 2
        if level < self.AUDIBLE:
            return False
        if np.abs(left - right).mean() > self.STEREO_DIFFERENCE * level:
            self.run += 1
        else:
            self.run = 0
        self.stereo = self.run >= self.STEREO_FRAMES
        return self.stereo


Frame = VideoFrame | AudioFrame

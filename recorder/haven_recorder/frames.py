"""Decoded media as it flows from the StreamManager to its handlers.

Every frame carries `pts`: seconds on the pod's monotonic clock at which it was captured, as
well as the receive pipeline can tell. Audio and video share that clock, which is what keeps
recordings in sync.
"""

from __future__ import annotations

from dataclasses import dataclass

import av
import numpy as np


@dataclass(frozen=True, slots=True)
class VideoFrame:
    """One I420 picture: the Y plane, then U, then V, each tightly packed."""

    width: int
    height: int
    data: bytes
    pts: float

    def to_av(self) -> av.VideoFrame:
        """As a PyAV frame (even sizes, as every real encoder produces)."""
        i420 = np.frombuffer(self.data, np.uint8).reshape(self.height * 3 // 2, self.width)
        return av.VideoFrame.from_ndarray(i420, format="yuv420p")

    @classmethod
    def from_av(cls, frame: av.VideoFrame, pts: float) -> VideoFrame:
        i420 = frame.to_ndarray(format="yuv420p")
        return cls(frame.width, frame.height, i420.tobytes(), pts)

    def planes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        w, h = self.width, self.height
        cw, ch = (w + 1) // 2, (h + 1) // 2
        buf = np.frombuffer(self.data, np.uint8)
        y = buf[: w * h].reshape(h, w)
        u = buf[w * h : w * h + cw * ch].reshape(ch, cw)
        v = buf[w * h + cw * ch : w * h + 2 * cw * ch].reshape(ch, cw)
        return y, u, v


@dataclass(frozen=True, slots=True)
class AudioFrame:
    """Interleaved signed 16-bit PCM."""

    data: bytes
    sample_rate: int
    channels: int
    pts: float

    @property
    def samples(self) -> int:
        return len(self.data) // (2 * self.channels)

    @property
    def duration(self) -> float:
        return self.samples / self.sample_rate


Frame = VideoFrame | AudioFrame

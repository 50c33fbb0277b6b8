"""The test signal as the StreamManager would deliver it, without a LiveKit server."""

from __future__ import annotations

from collections.abc import Iterator

from haven_localcluster import testsignal as ts
from haven_recorder.frames import AudioFrame, Frame, VideoFrame


def frames(seconds: float, start: float = 1000.0, audio_delay: float = 0.0) -> Iterator[Frame]:
    """Video and 10 ms audio frames in pts order; `audio_delay` shifts audio late."""
    pattern = ts.VideoPattern()
    n_video = int(seconds * ts.FPS)
    n_audio = int(seconds * 100)
    v = a = 0
    while v < n_video or a < n_audio:
        tv = start + v / ts.FPS
        ta = start + a / 100 + audio_delay
        if v < n_video and (a >= n_audio or tv <= ta):
            yield VideoFrame(ts.WIDTH, ts.HEIGHT, pattern.i420(v), tv)
            v += 1
        else:
            pcm = ts.audio_samples(a * ts.AUDIO_FRAME_SAMPLES).tobytes()
            yield AudioFrame(pcm, ts.SAMPLE_RATE, 1, ta)
            a += 1

"""Capture times for received frames, on the pod's monotonic clock, robust to late delivery.

A frame reaches Python some time after WebRTC released it: never early, but late by however
long this process (or its publisher) was kept off the CPU. Averaging arrival times would carry
that lateness into the recording, and audio and video suffer it unequally. So each clock takes
the *earliest* arrival over a sliding window (a lower envelope) as the undelayed one, and
timestamps every frame from a smooth source clock instead:

- video: WebRTC's render time (`timestamp_us`, derived from the RTP timestamp, on the same
  monotonic clock), shifted by its least-delayed distance to the arrival time;
- audio: the sample count, anchored at the least-delayed arrival.

Both subtract the receive-side delay (the jitter-buffer delay from WebRTC's statistics), and
audio its packetization too, so audio and video land on one timeline: the capture time, give or
take the sender's video encoding and the network, which are the same for both on one path.
"""

from __future__ import annotations

from collections import deque

ENVELOPE_SECONDS = 2.0  # how long an earliest arrival is remembered
# WebRTC sends Opus in 20 ms packets: a packet's first sample waits that long to be sent.
AUDIO_PACKET_SECONDS = 0.020


class LowerEnvelope:
    """The minimum of a value over the last `window` seconds (a monotonic deque, O(1) amortized)."""

    def __init__(self, window: float = ENVELOPE_SECONDS) -> None:
        self.window = window
        self._points: deque[tuple[float, float]] = deque()  # (time, value), values increasing

    def add(self, now: float, value: float) -> float:
        points = self._points
        while points and points[-1][1] >= value:
            points.pop()
        points.append((now, value))
        while points[0][0] < now - self.window:
            points.popleft()
        return points[0][1]


class VideoClock:
    def __init__(self, window: float = ENVELOPE_SECONDS) -> None:
        self._lag = LowerEnvelope(window)  # arrival minus render time

    def capture_time(self, now: float, timestamp_us: int, delay: float) -> float:
        """`now`: arrival (monotonic seconds); `timestamp_us`: the frame's render time."""
        if timestamp_us <= 0:  # no render time: fall back on arrival
            return now - delay
        rendered = timestamp_us / 1e6
        return rendered + self._lag.add(now, now - rendered) - delay


class AudioClock:
    def __init__(self, sample_rate: int, window: float = ENVELOPE_SECONDS) -> None:
        self.sample_rate = sample_rate
        self.samples = 0  # samples timestamped so far
        self._anchor = LowerEnvelope(window)  # capture time of sample 0

    def capture_time(self, now: float, samples: int, delay: float) -> float:
        """The capture time of the first of `samples` samples that arrived (ended) at `now`."""
        offset = self.samples / self.sample_rate
        arrived = now - samples / self.sample_rate - delay - AUDIO_PACKET_SECONDS - offset
        self.samples += samples
        return self._anchor.add(now, arrived) + offset

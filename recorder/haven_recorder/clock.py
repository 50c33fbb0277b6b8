"""Capture times for received frames, on the pod's monotonic clock, robust to late delivery.

A frame reaches Python some time after WebRTC released it: never early, but late by however
long this process (or its publisher) was kept off the CPU. Averaging arrival times would carry
that lateness into the recording, and audio and video suffer it unequally. So each clock takes
the *earliest* arrival over a sliding window (a lower envelope) of a smooth source clock:

- video: WebRTC's render time (`timestamp_us`, derived from the RTP timestamp, on the same
  monotonic clock), shifted by its least-delayed distance to the arrival time;
- audio: the sample count, anchored at the least-delayed arrival. WebRTC plays audio out in
  real time, 10 ms at a time, so a frame's arrival is when its *first* sample played out.

Only arrivals go into the envelopes. The receive-side delay (the jitter-buffer delay from
WebRTC's statistics, `DelayEstimate`) is subtracted outside them: it is an estimate, wrong
both ways, and a minimum would keep its low outliers. Audio also loses its packetization, so
audio and video land on one timeline: the capture time, give or take the sender's encoding
and the network, which are the same for both on one path. Video's offset to its source clock
is then averaged over a second (`RunningMean`), so that it slews rather than steps.

Where the publisher sends each frame's capture time (the frame-metadata feature's user
timestamp, on its own clock), video is placed by that instead: its offset to the pod's clock
is a low quantile (10%) over 10 s of the render-time estimate's (a frame the publisher itself
sent late is late for good, and a few low outliers do not count), averaged so that it slews;
the file keeps the publisher's timing, and only the offset can move, slowly.
"""

from __future__ import annotations

import bisect
import json
import os
import statistics
from collections import deque

ENVELOPE_SECONDS = 2.0  # how long an earliest arrival is remembered
# Audio's anchor is remembered longer: WebRTC plays audio out continuously, so the anchor only
# moves when playout starts again (a new clock), while a busy process can deliver every frame
# late for seconds on end (a backlog behind the GIL): a 2 s window took that lateness in.
AUDIO_ENVELOPE_SECONDS = 10.0
# WebRTC sends Opus in 20 ms packets: a packet's first sample waits that long to be sent.
AUDIO_PACKET_SECONDS = 0.020
DELAY_MEDIAN_OF = 5  # jitter-buffer delay readings (one per stats poll) a median is taken of
VIDEO_OFFSET_SECONDS = 1.0  # how long video's offset to the render time is averaged
USER_OFFSET_SECONDS = 10.0  # how long user-timestamp offsets are remembered
# Which of them is taken: the least-delayed (0) kept the estimate's low outliers, video 20-40 ms
# early on a loaded machine; the median kept a starved publisher's lateness (+100 ms).
USER_QUANTILE = 0.1
USER_RESET_SECONDS = 2.0  # a user timestamp that moves further has been reset: start again
# A source clock that moves further than this from its average offset has been reset: the
# average starts again.
RESET_SECONDS = 0.5


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


class RunningMean:
    """An average that weighs its first values equally and then forgets with time constant
    `seconds`: it settles at once and then slews. A value further than `reset` from it starts
    it again (a source clock that jumped)."""

    def __init__(self, seconds: float, reset: float = RESET_SECONDS) -> None:
        self.seconds = seconds
        self.reset = reset
        self.value: float | None = None
        self._count = 0
        self._time = 0.0

    def add(self, now: float, value: float) -> float:
        if self.value is None or abs(value - self.value) > self.reset:
            self.value, self._count = value, 1
        else:
            self._count += 1
            weight = max(1 / self._count, min(1.0, (now - self._time) / self.seconds))
            self.value += weight * (value - self.value)
        self._time = now
        return self.value


class SlidingQuantile:
    """A low quantile of a value over the last `window` seconds: like a lower envelope it
    discounts values that came late, but a few low outliers do not pull it down."""

    def __init__(self, window: float, quantile: float) -> None:
        self.window = window
        self.quantile = quantile
        self._points: deque[tuple[float, float]] = deque()  # (time, value), oldest first
        self._sorted: list[float] = []

    def add(self, now: float, value: float) -> float:
        self._points.append((now, value))
        bisect.insort(self._sorted, value)
        while self._points[0][0] < now - self.window:
            _, old = self._points.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, old)]
        return self._sorted[int(self.quantile * (len(self._sorted) - 1))]


class DelayEstimate:
    """The jitter-buffer delay (seconds) from WebRTC's cumulative receiver statistics: the
    average over each poll's interval, and the median of the last few of those, which follows
    the buffer's adaptation within about a second and ignores the odd reading around a stall."""

    def __init__(self, median_of: int = DELAY_MEDIAN_OF) -> None:
        self._last: tuple[float, int] | None = None
        self._readings: deque[float] = deque(maxlen=median_of)
        self.value: float | None = None

    def add(self, total_delay: float, emitted: int) -> float | None:
        """`total_delay`: jitterBufferDelay (seconds, cumulative); `emitted`: the count of
        frames or samples it is summed over. The estimate, None until two readings."""
        if self._last is not None and emitted > self._last[1]:
            self._readings.append((total_delay - self._last[0]) / (emitted - self._last[1]))
            self.value = statistics.median(self._readings)
        if self._last is None or emitted >= self._last[1]:
            self._last = (total_delay, emitted)
        else:  # the counters started again (a new receiver)
            self._last, self.value = (total_delay, emitted), None
            self._readings.clear()
        return self.value


class VideoClock:
    def __init__(self, window: float = ENVELOPE_SECONDS) -> None:
        self._lag = LowerEnvelope(window)  # arrival minus render time
        self._offset = RunningMean(VIDEO_OFFSET_SECONDS)  # capture minus render time
        # The pod's capture time minus the publisher's: a low quantile over 10 s (a frame the
        # publisher sent late is late for good), then averaged so that it slews.
        self._user_lag = SlidingQuantile(USER_OFFSET_SECONDS, USER_QUANTILE)
        self._user_offset = RunningMean(VIDEO_OFFSET_SECONDS, reset=USER_RESET_SECONDS)
        self._user_last: float | None = None

    def capture_time(
        self, now: float, timestamp_us: int, delay: float, user_timestamp_us: int | None = None
    ) -> float:
        """`now`: arrival (monotonic seconds); `timestamp_us`: the frame's render time;
        `delay`: the jitter-buffer delay; `user_timestamp_us`: the publisher's capture time
        for the frame (microseconds on its clock), if it sends one."""
        if timestamp_us <= 0:  # no render time: fall back on arrival
            estimate = now - delay
        else:
            rendered = timestamp_us / 1e6
            # The average runs on the source's clock: a burst of late frames after a stall is
            # spread over their own spacing, not taken in one step.
            lag = self._lag.add(now, now - rendered) - delay
            estimate = rendered + self._offset.add(rendered, lag)
        if user_timestamp_us is None:
            return estimate
        captured = user_timestamp_us / 1e6
        lag = estimate - captured
        if self._user_last is not None and abs(lag - self._user_last) > USER_RESET_SECONDS:
            self._user_lag = SlidingQuantile(USER_OFFSET_SECONDS, USER_QUANTILE)  # clock reset
        self._user_last = lag
        return captured + self._user_offset.add(captured, self._user_lag.add(now, lag))


class AudioClock:
    def __init__(self, sample_rate: int, window: float = AUDIO_ENVELOPE_SECONDS) -> None:
        self.sample_rate = sample_rate
        self.samples = 0  # samples timestamped so far
        self._anchor = LowerEnvelope(window)  # play-out time of sample 0

    def capture_time(self, now: float, samples: int, delay: float) -> float:
        """The capture time of the first of `samples` samples, which WebRTC played out (and
        so began to deliver) at `now`; `delay` is its jitter-buffer delay."""
        offset = self.samples / self.sample_rate
        self.samples += samples
        played = self._anchor.add(now, now - offset) + offset
        return played - delay - AUDIO_PACKET_SECONDS


class ClockLog:
    """Every frame's clock inputs and result, as JSON lines in the file `HAVEN_CLOCK_LOG`
    names (for diagnosis: where a recording's offsets come from); a no-op without it."""

    def __init__(self, path: str | None = None) -> None:
        path = path if path is not None else os.environ.get("HAVEN_CLOCK_LOG")
        self._file = open(path, "a", buffering=1 << 16) if path else None  # noqa: SIM115

    def __bool__(self) -> bool:
        return self._file is not None

    def write(self, kind: str, **fields: float | int | None) -> None:
        if self._file is not None:
            self._file.write(json.dumps({"k": kind, **fields}) + "\n")

"""Capture-time clocks: frames delivered late (a stalled process) keep their true timestamps."""

from __future__ import annotations

import itertools

import pytest

from haven_recorder.clock import (
    AUDIO_PACKET_SECONDS,
    AudioClock,
    DelayEstimate,
    LowerEnvelope,
    RunningMean,
    SlidingQuantile,
    VideoClock,
)


def test_lower_envelope_is_the_minimum_over_its_window():
    env = LowerEnvelope(window=1.0)
    assert [env.add(t, v) for t, v in [(0, 5), (0.5, 7), (0.9, 3), (1.5, 4), (2.0, 6)]] == [
        5,
        5,
        3,
        3,
        4,  # 3 (at 0.9) has left the window
    ]


def stalls(t: float) -> float:
    """How late a frame due at t reaches Python: 0, except 200 ms stalls every 2.5 s from 1 s."""
    phase = (t - 1) % 2.5
    return 0.2 - phase if phase < 0.2 else 0.0


def test_video_frames_delivered_late_keep_their_capture_times():
    clock, delay, render_lead = VideoClock(), 0.015, 0.009
    for n in range(300):
        captured = n / 30
        rendered = captured + delay + render_lead  # WebRTC's render time for the frame
        arrival = captured + delay + stalls(captured)  # released early by render_lead
        pts = clock.capture_time(arrival, round(rendered * 1e6), delay)
        assert pts == pytest.approx(captured, abs=1e-6), n


def test_video_without_render_time_falls_back_on_arrival():
    assert VideoClock().capture_time(10.0, 0, 0.02) == pytest.approx(9.98)


def test_audio_frames_delivered_late_keep_their_capture_times():
    clock, delay, rate = AudioClock(48000), 0.04, 48000
    for i in range(1000):  # 10 s of 10 ms frames
        captured = i * 0.01
        played = captured + AUDIO_PACKET_SECONDS + delay  # delivered as it starts to play
        pts = clock.capture_time(played + stalls(captured), rate // 100, delay)
        assert pts == pytest.approx(captured, abs=1e-6), i


def test_audio_follows_a_later_anchor_once_the_early_one_leaves_the_window():
    clock = AudioClock(48000, window=1.0)
    for i in range(100):
        clock.capture_time(i * 0.01 + AUDIO_PACKET_SECONDS, 480, 0.0)  # anchor 0
    # From here every frame arrives 50 ms later (say the sender dropped 50 ms of audio).
    late = AUDIO_PACKET_SECONDS + 0.05
    pts = [clock.capture_time(i * 0.01 + late, 480, 0.0) for i in range(100, 300)]
    assert pts[0] == pytest.approx(1.0)  # still on the old anchor within the window
    assert pts[-1] == pytest.approx(2.99 + 0.05)  # then on the new one


def test_a_wrong_delay_estimate_moves_audio_only_while_it_lasts():
    """The delay is subtracted outside the envelope: an overestimate for a moment must not
    become the anchor for the next 2 s (a minimum keeps low outliers)."""
    clock, delay = AudioClock(48000), 0.06
    pts = []
    for i in range(300):
        captured = i * 0.01
        wrong = 0.1 if 100 <= i < 110 else 0.0  # one stats poll 100 ms too high
        played = captured + AUDIO_PACKET_SECONDS + delay
        pts.append(clock.capture_time(played, 480, delay + wrong) - captured)
    assert pts[110:] == pytest.approx([0.0] * 190, abs=1e-6)


def test_video_offset_slews_instead_of_stepping():
    """A jitter-buffer delay reading that jumps by 30 ms moves video by it over about a
    second, not from one frame to the next."""
    clock = VideoClock()
    steps = []
    last = None
    for n in range(180):
        captured = n / 30
        delay = 0.02 if n < 60 else 0.05
        rendered = captured + 0.05
        pts = clock.capture_time(rendered - 0.01, round(rendered * 1e6), delay)
        if last is not None:
            steps.append(pts - last)
        last = pts
    assert max(abs(s - 1 / 30) for s in steps) < 0.004  # no step of more than 4 ms
    assert last == pytest.approx(179 / 30 + 0.05 - 0.01 - 0.05, abs=0.003)  # and it got there


def test_a_burst_after_a_stall_spreads_the_offsets_slew_over_the_frames():
    """Frames held back by a 150 ms stall arrive at once; a delay reading that changed meanwhile
    is slewed in over the frames' own spacing (media time), not in the first frame after it."""
    for user in (False, True):
        clock, pts = VideoClock(), []
        for n in range(240):
            captured = n / 30
            rendered = captured + 0.05
            late = max(0.0, 4.15 - captured) if captured >= 4.0 else 0.0  # the stall at 4 s
            delay = 0.02 if captured < 4.0 else 0.12
            user_us = round((captured + 500) * 1e6) if user else None
            pts.append(
                clock.capture_time(rendered - 0.01 + late, round(rendered * 1e6), delay, user_us)
            )
        worst = max(abs((b - a) - 1 / 30) for a, b in itertools.pairwise(pts))
        assert worst < 0.004, (user, worst)  # 100 ms over 1 s of frames: 3.3 ms a frame


def test_user_timestamps_keep_the_publishers_timing_through_noisy_estimates():
    """With the publisher's capture times, frame spacing is exact whatever the render-time
    estimate does; only the offset to the pod's clock comes from the estimates."""
    clock = VideoClock()
    offset = 1000.0  # the publisher's clock minus the pod's
    pts = []
    for n in range(600):
        captured = n / 30
        noise = 0.02 * ((n * 7919) % 11 - 5) / 5  # up to ±20 ms in the delay readings
        rendered = captured + 0.05
        arrival = rendered - 0.01 + stalls(captured)
        pts.append(
            clock.capture_time(
                arrival, round(rendered * 1e6), 0.04 + noise, round((captured + offset) * 1e6)
            )
        )
    spacing = [b - a for a, b in itertools.pairwise(pts[300:])]
    assert spacing == pytest.approx([1 / 30] * len(spacing), abs=0.001)
    assert pts[-1] - 599 / 30 == pytest.approx(0.05 - 0.01 - 0.04, abs=0.005)


def test_user_timestamps_that_jump_start_the_offset_again():
    clock = VideoClock()
    for n in range(90):
        t = n / 30
        clock.capture_time(t + 0.04, round((t + 0.05) * 1e6), 0.0, round((t + 100) * 1e6))
    # The publisher's clock jumps 1 hour ahead: its frames keep their place on the pod's clock.
    t = 3.0
    pts = clock.capture_time(t + 0.04, round((t + 0.05) * 1e6), 0.0, round((t + 3700) * 1e6))
    assert pts == pytest.approx(t + 0.04, abs=1e-6)


def test_delay_estimate_is_the_median_of_interval_averages():
    est = DelayEstimate(median_of=3)
    assert est.add(0.0, 0) is None
    assert est.add(1.0, 10) == pytest.approx(0.1)  # 10 frames, 0.1 s each
    assert est.add(1.2, 20) == pytest.approx(0.06)  # median of 0.1 and 0.02
    assert est.add(3.2, 30) == pytest.approx(0.1)  # median of 0.1, 0.02, 0.2
    assert est.add(3.2, 30) == pytest.approx(0.1)  # nothing emitted: no reading
    assert est.add(0.5, 5) is None  # counters started again


def test_running_mean_settles_at_once_then_forgets_slowly():
    mean = RunningMean(seconds=1.0)
    assert [mean.add(t, v) for t, v in [(0, 0.1), (0.01, 0.3), (0.02, 0.2)]] == pytest.approx(
        [0.1, 0.2, 0.2]
    )
    assert mean.add(10.0, 0.26) == pytest.approx(0.26)  # long after: the new value wins
    assert mean.add(10.5, 5.0) == pytest.approx(5.0)  # a jump past `reset` starts again


def test_sliding_quantile_ignores_a_few_low_outliers_and_forgets_old_values():
    low = SlidingQuantile(window=1.0, quantile=0.1)
    values = [1.0 + 0.01 * (i % 10) for i in range(50)]
    values[20] = 0.5  # one reading far too low
    got = [low.add(i / 100, v) for i, v in enumerate(values)]
    assert min(got[21:]) >= 1.0  # the outlier is not the answer
    assert low.add(3.0, 2.0) == 2.0  # the rest left the window

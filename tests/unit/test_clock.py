"""Capture-time clocks: frames delivered late (a stalled process) keep their true timestamps."""

from __future__ import annotations

import pytest

from haven_recorder.clock import AUDIO_PACKET_SECONDS, AudioClock, LowerEnvelope, VideoClock


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
        ends = captured + 0.01 + AUDIO_PACKET_SECONDS + delay  # played out, then delivered
        pts = clock.capture_time(ends + stalls(captured), rate // 100, delay)
        assert pts == pytest.approx(captured, abs=1e-6), i


def test_audio_follows_a_later_anchor_once_the_early_one_leaves_the_window():
    clock = AudioClock(48000, window=1.0)
    for i in range(100):
        clock.capture_time(i * 0.01 + 0.03, 480, 0.0)  # anchor 0
    # From here every frame arrives 50 ms later (say the sender dropped 50 ms of audio).
    pts = [clock.capture_time(i * 0.01 + 0.08, 480, 0.0) for i in range(100, 300)]
    assert pts[0] == pytest.approx(1.0)  # still on the old anchor within the window
    assert pts[-1] == pytest.approx(2.99 + 0.05)  # then on the new one

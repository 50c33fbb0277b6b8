"""Telling a stereo source from a mono one that WebRTC decodes as two channels."""

from __future__ import annotations

import numpy as np

from haven_recorder.frames import StereoDetector

TONE = (np.sin(np.arange(480) / 3) * 8000).astype(np.int16)


def frame(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    return np.stack([left, right], axis=1)


def test_a_mono_source_with_concealment_noise_stays_mono():
    detector = StereoDetector()
    noise = np.random.default_rng(0).integers(-3000, 3000, 480).astype(np.int16)
    for i in range(1000):
        lost = i % 100 < 10  # 100 ms of concealment every second: the channels differ
        right = TONE + noise if lost else TONE
        assert detector.add(frame(TONE, right)) is False


def test_quiet_differences_do_not_count():
    detector = StereoDetector()
    quiet = (TONE // 100).astype(np.int16)
    assert not any(detector.add(frame(quiet, -quiet)) for _ in range(500))


def test_a_stereo_source_is_found_within_a_quarter_second_of_sound_and_stays_stereo():
    detector = StereoDetector()
    silence = np.zeros(480, np.int16)
    results = []
    for i in range(60):
        if i % 2:  # silence between does not break the run
            results.append(detector.add(frame(silence, silence)))
        results.append(detector.add(frame(TONE, TONE // 2)))
    first = results.index(True)
    assert results[first:] == [True] * (len(results) - first)
    assert first < 2 * StereoDetector.STEREO_FRAMES
    assert detector.add(frame(TONE, TONE)) is True

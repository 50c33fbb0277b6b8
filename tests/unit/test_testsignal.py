"""The test pattern's counter and tone survive what a codec and a scaler do to them."""

from __future__ import annotations

import numpy as np
import pytest

from haven_localcluster import testsignal as ts


@pytest.mark.parametrize("counter", [0, 1, 59, 60, 1234, 65535])
def test_counter_round_trips_through_noise_and_downscaling(counter):
    luma = ts.VideoPattern().luma(counter)
    noisy = np.clip(
        luma.astype(np.int16) + np.random.default_rng(1).integers(-30, 30, luma.shape), 0, 255
    )
    assert ts.decode_counter(noisy.astype(np.uint8)) == counter
    half = luma[::2, ::2]  # 640x360
    assert ts.decode_counter(half) == counter
    assert ts.frame_is_flash(luma) == ts.is_flash(counter)


def test_a_corrupted_strip_reads_as_unreadable():
    luma = ts.VideoPattern().luma(77)
    luma[: ts.STRIP_ROWS, :] = ts.WHITE  # all ones: the check bits cannot match
    assert ts.decode_counter(luma) is None


def test_tone_onsets_follow_the_flashes():
    seconds = 7
    samples = ts.audio_samples(0, seconds * ts.SAMPLE_RATE)
    period = ts.FLASH_EVERY / ts.FPS
    # The onset at sample 0 has no quiet window before it; the rest are found on the period.
    assert ts.tone_onsets(samples) == pytest.approx([period, 2 * period, 3 * period], abs=0.006)


def test_tone_end_is_the_sample_after_the_burst_or_the_sample_itself():
    period = ts.SAMPLE_RATE * ts.FLASH_EVERY // ts.FPS
    tone = int(ts.TONE_SECONDS * ts.SAMPLE_RATE)
    assert ts.tone_end(0) == tone
    assert ts.tone_end(period + 10) == period + tone
    assert ts.tone_end(period + tone) == period + tone  # silence: nothing to mute
    assert not ts.audio_samples(ts.tone_end(period + 5), 100).any()


@pytest.mark.parametrize(
    "size", [(1280, 720), (720, 405), (405, 720), (1279, 719), (321, 181), (192, 108), (4096, 2160)]
)
def test_the_pattern_at_any_size_reads_back_after_scaling(size):
    width, height = size
    pattern = ts.VideoPattern(width, height)
    data = pattern.i420(4321)
    assert len(data) == width * height + 2 * ((width + 1) // 2) * ((height + 1) // 2)
    luma = pattern.luma(4321)
    assert ts.decode_counter(luma) == 4321
    assert ts.decode_counter(luma[::2, ::2]) == 4321  # what a scaler leaves of it
    assert ts.frame_is_flash(pattern.luma(120)) and not ts.frame_is_flash(luma)


def test_the_default_pattern_keeps_its_size_and_digits():
    pattern = ts.VideoPattern()
    assert (pattern.width, pattern.height, pattern.strip_rows) == (1280, 720, ts.STRIP_ROWS)
    assert pattern.digit_scale == ts.DIGIT_SCALE


@pytest.mark.parametrize("rate", [8000, 44100, 48000])
def test_tones_at_other_sample_rates_start_on_the_flashes(rate):
    samples = ts.audio_samples(0, 5 * rate, rate)
    period = ts.FLASH_EVERY / ts.FPS
    assert ts.tone_onsets(samples, rate) == pytest.approx([period, 2 * period], abs=0.006)
    both = ts.stereo(samples).reshape(-1, 2)
    assert (both[:, 0] == samples).all() and (both[:, 1] == samples // 2).all()

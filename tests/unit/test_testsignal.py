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

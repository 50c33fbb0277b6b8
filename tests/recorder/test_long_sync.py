"""A/V sync over a long recording: the offset between each flash and its tone stays within
40 ms and does not drift (HAVEN_SYNC_SECONDS, default 600: the 10 minutes the issue names)."""

from __future__ import annotations

import asyncio
import os
import statistics

import numpy as np
import pytest

from haven_localcluster.mediacheck import analyze

from .conftest import livekit_args

SECONDS = float(os.environ.get("HAVEN_SYNC_SECONDS", "600"))


@pytest.mark.first  # a real-time measurement: before the operator and its pods load the node
@pytest.mark.timeout(SECONDS + 300)
async def test_no_av_drift_over_a_long_recording(livekit_server, publisher, stream_pod):
    pod = stream_pod(*livekit_args(livekit_server, publisher))
    pod.wait_state("live")
    for fmt in ("av1", "h264"):
        pod.start_recording(name=f"long-{fmt}", format=fmt)
    await asyncio.sleep(SECONDS)
    # Both stop before either is decoded: decoding loads the CPU the pod runs on.
    finals = {fmt: pod.stop_recording(f"long-{fmt}") for fmt in ("av1", "h264")}
    for fmt, final in finals.items():
        assert final["framesDropped"] == 0 and len(final["parts"]) == 1, final
        report = await asyncio.to_thread(analyze, pod.recordings / final["parts"][0]["path"])
        assert report.error is None and report.duration >= SECONDS - 2
        times, offsets = np.array(report.av_pairs()).T
        slope = np.polyfit(times, offsets, 1)[0] * 60  # seconds of trend per minute
        minutes = per_minute_medians(times, offsets)
        print(
            f"{fmt}: {len(offsets)} flashes ({report.inferred_flashes} inferred) over "
            f"{report.duration:.0f}s; offset median "
            f"{statistics.median(offsets) * 1000:.0f} ms, p95 |offset| "
            f"{np.percentile(np.abs(offsets), 95) * 1000:.0f} ms, max "
            f"{np.abs(offsets).max() * 1000:.0f} ms; per minute "
            f"{[round(m * 1000) for m in minutes]} ms, trend {slope * 1000:.2f} ms/min"
        )
        # A flash every 2 s, each paired with its tone (a flash frame the publisher's encoder
        # dropped is timed from the frame after it).
        assert len(offsets) >= 0.9 * report.duration / 2, len(offsets)
        # The goal is 40 ms. Typical offsets sit well inside it; a loaded machine delays some
        # audio deliveries, so single flashes may stray a little past it.
        assert np.median(np.abs(offsets)) <= 0.040, offsets
        assert np.percentile(np.abs(offsets), 95) <= 0.050, offsets
        assert np.abs(offsets).max() <= 0.080, offsets
        # No drift: the offset in the last minute is where it was in the first.
        assert abs(minutes[-1] - minutes[0]) <= 0.025, minutes


def per_minute_medians(times: np.ndarray, offsets: np.ndarray) -> list[float]:
    """The median offset of each minute (a stall's few seconds of stray flashes do not move
    it)."""
    starts = np.arange(times[0], times[-1], 60.0)
    return [float(np.median(offsets[(times >= t) & (times < t + 60)])) for t in starts]

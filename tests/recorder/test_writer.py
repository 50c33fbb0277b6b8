"""PyAV part writer: each format decodes with the right codecs, duration and A/V sync."""

from __future__ import annotations

import dataclasses

import pytest

from haven_localcluster import testsignal as ts
from haven_localcluster.mediacheck import analyze
from haven_recorder.frames import VideoFrame
from haven_recorder.writer import FORMATS, PartWriter

from .signal import frames

SECONDS = 6


def write(path, fmt, frame_iter, **kwargs):
    writer = PartWriter(path, fmt, "medium", audio=True, max_width=None, **kwargs)
    for frame in frame_iter:
        (writer.write_video if isinstance(frame, VideoFrame) else writer.write_audio)(frame)
    return writer.close()


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_each_format_decodes_in_sync(tmp_path, fmt):
    path = tmp_path / f"rec.{FORMATS[fmt].extension}"
    stats = write(path, fmt, frames(SECONDS))
    report = analyze(path)
    assert report.error is None
    expected = {"av1": ("libdav1d", "libopus"), "h264": ("h264", "aac"), "vp9": ("vp9", "libopus")}
    vcodec, acodec = expected[fmt]
    assert report.video_codec in (vcodec, "av1") and report.audio_codec in (acodec, "opus")
    assert (report.width, report.height) == (1280, 720)
    assert report.duration == pytest.approx(SECONDS, rel=0.05)
    assert report.audio_seconds == pytest.approx(SECONDS, rel=0.05)
    assert stats.bytes_written == path.stat().st_size > 0
    assert [c for c in report.counters if c is not None][:5] == [0, 1, 2, 3, 4]
    offsets = report.av_offsets()
    assert len(offsets) >= 2, (report.flashes, report.tones)
    assert max(abs(o) for o in offsets) <= 0.04, offsets


def test_a_dropped_flash_frame_is_timed_from_the_frame_after_it(tmp_path):
    # The analysis the sync tests rely on: a publisher's encoder may drop a flash frame.
    def is_flash_frame(frame):
        index = round((frame.pts - 1000.0) * ts.FPS)  # frames() starts at 1000.0
        return isinstance(frame, VideoFrame) and index > 0 and ts.is_flash(index)

    path = tmp_path / "rec.mp4"
    write(path, "h264", (f for f in frames(SECONDS) if not is_flash_frame(f)))
    report = analyze(path)
    assert 60 not in report.counters and 120 not in report.counters
    assert report.inferred_flashes == 2 and len(report.flashes) == 3
    assert max(abs(o) for o in report.av_offsets()) <= 0.04, report.av_offsets()


@pytest.mark.parametrize("sign", [-1, 1])
def test_audio_returns_to_its_timestamps_after_a_clock_step_and_back(tmp_path, sign):
    # The stream's audio clock can step by a little over AUDIO_SLACK (a stall) and come back
    # by a little under it: the file follows it there and back, and does not stay off.
    def stepped(frame):
        if isinstance(frame, VideoFrame):
            return frame
        shift = 0.0205 if 1001.0 <= frame.pts < 1003.5 else 0.001
        return dataclasses.replace(frame, pts=frame.pts + sign * shift)

    path = tmp_path / "rec.mp4"
    write(path, "h264", map(stepped, frames(8)))
    pairs = analyze(path).av_pairs()
    print("A/V offsets (ms)", [(round(t, 1), round(o * 1000)) for t, o in pairs])
    during = [o for t, o in pairs if 1.5 < t < 2.5]
    after = [o for t, o in pairs if t > 5.5]
    assert during and all(0.015 < sign * o < 0.025 for o in during), pairs
    assert after and all(abs(o) < 0.005 for o in after), pairs

"""PyAV part writer: each format decodes with the right codecs, duration and A/V sync."""

from __future__ import annotations

import dataclasses

import av
import pytest

from haven_localcluster import testsignal as ts
from haven_localcluster.mediacheck import analyze
from haven_recorder.frames import VideoFrame
from haven_recorder.repair import trim_unfinished
from haven_recorder.writer import CONTAINERS, FORMATS, PartWriter, resolve

from .signal import frames

SECONDS = 6
DEMUXERS = {"webm": "matroska,webm", "mp4": "mov,mp4,m4a,3gp,3g2,mj2", "mpegts": "mpegts"}


def write(path, fmt, frame_iter, **kwargs):
    writer = PartWriter(path, fmt, "medium", audio=True, max_width=None, **kwargs)
    for frame in frame_iter:
        (writer.write_video if isinstance(frame, VideoFrame) else writer.write_audio)(frame)
    return writer.close()


@pytest.mark.parametrize(
    ("fmt", "container"),
    [(fmt, None) for fmt in sorted(FORMATS)] + sorted(CONTAINERS),
    ids=lambda v: v or "default",
)
def test_each_format_decodes_in_sync(tmp_path, fmt, container):
    written_as = resolve(fmt, container)
    path = tmp_path / f"rec.{written_as.extension}"
    stats = write(path, fmt, frames(SECONDS), container=container)
    with av.open(str(path)) as c:  # the container asked for, as FFmpeg's demuxers name it
        assert c.format.name == DEMUXERS[written_as.container]
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


@pytest.mark.parametrize(
    ("source_fps", "max_fps", "expected"), [(60, None, 60), (25, None, 25), (60, 15, 15)]
)
def test_the_source_frame_rate_is_kept_unless_max_fps_thins_it(
    tmp_path, source_fps, max_fps, expected
):
    # No guess at part start caps it: each frame keeps its own timestamp.
    path = tmp_path / "rec.webm"
    writer = PartWriter(path, "vp9", "low", audio=False, max_width=320, max_fps=max_fps)
    pattern = ts.VideoPattern()
    for i in range(3 * source_fps):
        writer.write_video(VideoFrame(ts.WIDTH, ts.HEIGHT, pattern.i420(i), 1000 + i / source_fps))
    stats = writer.close()
    report = analyze(path)
    assert report.error is None
    assert abs(report.video_frames - 3 * expected) <= 1, report.video_frames
    assert stats.frames_written == report.video_frames
    assert report.duration == pytest.approx(3 - 1 / source_fps, abs=1 / expected)


def test_a_picture_of_another_shape_asks_for_a_new_part_and_a_smaller_one_is_scaled(tmp_path):
    writer = PartWriter(tmp_path / "rec.mp4", "h264", "low", audio=False, max_width=None)
    pattern, small = ts.VideoPattern(), ts.VideoPattern(640, 360)
    writer.write_video(VideoFrame(ts.WIDTH, ts.HEIGHT, pattern.i420(0), 1000.0))
    half = VideoFrame(640, 360, small.i420(1), 1000.04)
    assert writer.split_reason(half) is None  # the same aspect ratio: scaled into this part
    writer.write_video(half)
    portrait = VideoFrame(ts.WIDTH, ts.HEIGHT, pattern.i420(2), 1000.08, rotation=90)
    assert writer.split_reason(portrait) == "ShapeChanged"
    later = VideoFrame(ts.WIDTH, ts.HEIGHT, pattern.i420(3), 1000.08 + 10.5)
    assert writer.split_reason(later) == "Gap"  # away longer than max_gap (10 s)
    writer.close()
    report = analyze(tmp_path / "rec.mp4")
    assert (report.width, report.height) == (1280, 720) and report.counters == [0, 1]


@pytest.mark.parametrize(("container", "behind"), [("mp4", 1.5), ("webm", 1.5), ("mpegts", 0.2)])
def test_what_is_written_is_on_disk_before_the_part_is_closed(tmp_path, container, behind):
    """What a SIGKILL would leave: the file as it is while the part is open (MP4 cut back to
    its whole fragments) plays up to within a fragment (MP4, WebM: 1 s) or a few frames (TS)
    of the last picture written."""
    fmt = "vp9" if container == "webm" else "h264"
    written_as = resolve(fmt, container)
    path = tmp_path / f"open.{written_as.extension}"
    writer = PartWriter(path, fmt, "low", audio=True, max_width=None, container=container)
    for frame in frames(SECONDS):
        (writer.write_video if isinstance(frame, VideoFrame) else writer.write_audio)(frame)
    snapshot = tmp_path / f"snapshot.{written_as.extension}"
    snapshot.write_bytes(path.read_bytes())
    writer.close()
    trim_unfinished(snapshot)
    report = analyze(snapshot)
    assert report.error is None and report.last_video is not None
    assert report.last_video >= SECONDS - 1 / ts.FPS - behind, report.last_video

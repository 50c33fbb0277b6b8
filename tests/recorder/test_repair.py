"""A part cut short (a crash, a full disk) is trimmed to its whole fragments and plays."""

from __future__ import annotations

from pathlib import Path

import pytest

from haven_localcluster.mediacheck import analyze
from haven_recorder.fanout import FanOut
from haven_recorder.recording import PartInfo, Recording, RecordingSpec
from haven_recorder.repair import TS_PACKET, boxes, trim_to_whole_fragments, trim_unfinished

from .signal import frames
from .test_writer import write


@pytest.fixture(scope="module")
def whole_mp4(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("mp4") / "whole.mp4"
    write(path, "h264", frames(4))
    return path


@pytest.fixture(scope="module")
def mp4(whole_mp4) -> bytes:
    return whole_mp4.read_bytes()


@pytest.fixture(scope="module")
def layout(whole_mp4) -> list[tuple[int, int, bytes]]:
    return list(boxes(whole_mp4))


def cut_points(layout: list[tuple[int, int, bytes]]) -> list[tuple[str, int, int]]:
    """(where, cut at, end of the last whole fragment before it) for cuts inside the second
    and a later fragment's moof and mdat, in the mfra, and on a box boundary."""
    moofs = [i for i, (_, _, kind) in enumerate(layout) if kind == b"moof"]
    points = []
    for i in (moofs[1], moofs[-2]):
        (moof, moof_size, _), (mdat, mdat_size, _) = layout[i], layout[i + 1]
        points += [
            ("moof header", moof + 5, moof),
            ("moof body", moof + moof_size // 2, moof),
            ("mdat header", mdat + 6, moof),
            ("mdat body", mdat + mdat_size // 2, moof),
            ("mdat's last byte", mdat + mdat_size - 1, moof),
            ("boundary", mdat + mdat_size, mdat + mdat_size),
        ]
    mfra = layout[-1][0]
    assert layout[-1][2] == b"mfra"
    points.append(("mfra", mfra + 10, mfra))
    return points


@pytest.mark.parametrize("case", range(13))
def test_an_mp4_cut_anywhere_is_trimmed_to_whole_fragments_and_plays(tmp_path, mp4, layout, case):
    where, cut, expected_end = cut_points(layout)[case]
    path = tmp_path / "cut.mp4"
    path.write_bytes(mp4[:cut])
    whole = tmp_path / "whole.mp4"
    whole.write_bytes(mp4[:expected_end])

    assert trim_to_whole_fragments(path) == cut - expected_end, where
    assert path.stat().st_size == expected_end
    report = analyze(path)
    assert report.error is None, (where, report.error)
    assert report.video_frames > 0 and report.audio_seconds > 0
    assert report.video_frames == analyze(whole).video_frames
    assert trim_to_whole_fragments(path) == 0  # idempotent


def test_the_cut_is_needed_ffmpeg_fails_on_an_unfinished_fragment(tmp_path, mp4, layout):
    """Why trimming exists: FFmpeg's MP4 demuxer errors on the tail a crash leaves."""
    for where, cut, _ in cut_points(layout):
        if where in ("moof body", "mdat body"):
            path = tmp_path / "cut.mp4"
            path.write_bytes(mp4[:cut])
            assert analyze(path).error is not None, where


def test_webm_is_left_alone_its_demuxer_reads_a_cut_tail(tmp_path):
    path = tmp_path / "cut.webm"
    write(path, "vp9", frames(3))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    assert trim_to_whole_fragments(path) == 0
    report = analyze(path)
    assert report.error is None and report.video_frames > 30


def test_a_restarted_pod_trims_the_part_the_old_one_was_writing(tmp_path, mp4, layout):
    rec = Recording(RecordingSpec(name="crash", format="h264"), tmp_path, FanOut())
    rec.progress.parts.append(PartInfo(path="crash/crash-part001.mp4", startedAt="t"))
    rec.persist()
    _, cut, expected_end = cut_points(layout)[1]  # inside a moof
    (tmp_path / "crash" / "crash-part001.mp4").write_bytes(mp4[:cut])

    loaded = Recording.load(tmp_path / "crash" / "recording.json", tmp_path, FanOut())

    part = loaded.progress.parts[0]
    assert part.sizeBytes == expected_end and part.endedAt is not None
    assert part.durationSeconds > 0.3
    assert analyze(tmp_path / part.path).error is None


@pytest.fixture(scope="module")
def ts_part(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("ts") / "whole.ts"
    write(path, "h264", frames(4), container="mpegts")
    return path.read_bytes()


@pytest.mark.parametrize("fraction", [0.1, 0.37, 0.5, 0.81, 0.999])
def test_a_ts_cut_anywhere_loses_at_most_its_partial_packet_and_plays(tmp_path, ts_part, fraction):
    """MPEG-TS needs no repair but the last packet's: it plays up to where it was cut."""
    assert len(ts_part) % TS_PACKET == 0
    cut = int(len(ts_part) * fraction) | 1  # never on a packet boundary
    path = tmp_path / "cut.ts"
    path.write_bytes(ts_part[:cut])

    assert trim_unfinished(path) == cut % TS_PACKET
    assert path.stat().st_size == cut - cut % TS_PACKET
    report = analyze(path)
    assert report.error is None, report.error
    assert report.video_frames >= 4 * 30 * fraction - 15 and report.audio_seconds > 0
    assert report.counters[:3] == [0, 1, 2]
    assert trim_unfinished(path) == 0  # idempotent


def test_a_restarted_pod_trims_a_ts_part_to_whole_packets(tmp_path, ts_part):
    rec = Recording(RecordingSpec(name="ts", format="h264", container="mpegts"), tmp_path, FanOut())
    rec.progress.parts.append(PartInfo(path="ts/ts-part001.ts", startedAt="t"))
    rec.persist()
    cut = len(ts_part) // 2 + 100
    (tmp_path / "ts" / "ts-part001.ts").write_bytes(ts_part[:cut])

    loaded = Recording.load(tmp_path / "ts" / "recording.json", tmp_path, FanOut())

    assert loaded.spec.container == "mpegts"
    part = loaded.progress.parts[0]
    assert part.sizeBytes == cut - cut % TS_PACKET and part.endedAt is not None
    assert part.durationSeconds == pytest.approx(2, abs=0.5)
    assert loaded._new_part().stats.path.name == "ts-part002.ts"  # resumes as TS

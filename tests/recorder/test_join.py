"""Files that play and seek like files: a completed recording's parts are joined without
re-encoding into one seekable file (WebM with Cues and Duration, MP4 with `moov` before
`mdat`), checked before the parts go; parts that cannot be joined keep their place."""

from __future__ import annotations

import asyncio
import json
import struct
from pathlib import Path

import av
import numpy as np
import pytest

from haven_localcluster import testsignal as ts
from haven_localcluster.mediacheck import analyze
from haven_recorder.fanout import FanOut
from haven_recorder.frames import VideoFrame
from haven_recorder.join import layout, video_duration
from haven_recorder.recording import Recording, RecordingSpec

from .conftest import livekit_args
from .signal import frames

WEBM_CUES, WEBM_DURATION = b"\x1c\x53\xbb\x6b", b"\x44\x89"


def _luma(frame: av.VideoFrame) -> np.ndarray:
    plane = frame.planes[0]
    rows = np.frombuffer(plane, np.uint8).reshape(frame.height, plane.line_size)
    return np.ascontiguousarray(rows[:, : frame.width])


def counters(path: Path) -> list[int | None]:
    """Every picture's counter, in order (video only)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        return [ts.decode_counter(_luma(f)) for f in container.decode(stream)]


def counter_at(path: Path, seconds: float, *, seek: bool) -> tuple[float, int]:
    """(time, counter) of the first readable picture at or after `seconds`, reached by a
    seek (as a player does) or by decoding from the start."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if seek:
            container.seek(int(seconds / stream.time_base), stream=stream, backward=True)
        for frame in container.decode(stream):
            if frame.time is None or frame.time < seconds:
                continue
            counter = ts.decode_counter(_luma(frame))
            if counter is not None:
                return frame.time, counter
    raise AssertionError(f"no readable picture at {seconds:.1f}s of {path}")


def top_level_boxes(path: Path) -> list[str]:
    data, boxes, i = path.read_bytes(), [], 0
    while i + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[i : i + 8])
        if size == 1:
            size = struct.unpack(">Q", data[i + 8 : i + 16])[0]
        boxes.append(kind.decode("latin-1"))
        if size < 8:
            break
        i += size
    return boxes


def assert_seekable(path: Path) -> None:
    if path.suffix == ".mp4":
        boxes = top_level_boxes(path)
        assert "moov" in boxes and "mdat" in boxes, boxes
        assert boxes.index("moov") < boxes.index("mdat"), boxes  # faststart
        assert "moof" not in boxes, boxes  # not fragmented
    else:
        data = path.read_bytes()
        assert WEBM_CUES in data, "no Cues"
        with av.open(str(path)) as container:
            assert container.duration and container.duration > 0  # Duration in the header


async def test_a_two_minute_recording_in_two_parts_is_joined_and_seeks_to_the_middle(
    livekit_server, publisher, stream_pod
):
    """Two recordings (MP4 and WebM) on one pod, killed with SIGKILL after 40 s, so each
    resumes into a second part; stopped at about 2 minutes, each is joined into one file
    whose middle, reached by a seek, shows the frame counter a decode from the start shows
    there (within 1 s), and whose pictures are exactly the two parts' pictures in order."""
    args = livekit_args(livekit_server, publisher)
    pod = stream_pod(*args)
    pod.wait_state("live")
    names = {"h264": "join-h264", "av1": "join-av1"}
    for fmt, name in names.items():
        pod.start_recording(name=name, format=fmt, keepParts=True)
    for name in names.values():
        pod.wait_recording(name, "recording")
    await asyncio.sleep(40)
    pod.kill()

    again = stream_pod(*args, recordings=pod.recordings)
    for name in names.values():
        again.wait_recording(name, "recording")
    await asyncio.sleep(80)
    root = pod.recordings
    # Two parts at least (a busy machine can make a gap longer than maxGapSeconds: a third).
    before = {
        fmt: [p["path"] for p in again.recording(name)["parts"]] for fmt, name in names.items()
    }
    finals = {fmt: again.stop_recording(name) for fmt, name in names.items()}
    for fmt, name in names.items():
        final = finals[fmt]
        assert final["state"] == "completed", final  # the stop answers once joined
        ext = "mp4" if fmt == "h264" else "webm"
        layouts = [layout(root / p["path"]) for p in final["parts"]]
        assert final["joinedFrom"] == before[fmt], (final["joinError"], layouts)
        assert before[fmt][:2] == [f"{name}/{name}-part001.{ext}", f"{name}/{name}-part002.{ext}"]
        assert [p["path"] for p in final["parts"]] == [f"{name}/{name}.{ext}"], final
        assert final["joinError"] is None, final
        joined = root / final["parts"][0]["path"]
        assert final["parts"][0]["sizeBytes"] == joined.stat().st_size
        assert json.loads((root / name / "recording.json").read_text()) == final
        assert_seekable(joined)

        parts = [root / p for p in final["joinedFrom"]]
        part_seconds = [video_duration(p) for p in parts]
        report = analyze(joined)
        assert report.error is None, report.error
        print(f"{name}: parts {part_seconds} s, joined {report.duration:.2f} s")
        assert report.duration > 100, report.duration
        # A part's audio can outlast its video (video is dropped first when the encoder is
        # behind); the next part follows the longer, so video alone is compared loosely here
        # (the join itself checks the sum of the parts within 1 s, audio included).
        assert final["parts"][0]["durationSeconds"] >= sum(part_seconds) - 1.0
        # Every picture of the parts, in order, and nothing else.
        assert report.counters == [c for part in parts for c in counters(part)]

        middle = final["parts"][0]["durationSeconds"] / 2
        seek_time, seek_counter = counter_at(joined, middle, seek=True)
        true_time, true_counter = counter_at(joined, middle, seek=False)
        print(f"{name}: at {middle:.2f} s a seek reads {seek_counter} ({seek_time:.3f} s), "
              f"a decode from the start {true_counter} ({true_time:.3f} s)")  # fmt: skip
        assert abs(seek_counter - true_counter) <= ts.FPS, (seek_counter, true_counter)


async def until(predicate, seconds: float = 60) -> None:
    async with asyncio.timeout(seconds):
        while not predicate():  # noqa: ASYNC110 (polls state that no event announces)
            await asyncio.sleep(0.002)


async def publish(fanout: FanOut, seconds: float, start: float, size: tuple[int, int]) -> float:
    pattern = ts.VideoPattern(*size)
    for frame in frames(seconds, start):
        if isinstance(frame, VideoFrame):
            index = round((frame.pts - start) * ts.FPS)
            frame = VideoFrame(size[0], size[1], pattern.i420(index), frame.pts)
        fanout.publish(frame)
        await until(lambda: all(len(s.queue) < 4 for s in fanout.subscriptions))
    return start + seconds


async def test_parts_of_another_size_keep_their_place_and_the_rest_are_joined(tmp_path):
    """Part 1 at 1280x720, then a square picture (a new part), then a gap longer than
    maxGapSeconds (a third part, square too): parts 2 and 3 are joined, part 1 stays."""
    fanout = FanOut()
    spec = RecordingSpec(name="rec", format="vp9", quality="low", max_gap=2.0)
    rec = Recording(spec, tmp_path, fanout)
    rec.start()
    end = await publish(fanout, 2, 1000.0, (1280, 720))
    end = await publish(fanout, 2, end, (480, 480))
    await publish(fanout, 2, end + 30, (480, 480))
    await until(lambda: len(rec._sub.queue) == 0)
    final = await rec.stop()

    assert final["state"] == "completed" and final["reason"] == "Stopped", final
    assert [p["path"] for p in final["parts"]] == [
        "rec/rec-part001.webm",
        "rec/rec-part002-003.webm",
    ], final
    assert final["joinedFrom"] == ["rec/rec-part002.webm", "rec/rec-part003.webm"]
    assert sorted(f.name for f in (tmp_path / "rec").glob("*.webm")) == [
        "rec-part001.webm",
        "rec-part002-003.webm",
    ]  # the joined parts are gone (keepParts is false)
    first, joined = (analyze(tmp_path / p["path"]) for p in final["parts"])
    assert first.error is None and (first.width, first.height) == (1280, 720)
    assert joined.error is None and (joined.width, joined.height) == (480, 480)
    assert abs(joined.duration - 4) < 0.3, joined.duration
    assert abs(final["parts"][1]["durationSeconds"] - joined.duration) < 0.1
    assert_seekable(tmp_path / final["parts"][1]["path"])
    assert final["bytesWritten"] == sum(
        (tmp_path / p["path"]).stat().st_size for p in final["parts"]
    )


async def test_mpegts_parts_are_remuxed_into_one_ts_with_one_rising_clock(tmp_path):
    """Two TS parts (a gap longer than maxGapSeconds between them) become one .ts whose
    timestamps rise across the join (a byte concatenation would start again at zero), with
    both parts' pictures in order and audio in sync."""
    fanout = FanOut()
    spec = RecordingSpec(name="tv", format="h264", container="mpegts", quality="low", max_gap=2.0)
    rec = Recording(spec, tmp_path, fanout)
    rec.start()
    end = await publish(fanout, 3, 1000.0, (1280, 720))
    await publish(fanout, 3, end + 30, (1280, 720))
    await until(lambda: len(rec._sub.queue) == 0)
    final = await rec.stop()

    assert final["container"] == "mpegts" and final["joinError"] is None, final
    assert final["joinedFrom"] == ["tv/tv-part001.ts", "tv/tv-part002.ts"], final
    assert [p["path"] for p in final["parts"]] == ["tv/tv.ts"], final
    path = tmp_path / "tv" / "tv.ts"
    assert path.stat().st_size % 188 == 0 and not (tmp_path / "tv" / "tv-part001.ts").exists()
    with av.open(str(path)) as container:
        assert container.format.name == "mpegts"
        video = container.streams.video[0]
        times = [
            float(p.pts * video.time_base) for p in container.demux(video) if p.pts is not None
        ]
    assert times == sorted(times) and times[-1] == pytest.approx(6, abs=0.3), times[-5:]
    joined = analyze(path)
    assert joined.error is None and joined.audio_seconds == pytest.approx(6, abs=0.3)
    seen = [c for c in counters(path) if c is not None]
    assert seen[:3] == [0, 1, 2] and seen.count(0) == 2  # each part's pictures, in order
    assert max(abs(o) for o in joined.av_offsets()) <= 0.04, joined.av_offsets()

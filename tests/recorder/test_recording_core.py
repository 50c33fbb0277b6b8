"""A recording's own correctness, in process on the test signal (no LiveKit): stop means stop,
queues bounded in bytes that drop video before audio and say so, gaps that start a new part,
maxDuration that fires with no frames arriving, and state on the volume that is never skipped.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

import av
import numpy as np
import pytest

from haven_localcluster import testsignal as ts
from haven_localcluster.mediacheck import analyze
from haven_recorder.fanout import FanOut
from haven_recorder.frames import AudioFrame, VideoFrame
from haven_recorder.recording import (
    VIDEO_QUEUE_BYTES,
    Recording,
    Recordings,
    RecordingSpec,
    TooManyRecordings,
)

from .signal import frames


async def publish_live(fanout: FanOut, seconds: float, start: float = 1000.0) -> float:
    """Publish the test signal no faster than the recordings take it (none drops a frame);
    returns the pts after it."""
    for frame in frames(seconds, start):
        fanout.publish(frame)
        await until(lambda: all(len(s.queue) < 4 for s in fanout.subscriptions))
    return start + seconds


async def until(predicate, seconds: float = 60) -> None:
    async with asyncio.timeout(seconds):
        while not predicate():  # noqa: ASYNC110 (polls state that no event announces)
            await asyncio.sleep(0.002)


def start(tmp_path: Path, fanout: FanOut, channels: int = 1, **spec) -> Recording:
    spec = {"name": "rec", "format": "h264", **spec}
    rec = Recording(RecordingSpec(**spec), tmp_path, fanout, lambda: channels)
    rec.start()
    return rec


async def test_a_backlog_drops_video_and_keeps_audio_and_says_degraded(tmp_path):
    fanout = FanOut()
    rec = start(tmp_path, fanout)
    end = await publish_live(fanout, 1)  # the part opens
    await until(lambda: rec.progress.state == "recording")
    # Then 8 s arrive at once, far faster than any encoder: more video than the byte bound.
    burst = list(frames(8, start=end))
    for frame in burst:
        fanout.publish(frame)
    video = [f for f in burst if isinstance(f, VideoFrame)]
    assert sum(f.nbytes for f in video) > 2 * VIDEO_QUEUE_BYTES
    await until(lambda: len(rec._sub.queue) == 0)
    during = rec.to_json()
    final = await rec.stop()

    assert during["degraded"] and during["reason"] == "EncoderBehind", during
    assert final["videoFramesDropped"] > 0 and final["audioFramesDropped"] == 0, final
    assert final["framesDropped"] == final["videoFramesDropped"]
    report = analyze(tmp_path / final["parts"][0]["path"])
    assert report.error is None
    # Every audio frame reached the file: 9 s of it, while video skipped most of the burst.
    assert abs(report.audio_seconds - 9) < 0.1, report.audio_seconds
    assert final["framesWritten"] + final["videoFramesDropped"] == 9 * ts.FPS, final


async def test_stop_takes_no_frame_after_it_and_writes_what_came_before(tmp_path):
    fanout = FanOut()
    rec = start(tmp_path, fanout, format="av1", quality="high")
    end = await publish_live(fanout, 1)
    await until(lambda: rec.progress.state == "recording")
    # A backlog the encoder cannot clear at once (a 4K burst), then the stop.
    big = ts.VideoPattern(3840, 2160)
    for i in range(12):
        fanout.publish(VideoFrame(3840, 2160, big.i420(100 + i), end + i / ts.FPS))
    stopping = asyncio.create_task(rec.stop())
    await asyncio.sleep(0)
    # Frames published after the stop are not taken, whatever the recording is doing.
    after = [dataclasses.replace(f, pts=f.pts + 100) for f in frames(1, start=end + 1)]
    for frame in after:
        fanout.publish(frame)
    final = await stopping

    assert final["state"] == "completed" and final["reason"] == "Stopped", final
    assert rec._sub not in fanout.subscriptions
    published_video = ts.FPS + 12
    assert final["framesWritten"] + final["videoFramesDropped"] == published_video, final
    with av.open(str(tmp_path / final["parts"][0]["path"])) as container:
        stream = container.streams.video[0]
        last = max(float(p.pts * stream.time_base) for p in container.demux(stream) if p.pts)
    assert last < 1 + 12 / ts.FPS, last  # nothing from after the stop


async def test_a_gap_longer_than_max_gap_starts_a_new_part_instead_of_silence(tmp_path):
    fanout = FanOut()
    rec = start(tmp_path, fanout, max_gap=5.0, keep_parts=True)
    end = await publish_live(fanout, 2)
    await publish_live(fanout, 2, start=end + 3)  # 3 s away: the same part, padded
    await publish_live(fanout, 2, start=end + 3 + 2 + 3600)  # an hour away: a new part
    await until(lambda: len(rec._sub.queue) == 0)
    final = await rec.stop()

    # Two parts, joined once the recording completed into one file without the hour's gap.
    assert final["joinedFrom"] == ["rec/rec-part001.mp4", "rec/rec-part002.mp4"], final
    assert [p["path"] for p in final["parts"]] == ["rec/rec.mp4"], final
    joined = analyze(tmp_path / final["parts"][0]["path"])
    assert joined.error is None and abs(joined.duration - 9) < 0.3, joined
    first, second = (analyze(tmp_path / path) for path in final["joinedFrom"])
    assert first.error is None and second.error is None
    assert abs(first.duration - 7) < 0.2 and abs(first.audio_seconds - 7) < 0.1, first
    assert abs(second.duration - 2) < 0.2 and abs(second.audio_seconds - 2) < 0.1, second


async def test_max_duration_ends_a_recording_whose_stream_sends_nothing(tmp_path):
    fanout = FanOut()
    rec = start(tmp_path, fanout, max_duration=0.5)
    await publish_live(fanout, 0.2)  # a moment of stream, then it goes offline for good
    await until(lambda: not rec.active, 30)
    final = await rec.stop()
    assert (final["state"], final["reason"]) == ("completed", "MaxDurationReached"), final


async def test_the_state_file_holds_the_final_state_when_stop_returns(tmp_path):
    fanout = FanOut()
    rec = start(tmp_path, fanout, format="vp9")
    await publish_live(fanout, 1)
    final = await rec.stop()
    saved = json.loads((tmp_path / "rec" / "recording.json").read_text())
    assert saved == final
    assert not list((tmp_path / "rec").glob(".*.tmp"))


async def test_an_unreadable_state_file_is_listed_as_failed_with_its_files(tmp_path):
    part = tmp_path / "broken" / "broken-part001.webm"
    part.parent.mkdir()
    part.write_bytes(b"\x1a\x45\xdf\xa3 a part")
    (part.parent / "recording.json").write_text('{"name": "broken", "spec": ')  # cut short
    recordings = Recordings(tmp_path, FanOut())
    assert await recordings.resume() == []
    listed = recordings.items["broken"].to_json()
    assert (listed["state"], listed["reason"]) == ("failed", "StateUnreadable"), listed
    assert "recording.json could not be read" in listed["error"]
    assert [p["path"] for p in listed["parts"]] == ["broken/broken-part001.webm"]
    assert listed["parts"][0]["sizeBytes"] == part.stat().st_size


async def test_the_number_of_running_recordings_is_capped(tmp_path):
    fanout = FanOut()
    recordings = Recordings(tmp_path, fanout, max_recordings=2)
    for name in ("a", "b"):
        recordings.start(RecordingSpec(name=name))
    assert recordings.start(RecordingSpec(name="a"))[1] is False  # a repeat is no new one
    with pytest.raises(TooManyRecordings, match="--max-recordings 2"):
        recordings.start(RecordingSpec(name="c"))
    await recordings.items["a"].stop()
    recordings.start(RecordingSpec(name="c"))  # room again
    for rec in recordings.items.values():
        await rec.stop()


async def test_stereo_audio_is_recorded_in_stereo(tmp_path):
    fanout = FanOut()
    rec = start(tmp_path, fanout, channels=2, format="vp9")  # the stream says stereo
    for frame in frames(2):
        if isinstance(frame, AudioFrame):
            mono = frame.pcm()
            stereo = mono.repeat(2, axis=1)
            stereo[:, 1] //= 2  # the right channel is quieter: the two differ
            frame = AudioFrame(stereo.tobytes(), frame.sample_rate, 2, frame.pts)
        fanout.publish(frame)
        await asyncio.sleep(0)
    final = await rec.stop()
    with av.open(str(tmp_path / final["parts"][0]["path"])) as container:
        assert container.streams.audio[0].codec_context.channels == 2
        left = right = 0.0
        for decoded in container.decode(audio=0):
            pcm = decoded.to_ndarray().astype(np.float64)
            pcm = pcm if decoded.format.is_planar else pcm.reshape(-1, 2).T
            left += float(np.abs(pcm[0]).sum())
            right += float(np.abs(pcm[1]).sum())
    assert left > 1.5 * right > 0, (left, right)

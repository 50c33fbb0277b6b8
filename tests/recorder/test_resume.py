"""A recording's state on the volume after a crash: what the next pod makes of it."""

from __future__ import annotations

import asyncio
import json

from haven_localcluster.mediacheck import analyze

from .conftest import livekit_args


async def test_a_crash_while_stopping_completes_the_recording_and_does_not_resume_it(
    livekit_server, publisher, stream_pod
):
    args = livekit_args(livekit_server, publisher)
    pod = stream_pod(*args)
    pod.wait_state("live")
    pod.start_recording(name="halfway", format="h264")
    pod.wait_recording("halfway", "recording")
    await asyncio.sleep(3)
    pod.kill()
    # What a pod killed during its stop leaves: the state file says the stop was under way.
    state_file = pod.recordings / "halfway" / "recording.json"
    state = json.loads(state_file.read_text())
    state["state"] = "stopping"
    state_file.write_text(json.dumps(state))

    again = stream_pod(*args, recordings=pod.recordings)
    again.wait_state("live")
    rec = again.recording("halfway")
    assert rec["state"] == "completed" and [p["path"] for p in rec["parts"]] == [
        "halfway/halfway-part001.mp4"
    ], rec
    assert "halfway" not in again.status()["activeRecordings"]
    part = analyze(pod.recordings / rec["parts"][0]["path"])
    assert part.error is None and part.duration > 1, part
    assert rec["parts"][0]["sizeBytes"] == (pod.recordings / rec["parts"][0]["path"]).stat().st_size


async def test_max_duration_counts_from_the_first_start_across_a_restart(
    livekit_server, publisher, stream_pod
):
    args = livekit_args(livekit_server, publisher)
    pod = stream_pod(*args)
    pod.wait_state("live")
    pod.start_recording(name="capped", format="h264", maxDurationSeconds=20)
    pod.wait_recording("capped", "recording")
    await asyncio.sleep(3)
    pod.kill()

    again = stream_pod(*args, recordings=pod.recordings)
    final = again.wait_recording("capped", "completed", timeout=60)
    assert final["reason"] == "MaxDurationReached" and len(final["joinedFrom"]) == 2, final
    # The time the pod was down counts too: the two parts hold at most 20 s between them.
    assert sum(p["durationSeconds"] for p in final["parts"]) <= 20.1, final["parts"]


async def test_webm_resumes_into_the_next_free_part_number(livekit_server, publisher, stream_pod):
    args = livekit_args(livekit_server, publisher)
    pod = stream_pod(*args)
    pod.wait_state("live")
    pod.start_recording(name="webm", format="vp9")
    pod.wait_recording("webm", "recording")
    await asyncio.sleep(3)
    pod.kill()
    stray = pod.recordings / "webm" / "webm-part002.webm"
    stray.write_bytes(b"someone else's file")  # a part is never overwritten

    again = stream_pod(*args, recordings=pod.recordings)
    again.wait_recording("webm", "recording")
    await asyncio.sleep(3)
    final = again.stop_recording("webm")
    assert final["joinedFrom"] == ["webm/webm-part001.webm", "webm/webm-part003.webm"]
    assert stray.read_bytes() == b"someone else's file"  # not a part: not joined, not removed
    for part in final["parts"]:
        report = analyze(pod.recordings / part["path"])
        assert report.error is None and report.duration > 1 and report.audio_seconds > 1, report
        assert abs(part["durationSeconds"] - report.duration) <= 0.2, (part, report.duration)

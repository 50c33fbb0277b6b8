"""The control API's bounds on a real stream pod process: numbers finite and in range, names that
fit a file name, a cap on running recordings, maxDuration with no stream at all, and a state
file that cannot be read. The pod points at a LiveKit URL where nothing listens: everything
here works while the stream is offline."""

from __future__ import annotations

import asyncio
import json

import pytest

OFFLINE = [
    "--livekit-url", "ws://127.0.0.1:9", "--room", "nowhere",
    "--api-key", "key", "--api-secret", "secret-secret-secret-secret-secret",
]  # fmt: skip


@pytest.mark.parametrize(
    "body",
    [
        b'{"name": "big", "maxDurationSeconds": 1e400}',
        b'{"name": "inf", "maxDurationSeconds": Infinity}',
        b'{"name": "nan", "maxDurationSeconds": NaN}',
        b'{"name": "gap", "maxGapSeconds": 0}',
        b'{"name": "gap", "maxGapSeconds": 1e9}',
        b'{"name": "wide", "maxWidth": 1e400}',
        b'{"name": "Upper"}',
        b'{"name": "a/b"}',
        b'{"name": ".."}',
        ('{"name": "%s"}' % ("a" * 101)).encode(),
    ],
    ids=[
        "1e400",
        "Infinity",
        "NaN",
        "gap-0",
        "gap-1e9",
        "width-1e400",
        "upper",
        "slash",
        "dots",
        "101-chars",
    ],
)
def test_out_of_range_requests_are_refused_and_listing_still_works(stream_pod, body):
    pod = stream_pod(*OFFLINE)
    resp = pod.http(
        "POST", "/recordings", content=body, headers={"content-type": "application/json"}
    )
    assert resp.status_code == 422, resp.text
    listed = pod.http("GET", "/recordings")
    assert listed.status_code == 200 and listed.json() == {"recordings": []}, listed.text


def test_the_longest_name_fits_its_files(stream_pod):
    pod = stream_pod(*OFFLINE)
    name = "a" * 100
    assert pod.start_recording(name=name, format="vp9")["state"] == "starting"
    assert pod.stop_recording(name)["state"] == "completed"  # saved before it answers
    saved = json.loads((pod.recordings / name / "recording.json").read_text())
    assert (saved["name"], saved["state"]) == (name, "completed")


def test_running_recordings_are_capped(stream_pod):
    pod = stream_pod(*OFFLINE, "--max-recordings", "2")
    pod.start_recording(name="one")
    pod.start_recording(name="two")
    pod.start_recording(name="one")  # the same again is no new recording
    resp = pod.http("POST", "/recordings", json={"name": "three"})
    assert resp.status_code == 429, resp.text
    assert "--max-recordings 2" in resp.json()["detail"]
    pod.stop_recording("one")
    pod.start_recording(name="three")


async def test_max_duration_ends_a_recording_while_the_stream_is_offline(stream_pod):
    pod = stream_pod(*OFFLINE)
    pod.start_recording(name="offline", maxDurationSeconds=1)
    final = await asyncio.to_thread(pod.wait_recording, "offline", "completed", 30)
    assert final["reason"] == "MaxDurationReached" and final["parts"] == [], final


def test_an_unreadable_state_file_is_listed_as_failed(stream_pod, tmp_path):
    recordings = tmp_path / "recordings"
    (recordings / "garbled").mkdir(parents=True)
    (recordings / "garbled" / "recording.json").write_bytes(b"\x00\xff not json")
    (recordings / "ok").mkdir()
    (recordings / "ok" / "recording.json").write_text(json.dumps({"name": "ok"}))  # no spec
    pod = stream_pod(*OFFLINE, recordings=recordings)
    listed = {r["name"]: r for r in pod.http("GET", "/recordings").json()["recordings"]}
    assert set(listed) == {"garbled", "ok"}
    for rec in listed.values():
        assert (rec["state"], rec["reason"]) == ("failed", "StateUnreadable"), rec
        assert "recording.json could not be read" in rec["error"]

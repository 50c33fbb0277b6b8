"""Recordings end cleanly at maxDuration, and a full disk fails one recording with a clear
error while the stream and its viewers carry on."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time

import pytest
import websockets

from haven_localcluster.mediacheck import analyze

from .conftest import livekit_args


async def test_max_duration_ends_the_recording_cleanly(livekit_server, publisher, stream_pod):
    pod = stream_pod(*livekit_args(livekit_server, publisher))
    pod.wait_state("live")
    pod.start_recording(name="short", format="vp9", maxDurationSeconds=4)
    final = await asyncio.to_thread(pod.wait_recording, "short", "completed", 30)
    assert final["reason"] == "MaxDurationReached", final
    report = analyze(pod.recordings / final["parts"][0]["path"])
    assert report.error is None and 2.5 < report.duration <= 4.5, report.duration


@pytest.fixture
def small_disk(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount = tmp_path / "small-disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


async def test_a_full_disk_fails_the_recording_clearly_and_nothing_else(
    livekit_server, publisher, stream_pod, small_disk
):
    pod = stream_pod(*livekit_args(livekit_server, publisher), recordings=small_disk)
    pod.wait_state("live")
    pod.start_recording(name="fills", format="h264", quality="high")
    pod.wait_recording("fills", "recording")
    # Some fragments on disk first (h264 fragments end at keyframes), then fill the disk.
    deadline = time.monotonic() + 30
    while pod.recording("fills")["durationSeconds"] < 3 and time.monotonic() < deadline:
        time.sleep(0.2)  # noqa: ASYNC251 (the pod is another process; nothing here to starve)
    filler = small_disk / "filler"
    # Take all but a little of the disk: the recording runs into the wall within seconds.
    free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
    filler.write_bytes(b"\0" * max(0, free - 200_000))
    failed = await asyncio.to_thread(pod.wait_recording, "fills", "failed", 60)
    assert failed["reason"] == "DiskFull" and "disk full" in failed["error"], failed
    # The volume says so too, so a restarted pod does not resume it.
    saved = json.loads((small_disk / "fills" / "recording.json").read_text())
    assert (saved["state"], saved["reason"]) == ("failed", "DiskFull"), saved

    # The stream and its viewers carry on.
    assert pod.status()["state"] == "live"
    async with websockets.connect(pod.ws_url, max_size=None) as ws:
        async with asyncio.timeout(10):
            while json.loads(await ws.recv())["type"] != "video_frame":
                pass
    # What was written before the disk filled still plays: the half-written fragment is cut.
    written = analyze(small_disk / failed["parts"][0]["path"])
    assert written.error is None and written.video_frames > 0, written.error

    filler.unlink()
    pod.start_recording(name="after", format="h264")
    pod.wait_recording("after", "recording")
    await asyncio.sleep(2)
    assert pod.stop_recording("after")["state"] == "completed"

"""Object storage: the stream pod uploads its recordings, while they record, to a real
S3-compatible server (versitygw, built from the Go module proxy), and nothing is lost when the
server, the keys or the pod fail."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import httpx
import pytest

from haven_localcluster.process import stop
from haven_localcluster.s3server import S3Server
from haven_localcluster.streampod import StreamPod
from haven_recorder.upload import MIN_CHUNK_BYTES

from .conftest import livekit_args
from .noise_publisher import spawn_noise_publisher

CHUNK = MIN_CHUNK_BYTES  # the smallest S3 allows: a few seconds of 720p H.264 at high quality
RECORDING = {"format": "h264", "quality": "high"}


@pytest.fixture
def noise_room(livekit_server, tmp_path):
    """A room with a publisher of video noise (recordings of it grow fast); its name."""
    room = f"noise-{uuid.uuid4().hex[:8]}"
    server = livekit_server
    proc = spawn_noise_publisher(server.url, server.api_key, server.api_secret, room, tmp_path)
    yield room
    stop([proc])


def storage_args(
    s3: S3Server, bucket: str, tmp_path: Path, *extra: str, secret: str | None = None
) -> list[str]:
    """Flags for uploads to `bucket`, with the keys in files (as a mounted Secret gives them)."""
    keys = tmp_path / f"keys-{uuid.uuid4().hex[:6]}"
    keys.mkdir()
    (keys / "id").write_text(s3.access_key_id)
    (keys / "secret").write_text(secret or s3.secret_access_key)
    return [
        "--s3-endpoint", s3.endpoint, "--s3-bucket", bucket, "--s3-prefix", "rec/",
        "--s3-force-path-style", "true", "--upload-chunk-bytes", str(CHUNK),
        "--upload-retry-max-seconds", "2",
        "--s3-access-key-id-file", str(keys / "id"),
        "--s3-secret-access-key-file", str(keys / "secret"),
        *extra,
    ]  # fmt: skip


def fetch(s3: S3Server, bucket: str, key: str) -> bytes:
    async def get() -> bytes:
        client = s3.client(bucket)
        try:
            return await client.get_object(key)
        finally:
            await client.aclose()

    return asyncio.run(get())


async def wait_for(pod: StreamPod, name: str, check, seconds: float, what: str) -> dict:
    """Poll the recording until `check(state)` holds."""
    deadline = time.monotonic() + seconds
    rec: dict = {}
    while time.monotonic() < deadline:
        try:
            rec = pod.recording(name)
        except httpx.HTTPError:
            rec = {}
        if rec and check(rec):
            return rec
        await asyncio.sleep(0.5)
    raise AssertionError(f"recording {name}: not {what} after {seconds}s: {json.dumps(rec)}")


def growing_chunks_up(rec: dict) -> int:
    """Chunks that went up while their part was still being written."""
    return sum(
        bool(c.get("growing"))
        for p in rec.get("parts", [])
        for c in (p.get("upload") or {}).get("chunks", [])
    )


def assert_all_uploaded(s3: S3Server, bucket: str, root: Path, rec: dict) -> None:
    """Every file of the recording is an object equal to it, byte for byte."""
    assert rec["uploaded"] is True and rec["upload"]["reason"] == "Uploaded", rec
    for part in rec["parts"]:
        assert part["uploaded"] is True and part["url"] == f"s3://{bucket}/rec/{part['path']}"
        local = (root / part["path"]).read_bytes()
        assert fetch(s3, bucket, f"rec/{part['path']}") == local, part["path"]
        assert s3.object_path(bucket, f"rec/{part['path']}").read_bytes() == local


async def test_a_recording_goes_up_while_it_records_and_equals_the_local_files(
    livekit_server, noise_room, stream_pod, s3_server, tmp_path
):
    bucket = s3_server.bucket(f"up-{uuid.uuid4().hex[:8]}")
    args = livekit_args(livekit_server, noise_room)
    pod = stream_pod(*args, *storage_args(s3_server, bucket, tmp_path))
    pod.wait_state("live")
    pod.start_recording(name="up", **RECORDING)
    # A chunk is in the bucket while the part still grows.
    during = await wait_for(pod, "up", lambda r: growing_chunks_up(r) >= 1, 120, "a chunk up")
    assert during["state"] == "recording", during
    assert during["uploaded"] is False and during["upload"]["reason"] == "Uploading", during
    # The upload's id and its chunks are on the volume, where a next pod finds them.
    on_disk = json.loads((pod.recordings / "up" / "recording.json").read_text())
    assert any((p["upload"] or {}).get("uploadId") for p in on_disk["parts"]), on_disk
    await asyncio.sleep(2)
    pod.stop_recording("up")
    final = await wait_for(pod, "up", lambda r: r.get("uploaded"), 120, "uploaded")
    # The parts were joined into one file (join.py): that file is the object now.
    assert "up/up.mp4" in [p["path"] for p in final["parts"]], final
    assert_all_uploaded(s3_server, bucket, pod.recordings, final)
    metrics = pod.http("GET", "/metrics").text
    assert 'haven_upload_bytes_total{recording="up"}' in metrics

"""Object storage: the stream pod uploads its recordings, while they record, to a real
S3-compatible server (versitygw, built from the Go module proxy), and nothing is lost when the
server, the keys or the pod fail."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from pathlib import Path

import httpx
import pytest

from haven_localcluster.mediacheck import analyze
from haven_localcluster.s3server import S3Server
from haven_localcluster.streampod import StreamPod
from haven_recorder.config import parse
from haven_recorder.upload import MIN_CHUNK_BYTES

from .conftest import livekit_args
from .test_recording_limits import small_disk  # noqa: F401 (a fixture)

CHUNK = MIN_CHUNK_BYTES  # the smallest S3 allows: a few seconds of 720p H.264 at high quality
RECORDING = {"format": "h264", "quality": "high", "audio": False}  # the noise has no sound


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


async def fetch(s3: S3Server, bucket: str, key: str) -> bytes:
    """The object, by GetObject."""
    client = s3.client(bucket)
    try:
        return await client.get_object(key)
    finally:
        await client.aclose()


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


async def assert_all_uploaded(s3: S3Server, bucket: str, root: Path, rec: dict) -> None:
    """Every file of the recording is an object equal to it, byte for byte."""
    assert rec["uploaded"] is True and rec["upload"]["reason"] == "Uploaded", rec
    for part in rec["parts"]:
        assert part["uploaded"] is True and part["url"] == f"s3://{bucket}/rec/{part['path']}"
        local = (root / part["path"]).read_bytes()
        assert await fetch(s3, bucket, f"rec/{part['path']}") == local, part["path"]
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
    await assert_all_uploaded(s3_server, bucket, pod.recordings, final)
    metrics = pod.http("GET", "/metrics").text
    assert 'haven_upload_bytes_total{recording="up"}' in metrics


async def test_the_server_killed_mid_recording_and_back_loses_nothing(
    livekit_server, noise_room, stream_pod, s3_server, tmp_path
):
    bucket = s3_server.bucket(f"outage-{uuid.uuid4().hex[:8]}")
    args = livekit_args(livekit_server, noise_room)
    pod = stream_pod(*args, *storage_args(s3_server, bucket, tmp_path))
    pod.wait_state("live")
    pod.start_recording(name="outage", **RECORDING)
    await wait_for(pod, "outage", lambda r: growing_chunks_up(r) >= 1, 120, "a chunk up")
    s3_server.kill()
    try:
        down = await wait_for(
            pod, "outage", lambda r: r["upload"]["reason"] == "UploadFailed", 120, "failing"
        )
        assert down["uploaded"] is False and down["upload"]["message"], down
        assert down["state"] == "recording", down  # the recording carries on
        await asyncio.sleep(5)
    finally:
        s3_server.start()  # same port, same data: the upload in progress is still there
    pod.stop_recording("outage")
    final = await wait_for(pod, "outage", lambda r: r.get("uploaded"), 180, "uploaded")
    assert final["upload"]["failures"] >= 1, final
    await assert_all_uploaded(s3_server, bucket, pod.recordings, final)
    assert "haven_upload_failures_total" in pod.http("GET", "/metrics").text


async def test_wrong_keys_say_so_and_keep_the_local_files(
    livekit_server, noise_room, stream_pod, s3_server, tmp_path
):
    bucket = s3_server.bucket(f"keys-{uuid.uuid4().hex[:8]}")
    args = livekit_args(livekit_server, noise_room)
    flags = storage_args(
        s3_server, bucket, tmp_path, "--delete-local-after-upload", "true", secret="not-the-key"
    )
    pod = stream_pod(*args, *flags)
    pod.wait_state("live")
    pod.start_recording(name="keys", **RECORDING)
    failing = await wait_for(
        pod, "keys", lambda r: r.get("upload", {}).get("reason") == "UploadFailed", 120, "failing"
    )
    assert "SignatureDoesNotMatch" in failing["upload"]["message"], failing
    pod.stop_recording("keys")
    await asyncio.sleep(3)  # retries go on; nothing is deleted
    final = pod.recording("keys")
    assert final["state"] == "completed" and final["uploaded"] is False, final
    assert final["upload"]["reason"] == "UploadFailed", final
    # The server's words for the latest refusal (a HEAD's 403 has no body to quote).
    message = final["upload"]["message"]
    assert "SignatureDoesNotMatch" in message or "403" in message, final
    for part in final["parts"]:
        assert part["uploaded"] is False
        assert (pod.recordings / part["path"]).stat().st_size == part["sizeBytes"] > 0, part
    assert not list(s3_server.data_dir.joinpath(bucket).rglob("*.mp4"))


async def test_a_pod_killed_mid_upload_is_resumed_by_the_next(
    livekit_server, noise_room, stream_pod, s3_server, tmp_path
):
    bucket = s3_server.bucket(f"resume-{uuid.uuid4().hex[:8]}")
    args = [*livekit_args(livekit_server, noise_room), *storage_args(s3_server, bucket, tmp_path)]
    pod = stream_pod(*args)
    pod.wait_state("live")
    pod.start_recording(name="resume", **RECORDING)
    before = await wait_for(pod, "resume", lambda r: growing_chunks_up(r) >= 1, 120, "a chunk up")
    pod.kill()  # SIGKILL, mid-upload
    state = json.loads((pod.recordings / "resume" / "recording.json").read_text())
    started = {p["path"]: p["upload"]["uploadId"] for p in state["parts"] if p.get("upload")}
    assert any(started.values()), state

    again = stream_pod(*args, recordings=pod.recordings)
    again.wait_state("live")
    first = next(path for path, upload_id in started.items() if upload_id)

    def carried_on(rec: dict) -> bool:  # the killed pod's upload, completed by the next
        part = next((p for p in rec["parts"] if p["path"] == first), None)
        return bool(part and part["uploaded"] and part["upload"]["uploadId"] == started[first])

    resumed = await wait_for(again, "resume", carried_on, 180, f"{first} uploaded")
    assert len(resumed["parts"]) >= 2 and resumed["state"] in ("starting", "recording"), resumed
    local = (again.recordings / first).read_bytes()  # as the next pod cut it back, if it did
    assert await fetch(s3_server, bucket, f"rec/{first}") == local
    again.stop_recording("resume")
    final = await wait_for(again, "resume", lambda r: r.get("uploaded"), 180, "uploaded")
    await assert_all_uploaded(s3_server, bucket, again.recordings, final)
    assert before["state"] == "recording", before


async def test_a_pod_on_another_node_completes_the_lost_pods_upload(
    livekit_server, noise_room, stream_pod, s3_server, tmp_path
):
    """A node lost mid-recording, its volume with it: the next pod, on an empty volume, is
    handed the open uploads (as the operator keeps them in the Recording's status) and
    completes each from the chunks the server holds; at most the last chunk is lost."""
    bucket = s3_server.bucket(f"xnode-{uuid.uuid4().hex[:8]}")
    args = [*livekit_args(livekit_server, noise_room), *storage_args(s3_server, bucket, tmp_path)]
    pod = stream_pod(*args, recordings=tmp_path / "node-a")
    pod.wait_state("live")
    pod.start_recording(name="xnode", **RECORDING)
    up = await wait_for(
        pod,
        "xnode",
        lambda r: r["upload"]["openUploads"] and growing_chunks_up(r) >= 1,
        120,
        "a chunk up",
    )
    pod.kill()  # the node is lost, and its volume: only what the status said is left
    open_uploads = up["upload"]["openUploads"]
    assert open_uploads and set(open_uploads[0]) == {"path", "key", "uploadId"}, up
    lost = open_uploads[0]
    chunks_up = growing_chunks_up(up)

    again = stream_pod(*args, recordings=tmp_path / "node-b")  # empty
    again.wait_state("live")
    bad = again.http(
        "POST",
        "/recordings",
        json={**RECORDING, "name": "xnode", "resumeUploads": [{**lost, "path": "other/x.mp4"}]},
    )
    assert bad.status_code == 422 and "not a part of xnode" in bad.text, bad.text
    started = again.start_recording(name="xnode", **RECORDING, resumeUploads=open_uploads)
    assert started["parts"][0]["path"] == lost["path"], started

    def completed(rec: dict) -> bool:
        part = next((p for p in rec["parts"] if p["path"] == lost["path"]), None)
        return bool(part and part["uploaded"]) and len(rec["parts"]) >= 2

    rec = await wait_for(again, "xnode", completed, 180, f"{lost['path']} completed")
    part = rec["parts"][0]
    assert part["upload"]["localMissing"] and part["url"] == f"s3://{bucket}/{lost['key']}", part
    assert lost not in rec["upload"]["openUploads"], rec
    data = await fetch(s3_server, bucket, lost["key"])
    assert len(data) == part["sizeBytes"] >= chunks_up * CHUNK, (len(data), part)
    obj = tmp_path / "completed.mp4"
    obj.write_bytes(data)
    report = analyze(obj)
    assert report.video_codec == "h264" and report.video_frames > 0, report
    second = rec["parts"][1]["path"]
    assert second != lost["path"], rec  # the recording goes on in a new part

    # Lost again, once a chunk of the second part is up: the next pod is handed the file that
    # is complete (status.files) and the open upload. It lists the first as it is, completes
    # the second, and numbers its own part after both: no object is written twice.
    def second_open(r: dict) -> bool:
        entry = next((u for u in r["upload"]["openUploads"] if u["path"] == second), None)
        return bool(entry) and growing_chunks_up({"parts": r["parts"][1:2]}) >= 1

    up = await wait_for(again, "xnode", second_open, 120, f"a chunk of {second} up")
    again.kill()
    uploaded = [
        {k: p[k] for k in ("path", "url", "sizeBytes", "durationSeconds", "startedAt", "endedAt")}
        for p in up["parts"]
        if p["uploaded"]
    ]
    assert [f["path"] for f in uploaded] == [lost["path"]], up
    third = stream_pod(*args, recordings=tmp_path / "node-c")  # empty too
    third.wait_state("live")
    started = third.start_recording(
        name="xnode", **RECORDING, resumeUploads=up["upload"]["openUploads"], uploadedFiles=uploaded
    )
    assert [p["path"] for p in started["parts"][:2]] == [lost["path"], second], started
    assert started["parts"][0]["uploaded"] and started["parts"][0]["sizeBytes"] == len(data)

    def all_three(r: dict) -> bool:
        return len(r["parts"]) >= 3 and all(p["uploaded"] for p in r["parts"][:2])

    rec = await wait_for(third, "xnode", all_three, 180, f"{second} completed, a third part")
    assert rec["parts"][2]["path"] not in (lost["path"], second), rec
    third.stop_recording("xnode")
    final = await wait_for(third, "xnode", lambda r: r.get("uploaded"), 180, "uploaded")
    paths = [p["path"] for p in final["parts"]]
    assert lost["path"] in paths and second in paths, final  # still listed, still up
    assert await fetch(s3_server, bucket, lost["key"]) == data  # never written over
    # The same open upload handed over again (the status not yet updated) changes nothing.
    assert third.start_recording(name="xnode", **RECORDING, resumeUploads=open_uploads)["uploaded"]


async def test_a_full_disk_loses_nothing_that_was_written(
    livekit_server,
    noise_room,
    stream_pod,
    s3_server,
    tmp_path,
    small_disk,  # noqa: F811 (the fixture imported above)
):
    """The volume fills mid-recording: the recording fails (DiskFull), its part is cut back to
    whole fragments, and that file still goes up whole, equal to the local file byte for byte
    (a chunk that went up while it grew and was cut since goes up again)."""
    bucket = s3_server.bucket(f"full-{uuid.uuid4().hex[:8]}")
    args = [*livekit_args(livekit_server, noise_room), *storage_args(s3_server, bucket, tmp_path)]
    pod = stream_pod(*args, recordings=small_disk)
    pod.wait_state("live")
    pod.start_recording(name="fills", **RECORDING)
    await wait_for(pod, "fills", lambda r: r["durationSeconds"] >= 3, 60, "3 s recorded")
    free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
    (small_disk / "filler").write_bytes(b"\0" * max(0, free - 200_000))
    failed = await wait_for(pod, "fills", lambda r: r["state"] == "failed", 60, "failed")
    assert failed["reason"] == "DiskFull", failed
    final = await wait_for(pod, "fills", lambda r: r.get("uploaded"), 120, "uploaded")
    assert final["parts"] and all(p["sizeBytes"] > 0 for p in final["parts"]), final
    await assert_all_uploaded(s3_server, bucket, small_disk, final)
    report = analyze(small_disk / final["parts"][0]["path"])
    assert report.error is None and report.video_frames > 0, report.error


def test_storage_flags_need_keys_and_never_show_the_secret():
    base = ["--livekit-url", "ws://127.0.0.1:1", "--room", "r", "--s3-bucket", "archive"]
    with pytest.raises(SystemExit):
        parse(base, env={})  # a bucket without keys is refused at start
    with pytest.raises(SystemExit):
        parse([*base, "--upload-chunk-bytes", "1024"], env={"AWS_ACCESS_KEY_ID": "k"})
    env = {"AWS_ACCESS_KEY_ID": "key-id", "AWS_SECRET_ACCESS_KEY": "s3cr3t-value"}
    settings = parse([*base, "--s3-prefix", "streams/"], env=env)
    assert settings.storage is not None and settings.storage.bucket == "archive"
    assert settings.storage.endpoint == "https://s3.us-east-1.amazonaws.com"
    assert settings.storage.credentials().secret_access_key == "s3cr3t-value"
    assert "s3cr3t-value" not in repr(settings) and "s3cr3t-value" in settings.secrets()
    assert parse(base[:4], env=env).storage is None  # no bucket, no uploads

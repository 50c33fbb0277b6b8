"""DELETE /recordings/{name} on a stream pod: a finished recording's objects in the bucket and
its files on the volume go; a running one is refused; the control token is required."""

from __future__ import annotations

import asyncio
import uuid

from haven_localcluster.streampod import StreamPod

from .conftest import livekit_args
from .test_upload import storage_args, wait_for


async def test_a_finished_recording_is_deleted_with_its_objects_and_files(
    livekit_server, publisher, stream_pod, s3_server, tmp_path
):
    bucket = s3_server.bucket(f"del-{uuid.uuid4().hex[:8]}")
    pod: StreamPod = stream_pod(
        *livekit_args(livekit_server, publisher), *storage_args(s3_server, bucket, tmp_path)
    )
    pod.wait_state("live", timeout=60)
    pod.start_recording(name="gone", format="vp9", quality="low")
    pod.start_recording(name="kept", format="vp9", quality="low")
    pod.wait_recording("gone", "recording", timeout=60)
    await asyncio.sleep(2)
    busy = pod.http("DELETE", "/recordings/gone")
    assert busy.status_code == 409 and "stop it first" in busy.json()["detail"], busy.text
    wrong = {"Authorization": "Bearer not-the-token"}
    assert pod.http("DELETE", "/recordings/gone", headers=wrong).status_code == 401
    pod.stop_recording("gone")
    pod.stop_recording("kept")
    done = await wait_for(pod, "gone", lambda r: r.get("uploaded"), 120, "uploaded")
    await wait_for(pod, "kept", lambda r: r.get("uploaded"), 120, "uploaded")
    keys = [f"rec/{p['path']}" for p in done["parts"]]
    assert keys and all(s3_server.object_path(bucket, k).exists() for k in keys), keys
    assert (pod.recordings / "gone").is_dir()

    resp = pod.http("DELETE", "/recordings/gone")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert sorted(body["deletedFiles"]) == sorted(p["path"].split("/", 1)[1] for p in done["parts"])
    assert {f"s3://{bucket}/{k}" for k in keys} <= set(body["deletedObjects"])
    assert not (pod.recordings / "gone").exists()
    assert not any(s3_server.object_path(bucket, k).exists() for k in keys)
    assert pod.http("GET", "/recordings/gone").status_code == 404
    assert pod.http("DELETE", "/recordings/gone").status_code == 404
    # The other recording is untouched, and a restarted pod does not bring the deleted back.
    kept = pod.recording("kept")
    assert all((pod.recordings / p["path"]).exists() for p in kept["parts"])
    pod.stop()
    pod.start()
    names = [r["name"] for r in pod.http("GET", "/recordings").json()["recordings"]]
    assert names == ["kept"], names

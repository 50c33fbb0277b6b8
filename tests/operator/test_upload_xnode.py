"""A node lost with its volume: the Recording's status keeps the open multipart uploads
(status.objectStorage.openUploads), the operator hands them to the next pod, which finds
nothing on its volume and completes each object from the chunks the server holds (ListParts,
CompleteMultipartUpload): it decodes and holds every chunk that was up. Lost mid-recording, the
recording goes on into a new part; lost once it was over or asked to stop, the next pod only
completes the uploads. Real cluster, real versitygw."""

from __future__ import annotations

import asyncio
import shutil

from haven_localcluster.mediacheck import analyze

from .test_end_to_end import (
    apply,
    condition,
    credentials,
    get,
    livestream,
    recording,
    status,
    stop,
    volume_dir,
    wait_for,
    wait_live,
    wait_phase,
)
from .test_upload_e2e import keys_secret, upload_spec


def listed_chunks(s3_server, bucket: str, entry: dict) -> list:
    """The parts the server holds for an open upload (ListParts)."""

    async def run() -> list:
        client = s3_server.client(bucket)
        try:
            return await client.list_parts(entry["key"], entry["uploadId"])
        finally:
            await client.aclose()

    return asyncio.run(run())


def pods_gone(kubectl, namespace: str, stream: str) -> bool:
    selector = f"app.kubernetes.io/instance={stream}"
    pods = kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "name").stdout
    return not pods.strip()


def chunk_up(kubectl, namespace: str, s3_server, bucket: str, name: str):
    """(status, open upload) once the Recording lists an upload of which a chunk is on the
    server; else None, or the status while it has no object storage (said if it never comes)."""
    st = status(kubectl, namespace, "rec", name)
    for entry in (st.get("objectStorage") or {}).get("openUploads") or []:
        if listed_chunks(s3_server, bucket, entry):
            return st, entry
    return None if st.get("objectStorage") else st


def wait_chunk_up(kubectl, namespace: str, s3_server, bucket: str, name: str):
    args = (kubectl, namespace, s3_server, bucket, name)
    return wait_for(lambda: (r := chunk_up(*args)) and isinstance(r, tuple) and r, 400, 3)


def test_a_pod_on_another_node_completes_the_lost_nodes_upload_from_the_status(
    operator, kubectl, namespace, livekit_server, noise_room, s3_server
):
    bucket = s3_server.bucket("recordings-xnode")
    secret = keys_secret("s3-keys", s3_server.access_key_id, s3_server.secret_access_key)
    storage = upload_spec(s3_server, bucket, "s3-keys")
    apply(
        kubectl,
        namespace,
        credentials(livekit_server),
        secret,
        livestream("cam", livekit_server, noise_room, storage=storage),
    )
    wait_live(kubectl, namespace, "cam")
    apply(kubectl, namespace, recording("long", "cam", format="h264", quality="high", audio=False))

    # The upload's id is in the Recording's status, and a chunk (8 MiB) is on the server.
    before, lost = wait_chunk_up(kubectl, namespace, s3_server, bucket, "long")
    assert set(lost) == {"path", "key", "uploadId"}, lost

    # The node is lost: its pod goes, and so does the recording on its volume.
    suspended = livestream("cam", livekit_server, noise_room, storage=storage, suspend=True)
    apply(kubectl, namespace, suspended)
    wait_for(lambda: pods_gone(kubectl, namespace, "cam"), timeout=120)
    chunks = listed_chunks(s3_server, bucket, lost)  # all that was up when it went
    directory = volume_dir(kubectl, namespace, before["claimName"])
    shutil.rmtree(directory / before["podRecording"])

    # A new pod (an empty volume for this recording) is handed the open upload.
    apply(kubectl, namespace, livestream("cam", livekit_server, noise_room, storage=storage))

    def completed() -> dict | None:
        st = status(kubectl, namespace, "rec", "long")
        files = st.get("files") or []
        mine = [f for f in files if f["path"] == lost["path"]]
        others = [f for f in files if f["path"] != lost["path"]]
        return st if mine and mine[0].get("uploaded") and others else None

    st = wait_for(completed, timeout=300, interval=2)
    assert st["phase"] == "Recording" and st["podUID"] != before["podUID"], st
    assert lost not in st["objectStorage"]["openUploads"], st["objectStorage"]
    obj = s3_server.object_path(bucket, lost["key"])
    assert obj.stat().st_size == sum(c.size for c in chunks) >= 8 << 20
    report = analyze(obj)
    assert report.video_codec == "h264" and report.video_frames > 50, report.error

    stop(kubectl, namespace, "long")
    wait_phase(kubectl, namespace, "long", "Completed", timeout=180)
    final = wait_for(
        lambda: (
            (s := status(kubectl, namespace, "rec", "long"))
            and condition(s, "Uploaded").get("status") == "True"
            and s
        ),
        timeout=300,
    )
    assert any(f["path"] == lost["path"] and f["uploaded"] for f in final["files"]), final
    assert final["objectStorage"]["openUploads"] == [], final["objectStorage"]


def test_uploads_a_lost_node_left_open_are_completed_after_the_stop(
    operator, kubectl, namespace, livekit_server, noise_room, s3_server
):
    """Its node lost once the recording was over (`ended`: stopped while the object store was
    down, so Completed with its upload still open) or asked to stop (`stopping`: stopped while
    its stream had no pod): the next pod is handed each open upload as a stopped recording,
    records nothing, completes the objects, and both end Uploaded. Chunks of 5Mi, from
    spec.storage.upload.chunkSize."""
    bucket = s3_server.bucket("recordings-after-stop")
    secret = keys_secret("s3-keys", s3_server.access_key_id, s3_server.secret_access_key)
    storage = upload_spec(s3_server, bucket, "s3-keys", chunk_size="5Mi")
    stream = livestream("cam", livekit_server, noise_room, storage=storage)
    apply(kubectl, namespace, credentials(livekit_server), secret, stream)
    wait_live(kubectl, namespace, "cam")
    container = get(kubectl, namespace, "deployment", "cam-stream")["spec"]["template"]["spec"][
        "containers"
    ][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["HAVEN_UPLOAD_CHUNK_BYTES"] == str(5 << 20), env
    names = ("ended", "stopping")
    for name in names:
        spec = {"format": "h264", "quality": "high", "audio": False}
        apply(kubectl, namespace, recording(name, "cam", **spec))
    lost = {name: wait_chunk_up(kubectl, namespace, s3_server, bucket, name)[1] for name in names}

    s3_server.kill()  # the object store goes away: `ended` ends with its upload still open
    try:
        stop(kubectl, namespace, "ended")
        wait_phase(kubectl, namespace, "ended", "Completed", timeout=180)

        def ended_open() -> dict | None:
            st = status(kubectl, namespace, "rec", "ended")
            failing = condition(st, "Uploaded").get("reason") == "UploadFailed"
            return st if failing and lost["ended"] in st["objectStorage"]["openUploads"] else None

        ended = wait_for(ended_open, timeout=120, interval=2)
        # The node is lost: its pod goes, and so do the recordings on its volume.
        apply(kubectl, namespace, {**stream, "spec": {**stream["spec"], "suspend": True}})
        wait_for(lambda: pods_gone(kubectl, namespace, "cam"), timeout=120)
    finally:
        s3_server.start()  # same port, same data: the open uploads are still there
    chunks = {name: listed_chunks(s3_server, bucket, lost[name]) for name in names}
    directory = volume_dir(kubectl, namespace, ended["claimName"])
    for name in names:
        shutil.rmtree(directory / status(kubectl, namespace, "rec", name)["podRecording"])
    stop(kubectl, namespace, "stopping")  # while the stream has no pod
    apply(kubectl, namespace, stream)

    def uploaded(name: str) -> dict | None:
        st = status(kubectl, namespace, "rec", name)
        return st if condition(st, "Uploaded").get("status") == "True" else None

    for name in names:
        st = wait_for(lambda name=name: uploaded(name), timeout=300, interval=2)
        assert st["phase"] == "Completed" and st["objectStorage"]["openUploads"] == [], st
        mine = [f for f in st["files"] if f["path"] == lost[name]["path"]]
        assert mine and mine[0]["uploaded"], st["files"]
        obj = s3_server.object_path(bucket, lost[name]["key"])
        assert obj.stat().st_size == sum(c.size for c in chunks[name]) >= 5 << 20, name
        report = analyze(obj)
        assert report.video_codec == "h264" and report.video_frames > 20, (name, report.error)
    # The stopped recording was only completed: the new pod wrote no part of it.
    again = directory / status(kubectl, namespace, "rec", "stopping")["podRecording"]
    assert not list(again.glob("*-part*")), list(again.iterdir())

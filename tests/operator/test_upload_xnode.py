"""A node lost mid-recording, its volume with it: the Recording's status keeps the open
multipart uploads (status.objectStorage.openUploads), the operator hands them to the next pod,
which finds nothing on its volume and completes each object from the chunks the server holds
(ListParts, CompleteMultipartUpload): it decodes, holds every chunk that was up, and the
recording goes on into a new part. Real cluster, real versitygw."""

from __future__ import annotations

import asyncio
import shutil

from haven_localcluster.mediacheck import analyze

from .test_end_to_end import (
    apply,
    condition,
    credentials,
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
    def chunk_up() -> tuple[dict, dict] | None:
        st = status(kubectl, namespace, "rec", "long")
        for entry in (st.get("objectStorage") or {}).get("openUploads") or []:
            if listed_chunks(s3_server, bucket, entry):
                return st, entry
        return None if st.get("objectStorage") else st  # (said if it never comes)

    before, lost = wait_for(lambda: (r := chunk_up()) and isinstance(r, tuple) and r, 400, 3)
    assert set(lost) == {"path", "key", "uploadId"}, lost

    # The node is lost: its pod goes, and so does the recording on its volume.
    suspended = livestream("cam", livekit_server, noise_room, storage=storage, suspend=True)
    apply(kubectl, namespace, suspended)
    wait_for(
        lambda: (
            not kubectl(
                "get", "pods", "-n", namespace, "-l", "app.kubernetes.io/instance=cam", "-o", "name"
            ).stdout.strip()
        ),
        timeout=120,
    )
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

"""Object storage end to end: the chart's operator gives a LiveStream's stream pod its
`spec.storage.upload` (keys as files of a Secret volume), the pod uploads the recording to the
real S3-compatible server (versitygw, reached by pods on the node network's host address), and
the Recording's status says where and whether it is up (files[].url, files[].uploaded,
condition Uploaded), with presigned URLs on request. Wrong keys: Uploaded=False with the
server's words, and the local file stays."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import kubernetes

from haven_gateway import downloads

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
    wait_recorded,
)

PREFIX = "e2e/"
KEYS_HASH = "streams.haven.dev/s3-credentials-hash"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "upload.yaml"


def keys_secret(name: str, key_id: str, key: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "stringData": {"accessKeyID": key_id, "secretAccessKey": key},
    }


def upload_spec(s3_server, bucket: str, secret: str, chunk_size: str = "", **s3: str) -> dict:
    """`spec.storage.upload` to the test's versitygw (pods reach it on the node network's host
    address); `s3`: more of its s3 fields (publicEndpoint)."""
    spec = {
        "s3": {
            "endpoint": s3_server.cluster_endpoint,
            "bucket": bucket,
            "prefix": PREFIX,
            "forcePathStyle": True,
            "credentialsSecretRef": {"name": secret},
            **s3,
        }
    }
    return {"upload": {**spec, "chunkSize": chunk_size} if chunk_size else spec}


def record_and_stop(kubectl, namespace: str, stream: str, name: str) -> dict:
    apply(kubectl, namespace, recording(name, stream, format="h264", quality="low"))
    wait_recorded(kubectl, namespace, name, 3)
    stop(kubectl, namespace, name)
    return wait_phase(kubectl, namespace, name, "Completed", timeout=120)


def test_a_recording_is_uploaded_byte_for_byte_and_presigned_on_request(
    operator, kubectl, namespace, livekit_server, publisher, s3_server, api_client
):
    bucket = s3_server.bucket("recordings-e2e")
    secret = keys_secret("s3-keys", s3_server.access_key_id, s3_server.secret_access_key)
    # Presigned URLs are for users elsewhere: here, loopback (the pods use the node network).
    storage = upload_spec(s3_server, bucket, "s3-keys", publicEndpoint=s3_server.endpoint)
    stream = livestream("up", livekit_server, publisher, storage=storage)
    apply(kubectl, namespace, credentials(livekit_server), secret, stream)
    wait_live(kubectl, namespace, "up")

    # The keys reach the pod only as files; the template carries their hash, not them.
    dep = get(kubectl, namespace, "deployment", "up-stream")
    assert s3_server.secret_access_key not in json.dumps(dep)
    template = dep["spec"]["template"]
    assert template["metadata"]["annotations"][KEYS_HASH]
    env = {e["name"]: e.get("value") for e in template["spec"]["containers"][0]["env"]}
    assert env["HAVEN_S3_BUCKET"] == bucket and env["HAVEN_S3_PREFIX"] == PREFIX

    record_and_stop(kubectl, namespace, "up", "clip")
    st = wait_for(
        lambda: (
            (s := status(kubectl, namespace, "rec", "clip"))
            and condition(s, "Uploaded").get("status") == "True"
            and s
        ),
        timeout=180,
    )
    assert condition(st, "Complete")["status"] == "True"
    assert st["files"] and all(f["uploaded"] for f in st["files"])
    directory = volume_dir(kubectl, namespace, st["claimName"])
    for f in st["files"]:
        key = PREFIX + f["path"]
        assert f["url"] == f"s3://{bucket}/{key}"
        local = (directory / f["path"]).read_bytes()
        assert len(local) == f["sizeBytes"] > 0
        assert s3_server.object_path(bucket, key).read_bytes() == local
    assert st["objectStorage"]["bucket"] == bucket
    assert s3_server.secret_access_key not in json.dumps(st)

    # A presigned URL on request, answered in status; it fetches the same bytes.
    kubectl("annotate", "-n", namespace, "rec", "clip", "streams.haven.dev/presign=10m")
    presigned = wait_for(
        lambda: status(kubectl, namespace, "rec", "clip").get("presigned", {}).get("files"),
        timeout=60,
    )
    first = presigned[0]
    assert first["url"].startswith(f"{s3_server.endpoint}/{bucket}/{PREFIX}"), first["url"]
    response = httpx.get(first["url"], timeout=60)
    assert response.status_code == 200
    assert response.content == (directory / first["path"]).read_bytes()
    kubectl("annotate", "-n", namespace, "rec", "clip", "streams.haven.dev/presign-")
    wait_for(lambda: not status(kubectl, namespace, "rec", "clip").get("presigned"), timeout=60)

    # The gateway's ?presign=true answer, from the same Recording and Secret.
    core = kubernetes.client.CoreV1Api(api_client)
    answer = downloads.presigned(core, get(kubectl, namespace, "rec", "clip"), 1, 120)
    assert answer["expires_in"] == 120 and answer["file"] == st["files"][0]["path"]
    assert answer["url"].startswith(f"{s3_server.endpoint}/"), answer["url"]
    assert httpx.get(answer["url"], timeout=60).content == (directory / answer["file"]).read_bytes()


def test_wrong_keys_say_the_servers_words_keep_the_files_and_corrected_keys_finish(
    operator, kubectl, namespace, livekit_server, publisher, s3_server
):
    # The example is accepted; settings that could never work are refused at apply.
    kubectl("apply", "--dry-run=server", "-n", namespace, "-f", str(EXAMPLE))
    refusals = {
        "bucket": {"bucket": "Not_A_Bucket", "endpoint": "ftp://x"},
        "endpoint": {"bucket": "fine", "endpoint": "ftp://x"},
        "prefix must not start with /": {"bucket": "fine", "prefix": "/abs"},
        "must differ": {"bucket": "fine", "credentialsSecretRef": {
            "name": "k", "accessKeyIDKey": "same", "secretAccessKeyKey": "same"}},
    }  # fmt: skip
    for words, s3 in refusals.items():
        s3 = {"credentialsSecretRef": {"name": "k"}, **s3}
        bad = livestream("refused", livekit_server, publisher, storage={"upload": {"s3": s3}})
        refused = kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(bad), check=False)
        assert refused.returncode != 0 and words in refused.stderr, (words, refused.stderr)

    bucket = s3_server.bucket("recordings-e2e")
    secret = keys_secret("bad-keys", s3_server.access_key_id, "not-the-secret-key")
    storage = upload_spec(s3_server, bucket, "bad-keys")
    stream = livestream("badup", livekit_server, publisher, storage=storage)
    apply(kubectl, namespace, credentials(livekit_server), secret, stream)
    wait_live(kubectl, namespace, "badup")

    record_and_stop(kubectl, namespace, "badup", "clip")
    st = wait_for(
        lambda: (
            (s := status(kubectl, namespace, "rec", "clip"))
            and condition(s, "Uploaded").get("reason") == "UploadFailed"
            and s
        ),
        timeout=180,
    )
    uploaded = condition(st, "Uploaded")
    assert uploaded["status"] == "False"
    # The server's words (a HEAD's 403 has no body to quote, so it may be the status alone).
    assert "SignatureDoesNotMatch" in uploaded["message"] or "403" in uploaded["message"]
    assert condition(st, "Complete")["status"] == "True"  # the recording itself is fine
    directory = volume_dir(kubectl, namespace, st["claimName"])
    for f in st["files"]:
        assert not f.get("uploaded")
        assert (directory / f["path"]).stat().st_size == f["sizeBytes"] > 0
        assert not s3_server.object_path(bucket, PREFIX + f["path"]).exists()
    # The operator keeps following (the pod retries); a presign request is refused plainly.
    kubectl("annotate", "-n", namespace, "rec", "clip", "streams.haven.dev/presign=1h")
    answer = wait_for(
        lambda: status(kubectl, namespace, "rec", "clip").get("presigned", {}).get("waiting"),
        timeout=60,
    )
    assert "upload" in answer

    # The keys corrected: the Secret's edit rolls the pod (the template carries the keys'
    # hash), the new pod resumes the upload from the volume, and the operator sees it done.
    def keys_hash() -> str:
        dep = get(kubectl, namespace, "deployment", "badup-stream")
        return dep["spec"]["template"]["metadata"]["annotations"][KEYS_HASH]

    before = keys_hash()
    good = keys_secret("bad-keys", s3_server.access_key_id, s3_server.secret_access_key)
    apply(kubectl, namespace, good)
    wait_for(lambda: keys_hash() != before, timeout=120)
    st = wait_for(
        lambda: (
            (s := status(kubectl, namespace, "rec", "clip"))
            and condition(s, "Uploaded").get("status") == "True"
            and s
        ),
        timeout=300,
    )
    for f in st["files"]:
        local = (directory / f["path"]).read_bytes()
        assert s3_server.object_path(bucket, PREFIX + f["path"]).read_bytes() == local


def test_bad_upload_settings_are_rejected_at_apply(crds, kubectl, namespace):
    def apply_upload(upload: dict, *flags: str):
        s3 = {"bucket": "recordings", "credentialsSecretRef": {"name": "keys"}}
        obj = livestream_object({"upload": {**upload, "s3": {**s3, **upload.get("s3", {})}}})
        body = json.dumps(obj)
        return kubectl("apply", *flags, "-n", namespace, "-f", "-", input=body, check=False)

    for bad, words in [
        ({"chunkSize": "4Mi"}, "between 5Mi"),  # under S3's smallest part
        ({"chunkSize": "257Mi"}, "between 5Mi"),  # two are held in memory
        ({"chunkSize": "eight"}, "chunkSize"),
        ({"s3": {"publicEndpoint": "media.example.test"}}, "publicEndpoint"),
    ]:
        result = apply_upload(bad)
        assert result.returncode != 0 and words in result.stderr, (bad, result.stderr)
    for good in ({"chunkSize": "5Mi"}, {"chunkSize": "16777216"}, {"chunkSize": "256Mi"}):
        good["s3"] = {"publicEndpoint": "https://media.example.test"}
        result = apply_upload(good, "--dry-run=server")
        assert result.returncode == 0, (good, result.stderr)


def livestream_object(storage: dict) -> dict:
    lk = {"url": "ws://lk:7880", "room": "r", "credentialsSecretRef": {"name": "x"}}
    source = {"livekit": lk}
    return {
        "apiVersion": "streams.haven.dev/v1alpha1",
        "kind": "LiveStream",
        "metadata": {"name": "bad"},
        "spec": {"source": source, "storage": storage},
    }

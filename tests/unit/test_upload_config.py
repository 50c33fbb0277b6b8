"""Object storage in the operator, as pure functions: which settings apply (the LiveStream's,
else the chart's default), what the stream pod gets (never a key in env or args), what a
Recording's status says (files, Uploaded), and presigned URLs (checked against AWS's own
published example)."""

from __future__ import annotations

import base64
import datetime as dt
import json
import subprocess
from pathlib import Path

import pytest
import yaml

from haven_localcluster import toolchain
from haven_operator import upload
from haven_operator.children import deployment
from haven_operator.recording import (
    files_from_pod,
    parse_duration,
    settled,
    upload_condition,
)
from haven_operator.settings import Settings
from haven_recorder.s3 import Credentials, presign_get

S3 = {
    "endpoint": "http://10.250.1.1:9000",
    "bucket": "recordings",
    "credentialsSecretRef": {"name": "s3-keys"},
}


def livestream(storage: dict | None = None) -> dict:
    return {
        "metadata": {"name": "cam", "namespace": "ns", "uid": "u-1", "generation": 1},
        "spec": {"source": {"livekit": {"room": "r", "url": "ws://x", "credentialsSecretRef": {
            "name": "lk"}}}, "storage": storage or {}},
    }  # fmt: skip


def secret(key_id: str = "AKID", key: str = "s3cr3t-value") -> dict:
    data = {"accessKeyID": key_id, "secretAccessKey": key}
    return {"data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


def test_the_livestreams_settings_win_over_the_charts_default():
    default = {"s3": {**S3, "bucket": "chart-default"}, "deleteLocalAfterUpload": True}
    assert upload.effective(livestream(), None) is None
    assert upload.effective(livestream(), default)["s3"]["bucket"] == "chart-default"
    own = upload.effective(livestream({"upload": {"s3": S3}}), default)
    assert own["s3"]["bucket"] == "recordings" and own["deleteLocalAfterUpload"] is False
    assert own["s3"]["region"] == "us-east-1" and own["s3"]["prefix"] == ""
    assert own["s3"]["credentialsSecretRef"] == {
        "name": "s3-keys",
        "accessKeyIDKey": "accessKeyID",
        "secretAccessKeyKey": "secretAccessKey",
    }
    settings = Settings.from_env({"HAVEN_DEFAULT_UPLOAD": json.dumps(default)})
    assert settings.default_upload == default
    assert Settings.from_env({}).default_upload is None


def test_the_pod_gets_settings_as_env_and_keys_only_as_files():
    settings = Settings()
    plain = deployment(livestream(), settings, "tok")
    with_upload = deployment(livestream({"upload": {"s3": S3}}), settings, "tok", "abc123")
    pod = with_upload["spec"]["template"]
    env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
    assert env["HAVEN_S3_BUCKET"]["value"] == "recordings"
    assert env["HAVEN_S3_ENDPOINT"]["value"] == S3["endpoint"]
    assert env["HAVEN_DELETE_LOCAL_AFTER_UPLOAD"]["value"] == "false"
    assert env["HAVEN_S3_SECRET_ACCESS_KEY_FILE"]["value"].startswith(upload.CREDENTIALS_MOUNT)
    assert not any("AWS_" in name for name in env)
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == upload.CREDENTIALS_VOLUME)
    assert volume["secret"]["secretName"] == "s3-keys"
    assert pod["metadata"]["annotations"][upload.CREDENTIALS_HASH] == "abc123"
    assert "s3cr3t" not in json.dumps(with_upload)
    assert upload.CREDENTIALS_HASH not in plain["spec"]["template"]["metadata"]["annotations"]
    assert "HAVEN_S3_BUCKET" not in json.dumps(plain)


def test_the_chunk_size_reaches_the_pod_only_when_it_is_not_the_pods_own():
    env = {}
    for size in (None, "8Mi", "16Mi", "5242880", "10M"):
        storage = {"upload": {"s3": S3, **({"chunkSize": size} if size else {})}}
        dep = deployment(livestream(storage), Settings(), "tok", "abc123")
        container = dep["spec"]["template"]["spec"]["containers"][0]
        env[size] = {e["name"]: e.get("value") for e in container["env"]}
    # Unset and 8Mi (the pod's default) leave the template as it was: no pod rolls.
    assert "HAVEN_UPLOAD_CHUNK_BYTES" not in env[None] and env["8Mi"] == env[None]
    assert env["16Mi"]["HAVEN_UPLOAD_CHUNK_BYTES"] == str(16 << 20)
    assert env["5242880"]["HAVEN_UPLOAD_CHUNK_BYTES"] == str(5 << 20)
    assert env["10M"]["HAVEN_UPLOAD_CHUNK_BYTES"] == "10000000"
    for bad in ("4Mi", "257Mi", "1Gi", "8 Mi", "8.5Mi"):
        with pytest.raises(ValueError, match="chunkSize"):
            upload.chunk_bytes(bad)


def test_a_new_key_changes_the_hash_and_a_missing_secret_says_which():
    cfg = upload.effective(livestream({"upload": {"s3": S3}}), None)
    assert upload.credentials_hash(secret(), cfg) == upload.credentials_hash(secret(), cfg)
    assert upload.credentials_hash(secret(), cfg) != upload.credentials_hash(secret(key="x"), cfg)
    assert "s3cr3t" not in upload.credentials_hash(secret(), cfg)
    with pytest.raises(upload.CredentialsError, match=r"s3-keys.*not found"):
        upload.credentials_hash(None, cfg)
    with pytest.raises(upload.CredentialsError, match="no key secretAccessKey"):
        upload.credentials_hash({"data": {"accessKeyID": "QQ=="}}, cfg)


POD_INFO = {
    "state": "completed",
    "parts": [
        {"path": "r/r.webm", "sizeBytes": 10, "durationSeconds": 1.0, "startedAt": None,
         "endedAt": None, "url": "s3://recordings/r/r.webm", "uploaded": True,
         "upload": {"uploadId": "x", "chunks": []}},
    ],
    "uploaded": True,
    "upload": {"reason": "Uploaded", "message": None, "bucket": "recordings", "prefix": ""},
}  # fmt: skip


def test_status_files_carry_url_and_uploaded_but_not_the_resume_state():
    assert files_from_pod(POD_INFO["parts"]) == [
        {
            "path": "r/r.webm",
            "sizeBytes": 10,
            "durationSeconds": 1.0,
            "url": "s3://recordings/r/r.webm",
            "uploaded": True,
        }
    ]


def test_uploaded_condition_and_when_the_daemon_lets_go():
    done = upload_condition(POD_INFO)
    assert done.status is True and done.reason == "Uploaded"
    failing = {
        **POD_INFO,
        "uploaded": False,
        "upload": {**POD_INFO["upload"], "reason": "UploadFailed", "message": "ListParts: 403 "
                   "SignatureDoesNotMatch: The request signature we calculated does not match"},
    }  # fmt: skip
    cond = upload_condition(failing)
    assert cond.status is False and cond.reason == "UploadFailed"
    assert "SignatureDoesNotMatch" in cond.message
    assert upload_condition({"state": "completed", "parts": []}) is None  # no object storage

    def status(phase: str, cond: dict | None) -> dict:
        return {"phase": phase, "conditions": [cond] if cond else []}

    uploaded = {"type": "Uploaded", "status": "True", "reason": "Uploaded"}
    failed = {"type": "Uploaded", "status": "False", "reason": "UploadFailed"}
    gone = {"type": "Uploaded", "status": "False", "reason": "LiveStreamGone"}
    assert not settled(status("Recording", None))
    assert settled(status("Completed", None))  # nothing uploads
    assert settled(status("Completed", uploaded))
    assert not settled(status("Completed", failed))  # the pod retries: keep looking
    assert settled(status("Failed", gone))


def test_presigned_url_matches_the_aws_example():
    """AWS's S3 documentation, 'Authenticating Requests: Using Query Parameters'."""
    url = presign_get(
        "https://s3.amazonaws.com",
        "examplebucket",
        "test.txt",
        Credentials("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
        expires_seconds=86400,
        now=dt.datetime(2013, 5, 24, tzinfo=dt.UTC),
    )
    assert url.startswith("https://examplebucket.s3.amazonaws.com/test.txt?")
    assert url.endswith(
        "X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
    )


def test_presign_files_of_a_recording_and_its_validity():
    cfg = upload.effective(livestream({"upload": {"s3": {**S3, "forcePathStyle": True}}}), None)
    status = {
        "files": files_from_pod(POD_INFO["parts"]),
        "objectStorage": upload.object_storage_status(cfg, POD_INFO["upload"]),
    }
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    out = upload.presign_files(status, Credentials("AKID", "k"), 600, now)
    assert out["expiresAt"] == "2026-01-01T00:10:00Z"
    assert out["files"][0]["url"].startswith("http://10.250.1.1:9000/recordings/r/r.webm?")
    assert "X-Amz-Expires=600" in out["files"][0]["url"]
    with pytest.raises(ValueError, match="no object storage"):
        upload.presign_files({"files": status["files"]}, Credentials("a", "b"), 600, now)
    # A public endpoint, for URLs used elsewhere than where the pods reach the server.
    public = {**S3, "forcePathStyle": True, "publicEndpoint": "https://media.example.test"}
    cfg = upload.effective(livestream({"upload": {"s3": public}}), None)
    status["objectStorage"] = upload.object_storage_status(cfg, POD_INFO["upload"])
    assert status["objectStorage"]["endpoint"] == S3["endpoint"]  # the pods' own stays
    out = upload.presign_files(status, Credentials("AKID", "k"), 600, now)
    assert out["files"][0]["url"].startswith("https://media.example.test/recordings/r/r.webm?")
    assert upload.presign_seconds("1h", parse_duration) == 3600
    assert upload.presign_seconds("", parse_duration) == upload.DEFAULT_PRESIGN_SECONDS
    for bad in ("0s", "200h", "soon"):
        with pytest.raises(ValueError, match="validity"):
            upload.presign_seconds(bad, parse_duration)


def test_the_charts_default_reaches_the_operator_and_bad_values_are_refused():
    chart = Path(__file__).resolve().parents[2] / "charts" / "haven-streams"
    helm = str(toolchain.ensure(["helm"])["helm"])
    base = [helm, "template", "h", str(chart), "--kube-version", toolchain.KUBERNETES_VERSION]
    sets = [
        "--set", "recording.upload.s3.bucket=chart-default",
        "--set", "recording.upload.s3.endpoint=http://s3.example.test:9000",
        "--set", "recording.upload.s3.credentialsSecretRef.name=s3-keys",
    ]  # fmt: skip
    out = subprocess.run([*base, *sets], capture_output=True, text=True, check=True).stdout
    operator = next(
        d
        for d in yaml.safe_load_all(out)
        if d and d["kind"] == "Deployment" and "HAVEN_STREAM_POD_IMAGE" in json.dumps(d)
    )
    container = operator["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    settings = Settings.from_env({"HAVEN_DEFAULT_UPLOAD": env["HAVEN_DEFAULT_UPLOAD"]})
    cfg = upload.effective(livestream(), settings.default_upload)
    assert cfg["s3"]["bucket"] == "chart-default"
    assert cfg["s3"]["credentialsSecretRef"]["name"] == "s3-keys"
    plain = subprocess.run(base, capture_output=True, text=True, check=True).stdout
    assert "HAVEN_DEFAULT_UPLOAD" not in plain  # no bucket: no default
    refused = subprocess.run(
        [*base, "--set", "recording.upload.s3.bucket=x-bucket"], capture_output=True, text=True
    )
    assert refused.returncode != 0 and "credentialsSecretRef" in refused.stderr
    # The chunk size and the public endpoint, checked by the chart's schema.
    more = [
        "--set", "recording.upload.chunkSize=16Mi",
        "--set", "recording.upload.s3.publicEndpoint=https://media.example.test",
    ]  # fmt: skip
    out = subprocess.run([*base, *sets, *more], capture_output=True, text=True, check=True).stdout
    env = next(
        e["value"]
        for d in yaml.safe_load_all(out)
        if d and d["kind"] == "Deployment"
        for e in d["spec"]["template"]["spec"]["containers"][0]["env"]
        if e["name"] == "HAVEN_DEFAULT_UPLOAD"
    )
    default = Settings.from_env({"HAVEN_DEFAULT_UPLOAD": env}).default_upload
    cfg = upload.effective(livestream(), default)
    assert cfg["chunkBytes"] == 16 << 20
    assert upload.object_storage_status(cfg, None)["publicEndpoint"] == "https://media.example.test"
    for bad in ("chunkSize=4Mi", "chunkSize=300Mi", "chunkSize=8M", "s3.publicEndpoint=media"):
        refused = subprocess.run(
            [*base, *sets, "--set", f"recording.upload.{bad}"], capture_output=True, text=True
        )
        assert refused.returncode != 0 and bad.split("=")[0].split(".")[-1] in refused.stderr, bad

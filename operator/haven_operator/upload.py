"""Object storage for a LiveStream's recordings (`spec.storage.upload`, else the chart's
`recording.upload` default): what the stream pod is given, and presigned URLs of the objects.

Pure functions, but for `read_credentials` (one Secret read, blocking). The keys reach the pod
only as files of a Secret volume (never env, args, logs or annotations); the pod template
carries a hash of them, so a changed Secret rolls the pod, as the control token's hash does.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re
from typing import Any

from haven_recorder.s3 import MAX_PRESIGN_SECONDS, Credentials, presign_get

GROUP = "streams.haven.dev"  # children.GROUP (children imports this module)
CREDENTIALS_MOUNT = "/var/run/secrets/haven/s3"
CREDENTIALS_VOLUME = "s3-credentials"
KEY_ID_FILE, SECRET_FILE = "access-key-id", "secret-access-key"
CREDENTIALS_HASH = f"{GROUP}/s3-credentials-hash"  # pod template annotation
PRESIGN = f"{GROUP}/presign"  # Recording annotation: a validity (1h, 30m, 3600s) asks for URLs
DEFAULT_PRESIGN_SECONDS = 3600
S3_DEFAULTS = {"region": "us-east-1", "prefix": "", "forcePathStyle": False}
REF_DEFAULTS = {"accessKeyIDKey": "accessKeyID", "secretAccessKeyKey": "secretAccessKey"}
# The stream pod's chunk size unless `chunkSize` says otherwise (haven_recorder.upload), and
# the bounds the CRD and the chart check: S3's smallest part, and what the pod holds in memory
# (two chunks at once).
POD_CHUNK_BYTES = 8 << 20
MIN_CHUNK_BYTES, MAX_CHUNK_BYTES = 5 << 20, 256 << 20
_QUANTITY = re.compile(r"^([0-9]+)(Ki|Mi|Gi|k|M|G)?$")
_UNITS = {None: 1, "k": 10**3, "M": 10**6, "G": 10**9, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}


class CredentialsError(Exception):
    """The credentials Secret is missing, unreadable, or lacks a key (the message says which)."""


def chunk_bytes(quantity: str | None) -> int:
    """`chunkSize` ('8Mi', '16M', '10485760') in bytes; unset: the pod's own default. The CRD
    and the chart's schema check it; a value out of bounds raises ValueError all the same."""
    if not quantity:
        return POD_CHUNK_BYTES
    match = _QUANTITY.match(str(quantity).strip())
    if not match:
        raise ValueError(f"chunkSize {quantity!r} is not a quantity such as 8Mi")
    size = int(match.group(1)) * _UNITS[match.group(2)]
    if not MIN_CHUNK_BYTES <= size <= MAX_CHUNK_BYTES:
        raise ValueError(f"chunkSize {quantity!r} is not between 5Mi and 256Mi")
    return size


def effective(livestream: dict, default: dict | None) -> dict | None:
    """The upload settings that apply to this LiveStream, defaults filled in, or None."""
    upload = ((livestream.get("spec") or {}).get("storage") or {}).get("upload") or default
    if not upload or not (upload.get("s3") or {}).get("bucket"):
        return None
    s3 = {**S3_DEFAULTS, **upload["s3"]}
    s3["credentialsSecretRef"] = {**REF_DEFAULTS, **(s3.get("credentialsSecretRef") or {})}
    return {
        "s3": s3,
        "deleteLocalAfterUpload": bool(upload.get("deleteLocalAfterUpload")),
        "chunkBytes": chunk_bytes(upload.get("chunkSize")),
    }


def pod_env(cfg: dict) -> list[dict[str, Any]]:
    """The stream pod's object storage flags (recorder/haven_recorder/upload.py), keys as files."""
    s3 = cfg["s3"]
    env = [
        {"name": "HAVEN_S3_BUCKET", "value": s3["bucket"]},
        {"name": "HAVEN_S3_REGION", "value": s3["region"]},
        {"name": "HAVEN_S3_PREFIX", "value": s3["prefix"]},
        {"name": "HAVEN_S3_FORCE_PATH_STYLE", "value": str(s3["forcePathStyle"]).lower()},
        {"name": "HAVEN_S3_ACCESS_KEY_ID_FILE", "value": f"{CREDENTIALS_MOUNT}/{KEY_ID_FILE}"},
        {"name": "HAVEN_S3_SECRET_ACCESS_KEY_FILE", "value": f"{CREDENTIALS_MOUNT}/{SECRET_FILE}"},
        {
            "name": "HAVEN_DELETE_LOCAL_AFTER_UPLOAD",
            "value": str(cfg["deleteLocalAfterUpload"]).lower(),
        },
    ]
    if s3.get("endpoint"):
        env.insert(1, {"name": "HAVEN_S3_ENDPOINT", "value": s3["endpoint"]})
    if cfg["chunkBytes"] != POD_CHUNK_BYTES:  # unset at the pod's own: no template change
        env.append({"name": "HAVEN_UPLOAD_CHUNK_BYTES", "value": str(cfg["chunkBytes"])})
    return env


def pod_volume(cfg: dict) -> dict[str, Any]:
    ref = cfg["s3"]["credentialsSecretRef"]
    return {
        "name": CREDENTIALS_VOLUME,
        "secret": {
            "secretName": ref["name"],
            "items": [
                {"key": ref["accessKeyIDKey"], "path": KEY_ID_FILE},
                {"key": ref["secretAccessKeyKey"], "path": SECRET_FILE},
            ],
            "defaultMode": 0o440,  # root:fsGroup, read by the pod's group only
        },
    }


def pod_mount() -> dict[str, Any]:
    return {"name": CREDENTIALS_VOLUME, "mountPath": CREDENTIALS_MOUNT, "readOnly": True}


def _keys(secret: dict | None, cfg: dict) -> tuple[bytes, bytes]:
    """The two keys' raw bytes from a Secret as the API gives it (data base64)."""
    ref = cfg["s3"]["credentialsSecretRef"]
    if secret is None:
        raise CredentialsError(f"Secret {ref['name']} (object storage credentials) not found")
    data = secret.get("data") or {}
    missing = [k for k in (ref["accessKeyIDKey"], ref["secretAccessKeyKey"]) if not data.get(k)]
    if missing:
        raise CredentialsError(f"Secret {ref['name']} has no key {', '.join(missing)}")
    return (
        base64.b64decode(data[ref["accessKeyIDKey"]]),
        base64.b64decode(data[ref["secretAccessKeyKey"]]),
    )


def credentials_hash(secret: dict | None, cfg: dict) -> str:
    """A short hash of the keys (for the pod template: a new key rolls the pod)."""
    key_id, key = _keys(secret, cfg)
    return hashlib.sha256(key_id + b"\0" + key).hexdigest()[:16]


def credentials(secret: dict | None, cfg: dict) -> Credentials:
    key_id, key = _keys(secret, cfg)
    return Credentials(key_id.decode().strip(), key.decode().strip())


def object_storage_status(cfg: dict, pod_upload: dict | None) -> dict[str, Any]:
    """What a Recording's status keeps of it (no secret): enough to presign its files later.
    The bucket and prefix are the pod's own when it says (what it really uploads to)."""
    s3 = cfg["s3"]
    pod_upload = pod_upload or {}
    out = {
        "bucket": pod_upload.get("bucket") or s3["bucket"],
        "prefix": pod_upload.get("prefix", s3["prefix"]),
        "region": s3["region"],
        "forcePathStyle": s3["forcePathStyle"],
        "credentialsSecretRef": s3["credentialsSecretRef"],
    }
    for field in ("endpoint", "publicEndpoint"):
        if s3.get(field):
            out[field] = s3[field]
    return out


def split_url(url: str) -> tuple[str, str]:
    """s3://bucket/key -> (bucket, key)."""
    if not url.startswith("s3://") or "/" not in url[5:]:
        raise ValueError(f"not an s3:// URL: {url}")
    bucket, key = url[5:].split("/", 1)
    return bucket, key


def presign_files(
    status: dict, creds: Credentials, expires_seconds: int, now: dt.datetime
) -> dict[str, Any]:
    """Presigned GET URLs of a Recording's uploaded files: {expiresAt, files: [{path, url}]}.
    Raise ValueError (a sentence for people) when there is nothing to sign."""
    storage = status.get("objectStorage")
    if not storage:
        raise ValueError("this recording has no object storage (spec.storage.upload)")
    files = [f for f in status.get("files") or [] if f.get("uploaded") and f.get("url")]
    if not files:
        raise ValueError("no file of this recording is uploaded yet (see condition Uploaded)")
    endpoint = (
        storage.get("publicEndpoint")  # where the URLs' users reach the server
        or storage.get("endpoint")  # where the pods reach it
        or f"https://s3.{storage['region']}.amazonaws.com"
    )
    signed = []
    for f in files:
        bucket, key = split_url(f["url"])
        url = presign_get(
            endpoint,
            bucket,
            key,
            creds,
            region=storage["region"],
            force_path_style=storage["forcePathStyle"],
            expires_seconds=expires_seconds,
            now=now,
        )
        signed.append({"path": f["path"], "url": url, "sizeBytes": f.get("sizeBytes")})
    expires = now + dt.timedelta(seconds=expires_seconds)
    return {
        "expiresAt": expires.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "files": signed,
    }


def presign_seconds(text: str | None, parse: Any) -> int:
    """The validity asked for ('1h', '30m', '3600s'; empty: an hour), checked."""
    if not text or text.strip().lower() in ("true", "yes"):
        return DEFAULT_PRESIGN_SECONDS
    seconds = parse(text.strip()) if not text.strip().isdigit() else float(text)
    if not seconds or not 1 <= seconds <= MAX_PRESIGN_SECONDS:
        raise ValueError(
            f"{PRESIGN}: {text!r} is not a validity between 1s and 168h (e.g. 1h, 30m)"
        )
    return int(seconds)

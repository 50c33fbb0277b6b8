"""Uploading recordings to an S3-compatible bucket while they record.

Each part (`<name>/<name>-partNNN.<ext>`) goes up as one object,
`<prefix><name>/<name>-partNNN.<ext>`, by a multipart upload that follows the growing file: every
time the file has grown by a chunk (`--upload-chunk-bytes`, 8 MiB, at least S3's 5 MiB part
minimum) that chunk is uploaded, so a node lost mid-recording loses at most the last chunk. The
upload's id and the chunks already up are kept in the part's entry of `recording.json`
(`upload`), written after every chunk.

When the part is finished (or, after a restart, found finished), the whole local file is read
again: each chunk's MD5 is compared with what the server listed for the upload (ListParts), a
chunk that is missing or differs is uploaded (again), the upload is completed, and the object is
verified: its size against the file's, and its ETag against the MD5s of the local chunks. Only
then is the part `uploaded: true`, and only then, with `--delete-local-after-upload`, is the
local file deleted. An MP4 part a crash cut back to its last whole fragment simply re-uploads its
last chunk. A failure never deletes anything: the step is retried with capped backoff, the
recording says `uploaded: false`, reason `UploadFailed` and the server's words, and
`haven_upload_failures_total` counts it. A restarted pod resumes every upload from the volume.

Nothing blocks the event loop: file reads and hashing run in threads, one chunk per upload in
memory, and at most MAX_CONCURRENT_CHUNKS chunks of the whole pod in flight.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import random
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import Counter

from .repair import fsync_dir
from .s3 import Credentials, Part, S3Client, S3Error, multipart_etag

if TYPE_CHECKING:
    from .recording import PartInfo, Recording


class _Gone(Exception):
    """The part being uploaded left the recording (joined into one file): leave it."""


log = logging.getLogger("haven.upload")

MIN_CHUNK_BYTES = 5 << 20  # S3's smallest part but the last
MAX_CHUNK_BYTES = 256 << 20  # two chunks are in memory at once (MAX_CONCURRENT_CHUNKS)
DEFAULT_CHUNK_BYTES = 8 << 20
MAX_PARTS = 10_000  # S3's most parts per upload: with 8 MiB chunks, 78 GiB per part file
MAX_CONCURRENT_CHUNKS = 2  # chunks in memory and on the wire at once, for the whole pod
POLL_SECONDS = 1.0  # how often a growing part's size is looked at
FIRST_RETRY_SECONDS = 1.0
DEFAULT_RETRY_MAX_SECONDS = 60.0

CONTENT_TYPES = {".mp4": "video/mp4", ".webm": "video/webm", ".ts": "video/mp2t"}

UPLOAD_BYTES = Counter(
    "haven_upload_bytes", "Bytes of recording chunks uploaded to object storage", ["recording"]
)
UPLOAD_FAILURES = Counter(
    "haven_upload_failures",
    "Object storage requests that failed (each is retried with backoff)",
    ["recording", "code"],
)
UPLOADED_PARTS = Counter(
    "haven_uploaded_parts", "Part files completed and verified in object storage", ["recording"]
)


# -- settings ---------------------------------------------------------------------------------


def _bool(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True, repr=False)
class StorageSettings:
    """Where recordings go. Keys come from files (a mounted Secret, read again on every
    request, so a rotated key is picked up) or from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY
    (and AWS_SESSION_TOKEN) in the environment."""

    bucket: str
    endpoint: str
    region: str = "us-east-1"
    prefix: str = ""
    force_path_style: bool = False
    access_key_id_file: Path | None = None
    secret_access_key_file: Path | None = None
    access_key_id: str | None = None  # from the environment
    secret_access_key: str | None = None  # from the environment
    session_token: str | None = None
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    retry_max_seconds: float = DEFAULT_RETRY_MAX_SECONDS
    delete_local_after_upload: bool = False

    def __repr__(self) -> str:
        shown = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in ("secret_access_key", "session_token")
        }
        return f"StorageSettings({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    def secrets(self) -> list[str]:
        return [s for s in (self.secret_access_key, self.session_token) if s]

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def credentials(self) -> Credentials:
        """The keys, from the files if given (read now: blocking, but a few bytes)."""
        key_id = self.access_key_id
        secret = self.secret_access_key
        if self.access_key_id_file is not None:
            key_id = self.access_key_id_file.read_text().strip()
        if self.secret_access_key_file is not None:
            secret = self.secret_access_key_file.read_text().strip()
        if not key_id or not secret:
            raise S3Error("Credentials", 0, "NoCredentials", "no access key id or secret key")
        return Credentials(key_id, secret, self.session_token)


STORAGE_ARGS = (
    "s3_endpoint",
    "s3_bucket",
    "s3_prefix",
    "s3_region",
    "s3_force_path_style",
    "s3_access_key_id_file",
    "s3_secret_access_key_file",
    "upload_chunk_bytes",
    "upload_retry_max_seconds",
    "delete_local_after_upload",
)


def add_storage_arguments(p: argparse.ArgumentParser, env: Mapping[str, str]) -> None:
    """The object storage flags (each with its HAVEN_* variable); --s3-bucket turns it on."""

    def e(name: str, default: str | None = None) -> str | None:
        return env.get(f"HAVEN_{name}", default)

    g = p.add_argument_group("object storage (uploads while recording; on with --s3-bucket)")
    g.add_argument("--s3-bucket", default=e("S3_BUCKET"), help="bucket to upload parts to")
    g.add_argument(
        "--s3-endpoint",
        default=e("S3_ENDPOINT"),
        help="http(s)://host[:port] of an S3-compatible server (default: AWS for the region)",
    )
    g.add_argument("--s3-region", default=e("S3_REGION", env.get("AWS_REGION", "us-east-1")))
    g.add_argument(
        "--s3-prefix", default=e("S3_PREFIX", ""), help="key prefix, e.g. 'streams/' (kept as is)"
    )
    g.add_argument(
        "--s3-force-path-style",
        type=_bool,
        default=_bool(e("S3_FORCE_PATH_STYLE", "false")),
        help="address the bucket as <endpoint>/<bucket> rather than <bucket>.<endpoint>",
    )
    g.add_argument(
        "--s3-access-key-id-file",
        type=Path,
        default=e("S3_ACCESS_KEY_ID_FILE"),
        help="file holding the access key id (else AWS_ACCESS_KEY_ID)",
    )
    g.add_argument(
        "--s3-secret-access-key-file",
        type=Path,
        default=e("S3_SECRET_ACCESS_KEY_FILE"),
        help="file holding the secret key (else AWS_SECRET_ACCESS_KEY)",
    )
    g.add_argument(
        "--upload-chunk-bytes",
        type=int,
        default=int(e("UPLOAD_CHUNK_BYTES", str(DEFAULT_CHUNK_BYTES))),
        help="a growing part goes up in chunks of this size (5 MiB to 256 MiB)",
    )
    g.add_argument(
        "--upload-retry-max-seconds",
        type=float,
        default=float(e("UPLOAD_RETRY_MAX_SECONDS", str(DEFAULT_RETRY_MAX_SECONDS))),
        help="the longest wait between retries of a failed upload",
    )
    g.add_argument(
        "--delete-local-after-upload",
        type=_bool,
        default=_bool(e("DELETE_LOCAL_AFTER_UPLOAD", "false")),
        help="delete a part's file once its object is complete and verified",
    )


def storage_from_args(
    a: argparse.Namespace, env: Mapping[str, str], error: Callable[[str], object]
) -> StorageSettings | None:
    """Take the object storage flags off `a` (they are not Settings fields of their own)."""
    values = {name: getattr(a, name) for name in STORAGE_ARGS}
    for name in STORAGE_ARGS:
        delattr(a, name)
    if not values["s3_bucket"]:
        return None
    if not MIN_CHUNK_BYTES <= values["upload_chunk_bytes"] <= MAX_CHUNK_BYTES:
        error(
            f"--upload-chunk-bytes must be between {MIN_CHUNK_BYTES} (S3's part minimum) and "
            f"{MAX_CHUNK_BYTES} (held in memory)"
        )
    if not values["upload_retry_max_seconds"] > 0:
        error("--upload-retry-max-seconds must be > 0")
    region = values["s3_region"]
    endpoint = values["s3_endpoint"] or f"https://s3.{region}.amazonaws.com"
    if not endpoint.startswith(("http://", "https://")):
        error("--s3-endpoint must start with http:// or https://")
    has_key = values["s3_access_key_id_file"] or env.get("AWS_ACCESS_KEY_ID")
    has_secret = values["s3_secret_access_key_file"] or env.get("AWS_SECRET_ACCESS_KEY")
    if not (has_key and has_secret):
        error(
            "object storage needs keys: --s3-access-key-id-file and --s3-secret-access-key-file, "
            "or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        )
    return StorageSettings(
        bucket=values["s3_bucket"],
        endpoint=endpoint,
        region=region,
        prefix=values["s3_prefix"],
        force_path_style=values["s3_force_path_style"],
        access_key_id_file=values["s3_access_key_id_file"],
        secret_access_key_file=values["s3_secret_access_key_file"],
        access_key_id=env.get("AWS_ACCESS_KEY_ID") or None,
        secret_access_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
        session_token=env.get("AWS_SESSION_TOKEN") or None,
        chunk_bytes=values["upload_chunk_bytes"],
        retry_max_seconds=values["upload_retry_max_seconds"],
        delete_local_after_upload=values["delete_local_after_upload"],
    )


# -- blocking helpers (threads) -----------------------------------------------------------------


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None


def _read_chunk(path: Path, offset: int, size: int) -> tuple[bytes, str, str]:
    """The bytes, their MD5 and SHA-256 (hex)."""
    with open(path, "rb") as f:
        data = os.pread(f.fileno(), size, offset)
    if len(data) != size:
        raise OSError(f"{path.name}: read {len(data)} bytes at {offset}, expected {size}")
    return data, hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest()


def _chunk_md5s(path: Path, chunk: int) -> tuple[int, list[str]]:
    """The file's size and the MD5 of each of its chunks (one chunk in memory at a time)."""
    md5s = []
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        for offset in range(0, max(size, 1), chunk):
            md5s.append(hashlib.md5(os.pread(f.fileno(), chunk, offset)).hexdigest())
    return size, md5s


def _delete(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    fsync_dir(path.parent)


# -- the uploads ---------------------------------------------------------------------------------


class Uploads:
    """The pod's object storage: one upload task per recording."""

    def __init__(self, settings: StorageSettings) -> None:
        self.settings = settings
        self.client = S3Client(
            settings.endpoint,
            settings.bucket,
            settings.credentials,
            region=settings.region,
            force_path_style=settings.force_path_style,
        )
        self.chunks = asyncio.Semaphore(MAX_CONCURRENT_CHUNKS)
        self.items: dict[str, RecordingUpload] = {}

    @classmethod
    def create(cls, settings: StorageSettings | None) -> Uploads | None:
        return cls(settings) if settings is not None else None

    def adopt(self, entries: list[dict], now: str) -> list[PartInfo]:
        """Parts another pod left in object storage, as the operator passes them back from the
        Recording's status: files complete ({path, url, uploaded: true, sizeBytes, ...}), listed
        as they are (so they stay in status and no new part takes their number), and uploads
        left open ({path, key, uploadId}: status.objectStorage.openUploads), each completed from
        the chunks the server holds. None has a local file. One part per path (a complete file
        wins over an open upload of the same path), in the order of their names."""
        from .recording import PartInfo

        parts: dict[str, PartInfo] = {}
        for e in entries:
            if e.get("uploaded"):
                parts[e["path"]] = PartInfo(
                    path=e["path"],
                    sizeBytes=e.get("sizeBytes") or 0,
                    durationSeconds=e.get("durationSeconds") or 0.0,
                    startedAt=e.get("startedAt"),
                    endedAt=e.get("endedAt") or now,
                    url=e["url"],
                    uploaded=True,
                    upload={"uploadId": None, "chunks": [], "adopted": True, "localMissing": True},
                )
            elif e["path"] not in parts:
                parts[e["path"]] = PartInfo(
                    path=e["path"],
                    endedAt=now,
                    url=self.settings.url(e["key"]),
                    uploaded=False,
                    upload={
                        "uploadId": e["uploadId"],
                        "key": e["key"],
                        "chunkBytes": self.settings.chunk_bytes,
                        "chunks": [],
                        "orphan": True,
                    },
                )
        return sorted(parts.values(), key=lambda p: p.path)  # partNNN in order

    def key(self, part_path: str) -> str:
        return f"{self.settings.prefix}{part_path}"

    def attach(self, rec: Recording) -> None:
        """Upload `rec`'s parts, as they grow and until the recording is over and all are up."""
        if rec.spec.name in self.items:
            return
        upload = RecordingUpload(self, rec)
        rec.upload = upload
        self.items[rec.spec.name] = upload
        upload.start()

    async def stop(self) -> None:
        """Pod shutdown: stop at once; the state on the volume says where to carry on."""
        tasks = [u.task for u in self.items.values() if u.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for upload in self.items.values():
            await asyncio.to_thread(upload.close)  # its last state writes land first
        await self.client.aclose()


class RecordingUpload:
    """Uploads one recording's parts, in order."""

    def __init__(self, uploads: Uploads, rec: Recording) -> None:
        self.uploads = uploads
        self.settings = uploads.settings
        self.client = uploads.client
        self.rec = rec
        self.name = rec.spec.name
        self.task: asyncio.Task | None = None
        self.reason = "Uploading"
        self.message: str | None = None
        self.failures = 0
        self._dirty = False
        self._executor: ThreadPoolExecutor | None = None
        self._seen: dict[str, PartInfo] = {}  # every part this task has looked at, by path
        self._current: PartInfo | None = None  # the part being uploaded

    # -- state ------------------------------------------------------------------------------

    def summary(self) -> dict:
        """What the recording's state says about its upload (the operator's `Uploaded`)."""
        parts = self.rec.progress.parts
        done = all(p.uploaded for p in parts) and self._over()
        # Parts joined into one file keep their open uploads listed until the joined file is
        # up (_retire_joined): if the volume is lost before, those chunks are all that is left.
        listed = {p.path for p in parts}
        joined = [p for path, p in self._seen.items() if path not in listed]
        reason = "Uploaded" if done else self.reason
        return {
            "uploaded": done,
            "upload": {
                "reason": reason,
                "message": None if done else self.message,
                "bucket": self.settings.bucket,
                "prefix": self.settings.prefix,
                "partsUploaded": sum(bool(p.uploaded) for p in parts),
                "bytesUploaded": sum(
                    c["size"] for p in parts for c in (p.upload or {}).get("chunks", [])
                ),
                "failures": self.failures,
                "deleteLocalAfterUpload": self.settings.delete_local_after_upload,
                "openUploads": open_uploads([*parts, *joined], self.uploads.key),
            },
        }

    def _save(self) -> None:
        """Write the state soon, in order with the recording's own writes: by its I/O thread
        while its task runs (never while it writes a final state: STOPPING), by ours after."""
        from .recording import RecordingState

        self._dirty = True
        task = self.rec._task
        if task is not None and not task.done():
            if self.rec.progress.state == RecordingState.STOPPING:
                return  # written once the stop is over
            self.rec._persist_later()
        else:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"up-{self.name}"[:15])
            data = json.dumps(self.rec.to_json(), indent=2)  # the snapshot is taken on the loop
            self._executor.submit(self.rec._write_quietly, data)
        self._dirty = False

    def close(self) -> None:
        """Wait for the state writes queued on our thread (blocking)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    # -- the loop -----------------------------------------------------------------------------

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"upload-{self.name}")

    def _failed(self, exc: Exception, what: str) -> None:
        code = exc.code if isinstance(exc, S3Error) else type(exc).__name__
        self.failures += 1
        UPLOAD_FAILURES.labels(recording=self.name, code=code).inc()
        message = f"{what}: {exc}"[:500]
        if self.reason != "UploadFailed" or self.message != message:
            log.warning("upload of recording %s failed, will retry: %s", self.name, message)
            self.reason, self.message = "UploadFailed", message
            self._save()

    def _recovered(self) -> None:
        if self.reason == "UploadFailed":
            log.info("upload of recording %s goes on", self.name)
            self.reason, self.message = "Uploading", None
            self._save()

    def _gone(self) -> bool:
        part = self._current
        return part is not None and not any(p is part for p in self.rec.progress.parts)

    async def _retrying(self, what: str, step: Callable) -> object:
        """Run `step()` until it succeeds, waiting 1 s doubling to the cap between tries."""
        delay = FIRST_RETRY_SECONDS
        while True:
            if self._gone():
                raise _Gone
            try:
                result = await step()
            except (S3Error, OSError) as exc:
                self._failed(exc, what)
            except Exception as exc:  # never lose the task: log, count, retry
                log.exception("upload of recording %s: unexpected error", self.name)
                self._failed(exc, what)
            else:
                self._recovered()
                return result
            await asyncio.sleep(delay * random.uniform(0.8, 1.0))
            delay = min(delay * 2, self.settings.retry_max_seconds)

    async def _run(self) -> None:
        while True:
            parts = list(self.rec.progress.parts)
            self._seen.update({p.path: p for p in parts})
            for part in parts:
                if part.uploaded or (part.upload or {}).get("gaveUp"):
                    continue
                self._current = part
                try:
                    if await self._upload_part(part) is False:
                        break  # still growing: look again later
                except _Gone:
                    break
                finally:
                    self._current = None
            else:
                if self._over() and [p.path for p in self.rec.progress.parts] == [
                    p.path for p in parts
                ]:
                    await self._retire_joined()
                    if self._dirty:
                        self._save()
                    log.info("recording %s: every file is in the bucket", self.name)
                    if self._executor is not None:  # its queued writes still run
                        self._executor.shutdown(wait=False)
                    return
            if self._dirty:
                self._save()
            await asyncio.sleep(POLL_SECONDS)

    def _over(self) -> bool:
        """The recording writes no more: its task (the stop, then the join) has ended."""
        task = self.rec._task
        return not self.rec.active and (task is None or task.done())

    async def _retire_joined(self) -> None:
        """Parts joined into one file (join.py) left the recording once the joined file was
        checked; now that it is in the bucket too, their objects go the same way (unless
        keepParts), and an upload of theirs still open is aborted."""
        joined = set(self.rec.progress.joinedFrom)
        current = {p.path for p in self.rec.progress.parts}
        for path, part in list(self._seen.items()):
            if path in current or path not in joined:
                continue
            state = part.upload or {}
            key = self.uploads.key(path)
            try:
                if state.get("uploadId") and not part.uploaded:
                    await self.client.abort_multipart_upload(key, state["uploadId"])
                elif part.uploaded and not self.rec.spec.keep_parts:
                    await self.client.delete_object(key)
            except S3Error as exc:  # an orphan, not a loss: the joined object holds it
                log.warning("recording %s: could not tidy %s up: %s", self.name, key, exc)
            del self._seen[path]

    # -- one part ---------------------------------------------------------------------------

    def _state(self, part: PartInfo) -> dict:
        if part.upload is None:
            part.upload = {"uploadId": None, "chunkBytes": self.settings.chunk_bytes, "chunks": []}
        return part.upload

    async def _upload_part(self, part: PartInfo) -> bool:
        """Upload what can be of `part`: True once it is up and verified, False while it grows."""
        key = (part.upload or {}).get("key") or self.uploads.key(part.path)
        path = self.rec.root / part.path
        if part.url != self.settings.url(key) or part.uploaded is None:
            # New, or a joined file that took over its first part's entry (join.py).
            part.url, part.uploaded, part.upload = self.settings.url(key), False, None
            self._save()
        state = self._state(part)
        chunk = state["chunkBytes"]
        content_type = CONTENT_TYPES.get(path.suffix, "application/octet-stream")
        if part.endedAt is None:  # growing: whole chunks only
            size = await asyncio.to_thread(_size, path)
            while size is not None and size >= (len(state["chunks"]) + 1) * chunk:
                if len(state["chunks"]) + 1 >= MAX_PARTS:
                    break  # the rest goes up when the part is finished
                await self._ensure_upload_id(key, state, content_type)
                number = len(state["chunks"]) + 1
                await self._put_chunk(key, path, state, number, chunk, growing=True)
                if part.endedAt is not None:
                    break
            if part.endedAt is None:
                return False
        return await self._finish_part(part, key, path, state, content_type)

    async def _ensure_upload_id(self, key: str, state: dict, content_type: str) -> None:
        if state["uploadId"] is None:
            state["uploadId"] = await self._retrying(
                "creating the multipart upload",
                lambda: self.client.create_multipart_upload(key, content_type),
            )
            state["chunks"] = []
            self._save()

    async def _put_chunk(
        self, key: str, path: Path, state: dict, number: int, chunk: int, growing: bool = False
    ) -> None:
        """Upload chunk `number` (1-based) of the file: `chunk` bytes, or what is left of it."""

        async def step() -> dict:
            async with self.uploads.chunks:  # bounds the chunks in memory, pod-wide
                size = await asyncio.to_thread(_size, path)
                if size is None:
                    raise FileNotFoundError(f"{path.name} is gone")
                length = max(0, min(chunk, size - (number - 1) * chunk))
                data, md5, sha256 = await asyncio.to_thread(
                    _read_chunk, path, (number - 1) * chunk, length
                )
                etag = await self.client.upload_part(
                    key, state["uploadId"], number, data, md5, sha256
                )
            if etag and etag != md5:
                raise S3Error("UploadPart", 200, "BadDigest", f"ETag {etag} is not MD5 {md5}")
            chunk_state = {"number": number, "size": length, "etag": md5}
            if growing:  # went up while the part was still being written
                chunk_state["growing"] = True
            return chunk_state

        done = await self._retrying(f"uploading chunk {number} of {path.name}", step)
        UPLOAD_BYTES.labels(recording=self.name).inc(done["size"])
        state["chunks"] = [c for c in state["chunks"] if c["number"] != number] + [done]
        state["chunks"].sort(key=lambda c: c["number"])
        self._save()

    async def _finish_part(
        self, part: PartInfo, key: str, path: Path, state: dict, content_type: str
    ) -> bool:
        """The part is finished: make the object equal the local file, and verify it."""
        chunk = state["chunkBytes"]
        if await asyncio.to_thread(_size, path) is None:
            return await self._local_missing(part, key, state)
        size, md5s = await self._retrying(
            f"reading {path.name}", lambda: asyncio.to_thread(_chunk_md5s, path, chunk)
        )
        if len(md5s) > MAX_PARTS:
            return self._give_up(part, state, f"{part.path} needs more than {MAX_PARTS} chunks")
        expected = multipart_etag(md5s)

        listed: dict[int, Part] | None = None
        while listed is None:
            if state["uploadId"] is not None:
                listed = await self._list_parts(key, state["uploadId"])
            if listed is None:  # no upload, or the server no longer knows it
                head = await self._retrying(
                    "looking at the object", lambda: self.client.head_object(key)
                )
                if head is not None and head.size == size and head.etag == expected:
                    return await self._verified(part, path, state, head.etag)  # completed before
                state["uploadId"] = None
                await self._ensure_upload_id(key, state, content_type)
                listed = {}
        for number, md5 in enumerate(md5s, 1):
            length = min(chunk, size - (number - 1) * chunk)
            have = listed.get(number)
            if have is None or have.etag != md5 or have.size != length:
                await self._put_chunk(key, path, state, number, chunk)
        parts = [Part(n, 0, md5) for n, md5 in enumerate(md5s, 1)]
        upload_id = state["uploadId"]
        await self._retrying(
            f"completing {path.name}",
            lambda: self.client.complete_multipart_upload(key, upload_id, parts),
        )
        head = await self._retrying("verifying the object", lambda: self.client.head_object(key))
        if head is None or head.size != size or head.etag != expected:
            # Never counted as up: start over with a new upload on the next pass.
            self._failed(
                S3Error(
                    "Verify", 200, "VerifyFailed", f"object {head} is not {size} bytes {expected}"
                ),
                f"verifying {path.name}",
            )
            state["uploadId"], state["chunks"] = None, []
            await asyncio.sleep(self.settings.retry_max_seconds)  # not a loop of new uploads
            return False
        return await self._verified(part, path, state, head.etag)

    async def _list_parts(self, key: str, upload_id: str) -> dict[int, Part] | None:
        """The parts the server holds for the upload; None if it does not know the upload."""

        async def step() -> dict[int, Part] | None:
            try:
                return {p.number: p for p in await self.client.list_parts(key, upload_id)}
            except S3Error as exc:
                if exc.code == "NoSuchUpload":
                    return None
                raise

        return await self._retrying("listing the uploaded chunks", step)

    async def _verified(self, part: PartInfo, path: Path, state: dict, etag: str) -> bool:
        part.uploaded = True
        state["etag"] = etag
        UPLOADED_PARTS.labels(recording=self.name).inc()
        log.info("recording %s: %s is in the bucket (%s)", self.name, part.path, part.url)
        if self.settings.delete_local_after_upload:
            await self._retrying(f"deleting {path.name}", lambda: asyncio.to_thread(_delete, path))
            state["localDeleted"] = True
        self._save()
        return True

    async def _local_missing(self, part: PartInfo, key: str, state: dict) -> bool:
        """The part's file is gone (a lost volume, or deleted by hand). Whatever chunks made it
        up are completed into the object, so they are not lost; it says it is short."""
        if state.get("localDeleted"):
            return True
        upload_id = state["uploadId"]
        listed = await self._list_parts(key, upload_id) if upload_id else None
        orphan = bool(state.get("orphan"))  # another pod's upload: its file was never here
        if listed is None and orphan:  # completed already (by a pod lost before it said so)?
            head = await self._retrying(
                "looking at the object", lambda: self.client.head_object(key)
            )
            if head is not None:
                part.sizeBytes, part.uploaded, state["etag"] = head.size, True, head.etag
                self._save()
                return True
        if listed == {} and orphan:  # no chunk reached the server: nothing to keep
            await self._retrying(
                f"aborting the empty upload of {part.path}", lambda: self._abort(key, upload_id)
            )
            log.warning("recording %s: %s had no chunk up; upload aborted", self.name, key)
            self.rec.progress.parts.remove(part)
            self._save()
            return True
        if not listed:
            why = "the server holds neither its upload nor its object" if orphan else ""
            return self._give_up(part, state, f"{part.path}: the local file is gone {why}".strip())
        parts = leading_run(listed)
        if not parts:  # later chunks without the first: nothing that plays; left as it is
            return self._give_up(part, state, f"{part.path}: its first chunk never went up")
        await self._retrying(
            f"completing {part.path} from the chunks uploaded",
            lambda: self.client.complete_multipart_upload(key, upload_id, parts),
        )
        size = sum(p.size for p in parts)
        head = await self._retrying("verifying the object", lambda: self.client.head_object(key))
        expected = multipart_etag([p.etag for p in parts])
        if head is None or head.size != size or head.etag != expected:
            return self._give_up(
                part, state, f"{key}: the completed object is {head}, not {size} bytes {expected}"
            )
        part.uploaded, state["localMissing"] = True, True
        part.sizeBytes = size if orphan else part.sizeBytes
        state["truncatedTo"], state["etag"] = size, head.etag
        state["chunks"] = [{"number": p.number, "size": p.size, "etag": p.etag} for p in parts]
        log.warning("recording %s: %s was gone; completed from its uploaded chunks", self.name, key)
        self._save()
        return True

    async def _abort(self, key: str, upload_id: str) -> None:
        try:
            await self.client.abort_multipart_upload(key, upload_id)
        except S3Error as exc:
            if exc.code != "NoSuchUpload":  # gone already: what we wanted
                raise

    def _give_up(self, part: PartInfo, state: dict, message: str) -> bool:
        """Nothing more can be done for `part`: it stays `uploaded: false` and says why."""
        log.error("recording %s: %s", self.name, message)
        part.uploaded = False
        state["gaveUp"] = message
        self.reason, self.message = "UploadFailed", message
        self._save()
        return True


def leading_run(listed: dict[int, Part]) -> list[Part]:
    """The chunks numbered 1, 2, ... without a gap: what a file cut after them holds."""
    run, number = [], 1
    while number in listed:
        run.append(listed[number])
        number += 1
    return run


def open_uploads(parts: list[PartInfo], key: Callable[[str], str]) -> list[dict]:
    """The multipart uploads still open, as a pod on another node needs them to complete them
    (no secret): each part's path, object key and upload id."""
    return [
        {
            "path": p.path,
            "key": (p.upload or {}).get("key") or key(p.path),
            "uploadId": p.upload["uploadId"],
        }
        for p in parts
        if not p.uploaded and p.upload and p.upload.get("uploadId") and not p.upload.get("gaveUp")
    ]

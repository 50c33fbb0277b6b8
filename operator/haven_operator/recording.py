"""Recording handlers: a daemon per Recording waits for its LiveStream to be live, starts the
recording through the stream pod's API (idempotently, so it is safe to repeat), mirrors the
pod's progress into `status`, and stops it when asked; a finalizer stays until the pod confirms
the stop (or the LiveStream and its pods are gone), and is dropped once the Recording is over.

A Recording is known to the pod by `<name>-<uid[:8]>` (status.podRecording), so a Recording
deleted and created again under the same name is a new recording in a new directory."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from typing import Any

import kopf
from kubernetes.client import ApiException

from . import conditions, indices, livestream, metrics, upload
from .backoff import delay
from .children import GROUP, VERSION, names
from .conditions import Condition
from .podclient import PodRejected, PodUnreachable, RecordingRequest, StreamPodClient
from .pods import client_for, current_pod, pod_ready
from .settings import Settings

PLURAL = "recordings"
INTERVAL = Settings.from_env().status_interval
POD_PHASES = {
    "starting": "Starting",
    "recording": "Recording",
    "stopping": "Stopping",
    "completed": "Completed",
    "failed": "Failed",
}
FINAL = ("Completed", "Failed")
STARTED = ("Starting", "Recording", "Stopping")
_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)(h|m|s)")


def parse_duration(text: str | None) -> float | None:
    """'1h30m' -> 5400.0 (the CRD's pattern has already checked the syntax)."""
    if not text:
        return None
    unit = {"h": 3600, "m": 60, "s": 1}
    return sum(float(n) * unit[u] for n, u in _DURATION.findall(text))


def request_for(
    name: str, spec: dict, status: dict | None = None, stopped: bool = False
) -> RecordingRequest:
    """The pod's start request, with what a lost pod left in object storage (a pod that knows
    the recording ignores it): the uploads it left open (status.objectStorage.openUploads),
    which a new pod completes, and the files it had uploaded (status.files, uploaded), which
    it lists as they are and numbers its own parts after. `stopped`: the recording is over,
    the pod only completes those uploads."""
    status = status or {}
    open_uploads = (status.get("objectStorage") or {}).get("openUploads") or []
    return RecordingRequest(
        name=name,
        format=spec.get("format", "av1"),
        quality=spec.get("quality", "medium"),
        audio=spec.get("audio", True),
        max_width=spec.get("maxWidth"),
        max_fps=spec.get("maxFps"),
        max_duration_seconds=parse_duration(spec.get("maxDuration")),
        container=spec.get("container"),
        resume_uploads=tuple(
            {k: u[k] for k in ("path", "key", "uploadId")}
            for u in open_uploads
            if all(u.get(k) for k in ("path", "key", "uploadId"))
        ),
        uploaded_files=tuple(
            {k: f[k] for k in UPLOADED_FIELDS if f.get(k) is not None}
            for f in status.get("files") or []
            if f.get("uploaded") and f.get("url") and f.get("path")
        )[-MAX_UPLOADED_FILES:],  # the pod's bound; it numbers its parts after these
        stopped=stopped,
    )


def open_uploads(status: dict) -> bool:
    """Status lists uploads a pod left open (which a pod that lost them can complete)."""
    return bool((status.get("objectStorage") or {}).get("openUploads"))


FILE_FIELDS = ("path", "sizeBytes", "durationSeconds", "startedAt", "endedAt", "url", "uploaded")
UPLOADED_FIELDS = ("path", "url", "sizeBytes", "durationSeconds", "startedAt", "endedAt")
MAX_UPLOADED_FILES = 1000  # haven_recorder.app.MAX_UPLOADED_FILES
# Uploaded=False reasons after which nothing more will happen: the daemon lets go.
UPLOAD_GIVEN_UP = ("LiveStreamGone", "RecordingGone")


def files_from_pod(parts: list[dict]) -> list[dict[str, Any]]:
    """status.files: each part's own fields (not the upload's resume state, which stays in the
    pod's recording.json)."""
    return [{k: part[k] for k in FILE_FIELDS if part.get(k) is not None} for part in parts]


def upload_condition(info: dict) -> Condition | None:
    """Uploaded: True once every file is in object storage and verified (and the recording is
    over); False while it goes up, or with the server's words when it fails (the pod retries).
    None when the pod uploads nothing."""
    summary = info.get("upload")
    if summary is None:
        return None
    parts = info.get("parts") or []
    done = sum(bool(p.get("uploaded")) for p in parts)
    where = f"s3://{summary.get('bucket')}/{summary.get('prefix') or ''}"
    if info.get("uploaded"):
        return Condition("Uploaded", True, "Uploaded", f"{done} file(s) verified in {where}")
    reason = summary.get("reason") or "Uploading"
    if reason == "Uploaded":
        reason = "Uploading"  # every file is up, but the recording is not over yet
    message = summary.get("message") or f"{done} of {len(parts)} file(s) uploaded to {where}"
    return Condition("Uploaded", False, reason, message[:1000])


def upload_settled(updates: list[Condition]) -> bool:
    """Nothing more to wait for, after these (Uploaded) conditions."""
    cond = next((c for c in updates if c.type == "Uploaded"), None)
    return cond is None or cond.status is True or cond.reason in UPLOAD_GIVEN_UP


def settled(status: dict) -> bool:
    """Over, and nothing more to wait for: no upload, or it is done or given up."""
    if status.get("phase") not in FINAL:
        return False
    cond = next((c for c in status.get("conditions") or [] if c["type"] == "Uploaded"), None)
    return cond is None or cond["status"] == "True" or cond.get("reason") in UPLOAD_GIVEN_UP


def from_pod(info: dict, claim: str, pod_uid: str | None) -> dict[str, Any]:
    """The pod's view of a recording, in the Recording's status fields."""
    return {
        "phase": POD_PHASES.get(info["state"], "Pending"),
        "claimName": claim,
        "files": files_from_pod(info["parts"]),
        "bytesWritten": info["bytesWritten"],
        "durationSeconds": info["durationSeconds"],
        "framesWritten": info["framesWritten"],
        "framesDropped": info["framesDropped"],
        "videoCodec": info["videoCodec"],
        "audioCodec": info["audioCodec"],
        "startedAt": info["startedAt"],
        "stoppedAt": info["stoppedAt"],
        "podUID": pod_uid,
        "message": info["error"] or info["reason"],
    }


def pod_recording_name(body: dict) -> str:
    """The recording's name on the pod: its own, fixed at the first start, else from the UID.
    A Recording started by an older operator (no status.podRecording) keeps its plain name."""
    status, meta = body.get("status") or {}, body["metadata"]
    if status.get("podRecording"):
        return status["podRecording"]
    if status.get("phase") in STARTED or status.get("files"):
        return meta["name"]
    return f"{meta['name']}-{meta['uid'][:8]}"


def recording_conditions(phase: str, reason: str, message: str) -> list[Condition]:
    """Ready while recording; Complete or Failed once over (kubectl wait --for=condition=...)."""
    reason = reason or phase
    return [
        Condition("Ready", phase == "Recording", reason if phase != "Recording" else "Recording",
                  message),
        Condition("Complete", phase == "Completed", reason if phase == "Completed" else phase,
                  message if phase == "Completed" else ""),
        Condition("Failed", phase == "Failed", reason if phase == "Failed" else phase,
                  message if phase == "Failed" else ""),
    ]  # fmt: skip


def not_over(status: kopf.Status, **_: Any) -> bool:
    return status.get("phase") not in FINAL


def not_settled(status: kopf.Status, **_: Any) -> bool:
    """The daemon runs until the recording is over and its upload done (or given up)."""
    return not settled(dict(status))


class Reconciler:
    """One Recording's loop; `step` is level-based: it looks, acts once, and reports."""

    def __init__(
        self, body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, pods: kopf.Index
    ) -> None:
        self.body, self.memo, self.logger, self.pods = body, memo, logger, pods
        self.kube, self.settings = memo.kube, memo.settings
        self.name = body["metadata"]["name"]
        self.namespace = body["metadata"]["namespace"]
        self.written: dict[str, Any] = {}

    def _write(self, status: dict[str, Any], updates: list[Condition]) -> None:
        current = {**self.body.get("status", {}), **self.written}
        generation = self.body["metadata"].get("generation", 1)
        phase = status.get("phase") or current.get("phase") or "Pending"
        reason = next((c.reason for c in updates if c.type == "Recording"), "")
        message = status.get("message") or next(
            (c.message for c in updates if c.type != "Uploaded"), ""
        )
        if "phase" in status or not updates or any(c.type == "Recording" for c in updates):
            updates = [c for c in updates if c.type != "Recording"]
            updates += recording_conditions(phase, reason, message or "")
        # else: only the upload moved (the recording is over): its conditions stay as they are
        status = {
            **status,
            "podRecording": pod_recording_name(self.body),
            "observedGeneration": generation,
            "conditions": conditions.merge(current.get("conditions"), updates, generation),
        }
        changed = {k: v for k, v in status.items() if current.get(k) != v}
        if not changed:
            return  # nothing changed: no write
        if "phase" in status and status["phase"] != current.get("phase"):
            emit = kopf.warn if status.get("phase") == "Failed" else kopf.info
            emit(
                dict(self.body),
                reason=reason or status.get("phase"),
                message=f"{current.get('phase')} -> {status['phase']}",
            )
        self.kube.patch_status(PLURAL, self.namespace, self.name, changed)
        metrics.STATUS_WRITES.labels(kind="Recording").inc()
        self.written.update(changed)

    async def write(self, status: dict[str, Any], updates: list[Condition]) -> None:
        await asyncio.to_thread(self._write, status, updates)

    async def step(self) -> bool:
        """Return True once the recording is over (nothing more to do)."""
        spec = self.body["spec"]
        status = {**self.body.get("status", {}), **self.written}
        if settled(status):
            return True
        ls_name = spec["liveStreamRef"]["name"]
        ls = await asyncio.to_thread(self.kube.livestream, self.namespace, ls_name)
        if status.get("phase") in FINAL:
            return await self.follow_upload(ls, ls_name)
        started = status.get("phase") in STARTED
        if ls is None:
            cond = Condition(
                "LiveStreamReady", False, "LiveStreamNotFound", f"no LiveStream {ls_name} here"
            )
            if spec.get("stopped"):
                await self.write({"phase": "Completed", "message": "stopped"}, [cond])
                return True
            await self.write({"phase": status.get("phase") or "Pending"}, [cond])
            return False
        ls_phase = ls.get("status", {}).get("phase")
        if ls["metadata"].get("deletionTimestamp") and not started:
            message = f"LiveStream {ls_name} is being deleted"
            cond = Condition("LiveStreamReady", False, "LiveStreamDeleting", message)
            recording = Condition("Recording", False, "LiveStreamDeleting", message)
            await self.write({"phase": "Failed", "message": message}, [cond, recording])
            return True
        if not started and not spec.get("stopped") and ls_phase != "Live":
            cond = Condition(
                "LiveStreamReady",
                False,
                "LiveStreamNotLive",
                f"LiveStream {ls_name} is {ls_phase or 'Pending'}",
            )
            await self.write({"phase": "Pending"}, [cond, Condition("Recording", False, "Waiting")])
            return False

        pod = current_pod(indices.pods_of(self.pods, self.namespace, ls_name))
        client = await asyncio.to_thread(
            client_for, self.kube, self.settings, self.namespace, ls_name, pod, self.memo.tokens
        )
        if client is None:
            return False
        pod_name = pod_recording_name(self.body)
        try:
            if spec.get("stopped"):
                info = await client.stop_recording(pod_name)
                if info is None:  # its node was lost (with its volume) before the stop
                    info = await self.hand_back(client, pod_name, status)
            else:
                info = await client.start_recording(request_for(pod_name, spec, status))
        except PodUnreachable as exc:
            self.logger.info("stream pod unreachable: %s", exc)
            return False
        except PodRejected as exc:
            if exc.status in (401, 403):  # the token changed: read it again, try again
                livestream.wake(self.memo, self.namespace, ls_name, forget_token=True)
                self.logger.warning("stream pod refused the token (%s); reading it again", exc)
                return False
            cond = Condition("Recording", False, "Rejected", exc.detail[:500])
            await self.write({"phase": "Failed", "message": exc.detail[:500]}, [cond])
            return True
        claim = names(ls_name)["claim"]
        updates: list[Condition] = []
        if info is None:  # stopped before the pod ever had it
            new = {"phase": "Completed", "claimName": claim, "message": "stopped before it started"}
        else:
            new = from_pod(info, claim, pod.uid if pod is not None else None)
            updates = self.upload_updates(new, info, ls)
        phase = new["phase"]
        recording = Condition(
            "Recording",
            phase == "Recording",
            (info["reason"] if info else "Stopped") or phase,
            new.get("message") or "",
        )
        live = Condition(
            "LiveStreamReady", ls_phase == "Live", ls_phase or "Pending", f"LiveStream {ls_name}"
        )
        await self.write(new, [recording, live, *updates])
        metrics.RECONCILES.labels(kind="Recording").inc()
        return phase in FINAL and upload_settled(updates)

    def upload_updates(self, new: dict[str, Any], info: dict, ls: dict | None) -> list[Condition]:
        """With object storage: status.objectStorage (to presign from) and Uploaded."""
        cond = upload_condition(info)
        if cond is None:
            return []
        cfg = upload.effective(ls or {}, self.settings.default_upload)
        if cfg is not None:
            new["objectStorage"] = upload.object_storage_status(cfg, info.get("upload"))
            new["objectStorage"]["openUploads"] = (info.get("upload") or {}).get("openUploads", [])
        return [cond]

    async def hand_back(self, client: StreamPodClient, name: str, status: dict) -> dict | None:
        """A recording the pod does not know, and over: if status lists uploads a lost pod left
        open, hand them (and the files it had uploaded) to this pod to complete, as a stopped
        recording. Its state, or None when there is nothing to complete or the pod refuses
        (said in the log; a refused token is raised, to be read again)."""
        if not open_uploads(status):
            return None
        try:
            return await client.start_recording(
                request_for(name, self.body["spec"], status, stopped=True)
            )
        except PodRejected as exc:
            if exc.status in (401, 403):
                raise
            self.logger.warning("the stream pod cannot complete the open uploads: %s", exc)
            return None

    async def follow_upload(self, ls: dict | None, ls_name: str) -> bool:
        """After Completed or Failed, the pod may still be uploading: look until it is done
        or cannot go on. Returns True when there is nothing more to wait for."""
        claim = names(ls_name)["claim"]
        if ls is None or ls["metadata"].get("deletionTimestamp"):
            message = (
                f"LiveStream {ls_name} is gone or going: its pod uploads no more; the files "
                f"not uploaded stay on PersistentVolumeClaim {claim}"
            )
            await self.write({}, [Condition("Uploaded", False, "LiveStreamGone", message)])
            return True
        pod = current_pod(indices.pods_of(self.pods, self.namespace, ls_name))
        client = await asyncio.to_thread(
            client_for, self.kube, self.settings, self.namespace, ls_name, pod, self.memo.tokens
        )
        if client is None:
            return False
        status = {**self.body.get("status", {}), **self.written}
        name = pod_recording_name(self.body)
        try:
            info = await client.recording(name)
            if info is None:  # its node was lost (with its volume) after it ended
                info = await self.hand_back(client, name, status)
        except PodUnreachable as exc:
            self.logger.info("stream pod unreachable: %s", exc)
            return False
        except PodRejected as exc:
            if exc.status in (401, 403):
                livestream.wake(self.memo, self.namespace, ls_name, forget_token=True)
            return False
        if info is None:
            message = f"the stream pod no longer has this recording; its files stay on {claim}"
            await self.write({}, [Condition("Uploaded", False, "RecordingGone", message)])
            return True
        new = from_pod(info, claim, pod.uid if pod is not None else None)
        updates = self.upload_updates(new, info, ls)
        if not updates:  # the pod was started without object storage since
            updates = [Condition("Uploaded", False, "RecordingGone", "object storage is off")]
        new = {k: new[k] for k in ("files", "bytesWritten", "objectStorage") if k in new}
        await self.write(new, updates)
        return upload_settled(updates)


@kopf.daemon(GROUP, VERSION, PLURAL, cancellation_timeout=10.0, when=not_settled)
async def run(
    body: kopf.Body,
    memo: kopf.Memo,
    logger: kopf.Logger,
    stopped: kopf.DaemonStopped,
    stream_pods: kopf.Index,
    **_: Any,
) -> None:
    reconciler = Reconciler(body, memo, logger, stream_pods)
    while not stopped:
        try:
            if await reconciler.step():
                return
        except Exception:  # keep the loop alive: the next step retries
            logger.exception("recording step failed")
            metrics.ERRORS.labels(kind="Recording").inc()
        await stopped.wait(INTERVAL)


async def finalizer_client(
    memo: kopf.Memo, ns: str, ls_name: str, pods: list, wait: float, waiting: str
) -> StreamPodClient:
    """The LiveStream's ready stream pod's client, for a finalizer: while it has none (or no
    token yet), a TemporaryError retries in `wait` seconds; `waiting` says what for."""
    pod = current_pod(pods)
    if pod is None or not pod_ready(pod):
        raise kopf.TemporaryError(waiting, wait)
    client = await asyncio.to_thread(
        client_for, memo.kube, memo.settings, ns, ls_name, pod, memo.tokens
    )
    if client is None:
        raise kopf.TemporaryError(f"no control token for {ls_name} yet", wait)
    return client


@kopf.on.delete(GROUP, VERSION, PLURAL, when=not_over)
async def finalize(
    body: kopf.Body,
    memo: kopf.Memo,
    logger: kopf.Logger,
    retry: int,
    stream_pods: kopf.Index,
    **_: Any,
) -> None:
    """Stop the recording on its pod before the Recording goes: the finalizer stays until the
    pod confirms the stop, or the LiveStream and its pods are gone for good. A suspended
    LiveStream keeps it waiting; when the pod comes back, the stop is its first order."""
    ns = body["metadata"]["namespace"]
    ls_name = body["spec"]["liveStreamRef"]["name"]
    wait = min(5.0, delay(retry + 1))
    ls = await asyncio.to_thread(memo.kube.livestream, ns, ls_name)
    pods = indices.pods_of(stream_pods, ns, ls_name)
    if ls is None and not pods:
        logger.info("LiveStream %s and its pods are gone: nothing left to stop", ls_name)
        return
    phase = (body.get("status") or {}).get("phase")
    ls_live = ls is not None and (ls.get("status") or {}).get("phase") == "Live"
    if phase not in STARTED and not ls_live:
        return  # never started, and never asked to (a start waits for Live)
    waiting = f"waiting for a stream pod of {ls_name} to confirm the stop"
    client = await finalizer_client(memo, ns, ls_name, pods, wait, waiting)
    name = pod_recording_name(body)
    try:
        info = await client.stop_recording(name)
    except PodUnreachable as exc:
        raise kopf.TemporaryError(f"stream pod unreachable: {exc}", wait) from exc
    except PodRejected as exc:
        if exc.status in (401, 403):
            livestream.wake(memo, ns, ls_name, forget_token=True)
            raise kopf.TemporaryError(f"stream pod refused the token: {exc}", wait) from exc
        logger.warning("the pod refused to stop %s: %s", name, exc)
        return
    logger.info("stopped %s on its pod: %s", name, (info or {}).get("state", "never started"))


def presign_pending(
    annotations: kopf.Annotations, status: kopf.Status, meta: kopf.Meta, **kwargs: Any
) -> bool:
    """The annotation asks for URLs that status does not hold yet (or was removed)."""
    if kwargs.get("type") == "DELETED" or meta.get("deletionTimestamp"):
        return False
    want = annotations.get(upload.PRESIGN)
    return want != (status.get("presigned") or {}).get("request")


@kopf.on.event(GROUP, VERSION, PLURAL, when=presign_pending)
async def presign(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    """`streams.haven.dev/presign: <validity>` (1h, 30m, 3600s; at most 168h) asks for
    presigned GET URLs of the uploaded files, answered in status.presigned: {request,
    expiresAt, files: [{path, url, sizeBytes}]} or {request, error}; while the upload is still
    going, {waiting} until it is done. Removing the annotation removes the URLs. Anyone who can
    read the Recording can use them until they expire."""
    meta, status = body["metadata"], dict(body.get("status") or {})
    ns, name = meta["namespace"], meta["name"]
    want = (meta.get("annotations") or {}).get(upload.PRESIGN)
    answer: dict[str, Any] | None = None
    if want is not None:
        answer = {"request": want, "expiresAt": None, "files": None, "error": None}
        answer["waiting"] = None
        try:
            seconds = upload.presign_seconds(want, parse_duration)
            storage = status.get("objectStorage")
            uploaded = any(f.get("uploaded") for f in status.get("files") or [])
            if storage and not uploaded and not settled(status):
                waiting = "waiting for the upload (see condition Uploaded)"
                answer = {"waiting": waiting, "request": None}
            else:
                ref = (storage or {}).get("credentialsSecretRef") or {}
                secret = (
                    await asyncio.to_thread(memo.kube.get, "Secret", ns, ref["name"])
                    if ref
                    else None
                )
                creds = upload.credentials(secret, {"s3": storage}) if storage else None
                now = dt.datetime.now(dt.UTC)
                answer.update(upload.presign_files(status, creds, seconds, now))  # type: ignore[arg-type]
        except (ValueError, upload.CredentialsError) as exc:
            answer["error"] = str(exc)
        except ApiException as exc:
            answer["error"] = f"cannot read the credentials Secret: {exc.status} {exc.reason}"
        logger.info("presign %s: %s", name, answer.get("error") or answer.get("expiresAt"))
    await asyncio.to_thread(memo.kube.patch_status, PLURAL, ns, name, {"presigned": answer})

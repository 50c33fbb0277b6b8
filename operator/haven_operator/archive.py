"""Auto-record and retention, wired to kopf (the decisions are autorecord.py and retention.py):

- an index of the auto-created Recordings by LiveStream (from the watch: after a restart it is
  complete before any daemon runs, so the current Recording is found, never created twice);
- a daemon per LiveStream that applies `autorecord.decide` every status interval;
- a daemon per finished Recording with `ttlSecondsAfterFinished` that deletes it when due;
- a finalizer on Recordings with `deleteFilesWithRecording: true` that has the stream pod delete
  the files (volume and object storage) before the object goes."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from typing import Any

import kopf

from . import autorecord, indices, livestream, metrics, retention
from .autorecord import AUTO_LABEL, Create, Delete, RecordingView, Stop
from .backoff import delay
from .children import GROUP, LABEL, VERSION
from .podclient import PodRejected, PodUnreachable
from .recording import finalizer_client, pod_recording_name
from .settings import Settings

IDLE = 60.0  # seconds between looks of a LiveStream with nothing to auto-record
RESEND = 30.0  # seconds before a stop or delete the watch does not show yet is sent again


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@kopf.index(GROUP, VERSION, "recordings", labels={AUTO_LABEL: "true", LABEL: kopf.PRESENT})
async def auto_recordings(body: kopf.Body, namespace: str, labels: kopf.Labels, **_: Any) -> dict:
    """(namespace, LiveStream) -> its auto-recordings."""
    return {(namespace, labels[LABEL]): RecordingView.of(body)}


async def _act(memo: kopf.Memo, body: dict, action: autorecord.Action, logger: Any) -> None:
    kube, namespace = memo.kube, body["metadata"]["namespace"]
    if isinstance(action, Create):
        if await asyncio.to_thread(kube.create_recording, action.manifest):
            logger.info("auto-record: created Recording %s", action.name)
            kopf.info(body, reason="AutoRecordStarted", message=f"Recording {action.name}")
    elif isinstance(action, Stop):
        await asyncio.to_thread(
            kube.patch_recording_spec, namespace, action.name, {"stopped": True}
        )
        logger.info("auto-record: stopping Recording %s: %s", action.name, action.reason)
        kopf.info(
            body, reason="AutoRecordStopped", message=f"Recording {action.name}: {action.reason}"
        )
    elif isinstance(action, Delete):
        await asyncio.to_thread(kube.delete_recording, namespace, action.name, action.uid)
        logger.info("auto-record: deleting Recording %s: %s", action.name, action.reason)
        kopf.info(
            body, reason="RecordingDeleted", message=f"Recording {action.name}: {action.reason}"
        )


@kopf.daemon(GROUP, VERSION, "livestreams", cancellation_timeout=10.0)
async def auto_record(
    body: kopf.Body,
    memo: kopf.Memo,
    logger: kopf.Logger,
    stopped: kopf.DaemonStopped,
    auto_recordings: kopf.Index,
    **_: Any,
) -> None:
    """Auto-record for one LiveStream: look (in memory), decide, act; again every status
    interval, or sooner when a grace period runs out."""
    settings: Settings = memo.settings
    key = (body["metadata"]["namespace"], body["metadata"]["name"])
    wake = _wakes(memo).setdefault(key, asyncio.Event())
    sent: dict[tuple[str, str], float] = {}  # stops and deletes the index may not show yet
    try:
        while not stopped:
            raw = dict(body)
            views = list(auto_recordings.get(key, []))
            now, clock = _now(), time.monotonic()
            interval = settings.status_interval
            try:
                actions = autorecord.decide(raw, views, now)
                sent = {k: t for k, t in sent.items() if clock - t < RESEND}
                for action in actions:
                    once = (type(action).__name__, action.name)
                    if once in sent:
                        continue
                    await _act(memo, raw, action, logger)
                    if not isinstance(action, Create):  # a repeated create is a 409, not a copy
                        sent[once] = clock
                if (
                    not actions
                    and not any(v.running for v in views)
                    and "autoRecord" not in raw["spec"]
                ):
                    interval = IDLE
                interval = min(interval, autorecord.next_check(raw, views, now) + 0.5)
            except Exception as exc:  # the next pass tries again
                logger.warning("auto-record: %r", exc)
                metrics.ERRORS.labels(kind="AutoRecord").inc()
            await _sleep(wake, stopped, interval)
    finally:
        _wakes(memo).pop(key, None)


async def _sleep(wake: asyncio.Event, stopped: kopf.DaemonStopped, seconds: float) -> None:
    """Until `seconds` pass, an event on the LiveStream sets `wake`, or the daemon is stopped."""
    deadline = time.monotonic() + seconds
    while not stopped and (left := deadline - time.monotonic()) > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout=min(1.0, left))
            break
    wake.clear()


def _wakes(memo: kopf.Memo) -> dict[tuple[str, str], asyncio.Event]:
    if getattr(memo, "autorecord_wakes", None) is None:
        memo.autorecord_wakes = {}
    return memo.autorecord_wakes


@kopf.on.event(GROUP, VERSION, "livestreams")
async def livestream_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A LiveStream's spec or status moved (say, it went Live): decide now."""
    event = _wakes(memo).get((body["metadata"]["namespace"], body["metadata"]["name"]))
    if event is not None:
        event.set()


@kopf.daemon(
    GROUP, VERSION, "recordings", cancellation_timeout=5.0,
    when=lambda body, **_: retention.has_ttl(body),
)  # fmt: skip
async def expire(
    body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, stopped: kopf.DaemonStopped, **_: Any
) -> None:
    """Delete a finished Recording `ttlSecondsAfterFinished` after it finished."""
    meta = body["metadata"]
    while not stopped:
        at = retention.expires_at(dict(body))
        left = (at - _now()).total_seconds() if at is not None else 60.0
        if at is not None and left <= 0:
            ttl = body["spec"]["ttlSecondsAfterFinished"]
            try:
                await asyncio.to_thread(
                    memo.kube.delete_recording, meta["namespace"], meta["name"], meta["uid"]
                )
            except Exception as exc:  # retried after a pause
                logger.warning("could not delete expired Recording: %r", exc)
                metrics.ERRORS.labels(kind="Recording").inc()
                await stopped.wait(5.0)
                continue
            logger.info("deleted: finished more than ttlSecondsAfterFinished (%s s) ago", ttl)
            kopf.info(dict(body), reason="Expired", message=f"ttlSecondsAfterFinished is {ttl}")
            return
        await stopped.wait(min(left, 60.0))


@kopf.on.delete(
    GROUP, VERSION, "recordings",
    when=lambda spec, **_: bool(spec.get("deleteFilesWithRecording")),
)  # fmt: skip
async def delete_files(
    body: kopf.Body,
    memo: kopf.Memo,
    logger: kopf.Logger,
    retry: int,
    stream_pods: kopf.Index,
    **_: Any,
) -> None:
    """deleteFilesWithRecording: the stream pod deletes the recording's files on the volume
    and in object storage before the Recording goes. A recording still running is stopped
    first. While the LiveStream exists but has no ready pod (suspended, restarting), this
    waits; if the LiveStream and its pods are gone, the files stay on the claim."""
    ns = body["metadata"]["namespace"]
    ls_name = body["spec"]["liveStreamRef"]["name"]
    wait = min(10.0, delay(retry + 1))
    ls = await asyncio.to_thread(memo.kube.livestream, ns, ls_name)
    pods = indices.pods_of(stream_pods, ns, ls_name)
    if ls is None and not pods:
        message = f"LiveStream {ls_name} and its pods are gone: the files stay on its claim"
        logger.warning(message)
        kopf.warn(dict(body), reason="FilesKept", message=message)
        return
    waiting = f"waiting for a ready stream pod of {ls_name}"
    client = await finalizer_client(memo, ns, ls_name, pods, wait, waiting)
    name = pod_recording_name(body)
    try:
        result = await client.delete_recording(name)
    except PodUnreachable as exc:
        raise kopf.TemporaryError(f"stream pod: {exc}", wait) from exc
    except PodRejected as exc:
        if exc.status in (401, 403):
            livestream.wake(memo, ns, ls_name, forget_token=True)
            raise kopf.TemporaryError(f"stream pod refused the token: {exc}", wait) from exc
        if exc.status == 409:  # still recording or finishing: stop it, then try again
            try:
                await client.stop_recording(name)
            except (PodUnreachable, PodRejected) as stop_exc:
                logger.info("stop before deleting files: %s", stop_exc)
            raise kopf.TemporaryError(f"{name} is finishing: {exc.detail}", wait) from exc
        logger.warning("the pod refused to delete %s: %s", name, exc)
        kopf.warn(dict(body), reason="FilesNotDeleted", message=exc.detail[:500])
        return
    if result is None:
        logger.info("no files of %s on its pod", name)
        return
    files, objects = result.get("deletedFiles", []), result.get("deletedObjects", [])
    message = f"deleted {len(files)} files and {len(objects)} objects of {name}"
    logger.info(message)
    kopf.info(dict(body), reason="FilesDeleted", message=message)
    if kept := result.get("keptObjects"):  # uploaded where the pod's storage is not now
        kopf.warn(dict(body), reason="ObjectsKept", message=", ".join(kept)[:500])

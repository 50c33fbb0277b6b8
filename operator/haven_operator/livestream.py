"""LiveStream handlers: one daemon per LiveStream runs its control loop (reconcile the children
when due, observe, write status on change); watches on the children wake it when one of them
is deleted or edited; a finalizer stops its Recordings before it goes."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import kopf

from . import conditions, indices, metrics, upload
from .backoff import jittered
from .children import GROUP, LABEL, VERSION, names
from .conditions import Condition
from .pods import client_for, current_pod, pod_ready
from .reconciler import Outcome, child_fingerprint, reconcile, secret_unchanged
from .rollout import Gate, in_flight
from .schedule import Schedule
from .settings import Settings
from .status import COUNTERS, Observed, changes, livestream_status
from .statusstream import StatusStream

PLURAL = "livestreams"
FINAL = ("Completed", "Failed")  # Recording phases that are over
COUNTER_INTERVAL = 30.0  # seconds: counters (viewers, ...) alone are written at most this often
IDLE = 300.0  # seconds a loop with no ready pod sleeps unless a watch or the schedule wakes it
ROLLOUT_RETRY = 300.0  # seconds: a template waiting for a slot looks again, if not woken first


class Loop:
    """A LiveStream's control loop state, in memory: its schedule, its last outcome, what it
    last wrote, and the event that wakes it."""

    def __init__(self) -> None:
        self.schedule = Schedule()
        self.outcome: Outcome | None = None
        self.written: dict[str, Any] = {}
        self.counters_at = 0.0
        self.event = asyncio.Event()
        self.stream: StatusStream | None = None  # the pod's state, while it is ready
        self.stream_key: tuple[str, str, str] | None = None  # (pod uid, URL, token) it follows

    async def follow(self, key: tuple[str, str, str] | None, make) -> StatusStream | None:
        """Follow the pod `key` names (a new stream when it changed), or nothing (None)."""
        if key == self.stream_key:
            return self.stream
        if self.stream is not None:
            await self.stream.stop()
        self.stream, self.stream_key = (make().start(), key) if key is not None else (None, None)
        return self.stream

    def wake(self) -> None:
        """Reconcile now."""
        self.schedule.dirty = True
        self.event.set()

    def poke(self) -> None:
        """Look at the status now (a pod or the claim changed)."""
        self.event.set()

    async def sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.event.wait(), timeout=seconds)
        self.event.clear()


def _loops(memo: kopf.Memo) -> dict[tuple[str, str], Loop]:
    if getattr(memo, "streams", None) is None:
        memo.streams = {}
    return memo.streams


def _gate(memo: kopf.Memo) -> Gate | None:
    return getattr(memo, "rollout", None)


def _wake_all(memo: kopf.Memo, keys: set[tuple[str, str]]) -> None:
    for namespace, name in keys:
        wake(memo, namespace, name)


def wake(memo: kopf.Memo, namespace: str, name: str, forget_token: bool = False) -> None:
    """Reconcile this LiveStream now (reading its control token again, if asked)."""
    if forget_token:
        memo.tokens.forget(namespace, name)
    loop = _loops(memo).get((namespace, name))
    if loop is not None:
        loop.wake()


async def observe(
    body: dict, memo: kopf.Memo, loop: Loop, pods: kopf.Index, claims: kopf.Index
) -> Observed:
    """The claim and the pod from the watches; the pod's own report from its status stream
    (statusstream.py: one connection, answered on a change). I/O only for the control token,
    once; status.py decides."""
    kube, settings = memo.kube, memo.settings
    meta = body["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    claim_phase = indices.claim_phase(claims, namespace, names(name)["claim"])
    pod = current_pod(indices.pods_of(pods, namespace, name))
    if body["spec"].get("suspend") or pod is None or not pod_ready(pod):
        await loop.follow(None, None)
        return Observed(claim_phase, pod, None)
    client = await asyncio.to_thread(client_for, kube, settings, namespace, name, pod, memo.tokens)
    if client is None:
        await loop.follow(None, None)
        return Observed(claim_phase, pod, None)
    headers = dict(client._headers)  # the operator's own client
    token = headers.get("Authorization", "")

    def rejected() -> None:
        wake(memo, namespace, name, forget_token=True)  # and the pod rolls to a new Secret

    stream = await loop.follow(
        (pod.uid, client.base_url, token),
        lambda: StatusStream(client.base_url, headers, loop.poke, rejected,
                             slow=settings.status_interval),
    )  # fmt: skip
    assert stream is not None
    await stream.first(5.0)  # a new pod: its first answer, not a transient Unknown
    if stream.latest is not None:
        return Observed(claim_phase, pod, stream.latest)
    if stream.error is None:
        return Observed(claim_phase, pod, None)
    reason, message = stream.error
    return Observed(claim_phase, pod, None, Condition("SourceConnected", None, reason, message))


def _announce(body: dict, before: Outcome | None, after: Outcome) -> None:
    if before is not None and (before.ok, before.reason, before.message) == (
        after.ok,
        after.reason,
        after.message,
    ):
        return
    if after.created_secret:
        secret = names(body["metadata"]["name"])["secret"]
        kopf.info(body, reason="Created", message=f"control token Secret {secret}")
    if not after.ok:
        kopf.warn(body, reason=after.reason, message=after.message)
    elif before is not None and not before.ok:
        kopf.info(body, reason="Reconciled", message=after.message)


@kopf.index("apps", "v1", "deployments", **indices.CHILD)
async def stream_rollouts(
    body: kopf.Body, namespace: str, labels: kopf.Labels, **_: Any
) -> dict | None:
    """(namespace, LiveStream) -> whether a gated rollout of its Deployment is under way.
    Always a value: kopf keeps an object's last entry when the function returns None."""
    return {(namespace, labels[LABEL]): in_flight(body)}


@kopf.daemon(GROUP, VERSION, PLURAL, cancellation_timeout=10.0)
async def control_loop(
    body: kopf.Body,
    memo: kopf.Memo,
    logger: kopf.Logger,
    stopped: kopf.DaemonStopped,
    stream_pods: kopf.Index,
    stream_claims: kopf.Index,
    stream_rollouts: kopf.Index,
    **_: Any,
) -> None:
    kube, settings = memo.kube, memo.settings
    key = (body["metadata"]["namespace"], body["metadata"]["name"])
    loop = Loop()
    _loops(memo)[key] = loop
    namespace, name = key
    service = names(name)["service"]
    endpoint = (
        f"ws://{service}.{namespace}.svc.{settings.cluster_domain}:{settings.pod_port}/stream"
    )
    try:
        while not stopped:
            raw = dict(body)
            generation = raw["metadata"].get("generation", 1)
            now = time.monotonic()
            if loop.outcome and loop.outcome.rollout_pending and now >= loop.schedule.next_at:
                loop.schedule.dirty = True  # a full pass: is there a rollout slot now?
            if loop.schedule.resync_only(generation, now) and await asyncio.to_thread(
                secret_unchanged, kube, raw, memo.tokens.peek(namespace, name)
            ):
                loop.schedule.done(generation, True, time.monotonic())  # nothing to do
            elif loop.schedule.due(generation, now):
                if (gate := _gate(memo)) is not None:
                    # The rollouts under way, any leader's.
                    gate.observe([k for k, marks in stream_rollouts.items() if any(marks)])
                outcome = await asyncio.to_thread(
                    reconcile, kube, settings, raw, memo.fingerprints, _gate(memo)
                )
                loop.schedule.done(
                    outcome.generation, outcome.ok, time.monotonic(), outcome.retry_after
                )
                if outcome.rollout_pending:
                    gate = _gate(memo)
                    soon = gate.retry_in(key) if gate is not None else None
                    retry = time.monotonic() + (soon or jittered(ROLLOUT_RETRY))
                    loop.schedule.next_at = min(loop.schedule.next_at, retry)
                if outcome.token is not None:
                    memo.tokens.put(namespace, name, outcome.token)
                _announce(raw, loop.outcome, outcome)
                if not outcome.ok:
                    logger.warning("reconcile: %s: %s", outcome.reason, outcome.message)
                loop.outcome = outcome
            # Everything pokes the loop: the watches when a pod or the claim moves, the pod's
            # status stream when its state does. It wakes by itself only to write counters
            # that are due (at most every 30 s) or for the schedule.
            interval = IDLE
            try:
                seen = await observe(raw, memo, loop, stream_pods, stream_claims)
                counters_left = await _write_status(raw, loop, memo, seen, endpoint, logger)
                if counters_left is not None:
                    interval = counters_left
            except Exception as exc:  # the next pass tries again
                logger.warning("status: %r", exc)
                metrics.ERRORS.labels(kind="LiveStream").inc()
                interval = settings.status_interval
            await loop.sleep(loop.schedule.wait(time.monotonic(), interval))
    finally:
        await loop.follow(None, None)
        if _loops(memo).get(key) is loop:
            del _loops(memo)[key]
        if (gate := _gate(memo)) is not None:
            _wake_all(memo, gate.forget(key))  # its rollout slot, if it had one


async def _write_status(
    raw: dict, loop: Loop, memo: kopf.Memo, seen: Observed, endpoint: str, logger: kopf.Logger
) -> float | None:
    """Write what changed. Returns the seconds until counters that changed (viewers, ...)
    but were not written are due, or None when none is waiting."""
    current = {**(raw.get("status") or {}), **loop.written}
    view = {**raw, "status": current}
    reconciled = loop.outcome.condition if loop.outcome else None
    new = livestream_status(view, reconciled, loop.schedule.applied, seen, endpoint)
    pending = loop.outcome.rollout_pending if loop.outcome else None
    rollout = Condition(
        "RolloutPending",
        bool(pending),
        "WaitingForSlot" if pending else "UpToDate",
        pending or "no new pod template is waiting",
    )
    generation = raw["metadata"].get("generation", 1)
    new["conditions"] = conditions.merge(new["conditions"], [rollout], generation)
    now = time.monotonic()
    every = min(COUNTER_INTERVAL, memo.settings.counter_interval)
    counters_due = now - loop.counters_at >= jittered(every, spread=0.1)
    patch = changes(current, new, counters_due)
    if not patch:
        if any(current.get(k) != new.get(k) for k in COUNTERS):
            return max(1.0, loop.counters_at + every - now)
        return None
    ns, name = raw["metadata"]["namespace"], raw["metadata"]["name"]
    await asyncio.to_thread(memo.kube.patch_status, PLURAL, ns, name, patch)
    metrics.STATUS_WRITES.labels(kind="LiveStream").inc()
    loop.written.update(patch)
    loop.counters_at = now
    if new["phase"] != current.get("phase"):
        # After the write: a leader that dies in between loses the Event, and its successor,
        # which reads the new phase, does not post it twice.
        ready = next((c for c in new["conditions"] if c["type"] == "Ready"), {})
        message = f"{current.get('phase') or 'None'} -> {new['phase']}: {ready.get('message', '')}"
        (kopf.warn if new["phase"] == "Failed" else kopf.info)(
            raw, reason=new["phase"], message=message
        )
        logger.info("phase %s", message)
    return None


@kopf.on.event(GROUP, VERSION, PLURAL)
async def spec_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A new generation wakes the LiveStream's loop at once."""
    key = (body["metadata"]["namespace"], body["metadata"]["name"])
    loop = _loops(memo).get(key)
    if loop is not None and body["metadata"].get("generation") != loop.schedule.attempted:
        loop.wake()


CHILD = indices.CHILD


@kopf.on.event("apps", "v1", "deployments", **CHILD)
@kopf.on.event("v1", "services", **CHILD)
@kopf.on.event("v1", "persistentvolumeclaims", **CHILD)
@kopf.on.event("networking.k8s.io", "v1", "ingresses", **CHILD)
async def child_changed(
    body: kopf.Body, type: str | None, resource: kopf.Resource, memo: kopf.Memo, **_: Any
) -> None:
    """A child was deleted or edited (by anyone): wake its LiveStream's loop to repair it."""
    meta = body["metadata"]
    key = (meta["namespace"], meta["labels"][LABEL])
    if resource.plural == "deployments" and (gate := _gate(memo)) is not None:
        _wake_all(memo, gate.finish(key, body))  # its rollout is done: the next may go
    if getattr(memo, "fingerprints", None) is None:
        memo.fingerprints = {}
    uid = meta["uid"]
    if type == "DELETED":
        memo.fingerprints.pop(uid, None)
        changed = True
    else:
        fingerprint = child_fingerprint(body)
        changed = memo.fingerprints.get(uid) != fingerprint and type is not None
        memo.fingerprints[uid] = fingerprint
    loop = _loops(memo).get(key)
    if loop is not None:
        if changed:
            loop.wake()
        elif meta.get("name") == names(key[1])["claim"]:
            loop.poke()  # the claim's phase may have moved


@kopf.index(GROUP, VERSION, PLURAL)
async def credential_refs(
    namespace: str, name: str, spec: kopf.Spec, memo: kopf.Memo, **_: Any
) -> dict | None:
    """(namespace, Secret) -> the LiveStreams whose LiveKit or object storage keys it holds."""
    refs = {}
    ref = (spec.get("source", {}).get("livekit") or {}).get("credentialsSecretRef") or {}
    if ref.get("name"):
        refs[(namespace, ref["name"])] = name
    settings = memo.get("settings") or Settings.from_env()
    if (cfg := upload.effective({"spec": dict(spec)}, settings.default_upload)) is not None:
        refs[(namespace, cfg["s3"]["credentialsSecretRef"]["name"])] = name
    return refs or None


def _referenced(namespace: str, name: str, credential_refs: kopf.Index, **_: Any) -> bool:
    return (namespace, name) in credential_refs


@kopf.on.event("v1", "secrets", when=_referenced)
async def credentials_changed(
    namespace: str, name: str, credential_refs: kopf.Index, memo: kopf.Memo, **_: Any
) -> None:
    """A LiveStream's credentials Secret was made, edited or deleted: reconcile it now (the
    pod template carries the keys' hash, so the pod restarts with the new ones). Only the
    Secrets an index entry names pass the filter; no Secret is kept in memory."""
    for livestream in credential_refs.get((namespace, name), []):
        wake(memo, namespace, livestream)


@kopf.on.event("v1", "pods", **CHILD)
async def pod_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A stream pod moved (scheduled, ready, crashed, gone): look at the status now."""
    meta = body["metadata"]
    loop = _loops(memo).get((meta["namespace"], meta["labels"][LABEL]))
    if loop is not None:
        loop.poke()


@kopf.on.delete(GROUP, VERSION, PLURAL)
async def finalize(
    body: kopf.Body, meta: kopf.Meta, memo: kopf.Memo, logger: kopf.Logger, **_: Any
) -> None:
    """Stop this stream's recordings cleanly before its pod goes away."""
    kube = memo.kube
    name, namespace = meta["name"], meta["namespace"]
    memo.tokens.forget(namespace, name)
    recordings = await asyncio.to_thread(kube.recordings_of, namespace, name)
    active = [
        r for r in recordings
        if r.get("status", {}).get("phase") not in FINAL and not r["spec"].get("stopped")
    ]  # fmt: skip
    for rec in active:
        await asyncio.to_thread(
            kube.patch_recording_spec, namespace, rec["metadata"]["name"], {"stopped": True}
        )
        kopf.info(
            dict(body), reason="StoppingRecording", message=f"stopping {rec['metadata']['name']}"
        )
    deadline = asyncio.get_running_loop().time() + 60
    while active and asyncio.get_running_loop().time() < deadline:
        recordings = await asyncio.to_thread(kube.recordings_of, namespace, name)
        active = [r for r in recordings if r.get("status", {}).get("phase") not in FINAL]
        if active:
            await asyncio.sleep(1)
    if active:
        logger.warning(
            "recordings still running after 60 s: %s", [r["metadata"]["name"] for r in active]
        )

"""LiveStream handlers: create the stream pod and its children, and mirror what the pod and
its children report into `status` (phase and conditions)."""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
from typing import Any

import kopf

from . import conditions, metrics
from .children import GROUP, VERSION, claim, control_secret, deployment, ingress, names, service
from .conditions import Condition
from .podclient import PodRejected, PodUnreachable
from .pods import client_for, current_pod, pod_ready, waiting_reason
from .settings import Settings

PLURAL = "livestreams"
INTERVAL = Settings.from_env().status_interval
FINAL = ("Completed", "Failed")  # Recording phases that are over
POD_STATES = {
    "connecting": "Connecting",
    "live": "Live",
    "offline": "Offline",
    "reconnecting": "Reconnecting",
    "stopped": "Offline",
}
# Container states that will not fix themselves without a change to the spec.
FAILED_WAITING = {
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CreateContainerConfigError",
}


def source_summary(spec: dict) -> str:
    source = spec["source"]
    if "pumpfun" in source:
        return f"pumpfun:{source['pumpfun']['mintId']}"
    return f"livekit:{source['livekit']['room']}"


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
def reconcile(
    body: kopf.Body, meta: kopf.Meta, patch: kopf.Patch, memo: kopf.Memo, **_: Any
) -> None:
    """Apply every child; level-based, so running it again at any time changes nothing."""
    kube, settings = memo.kube, memo.settings
    raw = dict(body)
    name, namespace = meta["name"], meta["namespace"]
    secret_name = names(name)["secret"]
    existing = kube.create_if_missing(control_secret(raw, secrets.token_urlsafe(32)))
    if existing is None:
        kopf.info(raw, reason="Created", message=f"control token Secret {secret_name}")
    elif meta["uid"] not in [o.uid for o in existing.metadata.owner_references or []]:
        # A LiveStream of this name was deleted moments ago and the garbage collector has not
        # yet removed its Secret: a pod started with that token would lose it. Wait it out.
        raise kopf.TemporaryError(
            f"Secret {secret_name} still belongs to a deleted LiveStream {name}", delay=2
        )
    for manifest in (claim(raw), service(raw, settings), deployment(raw, settings)):
        kube.apply(manifest)
    ing = ingress(raw, settings)
    if ing is not None:
        kube.apply(ing)
    else:
        kube.delete_ingress(namespace, names(name)["ingress"])
    metrics.RECONCILES.labels(kind="LiveStream").inc()
    n = names(name)
    viewer_ingress = body["spec"].get("viewer", {}).get("ingress")
    patch.status["serviceName"] = n["service"]
    patch.status["endpoint"] = (
        f"ws://{n['service']}.{namespace}.svc.{settings.cluster_domain}:{settings.pod_port}/stream"
    )
    patch.status["source"] = source_summary(body["spec"])
    if viewer_ingress:
        scheme = "https" if viewer_ingress.get("tlsSecretName") else "http"
        patch.status["viewerURL"] = (
            f"{scheme}://{viewer_ingress['host']}{viewer_ingress.get('path', '/')}"
        )
    if not body.get("status", {}).get("phase"):
        patch.status["phase"] = "Suspended" if body["spec"].get("suspend") else "Pending"


def _epoch_to_iso(value: float | None) -> str | None:
    if value is None:
        return None
    return dt.datetime.fromtimestamp(value, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def observe(body: dict, memo: kopf.Memo) -> dict:
    """The status a LiveStream should have now, from its children and its pod."""
    kube, settings = memo.kube, memo.settings
    meta, spec = body["metadata"], body["spec"]
    name, namespace, generation = meta["name"], meta["namespace"], meta.get("generation", 1)
    n = names(name)
    claim_phase = await asyncio.to_thread(kube.claim_phase, namespace, n["claim"])
    pods = await asyncio.to_thread(kube.stream_pods, namespace, name)
    pod = current_pod(pods)
    suspended = bool(spec.get("suspend"))

    storage = Condition(
        "StorageBound",
        claim_phase == "Bound",
        "Bound"
        if claim_phase == "Bound"
        else ("ClaimMissing" if claim_phase is None else "ClaimPending"),
        f"PersistentVolumeClaim {n['claim']} is {claim_phase or 'missing'}",
    )
    waiting = waiting_reason(pod) if pod is not None else None
    if suspended:
        pod_cond = Condition("PodReady", False, "Suspended", "spec.suspend is true: scaled to 0")
    elif pod is None:
        pod_cond = Condition("PodReady", False, "NoPod", "the stream pod has not been created yet")
    elif pod_ready(pod):
        pod_cond = Condition("PodReady", True, "Ready", f"pod {pod.metadata.name} is ready")
    elif waiting:
        pod_cond = Condition(
            "PodReady", False, waiting[0], waiting[1] or f"pod {pod.metadata.name}"
        )
    else:
        pod_cond = Condition(
            "PodReady", False, "NotReady", f"pod {pod.metadata.name} is {pod.status.phase}"
        )

    pod_status: dict | None = None
    source_cond = Condition("SourceConnected", None, "Unknown", "the stream pod is not reachable")
    if pod_cond.status:
        client = await asyncio.to_thread(client_for, kube, settings, namespace, name, pod)
        try:
            pod_status = await client.status() if client else None
        except (PodUnreachable, PodRejected) as exc:
            source_cond = Condition("SourceConnected", None, "PodUnreachable", str(exc)[:300])
    if pod_status is not None:
        live = pod_status["state"] == "live"
        source_cond = Condition(
            "SourceConnected", live, pod_status["reason"], pod_status["message"]
        )
    elif suspended:
        source_cond = Condition("SourceConnected", False, "Suspended", "the connection is dropped")

    ready_parts = [storage, pod_cond, source_cond]
    blocking = next((c for c in ready_parts if c.status is not True), None)
    ready = Condition(
        "Ready",
        blocking is None,
        "Live" if blocking is None else blocking.reason,
        "the stream is live and served"
        if blocking is None
        else f"{blocking.type}: {blocking.message}",
    )

    if suspended:
        phase = "Suspended"
    elif (waiting and waiting[0] in FAILED_WAITING) or (pod_cond.reason == "CrashLoopBackOff"):
        phase = "Failed"
    elif pod_status is None:
        phase = "Pending"
    else:
        phase = POD_STATES.get(pod_status["state"], "Pending")

    status: dict[str, Any] = {
        "observedGeneration": generation,
        "phase": phase,
        "conditions": conditions.merge(
            body.get("status", {}).get("conditions"),
            [ready, source_cond, pod_cond, storage],
            generation,
        ),
        "podName": pod.metadata.name if pod is not None else None,
        "viewers": pod_status["viewers"] if pod_status else 0,
        "activeRecordings": len(pod_status["activeRecordings"]) if pod_status else 0,
    }
    if pod_status:
        status["participant"] = pod_status.get("participant")
        video = pod_status.get("video") or {}
        status["video"] = {
            "width": video.get("width", 0),
            "height": video.get("height", 0),
            "fps": video.get("fps", 0),
        }
        status["lastFrameTime"] = _epoch_to_iso(pod_status.get("lastFrameTime"))
    return status


@kopf.timer(GROUP, VERSION, PLURAL, interval=INTERVAL, initial_delay=1.0)
async def mirror(
    body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, logger: kopf.Logger, **_: Any
) -> None:
    raw = dict(body)
    new = await observe(raw, memo)
    old_phase = raw.get("status", {}).get("phase")
    if new["phase"] != old_phase:
        ready = conditions.get(new["conditions"], "Ready") or {}
        message = f"{old_phase or 'None'} -> {new['phase']}: {ready.get('message', '')}"
        (kopf.warn if new["phase"] == "Failed" else kopf.info)(
            raw, reason=new["phase"], message=message
        )
        logger.info("phase %s", message)
    current = raw.get("status", {})
    patch.status.update({k: v for k, v in new.items() if current.get(k) != v})  # only changes


@kopf.on.delete(GROUP, VERSION, PLURAL)
async def finalize(
    body: kopf.Body, meta: kopf.Meta, memo: kopf.Memo, logger: kopf.Logger, **_: Any
) -> None:
    """Stop this stream's recordings cleanly before its pod goes away."""
    kube = memo.kube
    name, namespace = meta["name"], meta["namespace"]
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
        active = [
            r for r in recordings if r.get("status", {}).get("phase") not in ("Completed", "Failed")
        ]
        if active:
            await asyncio.sleep(1)
    if active:
        logger.warning(
            "recordings still running after 60 s: %s", [r["metadata"]["name"] for r in active]
        )

"""A LiveStream's status as a pure function of what was observed: the reconciler's outcome,
the claim's phase, the stream pod and the pod's own report. No I/O here."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from . import conditions
from .conditions import Condition
from .pods import PodView, pod_ready, waiting_reason

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
    "ErrImageNeverPull",
    "InvalidImageName",
    "CreateContainerConfigError",
}
COUNTERS = ("viewers", "video", "lastFrameTime")  # they change without a transition


@dataclass(frozen=True)
class Observed:
    claim_phase: str | None
    pod: PodView | None  # the current stream pod, if any
    pod_status: dict | None  # the pod's GET /status, if it answered
    pod_error: Condition | None = None  # why it did not answer


def source_summary(spec: dict) -> str:
    source = spec["source"]
    if "pumpfun" in source:
        return f"pumpfun:{source['pumpfun']['mintId']}"
    return f"livekit:{source['livekit']['room']}"


def _epoch_to_iso(value: float | None) -> str | None:
    if value is None:
        return None
    return dt.datetime.fromtimestamp(value, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def pod_condition(suspended: bool, pod: PodView | None) -> Condition:
    waiting = waiting_reason(pod) if pod is not None else None
    if suspended:
        return Condition("PodReady", False, "Suspended", "spec.suspend is true: scaled to 0")
    if pod is None:
        return Condition("PodReady", False, "NoPod", "the stream pod has not been created yet")
    if pod_ready(pod):
        return Condition("PodReady", True, "Ready", f"pod {pod.name} is ready")
    if waiting:
        return Condition("PodReady", False, waiting[0], waiting[1] or f"pod {pod.name}")
    if pod.unschedulable:
        return Condition("PodReady", False, "Unschedulable", pod.unschedulable)
    message = f"pod {pod.name} is {pod.phase}"
    return Condition("PodReady", False, "NotReady", message)


def livestream_status(
    body: dict,
    reconciled: Condition | None,
    applied_generation: int | None,
    seen: Observed,
    endpoint: str,
) -> dict[str, Any]:
    """The whole status a LiveStream should have now.

    `reconciled` is the last reconcile's outcome (None before the first); `applied_generation`
    the last generation whose every child was applied: the only thing that moves
    status.observedGeneration."""
    meta, spec = body["metadata"], body["spec"]
    old = body.get("status") or {}
    generation = meta.get("generation", 1)
    suspended = bool(spec.get("suspend"))
    claim_name = f"{meta['name']}-recordings"

    storage = Condition(
        "StorageBound",
        seen.claim_phase == "Bound",
        "Bound"
        if seen.claim_phase == "Bound"
        else ("ClaimMissing" if seen.claim_phase is None else "ClaimPending"),
        f"PersistentVolumeClaim {claim_name} is {seen.claim_phase or 'missing'}",
    )
    pod_cond = pod_condition(suspended, seen.pod)
    pod_status = seen.pod_status if pod_cond.status else None
    if pod_status is not None:
        source = Condition(
            "SourceConnected",
            pod_status["state"] == "live",
            pod_status["reason"],
            pod_status["message"],
        )
    elif suspended:
        source = Condition("SourceConnected", False, "Suspended", "the connection is dropped")
    elif pod_cond.status and seen.pod_error is not None:
        source = seen.pod_error
    else:
        source = Condition("SourceConnected", None, "Unknown", "the stream pod is not reachable")

    reconciled = reconciled or Condition(
        "Reconciled", None, "Pending", "the children have not been applied yet"
    )
    parts = [reconciled, storage, pod_cond, source]
    blocking = next((c for c in parts if c.status is not True), None)
    ready = Condition(
        "Ready",
        blocking is None,
        "Live" if blocking is None else blocking.reason,
        "the stream is live and served"
        if blocking is None
        else f"{blocking.type}: {blocking.message}",
    )

    waiting = waiting_reason(seen.pod) if seen.pod is not None else None
    if suspended:
        phase = "Suspended"
    elif (waiting and waiting[0] in FAILED_WAITING) or pod_cond.reason == "CrashLoopBackOff":
        phase = "Failed"
    elif pod_status is None:
        phase = "Pending"
    else:
        phase = POD_STATES.get(pod_status["state"], "Pending")

    status: dict[str, Any] = {
        "observedGeneration": applied_generation
        if applied_generation is not None
        else old.get("observedGeneration"),
        "phase": phase,
        "conditions": conditions.merge(
            old.get("conditions"), [ready, reconciled, source, pod_cond, storage], generation
        ),
        "podName": seen.pod.name if seen.pod is not None else None,
        "viewers": pod_status["viewers"] if pod_status else 0,
        "activeRecordings": len(pod_status["activeRecordings"]) if pod_status else 0,
        "serviceName": f"{meta['name']}-stream",
        "endpoint": endpoint,
        "source": source_summary(spec),
    }
    viewer_ingress = spec.get("viewer", {}).get("ingress")
    if viewer_ingress:
        scheme = "https" if viewer_ingress.get("tlsSecretName") else "http"
        path = viewer_ingress.get("path", "/").rstrip("/") + "/"  # the page finds "stream" from it
        status["viewerURL"] = f"{scheme}://{viewer_ingress['host']}{path}"
    if pod_status:
        status["participant"] = pod_status.get("participant")
        video = pod_status.get("video") or {}
        status["video"] = {
            "width": video.get("width", 0),
            "height": video.get("height", 0),
            "fps": video.get("fps", 0),
        }
        status["lastFrameTime"] = _epoch_to_iso(pod_status.get("lastFrameTime"))
        # What the publisher does not publish ("video", "audio"): [] when both are there.
        status["missing"] = list(pod_status.get("missing") or [])
    return status


def changes(old: dict, new: dict, counters_due: bool) -> dict[str, Any]:
    """The fields of `new` to write: every transition now, counters only when due."""
    diff = {k: v for k, v in new.items() if old.get(k) != v}
    transitions = {k: v for k, v in diff.items() if k not in COUNTERS}
    if transitions or counters_due:
        return diff  # a write goes out anyway: bring the counters along
    return {}

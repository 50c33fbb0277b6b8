"""Rolling a new pod template out over many LiveStreams, a few stream pods at a time.

A new operator version (a new stream-pod image, a changed manifest) changes every LiveStream's
pod template at once. Applied as is, every stream pod would restart together: every viewer
drops and every recording splits. Instead the operator counts the Deployments it is rolling
and replaces at most `max_concurrent` serving pods at a time; each keeps its slot until its new
pod is Ready. The others keep their old template meanwhile (condition RolloutPending=True).

LiveStreams with active Recordings roll last (a new pod splits each recording into a new part):
such a LiveStream takes a slot only once no LiveStream without Recordings waits for one, and
not before `SETTLE` seconds into the wave of rollouts, so that the others (a new leader starts
every LiveStream's loop at once) have asked first.

What rolls at once, without a slot: a LiveStream's own spec edit (its user asked for it), a
pod that serves nobody (suspended, not ready), a new control token or credentials (the pod
cannot work with the old ones). The Deployment carries the hash of the template the operator
last applied and the LiveStream generation it applied, to tell these apart.

Pure decisions, plus `Gate`, the operator's in-memory count of rollouts (thread-safe: the
reconciler runs in worker threads). The count starts empty on a new leader.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Collection, Mapping
from enum import Enum
from typing import Any

from .children import GROUP

TEMPLATE_HASH = f"{GROUP}/template-hash"  # on the Deployment: the template last applied
APPLIED_GENERATION = f"{GROUP}/livestream-generation"  # on the Deployment: of that apply
ROLLOUT = f"{GROUP}/rollout"  # on the Deployment: the hash a gated rollout goes to, until done
CREDENTIALS_HASH = f"{GROUP}/livekit-credentials-hash"  # pod template: new keys roll the pod
DEFAULT_MAX_CONCURRENT = 2
SETTLE = 30.0  # seconds into a wave of rollouts before a LiveStream with Recordings may go

Key = tuple[str, str]  # (namespace, LiveStream)


class Change(Enum):
    NONE = "none"  # the template is current (or the Deployment is new)
    NOW = "now"  # apply it now: nobody is served, or the LiveStream's own spec changed
    GATED = "gated"  # an operator-side change to a serving pod: wait for a slot


def template_hash(template: Mapping[str, Any]) -> str:
    """The pod template's hash, without the per-stream annotations that roll at once: the
    hashes of its control token and of its credentials (`streams.haven.dev/*-hash`)."""
    meta = dict(template.get("metadata") or {})
    annotations = {
        k: v
        for k, v in (meta.get("annotations") or {}).items()
        if not (k.startswith(f"{GROUP}/") and k.endswith("-hash"))
    }
    essence = {**template, "metadata": {**meta, "annotations": annotations}}
    text = json.dumps(essence, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _replicas(obj: Mapping[str, Any]) -> int:
    return int((obj.get("spec") or {}).get("replicas", 1))


def template_change(
    existing: Mapping[str, Any] | None, desired_hash: str, generation: int, wanted_replicas: int
) -> Change:
    if existing is None:
        return Change.NONE
    annotations = existing.get("metadata", {}).get("annotations") or {}
    if annotations.get(TEMPLATE_HASH) == desired_hash:
        return Change.NONE
    ready = int((existing.get("status") or {}).get("readyReplicas") or 0)
    if not (wanted_replicas and _replicas(existing) and ready):
        return Change.NOW  # no viewer to drop
    applied = annotations.get(APPLIED_GENERATION)
    if applied is not None and applied != str(generation):
        return Change.NOW  # the LiveStream's spec changed: its user asked for the new pod
    return Change.GATED


def admit(
    rolling: Collection[Key],
    key: Key,
    max_concurrent: int,
    recording: bool = False,
    others_waiting: bool = False,
    settled: bool = True,
) -> bool:
    """May `key` roll now? `recording`: it has active Recordings, so it goes last: only once
    no LiveStream without Recordings waits (`others_waiting`) and the wave has `settled`."""
    if key in rolling:
        return True
    if recording and (others_waiting or not settled):
        return False
    return len(rolling) < max_concurrent


def rolled(deployment: Mapping[str, Any]) -> bool:
    """The Deployment's controller has seen its latest spec and every replica is new and
    Ready (Recreate: the old pod is gone)."""
    meta, status = deployment.get("metadata") or {}, deployment.get("status") or {}
    want = _replicas(deployment)
    return (
        int(status.get("observedGeneration") or 0) >= int(meta.get("generation") or 0)
        and int(status.get("updatedReplicas") or 0) == want
        and int(status.get("readyReplicas") or 0) >= want
        and int(status.get("replicas") or 0) == want
    )


def in_flight(deployment: Mapping[str, Any]) -> bool:
    """A gated rollout of this Deployment is under way (seen by any leader, after a
    failover too: the mark is on the Deployment)."""
    annotations = deployment.get("metadata", {}).get("annotations") or {}
    mark = annotations.get(ROLLOUT)
    return bool(mark) and mark == annotations.get(TEMPLATE_HASH) and not rolled(deployment)


def max_concurrent_from_env(env: Mapping[str, str] = os.environ) -> int:
    value = env.get("HAVEN_ROLLOUT_MAX_CONCURRENT", "")
    return max(1, int(value)) if value else DEFAULT_MAX_CONCURRENT


class Gate:
    """The rollouts in flight, by LiveStream, with the template hash each is rolling to."""

    def __init__(self, max_concurrent: int = DEFAULT_MAX_CONCURRENT) -> None:
        self.max_concurrent = max_concurrent
        self._lock = threading.Lock()
        self._rolling: dict[Key, tuple[str, float]] = {}
        self._waiting: dict[Key, bool] = {}  # in the order they first asked: recording?
        self._in_flight: frozenset[Key] = frozenset()  # from the Deployments' marks
        self._wave_at: float | None = None  # when the current wave of rollouts began

    def observe(self, in_flight: Collection[Key]) -> None:
        """The rollouts the Deployment watch shows under way (any leader's)."""
        with self._lock:
            self._in_flight = frozenset(in_flight)

    def try_admit(self, key: Key, desired_hash: str, recording: bool = False) -> bool:
        """`recording`: the LiveStream has active Recordings (it goes last)."""
        now = time.monotonic()
        with self._lock:
            busy = set(self._rolling) | self._in_flight
            if not busy and not self._waiting:
                self._wave_at = now  # the first to ask since all was quiet
            wave_at = now if self._wave_at is None else self._wave_at
            others = any(not rec for k, rec in self._waiting.items() if k != key)
            settled = now - wave_at >= SETTLE
            if admit(busy, key, self.max_concurrent, recording, others, settled):
                self._rolling[key] = (desired_hash, now)
                self._waiting.pop(key, None)
                return True
            self._waiting[key] = recording
            return False

    def retry_in(self, key: Key) -> float | None:
        """Seconds until a waiting LiveStream with Recordings may ask again by itself (the
        wave settles), or None: it is woken when a slot frees."""
        with self._lock:
            if not self._waiting.get(key) or self._wave_at is None:
                return None
            left = self._wave_at + SETTLE - time.monotonic()
            return left + 1.0 if left > 0 else None

    def _next(self) -> set[Key]:
        """The longest-waiting LiveStreams, one per free slot, those without Recordings first
        (lock held): waking every waiting one would reconcile them all for each slot."""
        free = self.max_concurrent - len(set(self._rolling) | self._in_flight)
        order = sorted(self._waiting, key=lambda k: self._waiting[k])  # stable: False first
        return set(order[: max(free, 0)])

    def finish(self, key: Key, deployment: Mapping[str, Any]) -> set[Key]:
        """Free the slot once the Deployment rolled to the admitted template. Returns the
        LiveStreams waiting for a slot (to wake)."""
        annotations = deployment.get("metadata", {}).get("annotations") or {}
        current = annotations.get(TEMPLATE_HASH)
        with self._lock:
            entry = self._rolling.get(key)
            ours = entry is not None and entry[0] == current
            marked = bool(current) and annotations.get(ROLLOUT) == current
            if not (ours or marked) or not rolled(deployment):
                return set()
            if ours:
                del self._rolling[key]
            self._in_flight = self._in_flight - {key}
            # The finished one too: its next pass drops the mark.
            return self._next() | ({key} if marked else set())

    def forget(self, key: Key) -> set[Key]:
        """The LiveStream is gone: free its slot."""
        with self._lock:
            self._waiting.pop(key, None)
            if self._rolling.pop(key, None) is None:
                return set()
            return self._next()

    def rolling(self) -> list[Key]:
        with self._lock:
            return sorted(set(self._rolling) | self._in_flight)

    def describe(self) -> str:
        keys = self.rolling()
        names = ", ".join(f"{ns}/{name}" for ns, name in keys)
        return f"{len(keys)} of at most {self.max_concurrent} stream pods rolling ({names})"


def gate_deployment(
    manifest: dict[str, Any],
    existing: Mapping[str, Any] | None,
    generation: int,
    key: Key,
    gate: Gate | None,
    recording: bool = False,
) -> str | None:
    """Mark the Deployment manifest with its template's hash and the generation; if the new
    template must wait for a slot, put the running one back. Returns why it waits, or None.
    `recording`: the LiveStream has active Recordings (it rolls last)."""
    template = manifest["spec"]["template"]
    desired = template_hash(template)
    annotations = manifest["metadata"].setdefault("annotations", {})
    annotations[APPLIED_GENERATION] = str(generation)
    annotations[TEMPLATE_HASH] = desired
    change = template_change(existing, desired, generation, manifest["spec"]["replicas"])
    if change is Change.NONE:
        if existing is not None and in_flight(existing):
            annotations[ROLLOUT] = desired  # still rolling: keep the mark until it is done
        return None
    if change is Change.NOW or gate is None:
        return None
    if gate.try_admit(key, desired, recording):
        annotations[ROLLOUT] = desired
        return None
    assert existing is not None  # GATED: there is a running Deployment
    manifest["spec"]["template"] = existing["spec"]["template"]
    running = (existing["metadata"].get("annotations") or {}).get(TEMPLATE_HASH)
    if running:
        annotations[TEMPLATE_HASH] = running
    else:
        del annotations[TEMPLATE_HASH]
    last = "; it has active Recordings, so it rolls last" if recording else ""
    return f"the new pod template waits for a rollout slot: {gate.describe()}{last}"

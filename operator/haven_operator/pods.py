"""A LiveStream's stream pods, as the pod watch sees them (a kopf index, see livestream.py),
and a client for the current one."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .children import names
from .kube import Kube
from .podclient import StreamPodClient
from .settings import Settings


@dataclass(frozen=True)
class PodView:
    """What the operator needs of a stream pod, taken from a watch event."""

    name: str
    uid: str
    created: str  # RFC 3339: sorts in time order
    deleting: bool
    phase: str
    ready: bool
    waiting: tuple[str, str] | None  # why its container is not running (reason, message)
    ip: str | None
    unschedulable: str | None = None  # the scheduler's message while it has no node

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> PodView:
        meta, status = body.get("metadata", {}), body.get("status") or {}
        waiting = None
        for cs in status.get("containerStatuses") or []:
            w = (cs.get("state") or {}).get("waiting") or {}
            if w.get("reason"):
                waiting = (w["reason"], w.get("message") or "")
                break
        return cls(
            name=meta.get("name", ""),
            uid=meta.get("uid", ""),
            created=meta.get("creationTimestamp") or "",
            deleting=bool(meta.get("deletionTimestamp")),
            phase=status.get("phase") or "Pending",
            ready=any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in status.get("conditions") or []
            ),
            waiting=waiting,
            ip=status.get("podIP"),
            unschedulable=next(
                (
                    c.get("message") or "no node fits the pod"
                    for c in status.get("conditions") or []
                    if c.get("type") == "PodScheduled" and c.get("reason") == "Unschedulable"
                ),
                None,
            ),
        )


def pod_ready(pod: PodView) -> bool:
    return pod.ready


def current_pod(pods: Iterable[PodView]) -> PodView | None:
    """The newest pod that is not being deleted."""
    live = [p for p in pods if not p.deleting]
    return max(live, key=lambda p: p.created, default=None)


def waiting_reason(pod: PodView) -> tuple[str, str] | None:
    """Why the pod's container is not running (ImagePullBackOff, CrashLoopBackOff, ...)."""
    return pod.waiting


class Tokens:
    """Control tokens, kept in memory: read once per LiveStream, read again after `forget`
    (a 401 from the pod, or the reconciler saw the Secret change)."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self._tokens: dict[tuple[str, str], str] = {}

    def get(self, namespace: str, livestream: str) -> str | None:
        key = (namespace, livestream)
        if key not in self._tokens:
            token = self.kube.secret_value(namespace, names(livestream)["secret"], "token")
            if token is None:
                return None
            self._tokens[key] = token
        return self._tokens[key]

    def put(self, namespace: str, livestream: str, token: str | None) -> None:
        if token is None:
            self.forget(namespace, livestream)
        else:
            self._tokens[(namespace, livestream)] = token

    def peek(self, namespace: str, livestream: str) -> str | None:
        """The token in memory, without reading it."""
        return self._tokens.get((namespace, livestream))

    def forget(self, namespace: str, livestream: str) -> None:
        self._tokens.pop((namespace, livestream), None)


def client_for(
    kube: Kube,
    settings: Settings,
    namespace: str,
    livestream: str,
    pod: Any | None = None,
    tokens: Tokens | None = None,
) -> StreamPodClient | None:
    """A client for the LiveStream's pod, or None while it has no token or no address."""
    n = names(livestream)
    if tokens is not None:
        token = tokens.get(namespace, livestream)
    else:
        token = kube.secret_value(namespace, n["secret"], "token")
    if token is None:
        return None
    if settings.pod_address == "pod-ip":
        if pod is None or not pod.ip:
            return None
        return StreamPodClient(f"http://{pod.ip}:{settings.control_port}", token)
    host = f"{n['service']}.{namespace}.svc.{settings.cluster_domain}"
    return StreamPodClient(f"http://{host}:{settings.control_port}", token)

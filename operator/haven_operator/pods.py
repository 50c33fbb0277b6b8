"""Finding a LiveStream's stream pod and a client for it."""

from __future__ import annotations

from typing import Any

from .children import names
from .kube import Kube
from .podclient import StreamPodClient
from .settings import Settings


def pod_ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def current_pod(pods: list[Any]) -> Any | None:
    """The newest pod that is not being deleted."""
    live = [p for p in pods if p.metadata.deletion_timestamp is None]
    return max(live, key=lambda p: p.metadata.creation_timestamp, default=None)


def waiting_reason(pod: Any) -> tuple[str, str] | None:
    """Why the pod's container is not running (ImagePullBackOff, CrashLoopBackOff, ...)."""
    for cs in pod.status.container_statuses or []:
        if cs.state and cs.state.waiting and cs.state.waiting.reason:
            return cs.state.waiting.reason, cs.state.waiting.message or ""
    return None


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
        pod = pod or current_pod(kube.stream_pods(namespace, livestream))
        if pod is None or not pod.status.pod_ip:
            return None
        return StreamPodClient(f"http://{pod.status.pod_ip}:{settings.pod_port}", token)
    host = f"{n['service']}.{namespace}.svc.{settings.cluster_domain}"
    return StreamPodClient(f"http://{host}:{settings.pod_port}", token)

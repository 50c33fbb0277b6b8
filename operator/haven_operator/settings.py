"""Operator settings, from `HAVEN_*` environment variables (the Helm chart sets them)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_POD_RESOURCES = {
    "requests": {"cpu": "500m", "memory": "512Mi"},
    "limits": {"cpu": "2", "memory": "2Gi"},
}


@dataclass(frozen=True)
class Settings:
    stream_pod_image: str = "haven-recorder:dev"
    image_pull_policy: str = "IfNotPresent"
    pumpfun_api_url: str = "https://livestream-api.pump.fun"
    pumpfun_livekit_url: str = "wss://pump-prod-tg2x8veh.livekit.cloud"
    pod_resources: dict = field(default_factory=lambda: DEFAULT_POD_RESOURCES)
    # Stream-pod defaults a LiveStream's spec.pod may override (the chart's streamPod values).
    pod_node_selector: dict = field(default_factory=dict)
    pod_tolerations: list = field(default_factory=list)
    pod_priority_class: str = ""
    image_pull_secrets: list = field(default_factory=list)  # [{"name": ...}], every stream pod
    pod_port: int = 8080  # the stream pod's viewer port (page, /stream, probes)
    control_port: int = 8081  # its control API and /metrics: what the operator calls
    status_interval: float = 5.0  # seconds between looks at each pod's state
    counter_interval: float = 30.0  # counters alone (viewers, bytes) are written this seldom
    # How the operator reaches a stream pod: "service" (the Service's cluster DNS name, in
    # cluster) or "pod-ip" (the pod's IP, for an operator outside the cluster network).
    pod_address: str = "service"
    cluster_domain: str = "cluster.local"
    metrics_port: int = 9090  # 0 turns the metrics server off
    # Threads for the blocking API calls (reconciles, status writes). Each reconcile waits on
    # the API server for most of its time, so many at once, not the CPU, set the pace when
    # many LiveStreams arrive together (asyncio's default is cores + 4).
    api_workers: int = 24
    # The chart's recording.upload: object storage for LiveStreams without spec.storage.upload.
    default_upload: dict | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Settings:
        d = cls()

        def get(name: str, default: str) -> str:
            return env.get(f"HAVEN_{name}", default)

        resources = get("STREAM_POD_RESOURCES", "")

        def get_json(name: str, default: Any) -> Any:
            raw = get(name, "")
            return json.loads(raw) if raw else default

        return cls(
            stream_pod_image=get("STREAM_POD_IMAGE", d.stream_pod_image),
            image_pull_policy=get("IMAGE_PULL_POLICY", d.image_pull_policy),
            pumpfun_api_url=get("PUMPFUN_API_URL", d.pumpfun_api_url),
            pumpfun_livekit_url=get("PUMPFUN_LIVEKIT_URL", d.pumpfun_livekit_url),
            pod_resources=json.loads(resources) if resources else d.pod_resources,
            pod_node_selector=get_json("STREAM_POD_NODE_SELECTOR", d.pod_node_selector),
            pod_tolerations=get_json("STREAM_POD_TOLERATIONS", d.pod_tolerations),
            pod_priority_class=get("STREAM_POD_PRIORITY_CLASS", d.pod_priority_class),
            image_pull_secrets=get_json("IMAGE_PULL_SECRETS", d.image_pull_secrets),
            status_interval=float(get("STATUS_INTERVAL", str(d.status_interval))),
            counter_interval=float(get("COUNTER_INTERVAL", str(d.counter_interval))),
            pod_address=get("POD_ADDRESS", d.pod_address),
            cluster_domain=get("CLUSTER_DOMAIN", d.cluster_domain),
            metrics_port=int(get("METRICS_PORT", str(d.metrics_port))),
            api_workers=max(1, int(get("API_WORKERS", str(d.api_workers)))),
            default_upload=get_json("DEFAULT_UPLOAD", None) or None,
        )

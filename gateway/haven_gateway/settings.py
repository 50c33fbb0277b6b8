"""Gateway settings, from `HAVEN_*` environment variables (the Helm chart sets them)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def _own_namespace() -> str:
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
    except OSError:
        return "default"


@dataclass(frozen=True)
class Settings:
    namespace: str = field(default_factory=_own_namespace)  # where sessions' CRs live
    api_token: str | None = None  # bearer token every /api call must carry, when set
    start_timeout: float = 30.0  # how long /start waits for the stream to go Live
    stop_timeout: float = 30.0  # how long a stop waits for its recording to be Completed
    proxy_queue: int = 16  # messages buffered per WebSocket client before it drops frames
    host: str = "0.0.0.0"
    port: int = 8000

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Settings:
        d = cls()
        return cls(
            namespace=env.get("HAVEN_GATEWAY_NAMESPACE") or d.namespace,
            api_token=env.get("HAVEN_GATEWAY_TOKEN") or None,
            start_timeout=float(env.get("HAVEN_GATEWAY_START_TIMEOUT", d.start_timeout)),
            stop_timeout=float(env.get("HAVEN_GATEWAY_STOP_TIMEOUT", d.stop_timeout)),
            proxy_queue=int(env.get("HAVEN_GATEWAY_PROXY_QUEUE", d.proxy_queue)),
            host=env.get("HAVEN_GATEWAY_HOST", d.host),
            port=int(env.get("HAVEN_GATEWAY_PORT", d.port)),
        )

"""Gateway settings, from `HAVEN_*` environment variables (the Helm chart sets them)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
AUDIO_MODES = ("player", "native")


def _own_namespace() -> str:
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
    except OSError:
        return "default"


def _origins(text: str | None) -> tuple[str, ...]:
    """A JSON list (as the chart writes it) or a comma-separated list."""
    if not text:
        return ("*",)
    text = text.strip()
    items = json.loads(text) if text.startswith("[") else text.split(",")
    return tuple(str(i).strip() for i in items if str(i).strip())


@dataclass(frozen=True)
class Settings:
    namespace: str = field(default_factory=_own_namespace)  # where sessions' CRs live
    api_token: str | None = None  # bearer token every /api call must carry, when set
    start_timeout: float = 30.0  # how long /start waits for the stream to go Live
    stop_timeout: float = 120.0  # how long a stop waits for its recording to be finalized
    proxy_queue: int = 16  # messages buffered per WebSocket client before it drops frames
    cors_origins: tuple[str, ...] = ("*",)  # Access-Control-Allow-Origin; "null" for file://
    # WebSocket audio: "player" resamples to what Haven Player's guide plays (s16le mono at
    # 44100 Hz); "native" passes the stream pod's through (s16le, 48000 Hz, its channels).
    audio: str = "player"
    downloads: bool = True  # serve recording files (reads each LiveStream's control Secret)
    host: str = "0.0.0.0"
    port: int = 8000

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Settings:
        d = cls()
        audio = env.get("HAVEN_GATEWAY_AUDIO", d.audio)
        if audio not in AUDIO_MODES:
            raise ValueError(f"HAVEN_GATEWAY_AUDIO must be one of {AUDIO_MODES}, not {audio!r}")
        return cls(
            namespace=env.get("HAVEN_GATEWAY_NAMESPACE") or d.namespace,
            api_token=env.get("HAVEN_GATEWAY_TOKEN") or None,
            start_timeout=float(env.get("HAVEN_GATEWAY_START_TIMEOUT", d.start_timeout)),
            stop_timeout=float(env.get("HAVEN_GATEWAY_STOP_TIMEOUT", d.stop_timeout)),
            proxy_queue=int(env.get("HAVEN_GATEWAY_PROXY_QUEUE", d.proxy_queue)),
            cors_origins=_origins(env.get("HAVEN_GATEWAY_CORS_ORIGINS")),
            audio=audio,
            downloads=env.get("HAVEN_GATEWAY_DOWNLOADS", "true").lower() in ("1", "true", "yes"),
            host=env.get("HAVEN_GATEWAY_HOST", d.host),
            port=int(env.get("HAVEN_GATEWAY_PORT", d.port)),
        )

"""Stream pod settings, from flags or `HAVEN_*` environment variables (flags win)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .sources import PUMPFUN_API_URL, PUMPFUN_LIVEKIT_URL, LiveKitSource, PumpFunSource, Source


@dataclass(frozen=True)
class Settings:
    source: str
    mint_id: str | None
    pumpfun_api_url: str
    pumpfun_livekit_url: str
    livekit_url: str | None
    room: str | None
    api_key: str | None
    api_secret: str | None
    token: str | None
    participant_identity: str | None
    max_viewers: int
    max_fps: float
    max_width: int
    jpeg_quality: int
    audio: bool
    audio_channels: int
    recordings_dir: Path
    max_recordings: int
    control_token: str | None
    viewer_token: str | None
    host: str
    port: int
    log_level: str
    log_format: str

    def make_source(self) -> Source:
        if self.source == "pumpfun":
            if not self.mint_id:
                raise ValueError("--mint-id (HAVEN_MINT_ID) is required for a pumpfun source")
            return PumpFunSource(self.mint_id, self.pumpfun_api_url, self.pumpfun_livekit_url)
        if not (self.livekit_url and self.room):
            raise ValueError("--livekit-url and --room are required for a livekit source")
        return LiveKitSource(
            self.livekit_url, self.room, self.api_key, self.api_secret, fixed_token=self.token
        )


def _bool(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


def parse(argv: Sequence[str] | None = None, env: Mapping[str, str] = os.environ) -> Settings:
    def e(name: str, default: str | None = None) -> str | None:
        return env.get(f"HAVEN_{name}", default)

    p = argparse.ArgumentParser(
        prog="haven-recorder",
        description="The Haven stream pod: one LiveKit connection, viewers and recordings.",
    )
    p.add_argument("--source", choices=["livekit", "pumpfun"], default=e("SOURCE", "livekit"))
    p.add_argument("--mint-id", default=e("MINT_ID"))
    p.add_argument("--pumpfun-api-url", default=e("PUMPFUN_API_URL", PUMPFUN_API_URL))
    p.add_argument("--pumpfun-livekit-url", default=e("PUMPFUN_LIVEKIT_URL", PUMPFUN_LIVEKIT_URL))
    p.add_argument("--livekit-url", default=e("LIVEKIT_URL"))
    p.add_argument("--room", default=e("LIVEKIT_ROOM"))
    p.add_argument("--api-key", default=e("LIVEKIT_API_KEY"))
    p.add_argument("--api-secret", default=e("LIVEKIT_API_SECRET"))
    p.add_argument("--token", default=e("LIVEKIT_TOKEN"), help="join with this token")
    p.add_argument("--participant-identity", default=e("PARTICIPANT_IDENTITY"))
    p.add_argument("--max-viewers", type=int, default=int(e("MAX_VIEWERS", "100")))
    p.add_argument("--max-fps", type=float, default=float(e("MAX_FPS", "15")))
    p.add_argument("--max-width", type=int, default=int(e("MAX_WIDTH", "1280")))
    p.add_argument("--jpeg-quality", type=int, default=int(e("JPEG_QUALITY", "75")))
    p.add_argument("--audio", type=_bool, default=_bool(e("AUDIO", "true")))
    p.add_argument(
        "--audio-channels",
        type=int,
        choices=[1, 2],
        default=int(e("AUDIO_CHANNELS", "1")),
        help="channels viewers get; recordings keep the source's",
    )
    p.add_argument("--recordings-dir", type=Path, default=Path(e("RECORDINGS_DIR", "/recordings")))
    p.add_argument(
        "--max-recordings",
        type=int,
        default=int(e("MAX_RECORDINGS", "8")),
        help="recordings this pod runs at once; past it POST /recordings answers 429",
    )
    p.add_argument("--control-token", default=e("CONTROL_TOKEN"))
    p.add_argument("--viewer-token", default=e("VIEWER_TOKEN"))
    p.add_argument("--host", default=e("HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(e("PORT", "8080")))
    p.add_argument("--log-level", default=e("LOG_LEVEL", "info"))
    p.add_argument("--log-format", choices=["json", "text"], default=e("LOG_FORMAT", "json"))
    a = p.parse_args(argv)
    if not 1 <= a.jpeg_quality <= 100:
        p.error("--jpeg-quality must be 1..100")
    if not 0 < a.max_fps <= 60:
        p.error("--max-fps must be in (0, 60]")
    if a.max_recordings < 0:
        p.error("--max-recordings must be >= 0")
    if a.max_viewers < 0:
        p.error("--max-viewers must be >= 0")
    return Settings(**vars(a))

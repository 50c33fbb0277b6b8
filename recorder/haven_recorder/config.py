"""Stream pod settings, from flags or `HAVEN_*` environment variables (flags win)."""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .sources import PUMPFUN_API_URL, PUMPFUN_LIVEKIT_URL, LiveKitSource, PumpFunSource, Source
from .upload import StorageSettings, add_storage_arguments, storage_from_args

# Fields that hold a secret: never shown by `repr` (or anything that logs a Settings).
SECRET_FIELDS = ("api_secret", "token", "control_token", "viewer_token")
REDACTED = "<redacted>"


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, repr=False)
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
    video_track: str | None
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
    control_port: int
    log_level: str
    log_format: str
    storage: StorageSettings | None = None  # object storage (upload.py): on with --s3-bucket
    hls: bool = False  # HLS on the viewer port (hls.py)
    hls_dir: Path = Path("/tmp/haven-hls")
    viewer_path: str = "/"  # viewers are also served under this prefix (prefix.py)

    def __repr__(self) -> str:
        fields = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            shown = REDACTED if f.name in SECRET_FIELDS and value is not None else repr(value)
            fields.append(f"{f.name}={shown}")
        return f"Settings({', '.join(fields)})"

    def secrets(self) -> list[str]:
        """Every secret value this pod was given (for the log redactor)."""
        found = [v for v in (getattr(self, n) for n in SECRET_FIELDS) if v]
        return found + (self.storage.secrets() if self.storage is not None else [])

    def control_open(self) -> str | None:
        """Why the control API may not serve as configured, or None: with no control token it
        would be open to anyone who reaches its port, so that is allowed on loopback only."""
        if self.control_token is None and not is_loopback(self.host):
            return (
                f"no control token (--control-token or HAVEN_CONTROL_TOKEN) and --host "
                f"{self.host} is not a loopback address: refusing to serve the control API "
                f"(port {self.control_port}) to the network without authentication"
            )
        return None

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
    p.add_argument(
        "--video-track",
        default=e("VIDEO_TRACK"),
        help="the video track to follow when the publisher sends several: a track name or a "
        "source (camera, screen_share); default camera, then screen share, then the earliest",
    )
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
    p.add_argument(
        "--port",
        type=int,
        default=int(e("PORT", "8080")),
        help="viewer port: the page, /stream, /healthz and /readyz",
    )
    p.add_argument(
        "--control-port",
        type=int,
        default=int(e("CONTROL_PORT", "8081")),
        help="control port: /status, /formats, /recordings (control token), /metrics, "
        "/healthz and /readyz",
    )
    p.add_argument(
        "--viewer-path",
        default=e("VIEWER_PATH", "/"),
        help="also serve the viewer routes under this path prefix (an Ingress's path)",
    )
    p.add_argument(
        "--hls",
        type=_bool,
        default=_bool(e("HLS", "false")),
        help="serve HLS (fMP4, 1 s segments) at /hls/index.m3u8 on the viewer port; the shared "
        "viewer encoder then runs all the time",
    )
    p.add_argument(
        "--hls-dir",
        type=Path,
        default=Path(e("HLS_DIR", "/tmp/haven-hls")),
        help="where the HLS segments go (emptied at start; a few MB)",
    )
    p.add_argument("--log-level", default=e("LOG_LEVEL", "info"))
    p.add_argument("--log-format", choices=["json", "text"], default=e("LOG_FORMAT", "json"))
    add_storage_arguments(p, env)
    a = p.parse_args(argv)
    storage = storage_from_args(a, env, p.error)
    if not 1 <= a.jpeg_quality <= 100:
        p.error("--jpeg-quality must be 1..100")
    if not 0 < a.max_fps <= 60:
        p.error("--max-fps must be in (0, 60]")
    if a.max_recordings < 0:
        p.error("--max-recordings must be >= 0")
    if a.max_viewers < 0:
        p.error("--max-viewers must be >= 0")
    if a.port == a.control_port and a.port != 0:
        p.error("--port and --control-port must differ")
    a.video_track = a.video_track or None
    for name in SECRET_FIELDS:  # an empty secret (an empty env variable) is no secret
        if getattr(a, name) == "":
            setattr(a, name, None)
    return Settings(**vars(a), storage=storage)

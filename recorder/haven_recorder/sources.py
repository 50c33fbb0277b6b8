"""Where a stream's LiveKit URL and join token come from.

- `LiveKitSource`: any LiveKit room. The pod mints its own short-lived, subscribe-only,
  hidden token from an API key and secret, or uses a token it was given.
- `PumpFunSource`: a pump.fun livestream. pump.fun's join API hands out a viewer token for
  a mint id: `POST {api}/livestream/join` with `{"mintId": ..., "role": "viewer"}` and
  `Origin: https://pump.fun`, answering `{"token": ...}`. Tokens last about 15 minutes, so
  every (re)connect asks for a fresh one.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import socket
import uuid
from dataclasses import dataclass, field
from typing import Protocol

import httpx
from livekit import api

PUMPFUN_API_URL = "https://livestream-api.pump.fun"
PUMPFUN_LIVEKIT_URL = "wss://pump-prod-tg2x8veh.livekit.cloud"
PUMPFUN_ORIGIN = "https://pump.fun"


class SourceError(Exception):
    """A token could not be had. `reason` is a CamelCase word for status conditions."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class Source(Protocol):
    url: str

    def describe(self) -> str: ...

    async def token(self) -> str: ...


def token_expiry(token: str) -> dt.datetime | None:
    """The `exp` claim of a JWT, read without verifying it (the server verifies)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return dt.datetime.fromtimestamp(int(claims["exp"]), dt.UTC)
    except (IndexError, KeyError, ValueError):
        return None


@dataclass
class LiveKitSource:
    url: str
    room: str
    api_key: str | None = None
    api_secret: str | None = field(default=None, repr=False)  # secrets: never in a repr
    fixed_token: str | None = field(default=None, repr=False)
    identity: str = field(
        default_factory=lambda: f"haven-{socket.gethostname()}-{uuid.uuid4().hex[:6]}"
    )
    ttl: dt.timedelta = dt.timedelta(minutes=15)

    def __post_init__(self) -> None:
        if not self.fixed_token and not (self.api_key and self.api_secret):
            raise ValueError("a LiveKit source needs a token, or an API key and secret")

    def describe(self) -> str:
        return f"livekit room {self.room} at {self.url}"

    async def token(self) -> str:
        if self.fixed_token:
            return self.fixed_token
        grants = api.VideoGrants(
            room_join=True,
            room=self.room,
            can_subscribe=True,
            can_publish=False,
            can_publish_data=False,
            hidden=True,  # other participants do not see the recorder
        )
        return (
            api.AccessToken(self.api_key, self.api_secret)
            .with_identity(self.identity)
            .with_ttl(self.ttl)
            .with_grants(grants)
            .to_jwt()
        )


@dataclass
class PumpFunSource:
    mint_id: str
    api_url: str = PUMPFUN_API_URL
    url: str = PUMPFUN_LIVEKIT_URL
    timeout: float = 10.0

    def describe(self) -> str:
        return f"pump.fun mint {self.mint_id}"

    async def token(self) -> str:
        endpoint = f"{self.api_url.rstrip('/')}/livestream/join"
        headers = {"Origin": PUMPFUN_ORIGIN, "Accept": "application/json"}
        body = {"mintId": self.mint_id, "role": "viewer"}
        try:
            async with httpx.AsyncClient(timeout=self.timeout) as client:
                resp = await client.post(endpoint, json=body, headers=headers)
        except httpx.HTTPError as exc:
            raise SourceError("JoinAPIUnreachable", f"{endpoint}: {exc!r}") from exc
        detail = resp.text[:300].strip()
        if resp.status_code in (400, 404, 410) or (resp.is_success and "token" not in detail):
            raise SourceError(
                "NotLive",
                f"pump.fun says mint {self.mint_id} is not live ({resp.status_code}: {detail})",
            )
        if resp.status_code in (401, 403):
            raise SourceError(
                "JoinForbidden", f"pump.fun refused to join ({resp.status_code}: {detail})"
            )
        if not resp.is_success:
            raise SourceError("JoinFailed", f"pump.fun join failed ({resp.status_code}: {detail})")
        try:
            token = resp.json()["token"]
        except (ValueError, KeyError, TypeError) as exc:
            raise SourceError(
                "JoinFailed",
                f"pump.fun join answered without a token ({resp.status_code}: {detail})",
            ) from exc
        if not isinstance(token, str) or not token:
            raise SourceError(
                "NotLive",
                f"pump.fun gave no token for mint {self.mint_id} ({resp.status_code}: {detail})",
            )
        return token

"""The Haven Player API, as its frontend calls it, on top of LiveStream and Recording objects.

POST /api/live-sessions/start   {"mint_id"}   create or reuse the mint's LiveStream, wait
                                              for Live
POST /api/live-sessions/stop    {"mint_id"}   stop its recordings, delete the LiveStream
GET  /api/live-sessions/active
WS   /api/live-sessions/stream/{mint_id}      the stream pod's messages; "ping" -> "pong"
POST /api/recording/start   {"mint_id", "output_format", "video_quality"}
POST /api/recording/stop    {"mint_id"}
GET  /api/recording/status/{mint_id}
GET  /api/recording/active
GET  /api/recording/formats
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Path, WebSocket, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from websockets.exceptions import InvalidHandshake, InvalidURI

from . import formats
from .proxy import Relay
from .sessions import (
    FINAL,
    MINT,
    InvalidMint,
    SessionStopping,
    Store,
    check_mint,
    condition,
    recording_info,
    session_info,
)
from .settings import Settings

# Why a pump.fun source is not live, as the stream pod reports it: HTTP status and wording.
SOURCE_ERRORS = {
    "NotLive": (404, "is not live"),
    "JoinForbidden": (502, "was refused by pump.fun's join API"),
    "JoinFailed": (502, "could not be joined through pump.fun's join API"),
    "JoinAPIUnreachable": (502, "could not be joined: pump.fun's join API is unreachable"),
}
POLL = 0.5
bearer = HTTPBearer(auto_error=False)  # module level: FastAPI resolves annotations from here

EXAMPLE_MINT = "7GCihgDB8fe6KNjn2MYtkzZcRjQy3t9GHdC8uHYmW2hr"
MintId = Annotated[str, Field(pattern=MINT.pattern, examples=[EXAMPLE_MINT])]


class MintRequest(BaseModel):
    mint_id: MintId


class RecordingRequest(BaseModel):
    mint_id: MintId
    output_format: Literal["av1", "h264", "vp9"] = "av1"
    video_quality: Literal["low", "medium", "high"] = "medium"


def create_app(settings: Settings, store: Store) -> FastAPI:
    app = FastAPI(
        title="Haven Player API",
        version="0.1.0",
        description="Live sessions and recordings, served from LiveStream and Recording objects.",
    )

    def authorized(token: str | None) -> bool:
        return settings.api_token is None or (
            token is not None and secrets.compare_digest(token, settings.api_token)
        )

    async def require_token(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> None:
        if not authorized(credentials.credentials if credentials else None):
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "a valid bearer token is required",
                headers={"WWW-Authenticate": "Bearer"},
            )

    api = [Depends(require_token)]

    async def call(fn, *args) -> Any:
        return await asyncio.to_thread(fn, *args)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict:
        return {"ok": True}

    @app.post("/api/live-sessions/start", dependencies=api)
    async def start_session(body: MintRequest) -> dict:
        try:
            stream, created = await call(store.create_stream, body.mint_id)
        except SessionStopping as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, f"{exc}; try again shortly") from exc
        deadline = time.monotonic() + settings.start_timeout
        while True:
            phase = stream.get("status", {}).get("phase")
            if phase == "Live":
                return {"success": True, "session": session_info(stream)}
            source = condition(stream, "SourceConnected")
            if source.get("status") == "False" and source.get("reason") in SOURCE_ERRORS:
                code, wording = SOURCE_ERRORS[source["reason"]]
                if created:  # nothing to keep: the attempt leaves no LiveStream behind
                    await call(store.delete_stream, body.mint_id)
                raise HTTPException(code, f"mint {body.mint_id} {wording}: {source['message']}")
            if time.monotonic() > deadline:
                ready = condition(stream, "Ready").get("message", "no status yet")
                raise HTTPException(
                    status.HTTP_504_GATEWAY_TIMEOUT,
                    f"mint {body.mint_id} did not go live within {settings.start_timeout:.0f}s "
                    f"(phase {phase or 'Pending'}: {ready})",
                )
            await asyncio.sleep(POLL)
            stream = await call(store.stream, body.mint_id) or stream

    @app.post("/api/live-sessions/stop", dependencies=api)
    async def stop_session(body: MintRequest) -> dict:
        if await call(store.stream, body.mint_id) is None:
            raise HTTPException(404, f"no live session for mint {body.mint_id}")
        stopped = []
        for rec in await call(store.recordings, body.mint_id):
            if rec.get("status", {}).get("phase") not in FINAL and not rec["spec"].get("stopped"):
                await call(store.stop_recording, rec["metadata"]["name"])
                stopped.append(rec["metadata"]["name"])
        # The LiveStream's finalizer finalizes its recordings' files before it goes.
        await call(store.delete_stream, body.mint_id)
        return {"success": True, "mint_id": body.mint_id, "stopped_recordings": stopped}

    @app.get("/api/live-sessions/active", dependencies=api)
    async def active_sessions() -> dict:
        streams = await call(store.streams)
        sessions = [session_info(s) for s in streams if not s["metadata"].get("deletionTimestamp")]
        return {"sessions": sessions, "count": len(sessions)}

    @app.websocket("/api/live-sessions/stream/{mint_id}")
    async def stream_socket(websocket: WebSocket, mint_id: str) -> None:
        header = websocket.headers.get("authorization", "")
        token = header.removeprefix("Bearer ") if header else websocket.query_params.get("token")
        if not authorized(token):
            await websocket.close(code=1008, reason="a valid bearer token is required")
            return
        try:
            stream = await call(store.stream, check_mint(mint_id))
        except InvalidMint as exc:
            await websocket.close(code=1008, reason=str(exc)[:120])
            return
        endpoint = (stream or {}).get("status", {}).get("endpoint")
        if not stream or stream.get("status", {}).get("phase") != "Live" or not endpoint:
            await websocket.close(code=1011, reason=f"no live session for mint {mint_id}")
            return
        await websocket.accept()
        relay = Relay(websocket, endpoint, settings.proxy_queue)
        try:
            await relay.run()
        except (OSError, InvalidHandshake, InvalidURI) as exc:
            await websocket.close(code=1011, reason=f"stream pod unreachable: {exc}"[:120])

    @app.post("/api/recording/start", dependencies=api)
    async def start_recording(body: RecordingRequest) -> dict:
        stream = await call(store.stream, body.mint_id)
        if not stream or stream.get("status", {}).get("phase") != "Live":
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                f"no active live session for mint {body.mint_id}: start one first",
            )
        active = await call(store.active_recording, body.mint_id)
        if active is not None:
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                f"mint {body.mint_id} is already recording ({active['metadata']['name']})",
            )
        rec = await call(store.create_recording, body.mint_id, body.output_format,
                         body.video_quality)  # fmt: skip
        return {"success": True, "recording": recording_info(rec)}

    @app.post("/api/recording/stop", dependencies=api)
    async def stop_recording(body: MintRequest) -> dict:
        active = await call(store.active_recording, body.mint_id)
        if active is None:
            raise HTTPException(404, f"mint {body.mint_id} has no active recording")
        name = active["metadata"]["name"]
        rec = await call(store.stop_recording, name)
        deadline = time.monotonic() + settings.stop_timeout
        while rec.get("status", {}).get("phase") not in FINAL and time.monotonic() < deadline:
            await asyncio.sleep(POLL)
            rec = await call(store.recording, name)
        return {"success": True, "recording": recording_info(rec)}

    @app.get("/api/recording/status/{mint_id}", dependencies=api)
    async def recording_status(mint_id: Annotated[str, Path(pattern=MINT.pattern)]) -> dict:
        recs = await call(store.recordings, mint_id)
        if not recs:
            raise HTTPException(404, f"mint {mint_id} has no recording")
        return {"recording": recording_info(recs[-1])}

    @app.get("/api/recording/active", dependencies=api)
    async def active_recordings() -> dict:
        recs = [
            recording_info(r)
            for r in await call(store.recordings)
            if r.get("status", {}).get("phase") not in FINAL
        ]
        return {"recordings": recs, "count": len(recs)}

    @app.get("/api/recording/formats", dependencies=api)
    async def recording_formats() -> dict:
        return {"formats": formats.FORMATS, "qualities": list(formats.QUALITIES)}

    return app

"""The Haven Player API, as its frontend calls it, on top of LiveStream and Recording objects.

POST /api/live-sessions/start   {"mint_id"}   create or reuse the mint's LiveStream, wait
                                              for Live
POST /api/live-sessions/stop    {"mint_id"}   stop its recordings, delete the LiveStream
GET  /api/live-sessions/active                sessions keyed by mint
WS   /api/live-sessions/stream/{mint_id}      the stream pod's messages, all JSON text
POST /api/recording/start   {"mint_id", "output_format", "video_quality"}
POST /api/recording/stop    {"mint_id"}       returns once the file is finalized
GET  /api/recording/status/{mint_id}          the mint's latest recording
GET  /api/recording/active                    recordings keyed by mint
GET  /api/recording/formats
GET  /api/recording/download/{mint_id}        the latest recording's file, with HTTP Range
     ?presign=true[&expires=s]                a presigned URL of its object (object storage)

Answers have the fields Haven Player's frontend reads, named as its backend named them
(`success`, `is_recording`, `duration_seconds`, objects keyed by mint, ...); the gateway's own
fields sit beside them. Every error is `{"success": false, "error": "...", "detail": "..."}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Path, Query, Request, WebSocket, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException
from starlette.websockets import WebSocketDisconnect, WebSocketState
from websockets.exceptions import InvalidHandshake, InvalidURI

from . import formats
from .audio import PlayerAudio
from .downloads import (
    DEFAULT_PRESIGN_SECONDS,
    MAX_PRESIGN_SECONDS,
    DownloadError,
    open_part,
    pod_base_url,
    presigned,
)
from .proxy import Relay, ViewerTokenUnavailable, viewer_token
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
from .settings import AUDIO_MODES, Settings

# Why a pump.fun source is not live, as the stream pod reports it: HTTP status and wording.
SOURCE_ERRORS = {
    "NotLive": (404, "is not live"),
    "JoinForbidden": (502, "was refused by pump.fun's join API"),
    "JoinFailed": (502, "could not be joined through pump.fun's join API"),
    "JoinAPIUnreachable": (502, "could not be joined: pump.fun's join API is unreachable"),
}
POLL = 0.5
bearer = HTTPBearer(auto_error=False)  # module level: FastAPI resolves annotations from here
# WebSocket close codes (4000-4999 are the application's own)
WS_NORMAL, WS_POLICY, WS_ERROR, WS_NO_SESSION = 1000, 1008, 1011, 4404

EXAMPLE_MINT = "7GCihgDB8fe6KNjn2MYtkzZcRjQy3t9GHdC8uHYmW2hr"
MintId = Annotated[str, Field(pattern=MINT.pattern, examples=[EXAMPLE_MINT])]
OutputFormat = Literal[tuple(formats.OUTPUT_FORMATS)]  # type: ignore[valid-type]


class MintRequest(BaseModel):
    mint_id: MintId


class RecordingRequest(BaseModel):
    mint_id: MintId
    output_format: OutputFormat = Field(  # type: ignore[valid-type]
        "av1", description="a Recording format or a Haven Player alias of one (see formats.py)"
    )
    video_quality: Literal["low", "medium", "high"] = "medium"


class ApiError(HTTPException):
    """An error answer with fields beside `success`, `error` and `detail`."""

    def __init__(self, code: int, message: str, headers: dict | None = None, **extra: Any):
        super().__init__(code, message, headers)
        self.extra = extra


def error_body(message: str, **extra: Any) -> dict[str, Any]:
    return {"success": False, "error": message, "detail": message, **extra}


def close_reason(text: str) -> str:
    """A close frame's reason is at most 123 bytes of UTF-8."""
    data = text.encode()[:123]
    return data.decode(errors="ignore")


def download_path(mint: str, recording: str | None = None) -> str:
    path = f"/api/recording/download/{mint}"
    return f"{path}?recording={recording}" if recording else path


def session_view(stream: dict) -> dict[str, Any]:
    """A session as Haven Player's backend described one, and the gateway's fields."""
    info = session_info(stream)
    st = stream.get("status", {})
    return {
        "mint_id": info["mint_id"],
        "room_name": st.get("source"),
        "participant_sid": st.get("participant"),
        "session_id": info["stream"],
        "stream_data": {"source": st.get("source"), "video": st.get("video")},
        **{k: v for k, v in info.items() if k != "mint_id"},
    }


def recording_view(rec: dict) -> dict[str, Any]:
    """A recording's status as Haven Player's backend answered it (`is_recording`,
    `duration_seconds`, `output_path`, `config`, ...), with the gateway's view under
    `recording`."""
    info = recording_info(rec)
    fmt = info["format"] if info["format"] in formats.FORMATS else "av1"
    quality = info["video_quality"] if info["video_quality"] in formats.QUALITIES else "medium"
    url = download_path(info["mint_id"], info["recording"])
    return {
        "success": True,
        "mint_id": info["mint_id"],
        "recording_id": info["recording"],
        "is_recording": info["active"],
        "state": info["phase"].lower(),
        "duration_seconds": info["duration_seconds"],
        "start_time": info["started_at"] or info["created_at"],
        "end_time": info["stopped_at"],
        "output_path": url,
        "download_url": url,
        "file_size_bytes": info["bytes_written"],
        "file_size_mb": round(info["bytes_written"] / (1024 * 1024), 2),
        "output_format": info["output_format"],
        "video_quality": info["video_quality"],
        "started_at": info["started_at"],
        "file_path": url,
        "config": formats.config(fmt, quality, info["container"]),
        "recording": info,
    }


def create_app(settings: Settings, store: Store) -> FastAPI:
    app = FastAPI(
        title="Haven Player API",
        version="0.2.0",
        description="Live sessions and recordings, served from LiveStream and Recording objects.",
    )
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(settings.cors_origins),
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=["content-type", "authorization", "range"],
        expose_headers=["content-range", "accept-ranges", "content-length", "content-disposition"],
        max_age=600,
    )

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        extra = {
            k: v
            for k, v in getattr(exc, "extra", {}).items()
            if k not in ("success", "error", "detail")
        }
        return JSONResponse(
            error_body(message, **jsonable_encoder(extra)), exc.status_code, exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        parts = []
        for err in errors:
            where = ".".join(str(x) for x in err.get("loc", ()))
            parts.append(f"{where}: {err.get('msg', 'invalid')}" if where else err.get("msg", ""))
        message = "invalid request: " + "; ".join(parts)
        with contextlib.suppress(Exception):
            errors = jsonable_encoder(errors)
        if not isinstance(errors, list) or not all(isinstance(e, dict) for e in errors):
            errors = [{"msg": p} for p in parts]
        return JSONResponse(error_body(message, errors=_safe(errors)), 422)

    def authorized(token: str | None) -> bool:
        return settings.api_token is None or (
            token is not None and secrets.compare_digest(token, settings.api_token)
        )

    async def require_token(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> None:
        token = credentials.credentials if credentials else request.query_params.get("token")
        if not authorized(token):
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
            # a session stopped a moment ago is waited out as long as a start may take
            stream, created = await call(store.create_stream, body.mint_id, settings.start_timeout)
        except SessionStopping as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, f"{exc}; try again shortly") from exc
        deadline = time.monotonic() + settings.start_timeout
        while True:
            phase = stream.get("status", {}).get("phase")
            if phase == "Live":
                view = session_view(stream)
                return {
                    "success": True,
                    **{k: view[k] for k in ("mint_id", "room_name", "participant_sid")},
                    "session_id": view["session_id"],
                    "stream_info": view["stream_data"],
                    "session": session_info(stream),
                }
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
        sessions = {
            session_info(s)["mint_id"]: session_view(s)
            for s in streams
            if not s["metadata"].get("deletionTimestamp")
        }
        return {"success": True, "sessions": sessions, "count": len(sessions)}

    @app.websocket("/api/live-sessions/stream/{mint_id}")
    async def stream_socket(websocket: WebSocket, mint_id: str) -> None:
        """Accepts every connection; a refusal or an end is a JSON message
        (`{"type": "error" | "end", "reason"}`) and then a close with a code and the reason."""
        await websocket.accept()

        async def finish(kind: str, code: int, reason: str) -> None:
            if websocket.client_state != WebSocketState.CONNECTED:
                return
            with contextlib.suppress(RuntimeError, WebSocketDisconnect, OSError):
                await websocket.send_json({"type": kind, "mint_id": mint_id, "reason": reason})
                await websocket.close(code=code, reason=close_reason(reason))

        header = websocket.headers.get("authorization", "")
        token = (
            header.removeprefix("Bearer ").strip()
            if header
            else websocket.query_params.get("token")
        )
        if not authorized(token):
            await finish("error", WS_POLICY, "a valid token is required (?token=...)")
            return
        audio = websocket.query_params.get("audio", settings.audio)
        if audio not in AUDIO_MODES:
            await finish("error", WS_POLICY, f"audio must be one of {', '.join(AUDIO_MODES)}")
            return
        try:
            stream = await call(store.stream, check_mint(mint_id))
        except InvalidMint as exc:
            await finish("error", WS_POLICY, str(exc))
            return
        endpoint = (stream or {}).get("status", {}).get("endpoint")
        if not stream or stream.get("status", {}).get("phase") != "Live" or not endpoint:
            await finish(
                "error", WS_NO_SESSION, f"no live session for mint {mint_id}: start one first"
            )
            return
        convert = PlayerAudio(mint_id).convert if audio == "player" else None
        try:  # a stream with viewer auth: its pod needs the token from the LiveStream's Secret
            token = await call(viewer_token, store.core, store.namespace, stream)
        except ViewerTokenUnavailable as exc:
            await finish("error", WS_ERROR, str(exc))
            return
        relay = Relay(websocket, endpoint, settings.proxy_queue, convert, token)
        try:
            ended = await relay.run()
        except (OSError, InvalidHandshake, InvalidURI) as exc:
            await finish("error", WS_ERROR, f"the stream pod is unreachable: {exc}")
            return
        if ended.by_client:
            return
        now = await call(store.stream, mint_id)
        if now is None or now["metadata"].get("deletionTimestamp"):
            await finish("end", WS_NORMAL, f"the live session for mint {mint_id} ended")
        elif ended.code in (1008, 1013):  # the pod refused: too many viewers, viewing off
            await finish("error", ended.code, ended.reason or "the stream pod refused")
        else:
            why = f" ({ended.code}: {ended.reason})" if ended.code else ""
            await finish("end", WS_NORMAL, f"the stream pod closed the stream{why}")

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
        spec = formats.recording_spec(body.output_format)
        rec = await call(
            store.create_recording,
            body.mint_id,
            spec["format"],
            body.video_quality,
            body.output_format,
            spec.get("container"),
        )
        return recording_view(rec)

    @app.post("/api/recording/stop", dependencies=api)
    async def stop_recording(body: MintRequest) -> JSONResponse:
        rec = await call(store.active_recording, body.mint_id)
        if rec is not None:
            rec = await call(store.stop_recording, rec["metadata"]["name"])
        else:  # stopped already (another call, another replica): wait for the same end
            unfinished = await call(store.unfinished_recordings, body.mint_id)
            if not unfinished:
                raise HTTPException(404, f"mint {body.mint_id} has no active recording")
            rec = unfinished[-1]
        name = rec["metadata"]["name"]
        deadline = time.monotonic() + settings.stop_timeout
        while rec.get("status", {}).get("phase") not in FINAL:
            if time.monotonic() > deadline:
                raise ApiError(
                    status.HTTP_504_GATEWAY_TIMEOUT,
                    f"recording {name} was stopped but is not finalized after "
                    f"{settings.stop_timeout:.0f}s (phase {rec.get('status', {}).get('phase')})",
                    **recording_view(rec),
                )
            await asyncio.sleep(POLL)
            rec = await call(store.recording, name)
        view = recording_view(rec)
        info = view["recording"]
        if info["phase"] == "Failed":
            raise ApiError(
                status.HTTP_502_BAD_GATEWAY,
                f"recording {name} failed: {info['message'] or 'no reason given'}",
                **{k: v for k, v in view.items() if k != "success"},
            )
        view["empty"] = not info["files"] or info["bytes_written"] == 0
        if view["empty"]:
            view["message"] = (
                f"recording {name} was stopped before it recorded a frame: there is no file "
                f"({info['message'] or 'nothing written'})"
            )
        else:
            view["message"] = (
                f"recording {name} is finalized: {info['duration_seconds']:.1f}s, "
                f"{info['bytes_written']} bytes in {len(info['files'])} file(s)"
            )
        return JSONResponse(view)

    @app.get("/api/recording/status/{mint_id}", dependencies=api)
    async def recording_status(mint_id: Annotated[str, Path(pattern=MINT.pattern)]) -> dict:
        recs = await call(store.recordings, mint_id)
        if not recs:
            # As Haven Player's backend answered a mint it was not recording: 200, not found.
            message = f"mint {mint_id} has no recording"
            return {
                **error_body(message),
                "mint_id": mint_id,
                "is_recording": False,
                "duration_seconds": 0,
            }
        return recording_view(recs[-1])

    @app.get("/api/recording/active", dependencies=api)
    async def active_recordings() -> dict:
        recordings = {}
        for rec in await call(store.recordings):
            view = recording_view(rec)
            if view["is_recording"]:
                recordings[view["mint_id"]] = view  # the newest wins (the list is in order)
        return {"success": True, "recordings": recordings, "count": len(recordings)}

    @app.get("/api/recording/formats", dependencies=api)
    async def recording_formats() -> dict:
        return formats.listing()

    @app.get(
        "/api/recording/download/{mint_id}",
        dependencies=api,
        response_class=StreamingResponse,
        responses={
            200: {"content": {"video/webm": {}, "video/mp4": {}, "video/mp2t": {}}},
            206: {},
        },
    )
    async def download(
        request: Request,
        mint_id: Annotated[str, Path(pattern=MINT.pattern)],
        recording: Annotated[str | None, Query(max_length=253)] = None,
        part: Annotated[int, Query(ge=1, le=10000)] = 1,
        presign: bool = False,
        expires: Annotated[int, Query(ge=1, le=MAX_PRESIGN_SECONDS)] = DEFAULT_PRESIGN_SECONDS,
    ) -> Response:
        """The mint's latest recording (or `recording`), its `part` (a pod restart starts a
        new part), streamed from the stream pod with HTTP Range. `?token=` works too. With
        `?presign=true` (object storage only): JSON with a presigned URL of the part's object,
        valid `expires` seconds (default 3600, at most 7 days)."""
        if not settings.downloads:
            raise HTTPException(404, "downloads are turned off (gateway.downloads.enabled)")
        recs = await call(store.recordings, mint_id)
        if recording is not None:
            recs = [r for r in recs if r["metadata"]["name"] == recording]
        if not recs:
            raise HTTPException(404, f"mint {mint_id} has no recording {recording or ''}".strip())
        if presign:
            try:
                answer = await call(presigned, store.core, recs[-1], part, expires)
            except DownloadError as exc:
                raise HTTPException(exc.status, exc.message) from exc
            return JSONResponse({"success": True, "mint_id": mint_id, **answer})
        info = recording_info(recs[-1])
        if not info["files"]:
            raise HTTPException(
                404, f"recording {info['recording']} has no file (nothing was recorded yet)"
            )
        if part > len(info["files"]):
            raise HTTPException(
                404, f"recording {info['recording']} has {len(info['files'])} part(s)"
            )
        path = info["files"][part - 1]["path"]
        stream = await call(store.stream, mint_id)
        endpoint = (stream or {}).get("status", {}).get("endpoint")
        if not stream or stream["metadata"].get("deletionTimestamp") or not endpoint:
            raise HTTPException(
                status.HTTP_410_GONE,
                f"the session's stream pod is gone, so the gateway cannot serve {path}: it stays "
                f"on PersistentVolumeClaim {info['claim']} (start the session again to download)",
            )
        token = await call(store.control_token, stream)
        if token is None:
            name = stream["metadata"]["name"]
            raise HTTPException(502, f"cannot read the control token of LiveStream {name}")
        try:
            pod_file = await open_part(
                pod_base_url(endpoint), token, info["recording"], path, request.headers.get("range")
            )
        except DownloadError as exc:
            raise HTTPException(exc.status, exc.message) from exc
        return StreamingResponse(
            pod_file.body(), status_code=pod_file.status, headers=pod_file.headers()
        )

    return app


def _safe(value: Any) -> Any:
    """JSON-safe copy of a validation error list (inputs may be anything)."""
    if isinstance(value, dict):
        return {str(k): _safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_safe(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)

"""The stream pod's HTTP server: the control API the operator calls, health and metrics, the
viewer WebSocket and the viewer page.

Control endpoints need `Authorization: Bearer <control token>` when one is configured. The
viewer WebSocket and page take an optional viewer token (`?token=`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import math
from contextlib import asynccontextmanager
from importlib import resources
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, Header, HTTPException, Query, WebSocket, WebSocketDisconnect
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, model_validator

from . import wsprotocol
from .config import Settings
from .fanout import FanOut
from .manager import StreamManager
from .recording import (
    MAX_DURATION,
    MAX_GAP,
    NAME_MAX,
    Recordings,
    RecordingSpec,
    SpecConflict,
    SpecError,
    TooManyRecordings,
)
from .viewer import ViewerHub
from .writer import FORMATS, MAX_GAP_SECONDS, quality_table

log = logging.getLogger("haven.api")


def _finite_or_text(value: object) -> object:
    """`value` with every non-finite number (JSON's 1e400, Infinity, NaN) turned into text: the
    fields refuse it all the same, and the 422 that echoes it stays valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite_or_text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_text(v) for v in value]
    return value


class RecordingRequest(BaseModel):
    # Numbers must be finite (no Infinity/NaN) and in range, or the answer is 422.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    _finite = model_validator(mode="before")(staticmethod(_finite_or_text))

    name: str = Field(  # checked by RecordingSpec.validate, whose 422 says what a name is
        description=f"Unique per pod; the files are named after it: a lowercase DNS name "
        f"(a-z, 0-9, '-', '.') of at most {NAME_MAX} characters",
    )
    format: Literal["av1", "h264", "vp9"] = "av1"
    quality: Literal["low", "medium", "high"] = "medium"
    audio: bool = True
    maxWidth: int | None = Field(None, ge=16, le=7680)
    maxFps: int | None = Field(None, ge=1, le=60)
    maxDurationSeconds: float | None = Field(None, gt=0, le=MAX_DURATION)
    maxGapSeconds: float = Field(
        MAX_GAP_SECONDS,
        gt=0,
        le=MAX_GAP,
        description="a stream away longer than this starts a new part",
    )

    def spec(self) -> RecordingSpec:
        return RecordingSpec(
            name=self.name,
            format=self.format,
            quality=self.quality,
            audio=self.audio,
            max_width=self.maxWidth,
            max_fps=self.maxFps,
            max_duration=self.maxDurationSeconds,
            max_gap=self.maxGapSeconds,
        )


class Pod:
    """Everything one stream pod runs, wired together."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.fanout = FanOut()
        self.manager = StreamManager(
            settings.make_source(),
            self.fanout,
            participant_identity=settings.participant_identity,
            audio=settings.audio,
        )
        self.hub = ViewerHub(
            self.fanout,
            max_viewers=settings.max_viewers,
            max_fps=settings.max_fps,
            max_width=settings.max_width,
            jpeg_quality=settings.jpeg_quality,
            audio=settings.audio,
            audio_channels=settings.audio_channels,
            status=self.status_message,
        )
        self.recordings = Recordings(
            settings.recordings_dir,
            self.fanout,
            max_recordings=settings.max_recordings,
            channels=lambda: self.manager.info.channels or 1,
        )
        self._tasks: list[asyncio.Task] = []

    def status(self) -> dict:
        return {
            **self.manager.info.as_dict(),
            "source": self.manager.source.describe(),
            "viewers": len(self.hub.viewers),
            "maxViewers": self.hub.max_viewers,
            "activeRecordings": sorted(n for n, r in self.recordings.items.items() if r.active),
            "handlers": {
                s.name: {"delivered": s.delivered, "dropped": s.dropped, "queued": len(s.queue)}
                for s in self.fanout.subscriptions
            },
        }

    def status_message(self) -> str:
        return json.dumps({"type": "status", **self.status()})

    async def start(self) -> None:
        self.settings.recordings_dir.mkdir(parents=True, exist_ok=True)
        resumed = await self.recordings.resume()
        if resumed:
            log.info("resuming recordings %s", resumed)
        self.hub.start()
        self._tasks.append(asyncio.create_task(self.manager.run(), name="stream-manager"))
        self._tasks.append(asyncio.create_task(self._forward_status(), name="status"))

    async def _forward_status(self) -> None:
        queue = self.manager.listen()
        try:
            while True:
                await queue.get()
                self.hub.broadcast(self.status_message())
        finally:
            self.manager.unlisten(queue)

    async def stop(self) -> None:
        await self.recordings.suspend_all()  # finalize open parts; they resume in the next pod
        await self.manager.stop()
        await self.hub.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def ready(self) -> bool:
        return bool(self._tasks) and not any(t.done() for t in self._tasks)


def _token_matches(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def create_app(settings: Settings) -> FastAPI:
    pod = Pod(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await pod.start()
        yield
        await pod.stop()

    app = FastAPI(title="Haven stream pod", version="v1alpha1", lifespan=lifespan)
    app.state.pod = pod

    def control(authorization: Annotated[str | None, Header()] = None) -> None:
        if settings.control_token is None:
            return
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not _token_matches(token, settings.control_token):
            raise HTTPException(
                401, "a valid control token is required (Authorization: Bearer ...)"
            )

    Control = Depends(control)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> JSONResponse:
        # Liveness: a stream pod whose connection loop or viewer tasks died is restarted.
        ok = pod.ready()
        return JSONResponse({"ok": ok}, 200 if ok else 503)

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        ok = pod.ready()
        return JSONResponse({"ready": ok, "state": pod.manager.info.state}, 200 if ok else 503)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/status", dependencies=[Control])
    async def status() -> dict:
        return pod.status()

    @app.get("/formats", dependencies=[Control])
    async def formats() -> dict:
        return {"formats": sorted(FORMATS), "qualities": quality_table()}

    @app.get("/recordings", dependencies=[Control])
    async def list_recordings() -> dict:
        return {"recordings": [r.to_json() for r in pod.recordings.items.values()]}

    @app.post("/recordings", dependencies=[Control], status_code=201)
    async def start_recording(body: RecordingRequest) -> JSONResponse:
        try:
            rec, created = pod.recordings.start(body.spec())
        except SpecConflict as exc:
            raise HTTPException(409, str(exc)) from exc
        except TooManyRecordings as exc:
            raise HTTPException(429, str(exc)) from exc
        except SpecError as exc:
            raise HTTPException(422, str(exc)) from exc
        return JSONResponse(rec.to_json(), status_code=201 if created else 200)

    @app.get("/recordings/{name}", dependencies=[Control])
    async def get_recording(name: str) -> dict:
        rec = pod.recordings.items.get(name)
        if rec is None:
            raise HTTPException(404, f"no recording named {name!r}")
        return rec.to_json()

    @app.post("/recordings/{name}/stop", dependencies=[Control])
    async def stop_recording(name: str) -> dict:
        rec = pod.recordings.items.get(name)
        if rec is None:
            raise HTTPException(404, f"no recording named {name!r}")
        return await rec.stop()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page(token: str | None = None) -> HTMLResponse:
        if settings.viewer_token and not _token_matches(token, settings.viewer_token):
            raise HTTPException(401, "a valid viewer token is required (?token=...)")
        return HTMLResponse(resources.files(__package__).joinpath("static/viewer.html").read_text())

    @app.websocket("/stream")
    async def stream(
        ws: WebSocket,
        mode: Literal["json", "binary"] = Query("json"),
        token: str | None = None,
    ) -> None:
        if settings.viewer_token and not _token_matches(token, settings.viewer_token):
            await ws.close(code=1008, reason="a valid viewer token is required")
            return
        await ws.accept()
        hub = pod.hub
        if hub.max_viewers == 0:
            await ws.close(code=1013, reason="viewing is turned off for this stream (maxViewers 0)")
            return
        if len(hub.viewers) >= hub.max_viewers:
            await ws.close(
                code=1013,
                reason=f"too many viewers (maxViewers {hub.max_viewers}); try again later",
            )
            return
        viewer = hub.add(mode == "binary", ws.scope.get("extensions", {}).get(wsprotocol.EXTENSION))

        async def send() -> None:
            while True:
                item = await viewer.queue.get()
                if isinstance(item, bytes):
                    await ws.send_bytes(item)
                else:
                    await ws.send_text(item)

        async def receive() -> None:
            while True:
                message = await ws.receive_text()
                if message == "ping":
                    viewer.queue.put("pong")

        tasks = [asyncio.create_task(send()), asyncio.create_task(receive())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            with contextlib.suppress(
                WebSocketDisconnect, EOFError, RuntimeError, asyncio.CancelledError
            ):
                await asyncio.gather(*tasks, return_exceptions=True)
            hub.remove(viewer)

    return app

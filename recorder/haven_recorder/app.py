"""The stream pod's HTTP server, on two ports of one uvicorn server (one process, one event
loop, one lifespan):

- the viewer port (`--port`, 8080): the viewer page, the `/stream` WebSocket, `/healthz` and
  `/readyz`. Nothing else: this is the port a Service or Ingress exposes to viewers.
- the control port (`--control-port`, 8081): the control API the operator and the gateway call
  (`Authorization: Bearer <control token>`), `/metrics`, `/healthz`, `/readyz`, the OpenAPI
  schema, and `POST /debug/tasks/{task}/cancel`.

`PodServer` routes each connection by the local port it arrived on. The viewer WebSocket and
page take an optional viewer token (`?token=`). With no control token the control API serves
only on a loopback bind (see Settings.control_open; `__main__` refuses to start otherwise).
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
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, model_validator

from . import deletion, files, hls, wsprotocol
from .config import Settings
from .fanout import FanOut
from .health import Health, contained
from .manager import StreamManager
from .prefix import ASGIApp, ViewerPrefix
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
from .statuswait import StatusWaiter
from .upload import Uploads
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


MAX_RESUME_UPLOADS = 100
MAX_UPLOADED_FILES = 1000  # the newest, if a recording has more (its parts number after them)


class OpenUpload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(min_length=1, max_length=300)
    key: str = Field(min_length=1, max_length=1024)
    uploadId: str = Field(min_length=1, max_length=1024)


class UploadedFile(BaseModel):
    """A file of the recording already complete in object storage (status.files[], uploaded)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    path: str = Field(min_length=1, max_length=300)
    url: str = Field(pattern=r"^s3://[^/]+/.+", max_length=1100)
    sizeBytes: int = Field(0, ge=0)
    durationSeconds: float = Field(0.0, ge=0)
    startedAt: str | None = Field(None, max_length=64)
    endedAt: str | None = Field(None, max_length=64)


class RecordingRequest(BaseModel):
    # Numbers must be finite (no Infinity/NaN) and in range, or the answer is 422.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    _finite = model_validator(mode="before")(staticmethod(_finite_or_text))

    name: str = Field(  # checked by RecordingSpec.validate, whose 422 says what a name is
        description=f"Unique per pod; the files are named after it: a lowercase DNS name "
        f"(a-z, 0-9, '-', '.') of at most {NAME_MAX} characters",
    )
    format: Literal["av1", "h264", "vp9"] = "av1"
    container: Literal["webm", "mp4", "mpegts"] | None = Field(
        None, description="the file's container: the format's own if unset; h264 takes mpegts"
    )
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
    keepParts: bool = Field(False, description="keep the parts once they are joined into one file")
    resumeUploads: list[OpenUpload] = Field(
        [],
        max_length=MAX_RESUME_UPLOADS,
        description="uploads a lost pod left open (status.objectStorage.openUploads): a new "
        "recording completes them from what the server holds; ignored if it exists",
    )
    uploadedFiles: list[UploadedFile] = Field(
        [],
        max_length=MAX_UPLOADED_FILES,
        description="files a lost pod had already uploaded (status.files, uploaded): a new "
        "recording lists them as they are, and numbers its own parts after them; ignored if "
        "it exists",
    )
    stopped: bool = Field(
        False,
        description="the recording is over: a new one records nothing, it only completes "
        "resumeUploads (which it then needs) and lists uploadedFiles",
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
            keep_parts=self.keepParts,
            # the format's own container is the default: asking for it is the same recording
            container=None if self.container == FORMATS[self.format].container else self.container,
        )


# What viewers read in a status message, per reason: fixed text, never a raw error string
# (those can hold the LiveKit URL, the room, or what an upstream API answered).
VIEWER_MESSAGES = {
    "Starting": "starting",
    "Connecting": "connecting to the stream",
    "Reconnecting": "reconnecting to the stream",
    "SignalReconnecting": "reconnecting to the stream",
    "Disconnected": "the connection dropped; reconnecting",
    "Live": "live",
    "NoPublisher": "waiting for the stream to start",
    "PublisherLeft": "the streamer left; waiting for them to return",
    "VideoUnpublished": "the streamer stopped their video",
    "AudioOnly": "live: sound only, the streamer sends no video",
    "VideoOnly": "live: picture only, the streamer sends no sound",
    "NothingPublished": "the streamer sends neither video nor sound",
    "NotLive": "the stream is not live",
    "ConnectFailed": "cannot reach the stream; retrying",
    "JoinAPIUnreachable": "cannot reach the stream; retrying",
    "JoinForbidden": "the stream refused the connection; retrying",
    "JoinFailed": "cannot join the stream; retrying",
    "TokenFailed": "cannot join the stream; retrying",
    "Error": "the stream hit an error; retrying",
    "Stopped": "stopped",
}


class Pod:
    """Everything one stream pod runs, wired together."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.fanout = FanOut()
        self.manager = StreamManager(
            settings.make_source(),
            self.fanout,
            participant_identity=settings.participant_identity,
            video_track=settings.video_track,
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
            hls_dir=settings.hls_dir if settings.hls else None,
        )
        self.recordings = Recordings(
            settings.recordings_dir,
            self.fanout,
            max_recordings=settings.max_recordings,
            channels=lambda: self.manager.info.channels or 1,
            uploads=Uploads.create(settings.storage),
            size=self.manager.published_size,
        )
        self.health = Health()
        self.manager.health = self.health  # it watches its track readers
        self._tasks: list[asyncio.Task] = []

    def status(self) -> dict:
        """The full status, for the control API."""
        return {
            **self.manager.info.as_dict(),
            "source": self.manager.source.describe(),
            "viewers": len(self.hub.viewers),
            "maxViewers": self.hub.max_viewers,
            "videoMode": self.hub.video.status(),
            "activeRecordings": sorted(n for n, r in self.recordings.items.items() if r.active),
            "handlers": {
                s.name: {"delivered": s.delivered, "dropped": s.dropped, "queued": len(s.queue)}
                for s in self.fanout.subscriptions
            },
            "healthy": self.health.ok,
            "taskFailures": [f.as_dict() for f in self.health.failures],
        }

    def viewer_status(self) -> dict:
        """The reduced status viewers get: state, a reason word and fixed text, the picture and
        sound, the viewer count. No LiveKit URL or room, no source, no raw error strings."""
        info = self.manager.info
        return {
            "state": info.state.value,
            "participant": info.participant,
            "video": {"width": info.width, "height": info.height, "fps": round(info.fps, 2)},
            "audio": {"sampleRate": info.sample_rate, "channels": info.channels},
            "reason": info.reason,
            "message": VIEWER_MESSAGES.get(info.reason, ""),
            "viewers": len(self.hub.viewers),
            "maxViewers": self.hub.max_viewers,
        }

    def status_message(self) -> str:
        return json.dumps({"type": "status", **self.viewer_status()})

    def watch_recordings(self) -> None:
        """Watch every running recording's task (a recording may end by finishing)."""
        for rec in self.recordings.items.values():
            task = rec._task  # set by Recording.start
            if task is not None and not task.done() and task.get_name() not in self.health.tasks:
                self.health.watch(task, "recording", may_return=True)

    async def start(self) -> None:
        self.settings.recordings_dir.mkdir(parents=True, exist_ok=True)
        resumed = await self.recordings.resume()
        if resumed:
            log.info("resuming recordings %s", resumed)
        self.watch_recordings()
        for task in self.hub.start():
            self.health.watch(task, task.get_name())
        self._tasks.append(asyncio.create_task(self.manager.run(), name="stream-manager"))
        self._tasks.append(asyncio.create_task(self._forward_status(), name="status"))
        for task in self._tasks:
            self.health.watch(task, task.get_name())

    async def _forward_status(self) -> None:
        queue = self.manager.listen()
        try:
            while True:
                await queue.get()
                try:
                    self.hub.broadcast(self.status_message())
                except Exception as exc:
                    contained("status", exc, "sending a status message to viewers failed")
        finally:
            self.manager.unlisten(queue)

    async def stop(self) -> None:
        self.health.stopping = True  # tasks end from here on, as they should
        try:
            await self.recordings.suspend_all()  # finalize open parts; the next pod resumes them
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # this stop is cancelled, not a recording's dead task
            log.error("a recording's task had died before the pod stopped; stopping the rest")
        await self.manager.stop()
        await self.hub.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def ready(self) -> bool:
        """Started, and no core task has died (see health.py)."""
        return bool(self._tasks) and self.health.ok


def _token_matches(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


class PodServer:
    """The ASGI app of both ports: a connection is served by the control app when it arrived on
    a control port (its local port, `scope["server"]`), by the viewer app otherwise, so a
    connection whose port is unknown never reaches the control API. The lifespan (the Pod's
    start and stop) is the control app's."""

    def __init__(self, pod: Pod, viewer: ASGIApp, control: FastAPI, control_port: int) -> None:
        self.pod, self.viewer, self.control = pod, viewer, control
        self.control_ports = {control_port}

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await self.control(scope, receive, send)
            return
        server = scope.get("server") or (None, None)
        app = self.control if server[1] in self.control_ports else self.viewer
        await app(scope, receive, send)


def create_app(settings: Settings, control_port: int | None = None) -> PodServer:
    """Both apps over one Pod. `control_port`: the port the control socket is bound to (when
    --control-port 0 asked for any free one), else `settings.control_port`."""
    pod = Pod(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await pod.start()
        yield
        await pod.stop()

    control = FastAPI(title="Haven stream pod: control API", version="v1alpha1", lifespan=lifespan)
    viewer = FastAPI(
        title="Haven stream pod: viewers", docs_url=None, redoc_url=None, openapi_url=None
    )
    for app in (control, viewer):
        app.state.pod = pod
    _health_routes(control, pod)
    _health_routes(viewer, pod)
    _control_routes(control, pod, settings)
    _viewer_routes(viewer, pod, settings)
    viewers = ViewerPrefix(viewer, settings.viewer_path)  # also under an Ingress's path
    return PodServer(pod, viewers, control, control_port or settings.control_port)


def _health_routes(app: FastAPI, pod: Pod) -> None:
    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> JSONResponse:
        # Liveness: a stream pod one of whose core tasks died is restarted (see health.py).
        ok = pod.ready()
        return JSONResponse({"ok": ok}, 200 if ok else 503)

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        ok = pod.ready()
        return JSONResponse({"ready": ok, "state": pod.manager.info.state}, 200 if ok else 503)


def _control_routes(app: FastAPI, pod: Pod, settings: Settings) -> None:
    def control(authorization: Annotated[str | None, Header()] = None) -> None:
        if settings.control_token is None:  # only ever on a loopback bind (control_open)
            return
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not _token_matches(token, settings.control_token):
            raise HTTPException(
                401, "a valid control token is required (Authorization: Bearer ...)"
            )

    Control = Depends(control)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    waiter = StatusWaiter(pod.status, pod.manager)

    @app.get("/status", dependencies=[Control])
    async def status(
        since: Annotated[str | None, Query(max_length=64)] = None,
        wait: Annotated[float, Query(ge=0, le=3600, allow_inf_nan=False)] = 0.0,
    ) -> dict:
        # A long poll (statuswait.py): with the last `version` seen, answers on a change or
        # after `wait` seconds (at most 60).
        return await waiter.answer(since, wait)

    @app.get("/formats", dependencies=[Control])
    async def formats() -> dict:
        return {"formats": sorted(FORMATS), "qualities": quality_table()}

    @app.get("/recordings", dependencies=[Control])
    async def list_recordings() -> dict:
        return {"recordings": [r.to_json() for r in pod.recordings.items.values()]}

    @app.post("/recordings", dependencies=[Control], status_code=201)
    async def start_recording(body: RecordingRequest) -> JSONResponse:
        try:
            resume = [u.model_dump() for u in body.resumeUploads]
            resume += [{**f.model_dump(), "uploaded": True} for f in body.uploadedFiles]
            rec, created = pod.recordings.start(body.spec(), resume, stopped=body.stopped)
        except SpecConflict as exc:
            raise HTTPException(409, str(exc)) from exc
        except TooManyRecordings as exc:
            raise HTTPException(429, str(exc)) from exc
        except SpecError as exc:
            raise HTTPException(422, str(exc)) from exc
        pod.watch_recordings()
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

    # Left out of the schema (so a fuzzer never calls it): ends one of the pod's core tasks
    # as a crash would, so the liveness path (the failure counted, /healthz 503, the kubelet
    # restarting the pod) can be exercised on a real pod; see docs/stream-pod.md.
    @app.get("/debug/tasks", dependencies=[Control], include_in_schema=False)
    async def list_tasks() -> dict:
        return {"tasks": sorted(pod.health.tasks), "failures": pod.status()["taskFailures"]}

    @app.post("/debug/tasks/{task}/cancel", dependencies=[Control], include_in_schema=False)
    async def cancel_task(task: str) -> JSONResponse:
        running = pod.health.tasks.get(task)
        if running is None:
            raise HTTPException(404, f"no running core task {task!r}; GET /debug/tasks lists them")
        log.warning("cancelling core task %s on request (POST /debug/tasks/.../cancel)", task)
        running.cancel()
        return JSONResponse({"cancelled": task}, status_code=202)

    app.include_router(files.router, dependencies=[Control])  # GET /recordings/{name}/files...
    app.include_router(deletion.router, dependencies=[Control])  # DELETE /recordings/{name}


def _viewer_routes(app: FastAPI, pod: Pod, settings: Settings) -> None:
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page(token: str | None = None) -> HTMLResponse:
        if settings.viewer_token and not _token_matches(token, settings.viewer_token):
            raise HTTPException(401, "a valid viewer token is required (?token=...)")
        return HTMLResponse(resources.files(__package__).joinpath("static/viewer.html").read_text())

    @app.get("/hls.min.js", include_in_schema=False)
    async def hls_js() -> Response:
        script = resources.files(__package__).joinpath("static/hls.min.js")
        if not script.is_file():
            raise HTTPException(404, "hls.js is not vendored in this build (make vendor)")
        data = await asyncio.to_thread(script.read_bytes)
        return Response(data, media_type="text/javascript")

    @app.get("/hls/{name}", include_in_schema=False)
    async def hls_file(name: str, token: str | None = None) -> Response:
        if settings.viewer_token and not _token_matches(token, settings.viewer_token):
            raise HTTPException(401, "a valid viewer token is required (?token=...)")
        found = await asyncio.to_thread(hls.read, pod.hub.hls, name)
        if found is None:
            raise HTTPException(404, "no such HLS file (is HLS on? --hls, spec.viewer.hls)")
        data, media_type = found
        return Response(data, media_type=media_type, headers={"Cache-Control": "no-cache"})

    @app.websocket("/stream")
    async def stream(
        ws: WebSocket,
        mode: Literal["json", "binary", "video"] = Query("json"),
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
        send_frame = ws.scope.get("extensions", {}).get(wsprotocol.EXTENSION)
        viewer = hub.add(mode != "json", send_frame, video=mode == "video")

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

"""A local stand-in for pump.fun's livestream join API, handing out tokens for the local
livekit-server (pump.fun itself cannot be reached from here).

    POST /livestream/join  {"mintId": ..., "role": "viewer"}  (Origin: https://pump.fun)
    -> 200 {"token": ...}  a viewer token for the room named after the mint, or
    -> 404 {"error": "not live"} for a mint that is not streaming

Live mints and the token lifetime are set by whoever runs it (tests, the demo); `faults`
makes it answer a mint's joins with a given status and raw body (a refusal, an outage, a
malformed answer).

As a pod (the e2e suite, from the testkit image), with the keys in the environment:

    LIVEKIT_API_KEY=... LIVEKIT_API_SECRET=... python -m haven_localcluster.pumpfun \
        --host 0.0.0.0 --port 8080 --live <mint>=<room> [--live ...]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import threading
from dataclasses import dataclass, field

import uvicorn
from fastapi import FastAPI, Header
from fastapi.responses import JSONResponse, Response
from livekit import api
from pydantic import BaseModel

from .process import free_port


class JoinRequest(BaseModel):
    mintId: str
    role: str = "viewer"


@dataclass
class PumpFunStandIn:
    api_key: str
    api_secret: str
    token_ttl: dt.timedelta = dt.timedelta(minutes=15)
    live: dict[str, str] = field(default_factory=dict)  # mint id -> LiveKit room
    joins: list[str] = field(default_factory=list)  # mint ids, one per join answered with a token
    faults: dict[str, tuple[int, str]] = field(default_factory=dict)  # mint -> (status, body)
    host: str = "127.0.0.1"  # or the node link's host address, for pods to reach it
    port: int = 0
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def app(self) -> FastAPI:
        app = FastAPI(title="pump.fun join stand-in")

        @app.post("/livestream/join")
        async def join(body: JoinRequest, origin: str | None = Header(None)) -> Response:
            if origin != "https://pump.fun":
                return JSONResponse({"error": "forbidden origin"}, 403)
            if body.mintId in self.faults:
                status, raw = self.faults[body.mintId]
                return Response(raw, status, media_type="application/json")
            room = self.live.get(body.mintId)
            if room is None or body.role != "viewer":
                return JSONResponse({"error": "not live"}, 404)
            grants = api.VideoGrants(
                room_join=True, room=room, can_subscribe=True, can_publish=False
            )
            token = (
                api.AccessToken(self.api_key, self.api_secret)
                .with_identity(f"viewer-{len(self.joins)}-{body.mintId[:8]}")
                .with_ttl(self.token_ttl)
                .with_grants(grants)
                .to_jwt()
            )
            self.joins.append(body.mintId)
            return JSONResponse({"token": token})

        return app

    def start(self) -> None:
        """Serve on `host` from a background thread."""
        self.port = free_port()
        config = uvicorn.Config(self.app(), host=self.host, port=self.port, log_level="warning")
        self._server = uvicorn.Server(config)
        server = self._server
        self._thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
        self._thread.start()
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the pump.fun stand-in did not start")
            threading.Event().wait(0.02)

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="a stand-in for pump.fun's join API")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument(
        "--live", action="append", default=[], metavar="MINT=ROOM", help="a live mint's room"
    )
    args = parser.parse_args(argv)
    live = dict(entry.split("=", 1) for entry in args.live)
    stand_in = PumpFunStandIn(
        os.environ["LIVEKIT_API_KEY"], os.environ["LIVEKIT_API_SECRET"], live=live
    )
    uvicorn.run(stand_in.app(), host=args.host, port=args.port, log_level="info")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

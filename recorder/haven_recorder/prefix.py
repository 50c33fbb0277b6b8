"""Viewers under a path prefix (`--viewer-path`, an Ingress's `path`): the viewer app serves its
routes at `<prefix>/...` as well as at `/...`, so any Ingress controller can route `<prefix>/` to
the pod as it is, with no rewrite annotation. `<prefix>` without its trailing slash redirects to
`<prefix>/`, because the page opens its WebSocket relative to its own URL (`stream`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def normalize(path: str) -> str:
    """`/streams/demo/` and `/streams/demo` are the prefix `/streams/demo`; `/` is none ('')."""
    return "/" + path.strip("/") if path.strip("/") else ""


class ViewerPrefix:
    def __init__(self, app: ASGIApp, prefix: str) -> None:
        self.app, self.prefix = app, normalize(prefix)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.prefix and scope["type"] in ("http", "websocket"):
            path: str = scope["path"]
            if path == self.prefix and scope["type"] == "http":
                query = scope.get("query_string", b"")
                location = (self.prefix + "/").encode() + (b"?" + query if query else b"")
                headers = [(b"location", location), (b"content-length", b"0")]
                await send({"type": "http.response.start", "status": 308, "headers": headers})
                await send({"type": "http.response.body", "body": b""})
                return
            if path.startswith(self.prefix + "/"):
                stripped = path[len(self.prefix) :]
                scope = {**scope, "path": stripped, "raw_path": stripped.encode()}
        await self.app(scope, receive, send)

"""The WebSocket proxy: a stream pod's `/stream` messages to one client.

Each client gets its own upstream connection and a bounded queue between the two: a client
that reads too slowly loses its own oldest messages, never anyone else's, and the upstream
read never waits for it. Every message the client gets is JSON text: video and status messages
pass unchanged, audio is converted for the player unless the client asked for the pod's own
(see audio.py), and a `ping` (bare, or `{"type": "ping"}`) is answered `{"type": "pong"}`.

Viewer auth: a LiveStream with `spec.viewer.auth.secretRef` serves its `/stream` only with that
Secret's token (`?token=`). The gateway reads it (`get` on the Secret, as the chart's Role
allows) for each client and passes it upstream; the token is never logged nor shown to the
client, and a Secret it cannot read is a refusal that names the Secret.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote

import websockets
from kubernetes.client import ApiException, CoreV1Api
from starlette.websockets import WebSocket, WebSocketDisconnect

from .audio import AUDIO_PREFIX

log = logging.getLogger(__name__)
PONG = json.dumps({"type": "pong"})


@dataclass
class Ended:
    """How a relay ended: the client left, or the upstream closed (with its code and reason)."""

    by_client: bool
    code: int | None = None
    reason: str = ""


class ViewerTokenUnavailable(Exception):
    """The LiveStream needs a viewer token that the gateway cannot read; says why."""


def viewer_token(core: CoreV1Api, namespace: str, stream: dict) -> str | None:
    """The viewer token a LiveStream's stream pod asks for (None: viewing is open), read from
    the Secret `spec.viewer.auth.secretRef` names (blocking: call it in a thread)."""
    auth = (stream.get("spec", {}).get("viewer") or {}).get("auth")
    if not auth:
        return None
    ref = auth["secretRef"]
    name, key = ref["name"], ref.get("key", "token")
    try:
        secret = core.read_namespaced_secret(name, namespace)
    except ApiException as exc:
        if exc.status == 403:
            why = "the gateway may not read it (gateway.websocket.viewerAuth in the chart)"
        elif exc.status == 404:
            why = "it does not exist"
        else:
            why = f"{exc.status} {exc.reason}"
        raise ViewerTokenUnavailable(
            f"this stream needs the viewer token in Secret {name}, and {why}"
        ) from None
    value = (secret.data or {}).get(key)
    if not value:
        raise ViewerTokenUnavailable(f"Secret {name} has no key {key!r} for the viewer token")
    return base64.b64decode(value).decode()


def with_token(url: str, token: str | None) -> str:
    """`url` with `token` as its `token` query parameter (if any)."""
    if token is None:
        return url
    return f"{url}{'&' if '?' in url else '?'}token={quote(token, safe='')}"


class Relay:
    def __init__(
        self,
        client: WebSocket,
        upstream_url: str,
        queue_size: int,
        convert_audio: Callable[[str], str] | None = None,
        token: str | None = None,
    ) -> None:
        """`token`: the stream pod's viewer token, sent upstream (see viewer_token)."""
        self.client, self.upstream_url, self.token = client, upstream_url, token
        self.queue: asyncio.Queue[str] = asyncio.Queue(queue_size)
        self.send_lock = asyncio.Lock()  # frames and pongs share the client's socket
        self.convert_audio = convert_audio
        self.dropped = 0

    def offer(self, message: str) -> None:
        """Queue a message, dropping the oldest if the client is behind."""
        if self.queue.full():
            self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(message)

    async def send(self, message: str) -> None:
        async with self.send_lock:
            await self.client.send_text(message)

    async def run(self) -> Ended:
        url = with_token(self.upstream_url, self.token)
        try:
            connection = await websockets.connect(url, max_size=None)
        except websockets.InvalidURI:  # its message would carry the URL, and so the token
            raise websockets.InvalidURI(self.upstream_url, "not a WebSocket URL") from None
        async with connection as upstream:
            reader = asyncio.create_task(self._read_upstream(upstream))
            tasks = [reader, asyncio.create_task(self._write_client())]
            client = asyncio.create_task(self._read_client())
            tasks.append(client)
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if not task.cancelled() and task.exception() is not None:
                        exc = task.exception()
                        if not isinstance(exc, WebSocketDisconnect | websockets.ConnectionClosed):
                            log.warning("relay ended: %r", exc)
                if client in done:
                    ended = Ended(by_client=True)
                else:
                    # Let the client have what was queued before the end.
                    with contextlib.suppress(Exception):
                        while not self.queue.empty():
                            await asyncio.wait_for(self.send(self.queue.get_nowait()), 5)
                    ended = Ended(False, upstream.close_code, upstream.close_reason or "")
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        if self.dropped:
            log.info("client dropped %d messages while behind", self.dropped)
        return ended

    async def _read_upstream(self, upstream) -> None:
        async for message in upstream:
            if not isinstance(message, str):
                continue  # the pod's JSON mode sends text only; nothing else goes to clients
            if self.convert_audio is not None and message.startswith(AUDIO_PREFIX):
                try:
                    message = self.convert_audio(message)
                except (ValueError, KeyError, TypeError) as exc:
                    log.warning("audio message not converted: %s", exc)
                    continue
            self.offer(message)

    async def _write_client(self) -> None:
        while True:
            await self.send(await self.queue.get())

    async def _read_client(self) -> None:
        while True:
            message = await self.client.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                continue
            if text.strip() == "ping" or _is_ping(text):
                with contextlib.suppress(RuntimeError):
                    await self.send(PONG)


def _is_ping(text: str) -> bool:
    if not text.startswith("{"):
        return False
    try:
        return json.loads(text).get("type") == "ping"
    except (ValueError, AttributeError):
        return False

"""The WebSocket proxy: a stream pod's `/stream` messages to one client.

Each client gets its own upstream connection and a bounded queue between the two: a client
that reads too slowly loses its own oldest messages, never anyone else's, and the upstream
read never waits for it. Every message the client gets is JSON text: video and status messages
pass unchanged, audio is converted for the player unless the client asked for the pod's own
(see audio.py), and a `ping` (bare, or `{"type": "ping"}`) is answered `{"type": "pong"}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

import websockets
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


class Relay:
    def __init__(
        self,
        client: WebSocket,
        upstream_url: str,
        queue_size: int,
        convert_audio: Callable[[str], str] | None = None,
    ) -> None:
        self.client, self.upstream_url = client, upstream_url
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
        async with websockets.connect(self.upstream_url, max_size=None) as upstream:
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

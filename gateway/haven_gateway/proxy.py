"""The WebSocket proxy: a stream pod's `/stream` messages to one client, unchanged.

Each client gets its own upstream connection and a bounded queue between the two: a client
that reads too slowly loses its own oldest messages, never anyone else's, and the upstream
read never waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import websockets
from starlette.websockets import WebSocket, WebSocketDisconnect

log = logging.getLogger(__name__)


class Relay:
    def __init__(self, client: WebSocket, upstream_url: str, queue_size: int) -> None:
        self.client, self.upstream_url = client, upstream_url
        self.queue: asyncio.Queue[str | bytes] = asyncio.Queue(queue_size)
        self.send_lock = asyncio.Lock()  # frames and "pong" share the client's socket
        self.dropped = 0

    def offer(self, message: str | bytes) -> None:
        """Queue a message, dropping the oldest if the client is behind."""
        if self.queue.full():
            self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(message)

    async def send(self, message: str | bytes) -> None:
        async with self.send_lock:
            if isinstance(message, bytes):
                await self.client.send_bytes(message)
            else:
                await self.client.send_text(message)

    async def run(self) -> None:
        async with websockets.connect(self.upstream_url, max_size=None) as upstream:
            tasks = [
                asyncio.create_task(self._read_upstream(upstream)),
                asyncio.create_task(self._write_client()),
                asyncio.create_task(self._read_client()),
            ]
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if not task.cancelled() and task.exception() is not None:
                        exc = task.exception()
                        if not isinstance(exc, WebSocketDisconnect | websockets.ConnectionClosed):
                            log.warning("relay ended: %r", exc)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        if self.dropped:
            log.info("client dropped %d messages while behind", self.dropped)

    async def _read_upstream(self, upstream) -> None:
        async for message in upstream:
            self.offer(message)

    async def _write_client(self) -> None:
        while True:
            await self.send(await self.queue.get())

    async def _read_client(self) -> None:
        while True:
            message = await self.client.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") == "ping":
                with contextlib.suppress(RuntimeError):
                    await self.send("pong")

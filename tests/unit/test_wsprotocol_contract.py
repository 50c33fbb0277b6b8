"""Contract test for the one private API the stream pod relies on: uvicorn's sans-I/O
WebSocket protocol (`wsprotocol.FrameWritingProtocol` subclasses it to write a frame built once
to every viewer). An upgrade of uvicorn that renames what it reads fails here, loudly, instead
of in the viewer loops."""

from __future__ import annotations

import asyncio
import threading

import uvicorn
import websockets

from haven_localcluster.process import free_port
from haven_recorder import wsprotocol

# What send_frame and handle_connect read on the protocol (see wsprotocol.py).
ATTRIBUTES = ("scope", "handshake_complete", "close_sent", "disconnected", "writable", "transport")


def wait_started(server: uvicorn.Server) -> None:
    while not server.started:
        threading.Event().wait(0.02)


async def test_the_protocol_writes_a_prebuilt_frame_and_has_what_send_frame_reads():
    seen: dict = {}

    async def app(scope, receive, send):
        if scope["type"] != "websocket":
            return
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        send_frame = scope["extensions"][wsprotocol.EXTENSION]
        protocol = send_frame.__self__
        seen["missing"] = [a for a in ATTRIBUTES if not hasattr(protocol, a)]
        seen["writable"] = type(protocol.writable).__name__
        seen["sent"] = send_frame(wsprotocol.frame("prebuilt")) and send_frame(
            wsprotocol.frame(b"\x01binary")
        )
        await send({"type": "websocket.send", "text": "through asgi"})
        await receive()  # websocket.disconnect

    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, ws=wsprotocol.FrameWritingProtocol, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        await asyncio.to_thread(wait_started, server)
        async with websockets.connect(f"ws://127.0.0.1:{port}/") as ws:
            received = [await ws.recv() for _ in range(3)]
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert seen["missing"] == [], f"uvicorn no longer has {seen['missing']}: see wsprotocol.py"
    assert seen["writable"] == "Event" and seen["sent"] is True, seen
    assert received == ["prebuilt", b"\x01binary", "through asgi"]

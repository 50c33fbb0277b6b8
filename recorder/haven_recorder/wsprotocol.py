"""uvicorn's WebSocket protocol, plus one thing: writing an already-serialized frame.

A media message goes to every viewer. Through ASGI each viewer would cost a task wake-up, a
frame build and copies; here the frame is built once (`frame`) and each viewer costs one
`transport.write`. A viewer whose socket is backed up (the transport paused writing) skips
the frame: it loses frames, and nobody waits for it.

The ASGI app finds the writer in `scope["extensions"]["haven.send_frame"]`.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame, Opcode

EXTENSION = "haven.send_frame"


def frame(payload: str | bytes) -> bytes:
    """One unmasked, uncompressed server frame: text for str, binary for bytes."""
    if isinstance(payload, str):
        return Frame(Opcode.TEXT, payload.encode()).serialize(mask=False)
    return Frame(Opcode.BINARY, payload).serialize(mask=False)


class FrameWritingProtocol(WebSocketsSansIOProtocol):
    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:  # absent when the handshake was refused
            scope["extensions"][EXTENSION] = self.send_frame

    def send_frame(self, data: bytes) -> bool:
        """Write a serialized frame now; False (dropped) if the connection cannot take it."""
        if (
            not self.handshake_complete
            or self.close_sent
            or self.disconnected
            or not self.writable.is_set()  # the transport's buffer is over its high-water mark
            or self.transport.is_closing()
        ):
            return False
        self.transport.write(data)
        return True

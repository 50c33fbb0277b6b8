"""`python -m haven_recorder`: run the stream pod (flags or HAVEN_* environment variables)."""

from __future__ import annotations

import logging
import socket
import sys

import uvicorn

from . import logs, statuswait
from .app import create_app
from .config import parse
from .wsprotocol import FrameWritingProtocol

# Kernel send buffer per connection. Linux autotunes it up to megabytes, which would let a
# stalled viewer hide seconds of video in the kernel; bounded, its own queue drops instead.
# Accepted connections inherit it from the listening socket.
SEND_BUFFER_BYTES = 128 * 1024


def listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
    sock.bind((host, port))
    sock.listen(1024)
    return sock


def main(argv: list[str] | None = None) -> int:
    settings = parse(argv)
    logs.setup(settings.log_level, settings.log_format, secrets=settings.secrets())
    log = logging.getLogger("haven.pod")
    for secret in settings.secrets():
        if len(secret) < logs.MIN_SECRET_LENGTH:
            log.warning(
                "a secret (API secret, LiveKit token, control or viewer token) is shorter than "
                "%d characters: it is weak, and the log cannot redact it",
                logs.MIN_SECRET_LENGTH,
            )
    # Fail closed: an open control API is for a loopback bind (a developer's machine) only.
    if why := settings.control_open():
        print(f"haven-recorder: {why}", file=sys.stderr)
        return 2
    try:
        viewer_socket = listen(settings.host, settings.port)
        control_socket = listen(settings.host, settings.control_port)
        app = create_app(settings, control_port=control_socket.getsockname()[1])
    except (ValueError, OSError) as exc:
        print(f"haven-recorder: {exc}", file=sys.stderr)
        return 2
    log.info(
        "viewers on %s:%d, control API and metrics on %s:%d; %r",
        settings.host, viewer_socket.getsockname()[1],
        settings.host, control_socket.getsockname()[1], settings,
    )  # fmt: skip
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        # Both sockets get it; only the viewer app accepts WebSockets (/stream).
        ws=FrameWritingProtocol,  # media frames are built once and written to every viewer
        ws_per_message_deflate=False,  # JPEG and PCM do not compress; deflate cost CPU per viewer
        lifespan="on",
        timeout_graceful_shutdown=20,
    )
    _Server(config).run(sockets=[viewer_socket, control_socket])
    return 0


class _Server(uvicorn.Server):
    def handle_exit(self, sig, frame) -> None:
        statuswait.stop_waiting()  # long polls answer now, not after the graceful timeout
        super().handle_exit(sig, frame)


if __name__ == "__main__":
    raise SystemExit(main())

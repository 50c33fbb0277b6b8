"""`python -m haven_recorder`: run the stream pod (flags or HAVEN_* environment variables)."""

from __future__ import annotations

import sys

import uvicorn

from . import logs
from .app import create_app
from .config import parse


def main(argv: list[str] | None = None) -> int:
    settings = parse(argv)
    logs.setup(settings.log_level, settings.log_format)
    try:
        app = create_app(settings)
    except ValueError as exc:
        print(f"haven-recorder: {exc}", file=sys.stderr)
        return 2
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        ws="websockets",
        lifespan="on",
        timeout_graceful_shutdown=20,
    )
    uvicorn.Server(config).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Structured logging: one JSON object per line (or plain text for a terminal).

Every line passes a redactor first: the secrets the pod was given (LiveKit API secret, join
token, control and viewer tokens) and anything shaped like a JWT (the LiveKit and pump.fun
join tokens the pod obtains at run time) are replaced by `<redacted>`, whoever logs them (our
code, uvicorn, the LiveKit SDK) and wherever (message, arguments, traceback).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Iterable

REDACTED = "<redacted>"
# A secret shorter than this is not searched for: it would redact ordinary words (a one-letter
# dev secret would take every "s" out of the log). __main__ warns about such a weak secret.
MIN_SECRET_LENGTH = 8
# header.payload.signature, base64url; a JWT's header always starts with `{"` = "eyJ".
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")


class Redactor:
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets: list[str] = []
        self.add(*secrets)

    def add(self, *secrets: str | None) -> None:
        for secret in secrets:
            if secret and len(secret) >= MIN_SECRET_LENGTH and secret not in self.secrets:
                self.secrets.append(secret)
        self.secrets.sort(key=len, reverse=True)  # a longer secret that contains another first

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return JWT.sub(REDACTED, text)


REDACT = Redactor()


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": REDACT(record.getMessage()),
        }
        if record.exc_info:
            entry["exc"] = REDACT(self.formatException(record.exc_info))
        return json.dumps(entry)


class RedactingTextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return REDACT(super().format(record))


def setup(level: str = "info", fmt: str = "json", secrets: Iterable[str] = ()) -> None:
    REDACT.add(*secrets)
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            RedactingTextFormatter("%(asctime)s %(levelname)s %(name)s %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("livekit").setLevel(logging.WARNING)  # the SDK logs every signal event

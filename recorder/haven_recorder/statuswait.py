"""`GET /status?since=<version>&wait=<seconds>`: the control API's status as a long poll.

Every answer carries `version`, a digest of what the operator writes on a change (state,
reason, message, participant, picture size, viewers, active recordings, health, what is
missing). Asked with the version it last saw, the pod answers as soon as that digest differs,
or after `wait` seconds with the same version (the counters then, such as fps and the last
frame time, which change all the time and are not in the digest). So the operator keeps one
connection per stream pod open and hears of a transition at once, without a request per tick.

Bounded: at most `MAX_WAITERS` requests wait at once (more are answered at once) and none
waits over `MAX_WAIT` seconds. A waiter wakes on the stream manager's state events (its own
bounded listener queue) and otherwise looks every `CHECK` seconds (viewers and recordings come
and go without an event); it never blocks the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import Callable
from typing import Any, Protocol

MAX_WAIT = 60.0  # seconds one request may wait
MAX_WAITERS = 8  # requests waiting at once (the operator needs one)
CHECK = 1.0  # seconds between looks while waiting
_stopping = False  # the process is shutting down: waiters answer now


def stop_waiting() -> None:
    """Called on SIGTERM: every long poll answers within `CHECK` seconds, so the server's
    graceful shutdown (which waits for open requests) is not held by the operator's poll."""
    global _stopping
    _stopping = True


DIGESTED = (
    "state",
    "reason",
    "message",
    "participant",
    "viewers",
    "activeRecordings",
    "healthy",
    "missing",
)


class Listenable(Protocol):
    def listen(self) -> asyncio.Queue: ...
    def unlisten(self, queue: asyncio.Queue) -> None: ...


def version(status: dict[str, Any]) -> str:
    """The digest of the fields whose change the operator writes at once."""
    video = status.get("video") or {}
    essence = {k: status.get(k) for k in DIGESTED}
    essence["size"] = [video.get("width"), video.get("height")]
    text = json.dumps(essence, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class StatusWaiter:
    def __init__(self, status: Callable[[], dict], events: Listenable) -> None:
        self._status = status
        self._events = events
        self.waiting = 0

    def now(self) -> dict[str, Any]:
        current = self._status()
        return {**current, "version": version(current)}

    async def answer(self, since: str | None, wait: float) -> dict[str, Any]:
        """The status at once if `since` is not its version (or nobody may wait), else once
        it changes or `wait` seconds have passed."""
        current = self.now()
        wait = min(max(wait, 0.0), MAX_WAIT)
        if since is None or since != current["version"] or not wait or _stopping:
            return current
        if self.waiting >= MAX_WAITERS:
            return current
        self.waiting += 1
        queue = self._events.listen()
        try:
            deadline = asyncio.get_running_loop().time() + wait
            while (left := deadline - asyncio.get_running_loop().time()) > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(queue.get(), timeout=min(CHECK, left))
                current = self.now()
                if current["version"] != since or _stopping:
                    break
            return current
        finally:
            self._events.unlisten(queue)
            self.waiting -= 1

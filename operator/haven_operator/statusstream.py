"""A stream pod's own state, followed over one long-lived connection (the pod's long poll,
haven_recorder/statuswait.py) instead of a new connection every status interval.

One `StatusStream` per LiveStream whose pod is ready: a task that asks `GET /status?since=
<version>&wait=WAIT` over one keep-alive connection, so the pod answers as soon as something
the status shows changes (or after WAIT seconds, with the counters). Each new version pokes the
LiveStream's loop, which writes what changed. Errors back off exponentially (backoff.py); a
401/403 tells the loop to read the control token again. A pod that does not wait (an older
image without `version`, or too many waiters) is polled every `slow` seconds instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import httpx

from .backoff import delay, jittered

WAIT = 25.0  # seconds the pod may hold a request (its own limit is 60)


class StatusStream:
    def __init__(
        self,
        base_url: str,
        headers: dict[str, str],
        on_change: Callable[[], None],
        on_rejected: Callable[[], None],
        slow: float = 5.0,
    ) -> None:
        self.url = f"{base_url.rstrip('/')}/status"
        self.headers = headers
        self.on_change, self.on_rejected = on_change, on_rejected
        self.slow = slow
        self.latest: dict[str, Any] | None = None  # the pod's last answer
        self.error: tuple[str, str] | None = None  # (reason, message) of the last failure
        self.answered = asyncio.Event()  # the first answer (or failure) is in
        self.requests = 0
        self._task: asyncio.Task | None = None

    def start(self) -> StatusStream:
        self._task = asyncio.create_task(self._run(), name=f"status {self.url}")
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def first(self, seconds: float) -> None:
        """Wait (bounded) for the first answer or failure."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.answered.wait(), seconds)

    def _failed(self, reason: str, message: str) -> None:
        changed = self.error != (reason, message) or self.latest is not None
        self.latest, self.error = None, (reason, message[:300])
        self.answered.set()
        if changed:
            self.on_change()

    async def _run(self) -> None:
        timeout = httpx.Timeout(5.0, read=WAIT + 15.0)
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        failures = 0
        async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
            while True:
                since = (self.latest or {}).get("version")
                params = {"since": since, "wait": WAIT} if since else {}
                asked = time.monotonic()
                self.requests += 1
                try:
                    resp = await client.get(self.url, params=params, headers=self.headers)
                except httpx.HTTPError as exc:
                    failures += 1
                    self._failed("PodUnreachable", f"GET {self.url}: {exc!r}")
                    await asyncio.sleep(delay(failures, cap=30.0))
                    continue
                if resp.status_code >= 400:
                    failures += 1
                    reason = "PodRejected" if resp.status_code < 500 else "PodUnreachable"
                    self._failed(reason, f"{resp.status_code}: {resp.text[:200]}")
                    if resp.status_code in (401, 403):
                        self.on_rejected()  # the Secret changed: read it again
                    await asyncio.sleep(delay(failures, cap=30.0))
                    continue
                failures = 0
                body = resp.json()
                new = self.error is not None or body.get("version") != since or not since
                self.latest, self.error = body, None
                self.answered.set()
                if new:
                    self.on_change()
                if not body.get("version") or (
                    since and not new and time.monotonic() - asked < WAIT / 2
                ):
                    await asyncio.sleep(jittered(self.slow, spread=0.1))  # it did not wait

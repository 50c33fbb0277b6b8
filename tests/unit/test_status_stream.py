"""The operator's status stream (haven_operator/statusstream.py) against the pod's long poll
(haven_recorder/statuswait.py), served on loopback by a small aiohttp app: one connection,
an answer on each change, the token re-read after a 401, a pod that goes away reported."""

from __future__ import annotations

import asyncio

from aiohttp import web

from haven_operator.statusstream import StatusStream
from haven_recorder.statuswait import StatusWaiter


class Events:
    """The stream manager's listener queues, as statuswait uses them."""

    def __init__(self) -> None:
        self.queues: list[asyncio.Queue] = []

    def listen(self) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue(maxsize=16)
        self.queues.append(queue)
        return queue

    def unlisten(self, queue: asyncio.Queue) -> None:
        self.queues.remove(queue)

    def fire(self) -> None:
        for queue in self.queues:
            queue.put_nowait({})


async def serve(state: dict, events: Events, token: list[str], peers: set) -> web.AppRunner:
    waiter = StatusWaiter(lambda: dict(state), events)

    async def status(request: web.Request) -> web.Response:
        peers.add(request.transport.get_extra_info("peername"))
        if request.headers.get("Authorization") != f"Bearer {token[0]}":
            return web.json_response({"detail": "bad token"}, status=401)
        wait = float(request.query.get("wait", 0))
        return web.json_response(await waiter.answer(request.query.get("since"), wait))

    app = web.Application()
    app.router.add_get("/status", status)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner


def port(runner: web.AppRunner) -> int:
    return runner.addresses[0][1]


async def until(condition, what: str) -> None:
    for _ in range(3000):  # 30 s at most
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"no {what}")


async def test_each_change_arrives_over_one_connection():
    state = {"state": "connecting", "viewers": 0, "reason": "Connecting", "message": ""}
    events, token, peers = Events(), ["t1"], set()
    runner = await serve(state, events, token, peers)
    changes, rejected = [], []
    stream = StatusStream(
        f"http://127.0.0.1:{port(runner)}",
        {"Authorization": "Bearer t1"},
        on_change=lambda: changes.append(dict(stream.latest or {})),
        on_rejected=lambda: rejected.append(1),
    ).start()
    try:
        await stream.first(30)
        assert stream.latest["state"] == "connecting" and len(changes) == 1
        await until(lambda: events.queues, "the stream waits on the pod")
        state.update(state="live", reason="Live")
        events.fire()  # the manager's event wakes the waiting request at once
        await until(lambda: len(changes) == 2, "the change")
        assert stream.latest["state"] == "live"
        state["viewers"] = 3  # no event: found by the waiter's own look
        await until(lambda: len(changes) == 3, "the viewer count")
        assert stream.latest["viewers"] == 3
        assert len(peers) == 1, f"one keep-alive connection, not {peers}"
        assert stream.requests <= 4 and not rejected

        token[0] = "t2"  # the control Secret changed: 401
        state["viewers"] = 4
        events.fire()
        await until(lambda: rejected, "the 401")
        assert stream.latest is None and stream.error[0] == "PodRejected"
    finally:
        await stream.stop()
        await runner.cleanup()


async def test_a_pod_that_goes_away_is_reported_unreachable():
    state = {"state": "live", "viewers": 0}
    runner = await serve(state, Events(), ["t"], set())
    url = f"http://127.0.0.1:{port(runner)}"
    await runner.cleanup()  # nothing listens there any more
    stream = StatusStream(url, {"Authorization": "Bearer t"}, lambda: None, lambda: None).start()
    try:
        await stream.first(30)
        assert stream.latest is None and stream.error[0] == "PodUnreachable"
    finally:
        await stream.stop()

"""Shared set-up for the benchmarks: livekit-server, the synthetic publisher and a stream pod
as separate processes, and CPU/RSS sampling from /proc."""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from livekit import api

from haven_localcluster.livekit import LiveKitServer
from haven_localcluster.process import stop
from haven_localcluster.publisher import spawn_publisher
from haven_localcluster.streampod import StreamPod, livekit_args

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Usage:
    cpu_cores: float  # average cores busy over the window
    rss_mb: float  # resident memory at the end


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def measure(pid: int, seconds: float) -> Usage:
    c0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return Usage((cpu_seconds(pid) - c0) / (time.monotonic() - t0), rss_mb(pid))


@dataclass
class Stack:
    server: LiveKitServer
    room: str
    pod: StreamPod
    workdir: Path

    def publisher_t0(self) -> float:
        return publisher_t0(self.server, self.room)


def publisher_t0(server: LiveKitServer, room: str) -> float:
    """The wall-clock time of the publisher's frame 0, which it sets as an attribute."""

    async def read() -> float:
        lk = api.LiveKitAPI(server.http_url, server.api_key, server.api_secret)
        try:
            listed = await lk.room.list_participants(api.ListParticipantsRequest(room=room))
        finally:
            await lk.aclose()
        return next(
            float(p.attributes["haven.t0"])
            for p in listed.participants
            if "haven.t0" in p.attributes
        )

    return asyncio.run(read())


@contextmanager
def stack(*pod_args: str) -> Iterator[Stack]:
    """livekit-server, a publisher and a live stream pod, all stopped on exit."""
    with tempfile.TemporaryDirectory(prefix="haven-bench-") as tmp:
        workdir = Path(tmp)
        server = LiveKitServer(workdir / "livekit")
        server.start()
        room = "bench"
        publisher = spawn_publisher(server.url, server.api_key, server.api_secret, room, workdir)
        pod = StreamPod(
            [*livekit_args(server, room), *pod_args], workdir / "recordings", workdir / "pod"
        )
        try:
            pod.start()
            pod.wait_state("live", timeout=60)
            yield Stack(server, room, pod, workdir)
        finally:
            pod.stop()
            stop([publisher])
            server.stop()


def print_table(rows: list[dict]) -> None:
    if not rows:
        return
    widths = {k: max(len(k), *(len(str(r[k])) for r in rows)) for k in rows[0]}
    print("  ".join(k.rjust(w) for k, w in widths.items()))
    for row in rows:
        print("  ".join(str(row[k]).rjust(w) for k, w in widths.items()))

"""Stream pod CPU, RSS, frame rate and publisher-to-viewer latency for one 720p30 stream at
0, 1, 10, 50 and 100 WebSocket viewers (JSON mode, maxFps 15), viewers in a separate process;
and what a pod costs while nobody watches: idle CPU and RSS (the 0-viewer row, measured before
any viewer ever connected), and the time from a viewer's connect to its first frame when the
pod is idle (`--idle-trials` connects, each after `--idle-wait` seconds with no viewer, so a
lazily subscribing pod has dropped its video subscription again).

    .venv/bin/python bench/viewers.py [--seconds 20] [--viewers 0 1 10 50 100] \
        [--idle-trials 7] [--idle-wait 12]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import websockets

sys.path.insert(0, str(Path(__file__).parent))
from common import cpu_seconds, print_table, rss_mb, stack

LOAD = Path(__file__).parent / "viewer_load.py"


async def first_frame_seconds(url: str) -> float:
    """Seconds from opening a viewer's connection to its first video frame (at most 30)."""
    started = time.monotonic()
    async with asyncio.timeout(30), websockets.connect(url, max_size=None) as ws:
        while True:
            message = await ws.recv()
            if isinstance(message, str) and message.startswith('{"type": "video_frame"'):
                return time.monotonic() - started


def idle_first_frames(url: str, trials: int, wait: float) -> list[float]:
    times = []
    for _ in range(trials):
        time.sleep(wait)  # no viewer for this long: the pod is idle again
        times.append(asyncio.run(first_frame_seconds(url)))
    return times


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--viewers", type=int, nargs="*", default=[0, 1, 10, 50, 100])
    p.add_argument("--idle-trials", type=int, default=7)
    p.add_argument("--idle-wait", type=float, default=12)
    a = p.parse_args()
    rows: list[dict] = []
    cpu: dict[int, float] = {}
    first: list[float] = []
    with stack("--max-fps", "15", "--max-viewers", "200") as s:
        t0 = s.publisher_t0()
        pid = s.pod.proc.pid
        for n in a.viewers:
            if n and a.idle_trials and not first:  # after the idle row, before any load
                first = idle_first_frames(s.pod.ws_url, a.idle_trials, a.idle_wait)
            load = subprocess.Popen(
                [sys.executable, str(LOAD), "--url", s.pod.ws_url, "--viewers", str(n),
                 "--seconds", str(a.seconds + 4), "--t0", str(t0)],
                stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            time.sleep(3)  # let the viewers connect and settle
            c0, w0 = cpu_seconds(pid), time.monotonic()
            time.sleep(a.seconds)
            cores = (cpu_seconds(pid) - c0) / (time.monotonic() - w0)
            rss = rss_mb(pid)
            out = json.loads(load.communicate()[0])
            fps = np.mean(out["counts"]) / (a.seconds + 4) if n else 0.0
            lat = np.array(out["latencies"]) * 1000
            p50, p99 = np.percentile(lat, [50, 99]) if len(lat) else (float("nan"),) * 2
            rows.append(
                {
                    "viewers": n,
                    "pod CPU cores": f"{cores:.3f}",
                    "RSS MB": f"{rss:.0f}",
                    "fps per viewer": f"{fps:.1f}",
                    "latency p50 ms": f"{p50:.0f}",
                    "latency p99 ms": f"{p99:.0f}",
                }
            )
            cpu[n] = cores
    print_table(rows)
    if 0 in cpu:
        idle = next(r for r in rows if r["viewers"] == 0)
        print(
            f"idle (no viewer, no recording): {idle['pod CPU cores']} cores (goal <= 0.02), "
            f"RSS {idle['RSS MB']} MB (goal <= 150)"
        )
    if first:
        p50, worst = np.percentile(first, 50), max(first)
        print(
            f"connect to first frame when idle: p50 {p50:.2f} s, max {worst:.2f} s over "
            f"{len(first)} connects (goal p50 <= 1 s)"
        )
    if 1 in cpu and 100 in cpu:
        print(f"CPU at 100 viewers / CPU at 1 viewer: {cpu[100] / cpu[1]:.2f}x (goal <= 1.5x)")


if __name__ == "__main__":
    main()

"""Stream pod CPU, RSS, frame rate and publisher-to-viewer latency for one 720p30 stream at
0, 1, 10, 50 and 100 WebSocket viewers (JSON mode, maxFps 15), viewers in a separate process.

    .venv/bin/python bench/viewers.py [--seconds 20] [--viewers 0 1 10 50 100]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import cpu_seconds, print_table, rss_mb, stack

LOAD = Path(__file__).parent / "viewer_load.py"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--viewers", type=int, nargs="*", default=[0, 1, 10, 50, 100])
    a = p.parse_args()
    rows: list[dict] = []
    cpu: dict[int, float] = {}
    with stack("--max-fps", "15", "--max-viewers", "200") as s:
        t0 = s.publisher_t0()
        pid = s.pod.proc.pid
        for n in a.viewers:
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
    if 1 in cpu and 100 in cpu:
        print(f"CPU at 100 viewers / CPU at 1 viewer: {cpu[100] / cpu[1]:.2f}x (goal <= 1.5x)")


if __name__ == "__main__":
    main()

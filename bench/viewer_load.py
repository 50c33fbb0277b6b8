"""Viewer load for bench/viewers.py, run as its own process: N WebSocket viewers that read
everything, and one probe viewer that decodes each frame's counter to measure latency."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import time

import numpy as np
import simplejpeg
import websockets

from haven_localcluster import testsignal as ts


async def viewer(
    url: str, until: float, counts: list[int], i: int, t0: float, latencies: list[float] | None
) -> None:
    """Read every message until `until`; with `latencies`, also decode each frame's counter."""
    async with websockets.connect(url, max_size=None) as ws:
        while time.time() < until:
            try:
                message = await asyncio.wait_for(ws.recv(), max(0.01, until - time.time()))
            except TimeoutError:
                break
            received = time.time()
            if not message.startswith('{"type": "video_frame"'):
                continue
            counts[i] += 1
            if latencies is None:
                continue
            jpeg = base64.b64decode(json.loads(message)["data"])
            luma = simplejpeg.decode_jpeg(jpeg, colorspace="GRAY")[:, :, 0]
            n = ts.decode_counter(np.ascontiguousarray(luma))
            if n is not None:
                latencies.append(received - (t0 + n / ts.FPS))


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--viewers", type=int, required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--t0", type=float, required=True)
    a = p.parse_args()
    until = time.time() + a.seconds
    counts = [0] * a.viewers
    latencies: list[float] = []
    # Viewer 0 is the probe that measures latency; the others only read.
    tasks = [
        viewer(a.url, until, counts, i, a.t0, latencies if i == 0 else None)
        for i in range(a.viewers)
    ]
    await asyncio.gather(*tasks)
    print(json.dumps({"counts": counts, "latencies": latencies}))


if __name__ == "__main__":
    asyncio.run(main())

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


async def viewer(url: str, until: float, counts: list[int], i: int) -> None:
    async with websockets.connect(url, max_size=None) as ws:
        while time.time() < until:
            try:
                message = await asyncio.wait_for(ws.recv(), max(0.01, until - time.time()))
            except TimeoutError:
                break
            if message.startswith('{"type": "video_frame"'):
                counts[i] += 1


async def probe(
    url: str, until: float, t0: float, latencies: list[float], counts: list[int]
) -> None:
    async with websockets.connect(url, max_size=None) as ws:
        while time.time() < until:
            try:
                message = await asyncio.wait_for(ws.recv(), max(0.01, until - time.time()))
            except TimeoutError:
                break
            received = time.time()
            msg = json.loads(message)
            if msg["type"] != "video_frame":
                continue
            counts[0] += 1
            luma = simplejpeg.decode_jpeg(base64.b64decode(msg["data"]), colorspace="GRAY")[:, :, 0]
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
    tasks = [
        probe(a.url, until, a.t0, latencies, counts) if i == 0 else viewer(a.url, until, counts, i)
        for i in range(a.viewers)
    ]
    await asyncio.gather(*tasks)
    print(json.dumps({"counts": counts, "latencies": latencies}))


if __name__ == "__main__":
    asyncio.run(main())

"""Viewer load for bench/viewers.py, run as its own process: N WebSocket viewers that read
everything, and one probe viewer that decodes each picture's counter to measure latency.
`--mode json` (JPEG in JSON), `binary` (JPEG) or `video` (H.264, decoded with PyAV)."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import time

import av
import numpy as np
import simplejpeg
import websockets

from haven_localcluster import testsignal as ts


def is_picture(message: str | bytes) -> bool:
    if isinstance(message, str):
        return message.startswith('{"type": "video_frame"')
    return message[0] in (1, 3)


def lumas(message: str | bytes, decoder: av.CodecContext | None) -> list[np.ndarray]:
    """The pictures a video message holds, as luma planes."""
    if isinstance(message, str):
        jpeg = base64.b64decode(json.loads(message)["data"])
    elif message[0] == 1:
        jpeg = message[13:]
    else:
        assert decoder is not None
        return [f.to_ndarray(format="gray") for f in decoder.decode(av.Packet(message[14:]))]
    return [simplejpeg.decode_jpeg(jpeg, colorspace="GRAY")[:, :, 0]]


async def viewer(
    url: str,
    until: float,
    counts: list[int],
    sizes: list[int],
    i: int,
    t0: float,
    latencies: list[float] | None,
) -> None:
    """Read every message until `until`; with `latencies`, also decode each picture's counter."""
    decoder = av.CodecContext.create("h264", "r") if latencies is not None else None
    async with websockets.connect(url, max_size=None) as ws:
        while time.time() < until:
            try:
                message = await asyncio.wait_for(ws.recv(), max(0.01, until - time.time()))
            except TimeoutError:
                break
            received = time.time()
            sizes[i] += len(message)
            if not is_picture(message):
                continue
            counts[i] += 1
            if latencies is None:
                continue
            for luma in lumas(message, decoder):
                n = ts.decode_counter(np.ascontiguousarray(luma))
                if n is not None:
                    latencies.append(received - (t0 + n / ts.FPS))


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--viewers", type=int, required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--t0", type=float, required=True)
    p.add_argument("--mode", choices=["json", "binary", "video"], default="json")
    a = p.parse_args()
    url = a.url if a.mode == "json" else f"{a.url}?mode={a.mode}"
    until = time.time() + a.seconds
    counts, sizes = [0] * a.viewers, [0] * a.viewers
    latencies: list[float] = []
    # Viewer 0 is the probe that measures latency; the others only read.
    tasks = [
        viewer(url, until, counts, sizes, i, a.t0, latencies if i == 0 else None)
        for i in range(a.viewers)
    ]
    await asyncio.gather(*tasks)
    print(json.dumps({"counts": counts, "bytes": sizes, "latencies": latencies}))


if __name__ == "__main__":
    asyncio.run(main())

"""Stream pod viewer figures, for one 720p30 stream (viewers in a separate process):

- CPU, RSS, frame rate, bytes/s per viewer and publisher-to-viewer latency at 0, 1, 10, 50
  and 100 WebSocket viewers, per mode (`--modes json video`: JPEG in JSON at maxFps 15, and
  H.264 + Opus from the shared encoder), and the CPU at 100 viewers over 1 per mode;
- what a pod costs while nobody watches: idle CPU and RSS (the 0-viewer row, measured before
  any viewer ever connected), and the time from a viewer's connect to its first frame when
  the pod is idle (`--idle-trials` connects, each after `--idle-wait` seconds with no viewer);
- `mode=video` against JPEG: bytes/s per viewer, and PSNR of the pictures a viewer decodes
  against the publisher's test pattern (the counter says which source picture it is);
- glass-to-glass latency in Debian's headless Chromium, from the counter read off the page's
  canvas at each picture it draws (publisher capture to drawn), for `video` and `jpeg`;
- HLS (a second pod with `--hls true`): the latency of hls.js in Chromium, the same way, and
  how old a segment's newest picture is when the playlist first lists it.

    .venv/bin/python bench/viewers.py [--seconds 20] [--viewers 0 1 10 50 100] \\
        [--modes json video] [--idle-trials 7] [--idle-wait 12] [--browser-seconds 20] \\
        [--no-table] [--no-quality] [--no-browser] [--no-hls]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import re
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import httpx
import numpy as np
import simplejpeg
import websockets

sys.path.insert(0, str(Path(__file__).parent))
from common import cpu_seconds, print_table, rss_mb, stack

from haven_localcluster import testsignal as ts

LOAD = Path(__file__).parent / "viewer_load.py"
CHROMIUM = "/usr/bin/chromium"
BROWSER_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]  # fmt: skip
# Read the counter off the canvas at every picture the page draws (the strip of black and
# white cells along the top, as testsignal.decode_counter reads it).
COUNTER_HOOK = """
window.havenLatency = [];
window.onHavenFrame = () => {
  const c = document.getElementById('video'), w = c.width, h = c.height;
  const rows = Math.max(1, Math.floor(h * %(strip)d / %(height)d));
  const row = c.getContext('2d').getImageData(0, Math.floor(rows / 2), w, 1).data;
  let word = 0;
  for (let i = 0; i < %(cells)d; i++) {
    const x = Math.floor((i + 0.5) * w / %(cells)d);
    word = word * 2 + (row[x * 4] > 128 ? 1 : 0);
  }
  const check = word %% %(checkmod)d, value = Math.floor(word / %(checkmod)d);
  if (check !== (~value & (%(checkmod)d - 1))) return;
  window.havenLatency.push(Date.now() / 1000 - (%(t0)r + value / %(fps)d));
};
"""


def percentiles(values: list[float]) -> str:
    if not values:
        return "no samples"
    p50, p99 = np.percentile(np.array(values) * 1000, [50, 99])
    return f"p50 {p50:.0f} ms, p99 {p99:.0f} ms over {len(values)} pictures"


# -- the table: CPU, RSS, fps, bytes and latency per viewer count ---------------------------


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


def table(s, a) -> None:
    rows: list[dict] = []
    cpu: dict[tuple[str, int], float] = {}
    first: list[float] = []
    t0 = s.publisher_t0()
    pid = s.pod.proc.pid
    for mode in a.modes:
        for n in a.viewers:
            if n == 0 and mode != a.modes[0]:
                continue  # the idle row is the same for every mode
            if n and a.idle_trials and not first:  # after the idle row, before any load
                first = idle_first_frames(s.pod.ws_url, a.idle_trials, a.idle_wait)
            load = subprocess.Popen(
                [sys.executable, str(LOAD), "--url", s.pod.ws_url, "--viewers", str(n),
                 "--seconds", str(a.seconds + 4), "--t0", str(t0), "--mode", mode],
                stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            time.sleep(3)  # let the viewers connect and settle
            c0, w0 = cpu_seconds(pid), time.monotonic()
            time.sleep(a.seconds)
            cores = (cpu_seconds(pid) - c0) / (time.monotonic() - w0)
            rss = rss_mb(pid)
            out = json.loads(load.communicate()[0])
            fps = np.mean(out["counts"]) / (a.seconds + 4) if n else 0.0
            kbs = np.mean(out["bytes"]) / (a.seconds + 4) / 1000 if n else 0.0
            lat = np.array(out["latencies"]) * 1000
            p50, p99 = np.percentile(lat, [50, 99]) if len(lat) else (float("nan"),) * 2
            rows.append(
                {
                    "mode": mode,
                    "viewers": n,
                    "pod CPU cores": f"{cores:.3f}",
                    "RSS MB": f"{rss:.0f}",
                    "fps per viewer": f"{fps:.1f}",
                    "kB/s per viewer": f"{kbs:.0f}",
                    "latency p50 ms": f"{p50:.0f}",
                    "latency p99 ms": f"{p99:.0f}",
                }
            )
            cpu[mode, n] = cores
    print_table(rows)
    idle = next((r for r in rows if r["viewers"] == 0), None)
    if idle:
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
    for mode in a.modes:
        if (mode, 1) in cpu and (mode, 100) in cpu:
            goal = "1.2" if mode == "video" else "1.5"
            ratio = cpu[mode, 100] / cpu[mode, 1]
            print(f"{mode}: CPU at 100 viewers / CPU at 1 viewer: {ratio:.2f}x (goal <= {goal}x)")


# -- bytes and picture quality: mode=video against JPEG ------------------------------------


def psnr(luma: np.ndarray, counter: int, pattern: ts.VideoPattern) -> float:
    source = pattern.luma(counter).astype(np.float64)
    mse = float(np.mean((luma.astype(np.float64) - source) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255**2 / mse)


async def sample(url: str, mode: str, seconds: float) -> tuple[float, float, list[float]]:
    """(bytes/s of media, bytes/s of pictures alone, PSNR of each picture) for one viewer."""
    pattern = ts.VideoPattern()
    decoder = av.CodecContext.create("h264", "r")
    media = pictures = 0
    scores: list[float] = []
    async with websockets.connect(f"{url}?mode={mode}", max_size=None) as ws:
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            message = await ws.recv()
            if isinstance(message, str):
                continue
            media += len(message)
            if message[0] == 1:
                pictures += len(message)
                lumas = [simplejpeg.decode_jpeg(message[13:], colorspace="GRAY")[:, :, 0]]
            elif message[0] == 3:
                pictures += len(message)
                packet = av.Packet(message[struct.calcsize(">BdBHH") :])
                # the Y plane as decoded (format="gray" would convert it to full range)
                lumas = [f.to_ndarray(format="yuv420p")[: f.height] for f in decoder.decode(packet)]
            else:
                continue
            for luma in lumas:
                n = ts.decode_counter(np.ascontiguousarray(luma))
                if n is not None and luma.shape == (ts.HEIGHT, ts.WIDTH):
                    scores.append(psnr(luma, n, pattern))
        elapsed = time.monotonic() - started
    return media / elapsed, pictures / elapsed, scores


def quality(s, seconds: float) -> None:
    print(f"\nmode=video against JPEG (binary mode), one viewer each, {seconds:.0f} s:")
    video = asyncio.run(sample(s.pod.ws_url, "video", seconds))
    jpeg = asyncio.run(sample(s.pod.ws_url, "binary", seconds))
    for name, (media, pictures, scores) in (("video (H.264+Opus)", video), ("JPEG+PCM", jpeg)):
        print(
            f"  {name}: {media / 1000:.0f} kB/s in all, {pictures / 1000:.0f} kB/s of pictures; "
            f"PSNR (luma, against the source pattern) mean {np.mean(scores):.1f} dB, "
            f"min {np.min(scores):.1f} dB over {len(scores)} pictures"
        )
    print(
        f"  video/JPEG bytes: {video[0] / jpeg[0]:.3f} in all, {video[1] / jpeg[1]:.3f} "
        f"pictures alone (goal <= 0.2); video PSNR goal >= 35 dB"
    )


# -- glass-to-glass in Chromium -------------------------------------------------------------


def browser_latency(viewer_url: str, t0: float, mode: str, seconds: float) -> list[float]:
    from playwright.sync_api import sync_playwright

    hook = COUNTER_HOOK % {
        "strip": ts.STRIP_ROWS, "height": ts.HEIGHT, "cells": ts.CELLS,
        "checkmod": 1 << ts.CHECK_BITS, "t0": t0, "fps": ts.FPS,
    }  # fmt: skip
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            page = browser.new_page()
            page.add_init_script(hook)
            page.goto(f"{viewer_url}/?mode={mode}")
            page.wait_for_function("window.havenLatency && havenLatency.length > 5", timeout=60000)
            page.evaluate("window.havenLatency = []")
            time.sleep(seconds)
            return page.evaluate("window.havenLatency")
        finally:
            browser.close()


# -- HLS ------------------------------------------------------------------------------------


def segment_ages(viewer_url: str, t0: float, seconds: float) -> list[float]:
    """For each segment the playlist newly lists: now minus its newest picture's capture."""
    seen: set[str] = set()
    ages: list[float] = []
    init: dict[str, bytes] = {}
    deadline = time.monotonic() + seconds
    with httpx.Client(base_url=viewer_url + "/hls/", timeout=10) as http:
        while time.monotonic() < deadline:
            text = http.get("index.m3u8").text
            listed_at = time.time()
            names = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
            map_name = re.search(r'#EXT-X-MAP:URI="([^"]+)"', text)
            if not seen:
                seen.update(names)  # those were there before we looked
            for name in names:
                if name in seen or map_name is None:
                    continue
                seen.add(name)
                if map_name[1] not in init:
                    init[map_name[1]] = http.get(map_name[1]).content
                data = init[map_name[1]] + http.get(name).content
                last = None
                with av.open(io.BytesIO(data)) as c:
                    for frame in c.decode(video=0):
                        luma = np.ascontiguousarray(frame.to_ndarray(format="gray"))
                        last = ts.decode_counter(luma) or last
                if last is not None:
                    ages.append(listed_at - (t0 + last / ts.FPS))
            time.sleep(0.05)
    return ages


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--viewers", type=int, nargs="*", default=[0, 1, 10, 50, 100])
    p.add_argument("--modes", nargs="*", default=["json", "video"])
    p.add_argument("--idle-trials", type=int, default=7)
    p.add_argument("--idle-wait", type=float, default=12)
    p.add_argument("--browser-seconds", type=float, default=20)
    p.add_argument("--no-table", action="store_true")
    p.add_argument("--no-quality", action="store_true")
    p.add_argument("--no-browser", action="store_true")
    p.add_argument("--no-hls", action="store_true")
    a = p.parse_args()
    with stack("--max-fps", "15", "--max-viewers", "200") as s:
        if not a.no_table:
            table(s, a)
        if not a.no_quality:
            quality(s, a.seconds)
        if not a.no_browser:
            t0 = s.publisher_t0()
            print("\nglass-to-glass in Chromium (publisher capture to the page's canvas):")
            for mode in ("video", "jpeg"):
                lat = browser_latency(s.pod.viewer_url, t0, mode, a.browser_seconds)
                goal = " (goal p50 < 300 ms, p99 < 600 ms)" if mode == "video" else ""
                print(f"  {mode}: {percentiles(lat)}{goal}")
    if not a.no_hls:
        hls = tempfile.TemporaryDirectory(prefix="haven-bench-hls-")
        with hls, stack("--max-fps", "15", "--hls", "true", "--hls-dir", hls.name) as s:
            t0 = s.publisher_t0()
            print("\nHLS (1 s segments, playlist of 6):")
            ages = segment_ages(s.pod.viewer_url, t0, a.browser_seconds)
            print(f"  newest picture's age when its segment is listed: {percentiles(ages)}")
            lat = browser_latency(s.pod.viewer_url, t0, "hls", a.browser_seconds)
            print(f"  hls.js in Chromium, capture to canvas: {percentiles(lat)}")


if __name__ == "__main__":
    main()

"""Viewers through the Ingress controller (Traefik) against straight to the Service:

- publisher-to-viewer latency of one probe viewer (p50, p99), read from the test pattern's
  counter in each JPEG (as bench/viewers.py does), at 1 and at 100 viewers, both ways;
- the controller's CPU (its container's process, from /proc) and the stream pod's, at 1 and
  100 viewers.

    .venv/bin/python bench/ingress.py [--seconds 20] [--viewers 1 100] [--max-width 1280]

It starts a local cluster of its own (no chart: a stream pod Deployment, its Service and an
Ingress, haven_localcluster/ingress.stream_pod_manifests), livekit-server and the synthetic
publisher (1280x720 at 30 fps); the pod sends JPEG at 15 fps. The viewers run in this process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import simplejpeg
import websockets
from common import cpu_seconds, print_table, publisher_t0

from haven_localcluster import ingress, toolchain
from haven_localcluster import testsignal as ts
from haven_localcluster.cluster import LocalCluster
from haven_localcluster.images import ensure_images
from haven_localcluster.livekit import LiveKitServer
from haven_localcluster.process import run_checked, stop
from haven_localcluster.publisher import spawn_publisher

HOST = "bench.haven.test"
ROOM = "bench"


def kubectl(cluster: LocalCluster, *args: str, input: str | None = None) -> str:
    binary = toolchain.ensure(["kubectl"])["kubectl"]
    return run_checked([str(binary), f"--kubeconfig={cluster.kubeconfig}", *args], input=input)


def container_pid(cluster: LocalCluster, image_part: str) -> int:
    """The host PID of the running container whose image names `image_part`."""
    listed = cluster.node.ctr("containers", "ls").stdout.splitlines()[1:]
    ids = {line.split()[0] for line in listed if image_part in line}
    for line in cluster.node.ctr("tasks", "ls").stdout.splitlines()[1:]:
        task, pid, state = line.split()[:3]
        if task in ids and state == "RUNNING":
            return int(pid)
    raise RuntimeError(f"no running container of {image_part}")


async def viewer(
    url: str, address: str | None, until: float, t0: float, latencies: list[float] | None
) -> int:
    """Read every message until `until` (connected to `address` when given, the Ingress);
    with `latencies`, decode each picture's counter. The pictures it got."""
    options = {"host": address, "port": 80} if address else {}
    pictures = 0
    async with websockets.connect(url, max_size=None, proxy=None, **options) as ws:
        while (left := until - time.time()) > 0:
            try:
                message = await asyncio.wait_for(ws.recv(), left)
            except TimeoutError:
                break
            received = time.time()
            if not isinstance(message, bytes) or message[0] != 1:
                continue
            pictures += 1
            if latencies is not None:
                luma = simplejpeg.decode_jpeg(message[13:], colorspace="GRAY")[:, :, 0]
                n = ts.decode_counter(np.ascontiguousarray(luma))
                if n is not None:
                    latencies.append(received - (t0 + n / ts.FPS))
    return pictures


async def run_viewers(
    url: str, address: str | None, n: int, seconds: float, t0: float
) -> tuple[list[float], float]:
    """n viewers (one of them the probe) for `seconds`; (probe latencies, mean fps a viewer)."""
    until = time.time() + seconds
    latencies: list[float] = []
    counts = await asyncio.gather(
        *(viewer(url, address, until, t0, latencies if i == 0 else None) for i in range(n))
    )
    return latencies, float(np.mean(counts)) / seconds


def measure(url, address, n, seconds, t0, pids) -> dict:
    c0 = {k: cpu_seconds(p) for k, p in pids.items()}
    w0 = time.monotonic()
    latencies, fps = asyncio.run(run_viewers(url, address, n, seconds, t0))
    wall = time.monotonic() - w0
    cores = {k: (cpu_seconds(p) - c0[k]) / wall for k, p in pids.items()}
    ms = np.array(latencies) * 1000
    p50, p99 = np.percentile(ms, [50, 99]) if len(ms) else (float("nan"),) * 2
    return {
        "path": "ingress" if address else "service",
        "viewers": n,
        "latency p50 ms": f"{p50:.0f}",
        "latency p99 ms": f"{p99:.0f}",
        "fps per viewer": f"{fps:.1f}",
        "controller CPU cores": f"{cores['traefik']:.3f}" if address else "-",
        "pod CPU cores": f"{cores['pod']:.3f}",
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--viewers", type=int, nargs="+", default=[1, 100])
    p.add_argument("--max-width", type=int, default=1280)
    a = p.parse_args()
    images = ensure_images(["pause", "coredns", "base", "recorder"])
    with tempfile.TemporaryDirectory(prefix="bench-ingress-") as tmp:
        cluster = LocalCluster(Path(tmp) / "cluster", images)
        cluster.start()
        lk = LiveKitServer(Path(tmp) / "livekit", cluster_address=cluster.network.host_ip)
        publisher = None
        try:
            lk.start()
            publisher = spawn_publisher(lk.url, lk.api_key, lk.api_secret, ROOM, Path(tmp))
            address = ingress.start(cluster)
            livekit = {"url": lk.cluster_url, "api_key": lk.api_key, "api_secret": lk.api_secret}
            manifests = ingress.stream_pod_manifests(
                images["recorder"].ref, livekit, ROOM, HOST, max_width=a.max_width
            )
            kubectl(cluster, "apply", "-n", "default", "-f", "-", input=json.dumps(
                {"apiVersion": "v1", "kind": "List", "items": manifests}
            ))  # fmt: skip
            kubectl(cluster, "rollout", "status", "deployment/viewers", "--timeout=120s")
            service = json.loads(kubectl(cluster, "get", "svc", "viewers", "-o", "json"))
            direct = f"ws://{service['spec']['clusterIP']}:8080/stream?mode=binary"
            through = f"ws://{HOST}/stream?mode=binary"
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # Traefik routes once it sees the endpoint
                try:
                    asyncio.run(run_viewers(through, address, 1, 1, 0))
                    break
                except (OSError, websockets.InvalidStatus):
                    time.sleep(1)
            t0 = publisher_t0(lk, ROOM)
            pids = {
                "traefik": container_pid(cluster, "haven/traefik"),
                "pod": container_pid(cluster, "haven/recorder"),
            }
            asyncio.run(run_viewers(direct, None, 1, 3, t0))  # warm: the pod subscribes
            rows = []
            for n in a.viewers:
                for url, addr in ((direct, None), (through, address)):
                    rows.append(measure(url, addr, n, a.seconds, t0, pids))
                    print(json.dumps(rows[-1]), flush=True)
            print_table(rows)
            print(
                f"(Traefik {toolchain.TRAEFIK_VERSION}; JPEG at 15 fps, max width {a.max_width}; "
                f"{a.seconds:.0f} s per row; viewers in this process)"
            )
        finally:
            if publisher:
                stop([publisher])
            lk.stop()
            cluster.stop()


if __name__ == "__main__":
    main()

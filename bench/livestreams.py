"""How the operator scales: apply N LiveStreams at once and time until every one has its
children and a status; the operator's RSS and CPU; apiserver requests per LiveStream (from
the apiserver's audit log, by the operator's ServiceAccount) and status writes per
LiveStream per minute with nothing changing; the p50 latency from `kubectl apply` to the
stream pod created, at idle; and drift repair: from `kubectl delete svc <name>-stream` to the
Service back, p50; and status writes per live LiveStream per minute with nothing changing
(livekit-server and the synthetic publisher, a few LiveStreams on one room).

    .venv/bin/python bench/livestreams.py --count 200 --count 1000

It starts a local cluster of its own and installs the chart as the demo does. The LiveStreams
are suspended (no pods), so the node's capacity is not what is measured.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import kubernetes
from common import cpu_seconds, print_table, rss_mb

from haven_localcluster import release, toolchain
from haven_localcluster.cluster import LocalCluster
from haven_localcluster.images import ensure_images
from haven_localcluster.livekit import LiveKitServer
from haven_localcluster.process import stop
from haven_localcluster.publisher import spawn_publisher

OPERATOR_USER = f"system:serviceaccount:{release.NAMESPACE}:haven-operator"
GROUP, VERSION = "streams.haven.dev", "v1alpha1"


def livestream(name: str, suspend: bool) -> dict:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "LiveStream",
        "metadata": {"name": name},
        "spec": {
            "source": {"pumpfun": {"mintId": "7GCihgDB8fe6KNjn2MYtkzZcRjQy3t9GHdC8uHYmW2hr"}},
            "suspend": suspend,
        },
    }


def operator_pid(cluster: LocalCluster) -> int:
    """The acting operator replica's process (the Lease holder's), as the host sees it inside
    its container (the standby only waits for the Lease)."""
    out = subprocess.run(["pgrep", "-f", "python -m haven_operator"], capture_output=True)
    pids = [int(p) for p in out.stdout.split()]
    holder = kubectl(
        cluster, "get", "lease", "-n", release.NAMESPACE, "haven-operator",
        "-o", "jsonpath={.spec.holderIdentity}",
    ).rsplit("_", 1)[0]  # fmt: skip
    for pid in pids:
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"HAVEN_POD_NAME={holder}".encode() in environ:
            return pid
    return max(pids)


def audit_counts(log: Path) -> Counter:
    """Requests by the operator, by verb, and status writes as "status-patch"; the replicas'
    Lease calls (leader election: a constant, not per LiveStream) only as "lease"."""
    counts: Counter = Counter()
    with open(log) as f:
        for line in f:
            event = json.loads(line)
            if event["user"]["username"] == OPERATOR_USER:
                ref = event.get("objectRef") or {}
                if ref.get("resource") == "leases":
                    counts["lease"] += 1
                    continue
                counts[event["verb"]] += 1
                if event["verb"] == "patch" and ref.get("subresource") == "status":
                    counts["status-patch"] += 1
    return counts


def kubectl(cluster: LocalCluster, *args: str, input: str | None = None) -> str:
    argv = [str(toolchain.binary_path("kubectl")), f"--kubeconfig={cluster.kubeconfig}", *args]
    return subprocess.run(argv, input=input, capture_output=True, text=True, check=True).stdout


def reconciled(custom: kubernetes.client.CustomObjectsApi, namespace: str, count: int) -> int:
    items = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "livestreams")["items"]
    return sum(
        1
        for ls in items
        if ls.get("status", {}).get("phase") == "Suspended"
        and ls["status"].get("observedGeneration") == ls["metadata"]["generation"]
    )


def children_complete(core, apps, namespace: str, count: int) -> bool:
    deployments = len(apps.list_namespaced_deployment(namespace).items)
    services = len(core.list_namespaced_service(namespace).items)
    claims = len(core.list_namespaced_persistent_volume_claim(namespace).items)
    selector = "app.kubernetes.io/name=haven-stream"
    secrets = len(core.list_namespaced_secret(namespace, label_selector=selector).items)
    return min(deployments, services, claims, secrets) >= count


def profile(pid: int, out: Path, seconds: int) -> subprocess.Popen | None:
    """py-spy (if on PATH) samples the operator while it works: collapsed stacks in `out`
    (one line per stack and its sample count; flamegraph.pl or speedscope read it)."""
    spy = shutil.which("py-spy")
    if spy is None:
        print("  --profile: py-spy is not on PATH; no profile", flush=True)
        return None
    argv = [spy, "record", "--pid", str(pid), "--duration", str(seconds), "--rate", "50",
            "--nonblocking", "--format", "raw", "-o", str(out)]  # fmt: skip
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def scale_run(cluster: LocalCluster, client, count: int, prof: Path | None = None) -> dict:
    namespace = f"bench-{count}"
    core, apps = kubernetes.client.CoreV1Api(client), kubernetes.client.AppsV1Api(client)
    custom = kubernetes.client.CustomObjectsApi(client)
    core.create_namespace({"metadata": {"name": namespace}})
    pid = operator_pid(cluster)
    before = audit_counts(cluster.control_plane.audit_log)
    cpu0 = cpu_seconds(pid)
    manifests = "\n---\n".join(json.dumps(livestream(f"s{i:04d}", True)) for i in range(count))
    spy = profile(pid, prof.with_stem(f"{prof.stem}-{count}"), 240) if prof else None
    t0 = time.monotonic()
    kubectl(cluster, "apply", "-n", namespace, "-f", "-", input=manifests)
    applied = time.monotonic() - t0
    children_at = status_at = None
    peak_rss = 0.0
    while time.monotonic() - t0 < 900 and not (children_at and status_at):
        peak_rss = max(peak_rss, rss_mb(pid))
        if not children_at and children_complete(core, apps, namespace, count):
            children_at = time.monotonic() - t0
        if not status_at and reconciled(custom, namespace, count) >= count:
            status_at = time.monotonic() - t0
        time.sleep(1)
    cpu = cpu_seconds(pid) - cpu0
    if spy is not None:
        spy.send_signal(signal.SIGINT)  # py-spy writes what it sampled on Ctrl-C
        spy.wait()
    time.sleep(10)  # settle
    after = audit_counts(cluster.control_plane.audit_log)

    def api(c: Counter) -> int:
        return sum(c.values()) - c["status-patch"] - c["lease"]

    requests = api(after) - api(before)
    by_verb = {v: after[v] - before[v] for v in after if after[v] - before[v] and v != "lease"}
    idle_cpu0, idle_t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(60)  # steady state: nothing changes
    idle_s = time.monotonic() - idle_t0
    idle_cores = (cpu_seconds(pid) - idle_cpu0) / idle_s
    steady = audit_counts(cluster.control_plane.audit_log)
    steady_requests = api(steady) - api(after)
    steady_writes = steady["status-patch"] - after["status-patch"]
    lease_per_min = (steady["lease"] - after["lease"]) / (idle_s / 60)
    result = {
        "LiveStreams": count,
        "apply s": round(applied, 1),
        "children s": round(children_at or float("nan"), 1),
        "status s": round(status_at or float("nan"), 1),
        "after apply s": round((status_at or float("nan")) - applied, 1),
        "operator CPU s": round(cpu, 1),
        "peak RSS MB": round(peak_rss, 1),
        "requests/LS": round(requests / count, 1),
        "idle cores": round(idle_cores, 3),
        "idle req/LS/min": round(steady_requests / count / (idle_s / 60), 3),
        "status writes/LS/min": round(steady_writes / count / (idle_s / 60), 3),
        "Lease req/min": round(lease_per_min, 1),
    }
    print(f"  requests by verb (until 10 s after status): {by_verb}", flush=True)
    core.delete_namespace(namespace)
    return result


def apply_to_pod_latency(cluster: LocalCluster, client, runs: int) -> list[float]:
    """Seconds from `kubectl apply` of a LiveStream to its pod's creation, seen by a watch."""
    namespace = "bench-latency"
    core = kubernetes.client.CoreV1Api(client)
    core.create_namespace({"metadata": {"name": namespace}})
    latencies = []
    for i in range(runs):
        name = f"lat{i}"
        seen = threading.Event()

        def watch(name: str = name, seen: threading.Event = seen) -> None:
            w = kubernetes.watch.Watch()
            selector = f"streams.haven.dev/livestream={name}"
            for _ in w.stream(core.list_namespaced_pod, namespace, label_selector=selector,
                              timeout_seconds=60):  # fmt: skip
                seen.set()
                w.stop()

        thread = threading.Thread(target=watch, daemon=True)
        thread.start()
        time.sleep(0.5)  # the watch is established
        t0 = time.monotonic()
        kubectl(cluster, "apply", "-n", namespace, "-f", "-",
                input=json.dumps(livestream(name, False)))  # fmt: skip
        if seen.wait(60):
            latencies.append(time.monotonic() - t0)
        kubectl(cluster, "delete", "-n", namespace, "ls", name, "--wait=false")
        time.sleep(2)
    core.delete_namespace(namespace)
    return latencies


def drift_repair(cluster: LocalCluster, client, runs: int) -> list[float]:
    """Seconds from deleting a LiveStream's Service to the operator's new one, seen by polling."""
    namespace = "bench-drift"
    core = kubernetes.client.CoreV1Api(client)
    core.create_namespace({"metadata": {"name": namespace}})
    kubectl(cluster, "apply", "-n", namespace, "-f", "-",
            input=json.dumps(livestream("drift", True)))  # fmt: skip

    def service_uid() -> str | None:
        try:
            return core.read_namespaced_service("drift-stream", namespace).metadata.uid
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:
                return None
            raise

    deadline = time.monotonic() + 120
    while service_uid() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    repairs = []
    for _ in range(runs):
        old = service_uid()
        t0 = time.monotonic()
        core.delete_namespaced_service("drift-stream", namespace)
        while time.monotonic() - t0 < 60:
            uid = service_uid()
            if uid is not None and uid != old:
                repairs.append(time.monotonic() - t0)
                break
            time.sleep(0.05)
        time.sleep(1)
    core.delete_namespace(namespace)
    return repairs


def live_status_writes(cluster: LocalCluster, client, workdir: Path, streams: int) -> float:
    """Status writes per live LiveStream per minute, over 2 minutes with nothing changing."""
    namespace = "bench-live"
    core = kubernetes.client.CoreV1Api(client)
    custom = kubernetes.client.CustomObjectsApi(client)
    server = LiveKitServer(workdir / "livekit", cluster_address=cluster.network.host_ip)
    server.start()
    publisher = spawn_publisher(
        server.url, server.api_key, server.api_secret, "bench", workdir, "synthetic-publisher"
    )
    try:
        core.create_namespace({"metadata": {"name": namespace}})
        core.create_namespaced_secret(
            namespace,
            {
                "metadata": {"name": "livekit"},
                "stringData": {"apiKey": server.api_key, "apiSecret": server.api_secret},
            },
        )
        for i in range(streams):
            ls = livestream(f"live{i}", False)
            ls["spec"]["source"] = {
                "livekit": {
                    "url": server.cluster_url,
                    "room": "bench",
                    "credentialsSecretRef": {"name": "livekit"},
                }
            }
            custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "livestreams", ls)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            items = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "livestreams")[
                "items"
            ]
            if sum(1 for i in items if i.get("status", {}).get("phase") == "Live") == streams:
                break
            time.sleep(1)
        else:
            print("  live status writes: the LiveStreams did not all go Live", flush=True)
            return float("nan")
        time.sleep(10)  # settle

        def writes() -> int:
            with open(cluster.control_plane.audit_log) as f:
                return sum(
                    1
                    for line in f
                    if (e := json.loads(line))["user"]["username"] == OPERATOR_USER
                    and e["verb"] == "patch"
                    and (e.get("objectRef") or {}).get("subresource") == "status"
                    and (e.get("objectRef") or {}).get("namespace") == namespace
                )

        w0, t0 = writes(), time.monotonic()
        time.sleep(120)
        return (writes() - w0) / streams / ((time.monotonic() - t0) / 60)
    finally:
        core.delete_namespace(namespace)
        stop([publisher])
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, action="append", help="LiveStreams per run")
    parser.add_argument("--latency-runs", type=int, default=10)
    parser.add_argument("--drift-runs", type=int, default=10)
    parser.add_argument("--live-streams", type=int, default=2, help="0 skips the live figure")
    parser.add_argument(
        "--profile", type=Path, help="py-spy samples of the operator per scale run (.txt)"
    )
    args = parser.parse_args()
    counts = args.count or [200, 1000]
    images = ensure_images()
    with tempfile.TemporaryDirectory(prefix="bench-ls-") as tmp:
        cluster = LocalCluster(Path(tmp), images, audit=True)
        cluster.start()
        try:
            release.install(cluster, release.values(images, "http://127.0.0.1:9", "ws://x", 5))
            client = kubernetes.config.new_client_from_config(config_file=str(cluster.kubeconfig))
            kubectl(cluster, "apply", "--server-side", "-f", str(release.CHART / "crds"))
            latencies = apply_to_pod_latency(cluster, client, args.latency_runs)
            print(
                f"apply -> pod created, {len(latencies)} runs at idle: "
                f"p50 {statistics.median(latencies) * 1000:.0f} ms, "
                f"max {max(latencies) * 1000:.0f} ms",
                flush=True,
            )
            repairs = drift_repair(cluster, client, args.drift_runs)
            print(
                f"drift repair (Service deleted -> recreated), {len(repairs)} of "
                f"{args.drift_runs} runs: p50 {statistics.median(repairs):.2f} s, "
                f"max {max(repairs):.2f} s",
                flush=True,
            )
            if args.live_streams:
                per_minute = live_status_writes(cluster, client, Path(tmp), args.live_streams)
                print(
                    f"status writes per live LiveStream per minute, nothing changing "
                    f"({args.live_streams} streams, 2 min): {per_minute:.2f} (goal <= 2)",
                    flush=True,
                )
            rows = [scale_run(cluster, client, n, args.profile) for n in counts]
            print_table(rows)
        finally:
            cluster.stop()


if __name__ == "__main__":
    main()

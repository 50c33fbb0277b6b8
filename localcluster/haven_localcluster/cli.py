"""`haven-localcluster`: build the toolchain and images, and start, inspect and stop the local
cluster.

haven-localcluster build            # build (or find cached) Go binaries
haven-localcluster images           # build (or find cached) the container images
haven-localcluster up               # cluster (control plane + node), livekit-server, S3, detached
haven-localcluster status
haven-localcluster down [--purge]
haven-localcluster demo             # the whole system in the foreground until Ctrl-C
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import yaml

from . import images as images_mod
from . import ingress, release, toolchain
from .cluster import LocalCluster
from .livekit import LiveKitServer
from .network import NodeNetwork
from .process import Proc, run_checked, stop
from .publisher import spawn_publisher
from .pumpfun import PumpFunStandIn
from .s3server import S3Server

STATE_FILE = "state.json"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DEMO_HOST = "demo.haven.test"  # the demo LiveStream's Ingress host (Traefik)


def default_state_dir() -> Path:
    return Path(os.environ.get("HAVEN_STATE_DIR", ".localcluster")).resolve()


def _start(state_dir: Path, *, detach: bool) -> tuple[LocalCluster, LiveKitServer]:
    built = images_mod.ensure_images()
    cluster = LocalCluster(state_dir, built, detach=detach)
    timings = cluster.start()
    print(
        f"cluster ready: apiserver /readyz after {timings['kube-apiserver']:.1f}s, node Ready "
        f"after {timings['node-ready']:.1f}s, DNS after {timings['dns']:.1f}s"
    )
    lk = LiveKitServer(state_dir, detach=detach, cluster_address=cluster.network.host_ip)
    try:
        lk.start()
    except BaseException:
        cluster.stop()
        raise
    print(f"livekit-server ready at {lk.url} (pods: {lk.cluster_url})")
    return cluster, lk


def _link_tools(state_dir: Path) -> Path:
    """`<state>/bin/kubectl` and `helm` point at the cached, versioned binaries."""
    bindir = state_dir / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    for name, path in toolchain.ensure(["kubectl", "helm"]).items():
        link = bindir / name
        link.unlink(missing_ok=True)
        link.symlink_to(path)
    return bindir


def _usage(state_dir: Path, cluster: LocalCluster, lk: LiveKitServer) -> str:
    return "\n".join(
        [
            f"  export KUBECONFIG={cluster.kubeconfig}",
            f"  export PATH={_link_tools(state_dir)}:$PATH   # kubectl and helm, pinned",
            "  kubectl get nodes; kubectl get pods -A",
            f"  logs: {cluster.log_dir}/<component>.log",
            f"  node network: {cluster.network.netns} (host {cluster.network.host_ip}, pods "
            f"{cluster.network.pod_cidr}, Services {cluster.network.service_cidr})",
            f"  LiveKit: {lk.url} (from pods {lk.cluster_url})  api key {lk.api_key}  "
            f"secret {lk.api_secret}",
        ]
    )


def _proc_record(group: str, procs: list[Proc]) -> list[dict]:
    return [
        {"group": group, "name": p.name, "pid": p.pid, "argv": p.argv, "log": str(p.log)}
        for p in procs
    ]


def cmd_up(args: argparse.Namespace) -> int:
    state = args.state_dir / STATE_FILE
    if state.exists():
        print(f"a cluster is already recorded in {state}; run `down` first", file=sys.stderr)
        return 1
    cluster, lk = _start(args.state_dir, detach=True)
    assert lk.proc is not None and cluster.storage.proc is not None
    s3 = S3Server(args.state_dir / "s3", detach=True, cluster_address=cluster.network.host_ip)
    try:
        s3.start()
        s3.bucket("recordings")
    except BaseException:
        s3.stop()
        lk.stop()
        cluster.stop()
        raise
    assert s3.proc is not None
    record = {
        "server": cluster.server,
        "kubeconfig": str(cluster.kubeconfig),
        "network": cluster.network.index,
        "livekit": {"url": lk.url, "apiKey": lk.api_key, "apiSecret": lk.api_secret},
        "s3": {
            "endpoint": s3.endpoint,
            "clusterEndpoint": s3.cluster_endpoint,
            "bucket": "recordings",
            "accessKeyId": s3.access_key_id,
            "secretAccessKey": s3.secret_access_key,
        },
        "procs": _proc_record("control-plane", cluster.control_plane.procs)
        + _proc_record("node", cluster.node.procs)
        + _proc_record("storage", [cluster.storage.proc])
        + _proc_record("livekit", [lk.proc])
        + _proc_record("s3", [s3.proc]),
    }
    state.write_text(json.dumps(record, indent=2))
    print(_usage(args.state_dir, cluster, lk))
    print(
        f"  S3 (versitygw): {s3.endpoint} (from pods {s3.cluster_endpoint})  bucket recordings  "
        f"access key {s3.access_key_id}  secret {s3.secret_access_key}"
    )
    return 0


def _recorded(state_dir: Path) -> tuple[dict, list[tuple[str, Proc]]]:
    record = json.loads((state_dir / STATE_FILE).read_text())
    procs = [
        (p["group"], Proc(p["name"], p["pid"], p["argv"], Path(p["log"]))) for p in record["procs"]
    ]
    return record, procs


def cmd_status(args: argparse.Namespace) -> int:
    if not (args.state_dir / STATE_FILE).exists():
        print("no local cluster is running")
        return 1
    record, procs = _recorded(args.state_dir)
    for _, p in procs:
        print(f"{p.name:26} pid {p.pid:<8} {'running' if p.alive() else 'STOPPED'}   log {p.log}")
    print(f"apiserver {record['server']}  kubeconfig {record['kubeconfig']}")
    print(f"livekit   {record['livekit']['url']}")
    if "s3" in record:
        print(f"s3        {record['s3']['endpoint']}  bucket {record['s3']['bucket']}")
    return 0 if all(p.alive() for _, p in procs) else 1


def cmd_down(args: argparse.Namespace) -> int:
    if (args.state_dir / STATE_FILE).exists():
        record, procs = _recorded(args.state_dir)
        stop([p for group, p in procs if group in ("livekit", "s3")])
        cluster = LocalCluster(args.state_dir, {}, network=NodeNetwork(record["network"]))
        cluster.control_plane.procs = [p for g, p in procs if g == "control-plane"]
        cluster.node.procs = [p for g, p in procs if g == "node"]
        cluster.storage.proc = next((p for g, p in procs if g == "storage"), None)
        cluster.stop()  # also removes the node's containers, mounts and namespaces
        (args.state_dir / STATE_FILE).unlink()
        print(f"stopped {len(procs)} processes and the node's containers")
    if args.purge and args.state_dir.exists():
        shutil.rmtree(args.state_dir)
        print(f"removed {args.state_dir}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Foreground: the cluster, livekit-server with the synthetic publisher, a pump.fun stand-in,
    the operator installed by Helm, and the examples applied, until Ctrl-C."""
    if args.state_dir.exists():  # a fresh cluster each demo
        for sub in ("etcd", "node", "pki"):
            shutil.rmtree(args.state_dir / sub, ignore_errors=True)
    done = threading.Event()
    # Ctrl-C and SIGTERM end the demo; a second one during the clean-up does not cut it short.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    cluster, lk = _start(args.state_dir, detach=False)
    pub: Proc | None = None
    pumpfun = PumpFunStandIn(lk.api_key, lk.api_secret, host=cluster.network.host_ip)
    try:
        stream = yaml.safe_load((EXAMPLES / "livestream.yaml").read_text())
        mint = stream["spec"]["source"]["pumpfun"]["mintId"]
        room = f"pump-{mint[:8]}"
        pub = spawn_publisher(lk.url, lk.api_key, lk.api_secret, room, cluster.log_dir)
        pumpfun.live[mint] = room  # the stand-in says this mint is live, in that room
        pumpfun.start()
        release.install(
            cluster, release.values(cluster.images, pumpfun.url, lk.cluster_url, status_interval=2)
        )
        print(f"operator installed by Helm (release {release.RELEASE} in {release.NAMESPACE})")
        ingress_ip = ingress.start(cluster)
        print(f"Ingress controller Traefik (IngressClass {ingress.CLASS}) at {ingress_ip}:80/443")
        _show_demo(args.state_dir, cluster, lk, stream, done, ingress_ip)
        print("Press Ctrl-C to stop.", flush=True)
        procs = [*cluster.control_plane.procs, *cluster.node.procs, lk.proc, pub]
        while not done.is_set() and all(p.alive() for p in procs if p):
            done.wait(1)
    finally:
        if pub:
            stop([pub])
        pumpfun.stop()
        lk.stop()
        cluster.stop()
    return 0


def _show_demo(
    state_dir: Path,
    cluster: LocalCluster,
    lk: LiveKitServer,
    stream: dict,
    done: threading.Event,
    ingress_ip: str,
) -> None:
    kubectl = [str(toolchain.binary_path("kubectl")), f"--kubeconfig={cluster.kubeconfig}"]
    name = stream["metadata"]["name"]
    # The example as it is, plus an Ingress for viewers through the local Traefik.
    stream = {**stream, "spec": {**stream["spec"], "viewer": {**stream["spec"].get("viewer", {})}}}
    stream["spec"]["viewer"]["ingress"] = {"host": DEMO_HOST, "className": ingress.CLASS}
    run_checked([*kubectl, "apply", "-f", "-"], json.dumps(stream))
    run_checked(
        [*kubectl, "wait", f"ls/{name}", "--for=condition=Ready", "--timeout=180s"], timeout=200
    )
    run_checked([*kubectl, "apply", "-f", str(EXAMPLES / "recording.yaml")])
    recording = yaml.safe_load((EXAMPLES / "recording.yaml").read_text())["metadata"]["name"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not done.is_set():
        phase = run_checked([*kubectl, "get", "rec", recording, "-o=jsonpath={.status.phase}"])
        if phase == "Recording":
            break
        time.sleep(1)
    print(run_checked([*kubectl, "get", "ls,rec", "-o", "wide"]))

    def get(*what: str) -> dict:
        return json.loads(run_checked([*kubectl, "get", *what, "-o", "json"]))

    address = f"{get('svc', f'{name}-stream')['spec']['clusterIP']}:8080"
    pv = get("pv", get("pvc", f"{name}-recordings")["spec"]["volumeName"])
    gateway = get("svc", "-n", release.NAMESPACE, release.GATEWAY_SERVICE)
    print(_usage(state_dir, cluster, lk))
    viewer_url = get("ls", name).get("status", {}).get("viewerURL", f"http://{DEMO_HOST}/")
    print(f"  viewer page:  {viewer_url}   (the Ingress, through Traefik at {ingress_ip}; this")
    print("                host resolves nothing: give the address to the client, e.g.")
    print(f"                chromium --host-resolver-rules='MAP *.haven.test {ingress_ip}' "
          f"{viewer_url}")  # fmt: skip
    print(f"                curl --resolve {DEMO_HOST}:80:{ingress_ip} {viewer_url}")
    print(f"                or the Service directly: http://{address}/ (its ClusterIP)")
    print(f"  WebSocket:    ws://{DEMO_HOST}/stream (Ingress), ws://{address}/stream (Service)")
    print(f"  recording:    {pv['spec']['hostPath']['path']}/{recording}/ on the node's disk")
    print(f"                (PVC {name}-recordings; stop it: kubectl patch rec {recording} "
          """--type=merge -p '{"spec":{"stopped":true}}')""")  # fmt: skip
    print(f"  player API:   http://{gateway['spec']['clusterIP']}/docs   (bearer token: kubectl "
          f"get secret -n {release.NAMESPACE} {release.GATEWAY_SECRET} "
          "-o jsonpath='{.data.token}' | base64 -d)")  # fmt: skip
    print(f"                and through its Ingress: http://{release.GATEWAY_INGRESS_HOST}/docs")


def cmd_images(args: argparse.Namespace) -> int:
    return images_mod.main(args.names)


def cmd_build(args: argparse.Namespace) -> int:
    started = time.monotonic()
    names = args.tools or list(toolchain.DEFAULT_TOOLS)
    unknown = set(names) - set(toolchain.TOOLS)
    if unknown:
        print(
            f"unknown tools {sorted(unknown)}; known: {', '.join(toolchain.TOOLS)}", file=sys.stderr
        )
        return 2
    for name, path in toolchain.ensure(names).items():
        print(f"{name:26} {path}")
    print(f"toolchain ready in {time.monotonic() - started:.1f}s")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="haven-localcluster", description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", type=Path, default=default_state_dir())
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build or find the cached Go binaries")
    build.add_argument("tools", nargs="*", metavar="TOOL", help=", ".join(toolchain.TOOLS))
    sub.add_parser("up", help="start the cluster in the background")
    images = sub.add_parser("images", help="build or find the cached container images")
    images.add_argument("names", nargs="*", metavar="IMAGE")
    sub.add_parser("status", help="show the cluster's processes")
    down = sub.add_parser("down", help="stop the cluster")
    down.add_argument("--purge", action="store_true", help="also delete its state directory")
    sub.add_parser("demo", help="run everything in the foreground until Ctrl-C")
    args = parser.parse_args(argv)
    handlers = {
        "build": cmd_build,
        "images": cmd_images,
        "up": cmd_up,
        "status": cmd_status,
        "down": cmd_down,
        "demo": cmd_demo,
    }
    return handlers[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())

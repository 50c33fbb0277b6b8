"""`haven-localcluster`: build the toolchain, and start, inspect and stop the local cluster.

haven-localcluster build            # build (or find cached) Go binaries
haven-localcluster up               # control plane + livekit-server, in the background
haven-localcluster status
haven-localcluster down [--purge]
haven-localcluster demo             # everything in the foreground until Ctrl-C
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

from . import toolchain
from .controlplane import ControlPlane
from .livekit import LiveKitServer
from .process import Proc, stop
from .publisher import spawn_publisher
from .streampod import StreamPod, livekit_args

STATE_FILE = "state.json"


def default_state_dir() -> Path:
    return Path(os.environ.get("HAVEN_STATE_DIR", ".localcluster")).resolve()


def _start(
    state_dir: Path, *, detach: bool, livekit: bool
) -> tuple[ControlPlane, LiveKitServer | None]:
    cp = ControlPlane(state_dir, detach=detach)
    timings = cp.start()
    print(f"control plane ready: /readyz after {timings['kube-apiserver']:.1f}s, "
          f"all components healthy after {max(timings.values()):.1f}s")  # fmt: skip
    lk = None
    if livekit:
        lk = LiveKitServer(state_dir, detach=detach)
        try:
            lk.start()
        except BaseException:
            cp.stop()
            raise
        print(f"livekit-server ready at {lk.url} after {lk.timings['livekit-server']:.1f}s")
    return cp, lk


def _link_tools(state_dir: Path) -> Path:
    """`<state>/bin/kubectl` and `helm` point at the cached, versioned binaries."""
    bindir = state_dir / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    for name, path in toolchain.ensure(["kubectl", "helm"]).items():
        link = bindir / name
        link.unlink(missing_ok=True)
        link.symlink_to(path)
    return bindir


def _usage(state_dir: Path, cp: ControlPlane, lk: LiveKitServer | None) -> str:
    lines = [
        f"  export KUBECONFIG={cp.kubeconfig}",
        f"  export PATH={_link_tools(state_dir)}:$PATH   # kubectl and helm, pinned",
        "  kubectl get --raw /readyz; kubectl get ns",
        f"  logs: {cp.log_dir}/<component>.log",
    ]
    if lk:
        lines.append(f"  LiveKit: {lk.url}  api key {lk.api_key}  secret {lk.api_secret}")
    return "\n".join(lines)


def cmd_up(args: argparse.Namespace) -> int:
    state = args.state_dir / STATE_FILE
    if state.exists():
        print(f"a cluster is already recorded in {state}; run `down` first", file=sys.stderr)
        return 1
    cp, lk = _start(args.state_dir, detach=True, livekit=not args.no_livekit)
    procs = cp.procs + ([lk.proc] if lk and lk.proc else [])
    record = {
        "server": cp.server,
        "kubeconfig": str(cp.kubeconfig),
        "livekit": {"url": lk.url, "apiKey": lk.api_key, "apiSecret": lk.api_secret}
        if lk
        else None,
        "procs": [{"name": p.name, "pid": p.pid, "argv": p.argv, "log": str(p.log)} for p in procs],
    }
    state.write_text(json.dumps(record, indent=2))
    print(_usage(args.state_dir, cp, lk))
    return 0


def _recorded(state_dir: Path) -> tuple[dict, list[Proc]]:
    record = json.loads((state_dir / STATE_FILE).read_text())
    procs = [Proc(p["name"], p["pid"], p["argv"], Path(p["log"])) for p in record["procs"]]
    return record, procs


def cmd_status(args: argparse.Namespace) -> int:
    if not (args.state_dir / STATE_FILE).exists():
        print("no local cluster is running")
        return 1
    record, procs = _recorded(args.state_dir)
    for p in procs:
        print(f"{p.name:26} pid {p.pid:<8} {'running' if p.alive() else 'STOPPED'}   log {p.log}")
    print(f"apiserver {record['server']}  kubeconfig {record['kubeconfig']}")
    if record["livekit"]:
        print(f"livekit   {record['livekit']['url']}")
    return 0 if all(p.alive() for p in procs) else 1


def cmd_down(args: argparse.Namespace) -> int:
    if (args.state_dir / STATE_FILE).exists():
        _, procs = _recorded(args.state_dir)
        stop(list(reversed(procs)))
        (args.state_dir / STATE_FILE).unlink()
        print(f"stopped {len(procs)} processes")
    if args.purge and args.state_dir.exists():
        shutil.rmtree(args.state_dir)
        print(f"removed {args.state_dir}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Foreground: control plane, livekit-server, the synthetic publisher and a stream pod
    watching it, until Ctrl-C."""
    if args.state_dir.exists():
        shutil.rmtree(args.state_dir / "etcd", ignore_errors=True)  # a fresh cluster each demo
    cp, lk = _start(args.state_dir, detach=False, livekit=True)
    assert lk is not None
    room = "demo"
    pub = spawn_publisher(lk.url, lk.api_key, lk.api_secret, room, cp.log_dir)
    pod = StreamPod(livekit_args(lk, room), args.state_dir / "recordings", cp.log_dir)
    try:
        pod.start()
    except BaseException:
        stop([pub])
        lk.stop()
        cp.stop()
        raise
    print(_usage(args.state_dir, cp, lk))
    print(f"  synthetic publisher: room '{room}' on {lk.url} (log {pub.log})")
    print(f"  stream pod: open {pod.url}/ to watch; WebSocket {pod.ws_url}")
    print(f"  record:  curl -XPOST {pod.url}/recordings -H 'Authorization: Bearer {pod.token}' \\")
    body = '{"name": "demo", "format": "av1"}'
    print(f"             -H 'content-type: application/json' -d '{body}'")
    print(f"  recordings land in {pod.recordings}/<name>/")
    print("Press Ctrl-C to stop.")
    done = threading.Event()
    # Ctrl-C and SIGTERM end the wait; a second one during the clean-up does not cut it short.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    procs = [*cp.procs, lk.proc, pub, pod.proc]
    try:
        while not done.is_set() and all(p.alive() for p in procs if p):
            done.wait(1)
    finally:
        pod.stop()
        stop([pub])
        lk.stop()
        cp.stop()
    return 0


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
    up = sub.add_parser("up", help="start the cluster in the background")
    up.add_argument("--no-livekit", action="store_true")
    sub.add_parser("status", help="show the cluster's processes")
    down = sub.add_parser("down", help="stop the cluster")
    down.add_argument("--purge", action="store_true", help="also delete its state directory")
    sub.add_parser("demo", help="run everything in the foreground until Ctrl-C")
    args = parser.parse_args(argv)
    handlers = {
        "build": cmd_build,
        "up": cmd_up,
        "status": cmd_status,
        "down": cmd_down,
        "demo": cmd_demo,
    }
    return handlers[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())

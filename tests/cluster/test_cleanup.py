"""Every process the local cluster starts stops with it: on Ctrl-C and when its parent is
killed outright."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

from haven_localcluster.node import containers

START_AND_WAIT = """
import json, sys, time
from pathlib import Path
from haven_localcluster.controlplane import ControlPlane
cp = ControlPlane(Path(sys.argv[1]))
cp.start()
print(json.dumps([p.pid for p in cp.procs]), flush=True)
time.sleep(600)
"""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_all_gone(pids: list[int], timeout: float = 20) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.1)
    return [p for p in pids if alive(p)]


def test_sigkill_of_the_parent_stops_the_control_plane(tmp_path):
    parent = subprocess.Popen(
        [sys.executable, "-c", START_AND_WAIT, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    pids = json.loads(parent.stdout.readline())
    assert len(pids) == 4 and all(alive(p) for p in pids)
    parent.kill()
    parent.wait()
    assert wait_all_gone(pids) == []


def test_the_demo_runs_the_examples_and_ctrl_c_leaves_nothing_behind(tmp_path):
    """`make demo`: the cluster, LiveKit with the publisher, the operator by Helm, and the
    examples applied, until Ctrl-C; then every process, container and namespace is gone."""
    demo = subprocess.Popen(
        [sys.executable, "-m", "haven_localcluster", "--state-dir", str(tmp_path), "demo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        _check_the_running_demo(demo, tmp_path)
    finally:
        if demo.poll() is None:  # whatever failed, the demo must not outlive the test
            os.killpg(demo.pid, signal.SIGINT)
            demo.wait(timeout=120)


def _check_the_running_demo(demo: subprocess.Popen, tmp_path: Path) -> None:
    output = []
    for line in demo.stdout:
        output.append(line)
        if "Ctrl-C" in line:
            break
    text = "".join(output)
    assert demo.poll() is None, text
    children = [
        int(p) for p in Path(f"/proc/{demo.pid}/task/{demo.pid}/children").read_text().split()
    ]
    # control plane 4, node 3 (containerd, kubelet, kube-proxy), provisioner, livekit, publisher
    assert len(children) == 10, (children, text)
    ls_line = next(line for line in output if line.startswith("livestream.streams.haven.dev/"))
    assert "Live" in ls_line, text
    rec_line = next(line for line in output if line.startswith("recording.streams.haven.dev/"))
    assert "Recording" in rec_line, text
    # The viewer page through the Ingress (its host resolved to Traefik by hand, as the demo
    # tells a user to), and from the Service directly.
    page = urllib.parse.urlsplit(next(line for line in output if "viewer page:" in line).split()[2])
    traefik = next(line for line in output if line.startswith("Ingress controller Traefik"))
    traefik_ip = traefik.split(" at ")[1].split(":")[0]
    through_ingress = urllib.request.Request(
        page._replace(netloc=traefik_ip).geturl(), headers={"Host": page.netloc}
    )
    service = next(line for line in output if "or the Service directly:" in line).split()[4]
    for request in (through_ingress, service):
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert resp.status == 200 and b"<canvas" in resp.read(), request
    netns = next(line for line in output if "node network:" in line).split()[2]
    socket = tmp_path / "node" / "containerd" / "containerd.sock"
    pod_netns = {c.netns for c in containers(socket) if c.netns}
    assert len(pod_netns) >= 3, pod_netns  # CoreDNS, the operator, the stream pod

    os.killpg(demo.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    assert demo.wait(timeout=120) == 0
    assert wait_all_gone(children) == []
    leftovers = subprocess.run(["pgrep", "-af", str(tmp_path)], capture_output=True, text=True)
    assert leftovers.stdout == ""  # no containerd shim, so no container of the demo's node
    assert str(tmp_path) not in Path("/proc/self/mountinfo").read_text()
    assert not Path(f"/run/netns/{netns}").exists()
    assert not [p for p in pod_netns if Path(p).exists()]
    # The node's cgroup root, in every hierarchy (cgroup v1) or the unified one (v2).
    cgroups = [Path("/sys/fs/cgroup", c, netns) for c in ("memory", "cpu", "pids", "")]
    assert (
        Path("/sys/fs/cgroup/memory").exists() or Path("/sys/fs/cgroup/cgroup.controllers").exists()
    )
    assert not [p for p in cgroups if p.exists()], cgroups

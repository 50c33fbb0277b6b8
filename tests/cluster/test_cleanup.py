"""Every process the local cluster starts stops with it: on Ctrl-C and when its parent is
killed outright."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

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


def test_ctrl_c_stops_the_demo_and_everything_it_started(tmp_path):
    demo = subprocess.Popen(
        [sys.executable, "-m", "haven_localcluster", "--state-dir", str(tmp_path), "demo"],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    output = []
    for line in demo.stdout:
        output.append(line)
        if "Ctrl-C" in line:
            break
    children = [
        int(p) for p in Path(f"/proc/{demo.pid}/task/{demo.pid}/children").read_text().split()
    ]
    # 4 control-plane processes, livekit-server, the publisher and the stream pod
    assert len(children) == 7, (children, "".join(output))
    assert any("open http://127.0.0.1:" in line for line in output), output
    os.killpg(demo.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    assert demo.wait(timeout=30) == 0
    assert wait_all_gone(children) == []

"""Starting, watching and stopping the local cluster's server processes."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_udp_port_range(size: int) -> int:
    """First port of `size` consecutive UDP ports free on 127.0.0.1."""
    for _ in range(50):
        start = free_port()
        socks = []
        try:
            for port in range(start, start + size):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return start
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no {size} consecutive free UDP ports")


def _die_with_parent() -> None:
    # The child is killed when the process that started it dies, even by SIGKILL. SIGKILL,
    # not SIGTERM: an apiserver whose etcd died with it can hang in its graceful shutdown.
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def normal_scheduling() -> None:
    """Put the calling thread under the normal time-sharing policy. The livekit SDK's WebRTC
    makes threads of a process that uses it in-process real-time (SCHED_FIFO 99) where it
    may, as root here, the calling thread among them; a child inherits the policy of the
    thread that starts it, and a real-time apiserver, containerd or pod starves everything
    else on two cores (a real-time `ctr images import` ran past its 300 s limit)."""
    os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


def _child_of_this_process() -> None:
    normal_scheduling()
    _die_with_parent()


@dataclass
class Proc:
    name: str
    pid: int
    argv: list[str]
    log: Path
    popen: subprocess.Popen | None = None

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        try:
            cmdline = Path(f"/proc/{self.pid}/cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            return False
        return cmdline.decode() == self.argv[0]  # the pid was not reused by another program

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def spawn(
    name: str,
    argv: Sequence[str],
    log_dir: Path,
    *,
    detach: bool = False,
    env: dict[str, str] | None = None,
) -> Proc:
    """Start `argv` with output to `<log_dir>/<name>.log`.

    A detached process outlives this one (for `up`); otherwise it dies with it.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}.log"
    with open(log, "ab") as out:
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C in the terminal reaches us, and we stop them
            preexec_fn=normal_scheduling if detach else _child_of_this_process,
            env={**os.environ, **(env or {})},
        )
    return Proc(name, popen.pid, list(argv), log, popen)


def stop(procs: Sequence[Proc], timeout: float = 10) -> None:
    """SIGTERM each process (in the given order), then SIGKILL what remains after `timeout`."""
    for proc in procs:
        if proc.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in procs:
        while proc.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if proc.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        if proc.popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(timeout=5)


def wait_http(
    url: str,
    proc: Proc,
    *,
    timeout: float = 60,
    ssl_context: ssl.SSLContext | None = None,
    headers: dict[str, str] | None = None,
) -> None:
    """Poll `url` until it answers 200; fail early with the log tail if `proc` exits."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited while starting:\n{proc.log_tail()}")
        try:
            req = urllib.request.Request(url, headers=headers or {})
            with urllib.request.urlopen(req, timeout=2, context=ssl_context) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.1)
    raise TimeoutError(
        f"{proc.name} not ready at {url} after {timeout}s ({last}):\n{proc.log_tail()}"
    )


def run(
    argv: Sequence[str], *, input: str | None = None, check: bool = True, timeout: float = 180
) -> subprocess.CompletedProcess:
    """Run a short command and capture its output; with `check`, a failure is a RuntimeError
    that carries its stderr."""
    proc = subprocess.run(
        list(argv), input=input, capture_output=True, text=True, timeout=timeout,
        preexec_fn=normal_scheduling,
    )  # fmt: skip
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])} ... failed:\n{proc.stderr.strip()}")
    return proc


def run_checked(argv: Sequence[str], input: str | None = None, timeout: float = 180) -> str:
    """Run a short command; its stdout, or a RuntimeError that carries its stderr."""
    return run(argv, input=input, timeout=timeout).stdout

"""The operator as a real process against the real local control plane."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from haven_localcluster.controlplane import ControlPlane
from haven_localcluster.process import Proc, free_port, spawn, stop

CRDS = Path(__file__).resolve().parents[2] / "crds"


@pytest.fixture(scope="session")
def crds(kubectl):
    kubectl("apply", "--server-side", "-f", str(CRDS))
    for name in ("livestreams", "recordings"):
        kubectl(
            "wait", "--for=condition=Established", f"crd/{name}.streams.haven.dev", "--timeout=60s"
        )


class Operator:
    def __init__(self, cluster: ControlPlane, log_dir: Path, env: dict[str, str]) -> None:
        self.cluster, self.log_dir, self.env = cluster, log_dir, env
        self.proc: Proc | None = None
        self.health = 0
        self.starts = 0

    def start(self) -> Operator:
        self.health = free_port()
        self.starts += 1
        argv = [
            sys.executable, "-m", "haven_operator", "--log-format", "plain",
            "--liveness", f"http://127.0.0.1:{self.health}/healthz",
        ]  # fmt: skip
        env = {
            "KUBECONFIG": str(self.cluster.kubeconfig),
            "HAVEN_STATUS_INTERVAL": "1",
            "HAVEN_METRICS_PORT": "0",
            "HAVEN_POD_ADDRESS": "pod-ip",
            **self.env,
        }
        self.proc = spawn(f"operator-{self.starts}", argv, self.log_dir, env=env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.alive(), self.proc.log_tail()
            try:
                if (
                    httpx.get(f"http://127.0.0.1:{self.health}/healthz", timeout=1).status_code
                    == 200
                ):
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"operator not healthy:\n{self.proc.log_tail()}")

    def stop(self) -> None:
        if self.proc is not None:
            stop([self.proc])
            self.proc = None

    def kill(self) -> None:
        assert self.proc is not None and self.proc.popen is not None
        self.proc.popen.kill()
        self.proc.popen.wait()
        self.proc = None


@pytest.fixture(scope="session")
def operator(cluster, crds, tmp_path_factory) -> Iterator[Operator]:
    op = Operator(cluster, tmp_path_factory.mktemp("operator"), {})
    op.start()
    yield op
    op.stop()

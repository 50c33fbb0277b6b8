"""The project's Helm release as users run it: the operator (and the gateway) installed by the
chart into the local cluster, from the images built from the Dockerfiles, with the chart's RBAC
and their ServiceAccount tokens; and the pump.fun stand-in where pods reach it."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from haven_localcluster import release
from haven_localcluster.pumpfun import PumpFunStandIn

CRDS = Path(__file__).resolve().parents[1] / "crds"
OPERATOR_NAMESPACE = release.NAMESPACE
SELECTOR = "app.kubernetes.io/name=haven-operator"


@pytest.fixture(scope="session")
def crds(kubectl):
    kubectl("apply", "--server-side", "-f", str(CRDS))
    for name in ("livestreams", "recordings"):
        kubectl(
            "wait", "--for=condition=Established", f"crd/{name}.streams.haven.dev", "--timeout=60s"
        )


@pytest.fixture(scope="session")
def pumpfun(livekit_server, node_network) -> Iterator[PumpFunStandIn]:
    """The pump.fun join API stand-in, where pods reach it."""
    server = PumpFunStandIn(
        livekit_server.api_key, livekit_server.api_secret, host=node_network.host_ip
    )
    server.start()
    yield server
    server.stop()


class Operator:
    """The chart's operator Deployment; `kill` deletes its pods outright, `start` waits for a
    Ready replacement to hold the Lease (to act)."""

    def __init__(self, cluster, kubectl) -> None:
        self.cluster, self.kubectl = cluster, kubectl

    def pods(self) -> list[dict]:
        out = self.kubectl("get", "pods", "-n", OPERATOR_NAMESPACE, "-l", SELECTOR, "-o", "json")
        return json.loads(out.stdout)["items"]

    def start(self, timeout: float = 120) -> Operator:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready = [
                p
                for p in self.pods()
                if not p["metadata"].get("deletionTimestamp")
                and any(
                    c["type"] == "Ready" and c["status"] == "True"
                    for c in p.get("status", {}).get("conditions", [])
                )
            ]
            if ready and self.leader() in {p["metadata"]["name"] for p in ready}:
                return self
            time.sleep(0.5)
        raise TimeoutError(f"no Ready operator pod holds the Lease:\n{self.logs()}")

    def leader(self) -> str | None:
        """The pod holding the operator's Lease (leader election), if any."""
        out = self.kubectl(
            "get", "lease", "-n", OPERATOR_NAMESPACE, "haven-operator", "-o", "json", check=False
        )
        if out.returncode != 0:
            return None
        identity = (json.loads(out.stdout).get("spec") or {}).get("holderIdentity")
        return identity.rsplit("_", 1)[0] if identity else None

    def kill(self) -> None:
        self.kubectl(
            "delete", "pods", "-n", OPERATOR_NAMESPACE, "-l", SELECTOR,
            "--grace-period=0", "--force", "--wait=false",
        )  # fmt: skip

    def logs(self) -> str:
        """Every line the operator pods have logged (a label selector alone gives 10)."""
        result = self.kubectl(
            "logs", "-n", OPERATOR_NAMESPACE, "-l", SELECTOR, "--tail=-1", check=False
        )
        return result.stdout + result.stderr


@pytest.fixture(scope="session")
def operator(cluster, kubectl, crds, images, pumpfun, livekit_server) -> Iterator[Operator]:
    release.install(
        cluster, release.values(images, pumpfun.url, livekit_server.cluster_url, status_interval=1)
    )
    op = Operator(cluster, kubectl).start()
    yield op
    release.uninstall(cluster)

"""The gateway as the chart installs it (beside the operator), reached through its Service."""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import pytest

from haven_localcluster import release

BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


@dataclass
class Gateway:
    url: str
    token: str

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://", 1)

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token or self.token}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=120)


@pytest.fixture(scope="session")
def gateway(operator, kubectl) -> Gateway:
    def get(kind: str, name: str) -> dict:
        return json.loads(kubectl("get", kind, "-n", release.NAMESPACE, name, "-o", "json").stdout)

    kubectl(
        "rollout", "status", "-n", release.NAMESPACE, f"deploy/{release.GATEWAY_SERVICE}",
        "--timeout=120s",
    )  # fmt: skip
    deployment = get("deploy", release.GATEWAY_SERVICE)
    assert deployment["status"]["readyReplicas"] == 2  # stateless: two replicas, one API
    service = get("svc", release.GATEWAY_SERVICE)
    token = base64.b64decode(get("secret", release.GATEWAY_SECRET)["data"]["token"]).decode()
    port = service["spec"]["ports"][0]["port"]
    return Gateway(f"http://{service['spec']['clusterIP']}:{port}", token)


@pytest.fixture
def live_mint(pumpfun, start_publisher) -> Callable[[], str]:
    """A new mint that the pump.fun stand-in says is live, with a publisher in its room."""

    def make() -> str:
        mint = "".join(random.choices(BASE58, k=44))
        room = f"pump-{mint[:8]}"
        start_publisher(room)
        pumpfun.live[mint] = room
        return mint

    return make

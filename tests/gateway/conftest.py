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
    service = json.loads(
        kubectl("get", "svc", "-n", release.NAMESPACE, release.GATEWAY_SERVICE, "-o", "json").stdout
    )
    secret = json.loads(
        kubectl(
            "get", "secret", "-n", release.NAMESPACE, release.GATEWAY_SECRET, "-o", "json"
        ).stdout
    )
    kubectl(
        "rollout", "status", "-n", release.NAMESPACE, f"deploy/{release.GATEWAY_SERVICE}",
        "--timeout=120s",
    )  # fmt: skip
    port = service["spec"]["ports"][0]["port"]
    token = base64.b64decode(secret["data"]["token"]).decode()
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

"""The project's Helm release on the local cluster: the chart in charts/haven-streams with the
images built here. The demo and the end-to-end tests install it the same way."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from . import toolchain
from .process import run_checked

if TYPE_CHECKING:
    from .cluster import LocalCluster
    from .images import Image

CHART = Path(__file__).resolve().parents[2] / "charts" / "haven-streams"
RELEASE, NAMESPACE = "haven", "haven-system"
GATEWAY_SERVICE, GATEWAY_SECRET = "haven-gateway", f"{RELEASE}-gateway-token"
GATEWAY_INGRESS_HOST = "player.haven.test"  # the gateway's Ingress (class traefik, ingress.py)


def image_values(ref: str) -> dict[str, str]:
    """The chart's image values for a reference `repository:tag`."""
    repository, _, tag = ref.rpartition(":")
    return {"repository": repository, "tag": tag}


def values(
    images: dict[str, Image], pumpfun_api_url: str, pumpfun_livekit_url: str, status_interval: int
) -> dict:
    return {
        "image": {
            "operator": image_values(images["operator"].ref),
            "streamPod": image_values(images["recorder"].ref),
            "pullPolicy": "Never",  # built here and imported into the node, never pulled
        },
        "operator": {
            "statusIntervalSeconds": status_interval,
            "resources": {"requests": {"cpu": "50m", "memory": "96Mi"}},
        },
        # Small requests: a two-core node runs several stream pods at once.
        "streamPod": {
            "resources": {
                "requests": {"cpu": "50m", "memory": "128Mi"},
                "limits": {"cpu": "2", "memory": "1Gi"},
            }
        },
        "pumpfun": {"apiURL": pumpfun_api_url, "livekitURL": pumpfun_livekit_url},
        # The Haven Player API, with a bearer token the chart makes (Secret GATEWAY_SECRET),
        # two replicas behind its Service: it keeps no state, so either answers alike.
        "gateway": {
            "enabled": True,
            "replicas": 2,
            "auth": {"enabled": True},
            "startTimeoutSeconds": 60,
            "ingress": {"enabled": True, "host": GATEWAY_INGRESS_HOST, "className": "traefik"},
        },
    }


def helm(cluster: LocalCluster, *args: str) -> str:
    binary = toolchain.ensure(["helm"])["helm"]
    return run_checked([str(binary), f"--kubeconfig={cluster.kubeconfig}", *args], timeout=300)


def install(cluster: LocalCluster, release_values: dict) -> None:
    """`helm upgrade --install` and wait until the operator is Ready."""
    path = cluster.state_dir / "haven-values.json"
    path.write_text(json.dumps(release_values, indent=2))
    helm(
        cluster, "upgrade", "--install", RELEASE, str(CHART),
        "--namespace", NAMESPACE, "--create-namespace",
        "--values", str(path), "--wait", "--timeout=180s",
    )  # fmt: skip


def uninstall(cluster: LocalCluster) -> None:
    helm(cluster, "uninstall", RELEASE, "--namespace", NAMESPACE, "--wait")

"""What the suite deploys next to the chart, from the project's images: livekit-server (a
Deployment and its Service), the pump.fun join API stand-in, and synthetic publishers. Pods
reach LiveKit's signalling through its Service and its media (ICE over UDP) on its pod IP."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

LIVEKIT, PUMPFUN, KEYS = "livekit", "pumpfun", "livekit-keys"
SIGNAL_PORT, ICE_TCP_PORT, ICE_UDP_PORT, PUMPFUN_PORT = 7880, 7881, 7882, 8080
API_KEY = "e2ekey"
BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
RUN_LABEL = "e2e.haven.dev/run"


@dataclass(frozen=True)
class Images:
    operator: str
    recorder: str
    livekit: str
    testkit: str
    pull_policy: str


@dataclass(frozen=True)
class Infra:
    """Where the in-cluster LiveKit and pump.fun stand-in answer, and their keys."""

    namespace: str
    api_secret: str

    @property
    def livekit_url(self) -> str:
        return f"ws://{LIVEKIT}.{self.namespace}.svc:{SIGNAL_PORT}"

    @property
    def pumpfun_url(self) -> str:
        return f"http://{PUMPFUN}.{self.namespace}.svc:{PUMPFUN_PORT}"


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def new_mint() -> str:
    """A mint id the CRD accepts (base58, 44 characters), new for each run."""
    return "".join(secrets.choice(BASE58) for _ in range(44))


def _restricted(image: str, pull_policy: str) -> dict:
    """A container that passes the restricted Pod Security Standard."""
    return {
        "image": image,
        "imagePullPolicy": pull_policy,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }


def _deployment(name: str, labels: dict, container: dict) -> dict:
    """Without Service links: a Service `livekit` would set LIVEKIT_PORT=tcp://..., which
    livekit-server reads as its --port."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {**labels, "app": name}},
                "spec": {"enableServiceLinks": False, "containers": [{"name": name, **container}]},
            },
        },
    }


def _service(name: str, labels: dict, port: int) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": labels},
        "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": port}]},
    }


def _keys_env() -> list[dict]:
    ref = {"secretKeyRef": {"name": KEYS, "key": "apiSecret"}}
    return [
        {"name": "LIVEKIT_API_KEY", "value": API_KEY},
        {"name": "LIVEKIT_API_SECRET", "valueFrom": ref},
    ]


def keys_secret(infra: Infra, labels: dict) -> dict:
    """LiveKit's keys: its config, and the credentials LiveStreams and test pods use."""
    config = (
        f"port: {SIGNAL_PORT}\n"
        f"keys: {{{API_KEY}: {infra.api_secret}}}\n"
        f"rtc: {{tcp_port: {ICE_TCP_PORT}, udp_port: {ICE_UDP_PORT}, use_external_ip: false}}\n"
        "logging: {level: info, json: true}\n"
    )
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": KEYS, "labels": labels},
        "stringData": {"config.yaml": config, "apiKey": API_KEY, "apiSecret": infra.api_secret},
    }


def livekit(images: Images, labels: dict) -> list[dict]:
    """livekit-server, advertising its pod IP for media."""
    container = {
        **_restricted(images.livekit, images.pull_policy),
        "args": ["--config=/etc/livekit/config.yaml", "--node-ip=$(POD_IP)"],
        "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
        "ports": [
            {"name": "signal", "containerPort": SIGNAL_PORT},
            {"name": "ice-tcp", "containerPort": ICE_TCP_PORT},
            {"name": "ice-udp", "containerPort": ICE_UDP_PORT, "protocol": "UDP"},
        ],
        "readinessProbe": {"httpGet": {"path": "/", "port": SIGNAL_PORT}, "periodSeconds": 2},
        "volumeMounts": [{"name": "config", "mountPath": "/etc/livekit", "readOnly": True}],
    }
    deployment = _deployment(LIVEKIT, labels, container)
    deployment["spec"]["template"]["spec"]["volumes"] = [
        {
            "name": "config",
            "secret": {
                "secretName": KEYS,
                "items": [{"key": "config.yaml", "path": "config.yaml"}],
            },
        }
    ]
    return [deployment, _service(LIVEKIT, labels, SIGNAL_PORT)]


def pumpfun(images: Images, labels: dict, live: dict[str, str]) -> list[dict]:
    """The stand-in for pump.fun's join API, saying each mint in `live` streams in its room."""
    args = ["haven_localcluster.pumpfun", "--host=0.0.0.0", f"--port={PUMPFUN_PORT}"]
    args += [f"--live={mint}={room}" for mint, room in live.items()]
    container = {
        **_restricted(images.testkit, images.pull_policy),
        "args": args,
        "env": _keys_env(),
        "ports": [{"name": "http", "containerPort": PUMPFUN_PORT}],
        "readinessProbe": {"tcpSocket": {"port": PUMPFUN_PORT}, "periodSeconds": 2},
    }
    return [_deployment(PUMPFUN, labels, container), _service(PUMPFUN, labels, PUMPFUN_PORT)]


def publisher(images: Images, labels: dict, infra: Infra, room: str) -> dict:
    """A synthetic publisher pod in `room`: the test pattern at 640x360 (cheap to encode)."""
    name = f"publisher-{room}"
    args = [
        "haven_localcluster.publisher", f"--url={infra.livekit_url}", f"--room={room}",
        f"--api-key={API_KEY}", "--api-secret=$(LIVEKIT_API_SECRET)",
        "--width=640", "--height=360",
    ]  # fmt: skip
    container = {**_restricted(images.testkit, images.pull_policy), "args": args}
    container["env"] = _keys_env()
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {**labels, "app": "publisher"}},
        "spec": {"enableServiceLinks": False, "containers": [{"name": "publisher", **container}]},
    }


def image_values(ref: str) -> dict[str, str]:
    """The chart's image values for `repository:tag` or `repository@digest`."""
    if "@" in ref:
        repository, _, digest = ref.partition("@")
        return {"repository": repository, "digest": digest}
    repository, _, tag = ref.rpartition(":")
    if not repository or "/" in tag:  # no tag (what looked like one was a registry's port)
        return {"repository": ref, "tag": "latest"}
    return {"repository": repository, "tag": tag}


def release_values(images: Images, infra: Infra) -> dict:
    """The chart's values: the given images, pump.fun through the stand-in, and small requests
    so the suite fits a small cluster (one operator replica, no gateway)."""
    return {
        "image": {
            "operator": image_values(images.operator),
            "streamPod": image_values(images.recorder),
            "pullPolicy": images.pull_policy,
        },
        "operator": {
            "replicas": 1,
            "statusIntervalSeconds": 2,
            "resources": {"requests": {"cpu": "50m", "memory": "96Mi"}},
        },
        "streamPod": {
            "resources": {
                "requests": {"cpu": "50m", "memory": "128Mi"},
                "limits": {"cpu": "2", "memory": "1Gi"},
            }
        },
        "pumpfun": {"apiURL": infra.pumpfun_url, "livekitURL": infra.livekit_url},
    }

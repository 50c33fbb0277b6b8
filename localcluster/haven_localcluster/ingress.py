"""The local cluster's Ingress controller: Traefik v3 (built from the Go module proxy, scratch
image), with its kubernetes Ingress provider and the IngressClass `traefik` (the default class).

Its Service has a fixed ClusterIP, `10.(96+N).0.80`, ports 80 (HTTP) and 443 (HTTPS: every
router also listens there, with the certificate of the Ingress's `tls` Secret chosen by SNI).
The host routes the Service CIDR into the node, so a client on the host reaches an Ingress host
by resolving it to that address (curl `--resolve`, Chromium `--host-resolver-rules`).

Timeouts, for WebSocket viewers that stay for hours:
  entry points  readTimeout 60s     reading a request (headers and body); Go's server clears it
                                    when the connection is upgraded to a WebSocket
                writeTimeout 0      none: a long response or a socket is never cut while it flows
                idleTimeout 180s    a keep-alive connection with no request in flight
  to the pods   dialTimeout 10s, responseHeaderTimeout 0 (none), idleConnTimeout 90s (pooled
                connections only)
Nothing closes an upgraded connection that is open, idle or not, so a viewer at 15 fps stays
as long as it likes (tests/ingress/test_ingress.py holds one for 5 minutes).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from . import toolchain
from .images import ensure_images
from .network import NodeNetwork
from .process import run_checked

if TYPE_CHECKING:
    from .cluster import LocalCluster

NAMESPACE = "traefik"
NAME = "traefik"
CLASS = "traefik"
HTTP_PORT, HTTPS_PORT, PING_PORT = 8000, 8443, 9000  # in the pod (non-root: no port < 1024)
ENTRY_POINT_TIMEOUTS = {"readTimeout": "60s", "writeTimeout": "0s", "idleTimeout": "180s"}
FORWARDING_TIMEOUTS = {
    "dialTimeout": "10s",
    "responseHeaderTimeout": "0s",
    "idleConnTimeout": "90s",
}


def service_ip(network: NodeNetwork) -> str:
    return f"10.{96 + network.index}.0.80"


def args(cluster_ip: str) -> list[str]:
    """Traefik's static configuration; `cluster_ip` (its Service's) goes into each Ingress's
    status (a ClusterIP Service has no load balancer status for publishedService to copy)."""
    out = [
        f"--entryPoints.web.address=:{HTTP_PORT}",
        f"--entryPoints.websecure.address=:{HTTPS_PORT}",
        "--entryPoints.websecure.http.tls=true",
        f"--entryPoints.traefik.address=:{PING_PORT}",
        "--ping=true",
        "--providers.kubernetesingress=true",
        f"--providers.kubernetesingress.ingressendpoint.ip={cluster_ip}",
        "--global.checkNewVersion=false",
        "--global.sendAnonymousUsage=false",
        "--log.level=INFO",
        "--log.noColor=true",
    ]
    for entry_point in ("web", "websecure"):
        for key, value in ENTRY_POINT_TIMEOUTS.items():
            out.append(f"--entryPoints.{entry_point}.transport.respondingTimeouts.{key}={value}")
    for key, value in FORWARDING_TIMEOUTS.items():
        out.append(f"--serversTransport.forwardingTimeouts.{key}={value}")
    return out


def manifests(image: str, cluster_ip: str) -> list[dict]:
    labels = {"app.kubernetes.io/name": NAME}
    meta = {"name": NAME, "namespace": NAMESPACE}
    container = {
        "name": NAME,
        "image": image,
        "imagePullPolicy": "Never",
        "args": args(cluster_ip),
        "ports": [
            {"name": "web", "containerPort": HTTP_PORT},
            {"name": "websecure", "containerPort": HTTPS_PORT},
            {"name": "ping", "containerPort": PING_PORT},
        ],
        "readinessProbe": {"httpGet": {"path": "/ping", "port": PING_PORT}, "periodSeconds": 2},
        "livenessProbe": {"httpGet": {"path": "/ping", "port": PING_PORT}, "periodSeconds": 10},
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "512Mi"}},
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 65532,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    read = ["get", "list", "watch"]
    rules = [
        {"apiGroups": [""], "resources": ["services", "secrets", "nodes"], "verbs": read},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": read},
        {
            "apiGroups": ["networking.k8s.io"],
            "resources": ["ingresses", "ingressclasses"],
            "verbs": read,
        },
        {
            "apiGroups": ["networking.k8s.io"],
            "resources": ["ingresses/status"],
            "verbs": ["update"],
        },
    ]
    role = {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "haven:traefik"}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "haven:traefik"},
            "rules": rules,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "haven:traefik"},
            "roleRef": role,
            "subjects": [{"kind": "ServiceAccount", **meta}],
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "IngressClass",
            "metadata": {
                "name": CLASS,
                "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"},
            },
            "spec": {"controller": "traefik.io/ingress-controller"},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {**meta, "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"serviceAccountName": NAME, "containers": [container]},
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {**meta, "labels": labels},
            "spec": {
                "selector": labels,
                "clusterIP": cluster_ip,
                "ports": [
                    {"name": "web", "port": 80, "targetPort": "web"},
                    {"name": "websecure", "port": 443, "targetPort": "websecure"},
                ],
            },
        },
    ]


def deploy(kubectl: Path, kubeconfig: Path, image: str, cluster_ip: str) -> None:
    """Apply Traefik and wait until it is ready (idempotent: a second call changes nothing)."""
    base = [str(kubectl), f"--kubeconfig={kubeconfig}"]
    manifest = yaml.safe_dump_all(manifests(image, cluster_ip))
    run_checked([*base, "apply", "--server-side", "-f", "-"], manifest)
    rollout = ["rollout", "status", f"deployment/{NAME}", "--timeout=120s"]
    run_checked([*base, "-n", NAMESPACE, *rollout])


def start(cluster: LocalCluster) -> str:
    """Build Traefik's image if needed, import it into the node, deploy it; its Service's
    address (a ClusterIP the host routes to)."""
    image = ensure_images(["traefik"])["traefik"]
    if image.ref not in cluster.node.ctr("images", "ls", "-q").stdout.split():
        cluster.node.ctr("images", "import", "--no-unpack", str(image.archive))
    address = service_ip(cluster.network)
    deploy(toolchain.ensure(["kubectl"])["kubectl"], cluster.kubeconfig, image.ref, address)
    return address


def stream_pod_manifests(
    image: str, livekit: dict[str, str], room: str, host: str, name: str = "viewers",
    max_fps: int = 15, max_width: int = 1280,
) -> list[dict]:  # fmt: skip
    """A stream pod (the recorder image, without the operator), its Service (viewer port only)
    and an Ingress for `host` through this controller: for the soak test and bench/ingress.py.
    `livekit`: url (as pods reach it), api_key, api_secret."""
    labels = {"app": name}
    env = {
        "HAVEN_HOST": "0.0.0.0",
        "HAVEN_LIVEKIT_API_KEY": livekit["api_key"],
        "HAVEN_LIVEKIT_API_SECRET": livekit["api_secret"],
        "HAVEN_CONTROL_TOKEN": "not-used-through-the-ingress",
        "HAVEN_MAX_FPS": str(max_fps),
        "HAVEN_MAX_WIDTH": str(max_width),
        "HAVEN_MAX_VIEWERS": "1000",
    }
    container = {
        "name": "stream",
        "image": image,
        "imagePullPolicy": "Never",
        "args": ["--source=livekit", f"--livekit-url={livekit['url']}", f"--room={room}"],
        "env": [{"name": k, "value": v} for k, v in env.items()],
        "ports": [{"containerPort": 8080, "name": "http"}],
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 2},
        "securityContext": {"readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False},
        "volumeMounts": [
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "recordings", "mountPath": "/recordings"},
        ],
    }
    pod_spec = {
        "securityContext": {"runAsNonRoot": True},
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {}}, {"name": "recordings", "emptyDir": {}}],
    }
    backend = {"service": {"name": name, "port": {"name": "http"}}}
    rule = {
        "host": host,
        "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": backend}]},
    }
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": pod_spec},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name},
            "spec": {"selector": labels, "ports": [{"name": "http", "port": 8080}]},
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {"name": name},
            "spec": {"ingressClassName": CLASS, "rules": [rule]},
        },
    ]

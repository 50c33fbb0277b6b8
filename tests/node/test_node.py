"""The node really runs pods: images built here, Service routing, volumes that outlive pods,
memory limits enforced by the kernel, and nothing left behind when a namespace goes."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from pathlib import Path

import kubernetes
import yaml

from haven_localcluster.cluster import LocalCluster

BASE = "base"  # images' keys; the base image has Debian's python3 and a shell
CONTROL_TOKEN = "node-test-control-token"


def apply(kubectl, namespace: str, *docs: dict) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(docs))


def pod(name: str, image: str, command: list[str], **spec) -> dict:
    container = {"name": "main", "image": image, "imagePullPolicy": "Never", "command": command}
    container |= spec.pop("container", {})
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"containers": [container], "terminationGracePeriodSeconds": 1, **spec},
    }


def wait_for(get, predicate, timeout: float = 120, what: str = "condition"):
    deadline, value = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        value = get()
        if predicate(value):
            return value
        time.sleep(0.5)
    raise AssertionError(f"{what} not met within {timeout}s; last: {json.dumps(value)[:3000]}")


def get_json(kubectl, namespace: str, *what: str) -> dict:
    result = kubectl("get", "-n", namespace, *what, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else {}


def phase(kubectl, namespace: str, name: str) -> str:
    return get_json(kubectl, namespace, "pod", name).get("status", {}).get("phase", "")


def test_a_deployment_of_the_stream_pod_image_becomes_ready(
    kubectl, namespace, images, livekit_server, publisher
):
    """The image built from recorder/Dockerfile runs as its non-root user with a read-only root
    filesystem, joins the room through livekit-server and passes its readiness probe."""
    container = {
        "name": "stream",
        "image": images["recorder"].ref,
        "imagePullPolicy": "Never",
        "args": [
            "--source=livekit",
            f"--livekit-url={livekit_server.cluster_url}",
            f"--room={publisher}",
        ],
        "env": [
            {"name": "HAVEN_LIVEKIT_API_KEY", "value": livekit_server.api_key},
            {"name": "HAVEN_LIVEKIT_API_SECRET", "value": livekit_server.api_secret},
            {"name": "HAVEN_CONTROL_TOKEN", "value": CONTROL_TOKEN},  # it fails closed without
        ],
        "ports": [
            {"containerPort": 8080, "name": "http"},
            {"containerPort": 8081, "name": "control"},
        ],
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 2},
        "securityContext": {
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "recordings", "mountPath": "/recordings"},
        ],
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "stream"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "stream"}},
            "template": {
                "metadata": {"labels": {"app": "stream"}},
                "spec": {
                    "securityContext": {
                        "runAsNonRoot": True,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                    "volumes": [
                        {"name": "tmp", "emptyDir": {}},
                        {"name": "recordings", "emptyDir": {}},
                    ],
                },
            },
        },
    }
    apply(kubectl, namespace, deployment)
    rollout = kubectl(
        "rollout", "status", "-n", namespace, "deployment/stream", "--timeout=100s", check=False
    )
    if rollout.returncode != 0:  # say why: the pod's events and its last output
        events = kubectl("get", "events", "-n", namespace, check=False).stdout
        logs = kubectl("logs", "-n", namespace, "deployment/stream", "--previous", check=False)
        raise AssertionError(f"not ready: {rollout.stderr}\n{events}\n{logs.stdout[-3000:]}")
    pods = get_json(kubectl, namespace, "pods", "-l", "app=stream")["items"]
    assert len(pods) == 1
    ip = pods[0]["status"]["podIP"]

    def pod_status() -> dict:
        request = urllib.request.Request(
            f"http://{ip}:8081/status", headers={"Authorization": f"Bearer {CONTROL_TOKEN}"}
        )
        with urllib.request.urlopen(request, timeout=5) as resp:
            return json.load(resp)

    # Ready means serving; live follows once the publisher's first frames arrive.
    wait_for(pod_status, lambda s: s["state"] == "live", timeout=60, what="the pod goes live")
    uid = kubectl("exec", "-n", namespace, pods[0]["metadata"]["name"], "--", "id", "-u").stdout
    assert uid.strip() == "10001"


def test_a_pod_reaches_another_pod_through_a_service_cluster_ip(kubectl, namespace, images):
    base = images[BASE].ref
    server = pod(
        "web",
        base,
        ["python3", "-m", "http.server", "8000", "--directory", "/etc"],
        container={"readinessProbe": {"tcpSocket": {"port": 8000}, "periodSeconds": 1}},
    )
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8000}]},
    }
    apply(kubectl, namespace, server, service)
    cluster_ip = get_json(kubectl, namespace, "service", "web")["spec"]["clusterIP"]
    wait_for(
        lambda: get_json(kubectl, namespace, "endpoints", "web"),
        lambda ep: any(s.get("addresses") for s in ep.get("subsets", [])),
        what="the Service has a ready endpoint",
    )
    fetch = f"import urllib.request as u; print(u.urlopen('http://{cluster_ip}/hostname').read())"
    apply(kubectl, namespace, pod("client", base, ["python3", "-c", fetch], restartPolicy="Never"))
    wait_for(
        lambda: phase(kubectl, namespace, "client"),
        lambda p: p in ("Succeeded", "Failed"),
        what="the client pod finishes",
    )
    logs = kubectl("logs", "-n", namespace, "client").stdout
    assert phase(kubectl, namespace, "client") == "Succeeded", logs
    assert "web" in logs  # the server pod's /etc/hostname: its pod name
    # The host reaches the ClusterIP too: kube-proxy's rules route it into the node.
    with urllib.request.urlopen(f"http://{cluster_ip}/hostname", timeout=5) as resp:
        assert resp.read().strip() == b"web"


def test_a_claim_binds_and_its_files_outlive_the_pod(kubectl, namespace, images, cluster):
    token = uuid.uuid4().hex
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "16Mi"}}},
    }
    volume = {"volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]}
    mount = {"volumeMounts": [{"name": "data", "mountPath": "/data"}]}
    base = images[BASE].ref
    write = ["sh", "-c", f"echo {token} > /data/token"]
    apply(kubectl, namespace, claim)
    once = {"restartPolicy": "Never", "container": mount, **volume}
    apply(kubectl, namespace, pod("writer", base, write, **once))
    wait_for(lambda: phase(kubectl, namespace, "writer"), lambda p: p == "Succeeded", what="writer")
    pvc = get_json(kubectl, namespace, "pvc", "data")
    assert pvc["status"]["phase"] == "Bound"
    pv = get_json(kubectl, "", "pv", pvc["spec"]["volumeName"])
    assert pv["spec"]["storageClassName"] == "local-path"
    host_dir = Path(pv["spec"]["hostPath"]["path"])
    assert host_dir.is_relative_to(cluster.storage.volumes_dir)
    assert (host_dir / "token").read_text().strip() == token

    kubectl("delete", "-n", namespace, "pod", "writer", "--wait=true")
    read = ["cat", "/data/token"]
    apply(kubectl, namespace, pod("reader", base, read, **once))
    wait_for(lambda: phase(kubectl, namespace, "reader"), lambda p: p == "Succeeded", what="reader")
    assert kubectl("logs", "-n", namespace, "reader").stdout.strip() == token


def test_a_pod_over_its_memory_limit_is_oom_killed_and_restarted(kubectl, namespace, images):
    hog = ["python3", "-c", "b = bytearray(256 << 20); import time; time.sleep(3600)"]
    limits = {"resources": {"limits": {"memory": "48Mi"}, "requests": {"memory": "48Mi"}}}
    apply(kubectl, namespace, pod("hog", images[BASE].ref, hog, container=limits))
    status = wait_for(
        lambda: get_json(kubectl, namespace, "pod", "hog").get("status", {}),
        lambda s: any(c.get("restartCount", 0) >= 1 for c in s.get("containerStatuses", [])),
        what="the pod restarts",
    )
    container = status["containerStatuses"][0]
    assert container["lastState"]["terminated"]["reason"] == "OOMKilled", container
    assert container["lastState"]["terminated"]["exitCode"] == 137


def _containers_of(cluster: LocalCluster, namespace: str) -> dict[str, str | None]:
    """containerd's containers for pods of `namespace`: id -> the sandbox's netns, if one."""
    return {
        c.id: c.netns
        for c in cluster.node.containers()
        if c.labels.get("io.kubernetes.pod.namespace") == namespace
    }


def test_deleting_a_namespace_removes_its_containers_and_network_namespaces(
    kubectl, api_client, images, cluster
):
    namespace = f"t-gone-{uuid.uuid4().hex[:5]}"
    core = kubernetes.client.CoreV1Api(api_client)
    core.create_namespace({"metadata": {"name": namespace}})
    sleep = ["sleep", "3600"]
    apply(kubectl, namespace, pod("a", images[BASE].ref, sleep), pod("b", images[BASE].ref, sleep))
    for name in ("a", "b"):
        wait_for(lambda n=name: phase(kubectl, namespace, n), lambda p: p == "Running", what=name)
    before = _containers_of(cluster, namespace)
    netns = {path for path in before.values() if path}  # the sandboxes' own
    assert len(before) == 4 and len(netns) == 2  # two sandboxes and two containers
    assert all(Path(p).exists() for p in netns)

    core.delete_namespace(namespace)
    wait_for(
        lambda: kubectl("get", "namespace", namespace, check=False).returncode,
        lambda rc: rc != 0,
        what="the namespace is gone",
    )
    wait_for(lambda: _containers_of(cluster, namespace), lambda c: not c, what="no containers")
    assert not [p for p in netns if Path(p).exists()]

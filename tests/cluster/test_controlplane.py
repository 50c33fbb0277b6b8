"""The local control plane is a real one: CRDs are served and validated, the
controller-manager garbage-collects, and RBAC is enforced."""

from __future__ import annotations

import json
import subprocess
import time

import kubernetes
import pytest

from haven_localcluster.cluster import LocalCluster

CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.test.haven.dev
spec:
  group: test.haven.dev
  names: {kind: Widget, plural: widgets, singular: widget}
  scope: Namespaced
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              required: [size]
              properties:
                size: {type: integer, minimum: 1, maximum: 10}
                color: {type: string, enum: [red, blue]}
"""


def widget(name: str, size: object) -> str:
    return json.dumps(
        {
            "apiVersion": "test.haven.dev/v1",
            "kind": "Widget",
            "metadata": {"name": name},
            "spec": {"size": size, "color": "red"},
        }
    )


def wait_until(predicate, timeout: float = 60, interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


def test_crd_is_served_and_its_schema_rejects_invalid_objects(kubectl, namespace):
    kubectl("apply", "-f", "-", input=CRD)
    kubectl("wait", "--for=condition=Established", "crd/widgets.test.haven.dev", "--timeout=60s")

    kubectl("apply", "-n", namespace, "-f", "-", input=widget("good", 3))
    got = json.loads(kubectl("get", "-n", namespace, "widget", "good", "-o", "json").stdout)
    assert got["spec"] == {"size": 3, "color": "red"}

    too_big = kubectl("apply", "-n", namespace, "-f", "-", input=widget("big", 11), check=False)
    assert too_big.returncode != 0
    assert "spec.size" in too_big.stderr and "less than or equal to 10" in too_big.stderr

    wrong_type = kubectl("apply", "-n", namespace, "-f", "-", input=widget("bad", "x"), check=False)
    assert wrong_type.returncode != 0 and "spec.size" in wrong_type.stderr
    assert kubectl("get", "-n", namespace, "widget", "big", check=False).returncode != 0


def test_controller_manager_garbage_collects_owned_objects(api_client, namespace):
    core = kubernetes.client.CoreV1Api(api_client)
    apps = kubernetes.client.AppsV1Api(api_client)
    owner = core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    labels = {"app": "owned"}
    apps.create_namespaced_deployment(
        namespace,
        {
            "metadata": {
                "name": "owned",
                "ownerReferences": [
                    {
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "name": "owner",
                        "uid": owner.metadata.uid,
                    }
                ],
            },
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "c", "image": "example.invalid/none:1"}]},
                },
            },
        },
    )
    # The Deployment controller makes a ReplicaSet, and the ReplicaSet controller a Pod.
    wait_until(lambda: apps.list_namespaced_replica_set(namespace).items)
    wait_until(lambda: core.list_namespaced_pod(namespace).items)

    core.delete_namespaced_config_map("owner", namespace)

    def gone() -> bool:
        return not (
            apps.list_namespaced_deployment(namespace).items
            or apps.list_namespaced_replica_set(namespace).items
            or core.list_namespaced_pod(namespace).items
        )

    wait_until(gone, timeout=60)


def test_rbac_denies_a_service_account_without_rights(kubectl, cluster: LocalCluster, namespace):
    kubectl("create", "serviceaccount", "nobody", "-n", namespace)
    token = kubectl("create", "token", "nobody", "-n", namespace).stdout.strip()

    def list_pods() -> int:
        config = kubernetes.client.Configuration()
        config.host = cluster.server
        config.ssl_ca_cert = str(cluster.control_plane.pki.ca_cert)
        config.api_key = {"authorization": f"Bearer {token}"}
        core = kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(config))
        try:
            core.list_namespaced_pod(namespace)
        except kubernetes.client.ApiException as exc:
            return exc.status
        return 200

    assert list_pods() == 403
    # The same token is let in once a Role grants it: the 403 came from RBAC, not a bad token.
    kubectl("create", "role", "pod-reader", "--verb=list", "--resource=pods", "-n", namespace)
    kubectl(
        "create", "rolebinding", "nobody-reads", "--role=pod-reader",
        f"--serviceaccount={namespace}:nobody", "-n", namespace,
    )  # fmt: skip
    wait_until(lambda: list_pods() == 200, timeout=30)


def test_every_component_listens_on_loopback_or_the_node_link_only(cluster: LocalCluster):
    """The host's sockets are on loopback, but for the apiserver, which listens on the host's
    end of the node's veth; the node's own (kubelet, kube-proxy, containerd) are in its netns."""
    procs = cluster.control_plane.procs + ([cluster.storage.proc] if cluster.storage.proc else [])
    pids = {str(p.pid) for p in cluster.control_plane.procs}
    out = subprocess.run(["ss", "-Htlnup"], capture_output=True, text=True, check=True).stdout
    ours = [line for line in out.splitlines() if any(f"pid={p.pid}," in line for p in procs)]
    assert len(ours) >= len(pids), out  # each component serves at least one port
    allowed = ("127.0.0.1:", f"{cluster.network.host_ip}:")
    for line in ours:
        local = line.split()[4]
        assert local.startswith(allowed), line
    assert any(f"{cluster.network.host_ip}:" in line for line in ours)  # the apiserver
    node_pids = {p.pid for p in cluster.node.procs}
    assert not [line for line in out.splitlines() if any(f"pid={p}," in line for p in node_pids)]


@pytest.mark.parametrize("path", ["/readyz", "/livez"])
def test_apiserver_health(kubectl, path):
    assert kubectl("get", "--raw", path).stdout.strip() == "ok"

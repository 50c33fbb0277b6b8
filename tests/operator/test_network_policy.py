"""The chart's NetworkPolicy for stream pods, and the ports it relies on: rendered by Helm and
checked against what the operator creates, then accepted by the real apiserver (server-side dry
run). The local cluster's bridge CNI does not enforce NetworkPolicies, so what the policy lets
through is checked here by reading it, not by sending traffic."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

from haven_localcluster import toolchain
from haven_operator import children
from haven_operator.settings import Settings

CHART = Path(__file__).resolve().parents[2] / "charts" / "haven-streams"


def render(*sets: str, namespace: str = "haven-system") -> list[dict]:
    helm = toolchain.ensure(["helm"])["helm"]
    args = [str(helm), "template", "haven", str(CHART), "--namespace", namespace]
    args += ["--kube-version", toolchain.KUBERNETES_VERSION]  # the chart needs >= 1.29
    for value in sets:
        args += ["--set", value]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def livestream(namespace: str, name: str = "cam") -> dict:
    return {
        "apiVersion": "streams.haven.dev/v1alpha1",
        "kind": "LiveStream",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": "0" * 8 + "-0000-0000-0000-" + "0" * 12,
        },
        "spec": {
            "source": {"pumpfun": {"mintId": "So11111111111111111111111111111111111111112"}},
            "viewer": {"ingress": {"host": "cam.example.test"}},
        },
    }


def selects(selector: dict, labels: dict) -> bool:
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expr in selector.get("matchExpressions", []):
        assert expr["operator"] == "Exists", expr
        if expr["key"] not in labels:
            return False
    return True


def test_the_policy_opens_the_viewer_port_and_admits_only_operator_and_gateway_to_control():
    docs = render("gateway.enabled=true")
    [policy] = [d for d in docs if d["kind"] == "NetworkPolicy"]
    settings = Settings()
    body = livestream("haven-system")
    deployment = children.deployment(body, settings, "token")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8080, "control": 8081}
    assert selects(policy["spec"]["podSelector"], pod_labels)
    # Other pods of the namespace (the operator's, the gateway's) are not the policy's.
    for d in docs:
        if d["kind"] == "Deployment":
            assert not selects(
                policy["spec"]["podSelector"], d["spec"]["template"]["metadata"]["labels"]
            )

    assert policy["spec"]["policyTypes"] == ["Ingress"]
    viewers, control = policy["spec"]["ingress"]
    assert "from" not in viewers and viewers["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert control["ports"] == [{"port": "control", "protocol": "TCP"}]
    peers = control["from"]
    admitted = {
        d["metadata"]["name"]
        for d in docs
        if d["kind"] == "Deployment"
        and any(
            selects(p["podSelector"], d["spec"]["template"]["metadata"]["labels"])
            and p["namespaceSelector"]["matchLabels"]
            == {"kubernetes.io/metadata.name": d["metadata"]["namespace"]}
            for p in peers
        )
    }
    assert admitted == {"haven-operator", "haven-gateway"}, peers
    assert len(peers) == 2  # nobody else

    # Probes use the viewer port, which the policy leaves open; the Service has both ports,
    # the Ingress routes only the viewer's, and the operator calls the control port.
    assert container["livenessProbe"]["httpGet"]["port"] == "http"
    assert container["readinessProbe"]["httpGet"]["port"] == "http"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["HAVEN_PORT"] == "8080" and env["HAVEN_CONTROL_PORT"] == "8081"
    service = children.service(body, settings)
    assert [(p["name"], p["port"]) for p in service["spec"]["ports"]] == [
        ("http", 8080),
        ("control", 8081),
    ]
    ingress = children.ingress(body, settings)
    backends = [
        path["backend"]["service"]["port"]
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    ]
    assert backends == [{"name": "http"}]


def test_the_policy_covers_every_namespace_stream_pods_run_in_and_can_be_turned_off():
    def policies(*sets: str) -> list[str]:
        return sorted(
            d["metadata"]["namespace"] for d in render(*sets) if d["kind"] == "NetworkPolicy"
        )

    assert policies() == ["haven-system"]
    assert policies("gateway.enabled=true", "gateway.namespace=sessions") == [
        "haven-system",
        "sessions",
    ]
    assert policies("watchNamespaces={a,b}") == ["a", "b"]
    assert policies("watchNamespaces={a}", "networkPolicy.namespaces={c,d}") == ["c", "d"]
    assert policies("networkPolicy.enabled=false") == []
    [policy] = [
        d
        for d in render("networkPolicy.extraControlFrom[0].namespaceSelector.matchLabels.team=obs")
        if d["kind"] == "NetworkPolicy"
    ]
    assert policy["spec"]["ingress"][1]["from"][-1] == {
        "namespaceSelector": {"matchLabels": {"team": "obs"}}
    }


def test_the_policy_and_the_stream_pods_children_pass_a_server_side_dry_run(
    crds, kubectl, namespace
):
    docs = render("gateway.enabled=true", f"watchNamespaces[0]={namespace}", namespace=namespace)
    [policy] = [d for d in docs if d["kind"] == "NetworkPolicy"]
    body = livestream(namespace)
    settings = Settings()
    manifests = [
        policy,
        children.service(body, settings),
        children.deployment(body, settings, "token"),
        children.ingress(body, settings),
    ]
    for manifest in manifests:
        manifest["metadata"].pop("ownerReferences", None)  # no LiveStream exists to own them
    stream = "\n---\n".join(json.dumps(m) for m in manifests)
    result = kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=stream)
    assert result.stdout.count("(server dry run)") == len(manifests), result.stdout
    assert f"networkpolicy.networking.k8s.io/{policy['metadata']['name']} created" in result.stdout

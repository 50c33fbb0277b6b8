"""The Helm chart: lint-clean, CRDs identical to crds/, and what it renders is accepted by the
real apiserver (server-side dry run) in both RBAC modes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from haven_localcluster import toolchain

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "haven-streams"


def helm(*args: str) -> subprocess.CompletedProcess:
    binary = toolchain.ensure(["helm"])["helm"]
    return subprocess.run([str(binary), *args], capture_output=True, text=True, check=False)


def test_chart_crds_are_the_top_level_crds():
    top = sorted(p.name for p in (ROOT / "crds").glob("*.yaml"))
    assert top == sorted(p.name for p in (CHART / "crds").glob("*.yaml")) and top
    for name in top:
        assert (ROOT / "crds" / name).read_bytes() == (CHART / "crds" / name).read_bytes(), name


def test_helm_lint_is_clean():
    result = helm("lint", "--strict", str(CHART))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout


def test_values_schema_rejects_bad_values():
    result = helm("template", "x", str(CHART), "--set", "operator.logLevel=loud")
    assert result.returncode != 0 and "logLevel" in result.stderr
    result = helm("template", "x", str(CHART), "--set", "watchNamespaces[0]=Not_A_Namespace")
    assert result.returncode != 0 and "watchNamespaces" in result.stderr


# Every optional feature on, but the ServiceMonitor (its CRD is the Prometheus Operator's,
# which this cluster does not have: it is checked by rendering alone).
EVERYTHING = [
    "gateway.enabled=true", "gateway.replicas=2", "gateway.auth.enabled=true",
    "gateway.auth.secretName=my-gateway-token", "gateway.ingress.enabled=true",
    "gateway.ingress.host=player.example.test", "gateway.ingress.className=traefik",
    "gateway.ingress.tlsSecretName=player-tls", "imagePullSecrets[0].name=regcred",
    "operator.logLevel=debug", "operator.nodeSelector.disktype=ssd",
    "operator.tolerations[0].key=dedicated", "operator.tolerations[0].operator=Exists",
]  # fmt: skip


@pytest.mark.parametrize(
    ("namespaced", "features"), [(False, []), (True, []), (False, EVERYTHING), (True, EVERYTHING)]
)
def test_rendered_chart_passes_a_server_side_dry_run(
    crds, kubectl, namespace, namespaced, features
):
    args = ["template", "haven", str(CHART), "--namespace", namespace, "--include-crds"]
    if namespaced:
        args += ["--set", f"watchNamespaces[0]={namespace}"]
    for feature in features:
        args += ["--set", feature]
    rendered = helm(*args)
    assert rendered.returncode == 0, rendered.stderr
    docs = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "ServiceAccount", "Service", "CustomResourceDefinition"} <= kinds
    if features:
        assert "Ingress" in kinds
        operator = next(
            d
            for d in docs
            if d["metadata"]["name"] == "haven-operator" and d["kind"] == "Deployment"
        )
        pod = operator["spec"]["template"]["spec"]
        assert pod["imagePullSecrets"] == [{"name": "regcred"}]
        assert pod["nodeSelector"] == {"disktype": "ssd"} and pod["tolerations"], pod
    assert (
        {"Role", "RoleBinding"} if namespaced else {"ClusterRole", "ClusterRoleBinding"}
    ) <= kinds
    result = kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=rendered.stdout)
    assert "deployment.apps/haven-operator created (server dry run)" in result.stdout
    accepted = result.stdout.count("(server dry run)")  # created, or configured (the CRDs)
    assert accepted == len(docs), (accepted, len(docs), result.stdout)


def test_the_service_monitor_selects_the_metrics_service():
    rendered = helm("template", "haven", str(CHART), "--set", "metrics.serviceMonitor.enabled=true")
    assert rendered.returncode == 0, rendered.stderr
    docs = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    monitor = next(d for d in docs if d["kind"] == "ServiceMonitor")
    selector = monitor["spec"]["selector"]["matchLabels"]
    services = [
        d for d in docs
        if d["kind"] == "Service" and selector.items() <= d["metadata"]["labels"].items()
    ]  # fmt: skip
    ports = [p["name"] for svc in services for p in svc["spec"]["ports"]]
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"] and "metrics" in ports

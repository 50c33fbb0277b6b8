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


@pytest.mark.parametrize("namespaced", [False, True])
def test_rendered_chart_passes_a_server_side_dry_run(crds, kubectl, namespace, namespaced):
    args = ["template", "haven", str(CHART), "--namespace", namespace, "--include-crds"]
    if namespaced:
        args += ["--set", f"watchNamespaces[0]={namespace}"]
    rendered = helm(*args)
    assert rendered.returncode == 0, rendered.stderr
    kinds = {d["kind"] for d in yaml.safe_load_all(rendered.stdout) if d}
    assert {"Deployment", "ServiceAccount", "Service", "CustomResourceDefinition"} <= kinds
    assert (
        {"Role", "RoleBinding"} if namespaced else {"ClusterRole", "ClusterRoleBinding"}
    ) <= kinds
    result = kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=rendered.stdout)
    assert "deployment.apps/haven-operator created (server dry run)" in result.stdout

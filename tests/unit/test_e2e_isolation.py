"""The e2e suite (tests/e2e) must run against any cluster, so it may know the cluster only by its
kubeconfig: nothing of the local cluster's harness (its processes, state files, network
namespaces, node addresses) and nothing of the other tests' fixtures. Of the project's own
code it imports only the test signal's decoders, which read media and hold no state."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

E2E = Path(__file__).resolve().parents[1] / "e2e"
ALLOWED_FIRST_PARTY = {"haven_localcluster.testsignal", "haven_localcluster.mediacheck"}
FIRST_PARTY = ("haven_localcluster", "haven_operator", "haven_recorder", "haven_gateway", "tests")
# What a reach into the harness would name: its state directory and CLI, the node's network
# namespace and addresses, entering namespaces, containerd's CLI, processes' files.
FORBIDDEN_TEXT = (
    ".localcluster", "haven-localcluster", "HAVEN_STATE_DIR", "HAVEN_CACHE", "haven-node",
    "netns", "nsenter", "10.250.", "/proc/", "/sys/fs/cgroup", "ctr ", "crictl", "/run/containerd",
)  # fmt: skip


def violations(source: str, package: str = "tests.e2e") -> list[str]:
    """What in one module of the e2e package breaks the rule."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: within the e2e package only
                if node.level > 1:
                    found.append(f"relative import {'.' * node.level}{node.module or ''}")
                continue
            base = node.module or ""
            modules = [base] if base != "haven_localcluster" else [
                f"{base}.{alias.name}" for alias in node.names
            ]  # fmt: skip
        else:
            continue
        for module in modules:
            if not module.startswith(FIRST_PARTY) or module.startswith(package):
                continue
            if module not in ALLOWED_FIRST_PARTY:
                found.append(f"import {module}")
    found += [f"mentions {text!r}" for text in FORBIDDEN_TEXT if text in source]
    return found


@pytest.mark.parametrize("path", sorted(E2E.rglob("*.py")), ids=lambda p: p.name)
def test_the_e2e_suite_knows_the_cluster_only_by_its_kubeconfig(path: Path):
    assert violations(path.read_text()) == []


@pytest.mark.parametrize(
    "source",
    [
        "from haven_localcluster.cluster import LocalCluster",
        "from haven_localcluster import release",
        "import haven_localcluster.network",
        "from tests.conftest import cluster",
        "from ..operator.test_end_to_end import wait_for",
        "from haven_operator import children",
        "STATE = '.localcluster/kubeconfig'",
        "run(['ip', 'netns', 'exec', 'haven-node1', 'ss'])",
    ],
)
def test_the_check_finds_a_reach_into_the_harness(source: str):
    assert violations(source)


def test_the_check_allows_the_decoders_and_the_package_itself():
    source = (
        "from haven_localcluster import testsignal\n"
        "from haven_localcluster.mediacheck import analyze\n"
        "from . import infra\nfrom tests.e2e.kube import Target\nimport kubernetes\n"
    )
    assert violations(source) == []

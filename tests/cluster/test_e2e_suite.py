"""`make e2e` against this session's cluster, as a user runs it against theirs: a separate
process given only the kubeconfig and the image references. It must pass, and leave the
cluster's cluster-scoped objects (namespaces, CRDs, cluster RBAC, volumes) as it found them.
The suite installs its own release in namespaces of its own; this runs before the session's
release is installed (stage 2), so no other operator acts on its LiveStreams."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import kubernetes
import pytest

from haven_localcluster import toolchain

ROOT = Path(__file__).resolve().parents[2]


def cluster_scoped(api: kubernetes.client.ApiClient) -> dict[str, set[str]]:
    core = kubernetes.client.CoreV1Api(api)
    rbac = kubernetes.client.RbacAuthorizationV1Api(api)
    ext = kubernetes.client.ApiextensionsV1Api(api)
    storage = kubernetes.client.StorageV1Api(api)
    listed = {
        "namespaces": core.list_namespace(),
        "persistentvolumes": core.list_persistent_volume(),
        "crds": ext.list_custom_resource_definition(),
        "clusterroles": rbac.list_cluster_role(),
        "clusterrolebindings": rbac.list_cluster_role_binding(),
        "storageclasses": storage.list_storage_class(),
    }
    return {kind: {o.metadata.name for o in items.items} for kind, items in listed.items()}


@pytest.mark.timeout(1800)
def test_make_e2e_passes_against_the_clusters_kubeconfig_and_cleans_up(
    cluster, images, api_client, capsys
):
    before = cluster_scoped(api_client)
    tools = toolchain.ensure(["kubectl", "helm"])
    # Nothing of the harness's settings (state or cache directories): only what a user passes.
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("HAVEN_")},
        "KUBECTL": str(tools["kubectl"]),
        "HELM": str(tools["helm"]),
        "HAVEN_OPERATOR_IMAGE": images["operator"].ref,
        "HAVEN_RECORDER_IMAGE": images["recorder"].ref,
        "HAVEN_LIVEKIT_IMAGE": images["livekit"].ref,
        "HAVEN_TESTKIT_IMAGE": images["testkit"].ref,
    }
    env.pop("KUBECONFIG", None)  # the make variable below is all it gets
    proc = subprocess.run(
        ["make", "--no-print-directory", "e2e", f"KUBECONFIG={cluster.kubeconfig}",
         "E2E_ARGS=-v"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1700,
    )  # fmt: skip
    lines = proc.stdout.splitlines()
    durations = [i for i, line in enumerate(lines) if "slowest" in line and "durations" in line]
    with capsys.disabled():  # the inner run's times and result, past the capture
        print("\n[e2e] " + "\n[e2e] ".join(lines[durations[-1] if durations else -1 :]))
    assert proc.returncode == 0, (proc.stdout[-12000:], proc.stderr[-4000:])
    result = lines[-1]  # "=== N passed in ... ===": nothing skipped, nothing deselected
    assert " passed" in result and "skipped" not in result and "deselected" not in result, result
    after = cluster_scoped(api_client)
    assert after == before, {k: (before[k] ^ after[k]) for k in before if before[k] != after[k]}

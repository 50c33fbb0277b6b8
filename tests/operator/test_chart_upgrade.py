"""`helm upgrade` from the previous chart version (0.1.0, whose CRDs lack fields this one has):
the setup hook applies the changed CRDs, the gateway's token survives, and `helm test` passes.
On the real cluster, in a namespace of its own (the release watches only it)."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest

from haven_localcluster import release
from haven_localcluster.release import image_values

ROOT = Path(__file__).resolve().parents[2]
PREVIOUS = "f3f1437"  # the last commit with chart 0.1.0


@pytest.fixture
def previous_chart(tmp_path: Path) -> Path:
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", PREVIOUS, "charts/haven-streams"],
        capture_output=True, check=True,
    )  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(tmp_path)], input=archive.stdout, check=True)
    return tmp_path / "charts" / "haven-streams"


def pod_properties(kubectl) -> dict:
    crd = json.loads(kubectl("get", "crd", "livestreams.streams.haven.dev", "-o", "json").stdout)
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return spec["properties"]["pod"]["properties"]


def token(kubectl, namespace: str) -> tuple[str, dict]:
    out = kubectl("get", "secret", "up-gateway-token", "-n", namespace, "-o", "json").stdout
    secret = json.loads(out)
    return base64.b64decode(secret["data"]["token"]).decode(), secret["metadata"]


def test_upgrade_from_the_previous_chart_applies_changed_crds(
    cluster, kubectl, crds, images, namespace, previous_chart, tmp_path
):
    small = {"requests": {"cpu": "10m", "memory": "64Mi"}}
    common = {
        "watchNamespaces": [namespace],
        "operator": {"resources": small},
        "gateway": {"enabled": True, "auth": {"enabled": True}, "resources": small},
    }
    old_values = {
        **common,
        "image": {
            "operator": images["operator"].ref,
            "streamPod": images["recorder"].ref,
            "pullPolicy": "Never",
        },
    }
    new_values = {
        **common,
        "image": {
            "operator": image_values(images["operator"].ref),
            "streamPod": image_values(images["recorder"].ref),
            "pullPolicy": "Never",
        },
    }
    (tmp_path / "old.json").write_text(json.dumps(old_values))
    (tmp_path / "new.json").write_text(json.dumps(new_values))
    # The CRDs as chart 0.1.0 left them (Helm never upgraded crds/).
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(previous_chart / "crds"))
    assert "priorityClassName" not in pod_properties(kubectl)
    try:
        release.helm(
            cluster, "install", "up", str(previous_chart), "-n", namespace,
            "--values", str(tmp_path / "old.json"), "--wait", "--timeout=240s",
        )  # fmt: skip
        before, _ = token(kubectl, namespace)
        release.helm(
            cluster, "upgrade", "up", str(release.CHART), "-n", namespace,
            "--values", str(tmp_path / "new.json"), "--wait", "--timeout=240s",
        )  # fmt: skip
        assert "priorityClassName" in pod_properties(kubectl)  # the hook applied the new CRDs
        after, meta = token(kubectl, namespace)
        assert after == before  # clients stay logged in
        assert meta["annotations"]["helm.sh/resource-policy"] == "keep"
        # A second upgrade, as a GitOps sync would do: nothing changes.
        release.helm(
            cluster, "upgrade", "up", str(release.CHART), "-n", namespace,
            "--values", str(tmp_path / "new.json"), "--wait", "--timeout=240s",
        )  # fmt: skip
        assert token(kubectl, namespace)[0] == before
        out = release.helm(cluster, "test", "up", "-n", namespace, "--logs", "--timeout=180s")
        assert "Phase:          Succeeded" in out or "Succeeded" in out, out
        assert "operator Ready: up-operator" in out and "gateway healthy" in out, out
        release.helm(cluster, "uninstall", "up", "-n", namespace, "--wait")
    finally:
        kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))

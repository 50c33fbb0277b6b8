"""The Helm chart: lint-clean, CRDs identical to crds/, and what it renders is accepted by the
real apiserver (server-side dry run) in both RBAC modes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from haven_localcluster import toolchain

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "haven-streams"


def helm(*args: str) -> subprocess.CompletedProcess:
    binary = toolchain.ensure(["helm"])["helm"]
    if args[0] == "template" and "--kube-version" not in args:
        # Offline, helm assumes Kubernetes 1.20, below the chart's kubeVersion.
        args = (*args, "--kube-version", toolchain.KUBERNETES_VERSION)
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
    "operator.priorityClassName=system-cluster-critical",
    "operator.podAnnotations.example\\.test/scrape=yes",
    "operator.extraEnv[0].name=EXTRA", "operator.extraEnv[0].value=extra",
    "operator.serviceAccount.annotations.iam\\.gke\\.io/gcp-service-account=op@p.test",
    "operator.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
    ".nodeSelectorTerms[0].matchExpressions[0].key=kubernetes.io/os",
    "operator.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
    ".nodeSelectorTerms[0].matchExpressions[0].operator=Exists",
    "streamPod.nodeSelector.media=yes", "streamPod.priorityClassName=streams",
    "streamPod.tolerations[0].key=media", "streamPod.tolerations[0].operator=Exists",
    "image.operator.digest=sha256:" + "a" * 64, "image.streamPod.tag=1.2.3",
    "networkPolicy.extraControlFrom[0].podSelector.matchLabels.app=prometheus",
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
        assert pod["affinity"] and pod["priorityClassName"] == "system-cluster-critical"
        container = pod["containers"][0]
        assert container["image"] == "haven-operator@sha256:" + "a" * 64
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["HAVEN_STREAM_POD_IMAGE"] == "haven-recorder:1.2.3" and env["EXTRA"] == "extra"
        assert json.loads(env["HAVEN_IMAGE_PULL_SECRETS"]) == [{"name": "regcred"}]
        assert json.loads(env["HAVEN_STREAM_POD_NODE_SELECTOR"]) == {"media": "yes"}
        assert env["HAVEN_STREAM_POD_PRIORITY_CLASS"] == "streams"
    assert (
        {"Role", "RoleBinding"} if namespaced else {"ClusterRole", "ClusterRoleBinding"}
    ) <= kinds
    # The `helm test` pod's ServiceAccount must exist for the pod's admission (Helm makes it
    # first, as a hook of lower weight); a dry run makes nothing.
    kubectl("create", "serviceaccount", "haven-operator-test", "-n", namespace)
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


def render(*sets: str, release: str = "haven", namespace: str = "haven-system") -> list[dict]:
    args = ["template", release, str(CHART), "--namespace", namespace]
    for value in sets:
        args += ["--set", value]
    rendered = helm(*args)
    assert rendered.returncode == 0, rendered.stderr
    return [d for d in yaml.safe_load_all(rendered.stdout) if d]


def find(docs: list[dict], kind: str, name: str) -> dict:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def test_images_default_to_the_app_version_and_pin_by_digest():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    pod = find(render(), "Deployment", "haven-operator")["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == f"haven-operator:{chart['appVersion']}"
    digest = "sha256:" + "b" * 64
    pod = find(render(f"image.operator.digest={digest}", "image.operator.tag=v9"), "Deployment",
               "haven-operator")["spec"]["template"]["spec"]  # fmt: skip
    assert pod["containers"][0]["image"] == f"haven-operator@{digest}"


def test_two_releases_in_one_namespace_share_no_object():
    features = [
        "gateway.enabled=true", "gateway.auth.enabled=true", "metrics.serviceMonitor.enabled=true",
    ]  # fmt: skip
    names = {}
    for release in ("one", "two"):
        for doc in render(*features, release=release, namespace="shared"):
            key = (doc["kind"], doc["metadata"].get("namespace", ""), doc["metadata"]["name"])
            assert key not in names, (key, names.get(key), release)
            names[key] = release
    op = render("fullnameOverride=streams", release="x", namespace="shared")
    assert find(op, "Deployment", "streams") and find(op, "ServiceAccount", "streams")


def test_every_value_has_a_description():
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    missing = []

    def walk(node: dict, path: str) -> None:
        for key, sub in node.get("properties", {}).items():
            if not sub.get("description"):
                missing.append(f"{path}{key}")
            walk(sub, f"{path}{key}.")

    walk(schema, "")
    assert not missing, missing
    assert set(values) <= set(schema["properties"]), set(values) - set(schema["properties"])


def test_metrics_port_zero_turns_the_metrics_server_off():
    docs = render("metrics.port=0", "metrics.serviceMonitor.enabled=true")
    container = find(docs, "Deployment", "haven-operator")["spec"]["template"]["spec"][
        "containers"
    ][0]
    assert [p["name"] for p in container["ports"]] == ["health"]
    assert {e["name"]: e.get("value") for e in container["env"]}["HAVEN_METRICS_PORT"] == "0"
    assert not [
        d
        for d in docs
        if d["kind"] == "ServiceMonitor" or d["metadata"]["name"].endswith("-metrics")
    ]


def test_the_gateway_token_is_the_same_in_every_render():
    features = ("gateway.enabled=true", "gateway.auth.enabled=true")
    first, second = render(*features), render(*features)
    assert first == second
    assert not [d for d in first if d["kind"] == "Secret"]  # the setup hook makes it, once
    job = find(first, "Job", "haven-operator-setup")
    env = {
        e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["HAVEN_TOKEN_SECRET"] == "haven-gateway-token"
    assert not any("lookup" in p.read_text() for p in (CHART / "templates").iterdir())


def rules_of(docs: list[dict], kind: str, name: str) -> list[dict]:
    return [
        r for d in docs if d["kind"] == kind and d["metadata"]["name"] == name for r in d["rules"]
    ]


def test_rbac_finalizers_and_no_cluster_wide_secrets_when_namespaced():
    cluster_wide = rules_of(render(), "ClusterRole", "haven-operator-haven-system")
    assert {"resources": ["livestreams/finalizers", "recordings/finalizers"], "verbs": ["update"],
            "apiGroups": ["streams.haven.dev"]} in cluster_wide  # fmt: skip
    docs = render("watchNamespaces[0]=a", "watchNamespaces[1]=b", "gateway.enabled=true",
                  "gateway.auth.enabled=true")  # fmt: skip
    for doc in docs:
        if doc["kind"] == "ClusterRole":
            resources = {r for rule in doc["rules"] for r in rule["resources"]}
            assert "secrets" not in resources, doc
    roles = {
        d["metadata"]["namespace"]
        for d in docs
        if d["kind"] == "Role" and d["metadata"]["name"] == "haven-operator"
    }
    assert roles == {"a", "b"}


def test_kube_version_is_declared():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["kubeVersion"] == ">=1.29.0-0"
    result = helm("template", "x", str(CHART), "--kube-version", "1.28.9")
    assert result.returncode != 0 and "kubeVersion" in result.stderr


def test_only_operator_pods_carry_the_operators_selector():
    docs = render("gateway.enabled=true", "gateway.auth.enabled=true")
    operator = find(docs, "Deployment", "haven-operator")
    selector = operator["spec"]["selector"]["matchLabels"].items()
    pods = {
        f"{d['kind']}/{d['metadata']['name']}": (
            d["spec"]["template"]["metadata"]["labels"]
            if d["kind"] != "Pod"
            else d["metadata"]["labels"]
        )
        for d in docs
        if d["kind"] in ("Deployment", "Job", "Pod")
    }
    assert {"Job/haven-operator-setup", "Pod/haven-operator-test"} <= set(pods)
    matching = [name for name, labels in pods.items() if selector <= labels.items()]
    assert matching == ["Deployment/haven-operator"], matching

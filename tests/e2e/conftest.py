"""The e2e suite's options and fixtures. One session installs, into its own namespace: LiveKit,
the pump.fun stand-in and a publisher (tests/e2e/infra.py), then the chart's release with the
given images; each test gets a namespace of its own. Everything made is labelled with the
run's id, and removed at the end: test namespaces (while the operator still runs, to finalize
their LiveStreams), the release, its namespace, and the CRDs if the run installed them. The
teardown then checks that nothing is left, and fails if something is."""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import kubernetes
import pytest

from . import infra
from .kube import GROUP, VERSION, Target, wait_gone

CHART = Path(__file__).resolve().parents[2] / "charts" / "haven-streams"
CRDS = ("livestreams.streams.haven.dev", "recordings.streams.haven.dev")
IMAGES = {  # option: (environment variable, what it is)
    "operator": ("HAVEN_OPERATOR_IMAGE", "the operator's image (operator/Dockerfile)"),
    "recorder": ("HAVEN_RECORDER_IMAGE", "the stream pod's image (recorder/Dockerfile)"),
    "livekit": ("HAVEN_LIVEKIT_IMAGE", "livekit-server (localcluster/livekit.Dockerfile)"),
    "testkit": ("HAVEN_TESTKIT_IMAGE", "publisher and pump.fun stand-in (localcluster/Dockerfile)"),
}
ROOM = "e2e-cam"  # the publisher's room; the stand-in says the run's mint streams there
TEARDOWN_SECONDS = 300


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("haven-e2e", "the e2e suite's cluster")
    group.addoption(
        "--kubeconfig", default=os.environ.get("KUBECONFIG") or str(Path.home() / ".kube/config"),
        help="the cluster to test (default: $KUBECONFIG, else ~/.kube/config)",
    )  # fmt: skip
    group.addoption("--context", default=None, help="a context of the kubeconfig")
    group.addoption("--kubectl", default=os.environ.get("KUBECTL", "kubectl"))
    group.addoption("--helm", default=os.environ.get("HELM", "helm"))
    for name, (env, what) in IMAGES.items():
        group.addoption(f"--{name}-image", default=os.environ.get(env), help=f"{what}; ${env}")
    group.addoption("--image-pull-policy", default="IfNotPresent")
    group.addoption(
        "--storage-class", default=None, help="for the recordings (default: the cluster's default)"
    )


@pytest.fixture(scope="session")
def target(pytestconfig: pytest.Config) -> Target:
    opt = pytestconfig.getoption
    if not Path(opt("kubeconfig")).is_file():
        raise pytest.UsageError(f"no kubeconfig at {opt('kubeconfig')}: pass --kubeconfig")
    return Target(opt("kubeconfig"), opt("context"), opt("kubectl"), opt("helm"))


@pytest.fixture(scope="session")
def images(pytestconfig: pytest.Config) -> infra.Images:
    refs = {name: pytestconfig.getoption(f"{name}_image") for name in IMAGES}
    if missing := [n for n, ref in refs.items() if not ref]:
        raise pytest.UsageError(
            "the e2e suite needs image references: "
            + ", ".join(f"--{n}-image or ${IMAGES[n][0]}" for n in missing)
        )
    return infra.Images(**refs, pull_policy=pytestconfig.getoption("image_pull_policy"))


@pytest.fixture(scope="session")
def api(target: Target) -> kubernetes.client.ApiClient:
    return target.client()


@pytest.fixture(scope="session")
def run_id() -> str:
    return uuid.uuid4().hex[:6]


@pytest.fixture(scope="session")
def labels(run_id: str) -> dict[str, str]:
    return {infra.RUN_LABEL: run_id}


@pytest.fixture(scope="session")
def storage_class(api, pytestconfig: pytest.Config) -> str:
    """The StorageClass for the LiveStreams' claims: given, or the cluster's default."""
    if given := pytestconfig.getoption("storage_class"):
        return given
    default = "storageclass.kubernetes.io/is-default-class"
    for sc in kubernetes.client.StorageV1Api(api).list_storage_class().items:
        if (sc.metadata.annotations or {}).get(default) == "true":
            return sc.metadata.name
    raise pytest.UsageError("the cluster has no default StorageClass: pass --storage-class")


@dataclass(frozen=True)
class Stack:
    """What the session installed: the infra (LiveKit, stand-in) and the release."""

    infra: infra.Infra
    release: str
    room: str
    mint: str
    storage_class: str


def _other_operators(api, own_namespace: str) -> list[str]:
    deployments = kubernetes.client.AppsV1Api(api).list_deployment_for_all_namespaces(
        label_selector="app.kubernetes.io/name=haven-operator"
    )
    return [
        f"{d.metadata.namespace}/{d.metadata.name}"
        for d in deployments.items
        if d.metadata.namespace != own_namespace
    ]


def _crds_present(api) -> set[str]:
    ext = kubernetes.client.ApiextensionsV1Api(api)
    return {c.metadata.name for c in ext.list_custom_resource_definition().items} & set(CRDS)


def create_namespace(api, name: str, labels: dict[str, str]) -> None:
    kubernetes.client.CoreV1Api(api).create_namespace(
        {"metadata": {"name": name, "labels": labels}}
    )


def delete_namespaces(api, names: list[str], wait: bool = True) -> None:
    """Delete them and, with `wait`, wait until they are gone (the test namespaces are left
    to go together, and waited for in the session's teardown)."""
    core = kubernetes.client.CoreV1Api(api)
    for name in names:
        try:
            core.delete_namespace(name)
        except kubernetes.client.ApiException as e:
            if e.status not in (404, 409):  # gone, or going already
                raise
    if not wait:
        return

    def present() -> list[str]:
        return sorted({n.metadata.name for n in core.list_namespace().items} & set(names))

    wait_gone("namespaces deleted", present, timeout=TEARDOWN_SECONDS)


def _diagnose(target: Target, labels: dict, release: str, config: pytest.Config) -> None:
    """After a failure, before the teardown removes them: pods, events and operator logs."""
    selector = ",".join(f"{k}={v}" for k, v in labels.items())
    names = target.kubectl(
        "get", "namespaces", "-l", selector, "-o", "name", check=False
    ).stdout.split()
    shown = []
    for ns in (n.removeprefix("namespace/") for n in names):
        for what in (("get", "pods,ls,rec", "-o", "wide"), ("get", "events")):
            out = target.kubectl(*what, "-n", ns, check=False)
            shown.append(f"--- kubectl {' '.join(what)} -n {ns}\n{out.stdout}{out.stderr}")
    operator = target.kubectl(
        "logs", "-n", release, f"deployment/{release}-operator", "--tail=200", check=False
    )
    shown.append(f"--- operator log (last 200 lines)\n{operator.stdout}{operator.stderr}")
    for pod in (f"deploy/{infra.LIVEKIT}", f"deploy/{infra.PUMPFUN}", f"pod/publisher-{ROOM}"):
        out = target.kubectl("logs", "-n", release, pod, "--tail=30", check=False)
        shown.append(f"--- {pod} log (last 30 lines)\n{out.stdout}{out.stderr}")
    terminal = config.pluginmanager.get_plugin("terminalreporter")
    if terminal is not None:
        terminal.write_line("\n".join(shown))


@pytest.fixture(scope="session")
def stack(
    target: Target,
    api,
    images: infra.Images,
    labels: dict,
    run_id: str,
    storage_class: str,
    request: pytest.FixtureRequest,
) -> Iterator[Stack]:
    namespace = release = f"haven-e2e-{run_id}"
    if others := _other_operators(api, namespace):
        raise pytest.UsageError(
            f"another haven operator runs in this cluster ({', '.join(others)}); the e2e suite "
            "installs its own: uninstall that release first"
        )
    crds_before = _crds_present(api)
    lk = infra.Infra(namespace, infra.new_secret())
    mint = infra.new_mint()
    create_namespace(api, namespace, labels)
    installed = ready = False
    try:
        target.apply(
            namespace,
            infra.keys_secret(lk, labels),
            *infra.livekit(images, labels),
            *infra.pumpfun(images, labels, {mint: ROOM}),
            infra.publisher(images, labels, lk, ROOM),
        )
        installed = True
        with tempfile.NamedTemporaryFile("w", suffix=".json") as values:
            json.dump(infra.release_values(images, lk), values)
            values.flush()
            target.helm(
                "upgrade", "--install", release, str(CHART), "--namespace", namespace,
                "--values", values.name, "--wait", "--timeout=300s",
            )  # fmt: skip
        target.helm("test", release, "--namespace", namespace, "--logs", "--timeout=300s")
        for name in (infra.LIVEKIT, infra.PUMPFUN):
            target.kubectl(
                "rollout", "status", "-n", namespace, f"deployment/{name}", "--timeout=300s",
                timeout=330,
            )  # fmt: skip
        target.kubectl(
            "wait", "-n", namespace, f"pod/publisher-{ROOM}", "--for=condition=Ready",
            "--timeout=300s", timeout=330,
        )  # fmt: skip
        ready = True
        yield Stack(lk, release, ROOM, mint, storage_class)
    finally:
        if request.session.testsfailed or not ready:
            _diagnose(target, labels, release, request.config)
        _teardown(target, api, labels, namespace, release if installed else None, crds_before)


def _teardown(target: Target, api, labels, namespace, release, crds_before) -> None:
    """Every step runs even if one before failed; the first failure is raised at the end."""
    core = kubernetes.client.CoreV1Api(api)
    selector = ",".join(f"{k}={v}" for k, v in labels.items())
    errors: list[BaseException] = []

    def step(fn, *args) -> None:
        try:
            fn(*args)
        except Exception as e:
            errors.append(e)

    # Test namespaces first, while the operator runs to finalize their LiveStreams.
    tests = [
        n.metadata.name
        for n in core.list_namespace(label_selector=selector).items
        if n.metadata.name != namespace
    ]
    step(_delete_test_namespaces, api, tests)
    if release:
        step(_uninstall, target, api, release, namespace)
    step(delete_namespaces, api, [namespace])
    made = _crds_present(api) - crds_before
    ext = kubernetes.client.ApiextensionsV1Api(api)
    for crd in made:
        step(ext.delete_custom_resource_definition, crd)
    step(wait_gone, "the run's CRDs deleted", lambda: sorted(_crds_present(api) - crds_before))
    step(check_clean, api, labels, release or "")
    if errors:
        raise errors[0]


def _delete_test_namespaces(api, names: list[str]) -> None:
    """Delete them; if the operator cannot finalize what is in them (it failed), drop the
    finalizers by hand (as README says to) so that the run still cleans up, and say so."""
    try:
        delete_namespaces(api, names)
        return
    except AssertionError as stuck:
        objects = kubernetes.client.CustomObjectsApi(api)
        for ns in names:
            for plural in ("recordings", "livestreams"):
                listed = objects.list_namespaced_custom_object(GROUP, VERSION, ns, plural)
                for item in listed["items"]:
                    objects.patch_namespaced_custom_object(
                        GROUP, VERSION, ns, plural, item["metadata"]["name"],
                        {"metadata": {"finalizers": None}},
                    )  # fmt: skip
        delete_namespaces(api, names)
        raise AssertionError(f"finalizers had to be removed by hand: {stuck}") from stuck


def _uninstall(target: Target, api, release: str, namespace: str) -> None:
    out = target.helm(
        "uninstall", release, "--namespace", namespace, "--wait", "--timeout=300s", check=False
    )
    if out.returncode != 0 and "not found" not in out.stderr:
        raise AssertionError(f"helm uninstall {release} failed:\n{out.stderr}")
    # A hook that failed keeps its cluster RBAC (deleted only on success): delete it too.
    rbac = kubernetes.client.RbacAuthorizationV1Api(api)
    instance = f"app.kubernetes.io/instance={release}"
    for binding in rbac.list_cluster_role_binding(label_selector=instance).items:
        rbac.delete_cluster_role_binding(binding.metadata.name)
    for role in rbac.list_cluster_role(label_selector=instance).items:
        rbac.delete_cluster_role(role.metadata.name)


def check_clean(api, labels: dict[str, str], release: str) -> None:
    """Nothing the run made is left: namespaces, cluster RBAC of its release, volumes of its
    claims (the provisioner deletes them after their claims, so wait for it)."""
    selector = ",".join(f"{k}={v}" for k, v in labels.items())
    core = kubernetes.client.CoreV1Api(api)
    rbac = kubernetes.client.RbacAuthorizationV1Api(api)
    namespaces = core.list_namespace(label_selector=selector).items
    left = [f"namespace/{n.metadata.name}" for n in namespaces]
    if release:
        instance = f"app.kubernetes.io/instance={release}"
        left += [
            f"clusterrole/{r.metadata.name}"
            for r in rbac.list_cluster_role(label_selector=instance).items
        ]
        left += [
            f"clusterrolebinding/{b.metadata.name}"
            for b in rbac.list_cluster_role_binding(label_selector=instance).items
        ]
    assert not left, f"the e2e run left {left}"
    prefix = f"haven-e2e-{labels[infra.RUN_LABEL]}"

    def volumes() -> list[str]:
        return [
            f"persistentvolume/{pv.metadata.name}"
            for pv in core.list_persistent_volume().items
            if pv.spec.claim_ref is not None and pv.spec.claim_ref.namespace.startswith(prefix)
        ]

    for pv in core.list_persistent_volume().items:  # a Retain class keeps them: released
        ref = pv.spec.claim_ref
        retained = pv.spec.persistent_volume_reclaim_policy != "Delete"
        if ref is not None and ref.namespace.startswith(prefix) and retained:
            core.delete_persistent_volume(pv.metadata.name)
    wait_gone("the run's volumes deleted", volumes, timeout=TEARDOWN_SECONDS)


@pytest.fixture
def namespace(api, stack: Stack, labels: dict, run_id: str) -> Iterator[str]:
    """A namespace for one test; deleted after it (the operator finalizes what is in it)."""
    name = f"haven-e2e-{run_id}-{uuid.uuid4().hex[:4]}"
    create_namespace(api, name, labels)
    yield name
    delete_namespaces(api, [name], wait=False)

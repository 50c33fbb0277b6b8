"""Shared fixtures: one real local cluster (control plane and node, with the project's images)
and one livekit-server per test session, a fresh namespace per test, and a synthetic publisher
per test that asks for one.

Order: the tests that need no cluster (the stream pod against livekit-server, units) run first,
on a quiet machine; then the cluster's own tests; last the ones with the chart's operator and
gateway installed. livekit-server needs only the node's network (its host address), not the
cluster, so the stream-pod tests never wait for or compete with the control plane."""

from __future__ import annotations

import re
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import kubernetes
import pytest

from haven_localcluster import release, toolchain
from haven_localcluster.cluster import LocalCluster
from haven_localcluster.images import Image, ensure_images
from haven_localcluster.livekit import LiveKitServer
from haven_localcluster.network import NodeNetwork, free_network
from haven_localcluster.process import Proc, normal_scheduling, stop
from haven_localcluster.publisher import spawn_publisher
from tests.recorder.noise_publisher import spawn_noise_publisher

Kubectl = Callable[..., subprocess.CompletedProcess]
# The chart's operator and gateway, pump.fun; the S3-compatible server.
pytest_plugins = ["tests.release_fixtures", "tests.s3_fixtures"]
# The e2e suite runs against a cluster it is given, with its own configuration (`make e2e`);
# tests/cluster/test_e2e_suite.py runs it against this session's cluster.
collect_ignore = ["e2e"]


def stage(item: pytest.Item) -> int:
    """When a test runs: 0 marked `first`, 1 without the cluster, 2 with the cluster, 3 with
    the chart's release installed, 4 marked `last` (after everything the release did)."""
    if item.get_closest_marker("first"):
        return 0
    if item.get_closest_marker("last"):
        return 4
    fixtures = set(getattr(item, "fixturenames", ()))
    if fixtures & {"operator", "gateway"}:
        return 3
    return 2 if "cluster" in fixtures else 1


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "last: runs after every other test (stage 4)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=stage)  # stable: within a stage, tests keep their order


def report(config: pytest.Config, line: str) -> None:
    """Print past pytest's output capture."""
    terminal = config.pluginmanager.get_plugin("terminalreporter")
    if terminal is not None:
        terminal.write_line(line)


@pytest.fixture(autouse=True)
def normal_priority() -> Iterator[None]:
    """A test that used the livekit SDK in this process may leave its thread real-time (see
    process.normal_scheduling): put it back, so the session's own work and whatever it starts
    later share the CPU as usual."""
    yield
    normal_scheduling()


@pytest.fixture(scope="session")
def images(pytestconfig: pytest.Config) -> dict[str, Image]:
    """The project's images, built here without Docker (cached by their inputs)."""
    built = ensure_images()
    report(pytestconfig, "[images] " + ", ".join(f"{i.ref}" for i in built.values()))
    return built


@pytest.fixture(scope="session")
def node_network() -> Iterator[NodeNetwork]:
    """The node's network, made before the cluster: livekit-server listens on its host end."""
    network = free_network()
    network.create()
    yield network
    network.delete()


@pytest.fixture(scope="session")
def cluster(
    tmp_path_factory: pytest.TempPathFactory,
    pytestconfig: pytest.Config,
    images,
    node_network: NodeNetwork,
) -> Iterator[LocalCluster]:
    # The apiserver's audit log keeps the chart's ServiceAccounts' requests (haven-system's):
    # the RBAC test compares the verbs they used with the rules (tests/operator/test_rbac_audit.py).
    local = LocalCluster(
        tmp_path_factory.mktemp("cluster"), images, network=node_network, own_network=False,
        audit_groups=(f"system:serviceaccounts:{release.NAMESPACE}",),
    )  # fmt: skip
    timings = local.start()
    report(
        pytestconfig,
        f"[cluster] /readyz after {timings['kube-apiserver']:.1f}s; node Ready after "
        f"{timings['node-ready']:.1f}s; "
        + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items())
        + f"; logs in {local.log_dir}",
    )
    yield local
    local.stop()


@pytest.fixture(scope="session")
def kubectl(cluster: LocalCluster) -> Kubectl:
    binary = str(toolchain.ensure(["kubectl"])["kubectl"])

    def run(
        *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [binary, f"--kubeconfig={cluster.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed:\n{proc.stderr}")
        return proc

    return run


@pytest.fixture(scope="session")
def api_client(cluster: LocalCluster) -> kubernetes.client.ApiClient:
    return kubernetes.config.new_client_from_config(config_file=str(cluster.kubeconfig))


@pytest.fixture
def namespace(
    api_client: kubernetes.client.ApiClient, request: pytest.FixtureRequest
) -> Iterator[str]:
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:40].strip("-")
    name = f"t-{slug}-{uuid.uuid4().hex[:5]}"
    core = kubernetes.client.CoreV1Api(api_client)
    core.create_namespace({"metadata": {"name": name}})
    yield name
    core.delete_namespace(name)
    # Gone before the next test starts: a terminating namespace's pods still use the node.
    deadline = time.monotonic() + 180
    while core.list_namespace(field_selector=f"metadata.name={name}").items:
        if time.monotonic() > deadline:
            raise AssertionError(f"namespace {name} still terminating after 180 s")
        time.sleep(0.5)


@pytest.fixture(scope="session")
def livekit_server(
    tmp_path_factory: pytest.TempPathFactory,
    pytestconfig: pytest.Config,
    node_network: NodeNetwork,
) -> Iterator[LiveKitServer]:
    """livekit-server for the host (`url`) and for pods on the node (`cluster_url`)."""
    server = LiveKitServer(tmp_path_factory.mktemp("livekit"), cluster_address=node_network.host_ip)
    server.start()
    report(pytestconfig, f"[livekit] {server.url}; log in {server.state_dir / 'logs'}")
    yield server
    server.stop()


@pytest.fixture
def start_publisher(livekit_server: LiveKitServer, tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    """Start a synthetic publisher in a room; every one started is stopped after the test."""
    procs: list[Proc] = []

    def start(
        room: str, identity: str = "synthetic-publisher", options: Sequence[str] = ()
    ) -> Proc:
        """`options` are more publisher flags, such as `--width 720 --height 405`."""
        server = livekit_server
        proc = spawn_publisher(
            server.url, server.api_key, server.api_secret, room, tmp_path, identity,
            options=options,
        )  # fmt: skip
        procs.append(proc)
        return proc

    yield start
    stop(procs)


@pytest.fixture
def noise_room(livekit_server: LiveKitServer, tmp_path: Path) -> Iterator[str]:
    """A room with a publisher of video noise (recordings of it grow fast); its name."""
    room = f"noise-{uuid.uuid4().hex[:8]}"
    server = livekit_server
    proc = spawn_noise_publisher(server.url, server.api_key, server.api_secret, room, tmp_path)
    yield room
    stop([proc])


@pytest.fixture
def publisher(start_publisher: Callable[..., Proc]) -> str:
    """A synthetic publisher in a room of its own; the room's name."""
    room = f"room-{uuid.uuid4().hex[:8]}"
    start_publisher(room)
    return room

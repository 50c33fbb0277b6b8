"""A WebSocket viewer through the Ingress controller held for 5 minutes at 15 fps.

The soak costs 5 minutes, so it runs beside the rest of the suite: the first test (stage 2: it
needs the cluster, not the chart) deploys a stream pod with its Service and Ingress in a
namespace of its own and starts the viewer in a thread; the last test (stage 4) asserts what
it saw. The pod is deployed directly, not by the operator, so nothing the operator tests do
(chart upgrades that roll every stream pod, operator restarts) touches it. The client sends
nothing and no pings: a controller that cut an idle client side would show here."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import kubernetes
import pytest

from haven_localcluster import ingress as ingress_mod
from haven_localcluster.process import stop
from haven_localcluster.publisher import spawn_publisher
from tests.conftest import report
from tests.operator.test_end_to_end import apply, wait_for
from tests.recorder.conftest import decode_video_message

from .conftest import Controller
from .test_ingress import delete_namespace

SOAK_SECONDS = 300
FPS = 15


@dataclass
class Soak:
    host: str
    opened: threading.Event = field(default_factory=threading.Event)
    frames: list[tuple[float, int | None]] = field(default_factory=list)  # (t since open, n)
    closed: str | None = None  # how the socket ended before the soak did, if it did
    held: float = 0.0
    error: BaseException | None = None
    thread: threading.Thread | None = None

    async def hold(self, controller: Controller) -> None:
        async with controller.websocket(self.host, "/stream?mode=binary", ping_interval=None) as ws:
            start = time.monotonic()
            self.opened.set()
            while (now := time.monotonic() - start) < SOAK_SECONDS:
                try:
                    msg = await asyncio.wait_for(ws.recv(), timeout=SOAK_SECONDS - now)
                except TimeoutError:
                    break
                except Exception as exc:  # closed by someone: the drop this test looks for
                    self.closed = f"{type(exc).__name__}: {exc}"
                    break
                if isinstance(msg, bytes) and msg[0] == 1:
                    self.frames.append((time.monotonic() - start, decode_video_message(msg)[0]))
            self.held = time.monotonic() - start

    def run(self, controller: Controller) -> None:
        try:
            asyncio.run(self.hold(controller))
        except BaseException as exc:  # reported by the last test
            self.error = exc
            self.opened.set()


@pytest.fixture(scope="session")
def soak(
    kubectl, api_client, images, livekit_server, ingress_controller: Controller, tmp_path_factory
) -> Iterator[Soak]:
    namespace = f"t-soak-{uuid.uuid4().hex[:5]}"
    core = kubernetes.client.CoreV1Api(api_client)
    core.create_namespace({"metadata": {"name": namespace}})
    room = f"soak-{uuid.uuid4().hex[:8]}"
    lk = livekit_server
    pub = spawn_publisher(
        lk.url, lk.api_key, lk.api_secret, room, tmp_path_factory.mktemp("soak-publisher"),
        options=["--width", "320", "--height", "180"],
    )  # fmt: skip
    state = Soak(host=f"{namespace}.haven.test")
    try:
        livekit = {"url": lk.cluster_url, "api_key": lk.api_key, "api_secret": lk.api_secret}
        objects = ingress_mod.stream_pod_manifests(
            images["recorder"].ref, livekit, room, state.host, name="soak", max_fps=FPS,
            max_width=320,
        )  # fmt: skip
        apply(kubectl, namespace, *objects)
        kubectl("rollout", "status", "-n", namespace, "deployment/soak", "--timeout=120s")
        wait_for(lambda: ingress_controller.get(state.host, "/").status_code == 200, timeout=60)
        state.thread = threading.Thread(
            target=state.run, args=(ingress_controller,), name="ingress-soak", daemon=True
        )
        state.thread.start()
        yield state
    finally:
        if state.thread is not None:
            state.thread.join(timeout=SOAK_SECONDS + 60)
        stop([pub])
        delete_namespace(core, namespace)


def test_a_viewer_through_the_ingress_starts_its_soak(soak: Soak):
    """Stage 2: the socket opens through the controller and frames arrive; the soak goes on in
    its thread while the rest of the suite runs."""
    assert soak.opened.wait(60) and soak.error is None, soak.error
    wait_for(lambda: len(soak.frames) >= 5, timeout=60)
    assert all(n is not None for _, n in soak.frames[:5]), soak.frames[:5]


@pytest.mark.last
def test_the_viewer_through_the_ingress_stayed_connected_for_5_minutes(soak: Soak, pytestconfig):
    """Stage 4: the same socket was open for 5 minutes, was never closed by the controller, and
    frames kept coming (every minute had some; the rate is printed, not asserted)."""
    assert soak.thread is not None
    soak.thread.join(timeout=SOAK_SECONDS + 120)
    assert not soak.thread.is_alive(), "the soak did not end"
    assert soak.error is None, repr(soak.error)
    assert soak.closed is None, f"dropped after {soak.frames[-1][0] if soak.frames else 0:.0f}s"
    assert soak.held >= SOAK_SECONDS, soak.held
    minutes = {int(t // 60) for t, _ in soak.frames}
    assert minutes >= set(range(SOAK_SECONDS // 60)), sorted(minutes)
    counters = [n for _, n in soak.frames if n is not None]
    assert counters == sorted(counters), "frames out of order"
    rate = len(soak.frames) / soak.held
    report(
        pytestconfig,
        f"[ingress soak] {soak.held:.0f}s open through Traefik, {len(soak.frames)} frames, "
        f"{rate:.1f} fps (pod maxFps {FPS})",
    )

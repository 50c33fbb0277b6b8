"""A stream pod (`python -m haven_recorder`) as a real process, and clients for it."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import simplejpeg

from haven_localcluster import testsignal as ts
from haven_localcluster.process import stop
from haven_localcluster.publisher import spawn_publisher
from haven_localcluster.streampod import StreamPod, livekit_args

__all__ = ["StreamPod", "decode_video_message", "live_pod", "livekit_args"]


@pytest.fixture
def stream_pod(tmp_path: Path) -> Iterator[Callable[..., StreamPod]]:
    """Start stream pods with the given flags; all are stopped after the test."""
    pods: list[StreamPod] = []

    def start(*args: str, recordings: Path | None = None) -> StreamPod:
        pod = StreamPod(
            list(args), recordings or tmp_path / "recordings", tmp_path / f"pod{len(pods)}"
        )
        pods.append(pod)
        return pod.start()

    yield start
    for pod in pods:
        pod.stop()


@contextmanager
def live_pod(server, root: Path, *pod_args: str) -> Iterator[StreamPod]:
    """A publisher in a room of its own and a stream pod (default flags plus `pod_args`)
    following it, live; both stopped afterwards."""
    room = f"{root.name}-{uuid.uuid4().hex[:8]}"
    publisher = spawn_publisher(server.url, server.api_key, server.api_secret, room, root)
    args = [*livekit_args(server, room), *pod_args]
    pod = StreamPod(args, root / "recordings", root / "pod").start()
    try:
        pod.wait_state("live")
        yield pod
    finally:
        pod.stop()
        stop([publisher])


@pytest.fixture(scope="module")
def shared_pod(livekit_server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StreamPod]:
    """One publisher and one live stream pod with default flags, for the tests that only
    record or watch (each stops what it starts)."""
    with live_pod(livekit_server, tmp_path_factory.mktemp("shared")) as pod:
        yield pod


def decode_video_message(message: str | bytes) -> tuple[int | None, int, int]:
    """A viewer message's counter, width and height (JSON or binary mode)."""
    if isinstance(message, bytes):
        width, height = int.from_bytes(message[9:11]), int.from_bytes(message[11:13])
        jpeg = message[13:]
    else:
        msg = json.loads(message)
        width, height, jpeg = msg["width"], msg["height"], base64.b64decode(msg["data"])
    luma = simplejpeg.decode_jpeg(jpeg, colorspace="GRAY")[:, :, 0]
    assert luma.shape == (height, width)
    return ts.decode_counter(np.ascontiguousarray(luma)), width, height

"""A LiveStream goes Live from the in-cluster publisher and serves its frames; a Recording of it
completes, and its file, downloaded from the stream pod, decodes to the publisher's pattern;
a pump.fun LiveStream goes Live through the in-cluster stand-in, and deleting it removes its
children. Pods are reached only by `kubectl port-forward`."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import kubernetes
import numpy as np
import pytest
import simplejpeg
from websockets.sync.client import connect

from haven_localcluster import testsignal
from haven_localcluster.mediacheck import analyze

from . import infra
from .conftest import Stack, create_namespace, delete_namespaces
from .kube import Target, condition, custom, port_forward, wait_for, wait_gone

API = "streams.haven.dev/v1alpha1"
LIVE_SECONDS = 300  # a stream pod's image pulled, its claim bound, the room joined


def livestream(name: str, source: dict, stack: Stack) -> dict:
    storage = {"storageClassName": stack.storage_class, "size": "1Gi"}
    return {
        "apiVersion": API,
        "kind": "LiveStream",
        "metadata": {"name": name},
        "spec": {"source": source, "storage": storage},
    }


def credentials(stack: Stack) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "livekit"},
        "stringData": {"apiKey": infra.API_KEY, "apiSecret": stack.infra.api_secret},
    }


def wait_live(api, namespace: str, name: str) -> dict:
    def live() -> dict | None:
        status = custom(api, namespace, "livestreams", name).get("status", {})
        return status if status.get("phase") == "Live" else None

    return wait_for(f"LiveStream {namespace}/{name} Live", live, timeout=LIVE_SECONDS)


@pytest.fixture(scope="module")
def cam(api, target: Target, stack: Stack, labels: dict, run_id: str) -> Iterator[tuple[str, str]]:
    """A LiveStream of the publisher's room, Live; its namespace and name."""
    namespace = f"haven-e2e-{run_id}-{uuid.uuid4().hex[:4]}"
    create_namespace(api, namespace, labels)
    source = {
        "livekit": {
            "url": stack.infra.livekit_url,
            "room": stack.room,
            "credentialsSecretRef": {"name": "livekit"},
        }
    }
    target.apply(namespace, credentials(stack), livestream("cam", source, stack))
    wait_live(api, namespace, "cam")
    yield namespace, "cam"
    delete_namespaces(api, [namespace], wait=False)  # waited for with the others at the end


def frame_counter(message: str | bytes) -> int | None:
    """The publisher's frame counter in a viewer's JSON video message, or None."""
    msg = json.loads(message)
    if msg.get("type") != "video_frame":
        return None
    luma = simplejpeg.decode_jpeg(base64.b64decode(msg["data"]), colorspace="GRAY")[:, :, 0]
    return testsignal.decode_counter(np.ascontiguousarray(luma))


def test_a_livestream_goes_live_from_the_in_cluster_publisher(api, target, cam):
    namespace, name = cam
    status = custom(api, namespace, "livestreams", name)["status"]
    assert status["participant"] == "synthetic-publisher"
    assert (status["video"]["width"], status["video"]["height"]) == (640, 360)
    for type_ in ("Ready", "SourceConnected", "PodReady", "StorageBound"):
        assert condition(status, type_)["status"] == "True", (type_, status)

    # A viewer, through the LiveStream's Service, sees the publisher's counter advance.
    with port_forward(target, namespace, f"svc/{name}-stream", 8080) as port:
        counters: list[int] = []
        with connect(f"ws://127.0.0.1:{port}/stream", open_timeout=30) as ws:
            while len(counters) < 5:
                if (counter := frame_counter(ws.recv(timeout=30))) is not None:
                    counters.append(counter)
    assert counters == sorted(counters) and counters[-1] > counters[0], counters


def test_a_recording_completes_and_its_file_decodes(api, target, cam, stack, tmp_path: Path):
    namespace, name = cam
    recording = {
        "apiVersion": API,
        "kind": "Recording",
        "metadata": {"name": "clip"},
        "spec": {
            "liveStreamRef": {"name": name},
            "format": "h264",
            "quality": "low",
            "maxDuration": "5s",
        },
    }
    target.apply(namespace, recording)

    def completed() -> dict | None:
        status = custom(api, namespace, "recordings", "clip").get("status", {})
        assert status.get("phase") != "Failed", status
        return status if status.get("phase") == "Completed" else None

    status = wait_for("Recording clip Completed", completed, timeout=LIVE_SECONDS)
    assert condition(status, "Complete")["status"] == "True", status
    (part,) = status["files"]

    # Download it from the stream pod's control port, with the LiveStream's control token.
    secret = kubernetes.client.CoreV1Api(api).read_namespaced_secret(f"{name}-control", namespace)
    token = base64.b64decode(secret.data["token"]).decode()
    file = Path(part["path"]).name
    path = tmp_path / file
    with port_forward(target, namespace, f"svc/{name}-stream", 8081) as port:
        url = f"http://127.0.0.1:{port}/recordings/{status['podRecording']}/files/{file}"
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.stream("GET", url, headers=headers, timeout=60) as answer:
            answer.raise_for_status()
            with path.open("wb") as out:
                for chunk in answer.iter_bytes():
                    out.write(chunk)
    assert path.stat().st_size == part["sizeBytes"]

    report = analyze(path)
    assert report.error is None and report.video_codec == "h264", report.error
    assert (report.width, report.height) == (640, 360)
    assert report.audio_codec == "aac" and report.audio_seconds > 0
    counters = [c for c in report.counters if c is not None]
    assert len(counters) >= report.video_frames // 2 and counters == sorted(counters)
    assert 0 < report.duration <= 5.2, report.duration  # maxDuration 5s


def test_a_pumpfun_livestream_goes_live_through_the_stand_in_and_leaves_nothing_when_deleted(
    api, target, namespace, stack
):
    stream = livestream("pump", {"pumpfun": {"mintId": stack.mint}}, stack)
    stream["spec"]["storage"]["reclaimPolicy"] = "Delete"
    target.apply(namespace, stream)
    status = wait_live(api, namespace, "pump")
    assert status["participant"] == "synthetic-publisher", status
    assert condition(status, "SourceConnected")["status"] == "True", status

    # Deleting it takes its children with it (reclaimPolicy Delete: its claim too).
    kubernetes.client.CustomObjectsApi(api).delete_namespaced_custom_object(
        "streams.haven.dev", "v1alpha1", namespace, "livestreams", "pump"
    )
    core, apps = kubernetes.client.CoreV1Api(api), kubernetes.client.AppsV1Api(api)

    def left() -> list[str]:
        listed = [
            ("deployment", apps.list_namespaced_deployment(namespace).items),
            ("service", core.list_namespaced_service(namespace).items),
            ("pvc", core.list_namespaced_persistent_volume_claim(namespace).items),
            ("pod", core.list_namespaced_pod(namespace).items),
            ("secret", core.list_namespaced_secret(namespace).items),
        ]
        objects = [
            f"{kind}/{o.metadata.name}"
            for kind, items in listed
            for o in items
            if o.metadata.name.startswith("pump")
        ]
        if custom(api, namespace, "livestreams", "pump"):
            objects.append("livestream/pump")
        return objects

    wait_gone("LiveStream pump and its children deleted", left, timeout=LIVE_SECONDS)

"""End to end on the local cluster: the chart's operator, the stream-pod image on the node, a
real livekit-server with the synthetic publisher, recordings on a real PersistentVolume."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from pathlib import Path

import websockets

from haven_localcluster.mediacheck import analyze
from tests.recorder.conftest import decode_video_message

from .conftest import OPERATOR_NAMESPACE


def wait_for(fn, timeout: float = 90, interval: float = 0.5):
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"not true after {timeout}s: {last!r}"[:3000])


def apply(kubectl, namespace: str, *objs: dict) -> None:
    for obj in objs:
        kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(obj))


def get(kubectl, namespace: str, *what: str) -> dict:
    result = kubectl("get", "-n", namespace, *what, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else {}


def status(kubectl, namespace: str, kind: str, name: str) -> dict:
    return get(kubectl, namespace, kind, name).get("status", {})


def condition(st: dict, type_: str) -> dict:
    return next((c for c in st.get("conditions", []) if c["type"] == type_), {})


def credentials(livekit_server) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "livekit"},
        "stringData": {"apiKey": livekit_server.api_key, "apiSecret": livekit_server.api_secret},
    }


def livestream(name: str, livekit_server, room: str, **spec) -> dict:
    source = {
        "livekit": {
            "url": livekit_server.cluster_url,
            "room": room,
            "credentialsSecretRef": {"name": "livekit"},
        }
    }
    return {
        "apiVersion": "streams.haven.dev/v1alpha1",
        "kind": "LiveStream",
        "metadata": {"name": name},
        "spec": {"source": source, **spec},
    }


def recording(name: str, stream: str, **spec) -> dict:
    return {
        "apiVersion": "streams.haven.dev/v1alpha1",
        "kind": "Recording",
        "metadata": {"name": name},
        "spec": {"liveStreamRef": {"name": stream}, **spec},
    }


def wait_live(kubectl, namespace: str, name: str) -> dict:
    kubectl("wait", "-n", namespace, f"ls/{name}", "--for=condition=Ready", "--timeout=180s")
    return status(kubectl, namespace, "ls", name)


def go_live(kubectl, namespace: str, livekit_server, room: str, *names: str) -> None:
    """Apply LiveStreams on the room (with the LiveKit credentials) and wait until each is Live."""
    streams = [livestream(name, livekit_server, room) for name in names]
    apply(kubectl, namespace, credentials(livekit_server), *streams)
    for name in names:
        wait_live(kubectl, namespace, name)


def wait_recorded(kubectl, namespace: str, name: str, seconds: float) -> dict:
    """The Recording's status once it holds at least `seconds` of media."""
    return wait_for(
        lambda: (
            (s := status(kubectl, namespace, "rec", name)).get("durationSeconds", 0) >= seconds
            and s
        )
    )


def stop(kubectl, namespace: str, name: str) -> None:
    patch = '{"spec":{"stopped":true}}'
    kubectl("patch", "-n", namespace, "rec", name, "--type=merge", "-p", patch)


def wait_phase(kubectl, namespace: str, name: str, phase: str, timeout: float = 90) -> dict:
    return wait_for(
        lambda: (s := status(kubectl, namespace, "rec", name)).get("phase") == phase and s,
        timeout=timeout,
    )


def volume_dir(kubectl, namespace: str, claim: str) -> Path:
    """Where a claim's volume lives on the node (local-path: a host directory)."""
    pv_name = get(kubectl, namespace, "pvc", claim)["spec"]["volumeName"]
    return Path(get(kubectl, "", "pv", pv_name)["spec"]["hostPath"]["path"])


async def _frame_counters(url: str, count: int) -> list[int | None]:
    counters = []
    async with websockets.connect(url, max_size=None) as ws:
        while len(counters) < count:
            msg = json.loads(await asyncio.wait_for(ws.recv(), timeout=20))
            if msg["type"] == "video_frame":
                counters.append(decode_video_message(json.dumps(msg))[0])
    return counters


def test_a_livestream_goes_live_and_its_service_serves_frames(
    operator, kubectl, namespace, livekit_server, publisher
):
    go_live(kubectl, namespace, livekit_server, publisher, "cam")
    st = status(kubectl, namespace, "ls", "cam")
    assert st["phase"] == "Live" and st["participant"] == "synthetic-publisher"
    assert st["video"]["width"] == 1280 and st["video"]["height"] == 720
    assert condition(st, "SourceConnected")["status"] == "True"
    assert condition(st, "StorageBound")["status"] == "True"
    printed = kubectl("get", "-n", namespace, "ls", "cam").stdout
    assert "Live" in printed and f"livekit:{publisher}" in printed

    # A viewer in the cluster's network reaches the pod through its Service's ClusterIP.
    service = get(kubectl, namespace, "service", "cam-stream")
    url = f"ws://{service['spec']['clusterIP']}:8080/stream"
    counters = asyncio.run(_frame_counters(url, 10))
    decoded = [c for c in counters if c is not None]
    assert len(decoded) >= 8 and decoded == sorted(decoded) and decoded[-1] > decoded[0]
    st = wait_for(lambda: (s := status(kubectl, namespace, "ls", "cam")).get("viewers") == 0 and s)


def test_a_recording_runs_stops_and_leaves_a_file_that_decodes(
    operator, kubectl, namespace, livekit_server, publisher
):
    go_live(kubectl, namespace, livekit_server, publisher, "cam")
    apply(kubectl, namespace, recording("clip", "cam", format="h264", quality="low"))
    assert wait_recorded(kubectl, namespace, "clip", 4)["phase"] == "Recording"
    stop(kubectl, namespace, "clip")
    st = wait_phase(kubectl, namespace, "clip", "Completed")
    assert st["videoCodec"] == "libx264" and st["audioCodec"] == "aac"  # the encoders
    events = kubectl("get", "events", "-n", namespace, "--sort-by=.lastTimestamp").stdout
    assert len(st["files"]) == 1, (st, events)
    (part,) = st["files"]
    path = volume_dir(kubectl, namespace, st["claimName"]) / part["path"]
    assert path.stat().st_size == part["sizeBytes"] == st["bytesWritten"]
    report = analyze(path)
    assert report.error is None and report.video_codec == "h264"
    assert abs(report.duration - st["durationSeconds"]) < 1.5, (report.duration, st)
    assert report.video_frames >= 4 * 25


def test_a_recording_for_a_missing_livestream_starts_once_it_appears(
    operator, kubectl, namespace, livekit_server, publisher
):
    apply(kubectl, namespace, recording("early", "later", format="h264", quality="low"))
    st = wait_for(lambda: (s := status(kubectl, namespace, "rec", "early")).get("phase") and s)
    assert st["phase"] == "Pending"
    assert condition(st, "LiveStreamReady")["reason"] == "LiveStreamNotFound"
    go_live(kubectl, namespace, livekit_server, publisher, "later")
    wait_phase(kubectl, namespace, "early", "Recording", timeout=180)


def test_a_killed_stream_pod_resumes_the_recording_into_a_second_part(
    operator, kubectl, namespace, livekit_server, publisher
):
    go_live(kubectl, namespace, livekit_server, publisher, "cam")
    apply(kubectl, namespace, recording("long", "cam", format="h264", quality="low"))
    first = wait_recorded(kubectl, namespace, "long", 4)
    pod = get(kubectl, namespace, "ls", "cam")["status"]["podName"]
    kubectl("delete", "pod", "-n", namespace, pod, "--grace-period=0", "--force")
    resumed = wait_for(
        lambda: (
            (s := status(kubectl, namespace, "rec", "long")).get("podUID") != first["podUID"]
            and len(s.get("files", [])) == 2
            and s["files"][1].get("durationSeconds", 0) >= 3
            and s
        ),
        timeout=180,
    )
    assert resumed["phase"] == "Recording"
    stop(kubectl, namespace, "long")
    st = wait_phase(kubectl, namespace, "long", "Completed")
    directory = volume_dir(kubectl, namespace, st["claimName"])
    uid = get(kubectl, namespace, "rec", "long")["metadata"]["uid"]
    name = f"long-{uid[:8]}"
    assert st["podRecording"] == name
    assert [f["path"] for f in resumed["files"]] == [
        f"{name}/{name}-part001.mp4",
        f"{name}/{name}-part002.mp4",
    ]
    # Once completed, its parts are one seekable file (docs/stream-pod.md, joined files).
    assert [f["path"] for f in st["files"]] == [f"{name}/{name}.mp4"], st["files"]
    report = analyze(directory / st["files"][0]["path"])
    assert report.video_frames > 50 and report.error is None, report.error
    assert report.video_codec == "h264"


def test_deleting_a_livestream_finalizes_its_recordings_then_its_children(
    operator, kubectl, namespace, livekit_server, publisher
):
    kept = livestream("kept", livekit_server, publisher)
    dropped = livestream("dropped", livekit_server, publisher, storage={"reclaimPolicy": "Delete"})
    apply(kubectl, namespace, credentials(livekit_server), kept, dropped)
    for name in ("kept", "dropped"):
        wait_live(kubectl, namespace, name)
        apply(kubectl, namespace, recording(f"{name}-rec", name, format="h264", quality="low"))
    for name in ("kept", "dropped"):
        wait_phase(kubectl, namespace, f"{name}-rec", "Recording")
    kept_claim = volume_dir(kubectl, namespace, "kept-recordings")

    kubectl("delete", "-n", namespace, "ls", "kept", "dropped", "--timeout=120s")
    for name in ("kept", "dropped"):
        st = status(kubectl, namespace, "rec", f"{name}-rec")
        assert st["phase"] == "Completed", st  # finalized before the LiveStream went
        assert not get(kubectl, namespace, "deployment", f"{name}-stream")
    wait_for(lambda: not get(kubectl, namespace, "pvc", "dropped-recordings"))
    assert get(kubectl, namespace, "pvc", "kept-recordings")["status"]["phase"] == "Bound"
    (part,) = status(kubectl, namespace, "rec", "kept-rec")["files"]
    assert analyze(kept_claim / part["path"]).video_frames > 0


def test_a_livestream_deleted_and_created_again_under_its_name_goes_live(
    operator, kubectl, namespace, livekit_server, publisher
):
    """The gateway stops and starts a mint this way: the new LiveStream must not take over a
    child of the old one that the garbage collector is about to remove."""
    go_live(kubectl, namespace, livekit_server, publisher, "again")
    # Hold the old control Secret as a slow garbage collector would (a loaded cluster did).
    hold = '{"metadata":{"finalizers":["streams.haven.dev/test-hold"]}}'
    kubectl("patch", "-n", namespace, "secret", "again-control", "--type=merge", "-p", hold)
    kubectl("delete", "-n", namespace, "ls", "again", "--timeout=120s")  # returns once gone
    apply(kubectl, namespace, livestream("again", livekit_server, publisher))
    time.sleep(5)  # the operator meets the old Secret
    release = '{"metadata":{"finalizers":null}}'
    kubectl("patch", "-n", namespace, "secret", "again-control", "--type=merge", "-p", release)
    wait_live(kubectl, namespace, "again")
    uid = get(kubectl, namespace, "ls", "again")["metadata"]["uid"]
    for kind, name in [("secret", "again-control"), ("deployment", "again-stream")]:
        owners = get(kubectl, namespace, kind, name)["metadata"]["ownerReferences"]
        assert [o["uid"] for o in owners] == [uid], (kind, owners)


def test_the_operator_runs_with_the_charts_rbac_through_its_service_account(kubectl, operator):
    pods = operator.pods()
    assert pods and operator.leader() in {p["metadata"]["name"] for p in pods}
    for pod in pods:  # the leader and its standby
        assert pod["spec"]["serviceAccountName"] == "haven-operator"
        projected = [v for v in pod["spec"]["volumes"] if v["name"].startswith("kube-api-access")]
        assert projected, pod["spec"]["volumes"]  # the ServiceAccount token is what it runs with
    account = f"system:serviceaccount:{OPERATOR_NAMESPACE}:haven-operator"

    def can(*args: str) -> bool:
        result = kubectl("auth", "can-i", f"--as={account}", *args, check=False)
        return result.stdout.strip() == "yes"

    assert can("patch", "livestreams.streams.haven.dev", "-A")
    assert can("create", "deployments.apps", "-n", "default")
    assert not can("delete", "nodes")
    assert not can("create", "clusterroles.rbac.authorization.k8s.io")
    assert not can("escalate", "roles.rbac.authorization.k8s.io", "-n", "default")
    assert "Traceback" not in operator.logs()


def test_a_recording_deleted_and_created_again_is_a_new_recording(
    operator, kubectl, namespace, livekit_server, publisher
):
    go_live(kubectl, namespace, livekit_server, publisher, "cam")
    clip = recording("clip", "cam", format="h264", quality="low")
    apply(kubectl, namespace, clip)
    wait_recorded(kubectl, namespace, "clip", 2)
    stop(kubectl, namespace, "clip")
    kubectl("wait", "-n", namespace, "rec/clip", "--for=condition=Complete", "--timeout=90s")
    first = get(kubectl, namespace, "rec", "clip")
    assert not first["metadata"].get("finalizers")  # over: nothing holds its deletion
    assert condition(first["status"], "Ready")["status"] == "False"
    assert condition(first["status"], "Failed")["status"] == "False"

    kubectl("delete", "-n", namespace, "rec", "clip", "--timeout=60s")
    apply(kubectl, namespace, clip)
    second = wait_recorded(kubectl, namespace, "clip", 2)
    assert second["phase"] == "Recording" and second["startedAt"] != first["status"]["startedAt"]
    assert second["podRecording"] != first["status"]["podRecording"]
    (part,) = second["files"]
    assert part["path"].startswith(second["podRecording"] + "/")
    directory = volume_dir(kubectl, namespace, "cam-recordings")
    assert (directory / first["status"]["files"][0]["path"]).stat().st_size > 0  # kept
    stop(kubectl, namespace, "clip")
    kubectl("wait", "-n", namespace, "rec/clip", "--for=condition=Complete", "--timeout=90s")


def pod_recording_state(directory: Path, name: str) -> str:
    return json.loads((directory / name / "recording.json").read_text())["state"]


def test_a_recording_deleted_while_its_stream_is_suspended_does_not_come_back(
    operator, kubectl, namespace, livekit_server, publisher
):
    go_live(kubectl, namespace, livekit_server, publisher, "cam")
    apply(kubectl, namespace, recording("held", "cam", format="h264", quality="low"))
    st = wait_recorded(kubectl, namespace, "held", 2)
    name, directory = st["podRecording"], volume_dir(kubectl, namespace, "cam-recordings")
    suspended = livestream("cam", livekit_server, publisher, suspend=True)
    apply(kubectl, namespace, suspended)
    wait_for(lambda: not get(kubectl, namespace, "ls", "cam")["status"].get("podName"))
    assert pod_recording_state(directory, name) in ("recording", "starting")  # it would resume

    kubectl("delete", "-n", namespace, "rec", "held", "--wait=false")
    time.sleep(3)  # the operator meets a deleted Recording it cannot stop yet
    held = get(kubectl, namespace, "rec", "held")
    assert held["metadata"]["deletionTimestamp"] and held["metadata"]["finalizers"]

    apply(kubectl, namespace, livestream("cam", livekit_server, publisher))
    wait_for(lambda: not get(kubectl, namespace, "rec", "held"), timeout=180)
    wait_live(kubectl, namespace, "cam")
    # The finalizer went once the new pod confirmed the stop: the part resumed there is closed.
    state = json.loads((directory / name / "recording.json").read_text())
    assert state["state"] == "completed", state
    # The pod's status reaches the LiveStream a moment later (its first Live status may still
    # count the resumed recording): it comes to count none.
    wait_for(
        lambda: (
            (s := status(kubectl, namespace, "ls", "cam")).get("phase") == "Live"
            and s.get("activeRecordings") == 0
        )
    )


def test_a_changed_control_token_is_read_again_and_rolls_the_pod(
    operator, kubectl, namespace, livekit_server, publisher
):
    go_live(kubectl, namespace, livekit_server, publisher, "cam")
    apply(kubectl, namespace, recording("on", "cam", format="h264", quality="low"))
    first = wait_recorded(kubectl, namespace, "on", 2)
    token = "a-new-token-of-enough-length-0123456789"
    patch = json.dumps({"stringData": {"token": token}})
    kubectl("patch", "-n", namespace, "secret", "cam-control", "--type=merge", "-p", patch)
    # A restarted pod takes the new token; the operator, holding the old one, gets a 401.
    pod = get(kubectl, namespace, "ls", "cam")["status"]["podName"]
    kubectl("delete", "pod", "-n", namespace, pod, "--grace-period=0", "--force")
    digest = hashlib.sha256(token.encode()).hexdigest()[:16]
    wait_for(
        lambda: (
            get(kubectl, namespace, "deployment", "cam-stream")["spec"]["template"]["metadata"][
                "annotations"
            ]["streams.haven.dev/control-token-hash"]
            == digest
        ),
        timeout=180,
    )
    wait_live(kubectl, namespace, "cam")
    resumed = wait_for(
        lambda: (
            (s := status(kubectl, namespace, "rec", "on")).get("podUID") != first["podUID"]
            and s.get("phase") == "Recording"
            and s["files"][-1].get("durationSeconds", 0) >= 2
            and s
        ),
        timeout=180,
    )
    assert condition(resumed, "Ready")["status"] == "True"
    stop(kubectl, namespace, "on")
    kubectl("wait", "-n", namespace, "rec/on", "--for=condition=Complete", "--timeout=90s")

"""Auto-record and retention on the local cluster: the chart's operator, a real livekit-server
with the synthetic publisher leaving and coming back, recordings on a real volume read back
through the stream pod's files API."""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path

import httpx
import pytest

from haven_localcluster.mediacheck import analyze
from haven_localcluster.process import stop as stop_procs

from .test_end_to_end import (
    apply,
    credentials,
    get,
    livestream,
    recording,
    status,
    volume_dir,
    wait_for,
    wait_live,
    wait_phase,
    wait_recorded,
)

GRACE = 5  # seconds offline before an auto-recording is stopped
AUTO = {"format": "vp9", "quality": "low", "offlineGraceSeconds": GRACE}
SELECTOR = "streams.haven.dev/auto-record=true"


def auto_recordings(kubectl, namespace: str) -> list[dict]:
    items = get(kubectl, namespace, "rec", "-l", SELECTOR).get("items", [])
    return sorted(items, key=lambda r: r["metadata"]["creationTimestamp"])


def running(kubectl, namespace: str) -> list[dict]:
    return [
        r
        for r in auto_recordings(kubectl, namespace)
        if not r["spec"].get("stopped")
        and r.get("status", {}).get("phase") not in ("Completed", "Failed")
    ]


def pod_files(kubectl, namespace: str, stream: str, pod_recording: str) -> httpx.Response:
    """GET /recordings/<name>/files on the stream pod's control port, with its token."""
    secret = get(kubectl, namespace, "secret", f"{stream}-control")
    token = base64.b64decode(secret["data"]["token"]).decode()
    pod = get(kubectl, namespace, "pod", status(kubectl, namespace, "ls", stream)["podName"])
    url = f"http://{pod['status']['podIP']}:8081/recordings/{pod_recording}/files"
    return httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def events(kubectl, namespace: str, obj: str, reason: str, word: str) -> str:
    """The messages of `obj`'s events with `reason` that mention `word`."""
    selector = f"involvedObject.name={obj},reason={reason}"
    items = get(kubectl, namespace, "events", "--field-selector", selector).get("items", [])
    return " | ".join(e["message"] for e in items if word in e["message"])


def assert_real_files(kubectl, namespace: str, stream: str, rec: dict) -> None:
    """The Recording's files, as the pod lists them: complete, and they decode."""
    st = rec["status"]
    listed = pod_files(kubectl, namespace, stream, st["podRecording"])
    assert listed.status_code == 200, listed.text
    files = listed.json()["files"]
    assert files and all(f["complete"] and f["sizeBytes"] > 0 for f in files), files
    root = volume_dir(kubectl, namespace, st["claimName"])
    media = analyze(root / files[0]["path"])
    assert media.video_frames > 0, media


def test_auto_record_follows_the_publisher_leaving_and_returning(
    operator, kubectl, namespace, livekit_server, start_publisher
):
    room = f"auto-{uuid.uuid4().hex[:8]}"
    publisher = start_publisher(room)
    auto = {**AUTO, "deleteFilesWithRecording": True}
    apply(
        kubectl,
        namespace,
        credentials(livekit_server),
        livestream("cam", livekit_server, room, autoRecord=auto),
    )
    wait_live(kubectl, namespace, "cam")
    ls = get(kubectl, namespace, "ls", "cam")

    # Live: one Recording, named after the session, labelled and owned by the LiveStream.
    first = wait_for(lambda: auto_recordings(kubectl, namespace), timeout=60)[0]
    name1 = first["metadata"]["name"]
    assert name1.startswith("cam-") and len(name1) == len("cam-yyyymmdd-hhmmss"), name1
    assert first["metadata"]["labels"]["streams.haven.dev/livestream"] == "cam"
    (owner,) = first["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"]) == ("LiveStream", ls["metadata"]["uid"])
    assert first["spec"]["format"] == "vp9" and first["spec"]["deleteFilesWithRecording"]
    wait_recorded(kubectl, namespace, name1, 2)

    # The publisher leaves: the Recording is stopped once the grace period is over, and no
    # other is created while the stream is away.
    stop_procs([publisher])
    wait_for(lambda: status(kubectl, namespace, "ls", "cam").get("phase") != "Live", timeout=90)
    done1 = wait_phase(kubectl, namespace, name1, "Completed", timeout=120)
    assert get(kubectl, namespace, "rec", name1)["spec"]["stopped"] is True
    assert [r["metadata"]["name"] for r in auto_recordings(kubectl, namespace)] == [name1]
    assert_real_files(kubectl, namespace, "cam", get(kubectl, namespace, "rec", name1))

    # It comes back: a new session, a new Recording.
    start_publisher(room)
    wait_live(kubectl, namespace, "cam")
    both = wait_for(
        lambda: (
            len(auto_recordings(kubectl, namespace)) == 2 and auto_recordings(kubectl, namespace)
        )
    )
    second = both[1]
    name2 = second["metadata"]["name"]
    assert name2 != name1
    complete1 = next(c for c in done1["conditions"] if c["type"] == "Complete")
    assert second["metadata"]["creationTimestamp"] >= complete1["lastTransitionTime"]
    wait_recorded(kubectl, namespace, name2, 2)

    # An operator restart while live finds the current Recording: no second one.
    operator.kill()
    operator.start()
    wait_for(lambda: status(kubectl, namespace, "rec", name2).get("durationSeconds", 0) >= 4)
    assert [r["metadata"]["name"] for r in running(kubectl, namespace)] == [name2]
    assert len(auto_recordings(kubectl, namespace)) == 2

    # keepLast: 1 deletes the older, finished one (and its files: deleteFilesWithRecording),
    # never the one still running.
    patch = json.dumps({"spec": {"autoRecord": {"keepLast": 1}}})
    kubectl("patch", "-n", namespace, "ls", "cam", "--type=merge", "-p", patch)
    wait_for(lambda: not get(kubectl, namespace, "rec", name1), timeout=90)
    assert [r["metadata"]["name"] for r in auto_recordings(kubectl, namespace)] == [name2]
    gone = pod_files(kubectl, namespace, "cam", done1["podRecording"])
    assert gone.status_code == 404, gone.text
    root = volume_dir(kubectl, namespace, done1["claimName"])
    assert not (root / done1["podRecording"]).exists()

    # Removing autoRecord stops the current one, which ends with real files.
    kubectl("patch", "-n", namespace, "ls", "cam", "--type=json", "-p",
            '[{"op": "remove", "path": "/spec/autoRecord"}]')  # fmt: skip
    wait_phase(kubectl, namespace, name2, "Completed", timeout=120)
    assert get(kubectl, namespace, "rec", name2)["spec"]["stopped"] is True
    assert_real_files(kubectl, namespace, "cam", get(kubectl, namespace, "rec", name2))
    assert len(auto_recordings(kubectl, namespace)) == 1
    # Why each was stopped, as the LiveStream's events say.
    stops = {n: events(kubectl, namespace, "cam", "AutoRecordStopped", n) for n in (name1, name2)}
    assert "offline" in stops[name1] and "autoRecord was removed" in stops[name2], stops


def test_ttl_deletes_finished_recordings_and_their_files_only_when_asked(
    operator, kubectl, namespace, livekit_server, publisher
):
    apply(
        kubectl,
        namespace,
        credentials(livekit_server),
        livestream("ttl", livekit_server, publisher),
    )
    wait_live(kubectl, namespace, "ttl")
    small = {"format": "vp9", "quality": "low", "maxWidth": 320}  # three at once: keep it light
    short = {**small, "ttlSecondsAfterFinished": 3}
    apply(
        kubectl,
        namespace,
        recording("keep", "ttl", **short),
        recording("wipe", "ttl", **short, deleteFilesWithRecording=True),
        recording("stay", "ttl", **small),
    )
    for name in ("keep", "wipe", "stay"):
        wait_recorded(kubectl, namespace, name, 2)
    patch = '{"spec":{"stopped":true}}'
    for name in ("keep", "wipe", "stay"):
        kubectl("patch", "-n", namespace, "rec", name, "--type=merge", "-p", patch)
    done = {n: wait_phase(kubectl, namespace, n, "Completed") for n in ("keep", "wipe", "stay")}

    # Both with a TTL go, that long after they finished; the one without stays.
    wait_for(lambda: not get(kubectl, namespace, "rec", "keep"), timeout=90)
    wait_for(lambda: not get(kubectl, namespace, "rec", "wipe"), timeout=90)
    assert get(kubectl, namespace, "rec", "stay")
    # Files outlive objects, unless deleteFilesWithRecording: then they are gone from the
    # pod (its files API) and from the volume.
    root = volume_dir(kubectl, namespace, done["keep"]["claimName"])
    kept = pod_files(kubectl, namespace, "ttl", done["keep"]["podRecording"])
    assert kept.status_code == 200 and kept.json()["files"], kept.text
    assert all((root / f["path"]).exists() for f in kept.json()["files"])
    wiped = pod_files(kubectl, namespace, "ttl", done["wipe"]["podRecording"])
    assert wiped.status_code == 404, wiped.text
    assert not (root / done["wipe"]["podRecording"]).exists()
    assert (root / done["keep"]["podRecording"]).exists()


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ({"autoRecord": {"offlineGraceSeconds": -1}}, ["offlineGraceSeconds"]),
        ({"autoRecord": {"keepLast": 0}}, ["keepLast"]),
        ({"autoRecord": {"format": "mpeg2"}}, ["autoRecord.format"]),
        ({"autoRecord": {"maxDuration": "two hours"}}, ["autoRecord.maxDuration"]),
        ({"autoRecord": {"maxFps": 0}}, ["autoRecord.maxFps"]),
    ],
)
def test_bad_auto_record_settings_are_rejected_at_apply(crds, kubectl, namespace, spec, words):
    source = {
        "livekit": {"url": "ws://lk:7880", "room": "r", "credentialsSecretRef": {"name": "x"}}
    }
    obj = {
        "apiVersion": "streams.haven.dev/v1alpha1",
        "kind": "LiveStream",
        "metadata": {"name": "bad"},
        "spec": {"source": source, **spec},
    }
    result = kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(obj), check=False)
    assert result.returncode != 0
    assert all(w in result.stderr for w in words), result.stderr


def test_bad_retention_settings_are_rejected_at_apply(crds, kubectl, namespace):
    obj = recording("bad", "s", ttlSecondsAfterFinished=-1)
    result = kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(obj), check=False)
    assert result.returncode != 0 and "ttlSecondsAfterFinished" in result.stderr, result.stderr


def test_the_examples_are_accepted(crds, kubectl, namespace):
    examples = Path(__file__).resolve().parents[2] / "examples"
    for name in ("autorecord.yaml", "retention.yaml"):
        result = kubectl(
            "apply", "--dry-run=server", "-n", namespace, "-f", str(examples / name), check=False
        )
        assert result.returncode == 0, result.stderr

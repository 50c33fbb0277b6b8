"""What users get when a LiveStream cannot work as written, on the local cluster with the chart's
operator: the reason in status, and recovery once the spec is fixed. And the spec fields that
only matter off the happy path: nodeSelector and tolerations, participantIdentity, a Recording
without audio that ends by its maxDuration."""

from __future__ import annotations

import json

from haven_localcluster.mediacheck import analyze

from .test_end_to_end import (
    apply,
    condition,
    credentials,
    get,
    livestream,
    recording,
    status,
    volume_dir,
    wait_for,
    wait_live,
    wait_phase,
)

STARTS = 180  # a pod start on a busy 2-core node: generous, never a measure


def patch(kubectl, namespace: str, kind: str, name: str, ops: list[dict]) -> None:
    kubectl("patch", "-n", namespace, kind, name, "--type=json", "-p", json.dumps(ops))


def pod_reason(kubectl, namespace: str, name: str) -> tuple[str, str, str]:
    st = status(kubectl, namespace, "ls", name)
    podready = condition(st, "PodReady")
    return st.get("phase", ""), podready.get("reason", ""), podready.get("message", "")


def test_a_pod_that_cannot_start_fails_with_its_reason_and_recovers(
    operator, kubectl, namespace, livekit_server, publisher, images
):
    missing = "localhost/haven/no-such-image:0"
    stream = livestream("cam", livekit_server, publisher, pod={"image": missing})
    apply(kubectl, namespace, credentials(livekit_server), stream)
    phase, reason, message = wait_for(
        lambda: (r := pod_reason(kubectl, namespace, "cam"))[0] == "Failed" and r, timeout=STARTS
    )
    assert reason in ("ErrImageNeverPull", "ErrImagePull", "ImagePullBackOff"), reason
    ready = condition(status(kubectl, namespace, "ls", "cam"), "Ready")
    assert ready["status"] == "False" and ready["reason"] == reason, ready

    # An image that runs, but not the stream pod: its container exits at once, again and again.
    patch(kubectl, namespace, "ls", "cam", [
        {"op": "replace", "path": "/spec/pod/image", "value": images["base"].ref},
    ])  # fmt: skip
    phase, reason, message = wait_for(
        lambda: (r := pod_reason(kubectl, namespace, "cam"))[1] == "CrashLoopBackOff" and r,
        timeout=STARTS,
    )
    assert phase == "Failed", (phase, message)

    patch(kubectl, namespace, "ls", "cam", [{"op": "remove", "path": "/spec/pod/image"}])
    live = wait_live(kubectl, namespace, "cam")
    assert live["phase"] == "Live" and condition(live, "PodReady")["status"] == "True"


def test_a_pod_no_node_takes_is_named_and_runs_once_the_selector_fits(
    operator, kubectl, namespace, livekit_server, publisher
):
    toleration = {"key": "haven.dev/dedicated", "operator": "Exists", "effect": "NoSchedule"}
    pod = {"nodeSelector": {"haven.dev/pool": "nowhere"}, "tolerations": [toleration]}
    apply(
        kubectl,
        namespace,
        credentials(livekit_server),
        livestream("cam", livekit_server, publisher, pod=pod),
    )
    phase, _, message = wait_for(
        lambda: (r := pod_reason(kubectl, namespace, "cam"))[1] == "Unschedulable" and r,
        timeout=STARTS,
    )
    assert phase == "Pending" and "node" in message, message
    template = get(kubectl, namespace, "deployment", "cam-stream")["spec"]["template"]["spec"]
    assert template["nodeSelector"] == {"haven.dev/pool": "nowhere"}
    assert toleration in template["tolerations"]

    patch(kubectl, namespace, "ls", "cam", [
        {"op": "replace", "path": "/spec/pod/nodeSelector", "value": {"kubernetes.io/os": "linux"}},
    ])  # fmt: skip
    assert wait_live(kubectl, namespace, "cam")["phase"] == "Live"


def test_participant_identity_is_followed_and_a_recording_without_audio_ends_by_max_duration(
    operator, kubectl, namespace, livekit_server, publisher
):
    other = livestream("other", livekit_server, publisher)
    other["spec"]["source"]["livekit"]["participantIdentity"] = "somebody-else"
    cam = livestream("cam", livekit_server, publisher)
    cam["spec"]["source"]["livekit"]["participantIdentity"] = "synthetic-publisher"
    apply(kubectl, namespace, credentials(livekit_server), other, cam)
    live = wait_live(kubectl, namespace, "cam")
    assert live["participant"] == "synthetic-publisher"
    st = wait_for(
        lambda: (s := status(kubectl, namespace, "ls", "other")).get("phase") == "Offline" and s,
        timeout=STARTS,
    )
    source = condition(st, "SourceConnected")
    assert source["status"] == "False" and "somebody-else" in source["message"], source

    rec = recording("short", "cam", format="h264", audio=False, maxDuration="6s")
    apply(kubectl, namespace, rec)
    done = wait_phase(kubectl, namespace, "short", "Completed", timeout=STARTS)  # no stop asked
    assert condition(done, "Complete")["status"] == "True", done
    (file,) = done["files"]
    report = analyze(volume_dir(kubectl, namespace, done["claimName"]) / file["path"])
    assert report.error is None and report.video_frames > 0
    assert report.audio_seconds == 0  # no audio stream at all
    assert report.duration <= 6.0 + 0.1, report.duration  # the limit, give or take a frame

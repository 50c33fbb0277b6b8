"""The operator's decisions as pure functions: whose object it is, when to reconcile again,
what status to report, what a Recording is called on its pod. No cluster needed."""

from __future__ import annotations

import datetime as dt

from haven_operator import backoff
from haven_operator.conditions import Condition
from haven_operator.ownership import Owner, classify
from haven_operator.pods import PodView, current_pod
from haven_operator.reconciler import child_fingerprint
from haven_operator.recording import pod_recording_name, recording_conditions
from haven_operator.schedule import Schedule
from haven_operator.status import Observed, changes, livestream_status

LS = {
    "metadata": {"name": "cam", "namespace": "ns", "uid": "u-1", "generation": 3},
    "spec": {"source": {"livekit": {"room": "r1"}}},
}


def owned_by(uid: str, name: str = "cam") -> dict:
    ref = {"apiVersion": "streams.haven.dev/v1alpha1", "kind": "LiveStream", "name": name}
    return {"kind": "Service", "metadata": {"ownerReferences": [{**ref, "uid": uid}]}}


def test_ownership_is_decided_by_the_livestreams_uid():
    assert classify(None, LS) is Owner.MISSING
    assert classify(owned_by("u-1"), LS) is Owner.OURS
    assert classify(owned_by("u-0"), LS) is Owner.PREVIOUS  # same name, deleted LiveStream
    assert classify(owned_by("u-9", name="other"), LS) is Owner.FOREIGN
    assert classify({"kind": "Service", "metadata": {"name": "cam-stream"}}, LS) is Owner.FOREIGN
    labels = {
        "streams.haven.dev/livestream": "cam",
        "app.kubernetes.io/managed-by": "haven-operator",
    }
    kept = {"kind": "PersistentVolumeClaim", "metadata": {"labels": labels}}
    assert classify(kept, LS) is Owner.OURS  # a claim kept by Retain is picked up again
    assert classify({**kept, "kind": "Service"}, LS) is Owner.FOREIGN  # labels alone: not ours


def test_backoff_grows_exponentially_to_a_cap():
    mid = [backoff.delay(n, rand=lambda: 0.5) for n in range(1, 10)]
    assert mid[:4] == [1.0, 2.0, 4.0, 8.0]
    assert max(mid) <= backoff.CAP and mid[-1] >= 0.9 * backoff.CAP
    assert backoff.delay(0) == 0.0
    assert 0.8 <= backoff.delay(1, rand=lambda: 0.0) <= backoff.delay(1, rand=lambda: 1.0) < 1.21


def test_schedule_reconciles_on_wake_new_generation_backoff_and_resync():
    s = Schedule()
    assert s.due(1, now=0)
    s.done(1, ok=True, now=0, resync=300)
    assert not s.due(1, now=10) and s.applied == 1
    assert s.due(2, now=10)  # a spec edit
    s.done(2, ok=False, now=10)
    assert s.applied == 1 and s.failures == 1  # observedGeneration stays at 1
    assert not s.due(2, now=10.1) and s.due(2, now=12)
    s.done(2, ok=False, now=12)
    assert not s.due(2, now=13) and s.due(2, now=12 + 2.5)  # 2 s (jittered) after the second
    s.dirty = True  # a child was deleted: at once, backoff or not
    assert s.due(2, now=12.1)
    s.done(2, ok=False, now=12.1, retry_after=1.0)  # waiting for the collector: not a failure
    assert s.failures == 2 and s.due(2, now=13.2)
    s.done(2, ok=True, now=20, resync=300)
    assert s.failures == 0 and s.applied == 2 and not s.due(2, now=200) and s.due(2, now=400)
    assert s.wait(now=20, interval=5) == 5


def _pod(ready: bool, waiting: str | None = None) -> PodView:
    """A stream pod as the watch delivers it."""
    state = {"waiting": {"reason": waiting, "message": "m"}} if waiting else {"running": {}}
    return PodView.of(
        {
            "metadata": {
                "name": "cam-stream-x",
                "uid": "p-1",
                "creationTimestamp": "2026-01-01T00:00:00Z",
            },
            "status": {
                "phase": "Running",
                "podIP": "10.244.0.9",
                "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                "containerStatuses": [{"state": state}],
            },
        }
    )


def test_the_current_pod_is_the_newest_not_being_deleted():
    old, new = _pod(True), _pod(False)
    new = PodView(**{**new.__dict__, "created": "2026-01-02T00:00:00Z", "name": "new"})
    assert current_pod([old, new]).name == "new"
    gone = PodView(**{**new.__dict__, "deleting": True})
    assert current_pod([old, gone]) is old and current_pod([]) is None
    assert old.ready and old.ip == "10.244.0.9" and old.waiting is None
    assert _pod(False, "ErrImagePull").waiting == ("ErrImagePull", "m")


LIVE = {
    "state": "live",
    "reason": "Live",
    "message": "receiving",
    "viewers": 2,
    "activeRecordings": [],
    "participant": "p",
    "video": {"width": 1280, "height": 720, "fps": 30},
    "lastFrameTime": dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp(),
}


def cond(status: dict, type_: str) -> dict:
    return next(c for c in status["conditions"] if c["type"] == type_)


def test_status_is_ready_only_when_reconciled_and_generation_moves_only_when_applied():
    seen = Observed("Bound", _pod(True), LIVE)
    ok = livestream_status(LS, Condition("Reconciled", True, "Applied"), 3, seen, "ws://x")
    assert ok["phase"] == "Live" and cond(ok, "Ready")["status"] == "True"
    assert ok["observedGeneration"] == 3
    failed = Condition(
        "Reconciled", False, "ApplyFailed", "PersistentVolumeClaim cam-recordings: no"
    )
    body = {**LS, "status": {"observedGeneration": 2}}
    st = livestream_status(body, failed, 2, seen, "ws://x")
    assert st["observedGeneration"] == 2  # the failed generation 3 is not observed
    ready = cond(st, "Ready")
    assert ready["status"] == "False" and ready["reason"] == "ApplyFailed"
    assert "cam-recordings: no" in ready["message"]
    assert cond(st, "Reconciled")["status"] == "False"


def test_status_reports_a_pod_that_cannot_start_as_failed():
    seen = Observed("Bound", _pod(False, "CreateContainerConfigError"), None)
    st = livestream_status(LS, Condition("Reconciled", True, "Applied"), 3, seen, "ws://x")
    assert (
        st["phase"] == "Failed" and cond(st, "PodReady")["reason"] == "CreateContainerConfigError"
    )


def test_status_names_a_pod_no_node_takes():
    pending = PodView(**{**_pod(False).__dict__, "phase": "Pending", "unschedulable": "0/1 nodes"})
    st = livestream_status(
        LS, Condition("Reconciled", True, "Applied"), 3, Observed("Bound", pending, None), "ws://x"
    )
    podready = cond(st, "PodReady")
    assert (podready["reason"], podready["message"]) == ("Unschedulable", "0/1 nodes")
    assert st["phase"] == "Pending" and cond(st, "Ready")["reason"] == "Unschedulable"
    never = Observed("Bound", _pod(False, "ErrImageNeverPull"), None)
    failed = livestream_status(LS, Condition("Reconciled", True, "Applied"), 3, never, "ws://x")
    assert failed["phase"] == "Failed"


def test_counters_alone_wait_but_transitions_carry_them():
    old = {"phase": "Live", "viewers": 1}
    assert changes(old, {"phase": "Live", "viewers": 2}, counters_due=False) == {}
    assert changes(old, {"phase": "Live", "viewers": 2}, counters_due=True) == {"viewers": 2}
    both = changes(old, {"phase": "Offline", "viewers": 2}, counters_due=False)
    assert both == {"phase": "Offline", "viewers": 2}


def test_a_recording_is_named_on_its_pod_by_its_uid():
    meta = {"name": "clip", "uid": "0123abcd-ffff"}
    assert pod_recording_name({"metadata": meta}) == "clip-0123abcd"
    again = {"metadata": {**meta, "uid": "99990000-eeee"}}
    assert pod_recording_name(again) == "clip-99990000"  # same name, new object: new recording
    fixed = {"metadata": meta, "status": {"podRecording": "clip-0123abcd", "phase": "Recording"}}
    assert pod_recording_name(fixed) == "clip-0123abcd"
    legacy = {"metadata": meta, "status": {"phase": "Recording"}}  # started by an older operator
    assert pod_recording_name(legacy) == "clip"


def test_recording_conditions_follow_the_phase():
    def by_type(phase: str) -> dict[str, bool | None]:
        return {c.type: c.status for c in recording_conditions(phase, "", "")}

    assert by_type("Recording") == {"Ready": True, "Complete": False, "Failed": False}
    assert by_type("Completed") == {"Ready": False, "Complete": True, "Failed": False}
    assert by_type("Failed") == {"Ready": False, "Complete": False, "Failed": True}
    assert all(c.reason for c in recording_conditions("Pending", "", ""))  # metav1: a reason


def test_a_child_fingerprint_ignores_status_and_nulls():
    child = {
        "metadata": {
            "labels": {"a": "1"},
            "annotations": {"deployment.kubernetes.io/revision": "2"},
        },
        "spec": {"replicas": 1, "template": {"metadata": {"creationTimestamp": None}}},
        "status": {"readyReplicas": 1},
    }
    same = {**child, "status": {"readyReplicas": 0}, "metadata": {"labels": {"a": "1"}}}
    same["spec"] = {"replicas": 1, "template": {"metadata": {}}}
    assert child_fingerprint(child) == child_fingerprint(same)
    scaled = {**child, "spec": {**child["spec"], "replicas": 0}}
    assert child_fingerprint(scaled) != child_fingerprint(child)

"""Auto-record and retention decisions as pure functions (autorecord.py, retention.py): a
LiveStream's status and its auto-recordings in, actions out. No cluster needed."""

from __future__ import annotations

import datetime as dt

from haven_operator import autorecord, retention
from haven_operator.autorecord import AUTO_LABEL, Create, Delete, RecordingView, Stop

T0 = dt.datetime(2026, 11, 26, 12, 0, 0, tzinfo=dt.UTC)


def iso(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def stream(phase: str = "Live", since: dt.datetime = T0, **auto) -> dict:
    connected = "True" if phase == "Live" else "False"
    return {
        "metadata": {"name": "cam", "namespace": "ns", "uid": "ls-uid"},
        "spec": {"source": {}, "autoRecord": {"format": "vp9", **auto}},
        "status": {
            "phase": phase,
            "conditions": [
                {"type": "Ready", "status": connected, "lastTransitionTime": iso(since)},
                {"type": "SourceConnected", "status": connected, "lastTransitionTime": iso(since)},
            ],
        },
    }


def rec(
    name: str,
    created: dt.datetime = T0,
    phase: str | None = "Recording",
    stopped: bool = False,
    owner: str = "ls-uid",
    deleting: bool = False,
) -> RecordingView:
    return RecordingView(name, f"uid-{name}", (owner,), created, phase, stopped, deleting)


def test_going_live_creates_one_recording_named_after_the_session_labelled_and_owned():
    actions = autorecord.decide(
        stream(maxDuration="1h", audio=False, ttlSecondsAfterFinished=60), [], T0
    )
    assert [type(a) for a in actions] == [Create]
    create = actions[0]
    assert create.name == "cam-20261126-120000"
    meta, spec = create.manifest["metadata"], create.manifest["spec"]
    assert meta["labels"] == {"streams.haven.dev/livestream": "cam", AUTO_LABEL: "true"}
    assert meta["ownerReferences"][0]["uid"] == "ls-uid"
    assert meta["ownerReferences"][0]["kind"] == "LiveStream"
    assert spec == {
        "liveStreamRef": {"name": "cam"},
        "format": "vp9",
        "maxDuration": "1h",
        "audio": False,
        "ttlSecondsAfterFinished": 60,
    }


def test_a_restart_while_live_creates_nothing_more():
    """The running Recording (from the index) is found: no second one, however late."""
    running = rec("cam-20261126-120000")
    later = T0 + dt.timedelta(hours=2)
    assert autorecord.decide(stream(), [running], later) == []
    # Its session's Recording already exists (even over, say by maxDuration): none again.
    over = rec("cam-20261126-120000", phase="Completed")
    assert autorecord.decide(stream(), [over], later) == []


def test_offline_within_grace_keeps_the_recording_then_stops_it():
    running = rec("cam-20261126-120000")
    gone = T0 + dt.timedelta(minutes=5)
    ls = stream("Offline", since=gone, offlineGraceSeconds=30)
    assert autorecord.decide(ls, [running], gone + dt.timedelta(seconds=29)) == []
    actions = autorecord.decide(ls, [running], gone + dt.timedelta(seconds=31))
    assert actions == [Stop("cam-20261126-120000", "the stream has been offline for 31 s")]
    assert autorecord.next_check(ls, [running], gone + dt.timedelta(seconds=20)) == 10.0


def test_the_default_grace_is_a_minute():
    running = rec("cam-20261126-120000")
    gone = T0 + dt.timedelta(minutes=5)
    ls = stream("Reconnecting", since=gone)
    assert autorecord.decide(ls, [running], gone + dt.timedelta(seconds=59)) == []
    assert autorecord.decide(ls, [running], gone + dt.timedelta(seconds=61))


def test_coming_back_within_grace_goes_on_in_the_same_recording():
    running = rec("cam-20261126-120000")
    back = T0 + dt.timedelta(minutes=5)
    assert autorecord.decide(stream(since=back), [running], back) == []


def test_the_next_session_gets_a_new_recording_once_the_last_is_stopped():
    back = T0 + dt.timedelta(minutes=5)
    stopping = rec("cam-20261126-120000", stopped=True, phase="Stopping")
    actions = autorecord.decide(stream(since=back), [stopping], back)
    assert [a.name for a in actions] == ["cam-20261126-120500"]


def test_removing_auto_record_or_deleting_the_stream_stops_the_running_one():
    running = rec("cam-20261126-120000")
    ls = stream()
    del ls["spec"]["autoRecord"]
    assert autorecord.decide(ls, [running], T0) == [
        Stop("cam-20261126-120000", "autoRecord was removed")
    ]
    deleting = stream()
    deleting["metadata"]["deletionTimestamp"] = iso(T0)
    assert [type(a) for a in autorecord.decide(deleting, [running], T0)] == [Stop]
    assert autorecord.decide(deleting, [], T0) == []  # and creates none


def test_recordings_it_does_not_own_are_left_alone():
    """Never adopt: a Recording with our labels but another owner is neither stopped nor
    counted, so the stream still gets its own."""
    foreign = rec("cam-20261126-120000", owner="someone-else")
    actions = autorecord.decide(stream(), [foreign], T0)
    assert [type(a) for a in actions] == [Create]
    ls = stream()
    del ls["spec"]["autoRecord"]
    assert autorecord.decide(ls, [foreign], T0) == []


def test_names_fit_63_characters():
    name = autorecord.recording_name("a" * 46 + "-" + "b" * 5, T0)
    assert len(name) <= 63 and name.endswith("-20261126-120000")
    assert "--" not in name


def test_keep_last_deletes_the_oldest_finished_never_a_running_one():
    t = [T0 + dt.timedelta(hours=h) for h in range(5)]
    views = [
        rec("cam-1", t[0], "Completed"),
        rec("cam-2", t[1], "Failed"),
        rec("cam-3", t[2], "Completed"),
        rec("cam-4", t[3], "Completed"),
        rec("cam-5", t[4], "Recording"),
    ]
    ls = stream(since=t[4], keepLast=2)
    actions = autorecord.decide(ls, views, t[4])
    assert actions == [
        Delete("cam-3", "uid-cam-3", "keepLast is 2"),
        Delete("cam-2", "uid-cam-2", "keepLast is 2"),
        Delete("cam-1", "uid-cam-1", "keepLast is 2"),
    ]
    # An old one still stopping is kept until it is over; one being deleted is not counted.
    views = [rec("cam-1", t[0], "Stopping", stopped=True), rec("cam-2", t[1], "Completed")]
    assert retention.beyond_keep_last(views, 1) == []
    views = [rec("cam-1", t[0], "Completed", deleting=True), rec("cam-2", t[1], "Completed")]
    assert retention.beyond_keep_last(views, 1) == []


def test_ttl_counts_from_the_finish():
    status = {
        "phase": "Completed",
        "stoppedAt": "2026-11-26T12:00:03Z",
        "conditions": [
            {"type": "Complete", "status": "True", "lastTransitionTime": "2026-11-26T12:00:05Z"}
        ],
    }
    body = {"spec": {"ttlSecondsAfterFinished": 30}, "status": status}
    assert retention.has_ttl(body)
    assert retention.expires_at(body) == T0 + dt.timedelta(seconds=35)
    no_condition = {**body, "status": {**status, "conditions": []}}
    assert retention.expires_at(no_condition) == T0 + dt.timedelta(seconds=33)
    running = {**body, "status": {"phase": "Recording"}}
    assert retention.expires_at(running) is None and not retention.has_ttl(running)
    assert retention.expires_at({"spec": {}, "status": status}) is None
    zero = {**body, "spec": {"ttlSecondsAfterFinished": 0}}
    assert retention.expires_at(zero) == T0 + dt.timedelta(seconds=5)


def test_recording_view_from_a_body():
    body = {
        "metadata": {
            "name": "cam-x",
            "uid": "u",
            "creationTimestamp": "2026-11-26T12:00:00Z",
            "ownerReferences": [{"uid": "ls-uid", "kind": "LiveStream"}],
        },
        "spec": {"stopped": True},
        "status": {"phase": "Stopping"},
    }
    view = RecordingView.of(body)
    assert view.owners == ("ls-uid",) and view.created == T0
    assert view.stopped and not view.running and not view.over

"""Rollout gating's decisions (haven_operator.rollout): which template changes wait for a slot,
how many roll at once, when a rollout is over."""

from __future__ import annotations

import pytest

from haven_operator.rollout import (
    APPLIED_GENERATION,
    ROLLOUT,
    TEMPLATE_HASH,
    Change,
    Gate,
    admit,
    gate_deployment,
    in_flight,
    max_concurrent_from_env,
    rolled,
    template_change,
    template_hash,
)

TEMPLATE = {
    "metadata": {"labels": {"a": "b"}, "annotations": {}},
    "spec": {"containers": [{"name": "stream", "image": "haven-recorder:1"}]},
}


def deployment(hash_: str | None = "h1", generation: int | None = 3, ready: int = 1) -> dict:
    annotations = {}
    if hash_ is not None:
        annotations[TEMPLATE_HASH] = hash_
    if generation is not None:
        annotations[APPLIED_GENERATION] = str(generation)
    return {
        "metadata": {"annotations": annotations, "generation": 7},
        "spec": {"replicas": 1},
        "status": {"observedGeneration": 7, "replicas": 1, "updatedReplicas": 1,
                   "readyReplicas": ready},
    }  # fmt: skip


def test_the_hash_follows_the_template_but_not_its_per_stream_hashes():
    base = template_hash(TEMPLATE)
    new_image = {**TEMPLATE, "spec": {"containers": [{"name": "stream", "image": "x:2"}]}}
    assert template_hash(new_image) != base
    for key in ("control-token-hash", "livekit-credentials-hash", "s3-credentials-hash"):
        meta = {**TEMPLATE["metadata"], "annotations": {f"streams.haven.dev/{key}": "z"}}
        assert template_hash({**TEMPLATE, "metadata": meta}) == base


def test_an_operator_side_change_to_a_serving_pod_waits_for_a_slot():
    assert template_change(deployment(), "h2", generation=3, wanted_replicas=1) is Change.GATED
    # A Deployment made before the hash existed counts as running an old template.
    old = deployment(hash_=None, generation=None)
    assert template_change(old, "h2", generation=3, wanted_replicas=1) is Change.GATED


def test_what_rolls_at_once():
    assert template_change(None, "h2", 3, 1) is Change.NONE  # a new Deployment
    assert template_change(deployment(), "h1", 3, 1) is Change.NONE  # current
    assert template_change(deployment(), "h2", 4, 1) is Change.NOW  # the LiveStream's spec edit
    assert template_change(deployment(ready=0), "h2", 3, 1) is Change.NOW  # serves nobody
    assert template_change(deployment(), "h2", 3, 0) is Change.NOW  # being suspended


def test_at_most_max_concurrent_roll_and_a_holder_keeps_its_slot():
    a, b, c = ("ns", "a"), ("ns", "b"), ("ns", "c")
    assert admit([], a, 1)
    assert not admit([a], b, 1)
    assert admit([a], a, 1)
    assert admit([a], b, 2) and not admit([a, b], c, 2)


def test_a_rollout_is_over_when_every_replica_is_new_and_ready():
    assert rolled(deployment())
    stale = deployment()
    stale["status"]["observedGeneration"] = 6  # the controller has not seen the new template
    assert not rolled(stale)
    assert not rolled(deployment(ready=0))
    old_pod_left = deployment()
    old_pod_left["status"]["replicas"] = 2
    assert not rolled(old_pod_left)
    suspended = {"metadata": {"generation": 2}, "spec": {"replicas": 0},
                 "status": {"observedGeneration": 2}}  # fmt: skip
    assert rolled(suspended)


def test_the_gate_frees_a_slot_only_for_the_admitted_template_and_wakes_the_waiting():
    gate = Gate(max_concurrent=1)
    a, b = ("ns", "a"), ("ns", "b")
    assert gate.try_admit(a, "h2")
    assert not gate.try_admit(b, "h2")
    assert "1 of at most 1" in gate.describe() and "ns/a" in gate.describe()
    # An event of the Deployment before our apply (the old template) frees nothing.
    assert gate.finish(a, deployment(hash_="h1")) == set()
    not_ready = deployment(hash_="h2", ready=0)
    assert gate.finish(a, not_ready) == set()
    assert gate.finish(a, deployment(hash_="h2")) == {b}
    assert gate.try_admit(b, "h2") and gate.rolling() == [b]
    assert gate.forget(b) == set() and gate.rolling() == []


@pytest.mark.parametrize(("value", "expected"), [("", 2), ("1", 1), ("0", 1), ("5", 5)])
def test_max_concurrent_comes_from_the_chart(value, expected):
    assert max_concurrent_from_env({"HAVEN_ROLLOUT_MAX_CONCURRENT": value}) == expected


def manifest(image: str) -> dict:
    template = {"metadata": {"annotations": {}}, "spec": {"containers": [{"image": image}]}}
    return {"metadata": {}, "spec": {"replicas": 1, "template": template}}


def test_a_waiting_deployment_keeps_its_running_template_and_a_rolling_one_is_marked():
    gate = Gate(max_concurrent=1)
    running = deployment(hash_="old")
    running["spec"]["template"] = {"spec": {"containers": [{"image": "v1"}]}}
    first = manifest("v2")
    assert gate_deployment(first, running, 3, ("ns", "a"), gate) is None
    desired = first["metadata"]["annotations"][TEMPLATE_HASH]
    assert first["metadata"]["annotations"][ROLLOUT] == desired
    assert first["spec"]["template"]["spec"]["containers"][0]["image"] == "v2"

    second = manifest("v2")
    why = gate_deployment(second, running, 3, ("ns", "b"), gate)
    assert why is not None and "ns/a" in why
    assert second["spec"]["template"] == running["spec"]["template"]  # the old pod stays
    assert second["metadata"]["annotations"][TEMPLATE_HASH] == "old"
    assert ROLLOUT not in second["metadata"]["annotations"]


def test_a_new_leader_counts_the_rollouts_marked_on_deployments():
    rolling = deployment(hash_="h2")
    rolling["metadata"]["annotations"][ROLLOUT] = "h2"
    rolling["status"]["readyReplicas"] = 0  # its new pod is starting
    assert in_flight(rolling)
    assert not in_flight(deployment(hash_="h2"))  # never gated
    gate = Gate(max_concurrent=1)  # a fresh leader: nothing in memory
    gate.observe([("ns", "a")])
    assert not gate.try_admit(("ns", "b"), "h2")
    done = deployment(hash_="h2")
    done["metadata"]["annotations"][ROLLOUT] = "h2"
    assert gate.finish(("ns", "a"), done) == {("ns", "a"), ("ns", "b")}
    assert gate.try_admit(("ns", "b"), "h2")


def test_a_freed_slot_wakes_only_the_longest_waiting():
    gate = Gate(max_concurrent=1)
    keys = [("ns", n) for n in "abcd"]
    assert gate.try_admit(keys[0], "h2")
    for key in keys[1:]:
        assert not gate.try_admit(key, "h2")
    assert gate.finish(keys[0], deployment(hash_="h2")) == {keys[1]}
    assert gate.try_admit(keys[1], "h2")
    assert gate.forget(keys[1]) == {keys[2]}


def test_a_livestream_with_active_recordings_waits_while_others_wait():
    a, rec = ("ns", "a"), ("ns", "rec")
    assert not admit([], rec, 2, recording=True, others_waiting=True)
    assert not admit([], rec, 2, recording=True, settled=False)
    assert admit([], rec, 2, recording=True)
    assert admit([rec], rec, 2, recording=True, others_waiting=True)  # it keeps its slot
    assert admit([], a, 2, recording=False, others_waiting=True, settled=False)


def test_livestreams_with_active_recordings_roll_last(monkeypatch):
    from haven_operator import rollout

    clock = [1000.0]
    monkeypatch.setattr(rollout.time, "monotonic", lambda: clock[0])
    gate = Gate(max_concurrent=2)
    rec, plain = ("ns", "rec"), [("ns", n) for n in "abc"]
    # A new leader: the one with a Recording asks first, but the wave has just begun.
    assert not gate.try_admit(rec, "h2", recording=True)
    assert gate.retry_in(rec) == pytest.approx(rollout.SETTLE + 1)
    assert gate.try_admit(plain[0], "h2") and gate.try_admit(plain[1], "h2")
    assert not gate.try_admit(plain[2], "h2")
    clock[0] += rollout.SETTLE  # settled, but one without Recordings still waits
    assert not gate.try_admit(rec, "h2", recording=True)
    # A freed slot goes to the one without Recordings, though it asked later.
    assert gate.finish(plain[0], deployment(hash_="h2")) == {plain[2]}
    assert not gate.try_admit(rec, "h2", recording=True)  # no free slot
    assert gate.try_admit(plain[2], "h2")
    assert gate.finish(plain[1], deployment(hash_="h2")) == {rec}
    assert gate.try_admit(rec, "h2", recording=True)
    assert gate.retry_in(plain[2]) is None  # not waiting: woken when a slot frees

"""Two operator replicas, one leader (operator/haven_operator/leader.py, the chart's Lease): one
replica holds the Lease and acts, the other stands by; when the leader's pod dies the standby
takes the Lease over and LiveStreams made afterwards reconcile; at no moment do two replicas
say they lead (haven_operator_leader, read from each pod)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import httpx

from tests.release_fixtures import SELECTOR

from .conftest import OPERATOR_NAMESPACE
from .test_livestream_reconcile import apply, condition, get, livestream, status, wait_for

LEASE = "haven-operator"
TAKEOVER = 180  # generous: a lease duration (15 s) plus a busy machine's scheduling


def identity(kubectl) -> str | None:
    """The Lease's holder: `<pod>_<random>`, one per process."""
    return (get(kubectl, OPERATOR_NAMESPACE, "lease", LEASE).get("spec") or {}).get(
        "holderIdentity"
    )


def holder(kubectl) -> str | None:
    """The pod holding the Lease, if any."""
    held = identity(kubectl)
    return held.rsplit("_", 1)[0] if held else None


def kill_process(pod: str) -> None:
    """SIGKILL the operator process of `pod` from the node (this host): it dies without
    releasing the Lease, as on a crash or an out-of-memory kill."""
    out = subprocess.run(["pgrep", "-f", "python -m haven_operator"], capture_output=True)
    for pid in (int(p) for p in out.stdout.split()):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"HAVEN_POD_NAME={pod}".encode() in environ:
            os.kill(pid, signal.SIGKILL)
            return
    raise AssertionError(f"no operator process of pod {pod} on this node")


def ready_pods(kubectl) -> dict[str, dict]:
    out = kubectl("get", "pods", "-n", OPERATOR_NAMESPACE, "-l", SELECTOR, "-o", "json").stdout
    return {
        p["metadata"]["name"]: p
        for p in json.loads(out)["items"]
        if not p["metadata"].get("deletionTimestamp")
        and p["status"].get("podIP")
        and any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in p["status"].get("conditions", [])
        )
    }


def leader_gauge(pod: dict) -> float | None:
    """haven_operator_leader of one replica, from its metrics port (None if unreachable)."""
    try:
        text = httpx.get(f"http://{pod['status']['podIP']}:9090/metrics", timeout=10).text
    except httpx.HTTPError:
        return None
    for line in text.splitlines():
        if line.startswith("haven_operator_leader "):
            return float(line.split()[1])
    return None


def leader_metrics(kubectl) -> str:
    """The metrics of the replica that acts (the standby's counters stay at zero)."""
    for pod in ready_pods(kubectl).values():
        if leader_gauge(pod) == 1.0:
            return httpx.get(f"http://{pod['status']['podIP']}:9090/metrics", timeout=10).text
    raise AssertionError("no operator replica says it leads")


def logs(kubectl, pod: str) -> str:
    result = kubectl("logs", "-n", OPERATOR_NAMESPACE, pod, "--tail=-1", check=False)
    return result.stdout + result.stderr


def reconciled(kubectl, namespace: str, name: str) -> dict | None:
    st = status(kubectl, namespace, "ls", name)
    ok = condition(st, "Reconciled").get("status") == "True"
    return st if ok and st.get("observedGeneration") == 1 else None


def one_leader(kubectl) -> tuple[str, str] | None:
    """(leader, standby) once two replicas are Ready, the Lease names one, and their gauges
    agree: exactly one says 1."""
    pods = ready_pods(kubectl)
    lead = holder(kubectl)
    if len(pods) != 2 or lead not in pods:
        return None
    gauges = {name: leader_gauge(pod) for name, pod in pods.items()}
    if sorted(gauges.values(), key=str) != [0.0, 1.0] or gauges[lead] != 1.0:
        return None
    (standby,) = set(pods) - {lead}
    return lead, standby


def test_the_standby_takes_over_when_the_leader_dies(operator, kubectl, namespace):
    leader, standby = wait_for(lambda: one_leader(kubectl), timeout=TAKEOVER, interval=1)
    transitions = get(kubectl, OPERATOR_NAMESPACE, "lease", LEASE)["spec"].get(
        "leaseTransitions", 0
    )
    apply(kubectl, namespace, livestream("before"))
    wait_for(lambda: reconciled(kubectl, namespace, "before"), timeout=120)
    assert "took Lease" in logs(kubectl, leader)
    assert "took Lease" not in logs(kubectl, standby)  # it waited: it never acted

    # The leader's process dies without a word: no release, the Lease must expire. The
    # standby has watched it longest, so it takes over (its container restarts as a standby).
    dead = identity(kubectl)
    kill_process(leader)
    wait_for(lambda: identity(kubectl) not in (dead, None), timeout=TAKEOVER, interval=0.5)
    assert holder(kubectl) == standby
    lease = get(kubectl, OPERATOR_NAMESPACE, "lease", LEASE)["spec"]
    assert lease["leaseTransitions"] == transitions + 1
    apply(kubectl, namespace, livestream("after"))
    wait_for(lambda: reconciled(kubectl, namespace, "after"), timeout=120)
    assert "took Lease" in logs(kubectl, standby)

    # The killed container comes back as the standby: one leader again.
    new_leader, new_standby = wait_for(lambda: one_leader(kubectl), timeout=TAKEOVER, interval=1)
    assert (new_leader, new_standby) == (standby, leader)
    assert "took Lease" not in logs(kubectl, new_standby)  # the restarted container's log
    # One of each child: nothing made twice.
    for name in ("before", "after"):
        selector = f"streams.haven.dev/livestream={name}"
        deps = kubectl("get", "deployments", "-n", namespace, "-l", selector, "-o", "name")
        assert deps.stdout.split() == [f"deployment.apps/{name}-stream"]

    # A pod deleted (a clean stop) gives the Lease up: the standby takes it at once.
    kubectl("delete", "pod", "-n", OPERATOR_NAMESPACE, new_leader, "--wait=false")
    wait_for(lambda: holder(kubectl) == new_standby, timeout=TAKEOVER, interval=0.5)
    lease = get(kubectl, OPERATOR_NAMESPACE, "lease", LEASE)["spec"]
    assert lease["leaseTransitions"] == transitions + 2
    apply(kubectl, namespace, livestream("last"))
    wait_for(lambda: reconciled(kubectl, namespace, "last"), timeout=120)
    wait_for(lambda: one_leader(kubectl), timeout=TAKEOVER, interval=1)


def events_by_reason(kubectl, namespace: str) -> dict[tuple[str, str, str], int]:
    """(LiveStream, reason, message) -> how many Events said it."""
    out = kubectl("get", "events", "-n", namespace, "-o", "json").stdout
    counts: dict[tuple[str, str, str], int] = {}
    for event in json.loads(out)["items"]:
        obj = event["involvedObject"]
        if obj.get("kind") == "LiveStream":
            key = (obj["name"], event["reason"], event.get("message", ""))
            counts[key] = counts.get(key, 0) + max(1, event.get("count") or 1)
    return counts


def test_a_takeover_while_livestreams_are_being_created_converges_once(
    operator, kubectl, namespace
):
    """The leader's pod is deleted while LiveStreams are being applied: the standby takes over
    and every LiveStream converges with one of each child and no Event posted twice."""
    leader, standby = wait_for(lambda: one_leader(kubectl), timeout=TAKEOVER, interval=1)
    names = [f"t{i:02d}" for i in range(12)]
    for i, name in enumerate(names):
        apply(kubectl, namespace, livestream(name, suspend=True))
        if i == 3:
            kubectl("delete", "pod", "-n", OPERATOR_NAMESPACE, leader, "--wait=false")
    wait_for(lambda: holder(kubectl) == standby, timeout=TAKEOVER, interval=0.5)
    wait_for(
        lambda: all(
            (st := reconciled(kubectl, namespace, n)) and st.get("phase") == "Suspended"
            for n in names
        ),
        timeout=300,
        interval=1,
    )
    for kind, suffix in (("deployments", "stream"), ("services", "stream"), ("pvc", "recordings")):
        out = kubectl("get", kind, "-n", namespace, "-o", "name").stdout.split()
        assert sorted(o.split("/")[1] for o in out) == [f"{n}-{suffix}" for n in names]
    secrets = kubectl(
        "get", "secrets", "-n", namespace, "-l", "app.kubernetes.io/name=haven-stream",
        "-o", "name",
    ).stdout.split()  # fmt: skip
    assert sorted(s.split("/")[1] for s in secrets) == [f"{n}-control" for n in names]
    doubled = {k: v for k, v in events_by_reason(kubectl, namespace).items() if v > 1}
    assert not doubled, f"Events posted twice: {doubled}"
    wait_for(lambda: one_leader(kubectl), timeout=TAKEOVER, interval=1)


def test_a_deleted_lease_is_made_again_by_the_leader(operator, kubectl, namespace):
    """Deleting the Lease does not leave the replicas without one: the leader makes it again
    (with the chart's labels, so Helm still owns it) and goes on leading; the standby waits."""
    leader, standby = wait_for(lambda: one_leader(kubectl), timeout=TAKEOVER, interval=1)
    before = get(kubectl, OPERATOR_NAMESPACE, "lease", LEASE)
    kubectl("delete", "lease", "-n", OPERATOR_NAMESPACE, LEASE)
    after = wait_for(
        lambda: (
            (lease := get_or_none(kubectl, OPERATOR_NAMESPACE, "lease", LEASE))
            and lease["metadata"]["uid"] != before["metadata"]["uid"]
            and lease
        ),
        timeout=60,
        interval=0.5,
    )
    assert after["spec"]["holderIdentity"] == before["spec"]["holderIdentity"]
    assert after["metadata"]["labels"] == before["metadata"]["labels"]
    assert after["metadata"].get("annotations") == before["metadata"].get("annotations")
    assert wait_for(lambda: one_leader(kubectl), timeout=TAKEOVER, interval=1) == (
        leader,
        standby,
    )
    apply(kubectl, namespace, livestream("lease-back", suspend=True))
    wait_for(lambda: reconciled(kubectl, namespace, "lease-back"), timeout=120)


def get_or_none(kubectl, namespace: str, kind: str, name: str) -> dict | None:
    result = kubectl("get", "-n", namespace, kind, name, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None

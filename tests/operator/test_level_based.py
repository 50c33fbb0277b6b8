"""Level-based reconciliation on the local cluster: children deleted or edited by hand are
repaired; an object the LiveStream does not own is never taken over; the status says what was
applied and what the API server refused.

As in test_livestream_reconcile.py, these LiveStreams name a LiveKit Secret that does not exist,
so their pods never run: the children are what is under test."""

from __future__ import annotations

import json

from .test_leader import leader_metrics
from .test_livestream_reconcile import apply, condition, get, livestream, status, wait_for

REPAIR = 60  # generous: the figure (seconds to repair) is printed by bench/livestreams.py


def exists(kubectl, namespace: str, kind: str, name: str) -> dict | None:
    result = kubectl("get", "-n", namespace, kind, name, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def reconciled(kubectl, namespace: str, name: str) -> dict | None:
    st = status(kubectl, namespace, "ls", name)
    return st if condition(st, "Reconciled").get("status") == "True" else None


def env_of(dep: dict) -> dict[str, str | None]:
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value") for e in container["env"]}


def test_deleted_and_edited_children_are_repaired(operator, kubectl, namespace):
    ingress = {"host": "cam.example.test"}
    apply(kubectl, namespace, livestream("cam", viewer={"ingress": ingress}))
    wait_for(lambda: reconciled(kubectl, namespace, "cam"), timeout=REPAIR)

    old = get(kubectl, namespace, "service", "cam-stream")["metadata"]["uid"]
    kubectl("delete", "-n", namespace, "service", "cam-stream")
    svc = wait_for(
        lambda: (
            (s := exists(kubectl, namespace, "service", "cam-stream"))
            and s["metadata"]["uid"] != old
            and s
        ),
        timeout=REPAIR,
    )
    assert svc["metadata"]["ownerReferences"][0]["name"] == "cam"

    kubectl("scale", "-n", namespace, "deployment", "cam-stream", "--replicas=0")
    wait_for(
        lambda: get(kubectl, namespace, "deployment", "cam-stream")["spec"]["replicas"] == 1,
        timeout=REPAIR,
    )

    # An edit of the pod template: a value the operator sets, and the image.
    kubectl("set", "env", "-n", namespace, "deployment/cam-stream", "HAVEN_MAX_FPS=3")
    kubectl("set", "image", "-n", namespace, "deployment/cam-stream", "stream=example/other:1")
    dep = wait_for(
        lambda: (
            (d := get(kubectl, namespace, "deployment", "cam-stream"))
            and env_of(d)["HAVEN_MAX_FPS"] == "15"
            and "example/other" not in d["spec"]["template"]["spec"]["containers"][0]["image"]
            and d
        ),
        timeout=REPAIR,
    )
    assert dep["spec"]["replicas"] == 1

    old = get(kubectl, namespace, "ingress", "cam-stream")["metadata"]["uid"]
    kubectl("delete", "-n", namespace, "ingress", "cam-stream")
    ing = wait_for(
        lambda: (
            (i := exists(kubectl, namespace, "ingress", "cam-stream"))
            and i["metadata"]["uid"] != old
            and i
        ),
        timeout=REPAIR,
    )
    assert ing["spec"]["rules"][0]["host"] == "cam.example.test"

    # Dropping the Ingress from the spec deletes it (it is ours); nothing else goes.
    apply(kubectl, namespace, livestream("cam"))
    wait_for(lambda: exists(kubectl, namespace, "ingress", "cam-stream") is None, timeout=REPAIR)
    assert exists(kubectl, namespace, "service", "cam-stream")


def test_an_object_it_does_not_own_is_left_untouched_and_named(operator, kubectl, namespace):
    kubectl("create", "service", "clusterip", "mine-stream", "-n", namespace, "--tcp=80:80")
    before = get(kubectl, namespace, "service", "mine-stream")
    apply(kubectl, namespace, livestream("mine"))
    st = wait_for(
        lambda: (
            condition(s := status(kubectl, namespace, "ls", "mine"), "Reconciled").get("reason")
            == "ChildConflict"
            and s
        ),
        timeout=REPAIR,
    )
    rec = condition(st, "Reconciled")
    assert rec["status"] == "False" and "Service mine-stream" in rec["message"], rec
    ready = condition(st, "Ready")
    assert ready["status"] == "False" and ready["reason"] == "ChildConflict"
    after = get(kubectl, namespace, "service", "mine-stream")
    assert "ownerReferences" not in after["metadata"]
    assert after["metadata"]["labels"] == before["metadata"]["labels"]
    assert after["spec"]["ports"] == before["spec"]["ports"]
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    # Nothing is half made: no pod starts behind someone else's Service.
    assert exists(kubectl, namespace, "deployment", "mine-stream") is None
    events = json.loads(
        kubectl(
            "get",
            "events",
            "-n",
            namespace,
            "--field-selector",
            "involvedObject.name=mine",
            "-o",
            "json",
        ).stdout
    )["items"]
    assert any(e["reason"] == "ChildConflict" for e in events)

    # Deleting the LiveStream leaves the user's Service alone.
    kubectl("delete", "-n", namespace, "ls", "mine", "--timeout=60s")
    assert (
        get(kubectl, namespace, "service", "mine-stream")["metadata"]["uid"]
        == (before["metadata"]["uid"])
    )

    # Once the name is free, a LiveStream of that name reconciles.
    kubectl("delete", "-n", namespace, "service", "mine-stream")
    apply(kubectl, namespace, livestream("mine"))
    wait_for(lambda: reconciled(kubectl, namespace, "mine"), timeout=REPAIR)
    assert exists(kubectl, namespace, "deployment", "mine-stream")


def metrics(kubectl) -> str:
    """The acting replica's metrics: the Service also balances to the standby."""
    return leader_metrics(kubectl)


def errors_counted(text: str, kind: str) -> float:
    prefix = f'haven_operator_reconcile_errors_total{{kind="{kind}"'
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix)
    )


def test_a_refused_apply_is_reported_and_not_observed(operator, kubectl, namespace):
    apply(kubectl, namespace, livestream("grow", storage={"size": "1Gi"}))
    st = wait_for(lambda: reconciled(kubectl, namespace, "grow"), timeout=REPAIR)
    assert st["observedGeneration"] == 1
    counted = errors_counted(metrics(kubectl), "PersistentVolumeClaim")

    # local-path volumes cannot grow: the API server refuses the claim's new size.
    apply(kubectl, namespace, livestream("grow", storage={"size": "2Gi"}))
    st = wait_for(
        lambda: (
            condition(s := status(kubectl, namespace, "ls", "grow"), "Reconciled").get("status")
            == "False"
            and s
        ),
        timeout=REPAIR,
    )
    assert get(kubectl, namespace, "ls", "grow")["metadata"]["generation"] == 2
    rec = condition(st, "Reconciled")
    assert rec["reason"] == "ApplyFailed", rec
    assert rec["message"].startswith("PersistentVolumeClaim grow-recordings: "), rec
    assert st["observedGeneration"] == 1, st  # generation 2 was not (all) applied
    ready = condition(st, "Ready")
    assert ready["status"] == "False" and ready["reason"] == "ApplyFailed"
    assert ready["message"] == f"Reconciled: {rec['message']}"
    assert errors_counted(metrics(kubectl), "PersistentVolumeClaim") > counted
    # The claim is as it was.
    pvc = get(kubectl, namespace, "pvc", "grow-recordings")
    assert pvc["spec"]["resources"]["requests"]["storage"] == "1Gi"

    # Shrinking is refused at apply time, by the CRD.
    shrink = kubectl(
        "apply", "-n", namespace, "-f", "-",
        input=json.dumps(livestream("grow", storage={"size": "1Gi"})), check=False,
    )  # fmt: skip
    assert shrink.returncode != 0 and "may only grow" in shrink.stderr


def test_kubectl_wait_works_on_the_reconciled_condition(operator, kubectl, namespace):
    apply(kubectl, namespace, livestream("waited"))
    kubectl("wait", "-n", namespace, "ls/waited", "--for=condition=Reconciled", "--timeout=120s")

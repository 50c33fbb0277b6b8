"""The operator reconciles LiveStreams and Recordings on the local cluster: children with owner
references and a hardened pod, status with conditions, restarts that converge.

The LiveStreams here point at a LiveKit server that does not exist, so their pods run but never
go live; test_end_to_end.py has the ones that do."""

from __future__ import annotations

import base64
import json
import time

MINT = "7GCihgDB8fe6KNjn2MYtkzZcRjQy3t9GHdC8uHYmW2hr"


def wait_for(fn, timeout: float = 30, interval: float = 0.3):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"not true after {timeout}s: {last!r}")


def apply(kubectl, namespace: str, obj: dict) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(obj))


def livestream(name: str, **spec) -> dict:
    source = spec.pop(
        "source",
        {
            "livekit": {
                "url": "ws://livekit:7880",
                "room": "r1",
                "credentialsSecretRef": {"name": "lk"},
            }
        },
    )
    return {
        "apiVersion": "streams.haven.dev/v1alpha1",
        "kind": "LiveStream",
        "metadata": {"name": name},
        "spec": {"source": source, **spec},
    }


def get(kubectl, namespace: str, kind: str, name: str) -> dict:
    return json.loads(kubectl("get", "-n", namespace, kind, name, "-o", "json").stdout)


def status(kubectl, namespace: str, kind: str, name: str) -> dict:
    return get(kubectl, namespace, kind, name).get("status", {})


def condition(st: dict, type_: str) -> dict:
    return next((c for c in st.get("conditions", []) if c["type"] == type_), {})


def test_livestream_children_are_owned_hardened_and_reported(
    operator, kubectl, api_client, namespace
):
    apply(kubectl, namespace, livestream("cam"))
    st = wait_for(lambda: (s := status(kubectl, namespace, "ls", "cam")).get("conditions") and s)
    uid = get(kubectl, namespace, "ls", "cam")["metadata"]["uid"]

    dep = get(kubectl, namespace, "deployment", "cam-stream")
    svc = get(kubectl, namespace, "service", "cam-stream")
    secret = get(kubectl, namespace, "secret", "cam-control")
    pvc = get(kubectl, namespace, "pvc", "cam-recordings")
    for child in (dep, svc, secret):
        (ref,) = child["metadata"]["ownerReferences"]
        assert ref["uid"] == uid and ref["controller"] is True and ref["kind"] == "LiveStream"
    assert "ownerReferences" not in pvc["metadata"]  # Retain: the recordings outlive the stream

    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"]["type"] == "Recreate"
    pod = dep["spec"]["template"]["spec"]
    assert (
        pod["securityContext"]["runAsNonRoot"] is True
        and pod["securityContext"]["fsGroup"] == 10001
    )
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (c,) = pod["containers"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert {"readinessProbe", "livenessProbe", "resources"} <= set(c)
    env = {e["name"]: e for e in c["env"]}
    assert env["HAVEN_LIVEKIT_API_SECRET"]["valueFrom"]["secretKeyRef"] == {
        "name": "lk",
        "key": "apiSecret",
    }
    assert env["HAVEN_CONTROL_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "cam-control",
        "key": "token",
    }
    assert len(base64.b64decode(secret["data"]["token"])) >= 32

    assert st["source"] == "livekit:r1"
    assert st["endpoint"] == f"ws://cam-stream.{namespace}.svc.cluster.local:8080/stream"
    # The credentials Secret is missing: the pod cannot start, and the status says why.
    st = wait_for(
        lambda: (s := status(kubectl, namespace, "ls", "cam")).get("phase") == "Failed" and s,
        timeout=120,
    )
    pod_ready = condition(st, "PodReady")
    assert pod_ready["reason"] == "CreateContainerConfigError"
    assert 'secret "lk" not found' in pod_ready["message"]
    assert condition(st, "Ready")["message"] == f"PodReady: {pod_ready['message']}"

    # With the Secret, the pod runs, but its source's host does not resolve: not Ready, and
    # the status says why, for this generation.
    kubectl(
        "create", "secret", "generic", "lk", "-n", namespace,
        "--from-literal=apiKey=k", "--from-literal=apiSecret=s",
    )  # fmt: skip
    st = wait_for(
        lambda: (
            condition(s := status(kubectl, namespace, "ls", "cam"), "PodReady").get("status")
            == "True"
            and condition(s, "SourceConnected").get("status") == "False"
            and s
        ),
        timeout=120,
    )
    assert st["phase"] in ("Connecting", "Reconnecting", "Offline"), st
    assert (
        st["observedGeneration"] == get(kubectl, namespace, "ls", "cam")["metadata"]["generation"]
    )
    assert condition(st, "StorageBound")["status"] == "True"
    ready = condition(st, "Ready")
    assert (
        ready["status"] == "False" and ready["reason"] == condition(st, "SourceConnected")["reason"]
    )
    assert ready["message"].startswith("SourceConnected: ")
    events = kubectl(
        "get",
        "events",
        "-n",
        namespace,
        "--field-selector",
        "involvedObject.name=cam",
        "-o",
        "json",
    )
    reasons = {e["reason"] for e in json.loads(events.stdout)["items"]}
    assert "Pending" in reasons or "Created" in reasons, reasons


def test_spec_changes_roll_the_pod_and_suspend_scales_to_zero(operator, kubectl, namespace):
    apply(kubectl, namespace, livestream("cam", viewer={"maxFps": 10}))
    wait_for(
        lambda: (
            kubectl("get", "-n", namespace, "deployment", "cam-stream", check=False).returncode == 0
        )
    )
    apply(kubectl, namespace, livestream("cam", viewer={"maxFps": 24}))

    def max_fps() -> str:
        dep = get(kubectl, namespace, "deployment", "cam-stream")
        env = {
            e["name"]: e.get("value")
            for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]
        }
        return env["HAVEN_MAX_FPS"]

    wait_for(lambda: max_fps() == "24")
    apply(kubectl, namespace, livestream("cam", viewer={"maxFps": 24}, suspend=True))
    wait_for(lambda: get(kubectl, namespace, "deployment", "cam-stream")["spec"]["replicas"] == 0)
    st = wait_for(
        lambda: (s := status(kubectl, namespace, "ls", "cam")).get("phase") == "Suspended" and s
    )
    assert condition(st, "PodReady")["reason"] == "Suspended"


def test_delete_reclaim_policy_makes_the_claim_owned(operator, kubectl, namespace):
    apply(
        kubectl, namespace, livestream("gone", storage={"reclaimPolicy": "Delete", "size": "1Gi"})
    )
    pvc = wait_for(
        lambda: (
            kubectl(
                "get", "-n", namespace, "pvc", "gone-recordings", "-o", "json", check=False
            ).stdout
        )
    )
    pvc = json.loads(pvc)
    assert pvc["metadata"]["ownerReferences"][0]["name"] == "gone"
    assert pvc["spec"]["resources"]["requests"]["storage"] == "1Gi"


def test_operator_restart_mid_reconcile_converges_without_duplicates(operator, kubectl, namespace):
    for i in range(5):
        apply(kubectl, namespace, livestream(f"s{i}"))
    time.sleep(0.5)
    operator.kill()  # mid-reconcile: some of the five are done, some not
    token = None
    if kubectl("get", "-n", namespace, "secret", "s0-control", check=False).returncode == 0:
        token = get(kubectl, namespace, "secret", "s0-control")["data"]["token"]
    operator.start()

    def converged() -> list[str] | None:
        names = kubectl(
            "get", "-n", namespace, "deploy,svc,pvc,secret", "-o", "name"
        ).stdout.split()
        wanted = [
            f"{kind}/s{i}-{suffix}"
            for i in range(5)
            for kind, suffix in (
                ("deployment.apps", "stream"),
                ("service", "stream"),
                ("persistentvolumeclaim", "recordings"),
                ("secret", "control"),
            )
        ]
        return names if all(w in names for w in wanted) else None

    names = wait_for(converged)
    assert len([n for n in names if n.startswith("deployment")]) == 5
    assert len([n for n in names if n.startswith("secret/")]) == 5
    if token is not None:  # the pod's control token survived the restart
        assert get(kubectl, namespace, "secret", "s0-control")["data"]["token"] == token
    for i in range(5):  # each has a status, written by the operator for its generation
        wait_for(lambda i=i: status(kubectl, namespace, "ls", f"s{i}").get("observedGeneration"))


def test_recording_waits_for_its_livestream_with_a_reason(operator, kubectl, namespace):
    rec = {
        "apiVersion": "streams.haven.dev/v1alpha1",
        "kind": "Recording",
        "metadata": {"name": "early"},
        "spec": {"liveStreamRef": {"name": "later"}, "format": "h264"},
    }
    apply(kubectl, namespace, rec)
    st = wait_for(lambda: (s := status(kubectl, namespace, "rec", "early")).get("phase") and s)
    assert st["phase"] == "Pending"
    assert condition(st, "LiveStreamReady")["reason"] == "LiveStreamNotFound"
    apply(kubectl, namespace, livestream("later"))
    st = wait_for(
        lambda: (
            condition(s := status(kubectl, namespace, "rec", "early"), "LiveStreamReady").get(
                "reason"
            )
            == "LiveStreamNotLive"
            and s
        )
    )
    assert st["phase"] == "Pending" and "later" in condition(st, "LiveStreamReady")["message"]


def test_a_recording_of_a_livestream_being_deleted_fails_at_once(operator, kubectl, namespace):
    apply(kubectl, namespace, livestream("dying"))
    wait_for(lambda: status(kubectl, namespace, "ls", "dying").get("conditions"))
    hold = '{"metadata":{"finalizers":["streams.haven.dev/test-hold"]}}'
    kubectl("patch", "-n", namespace, "ls", "dying", "--type=merge", "-p", hold)
    kubectl("delete", "-n", namespace, "ls", "dying", "--wait=false")
    rec = {
        "apiVersion": "streams.haven.dev/v1alpha1",
        "kind": "Recording",
        "metadata": {"name": "late"},
        "spec": {"liveStreamRef": {"name": "dying"}, "format": "h264"},
    }
    apply(kubectl, namespace, rec)
    kubectl("wait", "-n", namespace, "rec/late", "--for=condition=Failed", "--timeout=60s")
    st = status(kubectl, namespace, "rec", "late")
    assert st["phase"] == "Failed" and condition(st, "Failed")["reason"] == "LiveStreamDeleting"
    assert not get(kubectl, namespace, "rec", "late")["metadata"].get("finalizers")
    release = '{"metadata":{"finalizers":null}}'
    kubectl("patch", "-n", namespace, "ls", "dying", "--type=merge", "-p", release)

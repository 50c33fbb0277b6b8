"""Safe upgrades (operator/haven_operator/rollout.py): a chart upgrade that changes every stream
pod's template rolls them one at a time with rollout.maxConcurrent=1, each waiting for the one
before to be Ready again; the waiting LiveStreams say RolloutPending=True and keep their pod.

A watch on the stream pods counts the LiveStreams without a Ready pod at every event: never
more than one. The pods run without a LiveKit server (they are Ready once started), so the
node is not what is under test."""

from __future__ import annotations

import copy
import json
import threading

import kubernetes
import pytest

from haven_localcluster import release

from .test_leader import one_leader
from .test_livestream_reconcile import apply, condition, get, livestream, status, wait_for

NAMES = ("r0", "r1", "r2")
LABEL = "streams.haven.dev/livestream"
ROLL = 600  # generous: three stream pods replaced one after the other on a busy machine


class DownWatch(threading.Thread):
    """The largest number of these LiveStreams that had no Ready pod at once."""

    def __init__(self, api_client, namespace: str) -> None:
        super().__init__(daemon=True)
        self.core = kubernetes.client.CoreV1Api(api_client)
        self.namespace = namespace
        self.pods: dict[str, tuple[str, bool]] = {}  # pod -> (LiveStream, serving)
        self.max_down = 0
        self.watch = kubernetes.watch.Watch()

    def down(self) -> int:
        serving = {ls for ls, ok in self.pods.values() if ok}
        return len(set(NAMES) - serving)

    def run(self) -> None:
        for event in self.watch.stream(
            self.core.list_namespaced_pod, self.namespace, label_selector=LABEL,
            timeout_seconds=ROLL + 120,
        ):  # fmt: skip
            pod = event["object"]
            ready = any(
                c.type == "Ready" and c.status == "True" for c in pod.status.conditions or []
            )
            serving = ready and pod.metadata.deletion_timestamp is None
            if event["type"] == "DELETED":
                self.pods.pop(pod.metadata.name, None)
            else:
                self.pods[pod.metadata.name] = (pod.metadata.labels[LABEL], serving)
            if len(self.pods) >= len(NAMES) or self.max_down:  # past the first listing
                self.max_down = max(self.max_down, self.down())

    def stop(self) -> None:
        self.watch.stop()


def memory_request(dep: dict) -> str:
    return dep["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["memory"]


def rolled(dep: dict) -> bool:
    st, want = dep.get("status", {}), dep["spec"]["replicas"]
    return (
        st.get("observedGeneration", 0) >= dep["metadata"]["generation"]
        and st.get("updatedReplicas", 0) == want
        and st.get("readyReplicas", 0) == want
        and st.get("replicas", 0) == want
    )


@pytest.mark.timeout(1500)  # two chart upgrades and three pods rolled in turn, on 2 cores
def test_an_upgrade_rolls_one_stream_pod_at_a_time(
    operator, cluster, kubectl, api_client, namespace, images, pumpfun, livekit_server
):
    base = release.values(images, pumpfun.url, livekit_server.cluster_url, status_interval=1)
    one_at_a_time = {**copy.deepcopy(base), "rollout": {"maxConcurrent": 1}}
    try:
        release.install(cluster, one_at_a_time)
        wait_for(lambda: one_leader(kubectl), timeout=300, interval=1)
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "lk"},
            "stringData": {"apiKey": "k", "apiSecret": "s"},
        }
        apply(kubectl, namespace, secret)
        for name in NAMES:
            apply(kubectl, namespace, livestream(name))

        def deployments() -> list[dict]:
            return [get(kubectl, namespace, "deployment", f"{n}-stream") for n in NAMES]

        def all_serving() -> bool:
            try:
                return all(rolled(d) and d["status"].get("readyReplicas") for d in deployments())
            except Exception:  # not made yet
                return False

        wait_for(all_serving, timeout=600, interval=1)
        before = memory_request(deployments()[0])

        watch = DownWatch(api_client, namespace)
        watch.start()
        # A new operator configuration that changes every stream pod's template.
        upgraded = copy.deepcopy(one_at_a_time)
        requests = upgraded["streamPod"]["resources"]["requests"]
        requests["memory"] = "129Mi" if before != "129Mi" else "130Mi"
        release.install(cluster, upgraded)

        pending_seen: set[str] = set()

        def upgraded_everywhere() -> bool:
            for name in NAMES:
                cond = condition(status(kubectl, namespace, "ls", name), "RolloutPending")
                if cond.get("status") == "True":
                    pending_seen.add(name)
                    assert cond["reason"] == "WaitingForSlot", cond
            deps = deployments()
            return all(memory_request(d) == requests["memory"] and rolled(d) for d in deps)

        wait_for(upgraded_everywhere, timeout=ROLL, interval=0.5)
        watch.stop()
        watch.join(timeout=30)
        assert watch.max_down == 1, f"{watch.max_down} LiveStreams had no Ready pod at once"
        assert pending_seen, "no LiveStream said it waited for its turn"
        wait_for(
            lambda: all(
                condition(status(kubectl, namespace, "ls", n), "RolloutPending").get("status")
                == "False"
                for n in NAMES
            ),
            timeout=120,
        )
    finally:
        release.install(cluster, base)


def test_a_changed_credentials_secret_rolls_the_pod(operator, kubectl, namespace):
    """The LiveKit credentials Secret is watched: an edit reaches the pod (a new pod, whose env
    is read from the Secret) long before the 15-minute resync would."""
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "lk"},
        "stringData": {"apiKey": "k", "apiSecret": "s1"},
    }
    apply(kubectl, namespace, secret)
    apply(kubectl, namespace, livestream("cred"))
    selector = f"{LABEL}=cred"

    def ready_pod() -> dict | None:
        out = kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "json").stdout
        for pod in json.loads(out)["items"]:
            conds = pod["status"].get("conditions", [])
            if not pod["metadata"].get("deletionTimestamp") and any(
                c["type"] == "Ready" and c["status"] == "True" for c in conds
            ):
                return pod
        return None

    first = wait_for(ready_pod, timeout=300, interval=1)
    annotation = "streams.haven.dev/livekit-credentials-hash"
    before = first["metadata"]["annotations"][annotation]

    apply(kubectl, namespace, {**secret, "stringData": {"apiKey": "k", "apiSecret": "s2"}})
    second = wait_for(
        lambda: (p := ready_pod()) and p["metadata"]["uid"] != first["metadata"]["uid"] and p,
        timeout=240,  # generous; the resync would take 15 minutes
        interval=1,
    )
    assert second["metadata"]["annotations"][annotation] != before

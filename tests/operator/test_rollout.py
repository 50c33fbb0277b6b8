"""Safe upgrades (operator/haven_operator/rollout.py): a chart upgrade that changes every stream
pod's template rolls 6 LiveStreams at most rollout.maxConcurrent=2 at a time, each waiting for
the ones before to be Ready again; the waiting LiveStreams say RolloutPending=True and keep
their pod; the one with an active Recording is rolled last.

A watch on the stream pods counts the LiveStreams without a Ready pod at every event: never
more than two. Five pods run without a LiveKit server (they are Ready once started); the sixth
is live on the synthetic publisher and records, so the node is not what is under test."""

from __future__ import annotations

import copy
import json
import threading

import kubernetes
import pytest

from haven_localcluster import release

from .test_end_to_end import credentials, recording
from .test_end_to_end import livestream as live_livestream
from .test_leader import one_leader
from .test_livestream_reconcile import apply, condition, get, livestream, status, wait_for

RECORDING = "rec"  # the LiveStream with an active Recording
NAMES = ("r0", "r1", "r2", "r3", "r4", RECORDING)
MAX_CONCURRENT = 2
LABEL = "streams.haven.dev/livestream"
ROLL = 900  # generous: six stream pods replaced two at a time on a busy machine


class DownWatch(threading.Thread):
    """The largest number of these LiveStreams that had no Ready pod at once, and the order in
    which they got a new pod (one not in `old`)."""

    def __init__(self, api_client, namespace: str, old: set[str]) -> None:
        super().__init__(daemon=True)
        self.core = kubernetes.client.CoreV1Api(api_client)
        self.namespace = namespace
        self.old = old
        self.pods: dict[str, tuple[str, bool]] = {}  # pod -> (LiveStream, serving)
        self.max_down = 0
        self.new_pods: list[str] = []  # LiveStreams, in the order their new pod appeared
        self.watch = kubernetes.watch.Watch()
        self.stopping = False
        self.error: Exception | None = None  # the watch broke before it was stopped

    def down(self) -> int:
        serving = {ls for ls, ok in self.pods.values() if ok}
        return len(set(NAMES) - serving)

    def run(self) -> None:
        try:
            self._follow()
        except Exception as exc:  # stopping closes the response under the reader
            if not self.stopping:
                self.error = exc

    def _follow(self) -> None:
        for event in self.watch.stream(
            self.core.list_namespaced_pod, self.namespace, label_selector=LABEL,
            timeout_seconds=ROLL + 120,
        ):  # fmt: skip
            pod = event["object"]
            ls = pod.metadata.labels[LABEL]
            ready = any(
                c.type == "Ready" and c.status == "True" for c in pod.status.conditions or []
            )
            serving = ready and pod.metadata.deletion_timestamp is None
            if event["type"] == "DELETED":
                self.pods.pop(pod.metadata.name, None)
            else:
                self.pods[pod.metadata.name] = (ls, serving)
                if pod.metadata.name not in self.old and ls not in self.new_pods:
                    self.new_pods.append(ls)
            if len(self.pods) >= len(NAMES) or self.max_down:  # past the first listing
                self.max_down = max(self.max_down, self.down())

    def stop(self) -> None:
        self.stopping = True
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


@pytest.mark.timeout(2400)  # two chart upgrades and six pods rolled in turn, on 2 cores
def test_an_upgrade_rolls_two_stream_pods_at_a_time_and_recording_ones_last(
    operator, cluster, kubectl, api_client, namespace, images, pumpfun, livekit_server, publisher
):
    base = release.values(images, pumpfun.url, livekit_server.cluster_url, status_interval=1)
    two_at_a_time = {**copy.deepcopy(base), "rollout": {"maxConcurrent": MAX_CONCURRENT}}
    try:
        release.install(cluster, two_at_a_time)
        wait_for(lambda: one_leader(kubectl), timeout=300, interval=1)
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "lk"},
            "stringData": {"apiKey": "k", "apiSecret": "s"},
        }
        apply(kubectl, namespace, secret)
        apply(kubectl, namespace, credentials(livekit_server))
        for name in NAMES[:-1]:
            apply(kubectl, namespace, livestream(name))
        apply(kubectl, namespace, live_livestream(RECORDING, livekit_server, publisher))
        apply(
            kubectl,
            namespace,
            recording("rec-1", RECORDING, format="h264", quality="low", maxWidth=320),
        )

        def deployments() -> list[dict]:
            return [get(kubectl, namespace, "deployment", f"{n}-stream") for n in NAMES]

        def all_serving() -> bool:
            try:
                return all(rolled(d) and d["status"].get("readyReplicas") for d in deployments())
            except Exception:  # not made yet
                return False

        wait_for(all_serving, timeout=600, interval=1)
        wait_for(
            lambda: status(kubectl, namespace, "ls", RECORDING).get("activeRecordings") == 1,
            timeout=300,
            interval=1,
        )
        before = memory_request(deployments()[0])

        out = kubectl("get", "pods", "-n", namespace, "-l", LABEL, "-o", "name").stdout
        watch = DownWatch(api_client, namespace, {o.split("/")[1] for o in out.split()})
        watch.start()
        # A new operator configuration that changes every stream pod's template.
        upgraded = copy.deepcopy(two_at_a_time)
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
        assert watch.error is None, f"the pod watch broke: {watch.error!r}"
        assert 1 <= watch.max_down <= MAX_CONCURRENT, f"{watch.max_down} had no Ready pod at once"
        assert pending_seen, "no LiveStream said it waited for its turn"
        assert sorted(watch.new_pods) == sorted(NAMES), watch.new_pods
        assert watch.new_pods[-1] == RECORDING, f"rolled in the order {watch.new_pods}"
        wait_for(
            lambda: all(
                condition(status(kubectl, namespace, "ls", n), "RolloutPending").get("status")
                == "False"
                for n in NAMES
            ),
            timeout=120,
        )
        # The recording went on in its new pod.
        wait_for(
            lambda: status(kubectl, namespace, "ls", RECORDING).get("activeRecordings") == 1,
            timeout=300,
            interval=1,
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

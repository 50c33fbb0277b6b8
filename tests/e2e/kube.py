"""The suite's only ways into the cluster: the Kubernetes API (the Python client), kubectl and
helm with the given kubeconfig, and `kubectl port-forward` to reach a pod from this host."""

from __future__ import annotations

import json
import re
import selectors
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import kubernetes

T = TypeVar("T")
GROUP, VERSION = "streams.haven.dev", "v1alpha1"


@dataclass(frozen=True)
class Target:
    """A cluster as the suite was told about it, and the tools to reach it."""

    kubeconfig: str
    context: str | None
    kubectl_binary: str
    helm_binary: str

    def client(self) -> kubernetes.client.ApiClient:
        return kubernetes.config.new_client_from_config(
            config_file=self.kubeconfig, context=self.context
        )

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 180
    ) -> subprocess.CompletedProcess:
        context = [f"--context={self.context}"] if self.context else []
        argv = [self.kubectl_binary, f"--kubeconfig={self.kubeconfig}", *context, *args]
        return _run(argv, input, check, timeout)

    def helm(
        self, *args: str, check: bool = True, timeout: float = 600
    ) -> subprocess.CompletedProcess:
        context = [f"--kube-context={self.context}"] if self.context else []
        argv = [self.helm_binary, f"--kubeconfig={self.kubeconfig}", *context, *args]
        return _run(argv, None, check, timeout)

    def apply(self, namespace: str, *objects: dict) -> None:
        """Server-side apply, as the suite's own field manager."""
        items = {"apiVersion": "v1", "kind": "List", "items": list(objects)}
        self.kubectl(
            "apply", "--server-side", "--field-manager=haven-e2e", "-n", namespace, "-f", "-",
            input=json.dumps(items),
        )  # fmt: skip


def _run(
    argv: list[str], input: str | None, check: bool, timeout: float
) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        shown = " ".join(a for a in argv[1:] if not a.startswith("--kubeconfig"))
        raise AssertionError(f"{shown} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def wait_for(what: str, fn: Callable[[], T], timeout: float = 180, interval: float = 1) -> T:
    """Poll `fn` until it returns something true; fail with `what` and its last answer."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what}: not so after {timeout:.0f}s; last: {last!r}"[:4000])


def wait_gone(what: str, fn: Callable[[], list[str]], timeout: float = 180) -> None:
    """Poll `fn` until it lists nothing; fail with `what` and what it listed last."""
    deadline, left = time.monotonic() + timeout, fn()
    while left:
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: still there after {timeout:.0f}s: {left}"[:4000])
        time.sleep(1)
        left = fn()


def custom(api: kubernetes.client.ApiClient, namespace: str, plural: str, name: str) -> dict:
    """A LiveStream or Recording, or {} if there is none."""
    try:
        return kubernetes.client.CustomObjectsApi(api).get_namespaced_custom_object(
            GROUP, VERSION, namespace, plural, name
        )
    except kubernetes.client.ApiException as e:
        if e.status == 404:
            return {}
        raise


def condition(status: dict, type_: str) -> dict:
    return next((c for c in status.get("conditions", []) if c["type"] == type_), {})


@contextmanager
def port_forward(target: Target, namespace: str, resource: str, port: int) -> Iterator[int]:
    """`kubectl port-forward` on loopback to `resource` (svc/x, pod/y); the local port."""
    context = [f"--context={target.context}"] if target.context else []
    proc = subprocess.Popen(
        [
            target.kubectl_binary, f"--kubeconfig={target.kubeconfig}", *context,
            "port-forward", "-n", namespace, "--address=127.0.0.1", resource, f":{port}",
        ],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        yield _forwarded_port(proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _forwarded_port(proc: subprocess.Popen, timeout: float = 60) -> int:
    """The local port from kubectl's "Forwarding from 127.0.0.1:N -> M" line."""
    assert proc.stdout is not None and proc.stderr is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if sel.select(left):
                line = proc.stdout.readline()
                if not line:  # kubectl ended
                    raise AssertionError(f"kubectl port-forward failed: {proc.stderr.read()}")
                if found := re.search(r"127\.0\.0\.1:(\d+) ->", line):
                    return int(found.group(1))
    raise AssertionError(f"kubectl port-forward said nothing in {timeout:.0f}s")

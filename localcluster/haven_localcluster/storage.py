"""Dynamic PersistentVolumes on the node's disk: rancher's local-path-provisioner, built from
the Go module proxy and run beside the control plane, as the default StorageClass."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from . import toolchain
from .process import Proc, run_checked, spawn, stop

NAMESPACE = "local-path-storage"
SERVICE_ACCOUNT = "local-path-provisioner"
CONFIG_MAP = "local-path-config"  # the helper pod mounts its setup and teardown scripts
STORAGE_CLASS = "local-path"
PROVISIONER = "rancher.io/local-path"

SETUP = '#!/bin/sh\nset -eu\nmkdir -m 0777 -p "$VOL_DIR"\n'
TEARDOWN = '#!/bin/sh\nset -eu\nrm -rf "$VOL_DIR"\n'


def _manifests() -> list[dict]:
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": SERVICE_ACCOUNT, "namespace": NAMESPACE},
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": CONFIG_MAP, "namespace": NAMESPACE},
            "data": {"setup": SETUP, "teardown": TEARDOWN},
        },
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {
                "name": STORAGE_CLASS,
                "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
            },
            "provisioner": PROVISIONER,
            "volumeBindingMode": "WaitForFirstConsumer",
            "reclaimPolicy": "Delete",
        },
    ]


def _helper_pod(image: str) -> dict:
    """The pod the provisioner runs on the node to make and remove a volume's directory."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "helper-pod"},
        "spec": {
            "priorityClassName": "system-node-critical",
            "tolerations": [{"key": "node.kubernetes.io/disk-pressure", "operator": "Exists"}],
            "containers": [
                {"name": "helper-pod", "image": image, "imagePullPolicy": "IfNotPresent"}
            ],
        },
    }


@dataclass
class LocalPathProvisioner:
    state_dir: Path  # volumes land in <state_dir>/volumes
    kubeconfig: Path
    kubectl: Path
    log_dir: Path
    detach: bool = False
    proc: Proc | None = None

    @property
    def volumes_dir(self) -> Path:
        return self.state_dir / "volumes"

    def start(self, helper_image: str) -> None:
        """Run it; `helper_image` is any image with a POSIX shell."""
        binary = toolchain.ensure(["local-path-provisioner"])["local-path-provisioner"]
        config_dir = self.state_dir / "config"
        config_dir.mkdir(parents=True, exist_ok=True)
        self.volumes_dir.mkdir(parents=True, exist_ok=True)
        paths = [{"node": "DEFAULT_PATH_FOR_NON_LISTED_NODES", "paths": [str(self.volumes_dir)]}]
        (config_dir / "config.json").write_text(json.dumps({"nodePathMap": paths}))
        helper = config_dir / "helperPod.yaml"
        helper.write_text(yaml.safe_dump(_helper_pod(helper_image)))
        run_checked(
            [str(self.kubectl), f"--kubeconfig={self.kubeconfig}", "apply", "-f", "-"],
            yaml.safe_dump_all(_manifests()),
        )
        self.proc = spawn(
            "local-path-provisioner",
            [
                str(binary),
                "start",
                f"--config={config_dir / 'config.json'}",
                f"--kubeconfig={self.kubeconfig}",
                f"--namespace={NAMESPACE}",
                f"--service-account-name={SERVICE_ACCOUNT}",
                f"--helper-image={helper_image}",
                f"--helper-pod-file={helper}",
                f"--provisioner-name={PROVISIONER}",
                f"--configmap-name={CONFIG_MAP}",
            ],
            self.log_dir,
            detach=self.detach,
        )

    def stop(self) -> None:
        if self.proc:
            stop([self.proc])
            self.proc = None

"""The whole local cluster: the node's network, the control plane, and one node."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from . import dns, toolchain
from .controlplane import ControlPlane
from .network import NodeNetwork, free_network
from .node import Node
from .storage import LocalPathProvisioner

if TYPE_CHECKING:
    from .images import Image


@dataclass
class LocalCluster:
    state_dir: Path
    # Imported into the node: "pause" (pod sandboxes), "base" (a shell, for the volume
    # provisioner's helper pods) and "coredns" are required.
    images: dict[str, Image]
    detach: bool = False
    network: NodeNetwork = field(default_factory=free_network)
    audit: bool = False  # the apiserver's audit log, for the benchmarks
    audit_groups: tuple[str, ...] = ()  # or only these user groups' requests (the tests)
    # False when the caller created the network and deletes it (the tests create it first,
    # so livekit-server can listen on its host address before the cluster starts).
    own_network: bool = True
    control_plane: ControlPlane = field(init=False)
    node: Node = field(init=False)
    storage: LocalPathProvisioner = field(init=False)

    def __post_init__(self) -> None:
        self.control_plane = ControlPlane(
            self.state_dir,
            self.detach,
            self.network,
            audit=self.audit,
            audit_groups=self.audit_groups,
        )
        self.node = Node(
            self.state_dir / "node", self.control_plane, self.network, self.images, self.detach
        )
        self.storage = LocalPathProvisioner(
            self.state_dir / "node" / "local-path",
            self.kubeconfig,
            toolchain.binary_path("kubectl"),
            log_dir=self.log_dir,
            detach=self.detach,
        )

    @property
    def kubeconfig(self) -> Path:
        return self.control_plane.kubeconfig

    @property
    def server(self) -> str:
        return self.control_plane.server

    @property
    def log_dir(self) -> Path:
        return self.control_plane.log_dir

    def start(self) -> dict[str, float]:
        """Start everything; timings are seconds since the start, per component."""
        t0 = time.monotonic()
        if self.own_network:
            self.network.create()
        try:
            timings = self.control_plane.start()
            offset = time.monotonic() - t0
            timings |= {k: v + offset for k, v in self.node.start().items()}
            self.storage.start(helper_image=self.images["base"].ref)
            kubectl = toolchain.binary_path("kubectl")
            dns.deploy(kubectl, self.kubeconfig, self.images["coredns"].ref, self.network.dns_ip)
            timings["dns"] = time.monotonic() - t0
        except BaseException:
            self.stop()
            raise
        return timings

    def stop(self) -> None:
        self.storage.stop()
        self.node.stop()
        self.control_plane.stop()
        if self.own_network:
            self.network.delete()

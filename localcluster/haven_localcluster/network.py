"""The node's network: a network namespace of its own, joined to the host by one veth pair.

    host netns                          node netns (haven-node<N>)
    10.250.N.1 (havenh<N>) ---veth--- 10.250.N.2 (eth0)
      routes: pod CIDR and Service CIDR    kubelet, containerd, kube-proxy
      via 10.250.N.2                        bridge haven0 10.244.N.1/24 --- pods

The apiserver and livekit-server listen on 10.250.N.1, an address only the node's namespace
can reach; kube-proxy's rules live inside the node namespace, so deleting that namespace
removes them all. N picks non-overlapping addresses when two clusters run at once.
"""

from __future__ import annotations

import fcntl
import os
import time
from dataclasses import dataclass
from pathlib import Path

from .process import run

NETNS_DIR = Path("/run/netns")
MAX_NODES = 8


def ip(*args: str, check: bool = True) -> str:
    return run(["ip", *args], check=check).stdout


@dataclass(frozen=True)
class NodeNetwork:
    index: int = 0

    @property
    def netns(self) -> str:
        return f"haven-node{self.index}"

    @property
    def netns_path(self) -> Path:
        return NETNS_DIR / self.netns

    @property
    def host_if(self) -> str:
        return f"havenh{self.index}"

    @property
    def host_ip(self) -> str:
        return f"10.250.{self.index}.1"

    @property
    def node_ip(self) -> str:
        return f"10.250.{self.index}.2"

    @property
    def pod_cidr(self) -> str:
        return f"10.244.{self.index}.0/24"

    @property
    def service_cidr(self) -> str:
        return f"10.{96 + self.index}.0.0/16"

    @property
    def service_ip(self) -> str:
        """The `kubernetes` Service: the first address of the Service CIDR."""
        return f"10.{96 + self.index}.0.1"

    @property
    def dns_ip(self) -> str:
        return f"10.{96 + self.index}.0.10"

    def exists(self) -> bool:
        return self.netns_path.exists()

    def nsenter(self) -> list[str]:
        """Prefix that runs a command in the node's network namespace only (not its own mount
        namespace, as `ip netns exec` would: kubelet and containerd must share mounts)."""
        return ["nsenter", f"--net={self.netns_path}", "--"]

    def create(self) -> None:
        self.delete()  # a previous run killed outright leaves its namespace behind
        ns, hif = self.netns, self.host_if
        ip("netns", "add", ns)
        ip("link", "add", hif, "type", "veth", "peer", "name", "eth0", "netns", ns)
        ip("addr", "add", f"{self.host_ip}/30", "dev", hif)
        ip("link", "set", hif, "up")
        ip("-n", ns, "addr", "add", f"{self.node_ip}/30", "dev", "eth0")
        ip("-n", ns, "link", "set", "eth0", "up")
        ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", ns, "route", "add", "default", "via", self.host_ip)
        for cidr in (self.pod_cidr, self.service_cidr):
            ip("route", "replace", cidr, "via", self.node_ip, "dev", hif)
        # Inside the node: route between pods and the veth, and let iptables see bridged
        # traffic, so a pod reaching a Service backed by a pod on the same bridge gets replies.
        for key in ("net.ipv4.ip_forward", "net.bridge.bridge-nf-call-iptables"):
            ip("netns", "exec", ns, "sysctl", "-qw", f"{key}=1")

    def delete(self) -> None:
        for cidr in (self.pod_cidr, self.service_cidr):
            ip("route", "del", cidr, check=False)
        ip("link", "del", self.host_if, check=False)
        if self.exists():
            ip("netns", "delete", self.netns, check=False)
        delete_orphan_pod_netns()

    def in_use(self) -> bool:
        """Some process (a node's kubelet, containerd, kube-proxy) still lives in it."""
        return self.exists() and bool(ip("netns", "pids", self.netns, check=False))


# Lock files held (open) by this process for the networks it reserved: another process on
# this machine (a second test session, the demo) skips them even before any node lives there.
_reserved: dict[int, int] = {}


def _reserve(index: int) -> bool:
    if index in _reserved:
        return False
    fd = os.open(f"/run/haven-node{index}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    _reserved[index] = fd
    return True


def free_network() -> NodeNetwork:
    """The first node network that no live node uses and no other process has reserved; it is
    reserved for this process's lifetime. A dead node's leftovers are reused."""
    for index in range(MAX_NODES):
        net = NodeNetwork(index)
        if not net.in_use() and _reserve(index):
            return net
    raise RuntimeError(f"all {MAX_NODES} node networks are in use: see `ip netns`")


def delete_orphan_pod_netns(min_age: float = 60) -> list[str]:
    """Delete pod network namespaces (cni-*) left with nothing but loopback: their node's
    bridge is gone, so nothing can use them again. Young ones may be a live node's, mid-setup."""
    deleted = []
    for path in NETNS_DIR.glob("cni-*"):
        try:
            if time.time() - path.stat().st_mtime < min_age:
                continue
        except OSError:
            continue
        links = ip("-n", path.name, "-o", "link", "show", check=False).splitlines()
        if links and all(": lo:" in line for line in links):
            ip("netns", "delete", path.name, check=False)
            deleted.append(path.name)
    return deleted

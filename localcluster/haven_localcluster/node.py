"""One real node: containerd with runc, CNI bridge networking, a kubelet and kube-proxy, all in
the node's network namespace (network.py) and sharing the host's mounts and cgroups.

Debian ships containerd 1.6 and runc; Kubernetes 1.34 still supports containerd 1.6 and
cgroup v1 (1.35 refuses cgroup v1 by default, 1.36 drops containerd 1.x).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from . import toolchain
from .controlplane import ControlPlane
from .network import NodeNetwork
from .pki import NODE_NAME
from .process import Proc, run, spawn, stop

if TYPE_CHECKING:
    from .images import Image

CNI_BIN_DIR = "/usr/lib/cni"  # Debian's containernetworking-plugins
CGROUP_ROOT = Path("/sys/fs/cgroup")
CRI_NAMESPACE = "k8s.io"


def _kubelet_config(node: Node, pki_dir: Path) -> dict:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": node.network.node_ip,
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",  # loopback of the node's namespace
        "healthzPort": 10248,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(pki_dir / "ca.crt")},
        },
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{node.containerd_socket}",
        "cgroupDriver": "cgroupfs",  # no systemd here
        "cgroupRoot": f"/{node.cgroup_name}",
        "failCgroupV1": False,  # this machine mounts cgroup v1
        "failSwapOn": False,
        "clusterDomain": "cluster.local",
        "clusterDNS": [node.network.dns_ip],
        "resolvConf": "",  # pods get no host resolver: there is no network beyond loopback
        # A test machine's disk can be nearly full; evict only when it really is, and never
        # garbage-collect the images built here (they cannot be pulled again).
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
        },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False,
        "syncFrequency": "10s",
        "volumePluginDir": str(node.state_dir / "volume-plugins"),
        "podLogsDir": str(node.state_dir / "pod-logs"),  # not /var/log/pods: the node's own
        "shutdownGracePeriod": "0s",
        "oomScoreAdj": 0,  # lowering it needs CAP_SYS_RESOURCE, which this machine withholds
        "logging": {"format": "text", "verbosity": 1},
    }


def _kube_proxy_config(node: Node, kubeconfig: Path) -> dict:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": NODE_NAME,
        "mode": "iptables",
        "clusterCIDR": node.network.pod_cidr,
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        "oomScoreAdj": 0,
        # Conntrack sysctls are the host's to set, not a test node's.
        "conntrack": {"maxPerCore": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
    }


def _containerd_config(node: Node) -> str:
    root = node.state_dir / "containerd"
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    runc = shutil.which("runc") or "/usr/sbin/runc"
    return f"""version = 2
root = "{root / "root"}"
state = "{root / "state"}"

[grpc]
  address = "{node.containerd_socket}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{root / "opt"}"

[{cri}]
  sandbox_image = "{node.images["pause"].ref}"
  stream_server_address = "127.0.0.1"
  enable_cdi = false
  # No CAP_SYS_RESOURCE here, so no negative oom_score_adj: keep it at containerd's own.
  restrict_oom_score_adj = true

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  BinaryName = "{runc}"
  SystemdCgroup = false

[{cri}.cni]
  bin_dir = "{CNI_BIN_DIR}"
  conf_dir = "{node.state_dir / "cni"}"
"""


def _cni_config(node: Node) -> dict:
    return {
        "cniVersion": "1.0.0",
        "name": "haven",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "haven0",
                "isGateway": True,
                "ipMasq": False,  # the host routes the pod CIDR back through the veth
                "hairpinMode": True,  # a pod reaches itself through its own Service
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": node.network.pod_cidr}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(node.state_dir / "cni-ipam"),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


@dataclass
class Node:
    """The node's processes and files, under `state_dir`; `images` are imported into its
    containerd (`pause` is the pod sandbox)."""

    state_dir: Path
    control_plane: ControlPlane
    network: NodeNetwork
    images: dict[str, Image]
    detach: bool = False
    procs: list[Proc] = field(default_factory=list)

    @property
    def containerd_socket(self) -> Path:
        return self.state_dir / "containerd" / "containerd.sock"

    @property
    def cgroup_name(self) -> str:
        return self.network.netns  # haven-node<N>: one cgroup subtree per node

    def _spawn(self, name: str, argv: list[str]) -> Proc:
        proc = spawn(name, self.network.nsenter() + argv, self.control_plane.log_dir,
                     detach=self.detach)  # fmt: skip
        proc.argv = argv  # nsenter execs the command: the process is the command itself
        self.procs.append(proc)
        return proc

    def ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return ctr(self.containerd_socket, *args, check=check)

    def start(self) -> dict[str, float]:
        """Start containerd, import the images, start kubelet and kube-proxy, and wait until
        the node is Ready. Returns start-up timings."""
        bins = toolchain.ensure(["kubelet", "kube-proxy"])
        t0 = time.monotonic()
        timings: dict[str, float] = {}
        cp, pki = self.control_plane, self.control_plane.pki
        # A node of the same name that was killed outright leaves containers running.
        self._kill_containers()
        _kill_shims(self.containerd_socket)
        self._remove_cgroups()
        for sub in ("containerd", "cni", "cni-ipam", "kubelet", "volume-plugins", "pod-logs"):
            (self.state_dir / sub).mkdir(parents=True, exist_ok=True)
        try:
            (self.state_dir / "cni" / "10-haven.conflist").write_text(
                json.dumps(_cni_config(self), indent=2)
            )
            config = self.state_dir / "containerd" / "config.toml"
            config.write_text(_containerd_config(self))
            containerd = self._spawn("containerd", ["containerd", f"--config={config}"])
            self._wait(lambda: self.ctr("version", check=False).returncode == 0, containerd, 30)
            timings["containerd"] = time.monotonic() - t0

            present = set(self.ctr("images", "ls", "-q").stdout.split())
            for image in self.images.values():
                if image.ref not in present:
                    self.ctr("images", "import", "--no-unpack", str(image.archive))
            timings["images"] = time.monotonic() - t0

            self._make_cgroup_root()
            kubeconfig = cp.client_kubeconfig("kubelet", self.state_dir / "kubelet.kubeconfig")
            kubelet_config = self.state_dir / "kubelet-config.yaml"
            kubelet_config.write_text(yaml.safe_dump(_kubelet_config(self, pki.dir)))
            kubelet = self._spawn(
                "kubelet",
                [
                    str(bins["kubelet"]),
                    f"--config={kubelet_config}",
                    f"--kubeconfig={kubeconfig}",
                    f"--root-dir={self.state_dir / 'kubelet'}",
                    f"--cert-dir={self.state_dir / 'kubelet' / 'pki'}",
                    f"--hostname-override={NODE_NAME}",
                    f"--node-ip={self.network.node_ip}",
                ],
            )
            proxy_kubeconfig = cp.client_kubeconfig(
                "kube-proxy", self.state_dir / "kube-proxy.kubeconfig"
            )
            proxy_config = self.state_dir / "kube-proxy-config.yaml"
            proxy_config.write_text(yaml.safe_dump(_kube_proxy_config(self, proxy_kubeconfig)))
            proxy = self._spawn("kube-proxy", [str(bins["kube-proxy"]), f"--config={proxy_config}"])
            self._wait(self._node_ready, kubelet, 120, also=[proxy, containerd])
            timings["node-ready"] = time.monotonic() - t0
        except BaseException:
            self.stop()
            raise
        return timings

    def _wait(self, ready, proc: Proc, timeout: float, also: list[Proc] = ()) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for p in (proc, *also):
                if not p.alive():
                    raise RuntimeError(f"{p.name} exited while starting:\n{p.log_tail()}")
            if ready():
                return
            time.sleep(0.2)
        raise TimeoutError(f"{proc.name} not ready after {timeout}s:\n{proc.log_tail()}")

    def _node_ready(self) -> bool:
        cp = self.control_plane
        try:
            req = urllib.request.Request(f"{cp.server}/api/v1/nodes/{NODE_NAME}")
            with urllib.request.urlopen(req, timeout=2, context=cp.ssl_context()) as resp:
                node = json.load(resp)
        except (OSError, ssl.SSLError, ValueError):
            return False
        conditions = node.get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def _cgroup_dirs(self) -> list[Path]:
        return [
            d / self.cgroup_name
            for d in sorted(CGROUP_ROOT.iterdir())
            if d.is_dir() and not d.is_symlink() and d.name != "unified"
        ]

    def _make_cgroup_root(self) -> None:
        for path in self._cgroup_dirs():
            path.mkdir(exist_ok=True)
            if path.parent.name == "cpuset":  # a new cpuset has no CPUs until given some
                for knob in ("cpuset.cpus", "cpuset.mems"):
                    (path / knob).write_text((path.parent / knob).read_text())

    def stop(self) -> None:
        """Stop the node and remove every container, mount and namespace it made."""
        containerd = [p for p in self.procs if p.name == "containerd"]
        stop([p for p in reversed(self.procs) if p.name != "containerd"])  # kube-proxy, kubelet
        pod_netns = self._pod_netns() if containerd and containerd[0].alive() else set()
        self._kill_containers()
        stop(containerd)
        self.procs.clear()
        _kill_shims(self.containerd_socket)
        for path in pod_netns:
            subprocess.run(["ip", "netns", "delete", Path(path).name], capture_output=True)
        _unmount_under(self.state_dir)
        self._remove_cgroups()

    def containers(self) -> list[Container]:
        return containers(self.containerd_socket)

    def _pod_netns(self) -> set[str]:
        return {c.netns for c in self.containers() if c.netns}

    def _kill_containers(self) -> None:
        """SIGKILL every process in the node's cgroups (what runs in its pods)."""
        for _ in range(50):
            pids = {pid for d in self._cgroup_dirs() for pid in _cgroup_pids(d)}
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)

    def _remove_cgroups(self) -> None:
        for root in self._cgroup_dirs():
            for dirpath, _, _ in os.walk(root, topdown=False):  # children first
                with contextlib.suppress(OSError):
                    os.rmdir(dirpath)


def _cgroup_pids(root: Path) -> set[int]:
    """Every process in a cgroup tree (which may be shrinking meanwhile)."""
    pids = set()
    for dirpath, _, files in os.walk(root):
        if "cgroup.procs" in files:
            with contextlib.suppress(OSError):
                pids.update(int(p) for p in Path(dirpath, "cgroup.procs").read_text().split())
    return pids


@dataclass(frozen=True)
class Container:
    id: str
    labels: dict[str, str]  # the CRI's: io.kubernetes.pod.namespace, .name, ...
    netns: str | None  # a sandbox's own network namespace; None for the containers joining it


def ctr(socket: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """containerd's `ctr`, in the CRI's namespace of the containerd at `socket`."""
    argv = ["ctr", f"--address={socket}", f"--namespace={CRI_NAMESPACE}", *args]
    return run(argv, check=check, timeout=300)


def containers(socket: Path) -> list[Container]:
    """What the containerd at `socket` runs for the kubelet's pods."""
    found = []
    for cid in ctr(socket, "containers", "ls", "-q", check=False).stdout.split():
        info = ctr(socket, "containers", "info", cid, check=False)
        with contextlib.suppress(ValueError, KeyError):  # removed meanwhile
            spec = json.loads(info.stdout)
            paths = [
                ns.get("path", "")
                for ns in spec["Spec"]["linux"]["namespaces"]
                if ns["type"] == "network"
            ]
            netns = next((p for p in paths if "/netns/" in p), None)  # not /proc/<pid>/ns/net
            found.append(Container(cid, spec.get("Labels", {}), netns))
    return found


def _kill_shims(socket: Path) -> None:
    """containerd's shims outlive it by design. Kill ours (they name its socket) and any whose
    containerd's socket is gone: leftovers of a node that was killed outright."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().decode().split("\0")
        except OSError:
            continue
        if not argv[0].endswith("containerd-shim-runc-v2") or "-address" not in argv[:-1]:
            continue
        address = argv[argv.index("-address") + 1]
        if address == str(socket) or not Path(address).exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc.name), signal.SIGKILL)


def _unmount_under(directory: Path) -> None:
    """Lazily unmount what the kubelet and containerd mounted below `directory`, deepest
    first (volumes, rootfs overlays, sandbox shm)."""
    prefix = str(directory.resolve()) + "/"
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point.startswith(prefix):
            mounts.append(point)
    for point in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)

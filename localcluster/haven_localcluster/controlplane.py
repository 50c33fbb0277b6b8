"""A real Kubernetes control plane: etcd, kube-apiserver, kube-controller-manager and
kube-scheduler, in the spirit of Kubernetes' own hack/local-up-cluster.sh.

Without a node everything listens on loopback. With a node (see network.py) the apiserver
listens on the host's end of the node's veth instead, the one address pods can reach.
"""

from __future__ import annotations

import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import pki as pki_mod
from . import toolchain
from .network import NodeNetwork
from .process import Proc, free_port, spawn, stop, wait_http

LOOPBACK = "127.0.0.1"


def write_kubeconfig(
    path: Path, server: str, ca: Path, cert: Path, key: Path, user: str = "admin"
) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "local", "cluster": {"server": server, "certificate-authority": str(ca)}}
        ],
        "users": [
            {"name": user, "user": {"client-certificate": str(cert), "client-key": str(key)}}
        ],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": user}}],
        "current-context": "local",
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path


@dataclass
class ControlPlane:
    """The control plane's processes, files and addresses, all under `state_dir`."""

    state_dir: Path
    detach: bool = False  # True: processes outlive this Python process (`up`)
    network: NodeNetwork | None = None  # set when a node will join
    audit: bool = False  # log every request's metadata to <state_dir>/audit.log (benchmarks)
    # Or only these user groups' requests (the tests: the chart's ServiceAccounts, for RBAC).
    audit_groups: tuple[str, ...] = ()
    procs: list[Proc] = field(default_factory=list)
    apiserver_port: int = 0

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def pki(self) -> pki_mod.Pki:
        return pki_mod.Pki(self.state_dir / "pki")

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def address(self) -> str:
        return self.network.host_ip if self.network else LOOPBACK

    @property
    def server(self) -> str:
        return f"https://{self.address}:{self.apiserver_port}"

    def client_kubeconfig(self, stem: str, path: Path | None = None) -> Path:
        """A kubeconfig for the client identity whose certificate is `<stem>.crt` in the PKI."""
        return write_kubeconfig(
            path or self.state_dir / f"{stem}.kubeconfig",
            self.server,
            self.pki.ca_cert,
            self.pki.path(f"{stem}.crt"),
            self.pki.path(f"{stem}.key"),
            user=stem,
        )

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        ctx.load_cert_chain(self.pki.path("admin.crt"), self.pki.path("admin.key"))
        return ctx

    def _spawn(self, name: str, argv: list[str]) -> Proc:
        proc = spawn(name, argv, self.log_dir, detach=self.detach)
        self.procs.append(proc)
        return proc

    def start(self) -> dict[str, float]:
        """Start every component and wait until each is healthy. Returns start-up timings."""
        bins = toolchain.ensure(
            ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"]
        )
        t0 = time.monotonic()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        net = self.network or NodeNetwork()
        extra_ips = [net.host_ip] if self.network else []
        pki = pki_mod.create(self.state_dir / "pki", net.service_ip, extra_ips)
        timings: dict[str, float] = {}
        try:
            etcd_port, peer_port = free_port(), free_port()
            etcd_url = f"http://{LOOPBACK}:{etcd_port}"
            etcd = self._spawn(
                "etcd",
                [
                    str(bins["etcd"]),
                    "--name=local",
                    f"--data-dir={self.state_dir / 'etcd'}",
                    f"--listen-client-urls={etcd_url}",
                    f"--advertise-client-urls={etcd_url}",
                    f"--listen-peer-urls=http://{LOOPBACK}:{peer_port}",
                    f"--initial-advertise-peer-urls=http://{LOOPBACK}:{peer_port}",
                    f"--initial-cluster=local=http://{LOOPBACK}:{peer_port}",
                    "--unsafe-no-fsync",  # a throwaway test cluster: speed over durability
                    "--log-level=warn",
                ],
            )
            wait_http(f"{etcd_url}/health", etcd, timeout=30)
            timings["etcd"] = time.monotonic() - t0

            self.apiserver_port = free_port()
            apiserver = self._spawn(
                "kube-apiserver",
                [
                    str(bins["kube-apiserver"]),
                    f"--etcd-servers={etcd_url}",
                    f"--bind-address={self.address}",
                    f"--secure-port={self.apiserver_port}",
                    f"--tls-cert-file={pki.path('apiserver.crt')}",
                    f"--tls-private-key-file={pki.path('apiserver.key')}",
                    f"--client-ca-file={pki.ca_cert}",
                    f"--service-account-key-file={pki.path('sa.pub')}",
                    f"--service-account-signing-key-file={pki.path('sa.key')}",
                    "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                    f"--service-cluster-ip-range={net.service_cidr}",
                    "--authorization-mode=Node,RBAC",
                    "--enable-admission-plugins=NodeRestriction",
                    "--allow-privileged=true",
                    f"--kubelet-client-certificate={pki.path('apiserver-kubelet-client.crt')}",
                    f"--kubelet-client-key={pki.path('apiserver-kubelet-client.key')}",
                    "--kubelet-preferred-address-types=InternalIP",
                    *(
                        # The `kubernetes` Service's endpoint: the address pods reach.
                        [f"--advertise-address={self.network.host_ip}"]
                        if self.network
                        # Endpoints may not hold a loopback address: no endpoint at all.
                        else ["--endpoint-reconciler-type=none"]
                    ),
                    "--profiling=false",
                    *self._audit_flags(),
                ],
            )
            self.client_kubeconfig("admin", self.kubeconfig)
            wait_http(
                f"{self.server}/readyz", apiserver, timeout=90, ssl_context=self.ssl_context()
            )
            timings["kube-apiserver"] = time.monotonic() - t0

            insecure = ssl.create_default_context()
            insecure.check_hostname = False
            insecure.verify_mode = ssl.CERT_NONE  # their serving certs are self-signed
            components = []
            for name, stem, extra in (
                (
                    "kube-controller-manager",
                    "controller-manager",
                    [
                        f"--service-account-private-key-file={pki.path('sa.key')}",
                        f"--root-ca-file={pki.ca_cert}",
                        f"--cluster-signing-cert-file={pki.ca_cert}",
                        f"--cluster-signing-key-file={pki.path('ca.key')}",
                        f"--service-cluster-ip-range={net.service_cidr}",
                        "--use-service-account-credentials=true",
                    ],
                ),
                ("kube-scheduler", "scheduler", []),
            ):
                kubeconfig = self.client_kubeconfig(stem)
                port = free_port()
                proc = self._spawn(
                    name,
                    [
                        str(bins[name]),
                        f"--kubeconfig={kubeconfig}",
                        f"--authentication-kubeconfig={kubeconfig}",
                        f"--authorization-kubeconfig={kubeconfig}",
                        f"--bind-address={LOOPBACK}",
                        f"--secure-port={port}",
                        "--leader-elect=false",
                        *extra,
                    ],
                )
                components.append((proc, f"https://{LOOPBACK}:{port}/healthz"))
            for proc, url in components:
                wait_http(url, proc, timeout=60, ssl_context=insecure)
                timings[proc.name] = time.monotonic() - t0
        except BaseException:
            self.stop()
            raise
        return timings

    @property
    def audit_log(self) -> Path:
        return self.state_dir / "audit.log"

    def _audit_flags(self) -> list[str]:
        if not self.audit and not self.audit_groups:
            return []
        policy = self.state_dir / "audit-policy.yaml"
        rule = {"level": "Metadata", "omitStages": ["RequestReceived"]}
        rules = [rule]
        if not self.audit:
            rules = [{**rule, "userGroups": list(self.audit_groups)}, {"level": "None"}]
        policy.write_text(
            yaml.safe_dump({"apiVersion": "audit.k8s.io/v1", "kind": "Policy", "rules": rules})
        )
        return [
            f"--audit-policy-file={policy}",
            f"--audit-log-path={self.audit_log}",
            "--audit-log-format=json",
            "--audit-log-maxsize=0",
        ]

    def stop(self) -> None:
        # Reverse order: clients first, etcd last.
        stop(list(reversed(self.procs)))
        self.procs.clear()

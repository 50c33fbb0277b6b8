"""Builds the Go binaries the local cluster runs, from the Go module proxy, cached by version.

Each binary comes from a small build module under `localcluster/gobuild/`, whose go.mod and
go.sum pin it. A built binary lands in `<cache>/bin/<name>-<version>`; a second run finds it
there and builds nothing.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

GOBUILD_DIR = Path(__file__).resolve().parent.parent / "gobuild"

KUBERNETES_VERSION = "v1.34.4"
ETCD_VERSION = "v3.6.4"  # the etcd that k8s.io/kubernetes at KUBERNETES_VERSION requires
LIVEKIT_VERSION = "v1.13.5"
HELM_VERSION = "v3.22.0"
LOCAL_PATH_PROVISIONER_VERSION = "v0.0.30"
COREDNS_VERSION = "v1.14.7"
VERSITYGW_VERSION = "v1.8.0"
ACTIONLINT_VERSION = "v1.7.12"
TRAEFIK_VERSION = "v3.6.12"  # see gobuild/traefik/go.mod for why not v3.7


def _k8s_ldflags() -> str:
    major, minor = KUBERNETES_VERSION.lstrip("v").split(".")[:2]
    flags = ["-s", "-w"]
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {pkg}.gitVersion={KUBERNETES_VERSION}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
        ]
    return " ".join(flags)


@dataclass(frozen=True)
class Tool:
    name: str
    version: str
    module: str  # folder under gobuild/
    package: str  # what `go build` builds inside that module
    ldflags: str = "-s -w"


TOOLS: dict[str, Tool] = {
    t.name: t
    for t in [
        *(
            Tool(
                name,
                KUBERNETES_VERSION,
                "kubernetes",
                f"k8s.io/kubernetes/cmd/{name}",
                _k8s_ldflags(),
            )
            for name in (
                "kube-apiserver",
                "kube-controller-manager",
                "kube-scheduler",
                "kubectl",
                "kubelet",
                "kube-proxy",
            )
        ),
        Tool("etcd", ETCD_VERSION, "kubernetes", "./etcd"),
        Tool(
            "livekit-server",
            LIVEKIT_VERSION,
            "livekit",
            "github.com/livekit/livekit-server/cmd/server",
        ),
        Tool(
            "helm",
            HELM_VERSION,
            "helm",
            "helm.sh/helm/v3/cmd/helm",
            f"-s -w -X helm.sh/helm/v3/internal/version.version={HELM_VERSION}",
        ),
        Tool(
            "local-path-provisioner",
            LOCAL_PATH_PROVISIONER_VERSION,
            "local-path-provisioner",
            "github.com/rancher/local-path-provisioner",
        ),
        Tool("coredns", COREDNS_VERSION, "coredns", "github.com/coredns/coredns"),
        Tool(
            "versitygw",
            VERSITYGW_VERSION,
            "versitygw",
            "github.com/versity/versitygw/cmd/versitygw",
        ),
        # The Ingress controller; built when the ingress tests or the demo first need it.
        Tool(
            "traefik",
            TRAEFIK_VERSION,
            "traefik",
            "github.com/traefik/traefik/v3/cmd/traefik",
            f"-s -w -X github.com/traefik/traefik/v3/pkg/version.Version={TRAEFIK_VERSION}",
        ),
        # Checks .github/workflows in `make lint`; not needed by the cluster.
        Tool(
            "actionlint",
            ACTIONLINT_VERSION,
            "actionlint",
            "github.com/rhysd/actionlint/cmd/actionlint",
            f"-s -w -X github.com/rhysd/actionlint.version={ACTIONLINT_VERSION}",
        ),
    ]
}

# What the local cluster (control plane, node, LiveKit, S3 server) and the chart tests need.
DEFAULT_TOOLS = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kubelet",
    "kube-proxy",
    "livekit-server",
    "helm",
    "local-path-provisioner",
    "coredns",
    "versitygw",
)


def cache_dir() -> Path:
    return Path(os.environ.get("HAVEN_CACHE", Path.home() / ".cache" / "haven-streams"))


def binary_path(name: str) -> Path:
    tool = TOOLS[name]
    return cache_dir() / "bin" / f"{tool.name}-{tool.version}"


def _log(msg: str) -> None:
    print(f"[toolchain] {msg}", file=sys.stderr, flush=True)


def _go_build(tools: list[Tool], outdir: Path) -> None:
    """One `go build` per module and ldflags, so shared packages compile once."""
    module_dir = GOBUILD_DIR / tools[0].module
    env = {
        **os.environ,
        "CGO_ENABLED": "0",
        "GOTOOLCHAIN": "local",
        "GOFLAGS": "-buildvcs=false -mod=readonly",
    }
    cmd = [
        "go", "build", "-v", "-trimpath", "-ldflags", tools[0].ldflags,
        "-o", str(outdir) + "/", *[t.package for t in tools],
    ]  # fmt: skip
    started = time.monotonic()
    proc = subprocess.Popen(
        cmd, cwd=module_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    last_report, tail = started, []
    for compiled, line in enumerate(proc.stdout, 1):
        tail = [*tail[-40:], line.rstrip()]
        if time.monotonic() - last_report > 30:
            last_report = time.monotonic()
            _log(f"  ... {compiled} packages, {last_report - started:.0f}s")
    if proc.wait() != 0:
        raise RuntimeError(f"go build failed in {module_dir}:\n" + "\n".join(tail))
    _log(f"  built {', '.join(t.name for t in tools)} in {time.monotonic() - started:.0f}s")


def ensure(names: Iterable[str] = DEFAULT_TOOLS) -> dict[str, Path]:
    """Return the path of each named binary, building those missing from the cache.

    One lock per build module: two runs on one machine build a binary once, and builds of
    different modules (say, `make toolchain` and Traefik beside it) can run at once."""
    names = list(names)
    bindir = cache_dir() / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    groups: dict[tuple[str, str], list[Tool]] = {}
    for name in names:
        tool = TOOLS[name]
        groups.setdefault((tool.module, tool.ldflags), []).append(tool)
    for (module, _), group in groups.items():
        with open(bindir / f".lock-{module}", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            missing = [t for t in group if not binary_path(t.name).exists()]
            if not missing:
                continue
            if shutil.which("go") is None:
                raise RuntimeError("the `go` command is needed to build " + ", ".join(names))
            _log("building " + ", ".join(f"{t.name} {t.version}" for t in missing))
            with tempfile.TemporaryDirectory(dir=bindir) as tmp:
                _go_build(missing, Path(tmp))
                for tool in missing:
                    built = Path(tmp) / Path(tool.package).name
                    os.replace(built, binary_path(tool.name))
    return {n: binary_path(n) for n in names}


def main(argv: list[str] | None = None) -> int:
    names = argv if argv else list(DEFAULT_TOOLS)
    started = time.monotonic()
    paths = ensure(names)
    for name, path in paths.items():
        print(f"{name}\t{path}")
    _log(f"toolchain ready in {time.monotonic() - started:.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

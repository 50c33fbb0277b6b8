"""The project's container images, built here without a Docker engine, cached by their inputs.

    pause     the pod sandbox: our own tiny Go program (gobuild/pause) in a scratch image
    coredns   cluster DNS: the CoreDNS binary from the toolchain in a scratch image
    base      Debian bookworm from debootstrap with python3: this machine's stand-in for
              python:3.11-slim-bookworm, which no registry here can serve
    recorder  recorder/Dockerfile, built by buildah on `base`
    operator  operator/Dockerfile, likewise
    traefik   the Ingress controller: Traefik from the toolchain in a scratch image; built only
              when asked for (OPTIONAL), by the ingress tests and the demo
    livekit   livekit-server from the toolchain in a scratch image (the e2e suite deploys it;
              localcluster/livekit.Dockerfile builds the same with Docker)
    testkit   localcluster/Dockerfile on `recorder`: the synthetic publisher and the pump.fun
              stand-in as pods, for the e2e suite (tests/e2e)

Python packages come from a wheelhouse filled once on the host (with the host's own pip
settings) and mounted into the build, so the Dockerfiles' RUN steps need no network. Each
image is exported as a docker-archive tar that `ctr images import` takes. An image whose inputs
are unchanged is not rebuilt: its key is a hash of every input.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from . import toolchain, vendor

ROOT = Path(__file__).resolve().parents[2]
PAUSE_DIR = ROOT / "localcluster" / "gobuild" / "pause"
RECIPE_VERSION = "1"  # bump to rebuild every image after a change to this file
SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
BUILD_REQUIREMENTS = ("setuptools==84.2.1", "wheel==0.48.0")  # pyproject's build-system
REPOSITORY = "localhost/haven"
ARCHIVE_IDLE_SECONDS = 3 * 3600  # an older archive is kept this long after its last use
ALL = ("pause", "coredns", "base", "recorder", "operator", "livekit", "testkit")
OPTIONAL = ("traefik",)  # not in ALL: built when first asked for by name
# What each Dockerfile copies from the repository: the inputs of its image's key.
COMMON_INPUTS = ("pyproject.toml", "constraints.txt", "README.md")
DOCKERFILE_INPUTS = {
    "recorder": ("recorder", *COMMON_INPUTS),
    # the gateway shares its image; both presign with the stream pod's S3 module
    "operator": (
        "operator",
        "gateway",
        "recorder/haven_recorder/__init__.py",
        "recorder/haven_recorder/s3.py",
        *COMMON_INPUTS,
    ),
}
TESTKIT_INPUTS = ("localcluster/Dockerfile", "localcluster/haven_localcluster")


@dataclass(frozen=True)
class Image:
    name: str
    ref: str  # what containerd and pod specs call it
    archive: Path  # docker-archive tar for `ctr images import`
    size_bytes: int
    build_seconds: float = 0.0
    cached: bool = True


def images_dir() -> Path:
    return toolchain.cache_dir() / "images"


def _log(msg: str) -> None:
    print(f"[images] {msg}", file=sys.stderr, flush=True)


def _hash(*parts: str | bytes | Path) -> str:
    """A short hash of strings, bytes, and files or directory trees (by path and content)."""
    h = hashlib.sha256(RECIPE_VERSION.encode())
    for part in parts:
        if isinstance(part, Path):
            files = sorted(part.rglob("*")) if part.is_dir() else [part]
            for f in files:
                if f.is_file() and "__pycache__" not in f.parts and f.suffix != ".pyc":
                    h.update(str(f.relative_to(ROOT)).encode() + b"\0" + f.read_bytes())
        else:
            h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()[:12]


def _run(argv: list[str], log: Path, **kwargs) -> str:
    with open(log, "a") as out:
        out.write(f"$ {' '.join(argv)}\n")
        out.flush()
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=out, text=True, **kwargs)
        out.write(proc.stdout)
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        raise RuntimeError(f"{' '.join(argv[:3])} ... failed (log {log}):\n{tail}")
    return proc.stdout


class Builder:
    """buildah with storage of its own under the cache directory."""

    def __init__(self, log: Path) -> None:
        self.root = toolchain.cache_dir() / "buildah"
        self.log = log

    def __call__(self, *args: str, **kwargs) -> str:
        storage = [
            f"--root={self.root / 'storage'}",
            f"--runroot={self.root / 'run'}",
            "--storage-driver=overlay",
        ]
        return _run(["buildah", *storage, *args], self.log, **kwargs).strip()

    def has(self, ref: str) -> bool:
        try:
            self("inspect", "--type=image", "--format={{.FromImageID}}", ref)
        except RuntimeError:
            return False
        return True

    def scratch(self, ref: str, files: dict[str, Path], entrypoint: str, user: str) -> None:
        """A scratch image of a few static files."""
        container = self("from", "scratch")
        try:
            for dest, src in files.items():
                self("copy", "--chmod=0755", container, str(src), dest)
            self("config", f'--entrypoint=["{entrypoint}"]', f"--user={user}", container)
            self("commit", "--quiet", container, ref)
        finally:
            self("rm", container)

    def export(self, ref: str, archive: Path) -> None:
        tmp = archive.with_suffix(".partial")
        tmp.unlink(missing_ok=True)
        self("push", "--quiet", ref, f"docker-archive:{tmp}:{ref}")
        os.replace(tmp, archive)


def _debian_mirror() -> str:
    """The Debian mirror this machine's apt uses (deb822 or one-line sources)."""
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in sources:
        if not path.is_file() or path.suffix not in ("", ".list", ".sources"):
            continue
        for line in path.read_text().splitlines():
            words = line.split()
            if len(words) >= 2 and words[0] == "URIs:" and "security" not in words[1]:
                return words[1]
            if len(words) >= 3 and words[0] == "deb" and SUITE in words[2:4]:
                return next(w for w in words[1:] if "://" in w)
    raise RuntimeError("no Debian mirror found in /etc/apt/sources.list*")


def _build_base(build: Builder, ref: str, workdir: Path) -> None:
    rootfs = workdir / "rootfs"
    keyring = "/usr/share/keyrings/debian-archive-keyring.gpg"
    _run(
        [
            "debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
            f"--keyring={keyring}", SUITE, str(rootfs), _debian_mirror(),
        ],
        build.log,
    )  # fmt: skip
    for junk in ("var/lib/apt/lists", "var/cache/apt", "var/log", "usr/share/doc",
                 "usr/share/man", "usr/share/info", "usr/share/locale"):  # fmt: skip
        shutil.rmtree(rootfs / junk, ignore_errors=True)
        (rootfs / junk).mkdir(parents=True, exist_ok=True)
    tarball = workdir / "rootfs.tar"
    _run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(tarball), "."], build.log)
    container = build("from", "scratch")
    try:
        build("add", container, str(tarball), "/")
        build("config", "--cmd=/bin/bash", "--env=LANG=C.UTF-8", container)
        build("commit", "--quiet", container, ref)
    finally:
        build("rm", container)


def _wheels_key() -> str:
    return _hash(ROOT / "pyproject.toml", ROOT / "constraints.txt", *BUILD_REQUIREMENTS)


def _wheelhouse(log: Path) -> Path:
    """Wheels for both images' Python packages and the build backend, filled by the host's pip
    (which knows this machine's index settings), for offline installs in the builds."""
    wheels = images_dir() / f"wheelhouse-{_wheels_key()}"
    if not wheels.is_dir():
        tmp = Path(tempfile.mkdtemp(dir=images_dir(), prefix="wheelhouse-"))
        _run(
            [
                sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(tmp),
                "-c", str(ROOT / "constraints.txt"), *BUILD_REQUIREMENTS,
                f"{ROOT}[recorder,operator,gateway]",
            ],
            log,
        )  # fmt: skip
        for stale in tmp.glob("haven_streams-*"):
            stale.unlink()  # the project itself is built from source in the image
        os.replace(tmp, wheels)
    return wheels


def _build_dockerfile(build: Builder, name: str, ref: str, base: str, wheels: Path) -> None:
    build(
        "build", "--quiet", "--layers=false", "--isolation=chroot",
        f"--file={ROOT / name / 'Dockerfile'}",
        f"--build-arg=BASE={base}",
        "--build-arg=PIP_ARGS=--no-index --find-links=/wheels",
        f"--volume={wheels}:/wheels:ro",
        f"--tag={ref}",
        str(ROOT),
    )  # fmt: skip


def _build_testkit(build: Builder, ref: str, recorder: Image) -> None:
    """localcluster/Dockerfile on the recorder image (the archive is its cache: load it back)."""
    if not build.has(recorder.ref):
        build("pull", "--quiet", f"docker-archive:{recorder.archive}")
    build(
        "build", "--quiet", "--layers=false", "--isolation=chroot",
        f"--file={ROOT / 'localcluster' / 'Dockerfile'}",
        f"--build-arg=BASE={recorder.ref}", f"--tag={ref}", str(ROOT),
    )  # fmt: skip


def _key(name: str, base_key: str, wheels_key: str) -> str:
    if name == "pause":
        return _hash(PAUSE_DIR)
    if name == "coredns":
        return _hash(toolchain.COREDNS_VERSION)
    if name == "base":
        return _hash(SUITE, *BASE_PACKAGES)
    if name == "traefik":
        return _hash(toolchain.TRAEFIK_VERSION)
    if name == "livekit":
        return _hash(toolchain.LIVEKIT_VERSION)
    if name == "testkit":  # base_key is the recorder's here
        return _hash(*(ROOT / p for p in TESTKIT_INPUTS), base_key)
    return _hash(*(ROOT / p for p in DOCKERFILE_INPUTS[name]), base_key, wheels_key)


def _build(name: str, ref: str, build: Builder, built: dict[str, Image], workdir: Path) -> None:
    if name == "pause":
        binary = workdir / "pause"
        env = {**os.environ, "CGO_ENABLED": "0", "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod"}
        _run(
            ["go", "build", "-trimpath", "-ldflags=-s -w", "-o", str(binary), "."],
            build.log, cwd=PAUSE_DIR, env=env,
        )  # fmt: skip
        build.scratch(ref, {"/pause": binary}, "/pause", "65535:65535")
    elif name == "coredns":
        binary = toolchain.ensure(["coredns"])["coredns"]
        build.scratch(ref, {"/coredns": binary}, "/coredns", "65532:65532")
    elif name == "livekit":
        binary = toolchain.ensure(["livekit-server"])["livekit-server"]
        build.scratch(ref, {"/livekit-server": binary}, "/livekit-server", "65532:65532")
    elif name == "traefik":
        binary = toolchain.ensure(["traefik"])["traefik"]
        build.scratch(ref, {"/traefik": binary}, "/traefik", "65532:65532")
    elif name == "base":
        _build_base(build, ref, workdir)
    elif name == "testkit":
        _build_testkit(build, ref, built["recorder"])
    else:
        base = built["base"]
        if not build.has(base.ref):  # the buildah store was wiped; the archive was kept
            build("pull", "--quiet", f"docker-archive:{base.archive}")
        _build_dockerfile(build, name, ref, base.ref, _wheelhouse(build.log))


def ensure_images(names: Iterable[str] = ALL) -> dict[str, Image]:
    """Each named image (and what it is built on), built unless cached."""
    names = set(names)
    if "testkit" in names:
        names.add("recorder")  # its base
    needs_base = bool({"recorder", "operator"} & names)
    if "recorder" in names:
        vendor.ensure()  # the viewer page's hls.js goes into the image with the package
    wanted = [n for n in (*ALL, *OPTIONAL) if n in names or (n == "base" and needs_base)]
    images_dir().mkdir(parents=True, exist_ok=True)
    log = images_dir() / "build.log"
    built: dict[str, Image] = {}
    with open(images_dir() / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two runs on one machine build once
        wheels_key = _wheels_key()
        for name in wanted:
            base_key = built["base"].ref.rsplit("-", 1)[-1] if "base" in built else ""
            if name == "testkit":
                base_key = built["recorder"].ref.rsplit(":", 1)[-1]
            key = _key(name, base_key, wheels_key)
            tag = f"{SUITE}-{key}" if name == "base" else key
            ref = f"{REPOSITORY}/{name}:{tag}"
            archive = images_dir() / f"{name}-{tag}.tar"
            started, cached = time.monotonic(), archive.exists()
            if cached:
                os.utime(archive)  # in use: _prune of another build leaves it be
            if not cached:
                _log(f"building {ref}")
                build = Builder(log)
                with tempfile.TemporaryDirectory(dir=images_dir()) as tmp:
                    _build(name, ref, build, built, Path(tmp))
                build.export(ref, archive)
                _prune(build, name, keep=archive)
                _log(f"  built {ref} in {time.monotonic() - started:.0f}s")
            built[name] = Image(
                name, ref, archive, archive.stat().st_size, time.monotonic() - started, cached
            )
    return {n: built[n] for n in wanted}


def _prune(build: Builder, name: str, keep: Path) -> None:
    """Drop the older builds of `name` from buildah's store, and their archives once no run has
    asked for them for a while: another test run on this machine, from another tree, may still
    have to import the one it was given (ensure_images touches an archive it hands out)."""
    for old in images_dir().glob(f"{name}-*.tar"):
        if old != keep and time.time() - old.stat().st_mtime > ARCHIVE_IDLE_SECONDS:
            old.unlink(missing_ok=True)
    current = f"{REPOSITORY}/{name}:{keep.stem[len(name) + 1 :]}"
    listed = build("images", "--format={{.Name}}:{{.Tag}}").split()
    for ref in listed:
        if ref.startswith(f"{REPOSITORY}/{name}:") and ref != current:
            build("rmi", "--force", ref)
    if name != "base":
        build("rmi", "--force", current)  # the archive is the cache; base stays for builds
    build("rmi", "--prune")


def main(argv: list[str] | None = None) -> int:
    started = time.monotonic()
    images = ensure_images(argv or ALL)
    print(f"{'image':10} {'size MiB':>9} {'seconds':>8}  {'':6}  ref")
    for image in images.values():
        state = "cached" if image.cached else "built"
        print(
            f"{image.name:10} {image.size_bytes / 2**20:9.1f} {image.build_seconds:8.1f}  "
            f"{state:6}  {image.ref}"
        )
    print(f"images ready in {time.monotonic() - started:.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

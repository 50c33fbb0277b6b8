"""Project layout rules that users and the standard library depend on."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

from haven_localcluster import toolchain

ROOT = Path(__file__).resolve().parents[2]


def test_operator_is_the_standard_library_module():
    spec = importlib.util.find_spec("operator")
    assert spec is not None and spec.origin is not None
    assert spec.origin.startswith(sysconfig.get_paths()["stdlib"]), spec.origin
    assert not (ROOT / "operator" / "__init__.py").exists()
    for package in ("haven_operator", "haven_recorder", "haven_localcluster"):
        assert importlib.util.find_spec(package) is not None, package


def test_cached_toolchain_builds_nothing(tmp_path):
    """A warm cache needs no `go` at all: the binaries are found by name and version."""
    toolchain.ensure()
    env = {**os.environ, "PATH": str(tmp_path)}  # no go, no compiler
    out = subprocess.run(
        [sys.executable, "-m", "haven_localcluster", "build"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "building" not in out.stderr
    for name in toolchain.DEFAULT_TOOLS:
        assert f"{name}-{toolchain.TOOLS[name].version}" in out.stdout

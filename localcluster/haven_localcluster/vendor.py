"""Browser libraries for the stream pod's viewer page, vendored at build time: `npm ci` in
web/ (pinned by web/package-lock.json) and the built file copied into the recorder package,
where the page loads it from the pod itself. Nothing is fetched at run time, and the copy is
not committed (it is a build output): `make setup` and the recorder image both run this.

    python -m haven_localcluster.vendor
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "web"
# (file in web/node_modules, where the recorder package serves it from)
FILES = (("hls.js/dist/hls.min.js", "recorder/haven_recorder/static/hls.min.js"),)


def _stamp() -> bytes:
    return (WEB / "package-lock.json").read_bytes()


def ensure() -> list[Path]:
    """The vendored files, built if missing or out of date with the lock file."""
    stamp = WEB / "node_modules" / ".haven-lock"
    if not stamp.exists() or stamp.read_bytes() != _stamp():
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError("npm is missing: run hack/debian-packages.sh (Debian's npm)")
        subprocess.run(
            [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=WEB,
            check=True,
        )
        stamp.write_bytes(_stamp())
    out = []
    for source, target in FILES:
        src, dst = WEB / "node_modules" / source, ROOT / target
        if not dst.exists() or dst.read_bytes() != src.read_bytes():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
        out.append(dst)
    return out


def main() -> int:
    for path in ensure():
        print(path.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())

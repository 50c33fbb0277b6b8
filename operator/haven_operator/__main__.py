"""`python -m haven_operator`: run the operator (kopf) with JSON logs and a liveness probe.

python -m haven_operator [--namespace NS ...] [--liveness http://0.0.0.0:8081/healthz]
"""

from __future__ import annotations

import argparse
import asyncio
import os

import kopf

from . import main as _handlers  # noqa: F401  (registers the handlers)


def run(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="haven-operator")
    p.add_argument("--namespace", action="append", default=[], help="watch only these (repeatable)")
    p.add_argument(
        "--liveness", default=os.environ.get("HAVEN_LIVENESS", "http://0.0.0.0:8081/healthz")
    )
    p.add_argument(
        "--log-format",
        choices=["json", "plain"],
        default=os.environ.get("HAVEN_LOG_FORMAT", "json"),
    )
    p.add_argument("--verbose", action="store_true")
    a = p.parse_args(argv)
    kopf.configure(
        verbose=a.verbose,
        log_format=kopf.LogFormat.JSON if a.log_format == "json" else kopf.LogFormat.PLAIN,
    )
    asyncio.run(
        kopf.operator(
            standalone=True,  # one replica (Recreate): no peering needed
            clusterwide=not a.namespace,
            namespaces=a.namespace,
            liveness_endpoint=a.liveness or None,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(run())

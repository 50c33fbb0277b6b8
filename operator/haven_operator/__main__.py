"""`python -m haven_operator`: run the operator (kopf) with JSON logs and a liveness probe.

python -m haven_operator [--namespace NS ...] [--liveness http://0.0.0.0:8081/healthz]
                         [--leader-election --lease-namespace NS --lease-name NAME]

With --leader-election (the chart's default) only the replica holding the Lease runs kopf;
the others answer their probes and wait (leader.py).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import uuid
from urllib.parse import urlsplit

import kopf
from aiohttp import web

from . import main as handlers  # registers the handlers
from .leader import LEASE_DURATION, RENEW_DEADLINE, RETRY, LeaseElector

log = logging.getLogger("haven_operator")


def _flag(name: str, default: str) -> str:
    return os.environ.get(f"HAVEN_{name}", default)


async def _standby_probe(url: str) -> web.AppRunner | None:
    """/healthz while waiting for the Lease (kopf serves it once this replica leads)."""
    if not url:
        return None
    parts = urlsplit(url)

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"role": "standby"})

    app = web.Application()
    app.router.add_get(parts.path or "/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, parts.hostname, parts.port).start()
    return runner


async def _run(a: argparse.Namespace) -> int:
    def operator() -> kopf.operator:  # type: ignore[valid-type]
        return kopf.operator(
            standalone=True,  # no kopf peering: the Lease decides who runs
            clusterwide=not a.namespace,
            namespaces=a.namespace,
            liveness_endpoint=a.liveness or None,
        )

    if not a.leader_election:
        await operator()
        return 0
    if not a.lease_namespace:
        raise SystemExit("--leader-election needs --lease-namespace (or HAVEN_LEASE_NAMESPACE)")
    handlers.load_config()
    handlers.serve_metrics()
    identity = f"{a.identity}_{uuid.uuid4().hex[:8]}"
    elector = LeaseElector(
        a.lease_namespace,
        a.lease_name,
        identity,
        duration=a.lease_duration,
        renew_deadline=a.renew_deadline,
        retry=a.retry_period,
    )
    probe = await _standby_probe(a.liveness)
    handlers.LEADER.set(0)
    await elector.acquire()
    handlers.LEADER.set(1)
    if probe is not None:
        await probe.cleanup()  # kopf's liveness endpoint takes the port over
    running = asyncio.create_task(operator())
    holding = asyncio.create_task(elector.hold())
    done, _ = await asyncio.wait({running, holding}, return_when=asyncio.FIRST_COMPLETED)
    if holding in done:
        # Another replica may take the Lease once it expires: stop acting now, not after a
        # graceful shutdown that could still write. The pod restarts as a standby.
        logging.shutdown()
        os._exit(70)
    holding.cancel()
    await asyncio.to_thread(elector.release)
    running.result()  # kopf's own error, if it failed
    return 0


def run(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="haven-operator")
    p.add_argument("--namespace", action="append", default=[], help="watch only these (repeatable)")
    p.add_argument("--liveness", default=_flag("LIVENESS", "http://0.0.0.0:8081/healthz"))
    p.add_argument(
        "--log-format",
        choices=["json", "plain"],
        default=_flag("LOG_FORMAT", "json"),
    )
    p.add_argument("--verbose", action="store_true")
    p.add_argument(
        "--leader-election",
        action=argparse.BooleanOptionalAction,
        default=_flag("LEADER_ELECTION", "false").lower() == "true",
        help="run kopf only while holding the Lease (for more than one replica)",
    )
    p.add_argument("--lease-name", default=_flag("LEASE_NAME", "haven-operator"))
    p.add_argument("--lease-namespace", default=_flag("LEASE_NAMESPACE", ""))
    p.add_argument("--identity", default=_flag("POD_NAME", socket.gethostname()))
    p.add_argument(
        "--lease-duration", type=float, default=float(_flag("LEASE_DURATION", str(LEASE_DURATION)))
    )
    p.add_argument(
        "--renew-deadline", type=float, default=float(_flag("RENEW_DEADLINE", str(RENEW_DEADLINE)))
    )
    p.add_argument("--retry-period", type=float, default=float(_flag("RETRY_PERIOD", str(RETRY))))
    a = p.parse_args(argv)
    kopf.configure(
        verbose=a.verbose,
        log_format=kopf.LogFormat.JSON if a.log_format == "json" else kopf.LogFormat.PLAIN,
    )
    return asyncio.run(_run(a))


if __name__ == "__main__":
    raise SystemExit(run())

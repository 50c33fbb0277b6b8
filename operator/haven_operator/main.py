"""Operator start-up: settings, API login, watch timeouts, health and metrics."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from typing import Any

import kopf
import kubernetes
import prometheus_client

from . import archive, indices, livestream, recording  # noqa: F401  (registers the handlers)
from .kube import Kube, load_config
from .pods import Tokens
from .rollout import Gate, max_concurrent_from_env
from .settings import Settings

__all__ = ["LEADER", "load_config", "serve_metrics"]

LEADER = prometheus_client.Gauge(
    "haven_operator_leader", "1 while this replica holds the Lease and runs the handlers"
)
_serving: list[int] = []


def serve_metrics() -> None:
    """Start the metrics server once (a standby serves it too: haven_operator_leader 0)."""
    port = Settings.from_env().metrics_port
    if port and not _serving:
        prometheus_client.start_http_server(port)
        _serving.append(port)
        logging.getLogger("haven_operator").info("metrics on :%d/metrics", port)


@kopf.on.startup()
async def configure(
    settings: kopf.OperatorSettings, memo: kopf.Memo, logger: kopf.Logger, **_: Any
) -> None:
    load_config()
    memo.settings = Settings.from_env()
    workers = memo.settings.api_workers
    # asyncio.to_thread's pool: every blocking API call runs there.
    asyncio.get_running_loop().set_default_executor(
        concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="api")
    )
    config = kubernetes.client.Configuration.get_default_copy()
    config.connection_pool_maxsize = workers  # one kept-alive connection per thread
    memo.kube = Kube(kubernetes.client.ApiClient(config))
    memo.tokens = Tokens(memo.kube)  # control tokens, in memory
    memo.streams = {}  # each LiveStream's control loop, by (namespace, name)
    memo.fingerprints = {}  # each child's last seen spec, labels and owners, by uid
    memo.rollout = Gate(max_concurrent_from_env())  # stream pods rolling to a new template
    # A watch that the server or the network silently stalls is restarted within minutes.
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    settings.watching.connect_timeout = 30
    settings.watching.reconnect_backoff = 1.0
    # kopf's own calls (patches, events) have deadlines too; 429 and 5xx retry with backoff.
    settings.networking.request_timeout = 30
    settings.networking.connect_timeout = 5
    settings.networking.error_backoffs = (1, 2, 4, 8, 16, 30)
    # Serve the CRDs found at startup; no list/watch of CRDs or namespaces, which its RBAC does
    # not grant (kopf's behaviour without that permission, minus the refused calls).
    settings.scanning.disabled = True
    settings.posting.level = logging.INFO
    settings.posting.reporting_component = "haven-operator"
    # Handler progress lives in status, not in annotations users see in diffs.
    settings.persistence.progress_storage = kopf.StatusProgressStorage(field="status.kopf")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="streams.haven.dev", key="last-handled-configuration"
    )
    settings.persistence.finalizer = "streams.haven.dev/finalizer"
    serve_metrics()
    LEADER.set(1)  # kopf runs only in the replica that acts

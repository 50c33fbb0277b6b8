"""`python -m haven_gateway`: serve the Haven Player API (in cluster, or with a kubeconfig)."""

from __future__ import annotations

import logging

import kubernetes
import uvicorn

from .app import create_app
from .sessions import Store
from .settings import Settings


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()
    settings = Settings.from_env()
    app = create_app(settings, Store(settings.namespace))
    uvicorn.run(app, host=settings.host, port=settings.port, ws_per_message_deflate=False)


if __name__ == "__main__":
    main()

"""The real S3-compatible server (versitygw, POSIX backend) for the tests, one per session, on
loopback and on the node's host address (pods reach it there). Register it in
tests/conftest.py's `pytest_plugins`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from haven_localcluster.network import NodeNetwork
from haven_localcluster.s3server import S3Server


@pytest.fixture(scope="session")
def s3_server(
    tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config, node_network: NodeNetwork
) -> Iterator[S3Server]:
    server = S3Server(tmp_path_factory.mktemp("s3"), cluster_address=node_network.host_ip)
    server.start()
    terminal = pytestconfig.pluginmanager.get_plugin("terminalreporter")
    if terminal is not None:
        terminal.write_line(f"[s3] versitygw at {server.endpoint}; data in {server.data_dir}")
    yield server
    server.stop()

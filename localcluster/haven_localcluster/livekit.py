"""A real livekit-server in development mode, listening on loopback, and also on the host's end
of the node's veth when pods must reach it (`cluster_address`)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import toolchain
from .process import Proc, free_port, free_udp_port_range, spawn, stop, wait_http

API_KEY = "devkey"
API_SECRET = "haven-local-development-secret-0123456789"  # dev mode: 32+ chars keep it quiet


@dataclass
class LiveKitServer:
    state_dir: Path
    detach: bool = False
    cluster_address: str | None = None  # an address pods reach (NodeNetwork.host_ip)
    port: int = 0
    proc: Proc | None = None
    api_key: str = API_KEY
    api_secret: str = API_SECRET
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def cluster_url(self) -> str:
        """The URL pods on the node use."""
        return f"ws://{self.cluster_address or '127.0.0.1'}:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> dict:
        udp_start = free_udp_port_range(20)
        addresses = ["127.0.0.1", *([self.cluster_address] if self.cluster_address else [])]
        return {
            "port": self.port,
            "bind_addresses": addresses,
            "development": True,
            "keys": {self.api_key: self.api_secret},
            "rtc": {
                "tcp_port": 0,  # ICE/TCP would listen on every interface; loopback UDP is enough
                "port_range_start": udp_start,
                "port_range_end": udp_start + 19,
                "use_external_ip": False,
                "node_ip": addresses[-1],
                "enable_loopback_candidate": True,
                "ips": {"includes": [f"{a}/32" for a in addresses]},
            },
            "turn": {"enabled": False},
            "logging": {"level": "info", "json": True},
        }

    def start(self) -> float:
        binary = toolchain.ensure(["livekit-server"])["livekit-server"]
        t0 = time.monotonic()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        config_path = self.state_dir / "livekit.yaml"
        config_path.write_text(yaml.safe_dump(self.config()))
        self.proc = spawn(
            "livekit-server",
            [str(binary), f"--config={config_path}"],
            self.state_dir / "logs",
            detach=self.detach,
        )
        try:
            wait_http(self.http_url, self.proc, timeout=30)
        except BaseException:
            self.stop()
            raise
        self.timings["livekit-server"] = time.monotonic() - t0
        return self.timings["livekit-server"]

    def stop(self) -> None:
        if self.proc is not None:
            stop([self.proc])
            self.proc = None

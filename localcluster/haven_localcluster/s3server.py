"""A real S3-compatible server: versitygw with its POSIX backend (each bucket a directory under
`data_dir`, each object a file), on loopback and also on the host's end of the node's veth when
pods must reach it (`cluster_address`). Built from the Go module proxy like the other binaries.

A restart (`stop` then `start`) keeps the port, the data and any multipart upload in progress,
as a real server that went away and came back would."""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from haven_recorder.s3 import Credentials, S3Client

from . import toolchain
from .process import Proc, free_port, spawn, stop

REGION = "us-east-1"


@dataclass
class S3Server:
    state_dir: Path
    detach: bool = False
    cluster_address: str | None = None  # an address pods reach (NodeNetwork.host_ip)
    port: int = 0
    access_key_id: str = "haven-local"
    secret_access_key: str = field(default_factory=lambda: secrets.token_hex(20))
    region: str = REGION
    proc: Proc | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def data_dir(self) -> Path:
        """Where the POSIX backend keeps buckets (directories) and objects (files)."""
        return self.state_dir / "data"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def cluster_endpoint(self) -> str:
        """The endpoint pods on the node use."""
        return f"http://{self.cluster_address or '127.0.0.1'}:{self.port}"

    @property
    def credentials(self) -> Credentials:
        return Credentials(self.access_key_id, self.secret_access_key)

    def object_path(self, bucket: str, key: str) -> Path:
        """The file that holds an object (the POSIX backend's layout)."""
        return self.data_dir / bucket / key

    def start(self) -> float:
        binary = toolchain.ensure(["versitygw"])["versitygw"]
        t0 = time.monotonic()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        listen = [f"127.0.0.1:{self.port}"]
        if self.cluster_address:
            listen.append(f"{self.cluster_address}:{self.port}")
        argv = [str(binary), "--quiet", "--region", self.region]
        for address in listen:
            argv += ["--port", address]
        argv += ["posix", str(self.data_dir)]
        # Keys by environment, not argv: nothing in `ps` shows the secret.
        env = {
            "ROOT_ACCESS_KEY_ID": self.access_key_id,
            "ROOT_SECRET_ACCESS_KEY": self.secret_access_key,
        }
        self.proc = spawn("versitygw", argv, self.state_dir / "logs", detach=self.detach, env=env)
        try:
            self._wait_up(timeout=30)
        except BaseException:
            self.stop()
            raise
        self.timings["versitygw"] = time.monotonic() - t0
        return self.timings["versitygw"]

    def _wait_up(self, timeout: float) -> None:
        """Until the server answers: an unsigned request is refused (403), which will do."""
        assert self.proc is not None
        deadline, last = time.monotonic() + timeout, ""
        while time.monotonic() < deadline:
            if not self.proc.alive():
                raise RuntimeError(f"versitygw exited while starting:\n{self.proc.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.endpoint}/", timeout=2):
                    return
            except urllib.error.HTTPError:
                return
            except (urllib.error.URLError, OSError) as exc:
                last = str(exc)
            time.sleep(0.1)
        raise TimeoutError(f"versitygw not up after {timeout}s ({last}):\n{self.proc.log_tail()}")

    def stop(self) -> None:
        if self.proc is not None:
            stop([self.proc])
            self.proc = None

    def kill(self) -> None:
        """SIGKILL, as a crash or a lost node would."""
        if self.proc is not None:
            stop([self.proc], timeout=0)
            self.proc = None

    def client(self, bucket: str, credentials: Credentials | None = None) -> S3Client:
        return S3Client(
            self.endpoint,
            bucket,
            lambda: credentials or self.credentials,
            region=self.region,
            force_path_style=True,
        )

    def bucket(self, name: str) -> str:
        """Create bucket `name` (if it is not there yet); returns the name."""

        async def create() -> None:
            client = self.client(name)
            try:
                await client.create_bucket()
            finally:
                await client.aclose()

        # In a thread of its own: callers may be inside a running event loop (async tests).
        errors: list[BaseException] = []

        def run() -> None:
            try:
                asyncio.run(create())
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=run, name="s3-bucket")
        thread.start()
        thread.join()
        if errors:
            raise errors[0]
        return name

"""The stream pod (`python -m haven_recorder`) as a local process, with a small client for its
control API: used by the tests, the benchmarks and the demo.

The pod listens on two ports: `port` for viewers (`viewer_url`, `ws_url`: the page and
/stream) and `control_port` for the control API and /metrics (`url`, `http`)."""

from __future__ import annotations

import os
import secrets
import signal
import sys
import time
from pathlib import Path

import httpx

from .livekit import LiveKitServer
from .process import Proc, free_port, spawn, stop


def livekit_args(server: LiveKitServer, room: str) -> list[str]:
    """Stream pod flags for a room on the local livekit-server."""
    return [
        "--livekit-url", server.url, "--room", room,
        "--api-key", server.api_key, "--api-secret", server.api_secret,
    ]  # fmt: skip


class StreamPod:
    def __init__(
        self, args: list[str], recordings: Path, log_dir: Path, env: dict[str, str] | None = None
    ) -> None:
        self.args = args
        self.env = env or {}  # HAVEN_* variables, as the operator passes secrets
        self.recordings = recordings
        self.log_dir = log_dir
        self.token = secrets.token_hex(16)
        self.port = 0  # viewers
        self.control_port = 0
        self.proc: Proc | None = None

    @property
    def url(self) -> str:
        """The control API (and /metrics)."""
        return f"http://127.0.0.1:{self.control_port}"

    @property
    def viewer_url(self) -> str:
        """The viewer page and /stream."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/stream"

    @property
    def log_path(self) -> Path:
        """Everything the process wrote (stdout and stderr)."""
        assert self.proc is not None
        return self.proc.log

    def start(self) -> StreamPod:
        self.port, self.control_port = free_port(), free_port()
        while self.control_port == self.port:
            self.control_port = free_port()
        argv = [
            sys.executable, "-m", "haven_recorder", *self.args, "--port", str(self.port),
            "--control-port", str(self.control_port),
            "--recordings-dir", str(self.recordings), "--control-token", self.token,
            "--log-format", "text",
        ]  # fmt: skip
        self.proc = spawn("stream-pod", argv, self.log_dir, env=self.env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.alive(), self.proc.log_tail()
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"stream pod not ready:\n{self.proc.log_tail()}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.proc is not None and self.proc.popen is not None
        os.kill(self.proc.pid, sig)
        self.proc.popen.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None:
            stop([self.proc], timeout=20)

    def http(self, method: str, path: str, **kwargs) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token}", **kwargs.pop("headers", {})}
        return httpx.request(method, f"{self.url}{path}", headers=headers, timeout=30, **kwargs)

    def status(self) -> dict:
        return self.http("GET", "/status").raise_for_status().json()

    def wait_state(self, state: str, timeout: float = 30, reason: str | None = None) -> dict:
        deadline = time.monotonic() + timeout
        status: dict = {}
        while time.monotonic() < deadline:
            status = self.status()
            if status["state"] == state and (reason is None or status["reason"] == reason):
                return status
            time.sleep(0.2)
        raise AssertionError(f"pod not {state}/{reason} after {timeout}s: {status}")

    def start_recording(self, **body) -> dict:
        resp = self.http("POST", "/recordings", json=body)
        assert resp.status_code in (200, 201), resp.text
        return resp.json()

    def recording(self, name: str) -> dict:
        return self.http("GET", f"/recordings/{name}").raise_for_status().json()

    def wait_recording(self, name: str, state: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        rec: dict = {}
        while time.monotonic() < deadline:
            rec = self.recording(name)
            if rec["state"] == state:
                return rec
            time.sleep(0.2)
        raise AssertionError(f"recording {name} not {state} after {timeout}s: {rec}")

    def stop_recording(self, name: str) -> dict:
        return self.http("POST", f"/recordings/{name}/stop").raise_for_status().json()

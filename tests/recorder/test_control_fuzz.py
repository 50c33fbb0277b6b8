"""schemathesis against a real stream pod's control API (its OpenAPI schema on the control
port): whatever it sends, no 5xx."""

from __future__ import annotations

import subprocess
import sys
import uuid

from .conftest import livekit_args


def test_schemathesis_finds_no_server_error_on_the_control_api(
    livekit_server, stream_pod, tmp_path
):
    # A room with no publisher: recordings start and wait for frames, so the fuzzer's
    # recordings cost no encoding on a shared machine; the request handling is the same.
    pod = stream_pod(*livekit_args(livekit_server, f"fuzz-{uuid.uuid4().hex[:8]}"))
    pod.wait_state("offline", reason="NoPublisher")
    result = subprocess.run(
        [
            sys.executable, "-m", "schemathesis.cli", "run", f"{pod.url}/openapi.json",
            "--checks", "not_a_server_error", "--max-examples", "25", "--workers", "1",
            "--header", f"Authorization: Bearer {pod.token}",
            "--request-timeout", "30", "--seed", "13",
        ],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,  # its cache goes there
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert pod.http("GET", "/recordings").status_code == 200  # and the pod still answers
    assert pod.status()["healthy"] is True

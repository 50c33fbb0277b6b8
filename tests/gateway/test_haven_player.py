"""Haven Player's own client code against the gateway on the local cluster.

tests/haven_player/ holds the upstream files verbatim (their origin is in its README) and a
Node harness that runs them as the Electron renderer would: fetch with the browser's CORS
rules and WebSocket from the `ws` package, from Origin http://localhost:3000 (development)
or `null` (the packaged app, file://). Each test here starts the mints, runs one scenario with
`node run.mjs`, and checks what the client saw and what the cluster holds."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from haven_localcluster import release

from .conftest import BASE58

CLIENT = Path(__file__).resolve().parents[1] / "haven_player"
NS = release.NAMESPACE
ORIGINS = ("http://localhost:3000", "null")


@pytest.fixture(scope="session")
def haven_player() -> Path:
    """The harness's pinned packages: `npm ci` from package-lock.json, once per lock file
    (node_modules keeps the lock's hash); needs only the npm registry."""
    node, npm = shutil.which("node"), shutil.which("npm")
    assert node and npm, "Node 20 and npm are needed for the Haven Player client tests"
    digest = hashlib.sha256(
        (CLIENT / "package.json").read_bytes() + (CLIENT / "package-lock.json").read_bytes()
    ).hexdigest()
    stamp = CLIENT / "node_modules" / ".haven-lock-sha256"
    if not stamp.exists() or stamp.read_text() != digest:
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"],
            cwd=CLIENT, check=True, timeout=600,
        )  # fmt: skip
        stamp.write_text(digest)
    return CLIENT


def run_client(client: Path, timeout: float, **args) -> dict:
    result = subprocess.run(
        ["node", "run.mjs", json.dumps(args)],
        cwd=client, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-6000:] + result.stdout[-2000:]
    line = next(x for x in result.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def get(kubectl, kind: str, name: str = "", selector: str = "") -> dict:
    args = ["get", "-n", NS, kind, *([name] if name else []), "-o", "json"]
    if selector:
        args += ["-l", selector]
    return json.loads(kubectl(*args).stdout)


def recordings_of(kubectl, mint: str) -> list[dict]:
    items = get(kubectl, "rec", selector=f"streams.haven.dev/mint-id={mint}")["items"]
    return sorted(items, key=lambda r: r["metadata"]["name"])


def not_live_mint() -> str:
    return "".join(random.choices(BASE58, k=44))


@pytest.mark.parametrize("origin", ORIGINS)
def test_cors_preflights_are_allowed(gateway, origin):
    """The renderer's preflights (JSON bodies and the Authorization header make every call
    one), and the answers it then reads, errors included."""
    calls = [
        ("POST", "/api/live-sessions/start"),
        ("POST", "/api/recording/start"),
        ("GET", f"/api/recording/status/{not_live_mint()}"),
        ("GET", "/api/live-sessions/active"),
    ]
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        for method, path in calls:
            pre = http.options(
                path,
                headers={
                    "Origin": origin,
                    "Access-Control-Request-Method": method,
                    "Access-Control-Request-Headers": "authorization,content-type",
                },
            )
            assert pre.status_code == 200, (method, path, pre.text)
            assert pre.headers["access-control-allow-origin"] in ("*", origin)
            allow_headers = pre.headers["access-control-allow-headers"].split(",")
            allowed = {h.strip().lower() for h in allow_headers}
            assert {"content-type", "authorization"} <= allowed
            assert method in pre.headers["access-control-allow-methods"]
        # An error's answer carries the header too, so the page can read its `detail`.
        denied = http.get("/api/live-sessions/active", headers={"Origin": origin})
        assert denied.status_code == 401
        assert denied.headers["access-control-allow-origin"] in ("*", origin)
        assert denied.json() == {
            "success": False,
            "error": "a valid bearer token is required",
            "detail": "a valid bearer token is required",
        }


# Each revision of useRecording.ts that calls the gateway's paths, and the output_format it
# sends: the Recording format and container that have to come out of it (no container: the
# format's own), and the files' extension.
REVISIONS = {
    "376d7b6": ("av1", "av1", None, "webm"),
    "9bb30aa": ("av1", "av1", None, "webm"),
    "df8ffac": ("h264", "h264", None, "mp4"),
    "282cffb": ("mp4", "h264", None, "mp4"),
    "af26207": ("mpegts", "h264", "mpegts", "ts"),
}


@pytest.mark.timeout(1500)
@pytest.mark.parametrize(
    ("origin", "revisions"),
    [
        ("http://localhost:3000", ["376d7b6", "9bb30aa", "df8ffac"]),
        ("null", ["282cffb", "af26207"]),
    ],
    ids=["localhost-3000", "file-null"],
)
def test_the_use_recording_hook(gateway, live_mint, kubectl, haven_player, origin, revisions):
    """One click starts a session and a recording; the hook polls every second and shows the
    duration; another click stops both. The last revision then records again at once, and
    shows the gateway's reason for a mint that is not live."""
    mints = {rev: live_mint() for rev in revisions}
    last = revisions[-1]
    not_live = not_live_mint()
    seen = run_client(
        haven_player, 1400, scenario="hook", gateway=gateway.url, token=gateway.token,
        origin=origin, seconds=3, revisions=mints, again=[last], notLive=[last, not_live],
    )  # fmt: skip
    assert seen["preflights"] > 0  # every call was cross-origin, and allowed
    for rev, mint in mints.items():
        first = seen["revisions"][rev]["first"]
        assert first["polls"] >= 1 and first["maxDuration"] >= 3
        output_format, recording_format, container, ext = REVISIONS[rev]
        recs = recordings_of(kubectl, mint)
        assert len(recs) == (2 if rev == last else 1), [r["metadata"]["name"] for r in recs]
        for rec in recs:
            assert rec["spec"]["format"] == recording_format
            assert rec["spec"].get("container") == container
            annotations = rec["metadata"]["annotations"]
            assert annotations["streams.haven.dev/output-format"] == output_format
            assert rec["spec"]["stopped"] is True
            assert rec["status"]["phase"] == "Completed", rec["status"]
        # the first recording ran while the hook showed 3 s or more: a real file (mpegts: a
        # real MPEG-TS file, .ts)
        assert recs[0]["status"]["bytesWritten"] > 0 and recs[0]["status"]["durationSeconds"] >= 2
        files = [f["path"] for f in recs[0]["status"]["files"]]
        assert files and all(path.endswith(f".{ext}") for path in files), files
    # The hook of that revision shows the gateway's `detail`, a sentence, not an object.
    error = seen["revisions"]["notLive"]["error"]
    assert f"mint {not_live} is not live" in error, error
    assert seen["revisions"]["notLive"]["isRecording"] is False


@pytest.mark.timeout(900)
def test_the_guides_live_stream_player(gateway, live_mint, kubectl, haven_player):
    """FRONTEND_INTEGRATION_GUIDE.md's LiveStreamPlayer: start, frames and audio on its
    canvas and AudioContext, record, stop; every message is JSON; the end and a refusal are
    messages with a reason, then a close with a code and the reason."""
    mint, other = live_mint(), not_live_mint()
    seen = run_client(
        haven_player, 850, scenario="player", gateway=gateway.url, token=gateway.token,
        origin="http://localhost:8000", mint=mint, otherMint=other, recordSeconds=4,
    )  # fmt: skip
    assert seen["started"]["success"] is True and seen["started"]["mint_id"] == mint
    assert seen["frames"] >= 10 and seen["badImages"] == 0
    assert seen["frameSize"]["width"] > 0 and seen["frameSize"]["height"] > 0
    # The guide plays s16le as one channel at 44100 Hz: the gateway's default audio is that,
    # so the publisher's 1 kHz tone plays at 1 kHz (48 kHz audio would play at 919 Hz).
    assert seen["audioSampleRates"] == [44100] and seen["audioChannels"] == [1]
    assert seen["audioPlayed"] == seen["audioBuffers"] >= 100
    assert seen["tone"]["seconds"] > 0.05, seen["tone"]
    assert 980 < seen["tone"]["hz"] < 1020, seen["tone"]
    assert {"video_frame", "audio_frame", "pong"} <= set(seen["messageTypes"])
    assert seen["recording"]["success"] is True and seen["status"]["is_recording"] is True
    stopped = seen["stopped"]
    assert stopped["success"] is True and stopped["is_recording"] is False
    assert stopped["file_size_bytes"] > 0 and stopped["duration_seconds"] >= 2
    assert stopped["empty"] is False
    assert stopped["output_path"].startswith(f"/api/recording/download/{mint}")
    (rec,) = recordings_of(kubectl, mint)
    assert rec["status"]["phase"] == "Completed"
    assert rec["status"]["bytesWritten"] == stopped["file_size_bytes"]
    # A second viewer saw the session end; a socket for a mint with no session was refused.
    assert seen["observer"]["last"]["type"] == "end", seen["observer"]
    assert seen["observer"]["close"]["code"] == 1000 and seen["observer"]["close"]["reason"]
    (refusal,) = seen["refused"]["messages"]
    assert refusal["type"] == "error" and f"no live session for mint {other}" in refusal["reason"]
    assert seen["refused"]["close"] == {"code": 4404, "reason": refusal["reason"]}


@pytest.mark.timeout(600)
def test_api_ts_recording_service(gateway, live_mint, haven_player):
    """api.ts's recordingService through axios: the active list keyed by mint, the formats
    with their quality presets, status fields its RecordingStatus type names."""
    mint = live_mint()
    seen = run_client(
        haven_player, 550, scenario="api", gateway=gateway.url, token=gateway.token,
        origin="http://localhost:3000", mint=mint, outputFormat="mpegts", recordSeconds=3,
    )  # fmt: skip
    assert seen["preflights"] > 0
    assert seen["session"]["success"] is True and seen["session"]["session_id"]
    assert seen["start"]["success"] is True and seen["start"]["recording_id"]
    status = seen["status"]
    assert status["mint_id"] == mint and status["is_recording"] is True
    assert status["output_format"] == "mpegts" and status["video_quality"] == "low"
    assert status["config"]["format"] == "mpegts" and status["recording"]["container"] == "mpegts"
    assert isinstance(status["duration_seconds"], int | float)
    active = seen["active"]
    assert active["success"] is True and active["recordings"][mint]["is_recording"] is True
    formats = seen["formats"]
    assert formats["success"] is True
    for name in ("av1", "h264", "vp9", "mp4", "mpegts", "webm"):
        fmt = formats["formats"][name]
        for key in ("description", "codec", "container"):
            assert isinstance(fmt[key], str) and fmt[key]
    assert formats["formats"]["mpegts"]["recording_format"] == "h264"
    for quality in ("low", "medium", "high"):
        preset = formats["quality_presets"][quality]
        assert preset["video_bitrate"].endswith("k") and preset["audio_bitrate"].endswith("k")
    assert seen["stop"]["success"] is True and seen["stop"]["file_size_bytes"] > 0
    assert seen["after"]["is_recording"] is False and seen["after"]["state"] == "completed"
    assert seen["stopSession"]["success"] is True
    again = seen["stopAgain"]
    assert again["status"] == 404 and again["data"]["success"] is False
    assert again["data"]["detail"] == f"mint {mint} has no active recording"

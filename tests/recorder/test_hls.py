"""HLS from the shared viewer encoder (`--hls`): FFmpeg (through PyAV) plays the live playlist,
the playlist's segments and EXT-X-PROGRAM-DATE-TIME are checked, and the page plays it with
the vendored hls.js in Debian's Chromium. Also: the operator turns `spec.viewer.hls` into the
pod's flag."""

from __future__ import annotations

import itertools
import shutil
import time
from datetime import datetime

import av
import httpx
import numpy as np
import pytest
from playwright.sync_api import sync_playwright

from haven_localcluster import testsignal as ts
from haven_operator.children import deployment
from haven_operator.settings import Settings
from haven_recorder.hls import LIST_SIZE

from .conftest import StreamPod, live_pod
from .test_viewer_page import ARGS, CHROMIUM, canvas_counter


def parse_playlist(text: str) -> list[tuple[float, datetime, str]]:
    """Each segment's EXTINF duration, EXT-X-PROGRAM-DATE-TIME and URI."""
    segments, duration, when = [], None, None
    for line in text.splitlines():
        if line.startswith("#EXTINF:"):
            duration = float(line[8:].split(",")[0])
        elif line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
            when = datetime.fromisoformat(line.split(":", 1)[1])
        elif line and not line.startswith("#"):
            assert duration is not None and when is not None, f"{line} lacks EXTINF or PDT"
            segments.append((duration, when, line))
            duration = when = None
    return segments


def wait_playlist(pod: StreamPod, segments: int, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        resp = httpx.get(pod.viewer_url + "/hls/index.m3u8", timeout=10)
        if resp.status_code == 200:
            text = resp.text
            if len(parse_playlist(text)) >= segments:
                return text
        time.sleep(0.25)
    raise AssertionError(f"no playlist with {segments} segments after {timeout} s: {text!r}")


@pytest.fixture(scope="module")
def hls_pod(livekit_server, tmp_path_factory):
    root = tmp_path_factory.mktemp("hls")
    with live_pod(livekit_server, root, "--hls", "true", "--hls-dir", str(root / "hls")) as pod:
        pod.hls_dir = root / "hls"
        yield pod


def test_ffmpeg_plays_10_s_of_the_live_playlist(hls_pod):
    pod = hls_pod
    text = wait_playlist(pod, 3)
    assert pod.status()["videoMode"]["encoding"] is True  # HLS keeps the encoder on
    assert "#EXT-X-INDEPENDENT-SEGMENTS" in text and '#EXT-X-MAP:URI="init-' in text
    counters, audio_samples, first_pts, last_pts = [], 0, None, None
    with av.open(pod.viewer_url + "/hls/index.m3u8", timeout=30) as player:
        video = player.streams.video[0]
        assert video.codec_context.name == "h264" and (video.width, video.height) == (1280, 720)
        audio = player.streams.audio[0]
        assert audio.codec_context.name == "opus"
        for packet in player.demux(video, audio):
            for frame in packet.decode():
                if packet.stream is audio:
                    audio_samples += frame.samples
                    continue
                seconds = float(frame.pts * frame.time_base)
                first_pts = seconds if first_pts is None else first_pts
                last_pts = seconds
                luma = np.ascontiguousarray(frame.to_ndarray(format="gray"))
                counters.append(ts.decode_counter(luma))
            if last_pts is not None and last_pts - first_pts >= 10:
                break
    assert last_pts - first_pts >= 10
    assert None not in counters and counters == sorted(counters), counters
    assert counters[-1] - counters[0] >= 10 * ts.FPS - 15  # 10 s of the publisher's counter
    assert audio_samples >= 7 * 48000  # and its sound (a segment's audio follows its video)


def test_playlist_segments_and_program_date_time(hls_pod):
    text = wait_playlist(hls_pod, LIST_SIZE)
    segments = parse_playlist(text)
    assert len(segments) == LIST_SIZE
    target = next(int(ln.split(":")[1]) for ln in text.splitlines() if "TARGETDURATION" in ln)
    assert 1 <= target <= 2
    durations = [d for d, _, _ in segments]
    assert all(0.9 <= d <= 2.0 for d in durations), durations  # 1 s segments, cut at keyframes
    for (d, when, _), (_, after, _) in itertools.pairwise(segments):
        # each segment's PROGRAM-DATE-TIME is the previous one's plus its duration
        assert abs((after - when).total_seconds() - d) < 0.05, (when, d, after)
    # and it is wall-clock time: the newest segment began within a few seconds of now
    age = datetime.now(segments[-1][1].tzinfo) - segments[-1][1]
    assert 0 <= age.total_seconds() < 5 + durations[-1], age
    segment = httpx.get(hls_pod.viewer_url + "/hls/" + segments[-1][2], timeout=10)
    assert segment.status_code == 200 and segment.headers["content-type"] == "video/iso.segment"
    assert httpx.get(hls_pod.viewer_url + "/hls/..%2Frecording.json").status_code == 404


def test_segments_on_disk_are_bounded(hls_pod):
    wait_playlist(hls_pod, LIST_SIZE)
    segments = list(hls_pod.hls_dir.glob("*.m4s"))
    assert LIST_SIZE <= len(segments) <= LIST_SIZE + 3, sorted(p.name for p in segments)


def test_page_plays_hls_with_the_vendored_hls_js(hls_pod):
    if not shutil.which("chromium"):
        pytest.fail("Debian's chromium is missing: run hack/debian-packages.sh")
    assert httpx.get(hls_pod.viewer_url + "/hls.min.js").status_code == 200, "make vendor"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page()
            page.goto(hls_pod.viewer_url + "/?mode=hls")
            page.wait_for_function("window.havenStats && havenStats.frames > 10", timeout=60000)
            assert page.evaluate("!!window.havenHls")  # hls.js played it, not the browser
            first = canvas_counter(page)
            page.wait_for_function(f"havenStats.frames > {page.evaluate('havenStats.frames')} + 15")
            second = canvas_counter(page)
            assert first is not None and second is not None and second > first, (first, second)
        finally:
            browser.close()


def test_spec_viewer_hls_reaches_the_pod():
    source = {"livekit": {"room": "r", "url": "ws://x", "credentialsSecretRef": {"name": "lk"}}}

    def env(viewer: dict) -> dict[str, str]:
        body = {
            "metadata": {"name": "cam", "namespace": "ns", "uid": "u-1", "generation": 1},
            "spec": {"source": source, "viewer": viewer},
        }
        container = deployment(body, Settings(), "tok")["spec"]["template"]["spec"]["containers"]
        return {e["name"]: e.get("value") for e in container[0]["env"]}

    assert env({})["HAVEN_HLS"] == "false"
    on = env({"hls": True})
    assert on["HAVEN_HLS"] == "true" and on["HAVEN_HLS_DIR"].startswith("/tmp/")

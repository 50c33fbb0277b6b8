"""The viewer page in real headless Chromium (Debian's), driven by Playwright."""

from __future__ import annotations

import base64
import shutil

import numpy as np
import pytest
import simplejpeg
from playwright.sync_api import sync_playwright

from haven_localcluster import testsignal as ts

from .conftest import livekit_args

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]  # fmt: skip


def canvas_counter(page) -> int | None:
    data_url = page.evaluate("document.getElementById('video').toDataURL('image/jpeg', 0.95)")
    jpeg = base64.b64decode(data_url.split(",", 1)[1])
    luma = simplejpeg.decode_jpeg(jpeg, colorspace="GRAY")[:, :, 0]
    return ts.decode_counter(np.ascontiguousarray(luma))


def test_viewer_page_draws_the_stream_and_shows_its_status(livekit_server, publisher, stream_pod):
    if not shutil.which("chromium"):
        pytest.fail("Debian's chromium is missing: run hack/debian-packages.sh")
    pod = stream_pod(*livekit_args(livekit_server, publisher))
    pod.wait_state("live")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page()
            page.goto(pod.viewer_url + "/")
            page.wait_for_function("Number(document.getElementById('frames').textContent) > 10")
            first = canvas_counter(page)
            page.wait_for_timeout(1000)
            second = canvas_counter(page)
            assert first is not None and second is not None and second > first, (first, second)
            assert page.text_content("#state") == "live"
            assert page.text_content("#viewers") == "1"
            page.click("#mute")  # unmute: WebAudio starts playing the PCM
            assert page.text_content("#mute") == "Mute"
            page.wait_for_timeout(500)
            audio_state = page.evaluate("audio && audio.state")
            assert audio_state == "running", audio_state
        finally:
            browser.close()

"""Getting files out of a real stream pod: `GET /recordings/{name}/files` lists a recording's
files and `GET /recordings/{name}/files/{file}` serves one read-only, with HTTP Range, behind
the control token, and nothing outside the recording's own files."""

from __future__ import annotations

import os
import time

import httpx
import pytest

from .conftest import StreamPod


@pytest.fixture
def pod(shared_pod: StreamPod) -> StreamPod:
    return shared_pod  # one live pod for this module's tests


def listing(pod: StreamPod, name: str) -> list[dict]:
    return pod.http("GET", f"/recordings/{name}/files").raise_for_status().json()["files"]


def test_a_recording_is_listed_and_served_with_range_while_and_after_it_records(pod):
    pod.start_recording(name="dl", format="h264")
    pod.wait_recording("dl", "recording")
    time.sleep(3)

    # While it records: its part, served as far as it is written.
    [growing] = listing(pod, "dl")
    assert growing["path"] == "dl/dl-part001.mp4" and growing["complete"] is False, growing
    assert (
        growing["mimeType"] == "video/mp4"
        and growing["url"] == "/recordings/dl/files/dl-part001.mp4"
    )
    resp = pod.http("GET", growing["url"])
    assert resp.status_code == 200 and resp.headers["content-type"] == "video/mp4"
    assert int(resp.headers["content-length"]) == len(resp.content) > 0
    assert resp.content[4:8] == b"ftyp"

    stopped = pod.stop_recording("dl")
    assert stopped["state"] == "completed" and [p["path"] for p in stopped["parts"]] == [
        "dl/dl.mp4"
    ], stopped
    [joined] = listing(pod, "dl")
    path = pod.recordings / "dl" / "dl.mp4"
    data = path.read_bytes()
    size = len(data)
    assert joined["complete"] is True and joined["sizeBytes"] == size == stopped["bytesWritten"]
    assert joined["durationSeconds"] == stopped["durationSeconds"] > 2
    assert not (pod.recordings / "dl" / "dl-part001.mp4").exists()  # joined, then removed
    gone = pod.http("GET", growing["url"])
    assert gone.status_code == 404 and "GET /recordings/dl/files" in gone.json()["detail"]

    url = joined["url"]
    whole = pod.http("GET", url)
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["accept-ranges"] == "bytes" and whole.headers["etag"]
    assert whole.headers["last-modified"] and whole.headers["content-type"] == "video/mp4"
    cases = {
        "bytes=4-11": (4, 11),
        "bytes=100-": (100, size - 1),
        "bytes=-16": (size - 16, size - 1),
        f"bytes=10-{size + 1000}": (10, size - 1),
        f"bytes={size - 1}-{size - 1}": (size - 1, size - 1),
    }
    for header, (first, last) in cases.items():
        part = pod.http("GET", url, headers={"Range": header})
        assert part.status_code == 206, (header, part.status_code)
        assert part.content == data[first : last + 1], header
        assert part.headers["content-range"] == f"bytes {first}-{last}/{size}", header
        assert int(part.headers["content-length"]) == last + 1 - first
    for header in (f"bytes={size}-", f"bytes={size + 5}-{size + 9}", "bytes=-0"):
        refused = pod.http("GET", url, headers={"Range": header})
        assert refused.status_code == 416, header
        assert refused.headers["content-range"] == f"bytes */{size}"
    for header in ("bytes=0-1,4-5", "pages=1-2", "bytes=9-3", "bytes=x-"):
        assert pod.http("GET", url, headers={"Range": header}).content == data, header

    etag = whole.headers["etag"]
    assert pod.http("GET", url, headers={"If-None-Match": etag}).status_code == 304
    stale = pod.http("GET", url, headers={"Range": "bytes=0-3", "If-Range": '"old"'})
    assert stale.status_code == 200 and stale.content == data
    fresh = pod.http("GET", url, headers={"Range": "bytes=0-3", "If-Range": etag})
    assert fresh.status_code == 206 and fresh.content == data[:4]
    head = pod.http("HEAD", url)
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) == size and head.headers["etag"] == etag

    # The control token is required, and the viewer port serves no files.
    assert httpx.get(f"{pod.url}{url}").status_code == 401
    assert httpx.get(f"{pod.url}/recordings/dl/files").status_code == 401
    wrong = httpx.get(f"{pod.url}{url}", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert httpx.get(f"{pod.viewer_url}{url}").status_code == 404


def test_a_webm_recording_is_served_as_webm(pod):
    pod.start_recording(name="web", format="vp9", quality="low")
    pod.wait_recording("web", "recording")
    time.sleep(3)
    pod.stop_recording("web")
    [file] = listing(pod, "web")
    assert file["path"] == "web/web.webm" and file["mimeType"] == "video/webm"
    resp = pod.http("GET", file["url"])
    assert resp.status_code == 200 and resp.headers["content-type"] == "video/webm"
    assert resp.content[:4] == b"\x1a\x45\xdf\xa3"
    assert b"\x1c\x53\xbb\x6b" in resp.content  # Cues: it seeks


def test_an_mpegts_recording_is_listed_as_ts_and_served_as_mp2t(pod):
    pod.start_recording(name="tv", format="h264", container="mpegts", quality="low")
    pod.wait_recording("tv", "recording")
    time.sleep(3)
    while_recording = listing(pod, "tv")
    assert [f["name"] for f in while_recording] == ["tv-part001.ts"]
    assert while_recording[0]["mimeType"] == "video/mp2t"
    pod.stop_recording("tv")
    [file] = listing(pod, "tv")
    assert file["path"] == "tv/tv.ts" and file["mimeType"] == "video/mp2t"
    resp = pod.http("GET", file["url"], headers={"Range": "bytes=188-375"})
    assert resp.status_code == 206 and resp.headers["content-type"] == "video/mp2t"
    assert len(resp.content) == 188 and resp.content[0] == 0x47  # a TS packet's sync byte
    whole = pod.http("GET", file["url"]).content
    assert len(whole) == file["sizeBytes"] and len(whole) % 188 == 0
    assert whole[::188] == b"\x47" * (len(whole) // 188)


def test_nothing_but_the_recordings_own_files_is_served(pod):
    pod.start_recording(name="safe", format="h264", quality="low")
    pod.wait_recording("safe", "recording")
    time.sleep(2)
    pod.stop_recording("safe")
    directory = pod.recordings / "safe"
    (pod.recordings / "secret.mp4").write_bytes(b"not yours")
    (directory / "extra.mp4").write_bytes(b"not listed")
    attempts = [
        "/recordings/safe/files/recording.json",
        "/recordings/safe/files/.reserve",
        "/recordings/safe/files/extra.mp4",
        "/recordings/safe/files/..%2Fsecret.mp4",
        "/recordings/safe/files/%2E%2E/secret.mp4",
        "/recordings/safe/files/%2Fetc%2Fpasswd",
        "/recordings/safe/files//etc/passwd",
        "/recordings/safe/files/safe%2Fsafe.mp4",
        "/recordings/nope/files/nope.mp4",
        "/recordings/nope/files",
    ]
    for path in attempts:
        resp = pod.http("GET", path)
        assert resp.status_code == 404, (path, resp.status_code, resp.text[:200])
        assert resp.json()["detail"] != "Not Found" or "%2E%2E" in path, path

    # A listed file replaced by a symlink is not followed.
    joined = directory / "safe.mp4"
    assert pod.http("GET", "/recordings/safe/files/safe.mp4").status_code == 200
    os.replace(joined, directory / "moved.mp4")
    joined.symlink_to(pod.recordings / "secret.mp4")
    resp = pod.http("GET", "/recordings/safe/files/safe.mp4")
    assert resp.status_code == 404 and b"not yours" not in resp.content, resp.text
    assert [f["name"] for f in listing(pod, "safe")] == ["safe.mp4"]

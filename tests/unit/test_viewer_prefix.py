"""The stream pod's viewer routes under an Ingress's path (recorder/haven_recorder/prefix.py)."""

from __future__ import annotations

import pytest
from fastapi import FastAPI, WebSocket
from fastapi.testclient import TestClient

from haven_recorder.prefix import ViewerPrefix, normalize


def viewer_app() -> FastAPI:
    app = FastAPI()

    @app.get("/")
    def page() -> dict:
        return {"page": True}

    @app.websocket("/stream")
    async def stream(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text("frame")
        await ws.close()

    return app


@pytest.mark.parametrize(
    ("given", "prefix"),
    [("/", ""), ("/streams/demo/", "/streams/demo"), ("/streams/demo", "/streams/demo")],
)
def test_normalize(given: str, prefix: str):
    assert normalize(given) == prefix


def test_routes_answer_under_the_prefix_and_at_the_root():
    client = TestClient(ViewerPrefix(viewer_app(), "/streams/demo/"))
    assert client.get("/streams/demo/").json() == {"page": True}
    assert client.get("/").json() == {"page": True}
    with client.websocket_connect("/streams/demo/stream") as ws:
        assert ws.receive_text() == "frame"
    assert client.get("/streams/demo/metrics").status_code == 404
    assert client.get("/streams/demox/").status_code == 404


def test_the_prefix_without_its_slash_redirects_keeping_the_query():
    client = TestClient(ViewerPrefix(viewer_app(), "/streams/demo"), follow_redirects=False)
    answer = client.get("/streams/demo?token=abc")
    assert answer.status_code == 308
    assert answer.headers["location"] == "/streams/demo/?token=abc"


def test_no_prefix_changes_nothing():
    client = TestClient(ViewerPrefix(viewer_app(), "/"))
    assert client.get("/").json() == {"page": True}
    assert client.get("/streams/demo/").status_code == 404

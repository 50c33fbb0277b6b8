"""What a LiveStream's viewer auth and video-track preference give its stream pod: the viewer
token from the named Secret (never its value in the manifest), and the track preference."""

from __future__ import annotations

import json

from haven_operator.children import deployment
from haven_operator.settings import Settings


def livestream(**spec) -> dict:
    source = {"livekit": {"room": "r", "url": "ws://x", "credentialsSecretRef": {"name": "lk"}}}
    return {
        "metadata": {"name": "cam", "namespace": "ns", "uid": "u-1", "generation": 1},
        "spec": {"source": source, **spec},
    }


def env(body: dict) -> dict[str, dict]:
    manifest = deployment(body, Settings(), "tok")
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e for e in container["env"]}


def test_viewer_auth_takes_the_token_from_the_secret():
    open_ = env(livestream())
    assert "HAVEN_VIEWER_TOKEN" not in open_ and "HAVEN_VIDEO_TRACK" not in open_
    guarded = env(livestream(viewer={"auth": {"secretRef": {"name": "viewers"}}}))
    ref = guarded["HAVEN_VIEWER_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "viewers", "key": "token"}
    keyed = env(livestream(viewer={"auth": {"secretRef": {"name": "v", "key": "pass"}}}))
    assert keyed["HAVEN_VIEWER_TOKEN"]["valueFrom"]["secretKeyRef"]["key"] == "pass"
    assert "value" not in guarded["HAVEN_VIEWER_TOKEN"]


def test_the_video_track_preference_reaches_the_pod():
    assert env(livestream(videoTrack="screen_share"))["HAVEN_VIDEO_TRACK"]["value"] == (
        "screen_share"
    )


def test_the_pod_template_changes_with_them():  # so the pod rolls when they change
    base = json.dumps(deployment(livestream(), Settings(), "tok"), sort_keys=True)
    auth = deployment(livestream(viewer={"auth": {"secretRef": {"name": "v"}}}), Settings(), "tok")
    assert json.dumps(auth, sort_keys=True) != base

"""A LiveStream says what its publisher does not publish: `status.missing`, mirrored from the
stream pod's /status, and the `Missing` column of `kubectl get ls -o wide`; on the local
cluster with the chart's operator and an audio-only publisher."""

from __future__ import annotations

import uuid

from .test_end_to_end import apply, condition, credentials, livestream, wait_live


def test_an_audio_only_stream_is_live_and_says_video_is_missing(
    operator, kubectl, namespace, livekit_server, start_publisher
):
    room = f"audio-only-{uuid.uuid4().hex[:8]}"
    start_publisher(room, options=["--no-video"])
    stream = livestream("radio", livekit_server, room)
    apply(kubectl, namespace, credentials(livekit_server), stream)
    live = wait_live(kubectl, namespace, "radio")
    assert live["phase"] == "Live" and live["missing"] == ["video"], live
    source = condition(live, "SourceConnected")
    assert source["status"] == "True" and source["reason"] == "AudioOnly", source
    wide = kubectl("get", "-n", namespace, "ls", "radio", "-o", "wide").stdout.splitlines()
    header, row = wide[0].split(), wide[1].split()
    assert "MISSING" in header, wide
    assert "video" in row[header.index("MISSING")], wide

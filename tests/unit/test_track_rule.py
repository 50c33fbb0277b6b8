"""The track-selection rule and the stream's availability (recorder/haven_recorder/tracks.py),
and the fan-out's demand that lazy subscription follows."""

from __future__ import annotations

import asyncio

from haven_recorder.fanout import FanOut
from haven_recorder.tracks import AUDIO_RANK, VIDEO_RANK, TrackRef, availability, pick

CAMERA = TrackRef("TR_cam", "test-pattern", "camera", 2)
SCREEN = TrackRef("TR_scr", "screen", "screen_share", 1)
OTHER = TrackRef("TR_oth", "x", "unknown", 0)


def test_camera_first_then_screen_share_then_the_earliest():
    assert pick([SCREEN, CAMERA, OTHER], VIDEO_RANK) == CAMERA
    assert pick([SCREEN, OTHER], VIDEO_RANK) == SCREEN
    later = TrackRef("TR_cam2", "cam2", "camera", 5)
    assert pick([later, CAMERA], VIDEO_RANK) == CAMERA
    assert pick([], VIDEO_RANK) is None


def test_a_preference_by_source_or_name_comes_first_and_falls_back():
    assert pick([SCREEN, CAMERA], VIDEO_RANK, "screen_share") == SCREEN
    assert pick([SCREEN, CAMERA, OTHER], VIDEO_RANK, "x") == OTHER
    assert pick([CAMERA, OTHER], VIDEO_RANK, "screen_share") == CAMERA  # not there: the rule


def test_audio_microphone_first():
    mic = TrackRef("TR_mic", "test-tone", "microphone", 3)
    share = TrackRef("TR_sa", "share-audio", "screen_share_audio", 1)
    assert pick([share, mic], AUDIO_RANK) == mic


def test_live_from_what_is_published():
    assert availability(True, True) == availability(True, True, True)
    assert (availability(True, True).live, availability(True, True).reason) == (True, "Live")
    assert availability(True, False).reason == "VideoOnly"
    assert availability(True, False).missing == ("audio",)
    assert availability(False, True).reason == "AudioOnly"
    assert availability(False, True).missing == ("video",)
    assert not availability(False, False).live
    assert availability(True, False, audio_wanted=False).reason == "Live"


def test_demand_follows_active_subscriptions():
    async def run() -> list[tuple[bool, bool]]:
        fanout, seen = FanOut(), []
        fanout.watch_demand(lambda: seen.append((fanout.wants("video"), fanout.wants("audio"))))
        viewer = fanout.subscribe("viewer-video", maxsize=1, audio=False, active=False)
        viewer.set_active(True)
        recording = fanout.subscribe("recording", maxsize=4, video=True, audio=True)
        viewer.set_active(False)
        recording.close()
        return seen

    assert asyncio.run(run()) == [
        (False, False), (True, False), (True, True), (True, True), (False, False)
    ]  # fmt: skip

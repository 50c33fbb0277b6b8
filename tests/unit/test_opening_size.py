"""A recording part's picture size comes from the publication's announced size when its first
picture is smaller (recording.opening_size): pure, no media."""

from __future__ import annotations

import pytest

from haven_recorder.frames import VideoFrame
from haven_recorder.recording import opening_size, same_track_shape


def _frame(width: int, height: int, rotation: int = 0) -> VideoFrame:
    return VideoFrame(width, height, b"", 0.0, rotation)


@pytest.mark.parametrize(
    ("frame", "announced", "max_width", "expected"),
    [
        (_frame(320, 178), (641, 359), None, (640, 358)),  # ramping up: the publication's
        (_frame(320, 180), (1280, 720), 480, (480, 270)),  # ... to at most maxWidth
        (_frame(320, 180, 90), (640, 360), None, (360, 640)),  # turned as the picture is
        (_frame(640, 356), (641, 359), None, (640, 358)),  # cropped by WebRTC: the same
        (_frame(720, 404), (720, 405), None, None),  # the same size once even: its own
        (_frame(1280, 720), (640, 360), None, None),  # larger than announced: its own
        (_frame(300, 300), (1280, 720), None, None),  # another shape: its own
        (_frame(320, 180), None, None, None),  # nothing announced: its own
        (_frame(320, 176), (641, 359), None, (640, 358)),  # a half-size layer, cropped
    ],
)
def test_the_opening_size(frame, announced, max_width, expected):
    assert opening_size(frame, announced, max_width) == expected


@pytest.mark.parametrize(
    ("part", "picture", "announced", "same"),
    [
        ((640, 358), (320, 176), (641, 359), True),  # a half-size layer WebRTC cropped
        ((640, 358), (640, 356), (641, 359), True),
        ((720, 1280), (360, 640), (1280, 720), True),  # turned
        ((1280, 720), (960, 720), (1280, 720), False),  # a window resized: a new part
        ((640, 358), (320, 176), None, False),  # nothing announced: the writer decides
    ],
)
def test_pictures_of_the_tracks_shape_stay_in_the_part(part, picture, announced, same):
    assert same_track_shape(part, picture, announced) is same

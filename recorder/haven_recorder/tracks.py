"""Which of a publisher's tracks the pod follows, and what that makes the stream: pure
decisions, no SDK (manager.py applies them).

The rule (docs/stream-pod.md, "Tracks"): exactly one video and one audio track are followed.
A track matching the preference (`--video-track`: a track name or a source such as `camera`
or `screen_share`) comes first; then by source, camera before screen share before any other
video (microphone before screen-share audio for audio); among equals the one published first.
When the followed track goes, the next by the same rule takes its place; a preferred or a
camera track published later takes over from a lesser one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

VIDEO_RANK = ("camera", "screen_share")
AUDIO_RANK = ("microphone", "screen_share_audio")


@dataclass(frozen=True, slots=True)
class TrackRef:
    sid: str
    name: str
    source: str  # "camera", "screen_share", "microphone", "screen_share_audio", "unknown"
    order: int  # publish order as the pod saw it: lower was published first


def pick(
    tracks: Iterable[TrackRef], rank: tuple[str, ...], preference: str | None = None
) -> TrackRef | None:
    """The track to follow among `tracks` (all of one kind), or None if there is none."""

    def key(t: TrackRef) -> tuple[bool, int, int]:
        preferred = preference is not None and preference in (t.name, t.source)
        by_source = rank.index(t.source) if t.source in rank else len(rank)
        return (not preferred, by_source, t.order)

    return min(tracks, key=key, default=None)


@dataclass(frozen=True, slots=True)
class Availability:
    """What the followed publisher publishes, as the stream's state says it."""

    live: bool
    reason: str
    missing: tuple[str, ...]  # "video", "audio": what viewers and recordings will not get


def availability(video: bool, audio: bool, audio_wanted: bool = True) -> Availability:
    """Live as soon as a track is published (not when frames arrive: video is subscribed
    only while someone watches or records); the reason names what is missing."""
    missing = tuple(
        k for k, has in (("video", video), ("audio", audio or not audio_wanted)) if not has
    )
    if video and not missing:
        return Availability(True, "Live", missing)
    if video:
        return Availability(True, "VideoOnly", missing)
    if audio and audio_wanted:
        return Availability(True, "AudioOnly", missing)
    return Availability(
        False, "NothingPublished", ("video", "audio") if audio_wanted else ("video",)
    )

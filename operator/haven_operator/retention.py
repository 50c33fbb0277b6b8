"""Retention, as pure functions: when a finished Recording expires
(`spec.ttlSecondsAfterFinished`, as Jobs have it) and which auto-recordings `keepLast` lets go.
Deleting a Recording takes its files with it only with `spec.deleteFilesWithRecording` (the
finalizer in archive.py asks the stream pod); otherwise files outlive objects."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .autorecord import RecordingView

FINAL = ("Completed", "Failed")


def _time(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def finished_at(status: dict) -> dt.datetime | None:
    """When the Recording finished: its Complete or Failed condition turning True (the
    operator's clock), else the pod's stoppedAt; None while it is not over."""
    if status.get("phase") not in FINAL:
        return None
    for cond in status.get("conditions") or []:
        done = cond.get("type") in ("Complete", "Failed") and cond.get("status") == "True"
        if done and (when := _time(cond.get("lastTransitionTime"))):
            return when
    return _time(status.get("stoppedAt"))


def expires_at(body: dict) -> dt.datetime | None:
    """When a finished Recording with ttlSecondsAfterFinished is to be deleted; None if never
    (no TTL, not finished yet, or no time to count from)."""
    ttl = (body.get("spec") or {}).get("ttlSecondsAfterFinished")
    finished = finished_at(body.get("status") or {})
    if ttl is None or finished is None:
        return None
    return finished + dt.timedelta(seconds=int(ttl))


def has_ttl(body: dict) -> bool:
    """A finished Recording that has a TTL (its expiry daemon runs)."""
    status = body.get("status") or {}
    ttl = (body.get("spec") or {}).get("ttlSecondsAfterFinished")
    return ttl is not None and status.get("phase") in FINAL


def beyond_keep_last(recordings: Iterable[RecordingView], keep: int) -> list[RecordingView]:
    """The oldest finished Recordings over the newest `keep`; a running one is never chosen
    (it still counts, so they go once it is over)."""
    alive = sorted(
        (r for r in recordings if not r.deleting), key=lambda r: (r.created, r.name), reverse=True
    )
    return [r for r in alive[keep:] if r.over]

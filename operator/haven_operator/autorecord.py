"""Auto-record (`LiveStream.spec.autoRecord`): what to do now, as a pure function of the
LiveStream and the Recordings it created. No I/O here (archive.py does it).

A session is one stretch of the stream being Live: it starts at the `lastTransitionTime` of the
LiveStream's SourceConnected condition (the pod's own word that the source is live). Its
Recording is named `<livestream>-<that time, UTC yyyymmdd-hhmmss>`, so creating it again (after
an operator restart, or from a stale view) is a 409, never a second Recording. While a
Recording of ours is running, none is created: a stream that comes back within the grace
period goes on in the same Recording. Once the stream has been away longer than
`offlineGraceSeconds`, or `autoRecord` is gone, the running one is stopped (`spec.stopped`, the
Recording's own stop path); the next session gets a new one."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from . import retention
from .children import GROUP, LABEL, VERSION

AUTO_LABEL = f"{GROUP}/auto-record"  # "true" on the Recordings auto-record creates
FINAL = ("Completed", "Failed")
DEFAULT_GRACE = 60.0  # seconds
NAME_MAX = 63  # the Recording CRD's limit on metadata.name
STAMP = "%Y%m%d-%H%M%S"
# autoRecord fields copied into each Recording's spec as they are.
COPIED = (
    "format",
    "quality",
    "audio",
    "maxWidth",
    "maxFps",
    "maxDuration",
    "ttlSecondsAfterFinished",
    "deleteFilesWithRecording",
)


def parse_time(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass(frozen=True)
class RecordingView:
    """What the decisions need of a Recording (kept in a kopf index)."""

    name: str
    uid: str
    owners: tuple[str, ...]  # ownerReferences' UIDs
    created: dt.datetime
    phase: str | None
    stopped: bool
    deleting: bool

    @classmethod
    def of(cls, body: Any) -> RecordingView:
        meta, spec, status = body["metadata"], body.get("spec") or {}, body.get("status") or {}
        return cls(
            name=meta["name"],
            uid=meta["uid"],
            owners=tuple(o.get("uid", "") for o in meta.get("ownerReferences") or []),
            created=parse_time(meta.get("creationTimestamp"))
            or dt.datetime.min.replace(tzinfo=dt.UTC),
            phase=status.get("phase"),
            stopped=bool(spec.get("stopped")),
            deleting=bool(meta.get("deletionTimestamp")),
        )

    @property
    def over(self) -> bool:
        return self.phase in FINAL

    @property
    def running(self) -> bool:
        """Started or waiting to, and not asked to stop."""
        return not self.over and not self.stopped and not self.deleting


@dataclass(frozen=True)
class Create:
    name: str
    manifest: dict


@dataclass(frozen=True)
class Stop:
    name: str
    reason: str


@dataclass(frozen=True)
class Delete:
    name: str
    uid: str
    reason: str


Action = Create | Stop | Delete


def recording_name(livestream: str, since: dt.datetime) -> str:
    """`<livestream>-<yyyymmdd-hhmmss>`, the LiveStream's name cut to fit 63 characters."""
    stamp = since.astimezone(dt.UTC).strftime(STAMP)
    head = livestream[: NAME_MAX - len(stamp) - 1].rstrip("-")
    return f"{head}-{stamp}"


def manifest(livestream: dict, name: str) -> dict:
    """The Recording auto-record creates: labelled with its LiveStream, owned by it."""
    meta, auto = livestream["metadata"], livestream["spec"]["autoRecord"]
    spec: dict[str, Any] = {"liveStreamRef": {"name": meta["name"]}}
    spec.update({k: auto[k] for k in COPIED if k in auto})
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Recording",
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "labels": {LABEL: meta["name"], AUTO_LABEL: "true"},
            "ownerReferences": [
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": "LiveStream",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                }
            ],
        },
        "spec": spec,
    }


def _live(livestream: dict) -> tuple[bool, dt.datetime | None]:
    """(Live now, since when the source is connected or not)."""
    status = livestream.get("status") or {}
    source = next(
        (c for c in status.get("conditions") or [] if c.get("type") == "SourceConnected"), None
    )
    live = status.get("phase") == "Live" and (source or {}).get("status") == "True"
    return live, parse_time((source or {}).get("lastTransitionTime"))


def decide(livestream: dict, recordings: Iterable[RecordingView], now: dt.datetime) -> list[Action]:
    """What auto-record does now for `livestream`, given the Recordings labelled as its
    auto-recordings (only those it owns count: it never adopts)."""
    meta = livestream["metadata"]
    auto = (livestream.get("spec") or {}).get("autoRecord")
    ours = [r for r in recordings if meta["uid"] in r.owners and not r.deleting]
    running = [r for r in ours if r.running]
    if auto is None or meta.get("deletionTimestamp"):
        why = "autoRecord was removed" if auto is None else "the LiveStream is being deleted"
        return [Stop(r.name, why) for r in running]
    actions: list[Action] = []
    live, since = _live(livestream)
    if live:
        name = recording_name(meta["name"], since or now)
        if not running and all(r.name != name for r in ours):
            actions.append(Create(name, manifest(livestream, name)))
    else:
        grace = float(auto.get("offlineGraceSeconds", DEFAULT_GRACE))
        for r in running:
            away = (now - max(since or r.created, r.created)).total_seconds()
            if away > grace:
                actions.append(Stop(r.name, f"the stream has been offline for {away:.0f} s"))
    keep = auto.get("keepLast")
    if keep is not None:
        for r in retention.beyond_keep_last(ours, int(keep)):
            actions.append(Delete(r.name, r.uid, f"keepLast is {keep}"))
    return actions


def next_check(livestream: dict, recordings: Iterable[RecordingView], now: dt.datetime) -> float:
    """Seconds until a decision could change with no event: the grace running out."""
    auto = (livestream.get("spec") or {}).get("autoRecord")
    live, since = _live(livestream)
    if auto is None or live:
        return float("inf")
    grace = float(auto.get("offlineGraceSeconds", DEFAULT_GRACE))
    uid = livestream["metadata"]["uid"]
    waits = [
        grace - (now - max(since or r.created, r.created)).total_seconds()
        for r in recordings
        if r.running and uid in r.owners
    ]
    return max(0.0, min(waits)) if waits else float("inf")

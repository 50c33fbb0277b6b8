"""`status.conditions` in the Kubernetes style: one entry per type, a transition time that
moves only when the status does, and the generation it was observed at."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool | None  # None: Unknown
    reason: str
    message: str = ""

    @property
    def status_word(self) -> str:
        return "Unknown" if self.status is None else str(self.status)


def merge(existing: list[dict] | None, updates: list[Condition], generation: int) -> list[dict]:
    """The conditions after `updates`, keeping the order and untouched entries."""
    by_type = {c["type"]: dict(c) for c in existing or []}
    for cond in updates:
        old = by_type.get(cond.type)
        changed = old is None or old.get("status") != cond.status_word
        by_type[cond.type] = {
            "type": cond.type,
            "status": cond.status_word,
            "reason": cond.reason,
            "message": cond.message,
            "lastTransitionTime": now() if changed else old.get("lastTransitionTime", now()),
            "observedGeneration": generation,
        }
    return list(by_type.values())


def get(conditions: list[dict] | None, type_: str) -> dict | None:
    return next((c for c in conditions or [] if c.get("type") == type_), None)

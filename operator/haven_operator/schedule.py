"""When a LiveStream's next reconcile is due: pure bookkeeping, no I/O, time passed in.

- now, when something woke it: a spec edit (a new generation) or a child that changed;
- after a failure, after an exponential, jittered, capped backoff (backoff.py);
- after a success, at a slow jittered resync, the safety net for what no watch reports
  (the control Secret, which the operator may create and read but not watch).
"""

from __future__ import annotations

from dataclasses import dataclass

from .backoff import delay, jittered

RESYNC = 900.0  # seconds between looks at a LiveStream nothing touched (its Secret only)


@dataclass
class Schedule:
    attempted: int | None = None  # the generation of the last reconcile, failed or not
    applied: int | None = None  # the last generation whose every child was applied
    failures: int = 0  # consecutive
    next_at: float = 0.0  # monotonic time of the next reconcile
    dirty: bool = True  # woken since the last reconcile

    def due(self, generation: int, now: float) -> bool:
        return self.dirty or generation != self.attempted or now >= self.next_at

    def resync_only(self, generation: int, now: float) -> bool:
        """Due for no reason but the resync timer, after a success: a light look suffices."""
        return (
            not self.dirty
            and generation == self.attempted == self.applied
            and self.failures == 0
            and now >= self.next_at
        )

    def done(
        self,
        generation: int,
        ok: bool,
        now: float,
        retry_after: float | None = None,
        resync: float = RESYNC,
    ) -> None:
        """Record a reconcile's result. `retry_after`: a wait that is not a failure (a deleted
        namesake's child the garbage collector is about to remove): look again soon."""
        self.attempted, self.dirty = generation, False
        if ok:
            self.applied, self.failures = generation, 0
            self.next_at = now + jittered(resync)
        elif retry_after is not None:
            self.next_at = now + retry_after
        else:
            self.failures += 1
            self.next_at = now + delay(self.failures)

    def wait(self, now: float, interval: float) -> float:
        """How long to sleep before looking again (status every `interval` at most)."""
        return max(0.0, min(interval, self.next_at - now))

"""Liveness: the pod's core tasks, watched.

A core task (the connection loop, the status forwarder, the viewer loops, each recording's
task) is meant to run until the pod stops; a recording's may also end by finishing. One that
dies instead (an exception escaped it, it was cancelled, or a loop meant to run forever
returned) is logged with its traceback, counted in `haven_pod_task_failures_total{task}`, and
makes `/healthz` and `/readyz` answer 503 from then on, so the kubelet restarts the pod: one
dead task never leaves a pod that answers 200 and serves nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from . import metrics

log = logging.getLogger("haven.health")


@dataclass(frozen=True)
class Failure:
    task: str  # the task's name (recording-<name> for a recording)
    kind: str  # the metric label: stream-manager, status, viewer-video, viewer-audio, recording
    why: str  # "raised <ExceptionType>", "cancelled" or "returned"
    at: float  # wall clock

    def as_dict(self) -> dict:
        return {"task": self.task, "kind": self.kind, "why": self.why, "at": self.at}


class Health:
    def __init__(self) -> None:
        self.failures: list[Failure] = []
        self.stopping = False
        self.tasks: dict[str, asyncio.Task] = {}

    @property
    def ok(self) -> bool:
        return not self.failures

    def watch(
        self, task: asyncio.Task, kind: str, *, may_return: bool = False, may_cancel: bool = False
    ) -> asyncio.Task:
        """Watch `task`: `may_return` for one that may end by finishing its work, `may_cancel`
        for one its owner cancels (a track's reader, when the track goes)."""
        name = task.get_name()
        self.tasks[name] = task
        task.add_done_callback(lambda t: self._done(t, kind, may_return, may_cancel))
        return task

    def _done(self, task: asyncio.Task, kind: str, may_return: bool, may_cancel: bool) -> None:
        name = task.get_name()
        if self.tasks.get(name) is task:
            del self.tasks[name]
        if self.stopping or (may_cancel and task.cancelled()):
            return
        if task.cancelled():
            why = "cancelled"
            log.error("core task %s (%s) was cancelled while the pod runs", name, kind)
        elif (exc := task.exception()) is not None:
            why = f"raised {type(exc).__name__}"
            log.error("core task %s (%s) died", name, kind, exc_info=exc)
        elif may_return:
            return
        else:
            why = "returned"
            log.error("core task %s (%s) returned while the pod runs", name, kind)
        self.failures.append(Failure(name, kind, why, time.time()))
        metrics.TASK_FAILURES.labels(task=kind).inc()
        log.error("the pod is unhealthy from now on: /healthz answers 503")


# A loop that hits the same error on every frame must not flood the log: its first error is
# logged with the traceback, later ones at most every LOG_EVERY seconds, with a count.
LOG_EVERY = 5.0
_last_logged: dict[str, tuple[float, int]] = {}


def contained(loop: str, exc: BaseException, context: str) -> None:
    """A loop caught `exc` and carries on (the item it was working on is skipped): count it
    in `haven_pod_loop_errors_total{loop}` and log it with `context`, rate-limited."""
    metrics.LOOP_ERRORS.labels(loop=loop).inc()
    now = time.monotonic()
    last, suppressed = _last_logged.get(loop, (-LOG_EVERY, 0))
    if now - last < LOG_EVERY:
        _last_logged[loop] = (last, suppressed + 1)
        return
    _last_logged[loop] = (now, 0)
    more = f" ({suppressed} more since the last report)" if suppressed else ""
    log.error("%s: %s, skipped and carrying on%s", loop, context, more, exc_info=exc)

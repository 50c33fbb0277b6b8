"""Leader election on a coordination.k8s.io Lease: of several operator replicas only the one
holding the Lease runs kopf; the others wait and take over once it stops renewing.

kopf's own peering pauses lower-priority operators, but peers of equal priority all freeze, so
it cannot pick one of identical replicas. This follows client-go's leaderelection instead:

- The Lease (made by the chart; the RBAC allows get and update of that one name, and create
  in the release's namespace) holds holderIdentity, leaseDurationSeconds, renewTime. Writes
  are compare-and-swap on its resourceVersion (or a create), so of two candidates exactly one
  wins.
- A deleted Lease is made again: at once by the leader (it still leads), by a standby only
  once it has been missing for a lease duration (the leader, renewing every `retry`, would
  have made it by then), with the labels and annotations it had (Helm's ownership).
- A candidate takes the Lease when it has no holder, or when the holder's record has not
  changed for leaseDurationSeconds on the candidate's own clock (no clock skew matters).
- The leader renews every `retry` seconds. If it cannot renew for `renew_deadline` (shorter
  than the lease duration), or sees another holder, it has lost: the process exits at once
  (before anyone else may take the Lease), and the pod restarts as a candidate.
- A leader that stops cleanly (SIGTERM) gives the Lease up, so the standby takes over within
  one `retry` period instead of a lease duration.

The decisions are pure functions (time passed in); LeaseElector does the I/O, each call with a
deadline, in a thread of its own so the event loop never blocks and a busy worker pool
never delays a renewal.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import logging
import random
import time
from dataclasses import dataclass
from enum import Enum

import kubernetes
from kubernetes.client import ApiException

log = logging.getLogger("haven_operator.leader")

LEASE_DURATION = 15.0  # seconds a silent holder keeps the Lease
RENEW_DEADLINE = 10.0  # seconds the leader may fail to renew before it gives up
RETRY = 2.0  # seconds between attempts
TIMEOUT = (3, 5)  # (connect, read) seconds of each Lease call


@dataclass(frozen=True)
class Record:
    """What the Lease says (renew_time as the API's string: compared for change only)."""

    holder: str | None
    renew_time: str | None
    duration: float | None
    transitions: int = 0
    exists: bool = True  # False: there is no Lease object at all


MISSING = Record(None, None, None, exists=False)


@dataclass(frozen=True)
class Observed:
    """The last record seen and when it was first seen so, on this candidate's clock.
    `initial`: it was already so at this candidate's first look (it just started)."""

    record: Record
    since: float
    initial: bool = False


class Action(Enum):
    RENEW = "renew"  # ours: write a new renewTime
    ACQUIRE = "acquire"  # free or expired: take it
    WAIT = "wait"  # someone else holds it


def observe(previous: Observed | None, record: Record, now: float) -> Observed:
    """A record that changed restarts the clock; an unchanged one keeps its first sighting."""
    if previous is not None and previous.record == record:
        return previous
    return Observed(record, now, initial=previous is None)


def decide(
    identity: str,
    seen: Observed,
    now: float,
    default_duration: float,
    leading: bool = False,
    margin: float = 0.0,
) -> Action:
    """`margin`: how much longer a candidate that just started waits for a record it found
    unchanged: a standby sees a renewal up to a retry period late, so the replica of a leader
    that crashed and restarted at once would otherwise win the race to its own Lease."""
    record = seen.record
    if not record.exists:  # deleted: the leader makes it again at once, a standby after a wait
        if leading or now - seen.since >= default_duration:
            return Action.ACQUIRE
        return Action.WAIT
    if record.holder == identity:
        return Action.RENEW
    if not record.holder:
        return Action.ACQUIRE
    extra = margin if seen.initial else 0.0
    if now - seen.since >= (record.duration or default_duration) + extra:
        return Action.ACQUIRE  # the holder stopped renewing a lease duration ago
    return Action.WAIT


def lost(last_renewed: float, now: float, renew_deadline: float) -> bool:
    return now - last_renewed >= renew_deadline


def _micro_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class LeaseElector:
    def __init__(
        self,
        namespace: str,
        name: str,
        identity: str,
        api: kubernetes.client.CoordinationV1Api | None = None,
        duration: float = LEASE_DURATION,
        renew_deadline: float = RENEW_DEADLINE,
        retry: float = RETRY,
    ) -> None:
        if not retry * 1.2 < renew_deadline < duration:
            raise ValueError("need retry * 1.2 < renew_deadline < lease duration")
        self.namespace, self.name, self.identity = namespace, name, identity
        self.api = api or kubernetes.client.CoordinationV1Api()
        self.duration, self.renew_deadline, self.retry = duration, renew_deadline, retry
        self.seen: Observed | None = None
        self.leading = False
        self._said = ""
        self._transitions = 0  # the Lease's last leaseTransitions seen
        self._meta: tuple[dict | None, dict | None] = (None, None)  # its labels, annotations
        # A thread of its own: the shared pool is busy with reconciles under load, and a
        # renewal queued behind them would lose the Lease.
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="lease")

    def _say(self, message: str, *args: object) -> None:
        """Log a follower's state once per change, not every attempt."""
        text = message % args
        if text != self._said:
            log.info(text)
            self._said = text

    def _read(self) -> kubernetes.client.V1Lease | None:
        try:
            return self.api.read_namespaced_lease(
                self.name, self.namespace, _request_timeout=TIMEOUT
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def _try(self) -> bool:
        """One attempt to take or renew the Lease (blocking). True if we hold it now."""
        lease = self._read()
        if lease is None:
            record = MISSING
            spec = kubernetes.client.V1LeaseSpec()
        else:
            spec = lease.spec or kubernetes.client.V1LeaseSpec()
            self._meta = (lease.metadata.labels, lease.metadata.annotations)
            record = Record(
                spec.holder_identity,
                str(spec.renew_time) if spec.renew_time else None,
                float(spec.lease_duration_seconds) if spec.lease_duration_seconds else None,
                spec.lease_transitions or 0,
            )
            self._transitions = record.transitions
        now = time.monotonic()
        self.seen = observe(self.seen, record, now)
        action = decide(
            self.identity, self.seen, now, self.duration, self.leading, margin=self.retry * 1.5
        )
        if action is Action.WAIT:
            self.leading = False
            if lease is None:
                self._say("Lease %s/%s is missing: waiting for the leader to make it",
                          self.namespace, self.name)  # fmt: skip
            else:
                self._say("standby: Lease %s held by %s", self.name, record.holder)
            return False
        stamp = _micro_now()
        if action is Action.ACQUIRE and not self.leading:
            spec.acquire_time = stamp
            spec.lease_transitions = self._transitions + 1  # a new holder, as client-go
        else:
            spec.lease_transitions = self._transitions
        spec.holder_identity = self.identity
        spec.lease_duration_seconds = int(self.duration)
        spec.renew_time = stamp
        try:  # compare-and-swap: the resourceVersion read above, or a create
            if lease is None:
                labels, annotations = self._meta
                meta = kubernetes.client.V1ObjectMeta(
                    name=self.name, namespace=self.namespace, labels=labels,
                    annotations=annotations,
                )  # fmt: skip
                body = kubernetes.client.V1Lease(metadata=meta, spec=spec)
                self.api.create_namespaced_lease(self.namespace, body, _request_timeout=TIMEOUT)
                log.warning("Lease %s/%s was missing: made it again", self.namespace, self.name)
            else:
                lease.spec = spec
                self.api.replace_namespaced_lease(
                    self.name, self.namespace, lease, _request_timeout=TIMEOUT
                )
        except ApiException as exc:
            if exc.status == 409:  # someone wrote (or made) it since our read: look again
                return False
            raise
        if action is Action.ACQUIRE and not self.leading:
            log.info("leader: took Lease %s/%s as %s", self.namespace, self.name, self.identity)
            self._said = ""
        self.leading = True
        return True

    async def _attempt(self) -> bool:
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._thread, self._try)
        except Exception as exc:  # an API error or timeout: try again next period
            self._say("Lease %s: %s", self.name, str(exc).splitlines()[0][:200])
            return False

    async def acquire(self) -> None:
        """Wait (as the standby) until this candidate holds the Lease."""
        while True:
            if await self._attempt():
                return
            await asyncio.sleep(self.retry * random.uniform(1.0, 1.2))

    async def hold(self) -> None:
        """Renew the Lease; return when leadership is lost (not renewed within the deadline,
        or another holder seen)."""
        last = time.monotonic()
        while True:
            await asyncio.sleep(self.retry)
            if await self._attempt():
                last = time.monotonic()
            elif self.seen is not None and self.seen.record.holder not in (self.identity, None):
                log.error(
                    "leadership lost: Lease %s now held by %s", self.name, self.seen.record.holder
                )
                return
            if lost(last, time.monotonic(), self.renew_deadline):
                log.error(
                    "leadership lost: Lease %s not renewed for %.0f s",
                    self.name,
                    self.renew_deadline,
                )
                return

    def release(self) -> None:
        """Give the Lease up (blocking; on a clean stop), if we still hold it."""
        try:
            lease = self._read()
            if lease is None or lease.spec is None or lease.spec.holder_identity != self.identity:
                return
            lease.spec.holder_identity = None
            lease.spec.lease_duration_seconds = 1
            self.api.replace_namespaced_lease(
                self.name, self.namespace, lease, _request_timeout=TIMEOUT
            )
            log.info("released Lease %s/%s", self.namespace, self.name)
        except Exception as exc:  # it expires by itself
            log.warning("could not release Lease %s: %s", self.name, str(exc)[:200])
        finally:
            self.leading = False

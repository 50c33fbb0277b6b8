"""Leader election's decisions (haven_operator.leader), time passed in: who may take the
Lease, when a silent holder's Lease counts as expired, when a leader has lost."""

from __future__ import annotations

from haven_operator.leader import Action, Observed, Record, decide, lost, observe

ME, OTHER = "op-a_1234", "op-b_5678"


def test_a_free_lease_is_taken_and_ours_is_renewed():
    free = observe(None, Record(None, None, None), now=0)
    assert decide(ME, free, now=0, default_duration=15) is Action.ACQUIRE
    ours = observe(None, Record(ME, "t1", 15), now=0)
    assert decide(ME, ours, now=100, default_duration=15) is Action.RENEW


def test_anothers_lease_expires_only_after_its_record_stops_changing_for_a_duration():
    seen = observe(None, Record(OTHER, "t1", 15), now=100)
    assert decide(ME, seen, now=114.9, default_duration=30) is Action.WAIT
    # The holder renewed: the clock starts again from when we saw the new record.
    seen = observe(seen, Record(OTHER, "t2", 15), now=110)
    assert seen.since == 110
    assert decide(ME, seen, now=124, default_duration=30) is Action.WAIT
    # Unchanged records keep the first sighting: the holder went silent at 110.
    seen = observe(seen, Record(OTHER, "t2", 15), now=120)
    assert seen.since == 110
    assert decide(ME, seen, now=125, default_duration=30) is Action.ACQUIRE


def test_our_clock_not_the_holders_timestamps_decides():
    # A renewTime far in the past (a skewed clock) does not make a lease that is still being
    # renewed look expired: only the change of the record counts.
    seen = observe(None, Record(OTHER, "1970-01-01 00:00:00+00:00", 15), now=50)
    assert decide(ME, seen, now=55, default_duration=15) is Action.WAIT


def test_a_lease_without_a_duration_uses_the_default():
    seen = Observed(Record(OTHER, "t", None), since=0)
    assert decide(ME, seen, now=14, default_duration=15) is Action.WAIT
    assert decide(ME, seen, now=15, default_duration=15) is Action.ACQUIRE


def test_a_leader_that_cannot_renew_within_the_deadline_has_lost():
    assert not lost(last_renewed=100, now=109.9, renew_deadline=10)
    assert lost(last_renewed=100, now=110, renew_deadline=10)


def test_a_deleted_lease_is_made_again_by_the_leader_at_once_by_a_standby_only_later():
    from haven_operator.leader import MISSING

    gone = observe(None, MISSING, now=100)
    assert decide(ME, gone, now=100, default_duration=15, leading=True) is Action.ACQUIRE
    # A standby waits a lease duration: the leader, renewing every few seconds, comes first.
    assert decide(OTHER, gone, now=114.9, default_duration=15) is Action.WAIT
    assert decide(OTHER, gone, now=115, default_duration=15) is Action.ACQUIRE
    # Made again by the leader: the standby's clock starts over on the new record.
    back = observe(gone, Record(ME, "t1", 15), now=102)
    assert decide(OTHER, back, now=116, default_duration=15) is Action.WAIT


def test_a_candidate_that_just_started_leaves_an_expired_lease_to_the_older_standby():
    # The standby saw the holder's last renewal late (at 102); a replica that started at 101
    # (the crashed leader's container, restarted) first saw the same record then.
    standby = observe(observe(None, Record(OTHER, "t0", 15), 90), Record(OTHER, "t1", 15), 102)
    restarted = observe(None, Record(OTHER, "t1", 15), 101)
    assert restarted.initial and not standby.initial
    assert decide(ME, standby, now=117, default_duration=15, margin=3) is Action.ACQUIRE
    assert decide(ME, restarted, now=117, default_duration=15, margin=3) is Action.WAIT
    assert decide(ME, restarted, now=119, default_duration=15, margin=3) is Action.ACQUIRE

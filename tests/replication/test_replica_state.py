"""The sans-I/O replication state: HW, ISR shrink/expand, acks=all completion."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pylog.errors import NotEnoughReplicas, NotEnoughReplicasAfterAppend, NotLeaderOrFollower
from pylog.replication.replica import LEADER, ReplicaState


def leader(isr=(1, 2, 3), leo=0, hw=0, now=0, lag=30_000):
    s = ReplicaState(1, replica_lag_time_max_ms=lag)
    s.become_leader(5, isr, (1, 2, 3), leo, hw, now)
    return s


def test_hw_is_min_leo_over_isr_and_acks_all_wait_for_it():
    s = leader()
    assert s.role == LEADER and s.high_watermark == 0
    done = s.on_appended(10, token="t1", required_offset=10, required_acks=-1, min_isr=2)
    assert done == [] and s.high_watermark == 0
    hw, prop, done = s.on_fetch(2, 10, now=1)
    assert hw == 0 and prop is None and done == []  # replica 3 has nothing yet
    hw, prop, done = s.on_fetch(3, 7, now=2)
    assert hw == 7 and done == []
    hw, prop, done = s.on_fetch(3, 10, now=3)
    assert hw == 10 and [d.token for d in done] == ["t1"] and done[0].error is None


def test_acks_one_does_not_wait():
    s = leader()
    assert s.on_appended(4, token="x", required_offset=4, required_acks=1) == []
    assert s._pending == []


def test_not_enough_replicas_before_append():
    s = leader(isr=(1,))
    with pytest.raises(NotEnoughReplicas, match="min.insync.replicas=2"):
        s.check_can_append(-1, 2)
    s.check_can_append(1, 2)  # acks=1 does not care


def test_lagging_follower_leaves_isr_and_rejoins():
    s = leader(lag=1000)
    s.on_appended(5)
    s.on_fetch(2, 5, now=100)
    s.on_fetch(3, 0, now=100)  # replica 3 fetches but never catches up
    assert s.tick(900) is None
    s.on_fetch(2, 5, now=1500)
    prop = s.tick(1200)
    assert prop is not None and prop.new_isr == (1, 2) and "replica 3" in prop.reason
    assert s.tick(1300) is None  # one proposal at a time
    s.on_isr_changed(prop.new_isr)
    assert s.high_watermark == 5  # 3 no longer holds the HW back
    hw, grow, _ = s.on_fetch(3, 5, now=2000)
    assert grow is not None and grow.new_isr == (1, 2, 3)


def test_isr_shrinking_below_min_fails_waiting_acks():
    s = leader(lag=1000)
    s.on_appended(3, token="w", required_offset=3, required_acks=-1, min_isr=3)
    s.on_fetch(2, 3, now=10)
    done = s.on_isr_changed((1, 2))
    assert [type(d.error) for d in done] == [NotEnoughReplicasAfterAppend]


def test_leadership_change_fails_waiting_acks():
    s = leader()
    s.on_appended(3, token="w", required_offset=3, required_acks=-1, min_isr=2)
    done = s.become_follower(2, 6, (1, 2, 3), (1, 2, 3))
    assert [type(d.error) for d in done] == [NotLeaderOrFollower]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["append", "fetch2", "fetch3", "tick", "commit"]),
                          st.integers(0, 50)), max_size=60))
def test_hw_never_moves_backwards_and_never_passes_an_isr_member(ops):
    s = leader(lag=100)
    now = 0
    leo = 0
    fetched = {2: 0, 3: 0}
    pending = None
    for op, n in ops:
        now += n
        before = s.high_watermark
        if op == "append":
            leo += n + 1
            s.on_appended(leo)
        elif op in ("fetch2", "fetch3"):
            r = int(op[-1])
            fetched[r] = min(leo, fetched[r] + n)
            s.on_fetch(r, fetched[r], now)
        elif op == "tick":
            pending = s.tick(now) or pending
        elif op == "commit" and pending is not None:
            s.on_isr_changed(pending.new_isr)
            pending = None
        assert s.high_watermark >= before
        assert s.high_watermark <= leo
        for r in s.isr - {1}:
            assert s.high_watermark <= max(fetched[r], before)

"""Consumers in groups against an embedded broker: split, rebalance, commit, resume."""
from __future__ import annotations

import pytest

import pylog
from pylog import errors

FAST = {"group.min.session.timeout.ms": 100}
MEMBER = dict(session_timeout_ms=1000, heartbeat_interval_ms=50, auto_offset_reset="earliest")


def fill(broker, topic, partitions, per_partition):
    with pylog.Producer(broker, linger_ms=0) as p:
        for i in range(per_partition):
            for part in range(partitions):
                p.send(topic, b"%d-%d" % (part, i), partition=part)


def poll_until(consumers, pred, rounds=400):
    got = {id(c): [] for c in consumers}
    for _ in range(rounds):
        for c in consumers:
            got[id(c)].extend(c.poll(timeout=0.02))
        if pred(got):
            return got
    raise AssertionError(f"condition not reached; assignments {[c.assignment() for c in consumers]}")


@pytest.mark.parametrize("strategy", ["range", "roundrobin", "cooperative-sticky"])
def test_group_splits_partitions_and_each_group_sees_everything(open_broker, strategy):
    broker = open_broker(FAST)
    broker.create_topic("t", 6)
    fill(broker, "t", 6, 20)
    a = pylog.Consumer(broker, group_id="g1", partition_assignment_strategy=[strategy], **MEMBER)
    b = pylog.Consumer(broker, group_id="g1", partition_assignment_strategy=[strategy], **MEMBER)
    a.subscribe(["t"])
    b.subscribe(["t"])

    def split(got):
        return (len(a.assignment()) == 3 and len(b.assignment()) == 3
                and sum(len(v) for v in got.values()) >= 120)

    got = poll_until([a, b], split)
    assert set(a.assignment()).isdisjoint(b.assignment())
    seen = [(r.partition, r.offset) for v in got.values() for r in v]
    assert sorted(seen) == sorted((p, o) for p in range(6) for o in range(20))  # once each
    other = pylog.Consumer(broker, group_id="g2", **MEMBER)
    other.subscribe(["t"])
    got2 = poll_until([other], lambda g: sum(len(v) for v in g.values()) >= 120)
    assert len(next(iter(got2.values()))) == 120
    for c in (a, b, other):
        c.close()


def test_leaving_member_hands_over_and_commits_resume(open_broker):
    broker = open_broker(FAST)
    broker.create_topic("t", 4)
    fill(broker, "t", 4, 10)
    a = pylog.Consumer(broker, group_id="g", enable_auto_commit=False, **MEMBER)
    a.subscribe(["t"])
    poll_until([a], lambda g: sum(len(v) for v in g.values()) >= 40)
    a.commit()
    assert a.committed([("t", p) for p in range(4)]) == {("t", p): 10 for p in range(4)}
    a.close()
    fill(broker, "t", 4, 5)
    b = pylog.Consumer(broker, group_id="g", **MEMBER)
    b.subscribe(["t"])
    got = poll_until([b], lambda g: sum(len(v) for v in g.values()) >= 20)
    offs = sorted(r.offset for r in got[id(b)])
    assert offs == sorted(list(range(10, 15)) * 4)  # resumed after the commit: nothing re-read
    b.close()  # auto-commit on close


def test_committed_offsets_survive_broker_restart(open_broker):
    broker = open_broker(FAST)
    broker.create_topic("t", 2)
    c = pylog.Consumer(broker, group_id="g")
    c.assign([("t", 0), ("t", 1)])
    c.commit({("t", 0): 7, ("t", 1): 3})
    c.close()
    broker.close()
    broker2 = open_broker(FAST)
    c2 = pylog.Consumer(broker2, group_id="g")
    assert c2.committed([("t", 0), ("t", 1), ("t", 9)]) == {("t", 0): 7, ("t", 1): 3, ("t", 9): None}
    assert "__consumer_offsets" in broker2.list_topics(include_internal=True)
    assert broker2.describe_topic("__consumer_offsets").config["cleanup.policy"] == "compact"


def test_evicted_member_partitions_reassigned_and_stale_commit_rejected(open_broker):
    broker = open_broker(FAST)
    broker.create_topic("t", 4)
    a = pylog.Consumer(broker, group_id="g", enable_auto_commit=False, **MEMBER)
    b = pylog.Consumer(broker, group_id="g", enable_auto_commit=False, **MEMBER)
    a.subscribe(["t"])
    b.subscribe(["t"])
    poll_until([a, b], lambda g: len(a.assignment()) == 2 and len(b.assignment()) == 2)
    # b's process "dies": its heartbeats stop without a LeaveGroup.
    old_generation, old_member = b._member.generation, b._member.member_id
    b._member.close(leave=False)
    poll_until([a], lambda g: len(a.assignment()) == 4, rounds=1000)
    # A commit carrying b's stale generation (as a late request from it would) is refused.
    with pytest.raises((errors.UnknownMemberId, errors.IllegalGeneration)):
        broker.groups.commit_offsets("g", old_generation, old_member, {("t", 0): (1, "")})
    assert broker.groups.fetch_offsets("g") == {}
    a.close()


def test_group_lag_in_metrics(open_broker):
    broker = open_broker(FAST)
    broker.create_topic("t", 2)
    fill(broker, "t", 2, 10)
    c = pylog.Consumer(broker, group_id="g")
    c.assign([("t", 0), ("t", 1)])
    c.commit({("t", 0): 4, ("t", 1): 10})
    m = broker.metrics()
    assert m["groups"]["g"]["lag"] == {"t": {0: 6, 1: 0}}
    from pylog.broker.metrics import render_prometheus
    text = render_prometheus(m)
    assert 'pylog_group_lag{group="g",topic="t",partition="0"} 6' in text.splitlines()

"""Preferred leader election on request: an operator (on any broker) writes Kafka's
``/admin/preferred_replica_election`` node, the controller carries it out and answers
under ``/admin/preferred_replica_election_results``, per partition."""
from __future__ import annotations

import pytest

from pylog import errors
from pylog.cluster import LocalCluster
from pylog.cluster.admin import (
    preferred_election_result,
    request_controlled_shutdown,
    request_preferred_election,
)
from pylog.cluster.controller import (
    MAX_ADMIN_RESULTS,
    PREFERRED_ELECTION_PATH,
    PREFERRED_ELECTION_RESULTS_PATH,
)
from tests.cluster.test_controller import Cluster


def imbalanced():
    """Three brokers, topic t (3 partitions, RF 3); broker 1 bounced, so that the
    partitions it prefers are led elsewhere (no automatic rebalance)."""
    c = Cluster({1: "r1", 2: "r2", 3: "r3"}, auto_leader_rebalance_enable=False)
    c.controller.create_topic("t", 3, 3, {}, c.now)
    c.pump()
    c.stop(1)
    c.start(1)
    c.set_isr("t", 0, c.state("t", 0).replicas)  # broker 1 caught up again on t-0 only
    return c


def preferred_of(c, p):
    return c.state("t", p).replicas[0]


def test_a_request_for_some_partitions_is_answered_per_partition():
    c = imbalanced()
    p1 = next(p for p in range(3) if preferred_of(c, p) == 1)
    assert c.state("t", p1).leader != 1
    others = [p for p in range(3) if p != p1]
    wanted = [("t", p1), ("t", others[0]), ("nope", 0), ("t", 9)]
    rid = request_preferred_election(c.store, wanted)
    assert c.store.get(PREFERRED_ELECTION_PATH)[0]["partitions"][0] == {"topic": "t", "partition": p1}
    assert preferred_election_result(c.store, rid) is None  # not carried out yet
    before = c.state("t", p1).leader_epoch
    c.pump()
    result = preferred_election_result(c.store, rid)
    expected_p1 = "NONE" if 1 in c.state("t", p1).isr else "PREFERRED_LEADER_NOT_AVAILABLE"
    assert result[("t", p1)]["error"] == expected_p1
    if expected_p1 == "NONE":
        assert c.state("t", p1).leader == 1 and c.state("t", p1).leader_epoch == before + 1
        assert result[("t", p1)]["leader"] == 1
    assert result[("t", others[0])]["error"] in ("ELECTION_NOT_NEEDED", "PREFERRED_LEADER_NOT_AVAILABLE")
    assert result[("nope", 0)]["error"] == "UNKNOWN_TOPIC_OR_PARTITION"
    assert result[("t", 9)]["error"] == "UNKNOWN_TOPIC_OR_PARTITION"
    assert not c.store.exists(PREFERRED_ELECTION_PATH)  # taken by the controller


def test_preferred_replica_not_in_isr_or_shutting_down_is_not_available():
    c = imbalanced()
    for p in range(3):
        c.set_isr("t", p, c.state("t", p).replicas)  # everybody in sync
    lagging = next(p for p in range(3) if preferred_of(c, p) == 1)
    c.set_isr("t", lagging, [b for b in c.state("t", lagging).isr if b != 1])
    rid = request_preferred_election(c.store)  # every partition
    c.pump()
    result = preferred_election_result(c.store, rid)
    assert set(result) == {("t", 0), ("t", 1), ("t", 2)}
    assert result[("t", lagging)]["error"] == "PREFERRED_LEADER_NOT_AVAILABLE"
    # Shutting down, a preferred replica is not elected either.
    c.set_isr("t", lagging, c.state("t", lagging).replicas)
    request_controlled_shutdown(c.store, 1)
    c.pump()
    rid = request_preferred_election(c.store, [("t", lagging)])
    c.pump()
    assert preferred_election_result(c.store, rid)[("t", lagging)]["error"] == "PREFERRED_LEADER_NOT_AVAILABLE"


def test_requests_made_before_the_controller_looks_are_merged_and_each_answered():
    c = imbalanced()
    p1 = next(p for p in range(3) if preferred_of(c, p) == 1)
    a = request_preferred_election(c.store, [("t", p1)])
    b = request_preferred_election(c.store, [("t", p1), ("u", 0)])
    node = c.store.get(PREFERRED_ELECTION_PATH)[0]
    assert node["partitions"] == [{"topic": "t", "partition": p1}, {"topic": "u", "partition": 0}]
    assert set(node["requests"]) == {a, b}
    everything = request_preferred_election(c.store)
    assert "partitions" not in c.store.get(PREFERRED_ELECTION_PATH)[0]  # absent: every partition
    c.pump()
    assert set(preferred_election_result(c.store, a)) == {("t", p1)}
    assert set(preferred_election_result(c.store, b)) == {("t", p1), ("u", 0)}
    assert set(preferred_election_result(c.store, everything)) == {("t", 0), ("t", 1), ("t", 2)}


def test_a_request_left_without_a_controller_is_carried_out_by_the_next_one():
    c = imbalanced()
    old = c.controller.broker_id
    c.stop(old, pump=False)
    rid = request_preferred_election(c.store)
    c.pump()  # a new controller is elected and takes the waiting request
    assert c.controller.broker_id != old
    assert preferred_election_result(c.store, rid) is not None


def test_bad_requests_and_old_answers():
    c = imbalanced()
    with pytest.raises(errors.InvalidArgument):
        request_preferred_election(c.store, [])
    with pytest.raises(errors.InvalidArgument):
        request_preferred_election(c.store, [("t", -1)])
    with pytest.raises(errors.InvalidArgument):
        request_preferred_election(c.store, ["t-0"])
    first = request_preferred_election(c.store)
    c.pump()
    for _ in range(MAX_ADMIN_RESULTS + 5):
        request_preferred_election(c.store, [("t", 0)])
        c.pump()
    assert len(c.store.children(PREFERRED_ELECTION_RESULTS_PATH)) == MAX_ADMIN_RESULTS
    assert preferred_election_result(c.store, first) is None  # the oldest answers go


def test_local_cluster_elect_leaders(tmp_path):
    cfg = {"zookeeper.session.timeout.ms": 10_000, "auto.leader.rebalance.enable": False,
           "log.index.size.max.bytes": 4096}
    with LocalCluster.open(tmp_path / "c", brokers=3, config=cfg) as cluster:
        cluster.create_topic("t", 3, replication_factor=3)
        preferred = {p.partition: p.replicas[0] for p in cluster.describe_topic("t").partitions}
        cluster.stop_broker(1)
        cluster.start_broker(1)
        cluster.drive(lambda: all(len(p.isr) == 3 for p in cluster.describe_topic("t").partitions), 20)
        moved = [p for p, b in preferred.items() if b == 1]
        result = cluster.elect_leaders()
        assert set(result) == {("t", 0), ("t", 1), ("t", 2)}
        for p in range(3):
            if p in moved:
                assert result[("t", p)] is None
            else:
                assert isinstance(result[("t", p)], errors.ElectionNotNeeded)
        assert {p.partition: p.leader for p in cluster.describe_topic("t").partitions} == preferred
        again = cluster.elect_leaders([("t", 0), ("x", 1)])
        assert isinstance(again[("t", 0)], errors.ElectionNotNeeded)
        assert isinstance(again[("x", 1)], errors.UnknownTopicOrPartition)


def test_answers_go_on_after_a_local_cluster_reopens(tmp_path):
    """metadata.json brings the old answers back; new ones are numbered after them."""
    cfg = {"zookeeper.session.timeout.ms": 10_000, "log.index.size.max.bytes": 4096}
    with LocalCluster.open(tmp_path / "c", brokers=2, config=cfg) as cluster:
        cluster.create_topic("t", 1, replication_factor=2)
        cluster.elect_leaders()
        cluster.elect_leaders([("t", 0)])
    with LocalCluster.open(tmp_path / "c", brokers=2, config=cfg) as cluster:
        assert len(cluster.kernel.store.children(PREFERRED_ELECTION_RESULTS_PATH)) == 2
        assert isinstance(cluster.elect_leaders([("t", 0)])[("t", 0)], errors.ElectionNotNeeded)
        assert cluster.kernel.store.children(PREFERRED_ELECTION_RESULTS_PATH)[-1] == "result-0000000002"

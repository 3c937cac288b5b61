"""Partition reassignment (KIP-455: AlterPartitionReassignments and
ListPartitionReassignments, through ZooKeeper mode's ``/admin/reassign_partitions``): the
controller's procedure on a store, then whole moves on a LocalCluster — the new replicas
copy the data, leadership moves into the target replicas, the old replicas go from disk,
and nothing acknowledged is lost."""
from __future__ import annotations

import threading

import pytest

import pylog
from pylog import errors
from pylog.cluster import LocalCluster, topic_path
from pylog.cluster.admin import (
    list_reassignments,
    reassignment_result,
    request_reassignment,
)
from pylog.cluster.controller import (
    ADDING_REPLICAS,
    REASSIGN_PARTITIONS_PATH,
    REMOVING_REPLICAS,
)
from tests.cluster.test_controller import Cluster


# ------------------------------------------------------------------ the controller's procedure
def four(**kw):
    """Four brokers; topic t, one partition, replication factor 2."""
    c = Cluster({1: "r1", 2: "r2", 3: "r3", 4: "r4"}, auto_leader_rebalance_enable=False, **kw)
    c.controller.create_topic("t", 1, 2, {}, c.now)
    c.pump()
    s = c.state("t")
    spare = [b for b in (1, 2, 3, 4) if b not in s.replicas]
    return c, list(s.replicas), spare


def reassign(c, wanted):
    rid = request_reassignment(c.store, wanted)
    c.pump()
    return reassignment_result(c.store, rid)


def test_start_then_complete_when_every_target_replica_is_in_sync():
    c, (a, b), (x, _) = four()
    target = [x, b]  # a moves to x
    assert reassign(c, {("t", 0): target}) == {("t", 0): {"error": "NONE", "message": ""}}
    assert not c.store.exists(REASSIGN_PARTITIONS_PATH)  # taken
    node = c.store.get(topic_path("t"))[0]
    # Kafka's order: the target replicas, then the original ones not in it.
    assert node["partitions"]["0"] == [x, b, a]
    assert node[ADDING_REPLICAS] == {"0": [x]} and node[REMOVING_REPLICAS] == {"0": [a]}
    assert list_reassignments(c.store) == {("t", 0): {"replicas": [x, b, a], "adding": [x], "removing": [a]}}
    s = c.state("t")
    assert (s.leader, s.leader_epoch, sorted(s.isr)) == (a, 0, sorted([a, b]))  # nothing moves yet
    c.advance(5_000)
    assert list_reassignments(c.store)  # x has not caught up: still in progress
    c.set_isr("t", 0, [a, b, x])  # what the leader writes when x catches up
    s = c.state("t")
    assert c.store.get(topic_path("t"))[0]["partitions"]["0"] == [x, b]
    assert ADDING_REPLICAS not in c.store.get(topic_path("t"))[0]
    assert list_reassignments(c.store) == {}
    # a led, and is not a target replica: x (first target replica in the ISR) leads at a new epoch.
    assert (s.leader, s.leader_epoch, sorted(s.isr)) == (x, 1, sorted([x, b]))
    assert c.controller.metrics()["reassigning_partitions"] == 0


def test_leader_stays_when_it_is_a_target_replica():
    c, (a, b), (x, _) = four()
    reassign(c, {("t", 0): [a, x]})  # b moves to x; a keeps leading
    c.set_isr("t", 0, [a, b, x])
    s = c.state("t")
    assert (s.replicas, s.leader, s.leader_epoch, sorted(s.isr)) == ((a, x), a, 0, sorted([a, x]))


def test_bad_requests_are_refused_before_anything_is_written():
    c, (a, _), _ = four()
    for wanted, error in (({("nope", 0): [a]}, errors.UnknownTopicOrPartition),
                          ({("t", 7): [a]}, errors.UnknownTopicOrPartition),
                          ({("t", 0): []}, errors.InvalidReplicaAssignment),
                          ({("t", 0): [a, a]}, errors.InvalidReplicaAssignment),
                          ({("t", 0): [a, 9]}, errors.InvalidReplicaAssignment),
                          ({("t", 0): [a, "2"]}, errors.InvalidReplicaAssignment),
                          ({("t", 0): None}, errors.NoReassignmentInProgress),
                          ({}, errors.InvalidArgument)):
        with pytest.raises(error):
            request_reassignment(c.store, wanted)
    assert not c.store.exists(REASSIGN_PARTITIONS_PATH)
    assert errors.NoReassignmentInProgress.code == 85 and errors.InvalidReplicaAssignment.code == 39


def test_the_controller_checks_again_when_it_takes_the_request():
    c, (a, b), (x, y) = four()
    rid = request_reassignment(c.store, {("t", 0): [x, y]})
    c.stop(y, pump=False)  # gone before the controller looked
    c.pump()
    assert reassignment_result(c.store, rid)[("t", 0)]["error"] == "INVALID_REPLICA_ASSIGNMENT"
    assert c.state("t").replicas == (a, b)


def test_cancellation_reverts_to_the_original_replicas_at_once():
    c, (a, b), (x, _) = four()
    reassign(c, {("t", 0): [x, b]})
    c.set_isr("t", 0, [a, b])  # x not caught up
    result = reassign(c, {("t", 0): None})
    assert result[("t", 0)]["error"] == "NONE"
    node = c.store.get(topic_path("t"))[0]
    assert node["partitions"]["0"] == [a, b] and ADDING_REPLICAS not in node and REMOVING_REPLICAS not in node
    assert list_reassignments(c.store) == {}
    with pytest.raises(errors.NoReassignmentInProgress):
        request_reassignment(c.store, {("t", 0): None})


def test_cancellation_restores_the_original_order_and_keeps_the_leader():
    c, (a, b), (x, _) = four()
    reassign(c, {("t", 0): [x, b]})
    c.set_isr("t", 0, [a, b, x])  # x caught up: the reassignment completes, x leads
    assert c.state("t").replicas == (x, b) and c.state("t").leader == x
    reassign(c, {("t", 0): [b, a]})  # another one: a back, in a new order
    c.set_isr("t", 0, [x, b])  # a not yet in sync
    assert list_reassignments(c.store)[("t", 0)] == {"replicas": [b, a, x], "adding": [a], "removing": [x]}
    reassign(c, {("t", 0): None})  # cancel: [x, b] exactly as before, x still leading
    s = c.state("t")
    assert (s.replicas, s.leader, sorted(s.isr)) == ((x, b), x, sorted([x, b]))


def test_a_new_target_replaces_the_one_in_progress_and_drops_its_new_replicas():
    c, (a, b), (x, y) = four()
    reassign(c, {("t", 0): [x, b]})
    c.set_isr("t", 0, [a, b])
    reassign(c, {("t", 0): [y, b]})
    node = c.store.get(topic_path("t"))[0]
    assert node["partitions"]["0"] == [y, b, a]  # x is no longer a replica at all
    assert node[ADDING_REPLICAS] == {"0": [y]} and node[REMOVING_REPLICAS] == {"0": [a]}


def test_dropping_a_leading_added_replica_moves_leadership_first():
    c, (a, b), (x, y) = four()
    reassign(c, {("t", 0): [x, y]})
    c.set_isr("t", 0, [a, b, x])  # x caught up (y not)
    c.stop(a, b)  # the original replicas die: x (in the ISR) is elected
    s = c.state("t")
    assert s.leader == x
    c.start(a)
    c.start(b)
    c.set_isr("t", 0, [x, a])
    # The new target drops x, its leader: a (in the ISR) takes over first.
    assert reassign(c, {("t", 0): [a, b]})[("t", 0)]["error"] == "NONE"
    s = c.state("t")
    assert s.leader == a and x not in s.isr and s.replicas == (a, b)


def test_a_new_controller_completes_a_reassignment_started_by_the_old_one():
    c, (a, b), _ = four()
    ctl = c.controller.broker_id
    others = [br for br in (1, 2, 3, 4) if br != ctl]
    target = next([p, q] for p in others for q in others if p != q and sorted([p, q]) != sorted([a, b]))
    reassign(c, {("t", 0): target})
    c.stop(ctl)  # a new controller takes over, with the reassignment in progress in the topic node
    assert c.controller.broker_id != ctl and list_reassignments(c.store)
    c.set_isr("t", 0, sorted(set(c.state("t").isr) | set(target)))
    s = c.state("t")
    assert list(s.replicas) == target and s.leader in target and sorted(s.isr) == sorted(target)


def test_create_partitions_during_a_reassignment_keeps_the_replication_factor():
    c, (_, b), (x, _) = four()
    reassign(c, {("t", 0): [x, b]})
    added = c.controller.create_partitions("t", 3, c.now)
    assert [len(r) for r in added] == [2, 2]


# ------------------------------------------------------------------ LocalCluster
CFG = {"zookeeper.session.timeout.ms": 10_000, "log.index.size.max.bytes": 4096,
       "auto.leader.rebalance.enable": False, "replica.lag.time.max.ms": 10_000}


def _replica(cluster, b, topic, p):
    r = cluster.kernel.nodes[b].replicas.get((topic, p))
    return None if r is None else r.partition


def _all_bytes(part):
    out, off = [], part.log_start_offset
    while off < part.log_end_offset:
        batches = part.read(off, 1 << 20, to_log_end=True)
        out += [bytes(b.buffer) for b in batches]
        off = batches[-1].next_offset
    return b"".join(out)


def _four_brokers_topic_on_three(tmp_path):
    cluster = LocalCluster.open(tmp_path / "c", brokers=4, config=CFG)
    cluster.stop_broker(4)  # the topic goes on brokers 1-3
    cluster.create_topic("t", 3, replication_factor=2, config={"min.insync.replicas": 2})
    cluster.start_broker(4)
    return cluster


def test_local_cluster_adds_a_broker_share_without_losing_anything(tmp_path):
    cluster = _four_brokers_topic_on_three(tmp_path)
    try:
        before = {r.partition: r for r in cluster.describe_topic("t").partitions}
        assert all(4 not in r.replicas for r in before.values())
        acked = []
        with pylog.Producer(cluster, acks="all", linger_ms=0) as p:
            for f in [p.send("t", b"a%04d" % i + b"." * 200, partition=i % 3) for i in range(600)]:
                acked.append(f.result(timeout=30))
        # Partitions 0 and 1 move one replica each to broker 4: 0 replaces its leader.
        moves = {("t", 0): [4, before[0].replicas[1]], ("t", 1): [before[1].replicas[0], 4]}
        stop = threading.Event()
        during = []

        def produce():
            with pylog.Producer(cluster, acks="all", linger_ms=0) as p:
                i = 0
                while not stop.is_set():
                    during.append(p.send("t", b"b%04d" % i, partition=i % 3))
                    i += 1
                    if i % 20 == 0:
                        p.flush()
        t = threading.Thread(target=produce)
        t.start()
        try:
            assert cluster.alter_partition_reassignments(moves) == {("t", 0): None, ("t", 1): None}
            assert cluster.drive(lambda: not cluster.list_partition_reassignments(), 30)
        finally:
            stop.set()
            t.join(60)
        acked += [f.result(timeout=30) for f in during]
        after = {r.partition: r for r in cluster.describe_topic("t").partitions}
        assert after[0].replicas == moves[("t", 0)] and after[1].replicas == moves[("t", 1)]
        assert after[2].replicas == before[2].replicas
        # Leadership moved off broker before[0].leader (not a target replica): epoch up.
        assert after[0].leader in moves[("t", 0)] and after[0].leader_epoch == before[0].leader_epoch + 1
        assert after[1].leader == before[1].leader and after[1].leader_epoch == before[1].leader_epoch
        assert cluster.drive(lambda: all(sorted(r.isr) == sorted(r.replicas)
                                         for r in cluster.describe_topic("t").partitions), 30)
        for p, (_, gone) in ((0, (None, before[0].replicas[0])), (1, (None, before[1].replicas[1]))):
            assert not (cluster.root / f"broker-{gone}" / f"t-{p}").exists()  # old replica removed
            assert _replica(cluster, gone, "t", p) is None
            new = _replica(cluster, 4, "t", p)
            others = [b for b in after[p].replicas if b != 4]
            assert cluster.drive(lambda p=p, new=new, others=others: all(
                new.log_end_offset == _replica(cluster, b, "t", p).log_end_offset for b in others), 30)
            assert _all_bytes(new) == _all_bytes(_replica(cluster, others[0], "t", p))
        consumed = {}
        c = pylog.Consumer(cluster, auto_offset_reset="earliest")
        c.assign([("t", 0), ("t", 1), ("t", 2)])
        for _ in range(300):
            for rec in c.poll(timeout=0.05, max_records=10_000):
                consumed[(rec.partition, rec.offset)] = rec.value
            if len(consumed) >= len(acked):
                break
        for m in acked:  # nothing acknowledged was lost
            assert (m.partition, m.offset) in consumed
        assert cluster.metrics()["reassigning_partitions"] == 0
    finally:
        cluster.close()


def test_local_cluster_cancellation_and_bad_requests(tmp_path):
    cluster = _four_brokers_topic_on_three(tmp_path)
    try:
        r0 = cluster.describe_topic("t").partitions[0]
        with pylog.Producer(cluster, acks="all") as p:
            for i in range(50):
                p.send("t", b"v%d" % i, partition=0)
        cluster.pause_broker(4)  # it cannot copy: the reassignment stays in progress
        res = cluster.alter_partition_reassignments({("t", 0): [4, r0.replicas[1]], ("t", 9): [1],
                                                     ("t", 1): [1, 1], ("t", 2): None, ("x", 0): [1]},
                                                    throttle_bytes_per_s=1 << 20)
        assert res[("t", 0)] is None
        overrides = cluster.describe_topic("t").overrides
        assert overrides["follower.replication.throttled.replicas"] == "0:4"
        assert overrides["leader.replication.throttled.replicas"] == ",".join(f"0:{b}" for b in sorted(r0.replicas))
        assert isinstance(res[("t", 9)], errors.UnknownTopicOrPartition)
        assert isinstance(res[("x", 0)], errors.UnknownTopicOrPartition)
        assert isinstance(res[("t", 1)], errors.InvalidReplicaAssignment)
        assert isinstance(res[("t", 2)], errors.NoReassignmentInProgress)
        assert cluster.list_partition_reassignments() == {
            ("t", 0): {"replicas": [4, r0.replicas[1], r0.replicas[0]], "adding": [4], "removing": [r0.replicas[0]]}}
        assert cluster.alter_partition_reassignments({("t", 0): None}) == {("t", 0): None}
        assert cluster.list_partition_reassignments() == {}
        row = cluster.describe_topic("t").partitions[0]
        assert (row.replicas, row.leader, row.leader_epoch) == (r0.replicas, r0.leader, r0.leader_epoch)
        assert cluster.describe_topic("t").overrides == {"min.insync.replicas": 2}  # the throttle went too
        cluster.resume_broker(4)
        assert cluster.drive(lambda: _replica(cluster, 4, "t", 0) is None, 10)
        assert not (cluster.root / "broker-4" / "t-0").exists()
    finally:
        cluster.close()


def test_a_broker_stopped_while_its_replica_moved_away_deletes_it_at_start(tmp_path):
    cluster = _four_brokers_topic_on_three(tmp_path)
    try:
        r0 = cluster.describe_topic("t").partitions[0]
        leader, follower = r0.leader, next(b for b in r0.replicas if b != r0.leader)
        with pylog.Producer(cluster, acks="all") as p:
            p.send("t", b"x", partition=0).result(timeout=30)
        cluster.stop_broker(follower)
        assert cluster.alter_partition_reassignments({("t", 0): [leader, 4]}) == {("t", 0): None}
        assert cluster.drive(lambda: not cluster.list_partition_reassignments(), 30)
        assert (cluster.root / f"broker-{follower}" / "t-0").exists()  # it was not running
        cluster.start_broker(follower)
        assert not (cluster.root / f"broker-{follower}" / "t-0").exists()
        assert (follower, "t", 0) not in [(n.id, *tp) for n in cluster.kernel.nodes.values() for tp in n.replicas]
    finally:
        cluster.close()
    with LocalCluster.open(tmp_path / "c", brokers=4, config=CFG) as again:  # the new assignment persisted
        assert again.describe_topic("t").partitions[0].replicas == [leader, 4]

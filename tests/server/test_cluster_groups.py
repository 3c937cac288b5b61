"""Consumer groups on a cluster of `pylog serve` brokers (three ClusterNode + KafkaServer
pairs in this process over one in-memory metadata store; tests/server/inproc_cluster.py).

Kafka's rule is checked end to end: a group's coordinator is the leader of its
``__consumer_offsets`` partition; FindCoordinator (v0-v4) names that broker and nothing
else; the other brokers answer NOT_COORDINATOR for the group; ``__consumer_offsets`` is
created with offsets.topic.replication.factor replicas only once enough brokers are up;
and a confluent-kafka group survives the loss of its coordinator's broker with every
offset committed before, no record committed re-delivered.
"""
from __future__ import annotations

import logging
from typing import Dict, List, Optional, Tuple

import pytest
from confluent_kafka import Consumer, KafkaException, Producer

from pylog.broker.group import GroupState
from pylog.broker.offsets_topic import OFFSETS_TOPIC, partition_for_group
from pylog.protocol import ApiKey
from tests.server.inproc_cluster import InProcessCluster, RunningBroker, wait_until
from tests.server.wire import call

NOT_COORDINATOR = 16
COORDINATOR_NOT_AVAILABLE = 15
PARTITIONS = 6  # offsets.topic.num.partitions in FAST_CLUSTER


@pytest.fixture
def cluster(tmp_path):
    """Three brokers (r1..r3); all stopped at teardown, also when the test failed."""
    c = InProcessCluster(tmp_path)
    try:
        for i in (1, 2, 3):
            c.start(i)
        yield c
    finally:
        c.close()


def find_coordinator(bootstrap: str, group: str, version: int = 3) -> Tuple[int, int, str, int]:
    """(error code, node id, host, port) FindCoordinator answers for ``group``."""
    body = {"key": group, "key_type": 0, "coordinator_keys": [group]}
    resp = call(bootstrap, ApiKey.FIND_COORDINATOR, version, body)
    row = resp.coordinators[0] if version >= 4 else resp
    return int(row.error_code), int(row.node_id), row.host, int(row.port)


def coordinator_of(cluster: InProcessCluster, group: str) -> RunningBroker:
    """The broker FindCoordinator names once there is one (asking creates the topic)."""
    bootstrap = cluster.running()[0].bootstrap

    def ask() -> Optional[int]:
        code, node, _, _ = find_coordinator(bootstrap, group)
        assert code in (0, COORDINATOR_NOT_AVAILABLE), code
        return node if code == 0 else None

    return cluster.brokers[wait_until(ask, f"a coordinator for group {group!r}")]


def offsets_leaders(broker: RunningBroker) -> Dict[int, int]:
    return {p.partition: p.leader for p in broker.node.describe_topic(OFFSETS_TOPIC).partitions}


def group_on(partition: int, prefix: str) -> str:
    return next(f"{prefix}-{i}" for i in range(100_000) if partition_for_group(f"{prefix}-{i}", PARTITIONS) == partition)


# ------------------------------------------------------------------ FindCoordinator
def test_find_coordinator_names_the_leader_of_the_groups_offsets_partition(cluster):
    """Every broker, every version: the leader of the group's partition with its
    registered address; before the topic exists COORDINATOR_NOT_AVAILABLE (and the
    first ask creates it, with offsets.topic.replication.factor=3 replicas)."""
    first = cluster.brokers[1].bootstrap
    answers: List[Tuple[int, int, str, int]] = []
    wait_until(lambda: answers.append(find_coordinator(first, "g")) or answers[-1][0] == 0, "a coordinator")
    assert {a[0] for a in answers[:-1]} <= {COORDINATOR_NOT_AVAILABLE}
    assert all(a[1] == -1 for a in answers[:-1])  # never a broker before there is one
    d = cluster.brokers[2].node.describe_topic(OFFSETS_TOPIC)
    assert len(d.partitions) == PARTITIONS and d.internal
    assert all(len(p.replicas) == 3 for p in d.partitions) and d.config["cleanup.policy"] == "compact"
    leaders = offsets_leaders(cluster.brokers[1])
    assert len(set(leaders.values())) == 3  # spread: every broker coordinates some groups
    groups = [group_on(p, "find") for p in range(PARTITIONS)]
    for b in cluster.running():
        for version in (0, 1, 2, 3):
            for g in groups:
                want = cluster.brokers[leaders[partition_for_group(g, PARTITIONS)]]
                assert find_coordinator(b.bootstrap, g, version) == (0, want.broker_id, "127.0.0.1", want.port)
        resp = call(b.bootstrap, ApiKey.FIND_COORDINATOR, 4, {"key_type": 0, "coordinator_keys": groups})
        rows = {r.key: (int(r.error_code), int(r.node_id), int(r.port)) for r in resp.coordinators}
        for g in groups:
            want = cluster.brokers[leaders[partition_for_group(g, PARTITIONS)]]
            assert rows[g] == (0, want.broker_id, want.port)
        # each broker's coordinator serves exactly the partitions it leads
        mine = {p for p, leader in leaders.items() if leader == b.broker_id}
        wait_until(lambda: b.node.groups.owned_partitions == mine, f"broker {b.broker_id} to load {mine}")


def test_offsets_topic_waits_for_replication_factor_brokers(tmp_path, caplog):
    """Kafka's offsets.topic.replication.factor (default 3): with two brokers up the topic
    is not created and FindCoordinator answers COORDINATOR_NOT_AVAILABLE; once the third
    registers, the next FindCoordinator creates it with three replicas."""
    caplog.set_level(logging.WARNING, logger="pylog.cluster")
    with InProcessCluster(tmp_path) as c:
        c.start(1)
        c.start(2)
        assert find_coordinator(c.brokers[1].bootstrap, "g")[0] == COORDINATOR_NOT_AVAILABLE
        wait_until(lambda: any("offsets.topic.replication.factor=3" in r.getMessage() for r in caplog.records),
                   "the refused creation")
        for b in c.running():
            assert OFFSETS_TOPIC not in b.node.list_topics(include_internal=True)
            assert find_coordinator(b.bootstrap, "g")[:2] == (COORDINATOR_NOT_AVAILABLE, -1)
        c.start(3)
        coord = coordinator_of(c, "g")
        d = coord.node.describe_topic(OFFSETS_TOPIC)
        assert all(sorted(p.replicas) == [1, 2, 3] for p in d.partitions)


# ------------------------------------------------------------------ NOT_COORDINATOR
def test_brokers_answer_not_coordinator_for_groups_they_do_not_coordinate(cluster):
    group = "not-mine"
    coord = coordinator_of(cluster, group)
    wait_until(lambda: partition_for_group(group, PARTITIONS) in coord.node.groups.owned_partitions,
               "the coordinator to load the group's partition")
    join = {"group_id": group, "session_timeout": 300_000, "rebalance_timeout": 300_000, "member_id": "",
            "group_instance_id": None, "protocol_type": "consumer", "reason": None,
            "protocols": [{"name": "range", "metadata": b""}]}
    joined = call(coord.bootstrap, ApiKey.JOIN_GROUP, 5, join)
    assert joined.error_code == 0 and joined.generation_id == 1
    member, gen = joined.member_id, joined.generation_id
    offsets = [{"name": "t", "partitions": [{"partition_index": 0, "committed_offset": 3,
                                             "committed_leader_epoch": -1, "committed_metadata": ""}]}]
    for other in cluster.running():
        if other is coord:
            continue
        b = other.bootstrap
        assert call(b, ApiKey.JOIN_GROUP, 5, join).error_code == NOT_COORDINATOR
        assert call(b, ApiKey.SYNC_GROUP, 3, {"group_id": group, "generation_id": gen, "member_id": member,
                                               "group_instance_id": None, "assignments": []}).error_code \
            == NOT_COORDINATOR
        assert call(b, ApiKey.HEARTBEAT, 3, {"group_id": group, "generation_id": gen, "member_id": member,
                                              "group_instance_id": None}).error_code == NOT_COORDINATOR
        commit = call(b, ApiKey.OFFSET_COMMIT, 8, {"group_id": group, "generation_id_or_member_epoch": gen,
                                                    "member_id": member, "group_instance_id": None,
                                                    "topics": offsets})
        assert commit.topics[0].partitions[0].error_code == NOT_COORDINATOR
        fetch = call(b, ApiKey.OFFSET_FETCH, 7, {"group_id": group, "topics": None, "require_stable": False})
        assert fetch.error_code == NOT_COORDINATOR
        fetch = call(b, ApiKey.OFFSET_FETCH, 8, {"groups": [{"group_id": group, "topics": None}],
                                                  "require_stable": False})
        assert fetch.groups[0].error_code == NOT_COORDINATOR
        fetch = call(b, ApiKey.OFFSET_FETCH, 1, {"group_id": group, "topics": [
            {"name": "t", "partition_indexes": [0]}]})
        assert fetch.topics[0].partitions[0].error_code == NOT_COORDINATOR
        described = call(b, ApiKey.DESCRIBE_GROUPS, 5, {"groups": [group], "include_authorized_operations": False})
        assert described.groups[0].error_code == NOT_COORDINATOR
        left = call(b, ApiKey.LEAVE_GROUP, 3, {"group_id": group, "members": [
            {"member_id": member, "group_instance_id": None}]})
        assert left.error_code == NOT_COORDINATOR
        deleted = call(b, ApiKey.DELETE_GROUPS, 2, {"groups_names": [group]})
        assert deleted.results[0].error_code == NOT_COORDINATOR
        listed = call(b, ApiKey.LIST_GROUPS, 3, {})
        assert group not in {g.group_id for g in listed.groups}
    # the coordinator itself still has the member, untouched by the others' refusals
    assert call(coord.bootstrap, ApiKey.HEARTBEAT, 3, {"group_id": group, "generation_id": gen, "member_id": member,
                                                        "group_instance_id": None}).error_code in (0, 27)
    assert coord.node.groups.describe_group(group).members[0].member_id == member


# ------------------------------------------------------------------ failover
def _consume(consumers: List[Consumer], into: List[Tuple[int, int]], commit: bool) -> None:
    """One round: each consumer polls once; with ``commit``, commits what it consumed
    (a failed commit during a rebalance is retried by a later round)."""
    for c in consumers:
        msgs = c.consume(100, 0.1)
        for m in msgs:
            assert m.error() is None, m.error()
            into.append((m.partition(), m.offset()))
        if commit and msgs:
            try:
                c.commit(asynchronous=False)
            except KafkaException:
                pass


def _committed(bootstrap: str, group: str) -> Dict[int, int]:
    """The group's committed offsets of topic t as its coordinator at ``bootstrap``
    answers (OffsetFetch v7, the whole group), or {} when it answers an error."""
    resp = call(bootstrap, ApiKey.OFFSET_FETCH, 7, {"group_id": group, "topics": None, "require_stable": False})
    if resp.error_code:
        return {}
    return {int(p.partition_index): int(p.committed_offset) for t in resp.topics if t.name == "t"
            for p in t.partitions}


def _produce(bootstrap: str, per_partition: int) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5, "enable.idempotence": True})
    for i in range(per_partition * 6):
        p.produce("t", b"v%d" % i, partition=i % 6)
    assert p.flush(60) == 0


def test_consumer_group_moves_to_the_new_coordinator_with_its_committed_offsets(cluster):
    """Two confluent-kafka members on a 6-partition RF=3 topic consume and commit
    everything; the coordinator's broker is closed (its registration goes, the controller
    moves its leaderships); more records come; the group goes on at the new
    coordinator, which has every offset committed before: no committed record comes
    again, every new one is consumed, and the new commits land there."""
    group = "failover"
    first = cluster.brokers[1].node
    first.create_topic("t", 6, 3, {"min.insync.replicas": 2})
    _produce(cluster.bootstrap, 50)
    old = coordinator_of(cluster, group)
    conf = {"bootstrap.servers": cluster.bootstrap, "group.id": group, "auto.offset.reset": "earliest",
            "enable.auto.commit": False, "session.timeout.ms": 6000, "heartbeat.interval.ms": 500}
    consumers = [Consumer(dict(conf, **{"client.id": f"member-{i}"})) for i in range(2)]
    try:
        for c in consumers:
            c.subscribe(["t"])
        before: List[Tuple[int, int]] = []
        everything = {p: 50 for p in range(6)}
        wait_until(lambda: _consume(consumers, before, True) or _committed(old.bootstrap, group) == everything,
                   "the group to consume and commit the first 300 records")
        assert {(p, o) for p in range(6) for o in range(50)} <= set(before)
        wait_until(lambda: len(old.node.groups.describe_group(group).members) == 2, "both members at the coordinator")

        old.stop()
        new = coordinator_of(cluster, group)
        assert new is not old
        for b in cluster.running():  # every broker left names the new one
            assert find_coordinator(b.bootstrap, group)[:2] == (0, new.broker_id)
        # the offsets committed at the old coordinator are readable at the new one
        wait_until(lambda: _committed(new.bootstrap, group) == everything, "the offsets at the new coordinator")

        _produce(cluster.bootstrap, 50)
        after: List[Tuple[int, int]] = []
        wait_until(lambda: _consume(consumers, after, False)
                   or {(p, o) for p in range(6) for o in range(50, 100)} <= set(after),
                   "the group to consume the 300 new records")
        redelivered = sorted((p, o) for p, o in after if o < 50)
        assert redelivered == [], f"records committed before the failover came again: {redelivered[:10]}"
        done = {p: 100 for p in range(6)}

        def commit_all() -> bool:
            _consume(consumers, after, False)
            for c in consumers:
                try:
                    c.commit(asynchronous=False)
                except KafkaException:
                    pass
            return _committed(new.bootstrap, group) == done

        wait_until(commit_all, "the group's commits at the new coordinator")
        assert new.node.groups.describe_group(group).state in (GroupState.STABLE, GroupState.PREPARING_REBALANCE,
                                                                GroupState.COMPLETING_REBALANCE)
        wait_until(lambda: len(new.node.groups.describe_group(group).members) == 2, "both members at the new one")
    finally:
        for c in consumers:
            c.close()

"""The broker contract (pylog.broker.interface.BrokerInterface), checked the same way on
the embedded Broker and on a 3-broker LocalCluster: signatures, topics, partitions,
configuration changes, the data plane, DeleteRecords, OffsetsForLeaderEpoch, data
listeners, groups, identity, and the Producer/Consumer on top."""
from __future__ import annotations

import inspect
import re
import typing

import pytest

import pylog
from pylog import errors
from pylog.broker import BrokerInterface, FetchResult, NodeInfo, PartitionInfo, TopicDescription
from pylog.broker.broker import ZERO_TOPIC_ID
from pylog.cluster import LocalCluster
from pylog.records import build_batch, iter_records

from tests.conftest import SMALL

#: Small files for both; the cluster's failure detection is quick.
BROKER_CONFIG = dict(SMALL, **{"log.segment.bytes": 1 << 16})
CLUSTER_CONFIG = {"replica.lag.time.max.ms": 2000, "zookeeper.session.timeout.ms": 1000,
                  "log.segment.bytes": 1 << 16, "log.index.size.max.bytes": 4096,
                  "offsets.topic.num.partitions": 3}
HEX32 = re.compile(r"^[0-9a-f]{32}$")


@pytest.fixture(params=["broker", "cluster"])
def opener(request, tmp_path):
    """opener() opens (or reopens) the implementation under test on one directory."""
    opened = []

    def _open():
        if request.param == "broker":
            b = pylog.Broker.open(tmp_path / "broker", BROKER_CONFIG, background_threads=False)
        else:
            b = LocalCluster.open(tmp_path / "cluster", brokers=3, racks=["r1", "r2", "r3"],
                                  config=CLUSTER_CONFIG)
        opened.append(b)
        return b

    yield _open
    for b in opened:
        b.close()


@pytest.fixture
def b(opener):
    return opener()


def rf(b) -> int:
    """The largest replication factor ``b`` allows: every broker holds a replica."""
    return len(b.nodes())


def batch(*values, keys=None):
    return build_batch(list(values), keys=keys)


def values_of(b, topic, partition, start=0):
    out, off = [], start
    while True:
        res = b.fetch(topic, partition, off)
        if not res.batches:
            return out
        for bt in res.batches:
            out.extend(r.value for r in iter_records(bt.buffer) if r.offset >= off)
        off = res.batches[-1].next_offset


# ------------------------------------------------------------------ the Protocol
def _protocol_members():
    return sorted(n for n in set(vars(BrokerInterface)) | set(BrokerInterface.__annotations__)
                  if not n.startswith("_"))


def test_every_protocol_member_is_there_with_a_compatible_signature(b):
    assert isinstance(b, BrokerInterface)
    members = _protocol_members()
    assert {"produce_async", "drive", "create_partitions", "alter_topic_config", "offset_for_leader_epoch",
            "delete_records", "add_data_listener", "pipelined_produce", "cluster_id"} <= set(members)
    for name in members:
        assert hasattr(b, name), name
        spec = inspect.getattr_static(BrokerInterface, name, None)
        if spec is None:  # a data attribute (pipelined_produce: bool)
            assert isinstance(getattr(b, name), typing.get_type_hints(BrokerInterface)[name]), name
            continue
        if isinstance(spec, property):
            getattr(b, name)  # readable
            continue
        want = inspect.signature(spec)
        have = inspect.signature(getattr(type(b), name))
        params = dict(have.parameters)
        for p in want.parameters.values():
            assert p.name in params, f"{type(b).__name__}.{name} lacks parameter {p.name}"
            q = params.pop(p.name)
            assert q.kind == p.kind, f"{type(b).__name__}.{name}({p.name}): {q.kind} instead of {p.kind}"
            assert q.default == p.default, f"{type(b).__name__}.{name}({p.name}) defaults to {q.default!r}"
        for q in params.values():  # anything more must be optional
            assert q.default is not inspect.Parameter.empty or q.kind in (q.VAR_POSITIONAL, q.VAR_KEYWORD), \
                f"{type(b).__name__}.{name} has an extra required parameter {q.name}"


def test_identity_is_stable_across_reopen(opener):
    b = opener()
    cid = b.cluster_id
    assert HEX32.match(cid)
    nodes = b.nodes()
    assert nodes and all(isinstance(n, NodeInfo) for n in nodes)
    assert b.controller_id in [n.node_id for n in nodes]
    b.close()
    b2 = opener()
    assert b2.cluster_id == cid
    assert [n.node_id for n in b2.nodes()] == [n.node_id for n in nodes]


# ------------------------------------------------------------------ topics
def test_create_describe_list_delete(b):
    d = b.create_topic("orders", 3, rf(b), {"retention.ms": 3_600_000}, validate_only=True)
    assert isinstance(d, TopicDescription) and d.topic_id == ZERO_TOPIC_ID and len(d.partitions) == 3
    assert d.config["retention.ms"] == 3_600_000
    assert b.list_topics() == []
    with pytest.raises(errors.UnknownTopicOrPartition):
        b.describe_topic("orders")
    d = b.create_topic("orders", 3, rf(b), {"retention.ms": 3_600_000})
    assert HEX32.match(d.topic_id) and d.overrides == {"retention.ms": 3_600_000} and not d.internal
    assert [p.partition for p in d.partitions] == [0, 1, 2]
    for p in d.partitions:
        assert isinstance(p, PartitionInfo) and not p.offline and p.leader in p.replicas and p.losses == ()
        assert len(p.replicas) == rf(b) and sorted(p.isr) == sorted(p.replicas)
        assert (p.log_start_offset, p.log_end_offset, p.high_watermark) == (0, 0, 0)
    assert b.describe_topic("orders") == d
    b.create_topic("audit")
    assert b.list_topics() == ["audit", "orders"] and b.partitions_for("orders") == 3
    with pytest.raises(errors.TopicAlreadyExists):
        b.create_topic("orders")
    with pytest.raises(errors.TopicAlreadyExists):
        b.create_topic("orders", validate_only=True)
    with pytest.raises(errors.InvalidTopic):
        b.create_topic("no spaces")
    with pytest.raises(errors.InvalidPartitions):
        b.create_topic("zero", 0)
    with pytest.raises(errors.InvalidReplicationFactor):
        b.create_topic("wide", 1, rf(b) + 1)
    with pytest.raises(errors.InvalidConfig):
        b.create_topic("bad", 1, config={"no.such.setting": 1}, validate_only=True)
    b.delete_topic("orders")
    assert b.list_topics() == ["audit"]
    with pytest.raises(errors.UnknownTopicOrPartition):
        b.describe_topic("orders")
    with pytest.raises(errors.UnknownTopicOrPartition):
        b.delete_topic("orders")
    with pytest.raises(errors.InvalidTopic):
        b.delete_topic("__consumer_offsets")
    again = b.create_topic("orders", 1, rf(b))  # a new topic: new id, empty
    assert again.topic_id != d.topic_id and again.partitions[0].log_end_offset == 0


def test_create_partitions(b):
    b.create_topic("t", 2, rf(b))
    b.produce("t", 1, batch(b"one"))
    d = b.create_partitions("t", 4, validate_only=True)
    assert len(d.partitions) == 4 and len(b.describe_topic("t").partitions) == 2
    d = b.create_partitions("t", 4)
    assert [p.partition for p in d.partitions] == [0, 1, 2, 3] and b.partitions_for("t") == 4
    assert all(not p.offline and len(p.replicas) == rf(b) for p in d.partitions)
    assert d.partitions[1].log_end_offset == 1 and d.partitions[3].log_end_offset == 0
    assert b.produce("t", 3, batch(b"new")).base_offset == 0
    assert values_of(b, "t", 3) == [b"new"] and values_of(b, "t", 1) == [b"one"]
    for count in (4, 3, 0):
        with pytest.raises(errors.InvalidPartitions):
            b.create_partitions("t", count)
    with pytest.raises(errors.InvalidPartitions):
        b.create_partitions("t", 10**6)
    with pytest.raises(errors.UnknownTopicOrPartition):
        b.create_partitions("nope", 5)
    assert len(b.describe_topic("t").partitions) == 4


# ------------------------------------------------------------------ configuration
def test_alter_topic_config_set_delete_replace_validate(b):
    default_retention = b.create_topic("plain").config["retention.ms"]
    b.create_topic("t", 1, rf(b), {"retention.ms": 100_000})
    d = b.alter_topic_config("t", {"max.message.bytes": 5000})
    assert d.overrides == {"retention.ms": 100_000, "max.message.bytes": 5000}
    assert d.config["max.message.bytes"] == 5000
    d = b.alter_topic_config("t", {"retention.ms": None})
    assert d.overrides == {"max.message.bytes": 5000} and d.config["retention.ms"] == default_retention
    d = b.alter_topic_config("t", {"cleanup.policy": "compact", "segment.ms": None}, replace=True)
    assert d.overrides == {"cleanup.policy": "compact"} and d.config["max.message.bytes"] != 5000
    d = b.alter_topic_config("t", {"min.cleanable.dirty.ratio": 0.2}, validate_only=True)
    assert d.overrides == {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": 0.2}
    assert b.describe_topic("t").overrides == {"cleanup.policy": "compact"}
    before = b.describe_topic("t")
    with pytest.raises(errors.InvalidConfig, match="no.such"):
        b.alter_topic_config("t", {"retention.ms": 5, "no.such": 1})
    with pytest.raises(errors.InvalidConfig, match="segment.bytes"):
        b.alter_topic_config("t", {"retention.ms": 5, "segment.bytes": 1})
    with pytest.raises(errors.InvalidConfig, match="no.such"):
        b.alter_topic_config("t", {"no.such": None})
    with pytest.raises(errors.InvalidConfig):
        b.alter_topic_config("t", "retention.ms=5")
    assert b.describe_topic("t") == before
    with pytest.raises(errors.UnknownTopicOrPartition):
        b.alter_topic_config("nope", {"retention.ms": 5})


def test_altered_settings_take_effect_on_the_open_logs(b):
    b.create_topic("t", 1, rf(b))
    b.produce("t", 0, batch(b"x" * 3000))
    b.alter_topic_config("t", {"max.message.bytes": 2000})
    with pytest.raises(errors.RecordTooLarge):
        b.produce("t", 0, batch(b"x" * 3000))
    # Small segments and a small retention.bytes: old segments go at the next check.
    b.alter_topic_config("t", {"segment.bytes": 1024, "retention.bytes": 1024}, replace=True)
    for i in range(30):
        b.produce("t", 0, batch(b"%03d" % i + b"y" * 200))
    b.run_housekeeping(force=True)
    p = b.describe_topic("t").partitions[0]
    assert p.log_end_offset == 31 and p.log_start_offset > 20 and p.size_bytes <= 2048
    assert values_of(b, "t", 0, p.log_start_offset)[-1].startswith(b"029")


# ------------------------------------------------------------------ data plane
def test_produce_produce_async_fetch_list_offsets(b):
    b.create_topic("t", 2, rf(b))
    r = b.produce("t", 0, batch(b"a", b"b"), acks="all")
    assert (r.base_offset, r.last_offset, r.records) == (0, 1, 2)
    answers = []
    b.produce_async("t", 0, batch(b"c"), acks=-1, callback=lambda e, res: answers.append((e, res)))
    assert b.drive(lambda: len(answers) == 1, 30.0)
    assert answers[0][0] is None and answers[0][1].base_offset == 2
    b.produce_async("t", 7, batch(b"z"), callback=lambda e, res: answers.append((e, res)))  # never raises
    b.produce_async("t", 0, batch(b"z"), acks=2, callback=lambda e, res: answers.append((e, res)))
    assert b.drive(lambda: len(answers) == 3, 30.0)
    assert isinstance(answers[1][0], errors.UnknownTopicOrPartition) and answers[1][1] is None
    assert isinstance(answers[2][0], errors.InvalidRequiredAcks)
    res = b.fetch("t", 0, 1)
    assert isinstance(res, FetchResult) and (res.high_watermark, res.log_start_offset, res.log_end_offset) == (3, 0, 3)
    assert values_of(b, "t", 0, 1) == [b"b", b"c"]
    assert b.fetch("t", 0, 3).batches == []
    with pytest.raises(errors.OffsetOutOfRange):
        b.fetch("t", 0, 4)
    with pytest.raises(errors.UnknownTopicOrPartition):
        b.fetch("t", 2, 0)
    assert b.list_offsets("t", 0, -2) == (0, -1) and b.list_offsets("t", 0, -1) == (3, -1)
    ts = b.produce("t", 1, build_batch([b"late"], timestamps=[5_000_000_000_000])).base_offset
    assert b.list_offsets("t", 1, 4_000_000_000_000) == (ts, 5_000_000_000_000)
    assert b.list_offsets("t", 1, 6_000_000_000_000) == (None, -1)
    pid, epoch = b.init_producer_id()
    assert b.init_producer_id()[0] != pid and epoch >= 0
    version = b.data_version
    b.produce("t", 1, batch(b"more"))
    assert b.wait_for_data(version, 5.0) != version


def test_delete_records_moves_the_low_watermark(b):
    b.create_topic("t", 1, rf(b))
    for i in range(10):
        b.produce("t", 0, batch(b"%d" % i))
    assert b.delete_records("t", 0, 4) == 4
    assert b.describe_topic("t").partitions[0].log_start_offset == 4
    assert b.list_offsets("t", 0, -2) == (4, -1)
    with pytest.raises(errors.OffsetOutOfRange):
        b.fetch("t", 0, 3)
    assert values_of(b, "t", 0, 4) == [b"%d" % i for i in range(4, 10)]
    assert b.delete_records("t", 0, 2) == 4  # below the start: nothing changes
    for bad in (11, -2):
        with pytest.raises(errors.OffsetOutOfRange):
            b.delete_records("t", 0, bad)
    assert b.delete_records("t", 0, -1) == 10  # -1: the high watermark
    assert b.list_offsets("t", 0, -2) == (10, -1) and b.fetch("t", 0, 10).batches == []
    with pytest.raises(errors.UnknownTopicOrPartition):
        b.delete_records("t", 1, 0)


def test_offset_for_leader_epoch(b):
    b.create_topic("t", 1, rf(b))
    for i in range(5):
        b.produce("t", 0, batch(b"%d" % i))
    epoch = b.describe_topic("t").partitions[0].leader_epoch
    assert b.offset_for_leader_epoch("t", 0, epoch) == (epoch, 5)
    assert b.offset_for_leader_epoch("t", 0, -1) == (-1, -1)
    with pytest.raises(errors.InvalidArgument):
        b.offset_for_leader_epoch("t", 0, -5)
    with pytest.raises(errors.UnknownTopicOrPartition):
        b.offset_for_leader_epoch("t", 3, epoch)


def test_data_listeners_hear_of_new_readable_records(b, caplog):
    b.create_topic("t", 2, rf(b))
    heard = []

    def broken(topic, partition):
        raise RuntimeError("a broken listener")

    def listener(topic, partition):
        heard.append((topic, partition))

    b.add_data_listener(broken)
    b.add_data_listener(listener)
    b.produce("t", 1, batch(b"a"), acks="all")
    assert set(heard) == {("t", 1)}  # before produce returned: the records are readable
    assert "a broken listener" in caplog.text
    b.remove_data_listener(listener)
    n = len(heard)
    b.produce("t", 0, batch(b"b"), acks="all")
    assert len(heard) == n
    b.remove_data_listener(listener)  # a second removal changes nothing


# ------------------------------------------------------------------ the rest
def test_groups_and_metrics(b):
    b.create_topic("t", 2, rf(b))
    g = b.groups
    assert g is b.groups
    g.commit_offsets("g", -1, "", {("t", 0): (5, "")})
    assert g.fetch_offsets("g", [("t", 0)])[("t", 0)][0] == 5
    assert b.describe_topic("__consumer_offsets").internal
    m = b.metrics()
    assert {"topics", "groups", "skew_warnings_total"} <= set(m)
    assert set(m["topics"]["t"]["partitions"]) == {0, 1}
    assert "g" in m["groups"]


def test_producer_and_consumer_work_on_it(b):
    b.create_topic("t", 3, rf(b))
    with pylog.Producer(b, acks="all", linger_ms=1) as p:
        assert p._pipelined is b.pipelined_produce
        metas = [p.send("t", b"v%d" % i, key=b"k%d" % (i % 7)) for i in range(200)]
        metas = [m.result(timeout=30) for m in metas]
    c = pylog.Consumer(b, group_id="readers", auto_offset_reset="earliest", enable_auto_commit=False)
    c.assign([("t", 0), ("t", 1), ("t", 2)])
    got = []
    for _ in range(100):
        got.extend(c.poll(timeout=0.1, max_records=1000))
        if len(got) >= 200:
            break
    assert sorted(r.value for r in got) == sorted(b"v%d" % i for i in range(200))
    assert {(m.partition, m.offset) for m in metas} == {(r.partition, r.offset) for r in got}
    c.commit()
    assert sum(c.committed([("t", p) for p in range(3)]).values()) == 200
    with pytest.raises(errors.UnknownTopicOrPartition):
        c.assign([("t", 3)])
    c.close()

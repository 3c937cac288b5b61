"""The embedded broker: topics, persistence, produce/fetch, idempotence, bad input."""
from __future__ import annotations

import os
import time

import pytest

import pylog
from pylog import errors
from pylog.records import build_batch, iter_records

from tests.conftest import SMALL


def values_of(broker, topic, partition, start=0):
    out = []
    off = start
    while True:
        res = broker.fetch(topic, partition, off)
        if not res.batches:
            return out
        for b in res.batches:
            out.extend(r.value for r in iter_records(b.buffer) if r.offset >= off)
        off = res.batches[-1].next_offset


# ------------------------------------------------------------------- topics
def test_create_list_describe_delete(broker):
    d = broker.create_topic("orders", partitions=6, config={"retention.ms": 86_400_000})
    assert [p.partition for p in d.partitions] == list(range(6))
    assert d.config["retention.ms"] == 86_400_000
    assert d.overrides == {"retention.ms": 86_400_000}
    assert d.config["segment.bytes"] == SMALL["log.segment.bytes"]  # the broker default
    assert all(p.leader == 0 and p.isr == [0] and p.log_end_offset == 0 for p in d.partitions)
    broker.create_topic("audit")
    assert broker.list_topics() == ["audit", "orders"]
    broker.delete_topic("orders")
    assert broker.list_topics() == ["audit"]
    assert not any(n.startswith("orders-") for n in os.listdir(broker.data_dir))
    with pytest.raises(errors.UnknownTopicOrPartition):
        broker.describe_topic("orders")


def test_topics_configs_and_offsets_survive_reopen(open_broker):
    b = open_broker()
    b.create_topic("orders", partitions=3, config={"max.message.bytes": 5000, "cleanup.policy": "delete"}
                   if "cleanup.policy" in pylog.broker.config.TOPIC_DEFAULTS else {"max.message.bytes": 5000})
    for p in range(3):
        b.produce("orders", p, build_batch([b"a%d" % p, b"b%d" % p]))
    tid = b.describe_topic("orders").topic_id
    b.close()
    b2 = open_broker()
    d = b2.describe_topic("orders")
    assert d.topic_id == tid
    assert d.config["max.message.bytes"] == 5000
    assert [p.log_end_offset for p in d.partitions] == [2, 2, 2]
    assert values_of(b2, "orders", 1) == [b"a1", b"b1"]


@pytest.mark.parametrize("name", ["", ".", "..", "a" * 250, "bad name", "ünïcode", "a/b", "x:y"])
def test_topic_name_rules(broker, name):
    with pytest.raises(errors.InvalidTopic):
        broker.create_topic(name)


def test_topic_name_limits_accepted(broker):
    broker.create_topic("a" * 249)
    broker.create_topic("A-b_c.9")


def test_topic_exists_and_dot_underscore_collision(broker):
    broker.create_topic("a.b")
    with pytest.raises(errors.TopicAlreadyExists):
        broker.create_topic("a.b")
    with pytest.raises(errors.TopicAlreadyExists, match="collides"):
        broker.create_topic("a_b")


@pytest.mark.parametrize("kwargs, exc", [
    ({"partitions": 0}, errors.InvalidPartitions),
    ({"partitions": "3"}, errors.InvalidPartitions),
    ({"replication_factor": 0}, errors.InvalidReplicationFactor),
    ({"replication_factor": 3}, errors.InvalidReplicationFactor),
    ({"config": {"retention.msx": 1}}, errors.InvalidConfig),
    ({"config": {"retention.ms": "soon"}}, errors.InvalidConfig),
    ({"config": {"compression.type": "brotli"}}, errors.InvalidConfig),
    ({"config": {"min.insync.replicas": 0}}, errors.InvalidConfig),
    ({"config": {"message.timestamp.type": "Wall"}}, errors.InvalidConfig),
])
def test_bad_create_leaves_nothing(broker, kwargs, exc):
    before = sorted(os.listdir(broker.data_dir))
    with pytest.raises(exc):
        broker.create_topic("t", **kwargs)
    assert broker.list_topics() == []
    assert sorted(os.listdir(broker.data_dir)) == before


def test_internal_topic_is_protected(broker):
    with pytest.raises(errors.InvalidTopic):
        broker.create_topic("__consumer_offsets")
    with pytest.raises(errors.InvalidTopic):
        broker.delete_topic("__consumer_offsets")


def test_stray_partition_directories_removed_on_open(open_broker):
    b = open_broker()
    b.create_topic("keep", 1)
    b.close()
    stray = b.data_dir / "half-0"  # a create cut short before topics.json was written
    stray.mkdir()
    (stray / "00000000000000000000.log").write_bytes(b"")
    b2 = open_broker()
    assert not stray.exists()
    assert b2.list_topics() == ["keep"]


def test_create_partitions_cut_short_keeps_the_old_count(open_broker, monkeypatch):
    """Growing a topic makes the new partition directories first and rewrites topics.json
    last: a failure (or a crash) in between leaves the old count and no new directory."""
    b = open_broker()
    b.create_topic("t", 2)
    b.produce("t", 1, build_batch([b"kept"]))

    def fail() -> None:
        raise errors.StorageError("disk full (test)")

    monkeypatch.setattr(b, "_write_topics_file", fail)
    with pytest.raises(errors.StorageError):
        b.create_partitions("t", 4)
    assert len(b.describe_topic("t").partitions) == 2
    assert not (b.data_dir / "t-2").exists() and not (b.data_dir / "t-3").exists()
    monkeypatch.undo()
    b.close()
    (b.data_dir / "t-2").mkdir()  # as a crash after the directories, before topics.json
    (b.data_dir / "t-2" / "00000000000000000000.log").write_bytes(b"")
    b2 = open_broker()
    assert len(b2.describe_topic("t").partitions) == 2 and not (b2.data_dir / "t-2").exists()
    assert values_of(b2, "t", 1) == [b"kept"]
    b2.create_partitions("t", 3)
    b2.close()
    assert len(open_broker().describe_topic("t").partitions) == 3


def test_alter_topic_config_persists_and_applies_to_the_offsets_topic_too(open_broker):
    b = open_broker()
    b.create_topic("t", 1, config={"retention.ms": 1000})
    b.alter_topic_config("t", {"max.message.bytes": 2000})
    b.groups  # creates __consumer_offsets with its own settings
    d = b.alter_topic_config("__consumer_offsets", {"min.cleanable.dirty.ratio": 0.1})
    assert d.config["cleanup.policy"] == "compact" and d.overrides == {"min.cleanable.dirty.ratio": 0.1}
    b.close()
    b2 = open_broker()
    assert b2.describe_topic("t").overrides == {"retention.ms": 1000, "max.message.bytes": 2000}
    assert b2.partition("t", 0).log.config.max_message_bytes == 2000
    d = b2.describe_topic("__consumer_offsets")
    assert d.config["cleanup.policy"] == "compact" and d.config["min.cleanable.dirty.ratio"] == 0.1
    with pytest.raises(errors.InvalidTopic):
        b2.create_partitions("__consumer_offsets", 10)


def test_a_failing_data_listener_is_logged_and_the_produce_succeeds(broker, caplog):
    broker.create_topic("t", 1)
    calls = []

    def bad(topic, partition):
        raise RuntimeError("listener bug")

    broker.add_data_listener(bad)
    broker.add_data_listener(lambda t, p: calls.append((t, p)))
    res = broker.produce("t", 0, build_batch([b"a"]))
    assert res.base_offset == 0 and calls == [("t", 0)]
    assert "listener bug" in caplog.text
    broker.remove_data_listener(bad)
    broker.remove_data_listener(bad)  # not there any more: nothing happens
    broker.produce("t", 0, build_batch([b"b"]), acks=0)
    assert calls == [("t", 0), ("t", 0)]
    with pytest.raises(errors.UnknownTopicOrPartition):
        broker.produce("t", 1, build_batch([b"c"]))
    assert len(calls) == 2  # nothing became readable


def test_damaged_topics_file_is_a_clear_error(open_broker):
    b = open_broker()
    b.create_topic("t")
    b.close()
    (b.data_dir / "topics.json").write_text("{not json")
    with pytest.raises(errors.StorageError, match="topics.json"):
        open_broker()


def test_second_broker_on_same_directory_refused(open_broker):
    open_broker()
    with pytest.raises(errors.StorageError, match="in use"):
        open_broker()


def test_broker_config_names_and_errors(tmp_path):
    with pytest.raises(errors.InvalidConfig):
        pylog.Broker.open(tmp_path / "x", {"num.partitionz": 3})
    with pytest.raises(errors.InvalidConfig):
        pylog.Broker.open(tmp_path / "x", num_partitions=0)
    with pylog.Broker.open(tmp_path / "y", {"num.partitions": "4", "log.retention.ms": 1234},
                           **{"log_index_size_max_bytes": 4096}) as b:
        d = b.create_topic("t")
        assert len(d.partitions) == 4 and d.config["retention.ms"] == 1234


def test_auto_create_topics(open_broker):
    b = open_broker({"auto.create.topics.enable": True, "num.partitions": 2})
    assert b.partitions_for("fresh") == 2
    assert "fresh" in b.list_topics()


# ------------------------------------------------------------ produce/fetch
def test_unknown_topic_and_partition(broker):
    broker.create_topic("t", 2)
    data = build_batch([b"x"])
    with pytest.raises(errors.UnknownTopicOrPartition):
        broker.produce("nope", 0, data)
    for p in (-1, 2, "0", True):
        with pytest.raises(errors.UnknownTopicOrPartition):
            broker.produce("t", p, data)
    with pytest.raises(errors.UnknownTopicOrPartition):
        broker.fetch("t", 5, 0)
    with pytest.raises(errors.OffsetOutOfRange):
        broker.fetch("t", 0, 7)
    with pytest.raises(errors.InvalidRequiredAcks):
        broker.produce("t", 0, data, acks=2)


def test_oversized_and_corrupt_batches_write_nothing(broker):
    broker.create_topic("t", 1, config={"max.message.bytes": 200})
    with pytest.raises(errors.RecordTooLarge):
        broker.produce("t", 0, build_batch([b"x" * 300]))
    bad = bytearray(build_batch([b"abc"]))
    bad[-1] ^= 1
    with pytest.raises(errors.CorruptRecordError):
        broker.produce("t", 0, bytes(bad))
    assert broker.describe_topic("t").partitions[0].log_end_offset == 0
    broker.produce("t", 0, build_batch([b"ok"]))
    assert values_of(broker, "t", 0) == [b"ok"]


def test_offsets_dense_per_partition_and_list_offsets(broker):
    # Recent timestamps: older ones would be deleted by retention.ms at the next roll.
    t0 = time.time_ns() // 1_000_000 - 60_000
    broker.create_topic("t", 2)
    r1 = broker.produce("t", 0, build_batch([b"a", b"b"], timestamps=[t0 + 1000, t0 + 2000]))
    r2 = broker.produce("t", 0, build_batch([b"c"], timestamps=[t0 + 3000]))
    assert (r1.base_offset, r1.last_offset, r2.base_offset) == (0, 1, 2)
    assert broker.list_offsets("t", 0, -2) == (0, -1)
    assert broker.list_offsets("t", 0, -1) == (3, -1)
    assert broker.list_offsets("t", 0, t0 + 1500) == (1, t0 + 2000)
    assert broker.list_offsets("t", 0, t0 + 9999) == (None, -1)
    assert broker.list_offsets("t", 1, -1) == (0, -1)


def test_topic_compression_type_recompresses(broker):
    broker.create_topic("z", 1, config={"compression.type": "zstd"})
    broker.produce("z", 0, build_batch([b"v" * 50] * 10, keys=[b"k"] * 10))
    b = broker.fetch("z", 0, 0).batches[0]
    assert b.compression_type == "zstd"
    assert [r.value for r in iter_records(b.buffer)] == [b"v" * 50] * 10
    broker.create_topic("keep", 1)  # compression.type=producer keeps what the producer sent
    broker.produce("keep", 0, build_batch([b"v"], compression="gzip"))
    assert broker.fetch("keep", 0, 0).batches[0].compression_type == "gzip"


def test_log_append_time(broker, clock):
    broker.create_topic("t", 1, config={"message.timestamp.type": "LogAppendTime"})
    res = broker.produce("t", 0, build_batch([b"x"], timestamps=[5]))
    assert res.log_append_time > 5
    assert [r.timestamp for r in broker.partition("t", 0).log.records()] == [res.log_append_time]


# -------------------------------------------------------------- idempotence
def idem(pid, epoch, seq, values):
    return build_batch(values, producer_id=pid, producer_epoch=epoch, base_sequence=seq)


def test_duplicate_retry_written_once(broker):
    broker.create_topic("t", 1)
    pid, epoch = broker.init_producer_id()
    first = broker.produce("t", 0, idem(pid, epoch, 0, [b"a", b"b"]))
    again = broker.produce("t", 0, idem(pid, epoch, 0, [b"a", b"b"]))
    assert again.duplicate and (again.base_offset, again.last_offset) == (first.base_offset, first.last_offset)
    broker.produce("t", 0, idem(pid, epoch, 2, [b"c"]))
    assert values_of(broker, "t", 0) == [b"a", b"b", b"c"]


def test_out_of_order_and_fenced(broker):
    broker.create_topic("t", 1)
    pid, epoch = broker.init_producer_id()
    with pytest.raises(errors.OutOfOrderSequence, match="expected 0"):
        broker.produce("t", 0, idem(pid, epoch, 3, [b"x"]))
    broker.produce("t", 0, idem(pid, epoch, 0, [b"a"]))
    with pytest.raises(errors.OutOfOrderSequence, match="expected 1"):
        broker.produce("t", 0, idem(pid, epoch, 2, [b"x"]))
    broker.produce("t", 0, idem(pid, epoch + 1, 0, [b"b"]))  # a new epoch starts at 0
    with pytest.raises(errors.InvalidProducerEpoch):
        broker.produce("t", 0, idem(pid, epoch, 1, [b"x"]))
    assert values_of(broker, "t", 0) == [b"a", b"b"]


def test_producer_ids_unique_across_restarts(open_broker):
    b = open_broker()
    ids = {b.init_producer_id()[0] for _ in range(5)}
    b.close()
    b2 = open_broker()
    ids2 = {b2.init_producer_id()[0] for _ in range(5)}
    assert len(ids | ids2) == 10


@pytest.mark.parametrize("clean", [True, False])
def test_producer_state_survives_restart(open_broker, clean, tmp_path):
    b = open_broker()
    b.create_topic("t", 1)
    pid, epoch = b.init_producer_id()
    b.produce("t", 0, idem(pid, epoch, 0, [b"a"]))
    b.produce("t", 0, idem(pid, epoch, 1, [b"b", b"c"]))
    b.close()
    if not clean:  # as after a crash: no snapshot, the state is rebuilt from the log
        snap = b.data_dir / "t-0" / "producer-state.json"
        assert snap.exists()
        snap.unlink()
    b2 = open_broker()
    dup = b2.produce("t", 0, idem(pid, epoch, 1, [b"b", b"c"]))
    assert dup.duplicate and dup.base_offset == 1
    with pytest.raises(errors.OutOfOrderSequence):
        b2.produce("t", 0, idem(pid, epoch, 5, [b"x"]))
    b2.produce("t", 0, idem(pid, epoch, 3, [b"d"]))
    assert values_of(b2, "t", 0) == [b"a", b"b", b"c", b"d"]


def test_closed_broker_refuses(open_broker):
    b = open_broker()
    b.create_topic("t")
    b.close()
    with pytest.raises(errors.BrokerClosed):
        b.produce("t", 0, build_batch([b"x"]))
    with pytest.raises(errors.BrokerClosed):
        b.create_topic("u")
    b.close()  # idempotent


# --------------------------------------------------------------- compaction
def test_compacted_topic_keeps_latest_per_key(broker):
    broker.create_topic("state", 1, config={"cleanup.policy": "compact", "segment.bytes": 4096,
                                            "min.cleanable.dirty.ratio": "0.01"})
    latest = {}
    with pylog.Producer(broker, linger_ms=0) as p:
        for i in range(600):
            key = b"k%d" % (i % 20)
            latest[key] = p.send("state", b"v%d" % i, key=key).result().offset
    part = broker.partition("state", 0)
    assert len(part.log.segments) > 2
    results = broker.run_cleaner(force=True)
    assert results and results[0].records_after < results[0].records_before
    recs = list(part.log.records())
    by_key = {r.key: r.offset for r in recs}
    assert by_key == {k: off for k, off in latest.items() if off < part.log.segments[-1].base_offset} | {
        r.key: r.offset for r in recs if r.offset >= part.log.segments[-1].base_offset}
    for r in recs:  # every kept record is still at its original offset with its value
        assert r.value == b"v%d" % r.offset
    assert part.log_end_offset == 600  # offsets are preserved: the end does not move
    c = pylog.Consumer(broker, auto_offset_reset="earliest")
    c.assign([("state", 0)])
    got = []
    while True:
        batch = c.poll(timeout=0, max_records=1000)
        if not batch:
            break
        got.extend(batch)
    assert [r.offset for r in got] == [r.offset for r in recs]


def test_compacted_topic_rejects_null_keys(broker):
    broker.create_topic("state", 1, config={"cleanup.policy": "compact"})
    with pytest.raises(errors.InvalidRecord):
        broker.produce("state", 0, build_batch([b"no key"]))
    with pylog.Producer(broker) as p:
        f = p.send("state", b"no key")
        p.flush()
    assert isinstance(f.exception(), errors.InvalidRecord)


# ------------------------------------------------------------------ key skew
def test_hot_partition_is_loud(open_broker, clock, caplog):
    broker = open_broker({"partition.skew.window.ms": 60_000, "partition.skew.min.records": 100},
                         clock=clock, background_threads=False)
    broker.create_topic("orders", 4)
    for i in range(40):  # partition 2 takes 70% of the records
        broker.produce("orders", 2 if i % 10 < 7 else i % 4 if i % 4 != 2 else 0,
                       build_batch([b"x"] * 10))
    clock.advance(61_000)  # the window is over: judge it
    with caplog.at_level("WARNING", logger="pylog.broker"):
        broker.run_housekeeping()
    warnings = [r for r in caplog.records if r.levelname == "WARNING" and "orders" in r.getMessage()]
    assert len(warnings) == 1 and "partition 2" in warnings[0].getMessage()
    m = broker.metrics()
    part2 = m["topics"]["orders"]["partitions"][2]
    assert part2["skewed"] and part2["share_in"] == pytest.approx(0.7)
    assert not m["topics"]["orders"]["partitions"][1]["skewed"]
    assert m["skew_warnings_total"] == 1
    assert part2["records_in"] == 280 and sum(
        p["records_in"] for p in m["topics"]["orders"]["partitions"].values()) == 400


def test_even_traffic_is_quiet(open_broker, clock, caplog):
    broker = open_broker({"partition.skew.min.records": 100}, clock=clock, background_threads=False)
    broker.create_topic("orders", 4)
    for i in range(40):
        broker.produce("orders", i % 4, build_batch([b"x"] * 10))
    clock.advance(61_000)
    with caplog.at_level("WARNING", logger="pylog.broker"):
        broker.run_housekeeping()
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    assert broker.metrics()["skew_warnings_total"] == 0

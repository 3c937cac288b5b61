"""A broker on a full disk (issue 12 points 1 and 3), on a real small file system.

Produce is refused with KAFKA_STORAGE_ERROR (StorageError, code 56) and an ERROR log
saying the disk is full; fetches and consumer-group commits that fit the reserved space
go on; once the filler is deleted, produce works again without a restart.  Topic
creation on a full disk leaves no partition directory behind.  A broker closed on a
full disk opens again (in a child process: a SIGBUS fails the test).
"""
from __future__ import annotations

import errno
import logging

import pytest

from pylog.broker import Broker
from pylog.errors import StorageError
from pylog.records import build_batch, iter_records
from tests.storage.test_disk_full import run_child

MiB = 1 << 20


def open_broker(path):
    return Broker.open(path, {"log.segment.bytes": 256 * 1024, "offsets.topic.num.partitions": 2},
                       background_threads=False)


def batch(i):
    return build_batch([b"p" * 2000 + b"%d" % i])


def all_values(b, topic="t"):
    out, offset = [], 0
    while True:
        res = b.fetch(topic, 0, offset)
        if not res.batches:
            return out
        for bt in res.batches:
            out.extend(r.value for r in iter_records(bt.buffer, offset))
        offset = res.batches[-1].next_offset


def test_produce_refused_fetch_and_commits_go_on_then_resume(small_fs, caplog):
    data = small_fs.path / "data"
    b = open_broker(data)
    b.create_topic("t", 1)
    b.groups.commit_offsets("g", -1, "", {("t", 0): (0, "")})  # reserves its first step
    small_fs.fill(leave_bytes=1 * MiB)
    n = 0
    with caplog.at_level(logging.ERROR, logger="pylog.broker.partition"):
        with pytest.raises(StorageError) as info:
            for n in range(100_000):
                b.produce("t", 0, batch(n), acks=1)
        # more refusals do not repeat the ERROR line
        for _ in range(3):
            with pytest.raises(StorageError):
                b.produce("t", 0, batch(n), acks=1)
    err = info.value
    assert err.code == 56 and err.kafka_name == "KAFKA_STORAGE_ERROR" and err.errno == errno.ENOSPC
    assert str(data / "t-0") in str(err)
    lines = [r for r in caplog.records if "appends refused" in r.getMessage()]
    assert len(lines) == 1 and "the disk is full" in lines[0].getMessage()
    # reads go on, and the records written before are all there
    values = all_values(b)
    assert len(values) == n and values[-1].endswith(b"%d" % (n - 1))
    # a commit that fits the reservation of __consumer_offsets is served
    b.groups.commit_offsets("g", -1, "", {("t", 0): (n, "")})
    assert b.groups.fetch_offsets("g", [("t", 0)])[("t", 0)][0] == n
    # space returns: produce works again, no restart
    small_fs.free()
    with caplog.at_level(logging.WARNING, logger="pylog.broker.partition"):
        res = b.produce("t", 0, batch(n), acks=1)
    assert res.base_offset == n
    assert any("appends work again" in r.getMessage() for r in caplog.records)
    assert b.partition("t", 0).storage_error is None
    b.close()
    with open_broker(data) as b:
        assert len(all_values(b)) == n + 1
        assert b.groups.fetch_offsets("g", [("t", 0)])[("t", 0)][0] == n


def test_topic_creation_on_a_full_disk_leaves_nothing(small_fs):
    data = small_fs.path / "data"
    b = open_broker(data)
    b.create_topic("a", 1)
    topics_json = (data / "topics.json").read_text()
    small_fs.fill()
    with pytest.raises(StorageError) as info:
        b.create_topic("big", 40)
    assert str(data) in str(info.value)
    assert not list(data.glob("big-*")) and not list(data.glob("*.tmp"))
    assert (data / "topics.json").read_text() == topics_json
    assert b.list_topics() == ["a"]
    small_fs.free()
    b.create_topic("big", 40)
    assert len(list(data.glob("big-*"))) == 40
    b.close()


REOPEN_BROKER = """
    import sys
    from pylog.broker import Broker
    from pylog.errors import StorageError
    from pylog.records import build_batch, iter_records
    b = Broker.open(sys.argv[1], {"log.segment.bytes": 256 * 1024, "offsets.topic.num.partitions": 2},
                    background_threads=False)
    offset, n = 0, 0
    while True:
        res = b.fetch("t", 0, offset)
        if not res.batches:
            break
        n += sum(bt.record_count for bt in res.batches)
        offset = res.batches[-1].next_offset
    print("records", n)
    try:
        b.produce("t", 0, build_batch([b"x" * 100_000]), acks=1)
        print("produced")
    except StorageError as exc:
        print("refused", exc.code)
    try:
        b.close()
    except StorageError as exc:
        print("close failed", exc)
"""


def test_broker_closed_on_a_full_disk_opens_again(small_fs):
    data = small_fs.path / "data"
    b = open_broker(data)
    b.create_topic("t", 1)
    small_fs.fill(leave_bytes=1 * MiB)
    n = 0
    with pytest.raises(StorageError):
        for n in range(100_000):
            b.produce("t", 0, batch(n), acks=1)
    try:
        b.close()
    except StorageError:
        pass  # a full disk may refuse a checkpoint; the directory is released all the same
    small_fs.fill()
    out = run_child(REOPEN_BROKER, str(data))
    assert f"records {n}" in out and "refused 56" in out, out

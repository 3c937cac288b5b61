"""The background scrub (log.scrub.interval.ms): Log.scrub, a broker's scrub, and a
cluster follower that fetches its damaged range again from the leader."""
from __future__ import annotations

import logging
import time

import pylog
from pylog.cluster import LocalCluster
from pylog.storage.log import Log


def _flip(path) -> None:
    """Flip one bit inside the records of a batch in the middle of the segment (its
    header and the indexes stay intact: only the CRC can tell)."""
    data = bytearray(path.read_bytes())
    starts, pos = [], 0
    while pos + 61 <= len(data) and data[pos + 16] == 2:
        starts.append(pos)
        pos += 12 + int.from_bytes(data[pos + 8:pos + 12], "big")
    data[starts[len(starts) // 2] + 61 + 20] ^= 0x04
    path.write_bytes(bytes(data))


def _first_segment(d):
    return sorted(d.glob("*.log"))[0]


def test_log_scrub_finds_the_first_damaged_batch_and_changes_nothing(tmp_path):
    log = Log.open(tmp_path / "p", segment_bytes=1 << 20)
    for i in range(200):
        log.append([b"record-%05d" % j + b"." * 80 for j in range(i * 10, i * 10 + 10)])
    assert log.scrub() is None
    log.close()
    seg = _first_segment(tmp_path / "p")
    _flip(seg)
    before = seg.read_bytes()
    log = Log.open(tmp_path / "p", segment_bytes=1 << 20)
    damage = log.scrub()
    assert damage is not None and 0 < damage.offset < 2000 and damage.offset % 10 == 0
    assert str(seg) in damage.what and "CRC32C mismatch" in damage.what
    # everything below the damaged batch reads; the damaged batch does not
    assert [r.offset for r in log.records(0, damage.offset)] == list(range(damage.offset))
    log.close()
    assert seg.read_bytes() == before


def test_broker_scrub_logs_damage_once_and_counts_it(tmp_path, caplog):
    now = [1_000_000]
    b = pylog.Broker.open(tmp_path / "b", {"log.scrub.interval.ms": 60_000}, clock=lambda: now[0],
                          background_threads=False)
    try:
        b.create_topic("t", partitions=2)
        with pylog.Producer(b, linger_ms=0) as p:
            for i in range(2000):
                p.send("t", b"v%05d" % i + b"-" * 60, partition=i % 2)
        b.run_housekeeping(now[0] + 60_000)
        assert b.metrics()["log_scrub_damaged_partitions"] == 0
        b.partition("t", 1).log.flush()
        _flip(_first_segment(tmp_path / "b" / "t-1"))
        with caplog.at_level(logging.ERROR, logger="pylog.broker"):
            b.run_housekeeping(now[0] + 120_000)
            b.run_housekeeping(now[0] + 180_000)  # the same damage: not logged again
        errors = [r for r in caplog.records if "scrub: t-1 is damaged" in r.getMessage()]
        assert len(errors) == 1 and errors[0].levelno == logging.ERROR
        assert b.metrics()["log_scrub_damaged_partitions"] == 1
        text = pylog.broker.metrics.render_prometheus(b.metrics())
        assert "pylog_log_scrub_damaged_partitions 1" in text
    finally:
        b.close()


def test_off_by_default(tmp_path):
    b = pylog.Broker.open(tmp_path / "b", background_threads=False)
    try:
        assert b.config.log_scrub_interval_ms == 0
    finally:
        b.close()


def test_cluster_follower_fetches_its_damaged_range_again(tmp_path, caplog):
    c = LocalCluster.open(tmp_path / "c", brokers=3,
                          config={"replica.lag.time.max.ms": 2000, "log.scrub.interval.ms": 3_600_000})
    try:
        c.create_topic("t", partitions=1, replication_factor=3, config={"min.insync.replicas": 2})
        with pylog.Producer(c, acks="all", linger_ms=0) as p:
            for i in range(3000):
                p.send("t", b"value-%05d" % i, partition=0)
        leader = c.describe_topic("t").partitions[0].leader
        follower = next(b for b in (1, 2, 3) if b != leader)
        node = c.kernel.nodes[follower]
        part = node.replicas[("t", 0)].partition
        deadline = time.monotonic() + 60
        while part.log_end_offset < 3000:
            assert time.monotonic() < deadline, "the follower did not copy the records"
            time.sleep(0.05)
        part.log.flush()
        _flip(_first_segment(part.log.dir))
        with caplog.at_level(logging.ERROR):
            c.run_housekeeping(force=True)
        assert any(f"broker {follower}: drops offsets" in r.getMessage() for r in caplog.records)
        # counted per replica: the two clean replicas of the same partition, scrubbed in
        # the same pass, do not clear it
        assert c.metrics()["log_scrub_damaged_partitions"] == 1
        while part.log_end_offset < 3000 or part.log.scrub() is not None:
            assert time.monotonic() < deadline, "the follower did not fetch the range again"
            time.sleep(0.05)
        assert [r.value for r in part.log.records()] == [b"value-%05d" % i for i in range(3000)]
        c.run_housekeeping(force=True)
        assert c.metrics()["log_scrub_damaged_partitions"] == 0
        assert c.loss_ledger() == []  # the leader held the range: nothing was lost
    finally:
        c.close()

"""A failed log directory in a cluster (issue 12 point 4, Kafka's KIP-112): the
broker's replicas in it go offline, their leaderships move to other in-sync replicas,
they leave the ISRs, the broker keeps serving its other directory, and a restart after
the repair brings them back into the ISRs.

The failure is real: broker 2's second log directory is an ext4 file system on a loop
device whose backing store fills up (tests/failingdisk.py): EIO, then EROFS.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from pylog.cluster import LocalCluster
from pylog.errors import StorageError
from pylog.records import build_batch

CFG = {"replica.lag.time.max.ms": 2000, "zookeeper.session.timeout.ms": 1000,
       "log.index.size.max.bytes": 4096, "log.segment.bytes": 1 << 20,
       "log.flush.interval.messages": 1}  # every append fsyncs: the failure shows at the next write


def _wait(pred, what, timeout=30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _values(cluster, topic, p):
    out, off = [], 0
    while True:
        res = cluster.fetch(topic, p, off)
        recs = [r for b in res.batches for r in b.records() if r.offset >= off]
        if not recs:
            return out
        out += [r.value for r in recs]
        off = recs[-1].offset + 1


def test_a_failed_log_dir_moves_leadership_and_a_repaired_restart_rejoins(tmp_path, failing_disk, caplog):
    local, bad = tmp_path / "b2-local", failing_disk.path / "b2"
    cluster = LocalCluster.open(tmp_path / "c", brokers=3, config=CFG, log_dirs={2: [local, bad]})
    try:
        # broker 2 leads partitions 1 and 4 (replicas rotate from broker p % 3 + 1)
        d = cluster.create_topic("t", partitions=6, replication_factor=3, config={"min.insync.replicas": 2})
        _wait(lambda: all(sorted(p.isr) == [1, 2, 3] for p in cluster.describe_topic("t").partitions), "full ISRs")
        written = {p: [] for p in range(6)}
        for p in range(6):
            vals = [f"{p}-{i}".encode() for i in range(10)]
            cluster.produce("t", p, build_batch(vals), acks=-1)
            written[p] += vals
        node = cluster.kernel.nodes[2]
        on_bad = sorted(p for p in range(6) if (bad / f"t-{p}").is_dir())
        assert len(on_bad) == 3 and all((local / f"t-{p}").is_dir() for p in range(6) if p not in on_bad)
        led_on_bad = [pi.partition for pi in d.partitions if pi.leader == 2 and pi.partition in on_bad]

        caplog.set_level(logging.WARNING)
        failing_disk.fail()
        # Writes reach broker 2's failed directory as leader appends or follower fetches.
        for i in range(100):
            for p in range(6):
                vals = [f"{p}-x{i}-{j}".encode() for j in range(20)]
                try:
                    cluster.produce("t", p, build_batch(vals), acks=-1)
                    written[p] += vals
                except StorageError:
                    pass  # the failed leader refused: nothing was written (retried below)
            if node.log_dirs.offline_count:
                break
        assert node.log_dirs.offline_count == 1 and bad in node.log_dirs.offline

        def moved():
            parts = cluster.describe_topic("t").partitions
            return all(2 not in pi.isr and pi.leader not in (2, -1) for pi in parts if pi.partition in on_bad)
        _wait(moved, "leaderships and ISRs of broker 2's failed replicas to move")
        parts = cluster.describe_topic("t").partitions
        for pi in parts:
            if pi.partition in on_bad:
                assert sorted(pi.isr) == sorted(b for b in (1, 3)), pi
            else:  # broker 2's other directory goes on: those replicas stay in sync
                _wait(lambda q=pi.partition: 2 in next(x for x in cluster.describe_topic("t").partitions
                                                       if x.partition == q).isr, f"t-{pi.partition} ISR")
        assert any("OFFLINE" in r.getMessage() and str(bad) in r.getMessage() for r in caplog.records
                   if r.levelno == logging.ERROR)
        assert any("offline after a log directory failure" in r.getMessage() for r in caplog.records
                   if r.levelno == logging.WARNING and r.name.startswith("pylog"))
        assert cluster.metrics()["offline_log_directories"] == 1
        # every partition still takes writes (acks=all, min.insync.replicas=2) and serves them
        for p in range(6):
            vals = [f"{p}-after-{j}".encode() for j in range(5)]
            cluster.produce("t", p, build_batch(vals), acks=-1)
            written[p] += vals
            assert _values(cluster, "t", p) == written[p], p
        assert led_on_bad  # broker 2 led some of them: those leaderships moved (checked above)

        # The operator repairs the disk and restarts broker 2: its replicas recover,
        # fetch what they missed and rejoin every ISR.
        cluster.stop_broker(2)
        failing_disk.repair()
        cluster.start_broker(2)
        _wait(lambda: all(sorted(pi.isr) == [1, 2, 3] for pi in cluster.describe_topic("t").partitions),
              "broker 2 back in every ISR", timeout=60)
        assert cluster.kernel.nodes[2].log_dirs.offline_count == 0
        for p in on_bad:
            r = cluster.kernel.nodes[2].replicas[("t", p)]
            assert r.partition.log_end_offset == len(written[p])
            assert [rec.value for rec in r.partition.log.records()] == written[p]
    finally:
        cluster.close()

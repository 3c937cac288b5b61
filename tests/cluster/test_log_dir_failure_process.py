"""A `pylog serve` broker of a ZooKeeper cluster whose second log directory's disk fails
(issue 12 point 4, Kafka's KIP-112), with real processes and a real Kafka client.

Broker 2 runs with ``log.dirs`` = its data directory plus a directory on an ext4 file
system whose loop device's backing store fills up (tests/failingdisk.py): its writes
there fail with EIO, then EROFS.  The load (confluent-kafka, acks=all, idempotent) must
go on without loss or duplicates while the leaderships of broker 2's failed replicas
move; broker 2 keeps its other directory; after the repair a restart brings it back
into every ISR.
"""
from __future__ import annotations

from tests.cluster.load import Load, check_no_loss_no_dup, read_all
from tests.cluster.procs import create_topic, describe, log_lines, metric, wait_for


def test_a_failed_log_dir_hands_its_leaderships_over_under_load(process_cluster, failing_disk):
    c = process_cluster(3, start=False)
    c.start_zookeeper()
    bad = failing_disk.path / "broker-2"
    for i in (1, 2, 3):
        extra = {"log.dirs": str(bad), "log.flush.interval.messages": 1} if i == 2 else None
        c.add_broker(i, c.racks[i - 1], overrides=extra)
    create_topic(c, "events", 6, 3, {"min.insync.replicas": "2"})
    on_bad = sorted(p for p in range(6) if (bad / f"events-{p}").is_dir())
    on_good = sorted(p for p in range(6) if (c.brokers[2].data_dir / f"events-{p}").is_dir())
    assert len(on_bad) == 3 and sorted(on_bad + on_good) == list(range(6))
    b2 = c.brokers[2]
    with Load(c, "events") as load:
        wait_for(lambda: len(load.acked) > 2000, "the first acknowledgements")
        failing_disk.fail()
        wait_for(lambda: metric(b2, "pylog_offline_log_directories") == 1,
                 "broker 2 to take its failed log directory offline")
        wait_for(lambda: all(2 not in p["isr"] and p["leader"] not in (-1, 2)
                             for p in describe(c, "events") if p["partition"] in on_bad),
                 "the failed replicas' leaderships and ISR places to move")
        before = len(load.acked)
        wait_for(lambda: len(load.acked) > before + 2000, "acknowledgements after the failure")
        # broker 2's other directory goes on: its replicas there stay in sync
        assert all(2 in p["isr"] for p in describe(c, "events") if p["partition"] in on_good)
    assert not load.errors, load.errors[:5]
    assert log_lines(b2, rf"log directory {bad} is OFFLINE")
    assert metric(b2, "pylog_offline_replicas") == 3

    # The operator repairs the disk and restarts broker 2: it recovers the replicas on
    # it, fetches what they missed and rejoins every ISR.
    b2.stop()
    failing_disk.repair()
    b2.start()
    wait_for(lambda: all(sorted(p["isr"]) == [1, 2, 3] for p in describe(c, "events")),
             "broker 2 back in every ISR")
    assert metric(b2, "pylog_offline_log_directories") == 0
    records = read_all(c, "events", 6)
    check_no_loss_no_dup(load.acked, records, 6)
    assert len(load.acked) == load.sent

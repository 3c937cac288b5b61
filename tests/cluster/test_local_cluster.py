"""LocalCluster: the Producer/Consumer API on a replicated in-process cluster."""
from __future__ import annotations

import io

import pytest

import pylog
from pylog import errors
from pylog.cluster import LocalCluster

FAST = {"replica.lag.time.max.ms": 2000, "zookeeper.session.timeout.ms": 1000,
        "log.index.size.max.bytes": 4096}


@pytest.fixture
def cluster(tmp_path):
    c = LocalCluster.open(tmp_path / "c", brokers=3, racks=["r1", "r2", "r3"], config=FAST)
    yield c
    c.close()


def test_producer_buffer_memory_is_given_back_by_the_pipelined_sender(cluster):
    """A cluster answers produce requests asynchronously (the pipelined sender): completed
    batches must free buffer.memory there too, or the sends would run out of room."""
    cluster.create_topic("t", partitions=2, replication_factor=3, config={"min.insync.replicas": 2})
    room = 20 * 114  # twenty 100-byte records (+14 bytes each of overhead)
    with pylog.Producer(cluster, acks="all", buffer_memory=room, batch_size=500, max_block_ms=30_000) as p:
        futs = [p.send("t", b"%05d" % i + b"." * 95) for i in range(300)]
        p.flush()
        m = p.metrics()
    assert m["blocked_sends_total"] > 0 and m["buffer_exhausted_total"] == 0
    assert m["buffer_available_bytes"] == room
    assert len({(f.result().partition, f.result().offset) for f in futs}) == 300


def test_replicated_topic_placement_and_describe(cluster):
    d = cluster.create_topic("payments", partitions=6, replication_factor=3,
                             config={"min.insync.replicas": 2, "unclean.leader.election.enable": False})
    rows = d.partitions
    assert len(rows) == 6 and len(d.topic_id) == 32 and d.overrides["min.insync.replicas"] == 2
    for r in rows:
        assert sorted(r.replicas) == [1, 2, 3] and sorted(r.isr) == [1, 2, 3]
        assert r.leader == r.replicas[0] and r.leader_epoch >= 0 and not r.offline and r.losses == ()
    leaders = [r.leader for r in rows]
    assert sorted(leaders.count(b) for b in (1, 2, 3)) == [2, 2, 2]  # leaders spread evenly


def test_manual_replica_assignment(cluster):
    d = cluster.create_topic("pinned", replica_assignment=[[3, 1], [1, 2], [2, 3]])
    assert [p.replicas for p in d.partitions] == [[3, 1], [1, 2], [2, 3]]
    assert [p.leader for p in d.partitions] == [3, 1, 2]
    v = cluster.create_topic("check", replica_assignment=[[2]], validate_only=True)
    assert [p.replicas for p in v.partitions] == [[2]] and "check" not in cluster.list_topics()
    for bad in ([[1, 2], [3]], [[1, 1]], [[1, 9]], []):
        with pytest.raises(errors.InvalidReplicaAssignment):
            cluster.create_topic("bad", replica_assignment=bad)
    with pytest.raises(errors.InvalidReplicaAssignment):
        cluster.create_topic("bad", 3, replica_assignment=[[1]])
    assert "bad" not in cluster.list_topics()


def test_single_broker_replica_assignment(open_broker):
    b = open_broker()
    assert len(b.create_topic("t", replica_assignment=[[0], [0]]).partitions) == 2
    with pytest.raises(errors.InvalidReplicaAssignment):
        b.create_topic("u", replica_assignment=[[1]])


def test_producer_and_consumer_work_on_a_cluster(cluster):
    cluster.create_topic("t", partitions=2, replication_factor=3, config={"min.insync.replicas": 2})
    with pylog.Producer(cluster, acks="all") as p:
        metas = [p.send("t", b"v%d" % i, key=b"k%d" % (i % 5)).result(timeout=30) for i in range(100)]
    c = pylog.Consumer(cluster, auto_offset_reset="earliest")
    c.assign([("t", 0), ("t", 1)])
    got = []
    for _ in range(100):
        got.extend(c.poll(timeout=0.1, max_records=1000))
        if len(got) >= 100:
            break
    assert sorted(r.value for r in got) == sorted(b"v%d" % i for i in range(100))
    assert {(m.partition, m.offset) for m in metas} == {(r.partition, r.offset) for r in got}
    for row in cluster.describe_topic("t").partitions:  # every replica has everything: HW = LEO
        assert row.high_watermark == row.log_end_offset


def test_acks_all_fails_fast_without_enough_replicas(cluster):
    cluster.create_topic("t", partitions=1, replication_factor=3, config={"min.insync.replicas": 3})
    follower = [b for b in (1, 2, 3) if b != cluster.describe_topic("t").partitions[0].leader][0]
    cluster.stop_broker(follower)
    import time
    deadline = time.monotonic() + 20
    while follower in cluster.describe_topic("t").partitions[0].isr and time.monotonic() < deadline:
        time.sleep(0.05)
    with pylog.Producer(cluster, acks="all", delivery_timeout_ms=1500, retry_backoff_ms=50) as p:
        f = p.send("t", b"x")
        p.flush()
    assert isinstance(f.exception(), errors.NotEnoughReplicas)
    cluster.start_broker(follower)


def test_stop_start_broker_loses_nothing_acked(cluster):
    cluster.create_topic("t", partitions=1, replication_factor=3, config={"min.insync.replicas": 2})
    acked = []
    with pylog.Producer(cluster, acks="all") as p:
        for i in range(30):
            acked.append(p.send("t", b"a%d" % i).result(timeout=30).offset)
        leader = cluster.describe_topic("t").partitions[0].leader
        cluster.kill_broker(leader)
        for i in range(30):
            acked.append(p.send("t", b"b%d" % i).result(timeout=30).offset)
        cluster.start_broker(leader)
    assert acked == list(range(60))
    c = pylog.Consumer(cluster, auto_offset_reset="earliest")
    c.assign([("t", 0)])
    got = []
    for _ in range(100):
        got.extend(r.value for r in c.poll(timeout=0.1, max_records=1000))
        if len(got) >= 60:
            break
    assert got == [b"a%d" % i for i in range(30)] + [b"b%d" % i for i in range(30)]


def test_bad_cluster_arguments(tmp_path, cluster):
    with pytest.raises(errors.InvalidConfig):
        LocalCluster.open(tmp_path / "x", brokers=0)
    with pytest.raises(errors.InvalidConfig):
        LocalCluster.open(tmp_path / "x", brokers=2, racks=["a"])
    with pytest.raises(errors.InvalidConfig):
        LocalCluster.open(tmp_path / "x", brokers=1, config={"no.such": 1})
    with pytest.raises(errors.InvalidReplicationFactor):
        cluster.create_topic("t", 1, replication_factor=4)
    with pytest.raises(errors.InvalidTopic):
        cluster.create_topic("bad name", 1)
    with pytest.raises(errors.InvalidConfig):
        cluster.stop_broker(9)
    with pytest.raises(errors.UnknownTopicOrPartition):
        cluster.describe_topic("nope")


def test_topics_survive_cluster_reopen(tmp_path):
    with LocalCluster.open(tmp_path / "c", brokers=3, config=FAST) as c:
        c.create_topic("t", 2, 3)
        with pylog.Producer(c) as p:
            p.send("t", b"x", partition=1).result(timeout=30)
    with LocalCluster.open(tmp_path / "c", brokers=3, config=FAST) as c:
        assert c.list_topics() == ["t"]
        rows = c.describe_topic("t").partitions
        assert rows[1].log_end_offset == 1


def test_demo_runs_and_loses_nothing():
    from pylog.cli.demo import run_demo

    out = io.StringIO()
    assert run_demo(out, records=40) == 0
    text = out.getvalue()
    assert "ISR shrank" in text and "ISR expanded" in text and "Nothing acknowledged was lost." in text


def test_consumer_group_commits_to_replicated_offsets_topic(cluster):
    cluster.create_topic("t", partitions=2, replication_factor=3)
    with pylog.Producer(cluster) as p:
        for i in range(10):
            p.send("t", b"%d" % i, partition=i % 2)
    c = pylog.Consumer(cluster, group_id="g", auto_offset_reset="earliest", enable_auto_commit=False)
    c.assign([("t", 0), ("t", 1)])
    got = []
    for _ in range(50):
        got.extend(c.poll(timeout=0.1))
        if len(got) >= 10:
            break
    c.commit()
    assert c.committed([("t", 0), ("t", 1)]) == {("t", 0): 5, ("t", 1): 5}
    rows = cluster.describe_topic("__consumer_offsets").partitions
    assert sum(r.high_watermark for r in rows) >= 1  # the commit is a replicated record
    assert all(len(r.replicas) == 3 for r in rows)


def _replica_logs(cluster, topic, partition):
    """Each running broker's Partition of (topic, partition)."""
    return {node.id: node.replicas[(topic, partition)].partition
            for node in cluster.kernel.nodes.values() if (topic, partition) in node.replicas}


def _latest(cluster, topic, n):
    c = pylog.Consumer(cluster, auto_offset_reset="earliest")
    c.assign([(topic, 0)])
    latest = {}
    for _ in range(200):
        recs = c.poll(timeout=0.05, max_records=10_000)
        for r in recs:
            latest[r.key] = r.value
        if not recs and len(latest) >= n:
            break
    c.close()
    return latest


def test_housekeeping_compacts_every_replica_and_replication_goes_on(tmp_path):
    """Each broker of a LocalCluster compacts its own replica of a compacted topic (as
    Kafka's brokers do); consumers see the latest value per key; replication and
    idempotent production continue afterwards."""
    cfg = dict(FAST, **{"log.cleaner.backoff.ms": 3_600_000})  # only when asked
    with LocalCluster.open(tmp_path / "c", brokers=3, config=cfg) as cluster:
        cluster.create_topic("kv", 1, replication_factor=3,
                             config={"cleanup.policy": "compact", "segment.bytes": 4096,
                                     "min.cleanable.dirty.ratio": 0.01, "min.insync.replicas": 2})
        with pylog.Producer(cluster, acks="all", linger_ms=0) as p:
            for i in range(600):
                p.send("kv", b"v%d" % i, key=b"k%d" % (i % 10)).result(timeout=30)
        before = {b: len(list(part.log.records())) for b, part in _replica_logs(cluster, "kv", 0).items()}
        assert before == {1: 600, 2: 600, 3: 600}
        results = cluster.run_housekeeping(force=True)
        assert len(results) == 3 and all(r.skipped is None for r in results)
        after = {b: len(list(part.log.records())) for b, part in _replica_logs(cluster, "kv", 0).items()}
        assert all(n < 100 for n in after.values()), after  # the active segment keeps its records
        assert _latest(cluster, "kv", 10) == {b"k%d" % k: b"v%d" % (590 + k) for k in range(10)}
        with pylog.Producer(cluster, acks="all", linger_ms=0) as p:
            for i in range(600, 650):
                p.send("kv", b"v%d" % i, key=b"k%d" % (i % 10)).result(timeout=30)
        row = cluster.describe_topic("kv").partitions[0]
        assert sorted(row.isr) == [1, 2, 3] and row.high_watermark == 650
        assert _latest(cluster, "kv", 10) == {b"k%d" % k: b"v%d" % (640 + k) for k in range(10)}


def test_housekeeping_applies_retention_on_every_replica(tmp_path):
    """Retention runs on each replica when due, not only when a segment rolls: records
    that age past retention.ms while nothing is written go at the next check."""
    import time
    with LocalCluster.open(tmp_path / "c", brokers=3, config=dict(FAST)) as cluster:
        cluster.create_topic("old", 1, replication_factor=3,
                             config={"retention.ms": 60_000, "segment.bytes": 4096})
        with pylog.Producer(cluster, acks="all", linger_ms=0) as p:
            for i in range(300):
                p.send("old", b"x" * 50).result(timeout=30)
        logs = _replica_logs(cluster, "old", 0)
        assert {b: part.log_start_offset for b, part in logs.items()} == {1: 0, 2: 0, 3: 0}
        cluster.run_housekeeping(force=True)  # nothing is old yet
        assert {b: part.log_start_offset for b, part in logs.items()} == {1: 0, 2: 0, 3: 0}
        later = int(time.time() * 1000) + 120_000  # two minutes on: past retention.ms
        cluster.run_housekeeping(now_ms=later, force=True)
        starts = {b: part.log_start_offset for b, part in logs.items()}
        assert all(s > 0 for s in starts.values()), starts
        with pylog.Producer(cluster, acks="all") as p:
            p.send("old", b"new").result(timeout=30)
        row = cluster.describe_topic("old").partitions[0]
        assert sorted(row.isr) == [1, 2, 3] and row.high_watermark == 301


def test_housekeeping_settings_are_validated(tmp_path):
    with pytest.raises(errors.InvalidConfig, match="log.cleaner.backoff.ms"):
        LocalCluster.open(tmp_path / "c", brokers=1, config={"log.cleaner.backoff.ms": -1})


def test_concurrent_first_groups_calls_make_one_service_that_close_stops(tmp_path, monkeypatch):
    """Many threads asking for ``cluster.groups`` at once get one GroupService, and close()
    stops it.  A slow GroupService construction widens the window in which a check
    outside the lock let each thread make its own (and close stop only the last)."""
    import threading
    import time

    from pylog.broker import group_service

    made = []
    real_init = group_service.GroupService.__init__

    def slow_init(self, *args, **kwargs):
        time.sleep(0.3)  # the window: every thread has seen "no service yet"
        real_init(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(group_service.GroupService, "__init__", slow_init)
    c = LocalCluster.open(tmp_path / "c", brokers=3, config=dict(FAST, **{"offsets.topic.num.partitions": 1}))
    try:
        barrier = threading.Barrier(8)
        got = []

        def first_use():
            barrier.wait()
            got.append(c.groups)

        threads = [threading.Thread(target=first_use) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(got) == 8 and len(made) == 1, f"{len(made)} GroupServices were made"
        assert all(g is made[0] for g in got)
    finally:
        c.close()
    assert all(s._closed for s in made)
    with pytest.raises(errors.BrokerClosed):
        c.groups


def _wait_for(pred, timeout_s=20.0):
    import time
    deadline = time.monotonic() + timeout_s
    while not pred():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def test_deleted_topic_directories_never_come_back(cluster):
    """Deleting a topic removes every running broker's replicas; a broker stopped during
    the delete removes its stale directories when it starts, and a paused one when it
    resumes; a new topic of the same name starts empty everywhere."""
    cluster.create_topic("t", 1, replication_factor=3)
    with pylog.Producer(cluster, acks="all") as p:
        for i in range(5):
            p.send("t", b"old%d" % i).result(timeout=30)
    leader = cluster.describe_topic("t").partitions[0].leader
    stopped, paused = [b for b in (1, 2, 3) if b != leader]
    cluster.stop_broker(stopped)
    cluster.pause_broker(paused)
    old_id = cluster.describe_topic("t").topic_id
    cluster.delete_topic("t")
    assert cluster.list_topics() == [] and not (cluster.root / f"broker-{leader}" / "t-0").exists()
    with pytest.raises(errors.UnknownTopicOrPartition):
        cluster.delete_topic("t")
    cluster.start_broker(stopped)
    assert not (cluster.root / f"broker-{stopped}" / "t-0").exists()
    new = cluster.create_topic("t", 1, replication_factor=3, config={"min.insync.replicas": 1})
    assert new.topic_id != old_id
    cluster.resume_broker(paused)
    with pylog.Producer(cluster, acks="all") as p:
        p.send("t", b"new").result(timeout=30)
    _wait_for(lambda: sorted(cluster.describe_topic("t").partitions[0].isr) == [1, 2, 3])
    for b, part in _replica_logs(cluster, "t", 0).items():
        assert [r.value for r in part.log.records()] == [b"new"], b
        assert (part.log.dir / "partition.metadata").read_text().endswith(f"topic_id: {new.topic_id}\n")


def test_create_partitions_and_alter_config_reach_every_broker(tmp_path):
    """New partitions are placed rack-aware and led; a configuration change reaches the
    running brokers' replicas at once and a stopped broker's when it starts; both persist."""
    with LocalCluster.open(tmp_path / "c", brokers=4, racks=["a", "a", "b", "b"], config=FAST) as c:
        c.create_topic("t", 2, replication_factor=2)
        d = c.create_partitions("t", 6)
        assert len(d.partitions) == 6 and all(not p.offline for p in d.partitions)
        racks = {1: "a", 2: "a", 3: "b", 4: "b"}
        assert all({racks[b] for b in p.replicas} == {"a", "b"} for p in d.partitions)
        with pytest.raises(errors.InvalidPartitions):
            c.create_partitions("t", 6)
        c.stop_broker(4)
        c.alter_topic_config("t", {"max.message.bytes": 4000, "min.insync.replicas": 2})
        for node in c.kernel.nodes.values():
            for (topic, _), r in node.replicas.items():
                if topic == "t":
                    assert r.partition.log.config.max_message_bytes == 4000 and r.min_isr == 2
        c.start_broker(4)
        r4 = [r for (topic, _), r in c.kernel.nodes[4].replicas.items() if topic == "t"]
        assert r4 and all(r.partition.log.config.max_message_bytes == 4000 for r in r4)
    with LocalCluster.open(tmp_path / "c", brokers=4, racks=["a", "a", "b", "b"], config=FAST) as c:
        d = c.describe_topic("t")
        assert len(d.partitions) == 6 and d.overrides == {"max.message.bytes": 4000, "min.insync.replicas": 2}


def test_offsets_topic_follows_the_broker_settings(tmp_path):
    cfg = dict(FAST, **{"offsets.topic.num.partitions": 2, "offsets.topic.replication.factor": 5,
                        "offsets.topic.segment.bytes": 1 << 16})
    with LocalCluster.open(tmp_path / "c", brokers=2, config=cfg) as c:
        assert c.groups.num_partitions == 2
        d = c.describe_topic("__consumer_offsets")
        assert len(d.partitions) == 2 and all(len(p.replicas) == 2 for p in d.partitions)  # capped
        assert d.internal and d.config["cleanup.policy"] == "compact" and d.config["segment.bytes"] == 1 << 16
        assert c.list_topics() == [] and c.list_topics(include_internal=True) == ["__consumer_offsets"]
        with pytest.raises(errors.InvalidTopic):
            c.create_partitions("__consumer_offsets", 3)
    with pytest.raises(errors.InvalidConfig, match="offsets.topic.replication.factor"):
        LocalCluster.open(tmp_path / "x", brokers=1, config={"offsets.topic.replication.factor": 0})


def test_a_follower_behind_the_leaders_new_log_start_restarts_there(cluster):
    """delete_records moves the leader's log start; a follower that was down holds less
    than that and, when it returns, empties its log and starts at the leader's start."""
    cluster.create_topic("t", 1, replication_factor=3, config={"min.insync.replicas": 1})
    leader = cluster.describe_topic("t").partitions[0].leader
    follower = [b for b in (1, 2, 3) if b != leader][0]
    cluster.stop_broker(follower)
    with pylog.Producer(cluster, acks=1) as p:
        for i in range(20):
            p.send("t", b"v%d" % i).result(timeout=30)
    _wait_for(lambda: cluster.describe_topic("t").partitions[0].high_watermark == 20)
    assert cluster.delete_records("t", 0, 15) == 15
    cluster.start_broker(follower)
    _wait_for(lambda: sorted(cluster.describe_topic("t").partitions[0].isr) == [1, 2, 3])
    logs = _replica_logs(cluster, "t", 0)
    assert {b: (p.log_start_offset, p.log_end_offset) for b, p in logs.items()} == \
        {1: (15, 20), 2: (15, 20), 3: (15, 20)}
    assert [r.value for r in logs[follower].log.records()] == [b"v%d" % i for i in range(15, 20)]


def test_offset_for_leader_epoch_answers_from_the_new_leaders_cache(cluster):
    """After a leader change the new leader knows where the old epoch ended (KIP-101)."""
    cluster.create_topic("t", 1, replication_factor=3, config={"min.insync.replicas": 1})
    with pylog.Producer(cluster, acks="all") as p:
        for i in range(5):
            p.send("t", b"a%d" % i).result(timeout=30)
    first = cluster.describe_topic("t").partitions[0]
    cluster.stop_broker(first.leader)
    _wait_for(lambda: cluster.describe_topic("t").partitions[0].leader not in (first.leader, -1))
    with pylog.Producer(cluster, acks="all") as p:
        for i in range(3):
            p.send("t", b"b%d" % i).result(timeout=30)
    now = cluster.describe_topic("t").partitions[0]
    assert now.leader_epoch > first.leader_epoch
    assert cluster.offset_for_leader_epoch("t", 0, first.leader_epoch) == (first.leader_epoch, 5)
    assert cluster.offset_for_leader_epoch("t", 0, now.leader_epoch) == (now.leader_epoch, 8)
    assert cluster.offset_for_leader_epoch("t", 0, now.leader_epoch + 10) == (now.leader_epoch, 8)
    cluster.start_broker(first.leader)


def test_leadership_listener_hears_every_leader_and_resignation(cluster):
    """The kernel's on_leadership hook: a replica that starts leading is reported with its
    epoch; one that stops leading (a stopped broker, or one that now follows) too."""
    heard = []
    cluster.kernel.on_leadership(lambda b, t, p, leading, epoch: heard.append((b, t, p, leading, epoch)))
    d = cluster.create_topic("t", partitions=1, replication_factor=3)
    first = d.partitions[0].leader
    assert (first, "t", 0, True, 0) in heard
    cluster.stop_broker(first)
    # a clean stop is a controlled shutdown: the leadership moves first (the old leader
    # then follows at the new epoch); without one it would go offline (epoch -1)
    assert any(b == first and t == "t" and not lead for b, t, _p, lead, _e in heard)
    assert cluster.drive(lambda: any(lead and b != first and e > 0 for b, t, _p, lead, e in heard if t == "t"), 10)
    second, epoch = next((b, e) for b, t, _p, lead, e in heard if t == "t" and lead and b != first)
    assert cluster.describe_topic("t").partitions[0].leader == second
    cluster.start_broker(first)
    # the preferred leader may come back later (auto rebalance): then the second resigns at its epoch
    for b, t, _p, lead, e in heard:
        if t == "t" and b == second and not lead:
            assert e > epoch


def test_topic_defaults_given_as_text_are_typed(tmp_path):
    """Broker-level topic defaults arrive as text from server.properties and --override
    (a `pylog serve --zookeeper` node passes them on): they are typed like the Broker's,
    or every topic creation failed ("segment.bytes must be an integer, got '1048576'")."""
    with LocalCluster.open(tmp_path / "c", brokers=1, config=dict(FAST, **{"log.segment.bytes": "1048576",
                                                                          "log.retention.ms": "-1"})) as c:
        d = c.create_topic("t", 1)
        assert d.config["segment.bytes"] == 1 << 20 and d.config["retention.ms"] == -1
    with pytest.raises(errors.InvalidConfig, match="log.segment.bytes"):
        LocalCluster.open(tmp_path / "d", brokers=1, config={"log.segment.bytes": "big"})

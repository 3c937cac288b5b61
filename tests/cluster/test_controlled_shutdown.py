"""Controlled shutdown (Kafka's ControlledShutdown): a broker stopping cleanly first hands
its leaderships to other in-sync replicas and leaves the ISRs, so that its partitions are
never offline and nothing acknowledged is lost.  The controller's rules on a store, then
the kernel's two-phase stop in the deterministic simulator and in LocalCluster."""
from __future__ import annotations

import logging
import threading

import pytest

import pylog
from pylog import errors
from pylog.cluster import LocalCluster, broker_path
from pylog.cluster.admin import leaderships, request_controlled_shutdown
from pylog.cluster.kernel import KernelConfig
from pylog.cluster.simulator import SimProducer, Simulation
from tests.cluster.test_controller import Cluster

# ------------------------------------------------------------------ the controller's rules


def racks3(**kw):
    c = Cluster({1: "r1", 2: "r2", 3: "r3"}, **kw)
    c.controller.create_topic("t", 3, 3, {}, c.now)
    c.pump()
    return c


def test_shutting_down_leader_hands_over_and_leaves_every_isr(caplog):
    c = racks3()
    led = [p for p in range(3) if c.state("t", p).leader == 1]
    before = {p: c.state("t", p) for p in range(3)}
    assert led and leaderships(c.store, 1) == [("t", p) for p in led]
    with caplog.at_level(logging.INFO, logger="pylog.controller"):
        request_controlled_shutdown(c.store, 1)
        c.pump()
    for p in range(3):
        s = c.state("t", p)
        assert s.leader != 1 and 1 not in s.isr and len(s.isr) == 2, s
        # A leader change bumps the epoch; leaving the ISR of a partition it follows does not.
        assert s.leader_epoch == before[p].leader_epoch + (p in led)
    assert leaderships(c.store, 1) == []
    assert c.store.get(broker_path(1))[0] == {"rack": "r1", "shutting_down": True}
    moves = [r for r in caplog.records if "controlled shutdown of broker 1" in r.getMessage()]
    assert len(moves) == len(led) and all(r.levelno == logging.INFO for r in moves)
    request_controlled_shutdown(c.store, 1)  # idempotent
    # Shutting down, broker 1 is not preferred back, even though it is the first replica.
    assert c.controller.elect_preferred_leaders(c.now) == []
    assert all(c.state("t", p).leader != 1 for p in range(3))
    c.stop(1)  # the real stop changes nothing more: no offline partition, no election
    assert all(c.state("t", p).leader_epoch == before[p].leader_epoch + (p in led) for p in range(3))


def test_a_sole_isr_member_keeps_leading_until_it_really_goes():
    c = Cluster({1: "r1", 2: "r2"}, unclean_default=True)
    c.controller.create_topic("t", 1, 2, {}, c.now)
    c.pump()
    leader = c.state("t").leader
    other = 3 - leader
    c.set_isr("t", 0, [leader])  # the follower fell behind
    request_controlled_shutdown(c.store, leader)
    c.pump()
    s = c.state("t")
    assert (s.leader, s.isr) == (leader, (leader,))  # no clean candidate: no change, never unclean
    assert leaderships(c.store, leader) == [("t", 0)]
    assert leaderships(c.store, leader, movable_only=True) == []  # nothing to wait for
    c.stop(leader)  # now it is gone: the ordinary (here unclean) failover applies
    assert c.state("t").leader == other


def test_request_for_an_unregistered_broker_is_refused():
    c = racks3()
    with pytest.raises(errors.BrokerNotAvailable):
        request_controlled_shutdown(c.store, 7)


# ------------------------------------------------------------------ the simulator
FAST = {"replica_lag_time_max_ms": 30_000, "session_timeout_ms": 1_500, "heartbeat_interval_ms": 300,
        "replica_fetch_wait_max_ms": 100, "auto_leader_rebalance_enable": False}


def make_sim(seed, tmp_path, **kw):
    cfg = KernelConfig(**{**FAST, **kw}, topic_defaults={"segment.index.bytes": 4096})
    return Simulation(seed, tmp_path / f"sim{seed}", brokers=3, racks=["r1", "r2", "r3"], config=cfg)


def test_clean_stop_of_a_leader_moves_its_partitions_first(tmp_path, caplog):
    sim = make_sim(501, tmp_path)
    try:
        sim.create_topic("t", 3, 3, {"min.insync.replicas": 2})
        prod = SimProducer(sim, acks=-1)
        for p in range(3):
            assert prod.send("t", p, [b"before-%d" % p]).done
        assert sim.run_until(lambda: all(len(sim.state("t", p)["isr"]) == 3 for p in range(3)))
        victim = sim.leader("t", 0)
        led = [p for p in range(3) if sim.leader("t", p) == victim]
        epochs = {p: sim.state("t", p)["leader_epoch"] for p in range(3)}
        with caplog.at_level(logging.INFO):
            assert sim.kernel.begin_controlled_shutdown(victim, sim.now)
            # A produce issued while the shutdown is under way: at most one retriable failure.
            during = prod.send("t", 0, [b"during"])
            assert during.done and during.attempts <= 2
            while not sim.kernel.controlled_shutdown_done(victim, sim.now):
                sim.step()
            moved_at = sim.now
            assert sim.kernel.controlled_shutdown_done(victim, sim.now)
            for p in led:  # every partition already has another live leader
                assert sim.leader("t", p) not in (victim, -1)
            sim.stop(victim)
            stopped_at = sim.now
            after = [prod.send("t", p, [b"after-%d" % p]) for p in range(3)]
        assert all(s.done and s.attempts == 1 for s in after)  # no failure at all after the stop
        assert moved_at <= stopped_at
        for p in led:
            handover = [e for e in sim.kernel.events if e["type"] == "leader" and e["partition"] == p
                        and e["leader"] != victim and e["leader_epoch"] == epochs[p] + 1]
            assert handover and handover[0]["at_ms"] <= stopped_at, handover
        assert not [r for r in caplog.records if "is offline at leader epoch" in r.getMessage()]
        assert not prod.failed
        for _, p, off, v in prod.acked:  # nothing acknowledged is lost
            assert dict(sim.committed("t", p)).get(off) == v
    finally:
        sim.close()


def test_rolling_controlled_restart_under_acks_all_loses_nothing(tmp_path, caplog):
    sim = make_sim(502, tmp_path)
    try:
        sim.create_topic("t", 2, 3, {"min.insync.replicas": 2})
        prod = SimProducer(sim, acks=-1, lose_reply_rate=0.1)
        i = 0

        def produce(n):
            nonlocal i
            for _ in range(n):
                prod.send("t", i % 2, [b"r%05d" % i])
                i += 1

        with caplog.at_level(logging.WARNING, logger="pylog.controller"):
            produce(10)
            for broker in (1, 2, 3):
                sim.stop(broker)
                produce(10)
                sim.start(broker)
                for p in (0, 1):
                    assert sim.run_until(lambda p=p: len(sim.state("t", p)["isr"]) == 3, 30_000), sim.seed
                produce(5)
        assert not [r for r in caplog.records if "offline" in r.getMessage() and "t-" in r.getMessage()]
        assert not prod.failed
        for p in (0, 1):
            got = dict(sim.committed("t", p))
            for _, ap, off, v in prod.acked:
                if ap == p:
                    assert got.get(off) == v, f"seed {sim.seed}: acked {v!r} lost"
    finally:
        sim.close()


def test_controlled_shutdown_gives_up_after_its_retries(tmp_path, caplog):
    """With the controller stuck (paused: registered, but doing nothing) nobody moves the
    leaderships: each attempt waits retry.backoff, and the broker stops after max.retries
    attempts (measured in virtual time)."""
    sim = make_sim(503, tmp_path, controlled_shutdown_max_retries=2, controlled_shutdown_retry_backoff_ms=400)
    try:
        sim.create_topic("t", 3, 3)
        ctl = sim.kernel.controller_node().id
        leader = next(sim.leader("t", p) for p in range(3) if sim.leader("t", p) != ctl)
        sim.pause(ctl)
        start = sim.now
        with caplog.at_level(logging.WARNING, logger="pylog.replication"):
            sim.stop(leader)
        assert 800 <= sim.now - start <= 850
        msgs = [r.getMessage() for r in caplog.records]
        assert any("retrying controlled shutdown (attempt 2 of 2)" in m for m in msgs)
        assert any("controlled shutdown failed after 2 attempt(s)" in m for m in msgs)
    finally:
        sim.close()


# ------------------------------------------------------------------ LocalCluster
CLUSTER = {"replica.lag.time.max.ms": 10_000, "zookeeper.session.timeout.ms": 10_000,
           "log.index.size.max.bytes": 4096}


def test_local_cluster_clean_stop_keeps_producing_without_offline_window(tmp_path, caplog):
    with LocalCluster.open(tmp_path / "c", brokers=3, config=CLUSTER) as cluster:
        cluster.create_topic("t", 1, replication_factor=3, config={"min.insync.replicas": 2})
        acked, errors_seen = [], []
        stop = threading.Event()

        def produce():
            i = 0
            while not stop.is_set() or i < 50:
                try:
                    r = cluster.produce("t", 0, pylog.records.build_batch([b"v%05d" % i]), acks="all")
                    acked.append((r.base_offset, b"v%05d" % i))
                    i += 1
                except errors.NotLeaderOrFollower as exc:  # retriable: try the same record again
                    errors_seen.append(exc)

        t = threading.Thread(target=produce)
        leader = cluster.describe_topic("t").partitions[0].leader
        with caplog.at_level(logging.INFO):
            t.start()
            _wait(lambda: len(acked) >= 20)
            cluster.stop_broker(leader)
            n_at_stop = len(acked)
            _wait(lambda: len(acked) >= n_at_stop + 20)
            stop.set()
            t.join(60)
        assert not t.is_alive()
        assert len(errors_seen) <= 1, errors_seen
        row = cluster.describe_topic("t").partitions[0]
        assert row.leader not in (leader, -1) and leader not in row.isr
        msgs = [r.getMessage() for r in caplog.records]
        assert not [m for m in msgs if "offline at leader epoch" in m]
        took_over = next(i for i, m in enumerate(msgs) if f"leads t-0 at epoch {row.leader_epoch}" in m)
        gone = next(i for i, m in enumerate(msgs) if f"broker {leader} stopped (clean)" in m)
        assert took_over < gone  # the new leader led before the old one stopped
        logs = {b: part for b, part in _replicas(cluster, "t", 0).items()}
        for b, part in logs.items():
            hw = part.high_watermark  # (a follower's may still move up meanwhile)
            got = {rec.offset: rec.value for rec in part.log.records(max_offset=hw)}
            for off, v in acked:
                if off < hw:
                    assert got[off] == v, (b, off)
        assert [v for _, v in acked] == [b"v%05d" % i for i in range(len(acked))]
        assert logs[row.leader].high_watermark >= acked[-1][0] + 1
        cluster.start_broker(leader)


def _replicas(cluster, topic, partition):
    return {n.id: n.replicas[(topic, partition)].partition for n in cluster.kernel.nodes.values()
            if (topic, partition) in n.replicas}


def _wait(pred, timeout_s=30.0):
    import time
    deadline = time.monotonic() + timeout_s
    while not pred():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def test_controlled_shutdown_can_be_turned_off(tmp_path, caplog):
    cfg = dict(CLUSTER, **{"controlled.shutdown.enable": False})
    with LocalCluster.open(tmp_path / "c", brokers=2, config=cfg) as cluster:
        cluster.create_topic("t", 1, replication_factor=2)
        leader = cluster.describe_topic("t").partitions[0].leader
        with caplog.at_level(logging.INFO):
            cluster.stop_broker(leader)
        assert not [r for r in caplog.records if "controlled shutdown" in r.getMessage()]
        cluster.start_broker(leader)

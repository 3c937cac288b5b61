"""The scenarios operators tell about (issue 4, point 9), in the deterministic simulator.

Every test runs on a fixed seed; a failure message names it.
"""
from __future__ import annotations

import logging

import pytest

from pylog.cluster.kernel import STORE, KernelConfig
from pylog.cluster.simulator import SimProducer, Simulation

FAST = dict(replica_lag_time_max_ms=30_000, session_timeout_ms=1_500, heartbeat_interval_ms=300,
            replica_fetch_wait_max_ms=100, auto_leader_rebalance_enable=False)


def sim_for(seed, tmp_path, *, topic_defaults=None, **kw):
    cfg = KernelConfig(**{**FAST, **kw}, topic_defaults={"segment.index.bytes": 4096, **(topic_defaults or {})})
    return Simulation(seed, tmp_path / f"sim{seed}", brokers=3, racks=["r1", "r2", "r3"], config=cfg)


def values(sim, b, topic="t", p=0):
    return [v for _, v in sim.log_values(b, topic, p)]


def settle(sim, isr=3, topic="t", max_ms=60_000):
    assert sim.run_until(lambda: sim.leader(topic, 0) > 0 and len(sim.state(topic, 0)["isr"]) == isr, max_ms), \
        f"seed {sim.seed}: did not settle: {sim.state(topic, 0)}"


def three_replicas(sim):
    """Topic t (one partition, three replicas, min.insync.replicas=2) holding one record
    every replica has; returns an acks=all producer."""
    sim.create_topic("t", 1, 3, {"min.insync.replicas": 2})
    prod = SimProducer(sim, acks=-1)
    assert prod.send("t", 0, [b"x"]).done
    settle(sim)
    return prod


# ---------------------------------------------------------------- scenario a
@pytest.mark.parametrize("acks", [1, -1])
def test_a_leader_dies_before_followers_copy(tmp_path, acks):
    sim = sim_for(101, tmp_path)
    try:
        sim.create_topic("t", 1, 3, {"min.insync.replicas": 1 if acks == 1 else 2})
        prod = SimProducer(sim, acks=acks, idempotent=False)
        assert prod.send("t", 0, [b"a"]).done
        settle(sim)
        sim.run_for(500)
        old = sim.leader("t", 0)
        followers = [b for b in (1, 2, 3) if b != old]
        sim.partition_network([old], followers)  # the followers stop copying
        b_send = prod.send("t", 0, [b"b"], max_attempts=1, timeout_ms=1_000)
        assert b_send.done == (acks == 1)  # acks=1: the leader alone acknowledges b
        assert b"b" in values(sim, old)
        sim.kill(old)
        sim.heal()
        assert sim.run_until(lambda: sim.leader("t", 0) in followers, 10_000)
        new = sim.leader("t", 0)
        assert prod.send("t", 0, [b"c"]).done and prod.send("t", 0, [b"d"]).done
        sim.start(old)
        settle(sim)
        sim.run_for(1_000)
        for broker in (1, 2, 3):  # the old leader truncated b: every replica agrees
            assert values(sim, broker) == [b"a", b"c", b"d"], (sim.seed, broker, values(sim, broker))
        acked = [v for _, _, _, v in prod.acked]
        if acks == 1:
            assert b"b" in acked  # acknowledged, and lost: what acks=1 risks
        else:
            assert b"b" not in acked  # never acknowledged ...
        committed = [v for _, v in sim.committed("t", 0)]
        lost = [v for v in acked if v not in committed]
        assert lost == ([b"b"] if acks == 1 else [])  # ... so with acks=all nothing acked is lost
        assert new != old
    finally:
        sim.close()


# ---------------------------------------------------------------- scenario b
def replicated(sim, brokers, n, topic="t"):
    """Wait until every broker in ``brokers`` holds ``n`` records."""
    assert sim.run_until(lambda: all(len(sim.log_values(b, topic, 0)) >= n for b in brokers), 10_000), \
        f"seed {sim.seed}: not replicated to {brokers}"


def rack_story(sim, topic="t", config=None):
    """a; rack 1 off; b; rack 2 off; c; rack 3 off.  Each write reaches the brokers still
    up before the next rack goes (as in the story).  Returns the producer."""
    sim.create_topic(topic, 1, 3, {"min.insync.replicas": 1, **(config or {})})
    prod = SimProducer(sim, acks=1, idempotent=False)
    assert prod.send(topic, 0, [b"a"]).done
    replicated(sim, (1, 2, 3), 1, topic)
    for rack_broker, value, n in ((1, b"b", 2), (2, b"c", 3)):
        sim.power_off(rack_broker)
        assert sim.run_until(lambda: rack_broker not in sim.state(topic, 0)["isr"]
                             and sim.kernel.leader_of(topic, 0) is not None, 10_000)
        assert prod.send(topic, 0, [value]).done
        replicated(sim, [b for b in (2, 3) if b > rack_broker], n, topic)
    sim.power_off(3)
    sim.run_for(3_000)
    assert sim.kernel.leader_of(topic, 0) is None  # nobody left: offline (and no controller)
    return prod


@pytest.mark.parametrize("unclean", [False, True])
def test_b_rack_3_returns_first_no_loss(tmp_path, unclean):
    sim = sim_for(202, tmp_path, topic_defaults={"flush.messages": 1}, unclean_leader_election_enable=unclean)
    try:
        rack_story(sim)
        sim.start(3)
        assert sim.run_until(lambda: sim.leader("t", 0) == 3, 10_000)
        sim.start(1)
        sim.start(2)
        settle(sim)
        sim.run_for(1_000)
        assert [v for _, v in sim.committed("t", 0)] == [b"a", b"b", b"c"]
        assert sim.loss_ledger() == []
    finally:
        sim.close()


def test_b_rack_1_first_with_unclean_election_loses_b_and_c_and_says_so(tmp_path, caplog):
    sim = sim_for(203, tmp_path, topic_defaults={"flush.messages": 1})
    try:
        # The topic opts in to unclean election (per topic), as in the example.
        prod = rack_story(sim, "u", {"unclean.leader.election.enable": True})
        with caplog.at_level(logging.ERROR):
            sim.start(1)
            assert sim.run_until(lambda: sim.leader("u", 0) == 1, 10_000)  # out of sync, yet it leads
            assert prod.send("u", 0, [b"d"]).done
            sim.start(2)
            sim.start(3)
            settle(sim, topic="u")
            sim.run_for(1_000)
        assert [v for _, v in sim.committed("u", 0)] == [b"a", b"d"]  # b and c are gone
        for broker in (1, 2, 3):
            assert values(sim, broker, "u") == [b"a", b"d"]
        ledger = [e for e in sim.loss_ledger() if e.get("topic") == "u" and e.get("partition") == 0]
        assert any(e.get("reason") == "unclean election" for e in ledger), ledger
        losses = [e for e in ledger if "first_offset" in e]
        assert losses and min(e["first_offset"] for e in losses) == 1 \
            and max(e["end_offset"] for e in losses) == 3, ledger  # offsets 1..2: b and c
        assert any(r.levelno >= logging.ERROR for r in caplog.records)
    finally:
        sim.close()


def test_b_rack_1_first_with_clean_election_stays_offline_then_no_loss(tmp_path):
    sim = sim_for(204, tmp_path, topic_defaults={"flush.messages": 1})
    try:
        rack_story(sim)
        sim.start(1)
        sim.run_for(5_000)
        assert sim.leader("t", 0) == -1  # 1 is not in the ISR: the partition stays offline
        assert sim.kernel.leader_of("t", 0) is None
        sim.start(3)
        assert sim.run_until(lambda: sim.leader("t", 0) == 3, 10_000)
        sim.start(2)
        settle(sim)
        sim.run_for(1_000)
        assert [v for _, v in sim.committed("t", 0)] == [b"a", b"b", b"c"]
        for broker in (1, 2, 3):
            assert values(sim, broker) == [b"a", b"b", b"c"]
        assert sim.loss_ledger() == []
    finally:
        sim.close()


# ---------------------------------------------------------------- scenario c
def test_c_paused_follower_leaves_isr_loudly_and_rejoins(tmp_path, caplog):
    sim = sim_for(301, tmp_path, replica_lag_time_max_ms=2_000)
    try:
        prod = three_replicas(sim)
        follower = [b for b in (1, 2, 3) if b != sim.leader("t", 0)][0]
        with caplog.at_level(logging.WARNING, logger="pylog.replication"):
            sim.pause(follower)
            for i in range(10):
                prod.send("t", 0, [b"y%d" % i])
                sim.run_for(300)
            assert sim.run_until(lambda: follower not in sim.state("t", 0)["isr"], 10_000)
        shrink = [r for r in caplog.records if "ISR shrink" in r.getMessage()]
        assert shrink and f"{follower}" in shrink[0].getMessage() and "t-0" in shrink[0].getMessage()
        assert shrink[0].levelno == logging.WARNING
        m = sim.kernel.metrics()
        assert m["isr_shrinks_total"] >= 1 and m["under_replicated_partitions"] == 1
        sim.resume(follower)
        settle(sim)
        assert sim.kernel.metrics()["isr_expands_total"] >= 1
        assert sim.kernel.metrics()["under_replicated_partitions"] == 0
    finally:
        sim.close()


def test_c_a_follower_cut_from_the_store_joins_no_isr_until_it_registers_again(tmp_path):
    """A follower cut off from the metadata store (not from its leader): its session ends,
    the controller takes it out of the ISR, and it goes on fetching.  No leader takes it
    back while it is not registered — the controller would take it out again at once, and
    the ISR would flap at every fetch (found with real processes: a broker resumed after
    its session ended fetched for a while before it registered again).  Once it reaches
    the store again it registers and rejoins, once."""
    sim = sim_for(302, tmp_path, replica_lag_time_max_ms=2_000)
    try:
        prod = three_replicas(sim)
        follower = [b for b in (1, 2, 3) if b != sim.leader("t", 0)][0]
        sim.partition_network([follower], [STORE])
        assert sim.run_until(lambda: follower not in sim.state("t", 0)["isr"], 10_000), sim.seed
        cut_at = len(sim.kernel.events)
        for i in range(10):
            prod.send("t", 0, [b"y%d" % i])
            sim.run_for(300)
        assert len(values(sim, follower)) == 11  # it fetched everything ...
        rejoins = [e for e in sim.kernel.events[cut_at:] if e["type"] == "isr_expand" and follower in e["new_isr"]]
        assert rejoins == [] and follower not in sim.state("t", 0)["isr"], (sim.seed, rejoins[:3])  # ... and stayed out
        sim.heal()
        settle(sim)
        rejoins = [e for e in sim.kernel.events[cut_at:] if e["type"] == "isr_expand" and follower in e["new_isr"]]
        assert len(rejoins) == 1, (sim.seed, rejoins)
    finally:
        sim.close()


# ---------------------------------------------------------------- scenario d
def test_d_rolling_restart_under_idempotent_acks_all(tmp_path):
    sim = sim_for(401, tmp_path)
    try:
        sim.create_topic("t", 2, 3, {"min.insync.replicas": 2})
        prod = SimProducer(sim, acks=-1, lose_reply_rate=0.1)
        i = 0

        def produce(n):
            nonlocal i
            for _ in range(n):
                prod.send("t", i % 2, [b"r%05d" % i])
                i += 1

        produce(10)
        for broker in (1, 2, 3):
            sim.stop(broker)
            produce(10)
            sim.start(broker)
            produce(5)
            for p in (0, 1):
                assert sim.run_until(lambda: len(sim.state("t", p)["isr"]) == 3, 30_000), sim.seed
            produce(5)
        sim.run_for(1_000)
        acked = {(p, off): v for _, p, off, v in prod.acked}
        assert len(acked) == i - len(prod.failed)
        for p in (0, 1):
            log = sim.committed("t", p)
            got = dict(log)
            for (ap, off), v in acked.items():
                if ap == p:
                    assert got.get(off) == v, f"seed {sim.seed}: acked {v!r} lost"
            vals = [v for _, v in log]
            assert len(vals) == len(set(vals)), f"seed {sim.seed}: a duplicate"
            assert vals == sorted(vals)  # per-partition order intact
    finally:
        sim.close()


def test_a_session_the_store_reports_expired_is_replaced_at_once(tmp_path):
    """A store that learns of an expiry by itself (ZooKeeper tells the client; here a
    heartbeat interval longer than the session) reports it at ``tick``: the broker
    registers again in that step, not at its next heartbeat, up to
    heartbeat_interval_ms later, while it would act on a dead session."""
    from pylog.cluster.kernel import ClusterKernel

    k = ClusterKernel(tmp_path, {1: "r1"}, config=KernelConfig(session_timeout_ms=1_000,
                                                               heartbeat_interval_ms=60_000))
    try:
        k.start_broker(1, 0)
        k.step(10)
        first = k.nodes[1].session
        assert k.store.exists("/brokers/ids/1") and k.nodes[1].registered
        k.step(1_500)  # the session has expired: the store reports it in this step
        assert k.nodes[1].session != first
        assert k.store.exists("/brokers/ids/1") and k.store.stat("/brokers/ids/1").ephemeral_owner == k.nodes[1].session
    finally:
        k.stop_broker(1, 2_000)


def test_a_leader_back_from_a_lost_session_follows_even_if_its_first_reread_fails(tmp_path):
    """A leader cut off from the store past its session: another broker is elected.  Back,
    it registers again and must re-read the partition states -- also when the store
    fails that re-read (a ZooKeeper connection still settling): the next step reads
    them all again, it follows the new leader and rejoins the ISR.  (Found with real
    processes: the failed re-read was not retried, the broker went on as the old
    leader and never rejoined the ISR.)"""
    from pylog.errors import MetadataStoreUnavailable

    sim = sim_for(311, tmp_path, replica_lag_time_max_ms=2_000)
    try:
        prod = three_replicas(sim)
        old = sim.leader("t", 0)
        sim.partition_network([old], [STORE])
        assert sim.run_until(lambda: sim.leader("t", 0) not in (old, -1), 20_000), (sim.seed, sim.state("t", 0))
        k = sim.kernel
        real = k._apply_partition_states
        failed = []

        def first_reread_fails(node, now, changed=None):
            if node.id == old and not failed:
                failed.append(now)
                raise MetadataStoreUnavailable("the store dropped the read (injected)")
            return real(node, now, changed)

        k._apply_partition_states = first_reread_fails
        sim.heal()
        settle(sim)
        assert failed, "the injected failure never happened"
        assert sim.leader("t", 0) != old and old in sim.state("t", 0)["isr"]
        assert prod.send("t", 0, [b"y"]).done
        assert values(sim, old) == [b"x", b"y"]
    finally:
        sim.close()

"""The replication throttle (Kafka's leader/follower.replication.throttled.rate and
.replicas): the token bucket, its configuration by a throttled reassignment, and the
bytes it lets through per virtual second in the deterministic simulator."""
from __future__ import annotations

import itertools

import pytest

from pylog import errors
from pylog.broker.config import TopicConfig
from pylog.cluster import topic_path
from pylog.cluster.admin import (
    list_reassignments,
    reassignment_result,
    request_reassignment,
)
from pylog.cluster.controller import THROTTLED_REPLICAS
from pylog.cluster.kernel import KernelConfig
from pylog.cluster.simulator import SimProducer, Simulation
from pylog.cluster.throttle import (
    DEFAULT_BROKER_CONFIG_PATH,
    TokenBucket,
    read_throttle_rates,
    set_replication_throttle,
)
from tests.cluster.test_reassignment import four

LEADER = "leader.replication.throttled.replicas"
FOLLOWER = "follower.replication.throttled.replicas"


def test_token_bucket_refills_on_the_given_time_and_allows_one_overdraft():
    b = TokenBucket(1_000, now=0)
    assert b.allowance(0) == 1_000  # one second's worth saved up
    b.consume(2_500, 0)  # a send may overdraw ...
    assert b.allowance(0) == 0 and b.ready_at(0) == 1_501  # ... and the debt is paid back first
    assert b.allowance(1_500) == 0 and b.allowance(1_600) == 100
    assert b.allowance(60_000) == 1_000  # never more than one second's worth
    b.set_rate(10, 60_000)
    assert b.allowance(60_000) == 10


def test_throttled_replicas_configs_are_validated():
    cfg = TopicConfig.build({LEADER: "0:1,0:2", FOLLOWER: "*"})
    assert cfg.values[LEADER] == "0:1,0:2" and cfg.values[FOLLOWER] == "*"
    assert TopicConfig.build({}).values[LEADER] == ""
    assert TopicConfig.build({LEADER: " 0:1, 1:2 ,"}).values[LEADER] == " 0:1, 1:2 ,"  # blanks, empty items
    for bad in ("0-1", "a:1", "0:1:2", "-1:1", 5, ["0:1"]):
        with pytest.raises(errors.InvalidConfig, match=LEADER):
            TopicConfig.build({LEADER: bad})


def test_rates_per_broker_override_the_default_node():
    c, _, _ = four()
    assert read_throttle_rates(c.store, 1) == (None, None)
    set_replication_throttle(c.store, 500)
    set_replication_throttle(c.store, 700, broker_id=2)
    assert read_throttle_rates(c.store, 1) == (500, 500) and read_throttle_rates(c.store, 2) == (700, 700)
    assert c.store.get(DEFAULT_BROKER_CONFIG_PATH)[0]["config"] == {
        "leader.replication.throttled.rate": "500", "follower.replication.throttled.rate": "500"}
    set_replication_throttle(c.store, None)
    assert read_throttle_rates(c.store, 1) == (None, None)
    with pytest.raises(errors.InvalidConfig):
        set_replication_throttle(c.store, 0)


def test_a_throttled_reassignment_sets_and_then_clears_its_throttle():
    c, (a, b), (x, _) = four()
    c.controller.alter_topic_config("t", {LEADER: "5:9"}, c.now)  # an operator's own entry stays
    request_reassignment(c.store, {("t", 0): [x, b]}, throttle_bytes_per_s=4_096)
    c.pump()
    node = c.store.get(topic_path("t"))[0]
    assert node["config"][LEADER] == ",".join(sorted([f"0:{a}", f"0:{b}", "5:9"]))  # the original replicas
    assert node["config"][FOLLOWER] == f"0:{x}"  # the added one
    assert node[THROTTLED_REPLICAS] == {"0": {"leader": [a, b], "follower": [x]}}
    assert read_throttle_rates(c.store, x) == (4_096, 4_096)
    c.set_isr("t", 0, [a, b, x])  # completes
    node = c.store.get(topic_path("t"))[0]
    assert node["config"] == {LEADER: "5:9"} and THROTTLED_REPLICAS not in node
    assert read_throttle_rates(c.store, x) == (None, None)
    with pytest.raises(errors.InvalidConfig):
        request_reassignment(c.store, {("t", 0): [a, b]}, throttle_bytes_per_s=0)


def test_cancelling_a_throttled_reassignment_clears_its_throttle():
    c, (a, b), (x, _) = four()
    request_reassignment(c.store, {("t", 0): [x, b]}, throttle_bytes_per_s=1_000)
    c.pump()
    request_reassignment(c.store, {("t", 0): None})
    c.pump()
    node = c.store.get(topic_path("t"))[0]
    assert LEADER not in node["config"] and FOLLOWER not in node["config"] and not list_reassignments(c.store)
    assert read_throttle_rates(c.store, a) == (None, None)


# ------------------------------------------------------------------ bytes per virtual second
FAST = {"replica_lag_time_max_ms": 30_000, "session_timeout_ms": 1_500, "heartbeat_interval_ms": 300,
        "replica_fetch_wait_max_ms": 100, "auto_leader_rebalance_enable": False}
RATE = 10_000  # bytes/s
BATCHES = 60


def moved_per_second(tmp_path, seed, *, throttle=None, topic_config=None, **kernel):
    """A 1-partition topic on two of brokers 1-3 with ~60 KB; reassigned to broker 4 plus
    one of the originals.  Returns (bytes on broker 4 at each virtual second since the
    request, total bytes, the largest batch, ms until the reassignment completed)."""
    cfg = KernelConfig(**FAST, **kernel, topic_defaults={"segment.index.bytes": 4096})
    sim = Simulation(seed, tmp_path / f"sim{seed}", brokers=4, config=cfg)
    try:
        sim.stop(4)
        sim.create_topic("t", 1, 2, {"min.insync.replicas": 1, **(topic_config or {})})
        prod = SimProducer(sim, acks=-1)
        for i in range(BATCHES):
            assert prod.send("t", 0, [b"%04d" % i + b"x" * 196] * 5).done
        sim.start(4)
        sim.run_for(200)
        leader = sim.leader("t", 0)
        part = sim.kernel.nodes[leader].replicas[("t", 0)].partition
        total = part.log.size_bytes
        biggest = max(b.size_bytes for b in part.read(0, 1 << 30, to_log_end=True))
        keep = next(b for b in sim.state("t", 0)["isr"] if b != leader)
        rid = request_reassignment(sim.kernel.store, {("t", 0): [4, keep]}, throttle_bytes_per_s=throttle)
        start, samples = sim.now, []
        sim.step()  # the controller takes the request
        assert reassignment_result(sim.kernel.store, rid) == {("t", 0): {"error": "NONE", "message": ""}}

        def on_4():
            r = sim.kernel.nodes[4].replicas.get(("t", 0))
            return 0 if r is None else r.partition.log.size_bytes

        while list_reassignments(sim.kernel.store) and sim.now - start < 60_000:
            sim.run_for(start + 1_000 * (len(samples) + 1) - sim.now)
            samples.append(on_4())
        assert not list_reassignments(sim.kernel.store), f"seed {seed}: did not complete"
        assert on_4() == total  # broker 4 has everything
        return samples, total, biggest, sim.now - start
    finally:
        sim.close()


def check_rate(samples, total, biggest):
    for second, moved in enumerate(samples, start=1):
        # At most the rate, plus one second's worth saved up, plus one overdrawn batch.
        assert moved <= RATE * (second + 1) + biggest, (second, moved, samples)
    steady = [b - a for a, b in itertools.pairwise(samples) if b < total]
    assert steady and all(RATE // 2 <= s <= RATE + biggest for s in steady), samples


def test_a_throttled_reassignment_copies_at_the_rate(tmp_path):
    fast, total, _, fast_ms = moved_per_second(tmp_path, 701)
    assert fast_ms <= 1_000 and fast[0] == total  # unthrottled: all in the first virtual second
    samples, total, biggest, took_ms = moved_per_second(tmp_path, 702, throttle=RATE)
    assert total > 5 * RATE
    check_rate(samples, total, biggest)
    assert took_ms >= (total - RATE - biggest) * 1000 // RATE  # it cannot have gone faster


def test_a_static_leader_side_rate_from_kernel_config(tmp_path):
    """KernelConfig's leader rate, the topic's leader replicas all throttled ("*"), no
    throttle on the request: the leader side alone holds the copying to the rate."""
    samples, total, biggest, _ = moved_per_second(tmp_path, 703, topic_config={LEADER: "*"},
                                                  leader_replication_throttled_rate=RATE)
    check_rate(samples, total, biggest)
    # The rate alone does nothing: no replica is listed as throttled.
    samples, total, _, _ = moved_per_second(tmp_path, 704, leader_replication_throttled_rate=RATE)
    assert samples[0] == total

"""A deterministic fault simulator for the replicated cluster.

:class:`Simulation` drives the same :class:`~pylog.cluster.kernel.ClusterKernel` as
LocalCluster, but on a virtual clock with a seeded RNG: messages are delayed,
reordered and dropped; links (also to the metadata store) can be cut; brokers can be
paused, killed (the page cache survives) or lose power (unflushed bytes are lost and
tails torn).  Everything random comes from the seed, so a failing run is reproduced
from its seed alone: ``pylog simulate --seed N``.

:func:`random_run` is one randomised run with an invariant checker:

* no acknowledged record is lost under acks=all, min.insync.replicas >= 2 and clean
  election (when fewer than min.insync.replicas replicas lose their disks: power loss
  only hits flushed-everything brokers here, as every broker flushes each append);
* replicas agree below the high watermark;
* the high watermark never moves backwards on a leader (within its epoch);
* consumers never see data above the HW: everything a consumer read stays in the log.
"""
from __future__ import annotations

import random
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from pylog.cluster.kernel import CLIENT, STORE, ClusterKernel, KernelConfig, Network
from pylog.errors import PylogError
from pylog.records import build_batch

__all__ = ["Simulation", "SimProducer", "InvariantViolation", "random_run", "RunReport"]


class InvariantViolation(AssertionError):
    """An invariant failed; the message names the seed that reproduces it."""


class Simulation:
    """Virtual-time driver of a cluster of ``brokers`` (ids 1..n, broker i on racks[i-1])."""

    def __init__(self, seed: int, root: Optional[Path] = None, *, brokers: int = 3,
                 racks: Optional[List[str]] = None, config: Optional[KernelConfig] = None,
                 min_delay_ms: int = 0, max_delay_ms: int = 0, drop_rate: float = 0.0,
                 step_ms: int = 5) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self._own_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix=f"pylog-sim-{seed}-")) if root is None else Path(root)
        net = Network(random.Random(self.rng.random()), min_delay_ms=min_delay_ms, max_delay_ms=max_delay_ms,
                      drop_rate=drop_rate)
        ids = {i + 1: (racks[i] if racks else f"r{i + 1}") for i in range(brokers)}
        self.kernel = ClusterKernel(self.root, ids, config=config or KernelConfig(), network=net)
        self.now = 0
        self.step_ms = step_ms
        self.hw_seen: Dict[Tuple[int, str, int, int], int] = {}  # (broker, topic, p, epoch) -> HW
        self.violations: List[str] = []
        for b in ids:
            self.kernel.start_broker(b, self.now)
        self.run_for(100)

    # -------------------------------------------------------------- time
    def step(self) -> None:
        self.now += self.step_ms
        self.kernel.step(self.now)
        self._watch_hw()

    def run_for(self, ms: int) -> None:
        end = self.now + ms
        while self.now < end:
            self.step()

    def run_until(self, pred: Callable[[], bool], max_ms: int = 60_000) -> bool:
        end = self.now + max_ms
        while self.now < end:
            if pred():
                return True
            self.step()
        return pred()

    def _watch_hw(self) -> None:
        for b, node in self.kernel.nodes.items():
            if not node.running:
                continue
            for tp, r in node.replicas.items():
                if r.state.role != "leader":
                    continue
                key = (b, tp[0], tp[1], r.state.leader_epoch)
                hw = r.state.high_watermark
                prev = self.hw_seen.get(key, -1)
                if hw < prev:
                    self.violations.append(f"HW of {tp} on leader {b} epoch {key[3]} went back {prev} -> {hw}")
                self.hw_seen[key] = hw

    # ------------------------------------------------------------ faults
    def kill(self, b: int) -> None:
        self.kernel.stop_broker(b, self.now, mode="kill")

    def power_off(self, b: int) -> None:
        self.kernel.stop_broker(b, self.now, mode="power", rng=self.rng)

    def stop(self, b: int, *, controlled: bool = True) -> None:
        """A clean stop; with ``controlled`` (and controlled.shutdown.enable), Kafka's
        controlled shutdown first, stepping virtual time until it is done."""
        if controlled and self.kernel.begin_controlled_shutdown(b, self.now):
            while not self.kernel.controlled_shutdown_done(b, self.now):
                self.step()
            self.step()  # the new leaders take over before the old one goes
        self.kernel.stop_broker(b, self.now, mode="clean")

    def start(self, b: int) -> None:
        self.kernel.start_broker(b, self.now)

    def pause(self, b: int) -> None:
        self.kernel.pause_broker(b)

    def resume(self, b: int) -> None:
        self.kernel.resume_broker(b)

    def partition_network(self, side_a: List[Any], side_b: List[Any]) -> None:
        for a in side_a:
            for b in side_b:
                self.kernel.network.cut(a, b)

    def heal(self) -> None:
        self.kernel.network.heal()

    # ------------------------------------------------------------ topics
    def create_topic(self, topic: str, partitions: int, replication_factor: int,
                     config: Optional[Dict[str, Any]] = None) -> None:
        self.kernel.create_topic(topic, partitions, replication_factor, dict(config or {}), self.now)
        ok = self.run_until(lambda: all(self.kernel.leader_of(topic, p) is not None
                                        for p in range(partitions)), 10_000)
        if not ok:
            raise InvariantViolation(f"seed {self.seed}: {topic} got no leaders")

    def state(self, topic: str, p: int) -> Dict[str, Any]:
        return self.kernel.partition_state(topic, p)[0]

    def leader(self, topic: str, p: int) -> int:
        return self.state(topic, p)["leader"]

    def log_values(self, b: int, topic: str, p: int, below_hw: bool = False) -> List[Tuple[int, bytes]]:
        """(offset, value) of broker ``b``'s replica (optionally only below its HW)."""
        r = self.kernel.nodes[b].replicas.get((topic, p))
        if r is None:
            return []
        end = r.partition.high_watermark if below_hw else None
        return [(rec.offset, rec.value) for rec in r.partition.log.records(max_offset=end)]

    def committed(self, topic: str, p: int) -> List[Tuple[int, bytes]]:
        node = self.kernel.leader_of(topic, p)
        return [] if node is None else self.log_values(node.id, topic, p, below_hw=True)

    def loss_ledger(self) -> List[Dict[str, Any]]:
        from pylog.cluster.controller import read_loss_ledger

        return read_loss_ledger(self.kernel.store)

    def close(self) -> None:
        for b in list(self.kernel.nodes):
            if self.kernel.nodes[b].status != "stopped":
                self.kernel.stop_broker(b, self.now)
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class _Send:
    topic: str
    partition: int
    values: List[bytes]
    seq: int
    done: bool = False
    error: Optional[PylogError] = None
    offset: int = -1
    attempts: int = 0


class SimProducer:
    """An idempotent producer inside the simulation: one batch per send, retried on
    retriable errors (and on replies the simulation decides to lose)."""

    def __init__(self, sim: Simulation, *, acks: int = -1, idempotent: bool = True,
                 lose_reply_rate: float = 0.0) -> None:
        self.sim = sim
        self.acks = acks
        self.pid, self.epoch = (sim.kernel.store_next_pid(), 0) if hasattr(sim.kernel, "store_next_pid") \
            else (sim.rng.randrange(1 << 40), 0)
        if not idempotent:
            self.pid = -1
        self.seq: Dict[Tuple[str, int], int] = {}
        self.lose_reply_rate = lose_reply_rate
        self.acked: List[Tuple[str, int, int, bytes]] = []  # topic, partition, offset, value
        self.failed: List[_Send] = []

    def send(self, topic: str, partition: int, values: List[bytes], *, max_attempts: int = 50,
             retry_ms: int = 100, timeout_ms: int = 5_000) -> _Send:
        tp = (topic, partition)
        seq = self.seq.get(tp, 0)
        self.seq[tp] = seq + len(values)
        s = _Send(topic, partition, values, seq)
        data = build_batch(values, producer_id=self.pid, producer_epoch=self.epoch,
                           base_sequence=seq if self.pid >= 0 else -1)
        while not s.done and s.attempts < max_attempts:
            s.attempts += 1
            box: List[Any] = []
            self.sim.kernel.produce(topic, partition, data, self.acks,
                                    lambda e, r: box.append((e, r)), via=CLIENT)
            self.sim.run_until(lambda: bool(box), timeout_ms)
            if not box:
                s.error = None  # timed out: retry (the write may or may not have happened)
                self.sim.run_for(retry_ms)
                continue
            err, res = box[0]
            if err is None and self.sim.rng.random() < self.lose_reply_rate:
                self.sim.run_for(retry_ms)  # the reply was lost: the producer retries
                continue
            if err is None:
                s.done, s.offset = True, res.base_offset
                for i, v in enumerate(values):
                    self.acked.append((topic, partition, res.base_offset + i, v))
                return s
            s.error = err
            if not getattr(err, "retriable", False):
                break
            self.sim.run_for(retry_ms)
        self.failed.append(s)
        if self.pid >= 0:
            # As Kafka's idempotent producer after a batch it gave up on (KIP-360): a new
            # epoch, whose sequences start again at 0, so later batches are not out of order.
            self.epoch += 1
            self.seq = {}
        return s


@dataclass
class RunReport:
    seed: int
    acked: int
    failed: int
    faults: List[str] = field(default_factory=list)
    ledger: int = 0


def random_run(seed: int, *, steps: int = 30, root: Optional[Path] = None,
               unclean: bool = False) -> RunReport:
    """One randomised run; raises InvariantViolation (naming ``seed``) on a violation."""
    cfg = KernelConfig(replica_lag_time_max_ms=2_000, session_timeout_ms=1_500, heartbeat_interval_ms=300,
                       replica_fetch_wait_max_ms=100, unclean_leader_election_enable=unclean,
                       leader_imbalance_check_interval_ms=3_000,
                       topic_defaults={"flush.messages": 1, "segment.bytes": 1 << 16,
                                       "segment.index.bytes": 4096})
    sim = Simulation(seed, root, brokers=3, config=cfg, min_delay_ms=0, max_delay_ms=20, drop_rate=0.02)
    rng = sim.rng
    faults: List[str] = []
    try:
        sim.create_topic("t", 2, 3, {"min.insync.replicas": 2})
        prod = SimProducer(sim, acks=-1, lose_reply_rate=0.05)
        consumed: List[Tuple[int, int, bytes]] = []
        positions = {0: 0, 1: 0}
        down: List[int] = []
        paused: List[int] = []
        for i in range(steps):
            roll = rng.random()
            live = [b for b in sim.kernel.nodes if b not in down]
            if roll < 0.12 and len(down) < 1 and live:
                b = rng.choice(live)
                kind = rng.choice(["kill", "power", "stop"])
                getattr(sim, {"kill": "kill", "power": "power_off", "stop": "stop"}[kind])(b)
                down.append(b)
                faults.append(f"{sim.now}: {kind} broker {b}")
            elif roll < 0.24 and down:
                b = down.pop()
                sim.start(b)
                faults.append(f"{sim.now}: start broker {b}")
            elif roll < 0.30 and not paused:
                b = rng.choice(list(sim.kernel.nodes))
                sim.pause(b)
                paused.append(b)
                faults.append(f"{sim.now}: pause broker {b}")
            elif roll < 0.36 and paused:
                sim.resume(paused.pop())
                faults.append(f"{sim.now}: resume")
            elif roll < 0.42:
                a = rng.choice(list(sim.kernel.nodes))
                other = [x for x in sim.kernel.nodes if x != a] + [STORE]
                sim.partition_network([a], rng.sample(other, rng.randint(1, len(other))))
                faults.append(f"{sim.now}: cut broker {a}")
            elif roll < 0.50:
                sim.heal()
                faults.append(f"{sim.now}: heal")
            p = rng.randrange(2)
            prod.send("t", p, [b"s%d-%d-%d" % (seed, i, k) for k in range(rng.randint(1, 4))],
                      max_attempts=3, timeout_ms=3_000)
            # A consumer reads what is committed.
            for part in (0, 1):
                for off, v in sim.committed("t", part):
                    if off >= positions[part]:
                        consumed.append((part, off, v))
                        positions[part] = off + 1
            sim.run_for(rng.randint(0, 500))
        # Recovery: heal, resume, restart everything, let the cluster settle.
        sim.heal()
        for b in paused:
            sim.resume(b)
        for b in down:
            sim.start(b)
        sim.run_until(lambda: all(len(sim.state("t", p)["isr"]) == 3 and sim.leader("t", p) > 0
                                  for p in (0, 1)), 120_000)
        sim.run_for(2_000)
        _check(sim, prod, consumed, unclean, faults)
        return RunReport(seed, len(prod.acked), len(prod.failed), faults, len(sim.loss_ledger()))
    finally:
        sim.close()


def _check(sim: Simulation, prod: SimProducer, consumed: List[Tuple[int, int, bytes]], unclean: bool,
           faults: List[str]) -> None:
    problems = list(sim.violations)
    logs = {p: dict(sim.committed("t", p)) for p in (0, 1)}
    if not unclean:
        for topic, p, off, v in prod.acked:
            if logs[p].get(off) != v:
                problems.append(f"acked record {v!r} at {topic}-{p}@{off} is {logs[p].get(off)!r} now")
        for p, off, v in consumed:
            if logs[p].get(off) != v:
                problems.append(f"consumed record {v!r} at t-{p}@{off} is {logs[p].get(off)!r} now")
    for p in (0, 1):
        values = [v for _, v in sorted(logs[p].items())]
        if len(values) != len(set(values)):
            problems.append(f"t-{p} holds a record twice (idempotence failed)")
        leader = sim.leader("t", p)
        hw = len(logs[p]) and max(logs[p]) + 1
        ref = [(o, v) for o, v in sorted(logs[p].items())]
        for b in sim.kernel.nodes:
            if b == leader:
                continue
            mine = [(o, v) for o, v in sim.log_values(b, "t", p) if o < hw]
            if mine != ref[:len(mine)]:
                problems.append(f"replica {b} of t-{p} disagrees with leader {leader} below the HW")
    if problems:
        raise InvariantViolation(f"seed {sim.seed}: " + "; ".join(problems[:5])
                                 + f"\nfaults: {faults}\nreproduce: pylog simulate --seed {sim.seed}")

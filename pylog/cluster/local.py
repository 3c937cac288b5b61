"""LocalCluster: several replicated brokers in one process, on wall-clock time.

The same :class:`~pylog.cluster.kernel.ClusterKernel` the simulator drives, here
stepped by a background thread (and by a producer waiting for its acks), with
instant message delivery.  It offers the request methods the clients use, so
``pylog.Producer(cluster)`` and ``pylog.Consumer(cluster)`` work as on one broker:
requests go to each partition's current leader, and consumers read below its high
watermark.

Brokers are numbered 1..n (broker *i* is on ``racks[i-1]``).  The metadata store is
in memory; its persistent part is saved to ``metadata.json`` at close and loaded at
open, so a reopened cluster has its topics.

The background thread also does each broker's housekeeping, as a Kafka broker does
for its own replicas: retention (log.retention.check.interval.ms), producer-id
expiry (producer.id.expiration.ms) and compaction of compacted topics
(log.cleaner.enable, every log.cleaner.backoff.ms); :meth:`LocalCluster.run_housekeeping`
runs it on demand.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from pylog.broker.broker import parse_acks, validate_topic_name
from pylog.broker.interface import FetchResult
from pylog.broker.config import BrokerConfig
from pylog.broker.maintenance import LogMaintenance
from pylog.broker.partition import AppendResult
from pylog.cluster.kernel import ClusterKernel, KernelConfig
from pylog.cluster.metadata import InMemoryMetadataStore
from pylog.errors import (
    BrokerClosed,
    InvalidConfig,
    InvalidReplicationFactor,
    NoNode,
    NotLeaderOrFollower,
    PylogError,
    RequestTimedOut,
    StorageError,
    TopicAlreadyExists,
    UnknownTopicOrPartition,
)
from pylog.storage.log import EARLIEST_TIMESTAMP, LATEST_TIMESTAMP
from pylog.util import check_int, now_ms as _now_ms

__all__ = ["LocalCluster"]

log = logging.getLogger("pylog.cluster")

_EPHEMERAL_PREFIXES = ("/brokers/ids/", "/controller")
#: Broker settings of the housekeeping (Kafka names), validated as the Broker's.
_HOUSEKEEPING_KEYS = ("log.retention.check.interval.ms", "log.cleaner.enable", "log.cleaner.backoff.ms",
                      "producer.id.expiration.ms", "producer.id.expiration.check.interval.ms")
_OFFSETS_TOPIC = "__consumer_offsets"


class LocalCluster:
    """An in-process cluster of ``brokers`` replicated brokers; see the module docstring."""

    #: acks=all waits for followers: the Producer keeps several batches in flight.
    pipelined_produce = True

    def __init__(self, root: Path, kernel: ClusterKernel, tick_ms: float,
                 housekeeping: Optional[BrokerConfig] = None) -> None:
        self.root = root
        self.kernel = kernel
        self._maintenance = LogMaintenance(housekeeping or BrokerConfig(), _now_ms)
        self._last_hk_check = 0.0
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._tick_s = tick_ms / 1000.0
        self._closed = False
        self._stop = threading.Event()
        self._groups: Any = None
        kernel.on_data(self._notify)
        self._thread = threading.Thread(target=self._run, name="pylog-cluster", daemon=True)

    # ================================================================ open/close
    @classmethod
    def open(cls, data_dir: Union[str, os.PathLike], brokers: int = 3, racks: Optional[Sequence[str]] = None,
             config: Optional[Mapping[str, Any]] = None, *, tick_ms: float = 5.0) -> "LocalCluster":
        """Start ``brokers`` brokers on ``data_dir`` (``broker-<id>/`` each).

        ``config`` takes Kafka names: replica.lag.time.max.ms,
        zookeeper.session.timeout.ms, unclean.leader.election.enable (broker default),
        auto.leader.rebalance.enable, leader.imbalance.check.interval.seconds,
        replica.fetch.wait.max.ms, the housekeeping settings
        (log.retention.check.interval.ms, log.cleaner.enable, log.cleaner.backoff.ms,
        producer.id.expiration.ms, producer.id.expiration.check.interval.ms), and topic
        defaults (log.segment.bytes, ...).
        """
        check_int("brokers", brokers, min=1, max=64, error=InvalidConfig)
        if racks is not None and (len(racks) != brokers or not all(isinstance(r, str) for r in racks)):
            raise InvalidConfig(f"racks must name one rack per broker ({brokers}), got {racks!r}")
        config = dict(config or {})
        hk = BrokerConfig.from_settings({k: config.pop(k) for k in _HOUSEKEEPING_KEYS if k in config})
        kcfg = _kernel_config(config)
        root = Path(data_dir)
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create {root}: {exc}") from exc
        store = InMemoryMetadataStore()
        _load_store(store, root / "metadata.json")
        ids = {i + 1: (racks[i] if racks else None) for i in range(brokers)}
        kernel = ClusterKernel(root, ids, config=kcfg, store=store)
        c = cls(root, kernel, tick_ms, hk)
        now = _now_ms()
        with c._lock:
            for b in ids:
                kernel.start_broker(b, now)
            kernel.step(now)
        c._thread.start()
        c._await(lambda: kernel.controller_node() is not None, 10.0, "a controller")
        for t in kernel.topics():
            c._await_leaders(t, 10.0)
        return c

    def close(self) -> None:
        """Stop every broker cleanly and save the metadata."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._stop.set()
        self._thread.join()
        if self._groups is not None:
            self._groups.close()
        with self._lock:
            now = _now_ms()
            _save_store(self.kernel.store, self.root / "metadata.json")
            for b in list(self.kernel.nodes):
                self.kernel.stop_broker(b, now)
            self._cond.notify_all()

    def __enter__(self) -> "LocalCluster":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise BrokerClosed("the cluster is closed")

    def _run(self) -> None:
        while not self._stop.wait(self._tick_s):
            try:
                with self._lock:
                    self.kernel.step(_now_ms())
                    self._cond.notify_all()
            except Exception:
                log.exception("cluster step failed")
            if time.monotonic() - self._last_hk_check >= 1.0:
                self._last_hk_check = time.monotonic()
                try:
                    self.run_housekeeping()
                except Exception:
                    log.exception("cluster housekeeping failed")

    def run_housekeeping(self, now_ms: Optional[int] = None, *, force: bool = False) -> List[Any]:
        """Retention, producer-id expiry and compaction that are due (all with ``force``)
        on every replica of every running broker, leader or follower, each on its own
        log as a Kafka broker does.  Returns the cleaner's results."""
        now = _now_ms() if now_ms is None else now_ms
        with self._lock:
            if self._closed and not force:
                return []
            parts = [r.partition for node in self.kernel.nodes.values() if node.running
                     for r in node.replicas.values()]
        return self._maintenance.run(parts, now, force=force)

    def _notify(self) -> None:
        self._cond.notify_all()

    def _await(self, pred: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while not pred():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RequestTimedOut(f"waited {timeout_s} s for {what}")
                self.kernel.step(_now_ms())
                if pred():
                    return
                self._cond.wait(min(left, self._tick_s))

    def _await_leaders(self, topic: str, timeout_s: float) -> None:
        def ready() -> bool:
            try:
                return all(self.kernel.leader_of(topic, p) is not None for p in self.kernel.assignment(topic))
            except UnknownTopicOrPartition:
                return False
        self._await(ready, timeout_s, f"leaders of every partition of {topic}")

    # ================================================================= brokers
    def stop_broker(self, broker_id: int, *, mode: str = "clean") -> None:
        """Stop a broker: "clean" (controlled shutdown), "kill" (SIGKILL-like) or "power"."""
        self._broker_id(broker_id)
        if mode not in ("clean", "kill", "power"):
            raise InvalidConfig(f"mode must be 'clean', 'kill' or 'power', got {mode!r}")
        with self._lock:
            self.kernel.stop_broker(broker_id, _now_ms(), mode=mode)
            self.kernel.step(_now_ms())

    def kill_broker(self, broker_id: int) -> None:
        self.stop_broker(broker_id, mode="kill")

    def start_broker(self, broker_id: int) -> None:
        self._broker_id(broker_id)
        with self._lock:
            self.kernel.start_broker(broker_id, _now_ms())
            self.kernel.step(_now_ms())

    def pause_broker(self, broker_id: int) -> None:
        """The broker stays registered but stops fetching and serving (a stuck process)."""
        self._broker_id(broker_id)
        with self._lock:
            self.kernel.pause_broker(broker_id)

    def resume_broker(self, broker_id: int) -> None:
        self._broker_id(broker_id)
        with self._lock:
            self.kernel.resume_broker(broker_id)

    def power_off_rack(self, rack: str) -> List[int]:
        """Power loss of every broker on ``rack``; returns their ids."""
        ids = [b for b, n in self.kernel.nodes.items() if n.rack == rack]
        if not ids:
            raise InvalidConfig(f"no broker is on rack {rack!r}")
        for b in ids:
            self.stop_broker(b, mode="power")
        return ids

    def power_on_rack(self, rack: str) -> List[int]:
        ids = [b for b, n in self.kernel.nodes.items() if n.rack == rack]
        for b in ids:
            self.start_broker(b)
        return ids

    def _broker_id(self, broker_id: int) -> None:
        self._check_open()
        if broker_id not in self.kernel.nodes:
            raise InvalidConfig(f"no broker {broker_id!r}; brokers are {sorted(self.kernel.nodes)}")

    @property
    def brokers(self) -> Dict[int, Dict[str, Any]]:
        return {b: {"rack": n.rack, "status": n.status} for b, n in self.kernel.nodes.items()}

    # ================================================================== topics
    def create_topic(self, name: str, partitions: int = 1, replication_factor: int = 1,
                     config: Optional[Mapping[str, Any]] = None) -> List[Dict[str, Any]]:
        """Create a replicated topic; waits until every partition has a leader."""
        self._check_open()
        validate_topic_name(name)
        check_int(f"replication_factor (there are {len(self.kernel.nodes)} brokers)", replication_factor,
                  min=1, max=len(self.kernel.nodes), error=InvalidReplicationFactor)
        with self._lock:
            if name in self.kernel.topics():
                raise TopicAlreadyExists(f"topic {name!r} already exists")
            self.kernel.create_topic(name, partitions, replication_factor, dict(config or {}), _now_ms())
            # The in-memory store stands in for ZooKeeper's durability: save it now, so a
            # crash of this process does not forget the topic.
            _save_store(self.kernel.store, self.root / "metadata.json")
        self._await_leaders(name, 10.0)
        return self.describe_topic(name)

    def list_topics(self, include_internal: bool = False) -> List[str]:
        with self._lock:
            return [t for t in self.kernel.topics() if include_internal or not t.startswith("__")]

    def describe_topic(self, name: str) -> List[Dict[str, Any]]:
        """Per partition: leader, replicas, ISR, leader epoch, offsets on the leader, and
        the loss-ledger entries of that partition."""
        with self._lock:
            assign = self.kernel.assignment(name)
            ledger = self.loss_ledger()
            out = []
            for p, replicas in sorted(assign.items()):
                st, _ = self.kernel.partition_state(name, p)
                row: Dict[str, Any] = {"partition": p, "leader": st["leader"], "replicas": replicas,
                                       "isr": st["isr"], "leader_epoch": st["leader_epoch"],
                                       "offline": self.kernel.leader_of(name, p) is None}
                node = self.kernel.leader_of(name, p)
                if node is not None:
                    part = node.replicas[(name, p)].partition
                    row.update(log_start_offset=part.log_start_offset, log_end_offset=part.log_end_offset,
                               high_watermark=part.high_watermark)
                row["losses"] = [e for e in ledger if e.get("topic") == name and e.get("partition") == p]
                out.append(row)
            return out

    def loss_ledger(self) -> List[Dict[str, Any]]:
        """What unclean elections cost: which partition, which offsets, when."""
        from pylog.cluster.controller import read_loss_ledger

        return read_loss_ledger(self.kernel.store)

    def metrics(self) -> Dict[str, Any]:
        """isr_shrinks_total, isr_expands_total, under_replicated_partitions,
        under_min_isr_partitions, offline_partitions, and the loss ledger's size."""
        with self._lock:
            m = self.kernel.metrics()
            m["loss_ledger_entries"] = len(self.loss_ledger())
            return m

    # ======================================================== client requests
    def partitions_for(self, topic: str) -> int:
        with self._lock:
            return len(self.kernel.assignment(topic))

    def partition(self, topic: str, partition: int) -> Any:
        """The leader's partition object (validates that it exists)."""
        with self._lock:
            n = len(self.kernel.assignment(topic))
            check_int(f"partition of topic {topic!r} (it has {n})", partition, min=0, max=n - 1,
                      error=UnknownTopicOrPartition)
            node = self.kernel.leader_of(topic, partition)
            return None if node is None else node.replicas[(topic, partition)].partition

    def init_producer_id(self) -> Tuple[int, int]:
        """A producer id unique in the cluster (a block counter in the metadata store)."""
        with self._lock:
            store = self.kernel.store
            while True:
                try:
                    value, version = store.get("/latest_producer_id")
                except NoNode:
                    try:
                        store.create("/latest_producer_id", 0)
                    except PylogError:
                        pass
                    continue
                try:
                    store.set("/latest_producer_id", value + 1, version)
                    return value, 0
                except PylogError:
                    continue

    def produce(self, topic: str, partition: int, data: Any, *, acks: Union[int, str] = -1,
                timeout_ms: int = 30_000) -> AppendResult:
        """Send batches to the partition's leader; return when ``acks`` is satisfied.

        Raises NotLeaderOrFollower (no leader now: retriable), NotEnoughReplicas,
        NotEnoughReplicasAfterAppend, RequestTimedOut, and what a broker raises."""
        self._check_open()
        required = parse_acks(acks)
        done = threading.Event()
        box: List[Any] = []

        def cb(error: Optional[PylogError], result: Optional[AppendResult]) -> None:
            box.append((error, result))
            done.set()

        with self._lock:
            self.kernel.produce(topic, partition, bytes(data) if not isinstance(data, bytes) else data,
                                required, cb)
        deadline = time.monotonic() + timeout_ms / 1000.0
        while not done.is_set():  # drive replication ourselves rather than wait for the thread
            with self._lock:
                self.kernel.step(_now_ms())
                busy = self.kernel.work_due()
            if done.is_set():
                break
            if time.monotonic() > deadline:
                raise RequestTimedOut(f"produce to {topic}-{partition} not acknowledged within {timeout_ms} ms "
                                      f"(acks={acks})")
            if not busy:  # nothing to deliver before time passes: wait a little
                done.wait(0.0005)
        error, result = box[0]
        if error is not None:
            raise error
        return result

    def produce_async(self, topic: str, partition: int, data: Any, *, acks: Union[int, str] = -1,
                      callback: Callable[[Optional[PylogError], Optional[AppendResult]], None]) -> None:
        """Start a produce; ``callback(error, result)`` runs when it is acknowledged or
        failed (possibly at once).  Progress needs :meth:`drive` or the background thread."""
        self._check_open()
        required = parse_acks(acks)
        with self._lock:
            self.kernel.produce(topic, partition, bytes(data) if not isinstance(data, bytes) else data,
                                required, callback)

    def drive(self, done: Callable[[], bool], timeout_s: float) -> bool:
        """Step the cluster until ``done()`` or ``timeout_s`` passes; returns done()."""
        deadline = time.monotonic() + timeout_s
        while not done():
            with self._lock:
                self.kernel.step(_now_ms())
                busy = self.kernel.work_due()
            if done():
                return True
            if time.monotonic() > deadline:
                return False
            if not busy:  # each sleep can cost a GIL switch interval (5 ms) under load
                time.sleep(0.0002)
        return True

    def fetch(self, topic: str, partition: int, offset: int, *, max_bytes: int = 1 << 20,
              to_log_end: bool = False) -> FetchResult:
        """Batches from the leader below its high watermark."""
        self._check_open()
        with self._lock:
            node = self.kernel.leader_of(topic, partition)
            if node is None:
                if partition not in self.kernel.assignment(topic):
                    raise UnknownTopicOrPartition(f"partition {partition} of {topic!r} does not exist")
                return FetchResult([], 0, 0, 0)  # offline for now: nothing to read
            part = node.replicas[(topic, partition)].partition
            batches = part.read(offset, max_bytes)
            return FetchResult([_Copy(b) for b in batches], part.high_watermark, part.log_start_offset,
                               part.log_end_offset)

    def list_offsets(self, topic: str, partition: int, timestamp: int) -> Tuple[Optional[int], int]:
        with self._lock:
            node = self.kernel.leader_of(topic, partition)
            if node is None:
                raise NotLeaderOrFollower(f"{topic}-{partition} has no leader right now")
            part = node.replicas[(topic, partition)].partition
            if timestamp == LATEST_TIMESTAMP:
                return part.high_watermark, -1
            if timestamp == EARLIEST_TIMESTAMP:
                return part.log_start_offset, -1
            off = part.offset_for_timestamp(timestamp)
            return (None, -1) if off is None else (off, part.timestamp_at(off))

    @property
    def data_version(self) -> int:
        return self.kernel.data_version

    def wait_for_data(self, version: int, timeout_s: float) -> int:
        with self._lock:
            if self.kernel.data_version == version and not self._closed and timeout_s > 0:
                self._cond.wait(timeout_s)
            return self.kernel.data_version

    @property
    def groups(self) -> Any:
        """A group coordinator whose offsets go to a replicated ``__consumer_offsets``."""
        if self._groups is None:
            from pylog.broker.group_service import GroupService

            with self._lock:
                if self._groups is None:
                    n = min(3, len(self.kernel.nodes))
                    if _OFFSETS_TOPIC not in self.kernel.topics():
                        self.kernel.create_topic(_OFFSETS_TOPIC, 3, n, {"cleanup.policy": "compact"}, _now_ms())
            self._await_leaders(_OFFSETS_TOPIC, 10.0)

            def append(partition: int, records: List[Tuple[bytes, Optional[bytes]]]) -> None:
                from pylog.records import build_batch
                self.produce(_OFFSETS_TOPIC, partition, build_batch([v for _, v in records],
                                                                     keys=[k for k, _ in records]), acks=-1)

            service = GroupService(append=append, num_partitions=3)
            service.load(self._replay_offsets())
            self._groups = service
        return self._groups

    def _replay_offsets(self):
        from pylog.records import iter_records

        for p in range(3):
            off = 0
            while True:
                res = self.fetch(_OFFSETS_TOPIC, p, off, max_bytes=1 << 20)
                if not res.batches:
                    break
                for b in res.batches:
                    for rec in iter_records(b.buffer):
                        if rec.key is not None:
                            yield rec.key, rec.value
                off = res.batches[-1].next_offset


class _Copy:
    """A batch copied out of a leader's log (the leader may change under a consumer)."""

    def __new__(cls, batch: Any) -> Any:
        from pylog.records import RecordBatch

        return RecordBatch(bytes(batch.buffer))


def _kernel_config(config: Mapping[str, Any]) -> KernelConfig:
    names = {
        "replica.lag.time.max.ms": "replica_lag_time_max_ms",
        "zookeeper.session.timeout.ms": "session_timeout_ms",
        "replica.fetch.wait.max.ms": "replica_fetch_wait_max_ms",
        "replica.fetch.max.bytes": "replica_fetch_max_bytes",
        "auto.leader.rebalance.enable": "auto_leader_rebalance_enable",
        "unclean.leader.election.enable": "unclean_leader_election_enable",
        "replica.high.watermark.checkpoint.interval.ms": "hw_checkpoint_interval_ms",
    }
    kw: Dict[str, Any] = {}
    topic_defaults: Dict[str, Any] = {}
    from pylog.broker.config import BROKER_TOPIC_DEFAULT_NAMES, TOPIC_DEFAULTS

    for key, value in config.items():
        if key in names:
            kw[names[key]] = value
        elif key == "leader.imbalance.check.interval.seconds":
            kw["leader_imbalance_check_interval_ms"] = int(value) * 1000
        elif key in BROKER_TOPIC_DEFAULT_NAMES:
            topic_defaults[BROKER_TOPIC_DEFAULT_NAMES[key]] = value
        elif key in TOPIC_DEFAULTS:
            topic_defaults[key] = value
        else:
            raise InvalidConfig(f"unknown cluster configuration {key!r}")
    return KernelConfig(topic_defaults=topic_defaults, **kw)


def _save_store(store: InMemoryMetadataStore, path: Path) -> None:
    nodes: Dict[str, Any] = {}

    def walk(p: str) -> None:
        for name in store.children(p):
            child = (p.rstrip("/") + "/" + name)
            if child.startswith(_EPHEMERAL_PREFIXES):
                continue
            nodes[child] = store.get(child)[0]
            walk(child)

    walk("/")
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w") as f:
            f.write(json.dumps(nodes, sort_keys=True))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise StorageError(f"saving cluster metadata to {path}: {exc}") from exc


def _load_store(store: InMemoryMetadataStore, path: Path) -> None:
    if not path.exists():
        return
    try:
        nodes = json.loads(path.read_text())
    except ValueError as exc:
        raise StorageError(f"{path} is damaged: {exc}") from exc
    for p in sorted(nodes, key=lambda x: x.count("/")):
        if not store.exists(p):
            store.create(p, nodes[p])

"""LocalCluster: several replicated brokers in one process, on wall-clock time.

The same :class:`~pylog.cluster.kernel.ClusterKernel` the simulator drives, here
stepped by a background thread (and by a producer waiting for its acks), with
instant message delivery.  It implements :class:`~pylog.broker.interface.BrokerInterface`,
so ``pylog.Producer(cluster)`` and ``pylog.Consumer(cluster)`` work as on one broker:
requests go to each partition's current leader, and consumers read below its high
watermark.

Brokers are numbered 1..n (broker *i* is on ``racks[i-1]``).  The metadata store is
in memory; its persistent part (topics with their ids, assignments and configuration
overrides, ``/cluster/id``, the loss ledger) is saved to ``metadata.json`` after every
topic change and at close, and loaded at open, so a reopened cluster has its topics and
its cluster id.

Topic changes go through the controller: :meth:`LocalCluster.create_partitions` places
the new partitions rack-aware; :meth:`LocalCluster.alter_topic_config` writes the new
overrides to the store and every running broker applies them to its replicas at once
(a stopped broker when it starts); :meth:`LocalCluster.delete_topic` removes the topic,
and each broker its replica directories.  :meth:`LocalCluster.delete_records` moves the
leader's log start offset at once; the followers adopt it at their next fetch, as
Kafka's do (records below it are never read from a follower meanwhile: consumers read
from the leader).

The background thread also does each broker's housekeeping, as a Kafka broker does
for its own replicas: retention (log.retention.check.interval.ms), producer-id
expiry (producer.id.expiration.ms) and compaction of compacted topics
(log.cleaner.enable, every log.cleaner.backoff.ms); :meth:`LocalCluster.run_housekeeping`
runs it on demand.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import logging
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Deque, Dict, FrozenSet, List, Mapping, Optional, Sequence, Tuple, Union

from pylog.broker.broker import (INTERNAL_TOPICS, ZERO_TOPIC_ID, DataListeners, check_topic_is_new,
                                 parse_acks, validate_topic_name)
from pylog.broker.config import BrokerConfig, TopicConfig
from pylog.broker.interface import (DataListener, FetchResult, NodeInfo, PartitionInfo, ProduceCallback,
                                    TopicDescription)
from pylog.broker.maintenance import LogMaintenance
from pylog.broker.metrics import TrafficMetrics, group_metrics, partition_metrics
from pylog.broker.offsets_topic import OFFSETS_TOPIC, offsets_topic_spec
from pylog.broker.partition import AppendResult, Partition
from pylog.cluster.admin import (
    error_for,
    list_reassignments,
    preferred_election_result,
    reassignment_result,
    request_preferred_election,
    request_reassignment,
)
from pylog.cluster.controller import check_reassignment
from pylog.cluster.kernel import ClusterKernel, KernelConfig
from pylog.cluster.metadata import InMemoryMetadataStore
from pylog.errors import (
    BrokerClosed,
    CoordinatorNotAvailable,
    InvalidConfig,
    InvalidPartitions,
    InvalidReplicaAssignment,
    InvalidReplicationFactor,
    InvalidTopic,
    NodeExists,
    NoNode,
    NotLeaderOrFollower,
    PylogError,
    RequestTimedOut,
    StorageError,
    UnknownTopicOrPartition,
)
from pylog.storage.log import EARLIEST_TIMESTAMP, LATEST_TIMESTAMP
from pylog.util import check_int, now_ms as _now_ms

__all__ = ["LocalCluster", "CLUSTER_ID_PATH"]

log = logging.getLogger("pylog.cluster")

_EPHEMERAL_PREFIXES = ("/brokers/ids/", "/controller")
#: The cluster's id (Kafka's ZooKeeper path): made at the first open, kept in metadata.json.
CLUSTER_ID_PATH = "/cluster/id"
#: Broker-level settings (Kafka names) that LocalCluster takes as the Broker does: the
#: housekeeping, num.partitions, auto.create.topics.enable, offsets.topic.*, group.*,
#: max.partitions.per.topic and the partition.skew.* ones.
_BROKER_KEYS = frozenset(f.name.replace("_", ".") for f in dataclasses.fields(BrokerConfig)
                         if f.name not in ("broker_id", "broker_rack", "topic_defaults"))
#: How long a call waits for the controller to give every partition of a topic a leader.
_LEADERS_TIMEOUT_S = 10.0


class LocalCluster:
    """An in-process cluster of ``brokers`` replicated brokers; see the module docstring."""

    #: acks=all waits for followers: the Producer keeps several batches in flight.
    pipelined_produce = True

    def __init__(self, root: Path, kernel: ClusterKernel, tick_ms: float,
                 config: Optional[BrokerConfig] = None) -> None:
        self.root = root
        self.kernel = kernel
        #: The broker-level settings every broker of this cluster shares.
        self.config = config or BrokerConfig()
        self._maintenance = LogMaintenance(self.config, _now_ms, on_damage=self._scrub_found_damage)
        self.traffic = TrafficMetrics(window_ms=self.config.partition_skew_window_ms,
                                      ratio=self.config.partition_skew_ratio,
                                      min_records=self.config.partition_skew_min_records)
        self._last_hk_check = 0.0
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._tick_s = tick_ms / 1000.0
        self._closed = False
        self._stop = threading.Event()
        self._cluster_id = ""
        #: Guards the group service's creation and close; never held while taking
        #: ``_lock`` is needed by another thread that holds it (see :attr:`groups`).
        self._groups_lock = threading.Lock()
        self._groups: Any = None
        self._data_listeners = DataListeners()
        #: (topic, partition) whose leader HW moved, noted under ``_lock`` by the kernel
        #: and given to the data listeners after ``_lock`` is released.
        self._readable: Deque[Tuple[str, int]] = collections.deque()
        kernel.on_data(self._notify)
        kernel.on_readable(self._note_readable)
        # The in-memory store stands in for ZooKeeper's durability: a broker deleting a
        # replica that a reassignment took from it saves the assignment first.
        kernel.save_metadata = lambda: _save_store(kernel.store, root / "metadata.json")
        self._thread = threading.Thread(target=self._run, name="pylog-cluster", daemon=True)

    # ================================================================ open/close
    @classmethod
    def open(cls, data_dir: Union[str, os.PathLike], brokers: int = 3, racks: Optional[Sequence[str]] = None,
             config: Optional[Mapping[str, Any]] = None, *, tick_ms: float = 5.0,
             log_dirs: Optional[Mapping[int, Sequence[Union[str, os.PathLike]]]] = None) -> "LocalCluster":
        """Start ``brokers`` brokers on ``data_dir`` (``broker-<id>/`` each).

        ``log_dirs`` gives a broker (by id) several log directories (JBOD, Kafka's
        ``log.dirs``) in place of ``broker-<id>/``; its replicas spread over them and a
        directory whose disk fails takes only its replicas offline (see
        :mod:`pylog.storage.logdirs`).

        ``config`` takes Kafka names: replica.lag.time.max.ms,
        zookeeper.session.timeout.ms, unclean.leader.election.enable (broker default),
        controlled.shutdown.enable, controlled.shutdown.max.retries,
        controlled.shutdown.retry.backoff.ms, leader.replication.throttled.rate,
        follower.replication.throttled.rate (bytes/s),
        auto.leader.rebalance.enable, leader.imbalance.check.interval.seconds,
        replica.fetch.wait.max.ms, topic defaults (log.segment.bytes, ...), and the
        Broker's settings: num.partitions, auto.create.topics.enable,
        max.partitions.per.topic, offsets.topic.num.partitions,
        offsets.topic.replication.factor (at most the brokers), offsets.topic.segment.bytes,
        the group.* and partition.skew.* settings, and the housekeeping
        (log.retention.check.interval.ms, log.cleaner.enable, log.cleaner.backoff.ms,
        producer.id.expiration.ms, producer.id.expiration.check.interval.ms).
        Raises InvalidConfig, StorageError.
        """
        check_int("brokers", brokers, min=1, max=64, error=InvalidConfig)
        if racks is not None and (len(racks) != brokers or not all(isinstance(r, str) for r in racks)):
            raise InvalidConfig(f"racks must name one rack per broker ({brokers}), got {racks!r}")
        config = dict(config or {})
        bcfg = BrokerConfig.from_settings({k: config.pop(k) for k in list(config) if k in _BROKER_KEYS})
        kcfg = _kernel_config(config)
        root = Path(data_dir)
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create {root}: {exc}") from exc
        store = InMemoryMetadataStore()
        _load_store(store, root / "metadata.json")
        cluster_id = _ensure_ids(store)
        ids = {i + 1: (racks[i] if racks else None) for i in range(brokers)}
        dirs = {b: [Path(d) for d in ds] for b, ds in (log_dirs or {}).items()}
        unknown = sorted(set(dirs) - set(ids))
        if unknown:
            raise InvalidConfig(f"log_dirs names brokers {unknown}; the cluster has brokers {sorted(ids)}")
        kernel = ClusterKernel(root, ids, config=kcfg, store=store, data_dirs=dirs)
        c = cls(root, kernel, tick_ms, bcfg)
        c._cluster_id = cluster_id
        _save_store(store, root / "metadata.json")
        now = _now_ms()
        with c._lock:
            for b in ids:
                kernel.start_broker(b, now)
            kernel.step(now)
        c._thread.start()
        c._await(lambda: kernel.controller_node() is not None, 10.0, "a controller")
        for t in kernel.topics():
            c._await_leaders(t, _LEADERS_TIMEOUT_S)
        return c

    def close(self) -> None:
        """Stop the group coordinator and every broker cleanly, and save the metadata."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._stop.set()
        self._thread.join()
        with self._groups_lock:  # waits for a creation under way, then stops what it made
            groups, self._groups = self._groups, None
        if groups is not None:
            groups.close()
        with self._lock:
            now = _now_ms()
            self._persist()
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
        """The background thread: a step per tick, then the readable notes and the
        housekeeping that is due."""
        while self._next_tick():
            try:
                self._step_once()
            except Exception:
                log.exception("cluster step failed")
            self._dispatch_readable()
            if time.monotonic() - self._last_hk_check >= 1.0:
                self._last_hk_check = time.monotonic()
                try:
                    self.run_housekeeping()
                except Exception:
                    log.exception("cluster housekeeping failed")

    def _next_tick(self) -> bool:
        """Wait for the next step; False once the cluster is closing."""
        return not self._stop.wait(self._tick_s)

    def _step_once(self) -> None:
        with self._lock:
            self.kernel.step(_now_ms())
            self._cond.notify_all()

    def run_housekeeping(self, now_ms: Optional[int] = None, *, force: bool = False) -> List[Any]:
        """Retention, producer-id expiry and compaction that are due (all with ``force``)
        on every replica of every running broker, leader or follower, each on its own
        log as a Kafka broker does, and the partition skew check.  Returns the cleaner's
        results."""
        now = _now_ms() if now_ms is None else now_ms
        with self._lock:
            if self._closed and not force:
                return []
            parts = [r.partition for node in self.kernel.nodes.values() if node.running
                     for r in node.replicas.values()]
            scope = self._skew_scope()
        for topic, (n, counted) in scope.items():
            self.traffic.check_skew(topic, n, now, counted)
        return self._maintenance.run(parts, now, force=force)

    def _scrub_found_damage(self, partition: Any, damage: Any) -> None:
        """The background scrub found a replica damaged: a follower fetches the damaged
        range again from its leader (:meth:`ClusterKernel.refetch_damaged`)."""
        tp = (partition.topic, partition.index)
        with self._lock:
            for node in self.kernel.nodes.values():
                r = node.replicas.get(tp)
                if r is not None and r.partition is partition:
                    self.kernel.refetch_damaged(node.id, tp, damage.offset, _now_ms())
                    break
            self._cond.notify_all()

    def _skew_scope(self) -> Dict[str, Tuple[int, Optional[FrozenSet[int]]]]:
        """Under the lock: topic -> (partitions, the partitions whose traffic this
        process records, None for all).  Every leader of this cluster is in this
        process, so all of them."""
        return {t: (len(self.kernel.assignment(t)), None) for t in self.kernel.topics()}

    def _notify(self) -> None:
        self._cond.notify_all()

    def _await(self, pred: Callable[[], bool], timeout_s: float, what: str) -> None:
        """Step the cluster until ``pred()`` (under the lock) or raise RequestTimedOut.
        The waits release the lock (one RLock level or many), so other threads and the
        background thread keep stepping too."""
        deadline = time.monotonic() + timeout_s
        try:
            with self._lock:
                while not pred():
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise RequestTimedOut(f"waited {timeout_s} s for {what}")
                    self.kernel.step(_now_ms())
                    if pred():
                        return
                    self._cond.wait(min(left, self._tick_s))
        finally:
            self._dispatch_readable()

    def _await_leaders(self, topic: str, timeout_s: float) -> None:
        def ready() -> bool:
            try:
                return all(self._leader_id(topic, p) >= 0 for p in self.kernel.assignment(topic))
            except UnknownTopicOrPartition:
                return False
        self._await(ready, timeout_s, f"leaders of every partition of {topic}")

    def _leader_id(self, topic: str, partition: int) -> int:
        """Under the lock: the broker leading ``topic-partition`` now, -1 when none does."""
        node = self.kernel.leader_of(topic, partition)
        return -1 if node is None else node.id

    def _broker_count(self) -> int:
        """Brokers a replication factor may use (every broker of this cluster)."""
        return len(self.kernel.nodes)

    def _persist(self) -> None:
        """The in-memory store stands in for ZooKeeper's durability: save it now, so a
        crash of this process does not forget a topic change."""
        _save_store(self.kernel.store, self.root / "metadata.json")

    # ================================================================= brokers
    def stop_broker(self, broker_id: int, *, mode: str = "clean") -> None:
        """Stop a broker: "clean", "kill" (SIGKILL-like) or "power".

        A clean stop is Kafka's controlled shutdown (unless controlled.shutdown.enable is
        off): the broker asks the controller to move its leaderships to other in-sync
        replicas and waits until it leads nothing that could move (at most
        controlled.shutdown.max.retries attempts of controlled.shutdown.retry.backoff.ms
        each), then flushes, closes and leaves."""
        self._broker_id(broker_id)
        if mode not in ("clean", "kill", "power"):
            raise InvalidConfig(f"mode must be 'clean', 'kill' or 'power', got {mode!r}")
        with self._lock:
            controlled = mode == "clean" and self.kernel.begin_controlled_shutdown(broker_id, _now_ms())
        if controlled:
            self._await(lambda: self.kernel.controlled_shutdown_done(broker_id, _now_ms()), 3600.0,
                        f"the controlled shutdown of broker {broker_id}")
        with self._lock:
            if controlled:
                self.kernel.step(_now_ms())  # the new leaders take over before the old one goes
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

    # ================================================================ identity
    @property
    def cluster_id(self) -> str:
        """Kafka's cluster id (32 hex digits), made at the first open, stable after."""
        return self._cluster_id

    @property
    def controller_id(self) -> int:
        """The broker id of the active controller, -1 while there is none."""
        with self._lock:
            node = self.kernel.controller_node()
            return -1 if node is None else node.id

    def nodes(self) -> List[NodeInfo]:
        """The running brokers (not stopped, not paused), with their racks."""
        with self._lock:
            return [NodeInfo(b, n.rack) for b, n in sorted(self.kernel.nodes.items()) if n.running]

    # ================================================================== topics
    def create_topic(self, name: str, partitions: Optional[int] = None, replication_factor: int = 1,
                     config: Optional[Mapping[str, Any]] = None, *, validate_only: bool = False,
                     replica_assignment: Optional[Sequence[Sequence[int]]] = None) -> TopicDescription:
        """Create a replicated topic of ``partitions`` partitions (None: num.partitions),
        its replicas placed rack-aware by the controller — or as ``replica_assignment``
        says (replica ids per partition, partition 0 first; it then sets the partition
        count and replication factor, and ``partitions`` may be None or agree); waits
        until every partition has a leader.  ``validate_only`` checks everything and
        creates nothing (the description shows the placement it would get, topic id
        :data:`ZERO_TOPIC_ID`).  Raises InvalidTopic (also for internal names),
        TopicAlreadyExists (also for a '.'/'_' collision), InvalidPartitions,
        InvalidReplicationFactor (more than the brokers, or than the live brokers),
        InvalidReplicaAssignment, InvalidConfig, NotLeaderOrFollower (no controller),
        RequestTimedOut.
        """
        self._check_open()
        validate_topic_name(name)
        if name in INTERNAL_TOPICS:
            raise InvalidTopic(f"{name} is an internal topic; pylog creates it when needed")
        if replica_assignment is not None:
            replica_assignment = [list(r) for r in replica_assignment]
            if not replica_assignment or partitions not in (None, len(replica_assignment)):
                raise InvalidReplicaAssignment(f"the assignment names {len(replica_assignment)} partitions, "
                                               f"not {partitions}")
            partitions, replication_factor = len(replica_assignment), len(replica_assignment[0])
        n = self.config.num_partitions if partitions is None else partitions
        check_int("partitions", n, min=1, max=self.config.max_partitions_per_topic, error=InvalidPartitions)
        brokers = self._broker_count()
        check_int(f"replication_factor (there are {brokers} brokers)", replication_factor,
                  min=1, max=brokers, error=InvalidReplicationFactor)
        with self._lock:
            tc = TopicConfig.build(config, self.kernel.topic_defaults())
            check_topic_is_new(name, self.kernel.topics())
            if validate_only:
                if replica_assignment is not None:
                    from pylog.cluster.controller import check_replica_assignment, live_brokers

                    placed = check_replica_assignment(replica_assignment, n, replication_factor,
                                                      live_brokers(self.kernel.store))
                else:
                    placed = self.kernel.plan_partitions(n, replication_factor, _now_ms())
                infos = [PartitionInfo(p, r[0], list(r), list(r), 0, 0, 0, 0) for p, r in enumerate(placed)]
                return TopicDescription(name, ZERO_TOPIC_ID, infos, dict(tc.values), dict(tc.overrides))
            self._create(name, n, replication_factor, dict(tc.overrides), replica_assignment)
        self._await_leaders(name, _LEADERS_TIMEOUT_S)
        return self.describe_topic(name)

    def _create(self, name: str, partitions: int, replication_factor: int, overrides: Dict[str, Any],
                assignment: Optional[Sequence[Sequence[int]]] = None) -> None:
        """Under the lock: create through the controller and save the store at once."""
        self.kernel.create_topic(name, partitions, replication_factor, overrides, _now_ms(),
                                 topic_id=uuid.uuid4().hex, assignment=assignment)
        self._persist()

    def delete_topic(self, name: str) -> None:
        """Delete a topic: the controller removes it from the store and each running
        broker closes and removes its replicas at once (a stopped broker when it starts).
        Raises UnknownTopicOrPartition, InvalidTopic (internal topics)."""
        self._check_open()
        if name in INTERNAL_TOPICS:
            raise InvalidTopic(f"{name} is an internal topic and cannot be deleted")
        with self._lock:
            if name not in self.kernel.topics():
                validate_topic_name(name)
                raise UnknownTopicOrPartition(f"unknown topic {name!r}")
            self.kernel.delete_topic(name, _now_ms())
            self._persist()
        self.traffic.forget_topic(name)
        log.info("deleted topic %s", name)

    def create_partitions(self, name: str, count: int, *, validate_only: bool = False) -> TopicDescription:
        """Grow topic ``name`` to ``count`` partitions (Kafka's CreatePartitions): the
        controller places the new partitions' replicas rack-aware with the topic's
        replication factor; waits until they have leaders.  Raises
        UnknownTopicOrPartition, InvalidTopic (internal topics), InvalidPartitions
        (``count`` not above today's, or above max.partitions.per.topic),
        InvalidReplicationFactor (fewer live brokers than the replication factor).
        ``validate_only`` checks and changes nothing.
        """
        self._check_open()
        with self._lock:
            assign = self.kernel.assignment(name)
            if name in INTERNAL_TOPICS:
                raise InvalidTopic(f"{name} is an internal topic; its partition count cannot change")
            check_int(f"the new partition count of topic {name!r} (it has {len(assign)})", count,
                      min=len(assign) + 1, max=self.config.max_partitions_per_topic, error=InvalidPartitions)
            if validate_only:
                placed = self.kernel.plan_partitions(count - len(assign), len(assign[0]), _now_ms())
                d = self._describe(name)
                extra = [PartitionInfo(len(assign) + i, r[0], list(r), list(r), 0, 0, 0, 0)
                         for i, r in enumerate(placed)]
                return dataclasses.replace(d, partitions=d.partitions + extra)
            self.kernel.create_partitions(name, count, _now_ms(),
                                          max_partitions=self.config.max_partitions_per_topic)
            self._persist()
        self._await_leaders(name, _LEADERS_TIMEOUT_S)
        return self.describe_topic(name)

    def alter_topic_config(self, name: str, changes: Mapping[str, Optional[Any]], *,
                           replace: bool = False, validate_only: bool = False) -> TopicDescription:
        """Change topic ``name``'s configuration overrides (Kafka's AlterConfigs): a value
        sets, None removes; ``replace=True`` makes the overrides exactly the non-None
        ``changes``.  Validated first (InvalidConfig names the bad setting; nothing
        changes), written to the store, and applied at once by every running broker to
        its replicas (log settings, compression, min.insync.replicas, unclean election).
        Returns the new description (``validate_only``: the one it would have).  Raises
        UnknownTopicOrPartition, InvalidConfig.
        """
        self._check_open()
        with self._lock:
            tc = self.kernel.altered_topic_config(name, changes, replace)
            if validate_only:
                return dataclasses.replace(self._describe(name), config=dict(tc.values),
                                           overrides=dict(tc.overrides))
            self.kernel.alter_topic_config(name, dict(tc.overrides), _now_ms())
            self._persist()
            return self._describe(name)

    def elect_leaders(self, partitions: Optional[Sequence[Tuple[str, int]]] = None, *,
                      timeout_s: float = 30.0) -> Dict[Tuple[str, int], Optional[PylogError]]:
        """Kafka's ElectLeaders (type PREFERRED): leadership of ``partitions`` (None: every
        partition) moves back to each one's first replica where that replica is alive,
        not shutting down and in the ISR.  The request goes through the metadata store to
        the controller (see :mod:`pylog.cluster.admin`); returns per partition None (moved)
        or ElectionNotNeeded, PreferredLeaderNotAvailable, UnknownTopicOrPartition.
        Raises InvalidArgument (an empty list), RequestTimedOut."""
        self._check_open()
        with self._lock:
            rid = request_preferred_election(self.kernel.store, partitions)
        self._await(lambda: preferred_election_result(self.kernel.store, rid) is not None, timeout_s,
                    "the controller's preferred leader election")
        answer = preferred_election_result(self.kernel.store, rid) or {}
        moved = [tp for tp, a in answer.items() if a["error"] == "NONE"]
        self._await(lambda: all(self.kernel.leader_of(t, p) is not None for t, p in moved), timeout_s,
                    "the new leaders to take over")
        return {tp: error_for(a["error"], f"preferred leader election of {tp[0]}-{tp[1]}")
                for tp, a in answer.items()}

    def alter_partition_reassignments(self, reassignments: Mapping[Tuple[str, int], Optional[Sequence[int]]], *,
                                      throttle_bytes_per_s: Optional[int] = None,
                                      timeout_s: float = 30.0) -> Dict[Tuple[str, int], Optional[PylogError]]:
        """KIP-455's AlterPartitionReassignments: move each ``(topic, partition)`` to the
        target replica ids (None cancels its reassignment: back to the original
        replicas).  Returns per partition None (started, cancelled or nothing to do) or
        the error: UnknownTopicOrPartition, InvalidReplicaAssignment (empty, duplicates,
        a broker that is not running), NoReassignmentInProgress (a cancellation),
        EligibleLeadersNotAvailable.  The request goes through the metadata store to the
        controller (:mod:`pylog.cluster.admin`); the new replicas then copy the data and
        the reassignment completes in the background once they are all in the ISR (see
        :meth:`list_partition_reassignments`).  ``throttle_bytes_per_s`` limits the
        copying while it lasts (see :func:`pylog.cluster.admin.request_reassignment`).
        Raises RequestTimedOut, InvalidConfig (a bad throttle)."""
        self._check_open()
        out: Dict[Tuple[str, int], Optional[PylogError]] = {}
        valid: Dict[Tuple[str, int], Optional[Sequence[int]]] = {}
        with self._lock:
            for tp, replicas in reassignments.items():
                try:
                    check_reassignment(self.kernel.store, tp[0], tp[1], replicas)
                    valid[tp] = replicas
                except PylogError as exc:
                    out[tp] = exc
            if not valid:
                return out
            rid = request_reassignment(self.kernel.store, valid, throttle_bytes_per_s=throttle_bytes_per_s)
        self._await(lambda: reassignment_result(self.kernel.store, rid) is not None, timeout_s,
                    "the controller to take the reassignment")
        for tp, a in (reassignment_result(self.kernel.store, rid) or {}).items():
            out[tp] = error_for(a["error"], a["message"] or f"reassignment of {tp[0]}-{tp[1]}")
        with self._lock:
            _save_store(self.kernel.store, self.root / "metadata.json")
        return out

    def list_partition_reassignments(self, partitions: Optional[Sequence[Tuple[str, int]]] = None
                                     ) -> Dict[Tuple[str, int], Dict[str, List[int]]]:
        """KIP-455's ListPartitionReassignments: the reassignments in progress,
        ``{(topic, partition): {"replicas", "adding", "removing"}}``."""
        self._check_open()
        with self._lock:
            return list_reassignments(self.kernel.store, partitions)

    def list_topics(self, include_internal: bool = False) -> List[str]:
        """Topic names, sorted."""
        with self._lock:
            return sorted(t for t in self.kernel.topics() if include_internal or t not in INTERNAL_TOPICS)

    def describe_topic(self, name: str, *, offsets: bool = True) -> TopicDescription:
        """The topic's id, configuration and, per partition: leader (-1 and ``offline``
        when no live leader), replicas, ISR, leader epoch, the leader's offsets and size
        (0 when offline), and the loss-ledger entries of that partition (``offsets``:
        see ClusterNode; always given here)."""
        with self._lock:
            return self._describe(name)

    def _describe(self, name: str) -> TopicDescription:
        assign = self.kernel.assignment(name)
        cfg = self.kernel.topic_config(name)
        ledger = self.loss_ledger()
        infos = []
        for p, replicas in sorted(assign.items()):
            try:
                st, _ = self.kernel.partition_state(name, p)
            except NoNode:  # being created: no state yet
                st = {"leader": -1, "isr": [], "leader_epoch": 0}
            losses = tuple(e for e in ledger if e.get("topic") == name and e.get("partition") == p)
            part = self._leader_partition_or_none(name, p)
            if part is None:
                leader = self._leader_id(name, p)
                infos.append(PartitionInfo(p, leader, replicas, list(st["isr"]), 0, 0, 0, 0, st["leader_epoch"],
                                           leader < 0, losses))
            else:
                infos.append(PartitionInfo(p, part.broker_id, replicas, list(st["isr"]), part.log_start_offset,
                                           part.log_end_offset, part.high_watermark, part.log.size_bytes,
                                           st["leader_epoch"], False, losses))
        return TopicDescription(name, self.kernel.topic_id(name), infos, dict(cfg.values), dict(cfg.overrides),
                                name in INTERNAL_TOPICS)

    def loss_ledger(self) -> List[Dict[str, Any]]:
        """What unclean elections cost: which partition, which offsets, when."""
        from pylog.cluster.controller import read_loss_ledger

        return read_loss_ledger(self.kernel.store)

    def metrics(self) -> Dict[str, Any]:
        """The Broker's metrics shape (:mod:`pylog.broker.metrics`: "topics" per
        partition from its leader, "groups" with lag, "skew_warnings_total") plus the
        cluster's: isr_shrinks_total, isr_expands_total, under_replicated_partitions,
        under_min_isr_partitions, offline_partitions, the controller's counters,
        loss_ledger_entries and offline_log_directories (failed log directories, over
        every broker of the cluster)."""
        now = _now_ms()
        snap = self.traffic.snapshot(now)
        with self._lock:
            m = self.kernel.metrics()
            m["loss_ledger_entries"] = len(self.loss_ledger())
            m["log_scrub_damaged_partitions"] = len(self._maintenance.damaged)
            m["offline_log_directories"] = sum(n.log_dirs.offline_count for n in self.kernel.nodes.values())
            topics: Dict[str, Any] = {}
            for name in self.kernel.topics():
                tsnap = snap.get("topics", {}).get(name, {}).get("partitions", {})
                parts = {}
                for p in sorted(self.kernel.assignment(name)):
                    part = self._leader_partition_or_none(name, p)
                    parts[p] = partition_metrics(
                        tsnap, p, log_size_bytes=0 if part is None else part.log.size_bytes,
                        log_start_offset=0 if part is None else part.log_start_offset,
                        log_end_offset=0 if part is None else part.log_end_offset,
                        high_watermark=0 if part is None else part.high_watermark)
                topics[name] = {"partitions": parts}
        groups = self._groups

        def hw(topic: str, p: int) -> Optional[int]:
            part = topics.get(topic, {}).get("partitions", {}).get(p)
            return None if part is None else part["high_watermark"]

        m.update(topics=topics, groups={} if groups is None else group_metrics(groups, hw),
                 skew_warnings_total=snap.get("skew_warnings_total", 0))
        return m

    # ======================================================== client requests
    def partitions_for(self, topic: str) -> int:
        """Partition count of ``topic``; creates it (num.partitions, replication factor
        1) when auto.create.topics.enable is on.  UnknownTopicOrPartition, InvalidTopic."""
        with self._lock:
            if topic not in self.kernel.topics() and self.config.auto_create_topics_enable \
                    and isinstance(topic, str) and topic not in INTERNAL_TOPICS:
                self.create_topic(topic)
            return len(self.kernel.assignment(topic))

    def partition(self, topic: str, partition: int) -> Optional[Partition]:
        """The leader's partition object (None while offline); validates that it exists."""
        with self._lock:
            self._check_partition(topic, partition)
            return self._leader_partition_or_none(topic, partition)

    def _check_partition(self, topic: str, partition: int) -> None:
        n = len(self.kernel.assignment(topic))
        check_int(f"partition of topic {topic!r} (it has {n})", partition, min=0, max=n - 1,
                  error=UnknownTopicOrPartition)

    def _leader_partition_or_none(self, topic: str, partition: int) -> Optional[Partition]:
        node = self.kernel.leader_of(topic, partition)
        return None if node is None else node.replicas[(topic, partition)].partition

    def _leader_partition(self, topic: str, partition: int) -> Partition:
        """Under the lock: the leader's partition; UnknownTopicOrPartition,
        NotLeaderOrFollower (offline now: retriable)."""
        self._check_partition(topic, partition)
        part = self._leader_partition_or_none(topic, partition)
        if part is None:
            raise NotLeaderOrFollower(f"{topic}-{partition} has no leader right now")
        return part

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
        try:
            while not done.is_set():  # drive replication ourselves rather than wait for the thread
                with self._lock:
                    self.kernel.step(_now_ms())
                    busy = self.kernel.work_due()
                if done.is_set():
                    break
                if time.monotonic() > deadline:
                    raise RequestTimedOut(f"produce to {topic}-{partition} not acknowledged within "
                                          f"{timeout_ms} ms (acks={acks})")
                if not busy:  # nothing to deliver before time passes: wait a little
                    done.wait(0.0005)
        finally:
            self._dispatch_readable()
        error, result = box[0]
        if error is not None:
            raise error
        self._count_in(topic, partition, result)
        return result

    def produce_async(self, topic: str, partition: int, data: Any, *, acks: Union[int, str] = -1,
                      callback: ProduceCallback) -> None:
        """Start a produce; ``callback(error, result)`` runs once, when it is acknowledged
        or failed (possibly before this returns), from this thread or the one stepping
        the cluster.  Progress needs :meth:`drive` or the background thread.  PylogErrors
        go to the callback, never out of this call."""
        if not callable(callback):
            raise TypeError(f"callback must be callable(error, result), got {callback!r}")
        try:
            self._check_open()
            required = parse_acks(acks)
        except PylogError as exc:
            callback(exc, None)
            return

        def done(error: Optional[BaseException], result: Optional[AppendResult]) -> None:
            if error is None:
                self._count_in(topic, partition, result)
            callback(error, result)

        try:
            with self._lock:
                self.kernel.produce(topic, partition, bytes(data) if not isinstance(data, bytes) else data,
                                    required, done)
        except PylogError as exc:  # an unknown topic or partition
            callback(exc, None)
        self._dispatch_readable()

    def _count_in(self, topic: str, partition: int, result: Optional[AppendResult]) -> None:
        if result is not None and result.records:
            now = _now_ms()
            if not self.traffic.knows(topic):
                # A topic's first records: tell the skew detector which partitions this
                # process counts first, or its first window would take the others as
                # silent (the housekeeping tells it only once a second).
                with self._lock:
                    scope = self._skew_scope().get(topic)
                if scope is not None:
                    self.traffic.check_skew(topic, scope[0], now, scope[1])
            self.traffic.record_in(topic, partition, result.records, result.bytes, now)

    def drive(self, done: Callable[[], bool], timeout_s: float) -> bool:
        """Step the cluster until ``done()`` or ``timeout_s`` passes; returns done()."""
        deadline = time.monotonic() + timeout_s
        while not done():
            with self._lock:
                self.kernel.step(_now_ms())
                busy = self.kernel.work_due()
            self._dispatch_readable()
            if done():
                return True
            if time.monotonic() > deadline:
                return False
            if not busy:  # each sleep can cost a GIL switch interval (5 ms) under load
                time.sleep(0.0002)
        return True

    def fetch(self, topic: str, partition: int, offset: int, *, max_bytes: int = 1 << 20,
              to_log_end: bool = False) -> FetchResult:
        """Batches from the leader below its high watermark (below its log end with
        ``to_log_end``), copied out of its log.  Raises OffsetOutOfRange,
        UnknownTopicOrPartition, NotLeaderOrFollower (offline now: retriable)."""
        self._check_open()
        with self._lock:
            part = self._leader_partition(topic, partition)
            batches = part.read(offset, max_bytes, to_log_end=to_log_end)
            res = FetchResult([_Copy(b) for b in batches], part.high_watermark, part.log_start_offset,
                              part.log_end_offset)
        if batches:
            n = batches[-1].next_offset - max(offset, batches[0].base_offset)
            self.traffic.record_out(topic, partition, n, sum(b.size_bytes for b in batches), _now_ms())
        return res

    def list_offsets(self, topic: str, partition: int, timestamp: int) -> Tuple[Optional[int], int]:
        """-2 earliest, -1 latest (the leader's HW), else the first offset with a
        timestamp >= ``timestamp``.  Raises NotLeaderOrFollower, UnknownTopicOrPartition."""
        with self._lock:
            part = self._leader_partition(topic, partition)
            if timestamp == LATEST_TIMESTAMP:
                return part.high_watermark, -1
            if timestamp == EARLIEST_TIMESTAMP:
                return part.log_start_offset, -1
            off = part.offset_for_timestamp(timestamp)
            return (None, -1) if off is None else (off, part.timestamp_at(off))

    def offset_for_leader_epoch(self, topic: str, partition: int, leader_epoch: int) -> Tuple[int, int]:
        """Kafka's OffsetsForLeaderEpoch, answered by the leader from its leader-epoch
        cache: (the largest epoch <= ``leader_epoch`` it holds, where that epoch ends);
        (-1, -1) if none.  Raises NotLeaderOrFollower, UnknownTopicOrPartition,
        InvalidArgument."""
        self._check_open()
        with self._lock:
            return self._leader_partition(topic, partition).offset_for_leader_epoch(leader_epoch)

    def delete_records(self, topic: str, partition: int, before_offset: int) -> int:
        """Kafka's DeleteRecords on the leader: its log start offset moves to
        ``before_offset`` (-1: its high watermark) at once and is returned; the followers
        adopt it at their next fetch (see the module docstring).  Raises OffsetOutOfRange
        (above the high watermark or below -1), NotLeaderOrFollower,
        UnknownTopicOrPartition."""
        self._check_open()
        with self._lock:
            self._check_partition(topic, partition)
            return self.kernel.delete_records(topic, partition, before_offset)

    @property
    def data_version(self) -> int:
        return self.kernel.data_version

    def wait_for_data(self, version: int, timeout_s: float) -> int:
        with self._lock:
            if self.kernel.data_version == version and not self._closed and timeout_s > 0:
                self._cond.wait(timeout_s)
            return self.kernel.data_version

    def add_data_listener(self, listener: DataListener) -> None:
        """Call ``listener(topic, partition)`` whenever that partition's leader's high
        watermark moves up (records became readable), from whichever thread stepped the
        cluster, holding no cluster lock.  A listener that raises is logged."""
        self._data_listeners.add(listener)

    def remove_data_listener(self, listener: DataListener) -> None:
        """Stop calling ``listener`` (nothing happens if it was not added)."""
        self._data_listeners.remove(listener)

    def _note_readable(self, topic: str, partition: int) -> None:
        """The kernel's on_readable hook (called under ``_lock``): only note it."""
        if self._data_listeners:
            self._readable.append((topic, partition))

    def _dispatch_readable(self) -> None:
        """Give the noted (topic, partition)s to the data listeners; call without ``_lock``."""
        seen = set()
        while True:
            try:
                tp = self._readable.popleft()
            except IndexError:
                return
            if tp not in seen:
                seen.add(tp)
                self._data_listeners.call(tp[0], tp[1])

    # ================================================================== groups
    @property
    def groups(self) -> Any:
        """The group coordinator (:class:`~pylog.broker.group_service.GroupService`); its
        offsets go to a replicated ``__consumer_offsets`` (created on first use, as
        :func:`~pylog.broker.offsets_topic.offsets_topic_spec` says).

        Made once, under its own lock (never under the cluster lock, which the
        coordinator's ticker needs to append offsets while the service is loading):
        concurrent first calls all get the one instance, and :meth:`close` stops it.
        """
        service = self._groups
        if service is not None:
            return service
        with self._groups_lock:
            if self._groups is None:
                self._check_open()
                self._groups = self._start_groups()
            return self._groups

    def coordinator_id(self, group_id: str) -> int:
        """The leader of ``group_id``'s ``__consumer_offsets`` partition (created first,
        as :attr:`groups` does): the broker Kafka would name as its coordinator.  In this
        process one group service serves every group whatever the leader.  Raises
        CoordinatorNotAvailable while that partition has no leader."""
        p = self.groups.partition_for(group_id)
        with self._lock:
            leader = self._leader_id(OFFSETS_TOPIC, p)
        if leader < 0:
            raise CoordinatorNotAvailable(f"partition {p} of {OFFSETS_TOPIC} has no leader right now")
        return leader

    def _start_groups(self) -> Any:
        from pylog.broker.group_service import GroupService
        from pylog.records import build_batch

        spec = offsets_topic_spec(self.config, brokers=self._broker_count())
        with self._lock:
            if OFFSETS_TOPIC not in self.kernel.topics():
                try:
                    self._create(OFFSETS_TOPIC, spec.partitions, spec.replication_factor, spec.config)
                except NodeExists:  # pragma: no cover - the store said it was not there
                    pass
            partitions = len(self.kernel.assignment(OFFSETS_TOPIC))
        self._await_leaders(OFFSETS_TOPIC, _LEADERS_TIMEOUT_S)

        def append(partition: int, records: List[Tuple[bytes, Optional[bytes]]]) -> None:
            self.produce(OFFSETS_TOPIC, partition, build_batch([v for _, v in records],
                                                                keys=[k for k, _ in records]), acks=-1)

        service = GroupService(
            append=append, num_partitions=partitions,
            group_min_session_timeout_ms=self.config.group_min_session_timeout_ms,
            group_max_session_timeout_ms=self.config.group_max_session_timeout_ms,
            group_initial_rebalance_delay_ms=self.config.group_initial_rebalance_delay_ms)
        try:
            service.load(self._replay_offsets(partitions))
        except BaseException:
            service.close()
            raise
        return service

    def _replay_offsets(self, partitions: int):
        from pylog.records import iter_records

        for p in range(partitions):
            off, _ = self.list_offsets(OFFSETS_TOPIC, p, EARLIEST_TIMESTAMP)
            while True:
                res = self.fetch(OFFSETS_TOPIC, p, off, max_bytes=1 << 20)
                if not res.batches:
                    break
                for b in res.batches:
                    for rec in iter_records(b.buffer, check_crcs=True):
                        if rec.key is not None and rec.offset >= off:
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
        "replica.fetch.backoff.ms": "replica_fetch_backoff_ms",
        "controlled.shutdown.enable": "controlled_shutdown_enable",
        "controlled.shutdown.max.retries": "controlled_shutdown_max_retries",
        "controlled.shutdown.retry.backoff.ms": "controlled_shutdown_retry_backoff_ms",
        "leader.replication.throttled.rate": "leader_replication_throttled_rate",
        "follower.replication.throttled.rate": "follower_replication_throttled_rate",
    }
    kw: Dict[str, Any] = {}
    topic_defaults: Dict[str, Any] = {}
    from pylog.broker.config import BROKER_TOPIC_DEFAULT_NAMES, TOPIC_DEFAULTS, _coerce

    for key, value in config.items():
        if key in names:
            kw[names[key]] = _typed(key, value)
        elif key == "leader.imbalance.check.interval.seconds":
            kw["leader_imbalance_check_interval_ms"] = _typed(key, value) * 1000
        elif key in BROKER_TOPIC_DEFAULT_NAMES:  # as text from server.properties, or typed
            name = BROKER_TOPIC_DEFAULT_NAMES[key]
            topic_defaults[name] = _coerce(key, value, TOPIC_DEFAULTS.get(name))
        elif key in TOPIC_DEFAULTS:
            topic_defaults[key] = _coerce(key, value, TOPIC_DEFAULTS[key])
        else:
            raise InvalidConfig(f"unknown cluster configuration {key!r}")
    return KernelConfig(topic_defaults=topic_defaults, **kw)


def _typed(key: str, value: Any) -> Any:
    """A replication setting as given in Python or as text (server.properties): the
    ``*.enable`` ones are booleans, the others non-negative integers."""
    if key.endswith(".enable"):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise InvalidConfig(f"{key} must be true or false, got {value!r}")
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise InvalidConfig(f"{key} must be an integer, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidConfig(f"{key} must be a non-negative integer, got {value!r}")
    return value


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


def _ensure_ids(store: InMemoryMetadataStore) -> str:
    """The cluster id (made at the first open) and a topic id for every topic made
    before topic ids existed; returns the cluster id."""
    try:
        cluster_id = store.get(CLUSTER_ID_PATH)[0]
    except NoNode:
        cluster_id = uuid.uuid4().hex
        store.create(CLUSTER_ID_PATH, cluster_id)
    try:
        topics = store.children("/brokers/topics")
    except NoNode:
        topics = []
    for t in topics:
        data, version = store.get(f"/brokers/topics/{t}")
        if not data.get("id"):
            store.set(f"/brokers/topics/{t}", {**data, "id": uuid.uuid4().hex}, version)
    return str(cluster_id)

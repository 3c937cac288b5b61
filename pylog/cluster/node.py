"""ClusterNode: one broker of a cluster of processes that share a metadata store.

Each `pylog serve --zookeeper ...` process runs one :class:`ClusterNode`: the same
:class:`~pylog.cluster.kernel.ClusterKernel` that :class:`~pylog.cluster.LocalCluster`
and the simulator drive, holding just this process's broker, over a metadata store on
ZooKeeper and a network that carries the kernel's replication messages as Kafka Fetch
requests (the server's :class:`~pylog.server.replication.WireNetwork`).  Only the
drivers differ from the in-process cluster: elections, ISR changes, high watermarks,
leader epochs, truncation and the loss ledger are the kernel's and the controller's.

What changes with other processes around:

- **Brokers** are the registrations in the store (``/brokers/ids/<id>``, with this
  process's advertised ``host``/``port`` and rack); :meth:`ClusterNode.nodes` and the
  replication factor checks read them.
- **Leaders** are read from the partition states; a produce, fetch or offsets request
  for a partition this broker does not lead gets NotLeaderOrFollower, and the client
  refreshes its metadata.
- **Topic changes** (create, grow, reconfigure, delete) are written to the store by
  whichever broker the operator asked, and the controller — one broker, elected
  through the store — reacts to them (Kafka's ZooKeeper mode).
- **Durability** of the metadata is the store's (ZooKeeper's); nothing is saved locally
  but ``meta.properties`` (broker.id and cluster.id, as Kafka writes it).
- **Consumer groups** are coordinated as Kafka does: a group's coordinator is the leader
  of its ``__consumer_offsets`` partition (:meth:`ClusterNode.coordinator_id`, which
  FindCoordinator answers).  This broker's :class:`~pylog.broker.group_service.GroupService`
  serves only the groups of the partitions it leads: the kernel reports each leadership
  change (:meth:`~pylog.cluster.kernel.ClusterKernel.on_leadership`), and a loader
  thread replays a partition it now leads from its own log (never holding the node's
  lock while the records are applied) or forgets the groups of one it no longer leads.
  ``__consumer_offsets`` is created by the first broker asked for a coordinator, with
  offsets.topic.replication.factor replicas (Kafka's default 3; while fewer brokers are
  alive it is not created and FindCoordinator answers COORDINATOR_NOT_AVAILABLE); offsets
  are written with acks=all.
"""
from __future__ import annotations

import collections
import dataclasses
import fcntl
import json
import logging
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Deque, Dict, FrozenSet, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from pylog.broker.config import BrokerConfig, TopicConfig
from pylog.broker.interface import NodeInfo, PartitionInfo, TopicDescription
from pylog.broker.offsets_topic import OFFSETS_TOPIC, offsets_topic_spec, partition_for_group
from pylog.cluster.controller import BROKER_IDS_PATH, CONTROLLER_PATH, SHUTTING_DOWN, TOPICS_PATH
from pylog.cluster.kernel import ClusterKernel
from pylog.cluster.local import _BROKER_KEYS, CLUSTER_ID_PATH, LocalCluster, _Copy, _kernel_config
from pylog.cluster.metadata import NodeStat, WatchQueues, encode_data
from pylog.errors import (BadVersion, BrokerClosed, CoordinatorNotAvailable, InvalidArgument, InvalidConfig,
                          MetadataStoreUnavailable, NodeExists,
                          NoNode, NotCoordinator, NotEnoughReplicas, NotEnoughReplicasAfterAppend, NotLeaderOrFollower,
                          PylogError, StorageError, TopicAlreadyExists, UnknownTopicOrPartition)
from pylog.storage.logdirs import parse_log_dirs
from pylog.util import check_int, now_ms as _now_ms

__all__ = ["ClusterNode"]

log = logging.getLogger("pylog.cluster")

_META = "meta.properties"
#: A step holding the node's lock longer than this is logged (it delays every client).
_SLOW_STEP_S = 0.1
#: How often the group loader looks again at a load that failed (and at a missing
#: __consumer_offsets that was asked for) without being woken.
_GROUP_RETRY_S = 1.0
TopicPartition = Tuple[str, int]
#: A node in a StoreCache: (data, version, ephemeral owner or None).
_Cached = Tuple[Any, int, Optional[int]]


class ClusterNode(LocalCluster):
    """This process's broker in a cluster on a shared store (see the module docstring).

    Made by :meth:`open` (which opens nothing on the network yet), then :meth:`start`
    once the server knows its advertised address: the broker registers, opens its
    replicas and starts replicating.  :meth:`close` stops it cleanly."""

    pipelined_produce = True

    def __init__(self, root: Path, kernel: ClusterKernel, tick_ms: float, config: BrokerConfig,
                 broker_id: int) -> None:
        super().__init__(root, kernel, tick_ms, config)
        self.broker_id = broker_id
        self._wake = threading.Event()
        self._lock_fd = -1
        self._started = False
        self._reconnections = 0
        #: default.replication.factor: topics made without one (auto-created, or
        #: CreateTopics with -1) get it.
        self.default_replication_factor = 1
        #: replica.socket.timeout.ms (Kafka's name).
        self.node_settings: Dict[str, Any] = {}
        #: This broker's leadership changes of __consumer_offsets partitions, noted under
        #: ``_lock`` by the kernel (partition, leading, leader epoch) for the group loader.
        self._offsets_events: Deque[Tuple[int, bool, int]] = collections.deque()
        #: Loads that failed for another reason than a lost leadership: partition -> epoch.
        self._failed_loads: Dict[int, int] = {}
        self._want_offsets_topic = False
        self._offsets_rf_warned = -1
        self._group_wake = threading.Event()
        self._group_thread = threading.Thread(target=self._run_groups, name=f"pylog-group-loader-{broker_id}",
                                              daemon=True)
        kernel.on_leadership(self._note_leadership)

    # ================================================================ open/close
    @classmethod
    def open(cls, data_dir: Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]], broker_id: int,  # type: ignore[override]
             store: Any, *,
             rack: Optional[str] = None, network: Any = None, config: Optional[Mapping[str, Any]] = None,
             tick_ms: float = 20.0, default_replication_factor: int = 1,
             node_settings: Optional[Mapping[str, Any]] = None) -> "ClusterNode":
        """Open broker ``broker_id`` on ``data_dir`` over ``store`` (a MetadataStore the
        other brokers share) and ``network`` (the kernel's messages to the other
        brokers).  ``config`` takes the names :meth:`LocalCluster.open` takes.

        ``tick_ms``: the longest the node goes without a step.  A fetch answer and a
        change in the store wake the stepping thread at once, so the tick only paces
        timers (ISR lag, long-poll expiry, retries), none finer than tens of ms; each
        step walks every replica, so a 5 ms tick cost an idle broker several % of a core
        and a busy one 10-20 % of its CPU (RF=3 acks=all bench).

        Raises InvalidConfig (a bad setting; a data directory of another broker id or
        another cluster), StorageError (the directory is in use or cannot be made)."""
        check_int("broker.id", broker_id, min=0, max=(1 << 31) - 1, error=InvalidConfig)
        config = dict(config or {})
        bcfg = BrokerConfig.from_settings({k: config.pop(k) for k in list(config) if k in _BROKER_KEYS})
        kcfg = _kernel_config(config)
        kcfg = dataclasses.replace(kcfg, admin_from_any_broker=True, incremental_sync=True,
                                   controller_tick_interval_ms=max(kcfg.controller_tick_interval_ms, 200),
                                   controller_election_retry_ms=max(kcfg.controller_election_retry_ms, 1000))
        dirs = parse_log_dirs(data_dir)  # log.dirs (JBOD): the first holds this broker's own files
        root = dirs[0]
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create {root}: {exc}") from exc
        lock_fd = _take_lock(root)
        try:
            cluster_id = _cluster_id(store)
            _check_meta(root, broker_id, cluster_id)
            cache = StoreCache(store, f"node-cache-{broker_id}")
            kernel = ClusterKernel(root, {broker_id: rack}, config=kcfg, store=CachedStore(cache), network=network,
                                   data_dirs={broker_id: dirs})
            node = cls(root, kernel, tick_ms, bcfg, broker_id)
        except BaseException:
            os.close(lock_fd)
            raise
        node._lock_fd = lock_fd
        node._cluster_id = cluster_id
        node.cache = cache
        kernel.controller_store = CachedStore(cache, served=("/brokers",))
        kernel.leader_lookup = node._leader_lookup
        kernel.leaderships_lookup = node._movable_leaderships
        node.default_replication_factor = check_int("default.replication.factor", default_replication_factor,
                                                    min=1, max=32767, error=InvalidConfig)
        node.node_settings = dict(node_settings or {})
        if network is not None:
            network.kernel = kernel
            network.wake = node._wake.set
        wake = getattr(store, "set_wakeup", None)
        if wake is not None:
            wake(node._wake.set)
        return node

    def start(self, registration: Optional[Mapping[str, Any]] = None, *, timeout_s: Optional[float] = None) -> None:
        """Register (with ``registration``: host, port, endpoints) and start replicating.

        After a kill the previous process's session may hold this broker's registration
        until it expires: this waits for it (up to the session timeout and 10 s more,
        or ``timeout_s``), then raises RequestTimedOut."""
        self._check_open()
        node = self.kernel.nodes[self.broker_id]
        node.registration = dict(registration or {})
        node.registration.setdefault("version", 5)
        node.registration.setdefault("timestamp", str(_now_ms()))
        with self._lock:
            # What the store says now: the leaderships our previous process held are read
            # at start (ClusterKernel.start_broker), and the cache dates from open().
            self.cache.reload()
            self.kernel.start_broker(self.broker_id, _now_ms())
            self.kernel.step(_now_ms())
        self._started = True
        self._thread.start()
        self._group_thread.start()
        wait = timeout_s if timeout_s is not None else self.kernel.config.session_timeout_ms / 1000.0 + 10.0
        if not node.registered:
            log.warning("broker %d: another session still holds /brokers/ids/%d (a previous process of this "
                        "broker that was killed?); waiting for it to expire", self.broker_id, self.broker_id)
        self._await(lambda: node.registered, wait, f"broker {self.broker_id}'s registration in the metadata store")
        log.info("broker %d registered (rack %s, %s)", self.broker_id, node.rack,
                 ", ".join(f"{k}={v}" for k, v in sorted(node.registration.items()) if k in ("host", "port")))

    def close(self) -> None:
        """Stop replicating, stop the group coordinator and close every replica cleanly;
        the registration goes at once, so the controller moves leaderships away."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._stop.set()
        self._wake.set()
        self._group_wake.set()
        if self._started:
            self._thread.join()
            self._group_thread.join(10.0)
        with self._groups_lock:
            groups, self._groups = self._groups, None
        if groups is not None:
            groups.close()
        network = self.kernel.network
        with self._lock:
            self.kernel.stop_broker(self.broker_id, _now_ms())
            self._cond.notify_all()
        for part in (network, self.kernel.store):
            close = getattr(part, "close", None)
            if close is not None:
                close()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def _next_tick(self) -> bool:
        """A step per tick, or at once when a reply arrived or the store changed."""
        self._wake.wait(self._tick_s)
        self._wake.clear()
        return not self._stop.is_set()

    def _step_once(self) -> None:
        """Bring the cache of the store up to date (outside the lock: round trips), then
        step; a store that is away costs a pause, never the thread."""
        try:
            reconnected = self._reconnected()
            if not getattr(self.kernel.store, "connected", True):
                pass  # the cache keeps what it knew; the step replicates without the store
            elif reconnected:
                self.cache.reload()
            else:
                self.cache.refresh()
            with self._lock:
                t0 = time.monotonic()
                if reconnected:
                    self._after_reconnection()
                self.kernel.step(_now_ms())
                self._cond.notify_all()
                took = time.monotonic() - t0
            if took > _SLOW_STEP_S:  # the lock was held that long: clients waited
                log.info("broker %d: a cluster step took %.0f ms", self.broker_id, took * 1000)
        except PylogError as exc:  # the store is unreachable for now: keep trying
            log.warning("broker %d: cluster step failed: %s", self.broker_id, exc)
            time.sleep(0.1)

    def create_topic(self, name: str, partitions: Optional[int] = None,  # type: ignore[override]
                     replication_factor: Optional[int] = None, config: Optional[Mapping[str, Any]] = None, *,
                     validate_only: bool = False, replica_assignment: Optional[Any] = None) -> Any:
        """As :meth:`LocalCluster.create_topic`; ``replication_factor`` None (or -1, as
        Kafka's CreateTopics says it) takes default.replication.factor."""
        rf = self.default_replication_factor if replication_factor in (None, -1) else replication_factor
        self._await_store_connection()
        return super().create_topic(name, partitions, rf, config, validate_only=validate_only,
                                    replica_assignment=replica_assignment)

    def _await_store_connection(self, deadline: Optional[float] = None) -> None:
        """An operator request that writes the store waits while ZooKeeper is away, up to
        the session timeout (or ``deadline``, a time.monotonic() value; as Kafka's ZooKeeper
        client blocks until it reconnects), instead of failing after one operation timeout;
        then the store's own error says what is wrong.  Not under the node lock: the
        cluster goes on meanwhile."""
        store = self.kernel.store
        if getattr(store, "connected", True):
            return
        if deadline is None:
            deadline = time.monotonic() + self.kernel.config.session_timeout_ms / 1000.0
        while not getattr(store, "connected", True) and time.monotonic() < deadline and not self._closed:
            time.sleep(0.05)

    def _reconnected(self) -> bool:
        """Whether the store reconnected since the last look (events may be lost)."""
        n = getattr(self.kernel.store, "reconnections", 0)
        if n == self._reconnections:
            return False
        self._reconnections = n
        return True

    def _after_reconnection(self) -> None:
        """Under the lock: after the store reconnected, events of what changed meanwhile
        were lost; re-read every partition state and let the controller reconcile."""
        node = self.kernel.nodes[self.broker_id]
        node.dirty = True
        if node.controller is not None:
            node.controller.mark_dirty()
        log.info("broker %d: the metadata store reconnected; re-reading the partition states", self.broker_id)

    # ================================================================ the cluster
    def _skew_scope(self) -> Dict[str, Tuple[int, Optional[FrozenSet[int]]]]:
        """Under the lock: this process records the traffic of the partitions this
        broker leads, so skew is judged among those (see
        :meth:`~pylog.broker.metrics.SkewDetector.set_partitions`)."""
        from pylog.replication.replica import LEADER

        node = self.kernel.nodes[self.broker_id]
        led: Dict[str, set] = {}
        for (topic, p), r in node.replicas.items():
            if r.state.role == LEADER:
                led.setdefault(topic, set()).add(p)
        return {t: (len(self.kernel.assignment(t)), frozenset(led.get(t, ()))) for t in self.kernel.topics()}

    def _persist(self) -> None:
        """Nothing: the store is durable (ZooKeeper)."""

    def _broker_count(self) -> int:
        """Registered brokers, read from the store itself (topic creation must not
        refuse a replication factor because the cache has not seen a broker yet).  The
        cache is then brought up to date, as the controller places replicas on the
        registrations it holds: ZooKeeper delivered their events before this read."""
        # Two session timeouts: a connection attempt a restarting server accepted but
        # never answered takes one (kazoo's connect timeout) before the next attempt.
        deadline = time.monotonic() + 2 * self.kernel.config.session_timeout_ms / 1000.0
        while True:
            try:
                n = max(1, sum(1 for n in self.kernel.store.children(BROKER_IDS_PATH) if n.isdigit()))
                break
            except NoNode:
                n = 1
                break
            except MetadataStoreUnavailable:
                # A read changes nothing: while ZooKeeper comes back (a connection may be
                # made and dropped again as a restarted server starts up), an operator's
                # request keeps trying up to the session timeout, as Kafka's client blocks.
                if time.monotonic() >= deadline or self._closed:
                    raise
                self._await_store_connection(deadline)
        if getattr(self.kernel.store, "connected", True):
            self.cache.refresh()
        return n

    def _registrations(self) -> Dict[int, Dict[str, Any]]:
        out: Dict[int, Dict[str, Any]] = {}
        for name in self.cache.children(BROKER_IDS_PATH):
            if not name.isdigit():
                continue
            try:
                data = self.cache.get(f"{BROKER_IDS_PATH}/{name}")
            except NoNode:
                continue
            out[int(name)] = data if isinstance(data, dict) else {}
        return out

    def address_of(self, broker_id: int) -> Optional[tuple]:
        """``(host, port)`` a broker registered, or None (not registered)."""
        try:
            data = self.cache.get(f"{BROKER_IDS_PATH}/{broker_id}")
        except NoNode:
            try:  # maybe newer than the cache: ask the store
                data, _ = self.kernel.store.get(f"{BROKER_IDS_PATH}/{broker_id}")
            except (NoNode, PylogError):
                return None
        if not isinstance(data, dict) or not isinstance(data.get("host"), str) or not isinstance(data.get("port"), int):
            return None
        return data["host"], data["port"]

    @property
    def controller_id(self) -> int:
        """The broker id holding ``/controller``, -1 while there is none."""
        try:
            data = self.cache.get(CONTROLLER_PATH)
        except NoNode:
            return -1
        bid = data.get("broker_id") if isinstance(data, dict) else None
        return bid if isinstance(bid, int) else -1

    def nodes(self) -> List[NodeInfo]:
        """Every registered broker with its rack and advertised address."""
        out = []
        for bid, data in sorted(self._registrations().items()):
            rack = data.get("rack")
            host, port = data.get("host"), data.get("port")
            out.append(NodeInfo(bid, rack if isinstance(rack, str) else None,
                                host if isinstance(host, str) else None, port if isinstance(port, int) else None,
                                _endpoints(data.get("endpoints"))))
        return out

    def _leader_id(self, topic: str, partition: int) -> int:
        """The leader the partition state names (as cached), when that broker is
        registered; this broker only once its replica leads."""
        try:
            st = self.cache.get(f"/brokers/topics/{topic}/partitions/{partition}/state")
        except NoNode:
            return -1
        leader = st.get("leader", -1) if isinstance(st, dict) else -1
        if leader == self.broker_id:
            return leader if self._local_leader(topic, partition) is not None else -1
        if not isinstance(leader, int) or leader < 0 or not self.cache.exists(f"{BROKER_IDS_PATH}/{leader}"):
            return -1
        return leader

    def _local_leader(self, topic: str, partition: int) -> Any:
        from pylog.replication.replica import LEADER

        node = self.kernel.nodes[self.broker_id]
        r = node.replicas.get((topic, partition))
        return node if node.running and r is not None and r.state.role == LEADER else None

    def _leader_lookup(self, topic: str, partition: int) -> Any:
        """The kernel's leader_of for this process: this broker's replica leads, or None;
        UnknownTopicOrPartition when the cache has no such partition."""
        node = self._local_leader(topic, partition)
        if node is not None:
            return node
        self._check_partition(topic, partition)
        return None

    def _assignment(self, topic: str) -> Dict[int, List[int]]:
        try:
            data = self.cache.get(f"/brokers/topics/{topic}")
        except NoNode:
            raise UnknownTopicOrPartition(f"unknown topic {topic!r}") from None
        return {int(p): list(r) for p, r in (data.get("partitions") or {}).items()}

    def _check_partition(self, topic: str, partition: int) -> None:
        n = len(self._assignment(topic)) if isinstance(topic, str) else 0
        if n == 0:
            raise UnknownTopicOrPartition(f"unknown topic {topic!r}")
        check_int(f"partition of topic {topic!r} (it has {n})", partition, min=0, max=n - 1,
                  error=UnknownTopicOrPartition)

    def list_topics(self, include_internal: bool = False) -> List[str]:
        """Topic names, sorted (from the cache of the store)."""
        from pylog.broker.broker import INTERNAL_TOPICS

        return [t for t in self.cache.children("/brokers/topics") if include_internal or t not in INTERNAL_TOPICS]

    def partitions_for(self, topic: str) -> int:
        """Partition count of ``topic``; creates it when auto.create.topics.enable is on."""
        from pylog.broker.broker import INTERNAL_TOPICS

        try:
            return len(self._assignment(topic))
        except UnknownTopicOrPartition:
            if not (self.config.auto_create_topics_enable and isinstance(topic, str)
                    and topic not in INTERNAL_TOPICS):
                raise
        try:
            self.create_topic(topic)
        except TopicAlreadyExists:
            pass
        self._await(lambda: self.cache.exists(f"/brokers/topics/{topic}"), 10.0, f"topic {topic} in the cache")
        return len(self._assignment(topic))

    def loss_ledger(self) -> List[Dict[str, Any]]:
        """The loss ledger (from the cache of the store), oldest first."""
        out = []
        for name in self.cache.children("/loss_ledger"):
            try:
                data = self.cache.get(f"/loss_ledger/{name}")
            except NoNode:
                continue
            out.append({**data, "id": name})
        return out

    def describe_topic(self, name: str, *, offsets: bool = True) -> TopicDescription:
        """As :meth:`LocalCluster.describe_topic`, from the cache of the store (offsets
        and size for the partitions this broker leads, 0 for the others).  ``offsets``
        False leaves them all 0 and never waits for the node's lock (Metadata answers on
        the server's event loop, and a step may hold the lock a hundred ms and more)."""
        from pylog.broker.broker import INTERNAL_TOPICS, validate_topic_name

        try:
            data = self.cache.get(f"/brokers/topics/{name}")
        except NoNode:
            if isinstance(name, str):
                validate_topic_name(name)
            raise UnknownTopicOrPartition(f"unknown topic {name!r}") from None
        cfg = TopicConfig.build(data.get("config", {}), self.kernel.topic_defaults())
        ledger = self.loss_ledger()
        infos = []
        for p, replicas in sorted((int(k), list(v)) for k, v in (data.get("partitions") or {}).items()):
            try:
                st = self.cache.get(f"/brokers/topics/{name}/partitions/{p}/state")
            except NoNode:  # being created: no state yet
                st = {"leader": -1, "isr": [], "leader_epoch": 0}
            losses = tuple(e for e in ledger if e.get("topic") == name and e.get("partition") == p)
            leader = self._leader_id(name, p)
            part = None
            if leader == self.broker_id and offsets:
                with self._lock:
                    node = self._local_leader(name, p)
                    if node is not None:
                        part = node.replicas[(name, p)].partition
                        offsets = (part.log_start_offset, part.log_end_offset, part.high_watermark,
                                   part.log.size_bytes)
            if part is None:
                infos.append(PartitionInfo(p, leader, replicas, list(st["isr"]), 0, 0, 0, 0, st["leader_epoch"],
                                           leader < 0, losses))
            else:
                infos.append(PartitionInfo(p, leader, replicas, list(st["isr"]), *offsets, st["leader_epoch"],
                                           False, losses))
        return TopicDescription(name, str(data.get("id", "")), infos, dict(cfg.values), dict(cfg.overrides),
                                name in INTERNAL_TOPICS)

    def metrics(self) -> Dict[str, Any]:
        """:meth:`LocalCluster.metrics` plus this broker's replication figures, as Kafka's
        ReplicaManager reports them per broker: ``leader_count``, ``partition_count``,
        ``under_replicated_partitions`` and ``under_min_isr_partitions`` (of the
        partitions this broker leads), and ``offline_partitions`` (cluster-wide, from the
        store, on every broker) and ``active_controller``."""
        from pylog.replication.replica import LEADER

        m = super().metrics()
        with self._lock:
            node = self.kernel.nodes[self.broker_id]
            leaders = [r for r in node.replicas.values() if r.state.role == LEADER]
            m["leader_count"] = len(leaders)
            m["partition_count"] = len(node.replicas)
            m["under_replicated_partitions"] = sum(len(r.state.isr) < len(r.replicas) for r in leaders)
            m["under_min_isr_partitions"] = sum(len(r.state.isr) < r.min_isr for r in leaders)
            m["active_controller"] = int(node.controller is not None and node.controller.is_active)
            m["offline_log_directories"] = node.log_dirs.offline_count
            m["offline_replicas"] = len(node.offline_replicas)
        offline = 0
        for topic in self.cache.children("/brokers/topics"):
            try:
                parts = self._assignment(topic)
            except UnknownTopicOrPartition:
                continue
            offline += sum(self._leader_id(topic, p) < 0 for p in parts)
        m["offline_partitions"] = offline
        return m

    @property
    def log_dirs(self) -> Any:
        """This broker's log directories (:class:`~pylog.storage.logdirs.LogDirs`)."""
        return self.kernel.nodes[self.broker_id].log_dirs

    def controlled_shutdown(self) -> bool:
        """Kafka's controlled shutdown, before :meth:`close` (while the server still
        answers): the kernel marks this broker shutting down, the controller moves its
        leaderships to other in-sync replicas and takes it out of the ISRs, and this waits
        until it leads nothing that could move (controlled.shutdown.max.retries attempts
        of controlled.shutdown.retry.backoff.ms; then it stops anyway, as Kafka does, and
        the controller elects when its registration goes).  Returns whether every
        movable leadership moved."""
        if not self._started or self._closed:
            return False
        with self._lock:
            controlled = self.kernel.begin_controlled_shutdown(self.broker_id, _now_ms())
        if not controlled:
            return False
        try:
            with self._lock:
                # The stepping thread refreshes the cache and steps (notifying after each
                # step); done is read from the cache, so this wait holds the lock only briefly.
                while not self.kernel.controlled_shutdown_done(self.broker_id, _now_ms()):
                    self._cond.wait(self._tick_s)
                self.kernel.step(_now_ms())  # our replicas follow the new leaders before we go
                return not self._movable_leaderships(self.broker_id)
        except PylogError as exc:
            log.warning("broker %d: controlled shutdown failed: %s; stopping anyway", self.broker_id, exc)
            return False

    def _movable_leaderships(self, broker_id: int) -> List[TopicPartition]:
        """As :func:`pylog.cluster.admin.leaderships` with ``movable_only``, from the cache
        of the store: the partitions ``broker_id`` leads that another registered, in-sync
        replica not shutting down could take over.  The kernel's
        controlled_shutdown_done asks this (its ``leaderships_lookup``) under the lock after
        every step; read from ZooKeeper, that was a round trip per partition."""
        eligible = {b for b, data in self._registrations().items() if data.get(SHUTTING_DOWN) is not True}
        out: List[TopicPartition] = []
        for topic in self.cache.children("/brokers/topics"):
            try:
                assignment = self._assignment(topic)
            except UnknownTopicOrPartition:
                continue
            for p, replicas in assignment.items():
                try:
                    st = self.cache.get(f"/brokers/topics/{topic}/partitions/{p}/state")
                except NoNode:
                    continue
                if not isinstance(st, dict) or st.get("leader") != broker_id:
                    continue
                if any(b != broker_id and b in eligible and b in st.get("isr", ()) for b in replicas):
                    out.append((topic, p))
        return sorted(out)

    # ================================================================ groups
    def coordinator_id(self, group_id: str) -> int:
        """The broker coordinating ``group_id``: the leader of its ``__consumer_offsets``
        partition, as Kafka's FindCoordinator answers.  Raises CoordinatorNotAvailable
        when that partition has no live leader now, or when the topic does not exist
        yet; then its creation is asked for (done by the group loader thread, never in
        this call, which an event loop may make)."""
        if self._closed:
            raise CoordinatorNotAvailable(f"broker {self.broker_id} is shutting down")
        with self._lock:
            try:
                p = partition_for_group(group_id, len(self.kernel.assignment(OFFSETS_TOPIC)))
            except UnknownTopicOrPartition:
                p = -1
            leader = -1 if p < 0 else self._leader_id(OFFSETS_TOPIC, p)
        if p < 0:
            self._want_offsets_topic = True
            self._group_wake.set()
            raise CoordinatorNotAvailable(f"{OFFSETS_TOPIC} does not exist yet (it is being created)")
        if leader < 0:
            raise CoordinatorNotAvailable(f"partition {p} of {OFFSETS_TOPIC} (group {group_id!r}) has no leader "
                                          "right now")
        return leader

    def _start_groups(self) -> Any:
        """This broker's group coordinator: it owns no partition of __consumer_offsets
        until the loader has replayed one this broker leads (see the module docstring).
        It never creates the topic (that waits for a FindCoordinator)."""
        from pylog.broker.group_service import GroupService

        with self._lock:
            try:
                partitions = len(self.kernel.assignment(OFFSETS_TOPIC))
            except UnknownTopicOrPartition:
                partitions = self.config.offsets_topic_num_partitions
            # Leaderships held now are loaded first; later changes arrive as events.
            self._offsets_events.clear()
            for p, epoch in sorted(self.kernel.led_partitions(self.broker_id, OFFSETS_TOPIC).items()):
                self._offsets_events.append((p, True, epoch))
        service = GroupService(
            append_async=self._append_offsets, num_partitions=partitions, owned_partitions=(),
            group_min_session_timeout_ms=self.config.group_min_session_timeout_ms,
            group_max_session_timeout_ms=self.config.group_max_session_timeout_ms,
            group_initial_rebalance_delay_ms=self.config.group_initial_rebalance_delay_ms)
        self._group_wake.set()
        return service

    def _append_offsets(self, partition: int, records: List[Tuple[bytes, Optional[bytes]]],
                        done: Callable[[Optional[BaseException]], None]) -> None:
        """The coordinator's append (GroupService's ``append_async``): one batch to our
        partition of __consumer_offsets with acks=all; ``done`` hears of it once the
        followers in the ISR have it (this never waits for them: the server's event loop
        calls in here, and it also serves their fetches).  Errors as Kafka's coordinator
        maps them: the partition moved, NOT_COORDINATOR; too few replicas,
        COORDINATOR_NOT_AVAILABLE."""
        from pylog.records import build_batch

        def acked(error: Optional[BaseException], _result: Any) -> None:
            if isinstance(error, NotLeaderOrFollower):
                error = NotCoordinator(f"broker {self.broker_id} no longer leads {OFFSETS_TOPIC}-{partition}: "
                                       f"{error}")
            elif isinstance(error, (UnknownTopicOrPartition, NotEnoughReplicas, NotEnoughReplicasAfterAppend,
                                    BrokerClosed)):
                error = CoordinatorNotAvailable(f"cannot write to {OFFSETS_TOPIC}-{partition}: {error}")
            done(error)

        data = build_batch([v for _, v in records], keys=[k for k, _ in records])
        self.produce_async(OFFSETS_TOPIC, partition, data, acks=-1, callback=acked)

    def _note_leadership(self, broker_id: int, topic: str, partition: int, leading: bool, epoch: int) -> None:
        """The kernel's on_leadership hook (under ``_lock``): note it for the loader."""
        if topic == OFFSETS_TOPIC and broker_id == self.broker_id:
            self._offsets_events.append((partition, leading, epoch))
            self._group_wake.set()

    def _run_groups(self) -> None:
        """The group loader thread: creates __consumer_offsets when asked to, and loads or
        unloads the partitions whose leadership this broker gained or lost, in order."""
        while not self._stop.is_set():
            self._group_wake.wait(_GROUP_RETRY_S)
            self._group_wake.clear()
            if self._stop.is_set():
                break
            try:
                service = self.groups
                if self._want_offsets_topic:
                    self._create_offsets_topic()
                self._retry_failed_loads()
                while not self._stop.is_set():
                    with self._lock:
                        if not self._offsets_events:
                            break
                        p, leading, epoch = self._offsets_events.popleft()
                    if leading:
                        self._load_offsets_partition(service, p, epoch)
                    else:
                        self._failed_loads.pop(p, None)
                        service.unload_partition(p, epoch if epoch >= 0 else None)
            except (BrokerClosed, CoordinatorNotAvailable):  # closing
                if self._closed:
                    break
            except Exception:  # a bug: say so, keep the groups going
                log.exception("broker %d: group loader failed", self.broker_id)
                time.sleep(0.1)

    def _load_offsets_partition(self, service: Any, partition: int, epoch: int) -> None:
        try:
            n = service.load_partition(partition, epoch, self._read_offsets(partition))
        except (NotLeaderOrFollower, UnknownTopicOrPartition) as exc:
            # The leadership went meanwhile: its event follows (or the topic was deleted).
            log.info("broker %d: loading %s-%d stopped: %s", self.broker_id, OFFSETS_TOPIC, partition, exc)
            return
        except PylogError as exc:
            if self._closed:
                return
            log.warning("broker %d: loading %s-%d failed (tried again in %.0f s): %s", self.broker_id,
                        OFFSETS_TOPIC, partition, _GROUP_RETRY_S, exc)
            self._failed_loads[partition] = epoch
            return
        self._failed_loads.pop(partition, None)
        if n is not None:
            log.info("broker %d coordinates the groups of %s-%d (leader epoch %d; %d records replayed)",
                     self.broker_id, OFFSETS_TOPIC, partition, epoch, n)

    def _retry_failed_loads(self) -> None:
        """Loads that failed while the leadership stayed ours are asked for again."""
        if not self._failed_loads:
            return
        with self._lock:
            led = self.kernel.led_partitions(self.broker_id, OFFSETS_TOPIC)
            for p, epoch in list(self._failed_loads.items()):
                del self._failed_loads[p]
                if led.get(p) == epoch:
                    self._offsets_events.append((p, True, epoch))

    def _read_offsets(self, partition: int) -> Iterator[Tuple[bytes, Optional[bytes]]]:
        """Our log of ``__consumer_offsets-<partition>`` from its start to its end, as
        (key, value) pairs: the node's lock is held only to copy each chunk out.
        Raises NotLeaderOrFollower once this broker no longer leads it."""
        from pylog.records import iter_records

        with self._lock:
            offset = self._leader_partition(OFFSETS_TOPIC, partition).log_start_offset
        while True:
            with self._lock:
                part = self._leader_partition(OFFSETS_TOPIC, partition)
                batches = [_Copy(b) for b in part.read(offset, 1 << 20, to_log_end=True)]
            if not batches:
                return
            for b in batches:
                for rec in iter_records(b.buffer, check_crcs=True):
                    if rec.key is not None and rec.offset >= offset:
                        yield rec.key, rec.value
            offset = batches[-1].next_offset

    def _create_offsets_topic(self) -> None:
        """Create __consumer_offsets with offsets.topic.replication.factor replicas, if
        enough brokers are alive (Kafka's rule); another broker may do it first."""
        self._want_offsets_topic = False
        spec = offsets_topic_spec(self.config, capped=False)
        live = len(self._registrations())
        if live < spec.replication_factor:
            if self._offsets_rf_warned != live:
                self._offsets_rf_warned = live
                log.warning("broker %d: %s needs offsets.topic.replication.factor=%d live brokers and %d are "
                            "registered; consumer groups wait (COORDINATOR_NOT_AVAILABLE) until enough are up",
                            self.broker_id, OFFSETS_TOPIC, spec.replication_factor, live)
            return
        with self._lock:
            if OFFSETS_TOPIC in self.kernel.topics():
                return
            try:
                self._create(OFFSETS_TOPIC, spec.partitions, spec.replication_factor, spec.config)
            except TopicAlreadyExists:  # another broker was first
                return
            except PylogError as exc:
                log.warning("broker %d: creating %s failed (tried again at the next FindCoordinator): %s",
                            self.broker_id, OFFSETS_TOPIC, exc)
                return
        log.info("broker %d created %s: %d partitions, replication factor %d", self.broker_id, OFFSETS_TOPIC,
                 spec.partitions, spec.replication_factor)

    # ================================================================ operator requests
    # Elections and reassignments are the controller's: they go through the store
    # (pylog.cluster.admin), wherever the controller runs, and this broker waits for the
    # controller's answer.  They block: the server runs them on its worker threads.

    def elect_leaders(self, partitions: Optional[Sequence[TopicPartition]], election_type: str = "preferred", *,
                      timeout_s: float = 30.0) -> Dict[TopicPartition, Optional[PylogError]]:
        """Kafka's ElectLeaders: each partition's outcome, None when it got the leader asked for.

        ``"preferred"`` asks the controller to move the leadership of ``partitions``
        (None: every partition) to their preferred (first) replica and waits for its
        answer: ElectionNotNeeded (it already leads), PreferredLeaderNotAvailable (not
        alive, shutting down or out of the ISR), UnknownTopicOrPartition.
        ``"unclean"`` (KIP-460) asks it to give every partition without a live leader
        one, out of the ISR if no ISR member is alive, whatever the topic's
        unclean.leader.election.enable: ElectionNotNeeded (a live leader),
        EligibleLeadersNotAvailable (no replica alive), UnknownTopicOrPartition.  An
        unclean election is logged at ERROR and written to the loss ledger.
        RequestTimedOut when the controller does not answer within ``timeout_s``."""
        from pylog.cluster import admin

        self._check_open()
        if partitions is not None and not partitions:
            return {}
        if election_type == "preferred":
            request, result = admin.request_preferred_election, admin.preferred_election_result
        elif election_type == "unclean":
            request, result = admin.request_unclean_election, admin.unclean_election_result
        else:
            raise InvalidArgument(f"election type must be 'preferred' or 'unclean', got {election_type!r}")
        store = self.kernel.store
        rid = request(store, None if partitions is None else list(partitions))
        answer = self._await_controller(lambda: result(store, rid), timeout_s,
                                        f"the {election_type} leader election")
        return {tp: admin.error_for(r["error"], f"{tp[0]}-{tp[1]}") for tp, r in sorted(answer.items())}

    def alter_partition_reassignments(self, reassignments: Mapping[TopicPartition, Optional[Sequence[int]]], *,
                                      timeout_s: float = 30.0) -> Dict[TopicPartition, Optional[PylogError]]:
        """KIP-455's AlterPartitionReassignments: start (or replace) the reassignment of
        each partition to its target replicas, or cancel it (None).  Each entry is
        checked on its own (UnknownTopicOrPartition, InvalidReplicaAssignment,
        NoReassignmentInProgress: that partition only is refused); the others go to the
        controller in one request, and this waits for its answer (RequestTimedOut after
        ``timeout_s``).  Returns each partition's outcome, None when started or
        cancelled; the copying goes on afterwards (:meth:`list_partition_reassignments`)."""
        from pylog.cluster.admin import error_for, reassignment_result, request_reassignment
        from pylog.cluster.controller import check_reassignment, live_brokers, topic_path
        from pylog.errors import UnknownTopicOrPartition

        self._check_open()
        store = self.kernel.store
        out: Dict[TopicPartition, Optional[PylogError]] = {}
        good: Dict[TopicPartition, Optional[List[int]]] = {}
        live = set(live_brokers(store))
        topics: Dict[str, Any] = {}
        for (t, p), replicas in reassignments.items():
            try:
                if t not in topics:
                    try:
                        topics[t] = store.get(topic_path(t))[0]
                    except NoNode:
                        topics[t] = None
                if topics[t] is None:
                    raise UnknownTopicOrPartition(f"topic {t!r} does not exist")
                check_reassignment(store, t, p, replicas, live=live, topic_data=topics[t])
                good[(t, p)] = None if replicas is None else list(replicas)
            except PylogError as exc:
                out[(t, p)] = exc
        if good:
            rid = request_reassignment(store, good)
            answer = self._await_controller(lambda: reassignment_result(store, rid), timeout_s,
                                            "the partition reassignment")
            for (t, p) in good:
                e = answer.get((t, p), {"error": "NONE"})
                what = f"{t}-{p}: {e['message']}" if e.get("message") else f"{t}-{p}"
                out[(t, p)] = error_for(e["error"], what)
        return dict(sorted(out.items()))

    def list_partition_reassignments(self, partitions: Optional[Sequence[TopicPartition]] = None
                                     ) -> Dict[TopicPartition, Dict[str, List[int]]]:
        """The reassignments in progress (of ``partitions`` only, when given):
        ``{(topic, partition): {"replicas", "adding", "removing"}}``, sorted."""
        from pylog.cluster.admin import list_reassignments

        self._check_open()
        return list_reassignments(self.kernel.store, partitions)

    def dynamic_broker_configs(self, broker_id: Optional[int]) -> Dict[str, Any]:
        """The dynamic broker configs (the replication throttle rates) of ``broker_id``'s
        node in the store, or of the cluster-wide default node (None)."""
        from pylog.cluster.throttle import broker_config_path

        try:
            data, _ = self.kernel.store.get(broker_config_path(broker_id))
        except NoNode:
            return {}
        config = data.get("config") if isinstance(data, dict) else None
        return dict(config) if isinstance(config, dict) else {}

    def alter_broker_config(self, broker_id: Optional[int], changes: Mapping[str, Optional[Any]], *,
                            replace: bool = False, validate_only: bool = False) -> None:
        """Change dynamic broker configs of ``broker_id`` (None: the cluster-wide default)
        in the store, as Kafka's IncrementalAlterConfigs (``replace``: AlterConfigs, the
        settings not named go) on a BROKER resource.  Only the replication throttle's
        ``leader.replication.throttled.rate`` and ``follower.replication.throttled.rate``
        (bytes/s, a positive integer; None removes) are dynamic: InvalidRequest for
        another name, InvalidConfig for a bad value.  Every broker's kernel applies
        them (:mod:`pylog.cluster.throttle`)."""
        from pylog.cluster.throttle import (FOLLOWER_THROTTLED_RATE, LEADER_THROTTLED_RATE, REASSIGNMENT_MARK,
                                            update_broker_config)
        from pylog.errors import InvalidRequest

        dynamic = (LEADER_THROTTLED_RATE, FOLLOWER_THROTTLED_RATE)
        values: Dict[str, Optional[str]] = {}
        for name, value in changes.items():
            if name not in dynamic:
                raise InvalidRequest(f"{name} is not a dynamic broker config in pylog (only {', '.join(dynamic)}); "
                                     f"set it in server.properties and restart")
            if value is None:
                values[name] = None
                continue
            try:
                rate = int(str(value).strip())
            except ValueError:
                rate = 0
            if rate < 1:
                raise InvalidConfig(f"{name} must be a positive number of bytes per second, got {value!r}")
            values[name] = str(rate)
        if broker_id is not None:
            check_int("broker id", broker_id, min=0, error=InvalidRequest)
        if validate_only:
            return

        def change(node: Dict[str, Any]) -> None:
            config = {} if replace else node["config"]
            for name, value in values.items():
                if value is None:
                    config.pop(name, None)
                else:
                    config[name] = value
            node["config"] = config
            node.pop(REASSIGNMENT_MARK, None)  # the operator's now: no reassignment clears it

        config = update_broker_config(self.kernel.store, broker_id, change)
        log.info("dynamic broker config of %s: %s", "every broker" if broker_id is None else f"broker {broker_id}",
                 ", ".join(f"{k}={v}" for k, v in sorted(config.items())) or "none")
        self._wake.set()

    def _await_controller(self, answer: Callable[[], Any], timeout_s: float, what: str) -> Any:
        """Poll ``answer()`` (a read of the controller's answer in the store) until it is
        not None; RequestTimedOut after ``timeout_s``."""
        from pylog.errors import RequestTimedOut

        deadline = time.monotonic() + timeout_s
        delay = 0.01
        while True:
            self._wake.set()  # this broker may be the controller: let it step now
            got = answer()
            if got is not None:
                return got
            if time.monotonic() > deadline:
                raise RequestTimedOut(f"the controller did not answer {what} within {timeout_s:g} s")
            time.sleep(delay)
            delay = min(delay * 2, 0.2)

    # ================================================================ replication
    def replica_fetch(self, follower: int, parts: List[Dict[str, Any]],
                      done: Callable[[List[Dict[str, Any]]], None]) -> None:
        """A follower's Fetch request (see :mod:`pylog.server.replication`)."""
        network = self.kernel.network
        if self._closed:
            done([{"topic": p["topic"], "partition": p["partition"], "error": "NOT_LEADER_OR_FOLLOWER"}
                  for p in parts])
            return
        with self._lock:
            network.serve(follower, parts, _now_ms(), done)
        self._dispatch_readable()


class StoreCache:
    """A copy of what clients ask about — registrations, ``/controller``, topic nodes,
    partition states, the loss ledger — kept current from a watch on the store.

    Metadata, describe and every produce/fetch's "does this partition exist" read it
    instead of the store: on ZooKeeper each read is a network round trip, and the
    answers were taken under the node's lock, stalling every client of the broker (as
    Kafka's brokers answer Metadata from their MetadataCache, not from ZooKeeper).  The
    node's stepping thread calls :meth:`refresh` before each step (outside the node's
    lock); it re-reads the nodes the watch events name (pipelined, when the store can).
    :meth:`reload` reads it all again (at start and after the store reconnected: events
    of the gap are lost).

    The kernel reads the copy too, through :class:`CachedStore`; the store's events
    reach the kernel's watchers only through here (:attr:`events`), each once the node
    it names was re-read, so the kernel never sees an event the copy is older than."""

    _PREFIXES = ("/brokers", CONTROLLER_PATH, "/loss_ledger")

    def __init__(self, store: Any, watcher: str) -> None:
        self.store = store
        self.watcher = watcher
        self._lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        #: path -> (data, version, ephemeral owner or None)
        self._nodes: Dict[str, _Cached] = {}
        #: The kernel's watchers (see :class:`CachedStore`): the store's events, handed on
        #: by :meth:`refresh` and :meth:`reload` after the copy took them in.
        self.events = WatchQueues()
        for prefix in self._PREFIXES:
            store.watch(prefix, watcher)
        self.reload()

    def watch(self, prefix: str) -> None:
        """Have the store's events at or below ``prefix`` come here too (to hand them on)."""
        self.store.watch(prefix, self.watcher)

    def reload(self) -> None:
        with self._refresh_lock:
            self._reload()

    def _reload(self) -> None:
        events = self.store.drain(self.watcher)  # whatever it says is in the full read below
        nodes: Dict[str, _Cached] = {}
        todo = [("/brokers", 4), ("/loss_ledger", 0)]  # ids/<id>; topics/<t>/partitions/<p>/state
        while todo:
            level: List[Tuple[str, int]] = []
            for path, depth in todo:
                try:
                    level += [(f"{path}/{name}", depth) for name in self.store.children(path)]
                except NoNode:
                    continue
            todo = []
            for (path, depth), value in zip(level, self._read_many([p for p, _ in level])):
                if value is not None:
                    nodes[path] = value
                    if depth > 0:
                        todo.append((path, depth - 1))
        for path, value in zip(("/brokers", CONTROLLER_PATH), self._read_many(["/brokers", CONTROLLER_PATH])):
            if value is not None:
                nodes[path] = value
        with self._lock:
            self._nodes = nodes
        self._hand_on(events)

    def refresh(self) -> bool:
        """Re-read what changed since the last call, then hand the events on to the
        kernel's watchers; returns whether anything changed.  One refresh at a time (the
        stepping thread's, or a caller's that needs the latest registrations), so that
        the events are handed on in the store's order."""
        with self._refresh_lock:
            return self._refresh()

    def _refresh(self) -> bool:
        events = self.store.drain(self.watcher)
        if not events:
            return False
        latest: Dict[str, str] = {}
        deleted = set()
        for e in events:
            if self._copied(e.path):
                latest[e.path] = e.kind
                if e.kind == "deleted":
                    deleted.add(e.path)
        paths = [path for path, kind in latest.items() if kind != "deleted"]
        got = self._read_many(paths)
        with self._lock:
            for path in deleted:
                self._nodes.pop(path, None)
            for path, value in zip(paths, got):
                if value is None:
                    self._nodes.pop(path, None)
                else:
                    self._put(path, value)
        self._hand_on(events)
        return True

    def _read_many(self, paths: List[str]) -> List[Optional[_Cached]]:
        """The nodes at ``paths`` (None: absent), in one round trip when the store can."""
        get_many = getattr(self.store, "get_many", None)
        if get_many is not None:
            return [None if v is None else (v[0], v[1].version, v[1].ephemeral_owner) for v in get_many(paths)]
        out: List[Optional[_Cached]] = []
        for path in paths:
            try:
                data, version = self.store.get(path)
                out.append((data, version, self.store.stat(path).ephemeral_owner))
            except NoNode:
                out.append(None)
        return out

    def _put(self, path: str, value: _Cached) -> None:
        """Under ``_lock``: keep ``value`` unless the copy holds a later version (a write
        of this node's own kernel that returned while the read was on its way)."""
        old = self._nodes.get(path)
        if old is None or value[1] >= old[1]:
            self._nodes[path] = value

    def _hand_on(self, events: List[Any]) -> None:
        for e in events:
            self.events.fire(e)

    def _copied(self, path: str) -> bool:
        return any(path == p or path.startswith(p + "/") for p in self._PREFIXES)

    def wrote(self, path: str, data: Any, version: int, owner: Optional[int] = None) -> None:
        """The kernel wrote ``path`` (created it when ``version`` is 0; ``owner``: the
        session of an ephemeral node) through the store: the copy holds it at once, as a
        read would give it back.  Its event comes from the store, in the store's order:
        handed on before the events of earlier writes (a broker's registration that the
        write relied on), it would show the controller an ISR naming a broker it does not
        know yet."""
        value = json.loads(encode_data(path, data))
        with self._lock:
            old = self._nodes.get(path)
            if version > 0 and old is not None:
                owner = old[2]
            self._put(path, (value, version, owner))

    def removed(self, path: str) -> None:
        """The kernel deleted ``path`` (and its subtree); its events come from the store."""
        with self._lock:
            for p in [p for p in self._nodes if p == path or p.startswith(path + "/")]:
                del self._nodes[p]

    def reread(self, path: str) -> None:
        """Read ``path`` from the store again (a write found the copy out of date)."""
        value = self._read_many([path])[0]
        with self._lock:
            if value is None:
                self._nodes.pop(path, None)
            else:
                self._nodes[path] = value

    def get(self, path: str) -> Any:
        """A node's data (NoNode if the cache does not hold it)."""
        return self.read(path)[0]

    def read(self, path: str) -> Tuple[Any, int]:
        """A node's ``(data, version)`` (NoNode if the cache does not hold it)."""
        with self._lock:
            try:
                data, version, _owner = self._nodes[path]
            except KeyError:
                raise NoNode(f"{path} does not exist") from None
        return data, version

    def stat(self, path: str) -> NodeStat:
        """A node's version, ephemeral owner and number of children (NoNode if the cache
        does not hold it)."""
        with self._lock:
            try:
                _data, version, owner = self._nodes[path]
            except KeyError:
                raise NoNode(f"{path} does not exist") from None
        return NodeStat(version, owner, len(self.children(path)))

    def exists(self, path: str) -> bool:
        with self._lock:
            return path in self._nodes

    def children(self, path: str) -> List[str]:
        """Names of the cached nodes directly under ``path``, sorted."""
        prefix = path.rstrip("/") + "/"
        with self._lock:
            return sorted({p[len(prefix):] for p in self._nodes
                           if p.startswith(prefix) and "/" not in p[len(prefix):]})


class CachedStore:
    """The kernel's metadata store on a process: the store itself, except that the nodes
    below ``served`` — topic nodes and partition states (``/brokers/topics``) for the
    kernel; registrations too (``/brokers``) for its controller — are read from the
    node's :class:`StoreCache`, and watch events come through it.

    A step that applied a dozen partition state changes read each one, its topic and
    its existence again from ZooKeeper — three dozen round trips under the node's lock,
    while no produce or replica fetch of the broker was served (Kafka's brokers act on
    the controller's LeaderAndIsr requests rather than read ZooKeeper).  The copy is
    never older than an event the kernel has seen (see :class:`StoreCache`), and the
    events come in the store's order; the kernel's own writes go into it as they
    return, so it reads what it wrote (their events come from the store); a write
    the store refuses as out of date (BadVersion, NodeExists, NoNode) re-reads its node
    first, so that a compare-and-set retried on the copy sees the store's version.
    ``/controller`` and its epoch, admin requests and configs are read from the store,
    as before; so are registrations but for the controller (the leader's check of an
    ISR expansion reads a registration as it is now, KIP-841).  The controller polled
    every registration at each tick (every 200 ms, three round trips per broker under
    the lock); it reads the copy, which its events are never newer than, as Kafka's
    ZooKeeper-mode controller works from its watches."""

    def __init__(self, cache: StoreCache, served: Sequence[str] = (TOPICS_PATH,)) -> None:
        self.cache = cache
        self.store = cache.store
        self.served = tuple(served)

    def __getattr__(self, name: str) -> Any:
        """The rest of the MetadataStore contract (sessions, tick, stat, connected ...)
        is the store's."""
        if name in ("cache", "store"):
            raise AttributeError(name)
        return getattr(self.store, name)

    def _served(self, path: str) -> bool:
        return any(path == p or path.startswith(p + "/") for p in self.served)

    # ---------------------------------------------------------------- reads
    def get(self, path: str) -> Tuple[Any, int]:
        if self._served(path):
            return self.cache.read(path)
        return self.store.get(path)

    def exists(self, path: str) -> bool:
        return self.cache.exists(path) if self._served(path) else self.store.exists(path)

    def stat(self, path: str) -> NodeStat:
        return self.cache.stat(path) if self._served(path) else self.store.stat(path)

    def children(self, path: str) -> List[str]:
        if not self._served(path):
            return self.store.children(path)
        if not self.cache.exists(path):
            raise NoNode(f"{path} does not exist")
        return self.cache.children(path)

    # ---------------------------------------------------------------- writes
    def set(self, path: str, data: Any, expected_version: int = -1) -> int:
        try:
            version = self.store.set(path, data, expected_version)
        except (BadVersion, NoNode):
            if self._served(path):
                self.cache.reread(path)
            raise
        if self._served(path):
            self.cache.wrote(path, data, version)
        return version

    def create(self, path: str, data: Any = None, *, ephemeral_session: Optional[int] = None,
               make_parents: bool = True) -> int:
        missing: List[str] = []
        if self._served(path) and make_parents:
            parent = path.rsplit("/", 1)[0]
            while self._served(parent) and not self.cache.exists(parent):
                missing.append(parent)
                parent = parent.rsplit("/", 1)[0]
        try:
            version = self.store.create(path, data, ephemeral_session=ephemeral_session, make_parents=make_parents)
        except NodeExists:
            if self._served(path):
                self.cache.reread(path)
            raise
        if self._served(path):
            for parent in reversed(missing):  # made with it (or by someone else meanwhile)
                if not self.cache.exists(parent):
                    self.cache.reread(parent)
            self.cache.wrote(path, data, version, ephemeral_session)
        return version

    def delete(self, path: str, expected_version: int = -1, *, recursive: bool = False) -> None:
        try:
            self.store.delete(path, expected_version, recursive=recursive)
        except (BadVersion, NoNode):
            if self._served(path):
                self.cache.reread(path)
            raise
        if self._served(path):
            self.cache.removed(path)

    # ---------------------------------------------------------------- watches
    def watch(self, prefix: str, watcher_id: Any) -> None:
        self.cache.watch(prefix)
        self.cache.events.add(prefix, watcher_id)

    def drain(self, watcher_id: Any) -> List[Any]:
        return self.cache.events.drain(watcher_id)

    def unwatch(self, watcher_id: Any) -> None:
        self.cache.events.remove(watcher_id)



def _take_lock(root: Path) -> int:
    fd = os.open(root / ".broker.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise StorageError(f"data directory {root} is in use by another broker") from None
    return fd


def _cluster_id(store: Any) -> str:
    """The cluster's id in the store (``/cluster/id``), made by the first broker."""
    for _ in range(3):
        try:
            return str(store.get(CLUSTER_ID_PATH)[0])
        except NoNode:
            try:
                store.create(CLUSTER_ID_PATH, uuid.uuid4().hex)
            except NodeExists:
                pass
    return str(store.get(CLUSTER_ID_PATH)[0])


def _check_meta(root: Path, broker_id: int, cluster_id: str) -> None:
    """Kafka's ``meta.properties``: a data directory belongs to one broker of one cluster."""
    path = root / _META
    props: Dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if "=" in line and not line.lstrip().startswith("#"):
                k, v = line.split("=", 1)
                props[k.strip()] = v.strip()
        if props.get("broker.id") not in (None, str(broker_id)):
            raise InvalidConfig(f"{root} belongs to broker.id {props['broker.id']}, not {broker_id}")
        if props.get("cluster.id") not in (None, "", cluster_id):
            raise InvalidConfig(f"{root} belongs to cluster {props['cluster.id']}, but the metadata store is "
                                f"cluster {cluster_id} (a different zookeeper.connect or chroot?)")
    text = f"version=0\nbroker.id={broker_id}\ncluster.id={cluster_id}\n"
    if path.exists() and path.read_text() == text:
        return
    tmp = path.with_name(_META + ".tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc}") from exc


def _endpoints(value: Any) -> Tuple[Tuple[str, str, int], ...]:
    """A registration's ``endpoints`` (``NAME://HOST:PORT`` strings) as (name, host,
    port); malformed entries are skipped."""
    out = []
    for item in value if isinstance(value, list) else ():
        if not isinstance(item, str) or "://" not in item:
            continue
        name, _, addr = item.partition("://")
        host, sep, port = addr.rpartition(":")
        if sep and port.isdigit():
            out.append((name, host.strip("[]"), int(port)))
    return tuple(out)

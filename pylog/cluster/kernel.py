"""The cluster kernel: brokers, their replicas, the network between them, the metadata
store — stepped by a driver that owns time.

The kernel holds no thread and reads no clock: :meth:`ClusterKernel.step` is called
with ``now`` (ms).  Two drivers run it unchanged: :class:`pylog.cluster.LocalCluster`
(a background thread, wall-clock time, instant delivery) and
:class:`pylog.cluster.simulator.Simulation` (virtual time, a seeded RNG, delayed,
dropped and reordered messages, network partitions, pauses, kills and power loss).

Per broker the kernel runs Kafka's pieces: a metadata session with an ephemeral
registration, the controller when this broker holds ``/controller``
(:class:`~pylog.cluster.controller.Controller`), and per partition a
:class:`~pylog.broker.Partition` (log, producer state) with a
:class:`~pylog.replication.ReplicaState` (ISR, HW, acks) and a leader-epoch cache.
Followers fetch from their leader with their log end offset and last epoch; a leader
answers with batches or with the epoch/offset at which the follower's log diverged
(KIP-101/KIP-320), and the follower truncates there.  Replication of replicas listed as
throttled, while they are out of the ISR, goes at most at the broker's
leader/follower.replication.throttled.rate (:mod:`pylog.cluster.throttle`: token
buckets on the step's ``now``; a throttled fetch waits at the leader until its bucket
refills, and still gets at least one batch each time).  ISR changes are written by the
leader to the store by compare-and-set and logged at WARNING.

Topics change through the controller (create, grow, reconfigure, reassign, delete);
each broker applies what the store says when it next syncs: it opens the replicas
assigned to it (a reassignment's new replicas fetch from the leader, which tracks them
and takes them into the ISR once caught up), applies a topic's new configuration to its
open replicas, and closes and removes the replicas of deleted topics and those the
assignment no longer lists (never while the store still names this broker leader; a
broker stopped meanwhile removes them when it starts).  Each replica directory holds
``partition.metadata`` (Kafka's name) with its topic id, so that a directory left by a
deleted topic is never taken for a new topic of the same name.
"""
from __future__ import annotations

import heapq
import itertools
import logging
import os
import random
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Set, Tuple

from pylog.broker.config import (
    FOLLOWER_THROTTLED_REPLICAS,
    LEADER_THROTTLED_REPLICAS,
    TopicConfig,
    parse_throttled_replicas,
)
from pylog.broker.partition import AppendResult, Partition
from pylog.errors import (
    BadVersion,
    MetadataStoreUnavailable,
    BrokerNotAvailable,
    NoNode,
    NodeExists,
    NotLeaderOrFollower,
    PylogError,
    SessionExpired,
    UnknownTopicOrPartition,
)
from pylog.replication.epochs import LeaderEpochCache, recover_cache, truncation_step
from pylog.replication.replica import LEADER, AckDone, IsrProposal, ReplicaState
from pylog.cluster.admin import leaderships, report_offline_replicas, request_controlled_shutdown
from pylog.cluster.controller import (
    ADMIN_PATH,
    CONTROLLER_PATH,
    SHUTTING_DOWN,
    WATCH_PREFIXES,
    Controller,
    append_loss_ledger,
    broker_path,
    read_loss_ledger,
)
from pylog.cluster.metadata import InMemoryMetadataStore
from pylog.storage.logdirs import LogDirs, is_dir_failure
from pylog.cluster.throttle import BROKER_CONFIG_PATH, ReplicationThrottle, TokenBucket, read_throttle_rates

__all__ = ["ClusterKernel", "KernelConfig", "Network", "STORE", "PARTITION_METADATA_FILE"]

log = logging.getLogger("pylog.replication")

#: The metadata store's network address (links to it can be cut like any other).
STORE = "store"
#: A client (producer/consumer) address in the simulator.
CLIENT = "client"
#: In each replica directory: the topic id it belongs to (Kafka's file name).
PARTITION_METADATA_FILE = "partition.metadata"


@dataclass
class KernelConfig:
    replica_lag_time_max_ms: int = 30_000  #: replica.lag.time.max.ms
    session_timeout_ms: int = 18_000  #: zookeeper.session.timeout.ms
    heartbeat_interval_ms: int = 2_000  #: at most a third of session_timeout_ms is used
    replica_fetch_backoff_ms: int = 50  #: wait before refetching after an error
    replica_fetch_wait_max_ms: int = 500  #: replica.fetch.wait.max.ms: a leader holds an empty fetch this long
    replica_fetch_max_bytes: int = 1 << 20  #: replica.fetch.max.bytes
    hw_checkpoint_interval_ms: int = 5_000  #: replica.high.watermark.checkpoint.interval.ms
    auto_leader_rebalance_enable: bool = True
    leader_imbalance_check_interval_ms: int = 300_000
    unclean_leader_election_enable: bool = False  #: the broker-wide default
    topic_defaults: Dict[str, Any] = field(default_factory=dict)
    #: Topic changes (create, grow, reconfigure, delete) may be written by any running
    #: broker of this kernel, not only by the active controller: a cluster of processes,
    #: where an operator's broker is often not the controller (Kafka's AdminZkClient).
    admin_from_any_broker: bool = False
    #: The controller's periodic work (broker changes missed by events, CAS retries,
    #: preferred leaders) at most this often; 0: at every step.  Events act at once.
    controller_tick_interval_ms: int = 0
    #: A broker that is not the controller tries to become it when ``/controller``
    #: changes, and otherwise at most this often; 0: at every step.
    controller_election_retry_ms: int = 0
    #: Re-read only the topics and partition states that watch events name (a process
    #: driver on a remote store); False: every partition state at every event.
    incremental_sync: bool = False
    controlled_shutdown_enable: bool = True  #: controlled.shutdown.enable
    controlled_shutdown_max_retries: int = 3  #: controlled.shutdown.max.retries (attempts)
    controlled_shutdown_retry_backoff_ms: int = 5_000  #: controlled.shutdown.retry.backoff.ms
    #: leader.replication.throttled.rate / follower.replication.throttled.rate (bytes/s,
    #: None: unlimited) unless /config/brokers sets them (see pylog.cluster.throttle).
    leader_replication_throttled_rate: Optional[int] = None
    follower_replication_throttled_rate: Optional[int] = None


@dataclass(order=True)
class _Msg:
    deliver_at: int
    seq: int
    src: Any = field(compare=False)
    dst: Any = field(compare=False)
    kind: str = field(compare=False)
    body: Dict[str, Any] = field(compare=False)


class Network:
    """Messages between brokers (and the store), with optional delay, drop and cuts.

    ``rng`` None: instant and lossless (LocalCluster).  Otherwise each message waits
    a uniform delay in [min_delay_ms, max_delay_ms] — which reorders them — and is
    dropped with probability ``drop_rate``.
    """

    def __init__(self, rng: Optional[random.Random] = None, *, min_delay_ms: int = 0, max_delay_ms: int = 0,
                 drop_rate: float = 0.0) -> None:
        self.rng = rng
        self.min_delay_ms = min_delay_ms
        self.max_delay_ms = max_delay_ms
        self.drop_rate = drop_rate
        self._queue: List[_Msg] = []
        self._seq = itertools.count()
        self._cuts: Set[frozenset] = set()
        self.sent = self.dropped = 0

    def cut(self, a: Any, b: Any) -> None:
        self._cuts.add(frozenset((a, b)))

    def heal(self) -> None:
        self._cuts.clear()

    def reachable(self, a: Any, b: Any) -> bool:
        return a == b or frozenset((a, b)) not in self._cuts

    def end_step(self, now: int) -> None:
        """Nothing: messages are queued as they are sent (a process's network may gather
        a step's messages and send them here, the kernel calls it after every step)."""

    def send(self, src: Any, dst: Any, kind: str, body: Dict[str, Any], now: int) -> None:
        self.sent += 1
        if not self.reachable(src, dst):
            self.dropped += 1
            return
        delay = 0
        if self.rng is not None:
            if self.drop_rate and self.rng.random() < self.drop_rate:
                self.dropped += 1
                return
            delay = self.rng.randint(self.min_delay_ms, self.max_delay_ms)
        heapq.heappush(self._queue, _Msg(now + delay, next(self._seq), src, dst, kind, body))

    def due(self, now: int) -> List[_Msg]:
        out = []
        while self._queue and self._queue[0].deliver_at <= now:
            m = heapq.heappop(self._queue)
            if self.reachable(m.src, m.dst):  # a cut made while in flight loses it
                out.append(m)
            else:
                self.dropped += 1
        return out

    def next_time(self) -> Optional[int]:
        return self._queue[0].deliver_at if self._queue else None


class _Replica:
    """One partition on one broker: storage, replication state, fetch bookkeeping."""

    __slots__ = ("tp", "partition", "state", "epochs", "fetch_inflight", "next_fetch_at", "min_isr",
                 "unclean", "replicas", "topic_id", "leader_throttled", "follower_throttled", "acked_end")

    def __init__(self, tp: Tuple[str, int], partition: Partition, state: ReplicaState,
                 epochs: LeaderEpochCache, min_isr: int, unclean: bool, replicas: Tuple[int, ...],
                 topic_id: str = "") -> None:
        self.tp = tp
        self.partition = partition
        self.state = state
        self.epochs = epochs
        self.fetch_inflight = False
        self.next_fetch_at = 0
        self.min_isr = min_isr
        self.unclean = unclean
        self.replicas = replicas
        self.topic_id = topic_id  #: "" for a topic made before topic ids
        #: End of what this broker acknowledged as leader to acks=0/1 producers (kept in
        #: ACKED_FILE): records below it that a later truncation throws away were
        #: acknowledged and never replicated — a loss the ledger records.
        self.acked_end = 0
        #: Whether the topic config lists this replica as throttled when leading / following.
        self.leader_throttled = self.follower_throttled = False
        self._set_throttled(partition.config)

    def apply_config(self, cfg: TopicConfig) -> None:
        """A topic configuration change reaching this replica: its log settings and
        compression at once, min.insync.replicas, unclean election and the replication
        throttle for what follows."""
        self.partition.reconfigure(cfg)
        self.min_isr = cfg.min_insync_replicas
        self.unclean = bool(cfg.values.get("unclean.leader.election.enable", False))
        self._set_throttled(cfg)

    def _set_throttled(self, cfg: TopicConfig) -> None:
        me = (self.tp[1], self.state.broker_id)
        for attr, name in (("leader_throttled", LEADER_THROTTLED_REPLICAS),
                           ("follower_throttled", FOLLOWER_THROTTLED_REPLICAS)):
            pairs = parse_throttled_replicas(cfg.values.get(name, ""), name)
            setattr(self, attr, pairs is None or me in pairs)


class BrokerNode:
    """One broker's process state inside the kernel."""

    def __init__(self, broker_id: int, rack: Optional[str], data_dir: Any) -> None:
        self.id = broker_id
        self.rack = rack
        #: log.dirs: one path, or several (JBOD); the first is data_dir
        self.dir_list: List[Path] = [Path(d) for d in data_dir] if isinstance(data_dir, (list, tuple)) \
            else [Path(data_dir)]
        self.data_dir = self.dir_list[0]
        #: where each replica lives, which directories failed (made at each start)
        self.log_dirs = LogDirs(self.dir_list, broker_id=broker_id)
        #: replicas in a failed log directory: not opened until the broker restarts
        self.offline_replicas: Set[Tuple[str, int]] = set()
        #: what the registration says of them (None: nothing written yet)
        self.offline_reported: Optional[frozenset] = None
        #: a log directory failed since the last step: its replicas go offline
        self.dirs_failed = False
        #: topics that existed when the broker started: a replica of one of them found in
        #: no online directory, while one is offline, may be in the offline one
        self.topics_at_start: Set[str] = set()
        self.status = "stopped"  #: running | paused | stopped
        self.session: Optional[int] = None
        self.last_heartbeat = 0
        self.controller: Optional[Controller] = None
        self.replicas: Dict[Tuple[str, int], _Replica] = {}
        self.watcher = f"broker-{broker_id}"
        self.dirty = True  #: re-read partition states at the next step
        #: Long-polling follower fetches with nothing to return yet: tp -> [(follower, request, deadline)].
        self.parked: Dict[Tuple[str, int], List[Tuple[int, Dict[str, Any], int]]] = {}
        self.last_hw_checkpoint = 0
        self.registered = False
        self.stale_epochs: Dict[Tuple[str, int], int] = {}
        #: Extra registration data (a process's advertised listeners: host, port, endpoints).
        self.registration: Dict[str, Any] = {}
        self.next_election_try = 0
        self.next_controller_tick = 0
        #: Set while a controlled shutdown is under way (see ClusterKernel.begin_controlled_shutdown).
        self.controlled_shutdown: Optional[_ControlledShutdown] = None
        self.throttle = ReplicationThrottle()

    @property
    def running(self) -> bool:
        return self.status == "running"


@dataclass
class _ControlledShutdown:
    """Progress of one broker's controlled shutdown (Kafka's retry loop, on ``now``)."""

    attempt: int  #: 1-based; at most controlled.shutdown.max.retries
    attempt_started_ms: int
    finished: bool = False


class ClusterKernel:
    """Brokers sharing one metadata store and network; see the module docstring."""

    def __init__(self, root: Path, brokers: Dict[int, Optional[str]], *, config: Optional[KernelConfig] = None,
                 network: Optional[Any] = None, store: Optional[Any] = None,
                 data_dirs: Optional[Mapping[int, Path]] = None) -> None:
        self.root = Path(root)
        self.config = config or KernelConfig()
        #: :class:`Network` here; a process driver gives one with the same methods
        #: (send, due, next_time, reachable) that carries messages over TCP.
        self.network = network or Network()
        self.store = store or InMemoryMetadataStore()
        dirs = dict(data_dirs or {})
        self.nodes: Dict[int, BrokerNode] = {b: BrokerNode(b, rack, dirs.get(b, self.root / f"broker-{b}"))
                                             for b, rack in sorted(brokers.items())}
        self.now = 0
        self._tokens = itertools.count()
        self._waiting: Dict[int, Callable[[Optional[PylogError], Optional[AppendResult]], None]] = {}
        self._results: Dict[int, AppendResult] = {}
        #: Every ISR change, unclean loss and election the kernel saw (for tests/metrics).
        self.events: List[Dict[str, Any]] = []
        self.counters: Dict[str, int] = {"isr_shrinks_total": 0, "isr_expands_total": 0}
        self.data_version = 0
        self._listeners: List[Callable[[], None]] = []
        self._readable_listeners: List[Callable[[str, int], None]] = []
        self._leadership_listeners: List[Callable[[int, str, int, bool, int], None]] = []
        #: Last ISR seen per partition, to count every change (leader's or controller's).
        self._isr_seen: Dict[str, Tuple[int, ...]] = {}
        #: Called before a broker deletes a replica that a reassignment took away from it,
        #: for a driver whose store is not durable by itself (LocalCluster saves its
        #: metadata.json): the assignment that drops the replica must outlive its data.
        self.save_metadata: Optional[Callable[[], None]] = None
        #: See :meth:`leader_of`.
        self.leader_lookup: Optional[Callable[[str, int], Optional[BrokerNode]]] = None
        #: See :meth:`controlled_shutdown_done`.
        self.leaderships_lookup: Optional[Callable[[int], List[Tuple[str, int]]]] = None
        #: The store the brokers' controllers use, when not :attr:`store` (a process
        #: driver's view that answers some reads from its cache of the store).
        self.controller_store: Optional[Any] = None
        self._store_away = False
        self.store.watch("/brokers/topics", "kernel-metrics")
        #: As ZooKeeper's client does: heartbeat at least three times per session timeout
        #: (a longer heartbeat_interval_ms would let every session expire between beats).
        self._heartbeat_ms = max(1, min(self.config.heartbeat_interval_ms, self.config.session_timeout_ms // 3))

    # ================================================================= brokers
    def start_broker(self, broker_id: int, now: int) -> None:
        """Start (or restart) a broker: open its logs (recovering), register, fetch."""
        node = self.nodes[broker_id]
        if node.status != "stopped":
            return
        node.data_dir.mkdir(parents=True, exist_ok=True)
        node.log_dirs.release()
        node.log_dirs = LogDirs(node.dir_list, broker_id=broker_id)
        node.log_dirs.open()
        node.offline_replicas = set()
        node.offline_reported = None
        node.dirs_failed = False
        node.registration.pop("offline_replicas", None)
        node.topics_at_start = set(self.topics())
        self._remove_stray_replicas(node)
        node.log_dirs.scan()
        node.session = self.store.create_session(self.config.session_timeout_ms, now)
        node.last_heartbeat = now
        for prefix in (*WATCH_PREFIXES, BROKER_CONFIG_PATH):
            self.store.watch(prefix, node.watcher)
        self._configure_throttle(node, now)
        node.registered = False
        # Leadership recorded for us before this start belongs to a previous process:
        # we lead again only at an epoch the controller gives us after we registered.
        node.stale_epochs = {}
        for topic in self.topics():
            for p in self.assignment(topic):
                try:
                    st, _ = self.partition_state(topic, p)
                except NoNode:
                    continue
                if st["leader"] == broker_id:
                    node.stale_epochs[(topic, p)] = st["leader_epoch"]
        self._register(node)
        store = self.store if self.controller_store is None else self.controller_store
        node.controller = Controller(
            broker_id, store, unclean_default=self.config.unclean_leader_election_enable,
            auto_leader_rebalance_enable=self.config.auto_leader_rebalance_enable,
            leader_imbalance_check_interval_ms=self.config.leader_imbalance_check_interval_ms)
        node.controller.allow_admin_writes = self.config.admin_from_any_broker
        node.next_election_try = node.next_controller_tick = 0
        node.status = "running"
        node.dirty = True
        self._sync_node(node, now)
        log.info("broker %d started (rack %s)", broker_id, node.rack)

    def stop_broker(self, broker_id: int, now: int, *, mode: str = "clean",
                    rng: Optional[random.Random] = None) -> None:
        """Stop a broker: ``clean`` (flush, close, leave), ``kill`` (SIGKILL: no flush,
        the page cache survives) or ``power`` (unflushed bytes lost, tails torn).  A
        clean stop is at once; a driver that wants Kafka's controlled shutdown first
        calls :meth:`begin_controlled_shutdown` and steps until
        :meth:`controlled_shutdown_done`."""
        from pylog.storage import faults

        node = self.nodes[broker_id]
        if node.status == "stopped":
            return
        for r in node.replicas.values():
            was_leader = r.state.role == LEADER
            self._finish(r.state.go_offline())
            if was_leader:
                self._leadership_changed(node, r, False, -1)
            if mode == "clean":
                _write_hw(r.partition.log.dir, r.state.high_watermark)
                r.partition.close()
                r.epochs.flush()
            elif mode == "kill":
                faults.kill_process(r.partition.log)
            else:
                faults.power_loss_log(r.partition.log, rng or random.Random(0))
        node.replicas.clear()
        node.log_dirs.release()
        node.controlled_shutdown = None
        if node.session is not None:
            try:
                if mode == "clean":
                    self.store.close_session(node.session, now)  # ephemerals go at once
            except SessionExpired:
                pass
        self.store.unwatch(node.watcher)
        node.session = None
        node.controller = None
        node.status = "stopped"
        log.info("broker %d stopped (%s)", broker_id, mode)

    def begin_controlled_shutdown(self, broker_id: int, now: int) -> bool:
        """Phase one of a clean stop (Kafka's ControlledShutdown): mark the broker's
        registration as shutting down, so that the controller moves its leaderships to
        other in-sync replicas and takes it out of the ISRs it follows in; the broker
        stops fetching as a follower of each partition once it is out of its ISR.  The
        driver then steps the cluster until :meth:`controlled_shutdown_done` and calls
        :meth:`stop_broker`.  Returns False (nothing to wait for) when
        controlled.shutdown.enable is off, controlled.shutdown.max.retries is 0 or the
        broker is not running."""
        node = self.nodes[broker_id]
        if not node.running or not self.config.controlled_shutdown_enable \
                or self.config.controlled_shutdown_max_retries < 1:
            return False
        node.controlled_shutdown = _ControlledShutdown(1, now)
        log.info("broker %d: starting controlled shutdown", broker_id)
        self._request_controlled_shutdown(node)
        self.step(now)
        return True

    def controlled_shutdown_done(self, broker_id: int, now: int) -> bool:
        """Whether the broker may stop now: it leads no partition that another replica
        could take over, or its attempts are used up (each attempt waits
        controlled.shutdown.retry.backoff.ms, at most controlled.shutdown.max.retries
        attempts, as Kafka's broker does; then it stops anyway, logged at WARNING).  A
        process driver sets :attr:`leaderships_lookup` (broker id -> its movable
        leaderships) to answer from its cache of the store: the driver polls this under
        its lock, and a scan of every partition state there is a round trip per partition."""
        node = self.nodes[broker_id]
        cs = node.controlled_shutdown
        if cs is None or cs.finished or not node.running:
            return True
        if not self.network.reachable(broker_id, STORE):
            remaining: List[Any] = ["(the metadata store is unreachable)"]
        elif self.leaderships_lookup is not None:
            remaining = list(self.leaderships_lookup(broker_id))
        else:
            remaining = list(leaderships(self.store, broker_id, movable_only=True))
        if not remaining:
            cs.finished = True
            log.info("broker %d: controlled shutdown succeeded (attempt %d): it leads no partition "
                     "another replica could take over", broker_id, cs.attempt)
            return True
        if now - cs.attempt_started_ms < self.config.controlled_shutdown_retry_backoff_ms:
            return False
        if cs.attempt >= self.config.controlled_shutdown_max_retries:
            cs.finished = True
            log.warning("broker %d: controlled shutdown failed after %d attempt(s); still leading %s; "
                        "proceeding to stop anyway", broker_id, cs.attempt, remaining[:10])
            return True
        cs.attempt += 1
        cs.attempt_started_ms = now
        log.warning("broker %d: retrying controlled shutdown (attempt %d of %d); still leading %s",
                    broker_id, cs.attempt, self.config.controlled_shutdown_max_retries, remaining[:10])
        self._request_controlled_shutdown(node)
        return False

    def _request_controlled_shutdown(self, node: BrokerNode) -> None:
        if not self.network.reachable(node.id, STORE):
            return  # the next attempt asks again
        try:
            request_controlled_shutdown(self.store, node.id)
        except BrokerNotAvailable:
            pass  # not (yet) registered: the next attempt asks again
        except MetadataStoreUnavailable as exc:
            log.warning("broker %d: could not ask for a controlled shutdown: %s; the next attempt "
                        "asks again", node.id, exc)

    def pause_broker(self, broker_id: int) -> None:
        """The broker stays registered (its session lives) but serves and fetches nothing:
        a stuck disk or a long GC as the ISR sees it."""
        if self.nodes[broker_id].status == "running":
            self.nodes[broker_id].status = "paused"

    def resume_broker(self, broker_id: int) -> None:
        if self.nodes[broker_id].status == "paused":
            self.nodes[broker_id].status = "running"
            self.nodes[broker_id].dirty = True

    def alive(self) -> List[int]:
        return [b for b, n in self.nodes.items() if n.status != "stopped"]

    # ================================================================== topics
    def controller_node(self) -> Optional[BrokerNode]:
        for n in self.nodes.values():
            if n.running and n.controller is not None and n.controller.is_active:
                return n
        return None

    def _controller(self, now: int) -> Controller:
        node = self.controller_node()
        if node is None:
            self.step(now)
            node = self.controller_node()
        if node is None and self.config.admin_from_any_broker:
            # The controller is another process: topic changes are written to the store
            # by this broker and the controller reacts to them (Kafka's ZooKeeper mode).
            node = next((n for n in self.nodes.values() if n.running and n.controller is not None), None)
        if node is None:
            raise NotLeaderOrFollower("no controller is available (no broker is running)")
        assert node.controller is not None
        return node.controller

    def create_topic(self, topic: str, partitions: int, replication_factor: int,
                     config: Dict[str, Any], now: int, *, topic_id: Optional[str] = None,
                     assignment: Optional[Sequence[Sequence[int]]] = None) -> None:
        """Create a topic through the controller (a new topic id unless one is given;
        ``assignment``: replicas per partition instead of the controller's placement)."""
        ctl = self._controller(now)
        TopicConfig.build(config, self.topic_defaults())  # validates before anything is written
        ctl.create_topic(topic, partitions, replication_factor, dict(config), now,
                         topic_id=topic_id or uuid.uuid4().hex, assignment=assignment)
        self.step(now)

    def plan_partitions(self, partitions: int, replication_factor: int, now: int) -> List[List[int]]:
        """Where the controller would place ``partitions`` new partitions (writes nothing)."""
        return self._controller(now).plan_partitions(partitions, replication_factor)

    def create_partitions(self, topic: str, count: int, now: int, *, max_partitions: int) -> None:
        """Grow ``topic`` to ``count`` partitions through the controller; the brokers open
        the new replicas at this step."""
        self._controller(now).create_partitions(topic, count, now, max_partitions=max_partitions)
        self.step(now)

    def altered_topic_config(self, topic: str, changes: Mapping[str, Any], replace: bool) -> TopicConfig:
        """``topic``'s configuration after ``changes`` (see :meth:`TopicConfig.altered`),
        validated against this cluster's defaults; nothing is written."""
        return self.topic_config(topic).altered(changes, replace=replace, defaults=self.topic_defaults())

    def alter_topic_config(self, topic: str, overrides: Mapping[str, Any], now: int) -> None:
        """Make ``overrides`` the topic's overrides through the controller; every running
        broker applies them to its replicas at this step (stopped ones when they start)."""
        TopicConfig.build(overrides, self.topic_defaults())
        self._controller(now).alter_topic_config(topic, overrides, now)
        self.step(now)

    def delete_topic(self, topic: str, now: int) -> None:
        """Delete a topic through the controller; every running broker closes and removes
        its replicas at this step (a stopped one when it starts)."""
        self._controller(now).delete_topic(topic, now)
        self.step(now)

    def topic_id(self, topic: str) -> str:
        """The topic's id (32 hex digits; "" for a topic made before topic ids)."""
        try:
            data, _ = self.store.get(f"/brokers/topics/{topic}")
        except NoNode:
            raise UnknownTopicOrPartition(f"unknown topic {topic!r}") from None
        return str(data.get("id", ""))

    def topic_defaults(self) -> Dict[str, Any]:
        """Every topic-level setting with this cluster's default (Kafka's, then topic_defaults)."""
        from pylog.broker.config import TOPIC_DEFAULTS

        d = dict(TOPIC_DEFAULTS)
        d.update(self.config.topic_defaults)
        return d

    def topic_config(self, topic: str) -> TopicConfig:
        try:
            data, _ = self.store.get(f"/brokers/topics/{topic}")
        except NoNode:
            raise UnknownTopicOrPartition(f"unknown topic {topic!r}") from None
        return TopicConfig.build(data.get("config", {}), self.topic_defaults())

    def topics(self) -> List[str]:
        try:
            return self.store.children("/brokers/topics")
        except NoNode:
            return []

    def partition_state(self, topic: str, partition: int) -> Tuple[Dict[str, Any], int]:
        return self.store.get(f"/brokers/topics/{topic}/partitions/{partition}/state")

    def assignment(self, topic: str) -> Dict[int, List[int]]:
        try:
            data, _ = self.store.get(f"/brokers/topics/{topic}")
        except NoNode:
            raise UnknownTopicOrPartition(f"unknown topic {topic!r}") from None
        return {int(p): list(r) for p, r in data["partitions"].items()}

    # ==================================================================== step
    def step(self, now: int) -> None:
        """Advance everything to ``now``: sessions, controller, metadata, fetches, messages."""
        self.now = max(self.now, now)
        now = self.now
        try:
            if not getattr(self.store, "connected", True):
                raise MetadataStoreUnavailable("not connected")
            self._step_metadata(now)
        except MetadataStoreUnavailable as exc:
            # The store is away (ZooKeeper restarting): replication goes on with what each
            # broker knows; the store's work is done again at the next step.
            if not self._store_away:
                log.warning("the metadata store is unavailable (%s); replication continues with the last "
                            "known leaders and ISRs", exc)
            self._store_away = True
        else:
            if self._store_away:
                log.info("the metadata store is available again")
                self._store_away = False
        for msg in self.network.due(now):
            self._deliver(msg, now)
        for node in self.nodes.values():
            if node.running and node.parked:
                self._answer_parked(node, now, expired_only=True)
        for node in self.nodes.values():
            if not node.running:
                continue
            if node.dirs_failed:
                self._take_dirs_offline(node)
            for r in list(node.replicas.values()):
                if r.state.role == LEADER:
                    prop = r.state.tick(now)
                    if prop is not None:
                        self._propose_isr(node, r, prop, now)
                elif r.state.leader_id >= 0 and now >= r.next_fetch_at and (
                        node.controlled_shutdown is None or node.id in r.state.isr):
                    # Not in flight, or in flight too long (a lost request or reply): fetch.
                    # (A broker shutting down fetches only while it is in the ISR: once the
                    # controller took it out, as Kafka's StopReplica makes it, it stops.  Until
                    # then the leader's acks=all producers wait for it, so it keeps up.)
                    self._send_fetch(node, r, now)
        end_step = getattr(self.network, "end_step", None)
        if end_step is not None:  # a network that gathers a step's messages sends them now
            end_step(now)

    def _step_metadata(self, now: int) -> None:
        """The store's part of a step: sessions, registrations, controller, partition states."""
        for node in self.nodes.values():
            if node.status != "stopped" and self.network.reachable(node.id, STORE) \
                    and now - node.last_heartbeat >= self._heartbeat_ms:
                try:
                    self.store.heartbeat(node.session, now)
                    node.last_heartbeat = now
                except SessionExpired:
                    self._reregister(node, now)
        expired = set(self.store.tick(now))
        for node in self.nodes.values():
            # A store that learns of expiries by itself (ZooKeeper) reports them here: act
            # at once rather than at the next heartbeat, up to heartbeat_interval_ms later,
            # while this broker would go on as leader and follower on a dead session.
            if node.status != "stopped" and node.session in expired and self.network.reachable(node.id, STORE):
                self._reregister(node, now)
        for node in self.nodes.values():
            if node.running and self.network.reachable(node.id, STORE):
                if not node.registered:
                    self._register(node)
                    if not node.registered:
                        continue  # the previous process's session still holds our id
                self._sync_node(node, now)
        self._count_isr_changes()

    # ------------------------------------------------------- log directory failure
    def _on_storage_error(self, node: BrokerNode, part: Partition, exc: BaseException) -> None:
        """A replica's disk refused a write (called with its partition lock held): an
        I/O error takes its log directory offline; the next step takes its replicas
        offline (:meth:`_take_dirs_offline`)."""
        if not is_dir_failure(exc):
            return
        root = node.log_dirs.dir_of(part.log.dir)
        if root is not None and node.log_dirs.mark_offline(root, exc):
            node.dirs_failed = True

    def _take_dirs_offline(self, node: BrokerNode) -> None:
        """Every replica of ``node`` in a failed log directory goes offline: it stops
        leading and following, its log is let go as a crash would (nothing more is
        written to a failing disk), and the registration lists it, so the controller
        moves its leadership and takes it out of the ISR (KIP-112)."""
        node.dirs_failed = False
        dirs = node.log_dirs
        gone = [tp for tp, r in node.replicas.items() if dirs.is_offline(dirs.dir_of(r.partition.log.dir))]
        for tp in gone:
            self._drop_replica(node, tp).partition.log.abandon()
            node.offline_replicas.add(tp)
        if gone:
            log.error("broker %d: %d replica(s) offline after a log directory failure: %s", node.id, len(gone),
                      ", ".join(f"{t}-{p}" for t, p in sorted(gone)[:20]) + (", ..." if len(gone) > 20 else ""))
        self._report_offline(node)
        self._data_changed()

    def _report_offline(self, node: BrokerNode) -> None:
        """Write the offline replicas into the registration, if it does not say them yet
        (again at the next step if the store cannot be reached)."""
        want = frozenset(node.offline_replicas)
        if want == node.offline_reported:
            return
        node.registration["offline_replicas"] = sorted([t, p] for t, p in want)
        if not node.registered or not self.network.reachable(node.id, STORE):
            return
        try:
            report_offline_replicas(self.store, node.id, want)
            node.offline_reported = want
        except (BrokerNotAvailable, MetadataStoreUnavailable) as exc:
            log.warning("broker %d: could not report its offline replicas yet: %s", node.id, exc)

    def _register(self, node: BrokerNode) -> None:
        """Create our ephemeral registration.  After a kill the previous process's session
        may still hold it until it expires; we retry at each step until then."""
        try:
            self.store.create(f"/brokers/ids/{node.id}", {**node.registration, "rack": node.rack},
                              ephemeral_session=node.session)
            node.registered = True
        except NodeExists:
            node.registered = False

    def _reregister(self, node: BrokerNode, now: int) -> None:
        """Our session expired (we were cut off from the store): register again."""
        log.warning("broker %d lost its metadata session; registering again", node.id)
        node.session = self.store.create_session(self.config.session_timeout_ms, now)
        node.last_heartbeat = now
        node.dirty = True
        self._register(node)

    # ----------------------------------------------------------- metadata sync
    def _sync_node(self, node: BrokerNode, now: int) -> None:
        ctl = node.controller
        assert ctl is not None
        events = self.store.drain(node.watcher)
        try:
            self._sync_node_events(node, ctl, events, now)
        except MetadataStoreUnavailable:
            # The events drained above, and a re-read under way (node.dirty is cleared
            # before it), are lost: the next step that reaches the store reads every
            # partition state again, and the controller reconciles (a broker back from a
            # lost session whose first re-read failed went on as the old leader, and
            # never rejoined the ISR).
            node.dirty = True
            ctl.mark_dirty()
            raise

    def _sync_node_events(self, node: BrokerNode, ctl: Any, events: List[Any], now: int) -> None:
        if not ctl.is_active and node.controlled_shutdown is None and (
                now >= node.next_election_try or any(e.path == CONTROLLER_PATH for e in events)):
            node.next_election_try = now + self.config.controller_election_retry_ms
            ctl.try_elect_self(node.session, now)
        if ctl.is_active:
            ctl.on_events(events, now)
            if now >= node.next_controller_tick:
                node.next_controller_tick = now + self.config.controller_tick_interval_ms
                ctl.tick(now)
        if any(e.path.startswith(BROKER_CONFIG_PATH + "/") for e in events):
            self._configure_throttle(node, now)
        # (Requests and answers under /admin, and broker configs, change no partition.)
        relevant = [e for e in events if not e.path.startswith((ADMIN_PATH + "/", BROKER_CONFIG_PATH + "/"))]
        if node.dirty or relevant:
            changed = None if node.dirty or not self.config.incremental_sync else _changed_topics(relevant)
            node.dirty = False
            self._apply_partition_states(node, now, changed)
        if (node.offline_replicas or node.offline_reported) \
                and frozenset(node.offline_replicas) != node.offline_reported:
            self._report_offline(node)
        if now - node.last_hw_checkpoint >= self.config.hw_checkpoint_interval_ms:
            node.last_hw_checkpoint = now
            for r in node.replicas.values():
                _write_hw(r.partition.log.dir, r.state.high_watermark)

    def _configure_throttle(self, node: BrokerNode, now: int) -> None:
        """The broker's replication throttle rates: /config/brokers, else KernelConfig."""
        leader, follower = read_throttle_rates(self.store, node.id)
        node.throttle.configure(leader or self.config.leader_replication_throttled_rate,
                                follower or self.config.follower_replication_throttled_rate, now)

    def _apply_partition_states(self, node: BrokerNode, now: int,
                                changed: Optional[Dict[str, Optional[Set[int]]]] = None) -> None:
        """Open, reconfigure, follow or lead what the store says for this broker.

        ``changed`` (from the watch events) limits the reading to what changed: topic ->
        None (its topic node: read it all) or the partitions whose state changed; None
        reads every topic.  A remote store makes each read a round trip, taken under the
        driver's lock, so a process driver must not re-read a thousand partition states
        because one ISR changed."""
        topics = self.topics() if changed is None else sorted(changed)
        for topic in topics:
            try:
                data, _ = self.store.get(f"/brokers/topics/{topic}")
            except NoNode:
                if changed is not None:  # deleted: below
                    continue
                continue
            try:
                assign = {int(p): list(r) for p, r in data["partitions"].items()}
                cfg = TopicConfig.build(data.get("config", {}), self.topic_defaults())
            except (KeyError, TypeError, ValueError, PylogError) as exc:
                log.warning("broker %d: topic %s has unreadable metadata: %s", node.id, topic, exc)
                continue
            topic_id = str(data.get("id", ""))
            only = None if changed is None else changed.get(topic)
            for p, replicas in assign.items():
                tp = (topic, p)
                if only is not None and p not in only:
                    continue
                if node.id not in replicas:
                    if tp in node.replicas:
                        self._remove_reassigned_replica(node, tp)
                    continue
                try:
                    st, _ = self.partition_state(topic, p)
                except NoNode:
                    continue
                r = node.replicas.get(tp)
                if r is not None and r.topic_id != topic_id:
                    # Deleted and made again while this broker did not look (paused).
                    self._remove_replica(node, tp)
                    r = None
                if r is None:
                    if tp in node.offline_replicas:
                        continue  # in a failed log directory: until the broker restarts
                    r = self._open_replica(node, tp, tuple(replicas), cfg, topic_id)
                    if r is None:
                        continue
                else:
                    if r.partition.config.overrides != cfg.overrides:
                        r.apply_config(cfg)
                    if r.replicas != tuple(replicas):  # a reassignment added or removed replicas
                        r.replicas = tuple(replicas)
                        r.state.set_replicas(r.replicas, now)
                self._apply_state(node, r, st, now)
        if changed is None:
            live_topics = set(self.topics())
            gone = [tp for tp in node.replicas if tp[0] not in live_topics]
            node.offline_replicas = {tp for tp in node.offline_replicas if tp[0] in live_topics}
        else:
            gone = [tp for tp in node.replicas if tp[0] in changed and not self.store.exists(f"/brokers/topics/{tp[0]}")]
            node.offline_replicas = {tp for tp in node.offline_replicas
                                     if tp[0] not in changed or self.store.exists(f"/brokers/topics/{tp[0]}")}
        for tp in gone:
            self._remove_replica(node, tp)

    def _drop_replica(self, node: BrokerNode, tp: Tuple[str, int]) -> _Replica:
        """Take ``tp``'s replica off ``node``: it stops leading or following (its waiting
        acks end), its parked fetches go; the caller closes or lets go of its log."""
        r = node.replicas.pop(tp)
        was_leader = r.state.role == LEADER
        self._finish(r.state.go_offline())
        if was_leader:
            self._leadership_changed(node, r, False, -1)
        node.parked.pop(tp, None)
        return r

    def _remove_replica(self, node: BrokerNode, tp: Tuple[str, int], why: str = "topic deleted") -> None:
        """Close a replica (of a deleted topic, or no longer assigned here) and remove its
        directory."""
        r = self._drop_replica(node, tp)
        r.partition.close()
        _remove_dir(r.partition.log.dir)
        log.info("broker %d removed its replica of %s-%d (%s)", node.id, tp[0], tp[1], why)

    def _remove_reassigned_replica(self, node: BrokerNode, tp: Tuple[str, int]) -> None:
        """The topic node, read just now, no longer lists this broker among the partition's
        replicas (a reassignment completed or was cancelled): close and delete ours —
        unless the partition state still names us leader (the controller moves
        leadership before it changes the assignment; we wait for that)."""
        try:
            st, _ = self.partition_state(*tp)
        except NoNode:
            return
        if st["leader"] == node.id:
            return
        if self.save_metadata is not None:
            self.save_metadata()  # the assignment that drops us must outlive our data
        self._remove_replica(node, tp, "no longer a replica: reassigned")

    def _remove_stray_replicas(self, node: BrokerNode) -> None:
        """At start: remove replica directories whose ``partition.metadata`` names a topic id
        that no topic has any more (deleted while this broker was stopped), or a partition
        of a live topic whose replicas no longer include this broker (reassigned away
        while it was stopped)."""
        ids = {t: self.topic_id(t) for t in self.topics()}
        entries = []
        for root in node.log_dirs.online:
            try:
                entries += list(root.iterdir())
            except OSError:
                continue
        for d in entries:
            tid = _read_topic_id(d)
            if not tid:
                continue
            if tid not in ids.values():
                log.warning("broker %d removes %s: its topic (id %s) was deleted", node.id, d, tid)
                _remove_dir(d)
                continue
            topic, _, p = d.name.rpartition("-")
            if ids.get(topic) != tid or not p.isdigit():
                continue
            try:
                replicas = self.assignment(topic).get(int(p))
            except UnknownTopicOrPartition:
                continue
            if replicas is not None and node.id not in replicas:
                if self.save_metadata is not None:
                    self.save_metadata()
                log.warning("broker %d removes %s: %s-%s was reassigned to %s while it was stopped",
                            node.id, d, topic, p, replicas)
                _remove_dir(d)

    def _open_replica(self, node: BrokerNode, tp: Tuple[str, int], replicas: Tuple[int, ...],
                      cfg: TopicConfig, topic_id: str) -> Optional[_Replica]:
        """Open (creating) this broker's replica of ``tp`` in its log directory (a new one:
        the online directory with the fewest replicas).  None, and the replica offline,
        when its directory failed, when opening it fails with an I/O error, or when it is
        in no online directory while one is offline and its topic existed at start (it
        may be in the failed one; Kafka's is_new_replica rule)."""
        name = f"{tp[0]}-{tp[1]}"
        dirs = node.log_dirs
        if dirs.offline and dirs.locate(name) is None and tp[0] in node.topics_at_start:
            node.offline_replicas.add(tp)
            return None
        d = dirs.path_for(name)
        if dirs.is_offline(d.parent):
            node.offline_replicas.add(tp)
            return None
        try:
            old_id = _read_topic_id(d)
            if old_id and topic_id and old_id != topic_id:
                log.warning("broker %d: %s belongs to an earlier topic %s (id %s); removing it", node.id, d,
                            tp[0], old_id)
                _remove_dir(d)
            part = Partition.open(tp[0], tp[1], d, cfg, node.id, lambda: self.now)
        except OSError as exc:
            if not is_dir_failure(exc):
                raise
            if dirs.mark_offline(d.parent, exc):
                node.dirs_failed = True
            node.offline_replicas.add(tp)
            return None
        part.on_storage_error = lambda p, e, node=node: self._on_storage_error(node, p, e)
        if topic_id and old_id != topic_id:
            _write_topic_id(d, topic_id)
        part.replicated = True
        epochs = recover_cache(part.log)
        part.epochs = epochs
        state = ReplicaState(node.id, replica_lag_time_max_ms=self.config.replica_lag_time_max_ms)
        # A restarted replica only knows what it flushed as its HW; it starts from the
        # log start and learns the rest from its leader.
        state.log_end_offset = part.log_end_offset
        hw = _read_hw(d)
        state.high_watermark = min(hw, part.log_end_offset)
        part.set_high_watermark(state.high_watermark)
        unclean = bool(cfg.values.get("unclean.leader.election.enable", False))
        r = _Replica(tp, part, state, epochs, cfg.min_insync_replicas, unclean, replicas, topic_id)
        r.acked_end = min(_read_acked(d), part.log_end_offset)
        node.replicas[tp] = r
        return r

    def _apply_state(self, node: BrokerNode, r: _Replica, st: Dict[str, Any], now: int) -> None:
        leader, epoch, isr = st["leader"], st["leader_epoch"], tuple(st["isr"])
        s = r.state
        if leader == node.id and epoch <= node.stale_epochs.get(r.tp, -1):
            if s.role != "offline":
                was_leader = s.role == LEADER
                self._finish(s.go_offline())
                if was_leader:
                    self._leadership_changed(node, r, False, -1)
            # Our previous process led at this epoch: ask the controller to elect afresh
            # (a ControlledShutdown-like request; the controller may be ourselves).
            ctl = self.controller_node()
            if ctl is not None and node.registered:
                ctl.controller.handle_restarted([node.id], now)
                node.dirty = True
            return
        if leader == node.id:
            if s.role != LEADER or s.leader_epoch != epoch:
                r.partition.leader_epoch = epoch
                r.epochs.assign(epoch, r.partition.log_end_offset)
                r.epochs.flush()
                self._finish(s.become_leader(epoch, isr, r.replicas, r.partition.log_end_offset,
                                             r.partition.high_watermark, now))
                self._set_leader_hw(r, s.high_watermark)
                self.events.append({"at_ms": now, "type": "leader", "topic": r.tp[0], "partition": r.tp[1],
                                    "leader": node.id, "leader_epoch": epoch, "isr": list(isr)})
                log.info("broker %d leads %s-%d at epoch %d (ISR %s, log end %d)", node.id, r.tp[0], r.tp[1],
                         epoch, list(isr), r.partition.log_end_offset)
                self._leadership_changed(node, r, True, epoch)
            elif frozenset(isr) != s.isr:
                self._finish(s.on_isr_changed(isr))
                self._set_leader_hw(r, s.high_watermark)
        else:
            if s.role == LEADER or s.leader_id != leader or s.leader_epoch != epoch:
                was_leader = s.role == LEADER
                self._finish(s.become_follower(leader, epoch, r.replicas, isr))
                r.partition.leader_epoch = -1
                r.fetch_inflight = False
                r.next_fetch_at = now
                if was_leader:
                    self._leadership_changed(node, r, False, epoch)
            else:
                s.isr = frozenset(isr)

    # --------------------------------------------------------------------- ISR
    def _count_isr_changes(self) -> None:
        """isr_shrinks_total / isr_expands_total over every ISR write, whoever made it."""
        for ev in self.store.drain("kernel-metrics"):
            if not ev.path.endswith("/state"):
                continue
            if ev.kind == "deleted":
                self._isr_seen.pop(ev.path, None)
                continue
            try:
                isr = tuple(sorted(self.store.get(ev.path)[0]["isr"]))
            except NoNode:
                continue
            old = self._isr_seen.get(ev.path)
            self._isr_seen[ev.path] = isr
            if old is None or old == isr:
                continue
            if set(old) - set(isr):
                self.counters["isr_shrinks_total"] += 1
            if set(isr) - set(old):
                self.counters["isr_expands_total"] += 1

    def _propose_isr(self, node: BrokerNode, r: _Replica, prop: IsrProposal, now: int) -> None:
        topic, p = r.tp
        path = f"/brokers/topics/{topic}/partitions/{p}/state"
        if not self.network.reachable(node.id, STORE) or not getattr(self.store, "connected", True):
            r.state.proposal_failed()  # ISR changes need the store: the ISR stays as it is
            return
        try:
            if not self._may_join_isr(set(prop.new_isr) - set(prop.old_isr)):
                r.state.proposal_failed()
                return
            st, version = self.store.get(path)
            if st["leader"] != node.id or st["leader_epoch"] != r.state.leader_epoch:
                r.state.proposal_failed()
                return
            joining = [b for b in prop.new_isr if b not in prop.old_isr]
            gone = [b for b in joining if not self.store.exists(f"/brokers/ids/{b}")]
            if gone:
                # A replica whose broker is not registered (its session ended, it is
                # shutting down) may still fetch; it joins no ISR until it registers
                # again (Kafka's controller refuses such an ISR, KIP-841).  Otherwise the
                # controller takes it out at once and the ISR flaps at every fetch.
                log.debug("%s-%d: not taking broker(s) %s into the ISR: not registered", topic, p, gone)
                r.state.proposal_failed()
                return
            new = dict(st)
            new["isr"] = list(prop.new_isr)
            self.store.set(path, new, version)
        except (BadVersion, NoNode, MetadataStoreUnavailable):
            r.state.proposal_failed()
            return
        shrink = len(prop.new_isr) < len(prop.old_isr)
        self.events.append({"at_ms": now, "type": "isr_shrink" if shrink else "isr_expand", "topic": topic,
                            "partition": p, "old_isr": list(prop.old_isr), "new_isr": list(prop.new_isr),
                            "reason": prop.reason})
        log.warning("ISR %s for %s-%d: %s -> %s (%s)", "shrink" if shrink else "expand", topic, p,
                    list(prop.old_isr), list(prop.new_isr), prop.reason,
                    extra={"pylog_event": "isr_shrink" if shrink else "isr_expand", "pylog_broker": node.id})
        self._finish(r.state.on_isr_changed(prop.new_isr))
        self._set_leader_hw(r, r.state.high_watermark)
        self._data_changed()

    def _may_join_isr(self, brokers: Set[int]) -> bool:
        """Whether every broker in ``brokers`` is registered and not shutting down (as in
        KIP-841: a fetch that was parked or in flight when its broker began a controlled
        shutdown, or stopped, must not bring it back into the ISR)."""
        for b in brokers:
            try:
                data, _ = self.store.get(broker_path(b))
            except NoNode:
                return False
            if isinstance(data, dict) and data.get(SHUTTING_DOWN) is True:
                return False
        return True

    # ------------------------------------------------------------------ fetches
    def _send_fetch(self, node: BrokerNode, r: _Replica, now: int) -> None:
        body = {"topic": r.tp[0], "partition": r.tp[1], "offset": r.partition.log_end_offset,
                "last_epoch": r.epochs.latest_epoch, "leader_epoch": r.state.leader_epoch}
        bucket = self._follower_throttle(node, r)
        if bucket is not None:
            allowance = bucket.allowance(now)
            if allowance <= 0:  # over follower.replication.throttled.rate: fetch later
                r.next_fetch_at = bucket.ready_at(now)
                return
            body["max_bytes"] = allowance
        r.fetch_inflight = True
        self.network.send(node.id, r.state.leader_id, "fetch", body, now)
        # A lost request or reply must not stall the follower forever.
        r.next_fetch_at = now + self.config.replica_fetch_wait_max_ms + 500

    @staticmethod
    def _follower_throttle(node: BrokerNode, r: _Replica) -> Optional[TokenBucket]:
        """The follower-side limiter for ``r``, if it applies: the replica is listed in
        follower.replication.throttled.replicas and not in the ISR."""
        if r.follower_throttled and node.throttle.follower is not None and node.id not in r.state.isr:
            return node.throttle.follower
        return None

    def _deliver(self, msg: _Msg, now: int) -> None:
        node = self.nodes.get(msg.dst) if isinstance(msg.dst, int) else None
        if node is None or node.status == "stopped":
            return
        if node.status == "paused":  # a stuck process: it will read its socket later
            self.network.send(msg.src, msg.dst, msg.kind, msg.body, now + 1)
            return
        if msg.kind == "fetch":
            self._handle_fetch(node, msg.src, msg.body, now)
        elif msg.kind == "fetch_response":
            self._handle_fetch_response(node, msg.src, msg.body, now)

    def deliver(self, msg: Any, now: int) -> None:
        """Deliver one message at once (a process driver's incoming replica fetch),
        as :meth:`step` delivers what the network has due."""
        self.now = max(self.now, now)
        self._deliver(msg, self.now)

    def answer_parked_now(self, broker_id: int, follower: int, tps: Any, now: int) -> None:
        """Answer now, with what there is, the long-polling fetches of ``follower`` for
        ``tps`` parked at ``broker_id``: a process driver answers one wire request for
        many partitions as soon as one of them has something."""
        node = self.nodes.get(broker_id)
        if node is None or not node.running:
            return
        for tp in tps:
            waiting = node.parked.get(tp)
            if not waiting:
                continue
            mine = [w for w in waiting if w[0] == follower]
            if not mine:
                continue
            rest = [w for w in waiting if w[0] != follower]
            if rest:
                node.parked[tp] = rest
            else:
                del node.parked[tp]
            for f, req, _deadline in mine:
                self._handle_fetch(node, f, req, now, may_park=False)

    def _answer_parked(self, node: BrokerNode, now: int, tp: Optional[Tuple[str, int]] = None,
                       expired_only: bool = False) -> None:
        """Answer long-polling fetches: those of ``tp`` (new data), or those whose wait is over."""
        keys = [tp] if tp is not None else list(node.parked)
        for key in keys:
            waiting = node.parked.pop(key, [])
            keep = []
            for follower, req, deadline in waiting:
                if expired_only and now < deadline:
                    keep.append((follower, req, deadline))
                else:
                    self._handle_fetch(node, follower, req, now, may_park=False)
            if keep:
                node.parked[key] = keep

    def _handle_fetch(self, node: BrokerNode, follower: int, req: Dict[str, Any], now: int,
                      may_park: bool = True) -> None:
        tp = (req["topic"], req["partition"])
        r = node.replicas.get(tp)
        reply: Dict[str, Any] = {"topic": tp[0], "partition": tp[1], "leader_epoch": req["leader_epoch"]}
        if r is None or r.state.role != LEADER:
            reply["error"] = "NOT_LEADER_OR_FOLLOWER"
        elif req["leader_epoch"] != r.state.leader_epoch:
            reply["error"] = "FENCED_LEADER_EPOCH"
        else:
            offset, last_epoch = req["offset"], req["last_epoch"]
            leo = r.partition.log_end_offset
            diverged = None
            if last_epoch >= 0:
                # OffsetsForLeaderEpoch folded into the fetch (KIP-320): our end offset for
                # the follower's last epoch; the follower works out where to truncate.
                e, end = r.epochs.end_offset_for(last_epoch, leo)
                if e != last_epoch or end < offset:
                    diverged = (e, end)
            if diverged is None and offset > leo:
                diverged = (r.epochs.latest_epoch, leo)
            if diverged is not None:
                reply["diverging"] = diverged
            else:
                if offset < r.partition.log_start_offset:
                    offset = r.partition.log_start_offset
                    reply["reset_to"] = offset
                hw, prop, done = r.state.on_fetch(follower, req["offset"], now)
                if may_park and offset >= leo and prop is None and not done:
                    # Nothing to send: hold the fetch until data arrives (long poll).
                    node.parked.setdefault(tp, []).append(
                        (follower, req, now + self.config.replica_fetch_wait_max_ms))
                    self._set_leader_hw(r, hw)
                    return
                self._set_leader_hw(r, hw)
                self._finish(done)
                if prop is not None:
                    self._propose_isr(node, r, prop, now)
                max_bytes = min(self.config.replica_fetch_max_bytes, req.get("max_bytes", 1 << 62))
                bucket = node.throttle.leader if r.leader_throttled and follower not in r.state.isr else None
                if bucket is not None and offset < leo:
                    allowance = bucket.allowance(now)
                    if allowance <= 0:  # over leader.replication.throttled.rate
                        if may_park:  # answer when the bucket has refilled (or new data came)
                            node.parked.setdefault(tp, []).append(
                                (follower, req, min(now + self.config.replica_fetch_wait_max_ms,
                                                    bucket.ready_at(now))))
                            return
                        offset = leo  # an empty answer; the follower asks again
                    max_bytes = min(max_bytes, allowance)
                batches = r.partition.read(offset, max_bytes, to_log_end=True) if offset < leo else []
                reply["data"] = b"".join(bytes(b.buffer) for b in batches)
                if bucket is not None:
                    bucket.consume(len(reply["data"]), now)
                reply["hw"] = r.state.high_watermark
                reply["log_start"] = r.partition.log_start_offset
        self.network.send(node.id, follower, "fetch_response", reply, now)

    def _handle_fetch_response(self, node: BrokerNode, leader: int, resp: Dict[str, Any], now: int) -> None:
        tp = (resp["topic"], resp["partition"])
        r = node.replicas.get(tp)
        if r is None or r.state.role == LEADER or r.state.leader_id != leader \
                or resp["leader_epoch"] != r.state.leader_epoch:
            return  # a stale reply
        r.fetch_inflight = False
        if "error" in resp:
            r.next_fetch_at = now + self.config.replica_fetch_backoff_ms
            return
        part = r.partition
        if "diverging" in resp:
            e, end = resp["diverging"]
            off, _done = truncation_step(r.epochs, part.log_end_offset, e, end)
            # Not done: the next fetch carries our new, lower last epoch (KIP-279).
            self._truncate(node, r, max(part.log_start_offset, min(off, part.log_end_offset)), now,
                           why=f"diverged from leader {leader} at epoch {e}")
            r.next_fetch_at = now
            return
        if "reset_to" in resp and resp["reset_to"] > part.log_end_offset:
            # The leader's log now starts past our end (retention, delete_records while we
            # were away): nothing we hold is needed; start over where the leader starts.
            log.info("broker %d: %s-%d restarts empty at offset %d, the leader's log start", node.id,
                     tp[0], tp[1], resp["reset_to"])
            part.truncate_fully_and_start_at(resp["reset_to"])
            r.state.log_end_offset = r.state.high_watermark = part.log_end_offset
        data = resp.get("data", b"")
        bucket = self._follower_throttle(node, r)
        if bucket is not None and data:
            bucket.consume(len(data), now)
        if data:
            try:
                batches = part.append_as_follower(data)
            except PylogError as exc:  # e.g. a gap after a lost reply: refetch from our LEO
                if isinstance(exc, OSError) and is_dir_failure(exc):
                    self._on_storage_error(node, part, exc)
                log.debug("broker %d: follower append to %s-%d failed: %s", node.id, tp[0], tp[1], exc)
                r.next_fetch_at = now + self.config.replica_fetch_backoff_ms
                return
            for b in batches:
                if b.partition_leader_epoch > r.epochs.latest_epoch:
                    r.epochs.assign(b.partition_leader_epoch, b.base_offset)
        r.next_fetch_at = now  # the leader long-polls: ask again at once
        r.state.on_follower_progress(part.log_end_offset, resp["hw"])
        part.set_high_watermark(r.state.high_watermark)
        # Adopt the leader's log start offset (its retention or delete_records), lazily at
        # each fetch as Kafka's followers do, never past what we hold below our HW.
        start = min(resp.get("log_start", 0), part.high_watermark)
        if start > part.log_start_offset:
            part.delete_records(start)

    def refetch_damaged(self, broker_id: int, tp: Tuple[str, int], offset: int, now: int) -> bool:
        """The background scrub found ``broker_id``'s copy of ``tp`` damaged from ``offset``:
        a follower drops that range (ERROR log) and fetches it again from its leader,
        which holds it; nothing is lost, so no loss ledger entry.  A leader's damaged
        copy is only logged (its followers hold the records: the operator moves
        leadership away, then deletes the damaged directory).  Returns whether the
        range was dropped."""
        node = self.nodes.get(broker_id)
        r = None if node is None or not node.running else node.replicas.get(tp)
        if r is None:
            return False
        part = r.partition
        if r.state.role == LEADER or r.state.leader_id < 0:
            log.error("broker %d: its copy of %s-%d is damaged from offset %d and it has no leader to fetch it "
                      "from (it leads, or the partition is offline); its followers' copies are not affected: "
                      "stop this broker (leadership moves), delete its %s directory and start it again",
                      broker_id, tp[0], tp[1], offset, part.log.dir)
            return False
        if offset >= part.log_end_offset:
            return False
        offset = max(offset, part.log_start_offset)
        log.error("broker %d: drops offsets [%d, %d) of its copy of %s-%d (damaged) to fetch them again from "
                  "leader %d", broker_id, offset, part.log_end_offset, tp[0], tp[1], r.state.leader_id)
        part.truncate_to(offset)
        if r.epochs.truncate_from_end(offset):
            r.epochs.flush()
        r.state.log_end_offset = part.log_end_offset
        r.state.high_watermark = min(r.state.high_watermark, part.log_end_offset)
        r.next_fetch_at = now  # an answer in flight for the old end no longer fits: it is refetched
        return True

    def _truncate(self, node: BrokerNode, r: _Replica, offset: int, now: int, why: str) -> None:
        part = r.partition
        if offset >= part.log_end_offset:
            # Nothing to cut from the log; epochs starting at the end (elected, never
            # written) still go, so the next fetch asks about an older epoch.
            if r.epochs.truncate_from_end(offset):
                r.epochs.flush()
            return
        old_end, hw = part.log_end_offset, r.state.high_watermark
        unclean = self._unclean_epoch(r.tp, r.state.leader_epoch)
        acked_end = min(r.acked_end, old_end)
        if offset >= hw and not unclean and acked_end > offset:
            # We led before, and acknowledged these to acks=0/1 producers; no follower
            # copied them before we stopped leading: the acknowledged writes are gone.
            entry = {"at_ms": now, "type": "loss", "topic": r.tp[0], "partition": r.tp[1], "broker": node.id,
                     "first_offset": offset, "end_offset": acked_end, "leader_epoch": r.state.leader_epoch,
                     "reason": why + f"; broker {node.id} had acknowledged them as leader with acks=0/1 and no "
                                     "follower had copied them"}
            self.events.append(entry)
            self._ledger(entry)
            log.error("broker %d discards offsets [%d, %d) of %s-%d that it acknowledged as leader (acks=0/1) "
                      "before any follower copied them (%s)", node.id, offset, acked_end, r.tp[0], r.tp[1], why,
                      extra={"pylog_event": "loss", "pylog_broker": node.id})
        if offset < hw or unclean:
            # Records are thrown away that were committed (below our HW), or that the
            # old ISR held when an out-of-sync replica was elected: a loss to record.
            end = old_end if unclean else hw
            entry = {"at_ms": now, "type": "loss", "topic": r.tp[0], "partition": r.tp[1], "broker": node.id,
                     "first_offset": offset, "end_offset": end, "leader_epoch": r.state.leader_epoch,
                     "reason": why + (" after an unclean leader election" if unclean else "")}
            self.events.append(entry)
            self._ledger(entry)
            log.error("broker %d discards offsets [%d, %d) of %s-%d (%s)", node.id, offset, end,
                      r.tp[0], r.tp[1], entry["reason"], extra={"pylog_event": "loss", "pylog_broker": node.id})
        else:
            log.info("broker %d truncates %s-%d from %d to %d (%s)", node.id, r.tp[0], r.tp[1], old_end, offset, why)
        part.truncate_to(offset)
        r.epochs.truncate_from_end(offset)
        r.epochs.flush()
        r.state.log_end_offset = offset
        r.state.high_watermark = min(r.state.high_watermark, offset)
        if r.acked_end > offset:
            r.acked_end = offset
            _write_acked(part.log.dir, offset)

    def _unclean_epoch(self, tp: Tuple[str, int], epoch: int) -> bool:
        """Whether the controller recorded leader ``epoch`` of ``tp`` as an unclean election
        (False, with a WARNING, while the store cannot say)."""
        try:
            if not getattr(self.store, "connected", True):
                raise MetadataStoreUnavailable("not connected")
            ledger = read_loss_ledger(self.store)
        except MetadataStoreUnavailable as exc:
            log.warning("cannot read the loss ledger to classify a truncation of %s-%d: %s", tp[0], tp[1], exc)
            return False
        return any(e.get("topic") == tp[0] and e.get("partition") == tp[1] and e.get("leader_epoch") == epoch
                   and "first_offset" not in e for e in ledger)

    def _ledger(self, entry: Dict[str, Any]) -> None:
        append_loss_ledger(self.store, entry)

    def work_due(self) -> bool:
        """True if a message is due by the current time: another :meth:`step` now would
        make progress (an in-process driver steps again at once instead of sleeping)."""
        t = self.network.next_time()
        return t is not None and t <= self.now

    # ------------------------------------------------------------------ produce
    def leader_of(self, topic: str, partition: int) -> Optional[BrokerNode]:
        """The running broker leading ``topic-partition`` now (its replica leads and the
        store names it), None while there is none; UnknownTopicOrPartition.  A process
        driver sets :attr:`leader_lookup` to answer from its own replicas and its cache of
        the store instead (a store read per produce or fetch is a network round trip)."""
        if self.leader_lookup is not None:
            return self.leader_lookup(topic, partition)
        try:
            st, _ = self.partition_state(topic, partition)
        except NoNode:
            raise UnknownTopicOrPartition(f"partition {partition} of topic {topic!r} does not exist") from None
        node = self.nodes.get(st["leader"])
        if node is None or not node.running:
            return None
        r = node.replicas.get((topic, partition))
        if r is None or r.state.role != LEADER:
            return None
        return node

    def led_partitions(self, broker_id: int, topic: str) -> Dict[int, int]:
        """The partitions of ``topic`` that running broker ``broker_id`` leads now, with
        the leader epoch of each (what :meth:`on_leadership` reported last for them)."""
        node = self.nodes[broker_id]
        if not node.running:
            return {}
        return {tp[1]: r.state.leader_epoch for tp, r in node.replicas.items()
                if tp[0] == topic and r.state.role == LEADER}

    def produce(self, topic: str, partition: int, data: Any, acks: int,
                callback: Callable[[Optional[PylogError], Optional[AppendResult]], None],
                *, via: Any = None) -> None:
        """A produce request arriving at the partition's leader.  ``callback(error,
        result)`` runs when acks are satisfied (or at once for acks 0/1 and errors)."""
        node = self.leader_of(topic, partition)
        if node is not None and node.dirs_failed:  # a log directory failed since the last step
            self._take_dirs_offline(node)
            node = self.leader_of(topic, partition)
        if node is None or (via is not None and not self.network.reachable(via, node.id)):
            callback(NotLeaderOrFollower(f"no reachable leader for {topic}-{partition} right now"), None)
            return
        r = node.replicas.get((topic, partition))
        if r is None:  # the driver's lookup still names a replica that went offline
            callback(NotLeaderOrFollower(f"no leader for {topic}-{partition} on broker {node.id} right now"), None)
            return
        try:
            r.state.check_can_append(acks, r.min_isr)
            res = r.partition.append(data, required_acks=acks)
        except PylogError as exc:
            callback(exc, None)
            return
        token = next(self._tokens)
        self._waiting[token] = callback
        self._results[token] = res
        done = r.state.on_appended(r.partition.log_end_offset, token=token, required_offset=res.last_offset + 1,
                                   required_acks=acks, min_isr=r.min_isr)
        self._set_leader_hw(r, r.state.high_watermark)
        if acks != -1:
            done.append(AckDone(token, None))
            if res.last_offset + 1 > r.acked_end:
                r.acked_end = res.last_offset + 1
                _write_acked(r.partition.log.dir, r.acked_end)
        self._finish(done)
        if node.parked:
            self._answer_parked(node, self.now, (topic, partition))
        self._data_changed()

    def delete_records(self, topic: str, partition: int, before_offset: int) -> int:
        """DeleteRecords at the partition's leader (see :meth:`Partition.delete_records`);
        the followers' parked fetches are answered now, so that they adopt the new log
        start offset without waiting for data.  Returns the leader's log start offset.
        Raises NotLeaderOrFollower (no leader), UnknownTopicOrPartition, OffsetOutOfRange."""
        node = self.leader_of(topic, partition)
        if node is None:
            raise NotLeaderOrFollower(f"{topic}-{partition} has no leader right now")
        start = node.replicas[(topic, partition)].partition.delete_records(before_offset)
        if node.parked:
            self._answer_parked(node, self.now, (topic, partition))
        return start

    def _finish(self, done: List[AckDone]) -> None:
        for d in done:
            cb = self._waiting.pop(d.token, None)
            res = self._results.pop(d.token, None)
            if cb is not None:
                cb(d.error, res if d.error is None else None)
        if done:
            self._data_changed()

    def on_data(self, fn: Callable[[], None]) -> None:
        """Call ``fn()`` (inside :meth:`step` or :meth:`produce`) whenever something changed
        that a waiting client may care about: an acknowledgement, an HW or ISR move."""
        self._listeners.append(fn)

    def on_readable(self, fn: Callable[[str, int], None]) -> None:
        """Call ``fn(topic, partition)`` (inside :meth:`step` or :meth:`produce`, so the
        driver's lock is held: ``fn`` should only note it) whenever a leader's high
        watermark moves up: records became readable by consumers."""
        self._readable_listeners.append(fn)

    def on_leadership(self, fn: Callable[[int, str, int, bool, int], None]) -> None:
        """Call ``fn(broker_id, topic, partition, leading, leader_epoch)`` whenever a
        broker's replica starts leading (``leading`` True, at ``leader_epoch``; again at
        each new epoch it leads) or stops leading (``leading`` False; ``leader_epoch`` is
        the epoch it now follows, -1 when the replica went offline, was removed or its
        broker stopped).  Called inside :meth:`step` and the other calls that change
        replica roles, so the driver's lock is held: ``fn`` should only note it (Kafka's
        onLeadershipChange callback to the group coordinator)."""
        self._leadership_listeners.append(fn)

    def _leadership_changed(self, node: BrokerNode, r: _Replica, leading: bool, epoch: int) -> None:
        for fn in self._leadership_listeners:
            try:
                fn(node.id, r.tp[0], r.tp[1], leading, epoch)
            except Exception:  # a listener's bug must not break replication
                log.exception("leadership listener failed for %s-%d", r.tp[0], r.tp[1])

    def _set_leader_hw(self, r: _Replica, hw: int) -> None:
        part = r.partition
        before = part.high_watermark
        part.set_high_watermark(hw)
        if part.high_watermark > before:
            for fn in self._readable_listeners:
                fn(r.tp[0], r.tp[1])

    def _data_changed(self) -> None:
        self.data_version += 1
        for fn in self._listeners:
            fn()

    # ------------------------------------------------------------------- status
    def metrics(self) -> Dict[str, Any]:
        self._count_isr_changes()
        out = dict(self.counters)
        ctl = self.controller_node()
        if ctl is not None:
            out.update(ctl.controller.metrics())
        return out


def _changed_topics(events: List[Any]) -> Optional[Dict[str, Optional[Set[int]]]]:
    """What watch events name: topic -> None (its topic node changed: all of it) or the
    partitions whose state changed.  None (read everything) when an event is about
    something else that may matter to partitions (a registration, the controller)."""
    out: Dict[str, Optional[Set[int]]] = {}
    for e in events:
        parts = e.path.split("/")  # "", "brokers", "topics", t, "partitions", p, "state"
        if len(parts) >= 4 and parts[1] == "brokers" and parts[2] == "topics":
            topic = parts[3]
            if len(parts) == 7 and parts[4] == "partitions" and parts[6] == "state" and parts[5].isdigit():
                if topic not in out or out[topic] is not None:
                    out.setdefault(topic, set()).add(int(parts[5]))  # type: ignore[union-attr]
            else:
                out[topic] = None
        elif e.path == "/brokers/topics":
            return None
        elif e.path.startswith(("/brokers/ids", "/controller")):
            continue  # registrations and the controller change no partition state by themselves
        else:
            return None
    return out


_HW_FILE = "replication-offset-checkpoint"
#: In each replica directory: :attr:`_Replica.acked_end` (decimal text).
ACKED_FILE = "leader-acked-offset"


def _read_acked(directory: Path) -> int:
    try:
        return int((directory / ACKED_FILE).read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


def _write_acked(directory: Path, offset: int) -> None:
    """One small write per acks=0/1 produce, not fsynced: it survives a killed process
    (the page cache does), and a power loss takes the unflushed records with it too."""
    try:
        fd = os.open(directory / ACKED_FILE, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            data = b"%020d\n" % offset
            os.pwrite(fd, data, 0)
        finally:
            os.close(fd)
    except OSError as exc:
        log.warning("cannot write %s: %s", directory / ACKED_FILE, exc)


def _read_hw(directory: Path) -> int:
    try:
        return int((directory / _HW_FILE).read_text().split()[-1])
    except (OSError, ValueError, IndexError):
        return 0


def _write_hw(directory: Path, hw: int) -> None:
    """The replica's last known HW (Kafka checkpoints it every few seconds); not
    fsynced: a stale value only makes a restarted replica start lower.  Written beside
    and renamed over, so a full disk leaves the older value, never an empty file."""
    path = directory / _HW_FILE
    tmp = directory / (_HW_FILE + ".tmp")
    try:
        tmp.write_text(f"0\n1\n{hw}\n")
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("cannot write %s: %s", path, exc)
        try:
            tmp.unlink()
        except OSError:
            pass


def _read_topic_id(directory: Path) -> str:
    """The topic id in a replica directory's ``partition.metadata`` ("" if none)."""
    try:
        text = (directory / PARTITION_METADATA_FILE).read_text()
    except (OSError, UnicodeDecodeError):
        return ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "topic_id":
            return value.strip()
    return ""


def _write_topic_id(directory: Path, topic_id: str) -> None:
    """Kafka's ``partition.metadata`` layout (the id in hex here); replaced atomically."""
    path = directory / PARTITION_METADATA_FILE
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(f"version: 0\ntopic_id: {topic_id}\n")
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("cannot write %s: %s", path, exc)


def _remove_dir(directory: Path) -> None:
    """Remove a replica directory: renamed aside first, so that a crash midway leaves no
    half-removed directory under the partition's name."""
    gone = directory.with_name(f"{directory.name}.{uuid.uuid4().hex[:8]}-delete")
    try:
        os.replace(directory, gone)
    except FileNotFoundError:
        return
    except OSError:
        gone = directory
    shutil.rmtree(gone, ignore_errors=True)

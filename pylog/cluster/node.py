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
"""
from __future__ import annotations

import dataclasses
import fcntl
import logging
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Union

from pylog.broker.config import BrokerConfig
from pylog.broker.interface import NodeInfo
from pylog.cluster.controller import BROKER_IDS_PATH, CONTROLLER_PATH
from pylog.cluster.kernel import ClusterKernel
from pylog.cluster.local import _BROKER_KEYS, CLUSTER_ID_PATH, LocalCluster, _kernel_config
from pylog.errors import InvalidConfig, NodeExists, NoNode, PylogError, StorageError
from pylog.util import check_int, now_ms as _now_ms

__all__ = ["ClusterNode"]

log = logging.getLogger("pylog.cluster")

_META = "meta.properties"


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
        #: replica.socket.timeout.ms, controlled.shutdown.* (Kafka names).
        self.node_settings: Dict[str, Any] = {}

    # ================================================================ open/close
    @classmethod
    def open(cls, data_dir: Union[str, os.PathLike], broker_id: int, store: Any, *,  # type: ignore[override]
             rack: Optional[str] = None, network: Any = None, config: Optional[Mapping[str, Any]] = None,
             tick_ms: float = 5.0, default_replication_factor: int = 1,
             node_settings: Optional[Mapping[str, Any]] = None) -> "ClusterNode":
        """Open broker ``broker_id`` on ``data_dir`` over ``store`` (a MetadataStore the
        other brokers share) and ``network`` (the kernel's messages to the other
        brokers).  ``config`` takes the names :meth:`LocalCluster.open` takes.

        Raises InvalidConfig (a bad setting; a data directory of another broker id or
        another cluster), StorageError (the directory is in use or cannot be made)."""
        check_int("broker.id", broker_id, min=0, max=(1 << 31) - 1, error=InvalidConfig)
        config = dict(config or {})
        bcfg = BrokerConfig.from_settings({k: config.pop(k) for k in list(config) if k in _BROKER_KEYS})
        kcfg = _kernel_config(config)
        kcfg = dataclasses.replace(kcfg, admin_from_any_broker=True,
                                   controller_tick_interval_ms=max(kcfg.controller_tick_interval_ms, 200),
                                   controller_election_retry_ms=max(kcfg.controller_election_retry_ms, 1000))
        root = Path(data_dir)
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create {root}: {exc}") from exc
        lock_fd = _take_lock(root)
        try:
            cluster_id = _cluster_id(store)
            _check_meta(root, broker_id, cluster_id)
            kernel = ClusterKernel(root, {broker_id: rack}, config=kcfg, store=store, network=network,
                                   data_dirs={broker_id: root})
            node = cls(root, kernel, tick_ms, bcfg, broker_id)
        except BaseException:
            os.close(lock_fd)
            raise
        node._lock_fd = lock_fd
        node._cluster_id = cluster_id
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
            self.kernel.start_broker(self.broker_id, _now_ms())
            self.kernel.step(_now_ms())
        self._started = True
        self._thread.start()
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
        if self._started:
            self._thread.join()
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

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._tick_s)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                with self._lock:
                    self._after_reconnection()
                    self.kernel.step(_now_ms())
                    self._cond.notify_all()
            except PylogError as exc:  # the store is unreachable for now: keep trying
                log.warning("broker %d: cluster step failed: %s", self.broker_id, exc)
                time.sleep(0.1)
            except Exception:
                log.exception("cluster step failed")
                time.sleep(0.1)
            self._dispatch_readable()
            if time.monotonic() - self._last_hk_check >= 1.0:
                self._last_hk_check = time.monotonic()
                try:
                    self.run_housekeeping()
                except Exception:
                    log.exception("cluster housekeeping failed")

    def create_topic(self, name: str, partitions: Optional[int] = None,  # type: ignore[override]
                     replication_factor: Optional[int] = None, config: Optional[Mapping[str, Any]] = None, *,
                     validate_only: bool = False, replica_assignment: Optional[Any] = None) -> Any:
        """As :meth:`LocalCluster.create_topic`; ``replication_factor`` None (or -1, as
        Kafka's CreateTopics says it) takes default.replication.factor."""
        rf = self.default_replication_factor if replication_factor in (None, -1) else replication_factor
        return super().create_topic(name, partitions, rf, config, validate_only=validate_only,
                                    replica_assignment=replica_assignment)

    def _after_reconnection(self) -> None:
        """Under the lock: after the store reconnected, events of what changed meanwhile
        were lost; re-read every partition state and let the controller reconcile."""
        n = getattr(self.kernel.store, "reconnections", 0)
        if n == self._reconnections:
            return
        self._reconnections = n
        node = self.kernel.nodes[self.broker_id]
        node.dirty = True
        if node.controller is not None:
            node.controller.mark_dirty()
        log.info("broker %d: the metadata store reconnected; re-reading the partition states", self.broker_id)

    # ================================================================ the cluster
    def _persist(self) -> None:
        """Nothing: the store is durable (ZooKeeper)."""

    def _broker_count(self) -> int:
        return max(1, len(self._registrations()))

    def _registrations(self) -> Dict[int, Dict[str, Any]]:
        store = self.kernel.store
        out: Dict[int, Dict[str, Any]] = {}
        try:
            names = store.children(BROKER_IDS_PATH)
        except NoNode:
            return out
        for name in names:
            if not name.isdigit():
                continue
            try:
                data, _ = store.get(f"{BROKER_IDS_PATH}/{name}")
            except NoNode:
                continue
            out[int(name)] = data if isinstance(data, dict) else {}
        return out

    def address_of(self, broker_id: int) -> Optional[tuple]:
        """``(host, port)`` a broker registered, or None (not registered)."""
        try:
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
            data, _ = self.kernel.store.get(CONTROLLER_PATH)
        except (NoNode, PylogError):
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
                                host if isinstance(host, str) else None, port if isinstance(port, int) else None))
        return out

    def _leader_id(self, topic: str, partition: int) -> int:
        """The leader the partition state names, when that broker is registered."""
        try:
            st, _ = self.kernel.partition_state(topic, partition)
        except NoNode:
            return -1
        leader = st.get("leader", -1)
        if leader == self.broker_id:
            return leader if self.kernel.leader_of(topic, partition) is not None else -1
        if leader < 0 or not self.kernel.store.exists(f"{BROKER_IDS_PATH}/{leader}"):
            return -1
        return leader

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
            offline = 0
            for topic in self.kernel.topics():
                try:
                    parts = self.kernel.assignment(topic)
                except PylogError:
                    continue
                offline += sum(self._leader_id(topic, p) < 0 for p in parts)
            m["offline_partitions"] = offline
        return m

    def controlled_shutdown(self) -> bool:
        """Kafka's controlled shutdown, before :meth:`close`: ask the controller to move
        this broker's leaderships to other in-sync replicas (and take it out of the ISRs),
        and wait until it leads nothing that can move.  controlled.shutdown.max.retries
        attempts, each waiting up to controlled.shutdown.retry.backoff.ms.  Returns
        whether every movable leadership moved (False: the broker stops anyway, as Kafka
        does, and the controller elects when its registration goes)."""
        from pylog.cluster.admin import leaderships, request_controlled_shutdown

        if not self._started or self._closed or not self.node_settings.get("controlled.shutdown.enable", True):
            return False
        store = self.kernel.store
        retries = int(self.node_settings.get("controlled.shutdown.max.retries", 3))
        backoff_s = int(self.node_settings.get("controlled.shutdown.retry.backoff.ms", 5000)) / 1000.0
        left: List[Any] = []
        for attempt in range(retries + 1):
            try:
                request_controlled_shutdown(store, self.broker_id)
                deadline = time.monotonic() + backoff_s
                while True:
                    left = leaderships(store, self.broker_id, movable_only=True)
                    if not left or time.monotonic() > deadline:
                        break
                    self._wake.set()
                    time.sleep(0.02)
            except PylogError as exc:
                log.warning("broker %d: controlled shutdown attempt %d failed: %s", self.broker_id, attempt + 1, exc)
                time.sleep(min(backoff_s, 1.0))
                continue
            if not left:
                log.info("broker %d: controlled shutdown moved every leadership away", self.broker_id)
                return True
            log.warning("broker %d: controlled shutdown attempt %d: still leading %s", self.broker_id, attempt + 1,
                        ", ".join(f"{t}-{p}" for t, p in left[:10]))
        log.warning("broker %d: controlled shutdown incomplete after %d attempts; stopping anyway",
                    self.broker_id, retries + 1)
        return False

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

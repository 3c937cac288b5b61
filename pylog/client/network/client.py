"""NetworkClient: the broker methods the Producer, Consumer and GroupMember use, over
Kafka's wire protocol.

Written to Kafka's protocol, not to pylog's internals: it works against ``pylog serve``
and against any Kafka broker.  What it offers (and nothing else; it is not a whole
:class:`~pylog.broker.interface.BrokerInterface` — topic administration is not here):

* cluster: ``cluster_id``, ``controller_id``, ``nodes()``, ``list_topics()``,
  ``partitions_for(topic)`` (Metadata; auto-creation as the constructor says);
* producing: ``init_producer_id()``, ``produce()``, and pipelined ``produce_async()`` +
  ``drive()``: the batches queued when ``drive`` runs go out as one ProduceRequest per
  leader (a partition with several queued batches gets one per request, in order,
  as Kafka allows one batch per partition per request), all written before any answer
  is awaited — a round of batches costs one round trip per broker;
* consuming: ``fetch()`` (one partition, no wait), ``send_fetches()`` (every wanted
  partition of a broker in ONE Fetch request, long-polling with max_wait/min_bytes;
  answers arrive while the caller does other work), ``list_offsets()``;
* ``groups``: the group coordinator's blocking calls over FindCoordinator, JoinGroup,
  SyncGroup, Heartbeat, LeaveGroup, OffsetCommit and OffsetFetch
  (:class:`~pylog.client.network.groups.NetworkGroups`);
* ``close()``.

Routing: Metadata names the brokers and each partition's leader; a request goes to the
leader.  Metadata is cached per topic and refreshed when a broker answers
NOT_LEADER_OR_FOLLOWER, UNKNOWN_TOPIC_OR_PARTITION or LEADER_NOT_AVAILABLE, when a
connection fails, and after ``metadata_max_age_ms``.

Connections (:mod:`pylog.client.network.connection`): per broker one connection per
*lane* — "data" (Metadata, Produce, Fetch, ListOffsets, InitProducerId), "group"
(Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch) and "join" (JoinGroup, SyncGroup,
which wait for a rebalance): a broker answers a connection's requests one at a time,
so a JoinGroup waiting for a rebalance must not hold up heartbeats and commits.
Failures raise :class:`~pylog.errors.NetworkException` (retriable) naming the address;
every request has a deadline (``request_timeout_ms``).  All methods are thread-safe.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Tuple, Union

from pylog.broker.interface import FetchResult, NodeInfo
from pylog.client.network.connection import BrokerConnection, PendingRequest
from pylog.client.network.records import whole_batches
from pylog.errors import (InvalidConfig, InvalidRequiredAcks, LeaderNotAvailable, NetworkException, PylogError,
                          RequestTimedOut, UnknownTopicOrPartition, error_for_code)
from pylog.protocol import ApiKey
from pylog.records import RecordBatch

__all__ = ["NetworkClient", "ProduceResult", "PartitionFetch", "FetchHandle", "parse_bootstrap"]

log = logging.getLogger("pylog.client.network")

_ZERO_UUID = uuid.UUID(int=0)
_NONE = 0
_UNKNOWN_TOPIC = 3
_LEADER_NOT_AVAILABLE = 5
_NOT_LEADER = 6
#: Errors after which a partition's leader must be looked up again.
_STALE_METADATA = {_UNKNOWN_TOPIC, _LEADER_NOT_AVAILABLE, _NOT_LEADER, 74, 75, 100}  # + FENCED/UNKNOWN_LEADER_EPOCH, UNKNOWN_TOPIC_ID
#: Bootstrap connections are keyed below every node id.
_BOOTSTRAP = -1000


def parse_bootstrap(bootstrap: str) -> List[Tuple[str, int]]:
    """``"host:port"`` or ``"h1:p1,h2:p2"`` (IPv6 as ``[::1]:9092``) as (host, port) pairs;
    InvalidConfig when it does not parse."""
    if not isinstance(bootstrap, str) or not bootstrap.strip():
        raise InvalidConfig(f"bootstrap servers must be 'host:port[,host:port...]', got {bootstrap!r}")
    out = []
    for item in bootstrap.split(","):
        item = item.strip()
        if "://" in item:  # PLAINTEXT://host:port, as Kafka's listeners are written
            item = item.split("://", 1)[1]
        host, sep, port = item.rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise InvalidConfig(f"bootstrap server {item!r} is not 'host:port'")
        out.append((host, int(port)))
    return out


def _ms(value: Any) -> int:
    """kio durations and timestamps as ms (-1 for null)."""
    if value is None:
        return -1
    if hasattr(value, "total_seconds"):
        return int(value.total_seconds() * 1000)
    if hasattr(value, "timestamp"):
        return int(value.timestamp() * 1000)
    return int(value)


def _acks(acks: Union[int, str]) -> int:
    if acks == "all":
        return -1
    if isinstance(acks, str) and acks.lstrip("-").isdigit():
        acks = int(acks)
    if acks not in (-1, 0, 1) or isinstance(acks, bool):
        raise InvalidRequiredAcks(f"acks must be 0, 1, -1 or 'all', got {acks!r}")
    return int(acks)


def _error(code: int, what: str, message: Optional[str] = None) -> PylogError:
    cls = error_for_code(code)
    name = cls.kafka_name if cls is not PylogError else f"error code {code}"
    return cls(f"{what}: {message}" if message else f"{what}: {name}")


class ProduceResult(NamedTuple):
    """A partition's answer to a Produce (the fields the Producer reads)."""

    base_offset: int
    log_append_time: int  #: ms, -1 unless the topic uses LogAppendTime
    log_start_offset: int


class PartitionFetch(NamedTuple):
    """One partition of a Fetch answer: ``records`` (bytes-like, Kafka v2 batches; a
    broker may cut the last one short) or ``error``."""

    error: Optional[PylogError]
    records: Any
    high_watermark: int
    log_start_offset: int


@dataclass
class _TopicMeta:
    name: str
    topic_id: uuid.UUID
    leaders: List[int]  #: per partition: leader node id, -1 when it has none
    epochs: List[int]
    fetched_at: float  #: time.monotonic() of the Metadata answer
    stale: bool = False


class FetchHandle:
    """A Fetch sent to one broker; :meth:`result` gives each partition's PartitionFetch."""

    __slots__ = ("client", "node", "pending", "wanted", "names")

    def __init__(self, client: "NetworkClient", node: int, pending: PendingRequest,
                 wanted: List[Tuple[str, int, int]], names: Dict[uuid.UUID, str]) -> None:
        self.client = client
        self.node = node
        self.pending = pending
        self.wanted = wanted  #: (topic, partition, fetch offset)
        self.names = names  #: topic id -> name (Fetch v13+)

    def done(self) -> bool:
        return self.pending.done()

    def wait(self, timeout_s: Optional[float]) -> bool:
        return self.pending.wait(timeout_s)

    def result(self) -> Dict[Tuple[str, int], PartitionFetch]:
        """Every wanted partition's answer; a failed request gives each partition the
        error (NetworkException, RequestTimedOut: retriable).  Call when done."""
        try:
            resp = self.pending.response()
        except PylogError as exc:
            self.client._connection_trouble(self.node)
            return {(t, p): PartitionFetch(exc, b"", -1, -1) for t, p, _ in self.wanted}
        out: Dict[Tuple[str, int], PartitionFetch] = {}
        top = int(getattr(resp, "error_code", 0))
        if top:
            err = _error(top, f"Fetch from {self.pending.address}")
            return {(t, p): PartitionFetch(err, b"", -1, -1) for t, p, _ in self.wanted}
        for t in resp.responses:
            name = getattr(t, "topic", None)
            if name is None:
                name = self.names.get(t.topic_id, "")
            for p in t.partitions:
                code = int(p.error_code)
                err = None
                if code:
                    err = _error(code, f"Fetch of {name}-{p.partition_index}")
                    if code in _STALE_METADATA:
                        self.client.invalidate(name)
                out[(name, int(p.partition_index))] = PartitionFetch(
                    err, p.records if p.records is not None else b"", int(p.high_watermark),
                    int(getattr(p, "log_start_offset", -1)))
        for t, p, _ in self.wanted:  # a broker must answer every partition; be safe
            if (t, p) not in out:
                out[(t, p)] = PartitionFetch(NetworkException(f"{self.pending.address} did not answer {t}-{p}"),
                                             b"", -1, -1)
        return out


class _ProduceInFlight:
    __slots__ = ("pending", "node", "items", "acks")

    def __init__(self, pending: PendingRequest, node: int, items: List[Tuple[str, int, Callable]], acks: int) -> None:
        self.pending = pending
        self.node = node
        self.items = items
        self.acks = acks


class NetworkClient:
    """A Kafka protocol client of the brokers at ``bootstrap`` (see the module docstring).

    Connects to a bootstrap server and asks Metadata at once: NetworkException naming
    every address tried when none answers (each within ``connect_timeout_ms``).
    ``allow_auto_topic_creation`` goes into Metadata requests (Kafka's producer sends
    true, the consumer false here); the broker decides.
    """

    #: The Producer keeps several batches in flight and :meth:`drive` s them.
    pipelined_produce = True

    def __init__(self, bootstrap: str, *, client_id: str = "pylog", allow_auto_topic_creation: bool = True,
                 request_timeout_ms: int = 30_000, connect_timeout_ms: int = 10_000,
                 metadata_max_age_ms: int = 300_000, retry_backoff_ms: int = 100) -> None:
        self.bootstrap_servers = parse_bootstrap(bootstrap)
        self.client_id = client_id or "pylog"
        self.allow_auto_topic_creation = bool(allow_auto_topic_creation)
        self.request_timeout_s = request_timeout_ms / 1000.0
        self.connect_timeout_s = connect_timeout_ms / 1000.0
        self.metadata_max_age_s = metadata_max_age_ms / 1000.0
        self.retry_backoff_s = retry_backoff_ms / 1000.0
        self._lock = threading.RLock()
        self._conns: Dict[Tuple[int, str], BrokerConnection] = {}
        self._conn_locks: Dict[Tuple[int, str], threading.Lock] = {}
        self._failed_at: Dict[Tuple[int, str], Tuple[float, NetworkException]] = {}
        self._brokers: Dict[int, Tuple[str, int, Optional[str]]] = {
            _BOOTSTRAP - i: (h, p, None) for i, (h, p) in enumerate(self.bootstrap_servers)}
        self._topics: Dict[str, _TopicMeta] = {}
        self._topic_names: Dict[uuid.UUID, str] = {}
        self._cluster_id: Optional[str] = None
        self._controller_id = -1
        self._produce_queue: List[Tuple[str, int, Any, int, Callable]] = []
        self._produce_in_flight: List[_ProduceInFlight] = []
        self._produce_event = threading.Event()
        self._delivering = 0  #: answers taken off _produce_in_flight whose callbacks still run
        self._groups: Any = None
        self._closed = False
        self._refresh_metadata([])  # reach the cluster now: fail fast when nothing answers

    # ================================================================ connections
    def _address_of(self, node: int) -> Tuple[str, int]:
        with self._lock:
            b = self._brokers.get(node)
        if b is None:
            raise LeaderNotAvailable(f"broker {node} is not in the cluster's metadata")
        return b[0], b[1]

    def register_broker(self, node: int, host: str, port: int) -> None:
        """Remember a broker's address learnt outside Metadata (FindCoordinator)."""
        with self._lock:
            old = self._brokers.get(node)
            self._brokers[node] = (host, port, old[2] if old else None)

    def connection(self, node: int, lane: str = "data") -> BrokerConnection:
        """The open connection to broker ``node`` on ``lane``, connecting if needed.
        NetworkException naming the address when it cannot (a broker that just failed
        is not retried for retry_backoff_ms: the same error comes back at once)."""
        key = (node, lane)
        conn = self._conns.get(key)
        if conn is not None and not conn.closed:
            return conn
        if self._closed:
            raise NetworkException("the client is closed")
        with self._lock:
            lock = self._conn_locks.setdefault(key, threading.Lock())
        with lock:
            conn = self._conns.get(key)
            if conn is not None and not conn.closed:
                return conn
            failed = self._failed_at.get(key)
            if failed is not None and time.monotonic() - failed[0] < self.retry_backoff_s:
                raise failed[1]
            host, port = self._address_of(node)
            name = f"bootstrap {host}:{port}" if node <= _BOOTSTRAP else f"broker {node} {lane}"
            try:
                conn = BrokerConnection.open(host, port, client_id=self.client_id, name=name,
                                             connect_timeout_s=self.connect_timeout_s,
                                             request_timeout_s=self.request_timeout_s,
                                             on_close=self._on_connection_closed)
            except NetworkException as exc:
                self._failed_at[key] = (time.monotonic(), exc)
                self._connection_trouble(node)
                raise
            self._failed_at.pop(key, None)
            if self._closed:
                conn.close()
                raise NetworkException("the client is closed")
            self._conns[key] = conn
            return conn

    def _on_connection_closed(self, conn: BrokerConnection) -> None:
        if not self._closed:
            self._invalidate_all()

    def _connection_trouble(self, node: int) -> None:
        """A broker failed us: look the cluster up again before trusting its leaders."""
        self._invalidate_all()

    def request(self, node: int, api_key: int, data: Mapping[str, Any], *, lane: str = "data",
                timeout_s: Optional[float] = None, what: str = "") -> Any:
        """Send one request to ``node`` and return its decoded answer (blocking)."""
        timeout = self.request_timeout_s if timeout_s is None else timeout_s
        conn = self.connection(node, lane)
        pending = conn.send(api_key, data, timeout_s=timeout, what=what)
        try:
            return pending.result()
        except NetworkException:
            self._connection_trouble(node)
            raise

    def _any_node(self) -> List[int]:
        """Nodes to ask cluster-wide questions, best first: brokers with an open
        connection, the other known brokers, then the bootstrap servers."""
        with self._lock:
            brokers = [n for n in self._brokers if n > _BOOTSTRAP]
            boot = [n for n in self._brokers if n <= _BOOTSTRAP]
            open_ = [n for n in brokers if (n, "data") in self._conns and not self._conns[(n, "data")].closed]
        return open_ + [n for n in brokers if n not in open_] + sorted(boot, reverse=True)

    def _request_any(self, api_key: int, data: Mapping[str, Any], what: str) -> Any:
        tried = []
        last: Optional[PylogError] = None
        for node in self._any_node():
            try:
                return self.request(node, api_key, data, what=what)
            except (NetworkException, RequestTimedOut) as exc:
                last = exc
                tried.append(str(exc))
            except LeaderNotAvailable as exc:  # a broker that left the metadata meanwhile
                last = exc
        if len(tried) == 1 and last is not None:
            raise last
        raise NetworkException(f"{what}: no broker answered; " + "; ".join(tried or ["no broker known"]))

    # ================================================================ metadata
    def _refresh_metadata(self, topics: Optional[List[str]], allow_create: Optional[bool] = None) -> Any:
        create = self.allow_auto_topic_creation if allow_create is None else allow_create
        data = {"topics": None if topics is None else [{"name": t, "topic_id": _ZERO_UUID} for t in topics],
                "allow_auto_topic_creation": create, "include_cluster_authorized_operations": False,
                "include_topic_authorized_operations": False}
        resp = self._request_any(ApiKey.METADATA, data, "Metadata")
        now = time.monotonic()
        with self._lock:
            brokers = {int(b.node_id): (b.host, int(b.port), b.rack) for b in resp.brokers}
            if brokers:
                boot = {n: v for n, v in self._brokers.items() if n <= _BOOTSTRAP}
                self._brokers = {**boot, **brokers}
            self._cluster_id = getattr(resp, "cluster_id", None)
            self._controller_id = int(getattr(resp, "controller_id", -1))
            for t in resp.topics:
                if t.name is None:
                    continue
                code = int(t.error_code)
                if code:
                    self._topics.pop(t.name, None)
                    continue
                parts = sorted(t.partitions, key=lambda p: p.partition_index)
                tid = getattr(t, "topic_id", None) or _ZERO_UUID
                meta = _TopicMeta(t.name, tid, [int(p.leader_id) for p in parts],
                                  [int(getattr(p, "leader_epoch", -1)) for p in parts], now)
                self._topics[t.name] = meta
                if tid != _ZERO_UUID:
                    self._topic_names[tid] = t.name
        # Bootstrap connections are for the first look only (as Kafka's clients do).
        with self._lock:
            stale = [self._conns.pop(k) for k in list(self._conns) if k[0] <= _BOOTSTRAP] \
                if any(n > _BOOTSTRAP for n in self._brokers) else []
        for c in stale:
            c.close()
        return resp

    def invalidate(self, topic: Optional[str] = None) -> None:
        """Look ``topic`` (every topic if None) up again before its next use."""
        if topic is None:
            self._invalidate_all()
            return
        meta = self._topics.get(topic)
        if meta is not None:
            meta.stale = True

    def _invalidate_all(self) -> None:
        for meta in list(self._topics.values()):
            meta.stale = True

    def _topic(self, topic: str, *, allow_create: Optional[bool] = None) -> _TopicMeta:
        """The topic's metadata, fetched when unknown, stale (at most every
        retry_backoff_ms) or older than metadata_max_age_ms.  UnknownTopicOrPartition,
        InvalidTopic, ...; waits (up to request_timeout_ms) while a new topic has no
        partitions yet (LEADER_NOT_AVAILABLE right after auto-creation)."""
        meta = self._topics.get(topic)
        now = time.monotonic()
        if meta is not None:
            age = now - meta.fetched_at
            if not (meta.stale and age >= self.retry_backoff_s) and age < self.metadata_max_age_s:
                return meta
        if not isinstance(topic, str) or not topic:
            from pylog.errors import InvalidTopic

            raise InvalidTopic(f"topic must be a non-empty str, got {topic!r}")
        deadline = now + self.request_timeout_s
        while True:
            resp = self._refresh_metadata([topic], allow_create)
            row = next((t for t in resp.topics if t.name == topic), None)
            code = _UNKNOWN_TOPIC if row is None else int(row.error_code)
            if code == _NONE and row.partitions:
                return self._topics[topic]
            if code not in (_NONE, _LEADER_NOT_AVAILABLE) or time.monotonic() >= deadline:
                if code == _UNKNOWN_TOPIC:
                    raise UnknownTopicOrPartition(f"unknown topic {topic!r} (Metadata from the cluster at "
                                                  f"{self._bootstrap_text()})")
                raise _error(code or _LEADER_NOT_AVAILABLE, f"Metadata of topic {topic!r}")
            time.sleep(self.retry_backoff_s)

    def _bootstrap_text(self) -> str:
        return ",".join(f"{h}:{p}" for h, p in self.bootstrap_servers)

    def leader_of(self, topic: str, partition: int) -> int:
        """The node id leading ``topic``-``partition`` (UnknownTopicOrPartition,
        LeaderNotAvailable: retriable)."""
        meta = self._topic(topic, allow_create=False)
        if not 0 <= partition < len(meta.leaders):
            raise UnknownTopicOrPartition(f"{topic!r} has {len(meta.leaders)} partitions, not partition {partition}")
        leader = meta.leaders[partition]
        if leader < 0:
            meta.stale = True
            raise LeaderNotAvailable(f"{topic}-{partition} has no leader right now")
        return leader

    def topic_id(self, topic: str) -> uuid.UUID:
        meta = self._topics.get(topic)
        return meta.topic_id if meta is not None else _ZERO_UUID

    # ================================================================ cluster
    @property
    def cluster_id(self) -> Optional[str]:
        return self._cluster_id

    @property
    def controller_id(self) -> int:
        return self._controller_id

    def nodes(self) -> List[NodeInfo]:
        """The brokers of the last Metadata answer."""
        with self._lock:
            return [NodeInfo(n, rack, host, port) for n, (host, port, rack) in sorted(self._brokers.items())
                    if n > _BOOTSTRAP]

    def list_topics(self, include_internal: bool = False) -> List[str]:
        resp = self._refresh_metadata(None, False)
        return sorted(t.name for t in resp.topics
                      if t.name is not None and int(t.error_code) == 0 and (include_internal or not t.is_internal))

    def partitions_for(self, topic: str) -> int:
        """Partition count of ``topic`` (Metadata; cached, see :meth:`_topic`)."""
        return len(self._topic(topic).leaders)

    def partition(self, topic: str, partition: int) -> int:
        """Check that the partition exists (UnknownTopicOrPartition otherwise, never
        creating the topic); returns its leader's node id, -1 if it has none."""
        meta = self._topic(topic, allow_create=False)
        if not 0 <= partition < len(meta.leaders):
            raise UnknownTopicOrPartition(f"topic {topic!r} has {len(meta.leaders)} partitions, "
                                          f"not partition {partition}")
        return meta.leaders[partition]

    # ================================================================ producing
    def init_producer_id(self) -> Tuple[int, int]:
        """A new (producer id, epoch) from InitProducerId (no transactional id)."""
        deadline = time.monotonic() + self.request_timeout_s
        while True:
            resp = self._request_any(ApiKey.INIT_PRODUCER_ID, {
                "transactional_id": None, "transaction_timeout": 60_000, "producer_id": -1,
                "producer_epoch": -1}, "InitProducerId")
            code = int(resp.error_code)
            if code == _NONE:
                return int(resp.producer_id), int(resp.producer_epoch)
            err = _error(code, "InitProducerId")
            if not err.retriable or time.monotonic() >= deadline:
                raise err
            time.sleep(self.retry_backoff_s)

    def produce(self, topic: str, partition: int, data: Any, *, acks: Union[int, str] = -1,
                timeout_ms: int = 30_000) -> ProduceResult:
        """Append batches to a partition's leader and wait for the answer."""
        box: List[Tuple[Optional[BaseException], Any]] = []
        self.produce_async(topic, partition, data, acks=acks, callback=lambda e, r: box.append((e, r)))
        if not self.drive(lambda: bool(box), timeout_ms / 1000.0):
            raise RequestTimedOut(f"Produce to {topic}-{partition} got no answer within {timeout_ms} ms")
        error, result = box[0]
        if error is not None:
            raise error
        return result

    def produce_async(self, topic: str, partition: int, data: Any, *, acks: Union[int, str] = -1,
                      callback: Callable[[Optional[BaseException], Any], None]) -> None:
        """Queue batches for ``topic``-``partition``; the next :meth:`drive` sends them.
        ``callback(error, ProduceResult)`` runs once, in the thread that drives."""
        with self._lock:
            self._produce_queue.append((topic, partition, data, _acks(acks), callback))

    def drive(self, done: Callable[[], bool], timeout_s: float) -> bool:
        """Send the queued batches (see the module docstring) and deliver answers until
        ``done()`` or ``timeout_s``; returns done()."""
        deadline = time.monotonic() + timeout_s
        self._send_produce_queue()
        while True:
            self._deliver_produce_answers()
            if done():
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return bool(done())
            with self._lock:
                waiting = bool(self._produce_in_flight) or self._delivering > 0
            if not waiting:
                return bool(done())
            self._produce_event.wait(min(left, 0.5))
            self._produce_event.clear()

    def _send_produce_queue(self) -> None:
        with self._lock:
            queue, self._produce_queue = self._produce_queue, []
        if not queue:
            return
        # (node, acks) -> layers; each layer holds a partition at most once, and a
        # partition's batches go to layers 0, 1, 2... in the order they were queued.
        layers: Dict[Tuple[int, int], List[List[Tuple[str, int, Any, Callable]]]] = {}
        depth: Dict[Tuple[str, int], int] = {}
        for topic, partition, data, acks, cb in queue:
            try:
                node = self.leader_of(topic, partition)
            except PylogError as exc:
                cb(exc, None)
                continue
            k = depth.get((topic, partition), 0)
            depth[(topic, partition)] = k + 1
            rows = layers.setdefault((node, acks), [])
            while len(rows) <= k:
                rows.append([])
            rows[k].append((topic, partition, data, cb))
        for (node, acks), rows in layers.items():
            for row in rows:
                self._send_produce(node, acks, row)

    def _send_produce(self, node: int, acks: int, row: List[Tuple[str, int, Any, Callable]]) -> None:
        by_topic: Dict[str, List[Dict[str, Any]]] = {}
        for topic, partition, data, _ in row:
            by_topic.setdefault(topic, []).append({"index": partition, "records": data})
        body = {"transactional_id": None, "acks": acks, "timeout": int(self.request_timeout_s * 1000),
                "topic_data": [{"name": t, "partition_data": ps} for t, ps in by_topic.items()]}
        items = [(t, p, cb) for t, p, _, cb in row]
        try:
            conn = self.connection(node, "data")
            pending = conn.send(ApiKey.PRODUCE, body, timeout_s=self.request_timeout_s,
                                expect_response=acks != 0, waiter=self._produce_event, what="Produce")
        except PylogError as exc:
            for _, _, cb in items:
                cb(exc, None)
            return
        if acks == 0:
            for _, _, cb in items:
                cb(None, ProduceResult(-1, -1, -1))
            return
        with self._lock:
            self._produce_in_flight.append(_ProduceInFlight(pending, node, items, acks))

    def _deliver_produce_answers(self) -> None:
        with self._lock:
            done = [r for r in self._produce_in_flight if r.pending.done()]
            if not done:
                return
            self._produce_in_flight = [r for r in self._produce_in_flight if r not in done]
            self._delivering += 1
        try:
            self._deliver(done)
        finally:
            with self._lock:
                self._delivering -= 1
            self._produce_event.set()  # another driver may wait for these callbacks

    def _deliver(self, done: List[_ProduceInFlight]) -> None:
        for r in done:
            try:
                resp = r.pending.response()
            except PylogError as exc:
                self._connection_trouble(r.node)
                for _, _, cb in r.items:
                    cb(exc, None)
                continue
            answers: Dict[Tuple[str, int], Any] = {}
            for t in resp.responses:
                for p in t.partition_responses:
                    code = int(p.error_code)
                    if code:
                        if code in _STALE_METADATA:
                            self.invalidate(t.name)
                        answers[(t.name, int(p.index))] = (_error(code, f"Produce to {t.name}-{p.index}",
                                                                  p.error_message), None)
                    else:
                        answers[(t.name, int(p.index))] = (None, ProduceResult(
                            int(p.base_offset), _ms(getattr(p, "log_append_time", None)),
                            int(getattr(p, "log_start_offset", -1))))
            for topic, partition, cb in r.items:
                error, result = answers.get((topic, partition), (
                    NetworkException(f"{r.pending.address} did not answer for {topic}-{partition}"), None))
                cb(error, result)

    # ================================================================ consuming
    def send_fetches(self, wanted: Mapping[Tuple[str, int], Tuple[int, int]], *, max_wait_ms: int,
                     min_bytes: int, max_bytes: int, isolation_level: int = 0,
                     waiter: Optional[threading.Event] = None
                     ) -> Tuple[List[FetchHandle], Dict[Tuple[str, int], PylogError]]:
        """One Fetch per leader for ``wanted`` ((topic, partition) -> (offset, partition
        max bytes)), sent now without waiting (``waiter`` is set when any answer
        comes).  Returns the handles and the partitions that could not be asked (no
        leader, broker unreachable: retriable errors)."""
        by_node: Dict[int, List[Tuple[str, int, int, int]]] = {}
        errors: Dict[Tuple[str, int], PylogError] = {}
        for (topic, partition), (offset, pmax) in wanted.items():
            try:
                node = self.leader_of(topic, partition)
            except PylogError as exc:
                errors[(topic, partition)] = exc
                continue
            by_node.setdefault(node, []).append((topic, partition, offset, pmax))
        handles = []
        for node, parts in by_node.items():
            try:
                handles.append(self._send_fetch(node, parts, max_wait_ms, min_bytes, max_bytes, isolation_level,
                                                waiter))
            except PylogError as exc:
                for t, p, _, _ in parts:
                    errors[(t, p)] = exc
        return handles, errors

    def _send_fetch(self, node: int, parts: List[Tuple[str, int, int, int]], max_wait_ms: int, min_bytes: int,
                    max_bytes: int, isolation_level: int, waiter: Optional[threading.Event] = None) -> FetchHandle:
        conn = self.connection(node, "data")
        version = conn.version_for(ApiKey.FETCH)
        names: Dict[uuid.UUID, str] = {}
        if version >= 13:  # topics by id: every topic needs one, else speak v12
            for t, _, _, _ in parts:
                tid = self.topic_id(t)
                if tid == _ZERO_UUID:
                    version = 12
                    break
                names[tid] = t
        topics: Dict[str, List[Dict[str, Any]]] = {}
        for t, p, off, pmax in parts:
            topics.setdefault(t, []).append({"partition": p, "current_leader_epoch": -1, "fetch_offset": off,
                                             "last_fetched_epoch": -1, "log_start_offset": -1,
                                             "partition_max_bytes": pmax})
        body = {"cluster_id": None, "replica_id": -1, "replica_state": {"replica_id": -1, "replica_epoch": -1},
                "max_wait": max_wait_ms, "min_bytes": min_bytes, "max_bytes": max_bytes,
                "isolation_level": isolation_level, "session_id": 0, "session_epoch": -1,
                "topics": [{"topic": t, "topic_id": self.topic_id(t), "partitions": ps} for t, ps in topics.items()],
                "forgotten_topics_data": [], "rack_id": ""}
        pending = conn.send(ApiKey.FETCH, body, version=version, waiter=waiter,
                            timeout_s=self.request_timeout_s + max_wait_ms / 1000.0, what="Fetch")
        return FetchHandle(self, node, pending, [(t, p, off) for t, p, off, _ in parts], names)

    def fetch(self, topic: str, partition: int, offset: int, *, max_bytes: int = 1 << 20,
              to_log_end: bool = False) -> FetchResult:
        """Batches of one partition from ``offset`` (no wait).  The batches are views of
        the answer; ``log_end_offset`` is the high watermark (all a consumer is told).
        OffsetOutOfRange, NotLeaderOrFollower, UnknownTopicOrPartition, NetworkException."""
        handles, errors = self.send_fetches({(topic, partition): (offset, max_bytes)}, max_wait_ms=0,
                                            min_bytes=1, max_bytes=max_bytes)
        if errors:
            raise errors[(topic, partition)]
        h = handles[0]
        h.pending.result()  # waits; raises nothing itself (result() turns errors into rows)
        got = h.result()[(topic, partition)]
        if got.error is not None:
            raise got.error
        batches = [RecordBatch(b) for b in whole_batches(got.records)]
        return FetchResult(batches, got.high_watermark, got.log_start_offset, got.high_watermark)

    def list_offsets(self, topic: str, partition: int, timestamp: int) -> Tuple[Optional[int], int]:
        """ListOffsets: -2 earliest, -1 latest (the high watermark), else the first
        offset with a timestamp >= ``timestamp``: (offset or None, its timestamp or -1).
        Retries leader changes within request_timeout_ms."""
        deadline = time.monotonic() + self.request_timeout_s
        while True:
            try:
                node = self.leader_of(topic, partition)
                resp = self.request(node, ApiKey.LIST_OFFSETS, {
                    "replica_id": -1, "isolation_level": 0, "timeout_ms": int(self.request_timeout_s * 1000),
                    "topics": [{"name": topic, "partitions": [
                        {"partition_index": partition, "current_leader_epoch": -1, "timestamp": timestamp,
                         "max_num_offsets": 1}]}]}, what="ListOffsets")
                p = resp.topics[0].partitions[0]
                code = int(p.error_code)
                if code:
                    if code in _STALE_METADATA:
                        self.invalidate(topic)
                    raise _error(code, f"ListOffsets of {topic}-{partition}")
                off = int(p.offset)
                return (None, -1) if off < 0 else (off, int(p.timestamp))
            except PylogError as exc:
                if not exc.retriable or time.monotonic() >= deadline:
                    raise
            time.sleep(self.retry_backoff_s)

    # ================================================================ groups
    @property
    def groups(self) -> Any:
        """The group coordinator calls (:class:`~pylog.client.network.groups.NetworkGroups`)."""
        with self._lock:
            if self._groups is None:
                from pylog.client.network.groups import NetworkGroups

                self._groups = NetworkGroups(self)
            return self._groups

    # ================================================================ closing
    def close(self) -> None:
        """Close every connection; requests still waiting fail with NetworkException."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            conns = list(self._conns.values())
            self._conns.clear()
        for c in conns:
            c.close()
        self._produce_event.set()

    def __enter__(self) -> "NetworkClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"NetworkClient({self._bootstrap_text()!r}, cluster_id={self._cluster_id!r})"

"""AdminClient: cluster and topic administration over Kafka's wire protocol.

``AdminClient("host:port[,host:port...]")`` bootstraps like Kafka's admin client: it
asks one of the bootstrap servers for Metadata, learns every broker's address and
the controller, and from then on talks to the brokers directly.  Written to Kafka's
protocol only (it works against ``pylog serve`` and against Kafka):

* cluster: :meth:`AdminClient.describe_cluster` (DescribeCluster, Metadata on a broker
  without it);
* topics: :meth:`~AdminClient.list_topics`, :meth:`~AdminClient.describe_topics`
  (Metadata: leader, replicas, ISR and offline replicas per partition; a partition
  answered LEADER_NOT_AVAILABLE, or led by a broker that is not alive, is *offline*;
  an ISR smaller than the replicas is *under-replicated*),
  :meth:`~AdminClient.create_topic`, :meth:`~AdminClient.create_partitions`,
  :meth:`~AdminClient.delete_topic`, :meth:`~AdminClient.wait_for_topic`;
* configs: :meth:`~AdminClient.describe_configs` and
  :meth:`~AdminClient.incremental_alter_configs` of topics and brokers;
* leaders and replicas: :meth:`~AdminClient.elect_leaders` (ElectLeaders),
  :meth:`~AdminClient.alter_partition_reassignments` and
  :meth:`~AdminClient.list_partition_reassignments` (KIP-455).

Routing, as Kafka's admin client does it: topic creation, deletion and partition
growth, elections and reassignments go to the controller (NOT_CONTROLLER: look the controller up again and retry
until the request's deadline); a broker's configs go to that broker; everything else
to any broker — one with an open connection first, then the others, then the
bootstrap servers.  A broker that cannot be reached is skipped for the next one.

Errors: a per-resource error code raises the pylog exception of that Kafka code
(:func:`pylog.errors.error_for_code`) with the broker's message; a code pylog has no
class for raises :class:`~pylog.errors.PylogError` carrying that code and Kafka's
name.  NetworkException (retriable) when no broker answers.  Thread-safe; one
connection per broker.
"""
from __future__ import annotations

import base64
import logging
import ssl
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from pylog.broker.interface import NodeInfo
from pylog.client.network.client import parse_bootstrap
from pylog.client.network.connection import BrokerConnection, SaslLogin
from pylog.errors import (InvalidArgument, LeaderNotAvailable, NetworkException, PylogError, RequestTimedOut,
                          UnknownTopicOrPartition, UnsupportedVersion, error_for_code)
from pylog.protocol import ApiKey

__all__ = ["AdminClient", "ClusterDescription", "TopicDescription", "TopicPartitionInfo", "ConfigEntry",
           "GroupListing", "GroupDescription", "GroupMember",
           "CreatedTopic", "PartitionReassignment", "kafka_error", "kafka_uuid", "CONFIG_SOURCES",
           "RESOURCE_TYPES", "ELECTION_TYPES"]

log = logging.getLogger("pylog.client.admin")

_ZERO_UUID = uuid.UUID(int=0)
_BOOTSTRAP = -1000  # bootstrap connections are keyed at and below this
_LEADER_NOT_AVAILABLE = 5
_NOT_CONTROLLER = 41

#: Kafka's ConfigResource types by name.
RESOURCE_TYPES: Dict[str, int] = {"topic": 2, "broker": 4, "broker_logger": 8}
#: Kafka's DescribeConfigs ConfigSource ids -> names (Kafka's ConfigEntry.ConfigSource).
CONFIG_SOURCES: Dict[int, str] = {0: "UNKNOWN", 1: "DYNAMIC_TOPIC_CONFIG", 2: "DYNAMIC_BROKER_CONFIG",
                                  3: "DYNAMIC_DEFAULT_BROKER_CONFIG", 4: "STATIC_BROKER_CONFIG",
                                  5: "DEFAULT_CONFIG", 6: "DYNAMIC_BROKER_LOGGER_CONFIG",
                                  7: "CLIENT_METRICS_CONFIG", 8: "GROUP_CONFIG"}
# IncrementalAlterConfigs operations
_SET, _DELETE, _APPEND, _SUBTRACT = 0, 1, 2, 3
#: ElectLeaders' election types by name.
ELECTION_TYPES: Dict[str, int] = {"preferred": 0, "unclean": 1}
TopicPartition = Tuple[str, int]


def kafka_uuid(u: Optional[uuid.UUID]) -> str:
    """A topic id as Kafka prints it (URL-safe base64 of the 16 bytes, no padding)."""
    if u is None:
        u = _ZERO_UUID
    return base64.urlsafe_b64encode(u.bytes).decode().rstrip("=")


def kafka_error(code: int, what: str, message: Optional[str] = None) -> PylogError:
    """The pylog exception for Kafka error ``code``, its message naming ``what``, Kafka's
    error name and the broker's ``message`` when it sent one.  A code pylog has no class for gives a
    PylogError whose ``code``/``kafka_name`` are that code's."""
    cls = error_for_code(code)
    name = cls.kafka_name
    if cls is PylogError:
        try:
            from kio.schema.errors import ErrorCode

            name = ErrorCode(code).name.upper()
        except ValueError:
            name = f"ERROR_{code}"
    exc = cls(f"{what}: {name}: {message}" if message else f"{what}: {name}")
    if cls is PylogError:
        exc.code = code
        exc.kafka_name = name
    return exc


# ====================================================================== results
@dataclass(frozen=True)
class ClusterDescription:
    """Kafka's DescribeClusterResult: the cluster id, the controller (-1 when none is
    known) and the live brokers."""

    cluster_id: Optional[str]
    controller_id: int
    brokers: List[NodeInfo]


@dataclass(frozen=True)
class TopicPartitionInfo:
    """One partition as Metadata tells it (Kafka's TopicPartitionInfo).

    ``leader`` is -1 when the partition has none.  ``offline``: it has no leader that is
    alive (LEADER_NOT_AVAILABLE, leader -1, or a leader that is not among the live
    brokers) — nobody can produce to or consume from it.  ``adding``/``removing``: the
    replicas a reassignment in progress adds and removes (filled only when asked)."""

    partition: int
    leader: int
    leader_epoch: int
    replicas: List[int]
    isr: List[int]
    offline_replicas: List[int] = field(default_factory=list)
    offline: bool = False
    error_code: int = 0
    adding: List[int] = field(default_factory=list)
    removing: List[int] = field(default_factory=list)

    @property
    def replication_factor(self) -> int:
        """Replicas not counting those a reassignment is adding (as Kafka's tools count)."""
        return len([r for r in self.replicas if r not in self.adding])

    @property
    def under_replicated(self) -> bool:
        """The ISR is smaller than the replication factor."""
        return len(self.isr) < self.replication_factor


@dataclass(frozen=True)
class TopicDescription:
    """A topic as Metadata tells it (Kafka's TopicDescription): ``topic_id`` is the UUID
    (:func:`kafka_uuid` prints it as Kafka does)."""

    name: str
    topic_id: uuid.UUID
    internal: bool
    partitions: List[TopicPartitionInfo]

    @property
    def replication_factor(self) -> int:
        return self.partitions[0].replication_factor if self.partitions else 0


@dataclass(frozen=True)
class ConfigEntry:
    """One setting of DescribeConfigs (Kafka's ConfigEntry); ``source`` is Kafka's
    ConfigSource name (DYNAMIC_TOPIC_CONFIG, STATIC_BROKER_CONFIG, DEFAULT_CONFIG, ...)."""

    name: str
    value: Optional[str]
    source: str
    read_only: bool = False
    is_sensitive: bool = False

    @property
    def is_default(self) -> bool:
        return self.source == "DEFAULT_CONFIG"


@dataclass(frozen=True)
class PartitionReassignment:
    """A reassignment in progress (Kafka's PartitionReassignment): every replica the
    partition has now, and those being added and removed."""

    replicas: List[int]
    adding: List[int]
    removing: List[int]


@dataclass(frozen=True)
class CreatedTopic:
    """What CreateTopics answered for a topic (partitions and replication factor -1
    when the broker does not say, before v5)."""

    name: str
    topic_id: uuid.UUID
    partitions: int
    replication_factor: int
    configs: Dict[str, Optional[str]]


@dataclass(frozen=True)
class GroupListing:
    """A group as ListGroups tells it, with the broker that listed it (its coordinator)."""

    group_id: str
    protocol_type: str
    state: str
    coordinator: int


@dataclass(frozen=True)
class GroupMember:
    """A member of a group (DescribeGroups); ``assignment`` decoded for consumer groups."""

    member_id: str
    group_instance_id: Optional[str]
    client_id: str
    client_host: str
    assignment: List[TopicPartition]


@dataclass(frozen=True)
class GroupDescription:
    """A group as DescribeGroups tells it (Kafka's ConsumerGroupDescription)."""

    group_id: str
    state: str
    protocol_type: str
    protocol: str
    coordinator: int
    members: List[GroupMember]


# ====================================================================== the client
class AdminClient:
    """An admin client of the brokers at ``bootstrap`` (see the module docstring).

    Asks Metadata at once: NetworkException naming every address tried when no bootstrap
    server answers (each within ``connect_timeout_ms``)."""

    def __init__(self, bootstrap: str, *, client_id: str = "pylog-admin", request_timeout_ms: int = 30_000,
                 connect_timeout_ms: int = 10_000, retry_backoff_ms: int = 100,
                 ssl_context: Optional[ssl.SSLContext] = None, sasl: Optional[SaslLogin] = None) -> None:
        self.bootstrap_servers = parse_bootstrap(bootstrap)
        #: TLS (an SSL or SASL_SSL listener) and the SASL login (a SASL listener) of
        #: every connection; see pylog.cli.clientconfig for Kafka's client properties.
        self.ssl_context = ssl_context
        self.sasl = sasl
        self.client_id = client_id or "pylog-admin"
        self.request_timeout_s = request_timeout_ms / 1000.0
        self.connect_timeout_s = connect_timeout_ms / 1000.0
        self.retry_backoff_s = retry_backoff_ms / 1000.0
        self._lock = threading.RLock()
        self._conns: Dict[int, BrokerConnection] = {}
        self._brokers: Dict[int, Tuple[str, int, Optional[str]]] = {
            _BOOTSTRAP - i: (h, p, None) for i, (h, p) in enumerate(self.bootstrap_servers)}
        self._cluster_id: Optional[str] = None
        self._controller_id = -1
        self._closed = False
        self.metadata([])  # reach the cluster now: fail fast when nothing answers

    # ================================================================ lifecycle
    def close(self) -> None:
        """Close every connection.  Idempotent."""
        with self._lock:
            self._closed = True
            conns, self._conns = list(self._conns.values()), {}
        for c in conns:
            c.close()

    def __enter__(self) -> "AdminClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ================================================================ connections
    def _connection(self, node: int) -> BrokerConnection:
        with self._lock:
            if self._closed:
                raise NetworkException("the admin client is closed")
            conn = self._conns.get(node)
            if conn is not None and not conn.closed:
                return conn
            b = self._brokers.get(node)
            if b is None:
                raise LeaderNotAvailable(f"broker {node} is not in the cluster's metadata")
            host, port = b[0], b[1]
            name = f"bootstrap {host}:{port}" if node <= _BOOTSTRAP else f"broker {node} admin"
            conn = BrokerConnection.open(host, port, client_id=self.client_id, name=name,
                                         connect_timeout_s=self.connect_timeout_s,
                                         request_timeout_s=self.request_timeout_s,
                                         ssl_context=self.ssl_context, sasl=self.sasl)
            self._conns[node] = conn
            return conn

    def request(self, node: int, api_key: int, data: Mapping[str, Any], *, what: str = "",
                timeout_s: Optional[float] = None) -> Any:
        """Send one request to broker ``node`` and return its decoded answer (a kio
        object), at the highest version both sides speak.  NetworkException or
        RequestTimedOut when it fails on the way; UnsupportedVersion when the broker does
        not offer the API."""
        conn = self._connection(node)
        pending = conn.send(api_key, data, timeout_s=self.request_timeout_s if timeout_s is None else timeout_s,
                            what=what)
        return pending.result()

    def version_for(self, node: int, api_key: int) -> int:
        """The version of ``api_key`` this client would use with broker ``node``."""
        return self._connection(node).version_for(api_key)

    def _candidates(self) -> List[int]:
        """Brokers to ask cluster-wide questions, best first: those with an open
        connection, the other known brokers, then the bootstrap servers."""
        with self._lock:
            brokers = [n for n in self._brokers if n > _BOOTSTRAP]
            boot = sorted((n for n in self._brokers if n <= _BOOTSTRAP), reverse=True)
            open_ = [n for n in brokers if n in self._conns and not self._conns[n].closed]
        return open_ + [n for n in brokers if n not in open_] + boot

    def request_any(self, api_key: int, data: Mapping[str, Any], *, what: str = "") -> Tuple[int, Any]:
        """Send to any broker (see the module docstring for the order), the next one when
        a broker cannot be reached; ``(node, answer)``.  NetworkException naming every
        broker tried when none answers."""
        tried: List[str] = []
        last: Optional[PylogError] = None
        for node in self._candidates():
            try:
                return node, self.request(node, api_key, data, what=what)
            except (NetworkException, RequestTimedOut, LeaderNotAvailable) as exc:
                last = exc
                tried.append(str(exc))
        if len(tried) == 1 and last is not None:
            raise last
        raise NetworkException(f"{what or 'request'}: no broker answered; " + "; ".join(tried or ["none known"]))

    def request_controller(self, api_key: int, data: Mapping[str, Any], *, what: str = "",
                           check: Optional[Any] = None) -> Any:
        """Send to the controller (any broker while none is known).  ``check(answer)``
        returning True means the broker answered NOT_CONTROLLER: the controller is looked
        up again and the request sent again, until ``request_timeout_ms`` has passed."""
        deadline = time.monotonic() + self.request_timeout_s
        while True:
            node = self._controller_id
            if node < 0 or node not in self._brokers:
                _node, resp = self.request_any(api_key, data, what=what)
            else:
                try:
                    resp = self.request(node, api_key, data, what=what)
                except (NetworkException, RequestTimedOut, LeaderNotAvailable):
                    # the controller is gone: find the new one
                    self.metadata([])
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(self.retry_backoff_s)
                    continue
            if check is None or not check(resp) or time.monotonic() > deadline:
                return resp
            self.metadata([])
            time.sleep(self.retry_backoff_s)

    # ================================================================ metadata
    def metadata(self, topics: Optional[Sequence[str]]) -> Any:
        """A Metadata answer (kio object) for ``topics`` (None: every topic; []: none,
        brokers only), without auto-creation; remembers the brokers and the controller."""
        data = {"topics": None if topics is None else [{"name": t, "topic_id": _ZERO_UUID} for t in topics],
                "allow_auto_topic_creation": False, "include_cluster_authorized_operations": False,
                "include_topic_authorized_operations": False}
        _node, resp = self.request_any(ApiKey.METADATA, data, what="Metadata")
        stale: List[BrokerConnection] = []
        with self._lock:
            brokers = {int(b.node_id): (b.host, int(b.port), b.rack) for b in resp.brokers}
            if brokers:
                for n in list(self._conns):
                    # a broker that left, or moved to another address: drop its connection
                    if n > _BOOTSTRAP and self._brokers.get(n, (None, None))[:2] != brokers.get(n, (None, None))[:2]:
                        stale.append(self._conns.pop(n))
                boot = {n: v for n, v in self._brokers.items() if n <= _BOOTSTRAP}
                self._brokers = {**boot, **brokers}
                # bootstrap connections are for the first look only (as Kafka's clients do)
                stale += [self._conns.pop(n) for n in list(self._conns) if n <= _BOOTSTRAP]
            self._cluster_id = getattr(resp, "cluster_id", None)
            self._controller_id = int(getattr(resp, "controller_id", -1))
        for c in stale:
            c.close()
        return resp

    @property
    def controller_id(self) -> int:
        """The controller's id in the last Metadata answer (-1: none known)."""
        return self._controller_id

    def describe_cluster(self) -> ClusterDescription:
        """The cluster id, the controller and the live brokers (DescribeCluster; Metadata
        when the broker does not offer it)."""
        node = self._candidates()[0]
        try:
            self.version_for(node, ApiKey.DESCRIBE_CLUSTER)
            resp = self.request(node, ApiKey.DESCRIBE_CLUSTER,
                                {"include_cluster_authorized_operations": False, "endpoint_type": 1},
                                what="DescribeCluster")
        except (UnsupportedVersion, NetworkException, RequestTimedOut, LeaderNotAvailable):
            resp = None
        if resp is not None:
            if int(resp.error_code):
                raise kafka_error(int(resp.error_code), "DescribeCluster", resp.error_message)
            brokers = [NodeInfo(int(b.broker_id), b.rack, b.host, int(b.port)) for b in resp.brokers]
            return ClusterDescription(resp.cluster_id, int(resp.controller_id),
                                      sorted(brokers, key=lambda b: b.node_id))
        md = self.metadata([])
        brokers = [NodeInfo(int(b.node_id), b.rack, b.host, int(b.port)) for b in md.brokers]
        return ClusterDescription(getattr(md, "cluster_id", None), int(getattr(md, "controller_id", -1)),
                                  sorted(brokers, key=lambda b: b.node_id))

    # ================================================================ topics
    def list_topics(self, include_internal: bool = False) -> List[str]:
        """The topic names, sorted (internal ones such as __consumer_offsets only with
        ``include_internal``)."""
        md = self.metadata(None)
        return sorted(t.name for t in md.topics
                      if t.name is not None and int(t.error_code) == 0 and (include_internal or not t.is_internal))

    def describe_topics(self, names: Optional[Iterable[str]] = None, *, include_internal: bool = False,
                        include_reassignments: bool = False) -> Dict[str, TopicDescription]:
        """Each topic's partitions (leader, replicas, ISR, offline replicas, offline and
        under-replicated marks) by name, sorted; every topic when ``names`` is None
        (internal ones only with ``include_internal``).  A named topic that does not
        exist raises UnknownTopicOrPartition (another topic error its exception).
        ``include_reassignments`` also asks ListPartitionReassignments and fills each
        partition's ``adding``/``removing`` (skipped where the cluster does not offer it)."""
        wanted = None if names is None else list(dict.fromkeys(names))
        md = self.metadata(wanted)
        live = {int(b.node_id) for b in md.brokers}
        out: Dict[str, TopicDescription] = {}
        for t in md.topics:
            code = int(t.error_code)
            if code:
                if wanted is not None:
                    raise kafka_error(code, f"topic {t.name!r}",
                                      f"topic {t.name!r} does not exist" if code == 3 else None)
                continue
            if wanted is None and t.is_internal and not include_internal:
                continue
            parts = []
            for p in sorted(t.partitions, key=lambda p: p.partition_index):
                leader = int(p.leader_id)
                pcode = int(p.error_code)
                offline = pcode == _LEADER_NOT_AVAILABLE or leader < 0 or leader not in live
                parts.append(TopicPartitionInfo(
                    int(p.partition_index), leader, int(getattr(p, "leader_epoch", -1)),
                    [int(r) for r in p.replica_nodes], [int(r) for r in p.isr_nodes],
                    [int(r) for r in getattr(p, "offline_replicas", ())], offline, pcode))
            out[t.name] = TopicDescription(t.name, getattr(t, "topic_id", None) or _ZERO_UUID,
                                           bool(t.is_internal), parts)
        if wanted is not None:
            for n in wanted:
                if n not in out:
                    raise UnknownTopicOrPartition(f"topic {n!r} does not exist")
        if include_reassignments and out:
            try:
                moving = self.list_partition_reassignments()
            except UnsupportedVersion:
                moving = {}
            for name, d in out.items():
                if any((name, p.partition) in moving for p in d.partitions):
                    parts = [p if (name, p.partition) not in moving else
                             replace(p, adding=list(moving[(name, p.partition)].adding),
                                     removing=list(moving[(name, p.partition)].removing))
                             for p in d.partitions]
                    out[name] = replace(d, partitions=parts)
        return dict(sorted(out.items()))

    def describe_topic(self, name: str) -> TopicDescription:
        """One topic (see :meth:`describe_topics`)."""
        return self.describe_topics([name])[name]

    def wait_for_topic(self, name: str, timeout_s: float = 30.0) -> TopicDescription:
        """Poll Metadata until ``name`` exists and every partition has a leader (a new
        topic's leaders are elected by the controller after CreateTopics answered);
        RequestTimedOut after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                d = self.describe_topic(name)
                if d.partitions and not any(p.offline for p in d.partitions):
                    return d
            except (UnknownTopicOrPartition, LeaderNotAvailable):
                pass
            if time.monotonic() > deadline:
                raise RequestTimedOut(f"topic {name!r} has no leader for every partition after {timeout_s:g} s")
            time.sleep(max(self.retry_backoff_s, 0.05))

    def create_topic(self, name: str, partitions: Optional[int] = None, replication_factor: Optional[int] = None,
                     config: Optional[Mapping[str, Any]] = None, *,
                     replica_assignment: Optional[Sequence[Sequence[int]]] = None,
                     validate_only: bool = False) -> CreatedTopic:
        """CreateTopics for one topic, through the controller.  ``partitions`` and
        ``replication_factor`` None take the brokers' num.partitions and
        default.replication.factor; ``replica_assignment`` (replica ids per partition,
        partition 0 first) replaces both.  Config values are sent as text.  Raises the
        broker's error: TopicAlreadyExists, InvalidReplicationFactor, InvalidPartitions,
        InvalidConfig, InvalidReplicaAssignment, ..."""
        if replica_assignment is not None and (partitions is not None or replication_factor is not None):
            raise InvalidArgument("give either partitions/replication_factor or replica_assignment, not both")
        assignments = [{"partition_index": i, "broker_ids": [int(b) for b in r]}
                       for i, r in enumerate(replica_assignment or [])]
        topic = {"name": name, "num_partitions": -1 if partitions is None else int(partitions),
                 "replication_factor": -1 if replication_factor is None else int(replication_factor),
                 "assignments": assignments,
                 "configs": [{"name": k, "value": _text(v)} for k, v in (config or {}).items()]}
        data = {"topics": [topic], "timeout": int(self.request_timeout_s * 1000), "validate_only": validate_only}
        resp = self.request_controller(ApiKey.CREATE_TOPICS, data, what=f"CreateTopics {name}",
                                       check=lambda r: any(int(t.error_code) == _NOT_CONTROLLER for t in r.topics))
        row = _one(resp.topics, lambda t: t.name == name, f"CreateTopics {name}")
        if int(row.error_code):
            raise kafka_error(int(row.error_code), f"creating topic {name!r}", row.error_message)
        configs = {c.name: c.value for c in (getattr(row, "configs", None) or ())}
        return CreatedTopic(name, getattr(row, "topic_id", None) or _ZERO_UUID,
                            int(getattr(row, "num_partitions", -1)), int(getattr(row, "replication_factor", -1)),
                            configs)

    def create_partitions(self, name: str, total: int, *,
                          assignment: Optional[Sequence[Sequence[int]]] = None, validate_only: bool = False) -> None:
        """CreatePartitions: grow ``name`` to ``total`` partitions (``assignment``: the new
        partitions' replicas), through the controller.  InvalidPartitions when ``total``
        is not more than the topic has."""
        data = {"topics": [{"name": name, "count": int(total),
                            "assignments": None if assignment is None else
                            [{"broker_ids": [int(b) for b in r]} for r in assignment]}],
                "timeout": int(self.request_timeout_s * 1000), "validate_only": validate_only}
        resp = self.request_controller(ApiKey.CREATE_PARTITIONS, data, what=f"CreatePartitions {name}",
                                       check=lambda r: any(int(t.error_code) == _NOT_CONTROLLER for t in r.results))
        row = _one(resp.results, lambda t: t.name == name, f"CreatePartitions {name}")
        if int(row.error_code):
            raise kafka_error(int(row.error_code), f"adding partitions to topic {name!r}", row.error_message)

    def delete_topic(self, name: str) -> None:
        """DeleteTopics for one topic, through the controller (UnknownTopicOrPartition
        when it does not exist)."""
        # one mapping serves every version (build() keeps the fields a version has):
        # topic_names before v6, topics from v6
        data = {"topic_names": [name], "topics": [{"name": name, "topic_id": _ZERO_UUID}],
                "timeout": int(self.request_timeout_s * 1000)}
        resp = self.request_controller(ApiKey.DELETE_TOPICS, data, what=f"DeleteTopics {name}",
                                       check=lambda r: any(int(t.error_code) == _NOT_CONTROLLER
                                                           for t in r.responses))
        row = _one(resp.responses, lambda t: t.name == name, f"DeleteTopics {name}")
        if int(row.error_code):
            raise kafka_error(int(row.error_code), f"deleting topic {name!r}", row.error_message)

    # ================================================================ configs
    def describe_configs(self, names: Union[str, Iterable[str]], *, resource_type: str = "topic",
                         keys: Optional[Iterable[str]] = None) -> Dict[str, Dict[str, ConfigEntry]]:
        """DescribeConfigs of ``names`` (one name or several) of ``resource_type``
        ("topic" or "broker", whose names are broker ids): ``{name: {setting:
        ConfigEntry}}``; only ``keys`` when given.  A broker's configs are asked of that
        broker, a topic's of any.  Raises the first resource's error
        (UnknownTopicOrPartition, ...)."""
        rtype = _resource_type(resource_type)
        wanted = [names] if isinstance(names, str) else list(dict.fromkeys(names))
        key_list = None if keys is None else list(keys)
        out: Dict[str, Dict[str, ConfigEntry]] = {}
        for node, group in self._route(rtype, wanted):
            data = {"resources": [{"resource_type": rtype, "resource_name": n, "configuration_keys": key_list}
                                  for n in group],
                    "include_synonyms": False, "include_documentation": False}
            what = f"DescribeConfigs {resource_type} {','.join(group)}"
            resp = self.request_any(ApiKey.DESCRIBE_CONFIGS, data, what=what)[1] if node is None else \
                self.request(node, ApiKey.DESCRIBE_CONFIGS, data, what=what)
            for r in resp.results:
                if int(r.error_code):
                    raise kafka_error(int(r.error_code), f"configs of {resource_type} {r.resource_name!r}",
                                      r.error_message)
                out[r.resource_name] = {
                    c.name: ConfigEntry(c.name, c.value, _source(c), bool(c.read_only), bool(c.is_sensitive))
                    for c in r.configs}
        return out

    def incremental_alter_configs(self, name: str, changes: Optional[Mapping[str, Optional[Any]]] = None, *,
                                  resource_type: str = "topic", append: Optional[Mapping[str, str]] = None,
                                  subtract: Optional[Mapping[str, str]] = None, validate_only: bool = False) -> None:
        """IncrementalAlterConfigs of one resource: ``changes`` sets each name to its
        value (None: DELETE, back to the default), ``append``/``subtract`` change list
        settings.  A broker's configs go to that broker ("" means the cluster-wide
        default, to any broker).  Raises the broker's error (InvalidConfig,
        UnknownTopicOrPartition, InvalidRequest, ...)."""
        rtype = _resource_type(resource_type)
        ops = [{"name": k, "config_operation": _DELETE if v is None else _SET, "value": _text(v)}
               for k, v in (changes or {}).items()]
        ops += [{"name": k, "config_operation": _APPEND, "value": v} for k, v in (append or {}).items()]
        ops += [{"name": k, "config_operation": _SUBTRACT, "value": v} for k, v in (subtract or {}).items()]
        if not ops:
            raise InvalidArgument("no config changes given")
        data = {"resources": [{"resource_type": rtype, "resource_name": name, "configs": ops}],
                "validate_only": validate_only}
        what = f"IncrementalAlterConfigs {resource_type} {name}"
        [(node, _group)] = self._route(rtype, [name])
        resp = None
        if node is not None:
            try:
                resp = self.request(node, ApiKey.INCREMENTAL_ALTER_CONFIGS, data, what=what)
            except (NetworkException, RequestTimedOut) as exc:
                # the broker is down or hung; a pylog cluster keeps dynamic broker configs
                # in its metadata store, so any broker can write them (Kafka's would refuse)
                log.warning("%s: broker %s did not answer (%s); asking another broker", what, node, exc)
        if resp is None:
            resp = self.request_any(ApiKey.INCREMENTAL_ALTER_CONFIGS, data, what=what)[1]
        row = _one(resp.responses, lambda r: r.resource_name == name, what)
        if int(row.error_code):
            raise kafka_error(int(row.error_code), f"altering configs of {resource_type} {name!r}",
                              row.error_message)

    # ================================================================ leaders and replicas
    def elect_leaders(self, partitions: Optional[Iterable[TopicPartition]] = None, *,
                      election_type: str = "preferred") -> Dict[TopicPartition, Optional[PylogError]]:
        """ElectLeaders through the controller: move each partition's leadership to its
        preferred (first) replica ("preferred"), or elect a leader for partitions that
        have none from replicas out of the ISR ("unclean").  ``partitions`` None: every
        partition.  Returns each partition's outcome: None (elected), or its error —
        ElectionNotNeeded (already led by the preferred replica / has a leader),
        PreferredLeaderNotAvailable, EligibleLeadersNotAvailable,
        UnknownTopicOrPartition.  A request-level error raises."""
        try:
            etype = ELECTION_TYPES[election_type.lower()]
        except (KeyError, AttributeError):
            raise InvalidArgument(f"election type must be one of {sorted(ELECTION_TYPES)}, got "
                                  f"{election_type!r}") from None
        wanted = None if partitions is None else _group(partitions)
        data = {"election_type": etype, "timeout": int(self.request_timeout_s * 1000),
                "topic_partitions": None if wanted is None else
                [{"topic": t, "partitions": ps} for t, ps in wanted.items()]}
        if etype != 0:
            node = self._controller_id if self._controller_id in self._brokers else self._candidates()[0]
            if self.version_for(node, ApiKey.ELECT_LEADERS) < 1:
                raise UnsupportedVersion("ElectLeaders v0 only elects preferred leaders; the broker offers no "
                                         "unclean election")
        resp = self.request_controller(ApiKey.ELECT_LEADERS, data, what="ElectLeaders",
                                       check=lambda r: int(getattr(r, "error_code", 0)) == _NOT_CONTROLLER)
        top = int(getattr(resp, "error_code", 0))
        if top:
            raise kafka_error(top, "ElectLeaders")
        out: Dict[TopicPartition, Optional[PylogError]] = {}
        for t in resp.replica_election_results:
            for p in t.partition_result:
                code = int(p.error_code)
                out[(t.topic, int(p.partition_id))] = None if code == 0 else \
                    kafka_error(code, f"electing a leader of {t.topic}-{int(p.partition_id)}", p.error_message)
        return dict(sorted(out.items()))

    def alter_partition_reassignments(self, reassignments: Mapping[TopicPartition, Optional[Sequence[int]]]
                                      ) -> Dict[TopicPartition, Optional[PylogError]]:
        """AlterPartitionReassignments through the controller: move each partition to
        the target replicas (the first one the preferred leader), or cancel its
        reassignment in progress with None.  Returns each partition's outcome: None
        (started, or cancelled), or its error — InvalidReplicaAssignment,
        UnknownTopicOrPartition, NoReassignmentInProgress, ...  A request-level error
        raises.  The move itself goes on after the answer: see
        :meth:`list_partition_reassignments`."""
        if not reassignments:
            raise InvalidArgument("no partitions to reassign")
        topics: Dict[str, List[Dict[str, Any]]] = {}
        for (t, p), replicas in reassignments.items():
            topics.setdefault(t, []).append({"partition_index": int(p), "replicas":
                                             None if replicas is None else [int(b) for b in replicas]})
        data = {"timeout": int(self.request_timeout_s * 1000),
                "topics": [{"name": t, "partitions": ps} for t, ps in topics.items()]}
        resp = self.request_controller(ApiKey.ALTER_PARTITION_REASSIGNMENTS, data,
                                       what="AlterPartitionReassignments",
                                       check=lambda r: int(r.error_code) == _NOT_CONTROLLER)
        if int(resp.error_code):
            raise kafka_error(int(resp.error_code), "AlterPartitionReassignments", resp.error_message)
        out: Dict[TopicPartition, Optional[PylogError]] = {}
        for t in resp.responses:
            for p in t.partitions:
                code = int(p.error_code)
                out[(t.name, int(p.partition_index))] = None if code == 0 else \
                    kafka_error(code, f"reassigning {t.name}-{int(p.partition_index)}", p.error_message)
        return dict(sorted(out.items()))

    def list_partition_reassignments(self, partitions: Optional[Iterable[TopicPartition]] = None
                                     ) -> Dict[TopicPartition, PartitionReassignment]:
        """ListPartitionReassignments through the controller: the reassignments in
        progress (of ``partitions`` only, when given), sorted."""
        wanted = None if partitions is None else _group(partitions)
        data = {"timeout": int(self.request_timeout_s * 1000),
                "topics": None if wanted is None else
                [{"name": t, "partition_indexes": ps} for t, ps in wanted.items()]}
        resp = self.request_controller(ApiKey.LIST_PARTITION_REASSIGNMENTS, data,
                                       what="ListPartitionReassignments",
                                       check=lambda r: int(r.error_code) == _NOT_CONTROLLER)
        if int(resp.error_code):
            raise kafka_error(int(resp.error_code), "ListPartitionReassignments", resp.error_message)
        out: Dict[TopicPartition, PartitionReassignment] = {}
        for t in resp.topics:
            for p in t.partitions:
                out[(t.name, int(p.partition_index))] = PartitionReassignment(
                    [int(b) for b in p.replicas], [int(b) for b in p.adding_replicas],
                    [int(b) for b in p.removing_replicas])
        return dict(sorted(out.items()))

    # ================================================================ groups and offsets
    def list_groups(self) -> List[GroupListing]:
        """ListGroups on every live broker (each lists the groups it coordinates), as
        Kafka's listConsumerGroups does; a broker that cannot be reached is skipped.
        Sorted by group id."""
        self.metadata([])
        with self._lock:
            nodes = sorted(n for n in self._brokers if n > _BOOTSTRAP)
        out: Dict[str, GroupListing] = {}
        for node in nodes:
            try:
                resp = self.request(node, ApiKey.LIST_GROUPS, {"states_filter": [], "types_filter": []},
                                    what="ListGroups")
            except (NetworkException, RequestTimedOut, LeaderNotAvailable):
                continue
            code = int(resp.error_code)
            if code:
                raise kafka_error(code, f"ListGroups on broker {node}")
            for g in resp.groups:
                out[g.group_id] = GroupListing(g.group_id, g.protocol_type or "",
                                               getattr(g, "group_state", "") or "", node)
        return [out[k] for k in sorted(out)]

    def find_coordinator(self, group_id: str) -> int:
        """The broker id that coordinates ``group_id`` (FindCoordinator)."""
        _node, resp = self.request_any(ApiKey.FIND_COORDINATOR, {
            "key": group_id, "key_type": 0, "coordinator_keys": [group_id]}, what="FindCoordinator")
        row = resp.coordinators[0] if getattr(resp, "coordinators", None) else resp
        code = int(row.error_code)
        if code:
            raise kafka_error(code, f"FindCoordinator of group {group_id!r}", row.error_message)
        node = int(row.node_id)
        with self._lock:
            if node not in self._brokers:
                self._brokers[node] = (row.host, int(row.port), None)
        return node

    def describe_group(self, group_id: str) -> GroupDescription:
        """DescribeGroups at the group's coordinator: state, protocol and members with
        their client id, host and assignment (decoded when the group is a consumer
        group).  GroupIdNotFound (Kafka's error) for a group the coordinator does not
        know, when the broker says so; a dead group is answered with state Dead."""
        from pylog.client.assignors import decode_assignment

        node = self.find_coordinator(group_id)
        resp = self.request(node, ApiKey.DESCRIBE_GROUPS, {"groups": [group_id],
                                                           "include_authorized_operations": False},
                            what="DescribeGroups")
        g = resp.groups[0]
        code = int(g.error_code)
        if code:
            raise kafka_error(code, f"DescribeGroups of group {group_id!r}", getattr(g, "error_message", None))
        members = []
        for m in g.members:
            assigned: List[TopicPartition] = []
            raw = bytes(m.member_assignment or b"")
            if g.protocol_type == "consumer" and raw:
                try:
                    assigned = sorted(decode_assignment(raw).partitions)
                except PylogError:
                    assigned = []
            members.append(GroupMember(m.member_id, getattr(m, "group_instance_id", None), m.client_id,
                                       m.client_host, assigned))
        return GroupDescription(g.group_id, g.group_state, g.protocol_type or "", g.protocol_data or "",
                                node, members)

    def list_group_offsets(self, group_id: str) -> Dict[TopicPartition, int]:
        """OffsetFetch at the coordinator: every committed offset of ``group_id``."""
        node = self.find_coordinator(group_id)
        data = {"group_id": group_id, "topics": None, "require_stable": False,
                "groups": [{"group_id": group_id, "topics": None}]}
        resp = self.request(node, ApiKey.OFFSET_FETCH, data, what="OffsetFetch")
        if getattr(resp, "groups", None):
            g = resp.groups[0]
            code, rows = int(g.error_code), g.topics
        else:
            code, rows = int(getattr(resp, "error_code", 0)), resp.topics
        if code:
            raise kafka_error(code, f"OffsetFetch of group {group_id!r}")
        out: Dict[TopicPartition, int] = {}
        for t in rows:
            for p in t.partitions:
                if int(p.error_code) == 0 and int(p.committed_offset) >= 0:
                    out[(t.name, int(p.partition_index))] = int(p.committed_offset)
        return dict(sorted(out.items()))

    def list_offsets(self, partitions: Mapping[TopicPartition, int], *,
                     leaders: Optional[Mapping[TopicPartition, int]] = None) -> Dict[TopicPartition, Tuple[int, int]]:
        """ListOffsets at each partition's leader: ``partitions`` maps (topic, partition)
        to a timestamp (-2 earliest, -1 latest, else the first offset at or after that
        time, ms); the answer maps them to (offset, timestamp), offset -1 when there is
        none.  ``leaders`` (the caller's knowledge) saves the Metadata request that
        finds them.  A partition without a leader raises LeaderNotAvailable; a
        per-partition error raises that error (NOT_LEADER_OR_FOLLOWER when ``leaders``
        was stale)."""
        wanted = list(partitions)
        if leaders is None or any(tp not in leaders for tp in wanted):
            topics = sorted({t for t, _ in wanted})
            found: Dict[TopicPartition, int] = dict(leaders or {})
            for d in self.describe_topics(topics, include_internal=True).values():
                for p in d.partitions:
                    found[(d.name, p.partition)] = p.leader
            leaders = found
        by_node: Dict[int, Dict[str, List[Dict[str, Any]]]] = {}
        for tp in wanted:
            node = leaders.get(tp, -1)
            if node < 0:
                raise LeaderNotAvailable(f"ListOffsets: {tp[0]}-{tp[1]} has no leader")
            by_node.setdefault(node, {}).setdefault(tp[0], []).append(
                {"partition_index": tp[1], "current_leader_epoch": -1, "timestamp": int(partitions[tp]),
                 "max_num_offsets": 1})
        out: Dict[TopicPartition, Tuple[int, int]] = {}
        for node, ts in by_node.items():
            resp = self.request(node, ApiKey.LIST_OFFSETS, {
                "replica_id": -1, "isolation_level": 0, "timeout_ms": int(self.request_timeout_s * 1000),
                "topics": [{"name": t, "partitions": ps} for t, ps in ts.items()]}, what="ListOffsets")
            for t in resp.topics:
                for p in t.partitions:
                    code = int(p.error_code)
                    if code:
                        raise kafka_error(code, f"ListOffsets of {t.name}-{int(p.partition_index)}")
                    out[(t.name, int(p.partition_index))] = (int(p.offset), int(p.timestamp))
        return out

    def _route(self, rtype: int, names: List[str]) -> List[Tuple[Optional[int], List[str]]]:
        """Which broker each resource's config request goes to: a broker's to itself,
        everything else to any (None)."""
        if rtype not in (RESOURCE_TYPES["broker"], RESOURCE_TYPES["broker_logger"]):
            return [(None, names)]
        groups: Dict[Optional[int], List[str]] = {}
        for n in names:
            if n == "":
                groups.setdefault(None, []).append(n)
                continue
            if not n.isdigit():
                raise InvalidArgument(f"a broker resource is named by its broker id, got {n!r}")
            if int(n) not in self._brokers:
                self.metadata([])
                if int(n) not in self._brokers:
                    raise kafka_error(8, f"broker {n}", f"broker {n} is not a live broker of the cluster")
            groups.setdefault(int(n), []).append(n)
        return list(groups.items())


# ====================================================================== helpers
def _text(value: Any) -> Optional[str]:
    """A config value as the protocol carries it (text; booleans as Kafka writes them)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _resource_type(name: str) -> int:
    try:
        return RESOURCE_TYPES[name]
    except KeyError:
        raise InvalidArgument(f"resource type must be one of {sorted(RESOURCE_TYPES)}, got {name!r}") from None


def _source(c: Any) -> str:
    src = int(getattr(c, "config_source", -1))
    if src < 0:  # DescribeConfigs v0 has is_default only
        return "DEFAULT_CONFIG" if getattr(c, "is_default", False) else "UNKNOWN"
    return CONFIG_SOURCES.get(src, "UNKNOWN")


def _group(partitions: Iterable[TopicPartition]) -> Dict[str, List[int]]:
    """``(topic, partition)`` pairs grouped by topic (in order, duplicates dropped);
    InvalidArgument for something else or an empty list."""
    out: Dict[str, List[int]] = {}
    for tp in partitions:
        if not (isinstance(tp, tuple) and len(tp) == 2 and isinstance(tp[0], str) and isinstance(tp[1], int)):
            raise InvalidArgument(f"a partition is a (topic, partition) pair, got {tp!r}")
        ps = out.setdefault(tp[0], [])
        if tp[1] not in ps:
            ps.append(tp[1])
    if not out:
        raise InvalidArgument("no partitions given (None means every partition)")
    return out


def _one(rows: Iterable[Any], pred: Any, what: str) -> Any:
    for r in rows:
        if pred(r):
            return r
    raise NetworkException(f"{what}: the broker's answer does not name the resource asked about")

"""The broker interface: the one contract every way of reaching a broker implements.

The embedded :class:`~pylog.broker.Broker` (one node), :class:`~pylog.cluster.LocalCluster`
(replicated brokers in one process) and, over the network, the server's view of a
cluster node all offer these methods; the in-process Producer, Consumer and Admin
calls and the Kafka-protocol server (:mod:`pylog.server`) use nothing else.  The
methods mirror Kafka's requests: a network server maps each API onto one or two of
them, and a network client implements them by sending those requests.

Rules every implementation keeps:

* errors are :mod:`pylog.errors` exceptions carrying Kafka's code, and a call that
  raises changed nothing;
* every method is thread-safe;
* nothing blocks longer than its ``timeout`` argument (``groups`` calls have their
  own); :meth:`BrokerInterface.produce_async` never blocks on replication.

See ``docs/architecture.md`` for where this sits among the layers.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import (Any, Callable, Dict, List, Mapping, Optional, Protocol, Sequence, Tuple, Union,
                    runtime_checkable)

__all__ = ["BrokerInterface", "NodeInfo", "PartitionInfo", "TopicDescription", "FetchResult",
           "ProduceCallback", "DataListener"]


@dataclass(frozen=True)
class NodeInfo:
    """A live broker of the cluster.  ``host``/``port`` are its advertised listener when
    the implementation knows one (a network node); in-process brokers have None."""

    node_id: int
    rack: Optional[str] = None
    host: Optional[str] = None
    port: Optional[int] = None
    #: Every advertised listener as (listener name, host, port), when the broker has
    #: several (a client is told the address of the listener it connected to).
    endpoints: Tuple[Tuple[str, str, int], ...] = ()

    def address_for(self, listener_name: str) -> Tuple[Optional[str], Optional[int]]:
        """``(host, port)`` of this broker's listener named ``listener_name``, else
        its registered host and port."""
        for name, host, port in self.endpoints:
            if name == listener_name:
                return host, port
        return self.host, self.port


@dataclass(frozen=True)
class PartitionInfo:
    """One partition as Metadata and describe calls report it.

    ``leader`` is -1 while the partition is offline (no live leader); offsets are the
    leader's (0 when offline).  ``losses`` are the loss-ledger entries of this partition
    (records an unclean election threw away), empty on a single broker.
    """

    partition: int
    leader: int
    replicas: List[int]
    isr: List[int]
    log_start_offset: int
    log_end_offset: int
    high_watermark: int
    size_bytes: int
    leader_epoch: int = 0
    offline: bool = False
    losses: Tuple[Dict[str, Any], ...] = ()


@dataclass(frozen=True)
class TopicDescription:
    """A topic: its id (32 hex digits, a UUID as Kafka's topic ids), partitions and
    configuration."""

    name: str
    topic_id: str
    partitions: List[PartitionInfo]
    config: Dict[str, Any]  #: effective configuration (every known name)
    overrides: Dict[str, Any] = field(default_factory=dict)  #: what was set for this topic
    internal: bool = False


@dataclass(frozen=True)
class FetchResult:
    """Batches of one partition (zero-copy views) and its offsets at fetch time."""

    batches: List[Any]  #: pylog.records.RecordBatch views
    high_watermark: int
    log_start_offset: int
    log_end_offset: int


#: ``callback(error, result)``: error is a PylogError or None, result an AppendResult.
ProduceCallback = Callable[[Optional[BaseException], Any], None]
#: ``listener(topic, partition)``: called (from any thread) after records of that
#: partition became readable by consumers (its high watermark moved).
DataListener = Callable[[str, int], None]


@runtime_checkable
class BrokerInterface(Protocol):
    """What the clients and the server may call on a broker (see the module docstring)."""

    # ------------------------------------------------------------------ identity
    @property
    def cluster_id(self) -> str:
        """The cluster's id (Kafka's clusterId), stable across restarts."""
        ...

    @property
    def controller_id(self) -> int:
        """The node id of the active controller (-1 if none right now)."""
        ...

    def nodes(self) -> List[NodeInfo]:
        """The live brokers."""
        ...

    # ------------------------------------------------------------------ topics
    def create_topic(self, name: str, partitions: Optional[int] = None, replication_factor: int = 1,
                     config: Optional[Mapping[str, Any]] = None, *, validate_only: bool = False,
                     replica_assignment: Optional[Sequence[Sequence[int]]] = None) -> TopicDescription:
        """Create a topic (``partitions`` None: num.partitions; ``replica_assignment``:
        the replicas of each partition instead of the broker's placement).  InvalidTopic,
        TopicAlreadyExists, InvalidPartitions, InvalidReplicationFactor,
        InvalidReplicaAssignment, InvalidConfig.  ``validate_only`` checks everything and
        creates nothing."""
        ...

    def delete_topic(self, name: str) -> None:
        """Delete a topic and its data.  UnknownTopicOrPartition, InvalidTopic (internal)."""
        ...

    def create_partitions(self, name: str, count: int, *, validate_only: bool = False) -> TopicDescription:
        """Grow the topic to ``count`` partitions (Kafka's CreatePartitions).
        InvalidPartitions if ``count`` is not larger than today's count."""
        ...

    def list_topics(self, include_internal: bool = False) -> List[str]:
        """Topic names, sorted."""
        ...

    def describe_topic(self, name: str, *, offsets: bool = True) -> TopicDescription:
        """Partitions (leader, replicas, ISR, epoch, offsets) and configuration.
        ``offsets`` False: the offsets and sizes may be left 0 (Metadata needs none, and
        a cluster node reads them under the lock its replication holds)."""
        ...

    def alter_topic_config(self, name: str, changes: Mapping[str, Optional[Any]], *,
                           replace: bool = False, validate_only: bool = False) -> TopicDescription:
        """Change a topic's overrides: a value sets, None removes (back to the broker
        default).  ``replace=True`` (Kafka's non-incremental AlterConfigs) makes the
        overrides exactly ``changes``.  Takes effect on the open logs at once and
        persists.  InvalidConfig names the bad setting; nothing changes then."""
        ...

    def partitions_for(self, topic: str) -> int:
        """Partition count of ``topic``; creates it when auto.create.topics.enable is on.
        UnknownTopicOrPartition, InvalidTopic."""
        ...

    # ------------------------------------------------------------------ data plane
    #: Whether a producer should pipeline: keep several produce_async calls in flight
    #: and :meth:`drive` them (True where acknowledgements come later, from followers or
    #: over a network), or send one batch after another with :meth:`produce` (False where
    #: produce answers at once, as on one embedded broker: there batches are acknowledged
    #: sooner one after another, and pipelining gains nothing).
    pipelined_produce: bool

    def init_producer_id(self) -> Tuple[int, int]:
        """A new (producer id, epoch) for an idempotent producer."""
        ...

    def produce(self, topic: str, partition: int, data: Any, *, acks: Union[int, str] = -1,
                timeout_ms: int = 30_000) -> Any:
        """Append Kafka v2 batches to a partition; returns an AppendResult once ``acks``
        is satisfied (blocking up to ``timeout_ms``)."""
        ...

    # (Optional, not part of this protocol: ``produce_many(topic, partition, payloads, *,
    # acks, timeout_ms) -> (results, error)``, several produces to one partition in one
    # call with the results of each in turn; the embedded Broker has it, and a producer's
    # sender uses it where the target has it.)

    def produce_async(self, topic: str, partition: int, data: Any, *, acks: Union[int, str] = -1,
                      callback: ProduceCallback) -> None:
        """Start a produce; ``callback(error, result)`` runs once, possibly before this
        returns (a single broker appends at once), or later from another thread (when
        followers acknowledge).  Never blocks on replication."""
        ...

    def drive(self, done: Callable[[], bool], timeout_s: float) -> bool:
        """Let pending work progress until ``done()`` or ``timeout_s``; returns done()."""
        ...

    def fetch(self, topic: str, partition: int, offset: int, *, max_bytes: int = 1 << 20,
              to_log_end: bool = False) -> FetchResult:
        """Batches from ``offset`` below the high watermark (zero-copy views; the first
        may start before ``offset``).  OffsetOutOfRange, UnknownTopicOrPartition,
        NotLeaderOrFollower."""
        ...

    def list_offsets(self, topic: str, partition: int, timestamp: int) -> Tuple[Optional[int], int]:
        """-2 earliest, -1 latest (the HW), else the first offset with a timestamp >=
        ``timestamp``: (offset or None, that record's timestamp or -1)."""
        ...

    def offset_for_leader_epoch(self, topic: str, partition: int, leader_epoch: int) -> Tuple[int, int]:
        """Kafka's OffsetsForLeaderEpoch on the leader: (the largest epoch <=
        ``leader_epoch``, the end offset of that epoch); (-1, -1) if unknown."""
        ...

    def delete_records(self, topic: str, partition: int, before_offset: int) -> int:
        """Move the log start offset up to ``before_offset`` (-1: the high watermark);
        returns the new log start offset (Kafka's low watermark).  OffsetOutOfRange
        above the high watermark."""
        ...

    @property
    def data_version(self) -> int:
        """A counter that moves whenever consumers can read something new."""
        ...

    def wait_for_data(self, version: int, timeout_s: float) -> int:
        """Block until :attr:`data_version` moves past ``version`` or ``timeout_s``."""
        ...

    def add_data_listener(self, listener: DataListener) -> None:
        """Call ``listener(topic, partition)`` whenever that partition's readable end
        moves (see :data:`DataListener`).  Listeners must be quick and never raise."""
        ...

    def remove_data_listener(self, listener: DataListener) -> None:
        ...

    # ------------------------------------------------------------------ groups
    @property
    def groups(self) -> Any:
        """The group coordinator (:class:`~pylog.broker.group_service.GroupService`);
        creates ``__consumer_offsets`` on first use."""
        ...

    def coordinator_id(self, group_id: str) -> int:
        """The broker id of ``group_id``'s coordinator (what FindCoordinator answers):
        the leader of its ``__consumer_offsets`` partition.  Raises
        CoordinatorNotAvailable when there is none right now."""
        ...

    # ------------------------------------------------------------------ the rest
    def metrics(self) -> Dict[str, Any]:
        """Counters and gauges: "topics" (per partition traffic, offsets, skew), "groups"
        (lag), "skew_warnings_total", and on a cluster the ISR counters."""
        ...

    def close(self) -> None:
        ...

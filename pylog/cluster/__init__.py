"""pylog.cluster: the cluster's metadata and control plane.

- :mod:`pylog.cluster.metadata` — the MetadataStore contract (versioned compare-and-set
  nodes, sessions with ephemeral nodes, sans-I/O watches) and its in-memory implementation.
- :mod:`pylog.cluster.placement` — rack-aware replica assignment, preferred leaders.
- :mod:`pylog.cluster.controller` — the controller state machine: leader election (clean
  and unclean), ISR pruning of dead brokers, preferred-leader rebalancing, controlled
  shutdown, partition reassignment, topic creation, growth (CreatePartitions),
  configuration changes and deletion.
- :mod:`pylog.cluster.admin` — operator requests through the store, from any broker:
  controlled shutdown, preferred leader election, partition reassignment.
- :mod:`pylog.cluster.throttle` — the replication throttle (Kafka's replication quotas):
  a token bucket on the driver's time, and the dynamic broker rates in the store.

Everything here is sans-I/O: no clock reads, sleeps, threads or sockets; callers pass
``now`` in ms.
"""
from pylog.cluster.controller import (
    BROKER_IDS_PATH,
    CONTROLLER_EPOCH_PATH,
    CONTROLLER_PATH,
    LOSS_LEDGER_PATH,
    NO_LEADER,
    TOPICS_PATH,
    WATCH_PREFIXES,
    Controller,
    NotController,
    PartitionState,
    append_loss_ledger,
    broker_path,
    live_brokers,
    partition_state_path,
    read_loss_ledger,
    read_partition_state,
    register_broker,
    topic_path,
)
from pylog.cluster.admin import (
    leaderships,
    list_reassignments,
    preferred_election_result,
    reassignment_result,
    request_controlled_shutdown,
    request_preferred_election,
    request_reassignment,
)
from pylog.cluster.throttle import set_replication_throttle
from pylog.cluster.metadata import (
    ANY_VERSION,
    InMemoryMetadataStore,
    NodeStat,
    WatchEvent,
)
from pylog.cluster.placement import assign_replicas, leader_imbalance, preferred_leader
from pylog.cluster.local import LocalCluster

__all__ = [
    "LocalCluster",
    "InMemoryMetadataStore",
    "WatchEvent",
    "NodeStat",
    "ANY_VERSION",
    "assign_replicas",
    "preferred_leader",
    "leader_imbalance",
    "Controller",
    "NotController",
    "PartitionState",
    "BROKER_IDS_PATH",
    "TOPICS_PATH",
    "CONTROLLER_PATH",
    "CONTROLLER_EPOCH_PATH",
    "LOSS_LEDGER_PATH",
    "WATCH_PREFIXES",
    "NO_LEADER",
    "broker_path",
    "topic_path",
    "partition_state_path",
    "register_broker",
    "live_brokers",
    "read_partition_state",
    "read_loss_ledger",
    "append_loss_ledger",
    "request_controlled_shutdown",
    "leaderships",
    "request_preferred_election",
    "preferred_election_result",
    "request_reassignment",
    "reassignment_result",
    "list_reassignments",
    "set_replication_throttle",
]

"""pylog.cluster: the cluster's metadata and control plane.

- :mod:`pylog.cluster.metadata` — the MetadataStore contract (versioned compare-and-set
  nodes, sessions with ephemeral nodes, sans-I/O watches) and its in-memory implementation.
- :mod:`pylog.cluster.placement` — rack-aware replica assignment, preferred leaders.
- :mod:`pylog.cluster.controller` — the controller state machine: leader election (clean
  and unclean), ISR pruning of dead brokers, preferred-leader rebalancing, topic creation,
  growth (CreatePartitions), configuration changes and deletion.

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
]

"""pylog.broker: topics, partitions, idempotent produce, fetch, groups, compaction, metrics.

Uses pylog.storage and pylog.records; the group coordinator inside is sans-I/O and the
:class:`Broker` drives it.  Clients (pylog.client) and the server talk to a broker through
one contract, :class:`BrokerInterface` (:mod:`pylog.broker.interface`), which
:class:`Broker` and :class:`pylog.cluster.LocalCluster` implement.
"""
from pylog.broker.broker import OFFSETS_TOPIC, Broker, parse_acks, validate_topic_name
from pylog.broker.config import BrokerConfig, TopicConfig
from pylog.broker.interface import BrokerInterface, FetchResult, NodeInfo, PartitionInfo, TopicDescription
from pylog.broker.partition import AppendResult, Partition

__all__ = ["Broker", "BrokerInterface", "NodeInfo", "BrokerConfig", "TopicConfig", "TopicDescription",
           "PartitionInfo", "FetchResult", "AppendResult", "Partition", "OFFSETS_TOPIC", "parse_acks",
           "validate_topic_name"]

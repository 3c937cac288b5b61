"""pylog.broker: topics, partitions, idempotent produce, fetch, groups, compaction, metrics.

Uses pylog.storage and pylog.records; the group coordinator inside is sans-I/O and the
:class:`Broker` drives it.  Clients (pylog.client) talk to a Broker through its request
methods: ``produce``, ``fetch``, ``list_offsets``, ``init_producer_id``, ``groups``.
"""
from pylog.broker.broker import (
    OFFSETS_TOPIC,
    Broker,
    FetchResult,
    PartitionInfo,
    TopicDescription,
    parse_acks,
    validate_topic_name,
)
from pylog.broker.config import BrokerConfig, TopicConfig
from pylog.broker.partition import AppendResult, Partition

__all__ = ["Broker", "BrokerConfig", "TopicConfig", "TopicDescription", "PartitionInfo", "FetchResult",
           "AppendResult", "Partition", "OFFSETS_TOPIC", "parse_acks", "validate_topic_name"]

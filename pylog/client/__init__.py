"""pylog.client: Producer and Consumer, in-process or over the network.

Clients talk to anything that offers the broker's request methods (an embedded
:class:`pylog.Broker`, a :class:`pylog.LocalCluster`): ``partitions_for``,
``init_producer_id``, ``produce``/``produce_async``/``drive``, ``fetch``,
``list_offsets``, ``wait_for_data`` and ``groups``.  Given a ``"host:port[,...]"``
string instead, they build a :class:`pylog.client.network.NetworkClient`, which offers
the same methods over Kafka's wire protocol (and ``send_fetches`` for the consumer's
batched, prefetching Fetch requests: :mod:`pylog.client.fetcher`).
"""
from pylog.client.consumer import Consumer, ConsumerArrays, ConsumerRecord, TopicPartition
from pylog.client.producer import FutureRecordMetadata, Producer, RecordMetadata

__all__ = ["Producer", "RecordMetadata", "FutureRecordMetadata", "Consumer", "ConsumerRecord",
           "ConsumerArrays", "TopicPartition"]

"""pylog.client: Producer and Consumer (in-process today; over the network later).

Clients talk to anything that offers the broker's request methods (an embedded
:class:`pylog.Broker` or, later, a cluster): ``partitions_for``, ``init_producer_id``,
``produce``, ``fetch``, ``list_offsets``, ``wait_for_data`` and ``groups``.
"""
from pylog.client.consumer import Consumer, ConsumerArrays, ConsumerRecord, TopicPartition
from pylog.client.producer import FutureRecordMetadata, Producer, RecordMetadata

__all__ = ["Producer", "RecordMetadata", "FutureRecordMetadata", "Consumer", "ConsumerRecord",
           "ConsumerArrays", "TopicPartition"]

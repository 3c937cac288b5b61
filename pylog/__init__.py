"""pylog: a replicated event log with a native core — Kafka's storage model for Python.

Embedded use starts with :class:`pylog.Broker` (topics, partitions, groups) and the
:class:`pylog.Producer` / :class:`pylog.Consumer` clients; :class:`pylog.Log` is one
partition's durable log on its own.
"""
from pylog import errors
from pylog.broker import Broker, TopicDescription
from pylog.cluster import LocalCluster
from pylog.client import (
    Consumer,
    ConsumerArrays,
    ConsumerRecord,
    FutureRecordMetadata,
    Producer,
    RecordMetadata,
    TopicPartition,
)
from pylog.errors import (
    CorruptRecordError,
    InvalidArgument,
    InvalidConfig,
    InvalidTimestamp,
    LogClosed,
    OffsetOutOfRange,
    PylogError,
    RecordBatchTooLarge,
    RecordTooLarge,
    StorageError,
)
from pylog.records import Record, RecordBatch
from pylog.storage import AppendInfo, Log, LogConfig

__version__ = "0.1.0"

__all__ = [
    "Broker",
    "LocalCluster",
    "TopicDescription",
    "Producer",
    "RecordMetadata",
    "FutureRecordMetadata",
    "Consumer",
    "ConsumerRecord",
    "ConsumerArrays",
    "TopicPartition",
    "errors",
    "Log",
    "LogConfig",
    "AppendInfo",
    "Record",
    "RecordBatch",
    "PylogError",
    "OffsetOutOfRange",
    "CorruptRecordError",
    "RecordTooLarge",
    "RecordBatchTooLarge",
    "InvalidConfig",
    "InvalidArgument",
    "InvalidTimestamp",
    "LogClosed",
    "StorageError",
]

"""pylog: a replicated event log with a native core — Kafka's storage model for Python.

Embedded use starts with :class:`pylog.Log` (one partition's durable log).
"""
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

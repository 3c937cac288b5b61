"""pylog.storage: a partition's log — segments, indexes, retention, recovery, checkpoints.

Uses pylog.records and pylog._native; knows nothing of replication or topics.
"""
from pylog.storage.config import LogConfig
from pylog.storage.log import EARLIEST_TIMESTAMP, LATEST_TIMESTAMP, AppendInfo, Log
from pylog.storage.segment import LogSegment

__all__ = ["Log", "LogConfig", "LogSegment", "AppendInfo", "EARLIEST_TIMESTAMP", "LATEST_TIMESTAMP"]

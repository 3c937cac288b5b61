"""Log configuration: Kafka's topic-level names and defaults, checked once at open.

Every setting exists under its Kafka name (``"segment.bytes"``) and as a keyword
argument in snake_case (``segment_bytes=``).  A bad name or value raises
:class:`~pylog.errors.InvalidConfig` naming the setting and the accepted range.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any, Mapping, Optional

from pylog.errors import InvalidConfig

__all__ = ["LogConfig", "MAX_SEGMENT_BYTES", "MIN_SEGMENT_BYTES"]

#: Index positions are 32-bit, as in Kafka: a segment holds at most 2 GiB - 1.
MAX_SEGMENT_BYTES = 0x7FFFFFFF
#: Below this a segment cannot hold a batch of one small record.
MIN_SEGMENT_BYTES = 128
_DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class LogConfig:
    """The settings of one partition's log (Kafka topic-level configuration).

    ``None`` for ``flush_messages`` / ``flush_ms`` means "never force a flush; the OS
    writes pages back when it likes" (Kafka's default of Long.MAX_VALUE).
    """

    segment_bytes: int = 1 << 30  #: segment.bytes — roll the active segment at this size
    segment_ms: int = 7 * _DAY_MS  #: segment.ms — roll a segment this old (by first record time)
    segment_index_bytes: int = 10 * 1024 * 1024  #: segment.index.bytes — max .index size
    index_interval_bytes: int = 4096  #: index.interval.bytes — log bytes between index entries
    retention_ms: int = 7 * _DAY_MS  #: retention.ms — delete segments older; -1 keeps forever
    retention_bytes: int = -1  #: retention.bytes — delete oldest segments above; -1 no limit
    flush_messages: Optional[int] = None  #: flush.messages — fsync every N appended records
    flush_ms: Optional[int] = None  #: flush.ms — fsync when the last flush is older (checked on append)
    max_message_bytes: int = 1048588  #: max.message.bytes — largest record batch accepted
    message_timestamp_type: str = "CreateTime"  #: message.timestamp.type — CreateTime | LogAppendTime
    #: preallocate — reserve disk for all of segment.bytes when a segment is created;
    #: otherwise disk is reserved in growing steps as the segment fills
    preallocate: bool = False
    #: cleanup.policy — "delete" (retention), "compact" (keep the latest record per
    #: key, see pylog.broker.cleaner) or "compact,delete" (both)
    cleanup_policy: str = "delete"
    delete_retention_ms: int = _DAY_MS  #: delete.retention.ms — keep tombstones this long after cleaning
    min_cleanable_dirty_ratio: float = 0.5  #: min.cleanable.dirty.ratio — clean when dirty/total reaches it
    min_compaction_lag_ms: int = 0  #: min.compaction.lag.ms — records younger stay uncompacted
    max_compaction_lag_ms: int = 2**63 - 1  #: max.compaction.lag.ms — clean dirty records older, whatever the ratio

    def __post_init__(self) -> None:
        def need_int(name: str, lo: int, hi: int = 2**63 - 1, *, allow_none: bool = False) -> None:
            value = getattr(self, name)
            kafka = name.replace("_", ".")
            if value is None and allow_none:
                return
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidConfig(f"{kafka} must be an integer, got {value!r}")
            if not lo <= value <= hi:
                raise InvalidConfig(f"{kafka} must be between {lo} and {hi}, got {value}")

        need_int("segment_bytes", MIN_SEGMENT_BYTES, MAX_SEGMENT_BYTES)
        need_int("segment_ms", 1)
        need_int("segment_index_bytes", 24, MAX_SEGMENT_BYTES)
        need_int("index_interval_bytes", 0, MAX_SEGMENT_BYTES)
        need_int("retention_ms", -1)
        need_int("retention_bytes", -1)
        need_int("flush_messages", 1, allow_none=True)
        need_int("flush_ms", 0, allow_none=True)
        need_int("max_message_bytes", 0, 0x7FFFFFF0)
        need_int("delete_retention_ms", 0)
        need_int("min_compaction_lag_ms", 0)
        need_int("max_compaction_lag_ms", 1)
        ratio = self.min_cleanable_dirty_ratio
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 <= ratio <= 1.0:
            raise InvalidConfig(f"min.cleanable.dirty.ratio must be a number between 0 and 1, got {ratio!r}")
        policy = self.cleanup_policy
        parts = [p.strip() for p in policy.split(",")] if isinstance(policy, str) else None
        if not parts or any(p not in ("delete", "compact") for p in parts) or len(set(parts)) != len(parts):
            raise InvalidConfig(
                f"cleanup.policy must be 'delete', 'compact' or 'compact,delete', got {policy!r}")
        object.__setattr__(self, "cleanup_policy", ",".join(sorted(parts)))
        if not isinstance(self.preallocate, bool):
            raise InvalidConfig(f"preallocate must be a bool, got {self.preallocate!r}")
        if self.message_timestamp_type not in ("CreateTime", "LogAppendTime"):
            raise InvalidConfig(
                "message.timestamp.type must be 'CreateTime' or 'LogAppendTime', "
                f"got {self.message_timestamp_type!r}"
            )

    @property
    def index_entries(self) -> int:
        """Offset-index entries a segment can hold (segment.index.bytes // 8)."""
        return self.segment_index_bytes // 8

    @property
    def compact(self) -> bool:
        """cleanup.policy contains "compact": the cleaner may compact this log."""
        return "compact" in self.cleanup_policy.split(",")

    @property
    def delete(self) -> bool:
        """cleanup.policy contains "delete": retention.ms/retention.bytes apply."""
        return "delete" in self.cleanup_policy.split(",")

    @property
    def log_append_time(self) -> bool:
        return self.message_timestamp_type == "LogAppendTime"

    @classmethod
    def kafka_names(cls) -> dict[str, str]:
        """Kafka name -> field name, e.g. ``"segment.bytes" -> "segment_bytes"``."""
        return {f.name.replace("_", "."): f.name for f in fields(cls)}

    @classmethod
    def from_settings(
        cls, config: Optional[Mapping[str, Any]] = None, **kwargs: Any
    ) -> "LogConfig":
        """Build from Kafka names (``config``) and/or snake_case keywords.

        A keyword wins over the same setting in ``config``.  Unknown names raise
        InvalidConfig.
        """
        by_kafka = cls.kafka_names()
        known = set(by_kafka.values())
        values: dict[str, Any] = {}
        for key, value in (config or {}).items():
            name = by_kafka.get(key) or (key if key in known else None)
            if name is None:
                raise InvalidConfig(f"unknown log configuration {key!r}; known: {sorted(by_kafka)}")
            values[name] = value
        for key, value in kwargs.items():
            if key not in known:
                raise InvalidConfig(f"unknown log configuration keyword {key!r}; known: {sorted(known)}")
            values[key] = value
        return cls(**values)

    def replace(self, **changes: Any) -> "LogConfig":
        return dataclasses.replace(self, **changes)

"""Broker and topic configuration, by Kafka's names and with Kafka's defaults.

A topic's configuration is the broker's defaults overlaid with the topic's overrides
(what ``create_topic(config=...)`` gave).  Settings the log engine uses are passed on
as a :class:`~pylog.storage.LogConfig`; the rest (``compression.type``,
``min.insync.replicas``, ``unclean.leader.election.enable`` and the replication
throttle's ``leader.replication.throttled.replicas`` /
``follower.replication.throttled.replicas``) are the broker's.

Bad names or values raise :class:`~pylog.errors.InvalidConfig` naming the setting.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Dict, FrozenSet, Iterable, Mapping, Optional, Tuple

from pylog.errors import InvalidConfig
from pylog.records.compression import CODECS
from pylog.storage import LogConfig
from pylog.util import check_int

__all__ = ["BrokerConfig", "TopicConfig", "TOPIC_DEFAULTS", "BROKER_TOPIC_DEFAULT_NAMES",
           "LEADER_THROTTLED_REPLICAS", "FOLLOWER_THROTTLED_REPLICAS", "parse_throttled_replicas",
           "format_throttled_replicas"]

#: Topic configs naming the replicas whose replication is throttled (Kafka's names): on
#: the leader side ("partition:leader broker") and on the follower side
#: ("partition:follower broker"); "*" throttles every replica of the topic.
LEADER_THROTTLED_REPLICAS = "leader.replication.throttled.replicas"
FOLLOWER_THROTTLED_REPLICAS = "follower.replication.throttled.replicas"

_BROKER_ONLY_TOPIC_SETTINGS: Dict[str, Any] = {
    "compression.type": "producer",
    "min.insync.replicas": 1,
    "unclean.leader.election.enable": False,
    LEADER_THROTTLED_REPLICAS: "",
    FOLLOWER_THROTTLED_REPLICAS: "",
}

#: Broker-level name of each topic-level default (Kafka's server.properties names).
BROKER_TOPIC_DEFAULT_NAMES: Dict[str, str] = {
    "log.segment.bytes": "segment.bytes",
    "log.roll.ms": "segment.ms",
    "log.index.size.max.bytes": "segment.index.bytes",
    "log.index.interval.bytes": "index.interval.bytes",
    "log.retention.ms": "retention.ms",
    "log.retention.bytes": "retention.bytes",
    "log.flush.interval.messages": "flush.messages",
    "log.flush.interval.ms": "flush.ms",
    "message.max.bytes": "max.message.bytes",
    "log.message.timestamp.type": "message.timestamp.type",
    "log.cleanup.policy": "cleanup.policy",
    "log.cleaner.delete.retention.ms": "delete.retention.ms",
    "log.cleaner.min.cleanable.ratio": "min.cleanable.dirty.ratio",
    "log.cleaner.min.compaction.lag.ms": "min.compaction.lag.ms",
    "log.cleaner.max.compaction.lag.ms": "max.compaction.lag.ms",
    "log.preallocate": "preallocate",
    "compression.type": "compression.type",
    "min.insync.replicas": "min.insync.replicas",
    "unclean.leader.election.enable": "unclean.leader.election.enable",
}


def _log_defaults() -> Dict[str, Any]:
    d = LogConfig()
    return {kafka: getattr(d, name) for kafka, name in LogConfig.kafka_names().items()}


#: Every topic-level setting pylog knows, with Kafka's default.
TOPIC_DEFAULTS: Dict[str, Any] = {**_log_defaults(), **_BROKER_ONLY_TOPIC_SETTINGS}

_COMPRESSION_TYPES = ("producer", "uncompressed", *CODECS)


def _coerce(name: str, value: Any, default: Any) -> Any:
    """Accept strings for numbers and booleans, as Kafka's config files give them."""
    if isinstance(default, bool) and isinstance(value, str):
        if value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise InvalidConfig(f"{name} must be true or false, got {value!r}")
    if isinstance(value, str) and (isinstance(default, int) and not isinstance(default, bool)
                                   or default is None):
        try:
            return int(value)
        except ValueError:
            if default is not None:
                raise InvalidConfig(f"{name} must be an integer, got {value!r}") from None
    if isinstance(default, float) and isinstance(value, (str, int)) and not isinstance(value, bool):
        try:
            return float(value)
        except ValueError:
            raise InvalidConfig(f"{name} must be a number, got {value!r}") from None
    return value


def parse_throttled_replicas(value: Any, name: str = LEADER_THROTTLED_REPLICAS
                             ) -> Optional[FrozenSet[Tuple[int, int]]]:
    """A throttled-replicas list (Kafka's format: ``"0:1,0:2,3:4"``, partition:broker
    pairs, or ``"*"`` for every replica; ``""`` for none) as a set of (partition, broker)
    pairs, or None for ``"*"``.  Raises InvalidConfig naming ``name``."""
    if not isinstance(value, str):
        raise InvalidConfig(f"{name} must be a string of partition:broker pairs or '*', got {value!r:.80}")
    text = value.strip()
    if text == "*":
        return None
    out = set()
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        p, sep, b = item.partition(":")
        if not sep or not p.strip().isdigit() or not b.strip().isdigit():
            raise InvalidConfig(f"{name} must list partition:broker pairs (e.g. '0:1,0:2') or be '*'; "
                                f"{item!r} is neither")
        out.add((int(p), int(b)))
    return frozenset(out)


def format_throttled_replicas(pairs: Iterable[Tuple[int, int]]) -> str:
    """The config value for (partition, broker) pairs, sorted (``""`` for none)."""
    return ",".join(f"{p}:{b}" for p, b in sorted(set(pairs)))


@dataclass(frozen=True)
class TopicConfig:
    """A topic's effective configuration: ``values`` has every known Kafka name.

    ``overrides`` is what was set for this topic explicitly (what persists).
    """

    values: Mapping[str, Any]
    overrides: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, overrides: Optional[Mapping[str, Any]] = None,
              defaults: Optional[Mapping[str, Any]] = None) -> "TopicConfig":
        """Check ``overrides`` (Kafka names) and overlay them on ``defaults``."""
        base = dict(TOPIC_DEFAULTS if defaults is None else defaults)
        if overrides is not None and not isinstance(overrides, Mapping):
            raise InvalidConfig(f"topic config must be a mapping of Kafka names to values, got {overrides!r:.80}")
        clean: Dict[str, Any] = {}
        for key, value in (overrides or {}).items():
            if not isinstance(key, str) or key not in TOPIC_DEFAULTS:
                raise InvalidConfig(f"unknown topic configuration {key!r}; known: {sorted(TOPIC_DEFAULTS)}")
            clean[key] = _coerce(key, value, TOPIC_DEFAULTS[key])
        base.update(clean)
        cfg = cls(values=base, overrides=clean)
        cfg.log_config()  # validates the log engine's settings
        cfg._check_broker_settings()
        return cfg

    def altered(self, changes: Mapping[str, Optional[Any]], *, replace: bool = False,
                defaults: Optional[Mapping[str, Any]] = None) -> "TopicConfig":
        """This configuration after Kafka's AlterConfigs: a value in ``changes`` sets an
        override, None removes it (back to the default); with ``replace`` (the legacy,
        non-incremental AlterConfigs) the overrides become exactly the non-None
        ``changes``.  ``defaults`` are the ones this configuration was built on.

        Raises InvalidConfig naming the first bad setting (an unknown name, also for a
        removal, or a bad value); ``self`` never changes.
        """
        if not isinstance(changes, Mapping):
            raise InvalidConfig(f"config changes must be a mapping of Kafka names to values (None "
                                f"removes), got {changes!r:.80}")
        for key in changes:
            if not isinstance(key, str) or key not in TOPIC_DEFAULTS:
                raise InvalidConfig(f"unknown topic configuration {key!r}; known: {sorted(TOPIC_DEFAULTS)}")
        overrides = {} if replace else dict(self.overrides)
        for key, value in changes.items():
            if value is None:
                overrides.pop(key, None)
            else:
                overrides[key] = value
        return TopicConfig.build(overrides, defaults)

    def _check_broker_settings(self) -> None:
        ct = self.values["compression.type"]
        if ct not in _COMPRESSION_TYPES:
            raise InvalidConfig(f"compression.type must be one of {list(_COMPRESSION_TYPES)}, got {ct!r}")
        mir = self.values["min.insync.replicas"]
        check_int("min.insync.replicas", mir, min=1, error=InvalidConfig)
        ule = self.values["unclean.leader.election.enable"]
        if not isinstance(ule, bool):
            raise InvalidConfig(f"unclean.leader.election.enable must be a boolean, got {ule!r}")
        for name in (LEADER_THROTTLED_REPLICAS, FOLLOWER_THROTTLED_REPLICAS):
            parse_throttled_replicas(self.values[name], name)

    def log_settings(self) -> Dict[str, Any]:
        """The log engine's part of this configuration, by Kafka name."""
        names = LogConfig.kafka_names()
        return {k: v for k, v in self.values.items() if k in names}

    def log_config(self) -> LogConfig:
        """The log engine's part of this configuration."""
        return LogConfig.from_settings(self.log_settings())

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    @property
    def compression_type(self) -> str:
        return self.values["compression.type"]

    @property
    def min_insync_replicas(self) -> int:
        return self.values["min.insync.replicas"]

    @property
    def compacted(self) -> bool:
        return "compact" in str(self.values.get("cleanup.policy", "delete"))


@dataclass(frozen=True)
class BrokerConfig:
    """Broker-level settings (Kafka's server.properties names, snake_case here)."""

    broker_id: int = 0  #: broker.id
    broker_rack: Optional[str] = None  #: broker.rack
    num_partitions: int = 1  #: num.partitions — default partitions of a new topic
    #: auto.create.topics.enable — pylog's default is False (Kafka's is true): a typo in a
    #: topic name raises UnknownTopicOrPartition instead of creating a topic.
    auto_create_topics_enable: bool = False
    log_retention_check_interval_ms: int = 300_000  #: log.retention.check.interval.ms
    log_cleaner_enable: bool = True  #: log.cleaner.enable
    log_cleaner_backoff_ms: int = 15_000  #: log.cleaner.backoff.ms
    #: producer.id.expiration.ms — a producer id not heard from (by its batches' max
    #: timestamp) for this long is forgotten by each partition (KIP-854).
    producer_id_expiration_ms: int = 86_400_000
    #: producer.id.expiration.check.interval.ms
    producer_id_expiration_check_interval_ms: int = 600_000
    offsets_topic_num_partitions: int = 50  #: offsets.topic.num.partitions
    #: offsets.topic.replication.factor — on a cluster with fewer brokers, one per broker
    offsets_topic_replication_factor: int = 3
    offsets_topic_segment_bytes: int = 100 * 1024 * 1024  #: offsets.topic.segment.bytes
    #: group.initial.rebalance.delay.ms — 0 here (Kafka's default is 3000): an embedded
    #: broker has no herd of consumers starting at once.
    group_initial_rebalance_delay_ms: int = 0
    group_min_session_timeout_ms: int = 6_000  #: group.min.session.timeout.ms
    group_max_session_timeout_ms: int = 1_800_000  #: group.max.session.timeout.ms
    #: log.scrub.interval.ms (pylog): every this many ms, the background scrub checks the
    #: CRC32C of every batch of every partition (Log.scrub); 0 (the default) is off.
    log_scrub_interval_ms: int = 0
    partition_skew_window_ms: int = 60_000  #: partition.skew.window.ms (pylog)
    partition_skew_ratio: float = 2.0  #: partition.skew.ratio (pylog)
    partition_skew_min_records: int = 1_000  #: partition.skew.min.records (pylog)
    max_partitions_per_topic: int = 10_000  #: pylog's limit on partitions of one topic
    #: Topic-level defaults by their broker names (log.retention.ms, message.max.bytes, ...).
    topic_defaults: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name in ("topic_defaults", "broker_rack"):
                continue
            v = getattr(self, f.name)
            kafka = f.name.replace("_", ".")
            if isinstance(f.default, bool):
                if not isinstance(v, bool):
                    raise InvalidConfig(f"{kafka} must be a boolean, got {v!r}")
            elif isinstance(f.default, float):
                if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
                    raise InvalidConfig(f"{kafka} must be a positive number, got {v!r}")
            else:
                check_int(kafka, v, min=0, error=InvalidConfig)
        for name in ("num_partitions", "offsets_topic_num_partitions", "offsets_topic_replication_factor"):
            check_int(name.replace("_", "."), getattr(self, name), min=1, error=InvalidConfig)
        if self.broker_rack is not None and not isinstance(self.broker_rack, str):
            raise InvalidConfig(f"broker.rack must be a string, got {self.broker_rack!r}")
        self.topic_config_defaults()  # validates topic_defaults

    def topic_config_defaults(self) -> Dict[str, Any]:
        """Kafka topic-level names -> this broker's defaults."""
        out = dict(TOPIC_DEFAULTS)
        for key, value in self.topic_defaults.items():
            topic_name = BROKER_TOPIC_DEFAULT_NAMES.get(key)
            if topic_name is None or topic_name not in TOPIC_DEFAULTS:
                raise InvalidConfig(f"unknown broker configuration {key!r}")
            out[topic_name] = _coerce(key, value, TOPIC_DEFAULTS[topic_name])
        TopicConfig.build({}, out)
        return out

    @classmethod
    def from_settings(cls, config: Optional[Mapping[str, Any]] = None, **kwargs: Any) -> "BrokerConfig":
        """From Kafka names (``{"num.partitions": 3, "log.retention.ms": ...}``) and keywords."""
        own = {f.name.replace("_", "."): f.name for f in fields(cls) if f.name != "topic_defaults"}
        values: Dict[str, Any] = {}
        topic_defaults: Dict[str, Any] = {}
        for key, value in (config or {}).items():
            if key in own:
                default = getattr(cls, own[key], None)
                values[own[key]] = _coerce(key, value, default)
            elif key in BROKER_TOPIC_DEFAULT_NAMES:
                topic_defaults[key] = value
            else:
                raise InvalidConfig(f"unknown broker configuration {key!r}")
        for key, value in kwargs.items():
            if key in own.values():
                values[key] = value
            elif key.replace("_", ".") in BROKER_TOPIC_DEFAULT_NAMES:
                topic_defaults[key.replace("_", ".")] = value
            else:
                raise InvalidConfig(f"unknown broker configuration keyword {key!r}")
        return cls(topic_defaults=topic_defaults, **values)

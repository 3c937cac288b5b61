"""The producer's configuration: Kafka's producer config names, checked once.

:class:`ProducerConfig` is built from keyword arguments (Kafka names in snake_case)
and/or a mapping of Kafka's dotted names (``{"linger.ms": 5}``), validated, and frozen:
the accumulator, buffer pool, sender and retry policy read their settings from it.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping, Optional, Union

from pylog.errors import InvalidConfig, PylogError, UnsupportedCompressionType
from pylog.records.compression import CODECS, compress
from pylog.util import check_int

__all__ = ["ProducerConfig", "INT32_MAX"]

INT32_MAX = 0x7FFFFFFF

#: Settings that are whole numbers >= 0.
_INTS = ("linger_ms", "batch_size", "retries", "retry_backoff_ms", "delivery_timeout_ms",
         "request_timeout_ms", "max_request_size", "buffer_memory", "max_block_ms")


@dataclass(frozen=True)
class ProducerConfig:
    """Kafka's producer settings as pylog uses them (units in the names).

    ``acks`` is normalised to -1 (all), 0 or 1; ``enable_idempotence`` is resolved
    (Kafka: on by default, quietly off when acks != all); ``compression_type`` is
    lower case and ``codec`` its Kafka codec id.
    """

    acks: int = -1
    linger_ms: int = 5
    batch_size: int = 16384
    compression_type: str = "none"
    codec: int = 0
    enable_idempotence: bool = True
    retries: int = INT32_MAX
    retry_backoff_ms: int = 100
    delivery_timeout_ms: int = 120_000
    request_timeout_ms: int = 30_000
    max_request_size: int = 1_048_576
    partitioner: str = "murmur2"
    buffer_memory: int = 33_554_432
    max_block_ms: int = 60_000
    client_id: str = ""

    @classmethod
    def from_settings(cls, config: Optional[Mapping[str, Any]] = None, *,
                      acks: Union[int, str] = "all", enable_idempotence: Optional[bool] = None,
                      **settings: Any) -> "ProducerConfig":
        """Validate keyword settings, overridden by ``config`` (Kafka's dotted names).

        Raises InvalidConfig naming the setting; UnsupportedCompressionType when the
        codec's package is not installed.
        """
        known = {f.name for f in fields(cls)} - {"codec"}
        unknown = set(settings) - known
        if unknown:
            raise InvalidConfig(f"unknown producer configuration {sorted(unknown)}")
        merged = {f.name: f.default for f in fields(cls) if f.name in known}
        merged.update(settings)
        merged["acks"], merged["enable_idempotence"] = acks, enable_idempotence
        for key, value in (config or {}).items():
            name = key.replace(".", "_")
            if name not in known:
                raise InvalidConfig(f"unknown producer configuration {key!r}; known: "
                                    f"{sorted(k.replace('_', '.') for k in known)}")
            merged[name] = value
        from pylog.broker.broker import parse_acks  # the rule is the broker's
        try:
            acks_n = parse_acks(merged["acks"])
        except PylogError as exc:
            raise InvalidConfig(str(exc)) from None
        for name in _INTS:
            check_int(name.replace("_", "."), merged[name], min=0, error=InvalidConfig)
        if merged["max_request_size"] < 1:
            raise InvalidConfig("max.request.size must be >= 1")
        if merged["buffer_memory"] < 1:
            raise InvalidConfig("buffer.memory must be >= 1 (bytes)")
        idem = merged["enable_idempotence"]
        if idem is None:
            idem = acks_n == -1
        elif idem and acks_n != -1:
            raise InvalidConfig(f"enable.idempotence=True needs acks='all', got acks={merged['acks']!r}")
        ct = merged["compression_type"]
        if not isinstance(ct, str) or ct.lower() not in CODECS:
            raise InvalidConfig(f"compression.type must be one of {sorted(CODECS)}, got {ct!r}")
        codec = CODECS[ct.lower()]
        if codec:
            try:
                compress(codec, b"probe")
            except UnsupportedCompressionType:
                raise
            except ImportError as exc:  # pragma: no cover - depends on installed packages
                raise UnsupportedCompressionType(f"compression.type={ct}: {exc}") from None
        part = merged["partitioner"]
        if not isinstance(part, str) or part not in ("murmur2", "xxhash"):
            raise InvalidConfig(f"partitioner must be 'murmur2' or 'xxhash', got {part!r}")
        merged.update(acks=acks_n, enable_idempotence=bool(idem), compression_type=ct.lower(), codec=codec,
                      batch_size=max(merged["batch_size"], 1))
        return cls(**merged)

"""Sample requests of every API version the server implements, built from kio's
schemas with plausible values — the seed corpus of the request fuzzers and the
round-trip tests."""
from __future__ import annotations

import dataclasses
import typing
import uuid
from typing import Any, Dict, Iterator, Tuple

from pylog.protocol.apis import SUPPORTED, request_class
from pylog.protocol.codec import _entity_of, build, encode_request
from pylog.records import build_batch

_BATCH = build_batch([b"value-1", b"value-2"], keys=[b"k", None], headers=[[("h", b"v")], []])


def _value(kafka_type: str, name: str) -> Any:
    if kafka_type in ("int8", "int16", "int32", "int64", "uint16", "uint32", "uint64", "uint8"):
        if "partition" in name or "index" in name:
            return 0
        if "max_bytes" in name or name == "min_bytes":
            return 1 << 16
        return 1
    if kafka_type == "string":
        return "t" if ("topic" in name or name == "name") else "x"
    if kafka_type == "bytes":
        return b"x"
    if kafka_type == "records":
        return _BATCH
    if kafka_type == "uuid":
        return uuid.UUID(int=7)
    if kafka_type == "bool":
        return False
    if kafka_type == "error_code":
        return 0
    if kafka_type.startswith("timedelta"):
        return 100
    if kafka_type == "float64":
        return 0.5
    if kafka_type == "datetime_i64":
        return 1_700_000_000_000
    raise ValueError(f"no sample for {kafka_type}")


def sample(cls: type) -> Any:
    """An instance of kio dataclass ``cls`` with one element in every array."""
    hints = typing.get_type_hints(cls)
    data: Dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        nested, many = _entity_of(hints[f.name])
        kt = f.metadata.get("kafka_type")
        if nested is not None:
            data[f.name] = [sample(nested)] if many else sample(nested)
        elif typing.get_origin(hints[f.name]) is tuple or (kt and "tuple" in str(hints[f.name])):
            data[f.name] = [_value(kt, f.name)]
        elif kt is not None:
            data[f.name] = _value(kt, f.name)
    return build(cls, data)


def sample_frames() -> Iterator[Tuple[int, int, bytes]]:
    """(api key, version, request frame without its size prefix) for every supported
    API version."""
    for key, spec in sorted(SUPPORTED.items()):
        for v in range(spec.min_version, spec.max_version + 1):
            req = sample(request_class(key, v))
            frame = encode_request(key, v, 1000 + key, "fuzz", req)
            yield key, v, frame[4:]

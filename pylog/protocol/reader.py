"""A bounds-checked reader of Kafka messages, driven by kio's schemas.

kio's native reader preallocates an array from its length prefix before checking
that the bytes can hold it, so one hostile request (an array length of 2**32 - 2)
makes it ask for hundreds of GB and abort the whole process — found by pylog's
request fuzzer.  pylog therefore reads untrusted bytes with this reader instead: the
message *schemas* are still kio's (the dataclasses generated from Kafka's JSON
definitions, with each field's Kafka type, version, nullability and tag); only the
byte-level reading is here, and every length is checked against the bytes left
before anything is allocated.

Each kio class is compiled once into a list of field readers.  Values come out as
kio's own reader gives them (str, bytes, ints, ErrorCode, timedelta, datetime, UUID,
tuples, nested dataclasses), except that ``records`` fields are zero-copy
memoryviews of the input.  Anything that does not parse raises
:class:`~pylog.errors.InvalidRequest` naming the message, the field and the position.
"""
from __future__ import annotations

import dataclasses
import datetime
import struct
import types
import typing
import uuid
from functools import lru_cache
from typing import Any, Callable, Dict, List, Optional, Tuple

from kio.schema.errors import ErrorCode

from pylog.errors import InvalidRequest

__all__ = ["entity_decoder", "read_uvarint", "ShortMessage"]

Reader = Callable[[memoryview, int], Tuple[Any, int]]

_I8 = struct.Struct(">b")
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_F64 = struct.Struct(">d")
_EPOCH = datetime.datetime.fromtimestamp(0, datetime.timezone.utc)


class ShortMessage(Exception):
    """The message ended early (turned into InvalidRequest with context by the caller)."""


_Short = ShortMessage


def _fixed(s: struct.Struct) -> Reader:
    size = s.size
    unpack = s.unpack_from

    def read(buf: memoryview, pos: int) -> Tuple[Any, int]:
        if pos + size > len(buf):
            raise _Short()
        return unpack(buf, pos)[0], pos + size

    return read


def read_uvarint(buf: Any, pos: int) -> Tuple[int, int]:
    """An unsigned varint (at most 5 bytes) at ``pos``: (value, position after it).
    Raises ShortMessage at the end of ``buf``, InvalidRequest past 5 bytes."""
    value = shift = 0
    end = len(buf)
    for _ in range(5):
        if pos >= end:
            raise _Short()
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
    raise InvalidRequest(f"varint longer than 5 bytes at byte {pos}")


def _bool(buf: memoryview, pos: int) -> Tuple[bool, int]:
    if pos >= len(buf):
        raise _Short()
    return buf[pos] != 0, pos + 1


def _uuid(buf: memoryview, pos: int) -> Tuple[Optional[uuid.UUID], int]:
    if pos + 16 > len(buf):
        raise _Short()
    raw = bytes(buf[pos:pos + 16])
    return (None if raw == bytes(16) else uuid.UUID(bytes=raw)), pos + 16


def _length(flexible: bool) -> Reader:
    """Length of a string/bytes/array: -1 (null) or the count."""
    if flexible:
        def read(buf: memoryview, pos: int) -> Tuple[int, int]:
            n, pos = read_uvarint(buf, pos)
            return n - 1, pos
        return read
    return _fixed(_I32)


def _string(flexible: bool, nullable: bool, field: str) -> Reader:
    if not flexible:
        def read_len(buf: memoryview, pos: int) -> Tuple[int, int]:
            if pos + 2 > len(buf):
                raise _Short()
            return _I16.unpack_from(buf, pos)[0], pos + 2
    else:
        read_len = _length(True)

    def read(buf: memoryview, pos: int) -> Tuple[Optional[str], int]:
        n, pos = read_len(buf, pos)
        if n < 0:
            if n == -1 and nullable:
                return None, pos
            raise InvalidRequest(f"{field}: string length {n}")
        if pos + n > len(buf):
            raise _Short()
        try:
            return str(buf[pos:pos + n], "utf-8"), pos + n
        except UnicodeDecodeError:
            raise InvalidRequest(f"{field}: not valid UTF-8") from None

    return read


def _bytes(flexible: bool, nullable: bool, field: str, view: bool) -> Reader:
    read_len = _length(flexible)

    def read(buf: memoryview, pos: int) -> Tuple[Any, int]:
        n, pos = read_len(buf, pos)
        if n < 0:
            if n == -1 and nullable:
                return None, pos
            raise InvalidRequest(f"{field}: length {n}")
        if pos + n > len(buf):
            raise _Short()
        chunk = buf[pos:pos + n]
        return (chunk if view else bytes(chunk)), pos + n

    return read


def _converted(reader: Reader, convert: Callable[[Any], Any]) -> Reader:
    def read(buf: memoryview, pos: int) -> Tuple[Any, int]:
        v, pos = reader(buf, pos)
        return convert(v), pos
    return read


def _error_code(v: int) -> Any:
    try:
        return ErrorCode(v)
    except ValueError:
        raise InvalidRequest(f"unknown error code {v}") from None


def _delta(v: int) -> datetime.timedelta:
    try:
        return datetime.timedelta(milliseconds=v)
    except OverflowError:
        raise InvalidRequest(f"duration {v} ms out of range") from None


def _datetime(v: int) -> Optional[datetime.datetime]:
    if v < 0:
        return None
    try:
        return _EPOCH + datetime.timedelta(milliseconds=v)
    except (OverflowError, ValueError):
        raise InvalidRequest(f"timestamp {v} out of range") from None


def _primitive(kafka_type: str, flexible: bool, nullable: bool, field: str) -> Tuple[Reader, int]:
    """(reader, smallest encoded size) of a primitive Kafka type."""
    fixed = {"int8": (_I8, 1), "int16": (_I16, 2), "int32": (_I32, 4), "int64": (_I64, 8),
             "uint16": (_U16, 2), "uint32": (_U32, 4), "uint64": (_U64, 8), "float64": (_F64, 8)}
    if kafka_type in fixed:
        s, n = fixed[kafka_type]
        return _fixed(s), n
    if kafka_type == "uint8":
        return _fixed(struct.Struct(">B")), 1
    if kafka_type == "bool":
        return _bool, 1
    if kafka_type == "uuid":
        return _uuid, 16
    if kafka_type == "string":
        return _string(flexible, nullable, field), 1
    if kafka_type in ("bytes", "records"):
        return _bytes(flexible, nullable, field, kafka_type == "records"), 1
    if kafka_type == "error_code":
        return _converted(_fixed(_I16), _error_code), 2
    if kafka_type == "timedelta_i32":
        return _converted(_fixed(_I32), _delta), 4
    if kafka_type == "timedelta_i64":
        return _converted(_fixed(_I64), _delta), 8
    if kafka_type == "datetime_i64":
        return _converted(_fixed(_I64), _datetime), 8
    raise TypeError(f"{field}: no reader for Kafka type {kafka_type!r}")


def _array(item: Reader, min_item: int, flexible: bool, nullable: bool, field: str) -> Reader:
    read_len = _length(flexible)

    def read(buf: memoryview, pos: int) -> Tuple[Optional[tuple], int]:
        n, pos = read_len(buf, pos)
        if n < 0:
            if n == -1 and nullable:
                return None, pos
            raise InvalidRequest(f"{field}: array length {n}")
        if n * min_item > len(buf) - pos:  # checked before anything is allocated
            raise InvalidRequest(f"{field}: array of {n} items cannot fit in the {len(buf) - pos} bytes left")
        out = []
        append = out.append
        for _ in range(n):
            v, pos = item(buf, pos)
            append(v)
        return tuple(out), pos

    return read


def _union_args(tp: Any) -> Tuple[Any, bool]:
    """(the type without None, whether None was allowed)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        nullable = len(args) != len(typing.get_args(tp))
        return (args[0] if len(args) == 1 else typing.Union[tuple(args)]), nullable
    return tp, False


@lru_cache(maxsize=None)
def entity_decoder(cls: type) -> Reader:
    """A reader of kio dataclass ``cls`` from a buffer at a position."""
    flexible = bool(cls.__flexible__)
    hints = typing.get_type_hints(cls)
    regular: List[Tuple[str, Reader]] = []
    tagged: Dict[int, Tuple[str, Reader]] = {}
    for f in dataclasses.fields(cls):
        tag = f.metadata.get("tag")
        reader, _ = _field_reader(f, hints[f.name], flexible, tag is not None, f"{cls.__name__}.{f.name}")
        if tag is None:
            regular.append((f.name, reader))
        else:
            tagged[tag] = (f.name, reader)
    name = cls.__name__

    def read(buf: memoryview, pos: int) -> Tuple[Any, int]:
        values: Dict[str, Any] = {}
        for fname, reader in regular:
            try:
                values[fname], pos = reader(buf, pos)
            except _Short:
                raise InvalidRequest(f"{name}.{fname}: the message ends at byte {len(buf)}") from None
        if flexible:
            try:
                count, pos = read_uvarint(buf, pos)
                for _ in range(count):
                    tag, pos = read_uvarint(buf, pos)
                    size, pos = read_uvarint(buf, pos)
                    end = pos + size
                    if end > len(buf):
                        raise _Short()
                    known = tagged.get(tag)
                    if known is not None:
                        v, after = known[1](buf[:end], pos)
                        if after != end:
                            raise InvalidRequest(f"{name}: tagged field {tag} has {end - after} stray bytes")
                        values[known[0]] = v
                    pos = end
            except _Short:
                raise InvalidRequest(f"{name}: tagged fields run past the end of the message") from None
        try:
            return cls(**values), pos
        except (TypeError, ValueError) as exc:
            raise InvalidRequest(f"{name}: {exc}") from None

    return read


def _field_reader(f: dataclasses.Field, hint: Any, flexible: bool, is_tag: bool,
                  where: str) -> Tuple[Reader, int]:
    inner, nullable = _union_args(hint)
    if is_tag:
        nullable = nullable or f.default is None
    kafka_type = f.metadata.get("kafka_type")
    origin = typing.get_origin(inner)
    if origin is tuple:
        (item_tp, _ellipsis) = typing.get_args(inner)
        item_tp, _ = _union_args(item_tp)
        if dataclasses.is_dataclass(item_tp):
            item, min_item = entity_decoder(item_tp), 1
        else:
            item, min_item = _primitive(kafka_type, flexible, False, where)
        return _array(item, min_item, flexible, nullable, where), 1
    if dataclasses.is_dataclass(inner):
        dec = entity_decoder(inner)
        if not nullable or is_tag:
            return dec, 1

        def read_nullable(buf: memoryview, pos: int) -> Tuple[Any, int]:
            if pos >= len(buf):
                raise _Short()
            marker = _I8.unpack_from(buf, pos)[0]
            if marker == -1:
                return None, pos + 1
            if marker != 1:
                raise InvalidRequest(f"{where}: bad nullable-struct marker {marker}")
            return dec(buf, pos + 1)

        return read_nullable, 1
    return _primitive(kafka_type, flexible, nullable, where)


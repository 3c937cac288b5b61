"""Kafka request/response framing and headers; schemas through kio.

A message on the wire is an int32 size followed by that many bytes: a header, then
the body.  Request header v1 is (api_key int16, api_version int16, correlation_id
int32, client_id nullable int16-length string); v2 (flexible versions) appends tagged
fields.  Response header v0 is the correlation id; v1 appends tagged fields.  Which
header an API version uses is :mod:`pylog.protocol.apis`' business.

This module knows bytes, not brokers.  Decoding raises :class:`~pylog.errors.InvalidRequest`
for anything that does not parse (the server closes the connection, as Kafka does) and
:class:`UnsupportedRequest` for an API or version outside
:data:`~pylog.protocol.apis.SUPPORTED` (it carries the parsed header, so the server can
answer an ApiVersions request it does not speak with Kafka's v0 UNSUPPORTED_VERSION
answer).  Bodies are read by :mod:`pylog.protocol.reader` (bounds-checked, driven by
kio's schemas; kio's own native reader can be made to abort the process) and written
by kio's writer; the Fetch response, the hot path, is written by
:mod:`pylog.protocol.fetch` instead.
"""
from __future__ import annotations

import dataclasses
import datetime
import io
import struct
import types
import typing
import uuid
from functools import lru_cache
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Type

from kio.schema.errors import ErrorCode
from kio.serial import entity_writer

from pylog.errors import InvalidRequest, UnsupportedVersion
from pylog.protocol.apis import (SUPPORTED, is_flexible, request_class, request_header_version,
                                 response_class, response_header_version)
from pylog.protocol.reader import ShortMessage, entity_decoder
from pylog.protocol.reader import read_uvarint as reader_uvarint

__all__ = ["RequestHeader", "UnsupportedRequest", "parse_request_header", "decode_request",
           "encode_response", "encode_request", "decode_response", "build", "MAX_FRAME_BYTES",
           "read_uvarint", "write_uvarint"]

#: Largest frame pylog accepts or sends at all (Kafka's frames are int32-sized).
MAX_FRAME_BYTES = 0x7FFFFFFF

_I16 = struct.Struct(">h")
_HDR = struct.Struct(">hhi")  # api key, api version, correlation id
_I32 = struct.Struct(">i")



@dataclasses.dataclass(frozen=True, slots=True)
class RequestHeader:
    api_key: int
    api_version: int
    correlation_id: int
    client_id: Optional[str]
    header_version: int  #: 1 or 2 (0 only when the API is unknown)


class UnsupportedRequest(UnsupportedVersion):
    """An API key pylog does not implement, or a version outside its range."""

    def __init__(self, message: str, header: RequestHeader) -> None:
        super().__init__(message)
        self.header = header


# ----------------------------------------------------------------------- varints
def read_uvarint(buf: Any, pos: int) -> Tuple[int, int]:
    """An unsigned varint at ``pos``: (value, position after it).  InvalidRequest if it
    runs past the buffer or past 5 bytes (the protocol's varints are 32-bit)."""
    try:
        return reader_uvarint(buf, pos)
    except ShortMessage:
        raise InvalidRequest("varint runs past the end of the message") from None


def write_uvarint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _skip_tagged_fields(buf: Any, pos: int) -> int:
    count, pos = read_uvarint(buf, pos)
    for _ in range(count):
        _tag, pos = read_uvarint(buf, pos)
        size, pos = read_uvarint(buf, pos)
        pos += size
        if pos > len(buf):
            raise InvalidRequest("tagged field runs past the end of the message")
    return pos


def _view(frame: Any) -> memoryview:
    view = memoryview(frame)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


# ----------------------------------------------------------------------- requests
def parse_request_header(frame: Any) -> Tuple[RequestHeader, int]:
    """The header of a request frame (without its size prefix): (header, body offset).

    Raises InvalidRequest when it does not parse, and UnsupportedRequest (carrying the
    header) for an API or version pylog does not implement."""
    if len(frame) < 8:
        raise InvalidRequest(f"request of {len(frame)} bytes is shorter than a request header")
    api_key, version, correlation_id = _HDR.unpack_from(frame, 0)
    spec = SUPPORTED.get(api_key)
    (n,) = _I16.unpack_from(frame, 8) if len(frame) >= 10 else (None,)
    if n is None:
        raise InvalidRequest("request header ends before its client id")
    pos = 10
    client_id: Optional[str] = None
    if n >= 0:
        if pos + n > len(frame):
            raise InvalidRequest(f"client id of {n} bytes runs past the end of the request")
        try:
            client_id = bytes(frame[pos:pos + n]).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidRequest("client id is not valid UTF-8") from None
        pos += n
    elif n != -1:
        raise InvalidRequest(f"client id has a negative length {n}")
    if spec is None:
        raise UnsupportedRequest(f"unknown API key {api_key}",
                                 RequestHeader(api_key, version, correlation_id, client_id, 1))
    hv = request_header_version(api_key, spec.max_version if version > spec.max_version else
                                max(version, spec.min_version))
    header = RequestHeader(api_key, version, correlation_id, client_id, hv)
    if not spec.min_version <= version <= spec.max_version:
        raise UnsupportedRequest(f"{spec.name} v{version} is not supported (pylog implements "
                                 f"v{spec.min_version}-v{spec.max_version})", header)
    if hv == 2:
        pos = _skip_tagged_fields(frame, pos)
    return header, pos


@lru_cache(maxsize=None)
def _writer(cls: Type) -> Callable[[Any, Any], None]:
    return entity_writer(cls)


def decode_request(frame: Any) -> Tuple[RequestHeader, Any]:
    """Header and kio request object of a whole request frame (without the size).

    Raises InvalidRequest (naming the API and what failed) or UnsupportedRequest."""
    header, pos = parse_request_header(frame)
    cls = request_class(header.api_key, header.api_version)
    try:
        request, _end = entity_decoder(cls)(_view(frame), pos)
    except InvalidRequest as exc:
        raise InvalidRequest(f"{cls.__name__} v{header.api_version} does not parse: {exc}") from None
    # Bytes after the last field are ignored, as Kafka's parser ignores them (some
    # clients send a field of a neighbouring version there).
    return header, request


def encode_request(api_key: int, version: int, correlation_id: int, client_id: Optional[str],
                   request: Any) -> bytes:
    """A whole request frame, size prefix included (for clients)."""
    buf = io.BytesIO()
    buf.write(b"\0\0\0\0")
    buf.write(_HDR.pack(api_key, version, correlation_id))
    if client_id is None:
        buf.write(_I16.pack(-1))
    else:
        raw = client_id.encode("utf-8")
        buf.write(_I16.pack(len(raw)))
        buf.write(raw)
    if request_header_version(api_key, version) == 2:
        buf.write(b"\0")  # no tagged fields
    _writer(type(request))(buf, request)
    data = buf.getbuffer()
    _I32.pack_into(data, 0, len(data) - 4)
    del data
    return buf.getvalue()


# ----------------------------------------------------------------------- responses
def response_header_bytes(header: RequestHeader, body_size: int) -> bytes:
    """Size prefix and response header for a body of ``body_size`` bytes."""
    if response_header_version(header.api_key, header.api_version) == 1:
        return struct.pack(">iib", body_size + 5, header.correlation_id, 0)
    return struct.pack(">ii", body_size + 4, header.correlation_id)


def encode_response(header: RequestHeader, response: Any) -> bytes:
    """A whole response frame, size prefix included, for the request ``header``."""
    buf = io.BytesIO()
    flexible_header = response_header_version(header.api_key, header.api_version) == 1
    buf.write(struct.pack(">ii", 0, header.correlation_id))
    if flexible_header:
        buf.write(b"\0")
    _writer(type(response))(buf, response)
    data = buf.getbuffer()
    _I32.pack_into(data, 0, len(data) - 4)
    del data
    return buf.getvalue()


def decode_response(api_key: int, version: int, frame: Any) -> Tuple[int, Any]:
    """(correlation id, kio response object) of a response frame without its size."""
    if len(frame) < 4:
        raise InvalidRequest("response shorter than its correlation id")
    (correlation_id,) = _I32.unpack_from(frame, 0)
    pos = 4
    if response_header_version(api_key, version) == 1:
        pos = _skip_tagged_fields(frame, pos)
    cls = response_class(api_key, version)
    try:
        response, _end = entity_decoder(cls)(_view(frame), pos)
    except InvalidRequest as exc:
        raise InvalidRequest(f"{cls.__name__} v{version} does not parse: {exc}") from None
    return correlation_id, response


# ----------------------------------------------------------------------- building
_MISSING = dataclasses.MISSING


def _entity_of(tp: Any) -> Tuple[Optional[type], bool]:
    """(nested dataclass, is a tuple of them) of a kio field type."""
    if dataclasses.is_dataclass(tp):
        return tp, False
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is tuple and args and dataclasses.is_dataclass(args[0]):
        return args[0], True
    if origin in (typing.Union, types.UnionType):
        for a in args:
            inner, many = _entity_of(a)
            if inner is not None:
                return inner, many
    return None, False


def _ms_delta(v: Any) -> Any:
    return datetime.timedelta(milliseconds=v) if isinstance(v, int) else v


def _ms_datetime(v: Any) -> Any:
    if isinstance(v, int):
        return None if v < 0 else datetime.datetime.fromtimestamp(v / 1000, datetime.timezone.utc)
    return v


def _uuid(v: Any) -> Any:
    if isinstance(v, str):
        return uuid.UUID(hex=v)
    return v


_CONVERT: Dict[str, Callable[[Any], Any]] = {
    "error_code": lambda v: ErrorCode(v) if isinstance(v, int) else v,
    "timedelta_i32": _ms_delta,
    "timedelta_i64": _ms_delta,
    "datetime_i64": _ms_datetime,
    "uuid": _uuid,
}


@lru_cache(maxsize=None)
def _plan(cls: Type) -> Dict[str, Tuple[Optional[Callable[[Any], Any]], Optional[type], bool]]:
    plan = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints.get(f.name, f.type)
        nested, many = _entity_of(hint)
        kafka_type = f.metadata.get("kafka_type", "")
        conv = _CONVERT.get(kafka_type)
        if kafka_type == "string" and type(None) not in typing.get_args(hint) and typing.get_origin(hint) is not tuple:
            conv = _not_null_string  # Kafka's rule: versions without null get ""
        plan[f.name] = (conv, nested, many)
    return plan


def _not_null_string(v: Any) -> Any:
    return "" if v is None else v


def build(cls: Type, data: Mapping[str, Any]) -> Any:
    """A kio object of ``cls`` from a plain mapping, nested mappings and lists included.

    Keys the version has no field for are dropped (so one mapping serves every version
    of a message); fields left out take their schema default.  Error codes may be ints,
    durations and timestamps ms (a negative timestamp is null), topic ids hex strings."""
    plan = _plan(cls)
    kwargs = {}
    for name, value in data.items():
        p = plan.get(name)
        if p is None:
            continue
        conv, nested, many = p
        if nested is not None and value is not None:
            if many:
                value = tuple(v if dataclasses.is_dataclass(v) else build(nested, v) for v in value)
            elif not dataclasses.is_dataclass(value):
                value = build(nested, value)
        elif conv is not None:
            value = conv(value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


def build_response(header: RequestHeader, data: Mapping[str, Any]) -> Any:
    """:func:`build` of the response class of the request ``header``."""
    return build(response_class(header.api_key, header.api_version), data)


def build_request(api_key: int, version: int, data: Mapping[str, Any]) -> Any:
    return build(request_class(api_key, version), data)


def flexible(header: RequestHeader) -> bool:
    return is_flexible(header.api_key, header.api_version)

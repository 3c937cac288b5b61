"""Reading Kafka's fixed-width protocol fields (big-endian ints, int16-length strings,
int32-length bytes) from untrusted bytes.

Every read is bounds-checked: a short or malformed input raises
:class:`~pylog.errors.CorruptRecordError` naming what was being read and where.  Used
by the group protocol (``__consumer_offsets`` records, ConsumerProtocol) and, later,
the network server.
"""
from __future__ import annotations

import struct
from typing import Optional

from pylog.errors import CorruptRecordError, InvalidArgument

__all__ = ["WireReader", "I16", "I32", "I64"]

I16 = struct.Struct(">h")
I32 = struct.Struct(">i")
I64 = struct.Struct(">q")


class WireReader:
    """A cursor over ``data``; ``what`` names the structure in error messages."""

    __slots__ = ("data", "pos", "what")

    def __init__(self, data: bytes, what: str) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InvalidArgument(f"{what} must be bytes, got {type(data).__name__}")
        self.data = bytes(data)
        self.pos = 0
        self.what = what

    def take(self, n: int, field: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise CorruptRecordError(
                f"{self.what}: truncated at byte {self.pos} reading {field} ({n} bytes needed, "
                f"{len(self.data) - self.pos} left)")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def i16(self, field: str) -> int:
        return I16.unpack(self.take(2, field))[0]

    def i32(self, field: str) -> int:
        return I32.unpack(self.take(4, field))[0]

    def i64(self, field: str) -> int:
        return I64.unpack(self.take(8, field))[0]

    def count(self, field: str, min_item_bytes: int) -> int:
        """An int32 array length, refused if the rest cannot hold that many items."""
        n = self.i32(field + " count")
        if n < 0 or n * min_item_bytes > len(self.data) - self.pos:
            raise CorruptRecordError(f"{self.what}: bad {field} count {n}")
        return n

    def string(self, field: str, nullable: bool = False) -> Optional[str]:
        n = self.i16(field + " length")
        if n == -1 and nullable:
            return None
        if n < 0:
            kind = "is null" if n == -1 else "has a negative length"
            raise CorruptRecordError(f"{self.what}: {field} {kind} (length {n})")
        try:
            return self.take(n, field).decode("utf-8")
        except UnicodeDecodeError as e:
            raise CorruptRecordError(f"{self.what}: {field} is not UTF-8: {e}") from None

    def nbytes(self, field: str) -> Optional[bytes]:
        n = self.i32(field + " length")
        if n == -1:
            return None
        if n < 0:
            raise CorruptRecordError(f"{self.what}: {field} has length {n}")
        return self.take(n, field)

    def end(self) -> None:
        """Refuse trailing bytes."""
        if self.pos != len(self.data):
            raise CorruptRecordError(
                f"{self.what}: {len(self.data) - self.pos} trailing bytes after the last field")

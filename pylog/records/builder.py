"""BatchBuilder: an open record batch filled one record at a time in C.

The producer's record path (issue 11 point 2): each record is encoded into the open
batch's buffer by one C call (``pl_builder_add`` / ``pl_builder_append``: varints,
key and value copied, headers), so no Python object per record is kept; the 61-byte
header and the CRC32C are written once, by :meth:`BatchBuilder.seal`.  The bytes are
those :func:`~pylog.records.build_batch` gives for the same records (the first
record's timestamp is the batch's baseTimestamp, offset deltas 0, 1, ...).

The buffer is C memory owned by the builder (cffi allocation); it grows by doubling
when a record does not fit.  The producer's hot path does not come through here: its
:class:`SendPath` (csrc/pysend.c) encodes records into the builder at
:attr:`BatchBuilder.address` itself, and falls back to :meth:`BatchBuilder.append`
(which grows the buffer) when a record does not fit.
"""
from __future__ import annotations

from typing import Any, Optional

from pylog._native import check, ffi, lib
from pylog._native._records import SendPath, setup_send
from pylog.errors import InvalidArgument
from pylog.records.compression import compress

__all__ = ["BatchBuilder", "BuilderOps", "SendPath", "setup_send", "NULL", "E_NOSPACE"]

NULL = ffi.NULL
E_NOSPACE = lib.PL_E_NOSPACE
_HEADER = lib.PL_BATCH_HEADER_BYTES
#: Buffers are not zeroed: the builder writes every byte it hands out (the header and
#: the records, [0, used)) and reads none it did not write; zeroing a batch.size buffer
#: per batch was the producer's largest cost after the records themselves.
_new_uninitialized = ffi.new_allocator(should_clear_after_alloc=False)
_INT32_MAX = 0x7FFFFFFF


def _len_of(data: Optional[bytes], what: str) -> int:
    if data is None:
        return -1
    if type(data) is not bytes:
        raise InvalidArgument(f"{what} must be bytes or None, got {type(data).__name__}")
    if len(data) > _INT32_MAX:
        raise InvalidArgument(f"{what} of {len(data)} bytes is over 2^31 - 1")
    return len(data)


class BuilderOps:
    """What a :class:`BatchBuilder` does, on the ``cdata`` (the pl_batch_builder) and
    ``_buf`` (its buffer) slots of the class that mixes it in.

    A mixin, so that an object that is more than a builder -- the producer's open
    batch -- is one object, not two: the producer keeps up to buffer.memory of batches
    alive, and the garbage collector counts, promotes and walks each object they hold."""

    __slots__ = ()
    cdata: Any
    _buf: Any

    def _init_builder(self, capacity_bytes: int, create_time_ms: int) -> None:
        """``capacity_bytes`` of records to start with (it grows); ``create_time_ms``
        the timestamp of records appended without one."""
        cap = _HEADER + max(int(capacity_bytes), 16)
        self._buf = _new_uninitialized("uint8_t[]", cap)
        # What pl_builder_init does, written here: cffi releases the GIL around every
        # C call, and for a call this short that only hands the GIL to the sender
        # thread, which send() must then wait to get back (measured: the largest cost
        # of opening a batch while the sender is busy).
        cd = self.cdata = ffi.new("pl_batch_builder *")
        if not isinstance(create_time_ms, int):
            raise TypeError(f"create_time_ms must be an int, got {type(create_time_ms).__name__}")
        cd.buf = self._buf
        cd.cap = cap
        cd.used = _HEADER
        cd.count = 0
        cd.base_timestamp = cd.max_timestamp = lib.PL_NO_TIMESTAMP
        cd.create_time = create_time_ms

    def __len__(self) -> int:
        return self.cdata.count

    @property
    def address(self) -> int:
        """The pl_batch_builder's address, for :class:`SendPath` (valid while this
        builder lives; the struct never moves, its buffer may)."""
        return int(ffi.cast("uintptr_t", self.cdata))

    @property
    def size_bytes(self) -> int:
        """The batch's size so far, header included."""
        return int(self.cdata.used)

    @property
    def create_time(self) -> int:
        return int(self.cdata.create_time)

    def append(self, value: Optional[bytes], key: Optional[bytes] = None, headers: Optional[bytes] = None,
               timestamp: Optional[int] = None) -> int:
        """Append one record; ``headers`` is its encoded header section
        (:func:`~pylog.records.encode_headers`), ``timestamp`` ms (default the
        create time).  Returns the record's index.  Raises InvalidArgument,
        CorruptRecordError (a malformed header section), RecordTooLarge."""
        vlen = _len_of(value, "a value")
        klen = _len_of(key, "a key")
        hlen = 0 if headers is None else _len_of(headers, "a header section")
        ts = self.cdata.create_time if timestamp is None else timestamp
        while True:
            i = lib.pl_builder_append(self.cdata, ts, NULL if key is None else key, klen,
                                      NULL if value is None else value, vlen,
                                      NULL if headers is None else headers, hlen)
            if i != E_NOSPACE:
                return check(i, "appending a record to a batch")
            self._grow(klen + vlen + hlen + 64)

    def _grow(self, at_least: int) -> None:
        b = self.cdata
        cap = max(2 * int(b.cap), int(b.used) + at_least)
        buf = _new_uninitialized("uint8_t[]", cap)
        check(lib.pl_builder_grow(b, buf, cap), "growing a record batch")
        self._buf = buf

    def seal(self, producer_id: int = -1, producer_epoch: int = -1, base_sequence: int = -1,
             codec: int = 0) -> Any:
        """The batch's bytes (baseOffset 0): header and CRC32C written now; with a
        codec the records section is compressed as one block.  May be called again.

        Uncompressed, the bytes are a read-only view of the builder's own buffer (a
        memoryview, no copy: a copy of a 1 MiB batch into fresh memory costs more in
        page faults than building it); nothing may append to the builder while the
        view is in use, and the view keeps the buffer alive."""
        n = check(lib.pl_builder_seal(self.cdata, producer_id, producer_epoch, base_sequence),
                  "sealing a record batch")
        if not codec:
            return memoryview(ffi.buffer(self._buf, n)).toreadonly()
        packed = compress(codec, ffi.buffer(self._buf + _HEADER, n - _HEADER)[:])
        info = ffi.new("pl_batch_info *")
        check(lib.pl_batch_parse_header(self._buf, n, info), "reading a sealed header")
        info.attributes = (info.attributes & ~lib.PL_ATTR_COMPRESSION_MASK) | codec
        out = ffi.new("uint8_t[]", _HEADER + len(packed))
        ffi.memmove(out + _HEADER, packed, len(packed))
        total = check(lib.pl_batch_seal(out, len(out), len(packed), info), "sealing a compressed batch")
        return ffi.buffer(out, total)[:]

    def close(self) -> None:
        """Give the buffer up now, not when the builder goes: ``len()`` stays, and every
        later append or seal fails with InvalidArgument."""
        cd = self.cdata
        cd.buf = NULL
        cd.cap = 0
        cd.used = 0
        self._buf = None

    def slice(self, lo: int, hi: int) -> "BatchBuilder":
        """A new open batch holding records [lo, hi) of this one, renumbered."""
        part = BatchBuilder(self._records_bytes(), int(self.cdata.create_time))
        self.copy_records(part, lo, hi)
        return part

    def _records_bytes(self) -> int:
        return max(int(self.cdata.used) - _HEADER, 0)

    def copy_records(self, part: "BuilderOps", lo: int, hi: int) -> None:
        """Append records [lo, hi) of this batch to the empty builder ``part``
        (made with room for :meth:`slice`'s sake: this batch's record bytes)."""
        b = self.cdata
        if self._buf is None:
            raise InvalidArgument("records of a closed batch")
        if not 0 <= lo <= hi <= b.count:
            raise InvalidArgument(f"records [{lo}, {hi}) of a batch of {b.count}")
        check(lib.pl_builder_append_records(part.cdata, self._buf + _HEADER, int(b.used) - _HEADER, b.count,
                                            b.base_timestamp, lo, hi), "splitting a record batch")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.cdata.count} records, {self.cdata.used} bytes)"


class BatchBuilder(BuilderOps):
    """An open batch: records appended in C, sealed into one v2 batch."""

    __slots__ = ("cdata", "_buf")

    def __init__(self, capacity_bytes: int, create_time_ms: int) -> None:
        """``capacity_bytes`` of records to start with (it grows); ``create_time_ms``
        the timestamp of records appended without one."""
        self._init_builder(capacity_bytes, create_time_ms)

"""Kafka v2 record batches from Python: build, validate, view, decode.

Every function crosses into C once per call (or once per batch), never once per
record: values are joined into one buffer with a lengths array before the C build,
decoding to columns fills numpy arrays (:func:`decode_records`), and decoding to
Record objects (:func:`record_list`, :func:`iter_records`) builds them in C, in the
small CPython extension pylog._native._records (csrc/pyrecords.c says why).
"""
from __future__ import annotations

import struct
from array import array
from typing import Any, Callable, Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from pylog._native import _records as _crecords
from pylog._native import check, ffi, lib
from pylog.errors import (
    CorruptRecordError,
    InvalidArgument,
    InvalidTimestamp,
    RecordTooLarge,
    UnsupportedCompressionType,
)
from pylog.records.compression import (
    CODEC_NAMES,
    codec_id,
    compress,
    decompress,
    decompress_into,
    decompressed_size,
)
from pylog.util import now_ms as _now_ms

__all__ = [
    "BATCH_HEADER",
    "Record",
    "RecordBatch",
    "PreparedBatch",
    "RecordArrays",
    "build_batch",
    "prepare_batch",
    "validate_batches",
    "restamp_producer",
    "check_crcs",
    "iter_batches",
    "decode_records",
    "iter_records",
    "record_list",
    "lazy_records",
    "encode_headers",
    "join_views",
]

Header = Tuple[str, Optional[bytes]]
_HEADER = struct.Struct(">qiiBIhiqqqhii")  # the 61-byte batch header
#: The 61-byte v2 batch header, big-endian: (baseOffset, batchLength,
#: partitionLeaderEpoch, magic, crc, attributes, lastOffsetDelta, baseTimestamp,
#: maxTimestamp, producerId, producerEpoch, baseSequence, recordCount).
BATCH_HEADER = _HEADER
_NO_HEADERS: Tuple[Header, ...] = ()
_MAX_FIELD = 0x7FFFFFEF
_join_fields = _crecords.join_fields
_gather_fields = _crecords.gather_fields
_MIN_TS = -1


class Record(NamedTuple):
    """One record as read from a log.  Immutable."""

    offset: int
    timestamp: int  #: ms since the epoch (CreateTime or LogAppendTime)
    key: Optional[bytes]
    value: Optional[bytes]
    headers: Tuple[Header, ...] = ()


_new_record = tuple.__new__

#: True when pylog._native._records builds Records directly (the fast way); False
#: when this interpreter needs them made through tuple.__new__ (see csrc/pyrecords.c).
RECORDS_BUILT_DIRECTLY: bool = _crecords.setup(
    Record, CorruptRecordError, decompress,
    int(ffi.cast("uintptr_t", ffi.addressof(lib, "pl_segment_append_build"))),
    int(ffi.cast("uintptr_t", ffi.addressof(lib, "pl_segment_append_build_buffered"))))


def _bytes_like(x: Any) -> bool:
    return isinstance(x, (bytes, bytearray, memoryview))


# --------------------------------------------------------------------- headers
def _varint(v: int) -> bytes:
    z = (v << 1) ^ (v >> 63)
    z &= (1 << 64) - 1
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def encode_headers(headers: Sequence[Header]) -> bytes:
    """A record's header section: headerCount varint, then each (key, value)."""
    if not isinstance(headers, (list, tuple)):
        raise InvalidArgument(f"headers of a record must be a list of (str, bytes) pairs, got {headers!r}")
    parts = [_varint(len(headers))]
    for pair in headers:
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise InvalidArgument(f"a header must be a (str, bytes|None) pair, got {pair!r}")
        k, v = pair
        if not isinstance(k, str):
            raise InvalidArgument(f"a header key must be str, got {k!r}")
        try:
            kb = k.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidArgument(f"a header key must be encodable as UTF-8, got {k!r}") from None
        parts.append(_varint(len(kb)))
        parts.append(kb)
        if v is None:
            parts.append(_varint(-1))
        elif _bytes_like(v):
            parts.append(_varint(len(v)))
            parts.append(bytes(v))
        else:
            raise InvalidArgument(f"a header value must be bytes or None, got {type(v).__name__}")
    return b"".join(parts)


def _decode_headers(buf: bytes, pos: int, count: int) -> Tuple[Header, ...]:
    out = []
    val = ffi.new("int64_t *")
    for _ in range(count):
        n = lib.pl_varint_decode(ffi.from_buffer(buf[pos:pos + 10]), min(10, len(buf) - pos), val)
        check(n, "decoding a header key length")
        pos += n
        klen = int(val[0])
        key = buf[pos:pos + klen].decode("utf-8", "replace")
        pos += klen
        n = lib.pl_varint_decode(ffi.from_buffer(buf[pos:pos + 10]), min(10, len(buf) - pos), val)
        check(n, "decoding a header value length")
        pos += n
        vlen = int(val[0])
        if vlen < 0:
            out.append((key, None))
        else:
            out.append((key, buf[pos:pos + vlen]))
            pos += vlen
    return tuple(out)


# --------------------------------------------------------------------- building
class PreparedBatch:
    """A ``pl_batch_input`` ready for the C build calls, with the buffers it points to.

    ``cdata`` is valid as long as this object lives.
    """

    __slots__ = ("cdata", "count", "size_bound", "_keep", "_exact")

    def __init__(self, cdata: Any, count: int, size_bound: int, keep: tuple, exact: bool = True) -> None:
        self.cdata = cdata
        self.count = count
        self.size_bound = size_bound  #: >= the built batch's size
        self._keep = keep
        self._exact = exact

    def tighten(self) -> int:
        """Make ``size_bound`` the batch's exact size (one C walk over the records, when
        it was only an estimate from the longest key and value) and return it.  For a
        caller about to refuse the batch by its bound."""
        if not self._exact:
            bound = int(lib.pl_batch_size_bound(self.cdata))
            if bound == 0:
                raise RecordTooLarge(f"a batch of these {self.count} records would exceed the maximum batch size")
            self.size_bound = bound
            self._exact = True
        return self.size_bound


def record_overhead_bound(count: int, max_value: int, max_key: int, ts_range: int) -> int:
    """An upper bound of the bytes a record adds to a batch besides its key and value
    and header bytes (no headers: the header count's one byte is counted): length
    varint, attributes, timestamp and offset deltas, key and value length varints,
    for ``count`` records whose longest value and key (-1: all null) and timestamp
    spread (max - min, ms) are given."""
    body = (1 + _zz_size(ts_range) + _zz_size(count - 1) + _zz_size(max_key) + _zz_size(max_value) + 1)
    return body + _zz_size(body + max(max_key, 0) + max(max_value, 0))


def _zz_size(v: int) -> int:
    """Bytes of v's zigzag varint (one per started 7 bits, at least one)."""
    z = 2 * v if v >= 0 else -2 * v - 1
    return (z.bit_length() + 6) // 7 or 1


def _lengths(items: Sequence[Any], what: str) -> Tuple[bytes, Any, Any]:
    """(joined bytes, int32 lengths with -1 for None, cdata pointer)."""
    fast = _join_fields(items)  # a list of bytes/None: one walk in C (csrc/pyrecords.c)
    if fast is not None:
        joined, lens_bytes = fast
        return joined, lens_bytes, ffi.from_buffer("int32_t[]", lens_bytes)
    try:
        joined = b"".join(items)
        lens = array("i", map(len, items))
    except TypeError:
        joined_parts = []
        lens = array("i")
        for i, x in enumerate(items):
            if x is None:
                lens.append(-1)
            elif _bytes_like(x):
                if len(x) > _MAX_FIELD:
                    raise RecordTooLarge(f"{what}[{i}] is {len(x)} bytes, over the {_MAX_FIELD}-byte limit") from None
                lens.append(len(x))
                joined_parts.append(bytes(x))
            else:
                raise InvalidArgument(
                    f"{what}[{i}] must be bytes or None, got {type(x).__name__}") from None
        joined = b"".join(joined_parts)
    except OverflowError:
        raise RecordTooLarge(f"a {what} entry is over the {_MAX_FIELD}-byte limit") from None
    return joined, lens, ffi.from_buffer("int32_t[]", lens)


def _gathered(items: Sequence[Any]) -> Optional[Tuple[tuple, Any, Any, int, int]]:
    """(held items, pointers, lengths as cdata, total bytes, longest) of a list of
    bytes/None, the items left where they are (csrc/pyrecords.c, gather_fields); None
    for anything else."""
    g = _gather_fields(items)
    if g is None:
        return None
    held, ptrs, lens, total, longest = g
    return held, ffi.from_buffer("uint8_t *[]", ptrs), ffi.from_buffer("int32_t[]", lens), total, longest


def _set_field(cd: Any, field: str, items: Sequence[Any], what: str, keep: List[Any]) -> Optional[Tuple[int, int]]:
    """Point ``cd``'s values or keys (``field``) at ``items``: where they lie (gathered;
    returns their total bytes and the longest), else joined into one buffer (returns
    None)."""
    g = _gathered(items)
    if g is not None:
        keep.append(g)
        setattr(cd, field + "_ptrs", g[1])
        setattr(cd, field + "_lens", g[2])
        return g[3], g[4]
    joined, lens, lens_c = _lengths(items, what)
    data = ffi.from_buffer(joined)
    setattr(cd, field + "s", data)
    setattr(cd, field + "_lens", lens_c)
    keep += [joined, lens, lens_c, data]
    return None


def prepare_batch(
    values: Sequence[Optional[bytes]],
    keys: Optional[Sequence[Optional[bytes]]] = None,
    headers: Optional[Sequence[Sequence[Header]]] = None,
    timestamps: Optional[Sequence[int]] = None,
    base_timestamp: Optional[int] = None,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    partition_leader_epoch: int = -1,
    base_offset: int = 0,
) -> PreparedBatch:
    """Check the records and lay them out for one C build call.

    Raises InvalidArgument (types, lengths), RecordTooLarge, InvalidTimestamp.
    """
    if not isinstance(values, (list, tuple)):
        if isinstance(values, (bytes, str)) or not hasattr(values, "__len__"):
            raise InvalidArgument(f"values must be a list of bytes, got {type(values).__name__}")
        values = list(values)
    n = len(values)
    if n == 0:
        raise InvalidArgument("values is empty: a record batch needs at least one record")
    cd = ffi.new("pl_batch_input *")
    cd.count = n
    keep: List[Any] = []
    # Payload bytes and longest value and key, while every field is gathered in place
    # (then the size bound needs no C walk); None once one is joined instead.
    vsize = _set_field(cd, "value", values, "values", keep)
    sizes: Optional[List[int]] = None if vsize is None else [vsize[0], vsize[1], -1]
    if keys is not None:
        if not isinstance(keys, (list, tuple)) or len(keys) != n:
            raise InvalidArgument(f"keys must be a list as long as values ({n}), got {keys!r:.80}")
        if any(k is not None for k in keys):
            ksize = _set_field(cd, "key", keys, "keys", keep)
            if sizes is not None and ksize is not None:
                sizes[0] += ksize[0]
                sizes[2] = ksize[1]
            else:
                sizes = None
    if headers is not None:
        if not isinstance(headers, (list, tuple)) or len(headers) != n:
            raise InvalidArgument(f"headers must be a list as long as values ({n})")
        if any(headers):
            sizes = None
            enc = [encode_headers(h) if h else b"\x00" for h in headers]
            hjoined, hlens, hlens_c = _lengths(enc, "headers")
            cd.headers = ffi.from_buffer(hjoined)
            cd.header_lens = hlens_c
            keep += [hjoined, hlens, hlens_c, cd.headers]
    if timestamps is not None:
        if not isinstance(timestamps, (list, tuple)) or len(timestamps) != n:
            raise InvalidArgument(f"timestamps must be a list as long as values ({n})")
        try:
            ts = array("q", timestamps)
        except (TypeError, OverflowError):
            raise InvalidTimestamp("timestamps must be ints (ms since the epoch) in the int64 range") from None
        lo = min(ts)
        if lo < _MIN_TS:
            raise InvalidTimestamp(f"timestamp {lo} is negative; timestamps are ms since the epoch")
        ts_c = ffi.from_buffer("int64_t[]", ts)
        cd.timestamps = ts_c
        keep += [ts, ts_c]
        cd.base_timestamp = ts[0]
        ts_range = max(ts) - lo
    else:
        bt = _now_ms() if base_timestamp is None else base_timestamp
        if not isinstance(bt, int) or bt < _MIN_TS:
            raise InvalidTimestamp(f"base_timestamp must be an int >= -1, got {bt!r}")
        cd.base_timestamp = bt
        ts_range = 0
    cd.base_offset = base_offset
    cd.producer_id = producer_id
    cd.producer_epoch = producer_epoch
    cd.base_sequence = base_sequence
    cd.partition_leader_epoch = partition_leader_epoch
    cd.attributes = 0
    if sizes is not None and n <= lib.PL_MAX_RECORDS_PER_BATCH:
        # Every field was checked by gather_fields: the bound follows from the sizes.
        bound = _HEADER.size + n * record_overhead_bound(n, sizes[1], sizes[2], ts_range) + sizes[0]
        if bound <= lib.PL_MAX_BATCH_BYTES:
            return PreparedBatch(cd, n, bound, tuple(keep), exact=False)
    bound = lib.pl_batch_size_bound(cd)
    if bound == 0:
        raise RecordTooLarge(f"a batch of these {n} records would exceed the maximum batch size")
    return PreparedBatch(cd, n, int(bound), tuple(keep))


def build_batch(
    values: Sequence[Optional[bytes]],
    *,
    keys: Optional[Sequence[Optional[bytes]]] = None,
    headers: Optional[Sequence[Sequence[Header]]] = None,
    timestamps: Optional[Sequence[int]] = None,
    base_offset: int = 0,
    base_timestamp: Optional[int] = None,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    partition_leader_epoch: int = -1,
    compression: Union[str, int] = "none",
    timestamp_type: str = "CreateTime",
) -> bytes:
    """Encode records as one Kafka v2 record batch (bytes)."""
    codec = codec_id(compression)
    if timestamp_type not in ("CreateTime", "LogAppendTime"):
        raise InvalidArgument(f"timestamp_type must be 'CreateTime' or 'LogAppendTime', got {timestamp_type!r}")
    p = prepare_batch(values, keys, headers, timestamps, base_timestamp, producer_id, producer_epoch,
                      base_sequence, partition_leader_epoch, base_offset)
    if timestamp_type == "LogAppendTime":
        p.cdata.attributes |= lib.PL_ATTR_TIMESTAMP_TYPE
    if codec == 0:
        out = ffi.new("uint8_t[]", p.size_bound)
        n = check(lib.pl_batch_build(p.cdata, out, p.size_bound), "building record batch")
        return ffi.buffer(out, n)[:]
    rec = ffi.new("uint8_t[]", p.size_bound)
    n = check(lib.pl_records_encode(p.cdata, rec, p.size_bound), "encoding records")
    packed = compress(codec, ffi.buffer(rec, n)[:])
    plain = ffi.new("uint8_t[]", p.size_bound)
    check(lib.pl_batch_build(p.cdata, plain, p.size_bound), "building record batch")
    info = ffi.new("pl_batch_info *")
    check(lib.pl_batch_parse_header(plain, p.size_bound, info), "reading built header")
    info.attributes = (info.attributes & ~7) | codec
    out = ffi.new("uint8_t[]", lib.PL_BATCH_HEADER_BYTES + len(packed))
    ffi.memmove(out + lib.PL_BATCH_HEADER_BYTES, packed, len(packed))
    total = check(lib.pl_batch_seal(out, len(out), len(packed), info), "sealing compressed batch")
    return ffi.buffer(out, total)[:]


def restamp_producer(batch: Any, producer_id: int, producer_epoch: int, base_sequence: int) -> Any:
    """One built batch with other producer fields (producerId, producerEpoch,
    baseSequence) and the CRC computed again over what is returned: ``batch`` itself
    when it is writable (a writable buffer is changed in place), else a copy.  For a
    batch built before the sender knew its producer id and sequence numbers (what it
    costs is one CRC pass).  Raises CorruptRecordError if ``batch`` is not one whole
    batch."""
    view = memoryview(batch)
    if view.readonly:
        view = memoryview(bytearray(view))
    with ffi.from_buffer("uint8_t[]", view, require_writable=True) as buf:
        info = ffi.new("pl_batch_info *")
        check(lib.pl_batch_parse_header(buf, len(buf), info), "reading a built batch's header")
        rec_len = len(buf) - lib.PL_BATCH_HEADER_BYTES
        if lib.PL_BATCH_OVERHEAD_BYTES + info.batch_length != len(buf):
            raise CorruptRecordError(f"expected one whole batch of {len(buf)} bytes, its batchLength says "
                                     f"{lib.PL_BATCH_OVERHEAD_BYTES + info.batch_length}")
        info.producer_id = producer_id
        info.producer_epoch = producer_epoch
        info.base_sequence = base_sequence
        check(lib.pl_batch_seal(buf, len(buf), rec_len, info), "sealing a restamped batch")
    return view


# ----------------------------------------------------------------- validation
def validate_batches(data: Any) -> Tuple[int, int]:
    """Validate concatenated batches; return (batches, records).

    Raises CorruptRecordError naming the reason and the byte position of the first
    bad batch (also for empty input or input ending inside a batch).
    """
    try:
        buf = ffi.from_buffer("uint8_t[]", data)
    except TypeError:
        raise InvalidArgument(f"record batches must be bytes-like, got {type(data).__name__}") from None
    n = ffi.new("uint32_t *")
    valid = ffi.new("uint64_t *")
    recs = ffi.new("uint64_t *")
    with buf:  # released before any error is raised (see _released)
        size = len(buf)
        rc = lib.pl_batches_validate(buf, size, n, valid, recs)
    if rc != lib.PL_OK:
        if size == 0:
            raise CorruptRecordError("no record batch: the input is empty")
        pos = int(valid[0])
        if rc == lib.PL_E_RECORD and size - pos >= 23 and (data[pos + 22] & 7) > 4 if size - pos >= 23 else False:
            raise UnsupportedCompressionType(
                f"record batch {int(n[0])} at byte {pos} uses unknown compression codec {data[pos + 22] & 7}")
        check(rc, f"record batch {int(n[0])} at byte {pos}")
    return int(n[0]), int(recs[0])


#: Where a buffer of batches lies, for error messages: (file name, position of the
#: buffer's first byte in that file).
Origin = Tuple[str, int]


def _where(origin: Optional[Origin], pos: int) -> str:
    if origin is None:
        return f"byte {pos}"
    return f"position {origin[1] + pos} of {origin[0]}"


def crc_mismatch(base_offset: int, pos: int, stored: int, computed: int,
                 origin: Optional[Origin] = None) -> CorruptRecordError:
    """The CorruptRecordError of a batch whose CRC32C does not match (the same text the
    C record reader gives)."""
    return CorruptRecordError(
        f"CRC32C mismatch in record batch at offset {base_offset} ({_where(origin, pos)}): "
        f"stored 0x{stored:08x}, computed 0x{computed:08x}")


def check_crcs(data: Any, origin: Optional[Origin] = None) -> int:
    """Check the CRC32C of every one of the concatenated batches in ``data`` (one C
    call; the records are not parsed).  Returns the number of bytes checked.

    Raises CorruptRecordError for the first batch whose stored CRC does not match
    (naming its base offset, its position — in the file ``origin`` names, if given —
    and both CRCs) or whose header is malformed.
    """
    bad = ffi.new("uint64_t *")
    stored = ffi.new("uint32_t *")
    computed = ffi.new("uint32_t *")
    with ffi.from_buffer("uint8_t[]", data) as buf:
        size = len(buf)
        rc = lib.pl_batches_check_crc(buf, size, bad, stored, computed)
        base = _HEADER.unpack_from(data, int(bad[0]))[0] if rc == lib.PL_E_CRC else 0
    if rc == lib.PL_E_CRC:
        raise crc_mismatch(base, int(bad[0]), int(stored[0]), int(computed[0]), origin)
    check(rc, f"record batch at {_where(origin, int(bad[0]))}")
    return size


# ----------------------------------------------------------------- batch view
class RecordBatch:
    """A zero-copy view of one Kafka v2 record batch.

    ``buffer`` is the memoryview given (no copy); header fields are parsed lazily.
    """

    __slots__ = ("buffer", "_h")

    def __init__(self, buffer: Any) -> None:
        self.buffer = buffer if isinstance(buffer, memoryview) else memoryview(buffer)
        if len(self.buffer) < 61:
            raise CorruptRecordError(f"a record batch needs at least 61 bytes, got {len(self.buffer)}")
        self._h: Optional[tuple] = None

    def _header(self) -> tuple:
        h = self._h
        if h is None:
            h = self._h = _HEADER.unpack_from(self.buffer, 0)
        return h

    base_offset = property(lambda self: self._header()[0])
    batch_length = property(lambda self: self._header()[1])
    partition_leader_epoch = property(lambda self: self._header()[2])
    magic = property(lambda self: self._header()[3])
    crc = property(lambda self: self._header()[4])
    attributes = property(lambda self: self._header()[5])
    last_offset_delta = property(lambda self: self._header()[6])
    base_timestamp = property(lambda self: self._header()[7])
    max_timestamp = property(lambda self: self._header()[8])
    producer_id = property(lambda self: self._header()[9])
    producer_epoch = property(lambda self: self._header()[10])
    base_sequence = property(lambda self: self._header()[11])
    record_count = property(lambda self: self._header()[12])

    @property
    def size_bytes(self) -> int:
        """Bytes the batch takes: 12 + batchLength."""
        return 12 + self._header()[1]

    @property
    def last_offset(self) -> int:
        h = self._header()
        return h[0] + h[6]

    @property
    def next_offset(self) -> int:
        h = self._header()
        return h[0] + h[6] + 1

    @property
    def compression(self) -> int:
        """Codec id (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd)."""
        return self._header()[5] & 7

    @property
    def compression_type(self) -> str:
        return CODEC_NAMES.get(self.compression, f"unknown({self.compression})")

    @property
    def timestamp_type(self) -> str:
        return "LogAppendTime" if self._header()[5] & 8 else "CreateTime"

    @property
    def is_transactional(self) -> bool:
        return bool(self._header()[5] & 16)

    @property
    def is_control(self) -> bool:
        return bool(self._header()[5] & 32)

    def validate(self) -> None:
        """Full check (length, magic, CRC32C, records); CorruptRecordError if bad."""
        with ffi.from_buffer("uint8_t[]", self.buffer) as buf:
            rc = lib.pl_batch_validate(buf, len(self.buffer), ffi.NULL)
        check(rc, f"record batch at offset {self.base_offset}")

    def check_crc(self) -> None:
        """Check the stored CRC32C against the bytes (nothing else); CorruptRecordError
        naming the batch and both CRCs if they differ."""
        size = self.size_bytes
        if size > len(self.buffer):
            raise CorruptRecordError(f"record batch at offset {self.base_offset} has batchLength "
                                     f"{self.batch_length}, past the end of its {len(self.buffer)} bytes")
        with ffi.from_buffer("uint8_t[]", self.buffer) as buf:
            crc = lib.pl_crc32c(0, buf + 21, size - 21)
        if crc != self.crc:
            raise crc_mismatch(self.base_offset, 0, self.crc, crc)

    def records(self, check_crcs: bool = False) -> Iterator[Record]:
        return iter_records(self.buffer, check_crcs=check_crcs)

    __iter__ = records

    def __len__(self) -> int:
        return self.record_count

    def to_bytes(self) -> bytes:
        return bytes(self.buffer[: self.size_bytes])

    def __repr__(self) -> str:
        return (f"RecordBatch(base_offset={self.base_offset}, records={self.record_count}, "
                f"size_bytes={self.size_bytes}, compression={self.compression_type})")


def iter_batches(buffer: Any) -> Iterator[RecordBatch]:
    """Views of the concatenated batches in ``buffer`` (header walk, no CRC check)."""
    mv = buffer if isinstance(buffer, memoryview) else memoryview(buffer)
    pos, end = 0, len(mv)
    while end - pos >= 61:
        length = int.from_bytes(mv[pos + 8:pos + 12], "big", signed=True)
        size = 12 + length
        if length < 49 or size > end - pos:
            raise CorruptRecordError(f"record batch at byte {pos} has a bad batchLength {length}")
        yield RecordBatch(mv[pos:pos + size])
        pos += size
    if pos != end:
        raise CorruptRecordError(f"{end - pos} trailing bytes after the last record batch")


# ------------------------------------------------------------------- decoding
class RecordArrays:
    """Records as numpy columns over one buffer (no Python object per record).

    ``key_pos``/``value_pos``/``headers_pos`` index into ``buffer``; lengths of -1
    mean null.  ``next_offset`` is the offset to read on from after these records (past
    the last batch decoded, which compaction may leave with gaps), or None where the
    producer of the arrays does not know it.
    """

    __slots__ = ("_buf", "_chunks", "offsets", "timestamps", "key_pos", "key_len", "value_pos",
                 "value_len", "headers_pos", "headers_count", "next_offset")

    def __init__(self, buffer: Any, cols: dict, chunks: Optional[List[Any]] = None,
                 next_offset: Optional[int] = None) -> None:
        # ``chunks``: the buffer as pieces, joined only if ``buffer`` is asked for (a
        # consumer joining several partitions' records copies each byte once, not twice).
        self._buf = buffer
        self._chunks = chunks if buffer is None else None
        self.next_offset = next_offset
        for name, arr in cols.items():
            setattr(self, name, arr)

    def columns(self) -> dict:
        """The numpy columns by name (the arrays themselves, not copies)."""
        return {name: getattr(self, name) for name, _ in _COLS}

    def head(self, n: int) -> "RecordArrays":
        """The first ``n`` records: views of the same columns over the same buffer, with
        ``next_offset`` just past the last of them (unchanged if all are kept)."""
        if n >= len(self.offsets):
            return self
        cols = {name: arr[:n] for name, arr in self.columns().items()}
        nxt = int(self.offsets[n - 1]) + 1 if n > 0 else (int(self.offsets[0]) if len(self.offsets) else None)
        return RecordArrays(self._buf, cols, self._chunks, next_offset=nxt)

    @property
    def buffer(self) -> Any:
        if self._buf is None:
            self._buf = b"".join(self._chunks or ())
            self._chunks = None
        return self._buf

    @buffer.setter
    def buffer(self, value: Any) -> None:
        self._buf = value
        self._chunks = None

    def chunks(self) -> List[Any]:
        """The buffer as a list of bytes-like pieces whose concatenation is :attr:`buffer`."""
        return list(self._chunks) if self._buf is None else [self._buf]

    def __len__(self) -> int:
        return len(self.offsets)

    def _slices(self, pos: np.ndarray, lens: np.ndarray) -> List[Optional[bytes]]:
        data = bytes(self.buffer) if not isinstance(self.buffer, bytes) else self.buffer
        p = pos.tolist()
        ln = lens.tolist()
        if len(ln) and min(ln) < 0:
            return [data[a:a + b] if b >= 0 else None for a, b in zip(p, ln)]
        return [data[a:a + b] for a, b in zip(p, ln)]

    def keys(self) -> List[Optional[bytes]]:
        return self._slices(self.key_pos, self.key_len)

    def values(self) -> List[Optional[bytes]]:
        return self._slices(self.value_pos, self.value_len)

    def headers(self) -> List[Tuple[Header, ...]]:
        data = bytes(self.buffer) if not isinstance(self.buffer, bytes) else self.buffer
        return [(_decode_headers(data, p, c) if c else _NO_HEADERS)
                for p, c in zip(self.headers_pos.tolist(), self.headers_count.tolist())]

    def records(self) -> List[Record]:
        """Materialise as Record objects."""
        n = len(self.offsets)
        if n == 0:
            return []
        data = bytes(self.buffer) if not isinstance(self.buffer, bytes) else self.buffer
        self_buf = self.buffer
        self.buffer = data
        try:
            values = self.values()
            if int(self.key_len.max()) < 0:
                keys: List[Optional[bytes]] = [None] * n
            else:
                keys = self.keys()
            if int(self.headers_count.max()) == 0:
                headers: List[Tuple[Header, ...]] = [_NO_HEADERS] * n
            else:
                headers = self.headers()
        finally:
            self.buffer = self_buf
        return list(map(_new_record, [Record] * n,
                        zip(self.offsets.tolist(), self.timestamps.tolist(), keys, values, headers)))


_COLS = (("offsets", np.int64), ("timestamps", np.int64), ("key_pos", np.int64),
         ("key_len", np.int32), ("value_pos", np.int64), ("value_len", np.int32),
         ("headers_pos", np.int64), ("headers_count", np.int32))


def _alloc(capacity: int) -> Tuple[dict, Any]:
    cols = {name: np.empty(capacity, dtype=dt) for name, dt in _COLS}
    arr = ffi.new("pl_record_arrays *")
    arr.capacity = capacity
    keep = []
    for name, _ in _COLS:
        ptr = ffi.from_buffer(cols[name])
        keep.append(ptr)
        setattr(arr, name, ffi.cast(ffi.typeof(getattr(arr, name)), ptr))
    return cols, (arr, keep)


_MIN_RECORD_BYTES = 7  # length, attributes, timestampDelta, offsetDelta, keyLength, valueLength, headers


def _estimate_records(mv: memoryview) -> Tuple[int, Optional[int]]:
    """(records the uncompressed batches can hold, next offset after the last batch).

    The count is recordCount, but never more than the bytes allow (a damaged count must
    not make us allocate gigabytes)."""
    n = 0
    nxt = None
    for b in iter_batches(mv):
        n += max(0, min(b.record_count, (b.size_bytes - 61) // _MIN_RECORD_BYTES))
        nxt = b.next_offset
    return n, nxt


def decode_records(buffer: Any, min_offset: int = 0, *, max_bytes: Optional[int] = None,
                   check_crcs: bool = False, origin: Optional[Origin] = None) -> RecordArrays:
    """Decode every record (offset >= ``min_offset``) of the concatenated batches.

    Positions refer to ``result.buffer``: the input itself when no batch is
    compressed (zero copy), else one new buffer holding every batch's records section,
    decompressed once straight into it where the codec allows (zstd frames that state
    their size).  ``result.next_offset`` is the offset after the last batch decoded.

    ``max_bytes`` makes it a chunked decode that may stop early, leaving the rest of
    the input for a next call from ``next_offset``: batches are decoded until their
    records sections (decompressed) reach ``max_bytes``, always at least one, and a run
    of uncompressed batches ends the chunk where compressed ones start (and the other
    way round), so that uncompressed records stay zero-copy.  The zero-copy path is not
    limited by ``max_bytes`` (its input is its own bound).

    With ``check_crcs`` every batch walked has its CRC32C checked (in C, in the same
    walk) before its records are decoded; a mismatch raises CorruptRecordError naming
    the batch (its position in the file ``origin`` names, when given).
    """
    mv = buffer if isinstance(buffer, memoryview) else memoryview(buffer)
    if mv.format != "B" or mv.ndim != 1:
        mv = mv.cast("B")
    total = len(mv)
    if total == 0:
        cols, _ = _alloc(0)
        return RecordArrays(mv, cols)
    if total >= 61 and mv[22] & 0x07:  # the first batch is compressed: no zero-copy path
        return _decode_mixed(mv, min_offset, max_bytes, check_crcs, origin)
    counted = ffi.new("uint64_t *")
    nxt = ffi.new("int64_t *")
    with ffi.from_buffer("uint8_t[]", mv) as src:
        rc = lib.pl_batches_count(src, total, counted, nxt)
    if rc == lib.PL_OK:
        capacity, next_offset = int(counted[0]), int(nxt[0])
    else:  # a bad header: the Python walk names it
        capacity, next_offset = _estimate_records(mv)
    if capacity > 0xFFFFFFFF:
        raise InvalidArgument(f"{capacity} records in one decode call; decode fewer batches at a time")
    cols, (arr, keep) = _alloc(max(capacity, 1))
    n_out = ffi.new("uint32_t *")
    consumed = ffi.new("uint64_t *")
    with ffi.from_buffer("uint8_t[]", mv) as src:
        rc = lib.pl_batches_decode(src, total, min_offset, lib.PL_DECODE_CHECK_CRC if check_crcs else 0,
                                   arr, 0, n_out, consumed)
    if rc == lib.PL_E_CRC:
        _raise_crc_at(mv, int(consumed[0]), origin)
    if rc == lib.PL_OK and int(consumed[0]) == total:
        n = int(n_out[0])
        return RecordArrays(mv, {k: v[:n] for k, v in cols.items()}, next_offset=next_offset)
    if rc == lib.PL_E_COMPRESSED and max_bytes is not None and int(consumed[0]) > 0:
        # A chunked decode stops where the compressed batches start: what came before
        # stays zero-copy, and the caller reads on from next_offset.
        n, done = int(n_out[0]), int(consumed[0])
        with ffi.from_buffer("uint8_t[]", mv) as src:
            rc = lib.pl_batches_count(src, done, counted, nxt)
        check(rc, "counting the records decoded")
        return RecordArrays(mv[:done], {k: v[:n] for k, v in cols.items()}, next_offset=int(nxt[0]))
    if rc not in (lib.PL_OK, lib.PL_E_COMPRESSED, lib.PL_E_NOSPACE):  # NOSPACE: a damaged count
        check(rc, f"decoding records at {_where(origin, int(consumed[0]))}")
    return _decode_mixed(mv, min_offset, max_bytes, check_crcs, origin)


def _raise_crc_at(mv: memoryview, pos: int, origin: Optional[Origin]) -> None:
    """Raise the CRC error of the bad batch at ``pos`` of ``mv`` (stored and computed
    CRC from pl_batches_check_crc)."""
    bad = ffi.new("uint64_t *")
    stored = ffi.new("uint32_t *")
    computed = ffi.new("uint32_t *")
    with ffi.from_buffer("uint8_t[]", mv[pos:]) as buf:
        rc = lib.pl_batches_check_crc(buf, len(buf), bad, stored, computed)
    base = _HEADER.unpack_from(mv, pos)[0]
    if rc == lib.PL_E_CRC and int(bad[0]) == 0:
        raise crc_mismatch(base, pos, int(stored[0]), int(computed[0]), origin)
    raise CorruptRecordError(f"CRC32C mismatch in record batch at offset {base} ({_where(origin, pos)})")


def _decode_mixed(mv: memoryview, min_offset: int, max_bytes: Optional[int] = None,
                  check_crcs: bool = False, origin: Optional[Origin] = None) -> RecordArrays:
    """Slow path: some batch is compressed.  Walks the headers (only as far as
    ``max_bytes`` needs), then :func:`_decode_list`."""
    def walk() -> Iterator[Tuple[tuple, memoryview]]:
        pos, end = 0, len(mv)
        unpack = _HEADER.unpack_from
        while end - pos >= 61:
            h = unpack(mv, pos)
            size = 12 + h[1]
            if h[1] < 49 or size > end - pos:
                raise CorruptRecordError(f"record batch at {_where(origin, pos)} has a bad batchLength {h[1]}")
            if h[3] != 2:
                raise CorruptRecordError(f"record batch at {_where(origin, pos)} has magic {h[3]}, not 2")
            if check_crcs:
                crc = lib.pl_crc32c(0, ffi.from_buffer(mv[pos + 21:pos + size]), size - 21)
                if crc != h[4]:
                    raise crc_mismatch(h[0], pos, h[4], crc, origin)
            yield h, mv[pos:pos + size]
            pos += size
        if pos != end:
            raise CorruptRecordError(f"{end - pos} trailing bytes after the last record batch")

    return _decode_list(walk, min_offset, max_bytes)


def decode_batches(batches: Sequence[RecordBatch], min_offset: int = 0, *,
                   max_bytes: Optional[int] = None, check_crcs: bool = False) -> RecordArrays:
    """Like :func:`decode_records` over a list of batches (such as a fetch returns),
    without first joining them: every batch's records section (decompressed if needed)
    is placed once into one new buffer; a lone uncompressed batch is referenced where
    it is.  For many uncompressed batches that are adjacent views of one buffer (as a
    log's read gives), ``decode_records(join_views(...))`` copies nothing.  With
    ``check_crcs`` each batch's CRC32C is checked first (CorruptRecordError)."""
    if check_crcs:
        for b in batches:
            b.check_crc()
    return _decode_list(lambda: ((b._header(), b.buffer) for b in batches), min_offset, max_bytes)


class _SizeMismatch(Exception):
    """A zstd section did not decompress to the size its frame stated."""


def _decode_list(items: Callable[[], Iterable[Tuple[tuple, memoryview]]], min_offset: int,
                 max_bytes: Optional[int] = None) -> RecordArrays:
    """Records (offset >= min_offset) of batches given as (header tuple, batch view) by
    ``items()`` (called again if a stated size proves wrong).

    The records sections go into ONE buffer, each in its slice: a zstd section that
    states its size is decompressed straight into its slice; others are decompressed
    first (their size is known only then) and copied in.  All records are decoded into
    one set of arrays, one C call per batch (no per-batch array allocation)."""
    try:
        return _decode_list_once(items(), min_offset, max_bytes, trust_sizes=True)
    except _SizeMismatch:
        return _decode_list_once(items(), min_offset, max_bytes, trust_sizes=False)


def _decode_list_once(items: Iterable[Tuple[tuple, memoryview]], min_offset: int, max_bytes: Optional[int],
                      trust_sizes: bool) -> RecordArrays:
    todo = []  # (header, codec, section as stored, size, section decompressed or None)
    capacity = 0
    total = 0
    next_offset: Optional[int] = None
    for h, view in items:
        codec = h[5] & 0x07
        if max_bytes is not None and todo and (total >= max_bytes or (not codec) != (not todo[0][1])):
            break  # a chunk is full, or its run of (un)compressed batches ends
        count = h[12]
        if count < 0:
            raise CorruptRecordError(f"record batch at offset {h[0]} has a negative recordCount {count}")
        next_offset = h[0] + h[6] + 1
        if not count or h[0] + h[6] < min_offset:
            continue
        body = view[61:12 + h[1]]
        plain: Any = body
        size = len(body)
        if codec:
            size = decompressed_size(codec, body) if trust_sizes else -1
            if size < 0:
                plain = decompress(codec, body)
                size = len(plain)
            else:
                plain = None
        if count > size // _MIN_RECORD_BYTES:  # before allocating for that many
            raise CorruptRecordError(f"record batch at offset {h[0]} claims {count} records in "
                                     f"{size} bytes of records")
        todo.append((h, codec, body, size, plain))
        capacity += count
        total += size
    cols, (arr, keep) = _alloc(max(capacity, 1))
    if len(todo) == 1 and todo[0][4] is not None:
        buf: Any = todo[0][4]  # one section, as it is (uncompressed: a view, no copy)
    else:
        buf = memoryview(np.empty(total, dtype=np.uint8))
        pos = 0
        for h, codec, body, size, plain in todo:
            if plain is not None:
                buf[pos:pos + size] = plain
            elif not decompress_into(codec, body, buf[pos:pos + size]):
                raise _SizeMismatch()
            pos += size
    filled = 0
    rc = lib.PL_OK
    failed = None
    with ffi.from_buffer("uint8_t[]", buf) as base_ptr:
        base = 0
        for h, codec, body, size, plain in todo:
            rc = lib.pl_records_decode(base_ptr + base if size else ffi.NULL, size, h[12], h[0], h[7], h[8],
                                       h[5], base, arr, filled)
            if rc != lib.PL_OK:
                failed = h
                break
            base += size
            filled += h[12]
    if failed is not None:
        check(rc, f"decoding records of batch at offset {failed[0]}")
    cols = {k: v[:filled] for k, v in cols.items()}
    if filled and int(cols["offsets"][0]) < min_offset:
        cut = int(np.searchsorted(cols["offsets"], min_offset))
        cols = {k: v[cut:] for k, v in cols.items()}
    return RecordArrays(buf, cols, next_offset=next_offset)


def join_views(views: Sequence[Any]) -> Any:
    """The concatenation of ``views``: a zero-copy memoryview when they are adjacent
    slices of one exporting object (as the batches one log read returns, which are
    views of one segment mapping), else one new bytes object (one copy)."""
    if len(views) == 1:
        return views[0]
    mvs = [v if isinstance(v, memoryview) else memoryview(v) for v in views]
    owner = mvs[0].obj
    if owner is not None and all(m.obj is owner and m.contiguous and m.itemsize == 1 for m in mvs):
        addrs = []
        for m in mvs:
            with ffi.from_buffer("uint8_t[]", m) as p:
                addrs.append(int(ffi.cast("uintptr_t", p)))
        if all(addrs[i] + len(mvs[i]) == addrs[i + 1] for i in range(len(mvs) - 1)):
            whole = memoryview(owner)
            if whole.ndim == 1 and whole.itemsize == 1 and whole.contiguous:
                with ffi.from_buffer("uint8_t[]", whole) as p:
                    start = addrs[0] - int(ffi.cast("uintptr_t", p))
                end = addrs[-1] + len(mvs[-1]) - addrs[0] + start
                if 0 <= start <= end <= len(whole):
                    return whole[start:end]
            whole.release()
    return b"".join(mvs)


def record_list(buffer: Any, min_offset: int = 0, max_offset: Optional[int] = None, *,
                check_crcs: bool = False, origin: Optional[Origin] = None) -> List[Record]:
    """Records with ``min_offset`` <= offset < ``max_offset`` (None: no upper bound) of
    the concatenated batches in ``buffer`` (any contiguous bytes-like object), in order.

    Built in C (pylog._native._records), one call for the whole buffer; compressed
    batches are decompressed first.  Gives exactly what
    ``decode_records(buffer, min_offset).records()`` gives, about ten times faster.
    With ``check_crcs`` each batch's CRC32C is checked (in C, as the batch is walked)
    before any of its records is made; a mismatch raises CorruptRecordError naming the
    batch's base offset, its position (in the file ``origin`` names, when given) and
    both CRCs.  Malformed bytes raise CorruptRecordError (or
    UnsupportedCompressionType for a codec that is unknown or not installed).
    """
    if origin is None:
        return _crecords.decode(buffer, min_offset, max_offset, check_crcs)
    return _crecords.decode(buffer, min_offset, max_offset, check_crcs, origin[0], origin[1])


def lazy_records(buffer: Any, min_offset: int = 0, max_offset: Optional[int] = None, *,
                 check_crcs: bool = False, origin: Optional[Origin] = None) -> Iterator[Record]:
    """The records :func:`record_list` gives, as an iterator that makes each Record in C
    when it is asked for (a loop that drops each record before the next reuses warm
    memory; a list of them would not).  Damaged bytes raise CorruptRecordError when
    the iteration reaches them.  The iterator holds ``buffer``'s buffer until it is
    exhausted or dropped.  ``check_crcs`` and ``origin`` as for :func:`record_list`:
    a batch failing its CRC raises when the iteration reaches it, before any of its
    records is handed out."""
    if origin is None:
        return _crecords.iterate(buffer, min_offset, max_offset, check_crcs)
    return _crecords.iterate(buffer, min_offset, max_offset, check_crcs, origin[0], origin[1])


def iter_records(buffer: Any, min_offset: int = 0, *, check_crcs: bool = False) -> Iterator[Record]:
    """Records (offset >= ``min_offset``) of the concatenated batches in ``buffer``
    (``check_crcs``: as :func:`record_list`)."""
    return iter(_crecords.decode(buffer, min_offset, None, check_crcs))

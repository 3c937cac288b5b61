"""Rewriting record batches already in a log: keep some records, grow an offset range,
fill offsets with an empty batch.  Used by log compaction (:mod:`pylog.broker.cleaner`),
which decides what to keep; the bytes are made here.

Every result is one Kafka v2 batch (magic 2), sealed with its CRC32C, that
:func:`~pylog.records.validate_batches` accepts.  Kafka's own cleaner writes the same
shapes:

* a batch that lost records keeps the survivors' **true offsets** (their offset deltas
  are not renumbered), its producer id, producer epoch, base sequence, leader epoch,
  timestamp type and codec (re-compressed), and its last offset, so the batch still
  covers the same producer sequence range (KIP-98: the producer state is rebuilt from
  batch headers);
* a batch that lost every record but must stay (the last batch of a producer) becomes a
  header-only batch (recordCount 0) with the same header fields;
* offsets no batch covers any more go into a neighbour (its range grows) or into a
  header-only filler batch.

Each call crosses into C once per batch, not once per record.
"""
from __future__ import annotations

import struct
from typing import Any, Optional, Sequence, Union

import numpy as np

from pylog._native import check, ffi, lib
from pylog.errors import InvalidArgument
from pylog.records.batch import RecordArrays, RecordBatch, _decode_headers, prepare_batch
from pylog.records.compression import compress

__all__ = ["rewrite_batch", "empty_batch", "with_last_offset"]

# Header field positions (bytes from the batch start) of Kafka's v2 batch.
_LAST_OFFSET_DELTA = struct.Struct(">i")
_LAST_OFFSET_DELTA_POS = 23
_CRC = struct.Struct(">I")
_CRC_POS = 17
_CRC_FROM = 21  #: the CRC covers attributes .. end of batch
_MAX_DELTA = (1 << 31) - 1


def _check_delta(base_offset: int, last_offset: int, what: str) -> None:
    if not 0 <= last_offset - base_offset <= _MAX_DELTA:
        raise InvalidArgument(f"{what}: offsets [{base_offset}, {last_offset}] do not fit one batch "
                              f"(lastOffsetDelta must be in [0, {_MAX_DELTA}])")


def _seal_header_only(base_offset: int, last_offset: int, timestamp: int, *, partition_leader_epoch: int,
                      attributes: int, producer_id: int, producer_epoch: int, base_sequence: int) -> bytes:
    info = ffi.new("pl_batch_info *")
    info.base_offset = base_offset
    info.partition_leader_epoch = partition_leader_epoch
    info.attributes = attributes
    info.last_offset_delta = last_offset - base_offset
    info.base_timestamp = timestamp
    info.max_timestamp = timestamp
    info.producer_id = producer_id
    info.producer_epoch = producer_epoch
    info.base_sequence = base_sequence
    info.record_count = 0
    out = ffi.new("uint8_t[]", lib.PL_BATCH_HEADER_BYTES)
    n = check(lib.pl_batch_seal(out, lib.PL_BATCH_HEADER_BYTES, 0, info), "sealing an empty batch")
    return ffi.buffer(out, n)[:]


def empty_batch(base_offset: int, last_offset: int, max_timestamp: int, *,
                partition_leader_epoch: int = -1) -> bytes:
    """A batch of no records (recordCount 0, 61 bytes) covering offsets
    [``base_offset``, ``last_offset``], with ``partition_leader_epoch``, no producer id,
    no compression, CreateTime, and ``max_timestamp`` as both its timestamps (so time
    retention and the time index still see the time of the records it stands for).

    Raises InvalidArgument if ``last_offset`` is before ``base_offset`` or the range
    does not fit one batch.
    """
    _check_delta(base_offset, last_offset, "empty batch")
    return _seal_header_only(base_offset, last_offset, max_timestamp,
                             partition_leader_epoch=partition_leader_epoch, attributes=0,
                             producer_id=-1, producer_epoch=-1, base_sequence=-1)


def with_last_offset(batch: Union[RecordBatch, Any], last_offset: int) -> bytes:
    """A copy of ``batch`` (a :class:`RecordBatch` or the bytes of exactly one batch)
    ending at ``last_offset`` instead: only lastOffsetDelta changes, and the CRC is
    recomputed.  Its records keep their offsets; the batch now also covers the offsets
    after its old last offset.

    Raises InvalidArgument if ``last_offset`` is before the batch's last offset or the
    range does not fit one batch, or if ``batch`` is not one whole batch.
    """
    b = batch if isinstance(batch, RecordBatch) else RecordBatch(batch)
    if len(b.buffer) != b.size_bytes:
        raise InvalidArgument(f"expected the bytes of one record batch ({b.size_bytes}), got {len(b.buffer)}")
    if last_offset < b.last_offset:
        raise InvalidArgument(f"the batch at offset {b.base_offset} ends at {b.last_offset}; "
                              f"it cannot end earlier, at {last_offset}")
    _check_delta(b.base_offset, last_offset, f"the batch at offset {b.base_offset}")
    buf = bytearray(b.buffer)
    _LAST_OFFSET_DELTA.pack_into(buf, _LAST_OFFSET_DELTA_POS, last_offset - b.base_offset)
    c = ffi.from_buffer("uint8_t[]", buf)
    try:
        crc = lib.pl_crc32c(0, c + _CRC_FROM, len(buf) - _CRC_FROM)
    finally:
        ffi.release(c)
    _CRC.pack_into(buf, _CRC_POS, crc)
    return bytes(buf)


def rewrite_batch(batch: RecordBatch, records: RecordArrays, keep: Union[Sequence[int], np.ndarray], *,
                  base_offset: Optional[int] = None) -> bytes:
    """``batch`` holding only some of its records: those at indexes ``keep`` of
    ``records`` (decoded records of which ``batch``'s are a part, as
    :func:`~pylog.records.decode_records` gives them; ``keep`` in increasing order).

    The new batch starts at ``base_offset`` (default: the batch's own; it may start
    earlier, to cover offsets before it) and ends at the batch's last offset.  Each
    kept record keeps its offset, timestamp, key, value and headers.  The batch keeps
    its partition leader epoch, producer id, producer epoch, base sequence, timestamp
    type and compression codec (records are re-compressed).  With ``keep`` empty it is
    a header-only batch (recordCount 0) with those header fields, no compression, and
    the batch's max timestamp as both its timestamps (Kafka's empty batch that keeps
    a producer's sequence range in the log).  The batch is always re-encoded.

    Raises InvalidArgument if a kept record lies before ``base_offset`` or after the
    batch's last offset, if offsets are not increasing, or if the range does not fit
    one batch.
    """
    raw = np.asarray(keep)
    if raw.ndim != 1 or (raw.size and raw.dtype.kind not in "iu"):
        raise InvalidArgument(f"keep must be a flat sequence of record indexes (ints), got {raw.dtype} "
                              f"with shape {raw.shape}")
    idx = raw.astype(np.int64)
    start = batch.base_offset if base_offset is None else base_offset
    last = batch.last_offset
    _check_delta(start, last, f"rebuilding the batch at offset {batch.base_offset}")
    if len(idx) == 0:
        return _seal_header_only(start, last, batch.max_timestamp,
                                 partition_leader_epoch=batch.partition_leader_epoch,
                                 attributes=batch.attributes & ~lib.PL_ATTR_COMPRESSION_MASK,
                                 producer_id=batch.producer_id, producer_epoch=batch.producer_epoch,
                                 base_sequence=batch.base_sequence)
    if idx.min() < 0 or idx.max() >= len(records):
        raise InvalidArgument(f"keep indexes must be in [0, {len(records)}), got {idx.min()}..{idx.max()}")
    offsets = records.offsets[idx]
    if int(offsets[0]) < start or int(offsets[-1]) > last:
        raise InvalidArgument(f"records at offsets {int(offsets[0])}..{int(offsets[-1])} do not lie in "
                              f"[{start}, {last}] of the batch at offset {batch.base_offset}")
    buf = records.buffer
    mv = buf if isinstance(buf, (bytes, memoryview)) else memoryview(buf)
    vp, vl = records.value_pos[idx].tolist(), records.value_len[idx].tolist()
    kp, kl = records.key_pos[idx].tolist(), records.key_len[idx].tolist()
    values = [bytes(mv[p:p + n]) if n >= 0 else None for p, n in zip(vp, vl)]
    keys = [bytes(mv[p:p + n]) if n >= 0 else None for p, n in zip(kp, kl)]
    hcount = records.headers_count[idx]
    headers = None
    if int(hcount.max()) > 0:
        data = bytes(mv)
        headers = [list(_decode_headers(data, p, c)) if c else []
                   for p, c in zip(records.headers_pos[idx].tolist(), hcount.tolist())]
    timestamps = records.timestamps[idx].tolist()
    p = prepare_batch(values, keys, headers, timestamps, producer_id=batch.producer_id,
                      producer_epoch=batch.producer_epoch, base_sequence=batch.base_sequence,
                      partition_leader_epoch=batch.partition_leader_epoch, base_offset=start)
    deltas = np.ascontiguousarray(offsets - start, dtype=np.int32)
    deltas_c = ffi.from_buffer("int32_t[]", deltas)
    cd = p.cdata
    cd.offset_deltas = deltas_c
    cd.last_offset_delta = last - start
    codec = batch.compression
    cd.attributes = batch.attributes & ~lib.PL_ATTR_COMPRESSION_MASK
    bound = lib.pl_batch_size_bound(cd)  # 0: offsets not increasing (or too large)
    if bound == 0:
        raise InvalidArgument(f"cannot rebuild the batch at offset {batch.base_offset}: "
                              "kept offsets must increase within the batch")
    out = ffi.new("uint8_t[]", bound)
    if codec == 0:
        n = check(lib.pl_batch_build(cd, out, bound), f"rebuilding the batch at offset {batch.base_offset}")
        return ffi.buffer(out, n)[:]
    n = check(lib.pl_records_encode(cd, out, bound),
              f"encoding records of the batch at offset {batch.base_offset}")
    packed = compress(codec, ffi.buffer(out, n)[:])
    info = ffi.new("pl_batch_info *")
    info.base_offset = start
    info.partition_leader_epoch = batch.partition_leader_epoch
    info.attributes = (batch.attributes & ~lib.PL_ATTR_COMPRESSION_MASK) | codec
    info.last_offset_delta = last - start
    info.base_timestamp = timestamps[0]
    info.max_timestamp = max(timestamps)
    info.producer_id = batch.producer_id
    info.producer_epoch = batch.producer_epoch
    info.base_sequence = batch.base_sequence
    info.record_count = len(values)
    sealed = ffi.new("uint8_t[]", lib.PL_BATCH_HEADER_BYTES + len(packed))
    ffi.memmove(sealed + lib.PL_BATCH_HEADER_BYTES, packed, len(packed))
    total = check(lib.pl_batch_seal(sealed, len(sealed), len(packed), info),
                  f"sealing the rebuilt batch at offset {batch.base_offset}")
    return ffi.buffer(sealed, total)[:]

"""Helpers for the native segment/index tests.

* A pure-Python CRC32C and Kafka v2 RecordBatch encoder, independent of csrc/, so the
  tests build their input bytes without trusting the code under test.
* ``Seg``: a segment's three files in a temporary directory, preallocated, mapped with
  ``mmap`` and wrapped in a ``pl_segment`` (the way pylog.storage does it).
* A plain model of the indexing rule, to compare the C indexes with.
"""
from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from pylog._native import ffi, lib

# ---------------------------------------------------------------- CRC32C


def _make_table() -> list[int]:
    poly = 0x82F63B78
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _make_table()


def crc32c(data: bytes, crc: int = 0) -> int:
    crc ^= 0xFFFFFFFF
    t = _TABLE
    for b in data:
        crc = t[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


# ------------------------------------------------------------- batch format

HEADER = 61


def varint(v: int) -> bytes:
    """Zigzag varint (protobuf sint64)."""
    z = (v << 1) ^ (v >> 63)
    z &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = z & 0x7F
        z >>= 7
        if z:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def encode_record(offset_delta: int, ts_delta: int, key: Optional[bytes],
                  value: Optional[bytes]) -> bytes:
    body = bytearray()
    body.append(0)  # attributes
    body += varint(ts_delta)
    body += varint(offset_delta)
    if key is None:
        body += varint(-1)
    else:
        body += varint(len(key)) + key
    if value is None:
        body += varint(-1)
    else:
        body += varint(len(value)) + value
    body += varint(0)  # headers
    return varint(len(body)) + bytes(body)


def make_batch(values: Sequence[Optional[bytes]], *, base_offset: int = 0,
               timestamps: Optional[Sequence[int]] = None, base_timestamp: int = 1_000,
               keys: Optional[Sequence[Optional[bytes]]] = None, epoch: int = -1,
               offset_deltas: Optional[Sequence[int]] = None,
               last_offset_delta: Optional[int] = None) -> bytes:
    """One valid uncompressed v2 batch with CRC."""
    n = len(values)
    assert n >= 1
    if timestamps is None:
        timestamps = [base_timestamp] * n
    first_ts = min(timestamps)
    deltas = list(offset_deltas) if offset_deltas is not None else list(range(n))
    lod = last_offset_delta if last_offset_delta is not None else deltas[-1]
    recs = b"".join(
        encode_record(deltas[i], timestamps[i] - first_ts,
                      None if keys is None else keys[i], values[i])
        for i in range(n)
    )
    after_crc = struct.pack(">hiqqqhii", 0, lod, first_ts, max(timestamps), -1, -1, -1, n) + recs
    crc = crc32c(after_crc)
    batch_length = 4 + 1 + 4 + len(after_crc)
    return struct.pack(">qiibI", base_offset, batch_length, epoch, 2, crc) + after_crc


@dataclass
class BatchInfo:
    pos: int
    size: int
    base: int
    last: int
    max_ts: int
    epoch: int


def parse_batches(buf: bytes) -> list[BatchInfo]:
    """Headers of the concatenated batches in buf (no validation beyond lengths)."""
    out = []
    pos = 0
    while pos + HEADER <= len(buf):
        base, blen, epoch = struct.unpack_from(">qii", buf, pos)
        if blen < 49:
            break
        lod = struct.unpack_from(">i", buf, pos + 23)[0]
        max_ts = struct.unpack_from(">q", buf, pos + 35)[0]
        size = 12 + blen
        if pos + size > len(buf):
            break
        out.append(BatchInfo(pos, size, base, base + lod, max_ts, epoch))
        pos += size
    return out


def set_base_offset(batch: bytes, base: int) -> bytes:
    return struct.pack(">q", base) + batch[8:]


# ---------------------------------------------------------------- model


def model_indexes(batches: Sequence[BatchInfo], base_offset: int, interval: int):
    """The (offset index, time index) the indexing rule gives for these batches."""
    oi: list[tuple[int, int]] = []
    ti: list[tuple[int, int]] = []
    since = 0
    max_ts, max_ts_off = -1, -1
    last_t = -1
    for b in batches:
        if b.max_ts > max_ts:
            max_ts, max_ts_off = b.max_ts, b.base
        if not oi or since >= interval:
            oi.append((b.base - base_offset, b.pos))
            since = 0
            if max_ts > last_t:
                ti.append((max_ts, max_ts_off - base_offset))
                last_t = max_ts
        since += b.size
    return oi, ti


# -------------------------------------------------------------- segments


class Seg:
    """A segment's files, mapped, with its pl_segment (what pylog.storage does)."""

    def __init__(self, directory: Path, base_offset: int = 0, *, log_bytes: int = 1 << 16,
                 index_entries: int = 64, interval: int = 256, init: bool = True,
                 name: str = "seg", write_path: str = "memcpy") -> None:
        self.dir = directory
        self.write_path = write_path
        self.base_offset = base_offset
        self.interval = interval
        self.paths = [directory / f"{name}.log", directory / f"{name}.index",
                      directory / f"{name}.timeindex"]
        sizes = [log_bytes, index_entries * 8, index_entries * 12]
        self.fds = []
        self.maps = []
        self.ptrs = []
        for path, size in zip(self.paths, sizes):
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            if os.fstat(fd).st_size < size:
                os.posix_fallocate(fd, 0, size)
            mm = mmap.mmap(fd, size, flags=mmap.MAP_SHARED,
                           prot=mmap.PROT_READ | mmap.PROT_WRITE)
            self.fds.append(fd)
            self.maps.append(mm)
            self.ptrs.append(ffi.from_buffer("uint8_t[]", mm))
        self.c = ffi.new("pl_segment *")
        self.attach()
        if init:
            assert lib.pl_segment_init(self.c, base_offset, interval) == lib.PL_OK

    def attach(self) -> None:
        c = self.c
        # pl_segment_append copies through the .log's descriptor (pwrite) when it has
        # one, else into the mapping (memcpy); "buffered" appends go through
        # pl_segment_append_buffered and a scratch buffer (every copy, from 1 byte):
        # the make_seg fixture runs each test all three ways.
        c.log_fd_plus_one = self.fds[0] + 1 if self.write_path in ("pwrite", "buffered") else 0
        c.pwrite_copy_min_bytes = 1 if self.write_path == "buffered" else 0
        c.log, c.index, c.timeindex = self.ptrs
        c.log_capacity = len(self.maps[0])
        c.index_capacity = len(self.maps[1])
        c.timeindex_capacity = len(self.maps[2])

    @property
    def log(self) -> mmap.mmap:
        return self.maps[0]

    def close(self) -> None:
        if self.fds is None:
            return
        for p in self.ptrs:
            ffi.release(p)
        for m in self.maps:
            try:
                m.close()
            except BufferError:
                pass
        for fd in self.fds:
            os.close(fd)
        self.fds = None

    # -- C calls
    def append(self, data: bytes, *, epoch: int = -1, assign: bool = True):
        res = ffi.new("pl_append_result *")
        if self.write_path == "buffered":
            scratch = ffi.new("uint8_t[]", max(len(data), 1))
            st = lib.pl_segment_append_buffered(self.c, data, len(data), epoch, 1 if assign else 0,
                                                scratch, len(scratch), res)
        else:
            st = lib.pl_segment_append(self.c, data, len(data), epoch, 1 if assign else 0, res)
        return st, res

    def read(self, offset: int, max_bytes: int = 1 << 30, max_offset: int = 1 << 62,
             max_batches: int = 1024):
        positions = ffi.new("uint64_t[]", max_batches)
        n = ffi.new("uint32_t *")
        end = ffi.new("uint64_t *")
        st = lib.pl_segment_read(self.c, offset, max_bytes, max_offset, positions,
                                 max_batches, n, end)
        return st, [positions[i] for i in range(n[0])], end[0]

    def lookup(self, offset: int):
        pos = ffi.new("uint64_t *")
        st = lib.pl_segment_lookup(self.c, offset, pos)
        return st, pos[0]

    def find_ts(self, ts: int):
        pos = ffi.new("uint64_t *")
        off = ffi.new("int64_t *")
        st = lib.pl_segment_find_timestamp(self.c, ts, pos, off)
        return st, pos[0], off[0]

    def truncate(self, offset: int):
        size = ffi.new("uint64_t *")
        st = lib.pl_segment_truncate(self.c, offset, size)
        return st, size[0]

    def recover(self, start: int = 0):
        t = ffi.new("uint64_t *")
        st = lib.pl_segment_recover(self.c, start, t)
        return st, t[0]

    # -- state
    def oi(self) -> list[tuple[int, int]]:
        raw = bytes(self.maps[1][: self.c.index_entries * 8])
        return [struct.unpack_from(">II", raw, i * 8) for i in range(self.c.index_entries)]

    def ti(self) -> list[tuple[int, int]]:
        raw = bytes(self.maps[2][: self.c.timeindex_entries * 12])
        return [struct.unpack_from(">qI", raw, i * 12) for i in range(self.c.timeindex_entries)]

    def batches(self) -> list[BatchInfo]:
        return parse_batches(bytes(self.log[: self.c.log_size]))

    def state(self) -> dict:
        c = self.c
        return dict(
            log_size=c.log_size, next_offset=c.next_offset, max_timestamp=c.max_timestamp,
            max_timestamp_offset=c.max_timestamp_offset, index_entries=c.index_entries,
            timeindex_entries=c.timeindex_entries, bytes_since_index=c.bytes_since_index,
            oi=self.oi(), ti=self.ti(), log=bytes(self.log[: c.log_size]),
        )


def check_model(seg: Seg, *, next_offset: Optional[int] = None) -> None:
    """The segment's indexes and fields agree with the model over its batches
    (next_offset: the expected one when it is not the last batch's last offset + 1)."""
    batches = seg.batches()
    assert sum(b.size for b in batches) == seg.c.log_size
    oi, ti = model_indexes(batches, seg.base_offset, seg.interval)
    assert seg.oi() == oi
    assert seg.ti() == ti
    if next_offset is not None:
        assert seg.c.next_offset == next_offset
    if batches:
        if next_offset is None:
            assert seg.c.next_offset == batches[-1].last + 1
        mx = max(b.max_ts for b in batches)
        assert seg.c.max_timestamp == max(mx, -1)
        if mx > -1:
            assert seg.c.max_timestamp_offset == next(b.base for b in batches if b.max_ts == mx)
    else:
        assert seg.c.next_offset >= seg.base_offset
        assert seg.c.max_timestamp == -1


def batch_of_size(target: int, *, base_timestamp: int = 1_000, n_records: int = 1,
                  timestamps: Optional[Sequence[int]] = None) -> bytes:
    """A batch whose total size is close to (>=) target bytes (at least the minimum)."""
    overhead = len(make_batch([b""] * n_records, base_timestamp=base_timestamp,
                              timestamps=timestamps))
    extra = max(0, target - overhead)
    per = extra // n_records
    vals = [b"v" * per for _ in range(n_records)]
    vals[-1] += b"v" * (extra - per * n_records)
    b = make_batch(vals, base_timestamp=base_timestamp, timestamps=timestamps)
    return b

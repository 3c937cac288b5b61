"""pylog.records.rewrite: batches rewritten for compaction, byte for byte against a
reference encoder of Kafka's v2 format written here from the spec (independent of
csrc/), with the bitwise CRC32C."""
import struct

import numpy as np
import pytest

from pylog.errors import InvalidArgument
from pylog.records import (
    RecordBatch,
    build_batch,
    decode_records,
    decompress,
    empty_batch,
    iter_records,
    rewrite_batch,
    validate_batches,
    with_last_offset,
)
from tests.records.test_crc32c import crc32c_bitwise

T = 1_700_000_000_000


# ------------------------------------------------------------ reference encoder
def varint(v):
    z = ((v << 1) ^ (v >> 63)) & ((1 << 64) - 1)
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def nbytes(b):
    return varint(-1) if b is None else varint(len(b)) + b


def record(offset_delta, ts_delta, key, value, headers=()):
    body = b"\x00" + varint(ts_delta) + varint(offset_delta) + nbytes(key) + nbytes(value)
    body += varint(len(headers)) + b"".join(nbytes(k.encode()) + nbytes(v) for k, v in headers)
    return varint(len(body)) + body


def batch(base_offset, last_offset_delta, records_section, *, count, base_ts, max_ts, epoch=-1,
          attributes=0, pid=-1, pepoch=-1, bseq=-1):
    after_crc = struct.pack(">hiqqqhii", attributes, last_offset_delta, base_ts, max_ts, pid, pepoch,
                            bseq, count) + records_section
    head = struct.pack(">qiibI", base_offset, 9 + len(after_crc), epoch, 2, crc32c_bitwise(after_crc))
    return head + after_crc


# Four records: (key, value, timestamp, headers), appended at offsets 10..13.
RECS = [(b"a", b"v0", T + 5, [("h", b"1")]),
        (b"b", None, T + 1, []),
        (None, b"v2", T + 9, [("h", b"3"), ("g", None)]),
        (b"d", b"", T + 2, [])]


def source(compression="none", *, base_offset=10, timestamp_type="CreateTime"):
    data = build_batch([r[1] for r in RECS], keys=[r[0] for r in RECS], headers=[r[3] for r in RECS],
                       timestamps=[r[2] for r in RECS], base_offset=base_offset, producer_id=42,
                       producer_epoch=3, base_sequence=17, partition_leader_epoch=6,
                       compression=compression, timestamp_type=timestamp_type)
    return RecordBatch(data), decode_records(data)


def expected_section(kept, base_offset, src_base=10):
    """Records section holding RECS[kept] with their true offsets (src_base + index)."""
    ts0 = RECS[kept[0]][2]
    return b"".join(record(src_base + i - base_offset, RECS[i][2] - ts0, RECS[i][0], RECS[i][1], RECS[i][3])
                    for i in kept)


# ------------------------------------------------------------------ empty_batch
def test_empty_batch_is_a_61_byte_header():
    got = empty_batch(100, 104, T + 7, partition_leader_epoch=3)
    assert got == batch(100, 4, b"", count=0, base_ts=T + 7, max_ts=T + 7, epoch=3)
    assert len(got) == 61
    assert validate_batches(got) == (1, 0)
    b = RecordBatch(got)
    assert (b.base_offset, b.last_offset, b.record_count, b.producer_id) == (100, 104, 0, -1)


def test_empty_batch_of_one_offset_without_epoch():
    assert empty_batch(0, 0, -1) == batch(0, 0, b"", count=0, base_ts=-1, max_ts=-1)


@pytest.mark.parametrize("first,last", [(5, 4), (0, 1 << 31)])
def test_empty_batch_refuses_a_range_that_is_not_one_batch(first, last):
    with pytest.raises(InvalidArgument):
        empty_batch(first, last, T)


# ------------------------------------------------------------- with_last_offset
def test_with_last_offset_changes_only_last_offset_delta_and_crc():
    src = build_batch([b"x", b"y"], keys=[b"k", b"j"], timestamps=[T, T + 1], base_offset=50,
                      partition_leader_epoch=2)
    got = with_last_offset(src, 58)
    section = record(0, 0, b"k", b"x") + record(1, 1, b"j", b"y")
    assert src == batch(50, 1, section, count=2, base_ts=T, max_ts=T + 1, epoch=2)
    assert got == batch(50, 8, section, count=2, base_ts=T, max_ts=T + 1, epoch=2)
    assert validate_batches(got) == (1, 2)
    assert [r.offset for r in iter_records(got)] == [50, 51]  # the records keep their offsets
    assert with_last_offset(RecordBatch(memoryview(src)), 51) == src  # a view, and no change


def test_with_last_offset_grows_an_empty_batch():
    assert with_last_offset(empty_batch(7, 7, T), 9) == empty_batch(7, 9, T)


def test_with_last_offset_refuses_shrinking_and_partial_input():
    src = build_batch([b"x", b"y"], base_offset=50)
    with pytest.raises(InvalidArgument, match="cannot end earlier"):
        with_last_offset(src, 50)
    with pytest.raises(InvalidArgument, match="one record batch"):
        with_last_offset(src + b"\x00", 60)
    with pytest.raises(InvalidArgument):
        with_last_offset(src, 50 + (1 << 31))


# ---------------------------------------------------------------- rewrite_batch
@pytest.mark.parametrize("kept", [[0, 1, 2, 3], [1, 3], [2], [3]])
def test_rewrite_keeps_true_offsets_and_header_fields(kept):
    b, arrays = source()
    got = rewrite_batch(b, arrays, kept)
    max_ts = max(RECS[i][2] for i in kept)
    assert got == batch(10, 3, expected_section(kept, 10), count=len(kept), base_ts=RECS[kept[0]][2],
                        max_ts=max_ts, epoch=6, pid=42, pepoch=3, bseq=17)
    assert validate_batches(got) == (1, len(kept))
    assert [(r.offset, r.key, r.value, r.timestamp, r.headers) for r in iter_records(got)] == [
        (10 + i, RECS[i][0], RECS[i][1], RECS[i][2], tuple(RECS[i][3])) for i in kept]


def test_rewrite_of_every_record_is_the_batch_itself():
    b, arrays = source()
    assert rewrite_batch(b, arrays, np.arange(4)) == b.to_bytes()


def test_rewrite_starting_earlier_covers_the_offsets_before():
    b, arrays = source()
    got = rewrite_batch(b, arrays, [1, 3], base_offset=6)
    assert got == batch(6, 7, expected_section([1, 3], 6), count=2, base_ts=T + 1, max_ts=T + 2,
                        epoch=6, pid=42, pepoch=3, bseq=17)
    assert [r.offset for r in iter_records(got)] == [11, 13]


def test_rewrite_indexes_refer_to_arrays_of_many_batches():
    first = build_batch([b"p", b"q"], keys=[b"p", b"q"], timestamps=[T, T], base_offset=8)
    b, _ = source()
    arrays = decode_records(first + b.to_bytes())
    got = rewrite_batch(b, arrays, [2 + 1, 2 + 3])  # records 1 and 3 of the second batch
    assert [(r.offset, r.key) for r in iter_records(got)] == [(11, b"b"), (13, b"d")]
    assert got == rewrite_batch(*source(), [1, 3])


@pytest.mark.parametrize("codec,codec_id", [("gzip", 1), ("snappy", 2), ("lz4", 3), ("zstd", 4)])
def test_rewrite_recompresses_with_the_batch_codec(codec, codec_id):
    b, arrays = source(codec)
    got = rewrite_batch(b, arrays, [0, 2])
    head = struct.unpack_from(">qiibIhiqqqhii", got)
    assert head[:4] == (10, len(got) - 12, 6, 2)
    assert head[5:] == (codec_id, 3, T + 5, T + 9, 42, 3, 17, 2)
    assert head[4] == crc32c_bitwise(got[21:])
    assert decompress(codec_id, got[61:]) == expected_section([0, 2], 10)
    assert validate_batches(got) == (1, 2)


@pytest.mark.parametrize("codec,timestamp_type,attributes", [
    ("none", "CreateTime", 0), ("zstd", "CreateTime", 0), ("gzip", "LogAppendTime", 8)])
def test_rewrite_keeping_nothing_is_a_producer_empty_batch(codec, timestamp_type, attributes):
    b, arrays = source(codec, timestamp_type=timestamp_type)
    got = rewrite_batch(b, arrays, [])
    assert got == batch(10, 3, b"", count=0, base_ts=b.max_timestamp, max_ts=b.max_timestamp, epoch=6,
                        attributes=attributes, pid=42, pepoch=3, bseq=17)
    assert validate_batches(got) == (1, 0)


@pytest.mark.parametrize("keep,base_offset,match", [
    ([3, 1], None, "offsets must increase"),
    ([1, 1], None, "offsets must increase"),
    ([0], 11, "do not lie in"),
    ([4], None, "indexes must be in"),
    ([-1], None, "indexes must be in"),
    (np.array([True, False, True, False]), None, "record indexes"),
    ([[0, 1]], None, "record indexes"),
    ([0], 10 - (1 << 31), "do not fit one batch"),
])
def test_rewrite_refuses_bad_input(keep, base_offset, match):
    b, arrays = source()
    with pytest.raises(InvalidArgument, match=match):
        rewrite_batch(b, arrays, keep, base_offset=base_offset)


def test_rewrite_refuses_records_of_another_batch():
    first = build_batch([b"p"], keys=[b"p"], base_offset=0)
    b, _ = source()
    arrays = decode_records(first + b.to_bytes())
    with pytest.raises(InvalidArgument, match="do not lie in"):
        rewrite_batch(b, arrays, [0, 1])

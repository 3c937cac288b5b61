"""Kafka v2 record batches: a hand-encoded vector from the spec, validation of every
kind of damage, compression round trips, and round-trip/robustness properties."""
import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pylog._native import ffi, lib
from pylog.errors import CorruptRecordError, InvalidArgument, InvalidTimestamp, UnsupportedCompressionType
from pylog.records import (
    Record,
    RecordBatch,
    build_batch,
    decode_batches,
    decode_records,
    iter_batches,
    iter_records,
    validate_batches,
)
from tests.records.test_crc32c import crc32c_bitwise

# Two records, encoded by hand from Kafka's record format (zigzag varints):
#  record 0: ts delta 0, offset delta 0, key b"k", value b"v1", no headers
#    body  = 00 | 00 | 00 | 02 'k' | 04 'v' '1' | 00           -> 9 bytes, length 0x12
#  record 1: ts delta 5, offset delta 1, key null, value b"val", header ("h", b"x")
#    body  = 00 | 0a | 02 | 01 | 06 'v' 'a' 'l' | 02 | 02 'h' 02 'x'  -> 13 bytes, length 0x1a
RECORDS = bytes.fromhex("12" "00" "00" "00" "02" "6b" "04" "7631" "00"
                        "1a" "00" "0a" "02" "01" "06" "76616c" "02" "02" "68" "02" "78")


def hand_batch(base_offset=0, epoch=-1):
    after_crc = struct.pack(">hiqqqhii", 0, 1, 1000, 1005, -1, -1, -1, 2) + RECORDS
    crc = crc32c_bitwise(after_crc)
    head = struct.pack(">qiibI", base_offset, 49 + len(RECORDS), epoch, 2, crc)
    return head + after_crc


def test_hand_vector_is_what_build_batch_writes():
    expected = hand_batch()
    assert len(expected) == 61 + 24  # 1+9 and 1+13 bytes of records
    built = build_batch([b"v1", b"val"], keys=[b"k", None], headers=[[], [("h", b"x")]],
                        timestamps=[1000, 1005])
    assert built == expected


def test_hand_vector_decodes():
    recs = list(iter_records(hand_batch()))
    assert recs == [Record(0, 1000, b"k", b"v1", ()), Record(1, 1005, None, b"val", (("h", b"x"),))]
    b = RecordBatch(hand_batch(base_offset=42, epoch=7))
    assert (b.base_offset, b.partition_leader_epoch, b.record_count, b.last_offset) == (42, 7, 2, 43)
    assert (b.base_timestamp, b.max_timestamp, b.compression_type, b.timestamp_type) == (1000, 1005, "none", "CreateTime")
    b.validate()  # baseOffset and epoch lie outside the CRC
    assert [r.offset for r in b] == [42, 43]


def test_validate_counts():
    data = hand_batch() + build_batch([b"x"] * 5, base_offset=2)
    assert validate_batches(data) == (2, 7)
    assert [b.record_count for b in iter_batches(data)] == [2, 5]


def _with(buf, pos, fmt, value, recrc=True):
    b = bytearray(buf)
    struct.pack_into(fmt, b, pos, value)
    if recrc:
        struct.pack_into(">I", b, 17, crc32c_bitwise(bytes(b[21:])))
    return bytes(b)


@pytest.mark.parametrize("mutate, reason", [
    (lambda b: _with(b, 16, ">b", 1, recrc=False), "magic"),
    (lambda b: _with(b, 17, ">I", 0xDEADBEEF, recrc=False), "CRC"),
    (lambda b: _with(b, 57, ">i", 3), "recordCount"),
    (lambda b: _with(b, 57, ">i", 1), "recordCount"),
    (lambda b: _with(b, 23, ">i", 0), "recordCount"),  # 2 records cannot fit in deltas 0..0
    (lambda b: _with(b, 61 + 13, ">B", 0x0A), "offset deltas"),  # record 1's offsetDelta 5 > 1
    (lambda b: _with(b, 35, ">q", 1001), "maxTimestamp"),
    (lambda b: _with(b, 8, ">i", 10, recrc=False), "batchLength"),
    (lambda b: _with(b, 61, ">B", 0x7F), "malformed record"),  # record length too long
    (lambda b: _with(b, 65, ">B", 0x99), "malformed record"),  # key length overruns
])
def test_each_kind_of_damage_is_named(mutate, reason):
    with pytest.raises(CorruptRecordError, match=reason):
        validate_batches(mutate(hand_batch()))


def test_every_cut_length_is_rejected():
    data = hand_batch()
    for cut in range(len(data)):
        with pytest.raises(CorruptRecordError):
            validate_batches(data[:cut])


def test_overlong_varint_is_rejected():
    # record 0's timestamp delta written as 11 continuation bytes
    bad_records = bytes.fromhex("1c" "00" + "80" * 10 + "00" "00" "02" "6b" "04" "7631" "00")
    after = struct.pack(">hiqqqhii", 0, 0, 0, 0, -1, -1, -1, 1) + bad_records
    head = struct.pack(">qiibI", 0, 49 + len(bad_records), -1, 2, crc32c_bitwise(after))
    with pytest.raises(CorruptRecordError, match="malformed"):
        validate_batches(head + after)


@pytest.mark.parametrize("encoded, value", [
    (b"\x00", 0), (b"\x01", -1), (b"\x02", 1), (b"\x7f", -64), (b"\x80\x01", 64),
    (b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", -(1 << 63)),
])
def test_minimal_varints_decode(encoded, value):
    out = ffi.new("int64_t *")
    assert lib.pl_varint_decode(encoded, len(encoded), out) == len(encoded)
    assert out[0] == value


@pytest.mark.parametrize("encoded", [
    b"\x80\x00",                   # 0 in two bytes
    b"\x81\x00",                   # -1 in two bytes
    b"\x80\x80\x00",               # 0 in three
    b"\xff\x80\x00",               # zigzag 127 in three
    b"\x80" * 9 + b"\x00",          # 10 bytes, the last one 0
    b"\x80" * 10 + b"\x00",         # 11 bytes
    b"\xff" * 9 + b"\x02",          # bits past 64
])
def test_non_minimal_varints_are_rejected(encoded):
    out = ffi.new("int64_t *")
    assert lib.pl_varint_decode(encoded, len(encoded), out) == lib.PL_E_RECORD


def _reference_varint(data: bytes):
    """(bytes used, value) of a minimal zigzag varint of at most 10 bytes, else None."""
    z = 0
    for i, b in enumerate(data[:10]):
        if i > 0 and b == 0:
            return None  # non-minimal
        if i == 9 and (b & 0x80 or b >> 1):
            return None  # past 64 bits
        z |= (b & 0x7F) << (7 * i)
        if not b & 0x80:
            return i + 1, (z >> 1) ^ -(z & 1)
    return None


@settings(max_examples=3000, deadline=None)
@given(st.binary(min_size=0, max_size=12))
def test_varint_decoding_matches_a_reference_decoder(data):
    """The one- and two-byte fast paths of the C varint reader agree with the general
    rules (minimal encodings only, at most 10 bytes, 64 bits)."""
    out = ffi.new("int64_t *")
    n = lib.pl_varint_decode(data, len(data), out) if data else lib.pl_varint_decode(ffi.NULL, 0, out)
    want = _reference_varint(data)
    if want is None:
        assert n < 0
    else:
        assert (n, out[0]) == want


def _batch_of(records: bytes, count: int) -> bytes:
    after = struct.pack(">hiqqqhii", 0, count - 1, 1000, 1005, -1, -1, -1, count) + records
    return struct.pack(">qiibI", 0, 49 + len(records), -1, 2, crc32c_bitwise(after)) + after


# record 0 of RECORDS with its headerCount 0 written as 0x80 0x00 (length 9 -> 10)
NON_MINIMAL_HEADER_COUNT = bytes.fromhex("14" "00" "00" "00" "02" "6b" "04" "7631" "8000") + RECORDS[10:]
# record 1 of RECORDS with its header value length 1 written as 0x82 0x00 (length 13 -> 14)
NON_MINIMAL_HEADER_VALUE = RECORDS[:10] + bytes.fromhex("1c" "00" "0a" "02" "01" "06" "76616c" "02" "02" "68"
                                                        "8200" "78")


def test_records_with_the_same_varints_minimal_are_valid():
    # the batches below differ from this one only in one varint's encoding
    assert validate_batches(_batch_of(RECORDS, 2)) == (1, 2)
    assert len(decode_records(_batch_of(RECORDS, 2)).offsets) == 2


@pytest.mark.parametrize("records", [NON_MINIMAL_HEADER_COUNT, NON_MINIMAL_HEADER_VALUE])
def test_non_minimal_varint_in_a_record_is_rejected(records):
    data = _batch_of(records, 2)
    with pytest.raises(CorruptRecordError, match="malformed"):
        validate_batches(data)
    with pytest.raises(CorruptRecordError, match="malformed"):
        decode_records(data)


def test_unknown_codec():
    data = _with(hand_batch(), 21, ">h", 6)
    with pytest.raises((UnsupportedCompressionType, CorruptRecordError)):
        validate_batches(data)


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
def test_compressed_round_trip(codec):
    values = [bytes([i]) * (i % 50) for i in range(200)]
    data = build_batch(values, keys=[b"k%d" % i for i in range(200)], compression=codec, base_offset=10)
    b = RecordBatch(data)
    assert b.compression_type == codec
    assert validate_batches(data) == (1, 200)
    recs = list(iter_records(data))
    assert [r.value for r in recs] == values
    assert [r.offset for r in recs] == list(range(10, 210))
    arrays = decode_records(data + build_batch([b"plain"], base_offset=210), min_offset=205)
    assert arrays.offsets.tolist() == list(range(205, 211))
    assert arrays.values()[-1] == b"plain"


def test_log_append_time_batches_use_max_timestamp():
    data = build_batch([b"a", b"b"], base_timestamp=5, timestamp_type="LogAppendTime")
    assert RecordBatch(data).timestamp_type == "LogAppendTime"
    assert [r.timestamp for r in iter_records(data)] == [5, 5]


def test_bad_arguments():
    with pytest.raises(InvalidArgument):
        build_batch([])
    with pytest.raises(InvalidArgument):
        build_batch(["text"])
    with pytest.raises(InvalidArgument):
        build_batch([b"a"], keys=[b"a", b"b"])
    with pytest.raises(InvalidTimestamp):
        build_batch([b"a"], timestamps=[-5])
    with pytest.raises(InvalidArgument):
        build_batch([b"a"], headers=[[("k", "not bytes")]])
    with pytest.raises(InvalidArgument):
        build_batch([b"a"], compression="brotli")


record_st = st.tuples(
    st.one_of(st.none(), st.binary(max_size=40)),
    st.one_of(st.none(), st.binary(max_size=300)),
    st.lists(st.tuples(st.text(max_size=5), st.one_of(st.none(), st.binary(max_size=8))), max_size=3),
    st.integers(min_value=0, max_value=2**41),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(record_st, min_size=1, max_size=30), st.sampled_from(["none", "gzip", "zstd"]),
       st.integers(min_value=0, max_value=2**40))
def test_round_trip_property(records, codec, base_offset):
    keys = [r[0] for r in records]
    values = [r[1] for r in records]
    headers = [r[2] for r in records]
    ts = [r[3] for r in records]
    data = build_batch(values, keys=keys, headers=headers, timestamps=ts, base_offset=base_offset,
                       compression=codec)
    assert validate_batches(data) == (1, len(records))
    out = list(iter_records(data))
    assert [r.offset for r in out] == list(range(base_offset, base_offset + len(records)))
    assert [r.key for r in out] == keys
    assert [r.value for r in out] == values
    assert [r.timestamp for r in out] == ts
    assert [list(r.headers) for r in out] == [[tuple(h) for h in hs] for hs in headers]
    assert RecordBatch(data).max_timestamp == max(ts)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.integers(min_value=0, max_value=2**32))
def test_mutations_never_crash(noise, seed):
    rng = random.Random(seed)
    data = bytearray(build_batch([b"abc", None, b"x" * 20], keys=[None, b"k", b"kk"],
                                 headers=[[], [("a", b"b")], []]))
    for _ in range(rng.randint(1, 4)):
        data[rng.randrange(len(data))] = rng.randrange(256)
    for candidate in (bytes(data), bytes(noise), bytes(data[: rng.randrange(len(data))]) + noise):
        try:
            n_batches, n_records = validate_batches(candidate)
        except (CorruptRecordError, UnsupportedCompressionType):
            continue
        assert len(decode_records(candidate, min_offset=-2**63)) == n_records


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["none", "gzip", "zstd"]), st.integers(0, 30),
                          st.booleans()), min_size=1, max_size=8),
       st.integers(0, 400), st.data())
def test_decode_paths_agree(specs, skip, data):
    """A run of batches, some compressed (maybe empty), decodes to the same records whether
    it is decoded joined (decode_records) or as a list (decode_batches), from any offset;
    and the buffer handed out is the records' bytes, joined once if it came in pieces."""
    batches, expect, off = [], [], 7
    for codec, n, with_headers in specs:
        values = [data.draw(st.one_of(st.none(), st.binary(max_size=20))) for _ in range(n)]
        keys = [b"k%d" % (off + i) if i % 3 else None for i in range(n)]
        headers = [[("h", b"x%d" % i)] if with_headers else [] for i in range(n)]
        batches.append(build_batch(values, keys=keys, headers=headers, base_offset=off,
                                   compression=codec) if n else build_batch([b"one"], base_offset=off))
        if not n:
            values, keys, headers = [b"one"], [None], [[]]
        expect += [(off + i, k, v, tuple(h)) for i, (k, v, h) in enumerate(zip(keys, values, headers))]
        off += max(n, 1)
    min_offset = 7 + skip
    want = [e for e in expect if e[0] >= min_offset]
    joined = decode_records(b"".join(batches), min_offset)
    listed = decode_batches([RecordBatch(b) for b in batches], min_offset)
    for arrays in (joined, listed):
        pieces = b"".join(bytes(c) for c in arrays.chunks())  # before .buffer joins them
        recs = arrays.records()
        assert [(r.offset, r.key, r.value, tuple(r.headers)) for r in recs] == want
        assert pieces == bytes(arrays.buffer)


@pytest.mark.parametrize("codec", ["none", "zstd"])
def test_huge_record_count_is_refused_before_allocating(codec):
    """recordCount is read before the records: a damaged one (2^31-1) must give
    CorruptRecordError, not an allocation of gigabytes of columns."""
    data = _with(build_batch([b"v"] * 3, compression=codec), 57, ">i", 2**31 - 1)
    with pytest.raises(CorruptRecordError, match="recordCount|records|claims"):
        decode_records(data)
    with pytest.raises(CorruptRecordError):
        decode_batches([RecordBatch(data)])


def test_an_error_kept_in_a_reference_cycle_is_collected_safely():
    """A validation error whose traceback sits in a reference cycle (as a server keeps
    errors for its answers) must not leave a live cffi export of the caller's buffer:
    the garbage collector would clear the memoryview anyway (CPython's memory_clear
    drops its buffer even with exports) and the process crashed.  The buffers are now
    released before any error is raised.  Run in a child process: a crash kills it."""
    import subprocess
    import sys
    from pathlib import Path

    import pylog

    script = Path(__file__).with_name("gc_cycle_script.py")
    root = str(Path(pylog.__file__).resolve().parents[1])
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                       env={**__import__("os").environ, "PYTHONPATH": root})
    assert r.returncode == 0 and r.stdout.strip() == "ok", (r.returncode, r.stderr[-2000:])


# ------------------------------------------------------------ restamp_producer
@pytest.mark.parametrize("compression", ["none", "zstd"])
@pytest.mark.parametrize("writable", [False, True])
def test_restamp_producer_sets_the_fields_and_a_crc_over_the_result(compression, writable):
    from pylog.records.batch import restamp_producer

    vals = [b"v%d" % i * 7 for i in range(50)]
    keys = [b"k%d" % i for i in range(50)]
    plain = build_batch(vals, keys=keys, base_timestamp=1_700_000_000_000, compression=compression)
    given_buf = bytearray(plain) if writable else plain
    out = restamp_producer(given_buf, 4242, 3, 1000)
    if writable:  # changed in place
        assert bytes(given_buf) == bytes(out)
    else:  # bytes stay as they were
        assert given_buf == plain
    validate_batches(out)  # CRC (over what was returned) and every record check
    (b,) = list(iter_batches(bytes(out)))
    assert (b.producer_id, b.producer_epoch, b.base_sequence) == (4242, 3, 1000)
    (orig,) = list(iter_batches(plain))
    assert (orig.producer_id, orig.producer_epoch, orig.base_sequence) == (-1, -1, -1)
    assert b.crc != orig.crc
    # Nothing else changed: the records, timestamps and the bytes outside the fields and CRC.
    assert [(r.key, r.value, r.timestamp) for r in b.records()] == [(k, v, 1_700_000_000_000) for k, v in zip(keys, vals)]
    o = bytes(out)
    assert o[:17] == plain[:17] and o[21:43] == plain[21:43] and o[57:] == plain[57:]


def test_restamp_producer_refuses_what_is_not_one_whole_batch():
    from pylog.records.batch import restamp_producer

    one = build_batch([b"a", b"b"])
    with pytest.raises(CorruptRecordError, match="one whole batch"):
        restamp_producer(one + one, 1, 0, 0)
    with pytest.raises(CorruptRecordError, match="one whole batch"):
        restamp_producer(one[:-1], 1, 0, 0)
    with pytest.raises(CorruptRecordError):
        restamp_producer(one[:30], 1, 0, 0)  # not even a header

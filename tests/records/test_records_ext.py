"""Records built in C (pylog._native._records, through record_list / iter_records)
against the numpy path (decode_records(...).records()): the same records for random
batches (headers, null keys and values, compression, LogAppendTime, offset windows),
CorruptRecordError and never a crash for damaged bytes."""
import gc
import random
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pylog.errors import CorruptRecordError, UnsupportedCompressionType
from pylog.records import (
    Record,
    build_batch,
    decode_records,
    iter_records,
    lazy_records,
    record_list,
    validate_batches,
)
from pylog.records import batch as batch_module
from tests.records.test_crc32c import crc32c_bitwise

record_st = st.tuples(
    st.one_of(st.none(), st.binary(max_size=40)),
    st.one_of(st.none(), st.binary(max_size=300)),
    st.lists(st.tuples(st.text(max_size=5), st.one_of(st.none(), st.binary(max_size=8))), max_size=3),
    st.integers(min_value=0, max_value=2**41),
)

batch_st = st.tuples(
    st.lists(record_st, min_size=1, max_size=20),
    st.sampled_from(["none", "gzip", "zstd"]),
    st.sampled_from(["CreateTime", "LogAppendTime"]),
    st.integers(min_value=0, max_value=5),  # gap in offsets before the batch
)


def _batches(specs, first_offset):
    """Concatenated batches from hypothesis specs; returns (bytes, [offset of each record])."""
    parts, offsets, off = [], [], first_offset
    for records, codec, ts_type, gap in specs:
        off += gap
        keys, values, headers, ts = (list(col) for col in zip(*records))
        parts.append(build_batch(values, keys=keys, headers=headers, timestamps=ts, base_offset=off,
                                 compression=codec, timestamp_type=ts_type))
        offsets += range(off, off + len(records))
        off += len(records)
    return b"".join(parts), offsets


def _numpy_records(data, min_offset=0, max_offset=None):
    out = decode_records(data, min_offset).records()
    return out if max_offset is None else [r for r in out if r.offset < max_offset]


@settings(max_examples=200, deadline=None)
@given(st.lists(batch_st, min_size=1, max_size=5), st.integers(min_value=0, max_value=2**40), st.data())
def test_same_records_as_the_numpy_path(specs, first_offset, data):
    buf, offsets = _batches(specs, first_offset)
    lo = data.draw(st.integers(min_value=first_offset - 2, max_value=offsets[-1] + 2))
    hi = data.draw(st.one_of(st.none(), st.integers(min_value=lo, max_value=offsets[-1] + 3)))
    got = record_list(buf, lo, hi)
    assert got == _numpy_records(buf, lo, hi)
    assert [r.offset for r in got] == [o for o in offsets if o >= lo and (hi is None or o < hi)]
    assert all(type(r) is Record for r in got)
    for r in got:  # exactly the types the numpy path gives, field by field
        assert type(r.offset) is int and type(r.timestamp) is int
        assert r.key is None or type(r.key) is bytes
        assert r.value is None or type(r.value) is bytes
        assert type(r.headers) is tuple
        assert all(type(h) is tuple and type(h[0]) is str and (h[1] is None or type(h[1]) is bytes)
                   for h in r.headers)
    assert list(iter_records(buf, lo)) == _numpy_records(buf, lo)
    assert list(lazy_records(buf, lo, hi)) == got


def test_lazy_records_hold_the_buffer_until_exhausted():
    data = bytearray(build_batch([b"a", b"b"], base_offset=1) + build_batch([b"c"], base_offset=3,
                                                                          compression="gzip"))
    it = lazy_records(data)
    assert next(it) == (1, next(iter(record_list(bytes(data)))).timestamp, None, b"a", ())
    with pytest.raises(BufferError):  # exported while the iterator may still read it
        data += b"x"
    assert [r.value for r in it] == [b"b", b"c"]
    data += b"x"  # exhausted: released
    assert next(it, None) is None
    it = lazy_records(data[:-1])
    del it  # dropped before the end: released too


def test_lazy_records_raise_when_they_reach_the_damage():
    good = build_batch([b"a", b"b"], base_offset=0)
    bad = bytearray(build_batch([b"c", b"d"], base_offset=2))
    bad[61] = 0x7F  # first record's length now runs past the batch
    it = lazy_records(good + _recrc(bad))
    assert [next(it).value, next(it).value] == [b"a", b"b"]
    with pytest.raises(CorruptRecordError, match="offset 2"):
        next(it)
    assert next(it, None) is None  # an iterator that failed is over


def test_fields_of_a_known_batch():
    buf = build_batch([b"v1", None, b""], keys=[b"k", None, b""],
                      headers=[[("h", b"x"), ("\u00e9", None)], [], [("", b"")]],
                      timestamps=[1000, 1005, 999], base_offset=42)
    assert record_list(buf) == [
        Record(42, 1000, b"k", b"v1", (("h", b"x"), ("\u00e9", None))),
        Record(43, 1005, None, None, ()),
        Record(44, 999, b"", b"", (("", b""),)),
    ]
    # LogAppendTime: every record carries the batch's maxTimestamp
    lat = build_batch([b"a", b"b"], timestamps=[5, 9], timestamp_type="LogAppendTime")
    assert [r.timestamp for r in record_list(lat)] == [9, 9]


def test_records_behave_as_tuples_and_are_not_gc_tracked():
    recs = record_list(build_batch([b"x", b"y"], keys=[None, b"k"], headers=[[("h", b"1")], []],
                                   timestamps=[3, 4], base_offset=5))
    r = recs[0]
    plain = (5, 3, None, b"x", (("h", b"1"),))
    assert r == plain and hash(r) == hash(plain) and tuple(r) == plain
    assert r.offset == 5 and r.value == b"x" and r._replace(value=b"z").value == b"z"
    assert {r: 1}[Record(*plain)] == 1
    # Records hold only atomic values: the collector never needs to look at them
    assert not any(gc.is_tracked(x) for x in recs)
    assert not gc.is_tracked(r.headers) and not gc.is_tracked(r.headers[0])
    gc.collect()
    assert recs[1] == (6, 4, b"k", b"y", ())


def test_this_interpreter_builds_records_directly():
    # Python 3.11-3.13 (what the wheels are built for) take the direct path; the
    # fallback exists for a tuple layout that caches hashes (see csrc/pyrecords.c).
    assert batch_module.RECORDS_BUILT_DIRECTLY is True


@pytest.mark.parametrize("make", [bytes, bytearray, memoryview, lambda b: memoryview(b"xx" + b)[2:],
                                  lambda b: np.frombuffer(b, dtype=np.uint8)])
def test_any_contiguous_buffer(make):
    raw = build_batch([b"a", b"bb"], base_offset=3) + build_batch([b"c"], base_offset=5, compression="zstd")
    assert record_list(make(raw)) == _numpy_records(raw)


def test_empty_input_and_empty_batches():
    assert record_list(b"") == []
    buf = build_batch([b"a"], base_offset=0)
    empty = bytearray(buf)
    struct.pack_into(">i", empty, 57, 0)  # recordCount 0: a batch the cleaner emptied
    b = build_batch([b"b"], base_offset=1)  # once: two builds may straddle a millisecond (timestamps)
    assert record_list(bytes(empty) + b) == _numpy_records(b)


def _recrc(b: bytearray) -> bytes:
    struct.pack_into(">I", b, 17, crc32c_bitwise(bytes(b[21:])))
    return bytes(b)


@pytest.mark.parametrize("damage, words", [
    (lambda b: b[:-1], "past the end"),
    (lambda b: b + b"\x00" * 10, "trailing"),
    (lambda b: b[:16] + b"\x01" + b[17:], "magic"),
    (lambda b: b[:8] + struct.pack(">i", 10) + b[12:], "batchLength"),
    (lambda b: _recrc(bytearray(b[:57]) + struct.pack(">i", 3) + b[61:]), "recordCount"),
    (lambda b: _recrc(bytearray(b[:57]) + struct.pack(">i", -1) + b[61:]), "negative"),
    (lambda b: _recrc(bytearray(b[:61]) + b"\x7f" + b[62:]), "malformed record"),
])
def test_damage_raises_corrupt_record_error_naming_it(damage, words):
    good = build_batch([b"abc", b"defg"], keys=[b"k", None])
    with pytest.raises(CorruptRecordError, match=words):
        record_list(damage(good))


def test_unknown_codec_raises_unsupported_compression_type():
    b = bytearray(build_batch([b"abc"], compression="gzip"))
    struct.pack_into(">h", b, 21, 6)  # codec 6 does not exist
    with pytest.raises(UnsupportedCompressionType):
        record_list(_recrc(b))


def test_bad_compressed_body_raises_corrupt_record_error():
    b = bytearray(build_batch([b"abc" * 10], compression="zstd"))
    b[61:] = b"\x00" * (len(b) - 61)
    with pytest.raises(CorruptRecordError, match="decompress"):
        record_list(_recrc(b))


def _mutants(seed, n):
    rng = random.Random(seed)
    valid = [
        build_batch([b"a" * i for i in range(1, 6)], keys=[None, b"k", None, b"kk", None]),
        build_batch([b"x"] * 3, headers=[[("h", b"v")], [], [("a", None)]], base_offset=5)
        + build_batch([b"yy"] * 2, base_offset=8),
        build_batch([b"z" * 40] * 4, compression="zstd"),
        build_batch([b"z" * 40] * 4, headers=[[("k", b"v")]] * 4, compression="gzip"),
    ]
    for _ in range(n):
        data = bytearray(rng.choice(valid))
        for _ in range(rng.randint(1, 5)):
            op = rng.randrange(4)
            if op == 0 and data:
                data[rng.randrange(len(data))] = rng.randrange(256)
            elif op == 1 and data:
                del data[rng.randrange(len(data)):]
            elif op == 2:
                data += bytes(rng.getrandbits(8) for _ in range(rng.randrange(30)))
            else:  # damage the records but keep the CRC right: only record parsing can tell
                if len(data) > 62:
                    data[rng.randrange(61, len(data))] = rng.randrange(256)
                    if len(data) >= 21:
                        struct.pack_into(">I", data, 17, crc32c_bitwise(bytes(data[21:])))
        yield bytes(data)


@pytest.mark.parametrize("seed", range(4))
def test_mutated_bytes_raise_or_agree_never_crash(seed):
    for data in _mutants(seed, 1500):
        try:
            got = record_list(data, -2**63)
        except (CorruptRecordError, UnsupportedCompressionType):
            got = None
        lazy = []
        try:
            for rec in lazy_records(data, -2**63):
                lazy.append(rec)
        except (CorruptRecordError, UnsupportedCompressionType):
            assert got is None  # the same walk: it fails exactly where decode fails
        else:
            assert lazy == got
        try:
            n_records = validate_batches(data)[1]
        except (CorruptRecordError, UnsupportedCompressionType):
            n_records = None
        try:
            expect = decode_records(data, -2**63).records()
        except (CorruptRecordError, UnsupportedCompressionType):
            expect = None
        if n_records is not None and expect is not None:
            # valid batches (the CRC does not say a compressed body decompresses): same records
            assert got == expect and len(got) == n_records
        elif got is not None and expect is not None:
            assert got == expect  # either path may refuse damage the other lets through


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_crash(noise):
    for data in (noise, build_batch([b"v"]) + noise):
        try:
            record_list(data, -2**63)
        except (CorruptRecordError, UnsupportedCompressionType):
            pass
        try:
            for _ in lazy_records(data, -2**63):
                pass
        except (CorruptRecordError, UnsupportedCompressionType):
            pass


def test_join_fields_matches_the_python_layout():
    """join_fields (C) lays a list of bytes/None out as prepare_batch's Python path does:
    the bytes end to end and native int32 lengths, -1 for None; anything else is
    declined (None) so the Python path can name what is wrong."""
    import random
    from array import array

    from pylog._native import _records

    rng = random.Random(7)
    for _ in range(200):
        items = [None if rng.random() < 0.1 else rng.randbytes(rng.choice((0, 1, 5, 100, 3000)))
                 for _ in range(rng.randrange(0, 50))]
        joined, lens = _records.join_fields(items)
        want = array("i", [-1 if x is None else len(x) for x in items])
        assert joined == b"".join(x for x in items if x is not None)
        assert lens == want.tobytes()
    for declined in ((b"a",), [b"a", "str"], [bytearray(b"a")], [b"a", 1], "abc", None, [memoryview(b"x")]):
        assert _records.join_fields(declined) is None
    with pytest.raises(TypeError):
        _records.join_fields()


def test_append_of_a_list_goes_through_gather_fields_and_reads_back(tmp_path):
    from pylog.errors import InvalidArgument
    from pylog.storage import Log

    with Log.open(tmp_path / "l") as log:
        vals = [b"v%d" % i for i in range(500)] + [None, b""]
        keys = [None if i % 3 else b"k%d" % i for i in range(len(vals))]
        log.append(vals, keys=keys)
        got = list(log.records())
        assert [r.value for r in got] == vals and [r.key for r in got] == keys
        with pytest.raises(InvalidArgument, match=r"values\[1\] must be bytes or None, got str"):
            log.append([b"ok", "bad"])
        assert log.log_end_offset == len(vals)

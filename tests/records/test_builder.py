"""BatchBuilder (pl_builder_*): the producer's record-at-a-time batch encoder.

Its bytes must be build_batch's for the same records; bad input (malformed header
sections, impossible lengths, corrupt records to re-slice) is refused with a status
and leaves the open batch as it was; random input never crashes it (run under ASan
by scripts/asan-test.sh).
"""
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pylog._native import ffi, lib
from pylog.errors import CorruptRecordError, InvalidArgument, RecordTooLarge
from pylog.records import BatchBuilder, build_batch, encode_headers, iter_records, validate_batches

maybe_bytes = st.one_of(st.none(), st.binary(max_size=40))
header = st.tuples(st.text(max_size=5), st.one_of(st.none(), st.binary(max_size=8)))
record = st.tuples(maybe_bytes, maybe_bytes, st.lists(header, max_size=3),
                   st.one_of(st.none(), st.integers(min_value=0, max_value=1 << 42)))


def fill(records, create_ms=1_000, capacity=16):
    b = BatchBuilder(capacity, create_ms)
    for i, (v, k, hs, ts) in enumerate(records):
        assert b.append(v, k, encode_headers(hs) if hs else None, ts) == i
    return b


def expected(records, create_ms=1_000, **ids):
    return build_batch([r[0] for r in records], keys=[r[1] for r in records],
                       headers=[r[2] for r in records],
                       timestamps=[create_ms if r[3] is None else r[3] for r in records], **ids)


@settings(max_examples=200, deadline=None)
@given(st.lists(record, min_size=1, max_size=20), st.integers(min_value=1, max_value=300))
def test_bytes_equal_build_batch(records, capacity):
    """Any records, any start capacity (the buffer grows): build_batch's bytes."""
    b = fill(records, capacity=capacity)
    ids = dict(producer_id=77, producer_epoch=3, base_sequence=1000)
    assert b.seal(**ids) == expected(records, **ids)
    assert b.seal() == expected(records)  # sealing again (a retry) rewrites only the header
    assert len(b) == len(records)


def test_add_is_append_without_timestamp_or_headers():
    b1, b2 = BatchBuilder(64, 555), BatchBuilder(64, 555)
    for k, v in ((None, b"v0"), (b"key", b""), (b"", b"x" * 30)):
        b1.append(v, k)
        i = lib.pl_builder_add(b2.cdata, ffi.NULL if k is None else k, -1 if k is None else len(k), v, len(v))
        assert i == len(b2) - 1
    assert b1.seal() == b2.seal() == build_batch([b"v0", b"", b"x" * 30], keys=[None, b"key", b""],
                                                 base_timestamp=555)


@given(st.lists(record, min_size=1, max_size=12), st.data())
@settings(max_examples=100, deadline=None)
def test_slice_is_the_batch_of_those_records(records, data):
    lo = data.draw(st.integers(0, len(records) - 1))
    hi = data.draw(st.integers(lo + 1, len(records)))
    part = fill(records).slice(lo, hi)
    assert part.seal() == expected(records[lo:hi])


@pytest.mark.parametrize("codec", [1, 4])
def test_compressed_seal_holds_the_same_records(codec):
    records = [(b"v%d" % i * 10, None if i % 2 else b"k", [("h", b"%d" % i)] if i % 3 == 0 else [], None)
               for i in range(50)]
    data = fill(records).seal(codec=codec)
    assert validate_batches(data) == (1, 50)
    assert [(r.value, r.key, r.headers) for r in iter_records(data)] == \
        [(v, k, tuple(hs)) for v, k, hs, _ in records]


def state(b):
    c = b.cdata
    return (c.used, c.count, c.base_timestamp, c.max_timestamp, bytes(ffi.buffer(c.buf, c.used)))


def test_malformed_header_sections_are_refused_and_change_nothing():
    b = fill([(b"a", None, [], None)])
    before = state(b)
    good = encode_headers([("k", b"v"), ("n", None)])
    for bad in (b"\x02", good[:-1], good + b"\x00", b"\x04\x01", b"\x01\x00", b"\xff" * 11):
        with pytest.raises(CorruptRecordError):
            b.append(b"x", None, bad)
        assert state(b) == before
    assert b.seal() == expected([(b"a", None, [], None)])


def test_impossible_lengths_and_pointers_are_refused():
    b = BatchBuilder(64, 0)
    c = b.cdata
    null = ffi.NULL
    assert lib.pl_builder_add(c, null, -2, b"v", 1) == lib.PL_E_ARG
    assert lib.pl_builder_add(c, null, -1, b"v", -2) == lib.PL_E_ARG
    assert lib.pl_builder_add(c, null, 3, b"v", 1) == lib.PL_E_ARG  # key length without a key
    assert lib.pl_builder_add(c, null, -1, null, 5) == lib.PL_E_ARG
    assert lib.pl_builder_append(c, 0, null, -1, b"v", 1, null, 4) == lib.PL_E_ARG
    assert lib.pl_builder_append(c, 0, null, -1, b"v", 1, b"\x00", -1) == lib.PL_E_ARG
    # Over the record limit: refused from the lengths alone, nothing read.
    assert lib.pl_builder_add(c, null, -1, b"v", 0x7FFFFFFF) == lib.PL_E_TOO_LARGE
    # Does not fit the buffer: refused before reading the value.
    assert lib.pl_builder_add(c, null, -1, b"v", 1 << 20) == lib.PL_E_NOSPACE
    assert c.count == 0 and c.used == lib.PL_BATCH_HEADER_BYTES
    with pytest.raises(InvalidArgument):
        b.seal()  # an empty batch
    with pytest.raises(InvalidArgument):
        b.append("text")
    with pytest.raises(InvalidArgument):
        b.slice(0, 1)
    # A builder whose fields were damaged is refused, not trusted.
    c.used = c.cap + 1
    assert lib.pl_builder_add(c, null, -1, b"v", 1) == lib.PL_E_ARG
    assert lib.pl_builder_seal(c, -1, -1, -1) == lib.PL_E_ARG
    assert lib.pl_builder_add(ffi.NULL, null, -1, b"v", 1) == lib.PL_E_ARG
    assert lib.pl_builder_init(c, ffi.NULL, 100, 0) == lib.PL_E_ARG


def test_too_large_record_raises_record_too_large():
    b = BatchBuilder(64, 0)
    big = ffi.new("uint8_t[]", 8)
    assert lib.pl_builder_append(b.cdata, 0, ffi.NULL, -1, big, 0x7FFFFFF0, ffi.NULL, 0) == lib.PL_E_TOO_LARGE
    from pylog._native import check
    with pytest.raises(RecordTooLarge):
        check(lib.PL_E_TOO_LARGE, "x")


def test_corrupt_records_to_slice_are_refused_and_change_nothing():
    src = fill([(b"v%d" % i, None, [("h", b"x")], None) for i in range(6)])
    n = src.cdata.used - lib.PL_BATCH_HEADER_BYTES
    recs = bytearray(ffi.buffer(src.cdata.buf + lib.PL_BATCH_HEADER_BYTES, n))
    rng = random.Random(7)
    for trial in range(300):
        bad = bytearray(recs)
        for _ in range(rng.randint(1, 4)):
            bad[rng.randrange(len(bad))] = rng.randrange(256)
        cut = bytes(bad[:rng.randint(0, len(bad))]) if trial % 3 == 0 else bytes(bad)
        dst = fill([(b"keep", None, [], 5)])
        before = state(dst)
        lo = rng.randint(0, 6)
        hi = rng.randint(lo, 6)
        buf = ffi.new("uint8_t[]", cut) if cut else ffi.NULL
        r = lib.pl_builder_append_records(dst.cdata, buf, len(cut), 6, 1_000, lo, hi)
        if r < 0:
            assert state(dst) == before
        else:
            assert r == hi - lo
            assert validate_batches(dst.seal()) == (1, 1 + hi - lo)
    dst = fill([(b"keep", None, [], 5)])
    assert lib.pl_builder_append_records(dst.cdata, ffi.NULL, 0, 6, 0, 0, 1) < 0
    assert lib.pl_builder_append_records(dst.cdata, ffi.NULL, 0, 6, 0, 2, 1) == lib.PL_E_ARG
    assert lib.pl_builder_append_records(dst.cdata, ffi.NULL, 0, 6, 0, 0, 7) == lib.PL_E_ARG


def test_random_header_sections_never_crash():
    """Fuzz: random and mutated header sections; accepted ones give a valid batch."""
    rng = random.Random(11)
    valid = [encode_headers([("a", b"1")]), encode_headers([("key", None), ("", b"")]), b"\x00"]
    b = BatchBuilder(32, 0)
    accepted = 0
    for _ in range(2000):
        if rng.random() < 0.5:
            h = bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 12)))
        else:
            h = bytearray(rng.choice(valid))
            h[rng.randrange(len(h))] = rng.randrange(256)
            h = bytes(h)
        try:
            b.append(b"v", None, h)
            accepted += 1
        except CorruptRecordError:
            pass
    assert validate_batches(b.seal()) == (1, accepted)
    assert [r.value for r in iter_records(b.seal())] == [b"v"] * accepted


def test_builder_opens_as_pl_builder_init_would():
    """BatchBuilder sets the pl_batch_builder fields itself (no C call, see its
    comment): the same fields as pl_builder_init gives the same buffer."""
    from pylog.records.builder import BatchBuilder

    b = BatchBuilder(1000, 1_700_000_000_123)
    ref = ffi.new("pl_batch_builder *")
    assert lib.pl_builder_init(ref, b.cdata.buf, b.cdata.cap, 1_700_000_000_123) == lib.PL_OK
    fields = ("buf", "cap", "used", "count", "base_timestamp", "max_timestamp", "create_time")
    assert [getattr(b.cdata, f) for f in fields] == [getattr(ref, f) for f in fields]
    with pytest.raises(TypeError):
        BatchBuilder(1000, 1.5)

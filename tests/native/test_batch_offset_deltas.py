"""pl_batch_input.offset_deltas: building a batch whose records keep given offset
deltas (the log cleaner's rewrite), checked against the independent Python encoder."""
from __future__ import annotations

from array import array

import pytest
from hypothesis import given, settings, strategies as st

from pylog._native import ffi, lib
from tests.native.pl_native_helpers import make_batch


def build(values, deltas, last_delta, *, base_offset=100, ts=1_000):
    joined = b"".join(values)
    lens = array("i", [len(v) for v in values])
    d = array("i", deltas) if deltas is not None else None
    cd = ffi.new("pl_batch_input *")
    cd.count = len(values)
    vbuf = ffi.from_buffer(joined)
    lbuf = ffi.from_buffer("int32_t[]", lens)
    cd.values, cd.value_lens = vbuf, lbuf
    keep = [vbuf, lbuf]
    if d is not None:
        dbuf = ffi.from_buffer("int32_t[]", d)
        keep.append(dbuf)
        cd.offset_deltas = dbuf
    cd.last_offset_delta = last_delta
    cd.base_offset = base_offset
    cd.base_timestamp = ts
    cd.producer_id = cd.producer_epoch = cd.base_sequence = cd.partition_leader_epoch = -1
    bound = lib.pl_batch_size_bound(cd)
    if bound == 0:
        return None, None
    out = ffi.new("uint8_t[]", bound)
    n = lib.pl_batch_build(cd, out, bound)
    return n, (ffi.buffer(out, n)[:] if n > 0 else None)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 300), st.binary(max_size=20)), min_size=1, max_size=20),
       st.integers(0, 50))
def test_built_batch_equals_reference_encoding(gaps, extra):
    deltas, d = [], -1
    for gap, _ in gaps:
        d += gap
        deltas.append(d)
    values = [v for _, v in gaps]
    n, data = build(values, deltas, deltas[-1] + extra)
    assert n is not None and n > 0
    assert data == make_batch(values, base_offset=100, offset_deltas=deltas,
                              last_offset_delta=deltas[-1] + extra)
    assert lib.pl_batch_validate(ffi.from_buffer(data), len(data), ffi.NULL) == lib.PL_OK


def test_without_deltas_the_positions_are_used():
    _, data = build([b"a", b"b", b"c"], None, 99)  # last_offset_delta ignored without deltas
    assert data == make_batch([b"a", b"b", b"c"], base_offset=100)


@pytest.mark.parametrize("deltas,last", [([1, 1], 5), ([2, 1], 5), ([-1, 3], 5), ([0, 6], 5)])
def test_bad_deltas_are_refused(deltas, last):
    n, data = build([b"x", b"y"], deltas, last)
    assert data is None  # size bound 0: invalid input, nothing built


def test_empty_batch_with_an_offset_range_validates():
    info = ffi.new("pl_batch_info *")
    info.base_offset = 10
    info.last_offset_delta = 7
    info.base_timestamp = info.max_timestamp = 5
    info.producer_id = info.producer_epoch = info.base_sequence = info.partition_leader_epoch = -1
    info.record_count = 0
    out = ffi.new("uint8_t[]", 61)
    assert lib.pl_batch_seal(out, 61, 0, info) == 61
    got = ffi.new("pl_batch_info *")
    assert lib.pl_batch_validate(out, 61, got) == lib.PL_OK
    assert (got.record_count, got.last_offset_delta) == (0, 7)

"""Columns.split: the C pass (pl_columns_split) against a plain Python greedy split,
and where each run's values and keys begin in an end-to-end buffer."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pylog._native import ffi, lib
from pylog.records.columnar import prepare_columns

HEADER = 61


def _greedy(weights, room, max_records):
    """Runs (start, end, weight) by the rule split() documents, one record at a time."""
    runs, start, acc = [], 0, 0
    for i, w in enumerate(weights):
        if i > start and (acc + w > room or i - start == max_records):
            runs.append((start, i, acc))
            start, acc = i, 0
        acc += w
    runs.append((start, len(weights), acc))
    return runs


lengths = st.lists(st.integers(-1, 300), min_size=1, max_size=400)


@settings(max_examples=200, deadline=None)
@given(vlens=lengths, keyed=st.booleans(), seed=st.integers(0, 2**32 - 1),
       limit=st.integers(1500, 20_000), max_records=st.integers(1, 50))
def test_split_is_the_greedy_split(vlens, keyed, seed, limit, max_records):
    rng = np.random.default_rng(seed)
    n = len(vlens)
    vl = np.array(vlens, dtype=np.int32)
    kl = rng.integers(-1, 40, n).astype(np.int32) if keyed else None
    vbuf = bytes(rng.integers(0, 256, int(np.maximum(vl, 0).sum()) + 5, dtype=np.uint8))
    kbuf = bytes(rng.integers(0, 256, int(np.maximum(kl, 0).sum()) + 3, dtype=np.uint8)) if keyed else None
    cols = prepare_columns(vbuf, lengths=vl, keys=kbuf, key_lengths=kl)
    over = cols._record_overhead(True)
    weights = [over + max(int(v), 0) + (max(int(kl[i]), 0) if keyed else 0) for i, v in enumerate(vl)]
    runs = cols.split(limit, max_records=max_records)
    if sum(weights) + HEADER <= limit and n <= max_records:
        assert runs == [(0, n, HEADER + sum(weights))]
        return
    want = _greedy(weights, limit - HEADER, max_records)
    assert runs == [(s, e, HEADER + w) for s, e, w in want]
    # Each run's first value and key byte: where the end-to-end buffer has them.
    vpos = np.concatenate([[0], np.cumsum(np.maximum(vl, 0))])
    kpos = np.concatenate([[0], np.cumsum(np.maximum(kl, 0))]) if keyed else None
    for s, e, _ in runs:
        assert cols.values.first_byte(s, e) == vpos[s]
        if keyed:
            assert cols.keys.first_byte(s, e) == kpos[s]


def _c_split(vl, kl, over, room, max_records, max_runs):
    vl = np.asarray(vl, dtype=np.int32)
    out = np.zeros((4, max(max_runs, 1)), dtype=np.uint64)
    with ffi.from_buffer("int32_t[]", vl) as vc, ffi.from_buffer("uint64_t[]", out) as oc:
        kc = ffi.from_buffer("int32_t[]", np.asarray(kl, dtype=np.int32)) if kl is not None else ffi.NULL
        m = max(max_runs, 1)
        r = lib.pl_columns_split(vc, kc, len(vl), over, room, max_records, oc, oc + m, oc + 2 * m,
                                 oc + 3 * m, max_runs)
    return r, out


def test_c_split_refuses_more_runs_than_room_and_bad_lengths():
    r, out = _c_split([10] * 10, None, 5, 30, 100, 4)  # 15 each, two a run: 5 runs
    assert r == lib.PL_E_NOSPACE
    assert out[0, :4].tolist() == [2, 4, 6, 8]  # nothing past max_runs
    r, out = _c_split([10] * 10, None, 5, 30, 100, 5)
    assert r == 5 and out[0, :5].tolist() == [2, 4, 6, 8, 10] and out[2, :5].tolist() == [20] * 5
    assert _c_split([10, -2], None, 5, 30, 100, 5)[0] == lib.PL_E_ARG
    assert _c_split([10, 1], [3, -2], 5, 30, 100, 5)[0] == lib.PL_E_ARG
    assert _c_split([10], None, 5, 30, 0, 5)[0] == lib.PL_E_ARG  # max_records 0


def test_c_split_a_record_heavier_than_room_runs_alone():
    r, out = _c_split([1, 100, 1], [4, -1, 2], 5, 50, 100, 8)
    assert r == 3
    assert out[0, :3].tolist() == [1, 2, 3]
    assert out[1, :3].tolist() == [10, 105, 8]
    assert out[2, :3].tolist() == [1, 100, 1] and out[3, :3].tolist() == [4, 0, 2]

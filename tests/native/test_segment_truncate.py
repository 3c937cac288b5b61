"""pl_segment_truncate."""
from __future__ import annotations

import random
import struct

import pytest

from pylog._native import lib
from pl_native_helpers import batch_of_size, check_model, make_batch


def _fill(s, n, seed=1, gaps=False):
    rng = random.Random(seed)
    datas = []
    for i in range(n):
        b = batch_of_size(rng.choice([61, 100, 250, 600]), n_records=rng.randint(1, 4),
                          base_timestamp=rng.choice([-1, 10, 20, 30]) + i)
        if gaps:
            b = struct.pack(">q", s.c.next_offset + rng.choice([0, 0, 2])) + b[8:]
            assert s.append(b, assign=False)[0] == lib.PL_OK
        else:
            assert s.append(b)[0] == lib.PL_OK
        datas.append(b)
    return s.batches(), datas


@pytest.mark.parametrize("gaps", [False, True])
@pytest.mark.parametrize("interval", [0, 300])
def test_truncate_at_every_batch_boundary(make_seg, interval, gaps):
    ref = make_seg(base_offset=500, interval=interval, name="ref")
    batches, datas = _fill(ref, 25, gaps=gaps)
    for k, b in enumerate(batches):
        s = make_seg(base_offset=500, interval=interval, name=f"t{k}")
        _fill(s, 25, gaps=gaps)
        st_, size = s.truncate(b.base)
        assert st_ == lib.PL_OK and size == b.pos
        assert s.c.log_size == b.pos and s.c.next_offset == b.base
        check_model(s, next_offset=b.base)
        # a recovery scan would stop here: the first 12 bytes of the cut are zero
        assert bytes(s.log[b.pos: b.pos + 12]) == bytes(12)
        # same state as a segment that only ever received the prefix
        fresh = make_seg(base_offset=500, interval=interval, name=f"f{k}")
        for d in datas[:k]:
            assert fresh.append(d, assign=not gaps)[0] == lib.PL_OK
        st_f, st_s = fresh.state(), s.state()
        contiguous = st_f["next_offset"] == b.base  # no offset gap before the cut
        st_f["next_offset"] = b.base  # truncate's contract: next_offset == offset
        assert st_s == st_f
        # appending afterwards continues the same way
        more = make_batch([b"after"], base_timestamp=99)
        assert s.append(more)[0] == lib.PL_OK and fresh.append(more)[0] == lib.PL_OK
        if contiguous:
            assert s.state() == fresh.state()
        s.close()
        fresh.close()


def test_truncate_to_base_offset_empties(make_seg):
    s = make_seg(base_offset=10)
    _fill(s, 5)
    assert s.truncate(10) == (lib.PL_OK, 0)
    assert (s.c.log_size, s.c.next_offset, s.c.index_entries, s.c.timeindex_entries,
            s.c.max_timestamp) == (0, 10, 0, 0, -1)
    assert s.read(10)[1] == []


def test_truncate_to_base_offset_when_first_batch_starts_later(make_seg):
    s = make_seg(base_offset=10)
    assert s.append(make_batch([b"a"], base_offset=15), assign=False)[0] == lib.PL_OK
    assert s.truncate(12)[0] == lib.PL_E_OFFSET_RANGE
    assert s.truncate(10) == (lib.PL_OK, 0)
    assert s.c.next_offset == 10


def test_truncate_offset_range_errors(make_seg):
    s = make_seg(base_offset=100)
    batches, _ = _fill(s, 10)
    before = s.state()
    assert s.truncate(99)[0] == lib.PL_E_OFFSET_RANGE
    for b in batches:
        for off in range(b.base + 1, b.last + 1):  # inside a batch: not a boundary
            assert s.truncate(off)[0] == lib.PL_E_OFFSET_RANGE
    assert s.state() == before
    # at or past next_offset: no-op
    assert s.truncate(s.c.next_offset) == (lib.PL_OK, s.c.log_size)
    assert s.truncate(1 << 50) == (lib.PL_OK, s.c.log_size)
    assert s.state() == before


def test_truncate_clamps_flushed_counters(make_seg):
    s = make_seg(interval=0)
    batches, _ = _fill(s, 6)
    assert lib.pl_segment_flush(s.c) == lib.PL_OK
    assert s.c.flushed_size == s.c.log_size
    assert s.truncate(batches[3].base)[0] == lib.PL_OK
    assert s.c.flushed_size == batches[3].pos
    assert s.c.flushed_index_entries == s.c.index_entries
    assert s.c.flushed_timeindex_entries == s.c.timeindex_entries

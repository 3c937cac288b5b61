"""pl_segment_recover / pl_segment_check_indexes / pl_segment_load_clean."""
from __future__ import annotations

import random
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pylog._native import lib
from pl_native_helpers import Seg, batch_of_size, check_model, make_batch

pytestmark = pytest.mark.usefixtures("real_batch_c")


def _fill(s, n, seed=3):
    rng = random.Random(seed)
    for i in range(n):
        b = batch_of_size(rng.choice([61, 90, 200, 500, 1200]), n_records=rng.randint(1, 5),
                          base_timestamp=rng.choice([-1, 100, 200, 300]) + i)
        assert s.append(b)[0] == lib.PL_OK
    return s.batches()


def _reset(s):
    """What Python does before a full recovery."""
    s.c.log_size = 0
    s.c.index_entries = 0
    s.c.timeindex_entries = 0


def _reopen(s, **kw):
    """A second mapping of the same files, fresh pl_segment (as after a restart)."""
    return Seg(s.dir, s.base_offset, log_bytes=len(s.log), index_entries=len(s.maps[1]) // 8,
               interval=s.interval, name=s.paths[0].stem, **kw)


@pytest.mark.parametrize("interval", [0, 400, 1 << 20])
def test_recover_from_zero_gives_identical_state(make_seg, interval):
    s = make_seg(base_offset=7, interval=interval, index_entries=256, log_bytes=1 << 16)
    _fill(s, 40)
    before = s.state()
    r = _reopen(s)
    try:
        st_, trunc = r.recover()
        assert st_ == lib.PL_OK and trunc == 0
        assert r.state() == before
        _reset(s)
        s.maps[1][:] = b"\xee" * len(s.maps[1])  # stale index content must not matter
        st_, trunc = s.recover()
        assert st_ == lib.PL_OK and trunc == 0
        assert s.state() == before
        assert lib.pl_segment_check_indexes(s.c) == lib.PL_OK
    finally:
        r.close()


def test_recover_empty_segment(make_seg):
    s = make_seg(base_offset=3)
    assert s.recover() == (lib.PL_OK, 0)
    assert (s.c.log_size, s.c.next_offset, s.c.max_timestamp) == (0, 3, -1)


def test_recover_from_batch_boundaries(make_seg):
    s = make_seg(base_offset=0, interval=300, index_entries=256)
    batches = _fill(s, 30)
    full = s.state()
    for b in batches + [None]:
        start = s.c.log_size if b is None else b.pos
        st_, trunc = s.recover(start)
        assert st_ == lib.PL_OK and trunc == 0
        assert s.state() == full, start
    # not a boundary
    assert s.recover(batches[3].pos + 1)[0] == lib.PL_E_ARG
    assert s.recover(len(s.log) + 1)[0] == lib.PL_E_ARG


def test_recover_cut_tail_at_every_byte(make_seg):
    s = make_seg(base_offset=0, interval=150, index_entries=128, log_bytes=8192)
    batches = _fill(s, 12)
    last = batches[-1]
    prefix = make_seg(base_offset=0, interval=150, index_entries=128, log_bytes=8192, name="p")
    full = bytes(s.log[: s.c.log_size])
    assert prefix.append(full[: last.pos], assign=False)[0] == lib.PL_OK
    want = prefix.state()
    for cut in range(last.pos, last.pos + last.size):
        # simulate a torn write: the tail past `cut` never reached the disk (zeros)
        torn = full[last.pos: cut] + bytes(last.pos + last.size - cut)
        s.log[last.pos: last.pos + last.size] = torn
        _reset(s)
        st_, trunc = s.recover()
        assert st_ == lib.PL_OK
        if torn == full[last.pos:]:  # only zero bytes were lost: the batch is whole
            assert s.c.log_size == len(full) and trunc == 0
            continue
        assert s.state() == want, cut
        # garbage = the written part of the torn batch, up to its last non-zero byte
        assert trunc == len(torn.rstrip(b"\x00"))
    s.log[last.pos: last.pos + last.size] = full[last.pos:]
    _reset(s)
    assert s.recover()[0] == lib.PL_OK and s.c.log_size == len(full)


def test_recover_stops_before_damaged_batch(make_seg):
    rng = random.Random(11)
    s = make_seg(base_offset=0, interval=200, index_entries=256, log_bytes=1 << 15)
    batches = _fill(s, 20)
    full = bytes(s.log[: s.c.log_size])
    for trial in range(60):
        victim = rng.randrange(len(batches))
        b = batches[victim]
        # baseOffset and partitionLeaderEpoch are not CRC-covered (by design)
        byte = rng.choice([rng.randrange(b.pos + 8, b.pos + 12),
                           rng.randrange(b.pos + 16, b.pos + b.size)])
        bit = 1 << rng.randrange(8)
        s.log[: len(full)] = full
        s.log[byte] ^= bit
        _reset(s)
        st_, trunc = s.recover()
        assert st_ == lib.PL_OK
        assert s.c.log_size == b.pos, (trial, byte)
        check_model(s)
        assert trunc == len(bytes(s.log[b.pos: len(full)]).rstrip(b"\x00"))


def test_recover_stops_at_offset_going_back(make_seg):
    s = make_seg(base_offset=0, interval=0)
    _fill(s, 5)
    good_size = s.c.log_size
    # a valid batch whose baseOffset is below the previous batch's last offset
    stale = make_batch([b"old"], base_offset=1)
    s.log[good_size: good_size + len(stale)] = stale
    _reset(s)
    st_, trunc = s.recover()
    assert st_ == lib.PL_OK and s.c.log_size == good_size
    assert trunc == len(stale.rstrip(b"\x00"))


def test_recover_never_reads_past_capacity(make_seg):
    b = make_batch([b"x" * 200])
    s = make_seg(log_bytes=4096)
    for _ in range(4096 // len(b)):
        assert s.append(b)[0] == lib.PL_OK
    used = s.c.log_size
    # a header claiming a batch longer than what is left of the mapping
    tail = len(s.log) - used
    if tail >= 12:
        s.log[used: used + 12] = struct.pack(">qi", s.c.next_offset, 10_000)
    s.c.log_capacity = len(s.log)
    _reset(s)
    st_, _ = s.recover()
    assert st_ == lib.PL_OK and s.c.log_size == used


def test_garbage_index_detected_and_rebuilt(make_seg):
    rng = random.Random(5)
    s = make_seg(base_offset=0, interval=250, index_entries=256)
    _fill(s, 30)
    good = s.state()
    assert lib.pl_segment_check_indexes(s.c) == lib.PL_OK
    ie = s.c.index_entries
    te = s.c.timeindex_entries
    for trial in range(40):
        which = rng.choice([1, 2])
        n = ie * 8 if which == 1 else te * 12
        raw = bytearray(s.maps[which][:n])
        i = rng.randrange(n)
        raw[i] = (raw[i] + rng.randrange(1, 256)) & 0xFF
        s.maps[which][:n] = bytes(raw)
        assert lib.pl_segment_check_indexes(s.c) == lib.PL_E_INDEX, (trial, which, i)
        _reset(s)
        assert s.recover() == (lib.PL_OK, 0)
        assert s.state() == good
    # entries past the log
    s.c.index_entries = ie + 1
    s.maps[1][ie * 8: ie * 8 + 8] = struct.pack(">II", 10**6, 10**6)
    assert lib.pl_segment_check_indexes(s.c) == lib.PL_E_INDEX
    s.c.index_entries = ie
    s.c.timeindex_entries = 10**6
    assert lib.pl_segment_check_indexes(s.c) == lib.PL_E_INDEX


def _load_clean(s, log_size, ie, te):
    s.c.log_size = log_size
    s.c.index_entries = ie
    s.c.timeindex_entries = te
    return lib.pl_segment_load_clean(s.c, log_size)


@pytest.mark.parametrize("interval", [0, 300, 1 << 20])
def test_load_clean_agrees_with_recover(make_seg, interval):
    s = make_seg(base_offset=42, interval=interval, index_entries=256)
    _fill(s, 35)
    want = s.state()
    r = _reopen(s)
    try:
        assert _load_clean(r, want["log_size"], want["index_entries"], want["timeindex_entries"]) == lib.PL_OK
        assert r.state() == want
        assert lib.pl_segment_check_indexes(r.c) == lib.PL_OK
        # appends continue identically
        more = make_batch([b"more"] * 3, base_timestamp=10_000)
        assert r.append(more)[0] == lib.PL_OK
        assert s.append(more)[0] == lib.PL_OK
        assert r.state()["oi"] == s.state()["oi"] and r.state()["ti"] == s.state()["ti"]
    finally:
        r.close()


def test_load_clean_rejects_inconsistencies(make_seg):
    s = make_seg(base_offset=0, interval=200, index_entries=256)
    batches = _fill(s, 20)
    want = s.state()
    # log_size not at a batch boundary
    assert _load_clean(s, want["log_size"] - 1, want["index_entries"], want["timeindex_entries"]) != lib.PL_OK
    # an index entry past log_size
    assert _load_clean(s, batches[1].pos, want["index_entries"], want["timeindex_entries"]) == lib.PL_E_INDEX
    # a time entry too many (stale bytes past the real ones)
    assert (_load_clean(s, want["log_size"], want["index_entries"], want["timeindex_entries"] + 1) != lib.PL_OK
            or lib.pl_segment_check_indexes(s.c) == lib.PL_E_INDEX)
    # bigger than the mapping
    assert lib.pl_segment_load_clean(s.c, len(s.log) + 1) == lib.PL_E_ARG
    assert _load_clean(s, want["log_size"], want["index_entries"], want["timeindex_entries"]) == lib.PL_OK
    assert s.state() == want


def test_load_clean_empty(make_seg):
    s = make_seg(base_offset=9)
    assert _load_clean(s, 0, 0, 0) == lib.PL_OK
    assert (s.c.next_offset, s.c.max_timestamp) == (9, -1)
    assert lib.pl_segment_check_indexes(s.c) == lib.PL_OK


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=800), min_size=1, max_size=30),
    tss=st.lists(st.integers(min_value=-1, max_value=30), min_size=30, max_size=30),
    interval=st.sampled_from([0, 100, 700]),
    cut=st.integers(min_value=0, max_value=30),
)
def test_truncate_then_recover_then_load_clean_agree(make_seg, sizes, tss, interval, cut):
    s = make_seg(base_offset=0, interval=interval, index_entries=256, log_bytes=1 << 15)
    for i, sz in enumerate(sizes):
        assert s.append(batch_of_size(sz, base_timestamp=tss[i]))[0] == lib.PL_OK
    batches = s.batches()
    if cut < len(batches):
        assert s.truncate(batches[cut].base)[0] == lib.PL_OK
    after = s.state()
    _reset(s)
    assert s.recover()[0] == lib.PL_OK
    assert s.state() == after
    assert _load_clean(s, after["log_size"], after["index_entries"], after["timeindex_entries"]) == lib.PL_OK
    assert s.state() == after
    assert lib.pl_segment_check_indexes(s.c) == lib.PL_OK


def test_recover_with_small_index_keeps_every_batch(make_seg):
    """An index too small for the rebuilt entries (interval lowered since) never makes
    recovery drop valid batches: entries are left out, lookups still work."""
    s = make_seg(base_offset=0, interval=0, index_entries=64)
    batches = _fill(s, 20)
    full = s.state()
    s.c.index_capacity = 5 * 8
    s.c.timeindex_capacity = 3 * 12
    _reset(s)
    assert s.recover() == (lib.PL_OK, 0)
    assert s.c.log_size == full["log_size"] and s.c.next_offset == full["next_offset"]
    assert s.c.max_timestamp == full["max_timestamp"]
    assert s.c.index_entries == 5 and s.c.timeindex_entries <= 3
    assert lib.pl_segment_check_indexes(s.c) == lib.PL_OK
    for b in batches:
        assert s.lookup(b.last) == (lib.PL_OK, b.pos)
        assert s.read(b.base, max_bytes=0)[1] == [b.pos]
    assert s.append(make_batch([b"x"]))[0] == lib.PL_E_FULL  # an entry is due, no room

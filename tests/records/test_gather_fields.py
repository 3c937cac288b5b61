"""Lists of bytes built where they lie (gather_fields, pl_batch_input.value_ptrs): the
same batch bytes as the joined layout, the items held while C reads them, a size
estimate that never undercounts, and a log that never refuses a batch by it."""
from __future__ import annotations

import ctypes
import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pylog._native import _records, ffi, lib
from pylog.errors import RecordBatchTooLarge, RecordTooLarge
from pylog.records import batch as batch_module
from pylog.records import build_batch, prepare_batch
from tests.storage.helpers import open_log


def test_gather_fields_points_at_each_item_and_holds_them():
    items = [b"abc", None, b"", b"x" * 1000]
    held, ptrs, lens, total, longest = _records.gather_fields(items)
    assert held == tuple(items) and total == 1003 and longest == 1000
    assert struct.unpack("4i", lens) == (3, -1, 0, 1000)
    addrs = struct.unpack("4P", ptrs)
    assert addrs[1] == 0
    for item, addr in zip(items, addrs):
        if item:
            assert ctypes.string_at(addr, len(item)) == item
    items[0] = b"changed"  # the list may change: the held tuple keeps what was gathered
    assert held[0] == b"abc"
    assert _records.gather_fields(()) == ((), b"", b"", 0, -1)
    assert _records.gather_fields([None])[3:] == (0, -1)


@pytest.mark.parametrize("declined", [[b"a", "str"], [bytearray(b"a")], [b"a", 1], "abc", None, b"ab",
                                      [memoryview(b"x")], {b"a"}])
def test_gather_fields_declines_anything_else(declined):
    assert _records.gather_fields(declined) is None


def test_gather_fields_takes_one_argument():
    with pytest.raises(TypeError):
        _records.gather_fields()


fields = st.lists(st.one_of(st.none(), st.binary(max_size=300)), min_size=1, max_size=60)


@settings(max_examples=150, deadline=None)
@given(values=fields, data=st.data(), spread=st.integers(0, 2**40))
def test_gathered_batch_equals_the_joined_batch(monkeypatch_module, values, data, spread):
    n = len(values)
    keys = data.draw(st.one_of(st.none(), st.lists(st.one_of(st.none(), st.binary(max_size=40)),
                                                   min_size=n, max_size=n)))
    ts = data.draw(st.one_of(st.none(), st.lists(st.integers(0, spread), min_size=n, max_size=n)))
    gathered = build_batch(values, keys=keys, timestamps=ts, base_timestamp=5)
    p = prepare_batch(values, keys, None, ts, base_timestamp=5)
    assert p.cdata.value_ptrs != ffi.NULL
    exact = int(lib.pl_batch_size_bound(p.cdata))
    assert p.size_bound >= exact == len(gathered)
    assert p.tighten() == exact and p.size_bound == exact
    with monkeypatch_module.context() as m:
        m.setattr(batch_module, "_gather_fields", lambda items: None)
        joined = build_batch(values, keys=keys, timestamps=ts, base_timestamp=5)
        assert prepare_batch(values, keys, None, ts, base_timestamp=5).cdata.value_ptrs == ffi.NULL
    assert gathered == joined


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_a_null_pointer_for_a_non_empty_value_is_refused():
    vals = [b"abc", b"de"]
    p = prepare_batch(vals)
    ptrs = ffi.new("uint8_t *[]", [ffi.from_buffer(vals[0]), ffi.NULL])
    p.cdata.value_ptrs = ptrs
    out = ffi.new("uint8_t[]", 4096)
    assert lib.pl_batch_build(p.cdata, out, 4096) == lib.PL_E_ARG
    assert lib.pl_batch_size_bound(p.cdata) == 0


def test_log_append_never_refuses_by_the_estimate(tmp_path):
    # Many short values and one long one: the estimate counts two length bytes for
    # every value, the batch needs one for the short ones.
    rng = random.Random(3)
    vals = [rng.randbytes(10) for _ in range(300)] + [rng.randbytes(200)]
    exact = len(build_batch(vals, base_timestamp=0))
    p = prepare_batch(vals, base_timestamp=0)
    assert p.size_bound > exact  # the case this test is about
    with open_log(tmp_path / "t-0", max_message_bytes=exact) as log:
        assert log.append(vals) == 0
        assert [r.value for r in log.records()] == vals
        with pytest.raises(RecordTooLarge, match="max.message.bytes"):
            log.append(vals + [b"y"])
        assert log.log_end_offset == len(vals)
    with open_log(tmp_path / "t-1", segment_bytes=exact, max_message_bytes=1 << 20) as log:
        assert log.append(vals) == 0  # fills its segment exactly
        with pytest.raises(RecordBatchTooLarge, match="segment.bytes"):
            log.append(vals + [b"y"])
        assert [r.value for r in log.records()] == vals

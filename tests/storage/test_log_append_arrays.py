"""Log.append_arrays: columnar appends (lengths / offsets / positions layouts), read back
as records and as arrays, equal to Log.append of the same records; nulls, empty values,
splitting across batches and segments, compaction and LogAppendTime rules, and bad
input raising a specific error with nothing written (Invariant 7)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pylog.errors import (
    InvalidArgument,
    InvalidRecord,
    InvalidTimestamp,
    LogClosed,
    RecordBatchTooLarge,
    RecordTooLarge,
)
from pylog.records import decode_records
from tests.storage.helpers import T0, FakeClock, check_indexes_on_disk, open_log, snapshot_dir


def _cols(items):
    """(joined buffer, lengths with -1 for None) of a list of bytes/None."""
    return b"".join(x for x in items if x is not None), np.array(
        [-1 if x is None else len(x) for x in items], dtype=np.int32)


def _read_all(log):
    return [(r.offset, r.timestamp, r.key, r.value) for r in log.records()]


def _arrays(log):
    """Everything in the log as RecordArrays (one decode of all batches)."""
    data = b"".join(b.to_bytes() for off in [log.log_start_offset] for b in _all_batches(log))
    return decode_records(data)


def _all_batches(log):
    off = log.log_start_offset
    while off < log.log_end_offset:
        batches = log.read(off, 1 << 30)
        yield from batches
        off = batches[-1].next_offset


# ---------------------------------------------------------------- round trips
def test_lengths_round_trip_with_null_and_empty(tmp_path):
    values = [b"a", b"", None, b"dddd", b"e" * 300]
    keys = [b"k0", None, b"", b"k3", None]
    ts = [T0 + 5, T0 + 1, T0 + 9, T0 + 2, T0 + 7]
    vbuf, vlens = _cols(values)
    kbuf, klens = _cols(keys)
    with open_log(tmp_path / "t-0") as log:
        offs = log.append_arrays(vbuf, lengths=vlens, keys=kbuf, key_lengths=klens, timestamps=ts)
        assert offs.dtype == np.int64 and offs.tolist() == [0, 1, 2, 3, 4]
        assert _read_all(log) == [(i, ts[i], keys[i], values[i]) for i in range(5)]
        a = _arrays(log)
        assert a.value_len.tolist() == vlens.tolist() and a.key_len.tolist() == klens.tolist()
        assert a.values() == values and a.keys() == keys and a.timestamps.tolist() == ts


def test_offsets_layout_arrow_style(tmp_path):
    buf = b"xxhelloworld!"
    with open_log(tmp_path / "t-0") as log:
        log.append([b"first"])
        offs = log.append_arrays(buf, offsets=[2, 7, 12, 12, 13])
        assert offs.tolist() == [1, 2, 3, 4]
        assert [r.value for r in log.records(1)] == [b"hello", b"world", b"", b"!"]
        assert all(r.key is None for r in log.records())


def test_numpy_and_memoryview_buffers(tmp_path):
    arr = np.frombuffer(b"abcdef", dtype=np.uint8)
    with open_log(tmp_path / "t-0") as log:
        log.append_arrays(arr, lengths=np.array([2, 4], dtype=np.int64))
        log.append_arrays(memoryview(bytearray(b"xyz")), lengths=[1, 2], keys=arr, key_offsets=[0, 1, 6])
        assert [(r.key, r.value) for r in log.records()] == [
            (None, b"ab"), (None, b"cdef"), (b"a", b"x"), (b"bcdef", b"yz")]


def test_poll_arrays_layout_goes_back_in(tmp_path, clock):
    """Records read as arrays (positions + lengths into one buffer, keys and values
    interleaved) append to another log unchanged, without joining anything."""
    values = [b"v%d" % i if i % 7 else None for i in range(500)]
    keys = [b"key-%d" % i if i % 3 else None for i in range(500)]
    src = open_log(tmp_path / "src-0", clock)
    dst = open_log(tmp_path / "dst-0", clock)
    try:
        for i in range(0, 500, 100):
            src.append(values[i:i + 100], keys=keys[i:i + 100], timestamps=[T0 + j for j in range(i, i + 100)])
        a = _arrays(src)
        offs = dst.append_arrays(a.buffer, positions=a.value_pos, lengths=a.value_len, keys=a.buffer,
                                 key_positions=a.key_pos, key_lengths=a.key_len, timestamps=a.timestamps)
        assert offs.tolist() == list(range(500))
        assert _read_all(dst) == _read_all(src)
    finally:
        src.close()
        dst.close()


def test_default_timestamp_is_now_and_log_append_time(tmp_path):
    clock = FakeClock()
    with open_log(tmp_path / "t-0", clock) as log:
        log.append_arrays(b"ab", lengths=[1, 1])
        assert {r.timestamp for r in log.records()} == {clock()}
    with open_log(tmp_path / "u-0", clock, message_timestamp_type="LogAppendTime") as log:
        log.append_arrays(b"ab", lengths=[1, 1], timestamps=[T0, T0 + 1])
        assert [r.timestamp for r in log.records()] == [clock(), clock()]
        assert all(b.timestamp_type == "LogAppendTime" for b in log.read(0))


def test_compact_needs_every_key(tmp_path):
    with open_log(tmp_path / "t-0", cleanup_policy="compact") as log:
        with pytest.raises(InvalidRecord, match="needs a key"):
            log.append_arrays(b"ab", lengths=[1, 1])
        with pytest.raises(InvalidRecord, match="needs a key"):
            log.append_arrays(b"ab", lengths=[1, 1], keys=b"k", key_lengths=[1, -1])
        assert log.log_end_offset == 0
        log.append_arrays(b"ab", lengths=[1, 1], keys=b"kk", key_lengths=[1, 1])
        assert [r.key for r in log.records()] == [b"k", b"k"]


# ---------------------------------------------------------------- splitting
def test_splits_into_batches_under_max_message_bytes(tmp_path):
    n = 3000
    buf = bytes(range(256)) * (n * 100 // 256 + 1)
    lens = np.full(n, 100, dtype=np.int32)
    with open_log(tmp_path / "t-0", max_message_bytes=20_000) as log:
        offs = log.append_arrays(buf, lengths=lens, keys=buf, key_offsets=np.arange(0, 3 * n + 1, 3))
        assert offs.tolist() == list(range(n))
        batches = list(_all_batches(log))
        assert len(batches) > 10
        assert all(b.size_bytes <= 20_000 for b in batches)
        # greedy: each batch but the last would overflow with one more record
        assert all(b.size_bytes > 20_000 - 2 * 140 for b in batches[:-1])
        vals = [r.value for r in log.records()]
        assert vals == [buf[i * 100:(i + 1) * 100] for i in range(n)]
        assert [r.key for r in log.records()][-1] == buf[3 * (n - 1):3 * n]


def test_splits_across_segments(tmp_path):
    n = 2000
    buf = b"z" * (n * 200)
    with open_log(tmp_path / "t-0", segment_bytes=64 * 1024, max_message_bytes=1 << 20) as log:
        offs = log.append_arrays(buf, lengths=np.full(n, 200))
        assert offs[-1] == n - 1 and log.log_end_offset == n
        assert len(log.segments) > 5
        assert all(s.size_bytes <= 64 * 1024 for s in log.segments)
        assert sum(1 for _ in log.records()) == n
    check_indexes_on_disk(tmp_path / "t-0")


def test_large_records_get_batches_of_their_own(tmp_path):
    """A record near the limit shares no batch; with widely spread timestamps the size
    bound is loose, so a record can be over it and still fit a batch alone (its exact
    size decides)."""
    sizes = [10, 9900, 10, 10, 9926, 10]  # 9926: over the bound (15 B a record), 9997 B alone
    buf = b"".join(bytes([i]) * s for i, s in enumerate(sizes))
    ts = [T0, T0 + 2**40, T0, T0, T0, T0]
    with open_log(tmp_path / "t-0", max_message_bytes=10_000, retention_ms=-1) as log:
        log.append_arrays(buf, lengths=sizes, timestamps=ts)
        assert [(len(r.value), r.timestamp) for r in log.records()] == list(zip(sizes, ts))
        batches = list(_all_batches(log))
        assert all(b.size_bytes <= 10_000 for b in batches)
        assert [b.record_count for b in batches] == [1, 1, 2, 1, 1]


def test_record_too_large_alone_writes_nothing(tmp_path):
    with open_log(tmp_path / "t-0", max_message_bytes=1000) as log:
        log.append([b"x"])
        before = snapshot_dir(tmp_path / "t-0", skip_lock=True)
        with pytest.raises(RecordTooLarge, match="record 3 .*max.message.bytes=1000"):
            log.append_arrays(b"a" * 2000, lengths=[10, 10, 10, 1000, 10])
        assert log.log_end_offset == 1
        assert snapshot_dir(tmp_path / "t-0", skip_lock=True) == before
    with open_log(tmp_path / "u-0", segment_bytes=4096, max_message_bytes=1 << 20) as log:
        with pytest.raises(RecordBatchTooLarge, match="segment.bytes=4096"):
            log.append_arrays(b"a" * 5000, lengths=[10, 4990])
        assert log.log_end_offset == 0


# ---------------------------------------------------------------- bad input
BAD = [
    (dict(values="abc", lengths=[3]), InvalidArgument, "bytes-like"),
    (dict(values=[b"a"], lengths=[1]), InvalidArgument, "bytes-like"),
    (dict(values=b"abc"), InvalidArgument, "exactly one of lengths"),
    (dict(values=b"abc", lengths=[3], offsets=[0, 3]), InvalidArgument, "exactly one of lengths"),
    (dict(values=b"abc", lengths=[]), InvalidArgument, "no records"),
    (dict(values=b"abc", offsets=[0]), InvalidArgument, "no records"),
    (dict(values=b"abc", offsets=[]), InvalidArgument, "n \\+ 1 entries"),
    (dict(values=b"abc", lengths=[1, -2]), InvalidArgument, "lengths\\[1\\] is -2"),
    (dict(values=b"abc", lengths=[2, 2]), InvalidArgument, "add up to 4 bytes .* has 3"),
    (dict(values=b"abc", lengths=[1.5]), InvalidArgument, "integers"),
    (dict(values=b"abc", lengths=[[1, 2]]), InvalidArgument, "one-dimensional"),
    (dict(values=b"abc", lengths=[2**40]), InvalidArgument, "fit in int32"),
    (dict(values=b"abc", offsets=[0, 2, 1]), InvalidArgument, "must not decrease: offsets\\[2\\]=1"),
    (dict(values=b"abc", offsets=[0, 4]), InvalidArgument, "outside the 3-byte"),
    (dict(values=b"abc", offsets=[-1, 2]), InvalidArgument, "outside the 3-byte"),
    (dict(values=b"abc", offsets=[0, 3], positions=[0]), InvalidArgument, "positions= goes with lengths="),
    (dict(values=b"abc", lengths=[1, 1], positions=[0]), InvalidArgument, "positions has 1 entries"),
    (dict(values=b"abc", lengths=[1, 1], positions=[0, -1]), InvalidArgument, "positions\\[1\\] is -1"),
    (dict(values=b"abc", lengths=[1, 2], positions=[0, 2]), InvalidArgument, "values\\[1\\] at positions"),
    (dict(values=b"abc", lengths=[3], key_lengths=[1]), InvalidArgument, "without keys="),
    (dict(values=b"abc", lengths=[3], keys=b"k"), InvalidArgument, "exactly one of key_lengths"),
    (dict(values=b"abc", lengths=[3], keys=b"k", key_lengths=[1, -1]), InvalidArgument,
     "keys has 2 entries but values has 1"),
    (dict(values=b"abc", lengths=[3], keys=b"k", key_lengths=[2]), InvalidArgument,
     "key_lengths add up to 2"),
    (dict(values=b"abc", lengths=[3], timestamps=[1, 2]), InvalidArgument, "timestamps has 2"),
    (dict(values=b"abc", lengths=[3], timestamps=[-5]), InvalidTimestamp, "timestamps\\[0\\] is -5"),
    (dict(values=b"abc", lengths=[3], timestamps=[0.5]), InvalidTimestamp, "integers"),
    (dict(values=np.zeros(4, np.uint8)[::2], lengths=[1]), InvalidArgument, "contiguous"),
]


@pytest.mark.parametrize("kwargs,exc,match", BAD)
def test_bad_input_names_the_problem_and_writes_nothing(tmp_path, kwargs, exc, match):
    with open_log(tmp_path / "t-0") as log:
        log.append([b"x"])
        before = snapshot_dir(tmp_path / "t-0", skip_lock=True)
        kwargs = dict(kwargs)
        values = kwargs.pop("values")
        with pytest.raises(exc, match=match):
            log.append_arrays(values, **kwargs)
        assert log.log_end_offset == 1
        assert snapshot_dir(tmp_path / "t-0", skip_lock=True) == before


def test_closed_log(tmp_path):
    log = open_log(tmp_path / "t-0")
    log.close()
    with pytest.raises(LogClosed):
        log.append_arrays(b"a", lengths=[1])


def test_lengths_argument_is_keyword_only(tmp_path):
    with open_log(tmp_path / "t-0") as log:
        with pytest.raises(TypeError):
            log.append_arrays(b"ab", [1, 1])  # ambiguous positional (lengths? offsets?) refused


# ---------------------------------------------------------------- property
_item = st.one_of(st.none(), st.binary(max_size=40))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=st.lists(st.tuples(_item, _item, st.integers(0, 2**41)), min_size=1, max_size=60),
       max_message_bytes=st.sampled_from([200, 600, 1 << 20]),
       layout=st.sampled_from(["lengths", "positions"]))
def test_same_as_append(tmp_path_factory, records, max_message_bytes, layout):
    """append_arrays reads back exactly as Log.append of the same records does."""
    values = [v for v, _, _ in records]
    keys = [k for _, k, _ in records]
    ts = [t for _, _, t in records]
    d = tmp_path_factory.mktemp("prop")
    clock = FakeClock()
    # retention.ms=-1: timestamps far in the past must not make a rolled segment expire
    with open_log(d / "a-0", clock, max_message_bytes=1 << 20, retention_ms=-1) as ref, \
            open_log(d / "b-0", clock, max_message_bytes=max_message_bytes, retention_ms=-1) as log:
        ref.append(values, keys=keys, timestamps=ts)
        vbuf, vlens = _cols(values)
        kbuf, klens = _cols(keys)
        if layout == "positions":  # the same bytes, reversed in the buffer
            vpos = len(vbuf) - np.cumsum(np.maximum(vlens, 0))
            kpos = len(kbuf) - np.cumsum(np.maximum(klens, 0))
            vrev = b"".join(v for v in reversed(values) if v is not None)
            krev = b"".join(k for k in reversed(keys) if k is not None)
            try:
                log.append_arrays(vrev, positions=vpos, lengths=vlens, keys=krev, key_positions=kpos,
                                  key_lengths=klens, timestamps=ts)
            except RecordTooLarge:
                assert max_message_bytes < 1 << 20
                return
        else:
            try:
                log.append_arrays(vbuf, lengths=vlens, keys=kbuf, key_lengths=klens,
                                  timestamps=np.array(ts, dtype=np.int64))
            except RecordTooLarge:
                assert max_message_bytes < 1 << 20
                return
        assert _read_all(log) == _read_all(ref)
        assert all(b.size_bytes <= max_message_bytes for b in _all_batches(log))

"""Log.append of one record: the single C call (pylog._native._records.append_one)
writes the very bytes the general path writes, takes over rolls, reservations,
flushes and the first-batch timestamp exactly as before, and leaves every bad input
to the general path, which raises what it always raised and writes nothing."""
from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pylog import Log
from pylog.errors import (
    InvalidArgument,
    InvalidRecord,
    InvalidTimestamp,
    LogClosed,
    RecordBatchTooLarge,
    RecordTooLarge,
)
from tests.storage.helpers import FakeClock, open_log


def _log_bytes(log: Log) -> bytes:
    """Every batch the log holds (from its start: old timestamps may meet retention.ms)."""
    start = log.log_start_offset
    return b"".join(b.to_bytes() for b in log.read(start, 1 << 30)) if log.log_end_offset > start else b""


@pytest.fixture
def general_calls(monkeypatch):
    """Counts the appends that took the general path."""
    calls = []
    original = Log._append_locked

    def spy(self, *args, **kwargs):
        calls.append(args)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Log, "_append_locked", spy)
    return calls


record_st = st.tuples(
    st.one_of(st.none(), st.binary(max_size=200)),                  # value
    st.one_of(st.none(), st.binary(max_size=30)),                   # key (None: keys= left out or [None])
    st.booleans(),                                                  # pass keys= at all
    st.one_of(st.none(), st.integers(min_value=-1, max_value=2**45)),  # timestamp (None: now)
    st.booleans(),                                                  # a tuple instead of a list
)


@settings(max_examples=60, deadline=None)
@given(st.lists(record_st, min_size=1, max_size=25), st.sampled_from(["CreateTime", "LogAppendTime"]))
def test_same_bytes_as_the_general_path(tmp_path_factory, records, ts_type):
    root = tmp_path_factory.mktemp("same")
    clock = FakeClock()
    fast = open_log(root / "fast-0", clock, message_timestamp_type=ts_type)
    slow = open_log(root / "slow-0", clock, message_timestamp_type=ts_type)
    try:
        for value, key, with_keys, ts, as_tuple in records:
            seq = tuple if as_tuple else list
            kwargs = {}
            if with_keys:
                kwargs["keys"] = seq([key])
            if ts is not None:
                kwargs["timestamps"] = seq([ts])
            first = fast.append(seq([value]), **kwargs)
            # headers=[[]]: no headers either, but the general path
            assert slow.append([value], headers=[[]], **kwargs) == first
            clock.advance(7)
        assert fast.log_end_offset == slow.log_end_offset == len(records)
        assert fast.log_start_offset == slow.log_start_offset
        assert len(fast.segments) == len(slow.segments)
        assert _log_bytes(fast) == _log_bytes(slow)
        assert list(fast.records()) == list(slow.records())
        assert fast.segments[-1].rolling_timestamp_ms == slow.segments[-1].rolling_timestamp_ms
    finally:
        fast.close()
        slow.close()


def test_one_record_takes_the_c_path(tmp_path, clock, general_calls):
    log = open_log(tmp_path / "t-0", clock)
    assert log.append([b"a"]) == 0
    # A new segment reserves no disk: the first append takes the general path, which
    # reserves the first step; the next ones fit it and take the C path.
    assert len(general_calls) == 1
    del general_calls[:]
    assert log.append([b"b"], keys=[b"k"]) == 1
    assert log.append((None,), keys=(None,), timestamps=(5,)) == 2
    assert log.append([b""], keys=[b""], timestamps=[-1]) == 3
    assert general_calls == []
    assert [(r.offset, r.timestamp, r.key, r.value) for r in log.records()] == [
        (0, clock.now, None, b"a"), (1, clock.now, b"k", b"b"), (2, 5, None, None), (3, -1, b"", b"")]
    assert log.segments[-1].rolling_timestamp_ms == clock.now  # the first batch's max timestamp
    log.close()


def test_wall_clock_timestamps(tmp_path, general_calls):
    log = Log.open(tmp_path / "t-0")  # the default clock: append_one reads it in C
    log.append([b"first"])  # reserves the segment's first disk step (general path)
    del general_calls[:]
    before = time.time_ns() // 1_000_000
    log.append([b"x"])
    after = time.time_ns() // 1_000_000
    assert general_calls == []
    (_, rec) = log.records()
    assert before <= rec.timestamp <= after
    log.close()


@pytest.mark.parametrize("call, error", [
    (lambda log: log.append([123]), InvalidArgument),
    (lambda log: log.append(["text"]), InvalidArgument),
    (lambda log: log.append([b"v"], keys=[7]), InvalidArgument),
    (lambda log: log.append([b"v"], keys=[b"a", b"b"]), InvalidArgument),
    (lambda log: log.append([b"v"], keys=b"k"), InvalidArgument),
    (lambda log: log.append([b"v"], timestamps=[-5]), InvalidTimestamp),
    (lambda log: log.append([b"v"], timestamps=["soon"]), InvalidTimestamp),
    (lambda log: log.append([b"v"], timestamps=[2**64]), InvalidTimestamp),
    (lambda log: log.append([b"v"], timestamps=[1, 2]), InvalidArgument),
    (lambda log: log.append([b"x" * 2000]), RecordTooLarge),
    (lambda log: log.append([]), InvalidArgument),
])
def test_bad_input_raises_as_before_and_writes_nothing(tmp_path, clock, call, error):
    log = open_log(tmp_path / "t-0", clock, max_message_bytes=1000)
    log.append([b"first"])
    before = _log_bytes(log)
    with pytest.raises(error):
        call(log)
    assert log.log_end_offset == 1 and _log_bytes(log) == before
    log.close()


def test_compacted_log_refuses_a_null_key(tmp_path, clock):
    log = open_log(tmp_path / "t-0", clock, cleanup_policy="compact")
    with pytest.raises(InvalidRecord):
        log.append([b"v"])
    with pytest.raises(InvalidRecord):
        log.append([b"v"], keys=[None])
    assert log.append([b"v"], keys=[b"k"]) == 0
    assert log.log_end_offset == 1
    log.close()


def test_closed_log(tmp_path, clock):
    log = open_log(tmp_path / "t-0", clock)
    log.close()
    with pytest.raises(LogClosed):
        log.append([b"v"])


def test_batch_larger_than_a_segment(tmp_path, clock):
    log = open_log(tmp_path / "t-0", clock, segment_bytes=1024)
    with pytest.raises(RecordBatchTooLarge):
        log.append([b"x" * 1000])
    assert log.log_end_offset == 0
    log.close()


def test_rolls_by_size_and_time(tmp_path, clock, general_calls):
    log = open_log(tmp_path / "t-0", clock, segment_bytes=4096, segment_ms=1000)
    values = [b"v%05d" % i + b"." * 90 for i in range(200)]
    for v in values:
        log.append([v])
    by_size = len(log.segments)
    assert by_size >= 6  # ~160-byte batches, 4 KiB segments
    assert len(general_calls) >= by_size - 1  # each roll went through the general path
    assert len(general_calls) < 40  # and nothing else (reservations aside)
    clock.advance(1001)
    log.append([b"late"])
    assert len(log.segments) == by_size + 1
    assert log.segments[-1].rolling_timestamp_ms == clock.now
    assert [r.value for r in log.records()] == values + [b"late"]
    assert [r.offset for r in log.records()] == list(range(201))
    log.close()
    with Log.open(tmp_path / "t-0") as again:  # what was written reopens as it was
        assert [r.value for r in again.records()] == values + [b"late"]


def test_reconfigure_applies_to_the_next_append(tmp_path, clock):
    log = open_log(tmp_path / "t-0", clock)
    log.append([b"a" * 500])
    log.reconfigure(max_message_bytes=200)
    with pytest.raises(RecordTooLarge):
        log.append([b"a" * 500])
    log.reconfigure(message_timestamp_type="LogAppendTime")
    log.append([b"b"], timestamps=[5])
    assert list(log.records())[-1].timestamp == clock.now
    log.reconfigure(cleanup_policy="compact")
    with pytest.raises(InvalidRecord):
        log.append([b"c"])
    assert log.log_end_offset == 2
    log.close()


def test_flush_messages(tmp_path, clock):
    log = open_log(tmp_path / "t-0", clock, flush_messages=2)
    log.append([b"a"])
    assert log.recovery_point == 0
    log.append([b"b"])
    assert log.recovery_point == 2
    log.close()


def test_many_appends_past_the_first_disk_reservation(tmp_path, clock):
    log = open_log(tmp_path / "t-0", clock, segment_index_bytes=1 << 20)
    value = b"r" * 1000
    n = 2500  # ~2.6 MB: past the first 1 MiB reservation step
    for _ in range(n):
        log.append([value])
    assert log.log_end_offset == n and len(log.segments) == 1
    assert sum(1 for _ in log.records()) == n
    log.close()

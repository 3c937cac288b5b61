"""Log.append of a list of records: the single C call (pylog._native._records.append_many)
writes the very bytes the general path writes (through the mapping or through the
scratch buffer and pwrite, with the GIL held or released), and leaves every bad input
and every limit it cannot judge from its size estimate to the general path, which
raises what it always raised and writes nothing."""
from __future__ import annotations

import shutil
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pylog import Log
from pylog._native import _records
from pylog.errors import InvalidArgument, InvalidRecord, RecordBatchTooLarge, RecordTooLarge
from pylog.records import build_batch
from pylog.storage import log as log_module
from tests.storage.helpers import FakeClock, open_log
from tests.storage.test_log_append_one import _log_bytes, general_calls  # noqa: F401 (fixture)

values_st = st.lists(st.one_of(st.none(), st.binary(max_size=300)), min_size=2, max_size=40)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(values_st, st.sampled_from(["none", "keys", "null keys"]), st.integers(1, 30)),
                min_size=1, max_size=8),
       st.sampled_from(["CreateTime", "LogAppendTime"]), st.sampled_from([4096, 1 << 16, 1 << 20]))
def test_same_bytes_as_the_general_path(tmp_path_factory, calls, ts_type, segment_bytes):
    # `repeat` makes lists from a few records to hundreds of kilobytes: the mapping,
    # the scratch and pwrite (64 KiB and more) with the GIL released.
    root = tmp_path_factory.mktemp("many")
    clock = FakeClock()
    logs = [open_log(root / f"{name}-0", clock, message_timestamp_type=ts_type, segment_bytes=segment_bytes,
                     max_message_bytes=segment_bytes) for name in ("fast", "slow")]
    fast, slow = logs
    try:
        for values, keyed, repeat in calls:
            values = values * repeat
            keys = None if keyed == "none" else [
                None if keyed == "null keys" and i % 3 == 0 else b"k%d" % i for i in range(len(values))]
            outcome = []
            for log, extra in ((fast, {}), (slow, {"headers": [[]] * len(values)})):
                try:
                    outcome.append(log.append(list(values), keys=keys, **extra))
                except (RecordTooLarge, RecordBatchTooLarge) as exc:
                    outcome.append(type(exc))
            assert outcome[0] == outcome[1]
            clock.advance(3)
        assert fast.log_end_offset == slow.log_end_offset
        assert len(fast.segments) == len(slow.segments)
        assert _log_bytes(fast) == _log_bytes(slow)
        assert list(fast.records()) == list(slow.records())
        assert all(b.size_bytes <= segment_bytes for b in fast.read(0, 1 << 30))
    finally:
        for log in logs:
            log.close()
        shutil.rmtree(root)


def test_a_list_takes_the_c_path(tmp_path, clock, general_calls):
    log = open_log(tmp_path / "t-0", clock)
    assert log.append([b"a", b"b"]) == 0  # the first append reserves disk: general path
    del general_calls[:]
    assert log.append([b"c", None, b""], keys=[b"k", None, b"kk"]) == 2
    big = [b"%06d" % i + b"x" * 94 for i in range(2000)]  # ~210 KB: scratch, pwrite, GIL released
    assert log.append(big) == 5
    assert log.append(big[:100], keys=[None] * 100) == 2005
    assert general_calls == []
    got = [(r.offset, r.timestamp, r.key, r.value) for r in log.records()]
    assert got[:5] == [(0, clock.now, None, b"a"), (1, clock.now, None, b"b"), (2, clock.now, b"k", b"c"),
                       (3, clock.now, None, None), (4, clock.now, b"kk", b"")]
    assert [v for _, _, _, v in got[5:2005]] == big and len(got) == 2105
    log.close()
    with Log.open(tmp_path / "t-0") as again:
        assert len(list(again.records())) == 2105


def test_a_batch_bigger_than_the_scratch_grows_it_once(tmp_path, clock, general_calls, monkeypatch):
    monkeypatch.setattr(log_module, "_scratch", threading.local())  # this thread's, new
    log = open_log(tmp_path / "t-0", clock, segment_bytes=64 << 20, max_message_bytes=8 << 20)
    log.append([b"first", b"x"])
    log.segments[-1].ensure_room(32 << 20)  # disk reserved ahead: only the scratch decides
    huge = [b"y" * 1000] * 3000  # ~3 MB: over the first scratch buffer (1 MiB)
    del general_calls[:]
    log.append(huge)
    assert len(general_calls) == 1  # grew the scratch
    log.append(huge)
    log.append(huge)
    assert len(general_calls) == 1
    assert log.log_end_offset == 9002
    log.close()


def test_the_estimate_never_refuses_what_fits(tmp_path, clock, general_calls):
    # 300 short values and a long one: the estimate counts the long one's length varint
    # for every record; the exact batch fits max.message.bytes, so the general path
    # (which measures it) takes it.
    vals = [b"s" * 10] * 300 + [b"L" * 200]
    exact = len(build_batch(vals, base_timestamp=clock.now))
    log = open_log(tmp_path / "t-0", clock, max_message_bytes=exact)
    log.append([b"a", b"b"])
    del general_calls[:]
    assert log.append(list(vals)) == 2
    assert len(general_calls) == 1
    assert [r.value for r in log.records()][2:] == vals
    log.close()


@pytest.mark.parametrize("call, error", [
    (lambda log: log.append([b"a", 123]), InvalidArgument),
    (lambda log: log.append([b"a", "text"]), InvalidArgument),
    (lambda log: log.append([b"a", bytearray(b"b")]), None),  # fine: the general path takes it
    (lambda log: log.append([b"v", b"w"], keys=[b"a"]), InvalidArgument),
    (lambda log: log.append([b"v", b"w"], keys=b"kk"), InvalidArgument),
    (lambda log: log.append([b"v", b"w"], keys=[b"a", 7]), InvalidArgument),
    (lambda log: log.append([b"x" * 600, b"y" * 600]), RecordTooLarge),
    (lambda log: log.append([b"v" * 100, b"w" * 100], keys=[b"k" * 400, b"l" * 400]), RecordTooLarge),
    (lambda log: log.append([b"v" * 10] * 30, keys=[b"k" * 25] * 30), RecordTooLarge),
])
def test_bad_input_raises_as_before_and_writes_nothing(tmp_path, clock, call, error):
    log = open_log(tmp_path / "t-0", clock, max_message_bytes=1000)
    log.append([b"first", b"second"])
    before = _log_bytes(log)
    if error is None:
        call(log)
        assert log.log_end_offset == 4
        return log.close()
    with pytest.raises(error):
        call(log)
    assert log.log_end_offset == 2 and _log_bytes(log) == before
    log.close()


def test_compacted_log_refuses_null_keys(tmp_path, clock):
    log = open_log(tmp_path / "t-0", clock, cleanup_policy="compact")
    with pytest.raises(InvalidRecord):
        log.append([b"v", b"w"])
    with pytest.raises(InvalidRecord):
        log.append([b"v", b"w"], keys=[b"k", None])
    assert log.append([b"v", b"w"], keys=[b"k", b"l"]) == 0
    assert log.log_end_offset == 2
    log.close()


def test_rolls_by_size(tmp_path, clock):
    log = open_log(tmp_path / "t-0", clock, segment_bytes=4096)
    values = [b"v%05d" % i + b"." * 90 for i in range(400)]
    for i in range(0, 400, 10):
        log.append(values[i:i + 10])
    assert len(log.segments) >= 10
    assert [r.value for r in log.records()] == values
    log.close()


def test_lists_changed_by_another_thread_while_the_gil_is_released(tmp_path, clock):
    # The build of a big batch runs without the GIL; another thread replacing the
    # list's items meanwhile must not free what the build reads.
    log = open_log(tmp_path / "t-0", clock, segment_bytes=64 << 20, max_message_bytes=8 << 20)
    values = [bytes([i % 251]) * 200 for i in range(2000)]  # ~400 KB
    log.append(list(values))
    stop = threading.Event()
    shared = list(values)

    def churn():
        while not stop.is_set():
            for i in range(0, len(shared), 7):
                shared[i] = bytes(200)
            for i in range(0, len(shared), 7):
                shared[i] = values[i]

    t = threading.Thread(target=churn)
    t.start()
    try:
        for _ in range(30):
            log.append(shared)
    finally:
        stop.set()
        t.join()
    for rec in log.records():
        i = rec.offset % 2000
        assert rec.value in (values[i], bytes(200))
    log.close()


def test_append_many_arguments():
    with pytest.raises(TypeError):
        _records.append_many()
    with pytest.raises(ValueError):
        _records.append_many(0, 0, [b"a", b"b"], None, None, (), None, None)

"""One writer and many readers on one Log at once (issue point 8).

Values, keys and timestamps derive from the offset (helpers.value_for / key_for /
T0 + offset), so a reader can check every record it sees against the offset it has:
complete, dense, and the writer's.  Concurrent roll, retention, delete_records and
flush run in a maintenance thread in the second test.  Iteration counts are bounded;
nothing sleeps; nothing asserts on timing.
"""
from __future__ import annotations

import random
import sys
import threading
from typing import List

import pytest

from pylog import Log
from pylog.errors import OffsetOutOfRange
from tests.storage.helpers import T0, FakeClock, key_for, value_for

N_READERS = 4


@pytest.fixture(autouse=True)
def _fast_switching():
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # more interleavings per run
    yield
    sys.setswitchinterval(old)


def _check_record(r, salt=b""):
    assert r.value == value_for(r.offset, salt), f"offset {r.offset}: value {r.value[:40]!r}"
    assert r.key == key_for(r.offset), f"offset {r.offset}: key {r.key!r}"
    assert r.timestamp == T0 + r.offset, f"offset {r.offset}: timestamp {r.timestamp}"


def _writer(log: Log, n_batches: int, done: threading.Event, errors: list, seed: int) -> None:
    rng = random.Random(seed)
    try:
        for _ in range(n_batches):
            first = log.log_end_offset
            n = rng.randint(1, 9)
            offs = range(first, first + n)
            got = log.append([value_for(o) for o in offs], keys=[key_for(o) for o in offs],
                             timestamps=[T0 + o for o in offs])
            assert got == first, (got, first)
    except BaseException as exc:  # reported by the test
        errors.append(exc)
    finally:
        done.set()


def _reader(log: Log, done: threading.Event, errors: list, seed: int, counts: list, idx: int,
            *, start_may_move: bool, min_rounds: int = 40, max_rounds: int = 4000) -> None:
    rng = random.Random(seed)
    held = []  # views kept across later appends / rolls / deletions
    try:
        rounds = 0
        while rounds < max_rounds and (rounds < min_rounds or not done.is_set()):
            rounds += 1
            start, end = log.log_start_offset, log.log_end_offset
            off = rng.randint(start, end)
            op = rng.randrange(3)
            try:
                if op == 0:
                    batches = log.read(off, max_bytes=rng.choice([0, 300, 4096, 1 << 16]))
                    if off < end:
                        assert batches, f"read({off}) empty below the end {end} seen before"
                        assert batches[0].base_offset <= off <= batches[0].last_offset
                    prev = None
                    for b in batches:
                        b.validate()
                        assert prev is None or b.base_offset == prev + 1
                        prev = b.last_offset
                        recs = list(b.records())
                        assert [r.offset for r in recs] == list(range(b.base_offset, b.last_offset + 1))
                        for r in recs:
                            _check_record(r)
                        counts[idx] += len(recs)
                    if batches and rng.random() < 0.05 and len(held) < 50:
                        held.append((batches[0], batches[0].to_bytes()))
                elif op == 1:
                    limit = off + rng.randint(1, 300)
                    recs = list(log.records(off, max_offset=limit))
                    assert [r.offset for r in recs] == list(range(off, off + len(recs)))
                    if not start_may_move:
                        assert len(recs) >= min(limit, end) - off, "records() stopped early"
                    for r in recs:
                        _check_record(r)
                    counts[idx] += len(recs)
                else:
                    x = rng.randint(0, end + 5)
                    got = log.offset_for_timestamp(T0 + x)  # timestamps increase with offsets
                    if not start_may_move:
                        if x < end:
                            assert got == x, (x, got)
                        else:
                            assert got is None or got == x, (x, got, end)
                    elif x < end:
                        # x itself, or the log start if retention moved past x meanwhile
                        assert got is not None and (got == x or x < got <= log.log_start_offset), (x, got)
                    else:
                        assert got is None or got >= x, (x, got, end)
            except OffsetOutOfRange:
                # only legitimate if the log start moved past the offset meanwhile
                assert start_may_move and log.log_start_offset > off, \
                    f"OffsetOutOfRange for {off} within [{log.log_start_offset}, {log.log_end_offset}]"
        for b, copy in held:
            assert b.to_bytes() == copy, "a held view changed under concurrent writes"
    except BaseException as exc:
        errors.append(exc)


def _run(threads: List[threading.Thread]) -> None:
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
        assert not t.is_alive(), "a thread did not finish (deadlock?)"


def test_one_writer_many_readers(tmp_path):
    log = Log.open(tmp_path / "t-0", clock=FakeClock(), segment_bytes=8192, segment_index_bytes=4096,
                   index_interval_bytes=512, retention_ms=-1)
    done, errors = threading.Event(), []
    counts = [0] * N_READERS
    threads = [threading.Thread(target=_writer, args=(log, 1500, done, errors, 1))]
    threads += [threading.Thread(target=_reader, args=(log, done, errors, 10 + i, counts, i),
                                 kwargs=dict(start_may_move=False)) for i in range(N_READERS)]
    _run(threads)
    try:
        assert not errors, errors[0]
        assert all(counts), counts
        assert len(log.segments) > 5
        recs = list(log.records())
        assert [r.offset for r in recs] == list(range(log.log_end_offset))
        for r in recs:
            _check_record(r)
    finally:
        log.close()


def test_readers_during_roll_retention_delete_and_flush(tmp_path):
    clock = FakeClock(T0)
    log = Log.open(tmp_path / "t-0", clock=clock, segment_bytes=4096, segment_index_bytes=4096,
                   index_interval_bytes=512, retention_ms=-1, retention_bytes=6 * 4096)
    done, errors = threading.Event(), []
    counts = [0] * N_READERS

    def maintenance():
        rng = random.Random(99)
        try:
            rounds = 0
            while rounds < 3000 and (rounds < 20 or not done.is_set()):
                rounds += 1
                op = rng.randrange(4)
                if op == 0:
                    log.roll()
                elif op == 1:
                    log.enforce_retention()
                elif op == 2:
                    start, end = log.log_start_offset, log.log_end_offset
                    if end > start and rng.random() < 0.3:
                        log.delete_records(rng.randint(start, start + (end - start) // 4))
                else:
                    log.flush()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=_writer, args=(log, 1500, done, errors, 2)),
               threading.Thread(target=maintenance)]
    threads += [threading.Thread(target=_reader, args=(log, done, errors, 20 + i, counts, i),
                                 kwargs=dict(start_may_move=True)) for i in range(N_READERS)]
    _run(threads)
    try:
        assert not errors, errors[0]
        assert all(counts), counts
        start = log.log_start_offset
        assert start > 0, "retention / delete_records never moved the start"
        recs = list(log.records())
        assert [r.offset for r in recs] == list(range(start, log.log_end_offset))
        for r in recs:
            _check_record(r)
        log.flush()
        assert log.recovery_point == log.log_end_offset
    finally:
        log.close()


def test_many_writers_get_distinct_dense_offsets(tmp_path):
    """Several threads appending at once: every append gets its own range, the ranges
    tile the log exactly, and each batch holds what its writer appended."""
    log = Log.open(tmp_path / "t-0", clock=FakeClock(), segment_bytes=4096, segment_index_bytes=4096,
                   retention_ms=-1)
    results: List[tuple] = []
    errors: list = []
    lock = threading.Lock()

    def writer(w):
        rng = random.Random(w)
        try:
            for i in range(300):
                n = rng.randint(1, 5)
                vals = [b"w%d-%d-%d" % (w, i, j) for j in range(n)]
                first = log.append(vals)
                with lock:
                    results.append((first, vals))
        except BaseException as exc:
            errors.append(exc)

    _run([threading.Thread(target=writer, args=(w,)) for w in range(4)])
    try:
        assert not errors, errors[0]
        results.sort()
        expect = 0
        by_offset = {}
        for first, vals in results:
            assert first == expect, "appends overlapped or left a gap"
            expect += len(vals)
            for j, v in enumerate(vals):
                by_offset[first + j] = v
        assert log.log_end_offset == expect
        assert [(r.offset, r.value) for r in log.records()] == sorted(by_offset.items())
    finally:
        log.close()

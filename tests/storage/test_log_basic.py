"""Log behaviour: offsets, reads, rolls, retention, timestamps, reopen, and bad input."""
import os

import numpy as np
import pytest

from pylog import Log
from pylog.errors import (
    CorruptRecordError,
    InvalidArgument,
    InvalidConfig,
    InvalidTimestamp,
    LogClosed,
    OffsetOutOfRange,
    RecordBatchTooLarge,
    RecordTooLarge,
    StorageError,
)
from pylog.records import build_batch


def snapshot(path):
    out = {}
    for name in sorted(os.listdir(path)):
        with open(path / name, "rb") as f:
            out[name] = f.read()
    return out


def test_issue_example(tmp_path):
    log = Log.open(tmp_path / "orders-0", segment_bytes=64 << 20, retention_ms=7 * 24 * 3600 * 1000)
    first = log.append([b"a", b"b", b"c"], keys=[b"k1", None, b"k1"])
    assert first == 0
    recs = list(log.records(first))
    assert [(r.offset, r.key, r.value) for r in recs] == [(0, b"k1", b"a"), (1, None, b"b"), (2, b"k1", b"c")]
    batches = log.read(first, max_bytes=1 << 20)
    assert len(batches) == 1 and batches[0].record_count == 3
    assert (log.log_start_offset, log.log_end_offset) == (0, 3)
    log.close()


def test_offsets_are_dense_across_appends_rolls_and_reopen(tmp_path):
    log = Log.open(tmp_path / "t-0", segment_bytes=4096)
    expect = 0
    for n in [1, 5, 17, 3, 40] * 10:
        assert log.append([b"v%06d" % (expect + i) for i in range(n)]) == expect
        expect += n
    assert len(log.segments) > 3
    log.close()
    log = Log.open(tmp_path / "t-0", segment_bytes=4096)
    assert log.log_end_offset == expect
    recs = list(log.records())
    assert [r.offset for r in recs] == list(range(expect))
    assert all(r.value == b"v%06d" % r.offset for r in recs)
    assert log.append([b"next"]) == expect
    log.close()


def test_segment_files_named_by_base_offset_and_shrunk(tmp_path):
    log = Log.open(tmp_path / "t-0", segment_bytes=4096)
    for i in range(100):
        log.append([b"x" * 50])
    bases = [s.base_offset for s in log.segments]
    log.close()
    names = sorted(n for n in os.listdir(tmp_path / "t-0") if n.endswith(".log"))
    assert names == [f"{b:020d}.log" for b in bases]
    for n in names:
        assert os.path.getsize(tmp_path / "t-0" / n) <= 4096


def test_keys_headers_timestamps(tmp_path):
    with Log.open(tmp_path / "t-0") as log:
        log.append([b"a", None], keys=[None, b"k"], headers=[[("h", b"1")], []], timestamps=[10, 20])
        recs = list(log.records())
        assert recs[0].headers == (("h", b"1"),) and recs[1].value is None and recs[1].key == b"k"
        assert [r.timestamp for r in recs] == [10, 20]


def test_read_max_bytes_and_max_offset(tmp_path):
    with Log.open(tmp_path / "t-0") as log:
        for i in range(10):
            log.append([b"x" * 100] * 3)
        assert len(log.read(0, max_bytes=0)) == 1  # at least one batch (KIP-74)
        one = log.read(0, max_bytes=0)[0].size_bytes
        assert len(log.read(0, max_bytes=3 * one)) == 3
        assert len(log.read(4)) == 9 and log.read(4)[0].base_offset == 3  # batch holding 4
        assert [b.base_offset for b in log.read(0, max_offset=9)] == [0, 3, 6]
        assert log.read(30) == []
        assert log.read(0, max_offset=0) == []


def test_roll_by_time(tmp_path, clock):
    with Log.open(tmp_path / "t-0", segment_ms=1000, clock=clock) as log:
        log.append([b"a"])
        clock.advance(500)
        log.append([b"b"])
        assert len(log.segments) == 1
        clock.advance(1000)
        log.append([b"c"])
        assert len(log.segments) == 2 and log.segments[-1].base_offset == 2


def test_retention_by_time(tmp_path, clock):
    with Log.open(tmp_path / "t-0", segment_bytes=1024, retention_ms=10_000, clock=clock) as log:
        for i in range(30):
            log.append([b"x" * 100])
        n_before = len(log.segments)
        assert n_before > 3
        clock.advance(5_000)
        assert log.enforce_retention() == 0
        clock.advance(6_000)
        deleted = log.enforce_retention()
        assert deleted == n_before - 1  # never the active segment
        assert log.log_start_offset == log.segments[0].base_offset
        with pytest.raises(OffsetOutOfRange):
            log.read(0)
        assert [r.offset for r in log.records()][0] == log.log_start_offset


def test_retention_by_size(tmp_path):
    with Log.open(tmp_path / "t-0", segment_bytes=1024, retention_bytes=2048) as log:
        for i in range(60):
            log.append([b"x" * 100])
        log.enforce_retention()
        assert log.size_bytes - log.segments[0].size_bytes < 2048
        assert log.size_bytes >= 1024 or len(log.segments) == 1


def test_delete_records(tmp_path):
    with Log.open(tmp_path / "t-0", segment_bytes=1024) as log:
        for i in range(40):
            log.append([b"x" * 100])
        log.delete_records(15)
        assert log.log_start_offset == 15
        assert log.segments[0].base_offset <= 15
        assert [r.offset for r in log.records()][:2] == [15, 16]
        with pytest.raises(OffsetOutOfRange):
            log.records(14)
        with pytest.raises(OffsetOutOfRange):
            log.delete_records(41)
    with Log.open(tmp_path / "t-0", segment_bytes=1024) as log:
        assert log.log_start_offset == 15


def test_offset_for_timestamp(tmp_path):
    with Log.open(tmp_path / "t-0", segment_bytes=1024, index_interval_bytes=100, retention_ms=-1) as log:
        for i in range(50):
            log.append([b"x" * 50, b"y" * 50], timestamps=[1000 + 10 * i, 1005 + 10 * i])
        assert log.offset_for_timestamp(1000) == 0
        assert log.offset_for_timestamp(1001) == 1
        assert log.offset_for_timestamp(1006) == 2
        assert log.offset_for_timestamp(1000 + 10 * 37) == 74
        assert log.offset_for_timestamp(10**12) is None
        assert log.offset_for_timestamp(-1) == log.log_end_offset
        assert log.offset_for_timestamp(-2) == log.log_start_offset
        with pytest.raises(InvalidTimestamp):
            log.offset_for_timestamp(-5)


def test_truncate_to(tmp_path):
    with Log.open(tmp_path / "t-0", segment_bytes=1024) as log:
        for i in range(50):
            log.append([b"v%d" % i, b"w%d" % i])
        log.truncate_to(61)  # inside the batch 60..61: the whole batch goes (Kafka)
        assert log.log_end_offset == 60
        log.truncate_to(40)
        assert log.log_end_offset == 40
        assert log.append([b"new"]) == 40
        assert [r.value for r in log.records(38)] == [b"v19", b"w19", b"new"]
        with pytest.raises(OffsetOutOfRange):
            log.truncate_to(42)
        log.truncate_to(0)
        assert (log.log_start_offset, log.log_end_offset) == (0, 0)
        assert log.append([b"again"]) == 0


def test_append_batches_assigns_offsets_and_validates(tmp_path):
    with Log.open(tmp_path / "t-0") as log:
        data = build_batch([b"a", b"b"], base_offset=77) + build_batch([b"c"], base_offset=5)
        info = log.append_batches(data)
        assert (info.first_offset, info.last_offset, info.batches, info.records) == (0, 2, 2, 3)
        assert [r.value for r in log.records()] == [b"a", b"b", b"c"]
        before = snapshot(tmp_path / "t-0")
        bad = bytearray(build_batch([b"zz"]))
        bad[-1] ^= 1
        with pytest.raises(CorruptRecordError, match="CRC"):
            log.append_batches(build_batch([b"ok"]) + bytes(bad))
        assert log.log_end_offset == 3 and snapshot(tmp_path / "t-0") == before
        follower = build_batch([b"d"], base_offset=10)
        info = log.append_batches(follower, assign_offsets=False, leader_epoch=3)
        assert info.first_offset == 10 and log.read(10)[0].partition_leader_epoch == 3
        with pytest.raises(InvalidArgument):
            log.append_batches(build_batch([b"e"], base_offset=2), assign_offsets=False)


def test_log_append_time(tmp_path, clock):
    with Log.open(tmp_path / "t-0", message_timestamp_type="LogAppendTime", clock=clock) as log:
        log.append([b"a"], timestamps=[5])
        log.append_batches(build_batch([b"b"], timestamps=[6]))
        assert [r.timestamp for r in log.records()] == [clock.now, clock.now]
        for b in log.read(0):
            b.validate()


def test_bad_input_raises_and_writes_nothing(tmp_path):
    log = Log.open(tmp_path / "t-0", segment_bytes=1024, max_message_bytes=500)
    log.append([b"ok"])
    log.flush()
    before = snapshot(tmp_path / "t-0")
    cases = [
        (InvalidArgument, lambda: log.append([])),
        (InvalidArgument, lambda: log.append("text")),
        (InvalidArgument, lambda: log.append([b"a", 3])),
        (InvalidArgument, lambda: log.append([b"a"], keys=[b"a", b"b"])),
        (InvalidTimestamp, lambda: log.append([b"a"], timestamps=[-7])),
        (RecordTooLarge, lambda: log.append([b"x" * 600])),
        (RecordTooLarge, lambda: log.append_batches(build_batch([b"x" * 600]))),
        (CorruptRecordError, lambda: log.append_batches(b"\x00" * 70)),
        (CorruptRecordError, lambda: log.append_batches(b"")),
        (InvalidArgument, lambda: log.append_batches(12)),
        (OffsetOutOfRange, lambda: log.read(5)),
        (OffsetOutOfRange, lambda: log.read(-1)),
        (InvalidArgument, lambda: log.read("0")),
        (InvalidArgument, lambda: log.read(0, max_bytes=-1)),
        (OffsetOutOfRange, lambda: log.records(9)),
        (OffsetOutOfRange, lambda: log.truncate_to(9)),
    ]
    for exc, call in cases:
        with pytest.raises(exc):
            call()
    assert snapshot(tmp_path / "t-0") == before
    log.close()
    for call in (lambda: log.append([b"a"]), lambda: log.read(0), lambda: log.flush(),
                 lambda: log.records(), lambda: log.truncate_to(0)):
        with pytest.raises(LogClosed):
            call()
    log.close()  # idempotent


def test_batch_larger_than_a_segment(tmp_path):
    with Log.open(tmp_path / "t-0", segment_bytes=256) as log:
        with pytest.raises(RecordBatchTooLarge):
            log.append([b"x" * 300])
        assert log.log_end_offset == 0


def test_bad_config(tmp_path):
    for kwargs in ({"segment_bytes": 10}, {"segment_bytes": 2**31}, {"retention_ms": -2},
                   {"flush_messages": 0}, {"message_timestamp_type": "Now"}, {"segment_bytes": "1"},
                   {"no_such_setting": 1}, {"config": {"segment.bytez": 1}}):
        with pytest.raises(InvalidConfig):
            Log.open(tmp_path / "t-0", **kwargs)
    with Log.open(tmp_path / "t-0", config={"segment.bytes": 2048}) as log:
        assert log.config.segment_bytes == 2048


def test_directory_is_locked(tmp_path):
    with Log.open(tmp_path / "t-0"):
        with pytest.raises(StorageError, match="already open"):
            Log.open(tmp_path / "t-0")


def test_flush_policy_moves_recovery_point(tmp_path, clock):
    with Log.open(tmp_path / "t-0", flush_messages=3) as log:
        log.append([b"a", b"b"])
        assert log.recovery_point == 0
        log.append([b"c"])
        assert log.recovery_point == 3
    with Log.open(tmp_path / "t-1", flush_ms=1000, clock=clock) as log:
        log.append([b"a"])
        clock.advance(1500)
        log.append([b"b"])
        assert log.recovery_point == 2


def test_decoded_arrays_view(tmp_path):
    from pylog.records import decode_records

    with Log.open(tmp_path / "t-0") as log:
        log.append([b"%d" % i for i in range(100)])
        batch = log.read(0)[0]
        arrays = decode_records(batch.buffer)
        assert isinstance(arrays.offsets, np.ndarray)
        assert arrays.offsets.tolist() == list(range(100))
        assert arrays.values()[42] == b"42"

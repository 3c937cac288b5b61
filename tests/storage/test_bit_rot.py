"""Bit rot is detected, never served (issue 12 points 5 and 6).

A bit flipped in a flushed, cleanly closed segment must be caught by every read path —
Log.records(), read(), read_arrays()/iter_arrays(), offset_for_timestamp(),
Consumer.poll()/poll_arrays(), the group coordinator's replay of __consumer_offsets,
compaction, and open/recovery — as a CorruptRecordError naming the segment file and
the batch's offset; ``check_crcs=False`` (Kafka's check.crcs) returns the bytes as
they are.  ``pylog verify`` reports the damage with exit status 1.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import List, Tuple

import numpy as np
import pytest

import pylog
from pylog.errors import CorruptRecordError
from pylog.storage import Log
from tests.storage.helpers import FakeClock, segment_names, walk_batches

N = 20_000
PER_BATCH = 100


def value(i: int) -> bytes:
    return b"value-%06d" % i


def write_log(path: Path, n: int = N, **settings) -> None:
    with Log.open(path, clock=FakeClock(), **settings) as log:
        for i in range(0, n, PER_BATCH):
            log.append([value(j) for j in range(i, min(n, i + PER_BATCH))])


def flip_in_record(seg: Path, which: float = 0.5, bit: int = 0x01) -> Tuple[int, int]:
    """Flips one bit inside the records of the batch at ``which`` of the segment (CRC
    covered, headers untouched): in the last digit of a value(i) it holds, so that the
    record still parses ('0' <-> '1'), else in the middle of its records section.
    Returns (the batch's position, its base offset)."""
    data = seg.read_bytes()
    batches = walk_batches(data)
    b = batches[int(len(batches) * which)]
    at = b.pos + 61 + (b.size - 61) // 2
    for off in range(b.base_offset + (b.last_offset - b.base_offset) // 2, b.last_offset + 1):
        i = data.find(value(off), b.pos + 61, b.pos + b.size)
        if i >= 0:
            at = i + len(value(off)) - 1
            break
    with open(seg, "r+b") as f:
        f.seek(at)
        old = f.read(1)[0]
        f.seek(at)
        f.write(bytes([old ^ bit]))
    return b.pos, b.base_offset


def first_segment(path: Path) -> Path:
    return path / segment_names(os.listdir(path))[0]


@pytest.fixture
def damaged(tmp_path):
    """A closed log of N records whose first segment has one bit flipped in the middle."""
    path = tmp_path / "t-0"
    write_log(path)
    seg = first_segment(path)
    pos, base = flip_in_record(seg)
    return path, seg, pos, base


def assert_names_damage(exc: BaseException, seg: Path, pos: int, base: int) -> None:
    msg = str(exc)
    assert str(seg) in msg, msg
    assert f"offset {base}" in msg, msg
    assert f"position {pos}" in msg, msg
    assert "CRC32C mismatch" in msg and "stored 0x" in msg and "computed 0x" in msg, msg


# ------------------------------------------------------------------ the reported bug
def test_reported_bug_records_raises_instead_of_returning_a_changed_record(damaged):
    path, seg, pos, base = damaged
    with Log.open(path, clock=FakeClock()) as log:
        assert log.log_end_offset == N  # open does not scan a clean segment's CRCs
        got = []
        with pytest.raises(CorruptRecordError) as ei:
            for rec in log.records():
                got.append(rec)
        assert_names_damage(ei.value, seg, pos, base)
        # what came before the damaged batch was served, and exactly right
        assert len(got) <= base
        assert [r.value for r in got] == [value(i) for i in range(len(got))]
        assert [r.offset for r in got] == list(range(len(got)))
        # reading past the damaged batch works
        after = list(log.records(base + PER_BATCH))
        assert [r.value for r in after] == [value(i) for i in range(base + PER_BATCH, N)]


def test_check_crcs_false_returns_the_bytes_as_they_are(damaged):
    path, seg, pos, base = damaged
    with Log.open(path, clock=FakeClock()) as log:
        recs = list(log.records(check_crcs=False))
        assert len(recs) == N
        differ = [r.offset for r in recs if r.value != value(r.offset)]
        assert len(differ) == 1 and base <= differ[0] < base + PER_BATCH
        arrays = [a for a in log.iter_arrays(check_crcs=False)]
        assert sum(len(a) for a in arrays) == N
        batches = log.read(base, 1, check_crcs=False)
        assert batches[0].base_offset == base
        with pytest.raises(CorruptRecordError):
            batches[0].validate()


# ------------------------------------------------------------------ each read path
def test_read_raises_naming_the_segment(damaged):
    path, seg, pos, base = damaged
    with Log.open(path, clock=FakeClock()) as log:
        with pytest.raises(CorruptRecordError) as ei:
            log.read(base)
        assert_names_damage(ei.value, seg, pos, base)
        # a read that takes the damaged batch among others raises too: nothing half-returned
        with pytest.raises(CorruptRecordError):
            log.read(base - 5 * PER_BATCH, max_bytes=1 << 20)
        assert log.read(base + PER_BATCH, max_bytes=1)[0].base_offset == base + PER_BATCH
        assert [len(b) for b in log.read(0, max_bytes=1)] == [PER_BATCH]


def test_read_arrays_raises_naming_the_segment(damaged):
    path, seg, pos, base = damaged
    with Log.open(path, clock=FakeClock()) as log:
        with pytest.raises(CorruptRecordError) as ei:
            log.read_arrays(base)
        assert_names_damage(ei.value, seg, pos, base)
        with pytest.raises(CorruptRecordError):
            log.read_arrays(0, max_bytes=1 << 30)
        ok = log.read_arrays(0, base)
        assert ok.values() == [value(i) for i in range(len(ok))]


def test_iter_arrays_raises_naming_the_segment(damaged):
    path, seg, pos, base = damaged
    with Log.open(path, clock=FakeClock()) as log:
        seen = 0
        with pytest.raises(CorruptRecordError) as ei:
            for a in log.iter_arrays(max_bytes=4096):
                assert a.values() == [value(int(o)) for o in a.offsets]
                seen += len(a)
        assert_names_damage(ei.value, seg, pos, base)
        assert seen <= base


def test_offset_for_timestamp_raises_on_the_damaged_batch(tmp_path):
    path = tmp_path / "t-0"
    t0 = FakeClock().now - 100_000
    with Log.open(path, clock=FakeClock()) as log:
        for i in range(0, 1000, PER_BATCH):
            log.append([value(j) for j in range(i, i + PER_BATCH)],
                       timestamps=[t0 + j for j in range(i, i + PER_BATCH)])
    seg = first_segment(path)
    pos, base = flip_in_record(seg)
    with Log.open(path, clock=FakeClock()) as log:
        assert log.offset_for_timestamp(t0 + base - 1) == base - 1
        with pytest.raises(CorruptRecordError) as ei:
            log.offset_for_timestamp(t0 + base + 3)
        assert str(seg) in str(ei.value)


def _broker_with_damage(tmp_path, compression: str = "none"):
    data = tmp_path / "data"
    with pylog.Broker.open(data, background_threads=False) as broker:
        broker.create_topic("t", 1)
        with pylog.Producer(broker, linger_ms=0, compression_type=compression) as p:
            for i in range(2000):
                p.send("t", value(i), partition=0)
                if i % 100 == 99:
                    p.flush()
    seg = first_segment(data / "t-0")
    pos, base = flip_in_record(seg)
    return data, base


@pytest.mark.parametrize("compression", ["none", "zstd"])
@pytest.mark.parametrize("how", ["poll", "poll_arrays"])
def test_consumer_check_crcs(tmp_path, how, compression):
    data, base = _broker_with_damage(tmp_path, compression)
    with pylog.Broker.open(data, background_threads=False) as broker:
        c = pylog.Consumer(broker, auto_offset_reset="earliest")
        c.assign([("t", 0)])
        got = 0
        with pytest.raises(CorruptRecordError) as ei:
            for _ in range(100):
                out = getattr(c, how)(timeout=0)
                got += len(out)
        assert "t-0" in str(ei.value) and "CRC32C mismatch" in str(ei.value)
        assert got <= base
        c.close()
        if compression != "none":
            return  # the damaged zstd frame would not decompress anyway
        # check.crcs=false: the consumer takes the bytes as the broker serves them
        c = pylog.Consumer(broker, {"check.crcs": False}, auto_offset_reset="earliest")
        c.assign([("t", 0)])
        values: List[bytes] = []
        for _ in range(100):
            out = c.poll(timeout=0)
            if not out:
                break
            values += [r.value for r in out]
        c.close()
        assert len(values) == 2000
        assert sum(v != value(i) for i, v in enumerate(values)) == 1


def test_group_coordinator_replay_detects_a_damaged_offsets_record(tmp_path):
    data = tmp_path / "data"
    with pylog.Broker.open(data, background_threads=False) as broker:
        broker.create_topic("t", 1)
        with pylog.Producer(broker, linger_ms=0) as p:
            for i in range(10):
                p.send("t", value(i), partition=0)
        c = pylog.Consumer(broker, group_id="g", auto_offset_reset="earliest", enable_auto_commit=False)
        c.assign([("t", 0)])
        assert len(c.poll(timeout=0)) == 10
        c.commit()
        c.close()
    parts = [d for d in data.iterdir() if d.name.startswith("__consumer_offsets-")
             and any(walk_batches(first_segment(d).read_bytes()))]
    assert len(parts) == 1
    seg = first_segment(parts[0])
    pos, base = flip_in_record(seg, which=0.0)
    with pytest.raises(CorruptRecordError) as ei:  # the broker replays the groups as it opens
        with pylog.Broker.open(data, background_threads=False) as broker:
            broker.groups
    assert str(seg) in str(ei.value) and f"offset {base}" in str(ei.value)
    assert "__consumer_offsets" in str(ei.value)


def test_compaction_refuses_a_damaged_segment(tmp_path):
    from pylog.broker.cleaner import LogCleaner

    path = tmp_path / "c-0"
    kw = dict(segment_bytes=2048, segment_index_bytes=4096, cleanup_policy="compact", retention_ms=-1)
    with Log.open(path, clock=FakeClock(), **kw) as log:
        for i in range(60):
            log.append([value(i)], keys=[b"k%d" % (i % 5)])
    seg = first_segment(path)
    pos, base = flip_in_record(seg, which=0.0)
    before = {n: (path / n).read_bytes() for n in os.listdir(path) if n.endswith(".log")}
    with Log.open(path, clock=FakeClock(), **kw) as log:
        with pytest.raises(CorruptRecordError) as ei:
            LogCleaner(clock=FakeClock()).clean(log, force=True)
        assert str(seg) in str(ei.value)
    after = {n: (path / n).read_bytes() for n in os.listdir(path) if n.endswith(".log")}
    assert after == before  # nothing was rewritten with a fresh CRC over bad bytes


# ------------------------------------------------------------------ open and recovery
@pytest.mark.parametrize("indexed", [True, False])
def test_damaged_base_offset_is_never_served(tmp_path, indexed):
    """baseOffset lies outside the CRC.  A flipped bit there in a batch an index entry
    points at makes the segment fail its clean load at open; recovery would cut
    everything after it, but those records were flushed: open refuses with
    CorruptRecordError naming the file, and changes no byte.  In a batch no entry
    points at, open succeeds and the reads' offset-continuity check raises."""
    path = tmp_path / "t-0"
    write_log(path, index_interval_bytes=4096)
    seg = first_segment(path)
    data = seg.read_bytes()
    idx = (path / segment_names(os.listdir(path), ".index")[0]).read_bytes()
    entries = {int.from_bytes(idx[i + 4:i + 8], "big") for i in range(0, len(idx), 8)}
    batches = walk_batches(data)
    b = next(b for b in batches[len(batches) // 2:] if (b.pos in entries) == indexed)
    with open(seg, "r+b") as f:  # a bit of baseOffset: outside the CRC
        f.seek(b.pos + 6)
        old = f.read(1)[0]
        f.seek(b.pos + 6)
        f.write(bytes([old ^ 0x01]))
    damaged = seg.read_bytes()
    if not indexed:
        with Log.open(path, clock=FakeClock()) as log:
            for read in (lambda: list(log.records()), lambda: list(log.iter_arrays()),
                         lambda: log.read(b.base_offset), lambda: log.read_arrays(b.base_offset - 1)):
                with pytest.raises(CorruptRecordError) as ei:
                    read()
                assert str(seg) in str(ei.value)
            # the offset-continuity check is structure, not the CRC: always on
            with pytest.raises(CorruptRecordError):
                list(log.records(check_crcs=False))
            # from the next index entry on, the damaged header is not walked
            nxt = next(x.base_offset for x in batches if x.pos in entries and x.pos > b.pos)
            assert [r.value for r in log.records(nxt)] == [value(i) for i in range(nxt, N)]
        return
    with pytest.raises(CorruptRecordError) as ei:
        Log.open(path, clock=FakeClock())
    assert str(seg) in str(ei.value) and f"offset {b.base_offset}" in str(ei.value)
    assert seg.read_bytes()[:len(damaged)] == damaged
    with pytest.raises(CorruptRecordError):  # and again: the damage stays reported
        Log.open(path, clock=FakeClock())


def test_crash_recovery_without_a_recovery_point_cuts_at_the_damage(tmp_path):
    """After a crash, the segments from the one holding the recovery point on are
    scanned: a corrupt batch below the recovery point, in a segment that has a
    successor, raises."""
    path = tmp_path / "t-0"
    log = Log.open(path, clock=FakeClock(), segment_bytes=15_000)
    for i in range(0, 2000, PER_BATCH):
        log.append([value(j) for j in range(i, i + PER_BATCH)])
    log.flush()
    assert len(log.segments) >= 3
    log.abandon()  # a crash: no clean-shutdown marker
    (path / "recovery-point-offset-checkpoint").write_text("0\n1\nt 0 0\n")  # scan everything
    seg = first_segment(path)
    pos, base = flip_in_record(seg, which=0.3)
    # recovery point 0: nothing is known flushed, recovery cuts at the damage (Kafka)
    with Log.open(path, clock=FakeClock(), segment_bytes=15_000) as log:
        assert log.log_end_offset == base
        assert [r.value for r in log.records()] == [value(i) for i in range(base)]


def test_crash_recovery_refuses_to_cut_below_the_recovery_point(tmp_path):
    path = tmp_path / "t-0"
    log = Log.open(path, clock=FakeClock(), segment_bytes=15_000)
    for i in range(0, 2000, PER_BATCH):
        log.append([value(j) for j in range(i, i + PER_BATCH)])
    log.flush()
    assert len(log.segments) >= 3
    log.abandon()
    names = segment_names(os.listdir(path))
    seg = path / names[1]
    data = seg.read_bytes()
    b = walk_batches(data)[-1]
    with open(seg, "r+b") as f:  # batchLength of the last batch: load_clean's walk fails
        f.seek(b.pos + 10)
        f.write(b"\x7f")
    with pytest.raises(CorruptRecordError) as ei:
        Log.open(path, clock=FakeClock(), segment_bytes=15_000)
    assert str(seg) in str(ei.value) and f"offset {b.base_offset}" in str(ei.value)
    assert seg.read_bytes() == data[:b.pos + 10] + b"\x7f" + data[b.pos + 11:]


def test_damaged_offset_index_is_rebuilt_without_losing_records(tmp_path):
    path = tmp_path / "t-0"
    write_log(path, index_interval_bytes=512)
    idx = path / segment_names(os.listdir(path), ".index")[0]
    with open(idx, "r+b") as f:
        f.seek(8 * 3 + 5)
        old = f.read(1)[0]
        f.seek(8 * 3 + 5)
        f.write(bytes([old ^ 0x40]))
    with Log.open(path, clock=FakeClock(), index_interval_bytes=512) as log:
        assert [r.value for r in log.records()] == [value(i) for i in range(N)]


# ------------------------------------------------------------------ pylog verify
def run_verify(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pylog", "verify", "--data-dir", str(path)],
                          capture_output=True, text=True, timeout=120)


def test_verify_clean_and_damaged_directories(tmp_path):
    data = tmp_path / "data"
    write_log(data / "a-0", 3000, segment_bytes=15_000)
    write_log(data / "b-1", 500)
    r = run_verify(data)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "no damage" in r.stdout and "2 partition(s)" in r.stdout and "3500 record(s)" in r.stdout
    assert "DAMAGE" not in r.stdout
    # a bare partition directory works too
    r = run_verify(data / "b-1")
    assert r.returncode == 0 and "1 partition(s)" in r.stdout
    snapshot = {p: p.read_bytes() for p in data.rglob("*") if p.is_file()}

    seg = data / "a-0" / segment_names(os.listdir(data / "a-0"))[1]
    pos, base = flip_in_record(seg)
    idx = data / "b-1" / segment_names(os.listdir(data / "b-1"), ".index")[0]
    r = run_verify(data)
    assert r.returncode == 1, r.stdout + r.stderr
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("DAMAGE")]
    assert len(lines) == 1, r.stdout
    assert str(seg) in lines[0] and f"position {pos}" in lines[0] and f"offset {base}" in lines[0]
    assert "CRC32C mismatch" in lines[0]
    assert "1 problem(s) found" in r.stdout
    # nothing was changed by verify (the damage is ours)
    for p, before in snapshot.items():
        if p != seg:
            assert p.read_bytes() == before, p


def test_verify_reports_index_damage_and_usage_errors(tmp_path):
    path = tmp_path / "t-0"
    write_log(path, 2000, index_interval_bytes=256)
    idx = path / segment_names(os.listdir(path), ".index")[0]
    raw = bytearray(idx.read_bytes())
    raw[8 * 2 + 7] ^= 0x04  # the position of entry 2
    idx.write_bytes(bytes(raw))
    r = run_verify(path)
    assert r.returncode == 1
    assert str(idx) in r.stdout and "entry 2" in r.stdout
    assert run_verify(tmp_path / "missing").returncode == 2
    (tmp_path / "empty").mkdir()
    assert run_verify(tmp_path / "empty").returncode == 2


def test_verify_runs_beside_an_open_log(tmp_path):
    path = tmp_path / "t-0"
    with Log.open(path, clock=FakeClock()) as log:
        for i in range(0, 1000, PER_BATCH):
            log.append([value(j) for j in range(i, i + PER_BATCH)])
        r = run_verify(path)  # the active segment is preallocated: zeros past its end
        assert r.returncode == 0, r.stdout + r.stderr
        assert "1000 record(s)" in r.stdout
        assert [rec.value for rec in log.records()] == [value(i) for i in range(1000)]

"""Log compaction (issue 3 point 7): pylog.broker.cleaner.LogCleaner over a pylog Log.

Properties checked: the latest record of every key survives with its offset, value,
timestamp and headers (hypothesis, against a dict model); offsets never change and the
rewritten batches tile the offsets densely (so recovery accepts them); a batch with a
producer id keeps its offset range and base sequence, each producer's last batch stays,
and every offset stays in a batch of the leader epoch it was written in; tombstones
expire delete.retention.ms after their segment was cleaned (fake clock); views and
readers taken before a cleaning keep their bytes; a process SIGKILLed at each step of
the segment swap reopens to exactly the content before or after the cleaning.
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from pylog.broker.cleaner import CLEANER_CHECKPOINT_FILE, LogCleaner, OffsetMap
from pylog.errors import CorruptRecordError, InvalidArgument, InvalidConfig, InvalidRecord
from pylog.records import build_batch
from pylog.replication.epochs import rebuild_from_log
from pylog.storage import Log, LogConfig
from tests.storage.helpers import FakeClock

REPO = Path(__file__).resolve().parents[2]
DAY = 86_400_000
T = 1_700_000_000_000


def open_log(path, clock=None, **kw):
    kw.setdefault("segment_bytes", 1024)
    kw.setdefault("segment_index_bytes", 4096)
    kw.setdefault("cleanup_policy", "compact")
    kw.setdefault("retention_ms", -1)
    return Log.open(path, clock=clock or FakeClock(T), **kw)


def rows(log):
    return [(r.offset, r.key, r.value, r.timestamp, r.headers) for r in log.records()]


def check_tiling(log):
    """Every batch validates; each starts right after the previous one's last offset."""
    off = log.log_start_offset
    while off < log.log_end_offset:
        batches = log.read(off, 1 << 20)
        assert batches and batches[0].base_offset == off
        for b in batches:
            b.validate()
            assert b.base_offset == off, "batches do not tile the offsets"
            off = b.next_offset


# ------------------------------------------------------------------ config
def test_config_names_defaults_and_validation():
    c = LogConfig()
    assert (c.cleanup_policy, c.delete_retention_ms, c.min_cleanable_dirty_ratio,
            c.min_compaction_lag_ms, c.max_compaction_lag_ms) == ("delete", DAY, 0.5, 0, 2**63 - 1)
    c = LogConfig.from_settings({"cleanup.policy": "delete,compact", "delete.retention.ms": 5,
                                 "min.cleanable.dirty.ratio": 0.1, "min.compaction.lag.ms": 7,
                                 "max.compaction.lag.ms": 9})
    assert c.cleanup_policy == "compact,delete" and c.compact and c.delete
    for bad in ({"cleanup.policy": "compact,compact"}, {"cleanup.policy": "keep"},
                {"cleanup.policy": ""}, {"min.cleanable.dirty.ratio": 1.5},
                {"min.cleanable.dirty.ratio": "0.5"}, {"delete.retention.ms": -1},
                {"max.compaction.lag.ms": 0}):
        with pytest.raises(InvalidConfig, match=next(iter(bad))):
            LogConfig.from_settings(bad)
    with pytest.raises(InvalidConfig, match="dedupe"):
        LogCleaner(log_cleaner_dedupe_buffer_size=3)
    with pytest.raises(InvalidConfig, match="load.factor"):
        LogCleaner(log_cleaner_io_buffer_load_factor=0)


def test_null_keys_are_refused_on_a_compacted_log(tmp_path):
    log = open_log(tmp_path / "c-0")
    with pytest.raises(InvalidRecord, match="key"):
        log.append([b"v"])
    with pytest.raises(InvalidRecord, match="key"):
        log.append([b"v", b"w"], keys=[b"k", None])
    with pytest.raises(InvalidRecord, match="key"):
        log.append_batches(build_batch([b"a", b"b"], keys=[b"k", None], compression="zstd"))
    assert log.log_end_offset == 0
    log.append_batches(build_batch([b"a"], keys=[b"k"]))
    log.close()
    with open_log(tmp_path / "d-0", cleanup_policy="delete") as log:
        assert log.append([b"v"]) == 0


def test_time_and_size_retention_only_with_delete_in_the_policy(tmp_path):
    for policy, expect_deleted in (("compact", False), ("compact,delete", True), ("delete", True)):
        clock = FakeClock(T)
        log = open_log(tmp_path / f"{policy.replace(',', '_')}-0", clock, cleanup_policy=policy,
                       retention_ms=1000, retention_bytes=2000)
        for i in range(100):
            log.append([b"v" * 30], keys=[b"k%d" % i], timestamps=[T])
        n = len(log.segments)
        clock.advance(10**6)
        deleted = log.enforce_retention()
        assert (deleted > 0) == expect_deleted, policy
        assert len(log.segments) == n - deleted
        log.close()


# --------------------------------------------------------- latest per key
ops = st.lists(
    st.tuples(st.integers(0, 7),  # key
              st.one_of(st.none(), st.binary(min_size=0, max_size=40)),  # value (None = tombstone)
              st.integers(0, 9)),  # 0: clean after this append, 1: roll, 2: new leader epoch, else nothing
    min_size=1, max_size=120)


def all_batches(log):
    """Every batch of the log, in order (one read stops at a segment's end)."""
    out = []
    while not out or out[-1].next_offset < log.log_end_offset:
        out += log.read(out[-1].next_offset if out else log.log_start_offset, 1 << 20)
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=ops, codec=st.sampled_from(["none", "zstd"]), per_batch=st.integers(1, 3),
       producers=st.lists(st.sampled_from([7, 9, -1]), min_size=1, max_size=5))
def test_latest_record_per_key_survives_with_its_offset(tmp_path_factory, ops, codec, per_batch, producers):
    """``producers``, cycled, gives each batch's producer id (-1: none)."""
    path = tmp_path_factory.mktemp("prop") / "p-0"
    log = open_log(path, segment_bytes=700)
    cleaner = LogCleaner(clock=lambda: T)
    appended = {}  # offset -> (key, value, ts)
    latest = {}  # key -> offset
    pending = []
    cleaned_to = 0
    written = {}  # base offset -> (producer id, base sequence, last offset) of each batch appended
    of_offset = {}  # offset -> base offset of the batch it was appended in
    next_seq = {7: 0, 9: 0}
    epoch_of = {}  # offset -> partitionLeaderEpoch it was appended with
    leader_epoch = [-1]

    def flush_pending():
        if not pending:
            return
        base = log.log_end_offset
        keys = [k for k, _ in pending]
        vals = [v for _, v in pending]
        tss = [T + base + i for i in range(len(pending))]
        pid = producers[len(written) % len(producers)]
        seq = next_seq[pid] if pid >= 0 else -1
        data = build_batch(vals, keys=keys, timestamps=tss, compression=codec,
                           producer_id=pid, producer_epoch=1 if pid >= 0 else -1, base_sequence=seq)
        info = log.append_batches(data, leader_epoch=leader_epoch[0])
        for i in range(len(pending)):
            appended[base + i] = (keys[i], vals[i], tss[i])
            latest[keys[i]] = base + i
            of_offset[base + i] = base
            epoch_of[base + i] = leader_epoch[0]
        assert info.first_offset == base
        written[base] = (pid, seq, base + len(pending) - 1)
        if pid >= 0:
            next_seq[pid] += len(pending)
        pending.clear()

    for key, value, action in ops:
        pending.append((b"key-%d" % key, value))
        if len(pending) >= per_batch:
            flush_pending()
        if action == 1:
            flush_pending()
            log.roll()
        elif action == 2:
            flush_pending()
            leader_epoch[0] += 1
        elif action == 0:
            flush_pending()
            res = cleaner.clean(log, force=True)
            cleaned_to = max(cleaned_to, res.cleaned_up_to)
    flush_pending()
    res = cleaner.clean(log, force=True)
    cleaned_to = max(cleaned_to, res.cleaned_up_to)

    def check(log):
        got = {r.offset: r for r in log.records()}
        # nothing invented, nothing moved: every record is the one appended at its offset
        for off, r in got.items():
            assert (r.key, r.value, r.timestamp) == appended[off]
        # the latest record of every key is there (tombstones too: the clock never moved)
        for key, off in latest.items():
            assert off in got, f"latest record of {key!r} at {off} is gone"
        # below the cleaned point each key keeps only its latest record there (a newer
        # one may sit in the uncleaned tail); from the cleaned point on, everything
        latest_below = {}
        for off, (key, _, _) in sorted(appended.items()):
            if off < cleaned_to:
                latest_below[key] = off
        for off, (key, _, _) in appended.items():
            if off < cleaned_to:
                assert (off in got) == (latest_below[key] == off), off
            else:
                assert off in got
        check_tiling(log)
        # a batch with a producer id keeps its offset range and base sequence (so its
        # last sequence, baseSequence + lastOffsetDelta, too); each producer's last
        # batch stays, possibly empty; records stay in a batch of their producer
        last_of = {pid: base for base, (pid, _, _) in sorted(written.items()) if pid >= 0}
        kept_last = set()
        for b in all_batches(log):
            if b.producer_id >= 0:
                assert b.base_offset in written, "a producer's batch moved"
                assert (b.producer_id, b.base_sequence, b.last_offset) == written[b.base_offset]
                assert b.producer_epoch == 1
                if last_of[b.producer_id] == b.base_offset:
                    kept_last.add(b.producer_id)
            for r in b.records():
                assert b.producer_id == written[of_offset[r.offset]][0]
            # every offset stays in a batch of the leader epoch it was written in (so the
            # epoch cache's start offsets still hold)
            assert {epoch_of[o] for o in range(b.base_offset, b.next_offset)} == {b.partition_leader_epoch}
            if b.record_count:
                assert b.compression_type == codec
        assert kept_last == set(last_of)

    check(log)
    assert log.log_end_offset == len(appended)
    log.close()
    with open_log(path, segment_bytes=700) as log:
        check(log)


def test_offset_map_against_a_dict():
    rng = np.random.default_rng(5)
    omap = OffsetMap(1 << 10, 0.9)
    model = {}
    off = 0
    for _ in range(20):
        n = int(rng.integers(1, 100))
        h = rng.integers(0, 300, n).astype(np.uint64) * np.uint64(1 << 10)  # all share slot 0
        o = np.arange(off, off + n, dtype=np.int64)
        off += n
        omap.put_many(h, o)
        for a, b in zip(h.tolist(), o.tolist()):
            model[a] = b
    assert omap.size == len(model)
    probe = np.array(list(model) + [12345], dtype=np.uint64)
    assert omap.get_many(probe).tolist() == list(model.values()) + [-1]
    with pytest.raises(InvalidArgument, match="full"):
        omap.put_many(np.arange(2000, 3000, dtype=np.uint64), np.arange(1000, dtype=np.int64))
    assert omap.size == len(model)


# ---------------------------------------------------------------- behaviour
def fill(log, n, keys=10, *, tombstone_every=0, start_ts=T):
    for i in range(n):
        off = log.log_end_offset
        value = None if tombstone_every and i % tombstone_every == tombstone_every - 1 else b"v%d" % off
        log.append([value], keys=[b"k%d" % (i % keys)], timestamps=[start_ts + off])


def test_offsets_preserved_batches_tile_and_reopen_trusts_the_files(tmp_path, caplog):
    path = tmp_path / "o-0"
    log = open_log(path)
    fill(log, 400, keys=13)
    before = {r.offset: r for r in log.records()}
    res = LogCleaner(clock=lambda: T).clean(log, force=True)
    assert res.segments_cleaned > 0 and res.records_after < res.records_before
    assert res.bytes_after < res.bytes_before
    after = rows(log)
    for off, key, value, ts, headers in after:
        r = before[off]
        assert (r.key, r.value, r.timestamp) == (key, value, ts)
    check_tiling(log)
    assert log.log_start_offset == 0 and log.log_end_offset == 400
    for seg in log.segments[:-1]:
        assert seg.next_offset > seg.base_offset
    log.close()
    caplog.set_level(logging.WARNING, logger="pylog.storage")
    with open_log(path) as log:
        assert rows(log) == after
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert (path / CLEANER_CHECKPOINT_FILE).exists()


def test_dirty_ratio_lag_and_checkpoint(tmp_path):
    clock = FakeClock(T + 1000)
    log = open_log(tmp_path / "r-0", clock, min_cleanable_dirty_ratio=0.5)
    fill(log, 400, keys=150)
    cleaner = LogCleaner(clock=clock)
    res = cleaner.clean(log)
    assert res.skipped is None and res.dirty_ratio == 1.0
    assert LogCleaner.checkpoint(log) == res.cleaned_up_to == log.segments[-1].base_offset
    fill(log, 30, keys=5)  # a little dirty data on a mostly clean log
    log.roll()
    res = cleaner.clean(log)
    assert res.skipped and "min.cleanable.dirty.ratio" in res.skipped and 0 < res.dirty_ratio < 0.5
    assert cleaner.clean(log, force=True).skipped is None
    # min.compaction.lag.ms keeps young segments out of the dirty section
    log.close()
    log = open_log(tmp_path / "r-0", clock, min_compaction_lag_ms=10**9)
    fill(log, 50, keys=5, start_ts=clock.now)
    log.roll()
    res = cleaner.clean(log, force=True)
    assert res.skipped == "no dirty closed segment"
    log.close()


def test_tombstones_kept_for_delete_retention_ms_after_cleaning(tmp_path):
    clock = FakeClock(T)
    log = open_log(tmp_path / "t-0", clock, delete_retention_ms=DAY)
    log.append([b"a1"], keys=[b"a"])
    log.append([None], keys=[b"a"])  # tombstone for a
    log.append([b"b1"], keys=[b"b"])
    fill(log, 60, keys=3)  # other keys, rolls a few segments
    log.roll()
    cleaner = LogCleaner(clock=clock)
    cleaner.clean(log, force=True)
    by_key = {r.key: r for r in log.records()}
    assert by_key[b"a"].value is None and by_key[b"a"].offset == 1
    assert by_key[b"b"].value == b"b1"
    clock.advance(DAY - 1)
    assert cleaner.clean(log, force=True).tombstones_removed == 0
    assert b"a" in {r.key for r in log.records()}
    clock.advance(2)
    res = cleaner.clean(log, force=True)
    assert res.tombstones_removed == 1
    keys = [r.key for r in log.records()]
    assert b"a" not in keys and b"b" in keys
    check_tiling(log)
    log.close()


def test_compressed_batch_rebuilt_keeps_codec_producer_fields_and_headers(tmp_path):
    log = open_log(tmp_path / "z-0", segment_bytes=4096)
    data = build_batch([b"x1", b"y1", b"x2", b"z1"], keys=[b"x", b"y", b"x", b"z"],
                       headers=[[("h", b"1")], [], [("h", b"3"), ("g", None)], []],
                       timestamps=[T + 5, T + 1, T + 9, T + 2], compression="zstd",
                       producer_id=42, producer_epoch=3, base_sequence=17)
    log.append_batches(data)
    log.append([b"y2"], keys=[b"y"])
    log.roll()
    LogCleaner(clock=lambda: T).clean(log, force=True)
    got = list(log.records())
    assert [(r.offset, r.key, r.value, r.timestamp, r.headers) for r in got] == [
        (2, b"x", b"x2", T + 9, (("h", b"3"), ("g", None))),
        (3, b"z", b"z1", T + 2, ()),
        (4, b"y", b"y2", got[2].timestamp, ()),
    ]
    first = log.read(0, 1 << 20)[0]
    assert (first.base_offset, first.last_offset, first.record_count) == (0, 3, 2)
    assert (first.compression_type, first.producer_id, first.producer_epoch, first.base_sequence) == \
        ("zstd", 42, 3, 17)
    log.close()


def test_producer_batches_keep_their_range_and_offsets_keep_their_leader_epoch(tmp_path):
    """Removed batches next to batches with a producer id (which never move) leave empty
    filler batches of the removed batches' leader epoch, or grow a neighbour without a
    producer id of that epoch; the epochs rebuilt from the batches are unchanged."""
    log = open_log(tmp_path / "e-0", segment_bytes=1 << 20)

    def put(key, epoch, pid=-1, seq=-1):
        data = build_batch([key + b"v"], keys=[key], timestamps=[T + log.log_end_offset],
                           producer_id=pid, producer_epoch=0 if pid >= 0 else -1, base_sequence=seq)
        log.append_batches(data, leader_epoch=epoch)

    put(b"k1", 0, pid=7, seq=0)  # 0 kept
    put(b"k2", 0)                # 1 removed
    put(b"k3", 1)                # 2 removed: the first offset of epoch 1
    put(b"k4", 1, pid=7, seq=1)  # 3 kept
    put(b"k5", 2, pid=7, seq=2)  # 4 removed: the first offset of epoch 2
    put(b"k6", 2)                # 5 kept
    put(b"k7", 3)                # 6 removed: the first offset of epoch 3
    put(b"k8", 3, pid=9, seq=0)  # 7 kept
    log.roll()
    log.append_batches(build_batch([b"x"] * 4, keys=[b"k2", b"k3", b"k5", b"k7"], timestamps=[T + 8] * 4,
                                   producer_id=7, producer_epoch=0, base_sequence=3), leader_epoch=3)
    log.roll()
    epochs_before = rebuild_from_log(log).entries
    res = LogCleaner(clock=lambda: T).clean(log, force=True)
    assert res.segments_cleaned == 1 and res.records_after == 8
    got = [(b.base_offset, b.last_offset, b.partition_leader_epoch, b.producer_id, b.base_sequence,
            [r.offset for r in b.records()]) for b in all_batches(log)]
    assert got == [
        (0, 0, 0, 7, 0, [0]),
        (1, 1, 0, -1, -1, []),  # filler, epoch 0
        (2, 2, 1, -1, -1, []),  # filler, epoch 1
        (3, 3, 1, 7, 1, [3]),
        (4, 5, 2, -1, -1, [5]),  # starts earlier over the removed offset of its epoch
        (6, 6, 3, -1, -1, []),  # filler, epoch 3
        (7, 7, 3, 9, 0, [7]),
        (8, 11, 3, 7, 3, [8, 9, 10, 11]),
    ]
    assert rebuild_from_log(log).entries == epochs_before
    check_tiling(log)
    log.close()


def test_reading_during_cleaning(tmp_path):
    log = open_log(tmp_path / "v-0")
    fill(log, 300, keys=4)
    views = [(b, b.to_bytes()) for s in log.segments for b in log.read(s.base_offset, 1 << 20)]
    it = log.records(0)
    head = [next(it) for _ in range(10)]
    expected_head = rows(log)[:10]
    LogCleaner(clock=lambda: T).clean(log, force=True)
    for b, copy in views:
        assert b.to_bytes() == copy  # old segment views keep their bytes
    rest = list(it)  # an iterator started before the swap goes on, in offset order
    offs = [r.offset for r in head + rest]
    assert offs == sorted(set(offs))
    assert [(r.offset, r.key, r.value, r.timestamp, r.headers) for r in head] == expected_head
    log.close()
    for b, copy in views:
        assert b.to_bytes() == copy


def test_the_log_changing_during_cleaning_aborts_the_swap(tmp_path):
    log = open_log(tmp_path / "x-0")
    fill(log, 200, keys=4)
    before = rows(log)
    snaps = log.snapshot_segments()
    log.truncate_to(snaps[1].base_offset + 1)
    assert log.replace_segments([(snaps[0], snaps[0].data)], modified_ms=T) is True  # unchanged one
    assert log.replace_segments([(snaps[2], snaps[2].data)], modified_ms=T) is False  # deleted
    cur = log.snapshot_segments()[0]
    first = log.read(0, 0)[0].size_bytes
    with pytest.raises(InvalidArgument, match="ends at"):  # valid batches, too few offsets
        log.replace_segments([(cur, cur.data[:first])], modified_ms=T)
    with pytest.raises(CorruptRecordError):
        log.replace_segments([(cur, cur.data[: first + 10])], modified_ms=T)
    assert rows(log) == before[: snaps[1].base_offset + 1]
    log.close()


def test_policy_delete_is_not_cleaned(tmp_path):
    log = open_log(tmp_path / "d-0", cleanup_policy="delete")
    fill(log, 100, keys=2)
    res = LogCleaner().clean(log, force=True)
    assert res.skipped and "compact" in res.skipped
    log.close()


def test_dump_log_reads_a_cleaned_log(tmp_path):
    log = open_log(tmp_path / "c-0")
    fill(log, 200, keys=3)
    LogCleaner(clock=lambda: T).clean(log, force=True)
    log.close()
    out = subprocess.run([sys.executable, "-m", "pylog.cli", "dump-log", str(tmp_path / "c-0"), "--records"],
                         cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "records 0" in out.stdout and "CORRUPT" not in out.stdout
    assert "offset 199 " in out.stdout


# ----------------------------------------------------- crash during the swap
CHILD = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {repo!r})
    import pylog.storage.log as storage_log
    from pylog.broker.cleaner import LogCleaner
    from tests.broker.test_cleaner import open_log, T
    step = sys.argv[2]
    def hook(name):
        if name == step:
            os.kill(os.getpid(), signal.SIGKILL)
    storage_log.SWAP_HOOK = hook
    log = open_log(sys.argv[1])
    LogCleaner(clock=lambda: T).clean(log, force=True)
    print("finished without reaching", step)
""")


@pytest.mark.parametrize("step,outcome", [("cleaned", "before"), ("committed", "after"),
                                          ("replaced_first", "after"), ("done", "after")])
def test_sigkill_at_each_swap_step_gives_before_or_after(tmp_path, step, outcome):
    path = tmp_path / "k-0"
    log = open_log(path)
    fill(log, 300, keys=7, tombstone_every=5)
    log.close()
    ref = tmp_path / "ref" / "k-0"
    shutil.copytree(path, ref)
    with open_log(path) as log:
        before = rows(log)
    with open_log(ref) as log:
        LogCleaner(clock=lambda: T).clean(log, force=True)
        after = rows(log)
    assert before != after
    proc = subprocess.run([sys.executable, "-c", CHILD.format(repo=str(REPO)), str(path), step],
                          cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
    with open_log(path) as log:
        got = rows(log)
        check_tiling(log)
    assert got == (before if outcome == "before" else after)
    names = os.listdir(path)
    assert not any("cleaner." in n for n in names), names
    with open_log(path) as log:  # and it opens again the same
        assert rows(log) == got

"""Crash and power-loss recovery (Invariant 2, issue point 5).

A crash is simulated by copying the files of an open log (a process kill keeps the page
cache, and mmap writes are visible to file reads), then damaging the copy as a torn
write, a power loss or a bad disk would: the last batch cut at every byte (file
truncated, zeroed or garbage from that byte), random bit flips in the unflushed tail,
page-granular mixes of the flushed and the later state, deleted / garbled index files,
preallocated zeros and garbage past the end.  After reopening, the log must hold
exactly the longest valid prefix of what was appended: every batch read() returns is
CRC-valid, nothing below the recovery point is lost, offsets continue densely and
appends work.  A real SIGKILL of a writing child process closes the file.
"""
from __future__ import annotations

import os
import random
import signal
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path
from typing import Dict, List

import pytest

from pylog import Log
from tests.storage.helpers import (
    CLEAN_MARKER,
    SMALL_INDEX,
    FakeClock,
    Rec,
    append_derived,
    check_indexes_on_disk,
    check_log,
    crash_snapshot,
    expected_offset_for_timestamp,
    key_for,
    segment_names,
    snapshot_dir,
    value_for,
    walk_batches,
    write_dir,
)

SEG = 4096
OPTS = dict(segment_bytes=SEG, retention_ms=-1, segment_index_bytes=SMALL_INDEX, index_interval_bytes=256)
REPO = Path(__file__).resolve().parents[2]


def open_(path: Path) -> Log:
    return Log.open(path, clock=FakeClock(), **OPTS)


def reopen_and_check(files: Dict[str, bytes], dst: Path, expected: List[Rec], flushed: int, *,
                     append_after: bool = True, crash_again: bool = False) -> None:
    """Write ``files`` to ``dst``, open, and require exactly ``expected``."""
    write_dir(files, dst)
    log = open_(dst)
    try:
        check_log(log, expected, start=0)
        assert log.log_end_offset >= flushed, "recovery lost data below the recovery point"
        assert log.recovery_point >= flushed
        if append_after:
            more = append_derived(log, 2, salt=b"after")
            assert more[0].offset == len(expected)  # dense after recovery
            check_log(log, expected + more, start=0)
            if crash_again:
                again = crash_snapshot(dst)
                log.close()
                write_dir(again, dst)
                log = open_(dst)
                check_log(log, expected + more, start=0)
    finally:
        log.close()


def build(path: Path, flushed_batches: int, tail_batches: int, *, roll_before_tail: bool = False,
          tail_records: int = 3):
    """A log with flushed batches then an unflushed tail; returns the crash image,
    the expected records, the recovery point and the tail batches' records."""
    log = open_(path)
    expected: List[Rec] = []
    for i in range(flushed_batches):
        expected += append_derived(log, 1 + i % 4)
    log.flush()
    flushed = log.log_end_offset
    if roll_before_tail:
        log.roll()
    tail = []
    for _ in range(tail_batches):
        recs = append_derived(log, tail_records)
        tail.append(recs)
        expected += recs
    files = crash_snapshot(path)
    log.close()
    return files, expected, flushed, tail


def last_segment(files: Dict[str, bytes]) -> str:
    return segment_names(files)[-1]


def surviving_end(original: bytes, image: bytes, walked, *, active: bool, base: int) -> int:
    """The log end a correct recovery reaches in this segment: batches survive, in
    order, while their bytes are unchanged.  The active segment's file is
    preallocated again at open, so bytes cut off its end read as zeros."""
    if active and len(image) < len(original):
        image = image + bytes(len(original) - len(image))
    end = base
    for b in walked:
        if image[b.pos:b.pos + b.size] != original[b.pos:b.pos + b.size]:
            break
        end = b.last_offset + 1
    return end


# ---------------------------------------------------------------- no damage
def test_crash_keeps_everything_in_the_page_cache(tmp_path):
    files, expected, flushed, _ = build(tmp_path / "t-0", 30, 40)
    assert len(segment_names(files)) >= 3, "the unflushed tail should span rolled segments"
    assert CLEAN_MARKER not in files
    reopen_and_check(files, tmp_path / "img" / "t-0", expected, flushed, crash_again=True)


def test_crash_of_an_empty_log(tmp_path):
    log = open_(tmp_path / "t-0")
    files = crash_snapshot(tmp_path / "t-0")
    log.close()
    reopen_and_check(files, tmp_path / "img" / "t-0", [], 0)


# --------------------------------------------------- the last batch, every byte
LAYOUTS = {
    "mid_segment": dict(flushed_batches=12, tail_batches=1),
    "first_in_segment": dict(flushed_batches=12, tail_batches=1, roll_before_tail=True),
    "after_unflushed": dict(flushed_batches=12, tail_batches=3),
    "first_of_log": dict(flushed_batches=0, tail_batches=1),
}


@pytest.mark.parametrize("mode", ["truncate", "zero", "garbage"])
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_last_batch_cut_at_every_byte(tmp_path, mode, layout):
    files, expected, flushed, tail = build(tmp_path / "t-0", **LAYOUTS[layout])
    name = last_segment(files)
    data = files[name]
    batches = walk_batches(data)
    last = batches[-1]
    assert last.base_offset == tail[-1][0].offset and last.last_offset == tail[-1][-1].offset
    without_last = [r for r in expected if r.offset < last.base_offset]
    dst = tmp_path / "img" / "t-0"
    rng = random.Random(zlib.crc32(f"{mode}/{layout}".encode()))
    for k in range(last.size):
        cut = last.pos + k
        if mode == "truncate":
            damaged = data[:cut]
        elif mode == "zero":
            damaged = data[:cut] + bytes(last.size - k) + data[last.pos + last.size:]
        else:
            junk = bytes(rng.getrandbits(8) for _ in range(last.size - k))
            damaged = data[:cut] + junk + data[last.pos + last.size:]
        keep = surviving_end(data, damaged, batches, active=True, base=int(name[:20]))
        assert keep in (last.base_offset, last.last_offset + 1)
        want = expected if keep > last.base_offset else without_last
        try:
            reopen_and_check({**files, name: damaged}, dst, want, flushed, crash_again=(k % 17 == 0))
        except AssertionError as exc:
            raise AssertionError(f"{mode} from byte {k} of the last batch ({last.size} bytes): {exc}") from exc


def test_unflushed_tail_over_two_segments_cut_at_every_byte(tmp_path):
    """The unflushed tail spans the end of a rolled segment and the active one; a cut
    in the rolled one must drop it from there and every later segment."""
    log = open_(tmp_path / "t-0")
    expected: List[Rec] = []
    for i in range(8):
        expected += append_derived(log, 2)
    log.flush()
    flushed = log.log_end_offset
    first_tail_seg = log.segments[-1].base_offset
    while len(log.segments) < 3:
        expected += append_derived(log, 3)
    files = crash_snapshot(tmp_path / "t-0")
    log.close()
    names = segment_names(files)
    dst = tmp_path / "img" / "t-0"
    checked = 0
    for name in names:
        base = int(name[:20])
        if base < first_tail_seg:
            continue
        data = files[name]
        walked = walk_batches(data)
        end = walked[-1].pos + walked[-1].size
        # the flushed part of the first tail segment stays intact
        lo = 0
        for b in walked:
            if b.last_offset < flushed:
                lo = b.pos + b.size
        # every byte around each batch boundary, and one random byte inside each batch
        rng = random.Random(base)
        cuts = set()
        for b in walked:
            if b.pos + b.size <= lo:
                continue
            for d in (0, 1, 2, 8, 12, 16, 21, 60, 61, 62, b.size - 1):
                if lo <= b.pos + d < end:
                    cuts.add(b.pos + d)
            cuts.add(b.pos + rng.randrange(b.size))
        for cut in sorted(cuts):
            # later segments lost too (never created on disk): this one is the active one
            keep = surviving_end(data, data[:cut], walked, active=True, base=base)
            want = [r for r in expected if r.offset < keep]
            later = {n: v for n, v in files.items() if not (n[:20].isdigit() and int(n[:20]) > base)}
            image = {**later, name: data[:cut]}
            try:
                reopen_and_check(image, dst, want, flushed, append_after=(cut % 3 == 0))
            except AssertionError as exc:
                raise AssertionError(f"segment {base} cut at byte {cut}: {exc}") from exc
            # the same cut with the later segments still present: they no longer follow
            if cut % 7 == 0 and base != int(names[-1][:20]):
                keep = surviving_end(data, data[:cut], walked, active=False, base=base)
                want = [r for r in expected if r.offset < keep]
                try:
                    reopen_and_check({**files, name: data[:cut]}, dst, want, flushed, append_after=False)
                except AssertionError as exc:
                    raise AssertionError(f"segment {base} cut at byte {cut}, later segments kept: {exc}") from exc
            checked += 1
    assert checked > 200


# ------------------------------------------------------------------- bit flips
def _first_damaged_batch(original: bytes, damaged: bytes, walked, *, undetectable=range(12, 16)):
    """Index of the first batch whose bytes changed outside ``undetectable`` (the
    partitionLeaderEpoch field, which neither the CRC nor recovery can check)."""
    for i, b in enumerate(walked):
        for j in range(b.size):
            if original[b.pos + j] != damaged[b.pos + j] and j not in undetectable:
                return i
    return None


def _flip_run(tmp_path, seed, positions):
    rng = random.Random(seed)
    files, expected, flushed, tail = build(tmp_path / "t-0", 10, 6)
    name = last_segment(files)
    data = files[name]
    walked = walk_batches(data)
    tail_batches = [b for b in walked if b.base_offset >= flushed]
    assert len(tail_batches) >= 3
    dst = tmp_path / "img" / "t-0"
    for trial in range(60):
        damaged = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            b = rng.choice(tail_batches)
            p = b.pos + positions(rng, b)
            damaged[p] ^= 1 << rng.randrange(8)
        damaged = bytes(damaged)
        i = _first_damaged_batch(data, damaged, walked)
        keep = walked[i].base_offset if i is not None else expected[-1].offset + 1
        want = [r for r in expected if r.offset < keep]
        try:
            reopen_and_check({**files, name: damaged}, dst, want, flushed, append_after=(trial % 4 == 0))
        except AssertionError as exc:
            diffs = [(k - walked[i].pos if i is not None else k) for k in range(len(data)) if data[k] != damaged[k]]
            raise AssertionError(f"seed {seed} trial {trial}: flips at batch-relative bytes {diffs} "
                                 f"of batch {i}: {exc}") from exc


@pytest.mark.parametrize("seed", range(4))
def test_bit_flips_in_crc_covered_bytes_of_the_tail(tmp_path, seed):
    _flip_run(tmp_path, seed, lambda rng, b: rng.randrange(16, b.size))


@pytest.mark.parametrize("seed", range(2))
def test_bit_flips_in_batch_length_of_the_tail(tmp_path, seed):
    _flip_run(tmp_path, seed, lambda rng, b: rng.randrange(8, 12))


@pytest.mark.parametrize("seed", range(2))
def test_bit_flips_in_base_offset_of_the_tail(tmp_path, seed):
    """baseOffset is outside the CRC (the leader rewrites it): recovery must still not
    accept a batch whose offsets do not continue the log (Invariant 1: dense)."""
    _flip_run(tmp_path, seed, lambda rng, b: rng.randrange(0, 8))


@pytest.mark.parametrize("seed", range(3))
def test_bit_flips_anywhere_in_the_tail(tmp_path, seed):
    _flip_run(tmp_path, 100 + seed, lambda rng, b: rng.randrange(0, b.size))


# ------------------------------------------------------------------- power loss
@pytest.mark.parametrize("seed", range(6))
def test_power_loss_tears_pages_after_the_last_flush(tmp_path, seed):
    """Power loss: every page written since the last flush independently reached the
    disk or not; files created since may be missing.  The log must open to a dense,
    valid prefix of what was appended that keeps everything flushed."""
    rng = random.Random(seed)
    path = tmp_path / "t-0"
    log = open_(path)
    expected: List[Rec] = []
    for i in range(rng.randint(3, 30)):
        expected += append_derived(log, rng.randint(1, 5))
    log.flush()
    flushed = log.log_end_offset
    durable = snapshot_dir(path, skip_lock=True)
    for i in range(rng.randint(5, 60)):
        expected += append_derived(log, rng.randint(1, 5))
    latest = crash_snapshot(path)
    log.close()
    dst = tmp_path / "img" / "t-0"
    for trial in range(25):
        image: Dict[str, bytes] = {}
        for name in sorted(set(durable) | set(latest)):
            old, new = durable.get(name), latest.get(name)
            if new is None:
                image[name] = old
                continue
            if old is None:
                if rng.random() < 0.5:
                    continue  # the directory entry never reached the disk
                old = b""
            size = rng.choice([len(old), len(new)])
            pages = []
            for p in range(0, size, 4096):
                src = new if rng.random() < 0.5 else old
                chunk = src[p:min(p + 4096, size)]
                pages.append(chunk + bytes(min(4096, size - p) - len(chunk)))
            image[name] = b"".join(pages)[:size]
        image = {k: v for k, v in image.items() if v is not None}
        write_dir(image, dst)
        with open_(dst) as log2:
            end = log2.log_end_offset
            assert end >= flushed, f"trial {trial}: power loss lost flushed data ({end} < {flushed})"
            assert end <= expected[-1].offset + 1
            check_log(log2, expected[:end], start=0)
            assert append_derived(log2, 1)[0].offset == end


# ---------------------------------------------------------------- index damage
def _index_damages():
    def rewrite_entries(fn, size):
        def damage(data: bytes) -> bytes:
            out = bytearray(data)
            for i in range(0, len(data) - len(data) % size, size):
                out[i:i + size] = fn(bytes(data[i:i + size]), i // size)
            return bytes(out)
        return damage

    def shift_pos(e, i):
        rel, pos = struct.unpack(">II", e)
        return struct.pack(">II", rel, pos + 1 if (rel or pos) else 0)

    def bump_rel(e, i):
        rel, pos = struct.unpack(">II", e)
        return struct.pack(">II", rel + 1 if (rel or pos) else 0, pos)

    def ts_down(e, i):  # still increasing, but not the batches' max timestamps
        ts, rel = struct.unpack(">qI", e)
        return struct.pack(">qI", ts - 1 if ts > 0 else ts, rel)

    def rel_next(e, i):
        ts, rel = struct.unpack(">qI", e)
        return struct.pack(">qI", ts, rel + 1 if ts > 0 else rel)

    def junk(d: bytes) -> bytes:
        r = random.Random(len(d))
        return bytes(r.getrandbits(8) for _ in d)

    return {
        "delete_both": (None, None),
        "delete_index": (None, "keep"),
        "delete_timeindex": ("keep", None),
        "empty": (lambda d: b"", lambda d: b""),
        "odd_size": (lambda d: d[: len(d) // 2 + 3], lambda d: d[: len(d) // 2 + 5]),
        "garbage": (junk, junk),
        "zeros": (lambda d: bytes(len(d)), lambda d: bytes(len(d))),
        "ones": (lambda d: b"\xff" * len(d), lambda d: b"\xff" * len(d)),
        "index_positions_off_by_one": (rewrite_entries(shift_pos, 8), "keep"),
        "index_offsets_off_by_one": (rewrite_entries(bump_rel, 8), "keep"),
        "index_reversed": (lambda d: b"".join(d[i:i + 8] for i in range(len(d) - 8, -1, -8)), "keep"),
        "timeindex_timestamps_minus_one": ("keep", rewrite_entries(ts_down, 12)),
        "timeindex_offsets_plus_one": ("keep", rewrite_entries(rel_next, 12)),
        "longer_with_zeros": (lambda d: d + bytes(64), lambda d: d + bytes(96)),
    }


INDEX_DAMAGES = _index_damages()


def _index_log(path: Path):
    log = Log.open(path, clock=FakeClock(), segment_bytes=SEG, retention_ms=-1,
                   segment_index_bytes=SMALL_INDEX, index_interval_bytes=100)
    expected: List[Rec] = []
    rng = random.Random(2)
    for i in range(90):
        first = log.log_end_offset
        n = rng.randint(1, 4)
        tss = [1_700_000_000_000 + i * 10 + rng.choice([0, 1, -300, 5]) for _ in range(n)]
        vals = [value_for(first + j) for j in range(n)]
        keys = [key_for(first + j) for j in range(n)]
        log.append(vals, keys=keys, timestamps=tss)
        expected += [Rec(first + j, keys[j], vals[j], tss[j]) for j in range(n)]
    return log, expected


@pytest.mark.parametrize("when", ["clean", "crash"])
@pytest.mark.parametrize("damage", sorted(INDEX_DAMAGES))
def test_damaged_index_files_are_rebuilt(tmp_path, damage, when):
    path = tmp_path / "t-0"
    log, expected = _index_log(path)
    if when == "crash":
        log.flush()
        files = crash_snapshot(path)
        log.close()
    else:
        log.close()
        files = snapshot_dir(path, skip_lock=True)
    assert len(segment_names(files)) >= 3
    idx_damage, time_damage = INDEX_DAMAGES[damage]
    image = dict(files)
    for name in segment_names(files):
        stem = name[:20]
        for suffix, dmg in ((".index", idx_damage), (".timeindex", time_damage)):
            if dmg == "keep":
                continue
            if dmg is None:
                image.pop(stem + suffix, None)
            else:
                image[stem + suffix] = dmg(files[stem + suffix])
    dst = tmp_path / "img" / "t-0"
    write_dir(image, dst)
    log = Log.open(dst, clock=FakeClock(), segment_bytes=SEG, retention_ms=-1,
                   segment_index_bytes=SMALL_INDEX, index_interval_bytes=100)
    try:
        check_log(log, expected, every_offset=True)
        for ts in sorted({r.timestamp + d for r in expected for d in (-1, 0, 1)})[::3]:
            assert log.offset_for_timestamp(ts) == expected_offset_for_timestamp(expected, ts), ts
        more = append_derived(log, 3)
        check_log(log, expected + more)
    finally:
        log.close()
    # the rebuilt indexes on disk are well-formed, so the next open can trust them
    check_indexes_on_disk(dst, index_interval_bytes=100)
    with Log.open(dst, clock=FakeClock(), segment_bytes=SEG, retention_ms=-1,
                  segment_index_bytes=SMALL_INDEX, index_interval_bytes=100) as log:
        check_log(log, expected + more, every_offset=True)


# ------------------------------------------------------- zeros / garbage past end
@pytest.mark.parametrize("which", ["last", "middle", "all"])
@pytest.mark.parametrize("filler", ["zeros", "garbage"])
def test_bytes_past_the_end_of_clean_segments(tmp_path, which, filler):
    path = tmp_path / "t-0"
    log = open_(path)
    expected: List[Rec] = []
    for i in range(150):
        expected += append_derived(log, 1 + i % 4)
    log.close()
    files = snapshot_dir(path, skip_lock=True)
    names = segment_names(files)
    assert len(names) >= 3
    targets = {"last": names[-1:], "middle": names[1:2], "all": names}[which]
    rng = random.Random(4)
    for name in targets:
        extra = bytes(4096) if filler == "zeros" else bytes(rng.getrandbits(8) for _ in range(300))
        files[name] = files[name] + extra
    reopen_and_check(files, tmp_path / "img" / "t-0", expected, expected[-1].offset + 1)


@pytest.mark.parametrize("filler", ["zeros", "garbage", "stale_batch"])
def test_bytes_past_the_end_of_a_rolled_segment_after_crash(tmp_path, filler):
    """A rolled (shrunk) segment above the recovery point with trailing bytes: recovery
    must cut them and keep the following segments."""
    path = tmp_path / "t-0"
    log = open_(path)
    expected: List[Rec] = []
    for i in range(5):
        expected += append_derived(log, 2)
    log.flush()
    flushed = log.log_end_offset
    while len(log.segments) < 4:
        expected += append_derived(log, 3)
    files = crash_snapshot(path)
    log.close()
    names = segment_names(files)
    victim = names[-2]
    if filler == "zeros":
        extra = bytes(500)
    elif filler == "garbage":
        extra = bytes(random.Random(9).getrandbits(8) for _ in range(500))
    else:  # a whole valid batch that does not continue the segment's offsets
        data = files[names[0]]
        b = walk_batches(data)[0]
        extra = data[b.pos:b.pos + b.size]
    files[victim] = files[victim] + extra
    reopen_and_check(files, tmp_path / "img" / "t-0", expected, flushed)


# ---------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("damage", ["garbage", "missing", "empty", "too_high", "stale_tmp"])
def test_damaged_recovery_point_checkpoint(tmp_path, damage):
    files, expected, flushed, tail = build(tmp_path / "t-0", 20, 5)
    name = last_segment(files)
    last = walk_batches(files[name])[-1]
    files[name] = files[name][: last.pos + 30]  # and a torn tail
    rp = "recovery-point-offset-checkpoint"
    assert rp in files
    if damage == "garbage":
        files[rp] = b"\x00\xff garbage"
    elif damage == "missing":
        del files[rp]
    elif damage == "empty":
        files[rp] = b""
    elif damage == "too_high":  # a checkpoint beyond the end: must not skip the scan of the tail
        files[rp] = files[rp].replace(str(flushed).encode(), b"999999")
    else:  # a crash while a checkpoint was being replaced
        files[rp + ".tmp"] = b"0\n1\nt 0 99"
    want = [r for r in expected if r.offset < last.base_offset]
    reopen_and_check(files, tmp_path / "img" / "t-0", want, flushed if damage != "too_high" else 0)


@pytest.mark.parametrize("stage", ["new_segment_created", "old_segment_shrunk", "both"])
def test_crash_in_the_middle_of_a_roll(tmp_path, stage):
    """A roll creates the next segment's files and shrinks the old one's: a crash may
    leave either step without the other."""
    path = tmp_path / "t-0"
    log = open_(path)
    expected: List[Rec] = []
    for i in range(10):
        expected += append_derived(log, 3)
    log.flush()
    before = crash_snapshot(path)
    log.roll()
    after = crash_snapshot(path)
    log.close()
    old, new = segment_names(before)[-1][:20], "%020d" % (expected[-1].offset + 1)
    image = dict(before)
    if stage in ("new_segment_created", "both"):
        for suffix in (".log", ".index", ".timeindex"):
            image[new + suffix] = after[new + suffix]
    if stage in ("old_segment_shrunk", "both"):
        for suffix in (".log", ".index", ".timeindex"):
            image[old + suffix] = after[old + suffix]
    reopen_and_check(image, tmp_path / "img" / "t-0", expected, expected[-1].offset + 1, crash_again=True)


# ------------------------------------------------- crash after other mutations
def test_crash_right_after_truncate_does_not_resurrect_records(tmp_path):
    path = tmp_path / "t-0"
    log = open_(path)
    expected: List[Rec] = []
    for i in range(80):
        expected += append_derived(log, 3)
    log.flush()
    assert len(log.segments) >= 3
    mid = log.segments[1].base_offset + 3  # inside the second segment: later ones go
    for cut in (expected[-1].offset - 5, mid, 3):
        cut = cut - cut % 3
        log.truncate_to(cut)
        expected = expected[:cut]
        files = crash_snapshot(path)
        reopen_and_check(files, tmp_path / "img" / "t-0", expected, 0, append_after=False)
        # a shorter different batch over the cut, then a crash
        expected += append_derived(log, 1, salt=b"new")
        files = crash_snapshot(path)
        reopen_and_check(files, tmp_path / "img" / "t-0", expected, 0, append_after=False)
    log.close()


def test_crash_after_delete_records_and_retention(tmp_path):
    path = tmp_path / "t-0"
    clock = FakeClock()
    log = Log.open(path, clock=clock, segment_bytes=SEG, retention_ms=-1, retention_bytes=3 * SEG,
                   segment_index_bytes=SMALL_INDEX)
    expected: List[Rec] = []
    for i in range(150):
        expected += append_derived(log, 3)
    log.delete_records(log.log_start_offset + 4)
    start = log.log_start_offset
    bases = [s.base_offset for s in log.segments]
    files = crash_snapshot(path)
    log.close()
    dst = tmp_path / "img" / "t-0"
    write_dir(files, dst)
    with Log.open(dst, clock=clock, segment_bytes=SEG, retention_ms=-1, segment_index_bytes=SMALL_INDEX) as log:
        assert log.log_start_offset == start
        assert [s.base_offset for s in log.segments] == bases
        check_log(log, expected[start:])


# ------------------------------------------------------------ real SIGKILL
CHILD = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {repo!r})
    from pylog import Log
    from tests.storage.helpers import FakeClock, append_derived
    mode = sys.argv[2]
    log = Log.open(sys.argv[1], clock=FakeClock(), segment_bytes=4096, retention_ms=-1,
                   segment_index_bytes=4096, index_interval_bytes=256)
    i = 0
    while True:
        append_derived(log, 1 + i % 5)
        i += 1
        if i % 50 == 0:
            log.flush()
            print("flushed", log.recovery_point, flush=True)
        if mode == "self" and i == 420:
            print("appended", log.log_end_offset, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
""")


def _expected_derived(end: int) -> List[Rec]:
    from tests.storage.helpers import T0

    return [Rec(o, key_for(o), value_for(o), T0 + o) for o in range(end)]


def _run_child(path: Path, mode: str, stop_after_lines: int):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", CHILD.format(repo=str(REPO)), str(path), mode],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    flushed, appended, lines = 0, None, 0
    assert proc.stdout is not None
    for line in proc.stdout:
        what, n = line.split()
        if what == "flushed":
            flushed = int(n)
        else:
            appended = int(n)
        lines += 1
        if mode == "kill" and lines >= stop_after_lines:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read() if proc.stderr else ""
    return flushed, appended


def test_sigkill_after_unflushed_appends_loses_nothing(tmp_path):
    """The child kills itself after appends it never flushed: the page cache has
    them all, so recovery must find every one."""
    path = tmp_path / "t-0"
    flushed, appended = _run_child(path, "self", 0)
    assert appended is not None and appended > flushed
    log = open_(path)
    try:
        check_log(log, _expected_derived(appended))
        assert append_derived(log, 2)[0].offset == appended
    finally:
        log.close()


@pytest.mark.parametrize("lines", [3, 8])
def test_sigkill_mid_append_keeps_a_valid_prefix(tmp_path, lines):
    path = tmp_path / "t-0"
    flushed, _ = _run_child(path, "kill", lines)
    assert flushed > 0
    log = open_(path)
    try:
        end = log.log_end_offset
        assert end >= flushed
        check_log(log, _expected_derived(end))
        assert append_derived(log, 2)[0].offset == end
    finally:
        log.close()

"""Crash safety (Invariant 2): after a crash or power loss the log opens to the longest
valid prefix, never returns a corrupt batch, and keeps everything below its recovery point."""
import os
import random
import signal
import subprocess
import sys
import textwrap

import pytest

from pylog import Log
from tests.storage.conftest import crash_copy

SEG = 4096


def fill(path, batches, flush_at=None, **kw):
    """Append `batches` batches of 3 records (values derive from offsets); return the
    open log and the offset flushed at batch index flush_at."""
    log = Log.open(path, segment_bytes=SEG, retention_ms=-1, **kw)
    flushed = 0
    for i in range(batches):
        base = log.log_end_offset
        log.append([b"value-%d" % (base + j) for j in range(3)])
        if flush_at is not None and i == flush_at:
            log.flush()
            flushed = log.log_end_offset
    return log, flushed


def check_valid_prefix(path, at_least, at_most):
    """Reopen; every batch validates, offsets are dense, values match, the length is in range."""
    log = Log.open(path, segment_bytes=SEG, retention_ms=-1)
    try:
        end = log.log_end_offset
        assert at_least <= end <= at_most, (at_least, end, at_most)
        off = 0
        while off < end:
            for b in log.read(off, 1 << 16):
                b.validate()
                assert b.base_offset == off
                off = b.next_offset
        assert [r.value for r in log.records()] == [b"value-%d" % i for i in range(end)]
        # and the log continues densely
        assert log.append([b"value-%d" % end]) == end
        return end
    finally:
        log.close()


def active_log_file(path):
    return sorted(p for p in os.listdir(path) if p.endswith(".log"))[-1]


def test_clean_reopen_keeps_everything(tmp_path):
    log, _ = fill(tmp_path / "a", 50)
    end = log.log_end_offset
    log.close()
    assert check_valid_prefix(tmp_path / "a", end, end) == end


def test_crash_with_preallocated_zeros(tmp_path):
    log, flushed = fill(tmp_path / "a", 30, flush_at=10)
    end = log.log_end_offset
    crash_copy(tmp_path / "a", tmp_path / "b")  # page cache survives a process kill
    log.close()
    assert check_valid_prefix(tmp_path / "b", end, end) == end


def test_cut_last_batch_at_every_byte(tmp_path):
    log, flushed = fill(tmp_path / "a", 12, flush_at=5)
    end = log.log_end_offset
    last = log.read(end - 1)[0]
    seg = log.segments[-1]
    start = last.base_offset  # noqa: F841
    pos = seg.log_size - last.size_bytes
    name = active_log_file(tmp_path / "a")
    original = last.to_bytes()
    crash_copy(tmp_path / "a", tmp_path / "img")
    log.close()
    for cut in range(0, last.size_bytes):
        dst = tmp_path / f"cut{cut}"
        crash_copy(tmp_path / "img", dst)
        with open(dst / name, "r+b") as f:  # power loss: the tail past `cut` never reached disk
            f.seek(pos + cut)
            f.write(bytes(last.size_bytes - cut))
        intact = not any(original[cut:])  # zeroing bytes that were already zero
        want = end if intact else end - 3
        got = check_valid_prefix(dst, flushed, want)
        assert got == want  # exactly the torn batch is lost


def test_truncated_file_tail(tmp_path):
    log, flushed = fill(tmp_path / "a", 12, flush_at=5)
    end = log.log_end_offset
    size = log.segments[-1].log_size
    name = active_log_file(tmp_path / "a")
    crash_copy(tmp_path / "a", tmp_path / "img")
    log.close()
    for cut in range(size - 70, size, 3):
        dst = tmp_path / f"t{cut}"
        crash_copy(tmp_path / "img", dst)
        os.truncate(dst / name, cut)
        check_valid_prefix(dst, flushed, end)


@pytest.mark.parametrize("seed", range(12))
def test_random_bit_flips_in_the_tail(tmp_path, seed):
    rng = random.Random(seed)
    log, flushed = fill(tmp_path / "a", 40, flush_at=30)
    end = log.log_end_offset
    seg = log.segments[-1]
    tail_start = 0
    # flip bits only above the recovery point, in the active segment
    rp_batch = log.read(flushed)[0] if flushed < end else None
    if seg.base_offset <= flushed and rp_batch is not None:
        tail_start = seg.log_size - sum(b.size_bytes for b in log.read(flushed, 1 << 20))
    size = seg.log_size
    name = active_log_file(tmp_path / "a")
    crash_copy(tmp_path / "a", tmp_path / "b")
    log.close()
    with open(tmp_path / "b" / name, "r+b") as f:
        for _ in range(rng.randint(1, 4)):
            p = rng.randrange(tail_start, size)
            f.seek(p)
            byte = f.read(1)[0]
            f.seek(p)
            f.write(bytes([byte ^ (1 << rng.randrange(8))]))
    check_valid_prefix(tmp_path / "b", max(flushed, seg.base_offset if tail_start else flushed), end)


@pytest.mark.parametrize("damage", ["delete", "garble", "zero", "truncate"])
def test_index_files_damaged(tmp_path, damage):
    log, _ = fill(tmp_path / "a", 60, index_interval_bytes=64)
    end = log.log_end_offset
    log.close()
    rng = random.Random(7)
    for name in os.listdir(tmp_path / "a"):
        if not name.endswith((".index", ".timeindex")):
            continue
        p = tmp_path / "a" / name
        if damage == "delete":
            p.unlink()
        elif damage == "garble":
            data = bytearray(p.read_bytes())
            for _ in range(max(1, len(data) // 10)):
                if data:
                    data[rng.randrange(len(data))] = rng.randrange(256)
            p.write_bytes(bytes(data))
        elif damage == "zero":
            p.write_bytes(bytes(p.stat().st_size))
        else:
            os.truncate(p, p.stat().st_size // 2 + 3)
    check_valid_prefix(tmp_path / "a", end, end)
    # lookups by offset and time work through the rebuilt indexes
    with Log.open(tmp_path / "a", segment_bytes=SEG, retention_ms=-1) as log:
        for off in range(0, end, 7):
            assert log.read(off)[0].base_offset <= off < log.read(off)[0].next_offset


def test_damaged_middle_segment_drops_the_rest(tmp_path):
    log, _ = fill(tmp_path / "a", 150)
    end = log.log_end_offset
    assert len(log.segments) >= 3
    second = log.segments[1]
    crash_copy(tmp_path / "a", tmp_path / "b")
    log.close()
    name = f"{second.base_offset:020d}.log"
    with open(tmp_path / "b" / name, "r+b") as f:
        f.seek(100)
        f.write(b"\xff\xff\xff")
    got = check_valid_prefix(tmp_path / "b", second.base_offset, end)
    assert got < second.next_offset


CHILD = textwrap.dedent("""
    import os, sys
    from pylog import Log
    log = Log.open(sys.argv[1], segment_bytes=4096, retention_ms=-1)
    n = 0
    while True:
        log.append([b"value-%d" % (n + j) for j in range(3)])
        n += 3
        if n % 300 == 0:
            log.flush()
            sys.stdout.write("%d\\n" % log.recovery_point)
            sys.stdout.flush()
""")


def test_sigkill_mid_production_loses_nothing_flushed(tmp_path):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path / "k")], stdout=subprocess.PIPE,
                            env=env, text=True)
    flushed = 0
    for line in proc.stdout:
        flushed = int(line)
        if flushed >= 3000:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    got = check_valid_prefix(tmp_path / "k", flushed, 10**9)
    assert got >= flushed

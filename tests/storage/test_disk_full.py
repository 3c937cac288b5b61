"""A full disk never crashes a Log (issue 12 points 1-3), on a real small file system.

Each test fills a small ext4 (loop device) or tmpfs (tests/smallfs.py) with a filler
file so that the write point under test meets ENOSPC, and checks: StorageError naming
the path, nothing half-written (a reopen shows exactly the records appended before),
close() releases the directory lock, and appends resume once the filler is deleted.
Reopens after a full disk run in a child process, so a SIGBUS fails the test instead of
killing pytest.
"""
from __future__ import annotations

import errno
import gc
import logging
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pylog.errors import StorageError
from pylog.storage import Log
from pylog.storage.log import CLEANED_DIR, SWAP_DIR
from pylog.storage.segment import RESERVE_FIRST_BYTES

MiB = 1 << 20
VALUE = b"v" * 1000
ROOT = Path(__file__).resolve().parents[2]


def open_log(path, **kw):
    kw.setdefault("retention_ms", -1)
    kw.setdefault("segment_bytes", 8 * MiB)
    kw.setdefault("segment_index_bytes", 1 * MiB)
    return Log.open(path, **kw)


def values_of(log):
    return [r.value for r in log.records()]


def fill_appends(log, value=VALUE, limit=100_000):
    """Append until StorageError; return (values appended, the error)."""
    done = []
    for i in range(limit):
        v = value + b"%d" % i
        try:
            log.append([v])
        except StorageError as exc:
            return done, exc
        done.append(v)
    raise AssertionError("the disk never filled")


def run_child(code: str, *args: str) -> str:
    """Run ``code`` in a fresh interpreter (this tree's pylog); a signal (SIGBUS) or a
    non-zero exit fails the test with the child's output.  Returns its stdout."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True,
                       text=True, timeout=120, env=env, cwd=str(ROOT))
    if r.returncode < 0:
        pytest.fail(f"child died with signal {-r.returncode} (SIGBUS is 7)\nstdout:\n{r.stdout}\n"
                    f"stderr:\n{r.stderr}")
    assert r.returncode == 0, f"child exit {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    return r.stdout


#: Child: open the log (recovering it), check the records, try an append on the full
#: disk, print what happened.
REOPEN_CHILD = """
    import sys
    from pylog.errors import StorageError
    from pylog.storage import Log
    path, expect_n = sys.argv[1], int(sys.argv[2])
    log = Log.open(path, retention_ms=-1, segment_bytes=int(sys.argv[3]), segment_index_bytes=1 << 20,
                   preallocate=sys.argv[4] == "1")
    values = [r.value for r in log.records()]
    assert len(values) == expect_n, (len(values), expect_n)
    assert all(v.startswith(b"v" * 1000) for v in values)
    try:
        log.append([b"refused?"])
        print("appended")
    except StorageError as exc:
        print("refused", exc.errno, exc)
    try:
        log.close()
        print("closed")
    except StorageError as exc:
        print("close failed", exc)
"""


def check_lock_released(path):
    log = open_log(path)  # a second Log.open would raise StorageError if still locked
    log.close()


# ------------------------------------------------------------------ write points
def test_append_into_the_active_segment(small_fs):
    path = small_fs.path / "t-0"
    log = open_log(path)
    log.append([VALUE])
    small_fs.fill()
    done, exc = fill_appends(log)
    assert exc.errno == errno.ENOSPC
    assert str(path) in str(exc) and exc.kafka_name == "KAFKA_STORAGE_ERROR"
    end = log.log_end_offset
    assert end == 1 + len(done)
    assert values_of(log) == [VALUE] + done  # what fitted the reservation went in, whole
    with pytest.raises(StorageError):  # still refused, nothing written
        log.append([VALUE + b"again"])
    assert log.log_end_offset == end
    # space returns: appends resume on the same open log
    small_fs.free()
    assert log.append([b"after"]) == end
    log.close()
    with open_log(path) as log:
        assert values_of(log) == [VALUE] + done + [b"after"]


@pytest.mark.parametrize("preallocate", [False, True])
def test_roll_reservation(small_fs, preallocate):
    """The issue's case: segment.bytes 8 MiB, the log fills the disk at a roll."""
    path = small_fs.path / "t-0"
    seg_bytes = 8 * MiB if preallocate else 256 * 1024
    log = open_log(path, segment_bytes=seg_bytes, preallocate=preallocate)
    small_fs.fill(leave_bytes=(12 if preallocate else 2) * MiB)  # the log fills the rest
    done, exc = fill_appends(log)
    assert exc.errno == errno.ENOSPC and str(path) in str(exc)
    assert len(log.segments) >= 2
    assert values_of(log) == done
    # a full disk: close may or may not manage its checkpoints, but it lets go of the directory
    try:
        log.close()
    except StorageError as exc:
        assert str(path) in str(exc)
    assert log.closed
    out = run_child(REOPEN_CHILD, str(path), str(len(done)), str(seg_bytes), "1" if preallocate else "0")
    assert "closed" in out
    if "appended" in out:  # the close gave back enough for one more
        done.append(b"refused?")
    small_fs.free()
    with open_log(path, segment_bytes=seg_bytes, preallocate=preallocate) as log:
        assert values_of(log) == done
        log.append([b"after"])
        assert values_of(log)[-1] == b"after"


@pytest.mark.parametrize("which", ["index", "timeindex"])
def test_index_appends(small_fs, which):
    """The .log is reserved whole (preallocate), an index page runs out: the error
    names the index file; one entry per batch (index.interval.bytes 0)."""
    path = small_fs.path / "t-0"
    log = open_log(path, segment_bytes=4 * MiB, preallocate=True, index_interval_bytes=0)
    now = int(time.time() * 1000)
    log.append([b"first"], timestamps=[now])
    # constant timestamps: the time index takes one entry; rising: one a batch.  Fill
    # the disk just before the index's first page (512 or 341 entries) runs out.
    page_entries = 4096 // (8 if which == "index" else 12)
    done = []

    def append_one(i):
        log.append([b"r%d" % i], timestamps=[now if which == "index" else now + i])
        done.append(b"r%d" % i)

    for i in range(page_entries - 5):
        append_one(i)
    small_fs.fill()
    with pytest.raises(StorageError) as info:
        for i in range(page_entries - 5, 5000):
            append_one(i)
    assert info.value.errno == errno.ENOSPC
    assert str(path / ("00000000000000000000." + which)) in str(info.value)
    assert values_of(log) == [b"first"] + done
    small_fs.free()
    log.append([b"after"], timestamps=[now + 10_000])
    log.close()
    with open_log(path, segment_bytes=4 * MiB) as log:
        assert values_of(log) == [b"first"] + done + [b"after"]
        assert log.offset_for_timestamp(now + 10_000) == len(done) + 1
        assert len(log.segments) == 1


def test_flush_checkpoint_on_a_full_disk_is_logged_not_raised(small_fs, caplog):
    path = small_fs.path / "t-0"
    log = open_log(path)
    log.append([VALUE])
    log.flush()
    rp_before = (path / "recovery-point-offset-checkpoint").read_text()
    log.append([VALUE])
    small_fs.fill()
    with caplog.at_level(logging.WARNING, logger="pylog.storage"):
        log.flush()  # the data is durable; only the recovery point file could not move
    assert "writing checkpoints" in caplog.text and "No space left" in caplog.text
    assert (path / "recovery-point-offset-checkpoint").read_text() == rp_before
    assert not list(path.glob("*.tmp"))
    small_fs.free()
    log.flush()
    assert (path / "recovery-point-offset-checkpoint").read_text() != rp_before
    log.close()


def test_log_start_checkpoint_raises(small_fs):
    path = small_fs.path / "t-0"
    log = open_log(path, segment_bytes=64 * 1024)
    for i in range(200):
        log.append([VALUE])
    small_fs.fill()
    with pytest.raises(StorageError) as info:
        log.delete_records(10)  # inside the first segment: no file to delete
    assert str(path) in str(info.value) and info.value.errno == errno.ENOSPC
    ls_file = path / "log-start-offset-checkpoint"  # a new log writes none while it holds 0
    assert not ls_file.exists() or ls_file.read_text().split()[-1] == "0"
    assert not list(path.glob("*.tmp"))
    assert log.log_start_offset == 0
    small_fs.free()
    log.delete_records(10)
    assert log.log_start_offset == 10
    log.close()


def test_compaction_swap(small_fs):
    path = small_fs.path / "t-0"
    log = open_log(path, segment_bytes=64 * 1024, cleanup_policy="compact")
    for i in range(300):
        log.append([b"c" * 500], keys=[b"k%d" % (i % 5)])
    snaps = [s for s in log.snapshot_segments() if not s.active]
    assert snaps
    before = values_of(log)
    small_fs.fill()
    replacements = [(s, bytes(s.data)) for s in snaps]  # same bytes: a valid tiling
    with pytest.raises(StorageError) as info:
        log.replace_segments(replacements, modified_ms=1)
    assert str(path) in str(info.value)
    assert not (path / CLEANED_DIR).exists() and not (path / SWAP_DIR).exists()
    assert values_of(log) == before
    small_fs.free()
    assert log.replace_segments(replacements, modified_ms=1)
    assert values_of(log) == before
    log.close()


def test_compaction_swap_failing_after_its_commit_point(tmp_path, monkeypatch):
    """Injected fault (a real full disk cannot hit this step deterministically): the
    swap is committed, then installing a swapped segment fails.  The Log closes itself
    rather than go on with half of the swap; opening it again finishes the swap."""
    path = tmp_path / "t-0"
    log = open_log(path, segment_bytes=64 * 1024, cleanup_policy="compact")
    for i in range(300):
        log.append([b"c" * 500], keys=[b"k%d" % (i % 5)])
    snaps = [s for s in log.snapshot_segments() if not s.active]
    before = values_of(log)

    def refuse(self, base):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Log, "_finish_swap_one", refuse)
    with pytest.raises(StorageError, match="opening it again finishes the swap"):
        log.replace_segments([(s, bytes(s.data)) for s in snaps], modified_ms=1)
    assert log.closed
    monkeypatch.undo()
    with open_log(path, segment_bytes=64 * 1024, cleanup_policy="compact") as log:
        assert values_of(log) == before
        assert not (path / SWAP_DIR).exists()


def test_create_on_a_full_disk_leaves_nothing(small_fs):
    path = small_fs.path / "new-0"
    path.mkdir()  # (a full ext4 cannot make a directory: that fails cleanly too)
    (small_fs.path / "idle-0").mkdir()
    small_fs.fill()
    try:
        log = open_log(path, preallocate=True)
    except StorageError as exc:
        assert str(path) in str(exc)
        assert not list(path.glob("*.log")) and not list(path.glob("*.index"))
    else:  # the files are sparse: nothing to reserve until the first append
        raise AssertionError(f"preallocate=True opened on a full disk: {log}")
    # without preallocate an empty log costs no data blocks: it opens, refuses appends
    log = open_log(small_fs.path / "idle-0")
    with pytest.raises(StorageError):
        log.append([b"x"])
    assert log.log_end_offset == 0
    small_fs.free()
    assert log.append([b"x"]) == 0
    log.close()


# ------------------------------------------------------------------ close / reopen
def test_close_on_a_full_disk_releases_the_lock_and_reopens(small_fs):
    path = small_fs.path / "t-0"
    log = open_log(path)
    small_fs.fill(leave_bytes=2 * MiB)
    done, _ = fill_appends(log)
    try:
        log.close()
    except StorageError as exc:
        assert str(path) in str(exc)
    assert not list(path.glob("*.tmp"))
    run_child(REOPEN_CHILD, str(path), str(len(done)), str(8 * MiB), "0")
    check_lock_released(path)


def test_crash_then_reopen_on_a_full_disk(small_fs):
    """A killed process (no close) on a full disk: the reopen recovers the segment
    (half reserved, holes past the data) without writing through its mapping, serves
    every record, refuses appends, and takes them once space returns."""
    path = small_fs.path / "t-0"
    log = open_log(path, segment_bytes=8 * MiB, preallocate=True)
    small_fs.fill(leave_bytes=12 * MiB)
    done, exc = fill_appends(log)
    assert "reserving 8388608 bytes" in str(exc)
    log.abandon()  # SIGKILL: no flush, no shrink, no marker
    small_fs.fill()
    out = run_child(REOPEN_CHILD, str(path), str(len(done)), str(8 * MiB), "1")
    assert "refused 28" in out, out
    small_fs.free()
    out = run_child(REOPEN_CHILD, str(path), str(len(done)), str(8 * MiB), "1")
    assert "appended" in out and "closed" in out, out


def test_torn_tail_on_a_full_disk_is_cut_without_writes(small_fs):
    """Garbage after the last batch (a torn write) is cut by truncating the file."""
    path = small_fs.path / "t-0"
    log = open_log(path)
    for i in range(50):
        log.append([VALUE])
    seg_path = log.segments[-1].log_path
    size = log.segments[-1].log_size
    log.abandon()
    with open(seg_path, "r+b") as f:
        f.seek(size)
        f.write(os.urandom(3000))
    small_fs.fill()
    out = run_child(REOPEN_CHILD, str(path), "50", str(8 * MiB), "0")
    small_fs.free()
    with open_log(path) as log:
        assert len(values_of(log)) == 50 + ("appended" in out)
        log.append([b"after"])


def test_recovery_never_faults_on_holes(small_fs):
    """An index file lost after a crash is rebuilt on a full disk with pwrite: it
    raises StorageError (the disk cannot take it) or works, but never SIGBUS."""
    path = small_fs.path / "t-0"
    log = open_log(path, segment_bytes=256 * 1024)
    for i in range(600):
        log.append([VALUE])
    n = log.log_end_offset
    log.abandon()
    for p in path.glob("*.index"):
        p.unlink()
    small_fs.fill()
    code = REOPEN_CHILD.replace("log = Log.open", "try:\n        log = Log.open").replace(
        "                   preallocate=sys.argv[4] == \"1\")",
        "                   preallocate=sys.argv[4] == \"1\")\n    except StorageError as exc:\n"
        "        print('open refused', exc); raise SystemExit(0)")
    out = run_child(code, str(path), str(n), str(256 * 1024), "0")
    assert "open refused" in out or "closed" in out
    small_fs.free()
    with open_log(path, segment_bytes=256 * 1024) as log:
        assert log.log_end_offset == n
        assert values_of(log)[-1].startswith(VALUE)


# ------------------------------------------------------------------ idle partitions
def test_an_empty_log_allocates_almost_nothing(tmp_path):
    """Issue 12 point 7: an empty partition holds <= 1 MB of disk (its files are
    sparse; the first append reserves the first step)."""
    total = 0
    for i in range(20):
        log = Log.open(tmp_path / f"t-{i}", segment_bytes=1 << 30, segment_index_bytes=10 * MiB)
        log.close()
        log = Log.open(tmp_path / f"t-{i}", segment_bytes=1 << 30, segment_index_bytes=10 * MiB)
        for p in (tmp_path / f"t-{i}").iterdir():
            total += os.stat(p).st_blocks * 512
        log.close()
    assert total / 20 <= 1_000_000
    log = Log.open(tmp_path / "t-0", segment_bytes=1 << 30)
    log.append([b"x"])
    seg = log.segments[-1]
    assert os.stat(seg.log_path).st_blocks * 512 >= RESERVE_FIRST_BYTES
    log.close()


def test_an_idle_log_holds_at_most_one_descriptor_and_its_lock(tmp_path):
    """Point 7: a segment opens its files only while it uses them; the index mappings
    hold no descriptor; the .log mapping holds the one Python's mmap keeps."""
    def open_fds():
        gc.collect()  # objects of earlier tests may still hold descriptors
        return len(os.listdir("/proc/self/fd"))

    before = open_fds()
    logs = [Log.open(tmp_path / f"t-{i}", dir_lock=False) for i in range(50)]
    assert all(log.segments[-1].open_fds == 0 for log in logs)
    assert open_fds() - before <= 50  # the .log mappings' descriptors, nothing else
    for log in logs:
        log.close()
    assert open_fds() == before
    logs = [Log.open(tmp_path / f"t-{i}") for i in range(50)]  # reopened, with their .lock
    assert open_fds() - before <= 100
    logs[0].append([b"x"])  # an append opens what it needs, reads need nothing
    assert logs[0].segments[-1].open_fds >= 1
    assert [r.value for r in logs[0].records()] == [b"x"]
    for log in logs:
        log.close()
    assert open_fds() == before

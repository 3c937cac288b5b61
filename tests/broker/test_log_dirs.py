"""A broker's log.dirs (JBOD) and a failing disk (issue 12, point 4; Kafka's KIP-112).

The failure is real: the second log directory is an ext4 file system whose loop
device's backing store fills up (tests/failingdisk.py), so the kernel fails writes
with EIO and ext4 then remounts itself read-only (EROFS).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

import pylog
from pylog.errors import InvalidConfig, StorageError
from pylog.records import build_batch
from pylog.storage.logdirs import LogDirs, is_dir_failure, parse_log_dirs
from tests.conftest import SMALL


def _where(dirs, name):
    hits = [d for d in dirs if (Path(d) / name).is_dir()]
    assert len(hits) == 1, (name, hits)
    return Path(hits[0])


def _produce(b, topic, p, n, start=0):
    vals = [f"{topic}-{p}-{i}".encode() for i in range(start, start + n)]
    b.produce(topic, p, build_batch(vals), acks=1)
    return vals


def _read_all(b, topic, p):
    out = []
    off = 0
    while True:
        res = b.fetch(topic, p, off)
        recs = [r for batch in res.batches for r in batch.records() if r.offset >= off]
        if not recs:
            return out
        out += [r.value for r in recs]
        off = recs[-1].offset + 1


def test_parse_log_dirs():
    assert parse_log_dirs("/a, /b") == [Path("/a"), Path("/b")]
    assert parse_log_dirs(["/a"]) == [Path("/a")]
    with pytest.raises(InvalidConfig, match="twice"):
        parse_log_dirs("/a,/b,/a")
    with pytest.raises(InvalidConfig, match="no directory"):
        parse_log_dirs(" , ")


def test_is_dir_failure():
    import errno

    assert is_dir_failure(OSError(errno.EIO, "x"))
    assert is_dir_failure(StorageError(errno.EROFS, "y"))
    assert not is_dir_failure(StorageError(errno.ENOSPC, "full"))
    try:
        try:
            raise OSError(errno.EIO, "inner")
        except OSError as exc:
            raise StorageError("outer") from exc
    except StorageError as exc:
        assert is_dir_failure(exc)


def test_partitions_spread_over_the_dirs_and_stay(tmp_path):
    dirs = [tmp_path / "d1", tmp_path / "d2", tmp_path / "d3"]
    with pylog.Broker.open(",".join(map(str, dirs)), SMALL, background_threads=False) as b:
        b.create_topic("t", 6)
        b.create_topic("u", 3)
        for p in range(6):
            _produce(b, "t", p, 5)
        places = {f"t-{p}": _where(dirs, f"t-{p}") for p in range(6)}
        places.update({f"u-{p}": _where(dirs, f"u-{p}") for p in range(3)})
        # the fewest-partitions rule: 9 partitions over 3 directories, 3 each
        assert sorted(sum(1 for w in places.values() if w == d) for d in dirs) == [3, 3, 3]
        assert b.metrics()["offline_log_directories"] == 0
        assert (dirs[0] / "topics.json").exists() and not (dirs[1] / "topics.json").exists()
    # reopened: every partition found where it was, with its records
    with pylog.Broker.open(dirs, SMALL, background_threads=False) as b:
        for p in range(6):
            assert _read_all(b, "t", p) == [f"t-{p}-{i}".encode() for i in range(5)]
        b.create_topic("v", 1)
        assert {_where(dirs, f"t-{p}") for p in range(6)} == set(dirs)
        for name, d in places.items():
            assert _where(dirs, name) == d
    # a partition in two directories: which copy is right cannot be known
    src = places["t-0"]
    other = next(d for d in dirs if d != src)
    (other / "t-0").mkdir()
    with pytest.raises(StorageError, match="t-0 is in both"):
        pylog.Broker.open(dirs, SMALL, background_threads=False)


def test_each_log_dir_is_locked(tmp_path):
    a, b_ = tmp_path / "a", tmp_path / "b"
    with pylog.Broker.open([a, b_], SMALL, background_threads=False):
        with pytest.raises(StorageError, match="in use"):
            pylog.Broker.open([tmp_path / "c", b_], SMALL, background_threads=False)
    LogDirs([a, b_]).open()  # released at close


def test_an_io_error_takes_the_dir_offline_and_a_restart_after_repair_brings_it_back(
        tmp_path, failing_disk, caplog):
    good = tmp_path / "good"
    bad = failing_disk.path / "logs"
    dirs = [good, bad]
    cfg = dict(SMALL, **{"log.flush.interval.messages": 1})  # every append fsyncs: the failure shows at once
    written = {}
    b = pylog.Broker.open(dirs, cfg, background_threads=False)
    try:
        b.create_topic("t", 4)
        for p in range(4):
            written[p] = _produce(b, "t", p, 20)
        on_bad = [p for p in range(4) if _where(dirs, f"t-{p}") == bad]
        on_good = [p for p in range(4) if p not in on_bad]
        assert len(on_bad) == 2 and len(on_good) == 2

        failing_disk.fail()
        caplog.set_level(logging.ERROR, logger="pylog")
        p = on_bad[0]
        with pytest.raises(StorageError) as ei:
            for i in range(200):  # until a write reaches the failed blocks
                _produce(b, "t", p, 50, start=1000 + i * 50)
        assert is_dir_failure(ei.value), ei.value
        offline = [r for r in caplog.records if r.levelno == logging.ERROR and "OFFLINE" in r.getMessage()]
        assert offline and str(bad) in offline[0].getMessage()
        m = b.metrics()
        assert m["offline_log_directories"] == 1
        assert pylog.broker.metrics.render_prometheus(m).count("pylog_offline_log_directories 1") == 1

        # both partitions of the failed directory refuse, naming it; the others go on
        for q in on_bad:
            with pytest.raises(StorageError, match="offline"):
                b.fetch("t", q, 0)
            with pytest.raises(StorageError, match="offline"):
                _produce(b, "t", q, 1)
        for q in on_good:
            written[q] += _produce(b, "t", q, 7, start=20)
            assert _read_all(b, "t", q) == written[q]
        b.run_housekeeping(force=True)  # swaps the failed partitions out and lets go of their files
        d = b.describe_topic("t")
        assert sorted(pi.partition for pi in d.partitions if pi.offline) == sorted(on_bad)
        assert all(pi.leader == -1 for pi in d.partitions if pi.offline)
        assert b.metrics()["offline_partitions"] == 2
        b.create_topic("later", 2)  # new partitions go to the online directory only
        assert _where(dirs, "later-0") == good and _where(dirs, "later-1") == good
    finally:
        b.close()

    # The operator repairs the disk (fsck) and restarts the broker: every partition is
    # back, with every record that was flushed before the failure.
    failing_disk.repair()
    with pylog.Broker.open(dirs, cfg, background_threads=False) as b:
        assert b.metrics()["offline_log_directories"] == 0
        for q in range(4):
            got = _read_all(b, "t", q)
            assert got[:20] == written[q][:20], q
            if q in on_good:
                assert got == written[q]
        _produce(b, "t", on_bad[0], 3, start=5000)
        assert _read_all(b, "t", on_bad[0])[-3:] == [f"t-{on_bad[0]}-{i}".encode() for i in range(5000, 5003)]


def test_a_dir_that_fails_at_start_is_offline_with_its_partitions(tmp_path, failing_disk):
    good = tmp_path / "good"
    bad = failing_disk.path / "logs"
    with pylog.Broker.open([good, bad], SMALL, background_threads=False) as b:
        b.create_topic("t", 2)
        for p in range(2):
            _produce(b, "t", p, 3)
    failing_disk.fail()
    # The failed file system turns read-only once ext4 notices; here it is made to
    # notice now (a write that needs new blocks), as a restart after a failure finds it.
    with pytest.raises(OSError):
        with open(bad / "probe", "wb") as f:
            f.write(b"x" * (4 << 20))
            f.flush()
            os.fsync(f.fileno())
    # the lock file cannot be created on a read-only fs: the directory is offline
    b = pylog.Broker.open([good, bad], SMALL, background_threads=False)
    try:
        m = b.metrics()
        on_good = [p for p in range(2) if (good / f"t-{p}").is_dir()]
        assert len(on_good) == 1
        assert m["offline_log_directories"] == 1
        d = b.describe_topic("t")
        assert [pi.partition for pi in d.partitions if not pi.offline] == on_good
        with pytest.raises(StorageError, match="offline"):
            b.fetch("t", 1 - on_good[0], 0)
        assert _read_all(b, "t", on_good[0]) == [f"t-{on_good[0]}-{i}".encode() for i in range(3)]
    finally:
        b.close()


def test_one_clean_shutdown_marker_per_log_dir(tmp_path):
    """As Kafka's .kafka_cleanshutdown: a clean close writes one marker per log
    directory (none per partition), the next open trusts the logs and removes it
    before anything can be appended; a crash leaves none, and the logs are recovered."""
    marker = ".pylog_cleanshutdown"
    dirs = [tmp_path / "a", tmp_path / "b"]
    b = pylog.Broker.open(dirs, SMALL, background_threads=False)
    b.create_topic("t", 4)
    written = {p: _produce(b, "t", p, 30) for p in range(4)}
    b.close()
    for d in dirs:
        assert (d / marker).exists()
        assert not any((d / f"t-{p}" / marker).exists() for p in range(4))
    b = pylog.Broker.open(dirs, SMALL, background_threads=False)
    try:
        assert not any((d / marker).exists() for d in dirs)  # gone before any append
        for p in range(4):
            assert _read_all(b, "t", p) == written[p]
            written[p] += _produce(b, "t", p, 5, start=30)
        parts = [b.partition("t", p) for p in range(4)]
    finally:
        for part in parts:  # a crash: no flush, no checkpoint, no marker
            part.log.abandon()
        b._release()
    assert not any((d / marker).exists() for d in dirs)
    with pylog.Broker.open(dirs, SMALL, background_threads=False) as b:  # recovered, nothing lost
        for p in range(4):
            assert _read_all(b, "t", p) == written[p]

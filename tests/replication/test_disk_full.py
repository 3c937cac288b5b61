"""Checkpoints of the replication layer on a full disk (issue 12 point 1): the leader
epoch checkpoint and the high watermark checkpoint keep their older content, leave no
``.tmp``, and (leader epochs) raise StorageError naming the file with the cache
unchanged.  On a real small file system (tests/smallfs.py)."""
from __future__ import annotations

import errno
import logging

import pytest

from pylog.cluster.kernel import _read_hw, _write_hw
from pylog.errors import StorageError
from pylog.replication.epochs import LEADER_EPOCH_CHECKPOINT_FILE, LeaderEpochCache


def test_leader_epoch_checkpoint(small_fs):
    d = small_fs.path / "t-0"
    d.mkdir()
    cache = LeaderEpochCache(d)
    cache.assign(0, 0)
    before = (d / LEADER_EPOCH_CHECKPOINT_FILE).read_bytes()
    small_fs.fill()
    with pytest.raises(StorageError) as info:
        cache.assign(1, 100)
    assert info.value.errno == errno.ENOSPC and str(d / LEADER_EPOCH_CHECKPOINT_FILE) in str(info.value)
    assert [tuple(e) for e in cache.entries] == [(0, 0)]  # unchanged
    assert (d / LEADER_EPOCH_CHECKPOINT_FILE).read_bytes() == before
    assert not list(d.glob("*.tmp"))
    small_fs.free()
    assert cache.assign(1, 100)
    assert [tuple(e) for e in LeaderEpochCache.load(d).entries] == [(0, 0), (1, 100)]


def test_high_watermark_checkpoint(small_fs, caplog):
    d = small_fs.path / "t-0"
    d.mkdir()
    _write_hw(d, 5)
    small_fs.fill()
    with caplog.at_level(logging.WARNING, logger="pylog.replication"):
        _write_hw(d, 9)
    assert _read_hw(d) == 5  # the older value, not an empty file
    assert not list(d.glob("*.tmp"))
    assert "replication-offset-checkpoint" in caplog.text
    small_fs.free()
    _write_hw(d, 9)
    assert _read_hw(d) == 9

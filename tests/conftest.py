"""Fixtures shared by the broker and client tests: small files, a fake clock, reopen."""
from __future__ import annotations

import pytest

import pylog
from tests.storage.helpers import FakeClock

#: small_fs: a small real file system for the full-disk tests (tests/smallfs.py)
pytest_plugins = ["tests.smallfs", "tests.failingdisk"]

#: Small files: tests open many partitions and copy directories.
SMALL = {"log.segment.bytes": 1 << 20, "log.index.size.max.bytes": 4096,
         "offsets.topic.num.partitions": 3}


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def open_broker(tmp_path):
    """open_broker(**config) opens (or reopens) the broker on one data directory."""
    opened = []

    def _open(config=None, **kwargs):
        cfg = dict(SMALL)
        cfg.update(config or {})
        b = pylog.Broker.open(tmp_path / "data", cfg, **kwargs)
        opened.append(b)
        return b

    yield _open
    for b in opened:
        b.close()


@pytest.fixture
def broker(open_broker):
    return open_broker()


@pytest.fixture(scope="session")
def zookeeper(tmp_path_factory):
    """A running ZooKeeper for the whole run (tests/zk.py): PYLOG_TEST_ZOOKEEPER's, or a
    private server stopped at the end.  Fails, never skips, if none can be had."""
    from tests.zk import provide_zookeeper

    yield from provide_zookeeper(tmp_path_factory)


@pytest.fixture
def zk_ensemble(tmp_path):
    """Three private ZooKeeper servers replicating one another (a ZooKeeperEnsemble),
    stopped by their PIDs after the test.  Fails, never skips, if they cannot start."""
    from tests.zk import provide_ensemble

    yield from provide_ensemble(tmp_path)


@pytest.fixture
def zk_store(zookeeper):
    """A ZooKeeperMetadataStore in a fresh chroot, closed after the test."""
    store = zookeeper.store()
    yield store
    store.close()

"""Fixtures shared by the broker and client tests: small files, a fake clock, reopen."""
from __future__ import annotations

import pytest

import pylog
from tests.storage.helpers import FakeClock

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

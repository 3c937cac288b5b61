"""pytest-benchmark versions of `pylog bench`'s peer rows: LMDB and RocksDB (rocksdict)
storing and reading back the log benchmarks' values (run: pytest bench/ --benchmark-only).

Needs the peers extra (pip install 'pylog[peers]'); each peer is skipped when missing.
Keys are 8-byte big-endian sequence numbers; each benchmark verifies its work.
"""
from __future__ import annotations

import struct

import pytest

from pylog.cli.bench import make_values

MESSAGES = 100_000


@pytest.fixture(scope="module")
def values():
    return make_values(MESSAGES, 100)


@pytest.fixture(scope="module")
def keys():
    pack = struct.Struct(">Q").pack
    return [pack(i) for i in range(MESSAGES)]


def _lmdb_env(path, **kw):
    lmdb = pytest.importorskip("lmdb")
    return lmdb.open(str(path), map_size=64 << 20, sync=False, metasync=False, lock=False, **kw)


def test_lmdb_put(benchmark, tmp_path_factory, values, keys):
    def setup():
        return (_lmdb_env(tmp_path_factory.mktemp("lmdb_put")),), {}

    def run(env):
        with env.begin(write=True) as txn:
            txn.cursor().putmulti(zip(keys, values), append=True)
        assert env.stat()["entries"] == MESSAGES
        with env.begin() as txn:
            assert txn.get(keys[-1]) == values[-1]
        env.close()

    benchmark.pedantic(run, setup=setup, rounds=3)


@pytest.fixture(scope="module")
def lmdb_filled(tmp_path_factory, values, keys):
    env = _lmdb_env(tmp_path_factory.mktemp("lmdb_read"))
    with env.begin(write=True) as txn:
        txn.cursor().putmulti(zip(keys, values), append=True)
    yield env
    env.close()


def test_lmdb_cursor_read(benchmark, lmdb_filled, values):
    def run():
        n, last = 0, None
        with lmdb_filled.begin() as txn:
            for _, last in txn.cursor():
                n += 1
        assert n == MESSAGES and last == values[-1]

    benchmark(run)


def _rdict(path):
    rocksdict = pytest.importorskip("rocksdict")
    return rocksdict.Rdict(str(path), rocksdict.Options(raw_mode=True))


def test_rocksdb_put(benchmark, tmp_path_factory, values, keys):
    def setup():
        return (_rdict(tmp_path_factory.mktemp("rocksdb_put")),), {}

    def run(db):
        from rocksdict import WriteBatch

        wb = WriteBatch(raw_mode=True)
        for k, v in zip(keys, values):
            wb.put(k, v)
        db.write(wb)
        assert db.get(keys[-1]) == values[-1]
        db.close()

    benchmark.pedantic(run, setup=setup, rounds=3)


@pytest.fixture(scope="module")
def rocksdb_filled(tmp_path_factory, values, keys):
    db = _rdict(tmp_path_factory.mktemp("rocksdb_read"))
    from rocksdict import WriteBatch

    wb = WriteBatch(raw_mode=True)
    for k, v in zip(keys, values):
        wb.put(k, v)
    db.write(wb)
    db.flush()
    assert sum(1 for _ in db.keys()) == MESSAGES
    yield db
    db.close()


def test_rocksdb_iter_read(benchmark, rocksdb_filled, values):
    def run():
        n, last = 0, None
        for _, last in rocksdb_filled.items():
            n += 1
        assert n == MESSAGES and last == values[-1]

    benchmark(run)

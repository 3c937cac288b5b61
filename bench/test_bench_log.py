"""pytest-benchmark versions of the `pylog bench` workloads (run: pytest bench/ --benchmark-only).

Not part of the test run (testpaths = tests).  Each benchmark verifies its work.
"""
from __future__ import annotations

import numpy as np
import pytest

from pylog import Log
from pylog.cli.bench import make_values

MESSAGES = 100_000


@pytest.fixture(scope="module")
def values():
    return make_values(MESSAGES, 100)


@pytest.mark.parametrize("batch", [1, 100, 1000])
def test_append(benchmark, tmp_path_factory, values, batch):
    def setup():
        d = tmp_path_factory.mktemp(f"append{batch}")
        return (Log.open(d / "t-0"),), {}

    def run(log):
        for i in range(0, len(values), batch):
            log.append(values[i:i + batch])
        assert log.log_end_offset == len(values)
        log.close()

    benchmark.pedantic(run, setup=setup, rounds=3)


def test_append_arrays(benchmark, tmp_path_factory, values):
    joined = np.frombuffer(b"".join(values), dtype=np.uint8)
    lengths = np.full(len(values), 100, dtype=np.int32)

    def setup():
        d = tmp_path_factory.mktemp("append_arrays")
        return (Log.open(d / "t-0"),), {}

    def run(log):
        offsets = log.append_arrays(joined, lengths=lengths)
        assert log.log_end_offset == len(values) == len(offsets)
        assert sum(b.record_count for b in log.read(0, 1 << 30)) == len(values)
        log.close()

    benchmark.pedantic(run, setup=setup, rounds=3)


@pytest.fixture(scope="module")
def filled_log(tmp_path_factory, values):
    log = Log.open(tmp_path_factory.mktemp("read") / "t-0")
    for i in range(0, len(values), 1000):
        log.append(values[i:i + 1000])
    yield log
    log.close()


def test_read_records(benchmark, filled_log):
    def run():
        n = sum(1 for _ in filled_log.records(0))
        assert n == MESSAGES

    benchmark(run)


def test_read_batches(benchmark, filled_log):
    def run():
        off, n = 0, 0
        while off < filled_log.log_end_offset:
            for b in filled_log.read(off, 8 << 20):
                n += b.record_count
                off = b.next_offset
        assert n == MESSAGES

    benchmark(run)

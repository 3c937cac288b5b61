"""pytest-benchmark versions of the `pylog bench` workloads (run: pytest bench/ --benchmark-only).

Not part of the test run (testpaths = tests).  Each benchmark verifies its work.
"""
from __future__ import annotations

import numpy as np
import pytest

from pylog import Log
from pylog.cli.bench import make_values
from pylog.records import build_batch

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


@pytest.fixture(scope="module", params=[("none", False), ("none", True), ("zstd", False), ("zstd", True)],
                ids=lambda p: f"{'uncompressed' if p[0] == 'none' else p[0]}-{'keyed' if p[1] else 'keyless'}")
def arrays_log(request, tmp_path_factory, values):
    codec, keyed = request.param
    keys = [b"key-%d" % i for i in range(len(values))] if keyed else None
    log = Log.open(tmp_path_factory.mktemp("arrays") / "t-0")
    for i in range(0, len(values), 1000):
        log.append_batches(build_batch(values[i:i + 1000], keys=keys[i:i + 1000] if keys else None,
                                       compression=codec))
    yield log, keys
    log.close()


def test_read_arrays(benchmark, arrays_log, values):
    """Log.iter_arrays: numpy columns over the segment mapping (uncompressed) or one
    decompressed buffer (zstd); every record counted, first/last values (and keys) checked."""
    log, keys = arrays_log

    def run():
        n, first, last = 0, None, None
        for a in log.iter_arrays(0):  # streamed, as `pylog bench` reads: chunks are not all kept
            assert int(a.offsets[0]) == n
            n += len(a)
            if first is None:
                first = a
            last = a
        assert n == MESSAGES
        for a in (first, last):
            for i in (0, len(a) - 1):
                off = int(a.offsets[i])
                p, n = int(a.value_pos[i]), int(a.value_len[i])
                assert bytes(a.buffer[p:p + n]) == values[off]
                if keys is not None:
                    p, n = int(a.key_pos[i]), int(a.key_len[i])
                    assert bytes(a.buffer[p:p + n]) == keys[off]

    benchmark(run)

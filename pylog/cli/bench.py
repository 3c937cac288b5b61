"""`pylog bench`: storage workloads with verification, medians, and the machine's ceiling.

Each workload runs ``runs`` times on a fresh log; the median time is reported.  Every
run checks its own work: appends check the log end offset and byte count; reads count
every record (or every batch's records), check that offsets are dense, and compare a
sample of values with what was written.  A failed check raises BenchmarkError.

The ceiling is measured in the same process, right before the workloads, two ways,
each writing the bytes of the log the workloads write (the same values as
1000-record batches, built once before the timing) into a freshly preallocated file:
a C loop (``pl_bench_copy_ceiling``) copies them a batch at a time into the file's
mapping, and another (``pl_bench_write_ceiling``) pwrites them 1 MiB at a time (the
log stores small appends into the mapping and writes large batches with pwrite).
Like the workloads' input, the source is as large as the data, so each byte comes
from memory once (a small source the cache keeps, copied again and again, made the
pwrite ceiling 1.4 times faster on the test machine: faster than any append could
be, since an append has to read its input).  Both rows are shown; append workloads
are reported as a share of the faster one — an append path with no per-record work
at all.

Reads are not expressed as a share of that append ceiling; their rows give records/s.
The ``read_arrays`` rows read a log of 1000-record batches through Log.iter_arrays
(numpy columns over the segment mapping, or one decompressed buffer for zstd); the
broker suite's consume rows use Consumer.poll_arrays, which copies no uncompressed
payload either (checked in the run).

With the ``peers`` extra installed, the log suite ends with LMDB and RocksDB (rocksdict)
storing and reading back the same values in the same run (pylog/cli/bench_peers.py).
"""
from __future__ import annotations

import contextlib
import itertools
import mmap
import os
import shutil
import statistics
import struct
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, TextIO, Tuple

import numpy as np

from pylog._native import ffi, lib
from pylog.records import build_batch
from pylog.storage import Log

__all__ = ["BenchResult", "BenchmarkError", "run_benchmarks", "ceiling", "make_values"]


class BenchmarkError(RuntimeError):
    """A benchmark's verification failed: the figures would be meaningless."""


@dataclass
class BenchResult:
    name: str
    messages: int
    seconds: float  # median over runs
    msgs_per_s: float
    mb_per_s: float  # payload (value) bytes per second
    runs: int
    seconds_all: List[float]
    pct_of_ceiling: Optional[float] = None
    ceiling_msgs_per_s: Optional[float] = None
    ceiling_mb_per_s: Optional[float] = None
    latency_p50_ms: Optional[float] = None  #: producer: batch opened -> acknowledged, per record
    latency_p99_ms: Optional[float] = None
    server_cpu_s: Optional[float] = None  #: network suite: CPU the `pylog serve` process spent
    client_cpu_s: Optional[float] = None  #: network suite: CPU the client spent
    note: Optional[str] = None  #: a sentence the table prints under the rows
    #: append rows: median µs a call, and the overhead beyond the copy: that minus the
    #: ceiling's µs for the same records (the ceiling copies their bytes and does nothing else)
    us_per_call: Optional[float] = None
    overhead_us: Optional[float] = None


class Progress:
    """A one-line progress bar on a terminal stream (silent when not a TTY and quiet)."""

    def __init__(self, total: int, stream: Optional[TextIO] = None, enabled: bool = True) -> None:
        """``stream``: default the sys.stderr of the time of the call (not of the import:
        it may have been replaced since, and closed)."""
        self.total = max(total, 1)
        self.done = 0
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled

    def step(self, label: str) -> None:
        self.done += 1
        if not self.enabled:
            return
        width = 30
        filled = int(width * self.done / self.total)
        bar = "#" * filled + "-" * (width - filled)
        self.stream.write(f"\r[{bar}] {self.done}/{self.total} {label:<28}")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


def make_values(messages: int, size: int) -> List[bytes]:
    """Distinct values: 8-byte big-endian index, then filler, ``size`` bytes each."""
    if size < 8:
        raise ValueError("--size must be at least 8 bytes (the value carries its index)")
    pad = bytes((i * 7) & 0xFF for i in range(size - 8))
    pack = struct.Struct(">Q").pack
    return [pack(i) + pad for i in range(messages)]


def _median(xs: List[float]) -> float:
    return statistics.median(xs)


@contextlib.contextmanager
def _fresh_file(path: str, size: int) -> Iterator[int]:
    """A new file of ``size`` bytes, preallocated where the file system can; yields its
    descriptor, then closes and removes it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        try:
            os.posix_fallocate(fd, 0, size)
        except (AttributeError, OSError):
            os.ftruncate(fd, size)
        yield fd
    finally:
        os.close(fd)
        os.unlink(path)


def _check_copy(name: str, done: int, source: bytes, piece: int, head: bytes, tail: bytes) -> None:
    """The ceiling loop wrote all of ``source``: its count, and its first and last piece
    where they belong."""
    n = min(piece, len(source))
    if done != len(source) or head != source[:n] or tail != source[len(source) - n:]:
        raise BenchmarkError(f"{name} loop did not write what it was asked to")


def ceiling(data_dir: str, source: bytes, piece: int, runs: int) -> float:
    """Median seconds for the C copy loop to copy ``source`` into a fresh preallocated
    mmapped file of its size, ``piece`` bytes at a time."""
    times = []
    size = max(len(source), 1)
    for r in range(runs):
        with _fresh_file(os.path.join(data_dir, f"ceiling-{r}.bin"), size) as fd:
            mm = mmap.mmap(fd, size)
            dst = ffi.from_buffer("uint8_t[]", mm)
            t0 = time.perf_counter()
            copied = lib.pl_bench_copy_ceiling(dst, size, source, len(source), piece, len(source))
            dt = time.perf_counter() - t0
            n = min(piece, len(source))
            _check_copy("ceiling copy", copied, source, piece, mm[:n], mm[len(source) - n:len(source)])
            ffi.release(dst)
            mm.close()
            times.append(dt)
    return _median(times)


def write_ceiling(data_dir: str, source: bytes, piece: int, runs: int) -> float:
    """Median seconds for the C pwrite loop to write ``source`` into a fresh
    preallocated file, ``piece`` bytes a call (read back and compared at the end)."""
    times = []
    for r in range(runs):
        with _fresh_file(os.path.join(data_dir, f"write-ceiling-{r}.bin"), max(len(source), 1)) as fd:
            t0 = time.perf_counter()
            written = lib.pl_bench_write_ceiling(fd, source, len(source), piece, len(source))
            dt = time.perf_counter() - t0
            if written == lib.PL_E_IO:
                raise BenchmarkError(f"write ceiling: pwrite failed: {os.strerror(ffi.errno)}")
            n = min(piece, len(source))
            _check_copy("write ceiling", written, source, piece, os.pread(fd, n, 0),
                        os.pread(fd, n, len(source) - n))
            times.append(dt)
    return _median(times)


def _append(log: Log, values: List[bytes], batch: int) -> None:
    append = log.append
    for i in range(0, len(values), batch):
        append(values[i:i + batch])


def _check_appended(log: Log, name: str, values: List[bytes], offsets: "np.ndarray") -> None:
    """The log holds exactly ``values`` at offsets 0.. (counted; a sample compared)."""
    n = len(values)
    if log.log_end_offset != n or len(offsets) != n or int(offsets[0]) != 0 or int(offsets[-1]) != n - 1:
        raise BenchmarkError(f"{name}: log end offset {log.log_end_offset}, {len(offsets)} offsets returned, "
                             f"expected {n}")
    count = sum(b.record_count for b in _batches(log))
    if count != n:
        raise BenchmarkError(f"{name}: {count} records read back, wrote {n}")
    for off in (0, n // 2, n - 1):
        rec = next(log.records(off, off + 1))
        if rec.value != values[off]:
            raise BenchmarkError(f"{name}: value at offset {off} differs")


def _batches(log: Log):
    off = log.log_start_offset
    while off < log.log_end_offset:
        batches = log.read(off, max_bytes=8 << 20)
        yield from batches
        off = batches[-1].next_offset


def run_benchmarks(
    messages: int = 1_000_000,
    size: int = 100,
    runs: int = 3,
    data_dir: Optional[str] = None,
    batch_sizes: tuple = (1, 100, 1000),
    progress: bool = True,
    on_result: Optional[Callable[[BenchResult], None]] = None,
    suites: tuple = ("log", "broker"),
    partitions: int = 6,
    idle_partitions: int = 10_000,
) -> List[BenchResult]:
    """Run every workload; return results (ceiling first).

    ``suites``: "log" (the storage engine alone) and/or "broker" (Producer -> Broker ->
    Consumer on ``partitions`` partitions, keyless and keyed, none and zstd);
    "partitions": an embedded broker creates and reopens ``idle_partitions`` empty
    partitions (pylog/cli/bench_partitions.py).
    """
    for name in suites:
        if name not in ("log", "broker", "replication", "network", "cluster", "partitions"):
            raise ValueError(f"unknown benchmark suite {name!r}; use 'log', 'broker', 'replication', "
                             "'network', 'cluster' and/or 'partitions'")
    if messages < 1 or size < 8 or runs < 1:
        raise ValueError("messages >= 1, size >= 8 and runs >= 1 are required")
    own_dir = data_dir is None
    root = tempfile.mkdtemp(prefix="pylog-bench-") if own_dir else data_dir
    os.makedirs(root, exist_ok=True)
    values = make_values(messages, size)
    results: List[BenchResult] = []
    broker_cases = [(keyed, codec) for codec in ("none", "zstd") for keyed in (False, True)]
    repl_cases = [(1, "all"), (3, "1"), (3, "all")]
    net_parts = (1, 6)
    # the log suite: appends, append_arrays, records() and read() with the CRC check on
    # and off, read_arrays (uncompressed cases on and off)
    read_arrays_steps = len(READ_ARRAYS_CASES) + sum(codec == "none" for codec, _ in READ_ARRAYS_CASES)
    steps = runs * (1 + ("log" in suites) * (len(batch_sizes) + 5 + read_arrays_steps)
                    + ("broker" in suites) * (3 * (len(broker_cases) + 2) + 2 + 1)
                    + ("replication" in suites) * len(repl_cases)
                    + ("partitions" in suites) * 1)
    if "log" in suites:
        from pylog.cli.bench_peers import peer_steps

        steps += peer_steps(runs)
    if "network" in suites:
        from pylog.cli.bench_network import network_steps

        steps += network_steps(runs, net_parts)
    if "cluster" in suites:
        from pylog.cli.bench_cluster import cluster_steps

        steps += cluster_steps(runs)
    bar = Progress(steps, enabled=progress)

    def emit(res: BenchResult) -> None:
        results.append(res)
        if on_result:
            on_result(res)

    try:
        # --- ceiling: the log's bytes (the values as 1000-record batches), written
        # a batch at a time into a mapping, and 1 MiB at a time with pwrite
        batches = [build_batch(values[i:i + 1000], base_timestamp=0) for i in range(0, messages, 1000)]
        source = b"".join(batches)
        total_bytes = len(source)
        m_times, w_times = [], []
        for _ in range(runs):
            m_times.append(ceiling(root, source, len(batches[0]), 1))
            w_times.append(write_ceiling(root, source, 1 << 20, 1))
            bar.step("ceiling (C memcpy to mmap, C pwrite)")
        del batches, source
        # The ceiling is the faster way; each row says its share of it.
        c_sec = min(_median(m_times), _median(w_times))
        c_msgs = messages / c_sec
        c_mb = total_bytes / c_sec / 1e6
        for name, times in (("ceiling memcpy->mmap", m_times), ("ceiling pwrite", w_times)):
            sec = _median(times)
            emit(BenchResult(name, messages, sec, messages / sec, total_bytes / sec / 1e6, runs, times,
                             100.0 * c_sec / sec, c_msgs, c_mb))

        def finish(name: str, times: List[float], count: int, write: Optional[bool] = None,
                   calls: Optional[int] = None, note: Optional[str] = None) -> BenchResult:
            sec = _median(times)
            mps = count / sec
            # The ceiling is an append ceiling: reads are not expressed as a share of it.
            pct = 100.0 * mps / c_msgs if (name.startswith("append") if write is None else write) else None
            res = BenchResult(name, count, sec, mps, count * size / sec / 1e6, runs, times,
                              pct, c_msgs, c_mb, note=note)
            if calls:
                res.us_per_call = 1e6 * sec / calls
                res.overhead_us = res.us_per_call - 1e6 * (count / calls) / c_msgs
            emit(res)
            return res

        if "broker" in suites:
            keys = [b"key-%d" % (i % 100_000) for i in range(messages)]
            _send_batch_case(root, values, runs, partitions, bar, emit, c_msgs, c_mb, size)
            for keyed, codec in broker_cases:
                _broker_case(root, values, keys if keyed else None, codec, runs, partitions, bar, emit,
                             c_msgs, c_mb, size)
            _broker_case(root, values, None, "none", runs, partitions, bar, emit, c_msgs, c_mb, size,
                         headers=BENCH_HEADERS)
            for keyed in (False, True):  # the producer tuned for throughput, as Kafka's guides do
                _broker_case(root, values, keys if keyed else None, "none", runs, partitions, bar, emit,
                             c_msgs, c_mb, size, batch_size=TUNED_BATCH_SIZE)
        if "replication" in suites:
            _replication_cases(root, values, repl_cases, runs, partitions, bar, emit, c_msgs, c_mb, size)
        def suite_emit(name: str, count: int, times: List[float], extra: Optional[Dict]) -> None:
            """A row of the network or cluster suite (CPU split and latency in ``extra``)."""
            sec = _median(times)
            mps = count / sec
            res = BenchResult(name, count, sec, mps, count * size / sec / 1e6, runs, times,
                              100.0 * mps / c_msgs, c_msgs, c_mb)
            if extra:
                res.latency_p50_ms, res.latency_p99_ms = extra.get("p50"), extra.get("p99")
                res.server_cpu_s, res.client_cpu_s = extra.get("server_cpu_s"), extra.get("client_cpu_s")
            emit(res)

        if "network" in suites:
            from pylog.cli.bench_network import run_network_suite

            run_network_suite(root, values, runs, net_parts, bar.step, suite_emit)
        if "cluster" in suites:
            from pylog.cli.bench_cluster import run_cluster_suite

            summary = run_cluster_suite(root, values, runs, bar.step, suite_emit)
            results[-1].note = (f"cluster: RF=3 acks=all at {100 * summary['ratio_all_vs_rf1']:.0f}% of RF=1 "
                                f"acks=1; the consumer at {summary['consume_vs_produce']:.1f}x the acks=all "
                                f"produce rate; ISR shrinks during the runs: {summary['isr_shrinks']:.0f}")
        if "partitions" in suites:
            from pylog.cli.bench_partitions import run_partitions_suite

            def partitions_emit(name: str, count: int, times: List[float], note: str) -> None:
                sec = _median(times)
                emit(BenchResult(name, count, sec, count / sec, 0.0, runs, times, None, c_msgs, c_mb,
                                 note=note or None))

            run_partitions_suite(root, idle_partitions, runs, bar.step, partitions_emit)
        if "log" not in suites:
            return results

        read_log_dir = None
        for b in batch_sizes:
            times = []
            for r in range(runs):
                d = os.path.join(root, f"append-b{b}-{r}")
                log = Log.open(d, segment_bytes=1 << 30)
                t0 = time.perf_counter()
                _append(log, values, b)
                dt = time.perf_counter() - t0
                if log.log_end_offset != messages:
                    raise BenchmarkError(f"append b={b}: log end offset {log.log_end_offset} != {messages}")
                if log.size_bytes < messages * size:
                    raise BenchmarkError(f"append b={b}: log holds {log.size_bytes} bytes, too few")
                log.close()
                times.append(dt)
                if b == max(batch_sizes) and r == runs - 1:
                    read_log_dir = d
                else:
                    shutil.rmtree(d)
                bar.step(f"append batch={b}")
            calls = -(-messages // b)
            note = None
            if b == 1:
                sec = _median(times)
                us_call, us_copy = 1e6 * sec / calls, 1e6 / c_msgs
                over = us_call - us_copy
                note = (f"append batch=1: {us_call:.2f} us a call; overhead beyond the copy "
                        f"{over:.2f} us (us a call minus the ceiling's {us_copy:.3f} us a record, "
                        f"same run); goal <= 1 us: {'met' if over <= 1.0 else 'not met'}")
            finish(f"append batch={b}", times, messages, calls=calls, note=note)

        # --- columnar: the same values as one buffer + lengths, one call (Log.append_arrays)
        joined = np.frombuffer(b"".join(values), dtype=np.uint8)
        lengths = np.fromiter(map(len, values), dtype=np.int32, count=messages)
        times = []
        for r in range(runs):
            d = os.path.join(root, f"append-arrays-{r}")
            log = Log.open(d, segment_bytes=1 << 30)
            t0 = time.perf_counter()
            offsets = log.append_arrays(joined, lengths=lengths)
            dt = time.perf_counter() - t0
            _check_appended(log, "append_arrays", values, offsets)
            log.close()
            shutil.rmtree(d)
            times.append(dt)
            bar.step("append_arrays")
        finish("append_arrays (one call)", times, messages)

        assert read_log_dir is not None
        log = Log.open(read_log_dir)
        try:
            # Each read row is timed with the CRC32C check on (the default) and off
            # (check_crcs=False), runs interleaved, to show what the check costs.
            times, times_off = [], []
            for _ in range(runs):
                for check, into in ((True, times), (False, times_off)):
                    t0 = time.perf_counter()
                    n = 0
                    expect = 0
                    for rec in log.records(0, check_crcs=check):
                        if rec.offset != expect:
                            raise BenchmarkError(f"records: offset {rec.offset}, expected {expect}")
                        expect += 1
                        if not expect & 0x3FF and rec.value != values[rec.offset]:
                            raise BenchmarkError(f"records: value at offset {rec.offset} differs")
                    n = expect
                    dt = time.perf_counter() - t0
                    if n != messages:
                        raise BenchmarkError(f"records: read {n} records, wrote {messages}")
                    into.append(dt)
                    bar.step("read per record")
            per_record = finish("read per record (records())", times, messages)
            finish("read per record (records(), check_crcs=False)", times_off, messages,
                   note=crc_cost_note("records()", times, times_off))

            times, times_off = [], []
            for _ in range(runs):
                for check, into in ((True, times), (False, times_off)):
                    t0 = time.perf_counter()
                    n = 0
                    off = 0
                    end = log.log_end_offset
                    while off < end:
                        batches = log.read(off, max_bytes=8 << 20, check_crcs=check)
                        for batch in batches:
                            if batch.base_offset != off:
                                raise BenchmarkError(f"read: batch at {batch.base_offset}, expected {off}")
                            n += batch.record_count
                            off = batch.next_offset
                    dt = time.perf_counter() - t0
                    if n != messages:
                        raise BenchmarkError(f"read: {n} records in batches, wrote {messages}")
                    probe = log.read(messages - 1)[0]
                    last = list(probe.records())[-1]
                    if last.value != values[-1]:
                        raise BenchmarkError("read: last record's value differs")
                    into.append(dt)
                    bar.step("read whole batches")
            finish("read whole batches (read())", times, messages)
            finish("read whole batches (read(), check_crcs=False)", times_off, messages,
                   note=crc_cost_note("read() (zero copy: the check is all its per-byte work)", times,
                                      times_off, goal=False))
        finally:
            log.close()

        # --- read_arrays: numpy columns over the segment mapping (uncompressed) or one
        # decompressed buffer (zstd), keyless and keyed, 1000-record batches
        keys = [b"key-%d" % (i % 100_000) for i in range(messages)]
        for codec, keyed in READ_ARRAYS_CASES:
            _read_arrays_case(root, values, keys if keyed else None, codec, runs, bar, finish)

        # --- peers (the peers extra): LMDB and RocksDB store the same values in the same run
        from pylog.cli.bench_peers import PEERS_HINT, missing_peers, run_peers

        for name, times, count, write in run_peers(root, values, runs, bar.step):
            peer = finish(name, times, count, write)
            if name == "lmdb cursor read":
                ratio = per_record.msgs_per_s / peer.msgs_per_s
                per_record.note = (
                    f"records(): {per_record.msgs_per_s / 1e6:.2f} M/s, {100 * ratio:.0f}% of lmdb cursor "
                    f"read's {peer.msgs_per_s / 1e6:.2f} M/s in the same run; goal >= 100%: "
                    f"{'met' if ratio >= 1.0 else 'not met'}")
        missing = missing_peers()
        if missing:
            results[-1].note = (f"peers: {' and '.join(missing)} not installed; {PEERS_HINT} adds "
                                "LMDB and RocksDB rows")
    finally:
        bar.close()
        if own_dir:
            shutil.rmtree(root, ignore_errors=True)
    return results


#: (codec, keyed) of the read_arrays rows of the log suite.
READ_ARRAYS_CASES = (("none", False), ("none", True), ("zstd", False), ("zstd", True))


def _crc_path() -> str:
    """The CRC32C path pl_crc32c takes for long inputs on this CPU (csrc/crc32c.c)."""
    if lib.pl_crc32c_path_available(lib.PL_CRC32C_FOLD512):
        return "yes, VPCLMULQDQ folding on AVX-512"
    if lib.pl_crc32c_path_available(lib.PL_CRC32C_HYBRID):
        return "yes, VPCLMULQDQ folding with crc32 streams"
    if lib.pl_crc32c_path_available(lib.PL_CRC32C_FOLD128):
        return "yes, crc32 streams (PCLMULQDQ folding for 512 B..3 KiB)"
    return "yes, crc32 streams" if lib.pl_crc32c_hw_available() else "no"


def crc_cost_note(what: str, times_on: List[float], times_off: List[float], goal: bool = True) -> str:
    """The share of a read path's time the CRC32C check takes: medians of the runs with
    the check on and off, timed in the same run (interleaved)."""
    on, off = _median(times_on), _median(times_off)
    cost = 100.0 * (on - off) / on
    text = (f"CRC32C check in {what}: {cost:.1f}% of the checked read's time (median {on * 1e3:.1f} ms "
            f"checked vs {off * 1e3:.1f} ms unchecked, {len(times_on)} runs each, interleaved, same run; "
            f"hardware CRC: {_crc_path()})")
    if goal:
        text += f"; goal < 10%: {'met' if cost < 10.0 else 'not met'}"
    return text


def _read_arrays_case(root: str, values: List[bytes], keys: Optional[List[bytes]], codec: str, runs: int,
                      bar: "Progress", finish: Callable[..., None]) -> None:
    """Log.iter_arrays over a log of 1000-record batches (not timed: writing it), timed
    ``runs`` times, verified: every record counted, offsets dense chunk after chunk,
    and in a sample of chunks (every 16th, kept until the run ends) the first and last
    records' values (and keys) compared with what was written; for uncompressed batches
    every chunk's buffer must be a view of the segment mapping (zero copy)."""
    messages = len(values)
    label = f"read_arrays {'uncompressed' if codec == 'none' else codec} {'keyed' if keys else 'keyless'}"
    d = os.path.join(root, f"read-arrays-{codec}-{'k' if keys else 'n'}")
    log = Log.open(d, segment_bytes=1 << 30)
    try:
        for i in range(0, messages, 1000):
            log.append_batches(build_batch(values[i:i + 1000], keys=keys[i:i + 1000] if keys else None,
                                           base_offset=i, compression=codec))
        if log.log_end_offset != messages:
            raise BenchmarkError(f"{label}: the log holds {log.log_end_offset} records, wrote {messages}")
        # uncompressed: also timed with check_crcs=False (runs interleaved), to show what
        # the CRC32C check costs where no decompression hides it
        checks = (True, False) if codec == "none" else (True,)
        timed: Dict[bool, List[float]] = {c: [] for c in checks}
        for _, check in itertools.product(range(runs), checks):
            times = timed[check]
            sample = []
            t0 = time.perf_counter()
            n = 0
            chunks = 0
            for arrays in log.iter_arrays(0, check_crcs=check):
                if int(arrays.offsets[0]) != n:
                    raise BenchmarkError(f"{label}: a chunk starts at {int(arrays.offsets[0])}, expected {n}")
                n += len(arrays)
                if int(arrays.offsets[-1]) != n - 1:
                    raise BenchmarkError(f"{label}: offsets not dense before {n}")
                if not chunks & 15:
                    sample.append(arrays)
                chunks += 1
            dt = time.perf_counter() - t0
            if n != messages:
                raise BenchmarkError(f"{label}: read {n} records, wrote {messages}")
            for arrays in sample:
                buf = arrays.buffer
                if codec == "none" and not (isinstance(buf, memoryview) and isinstance(buf.obj, mmap.mmap)):
                    raise BenchmarkError(f"{label}: a chunk's buffer is not a view of the segment mapping")
                for i in (0, len(arrays) - 1):
                    off = int(arrays.offsets[i])
                    p, ln = int(arrays.value_pos[i]), int(arrays.value_len[i])
                    if bytes(buf[p:p + ln]) != values[off]:
                        raise BenchmarkError(f"{label}: the value at offset {off} differs")
                    if keys is not None:
                        p, ln = int(arrays.key_pos[i]), int(arrays.key_len[i])
                        if bytes(buf[p:p + ln]) != keys[off]:
                            raise BenchmarkError(f"{label}: the key at offset {off} differs")
            times.append(dt)
            bar.step(label)
        finish(label, timed[True], messages, False)
        if codec == "none":
            finish(f"{label} (check_crcs=False)", timed[False], messages, False,
                   note=crc_cost_note(f"{label}", timed[True], timed[False]))
    finally:
        log.close()
        shutil.rmtree(d, ignore_errors=True)


def _weighted_percentile(samples: List[tuple], q: float) -> float:
    """``samples`` are (records, latency ns) per batch; the q-quantile over records, in ms."""
    if not samples:
        return float("nan")
    ordered = sorted(samples, key=lambda x: x[1])
    total = sum(n for n, _ in ordered)
    want = q * total
    seen = 0
    for n, lat in ordered:
        seen += n
        if seen >= want:
            return lat / 1e6
    return ordered[-1][1] / 1e6


def _bench_broker(data_dir: str) -> Any:
    """The embedded broker a producer row measures: 1 GiB segments (no roll in a run),
    one offsets partition, no background threads."""
    from pylog.broker import Broker

    return Broker.open(data_dir, {"log.segment.bytes": 1 << 30, "offsets.topic.num.partitions": 1},
                       background_threads=False)


#: batch.size of the tuned send() rows (the default is Kafka's 16384).
TUNED_BATCH_SIZE = 1 << 20


#: The header of the send() row with headers: a tracing id, as applications add.
BENCH_HEADERS = [("trace-id", b"4bf92f3577b34da6")]


def _broker_case(root: str, values: List[bytes], keys: Optional[List[bytes]], codec: str, runs: int,
                 partitions: int, bar: "Progress", emit: Callable[[BenchResult], None], c_msgs: float,
                 c_mb: float, size: int, batch_size: Optional[int] = None,
                 headers: Optional[List[Tuple[str, bytes]]] = None) -> None:
    """Producer.send per record -> Broker -> Consumer.poll_arrays, verified.  The
    produce row is timed from the first send() to the end of flush() (every record
    acknowledged); its note also gives the rate of the send() calls alone (until the
    last one returned).  ``batch_size``: the producer's batch.size (default Kafka's).
    ``headers``: each record is sent with them (keyless; checked on a sample read
    back), and there is no fixed-rate row."""
    from pylog.client import Consumer, Producer

    messages = len(values)
    label = f"{'keyed' if keys is not None else 'keyless'}, {codec}"
    if headers is not None:
        label += f", {len(headers)} header{'s' if len(headers) != 1 else ''}"
    settings: Dict[str, Any] = {"compression_type": codec}
    if batch_size is not None:
        label += f", batch.size={batch_size >> 20} MiB" if batch_size % (1 << 20) == 0 else \
            f", batch.size={batch_size}"
        settings["batch_size"] = batch_size
    p_times: List[float] = []
    s_times: List[float] = []
    c_times: List[float] = []
    p50s: List[float] = []
    p99s: List[float] = []
    for r in range(runs):
        d = os.path.join(root, f"broker-{'k' if keys else 'n'}-{codec}-{'h' if headers else ''}{r}")
        broker = _bench_broker(d)
        try:
            broker.create_topic("bench", partitions)
            producer = Producer(broker, **settings)
            producer.ack_latencies = []
            send = producer.send
            t0 = time.perf_counter()
            if headers is not None:
                for v in values:
                    send("bench", v, headers=headers)
            elif keys is None:
                for v in values:
                    send("bench", v)
            else:
                for v, k in zip(values, keys):
                    send("bench", v, key=k)
            s_times.append(time.perf_counter() - t0)
            producer.flush()
            p_times.append(time.perf_counter() - t0)
            lat = producer.ack_latencies
            producer.close()
            if sum(n for n, _ in lat) != messages:
                raise BenchmarkError(f"producer {label}: {sum(n for n, _ in lat)} records acked, sent {messages}")
            p50s.append(_weighted_percentile(lat, 0.50))
            p99s.append(_weighted_percentile(lat, 0.99))
            desc = broker.describe_topic("bench")
            stored = sum(p.log_end_offset for p in desc.partitions)
            if stored != messages:
                raise BenchmarkError(f"producer {label}: the topic holds {stored} records, sent {messages}")
            bar.step(f"produce {label}")

            consumer = Consumer(broker, auto_offset_reset="earliest", max_partition_fetch_bytes=8 << 20)
            consumer.assign([("bench", p) for p in range(partitions)])
            t0 = time.perf_counter()
            n = 0
            checked = 0
            while n < messages:
                arrays = consumer.poll_arrays(max_records=100_000)
                if len(arrays) == 0:
                    raise BenchmarkError(f"consumer {label}: stopped after {n} of {messages} records")
                n += len(arrays)
                if arrays.value_len[0] != size:
                    raise BenchmarkError(f"consumer {label}: a value of {arrays.value_len[0]} bytes")
                if codec == "none" and not checked and not all(
                        isinstance(b, memoryview) and isinstance(b.obj, mmap.mmap) for b in arrays.buffers):
                    raise BenchmarkError(f"consumer {label}: poll_arrays copied the records (zero copy expected)")
                checked += 1
            c_times.append(time.perf_counter() - t0)
            if n != messages:
                raise BenchmarkError(f"consumer {label}: read {n} records, wrote {messages}")
            # Sample: the values of one partition, in order, are a subsequence of what was sent.
            consumer.seek_to_beginning()
            one = consumer.poll_arrays(max_records=1000)
            sent = set(values)
            if not all(v in sent for v in one.values()):
                raise BenchmarkError(f"consumer {label}: a value read back was never sent")
            if headers is not None:
                first = next(broker.partition("bench", 0).log.records(0, 1), None)
                if first is not None and list(first.headers) != list(headers):
                    raise BenchmarkError(f"consumer {label}: headers read back {first.headers!r}")
            consumer.close()
            bar.step(f"consume {label}")
        finally:
            broker.close()
            shutil.rmtree(d, ignore_errors=True)
    sec = _median(p_times)
    res = BenchResult(f"produce send() {label}", messages, sec, messages / sec, messages * size / sec / 1e6,
                      runs, p_times, 100.0 * messages / sec / c_msgs, c_msgs, c_mb,
                      _median(p50s), _median(p99s))
    saturated = messages / sec
    calls = messages / _median(s_times)
    res.note = (f"send() {label}: {saturated:,.0f} msgs/s through flush(), the send() calls alone "
                f"{calls:,.0f} msgs/s")
    if headers is None:  # (the goal is for records as the other rows send them)
        res.note += (f" (goal {GOAL_SEND_MSGS_PER_S:,}: "
                     f"{'met' if saturated >= GOAL_SEND_MSGS_PER_S else 'not met'} through flush, "
                     f"{'met' if calls >= GOAL_SEND_MSGS_PER_S else 'not met'} by the calls)")
    emit(res)
    sec = _median(c_times)
    emit(BenchResult(f"consume poll_arrays {label}", messages, sec, messages / sec,
                     messages * size / sec / 1e6, runs, c_times, None, c_msgs, c_mb))
    if headers is not None:
        return
    _fixed_rate_case(root, values, keys, codec, runs, partitions, bar, emit, c_msgs, c_mb, size, saturated,
                     label, settings)


#: Seconds of sending the fixed-rate latency row aims at per run (fewer records than
#: the saturated rows when half the rate would take longer).
FIXED_RATE_SECONDS = 3.0
#: The issue 11 goals the send() rows are held to (reported, not asserted).
GOAL_SEND_MSGS_PER_S = 2_000_000
GOAL_P99_MS = 10.0


def _fixed_rate_case(root: str, values: List[bytes], keys: Optional[List[bytes]], codec: str, runs: int,
                     partitions: int, bar: "Progress", emit: Callable[[BenchResult], None], c_msgs: float,
                     c_mb: float, size: int, saturated: float, label: str, settings: Dict[str, Any]) -> None:
    """Producer.send at half the saturated rate measured just before, to show latency
    when the producer is not the bottleneck: p50/p99 over records of the time from their
    batch's first send to its acknowledgement (an upper bound of each record's
    send-to-ack).  One record per partition is sent and acknowledged first (the segment
    files exist).

    Pacing: every millisecond the records due are sent, then the loop sleeps to the
    next millisecond, as an application producing events as they come.  (A loop that
    spins on the clock between records never lets go of the GIL, and the producer's
    sender thread, which needs it for every batch, then gets it only once per
    interpreter switch interval, 5 ms: such a loop measures the GIL, not the producer.)"""
    from pylog.client import Producer

    rate = saturated / 2
    n = max(1, min(len(values), int(rate * FIXED_RATE_SECONDS)))
    times: List[float] = []
    p50s: List[float] = []
    p99s: List[float] = []
    for r in range(runs):
        d = os.path.join(root, f"fixed-{'k' if keys else 'n'}-{codec}-{r}")
        broker = _bench_broker(d)
        try:
            broker.create_topic("bench", partitions)
            producer = Producer(broker, **settings)
            # Warm-up: each partition's first append creates its segment files (hundreds
            # of ms for a 1 GiB segment), a broker's one-time cost, not the producer's.
            for part in range(partitions):
                producer.send("bench", values[0], partition=part)
            producer.flush()
            producer.ack_latencies = []
            send = producer.send
            clock = time.perf_counter
            t0 = clock()
            i = 0
            while i < n:
                due = min(n, int((clock() - t0) * rate) + 1)
                if keys is None:
                    while i < due:
                        send("bench", values[i])
                        i += 1
                else:
                    while i < due:
                        send("bench", values[i], key=keys[i])
                        i += 1
                left = (int((clock() - t0) * 1000) + 1) / 1000.0 - (clock() - t0)
                if left > 0:
                    time.sleep(left)
            producer.flush()
            times.append(clock() - t0)
            lat = producer.ack_latencies
            producer.close()
            acked = sum(k for k, _ in lat)
            stored = sum(p.log_end_offset for p in broker.describe_topic("bench").partitions) - partitions
            if acked != n or stored != n:
                raise BenchmarkError(f"fixed-rate {label}: sent {n}, {acked} acknowledged, {stored} stored")
            p50s.append(_weighted_percentile(lat, 0.50))
            p99s.append(_weighted_percentile(lat, 0.99))
            bar.step(f"produce {label} at half rate")
        finally:
            broker.close()
            shutil.rmtree(d, ignore_errors=True)
    sec = _median(times)
    p99 = _median(p99s)
    res = BenchResult(f"produce send() {label} @50% rate", n, sec, n / sec, n * size / sec / 1e6, runs, times,
                      100.0 * n / sec / c_msgs, c_msgs, c_mb, _median(p50s), p99)
    res.note = (f"send() {label}: p99 {p99:.1f} ms at {n / sec:,.0f} msgs/s, half the saturated rate "
                f"(goal <= {GOAL_P99_MS:g} ms: {'met' if p99 <= GOAL_P99_MS else 'not met'})")
    emit(res)


def _send_batch_case(root: str, values: List[bytes], runs: int, partitions: int, bar: "Progress",
                     emit: Callable[[BenchResult], None], c_msgs: float, c_mb: float, size: int) -> None:
    """Producer.send_batch (acks=1, keyless) of all the values in one call -> Broker,
    timed until the future gives the offsets; verified: offsets returned, records stored
    per partition, a sample of values read back at the offsets returned."""
    from pylog.client import Producer

    messages = len(values)
    joined = np.frombuffer(b"".join(values), dtype=np.uint8)
    lengths = np.fromiter(map(len, values), dtype=np.int32, count=messages)
    times: List[float] = []
    for r in range(runs):
        d = os.path.join(root, f"broker-batch-{r}")
        broker = _bench_broker(d)
        try:
            broker.create_topic("bench", partitions)
            producer = Producer(broker, acks=1)
            t0 = time.perf_counter()
            fut = producer.send_batch("bench", joined, lengths=lengths)
            offsets = fut.result()
            times.append(time.perf_counter() - t0)
            producer.close()
            desc = broker.describe_topic("bench")
            stored = sum(p.log_end_offset for p in desc.partitions)
            if stored != messages or len(offsets) != messages or int(offsets.min()) < 0:
                raise BenchmarkError(f"send_batch: the topic holds {stored} records, {len(offsets)} offsets "
                                     f"returned, sent {messages}")
            for i in (0, messages // 2, messages - 1):
                part, off = int(fut.partitions[i]), int(offsets[i])
                rec = next(broker.partition("bench", part).log.records(off, off + 1))
                if rec.value != values[i]:
                    raise BenchmarkError(f"send_batch: value of record {i} differs at {part}/{off}")
            bar.step("produce send_batch")
        finally:
            broker.close()
            shutil.rmtree(d, ignore_errors=True)
    sec = _median(times)
    emit(BenchResult("produce send_batch() keyless, acks=1", messages, sec, messages / sec,
                     messages * size / sec / 1e6, runs, times, 100.0 * messages / sec / c_msgs, c_msgs, c_mb))


def _replication_cases(root: str, values: List[bytes], cases: List[tuple], runs: int, partitions: int,
                       bar: "Progress", emit: Callable[[BenchResult], None], c_msgs: float, c_mb: float,
                       size: int) -> None:
    """Producer.send per record into an in-process 3-broker LocalCluster: RF=1 against
    RF=3 with acks=1 and acks=all, verified by the leaders' high watermarks and a sample."""
    from pylog.client import Consumer, Producer
    from pylog.cluster import LocalCluster

    messages = len(values)
    base: Optional[float] = None
    for rf, acks in cases:
        times: List[float] = []
        for r in range(runs):
            d = os.path.join(root, f"repl-rf{rf}-{acks}-{r}")
            cluster = LocalCluster.open(d, brokers=3, racks=["r1", "r2", "r3"],
                                        config={"log.segment.bytes": 1 << 30})
            try:
                cluster.create_topic("bench", partitions, replication_factor=rf,
                                     config={"min.insync.replicas": min(2, rf)})
                producer = Producer(cluster, acks=acks)
                send = producer.send
                t0 = time.perf_counter()
                for v in values:
                    send("bench", v)
                producer.flush()
                times.append(time.perf_counter() - t0)
                producer.close()
                # acks=1 returns before the followers copy: let replication finish.
                deadline = time.monotonic() + 60
                committed = 0
                while time.monotonic() < deadline:
                    committed = sum(p.high_watermark for p in cluster.describe_topic("bench").partitions)
                    if committed >= messages:
                        break
                    time.sleep(0.05)
                if committed != messages:
                    raise BenchmarkError(f"RF={rf} acks={acks}: {committed} records committed, sent {messages}")
                c = Consumer(cluster, auto_offset_reset="earliest")
                c.assign([("bench", 0)])
                sample = c.poll_arrays(max_records=1000)
                if len(sample) == 0 or not set(sample.values()) <= set(values):
                    raise BenchmarkError(f"RF={rf} acks={acks}: read-back sample differs")
                c.close()
            finally:
                cluster.close()
                shutil.rmtree(d, ignore_errors=True)
            bar.step(f"replicated produce RF={rf} acks={acks}")
        sec = _median(times)
        mps = messages / sec
        if rf == 1:
            base = mps
        name = f"replicated RF={rf} acks={acks}" + (f" ({100 * mps / base:.0f}% of RF=1)" if base and rf > 1 else "")
        emit(BenchResult(name, messages, sec, mps, messages * size / sec / 1e6, runs, times,
                         100.0 * mps / c_msgs, c_msgs, c_mb))


def format_table(results: List[BenchResult], size: int) -> str:
    cpu = any(r.server_cpu_s is not None for r in results)
    head = (f"{'workload':<42}{'messages':>10}{'median s':>10}{'msgs/s':>14}{'MB/s':>10}{'% ceiling':>11}"
            f"{'p50 ms':>9}{'p99 ms':>9}" + (f"{'srv cpu s':>11}{'cli cpu s':>11}" if cpu else ""))
    lines = [head, "-" * len(head)]

    def num(x: Optional[float], fmt: str) -> str:
        return "" if x is None or x != x else format(x, fmt)

    for r in results:
        pct = f"{r.pct_of_ceiling:.1f}" if r.pct_of_ceiling is not None else ""
        line = (f"{r.name:<42}{r.messages:>10,}{r.seconds:>10.3f}{r.msgs_per_s:>14,.0f}"
                f"{r.mb_per_s:>10.1f}{pct:>11}{num(r.latency_p50_ms, '.1f'):>9}{num(r.latency_p99_ms, '.1f'):>9}")
        if cpu:
            line += f"{num(r.server_cpu_s, '.2f'):>11}{num(r.client_cpu_s, '.2f'):>11}"
        lines.append(line)
    lines.extend(r.note for r in results if r.note)
    lines.append(f"({size}-byte values; MB/s counts value bytes, the ceiling's counts log bytes; "
                 f"medians of {results[0].runs if results else 0} runs)")
    return "\n".join(lines)


def result_dict(r: BenchResult) -> Dict[str, object]:
    return asdict(r)

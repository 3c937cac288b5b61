"""Log.read_arrays / Log.iter_arrays (issue 11 point 4): records as numpy columns whose
buffer is a view of the segment mapping for uncompressed batches (no payload copy), one
decompressed buffer for compressed ones; chunks of one segment, continued from
``next_offset``; results that keep their bytes after retention, truncation, compaction
and close (each in a child process: tests/storage/read_arrays_scenarios.py)."""
from __future__ import annotations

import mmap
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from pylog import Log
from pylog._native import ffi, lib
from pylog.errors import InvalidArgument, LogClosed, OffsetOutOfRange
from pylog.records import RecordBatch, build_batch, compress, decode_batches, decode_records, decompress, join_views
from tests.storage.helpers import T0, FakeClock
from tests.storage.read_arrays_scenarios import SCENARIOS

REPO = Path(__file__).resolve().parents[2]


def open_log(path, **kw):
    kw.setdefault("segment_index_bytes", 4096)
    kw.setdefault("retention_ms", -1)
    return Log.open(path, clock=FakeClock(T0), **kw)


def append(log, n, *, codec="none", keyed=False, headers=False, size=20):
    first = log.log_end_offset
    offs = range(first, first + n)
    values = [(b"v%08d" % o).ljust(size, b".") for o in offs]
    keys = [b"k%d" % (o % 5) for o in offs] if keyed else None
    hdrs = [[("o", b"%d" % o)] for o in offs] if headers else None
    log.append_batches(build_batch(values, keys=keys, headers=hdrs, base_offset=first,
                                   timestamps=[T0 + o for o in offs], compression=codec))
    return values


def rows(arrays):
    return list(zip(arrays.offsets.tolist(), arrays.timestamps.tolist(), arrays.keys(), arrays.values(),
                    arrays.headers()))


def expected(log, start=None, end=None):
    return [(r.offset, r.timestamp, r.key, r.value, r.headers) for r in log.records(start, end)]


def is_segment_view(buf) -> bool:
    return isinstance(buf, memoryview) and isinstance(buf.obj, mmap.mmap)


# ------------------------------------------------------------------ zero copy
def test_uncompressed_records_are_a_view_of_the_segment_mapping(tmp_path):
    log = open_log(tmp_path / "z-0")
    for _ in range(10):
        append(log, 50, keyed=True)
    a = log.read_arrays(0)
    assert len(a) == 500 and a.next_offset == 500
    assert is_segment_view(a.buffer), type(a.buffer)
    assert rows(a) == expected(log)
    # the value positions point into the mapping itself: the bytes there are the values
    seg_view = log.segments[0].view(0, log.size_bytes)
    with ffi.from_buffer("uint8_t[]", seg_view) as seg_p, ffi.from_buffer("uint8_t[]", a.buffer) as buf_p:
        assert int(ffi.cast("uintptr_t", buf_p)) == int(ffi.cast("uintptr_t", seg_p))
    i = 123
    p, n = int(a.value_pos[i]), int(a.value_len[i])
    assert bytes(seg_view[p:p + n]) == b"v%08d" % i + b"." * 11
    log.close()


def test_records_below_offset_in_the_first_batch_are_left_out(tmp_path):
    log = open_log(tmp_path / "z-0")
    for codec in ("none", "none", "zstd", "zstd"):
        append(log, 10, codec=codec)
    a = log.read_arrays(13)  # inside an uncompressed batch
    assert a.offsets.tolist() == list(range(13, 20)) and rows(a) == expected(log, 13, 20)
    a = log.read_arrays(27)  # inside a zstd batch
    assert a.offsets.tolist() == list(range(27, 40)) and rows(a) == expected(log, 27)
    log.close()


def test_max_offset_and_max_records(tmp_path):
    log = open_log(tmp_path / "z-0")
    for _ in range(5):
        append(log, 10)
    a = log.read_arrays(3, max_offset=25)
    assert a.offsets.tolist() == list(range(3, 25)) and a.next_offset == 25
    a = log.read_arrays(3, max_records=7)
    assert a.offsets.tolist() == list(range(3, 10)) and a.next_offset == 10
    assert rows(a) == expected(log, 3, 10)
    a = log.read_arrays(3, max_offset=3)
    assert len(a) == 0 and a.next_offset == 3
    a = log.read_arrays(log.log_end_offset)
    assert len(a) == 0 and a.next_offset == log.log_end_offset
    log.close()


def test_one_call_reads_one_segment_and_next_offset_continues(tmp_path):
    log = open_log(tmp_path / "z-0", segment_bytes=2048)
    for _ in range(40):
        append(log, 5, keyed=True)
    assert len(log.segments) >= 4
    got, pos, calls = [], 0, 0
    while pos < log.log_end_offset:
        a = log.read_arrays(pos)
        bases = {s.base_offset for s in log.segments}
        seg_of = max(b for b in bases if b <= int(a.offsets[0]))
        nxt_seg = min([b for b in bases if b > seg_of] or [log.log_end_offset])
        assert int(a.offsets[-1]) < nxt_seg, "one call crossed a segment boundary"
        got += rows(a)
        assert a.next_offset > pos
        pos = a.next_offset
        calls += 1
    assert got == expected(log) and calls == len(log.segments)
    assert [r for a in log.iter_arrays() for r in rows(a)] == expected(log)
    assert [r for a in log.iter_arrays(37, 151) for r in rows(a)] == expected(log, 37, 151)
    log.close()


def test_max_bytes_bounds_a_call_but_returns_at_least_one_batch(tmp_path):
    log = open_log(tmp_path / "z-0")
    for codec in ("none", "zstd"):
        for _ in range(20):
            append(log, 10, codec=codec, size=100)
    a = log.read_arrays(0, max_bytes=1)
    assert a.offsets.tolist() == list(range(10)) and a.next_offset == 10
    a = log.read_arrays(200, max_bytes=1)  # zstd: one batch decompressed
    assert a.offsets.tolist() == list(range(200, 210)) and a.next_offset == 210
    a = log.read_arrays(200, max_bytes=3000)  # ~1100 bytes decompressed per batch
    assert len(a) == 30 and a.next_offset == 230
    chunks = list(log.iter_arrays(max_bytes=2500))
    assert [r for a in chunks for r in rows(a)] == expected(log)
    assert all(len(a) <= 30 for a in chunks)
    log.close()


def test_runs_of_uncompressed_batches_stay_zero_copy_among_compressed_ones(tmp_path):
    log = open_log(tmp_path / "z-0")
    for codec in ("none", "none", "zstd", "gzip", "none", "zstd"):
        append(log, 10, codec=codec, keyed=True, headers=codec == "gzip")
    chunks = list(log.iter_arrays())
    assert [(int(a.offsets[0]), len(a)) for a in chunks] == [(0, 20), (20, 20), (40, 10), (50, 10)]
    assert [is_segment_view(a.buffer) for a in chunks] == [True, False, True, False]
    assert [r for a in chunks for r in rows(a)] == expected(log)
    log.close()


# ------------------------------------------------------------------ compressed
@pytest.mark.parametrize("codec", ["zstd", "gzip"])
def test_compressed_batches_decompress_into_one_buffer(tmp_path, codec):
    log = open_log(tmp_path / "c-0")
    for _ in range(12):
        append(log, 25, codec=codec, keyed=True, headers=True)
    a = log.read_arrays(5)
    assert a.chunks() == [a.buffer], "the records are not in one buffer"
    assert rows(a) == expected(log, 5)
    # every batch's records section is in it, in order, with nothing between them
    sections = b"".join(decompress(b.compression, bytes(b.buffer[61:])) for b in log.read(0, 1 << 30))
    assert bytes(a.buffer) == sections
    log.close()


def _two_frame_zstd_batch(values, base_offset):
    """A zstd batch whose records section is two frames (each stating its own size)."""
    plain = build_batch(values, base_offset=base_offset, base_timestamp=T0)
    section = plain[61:]
    packed = compress(4, section[:len(section) // 2]) + compress(4, section[len(section) // 2:])
    info = ffi.new("pl_batch_info *")
    assert lib.pl_batch_parse_header(plain, len(plain), info) == lib.PL_OK
    info.attributes = (info.attributes & ~7) | 4
    out = ffi.new("uint8_t[]", 61 + len(packed))
    ffi.memmove(out + 61, packed, len(packed))
    total = lib.pl_batch_seal(out, len(out), len(packed), info)
    assert total > 0
    return ffi.buffer(out, total)[:]


def test_a_zstd_section_of_several_frames_falls_back_and_decodes(tmp_path):
    values = [b"value-%d" % i for i in range(40)]
    batch = _two_frame_zstd_batch(values, 0)
    other = build_batch([b"x", b"y"], base_offset=40, base_timestamp=T0, compression="zstd")
    arrays = decode_records(batch + other)
    assert arrays.values() == values + [b"x", b"y"] and arrays.next_offset == 42
    assert decode_batches([RecordBatch(batch), RecordBatch(other)]).values() == values + [b"x", b"y"]
    log = open_log(tmp_path / "f-0")
    log.append_batches(batch, assign_offsets=False)
    log.append_batches(other, assign_offsets=False)
    assert log.read_arrays(3).values() == values[3:] + [b"x", b"y"]
    log.close()


# ------------------------------------------------------------------ join_views
def test_join_views_copies_nothing_for_adjacent_views():
    data = bytes(range(256)) * 4
    mv = memoryview(data)
    joined = join_views([mv[10:20], mv[20:100], mv[100:101]])
    assert isinstance(joined, memoryview) and joined.obj is data and bytes(joined) == data[10:101]
    apart = join_views([mv[10:20], mv[30:40]])
    assert not isinstance(apart, memoryview) and apart == data[10:20] + data[30:40]
    assert join_views([b"ab", b"cd"]) == b"abcd"
    assert join_views([mv[5:9]]).tobytes() == data[5:9]


def test_the_embedded_fetch_path_decodes_log_batches_without_joining(tmp_path):
    log = open_log(tmp_path / "j-0")
    for _ in range(6):
        append(log, 10)
    batches = log.read(0, 1 << 20)
    assert len(batches) == 6
    joined = join_views([b.buffer for b in batches])
    assert is_segment_view(joined)
    assert rows(decode_records(joined, 7)) == expected(log, 7)
    log.close()


# ------------------------------------------------------------------ errors
def test_errors(tmp_path):
    log = open_log(tmp_path / "e-0")
    append(log, 10)
    with pytest.raises(OffsetOutOfRange):
        log.read_arrays(11)
    with pytest.raises(OffsetOutOfRange):
        log.read_arrays(-1)
    for bad in (0, -5, 1.5, None, True):
        with pytest.raises(InvalidArgument):
            log.read_arrays(0, max_bytes=bad)
    with pytest.raises(InvalidArgument):
        log.read_arrays(0, max_records=0)
    with pytest.raises(OffsetOutOfRange):
        list(log.iter_arrays(12))
    log.close()
    with pytest.raises(LogClosed):
        log.read_arrays(0)


# ------------------------------------------------------------------ model
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(["none", "none", "zstd", "gzip"]), st.integers(1, 30),
                          st.booleans(), st.booleans()), min_size=1, max_size=25),
       st.integers(0, 10**6), st.integers(1, 5000), st.integers(0, 10**6), st.sampled_from([None, 1, 7, 1000]))
def test_chunks_read_back_exactly_the_log(tmp_path_factory, batches, start_seed, max_bytes, end_seed, max_records):
    """Any mix of codecs, keys and headers over several segments, from any offset to any
    end, in chunks of any size: the chunks concatenate to exactly log.records()."""
    log = open_log(tmp_path_factory.mktemp("m") / "m-0", segment_bytes=1500)
    for codec, n, keyed, headers in batches:
        append(log, n, codec=codec, keyed=keyed, headers=headers)
    end = log.log_end_offset
    start = start_seed % end
    stop = start + end_seed % (end - start + 1)
    want = expected(log, start, stop)
    got, pos = [], start
    while pos < stop:
        a = log.read_arrays(pos, stop, max_bytes=max_bytes, max_records=max_records)
        assert a.next_offset > pos
        if max_records is not None:
            assert len(a) <= max_records
        got += rows(a)
        pos = a.next_offset
    assert got == want
    assert [r for a in log.iter_arrays(start, stop, max_bytes=max_bytes) for r in rows(a)] == want
    log.close()


# ------------------------------------------------------------------ view lifetime
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_read_arrays_results_survive(tmp_path, scenario):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "tests.storage.read_arrays_scenarios", scenario, str(tmp_path)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    if proc.returncode < 0:
        pytest.fail(f"{scenario}: the child died of {signal.Signals(-proc.returncode).name}\n{proc.stderr[-3000:]}")
    assert proc.returncode == 0, f"{scenario}:\n{proc.stderr[-3000:]}"
    assert proc.stdout.strip().endswith("OK " + scenario)

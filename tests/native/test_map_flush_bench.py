"""pl_map_detach, pl_segment_flush, pl_bench_copy_ceiling, pl_bench_write_ceiling."""
from __future__ import annotations

import errno
import mmap
import os

from pylog._native import ffi, lib
from pl_native_helpers import make_batch

PAGE = mmap.PAGESIZE


def _map(fd, size):
    return mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)


def test_map_detach_keeps_view_bytes_while_file_is_rewritten(tmp_path):
    size = PAGE * 8
    path = tmp_path / "f"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.posix_fallocate(fd, 0, size)
        a = _map(fd, size)
        a[:] = bytes(i % 251 for i in range(size))
        start, stop = PAGE + 100, 5 * PAGE - 7  # unaligned on purpose
        view = memoryview(a)[start:stop]
        want = bytes(view)
        ptr = ffi.from_buffer("uint8_t[]", a)
        assert lib.pl_map_detach(ptr + start, stop - start) == lib.PL_OK
        ffi.release(ptr)
        # rewrite the whole file through another mapping and through write()
        b = _map(fd, size)
        b[:] = b"\xab" * size
        b.flush()
        os.pwrite(fd, b"\xcd" * PAGE, 2 * PAGE)
        assert bytes(view) == want
        # pages outside the detached range (rounded to pages) still share the file
        assert a[0] == 0xAB and a[size - 1] == 0xAB
        # the whole detached page range kept its old bytes, the rest did not
        assert a[PAGE] == PAGE % 251 and a[5 * PAGE - 1] == (5 * PAGE - 1) % 251
        assert a[5 * PAGE] == 0xAB
        del view
        a.close()
        b.close()
    finally:
        os.close(fd)


def test_map_detach_arguments():
    assert lib.pl_map_detach(ffi.NULL, 10) == lib.PL_E_ARG
    buf = ffi.new("uint8_t[]", 16)
    assert lib.pl_map_detach(buf, 0) == lib.PL_OK


def test_flush_advances_counters(make_seg):
    s = make_seg(interval=0)
    assert lib.pl_segment_flush(s.c) == lib.PL_OK  # nothing to do
    for _ in range(5):
        assert s.append(make_batch([b"x" * 100]))[0] == lib.PL_OK
    assert lib.pl_segment_flush(s.c) == lib.PL_OK
    c = s.c
    assert (c.flushed_size, c.flushed_index_entries, c.flushed_timeindex_entries) == (
        c.log_size, c.index_entries, c.timeindex_entries)
    assert s.append(make_batch([b"y"]))[0] == lib.PL_OK
    assert c.flushed_size < c.log_size
    assert lib.pl_segment_flush(c) == lib.PL_OK
    assert c.flushed_size == c.log_size


def test_flush_reports_io_error(tmp_path):
    fd = os.open(tmp_path / "g", os.O_RDWR | os.O_CREAT, 0o644)
    os.posix_fallocate(fd, 0, PAGE * 4)
    m = _map(fd, PAGE * 4)
    p = ffi.from_buffer("uint8_t[]", m)
    addr = int(ffi.cast("uintptr_t", p))
    ffi.release(p)
    m.close()
    os.close(fd)
    seg = ffi.new("pl_segment *")
    seg.log = ffi.cast("uint8_t *", addr)  # no longer mapped
    seg.log_capacity = PAGE * 4
    seg.log_size = PAGE * 2
    assert lib.pl_segment_flush(seg) == lib.PL_E_IO
    assert ffi.errno == errno.ENOMEM
    assert seg.flushed_size == 0


def _model(dst_cap, src, piece, total):
    """What the ceiling loops do, in Python: (dst contents, the writes as (at, bytes))."""
    dst, writes = bytearray(dst_cap), []
    pos = copied = frm = 0
    most = min(piece, dst_cap)
    while copied < total:
        n = min(most, total - copied, len(src) - frm)
        if dst_cap - pos < n:
            pos = 0
        dst[pos:pos + n] = src[frm:frm + n]
        writes.append((copied, src[frm:frm + n]))
        pos, copied = pos + n, copied + n
        frm = 0 if frm + n == len(src) else frm + n
    return bytes(dst), writes


def test_bench_copy_ceiling(tmp_path):
    fd = os.open(tmp_path / "b", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.posix_fallocate(fd, 0, 100)
        m = _map(fd, 100)
        dst = ffi.from_buffer("uint8_t[]", m)
        src = bytes(range(1, 31))
        assert lib.pl_bench_copy_ceiling(dst, 100, src, 30, 30, 200) == 200
        # 3 copies fill 90 bytes, the 4th wraps to 0 (as a roll), the last 20 too
        assert bytes(m[:20]) == src[:20] and bytes(m[30:90]) == src * 2
        assert lib.pl_bench_copy_ceiling(dst, 100, src, 30, 30, 0) == 0
        assert lib.pl_bench_copy_ceiling(dst, 0, src, 30, 30, 10) == lib.PL_E_ARG
        assert lib.pl_bench_copy_ceiling(dst, 100, src, 0, 30, 10) == lib.PL_E_ARG
        assert lib.pl_bench_copy_ceiling(dst, 100, src, 30, 0, 10) == lib.PL_E_ARG
        big = bytes(range(250))
        for piece, total in ((1000, 1000), (40, 250), (33, 777), (7, 100)):
            m[:] = bytes(100)
            assert lib.pl_bench_copy_ceiling(dst, 100, big, 250, piece, total) == total
            assert bytes(m) == _model(100, big, piece, total)[0], (piece, total)
        ffi.release(dst)
        m.close()
    finally:
        os.close(fd)


def test_bench_write_ceiling(tmp_path):
    fd = os.open(tmp_path / "w", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        src = bytes(range(1, 31))
        assert lib.pl_bench_write_ceiling(fd, src, 30, 30, 200) == 200
        assert os.pread(fd, 300, 0) == (src * 7)[:200]  # one src after another, the last cut
        big = bytes(range(250))
        assert lib.pl_bench_write_ceiling(fd, big, 250, 64, 600) == 600
        assert os.pread(fd, 700, 0) == (big * 3)[:600]  # src in order, in pieces
        assert lib.pl_bench_write_ceiling(fd, src, 30, 30, 0) == 0
        assert lib.pl_bench_write_ceiling(fd, src, 0, 30, 10) == lib.PL_E_ARG
        assert lib.pl_bench_write_ceiling(fd, src, 30, 0, 10) == lib.PL_E_ARG
        assert lib.pl_bench_write_ceiling(-1, src, 30, 30, 10) == lib.PL_E_ARG
    finally:
        os.close(fd)
    ro = os.open(tmp_path / "w", os.O_RDONLY)
    try:
        assert lib.pl_bench_write_ceiling(ro, src, 30, 30, 10) == lib.PL_E_IO
        assert ffi.errno == errno.EBADF
    finally:
        os.close(ro)


def _vm_flags(addr: int) -> list:
    """VmFlags of this process's mapping that contains ``addr`` (from /proc/self/smaps)."""
    current = None
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()[0]
            if "-" in head and ":" not in head:
                lo, hi = (int(x, 16) for x in head.split("-"))
                current = lo <= addr < hi
            elif head == "VmFlags:" and current:
                return line.split()[1:]
    raise AssertionError(f"no mapping contains {addr:#x}")


def test_map_file_advises_no_readahead(tmp_path):
    # An index is binary searched and appended a few bytes at a time: a first fault
    # must not read ahead (zeroing megabytes of page cache over a hole).
    path = tmp_path / "x.index"
    path.write_bytes(b"\0" * (1 << 20))
    fd = os.open(path, os.O_RDWR)
    try:
        out = ffi.new("uint8_t **")
        assert lib.pl_map_file(fd, 1 << 20, out) == lib.PL_OK
        try:
            addr = int(ffi.cast("uintptr_t", out[0]))
            assert "rr" in _vm_flags(addr)  # MADV_RANDOM
            out[0][4096] = 7
            assert out[0][4096] == 7
        finally:
            assert lib.pl_unmap_file(out[0], 1 << 20) == lib.PL_OK
    finally:
        os.close(fd)
    assert path.read_bytes()[4096] == 7

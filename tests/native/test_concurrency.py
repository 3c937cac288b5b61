"""One writer appending while readers read, look up and search (GIL released in C)."""
from __future__ import annotations

import struct
import threading

from pylog._native import ffi, lib
from pl_native_helpers import crc32c, make_batch

N_BATCHES = 1500
N_READERS = 4


def _batch(i: int) -> bytes:
    n = 1 + i % 3
    return make_batch([struct.pack(">I", i) * (1 + i % 5)] * n, base_timestamp=1000 + i)


def _records(i: int) -> int:
    return 1 + i % 3


def test_writer_and_readers(make_seg):
    s = make_seg(interval=200, index_entries=4096, log_bytes=1 << 20)
    batches = [_batch(i) for i in range(N_BATCHES)]
    firsts = []
    off = 0
    for i in range(N_BATCHES):
        firsts.append(off)
        off += _records(i)
    final_next = off
    index_of = {f: i for i, f in enumerate(firsts)}
    errors: list[str] = []
    log = s.log

    def writer():
        try:
            for b in batches:
                st, _ = s.append(b, epoch=2)
                if st != lib.PL_OK:
                    errors.append(f"append {st}")
                    return
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(repr(exc))

    def reader(k: int):
        try:
            snap = ffi.new("pl_segment_snapshot *")
            positions = ffi.new("uint64_t[]", 64)
            n = ffi.new("uint32_t *")
            end = ffi.new("uint64_t *")
            pos_out = ffi.new("uint64_t *")
            off = 0
            while off < final_next and not errors:
                lib.pl_segment_snapshot_get(s.c, snap)
                st = lib.pl_segment_read(s.c, off, 1000 + 300 * k, 1 << 62, positions, 64, n, end)
                if st != lib.PL_OK:
                    errors.append(f"read {st}")
                    return
                if snap.next_offset > off and n[0] == 0:
                    errors.append(f"offset {off} < snapshot next {snap.next_offset} but nothing read")
                    return
                expect_pos = positions[0] if n[0] else 0
                for j in range(n[0]):
                    p = positions[j]
                    if p != expect_pos:
                        errors.append(f"positions not contiguous at {p}")
                        return
                    head = bytes(log[p: p + 61])
                    base, blen, epoch, magic, crc = struct.unpack_from(">qiibI", head)
                    raw = bytes(log[p: p + 12 + blen])
                    i = index_of.get(base)
                    if base != off or i is None or epoch != 2 or magic != 2:
                        errors.append(f"bad header at {p}: base {base} want {off}")
                        return
                    if crc32c(raw[21:]) != crc or raw[16:] != batches[i][16:] or raw[8:12] != batches[i][8:12]:
                        errors.append(f"incomplete batch {i} at {p}")
                        return
                    off = base + _records(i)
                    expect_pos = p + len(raw)
                if n[0] and end[0] != expect_pos:
                    errors.append("end mismatch")
                    return
                if n[0] and k % 2 == 0:
                    # the last batch seen: lookup and time search must find it
                    st = lib.pl_segment_lookup(s.c, off - 1, pos_out)
                    if st != lib.PL_OK or pos_out[0] != positions[n[0] - 1]:
                        errors.append(f"lookup {st}")
                        return
                    st, tpos, toff = s.find_ts(1000 + i)
                    if (st, tpos, toff) != (lib.PL_OK, positions[n[0] - 1], firsts[i]):
                        errors.append(f"find_timestamp {st} {tpos} {toff}")
                        return
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=reader, args=(k,)) for k in range(N_READERS)]
    threads.append(threading.Thread(target=writer))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)  # a hang guard, not a timing assertion
        assert not t.is_alive()
    assert errors == []
    assert s.c.next_offset == final_next


def test_c_level_protocol_under_thread_sanitizer(tmp_path, real_batch_c):
    """The same scenario in C with pthreads under TSan (Python itself cannot run
    under TSan here): no data race, readers see only whole, published batches."""
    import os
    import platform
    import shutil
    import subprocess
    from pathlib import Path

    import pytest

    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler")
    root = Path(os.path.abspath(__file__)).parents[2]
    csrc = root / "csrc"
    exe = tmp_path / "harness"
    cmd = [cc, "-std=c11", "-D_GNU_SOURCE", "-g", "-O1", "-fsanitize=thread", f"-I{csrc}",
           str(Path(__file__).with_name("tsan_segment_harness.c"))]
    cmd += [str(csrc / f) for f in ("segment.c", "index.c", "batch.c", "crc32c.c")]
    cmd += ["-o", str(exe), "-lpthread"]
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "ASAN_OPTIONS")}
    built = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if built.returncode != 0:
        pytest.skip(f"cannot build with -fsanitize=thread: {built.stderr[-500:]}")
    # TSan needs a predictable address space layout on recent kernels.
    run = [str(exe)]
    if shutil.which("setarch"):
        run = ["setarch", platform.machine(), "-R"] + run
    probe = subprocess.run(run, capture_output=True, text=True, timeout=600, env=env)
    if probe.returncode not in (0, 1, 66) or "ThreadSanitizer: unexpected memory mapping" in probe.stderr:
        pytest.skip(f"TSan cannot run here (status {probe.returncode})")
    assert "WARNING: ThreadSanitizer" not in probe.stderr, probe.stderr[-4000:]
    assert probe.returncode == 0, probe.stderr[-4000:]

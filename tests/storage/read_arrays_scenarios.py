"""Log.read_arrays results kept across log changes (Invariant 3), one scenario per child
process (test_read_arrays.py runs them) so that a segfault or SIGBUS fails one test
instead of killing pytest.

Every scenario fills a log with uncompressed and zstd batches (keyed, some with
headers), takes read_arrays chunks of every segment (from each segment's start and from
the middle of a batch), keeps copies of what they show (offsets, keys, values, headers,
the buffer's bytes), then changes the log: retention, delete_records, truncation and a
rewrite of the same file positions, compaction, close.  Afterwards every chunk must show
exactly what it showed, or raise a clean Python exception; never other bytes.
Run: python -m tests.storage.read_arrays_scenarios <scenario> <directory>.
"""
from __future__ import annotations

import gc
import sys
from pathlib import Path
from typing import Callable, Dict, List

from pylog import Log
from pylog.records import build_batch
from tests.storage.helpers import T0, FakeClock

SEG = 4096


class Chunks:
    """read_arrays results and copies of what they showed when taken."""

    def __init__(self) -> None:
        self.items: List[tuple] = []
        self.raised = 0

    def take(self, log: Log) -> None:
        for seg in log.segments:
            start = max(seg.base_offset, log.log_start_offset)
            if start >= log.log_end_offset:
                continue
            for off in (start, start + 1):
                if off >= log.log_end_offset:
                    continue
                a = log.read_arrays(off, max_bytes=1 << 20)
                if not len(a):
                    continue
                self.items.append((a, self.show(a)))
        assert self.items, "no chunks taken"
        assert any(isinstance(a.buffer, memoryview) and type(a.buffer.obj).__name__ == "mmap"
                   for a, _ in self.items), "no chunk is a view of a segment mapping"

    @staticmethod
    def show(a) -> tuple:
        return (a.offsets.tolist(), a.timestamps.tolist(), a.keys(), a.values(), a.headers(),
                bytes(a.buffer))

    def check(self, what: str) -> None:
        for a, shown in self.items:
            try:
                now = self.show(a)
            except AssertionError:
                raise
            except Exception:
                self.raised += 1
                continue
            assert now == shown, f"{what}: a read_arrays chunk from offset {shown[0][0]} changed"


def fill(log: Log, n_batches: int, salt: bytes, keys: int = 7) -> None:
    """Batches of 4 records, every third one zstd, every fifth with headers."""
    for i in range(n_batches):
        first = log.log_end_offset
        offs = range(first, first + 4)
        values = [b"%s-%06d-" % (salt, o) + salt * 30 for o in offs]
        ks = [b"k%d" % (o % keys) for o in offs]
        headers = [[("h", b"%d" % o)] for o in offs] if i % 5 == 4 else None
        log.append_batches(build_batch(values, keys=ks, headers=headers, base_offset=first,
                                       timestamps=[T0 + o for o in offs],
                                       compression="zstd" if i % 3 == 2 else "none"))


def open_(path: Path, clock: FakeClock = None, **kw) -> Log:
    kw.setdefault("retention_ms", -1)
    return Log.open(path, clock=clock or FakeClock(T0), segment_bytes=SEG, segment_index_bytes=4096, **kw)


# ------------------------------------------------------------------ scenarios
def retention(path: Path) -> None:
    clock = FakeClock(T0)
    log = open_(path, clock=clock, retention_ms=1000)
    fill(log, 60, b"A")
    assert len(log.segments) >= 4
    c = Chunks()
    c.take(log)
    clock.advance(10**9)
    assert log.enforce_retention() >= 3
    c.check("after retention deleted the segments")
    fill(log, 200, b"B")  # new segments, likely on the freed blocks
    c.check("after retention and new appends")
    log.close()
    c.check("after close")


def delete_records(path: Path) -> None:
    log = open_(path)
    fill(log, 60, b"A")
    c = Chunks()
    c.take(log)
    log.delete_records(log.log_end_offset)
    assert len(log.segments) == 1
    c.check("after delete_records")
    fill(log, 200, b"B")
    c.check("after delete_records and new appends")
    log.close()
    c.check("after close")


def truncate(path: Path) -> None:
    log = open_(path)
    fill(log, 60, b"A")
    c = Chunks()
    c.take(log)
    log.truncate_to(log.segments[-1].base_offset + 4)  # inside the active segment
    c.check("after truncating the active segment")
    fill(log, 60, b"B")  # same sizes: the same file positions, other bytes
    c.check("after truncation and rewrite")
    log.truncate_to(4)  # inside the first segment
    fill(log, 60, b"C")
    c.check("after truncating into the first segment and a rewrite")
    log.close()
    c.check("after close")


def compaction(path: Path) -> None:
    from pylog.broker.cleaner import LogCleaner  # tests may use any layer

    log = open_(path, cleanup_policy="compact")
    fill(log, 60, b"A", keys=3)
    c = Chunks()
    c.take(log)
    before = log.size_bytes
    LogCleaner(clock=lambda: T0).clean(log, force=True)
    assert log.size_bytes < before, "the cleaner removed nothing"
    c.check("after compaction replaced the segments")
    fill(log, 60, b"B", keys=3)
    LogCleaner(clock=lambda: T0).clean(log, force=True)
    c.check("after a second compaction")
    log.close()
    c.check("after close")


def close(path: Path) -> None:
    log = open_(path)
    fill(log, 60, b"A")
    c = Chunks()
    c.take(log)
    log.close()
    c.check("after close")
    del log
    gc.collect()
    c.check("after the log is collected")
    log = open_(path)
    log.truncate_to(0)  # reopen and rewrite every file position in place
    fill(log, 60, b"B")
    c.check("after reopen, truncate and rewrite")
    log.close()
    c.check("after the second close")


SCENARIOS: Dict[str, Callable[[Path], None]] = {f.__name__: f for f in (
    retention, delete_records, truncate, compaction, close,
)}


if __name__ == "__main__":
    name, directory = sys.argv[1], Path(sys.argv[2])
    SCENARIOS[name](directory / "r-0")
    print("OK", name)

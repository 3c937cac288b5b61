"""Zero-copy view scenarios (Invariant 3), each run in its own child process by
test_view_lifetime.py so that a segfault or SIGBUS fails one test instead of killing
pytest.

Every scenario builds a log, takes views from read() (RecordBatch, its .buffer
memoryview, numpy.frombuffer over it, and RecordArrays decoded over it), keeps a bytes
copy of each, then changes the log under them (delete, retention, truncation + rewrite
of the same positions, close, reopen + rewrite).  Afterwards each view must give
exactly its original bytes or raise a clean Python exception; it must never show other
bytes.  Run: python -m tests.storage.view_scenarios <scenario> <directory>.
"""
from __future__ import annotations

import gc
import sys
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np

from pylog import Log
from pylog.records import decode_records
from tests.storage.helpers import T0, FakeClock, value_for

SEG = 2048


class Views:
    """Views of batches and what they showed when taken."""

    def __init__(self) -> None:
        self.items: List[tuple] = []
        self.raised = 0

    def take(self, log: Log, offset: int = None, max_bytes: int = 1 << 20) -> None:
        offs = [offset] if offset is not None else [max(s.base_offset, log.log_start_offset) for s in log.segments]
        for off in offs:
            if off >= log.log_end_offset:
                continue
            for b in log.read(off, max_bytes=max_bytes):
                buf = b.buffer
                arr = np.frombuffer(buf, dtype=np.uint8)
                arrays = decode_records(buf)
                self.items.append((b, buf, arr, arrays, bytes(buf), list(b.records()), b.base_offset))

    def check(self, what: str) -> None:
        assert self.items, "no views taken"
        for b, buf, arr, arrays, copy, recs, base in self.items:
            for name, get in (
                ("memoryview", lambda: bytes(buf)),
                ("numpy", lambda: arr.tobytes()),
                ("batch bytes", lambda: b.to_bytes()),
            ):
                try:
                    got = get()
                except AssertionError:
                    raise
                except Exception:
                    self.raised += 1
                    continue
                assert got == copy, f"{what}: the {name} view of batch {base} changed: " \
                                    f"{copy[:80]!r}... became {got[:80]!r}..."
            try:
                got_recs = list(b.records())
                vals = arrays.values()
                offsets = arrays.offsets.tolist()
                b.validate()
            except AssertionError:
                raise
            except Exception:
                self.raised += 1
                continue
            assert got_recs == recs, f"{what}: records of batch {base} changed"
            assert vals == [r.value for r in recs] and offsets == [r.offset for r in recs], \
                f"{what}: decoded arrays of batch {base} changed"


def fill(log: Log, n_batches: int, salt: bytes) -> None:
    for _ in range(n_batches):
        first = log.log_end_offset
        log.append([value_for(first + j, salt) for j in range(3)],
                   timestamps=[T0 + first + j for j in range(3)])


def open_(path: Path, clock: FakeClock = None, **kw) -> Log:
    kw.setdefault("retention_ms", -1)
    return Log.open(path, clock=clock or FakeClock(T0), segment_bytes=SEG, segment_index_bytes=4096, **kw)


# ------------------------------------------------------------------ scenarios
def delete_records(path: Path) -> None:
    log = open_(path)
    fill(log, 60, b"A")
    assert len(log.segments) >= 4
    v = Views()
    v.take(log)
    log.delete_records(log.log_end_offset)
    assert len(log.segments) == 1
    v.check("after delete_records")
    fill(log, 200, b"B")  # new segments, likely on the freed blocks
    v.check("after delete_records and new appends")
    log.close()
    v.check("after close")


def retention(path: Path) -> None:
    clock = FakeClock(T0)
    log = open_(path, clock=clock, retention_ms=1000)
    fill(log, 60, b"A")
    v = Views()
    v.take(log)
    clock.advance(10**9)
    assert log.enforce_retention() >= 3
    v.check("after retention")
    fill(log, 200, b"B")
    v.check("after retention and new appends")
    log.close()
    v.check("after close")


def truncate_active(path: Path) -> None:
    log = open_(path)
    fill(log, 60, b"A")
    v = Views()
    v.take(log)
    active = log.segments[-1].base_offset
    log.truncate_to(active + 3)
    v.check("after truncate")
    fill(log, 60, b"B")  # same sizes: the same file positions, other bytes
    v.check("after truncate and rewrite")
    log.close()
    v.check("after close")


def truncate_into_inactive(path: Path) -> None:
    log = open_(path)
    fill(log, 60, b"A")
    v = Views()
    v.take(log)
    log.truncate_to(6)  # inside the first (rolled) segment
    v.check("after truncate")
    fill(log, 60, b"B")
    v.check("after truncate and rewrite")
    log.close()
    v.check("after close")


def truncate_to_start(path: Path) -> None:
    log = open_(path)
    fill(log, 60, b"A")
    v = Views()
    v.take(log)
    log.truncate_to(0)
    fill(log, 60, b"B")
    v.check("after truncate_to(0) and rewrite")
    log.close()
    v.check("after close")


def truncate_twice(path: Path) -> None:
    """Views taken before a first truncation, then a second, lower one in the same
    segment and a rewrite of the positions the views cover."""
    log = Log.open(path, clock=FakeClock(T0), segment_bytes=1 << 16, segment_index_bytes=4096, retention_ms=-1)
    fill(log, 100, b"A")
    v = Views()
    v.take(log)
    log.truncate_to(270)
    v.take(log)  # and views of the second mapping
    log.truncate_to(30)
    fill(log, 100, b"B")
    v.check("after two truncations and a rewrite")
    log.close()
    v.check("after close")


def truncate_twice_across_segments(path: Path) -> None:
    log = open_(path)
    fill(log, 60, b"A")
    v = Views()
    v.take(log)
    log.truncate_to(log.segments[1].base_offset + 6)  # into the second segment
    v.take(log)
    log.truncate_to(log.segments[1].base_offset + 3)
    log.truncate_to(3)
    fill(log, 60, b"B")
    v.check("after truncations and a rewrite")


def close(path: Path) -> None:
    log = open_(path)
    fill(log, 60, b"A")
    v = Views()
    v.take(log)
    log.close()
    v.check("after close")
    del log
    gc.collect()
    v.check("after the log is collected")


def close_reopen_rewrite(path: Path) -> None:
    log = open_(path)
    fill(log, 60, b"A")
    v = Views()
    v.take(log)
    log.close()
    log = open_(path)
    log.truncate_to(6)  # rewrites the first segment's file in place
    fill(log, 60, b"B")
    v.check("after close, reopen, truncate and rewrite")
    log.close()
    v.check("after the second close")


def truncate_close_reopen_rewrite(path: Path) -> None:
    """A truncation moves the active segment to a new mapping; views of the old one
    must survive a later close, reopen and rewrite of their positions."""
    log = Log.open(path, clock=FakeClock(T0), segment_bytes=1 << 16, segment_index_bytes=4096, retention_ms=-1)
    fill(log, 100, b"A")
    v = Views()
    v.take(log)
    log.truncate_to(270)
    log.close()
    log = Log.open(path, clock=FakeClock(T0), segment_bytes=1 << 16, segment_index_bytes=4096, retention_ms=-1)
    log.truncate_to(3)
    fill(log, 100, b"B")
    v.check("after truncate, close, reopen, truncate and rewrite")
    log.close()


def views_of_views(path: Path) -> None:
    """Slices and casts of a batch view behave as the view."""
    log = open_(path)
    fill(log, 20, b"A")
    (b, *_) = log.read(0)
    sl = b.buffer[5:40]
    cast = b.buffer.cast("B")
    keep_sl, keep_cast = bytes(sl), bytes(cast)
    log.truncate_to(0)
    fill(log, 20, b"B")
    log.close()
    for view, copy in ((sl, keep_sl), (cast, keep_cast)):
        try:
            got = bytes(view)
        except Exception:
            continue
        assert got == copy, "a slice of a view changed"


SCENARIOS: Dict[str, Callable[[Path], None]] = {f.__name__: f for f in (
    delete_records, retention, truncate_active, truncate_into_inactive, truncate_to_start,
    truncate_twice, truncate_twice_across_segments, close, close_reopen_rewrite,
    truncate_close_reopen_rewrite, views_of_views,
)}


if __name__ == "__main__":
    name, directory = sys.argv[1], Path(sys.argv[2])
    SCENARIOS[name](directory / "v-0")
    print("OK", name)

"""Fuzz target: segment recovery over arbitrary log bytes.

    pip install atheris && python fuzz/fuzz_recover.py -atheris_runs=50000

The bytes are placed in a segment's .log buffer (as after a crash) and
pl_segment_recover scans it.  Contract checked: no crash; the recovered prefix
[0, log_size) validates batch by batch; indexes are consistent afterwards.
"""
from __future__ import annotations

import sys

from pylog._native import ffi, lib
from pylog.records import validate_batches

_INDEX_ENTRIES = 64


def one_input(data: bytes) -> None:
    log = ffi.new("uint8_t[]", max(len(data), 1))
    ffi.memmove(log, data, len(data))
    index = ffi.new("uint8_t[]", _INDEX_ENTRIES * 8)
    tindex = ffi.new("uint8_t[]", _INDEX_ENTRIES * 12)
    seg = ffi.new("pl_segment *")
    seg.log, seg.log_capacity = log, len(data)
    seg.index, seg.index_capacity = index, _INDEX_ENTRIES * 8
    seg.timeindex, seg.timeindex_capacity = tindex, _INDEX_ENTRIES * 12
    if lib.pl_segment_init(seg, 0, 64) != lib.PL_OK:
        raise AssertionError("init failed")
    dropped = ffi.new("uint64_t *")
    rc = lib.pl_segment_recover(seg, 0, dropped)
    if rc != lib.PL_OK:
        return  # e.g. index full: recovery refused cleanly
    size = int(seg.log_size)
    assert size <= len(data)
    if size:
        validate_batches(ffi.buffer(log, size)[:])
    assert lib.pl_segment_check_indexes(seg) == lib.PL_OK, "indexes inconsistent after recovery"


def main() -> None:
    import atheris

    atheris.instrument_all()  # coverage feedback from the (already imported) Python paths
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()

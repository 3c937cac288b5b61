"""Fuzz target: the producer's open-batch encoder (pl_builder_*) on arbitrary bytes.

    pip install atheris && python fuzz/fuzz_builder.py -atheris_runs=200000

The bytes are used as a record's pre-encoded header section (pl_builder_append) and as
a records section to re-slice into an open batch (pl_builder_append_records, the split
of a batch the broker refused).  Contract checked: neither crashes; each either refuses
the input with a status and leaves the open batch exactly as it was, or accepts it and
the sealed batch validates with the records it claims.
"""
from __future__ import annotations

import sys

from pylog._native import ffi, lib
from pylog.errors import CorruptRecordError
from pylog.records import BatchBuilder, validate_batches


def _state(b: BatchBuilder) -> tuple:
    c = b.cdata
    return (c.used, c.count, c.base_timestamp, c.max_timestamp, bytes(ffi.buffer(c.buf, c.used)))


def one_input(data: bytes) -> None:
    b = BatchBuilder(64, 1_000)
    b.append(b"first", None)
    before = _state(b)
    try:
        b.append(b"v", b"k", data, 2_000)
        added = 1
    except CorruptRecordError:
        if _state(b) != before:
            raise AssertionError("a refused header section changed the batch")
        added = 0
    before = _state(b)
    # Records [lo, hi) of at most 8 (the walk stops at hi, so a short section passes).
    lo, hi = ((0, 1), (0, 2), (1, 3), (2, 2), (0, 9))[len(data) % 5]
    count = 8
    buf = ffi.new("uint8_t[]", data) if data else ffi.NULL
    n = lib.pl_builder_append_records(b.cdata, buf, len(data), count, 500, lo, hi)
    if n < 0 or hi > count:
        if n >= 0:
            raise AssertionError("records past the count were appended")
        if _state(b) != before:
            raise AssertionError("refused records changed the batch")
        n = 0
    elif n != hi - lo:
        raise AssertionError(f"appended {n} records, asked for {hi - lo}")
    if validate_batches(b.seal()) != (1, 1 + added + n):
        raise AssertionError("the sealed batch does not hold the records appended")


def main() -> None:
    import atheris

    atheris.instrument_all()
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()

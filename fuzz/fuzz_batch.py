"""Fuzz target: batch validation and decoding on arbitrary bytes.

    pip install atheris && python fuzz/fuzz_batch.py -atheris_runs=200000

Contract checked: validate_batches / decode_records never crash the process; they
return or raise CorruptRecordError (or UnsupportedCompressionType) — nothing else —
and whatever validates also decodes to exactly the records it claims.
"""
from __future__ import annotations

import sys

from pylog.errors import CorruptRecordError, UnsupportedCompressionType
from pylog.records import decode_records, validate_batches


def one_input(data: bytes) -> None:
    try:
        n_batches, n_records = validate_batches(data)
    except (CorruptRecordError, UnsupportedCompressionType):
        n_records = None
    try:
        arrays = decode_records(data, min_offset=-2**63)
    except (CorruptRecordError, UnsupportedCompressionType):
        if n_records is not None:
            raise AssertionError("validated input failed to decode")
        return
    if n_records is not None and len(arrays) != n_records:
        raise AssertionError(f"decoded {len(arrays)} records, validated {n_records}")


def main() -> None:
    import atheris

    atheris.instrument_all()  # coverage feedback from the (already imported) Python paths
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()

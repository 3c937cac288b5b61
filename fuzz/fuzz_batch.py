"""Fuzz target: batch validation and decoding on arbitrary bytes.

    pip install atheris && python fuzz/fuzz_batch.py -atheris_runs=200000

Contract checked: validate_batches / decode_records / decode_batches / record_list never
crash the process; they return or raise CorruptRecordError (or UnsupportedCompressionType)
— nothing else — whatever validates also decodes to exactly the records it claims (with
check_crcs too), a decode with check_crcs gives the records of one without or raises,
decoding the batches as a list (decode_batches) gives what decoding them joined gives,
the Records built in C (record_list) are those of the numpy path whenever both decode,
a decode limited by max_bytes gives a prefix of the whole, and the batch views joined
by join_views (no copy: they are adjacent) decode to the same records.
"""
from __future__ import annotations

import sys

from pylog.errors import CorruptRecordError, UnsupportedCompressionType
from pylog._native import ffi, lib
from pylog.records import (decode_batches, decode_records, iter_batches, join_views, record_list,
                           validate_batches)


def check_crcs(data: bytes):
    """None if every batch of the (structurally walkable) data has a good CRC32C, else
    the status of pl_batches_check_crc (the C pass read() uses)."""
    bad, stored, computed = ffi.new("uint64_t *"), ffi.new("uint32_t *"), ffi.new("uint32_t *")
    with ffi.from_buffer("uint8_t[]", data) as buf:
        rc = lib.pl_batches_check_crc(buf, len(data), bad, stored, computed)
    return None if rc == lib.PL_OK else rc


def one_input(data: bytes) -> None:
    try:
        n_batches, n_records = validate_batches(data)
    except (CorruptRecordError, UnsupportedCompressionType):
        n_records = None
    if n_records is None:  # invalid input: the list decoder may refuse it, never crash
        try:
            decode_batches(list(iter_batches(data)), min_offset=-2**63)
        except (CorruptRecordError, UnsupportedCompressionType):
            pass
    try:
        built = record_list(data, min_offset=-2**63)
    except (CorruptRecordError, UnsupportedCompressionType):
        built = None
    try:
        checked = decode_records(data, min_offset=-2**63, check_crcs=True)
    except (CorruptRecordError, UnsupportedCompressionType):
        checked = None
    try:
        arrays = decode_records(data, min_offset=-2**63)
    except (CorruptRecordError, UnsupportedCompressionType):
        if n_records is not None:
            raise AssertionError("validated input failed to decode")
        if checked is not None:
            raise AssertionError("decoded with check_crcs but not without")
        return
    if checked is not None and (checked.offsets.tolist() != arrays.offsets.tolist()
                                or checked.values() != arrays.values()):
        raise AssertionError("check_crcs=True decoded other records than check_crcs=False")
    if n_records is not None and checked is None:
        raise AssertionError("validated input (CRCs included) failed a checked decode")
    # it decodes without the check, and every batch is walked: the CRCs alone decide
    crcs_ok = check_crcs(data) is None
    if (checked is not None) != crcs_ok:
        raise AssertionError(f"checked decode {'passed' if checked is not None else 'failed'} "
                             f"but the batches' CRCs are {'good' if crcs_ok else 'bad'}")
    if built is not None and built != arrays.records():
        raise AssertionError("record_list and decode_records(...).records() disagree")
    if n_records is not None and built is None:
        raise AssertionError("validated input decodes to arrays but not through record_list")
    if n_records is not None and len(arrays) != n_records:
        raise AssertionError(f"decoded {len(arrays)} records, validated {n_records}")
    if n_records is not None:  # valid batches: the list decoder must agree exactly
        listed = decode_batches(list(iter_batches(data)), min_offset=-2**63)
        if listed.offsets.tolist() != arrays.offsets.tolist() or listed.values() != arrays.values():
            raise AssertionError("decode_batches and decode_records disagree")
        part = decode_records(data, min_offset=-2**63, max_bytes=1)
        if part.offsets.tolist() != arrays.offsets.tolist()[:len(part)] or not len(part) <= len(arrays):
            raise AssertionError("a max_bytes-limited decode is not a prefix of the whole")
        joined = join_views([b.buffer for b in iter_batches(data)])
        again = decode_records(joined, min_offset=-2**63)
        if again.offsets.tolist() != arrays.offsets.tolist() or again.values() != arrays.values():
            raise AssertionError("the joined batch views decode differently")


def main() -> None:
    import atheris

    atheris.instrument_all()  # coverage feedback from the (already imported) Python paths
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()

"""check_crcs on the records layer's decoders: every function that walks batches can
check each one's CRC32C in the same walk (issue 12 point 5); off by default here (the
Log and the consumer turn it on)."""
from __future__ import annotations

import random

import pytest

from pylog._native import ffi, lib
from pylog.errors import CorruptRecordError
from pylog.records import (
    RecordBatch,
    build_batch,
    check_crcs,
    decode_batches,
    decode_records,
    iter_batches,
    iter_records,
    lazy_records,
    record_list,
)


def batches(codec: str = "none") -> bytes:
    out = b""
    for i in range(0, 40, 10):
        out += build_batch([b"value-%03d" % j for j in range(i, i + 10)], base_offset=i,
                           base_timestamp=1000, compression=codec)
    return out


def damaged(data: bytes, batch: int = 2) -> tuple:
    """data with one bit flipped in the last byte of batch ``batch`` (a value byte,
    CRC covered); (bytes, the batch's position, its base offset)."""
    bs = list(iter_batches(data))
    pos = sum(b.size_bytes for b in bs[:batch])
    end = pos + bs[batch].size_bytes
    raw = bytearray(data)
    raw[end - 2] ^= 0x01  # inside the last record's value ('9' <-> '8'), which stays parseable
    return bytes(raw), pos, bs[batch].base_offset


@pytest.mark.parametrize("decode", [
    lambda d, **k: record_list(d, **k),
    lambda d, **k: list(lazy_records(d, **k)),
    lambda d, **k: decode_records(d, **k).records(),
    lambda d, **k: decode_records(d, max_bytes=64, **k).records(),
])
def test_uncompressed_decoders(decode):
    data, pos, base = damaged(batches())
    plain = decode(data)  # off by default: the bytes as they are
    assert len(plain) == 40
    assert sum(r.value != b"value-%03d" % r.offset for r in plain) == 1
    with pytest.raises(CorruptRecordError) as ei:
        decode(data, check_crcs=True)
    msg = str(ei.value)
    assert f"offset {base}" in msg and f"byte {pos}" in msg and "CRC32C mismatch" in msg
    with pytest.raises(CorruptRecordError) as ei:
        decode(data, check_crcs=True, origin=("seg.log", 1000))
    assert f"position {1000 + pos} of seg.log" in str(ei.value)
    good = batches()
    assert decode(good, check_crcs=True) == decode(good)


def test_iter_records_and_record_batch():
    data, pos, base = damaged(batches())
    with pytest.raises(CorruptRecordError):
        list(iter_records(data, check_crcs=True))
    bad = [b for b in iter_batches(data) if b.base_offset == base][0]
    with pytest.raises(CorruptRecordError) as ei:
        bad.check_crc()
    assert "stored 0x" in str(ei.value) and "computed 0x" in str(ei.value)
    with pytest.raises(CorruptRecordError):
        list(bad.records(check_crcs=True))
    assert len(list(bad.records())) == 10


def test_check_crcs_function():
    good = batches()
    assert check_crcs(good) == len(good)
    data, pos, base = damaged(good, 3)
    with pytest.raises(CorruptRecordError) as ei:
        check_crcs(data, ("x.log", 7))
    assert f"position {7 + pos} of x.log" in str(ei.value) and f"offset {base}" in str(ei.value)
    with pytest.raises(CorruptRecordError):
        check_crcs(good[:-3])  # ends inside a batch


@pytest.mark.parametrize("codec", ["zstd", "gzip"])
def test_compressed_batches_are_checked_before_decompressing(codec):
    good = batches(codec)
    raw = bytearray(good)
    bs = list(iter_batches(good))
    raw[bs[0].size_bytes + 30] ^= 0x40  # attributes..: in batch 1's CRC-covered header
    data = bytes(raw)
    for decode in (lambda: record_list(data, check_crcs=True),
                   lambda: decode_records(data, check_crcs=True),
                   lambda: decode_batches(list(iter_batches(data)), check_crcs=True)):
        with pytest.raises(CorruptRecordError) as ei:
            decode()
        assert "CRC32C mismatch" in str(ei.value)
    assert len(decode_batches(list(iter_batches(good)), check_crcs=True)) == 40


def flip_and_check(good: bytes, rng: random.Random):
    """``good`` with one random bit flipped, and what pl_batches_check_crc says of it:
    (the bytes, its status, the position of the first bad batch)."""
    raw = bytearray(good)
    raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
    with ffi.from_buffer("uint8_t[]", bytes(raw)) as buf:
        bad, stored, computed = ffi.new("uint64_t *"), ffi.new("uint32_t *"), ffi.new("uint32_t *")
        rc = lib.pl_batches_check_crc(buf, len(raw), bad, stored, computed)
    return raw, rc, bad


def test_c_decode_flag_and_check_function_agree_on_random_damage():
    """pl_batches_decode with PL_DECODE_CHECK_CRC stops exactly where
    pl_batches_check_crc finds the first bad batch."""
    rng = random.Random(5)
    good = batches()
    for _ in range(200):
        raw, rc, bad = flip_and_check(good, rng)
        if rc == lib.PL_E_CRC:
            with pytest.raises(CorruptRecordError) as ei:
                decode_records(bytes(raw), check_crcs=True)
            assert f"byte {int(bad[0])}" in str(ei.value)
        elif rc == lib.PL_OK:
            decode_records(bytes(raw), check_crcs=True)  # a flip outside every CRC: no error from it


def long_batches() -> bytes:
    """Three batches of 1000 records of 100 bytes (about 110 KB each, as the bench's):
    long enough for crc32c.c's hybrid / fold paths."""
    out = b""
    for i in range(0, 3000, 1000):
        out += build_batch([(b"value-%06d-" % j).ljust(100, b"x") for j in range(i, i + 1000)],
                           base_offset=i, base_timestamp=1000)
    return out


def test_long_batches_c_decode_agrees_with_the_check_function_on_random_damage():
    """The decode checks a decoded batch along its record walk (8 KiB at a time behind
    it, the rest after it): wherever a bit flips,
    it reports the same first bad batch as pl_batches_check_crc, and a CRC mismatch
    even where the flip also breaks the record walk."""
    rng = random.Random(11)
    good = long_batches()
    assert len(decode_records(good, check_crcs=True)) == 3000
    for _ in range(150):
        raw, rc, bad = flip_and_check(good, rng)
        if rc == lib.PL_E_CRC:
            with pytest.raises(CorruptRecordError) as ei:
                decode_records(bytes(raw), check_crcs=True)
            assert "CRC32C mismatch" in str(ei.value) and f"byte {int(bad[0])}" in str(ei.value)
        elif rc == lib.PL_OK:  # outside every CRC (baseOffset .. crc field)
            try:
                decode_records(bytes(raw), check_crcs=True)
            except CorruptRecordError as exc:
                assert "CRC32C" not in str(exc)


def test_a_crc_mismatch_wins_over_a_broken_record_walk():
    """A flip in the first record's length breaks the walk; checked, the error is the
    CRC mismatch (and nothing is returned), unchecked it is the malformed record."""
    good = bytearray(long_batches())
    second = 12 + int.from_bytes(good[8:12], "big")
    good[second + 61] ^= 0x40  # the second batch's first record length varint
    with pytest.raises(CorruptRecordError) as ei:
        decode_records(bytes(good), check_crcs=True)
    assert "CRC32C mismatch" in str(ei.value) and f"byte {second}" in str(ei.value)
    with pytest.raises(CorruptRecordError) as ei:
        decode_records(bytes(good))
    assert "CRC32C" not in str(ei.value)
    counted, consumed = ffi.new("uint32_t *"), ffi.new("uint64_t *")
    from pylog.records.batch import _alloc  # the decoder's own arrays
    _, (arr, _keep) = _alloc(3000)
    with ffi.from_buffer("uint8_t[]", bytes(good)) as buf:
        rc = lib.pl_batches_decode(buf, len(good), 0, lib.PL_DECODE_CHECK_CRC, arr, 0, counted, consumed)
    assert rc == lib.PL_E_CRC and int(consumed[0]) == second and int(counted[0]) == 1000

"""csrc/hash.c: Kafka's murmur2 and its batch forms, driven through cffi directly.

Expected values come from two independent places: a plain-Python murmur2 written here
from the algorithm's description (MurmurHash2 with Kafka's seed, little-endian words,
Java int arithmetic), and values published by Kafka and Kafka client projects.
"""
from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pylog._native import ffi, lib

M = 0x5BD1E995
SEED = 0x9747B28C
U32 = 0xFFFFFFFF


def murmur2_reference(data: bytes) -> int:
    """MurmurHash2 (32-bit) as Kafka's Utils.murmur2, on Python ints masked to 32 bits;
    returns the signed value Java returns."""
    n = len(data)
    h = (SEED ^ n) & U32
    whole = n - n % 4
    for i in range(0, whole, 4):
        k = data[i] | data[i + 1] << 8 | data[i + 2] << 16 | data[i + 3] << 24
        k = (k * M) & U32
        k ^= k >> 24
        k = (k * M) & U32
        h = ((h * M) & U32) ^ k
    rest = n % 4
    if rest == 3:
        h ^= data[whole + 2] << 16
    if rest >= 2:
        h ^= data[whole + 1] << 8
    if rest >= 1:
        h ^= data[whole]
        h = (h * M) & U32
    h ^= h >> 13
    h = (h * M) & U32
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


# Published values.  Kafka's clients UtilsTest.testMurmur2 (the first six, also quoted
# by kafka_ex and kafkabr), librdkafka's rdmurmur2.c unit test (as quoted by kafkabr),
# Akka's Murmur2Spec ("expected correct hash values from the kafka murmur2 impl").
PUBLISHED = [
    (b"21", -973932308),
    (b"foobar", -790332482),
    (b"a-little-bit-long-string", -985981536),
    (b"a-little-bit-longer-string", -1486304829),
    (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
    (b"abc", 479470107),
    (b"kafka", -798503068),
    (b"giberish123456789", -1890243828),
    (b"1234", -1614185708),
    (b"234", -406844982),
    (b"34", -2026295078),
    (b"4", 1514888353),
    (b"PreAmbleWillBeRemoved,ThePrePartThatIs", 2017611548),
    (b"", 275646681),
    (b"1", -1993445489),
    (b"12", 126087238),
    (b"123", -267702483),
    (b"12345", -1188365604),
]


def c_murmur2(data: bytes) -> int:
    return lib.pl_murmur2(data, len(data))


@pytest.mark.parametrize("key,expected", PUBLISHED)
def test_published_values(key, expected):
    assert c_murmur2(key) == expected
    assert murmur2_reference(key) == expected  # the reference is right, too


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_matches_reference(data):
    assert c_murmur2(data) == murmur2_reference(data)


def test_every_tail_length_and_misaligned_start():
    rng = random.Random(7)
    blob = bytes(rng.getrandbits(8) for _ in range(64))
    for start in range(8):
        for length in range(0, 40):
            chunk = blob[start:start + length]
            # chunk ends exactly where a malloc'd block ends (ASan sees over-reads)
            block = ffi.new("uint8_t[]", _PAD + len(chunk))
            ffi.memmove(block + _PAD, chunk, len(chunk))
            assert lib.pl_murmur2(block + _PAD, length) == murmur2_reference(chunk)


def test_high_bytes_are_unsigned():
    # Java masks each byte with 0xff; a signed-char bug would show on bytes >= 0x80.
    for key in (b"\xff", b"\x80\x81", b"\xff\xfe\xfd", b"\xff" * 4, b"\x80" * 7):
        assert c_murmur2(key) == murmur2_reference(key)


def test_null_pointer_with_zero_length():
    # murmur2("") per Kafka's UtilsTest; hash.c does no arithmetic on the NULL pointer
    # (UBSan as built by gcc does not flag NULL + 0, clang's does)
    assert lib.pl_murmur2(ffi.NULL, 0) == 275646681
    assert lib.pl_murmur2(ffi.NULL, 0) == c_murmur2(b"")


@pytest.mark.parametrize("n", [1, 3, 4, 7])
def test_null_pointer_with_a_length_reads_nothing(n):
    # a caller error with no status to return: documented as 0, never a read of NULL
    assert lib.pl_murmur2(ffi.NULL, n) == 0


# ---------------------------------------------------------------- batch forms

_PAD = 4096


def _call_batch(buf: bytes, lens, positions=None, num_partitions=None, *, count=None,
                out_len=None):
    """Runs a batch function on exactly-sized C copies; returns (rc, out list)."""
    n = len(lens) if count is None else count
    # The bytes sit at the very end of an allocation big enough to come from the
    # system malloc (not pymalloc), so that an ASan build catches any over-read.
    block = ffi.new("uint8_t[]", _PAD + len(buf))
    ffi.memmove(block + _PAD, buf, len(buf))
    cbuf = block + _PAD
    clens = ffi.new("int32_t[]", list(lens)) if lens else ffi.NULL
    cpos = ffi.new("int64_t[]", list(positions)) if positions is not None else ffi.NULL
    out = ffi.new("int32_t[]", [0x5A5A5A5A] * (out_len if out_len is not None else max(n, 1)))
    if num_partitions is None:
        rc = lib.pl_murmur2_batch(cbuf, len(buf), cpos, clens, n, out)
    else:
        rc = lib.pl_murmur2_partitions(cbuf, len(buf), cpos, clens, n, num_partitions, out)
    return rc, list(out)[:n]


def _partition(h: int, n: int) -> int:
    return (h & 0x7FFFFFFF) % n


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(st.none(), st.binary(max_size=20)), max_size=30),
       st.integers(min_value=1, max_value=1000))
def test_batch_joined_equals_one_by_one(keys, n):
    buf = b"".join(k for k in keys if k is not None)
    lens = [-1 if k is None else len(k) for k in keys]
    rc, hashes = _call_batch(buf, lens)
    assert rc == lib.PL_OK
    assert hashes == [0 if k is None else murmur2_reference(k) for k in keys]
    rc, parts = _call_batch(buf, lens, num_partitions=n)
    assert rc == lib.PL_OK
    assert parts == [-1 if k is None else _partition(murmur2_reference(k), n) for k in keys]


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_batch_with_positions(data):
    buf = data.draw(st.binary(min_size=0, max_size=60))
    count = data.draw(st.integers(0, 20))
    positions, lens, expect = [], [], []
    for _ in range(count):
        start = data.draw(st.integers(0, len(buf)))
        length = data.draw(st.integers(-1, len(buf) - start))
        positions.append(start if length >= 0 else data.draw(st.integers(-5, 1 << 40)))
        lens.append(length)
        expect.append(0 if length < 0 else murmur2_reference(buf[start:start + length]))
    rc, hashes = _call_batch(buf, lens, positions)
    assert rc == lib.PL_OK
    assert hashes == expect


def test_batch_key_ending_exactly_at_buffer_end_is_accepted():
    buf = b"abcdefgh"
    assert _call_batch(buf, [8], [0]) == (lib.PL_OK, [murmur2_reference(buf)])
    assert _call_batch(buf, [0], [8]) == (lib.PL_OK, [murmur2_reference(b"")])
    assert _call_batch(buf, [3, 5]) == (lib.PL_OK, [murmur2_reference(b"abc"),
                                                   murmur2_reference(b"defgh")])


@pytest.mark.parametrize("lens,positions,n", [
    ([3, 6], None, None),               # joined keys run one byte past the buffer
    ([9], [0], None),                   # key longer than the buffer
    ([1], [8], None),                   # key starts at the end
    ([0], [9], None),                   # empty key past the end
    ([1], [-1], None),                  # negative position
    ([1], [1 << 62], None),             # position far out (no overflow)
    ([2, -2], None, None),              # length below -1
    ([2, 2], None, 0),                  # no partitions
    ([2, 2], None, -3),
    ([2, 0x7FFFFFFF], [0, 1], None),    # huge length
])
def test_batch_rejects_bad_input_and_writes_nothing(lens, positions, n):
    buf = b"abcdefgh"
    rc, out = _call_batch(buf, lens, positions, n)
    assert rc == lib.PL_E_ARG
    assert out == [0x5A5A5A5A] * len(lens)  # nothing half-written
    if n is None:  # the partitions form checks the keys the same way
        rc, out = _call_batch(buf, lens, positions, 7)
        assert rc == lib.PL_E_ARG
        assert out == [0x5A5A5A5A] * len(lens)


def test_batch_bad_key_late_in_the_batch_leaves_earlier_outputs_untouched():
    lens = [2] * 100 + [5]
    rc, out = _call_batch(b"x" * 203, lens)
    assert rc == lib.PL_E_ARG
    assert out == [0x5A5A5A5A] * 101


def test_batch_null_pointers():
    out = ffi.new("int32_t[]", 1)
    # count 0: nothing is read or written, NULLs are fine
    assert lib.pl_murmur2_batch(ffi.NULL, 0, ffi.NULL, ffi.NULL, 0, ffi.NULL) == lib.PL_OK
    assert lib.pl_murmur2_partitions(ffi.NULL, 0, ffi.NULL, ffi.NULL, 0, 3, ffi.NULL) == lib.PL_OK
    lens = ffi.new("int32_t[]", [2])
    assert lib.pl_murmur2_batch(ffi.NULL, 0, ffi.NULL, ffi.NULL, 1, out) == lib.PL_E_ARG
    assert lib.pl_murmur2_batch(ffi.NULL, 2, ffi.NULL, lens, 1, out) == lib.PL_E_ARG
    assert lib.pl_murmur2_batch(b"ab", 2, ffi.NULL, lens, 1, ffi.NULL) == lib.PL_E_ARG
    # only null and empty keys: no byte is read, so a NULL buffer is fine
    lens2 = ffi.new("int32_t[]", [-1, 0])
    out2 = ffi.new("int32_t[]", 2)
    assert lib.pl_murmur2_partitions(ffi.NULL, 0, ffi.NULL, lens2, 2, 5, out2) == lib.PL_OK
    assert list(out2) == [-1, _partition(275646681, 5)]

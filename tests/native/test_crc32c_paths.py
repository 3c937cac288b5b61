"""Every CRC32C path of csrc/crc32c.c gives the same result (issue 12 point 5).

pl_crc32c picks a path by the CPU and the length (hybrid or fold256 for long inputs on
CPUs with VPCLMULQDQ, fold128 with PCLMULQDQ, the crc32 instruction, else tables);
pl_crc32c_with runs one path by name, so that each path this CPU has is compared here
with the portable tables (and those with a bit-by-bit reference) on random lengths,
starts (alignments) and initial values, and on the lengths where a path changes how
it works (its block and step sizes)."""
from __future__ import annotations

import random

import pytest

from pylog._native import ffi, lib
from tests.records.test_crc32c import crc32c_bitwise

PATHS = {
    "portable": lib.PL_CRC32C_PORTABLE,
    "hw": lib.PL_CRC32C_HW,
    "fold128": lib.PL_CRC32C_FOLD128,
    "fold256": lib.PL_CRC32C_FOLD256,
    "hybrid": lib.PL_CRC32C_HYBRID,
    "fold512": lib.PL_CRC32C_FOLD512,
}
AVAILABLE = {name: p for name, p in PATHS.items() if lib.pl_crc32c_path_available(p)}

#: Lengths where a path changes its work: fold128's 64-byte step and 16-byte tail,
#: fold256's 128-byte step, fold512's 256-byte step, pl_crc32c's thresholds (256, 512, 3072), hw's 3 x 1024-byte
#: blocks, the hybrid's 7168-byte blocks (4096 folded + 3 x 1024 by crc32).
EDGES = sorted({n + d for n in (0, 8, 16, 64, 128, 256, 512, 1024, 3072, 4096, 7168, 2 * 7168, 3 * 7168 + 3072)
                for d in (-17, -16, -9, -8, -1, 0, 1, 7, 8, 15, 16, 127, 128) if n + d >= 0})


def with_path(path: int, crc: int, data: bytes) -> int:
    out = ffi.new("uint32_t *")
    assert lib.pl_crc32c_with(path, crc, data, len(data), out) == lib.PL_OK
    return int(out[0])


@pytest.fixture(scope="module")
def blob() -> bytes:
    return random.Random(12).randbytes(3 * 70_000)


def test_the_paths_this_cpu_has():
    assert "portable" in AVAILABLE
    assert lib.pl_crc32c_path_available(lib.PL_CRC32C_HW) == lib.pl_crc32c_hw_available()
    # the folds use the crc32 instruction to finish, the hybrid is fold256 with it
    if "fold128" in AVAILABLE or "fold256" in AVAILABLE:
        assert "hw" in AVAILABLE
    assert ("hybrid" in AVAILABLE) == ("fold256" in AVAILABLE)
    if "fold512" in AVAILABLE:  # AVX-512 on top of fold256's VPCLMULQDQ
        assert "fold256" in AVAILABLE
    for bad in (-1, 6, 1000):
        assert not lib.pl_crc32c_path_available(bad)
        assert lib.pl_crc32c_with(bad, 0, b"x", 1, ffi.new("uint32_t *")) == lib.PL_E_ARG
    assert lib.pl_crc32c_with(lib.PL_CRC32C_PORTABLE, 0, b"x", 1, ffi.NULL) == lib.PL_E_ARG


@pytest.mark.parametrize("name", sorted(PATHS))
def test_known_vectors(name):
    if name not in AVAILABLE:  # not on this CPU: pl_crc32c_with refuses it
        assert lib.pl_crc32c_with(PATHS[name], 0, b"1", 1, ffi.new("uint32_t *")) == lib.PL_E_ARG
        return
    p = PATHS[name]
    assert with_path(p, 0, b"123456789") == 0xE3069283
    assert with_path(p, 0, b"") == 0
    assert with_path(p, 0x12345678, b"") == 0x12345678
    assert with_path(p, 0, bytes(32)) == 0x8A9136AA
    assert with_path(p, 0, b"\xff" * 32) == 0x62A8AB43
    long = bytes(range(256)) * 40  # 10240 bytes: the hybrid's block and a fold256 tail
    assert with_path(p, 0, long) == crc32c_bitwise(long)
    assert with_path(p, 0x9ABCDEF0, long[:5000]) == crc32c_bitwise(long[:5000], 0x9ABCDEF0)


def test_pl_crc32c_is_the_portable_result():
    assert lib.pl_crc32c(0, b"123456789", 9) == 0xE3069283
    data = random.Random(3).randbytes(70_000)
    for n in (0, 1, 63, 511, 512, 7167, 7168, 7169, 70_000):
        assert lib.pl_crc32c(7, data[:n], n) == lib.pl_crc32c_portable(7, data[:n], n), n


@pytest.mark.parametrize("name", sorted(AVAILABLE))
def test_edge_lengths_and_alignments(name, blob):
    p = PATHS[name]
    for start in (0, 1, 3, 8, 13, 31, 32, 63):
        for n in EDGES:
            chunk = blob[start:start + n]
            assert with_path(p, 0, chunk) == lib.pl_crc32c_portable(0, chunk, n), (start, n)


@pytest.mark.parametrize("name", sorted(AVAILABLE))
def test_random_lengths_offsets_and_initial_values(name, blob):
    """Lengths 0..70000 at random starts, with a random running CRC: each path equals
    the portable one, and chaining two calls equals one call over both parts."""
    rng = random.Random(100 + PATHS[name])
    p = PATHS[name]
    for _ in range(300):
        n = rng.randrange(0, 70_001) if rng.random() < 0.7 else rng.randrange(0, 600)
        start = rng.randrange(0, len(blob) - n + 1)
        crc = rng.getrandbits(32)
        chunk = blob[start:start + n]
        ref = lib.pl_crc32c_portable(crc, chunk, n)
        assert with_path(p, crc, chunk) == ref, (name, start, n)
        cut = rng.randrange(0, n + 1)
        assert with_path(p, with_path(p, crc, chunk[:cut]), chunk[cut:]) == ref, (name, start, n, cut)


def test_every_path_agrees_on_random_buffers():
    """All available paths against each other on fresh random contents (not one blob)."""
    rng = random.Random(99)
    for _ in range(60):
        n = rng.randrange(0, 70_001)
        data = rng.randbytes(n + 64)
        start = rng.randrange(0, 64)
        chunk = data[start:start + n]
        results = {name: with_path(p, 0, chunk) for name, p in AVAILABLE.items()}
        assert len(set(results.values())) == 1, (n, start, results)


def test_portable_equals_bitwise_reference_on_some_lengths(blob):
    for n in (0, 1, 7, 8, 9, 100, 1000, 1029):
        assert lib.pl_crc32c_portable(0, blob[:n], n) == crc32c_bitwise(blob[:n])


@pytest.mark.parametrize("name", sorted(AVAILABLE))
def test_a_single_flipped_bit_changes_the_crc(name):
    """CRC32C detects every single-bit error: for each path, at random positions of
    long buffers (the hybrid's blocks, fold tails, stream boundaries)."""
    rng = random.Random(7)
    p = PATHS[name]
    data = bytearray(rng.randbytes(3 * 7168 + 777))
    good = with_path(p, 0, bytes(data))
    for _ in range(200):
        at, bit = rng.randrange(len(data)), 1 << rng.randrange(8)
        data[at] ^= bit
        assert with_path(p, 0, bytes(data)) != good, at
        data[at] ^= bit
    assert with_path(p, 0, bytes(data)) == good

"""CRC32C: known vectors, chaining, and the hardware path equal to the portable one."""
import random

from pylog._native import lib


def crc32c_bitwise(data: bytes, crc: int = 0) -> int:
    """Reference: the reflected Castagnoli CRC computed bit by bit."""
    crc ^= 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def test_known_vectors():
    assert lib.pl_crc32c(0, b"123456789", 9) == 0xE3069283
    assert lib.pl_crc32c(0, bytes(32), 32) == 0x8A9136AA
    assert lib.pl_crc32c(0, b"\xff" * 32, 32) == 0x62A8AB43
    assert lib.pl_crc32c(0, b"", 0) == 0


def test_chaining():
    data = bytes(range(256)) * 3
    for cut in (0, 1, 7, 8, 9, 100, len(data)):
        a = lib.pl_crc32c(0, data[:cut], cut)
        assert lib.pl_crc32c(a, data[cut:], len(data) - cut) == lib.pl_crc32c(0, data, len(data))


def test_all_paths_agree_with_reference():
    rng = random.Random(1)
    blob = bytes(rng.getrandbits(8) for _ in range(400))
    for start in range(0, 9):  # misaligned starts
        for length in range(0, 300, 7):
            chunk = blob[start:start + length]
            ref = crc32c_bitwise(chunk)
            assert lib.pl_crc32c(0, chunk, len(chunk)) == ref
            assert lib.pl_crc32c_portable(0, chunk, len(chunk)) == ref


def test_hw_detection_reports_a_boolean():
    assert lib.pl_crc32c_hw_available() in (0, 1)


def test_long_inputs_every_stream_split_agree_with_portable():
    """The hardware path runs three streams over blocks of 1024 bytes and joins them:
    lengths around multiples of 3 KiB, misaligned starts, chained calls."""
    rng = random.Random(2)
    blob = bytes(rng.getrandbits(8) for _ in range(20_000))
    for start in (0, 1, 5, 8):
        for length in (3071, 3072, 3073, 3079, 6144, 6151, 9216 + 17, 19_000):
            chunk = blob[start:start + length]
            ref = lib.pl_crc32c_portable(0, chunk, len(chunk))
            assert lib.pl_crc32c(0, chunk, len(chunk)) == ref, (start, length)
    assert lib.pl_crc32c(0, blob[:3072], 3072) == crc32c_bitwise(blob[:3072])
    head = lib.pl_crc32c(0, blob[:5000], 5000)
    assert lib.pl_crc32c(head, blob[5000:], len(blob) - 5000) == lib.pl_crc32c_portable(0, blob, len(blob))
    assert lib.pl_crc32c(0, bytes(4096), 4096) == lib.pl_crc32c_portable(0, bytes(4096), 4096)

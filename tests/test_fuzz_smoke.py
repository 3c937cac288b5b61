"""Bounded runs of the fuzz targets (fuzz/) on seeded random and mutated inputs, so
the normal test run exercises them without atheris."""
import random
import sys
from pathlib import Path

import pytest

from pylog.records import build_batch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fuzz"))
import fuzz_batch  # noqa: E402
import fuzz_builder  # noqa: E402
import fuzz_recover  # noqa: E402


def corpus(seed: int, n: int):
    rng = random.Random(seed)
    valid = [
        build_batch([b"a" * i for i in range(1, 6)], keys=[None, b"k", None, b"kk", None]),
        build_batch([b"x"] * 3, headers=[[("h", b"v")], [], [("a", None)]], base_offset=5)
        + build_batch([b"yy"] * 2, base_offset=8),
        build_batch([b"z" * 40] * 4, compression="zstd"),
        build_batch([b"z" * 40] * 4, compression="gzip"),
        # long enough (about 11 KB) for the folding CRC paths in the checked decode
        build_batch([b"%04d" % i + b"w" * 96 for i in range(100)], base_offset=3),
    ]
    for _ in range(n):
        kind = rng.randrange(4)
        if kind == 0:
            yield bytes(rng.getrandbits(8) for _ in range(rng.randrange(200)))
        else:
            data = bytearray(rng.choice(valid))
            for _ in range(rng.randint(1, 5)):
                op = rng.randrange(3)
                if op == 0 and data:
                    data[rng.randrange(len(data))] = rng.randrange(256)
                elif op == 1 and data:
                    del data[rng.randrange(len(data)):]
                else:
                    data += bytes(rng.getrandbits(8) for _ in range(rng.randrange(30)))
            yield bytes(data)


@pytest.mark.parametrize("seed", range(4))
def test_fuzz_batch_targets(seed):
    for data in corpus(seed, 1500):
        fuzz_batch.one_input(data)


@pytest.mark.parametrize("seed", range(4))
def test_fuzz_recover_target(seed):
    for data in corpus(100 + seed, 1000):
        fuzz_recover.one_input(data)


@pytest.mark.parametrize("seed", range(4))
def test_fuzz_builder_target(seed):
    """Header sections and records sections: random, and mutated real ones (a batch's
    bytes past its header are a records section)."""
    for data in corpus(200 + seed, 1000):
        fuzz_builder.one_input(data)
        fuzz_builder.one_input(data[61:])

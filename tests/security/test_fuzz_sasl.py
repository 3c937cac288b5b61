"""The SASL fuzz target (fuzz/fuzz_sasl.py) on seeded random inputs and on mutations of
real client messages: mechanisms fail cleanly, never complete without the password."""
from __future__ import annotations

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fuzz"))
import fuzz_sasl  # noqa: E402

from pylog.security.scram import ScramClient  # noqa: E402


def test_random_inputs():
    rng = random.Random(58)
    for _ in range(400):
        fuzz_sasl.one_input(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))))


def test_mutated_real_messages():
    rng = random.Random(33)
    for mechanism_byte, mechanism in ((1, "SCRAM-SHA-256"), (2, "SCRAM-SHA-512")):
        client = ScramClient(mechanism, "u", "wrong")
        first = client.first()
        final = b"c=biws,r=" + b"x" * 40 + b",p=" + b"A" * 44
        for _ in range(150):
            b = bytearray(first if rng.random() < 0.5 else final)
            for _ in range(rng.randrange(0, 4)):
                b[rng.randrange(len(b))] = rng.randrange(255)
            cut = bytes(b[:rng.randrange(1, len(b) + 1)])
            fuzz_sasl.one_input(bytes([mechanism_byte | (0x80 if rng.random() < 0.5 else 0)]) + cut)
            fuzz_sasl.one_input(bytes([mechanism_byte]) + first + b"\xff" + cut)
    for _ in range(150):  # PLAIN: authzid NUL user NUL password, mutated
        token = bytearray(b"\x00u\x00" + fuzz_sasl.PASSWORD[:-1].encode() + b"?")
        for _ in range(rng.randrange(0, 3)):
            token[rng.randrange(len(token))] = rng.randrange(255)
        fuzz_sasl.one_input(bytes([0]) + bytes(token))


def test_the_real_password_does_complete():
    # the contract's other half: the harness would notice a completed exchange
    import pytest

    with pytest.raises(AssertionError, match="completed without the password"):
        fuzz_sasl.one_input(bytes([0]) + b"\x00u\x00" + fuzz_sasl.PASSWORD.encode())

"""The TLS fuzz target (fuzz/fuzz_tls.py) on seeded mutations of a real ClientHello and
on random bytes, in-process: whatever a client sends before a handshake, the server's
TlsTransport never raises, reports a failed handshake exactly once and closes, and
hands nothing to a Kafka connection."""
from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fuzz"))
import fuzz_tls  # noqa: E402


@pytest.fixture(scope="module")
def harness():
    h = fuzz_tls.Harness()
    yield h
    h.close()


def test_a_whole_client_hello_waits_for_more(harness):
    hello = harness.client_hello()
    assert hello[0] == 0x16 and len(hello) > 100
    for step in (0, 1, 7, 64):
        fuzz_tls.one_input(bytes([step]) + hello, harness)
        assert harness.failures == ["the client closed the connection during the handshake"]


@pytest.mark.parametrize("seed", range(3))
def test_mutated_client_hellos_and_random_bytes(harness, seed):
    rng = random.Random(seed)
    hello = harness.client_hello()
    failed = 0
    n = 0
    for _ in range(150):
        kind = rng.randrange(4)
        if kind == 0:
            body = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400)))
        elif kind == 1:
            body = hello[:rng.randrange(1, len(hello))]
        else:
            b = bytearray(hello)
            for _ in range(rng.randrange(1, 8)):
                b[rng.randrange(len(b))] = rng.randrange(256)
            if kind == 3:
                del b[rng.randrange(1, len(b)):]
            body = bytes(b)
        fuzz_tls.one_input(bytes([rng.randrange(256)]) + body, harness)
        n += 1
        failed += len(harness.failures)
    assert n == 150 and failed == 150  # every input ended as exactly one failed handshake

"""The request fuzz target (fuzz/fuzz_request.py) on seeded mutations of a valid request
of every API version, so the normal test run exercises decoding *and* the handlers:
each input must decode or raise a protocol error, and the handlers (over a real
Broker) must answer or close the connection without an internal error."""
from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

from tests.protocol.samples import sample_frames
from tests.protocol.test_codec import _mutations

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fuzz"))
import fuzz_request  # noqa: E402


@pytest.fixture
def harness(tmp_path):
    h = fuzz_request.Harness(str(tmp_path / "data"))
    yield h
    h.close()


@pytest.mark.parametrize("seed", range(2))
def test_mutated_requests_never_cause_internal_errors(harness, seed):
    rng = random.Random(seed)
    frames = [bytes(f) for _, _, f in sample_frames()]
    n = 0
    for frame in frames:
        fuzz_request.one_input(frame, harness)  # the valid request itself
        for data in _mutations(rng, frame, 12):
            fuzz_request.one_input(data, harness)
            n += 1
    assert n == len(frames) * 12

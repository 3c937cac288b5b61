"""Randomised simulation runs with the invariant checker (a bounded number in CI;
`pylog simulate --seeds 1000` runs thousands)."""
from __future__ import annotations

import pytest

from pylog.cluster.simulator import random_run


@pytest.mark.parametrize("seed", range(6))
def test_invariants_hold(seed, tmp_path):
    report = random_run(seed, steps=20, root=tmp_path / "sim")
    assert report.acked > 0  # the runs do produce (a run that writes nothing proves nothing)


def test_a_seed_alone_reproduces_a_run(tmp_path):
    first = random_run(17, steps=15, root=tmp_path / "a")
    second = random_run(17, steps=15, root=tmp_path / "b")
    assert (first.faults, first.acked, first.failed, first.ledger) == \
        (second.faults, second.acked, second.failed, second.ledger)
    other = random_run(18, steps=15, root=tmp_path / "c")
    assert other.faults != first.faults  # and the seed matters

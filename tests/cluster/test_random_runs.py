"""Randomised simulation runs with the invariant checker (a bounded number in CI;
`pylog simulate --seeds 1000` runs thousands)."""
from __future__ import annotations

import pytest

from pylog.cluster.simulator import random_run


@pytest.mark.parametrize("seed", range(6))
def test_invariants_hold(seed, tmp_path):
    report = random_run(seed, steps=20, root=tmp_path / "sim")
    assert report.acked > 0  # the runs do produce (a run that writes nothing proves nothing)

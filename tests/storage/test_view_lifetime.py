"""Zero-copy views stay valid or fail cleanly (Invariant 3, issue point 6).

Each scenario of tests/storage/view_scenarios.py runs in a child process: the child
must exit normally (no SIGSEGV / SIGBUS, no assertion failure), which means every view
it took still showed exactly its original bytes, or raised a Python exception."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.storage.view_scenarios import SCENARIOS

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_views_survive(tmp_path, scenario):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "tests.storage.view_scenarios", scenario, str(tmp_path)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    if proc.returncode < 0:
        pytest.fail(f"{scenario}: the child died of {signal.Signals(-proc.returncode).name}\n{proc.stderr[-3000:]}")
    assert proc.returncode == 0, f"{scenario}:\n{proc.stderr[-3000:]}"
    assert proc.stdout.strip().endswith("OK " + scenario)

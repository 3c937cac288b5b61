"""Fixtures of the cluster tests: clusters of real broker processes (procs.py)."""
from tests.cluster.procs import process_cluster  # noqa: F401 - a fixture

import pytest  # noqa: E402


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test item, so fixtures know whether it failed
    (the process cluster prints its brokers' logs then)."""
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)

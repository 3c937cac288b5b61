"""Fixtures of the cluster tests: clusters of real broker processes (procs.py)."""
from tests.cluster.procs import process_cluster  # noqa: F401 - a fixture

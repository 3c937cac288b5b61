"""Fixtures of the Log tests (helpers live in tests/storage/helpers.py)."""
import shutil

import pytest

from tests.storage.helpers import FakeClock


@pytest.fixture
def clock():
    return FakeClock()


def crash_copy(src, dst):
    """What a crash leaves: the files as the page cache has them, no clean shutdown."""
    shutil.copytree(src, dst)
    lock = dst / ".lock"
    if lock.exists():
        lock.unlink()

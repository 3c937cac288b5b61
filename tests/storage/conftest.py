import shutil

import pytest


class FakeClock:
    """A virtual clock in ms for segment.ms / retention.ms / flush.ms tests."""

    def __init__(self, now: int = 1_700_000_000_000) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: int) -> None:
        self.now += ms


@pytest.fixture
def clock():
    return FakeClock()


def crash_copy(src, dst):
    """What a crash leaves: the files as the page cache has them, no clean shutdown."""
    shutil.copytree(src, dst)
    lock = dst / ".lock"
    if lock.exists():
        lock.unlink()

"""Fixtures of the console's tests: ``browser``, a headless Chromium (tests/browser.py)."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser import provide_browser


@pytest.fixture
def browser() -> Iterator[Any]:
    """A selenium WebDriver of headless Chromium (1400x1000, console log kept), quit after
    the test, with any chromedriver/chromium process it started killed by PID.  Fails, never
    skips, when chromium, chromedriver or selenium is missing."""
    yield from provide_browser()

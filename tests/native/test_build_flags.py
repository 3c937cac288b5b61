"""The test build keeps the C core's assert()s (PYLOG_ASSERT, PYLOG_SANITIZE or
PYLOG_DEBUG at build time; .ci/run sets PYLOG_ASSERT for both build and tests)."""
from __future__ import annotations

import os
import sys

import pytest

import pylog._native._pylog as native

WANTS_ASSERT = any(os.environ.get(v) for v in ("PYLOG_ASSERT", "PYLOG_SANITIZE", "PYLOG_DEBUG"))


@pytest.mark.skipif(not WANTS_ASSERT, reason="a release build (-DNDEBUG) is under test")
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's assert symbol")
def test_assertions_are_compiled_in():
    # glibc's assert() calls __assert_fail: the symbol is imported only if one survived
    with open(native.__file__, "rb") as f:
        assert b"__assert_fail" in f.read()

"""The test build keeps the C core's assert()s and the release build drops them.

PYLOG_ASSERT, PYLOG_SANITIZE or PYLOG_DEBUG at build time keep them (.ci/run sets
PYLOG_ASSERT for both the build and the tests); without any of them the build is the
release one (-DNDEBUG).  Build and test with the same settings."""
from __future__ import annotations

import os

import pylog._native._pylog as native

WANTS_ASSERT = any(os.environ.get(v) for v in ("PYLOG_ASSERT", "PYLOG_SANITIZE", "PYLOG_DEBUG"))


def test_assertions_are_compiled_in_exactly_when_asked_for():
    # glibc's assert() calls __assert_fail (macOS: __assert_rtn): the symbol is imported
    # only if an assertion survived the preprocessor
    with open(native.__file__, "rb") as f:
        data = f.read()
    has = b"__assert_fail" in data or b"__assert_rtn" in data
    if WANTS_ASSERT:
        assert has, "built with PYLOG_ASSERT/PYLOG_SANITIZE/PYLOG_DEBUG set, but no assert() survived"
    else:
        assert not has, ("this build keeps assert()s though none of PYLOG_ASSERT, PYLOG_SANITIZE, "
                         "PYLOG_DEBUG is set now: build and test with the same settings")

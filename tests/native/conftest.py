"""Fixtures for the native segment/index tests (they drive csrc/ through cffi directly)."""
from __future__ import annotations

import pytest

from pylog._native import ffi, lib
from pl_native_helpers import Seg, make_batch


@pytest.fixture(params=["memcpy", "pwrite", "buffered"])
def make_seg(tmp_path, request):
    """Factory of mapped segments in tmp_path; all closed at teardown.  Each test runs
    with appends copied into the mapping, written through the file (pwrite) after the
    copy, and copied into a scratch buffer then written (pl_segment_append_buffered)."""
    made: list[Seg] = []

    def factory(**kw) -> Seg:
        kw.setdefault("name", f"seg{len(made)}")
        kw.setdefault("write_path", request.param)
        s = Seg(tmp_path, **kw)
        made.append(s)
        return s

    yield factory
    for s in made:
        s.close()


@pytest.fixture
def real_batch_c():
    """Tests that rely on batch.c's full validation: it must accept a well-formed batch."""
    b = make_batch([b"x"])
    assert lib.pl_batch_validate(b, len(b), ffi.NULL) == lib.PL_OK

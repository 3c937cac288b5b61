"""Fixtures for the native segment/index tests (they drive csrc/ through cffi directly)."""
from __future__ import annotations

import pytest

from pylog._native import ffi, lib
from pl_native_helpers import Seg, make_batch


@pytest.fixture
def make_seg(tmp_path):
    """Factory of mapped segments in tmp_path; all closed at teardown."""
    made: list[Seg] = []

    def factory(**kw) -> Seg:
        kw.setdefault("name", f"seg{len(made)}")
        s = Seg(tmp_path, **kw)
        made.append(s)
        return s

    yield factory
    for s in made:
        s.close()


def _batch_c_is_real() -> bool:
    b = make_batch([b"x"])
    return lib.pl_batch_validate(b, len(b), ffi.NULL) == lib.PL_OK


@pytest.fixture
def real_batch_c():
    """Skip a test that needs csrc/batch.c's CRC validation / builder (not a stub)."""
    if not _batch_c_is_real():
        pytest.skip("csrc/batch.c is still a stub (pl_batch_validate)")

"""pl_batch_input.value_pos / key_pos: values and keys read at given positions build the
same batch as the same bytes laid end to end; a negative position is refused."""
from __future__ import annotations

import numpy as np

from pylog._native import ffi, lib


def _build(values, vlens, keys=None, klens=None, vpos=None, kpos=None):
    keep = []
    cd = ffi.new("pl_batch_input *")
    cd.count = len(vlens)
    for name, arr, ctype in (("value_lens", vlens, "int32_t[]"), ("key_lens", klens, "int32_t[]"),
                             ("value_pos", vpos, "int64_t[]"), ("key_pos", kpos, "int64_t[]")):
        if arr is not None:
            a = np.ascontiguousarray(arr, dtype=np.int32 if ctype == "int32_t[]" else np.int64)
            c = ffi.from_buffer(ctype, a)
            keep += [a, c]
            setattr(cd, name, c)
    cd.values = ffi.from_buffer(values)
    if keys is not None:
        cd.keys = ffi.from_buffer(keys)
    cd.base_timestamp = 1000
    cd.producer_id = cd.producer_epoch = cd.base_sequence = cd.partition_leader_epoch = -1
    out = ffi.new("uint8_t[]", 4096)
    n = lib.pl_batch_build(cd, out, 4096)
    return n if n < 0 else ffi.buffer(out, n)[:]


def test_positions_build_the_same_batch():
    plain = _build(b"aabbbd", [2, 3, -1, 0, 1], b"k1k2", [2, -1, 2, -1, -1])
    # the same values and keys, scattered in one shared buffer
    buf = b"..d..bbb.k2.aa.k1"
    pos = _build(buf, [2, 3, -1, 0, 1], buf, [2, -1, 2, -1, -1],
                 vpos=[12, 5, -7, 0, 2], kpos=[15, -3, 9, 0, 0])  # ignored where length <= 0
    assert isinstance(plain, bytes) and pos == plain


def test_negative_position_refused():
    assert _build(b"abc", [1, 1], vpos=[0, -1]) == lib.PL_E_ARG
    assert _build(b"abc", [1], b"k", [1], kpos=[-2]) == lib.PL_E_ARG

"""Record batches as a Fetch answer carries them: whole batches only.

A Kafka broker may end a partition's records with a batch cut short (it fills
max_bytes from the log as it is); the client keeps the whole batches before it and
fetches the rest next time.  This walks the 61-byte batch headers (one struct unpack
per batch, never per record).
"""
from __future__ import annotations

import struct
from typing import Any, List, Tuple

from pylog.errors import CorruptRecordError

__all__ = ["whole_prefix", "whole_batches"]

_HEAD = struct.Struct(">qi")  # baseOffset, batchLength
_LAST_DELTA = struct.Struct(">i")  # lastOffsetDelta at byte 23
_BATCH_OVERHEAD = 12  # baseOffset + batchLength
_MIN_BATCH_LENGTH = 49  # a v2 header after batchLength


def whole_prefix(buf: Any) -> Tuple[int, int]:
    """(bytes of the whole batches at the start of ``buf``, offset after the last of
    them or -1 when there is none).  CorruptRecordError for a batch length that cannot
    be (shorter than a header)."""
    mv = buf if isinstance(buf, memoryview) else memoryview(buf)
    pos, end = 0, len(mv)
    next_offset = -1
    while end - pos >= 61:
        base, length = _HEAD.unpack_from(mv, pos)
        if length < _MIN_BATCH_LENGTH:
            raise CorruptRecordError(f"record batch at byte {pos} of a fetch answer has a bad batchLength {length}")
        size = _BATCH_OVERHEAD + length
        if size > end - pos:
            break
        next_offset = base + _LAST_DELTA.unpack_from(mv, pos + 23)[0] + 1
        pos += size
    return pos, next_offset


def whole_batches(buf: Any) -> List[memoryview]:
    """Views of the whole batches of ``buf`` (a cut-short last one is left out)."""
    mv = buf if isinstance(buf, memoryview) else memoryview(buf)
    out = []
    pos, end = 0, whole_prefix(mv)[0]
    while pos < end:
        size = _BATCH_OVERHEAD + _HEAD.unpack_from(mv, pos)[1]
        out.append(mv[pos:pos + size])
        pos += size
    return out

"""Codec round trips and the decompression limit (a small batch must not expand without
bound)."""
from __future__ import annotations

import importlib.util
import io

import pytest
import zstandard

from pylog.errors import CorruptRecordError
from pylog.records.compression import CODECS, compress, decompress

AVAILABLE = [c for c in CODECS.values()
             if c not in (2, 3)
             or (c == 2 and (importlib.util.find_spec("cramjam") or importlib.util.find_spec("snappy")))
             or (c == 3 and importlib.util.find_spec("lz4"))]


@pytest.mark.parametrize("codec", AVAILABLE)
def test_round_trip(codec):
    data = b"".join(b"record-%d;" % i for i in range(2000))
    assert decompress(codec, compress(codec, data)) == data


@pytest.mark.parametrize("codec", [c for c in AVAILABLE if c])
def test_expansion_over_the_limit_is_refused(codec):
    bomb = compress(codec, b"\0" * 50_000)
    assert decompress(codec, bomb, limit=50_000) == b"\0" * 50_000
    with pytest.raises(CorruptRecordError, match="expands beyond 1000 bytes"):
        decompress(codec, bomb, limit=1000)


def test_zstd_frame_without_content_size():
    """Streaming encoders (as some Kafka clients use) omit the frame's content size."""
    data = b"abc" * 10_000
    buf = io.BytesIO()
    w = zstandard.ZstdCompressor().stream_writer(buf, closefd=False)
    w.write(data)
    w.flush(zstandard.FLUSH_FRAME)
    frame = buf.getvalue()
    assert zstandard.frame_content_size(frame) == -1
    assert decompress(4, frame) == data
    with pytest.raises(CorruptRecordError):
        decompress(4, frame, limit=100)


@pytest.mark.parametrize("codec", [c for c in AVAILABLE if c])
def test_garbage_is_corrupt_record(codec):
    with pytest.raises(CorruptRecordError):
        decompress(codec, b"\x01\x02not a frame at all\xff" * 3)

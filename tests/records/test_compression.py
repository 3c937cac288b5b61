"""Codec round trips and the decompression limit (a small batch must not expand without
bound)."""
from __future__ import annotations

import importlib.util
import io

import pytest
import zstandard

from pylog.errors import CorruptRecordError, UnsupportedCompressionType
from pylog.records.compression import CODECS, compress, decompress

def available(codec):
    """snappy and lz4 are optional packages (cramjam or python-snappy; lz4)."""
    if codec == 2:
        return bool(importlib.util.find_spec("cramjam") or importlib.util.find_spec("snappy"))
    if codec == 3:
        return bool(importlib.util.find_spec("lz4"))
    return True


@pytest.mark.parametrize("codec", sorted(CODECS.values()))
def test_round_trip(codec):
    data = b"".join(b"record-%d;" % i for i in range(2000))
    if not available(codec):  # the promise then is a clear error naming the package
        with pytest.raises(UnsupportedCompressionType, match="pip install"):
            compress(codec, data)
        return
    assert decompress(codec, compress(codec, data)) == data


AVAILABLE = [c for c in CODECS.values() if available(c)]


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

"""Compression codecs for record batches, by Kafka's codec ids.

A compressed v2 batch carries its whole records section as one compressed block after
the 61-byte header (attributes bits 0-2 name the codec).  zstd (``zstandard``) and gzip
(``zlib``) are always available; snappy (``python-snappy`` or ``cramjam``) and lz4
(``lz4``) are used when installed, and otherwise raise UnsupportedCompressionType
saying what to install.  Decompression is capped at MAX_DECOMPRESSED_BYTES so that a
hostile batch cannot exhaust memory.
"""
from __future__ import annotations

import threading
import types
import zlib
from typing import Any, Dict, Union

from pylog.errors import CorruptRecordError, InvalidArgument, UnsupportedCompressionType

__all__ = ["CODECS", "CODEC_NAMES", "codec_id", "compress", "decompress", "decompressed_size",
           "decompress_into", "MAX_DECOMPRESSED_BYTES"]

#: Kafka's compression.type names and codec ids.
CODECS: Dict[str, int] = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
CODEC_NAMES: Dict[int, str] = {v: k for k, v in CODECS.items()}
#: Largest records section a compressed batch may expand to.
MAX_DECOMPRESSED_BYTES = 0x7FFFFFF0
_XERIAL_MAGIC = b"\x82SNAPPY\x00"


def codec_id(compression: Union[str, int]) -> int:
    """The codec id for a compression.type name or id; InvalidArgument if unknown."""
    if isinstance(compression, str):
        try:
            return CODECS[compression.lower()]
        except KeyError:
            raise InvalidArgument(
                f"unknown compression type {compression!r}; expected one of {sorted(CODECS)}") from None
    if isinstance(compression, int) and not isinstance(compression, bool) and compression in CODEC_NAMES:
        return compression
    raise InvalidArgument(f"unknown compression codec {compression!r}")


def _snappy():
    try:
        import snappy  # type: ignore

        return snappy.compress, snappy.decompress
    except ImportError:
        pass
    try:
        import cramjam  # type: ignore

        return (lambda b: bytes(cramjam.snappy.compress_raw(b)),
                lambda b: bytes(cramjam.snappy.decompress_raw(b)))
    except ImportError:
        raise UnsupportedCompressionType(
            "snappy compression needs the 'python-snappy' or 'cramjam' package: pip install cramjam") from None


def _lz4():
    try:
        import lz4.frame  # type: ignore
    except ImportError:
        raise UnsupportedCompressionType("lz4 compression needs the 'lz4' package: pip install lz4") from None
    return lz4.frame


_tls = threading.local()


def _zstd_contexts() -> Any:
    """This thread's zstd compressor and decompressor (creating one costs ~15 us; they
    are not thread-safe, so one pair per thread)."""
    ctx = getattr(_tls, "zstd", None)
    if ctx is None:
        import zstandard

        ctx = _tls.zstd = types.SimpleNamespace(c=zstandard.ZstdCompressor(), d=zstandard.ZstdDecompressor())
    return ctx


def compress(codec: int, data: bytes) -> bytes:
    """Compress a records section with codec id ``codec``."""
    if codec == 0:
        return bytes(data)
    if codec == 1:
        c = zlib.compressobj(6, zlib.DEFLATED, 31)  # gzip framing, as Kafka's GZIP
        return c.compress(data) + c.flush()
    if codec == 2:
        return _snappy()[0](bytes(data))
    if codec == 3:
        return _lz4().compress(bytes(data))
    if codec == 4:
        return _zstd_contexts().c.compress(bytes(data))
    raise UnsupportedCompressionType(f"unknown compression codec id {codec}")


def _capped(chunks_total: int, limit: int) -> None:
    if chunks_total > limit:
        raise CorruptRecordError(f"compressed batch expands beyond {limit} bytes; refusing it")


def decompress(codec: int, data: bytes, limit: int = MAX_DECOMPRESSED_BYTES) -> bytes:
    """Decompress a records section; CorruptRecordError if it is damaged or too large."""
    try:
        if codec == 0:
            return bytes(data)
        if codec == 1:
            d = zlib.decompressobj(47)  # gzip or zlib header, auto-detected
            out = d.decompress(bytes(data), limit + 1)
            if len(out) > limit or d.unconsumed_tail:
                _capped(limit + 1, limit)
            return out
        if codec == 2:
            raw = bytes(data)
            dec = _snappy()[1]
            if raw.startswith(_XERIAL_MAGIC):  # Java client's xerial framing
                pos, parts, total = 16, [], 0
                while pos + 4 <= len(raw):
                    n = int.from_bytes(raw[pos:pos + 4], "big")
                    pos += 4
                    part = dec(raw[pos:pos + n])
                    total += len(part)
                    _capped(total, limit)
                    parts.append(part)
                    pos += n
                return b"".join(parts)
            out = dec(raw)
            if len(out) > limit:
                _capped(limit + 1, limit)
            return out
        if codec == 3:
            out = _lz4().decompress(bytes(data))
            if len(out) > limit:
                _capped(limit + 1, limit)
            return out
        if codec == 4:
            import zstandard

            raw = data if isinstance(data, (bytes, memoryview)) else bytes(data)
            dctx = _zstd_contexts().d
            size = zstandard.frame_content_size(raw)
            out = None
            if 0 <= size <= limit:  # a first frame that states its size: one call
                dobj = dctx.decompressobj()
                out = dobj.decompress(raw)
                if dobj.unused_data:  # more frames follow (decompress() would drop them)
                    out = None
            if out is None:  # size unknown (streamed frames), too large, or several frames
                out = dctx.stream_reader(raw, read_across_frames=True).read(limit + 1)
            if len(out) > limit:
                _capped(limit + 1, limit)
            return out
    except (UnsupportedCompressionType, CorruptRecordError):
        raise
    except Exception as exc:  # each library raises its own error types
        raise CorruptRecordError(f"cannot decompress {CODEC_NAMES.get(codec, codec)} batch: {exc}") from exc
    raise UnsupportedCompressionType(f"unknown compression codec id {codec}")


def decompressed_size(codec: int, data: Any) -> int:
    """The size a records section states it decompresses to, or -1 when it does not say.

    Only zstd frames carry it (the frame content size, which the zstandard library and
    librdkafka write; Java's streaming compressor does not).  A size above
    MAX_DECOMPRESSED_BYTES is reported as -1: the caller then decompresses with the cap.
    The size is a claim of the sender: :func:`decompress_into` checks it.
    """
    if codec != 4:
        return -1
    import zstandard

    try:
        size = zstandard.frame_content_size(data)
    except zstandard.ZstdError:
        return -1
    return size if 0 <= size <= MAX_DECOMPRESSED_BYTES else -1


def decompress_into(codec: int, data: Any, out: memoryview) -> bool:
    """Decompress a records section straight into ``out``, which must be exactly as long
    as :func:`decompressed_size` said (no intermediate bytes object).

    Returns True when the section filled ``out`` exactly and nothing follows; False when
    it does not match that size (several frames, or a wrong stated size): the caller then
    falls back to :func:`decompress`.  Raises CorruptRecordError if it is damaged.
    """
    if codec != 4:
        return False
    want = len(out)
    try:
        reader = _zstd_contexts().d.stream_reader(data, read_across_frames=True)
        filled = 0
        while filled < want:
            n = reader.readinto(out[filled:])
            if not n:
                return False
            filled += n
        return not reader.read(1)
    except Exception as exc:  # zstandard.ZstdError and friends
        raise CorruptRecordError(f"cannot decompress zstd batch: {exc}") from exc

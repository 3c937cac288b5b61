"""pylog.records: Kafka v2 record batches (RecordBatch, Record), codecs, numpy views.

Uses only pylog._native and the leaf modules pylog.errors and pylog.util.
"""
from pylog.records.batch import (
    PreparedBatch,
    Record,
    RecordArrays,
    RecordBatch,
    build_batch,
    decode_batches,
    decode_records,
    encode_headers,
    iter_batches,
    iter_records,
    join_views,
    prepare_batch,
    validate_batches,
)
from pylog.records.compression import CODECS, codec_id, compress, decompress
from pylog.records.rewrite import empty_batch, rewrite_batch, with_last_offset

__all__ = [
    "Record",
    "RecordBatch",
    "RecordArrays",
    "PreparedBatch",
    "build_batch",
    "prepare_batch",
    "validate_batches",
    "iter_batches",
    "decode_records",
    "decode_batches",
    "iter_records",
    "join_views",
    "encode_headers",
    "rewrite_batch",
    "empty_batch",
    "with_last_offset",
    "CODECS",
    "codec_id",
    "compress",
    "decompress",
]

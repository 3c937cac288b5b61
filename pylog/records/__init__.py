"""pylog.records: Kafka v2 record batches (RecordBatch, Record), codecs, numpy views.

Uses only pylog._native and the leaf modules pylog.errors and pylog.util.
"""
from pylog.records.batch import (
    BATCH_HEADER,
    PreparedBatch,
    Record,
    RecordArrays,
    RecordBatch,
    build_batch,
    check_crcs,
    decode_batches,
    decode_records,
    encode_headers,
    iter_batches,
    iter_records,
    lazy_records,
    join_views,
    prepare_batch,
    record_list,
    validate_batches,
)
from pylog.records.builder import BatchBuilder
from pylog.records.compression import CODECS, codec_id, compress, decompress
from pylog.records.rewrite import empty_batch, rewrite_batch, with_last_offset

__all__ = [
    "BATCH_HEADER",
    "Record",
    "RecordBatch",
    "RecordArrays",
    "PreparedBatch",
    "BatchBuilder",
    "build_batch",
    "prepare_batch",
    "validate_batches",
    "check_crcs",
    "iter_batches",
    "decode_records",
    "decode_batches",
    "iter_records",
    "record_list",
    "lazy_records",
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

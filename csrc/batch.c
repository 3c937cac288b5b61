/* STUB: replaced by the real implementation. */
#include "pylog.h"

const char *pl_strerror(int status)
{ return "stub"; }

uint64_t pl_batch_size_bound(const pl_batch_input *in)
{ return PL_E_ARG; }

int64_t pl_records_encode(const pl_batch_input *in, uint8_t *out, uint64_t out_cap)
{ return PL_E_ARG; }

int64_t pl_batch_build(const pl_batch_input *in, uint8_t *out, uint64_t out_cap)
{ return PL_E_ARG; }

int64_t pl_batch_seal(uint8_t *buf, uint64_t buf_cap, uint64_t rec_len, const pl_batch_info *info)
{ return PL_E_ARG; }

int pl_batch_parse_header(const uint8_t *buf, uint64_t len, pl_batch_info *out)
{ return PL_E_ARG; }

int pl_batch_validate(const uint8_t *buf, uint64_t len, pl_batch_info *out)
{ return PL_E_ARG; }

int pl_batches_validate(const uint8_t *buf, uint64_t len, uint32_t *n_batches, uint64_t *valid_bytes, uint64_t *n_records)
{ return PL_E_ARG; }

int pl_batch_set_offset(uint8_t *buf, uint64_t len, int64_t base_offset, int32_t epoch)
{ return PL_E_ARG; }

int pl_records_decode(const uint8_t *recs, uint64_t len, uint32_t count, int64_t base_offset, int64_t base_timestamp, int64_t max_timestamp, int16_t attributes, int64_t pos_base, pl_record_arrays *out, uint32_t first)
{ return PL_E_ARG; }

int pl_batches_decode(const uint8_t *buf, uint64_t len, int64_t min_offset, pl_record_arrays *out, uint32_t first, uint32_t *n_out, uint64_t *consumed)
{ return PL_E_ARG; }

int pl_varint_encode(int64_t value, uint8_t *out, uint64_t cap)
{ return PL_E_ARG; }

int pl_varint_decode(const uint8_t *buf, uint64_t len, int64_t *value)
{ return PL_E_ARG; }

/* STUB: replaced by the real implementation. */
#include "pylog.h"

int64_t pl_bench_copy_ceiling(uint8_t *dst, uint64_t dst_cap, const uint8_t *src, uint64_t src_len, uint64_t total_bytes)
{ return PL_E_ARG; }

/* STUB: replaced by the real implementation. */
#include "pylog.h"

int pl_index_lookup(const pl_segment *seg, int64_t target_offset, uint32_t *rel_offset, uint32_t *position)
{ return PL_E_ARG; }

int pl_segment_find_timestamp(const pl_segment *seg, int64_t ts, uint64_t *position, int64_t *base_offset)
{ return PL_E_ARG; }

int pl_segment_check_indexes(const pl_segment *seg)
{ return PL_E_ARG; }

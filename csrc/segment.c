/* STUB: replaced by the real implementation. */
#include "pylog.h"

int pl_segment_init(pl_segment *seg, int64_t base_offset, uint32_t index_interval_bytes)
{ return PL_E_ARG; }

int pl_segment_append(pl_segment *seg, const uint8_t *batches, uint64_t len, int32_t leader_epoch, int assign_offsets, pl_append_result *out)
{ return PL_E_ARG; }

int pl_segment_append_build(pl_segment *seg, const pl_batch_input *in, pl_append_result *out)
{ return PL_E_ARG; }

void pl_segment_snapshot_get(const pl_segment *seg, pl_segment_snapshot *out)
{ (void)0; }

int pl_segment_read(const pl_segment *seg, int64_t offset, uint64_t max_bytes, int64_t max_offset, uint64_t *positions, uint32_t max_batches, uint32_t *n, uint64_t *end)
{ return PL_E_ARG; }

int pl_segment_lookup(const pl_segment *seg, int64_t offset, uint64_t *position)
{ return PL_E_ARG; }

int pl_segment_recover(pl_segment *seg, uint64_t start_position, uint64_t *truncated_bytes)
{ return PL_E_ARG; }

int pl_segment_load_clean(pl_segment *seg, uint64_t log_size)
{ return PL_E_ARG; }

int pl_segment_truncate(pl_segment *seg, int64_t offset, uint64_t *new_size)
{ return PL_E_ARG; }

int pl_segment_flush(pl_segment *seg)
{ return PL_E_ARG; }

int pl_map_detach(uint8_t *addr, uint64_t len)
{ return PL_E_ARG; }

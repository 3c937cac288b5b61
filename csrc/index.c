/*
 * index.c -- searching and checking a segment's offset index and time index.
 *
 * Owns the read side of the two sparse indexes of a segment (segment.c writes
 * them while appending, recovering and truncating):
 *
 *   .index      n x 8 bytes                 .timeindex  m x 12 bytes
 *   +----------+----------+                 +-------------------+----------+
 *   | rel u32  | pos u32  |  entry 0        | timestamp i64     | rel u32  |  entry 0
 *   +----------+----------+                 +-------------------+----------+
 *   | rel u32  | pos u32  |  entry 1        | timestamp i64     | rel u32  |  entry 1
 *   +----------+----------+                 +-------------------+----------+
 *   :                     :                 :                              :
 *   (big-endian; rel = offset - base_offset; bytes past n / m are stale, never read)
 *
 * Invariants (checked by pl_segment_check_indexes, relied on by the searches):
 *   - .index: rel and pos strictly increasing; every pos is the start of a batch
 *     below log_size whose baseOffset is base_offset + rel.  Positions in the index
 *     are always at batch boundaries.
 *   - .timeindex: timestamps strictly increasing, rel non-decreasing; entry (T, rel)
 *     says: the batch at base_offset + rel has maxTimestamp T and no earlier batch
 *     reached T.  Hence every batch before it has maxTimestamp < T.
 *
 * Concurrency.  Readers load next_offset, timeindex_entries, index_entries, then
 * log_size (acquire); the writer stores them in the opposite order (release), so
 * every entry a reader sees points below the log_size it sees, and a batch counts
 * as present only if it starts below the next_offset loaded first.  Entries are never
 * rewritten while readers may run (truncation/recovery exclude readers).
 *
 * A corrupt index never makes a search read out of bounds: every position taken
 * from an entry is checked against log_size before the log is touched.
 */
#include "internal.h"

/* ---- the one binary search ----------------------------------------------- */

static int64_t entry_key(const pl_segment *seg, pl_index_key key, uint32_t i)
{
    uint32_t rel, pos;
    int64_t ts;

    switch (key) {
    case PL_KEY_OI_OFFSET:
        pl_oi_get(seg, i, &rel, &pos);
        return rel;
    case PL_KEY_OI_POSITION:
        pl_oi_get(seg, i, &rel, &pos);
        return pos;
    case PL_KEY_TI_TIME:
        pl_ti_get(seg, i, &ts, &rel);
        return ts;
    case PL_KEY_TI_OFFSET:
        pl_ti_get(seg, i, &ts, &rel);
        return rel;
    }
    return 0;
}

PL_HIDDEN uint32_t pl_index_count_le(const pl_segment *seg, pl_index_key key, uint32_t n,
                                     int64_t target)
{
    uint32_t lo = 0, hi = n; /* answer in [lo, hi] */

    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (entry_key(seg, key, mid) <= target)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Published counts, loaded in the order that keeps them within log_size (see top). */
static uint32_t load_index_entries(const pl_segment *seg)
{
    uint32_t n = __atomic_load_n(&seg->index_entries, __ATOMIC_ACQUIRE);
    uint32_t cap = pl_oi_capacity(seg);
    return n < cap ? n : cap;
}

static uint32_t load_timeindex_entries(const pl_segment *seg)
{
    uint32_t n = __atomic_load_n(&seg->timeindex_entries, __ATOMIC_ACQUIRE);
    uint32_t cap = pl_ti_capacity(seg);
    return n < cap ? n : cap;
}

/* ---- public searches ------------------------------------------------------ */

int pl_index_lookup(const pl_segment *seg, int64_t target_offset, uint32_t *rel_offset,
                    uint32_t *position)
{
    if (seg == NULL || rel_offset == NULL || position == NULL)
        return PL_E_ARG;
    *rel_offset = 0;
    *position = 0;

    uint32_t n = load_index_entries(seg);
    if (n == 0 || target_offset < seg->base_offset)
        return PL_OK;
    /* target >= base_offset >= 0: the difference cannot overflow */
    int64_t rel = target_offset - seg->base_offset;
    uint32_t k = pl_index_count_le(seg, PL_KEY_OI_OFFSET, n,
                                   rel > (int64_t)UINT32_MAX ? (int64_t)UINT32_MAX : rel);
    if (k > 0)
        pl_oi_get(seg, k - 1, rel_offset, position);
    return PL_OK;
}

int pl_segment_find_timestamp(const pl_segment *seg, int64_t ts, uint64_t *position,
                              int64_t *base_offset)
{
    if (seg == NULL || position == NULL || base_offset == NULL)
        return PL_E_ARG;

    int64_t next_offset = __atomic_load_n(&seg->next_offset, __ATOMIC_ACQUIRE);
    uint32_t n_time = load_timeindex_entries(seg);
    uint32_t n_index = load_index_entries(seg);
    uint64_t limit = __atomic_load_n(&seg->log_size, __ATOMIC_ACQUIRE);
    if (limit > pl_log_limit(seg))
        return PL_E_ARG;

    /* The last time entry with T <= ts: every batch before its offset has
     * maxTimestamp < T <= ts, so the answer is at or after that batch. */
    int64_t start_offset = seg->base_offset;
    int64_t entry_ts = PL_NO_TIMESTAMP;
    uint32_t k = pl_index_count_le(seg, PL_KEY_TI_TIME, n_time, ts);
    if (k > 0) {
        uint32_t rel;
        pl_ti_get(seg, k - 1, &entry_ts, &rel);
        start_offset = seg->base_offset + rel;
    }

    uint64_t pos, total;
    pl_batch_info info;
    int st = pl_seg_seek(seg, n_index, limit, start_offset, &pos, &info, &total);
    if (st == PL_E_OFFSET_RANGE && k > 0)
        return PL_E_INDEX; /* the entry names an offset the log does not have */
    if (st != PL_OK)
        return st;
    /* The entry names the batch whose maxTimestamp first reached the entry's time:
     * a damaged entry must not make the walk skip batches. */
    if (k > 0 && (info.base_offset != start_offset || info.max_timestamp != entry_ts))
        return PL_E_INDEX;
    int64_t floor = start_offset; /* offsets below it are behind the walk */
    for (;;) {
        if (info.base_offset >= next_offset) /* see pl_segment_read */
            return floor < next_offset ? PL_E_TILING : PL_E_OFFSET_RANGE;
        /* maxTimestamp decides the answer and is CRC-covered: check each batch the
         * walk passes (a few, from the time-index entry on) */
        if (pl_crc32c(0, seg->log + pos + PL_BATCH_CRC_START, (size_t)(total - PL_BATCH_CRC_START)) != info.crc)
            return PL_E_CRC;
        if (info.max_timestamp >= ts) {
            *position = pos;
            *base_offset = info.base_offset;
            return PL_OK;
        }
        uint64_t next_u = (uint64_t)info.base_offset + (uint64_t)(int64_t)info.last_offset_delta + 1u;
        floor = pl_i64_from_u64(next_u);
        pos += total;
        if (pos >= limit)
            return PL_E_OFFSET_RANGE;
        st = pl_seg_batch_at(seg, pos, limit, &info, &total);
        if (st != PL_OK)
            return st;
        if (info.base_offset < floor)
            return PL_E_TILING;
    }
}

/* ---- consistency check of a reopened segment ------------------------------- */

static int check_offset_index(const pl_segment *seg, uint32_t n, uint64_t log_size,
                              int64_t next_offset)
{
    uint32_t prev_rel = 0, prev_pos = 0;

    for (uint32_t i = 0; i < n; i++) {
        uint32_t rel, pos;
        pl_oi_get(seg, i, &rel, &pos);
        if (i > 0 && (rel <= prev_rel || pos <= prev_pos))
            return PL_E_INDEX;
        if (pos >= log_size || (int64_t)rel >= next_offset - seg->base_offset)
            return PL_E_INDEX;

        pl_batch_info info;
        uint64_t total;
        if (pl_seg_batch_at(seg, pos, log_size, &info, &total) != PL_OK)
            return PL_E_INDEX;
        if (info.base_offset != seg->base_offset + rel)
            return PL_E_INDEX;
        if (info.base_offset + info.last_offset_delta >= next_offset)
            return PL_E_INDEX;
        prev_rel = rel;
        prev_pos = pos;
    }
    return PL_OK;
}

static int check_time_index(const pl_segment *seg, uint32_t n_time, uint32_t n_index,
                            uint64_t log_size, int64_t next_offset, int64_t max_timestamp)
{
    int64_t prev_ts = 0;
    uint32_t prev_rel = 0;

    for (uint32_t i = 0; i < n_time; i++) {
        int64_t ts;
        uint32_t rel;
        pl_ti_get(seg, i, &ts, &rel);
        if (i > 0 && (ts <= prev_ts || rel < prev_rel))
            return PL_E_INDEX;
        if ((int64_t)rel >= next_offset - seg->base_offset || ts > max_timestamp)
            return PL_E_INDEX;

        /* The entry's batch exists, starts at that offset and carries that maximum. */
        int64_t offset = seg->base_offset + rel;
        pl_batch_info info;
        uint64_t pos, total;
        if (pl_seg_seek(seg, n_index, log_size, offset, &pos, &info, &total) != PL_OK)
            return PL_E_INDEX;
        if (info.base_offset != offset || info.max_timestamp != ts)
            return PL_E_INDEX;
        prev_ts = ts;
        prev_rel = rel;
    }
    return PL_OK;
}

int pl_segment_check_indexes(const pl_segment *seg)
{
    if (seg == NULL)
        return PL_E_ARG;

    uint32_t n_time = __atomic_load_n(&seg->timeindex_entries, __ATOMIC_ACQUIRE);
    uint32_t n_index = __atomic_load_n(&seg->index_entries, __ATOMIC_ACQUIRE);
    uint64_t log_size = __atomic_load_n(&seg->log_size, __ATOMIC_ACQUIRE);
    int64_t next_offset = __atomic_load_n(&seg->next_offset, __ATOMIC_ACQUIRE);
    int64_t max_timestamp = __atomic_load_n(&seg->max_timestamp, __ATOMIC_ACQUIRE);

    if (n_index > pl_oi_capacity(seg) || n_time > pl_ti_capacity(seg))
        return PL_E_INDEX;
    if (log_size > pl_log_limit(seg) || next_offset < seg->base_offset)
        return PL_E_INDEX;
    if (log_size == 0 && (n_index != 0 || n_time != 0))
        return PL_E_INDEX;
    if (n_time > n_index)
        return PL_E_INDEX; /* a time entry is only ever written with an offset entry */

    int st = check_offset_index(seg, n_index, log_size, next_offset);
    if (st != PL_OK)
        return st;
    return check_time_index(seg, n_time, n_index, log_size, next_offset, max_timestamp);
}

/*
 * segment.c -- appending to, reading, recovering and truncating one log segment.
 *
 * Owns the .log byte layout and the write side of the two indexes (index.c reads
 * and checks them).  Python owns the files and their mappings; C only reads and
 * writes through the pointers in a pl_segment and never maps, unmaps or closes
 * anything (except pl_map_detach's page swap and pl_segment_flush's msync).
 *
 *   .log   (log_capacity bytes mapped, preallocated)
 *   +-----------------+-----------------+-- ... --+-----------------+---------------+
 *   | batch @0        | batch @p1       |         | batch @p(k-1)   | zeros/garbage |
 *   | 12+batchLength  |                 |         |                 |               |
 *   +-----------------+-----------------+-- ... --+-----------------+---------------+
 *   0                                                          log_size      log_capacity
 *
 *   each batch: baseOffset i64 | batchLength i32 | partitionLeaderEpoch i32 | magic 2 |
 *               crc u32 | attributes .. recordCount (61 bytes) | records
 *
 *   .index      8-byte entries (rel offset u32 BE, position u32 BE)
 *   .timeindex  12-byte entries (timestamp i64 BE, rel offset u32 BE)
 *
 * Invariants kept:
 *   - [0, log_size) is a sequence of whole batches with increasing, non-overlapping
 *     offset ranges, all >= base_offset; next_offset is past the last of them.
 *     Recovery also wants them dense (each batch starts where the previous ended, as
 *     the log cleaner keeps them): an append that keeps its offsets (assign_offsets
 *     0) may leave a gap, which a later recovery treats as damage, so callers don't.
 *   - Positions in the index are always at batch boundaries.  An offset-index entry
 *     is written for a batch when the index is empty or index_interval_bytes or
 *     more have been appended since the last entry (bytes_since_index); a time-index
 *     entry (segment max timestamp, the batch that first reached it) is written
 *     together with an offset-index entry when the max timestamp grew since the last
 *     time-index entry.  Appending, recovering and truncating all follow this one
 *     rule (cursor_add_batch), so every path yields the same indexes.
 *   - Relative offsets fit in 31 bits and positions in PL_MAX_SEGMENT_BYTES.
 *
 * Concurrency: one writer, many readers.  The writer writes log bytes and index
 * entries past the published counts, then publishes with release stores in this
 * order: log_size, index_entries, timeindex_entries, max_timestamp_offset,
 * max_timestamp, next_offset.  Readers load in the reverse order (acquire), so each
 * value they see covers everything the earlier-loaded ones describe: offsets below
 * next_offset lie below log_size, index entries point below log_size.  Readers
 * never look past log_size, and treat a batch at or past the next_offset they
 * loaded as not yet there (its bytes may be visible before its offsets are).
 * Truncation and recovery run with readers excluded.
 *
 * Bounds: every read of the log is checked against log_size (readers) or the
 * usable capacity (recovery); every index entry access against the entry count and
 * the index mapping's capacity.
 */
#if defined(__linux__) && !defined(_GNU_SOURCE)
#define _GNU_SOURCE /* mremap */
#endif
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"

/* ---- batch headers in the log ---------------------------------------------- */

/* The offset after the batch: baseOffset + lastOffsetDelta + 1, computed in unsigned
 * (a damaged baseOffset must not overflow; the caller compares, never indexes). */
static inline int64_t pl_seg_next_offset(const pl_batch_info *info)
{
    uint64_t u = (uint64_t)info->base_offset + (uint64_t)(int64_t)info->last_offset_delta + 1u;
    return pl_i64_from_u64(u);
}

PL_HIDDEN int pl_seg_batch_at(const pl_segment *seg, uint64_t pos, uint64_t limit,
                              pl_batch_info *info, uint64_t *total)
{
    if (pos > limit || limit - pos < PL_BATCH_HEADER_BYTES)
        return PL_E_TRUNCATED;
    int st = pl_batch_parse_header(seg->log + pos, limit - pos, info);
    if (st != PL_OK)
        return st;
    if (info->batch_length < PL_MIN_BATCH_LENGTH)
        return PL_E_BATCH_LENGTH;
    if (info->last_offset_delta < 0)
        return PL_E_OFFSET_DELTA;
    uint64_t n = PL_BATCH_OVERHEAD_BYTES + (uint64_t)info->batch_length;
    if (n > limit - pos)
        return PL_E_TRUNCATED;
    *total = n;
    return PL_OK;
}

PL_HIDDEN int pl_seg_seek(const pl_segment *seg, uint32_t n_index, uint64_t limit,
                          int64_t target, uint64_t *pos_out, pl_batch_info *info,
                          uint64_t *total)
{
    uint64_t pos = 0;
    /* The batch at an index entry's position must have the entry's offset; every
     * later batch must start above the last offset of the one before (offsets
     * increase; a follower's copy may leave gaps).  baseOffset lies outside the CRC:
     * this is what catches most damage to it. */
    int64_t expect = -1;  /* baseOffset the index promises at pos, -1: none */
    int64_t floor = INT64_MIN; /* the previous batch's last offset + 1 */

    assert(target >= 0);

    if (target > seg->base_offset && n_index > 0) {
        int64_t rel = target - seg->base_offset;
        if (rel > (int64_t)UINT32_MAX)
            rel = (int64_t)UINT32_MAX;
        uint32_t k = pl_index_count_le(seg, PL_KEY_OI_OFFSET, n_index, rel);
        if (k > 0) {
            uint32_t e_rel, e_pos;
            pl_oi_get(seg, k - 1, &e_rel, &e_pos);
            if (e_pos >= limit)
                return PL_E_INDEX;
            pos = e_pos;
            expect = seg->base_offset + e_rel;
        }
    }
    while (pos < limit) {
        int st = pl_seg_batch_at(seg, pos, limit, info, total);
        if (st != PL_OK)
            return st;
        if (expect >= 0) {
            if (info->base_offset != expect)
                return PL_E_INDEX;
            expect = -1;
        } else if (info->base_offset < floor) {
            return PL_E_TILING;
        }
        floor = pl_seg_next_offset(info);
        /* last offset >= target, without overflow on a corrupt baseOffset
         * (target >= 0 and 0 <= delta <= INT32_MAX here) */
        if (info->base_offset >= target - info->last_offset_delta) {
            *pos_out = pos;
            return PL_OK;
        }
        pos += *total;
    }
    return PL_E_OFFSET_RANGE;
}

/* ---- the writer's cursor: one indexing rule for append, recovery, truncation ---- */

typedef struct seg_cursor {
    uint64_t log_size;             /* bytes of whole batches                        */
    int64_t  next_offset;          /* offset after the last batch                   */
    int64_t  max_timestamp;        /* largest maxTimestamp; PL_NO_TIMESTAMP if none */
    int64_t  max_timestamp_offset; /* baseOffset of the batch that first reached it */
    uint32_t index_entries;
    uint32_t timeindex_entries;
    uint32_t bytes_since_index;    /* log bytes since the last offset-index entry   */
    int64_t  last_time_ts;         /* timestamp of the last time-index entry, or -1 */
} seg_cursor;

/* What cursor_add_batch does when an index has no room for an entry. */
typedef enum room_policy {
    ROOM_COUNT,   /* dry run: count entries, ignore capacity (caller compares)      */
    ROOM_REQUIRE, /* no room: PL_E_FULL                                              */
    ROOM_SKIP     /* no room: leave the entry out (recovery must not drop batches)  */
} room_policy;

static int64_t last_time_ts(const pl_segment *seg, uint32_t n_time)
{
    if (n_time == 0)
        return PL_NO_TIMESTAMP;
    int64_t ts;
    uint32_t rel;
    pl_ti_get(seg, n_time - 1, &ts, &rel);
    return ts;
}

static void cursor_load(const pl_segment *seg, seg_cursor *c)
{
    c->log_size = seg->log_size;
    c->next_offset = seg->next_offset;
    c->max_timestamp = seg->max_timestamp;
    c->max_timestamp_offset = seg->max_timestamp_offset;
    c->index_entries = seg->index_entries;
    c->timeindex_entries = seg->timeindex_entries;
    c->bytes_since_index = seg->bytes_since_index;
    c->last_time_ts = c->timeindex_entries <= pl_ti_capacity(seg)
                          ? last_time_ts(seg, c->timeindex_entries)
                          : PL_NO_TIMESTAMP;
}

static void cursor_empty(const pl_segment *seg, seg_cursor *c)
{
    c->log_size = 0;
    c->next_offset = seg->base_offset;
    c->max_timestamp = PL_NO_TIMESTAMP;
    c->max_timestamp_offset = -1;
    c->index_entries = 0;
    c->timeindex_entries = 0;
    c->bytes_since_index = 0;
    c->last_time_ts = PL_NO_TIMESTAMP;
}

/* Release-publishes a cursor (order: see the top of the file).  Every writer path
 * (init, append, load, recovery, truncation) arrives with the cursor within the
 * mappings: callers check what they take from the segment or its files first. */
static void cursor_publish(pl_segment *seg, const seg_cursor *c)
{
    assert(c->log_size <= pl_log_limit(seg));
    assert(c->index_entries <= pl_oi_capacity(seg));
    assert(c->timeindex_entries <= pl_ti_capacity(seg));
    assert(c->next_offset >= seg->base_offset);
    seg->bytes_since_index = c->bytes_since_index;
    __atomic_store_n(&seg->log_size, c->log_size, __ATOMIC_RELEASE);
    __atomic_store_n(&seg->index_entries, c->index_entries, __ATOMIC_RELEASE);
    __atomic_store_n(&seg->timeindex_entries, c->timeindex_entries, __ATOMIC_RELEASE);
    __atomic_store_n(&seg->max_timestamp_offset, c->max_timestamp_offset, __ATOMIC_RELEASE);
    __atomic_store_n(&seg->max_timestamp, c->max_timestamp, __ATOMIC_RELEASE);
    __atomic_store_n(&seg->next_offset, c->next_offset, __ATOMIC_RELEASE);
}

/* Relative offset of the last offset of a batch, or -1 if it does not fit an entry.
 * Precondition: base >= seg->base_offset, delta >= 0. */
static int64_t relative_last(const pl_segment *seg, int64_t base, int32_t delta)
{
    int64_t rel = base - seg->base_offset;
    if (rel > PL_MAX_RELATIVE_OFFSET - delta)
        return -1;
    return rel + delta;
}

/* Accounts one batch (final header in *info, `total` bytes, at c->log_size): updates
 * the max timestamp, writes the index entries the rule asks for (when `write`),
 * advances the cursor.  The caller checked base >= c->next_offset and the relative
 * offsets. */
static int cursor_add_batch(pl_segment *seg, seg_cursor *c, const pl_batch_info *info,
                            uint64_t total, int write, room_policy room)
{
    int64_t base = info->base_offset;
    assert(base >= c->next_offset && base >= seg->base_offset);
    assert(relative_last(seg, base, info->last_offset_delta) >= 0);
    assert(!write || c->log_size + total <= pl_log_limit(seg));
    if (info->max_timestamp > c->max_timestamp) {
        c->max_timestamp = info->max_timestamp;
        c->max_timestamp_offset = base;
    }

    if (c->index_entries == 0 || c->bytes_since_index >= seg->index_interval_bytes) {
        int oi_room = c->index_entries < pl_oi_capacity(seg);
        int want_time = c->max_timestamp > c->last_time_ts;
        int ti_room = c->timeindex_entries < pl_ti_capacity(seg);

        if (room == ROOM_REQUIRE && (!oi_room || (want_time && !ti_room)))
            return PL_E_FULL;
        if (room == ROOM_COUNT) {
            oi_room = 1;
            ti_room = 1;
        }
        if (oi_room) {
            if (write)
                pl_oi_put(seg, c->index_entries, (uint32_t)(base - seg->base_offset),
                          (uint32_t)c->log_size);
            c->index_entries++;
            c->bytes_since_index = 0;
            if (want_time && ti_room) {
                if (write)
                    pl_ti_put(seg, c->timeindex_entries, c->max_timestamp,
                              (uint32_t)(c->max_timestamp_offset - seg->base_offset));
                c->timeindex_entries++;
                c->last_time_ts = c->max_timestamp;
            }
        }
    }

    uint64_t since = (uint64_t)c->bytes_since_index + total;
    c->bytes_since_index = since > UINT32_MAX ? UINT32_MAX : (uint32_t)since;
    c->log_size += total;
    c->next_offset = base + info->last_offset_delta + 1;
    return PL_OK;
}

/* ---- appending -------------------------------------------------------------- */

/* Walks the batches of buf[0, len) as an append at c->log_size would place them:
 * checks each header (whole batch inside buf, offsets), assigns offsets, and feeds
 * the cursor.  With wbuf (== buf), buf is the copy inside the log: offsets are written
 * into it and index entries into the indexes.  Without, buf is only read and entries
 * are counted (ROOM_COUNT).  With check_crc, each batch's CRC32C is checked on buf. */
static int append_walk(pl_segment *seg, seg_cursor *c, const uint8_t *buf, uint8_t *wbuf,
                       uint64_t len, int32_t leader_epoch, int assign_offsets, int check_crc,
                       pl_append_result *res)
{
    uint64_t pos = 0;

    memset(res, 0, sizeof *res);
    res->max_timestamp = PL_NO_TIMESTAMP;
    while (pos < len) {
        pl_batch_info info;
        int st = pl_batch_parse_header(buf + pos, len - pos, &info);
        if (st != PL_OK)
            return st;
        if (info.batch_length < PL_MIN_BATCH_LENGTH)
            return PL_E_BATCH_LENGTH;
        uint64_t total = PL_BATCH_OVERHEAD_BYTES + (uint64_t)info.batch_length;
        if (total > len - pos)
            return PL_E_TRUNCATED;
        if (info.last_offset_delta < 0)
            return PL_E_OFFSET_DELTA;
        if (check_crc && pl_crc32c(0, buf + pos + PL_BATCH_CRC_START,
                                   (size_t)(total - PL_BATCH_CRC_START)) != info.crc)
            return PL_E_CRC;

        int64_t base = assign_offsets ? c->next_offset : info.base_offset;
        if (base < c->next_offset)
            return PL_E_OFFSET_DELTA;
        if (relative_last(seg, base, info.last_offset_delta) < 0)
            return PL_E_FULL; /* offsets do not fit this segment's index: roll */
        if (wbuf != NULL && (assign_offsets || leader_epoch >= 0)) {
            st = pl_batch_set_offset(wbuf + pos, total, base, leader_epoch);
            if (st != PL_OK)
                return st;
        }
        info.base_offset = base;

        if (res->batches == 0) {
            res->first_offset = base;
            res->position = c->log_size;
        }
        st = cursor_add_batch(seg, c, &info, total, wbuf != NULL,
                              wbuf != NULL ? ROOM_REQUIRE : ROOM_COUNT);
        if (st != PL_OK)
            return st;
        res->last_offset = c->next_offset - 1;
        if (info.max_timestamp > res->max_timestamp)
            res->max_timestamp = info.max_timestamp;
        res->batches++;
        pos += total;
    }
    res->bytes = len;
    return PL_OK;
}

PL_HIDDEN int pl_write_all(int fd, const uint8_t *buf, uint64_t len, uint64_t pos)
{
    while (len > 0) {
        size_t chunk = len > (uint64_t)0x40000000 ? (size_t)0x40000000 : (size_t)len;
        ssize_t n = pwrite(fd, buf, chunk, (off_t)pos);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return PL_E_IO;
        }
        if (n == 0) {
            errno = EIO;
            return PL_E_IO;
        }
        buf += n;
        len -= (uint64_t)n;
        pos += (uint64_t)n;
    }
    return PL_OK;
}

static int segment_usable(const pl_segment *seg)
{
    if (seg == NULL || seg->log == NULL)
        return 0;
    if (seg->log_size > pl_log_limit(seg))
        return 0;
    if (seg->index_entries > pl_oi_capacity(seg) ||
        seg->timeindex_entries > pl_ti_capacity(seg))
        return 0;
    return seg->next_offset >= seg->base_offset;
}

int pl_segment_init(pl_segment *seg, int64_t base_offset, uint32_t index_interval_bytes)
{
    if (seg == NULL || base_offset < 0 || base_offset > INT64_MAX - PL_MAX_RELATIVE_OFFSET - 1)
        return PL_E_ARG;
    if ((seg->log == NULL && seg->log_capacity != 0) ||
        (seg->index == NULL && seg->index_capacity != 0) ||
        (seg->timeindex == NULL && seg->timeindex_capacity != 0))
        return PL_E_ARG;
    seg->base_offset = base_offset;
    seg->index_interval_bytes = index_interval_bytes;
    seg->flushed_size = 0;
    seg->flushed_index_entries = 0;
    seg->flushed_timeindex_entries = 0;
    seg_cursor c;
    cursor_empty(seg, &c);
    cursor_publish(seg, &c);
    return PL_OK;
}

/* From how many bytes a copy of ready batches is written with pwrite. */
static uint32_t copy_min_bytes(const pl_segment *seg)
{
    return seg->pwrite_copy_min_bytes != 0 ? seg->pwrite_copy_min_bytes : seg->pwrite_min_bytes;
}

/* Pass 1 of an append of ready batches: reads the input only, checks every header
 * and that the log and the indexes have room for all of it (PL_E_FULL). */
static int append_dry_run(pl_segment *seg, const uint8_t *batches, uint64_t len, int32_t leader_epoch,
                          int assign_offsets)
{
    if (!segment_usable(seg) || batches == NULL || len == 0)
        return PL_E_ARG;
    seg_cursor dry;
    pl_append_result res;
    cursor_load(seg, &dry);
    int st = append_walk(seg, &dry, batches, NULL, len, leader_epoch, assign_offsets, 0, &res);
    if (st != PL_OK)
        return st;
    if (len > pl_log_limit(seg) - seg->log_size || dry.index_entries > pl_oi_capacity(seg) ||
        dry.timeindex_entries > pl_ti_capacity(seg))
        return PL_E_FULL;
    return PL_OK;
}

int pl_segment_append(pl_segment *seg, const uint8_t *batches, uint64_t len,
                      int32_t leader_epoch, int assign_offsets, pl_append_result *out)
{
    /* Pass 1: read the input only; check every header and count index entries. */
    pl_append_result res;
    int st = append_dry_run(seg, batches, len, leader_epoch, assign_offsets);
    if (st != PL_OK)
        return st;

    /* Pass 2: copy past log_size (unpublished), then walk the copy, checking each
     * batch's CRC32C there and writing offsets and entries.  Checking the copy means
     * that what is published is what was checksummed: an input changed under us
     * (after the caller validated it, or during the memcpy) fails here, with nothing
     * published, instead of being served with a stale CRC. */
    uint8_t *dst = seg->log + seg->log_size;
    if (seg->log_fd_plus_one > 0 && len >= copy_min_bytes(seg)) {
        /* Through the page cache: no page fault per page of the mapping, and no page
         * zeroed by the kernel before it is overwritten (whole pages written by a
         * write() need no zeroing, a first store into a mapped page does).  The
         * mapping shows the same pages. */
        st = pl_write_all(seg->log_fd_plus_one - 1, batches, len, seg->log_size);
        if (st != PL_OK) {
            memset(dst, 0, len < PL_BATCH_OVERHEAD_BYTES ? (size_t)len : PL_BATCH_OVERHEAD_BYTES);
            return st;
        }
    } else {
        memcpy(dst, batches, len);
    }
    seg_cursor c;
    cursor_load(seg, &c);
    st = append_walk(seg, &c, dst, dst, len, leader_epoch, assign_offsets, 1, &res);
    if (st != PL_OK) {
        /* Nothing half-written: a recovery scan must not find the copy's leading
         * batches (never published) after a crash. */
        memset(dst, 0, len < PL_BATCH_OVERHEAD_BYTES ? (size_t)len : PL_BATCH_OVERHEAD_BYTES);
        return st == PL_E_FULL ? PL_E_ARG : st;
    }
    assert(c.log_size == seg->log_size + len && c.next_offset > seg->next_offset);
    cursor_publish(seg, &c);
    if (out != NULL)
        *out = res;
    return PL_OK;
}

int pl_segment_append_buffered(pl_segment *seg, const uint8_t *batches, uint64_t len,
                               int32_t leader_epoch, int assign_offsets, uint8_t *scratch,
                               uint64_t scratch_cap, pl_append_result *out)
{
    if (scratch == NULL || seg == NULL || seg->log_fd_plus_one <= 0 || len < copy_min_bytes(seg) ||
        len > scratch_cap)
        return pl_segment_append(seg, batches, len, leader_epoch, assign_offsets, out);
    /* Pass 1, as pl_segment_append's: the input's headers, room for all of it. */
    pl_append_result res;
    int st = append_dry_run(seg, batches, len, leader_epoch, assign_offsets);
    if (st != PL_OK)
        return st;

    /* Pass 2 on the private copy: CRCs checked, offsets written, index entries
     * written (past the published counts); then the copy is written out. */
    memcpy(scratch, batches, len);
    seg_cursor c;
    cursor_load(seg, &c);
    st = append_walk(seg, &c, scratch, scratch, len, leader_epoch, assign_offsets, 1, &res);
    if (st != PL_OK)
        return st == PL_E_FULL ? PL_E_ARG : st;
    st = pl_write_all(seg->log_fd_plus_one - 1, scratch, len, seg->log_size);
    if (st != PL_OK) {
        /* Nothing half-written: see pl_segment_append. */
        uint8_t *dst = seg->log + seg->log_size;
        memset(dst, 0, len < PL_BATCH_OVERHEAD_BYTES ? (size_t)len : PL_BATCH_OVERHEAD_BYTES);
        return st;
    }
    assert(c.log_size == seg->log_size + len && c.next_offset > seg->next_offset);
    cursor_publish(seg, &c);
    if (out != NULL)
        *out = res;
    return PL_OK;
}

/* pl_segment_append_build, and with scratch != NULL its buffered twin: the batch is
 * built in scratch[0, scratch_cap) and written with one pwrite. */
static int append_build(pl_segment *seg, const pl_batch_input *in, uint8_t *scratch, uint64_t scratch_cap,
                        pl_append_result *out)
{
    if (!segment_usable(seg) || in == NULL || in->count == 0)
        return PL_E_ARG;

    uint64_t room = pl_log_limit(seg) - seg->log_size;
    /* No separate size pass: pl_batch_build checks and writes each record in one pass
     * (refusing bad input with its status, before a lack of room) and says PL_E_NOSPACE
     * when the batch would not fit the room left, which is PL_E_FULL here.  It writes
     * the header last, only when the whole batch fit, and zeroes again what it wrote
     * of a batch it refuses (the bytes past log_size are zeros): a refusal leaves the
     * log untouched.  Index room is decided before building.  An offset entry is due
     * iff the rule says so; a time entry may come with it. */
    if (seg->index_entries == 0 || seg->bytes_since_index >= seg->index_interval_bytes) {
        if (seg->index_entries >= pl_oi_capacity(seg) ||
            seg->timeindex_entries >= pl_ti_capacity(seg))
            return PL_E_FULL;
    }
    if (in->count - 1 > (uint32_t)INT32_MAX)
        return PL_E_ARG;
    int32_t last_delta = in->offset_deltas ? in->last_offset_delta : (int32_t)(in->count - 1);
    if (last_delta < 0)
        return PL_E_ARG;
    if (relative_last(seg, seg->next_offset, last_delta) < 0)
        return PL_E_FULL; /* offsets do not fit this segment's index: roll */

    uint8_t *dst = seg->log + seg->log_size;
    uint8_t *at = scratch != NULL ? scratch : dst;
    uint64_t cap = scratch != NULL && scratch_cap < room ? scratch_cap : room;
    int64_t n = pl_batch_build(in, at, cap);
    if (n == PL_E_NOSPACE)
        return cap < room ? PL_E_NOSPACE : PL_E_FULL; /* the scratch was too small, or the segment */
    if (n < 0)
        return (int)n;
    if ((uint64_t)n > cap)
        return PL_E_ARG; /* cannot happen with a correct builder */

    seg_cursor c;
    pl_append_result res;
    cursor_load(seg, &c);
    /* CRC: ours.  Offsets are written into the batch where it was built, before the
     * buffered one is written out. */
    int st = append_walk(seg, &c, at, at, (uint64_t)n, -1, 1, 0, &res);
    if (st != PL_OK)
        return st;
    if (scratch != NULL) {
        st = pl_write_all(seg->log_fd_plus_one - 1, scratch, (uint64_t)n, seg->log_size);
        if (st != PL_OK) {
            /* Nothing half-written: see pl_segment_append. */
            memset(dst, 0, (uint64_t)n < PL_BATCH_OVERHEAD_BYTES ? (size_t)n : PL_BATCH_OVERHEAD_BYTES);
            return st;
        }
    }
    assert(c.log_size == seg->log_size + (uint64_t)n && c.next_offset > seg->next_offset);
    cursor_publish(seg, &c);
    if (out != NULL)
        *out = res;
    return PL_OK;
}

int pl_segment_append_build(pl_segment *seg, const pl_batch_input *in, pl_append_result *out)
{
    return append_build(seg, in, NULL, 0, out);
}

int pl_segment_append_build_buffered(pl_segment *seg, const pl_batch_input *in, uint8_t *scratch,
                                     uint64_t scratch_cap, pl_append_result *out)
{
    if (scratch == NULL || seg == NULL || seg->log_fd_plus_one <= 0)
        return append_build(seg, in, NULL, 0, out);
    return append_build(seg, in, scratch, scratch_cap, out);
}

/* ---- reading ------------------------------------------------------------------ */

void pl_segment_snapshot_get(const pl_segment *seg, pl_segment_snapshot *out)
{
    if (seg == NULL || out == NULL)
        return;
    /* next_offset first: the log_size loaded after it covers every offset below it. */
    out->next_offset = __atomic_load_n(&seg->next_offset, __ATOMIC_ACQUIRE);
    out->max_timestamp = __atomic_load_n(&seg->max_timestamp, __ATOMIC_ACQUIRE);
    out->log_size = __atomic_load_n(&seg->log_size, __ATOMIC_ACQUIRE);
}

/* Reader's view: next_offset, index entries (clamped to the mapping), log_size. */
typedef struct reader_view {
    int64_t  next_offset;
    uint32_t index_entries;
    uint64_t log_size;
} reader_view;

static int reader_load(const pl_segment *seg, reader_view *v)
{
    v->next_offset = __atomic_load_n(&seg->next_offset, __ATOMIC_ACQUIRE);
    uint32_t n = __atomic_load_n(&seg->index_entries, __ATOMIC_ACQUIRE);
    v->log_size = __atomic_load_n(&seg->log_size, __ATOMIC_ACQUIRE);
    uint32_t cap = pl_oi_capacity(seg);
    v->index_entries = n < cap ? n : cap;
    if (seg->log == NULL && v->log_size != 0)
        return PL_E_ARG;
    return v->log_size <= pl_log_limit(seg) ? PL_OK : PL_E_ARG;
}

int pl_segment_read(const pl_segment *seg, int64_t offset, uint64_t max_bytes,
                    int64_t max_offset, uint64_t *positions, uint32_t max_batches,
                    uint32_t *n, uint64_t *end)
{
    if (seg == NULL || positions == NULL || n == NULL || end == NULL || max_batches == 0 ||
        offset < 0)
        return PL_E_ARG;
    *n = 0;
    *end = 0;

    reader_view v;
    int st = reader_load(seg, &v);
    if (st != PL_OK)
        return st;
    if (offset >= v.next_offset || offset >= max_offset)
        return PL_OK;

    uint64_t pos, total;
    pl_batch_info info;
    st = pl_seg_seek(seg, v.index_entries, v.log_size, offset, &pos, &info, &total);
    if (st == PL_E_OFFSET_RANGE)
        return PL_OK; /* no batch below log_size reaches offset: nothing to read */
    if (st != PL_OK)
        return st;

    uint64_t start = pos;
    uint32_t count = 0;
    int64_t floor = offset; /* offsets below it are behind the walk */
    for (;;) {
        /* A batch past the next_offset we loaded is not published yet (its bytes
         * are, as log_size is stored first): leave it for the next read.  But offsets
         * between the walk and next_offset must lie in a published batch, the next
         * one: if it claims to start at or past next_offset, its baseOffset is
         * damaged (a follower's gap still ends below next_offset). */
        if (info.base_offset >= v.next_offset && floor < v.next_offset)
            return PL_E_TILING;
        if (info.base_offset >= max_offset || info.base_offset >= v.next_offset)
            break;
        /* KIP-74: the first batch always goes, whatever its size. */
        if (count > 0 && pos + total - start > max_bytes)
            break;
        positions[count++] = pos;
        pos += total;
        *end = pos;
        if (pos >= v.log_size)
            break;
        /* The next header is read (and must follow) even when this batch is the last
         * one returned: a raised baseOffset of the last batch shows in the next one. */
        floor = pl_seg_next_offset(&info);
        st = pl_seg_batch_at(seg, pos, v.log_size, &info, &total);
        if (st != PL_OK)
            return st;
        if (info.base_offset < floor)
            return PL_E_TILING; /* a damaged baseOffset (not covered by the CRC) */
        if (count == max_batches)
            break;
    }
    *n = count;
    return PL_OK;
}

int pl_segment_lookup(const pl_segment *seg, int64_t offset, uint64_t *position)
{
    if (seg == NULL || position == NULL || offset < 0)
        return PL_E_ARG;

    reader_view v;
    int st = reader_load(seg, &v);
    if (st != PL_OK)
        return st;
    if (offset >= v.next_offset)
        return PL_E_OFFSET_RANGE;

    uint64_t pos, total;
    pl_batch_info info;
    st = pl_seg_seek(seg, v.index_entries, v.log_size, offset, &pos, &info, &total);
    if (st != PL_OK)
        return st;
    *position = pos;
    return PL_OK;
}

/* ---- rebuilding the writer state from a trusted prefix ------------------------ */

/* The cursor an append sequence would have after writing exactly the batches in
 * [0, end), given that the first n_index offset-index entries (and the time-index
 * entries written with them, among the first n_time) are right: starts at the last
 * of those entries and walks batch headers (no CRC) to end, which must be reached
 * exactly.  *kept_time = time entries that belong to the kept offset entries. */
static int cursor_from_prefix(const pl_segment *seg, uint32_t n_index, uint32_t n_time,
                              uint64_t end, seg_cursor *c, uint32_t *kept_time)
{
    uint64_t pos = 0;

    cursor_empty(seg, c);
    *kept_time = 0;
    if (n_index > 0) {
        uint32_t rel, e_pos;
        pl_oi_get(seg, n_index - 1, &rel, &e_pos);
        if (e_pos >= end)
            return PL_E_INDEX;
        pos = e_pos;
        /* Time entries written with entries <= this one have offsets <= rel; a later
         * one's batch lies after this entry's batch (else it would have been written
         * here already). */
        uint32_t t = pl_index_count_le(seg, PL_KEY_TI_OFFSET, n_time, rel);
        *kept_time = t;
        c->index_entries = n_index;
        c->timeindex_entries = t;
        c->next_offset = seg->base_offset + rel;
        if (t > 0) {
            uint32_t t_rel;
            pl_ti_get(seg, t - 1, &c->max_timestamp, &t_rel);
            c->max_timestamp_offset = seg->base_offset + t_rel;
            c->last_time_ts = c->max_timestamp;
        }
    }

    uint64_t walk_from = pos;
    int first = n_index > 0;
    while (pos < end) {
        pl_batch_info info;
        uint64_t total;
        int st = pl_seg_batch_at(seg, pos, end, &info, &total);
        if (st != PL_OK)
            return st;
        if (first && info.base_offset != c->next_offset)
            return PL_E_INDEX;
        first = 0;
        if (info.base_offset < c->next_offset ||
            relative_last(seg, info.base_offset, info.last_offset_delta) < 0)
            return PL_E_INDEX;
        if (info.max_timestamp > c->max_timestamp) {
            c->max_timestamp = info.max_timestamp;
            c->max_timestamp_offset = info.base_offset;
        }
        c->next_offset = info.base_offset + info.last_offset_delta + 1;
        pos += total;
    }
    c->log_size = end;
    uint64_t since = end - walk_from;
    c->bytes_since_index = since > UINT32_MAX ? UINT32_MAX : (uint32_t)since;
    return PL_OK;
}

int pl_segment_load_clean(pl_segment *seg, uint64_t log_size)
{
    if (seg == NULL || seg->log == NULL || log_size > pl_log_limit(seg))
        return PL_E_ARG;
    if (seg->index_entries > pl_oi_capacity(seg) ||
        seg->timeindex_entries > pl_ti_capacity(seg))
        return PL_E_INDEX;

    seg_cursor c;
    uint32_t kept_time;
    int st = cursor_from_prefix(seg, seg->index_entries, seg->timeindex_entries, log_size,
                                &c, &kept_time);
    if (st != PL_OK)
        return st;
    if (kept_time != seg->timeindex_entries)
        return PL_E_INDEX;
    cursor_publish(seg, &c);
    return PL_OK;
}

/* ---- recovery ----------------------------------------------------------------- */

/* Bytes in [from, to) up to and including the last non-zero one (0 if all zero). */
static uint64_t garbage_extent(const uint8_t *base, uint64_t from, uint64_t to)
{
    enum { BLOCK = 4096 };
    uint64_t hi = to;

    while (hi > from) {
        uint64_t lo = hi - from > BLOCK ? hi - BLOCK : from;
        uint64_t acc = 0;
        uint64_t i = lo;
        for (; i + 8 <= hi; i += 8) {
            uint64_t w;
            memcpy(&w, base + i, 8);
            acc |= w;
        }
        for (; i < hi; i++)
            acc |= base[i];
        if (acc != 0) {
            for (uint64_t j = hi; j > lo; j--)
                if (base[j - 1] != 0)
                    return j - from;
        }
        hi = lo;
    }
    return 0;
}

int pl_segment_recover(pl_segment *seg, uint64_t start_position, uint64_t *truncated_bytes)
{
    if (seg == NULL || seg->log == NULL || truncated_bytes == NULL)
        return PL_E_ARG;
    uint64_t limit = pl_log_limit(seg);
    if (start_position > limit)
        return PL_E_ARG;
    *truncated_bytes = 0;

    seg_cursor c;
    if (start_position == 0) {
        cursor_empty(seg, &c);
    } else {
        /* Keep the entries below start_position and rebuild the state there. */
        uint32_t n_index = seg->index_entries < pl_oi_capacity(seg) ? seg->index_entries
                                                                     : pl_oi_capacity(seg);
        uint32_t n_time = seg->timeindex_entries < pl_ti_capacity(seg)
                              ? seg->timeindex_entries
                              : pl_ti_capacity(seg);
        uint32_t below = pl_index_count_le(seg, PL_KEY_OI_POSITION, n_index,
                                           (int64_t)start_position - 1);
        uint32_t kept_time;
        if (cursor_from_prefix(seg, below, n_time, start_position, &c, &kept_time) != PL_OK)
            return PL_E_ARG; /* not a batch boundary consistent with the kept index */
    }

    uint64_t pos = start_position;
    while (limit - pos >= PL_BATCH_HEADER_BYTES) {
        pl_batch_info info;
        if (pl_batch_validate(seg->log + pos, limit - pos, &info) != PL_OK)
            break;
        if (info.batch_length < PL_MIN_BATCH_LENGTH || info.last_offset_delta < 0)
            break;
        uint64_t total = PL_BATCH_OVERHEAD_BYTES + (uint64_t)info.batch_length;
        if (total > limit - pos)
            break;
        /* Offsets are densely tiled, also after compaction (the log cleaner covers the
         * offsets of removed records by growing a kept batch or by an empty batch), and
         * baseOffset lies outside the CRC: a batch that does not continue exactly where
         * the last one ended is damage. */
        if (info.base_offset != c.next_offset ||
            relative_last(seg, info.base_offset, info.last_offset_delta) < 0)
            break;
        int st = cursor_add_batch(seg, &c, &info, total, 1, ROOM_SKIP);
        if (st != PL_OK)
            return st;
        pos += total;
    }

    assert(c.log_size == pos);
    *truncated_bytes = garbage_extent(seg->log, pos, seg->log_capacity);
    cursor_publish(seg, &c);
    if (seg->flushed_size > c.log_size)
        seg->flushed_size = c.log_size;
    if (seg->flushed_index_entries > c.index_entries)
        seg->flushed_index_entries = c.index_entries;
    if (seg->flushed_timeindex_entries > c.timeindex_entries)
        seg->flushed_timeindex_entries = c.timeindex_entries;
    return PL_OK;
}

/* ---- truncation ----------------------------------------------------------------- */

int pl_segment_truncate(pl_segment *seg, int64_t offset, uint64_t *new_size)
{
    if (!segment_usable(seg) || new_size == NULL)
        return PL_E_ARG;
    if (offset >= seg->next_offset) {
        *new_size = seg->log_size;
        return PL_OK;
    }
    if (offset < seg->base_offset)
        return PL_E_OFFSET_RANGE;

    /* The cut: the batch starting at offset, or everything when offset is the base. */
    uint64_t cut = 0;
    if (seg->log_size > 0) {
        uint64_t pos, total;
        pl_batch_info info;
        int st = pl_seg_seek(seg, seg->index_entries, seg->log_size, offset, &pos, &info,
                             &total);
        if (st != PL_OK && st != PL_E_OFFSET_RANGE)
            return st;
        if (st == PL_OK && info.base_offset == offset)
            cut = pos;
        else if (offset != seg->base_offset)
            return PL_E_OFFSET_RANGE; /* not a batch boundary */
    }

    uint32_t below = pl_index_count_le(seg, PL_KEY_OI_POSITION, seg->index_entries,
                                       (int64_t)cut - 1);
    seg_cursor c;
    uint32_t kept_time;
    int st = cursor_from_prefix(seg, cut == 0 ? 0 : below, seg->timeindex_entries, cut, &c,
                                &kept_time);
    if (st != PL_OK)
        return st;
    c.next_offset = offset;

    uint64_t old_size = seg->log_size;
    assert(c.log_size == cut && cut <= old_size && c.index_entries <= seg->index_entries);
    cursor_publish(seg, &c);
    if (cut < old_size) {
        /* A later recovery scan must stop here: zero the first header fields. */
        uint64_t z = old_size - cut < PL_BATCH_OVERHEAD_BYTES ? old_size - cut
                                                              : PL_BATCH_OVERHEAD_BYTES;
        memset(seg->log + cut, 0, z);
    }
    if (seg->flushed_size > cut)
        seg->flushed_size = cut;
    if (seg->flushed_index_entries > c.index_entries)
        seg->flushed_index_entries = c.index_entries;
    if (seg->flushed_timeindex_entries > c.timeindex_entries)
        seg->flushed_timeindex_entries = c.timeindex_entries;
    *new_size = cut;
    return PL_OK;
}

/* ---- durability ------------------------------------------------------------------ */

static uint64_t page_bytes(void)
{
    static uint64_t cached;
    uint64_t p = __atomic_load_n(&cached, __ATOMIC_RELAXED);
    if (p == 0) {
        long v = sysconf(_SC_PAGESIZE);
        p = v > 0 ? (uint64_t)v : 4096;
        __atomic_store_n(&cached, p, __ATOMIC_RELAXED);
    }
    return p;
}

/* msync(MS_SYNC) of [base+from, base+to), widened to whole pages. */
static int sync_range(uint8_t *base, uint64_t from, uint64_t to)
{
    if (to <= from)
        return PL_OK;
    uint64_t page = page_bytes();
    uintptr_t a = (uintptr_t)(base + from);
    uintptr_t start = a - (a % page);
    uintptr_t stop = (uintptr_t)(base + to);
    if (msync((void *)start, (size_t)(stop - start), MS_SYNC) != 0)
        return PL_E_IO;
    return PL_OK;
}

int pl_segment_flush(pl_segment *seg)
{
    if (seg == NULL)
        return PL_E_ARG;
    uint64_t size = seg->log_size;
    uint32_t ie = seg->index_entries, te = seg->timeindex_entries;
    if (size > seg->log_capacity || (uint64_t)ie * PL_INDEX_ENTRY_BYTES > seg->index_capacity ||
        (uint64_t)te * PL_TIMEINDEX_ENTRY_BYTES > seg->timeindex_capacity)
        return PL_E_ARG;
    if (seg->flushed_size > size)
        seg->flushed_size = size;
    if (seg->flushed_index_entries > ie)
        seg->flushed_index_entries = ie;
    if (seg->flushed_timeindex_entries > te)
        seg->flushed_timeindex_entries = te;

    if (seg->log != NULL && sync_range(seg->log, seg->flushed_size, size) != PL_OK)
        return PL_E_IO;
    if (seg->index != NULL &&
        sync_range(seg->index, (uint64_t)seg->flushed_index_entries * PL_INDEX_ENTRY_BYTES,
                   (uint64_t)ie * PL_INDEX_ENTRY_BYTES) != PL_OK)
        return PL_E_IO;
    if (seg->timeindex != NULL &&
        sync_range(seg->timeindex,
                   (uint64_t)seg->flushed_timeindex_entries * PL_TIMEINDEX_ENTRY_BYTES,
                   (uint64_t)te * PL_TIMEINDEX_ENTRY_BYTES) != PL_OK)
        return PL_E_IO;
    seg->flushed_size = size;
    seg->flushed_index_entries = ie;
    seg->flushed_timeindex_entries = te;
    return PL_OK;
}

/* ---- mappings for C alone ------------------------------------------------------------ */

int pl_map_file(int fd, uint64_t len, uint8_t **addr)
{
    if (addr == NULL || fd < 0 || len == 0 || len > (uint64_t)SIZE_MAX)
        return PL_E_ARG;
    void *p = mmap(NULL, (size_t)len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        return PL_E_IO;
    /* No readahead: an index is binary searched and appended a few bytes at a time,
     * yet a first fault would read ahead a whole window around it (8 MiB on the test
     * machine: milliseconds spent zeroing page cache over a hole, at each segment's
     * first append).  A hint: its failure is no error. */
    (void)madvise(p, (size_t)len, MADV_RANDOM);
    *addr = (uint8_t *)p;
    return PL_OK;
}

int pl_unmap_file(uint8_t *addr, uint64_t len)
{
    if (addr == NULL || len == 0 || len > (uint64_t)SIZE_MAX)
        return PL_E_ARG;
    return munmap(addr, (size_t)len) == 0 ? PL_OK : PL_E_IO;
}

/* ---- detaching pages under live views ---------------------------------------------- */

int pl_map_detach(uint8_t *addr, uint64_t len)
{
    if (addr == NULL)
        return PL_E_ARG;
    if (len == 0)
        return PL_OK;
    uint64_t page = page_bytes();
    uintptr_t a = (uintptr_t)addr;
    if (a > UINTPTR_MAX - page || len > UINTPTR_MAX - page - a)
        return PL_E_ARG;
    uintptr_t start = a - (a % page);
    uintptr_t stop = a + (uintptr_t)len;
    stop += (page - stop % page) % page;
    size_t n = (size_t)(stop - start);

#if defined(__linux__) && defined(MREMAP_FIXED)
    /* Build the private copy aside, then swap it in with one mremap: readers see the
     * old bytes, then the same bytes in anonymous memory, never a hole. */
    void *tmp = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (tmp == MAP_FAILED)
        return PL_E_IO;
    memcpy(tmp, (void *)start, n);
    void *r = mremap(tmp, n, n, MREMAP_MAYMOVE | MREMAP_FIXED, (void *)start);
    if (r == MAP_FAILED) {
        int saved = errno;
        munmap(tmp, n);
        errno = saved;
        return PL_E_IO;
    }
    return PL_OK;
#else
    /* No atomic page swap (macOS): copy out, map anonymous pages over the range, copy
     * back.  Between the mmap and the copy back, a concurrent reader of these pages
     * sees zeros; callers detach only pages no reader is inside of at that moment. */
    void *copy = malloc(n);
    if (copy == NULL) {
        errno = ENOMEM;
        return PL_E_IO;
    }
    memcpy(copy, (void *)start, n);
    void *r = mmap((void *)start, n, PROT_READ | PROT_WRITE, MAP_FIXED | MAP_PRIVATE | MAP_ANON,
                   -1, 0);
    if (r == MAP_FAILED) {
        int saved = errno;
        free(copy);
        errno = saved;
        return PL_E_IO;
    }
    memcpy(r, copy, n);
    free(copy);
    return PL_OK;
#endif
}

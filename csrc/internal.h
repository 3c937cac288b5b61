/*
 * internal.h -- private declarations shared by segment.c, index.c and bench.c.
 *
 * Not part of the cffi surface (pylog.h is).  Holds the big-endian accessors for
 * the two index entry layouts, the one binary search both indexes use, and the
 * batch-walking helpers that index.c borrows from segment.c.
 *
 *   .index entry (8 bytes)           .timeindex entry (12 bytes)
 *   +----------------+------------+  +-------------------------------+----------------+
 *   | rel offset u32 | pos u32    |  | timestamp i64                 | rel offset u32 |
 *   +----------------+------------+  +-------------------------------+----------------+
 *    0                4            8  0                               8                12
 *
 * All multi-byte fields are big-endian and read/written byte by byte (no unaligned
 * casts).  Callers bound every entry index by the published entry count and the
 * mapping's capacity before calling the accessors.
 */
#ifndef PYLOG_INTERNAL_H
#define PYLOG_INTERNAL_H

#include <string.h>

#include "pylog.h"

#if defined(__GNUC__)
#define PL_HIDDEN __attribute__((visibility("hidden")))
#else
#define PL_HIDDEN
#endif

/* Largest offset relative to the segment's base offset an index entry may hold.
 * The field is a u32 on disk, but Kafka reads it as an int32: stay below 2^31. */
#define PL_MAX_RELATIVE_OFFSET 0x7fffffffLL

/* ---- big-endian byte access --------------------------------------------- */

static inline uint32_t pl_load_be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
           ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

static inline uint64_t pl_load_be64(const uint8_t *p)
{
    return ((uint64_t)pl_load_be32(p) << 32) | pl_load_be32(p + 4);
}

static inline void pl_store_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static inline void pl_store_be64(uint8_t *p, uint64_t v)
{
    pl_store_be32(p, (uint32_t)(v >> 32));
    pl_store_be32(p + 4, (uint32_t)v);
}

/* Two's-complement conversion without implementation-defined casts. */
static inline int64_t pl_i64_from_u64(uint64_t v)
{
    int64_t out;
    memcpy(&out, &v, sizeof out);
    return out;
}

static inline uint64_t pl_u64_from_i64(int64_t v)
{
    uint64_t out;
    memcpy(&out, &v, sizeof out);
    return out;
}

/* ---- index entries ------------------------------------------------------- */

/* Offset-index entry i (caller checked i < entries <= capacity / 8). */
static inline void pl_oi_get(const pl_segment *seg, uint32_t i, uint32_t *rel, uint32_t *pos)
{
    const uint8_t *e = seg->index + (uint64_t)i * PL_INDEX_ENTRY_BYTES;
    *rel = pl_load_be32(e);
    *pos = pl_load_be32(e + 4);
}

static inline void pl_oi_put(pl_segment *seg, uint32_t i, uint32_t rel, uint32_t pos)
{
    uint8_t *e = seg->index + (uint64_t)i * PL_INDEX_ENTRY_BYTES;
    pl_store_be32(e, rel);
    pl_store_be32(e + 4, pos);
}

/* Time-index entry i (caller checked i < entries <= capacity / 12). */
static inline void pl_ti_get(const pl_segment *seg, uint32_t i, int64_t *ts, uint32_t *rel)
{
    const uint8_t *e = seg->timeindex + (uint64_t)i * PL_TIMEINDEX_ENTRY_BYTES;
    *ts = pl_i64_from_u64(pl_load_be64(e));
    *rel = pl_load_be32(e + 8);
}

static inline void pl_ti_put(pl_segment *seg, uint32_t i, int64_t ts, uint32_t rel)
{
    uint8_t *e = seg->timeindex + (uint64_t)i * PL_TIMEINDEX_ENTRY_BYTES;
    pl_store_be64(e, pl_u64_from_i64(ts));
    pl_store_be32(e + 8, rel);
}

/* Entries the mappings can hold. */
static inline uint32_t pl_oi_capacity(const pl_segment *seg)
{
    uint64_t n = seg->index ? seg->index_capacity / PL_INDEX_ENTRY_BYTES : 0;
    return n > UINT32_MAX ? UINT32_MAX : (uint32_t)n;
}

static inline uint32_t pl_ti_capacity(const pl_segment *seg)
{
    uint64_t n = seg->timeindex ? seg->timeindex_capacity / PL_TIMEINDEX_ENTRY_BYTES : 0;
    return n > UINT32_MAX ? UINT32_MAX : (uint32_t)n;
}

/* Usable log bytes: the mapping, but never more than an index position can address. */
static inline uint64_t pl_log_limit(const pl_segment *seg)
{
    if (seg->log == NULL)
        return 0;
    return seg->log_capacity < PL_MAX_SEGMENT_BYTES ? seg->log_capacity
                                                    : (uint64_t)PL_MAX_SEGMENT_BYTES;
}

/* Which key of which index a search compares (the indexes differ only in their entry). */
typedef enum pl_index_key {
    PL_KEY_OI_OFFSET,   /* .index relative offset     */
    PL_KEY_OI_POSITION, /* .index position            */
    PL_KEY_TI_TIME,     /* .timeindex timestamp       */
    PL_KEY_TI_OFFSET    /* .timeindex relative offset */
} pl_index_key;

/* Number of leading entries (of the first n) whose key is <= target, by binary
 * search; with sorted entries that is the index of the last such entry plus one.
 * On unsorted (corrupt) entries it still terminates and returns a value <= n. */
PL_HIDDEN uint32_t pl_index_count_le(const pl_segment *seg, pl_index_key key, uint32_t n,
                                     int64_t target);

/* ---- batch walking (segment.c) ------------------------------------------- */

/* Header of the batch at log position pos, which must lie wholly below limit:
 * fills *info and *total (12 + batchLength).  Checks batchLength >= 49 and
 * lastOffsetDelta >= 0.  Reads only [pos, limit). */
/* pwrite all of buf[0, len) at file position pos, retrying short writes and EINTR:
 * PL_OK, or PL_E_IO with errno set (segment.c; bench.c's write ceiling uses it too). */
PL_HIDDEN int pl_write_all(int fd, const uint8_t *buf, uint64_t len, uint64_t pos);

PL_HIDDEN int pl_seg_batch_at(const pl_segment *seg, uint64_t pos, uint64_t limit,
                              pl_batch_info *info, uint64_t *total);

/* The first batch below limit whose last offset >= target, starting from the last of
 * the first n_index offset-index entries with offset <= target (whose batch must have
 * the matching baseOffset, else PL_E_INDEX).  PL_E_OFFSET_RANGE if there is none. */
PL_HIDDEN int pl_seg_seek(const pl_segment *seg, uint32_t n_index, uint64_t limit,
                          int64_t target, uint64_t *pos, pl_batch_info *info,
                          uint64_t *total);

/* ---- record parsing (batch.c), shared with the CPython extension ----------- */

/* One record's fields; positions are bytes from the start of its records section. */
typedef struct pl_record_fields {
    int64_t ts_delta;       /* timestampDelta, ms                              */
    int32_t offset_delta;   /* offsetDelta (>= 0)                              */
    int64_t key_pos;        /* position of the key bytes                       */
    int32_t key_len;        /* -1 = null key                                   */
    int64_t value_pos;      /* position of the value bytes                     */
    int32_t value_len;      /* -1 = null value                                 */
    int64_t headers_pos;    /* position of the first header (after headerCount) */
    int32_t headers_count;  /* headers (>= 0); all lie within the record       */
} pl_record_fields;

/* Parses and bounds-checks the record at *p of the records section [start, end):
 * varints minimal and in range, every length within the record, headers included,
 * the record ending exactly at its length.  On PL_OK fills *r and moves *p past the
 * record; otherwise returns PL_E_RECORD (or PL_E_TRUNCATED) and leaves *p alone. */
PL_HIDDEN int pl_record_parse(const uint8_t *start, const uint8_t **p, const uint8_t *end,
                              pl_record_fields *r);

/* Reads the header at *p, which must lie before end: its key (key, key_len >= 0)
 * and value (value, value_len; -1 = null value), moving *p past it.  Bounds-checked
 * again (PL_E_RECORD), though pl_record_parse has checked a parsed record's already. */
PL_HIDDEN int pl_record_header_next(const uint8_t **p, const uint8_t *end, const uint8_t **key,
                                    int32_t *key_len, const uint8_t **value, int32_t *value_len);

#endif /* PYLOG_INTERNAL_H */

/*
 * batch.c -- Kafka v2 record batches: build, seal, parse, validate, decode.
 *
 * Owns the byte format of one RecordBatch (magic 2), big-endian:
 *
 *   0 baseOffset i64 | 8 batchLength i32 | 12 partitionLeaderEpoch i32 | 16 magic i8 |
 *  17 crc u32 | 21 attributes i16 | 23 lastOffsetDelta i32 | 27 baseTimestamp i64 |
 *  35 maxTimestamp i64 | 43 producerId i64 | 51 producerEpoch i16 | 53 baseSequence i32 |
 *  57 recordCount i32 | 61 records...
 *
 *   total size = 12 + batchLength; crc = CRC32C(bytes 21 .. total).
 *
 * and of one record inside it (zigzag varints):
 *
 *   length | attributes i8 | timestampDelta varlong | offsetDelta varint |
 *   keyLength varint | key | valueLength varint | value |
 *   headerCount varint | (headerKeyLength varint | key | headerValueLength varint | value)*
 *
 *   `length` counts the bytes after itself.  A length of -1 means null (keys,
 *   values, header values; header keys may not be null).
 *
 * The producer's record path (pl_builder_*) writes the same records one at a time
 * into an open batch's buffer, then the header and CRC once when the batch closes.
 *
 * Invariants: every read of caller bytes is bounds-checked against the length the
 * caller gave; multi-byte fields go through byte shifts (no unaligned loads, no
 * type punning); signed arithmetic that could overflow is done in unsigned or
 * checked first.  Nothing here allocates or aborts on bad input: each function
 * returns a pl_status.  Buffers given to the build functions (values, keys, headers
 * as described by pl_batch_input) are trusted to be as long as their length arrays
 * say: they come from pylog's own Python layer, not from the outside.
 */
#include <assert.h>
#include <limits.h>
#include <string.h>

#include "internal.h"

#define MAX_VARINT_BYTES 10   /* a 64-bit zigzag varint */
#define MAX_VARINT32_BYTES 5  /* a 32-bit zigzag varint */
#define MIN_RECORD_BODY 6     /* attrs + tsDelta + offDelta + keyLen + valLen + hdrCount */
#define NUM_CODECS 5          /* none, gzip, snappy, lz4, zstd */

/* ---- big-endian fields ---------------------------------------------------- */

static inline uint16_t rd16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }
static inline uint32_t rd32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static inline uint64_t rd64(const uint8_t *p) { return ((uint64_t)rd32(p) << 32) | rd32(p + 4); }
static inline void wr16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static inline void wr32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}
static inline void wr64(uint8_t *p, uint64_t v) { wr32(p, (uint32_t)(v >> 32)); wr32(p + 4, (uint32_t)v); }

/* ---- zigzag varints ------------------------------------------------------- */

static inline uint64_t zigzag(int64_t v)
{
    return ((uint64_t)v << 1) ^ (0 - ((uint64_t)v >> 63));
}

static inline int64_t unzigzag(uint64_t z)
{
    uint64_t u = (z >> 1) ^ (0 - (z & 1));
    int64_t v;
    memcpy(&v, &u, sizeof v); /* two's complement reinterpretation, no overflow */
    return v;
}

/* Bytes of v's zigzag varint: one per started 7 bits of the zigzagged value (at
 * least one).  Branch-free: the record planner calls it five times per record. */
static inline int varint_size(int64_t v)
{
    uint64_t z = zigzag(v) | 1;
    int bits = 64 - __builtin_clzll(z);
    return ((bits + 6) * 37) >> 8; /* == (bits + 6) / 7 for bits 1..64, one multiply */
}

static inline uint8_t *put_varint(uint8_t *o, int64_t v)
{
    uint64_t z = zigzag(v);
    while (z >= 0x80) {
        *o++ = (uint8_t)(z | 0x80);
        z >>= 7;
    }
    *o++ = (uint8_t)z;
    return o;
}

/* A length-prefixed field (a record's key or value, a header's key or value): the
 * length's varint, then the bytes (none for len <= 0; -1 is null).  Returns the end. */
static inline uint8_t *put_field(uint8_t *o, const uint8_t *src, int64_t len)
{
    o = put_varint(o, len);
    if (len > 0) {
        memcpy(o, src, (size_t)len);
        o += len;
    }
    return o;
}

/* Bytes put_field writes for a field of `len` bytes. */
static inline uint64_t field_size(int64_t len)
{
    return (uint64_t)varint_size(len) + (len > 0 ? (uint64_t)len : 0);
}

/* Reads a zigzag varint of at most max_bytes (10 for 64-bit, 5 for 32-bit fields)
 * from [*p, end).  Rejects overlong encodings (more than max_bytes, or a non-minimal
 * one: a last byte of 0 after a continuation byte, as 0x80 0x00 for 0) and values
 * that do not fit.  put_varint, like every Kafka writer, only writes minimal ones. */
static inline int get_varint(const uint8_t **p, const uint8_t *end, int max_bytes, int64_t *out)
{
    const uint8_t *q = *p;
    /* Fast paths (the loop below gives the same results): one byte, and two bytes
     * whose second is not 0 (minimal); max_bytes >= 5 always, so no width check. */
    assert(max_bytes >= 2);
    if (q < end && !(q[0] & 0x80)) {
        *p = q + 1;
        *out = unzigzag(q[0]);
        return PL_OK;
    }
    if (end - q >= 2 && !(q[1] & 0x80) && q[1] != 0) {
        *p = q + 2;
        *out = unzigzag((uint64_t)(q[0] & 0x7f) | ((uint64_t)q[1] << 7));
        return PL_OK;
    }
    uint64_t z = 0;
    for (int i = 0; i < max_bytes; i++) {
        if (q >= end)
            return PL_E_TRUNCATED;
        uint8_t b = *q++;
        if (i > 0 && b == 0)
            return PL_E_RECORD; /* non-minimal: the previous byte could have ended it */
        if (i == max_bytes - 1) {
            /* last permitted byte: no continuation, and no bits past the width */
            unsigned width_left = (max_bytes == MAX_VARINT_BYTES) ? 1 : 4;
            if (b & 0x80 || (b >> width_left) != 0)
                return PL_E_RECORD;
        }
        z |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            *p = q;
            *out = unzigzag(z);
            return PL_OK;
        }
    }
    return PL_E_RECORD;
}

int pl_varint_encode(int64_t value, uint8_t *out, uint64_t cap)
{
    if (out == NULL)
        return PL_E_ARG;
    if (cap < (uint64_t)varint_size(value))
        return PL_E_NOSPACE;
    return (int)(put_varint(out, value) - out);
}

int pl_varint_decode(const uint8_t *buf, uint64_t len, int64_t *value)
{
    if (buf == NULL || value == NULL)
        return PL_E_ARG;
    const uint8_t *p = buf;
    int st = get_varint(&p, buf + len, MAX_VARINT_BYTES, value);
    return st != PL_OK ? st : (int)(p - buf);
}

/* ---- status text ---------------------------------------------------------- */

const char *pl_strerror(int status)
{
    switch (status) {
    case PL_OK: return "ok";
    case PL_E_ARG: return "invalid argument";
    case PL_E_TRUNCATED: return "input ends inside a record batch or record (truncated)";
    case PL_E_BATCH_LENGTH: return "batchLength is out of range (below 49 or above the maximum batch size)";
    case PL_E_MAGIC: return "unsupported magic byte (only record batch format v2, magic 2, is accepted)";
    case PL_E_CRC: return "CRC32C mismatch: the batch is corrupt";
    case PL_E_RECORD_COUNT: return "recordCount does not match the records in the batch";
    case PL_E_OFFSET_DELTA: return "record offset deltas are not increasing or exceed lastOffsetDelta";
    case PL_E_RECORD: return "malformed record (bad varint, length, header or compression codec)";
    case PL_E_COMPRESSED: return "operation needs an uncompressed batch";
    case PL_E_FULL: return "segment or index is full";
    case PL_E_NOSPACE: return "output buffer too small";
    case PL_E_TOO_LARGE: return "record or batch exceeds the maximum size";
    case PL_E_OFFSET_RANGE: return "offset is outside the segment";
    case PL_E_INDEX: return "index file content is inconsistent";
    case PL_E_IO: return "system call failed";
    case PL_E_TIMESTAMP: return "a record's timestamp is above the batch's maxTimestamp";
    case PL_E_TILING: return "a batch's baseOffset is not above the previous batch's last offset (damaged header)";
    default: return "unknown status";
    }
}

/* ---- building ------------------------------------------------------------- */

/* Offset delta of record i (its position unless the caller gave deltas). */
static inline int64_t offset_delta(const pl_batch_input *in, uint32_t i)
{
    return in->offset_deltas ? (int64_t)in->offset_deltas[i] : (int64_t)i;
}

/* The batch's lastOffsetDelta. */
static inline int32_t batch_last_delta(const pl_batch_input *in)
{
    return in->offset_deltas ? in->last_offset_delta : (int32_t)(in->count - 1);
}

/* Caller-given offset deltas: each >= 0, strictly increasing, the last <=
 * last_offset_delta. */
static int check_offset_deltas(const pl_batch_input *in)
{
    if (in->offset_deltas == NULL)
        return PL_OK;
    int64_t prev = -1;
    for (uint32_t i = 0; i < in->count; i++) {
        int32_t d = in->offset_deltas[i];
        if (d < 0 || (int64_t)d <= prev)
            return PL_E_OFFSET_DELTA;
        prev = d;
    }
    return prev <= (int64_t)in->last_offset_delta ? PL_OK : PL_E_OFFSET_DELTA;
}

/* Bytes of record i after its length varint; *dts = its timestamp delta. */
static inline uint64_t record_body_size(const pl_batch_input *in, uint32_t i, int64_t base_ts,
                                        int64_t *dts)
{
    int32_t vlen = in->value_lens[i];
    int32_t klen = in->key_lens ? in->key_lens[i] : -1;
    int32_t hlen = in->header_lens ? in->header_lens[i] : 0;
    int64_t ts = in->timestamps ? in->timestamps[i] : base_ts;
    /* delta computed in unsigned: two's complement wrap is the defined result */
    uint64_t dts_u = (uint64_t)ts - (uint64_t)base_ts;
    memcpy(dts, &dts_u, sizeof *dts);
    return 1 + (uint64_t)varint_size(*dts) + (uint64_t)varint_size(offset_delta(in, i)) +
           field_size(klen) + field_size(vlen) +
           (hlen > 0 ? (uint64_t)hlen : 1);
}

/* A key or value column of pl_batch_input: item i is at ptrs[i] when ptrs is given,
 * else at base + pos[i] when pos is given, else the items lie end to end from base. */
typedef struct {
    const uint8_t *const *ptrs;
    const uint8_t *base;
    const int64_t *pos;
} field_col;

static inline field_col values_of(const pl_batch_input *in)
{
    return (field_col){in->value_ptrs, in->values, in->value_pos};
}

static inline field_col keys_of(const pl_batch_input *in)
{
    return (field_col){in->key_ptrs, in->keys, in->key_pos};
}

/* Item i of `col` (its length > 0) can be read. */
static inline int field_ok(field_col col, uint32_t i)
{
    if (col.ptrs != NULL)
        return col.ptrs[i] != NULL;
    return col.base != NULL && (col.pos == NULL || col.pos[i] >= 0);
}

/* Where item i of `col` (`len` bytes, > 0) lies; *cursor walks items laid end to end
 * and moves past this one. */
static inline const uint8_t *field_at(field_col col, uint32_t i, int32_t len, const uint8_t **cursor)
{
    if (col.ptrs != NULL)
        return col.ptrs[i];
    if (col.pos != NULL)
        return col.base + col.pos[i];
    const uint8_t *src = *cursor;
    *cursor += len;
    return src;
}

/* Record i's lengths and positions are usable (plan_records, build_records). */
static inline int record_ok(const pl_batch_input *in, uint32_t i)
{
    int32_t vlen = in->value_lens[i];
    int32_t klen = in->key_lens ? in->key_lens[i] : -1;
    int32_t hlen = in->header_lens ? in->header_lens[i] : 0;
    if (vlen < -1 || klen < -1 || hlen < 0 || (hlen > 0 && in->headers == NULL))
        return 0;
    return (vlen <= 0 || field_ok(values_of(in), i)) && (klen <= 0 || field_ok(keys_of(in), i));
}

/* Where the value bytes a few records ahead of record i lie (0: none), for
 * build_records to prefetch: the input is usually read once, from memory rather than
 * cache, and the build would otherwise wait for each record's bytes in turn
 * (measured: 1M 100-byte values build in 16 ms with it, 24-28 ms without).  Two
 * lines, as a record is longer than one.  A prefetch never faults; the address is an
 * integer since it may lie past the buffer.  The prefetches are written in the loop
 * itself: GCC 12 dropped them as dead code when they sat in a helper function. */
#define PL_PREFETCH_BYTES 2048
#define PL_PREFETCH_RECORDS 16
static inline uintptr_t prefetch_at(const pl_batch_input *in, uint32_t i, const uint8_t *v, int by_ptr)
{
    if (by_ptr)
        return in->count - i > PL_PREFETCH_RECORDS ? (uintptr_t)in->value_ptrs[i + PL_PREFETCH_RECORDS] : 0;
    if (in->value_pos == NULL)
        return (uintptr_t)v + PL_PREFETCH_BYTES;
    if (in->count - i > PL_PREFETCH_RECORDS && in->value_pos[i + PL_PREFETCH_RECORDS] >= 0)
        return (uintptr_t)in->values + (uint64_t)in->value_pos[i + PL_PREFETCH_RECORDS];
    return 0;
}

/* Writes record i (its length varint, then `body` bytes; dts its timestamp delta) at o
 * and returns the end.  *k, *v, *h walk keys, values and headers laid end to end (when
 * neither pointers nor positions are given). */
static inline uint8_t *put_record(const pl_batch_input *in, uint32_t i, uint64_t body, int64_t dts,
                                  uint8_t *o, const uint8_t **k, const uint8_t **v, const uint8_t **h)
{
    int32_t vlen = in->value_lens[i];
    int32_t klen = in->key_lens ? in->key_lens[i] : -1;
    int32_t hlen = in->header_lens ? in->header_lens[i] : 0;
    o = put_varint(o, (int64_t)body);
    *o++ = 0; /* record attributes: unused */
    o = put_varint(o, dts);
    o = put_varint(o, offset_delta(in, i));
    o = put_field(o, klen > 0 ? field_at(keys_of(in), i, klen, k) : NULL, klen);
    o = put_field(o, vlen > 0 ? field_at(values_of(in), i, vlen, v) : NULL, vlen);
    if (hlen > 0) {
        memcpy(o, *h, (size_t)hlen);
        o += hlen;
        *h += hlen;
    } else {
        *o++ = 0; /* headerCount 0 */
    }
    return o;
}

static int build_records(const pl_batch_input *in, uint8_t *out, uint64_t cap, uint64_t *size,
                         int64_t *base_ts, int64_t *max_ts);

/* Checks `in` and computes the exact records-section size, base and max timestamp
 * (build_records with no room to write in). */
static int plan_records(const pl_batch_input *in, uint64_t *size, int64_t *base_ts, int64_t *max_ts)
{
    int st = build_records(in, NULL, 0, size, base_ts, max_ts);
    return st == PL_E_NOSPACE ? PL_OK : st;
}

uint64_t pl_batch_size_bound(const pl_batch_input *in)
{
    uint64_t size;
    int64_t base, max;
    if (plan_records(in, &size, &base, &max) != PL_OK)
        return 0;
    return size + PL_BATCH_HEADER_BYTES;
}

int64_t pl_columns_split(const int32_t *value_lens, const int32_t *key_lens, uint64_t count,
                         uint64_t over, uint64_t room, uint32_t max_records, uint64_t *ends,
                         uint64_t *weights, uint64_t *value_bytes, uint64_t *key_bytes,
                         uint64_t max_runs)
{
    if (value_lens == NULL || ends == NULL || weights == NULL || value_bytes == NULL ||
        key_bytes == NULL || count == 0 || max_records == 0 || over > UINT32_MAX)
        return PL_E_ARG;
    uint64_t runs = 0, weight = 0, vbytes = 0, kbytes = 0;
    uint32_t in_run = 0;
    for (uint64_t i = 0; i < count; i++) {
        int32_t v = value_lens[i];
        int32_t k = key_lens != NULL ? key_lens[i] : -1;
        if (v < -1 || k < -1)
            return PL_E_ARG;
        uint64_t vb = v > 0 ? (uint64_t)v : 0, kb = k > 0 ? (uint64_t)k : 0;
        uint64_t w = over + vb + kb; /* < 2^33: no overflow below */
        if (in_run > 0 && (weight + w > room || in_run == max_records)) {
            if (runs == max_runs)
                return PL_E_NOSPACE;
            ends[runs] = i;
            weights[runs] = weight;
            value_bytes[runs] = vbytes;
            key_bytes[runs] = kbytes;
            runs++;
            weight = vbytes = kbytes = 0;
            in_run = 0;
        }
        weight += w;
        vbytes += vb;
        kbytes += kb;
        in_run++;
    }
    if (runs == max_runs)
        return PL_E_NOSPACE;
    ends[runs] = count;
    weights[runs] = weight;
    value_bytes[runs] = vbytes;
    key_bytes[runs] = kbytes;
    return (int64_t)(runs + 1);
}

/* Writes the records (already planned: `size` bytes fit) at out. */
static void write_records(const pl_batch_input *in, int64_t base_ts, uint8_t *out)
{
    const uint8_t *v = in->values, *k = in->keys, *h = in->headers;
    uint8_t *o = out;
    for (uint32_t i = 0; i < in->count; i++) {
        int64_t dts;
        uint64_t body = record_body_size(in, i, base_ts, &dts);
        o = put_record(in, i, body, dts, o, &k, &v, &h);
    }
}

int64_t pl_records_encode(const pl_batch_input *in, uint8_t *out, uint64_t out_cap)
{
    uint64_t size;
    int64_t base, max;
    int st = plan_records(in, &size, &base, &max);
    if (st != PL_OK)
        return st;
    if (out == NULL || out_cap < size)
        return PL_E_NOSPACE;
    write_records(in, base, out);
    return (int64_t)size;
}

static void write_header(uint8_t *buf, uint64_t rec_len, const pl_batch_info *info)
{
    wr64(buf + 0, (uint64_t)info->base_offset);
    wr32(buf + 8, (uint32_t)(PL_MIN_BATCH_LENGTH + rec_len));
    wr32(buf + 12, (uint32_t)info->partition_leader_epoch);
    buf[16] = PL_MAGIC_V2;
    wr16(buf + 21, (uint16_t)info->attributes);
    wr32(buf + 23, (uint32_t)info->last_offset_delta);
    wr64(buf + 27, (uint64_t)info->base_timestamp);
    wr64(buf + 35, (uint64_t)info->max_timestamp);
    wr64(buf + 43, (uint64_t)info->producer_id);
    wr16(buf + 51, (uint16_t)info->producer_epoch);
    wr32(buf + 53, (uint32_t)info->base_sequence);
    wr32(buf + 57, (uint32_t)info->record_count);
    uint64_t total = PL_BATCH_HEADER_BYTES + rec_len;
    wr32(buf + 17, pl_crc32c(0, buf + PL_BATCH_CRC_START, (size_t)(total - PL_BATCH_CRC_START)));
}

/* plan_records and write_records in one pass, for pl_batch_build: each record is
 * checked as plan_records checks it, then written at once while the section so far
 * fits in cap bytes at out (out may be NULL: nothing fits).  Once one does not fit,
 * the rest is only checked, so bad input is reported before a lack of room, as with
 * the two passes.  Sets the exact records-section size, base and max timestamp when
 * it returns PL_OK (all written) or PL_E_NOSPACE (valid, did not fit); otherwise an
 * input error or PL_E_TOO_LARGE.  When it refuses, the bytes it wrote are zeroed
 * again (a segment's bytes past its end are zeros, and stay so). */
static int build_records(const pl_batch_input *in, uint8_t *out, uint64_t cap, uint64_t *size,
                         int64_t *base_ts, int64_t *max_ts)
{
    if (in == NULL || in->count == 0 || in->value_lens == NULL)
        return PL_E_ARG;
    if (in->count > (uint32_t)PL_MAX_RECORDS_PER_BATCH)
        return PL_E_TOO_LARGE;
    int st = check_offset_deltas(in);
    if (st != PL_OK)
        return st;
    int64_t base = in->timestamps ? in->timestamps[0] : in->base_timestamp;
    int64_t max = base;
    uint64_t total = 0;
    int fits = out != NULL;
    const uint8_t *v = in->values, *k = in->keys, *h = in->headers;
    const int by_ptr = in->value_ptrs != NULL;
    uint8_t *o = out;
    for (uint32_t i = 0; i < in->count; i++) {
        if (!record_ok(in, i)) {
            st = PL_E_ARG;
            goto refuse;
        }
        int64_t ts = in->timestamps ? in->timestamps[i] : base;
        if (ts > max)
            max = ts;
        int64_t dts;
        uint64_t body = record_body_size(in, i, base, &dts);
        if (body > PL_MAX_RECORD_BYTES) {
            st = PL_E_TOO_LARGE;
            goto refuse;
        }
        total += (uint64_t)varint_size((int64_t)body) + body;
        if (total > (uint64_t)PL_MAX_BATCH_BYTES) {
            st = PL_E_TOO_LARGE;
            goto refuse;
        }
        if (!fits)
            continue;
        if (total > cap) {
            fits = 0;
            continue;
        }
        uintptr_t ahead = prefetch_at(in, i, v, by_ptr);
        __builtin_prefetch((const void *)ahead);
        __builtin_prefetch((const void *)(ahead + 64));
        o = put_record(in, i, body, dts, o, &k, &v, &h);
        assert((uint64_t)(o - out) == total);
    }
    if (total + PL_BATCH_HEADER_BYTES > (uint64_t)PL_MAX_BATCH_BYTES) {
        st = PL_E_TOO_LARGE;
        goto refuse;
    }
    *size = total;
    *base_ts = base;
    *max_ts = max;
    if (!fits) {
        st = PL_E_NOSPACE;
        goto refuse;
    }
    return PL_OK;
refuse:
    if (o != NULL && o > out)
        memset(out, 0, (size_t)(o - out));
    return st;
}

int64_t pl_batch_build(const pl_batch_input *in, uint8_t *out, uint64_t out_cap)
{
    uint64_t size;
    int64_t base, max;
    if (in != NULL && (in->attributes & PL_ATTR_COMPRESSION_MASK) != 0) {
        int bad = plan_records(in, &size, &base, &max); /* its errors come first */
        return bad != PL_OK ? bad : PL_E_ARG;
    }
    /* One pass: records are checked and written together (build_records). */
    int fits = out != NULL && out_cap >= PL_BATCH_HEADER_BYTES;
    int st = build_records(in, fits ? out + PL_BATCH_HEADER_BYTES : NULL,
                           fits ? out_cap - PL_BATCH_HEADER_BYTES : 0, &size, &base, &max);
    if (st != PL_OK)
        return st;
    pl_batch_info info = {
        .base_offset = in->base_offset,
        .partition_leader_epoch = in->partition_leader_epoch,
        .attributes = in->attributes,
        .last_offset_delta = batch_last_delta(in),
        .base_timestamp = base,
        .max_timestamp = max,
        .producer_id = in->producer_id,
        .producer_epoch = in->producer_epoch,
        .base_sequence = in->base_sequence,
        .record_count = (int32_t)in->count,
    };
    write_header(out, size, &info);
    return (int64_t)(size + PL_BATCH_HEADER_BYTES);
}

int64_t pl_batch_seal(uint8_t *buf, uint64_t buf_cap, uint64_t rec_len, const pl_batch_info *info)
{
    if (buf == NULL || info == NULL)
        return PL_E_ARG;
    if (rec_len > (uint64_t)PL_MAX_BATCH_BYTES - PL_BATCH_HEADER_BYTES)
        return PL_E_TOO_LARGE;
    if (buf_cap < PL_BATCH_HEADER_BYTES + rec_len)
        return PL_E_NOSPACE;
    if (info->record_count < 0 || info->last_offset_delta < 0)
        return PL_E_ARG;
    write_header(buf, rec_len, info);
    return (int64_t)(PL_BATCH_HEADER_BYTES + rec_len);
}

/* ---- parsing and validation ----------------------------------------------- */

int pl_batch_parse_header(const uint8_t *buf, uint64_t len, pl_batch_info *out)
{
    if (buf == NULL || out == NULL)
        return PL_E_ARG;
    if (len < PL_BATCH_HEADER_BYTES)
        return PL_E_TRUNCATED;
    out->base_offset = (int64_t)rd64(buf);
    out->batch_length = (int32_t)rd32(buf + 8);
    out->partition_leader_epoch = (int32_t)rd32(buf + 12);
    out->magic = (int8_t)buf[16];
    out->crc = rd32(buf + 17);
    out->attributes = (int16_t)rd16(buf + 21);
    out->last_offset_delta = (int32_t)rd32(buf + 23);
    out->base_timestamp = (int64_t)rd64(buf + 27);
    out->max_timestamp = (int64_t)rd64(buf + 35);
    out->producer_id = (int64_t)rd64(buf + 43);
    out->producer_epoch = (int16_t)rd16(buf + 51);
    out->base_sequence = (int32_t)rd32(buf + 53);
    out->record_count = (int32_t)rd32(buf + 57);
    if (out->magic != PL_MAGIC_V2)
        return PL_E_MAGIC;
    if (out->batch_length < PL_MIN_BATCH_LENGTH ||
        (int64_t)out->batch_length + PL_BATCH_OVERHEAD_BYTES > (int64_t)PL_MAX_BATCH_BYTES)
        return PL_E_BATCH_LENGTH;
    return PL_OK;
}

/* One record's fields, as positions relative to the records section (internal.h). */
typedef pl_record_fields rec_fields;

static int get_len32(const uint8_t **p, const uint8_t *end, int allow_null, int32_t *out)
{
    int64_t v;
    int st = get_varint(p, end, MAX_VARINT32_BYTES, &v);
    if (st != PL_OK)
        return st;
    if (v < (allow_null ? -1 : 0) || v > INT32_MAX)
        return PL_E_RECORD;
    if (v > 0 && (uint64_t)v > (uint64_t)(end - *p))
        return PL_E_TRUNCATED;
    *out = (int32_t)v;
    return PL_OK;
}

/* Walks a record's headers section at *q (headerCount, then each header's key and
 * value), within end: *q moves past it, *count = headerCount, *first = where the
 * first header starts (past the count).  PL_E_RECORD if it is malformed or runs past
 * end. */
static int walk_headers(const uint8_t **q, const uint8_t *end, int32_t *count, const uint8_t **first)
{
    int32_t nh;
    if (get_len32(q, end, 0, &nh) != PL_OK)
        return PL_E_RECORD;
    *first = *q;
    /* each header takes at least 2 bytes: bounds the loop by the bytes left */
    if ((uint64_t)nh > (uint64_t)(end - *q) / 2)
        return PL_E_RECORD;
    for (int32_t i = 0; i < nh; i++) {
        int32_t hk, hv;
        if (get_len32(q, end, 0, &hk) != PL_OK)
            return PL_E_RECORD;
        *q += hk;
        if (get_len32(q, end, 1, &hv) != PL_OK)
            return PL_E_RECORD;
        if (hv > 0)
            *q += hv;
    }
    *count = nh;
    return PL_OK;
}

/* Parses the record at *p (section starts at `start`, ends at `end`). */
static int parse_record(const uint8_t *start, const uint8_t **p, const uint8_t *end, rec_fields *r)
{
    int64_t length;
    int st = get_varint(p, end, MAX_VARINT32_BYTES, &length);
    if (st != PL_OK)
        return st == PL_E_TRUNCATED ? PL_E_RECORD : st;
    if (length < MIN_RECORD_BODY || (uint64_t)length > (uint64_t)(end - *p))
        return PL_E_RECORD;
    const uint8_t *q = *p;
    const uint8_t *rend = q + length;
    q++; /* attributes */
    int64_t v;
    if ((st = get_varint(&q, rend, MAX_VARINT_BYTES, &v)) != PL_OK)
        return PL_E_RECORD;
    r->ts_delta = v;
    if ((st = get_varint(&q, rend, MAX_VARINT32_BYTES, &v)) != PL_OK || v < 0 || v > INT32_MAX)
        return PL_E_RECORD;
    r->offset_delta = (int32_t)v;
    if (get_len32(&q, rend, 1, &r->key_len) != PL_OK)
        return PL_E_RECORD;
    r->key_pos = q - start;
    if (r->key_len > 0)
        q += r->key_len;
    if (get_len32(&q, rend, 1, &r->value_len) != PL_OK)
        return PL_E_RECORD;
    r->value_pos = q - start;
    if (r->value_len > 0)
        q += r->value_len;
    const uint8_t *first;
    if (walk_headers(&q, rend, &r->headers_count, &first) != PL_OK || q != rend)
        return PL_E_RECORD;
    r->headers_pos = first - start;
    *p = rend;
    return PL_OK;
}

int pl_record_parse(const uint8_t *start, const uint8_t **p, const uint8_t *end,
                    pl_record_fields *r)
{
    assert(start != NULL && p != NULL && *p >= start && *p <= end && r != NULL);
    return parse_record(start, p, end, r);
}

int pl_record_header_next(const uint8_t **p, const uint8_t *end, const uint8_t **key,
                          int32_t *key_len, const uint8_t **value, int32_t *value_len)
{
    assert(p != NULL && *p <= end && key != NULL && key_len != NULL && value != NULL &&
           value_len != NULL);
    const uint8_t *q = *p;
    if (get_len32(&q, end, 0, key_len) != PL_OK)
        return PL_E_RECORD;
    *key = q;
    q += *key_len;
    if (get_len32(&q, end, 1, value_len) != PL_OK)
        return PL_E_RECORD;
    *value = q;
    if (*value_len > 0)
        q += *value_len;
    *p = q;
    return PL_OK;
}

/* Checks the records section of an uncompressed batch. */
static int check_records(const uint8_t *recs, uint64_t len, const pl_batch_info *info)
{
    const uint8_t *p = recs, *end = recs + len;
    int64_t prev = -1;
    int log_append = (info->attributes & PL_ATTR_TIMESTAMP_TYPE) != 0;
    for (int32_t i = 0; i < info->record_count; i++) {
        rec_fields r;
        if (p >= end)
            return PL_E_RECORD_COUNT;
        int st = parse_record(recs, &p, end, &r);
        if (st != PL_OK)
            return st;
        if (r.offset_delta <= prev || r.offset_delta > info->last_offset_delta)
            return PL_E_OFFSET_DELTA;
        prev = r.offset_delta;
        if (!log_append) {
            uint64_t ts_u = (uint64_t)info->base_timestamp + (uint64_t)r.ts_delta;
            int64_t ts;
            memcpy(&ts, &ts_u, sizeof ts);
            if (ts > info->max_timestamp)
                return PL_E_TIMESTAMP;
        }
    }
    if (p != end)
        return PL_E_RECORD_COUNT;
    return PL_OK;
}

int pl_batch_validate(const uint8_t *buf, uint64_t len, pl_batch_info *out)
{
    pl_batch_info info;
    int st = pl_batch_parse_header(buf, len, &info);
    if (st != PL_OK)
        return st;
    uint64_t total = PL_BATCH_OVERHEAD_BYTES + (uint64_t)info.batch_length;
    if (total > len)
        return PL_E_TRUNCATED;
    if (pl_crc32c(0, buf + PL_BATCH_CRC_START, (size_t)(total - PL_BATCH_CRC_START)) != info.crc)
        return PL_E_CRC;
    /* recordCount 0 with any lastOffsetDelta is valid: the log cleaner leaves such a
     * batch over offsets whose records it removed (as Kafka does). */
    if (info.record_count < 0)
        return PL_E_RECORD_COUNT;
    if (info.last_offset_delta < 0)
        return PL_E_OFFSET_DELTA;
    if ((int64_t)info.record_count > (int64_t)info.last_offset_delta + 1)
        return PL_E_RECORD_COUNT;
    if ((info.attributes & PL_ATTR_COMPRESSION_MASK) >= NUM_CODECS)
        return PL_E_RECORD;
    if ((info.attributes & PL_ATTR_COMPRESSION_MASK) == 0) {
        st = check_records(buf + PL_BATCH_HEADER_BYTES, total - PL_BATCH_HEADER_BYTES, &info);
        if (st != PL_OK)
            return st;
    }
    if (out)
        *out = info;
    return PL_OK;
}

int pl_batches_validate(const uint8_t *buf, uint64_t len, uint32_t *n_batches,
                        uint64_t *valid_bytes, uint64_t *n_records)
{
    if (buf == NULL || n_batches == NULL || valid_bytes == NULL || n_records == NULL)
        return PL_E_ARG;
    *n_batches = 0;
    *valid_bytes = 0;
    *n_records = 0;
    if (len == 0)
        return PL_E_TRUNCATED;
    uint64_t pos = 0;
    while (pos < len) {
        pl_batch_info info;
        int st = pl_batch_validate(buf + pos, len - pos, &info);
        if (st != PL_OK)
            return st;
        if (*n_batches == UINT32_MAX)
            return PL_E_TOO_LARGE;
        pos += PL_BATCH_OVERHEAD_BYTES + (uint64_t)info.batch_length;
        *n_batches += 1;
        *valid_bytes = pos;
        *n_records += (uint64_t)info.record_count;
    }
    return PL_OK;
}

int pl_batch_set_offset(uint8_t *buf, uint64_t len, int64_t base_offset, int32_t epoch)
{
    if (buf == NULL)
        return PL_E_ARG;
    if (len < PL_BATCH_HEADER_BYTES)
        return PL_E_TRUNCATED;
    wr64(buf, (uint64_t)base_offset);
    if (epoch >= 0)
        wr32(buf + 12, (uint32_t)epoch);
    return PL_OK;
}

/* ---- decoding ------------------------------------------------------------- */

/* How far ahead of the record walk records_decode asks for the records' cache lines. */
#define DECODE_PREFETCH_AHEAD 4096u
/* With a CRC (records_decode's crc), the walk extends it over the records behind it
 * whenever this many new bytes lie there. */
#define DECODE_CRC_CHUNK 8192u

/* pl_records_decode, the walk also asking for every cache line of the records
 * DECODE_PREFETCH_AHEAD bytes ahead of itself: it reads only the records' headers, and
 * left to the hardware their lines came from memory as the walk reached them (and a
 * CRC over the batch then fetched the values' lines, at memory speed: it was 15 % of
 * read_arrays' time).  The walk was about 1.5 times faster with the prefetch, checked
 * or not.  A prefetch never faults; the addresses stay inside the records all the
 * same.  With `crc` (and `crc_done`, the bytes of recs it covers), the walk extends
 * *crc over the records behind it DECODE_CRC_CHUNK bytes at a time, while they are in
 * the cache; the caller finishes it over recs[*crc_done, len), whatever the status. */
static int records_decode(const uint8_t *recs, uint64_t len, uint32_t count, int64_t base_offset,
                          int64_t base_timestamp, int64_t max_timestamp, int16_t attributes,
                          int64_t pos_base, pl_record_arrays *out, uint32_t first, uint32_t *crc,
                          uint64_t *crc_done)
{
    if (out == NULL || (recs == NULL && len > 0))
        return PL_E_ARG;
    if (first > out->capacity || count > out->capacity - first)
        return PL_E_NOSPACE;
    const uint8_t *p = recs, *end = recs + len;
    uint64_t fetched = 0; /* bytes of recs asked for so far (prefetched) */
    int log_append = (attributes & PL_ATTR_TIMESTAMP_TYPE) != 0;
    int32_t prev = -1;
    for (uint32_t i = 0; i < count; i++) {
        rec_fields r;
        if (p >= end)
            return PL_E_RECORD_COUNT;
        uint64_t want = (uint64_t)(p - recs) + DECODE_PREFETCH_AHEAD;
        if (want > len)
            want = len;
        for (; fetched < want; fetched += 64)
            __builtin_prefetch(recs + fetched);
        if (crc != NULL && (uint64_t)(p - recs) - *crc_done >= DECODE_CRC_CHUNK) {
            uint64_t n = (uint64_t)(p - recs) - *crc_done;
            *crc = pl_crc32c(*crc, recs + *crc_done, (size_t)n);
            *crc_done += n;
        }
        int st = parse_record(recs, &p, end, &r);
        if (st != PL_OK)
            return st;
        if (r.offset_delta <= prev)
            return PL_E_OFFSET_DELTA;
        prev = r.offset_delta;
        uint32_t j = first + i;
        /* baseOffset is not covered by the CRC and may be anything: add in unsigned */
        uint64_t off_u = (uint64_t)base_offset + (uint64_t)r.offset_delta;
        memcpy(&out->offsets[j], &off_u, sizeof off_u);
        if (log_append) {
            out->timestamps[j] = max_timestamp;
        } else {
            uint64_t ts_u = (uint64_t)base_timestamp + (uint64_t)r.ts_delta;
            memcpy(&out->timestamps[j], &ts_u, sizeof ts_u);
        }
        out->key_pos[j] = pos_base + r.key_pos;
        out->key_len[j] = r.key_len;
        out->value_pos[j] = pos_base + r.value_pos;
        out->value_len[j] = r.value_len;
        out->headers_pos[j] = pos_base + r.headers_pos;
        out->headers_count[j] = r.headers_count;
    }
    if (p != end)
        return PL_E_RECORD_COUNT;
    return PL_OK;
}

int pl_records_decode(const uint8_t *recs, uint64_t len, uint32_t count, int64_t base_offset,
                      int64_t base_timestamp, int64_t max_timestamp, int16_t attributes,
                      int64_t pos_base, pl_record_arrays *out, uint32_t first)
{
    return records_decode(recs, len, count, base_offset, base_timestamp, max_timestamp, attributes,
                          pos_base, out, first, NULL, NULL);
}

static void drop_front(pl_record_arrays *out, uint32_t at, uint32_t n, uint32_t drop)
{
    uint32_t keep = n - drop;
    memmove(out->offsets + at, out->offsets + at + drop, keep * sizeof(int64_t));
    memmove(out->timestamps + at, out->timestamps + at + drop, keep * sizeof(int64_t));
    memmove(out->key_pos + at, out->key_pos + at + drop, keep * sizeof(int64_t));
    memmove(out->key_len + at, out->key_len + at + drop, keep * sizeof(int32_t));
    memmove(out->value_pos + at, out->value_pos + at + drop, keep * sizeof(int64_t));
    memmove(out->value_len + at, out->value_len + at + drop, keep * sizeof(int32_t));
    memmove(out->headers_pos + at, out->headers_pos + at + drop, keep * sizeof(int64_t));
    memmove(out->headers_count + at, out->headers_count + at + drop, keep * sizeof(int32_t));
}

/* CRC32C of a whole batch (total >= PL_BATCH_HEADER_BYTES bytes at b) as its crc
 * field should hold it: over attributes .. end. */
static inline uint32_t batch_crc(const uint8_t *b, uint64_t total)
{
    assert(total >= PL_BATCH_HEADER_BYTES);
    return pl_crc32c(0, b + PL_BATCH_CRC_START, (size_t)(total - PL_BATCH_CRC_START));
}

/* The header of the batch at buf[pos] and its whole size, checked to lie within len. */
static int batch_at(const uint8_t *buf, uint64_t len, uint64_t pos, pl_batch_info *info, uint64_t *total)
{
    int st = pl_batch_parse_header(buf + pos, len - pos, info);
    if (st != PL_OK)
        return st;
    *total = PL_BATCH_OVERHEAD_BYTES + (uint64_t)info->batch_length;
    return *total > len - pos ? PL_E_TRUNCATED : PL_OK;
}

int pl_batches_decode(const uint8_t *buf, uint64_t len, int64_t min_offset, uint32_t flags,
                      pl_record_arrays *out, uint32_t first, uint32_t *n_out, uint64_t *consumed)
{
    if (buf == NULL || out == NULL || n_out == NULL || consumed == NULL)
        return PL_E_ARG;
    *n_out = 0;
    *consumed = 0;
    if (first > out->capacity)
        return PL_E_NOSPACE;
    int check = (flags & PL_DECODE_CHECK_CRC) != 0;
    uint64_t pos = 0;
    uint32_t filled = 0;
    while (pos < len) {
        assert(*consumed == pos);
        pl_batch_info info;
        uint64_t total;
        int st = batch_at(buf, len, pos, &info, &total);
        if (st != PL_OK)
            return st;
        uint64_t last_u = (uint64_t)info.base_offset + (uint64_t)info.last_offset_delta;
        int64_t last;
        memcpy(&last, &last_u, sizeof last);
        uint32_t room = out->capacity - first - filled;
        int decode = info.record_count > 0 && info.last_offset_delta >= 0 && last >= min_offset &&
                     !(info.attributes & PL_ATTR_COMPRESSION_MASK) &&
                     (uint32_t)info.record_count <= room;
        /* Every batch walked has its CRC checked, skipped ones too, before anything of
         * it is used.  A batch that is decoded is checked along its record walk: the
         * walk prefetches the bytes ahead of itself and takes the CRC over what lies
         * behind it DECODE_CRC_CHUNK bytes at a time (the bytes still in the cache, the
         * CPU overlapping the two), the rest after it (checked first, its bytes would
         * come from memory twice over: the CRC pass and the walk do not share them);
         * its entries count only if its CRC matched, and a mismatch wins over an error
         * the walk met (the CRC is finished over the whole batch first).  Others are
         * checked first. */
        if (check && !decode && batch_crc(buf + pos, total) != info.crc)
            return PL_E_CRC;
        if (info.record_count < 0 || info.last_offset_delta < 0)
            return PL_E_RECORD_COUNT;
        if (last < min_offset || info.record_count == 0) {
            pos += total; /* wholly below min_offset: skip without decoding */
            *consumed = pos;
            continue;
        }
        if (info.attributes & PL_ATTR_COMPRESSION_MASK)
            return PL_E_COMPRESSED;
        if ((uint32_t)info.record_count > room)
            return filled == 0 ? PL_E_NOSPACE : PL_OK;
        assert(decode);
        uint32_t crc = 0;
        uint64_t crc_done = 0;
        if (check)
            crc = pl_crc32c(0, buf + pos + PL_BATCH_CRC_START, PL_BATCH_HEADER_BYTES - PL_BATCH_CRC_START);
        st = records_decode(buf + pos + PL_BATCH_HEADER_BYTES, total - PL_BATCH_HEADER_BYTES,
                            (uint32_t)info.record_count, info.base_offset, info.base_timestamp,
                            info.max_timestamp, info.attributes,
                            (int64_t)(pos + PL_BATCH_HEADER_BYTES), out, first + filled,
                            check ? &crc : NULL, &crc_done);
        if (check) {
            const uint8_t *recs = buf + pos + PL_BATCH_HEADER_BYTES;
            crc = pl_crc32c(crc, recs + crc_done, (size_t)(total - PL_BATCH_HEADER_BYTES - crc_done));
            if (crc != info.crc)
                return PL_E_CRC; /* *consumed is this batch's position */
        }
        if (st != PL_OK)
            return st;
        uint32_t n = (uint32_t)info.record_count;
        uint32_t drop = 0;
        while (drop < n && out->offsets[first + filled + drop] < min_offset)
            drop++;
        if (drop)
            drop_front(out, first + filled, n, drop);
        filled += n - drop;
        pos += total;
        *n_out = filled;
        *consumed = pos;
    }
    return PL_OK;
}

/* ---- open batches (the producer's record path) ---------------------------- */

/* The builder's fields are consistent: what every pl_builder_* call may rely on. */
static int builder_ok(const pl_batch_builder *b)
{
    return b != NULL && b->buf != NULL && b->used >= PL_BATCH_HEADER_BYTES && b->used <= b->cap &&
           b->count >= 0 && (b->count == 0) == (b->used == PL_BATCH_HEADER_BYTES);
}

int pl_builder_init(pl_batch_builder *b, uint8_t *buf, uint64_t cap, int64_t create_time)
{
    if (b == NULL || buf == NULL || cap < PL_BATCH_HEADER_BYTES)
        return PL_E_ARG;
    b->buf = buf;
    b->cap = cap;
    b->used = PL_BATCH_HEADER_BYTES;
    b->count = 0;
    b->base_timestamp = PL_NO_TIMESTAMP;
    b->max_timestamp = PL_NO_TIMESTAMP;
    b->create_time = create_time;
    return PL_OK;
}

/* Checks a pre-encoded header section: headerCount varint, then exactly that many
 * (key length >= 0, key, value length >= -1, value), filling len bytes. */
static int check_header_section(const uint8_t *h, uint64_t len)
{
    const uint8_t *q = h, *end = h + len, *first;
    int32_t nh;
    return walk_headers(&q, end, &nh, &first) == PL_OK && q == end ? PL_OK : PL_E_RECORD;
}

/* Timestamp delta of ts against base, wrapping as two's complement (no overflow). */
static inline int64_t ts_delta(int64_t ts, int64_t base)
{
    uint64_t d_u = (uint64_t)ts - (uint64_t)base;
    int64_t d;
    memcpy(&d, &d_u, sizeof d);
    return d;
}

/* Writes one record whose bytes after keyLength's varint... are given as `tail`
 * (tail_len bytes: keyLength varint, key, valueLength varint, value, headers) at
 * b->used, if it fits; updates b.  Returns the record's index or a status. */
static int64_t builder_put(pl_batch_builder *b, int64_t timestamp, const uint8_t *key, int32_t key_len,
                           const uint8_t *value, int32_t value_len, const uint8_t *headers,
                           int32_t headers_len, const uint8_t *tail, uint64_t tail_len)
{
    if (b->count >= PL_MAX_RECORDS_PER_BATCH)
        return PL_E_TOO_LARGE;
    int64_t base = b->count == 0 ? timestamp : b->base_timestamp;
    int64_t dts = ts_delta(timestamp, base);
    uint64_t body = 1 + (uint64_t)varint_size(dts) + (uint64_t)varint_size(b->count);
    if (tail != NULL) {
        body += tail_len;
    } else {
        body += field_size(key_len) + field_size(value_len) +
                (headers_len > 0 ? (uint64_t)headers_len : 1);
    }
    if (body > PL_MAX_RECORD_BYTES)
        return PL_E_TOO_LARGE;
    uint64_t need = (uint64_t)varint_size((int64_t)body) + body;
    if (need > (uint64_t)PL_MAX_BATCH_BYTES - b->used)
        return PL_E_TOO_LARGE;
    if (need > b->cap - b->used)
        return PL_E_NOSPACE;
    uint8_t *start = b->buf + b->used;
    uint8_t *o = put_varint(start, (int64_t)body);
    *o++ = 0; /* record attributes: unused */
    o = put_varint(o, dts);
    o = put_varint(o, b->count);
    if (tail != NULL) {
        memcpy(o, tail, (size_t)tail_len);
        o += tail_len;
    } else {
        o = put_field(o, key, key_len);
        o = put_field(o, value, value_len);
        if (headers_len > 0) {
            memcpy(o, headers, (size_t)headers_len);
            o += headers_len;
        } else {
            *o++ = 0; /* headerCount 0 */
        }
    }
    assert((uint64_t)(o - start) == need);
    b->used += need;
    if (b->count == 0) {
        b->base_timestamp = timestamp;
        b->max_timestamp = timestamp;
    } else if (timestamp > b->max_timestamp) {
        b->max_timestamp = timestamp;
    }
    assert(b->used <= b->cap);
    return b->count++;
}

int64_t pl_builder_append(pl_batch_builder *b, int64_t timestamp, const uint8_t *key, int32_t key_len,
                          const uint8_t *value, int32_t value_len, const uint8_t *headers,
                          int32_t headers_len)
{
    if (!builder_ok(b))
        return PL_E_ARG;
    if (key_len < -1 || value_len < -1 || headers_len < 0 || (key_len > 0 && key == NULL) ||
        (value_len > 0 && value == NULL) || (headers_len > 0 && headers == NULL))
        return PL_E_ARG;
    if (headers_len > 0 && check_header_section(headers, (uint64_t)headers_len) != PL_OK)
        return PL_E_RECORD;
    return builder_put(b, timestamp, key, key_len, value, value_len, headers, headers_len, NULL, 0);
}

int64_t pl_builder_add(pl_batch_builder *b, const uint8_t *key, int32_t key_len, const uint8_t *value,
                       int32_t value_len)
{
    if (!builder_ok(b))
        return PL_E_ARG;
    if (key_len < -1 || value_len < -1 || (key_len > 0 && key == NULL) || (value_len > 0 && value == NULL))
        return PL_E_ARG;
    return builder_put(b, b->create_time, key, key_len, value, value_len, NULL, 0, NULL, 0);
}

int pl_builder_grow(pl_batch_builder *b, uint8_t *buf, uint64_t cap)
{
    if (!builder_ok(b) || buf == NULL || cap <= b->used)
        return PL_E_ARG;
    memcpy(buf, b->buf, (size_t)b->used);
    b->buf = buf;
    b->cap = cap;
    return PL_OK;
}

int64_t pl_builder_seal(pl_batch_builder *b, int64_t producer_id, int16_t producer_epoch,
                        int32_t base_sequence)
{
    if (!builder_ok(b) || b->count == 0)
        return PL_E_ARG;
    assert(b->max_timestamp >= b->base_timestamp);
    pl_batch_info info = {
        .base_offset = 0,
        .partition_leader_epoch = -1,
        .attributes = 0,
        .last_offset_delta = b->count - 1,
        .base_timestamp = b->base_timestamp,
        .max_timestamp = b->max_timestamp,
        .producer_id = producer_id,
        .producer_epoch = producer_epoch,
        .base_sequence = base_sequence,
        .record_count = b->count,
    };
    write_header(b->buf, b->used - PL_BATCH_HEADER_BYTES, &info);
    return (int64_t)b->used;
}

int64_t pl_builder_append_records(pl_batch_builder *b, const uint8_t *recs, uint64_t len, uint32_t count,
                                  int64_t src_base_timestamp, uint32_t lo, uint32_t hi)
{
    if (!builder_ok(b) || (recs == NULL && len > 0) || lo > hi || hi > count)
        return PL_E_ARG;
    pl_batch_builder saved = *b;
    const uint8_t *p = recs, *end = recs + len;
    for (uint32_t i = 0; i < count && i < hi; i++) {
        const uint8_t *rec = p;
        rec_fields r;
        int st = p < end ? parse_record(recs, &p, end, &r) : PL_E_RECORD_COUNT;
        if (st == PL_OK && i >= lo) {
            /* re-walk the fields parse_record checked, to where keyLength starts */
            const uint8_t *q = rec;
            int64_t v;
            get_varint(&q, p, MAX_VARINT32_BYTES, &v); /* length */
            q++;                                       /* attributes */
            get_varint(&q, p, MAX_VARINT_BYTES, &v);   /* timestampDelta */
            get_varint(&q, p, MAX_VARINT32_BYTES, &v); /* offsetDelta */
            assert(q <= p);
            uint64_t ts_u = (uint64_t)src_base_timestamp + (uint64_t)r.ts_delta;
            int64_t ts;
            memcpy(&ts, &ts_u, sizeof ts);
            int64_t at = builder_put(b, ts, NULL, 0, NULL, 0, NULL, 0, q, (uint64_t)(p - q));
            st = at < 0 ? (int)at : PL_OK;
        }
        if (st != PL_OK) {
            *b = saved; /* the bytes written past saved.used are not in use */
            return st;
        }
    }
    return (int64_t)(hi - lo);
}

int pl_batches_count(const uint8_t *buf, uint64_t len, uint64_t *records, int64_t *next_offset)
{
    if ((buf == NULL && len > 0) || records == NULL || next_offset == NULL)
        return PL_E_ARG;
    *records = 0;
    *next_offset = -1;
    uint64_t pos = 0;
    uint64_t count = 0;
    while (pos < len) {
        pl_batch_info info;
        uint64_t total;
        int st = batch_at(buf, len, pos, &info, &total);
        if (st != PL_OK)
            return st;
        assert(total >= PL_BATCH_HEADER_BYTES); /* batch_length >= PL_MIN_BATCH_LENGTH */
        uint64_t room = (total - PL_BATCH_HEADER_BYTES) / PL_MIN_RECORD_BYTES;
        uint64_t n = info.record_count < 0 ? 0 : (uint64_t)info.record_count;
        count += n < room ? n : room;
        uint64_t next_u = (uint64_t)info.base_offset + (uint64_t)(int64_t)info.last_offset_delta + 1u;
        memcpy(next_offset, &next_u, sizeof next_u);
        pos += total;
    }
    *records = count;
    return PL_OK;
}

int pl_batches_check_crc(const uint8_t *buf, uint64_t len, uint64_t *bad_pos, uint32_t *stored,
                         uint32_t *computed)
{
    if ((buf == NULL && len > 0) || bad_pos == NULL || stored == NULL || computed == NULL)
        return PL_E_ARG;
    *bad_pos = 0;
    *stored = 0;
    *computed = 0;
    uint64_t pos = 0;
    while (pos < len) {
        pl_batch_info info;
        uint64_t total;
        *bad_pos = pos;
        int st = batch_at(buf, len, pos, &info, &total);
        if (st != PL_OK)
            return st;
        uint32_t crc = batch_crc(buf + pos, total);
        if (crc != info.crc) {
            *stored = info.crc;
            *computed = crc;
            return PL_E_CRC;
        }
        pos += total;
    }
    *bad_pos = pos;
    return PL_OK;
}

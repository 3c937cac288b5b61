/*
 * pylog.h -- the one public header of pylog's native core.
 *
 * The cffi binding reads the region between the CDEF-BEGIN and CDEF-END markers
 * below (pylog/_native/build.py); nothing of this surface is declared a second time
 * in Python.  Inside that region only what cffi's parser understands may appear:
 * plain typedefs, structs, prototypes and `#define NAME <integer literal or
 * expression>` (the build script turns each #define into `#define NAME ...`, so
 * the value always comes from this file).
 *
 * Ownership.  C never owns a file or a mapping.  Python opens the files, maps them
 * (mmap module) and hands C raw pointers and capacities in a pl_segment.  C does
 * the per-byte and per-record work: building and validating Kafka v2 record
 * batches, copying them into a segment, offset/time index maintenance and search,
 * CRC32C, recovery scans.  No function here touches a Python object, allocates on
 * the heap (except pl_map_detach's scratch) or aborts on bad input: every function
 * that sees bytes from outside returns a pl_status code.
 *
 * Kafka RecordBatch v2 (magic 2), big-endian, 61-byte header:
 *
 *   off size field
 *     0    8 baseOffset             } not covered by the CRC: the broker
 *     8    4 batchLength            } assigns baseOffset/partitionLeaderEpoch
 *    12    4 partitionLeaderEpoch   } without recomputing it
 *    16    1 magic (= 2)
 *    17    4 crc      (CRC32C of bytes 21 .. 12+batchLength)
 *    21    2 attributes  (bits 0-2 codec, 3 timestampType, 4 transactional, 5 control)
 *    23    4 lastOffsetDelta
 *    27    8 baseTimestamp
 *    35    8 maxTimestamp
 *    43    8 producerId
 *    51    2 producerEpoch
 *    53    4 baseSequence
 *    57    4 recordCount
 *    61    . records (possibly compressed as one block)
 *
 *   batchLength counts the bytes after the batchLength field: total = 12 + batchLength.
 *
 * Record (zigzag varints, as in protobuf):
 *   length varint | attributes int8 | timestampDelta varlong | offsetDelta varint |
 *   keyLength varint (-1 = null) | key | valueLength varint (-1 = null) | value |
 *   headerCount varint | { headerKeyLength varint | key | headerValueLength varint | value }*
 *
 * Segment files (layouts owned by segment.c / index.c):
 *   .log        concatenated batches from position 0; bytes past log_size are
 *               preallocated zeros or garbage from a torn write.
 *   .index      entries of 8 bytes: relative offset u32 BE, position u32 BE.
 *               Sorted, strictly increasing in both fields; every position is the
 *               start of a batch whose baseOffset == base_offset + relative offset.
 *   .timeindex  entries of 12 bytes: timestamp i64 BE, relative offset u32 BE.
 *               Timestamps strictly increasing; the offset is the baseOffset of the
 *               batch (relative) in which that max timestamp was first reached.
 */
#ifndef PYLOG_H
#define PYLOG_H

#include <stddef.h>
#include <stdint.h>

/* CDEF-BEGIN */

/* ---- status codes (0 = ok, negative = error; pl_strerror names each) ---- */
#define PL_OK                      0
#define PL_E_ARG                  -1   /* invalid argument from the caller             */
#define PL_E_TRUNCATED            -2   /* input ends inside a batch or record          */
#define PL_E_BATCH_LENGTH         -3   /* batchLength < 49 or > PL_MAX_BATCH_BYTES      */
#define PL_E_MAGIC                -4   /* magic byte is not 2                          */
#define PL_E_CRC                  -5   /* stored CRC32C does not match                 */
#define PL_E_RECORD_COUNT         -6   /* recordCount < 0, or records != recordCount    */
#define PL_E_OFFSET_DELTA         -7   /* offset deltas not increasing / > lastOffsetDelta */
#define PL_E_RECORD               -8   /* a record is malformed (varint, lengths)       */
#define PL_E_COMPRESSED           -9   /* operation needs an uncompressed batch         */
#define PL_E_FULL                -10   /* segment or index has no room; nothing written */
#define PL_E_NOSPACE             -11   /* caller's output buffer too small              */
#define PL_E_TOO_LARGE           -12   /* a record or batch exceeds a PL_MAX_* limit    */
#define PL_E_OFFSET_RANGE        -13   /* offset outside the segment                    */
#define PL_E_INDEX               -14   /* index file content is inconsistent            */
#define PL_E_IO                  -15   /* a system call failed; errno is kept           */
#define PL_E_TIMESTAMP           -16   /* maxTimestamp below a record's timestamp       */
#define PL_E_TILING              -17   /* a batch's baseOffset is not above the previous */
                                       /*   batch's last offset (damaged: outside the CRC) */

/* ---- named limits ---- */
#define PL_BATCH_HEADER_BYTES      61
#define PL_BATCH_OVERHEAD_BYTES    12          /* baseOffset + batchLength fields    */
#define PL_BATCH_CRC_START         21          /* first byte the batch's CRC covers  */
#define PL_MIN_BATCH_LENGTH        49          /* batchLength of a header-only batch */
#define PL_MIN_RECORD_BYTES        7           /* smallest record: 7 one-byte fields */
#define PL_MAX_BATCH_BYTES         0x7ffffff0  /* whole batch incl. 12-byte prefix   */
#define PL_MAX_RECORD_BYTES        0x7fffffef  /* one record's key+value+headers     */
#define PL_MAX_SEGMENT_BYTES       0x7fffffff  /* index positions are u32, as Kafka  */
#define PL_MAX_RECORDS_PER_BATCH   0x7fffffff
#define PL_INDEX_ENTRY_BYTES       8
#define PL_TIMEINDEX_ENTRY_BYTES   12
#define PL_MAGIC_V2                2
#define PL_ATTR_COMPRESSION_MASK   7
#define PL_ATTR_TIMESTAMP_TYPE     8           /* set: LogAppendTime                 */
#define PL_ATTR_TRANSACTIONAL      16
#define PL_ATTR_CONTROL            32
#define PL_NO_TIMESTAMP            -1

const char *pl_strerror(int status);

/* ---- CRC32C (Castagnoli), crc32c.c ---------------------------------------- */
/* Extends `crc` (0 to start) over len bytes.  Uses carry-less multiplication
 * (VPCLMULQDQ / PCLMULQDQ folding) for long inputs and SSE4.2 / ARMv8 CRC
 * instructions when the CPU has them (detected once at run time), else a
 * portable slicing-by-8 table.  Result identical either way. */
uint32_t pl_crc32c(uint32_t crc, const uint8_t *buf, size_t len);
uint32_t pl_crc32c_portable(uint32_t crc, const uint8_t *buf, size_t len);
int pl_crc32c_hw_available(void);     /* 1 if the hardware path is in use */

/* The paths pl_crc32c chooses from (crc32c.c describes each). */
#define PL_CRC32C_PORTABLE         0           /* slicing-by-8 tables                */
#define PL_CRC32C_HW               1           /* crc32 instruction, three streams   */
#define PL_CRC32C_FOLD128          2           /* PCLMULQDQ folding (x86-64)         */
#define PL_CRC32C_FOLD256          3           /* VPCLMULQDQ folding (x86-64)        */
#define PL_CRC32C_HYBRID           4           /* FOLD256 and HW together (x86-64)   */
#define PL_CRC32C_FOLD512          5           /* VPCLMULQDQ on AVX-512 (x86-64)     */
/* 1 if this CPU can run `path` (PL_CRC32C_FOLD256, PL_CRC32C_HYBRID,
 * PL_CRC32C_FOLD512: and pl_crc32c uses them). */
int pl_crc32c_path_available(int path);
/* *out = the CRC by one named path (tests compare the paths); a length below the
 * path's minimum (64 bytes for FOLD128, 128 for FOLD256, 256 for FOLD512, 7168 for
 * HYBRID) goes to HW.
 * PL_E_ARG if the path is not available here (or bad pointers). */
int pl_crc32c_with(int path, uint32_t crc, const uint8_t *buf, size_t len, uint32_t *out);

/* ---- record batches, batch.c ---------------------------------------------- */

/* Parsed fixed header of one batch (host order). */
typedef struct pl_batch_info {
    int64_t  base_offset;
    int32_t  batch_length;          /* bytes after the batchLength field            */
    int32_t  partition_leader_epoch;
    int8_t   magic;
    uint32_t crc;                   /* as stored                                    */
    int16_t  attributes;
    int32_t  last_offset_delta;
    int64_t  base_timestamp;        /* ms since epoch                               */
    int64_t  max_timestamp;         /* ms since epoch                               */
    int64_t  producer_id;
    int16_t  producer_epoch;
    int32_t  base_sequence;
    int32_t  record_count;
} pl_batch_info;

/* What pl_batch_build encodes.  Arrays have `count` entries; an array left NULL
 * means "all absent" (keys null, no headers, every timestamp = base_timestamp,
 * offset deltas 0..count-1). */
typedef struct pl_batch_input {
    uint32_t        count;           /* records, >= 1                                 */
    const uint8_t  *values;          /* values concatenated                           */
    const int32_t  *value_lens;      /* bytes per value; -1 = null value              */
    const uint8_t  *keys;            /* keys concatenated (may be NULL if key_lens is) */
    const int32_t  *key_lens;        /* bytes per key; -1 = null key; NULL = all null */
    const uint8_t  *headers;         /* per record, its pre-encoded header section:   */
    const int32_t  *header_lens;     /*   headerCount varint + headers; NULL = none   */
    const int64_t  *timestamps;      /* ms per record; NULL = all base_timestamp      */
    const int32_t  *offset_deltas;   /* per record, strictly increasing, >= 0;        */
                                     /*   NULL = 0, 1, .. count-1 (compaction keeps   */
                                     /*   the records' true offsets with this)        */
    int32_t         last_offset_delta; /* header lastOffsetDelta when offset_deltas   */
                                     /*   != NULL (>= the last delta); else ignored   */
    int64_t         base_offset;     /* written to the header (leader reassigns)      */
    int64_t         base_timestamp;  /* ms; ignored when timestamps != NULL (the first is used) */
    int64_t         producer_id;     /* -1 = none                                     */
    int16_t         producer_epoch;  /* -1 = none                                     */
    int32_t         base_sequence;   /* -1 = none                                     */
    int32_t         partition_leader_epoch; /* -1 = none                              */
    int16_t         attributes;      /* codec bits must be 0 here (see pl_batch_seal) */
    const int64_t  *value_pos;       /* NULL: values lie end to end in `values` in    */
                                     /*   order; else value i is at values +          */
                                     /*   value_pos[i] (>= 0; ignored when its length */
                                     /*   is <= 0), as pl_record_arrays lays them out */
    const int64_t  *key_pos;         /* likewise for keys                             */
    const uint8_t *const *value_ptrs; /* NULL, or value i is at value_ptrs[i] (non-  */
                                     /*   NULL when its length is > 0): values left   */
                                     /*   where they are, as Python's bytes objects   */
                                     /*   (then `values` and value_pos are ignored)   */
    const uint8_t *const *key_ptrs;  /* likewise for keys                             */
} pl_batch_input;

/* Upper bound of the bytes pl_batch_build writes for `in` (header included);
 * 0 if `in` is invalid or would exceed PL_MAX_BATCH_BYTES. */
uint64_t pl_batch_size_bound(const pl_batch_input *in);

/* Splits records [0, count) into the greedy runs Log.append_arrays and send_batch
 * make batches of: record i weighs over + max(value_lens[i], 0) + max(key_lens[i], 0)
 * (key_lens NULL: no keys); a run ends before the record that would take its weight
 * past `room`, or after max_records records (a record heavier than room alone gets a
 * run of its own).  For run r: ends[r] = its end (exclusive), weights[r] = its
 * weight, value_bytes[r] / key_bytes[r] = the bytes of its non-null values / keys
 * (where the next run starts in an end-to-end buffer).  Returns the number of runs,
 * PL_E_NOSPACE if that would exceed max_runs (nothing beyond max_runs written), or
 * PL_E_ARG (a NULL array, count 0, max_records 0, a length below -1). */
int64_t pl_columns_split(const int32_t *value_lens, const int32_t *key_lens, uint64_t count,
                         uint64_t over, uint64_t room, uint32_t max_records, uint64_t *ends,
                         uint64_t *weights, uint64_t *value_bytes, uint64_t *key_bytes,
                         uint64_t max_runs);

/* Encodes the records of `in` (the records section only, no header) into out.
 * Returns bytes written (>0) or a negative status. */
int64_t pl_records_encode(const pl_batch_input *in, uint8_t *out, uint64_t out_cap);

/* Builds one complete uncompressed batch (header, records, CRC) into out, checking
 * and writing each record in one pass.  Returns the batch's total size in bytes (>0)
 * or a negative status (bad input is reported before PL_E_NOSPACE); when it refuses,
 * the bytes of out it had written are zeroed again. */
int64_t pl_batch_build(const pl_batch_input *in, uint8_t *out, uint64_t out_cap);

/* Writes the 61-byte header of a batch whose records section (possibly compressed,
 * rec_len bytes) already lies at buf+61, from `info` (batch_length and crc are
 * computed here, magic forced to 2), and computes the CRC.  Used for compressed
 * batches: Python compresses the output of pl_records_encode.  Returns total size
 * or a negative status. */
int64_t pl_batch_seal(uint8_t *buf, uint64_t buf_cap, uint64_t rec_len,
                      const pl_batch_info *info);

/* Parses the fixed header of the batch at buf without checking the CRC; checks that
 * len >= 61, magic == 2 and that 12 + batchLength fits within PL_MAX_BATCH_BYTES.
 * Does NOT require the whole batch to be in buf. */
int pl_batch_parse_header(const uint8_t *buf, uint64_t len, pl_batch_info *out);

/* Fully validates the one batch at the start of buf: whole batch present, magic,
 * batchLength, CRC32C, recordCount >= 0, lastOffsetDelta >= 0, maxTimestamp
 * consistent; and, when uncompressed, that exactly recordCount well-formed records
 * fill the records section with increasing offsetDeltas <= lastOffsetDelta.
 * On success fills *out (may be NULL) and returns PL_OK. */
int pl_batch_validate(const uint8_t *buf, uint64_t len, pl_batch_info *out);

/* Validates a run of concatenated batches (as a producer sends them).  Stops at the
 * first invalid batch.  *n_batches and *valid_bytes tell how many batches / bytes
 * from the start are valid; *n_records the sum of their recordCount.  Returns PL_OK
 * only if all of buf is valid and len > 0, else the status of the first bad batch. */
int pl_batches_validate(const uint8_t *buf, uint64_t len, uint32_t *n_batches,
                        uint64_t *valid_bytes, uint64_t *n_records);

/* Overwrites baseOffset (and partitionLeaderEpoch if epoch >= 0) of the batch at
 * buf; the CRC stays valid because it does not cover those fields. */
int pl_batch_set_offset(uint8_t *buf, uint64_t len, int64_t base_offset, int32_t epoch);

/* ---- open batches: the producer's record path, batch.c -------------------- */
/* A batch the producer fills one record at a time (Producer.send), then seals once.
 * Python allocates the struct and the buffer and keeps both alive; C writes only
 * within buf[0, cap).  The records lie at buf + PL_BATCH_HEADER_BYTES onwards in
 * the v2 record layout, offsetDelta = their index, timestampDelta relative to the
 * first record's timestamp (which becomes the batch's baseTimestamp, as
 * pl_batch_build does); the header and CRC32C are written by pl_builder_seal. */
typedef struct pl_batch_builder {
    uint8_t  *buf;            /* header (61 bytes) then the records                    */
    uint64_t  cap;            /* bytes at buf                                          */
    uint64_t  used;           /* bytes in use: 61 + the records appended so far        */
    int32_t   count;          /* records appended                                      */
    int64_t   base_timestamp; /* ms: the first record's timestamp (-1 while empty)     */
    int64_t   max_timestamp;  /* ms: the largest record timestamp (-1 while empty)     */
    int64_t   create_time;    /* ms: the timestamp pl_builder_add gives a record       */
} pl_batch_builder;

/* Starts an empty batch in buf (cap >= PL_BATCH_HEADER_BYTES); records added with
 * pl_builder_add get the timestamp create_time (ms). */
int pl_builder_init(pl_batch_builder *b, uint8_t *buf, uint64_t cap, int64_t create_time);

/* pl_builder_append of a record with timestamp b->create_time and no headers: the
 * producer's common case in fewer arguments (each costs at the cffi boundary). */
int64_t pl_builder_add(pl_batch_builder *b, const uint8_t *key, int32_t key_len, const uint8_t *value,
                       int32_t value_len);

/* Appends one record: key/value of key_len/value_len bytes (-1 = null, the pointer
 * is then ignored), `headers` a pre-encoded header section (headerCount varint and
 * the headers, headers_len bytes; NULL/0 = no headers).  Returns the record's index
 * (>= 0), or a negative status with nothing written: PL_E_NOSPACE when it does not
 * fit in cap (move to a bigger buffer with pl_builder_grow, or seal), PL_E_ARG
 * (bad lengths or pointers), PL_E_TOO_LARGE (over PL_MAX_RECORD_BYTES or the batch
 * over PL_MAX_BATCH_BYTES / PL_MAX_RECORDS_PER_BATCH). */
int64_t pl_builder_append(pl_batch_builder *b, int64_t timestamp, const uint8_t *key, int32_t key_len,
                          const uint8_t *value, int32_t value_len, const uint8_t *headers,
                          int32_t headers_len);

/* Moves the batch to buf (cap > b->used): copies the bytes in use. */
int pl_builder_grow(pl_batch_builder *b, uint8_t *buf, uint64_t cap);

/* Writes the header of an uncompressed batch (baseOffset 0, no leader epoch) and its
 * CRC32C.  Returns the batch's total size (= used) or a negative status (PL_E_ARG for
 * an empty batch).  The builder may be sealed again (a retry with the same ids). */
int64_t pl_builder_seal(pl_batch_builder *b, int64_t producer_id, int16_t producer_epoch,
                        int32_t base_sequence);

/* Appends records [lo, hi) of the uncompressed records section recs (len bytes,
 * `count` records, baseTimestamp src_base_timestamp) to b, renumbered from b->count
 * (the producer splits a batch the broker refused as too large).  Returns the
 * number appended, or a negative status; on error b is unchanged. */
int64_t pl_builder_append_records(pl_batch_builder *b, const uint8_t *recs, uint64_t len, uint32_t count,
                                  int64_t src_base_timestamp, uint32_t lo, uint32_t hi);

/* Struct-of-arrays that record decoding fills (Python allocates, numpy views). */
typedef struct pl_record_arrays {
    uint32_t  capacity;       /* entries each array can take                       */
    int64_t  *offsets;        /* absolute offset                                    */
    int64_t  *timestamps;     /* absolute ms (batch maxTimestamp for LogAppendTime) */
    int64_t  *key_pos;        /* byte position of the key in the decoded buffer     */
    int32_t  *key_len;        /* -1 = null key                                      */
    int64_t  *value_pos;
    int32_t  *value_len;      /* -1 = null value                                    */
    int64_t  *headers_pos;    /* position of the first header                       */
    int32_t  *headers_count;
} pl_record_arrays;

/* Decodes an uncompressed records section (count records) into out starting at
 * entry `first`.  Positions written are pos_base + position within `recs`. */
int pl_records_decode(const uint8_t *recs, uint64_t len, uint32_t count,
                      int64_t base_offset, int64_t base_timestamp,
                      int64_t max_timestamp, int16_t attributes, int64_t pos_base,
                      pl_record_arrays *out, uint32_t first);

/* Flags of pl_batches_decode. */
#define PL_DECODE_CHECK_CRC        1           /* check each batch's CRC32C (PL_E_CRC) */

/* Decodes the records of consecutive batches at buf (as read from a log) into out,
 * starting at entry `first`, skipping records with offset < min_offset.  With
 * PL_DECODE_CHECK_CRC in flags every batch walked (skipped ones too) has its CRC32C
 * checked before any of its records count (a decoded batch right after its record
 * walk, while its bytes are in the cache): a mismatch stops the decode with PL_E_CRC,
 * whatever else is wrong with the batch, and *consumed = the bad batch's position
 * (pl_batches_check_crc then tells the stored and computed CRC).  Stops before a batch whose records do not all fit, at the end of buf,
 * or before a compressed batch.  *n_out = entries filled, *consumed = bytes of whole
 * batches decoded.  Returns PL_OK, or PL_E_COMPRESSED when it stopped at a
 * compressed batch (the caller decompresses it and uses pl_records_decode), or
 * PL_E_NOSPACE when the first batch alone does not fit, or an error status. */
int pl_batches_decode(const uint8_t *buf, uint64_t len, int64_t min_offset, uint32_t flags,
                      pl_record_arrays *out, uint32_t first,
                      uint32_t *n_out, uint64_t *consumed);

/* Checks the CRC32C of each of the concatenated batches at buf (headers walked as
 * pl_batches_count does; the records are not parsed).  PL_OK when every stored CRC
 * matches (*bad_pos = len).  Otherwise *bad_pos = the position of the first bad
 * batch and the status: PL_E_CRC with *stored and *computed set, or the status of a
 * bad header (PL_E_TRUNCATED when buf ends inside a batch). */
int pl_batches_check_crc(const uint8_t *buf, uint64_t len, uint64_t *bad_pos, uint32_t *stored,
                         uint32_t *computed);

/* Walks the headers of consecutive batches at buf (no CRC or record check), to size
 * the arrays of a pl_batches_decode call: *records = the sum over batches of
 * recordCount, each capped at what its bytes could hold (PL_MIN_RECORD_BYTES per
 * record; a negative count counts 0), *next_offset = baseOffset + lastOffsetDelta + 1
 * of the last batch (-1 when len is 0).  Returns PL_OK, or the status of the first bad
 * header, or PL_E_TRUNCATED when buf ends inside a batch. */
int pl_batches_count(const uint8_t *buf, uint64_t len, uint64_t *records, int64_t *next_offset);

/* Varint helpers for Python-side header encoding (zigzag).  Return bytes
 * written/read, or a negative status.  Decoding accepts only the minimal encoding,
 * of at most 10 bytes (PL_E_RECORD otherwise), as record parsing does. */
int pl_varint_encode(int64_t value, uint8_t *out, uint64_t cap);
int pl_varint_decode(const uint8_t *buf, uint64_t len, int64_t *value);

/* ---- segments and indexes, segment.c / index.c ---------------------------- */

/* One segment: a .log mapping plus its .index and .timeindex mappings.  Python
 * fills the pointers/capacities after mapping the files; C maintains the rest.
 * Readers in other threads read log_size/next_offset only through
 * pl_segment_snapshot (acquire); the writer publishes them with release stores. */
typedef struct pl_segment {
    int64_t   base_offset;            /* offset of the first record it may hold      */
    uint8_t  *log;                    /* .log mapping                                */
    uint64_t  log_capacity;           /* bytes mapped (preallocated file size)       */
    uint64_t  log_size;               /* bytes of valid batches from position 0      */
    int64_t   next_offset;            /* offset the next appended record receives    */
    int64_t   max_timestamp;          /* largest maxTimestamp appended; -1 if none   */
    int64_t   max_timestamp_offset;   /* baseOffset of the batch that reached it     */
    uint8_t  *index;                  /* .index mapping                              */
    uint64_t  index_capacity;         /* bytes mapped                                */
    uint32_t  index_entries;          /* entries in use                              */
    uint8_t  *timeindex;              /* .timeindex mapping                          */
    uint64_t  timeindex_capacity;     /* bytes mapped                                */
    uint32_t  timeindex_entries;      /* entries in use                              */
    uint32_t  index_interval_bytes;   /* bytes of log between index entries          */
    uint32_t  bytes_since_index;      /* log bytes appended since the last entry     */
    uint64_t  flushed_size;           /* log bytes known to be on stable storage     */
    uint32_t  flushed_index_entries;  /* index entries known durable                 */
    uint32_t  flushed_timeindex_entries;
    int       log_fd_plus_one;        /* .log descriptor + 1 for pl_segment_append's */
                                      /* copy (pwrite); 0 (zeroed struct): memcpy    */
    uint32_t  pwrite_min_bytes;       /* batches built below this size are stored    */
                                      /* into the mapping even with a descriptor     */
    uint32_t  pwrite_copy_min_bytes;  /* the same for ready batches copied in by     */
                                      /* pl_segment_append(_buffered); 0: as         */
                                      /* pwrite_min_bytes                            */
} pl_segment;

/* Sets a fresh empty segment's bookkeeping (pointers/capacities must be set). */
int pl_segment_init(pl_segment *seg, int64_t base_offset, uint32_t index_interval_bytes);

/* Result of an append. */
typedef struct pl_append_result {
    int64_t  first_offset;   /* offset given to the first record                     */
    int64_t  last_offset;    /* offset given to the last record                      */
    uint64_t position;       /* .log position of the first appended batch            */
    uint64_t bytes;          /* bytes appended                                       */
    uint32_t batches;        /* batches appended                                     */
    int64_t  max_timestamp;  /* largest maxTimestamp among them                      */
} pl_append_result;

/* Appends one or more complete batches (already validated by pl_batches_validate,
 * headers re-checked here) at log_size.  Each batch's CRC32C is checked again on the
 * copy in the log, before anything is published: input changed after the caller
 * validated it is refused (PL_E_CRC, or the status of a changed header), never
 * written with a stale CRC.  Writes each batch's baseOffset =
 * next_offset (and partitionLeaderEpoch when leader_epoch >= 0), advances
 * next_offset by lastOffsetDelta + 1, adds an offset-index entry whenever
 * index_interval_bytes have passed since the last one (and for the first batch of
 * the segment), and a time-index entry when the max timestamp grows at that
 * entry.  When assign_offsets is 0 the batches keep their baseOffsets, which must
 * be >= next_offset (replication/compaction copy).  All or nothing: returns
 * PL_E_FULL with nothing written if the log or an index lacks room, and on any error
 * publishes nothing (the copy's first header is zeroed so no recovery finds it). */
int pl_segment_append(pl_segment *seg, const uint8_t *batches, uint64_t len,
                      int32_t leader_epoch, int assign_offsets,
                      pl_append_result *out);

/* Builds one batch from `in` straight into the log at log_size (no intermediate
 * copy), assigning next_offset, then indexes it as pl_segment_append does. */
int pl_segment_append_build(pl_segment *seg, const pl_batch_input *in,
                            pl_append_result *out);

/* As pl_segment_append, but a copy of pwrite_copy_min_bytes or more is made in
 * scratch[0, scratch_cap) first: the CRC32C checks and the offsets are done on that
 * copy, which one pwrite then writes to the .log.  No store into the mapping and no
 * page of it read back (measured against writing first and checking through the
 * mapping: 14 against 18 us at 32 KiB, about even from 256 KiB).  What is written is
 * what was checked, as with pl_segment_append.  Without a descriptor in the segment,
 * with scratch NULL, a copy smaller than pwrite_copy_min_bytes or larger than
 * scratch_cap, it is pl_segment_append.  PL_E_IO: the write failed (errno says why),
 * nothing is published. */
int pl_segment_append_buffered(pl_segment *seg, const uint8_t *batches, uint64_t len,
                               int32_t leader_epoch, int assign_offsets, uint8_t *scratch,
                               uint64_t scratch_cap, pl_append_result *out);

/* As pl_segment_append_build, but builds the batch in scratch[0, scratch_cap) and
 * writes it to the .log with one pwrite (a large batch is written faster so than by
 * stores into the mapping; see pwrite_min_bytes).  Without a descriptor in the
 * segment, or with scratch NULL, it is pl_segment_append_build.  PL_E_NOSPACE: the
 * batch is larger than scratch_cap (and than nothing else); PL_E_IO: the write failed
 * (errno says why), nothing is published. */
int pl_segment_append_build_buffered(pl_segment *seg, const pl_batch_input *in, uint8_t *scratch,
                                     uint64_t scratch_cap, pl_append_result *out);

/* Consistent view of the fields a reader needs (acquire loads). */
typedef struct pl_segment_snapshot {
    uint64_t log_size;
    int64_t  next_offset;
    int64_t  max_timestamp;
} pl_segment_snapshot;
void pl_segment_snapshot_get(const pl_segment *seg, pl_segment_snapshot *out);

/* Finds batches for a fetch: the batch containing `offset` (the first batch whose
 * last offset >= offset) through as many following whole batches as fit in
 * max_bytes, but always at least one.  Every batch walked from the index entry's
 * on, and the header after the last one returned, must start above the last offset
 * of the one before, else PL_E_TILING (and the index entry's own batch must have the
 * entry's offset, else PL_E_INDEX): baseOffset is outside the CRC.  It stops before any batch whose baseOffset >=
 * max_offset and at log_size.  Writes up to max_batches batch start positions to
 * positions[] and the end position of the last one to *end.  *n = batches found
 * (0 if offset >= next_offset or >= max_offset). */
int pl_segment_read(const pl_segment *seg, int64_t offset, uint64_t max_bytes,
                    int64_t max_offset, uint64_t *positions, uint32_t max_batches,
                    uint32_t *n, uint64_t *end);

/* Position of the batch containing `offset` (index search + header walk). */
int pl_segment_lookup(const pl_segment *seg, int64_t offset, uint64_t *position);

/* Offset-index search: the last entry with offset <= target.  *rel_offset and
 * *position are 0/0 if none. */
int pl_index_lookup(const pl_segment *seg, int64_t target_offset,
                    uint32_t *rel_offset, uint32_t *position);

/* Time search: the first batch whose maxTimestamp >= ts.  *position and *offset
 * (its baseOffset) are set; returns PL_E_OFFSET_RANGE if no batch qualifies.  The
 * batches walked (from the time-index entry on) have their CRC32C checked (PL_E_CRC),
 * and the entry's batch must have the entry's offset and timestamp (PL_E_INDEX). */
int pl_segment_find_timestamp(const pl_segment *seg, int64_t ts,
                              uint64_t *position, int64_t *base_offset);

/* Recovery: scans and validates (CRC included) every batch from position 0 (or
 * from `start_position`, which must be a batch boundary, keeping the index entries
 * below it), stopping at the first invalid or torn batch, the first baseOffset other
 * than the previous batch's last offset + 1 (offsets are densely tiled, compacted
 * segments too), or log_capacity.  Sets log_size,
 * next_offset, max timestamp, and rebuilds the index and time index from the scan
 * start.  *truncated_bytes = bytes of garbage found past the valid prefix before
 * preallocated zeros (0 after a clean crash).  Never reads beyond log_capacity. */
int pl_segment_recover(pl_segment *seg, uint64_t start_position,
                       uint64_t *truncated_bytes);

/* Checks a reopened (clean) segment's indexes: entries sorted and in bounds, each
 * offset-index entry points at a batch start with the matching baseOffset, last
 * entries consistent with log_size/next_offset.  PL_OK or PL_E_INDEX. */
int pl_segment_check_indexes(const pl_segment *seg);

/* Loads log_size/next_offset/max timestamp for a segment known to be cleanly
 * closed (its file was shrunk to log_size): walks batch headers from the last
 * index entry; does not check CRCs. */
int pl_segment_load_clean(pl_segment *seg, uint64_t log_size);

/* Truncates the segment so that next_offset == offset (offset must be a batch
 * boundary within the segment, or >= next_offset for a no-op): drops index entries
 * at or past it and zeroes the dropped log bytes' first header so that a later
 * recovery scan stops there.  Returns the new log_size in *new_size. */
int pl_segment_truncate(pl_segment *seg, int64_t offset, uint64_t *new_size);

/* msync (MS_SYNC) the log bytes and index entries appended since the last flush;
 * advances flushed_*.  Returns PL_E_IO (errno kept) on failure. */
int pl_segment_flush(pl_segment *seg);

/* Replaces the pages covering [addr, addr+len) of a mapping with a private
 * anonymous copy of their current content, atomically where the OS allows
 * (mremap on Linux), so that views into them keep their bytes while the file is
 * rewritten through another mapping.  addr is rounded down to a page. */
int pl_map_detach(uint8_t *addr, uint64_t len);

/* Maps bytes [0, len) of file `fd` shared, read-write, for C alone (index files):
 * unlike Python's mmap, it keeps no duplicate of the descriptor, so the file can be
 * closed while it stays mapped.  Advised MADV_RANDOM (no readahead: index files are
 * binary searched).  *addr = the mapping.  PL_E_ARG for len 0 or a
 * negative fd, PL_E_IO (errno kept) if mmap fails.  Undo with pl_unmap_file. */
int pl_map_file(int fd, uint64_t len, uint8_t **addr);

/* Unmaps what pl_map_file mapped (addr, len as given there).  PL_E_IO on failure. */
int pl_unmap_file(uint8_t *addr, uint64_t len);

/* ---- benchmark ceiling, bench.c ------------------------------------------- */
/* The machine's ceiling for appends: copies the bytes of src (src_len of them) in
 * order, again from its start when they run out, into dst (an mmapped file of
 * dst_cap bytes), at most `piece` bytes a copy, until total_bytes have been written;
 * a copy that would not fit before dst_cap goes to 0, as an append loop would roll,
 * with no per-record work.  Returns bytes copied, or a negative status. */
int64_t pl_bench_copy_ceiling(uint8_t *dst, uint64_t dst_cap, const uint8_t *src,
                              uint64_t src_len, uint64_t piece, uint64_t total_bytes);
/* The same with write(2): pwrite the bytes of src likewise, at most `piece` a call,
 * into the file fd from position 0 until total_bytes have been written (the way the
 * log writes large batches).  Returns bytes written, or a negative status (PL_E_IO:
 * errno says why). */
int64_t pl_bench_write_ceiling(int fd, const uint8_t *src, uint64_t src_len, uint64_t piece,
                               uint64_t total_bytes);

/* ---- key hashing for partitioning, hash.c ------------------------------- */
/* Kafka's murmur2 (Utils.murmur2 of the Java client: MurmurHash2, seed 0x9747b28c),
 * as a signed 32-bit value exactly as Java returns it.  len is taken modulo 2^32 as
 * Java's int length would be (Java keys are < 2^31 bytes).  data may be NULL when
 * len == 0 (the empty key); NULL with len > 0 reads nothing and returns 0. */
int32_t pl_murmur2(const uint8_t *data, size_t len);

/* Hashes `count` keys lying in buf (buf_len bytes): at positions[i] (bytes from
 * buf), or, with positions == NULL, joined end to end from position 0 in order.
 * lens[i] is the key's length in bytes, -1 for a null key (out[i] = 0, no bytes
 * consumed).  out[i] = pl_murmur2 of key i.  Returns PL_OK, or PL_E_ARG with out
 * untouched if a length is < -1, a position is negative, a key runs past buf_len or
 * a needed pointer is NULL.  count == 0 is a no-op (pointers may be NULL). */
int pl_murmur2_batch(const uint8_t *buf, uint64_t buf_len, const int64_t *positions,
                     const int32_t *lens, uint32_t count, int32_t *out);

/* As pl_murmur2_batch, but out[i] = the key's partition as the Java client picks it,
 * (murmur2 & 0x7fffffff) % num_partitions, and -1 for a null key.  PL_E_ARG also when
 * num_partitions < 1. */
int pl_murmur2_partitions(const uint8_t *buf, uint64_t buf_len, const int64_t *positions,
                          const int32_t *lens, uint32_t count, int32_t num_partitions,
                          int32_t *out);

/* CDEF-END */

#endif /* PYLOG_H */

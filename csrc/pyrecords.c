/*
 * pyrecords.c -- pylog._native._records: the two per-record hot paths that need
 * Python objects, as a small CPython extension beside the cffi core.
 *
 * Why a CPython extension and not cffi.  Everything else in csrc/ is reached
 * through cffi and never touches a Python object (pylog.h).  These paths cannot
 * work that way at the speed issue 11 asks for:
 *
 *   - Reading records one by one (Log.records(), RecordBatch.records()): each
 *     record must become a Record -- a tuple subclass holding two ints, two
 *     bytes and a tuple of headers.  cffi can only hand C values back, so the
 *     objects were built in Python from numpy columns, about 2 us a record.
 *     Built here, straight from the batch bytes, they cost a tenth of that.
 *   - Appending one record (Log.append([value])): a cffi call converts each
 *     argument, releases and retakes the GIL, and needs a pl_batch_input filled
 *     from Python first (prepare_batch: several cffi allocations).  Here the
 *     value and key bytes are read in place and the pl_batch_input lives on the
 *     C stack; the build itself is still segment.c's pl_segment_append_build,
 *     called through the function pointer the cffi module hands over (one
 *     implementation of the append, whichever module calls it).
 *   - Appending a list of records (Log.append(values)): append_many does what
 *     append_one does for one record, the addresses and lengths of the values (and
 *     keys) listed for pl_batch_input in one walk of the list, each read where it
 *     lies by the build; gather_fields lists them the same way for the general
 *     path, and join_fields joins the header sections.
 *   - Producer.send(): its arguments are Python objects and its result a Python
 *     future, one per record; pysend.c (included below) says more.
 *
 * The decoding is batch.c's: pl_batch_parse_header, pl_record_parse and
 * pl_record_header_next, so every length read from the bytes is checked by the same
 * code as the cffi path's.  batch.c (and crc32c.c, which it calls) are included
 * below, making this module one translation unit: the record parser inlines into
 * the decode loop, no object file is shared with the cffi module's build, and
 * -fvisibility=hidden (build.py) keeps every pl_ symbol private to this module.
 * Bad bytes raise the CorruptRecordError class given to setup(), naming the batch
 * and what is wrong; they never read out of bounds.
 *
 * Built against the limited API of Python 3.11 (abi3), like the cffi module.
 * Records are made as CPython's own tuple.__new__ makes a tuple subclass: the
 * type's tp_alloc, then the items set.  setup() checks that this gives Records
 * equal to, and hashing like, plain tuples on the running interpreter (a tuple
 * layout that caches its hash would not); if not, every Record is made through
 * tuple.__new__ instead, slower but always right.
 *
 * Module state is a handful of static references set once by setup() (single
 * phase init, one interpreter), which pylog.records calls at import.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>
#include <time.h>

#include "internal.h"

/* The C core's batch parsing, compiled into this module (see the top). */
#include "crc32c.c"
#include "batch.c"
#include "hash.c"

/* Above this many bytes the single-record append releases the GIL for the copy. */
#define APPEND_RELEASE_GIL_BYTES (64u * 1024u)

/* Set once by setup(); owned references. */
static PyObject *record_type;      /* pylog.records.Record                         */
static PyObject *corrupt_error;    /* pylog.errors.CorruptRecordError              */
static PyObject *decompress_fn;    /* pylog.records.compression.decompress          */
static PyObject *tuple_new;        /* tuple.__new__, for the slow record path       */
static PyObject *empty_tuple;      /* (), the headers of a record without headers   */
static allocfunc record_alloc;     /* Record's tp_alloc                             */
static int fast_records;           /* 1: tp_alloc + PyTuple_SetItem gives Records   */

typedef int (*append_build_fn)(pl_segment *, const pl_batch_input *, pl_append_result *);
static append_build_fn append_build; /* the cffi module's pl_segment_append_build   */
typedef int (*append_buffered_fn)(pl_segment *, const pl_batch_input *, uint8_t *, uint64_t,
                                  pl_append_result *);
static append_buffered_fn append_buffered; /* ... and pl_segment_append_build_buffered */

/* ---- Record objects --------------------------------------------------------- */

/* Takes a tuple built here out of the garbage collector's watch.  Every tuple this
 * module builds holds only ints, bytes, str, None and such untracked tuples, so it
 * can never be part of a reference cycle; CPython's collector untracks plain tuples
 * like these itself, but only at its first pass over them, and never Records (a
 * tuple subclass).  Left tracked, the thousands of Records of one decode call
 * trigger collections that traverse all of them again and again: most of the
 * decoding time.  (A Record stored into an attribute of the Record class itself
 * would make an uncollectable cycle with it: a leak, never a crash.) */
static inline PyObject *untracked(PyObject *tuple)
{
    if (tuple != NULL)
        PyObject_GC_UnTrack(tuple);
    return tuple;
}

/* A Record of the five items, whose references it steals (all non-NULL and not
 * tracked by the garbage collector).  The Record is not tracked either. */
static PyObject *new_record(PyObject *items[5])
{
    if (fast_records) {
        PyObject *rec = record_alloc((PyTypeObject *)record_type, 5);
        if (rec == NULL)
            goto fail;
        for (int i = 0; i < 5; i++)
            PyTuple_SetItem(rec, i, items[i]); /* a fresh tuple: cannot fail */
        return untracked(rec);
    }
    PyObject *tup = PyTuple_New(5);
    if (tup == NULL)
        goto fail;
    for (int i = 0; i < 5; i++)
        PyTuple_SetItem(tup, i, items[i]);
    PyObject *rec = PyObject_CallFunctionObjArgs(tuple_new, record_type, tup, NULL);
    Py_DECREF(tup);
    return untracked(rec);
fail:
    for (int i = 0; i < 5; i++)
        Py_DECREF(items[i]);
    return NULL;
}

/* bytes of buf[0:len], or None when len is -1 (a null key or value). */
static PyObject *bytes_or_none(const uint8_t *buf, int32_t len)
{
    if (len < 0) {
        Py_INCREF(Py_None);
        return Py_None;
    }
    return PyBytes_FromStringAndSize((const char *)buf, len);
}

/* The headers of a parsed record as a tuple of (str, bytes | None) pairs; header
 * keys are decoded as UTF-8 with replacement characters, as RecordArrays does. */
static PyObject *headers_tuple(const uint8_t *recs, const uint8_t *rec_end,
                               const pl_record_fields *r)
{
    if (r->headers_count == 0) {
        Py_INCREF(empty_tuple);
        return empty_tuple;
    }
    PyObject *out = PyTuple_New(r->headers_count);
    if (out == NULL)
        return NULL;
    const uint8_t *p = recs + r->headers_pos;
    for (int32_t h = 0; h < r->headers_count; h++) {
        const uint8_t *k, *v;
        int32_t klen, vlen;
        if (pl_record_header_next(&p, rec_end, &k, &klen, &v, &vlen) != PL_OK) {
            Py_DECREF(out);
            PyErr_Format(corrupt_error, "a record's header %d is malformed", (int)h);
            return NULL;
        }
        PyObject *key = PyUnicode_DecodeUTF8((const char *)k, klen, "replace");
        PyObject *value = key ? bytes_or_none(v, vlen) : NULL;
        PyObject *pair = value ? PyTuple_New(2) : NULL;
        if (pair == NULL) {
            Py_XDECREF(key);
            Py_XDECREF(value);
            Py_DECREF(out);
            return NULL;
        }
        PyTuple_SetItem(pair, 0, key);
        PyTuple_SetItem(pair, 1, value);
        PyTuple_SetItem(out, h, untracked(pair));
    }
    return untracked(out);
}

/* ---- decoding ---------------------------------------------------------------- */

/* Status for "a Python exception is set" (pl_status codes are <= 0). */
#define PY_ERROR 1

/* A walk over the records of concatenated batches, one Record at a time: the state
 * both decode() (all records into a list) and iterate() (a lazy iterator) use.  It
 * holds the buffer of the source object (and of a decompressed records section)
 * until reader_close. */
typedef struct reader {
    PyObject *source;         /* the object whose buffer is walked (owned)          */
    Py_buffer view;           /* its buffer; valid while source != NULL             */
    uint64_t pos;             /* position of the next batch in view                 */
    int64_t min_offset;       /* records below are skipped                          */
    int64_t max_offset;       /* records at or above are skipped, when bounded      */
    int bounded;
    int in_batch;             /* 1 while the records of `info` are being walked     */
    pl_batch_info info;       /* the current batch's header                         */
    PyObject *plain;          /* decompressed records section (owned), or NULL      */
    Py_buffer plain_view;     /* its buffer; valid while plain != NULL              */
    const uint8_t *recs;      /* the current records section                        */
    const uint8_t *p;         /* the next record in it                              */
    const uint8_t *end;       /* its end                                            */
    int32_t done;             /* records of the batch parsed so far                 */
    int32_t prev_delta;       /* offsetDelta of the previous record                 */
    PyObject *ts_obj;         /* int of the last timestamp (owned): runs share it   */
    int64_t ts_last;
    int check_crc;            /* 1: each batch's CRC32C is checked before its records */
    PyObject *origin;         /* str naming the buffer's file in errors (owned), or NULL */
    uint64_t origin_pos;      /* position of the buffer's first byte in that file    */
} reader;

/* Sets up `r` over the buffer of `source` and the window [min, max) (unbounded if
 * max_obj is None); the optional arguments that follow are check_crcs (bool),
 * origin (str or None) and origin_pos (int).  0, or -1 with an exception set (and
 * nothing to close). */
static int reader_open(reader *r, PyObject *source, PyObject *min_obj, PyObject *max_obj,
                       PyObject *const *opt, Py_ssize_t n_opt)
{
    memset(r, 0, sizeof *r);
    if (n_opt > 0) {
        r->check_crc = PyObject_IsTrue(opt[0]);
        if (r->check_crc < 0)
            return -1;
    }
    if (n_opt > 1 && opt[1] != Py_None && !PyUnicode_Check(opt[1])) {
        PyErr_SetString(PyExc_TypeError, "origin must be a str or None");
        return -1;
    }
    if (n_opt > 2) {
        unsigned long long op = PyLong_AsUnsignedLongLong(opt[2]);
        if (op == (unsigned long long)-1 && PyErr_Occurred())
            return -1;
        r->origin_pos = op;
    }
    r->max_offset = INT64_MAX;
    r->min_offset = PyLong_AsLongLong(min_obj);
    if (r->min_offset == -1 && PyErr_Occurred())
        return -1;
    if (max_obj != Py_None) {
        r->max_offset = PyLong_AsLongLong(max_obj);
        if (r->max_offset == -1 && PyErr_Occurred())
            return -1;
        r->bounded = 1;
    }
    if (PyObject_GetBuffer(source, &r->view, PyBUF_SIMPLE) < 0)
        return -1;
    Py_INCREF(source);
    r->source = source;
    if (n_opt > 1 && opt[1] != Py_None) {
        Py_INCREF(opt[1]);
        r->origin = opt[1];
    }
    return 0;
}

static void reader_end_batch(reader *r)
{
    if (r->plain != NULL) {
        PyBuffer_Release(&r->plain_view);
        Py_CLEAR(r->plain);
    }
    r->in_batch = 0;
}

/* Releases everything `r` holds; safe to call twice.  Keeps a set exception. */
static void reader_close(reader *r)
{
    reader_end_batch(r);
    Py_CLEAR(r->ts_obj);
    Py_CLEAR(r->origin);
    if (r->source != NULL) {
        PyBuffer_Release(&r->view);
        Py_CLEAR(r->source);
    }
}

/* Releases a memoryview, so that its export of the caller's buffer ends now and not
 * whenever the garbage collector gets to it; then drops the reference.  Called with
 * no exception set. */
static void release_view(PyObject *view)
{
    if (view == NULL)
        return;
    PyObject *r = PyObject_CallMethod(view, "release", NULL);
    if (r == NULL)
        PyErr_Clear(); /* still exported: it goes with its last reference */
    Py_XDECREF(r);
    Py_DECREF(view);
}

/* Records section of a compressed batch: decompress_fn(codec, view of the body),
 * a view that is released afterwards.  Returns the decompressed object (whose
 * buffer the caller takes) or NULL with an exception set. */
static PyObject *decompress_body(PyObject *source, uint64_t body_start, uint64_t body_end,
                                 int codec)
{
    PyObject *whole = PyMemoryView_FromObject(source);
    if (whole == NULL)
        return NULL;
    PyObject *start = PyLong_FromUnsignedLongLong(body_start);
    PyObject *stop = start ? PyLong_FromUnsignedLongLong(body_end) : NULL;
    PyObject *slice = stop ? PySlice_New(start, stop, NULL) : NULL;
    PyObject *body = slice ? PyObject_GetItem(whole, slice) : NULL;
    Py_XDECREF(start);
    Py_XDECREF(stop);
    Py_XDECREF(slice);
    PyObject *out = NULL;
    if (body != NULL)
        out = PyObject_CallFunction(decompress_fn, "iO", codec, body);
    if (out == NULL) { /* an exception is set: the references just go */
        Py_XDECREF(body);
        Py_DECREF(whole);
        return NULL;
    }
    release_view(body);
    release_view(whole);
    return out;
}

/* Sets CorruptRecordError for the batch at pos (whose header is r->info) failing its
 * CRC32C check, naming the file and position (when an origin was given), the batch's
 * base offset, and the stored and computed CRC. */
static void crc_error(const reader *r, uint64_t pos, uint32_t computed)
{
    unsigned long long at = (unsigned long long)(r->origin_pos + pos);
    if (r->origin != NULL)
        PyErr_Format(corrupt_error,
                     "CRC32C mismatch in record batch at offset %lld (position %llu of %U): "
                     "stored 0x%08x, computed 0x%08x", (long long)r->info.base_offset, at,
                     r->origin, (unsigned)r->info.crc, (unsigned)computed);
    else
        PyErr_Format(corrupt_error,
                     "CRC32C mismatch in record batch at offset %lld (byte %llu): stored "
                     "0x%08x, computed 0x%08x", (long long)r->info.base_offset, at,
                     (unsigned)r->info.crc, (unsigned)computed);
}

/* Moves `r` into the next batch that has records in the window: 1 when in one, 0 at
 * the end of the buffer, -1 with CorruptRecordError (or the decompressor's error)
 * set. */
static int reader_next_batch(reader *r)
{
    const uint8_t *buf = r->view.buf;
    uint64_t len = (uint64_t)r->view.len;
    while (r->pos < len) {
        uint64_t pos = r->pos, left = len - pos;
        if (left < PL_BATCH_HEADER_BYTES) {
            PyErr_Format(corrupt_error, "%llu trailing bytes after the last record batch",
                         (unsigned long long)left);
            return -1;
        }
        pl_batch_info *info = &r->info;
        int st = pl_batch_parse_header(buf + pos, left, info);
        if (st != PL_OK) {
            PyErr_Format(corrupt_error, "record batch at byte %llu: %s", (unsigned long long)pos,
                         pl_strerror(st));
            return -1;
        }
        uint64_t total = PL_BATCH_OVERHEAD_BYTES + (uint64_t)info->batch_length;
        if (total > left) {
            PyErr_Format(corrupt_error,
                         "record batch at byte %llu has batchLength %d, past the end of the "
                         "input (%llu bytes left)", (unsigned long long)pos,
                         (int)info->batch_length, (unsigned long long)left);
            return -1;
        }
        if (info->record_count < 0 || info->last_offset_delta < 0) {
            int count = info->record_count < 0;
            PyErr_Format(corrupt_error, "record batch at offset %lld has a negative %s (%d)",
                         (long long)info->base_offset, count ? "recordCount" : "lastOffsetDelta",
                         count ? (int)info->record_count : (int)info->last_offset_delta);
            return -1;
        }
        if (r->check_crc) {
            uint32_t crc = batch_crc(buf + pos, total);
            if (crc != info->crc) {
                crc_error(r, pos, crc);
                return -1;
            }
        }
        r->pos = pos + total;
        uint64_t last_u = (uint64_t)info->base_offset + (uint64_t)info->last_offset_delta;
        int64_t last;
        memcpy(&last, &last_u, sizeof last);
        if (last < r->min_offset || info->record_count == 0)
            continue; /* wholly below min_offset, or empty: skipped without decoding */
        int codec = info->attributes & PL_ATTR_COMPRESSION_MASK;
        if (codec == 0) {
            r->recs = buf + pos + PL_BATCH_HEADER_BYTES;
            r->end = buf + pos + total;
        } else {
            PyObject *plain = decompress_body(r->source, pos + PL_BATCH_HEADER_BYTES, pos + total,
                                              codec);
            if (plain == NULL)
                return -1;
            if (PyObject_GetBuffer(plain, &r->plain_view, PyBUF_SIMPLE) < 0) {
                Py_DECREF(plain);
                return -1;
            }
            r->plain = plain;
            r->recs = r->plain_view.buf;
            r->end = r->recs + r->plain_view.len;
        }
        r->p = r->recs;
        r->done = 0;
        r->prev_delta = -1;
        r->in_batch = 1;
        return 1;
    }
    return 0;
}

/* The next record of the current batch as a new Record in *out, or *out = NULL when
 * the record lies outside the window.  PL_OK, PY_ERROR, or a pl_status for bad
 * bytes.  The caller checks done < record_count first. */
static int reader_record(reader *r, PyObject **out)
{
    const pl_batch_info *info = &r->info;
    pl_record_fields f;
    *out = NULL;
    if (r->p >= r->end)
        return PL_E_RECORD_COUNT;
    int st = pl_record_parse(r->recs, &r->p, r->end, &f);
    if (st != PL_OK)
        return st;
    r->done++;
    if (f.offset_delta <= r->prev_delta)
        return PL_E_OFFSET_DELTA;
    r->prev_delta = f.offset_delta;
    /* baseOffset is not covered by the CRC and may be anything: add in unsigned */
    uint64_t off_u = (uint64_t)info->base_offset + (uint64_t)f.offset_delta;
    int64_t off;
    memcpy(&off, &off_u, sizeof off);
    if (off < r->min_offset || (r->bounded && off >= r->max_offset))
        return PL_OK;
    int64_t ts;
    if (info->attributes & PL_ATTR_TIMESTAMP_TYPE) {
        ts = info->max_timestamp; /* LogAppendTime */
    } else {
        uint64_t ts_u = (uint64_t)info->base_timestamp + (uint64_t)f.ts_delta;
        memcpy(&ts, &ts_u, sizeof ts);
    }
    if (r->ts_obj == NULL || ts != r->ts_last) {
        Py_XDECREF(r->ts_obj);
        r->ts_obj = PyLong_FromLongLong(ts);
        r->ts_last = ts;
        if (r->ts_obj == NULL)
            return PY_ERROR;
    }
    PyObject *items[5];
    items[0] = PyLong_FromLongLong(off);
    Py_INCREF(r->ts_obj);
    items[1] = r->ts_obj;
    items[2] = bytes_or_none(r->recs + f.key_pos, f.key_len);
    items[3] = bytes_or_none(r->recs + f.value_pos, f.value_len);
    items[4] = headers_tuple(r->recs, r->p, &f);
    if (items[0] == NULL || items[2] == NULL || items[3] == NULL || items[4] == NULL) {
        for (int k = 0; k < 5; k++)
            Py_XDECREF(items[k]);
        return PY_ERROR;
    }
    *out = new_record(items);
    return *out == NULL ? PY_ERROR : PL_OK;
}

/* The next Record of the walk: a new reference, or NULL at the end (no exception
 * set) or on an error (exception set). */
static PyObject *reader_next(reader *r)
{
    for (;;) {
        if (!r->in_batch) {
            int more = reader_next_batch(r);
            if (more <= 0)
                return NULL;
        }
        while (r->done < r->info.record_count) {
            PyObject *rec;
            int st = reader_record(r, &rec);
            if (st == PY_ERROR)
                return NULL;
            if (st != PL_OK) {
                PyErr_Format(corrupt_error, "decoding records of batch at offset %lld: %s",
                             (long long)r->info.base_offset, pl_strerror(st));
                return NULL;
            }
            if (rec != NULL)
                return rec;
        }
        if (r->p != r->end) {
            PyErr_Format(corrupt_error, "decoding records of batch at offset %lld: %s",
                         (long long)r->info.base_offset, pl_strerror(PL_E_RECORD_COUNT));
            return NULL;
        }
        reader_end_batch(r);
    }
}

PyDoc_STRVAR(decode_doc,
"decode(buffer, min_offset, max_offset[, check_crcs[, origin[, origin_pos]]]) -> list[Record]\n\n"
"Records of the concatenated Kafka v2 record batches in ``buffer`` (any contiguous\n"
"bytes-like object) whose offset is >= min_offset and < max_offset (None: no upper\n"
"bound), in order.  Batches whose last offset is below min_offset, and batches of\n"
"no records, are skipped without looking at their records.  Compressed batches are\n"
"decompressed with the function given to setup().  With check_crcs (default False)\n"
"each batch walked has its CRC32C checked before any of its records is made; a\n"
"mismatch raises CorruptRecordError naming the batch's base offset, its position\n"
"(origin_pos + its byte in buffer) in the file named by origin (a str, or None), and\n"
"the stored and computed CRC.  Raises CorruptRecordError for malformed bytes, naming\n"
"the batch and what is wrong.");

static PyObject *rx_decode(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (record_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "pylog._native._records.setup() was not called");
        return NULL;
    }
    if (nargs < 3 || nargs > 6) {
        PyErr_SetString(PyExc_TypeError, "decode(buffer, min_offset, max_offset[, check_crcs[, "
                        "origin[, origin_pos]]]) takes 3 to 6 arguments");
        return NULL;
    }
    reader r;
    if (reader_open(&r, args[0], args[1], args[2], args + 3, nargs - 3) < 0)
        return NULL;
    PyObject *list = PyList_New(0);
    PyObject *rec;
    while (list != NULL && (rec = reader_next(&r)) != NULL) {
        if (PyList_Append(list, rec) < 0)
            Py_CLEAR(list);
        Py_DECREF(rec);
    }
    if (PyErr_Occurred())
        Py_CLEAR(list);
    reader_close(&r);
    return list;
}

/* iterate(): the same walk, lazily.  A Record made just before it is used, and
 * dropped soon after, keeps the memory it takes warm in the CPU cache; a list of a
 * chunk's records would not.  Not tracked by the garbage collector: it refers only
 * to the source buffer's object and a bytes object, never back to a container. */
typedef struct {
    PyObject_HEAD
    reader r;
} record_iter;

static PyObject *record_iter_type; /* created by PyInit */

static PyObject *record_iter_next(PyObject *self)
{
    reader *r = &((record_iter *)self)->r;
    if (r->source == NULL)
        return NULL; /* exhausted */
    PyObject *rec = reader_next(r);
    if (rec == NULL)
        reader_close(r); /* at the end or on an error: the buffers go now */
    return rec;
}

static void record_iter_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    reader_close(&((record_iter *)self)->r);
    freefunc free_fn = (freefunc)PyType_GetSlot(tp, Py_tp_free);
    free_fn(self);
    Py_DECREF(tp);
}

PyDoc_STRVAR(iterate_doc,
"iterate(buffer, min_offset, max_offset[, check_crcs[, origin[, origin_pos]]]) -> iterator of Record\n\n"
"What decode() returns, one Record at a time, each made when it is asked for.  The\n"
"iterator holds the buffer of ``buffer`` until it is exhausted (or dropped).");

static PyObject *rx_iterate(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (record_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "pylog._native._records.setup() was not called");
        return NULL;
    }
    if (nargs < 3 || nargs > 6) {
        PyErr_SetString(PyExc_TypeError, "iterate(buffer, min_offset, max_offset[, check_crcs[, "
                        "origin[, origin_pos]]]) takes 3 to 6 arguments");
        return NULL;
    }
    PyTypeObject *tp = (PyTypeObject *)record_iter_type;
    allocfunc alloc = (allocfunc)PyType_GetSlot(tp, Py_tp_alloc);
    PyObject *it = alloc(tp, 0);
    if (it == NULL)
        return NULL;
    reader *r = &((record_iter *)it)->r;
    memset(r, 0, sizeof *r); /* reader_close on a failed open finds nothing to release */
    if (reader_open(r, args[0], args[1], args[2], args + 3, nargs - 3) < 0) {
        Py_DECREF(it);
        return NULL;
    }
    return it;
}

static PyType_Slot record_iter_slots[] = {
    {Py_tp_iter, (void *)PyObject_SelfIter},
    {Py_tp_iternext, (void *)record_iter_next},
    {Py_tp_dealloc, (void *)record_iter_dealloc},
    {Py_tp_doc, (void *)"Records of record batches, made one at a time (see iterate)."},
    {0, NULL},
};

static PyType_Spec record_iter_spec = {
    "pylog._native._records.RecordIterator",
    (int)sizeof(record_iter),
    0,
    Py_TPFLAGS_DEFAULT,
    record_iter_slots,
};

/* ---- single-record append ---------------------------------------------------- */

/* ptr/len of a bytes object (len -1 for None); 0 if `obj` is neither. */
static int bytes_arg(PyObject *obj, const uint8_t **ptr, int32_t *len)
{
    if (obj == Py_None) {
        *ptr = NULL;
        *len = -1;
        return 1;
    }
    if (!PyBytes_CheckExact(obj))
        return 0;
    char *p;
    Py_ssize_t n;
    if (PyBytes_AsStringAndSize(obj, &p, &n) < 0) {
        PyErr_Clear();
        return 0;
    }
    if (n > PL_MAX_RECORD_BYTES)
        return 0;
    *ptr = (const uint8_t *)p;
    *len = (int32_t)n;
    return 1;
}

/* An int (not a bool) in [lo, hi]; 0 (no exception set) if `obj` is not one. */
static int int_arg(PyObject *obj, long long lo, long long hi, long long *out)
{
    if (!PyLong_CheckExact(obj))
        return 0;
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
    if (overflow || (v == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        return 0;
    }
    if (v < lo || v > hi)
        return 0;
    *out = v;
    return 1;
}

/* ---- many-record append: the fields laid out for pl_batch_input ------------- */

PyDoc_STRVAR(join_fields_doc,
"join_fields(items) -> (joined, lengths) or None\n"
"\n"
"For a list of bytes and None: the bytes concatenated, and their lengths as\n"
"native int32 (-1 for None) in a bytes object -- what pl_batch_input's values and\n"
"value_lens (or keys and key_lens) point at.  None, doing nothing, for anything\n"
"else (not a list, an item of another type, one over PL_MAX_RECORD_BYTES): the\n"
"caller's Python path then checks it and raises the specific error.  In Python,\n"
"b''.join plus array('i', map(len, ...)) cost about 0.1 us an item; here a few ns.");

static PyObject *rx_join_fields(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 1) {
        PyErr_SetString(PyExc_TypeError, "join_fields takes 1 argument");
        return NULL;
    }
    PyObject *items = args[0];
    if (!PyList_CheckExact(items))
        Py_RETURN_NONE;
    Py_ssize_t n = PyList_Size(items);
    if (n < 0)
        return NULL;
    if ((size_t)n > (size_t)PY_SSIZE_T_MAX / sizeof(int32_t))
        Py_RETURN_NONE;
    /* First pass: types and sizes.  No Python code runs between the passes (no
     * callbacks, the GIL held), so the list cannot change under them. */
    Py_ssize_t total = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GetItem(items, i); /* borrowed */
        if (item == NULL)
            return NULL;
        if (item == Py_None)
            continue;
        if (!PyBytes_CheckExact(item))
            Py_RETURN_NONE;
        Py_ssize_t len = PyBytes_Size(item);
        if (len < 0)
            return NULL;
        if (len > PL_MAX_RECORD_BYTES || total > PY_SSIZE_T_MAX - len)
            Py_RETURN_NONE;
        total += len;
    }
    PyObject *lens = PyBytes_FromStringAndSize(NULL, n * (Py_ssize_t)sizeof(int32_t));
    PyObject *joined = PyBytes_FromStringAndSize(NULL, total);
    if (lens == NULL || joined == NULL) {
        Py_XDECREF(lens);
        Py_XDECREF(joined);
        return NULL;
    }
    char *lp = PyBytes_AsString(lens);
    char *out = PyBytes_AsString(joined);
    if (lp == NULL || out == NULL) {
        Py_DECREF(lens);
        Py_DECREF(joined);
        return NULL;
    }
    Py_ssize_t at = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GetItem(items, i);
        int32_t len32 = -1;
        if (item != Py_None) {
            char *p;
            Py_ssize_t len;
            if (PyBytes_AsStringAndSize(item, &p, &len) < 0) {
                Py_DECREF(lens);
                Py_DECREF(joined);
                return NULL;
            }
            assert(len <= total - at);
            memcpy(out + at, p, (size_t)len);
            at += len;
            len32 = (int32_t)len;
        }
        memcpy(lp + i * (Py_ssize_t)sizeof(int32_t), &len32, sizeof len32); /* PyBytes data: no alignment promise */
    }
    assert(at == total);
    PyObject *res = PyTuple_Pack(2, joined, lens);
    Py_DECREF(joined);
    Py_DECREF(lens);
    return res;
}

/* How many items ahead gather_into asks for an item's first two cache lines: its
 * header (type, size), which it reads, and the start of its data, which the build
 * reads next (the items are usually in memory, not cache; measured on lists of 1000
 * 100-byte values: 8 ahead and the header alone cost 5-10 % more). */
#define GATHER_PREFETCH 24

/* One list (or tuple) of bytes-or-None fields for append_many and gather_fields: their
 * addresses and lengths into ptrs[0, n) and lens[0, n), the payload into *total, the longest into
 * *longest (-1: all None), whether one is None into *has_null.  0 (the general path
 * must take it) for any other item or one over PL_MAX_RECORD_BYTES. */
static int gather_into(PyObject *seq, Py_ssize_t n, const uint8_t **ptrs, int32_t *lens, uint64_t *total,
                       int32_t *longest, int *has_null)
{
    int is_list = PyList_CheckExact(seq);
    *total = 0;
    *longest = -1;
    *has_null = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = is_list ? PyList_GetItem(seq, i) : PyTuple_GetItem(seq, i); /* borrowed */
        if (item == NULL) {
            PyErr_Clear();
            return 0;
        }
        if (i + GATHER_PREFETCH < n) {
            PyObject *ahead = is_list ? PyList_GetItem(seq, i + GATHER_PREFETCH)
                                      : PyTuple_GetItem(seq, i + GATHER_PREFETCH);
            __builtin_prefetch(ahead);
            /* (integer arithmetic: the line after may lie past the object, None's) */
            __builtin_prefetch((const void *)((uintptr_t)ahead + 64));
        }
        if (item == Py_None) {
            ptrs[i] = NULL;
            lens[i] = -1;
            *has_null = 1;
            continue;
        }
        if (!bytes_arg(item, &ptrs[i], &lens[i]))
            return 0;
        *total += (uint64_t)lens[i];
        if (lens[i] > *longest)
            *longest = lens[i];
    }
    return 1;
}

PyDoc_STRVAR(gather_fields_doc,
"gather_fields(items) -> (held, pointers, lengths, total, longest) or None\n"
"\n"
"For a list or tuple of bytes and None, left where they are: `held`, a tuple of\n"
"the items (it keeps them alive while C reads them, whatever happens to the list);\n"
"`pointers`, each item's data address (NULL for None) as native pointers, and\n"
"`lengths`, native int32 (-1 for None), both in bytes objects -- what\n"
"pl_batch_input's value_ptrs and value_lens (or key_ptrs and key_lens) point at;\n"
"the bytes of all items and the longest item's.  None, doing nothing, for anything\n"
"else (an item of another type, one over PL_MAX_RECORD_BYTES): the caller's\n"
"Python path then checks it and raises the specific error.  Unlike join_fields it\n"
"copies no item: the build reads each where it lies.");

static PyObject *rx_gather_fields(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 1) {
        PyErr_SetString(PyExc_TypeError, "gather_fields takes 1 argument");
        return NULL;
    }
    PyObject *held;
    if (PyList_CheckExact(args[0])) {
        held = PyList_AsTuple(args[0]);
        if (held == NULL)
            return NULL;
    } else if (PyTuple_CheckExact(args[0])) {
        held = Py_NewRef(args[0]);
    } else {
        Py_RETURN_NONE;
    }
    Py_ssize_t n = PyTuple_Size(held);
    PyObject *ptrs = NULL, *lens = NULL, *res = NULL;
    if ((size_t)n > (size_t)PY_SSIZE_T_MAX / sizeof(void *))
        goto decline;
    ptrs = PyBytes_FromStringAndSize(NULL, n * (Py_ssize_t)sizeof(void *));
    lens = PyBytes_FromStringAndSize(NULL, n * (Py_ssize_t)sizeof(int32_t));
    if (n < 0 || ptrs == NULL || lens == NULL)
        goto done;
    char *pdata = PyBytes_AsString(ptrs), *ldata = PyBytes_AsString(lens);
    if (pdata == NULL || ldata == NULL)
        goto done;
    /* C reads these as arrays of pointers and of int32: a bytes object's data is
     * aligned for both in CPython's layout; decline rather than assume it. */
    if ((uintptr_t)pdata % _Alignof(void *) != 0 || (uintptr_t)ldata % _Alignof(int32_t) != 0)
        goto decline;
    uint64_t total;
    int32_t longest;
    int has_null;
    if (!gather_into(held, n, (const uint8_t **)(void *)pdata, (int32_t *)(void *)ldata, &total, &longest,
                     &has_null))
        goto decline;
    res = Py_BuildValue("(OOOKi)", held, ptrs, lens, (unsigned long long)total, (int)longest);
    goto done;
decline:
    res = Py_NewRef(Py_None);
done:
    Py_DECREF(held);
    Py_XDECREF(ptrs);
    Py_XDECREF(lens);
    return res;
}

/* The one item of a list or tuple of length 1 (borrowed); NULL if `seq` is not one. */
static PyObject *only_item(PyObject *seq)
{
    if (PyList_CheckExact(seq))
        return PyList_Size(seq) == 1 ? PyList_GetItem(seq, 0) : NULL;
    if (PyTuple_CheckExact(seq))
        return PyTuple_Size(seq) == 1 ? PyTuple_GetItem(seq, 0) : NULL;
    return NULL;
}

/* Wall-clock ms since the epoch, as pylog.util.now_ms (time.time_ns() // 10**6). */
static int64_t wall_clock_ms(void)
{
    struct timespec t;
    if (clock_gettime(CLOCK_REALTIME, &t) != 0)
        return -1; /* cannot happen for CLOCK_REALTIME; -1 sends the append the long way */
    int64_t ms = (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
    return ms;
}

/* Fields of Log._fast after the config (see Log._fast_settings). */
enum { FAST_ATTRIBUTES = 1, FAST_COMPACT, FAST_MAX_BATCH, FAST_SEGMENT_BYTES, FAST_SEGMENT_MS,
       FAST_FIELDS };

/* The settings both append paths read from Log._fast; 0 if it holds anything else. */
typedef struct fast_settings {
    long long attributes, max_batch, segment_bytes, segment_ms;
    int compact;
} fast_settings;

static int read_settings(PyObject *settings, fast_settings *f)
{
    if (!int_arg(PyTuple_GetItem(settings, FAST_ATTRIBUTES), 0, PL_ATTR_TIMESTAMP_TYPE, &f->attributes) ||
        (f->attributes & ~(long long)PL_ATTR_TIMESTAMP_TYPE) != 0 ||
        !int_arg(PyTuple_GetItem(settings, FAST_MAX_BATCH), 0, INT64_MAX, &f->max_batch) ||
        !int_arg(PyTuple_GetItem(settings, FAST_SEGMENT_BYTES), 0, INT64_MAX, &f->segment_bytes) ||
        !int_arg(PyTuple_GetItem(settings, FAST_SEGMENT_MS), 0, INT64_MAX, &f->segment_ms))
        return 0;
    f->compact = PyTuple_GetItem(settings, FAST_COMPACT) == Py_True;
    return 1;
}

/* `now` (None: the wall clock) and the segment.ms rule: 0 if the append must go the
 * general way (a bad argument, or the segment is due to roll). */
static int read_now(PyObject *now_arg, PyObject *rolling_arg, long long segment_ms, long long *now)
{
    if (now_arg == Py_None)
        *now = wall_clock_ms();
    else if (!int_arg(now_arg, INT64_MIN, INT64_MAX, now))
        return 0;
    if (rolling_arg != Py_None) { /* segment.ms: roll once the first batch is that old */
        long long rolling;
        if (!int_arg(rolling_arg, INT64_MIN, INT64_MAX, &rolling))
            return 0;
        if (rolling >= 0 && (*now < 0 || *now - rolling > segment_ms))
            return 0;
    }
    return 1;
}

/* The arguments append_one and append_many share: nargs, the segment and result
 * addresses, Log._fast.  0 with an exception set if one is wrong. */
static int append_args(const char *name, PyObject *const *args, Py_ssize_t nargs, int settings_at,
                       pl_segment **seg, pl_append_result **res)
{
    if (nargs != 8) {
        PyErr_Format(PyExc_TypeError, "%s takes 8 arguments", name);
        return 0;
    }
    if (append_build == NULL || append_buffered == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "pylog._native._records.setup() was not called");
        return 0;
    }
    *seg = PyLong_AsVoidPtr(args[0]);
    *res = *seg ? PyLong_AsVoidPtr(args[1]) : NULL;
    if (*seg == NULL || *res == NULL) {
        if (!PyErr_Occurred())
            PyErr_Format(PyExc_ValueError, "%s: null segment or result address", name);
        return 0;
    }
    PyObject *settings = args[settings_at];
    if (!PyTuple_CheckExact(settings) || PyTuple_Size(settings) < FAST_FIELDS) {
        PyErr_Format(PyExc_TypeError, "%s: settings must be Log._fast", name);
        return 0;
    }
    return 1;
}

PyDoc_STRVAR(append_one_doc,
"append_one(segment, result, values, keys, timestamps, now, settings, rolling_ms)\n"
"    -> int | None\n\n"
"Log.append's single-record path, called with the Log's lock held.  When ``values``\n"
"is a list (or tuple) of one bytes-or-None value, ``keys`` None or one such key and\n"
"``timestamps`` None or one int >= -1 (ms), builds their batch of one record (no\n"
"headers) straight into the active segment at address ``segment`` (a pl_segment *\n"
"as an int) and fills the pl_append_result at address ``result``; both addresses\n"
"come from the Log's own cdata and are trusted.  ``now``: ms, or None for the wall\n"
"clock read here.  ``settings`` is Log._fast: (config, attributes, compact,\n"
"max batch bytes, segment.bytes, segment.ms, flushes).  ``rolling_ms``: the segment's\n"
"rolling timestamp or None.\n\n"
"Returns the record's offset; a negative pl_status if the segment refused the batch\n"
"(nothing written); or None, with nothing written, when the general path must take\n"
"the append: arguments of other types or values (the general path raises the right\n"
"error), a null key on a compacted log, a batch over the max batch bytes, a log end\n"
"past segment.bytes or the reserved disk, segment.ms passed, offsets or indexes that\n"
"call for a roll.");

static PyObject *rx_append_one(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    pl_segment *seg;
    pl_append_result *res;
    if (!append_args("append_one", args, nargs, 6, &seg, &res))
        return NULL;
    PyObject *settings = args[6];

    /* The record: one value, at most one key and timestamp. */
    const uint8_t *value, *key = NULL;
    int32_t value_len, key_len = -1;
    PyObject *item = only_item(args[2]);
    if (item == NULL || !bytes_arg(item, &value, &value_len))
        Py_RETURN_NONE;
    if (args[3] != Py_None) {
        item = only_item(args[3]);
        if (item == NULL || !bytes_arg(item, &key, &key_len))
            Py_RETURN_NONE;
    }
    fast_settings f;
    long long now, ts;
    if (!read_settings(settings, &f))
        Py_RETURN_NONE;
    long long attributes = f.attributes, max_batch = f.max_batch, segment_bytes = f.segment_bytes;
    if (f.compact && key_len < 0)
        Py_RETURN_NONE; /* a compacted log refuses a null key: the general path says so */
    if (!read_now(args[5], args[7], f.segment_ms, &now))
        Py_RETURN_NONE;
    if (args[4] == Py_None || attributes != 0) { /* LogAppendTime ignores given timestamps */
        ts = now;
    } else {
        item = only_item(args[4]);
        if (item == NULL || !int_arg(item, INT64_MIN, INT64_MAX, &ts))
            Py_RETURN_NONE;
    }
    if (ts < PL_NO_TIMESTAMP)
        Py_RETURN_NONE; /* InvalidTimestamp, from the general path */

    pl_batch_input in;
    memset(&in, 0, sizeof in);
    in.count = 1;
    in.values = value;
    in.value_lens = &value_len;
    if (key_len >= 0) {
        in.keys = key;
        in.key_lens = &key_len;
    }
    in.base_timestamp = ts;
    in.producer_id = -1;
    in.producer_epoch = -1;
    in.base_sequence = -1;
    in.partition_leader_epoch = -1;
    in.attributes = (int16_t)attributes;

    uint64_t size = pl_batch_size_bound(&in); /* exact for an uncompressed batch */
    if (size == 0 || size > (uint64_t)max_batch)
        Py_RETURN_NONE;
    uint64_t end = seg->log_size + size;
    if (end > seg->log_capacity || end > (uint64_t)segment_bytes)
        Py_RETURN_NONE; /* disk to reserve first, or the segment must roll */
    if (seg->next_offset - seg->base_offset >= PL_MAX_RELATIVE_OFFSET)
        Py_RETURN_NONE; /* the next offset does not fit this segment's index: roll */

    int rc;
    if (size > APPEND_RELEASE_GIL_BYTES) {
        Py_BEGIN_ALLOW_THREADS
        rc = append_build(seg, &in, res);
        Py_END_ALLOW_THREADS
    } else {
        rc = append_build(seg, &in, res);
    }
    if (rc == PL_E_FULL)
        Py_RETURN_NONE; /* nothing written: the general path rolls */
    if (rc != PL_OK)
        return PyLong_FromLong(rc);
    assert(res->first_offset == res->last_offset && res->batches == 1);
    return PyLong_FromLongLong(res->first_offset);
}

static Py_ssize_t seq_size(PyObject *seq)
{
    if (PyList_CheckExact(seq))
        return PyList_Size(seq);
    if (PyTuple_CheckExact(seq))
        return PyTuple_Size(seq);
    return -1;
}

/* Bytes of v's zigzag varint. */
static uint64_t zz_size(int64_t v)
{
    return (uint64_t)varint_size(v);
}

PyDoc_STRVAR(append_many_doc,
"append_many(segment, result, values, keys, now, settings, rolling_ms, scratch)\n"
"    -> int | None\n\n"
"Log.append's path for a list (or tuple) of two or more bytes-or-None values, with\n"
"``keys`` None or a list (or tuple) of as many, no headers and no timestamps (all\n"
"records stamped ``now``, or the wall clock when it is None): builds their batch in\n"
"one C call without a Python object per record, as append_one does for one record\n"
"(the same arguments, see there), the values and keys read where they lie.\n"
"``scratch``: (address, length) of the calling thread's scratch buffer, or None;\n"
"a batch of pl_segment.pwrite_min_bytes or more is built there and written with one\n"
"pwrite, as Log's general path does.  Returns the first record's offset; a negative\n"
"pl_status (nothing written); or None, with nothing written, whenever the general\n"
"path must take the append (append_one's reasons, a scratch too small for the\n"
"batch).  The size checks use an upper bound of the batch's size (from its longest\n"
"key and value), so a batch within a few bytes a record of a limit also goes the\n"
"general way, which measures it exactly.  The GIL is released for the build of a\n"
"batch over 64 KiB, the fields then held by tuples.");

static PyObject *rx_append_many(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    pl_segment *seg;
    pl_append_result *res;
    if (!append_args("append_many", args, nargs, 5, &seg, &res))
        return NULL;
    PyObject *settings = args[5];
    PyObject *values = args[2], *keys = args[3];
    Py_ssize_t n = seq_size(values);
    if (n < 2 || n > PL_MAX_RECORDS_PER_BATCH || (keys != Py_None && seq_size(keys) != n))
        Py_RETURN_NONE;
    fast_settings f;
    long long now;
    if (!read_settings(settings, &f) || !read_now(args[4], args[6], f.segment_ms, &now) ||
        now < PL_NO_TIMESTAMP)
        Py_RETURN_NONE;
    uint8_t *scratch = NULL;
    uint64_t scratch_len = 0;
    if (args[7] != Py_None) {
        if (!PyTuple_CheckExact(args[7]) || PyTuple_Size(args[7]) != 2)
            Py_RETURN_NONE;
        scratch = PyLong_AsVoidPtr(PyTuple_GetItem(args[7], 0));
        long long len;
        if (scratch == NULL || !int_arg(PyTuple_GetItem(args[7], 1), 0, INT64_MAX, &len)) {
            PyErr_Clear();
            Py_RETURN_NONE;
        }
        scratch_len = (uint64_t)len;
    }

    int keyed = keys != Py_None;
    size_t per = sizeof(const uint8_t *) + sizeof(int32_t);
    void *block = PyMem_Malloc((size_t)n * per * (keyed ? 2 : 1));
    if (block == NULL)
        return PyErr_NoMemory();
    const uint8_t **vptrs = block, **kptrs = keyed ? vptrs + n : NULL;
    int32_t *vlens = (int32_t *)(void *)(vptrs + (keyed ? 2 * n : n)), *klens = keyed ? vlens + n : NULL;
    PyObject *held_v = NULL, *held_k = NULL, *out = NULL;
    uint64_t vtotal, ktotal = 0;
    int32_t vmax, kmax = -1;
    int vnull, knull = 1;
    if (!gather_into(values, n, vptrs, vlens, &vtotal, &vmax, &vnull) ||
        (keyed && !gather_into(keys, n, kptrs, klens, &ktotal, &kmax, &knull)))
        goto decline;
    if (f.compact && knull)
        goto decline; /* a compacted log refuses a null key: the general path says so */

    /* Upper bound of the batch (Columns.split's per-record bound, timestamps all
     * equal): no walk of the records. */
    uint64_t body = 1 + 1 + zz_size(n - 1) + zz_size(kmax) + zz_size(vmax) + 1;
    uint64_t over = body + zz_size((int64_t)(body + (kmax > 0 ? (uint64_t)kmax : 0) +
                                             (vmax > 0 ? (uint64_t)vmax : 0)));
    uint64_t size = PL_BATCH_HEADER_BYTES + (uint64_t)n * over + vtotal + ktotal;
    if (size > (uint64_t)f.max_batch || size > (uint64_t)PL_MAX_BATCH_BYTES)
        goto decline;
    uint64_t end = seg->log_size + size;
    if (end > seg->log_capacity || end > (uint64_t)f.segment_bytes)
        goto decline; /* disk to reserve first, or the segment must roll */
    int buffered = seg->log_fd_plus_one > 0 && seg->pwrite_min_bytes > 0 && size >= seg->pwrite_min_bytes;
    if (buffered && (scratch == NULL || scratch_len < size))
        goto decline; /* the general path grows the scratch */

    pl_batch_input in;
    memset(&in, 0, sizeof in);
    in.count = (uint32_t)n;
    in.value_lens = vlens;
    in.value_ptrs = vptrs;
    if (keyed && kmax >= 0) {
        in.key_lens = klens;
        in.key_ptrs = kptrs;
    }
    in.base_timestamp = now;
    in.producer_id = -1;
    in.producer_epoch = -1;
    in.base_sequence = -1;
    in.partition_leader_epoch = -1;
    in.attributes = (int16_t)f.attributes;

    int rc;
    if (size > APPEND_RELEASE_GIL_BYTES) {
        /* Without the GIL another thread may change the lists: tuples of the same
         * items (the GIL held since they were gathered) keep them alive. */
        held_v = PySequence_Tuple(values);
        held_k = keyed ? PySequence_Tuple(keys) : NULL;
        if (held_v == NULL || (keyed && held_k == NULL))
            goto done;
        Py_BEGIN_ALLOW_THREADS
        rc = buffered ? append_buffered(seg, &in, scratch, scratch_len, res) : append_build(seg, &in, res);
        Py_END_ALLOW_THREADS
    } else {
        rc = buffered ? append_buffered(seg, &in, scratch, scratch_len, res) : append_build(seg, &in, res);
    }
    if (rc == PL_E_FULL || rc == PL_E_NOSPACE)
        goto decline; /* nothing written: the general path rolls, or grows the scratch */
    if (rc != PL_OK) {
        out = PyLong_FromLong(rc);
        goto done;
    }
    assert(res->batches == 1 && res->last_offset - res->first_offset == n - 1);
    out = PyLong_FromLongLong(res->first_offset);
    goto done;
decline:
    out = Py_NewRef(Py_None);
done:
    Py_XDECREF(held_v);
    Py_XDECREF(held_k);
    PyMem_Free(block);
    return out;
}

/* ---- setup --------------------------------------------------------------------- */

/* getattr(obj, name) as a Py_ssize_t, or -1 with an exception set. */
static Py_ssize_t ssize_attr(PyObject *obj, const char *name)
{
    PyObject *v = PyObject_GetAttrString(obj, name);
    if (v == NULL)
        return -1;
    Py_ssize_t n = PyLong_AsSsize_t(v);
    Py_DECREF(v);
    return n;
}

/* 1 if Records made by tp_alloc + PyTuple_SetItem behave as tuple.__new__'s do on
 * this interpreter: same layout as tuple, equal to and hashing like the plain
 * tuple of their items.  0 if not; -1 with an exception set on error. */
static int check_fast_records(void)
{
    static const char *const attrs[] = {"__basicsize__", "__itemsize__", "__dictoffset__",
                                        "__weakrefoffset__"};
    PyObject *tuple_type = (PyObject *)&PyTuple_Type;
    for (size_t i = 0; i < sizeof attrs / sizeof attrs[0]; i++) {
        Py_ssize_t a = ssize_attr(record_type, attrs[i]);
        Py_ssize_t b = a == -1 && PyErr_Occurred() ? -1 : ssize_attr(tuple_type, attrs[i]);
        if (PyErr_Occurred())
            return -1;
        if (a != b)
            return 0;
    }
    record_alloc = (allocfunc)PyType_GetSlot((PyTypeObject *)record_type, Py_tp_alloc);
    if (record_alloc == NULL)
        return 0;
    PyObject *items[5] = {PyLong_FromLong(7), PyLong_FromLong(1000), Py_None,
                          PyBytes_FromStringAndSize("v", 1), empty_tuple};
    if (items[0] == NULL || items[1] == NULL || items[3] == NULL) {
        Py_XDECREF(items[0]);
        Py_XDECREF(items[1]);
        Py_XDECREF(items[3]);
        return -1;
    }
    Py_INCREF(Py_None);
    Py_INCREF(empty_tuple);
    PyObject *plain = PyTuple_Pack(5, items[0], items[1], items[2], items[3], items[4]);
    fast_records = 1;
    PyObject *rec = new_record(items);
    fast_records = 0;
    int ok = 0;
    if (plain != NULL && rec != NULL) {
        Py_hash_t h1 = PyObject_Hash(rec), h2 = PyObject_Hash(plain);
        int eq = PyObject_RichCompareBool(rec, plain, Py_EQ);
        ok = !PyErr_Occurred() && eq == 1 && h1 == h2 && Py_TYPE(rec) == (PyTypeObject *)record_type;
    }
    Py_XDECREF(plain);
    Py_XDECREF(rec);
    return PyErr_Occurred() ? -1 : ok;
}

PyDoc_STRVAR(setup_doc,
"setup(record_type, corrupt_error, decompress, append_build_address,\n"
"      append_buffered_address) -> bool\n\n"
"Called once by pylog.records: the Record class (a tuple subclass of 5 fields), the\n"
"exception class for corrupt bytes, decompress(codec, data) -> bytes, and the\n"
"addresses of the cffi module's pl_segment_append_build and\n"
"pl_segment_append_build_buffered.  Returns whether Records are built\n"
"directly (True) or through tuple.__new__ (False, see the top of pyrecords.c).");

static PyObject *rx_setup(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "setup takes 5 arguments");
        return NULL;
    }
    if (!PyType_Check(args[0]) ||
        !PyType_IsSubtype((PyTypeObject *)args[0], &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "setup: record_type must be a tuple subclass");
        return NULL;
    }
    if (!PyType_Check(args[1]) ||
        !PyType_IsSubtype((PyTypeObject *)args[1], (PyTypeObject *)PyExc_Exception)) {
        PyErr_SetString(PyExc_TypeError, "setup: corrupt_error must be an exception class");
        return NULL;
    }
    if (!PyCallable_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "setup: decompress must be callable");
        return NULL;
    }
    void *build = PyLong_AsVoidPtr(args[3]);
    void *buffered = build != NULL ? PyLong_AsVoidPtr(args[4]) : NULL;
    if (build == NULL || buffered == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "setup: null append_build_address or append_buffered_address");
        return NULL;
    }
    if (empty_tuple == NULL && (empty_tuple = PyTuple_New(0)) == NULL)
        return NULL;
    if (tuple_new == NULL &&
        (tuple_new = PyObject_GetAttrString((PyObject *)&PyTuple_Type, "__new__")) == NULL)
        return NULL;
    PyObject *old[3] = {record_type, corrupt_error, decompress_fn};
    Py_INCREF(args[0]);
    record_type = args[0];
    Py_INCREF(args[1]);
    corrupt_error = args[1];
    Py_INCREF(args[2]);
    decompress_fn = args[2];
    for (int i = 0; i < 3; i++)
        Py_XDECREF(old[i]);
    /* The cffi module exports the function as a data pointer (an int); converting it
     * back is how cffi's own ffi.cast does it on every platform pylog supports. */
    memcpy(&append_build, &build, sizeof append_build);
    memcpy(&append_buffered, &buffered, sizeof append_buffered);
    fast_records = 0;
    int fast = check_fast_records();
    if (fast < 0)
        return NULL;
    fast_records = fast;
    return PyBool_FromLong(fast);
}

/* Producer.send()'s record path (uses bytes_arg, int_arg and ssize_attr above). */
#include "pysend.c"

static PyMethodDef rx_methods[] = {
    {"setup", (PyCFunction)(void (*)(void))rx_setup, METH_FASTCALL, setup_doc},
    {"append_many", (PyCFunction)(void (*)(void))rx_append_many, METH_FASTCALL, append_many_doc},
    {"decode", (PyCFunction)(void (*)(void))rx_decode, METH_FASTCALL, decode_doc},
    {"iterate", (PyCFunction)(void (*)(void))rx_iterate, METH_FASTCALL, iterate_doc},
    {"append_one", (PyCFunction)(void (*)(void))rx_append_one, METH_FASTCALL, append_one_doc},
    {"join_fields", (PyCFunction)(void (*)(void))rx_join_fields, METH_FASTCALL, join_fields_doc},
    {"gather_fields", (PyCFunction)(void (*)(void))rx_gather_fields, METH_FASTCALL, gather_fields_doc},
    {"setup_send", (PyCFunction)(void (*)(void))rx_setup_send, METH_FASTCALL, setup_send_doc},
    {"murmur2", (PyCFunction)(void (*)(void))rx_murmur2, METH_FASTCALL, murmur2_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef rx_module = {
    PyModuleDef_HEAD_INIT,
    "pylog._native._records",
    "Records built in C from Kafka v2 batches, and the single-record append "
    "(see csrc/pyrecords.c for why this is not part of the cffi module).",
    -1,
    rx_methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC PyInit__records(void)
{
    if (record_iter_type == NULL &&
        (record_iter_type = PyType_FromSpec(&record_iter_spec)) == NULL)
        return NULL;
    if (send_path_type == NULL && (send_path_type = PyType_FromSpec(&sp_spec)) == NULL)
        return NULL;
    PyObject *module = PyModule_Create(&rx_module);
    if (module == NULL)
        return NULL;
    Py_INCREF(send_path_type);
    if (PyModule_AddObject(module, "SendPath", send_path_type) < 0) {
        Py_DECREF(send_path_type);
        Py_DECREF(module);
        return NULL;
    }
    Py_INCREF(record_iter_type);
    if (PyModule_AddObject(module, "RecordIterator", record_iter_type) < 0) {
        Py_DECREF(record_iter_type);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}

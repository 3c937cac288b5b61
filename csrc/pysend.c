/*
 * pysend.c -- Producer.send()'s record path in C: pylog._native._records.SendPath.
 * Included by pyrecords.c (one translation unit with batch.c's builder and hash.c's
 * murmur2); pyrecords.c says why pylog has a CPython extension at all.
 *
 * Why C: a send() of a 100-byte record did about 1 us of Python (argument checks,
 * partition choice, the accumulator's lock, a cffi call, the future) against some
 * 50 ns of real work (varints and a memcpy into the open batch's buffer).  Here the
 * whole common case is one C call from the user's loop.
 *
 * A SendPath belongs to one Producer.  For each topic the producer has learned it
 * holds the partition count, the sticky partition of keyless records (KIP-794) with
 * the bytes left before it moves on, and per partition a slot: C's view of that
 * partition's open batch -- the builder to encode into (the batch's pl_batch_builder,
 * owned by the ProducerBatch, which the slot keeps alive), the handles a record's
 * future holds (that batch, its own result, and its (topic, partition) tuple),
 * the bytes counted for the batch so far, and a credit: buffer.memory bytes the
 * accumulator reserved for the batch's next records.
 *
 * send(topic, value, key=None, headers=None, partition=None, timestamp=None) encodes
 * the record into the open batch when that needs no decision of the accumulator:
 * value bytes, key None or bytes (murmur2 partitioner), headers None or a list or
 * tuple of (str, bytes or None) tuples (encoded here), timestamp None or an int >= 0,
 * partition None or an int in range, a topic seen before, an open batch for the
 * partition whose credit covers the record and which stays under batch.size and
 * max.request.size with it, and for a keyless record bytes left on the sticky
 * partition.  Anything else -- opening or sealing a batch, waiting for buffer.memory,
 * a first record to a topic, any error to raise -- is the fallback's: the Producer's
 * Python send(), called with the same arguments.  The record's future is the same
 * FutureRecordMetadata tuple the Python path makes.
 *
 * No lock, and still consistent: from its first check to its last store a send holds
 * the GIL and runs no Python code -- the future is allocated before the checks (an
 * allocation can start the garbage collector, whose finalizers could let another
 * thread run), and nothing after them allocates a tracked object -- so a send is
 * atomic for every other thread.  Python changes slots only through SendPath's own
 * methods, each atomic in the same way, and under the producer's lock: the
 * accumulator takes a slot back (take: its bytes and unused credit) before it touches
 * that batch, and gives it out again (give) when the batch stays open.
 */

/* ---- per-topic state ------------------------------------------------------------ */

typedef struct {
    pl_batch_builder *builder; /* NULL: no open batch handed to C                  */
    PyObject *batch;           /* the ProducerBatch (keeps the builder's memory; the
                                  futures of its records point at it: its own result) */
    PyObject *tp;              /* its (topic, partition) tuple                        */
    int64_t size;              /* bytes counted for the batch (header + records)      */
    int64_t credit;            /* buffer.memory bytes reserved for its next records   */
} send_slot;

typedef struct {
    Py_ssize_t n;          /* partitions                                             */
    Py_ssize_t sticky;     /* keyless records' partition                              */
    int64_t sticky_left;   /* bytes before keyless records move to another partition  */
    send_slot slots[];     /* n of them                                               */
} topic_state;

typedef struct {
    PyObject_HEAD
    PyObject *fallback;     /* the Producer's Python send()                          */
    PyObject *index;        /* dict: topic (str) -> int, its place in `topics`       */
    topic_state **topics;   /* owned                                                 */
    Py_ssize_t n_topics, cap_topics;
    int64_t batch_size;     /* batch.size: a batch reaching it is sealed (Python)     */
    int64_t max_request;    /* max.request.size: a batch may not pass it              */
    int64_t overhead;       /* bytes counted per record beyond key and value          */
    int murmur2;            /* keyed records: 1 = murmur2 here, 0 = fallback (xxhash) */
    uint64_t rng;           /* xorshift64* state for the sticky partitioner           */
    int64_t fast_sends;     /* records this path took (the rest went to the fallback) */
} SendPath;

static PyObject *future_type;   /* pylog.client.producer_batch.FutureRecordMetadata */
static allocfunc future_alloc;  /* its tp_alloc, when it lays out as tuple does     */

/* Keyword names of send(), interned; pointer compares first, then by value. */
enum { ARG_TOPIC, ARG_VALUE, ARG_KEY, ARG_HEADERS, ARG_PARTITION, ARG_TIMESTAMP, N_SEND_ARGS };
static const char *const send_arg_names[N_SEND_ARGS] = {"topic", "value", "key", "headers", "partition",
                                                        "timestamp"};
static PyObject *send_arg_str[N_SEND_ARGS];

static void slot_clear(send_slot *s)
{
    s->builder = NULL;
    Py_CLEAR(s->batch);
    Py_CLEAR(s->tp);
    s->size = 0;
    s->credit = 0;
}

static uint64_t next_random(SendPath *sp)
{
    uint64_t x = sp->rng; /* xorshift64* (Vigna); never 0 */
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    sp->rng = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* KIP-794: after about batch.size bytes, keyless records move to another partition
 * chosen at random. */
static void sticky_move(SendPath *sp, topic_state *t)
{
    if (t->n > 1) {
        Py_ssize_t nxt = (Py_ssize_t)(next_random(sp) % (uint64_t)(t->n - 1));
        t->sticky = nxt >= t->sticky ? nxt + 1 : nxt;
    } else {
        t->sticky = 0;
    }
    t->sticky_left = sp->batch_size;
}

/* The topic's state, or NULL (no exception set) if it was never added. */
static topic_state *find_topic(SendPath *sp, PyObject *topic)
{
    if (!PyUnicode_CheckExact(topic))
        return NULL;
    PyObject *i = PyDict_GetItemWithError(sp->index, topic); /* borrowed; str keys run no code */
    if (i == NULL) {
        PyErr_Clear();
        return NULL;
    }
    Py_ssize_t k = PyLong_AsSsize_t(i);
    assert(k >= 0 && k < sp->n_topics);
    return sp->topics[k];
}

/* The topic's state for the Python-facing methods; NULL with KeyError set if it was
 * never added. */
static topic_state *topic_arg(SendPath *sp, PyObject *topic)
{
    topic_state *t = find_topic(sp, topic);
    if (t == NULL)
        PyErr_Format(PyExc_KeyError, "SendPath: topic %R was not added", topic);
    return t;
}

/* The slot of (topic, partition) for the Python-facing methods; NULL with an exception
 * set if there is none.  Every argument that could run Python code (__index__) is
 * converted before the topic is looked up: such code could re-add the topic and free
 * the topic_state a pointer would still point into. */
static send_slot *slot_arg(SendPath *sp, PyObject *topic, PyObject *partition)
{
    Py_ssize_t p = PyLong_AsSsize_t(partition);
    if (p == -1 && PyErr_Occurred())
        return NULL;
    topic_state *t = topic_arg(sp, topic);
    if (t == NULL)
        return NULL;
    if (p < 0 || p >= t->n) {
        PyErr_Format(PyExc_IndexError, "SendPath: partition %zd of %R (it has %zd)", p, topic, t->n);
        return NULL;
    }
    return &t->slots[p];
}

/* ---- send ------------------------------------------------------------------------ */

static PyObject *fall_back(SendPath *sp, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *pos = PyTuple_New(nargs);
    if (pos == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < nargs; i++) {
        Py_INCREF(args[i]);
        PyTuple_SetItem(pos, i, args[i]);
    }
    PyObject *kw = NULL;
    Py_ssize_t nkw = kwnames ? PyTuple_Size(kwnames) : 0;
    if (nkw > 0) {
        kw = PyDict_New();
        for (Py_ssize_t i = 0; kw != NULL && i < nkw; i++) {
            if (PyDict_SetItem(kw, PyTuple_GetItem(kwnames, i), args[nargs + i]) < 0)
                Py_CLEAR(kw);
        }
        if (kw == NULL) {
            Py_DECREF(pos);
            return NULL;
        }
    }
    PyObject *out = PyObject_Call(sp->fallback, pos, kw);
    Py_DECREF(pos);
    Py_XDECREF(kw);
    return out;
}

static int send_arg_index(PyObject *name)
{
    for (int i = 0; i < N_SEND_ARGS; i++)
        if (name == send_arg_str[i])
            return i;
    for (int i = 0; i < N_SEND_ARGS; i++)
        if (PyUnicode_Compare(name, send_arg_str[i]) == 0)
            return i;
    PyErr_Clear();
    return -1;
}

/* Header sections up to this many bytes are encoded on send()'s stack. */
#define SEND_HEADERS_STACK_BYTES 512

/* Header i of send()'s `headers` (a list if is_list, else a tuple): a (str, bytes or
 * None) tuple, its key's UTF-8 and length in characters, and its value; 0 (no
 * exception set) if it is not one. */
static int send_header_at(PyObject *headers, int is_list, Py_ssize_t i, const char **kp, Py_ssize_t *klen,
                          Py_ssize_t *chars, const uint8_t **vp, int32_t *vlen)
{
    PyObject *pair = is_list ? PyList_GetItem(headers, i) : PyTuple_GetItem(headers, i);
    if (pair == NULL || !PyTuple_CheckExact(pair) || PyTuple_Size(pair) != 2)
        goto decline;
    PyObject *k = PyTuple_GetItem(pair, 0), *v = PyTuple_GetItem(pair, 1);
    if (k == NULL || v == NULL || !PyUnicode_CheckExact(k))
        goto decline;
    *kp = PyUnicode_AsUTF8AndSize(k, klen); /* NULL: a lone surrogate */
    if (*kp == NULL || *klen > PL_MAX_RECORD_BYTES || !bytes_arg(v, vp, vlen))
        goto decline;
    *chars = PyUnicode_GetLength(k);
    return 1;
decline:
    PyErr_Clear();
    return 0;
}

/* The header section of a record (headerCount, then each key and value, as
 * pl_builder_append takes it) from send()'s `headers`, when that is a non-empty list
 * or tuple of (str, bytes or None) tuples: written to `stack` (`stack_cap` bytes) or,
 * when longer, to PyMem memory the caller frees (*buf != stack); its length in *len,
 * and in *counted the bytes send() counts for the headers against buffer.memory, as
 * the Python path counts them (per header: the key's length in characters, the
 * value's, and 4).  0 for anything else, with nothing to free and no exception set:
 * the Python path then checks the headers and raises the specific error.  Runs no
 * Python code and makes no tracked object (see the top), so the list cannot change
 * between the two passes. */
static int encode_send_headers(PyObject *headers, uint8_t *stack, size_t stack_cap, uint8_t **buf,
                               int32_t *len, int64_t *counted)
{
    *buf = NULL;
    int is_list = PyList_CheckExact(headers);
    if (!is_list && !PyTuple_CheckExact(headers))
        return 0;
    Py_ssize_t n = is_list ? PyList_Size(headers) : PyTuple_Size(headers);
    if (n <= 0 || n > PL_MAX_RECORD_BYTES)
        return 0;
    const char *kp;
    Py_ssize_t klen, chars;
    const uint8_t *vp;
    int32_t vlen;
    uint64_t total = (uint64_t)varint_size((int64_t)n);
    int64_t count = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!send_header_at(headers, is_list, i, &kp, &klen, &chars, &vp, &vlen))
            return 0;
        total += field_size((int64_t)klen) + field_size(vlen);
        if (total > PL_MAX_RECORD_BYTES)
            return 0;
        count += (int64_t)chars + (vlen > 0 ? vlen : 0) + 4;
    }
    uint8_t *out = total <= stack_cap ? stack : PyMem_Malloc((size_t)total);
    if (out == NULL)
        return 0;
    uint8_t *o = put_varint(out, (int64_t)n), *end = out + total;
    for (Py_ssize_t i = 0; i < n; i++) {
        /* (the same items as the first pass: nothing ran in between) */
        if (!send_header_at(headers, is_list, i, &kp, &klen, &chars, &vp, &vlen) ||
            field_size((int64_t)klen) + field_size(vlen) > (uint64_t)(end - o))
            goto fail;
        o = put_field(o, (const uint8_t *)kp, (int64_t)klen);
        o = put_field(o, vp, vlen);
    }
    if (o != end)
        goto fail;
    *buf = out;
    *len = (int32_t)total;
    *counted = count;
    return 1;
fail:
    if (out != stack)
        PyMem_Free(out);
    return 0;
}

PyDoc_STRVAR(send_doc,
"send(topic, value, key=None, headers=None, partition=None, timestamp=None)\n"
"    -> FutureRecordMetadata\n\n"
"Producer.send: the record encoded into its partition's open batch here, or, when\n"
"that needs the accumulator (see csrc/pysend.c), the fallback's answer.");

static PyObject *sp_send(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    SendPath *sp = (SendPath *)self;
    PyObject *a[N_SEND_ARGS] = {NULL, NULL, NULL, NULL, NULL, NULL};
    if (nargs > N_SEND_ARGS || future_alloc == NULL)
        return fall_back(sp, args, nargs, kwnames);
    for (Py_ssize_t i = 0; i < nargs; i++)
        a[i] = args[i];
    if (kwnames != NULL) {
        Py_ssize_t nkw = PyTuple_Size(kwnames);
        for (Py_ssize_t i = 0; i < nkw; i++) {
            int k = send_arg_index(PyTuple_GetItem(kwnames, i));
            if (k < 0 || a[k] != NULL)
                return fall_back(sp, args, nargs, kwnames); /* it raises the TypeError */
            a[k] = args[nargs + i];
        }
    }
    if (a[ARG_TOPIC] == NULL || a[ARG_VALUE] == NULL || !PyBytes_CheckExact(a[ARG_VALUE]))
        return fall_back(sp, args, nargs, kwnames);
    PyObject *key = a[ARG_KEY] != NULL ? a[ARG_KEY] : Py_None;
    if (key != Py_None && (!PyBytes_CheckExact(key) || !sp->murmur2))
        return fall_back(sp, args, nargs, kwnames);
    /* An explicit timestamp: an int >= 0, as the Python path checks (else it raises). */
    PyObject *ts_arg = a[ARG_TIMESTAMP] != NULL ? a[ARG_TIMESTAMP] : Py_None;
    long long ts = PL_NO_TIMESTAMP;
    if (ts_arg != Py_None && !int_arg(ts_arg, 0, INT64_MAX, &ts))
        return fall_back(sp, args, nargs, kwnames);
    /* Headers encoded (copied) before the future is allocated: that allocation may run
     * the garbage collector, whose finalizers could change the headers' list. */
    uint8_t hstack[SEND_HEADERS_STACK_BYTES], *hbuf = NULL;
    int32_t hlen = 0;
    int64_t hcounted = 0;
    PyObject *headers = a[ARG_HEADERS] != NULL ? a[ARG_HEADERS] : Py_None;
    if (headers != Py_None) {
        /* A list or tuple (empty: no headers, as the Python path's `if headers`). */
        Py_ssize_t nh = PyList_CheckExact(headers)    ? PyList_Size(headers)
                        : PyTuple_CheckExact(headers) ? PyTuple_Size(headers)
                                                      : -1;
        if (nh < 0 || (nh > 0 && !encode_send_headers(headers, hstack, sizeof hstack, &hbuf, &hlen, &hcounted)))
            return fall_back(sp, args, nargs, kwnames);
    }

    /* Allocated first: nothing below may run Python code (see the top). */
    PyObject *fut = future_alloc((PyTypeObject *)future_type, 4);
    if (fut == NULL)
        goto fail;

    topic_state *t = find_topic(sp, a[ARG_TOPIC]);
    if (t == NULL)
        goto slow;
    const uint8_t *value, *kbytes = NULL;
    int32_t vlen, klen = -1;
    if (!bytes_arg(a[ARG_VALUE], &value, &vlen) || (key != Py_None && !bytes_arg(key, &kbytes, &klen)))
        goto slow;
    int64_t size = (int64_t)vlen + (klen > 0 ? klen : 0) + hcounted + sp->overhead;
    Py_ssize_t part;
    int keyless_sticky = 0;
    if (a[ARG_PARTITION] != NULL && a[ARG_PARTITION] != Py_None) {
        long long p;
        if (!int_arg(a[ARG_PARTITION], 0, (long long)t->n - 1, &p))
            goto slow;
        part = (Py_ssize_t)p;
    } else if (klen >= 0) {
        part = (Py_ssize_t)(((uint32_t)pl_murmur2(kbytes, (size_t)klen) & 0x7fffffffu) % (uint32_t)t->n);
    } else {
        if (t->sticky_left - size < 0)
            goto slow; /* time to move on: the Python path does it */
        part = t->sticky;
        keyless_sticky = 1;
    }
    send_slot *s = &t->slots[part];
    if (s->builder == NULL || size > s->credit || s->size + size >= sp->batch_size ||
        s->size + size > sp->max_request)
        goto slow;
    PyObject *index = PyLong_FromLong(s->builder->count); /* an int: no collection */
    if (index == NULL)
        goto fail;
    int64_t i = hbuf == NULL && ts_arg == Py_None
                    ? pl_builder_add(s->builder, kbytes, klen, value, vlen)
                    : pl_builder_append(s->builder, ts_arg == Py_None ? s->builder->create_time : ts, kbytes,
                                        klen, value, vlen, hbuf, hlen);
    if (i < 0) {  /* PL_E_NOSPACE: the Python path grows the buffer; or its error */
        Py_DECREF(index);
        goto slow;
    }
    assert(i == PyLong_AsLong(index));
    s->size += size;
    s->credit -= size;
    if (keyless_sticky)
        t->sticky_left -= size;
    sp->fast_sends++;
    Py_INCREF(s->batch);
    Py_INCREF(s->tp);
    Py_INCREF(ts_arg);
    PyTuple_SetItem(fut, 0, s->batch); /* a fresh tuple: cannot fail */
    PyTuple_SetItem(fut, 1, index);
    PyTuple_SetItem(fut, 2, s->tp);
    PyTuple_SetItem(fut, 3, ts_arg);
    if (hbuf != hstack)
        PyMem_Free(hbuf);
    return fut;
slow:
    Py_DECREF(fut);
    if (hbuf != hstack)
        PyMem_Free(hbuf);
    return fall_back(sp, args, nargs, kwnames);
fail:
    Py_XDECREF(fut);
    if (hbuf != hstack)
        PyMem_Free(hbuf);
    return NULL;
}

/* ---- the accumulator's side ------------------------------------------------------ */

PyDoc_STRVAR(add_doc,
"add(builder_address, key, value, headers=None, timestamp=None) -> int\n\n"
"The accumulator's own append (the first record of a batch, or one C declined):\n"
"pl_builder_append on the pl_batch_builder at ``builder_address`` (the caller's,\n"
"alive), with ``key`` and ``value`` bytes or None, ``headers`` an encoded header\n"
"section (bytes) or None, ``timestamp`` ms or None (the batch's create time).\n"
"Returns the record's index, or a negative pl_status with nothing written\n"
"(PL_E_NOSPACE: grow the buffer through BatchBuilder; PL_E_RECORD: a malformed\n"
"header section).  One call, the GIL kept: cffi's would release and retake it.");

static PyObject *sp_add(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs < 3 || nargs > 5) {
        PyErr_SetString(PyExc_TypeError, "add(builder_address, key, value, headers=None, timestamp=None)");
        return NULL;
    }
    pl_batch_builder *b = PyLong_AsVoidPtr(args[0]);
    if (b == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "add: null builder address");
        return NULL;
    }
    const uint8_t *key, *value, *headers = NULL;
    int32_t klen, vlen, hlen = -1;
    if (!bytes_arg(args[1], &key, &klen) || !bytes_arg(args[2], &value, &vlen) ||
        (nargs > 3 && !bytes_arg(args[3], &headers, &hlen))) {
        PyErr_SetString(PyExc_TypeError,
                        "add: key, value and headers must be bytes or None (at most 2^31 - 1 bytes)");
        return NULL;
    }
    long long ts = PL_NO_TIMESTAMP;
    PyObject *ts_arg = nargs > 4 ? args[4] : Py_None;
    if (ts_arg != Py_None && !int_arg(ts_arg, 0, INT64_MAX, &ts)) {
        PyErr_SetString(PyExc_TypeError, "add: timestamp must be an int in [0, 2^63) or None");
        return NULL;
    }
    if (headers == NULL && ts_arg == Py_None)
        return PyLong_FromLongLong(pl_builder_add(b, key, klen, value, vlen));
    return PyLong_FromLongLong(pl_builder_append(b, ts_arg == Py_None ? b->create_time : ts, key, klen, value,
                                                 vlen, headers, hlen < 0 ? 0 : hlen));
}

PyDoc_STRVAR(murmur2_doc,
"murmur2(key) -> int\n\n"
"Kafka's murmur2 of ``key`` (bytes) as a signed 32-bit int, computed holding the GIL\n"
"(up to 64 KiB): cffi's call would give the GIL away, and on the producer's send()\n"
"path that hands it to the sender thread, which the producer then has to wait for\n"
"(measured: a sixth of a keyed send loop's time went to those wake-ups).");

static PyObject *rx_murmur2(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 1 || !PyBytes_CheckExact(args[0])) {
        PyErr_SetString(PyExc_TypeError, "murmur2(key: bytes)");
        return NULL;
    }
    char *p;
    Py_ssize_t n;
    if (PyBytes_AsStringAndSize(args[0], &p, &n) < 0)
        return NULL;
    int32_t h;
    if (n > (64 << 10)) {
        Py_BEGIN_ALLOW_THREADS
        h = pl_murmur2((const uint8_t *)p, (size_t)n);
        Py_END_ALLOW_THREADS
    } else {
        h = pl_murmur2((const uint8_t *)p, (size_t)n);
    }
    return PyLong_FromLong(h);
}

PyDoc_STRVAR(add_topic_doc,
"add_topic(topic, partitions, sticky)\n\n"
"Learn (or re-learn, after partitions were added) a topic; ``sticky`` is the first\n"
"partition of its keyless records.  Open slots are kept; ValueError if the topic\n"
"would lose one.");

static PyObject *sp_add_topic(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    SendPath *sp = (SendPath *)self;
    if (nargs != 3 || !PyUnicode_CheckExact(args[0])) {
        PyErr_SetString(PyExc_TypeError, "add_topic(topic: str, partitions: int, sticky: int)");
        return NULL;
    }
    Py_ssize_t n = PyLong_AsSsize_t(args[1]);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    Py_ssize_t sticky = PyLong_AsSsize_t(args[2]);
    if (sticky == -1 && PyErr_Occurred())
        return NULL;
    if (n < 1 || n > INT32_MAX || sticky < 0 || sticky >= n) {
        PyErr_Format(PyExc_ValueError, "add_topic: %zd partitions, sticky partition %zd", n, sticky);
        return NULL;
    }
    topic_state *old = find_topic(sp, args[0]);
    if (old != NULL && old->n == n)
        Py_RETURN_NONE;
    if (old != NULL)
        for (Py_ssize_t p = n; p < old->n; p++)
            if (old->slots[p].builder != NULL) {
                PyErr_Format(PyExc_ValueError, "add_topic: %R partition %zd has an open slot", args[0], p);
                return NULL;
            }
    topic_state *t = PyMem_Calloc(1, sizeof(topic_state) + (size_t)n * sizeof(send_slot));
    if (t == NULL)
        return PyErr_NoMemory();
    t->n = n;
    t->sticky = sticky;
    t->sticky_left = sp->batch_size;
    if (old != NULL) {
        Py_ssize_t k = PyLong_AsSsize_t(PyDict_GetItem(sp->index, args[0]));
        for (Py_ssize_t p = 0; p < old->n && p < n; p++)
            t->slots[p] = old->slots[p]; /* the references move */
        if (old->sticky < n) {
            t->sticky = old->sticky;
            t->sticky_left = old->sticky_left;
        }
        sp->topics[k] = t;
        PyMem_Free(old);
        Py_RETURN_NONE;
    }
    if (sp->n_topics == sp->cap_topics) {
        Py_ssize_t cap = sp->cap_topics ? 2 * sp->cap_topics : 8;
        topic_state **grown = PyMem_Realloc(sp->topics, (size_t)cap * sizeof *grown);
        if (grown == NULL) {
            PyMem_Free(t);
            return PyErr_NoMemory();
        }
        sp->topics = grown;
        sp->cap_topics = cap;
    }
    PyObject *k = PyLong_FromSsize_t(sp->n_topics);
    if (k == NULL || PyDict_SetItem(sp->index, args[0], k) < 0) {
        Py_XDECREF(k);
        PyMem_Free(t);
        return NULL;
    }
    Py_DECREF(k);
    sp->topics[sp->n_topics++] = t;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(keyless_partition_doc,
"keyless_partition(topic, size) -> int\n\n"
"The sticky partitioner for a keyless record of ``size`` bytes counted: the current\n"
"partition while batch.size bytes have not gone to it, else another at random.");

static PyObject *sp_keyless_partition(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    SendPath *sp = (SendPath *)self;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "keyless_partition(topic, size)");
        return NULL;
    }
    long long size = PyLong_AsLongLong(args[1]); /* before the lookup: see slot_arg */
    if (size == -1 && PyErr_Occurred())
        return NULL;
    topic_state *t = topic_arg(sp, args[0]);
    if (t == NULL)
        return NULL;
    t->sticky_left -= size;
    if (t->sticky_left < 0) {
        sticky_move(sp, t);
        t->sticky_left -= size; /* the record goes to the new partition: it counts there */
    }
    return PyLong_FromSsize_t(t->sticky);
}

PyDoc_STRVAR(sticky_doc,
"sticky(topic, move) -> int\n\n"
"The sticky partition of the topic's keyless records; with ``move`` true, first move\n"
"it to another (send_batch: one batch per partition in turn).");

static PyObject *sp_sticky(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    SendPath *sp = (SendPath *)self;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "sticky(topic, move)");
        return NULL;
    }
    int move = PyObject_IsTrue(args[1]); /* before the lookup: see slot_arg */
    if (move < 0)
        return NULL;
    topic_state *t = topic_arg(sp, args[0]);
    if (t == NULL)
        return NULL;
    if (move)
        sticky_move(sp, t);
    return PyLong_FromSsize_t(t->sticky);
}

PyDoc_STRVAR(give_doc,
"give(topic, partition, batch, builder_address, tp, size, credit)\n\n"
"Hand the partition's open batch to C: records go into the pl_batch_builder at\n"
"``builder_address`` (owned by ``batch``) while ``credit`` buffer.memory bytes last;\n"
"``size``: the batch's bytes counted so far.  ValueError if the slot is in use.");

static PyObject *sp_give(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    SendPath *sp = (SendPath *)self;
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError, "give takes 7 arguments");
        return NULL;
    }
    pl_batch_builder *b = PyLong_AsVoidPtr(args[3]);
    if (b == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "give: null builder address");
        return NULL;
    }
    long long size = PyLong_AsLongLong(args[5]);
    long long credit = size == -1 && PyErr_Occurred() ? -1 : PyLong_AsLongLong(args[6]);
    if (PyErr_Occurred())
        return NULL;
    if (size < 0 || credit < 0 || !PyTuple_CheckExact(args[4])) {
        PyErr_SetString(PyExc_ValueError, "give: size and credit must be >= 0, tp a tuple");
        return NULL;
    }
    send_slot *s = slot_arg(sp, args[0], args[1]); /* last: nothing below runs Python code */
    if (s == NULL)
        return NULL;
    if (s->builder != NULL) {
        PyErr_SetString(PyExc_ValueError, "give: the slot already holds an open batch");
        return NULL;
    }
    s->builder = b;
    Py_INCREF(args[2]);
    s->batch = args[2];
    Py_INCREF(args[4]);
    s->tp = args[4];
    s->size = size;
    s->credit = credit;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(take_doc,
"take(topic, partition) -> (size, credit) | None\n\n"
"Take the partition's open batch back from C: its bytes counted now and the credit\n"
"it did not use.  None if C held no batch of it.");

static PyObject *sp_take(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    SendPath *sp = (SendPath *)self;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "take(topic, partition)");
        return NULL;
    }
    Py_ssize_t p = PyLong_AsSsize_t(args[1]); /* before the lookup: see slot_arg */
    if (p == -1 && PyErr_Occurred())
        return NULL;
    topic_state *t = find_topic(sp, args[0]); /* (sets no error) */
    if (t == NULL || p < 0 || p >= t->n || t->slots[p].builder == NULL)
        Py_RETURN_NONE;
    /* Emptied before anything is allocated (an allocation can let another thread run,
     * whose send would still see the slot); its references are dropped last. */
    send_slot s = t->slots[p];
    t->slots[p].builder = NULL;
    t->slots[p].batch = t->slots[p].tp = NULL;
    t->slots[p].size = t->slots[p].credit = 0;
    PyObject *out = Py_BuildValue("(LL)", (long long)s.size, (long long)s.credit);
    Py_DECREF(s.batch);
    Py_DECREF(s.tp);
    return out;
}

static PyObject *sp_fast_sends(PyObject *self, void *closure)
{
    (void)closure;
    return PyLong_FromLongLong(((SendPath *)self)->fast_sends);
}

static PyObject *sp_credit(PyObject *self, void *closure)
{
    (void)closure;
    SendPath *sp = (SendPath *)self;
    long long total = 0;
    for (Py_ssize_t k = 0; k < sp->n_topics; k++)
        for (Py_ssize_t p = 0; p < sp->topics[k]->n; p++)
            total += sp->topics[k]->slots[p].credit;
    return PyLong_FromLongLong(total);
}

/* ---- the type ---------------------------------------------------------------------- */

static PyObject *sp_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"fallback", "batch_size", "max_request_size", "record_overhead", "murmur2",
                             "seed", NULL};
    PyObject *fallback;
    long long batch_size, max_request, overhead;
    int murmur2;
    unsigned long long seed;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OLLLpK:SendPath", kwlist, &fallback, &batch_size,
                                     &max_request, &overhead, &murmur2, &seed))
        return NULL;
    if (!PyCallable_Check(fallback) || batch_size < 1 || max_request < 1 || overhead < 0) {
        PyErr_SetString(PyExc_ValueError, "SendPath: a callable fallback, batch_size and max_request_size "
                        ">= 1, record_overhead >= 0");
        return NULL;
    }
    allocfunc alloc = (allocfunc)PyType_GetSlot(type, Py_tp_alloc);
    SendPath *sp = (SendPath *)alloc(type, 0);
    if (sp == NULL)
        return NULL;
    sp->index = PyDict_New();
    if (sp->index == NULL) {
        Py_DECREF(sp);
        return NULL;
    }
    Py_INCREF(fallback);
    sp->fallback = fallback;
    sp->batch_size = batch_size;
    sp->max_request = max_request;
    sp->overhead = overhead;
    sp->murmur2 = murmur2;
    sp->rng = seed ? seed : 0x9E3779B97F4A7C15ULL;
    return (PyObject *)sp;
}

static int sp_traverse(PyObject *self, visitproc visit, void *arg)
{
    SendPath *sp = (SendPath *)self;
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(sp->fallback);
    Py_VISIT(sp->index);
    for (Py_ssize_t k = 0; k < sp->n_topics; k++)
        for (Py_ssize_t p = 0; p < sp->topics[k]->n; p++) {
            send_slot *s = &sp->topics[k]->slots[p];
            Py_VISIT(s->batch);
            Py_VISIT(s->tp);
        }
    return 0;
}

static int sp_clear(PyObject *self)
{
    SendPath *sp = (SendPath *)self;
    Py_CLEAR(sp->fallback);
    Py_CLEAR(sp->index);
    for (Py_ssize_t k = 0; k < sp->n_topics; k++)
        for (Py_ssize_t p = 0; p < sp->topics[k]->n; p++)
            slot_clear(&sp->topics[k]->slots[p]);
    return 0;
}

static void sp_dealloc(PyObject *self)
{
    SendPath *sp = (SendPath *)self;
    PyTypeObject *type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    sp_clear(self);
    for (Py_ssize_t k = 0; k < sp->n_topics; k++)
        PyMem_Free(sp->topics[k]);
    PyMem_Free(sp->topics);
    freefunc free_fn = (freefunc)PyType_GetSlot(type, Py_tp_free);
    free_fn(self);
    Py_DECREF(type);
}

static PyMethodDef sp_methods[] = {
    {"send", (PyCFunction)(void (*)(void))sp_send, METH_FASTCALL | METH_KEYWORDS, send_doc},
    {"add", (PyCFunction)(void (*)(void))sp_add, METH_FASTCALL, add_doc},
    {"add_topic", (PyCFunction)(void (*)(void))sp_add_topic, METH_FASTCALL, add_topic_doc},
    {"keyless_partition", (PyCFunction)(void (*)(void))sp_keyless_partition, METH_FASTCALL,
     keyless_partition_doc},
    {"sticky", (PyCFunction)(void (*)(void))sp_sticky, METH_FASTCALL, sticky_doc},
    {"give", (PyCFunction)(void (*)(void))sp_give, METH_FASTCALL, give_doc},
    {"take", (PyCFunction)(void (*)(void))sp_take, METH_FASTCALL, take_doc},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef sp_getset[] = {
    {"fast_sends", sp_fast_sends, NULL, "records send() encoded here (the rest went to the fallback)", NULL},
    {"credit", sp_credit, NULL, "buffer.memory bytes the open slots hold unused", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot sp_slots[] = {
    {Py_tp_doc, (void *)"SendPath(fallback, batch_size, max_request_size, record_overhead, murmur2, seed):\n"
                        "Producer.send()'s record path in C (see csrc/pysend.c)."},
    {Py_tp_new, (void *)sp_new},
    {Py_tp_dealloc, (void *)sp_dealloc},
    {Py_tp_traverse, (void *)sp_traverse},
    {Py_tp_clear, (void *)sp_clear},
    {Py_tp_methods, sp_methods},
    {Py_tp_getset, sp_getset},
    {0, NULL},
};

static PyType_Spec sp_spec = {
    "pylog._native._records.SendPath",
    sizeof(SendPath),
    0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    sp_slots,
};

static PyObject *send_path_type;

/* 1 if FutureRecordMetadata lays out as tuple does (its tp_alloc + PyTuple_SetItem then
 * makes one as tuple.__new__ would); 0 if not -- send() then always falls back. */
static int check_future_type(PyObject *type)
{
    static const char *const attrs[] = {"__basicsize__", "__itemsize__", "__dictoffset__",
                                        "__weakrefoffset__"};
    for (size_t i = 0; i < sizeof attrs / sizeof attrs[0]; i++) {
        Py_ssize_t a = ssize_attr(type, attrs[i]);
        Py_ssize_t b = a == -1 && PyErr_Occurred() ? -1 : ssize_attr((PyObject *)&PyTuple_Type, attrs[i]);
        if (PyErr_Occurred())
            return -1;
        if (a != b)
            return 0;
    }
    return 1;
}

PyDoc_STRVAR(setup_send_doc,
"setup_send(future_type) -> bool\n\n"
"Called once by pylog.client.producer_batch with FutureRecordMetadata (a tuple\n"
"subclass of 4 items).  Returns whether SendPath.send can build futures itself;\n"
"if not, every send goes to the fallback.");

static PyObject *rx_setup_send(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 1 || !PyType_Check(args[0]) || !PyType_IsSubtype((PyTypeObject *)args[0], &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "setup_send(future_type): a tuple subclass");
        return NULL;
    }
    for (int i = 0; i < N_SEND_ARGS; i++)
        if (send_arg_str[i] == NULL && (send_arg_str[i] = PyUnicode_InternFromString(send_arg_names[i])) == NULL)
            return NULL;
    int ok = check_future_type(args[0]);
    if (ok < 0)
        return NULL;
    PyObject *old = future_type;
    Py_INCREF(args[0]);
    future_type = args[0];
    Py_XDECREF(old);
    future_alloc = ok ? (allocfunc)PyType_GetSlot((PyTypeObject *)args[0], Py_tp_alloc) : NULL;
    return PyBool_FromLong(future_alloc != NULL);
}

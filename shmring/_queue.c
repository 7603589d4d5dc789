/*
 * shmring/_queue.c -- the ring object's methods for a Queue: the Python side
 * of the record protocol in _queue.h (encoding calls, raising, the GIL
 * released around large copies) and the fast put/get of the lock-free
 * flavour.  shmring/queue.py is the class.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#define PY_ARRAY_UNIQUE_SYMBOL shmring_ARRAY_API
#define NO_IMPORT_ARRAY
#include <numpy/arrayobject.h>

#include "_queue.h"
#include "_ring.h"

#define Q_MAX_PARTS ((Py_ssize_t)1 << 20)


/* The fast paths' Python helpers (see qring_put_obj). */
static PyObject *pickle_dumps, *pickle_loads, *dumps_kwnames, *protocol5, *oob_refusal, *OutOfBand;
static PyObject *str_put_slow, *str_get_slow, *str_decode;

/* buffer_callback of the fast path's pickling: an out-of-band buffer (an
 * array inside the object) sends the object to the Python path instead. */
static PyObject *
refuse_oob(PyObject *self, PyObject *buf)
{
    PyErr_SetNone(OutOfBand);
    return NULL;
}

static PyMethodDef refuse_oob_def = {"_refuse_oob", refuse_oob, METH_O, NULL};

int
qring_module_init(void)
{
    /* _atomic.h's test hooks are per file: read them here too. */
    read_test_environment();
    PyObject *pickle = PyImport_ImportModule("pickle");
    if (pickle == NULL) return -1;
    pickle_dumps = PyObject_GetAttrString(pickle, "dumps");
    pickle_loads = PyObject_GetAttrString(pickle, "loads");
    Py_DECREF(pickle);
    dumps_kwnames = Py_BuildValue("(ss)", "protocol", "buffer_callback");
    protocol5 = PyLong_FromLong(5);
    oob_refusal = PyCFunction_New(&refuse_oob_def, NULL);
    OutOfBand = PyErr_NewException("shmring._core._OutOfBand", NULL, NULL);
    str_put_slow = PyUnicode_InternFromString("_put_slow");
    str_get_slow = PyUnicode_InternFromString("_get_slow");
    str_decode = PyUnicode_InternFromString("_decode");
    if (pickle_dumps == NULL || pickle_loads == NULL || dumps_kwnames == NULL || protocol5 == NULL ||
        oob_refusal == NULL || OutOfBand == NULL || str_put_slow == NULL || str_get_slow == NULL ||
        str_decode == NULL) {
        return -1;
    }
    return 0;
}

static int
q_corrupt(SpscRing *r, uint64_t pos)
{
    raise_layout("corrupt queue: the record at position %llu (capacity %llu slots) is impossible",
                 (unsigned long long)pos, (unsigned long long)r->m.capacity);
    return -1;
}

static mpmc_claim_t *
q_claim_words(SpscRing *r, int role)
{
    mpmc_claim_t *c = &r->claim[CLAIM_INDEX(role)];
    if (!r->queue || c->start == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "not a queue handle registered in this role");
        return NULL;
    }
    return c;
}

/* A Queue handle is shared by threads, as a multiprocessing.Queue is: a
 * call that finds another thread of this process copying through the handle
 * without the GIL waits for it (its claim is announced in the handle's one
 * entry, which ours must not overwrite).  The flag changes only under the
 * GIL, so once we see it clear the side is ours until we let the GIL go. */
static void
q_wait_idle(SpscRing *r, const int *busy)
{
    while (*busy) {
        Py_BEGIN_ALLOW_THREADS
        sched_yield();
        Py_END_ALLOW_THREADS
    }
}

/* The claim words of a producer (consumer) call, after the checks every
 * such call makes (open, no view open); NULL with an error set. */
static mpmc_claim_t *
q_producer(SpscRing *r)
{
    q_wait_idle(r, &r->put_busy);
    return check_producer_call(r, 0) < 0 ? NULL : q_claim_words(r, ROLE_PRODUCER);
}

static mpmc_claim_t *
q_consumer(SpscRing *r)
{
    q_wait_idle(r, &r->get_busy);
    return check_consumer_call(r, 0) < 0 ? NULL : q_claim_words(r, ROLE_CONSUMER);
}

/* Claim the next record with claim words c (q_next): 1, 0 (none ready) or
 * -1 with LayoutError set. */
static int
q_next_or_raise(SpscRing *r, mpmc_claim_t c, q_rec_t *rec)
{
    int got = q_next(&r->qq, c, rec);
    if (got < 0) q_corrupt(r, rec->pos);
    return got;
}


/* _q_bind(admitted_off, room_off, record_off, maxsize, fast, in_off=0, out_off=0):
 * make a bound multi ring a Queue's.  The two words are in the header, the
 * record words (one per slot) between the sequence words and the data area.
 * `fast`: put/get may finish in the core (the lock-free flavour; the
 * semaphore flavour's wake-ups are in Python).  in_off/out_off: the two
 * statistics words of each side (0: not counted). */
PyObject *
qring_bind(SpscRing *r, PyObject *args)
{
    Py_ssize_t off[4] = {0, 0, 0, 0}, rec_off;
    unsigned long long maxsize;
    int fast;
    if (!PyArg_ParseTuple(args, "nnnKp|nn:_q_bind", &off[0], &off[1], &rec_off, &maxsize, &fast, &off[2], &off[3]))
        return NULL;
    if (!r->bound || !r->multi) {
        PyErr_SetString(PyExc_ValueError, "not a bound multi ring");
        return NULL;
    }
    Py_ssize_t seq_off = (char *)r->m.seq - r->q.base, data_off = r->m.data - r->q.base;
    for (int i = 0; i < 4; i++) {
        Py_ssize_t width = i < 2 ? 8 : 16;
        if (i >= 2 && off[i] == 0) continue;
        if (off[i] < 0 || off[i] % 8 != 0 || off[i] > seq_off - width) {
            raise_layout("queue word at %zd is not in the header", off[i]);
            return NULL;
        }
    }
    uint64_t cap = r->m.capacity;
    if (rec_off % 8 != 0 || rec_off < seq_off || (uint64_t)(rec_off - seq_off) < cap * 8 || rec_off > data_off ||
        (uint64_t)(data_off - rec_off) / 8 < cap) {
        raise_layout("record words at %zd do not fit between the sequence words and the data area", rec_off);
        return NULL;
    }
    if (r->m.slot_size < Q_HEADER || r->m.slot_size % 16 != 0 || cap >= Q_INDEX_LIMIT / 2) {
        raise_layout("a queue's slots are multiples of 16 bytes, not %zu", r->m.slot_size);
        return NULL;
    }
    r->qq = (queue_t){&r->m,
                      (a64 *)(r->q.base + rec_off),
                      (a64 *)(r->q.base + off[0]),
                      (a64 *)(r->q.base + off[1]),
                      maxsize,
                      off[2] ? (a64 *)(r->q.base + off[2]) : NULL,
                      off[3] ? (a64 *)(r->q.base + off[3]) : NULL};
    r->q_fast = fast;
    r->m.flags = MPMC_ABANDONED | MPMC_BODY;
    r->m.limit = Q_INDEX_LIMIT;
    r->queue = 1;
    Py_RETURN_NONE;
}

/* -- producing ------------------------------------------------------------------- */







/* Put one record.  Returns 1 (put), 0 (no room now) or -1 (error set). */
static int
q_put_parts(SpscRing *r, mpmc_claim_t c, uint32_t kind, const q_part_t *parts, Py_ssize_t n)
{
    uint64_t len = q_payload_len(parts, (size_t)n);
    if (len > q_max_len(&r->qq)) {
        PyErr_Format(PyExc_ValueError,
                     "a message of %llu bytes (framed) is larger than this queue can ever hold (%llu bytes)",
                     (unsigned long long)len, (unsigned long long)q_max_len(&r->qq));
        return -1;
    }
    uint64_t pos = 0, k = 0;
    int got = q_put_begin(&r->qq, c, len, &pos, &k);
    if (got < 0) return q_corrupt(r, pos);
    if (got == 0) return 0;
    if (len >= NOGIL_COPY_BYTES) {
        r->inflight++;
        r->put_busy = 1;
        Py_BEGIN_ALLOW_THREADS
        q_put_end(&r->qq, c, pos, k, len, kind, parts, (size_t)n);
        Py_END_ALLOW_THREADS
        r->put_busy = 0;
        ring_end_inflight(r);
    }
    else {
        q_put_end(&r->qq, c, pos, k, len, kind, parts, (size_t)n);
    }
    return 1;
}

/* _q_put(kind, part_or_parts) -> bool: one record of one buffer, or of a
 * tuple of buffers (each contiguous); False when there is no room now. */
PyObject *
qring_put(SpscRing *r, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "_q_put(kind, parts)");
        return NULL;
    }
    long kind = PyLong_AsLong(args[0]);
    if (kind == -1 && PyErr_Occurred()) return NULL;
    if (kind <= Q_KIND_PAD || kind > 0xFFFF) {
        PyErr_SetString(PyExc_ValueError, "bad record kind");
        return NULL;
    }
    mpmc_claim_t *c = q_producer(r);
    if (c == NULL) return NULL;
    PyObject *obj = args[1];
    int single = !PyTuple_Check(obj);
    Py_ssize_t n = single ? 1 : PyTuple_GET_SIZE(obj);
    if (n > Q_MAX_PARTS) {
        PyErr_Format(PyExc_ValueError, "a message of more than %zd parts", Q_MAX_PARTS);
        return NULL;
    }
    Py_buffer stack_views[4];
    q_part_t stack_parts[4];
    Py_buffer *views = n <= 4 ? stack_views : PyMem_Malloc(sizeof(Py_buffer) * (size_t)n);
    q_part_t *parts = n <= 4 ? stack_parts : PyMem_Malloc(sizeof(q_part_t) * (size_t)n);
    PyObject *result = NULL;
    Py_ssize_t held = 0;
    if (views == NULL || parts == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (; held < n; held++) {
        PyObject *part = single ? obj : PyTuple_GET_ITEM(obj, held);
        if (PyObject_GetBuffer(part, &views[held], PyBUF_ANY_CONTIGUOUS) < 0) goto done;
        parts[held] = (q_part_t){views[held].buf, (uint64_t)views[held].len};
    }
    int got = q_put_parts(r, *c, (uint32_t)kind, parts, n);
    if (got >= 0) result = PyBool_FromLong(got);
done:
    for (Py_ssize_t i = 0; i < held; i++) PyBuffer_Release(&views[i]);
    if (views != stack_views) PyMem_Free(views);
    if (parts != stack_parts) PyMem_Free(parts);
    return result;
}

/* _q_put_bytes_many(items, start) -> int: put items[start:] while they are
 * bytes objects and there is room; returns how many went in. */
PyObject *
qring_put_bytes_many(SpscRing *r, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyList_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "_q_put_bytes_many(list, start)");
        return NULL;
    }
    Py_ssize_t start = PyLong_AsSsize_t(args[1]);
    if (start == -1 && PyErr_Occurred()) return NULL;
    mpmc_claim_t *c = q_producer(r);
    if (c == NULL) return NULL;
    PyObject *items = args[0];
    Py_ssize_t i = start < 0 ? 0 : start;
    for (; i < PyList_GET_SIZE(items); i++) {
        PyObject *item = PyList_GET_ITEM(items, i);
        if (!PyBytes_CheckExact(item)) break;
        q_part_t part = {PyBytes_AS_STRING(item), (uint64_t)PyBytes_GET_SIZE(item)};
        int got = q_put_parts(r, *c, Q_KIND_BYTES, &part, 1);
        if (got < 0) return NULL;
        if (got == 0) break;
    }
    return PyLong_FromSsize_t(i - (start < 0 ? 0 : start));
}

/* -- consuming ------------------------------------------------------------------- */





/* The parts of a record, as (offset, length) pairs from the payload's start,
 * checked against the payload; NULL with LayoutError if they do not fit.
 * `payload` must not change under us (a private copy, or a claimed record
 * whose table only a hostile process could rewrite: then the offsets are
 * still within the payload we return them against). */
static PyObject *
q_parts(SpscRing *r, const q_rec_t *rec, const char *payload)
{
    uint64_t n = rec->nparts, len = rec->len;
    if (n > (uint64_t)Q_MAX_PARTS || (n == 0 && len != 0) || (n > 1 && Q_ALIGN(8 * n) > len)) {
        return q_corrupt(r, rec->pos), NULL;
    }
    PyObject *out = PyTuple_New((Py_ssize_t)(2 * n));
    if (out == NULL) return NULL;
    uint64_t off = n > 1 ? Q_ALIGN(8 * n) : 0;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t plen;
        if (n == 1) plen = len;
        else memcpy(&plen, payload + 8 * i, 8);
        if (off > len || plen > len - off || (i + 1 == n && off + plen != len)) {
            Py_DECREF(out);
            return q_corrupt(r, rec->pos), NULL;
        }
        PyObject *a = PyLong_FromUnsignedLongLong(off), *b = PyLong_FromUnsignedLongLong(plen);
        if (a == NULL || b == NULL) {
            Py_XDECREF(a);
            Py_XDECREF(b);
            Py_DECREF(out);
            return NULL;
        }
        PyTuple_SET_ITEM(out, (Py_ssize_t)(2 * i), a);
        PyTuple_SET_ITEM(out, (Py_ssize_t)(2 * i + 1), b);
        off = Q_ALIGN(off + plen);
    }
    return out;
}

/* Copy the claimed record out and free it: a bytes object for kind BYTES,
 * else (kind, payload, parts): the payload a bytes object when it is one
 * part (parts None) -- a pickle stream, say -- and a bytearray otherwise
 * (its arrays come out writable), with parts its (offset, length) pairs.
 * A bytearray record is one part and comes back as a bytearray.  NULL with
 * an error set (the record is freed all the same: lost, as a crashed
 * consumer's would be). */
static PyObject *
q_take(SpscRing *r, mpmc_claim_t c, const q_rec_t *rec)
{
    const char *src = mpmc_slot(&r->m, rec->pos) + Q_HEADER;
    int one = rec->nparts == 1;
    int as_bytes = one && rec->kind != Q_KIND_BYTEARRAY;
    PyObject *buf = as_bytes ? PyBytes_FromStringAndSize(NULL, (Py_ssize_t)rec->len)
                             : PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)rec->len);
    if (buf == NULL) {
        q_free(&r->qq, c, rec->pos, rec->k);
        return NULL;
    }
    char *dst = as_bytes ? PyBytes_AS_STRING(buf) : PyByteArray_AS_STRING(buf);
    if (broken == BROKEN_FREE_BEFORE_COPY) {
        /* Test-only (the stress harness must catch it): producers may
         * overwrite the record while we copy it. */
        q_free(&r->qq, c, rec->pos, rec->k);
        inject_delay();
        memcpy(dst, src, rec->len);
    }
    else if (rec->len >= NOGIL_COPY_BYTES) {
        r->inflight++;
        r->get_busy = 1;
        Py_BEGIN_ALLOW_THREADS
        memcpy(dst, src, rec->len);
        inject_delay();
        q_free(&r->qq, c, rec->pos, rec->k);
        Py_END_ALLOW_THREADS
        r->get_busy = 0;
        ring_end_inflight(r);
    }
    else {
        memcpy(dst, src, rec->len);
        inject_delay();
        q_free(&r->qq, c, rec->pos, rec->k);
    }
    if (as_bytes && rec->kind == Q_KIND_BYTES) return buf;
    PyObject *parts = Py_None;
    Py_INCREF(parts);
    if (!one && (parts = q_parts(r, rec, dst)) == NULL) {
        Py_DECREF(buf);
        return NULL;
    }
    return Py_BuildValue("(INN)", (unsigned int)rec->kind, buf, parts);
}

/* _q_get() -> None | bytes | (kind, bytearray, parts): the next record, copied. */
PyObject *
qring_get(SpscRing *r, PyObject *unused)
{
    mpmc_claim_t *c = q_consumer(r);
    q_rec_t rec;
    int got = c == NULL ? -1 : q_next_or_raise(r, *c, &rec);
    if (got < 0) return NULL;
    if (got == 0) Py_RETURN_NONE;
    return q_take(r, *c, &rec);
}

/* _q_get_many(max) -> None | list: up to max records, as _q_get's. */
PyObject *
qring_get_many(SpscRing *r, PyObject *arg)
{
    Py_ssize_t max = parse_max_items(arg);
    if (max < 0) return NULL;
    mpmc_claim_t *c = q_consumer(r);
    if (c == NULL) return NULL;
    PyObject *out = NULL;
    for (Py_ssize_t i = 0; i < max; i++) {
        q_rec_t rec;
        int got = q_next_or_raise(r, *c, &rec);
        if (got < 0) goto fail;
        if (got == 0) break;
        PyObject *item = q_take(r, *c, &rec);
        if (item == NULL) goto fail;
        if (out == NULL && (out = PyList_New(0)) == NULL) {
            Py_DECREF(item);
            return NULL;
        }
        int rc = PyList_Append(out, item);
        Py_DECREF(item);
        if (rc < 0) goto fail;
    }
    if (out == NULL) Py_RETURN_NONE;
    return out;
fail:
    /* Records already taken are lost with the error, as with a MemoryError
     * in get(); a corrupt record stops the batch. */
    Py_XDECREF(out);
    return NULL;
}

/* _q_peek() -> None | (kind, offset, length, parts): claim the next record
 * for a borrow() block; offset is its payload's from the data area's start.
 * The block ends with _q_end_loan. */
PyObject *
qring_peek(SpscRing *r, PyObject *unused)
{
    mpmc_claim_t *c = q_consumer(r);
    q_rec_t rec;
    int got = c == NULL ? -1 : q_next_or_raise(r, *c, &rec);
    if (got < 0) return NULL;
    if (got == 0) Py_RETURN_NONE;
    const char *payload = mpmc_slot(&r->m, rec.pos) + Q_HEADER;
    PyObject *parts = q_parts(r, &rec, payload);
    if (parts == NULL) {
        q_free(&r->qq, *c, rec.pos, rec.k);
        return NULL;
    }
    r->loan_pos = rec.pos;
    r->loan_k = rec.k;
    r->loan_len = rec.len;
    r->views |= ROLE_CONSUMER;
    return Py_BuildValue("(IKKN)", (unsigned int)rec.kind, (unsigned long long)(payload - r->m.data),
                         (unsigned long long)rec.len, parts);
}

/* _q_end_loan(): a borrow() block ended: free its record. */
PyObject *
qring_end_loan(SpscRing *r, PyObject *unused)
{
    if (check_consumer_call(r, 1) < 0) return NULL;
    mpmc_claim_t *c = q_claim_words(r, ROLE_CONSUMER);
    if (c == NULL) return NULL;
    inject_delay();
    q_free(&r->qq, *c, r->loan_pos, r->loan_k);
    r->views &= ~ROLE_CONSUMER;
    Py_RETURN_NONE;
}

/* _q_wait_room(nbytes, timeout) -> bool: sleep until a record of nbytes
 * payload bytes may fit (a consumer freed slots), at most timeout seconds. */
PyObject *
qring_wait_room(SpscRing *r, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "_q_wait_room(nbytes, timeout)");
        return NULL;
    }
    unsigned long long len = PyLong_AsUnsignedLongLong(args[0]);
    if (len == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
    double timeout = PyFloat_AsDouble(args[1]);
    if (timeout == -1.0 && PyErr_Occurred()) return NULL;
    if (ring_check_open(r) < 0) return NULL;
    if (!r->queue) {
        PyErr_SetString(PyExc_ValueError, "not a queue");
        return NULL;
    }
    uint64_t k = len > q_max_len(&r->qq) ? r->m.capacity : q_slots(&r->qq, len);
    /* SYNC POINT (acquire): pairs with q_wake_producers' release bump;
     * read before the room check, so a free after the check changes it and
     * the wait below returns at once (an event count). */
    uint64_t seen = atomic_load_explicit(r->qq.room, memory_order_acquire);
    if (q_room_now(&r->qq, k)) Py_RETURN_TRUE;
    int rc = ring_wait_word(r, r->qq.room, r->m.producer_waiters, seen, timeout);
    if (rc < 0) return NULL;
    return PyBool_FromLong(rc);
}

/* _q_count(limit=2**63) -> (messages ready, messages admitted): the walk of
 * q_count, stopping at `limit`, and the admission word (maxsize > 0). */
PyObject *
qring_count(SpscRing *r, PyObject *const *args, Py_ssize_t nargs)
{
    unsigned long long limit = UINT64_MAX >> 1;
    if (nargs > 1) {
        PyErr_SetString(PyExc_TypeError, "_q_count([limit])");
        return NULL;
    }
    if (nargs == 1 && (limit = PyLong_AsUnsignedLongLong(args[0])) == (unsigned long long)-1 && PyErr_Occurred()) {
        return NULL;
    }
    if (!r->bound || !r->queue) {
        PyErr_SetString(PyExc_ValueError, "not an open queue");
        return NULL;
    }
    uint64_t n = q_count(&r->qq, limit);
    int64_t a = r->qq.maxsize ? q_admitted_count(atomic_load_explicit(r->qq.admitted, memory_order_relaxed)) : (int64_t)n;
    return Py_BuildValue("KL", (unsigned long long)n, (long long)a);
}

/* -- put() and get() of the lock-free flavour, in one call ---------------------------------- */

/* The common objects in one call: bytes as they are, and anything pickled
 * (protocol 5) with no out-of-band buffer.  Everything else -- an ndarray,
 * a bytearray, an object holding arrays (the refusing buffer_callback tells)
 * -- and every wait, first use and error goes to Queue._put_slow. */
static PyObject *
q_put_fast(SpscRing *r, PyObject *obj, PyObject *block, PyObject *timeout)
{
    if (timeout != Py_None && parse_timeout(timeout) < -1.5) return NULL;
    if (!r->q_fast || !r->bound || r->closing || r->refusing || !(r->role & ROLE_PRODUCER) || r->put_busy ||
        (r->views & ROLE_PRODUCER)) {
        goto slow;
    }
    PyObject *stream = NULL;
    q_part_t part;
    uint32_t kind = Q_KIND_BYTES;
    if (PyBytes_CheckExact(obj)) {
        part = (q_part_t){PyBytes_AS_STRING(obj), (uint64_t)PyBytes_GET_SIZE(obj)};
    }
    else if (PyByteArray_CheckExact(obj) || PyMemoryView_Check(obj) || PyArray_CheckExact(obj)) {
        goto slow;
    }
    else {
        PyObject *call[3] = {obj, protocol5, oob_refusal};
        stream = PyObject_Vectorcall(pickle_dumps, call, 1, dumps_kwnames);
        if (stream == NULL) {
            if (PyErr_ExceptionMatches(OutOfBand)) {
                PyErr_Clear();
                goto slow;
            }
            return NULL; /* unpicklable: the caller's error, nothing written */
        }
        if (!PyBytes_CheckExact(stream)) {
            Py_DECREF(stream);
            goto slow;
        }
        kind = Q_KIND_PICKLE;
        part = (q_part_t){PyBytes_AS_STRING(stream), (uint64_t)PyBytes_GET_SIZE(stream)};
    }
    mpmc_claim_t *c = q_claim_words(r, ROLE_PRODUCER);
    int got = c == NULL ? -1 : q_put_parts(r, *c, kind, &part, 1);
    Py_XDECREF(stream);
    if (got < 0) return NULL;
    if (got == 1) Py_RETURN_NONE;
slow:
    return PyObject_CallMethodObjArgs((PyObject *)r, str_put_slow, obj, block, timeout, NULL);
}

/* The next record in one call: bytes, or a one-part pickle loaded here;
 * other records go through Queue._decode, and every wait, first use and
 * error through Queue._get_slow. */
static PyObject *
q_get_fast(SpscRing *r, PyObject *block, PyObject *timeout)
{
    if (timeout != Py_None && parse_timeout(timeout) < -1.5) return NULL;
    if (!r->q_fast || !r->bound || r->closing || r->refusing || !(r->role & ROLE_CONSUMER) || r->get_busy ||
        (r->views & ROLE_CONSUMER)) {
        goto slow;
    }
    mpmc_claim_t *c = q_claim_words(r, ROLE_CONSUMER);
    q_rec_t rec;
    int got = c == NULL ? -1 : q_next_or_raise(r, *c, &rec);
    if (got < 0) return NULL;
    if (got == 0) goto slow;
    PyObject *entry = q_take(r, *c, &rec);
    if (entry == NULL || PyBytes_CheckExact(entry)) return entry;
    PyObject *out;
    PyObject *payload = PyTuple_GET_ITEM(entry, 1);
    if (rec.kind == Q_KIND_PICKLE && PyTuple_GET_ITEM(entry, 2) == Py_None) {
        out = PyObject_CallOneArg(pickle_loads, payload);
    }
    else {
        out = PyObject_CallMethodOneArg((PyObject *)r, str_decode, entry);
    }
    Py_DECREF(entry);
    return out;
slow:
    return PyObject_CallMethodObjArgs((PyObject *)r, str_get_slow, block, timeout, NULL);
}

PyObject *
qring_put_obj(SpscRing *r, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"obj", "block", "timeout"};
    PyObject *a[3];
    if (kwnames == NULL && nargs == 1) return q_put_fast(r, args[0], Py_True, Py_None);
    if (parse_call("put", args, nargs, kwnames, 1, 0, names, a) < 0) return NULL;
    return q_put_fast(r, a[0], a[1], a[2]);
}

PyObject *
qring_put_nowait_obj(SpscRing *r, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"obj"};
    if (kwnames == NULL && nargs == 1) return q_put_fast(r, args[0], Py_False, Py_None);
    if (nargs + (kwnames ? PyTuple_GET_SIZE(kwnames) : 0) != 1 ||
        (kwnames != NULL && PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, 0), names[0]) != 0)) {
        PyErr_SetString(PyExc_TypeError, "put_nowait() takes exactly one argument, obj");
        return NULL;
    }
    return q_put_fast(r, args[0], Py_False, Py_None);
}

PyObject *
qring_get_obj(SpscRing *r, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"block", "timeout"};
    PyObject *a[2];
    if (kwnames == NULL && nargs == 0) return q_get_fast(r, Py_True, Py_None);
    if (parse_call("get", args, nargs, kwnames, 0, 0, names, a) < 0) return NULL;
    return q_get_fast(r, a[0], a[1]);
}

PyObject *
qring_get_nowait_obj(SpscRing *r, PyObject *unused)
{
    return q_get_fast(r, Py_False, Py_None);
}

/* _mpmc.c's close with a borrow() block open frees the record: wake producers. */
void
qring_wake_producers(SpscRing *r)
{
    q_wake_producers(&r->qq);
}

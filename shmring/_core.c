/*
 * shmring._core -- the only C in shmring.
 *
 * It holds what Python cannot do: atomic loads/stores/CAS/fetch-add on words
 * of a shared mapping with explicit memory ordering, futex wait/wake on
 * shared (not private) words, and the Ring's per-item hot paths, each one
 * call from Python.  Geometry, validation of the header, liveness of peers
 * and the public API live in Python (see shmring/_layout.py and
 * docs/design.md, which holds the whole memory-ordering argument).
 *
 * Safety rule: every offset this module is handed is checked against the
 * length of the buffer it is applied to, and every index read from shared
 * memory is validated before it is used to address a slot, so a corrupt or
 * hostile header raises shmring.LayoutError instead of crashing.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#define PY_ARRAY_UNIQUE_SYMBOL shmring_ARRAY_API
#include <numpy/arrayobject.h>

#include <errno.h>
#include <limits.h>
#include <stdio.h>

#include "_ring.h"

/* ------------------------------------------------------------------ */
/* Errors */

static PyObject *
layout_error_type(void)
{
    PyObject *mod = PyImport_ImportModule("shmring.errors");
    if (mod == NULL) {
        return NULL;
    }
    PyObject *cls = PyObject_GetAttrString(mod, "LayoutError");
    Py_DECREF(mod);
    return cls;
}

void
raise_layout(const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    PyObject *cls = layout_error_type();
    if (cls != NULL) {
        PyErr_SetString(cls, msg);
        Py_DECREF(cls);
    }
}

/* The one blocking pattern: sleep on `word` while it holds `expected`, with
 * the GIL released; on EINTR run Python's signal handlers (so Ctrl-C raises
 * KeyboardInterrupt) and retry with the remaining time.  Returns 1 when
 * woken or the word changed, 0 on timeout, -1 with an exception set.
 * timeout < 0 means forever.  Call with the GIL held. */
static int
futex_wait_gil(void *word, uint32_t expected, double timeout)
{
    /* Beyond ~30 years is forever (and keeps the conversion below defined). */
    int64_t deadline = (timeout < 0 || timeout > 1e9 || timeout != timeout) ? -1 : now_ns() + (int64_t)(timeout * 1e9);
    for (;;) {
        struct timespec rel, *relp = NULL;
        if (deadline >= 0) {
            int64_t left = deadline - now_ns();
            if (left <= 0) {
                return 0;
            }
            rel.tv_sec = left / 1000000000LL;
            rel.tv_nsec = left % 1000000000LL;
            relp = &rel;
        }
        long rc;
        int err;
        Py_BEGIN_ALLOW_THREADS
        rc = futex_wait_raw(word, expected, relp);
        err = errno;
        Py_END_ALLOW_THREADS
        if (rc == 0) {
            return 1;
        }
        if (err == EAGAIN) {
            return 1; /* the word no longer held `expected` */
        }
        if (err == ETIMEDOUT) {
            return 0;
        }
        if (err == EINTR) {
            if (PyErr_CheckSignals() < 0) {
                return -1;
            }
            continue;
        }
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
}

/* ------------------------------------------------------------------ */
/* Module-level atomics on any writable buffer (header words, endpoint
 * table).  Each call checks offset and alignment against the buffer. */

void *
checked_word(Py_buffer *view, Py_ssize_t off, Py_ssize_t width)
{
    if (off < 0 || width > view->len || off > view->len - width) {
        raise_layout("offset %zd (+%zd) outside the mapping of %zd bytes", off, width, view->len);
        return NULL;
    }
    char *p = (char *)view->buf + off;
    if (((uintptr_t)p) % (uintptr_t)width != 0) {
        raise_layout("offset %zd is not %zd-byte aligned", off, width);
        return NULL;
    }
    return p;
}

int
get_writable(PyObject *obj, Py_buffer *view)
{
    return PyObject_GetBuffer(obj, view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS);
}

/* One parsed call of a word operation: the exported buffer, the checked
 * word address and up to two values. */
typedef struct {
    Py_buffer view;
    void *p;
    uint64_t v[2];
} word_call;

enum value_kind { UNSIGNED, DELTA };

/* Parses (buffer, offset, values...) for an operation on a `width`-byte word:
 * exactly 2 + nvalues arguments; UNSIGNED values must fit the width, a DELTA
 * may be negative (it wraps, as fetch_add does).  On success the caller owns
 * c->view and must release it. */
static int
word_args(PyObject *const *args, Py_ssize_t nargs, const char *name, Py_ssize_t width, int nvalues,
          enum value_kind kind, word_call *c)
{
    if (nargs != 2 + nvalues) {
        PyErr_Format(PyExc_TypeError, "%s() takes %d arguments (%zd given)", name, 2 + nvalues, nargs);
        return -1;
    }
    Py_ssize_t off = PyLong_AsSsize_t(args[1]);
    if (off == -1 && PyErr_Occurred()) return -1;
    for (int i = 0; i < nvalues; i++) {
        PyObject *obj = args[2 + i];
        if (kind == DELTA) {
            long long d = PyLong_AsLongLong(obj);
            if (d == -1 && PyErr_Occurred()) return -1;
            if (width == 4 && (d < INT32_MIN || d > (long long)UINT32_MAX)) goto overflow;
            c->v[i] = (uint64_t)d;
        }
        else {
            unsigned long long u = PyLong_AsUnsignedLongLong(obj);
            if (u == (unsigned long long)-1 && PyErr_Occurred()) return -1;
            if (width == 4 && u > UINT32_MAX) goto overflow;
            c->v[i] = u;
        }
    }
    if (get_writable(args[0], &c->view) < 0) return -1;
    c->p = checked_word(&c->view, off, width);
    if (c->p == NULL) {
        PyBuffer_Release(&c->view);
        return -1;
    }
    return 0;
overflow:
    PyErr_Format(PyExc_OverflowError, "%s(): value does not fit in %zd bits", name, width * 8);
    return -1;
}

static PyObject *
core_load64(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
    word_call c;
    if (word_args(args, nargs, "load64", 8, 0, UNSIGNED, &c) < 0) return NULL;
    /* SYNC POINT (acquire): pairs with the release writers of the same word
     * (store64, cas64, fetch_add64); what they wrote before is visible now. */
    uint64_t v = atomic_load_explicit((a64 *)c.p, memory_order_acquire);
    PyBuffer_Release(&c.view);
    return PyLong_FromUnsignedLongLong(v);
}

static PyObject *
core_load32(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
    word_call c;
    if (word_args(args, nargs, "load32", 4, 0, UNSIGNED, &c) < 0) return NULL;
    /* SYNC POINT (acquire): pairs with the release writers of this word. */
    uint32_t v = atomic_load_explicit((a32 *)c.p, memory_order_acquire);
    PyBuffer_Release(&c.view);
    return PyLong_FromUnsignedLong(v);
}

/* load64_many(buf, off, count) -> list of count words, each acquire-loaded:
 * one call for a whole table scan instead of one per word. */
static PyObject *
core_load64_many(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
    word_call c;
    if (word_args(args, nargs, "load64_many", 8, 1, UNSIGNED, &c) < 0) return NULL;
    Py_ssize_t off = (char *)c.p - (char *)c.view.buf;
    if (c.v[0] > (uint64_t)(c.view.len - off) / 8) {
        PyBuffer_Release(&c.view);
        raise_layout("%llu words at offset %zd run past the mapping of %zd bytes", (unsigned long long)c.v[0], off,
                     c.view.len);
        return NULL;
    }
    Py_ssize_t count = (Py_ssize_t)c.v[0];
    PyObject *out = PyList_New(count);
    for (Py_ssize_t i = 0; out != NULL && i < count; i++) {
        /* SYNC POINT (acquire): as load64, word by word (a scan, not a
         * snapshot: callers CAS on the exact word they saw). */
        PyObject *item = PyLong_FromUnsignedLongLong(atomic_load_explicit((a64 *)c.p + i, memory_order_acquire));
        if (item == NULL) {
            Py_CLEAR(out);
            break;
        }
        PyList_SET_ITEM(out, i, item);
    }
    PyBuffer_Release(&c.view);
    return out;
}

static PyObject *
core_store64(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
    word_call c;
    if (word_args(args, nargs, "store64", 8, 1, UNSIGNED, &c) < 0) return NULL;
    /* SYNC POINT (release): pairs with load64's acquire; earlier writes
     * (e.g. an endpoint's start time) are visible to whoever sees the value. */
    atomic_store_explicit((a64 *)c.p, c.v[0], memory_order_release);
    PyBuffer_Release(&c.view);
    Py_RETURN_NONE;
}

static PyObject *
core_store32(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
    word_call c;
    if (word_args(args, nargs, "store32", 4, 1, UNSIGNED, &c) < 0) return NULL;
    /* SYNC POINT (release): pairs with load32's acquire. */
    atomic_store_explicit((a32 *)c.p, (uint32_t)c.v[0], memory_order_release);
    PyBuffer_Release(&c.view);
    Py_RETURN_NONE;
}

static PyObject *
core_cas64(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
    word_call c;
    if (word_args(args, nargs, "cas64", 8, 2, UNSIGNED, &c) < 0) return NULL;
    uint64_t seen = c.v[0];
    /* SYNC POINT (seq_cst): claiming or reaping an endpoint entry must be
     * totally ordered with the counters it guards (see fetch_add32). */
    atomic_compare_exchange_strong_explicit((a64 *)c.p, &seen, c.v[1], memory_order_seq_cst, memory_order_seq_cst);
    PyBuffer_Release(&c.view);
    /* Returns the value seen: success iff it equals the expected value. */
    return PyLong_FromUnsignedLongLong(seen);
}

static PyObject *
core_cas32(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
    word_call c;
    if (word_args(args, nargs, "cas32", 4, 2, UNSIGNED, &c) < 0) return NULL;
    uint32_t seen = (uint32_t)c.v[0];
    /* SYNC POINT (seq_cst): as cas64. */
    atomic_compare_exchange_strong_explicit((a32 *)c.p, &seen, (uint32_t)c.v[1], memory_order_seq_cst,
                                            memory_order_seq_cst);
    PyBuffer_Release(&c.view);
    return PyLong_FromUnsignedLong(seen);
}

static PyObject *
core_fetch_add64(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
    word_call c;
    if (word_args(args, nargs, "fetch_add64", 8, 1, DELTA, &c) < 0) return NULL;
    /* SYNC POINT (seq_cst): counters of live endpoints are read by peers
     * deciding EOF/EPIPE; seq_cst orders them with the index loads there. */
    uint64_t old = atomic_fetch_add_explicit((a64 *)c.p, c.v[0], memory_order_seq_cst);
    PyBuffer_Release(&c.view);
    return PyLong_FromUnsignedLongLong(old);
}

static PyObject *
core_fetch_add32(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
    word_call c;
    if (word_args(args, nargs, "fetch_add32", 4, 1, DELTA, &c) < 0) return NULL;
    /* SYNC POINT (seq_cst): as fetch_add64. */
    uint32_t old = atomic_fetch_add_explicit((a32 *)c.p, (uint32_t)c.v[0], memory_order_seq_cst);
    PyBuffer_Release(&c.view);
    return PyLong_FromUnsignedLong(old);
}

/* futex_wait(buf, off, expected, timeout): timeout None waits forever. */
static PyObject *
core_futex_wait(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_Format(PyExc_TypeError, "futex_wait() takes 4 arguments (%zd given)", nargs);
        return NULL;
    }
    double timeout = -1.0;
    if (args[3] != Py_None) {
        timeout = PyFloat_AsDouble(args[3]);
        if (timeout == -1.0 && PyErr_Occurred()) return NULL;
        if (!(timeout >= 0)) {
            PyErr_SetString(PyExc_ValueError, "timeout must be non-negative or None");
            return NULL;
        }
    }
    word_call c;
    if (word_args(args, 3, "futex_wait", 4, 1, UNSIGNED, &c) < 0) return NULL;
    /* The buffer stays exported (and so mapped) for the whole wait. */
    int rc = futex_wait_gil(c.p, (uint32_t)c.v[0], timeout);
    PyBuffer_Release(&c.view);
    if (rc < 0) return NULL;
    return PyBool_FromLong(rc);
}

static PyObject *
core_futex_wake(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
    word_call c;
    if (word_args(args, nargs, "futex_wake", 4, 1, UNSIGNED, &c) < 0) return NULL;
    int n = c.v[0] > INT_MAX ? INT_MAX : (int)c.v[0];
    long rc = futex_wake_raw(c.p, n);
    PyBuffer_Release(&c.view);
    if (rc < 0) return PyErr_SetFromErrno(PyExc_OSError);
    return PyLong_FromLong(rc);
}


static PyObject *str_put_slow, *str_get_slow, *str_safe;

#define W64(r, k) SPSC_W64(&(r)->q, k)
#define W32(r, k) SPSC_W32(&(r)->q, k)

static void
ring_release_buffer(SpscRing *r)
{
    semring_close(r);
    if (r->bound) {
        r->bound = 0;
        r->q.base = NULL;
        r->q.data = NULL;
        PyBuffer_Release(&r->view);
    }
}

void
ring_end_inflight(SpscRing *r)
{
    r->inflight--;
    if (r->closing && r->inflight == 0) {
        ring_release_buffer(r);
    }
}

int
ring_check_open(SpscRing *r)
{
    if (!r->bound || r->closing || r->refusing) {
        PyErr_SetString(PyExc_ValueError, "ring is closed");
        return -1;
    }
    return 0;
}

static void
ring_dealloc(SpscRing *r)
{
    PyTypeObject *tp = Py_TYPE(r);
    PyObject_GC_UnTrack(r);
    ring_release_buffer(r);
    Py_CLEAR(r->descr);
    tp->tp_free((PyObject *)r);
}

static int
ring_traverse(SpscRing *r, visitproc visit, void *arg)
{
    if (r->bound) {
        Py_VISIT(r->view.obj);
    }
    return 0;
}

static PyObject *
ring_bind(SpscRing *r, PyObject *args)
{
    PyObject *buffer, *dtype_obj, *shape_obj, *offsets;
    unsigned long long capacity;
    Py_ssize_t slot_size, data_off, seq_off = 0;
    if (!PyArg_ParseTuple(args, "OKnnOOO|n:_bind", &buffer, &capacity, &slot_size, &data_off, &dtype_obj,
                          &shape_obj, &offsets, &seq_off)) {
        return NULL;
    }
    if (r->bound) {
        PyErr_SetString(PyExc_RuntimeError, "ring is already bound");
        return NULL;
    }
    PyArray_Descr *descr = NULL;
    if (!PyArray_DescrConverter(dtype_obj, &descr)) {
        return NULL;
    }
    if (PyDataType_REFCHK(descr)) {
        Py_DECREF(descr);
        PyErr_SetString(PyExc_TypeError, "dtypes holding Python objects cannot live in shared memory");
        return NULL;
    }
    PyObject *shape_seq = PySequence_Fast(shape_obj, "shape must be a sequence");
    if (shape_seq == NULL) {
        Py_DECREF(descr);
        return NULL;
    }
    Py_ssize_t ndim = PySequence_Fast_GET_SIZE(shape_seq);
    if (ndim >= NPY_MAXDIMS) {
        Py_DECREF(shape_seq);
        Py_DECREF(descr);
        PyErr_SetString(PyExc_ValueError, "too many dimensions");
        return NULL;
    }
    size_t expect_slot = (size_t)PyDataType_ELSIZE(descr);
    for (Py_ssize_t i = 0; i < ndim; i++) {
        Py_ssize_t d = PyLong_AsSsize_t(PySequence_Fast_GET_ITEM(shape_seq, i));
        if (d < 0) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "negative dimension");
            Py_DECREF(shape_seq);
            Py_DECREF(descr);
            return NULL;
        }
        r->shape[i] = d;
        if (d != 0 && expect_slot > SIZE_MAX / (size_t)d) {
            expect_slot = 0; /* overflow: rejected below */
            break;
        }
        expect_slot *= (size_t)d;
    }
    Py_DECREF(shape_seq);
    if (slot_size <= 0 || (size_t)slot_size != expect_slot) {
        Py_DECREF(descr);
        raise_layout("slot size %zd does not match dtype and shape", slot_size);
        return NULL;
    }
    if (capacity == 0 || capacity > ((uint64_t)1 << 48)) {
        Py_DECREF(descr);
        raise_layout("capacity %llu out of range", capacity);
        return NULL;
    }
    PyObject *offs = PySequence_Fast(offsets, "offsets must be a sequence");
    if (offs == NULL) {
        Py_DECREF(descr);
        return NULL;
    }
    if (PySequence_Fast_GET_SIZE(offs) != N_OFFSETS) {
        Py_DECREF(offs);
        Py_DECREF(descr);
        PyErr_Format(PyExc_ValueError, "expected %d offsets", (int)N_OFFSETS);
        return NULL;
    }
    Py_ssize_t off[N_OFFSETS];
    for (int i = 0; i < N_OFFSETS; i++) {
        off[i] = PyLong_AsSsize_t(PySequence_Fast_GET_ITEM(offs, i));
        if (off[i] == -1 && PyErr_Occurred()) {
            Py_DECREF(offs);
            Py_DECREF(descr);
            return NULL;
        }
    }
    Py_DECREF(offs);

    if (get_writable(buffer, &r->view) < 0) {
        Py_DECREF(descr);
        return NULL;
    }
    for (int i = 0; i < N_OFFSETS; i++) {
        if (checked_word(&r->view, off[i], offset_width[i]) == NULL) {
            goto fail;
        }
        /* Index words must not overlap the slots they guard. */
        if (off[i] + offset_width[i] > data_off) {
            raise_layout("header word at %zd overlaps the data area at %zd", off[i], data_off);
            goto fail;
        }
        r->q.off[i] = off[i];
    }
    if (data_off < 0 || data_off > r->view.len ||
        capacity > (uint64_t)(r->view.len - data_off) / (uint64_t)slot_size) {
        raise_layout("data area (%llu slots of %zd bytes at %zd) exceeds the mapping of %zd bytes",
                     capacity, slot_size, data_off, r->view.len);
        goto fail;
    }
    r->q.base = (char *)r->view.buf;
    r->q.data = r->q.base + data_off;
    r->q.capacity = capacity;
    r->q.slot_size = (size_t)slot_size;
    r->multi = 0;
    if (seq_off != 0 && mring_bind(r, seq_off, data_off) < 0) goto fail;
    r->ndim = (int)ndim;
    Py_XSETREF(r->descr, descr);
    r->bound = 1;
    r->closing = 0;
    r->refusing = 0;
    r->role = 0;
    Py_RETURN_NONE;
fail:
    PyBuffer_Release(&r->view);
    Py_DECREF(descr);
    return NULL;
}

/* _refuse(): close() has begun.  Every call that would start an operation
 * now raises "ring is closed" (a thread blocked in put or get included, at
 * its next step); one already copying without the GIL finishes. */
static PyObject *
ring_refuse(SpscRing *r, PyObject *unused)
{
    r->refusing = 1;
    Py_RETURN_NONE;
}

static PyObject *
ring_release(SpscRing *r, PyObject *unused)
{
    r->closing = 1;
    if (r->inflight == 0) {
        ring_release_buffer(r);
    }
    Py_RETURN_NONE;
}

/* _after_fork(): in a fork child, forget every per-handle transient state.
 * A thread of the parent that was copying without the GIL, sleeping in a
 * wait or holding a reserve()/borrow() view does not exist here, so nothing
 * would ever clear its flags: close() would wait for it forever. */
static PyObject *
ring_after_fork(SpscRing *r, PyObject *unused)
{
    r->put_busy = 0;
    r->get_busy = 0;
    r->views = 0;
    r->role = 0;
    r->inflight = 0;
    r->next_liveness_ns = 0;
    /* The parent's endpoint entries (and their announcements) are not ours. */
    memset(r->claim, 0, sizeof r->claim);
    semring_after_fork(r);
    if (r->closing) {
        ring_release_buffer(r);
    }
    Py_RETURN_NONE;
}

/* The protocol's checks, raising LayoutError for the indices refused. */
static int
raise_span(SpscRing *r)
{
    raise_layout("corrupt ring indices: head=%llu tail=%llu capacity=%llu", (unsigned long long)r->q.fault_head,
                 (unsigned long long)r->q.fault_tail, (unsigned long long)r->q.capacity);
    return -1;
}

static int
ring_producer_space(SpscRing *r, uint64_t head, uint64_t want, uint64_t *space)
{
    return spsc_producer_space(&r->q, head, want, space) < 0 ? raise_span(r) : 0;
}

static int
ring_consumer_avail(SpscRing *r, uint64_t tail, uint64_t want, uint64_t *avail)
{
    return spsc_consumer_avail(&r->q, tail, want, avail) < 0 ? raise_span(r) : 0;
}

static int
item_is_exact(SpscRing *r, PyObject *item, int batch)
{
    if (!PyArray_Check(item)) return 0;
    PyArrayObject *a = (PyArrayObject *)item;
    if (PyArray_NDIM(a) != r->ndim + batch) return 0;
    if (!PyArray_IS_C_CONTIGUOUS(a)) return 0;
    if (PyArray_DESCR(a) != r->descr && !PyArray_EquivTypes(PyArray_DESCR(a), r->descr)) return 0;
    npy_intp *dims = PyArray_DIMS(a) + batch;
    for (int i = 0; i < r->ndim; i++) {
        if (dims[i] != r->shape[i]) return 0;
    }
    return 1;
}

/* Try to put n items (contiguous, exact) from src; returns how many went in
 * (0 when full) or -1 on error. */
Py_ssize_t
ring_try_put_raw(SpscRing *r, const char *src, uint64_t n)
{
    if (r->multi) return mring_try_put_raw(r, src, n);
    /* Relaxed: head is written only by this (the producing) side. */
    uint64_t head = atomic_load_explicit(W64(r, OFF_HEAD), memory_order_relaxed);
    uint64_t space;
    if (ring_producer_space(r, head, n, &space) < 0) return -1;
    if (space == 0) return 0;
    uint64_t k = n < space ? n : space;
    size_t bytes = (size_t)k * r->q.slot_size;
    inject_delay();
    if (bytes >= NOGIL_COPY_BYTES) {
        r->inflight++;
        r->put_busy = 1;
        Py_BEGIN_ALLOW_THREADS
        spsc_produce(&r->q, head, src, k);
        Py_END_ALLOW_THREADS
        r->put_busy = 0;
        ring_end_inflight(r);
    }
    else {
        spsc_produce(&r->q, head, src, k);
    }
    return (Py_ssize_t)k;
}

/* A new array for k items: the item's shape, with a leading axis of k when
 * batch (else k is 1). */
PyObject *
ring_new_items(SpscRing *r, uint64_t k, int batch)
{
    npy_intp dims[NPY_MAXDIMS];
    int nd = r->ndim + batch;
    if (batch) dims[0] = (npy_intp)k;
    memcpy(dims + batch, r->shape, sizeof(npy_intp) * (size_t)r->ndim);
    Py_INCREF(r->descr);
    return PyArray_NewFromDescr(&PyArray_Type, r->descr, nd, dims, NULL, NULL, 0, NULL);
}

/* Take up to max items into a new array (batch adds the leading axis).
 * Returns the array, Py_None (borrowed, not increfed) when empty, or NULL. */
PyObject *
ring_try_get_raw(SpscRing *r, uint64_t max, int batch)
{
    if (r->multi) return mring_try_get_raw(r, max, batch);
    /* Relaxed: tail is written only by this (the consuming) side. */
    uint64_t tail = atomic_load_explicit(W64(r, OFF_TAIL), memory_order_relaxed);
    uint64_t avail;
    /* Ask for max: a batch takes everything ready, not just what the cached
     * head promised. */
    if (ring_consumer_avail(r, tail, max, &avail) < 0) return NULL;
    if (avail == 0) return Py_None;
    uint64_t k = avail < max ? avail : max;
    PyObject *out = ring_new_items(r, k, batch);
    if (out == NULL) return NULL;
    char *dst = PyArray_BYTES((PyArrayObject *)out);
    size_t bytes = (size_t)k * r->q.slot_size;
    if (bytes >= NOGIL_COPY_BYTES) {
        r->inflight++;
        r->get_busy = 1;
        Py_BEGIN_ALLOW_THREADS
        spsc_copy_out(&r->q, tail, dst, k);
        inject_delay();
        spsc_publish_tail(&r->q, tail + k);
        Py_END_ALLOW_THREADS
        r->get_busy = 0;
        ring_end_inflight(r);
    }
    else {
        spsc_copy_out(&r->q, tail, dst, k);
        inject_delay();
        spsc_publish_tail(&r->q, tail + k);
    }
    return out;
}

/* Argument parsing for put/get(block=True, timeout=None) without the
 * overhead of the generic parser on the common positional call. */
int
parse_call(const char *fname, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, int npos, int nkwonly,
           const char *const *names, PyObject **out)
{
    int npositional = npos + 2, nparams = npositional + nkwonly;
    for (int i = 0; i < nparams; i++) out[i] = NULL;
    if (nargs > npositional) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most %d positional arguments (%zd given)", fname,
                     npositional, nargs);
        return -1;
    }
    for (Py_ssize_t i = 0; i < nargs; i++) out[i] = args[i];
    if (kwnames != NULL) {
        Py_ssize_t nkw = PyTuple_GET_SIZE(kwnames);
        for (Py_ssize_t j = 0; j < nkw; j++) {
            PyObject *key = PyTuple_GET_ITEM(kwnames, j);
            int found = -1;
            for (int i = 0; i < nparams; i++) {
                if (PyUnicode_CompareWithASCIIString(key, names[i]) == 0) {
                    found = i;
                    break;
                }
            }
            if (found < 0) {
                PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%U'", fname, key);
                return -1;
            }
            if (out[found] != NULL) {
                PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument '%s'", fname,
                             names[found]);
                return -1;
            }
            out[found] = args[nargs + j];
        }
    }
    for (int i = 0; i < npos; i++) {
        if (out[i] == NULL) {
            PyErr_Format(PyExc_TypeError, "%s() missing required argument '%s'", fname, names[i]);
            return -1;
        }
    }
    if (out[npos] == NULL) out[npos] = Py_True;
    if (out[npos + 1] == NULL) out[npos + 1] = Py_None;
    return 0;
}

static int
consumers_gone(SpscRing *r)
{
    /* Relaxed then seq_cst: a consumer that registered or left is published
     * by its seq_cst update of these words (_endpoints.py). */
    return atomic_load_explicit(W32(r, OFF_CONSUMERS_EVER), memory_order_relaxed) != 0 &&
           atomic_load_explicit(W32(r, OFF_CONSUMERS_LIVE), memory_order_seq_cst) == 0;
}

double
parse_timeout(PyObject *obj)
{
    if (obj == Py_None) return -1.0;
    double t = PyFloat_AsDouble(obj);
    if (t == -1.0 && PyErr_Occurred()) return -2.0;
    if (t < 0 || t != t) {
        PyErr_SetString(PyExc_ValueError, "timeout must be a non-negative number or None");
        return -2.0;
    }
    return t;
}

/* How often a steady stream of fast-path puts detours through the slow path,
 * which checks that a consumer is still alive (DESIGN: a dead peer is noticed
 * within about a second, not only once the ring is full). */
#define LIVENESS_NS 100000000LL

static int
timeout_ok(PyObject *timeout)
{
    return timeout == Py_None || parse_timeout(timeout) > -1.5;
}

/* numpy's casting names; any of them lets an exact item through unchanged. */
static int
casting_known(PyObject *casting)
{
    static const char *const known[] = {"safe", "same_kind", "unsafe", "equiv", "no"};
    if (casting == NULL) return 1;
    if (!PyUnicode_Check(casting)) return 0;
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
        if (PyUnicode_CompareWithASCIIString(casting, known[i]) == 0) return 1;
    }
    return 0;
}

/* casting: NULL when not given ("safe"). */
static PyObject *
put_common(SpscRing *r, PyObject *item, PyObject *block, PyObject *timeout, PyObject *casting)
{
    if (!timeout_ok(timeout)) return NULL;
    if (r->bound && !r->closing && (r->role & ROLE_PRODUCER) && !(r->views & ROLE_PRODUCER) && !r->put_busy &&
        item_is_exact(r, item, 0) && casting_known(casting) && !consumers_gone(r)) {
        int64_t t = now_ns();
        if (t >= r->next_liveness_ns) {
            r->next_liveness_ns = t + LIVENESS_NS;
            goto slow;
        }
        const char *src = PyArray_BYTES((PyArrayObject *)item);
        Py_ssize_t n = r->semf != NULL ? semring_put_fast(r, src) : ring_try_put_raw(r, src, 1);
        if (n < 0) return NULL;
        if (n == 1) Py_RETURN_NONE;
    }
slow:
    /* Full, first use, a peer gone, time to check peers, or an item needing
     * conversion (or a casting value to refuse). */
    return PyObject_CallMethodObjArgs((PyObject *)r, str_put_slow, item, block, timeout,
                                      casting == NULL ? str_safe : casting, NULL);
}

static PyObject *
get_common(SpscRing *r, PyObject *block, PyObject *timeout)
{
    if (!timeout_ok(timeout)) return NULL;
    if (r->bound && !r->closing && (r->role & ROLE_CONSUMER) && !(r->views & ROLE_CONSUMER) && !r->get_busy) {
        PyObject *out = r->semf != NULL ? semring_get_fast(r) : ring_try_get_raw(r, 1, 0);
        if (out != Py_None) return out;
    }
    return PyObject_CallMethodObjArgs((PyObject *)r, str_get_slow, block, timeout, NULL);
}

static PyObject *
ring_put(SpscRing *r, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"item", "block", "timeout", "casting"};
    PyObject *a[4];
    if (kwnames == NULL && nargs == 1) {
        return put_common(r, args[0], Py_True, Py_None, NULL);
    }
    if (parse_call("put", args, nargs, kwnames, 1, 1, names, a) < 0) return NULL;
    return put_common(r, a[0], a[1], a[2], a[3]);
}

static PyObject *
ring_put_nowait(SpscRing *r, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (kwnames == NULL && nargs == 1) {
        return put_common(r, args[0], Py_False, Py_None, NULL);
    }
    /* put_nowait(item, *, casting): reuse the parser, refusing block/timeout. */
    static const char *const names[] = {"item", "", "", "casting"};
    PyObject *a[4];
    if (nargs > 1) {
        PyErr_Format(PyExc_TypeError, "put_nowait() takes 1 positional argument (%zd given)", nargs);
        return NULL;
    }
    if (parse_call("put_nowait", args, nargs, kwnames, 1, 1, names, a) < 0) return NULL;
    return put_common(r, a[0], Py_False, Py_None, a[3]);
}

static PyObject *
ring_get(SpscRing *r, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"block", "timeout"};
    PyObject *a[2];
    if (kwnames == NULL && nargs == 0) {
        return get_common(r, Py_True, Py_None);
    }
    if (parse_call("get", args, nargs, kwnames, 0, 0, names, a) < 0) return NULL;
    return get_common(r, a[0], a[1]);
}

static PyObject *
ring_get_nowait(SpscRing *r, PyObject *unused)
{
    return get_common(r, Py_False, Py_None);
}

int
check_producer_call(SpscRing *r, int ends_view)
{
    if (ring_check_open(r) < 0) return -1;
    if (ends_view && !(r->views & ROLE_PRODUCER)) {
        /* E.g. a fork child leaving the parent's reserve() block: not its slot. */
        PyErr_SetString(PyExc_RuntimeError, "no reserve() block of this handle is open in this process");
        return -1;
    }
    if ((r->views & ROLE_PRODUCER) && !ends_view) {
        PyErr_SetString(PyExc_RuntimeError, "a reserve() block is open on this handle: finish it first");
        return -1;
    }
    if (r->put_busy) {
        PyErr_SetString(PyExc_RuntimeError,
                        r->multi ? "this handle is producing from another thread; give each producing thread "
                                   "its own handle (Ring.attach)"
                                 : "this handle is producing from another thread; a single-producer ring "
                                   "takes one producing thread");
        return -1;
    }
    return 0;
}

int
check_consumer_call(SpscRing *r, int ends_view)
{
    if (ring_check_open(r) < 0) return -1;
    if (ends_view && !(r->views & ROLE_CONSUMER)) {
        PyErr_SetString(PyExc_RuntimeError, "no borrow() block of this handle is open in this process");
        return -1;
    }
    if ((r->views & ROLE_CONSUMER) && !ends_view) {
        PyErr_SetString(PyExc_RuntimeError, "a borrow() block is open on this handle: finish it first");
        return -1;
    }
    if (r->get_busy) {
        PyErr_SetString(PyExc_RuntimeError,
                        r->multi ? "this handle is consuming from another thread; give each consuming thread "
                                   "its own handle (Ring.attach)"
                                 : "this handle is consuming from another thread; a single-consumer ring "
                                   "takes one consuming thread");
        return -1;
    }
    return 0;
}

/* _try_put_many(items, start): items is a C-contiguous (n, *shape) array of
 * the ring's dtype; puts items[start:] as far as they fit. */
static PyObject *
ring_try_put_many(SpscRing *r, PyObject *args)
{
    PyObject *items;
    Py_ssize_t start;
    if (!PyArg_ParseTuple(args, "On:_try_put_many", &items, &start)) return NULL;
    if (check_producer_call(r, 0) < 0) return NULL;
    if (!item_is_exact(r, items, 1)) {
        PyErr_SetString(PyExc_TypeError, "_try_put_many needs a C-contiguous (n, *shape) array of the ring's dtype");
        return NULL;
    }
    npy_intp n = PyArray_DIMS((PyArrayObject *)items)[0];
    if (start < 0 || start > n) {
        PyErr_SetString(PyExc_ValueError, "start out of range");
        return NULL;
    }
    if (start == n) return PyLong_FromLong(0);
    const char *src = PyArray_BYTES((PyArrayObject *)items) + (size_t)start * r->q.slot_size;
    Py_ssize_t k = ring_try_put_raw(r, src, (uint64_t)(n - start));
    if (k < 0) return NULL;
    return PyLong_FromSsize_t(k);
}

static PyObject *
ring_try_put(SpscRing *r, PyObject *item)
{
    if (check_producer_call(r, 0) < 0) return NULL;
    if (!item_is_exact(r, item, 0)) {
        PyErr_SetString(PyExc_TypeError, "_try_put needs a C-contiguous array of the ring's shape and dtype");
        return NULL;
    }
    Py_ssize_t k = ring_try_put_raw(r, PyArray_BYTES((PyArrayObject *)item), 1);
    if (k < 0) return NULL;
    return PyBool_FromLong(k);
}

static PyObject *
ring_try_get(SpscRing *r, PyObject *unused)
{
    if (check_consumer_call(r, 0) < 0) return NULL;
    PyObject *out = ring_try_get_raw(r, 1, 0);
    if (out == Py_None) Py_RETURN_NONE;
    return out;
}

Py_ssize_t
parse_max_items(PyObject *arg)
{
    Py_ssize_t max = PyLong_AsSsize_t(arg);
    if (max == -1 && PyErr_Occurred()) return -1;
    if (max < 1) {
        PyErr_SetString(PyExc_ValueError, "max_items must be at least 1");
        return -1;
    }
    return max;
}

static PyObject *
ring_try_get_many(SpscRing *r, PyObject *arg)
{
    Py_ssize_t max = parse_max_items(arg);
    if (max < 0) return NULL;
    if (check_consumer_call(r, 0) < 0) return NULL;
    PyObject *out = ring_try_get_raw(r, (uint64_t)max, 1);
    if (out == Py_None) Py_RETURN_NONE;
    return out;
}

/* _write_claim() -> index (0..capacity-1) of the next free slot, or -1 when
 * full.  On success the reserve() view counts as open (set here, so that no
 * Python-level interruption can leave a claimed slot unaccounted for). */
static PyObject *
ring_write_claim(SpscRing *r, PyObject *unused)
{
    if (check_producer_call(r, 0) < 0) return NULL;
    if (r->multi) return mring_write_claim(r);
    uint64_t head = atomic_load_explicit(W64(r, OFF_HEAD), memory_order_relaxed);
    uint64_t space;
    if (ring_producer_space(r, head, 1, &space) < 0) return NULL;
    if (space == 0) return PyLong_FromLong(-1);
    r->views |= ROLE_PRODUCER;
    return PyLong_FromUnsignedLongLong(head % r->q.capacity);
}

/* _write_publish(): publish the slot returned by _write_claim. */
static PyObject *
ring_write_publish(SpscRing *r, PyObject *unused)
{
    if (check_producer_call(r, 1) < 0) return NULL;
    if (r->multi) return mring_write_finish(r, 0);
    uint64_t head = atomic_load_explicit(W64(r, OFF_HEAD), memory_order_relaxed);
    uint64_t space;
    if (ring_producer_space(r, head, 1, &space) < 0) return NULL;
    if (space == 0) {
        raise_layout("publishing a reserved slot into a full ring: the header was changed under us");
        return NULL;
    }
    inject_delay();
    spsc_publish_head(&r->q, head + 1);
    Py_RETURN_NONE;
}

/* _write_abort(): the reserve() block raised.  A single producer simply does
 * not publish; in a multi-producer ring the slot is claimed already, and is
 * published as a hole that consumers skip. */
static PyObject *
ring_write_abort(SpscRing *r, PyObject *unused)
{
    if (check_producer_call(r, 1) < 0) return NULL;
    if (r->multi) return mring_write_finish(r, 1);
    Py_RETURN_NONE;
}

/* _read_peek(max_items) -> (slot index, count) of the oldest contiguous run
 * of ready items (count 0 when empty); the run never wraps.  When count > 0
 * the borrow() view counts as open. */
static PyObject *
ring_read_peek(SpscRing *r, PyObject *arg)
{
    Py_ssize_t max = PyLong_AsSsize_t(arg);
    if (max == -1 && PyErr_Occurred()) return NULL;
    if (max < 1) {
        PyErr_SetString(PyExc_ValueError, "max_items must be at least 1");
        return NULL;
    }
    if (check_consumer_call(r, 0) < 0) return NULL;
    if (r->multi) return mring_read_peek(r, (uint64_t)max);
    uint64_t tail = atomic_load_explicit(W64(r, OFF_TAIL), memory_order_relaxed);
    uint64_t avail;
    if (ring_consumer_avail(r, tail, (uint64_t)max, &avail) < 0) return NULL;
    uint64_t slot = tail % r->q.capacity;
    uint64_t k = avail < (uint64_t)max ? avail : (uint64_t)max;
    if (k > r->q.capacity - slot) k = r->q.capacity - slot;
    if (k > 0) r->views |= ROLE_CONSUMER;
    return Py_BuildValue("KK", (unsigned long long)slot, (unsigned long long)k);
}

/* _read_release(count): consume count items seen by _read_peek. */
static PyObject *
ring_read_release(SpscRing *r, PyObject *arg)
{
    Py_ssize_t n = PyLong_AsSsize_t(arg);
    if (n == -1 && PyErr_Occurred()) return NULL;
    if (check_consumer_call(r, 1) < 0) return NULL;
    if (r->multi) return mring_read_release(r, n);
    uint64_t tail = atomic_load_explicit(W64(r, OFF_TAIL), memory_order_relaxed);
    uint64_t avail;
    if (ring_consumer_avail(r, tail, (uint64_t)(n < 0 ? 0 : n), &avail) < 0) return NULL;
    if (n < 0 || (uint64_t)n > avail) {
        raise_layout("releasing %zd items but only %llu are ready: the header was changed under us", n,
                     (unsigned long long)avail);
        return NULL;
    }
    inject_delay();
    spsc_publish_tail(&r->q, tail + (uint64_t)n);
    Py_RETURN_NONE;
}

/* Sleep until the word `index` (a ring index, or a sequence word) no longer
 * equals `expected`, spinning briefly first; `waiters` counts this side's
 * sleepers.  Returns 1 (changed or woken), 0 (timeout) or -1. */
int
ring_wait_word(SpscRing *r, a64 *index, a32 *waiters, uint64_t expected, double timeout)
{
    int changed = 0;
    int64_t spin_until = now_ns() + (timeout >= 0 && timeout * 1e9 < SPIN_NS ? (int64_t)(timeout * 1e9) : SPIN_NS);
    r->inflight++;
    Py_BEGIN_ALLOW_THREADS
    /* Spin, then yield, then sleep.  A partner on another core usually
     * answers within a microsecond or two, far sooner than a futex round trip
     * through the scheduler; a partner sharing our core can only answer if
     * we give the core up, which sched_yield does (and it returns at once
     * when nothing else is runnable here). */
    for (unsigned i = 0;; i++) {
        /* SYNC POINT (acquire): pairs with the peer's release of this index;
         * the caller re-reads it through the normal path anyway. */
        if (atomic_load_explicit(index, memory_order_acquire) != expected) {
            changed = 1;
            break;
        }
        if (i < SPIN_PAUSES) {
            cpu_relax();
            continue;
        }
        if (now_ns() >= spin_until) break;
        sched_yield();
    }
    Py_END_ALLOW_THREADS
    if (changed) {
        ring_end_inflight(r);
        return 1;
    }
    /* SYNC POINT (seq_cst): announce the sleeper, then fence, then re-read the
     * index.  Pairs with the fence in wake_if_waiting (StoreLoad both ways). */
    uint32_t epoch = atomic_fetch_add_explicit(waiters, 1, memory_order_seq_cst) >> WAITERS_EPOCH_SHIFT;
    atomic_thread_fence(memory_order_seq_cst);
    int rc = 1;
    if (atomic_load_explicit(index, memory_order_relaxed) == expected) {
        double left = timeout;
        if (timeout >= 0) {
            left = timeout - (double)SPIN_NS / 1e9;
            if (left < 0) left = 0;
        }
        /* The kernel compares the low half with `expected` atomically with
         * going to sleep, so a publish between our check and the sleep makes
         * it return at once (EAGAIN). */
        rc = futex_wait_gil((char *)index + LOW_HALF, (uint32_t)expected, left);
    }
    waiters_leave(waiters, epoch);
    ring_end_inflight(r);
    return rc;
}

/* _wait_readable(timeout): sleep while the ring is empty. */
static PyObject *
ring_wait_readable(SpscRing *r, PyObject *arg)
{
    double timeout = parse_timeout(arg);
    if (timeout < -1.5) return NULL;
    if (ring_check_open(r) < 0) return NULL;
    int rc;
    if (r->multi) {
        rc = mring_wait(r, 1, timeout);
    }
    else {
        uint64_t tail = atomic_load_explicit(W64(r, OFF_TAIL), memory_order_relaxed);
        rc = ring_wait_word(r, W64(r, OFF_HEAD), W32(r, OFF_CONSUMER_WAITERS), tail, timeout);
    }
    if (rc < 0) return NULL;
    return PyBool_FromLong(rc);
}

/* _wait_writable(timeout): sleep while the ring is full. */
static PyObject *
ring_wait_writable(SpscRing *r, PyObject *arg)
{
    double timeout = parse_timeout(arg);
    if (timeout < -1.5) return NULL;
    if (ring_check_open(r) < 0) return NULL;
    int rc;
    if (r->multi) {
        rc = mring_wait(r, 0, timeout);
    }
    else {
        uint64_t head = atomic_load_explicit(W64(r, OFF_HEAD), memory_order_relaxed);
        rc = ring_wait_word(r, W64(r, OFF_TAIL), W32(r, OFF_PRODUCER_WAITERS), head - r->q.capacity, timeout);
    }
    if (rc < 0) return NULL;
    return PyBool_FromLong(rc);
}

/* _wake_all(): wake every sleeper on either index (a peer left). */
static PyObject *
ring_wake_all(SpscRing *r, PyObject *unused)
{
    if (!r->bound) Py_RETURN_NONE;
    /* SYNC POINT (seq_cst fence): the endpoint change our caller just made is
     * ordered before the wake, so a woken sleeper sees it. */
    atomic_thread_fence(memory_order_seq_cst);
    if (r->multi) {
        mring_wake_all(r);
    }
    else {
        futex_wake_raw(r->q.base + r->q.off[OFF_HEAD] + LOW_HALF, INT_MAX);
        futex_wake_raw(r->q.base + r->q.off[OFF_TAIL] + LOW_HALF, INT_MAX);
    }
    Py_RETURN_NONE;
}

/* _indices() -> (head, tail), both acquire-loaded, tail first so that
 * head - tail never goes negative when both sides are moving. */
static PyObject *
ring_indices(SpscRing *r, PyObject *unused)
{
    if (ring_check_open(r) < 0) return NULL;
    /* SYNC POINT (acquire): pairs with the consumer's release of tail. */
    uint64_t tail = atomic_load_explicit(W64(r, OFF_TAIL), memory_order_acquire);
    /* SYNC POINT (acquire): pairs with the producer's release of head. */
    uint64_t head = atomic_load_explicit(W64(r, OFF_HEAD), memory_order_acquire);
    return Py_BuildValue("KK", (unsigned long long)head, (unsigned long long)tail);
}

/* _qsize() -> items published and not yet consumed, validated like every
 * other index read: a snapshot in which tail did not move while head was
 * read satisfies 0 <= head - tail <= capacity, or the header is corrupt. */
static PyObject *
ring_qsize(SpscRing *r, PyObject *unused)
{
    if (ring_check_open(r) < 0) return NULL;
    uint64_t head = 0, tail = 0;
    for (int attempt = 0; attempt < 64; attempt++) {
        /* SYNC POINT (acquire) x3: pairs with the releases of tail and head;
         * tail, head, tail again: an unchanged tail brackets the head load. */
        tail = atomic_load_explicit(W64(r, OFF_TAIL), memory_order_acquire);
        head = atomic_load_explicit(W64(r, OFF_HEAD), memory_order_acquire);
        if (atomic_load_explicit(W64(r, OFF_TAIL), memory_order_acquire) == tail) {
            if (spsc_check_span(&r->q, head, tail) < 0) return raise_span(r), NULL;
            return PyLong_FromUnsignedLongLong(head - tail);
        }
    }
    /* The consumer kept moving: head was read after tail, so head - tail is
     * at least the true size; only a corrupt header makes it negative. */
    if (head < tail || head >= INDEX_LIMIT) {
        raise_layout("corrupt ring indices: head=%llu tail=%llu", (unsigned long long)head, (unsigned long long)tail);
        return NULL;
    }
    uint64_t n = head - tail;
    return PyLong_FromUnsignedLongLong(n > r->q.capacity ? r->q.capacity : n);
}

/* _role and _views: ROLE_* bitmasks kept in the struct; the getset closure
 * is the field's offset. */
static PyObject *
ring_get_bits(SpscRing *r, void *field)
{
    return PyLong_FromLong(*(int *)((char *)r + (size_t)field));
}

static int
ring_set_bits(SpscRing *r, PyObject *value, void *field)
{
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete this attribute");
        return -1;
    }
    long v = PyLong_AsLong(value);
    if (v == -1 && PyErr_Occurred()) return -1;
    *(int *)((char *)r + (size_t)field) = (int)(v & (ROLE_PRODUCER | ROLE_CONSUMER));
    return 0;
}

/* _busy: a copy is running without the GIL (close() waits for it). */
static PyObject *
ring_get_busy(SpscRing *r, void *unused)
{
    return PyBool_FromLong(r->put_busy || r->get_busy);
}

static PyObject *
ring_get_bound(SpscRing *r, void *unused)
{
    return PyBool_FromLong(r->bound && !r->closing);
}

static PyMethodDef ring_methods[] = {
    {"put", (PyCFunction)(void (*)(void))ring_put, METH_FASTCALL | METH_KEYWORDS,
     "put($self, /, item, block=True, timeout=None, *, casting='safe')\n--\n\n"
     "Copy item into the next slot, waiting for room while block is true (up to timeout seconds).\n"
     "Arrays are cast under numpy's casting rule (TypeError when refused); Python values by value."},
    {"put_nowait", (PyCFunction)(void (*)(void))ring_put_nowait, METH_FASTCALL | METH_KEYWORDS,
     "put_nowait($self, /, item, *, casting='safe')\n--\n\nput(item, block=False)."},
    {"get", (PyCFunction)(void (*)(void))ring_get, METH_FASTCALL | METH_KEYWORDS,
     "get($self, /, block=True, timeout=None)\n--\n\nRemove the oldest item and return a copy of it."},
    {"get_nowait", (PyCFunction)ring_get_nowait, METH_NOARGS, "get_nowait($self, /)\n--\n\nget(block=False)."},
    {"_bind", (PyCFunction)ring_bind, METH_VARARGS, NULL},
    {"_release", (PyCFunction)ring_release, METH_NOARGS, NULL},
    {"_refuse", (PyCFunction)ring_refuse, METH_NOARGS, NULL},
    {"_try_put", (PyCFunction)ring_try_put, METH_O, NULL},
    {"_try_put_many", (PyCFunction)ring_try_put_many, METH_VARARGS, NULL},
    {"_try_get", (PyCFunction)ring_try_get, METH_NOARGS, NULL},
    {"_try_get_many", (PyCFunction)ring_try_get_many, METH_O, NULL},
    {"_write_claim", (PyCFunction)ring_write_claim, METH_NOARGS, NULL},
    {"_write_publish", (PyCFunction)ring_write_publish, METH_NOARGS, NULL},
    {"_write_abort", (PyCFunction)ring_write_abort, METH_NOARGS, NULL},
    {"_read_peek", (PyCFunction)ring_read_peek, METH_O, NULL},
    {"_read_release", (PyCFunction)ring_read_release, METH_O, NULL},
    {"_wait_readable", (PyCFunction)ring_wait_readable, METH_O, NULL},
    {"_wait_writable", (PyCFunction)ring_wait_writable, METH_O, NULL},
    {"_wake_all", (PyCFunction)ring_wake_all, METH_NOARGS, NULL},
    {"_indices", (PyCFunction)ring_indices, METH_NOARGS, NULL},
    {"_qsize", (PyCFunction)ring_qsize, METH_NOARGS, NULL},
    {"_after_fork", (PyCFunction)ring_after_fork, METH_NOARGS, NULL},
    {"_set_claim", (PyCFunction)mring_set_claim, METH_VARARGS, NULL},
    {"_stuck", (PyCFunction)mring_stuck, METH_O, NULL},
    {"_repair", (PyCFunction)mring_repair, METH_VARARGS, NULL},
    {"_abandon_views", (PyCFunction)mring_py_abandon_views, METH_NOARGS, NULL},
    {"_sem_bind", (PyCFunction)semring_bind, METH_VARARGS, NULL},
    {"_q_bind", (PyCFunction)qring_bind, METH_VARARGS, NULL},
    {"_q_put", (PyCFunction)(void (*)(void))qring_put, METH_FASTCALL, NULL},
    {"_q_put_bytes_many", (PyCFunction)(void (*)(void))qring_put_bytes_many, METH_FASTCALL, NULL},
    {"_q_get", (PyCFunction)qring_get, METH_NOARGS, NULL},
    {"_q_get_many", (PyCFunction)qring_get_many, METH_O, NULL},
    {"_q_peek", (PyCFunction)qring_peek, METH_NOARGS, NULL},
    {"_q_end_loan", (PyCFunction)qring_end_loan, METH_NOARGS, NULL},
    {"_q_wait_room", (PyCFunction)(void (*)(void))qring_wait_room, METH_FASTCALL, NULL},
    {"_q_count", (PyCFunction)(void (*)(void))qring_count, METH_FASTCALL, NULL},
    {"_q_put_obj", (PyCFunction)(void (*)(void))qring_put_obj, METH_FASTCALL | METH_KEYWORDS,
     "put($self, /, obj, block=True, timeout=None)\n--\n\n"
     "Put obj (bytes, an ndarray, or anything picklable); waits for room unless block is\n"
     "false or timeout expires (queue.Full).  An object that cannot be pickled raises\n"
     "here, and nothing is put."},
    {"_q_put_nowait_obj", (PyCFunction)(void (*)(void))qring_put_nowait_obj, METH_FASTCALL | METH_KEYWORDS,
     "put_nowait($self, /, obj)\n--\n\nput(obj, block=False)."},
    {"_q_get_obj", (PyCFunction)(void (*)(void))qring_get_obj, METH_FASTCALL | METH_KEYWORDS,
     "get($self, /, block=True, timeout=None)\n--\n\n"
     "Remove and return the oldest message (arrays in it are private, writable copies).\n"
     "block=False or an expired timeout raises queue.Empty; an untimed get raises\n"
     "EOFError once every producer that ever put has closed or died and the queue is drained."},
    {"_q_get_nowait_obj", (PyCFunction)qring_get_nowait_obj, METH_NOARGS,
     "get_nowait($self, /)\n--\n\nget(block=False)."},
    {"_sem_identity", (PyCFunction)semring_set_identity, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef ring_getset[] = {
    {"_role", (getter)ring_get_bits, (setter)ring_set_bits, NULL, (void *)offsetof(SpscRing, role)},
    {"_views", (getter)ring_get_bits, (setter)ring_set_bits, NULL, (void *)offsetof(SpscRing, views)},
    {"_busy", (getter)ring_get_busy, NULL, NULL, NULL},
    {"_bound", (getter)ring_get_bound, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject SpscRingType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "shmring._core.SpscRing",
    .tp_basicsize = sizeof(SpscRing),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Hot paths of a ring (one or several producers and consumers); see shmring.Ring.",
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)ring_dealloc,
    .tp_traverse = (traverseproc)ring_traverse,
    .tp_methods = ring_methods,
    .tp_getset = ring_getset,
};

/* ------------------------------------------------------------------ */

static PyObject *
core_test_config(PyObject *m, PyObject *unused)
{
    /* In the order of enum broken_variant (_atomic.h); anything past it reads as "?". */
    static const char *const names[] = {"", "publish_before_copy", "relaxed_publish", "overwrite_unreleased",
                                        "skip_abandoned_check", "free_before_copy", "uncounted_take"};
    const char *name = (size_t)broken < sizeof names / sizeof names[0] ? names[broken] : "?";
    return Py_BuildValue("{s:s,s:I,s:I}", "broken", name, "delay_permille", delay_permille,
                         "delay_max_us", delay_max_us);
}

static PyMethodDef core_methods[] = {
    {"load64", (PyCFunction)(void (*)(void))core_load64, METH_FASTCALL, "load64(buf, off) -> int (acquire)"},
    {"load64_many", (PyCFunction)(void (*)(void))core_load64_many, METH_FASTCALL,
     "load64_many(buf, off, count) -> list[int] (each acquire)"},
    {"load32", (PyCFunction)(void (*)(void))core_load32, METH_FASTCALL, "load32(buf, off) -> int (acquire)"},
    {"store64", (PyCFunction)(void (*)(void))core_store64, METH_FASTCALL, "store64(buf, off, v) (release)"},
    {"store32", (PyCFunction)(void (*)(void))core_store32, METH_FASTCALL, "store32(buf, off, v) (release)"},
    {"cas64", (PyCFunction)(void (*)(void))core_cas64, METH_FASTCALL,
     "cas64(buf, off, expected, desired) -> value seen (seq_cst)"},
    {"cas32", (PyCFunction)(void (*)(void))core_cas32, METH_FASTCALL,
     "cas32(buf, off, expected, desired) -> value seen (seq_cst)"},
    {"fetch_add64", (PyCFunction)(void (*)(void))core_fetch_add64, METH_FASTCALL,
     "fetch_add64(buf, off, delta) -> old value (seq_cst, wraps)"},
    {"fetch_add32", (PyCFunction)(void (*)(void))core_fetch_add32, METH_FASTCALL,
     "fetch_add32(buf, off, delta) -> old value (seq_cst, wraps)"},
    {"futex_wait", (PyCFunction)(void (*)(void))core_futex_wait, METH_FASTCALL,
     "futex_wait(buf, off, expected, timeout) -> bool: sleep while the 32-bit word equals expected"},
    {"futex_wake", (PyCFunction)(void (*)(void))core_futex_wake, METH_FASTCALL,
     "futex_wake(buf, off, n) -> number woken"},
    {"seq_read", (PyCFunction)(void (*)(void))array_seq_read, METH_FASTCALL,
     "seq_read(buf, seq_off, data_off, out) -> int: copy len(out) bytes from data_off; the even sequence "
     "if no write() overlapped the copy, -1 while a write() is under way, -2 if one began meanwhile"},
    {"seq_begin", (PyCFunction)(void (*)(void))array_seq_begin, METH_FASTCALL,
     "seq_begin(buf, seq_off) -> int: make the sequence odd (a write() begins); returns it"},
    {"seq_end", (PyCFunction)(void (*)(void))array_seq_end, METH_FASTCALL,
     "seq_end(buf, seq_off, odd) (release): the write() that seq_begin returned odd for is complete"},
    {"elem_load", (PyCFunction)(void (*)(void))array_elem_load, METH_FASTCALL,
     "elem_load(buf, off, kind) -> int (seq_cst); kind 0 int32, 1 int64, 2 uint32, 3 uint64"},
    {"elem_store", (PyCFunction)(void (*)(void))array_elem_store, METH_FASTCALL,
     "elem_store(buf, off, kind, value) (seq_cst)"},
    {"elem_add", (PyCFunction)(void (*)(void))array_elem_add, METH_FASTCALL,
     "elem_add(buf, off, kind, value) -> old value (seq_cst, wraps)"},
    {"elem_cas", (PyCFunction)(void (*)(void))array_elem_cas, METH_FASTCALL,
     "elem_cas(buf, off, kind, expected, desired) -> (success, observed) (seq_cst)"},
    {"lock_release", (PyCFunction)(void (*)(void))array_lock_release, METH_FASTCALL,
     "lock_release(buf, owner_off, wake_off, waiters_off): owner word := 0 (release), bump the wake word, "
     "wake one sleeper if any"},
    {"_test_config", (PyCFunction)core_test_config, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef core_module = {
    PyModuleDef_HEAD_INIT, "shmring._core", "Atomics, futex and ring hot paths for shmring.", -1, core_methods,
};

PyMODINIT_FUNC
PyInit__core(void)
{
    import_array();
    read_test_environment();
    mring_module_init();
    if (qring_module_init() < 0) return NULL;
    if (PyType_Ready(&SpscRingType) < 0) return NULL;
    str_put_slow = PyUnicode_InternFromString("_put_slow");
    str_get_slow = PyUnicode_InternFromString("_get_slow");
    str_safe = PyUnicode_InternFromString("safe");
    if (str_put_slow == NULL || str_get_slow == NULL || str_safe == NULL) return NULL;
    PyObject *m = PyModule_Create(&core_module);
    if (m == NULL) return NULL;
    Py_INCREF(&SpscRingType);
    if (PyModule_AddObject(m, "SpscRing", (PyObject *)&SpscRingType) < 0) {
        Py_DECREF(&SpscRingType);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "ROLE_PRODUCER", ROLE_PRODUCER) < 0 ||
        PyModule_AddIntConstant(m, "ROLE_CONSUMER", ROLE_CONSUMER) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

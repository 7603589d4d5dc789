/*
 * shmring/_array.c -- the C of shmring.Array: its seqlock (a reader's
 * consistent copy, a writer's begin and end) and atomic operations on
 * integer elements.  The lock of Array is Python over the word atomics and
 * futex of _core.c (shmring/_lock.py).
 *
 * Seqlock, after Boehm ("Can seqlocks get along with programming language
 * memory models?", 2012):
 *   writer (holding the Array's lock): seq := odd (relaxed), release fence,
 *     write the data, seq := odd + 1 (release);
 *   reader: s1 := seq (acquire); copy the data; acquire fence; s2 := seq
 *     (relaxed); the copy is consistent iff s1 == s2 and s1 is even.
 * If the copy read any byte the writer stored after its release fence, the
 * reader's acquire fence synchronises with that fence, so s2 is at least
 * the odd value: the copy is refused.  The data bytes are copied with plain
 * loads and stores (as every seqlock does; a formally racy copy that is
 * thrown away when it raced).
 *
 * Every offset is checked against the buffer (checked_word), as everywhere
 * in the core.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "_atomic.h"
#include "_core.h"

/* Copies at least this large run with the GIL released. */
#define NOGIL_COPY_BYTES ((size_t)64 * 1024)

static int
take_buffer(PyObject *obj, Py_ssize_t off, Py_ssize_t width, Py_buffer *view, void **p)
{
    if (get_writable(obj, view) < 0) return -1;
    *p = checked_word(view, off, width);
    if (*p == NULL) {
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static int
nargs_is(const char *name, Py_ssize_t nargs, Py_ssize_t want)
{
    if (nargs == want) return 0;
    PyErr_Format(PyExc_TypeError, "%s() takes %zd arguments (%zd given)", name, want, nargs);
    return -1;
}

/* seq_read(buf, seq_off, data_off, out) */
PyObject *
array_seq_read(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs_is("seq_read", nargs, 4) < 0) return NULL;
    Py_ssize_t seq_off = PyLong_AsSsize_t(args[1]);
    if (seq_off == -1 && PyErr_Occurred()) return NULL;
    Py_ssize_t data_off = PyLong_AsSsize_t(args[2]);
    if (data_off == -1 && PyErr_Occurred()) return NULL;
    Py_buffer out;
    if (PyObject_GetBuffer(args[3], &out, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) return NULL;
    Py_buffer view;
    void *seq_p;
    if (take_buffer(args[0], seq_off, 8, &view, &seq_p) < 0) {
        PyBuffer_Release(&out);
        return NULL;
    }
    if (out.len > 0 && checked_word(&view, data_off, 1) == NULL) goto fail;
    if (data_off < 0 || out.len > view.len - data_off) {
        raise_layout("a copy of %zd bytes at %zd leaves the mapping of %zd bytes", out.len, data_off, view.len);
        goto fail;
    }
    a64 *seq = seq_p;
    const char *src = (const char *)view.buf + data_off;
    /* SYNC POINT (acquire): pairs with the writer's release store ending its
     * write (seq_end): the data of every completed write is visible. */
    uint64_t s1 = atomic_load_explicit(seq, memory_order_acquire);
    long long result = -1;
    if ((s1 & 1) == 0) {
        if ((size_t)out.len >= NOGIL_COPY_BYTES) {
            Py_BEGIN_ALLOW_THREADS
            memcpy(out.buf, src, (size_t)out.len);
            Py_END_ALLOW_THREADS
        }
        else {
            memcpy(out.buf, src, (size_t)out.len);
        }
        /* SYNC POINT (acquire fence): pairs with the writer's release fence
         * after it made the sequence odd (seq_begin): a copy that saw any of
         * its stores sees the odd sequence below. */
        atomic_thread_fence(memory_order_acquire);
        uint64_t s2 = atomic_load_explicit(seq, memory_order_relaxed);
        result = s1 == s2 ? (long long)(s1 >> 1) * 2 : -2;
    }
    PyBuffer_Release(&view);
    PyBuffer_Release(&out);
    return PyLong_FromLongLong(result);
fail:
    PyBuffer_Release(&view);
    PyBuffer_Release(&out);
    return NULL;
}

/* seq_begin(buf, seq_off) -> odd: the caller holds the Array's lock. */
PyObject *
array_seq_begin(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs_is("seq_begin", nargs, 2) < 0) return NULL;
    Py_ssize_t off = PyLong_AsSsize_t(args[1]);
    if (off == -1 && PyErr_Occurred()) return NULL;
    Py_buffer view;
    void *p;
    if (take_buffer(args[0], off, 8, &view, &p) < 0) return NULL;
    a64 *seq = p;
    /* Relaxed: only the lock holder writes the sequence.  Odd already means
     * the previous holder died inside its write: go past it, still odd. */
    uint64_t s = atomic_load_explicit(seq, memory_order_relaxed);
    uint64_t odd = (s & 1) ? s + 2 : s + 1;
    atomic_store_explicit(seq, odd, memory_order_relaxed);
    /* SYNC POINT (release fence): orders the odd sequence before the data
     * stores that follow; pairs with the reader's acquire fence (seq_read). */
    atomic_thread_fence(memory_order_release);
    PyBuffer_Release(&view);
    return PyLong_FromUnsignedLongLong(odd);
}

/* seq_end(buf, seq_off, odd) */
PyObject *
array_seq_end(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs_is("seq_end", nargs, 3) < 0) return NULL;
    Py_ssize_t off = PyLong_AsSsize_t(args[1]);
    if (off == -1 && PyErr_Occurred()) return NULL;
    unsigned long long odd = PyLong_AsUnsignedLongLong(args[2]);
    if (odd == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
    if ((odd & 1) == 0) {
        PyErr_SetString(PyExc_ValueError, "seq_end() takes the odd sequence seq_begin() returned");
        return NULL;
    }
    Py_buffer view;
    void *p;
    if (take_buffer(args[0], off, 8, &view, &p) < 0) return NULL;
    /* SYNC POINT (release): the data stores come first; pairs with the
     * reader's acquire load of the sequence. */
    atomic_store_explicit((a64 *)p, odd + 1, memory_order_release);
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------ */
/* Atomic element operations: kind 0 int32, 1 int64, 2 uint32, 3 uint64.
 * All seq_cst: element operations are the user's own synchronisation, and
 * sequential consistency is the one order nobody has to think about. */

enum { K_INT32, K_INT64, K_UINT32, K_UINT64 };

typedef struct {
    Py_buffer view;
    void *p;
    int kind;
    int wide; /* 8-byte element */
} elem_call;

static int
elem_args(PyObject *const *args, Py_ssize_t nargs, const char *name, Py_ssize_t want, elem_call *c)
{
    if (nargs_is(name, nargs, want) < 0) return -1;
    Py_ssize_t off = PyLong_AsSsize_t(args[1]);
    if (off == -1 && PyErr_Occurred()) return -1;
    long kind = PyLong_AsLong(args[2]);
    if (kind == -1 && PyErr_Occurred()) return -1;
    if (kind < K_INT32 || kind > K_UINT64) {
        PyErr_SetString(PyExc_ValueError, "kind must be 0 (int32), 1 (int64), 2 (uint32) or 3 (uint64)");
        return -1;
    }
    c->kind = (int)kind;
    c->wide = kind == K_INT64 || kind == K_UINT64;
    return take_buffer(args[0], off, c->wide ? 8 : 4, &c->view, &c->p);
}

/* A Python int as the element's bits; OverflowError if it does not fit. */
static int
elem_bits(elem_call *c, PyObject *obj, uint64_t *bits)
{
    if (c->kind == K_INT32 || c->kind == K_INT64) {
        long long v = PyLong_AsLongLong(obj);
        if (v == -1 && PyErr_Occurred()) return -1;
        if (c->kind == K_INT32 && (v < INT32_MIN || v > INT32_MAX)) goto overflow;
        *bits = c->kind == K_INT32 ? (uint64_t)(uint32_t)(int32_t)v : (uint64_t)v;
        return 0;
    }
    unsigned long long u = PyLong_AsUnsignedLongLong(obj);
    if (u == (unsigned long long)-1 && PyErr_Occurred()) return -1;
    if (c->kind == K_UINT32 && u > UINT32_MAX) goto overflow;
    *bits = u;
    return 0;
overflow:
    PyErr_Format(PyExc_OverflowError, "%S does not fit in the array's %s", obj,
                 c->kind == K_INT32 ? "int32" : "uint32");
    return -1;
}

static PyObject *
elem_value(const elem_call *c, uint64_t bits)
{
    switch (c->kind) {
    case K_INT32: return PyLong_FromLong((long)(int32_t)(uint32_t)bits);
    case K_INT64: return PyLong_FromLongLong((long long)bits);
    case K_UINT32: return PyLong_FromUnsignedLong((unsigned long)(uint32_t)bits);
    default: return PyLong_FromUnsignedLongLong(bits);
    }
}

PyObject *
array_elem_load(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
    elem_call c;
    if (elem_args(args, nargs, "elem_load", 3, &c) < 0) return NULL;
    /* SYNC POINT (seq_cst): see above. */
    uint64_t bits = c.wide ? atomic_load_explicit((a64 *)c.p, memory_order_seq_cst)
                           : atomic_load_explicit((a32 *)c.p, memory_order_seq_cst);
    PyBuffer_Release(&c.view);
    return elem_value(&c, bits);
}

PyObject *
array_elem_store(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
    elem_call c;
    uint64_t bits;
    if (elem_args(args, nargs, "elem_store", 4, &c) < 0) return NULL;
    if (elem_bits(&c, args[3], &bits) < 0) {
        PyBuffer_Release(&c.view);
        return NULL;
    }
    /* SYNC POINT (seq_cst): see above. */
    if (c.wide) atomic_store_explicit((a64 *)c.p, bits, memory_order_seq_cst);
    else atomic_store_explicit((a32 *)c.p, (uint32_t)bits, memory_order_seq_cst);
    PyBuffer_Release(&c.view);
    Py_RETURN_NONE;
}

PyObject *
array_elem_add(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
    elem_call c;
    uint64_t bits;
    if (elem_args(args, nargs, "elem_add", 4, &c) < 0) return NULL;
    if (elem_bits(&c, args[3], &bits) < 0) {
        PyBuffer_Release(&c.view);
        return NULL;
    }
    /* SYNC POINT (seq_cst): see above.  Unsigned arithmetic: a signed sum
     * wraps in two's complement, never undefined. */
    uint64_t old = c.wide ? atomic_fetch_add_explicit((a64 *)c.p, bits, memory_order_seq_cst)
                          : atomic_fetch_add_explicit((a32 *)c.p, (uint32_t)bits, memory_order_seq_cst);
    PyBuffer_Release(&c.view);
    return elem_value(&c, old);
}

PyObject *
array_elem_cas(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
    elem_call c;
    uint64_t expected, desired;
    if (elem_args(args, nargs, "elem_cas", 5, &c) < 0) return NULL;
    if (elem_bits(&c, args[3], &expected) < 0 || elem_bits(&c, args[4], &desired) < 0) {
        PyBuffer_Release(&c.view);
        return NULL;
    }
    int ok;
    /* SYNC POINT (seq_cst CAS): see above. */
    if (c.wide) {
        ok = atomic_compare_exchange_strong_explicit((a64 *)c.p, &expected, desired, memory_order_seq_cst,
                                                     memory_order_seq_cst);
    }
    else {
        uint32_t e = (uint32_t)expected;
        ok = atomic_compare_exchange_strong_explicit((a32 *)c.p, &e, (uint32_t)desired, memory_order_seq_cst,
                                                     memory_order_seq_cst);
        expected = e;
    }
    PyBuffer_Release(&c.view);
    PyObject *observed = elem_value(&c, expected);
    if (observed == NULL) return NULL;
    return Py_BuildValue("(NN)", PyBool_FromLong(ok), observed);
}

/* lock_release(buf, owner_off, wake_off, waiters_off): give an Array's lock
 * back and wake one sleeper, in one call (see shmring/_lock.py, FutexPark). */
PyObject *
array_lock_release(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs_is("lock_release", nargs, 4) < 0) return NULL;
    Py_ssize_t off[3];
    for (int i = 0; i < 3; i++) {
        off[i] = PyLong_AsSsize_t(args[1 + i]);
        if (off[i] == -1 && PyErr_Occurred()) return NULL;
    }
    Py_buffer view;
    void *owner;
    if (take_buffer(args[0], off[0], 8, &view, &owner) < 0) return NULL;
    a32 *wake = checked_word(&view, off[1], 4);
    a32 *waiters = wake == NULL ? NULL : checked_word(&view, off[2], 4);
    if (waiters == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    /* SYNC POINT (release): the critical section's stores come first; pairs
     * with the next holder's CAS. */
    atomic_store_explicit((a64 *)owner, 0, memory_order_release);
    /* SYNC POINT (seq_cst): bump the wake word, then look for sleepers; a
     * sleeper counts itself (seq_cst) before its futex compares this word,
     * so either we see it or its futex sees the bump. */
    atomic_fetch_add_explicit(wake, 1, memory_order_seq_cst);
    if (atomic_load_explicit(waiters, memory_order_seq_cst) != 0) futex_wake_raw(wake, 1);
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
}

/*
 * shmring/_ring.h -- the ring object of the C core, shared by its two files:
 * _core.c (the module, the atomics, the Python type and its single-producer/
 * single-consumer paths) and _mpmc.c (the same methods for rings with
 * several producers or consumers).  One object type serves both, so the
 * Python class and every fast path stay the same; `multi` picks the
 * protocol once, at bind time.
 */
#ifndef SHMRING_RING_H
#define SHMRING_RING_H

#include <Python.h>

#include "_atomic.h"
#include "_core.h"
#include "_mpmc.h"
#include "_spsc.h"

/* Copies at least this large run with the GIL released. */
#define NOGIL_COPY_BYTES ((size_t)64 * 1024)

typedef struct {
    PyObject_HEAD
    Py_buffer view;
    int bound;
    spsc_t q;       /* where the ring's words and slots are (see _spsc.h) */
    PyArray_Descr *descr;
    int ndim;
    npy_intp shape[NPY_MAXDIMS];
    int role;       /* ROLE_* bits this handle has registered for */
    int views;      /* ROLE_* bits with a reserve()/borrow() view open */
    int64_t next_liveness_ns; /* when the put fast path next detours to check peers */
    int inflight;   /* operations running without the GIL on this mapping */
    int closing;    /* release the buffer when inflight drops to 0 */
    int refusing;   /* close() has begun: no new operation starts */
    int put_busy;   /* a put is copying without the GIL */
    int get_busy;   /* a get is copying without the GIL */
    /* Several producers or consumers (see _mpmc.h); the rest is theirs. */
    int multi;
    mpmc_t m;
    mpmc_claim_t claim[2];     /* announcements in our producer [0] and consumer [1] entries */
    uint64_t resv_pos;         /* the position an open reserve() block holds */
    uint64_t loan_pos, loan_k; /* the run an open borrow() block holds */
    /* sync="semaphore": the fast path's semaphores and side locks (_semaphore.c); NULL: none */
    struct semring *semf;
} SpscRing;

#define CLAIM_INDEX(role) ((role) == ROLE_PRODUCER ? 0 : 1)
#define W64_OF(r, k) SPSC_W64(&(r)->q, k)
#define W32_OF(r, k) SPSC_W32(&(r)->q, k)

/* _core.c */
void ring_end_inflight(SpscRing *r);
Py_ssize_t ring_try_put_raw(SpscRing *r, const char *src, uint64_t n);
PyObject *ring_try_get_raw(SpscRing *r, uint64_t max, int batch);
PyObject *ring_new_items(SpscRing *r, uint64_t k, int batch);
int ring_wait_word(SpscRing *r, a64 *word, a32 *waiters, uint64_t expected, double timeout);
int check_producer_call(SpscRing *r, int ends_view);
int check_consumer_call(SpscRing *r, int ends_view);

/* _mpmc.c: the multi-producer/-consumer forms of the ring's methods. */
void mring_module_init(void);
int mring_bind(SpscRing *r, Py_ssize_t seq_off, Py_ssize_t data_off);
Py_ssize_t mring_try_put_raw(SpscRing *r, const char *src, uint64_t n);
PyObject *mring_try_get_raw(SpscRing *r, uint64_t max, int batch);
PyObject *mring_write_claim(SpscRing *r);
PyObject *mring_write_finish(SpscRing *r, int abandon);
PyObject *mring_read_peek(SpscRing *r, uint64_t max);
PyObject *mring_read_release(SpscRing *r, Py_ssize_t n);
int mring_wait(SpscRing *r, int consumer_side, double timeout);
void mring_wake_all(SpscRing *r);
void mring_abandon_views(SpscRing *r);
PyObject *mring_py_abandon_views(SpscRing *r, PyObject *unused);
PyObject *mring_set_claim(SpscRing *r, PyObject *args);
PyObject *mring_stuck(SpscRing *r, PyObject *arg);
PyObject *mring_repair(SpscRing *r, PyObject *args);

/* _semaphore.c: the semaphore flavour's fast put and get. */
PyObject *semring_bind(SpscRing *r, PyObject *args);
PyObject *semring_set_identity(SpscRing *r, PyObject *arg);
void semring_after_fork(SpscRing *r);
void semring_close(SpscRing *r);
Py_ssize_t semring_put_fast(SpscRing *r, const char *src);
PyObject *semring_get_fast(SpscRing *r);

#endif /* SHMRING_RING_H */

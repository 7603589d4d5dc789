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
#include "_queue.h"
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
    /* A Queue's records over the multi ring (_queue.c); queue == 0: a Ring. */
    int queue;
    queue_t qq;                /* the record protocol's words (see _queue.h) */
    int q_fast;                /* put/get may take the core's fast path (lock-free flavour) */
    uint64_t loan_len;         /* the borrowed record's payload */
} SpscRing;

#define CLAIM_INDEX(role) ((role) == ROLE_PRODUCER ? 0 : 1)
#define W64_OF(r, k) SPSC_W64(&(r)->q, k)
#define W32_OF(r, k) SPSC_W32(&(r)->q, k)

/* _core.c */
void ring_end_inflight(SpscRing *r);
int ring_check_open(SpscRing *r);
int parse_call(const char *fname, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, int npos, int nkwonly,
               const char *const *names, PyObject **out);
double parse_timeout(PyObject *obj); /* -1: None; -2: error set */
Py_ssize_t parse_max_items(PyObject *arg); /* -1: error set */
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

/* _queue.c: a Queue's framed records over the multi ring's slots. */
int qring_module_init(void);
PyObject *qring_bind(SpscRing *r, PyObject *args);
PyObject *qring_put(SpscRing *r, PyObject *const *args, Py_ssize_t nargs);
PyObject *qring_put_bytes_many(SpscRing *r, PyObject *const *args, Py_ssize_t nargs);
PyObject *qring_get(SpscRing *r, PyObject *unused);
PyObject *qring_get_many(SpscRing *r, PyObject *arg);
PyObject *qring_peek(SpscRing *r, PyObject *unused);
PyObject *qring_end_loan(SpscRing *r, PyObject *unused);
PyObject *qring_wait_room(SpscRing *r, PyObject *const *args, Py_ssize_t nargs);
PyObject *qring_count(SpscRing *r, PyObject *const *args, Py_ssize_t nargs);
PyObject *qring_put_obj(SpscRing *r, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames);
PyObject *qring_put_nowait_obj(SpscRing *r, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames);
PyObject *qring_get_obj(SpscRing *r, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames);
PyObject *qring_get_nowait_obj(SpscRing *r, PyObject *unused);
void qring_wake_producers(SpscRing *r);

/* _semaphore.c: the semaphore flavour's fast put and get. */
PyObject *semring_bind(SpscRing *r, PyObject *args);
PyObject *semring_set_identity(SpscRing *r, PyObject *arg);
void semring_after_fork(SpscRing *r);
void semring_close(SpscRing *r);
Py_ssize_t semring_put_fast(SpscRing *r, const char *src);
PyObject *semring_get_fast(SpscRing *r);

#endif /* SHMRING_RING_H */

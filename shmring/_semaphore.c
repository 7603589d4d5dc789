/*
 * shmring/_semaphore.c -- the fast path of the semaphore flavour's put and
 * get (sync="semaphore"; the protocol and its argument are in
 * shmring/_semaphore.py and docs/design.md).  One call does what the
 * Python slow path does when nothing has to wait: take a permit
 * (sem_trywait), take the side's lock if the side has several endpoints
 * (one CAS of our identity into the lock word), make the single-producer/
 * single-consumer core call, give the lock back (release store, then a
 * wake-up for its park if none is pending) and give the other side its
 * permit.  Anything else -- no permit, a held lock, no room or no item --
 * returns 0 and the caller takes the Python slow path, which waits.
 *
 * The semaphores are opened here by name (sem_open of the ones the Python
 * side created or opened; glibc shares one mapping per name and process).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#define PY_ARRAY_UNIQUE_SYMBOL shmring_ARRAY_API
#define NO_IMPORT_ARRAY
#include <numpy/arrayobject.h>

#include <errno.h>
#include <fcntl.h>
#include <semaphore.h>

#include "_ring.h"

struct semring {
    sem_t *free, *full;  /* free-slot and filled-slot counts */
    sem_t *park[2];      /* where the producers' [0] and consumers' [1] lock waiters sleep */
    a64 *lock[2];        /* the side locks' words (holder identity, 0 free) */
    int several[2];      /* the side has several endpoints: it takes its lock */
    uint64_t identity;   /* our identity word (0: unknown in this process: no fast path) */
};

void
semring_close(SpscRing *r)
{
    struct semring *s = r->semf;
    if (s == NULL) return;
    r->semf = NULL;
    sem_t *all[4] = {s->free, s->full, s->park[0], s->park[1]};
    for (int i = 0; i < 4; i++) {
        if (all[i] != NULL && all[i] != SEM_FAILED) sem_close(all[i]);
    }
    PyMem_Free(s);
}

/* _sem_bind(names: 4 str, lock offsets: (int, int), several: (bool, bool)) */
PyObject *
semring_bind(SpscRing *r, PyObject *args)
{
    const char *names[4];
    Py_ssize_t off[2];
    int several[2];
    if (!PyArg_ParseTuple(args, "ssss(nn)(pp):_sem_bind", &names[0], &names[1], &names[2], &names[3], &off[0],
                          &off[1], &several[0], &several[1])) {
        return NULL;
    }
    if (!r->bound || r->multi) {
        PyErr_SetString(PyExc_ValueError, "not a bound semaphore-flavour ring");
        return NULL;
    }
    a64 *lock[2];
    for (int i = 0; i < 2; i++) {
        lock[i] = checked_word(&r->view, off[i], 8);
        if (lock[i] == NULL) return NULL;
        if ((char *)lock[i] + 8 > r->q.data) {
            raise_layout("lock word at %zd overlaps the data area", off[i]);
            return NULL;
        }
    }
    struct semring *s = PyMem_Calloc(1, sizeof *s);
    if (s == NULL) return PyErr_NoMemory();
    sem_t **slots[4] = {&s->free, &s->full, &s->park[0], &s->park[1]};
    semring_close(r);
    r->semf = s;
    for (int i = 0; i < 4; i++) {
        *slots[i] = sem_open(names[i], 0);
        if (*slots[i] == SEM_FAILED) {
            *slots[i] = NULL;
            PyErr_SetFromErrnoWithFilename(PyExc_OSError, names[i]);
            semring_close(r);
            return NULL;
        }
    }
    for (int i = 0; i < 2; i++) {
        s->lock[i] = lock[i];
        s->several[i] = several[i];
    }
    Py_RETURN_NONE;
}

/* _sem_identity(word): our identity word in this process (0 turns the fast path off). */
PyObject *
semring_set_identity(SpscRing *r, PyObject *arg)
{
    unsigned long long v = PyLong_AsUnsignedLongLong(arg);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
    if (r->semf != NULL) r->semf->identity = v;
    Py_RETURN_NONE;
}

void
semring_after_fork(SpscRing *r)
{
    if (r->semf != NULL) r->semf->identity = 0; /* the child's identity differs */
}

static int
side_lock(struct semring *s, int side)
{
    if (!s->several[side]) return 1;
    uint64_t free_word = 0;
    /* SYNC POINT (seq_cst CAS): acquires what the previous holder released
     * (side_unlock's store); as _lock.Lock.acquire. */
    return atomic_compare_exchange_strong_explicit(s->lock[side], &free_word, s->identity, memory_order_seq_cst,
                                                   memory_order_seq_cst);
}

static void
side_unlock(struct semring *s, int side)
{
    if (!s->several[side]) return;
    /* SYNC POINT (release): the critical section's stores come first; as
     * _lock.Lock.release. */
    atomic_store_explicit(s->lock[side], 0, memory_order_release);
    int pending = 0;
    if (sem_getvalue(s->park[side], &pending) == 0 && pending == 0) sem_post(s->park[side]);
}

/* Put one exact item: 1 done, 0 take the slow path, -1 error. */
Py_ssize_t
semring_put_fast(SpscRing *r, const char *src)
{
    struct semring *s = r->semf;
    if (s->identity == 0 || sem_trywait(s->free) != 0) return 0;
    if (!side_lock(s, 0)) {
        sem_post(s->free); /* the slow path takes it again, and waits for the lock */
        return 0;
    }
    Py_ssize_t n = ring_try_put_raw(r, src, 1);
    side_unlock(s, 0);
    if (n == 1) sem_post(s->full);
    /* n == 0: the permit had no room behind it (a stale one): dropped, as
     * the slow path drops it. */
    return n;
}

/* Get one item: the array, Py_None (borrowed) for the slow path, or NULL. */
PyObject *
semring_get_fast(SpscRing *r)
{
    struct semring *s = r->semf;
    if (s->identity == 0 || sem_trywait(s->full) != 0) return Py_None;
    if (!side_lock(s, 1)) {
        sem_post(s->full);
        return Py_None;
    }
    PyObject *out = ring_try_get_raw(r, 1, 0);
    side_unlock(s, 1);
    if (out != NULL && out != Py_None) sem_post(s->free);
    return out;
}

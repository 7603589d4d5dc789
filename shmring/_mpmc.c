/*
 * shmring/_mpmc.c -- the ring object's methods for rings with several
 * producers or consumers, over the protocol of _mpmc.h (per-slot sequence
 * words, announced batch claims, holes left by dead producers).  _core.c
 * dispatches here when the ring was bound with sequence words; the Python
 * side (shmring/ring.py) decides, from the endpoint table, when a stuck
 * claim belongs to a dead process and asks for the repair.
 *
 * Safety rule, as in _core.c: every offset is checked against the mapping
 * when bound, every position read from shared memory is checked against
 * INDEX_LIMIT, and slots are addressed modulo the capacity, so a corrupt
 * header raises LayoutError and never makes us touch memory outside it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#define PY_ARRAY_UNIQUE_SYMBOL shmring_ARRAY_API
#define NO_IMPORT_ARRAY
#include <numpy/arrayobject.h>

#include "_ring.h"

void
mring_module_init(void)
{
    /* _atomic.h's test hooks are per file: read them here too. */
    read_test_environment();
}

static int
raise_position(SpscRing *r, uint64_t pos)
{
    raise_layout("corrupt ring: position %llu or the sequence word of its slot is impossible (capacity %llu)",
                 (unsigned long long)pos, (unsigned long long)r->m.capacity);
    return -1;
}

/* The announcement words of our entry in `role`; NULL with an error set if
 * this handle has not registered in that role. */
static mpmc_claim_t *
claim_of(SpscRing *r, int role)
{
    mpmc_claim_t *c = &r->claim[CLAIM_INDEX(role)];
    if (c->start == NULL) {
        PyErr_Format(PyExc_RuntimeError, "this handle has no %s entry to announce its claims in",
                     role == ROLE_PRODUCER ? "producer" : "consumer");
        return NULL;
    }
    return c;
}

int
mring_bind(SpscRing *r, Py_ssize_t seq_off, Py_ssize_t data_off)
{
    uint64_t cap = r->q.capacity;
    if (seq_off < 0 || seq_off % 8 != 0 || seq_off > data_off || cap > (uint64_t)(data_off - seq_off) / 8) {
        raise_layout("sequence words (%llu at %zd) do not fit before the data area at %zd", (unsigned long long)cap,
                     seq_off, data_off);
        return -1;
    }
    for (int i = 0; i < N_OFFSETS; i++) {
        if (r->q.off[i] + offset_width[i] > seq_off) {
            raise_layout("header word at %zd overlaps the sequence words at %zd", r->q.off[i], seq_off);
            return -1;
        }
    }
    r->multi = 1;
    r->m.head = W64_OF(r, OFF_HEAD);
    r->m.tail = W64_OF(r, OFF_TAIL);
    r->m.consumer_waiters = W32_OF(r, OFF_CONSUMER_WAITERS);
    r->m.producer_waiters = W32_OF(r, OFF_PRODUCER_WAITERS);
    r->m.seq = (a64 *)(r->q.base + seq_off);
    r->m.data = r->q.data;
    r->m.capacity = cap;
    r->m.slot_size = r->q.slot_size;
    r->m.flags = MPMC_ABANDONED;
    r->m.limit = INDEX_LIMIT;
    memset(r->claim, 0, sizeof r->claim);
    return 0;
}

/* _set_claim(role, offset): our entry in `role` announces claims in the two
 * words at offset (start) and offset + 8 (end). */
PyObject *
mring_set_claim(SpscRing *r, PyObject *args)
{
    int role;
    Py_ssize_t off;
    if (!PyArg_ParseTuple(args, "in:_set_claim", &role, &off)) return NULL;
    if (role != ROLE_PRODUCER && role != ROLE_CONSUMER) {
        PyErr_SetString(PyExc_ValueError, "role must be ROLE_PRODUCER or ROLE_CONSUMER");
        return NULL;
    }
    if (!r->bound || !r->multi) {
        PyErr_SetString(PyExc_ValueError, "not a bound multi-producer/-consumer ring");
        return NULL;
    }
    if (off < 0 || off % 8 != 0 || off > (Py_ssize_t)(r->m.seq ? (char *)r->m.seq - r->q.base : 0) - 16) {
        raise_layout("claim words at %zd are not in the header", off);
        return NULL;
    }
    r->claim[CLAIM_INDEX(role)] = (mpmc_claim_t){(a64 *)(r->q.base + off), (a64 *)(r->q.base + off + 8)};
    Py_RETURN_NONE;
}

/* Copy k claimed items in (producer) and publish them. */
static void
put_claimed(SpscRing *r, mpmc_claim_t c, uint64_t pos, const char *src, uint64_t k)
{
    mpmc_copy_in(&r->m, pos, src, k);
    inject_delay();
    mpmc_publish(&r->m, c, pos, k, 0);
}

Py_ssize_t
mring_try_put_raw(SpscRing *r, const char *src, uint64_t n)
{
    mpmc_claim_t *c = claim_of(r, ROLE_PRODUCER);
    if (c == NULL) return -1;
    uint64_t pos;
    int64_t k = mpmc_claim_put(&r->m, *c, n, &pos);
    if (k < 0) return raise_position(r, pos);
    if (k == 0) return 0;
    if ((size_t)k * r->m.slot_size >= NOGIL_COPY_BYTES) {
        r->inflight++;
        r->put_busy = 1;
        Py_BEGIN_ALLOW_THREADS
        put_claimed(r, *c, pos, src, (uint64_t)k);
        Py_END_ALLOW_THREADS
        r->put_busy = 0;
        ring_end_inflight(r);
    }
    else {
        put_claimed(r, *c, pos, src, (uint64_t)k);
    }
    return (Py_ssize_t)k;
}

/* Take up to max items into a new array, skipping holes.  Returns the array,
 * Py_None (borrowed) when nothing is ready, or NULL. */
PyObject *
mring_try_get_raw(SpscRing *r, uint64_t max, int batch)
{
    mpmc_claim_t *c = claim_of(r, ROLE_CONSUMER);
    if (c == NULL) return NULL;
    for (;;) {
        uint64_t pos;
        int64_t k = mpmc_claim_get(&r->m, *c, max, 0, &pos);
        if (k < 0) return raise_position(r, pos), NULL;
        if (k == 0) return Py_None;
        uint64_t items = mpmc_items_in(&r->m, pos, (uint64_t)k);
        if (items == 0) {
            /* Only holes: they are ours to free; look again. */
            mpmc_release(&r->m, *c, pos, (uint64_t)k);
            continue;
        }
        PyObject *out = ring_new_items(r, items, batch);
        if (out == NULL) {
            /* The claim is ours and must not stall the ring: release it.  Its
             * items are lost to a MemoryError, as a crashed consumer's are. */
            mpmc_release(&r->m, *c, pos, (uint64_t)k);
            return NULL;
        }
        char *dst = PyArray_BYTES((PyArrayObject *)out);
        if (items * r->m.slot_size >= NOGIL_COPY_BYTES) {
            r->inflight++;
            r->get_busy = 1;
            Py_BEGIN_ALLOW_THREADS
            mpmc_copy_out(&r->m, pos, dst, (uint64_t)k);
            inject_delay();
            mpmc_release(&r->m, *c, pos, (uint64_t)k);
            Py_END_ALLOW_THREADS
            r->get_busy = 0;
            ring_end_inflight(r);
        }
        else {
            mpmc_copy_out(&r->m, pos, dst, (uint64_t)k);
            inject_delay();
            mpmc_release(&r->m, *c, pos, (uint64_t)k);
        }
        return out;
    }
}

PyObject *
mring_write_claim(SpscRing *r)
{
    mpmc_claim_t *c = claim_of(r, ROLE_PRODUCER);
    if (c == NULL) return NULL;
    uint64_t pos;
    int64_t k = mpmc_claim_put(&r->m, *c, 1, &pos);
    if (k < 0) return raise_position(r, pos), NULL;
    if (k == 0) return PyLong_FromLong(-1);
    r->resv_pos = pos;
    r->views |= ROLE_PRODUCER;
    return PyLong_FromUnsignedLongLong(pos % r->m.capacity);
}

/* Publish the reserve()d slot, or (abandon) leave it as a hole. */
PyObject *
mring_write_finish(SpscRing *r, int abandon)
{
    mpmc_claim_t *c = claim_of(r, ROLE_PRODUCER);
    if (c == NULL) return NULL;
    inject_delay();
    mpmc_publish(&r->m, *c, r->resv_pos, 1, abandon);
    r->views &= ~ROLE_PRODUCER;
    Py_RETURN_NONE;
}

PyObject *
mring_read_peek(SpscRing *r, uint64_t max)
{
    mpmc_claim_t *c = claim_of(r, ROLE_CONSUMER);
    if (c == NULL) return NULL;
    for (;;) {
        uint64_t pos;
        int64_t k = mpmc_claim_get(&r->m, *c, max, 1, &pos);
        if (k < 0) return raise_position(r, pos), NULL;
        if (k == 0) return Py_BuildValue("KK", 0ULL, 0ULL);
        if (mpmc_abandoned(&r->m, pos)) {
            /* A run of holes (the claim is uniform): free it, look again. */
            mpmc_release(&r->m, *c, pos, (uint64_t)k);
            continue;
        }
        r->loan_pos = pos;
        r->loan_k = (uint64_t)k;
        r->views |= ROLE_CONSUMER;
        return Py_BuildValue("KK", (unsigned long long)(pos % r->m.capacity), (unsigned long long)k);
    }
}

PyObject *
mring_read_release(SpscRing *r, Py_ssize_t n)
{
    mpmc_claim_t *c = claim_of(r, ROLE_CONSUMER);
    if (c == NULL) return NULL;
    if (n < 0 || (uint64_t)n != r->loan_k) {
        PyErr_Format(PyExc_ValueError, "releasing %zd items of a borrowed run of %llu", n,
                     (unsigned long long)r->loan_k);
        return NULL;
    }
    inject_delay();
    mpmc_release(&r->m, *c, r->loan_pos, r->loan_k);
    r->views &= ~ROLE_CONSUMER;
    Py_RETURN_NONE;
}

/* close() with a reserve() or borrow() block still open (another thread's,
 * or the block is closing its own ring): our entries are about to go, and
 * with them the announcements that keep survivors from repairing our
 * claims, so settle them first -- the reserved slot becomes a hole, the
 * borrowed run is taken. */
void
mring_abandon_views(SpscRing *r)
{
    if ((r->views & ROLE_PRODUCER) && r->claim[0].start != NULL) {
        mpmc_publish(&r->m, r->claim[0], r->resv_pos, 1, 1);
    }
    if ((r->views & ROLE_CONSUMER) && r->claim[1].start != NULL) {
        mpmc_release(&r->m, r->claim[1], r->loan_pos, r->loan_k);
        if (r->queue) qring_wake_producers(r);
    }
    r->views = 0;
}

PyObject *
mring_py_abandon_views(SpscRing *r, PyObject *unused)
{
    if (r->bound && r->multi) mring_abandon_views(r);
    Py_RETURN_NONE;
}

/* Sleep until the slot at our side's claim point changes: published (or
 * repaired) for a consumer, released for a producer. */
int
mring_wait(SpscRing *r, int consumer_side, double timeout)
{
    /* SYNC POINT (seq_cst): as the claim loop's load of the position. */
    uint64_t pos = atomic_load_explicit(consumer_side ? r->m.tail : r->m.head, memory_order_seq_cst);
    if (pos >= r->m.limit) return raise_position(r, pos);
    uint64_t ready = mpmc_turn(pos, (uint64_t)consumer_side);
    a64 *word = mpmc_seq(&r->m, pos);
    /* SYNC POINT (acquire): as in mpmc_claim; the caller claims afterwards. */
    uint64_t s = atomic_load_explicit(word, memory_order_acquire);
    if ((int64_t)((s & ~r->m.flags) - ready) >= 0) return 1; /* ready, or moved on */
    return ring_wait_word(r, word, consumer_side ? r->m.consumer_waiters : r->m.producer_waiters, s, timeout);
}

/* Wake the sleepers of both sides (a peer left): they sleep on the
 * sequence words at the two claim points. */
void
mring_wake_all(SpscRing *r)
{
    uint64_t tail = atomic_load_explicit(r->m.tail, memory_order_relaxed);
    uint64_t head = atomic_load_explicit(r->m.head, memory_order_relaxed);
    futex_wake_raw((char *)mpmc_seq(&r->m, tail) + LOW_HALF, INT_MAX);
    futex_wake_raw((char *)mpmc_seq(&r->m, head) + LOW_HALF, INT_MAX);
    if (r->queue) futex_wake_raw((char *)r->qq.room + LOW_HALF, INT_MAX); /* a Queue's producers sleep there */
}

/* _stuck(role) -> (position, count): the positions at which `role`'s claim
 * point waits on the other side's claims (see mpmc_stuck); count 0: none. */
PyObject *
mring_stuck(SpscRing *r, PyObject *arg)
{
    long role = PyLong_AsLong(arg);
    if (role == -1 && PyErr_Occurred()) return NULL;
    if (!r->bound || r->closing || !r->multi) {
        PyErr_SetString(PyExc_ValueError, "not an open multi-producer/-consumer ring");
        return NULL;
    }
    uint64_t pos = 0;
    uint64_t n = mpmc_stuck(&r->m, role == ROLE_CONSUMER, &pos);
    return Py_BuildValue("KK", (unsigned long long)pos, (unsigned long long)n);
}

/* _repair(role, position) -> bool: the claim at position, found stuck by
 * `role` (_stuck) and announced by no live process, is a dead process's:
 * a consumer turns a dead producer's slot into a hole, a producer frees a
 * dead consumer's slot.  False if the slot moved on meanwhile. */
PyObject *
mring_repair(SpscRing *r, PyObject *args)
{
    int role;
    unsigned long long pos;
    if (!PyArg_ParseTuple(args, "iK:_repair", &role, &pos)) return NULL;
    if (!r->bound || r->closing || !r->multi) {
        PyErr_SetString(PyExc_ValueError, "not an open multi-producer/-consumer ring");
        return NULL;
    }
    if (pos >= r->m.limit) return raise_position(r, pos), NULL;
    int done = role == ROLE_CONSUMER ? mpmc_repair_put(&r->m, pos) : mpmc_repair_get(&r->m, pos);
    return PyBool_FromLong(done);
}

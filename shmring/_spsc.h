/*
 * shmring/_spsc.h -- the single-producer/single-consumer ring protocol, with
 * no Python in it: index arithmetic, the acquire/release pairs that publish
 * slots, the sleeper check after a publish, and slot copies (with the test
 * hooks' broken variants).  _core.c wraps it for Python (errors, the GIL,
 * waiting); tests/tsan/ runs it under ThreadSanitizer.  The ordering
 * argument is in docs/design.md, "Memory ordering".
 */
#ifndef SHMRING_SPSC_H
#define SHMRING_SPSC_H

#include <limits.h>

#include "_atomic.h"

/* The single-producer/single-consumer ring protocol.
 *
 * Indices head (next slot to write) and tail (next slot to read) are
 * free-running 64-bit counters; slot i lives at data + (i % capacity) *
 * slot_size.  The producer alone writes head and cached_tail; the consumer
 * alone writes tail and cached_head.  A valid state has
 * 0 <= head - tail <= capacity: anything else is a corrupt header. */

enum {
    OFF_HEAD,
    OFF_TAIL,
    OFF_CACHED_TAIL,
    OFF_CACHED_HEAD,
    OFF_CONSUMER_WAITERS,
    OFF_PRODUCER_WAITERS,
    OFF_CONSUMERS_EVER,
    OFF_CONSUMERS_LIVE,
    N_OFFSETS
};
static const ptrdiff_t offset_width[N_OFFSETS] = {8, 8, 8, 8, 4, 4, 4, 4};

/* One ring's view of its mapping; the C core's SpscRing embeds one, the
 * ThreadSanitizer harness builds its own over plain memory. */
typedef struct {
    char *base;               /* the mapping */
    ptrdiff_t off[N_OFFSETS]; /* header words, bounds-checked by the binder */
    char *data;               /* slot 0 */
    uint64_t capacity;
    size_t slot_size;
    uint64_t fault_head, fault_tail; /* the indices check_span last refused */
} spsc_t;

#define SPSC_W64(q, k) ((a64 *)((q)->base + (q)->off[k]))
#define SPSC_W32(q, k) ((a32 *)((q)->base + (q)->off[k]))

/* Indices never reach 2^62 (at 10^9 items/s that is 146 years), so a
 * free-running index never wraps 2^64 and `index % capacity` is one
 * continuous sequence for every capacity.  An index at or past the limit can
 * only come from a corrupt or hostile header. */
#define INDEX_LIMIT ((uint64_t)1 << 62)

/* Checks the ring's invariant on a pair of indices read from the header;
 * on failure records them (for the caller's error message) and returns -1. */
static inline int
spsc_check_span(spsc_t *q, uint64_t head, uint64_t tail)
{
    if (head - tail > q->capacity || head >= INDEX_LIMIT) {
        q->fault_head = head;
        q->fault_tail = tail;
        return -1;
    }
    return 0;
}

/* Free slots for the producer: refresh cached_tail from the consumer's tail
 * only when the cached value says we may be short of `want`. */
static inline int
spsc_producer_space(spsc_t *q, uint64_t head, uint64_t want, uint64_t *space)
{
    uint64_t cap = q->capacity + (broken == BROKEN_OVERWRITE_UNRELEASED ? 1 : 0);
    if (head >= INDEX_LIMIT) return spsc_check_span(q, head, head);
    /* Relaxed: cached_tail is written only by this (the producing) side. */
    uint64_t tail = atomic_load_explicit(SPSC_W64(q, OFF_CACHED_TAIL), memory_order_relaxed);
    if (head - tail > q->capacity || cap - (head - tail) < want) {
        /* SYNC POINT (acquire): pairs with the consumer's release store of
         * tail; the consumer's reads of those slots are complete, so they may
         * be overwritten. */
        tail = atomic_load_explicit(SPSC_W64(q, OFF_TAIL), memory_order_acquire);
        atomic_store_explicit(SPSC_W64(q, OFF_CACHED_TAIL), tail, memory_order_relaxed);
        if (spsc_check_span(q, head, tail) < 0) return -1;
    }
    *space = cap - (head - tail);
    return 0;
}

/* Items ready for the consumer, refreshing cached_head the same way. */
static inline int
spsc_consumer_avail(spsc_t *q, uint64_t tail, uint64_t want, uint64_t *avail)
{
    if (tail >= INDEX_LIMIT) return spsc_check_span(q, tail, tail);
    /* Relaxed: cached_head is written only by this (the consuming) side. */
    uint64_t head = atomic_load_explicit(SPSC_W64(q, OFF_CACHED_HEAD), memory_order_relaxed);
    if (head - tail > q->capacity || head - tail < want) {
        /* SYNC POINT (acquire): pairs with the producer's release store of
         * head; the slot bytes written before it are visible now. */
        head = atomic_load_explicit(SPSC_W64(q, OFF_HEAD), memory_order_acquire);
        atomic_store_explicit(SPSC_W64(q, OFF_CACHED_HEAD), head, memory_order_relaxed);
        if (spsc_check_span(q, head, tail) < 0) return -1;
    }
    *avail = head - tail;
    return 0;
}

static inline void
spsc_wake_if_waiting(spsc_t *q, int waiters_key, int index_key)
{
    /* SYNC POINT (seq_cst fence): orders our index store before the load of
     * the waiter count (StoreLoad).  Pairs with the fence in ring_wait between
     * the waiter's increment and its re-read of the index: one of us sees the
     * other, so a sleeper is never left with a publish it missed. */
    atomic_thread_fence(memory_order_seq_cst);
    if ((atomic_load_explicit(SPSC_W32(q, waiters_key), memory_order_relaxed) & WAITERS_COUNT_MASK) != 0) {
        futex_wake_raw(q->base + q->off[index_key] + LOW_HALF, INT_MAX);
    }
}

static inline void
spsc_publish_head(spsc_t *q, uint64_t head)
{
    /* SYNC POINT (release): pairs with the consumer's acquire load of head in
     * consumer_avail; the slot copy must not sink below this store. */
    atomic_store_explicit(SPSC_W64(q, OFF_HEAD), head,
                          broken == BROKEN_RELAXED_PUBLISH ? memory_order_relaxed : memory_order_release);
    spsc_wake_if_waiting(q, OFF_CONSUMER_WAITERS, OFF_HEAD);
}

static inline void
spsc_publish_tail(spsc_t *q, uint64_t tail)
{
    /* SYNC POINT (release): pairs with the producer's acquire load of tail in
     * producer_space; our reads of the slot finish before it may be reused. */
    atomic_store_explicit(SPSC_W64(q, OFF_TAIL), tail, memory_order_release);
    spsc_wake_if_waiting(q, OFF_PRODUCER_WAITERS, OFF_TAIL);
}

/* Copy n items from src into the ring at index head (wrapping). */
static inline void
spsc_copy_in(spsc_t *q, uint64_t head, const char *src, uint64_t n)
{
    uint64_t slot = head % q->capacity;
    uint64_t first = q->capacity - slot < n ? q->capacity - slot : n;
    memcpy(q->data + slot * q->slot_size, src, first * q->slot_size);
    if (n > first) {
        memcpy(q->data, src + first * q->slot_size, (n - first) * q->slot_size);
    }
}

static inline void
spsc_copy_out(spsc_t *q, uint64_t tail, char *dst, uint64_t n)
{
    uint64_t slot = tail % q->capacity;
    uint64_t first = q->capacity - slot < n ? q->capacity - slot : n;
    memcpy(dst, q->data + slot * q->slot_size, first * q->slot_size);
    if (n > first) {
        memcpy(dst + first * q->slot_size, q->data, (n - first) * q->slot_size);
    }
}

/* Producer side of a copy: claim, copy, publish, with the test hooks. */
static inline void
spsc_produce(spsc_t *q, uint64_t head, const char *src, uint64_t n)
{
    size_t bytes = (size_t)n * q->slot_size;
    if (broken == BROKEN_PUBLISH_BEFORE_COPY) {
        spsc_publish_head(q, head + n);
        inject_delay();
        spsc_copy_in(q, head, src, n);
        return;
    }
    if (broken == BROKEN_RELAXED_PUBLISH && bytes >= 2) {
        /* What a weakly ordered CPU may do without the release: the index
         * store becomes visible before the slot's last stores. */
        size_t half = bytes / 2;
        uint64_t slot = head % q->capacity;
        if ((slot + n) <= q->capacity) {
            char *dst = q->data + slot * q->slot_size;
            memcpy(dst, src, half);
            spsc_publish_head(q, head + n);
            inject_delay();
            memcpy(dst + half, src + half, bytes - half);
            return;
        }
    }
    spsc_copy_in(q, head, src, n);
    inject_delay();
    spsc_publish_head(q, head + n);
}

#endif /* SHMRING_SPSC_H */

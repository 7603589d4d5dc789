/*
 * shmring/_mpmc.h -- the multi-producer/multi-consumer ring protocol, with
 * no Python in it: per-slot sequence numbers in the manner of Dmitry
 * Vyukov's bounded MPMC queue, batch claims (one CAS for k slots), claim
 * announcements that let a survivor recover a slot whose claimer died, and
 * the abandoned-slot mark.  tests/tsan/mpmc_tsan.c runs it between threads
 * under ThreadSanitizer.  The argument is in docs/design.md, "Many producers
 * and consumers".
 *
 * Positions are free-running 64-bit counters below INDEX_LIMIT; position p
 * lives in slot p % capacity, whose sequence word says whose turn it is:
 *
 *   seq == 2p                 free: the producer that claims p may write it
 *   seq == 2p + 1             published: the consumer that claims p may read it
 *   seq == (2p + 1) | ABANDONED  claimed by a producer that never published
 *                             (it died, or a reserve() block raised): the
 *                             consumer that claims p skips it
 *   seq == 2(p + capacity)    released by the consumer of p: free for the
 *                             producer of p + capacity (the next lap)
 *
 * Turns are 2p and 2p + 1 rather than Vyukov's p and p + 1 so that a ring
 * of one slot works: there, "published p" (p + 1) would read as "free for
 * p + 1".  With doubled turns no two states of a slot ever share a value.
 *
 * A producer claims [p, p + k) by checking that those k slots are free and
 * moving `head` from p to p + k with one CAS; a consumer claims [p, p + k)
 * of published (or abandoned) slots by moving `tail` the same way.  Before
 * its CAS, a claimer announces [p, p + k) in two words of its own endpoint
 * entry, and clears them after it has published (released) the slots.  So a
 * claim whose claimer is alive is always announced, and a survivor that
 * finds a slot stuck past its claim (seq still p although head > p) and no
 * live process announcing p knows the claimer is dead: it marks the slot
 * abandoned (a dead producer's) or released (a dead consumer's).
 */
#ifndef SHMRING_MPMC_H
#define SHMRING_MPMC_H

#include <limits.h>

#include "_atomic.h"

#ifndef INDEX_LIMIT
#define INDEX_LIMIT ((uint64_t)1 << 62)
#endif
#define MPMC_ABANDONED ((uint64_t)1 << 63)
/* A Queue's record spans several slots: every slot but its first is published
 * with this mark (see _queue.c), so positions there stay below 2^61. */
#define MPMC_BODY ((uint64_t)1 << 62)
#define MPMC_NO_CLAIM UINT64_MAX

typedef struct {
    a64 *head;                /* next position a producer claims */
    a64 *tail;                /* next position a consumer claims */
    a32 *consumer_waiters;    /* epoch << 16 | consumers asleep on a slot's sequence word */
    a32 *producer_waiters;    /* likewise, producers */
    a64 *seq;                 /* capacity sequence words */
    char *data;               /* slot 0 */
    uint64_t capacity;
    size_t slot_size;
    uint64_t flags;           /* marks a sequence word may carry: MPMC_ABANDONED, and MPMC_BODY for a Queue */
    uint64_t limit;           /* positions at or past this are impossible (INDEX_LIMIT; 2^61 for a Queue) */
} mpmc_t;

/* A claimer's announcement: two words of its endpoint entry.  Written
 * only by their owner: end first, then start, so a reader that loads start
 * then end sees either the old claim, the new one, or the old start with the
 * new end -- a superset of one of them, which is the safe direction. */
typedef struct {
    a64 *start; /* MPMC_NO_CLAIM when nothing is claimed */
    a64 *end;
} mpmc_claim_t;

/* The sequence value that gives position pos to a producer (ready = 0) or
 * to a consumer (ready = 1). */
static inline uint64_t
mpmc_turn(uint64_t pos, uint64_t ready)
{
    return 2 * pos + ready;
}

static inline a64 *
mpmc_seq(const mpmc_t *q, uint64_t pos)
{
    return q->seq + pos % q->capacity;
}

static inline char *
mpmc_slot(const mpmc_t *q, uint64_t pos)
{
    return q->data + (pos % q->capacity) * q->slot_size;
}

static inline void
mpmc_announce(mpmc_claim_t c, uint64_t start, uint64_t end)
{
    /* SYNC POINT (seq_cst): the announcement is in the total order before
     * our claiming CAS, so a survivor that has seen the claim (a seq_cst load
     * of head or tail past start) and then scans the announcements sees it. */
    atomic_store_explicit(c.end, end, memory_order_seq_cst);
    atomic_store_explicit(c.start, start, memory_order_seq_cst);
}

static inline void
mpmc_unannounce(mpmc_claim_t c)
{
    /* SYNC POINT (release): after our sequence stores; a survivor that sees
     * no claim of ours also sees the slots we published (released). */
    atomic_store_explicit(c.start, MPMC_NO_CLAIM, memory_order_release);
}

/* Wake the sleepers of one side after a sequence word changed. */
static inline void
mpmc_wake_if_waiting(a32 *waiters, a64 *word)
{
    /* SYNC POINT (seq_cst fence): our sequence store before the load of the
     * waiter count; pairs with the waiter's fence between its increment and
     * its re-read of the word (as in _spsc.h). */
    atomic_thread_fence(memory_order_seq_cst);
    if ((atomic_load_explicit(waiters, memory_order_relaxed) & WAITERS_COUNT_MASK) != 0) {
        futex_wake_raw((char *)word + LOW_HALF, INT_MAX);
    }
}

/* The one claim loop of both sides.  A slot is ready for the claimer of
 * position p when its sequence word (abandoned bit aside) reads p + `ready`:
 * 0 for a producer (free), 1 for a consumer (published).  Claims up to
 * `want` ready slots from `*position` with one CAS and returns how many
 * (0: none ready -- full, or empty -- at *pos_out), or -1 when the header
 * holds an impossible position or sequence word.  `contiguous` stops the
 * claim where the data area wraps; `uniform` stops it where the abandoned
 * bit changes, so a borrowed run is all items or all holes.  On success
 * the claim is announced. */
static inline int64_t
mpmc_claim(mpmc_t *q, mpmc_claim_t c, a64 *position, uint64_t ready, uint64_t want, int contiguous, int uniform,
           uint64_t *pos_out)
{
    int announced = 0;
    for (;;) {
        /* SYNC POINT (seq_cst): ordered with the announcement and the CAS
         * below; an older value only makes the CAS fail. */
        uint64_t pos = atomic_load_explicit(position, memory_order_seq_cst);
        *pos_out = pos;
        if (pos >= q->limit) return -1;
        uint64_t limit = want < q->capacity ? want : q->capacity;
        if (contiguous && limit > q->capacity - pos % q->capacity) limit = q->capacity - pos % q->capacity;
        uint64_t k = 0, s = 0, first_bit = 0;
        while (k < limit) {
            /* SYNC POINT (acquire): pairs with the other side's release of
             * this sequence word (mpmc_publish, mpmc_release, the repairs):
             * the producer's bytes are visible, or the consumer's reads are
             * done. */
            uint64_t word = atomic_load_explicit(mpmc_seq(q, pos + k), memory_order_acquire);
            s = word & ~q->flags;
            if (s != mpmc_turn(pos + k, ready)) break;
            if (k == 0) first_bit = word & MPMC_ABANDONED;
            else if (uniform && (word & MPMC_ABANDONED) != first_bit) break;
            k++;
        }
        if (k == 0) {
            if ((int64_t)(s - mpmc_turn(pos, ready)) < 0) {
                /* Not ready yet: full (a previous lap is still being read) or
                 * empty (not published).  Withdraw what a lost CAS left
                 * announced: a stale claim of ours would keep a survivor from
                 * repairing a dead claimer's slot. */
                if (announced) mpmc_unannounce(c);
                return 0;
            }
            /* The slot is past pos: another claimer took pos, and its CAS
             * happened before the store we just acquired, so a fresh load
             * of the position shows it moved.  If it did not, the header is
             * corrupt (a hostile segment must not spin us forever). */
            if (atomic_load_explicit(position, memory_order_seq_cst) == pos) {
                if (announced) mpmc_unannounce(c);
                return -1;
            }
            continue;
        }
        mpmc_announce(c, pos, pos + k);
        announced = 1;
        inject_delay();
        uint64_t seen = pos;
        /* SYNC POINT (seq_cst CAS): claims [pos, pos + k); only the winner uses them. */
        if (atomic_compare_exchange_strong_explicit(position, &seen, pos + k, memory_order_seq_cst,
                                                    memory_order_seq_cst)) {
            return (int64_t)k;
        }
    }
}

/* Claim up to `want` free slots for writing (see mpmc_claim); publish them
 * with mpmc_publish. */
static inline int64_t
mpmc_claim_put(mpmc_t *q, mpmc_claim_t c, uint64_t want, uint64_t *pos_out)
{
    return mpmc_claim(q, c, q->head, 0, want, 0, 0, pos_out);
}

/* Publish [pos, pos + k) claimed by mpmc_claim_put; `abandon` marks them to
 * be skipped instead (a reserve() block that raised). */
static inline void
mpmc_publish(mpmc_t *q, mpmc_claim_t c, uint64_t pos, uint64_t k, int abandon)
{
    for (uint64_t i = 0; i < k; i++) {
        uint64_t v = mpmc_turn(pos + i, 1);
        if (abandon) v |= MPMC_ABANDONED;
        /* SYNC POINT (release): pairs with the consumer's acquire load of this
         * sequence word in mpmc_claim_get; the slot's bytes are visible first. */
        atomic_store_explicit(mpmc_seq(q, pos + i), v,
                              broken == BROKEN_RELAXED_PUBLISH ? memory_order_relaxed : memory_order_release);
    }
    mpmc_unannounce(c);
    mpmc_wake_if_waiting(q->consumer_waiters, mpmc_seq(q, pos));
}

/* Claim up to `want` published (or abandoned) slots for reading; a
 * `contiguous` claim (a borrowed view) neither wraps past the end of the
 * data area nor mixes items with holes (see mpmc_claim).  Release them with
 * mpmc_release. */
static inline int64_t
mpmc_claim_get(mpmc_t *q, mpmc_claim_t c, uint64_t want, int contiguous, uint64_t *pos_out)
{
    return mpmc_claim(q, c, q->tail, 1, want, contiguous, contiguous, pos_out);
}

/* True if the claimed slot at pos was abandoned by its producer. */
static inline int
mpmc_abandoned(const mpmc_t *q, uint64_t pos)
{
    if (broken == BROKEN_SKIP_ABANDONED_CHECK) return 0;
    /* Relaxed: our acquire load in mpmc_claim_get already saw this value. */
    return (atomic_load_explicit(mpmc_seq(q, pos), memory_order_relaxed) & MPMC_ABANDONED) != 0;
}

/* Release [pos, pos + k) claimed by mpmc_claim_get: free for the next lap. */
static inline void
mpmc_release(mpmc_t *q, mpmc_claim_t c, uint64_t pos, uint64_t k)
{
    for (uint64_t i = 0; i < k; i++) {
        /* SYNC POINT (release): pairs with the producer's acquire load in
         * mpmc_claim_put; our reads of the slot finish before it is reused. */
        atomic_store_explicit(mpmc_seq(q, pos + i), mpmc_turn(pos + i + q->capacity, 0), memory_order_release);
    }
    mpmc_unannounce(c);
    mpmc_wake_if_waiting(q->producer_waiters, mpmc_seq(q, pos));
}

/* A survivor's repair of a slot whose claimer is known dead (the caller has
 * seen the claim -- head (tail) past pos -- and then found no live process
 * announcing pos).  A dead producer's slot becomes abandoned; a dead
 * consumer's slot becomes free.  Returns 1 if this call repaired it, 0 if
 * the slot had moved on (its claimer published after all, or another
 * survivor repaired it first). */
static inline int
mpmc_repair_put(mpmc_t *q, uint64_t pos)
{
    uint64_t seen = mpmc_turn(pos, 0);
    /* SYNC POINT (seq_cst CAS): one repairer wins, and only while the slot
     * is still unpublished. */
    if (!atomic_compare_exchange_strong_explicit(mpmc_seq(q, pos), &seen, mpmc_turn(pos, 1) | MPMC_ABANDONED,
                                                 memory_order_seq_cst, memory_order_seq_cst)) {
        return 0;
    }
    mpmc_wake_if_waiting(q->consumer_waiters, mpmc_seq(q, pos));
    return 1;
}

static inline int
mpmc_repair_get(mpmc_t *q, uint64_t pos)
{
    uint64_t word = atomic_load_explicit(mpmc_seq(q, pos), memory_order_seq_cst);
    if ((word & ~q->flags) != mpmc_turn(pos, 1)) return 0;
    /* SYNC POINT (seq_cst CAS): as in mpmc_repair_put; the dead consumer's
     * item counts as taken. */
    if (!atomic_compare_exchange_strong_explicit(mpmc_seq(q, pos), &word, mpmc_turn(pos + q->capacity, 0),
                                                 memory_order_seq_cst, memory_order_seq_cst)) {
        return 0;
    }
    mpmc_wake_if_waiting(q->producer_waiters, mpmc_seq(q, pos));
    return 1;
}

/* Is `pos` inside the claim a (start, end) announcement names?  Read start
 * first, then end (see mpmc_claim_t). */
static inline int
mpmc_announces(mpmc_claim_t c, uint64_t pos)
{
    /* SYNC POINT (seq_cst): pairs with mpmc_announce; see mpmc_claim_t. */
    uint64_t start = atomic_load_explicit(c.start, memory_order_seq_cst);
    uint64_t end = atomic_load_explicit(c.end, memory_order_seq_cst);
    return start != MPMC_NO_CLAIM && start <= pos && pos < end;
}

/* A survivor's question before any repair: is the claim point of one side
 * stuck behind a claim?  Returns how many consecutive positions from
 * *pos_out are claimed and not finished by the other side (0: none):
 *   consumer side (`producers_claim`): positions from tail that a producer
 *     has claimed (head is past them) and not published (seq == 2p);
 *   producer side: positions from head - capacity that a consumer has
 *     claimed (tail is past them) and not released (seq == 2p + 1).
 * The claim point is loaded before the other side's position, and both
 * before the sequence words, so a position reported here was claimed before
 * the caller goes on to read the announcements (see mpmc_claim_t). */
static inline uint64_t
mpmc_stuck(mpmc_t *q, int producers_claim, uint64_t *pos_out)
{
    /* SYNC POINT (seq_cst) x2: a position seen past p means p's claiming CAS
     * (and the announcement before it) happened before our later loads. */
    uint64_t tail = atomic_load_explicit(q->tail, memory_order_seq_cst);
    uint64_t head = atomic_load_explicit(q->head, memory_order_seq_cst);
    uint64_t pos, end, ready;
    if (producers_claim) {
        pos = tail, end = head, ready = 0;
    }
    else {
        if (head < q->capacity) return 0;
        pos = head - q->capacity, end = tail, ready = 1;
    }
    if (end >= q->limit || pos >= end) return 0;
    if (!producers_claim) {
        /* Slots already released for the next lap hold no one up: a
         * producer may need a run of slots (a Queue's record), and the one
         * that blocks it is the first not yet released. */
        for (uint64_t i = 0; i < q->capacity && pos < end; i++, pos++) {
            /* SYNC POINT (acquire): as below. */
            uint64_t s = atomic_load_explicit(mpmc_seq(q, pos), memory_order_acquire) & ~q->flags;
            if (s != mpmc_turn(pos + q->capacity, 0)) break;
        }
    }
    *pos_out = pos;
    if (pos >= end) return 0;
    uint64_t n = 0;
    while (pos + n < end && n < q->capacity) {
        /* SYNC POINT (acquire): as in mpmc_claim. */
        uint64_t s = atomic_load_explicit(mpmc_seq(q, pos + n), memory_order_acquire) & ~q->flags;
        if (s != mpmc_turn(pos + n, ready)) break;
        n++;
    }
    return n;
}

/* Copy k items between `buf` and the slots of [pos, pos + k), wrapping at
 * the end of the data area. */
static inline void
mpmc_copy_in(const mpmc_t *q, uint64_t pos, const char *src, uint64_t k)
{
    uint64_t slot = pos % q->capacity;
    uint64_t first = q->capacity - slot < k ? q->capacity - slot : k;
    memcpy(q->data + slot * q->slot_size, src, first * q->slot_size);
    if (k > first) memcpy(q->data, src + first * q->slot_size, (k - first) * q->slot_size);
}

/* Copy the items (not the holes) of the claimed [pos, pos + k) to dst, one
 * after another; returns how many. */
static inline uint64_t
mpmc_copy_out(const mpmc_t *q, uint64_t pos, char *dst, uint64_t k)
{
    uint64_t n = 0;
    for (uint64_t i = 0; i < k; i++) {
        if (mpmc_abandoned(q, pos + i)) continue;
        memcpy(dst + n * q->slot_size, mpmc_slot(q, pos + i), q->slot_size);
        n++;
    }
    return n;
}

/* Items (not holes) in the claimed [pos, pos + k). */
static inline uint64_t
mpmc_items_in(const mpmc_t *q, uint64_t pos, uint64_t k)
{
    uint64_t n = 0;
    for (uint64_t i = 0; i < k; i++) n += !mpmc_abandoned(q, pos + i);
    return n;
}

/* Initialise the sequence words of a new ring: every slot free for lap 0
 * (shmring/ring.py does the same for a new region). */
static inline void
mpmc_init(mpmc_t *q)
{
    for (uint64_t i = 0; i < q->capacity; i++) {
        atomic_store_explicit(q->seq + i, mpmc_turn(i, 0), memory_order_relaxed);
    }
}

#endif /* SHMRING_MPMC_H */

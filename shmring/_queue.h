/*
 * shmring/_queue.h -- a Queue's framed records over the multi ring's slots,
 * with no Python in it (shmring/_queue.c is the Python object's side;
 * tests/tsan/queue_tsan.c runs this between threads under ThreadSanitizer).
 * The claim protocol, its announcements and repairs are _mpmc.h's.
 *
 * A record is k consecutive slots of one lap that never wrap the data area
 * (a producer whose record would wrap first claims the slots to the end as
 * a pad record), so its payload is one contiguous run of bytes that
 * borrow() can view in place.  Its first slot starts with a 16-byte header:
 *
 *   word 0   payload bytes L (after the header)
 *   word 1   kind (low half) | number of parts n (high half)
 *
 * then, when n > 1, a table of the n part lengths (8 bytes each), then the
 * parts, each starting 16 bytes aligned (offsets below are from the end of
 * the header: the first part at align16(8n), or 0 when n == 1; part i + 1
 * at align16(end of part i); L is the end of the last part).
 *
 * A producer checks that its k slots are free and claims them with one CAS
 * of head, announcing the claim first as a Ring's producers do.  It
 * publishes the body slots marked MPMC_BODY first and the first slot
 * unmarked last, so a consumer that sees the first slot published sees the
 * whole record.  A consumer reads the header of the published slot at tail,
 * checks the k slots it names, and claims them with one CAS of tail.  It
 * learns k before that CAS from the slot's *record word* (length and kind,
 * in an array beside the sequence words), read with a relaxed atomic load
 * since it may race a producer of a later lap, and trusts it only once the
 * CAS succeeds: tail was still at the record, so no one had consumed it, so
 * no producer could have reused it.  The record's bytes (its 16-byte header
 * included) are read only after the claim: never raced.
 *
 * A producer that died after its CAS leaves unpublished slots, which a
 * survivor marks abandoned (mpmc_repair_put, as for a Ring).  A consumer at
 * tail that finds an abandoned or body-marked slot stands on the remains of
 * dead producers' records (consumers only ever stop at record starts): it
 * frees the run of abandoned and body-marked slots and goes on.  The run
 * never reaches into a live producer's record, whose first slot reads
 * unpublished or published unmarked until it is done.  A dead consumer's
 * slots are freed by mpmc_repair_get.  The argument is in docs/design.md,
 * "Queue".
 *
 * Every function returning int returns -1 for a corrupt segment (a position
 * or header no valid queue can hold) and never touches memory outside the
 * data area: positions are checked against the limit, lengths against the
 * capacity.
 */
#ifndef SHMRING_QUEUE_H
#define SHMRING_QUEUE_H

#include "_mpmc.h"

#define Q_HEADER 16
#define Q_ALIGN(n) (((n) + 15) & ~(uint64_t)15)
#define Q_KIND_PAD 0       /* slots a producer skipped to keep its record from wrapping */
#define Q_KIND_BYTES 1     /* shmring/queue.py names the other kinds */
#define Q_KIND_BYTEARRAY 2
#define Q_KIND_PICKLE 4    /* a pickle stream, then its out-of-band buffers */
#define Q_INDEX_LIMIT ((uint64_t)1 << 61)
/* A producer holding an admission under maxsize and no claim says so in its
 * entry: claim start Q_ADMITTING (no position is ever that large, so no
 * survivor reads it as a claim of its). */
#define Q_ADMITTING (UINT64_MAX - 1)
#define Q_ADMIT_VERSION ((uint64_t)1 << 32)
#define Q_LEN_BITS 48 /* a record word: payload length (low bits) | kind << 48 */
#define Q_LEN_MASK (((uint64_t)1 << Q_LEN_BITS) - 1)

typedef struct {
    mpmc_t *m;         /* the multi ring of slots */
    a64 *rec;          /* one record word per slot (after the sequence words) */
    a64 *admitted;     /* maxsize > 0: version << 32 | records admitted and not yet taken (q_admit) */
    a64 *room;         /* bumped when a consumer frees slots: producers sleep on it */
    uint64_t maxsize;  /* records admitted at once (0: no limit) */
    a64 *count_in;     /* statistics, or NULL: messages put, payload bytes put (two words) */
    a64 *count_out;    /* likewise taken */
} queue_t;

/* Add one message of len bytes to a pair of statistics words.  Relaxed: a
 * count that orders nothing (readers only report it).  Both sides count at
 * their claim, so a process killed between its claim and its count leaves
 * it one short, and a producer killed while copying a counted message one
 * over (its remains are never taken). */
static inline void
q_count_message(a64 *words, uint64_t len)
{
    if (words == NULL) return;
    atomic_fetch_add_explicit(&words[0], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&words[1], len, memory_order_relaxed);
}

typedef struct {
    const char *buf;
    uint64_t len;
} q_part_t;

typedef struct {
    uint64_t pos, k, len; /* first position, slots, payload bytes */
    uint32_t kind, nparts;
} q_rec_t;

/* The count in an admission word (see q_admit). */
static inline int64_t
q_admitted_count(uint64_t word)
{
    return (int32_t)(uint32_t)word;
}

/* The sequence words of a run of positions from pos that does not wrap the
 * data area: one modulo for the run, not one per slot (a 1 MiB record is
 * 16 Ki slots, and a division per slot cost more than copying the bytes). */
static inline a64 *
q_seq_run(const mpmc_t *q, uint64_t pos)
{
    return q->seq + pos % q->capacity;
}

/* Slots a record of `len` payload bytes takes. */
static inline uint64_t
q_slots(const queue_t *qq, uint64_t len)
{
    return (Q_HEADER + len + qq->m->slot_size - 1) / qq->m->slot_size;
}

/* The largest payload a record can have: every slot of the ring. */
static inline uint64_t
q_max_len(const queue_t *qq)
{
    return qq->m->capacity * qq->m->slot_size - Q_HEADER;
}

/* Room for a record of k slots at head now?  (A pad to the end counts: it
 * is progress.)  Admission under maxsize too. */
static inline int
q_room_now(queue_t *qq, uint64_t k)
{
    mpmc_t *q = qq->m;
    if (qq->maxsize &&
        q_admitted_count(atomic_load_explicit(qq->admitted, memory_order_relaxed)) >= (int64_t)qq->maxsize) {
        return 0;
    }
    /* SYNC POINT (seq_cst): as the claim loop's load of head. */
    uint64_t pos = atomic_load_explicit(q->head, memory_order_seq_cst);
    if (pos >= q->limit) return 1; /* let the claim raise */
    uint64_t left = q->capacity - pos % q->capacity;
    uint64_t want = k <= left ? k : left;
    a64 *seq = q_seq_run(q, pos);
    for (uint64_t i = 0; i < want; i++) {
        /* SYNC POINT (acquire): as in q_claim_put. */
        uint64_t s = atomic_load_explicit(seq + i, memory_order_acquire) & ~q->flags;
        if ((int64_t)(s - mpmc_turn(pos + i, 0)) < 0) return 0;
    }
    return 1;
}

/* The record word of a slot: what a consumer reads before its claim. */
static inline a64 *
q_record_word(const queue_t *qq, uint64_t pos)
{
    return qq->rec + pos % qq->m->capacity;
}

/* Write a record's header: in its first slot, and its length and kind in
 * the slot's record word too.  A consumer reads the record word before its
 * claim's CAS and may race a producer of a later lap (see the top of this
 * file), so that word is atomic and lives outside the data area, where no
 * memcpy of a payload ever writes; the bytes in the slot are read only by
 * the consumer whose claim succeeded.  The release store of the first
 * slot's sequence word publishes both. */
static inline void
q_write_header(queue_t *qq, uint64_t pos, uint64_t len, uint32_t kind, uint32_t nparts)
{
    uint64_t h[2] = {len, (uint64_t)kind | (uint64_t)nparts << 32};
    memcpy(mpmc_slot(qq->m, pos), h, sizeof h);
    atomic_store_explicit(q_record_word(qq, pos), len | (uint64_t)kind << Q_LEN_BITS, memory_order_relaxed);
}

/* Withdraw a producer's announcement: claim start back to "none", or, for
 * a producer still holding an admission (maxsize), back to its admitting
 * mark: it must never look idle while admitted (Queue._heal_admissions). */
static inline void
q_withdraw(mpmc_claim_t c, uint64_t idle)
{
    /* SYNC POINT (release): as mpmc_unannounce; after our sequence stores. */
    atomic_store_explicit(c.start, idle, memory_order_release);
}

/* Publish the k claimed slots of the record at pos: body first, first slot
 * last; then withdraw the announcement to `idle` (see q_withdraw). */
static inline void
q_publish(queue_t *qq, mpmc_claim_t c, uint64_t pos, uint64_t k, uint64_t idle)
{
    mpmc_t *q = qq->m;
    a64 *seq = q_seq_run(q, pos); /* a record never wraps */
    for (uint64_t i = 1; i < k; i++) {
        /* Relaxed: ordered before the release store of the first slot below,
         * which is what consumers acquire (they never read a body word first). */
        atomic_store_explicit(seq + i, mpmc_turn(pos + i, 1) | MPMC_BODY, memory_order_relaxed);
    }
    inject_delay();
    /* SYNC POINT (release): pairs with the consumer's acquire load in
     * q_claim_get; the header, the payload and the body words are visible
     * first. */
    atomic_store_explicit(seq, mpmc_turn(pos, 1),
                          broken == BROKEN_RELAXED_PUBLISH ? memory_order_relaxed : memory_order_release);
    q_withdraw(c, idle);
    mpmc_wake_if_waiting(q->consumer_waiters, mpmc_seq(q, pos));
}

/* Claim the k slots of one record at head, contiguous in the data area.
 * Returns 1 (claimed at *pos_out), 0 (no room) or -1 (corrupt; LayoutError
 * set).  When the record would wrap, the slots to the end are claimed and
 * published as a pad record first, and the claim starts over at slot 0. */
static inline int
q_claim_put(queue_t *qq, mpmc_claim_t c, uint64_t k, uint64_t idle, uint64_t *pos_out)
{
    mpmc_t *q = qq->m;
    int announced = 0;
    for (;;) {
        /* SYNC POINT (seq_cst): ordered with the announcement and the CAS
         * below, as in mpmc_claim; an older value only makes the CAS fail. */
        uint64_t pos = atomic_load_explicit(q->head, memory_order_seq_cst);
        if (pos >= q->limit) break;
        uint64_t left = q->capacity - pos % q->capacity;
        uint64_t want = k <= left ? k : left;
        uint64_t n = 0, s = 0;
        a64 *seq = q_seq_run(q, pos); /* want <= left: no wrap */
        while (n < want) {
            /* SYNC POINT (acquire): pairs with a consumer's release of this
             * word (q_free, or the repair of a dead one's claim): its reads
             * of the slot are done before we overwrite it. */
            s = atomic_load_explicit(seq + n, memory_order_acquire) & ~q->flags;
            if (s != mpmc_turn(pos + n, 0)) break;
            n++;
        }
        if (n < want) {
            if ((int64_t)(s - mpmc_turn(pos + n, 0)) < 0) {
                /* Not free yet: no room.  Withdraw what a lost CAS left announced. */
                if (announced) q_withdraw(c, idle);
                return 0;
            }
            /* Past its turn: another producer claimed it, and its CAS of head
             * came before the store we acquired; if head did not move, the
             * header is corrupt. */
            if (atomic_load_explicit(q->head, memory_order_seq_cst) == pos) break;
            continue;
        }
        mpmc_announce(c, pos, pos + want);
        announced = 1;
        inject_delay();
        uint64_t seen = pos;
        /* SYNC POINT (seq_cst CAS): claims [pos, pos + want); only the winner writes them. */
        if (!atomic_compare_exchange_strong_explicit(q->head, &seen, pos + want, memory_order_seq_cst,
                                                     memory_order_seq_cst)) {
            continue;
        }
        if (want == k) {
            *pos_out = pos;
            return 1;
        }
        q_write_header(qq, pos, want * q->slot_size - Q_HEADER, Q_KIND_PAD, 0);
        q_publish(qq, c, pos, want, idle);
        announced = 0;
    }
    if (announced) q_withdraw(c, idle);
    *pos_out = atomic_load_explicit(q->head, memory_order_relaxed);
    return -1;
}

static inline void
q_copy_parts(char *dst, const q_part_t *parts, size_t n)
{
    uint64_t off = 0;
    if (n > 1) {
        for (size_t i = 0; i < n; i++) memcpy(dst + 8 * i, &parts[i].len, 8);
        off = Q_ALIGN(8 * (uint64_t)n);
    }
    for (size_t i = 0; i < n; i++) {
        memcpy(dst + off, parts[i].buf, parts[i].len);
        off = Q_ALIGN(off + parts[i].len);
    }
}

/* Payload bytes of a record of these parts. */
static inline uint64_t
q_payload_len(const q_part_t *parts, size_t n)
{
    if (n == 0) return 0;
    uint64_t off = n > 1 ? Q_ALIGN(8 * (uint64_t)n) : 0;
    for (size_t i = 0; i + 1 < n; i++) off = Q_ALIGN(off + parts[i].len);
    return off + parts[n - 1].len;
}

/* Claim the record (or the run of dead producers' remains, kind PAD) at
 * tail.  Returns 1 with *rec, 0 when none is ready, -1 (corrupt). */
static inline int
q_claim_get(queue_t *qq, mpmc_claim_t c, q_rec_t *rec)
{
    mpmc_t *q = qq->m;
    int announced = 0;
    for (;;) {
        /* SYNC POINT (seq_cst): as in mpmc_claim. */
        uint64_t pos = atomic_load_explicit(q->tail, memory_order_seq_cst);
        if (pos >= q->limit) break;
        /* SYNC POINT (acquire): pairs with q_publish's release of the first
         * slot (or a repair's CAS): the header, payload and body words are
         * visible. */
        uint64_t word = atomic_load_explicit(mpmc_seq(q, pos), memory_order_acquire);
        uint64_t s = word & ~q->flags;
        if (s != mpmc_turn(pos, 1)) {
            if ((int64_t)(s - mpmc_turn(pos, 1)) < 0) {
                if (announced) mpmc_unannounce(c);
                return 0; /* empty: not published yet */
            }
            goto moved;
        }
        uint64_t k = 1, len = 0, kind = Q_KIND_PAD;
        if (word & q->flags) {
            /* Dead producers' remains: the run of abandoned and body slots. */
            while (k < q->capacity) {
                /* SYNC POINT (acquire): as above; we only free these slots. */
                uint64_t w = atomic_load_explicit(mpmc_seq(q, pos + k), memory_order_acquire);
                if ((w & ~q->flags) != mpmc_turn(pos + k, 1) || !(w & q->flags)) break;
                k++;
            }
        }
        else {
            /* Relaxed, and trusted only if the CAS below succeeds (see the
             * top of this file); the acquire above saw the producer's store. */
            uint64_t w = atomic_load_explicit(q_record_word(qq, pos), memory_order_relaxed);
            len = w & Q_LEN_MASK;
            kind = w >> Q_LEN_BITS;
            if (len > q_max_len(qq)) goto moved;
            k = q_slots(qq, len);
            if (pos % q->capacity + k > q->capacity) goto moved;
            uint64_t i = 1;
            a64 *seq = q_seq_run(q, pos); /* checked above: no wrap */
            for (; i < k; i++) {
                /* Relaxed: the acquire of the first slot above already saw
                 * these (they were stored before it was released). */
                uint64_t w = atomic_load_explicit(seq + i, memory_order_relaxed);
                if (w != (mpmc_turn(pos + i, 1) | MPMC_BODY)) break;
            }
            if (i < k) goto moved;
        }
        mpmc_announce(c, pos, pos + k);
        announced = 1;
        inject_delay();
        uint64_t seen = pos;
        /* SYNC POINT (seq_cst CAS): claims [pos, pos + k) for this consumer alone. */
        if (atomic_compare_exchange_strong_explicit(q->tail, &seen, pos + k, memory_order_seq_cst,
                                                    memory_order_seq_cst)) {
            *rec = (q_rec_t){pos, k, len, (uint32_t)kind, 0};
            return 1;
        }
        continue;
    moved:
        /* What we read is stale (tail moved on: retry) or corrupt. */
        if (atomic_load_explicit(q->tail, memory_order_seq_cst) == pos) break;
    }
    if (announced) mpmc_unannounce(c);
    rec->pos = atomic_load_explicit(q->tail, memory_order_relaxed);
    return -1;
}

/* Producers sleep on the room word (any freed slot may be the one they
 * need, and a record's slots are many words), so a free bumps it. */
static inline void
q_wake_producers(queue_t *qq)
{
    /* SYNC POINT (release): after our release stores of the slots; a
     * producer that sees the bump re-reads them (qring_wait_room). */
    atomic_fetch_add_explicit(qq->room, 1, memory_order_release);
    mpmc_wake_if_waiting(qq->m->producer_waiters, qq->room);
}

/* Free the claimed slots of a record: each for its next lap. */
static inline void
q_free(queue_t *qq, mpmc_claim_t c, uint64_t pos, uint64_t k)
{
    mpmc_t *q = qq->m;
    /* A record never wraps; a run of dead producers' remains may: two runs. */
    for (uint64_t done = 0; done < k;) {
        uint64_t left = q->capacity - (pos + done) % q->capacity;
        uint64_t n = k - done < left ? k - done : left;
        a64 *seq = q_seq_run(q, pos + done);
        for (uint64_t i = 0; i < n; i++) {
            /* SYNC POINT (release): pairs with the producer's acquire load
             * in q_claim_put; our reads of the slot finish before it is reused. */
            atomic_store_explicit(seq + i, mpmc_turn(pos + done + i + q->capacity, 0), memory_order_release);
        }
        done += n;
    }
    mpmc_unannounce(c);
    q_wake_producers(qq);
}


/* Claim the next record, freeing pads and dead producers' remains on the
 * way.  1 with *rec, 0 (none ready), -1 (error). */
static inline int
q_next(queue_t *qq, mpmc_claim_t c, q_rec_t *rec)
{
    for (;;) {
        int got = q_claim_get(qq, c, rec);
        if (got <= 0) return got;
        if (rec->kind != Q_KIND_PAD) break;
        q_free(qq, c, rec->pos, rec->k);
    }
    /* Relaxed: a count (see q_admit). */
    /* SYNC POINT (release): a take, after our claim (see q_admit). */
    if (qq->maxsize) atomic_fetch_add_explicit(qq->admitted, Q_ADMIT_VERSION - 1, memory_order_release);
    /* Ours now: the slot's own header says how many parts, and must agree
     * with the record word (else the segment is corrupt: drop the record,
     * and say so). */
    uint64_t h[2];
    memcpy(h, mpmc_slot(qq->m, rec->pos), sizeof h);
    if (h[0] != rec->len || (uint32_t)h[1] != rec->kind) {
        q_free(qq, c, rec->pos, rec->k);
        return -1;
    }
    rec->nparts = (uint32_t)(h[1] >> 32);
    if (broken != BROKEN_UNCOUNTED_TAKE) q_count_message(qq->count_out, rec->len);
    return 1;
}

/* Admission under maxsize, before a producer's claim: 1 admitted, 0 full.
 * The admission word is version << 32 | admitted: every change (admit,
 * give back, take, heal) bumps the version, so Queue._heal_admissions' CAS
 * on the value it read fails after any change at all, even one that brought
 * the count back to where it was (ABA: the stress harness found it). */
static inline int
q_admit(queue_t *qq)
{
    if (!qq->maxsize) return 1;
    uint64_t a = atomic_load_explicit(qq->admitted, memory_order_relaxed);
    do {
        if (q_admitted_count(a) >= (int64_t)qq->maxsize) return 0;
        /* SYNC POINT (release): after our admitting mark; a healer's acquire
         * load of this word then sees the mark. */
    } while (!atomic_compare_exchange_weak_explicit(qq->admitted, &a, a + Q_ADMIT_VERSION + 1,
                                                    memory_order_release, memory_order_relaxed));
    return 1;
}
/* Admit a record of len payload bytes and claim its slots: 1 (at *pos,
 * *k slots), 0 (no room now) or -1 (corrupt, *pos the bad position).  The
 * caller then writes it with q_put_end. */
static inline int
q_put_begin(queue_t *qq, mpmc_claim_t c, uint64_t len, uint64_t *pos, uint64_t *k)
{
    uint64_t idle = qq->maxsize ? Q_ADMITTING : MPMC_NO_CLAIM;
    if (qq->maxsize) {
        /* SYNC POINT (seq_cst): the admitting mark is in our entry before
         * the admission's CAS, so a healer that sees the admission (an
         * acquire load of the word after our release RMW) sees the mark,
         * or the claim that replaces it (see Queue._heal_admissions). */
        atomic_store_explicit(c.start, Q_ADMITTING, memory_order_seq_cst);
    }
    if (!q_admit(qq)) {
        if (qq->maxsize) q_withdraw(c, MPMC_NO_CLAIM);
        return 0;
    }
    *k = q_slots(qq, len);
    int got = q_claim_put(qq, c, *k, idle, pos);
    /* Counted at the claim, where our claiming CAS has just drained the
     * store buffer and owns head's line: after the copy, the add would wait
     * for the copy's stores (it cost 10% of a 64-byte put there). */
    if (got > 0) q_count_message(qq->count_in, len);
    if (got <= 0 && qq->maxsize) {
        /* Give the admission back, then drop the mark: never admitted and idle-looking. */
        atomic_fetch_add_explicit(qq->admitted, Q_ADMIT_VERSION - 1, memory_order_release);
        q_withdraw(c, MPMC_NO_CLAIM);
    }
    return got;
}
/* Write and publish the record claimed by q_put_begin. */
static inline void
q_put_end(queue_t *qq, mpmc_claim_t c, uint64_t pos, uint64_t k, uint64_t len, uint32_t kind,
          const q_part_t *parts, size_t n)
{
    q_write_header(qq, pos, len, kind, (uint32_t)n);
    q_copy_parts(mpmc_slot(qq->m, pos) + Q_HEADER, parts, n);
    inject_delay();
    q_publish(qq, c, pos, k, MPMC_NO_CLAIM); /* the message, in the queue, now stands for the admission */
}

/* Messages published and not yet claimed by a consumer, up to `limit`: a
 * walk of [tail, head) that jumps over each published record by its record
 * word and steps over everything else (slots being written, remains, slots
 * consumers took meanwhile).  Exact while no call is under way, a snapshot
 * otherwise; and, unlike a counter, nothing a process killed between two
 * steps can leave wrong. */
static inline uint64_t
q_count(queue_t *qq, uint64_t limit)
{
    mpmc_t *q = qq->m;
    /* SYNC POINT (seq_cst) x2: tail before head, so head - tail is a span
     * that was all claimed by producers. */
    uint64_t pos = atomic_load_explicit(q->tail, memory_order_seq_cst);
    uint64_t head = atomic_load_explicit(q->head, memory_order_seq_cst);
    if (head >= q->limit || pos > head || head - pos > q->capacity) return 0;
    uint64_t n = 0;
    while (pos < head && n < limit) {
        /* SYNC POINT (acquire): as in q_claim_get; the record word is then
         * the publisher's. */
        uint64_t w = atomic_load_explicit(mpmc_seq(q, pos), memory_order_acquire);
        uint64_t k = 1;
        if (w == mpmc_turn(pos, 1)) {
            uint64_t r = atomic_load_explicit(q_record_word(qq, pos), memory_order_relaxed);
            uint64_t len = r & Q_LEN_MASK;
            if (len <= q_max_len(qq)) {
                k = q_slots(qq, len);
                n += (r >> Q_LEN_BITS) != Q_KIND_PAD;
            }
        }
        pos += k;
    }
    return n;
}

#endif /* SHMRING_QUEUE_H */

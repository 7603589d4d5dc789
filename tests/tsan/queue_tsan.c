/*
 * The Queue's record protocol (shmring/_queue.h over _mpmc.h) between
 * threads under ThreadSanitizer, with no Python, including claimers that die.
 *
 * PRODUCERS threads put ITEMS records each, of 8..300 payload bytes through a
 * ring of CAPACITY 64-byte slots (so records span up to 5 slots and pads
 * keep them from wrapping), admitted under a maxsize of MAXSIZE records.  A
 * record's first 8 bytes are (producer << 32 | sequence) and every later byte
 * is derived from them and its offset.  CONSUMERS threads take records and
 * check each whole, and that each producer's records reach each consumer in
 * increasing order.  One more producer "dies" after publishing its record's
 * body slots but not its first slot, and one more consumer dies holding a
 * record it never frees (their announcements stay, their `alive` flag drops,
 * as a SIGKILL leaves them): the survivors must repair both and go on, and
 * consumers must skip the dead record's remains.  At the end every record
 * sent is received exactly once (the dying consumer's counts as taken).
 * Exit 2 on any violation; TSan reports a missing acquire/release pair (exit
 * 66).  SHMRING_BROKEN=relaxed_publish must be caught: scripts/tsan.sh checks.
 *
 * broken-variants: relaxed_publish
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "_queue.h"

#define CAPACITY 13
#define SLOT 64
#define MAXSIZE 6
#define PRODUCERS 2
#define CONSUMERS 2
#define ITEMS 20000
#define MAX_LEN 300
#define ACTORS (PRODUCERS + CONSUMERS + 2)

static mpmc_t m;
static queue_t q;
static a64 head, tail, seqs[CAPACITY], records[CAPACITY], claims[ACTORS][2], admitted, room;
static a64 count_in[2], count_out[2]; /* the statistics words: messages, bytes */
static a32 consumer_waiters, producer_waiters;
static _Alignas(64) char data[CAPACITY * SLOT];
static _Atomic int alive[ACTORS];
static _Atomic uint32_t received[PRODUCERS][ITEMS];
static _Atomic int producers_left = PRODUCERS + 1;

static mpmc_claim_t
claim_of(int actor)
{
    return (mpmc_claim_t){&claims[actor][0], &claims[actor][1]};
}

static void
fail(const char *what, uint64_t a, uint64_t b)
{
    fprintf(stderr, "queue: %s (%llu, %llu)\n", what, (unsigned long long)a, (unsigned long long)b);
    exit(2);
}

static uint64_t
length_of(uint64_t seq)
{
    return 8 + (seq * 37) % (MAX_LEN - 7);
}

static unsigned char
byte_of(uint64_t stamp, uint64_t i)
{
    return (unsigned char)(stamp * 131 + i * 7 + (stamp >> 32));
}

static int
announced_by_the_living(int first, int last, uint64_t pos)
{
    for (int a = first; a < last; a++) {
        if (atomic_load(&alive[a]) && mpmc_announces(claim_of(a), pos)) return 1;
    }
    return 0;
}

/* A producer found no room: free what dead consumers hold (mpmc_stuck
 * starts at the first slot not yet released). */
static void
repair_dead_consumers(void)
{
    uint64_t pos, n = mpmc_stuck(&m, 0, &pos);
    for (uint64_t i = 0; i < n; i++) {
        if (announced_by_the_living(PRODUCERS + 1, ACTORS, pos + i)) break;
        mpmc_repair_get(&m, pos + i);
    }
}

/* A consumer found nothing: mark what dead producers left unpublished. */
static void
repair_dead_producers(void)
{
    uint64_t pos, n = mpmc_stuck(&m, 1, &pos);
    for (uint64_t i = 0; i < n; i++) {
        if (announced_by_the_living(0, PRODUCERS + 1, pos + i)) break;
        mpmc_repair_put(&m, pos + i);
    }
}

static void *
producer(void *arg)
{
    int id = (int)(intptr_t)arg;
    int dies = id == PRODUCERS;
    unsigned char buf[MAX_LEN];
    for (uint64_t seq = 0; seq < ITEMS; seq++) {
        uint64_t len = length_of(seq), stamp = (uint64_t)id << 32 | seq, pos, k;
        memcpy(buf, &stamp, 8);
        for (uint64_t i = 8; i < len; i++) buf[i] = byte_of(stamp, i);
        q_part_t part = {(const char *)buf, len};
        int got;
        while ((got = q_put_begin(&q, claim_of(id), len, &pos, &k)) == 0) {
            repair_dead_consumers();
            sched_yield();
        }
        if (got < 0) fail("impossible head", pos, 0);
        if (dies && seq >= ITEMS / 3 && k > 1) {
            /* SIGKILL after the body was published, before the first slot. */
            q_write_header(&q, pos, len, Q_KIND_BYTES, 1);
            q_copy_parts(mpmc_slot(&m, pos) + Q_HEADER, &part, 1);
            for (uint64_t i = 1; i < k; i++) {
                atomic_store_explicit(q_seq_run(&m, pos) + i, mpmc_turn(pos + i, 1) | MPMC_BODY,
                                      memory_order_release);
            }
            atomic_store(&alive[id], 0);
            break;
        }
        q_put_end(&q, claim_of(id), pos, k, len, Q_KIND_BYTES, &part, 1);
    }
    atomic_fetch_sub(&producers_left, 1);
    return NULL;
}

static void
check(uint64_t stamp, const unsigned char *payload, uint64_t len, uint64_t *last)
{
    uint64_t p = stamp >> 32, s = stamp & 0xFFFFFFFF;
    if (p > PRODUCERS || s >= ITEMS || len != length_of(s)) fail("phantom or reframed record", stamp, len);
    for (uint64_t i = 8; i < len; i++) {
        if (payload[i] != byte_of(stamp, i)) fail("corrupted record", stamp, i);
    }
    if (last[p] != UINT64_MAX && s <= last[p]) fail("reordered", last[p], s);
    last[p] = s;
}

static void *
consumer(void *arg)
{
    int id = (int)(intptr_t)arg;
    int dies = id == ACTORS - 1;
    uint64_t last[PRODUCERS + 1];
    unsigned char payload[MAX_LEN];
    for (int p = 0; p <= PRODUCERS; p++) last[p] = UINT64_MAX;
    for (int taken = 0;; taken++) {
        q_rec_t rec;
        int got = q_next(&q, claim_of(id), &rec);
        if (got < 0) fail("impossible tail", rec.pos, 0);
        if (got == 0) {
            if (atomic_load(&producers_left) == 0 && atomic_load(&tail) >= atomic_load(&head)) return NULL;
            repair_dead_producers();
            sched_yield();
            continue;
        }
        if (rec.kind != Q_KIND_BYTES || rec.nparts != 1 || rec.len > MAX_LEN) fail("bad header", rec.kind, rec.len);
        memcpy(payload, mpmc_slot(&m, rec.pos) + Q_HEADER, rec.len);
        uint64_t stamp;
        memcpy(&stamp, payload, 8);
        if (dies && taken > 1000) {
            /* It read its record, then died before freeing it: taken. */
            if ((stamp >> 32) < PRODUCERS) atomic_fetch_add(&received[stamp >> 32][stamp & 0xFFFFFFFF], 1);
            atomic_store(&alive[id], 0);
            return NULL;
        }
        q_free(&q, claim_of(id), rec.pos, rec.k);
        check(stamp, payload, rec.len, last);
        if ((stamp >> 32) < PRODUCERS) atomic_fetch_add(&received[stamp >> 32][stamp & 0xFFFFFFFF], 1);
    }
}

int
main(void)
{
    read_test_environment();
    m = (mpmc_t){&head, &tail, &consumer_waiters, &producer_waiters, seqs, data, CAPACITY, SLOT,
                 MPMC_ABANDONED | MPMC_BODY, Q_INDEX_LIMIT};
    q = (queue_t){&m, records, &admitted, &room, MAXSIZE, count_in, count_out};
    mpmc_init(&m);
    pthread_t t[ACTORS];
    for (int a = 0; a < ACTORS; a++) {
        atomic_store(&alive[a], 1);
        atomic_store(&claims[a][0], MPMC_NO_CLAIM);
        atomic_store(&claims[a][1], 0);
    }
    for (int a = 0; a < ACTORS; a++) {
        pthread_create(&t[a], NULL, a <= PRODUCERS ? producer : consumer, (void *)(intptr_t)a);
    }
    for (int a = 0; a < ACTORS; a++) pthread_join(t[a], NULL);
    for (int p = 0; p < PRODUCERS; p++) {
        for (int s = 0; s < ITEMS; s++) {
            if (atomic_load(&received[p][s]) != 1) fail("lost or duplicated", (uint64_t)p, (uint64_t)s);
        }
    }
    /* Every record received was counted in and out (the dying actors' own may be counted too). */
    uint64_t n = (uint64_t)PRODUCERS * ITEMS;
    if (atomic_load(&count_in[0]) < n || atomic_load(&count_out[0]) < n || atomic_load(&count_out[1]) < 8 * n)
        fail("statistics short", atomic_load(&count_in[0]), atomic_load(&count_out[0]));
    printf("queue: %d producers x %d consumers, %d records of 8..%d bytes each through %d slots, a producer and "
           "a consumer died holding records: every record exactly once, whole, in order per producer\n",
           PRODUCERS, CONSUMERS, ITEMS, MAX_LEN, CAPACITY);
    return 0;
}

/*
 * The MPMC ring protocol (shmring/_mpmc.h) between threads under
 * ThreadSanitizer, with no Python, including claimers that die.
 *
 * PRODUCERS threads put ITEMS items each, in batches of 1..4; every 8-byte
 * word of an item holds (producer << 32 | sequence).  CONSUMERS threads take
 * batches of 1..3 and check each item whole, and that each producer's items
 * reach each consumer in increasing order.  One more producer "dies" holding
 * a claim it never publishes, and one more consumer dies holding a claim it
 * never releases (their announcements stay, their `alive` flag drops, as a
 * SIGKILL leaves them): the survivors must repair both slots and go on.  At
 * the end every item sent is received exactly once (the dying consumer's
 * items count as taken).  Exit 2 on any violation; TSan reports a missing
 * acquire/release pair (exit 66).  SHMRING_BROKEN=relaxed_publish must be
 * caught: scripts/tsan.sh checks.
 *
 * broken-variants: relaxed_publish
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "_mpmc.h"

#define CAPACITY 7
#define WORDS 4
#define PRODUCERS 2
#define CONSUMERS 2
#define ITEMS 40000
#define ACTORS (PRODUCERS + CONSUMERS + 2)

static mpmc_t q;
static a64 head, tail, seqs[CAPACITY], claims[ACTORS][2];
static a32 consumer_waiters, producer_waiters;
static uint64_t slots[CAPACITY][WORDS];
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
    fprintf(stderr, "mpmc: %s (%llu, %llu)\n", what, (unsigned long long)a, (unsigned long long)b);
    exit(2);
}

/* The survivor's check: no live actor in [first, last) announces pos. */
static int
announced_by_the_living(int first, int last, uint64_t pos)
{
    for (int a = first; a < last; a++) {
        if (atomic_load(&alive[a]) && mpmc_announces(claim_of(a), pos)) return 1;
    }
    return 0;
}

/* A producer found the ring full at pos: is a dead consumer holding pos - capacity? */
static void
repair_dead_consumer(uint64_t pos)
{
    uint64_t old = pos - CAPACITY;
    if (pos < CAPACITY || atomic_load(&tail) <= old) return; /* not claimed: just full */
    if (!announced_by_the_living(PRODUCERS + 1, ACTORS, old)) mpmc_repair_get(&q, old);
}

/* A consumer found the ring empty at pos: is a dead producer holding it? */
static void
repair_dead_producer(uint64_t pos)
{
    if (atomic_load(&head) <= pos) return; /* not claimed: just empty */
    if (!announced_by_the_living(0, PRODUCERS + 1, pos)) mpmc_repair_put(&q, pos);
}

static void *
producer(void *arg)
{
    int id = (int)(intptr_t)arg;
    int dies = id == PRODUCERS;
    uint64_t next = 0, pos;
    while (next < ITEMS) {
        uint64_t want = 1 + next % 4;
        if (want > ITEMS - next) want = ITEMS - next;
        int64_t k = mpmc_claim_put(&q, claim_of(id), want, &pos);
        if (k < 0) fail("impossible head", pos, 0);
        if (k == 0) {
            repair_dead_consumer(pos);
            sched_yield();
            continue;
        }
        if (dies && next >= ITEMS / 3) {
            atomic_store(&alive[id], 0); /* SIGKILL between claim and publish */
            break;
        }
        for (int64_t i = 0; i < k; i++) {
            for (int w = 0; w < WORDS; w++) {
                memcpy(mpmc_slot(&q, pos + (uint64_t)i) + w * 8, &(uint64_t){(uint64_t)id << 32 | (next + (uint64_t)i)}, 8);
            }
        }
        mpmc_publish(&q, claim_of(id), pos, (uint64_t)k, 0);
        next += (uint64_t)k;
    }
    atomic_fetch_sub(&producers_left, 1);
    return NULL;
}

static void *
consumer(void *arg)
{
    int id = (int)(intptr_t)arg;
    int dies = id == ACTORS - 1;
    uint64_t last[PRODUCERS + 1], pos, item[3][WORDS];
    for (int p = 0; p <= PRODUCERS; p++) last[p] = UINT64_MAX;
    int taken = 0;
    for (;;) {
        int64_t k = mpmc_claim_get(&q, claim_of(id), 1 + (uint64_t)taken % 3, 0, &pos);
        if (k < 0) fail("impossible tail", pos, 0);
        if (k == 0) {
            if (atomic_load(&producers_left) == 0 && atomic_load(&tail) >= atomic_load(&head)) return NULL;
            repair_dead_producer(pos);
            sched_yield();
            continue;
        }
        int n = 0;
        for (int64_t i = 0; i < k; i++) {
            if (mpmc_abandoned(&q, pos + (uint64_t)i)) continue;
            memcpy(item[n++], mpmc_slot(&q, pos + (uint64_t)i), sizeof item[0]);
        }
        if (dies && taken > 1000) {
            /* It read its items, then died before releasing them: they count as taken. */
            for (int j = 0; j < n; j++) {
                uint64_t p = item[j][0] >> 32, s = item[j][0] & 0xFFFFFFFF;
                if (p < PRODUCERS && s < ITEMS) atomic_fetch_add(&received[p][s], 1);
            }
            atomic_store(&alive[id], 0);
            return NULL;
        }
        mpmc_release(&q, claim_of(id), pos, (uint64_t)k);
        for (int j = 0; j < n; j++) {
            uint64_t p = item[j][0] >> 32, s = item[j][0] & 0xFFFFFFFF;
            for (int w = 1; w < WORDS; w++) {
                if (item[j][w] != item[j][0]) fail("torn item", item[j][0], item[j][w]);
            }
            if (p > PRODUCERS || s >= ITEMS) fail("phantom item", p, s);
            if (last[p] != UINT64_MAX && s <= last[p]) fail("reordered", last[p], s);
            last[p] = s;
            if (p < PRODUCERS) atomic_fetch_add(&received[p][s], 1);
        }
        taken += n;
    }
}

int
main(void)
{
    read_test_environment();
    q = (mpmc_t){&head, &tail, &consumer_waiters, &producer_waiters, seqs, (char *)slots, CAPACITY, sizeof slots[0],
                 MPMC_ABANDONED, INDEX_LIMIT};
    mpmc_init(&q);
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
    printf("mpmc: %d producers x %d consumers, %d items each, a producer and a consumer died "
           "holding claims: every item exactly once, in order per producer\n",
           PRODUCERS, CONSUMERS, ITEMS);
    return 0;
}

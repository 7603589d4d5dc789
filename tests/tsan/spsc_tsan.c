/*
 * The SPSC ring protocol (shmring/_spsc.h, the very code the extension runs)
 * between two threads, under ThreadSanitizer, with no Python.
 *
 * A producer puts ITEMS stamped items (every 8-byte word of an item holds its
 * sequence number) in batches of 1..7, the consumer takes them in batches and
 * checks every word: a lost, duplicated, reordered or torn item exits 2.  A
 * missing acquire/release pair is a data race on the slot bytes, which TSan
 * reports (exit 66).  SHMRING_BROKEN=relaxed_publish (or publish_before_copy)
 * must be caught: scripts/tsan.sh checks both directions.  (TSan does not
 * model the seq_cst fences of the sleeper handshake, -Wno-tsan: they are
 * not exercised here, nobody sleeps; publication is acquire/release.)
 *
 * broken-variants: relaxed_publish publish_before_copy
 *
 *   cc -std=gnu11 -O1 -g -fsanitize=thread -I shmring tests/tsan/spsc_tsan.c -lpthread
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "_spsc.h"

#define CAPACITY 5 /* not a power of two: wrap-around on every lap */
#define WORDS 6    /* 48-byte items */
#define ITEMS 200000

static spsc_t q;

static void
bind_ring(void)
{
    static const ptrdiff_t layout[N_OFFSETS] = {512, 640, 520, 648, 768, 772, 904, 908}; /* as _layout.py */
    size_t header = 4096, slot = WORDS * sizeof(uint64_t);
    size_t size = (header + CAPACITY * slot + 4095) / 4096 * 4096;
    char *base = aligned_alloc(4096, size);
    if (base == NULL) abort();
    memset(base, 0, size);
    q.base = base;
    memcpy(q.off, layout, sizeof layout);
    q.data = base + header;
    q.capacity = CAPACITY;
    q.slot_size = slot;
}

static void *
producer(void *arg)
{
    uint64_t item[7 * WORDS];
    uint64_t next = 0;
    while (next < ITEMS) {
        /* Relaxed: head is written only by this thread. */
        uint64_t head = atomic_load_explicit(SPSC_W64(&q, OFF_HEAD), memory_order_relaxed);
        uint64_t want = 1 + next % 7, space;
        if (want > ITEMS - next) want = ITEMS - next;
        if (spsc_producer_space(&q, head, want, &space) < 0) exit(3);
        if (space == 0) {
            sched_yield();
            continue;
        }
        uint64_t k = want < space ? want : space;
        for (uint64_t i = 0; i < k; i++) {
            for (int w = 0; w < WORDS; w++) item[i * WORDS + w] = next + i;
        }
        spsc_produce(&q, head, (const char *)item, k);
        next += k;
    }
    return arg;
}

static void *
consumer(void *arg)
{
    uint64_t item[7 * WORDS];
    uint64_t expect = 0;
    while (expect < ITEMS) {
        /* Relaxed: tail is written only by this thread. */
        uint64_t tail = atomic_load_explicit(SPSC_W64(&q, OFF_TAIL), memory_order_relaxed);
        uint64_t avail, want = 1 + expect % 5;
        if (spsc_consumer_avail(&q, tail, want, &avail) < 0) exit(3);
        if (avail == 0) {
            sched_yield();
            continue;
        }
        uint64_t k = avail < want ? avail : want;
        spsc_copy_out(&q, tail, (char *)item, k);
        spsc_publish_tail(&q, tail + k);
        for (uint64_t i = 0; i < k; i++) {
            for (int w = 0; w < WORDS; w++) {
                if (item[i * WORDS + w] != expect + i) {
                    fprintf(stderr, "item %llu word %d reads %llu\n", (unsigned long long)(expect + i), w,
                            (unsigned long long)item[i * WORDS + w]);
                    exit(2);
                }
            }
        }
        expect += k;
    }
    return arg;
}

int
main(void)
{
    read_test_environment();
    bind_ring();
    pthread_t p, c;
    pthread_create(&c, NULL, consumer, NULL);
    pthread_create(&p, NULL, producer, NULL);
    pthread_join(p, NULL);
    pthread_join(c, NULL);
    printf("spsc: %d items through %d slots, intact and in order\n", ITEMS, CAPACITY);
    free(q.base);
    return 0;
}

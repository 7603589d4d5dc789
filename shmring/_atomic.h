/*
 * shmring/_atomic.h -- what every structure of the C core shares, with no
 * Python in it: atomic words of a shared mapping, futexes on them, spinning,
 * and the test-only fault and delay injection.  Header-only (static
 * functions), so a Python-free harness (tests/tsan/) compiles the very same
 * code under ThreadSanitizer.
 */
#ifndef SHMRING_ATOMIC_H
#define SHMRING_ATOMIC_H

#include <linux/futex.h>
#include <sched.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#elif defined(__aarch64__)
#define cpu_relax() __asm__ __volatile__("yield" ::: "memory")
#else
#define cpu_relax() ((void)0)
#endif

/* Shared words are accessed through _Atomic views of the mapping.  Both
 * widths must be lock-free, or a process dying inside a lock would wedge
 * every peer. */
_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2, "64-bit atomics must be lock-free");
_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "32-bit atomics must be lock-free");
_Static_assert(sizeof(_Atomic uint64_t) == 8, "_Atomic uint64_t must be 8 bytes");
_Static_assert(sizeof(_Atomic uint32_t) == 4, "_Atomic uint32_t must be 4 bytes");

typedef _Atomic uint64_t a64;
typedef _Atomic uint32_t a32;

/* A futex is a 32-bit word.  Ring indices are 64-bit; sleepers wait on
 * their low half, which changes on every publish. */
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define LOW_HALF 0
#else
#define LOW_HALF 4
#endif

/* A waiter spins SPIN_PAUSES pause instructions (about a microsecond), then yields the
 * core until SPIN_NS have passed, then sleeps on the futex. */
#define SPIN_PAUSES 64u
#define SPIN_NS 30000LL

#define ROLE_PRODUCER 1
#define ROLE_CONSUMER 2

/* A sleeper-count word is epoch << 16 | count.  A successor taking a
 * single-producer (single-consumer) role bumps the epoch and zeroes the
 * count, forgetting sleepers that died asleep; a late decrement from a
 * predecessor's thread carries the old epoch and is dropped, so it can
 * never wrap the successor's count. */
#define WAITERS_COUNT_MASK 0xFFFFu
#define WAITERS_EPOCH_SHIFT 16

/* ------------------------------------------------------------------ */
/* Test-only fault and delay injection (SHMRING_DELAY, SHMRING_BROKEN). */

enum broken_variant {
    BROKEN_NONE = 0,
    BROKEN_PUBLISH_BEFORE_COPY, /* publish head, then copy the slot */
    BROKEN_RELAXED_PUBLISH,     /* model aarch64: half the slot's stores land after the index */
    BROKEN_OVERWRITE_UNRELEASED, /* producer believes it has one more slot than it has */
    BROKEN_SKIP_ABANDONED_CHECK, /* MPMC consumer delivers a dead producer's hole as an item */
    BROKEN_FREE_BEFORE_COPY,     /* Queue consumer frees a record's slots, then copies it out */
    BROKEN_UNCOUNTED_TAKE        /* Queue consumer takes a message without counting it in the statistics */
};

static int broken = BROKEN_NONE;
static uint32_t delay_permille = 0; /* chance, per window, of a delay */
static uint32_t delay_max_us = 0;   /* longest delay */
static _Thread_local uint64_t rng_state = 0;

static inline uint64_t
rng_next(void)
{
    if (rng_state == 0) {
        rng_state = ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)&rng_state ^ 0x9E3779B97F4A7C15ull;
    }
    /* xorshift64 */
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static inline int64_t
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Widens the window between claim, copy and publish.  Called with or without
 * the GIL; it only busy-waits, so it never touches Python state. */
static inline void
inject_delay(void)
{
    if (delay_permille == 0 || (rng_next() % 1000) >= delay_permille) {
        return;
    }
    int64_t until = now_ns() + (int64_t)(rng_next() % ((uint64_t)delay_max_us + 1)) * 1000;
    while (now_ns() < until) {
        cpu_relax();
    }
}

static inline void
read_test_environment(void)
{
    const char *d = getenv("SHMRING_DELAY");
    if (d != NULL && *d) {
        /* "PERMILLE:MAX_US", e.g. "50:200": 5% of windows get up to 200 us. */
        unsigned long p = 0, us = 0;
        if (sscanf(d, "%lu:%lu", &p, &us) == 2) {
            delay_permille = p > 1000 ? 1000 : (uint32_t)p;
            delay_max_us = us > 1000000 ? 1000000 : (uint32_t)us;
        }
    }
    const char *b = getenv("SHMRING_BROKEN");
    if (b != NULL) {
        if (strcmp(b, "publish_before_copy") == 0) broken = BROKEN_PUBLISH_BEFORE_COPY;
        else if (strcmp(b, "relaxed_publish") == 0) broken = BROKEN_RELAXED_PUBLISH;
        else if (strcmp(b, "overwrite_unreleased") == 0) broken = BROKEN_OVERWRITE_UNRELEASED;
        else if (strcmp(b, "skip_abandoned_check") == 0) broken = BROKEN_SKIP_ABANDONED_CHECK;
        else if (strcmp(b, "free_before_copy") == 0) broken = BROKEN_FREE_BEFORE_COPY;
        else if (strcmp(b, "uncounted_take") == 0) broken = BROKEN_UNCOUNTED_TAKE;
    }
}

/* ------------------------------------------------------------------ */
/* Futex: shared (no FUTEX_PRIVATE_FLAG), since the word lives in a mapping
 * that other processes see at other addresses. */

static inline long
futex_wait_raw(void *addr, uint32_t expected, const struct timespec *rel)
{
    return syscall(SYS_futex, addr, FUTEX_WAIT, expected, rel, NULL, 0);
}

static inline long
futex_wake_raw(void *addr, int n)
{
    return syscall(SYS_futex, addr, FUTEX_WAKE, n, NULL, NULL, 0);
}

/* Undo a sleeper's increment, unless a successor has since reset the count
 * (new epoch): then our increment is already forgotten. */
static inline void
waiters_leave(a32 *waiters, uint32_t epoch)
{
    uint32_t cur = atomic_load_explicit(waiters, memory_order_relaxed);
    while ((cur >> WAITERS_EPOCH_SHIFT) == epoch && (cur & WAITERS_COUNT_MASK) != 0) {
        /* SYNC POINT (seq_cst): as the increment in ring_wait; a failed CAS
         * reloads cur and re-checks the epoch. */
        if (atomic_compare_exchange_weak_explicit(waiters, &cur, cur - 1, memory_order_seq_cst,
                                                  memory_order_relaxed)) {
            return;
        }
    }
}

#endif /* SHMRING_ATOMIC_H */

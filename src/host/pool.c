/* pool.c — vae_pool (vae_pool.h): workers that sleep on a condition variable
 * until the caller posts a loop, then take its parts until none is left.
 *
 * One loop at a time: `run` is taken with a trylock by vae_pool_for, so a
 * second thread calling in meanwhile runs its loop alone instead of waiting
 * (or corrupting the posted one). The posted loop lives in the pool under
 * `mu`; a worker copies it under the lock with its `gen`.
 *
 * Parts are claimed, not assigned: the caller and the workers take the next
 * unclaimed part from `claim` (the loop's generation in the high bits, the
 * next part in the low CLAIM_BITS) with a compare-and-swap, so a part goes
 * to whichever thread is running. With a fixed part per thread, a worker
 * that the scheduler had put behind another process (a busy machine) held
 * up every loop until its next time slice: on 2 CPUs with one of them busy,
 * --threads 2 trained mnist_conv no faster than --threads 1. A claim carries
 * the generation, so a worker that read loop g late can never take a part
 * of loop g + 1 (its compare-and-swap fails on the tag). Such a worker may
 * still read `claim` and take `mu` after its loop's caller has returned (it
 * never calls fn then): vae_pool_destroy is safe because it joins the
 * workers before it frees the pool, and any other teardown must too. `left` (under `mu`)
 * counts the parts not yet finished; whoever finishes the last one wakes
 * the caller, which returns only when it is 0: every claimed part of a loop
 * is done before the next loop is posted. Which thread runs which part does
 * not change the bits (vae_pool.h).
 *
 * A worker that has finished watches for the next loop for up to
 * POOL_SPIN_NS before it sleeps: the CPU backend posts a loop every few
 * hundred microseconds (a 64-image decode chunk is ~10 of them in 1.7 ms), and
 * waking a sleeping thread costs tens of microseconds each time. Only when
 * the pool has no more threads than CPUs: beyond that the watching workers
 * take the time slices the working ones need (a review measured mnist_conv
 * training at --threads 8 on 2 CPUs at 3,500 images/s with the watch, 5,700
 * without). The watch reads `gen` atomically (it is written under `mu` with
 * an atomic store). */
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "vae_core.h"
#include "vae_pool.h"

int vae_cpus_usable(void) {
    long n = 0;
#ifdef CPU_COUNT
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) n = CPU_COUNT(&set);
#endif
    if (n < 1) n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 1024 ? 1024 : (int)n;
}

#define POOL_SPIN_NS 100000 /* 100 us */
#define POOL_MAX_THREADS 1024
#define CLAIM_BITS 16 /* the part index in `claim`, below the generation */
_Static_assert(VAE_POOL_PARTS * POOL_MAX_THREADS < (1 << CLAIM_BITS),
               "a loop's part index must fit below the generation in `claim`");

typedef struct {
    vae_pool *pool;
    int index; /* 1 .. threads - 1: it answers loops of more than `index` parts */
    pthread_t th;
} pool_worker;

struct vae_pool {
    int threads, started; /* started: workers running (threads - 1 once created) */
    int spin;             /* watch before sleeping: threads <= vae_cpus_usable() */
    pool_worker *wk;
    pthread_mutex_t run; /* held by the thread whose loop is posted */
    pthread_mutex_t mu;  /* guards everything below */
    pthread_cond_t go, done;
    uint64_t gen;   /* bumped for each posted loop */
    uint64_t claim; /* atomic: gen << CLAIM_BITS | the next part to take */
    int left;       /* parts of loop gen not yet finished */
    int stop;
    vae_pool_fn fn;
    void *ctx;
    size_t n;
    int parts;
};

static void part_range(size_t n, int parts, int i, size_t *lo, size_t *hi) {
    /* n i / k without overflow for any size_t n: n = q k + r */
    const size_t k = (size_t)parts, q = n / k, r = n % k;
    *lo = q * (size_t)i + r * (size_t)i / k;
    *hi = q * (size_t)(i + 1) + r * (size_t)(i + 1) / k;
}

static int64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* Until the next loop is posted (gen != seen) or POOL_SPIN_NS have passed. */
static void watch(vae_pool *p, uint64_t seen) {
    const int64_t end = now_ns() + POOL_SPIN_NS;
    for (;;) {
        for (int i = 0; i < 64; i++) {
            if (__atomic_load_n(&p->gen, __ATOMIC_ACQUIRE) != seen) return;
#if defined(__x86_64__) || defined(__i386__)
            __builtin_ia32_pause();
#endif
        }
        if (now_ns() > end) return;
    }
}

/* Takes and runs parts of loop `gen` until none is left; returns how many. */
static int run_parts(vae_pool *p, uint64_t gen, vae_pool_fn fn, void *ctx, size_t n, int parts) {
    const uint64_t tag = gen << CLAIM_BITS, mask = ((uint64_t)1 << CLAIM_BITS) - 1;
    int ran = 0;
    uint64_t w = __atomic_load_n(&p->claim, __ATOMIC_ACQUIRE);
    while ((w & ~mask) == tag && (int)(w & mask) < parts) {
        if (!__atomic_compare_exchange_n(&p->claim, &w, w + 1, 0, __ATOMIC_ACQ_REL,
                                         __ATOMIC_ACQUIRE))
            continue; /* w now holds the current word */
        size_t lo, hi;
        part_range(n, parts, (int)(w & mask), &lo, &hi);
        fn(ctx, lo, hi);
        ran++;
        w = __atomic_load_n(&p->claim, __ATOMIC_ACQUIRE);
    }
    return ran;
}

static void *worker_main(void *arg) {
    pool_worker *w = (pool_worker *)arg;
    vae_pool *p = w->pool;
    uint64_t seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        if (p->spin && p->gen == seen && !p->stop) {
            pthread_mutex_unlock(&p->mu);
            watch(p, seen);
            pthread_mutex_lock(&p->mu);
        }
        while (p->gen == seen && !p->stop) pthread_cond_wait(&p->go, &p->mu);
        if (p->stop) break;
        seen = p->gen;
        if (w->index < p->parts) {
            const vae_pool_fn fn = p->fn;
            void *ctx = p->ctx;
            const size_t n = p->n;
            const int parts = p->parts;
            pthread_mutex_unlock(&p->mu);
            const int ran = run_parts(p, seen, fn, ctx, n, parts);
            pthread_mutex_lock(&p->mu);
            p->left -= ran;
            if (ran && p->left == 0) pthread_cond_signal(&p->done);
        }
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

void vae_pool_destroy(vae_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->go);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->started; i++) pthread_join(p->wk[i].th, NULL);
    pthread_cond_destroy(&p->go);
    pthread_cond_destroy(&p->done);
    pthread_mutex_destroy(&p->mu);
    pthread_mutex_destroy(&p->run);
    free(p->wk);
    free(p);
}

vae_pool *vae_pool_create(int threads) {
    const int cpus = vae_cpus_usable();
    if (threads <= 0) threads = cpus;
    if (threads > POOL_MAX_THREADS) threads = POOL_MAX_THREADS;
    vae_pool *p = (vae_pool *)vae_calloc(1, sizeof *p);
    if (!p) return NULL;
    p->threads = threads;
    p->spin = threads <= cpus;
    p->wk = (pool_worker *)vae_calloc((size_t)threads, sizeof *p->wk);
    if (!p->wk) {
        free(p);
        return NULL;
    }
    pthread_mutex_init(&p->run, NULL);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->go, NULL);
    pthread_cond_init(&p->done, NULL);
    for (int i = 0; i < threads - 1; i++) {
        p->wk[i].pool = p;
        p->wk[i].index = i + 1;
        int e = pthread_create(&p->wk[i].th, NULL, worker_main, &p->wk[i]);
        if (e) {
            vae_error_set(VAE_EIO, "starting CPU worker thread %d of %d: %s", i + 1, threads - 1,
                          strerror(e));
            vae_pool_destroy(p);
            return NULL;
        }
        p->started++;
    }
    return p;
}

int vae_pool_threads(const vae_pool *p) { return p ? p->threads : 1; }

void vae_pool_for(vae_pool *p, size_t n, size_t grain, vae_pool_fn fn, void *ctx) {
    if (n == 0) return;
    size_t k = grain ? n / grain : n;
    if (!p || k < 2 || p->threads < 2 || pthread_mutex_trylock(&p->run) != 0) {
        fn(ctx, 0, n);
        return;
    }
    if (k > (size_t)p->threads * VAE_POOL_PARTS)
        k = (size_t)p->threads * VAE_POOL_PARTS;
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->ctx = ctx;
    p->n = n;
    p->parts = (int)k;
    p->left = (int)k;
    const uint64_t gen = p->gen + 1;
    __atomic_store_n(&p->claim, gen << CLAIM_BITS, __ATOMIC_RELEASE);
    __atomic_store_n(&p->gen, gen, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&p->go);
    pthread_mutex_unlock(&p->mu);
    const int ran = run_parts(p, gen, fn, ctx, n, (int)k);
    pthread_mutex_lock(&p->mu);
    p->left -= ran;
    while (p->left > 0) pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
    pthread_mutex_unlock(&p->run);
}

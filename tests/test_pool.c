/* test_pool.c — src/host/pool.c (vae_pool.h) and the CPU backend's use of
 * it: every index of a loop is run exactly once, in the parts the header
 * promises (k = min(VAE_POOL_PARTS threads, n / grain), sizes n/k rounded
 * down or up); the parts of one loop run on all the pool's threads at once
 * (a rendezvous that only that many threads can pass); a NULL pool and a
 * pool busy in another thread run the loop in the caller; and the CPU backend's
 * split passes (conv, transposed conv, activations, Adam, conversions,
 * normals) give the same bits with 1 and with 3 threads, the GEMMs it
 * slices included, and those slices compute the product (against double). */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <time.h>

#include "testutil.h"
#include "vae_backend.h"
#include "vae_pool.h"

enum { MAX_PARTS = 64 }; /* >= VAE_POOL_PARTS times the largest pool below */

typedef struct {
    pthread_mutex_t mu;
    unsigned char *hits; /* [n] times index i was run */
    size_t lo[MAX_PARTS], hi[MAX_PARTS];
    pthread_t who[MAX_PARTS];
    int parts;
} record;

static void record_part(void *arg, size_t lo, size_t hi) {
    record *r = (record *)arg;
    for (size_t i = lo; i < hi; i++) r->hits[i]++; /* disjoint parts: no lock needed */
    pthread_mutex_lock(&r->mu);
    if (r->parts < MAX_PARTS) {
        r->lo[r->parts] = lo;
        r->hi[r->parts] = hi;
        r->who[r->parts] = pthread_self();
    }
    r->parts++;
    pthread_mutex_unlock(&r->mu);
}

/* Runs one loop and checks it; returns the number of failed checks. */
static int check_loop(vae_pool *p, size_t n, size_t grain, int threads, int expect_split) {
    record r;
    memset(&r, 0, sizeof r);
    pthread_mutex_init(&r.mu, NULL);
    r.hits = calloc(n ? n : 1, 1);
    vae_pool_for(p, n, grain, record_part, &r);
    int bad = 0;
    for (size_t i = 0; i < n; i++) bad += r.hits[i] != 1;
    size_t k = grain ? n / grain : n;
    if (k < 1) k = 1;
    if (k > (size_t)threads * VAE_POOL_PARTS) k = (size_t)threads * VAE_POOL_PARTS;
    if (!expect_split || threads < 2) k = 1;
    const int want_parts = n == 0 ? 0 : (int)k;
    int ok_parts = r.parts == want_parts;
    /* parts cover [0, n) in order of lo, each n/k or n/k + 1 long */
    size_t covered = 0;
    for (int a = 0; ok_parts && a < r.parts; a++) {
        int at = -1;
        for (int b = 0; b < r.parts; b++)
            if (r.lo[b] == covered) at = b;
        if (at < 0) {
            ok_parts = 0;
            break;
        }
        const size_t len = r.hi[at] - r.lo[at];
        if (len != n / k && len != n / k + 1) ok_parts = 0;
        /* unsplit: on the caller */
        if (want_parts == 1 && !pthread_equal(r.who[at], pthread_self())) ok_parts = 0;
        covered = r.hi[at];
    }
    if (covered != n) ok_parts = 0;
    if (bad || !ok_parts) {
        fprintf(stderr,
                "pool of %d, n %zu, grain %zu: %d indices not run once, %d parts (want %d)\n",
                threads, n, grain, bad, r.parts, want_parts);
    }
    free(r.hits);
    pthread_mutex_destroy(&r.mu);
    return bad + !ok_parts;
}

/* A loop whose parts each wait until `want` distinct threads are inside one
 * (or 10 s have passed): it returns at once only if the pool runs that many
 * parts at the same time, on different threads. */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t in[MAX_PARTS];
    int distinct, want, timed_out;
} rendezvous;

static void rendezvous_part(void *arg, size_t lo, size_t hi) {
    (void)lo, (void)hi;
    rendezvous *r = (rendezvous *)arg;
    pthread_mutex_lock(&r->mu);
    int seen = 0;
    for (int i = 0; i < r->distinct; i++) seen |= pthread_equal(r->in[i], pthread_self());
    if (!seen && r->distinct < MAX_PARTS) r->in[r->distinct++] = pthread_self();
    pthread_cond_broadcast(&r->cv);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 10;
    while (r->distinct < r->want && !r->timed_out)
        if (pthread_cond_timedwait(&r->cv, &r->mu, &until) != 0) r->timed_out = 1;
    pthread_mutex_unlock(&r->mu);
}

static int all_threads_take_part(vae_pool *p, int threads) {
    rendezvous r;
    memset(&r, 0, sizeof r);
    pthread_mutex_init(&r.mu, NULL);
    pthread_cond_init(&r.cv, NULL);
    r.want = threads;
    vae_pool_for(p, (size_t)threads * VAE_POOL_PARTS, 1, rendezvous_part, &r);
    const int ok = !r.timed_out && r.distinct == threads;
    if (!ok)
        fprintf(stderr, "pool of %d: the parts of a loop ran on %d threads at once\n", threads,
                r.distinct);
    pthread_cond_destroy(&r.cv);
    pthread_mutex_destroy(&r.mu);
    return ok;
}

typedef struct {
    vae_pool *p;
    int threads, fails;
} hammer_arg;

static void *hammer(void *arg) {
    hammer_arg *h = (hammer_arg *)arg;
    for (int i = 0; i < 300; i++) {
        /* either this loop gets the workers or it runs alone: both cover it */
        record r;
        memset(&r, 0, sizeof r);
        pthread_mutex_init(&r.mu, NULL);
        size_t n = 1000 + (size_t)i;
        r.hits = calloc(n, 1);
        vae_pool_for(h->p, n, 10, record_part, &r);
        for (size_t j = 0; j < n; j++) h->fails += r.hits[j] != 1;
        h->fails += r.parts < 1 || r.parts > h->threads * VAE_POOL_PARTS;
        free(r.hits);
        pthread_mutex_destroy(&r.mu);
    }
    return NULL;
}

static void test_pool(void) {
    CHECK(vae_cpus_usable() >= 1 && vae_cpus_usable() <= 1024);
    const size_t ns[] = {0, 1, 2, 7, 100, 1000, 12345};
    const size_t grains[] = {0, 1, 10, 1000};
    const int ts[] = {1, 2, 3, 5};
    for (size_t t = 0; t < sizeof ts / sizeof ts[0]; t++) {
        vae_pool *p = vae_pool_create(ts[t]);
        CHECK_MSG(p != NULL, "vae_pool_create(%d): %s", ts[t], vae_error_get());
        if (!p) continue;
        CHECK(vae_pool_threads(p) == ts[t]);
        int fails = 0;
        for (size_t a = 0; a < sizeof ns / sizeof ns[0]; a++)
            for (size_t g = 0; g < sizeof grains / sizeof grains[0]; g++)
                fails += check_loop(p, ns[a], grains[g], ts[t], 1);
        /* the same pool, many loops in a row (each generation acknowledged) */
        for (int rep = 0; rep < 200; rep++) fails += check_loop(p, 64 + (size_t)rep, 4, ts[t], 1);
        CHECK_MSG(fails == 0, "pool of %d: %d failed loops", ts[t], fails);
        if (ts[t] > 1) CHECK(all_threads_take_part(p, ts[t]));

        /* two threads posting loops at once: each covered exactly once */
        hammer_arg h1 = {p, ts[t], 0}, h2 = {p, ts[t], 0};
        pthread_t a, b;
        CHECK(pthread_create(&a, NULL, hammer, &h1) == 0 &&
              pthread_create(&b, NULL, hammer, &h2) == 0);
        pthread_join(a, NULL);
        pthread_join(b, NULL);
        CHECK_MSG(h1.fails == 0 && h2.fails == 0, "pool of %d, two callers: %d + %d failures",
                  ts[t], h1.fails, h2.fails);
        vae_pool_destroy(p);
    }
    /* no pool: one part, on the caller */
    CHECK(check_loop(NULL, 5000, 10, 1, 0) == 0);
    CHECK(vae_pool_threads(NULL) == 1);
    vae_pool_destroy(NULL);
    /* threads <= 0: as many as the CPUs */
    vae_pool *all = vae_pool_create(0);
    CHECK(all && vae_pool_threads(all) == vae_cpus_usable());
    vae_pool_destroy(all);
}

/* ------------------------------------------ the CPU backend, 1 vs 3 threads */

/* Every buffer of a backend, released before it is destroyed. */
enum { MAX_BUFS = 128 };
static struct {
    vae_backend *be;
    void *p;
} g_bufs[MAX_BUFS];
static int g_nbufs;

static void *buf(vae_backend *be, size_t bytes) {
    void *p = be->alloc(be, bytes);
    if (!p || g_nbufs == MAX_BUFS) {
        fprintf(stderr, "test_pool: out of buffers\n");
        exit(1);
    }
    g_bufs[g_nbufs].be = be;
    g_bufs[g_nbufs++].p = p;
    return p;
}

static void release_all(void) {
    for (int i = 0; i < g_nbufs; i++) g_bufs[i].be->release(g_bufs[i].be, g_bufs[i].p);
    g_nbufs = 0;
}

static real *rnd_buf(vae_backend *be, size_t n, unsigned seed, real lo, real hi) {
    real *p = buf(be, n * sizeof(real));
    test_rand_fill_real(p, n, lo, hi, seed);
    return p;
}

static int same(const void *a, const void *b, size_t bytes, const char *what) {
    if (memcmp(a, b, bytes) == 0) return 1;
    fprintf(stderr, "%s differs between 1 and 3 threads\n", what);
    return 0;
}

typedef struct {
    real *out, *din, *dw, *db, *p, *m, *v, *z, *act, *dact, *dense, *ddense, *ddw;
    uint8_t *px;
} run_out;

/* The sizes: every split pass past CPU_GRAIN (16384 elements), every GEMM
 * past 8 x 2^20 multiply-adds (CPU_GEMM_SLICES slices), so that 3 threads
 * split them all. */
enum { B = 96, CI = 16, CO = 32, HI = 16, HO = 8, KK = 3 * 3, DI = 3136, DO = 128 };
#define NIN ((size_t)B * CI * HI * HI)
#define NOUT ((size_t)B * CO * HO * HO)
#define NW ((size_t)CO * CI * KK)
#define NP ((size_t)40000)
#define NZ ((size_t)50000)

static run_out run_ops(vae_backend *be) {
    run_out o;
    const vae_conv_geom g = {CI, HI, HI, CO, HO, HO, 3, 2, 1}; /* 16x16x16 -> 32x8x8 */
    const vae_convt_geom gt = {CO, HO, HO, CI, HI, HI, 3, 2, 1, 1};
    real *in = rnd_buf(be, NIN, 1, -1, 1), *w = rnd_buf(be, NW, 2, -0.3f, 0.3f);
    real *b = rnd_buf(be, CO, 3, -0.1f, 0.1f), *dout = rnd_buf(be, NOUT, 4, -1, 1);
    o.out = buf(be, NOUT * sizeof(real));
    o.din = buf(be, NIN * sizeof(real));
    o.dw = buf(be, NW * sizeof(real));
    o.db = buf(be, CO * sizeof(real));
    be->conv2d_act_forward(be, o.out, in, w, b, &g, B, VAE_ACT_LEAKY_RELU, 0.1f);
    be->conv2d_backward(be, o.din, o.dw, o.db, dout, in, w, &g, B);
    /* the transposed conv back to 16x16x16 and its backward */
    real *wt = rnd_buf(be, NW, 5, -0.3f, 0.3f), *bt = rnd_buf(be, CI, 6, -0.1f, 0.1f);
    o.act = buf(be, NIN * sizeof(real));
    be->convt2d_act_forward(be, o.act, o.out, wt, bt, &gt, B, VAE_ACT_RELU, 0);
    o.dact = buf(be, NIN * sizeof(real));
    be->act_backward(be, o.dact, in, o.act, NIN, VAE_ACT_RELU, 0);
    real *dwt = buf(be, NW * sizeof(real)), *dbt = buf(be, CI * sizeof(real));
    real *dint = buf(be, NOUT * sizeof(real));
    be->convt2d_backward(be, dint, dwt, dbt, o.dact, o.out, wt, &gt, B);
    for (size_t i = 0; i < NOUT; i++) o.out[i] += dint[i]; /* one buffer to compare */
    for (size_t i = 0; i < NW; i++) o.dw[i] += dwt[i];
    /* a dense layer 3136 -> 128 on a batch of 96, forward and backward */
    real *dx = rnd_buf(be, (size_t)B * DI, 12, -1, 1);
    real *dwd = rnd_buf(be, (size_t)DO * DI, 13, -0.05f, 0.05f);
    real *dbd = rnd_buf(be, DO, 14, -0.1f, 0.1f), *dy = rnd_buf(be, (size_t)B * DO, 15, -1, 1);
    o.dense = buf(be, (size_t)B * DO * sizeof(real));
    o.ddense = buf(be, (size_t)B * DI * sizeof(real));
    o.ddw = buf(be, (size_t)DO * DI * sizeof(real));
    real *ddb = buf(be, DO * sizeof(real));
    be->dense_forward(be, o.dense, dx, dwd, dbd, B, DI, DO);
    be->dense_backward(be, o.ddense, o.ddw, ddb, dy, dx, dwd, B, DI, DO);
    /* Adam over 40,000 parameters */
    o.p = rnd_buf(be, NP, 7, -1, 1);
    o.m = rnd_buf(be, NP, 8, -0.1f, 0.1f);
    o.v = rnd_buf(be, NP, 9, 0, 0.01f);
    real *grad = rnd_buf(be, NP, 10, -1, 1);
    vae_adam_hp hp;
    memset(&hp, 0, sizeof hp);
    hp.lr = 1e-3f, hp.beta1 = 0.9f, hp.beta2 = 0.999f, hp.eps = 1e-8f;
    vae_step_vals sv = vae_step_vals_make(4, 0, 4, B, 1, 1, 1);
    double gn = 123.0;
    int bad = 0;
    be->adam_step(be, o.p, grad, o.m, o.v, NP, &hp, 1.0f, &gn, &bad, &sv);
    /* conversions and normals */
    o.px = buf(be, NIN);
    be->to_u8(be, o.px, in, NIN, VAE_LIK_BERNOULLI);
    o.z = buf(be, NZ * sizeof(real));
    be->normal_fill(be, o.z, NZ, 11, VAE_RNG_PRIOR, 0, 3);
    return o;
}

/* The sliced GEMMs against a product in double: dense layers whose three
 * products take every slicing (by columns with op(B) = B and = B^T, by rows
 * with op(A) = A and = A^T), each past 8 x 2^20 multiply-adds. Tolerance:
 * float sums of up to 4096 terms of size ~1, 1e-4 relative to the sum of
 * |terms| (a wrong slice offset is off by O(1)). */
static int dense_check(vae_backend *be, int Bn, int I, int O, unsigned seed) {
    real *x = rnd_buf(be, (size_t)Bn * I, seed, -1, 1);
    real *w = rnd_buf(be, (size_t)O * I, seed + 1, -1, 1);
    real *bias = rnd_buf(be, O, seed + 2, -1, 1);
    real *dy = rnd_buf(be, (size_t)Bn * O, seed + 3, -1, 1);
    real *y = buf(be, (size_t)Bn * O * sizeof(real)), *dx = buf(be, (size_t)Bn * I * sizeof(real));
    real *dw = buf(be, (size_t)O * I * sizeof(real)), *db = buf(be, O * sizeof(real));
    be->dense_forward(be, y, x, w, bias, Bn, I, O);
    be->dense_backward(be, dx, dw, db, dy, x, w, Bn, I, O);
    int bad = 0;
    for (int r = 0; r < Bn; r++) /* y = x w^T + b */
        for (int o = 0; o < O; o++) {
            double acc = bias[o], mag = fabs(bias[o]);
            for (int i = 0; i < I; i++) {
                acc += (double)x[(size_t)r * I + i] * w[(size_t)o * I + i];
                mag += fabs((double)x[(size_t)r * I + i] * w[(size_t)o * I + i]);
            }
            bad += !(fabs(y[(size_t)r * O + o] - acc) <= 1e-4 * mag + 1e-6);
        }
    for (int r = 0; r < Bn; r++) /* dx = dy w */
        for (int i = 0; i < I; i++) {
            double acc = 0, mag = 0;
            for (int o = 0; o < O; o++) {
                acc += (double)dy[(size_t)r * O + o] * w[(size_t)o * I + i];
                mag += fabs((double)dy[(size_t)r * O + o] * w[(size_t)o * I + i]);
            }
            bad += !(fabs(dx[(size_t)r * I + i] - acc) <= 1e-4 * mag + 1e-6);
        }
    for (int o = 0; o < O; o++) /* dw = dy^T x */
        for (int i = 0; i < I; i++) {
            double acc = 0, mag = 0;
            for (int r = 0; r < Bn; r++) {
                acc += (double)dy[(size_t)r * O + o] * x[(size_t)r * I + i];
                mag += fabs((double)dy[(size_t)r * O + o] * x[(size_t)r * I + i]);
            }
            bad += !(fabs(dw[(size_t)o * I + i] - acc) <= 1e-4 * mag + 1e-6);
        }
    if (bad)
        fprintf(stderr, "dense %d x %d -> %d: %d entries off the double product\n", Bn, I, O, bad);
    return bad;
}

static void test_gemm_slices(void) {
    vae_backend *be = vae_backend_cpu_create(3);
    CHECK(be != NULL);
    if (!be) return;
    /* forward: columns, op(B) = w^T; dx: columns, op(B) = w; dw: columns, op(A) = dy^T */
    CHECK(dense_check(be, 96, 3136, 128, 21) == 0);
    /* forward: rows, op(A) = x; dx: rows, op(A) = dy; dw: rows, op(A) = dy^T */
    CHECK(dense_check(be, 4096, 16, 128, 31) == 0);
    release_all();
    be->destroy(be);
}

static void test_backend_threads(void) {
    vae_backend *one = vae_backend_cpu_create(1), *three = vae_backend_cpu_create(3);
    CHECK(one && three);
    if (!one || !three) return;
    run_out a = run_ops(one), b = run_ops(three);
    int ok = same(a.out, b.out, NOUT * sizeof(real), "conv forward + convT data gradient");
    ok &= same(a.din, b.din, NIN * sizeof(real), "conv data gradient");
    ok &= same(a.dw, b.dw, NW * sizeof(real), "conv + convT weight gradients");
    ok &= same(a.db, b.db, CO * sizeof(real), "conv bias gradient");
    ok &= same(a.act, b.act, NIN * sizeof(real), "convT + ReLU forward");
    ok &= same(a.dact, b.dact, NIN * sizeof(real), "ReLU backward");
    ok &= same(a.dense, b.dense, (size_t)B * DO * sizeof(real), "dense forward");
    ok &= same(a.ddense, b.ddense, (size_t)B * DI * sizeof(real), "dense data gradient");
    ok &= same(a.ddw, b.ddw, (size_t)DO * DI * sizeof(real), "dense weight gradient");
    ok &= same(a.p, b.p, NP * sizeof(real), "Adam parameters");
    ok &= same(a.m, b.m, NP * sizeof(real), "Adam m");
    ok &= same(a.v, b.v, NP * sizeof(real), "Adam v");
    ok &= same(a.px, b.px, NIN, "to_u8");
    ok &= same(a.z, b.z, NZ * sizeof(real), "normal_fill");
    CHECK_MSG(ok, "the CPU backend's results depend on its thread count");
    /* and they are not trivially equal: Adam moved the parameters */
    real *p0 = rnd_buf(one, NP, 7, -1, 1);
    CHECK(memcmp(p0, a.p, NP * sizeof(real)) != 0);
    release_all();
    one->destroy(one);
    three->destroy(three);
}

int main(void) {
    test_pool();
    test_gemm_slices();
    test_backend_threads();
    return test_finish();
}

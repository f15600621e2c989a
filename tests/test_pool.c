/* test_pool.c — src/host/pool.c (vae_pool.h) and the CPU backend's use of
 * it: every index of a loop is run exactly once, in the parts the header
 * promises (k = min(threads, n / grain), sizes n/k rounded down or up, part
 * 0 on the caller, the others on other threads); a NULL pool and a pool busy
 * in another thread run the loop in the caller; and the CPU backend's
 * split passes (conv, transposed conv, activations, Adam, conversions,
 * normals) give the same bits with 1 and with 3 threads. */
#include <pthread.h>
#include <stdint.h>

#include "testutil.h"
#include "vae_backend.h"
#include "vae_pool.h"

enum { MAX_PARTS = 64 };

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
    if (k > (size_t)threads) k = (size_t)threads;
    if (!expect_split) k = 1;
    const int want_parts = n == 0 ? 0 : (int)k;
    int ok_parts = r.parts == want_parts;
    /* parts cover [0, n) in order of lo, each n/k or n/k + 1 long */
    size_t covered = 0;
    int distinct = 0;
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
        if (at > 0 && !pthread_equal(r.who[at], r.who[0])) distinct++;
        if (r.lo[at] == 0 && !pthread_equal(r.who[at], pthread_self())) ok_parts = 0;
        covered = r.hi[at];
    }
    if (covered != n) ok_parts = 0;
    /* the parts beyond the caller's run elsewhere when the loop is split */
    if (expect_split && want_parts > 1 && distinct != want_parts - 1) ok_parts = 0;
    if (bad || !ok_parts) {
        fprintf(stderr,
                "pool of %d, n %zu, grain %zu: %d indices not run once, %d parts (want %d), "
                "%d on other threads\n",
                threads, n, grain, bad, r.parts, want_parts, distinct);
    }
    free(r.hits);
    pthread_mutex_destroy(&r.mu);
    return bad + !ok_parts;
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
        h->fails += r.parts < 1 || r.parts > h->threads;
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
enum { MAX_BUFS = 64 };
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
    real *out, *din, *dw, *db, *p, *m, *v, *z, *act, *dact;
    uint8_t *px;
} run_out;

/* Sizes past CPU_GRAIN (16384 elements) in every split pass, so that 3
 * threads do split them. */
static run_out run_ops(vae_backend *be) {
    run_out o;
    enum { B = 24 };
    const vae_conv_geom g = {8, 16, 16, 16, 8, 8, 3, 2, 1}; /* 8x16x16 -> 16x8x8 */
    const vae_convt_geom gt = {16, 8, 8, 8, 16, 16, 3, 2, 1, 1};
    const size_t nin = (size_t)B * 8 * 16 * 16, nout = (size_t)B * 16 * 8 * 8;
    real *in = rnd_buf(be, nin, 1, -1, 1), *w = rnd_buf(be, 16 * 8 * 9, 2, -0.3f, 0.3f);
    real *b = rnd_buf(be, 16, 3, -0.1f, 0.1f), *dout = rnd_buf(be, nout, 4, -1, 1);
    o.out = buf(be, nout * sizeof(real));
    o.din = buf(be, nin * sizeof(real));
    o.dw = buf(be, 16 * 8 * 9 * sizeof(real));
    o.db = buf(be, 16 * sizeof(real));
    be->conv2d_act_forward(be, o.out, in, w, b, &g, B, VAE_ACT_LEAKY_RELU, 0.1f);
    be->conv2d_backward(be, o.din, o.dw, o.db, dout, in, w, &g, B);
    /* the transposed conv back to 8x16x16, its backward into the same buffers' tails */
    real *wt = rnd_buf(be, 16 * 8 * 9, 5, -0.3f, 0.3f), *bt = rnd_buf(be, 8, 6, -0.1f, 0.1f);
    o.act = buf(be, nin * sizeof(real));
    be->convt2d_act_forward(be, o.act, o.out, wt, bt, &gt, B, VAE_ACT_RELU, 0);
    o.dact = buf(be, nin * sizeof(real));
    be->act_backward(be, o.dact, in, o.act, nin, VAE_ACT_RELU, 0);
    real *dwt = buf(be, 16 * 8 * 9 * sizeof(real)), *dbt = buf(be, 8 * sizeof(real));
    real *dint = buf(be, nout * sizeof(real));
    be->convt2d_backward(be, dint, dwt, dbt, o.dact, o.out, wt, &gt, B);
    for (size_t i = 0; i < nout; i++) o.out[i] += dint[i]; /* one buffer to compare */
    for (int i = 0; i < 16 * 8 * 9; i++) o.dw[i] += dwt[i];
    /* Adam over 40,000 parameters */
    const size_t P = 40000;
    o.p = rnd_buf(be, P, 7, -1, 1);
    o.m = rnd_buf(be, P, 8, -0.1f, 0.1f);
    o.v = rnd_buf(be, P, 9, 0, 0.01f);
    real *grad = rnd_buf(be, P, 10, -1, 1);
    vae_adam_hp hp;
    memset(&hp, 0, sizeof hp);
    hp.lr = 1e-3f, hp.beta1 = 0.9f, hp.beta2 = 0.999f, hp.eps = 1e-8f;
    vae_step_vals sv = vae_step_vals_make(4, 0, 4, B, 1, 1, 1);
    double gn = 123.0;
    int bad = 0;
    be->adam_step(be, o.p, grad, o.m, o.v, P, &hp, 1.0f, &gn, &bad, &sv);
    /* conversions and normals */
    o.px = buf(be, nin);
    be->to_u8(be, o.px, in, nin, VAE_LIK_BERNOULLI);
    o.z = buf(be, 50000 * sizeof(real));
    be->normal_fill(be, o.z, 50000, 11, VAE_RNG_PRIOR, 0, 3);
    return o;
}

static void test_backend_threads(void) {
    vae_backend *one = vae_backend_cpu_create(1), *three = vae_backend_cpu_create(3);
    CHECK(one && three);
    if (!one || !three) return;
    run_out a = run_ops(one), b = run_ops(three);
    const size_t nin = 24 * 8 * 16 * 16, nout = 24 * 16 * 8 * 8;
    int ok = same(a.out, b.out, nout * sizeof(real), "conv forward + convT data gradient");
    ok &= same(a.din, b.din, nin * sizeof(real), "conv data gradient");
    ok &= same(a.dw, b.dw, 16 * 8 * 9 * sizeof(real), "conv + convT weight gradients");
    ok &= same(a.db, b.db, 16 * sizeof(real), "conv bias gradient");
    ok &= same(a.act, b.act, nin * sizeof(real), "convT + ReLU forward");
    ok &= same(a.dact, b.dact, nin * sizeof(real), "ReLU backward");
    ok &= same(a.p, b.p, 40000 * sizeof(real), "Adam parameters");
    ok &= same(a.m, b.m, 40000 * sizeof(real), "Adam m");
    ok &= same(a.v, b.v, 40000 * sizeof(real), "Adam v");
    ok &= same(a.px, b.px, nin, "to_u8");
    ok &= same(a.z, b.z, 50000 * sizeof(real), "normal_fill");
    CHECK_MSG(ok, "the CPU backend's results depend on its thread count");
    /* and they are not trivially equal: Adam moved the parameters */
    real *p0 = rnd_buf(one, 40000, 7, -1, 1);
    CHECK(memcmp(p0, a.p, 40000 * sizeof(real)) != 0);
    release_all();
    one->destroy(one);
    three->destroy(three);
}

int main(void) {
    test_pool();
    test_backend_threads();
    return test_finish();
}

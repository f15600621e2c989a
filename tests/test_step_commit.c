/* test_step_commit.c — the training step's on-device bookkeeping, on the CPU
 * backend (whose step_commit is vae_step_commit of vae_math.h, the lines the
 * CUDA kernel runs; test_cuda_ops compares the two).
 *
 * Semantics checked (vae_math.h, "step bookkeeping"):
 *   - a good step adds its sums and its images to the epoch's slots;
 *   - a bad step (adam_step saw a non-finite ||g||^2) is counted, its sums
 *     (NaN, as a bad step's are) are dropped, the first/last bad step index
 *     recorded, and the parameters are unchanged;
 *   - the (max_bad + 1)-th bad step sets HALTED; from then on adam_step
 *     changes nothing (also with a finite norm) and step_commit adds and
 *     counts nothing;
 *   - the step's flag and sums are cleared by every commit;
 *   - step indices beyond 2^32 survive the two-int encoding;
 *   - step_snapshot copies both blocks;
 *   - through the model: forward_backward writes the step slots (not the
 *     epoch's), vae_model_adam uses state[FLAGS] as its flag; the steps'
 *     values come from step_begin on m.step_vals, as vae_step_vals_at says.
 * The step index and image count that step_commit uses, and Adam's bias
 * corrections, come from the step's vae_step_vals block (backend memory).
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "vae_backend.h"
#include "vae_model.h"

enum { N = 37 };

typedef struct {
    vae_backend *be;
    double *acc;  /* [VAE_COMMIT_ACC_N] */
    int *state;   /* [VAE_STEP_STATE_N] */
    real *p, *g, *m, *v;
    double *gn2;
    vae_step_vals *sv; /* the step's values */
} rig;

static void rig_init(rig *r, vae_backend *be) {
    r->be = be;
    r->acc = be->alloc(be, VAE_COMMIT_ACC_N * sizeof(double));
    r->state = be->alloc(be, VAE_STEP_STATE_N * sizeof(int));
    r->p = be->alloc(be, N * sizeof(real));
    r->g = be->alloc(be, N * sizeof(real));
    r->m = be->alloc(be, N * sizeof(real));
    r->v = be->alloc(be, N * sizeof(real));
    r->gn2 = be->alloc(be, sizeof(double));
    r->sv = be->alloc(be, sizeof(vae_step_vals));
    if (!r->acc || !r->state || !r->p || !r->g || !r->m || !r->v || !r->gn2 || !r->sv) {
        fprintf(stderr, "alloc: %s\n", vae_error_get());
        exit(1);
    }
    be->zero(be, r->acc, VAE_COMMIT_ACC_N * sizeof(double));
    be->zero(be, r->state, VAE_STEP_STATE_N * sizeof(int));
    test_rand_fill_real(r->p, N, -1, 1, 1); /* CPU: backend memory is host memory */
    test_rand_fill_real(r->g, N, -1, 1, 2);
    test_rand_fill_real(r->m, N, -0.1, 0.1, 3);
    test_rand_fill_real(r->v, N, 0, 0.01, 4);
}

static void rig_free(rig *r) {
    vae_backend *be = r->be;
    be->release(be, r->sv);
    be->release(be, r->gn2), be->release(be, r->v), be->release(be, r->m);
    be->release(be, r->g), be->release(be, r->p), be->release(be, r->state);
    be->release(be, r->acc);
}

/* The values of step s with n_images images and the bias corrections bc1, bc2,
 * into the rig's block. */
static void put_vals(rig *r, int64_t s, int n_images, real bc1, real bc2) {
    const vae_step_vals v = vae_step_vals_make(s, 0, (uint64_t)s, n_images, 0, bc1, bc2);
    r->be->upload(r->be, r->sv, &v, sizeof v);
}

/* One training step as train.c issues it: the model's sums into the step
 * slots, ||g||^2, Adam with state[FLAGS] as the flag, the commit. */
static void step(rig *r, int64_t s, double recon, double kl, double gnorm2, int n_images,
                 int max_bad) {
    vae_backend *be = r->be;
    const vae_adam_hp hp = {(real)1e-2, (real)0.9, (real)0.999, (real)1e-8, 0, 0};
    put_vals(r, s, n_images, (real)(1 - 0.9), (real)(1 - 0.999));
    r->acc[VAE_COMMIT_STEP_RECON] += recon;
    r->acc[VAE_COMMIT_STEP_KL] += kl;
    *r->gn2 = gnorm2;
    be->adam_step(be, r->p, r->g, r->m, r->v, N, &hp, 0, r->gn2, r->state + VAE_STEP_FLAGS,
                  r->sv);
    be->step_commit(be, r->acc, r->state, r->sv, max_bad);
}

static int64_t st64(const int *state, int slot) { return vae_step_state_i64(state + slot); }

static void test_sequence(vae_backend *be) {
    rig r;
    rig_init(&r, be);
    real p0[N];

    /* step 0, good: added */
    memcpy(p0, r.p, sizeof p0);
    step(&r, 0, 10.5, 2.25, 1.0, 50, 1);
    CHECK(r.acc[VAE_COMMIT_RECON] == 10.5 && r.acc[VAE_COMMIT_KL] == 2.25);
    CHECK(r.acc[VAE_COMMIT_IMAGES] == 50);
    CHECK(r.acc[VAE_COMMIT_STEP_RECON] == 0 && r.acc[VAE_COMMIT_STEP_KL] == 0);
    CHECK(r.state[VAE_STEP_FLAGS] == 0 && r.state[VAE_STEP_NBAD] == 0);
    CHECK(memcmp(p0, r.p, sizeof p0) != 0); /* Adam moved the parameters */

    /* step 1, bad (NaN sums, infinite norm): counted, not added, untouched */
    memcpy(p0, r.p, sizeof p0);
    r.acc[2] = 123.0, r.acc[3] = 4.0, r.acc[4] = 5.0; /* the caller's slots */
    r.acc[VAE_COMMIT_STEP_RECON] = NAN; /* as a NaN loss leaves them */
    *r.gn2 = INFINITY;
    {
        const vae_adam_hp hp = {(real)1e-2, (real)0.9, (real)0.999, (real)1e-8, 0, 0};
        put_vals(&r, 1, 50, (real)0.1, (real)0.001);
        be->adam_step(be, r.p, r.g, r.m, r.v, N, &hp, 0, r.gn2, r.state + VAE_STEP_FLAGS, r.sv);
        CHECK(r.state[VAE_STEP_FLAGS] == VAE_STEP_BAD);
        be->step_commit(be, r.acc, r.state, r.sv, 1);
    }
    CHECK(memcmp(p0, r.p, sizeof p0) == 0);
    CHECK(r.acc[VAE_COMMIT_RECON] == 10.5 && r.acc[VAE_COMMIT_KL] == 2.25);
    CHECK(r.acc[VAE_COMMIT_IMAGES] == 50);
    CHECK(r.acc[VAE_COMMIT_STEP_RECON] == 0 && r.acc[VAE_COMMIT_STEP_KL] == 0);
    CHECK(r.acc[2] == 123.0 && r.acc[3] == 4.0 && r.acc[4] == 5.0);
    CHECK(r.state[VAE_STEP_FLAGS] == 0); /* flag cleared, not halted: 1 <= max_bad */
    CHECK(r.state[VAE_STEP_NBAD] == 1);
    CHECK(st64(r.state, VAE_STEP_FIRST_BAD) == 1 && st64(r.state, VAE_STEP_LAST_BAD) == 1);

    /* step 2, good again: added */
    step(&r, 2, 1.5, 0.75, 4.0, 13, 1);
    CHECK(r.acc[VAE_COMMIT_RECON] == 12.0 && r.acc[VAE_COMMIT_KL] == 3.0);
    CHECK(r.acc[VAE_COMMIT_IMAGES] == 63);
    CHECK(r.state[VAE_STEP_NBAD] == 1 && r.state[VAE_STEP_FLAGS] == 0);

    /* step 3, the second bad step with max_bad = 1: halts */
    memcpy(p0, r.p, sizeof p0);
    step(&r, 3, NAN, 1.0, NAN, 50, 1);
    CHECK(memcmp(p0, r.p, sizeof p0) == 0);
    CHECK(r.state[VAE_STEP_FLAGS] == VAE_STEP_HALTED);
    CHECK(r.state[VAE_STEP_NBAD] == 2);
    CHECK(st64(r.state, VAE_STEP_FIRST_BAD) == 1 && st64(r.state, VAE_STEP_LAST_BAD) == 3);
    CHECK(r.acc[VAE_COMMIT_RECON] == 12.0 && r.acc[VAE_COMMIT_IMAGES] == 63);

    /* steps 4, 5 after the halt, one good, one bad: nothing changes */
    real m0[N], v0[N];
    memcpy(m0, r.m, sizeof m0), memcpy(v0, r.v, sizeof v0);
    step(&r, 4, 7.0, 1.0, 2.0, 50, 1);
    step(&r, 5, 7.0, 1.0, NAN, 50, 1);
    CHECK(memcmp(p0, r.p, sizeof p0) == 0 && memcmp(m0, r.m, sizeof m0) == 0 &&
          memcmp(v0, r.v, sizeof v0) == 0);
    CHECK(r.state[VAE_STEP_FLAGS] == VAE_STEP_HALTED);
    CHECK(r.state[VAE_STEP_NBAD] == 2 && st64(r.state, VAE_STEP_LAST_BAD) == 3);
    CHECK(r.acc[VAE_COMMIT_RECON] == 12.0 && r.acc[VAE_COMMIT_KL] == 3.0);
    CHECK(r.acc[VAE_COMMIT_IMAGES] == 63);
    CHECK(r.acc[VAE_COMMIT_STEP_RECON] == 0 && r.acc[VAE_COMMIT_STEP_KL] == 0);
    for (int i = 6; i < VAE_STEP_STATE_N; i++) CHECK(r.state[i] == 0);

    /* step_snapshot: both blocks, whole */
    double sa[VAE_COMMIT_ACC_N];
    int ss[VAE_STEP_STATE_N];
    memset(sa, 0xff, sizeof sa), memset(ss, 0xff, sizeof ss);
    be->step_snapshot(be, sa, ss, r.acc, r.state);
    CHECK(memcmp(sa, r.acc, sizeof sa) == 0 && memcmp(ss, r.state, sizeof ss) == 0);
    rig_free(&r);

    /* max_bad = 0: the first bad step halts; big step indices */
    rig_init(&r, be);
    const int64_t big = ((int64_t)3 << 32) + 0x89abcdefLL;
    step(&r, big - 1, 1.0, 1.0, 1.0, 8, 0);
    step(&r, big, 1.0, 1.0, INFINITY, 8, 0);
    CHECK(r.state[VAE_STEP_FLAGS] == VAE_STEP_HALTED && r.state[VAE_STEP_NBAD] == 1);
    CHECK(st64(r.state, VAE_STEP_FIRST_BAD) == big && st64(r.state, VAE_STEP_LAST_BAD) == big);
    CHECK(r.acc[VAE_COMMIT_RECON] == 1.0 && r.acc[VAE_COMMIT_IMAGES] == 8);
    int w[2];
    vae_step_state_set_i64(w, -5);
    CHECK(vae_step_state_i64(w) == -5);
    vae_step_state_set_i64(w, INT64_MAX);
    CHECK(vae_step_state_i64(w) == INT64_MAX);
    rig_free(&r);
}

/* Through the model: step slots, epoch slots, the flag word. */
static const char *TINY =
    "[data]\ndataset = mnist\n"
    "[model]\ninput = 1x4x4\nlatent = 2\n"
    "[encoder]\nlayer = flatten\nlayer = dense 6\nlayer = relu\n"
    "[decoder]\nlayer = dense 16\nlayer = reshape 1x4x4\n";

/* Opens step s as train.c does (step_begin on m.step_vals) and checks the
 * block against vae_step_vals_at. */
static const vae_step_vals *begin_step(vae_model *m, const vae_step_plan *plan, int64_t s) {
    vae_backend *be = m->be;
    be->step_begin(be, m->step_vals, plan);
    vae_step_vals got, want;
    be->download(be, &got, m->step_vals, sizeof got);
    vae_step_vals_at(&want, plan, s);
    CHECK_MSG(test_step_vals_equal(&got, &want), "step_begin's block of step %lld",
              (long long)s);
    return m->step_vals;
}

static void test_model(vae_backend *be) {
    vae_config cfg;
    vae_config_defaults(&cfg);
    if (vae_config_parse(&cfg, TINY, "tiny.ini") != VAE_OK) {
        fprintf(stderr, "config: %s\n", vae_error_get());
        g_test_fail++;
        return;
    }
    const int B = 3;
    vae_model m;
    if (vae_model_create(&m, &cfg, be, B) != VAE_OK) {
        fprintf(stderr, "model: %s\n", vae_error_get());
        g_test_fail++;
        vae_config_free(&cfg);
        return;
    }
    vae_model_init_params(&m, 3);
    real x[3 * 16];
    test_rand_fill_real(x, 3 * 16, 0, 1, 9);
    be->upload(be, m.x, x, sizeof x);
    for (int i = 0; i < VAE_STEP_STATE_N; i++) CHECK(m.state[i] == 0);
    /* one batch of B per epoch, beta 1 (kl_scale 1/B), no warm-up; Adam's
     * betas from the config; the model starts with next = 0 */
    const vae_step_plan plan = {B, B, 0, 1.0, cfg.beta1, cfg.beta2, VAE_LR_CONSTANT, 0, 0, 0};
    const vae_step_vals *sv;

    /* a good step: the sums land in the step slots, the commit moves them */
    sv = begin_step(&m, &plan, 0);
    vae_model_forward_backward(&m, B, 7, VAE_RNG_TRAIN, sv);
    double rsum = 0, ksum = 0;
    for (int b = 0; b < B; b++) rsum += m.recon[b], ksum += m.kl[b];
    CHECK_CLOSE(m.acc[VAE_ACC_STEP_RECON], rsum, 1e-12, 0);
    CHECK_CLOSE(m.acc[VAE_ACC_STEP_KL], ksum, 1e-12, 0);
    CHECK(m.acc[VAE_ACC_RECON] == 0 && m.acc[VAE_ACC_KL] == 0 && m.acc[VAE_ACC_IMAGES] == 0);
    const double r0 = m.acc[VAE_ACC_STEP_RECON], k0 = m.acc[VAE_ACC_STEP_KL];
    real *p0 = malloc(m.n_real * sizeof(real));
    memcpy(p0, m.p, m.n_real * sizeof(real));
    vae_model_adam(&m, &cfg, (real)1e-2, sv);
    CHECK(m.state[VAE_STEP_FLAGS] == 0);
    CHECK(memcmp(p0, m.p, m.n_real * sizeof(real)) != 0);
    be->step_commit(be, m.acc, m.state, sv, 0);
    CHECK(m.acc[VAE_ACC_RECON] == r0 && m.acc[VAE_ACC_KL] == k0 && m.acc[VAE_ACC_IMAGES] == B);
    CHECK(m.acc[VAE_ACC_STEP_RECON] == 0 && m.acc[VAE_ACC_STEP_KL] == 0);

    /* a bad step (a NaN pixel), max_bad = 0: flagged, dropped, halted */
    x[0] = NAN;
    be->upload(be, m.x, x, sizeof x);
    sv = begin_step(&m, &plan, 1);
    vae_model_forward_backward(&m, B, 7, VAE_RNG_TRAIN, sv);
    CHECK(isnan(m.acc[VAE_ACC_STEP_RECON]));
    memcpy(p0, m.p, m.n_real * sizeof(real));
    vae_model_adam(&m, &cfg, (real)1e-2, sv);
    CHECK(m.state[VAE_STEP_FLAGS] == VAE_STEP_BAD);
    CHECK(memcmp(p0, m.p, m.n_real * sizeof(real)) == 0);
    be->step_commit(be, m.acc, m.state, sv, 0);
    CHECK(m.state[VAE_STEP_FLAGS] == VAE_STEP_HALTED && m.state[VAE_STEP_NBAD] == 1);
    CHECK(m.acc[VAE_ACC_RECON] == r0 && m.acc[VAE_ACC_IMAGES] == B);

    /* halted: a good batch again, Adam does nothing */
    x[0] = 0.5;
    be->upload(be, m.x, x, sizeof x);
    sv = begin_step(&m, &plan, 2);
    vae_model_forward_backward(&m, B, 7, VAE_RNG_TRAIN, sv);
    vae_model_adam(&m, &cfg, (real)1e-2, sv);
    CHECK(memcmp(p0, m.p, m.n_real * sizeof(real)) == 0);
    be->step_commit(be, m.acc, m.state, sv, 0);
    CHECK(m.acc[VAE_ACC_RECON] == r0 && m.acc[VAE_ACC_IMAGES] == B);
    CHECK(m.state[VAE_STEP_FLAGS] == VAE_STEP_HALTED && m.state[VAE_STEP_NBAD] == 1);
    CHECK(vae_step_state_i64(m.state + VAE_STEP_LAST_BAD) == 1);

    free(p0);
    vae_model_free(&m);
    vae_config_free(&cfg);
}

int main(void) {
    vae_backend *be = vae_backend_cpu_create(1);
    if (!be) {
        fprintf(stderr, "cpu backend: %s\n", vae_error_get());
        return 1;
    }
    CHECK(be->step_commit != NULL && be->step_snapshot != NULL && be->step_begin != NULL);
    test_sequence(be);
    test_model(be);
    be->destroy(be);
    return test_finish();
}

/* test_ops_grad.c — finite-difference gradient checks of every backward op
 * of the CPU backend, in double precision (libvae_f64: real = double).
 *
 * Method: for an op with output y = f(x, params), pick a random weight r of
 * y's shape (fixed seed) and the scalar objective S = sum_i r_i y_i. The
 * backward op with dout = r returns dS/dx and dS/dparams; each element is
 * compared with the central difference (S(x + h e_i) - S(x - h e_i)) / 2h.
 *
 * Tolerance: relative error |analytic - fd| / max(|fd|, FLOOR) <= 1e-6 with
 * h = 1e-6 and FLOOR = 0.1. In double, the central difference has truncation
 * error O(h^2 |f'''|) ~ 1e-12 relative (zero for the linear layers). Its
 * rounding error is absolute, ~ eps * sum|terms of S| / h: with the sizes
 * below |S| stays <= ~100, giving <= 1e-16 * 100 / 1e-6 = 1e-8 absolute,
 * i.e. <= 1e-7 relative at the FLOOR (observed: <= 6e-8). The floor keeps a
 * gradient that is 0 up to rounding from reading as a large relative error.
 * A wrong index, a missing term or a transposed weight gives O(0.1..1)
 * errors, far above 1e-6.
 */
#include "testutil.h"
#include "vae_backend.h"
#include "vae_math.h"

#ifndef VAE_REAL_DOUBLE
#error "test_ops_grad.c is a double-precision test (link vae_lib_f64)"
#endif

#define FD_H 1e-6
#define FD_TOL 1e-6
#define FD_FLOOR 0.1

static vae_backend *g_be;
static unsigned g_seed = 1;

/* backend buffer of n reals filled uniformly in [lo, hi) */
static real *rnd(size_t n, double lo, double hi) {
    real *p = (real *)g_be->alloc(g_be, (n ? n : 1) * sizeof(real));
    if (!p) {
        fprintf(stderr, "alloc: %s\n", vae_error_get());
        exit(1);
    }
    test_rand_fill_real(p, n, lo, hi, g_seed++);
    return p;
}
static real *zeros(size_t n) {
    real *p = rnd(n, 0, 0);
    memset(p, 0, (n ? n : 1) * sizeof(real));
    return p;
}
/* gradient outputs start as garbage: backward ops must write with `=` */
static real *garbage(size_t n) {
    real *p = rnd(n, 0, 0);
    for (size_t i = 0; i < n; i++) p[i] = (real)1e3;
    return p;
}
static void rel(void *p) { g_be->release(g_be, p); }

static double dot(const real *a, const real *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

/* Objective S(ctx) re-evaluated by the forward op after each perturbation. */
typedef double (*objective_fn)(void *ctx);

/* Compare analytic[i] with the central difference of S in x[i], all i. */
static void check_fd(const char *what, real *x, size_t n, const real *analytic, objective_fn S,
                     void *ctx) {
    double worst = 0;
    size_t wi = 0;
    double wa = 0, wf = 0;
    for (size_t i = 0; i < n; i++) {
        const real x0 = x[i];
        const real xp = x0 + FD_H, xm = x0 - FD_H;
        x[i] = xp;
        const double sp = S(ctx);
        x[i] = xm;
        const double sm = S(ctx);
        x[i] = x0;
        const double fd = (sp - sm) / ((double)xp - (double)xm); /* the step actually taken */
        const double a = analytic[i];
        double e = fabs(a - fd) / fmax(fabs(fd), FD_FLOOR);
        if (e != e) e = INFINITY;
        if (e >= worst) {
            worst = e;
            wi = i;
            wa = a;
            wf = fd;
        }
    }
    CHECK_MSG(worst <= FD_TOL, "%s: max rel err %.3g at [%zu]: analytic %.12g, fd %.12g", what,
              worst, wi, wa, wf);
    if (getenv("VAE_TEST_VERBOSE")) printf("  %-40s n=%-5zu max rel err %.2e\n", what, n, worst);
}

/* ------------------------------------------------------------- dense */

typedef struct {
    int B, I, O;
    real *in, *w, *b, *out, *r;
} dense_case;

static double dense_S(void *p) {
    dense_case *c = (dense_case *)p;
    g_be->dense_forward(g_be, c->out, c->in, c->w, c->b, c->B, c->I, c->O);
    return dot(c->r, c->out, (size_t)c->B * c->O);
}

static void test_dense(int B, int I, int O) {
    dense_case c = {B, I, O, rnd((size_t)B * I, -1, 1), rnd((size_t)O * I, -1, 1),
                    rnd((size_t)O, -1, 1), zeros((size_t)B * O), rnd((size_t)B * O, -1, 1)};
    real *din = garbage((size_t)B * I), *dw = garbage((size_t)O * I), *db = garbage((size_t)O);
    g_be->dense_backward(g_be, din, dw, db, c.r, c.in, c.w, B, I, O);
    char name[96];
    snprintf(name, sizeof name, "dense B%d I%d O%d din", B, I, O);
    check_fd(name, c.in, (size_t)B * I, din, dense_S, &c);
    snprintf(name, sizeof name, "dense B%d I%d O%d dw", B, I, O);
    check_fd(name, c.w, (size_t)O * I, dw, dense_S, &c);
    snprintf(name, sizeof name, "dense B%d I%d O%d db", B, I, O);
    check_fd(name, c.b, (size_t)O, db, dense_S, &c);

    /* din = NULL (first layer): parameter grads unchanged */
    real *dw2 = garbage((size_t)O * I), *db2 = garbage((size_t)O);
    g_be->dense_backward(g_be, NULL, dw2, db2, c.r, c.in, c.w, B, I, O);
    CHECK(memcmp(dw, dw2, (size_t)O * I * sizeof(real)) == 0);
    CHECK(memcmp(db, db2, (size_t)O * sizeof(real)) == 0);

    rel(c.in), rel(c.w), rel(c.b), rel(c.out), rel(c.r), rel(din), rel(dw), rel(db), rel(dw2),
        rel(db2);
}

/* ----------------------------------------------------------- conv2d */

typedef struct {
    vae_conv_geom g;
    int B;
    real *in, *w, *b, *out, *r;
} conv_case;

static double conv_S(void *p) {
    conv_case *c = (conv_case *)p;
    g_be->conv2d_forward(g_be, c->out, c->in, c->w, c->b, &c->g, c->B);
    return dot(c->r, c->out, (size_t)c->B * c->g.cout * c->g.hout * c->g.wout);
}

static void test_conv(int B, int cin, int hin, int win, int cout, int k, int s, int p) {
    vae_conv_geom g = {cin, hin, win, cout, (hin + 2 * p - k) / s + 1, (win + 2 * p - k) / s + 1,
                       k, s, p};
    const size_t nin = (size_t)B * cin * hin * win, nout = (size_t)B * cout * g.hout * g.wout;
    const size_t nw = (size_t)cout * cin * k * k;
    conv_case c = {g, B, rnd(nin, -1, 1), rnd(nw, -1, 1), rnd((size_t)cout, -1, 1), zeros(nout),
                   rnd(nout, -1, 1)};
    real *din = garbage(nin), *dw = garbage(nw), *db = garbage((size_t)cout);
    g_be->conv2d_backward(g_be, din, dw, db, c.r, c.in, c.w, &g, B);
    char tag[96], name[128];
    snprintf(tag, sizeof tag, "conv B%d %dx%dx%d->%d k%d s%d p%d", B, cin, hin, win, cout, k, s, p);
    snprintf(name, sizeof name, "%s din", tag);
    check_fd(name, c.in, nin, din, conv_S, &c);
    snprintf(name, sizeof name, "%s dw", tag);
    check_fd(name, c.w, nw, dw, conv_S, &c);
    snprintf(name, sizeof name, "%s db", tag);
    check_fd(name, c.b, (size_t)cout, db, conv_S, &c);

    real *dw2 = garbage(nw), *db2 = garbage((size_t)cout);
    g_be->conv2d_backward(g_be, NULL, dw2, db2, c.r, c.in, c.w, &g, B);
    CHECK(memcmp(dw, dw2, nw * sizeof(real)) == 0);
    CHECK(memcmp(db, db2, (size_t)cout * sizeof(real)) == 0);

    rel(c.in), rel(c.w), rel(c.b), rel(c.out), rel(c.r), rel(din), rel(dw), rel(db), rel(dw2),
        rel(db2);
}

/* ------------------------------------------------- transposed conv2d */

typedef struct {
    vae_convt_geom g;
    int B;
    real *in, *w, *b, *out, *r;
} convt_case;

static double convt_S(void *p) {
    convt_case *c = (convt_case *)p;
    g_be->convt2d_forward(g_be, c->out, c->in, c->w, c->b, &c->g, c->B);
    return dot(c->r, c->out, (size_t)c->B * c->g.cout * c->g.hout * c->g.wout);
}

static void test_convt(int B, int cin, int hin, int win, int cout, int k, int s, int p, int op) {
    vae_convt_geom g = {cin, hin, win, cout, (hin - 1) * s - 2 * p + k + op,
                        (win - 1) * s - 2 * p + k + op, k, s, p, op};
    const size_t nin = (size_t)B * cin * hin * win, nout = (size_t)B * cout * g.hout * g.wout;
    const size_t nw = (size_t)cin * cout * k * k;
    convt_case c = {g, B, rnd(nin, -1, 1), rnd(nw, -1, 1), rnd((size_t)cout, -1, 1), zeros(nout),
                    rnd(nout, -1, 1)};
    real *din = garbage(nin), *dw = garbage(nw), *db = garbage((size_t)cout);
    g_be->convt2d_backward(g_be, din, dw, db, c.r, c.in, c.w, &g, B);
    char tag[96], name[128];
    snprintf(tag, sizeof tag, "convT B%d %dx%dx%d->%dx%dx%d k%d s%d p%d op%d", B, cin, hin, win,
             cout, g.hout, g.wout, k, s, p, op);
    snprintf(name, sizeof name, "%s din", tag);
    check_fd(name, c.in, nin, din, convt_S, &c);
    snprintf(name, sizeof name, "%s dw", tag);
    check_fd(name, c.w, nw, dw, convt_S, &c);
    snprintf(name, sizeof name, "%s db", tag);
    check_fd(name, c.b, (size_t)cout, db, convt_S, &c);

    real *dw2 = garbage(nw), *db2 = garbage((size_t)cout);
    g_be->convt2d_backward(g_be, NULL, dw2, db2, c.r, c.in, c.w, &g, B);
    CHECK(memcmp(dw, dw2, nw * sizeof(real)) == 0);
    CHECK(memcmp(db, db2, (size_t)cout * sizeof(real)) == 0);

    rel(c.in), rel(c.w), rel(c.b), rel(c.out), rel(c.r), rel(din), rel(dw), rel(db), rel(dw2),
        rel(db2);
}

/* ------------------------------------------------------- activations */

typedef struct {
    size_t n;
    vae_act act;
    real slope;
    real *in, *out, *r;
} act_case;

static double act_S(void *p) {
    act_case *c = (act_case *)p;
    g_be->act_forward(g_be, c->out, c->in, c->n, c->act, c->slope);
    return dot(c->r, c->out, c->n);
}

static void test_act(vae_act act, real slope) {
    const size_t n = 200;
    act_case c = {n, act, slope, rnd(n, 0.1, 1), zeros(n), rnd(n, -1, 1)};
    /* |x| in [0.1, 1) with random signs: at least 0.1 >> h from the kink */
    real *sg = rnd(n, -1, 1);
    for (size_t i = 0; i < n; i++)
        if (sg[i] < 0) c.in[i] = -c.in[i];
    real *din = garbage(n);
    g_be->act_forward(g_be, c.out, c.in, n, act, slope);
    g_be->act_backward(g_be, din, c.r, c.out, n, act, slope);
    char name[64];
    snprintf(name, sizeof name, "act %s slope %.2f", act == VAE_ACT_RELU ? "relu" : "leaky", slope);
    check_fd(name, c.in, n, din, act_S, &c);

    /* in-place forward (out == in) and backward (din == dout) give the same */
    real *x = zeros(n), *d = zeros(n);
    memcpy(x, c.in, n * sizeof(real));
    memcpy(d, c.r, n * sizeof(real));
    g_be->act_forward(g_be, x, x, n, act, slope);
    g_be->act_forward(g_be, c.out, c.in, n, act, slope);
    CHECK(memcmp(x, c.out, n * sizeof(real)) == 0);
    g_be->act_backward(g_be, d, d, x, n, act, slope);
    CHECK(memcmp(d, din, n * sizeof(real)) == 0);

    rel(c.in), rel(c.out), rel(c.r), rel(sg), rel(din), rel(x), rel(d);
}

/* --------------------------------------------------- reparam + KL */

#define SEED 0x5EEDull
#define SUB 17ull

/* S = sum(dzw * z) + beta * sum_b kl[b], z = reparam(head), so that
 * dS/dhead is exactly what kl_backward(dz = dzw, sv->kl_scale = beta) returns. */
typedef struct {
    int B, L;
    real beta;
    real *head, *z, *kl, *dzw; /* dzw NULL: KL term only */
    real *scratch;             /* [B, 2L] dhead of the loss-only evaluations */
    vae_step_vals *sv0;        /* sub SUB, kl_scale 0: the loss-only evaluations */
} kl_case;

static double kl_S(void *p) {
    kl_case *c = (kl_case *)p;
    double s = 0;
    g_be->kl_backward(g_be, c->scratch, c->kl, NULL, c->head, c->B, c->L, SEED, VAE_RNG_TRAIN,
                      c->sv0);
    for (int b = 0; b < c->B; b++) s += (double)c->beta * c->kl[b];
    if (c->dzw) {
        g_be->reparam_forward(g_be, c->z, c->head, c->B, c->L, SEED, VAE_RNG_TRAIN, c->sv0);
        s += dot(c->dzw, c->z, (size_t)c->B * c->L);
    }
    return s;
}

static void test_kl(int B, int L, real beta, int with_dz) {
    const vae_step_vals v0 = vae_step_vals_make(SUB, 0, SUB, B, 0, 1, 1);
    const vae_step_vals vb = vae_step_vals_make(SUB, 0, SUB, B, beta, 1, 1);
    kl_case c = {B, L, beta, rnd((size_t)B * 2 * L, -1, 1), zeros((size_t)B * L), zeros((size_t)B),
                 with_dz ? rnd((size_t)B * L, -1, 1) : NULL, zeros((size_t)B * 2 * L),
                 test_step_vals_dev(g_be, &v0)};
    vae_step_vals *svb = test_step_vals_dev(g_be, &vb);
    real *dhead = garbage((size_t)B * 2 * L), *kl = garbage((size_t)B);
    g_be->kl_backward(g_be, dhead, kl, c.dzw, c.head, B, L, SEED, VAE_RNG_TRAIN, svb);
    char name[64];
    snprintf(name, sizeof name, "reparam+kl B%d L%d beta %.2f%s", B, L, beta,
             with_dz ? "" : " dz=NULL");
    check_fd(name, c.head, (size_t)B * 2 * L, dhead, kl_S, &c);

    /* kl[b] against the closed form 1/2 sum(mu^2 + e^lv - 1 - lv) */
    for (int b = 0; b < B; b++) {
        double ref = 0;
        for (int l = 0; l < L; l++) {
            double mu = c.head[(size_t)b * 2 * L + l], lv = c.head[(size_t)b * 2 * L + L + l];
            ref += 0.5 * (mu * mu + exp(lv) - 1 - lv);
        }
        CHECK_CLOSE(kl[b], ref, 1e-13, 1e-15);
    }
    rel(c.head), rel(c.z), rel(c.kl), rel(c.scratch), rel(dhead), rel(kl), rel(c.sv0), rel(svb);
    if (c.dzw) rel(c.dzw);
}

/* z = mu + sigma eps and log q - log p: with mu = 0, lv = 0, z = eps exactly
 * and 1/2 (z^2 - eps^2 - lv) = 0; in general it equals
 * log N(z; mu, e^lv) - log N(z; 0, 1) written out from the densities. */
static void test_log_q_minus_log_p(void) {
    const int B = 3, L = 5;
    real *head = zeros((size_t)B * 2 * L), *z = zeros((size_t)B * L), *out = rnd((size_t)B, 1, 2);
    real *eps = zeros((size_t)B * L);
    const vae_step_vals v3 = vae_step_vals_make(3, 0, 3, B, 0, 1, 1);
    const vae_step_vals v4 = vae_step_vals_make(4, 0, 4, B, 0, 1, 1);
    vae_step_vals *sv3 = test_step_vals_dev(g_be, &v3), *sv4 = test_step_vals_dev(g_be, &v4);
    g_be->reparam_forward(g_be, z, head, B, L, SEED, VAE_RNG_EVAL, sv3);
    g_be->normal_fill(g_be, eps, (size_t)B * L, SEED, VAE_RNG_EVAL, 3, 0);
    CHECK(memcmp(z, eps, (size_t)B * L * sizeof(real)) == 0);
    g_be->log_q_minus_log_p(g_be, out, z, head, B, L, SEED, VAE_RNG_EVAL, sv3);
    for (int b = 0; b < B; b++) CHECK(out[b] == 0);

    test_rand_fill_real(head, (size_t)B * 2 * L, -1, 1, 99);
    g_be->reparam_forward(g_be, z, head, B, L, SEED, VAE_RNG_EVAL, sv4);
    g_be->log_q_minus_log_p(g_be, out, z, head, B, L, SEED, VAE_RNG_EVAL, sv4);
    for (int b = 0; b < B; b++) {
        double ref = 0;
        for (int l = 0; l < L; l++) {
            double mu = head[(size_t)b * 2 * L + l], lv = head[(size_t)b * 2 * L + L + l];
            double zz = z[(size_t)b * L + l];
            double logq = -0.5 * log(2 * M_PI) - 0.5 * lv - (zz - mu) * (zz - mu) / (2 * exp(lv));
            double logp = -0.5 * log(2 * M_PI) - 0.5 * zz * zz;
            ref += logq - logp;
        }
        CHECK_CLOSE(out[b], ref, 1e-12, 1e-12);
    }
    rel(head), rel(z), rel(out), rel(eps), rel(sv3), rel(sv4);
}

/* -------------------------------------------------- reconstruction */

typedef struct {
    int B, D;
    vae_likelihood lik;
    real sigma, gs;
    real *out, *x, *recon;
} recon_case;

/* S = grad_scale * sum_b recon[b], whose gradient is dout */
static double recon_S(void *p) {
    recon_case *c = (recon_case *)p;
    g_be->recon_loss(g_be, NULL, c->recon, c->out, c->x, c->B, c->D, c->lik, c->sigma, c->gs);
    double s = 0;
    for (int b = 0; b < c->B; b++) s += c->recon[b];
    return (double)c->gs * s;
}

static void test_recon(vae_likelihood lik, real sigma, real gs) {
    const int B = 2, D = 12;
    recon_case c = {B, D, lik, sigma, gs, rnd((size_t)B * D, -3, 3), rnd((size_t)B * D, 0, 1),
                    zeros((size_t)B)};
    real *dout = garbage((size_t)B * D), *recon = garbage((size_t)B);
    g_be->recon_loss(g_be, dout, recon, c.out, c.x, B, D, lik, sigma, gs);
    char name[64];
    snprintf(name, sizeof name, "recon %s sigma %.2f scale %.2f",
             lik == VAE_LIK_BERNOULLI ? "bernoulli" : "gaussian", sigma, gs);
    check_fd(name, c.out, (size_t)B * D, dout, recon_S, &c);

    /* closed forms: per sample, sum_d BCE or (x-t)^2/(2 s^2) + D/2 log(2 pi s^2) */
    for (int b = 0; b < B; b++) {
        double ref = 0;
        for (int d = 0; d < D; d++) {
            double y = c.out[(size_t)b * D + d], t = c.x[(size_t)b * D + d];
            if (lik == VAE_LIK_BERNOULLI) {
                double s = 1 / (1 + exp(-y));
                ref += -(t * log(s) + (1 - t) * log(1 - s));
            } else {
                ref += (y - t) * (y - t) / (2.0 * sigma * sigma);
            }
        }
        if (lik == VAE_LIK_GAUSSIAN) ref += 0.5 * D * log(2 * M_PI * sigma * sigma);
        CHECK_CLOSE(recon[b], ref, 1e-12, 1e-12);
    }
    rel(c.out), rel(c.x), rel(c.recon), rel(dout), rel(recon);
}

/* special values: logit 0 costs log 2 per pixel; a perfect Gaussian mean
 * costs only the normaliser */
static void test_recon_constants(void) {
    const int B = 2, D = 10;
    real *out = zeros((size_t)B * D), *x = rnd((size_t)B * D, 0, 1), *recon = zeros((size_t)B);
    for (int i = 0; i < B * D; i++) x[i] = (i % 2) ? 1 : 0;
    g_be->recon_loss(g_be, NULL, recon, out, x, B, D, VAE_LIK_BERNOULLI, 1, 1);
    for (int b = 0; b < B; b++) CHECK_CLOSE(recon[b], D * log(2.0), 1e-14, 0);
    memcpy(out, x, (size_t)B * D * sizeof(real));
    g_be->recon_loss(g_be, NULL, recon, out, x, B, D, VAE_LIK_GAUSSIAN, 0.1, 1);
    for (int b = 0; b < B; b++) CHECK_CLOSE(recon[b], 0.5 * D * log(2 * M_PI * 0.01), 1e-14, 0);
    rel(out), rel(x), rel(recon);
}

/* ------------------------------------------------------------ Adam */

/* torch.optim.Adam / AdamW (amsgrad off) written out in double, with
 * torch.nn.utils.clip_grad_norm_ in front:
 *   c = min(1, clip / (||g|| + 1e-6));  g *= c
 *   Adam:  g += wd p          AdamW: p *= 1 - lr wd
 *   m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
 *   p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps) */
static void adam_ref(double *p, const double *g0, double *m, double *v, int n, int t, double lr,
                     double b1, double b2, double eps, double wd, int decoupled, double clip) {
    double nrm = 0;
    for (int i = 0; i < n; i++) nrm += g0[i] * g0[i];
    nrm = sqrt(nrm);
    double c = 1;
    if (clip > 0) c = fmin(1.0, clip / (nrm + 1e-6));
    for (int i = 0; i < n; i++) {
        double g = g0[i] * c;
        if (decoupled) p[i] *= 1 - lr * wd;
        else g += wd * p[i];
        m[i] = b1 * m[i] + (1 - b1) * g;
        v[i] = b2 * v[i] + (1 - b2) * g * g;
        double step = lr / (1 - pow(b1, t));
        double denom = sqrt(v[i]) / sqrt(1 - pow(b2, t)) + eps;
        p[i] -= step * m[i] / denom;
    }
}

static void test_adam(double wd, int decoupled, double clip, double gmag) {
    enum { N = 9 };
    const double lr = 1e-2, b1 = 0.9, b2 = 0.999, eps = 1e-8;
    real *p = rnd(N, -1, 1), *g = zeros(N), *m = zeros(N), *v = zeros(N);
    double *gn2 = (double *)g_be->alloc(g_be, sizeof(double));
    int *bad = (int *)g_be->alloc(g_be, sizeof(int));
    *bad = 0;
    /* the step's values: Adam's bias corrections of the 1-based step t */
    const vae_step_vals v1 = vae_step_vals_make(0, 0, 0, 1, 0, 1, 1);
    vae_step_vals *sv = test_step_vals_dev(g_be, &v1);
    const vae_adam_hp hp = {(real)lr, (real)b1, (real)b2, (real)eps, (real)wd, decoupled};
    double rp[N], rm[N] = {0}, rv[N] = {0}, rg[N];
    for (int i = 0; i < N; i++) rp[i] = p[i];
    for (int t = 1; t <= 3; t++) {
        test_rand_fill(rg, N, -gmag, gmag, 100 + (unsigned)t);
        for (int i = 0; i < N; i++) g[i] = rg[i];
        g_be->sumsq(g_be, gn2, g, N);
        double ref2 = 0;
        for (int i = 0; i < N; i++) ref2 += rg[i] * rg[i];
        CHECK_CLOSE(*gn2, ref2, 1e-15, 0);
        vae_step_vals vt = vae_step_vals_make(t - 1, 0, (uint64_t)(t - 1), 1, 0,
                                          (real)(1 - pow(b1, t)), (real)(1 - pow(b2, t)));
        /* a learning-rate schedule's factor: steps 1 and 3 scaled, 2 not */
        vt.lr_scale = t == 2 ? 1 : (real)(0.3 * t);
        g_be->upload(g_be, sv, &vt, sizeof vt);
        g_be->adam_step(g_be, p, g, m, v, N, &hp, (real)clip, gn2, bad, sv);
        adam_ref(rp, rg, rm, rv, N, t, lr * (double)vt.lr_scale, b1, b2, eps, wd, decoupled, clip);
    }
    CHECK(*bad == 0);
    double e = 0;
    for (int i = 0; i < N; i++) {
        e = fmax(e, fabs(p[i] - rp[i]) / fmax(fabs(rp[i]), 1e-3));
        e = fmax(e, fabs(m[i] - rm[i]) / fmax(fabs(rm[i]), 1e-3));
        e = fmax(e, fabs(v[i] - rv[i]) / fmax(fabs(rv[i]), 1e-6));
    }
    /* same formulas in double, only the operation order differs a little */
    CHECK_MSG(e <= 1e-12, "adam wd %g decoupled %d clip %g: max rel err %.3g", wd, decoupled, clip,
              e);

    /* non-finite gradient norm: step skipped, *bad = 1, nothing touched */
    const double bad_norms[2] = {NAN, INFINITY};
    for (int k = 0; k < 2; k++) {
        real p0[N], m0[N], v0[N];
        memcpy(p0, p, sizeof p0), memcpy(m0, m, sizeof m0), memcpy(v0, v, sizeof v0);
        *gn2 = bad_norms[k];
        *bad = 0;
        const vae_step_vals v4 = vae_step_vals_make(3, 0, 3, 1, 0, (real)(1 - pow(b1, 4)),
                                                (real)(1 - pow(b2, 4)));
        g_be->upload(g_be, sv, &v4, sizeof v4);
        g_be->adam_step(g_be, p, g, m, v, N, &hp, (real)clip, gn2, bad, sv);
        CHECK(*bad == 1);
        CHECK(memcmp(p, p0, sizeof p0) == 0 && memcmp(m, m0, sizeof m0) == 0 &&
              memcmp(v, v0, sizeof v0) == 0);
    }
    rel(p), rel(g), rel(m), rel(v), g_be->release(g_be, gn2), g_be->release(g_be, bad);
    g_be->release(g_be, sv);
}

int main(void) {
    g_be = vae_backend_cpu_create(1);
    if (!g_be) {
        fprintf(stderr, "cpu backend: %s\n", vae_error_get());
        return 1;
    }
    CHECK(strcmp(g_be->name, "cpu") == 0);

    test_dense(1, 5, 3);
    test_dense(4, 7, 6);

    /* B, cin, hin, win, cout, k, stride, pad */
    test_conv(1, 1, 5, 5, 1, 3, 1, 0);
    test_conv(3, 2, 6, 5, 3, 3, 1, 1);  /* non-square, same padding */
    test_conv(2, 3, 7, 6, 2, 3, 2, 1);  /* stride 2, odd size */
    test_conv(3, 2, 8, 7, 3, 3, 2, 1);  /* (h + 2p - k) % s != 0: unused last row */
    test_conv(3, 2, 8, 7, 3, 4, 2, 1);  /* even kernel */
    test_conv(2, 2, 5, 6, 2, 4, 1, 2);  /* pad 2, output larger than input */
    test_conv(2, 3, 5, 4, 4, 1, 1, 0);  /* 1x1 */
    test_conv(3, 2, 6, 9, 1, 1, 2, 0);  /* stride > kernel */
    test_conv(1, 1, 7, 7, 2, 3, 3, 2);  /* stride 3 */

    /* B, cin, hin, win, cout, k, stride, pad, out_pad */
    test_convt(2, 2, 3, 3, 3, 3, 2, 1, 1); /* the decoder's 7->14 shape, small */
    test_convt(3, 3, 4, 3, 2, 3, 2, 1, 0);
    test_convt(1, 1, 3, 4, 1, 3, 1, 1, 0);
    test_convt(2, 2, 3, 2, 2, 2, 3, 0, 1); /* stride > kernel: uncovered pixels */
    test_convt(2, 2, 3, 3, 3, 4, 3, 1, 2); /* stride 3, out_pad 2 */
    test_convt(3, 3, 4, 5, 2, 1, 1, 0, 0); /* 1x1 */
    test_convt(3, 2, 4, 3, 1, 4, 2, 1, 1); /* even kernel, out_pad 1 */

    test_act(VAE_ACT_RELU, 0);
    test_act(VAE_ACT_LEAKY_RELU, (real)0.2);

    test_kl(3, 4, 1, 1);
    test_kl(2, 5, (real)0.3, 1);
    test_kl(2, 3, (real)0.7, 0);
    test_log_q_minus_log_p();

    test_recon(VAE_LIK_BERNOULLI, 1, 1);
    test_recon(VAE_LIK_BERNOULLI, 1, (real)0.37);
    test_recon(VAE_LIK_GAUSSIAN, (real)0.7, 1);
    test_recon(VAE_LIK_GAUSSIAN, (real)0.3, (real)0.37);
    test_recon_constants();

    /* wd, decoupled, clip, gradient magnitude */
    test_adam(0, 0, 0, 1);
    test_adam(0.01, 0, 0, 1);     /* L2 (Adam) */
    test_adam(0.1, 1, 0, 1);      /* decoupled (AdamW) */
    test_adam(0.01, 0, 0.5, 3);   /* clipping active: ||g|| ~ 5 > 0.5 */
    test_adam(0.1, 1, 100, 1);    /* clip above the norm: no effect */

    g_be->destroy(g_be);
    return test_finish();
}

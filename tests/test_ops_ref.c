/* test_ops_ref.c — the CPU backend's layers (float build) against
 * independent references written here as plain nested loops accumulating in
 * double: direct convolution, scatter-form transposed convolution, naive
 * dense; plus sentinels around every written buffer, batch chunking, and
 * the data/conversion/reduction ops.
 *
 * Tolerance for the layers: |got - ref| <= 1e-5 * sum_j |term_j| per element
 * (+ 1e-30), where the sum runs over the products that make up that element
 * (also accumulated by the reference). The inputs are exact floats, so only
 * the float accumulation of at most ~800 products differs: its rounding
 * error is bounded by n u sum|terms| (u = 6e-8; 3.6e-5 for n = 600) in the
 * worst case, but for rounding errors of random sign it grows like
 * sqrt(n) u <= 2e-6, and blocked/FMA GEMM kernels do better (observed
 * <= 3.1e-7 over all cases below). Measuring against sum|terms| instead of
 * |ref| keeps cancellation (ref near 0) from reading as a large error, while
 * any indexing bug gives errors of order sum|terms| itself.
 */
#include <stdint.h>

#include "testutil.h"
#include "vae_backend.h"
#include "vae_math.h"

#define REF_TOL 1e-5

static vae_backend *g_be;
static unsigned g_seed = 7;

/* ------------------------------------------------------------ helpers */

/* guarded buffers (testutil.h), a fresh seed for each random one */
static test_gbuf gb_rand(size_t n, double lo, double hi) {
    return test_gb_rand(n, lo, hi, g_seed++);
}

/* max_i |got - ref| / sum|terms| (NaN -> inf) */
static double max_err(const real *got, const double *ref, const double *abssum, size_t n) {
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - ref[i]) / (abssum[i] + 1e-30);
        if (e != e) return INFINITY;
        if (e > worst) worst = e;
    }
    return worst;
}

static void check_ref(const char *what, const real *got, const double *ref, const double *abssum,
                      size_t n, double tol) {
    double e = max_err(got, ref, abssum, n);
    CHECK_MSG(e <= tol, "%s: max err %.3g (tol %.1g)", what, e, tol);
    if (getenv("VAE_TEST_VERBOSE")) printf("  %-52s max err %.2e\n", what, e);
}

static double *dcalloc(size_t n) {
    double *p = (double *)calloc(n ? n : 1, sizeof(double));
    if (!p) exit(1);
    return p;
}

/* ------------------------------------------------------------- dense */

static void test_dense(int B, int I, int O) {
    test_gbuf in = gb_rand((size_t)B * I, -1, 1), w = gb_rand((size_t)O * I, -1, 1);
    test_gbuf b = gb_rand((size_t)O, -1, 1), out = test_gb_new((size_t)B * O);
    test_gbuf dout = gb_rand((size_t)B * O, -1, 1), din = test_gb_new((size_t)B * I);
    test_gbuf dw = test_gb_new((size_t)O * I), db = test_gb_new((size_t)O);
    double *ref = dcalloc((size_t)B * O), *abs_ = dcalloc((size_t)B * O);
    double *rdin = dcalloc((size_t)B * I), *adin = dcalloc((size_t)B * I);
    double *rdw = dcalloc((size_t)O * I), *adw = dcalloc((size_t)O * I);
    double *rdb = dcalloc((size_t)O), *adb = dcalloc((size_t)O);

    for (int r = 0; r < B; r++)
        for (int o = 0; o < O; o++) {
            double s = b.p[o], a = fabs((double)b.p[o]);
            for (int i = 0; i < I; i++) {
                double t = (double)in.p[(size_t)r * I + i] * w.p[(size_t)o * I + i];
                s += t, a += fabs(t);
                double g = dout.p[(size_t)r * O + o];
                rdin[(size_t)r * I + i] += g * w.p[(size_t)o * I + i];
                adin[(size_t)r * I + i] += fabs(g * w.p[(size_t)o * I + i]);
                rdw[(size_t)o * I + i] += g * in.p[(size_t)r * I + i];
                adw[(size_t)o * I + i] += fabs(g * in.p[(size_t)r * I + i]);
            }
            ref[(size_t)r * O + o] = s, abs_[(size_t)r * O + o] = a;
            rdb[o] += dout.p[(size_t)r * O + o], adb[o] += fabs((double)dout.p[(size_t)r * O + o]);
        }

    char name[96];
    g_be->dense_forward(g_be, out.p, in.p, w.p, b.p, B, I, O);
    snprintf(name, sizeof name, "dense B%d I%d O%d forward", B, I, O);
    check_ref(name, out.p, ref, abs_, (size_t)B * O, REF_TOL);
    g_be->dense_backward(g_be, din.p, dw.p, db.p, dout.p, in.p, w.p, B, I, O);
    snprintf(name, sizeof name, "dense B%d I%d O%d din", B, I, O);
    check_ref(name, din.p, rdin, adin, (size_t)B * I, REF_TOL);
    snprintf(name, sizeof name, "dense B%d I%d O%d dw", B, I, O);
    check_ref(name, dw.p, rdw, adw, (size_t)O * I, REF_TOL);
    snprintf(name, sizeof name, "dense B%d I%d O%d db", B, I, O);
    check_ref(name, db.p, rdb, adb, (size_t)O, REF_TOL);
    CHECK(test_gb_intact(&out) && test_gb_intact(&din) && test_gb_intact(&dw) && test_gb_intact(&db));

    test_gb_free(&in), test_gb_free(&w), test_gb_free(&b), test_gb_free(&out), test_gb_free(&dout), test_gb_free(&din);
    test_gb_free(&dw), test_gb_free(&db);
    free(ref), free(abs_), free(rdin), free(adin), free(rdw), free(adw), free(rdb), free(adb);
}

/* ----------------------------------------------------------- conv2d */

/* Direct convolution and its adjoints, one product at a time:
 *   out[b,co,oh,ow] = bias[co] + sum_{ci,kh,kw} w[co,ci,kh,kw] in[b,ci,oh s-p+kh, ow s-p+kw]
 * and din/dw/db of S = sum dout * out. */
typedef struct {
    double *out, *aout, *din, *adin, *dw, *adw, *db, *adb;
} ref_bufs;

static ref_bufs ref_alloc(size_t nin, size_t nout, size_t nw, size_t nb) {
    ref_bufs r = {dcalloc(nout), dcalloc(nout), dcalloc(nin), dcalloc(nin),
                  dcalloc(nw),   dcalloc(nw),   dcalloc(nb),  dcalloc(nb)};
    return r;
}
static void ref_free(ref_bufs *r) {
    free(r->out), free(r->aout), free(r->din), free(r->adin);
    free(r->dw), free(r->adw), free(r->db), free(r->adb);
}

static void conv_ref(ref_bufs *r, const real *in, const real *w, const real *bias,
                     const real *dout, const vae_conv_geom *g, int B) {
    const int k = g->k, s = g->stride, p = g->pad;
    for (int b = 0; b < B; b++)
        for (int co = 0; co < g->cout; co++)
            for (int oh = 0; oh < g->hout; oh++)
                for (int ow = 0; ow < g->wout; ow++) {
                    const size_t oi = (((size_t)b * g->cout + co) * g->hout + oh) * g->wout + ow;
                    const double go = dout[oi];
                    double acc = bias[co], aacc = fabs((double)bias[co]);
                    r->db[co] += go, r->adb[co] += fabs(go);
                    for (int ci = 0; ci < g->cin; ci++)
                        for (int kh = 0; kh < k; kh++)
                            for (int kw = 0; kw < k; kw++) {
                                int ih = oh * s - p + kh, iw = ow * s - p + kw;
                                if (ih < 0 || ih >= g->hin || iw < 0 || iw >= g->win) continue;
                                size_t ii = (((size_t)b * g->cin + ci) * g->hin + ih) * g->win + iw;
                                size_t wi = (((size_t)co * g->cin + ci) * k + kh) * k + kw;
                                double t = (double)w[wi] * in[ii];
                                acc += t, aacc += fabs(t);
                                r->din[ii] += go * w[wi], r->adin[ii] += fabs(go * w[wi]);
                                r->dw[wi] += go * in[ii], r->adw[wi] += fabs(go * in[ii]);
                            }
                    r->out[oi] = acc, r->aout[oi] = aacc;
                }
}

static void test_conv(int B, int cin, int hin, int win, int cout, int k, int s, int p) {
    vae_conv_geom g = {cin, hin, win, cout, (hin + 2 * p - k) / s + 1, (win + 2 * p - k) / s + 1,
                       k, s, p};
    const size_t nin = (size_t)B * cin * hin * win, nout = (size_t)B * cout * g.hout * g.wout;
    const size_t nw = (size_t)cout * cin * k * k;
    test_gbuf in = gb_rand(nin, -1, 1), w = gb_rand(nw, -1, 1), b = gb_rand((size_t)cout, -1, 1);
    test_gbuf out = test_gb_new(nout), dout = gb_rand(nout, -1, 1);
    test_gbuf din = test_gb_new(nin), dw = test_gb_new(nw), db = test_gb_new((size_t)cout);
    ref_bufs r = ref_alloc(nin, nout, nw, (size_t)cout);
    conv_ref(&r, in.p, w.p, b.p, dout.p, &g, B);

    char tag[96], name[160];
    snprintf(tag, sizeof tag, "conv B%d %dx%dx%d->%dx%dx%d k%d s%d p%d", B, cin, hin, win, cout,
             g.hout, g.wout, k, s, p);
    g_be->conv2d_forward(g_be, out.p, in.p, w.p, b.p, &g, B);
    snprintf(name, sizeof name, "%s fwd", tag);
    check_ref(name, out.p, r.out, r.aout, nout, REF_TOL);
    /* din is pre-filled with garbage: the op must overwrite, not accumulate */
    for (size_t i = 0; i < nin; i++) din.p[i] = (real)1e3;
    g_be->conv2d_backward(g_be, din.p, dw.p, db.p, dout.p, in.p, w.p, &g, B);
    snprintf(name, sizeof name, "%s din", tag);
    check_ref(name, din.p, r.din, r.adin, nin, REF_TOL);
    snprintf(name, sizeof name, "%s dw", tag);
    check_ref(name, dw.p, r.dw, r.adw, nw, REF_TOL);
    snprintf(name, sizeof name, "%s db", tag);
    check_ref(name, db.p, r.db, r.adb, (size_t)cout, REF_TOL);
    CHECK_MSG(test_gb_intact(&out) && test_gb_intact(&din) && test_gb_intact(&dw) && test_gb_intact(&db),
              "%s: write outside a buffer", tag);

    test_gb_free(&in), test_gb_free(&w), test_gb_free(&b), test_gb_free(&out), test_gb_free(&dout), test_gb_free(&din);
    test_gb_free(&dw), test_gb_free(&db);
    ref_free(&r);
}

/* ------------------------------------------------- transposed conv2d */

/* Scatter form, straight from the definition of ConvTranspose2d:
 *   out[b,co,ih s-p+kh, iw s-p+kw] += in[b,ci,ih,iw] w[ci,co,kh,kw]   (+ bias[co])
 * and the adjoints of S = sum dout * out. */
static void convt_ref(ref_bufs *r, const real *in, const real *w, const real *bias,
                      const real *dout, const vae_convt_geom *g, int B) {
    const int k = g->k, s = g->stride, p = g->pad;
    const size_t HWo = (size_t)g->hout * g->wout;
    for (int b = 0; b < B; b++)
        for (int co = 0; co < g->cout; co++)
            for (size_t j = 0; j < HWo; j++) {
                size_t oi = ((size_t)b * g->cout + co) * HWo + j;
                r->out[oi] = bias[co], r->aout[oi] = fabs((double)bias[co]);
                r->db[co] += dout[oi], r->adb[co] += fabs((double)dout[oi]);
            }
    for (int b = 0; b < B; b++)
        for (int ci = 0; ci < g->cin; ci++)
            for (int ih = 0; ih < g->hin; ih++)
                for (int iw = 0; iw < g->win; iw++) {
                    size_t ii = (((size_t)b * g->cin + ci) * g->hin + ih) * g->win + iw;
                    for (int co = 0; co < g->cout; co++)
                        for (int kh = 0; kh < k; kh++)
                            for (int kw = 0; kw < k; kw++) {
                                int oh = ih * s - p + kh, ow = iw * s - p + kw;
                                if (oh < 0 || oh >= g->hout || ow < 0 || ow >= g->wout) continue;
                                size_t oi = (((size_t)b * g->cout + co) * g->hout + oh) * g->wout + ow;
                                size_t wi = (((size_t)ci * g->cout + co) * k + kh) * k + kw;
                                double t = (double)in[ii] * w[wi], go = dout[oi];
                                r->out[oi] += t, r->aout[oi] += fabs(t);
                                r->din[ii] += go * w[wi], r->adin[ii] += fabs(go * w[wi]);
                                r->dw[wi] += go * in[ii], r->adw[wi] += fabs(go * in[ii]);
                            }
                }
}

static void test_convt(int B, int cin, int hin, int win, int cout, int k, int s, int p, int op) {
    vae_convt_geom g = {cin, hin, win, cout, (hin - 1) * s - 2 * p + k + op,
                        (win - 1) * s - 2 * p + k + op, k, s, p, op};
    const size_t nin = (size_t)B * cin * hin * win, nout = (size_t)B * cout * g.hout * g.wout;
    const size_t nw = (size_t)cin * cout * k * k;
    test_gbuf in = gb_rand(nin, -1, 1), w = gb_rand(nw, -1, 1), b = gb_rand((size_t)cout, -1, 1);
    test_gbuf out = test_gb_new(nout), dout = gb_rand(nout, -1, 1);
    test_gbuf din = test_gb_new(nin), dw = test_gb_new(nw), db = test_gb_new((size_t)cout);
    ref_bufs r = ref_alloc(nin, nout, nw, (size_t)cout);
    convt_ref(&r, in.p, w.p, b.p, dout.p, &g, B);

    char tag[96], name[160];
    snprintf(tag, sizeof tag, "convT B%d %dx%dx%d->%dx%dx%d k%d s%d p%d op%d", B, cin, hin, win,
             cout, g.hout, g.wout, k, s, p, op);
    for (size_t i = 0; i < nout; i++) out.p[i] = (real)1e3; /* must be overwritten */
    g_be->convt2d_forward(g_be, out.p, in.p, w.p, b.p, &g, B);
    snprintf(name, sizeof name, "%s fwd", tag);
    check_ref(name, out.p, r.out, r.aout, nout, REF_TOL);
    g_be->convt2d_backward(g_be, din.p, dw.p, db.p, dout.p, in.p, w.p, &g, B);
    snprintf(name, sizeof name, "%s din", tag);
    check_ref(name, din.p, r.din, r.adin, nin, REF_TOL);
    snprintf(name, sizeof name, "%s dw", tag);
    check_ref(name, dw.p, r.dw, r.adw, nw, REF_TOL);
    snprintf(name, sizeof name, "%s db", tag);
    check_ref(name, db.p, r.db, r.adb, (size_t)cout, REF_TOL);
    CHECK_MSG(test_gb_intact(&out) && test_gb_intact(&din) && test_gb_intact(&dw) && test_gb_intact(&db),
              "%s: write outside a buffer", tag);

    test_gb_free(&in), test_gb_free(&w), test_gb_free(&b), test_gb_free(&out), test_gb_free(&dout), test_gb_free(&din);
    test_gb_free(&dw), test_gb_free(&db);
    ref_free(&r);
}

/* ------------------------------------------------------- chunking */

/* The backend bounds its im2col workspace at 32 MiB and splits the batch
 * into chunks. B = 300 images of a 3->8, k3, 32x32 conv need
 * (K + cout) Ho Wo = (27 + 8) * 1024 floats = 140 KiB each, 41 MiB in all, so
 * the batch runs as two uneven chunks (234 + 66); likewise the 8->3
 * transposed conv on 32x32 ((27 + 8) * 1024 per image). The chunked call
 * must equal B single-image calls: forward outputs and din to 1e-6 (the same
 * per-element reductions; observed bit-identical), dw and db up to the
 * reduction order, which here runs over B*H*W = 307200 products. With random
 * signs the partial sums stay ~sqrt(k) times one term, so the float error is
 * ~u * sum|terms| rather than the worst-case n u (observed ~2e-7); the
 * REF_TOL of 1e-5 keeps a 50x margin, while a chunk-offset bug gives O(1). */
#define CHUNK_B 300
#define CHUNK_TOL REF_TOL

static void test_chunked(int transposed) {
    const int B = CHUNK_B, k = 3, H = 32, W = 32;
    const int cin = transposed ? 8 : 3, cout = transposed ? 3 : 8;
    CHECK((size_t)B * (27 + 8) * H * W * sizeof(real) > ((size_t)32 << 20));
    vae_conv_geom cg = {cin, H, W, cout, H, W, k, 1, 1};
    vae_convt_geom tg = {cin, H, W, cout, H, W, k, 1, 1, 0};
    const size_t pin = (size_t)cin * H * W, pout = (size_t)cout * H * W;
    const size_t nw = (size_t)cin * cout * k * k;
    test_gbuf in = gb_rand(B * pin, -1, 1), w = gb_rand(nw, -1, 1), b = gb_rand((size_t)cout, -1, 1);
    test_gbuf dout = gb_rand(B * pout, -1, 1);
    test_gbuf out = test_gb_new(B * pout), din = test_gb_new(B * pin), dw = test_gb_new(nw), db = test_gb_new((size_t)cout);
    test_gbuf out1 = test_gb_new(B * pout), din1 = test_gb_new(B * pin), dw1 = test_gb_new(nw), db1 = test_gb_new((size_t)cout);
    double *sdw = dcalloc(nw), *adw = dcalloc(nw), *sdb = dcalloc((size_t)cout);
    double *adb = dcalloc((size_t)cout);

    if (transposed) {
        g_be->convt2d_forward(g_be, out.p, in.p, w.p, b.p, &tg, B);
        g_be->convt2d_backward(g_be, din.p, dw.p, db.p, dout.p, in.p, w.p, &tg, B);
    } else {
        g_be->conv2d_forward(g_be, out.p, in.p, w.p, b.p, &cg, B);
        g_be->conv2d_backward(g_be, din.p, dw.p, db.p, dout.p, in.p, w.p, &cg, B);
    }
    for (int i = 0; i < B; i++) {
        real *o1 = out1.p + i * pout, *d1 = din1.p + i * pin;
        const real *x = in.p + i * pin, *g = dout.p + i * pout;
        if (transposed) {
            g_be->convt2d_forward(g_be, o1, x, w.p, b.p, &tg, 1);
            g_be->convt2d_backward(g_be, d1, dw1.p, db1.p, g, x, w.p, &tg, 1);
        } else {
            g_be->conv2d_forward(g_be, o1, x, w.p, b.p, &cg, 1);
            g_be->conv2d_backward(g_be, d1, dw1.p, db1.p, g, x, w.p, &cg, 1);
        }
        for (size_t j = 0; j < nw; j++) sdw[j] += dw1.p[j], adw[j] += fabs((double)dw1.p[j]);
        for (int j = 0; j < cout; j++) sdb[j] += db1.p[j], adb[j] += fabs((double)db1.p[j]);
    }
    const char *what = transposed ? "chunked convT" : "chunked conv";
    double eo = test_max_rel(out.p, out1.p, B * pout, 1.0);
    double ed = test_max_rel(din.p, din1.p, B * pin, 1.0);
    /* The batched and the per-image GEMMs may take different OpenBLAS kernels
     * (small-matrix paths, other K unrolling), so the sums differ in order:
     * ~1e-6 of the largest output was seen; a chunk-offset bug gives O(1). */
    CHECK_MSG(eo <= CHUNK_TOL, "%s forward vs per-image: %.3g", what, eo);
    CHECK_MSG(ed <= CHUNK_TOL, "%s din vs per-image: %.3g", what, ed);
    double ew = max_err(dw.p, sdw, adw, nw), eb = max_err(db.p, sdb, adb, (size_t)cout);
    CHECK_MSG(ew <= CHUNK_TOL, "%s dw vs sum of per-image: %.3g", what, ew);
    CHECK_MSG(eb <= CHUNK_TOL, "%s db vs sum of per-image: %.3g", what, eb);
    CHECK(test_gb_intact(&out) && test_gb_intact(&din) && test_gb_intact(&dw) && test_gb_intact(&db));
    if (getenv("VAE_TEST_VERBOSE"))
        printf("  %-14s B%d: out %.2e din %.2e dw %.2e db %.2e\n", what, B, eo, ed, ew, eb);

    test_gb_free(&in), test_gb_free(&w), test_gb_free(&b), test_gb_free(&dout), test_gb_free(&out), test_gb_free(&din);
    test_gb_free(&dw), test_gb_free(&db), test_gb_free(&out1), test_gb_free(&din1), test_gb_free(&dw1), test_gb_free(&db1);
    free(sdw), free(adw), free(sdb), free(adb);
}

/* --------------------------------------------- memory, data, misc ops */

static void test_memory(void) {
    void *p = g_be->alloc(g_be, 1000);
    CHECK(p != NULL && ((uintptr_t)p & 63) == 0);
    unsigned char src[1000], dst[1000];
    for (int i = 0; i < 1000; i++) src[i] = (unsigned char)(i * 7);
    g_be->upload(g_be, p, src, sizeof src);
    g_be->download(g_be, dst, p, sizeof dst);
    CHECK(memcmp(src, dst, sizeof src) == 0);
    g_be->zero(g_be, p, 500);
    g_be->download(g_be, dst, p, sizeof dst);
    int ok = 1;
    for (int i = 0; i < 1000; i++) ok &= dst[i] == (i < 500 ? 0 : src[i]);
    CHECK(ok);
    g_be->sync(g_be);
    g_be->release(g_be, p);
    CHECK(g_be->alloc(g_be, SIZE_MAX - 8) == NULL);
    CHECK(strstr(vae_error_get(), "out of host memory") != NULL);
}

static void test_gather(void) {
    enum { N = 5, D = 7, B = 4, NIDX = 11 };
    uint8_t data[N * D];
    for (int i = 0; i < N * D; i++) data[i] = (uint8_t)(i * 37);
    data[0] = 0, data[4 * D + 1] = 255;
    /* an epoch's index array; the step's batch starts at sv->row0 */
    const int32_t idx[NIDX] = {4, 0, 2, 4, 1, 3, 0, 2, 4, 0, 3};
    uint8_t *ddata = (uint8_t *)g_be->alloc(g_be, sizeof data);
    int32_t *didx = (int32_t *)g_be->alloc(g_be, sizeof idx);
    g_be->upload(g_be, ddata, data, sizeof data);
    g_be->upload(g_be, didx, idx, sizeof idx);
    const vae_step_vals v0 = vae_step_vals_make(0, 0, 0, B, 0, 1, 1);
    vae_step_vals *sv = test_step_vals_dev(g_be, &v0);
    test_gbuf x = test_gb_new(B * D);
    g_be->gather_batch(g_be, x.p, ddata, didx, sv, B, D);
    int ok = 1;
    for (int b = 0; b < B; b++)
        for (int d = 0; d < D; d++)
            ok &= fabs((double)x.p[b * D + d] - data[idx[b] * D + d] / 255.0) <= 1e-7;
    CHECK(ok);
    CHECK(x.p[1 * D + 0] == 0);     /* data[0] = 0 */
    CHECK(x.p[0 * D + 1] == 1);     /* 255 -> exactly 1 */
    CHECK(x.p[3 * D + 1] == 1);
    CHECK(test_gb_intact(&x));

    /* row0 = 7 (step 1 with batch 7 over 11 images): rows idx[7 .. 10], the
     * epoch's short last batch of 4 */
    const vae_step_vals v1 = vae_step_vals_make(1, 7, 1, B, 0, 1, 1);
    g_be->upload(g_be, sv, &v1, sizeof v1);
    test_gb_reset(&x);
    g_be->gather_batch(g_be, x.p, ddata, didx, sv, B, D);
    ok = 1;
    for (int b = 0; b < B; b++)
        for (int d = 0; d < D; d++)
            ok &= fabs((double)x.p[b * D + d] - data[idx[7 + b] * D + d] / 255.0) <= 1e-7;
    CHECK(ok);
    CHECK(x.p[1 * D + 1] == 1);     /* idx[8] = 4: 255 -> exactly 1 */
    CHECK(x.p[2 * D + 0] == 0);     /* idx[9] = 0 */
    CHECK(test_gb_intact(&x));
    test_gb_free(&x);
    g_be->release(g_be, ddata), g_be->release(g_be, didx), g_be->release(g_be, sv);
}

static void test_to_u8(void) {
    enum { N = 10 };
    const real v[N] = {0, 100, -100, NAN, 2.0f, /* gaussian: */ 0.5f, 1.7f, -0.3f, NAN, 1};
    real *dv = (real *)g_be->alloc(g_be, sizeof v);
    uint8_t *px = (uint8_t *)g_be->alloc(g_be, N + 16), host[N + 16];
    g_be->upload(g_be, dv, v, sizeof v);
    memset(px, 0xA7, N + 16);
    g_be->to_u8(g_be, px, dv, 5, VAE_LIK_BERNOULLI);
    g_be->to_u8(g_be, px + 5, dv + 5, 5, VAE_LIK_GAUSSIAN);
    g_be->download(g_be, host, px, N + 16);
    CHECK(host[0] == 128); /* sigmoid(0) = 0.5 -> 127.5 + 0.5 */
    CHECK(host[1] == 255);
    CHECK(host[2] == 0);
    CHECK(host[3] == 0);   /* NaN */
    CHECK(host[4] == (uint8_t)(255.0 / (1 + exp(-2.0)) + 0.5)); /* 224.9 -> 225 */
    CHECK(host[5] == 128);
    CHECK(host[6] == 255); /* clamped */
    CHECK(host[7] == 0);
    CHECK(host[8] == 0);
    CHECK(host[9] == 255);
    CHECK(host[N] == 0xA7 && host[N + 15] == 0xA7);
    g_be->release(g_be, dv), g_be->release(g_be, px);
}

static void test_normals(void) {
    enum { N = 4096 };
    test_gbuf z = test_gb_new(N), z2 = test_gb_new(N - 3);
    g_be->normal_fill(g_be, z.p, N, 42, VAE_RNG_PRIOR, 0, 0);
    g_be->normal_fill(g_be, z2.p, N - 3, 42, VAE_RNG_PRIOR, 0, 3);
    int ok = 1;
    double s = 0, s2 = 0;
    for (int i = 0; i < N; i++) {
        ok &= z.p[i] == vae_normal_at(42, VAE_RNG_PRIOR, 0, (uint64_t)i);
        s += z.p[i], s2 += (double)z.p[i] * z.p[i];
    }
    CHECK(ok);
    CHECK(memcmp(z2.p, z.p + 3, (N - 3) * sizeof(real)) == 0); /* `first` offsets the stream */
    double mean = s / N, var = s2 / N - mean * mean;
    CHECK_MSG(fabs(mean) < 0.06 && fabs(var - 1) < 0.08, "mean %g var %g", mean, var);
    CHECK(test_gb_intact(&z) && test_gb_intact(&z2));
    test_gb_free(&z), test_gb_free(&z2);

    /* reparam with lv = 0, mu = 1: z = 1 + eps, same eps indexing b*L + l */
    enum { B = 3, L = 4 };
    test_gbuf head = test_gb_new(B * 2 * L), zz = test_gb_new(B * L);
    for (int b = 0; b < B; b++)
        for (int l = 0; l < L; l++) head.p[b * 2 * L + l] = 1, head.p[b * 2 * L + L + l] = 0;
    const vae_step_vals v5 = vae_step_vals_make(5, 0, 5, B, 0, 1, 1);
    vae_step_vals *sv = test_step_vals_dev(g_be, &v5);
    g_be->reparam_forward(g_be, zz.p, head.p, B, L, 9, VAE_RNG_TRAIN, sv);
    ok = 1;
    for (int i = 0; i < B * L; i++) ok &= zz.p[i] == 1 + vae_normal_at(9, VAE_RNG_TRAIN, 5, (uint64_t)i);
    CHECK(ok);
    CHECK(test_gb_intact(&zz));
    test_gb_free(&head), test_gb_free(&zz);
    g_be->release(g_be, sv);
}

static void test_reductions(void) {
    enum { N = 1001 };
    test_gbuf v = gb_rand(N, -1, 1);
    double *acc = (double *)g_be->alloc(g_be, sizeof(double));
    double ref = 0, ref2 = 0;
    for (int i = 0; i < N; i++) ref += v.p[i], ref2 += (double)v.p[i] * v.p[i];
    *acc = 1.5;
    g_be->sum_into(g_be, acc, v.p, N);
    CHECK_CLOSE(*acc, 1.5 + ref, 1e-12, 1e-12);
    g_be->sum_into(g_be, acc, v.p, N);
    CHECK_CLOSE(*acc, 1.5 + 2 * ref, 1e-12, 1e-12);
    g_be->sumsq(g_be, acc, v.p, N); /* overwrites */
    CHECK_CLOSE(*acc, ref2, 1e-12, 0);
    g_be->sumsq(g_be, acc, v.p, 0);
    CHECK(*acc == 0);
    g_be->release(g_be, acc);
    test_gb_free(&v);
}

/* The bias gradients' sums accumulate in double (backend_cpu.c): 100,000
 * terms of 0.1f sum to 10000.000149 in double, which rounds to 10000 as a
 * float; summed in float they drift to ~9998.56 (1.4e-4 relative). The
 * check allows 1e-6 relative: the one final rounding to float (5e-8)
 * passes, a float accumulation does not. Dense (dense_backward's db, din
 * and dw not asked for) and per channel (act_backward_bias's db, one
 * channel of 100,000 pixels). */
static void test_bias_sums(void) {
    enum { N = 100000 };
    test_gbuf d = test_gb_new(N), one = test_gb_new(N), din = test_gb_new(N), db = test_gb_new(1);
    double want = 0;
    for (int i = 0; i < N; i++) d.p[i] = (real)0.1, one.p[i] = 1, want += (double)d.p[i];
    g_be->dense_backward(g_be, NULL, NULL, db.p, d.p, NULL, NULL, N, 1, 1);
    CHECK_MSG(fabs(db.p[0] - want) <= 1e-6 * want, "dense db of %d terms: %.9g, want %.9g", N,
              (double)db.p[0], want);
    g_be->act_backward_bias(g_be, din.p, db.p, d.p, one.p, 1, 1, N, VAE_ACT_RELU, 0);
    CHECK_MSG(fabs(db.p[0] - want) <= 1e-6 * want, "conv db of %d terms: %.9g, want %.9g", N,
              (double)db.p[0], want);
    CHECK(test_gb_intact(&db) && test_gb_intact(&din));
    test_gb_free(&d), test_gb_free(&one), test_gb_free(&din), test_gb_free(&db);
}

/* Activations: forward/backward on a few exact values, sentinels. */
static void test_act(void) {
    enum { N = 6 };
    const real x[N] = {-2, -0.5f, 0, 0.25f, 3, -1e-30f};
    test_gbuf in = test_gb_new(N), out = test_gb_new(N), d = test_gb_new(N), din = test_gb_new(N);
    memcpy(in.p, x, sizeof x);
    for (int i = 0; i < N; i++) d.p[i] = (real)(i + 1);
    g_be->act_forward(g_be, out.p, in.p, N, VAE_ACT_LEAKY_RELU, 0.1f);
    g_be->act_backward(g_be, din.p, d.p, out.p, N, VAE_ACT_LEAKY_RELU, 0.1f);
    int ok = 1;
    for (int i = 0; i < N; i++) {
        ok &= out.p[i] == (x[i] > 0 ? x[i] : 0.1f * x[i]);
        ok &= din.p[i] == (x[i] > 0 ? d.p[i] : 0.1f * d.p[i]);
    }
    CHECK(ok);
    g_be->act_forward(g_be, out.p, in.p, N, VAE_ACT_RELU, 0);
    g_be->act_backward(g_be, din.p, d.p, out.p, N, VAE_ACT_RELU, 0);
    ok = 1;
    for (int i = 0; i < N; i++) {
        ok &= out.p[i] == (x[i] > 0 ? x[i] : 0);
        ok &= din.p[i] == (x[i] > 0 ? d.p[i] : 0);
    }
    CHECK(ok);
    CHECK(test_gb_intact(&out) && test_gb_intact(&din));
    test_gb_free(&in), test_gb_free(&out), test_gb_free(&d), test_gb_free(&din);
}

int main(void) {
    g_be = vae_backend_cpu_create(2);
    if (!g_be) {
        fprintf(stderr, "cpu backend: %s\n", vae_error_get());
        return 1;
    }

    test_dense(1, 1, 1);
    test_dense(5, 17, 9);
    test_dense(16, 600, 33); /* K = 600 products per output */
    test_dense(7, 300, 3);
    test_bias_sums();

    /* B, cin, hin, win, cout, k, s, p */
    test_conv(4, 1, 28, 28, 32, 3, 2, 1);  /* MNIST encoder conv 1 */
    test_conv(2, 32, 14, 14, 64, 3, 2, 1); /* MNIST encoder conv 2: K = 288 */
    test_conv(3, 3, 9, 13, 5, 4, 2, 1);    /* non-square, even kernel */
    test_conv(2, 24, 6, 5, 3, 5, 1, 2);    /* K = 600 */
    test_conv(1, 2, 7, 7, 3, 3, 3, 0);     /* stride 3 drops the last row/col */
    test_conv(3, 4, 5, 8, 2, 1, 2, 0);     /* 1x1 stride 2 */
    test_conv(2, 1, 4, 4, 1, 5, 1, 2);     /* kernel larger than the image */

    /* B, cin, hin, win, cout, k, s, p, op */
    test_convt(2, 64, 7, 7, 32, 3, 2, 1, 1);  /* MNIST decoder convT 1 */
    test_convt(2, 32, 14, 14, 1, 3, 2, 1, 1); /* MNIST decoder convT 2 */
    test_convt(3, 3, 5, 4, 2, 5, 3, 2, 2);    /* stride 3, out_pad 2, non-square */
    test_convt(2, 4, 3, 6, 3, 2, 3, 0, 1);    /* stride > kernel: gaps get bias only */
    test_convt(1, 5, 4, 4, 4, 3, 1, 1, 0);    /* stride 1 */
    test_convt(2, 3, 3, 5, 2, 4, 2, 1, 0);    /* even kernel */

    test_chunked(0);
    test_chunked(1);

    test_memory();
    test_gather();
    test_to_u8();
    test_normals();
    test_reductions();
    test_act();

    g_be->destroy(g_be);
    return test_finish();
}

/* test_mock_cudnn.c — checks tests/mock/mock_cudnn.c on its own.
 *
 * Carries a throwaway stand-in for mock.h's functions (the real ones live in
 * mock_cudart.c): mock_enqueue runs fn on a copy of args at once, or records
 * it while the test "captures"; mock_note prints and counts.
 *
 * Checks: the three convolutions against naive loops written from the
 * definitions (several geometries, both modes, alpha/beta), the adjoint
 * identities <conv(x,w), dy> = <x, bwd_data(dy,w)> = <w, bwd_filter(x,dy)>
 * (exact data, so within 1e-9 relative — in fact exactly), the searches and
 * heuristics, deferred (captured) execution, and the validation statuses.
 *
 * gcc -std=c11 -Wall -Wextra -I/usr/local/cuda/include -Itests/mock \
 *     tests/mock/mock_cudnn.c tests/mock/test_mock_cudnn.c -lm
 */
#include <cudnn.h>

#include "mock.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------ mock.h stand-in */

#define MAX_RECORDED 64
static int g_capturing;
static int g_notes;
static int g_quiet; /* notes expected: count, do not print */
static struct {
    mock_fn fn;
    void *args;
} g_rec[MAX_RECORDED];
static int g_nrec;

int mock_enqueue(cudaStream_t s, const char *what, mock_fn fn, const void *args, size_t size) {
    (void)s;
    void *copy = malloc(size);
    if (!copy) abort();
    memcpy(copy, args, size);
    if (g_capturing) {
        if (g_nrec == MAX_RECORDED) abort();
        g_rec[g_nrec].fn = fn;
        g_rec[g_nrec].args = copy;
        g_nrec++;
        return 0;
    }
    fn(copy);
    free(copy);
    return 0;
}

int mock_capturing(cudaStream_t s) {
    (void)s;
    return g_capturing;
}

void mock_note(const char *fmt, ...) {
    g_notes++;
    if (g_quiet) return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "mock device: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
}

static void replay(void) {
    for (int i = 0; i < g_nrec; i++) {
        g_rec[i].fn(g_rec[i].args);
        free(g_rec[i].args);
    }
    g_nrec = 0;
}

/* ------------------------------------------------------------ checks */

static int g_fail, g_checks;

#define CHECK(cond, ...)                                                   \
    do {                                                                   \
        g_checks++;                                                        \
        if (!(cond)) {                                                     \
            g_fail++;                                                      \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                  \
            fprintf(stderr, "\n");                                         \
        }                                                                  \
    } while (0)

#define OK(call)                                                                        \
    do {                                                                                \
        cudnnStatus_t st_ = (call);                                                     \
        CHECK(st_ == CUDNN_STATUS_SUCCESS, "%s returned %s", #call,                     \
              cudnnGetErrorString(st_));                                                \
    } while (0)

/* call returns `want` and says why in (at least) one note */
#define EXPECT(want, call)                                                              \
    do {                                                                                \
        int n0_ = g_notes;                                                              \
        g_quiet = 1;                                                                    \
        cudnnStatus_t st_ = (call);                                                     \
        g_quiet = 0;                                                                    \
        CHECK(st_ == (want), "%s returned %s, expected %s", #call,                      \
              cudnnGetErrorString(st_), cudnnGetErrorString(want));                     \
        CHECK(g_notes > n0_, "%s gave no note", #call);                                 \
    } while (0)

/* ------------------------------------------------------------ geometry */

typedef struct {
    int n, c, h, w, k, r, s, ph, pw, u, v, dh, dw;
} tgeom;

static int out_h(const tgeom *t) { return (t->h + 2 * t->ph - ((t->r - 1) * t->dh + 1)) / t->u + 1; }
static int out_w(const tgeom *t) { return (t->w + 2 * t->pw - ((t->s - 1) * t->dw + 1)) / t->v + 1; }
static size_t nx(const tgeom *t) { return (size_t)t->n * t->c * t->h * t->w; }
static size_t nw(const tgeom *t) { return (size_t)t->k * t->c * t->r * t->s; }
static size_t ny(const tgeom *t) { return (size_t)t->n * t->k * out_h(t) * out_w(t); }

/* index of the filter element tap (r, s) uses in mode `flip` */
static size_t widx(const tgeom *t, int flip, int k, int c, int r, int s) {
    if (flip) r = t->r - 1 - r, s = t->s - 1 - s;
    return (((size_t)k * t->c + c) * t->r + r) * t->s + s;
}

/* Naive loops straight from the definitions: every (n, k, p, q, c, r, s)
 * term of y[n,k,p,q] = sum x[n,c,p u - ph + r dh, q v - pw + s dw] wm[k,c,r,s]
 * added to y (forward), to dx at the x position (backward data: the adjoint
 * in x) and to dw at the filter position (backward filter: the adjoint in w). */
enum { REF_FWD, REF_BWD_DATA, REF_BWD_FILTER };
static void ref(int which, const tgeom *t, int flip, const float *x, const float *w,
                const float *dy, double *out) {
    const int P = out_h(t), Q = out_w(t);
    size_t cnt = which == REF_FWD ? ny(t) : which == REF_BWD_DATA ? nx(t) : nw(t);
    for (size_t i = 0; i < cnt; i++) out[i] = 0.0;
    for (int n = 0; n < t->n; n++)
        for (int k = 0; k < t->k; k++)
            for (int p = 0; p < P; p++)
                for (int q = 0; q < Q; q++)
                    for (int c = 0; c < t->c; c++)
                        for (int r = 0; r < t->r; r++)
                            for (int s = 0; s < t->s; s++) {
                                const int ih = p * t->u - t->ph + r * t->dh;
                                const int iw = q * t->v - t->pw + s * t->dw;
                                if (ih < 0 || ih >= t->h || iw < 0 || iw >= t->w) continue;
                                const size_t xi = (((size_t)n * t->c + c) * t->h + ih) * t->w + iw;
                                const size_t yi = (((size_t)n * t->k + k) * P + p) * Q + q;
                                const size_t wi = widx(t, flip, k, c, r, s);
                                if (which == REF_FWD) out[yi] += (double)x[xi] * w[wi];
                                else if (which == REF_BWD_DATA) out[xi] += (double)dy[yi] * w[wi];
                                else out[wi] += (double)x[xi] * dy[yi];
                            }
}

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void) {
    g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(g_rng >> 33);
}
static void fill_real(float *p, size_t n) { /* uniform in [-1, 1) */
    for (size_t i = 0; i < n; i++) p[i] = (float)((double)rnd() / 2147483648.0 * 2.0 - 1.0);
}
static void fill_exact(float *p, size_t n) { /* k / 8, |k| <= 16: sums stay exact */
    for (size_t i = 0; i < n; i++) p[i] = (float)((int)(rnd() % 33) - 16) / 8.0f;
}
static void fill_nan(float *p, size_t n) {
    for (size_t i = 0; i < n; i++) p[i] = nanf("");
}
/* x to TF32 (10 mantissa bits, to nearest even), as the mock rounds inputs
 * under any math type but CUDNN_FMA_MATH */
static float tf32(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    u += 0x0fffu + ((u >> 13) & 1u);
    u &= 0xffffe000u;
    memcpy(&x, &u, sizeof x);
    return x;
}
/* fill_real, and representable in TF32 unless math is FMA (so that the
 * reference loops need not round) */
static void fill_in(float *p, size_t n, cudnnMathType_t math) {
    fill_real(p, n);
    if (math != CUDNN_FMA_MATH)
        for (size_t i = 0; i < n; i++) p[i] = tf32(p[i]);
}

static float *falloc(size_t n) {
    float *p = malloc((n ? n : 1) * sizeof *p);
    if (!p) abort();
    return p;
}

/* max over i of |got - want| / (|want| + 1e-3), and no NaN */
static double rel_err(const float *got, const double *want, size_t n) {
    double e = 0.0;
    for (size_t i = 0; i < n; i++) {
        if (isnan(got[i])) return INFINITY;
        double d = fabs((double)got[i] - want[i]) / (fabs(want[i]) + 1e-3);
        if (d > e) e = d;
    }
    return e;
}

static double dot(const float *a, const float *b, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

typedef struct {
    cudnnTensorDescriptor_t xd, yd;
    cudnnFilterDescriptor_t fd;
    cudnnConvolutionDescriptor_t cd;
} descs;

static void make_descs(descs *d, const tgeom *t, int flip, cudnnMathType_t math) {
    OK(cudnnCreateTensorDescriptor(&d->xd));
    OK(cudnnCreateTensorDescriptor(&d->yd));
    OK(cudnnCreateFilterDescriptor(&d->fd));
    OK(cudnnCreateConvolutionDescriptor(&d->cd));
    OK(cudnnSetTensor4dDescriptor(d->xd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, t->n, t->c, t->h,
                                  t->w));
    OK(cudnnSetFilter4dDescriptor(d->fd, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, t->k, t->c, t->r,
                                  t->s));
    OK(cudnnSetConvolution2dDescriptor(d->cd, t->ph, t->pw, t->u, t->v, t->dh, t->dw,
                                       flip ? CUDNN_CONVOLUTION : CUDNN_CROSS_CORRELATION,
                                       CUDNN_DATA_FLOAT));
    OK(cudnnSetConvolutionMathType(d->cd, math));
    int on = 0, oc = 0, oh = 0, ow = 0;
    OK(cudnnGetConvolution2dForwardOutputDim(d->cd, d->xd, d->fd, &on, &oc, &oh, &ow));
    CHECK(on == t->n && oc == t->k && oh == out_h(t) && ow == out_w(t),
          "output dim [%d,%d,%d,%d], expected [%d,%d,%d,%d]", on, oc, oh, ow, t->n, t->k,
          out_h(t), out_w(t));
    OK(cudnnSetTensor4dDescriptor(d->yd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, on, oc, oh, ow));
}

static void free_descs(descs *d) {
    OK(cudnnDestroyTensorDescriptor(d->xd));
    OK(cudnnDestroyTensorDescriptor(d->yd));
    OK(cudnnDestroyFilterDescriptor(d->fd));
    OK(cudnnDestroyConvolutionDescriptor(d->cd));
}

/* The three convolutions with alpha/beta; ws of ws_size bytes. */
static cudnnStatus_t do_fwd(cudnnHandle_t h, const descs *d, float alpha, float beta,
                            const float *x, const float *w, float *y, void *ws, size_t wsn) {
    return cudnnConvolutionForward(h, &alpha, d->xd, x, d->fd, w, d->cd,
                                   CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, ws, wsn, &beta, d->yd,
                                   y);
}
static cudnnStatus_t do_bwd_data(cudnnHandle_t h, const descs *d, float alpha, float beta,
                                 const float *w, const float *dy, float *dx, void *ws,
                                 size_t wsn) {
    return cudnnConvolutionBackwardData(h, &alpha, d->fd, w, d->yd, dy, d->cd,
                                        CUDNN_CONVOLUTION_BWD_DATA_ALGO_1, ws, wsn, &beta, d->xd,
                                        dx);
}
static cudnnStatus_t do_bwd_filter(cudnnHandle_t h, const descs *d, float alpha, float beta,
                                   const float *x, const float *dy, float *dw, void *ws,
                                   size_t wsn) {
    return cudnnConvolutionBackwardFilter(h, &alpha, d->xd, x, d->yd, dy, d->cd,
                                          CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1, ws, wsn, &beta,
                                          d->fd, dw);
}

static int all_nan(const float *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isnan(p[i])) return 0;
    return 1;
}

/* One geometry in one mode: searches, heuristics, values, alpha/beta, adjoints. */
static void test_geometry(cudnnHandle_t h, const tgeom *t, int flip) {
    const size_t NX = nx(t), NW = nw(t), NY = ny(t);
    const cudnnMathType_t math = flip ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH;
    descs d;
    make_descs(&d, t, flip, math);
    char tag[160];
    snprintf(tag, sizeof tag,
             "x [%d,%d,%d,%d] w [%d,%d,%d,%d] pad (%d,%d) stride (%d,%d) dil (%d,%d) %s", t->n,
             t->c, t->h, t->w, t->k, t->c, t->r, t->s, t->ph, t->pw, t->u, t->v, t->dh, t->dw,
             flip ? "CONVOLUTION" : "CROSS_CORRELATION");

    float *x = falloc(NX), *w = falloc(NW), *dy = falloc(NY);
    float *y = falloc(NY), *dx = falloc(NX), *dw = falloc(NW);
    double *r = malloc((NX > NY ? (NX > NW ? NX : NW) : (NY > NW ? NY : NW)) * sizeof *r);
    if (!r) abort();

    /* heuristics: one deterministic result with a workspace */
    cudnnConvolutionFwdAlgoPerf_t pf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    cudnnConvolutionBwdDataAlgoPerf_t pd[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
    cudnnConvolutionBwdFilterAlgoPerf_t pw[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
    int got = -1;
    OK(cudnnGetConvolutionForwardAlgorithm_v7(h, d.xd, d.fd, d.cd, d.yd,
                                              CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &got, pf));
    CHECK(got == 1 && pf[0].algo == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM &&
              pf[0].status == CUDNN_STATUS_SUCCESS && pf[0].determinism == CUDNN_DETERMINISTIC &&
              pf[0].mathType == math && pf[0].memory > 0,
          "%s: fwd heuristic", tag);
    const size_t need_f = pf[0].memory;
    OK(cudnnGetConvolutionBackwardDataAlgorithm_v7(h, d.fd, d.yd, d.cd, d.xd,
                                                   CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &got,
                                                   pd));
    CHECK(got == 1 && pd[0].algo == CUDNN_CONVOLUTION_BWD_DATA_ALGO_1 &&
              pd[0].status == CUDNN_STATUS_SUCCESS && pd[0].determinism == CUDNN_DETERMINISTIC &&
              pd[0].mathType == math && pd[0].memory > 0,
          "%s: bwd data heuristic", tag);
    const size_t need_d = pd[0].memory;
    OK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, d.xd, d.yd, d.cd, d.fd,
                                                     CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT,
                                                     &got, pw));
    CHECK(got == 1 && pw[0].algo == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1 &&
              pw[0].status == CUDNN_STATUS_SUCCESS && pw[0].determinism == CUDNN_DETERMINISTIC &&
              pw[0].mathType == math && pw[0].memory > 0,
          "%s: bwd filter heuristic", tag);
    const size_t need_w = pw[0].memory;
    size_t wsn = need_f > need_d ? need_f : need_d;
    if (need_w > wsn) wsn = need_w;
    unsigned char *ws = malloc(wsn);
    if (!ws) abort();

    /* searches: the same result, the output written (NaN), the workspace used */
    fill_in(x, NX, math), fill_in(w, NW, math), fill_in(dy, NY, math);
    fill_real(y, NY), fill_real(dx, NX), fill_real(dw, NW);
    memset(ws, 0, wsn);
    OK(cudnnFindConvolutionForwardAlgorithmEx(h, d.xd, x, d.fd, w, d.cd, d.yd, y,
                                              CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &got, pf, ws,
                                              wsn));
    CHECK(got == 1 && pf[0].algo == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM &&
              pf[0].status == CUDNN_STATUS_SUCCESS && pf[0].memory == need_f &&
              pf[0].time == 1.0f && pf[0].determinism == CUDNN_DETERMINISTIC,
          "%s: fwd search", tag);
    CHECK(all_nan(y, NY), "%s: fwd search did not write y", tag);
    CHECK(ws[0] == 0xFF && ws[need_f - 1] == 0xFF, "%s: fwd search did not use the workspace",
          tag);
    OK(cudnnFindConvolutionBackwardDataAlgorithmEx(h, d.fd, w, d.yd, dy, d.cd, d.xd, dx,
                                                   CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &got,
                                                   pd, ws, wsn));
    CHECK(got == 1 && pd[0].algo == CUDNN_CONVOLUTION_BWD_DATA_ALGO_1 &&
              pd[0].status == CUDNN_STATUS_SUCCESS && pd[0].memory == need_d,
          "%s: bwd data search", tag);
    CHECK(all_nan(dx, NX), "%s: bwd data search did not write dx", tag);
    OK(cudnnFindConvolutionBackwardFilterAlgorithmEx(h, d.xd, x, d.yd, dy, d.cd, d.fd, dw,
                                                     CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT,
                                                     &got, pw, ws, wsn));
    CHECK(got == 1 && pw[0].algo == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1 &&
              pw[0].status == CUDNN_STATUS_SUCCESS && pw[0].memory == need_w,
          "%s: bwd filter search", tag);
    CHECK(all_nan(dw, NW), "%s: bwd filter search did not write dw", tag);

    /* a search with too little workspace: the result says so, nothing runs */
    fill_real(y, NY);
    const float y0 = y[0];
    OK(cudnnFindConvolutionForwardAlgorithmEx(h, d.xd, x, d.fd, w, d.cd, d.yd, y, 1, &got, pf,
                                              ws, need_f - 1));
    CHECK(got == 1 && pf[0].status == CUDNN_STATUS_ALLOC_FAILED && pf[0].memory == need_f &&
              y[0] == y0,
          "%s: short-workspace search", tag);

    /* values: beta = 0 over NaN, against the naive loops */
    fill_nan(y, NY), fill_nan(dx, NX), fill_nan(dw, NW);
    OK(do_fwd(h, &d, 1.0f, 0.0f, x, w, y, ws, wsn));
    ref(REF_FWD, t, flip, x, w, dy, r);
    double e = rel_err(y, r, NY);
    CHECK(e < 1e-6, "%s: forward error %g", tag, e);
    OK(do_bwd_data(h, &d, 1.0f, 0.0f, w, dy, dx, ws, need_d));
    ref(REF_BWD_DATA, t, flip, x, w, dy, r);
    e = rel_err(dx, r, NX);
    CHECK(e < 1e-6, "%s: backward data error %g", tag, e);
    OK(do_bwd_filter(h, &d, 1.0f, 0.0f, x, dy, dw, ws, need_w));
    ref(REF_BWD_FILTER, t, flip, x, w, dy, r);
    e = rel_err(dw, r, NW);
    CHECK(e < 1e-6, "%s: backward filter error %g", tag, e);

    /* alpha and beta: out = 0.5 result - 2 out */
    {
        float *prev = falloc(NX > NY ? (NX > NW ? NX : NW) : (NY > NW ? NY : NW));
        fill_real(y, NY);
        memcpy(prev, y, NY * sizeof *y);
        OK(do_fwd(h, &d, 0.5f, -2.0f, x, w, y, ws, wsn));
        ref(REF_FWD, t, flip, x, w, dy, r);
        for (size_t i = 0; i < NY; i++) r[i] = 0.5 * r[i] - 2.0 * prev[i];
        e = rel_err(y, r, NY);
        CHECK(e < 1e-6, "%s: forward alpha/beta error %g", tag, e);
        fill_real(dx, NX);
        memcpy(prev, dx, NX * sizeof *dx);
        OK(do_bwd_data(h, &d, 0.5f, -2.0f, w, dy, dx, ws, wsn));
        ref(REF_BWD_DATA, t, flip, x, w, dy, r);
        for (size_t i = 0; i < NX; i++) r[i] = 0.5 * r[i] - 2.0 * prev[i];
        e = rel_err(dx, r, NX);
        CHECK(e < 1e-6, "%s: backward data alpha/beta error %g", tag, e);
        fill_real(dw, NW);
        memcpy(prev, dw, NW * sizeof *dw);
        OK(do_bwd_filter(h, &d, 0.5f, -2.0f, x, dy, dw, ws, wsn));
        ref(REF_BWD_FILTER, t, flip, x, w, dy, r);
        for (size_t i = 0; i < NW; i++) r[i] = 0.5 * r[i] - 2.0 * prev[i];
        e = rel_err(dw, r, NW);
        CHECK(e < 1e-6, "%s: backward filter alpha/beta error %g", tag, e);
        free(prev);
    }

    /* adjoints, on data whose products and sums are exact in float */
    fill_exact(x, NX), fill_exact(w, NW), fill_exact(dy, NY);
    fill_nan(y, NY), fill_nan(dx, NX), fill_nan(dw, NW);
    OK(do_fwd(h, &d, 1.0f, 0.0f, x, w, y, ws, wsn));
    OK(do_bwd_data(h, &d, 1.0f, 0.0f, w, dy, dx, ws, wsn));
    OK(do_bwd_filter(h, &d, 1.0f, 0.0f, x, dy, dw, ws, wsn));
    const double a = dot(y, dy, NY), b = dot(x, dx, NX), c = dot(w, dw, NW);
    const double sc = fabs(a) + fabs(b) + fabs(c) + 1e-300;
    CHECK(fabs(a - b) <= 1e-9 * sc && fabs(a - c) <= 1e-9 * sc,
          "%s: adjoints <y,dy> %.17g <x,dx> %.17g <w,dw> %.17g", tag, a, b, c);
    CHECK(fabs(a) > 0, "%s: degenerate adjoint test (all zero)", tag);

    /* and on real-valued data, where only float rounding separates them */
    fill_in(x, NX, math), fill_in(w, NW, math), fill_in(dy, NY, math);
    OK(do_fwd(h, &d, 1.0f, 0.0f, x, w, y, ws, wsn));
    OK(do_bwd_data(h, &d, 1.0f, 0.0f, w, dy, dx, ws, wsn));
    OK(do_bwd_filter(h, &d, 1.0f, 0.0f, x, dy, dw, ws, wsn));
    {
        const double a2 = dot(y, dy, NY), b2 = dot(x, dx, NX), c2 = dot(w, dw, NW);
        double m = 0.0; /* sum |y||dy| bounds the rounding */
        for (size_t i = 0; i < NY; i++) m += fabs((double)y[i] * dy[i]);
        CHECK(fabs(a2 - b2) <= 1e-6 * m && fabs(a2 - c2) <= 1e-6 * m,
              "%s: real-data adjoints %.17g %.17g %.17g", tag, a2, b2, c2);
    }

    free(ws);
    free(r);
    free(x), free(w), free(dy), free(y), free(dx), free(dw);
    free_descs(&d);
}

/* ----------------------------------------------------- validation tests */

static void test_validation(cudnnHandle_t h) {
    const tgeom t = {2, 3, 6, 5, 4, 3, 3, 1, 1, 2, 2, 1, 1}; /* y [2, 4, 3, 3] */
    descs d;
    make_descs(&d, &t, 0, CUDNN_FMA_MATH);
    float *x = falloc(nx(&t)), *w = falloc(nw(&t)), *y = falloc(ny(&t)), *dx = falloc(nx(&t));
    fill_real(x, nx(&t)), fill_real(w, nw(&t)), fill_real(y, ny(&t));
    cudnnConvolutionFwdAlgoPerf_t pf[8];
    cudnnConvolutionBwdDataAlgoPerf_t pd[8];
    int got = 0;
    OK(cudnnGetConvolutionForwardAlgorithm_v7(h, d.xd, d.fd, d.cd, d.yd, 8, &got, pf));
    const size_t need = pf[0].memory;
    unsigned char *ws = malloc(need + 64);
    if (!ws) abort();
    const float one = 1.0f, zero = 0.0f;

    /* setters */
    cudnnTensorDescriptor_t td;
    cudnnFilterDescriptor_t fd;
    cudnnConvolutionDescriptor_t cd;
    OK(cudnnCreateTensorDescriptor(&td));
    OK(cudnnCreateFilterDescriptor(&fd));
    OK(cudnnCreateConvolutionDescriptor(&cd));
    EXPECT(CUDNN_STATUS_BAD_PARAM, cudnnCreateTensorDescriptor(NULL));
    EXPECT(CUDNN_STATUS_BAD_PARAM,
           cudnnSetTensor4dDescriptor(td, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 0, 3, 6, 5));
    EXPECT(CUDNN_STATUS_BAD_PARAM,
           cudnnSetTensor4dDescriptor(td, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 2, -3, 6, 5));
    EXPECT(CUDNN_STATUS_BAD_PARAM,
           cudnnSetTensor4dDescriptor(td, (cudnnTensorFormat_t)7, CUDNN_DATA_FLOAT, 2, 3, 6, 5));
    EXPECT(CUDNN_STATUS_BAD_PARAM,
           cudnnSetTensor4dDescriptor(td, CUDNN_TENSOR_NCHW, (cudnnDataType_t)99, 2, 3, 6, 5));
    EXPECT(CUDNN_STATUS_NOT_SUPPORTED, cudnnSetTensor4dDescriptor(td, CUDNN_TENSOR_NCHW,
                                                                  CUDNN_DATA_FLOAT, 65536, 256,
                                                                  256, 1));
    EXPECT(CUDNN_STATUS_BAD_PARAM,
           cudnnSetFilter4dDescriptor(fd, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, 4, 3, 0, 3));
    EXPECT(CUDNN_STATUS_BAD_PARAM, cudnnSetFilter4dDescriptor(fd, CUDNN_DATA_FLOAT,
                                                              (cudnnTensorFormat_t)5, 4, 3, 3, 3));
    EXPECT(CUDNN_STATUS_BAD_PARAM, cudnnSetConvolution2dDescriptor(cd, -1, 0, 1, 1, 1, 1,
                                                                   CUDNN_CROSS_CORRELATION,
                                                                   CUDNN_DATA_FLOAT));
    EXPECT(CUDNN_STATUS_BAD_PARAM, cudnnSetConvolution2dDescriptor(cd, 0, 0, 0, 1, 1, 1,
                                                                   CUDNN_CROSS_CORRELATION,
                                                                   CUDNN_DATA_FLOAT));
    EXPECT(CUDNN_STATUS_BAD_PARAM, cudnnSetConvolution2dDescriptor(cd, 0, 0, 1, 1, 1, 0,
                                                                   CUDNN_CROSS_CORRELATION,
                                                                   CUDNN_DATA_FLOAT));
    EXPECT(CUDNN_STATUS_BAD_PARAM,
           cudnnSetConvolution2dDescriptor(cd, 0, 0, 1, 1, 1, 1, (cudnnConvolutionMode_t)2,
                                           CUDNN_DATA_FLOAT));
    EXPECT(CUDNN_STATUS_BAD_PARAM, cudnnSetConvolutionMathType(cd, (cudnnMathType_t)4));
    EXPECT(CUDNN_STATUS_BAD_PARAM, cudnnSetConvolutionMathType(NULL, CUDNN_FMA_MATH));
    OK(cudnnSetConvolutionMathType(cd, CUDNN_TENSOR_OP_MATH)); /* allowed before Set2d */

    /* unset descriptors are refused where used */
    int on, oc, oh, ow;
    EXPECT(CUDNN_STATUS_BAD_PARAM,
           cudnnGetConvolution2dForwardOutputDim(cd, d.xd, d.fd, &on, &oc, &oh, &ow));
    EXPECT(CUDNN_STATUS_BAD_PARAM, cudnnGetConvolutionForwardAlgorithm_v7(h, td, d.fd, d.cd, d.yd,
                                                                          8, &got, pf));
    EXPECT(CUDNN_STATUS_BAD_PARAM,
           cudnnGetConvolution2dForwardOutputDim(d.cd, d.xd, d.fd, &on, NULL, &oh, &ow));

    /* x and w feature maps differ */
    OK(cudnnSetFilter4dDescriptor(fd, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, 4, 2, 3, 3));
    EXPECT(CUDNN_STATUS_BAD_PARAM,
           cudnnGetConvolution2dForwardOutputDim(d.cd, d.xd, fd, &on, &oc, &oh, &ow));
    EXPECT(CUDNN_STATUS_BAD_PARAM, cudnnConvolutionForward(h, &one, d.xd, x, fd, w, d.cd,
                                                           CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM,
                                                           ws, need, &zero, d.yd, y));
    /* filter larger than the padded input (6x5 padded by 1: 8x7; filter 9 high) */
    OK(cudnnSetFilter4dDescriptor(fd, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, 4, 3, 9, 3));
    EXPECT(CUDNN_STATUS_BAD_PARAM,
           cudnnGetConvolution2dForwardOutputDim(d.cd, d.xd, fd, &on, &oc, &oh, &ow));

    /* y of the wrong size: spatial (forward: NOT_SUPPORTED, others BAD_PARAM), maps, batch */
    OK(cudnnSetTensor4dDescriptor(td, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 2, 4, 3, 2));
    EXPECT(CUDNN_STATUS_NOT_SUPPORTED,
           cudnnConvolutionForward(h, &one, d.xd, x, d.fd, w, d.cd,
                                   CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, ws, need, &zero, td,
                                   y));
    EXPECT(CUDNN_STATUS_BAD_PARAM,
           cudnnConvolutionBackwardData(h, &one, d.fd, w, td, y, d.cd,
                                        CUDNN_CONVOLUTION_BWD_DATA_ALGO_1, ws, need + 64, &zero,
                                        d.xd, dx));
    EXPECT(CUDNN_STATUS_BAD_PARAM,
           cudnnGetConvolutionBackwardDataAlgorithm_v7(h, d.fd, td, d.cd, d.xd, 8, &got, pd));
    OK(cudnnSetTensor4dDescriptor(td, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 2, 5, 3, 3));
    EXPECT(CUDNN_STATUS_BAD_PARAM,
           cudnnConvolutionForward(h, &one, d.xd, x, d.fd, w, d.cd,
                                   CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, ws, need, &zero, td,
                                   y));
    OK(cudnnSetTensor4dDescriptor(td, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 1, 4, 3, 3));
    EXPECT(CUDNN_STATUS_BAD_PARAM,
           cudnnConvolutionForward(h, &one, d.xd, x, d.fd, w, d.cd,
                                   CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, ws, need, &zero, td,
                                   y));

    /* types and layouts */
    OK(cudnnSetTensor4dDescriptor(td, CUDNN_TENSOR_NCHW, CUDNN_DATA_HALF, 2, 4, 3, 3));
    EXPECT(CUDNN_STATUS_BAD_PARAM,
           cudnnConvolutionForward(h, &one, d.xd, x, d.fd, w, d.cd,
                                   CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, ws, need, &zero, td,
                                   y));
    OK(cudnnSetTensor4dDescriptor(td, CUDNN_TENSOR_NHWC, CUDNN_DATA_FLOAT, 2, 4, 3, 3));
    EXPECT(CUDNN_STATUS_NOT_SUPPORTED,
           cudnnConvolutionForward(h, &one, d.xd, x, d.fd, w, d.cd,
                                   CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, ws, need, &zero, td,
                                   y));
    OK(cudnnSetFilter4dDescriptor(fd, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NHWC, 4, 3, 3, 3));
    EXPECT(CUDNN_STATUS_NOT_SUPPORTED,
           cudnnConvolutionForward(h, &one, d.xd, x, fd, w, d.cd,
                                   CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, ws, need, &zero, d.yd,
                                   y));
    OK(cudnnSetConvolution2dDescriptor(cd, 1, 1, 2, 2, 1, 1, CUDNN_CROSS_CORRELATION,
                                       CUDNN_DATA_DOUBLE));
    EXPECT(CUDNN_STATUS_NOT_SUPPORTED,
           cudnnConvolutionForward(h, &one, d.xd, x, d.fd, w, cd,
                                   CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, ws, need, &zero, d.yd,
                                   y));

    /* workspace, pointers, scalars, algo */
    EXPECT(CUDNN_STATUS_BAD_PARAM,
           cudnnConvolutionForward(h, &one, d.xd, x, d.fd, w, d.cd,
                                   CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, ws, need - 1, &zero,
                                   d.yd, y));
    EXPECT(CUDNN_STATUS_BAD_PARAM,
           cudnnConvolutionForward(h, &one, d.xd, x, d.fd, w, d.cd,
                                   CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, NULL, need, &zero,
                                   d.yd, y));
    EXPECT(CUDNN_STATUS_BAD_PARAM,
           cudnnConvolutionForward(h, &one, d.xd, x, d.fd, w, d.cd,
                                   CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, ws, need, NULL, d.yd,
                                   y));
    EXPECT(CUDNN_STATUS_BAD_PARAM,
           cudnnConvolutionForward(h, &one, d.xd, NULL, d.fd, w, d.cd,
                                   CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, ws, need, &zero,
                                   d.yd, y));
    EXPECT(CUDNN_STATUS_BAD_PARAM,
           cudnnConvolutionForward(NULL, &one, d.xd, x, d.fd, w, d.cd,
                                   CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, ws, need, &zero,
                                   d.yd, y));
    EXPECT(CUDNN_STATUS_BAD_PARAM,
           cudnnConvolutionForward(h, &one, d.xd, x, d.fd, w, d.cd, (cudnnConvolutionFwdAlgo_t)8,
                                   ws, need, &zero, d.yd, y));
    EXPECT(CUDNN_STATUS_NOT_SUPPORTED,
           cudnnConvolutionBackwardFilter(h, &one, d.xd, x, d.yd, y, d.cd,
                                          CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD, ws,
                                          need + 64, &zero, d.fd, w));
    /* output overlapping an input; workspace overlapping a tensor */
    EXPECT(CUDNN_STATUS_BAD_PARAM,
           cudnnConvolutionForward(h, &one, d.xd, x, d.fd, w, d.cd,
                                   CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, ws, need, &zero,
                                   d.yd, x + 3));
    EXPECT(CUDNN_STATUS_BAD_PARAM,
           cudnnConvolutionForward(h, &one, d.xd, x, d.fd, w, d.cd,
                                   CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, x, need, &zero,
                                   d.yd, y));

    /* searches */
    EXPECT(CUDNN_STATUS_BAD_PARAM,
           cudnnFindConvolutionForwardAlgorithmEx(h, d.xd, x, d.fd, w, d.cd, d.yd, y, 0, &got, pf,
                                                  ws, need));
    EXPECT(CUDNN_STATUS_BAD_PARAM,
           cudnnFindConvolutionForwardAlgorithmEx(h, d.xd, x, d.fd, w, d.cd, d.yd, y, 8, NULL,
                                                  pf, ws, need));
    EXPECT(CUDNN_STATUS_BAD_PARAM,
           cudnnGetConvolutionForwardAlgorithm_v7(h, d.xd, d.fd, d.cd, d.yd, 8, &got, NULL));
    OK(cudnnFindConvolutionForwardAlgorithmEx(h, d.xd, x, d.fd, w, d.cd, d.yd, y, 8, &got, pf,
                                              NULL, 0));
    CHECK(got == 1 && pf[0].status == CUDNN_STATUS_ALLOC_FAILED,
          "search without workspace: status %d", (int)pf[0].status);

    /* handle and destroy */
    EXPECT(CUDNN_STATUS_BAD_PARAM, cudnnCreate(NULL));
    EXPECT(CUDNN_STATUS_BAD_PARAM, cudnnDestroy(NULL));
    EXPECT(CUDNN_STATUS_BAD_PARAM, cudnnSetStream(NULL, NULL));
    OK(cudnnDestroyTensorDescriptor(NULL));
    OK(cudnnDestroyFilterDescriptor(NULL));
    OK(cudnnDestroyConvolutionDescriptor(NULL));
    CHECK(cudnnGetVersion() == (size_t)CUDNN_VERSION && cudnnGetVersion() / 10000 == 9,
          "version %zu", cudnnGetVersion());
    CHECK(strcmp(cudnnGetErrorString(CUDNN_STATUS_BAD_PARAM), "CUDNN_STATUS_BAD_PARAM") == 0,
          "error string %s", cudnnGetErrorString(CUDNN_STATUS_BAD_PARAM));
    CHECK(strcmp(cudnnGetErrorString(CUDNN_STATUS_SUCCESS), "CUDNN_STATUS_SUCCESS") == 0,
          "error string");

    OK(cudnnDestroyTensorDescriptor(td));
    OK(cudnnDestroyFilterDescriptor(fd));
    OK(cudnnDestroyConvolutionDescriptor(cd));
    free(ws);
    free(x), free(w), free(y), free(dx);
    free_descs(&d);
}

/* Work recorded during a capture runs later, with the values of the call:
 * the descriptors destroyed and alpha changed in between. Searches refuse;
 * heuristics do not. */
static void test_capture(cudnnHandle_t h) {
    const tgeom t = {3, 2, 7, 6, 3, 4, 4, 1, 1, 2, 2, 1, 1};
    descs d;
    make_descs(&d, &t, 0, CUDNN_FMA_MATH);
    float *x = falloc(nx(&t)), *w = falloc(nw(&t)), *y = falloc(ny(&t));
    double *r = malloc(ny(&t) * sizeof *r);
    if (!r) abort();
    fill_real(x, nx(&t)), fill_real(w, nw(&t)), fill_nan(y, ny(&t));
    cudnnConvolutionFwdAlgoPerf_t pf[8];
    int got = 0;
    OK(cudnnGetConvolutionForwardAlgorithm_v7(h, d.xd, d.fd, d.cd, d.yd, 8, &got, pf));
    unsigned char *ws = malloc(pf[0].memory);
    if (!ws) abort();
    g_capturing = 1;
    OK(cudnnGetConvolutionForwardAlgorithm_v7(h, d.xd, d.fd, d.cd, d.yd, 8, &got, pf));
    EXPECT(CUDNN_STATUS_EXECUTION_FAILED_CUDART,
           cudnnFindConvolutionForwardAlgorithmEx(h, d.xd, x, d.fd, w, d.cd, d.yd, y, 8, &got, pf,
                                                  ws, pf[0].memory));
    float alpha = 2.0f, beta = 0.0f;
    OK(cudnnConvolutionForward(h, &alpha, d.xd, x, d.fd, w, d.cd,
                               CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, ws, pf[0].memory, &beta,
                               d.yd, y));
    g_capturing = 0;
    CHECK(g_nrec == 1 && all_nan(y, ny(&t)), "capture ran the work (%d recorded)", g_nrec);
    alpha = 3.0f, beta = 1.0f;
    free_descs(&d);
    replay();
    ref(REF_FWD, &t, 0, x, w, NULL, r);
    for (size_t i = 0; i < ny(&t); i++) r[i] *= 2.0;
    const double e = rel_err(y, r, ny(&t));
    CHECK(e < 1e-6, "replayed forward error %g", e);
    free(ws), free(r), free(x), free(w), free(y);
}

/* The math type: under CUDNN_TENSOR_OP_MATH (and DEFAULT, test_geometry's
 * flip runs) the inputs are rounded to TF32 before the products, under
 * CUDNN_FMA_MATH not: against the loops on rounded and on unrounded inputs. */
static void test_tf32(cudnnHandle_t h) {
    const tgeom t = {2, 3, 6, 7, 2, 3, 3, 1, 1, 1, 1, 1, 1};
    const size_t NX = nx(&t), NW = nw(&t), NY = ny(&t);
    const size_t NR = NX > NY ? (NX > NW ? NX : NW) : (NY > NW ? NY : NW);
    float *x = falloc(NX), *w = falloc(NW), *dy = falloc(NY), *out = falloc(NR);
    float *xr = falloc(NX), *wr = falloc(NW), *dyr = falloc(NY);
    double *r = malloc(NR * sizeof *r);
    unsigned char ws[1 << 16];
    if (!r) abort();
    fill_real(x, NX), fill_real(w, NW), fill_real(dy, NY);
    for (size_t i = 0; i < NX; i++) xr[i] = tf32(x[i]);
    for (size_t i = 0; i < NW; i++) wr[i] = tf32(w[i]);
    for (size_t i = 0; i < NY; i++) dyr[i] = tf32(dy[i]);
    static const char *names[3] = {"forward", "backward data", "backward filter"};
    const size_t cnt[3] = {NY, NX, NW};
    for (int m = 0; m < 2; m++) {
        descs d;
        make_descs(&d, &t, 0, m ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH);
        for (int dir = 0; dir < 3; dir++) {
            fill_nan(out, NR);
            if (dir == 0) OK(do_fwd(h, &d, 1.0f, 0.0f, x, w, out, ws, sizeof ws));
            else if (dir == 1) OK(do_bwd_data(h, &d, 1.0f, 0.0f, w, dy, out, ws, sizeof ws));
            else OK(do_bwd_filter(h, &d, 1.0f, 0.0f, x, dy, out, ws, sizeof ws));
            const int which = dir == 0 ? REF_FWD : dir == 1 ? REF_BWD_DATA : REF_BWD_FILTER;
            ref(which, &t, 0, xr, wr, dyr, r);
            const double e_round = rel_err(out, r, cnt[dir]);
            ref(which, &t, 0, x, w, dy, r);
            const double e_plain = rel_err(out, r, cnt[dir]);
            if (m)
                CHECK(e_round < 1e-6 && e_plain > 1e-5,
                      "TENSOR_OP %s: error %g against rounded inputs, %g against unrounded",
                      names[dir], e_round, e_plain);
            else
                CHECK(e_plain < 1e-6 && e_round > 1e-5,
                      "FMA %s: error %g against unrounded inputs, %g against rounded",
                      names[dir], e_plain, e_round);
        }
        free_descs(&d);
    }
    free(x), free(w), free(dy), free(out), free(xr), free(wr), free(dyr), free(r);
}

/* $VAE_MOCK_CUDNN_WS=1: each search lists first a deterministic algorithm
 * needing 1 MiB of workspace (found ALLOC_FAILED with less); run, it gives
 * the small algorithm's result, needs its MiB and clobbers all of it; a
 * search clobbers the whole workspace offered. */
static void test_big_ws(cudnnHandle_t h) {
    const tgeom t = {3, 2, 7, 5, 3, 3, 3, 1, 1, 1, 1, 1, 1};
    const size_t NX = nx(&t), NW = nw(&t), NY = ny(&t), MIB = (size_t)1 << 20;
    descs d;
    make_descs(&d, &t, 0, CUDNN_FMA_MATH);
    float *x = falloc(NX), *w = falloc(NW), *dy = falloc(NY);
    float *y = falloc(NY), *dx = falloc(NX), *dw = falloc(NW);
    const size_t NR = NX > NY ? (NX > NW ? NX : NW) : (NY > NW ? NY : NW);
    double *r = malloc(NR * sizeof *r);
    unsigned char *ws = malloc(MIB + 64);
    if (!r || !ws) abort();
    fill_real(x, NX), fill_real(w, NW), fill_real(dy, NY);
    setenv("VAE_MOCK_CUDNN_WS", "1", 1);

    cudnnConvolutionFwdAlgoPerf_t pf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    cudnnConvolutionBwdDataAlgoPerf_t pd[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
    cudnnConvolutionBwdFilterAlgoPerf_t pw[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
    int got = -1;
    OK(cudnnGetConvolutionForwardAlgorithm_v7(h, d.xd, d.fd, d.cd, d.yd,
                                              CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &got, pf));
    CHECK(got == 2 && pf[0].algo == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM &&
              pf[0].status == CUDNN_STATUS_SUCCESS && pf[0].memory == MIB &&
              pf[0].determinism == CUDNN_DETERMINISTIC && pf[0].time < pf[1].time &&
              pf[1].algo == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM && pf[1].memory < MIB,
          "big ws: fwd heuristic lists the big algorithm first (got %d)", got);
    OK(cudnnGetConvolutionForwardAlgorithm_v7(h, d.xd, d.fd, d.cd, d.yd, 1, &got, pf));
    CHECK(got == 1 && pf[0].algo == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM,
          "big ws: asked for one, the small algorithm");
    OK(cudnnGetConvolutionBackwardDataAlgorithm_v7(h, d.fd, d.yd, d.cd, d.xd,
                                                   CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &got,
                                                   pd));
    CHECK(got == 2 && pd[0].algo == CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT_TILING &&
              pd[0].memory == MIB && pd[1].algo == CUDNN_CONVOLUTION_BWD_DATA_ALGO_1,
          "big ws: bwd data heuristic");
    OK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, d.xd, d.yd, d.cd, d.fd,
                                                     CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT,
                                                     &got, pw));
    CHECK(got == 2 && pw[0].algo == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT_TILING &&
              pw[0].memory == MIB && pw[1].algo == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1,
          "big ws: bwd filter heuristic");

    /* searches: ALLOC_FAILED with a byte less, SUCCESS with the MiB; the
     * whole workspace offered clobbered either way */
    for (int full = 0; full < 2; full++) {
        const size_t offer = full ? MIB : MIB - 1;
        memset(ws, 0, MIB + 64);
        OK(cudnnFindConvolutionForwardAlgorithmEx(h, d.xd, x, d.fd, w, d.cd, d.yd, y,
                                                  CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &got, pf, ws,
                                                  offer));
        CHECK(got == 2 && pf[0].algo == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM &&
                  pf[0].status == (full ? CUDNN_STATUS_SUCCESS : CUDNN_STATUS_ALLOC_FAILED) &&
                  pf[1].status == CUDNN_STATUS_SUCCESS,
              "big ws: fwd search offered %zu bytes: status %d", offer, (int)pf[0].status);
        CHECK(ws[0] == 0xFF && ws[offer / 2 / 4096 * 4096] == 0xFF && ws[offer - 1] == 0xFF &&
                  ws[offer] == 0,
              "big ws: the search clobbers exactly the %zu bytes offered", offer);
    }

    /* run: too little workspace refused; with the MiB, the small one's result */
    ref(REF_FWD, &t, 0, x, w, dy, r);
    const float alpha = 1.0f, beta = 0.0f;
    CHECK(cudnnConvolutionForward(h, &alpha, d.xd, x, d.fd, w, d.cd,
                                  CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM, ws, MIB - 1,
                                  &beta, d.yd, y) == CUDNN_STATUS_BAD_PARAM,
          "big ws: run with a byte less of workspace is refused");
    memset(ws, 0, MIB + 64);
    OK(cudnnConvolutionForward(h, &alpha, d.xd, x, d.fd, w, d.cd,
                               CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM, ws, MIB, &beta,
                               d.yd, y));
    CHECK(rel_err(y, r, NY) < 1e-6, "big ws: forward error %g", rel_err(y, r, NY));
    CHECK(ws[0] == 0xFF && ws[MIB / 2] == 0xFF && ws[MIB - 1] == 0xFF && ws[MIB] == 0,
          "big ws: the run clobbers its MiB of workspace, no more");
    CHECK(cudnnConvolutionBackwardData(h, &alpha, d.fd, w, d.yd, dy, d.cd,
                                       CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT_TILING, ws, MIB - 1,
                                       &beta, d.xd, dx) == CUDNN_STATUS_BAD_PARAM,
          "big ws: bwd data with a byte less of workspace is refused");
    OK(cudnnConvolutionBackwardData(h, &alpha, d.fd, w, d.yd, dy, d.cd,
                                    CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT_TILING, ws, MIB, &beta,
                                    d.xd, dx));
    ref(REF_BWD_DATA, &t, 0, x, w, dy, r);
    CHECK(rel_err(dx, r, NX) < 1e-6, "big ws: backward data error");
    CHECK(cudnnConvolutionBackwardFilter(h, &alpha, d.xd, x, d.yd, dy, d.cd,
                                         CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT_TILING, ws,
                                         MIB - 1, &beta, d.fd, dw) == CUDNN_STATUS_BAD_PARAM,
          "big ws: bwd filter with a byte less of workspace is refused");
    OK(cudnnConvolutionBackwardFilter(h, &alpha, d.xd, x, d.yd, dy, d.cd,
                                      CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT_TILING, ws, MIB,
                                      &beta, d.fd, dw));
    ref(REF_BWD_FILTER, &t, 0, x, w, dy, r);
    CHECK(rel_err(dw, r, NW) < 1e-6, "big ws: backward filter error");

    unsetenv("VAE_MOCK_CUDNN_WS");
    OK(cudnnGetConvolutionForwardAlgorithm_v7(h, d.xd, d.fd, d.cd, d.yd,
                                              CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &got, pf));
    CHECK(got == 1, "big ws: unset, one algorithm again");
    free(x), free(w), free(dy), free(y), free(dx), free(dw), free(r), free(ws);
    free_descs(&d);
}

int main(void) {
    static const tgeom geoms[] = {
        /* n  c  h   w   k  r  s  ph pw u  v  dh dw */
        {1, 1, 5, 5, 1, 3, 3, 0, 0, 1, 1, 1, 1},
        {3, 2, 7, 5, 3, 3, 3, 1, 1, 1, 1, 1, 1},
        {3, 3, 8, 6, 2, 4, 4, 1, 1, 2, 2, 1, 1},   /* the VAE's k4 s2 p1 */
        {1, 2, 7, 7, 3, 4, 4, 1, 1, 2, 2, 1, 1},   /* odd input: a convT with output padding */
        {1, 2, 9, 7, 2, 5, 5, 2, 2, 2, 2, 1, 1},
        {3, 1, 6, 9, 4, 1, 1, 0, 0, 2, 2, 1, 1},
        {1, 2, 7, 8, 3, 2, 2, 2, 2, 1, 1, 1, 1},
        {3, 2, 5, 5, 2, 5, 5, 0, 0, 1, 1, 1, 1},   /* filter = image: 1x1 output */
        {1, 3, 4, 6, 2, 1, 1, 2, 2, 1, 1, 1, 1},   /* pad > filter */
        {3, 2, 5, 7, 2, 3, 5, 1, 2, 2, 1, 1, 1},   /* rectangular everything */
        {1, 3, 9, 10, 2, 3, 3, 2, 2, 2, 2, 2, 2},  /* dilation */
        {3, 4, 16, 12, 5, 4, 4, 1, 1, 2, 2, 1, 1},
        {1, 5, 11, 13, 3, 5, 5, 2, 2, 1, 1, 1, 1},
        {3, 3, 10, 9, 4, 3, 3, 0, 1, 2, 1, 1, 1},
    };
    cudnnHandle_t h;
    OK(cudnnCreate(&h));
    OK(cudnnSetStream(h, NULL));
    for (size_t i = 0; i < sizeof geoms / sizeof geoms[0]; i++)
        for (int flip = 0; flip < 2; flip++) test_geometry(h, &geoms[i], flip);
    test_validation(h);
    test_capture(h);
    test_big_ws(h);
    test_tf32(h);
    OK(cudnnDestroy(h));
    printf("test_mock_cudnn: %d checks, %d failed\n", g_checks, g_fail);
    return g_fail ? 1 : 0;
}

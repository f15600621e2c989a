/* backend_cpu.c — the CPU reference backend: every entry of vae_backend on
 * host memory, dense and convolution layers on CBLAS GEMM (OpenBLAS).
 *
 * Dimension letters as in vae_core.h: B batch, C channels, H/W height/width,
 * L latent size, I/O dense in/out features, K = C*k*k rows of an im2col
 * matrix, N = nb*Ho*Wo its columns for a chunk of nb images.
 *
 * Conventions (vae_backend.h): forward outputs and parameter gradients are
 * written with `=`; a NULL input gradient means "skip"; all matrices are
 * row-major. Per-element math (likelihoods, KL, reparameterisation, Adam,
 * Philox normals, pixel conversion) comes from vae_math.h only, so the CUDA
 * kernels run the same lines. Per-sample sums and bias gradients accumulate
 * in double in a fixed order; batch chunking depends only on the layer shape,
 * so results are reproducible run to run.
 *
 * File layout, by op family:
 *   1. context, workspace, memory
 *   2. dense
 *   3. im2col / col2im and layout helpers
 *   4. conv2d
 *   5. transposed conv2d
 *   6. activations
 *   7. fused VAE ops (reparam, KL, log q - log p, reconstruction loss)
 *   8. reductions, optimizer, data conversion
 *   9. construction
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vae_backend.h"
#include "vae_math.h"
#include "vae_pool.h"

/* OpenBLAS's cblas.h pulls in <complex.h>, whose macro `I` would rewrite the
 * dense layers' `I` (input features) parameter: include it after our headers
 * and drop the macro (nothing here uses complex numbers). */
#include <cblas.h>
#undef I

/* OpenBLAS extension; some cblas.h variants do not declare it. */
void openblas_set_num_threads(int num_threads);

#ifdef VAE_REAL_DOUBLE
#define GEMM cblas_dgemm
#else
#define GEMM cblas_sgemm
#endif

#define NT CblasNoTrans
#define TR CblasTrans

/* The convolution workspace (im2col matrix + one [C, N] staging matrix) is
 * bounded by this many bytes: the batch is processed in chunks of as many
 * images as fit. 32 MiB holds a whole batch of 128 for every MNIST layer
 * (at most (288 + 64) * 49 floats = 69 KiB per image). Overridable at compile
 * time to exercise chunking. */
#ifndef CPU_WS_BYTES
#define CPU_WS_BYTES ((size_t)32 << 20)
#endif

/* ================================================== 1. context and memory */

typedef struct {
    real *ws;       /* [ws_cap] conv workspace, grown on demand, never shrunk */
    size_t ws_cap;  /* elements */
    vae_pool *pool; /* the threads of the GEMM slices and the passes below
                       (NULL: the caller alone) */
} cpu_ctx;

/* Passes split across the pool (vae_pool.h): loops whose iterations write
 * disjoint data (im2col, col2im and the layout changes per image; activations,
 * Adam, conversions per element), so the bits are those of one thread. The
 * reductions (bias gradients, sums) stay on the caller in their fixed order.
 * A part holds at least CPU_GRAIN elements (64 KiB of floats, tens of
 * microseconds of work, several times a worker's wake-up). */
#define CPU_GRAIN ((size_t)16384)

static vae_pool *cpu_pool(vae_backend *be) { return ((cpu_ctx *)be->ctx)->pool; }

/* images per part for a pass over images of `per_image` elements each */
static size_t grain_images(size_t per_image) {
    return per_image >= CPU_GRAIN ? 1 : CPU_GRAIN / (per_image ? per_image : 1);
}

/* GEMMs: OpenBLAS runs on one thread (vae_backend_cpu_create) and a product
 * is cut into slices that the pool runs, by rows of C (and of op(A)) or by
 * its columns (and op(B)'s), whichever dimension is larger: OpenBLAS's own
 * threads spin (sched_yield) for a while after each product and so held the
 * cores the pool's passes between products need. The slices depend on the
 * product's shape alone (one per 2^20 multiply-adds, at most CPU_GEMM_SLICES,
 * slice i = rows or columns [dim i / s, dim (i+1) / s)), not on the thread
 * count, and each is one OpenBLAS call: so a run gives the same bits with
 * any --threads (test_pool checks 1 and 3; with OpenBLAS's own threads it
 * did not). Row-major: C[M, N] = alpha op(A)[M, K] op(B)[K, N] + beta C. */
#define CPU_GEMM_SLICES 8
typedef struct {
    CBLAS_TRANSPOSE ta, tb;
    int M, N, K, lda, ldb, ldc, by_cols, slices;
    real alpha, beta;
    const real *A, *B;
    real *C;
} gemm_job;

static void gemm_slice(const gemm_job *j, size_t lo, size_t hi) {
    const int n = (int)(hi - lo);
    if (j->by_cols) {
        const real *B = j->tb == CblasNoTrans ? j->B + lo : j->B + lo * (size_t)j->ldb;
        GEMM(CblasRowMajor, j->ta, j->tb, j->M, n, j->K, j->alpha, j->A, j->lda, B, j->ldb, j->beta,
             j->C + lo, j->ldc);
    } else {
        const real *A = j->ta == CblasNoTrans ? j->A + lo * (size_t)j->lda : j->A + lo;
        GEMM(CblasRowMajor, j->ta, j->tb, n, j->N, j->K, j->alpha, A, j->lda, j->B, j->ldb, j->beta,
             j->C + lo * (size_t)j->ldc, j->ldc);
    }
}

/* slices [s_lo, s_hi) of the product */
static void gemm_part(void *arg, size_t s_lo, size_t s_hi) {
    const gemm_job *j = (const gemm_job *)arg;
    const size_t dim = (size_t)(j->by_cols ? j->N : j->M), s = (size_t)j->slices;
    for (size_t i = s_lo; i < s_hi; i++) gemm_slice(j, dim * i / s, dim * (i + 1) / s);
}

static void gemm(vae_backend *be, CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int M, int N, int K,
                 real alpha, const real *A, int lda, const real *B, int ldb, real beta, real *C,
                 int ldc) {
    gemm_job j = {ta, tb, M, N, K, lda, ldb, ldc, N > M, 1, alpha, beta, A, B, C};
    const int dim = j.by_cols ? N : M;
    const double work = (double)M * N * K / (double)(1 << 20);
    j.slices = work >= CPU_GEMM_SLICES ? CPU_GEMM_SLICES : work >= 1 ? (int)work : 1;
    if (j.slices > dim) j.slices = dim > 0 ? dim : 1;
    vae_pool_for(cpu_pool(be), (size_t)j.slices, 1, gemm_part, &j);
}

/* Workspace for a chunked conv op needing `per_image` elements per image:
 * returns the buffer and the chunk size nb (1 <= nb <= B). Allocates only
 * when a larger chunk than ever before is needed (first call of each layer
 * shape), so the training loop runs allocation-free. Under memory pressure it
 * halves the chunk rather than fail; a single image that does not fit is an
 * unrecoverable error for a void op. */
static real *cpu_ws_chunk(vae_backend *be, size_t per_image, int B, int *nb_out) {
    cpu_ctx *c = (cpu_ctx *)be->ctx;
    size_t nb = CPU_WS_BYTES / sizeof(real) / per_image;
    if (nb < 1) nb = 1;
    if (nb > (size_t)B) nb = (size_t)B;
    while (nb * per_image > c->ws_cap) {
        real *p = (real *)vae_malloc_aligned(nb * per_image * sizeof(real));
        if (p) {
            vae_free_aligned(c->ws);
            c->ws = p;
            c->ws_cap = nb * per_image;
            break;
        }
        if (nb == 1) vae_panic(__FILE__, __LINE__, "cpu conv workspace: %s", vae_error_get());
        nb /= 2;
    }
    *nb_out = (int)nb;
    return c->ws;
}

static void *cpu_alloc(vae_backend *be, size_t bytes) {
    (void)be;
    return vae_malloc_aligned(bytes); /* sets VAE_ENOMEM on failure */
}
static void cpu_release(vae_backend *be, void *p) { (void)be; vae_free_aligned(p); }
static void cpu_upload(vae_backend *be, void *dst, const void *src, size_t bytes) {
    (void)be;
    if (bytes) memcpy(dst, src, bytes);
}
static void cpu_download(vae_backend *be, void *dst, const void *src, size_t bytes) {
    (void)be;
    if (bytes) memcpy(dst, src, bytes);
}
static void cpu_zero(vae_backend *be, void *dst, size_t bytes) {
    (void)be;
    if (bytes) memset(dst, 0, bytes);
}
static void cpu_sync(vae_backend *be) { (void)be; }
static void cpu_destroy(vae_backend *be) {
    if (!be) return;
    cpu_ctx *c = (cpu_ctx *)be->ctx;
    if (c) {
        vae_free_aligned(c->ws);
        vae_pool_destroy(c->pool);
    }
    free(c);
    free(be);
}

/* ============================================================ 2. dense */

/* out[B,O] = in[B,I] w[O,I]^T + b[O]: the bias is broadcast into out first
 * and the GEMM accumulates onto it (beta = 1), one pass over out. */
static void cpu_dense_forward(vae_backend *be, real *out, const real *in, const real *w,
                              const real *b, int B, int I, int O) {
    if (B <= 0 || O <= 0) return;
    if (b)
        for (int r = 0; r < B; r++) memcpy(out + (size_t)r * O, b, (size_t)O * sizeof(real));
    if (I <= 0) {
        if (!b) memset(out, 0, (size_t)B * O * sizeof(real));
        return;
    }
    gemm(be, NT, TR, B, O, I, 1, in, I, w, I, b ? 1 : 0, out, O);
}

/* db[C] = sum_b x[b, C] in double, column tiles so that the accumulators stay
 * on the stack and rows are read contiguously. */
static void col_sums(real *db, const real *x, int B, int C) {
    enum { T = 256 };
    double acc[T];
    for (int c0 = 0; c0 < C; c0 += T) {
        int n = C - c0 < T ? C - c0 : T;
        for (int j = 0; j < n; j++) acc[j] = 0;
        for (int r = 0; r < B; r++) {
            const real *row = x + (size_t)r * C + c0;
            for (int j = 0; j < n; j++) acc[j] += row[j];
        }
        for (int j = 0; j < n; j++) db[c0 + j] = (real)acc[j];
    }
}

/* din[B,I] = dout[B,O] w[O,I];  dw[O,I] = dout^T in;  db[O] = sum_b dout[b,:] */
static void cpu_dense_backward(vae_backend *be, real *din, real *dw, real *db, const real *dout,
                               const real *in, const real *w, int B, int I, int O) {
    if (din && B > 0 && I > 0) {
        if (O > 0) gemm(be, NT, NT, B, I, O, 1, dout, O, w, I, 0, din, I);
        else memset(din, 0, (size_t)B * I * sizeof(real));
    }
    if (dw && O > 0 && I > 0) {
        if (B > 0) gemm(be, TR, NT, O, I, B, 1, dout, O, in, I, 0, dw, I);
        else memset(dw, 0, (size_t)O * I * sizeof(real));
    }
    if (db && O > 0) col_sums(db, dout, B, O);
}

/* Dense + ReLU (vae_backend.h): compositions of the unfused ops, so the
 * results are bit for bit those of dense_forward + act_forward, and of
 * dense_backward + act_backward + the lower layer's bias sum (col_sums, as
 * that layer's dense_backward would compute it). The CPU keeps no mask: the
 * ReLU derivative comes from `in` (the ReLU's output), as act_backward's
 * does; mask is ignored (relu_mask_bytes is not offered). */
static void cpu_act_forward(vae_backend *be, real *out, const real *in, size_t n, vae_act act,
                            real slope);
static void cpu_act_backward(vae_backend *be, real *din, const real *dout, const real *out,
                             size_t n, vae_act act, real slope);

static void cpu_dense_relu_forward(vae_backend *be, real *out, void *mask, const real *in,
                                   const real *w, const real *b, int B, int I, int O) {
    (void)mask;
    cpu_dense_forward(be, out, in, w, b, B, I, O);
    if (B > 0 && O > 0) cpu_act_forward(be, out, out, (size_t)B * O, VAE_ACT_RELU, 0);
}

static void cpu_dense_backward_relu(vae_backend *be, real *din, real *dbin, real *dw, real *db,
                                    const real *dout, const real *in, const void *mask,
                                    const real *w, int B, int I, int O) {
    (void)mask;
    VAE_ASSERT(din);
    cpu_dense_backward(be, din, dw, db, dout, in, w, B, I, O);
    if (B > 0 && I > 0) cpu_act_backward(be, din, din, in, (size_t)B * I, VAE_ACT_RELU, 0);
    if (dbin && I > 0) col_sums(dbin, din, B, I);
}

/* ============================================= 3. im2col / col2im, layouts */

/* One convolution seen from its *input image*: image [nb, C, H, W], kernel
 * k x k, stride s, zero padding p, output grid Ho x Wo. A transposed conv uses
 * the same struct with its output as the "image" and its input as the grid. */
typedef struct {
    int C, H, W, k, s, p, Ho, Wo;
} cpu_patch;

/* ceil(a / s) for s > 0, clamped below at 0 */
static inline int div_ceil0(int a, int s) { return a <= 0 ? 0 : (a + s - 1) / s; }

/* Output positions o in [lo, hi) whose input coordinate i = o*s - p + kk lies
 * in [0, n_in); outside that range the tap reads zero padding. Precomputing
 * it keeps the inner loops free of bounds tests. */
static inline void tap_range(int n_in, int n_out, int s, int p, int kk, int *lo, int *hi) {
    int l = div_ceil0(p - kk, s);
    int h = div_ceil0(n_in + p - kk, s);
    if (h > n_out) h = n_out;
    if (l > h) l = h;
    *lo = l;
    *hi = h;
}

/* col[K = C*k*k, N = nb*Ho*Wo], row (c, kh, kw), column (b, oh, ow):
 *   col[(c k + kh) k + kw, (b Ho + oh) Wo + ow] = img[b, c, oh s - p + kh, ow s - p + kw]
 * (zero outside the image). Loops run image plane by image plane so the
 * plane stays in L1 while its k*k rows are written; the innermost loop walks
 * the output width, contiguous in col (and in img for stride 1: memcpy). */
/* The per-image passes' arguments (im2col, col2im, the layout changes): nb
 * images in all, a part being images [b_lo, b_hi). */
typedef struct {
    real *dst;
    const real *src, *bias;
    int nb, C;
    size_t HW;
    const cpu_patch *g;
} image_job;

static void im2col_part(void *arg, size_t b_lo, size_t b_hi) {
    const image_job *j = (const image_job *)arg;
    const cpu_patch *g = j->g;
    real *col = j->dst;
    const real *img = j->src;
    const int s = g->s, p = g->p, k = g->k, W = g->W, Ho = g->Ho, Wo = g->Wo;
    const size_t HW = (size_t)g->H * W, HWo = (size_t)Ho * Wo, N = (size_t)j->nb * HWo;
    for (int b = (int)b_lo; b < (int)b_hi; b++) {
        for (int c = 0; c < g->C; c++) {
            const real *plane = img + ((size_t)b * g->C + c) * HW;
            for (int kh = 0; kh < k; kh++) {
                int oh0, oh1;
                tap_range(g->H, Ho, s, p, kh, &oh0, &oh1);
                for (int kw = 0; kw < k; kw++) {
                    int ow0, ow1;
                    tap_range(W, Wo, s, p, kw, &ow0, &ow1);
                    real *dst = col + ((size_t)(c * k + kh) * k + kw) * N + (size_t)b * HWo;
                    memset(dst, 0, (size_t)oh0 * Wo * sizeof(real));
                    for (int oh = oh0; oh < oh1; oh++) {
                        real *d = dst + (size_t)oh * Wo;
                        const real *srow = plane + (size_t)(oh * s - p + kh) * W;
                        const int off = kw - p; /* iw = ow*s + off */
                        for (int ow = 0; ow < ow0; ow++) d[ow] = 0;
                        if (s == 1) {
                            if (ow1 > ow0)
                                memcpy(d + ow0, srow + ow0 + off, (size_t)(ow1 - ow0) * sizeof(real));
                        } else {
                            for (int ow = ow0; ow < ow1; ow++) d[ow] = srow[ow * s + off];
                        }
                        for (int ow = ow1; ow < Wo; ow++) d[ow] = 0;
                    }
                    memset(dst + (size_t)oh1 * Wo, 0, (size_t)(Ho - oh1) * Wo * sizeof(real));
                }
            }
        }
    }
}

/* im2col_part or col2im_part over nb images on the pool */
static void patch_pass(vae_backend *be, vae_pool_fn part, real *dst, const real *src, int nb,
                       const cpu_patch *g) {
    image_job j = {dst, src, NULL, nb, 0, 0, g};
    vae_pool_for(cpu_pool(be), (size_t)nb, grain_images((size_t)g->C * g->k * g->k * g->Ho * g->Wo),
                 part, &j);
}

static void im2col(vae_backend *be, real *col, const real *img, int nb, const cpu_patch *g) {
    patch_pass(be, im2col_part, col, img, nb, g);
}

/* The adjoint of im2col: img[b, c, oh s - p + kh, ow s - p + kw] += col[...]
 * for every in-image tap. Accumulates: the caller initialises img. */
static void col2im_part(void *arg, size_t b_lo, size_t b_hi) {
    const image_job *j = (const image_job *)arg;
    const cpu_patch *g = j->g;
    real *img = j->dst;
    const real *col = j->src;
    const int s = g->s, p = g->p, k = g->k, W = g->W, Ho = g->Ho, Wo = g->Wo;
    const size_t HW = (size_t)g->H * W, HWo = (size_t)Ho * Wo, N = (size_t)j->nb * HWo;
    for (int b = (int)b_lo; b < (int)b_hi; b++) {
        for (int c = 0; c < g->C; c++) {
            real *plane = img + ((size_t)b * g->C + c) * HW;
            for (int kh = 0; kh < k; kh++) {
                int oh0, oh1;
                tap_range(g->H, Ho, s, p, kh, &oh0, &oh1);
                for (int kw = 0; kw < k; kw++) {
                    int ow0, ow1;
                    tap_range(W, Wo, s, p, kw, &ow0, &ow1);
                    const real *src = col + ((size_t)(c * k + kh) * k + kw) * N + (size_t)b * HWo;
                    const int off = kw - p;
                    for (int oh = oh0; oh < oh1; oh++) {
                        const real *d = src + (size_t)oh * Wo;
                        real *irow = plane + (size_t)(oh * s - p + kh) * W;
                        if (s == 1) {
                            for (int ow = ow0; ow < ow1; ow++) irow[ow + off] += d[ow];
                        } else {
                            for (int ow = ow0; ow < ow1; ow++) irow[ow * s + off] += d[ow];
                        }
                    }
                }
            }
        }
    }
}

static void col2im(vae_backend *be, real *img, const real *col, int nb, const cpu_patch *g) {
    patch_pass(be, col2im_part, img, col, nb, g);
}

/* dst[c, b*HW + j] = src[b, c, j]: NCHW chunk -> channel-major [C, nb*HW] */
static void nchw_to_cn_part(void *arg, size_t b_lo, size_t b_hi) {
    const image_job *j = (const image_job *)arg;
    const int C = j->C;
    const size_t HW = j->HW, N = (size_t)j->nb * HW;
    for (int b = (int)b_lo; b < (int)b_hi; b++)
        for (int c = 0; c < C; c++)
            memcpy(j->dst + (size_t)c * N + (size_t)b * HW, j->src + ((size_t)b * C + c) * HW,
                   HW * sizeof(real));
}

/* nchw_to_cn_part or cn_to_nchw_part over nb images of C x HW on the pool */
static void layout_pass(vae_backend *be, vae_pool_fn part, real *dst, const real *src,
                        const real *bias, int nb, int C, size_t HW) {
    image_job j = {dst, src, bias, nb, C, HW, NULL};
    vae_pool_for(cpu_pool(be), (size_t)nb, grain_images((size_t)C * HW), part, &j);
}

static void nchw_to_cn(vae_backend *be, real *dst, const real *src, int nb, int C, size_t HW) {
    layout_pass(be, nchw_to_cn_part, dst, src, NULL, nb, C, HW);
}

/* dst[b, c, j] = src[c, b*HW + j] + bias[c] (bias may be NULL) */
static void cn_to_nchw_part(void *arg, size_t b_lo, size_t b_hi) {
    const image_job *j = (const image_job *)arg;
    const int C = j->C;
    const size_t HW = j->HW, N = (size_t)j->nb * HW;
    for (int b = (int)b_lo; b < (int)b_hi; b++)
        for (int c = 0; c < C; c++) {
            real *d = j->dst + ((size_t)b * C + c) * HW;
            const real *sp = j->src + (size_t)c * N + (size_t)b * HW;
            if (j->bias) {
                const real bc = j->bias[c];
                for (size_t i = 0; i < HW; i++) d[i] = sp[i] + bc;
            } else {
                memcpy(d, sp, HW * sizeof(real));
            }
        }
}

static void cn_to_nchw(vae_backend *be, real *dst, const real *src, const real *bias, int nb,
                       int C, size_t HW) {
    layout_pass(be, cn_to_nchw_part, dst, src, bias, nb, C, HW);
}

/* db[c] = sum_{b, j} x[b, c, j] in double (bias gradient of an NCHW output) */
static void chan_sums(real *db, const real *x, int B, int C, size_t HW) {
    for (int c = 0; c < C; c++) {
        double acc = 0;
        for (int b = 0; b < B; b++) {
            const real *r = x + ((size_t)b * C + c) * HW;
            for (size_t j = 0; j < HW; j++) acc += r[j];
        }
        db[c] = (real)acc;
    }
}

/* =========================================================== 4. conv2d */

/* Conv2d as GEMM, per chunk of nb images (N = nb*Ho*Wo, K = cin*k*k):
 *   forward   col[K,N] = im2col(in);  tmp[cout,N] = w[cout,K] col;  out = tmp + b
 *   backward  tmp[cout,N] = dout (as [cout, N]);
 *             dw[cout,K]  = sum over chunks of tmp col^T   (col recomputed)
 *             col[K,N]    = w^T tmp;  din = col2im(col)
 *             db[cout]    = sum_{b,h,w} dout
 * Workspace per image: (K + cout) * Ho*Wo elements. */

static void conv_geom_check(const vae_conv_geom *g) {
    VAE_ASSERT(g->k >= 1 && g->stride >= 1 && g->pad >= 0 && g->cin >= 1 && g->cout >= 1);
    VAE_ASSERT(g->hout >= 1 && g->hout == (g->hin + 2 * g->pad - g->k) / g->stride + 1);
    VAE_ASSERT(g->wout >= 1 && g->wout == (g->win + 2 * g->pad - g->k) / g->stride + 1);
}

static cpu_patch conv_patch(const vae_conv_geom *g) {
    cpu_patch pg = {g->cin, g->hin, g->win, g->k, g->stride, g->pad, g->hout, g->wout};
    return pg;
}

static void cpu_conv2d_forward(vae_backend *be, real *out, const real *in, const real *w,
                               const real *b, const vae_conv_geom *g, int B) {
    if (B <= 0) return;
    conv_geom_check(g);
    const cpu_patch pg = conv_patch(g);
    const int K = g->cin * g->k * g->k, Co = g->cout;
    const size_t HWi = (size_t)g->hin * g->win, HWo = (size_t)g->hout * g->wout;
    int nb;
    real *ws = cpu_ws_chunk(be, (size_t)(K + Co) * HWo, B, &nb);
    for (int b0 = 0; b0 < B; b0 += nb) {
        const int n = B - b0 < nb ? B - b0 : nb;
        const int N = (int)((size_t)n * HWo);
        real *col = ws, *tmp = ws + (size_t)K * N;
        im2col(be, col, in + (size_t)b0 * g->cin * HWi, n, &pg);
        gemm(be, NT, NT, Co, N, K, 1, w, K, col, N, 0, tmp, N);
        cn_to_nchw(be, out + (size_t)b0 * Co * HWo, tmp, b, n, Co, HWo);
    }
}

static void cpu_conv2d_backward(vae_backend *be, real *din, real *dw, real *db, const real *dout,
                                const real *in, const real *w, const vae_conv_geom *g, int B) {
    conv_geom_check(g);
    const cpu_patch pg = conv_patch(g);
    const int K = g->cin * g->k * g->k, Co = g->cout;
    const size_t HWi = (size_t)g->hin * g->win, HWo = (size_t)g->hout * g->wout;
    if (B <= 0) {
        if (dw) memset(dw, 0, (size_t)Co * K * sizeof(real));
        if (db) memset(db, 0, (size_t)Co * sizeof(real));
        return;
    }
    if (db) chan_sums(db, dout, B, Co, HWo);
    if (!dw && !din) return;
    int nb;
    real *ws = cpu_ws_chunk(be, (size_t)(K + Co) * HWo, B, &nb);
    for (int b0 = 0; b0 < B; b0 += nb) {
        const int n = B - b0 < nb ? B - b0 : nb;
        const int N = (int)((size_t)n * HWo);
        real *col = ws, *tmp = ws + (size_t)K * N;
        nchw_to_cn(be, tmp, dout + (size_t)b0 * Co * HWo, n, Co, HWo);
        if (dw) {
            im2col(be, col, in + (size_t)b0 * g->cin * HWi, n, &pg);
            gemm(be, NT, TR, Co, K, N, 1, tmp, N, col, N, b0 == 0 ? 0 : 1, dw, K);
        }
        if (din) {
            real *dchunk = din + (size_t)b0 * g->cin * HWi;
            gemm(be, TR, NT, K, N, Co, 1, w, K, tmp, N, 0, col, N);
            memset(dchunk, 0, (size_t)n * g->cin * HWi * sizeof(real));
            col2im(be, dchunk, col, n, &pg);
        }
    }
}

/* ================================================= 5. transposed conv2d */

/* ConvTranspose2d is the adjoint of the conv2d that maps its output
 * [cout, hout, wout] to its input [cin, hin, win] with the same k, stride,
 * pad, and the weight [cin, cout, k, k] read as that conv's [cin, cout*k*k]
 * matrix (K' = cout*k*k). output_padding only adds rows/columns at the
 * bottom/right that the conv ignores (hout + 2p - k)/s + 1 = hin for op < s.
 * Per chunk (N = nb*hin*win):
 *   forward   x[cin,N] = in;  col[K',N] = w^T x;  out = col2im(col) + b
 *   backward  col[K',N] = im2col(dout);
 *             dw[cin,K'] = sum over chunks of x col^T;  din = w col
 *             db[cout]   = sum_{b,h,w} dout
 * Workspace per image: (K' + cin) * hin*win elements. */

static void convt_geom_check(const vae_convt_geom *g) {
    VAE_ASSERT(g->k >= 1 && g->stride >= 1 && g->pad >= 0 && g->cin >= 1 && g->cout >= 1);
    VAE_ASSERT(g->out_pad >= 0 && g->out_pad < g->stride);
    VAE_ASSERT(g->hin >= 1 && g->win >= 1);
    VAE_ASSERT(g->hout >= 1 && g->hout == (g->hin - 1) * g->stride - 2 * g->pad + g->k + g->out_pad);
    VAE_ASSERT(g->wout >= 1 && g->wout == (g->win - 1) * g->stride - 2 * g->pad + g->k + g->out_pad);
}

static cpu_patch convt_patch(const vae_convt_geom *g) {
    cpu_patch pg = {g->cout, g->hout, g->wout, g->k, g->stride, g->pad, g->hin, g->win};
    return pg;
}

static void cpu_convt2d_forward(vae_backend *be, real *out, const real *in, const real *w,
                                const real *b, const vae_convt_geom *g, int B) {
    if (B <= 0) return;
    convt_geom_check(g);
    const cpu_patch pg = convt_patch(g);
    const int K = g->cout * g->k * g->k, Ci = g->cin;
    const size_t HWi = (size_t)g->hin * g->win, HWo = (size_t)g->hout * g->wout;
    int nb;
    real *ws = cpu_ws_chunk(be, (size_t)(K + Ci) * HWi, B, &nb);
    for (int b0 = 0; b0 < B; b0 += nb) {
        const int n = B - b0 < nb ? B - b0 : nb;
        const int N = (int)((size_t)n * HWi);
        real *col = ws, *x = ws + (size_t)K * N;
        real *o = out + (size_t)b0 * g->cout * HWo;
        nchw_to_cn(be, x, in + (size_t)b0 * Ci * HWi, n, Ci, HWi);
        gemm(be, TR, NT, K, N, Ci, 1, w, K, x, N, 0, col, N);
        for (int i = 0; i < n; i++)
            for (int c = 0; c < g->cout; c++) {
                real *pl = o + ((size_t)i * g->cout + c) * HWo;
                const real bc = b ? b[c] : (real)0;
                for (size_t j = 0; j < HWo; j++) pl[j] = bc;
            }
        col2im(be, o, col, n, &pg);
    }
}

static void cpu_convt2d_backward(vae_backend *be, real *din, real *dw, real *db, const real *dout,
                                 const real *in, const real *w, const vae_convt_geom *g, int B) {
    convt_geom_check(g);
    const cpu_patch pg = convt_patch(g);
    const int K = g->cout * g->k * g->k, Ci = g->cin;
    const size_t HWi = (size_t)g->hin * g->win, HWo = (size_t)g->hout * g->wout;
    if (B <= 0) {
        if (dw) memset(dw, 0, (size_t)Ci * K * sizeof(real));
        if (db) memset(db, 0, (size_t)g->cout * sizeof(real));
        return;
    }
    if (db) chan_sums(db, dout, B, g->cout, HWo);
    if (!dw && !din) return;
    int nb;
    real *ws = cpu_ws_chunk(be, (size_t)(K + Ci) * HWi, B, &nb);
    for (int b0 = 0; b0 < B; b0 += nb) {
        const int n = B - b0 < nb ? B - b0 : nb;
        const int N = (int)((size_t)n * HWi);
        real *col = ws, *t = ws + (size_t)K * N;
        im2col(be, col, dout + (size_t)b0 * g->cout * HWo, n, &pg);
        if (dw) {
            nchw_to_cn(be, t, in + (size_t)b0 * Ci * HWi, n, Ci, HWi);
            gemm(be, NT, TR, Ci, K, N, 1, t, N, col, N, b0 == 0 ? 0 : 1, dw, K);
        }
        if (din) {
            gemm(be, NT, NT, Ci, N, K, 1, w, K, col, N, 0, t, N);
            cn_to_nchw(be, din + (size_t)b0 * Ci * HWi, t, NULL, n, Ci, HWi);
        }
    }
}

/* ======================================================= 6. activations */

/* relu(x) = max(x, 0);  leaky(x) = x > 0 ? x : slope x.
 * Backward from the forward output y: for relu and for leaky with slope > 0,
 * y > 0 iff x > 0, so act'(x) = (y > 0 ? 1 : slope) (slope 0 for relu), the
 * subgradient at 0 being the left one as in PyTorch. */
typedef struct {
    real *dst;
    const real *a, *b; /* forward: a = in; backward: a = dout, b = out */
    vae_act act;
    real slope;
} act_job;

static void act_forward_part(void *arg, size_t lo, size_t hi) {
    const act_job *j = (const act_job *)arg;
    real *out = j->dst + lo;
    const real *in = j->a + lo;
    const size_t n = hi - lo;
    const real slope = j->slope;
    if (j->act == VAE_ACT_RELU) {
        for (size_t i = 0; i < n; i++) out[i] = in[i] > 0 ? in[i] : (real)0;
    } else {
        for (size_t i = 0; i < n; i++) {
            const real x = in[i];
            out[i] = x > 0 ? x : slope * x;
        }
    }
}

static void act_backward_part(void *arg, size_t lo, size_t hi) {
    const act_job *j = (const act_job *)arg;
    real *din = j->dst + lo;
    const real *dout = j->a + lo, *out = j->b + lo;
    const size_t n = hi - lo;
    const real slope = j->slope;
    if (j->act == VAE_ACT_RELU) {
        for (size_t i = 0; i < n; i++) din[i] = out[i] > 0 ? dout[i] : (real)0;
    } else {
        for (size_t i = 0; i < n; i++) din[i] = out[i] > 0 ? dout[i] : slope * dout[i];
    }
}

static void cpu_act_forward(vae_backend *be, real *out, const real *in, size_t n, vae_act act,
                            real slope) {
    VAE_ASSERT(act == VAE_ACT_RELU || act == VAE_ACT_LEAKY_RELU);
    act_job j = {out, in, NULL, act, slope};
    vae_pool_for(cpu_pool(be), n, CPU_GRAIN, act_forward_part, &j);
}

static void cpu_act_backward(vae_backend *be, real *din, const real *dout, const real *out,
                             size_t n, vae_act act, real slope) {
    VAE_ASSERT(act == VAE_ACT_RELU || act == VAE_ACT_LEAKY_RELU);
    act_job j = {din, dout, out, act, slope};
    vae_pool_for(cpu_pool(be), n, CPU_GRAIN, act_backward_part, &j);
}

/* Conv / convT + activation, and an activation's backward with the bias
 * gradient of the conv / convT below (vae_backend.h): on the CPU the two ops
 * in sequence, so the results are bit for bit those of the unfused ops
 * (chan_sums as that layer's own backward would compute db). */
static void cpu_conv2d_act_forward(vae_backend *be, real *out, const real *in, const real *w,
                                   const real *b, const vae_conv_geom *g, int B, vae_act act,
                                   real slope) {
    cpu_conv2d_forward(be, out, in, w, b, g, B);
    if (B > 0) cpu_act_forward(be, out, out, (size_t)B * g->cout * g->hout * g->wout, act, slope);
}

static void cpu_convt2d_act_forward(vae_backend *be, real *out, const real *in, const real *w,
                                    const real *b, const vae_convt_geom *g, int B, vae_act act,
                                    real slope) {
    cpu_convt2d_forward(be, out, in, w, b, g, B);
    if (B > 0) cpu_act_forward(be, out, out, (size_t)B * g->cout * g->hout * g->wout, act, slope);
}

static void cpu_act_backward_bias(vae_backend *be, real *din, real *db, const real *dout,
                                  const real *out, int B, int C, int HW, vae_act act,
                                  real slope) {
    if (B <= 0 || C <= 0 || HW <= 0) {
        if (db && C > 0) memset(db, 0, (size_t)C * sizeof(real));
        return;
    }
    cpu_act_backward(be, din, dout, out, (size_t)B * C * HW, act, slope);
    if (db) chan_sums(db, din, B, C, (size_t)HW);
}

/* ================================================= 7. fused VAE ops */

/* head[B, 2L]: mu = head[b, l], lv = head[b, L + l].
 * eps[b, l] = vae_normal_at(seed, stream, sv->sub, b*L + l), regenerated
 * wherever needed rather than stored. */

/* z[B,L] = mu + exp(lv/2) eps */
static void cpu_reparam_forward(vae_backend *be, real *z, const real *head, int B, int L,
                                uint64_t seed, uint32_t stream, const vae_step_vals *sv) {
    (void)be;
    const uint64_t sub = sv->sub;
    for (int b = 0; b < B; b++) {
        const real *mu = head + (size_t)b * 2 * L, *lv = mu + L;
        for (int l = 0; l < L; l++) {
            const real eps = vae_normal_at(seed, stream, sub, (uint64_t)b * L + l);
            z[(size_t)b * L + l] = vae_reparam(mu[l], lv[l], eps);
        }
    }
}

/* kl[b] = sum_l KL(N(mu, e^lv) || N(0,1));
 * dhead[b, l]     = dz[b,l]                     + beta_scale * dKL/dmu
 * dhead[b, L + l] = dz[b,l] eps e^(lv/2) / 2    + beta_scale * dKL/dlv
 * with beta_scale = sv->kl_scale (the dz terms vanish when dz is NULL).
 * kl or dhead may be NULL. */
static void cpu_kl_backward(vae_backend *be, real *dhead, real *kl, const real *dz,
                            const real *head, int B, int L, uint64_t seed, uint32_t stream,
                            const vae_step_vals *sv) {
    (void)be;
    const uint64_t sub = sv->sub;
    const real beta_scale = sv->kl_scale;
    for (int b = 0; b < B; b++) {
        const real *mu = head + (size_t)b * 2 * L, *lv = mu + L;
        double acc = 0;
        for (int l = 0; l < L; l++) acc += vae_kl_term(mu[l], lv[l]);
        if (kl) kl[b] = (real)acc;
        if (!dhead) continue;
        real *dmu = dhead + (size_t)b * 2 * L, *dlv = dmu + L;
        for (int l = 0; l < L; l++) {
            real gmu = 0, glv = 0;
            if (dz) {
                const real d = dz[(size_t)b * L + l];
                const real eps = vae_normal_at(seed, stream, sub, (uint64_t)b * L + l);
                gmu = d;
                glv = vae_reparam_grad_lv(d, lv[l], eps);
            }
            dmu[l] = gmu + beta_scale * vae_kl_grad_mu(mu[l]);
            dlv[l] = glv + beta_scale * vae_kl_grad_lv(lv[l]);
        }
    }
}

/* out[b] = sum_l log q(z|x) - log p(z) = sum_l (z^2 - eps^2 - lv) / 2 */
static void cpu_log_q_minus_log_p(vae_backend *be, real *out, const real *z, const real *head,
                                  int B, int L, uint64_t seed, uint32_t stream,
                                  const vae_step_vals *sv) {
    (void)be;
    const uint64_t sub = sv->sub;
    for (int b = 0; b < B; b++) {
        const real *lv = head + (size_t)b * 2 * L + L;
        double acc = 0;
        for (int l = 0; l < L; l++) {
            const real eps = vae_normal_at(seed, stream, sub, (uint64_t)b * L + l);
            acc += vae_log_q_minus_log_p(z[(size_t)b * L + l], lv[l], eps);
        }
        out[b] = (real)acc;
    }
}

/* recon[b] = sum_d l(out[b,d], x[b,d])  (+ D/2 log(2 pi sigma^2) Gaussian)
 * dout[b,d] = grad_scale * dl/dout       (dout may be NULL: loss only)
 * l = BCE with logits (Bernoulli) or (out - x)^2 / (2 sigma^2) (Gaussian). */
static void cpu_recon_loss(vae_backend *be, real *dout, real *recon, const real *out,
                           const real *x, int B, int D, vae_likelihood lik, real sigma,
                           real grad_scale) {
    (void)be;
    const int gauss = lik == VAE_LIK_GAUSSIAN;
    VAE_ASSERT(gauss || lik == VAE_LIK_BERNOULLI);
    const real inv_var = gauss ? (real)1 / (sigma * sigma) : (real)0;
    const double cst =
        gauss ? 0.5 * D * log(2.0 * 3.14159265358979323846 * (double)sigma * (double)sigma) : 0.0;
    for (int b = 0; b < B; b++) {
        const size_t o = (size_t)b * D;
        const real *y = out + o, *t = x + o;
        real *g = dout ? dout + o : NULL;
        double acc = 0;
        if (gauss) {
            for (int d = 0; d < D; d++) acc += vae_gauss_nll(y[d], t[d], inv_var);
            if (g)
                for (int d = 0; d < D; d++) g[d] = grad_scale * vae_gauss_nll_grad(y[d], t[d], inv_var);
        } else {
            for (int d = 0; d < D; d++) acc += vae_bce_logits(y[d], t[d]);
            if (g)
                for (int d = 0; d < D; d++) g[d] = grad_scale * vae_bce_logits_grad(y[d], t[d]);
        }
        if (recon) recon[b] = (real)(acc + cst);
    }
}

/* ================================ 8. reductions, optimizer, data */

/* *acc += sum_i v[i], sequential double sum (deterministic) */
static void cpu_sum_into(vae_backend *be, double *acc, const real *v, size_t n) {
    (void)be;
    double s = 0;
    for (size_t i = 0; i < n; i++) s += v[i];
    *acc += s;
}

/* *acc = sum_i v[i]^2 in double */
static void cpu_sumsq(vae_backend *be, double *acc, const real *v, size_t n) {
    (void)be;
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)v[i] * v[i];
    *acc = s;
}

typedef struct {
    real *p;
    const real *g;
    real *m, *v;
    const vae_adam_hp *hp;
    real bc1, bc2, gscale;
} adam_job;

static void adam_part(void *arg, size_t lo, size_t hi) {
    const adam_job *j = (const adam_job *)arg;
    for (size_t i = lo; i < hi; i++)
        vae_adam_elem(&j->p[i], j->g[i], &j->m[i], &j->v[i], j->hp, j->bc1, j->bc2, j->gscale);
}

/* Adam/AdamW over n parameters with global-norm clipping:
 *   gscale = clip > 0 ? min(1, clip / (sqrt(gnorm2) + 1e-6)) : 1
 * A halted run (*bad has VAE_STEP_HALTED) changes nothing; a non-finite
 * gnorm2 skips the step (*bad = VAE_STEP_BAD, nothing else touched). */
static void cpu_adam_step(vae_backend *be, real *p, const real *g, real *m, real *v, size_t n,
                          const vae_adam_hp *hp, real clip, const double *gnorm2, int *bad,
                          const vae_step_vals *sv) {
    if (*bad & VAE_STEP_HALTED) return;
    const double g2 = *gnorm2;
    if (!isfinite(g2)) {
        *bad = VAE_STEP_BAD;
        return;
    }
    real gscale = 1;
    if (clip > 0) {
        const double c = (double)clip / (sqrt(g2) + 1e-6);
        if (c < 1) gscale = (real)c;
    }
    const vae_adam_hp h = vae_adam_hp_at(hp, sv); /* the step's learning rate */
    adam_job j = {p, g, m, v, &h, sv->bc1, sv->bc2, gscale};
    vae_pool_for(cpu_pool(be), n, CPU_GRAIN, adam_part, &j);
}

/* The step's values and bookkeeping: vae_step_begin and vae_step_commit
 * (vae_math.h), the lines the CUDA backend's one-thread kernels run. */
static void cpu_step_begin(vae_backend *be, vae_step_vals *sv, const vae_step_plan *plan) {
    (void)be;
    vae_step_begin(sv, plan);
}

static void cpu_step_commit(vae_backend *be, double *acc, int *state, const vae_step_vals *sv,
                            int max_bad) {
    (void)be;
    vae_step_commit(acc, state, sv->step, sv->rows, max_bad);
}

/* acc_dst = acc, state_dst = state (the commit blocks, whole) */
static void cpu_step_snapshot(vae_backend *be, double *acc_dst, int *state_dst, const double *acc,
                              const int *state) {
    (void)be;
    memmove(acc_dst, acc, VAE_COMMIT_ACC_N * sizeof(double));
    memmove(state_dst, state, VAE_STEP_STATE_N * sizeof(int));
}

/* x[b, d] = data[idx[sv->row0 + b], d] / 255 */
static void cpu_gather_batch(vae_backend *be, real *x, const uint8_t *data, const int32_t *idx,
                             const vae_step_vals *sv, int B, int D) {
    (void)be;
    idx += sv->row0;
    for (int b = 0; b < B; b++) {
        const uint8_t *src = data + (size_t)idx[b] * D;
        real *dst = x + (size_t)b * D;
        for (int d = 0; d < D; d++) dst[d] = (real)src[d] / (real)255;
    }
}

/* px[i] = vae_to_u8(out[i], lik == BERNOULLI) */
typedef struct {
    uint8_t *px;
    const real *out;
    int is_logit;
} u8_job;

static void to_u8_part(void *arg, size_t lo, size_t hi) {
    const u8_job *j = (const u8_job *)arg;
    for (size_t i = lo; i < hi; i++) j->px[i] = vae_to_u8(j->out[i], j->is_logit);
}

static void cpu_to_u8(vae_backend *be, uint8_t *px, const real *out, size_t n,
                      vae_likelihood lik) {
    u8_job j = {px, out, lik == VAE_LIK_BERNOULLI};
    vae_pool_for(cpu_pool(be), n, CPU_GRAIN, to_u8_part, &j);
}

/* z[i] = vae_normal_at(seed, stream, sub, first + i) */
typedef struct {
    real *z;
    uint64_t seed, sub, first;
    uint32_t stream;
} normal_job;

static void normal_fill_part(void *arg, size_t lo, size_t hi) {
    const normal_job *j = (const normal_job *)arg;
    for (size_t i = lo; i < hi; i++)
        j->z[i] = vae_normal_at(j->seed, j->stream, j->sub, j->first + i);
}

static void cpu_normal_fill(vae_backend *be, real *z, size_t n, uint64_t seed, uint32_t stream,
                            uint64_t sub, uint64_t first) {
    normal_job j = {z, seed, sub, first, stream};
    vae_pool_for(cpu_pool(be), n, CPU_GRAIN / 8, normal_fill_part, &j);
}

/* z[k, l] = vae_latent_elem(spec, vec, first + k, l) */
static void cpu_latent_fill(vae_backend *be, real *z, int n, int64_t first,
                            const vae_latent_spec *spec, const real *vec) {
    (void)be;
    const int L = spec->L;
    for (int k = 0; k < n; k++)
        for (int l = 0; l < L; l++) z[(size_t)k * L + l] = vae_latent_elem(spec, vec, first + k, l);
}

/* x[i] = vae_round_mantissa(x[i], bits) */
static void cpu_round_mantissa(vae_backend *be, real *x, size_t n, int bits) {
    (void)be;
    for (size_t i = 0; i < n; i++) x[i] = (real)vae_round_mantissa((float)x[i], bits);
}

/* ==================================================== 9. construction */

vae_backend *vae_backend_cpu_create(int threads) {
    vae_backend *be = (vae_backend *)vae_calloc(1, sizeof *be);
    cpu_ctx *c = be ? (cpu_ctx *)vae_calloc(1, sizeof *c) : NULL;
    if (!be || !c) {
        free(be);
        return NULL;
    }
    /* OpenBLAS on one thread: gemm() splits products across the pool; without
     * the pool's workers (a thread that cannot start) everything runs on the
     * caller alone, as with --threads 1 */
    openblas_set_num_threads(1);
    c->pool = vae_pool_create(threads);
    if (!c->pool && threads != 1)
        fprintf(stderr, "vae: note: %s; the CPU backend runs on one thread\n", vae_error_get());
    be->name = "cpu";
    be->ctx = c;
    be->alloc = cpu_alloc;
    be->release = cpu_release;
    be->upload = cpu_upload;
    be->download = cpu_download;
    be->zero = cpu_zero;
    be->sync = cpu_sync;
    be->destroy = cpu_destroy;
    be->dense_forward = cpu_dense_forward;
    be->dense_backward = cpu_dense_backward;
    be->dense_relu_forward = cpu_dense_relu_forward;
    be->dense_backward_relu = cpu_dense_backward_relu;
    be->conv2d_forward = cpu_conv2d_forward;
    be->conv2d_backward = cpu_conv2d_backward;
    be->convt2d_forward = cpu_convt2d_forward;
    be->convt2d_backward = cpu_convt2d_backward;
    be->act_forward = cpu_act_forward;
    be->act_backward = cpu_act_backward;
    be->conv2d_act_forward = cpu_conv2d_act_forward;
    be->convt2d_act_forward = cpu_convt2d_act_forward;
    be->act_backward_bias = cpu_act_backward_bias;
    be->reparam_forward = cpu_reparam_forward;
    be->kl_backward = cpu_kl_backward;
    be->log_q_minus_log_p = cpu_log_q_minus_log_p;
    be->recon_loss = cpu_recon_loss;
    be->sum_into = cpu_sum_into;
    be->sumsq = cpu_sumsq;
    be->adam_step = cpu_adam_step;
    be->step_begin = cpu_step_begin;
    be->step_commit = cpu_step_commit;
    be->step_snapshot = cpu_step_snapshot;
    be->gather_batch = cpu_gather_batch;
    be->to_u8 = cpu_to_u8;
    be->normal_fill = cpu_normal_fill;
    be->latent_fill = cpu_latent_fill;
    be->round_mantissa = cpu_round_mantissa;
    return be;
}

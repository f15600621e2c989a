/* test_cuda_ops.c — every op of the CUDA backend against the CPU reference.
 *
 * Each case uploads the same random inputs to both backends, runs the op on
 * both, downloads and compares. Outputs are allocated GUARD elements longer
 * and pre-filled with a NaN sentinel: an op that writes past its end changes
 * the guard, and an op that accumulates (+=) where it should assign (=)
 * turns its result into NaN. Edge shapes: batch 1, odd sizes, sizes that
 * are not multiples of 32 or of the 256-thread block.
 *
 * Tolerances (why each):
 *   GEMM / convolution outputs: max|a-b| / max|b| <= 1e-5 for dot products
 *     of up to 1024 terms, 1e-4 above (weight gradients reduce over
 *     B*H*W). Both sides are fp32 (no TF32), but the summation order and
 *     blocking differ and the GPU fuses multiply-adds, so the difference
 *     grows like sqrt(K) ulps of the largest partial sum; relative to the
 *     largest output that is ~1e-6 at K ~ 1000. A per-element relative
 *     test would be meaningless for outputs that cancel to near zero.
 *     The dense bias gradient is such a reduction too (K = B): the CUDA
 *     backend computes it in the dw GEMM's cuBLASLt epilogue, in fp32.
 *   Dense layers on the GPU run twice: on the default backend (cuBLASLt
 *     bias epilogues where available) and on a second one created with
 *     VAE_CUBLASLT=0 (cuBLAS + bias kernels); each against the CPU and the
 *     two against each other, all with the GEMM tolerance. Weights and
 *     biases also sit at odd float offsets (4-, 8-, 16-byte aligned): the
 *     epilogue path must pick algorithms for the real alignment, and fall
 *     back per call for a bias below 16 bytes.
 *   Dense + ReLU pairs (dense_relu_forward, dense_backward_relu): the same
 *     three-way comparison with the GEMM tolerance of each output's K (the
 *     lower layer's bias gradient dbin sums B products of K = O2 terms:
 *     K = B*O2), on the fused path (cuBLASLt's RELU_AUX_BIAS, RELU_BIAS and
 *     DRELU_BGRAD epilogues with the ReLU bit-mask) and on the fallbacks
 *     (VAE_CUBLASLT=0; a mask or bias below 16 bytes of alignment; a second
 *     backward whose mask record the first one took). An output that is
 *     exactly 0 must pass no gradient on any path (act_backward's
 *     subgradient at 0), and the fused pair captured in a graph must
 *     replay bit-equal to the eager ops.
 *   Convolution data gradients and convT forwards run three ways on the
 *     GPU: the default backend (the fastest of cuDNN, the GEMM form and the
 *     direct kernel, timed), a second in GEMM form (VAE_CONV_GEMM=1) and a
 *     third by the direct kernel (VAE_CONV_DIRECT=1, src/kernels/convt.cu),
 *     each against the CPU with the GEMM tolerance; the direct kernel's
 *     results must also equal, bit for bit, a host loop that sums each
 *     output's taps in the kernel's documented order with fmaf (then + 0,
 *     + bias): its order depends on the shape alone, not on its tiling.
 *     So do the weight gradients and the forwards (convw.cu, convf.cu;
 *     the weight gradient's order also depends on N through its groups of
 *     images), and test_direct_signed_zero checks the signs of zero sums.
 *   Fused elementwise ops: |a-b| <= 1e-6 max(|b|, scale), scale the
 *     magnitude of the operands (1 here). CUDA's expf/log1pf are within
 *     2 ulp, glibc's within 1, and nvcc contracts a*b+c into one FMA, so
 *     results differ by a few ulps of the operands; cancellation (z = mu +
 *     s*eps near 0) would make a relative-to-result bound meaningless.
 *     Per-sample sums of n such terms use scale = n.
 *   Noise: eps is Philox integers plus vae_math.h's float Box-Muller, whose
 *     operations are single IEEE float operations on both sides (no libm,
 *     no contraction), so the normals must be bit-equal (0 ulp).
 *   Adam: 1e-6 relative to the operand scale (p ~ 1, m ~ 0.1, v exact-ish).
 *   Reductions into double: 1e-9 relative (different orders of double
 *     additions differ by ~n * 1e-16); and two GPU runs must be bit-equal.
 *   Activations: bit-equal (compares and one multiply).
 *   Step bookkeeping (step_commit, step_snapshot, adam_step when halted):
 *     bit-equal (the same double additions in the same order, ints, copies).
 *   step_begin: every field bit-equal. bc = 1 - beta^(s + 1) is computed
 *     with vae_pow_int — IEEE double multiplies that nvcc may not fuse
 *     (__dmul_rn) and the ISO C11 host build does not contract — then one
 *     subtraction and one rounding to float; kl_scale is IEEE float division
 *     and multiplication of the same values. So the GPU and the CPU compute
 *     the same bits, and the GPU's values are those the host computes when
 *     it replays a step (vae_step_vals_at). The CPU result must equal the
 *     host's vae_step_vals_at bit for bit (the same C code).
 *   Graphs: a captured step replayed K times against the same ops issued
 *     eagerly K times on a second set of buffers: bit-equal (the same
 *     kernels on the same inputs, in the same order).
 *
 * The per-step values (noise subsequence, KL weight, batch offset, bias
 * corrections) are a vae_step_vals block in backend memory: each case makes
 * one on the host and uploads it to both backends (vals_in).
 */
#include <dirent.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"
#ifdef VAE_TEST_HAVE_EMU
#include "backend_emu.h"
#endif
#include "vae_backend.h"
#include "vae_math.h"
#include "vae_io.h"
#include "vae_sample.h"
#include "vae_sheets.h"

#define GUARD 64
static const uint32_t SENTINEL_BITS = 0x7fa5a5a5u; /* a quiet NaN */

static vae_backend *g_cpu, *g_gpu;
static vae_backend *g_gpu_nolt; /* CUDA created with VAE_CUBLASLT=0 */
static vae_backend *g_gpu_direct; /* CUDA created with VAE_CONV_DIRECT=1 */
/* whether g_gpu_direct's direct kernel takes a shape (convT terms) */
static int (*g_direct_supported)(int CI, int HI, int WI, int CO, int HO, int WO, int K,
                                 int stride, int pad);
/* ... and its direct forward kernel (convf.cu; conv terms) */
static int (*g_fwd_direct_supported)(int CI, int H, int W, int CO, int HO, int WO, int K,
                                     int stride, int pad);
/* ... and its direct weight-gradient kernel (convw.cu; conv terms), with
 * the images per partial sum its order depends on */
static int (*g_wgrad_supported)(int CI, int H, int W, int CO, int HO, int WO, int K, int stride,
                                int pad);
static int (*g_wgrad_group)(int N, int CI, int CO, int K, int HO, int WO);
#ifdef VAE_HAVE_CUDA
int vae_cuda_convt_direct_supported(int CI, int HI, int WI, int CO, int HO, int WO, int K,
                                    int stride, int pad);
int vae_cuda_conv_direct_supported(int CI, int H, int W, int CO, int HO, int WO, int K,
                                   int stride, int pad);
int vae_cuda_conv_wgrad_supported(int CI, int H, int W, int CO, int HO, int WO, int K,
                                  int stride, int pad);
int vae_cuda_conv_wgrad_group(int N, int CI, int CO, int K, int HO, int WO);
#endif
#ifdef VAE_TEST_HAVE_EMU
int vae_emu_convt_direct_supported(int CI, int HI, int WI, int CO, int HO, int WO, int K,
                                   int stride, int pad);
int vae_emu_conv_direct_supported(int CI, int H, int W, int CO, int HO, int WO, int K,
                                  int stride, int pad);
int vae_emu_conv_wgrad_supported(int CI, int H, int W, int CO, int HO, int WO, int K,
                                 int stride, int pad);
int vae_emu_conv_wgrad_group(int N, int CI, int CO, int K, int HO, int WO);
#endif

/* ------------------------------------------------------------ buffers */

/* Buffers of one backend, released LIFO at the end of each case (the CUDA
 * arena returns memory in that order). */
typedef struct {
    vae_backend *be;
    void *p[512];
    int n;
} pool;
static pool g_pc, g_pg, g_pg_nolt, g_pg_direct;

static void *palloc(pool *pl, size_t bytes) {
    void *p = pl->be->alloc(pl->be, bytes);
    if (!p) {
        fprintf(stderr, "%s alloc(%zu): %s\n", pl->be->name, bytes, vae_error_get());
        exit(1);
    }
    if (pl->n == 512) {
        fprintf(stderr, "test pool full\n");
        exit(1);
    }
    pl->p[pl->n++] = p;
    return p;
}

static void pools_reset(void) {
    g_cpu->sync(g_cpu);
    g_gpu->sync(g_gpu);
    if (g_gpu_nolt) g_gpu_nolt->sync(g_gpu_nolt);
    if (g_gpu_direct) g_gpu_direct->sync(g_gpu_direct);
    while (g_pc.n) g_cpu->release(g_cpu, g_pc.p[--g_pc.n]);
    while (g_pg.n) g_gpu->release(g_gpu, g_pg.p[--g_pg.n]);
    while (g_pg_nolt.n) g_gpu_nolt->release(g_gpu_nolt, g_pg_nolt.p[--g_pg_nolt.n]);
    while (g_pg_direct.n) g_gpu_direct->release(g_gpu_direct, g_pg_direct.p[--g_pg_direct.n]);
}

/* The same tensor on both backends. */
typedef struct {
    real *c, *g;
    size_t n;
} pair;

static pair in_data(const real *host, size_t n) {
    pair p = {palloc(&g_pc, n * sizeof(real)), palloc(&g_pg, n * sizeof(real)), n};
    g_cpu->upload(g_cpu, p.c, host, n * sizeof(real));
    g_gpu->upload(g_gpu, p.g, host, n * sizeof(real));
    return p;
}

/* n uniform values in [lo, hi) on both backends, through make (in_data or
 * in_guarded). */
static pair rand_with(pair (*make)(const real *, size_t), size_t n, double lo, double hi,
                      unsigned seed) {
    real *h = test_xmalloc(n * sizeof(real));
    test_rand_fill_real(h, n, lo, hi, seed);
    pair p = make(h, n);
    free(h);
    return p;
}

static pair in_rand(size_t n, double lo, double hi, unsigned seed) {
    return rand_with(in_data, n, lo, hi, seed);
}

/* An output of n elements plus the guard, all set to the NaN sentinel. */
static pair out_new(size_t n) {
    size_t tot = n + GUARD;
    real *h = test_xmalloc(tot * sizeof(real));
    for (size_t i = 0; i < tot; i++) memcpy(&h[i], &SENTINEL_BITS, sizeof(real));
    pair p = in_data(h, tot);
    p.n = n;
    free(h);
    return p;
}

/* p from element off on, n long: a buffer `off` elements past an aligned
 * one (kernels take a scalar head there), whose guard is p's own. */
static pair shifted(pair p, size_t off) {
    pair q = {p.c + off, p.g + off, p.n - off};
    return q;
}

/* An input that an op updates in place and cmp() checks: host[0..n) followed
 * by the NaN guard. */
static pair in_guarded(const real *host, size_t n) {
    pair p = out_new(n);
    g_cpu->upload(g_cpu, p.c, host, n * sizeof(real));
    g_gpu->upload(g_gpu, p.g, host, n * sizeof(real));
    return p;
}

static pair in_rand_guarded(size_t n, double lo, double hi, unsigned seed) {
    return rand_with(in_guarded, n, lo, hi, seed);
}

/* The same vae_step_vals block on both backends (made on the host with
 * testutil's test_step_vals). */
typedef struct {
    vae_step_vals *c, *g;
} vals_pair;

static vals_pair vals_in(const vae_step_vals *h) {
    vals_pair v = {palloc(&g_pc, sizeof *h), palloc(&g_pg, sizeof *h)};
    g_cpu->upload(g_cpu, v.c, h, sizeof *h);
    g_gpu->upload(g_gpu, v.g, h, sizeof *h);
    return v;
}

/* Downloads n + GUARD elements. */
static real *fetch(vae_backend *be, const real *p, size_t n) {
    real *h = test_xmalloc((n + GUARD) * sizeof(real));
    be->download(be, h, p, (n + GUARD) * sizeof(real));
    return h;
}

static int guard_intact(const real *h, size_t n) {
    for (size_t i = n; i < n + GUARD; i++) {
        uint32_t b;
        memcpy(&b, &h[i], sizeof b);
        if (b != SENTINEL_BITS) return 0;
    }
    return 1;
}

/* ------------------------------------------------------- comparisons */

enum { CMP_NORM, CMP_REL };

/* Compares the GPU result with the CPU one: CMP_NORM uses norm_err <= tol,
 * CMP_REL max |a-b| / max(|b|, floor) <= tol. Checks both guards. */
static void cmp(const char *what, pair p, int how, double tol, double floor) {
    real *c = fetch(g_cpu, p.c, p.n), *g = fetch(g_gpu, p.g, p.n);
    double e = how == CMP_NORM ? test_norm_err(g, c, p.n) : test_max_rel(g, c, p.n, floor);
    CHECK_MSG(e <= tol, "%s: error %.3g > %.1g (n = %zu)", what, e, tol, p.n);
    CHECK_MSG(guard_intact(c, p.n), "%s: CPU wrote past the end", what);
    CHECK_MSG(guard_intact(g, p.n), "%s: CUDA wrote past the end", what);
    free(c);
    free(g);
}

/* Bit equality of two buffers of `bytes` bytes on backend be. */
static int be_bits_equal(vae_backend *be, const void *a, const void *b, size_t bytes) {
    void *ha = test_xmalloc(bytes), *hb = test_xmalloc(bytes);
    be->download(be, ha, a, bytes);
    be->download(be, hb, b, bytes);
    int eq = memcmp(ha, hb, bytes) == 0;
    free(ha);
    free(hb);
    return eq;
}

/* Bit equality of two GPU buffers. */
static int gpu_bits_equal(const void *a, const void *b, size_t bytes) {
    return be_bits_equal(g_gpu, a, b, bytes);
}

/* Distance in units in the last place between two floats. */
static int64_t ulp_dist(float a, float b) {
    int32_t ia, ib;
    memcpy(&ia, &a, 4);
    memcpy(&ib, &b, 4);
    int64_t la = ia < 0 ? (int64_t)INT32_MIN - ia : ia;
    int64_t lb = ib < 0 ? (int64_t)INT32_MIN - ib : ib;
    return la > lb ? la - lb : lb - la;
}

/* Dot products of K terms: see the header comment. */
static double gemm_tol(long K) { return K <= 1024 ? 1e-5 : 1e-4; }

/* ------------------------------------------------------------ memory */

static void test_memory(void) {
    /* byte round trip at an odd size, and zero() of an inner range */
    size_t nb = 1001;
    uint8_t *h = test_xmalloc(nb), *back = test_xmalloc(nb);
    for (size_t i = 0; i < nb; i++) h[i] = (uint8_t)(i * 37 + 11);
    uint8_t *d = palloc(&g_pg, nb);
    CHECK(((uintptr_t)d & 255) == 0);
    g_gpu->upload(g_gpu, d, h, nb);
    g_gpu->zero(g_gpu, d + 100, 300);
    g_gpu->download(g_gpu, back, d, nb);
    memset(h + 100, 0, 300);
    CHECK(memcmp(h, back, nb) == 0);

    /* LIFO release returns the memory: the next buffer lands where the
     * released one was. */
    void *a = palloc(&g_pg, 777);
    CHECK(((uintptr_t)a & 255) == 0);
    void *b = g_gpu->alloc(g_gpu, 5000);
    CHECK(b != NULL);
    g_gpu->release(g_gpu, b);
    void *b2 = g_gpu->alloc(g_gpu, 3000);
    CHECK(b2 == b);
    g_gpu->release(g_gpu, b2);
    /* an older buffer released first only marks it; its bytes come back
     * when the newer one above it goes too */
    void *o1 = g_gpu->alloc(g_gpu, 4000), *o2 = g_gpu->alloc(g_gpu, 4000);
    CHECK(o1 == b && o2 != NULL && o2 != o1);
    g_gpu->release(g_gpu, o1);
    void *o3 = g_gpu->alloc(g_gpu, 100);
    CHECK_MSG(o3 != o1, "a buffer released below a live one was reused (%p)", o3);
    g_gpu->release(g_gpu, o3);
    g_gpu->release(g_gpu, o2);
    void *o4 = g_gpu->alloc(g_gpu, 100);
    CHECK_MSG(o4 == o1, "out-of-order releases returned no memory (got %p, expected %p)", o4, o1);
    g_gpu->release(g_gpu, o4);

    /* too big for the arena: NULL and a message with the numbers */
    void *huge = g_gpu->alloc(g_gpu, (size_t)1 << 50);
    CHECK(huge == NULL);
    CHECK_MSG(strstr(vae_error_get(), "CUDA arena") != NULL, "message: %s", vae_error_get());

    /* download_async through the copy stream */
    if (g_gpu->download_async && g_gpu->copy_wait) {
        memset(back, 0xEE, nb);
        g_gpu->download_async(g_gpu, back, d, nb);
        g_gpu->copy_wait(g_gpu);
        CHECK(memcmp(h, back, nb) == 0);
    }
    free(h);
    free(back);
    pools_reset();
}

/* ------------------------------------------------------------- dense */

/* The buffers of one dense case on one backend. */
typedef struct {
    vae_backend *be;
    const char *name;
    real *in, *w, *b, *dout;  /* inputs */
    real *out, *din, *dw, *db; /* outputs, each followed by the NaN guard */
    real *out2, *dw2, *db2;    /* the same ops again (cached plans): bit-equal */
} dense_bufs;

/* n floats of host data at `off` floats past a 256-byte boundary of a new
 * buffer of pool pl (the pool keeps the buffer's start for release). */
static real *dev_put(pool *pl, const real *h, size_t n, size_t off) {
    real *p = (real *)palloc(pl, (n + off) * sizeof(real)) + off;
    pl->be->upload(pl->be, p, h, n * sizeof(real));
    return p;
}

/* n floats + GUARD of NaN sentinel at `off` floats past a 256-byte boundary. */
static real *dev_sentinel(pool *pl, size_t n, size_t off) {
    size_t tot = n + GUARD;
    real *h = test_xmalloc(tot * sizeof(real));
    for (size_t i = 0; i < tot; i++) memcpy(&h[i], &SENTINEL_BITS, sizeof(real));
    real *p = dev_put(pl, h, tot, off);
    free(h);
    return p;
}

/* Uploads the case to pl's backend (the weight and dw `woff` floats, the
 * bias and db `boff` floats off a 256-byte boundary) and runs forward,
 * backward, then both again (backward without din, as for a first layer). */
static dense_bufs dense_run(pool *pl, const char *name, const real *hin, const real *hw,
                            const real *hb, const real *hdout, int B, int I, int O, int woff,
                            int boff) {
    const size_t nin = (size_t)B * I, nw = (size_t)O * I, nout = (size_t)B * O;
    dense_bufs r;
    r.be = pl->be;
    r.name = name;
    r.in = dev_put(pl, hin, nin, 0);
    r.w = dev_put(pl, hw, nw, (size_t)woff);
    r.b = dev_put(pl, hb, (size_t)O, (size_t)boff);
    r.dout = dev_put(pl, hdout, nout, 0);
    r.out = dev_sentinel(pl, nout, 0);
    r.din = dev_sentinel(pl, nin, 0);
    r.dw = dev_sentinel(pl, nw, (size_t)woff);
    r.db = dev_sentinel(pl, (size_t)O, (size_t)boff);
    r.out2 = dev_sentinel(pl, nout, 0);
    r.dw2 = dev_sentinel(pl, nw, (size_t)woff);
    r.db2 = dev_sentinel(pl, (size_t)O, (size_t)boff);
    vae_backend *be = r.be;
    be->dense_forward(be, r.out, r.in, r.w, r.b, B, I, O);
    be->dense_backward(be, r.din, r.dw, r.db, r.dout, r.in, r.w, B, I, O);
    be->dense_forward(be, r.out2, r.in, r.w, r.b, B, I, O);
    be->dense_backward(be, NULL, r.dw2, r.db2, r.dout, r.in, r.w, B, I, O);
    return r;
}

/* x (on x.be) against ref (on ref.be): norm_err <= tol, both guards intact. */
static void dense_cmp(const char *what, const dense_bufs *x, const real *xp,
                      const dense_bufs *ref, const real *rp, size_t n, double tol) {
    real *hx = fetch(x->be, xp, n), *hr = fetch(ref->be, rp, n);
    double e = test_norm_err(hx, hr, n);
    CHECK_MSG(e <= tol, "%s: %s vs %s: error %.3g > %.1g (n = %zu)", what, x->name, ref->name, e,
              tol, n);
    CHECK_MSG(guard_intact(hx, n), "%s: %s wrote past the end", what, x->name);
    CHECK_MSG(guard_intact(hr, n), "%s: %s wrote past the end", what, ref->name);
    free(hx);
    free(hr);
}

static void test_dense(int B, int I, int O, int woff, int boff, unsigned seed) {
    char what[160];
    const size_t nin = (size_t)B * I, nw = (size_t)O * I, nout = (size_t)B * O;
    real *hin = test_xmalloc(nin * sizeof(real)), *hw = test_xmalloc(nw * sizeof(real));
    real *hb = test_xmalloc((size_t)O * sizeof(real)), *hdout = test_xmalloc(nout * sizeof(real));
    test_rand_fill_real(hin, nin, -1, 1, seed);
    test_rand_fill_real(hw, nw, -0.5, 0.5, seed + 1);
    test_rand_fill_real(hb, (size_t)O, -0.5, 0.5, seed + 2);
    test_rand_fill_real(hdout, nout, -1, 1, seed + 3);

    dense_bufs r[3];
    r[0] = dense_run(&g_pc, "cpu", hin, hw, hb, hdout, B, I, O, woff, boff);
    r[1] = dense_run(&g_pg, "cuda", hin, hw, hb, hdout, B, I, O, woff, boff);
    r[2] = dense_run(&g_pg_nolt, "cuda VAE_CUBLASLT=0", hin, hw, hb, hdout, B, I, O, woff, boff);
    /* each GPU path against the CPU, and the epilogue path against the other */
    static const int pairs[3][2] = {{1, 0}, {2, 0}, {1, 2}};
    for (int k = 0; k < 3; k++) {
        const dense_bufs *x = &r[pairs[k][0]], *ref = &r[pairs[k][1]];
        snprintf(what, sizeof what, "dense B=%d I=%d O=%d (w +%d, b +%d floats) out", B, I, O,
                 woff, boff);
        dense_cmp(what, x, x->out, ref, ref->out, nout, gemm_tol(I));
        snprintf(what, sizeof what, "dense B=%d I=%d O=%d (w +%d, b +%d floats) din", B, I, O,
                 woff, boff);
        dense_cmp(what, x, x->din, ref, ref->din, nin, gemm_tol(O));
        snprintf(what, sizeof what, "dense B=%d I=%d O=%d (w +%d, b +%d floats) dw", B, I, O,
                 woff, boff);
        dense_cmp(what, x, x->dw, ref, ref->dw, nw, gemm_tol(B));
        snprintf(what, sizeof what, "dense B=%d I=%d O=%d (w +%d, b +%d floats) db", B, I, O,
                 woff, boff);
        dense_cmp(what, x, x->db, ref, ref->db, (size_t)O, gemm_tol(B));
    }
    /* the second runs (plans from the cache; no din): bit-equal on each GPU */
    for (int k = 1; k < 3; k++) {
        const dense_bufs *x = &r[k];
        CHECK_MSG(be_bits_equal(x->be, x->out, x->out2, nout * sizeof(real)),
                  "dense B=%d I=%d O=%d (w +%d, b +%d): %s forward not reproducible", B, I, O,
                  woff, boff, x->name);
        CHECK_MSG(be_bits_equal(x->be, x->dw, x->dw2, nw * sizeof(real)),
                  "dense B=%d I=%d O=%d (w +%d, b +%d): %s dw not reproducible", B, I, O, woff,
                  boff, x->name);
        CHECK_MSG(be_bits_equal(x->be, x->db, x->db2, (size_t)O * sizeof(real)),
                  "dense B=%d I=%d O=%d (w +%d, b +%d): %s db not reproducible", B, I, O, woff,
                  boff, x->name);
    }
    free(hin);
    free(hw);
    free(hb);
    free(hdout);
    pools_reset();
}

/* ------------------------------------------------------ dense + ReLU */

/* One dense + ReLU case on one backend: the pair in[B,I] -> dense (w, b)
 * -> relu -> h[B,O] and the dense layer above it, h -> dense (w2[O2,O])
 * with output gradient dout[B,O2]. (The GPU paths named below are those of
 * VAE_LT_DRELU=1; by default the CUDA backend offers no mask, relu_mask_bytes
 * is 0, and every backward is the fallback.) Runs, in this order:
 *   1. dense_relu_forward(h, mask)          (GPU: RELU_AUX_BIAS, records the mask)
 *   2. dense_backward_relu(din, dbin, dw, db; mask)   (GPU: DRELU_BGRAD + BGRADB)
 *   3. dense_relu_forward(h2, NULL)         (GPU: RELU_BIAS)
 *   4. dense_backward_relu(din2, dbin2; mask, no dw/db): the mask's record
 *      was taken by 2, so the GPU must take the fallback from `in`
 *   5. 1 and 2 again into h3, din3, dbin3, dw3, db3 (cached plans): bit-equal
 *   6. the unfused sequence of 4 into din_u, dbin_u: dense_backward (din
 *      only), act_backward in place, dense_backward (db only, from din_u:
 *      the bias-gradient kernel): bit-equal to 4 on every backend (the
 *      fallback fuses the ReLU backward with the bias gradient)
 * The mask sits `moff` bytes past a 256-byte boundary (below 16: the fused
 * path must decline it), the weights `woff` floats, b, db and dbin `boff`
 * floats (below 4: the epilogues decline the bias). */
typedef struct {
    vae_backend *be;
    const char *name;
    real *h, *din, *dbin, *dw, *db, *h2, *din2, *dbin2, *h3, *din3, *dbin3, *dw3, *db3;
    real *din_u, *dbin_u;
    void *mask;
    size_t mbytes;
} relu_bufs;

static relu_bufs relu_run(pool *pl, const char *name, const real *hin, const real *hw,
                          const real *hb, const real *hw2, const real *hdout, int B, int I, int O,
                          int O2, int woff, int boff, int moff) {
    const size_t nin = (size_t)B * I, nh = (size_t)B * O;
    vae_backend *be = pl->be;
    relu_bufs r;
    r.be = be;
    r.name = name;
    real *in = dev_put(pl, hin, nin, 0), *w = dev_put(pl, hw, (size_t)O * I, (size_t)woff);
    real *b = dev_put(pl, hb, (size_t)O, (size_t)boff);
    real *w2 = dev_put(pl, hw2, (size_t)O2 * O, (size_t)woff);
    real *dout = dev_put(pl, hdout, (size_t)B * O2, 0);
    const size_t mbytes = be->relu_mask_bytes ? be->relu_mask_bytes(be, B, O) : 0;
    void *mask = mbytes ? (char *)palloc(pl, mbytes + (size_t)moff) + moff : NULL;
    r.mask = mask;
    r.mbytes = mbytes;
    r.h = dev_sentinel(pl, nh, 0);
    r.din = dev_sentinel(pl, nh, 0);
    r.dbin = dev_sentinel(pl, (size_t)O, (size_t)boff);
    r.dw = dev_sentinel(pl, (size_t)O2 * O, (size_t)woff);
    r.db = dev_sentinel(pl, (size_t)O2, (size_t)boff);
    r.h2 = dev_sentinel(pl, nh, 0);
    r.din2 = dev_sentinel(pl, nh, 0);
    r.dbin2 = dev_sentinel(pl, (size_t)O, (size_t)boff);
    r.h3 = dev_sentinel(pl, nh, 0);
    r.din3 = dev_sentinel(pl, nh, 0);
    r.dbin3 = dev_sentinel(pl, (size_t)O, (size_t)boff);
    r.dw3 = dev_sentinel(pl, (size_t)O2 * O, (size_t)woff);
    r.db3 = dev_sentinel(pl, (size_t)O2, (size_t)boff);
    r.din_u = dev_sentinel(pl, nh, 0);
    r.dbin_u = dev_sentinel(pl, (size_t)O, (size_t)boff);
    be->dense_relu_forward(be, r.h, mask, in, w, b, B, I, O);
    be->dense_backward_relu(be, r.din, r.dbin, r.dw, r.db, dout, r.h, mask, w2, B, O, O2);
    be->dense_relu_forward(be, r.h2, NULL, in, w, b, B, I, O);
    be->dense_backward_relu(be, r.din2, r.dbin2, NULL, NULL, dout, r.h, mask, w2, B, O, O2);
    be->dense_relu_forward(be, r.h3, mask, in, w, b, B, I, O);
    be->dense_backward_relu(be, r.din3, r.dbin3, r.dw3, r.db3, dout, r.h3, mask, w2, B, O, O2);
    be->dense_backward(be, r.din_u, NULL, NULL, dout, r.h, w2, B, O, O2);
    be->act_backward(be, r.din_u, r.din_u, r.h, nh, VAE_ACT_RELU, 0);
    be->dense_backward(be, NULL, NULL, r.dbin_u, r.din_u, NULL, NULL, B, O, O);
    return r;
}

/* h[i] = the nearest multiple of step (a power of two) */
static void quantize(real *h, size_t n, double step) {
    for (size_t i = 0; i < n; i++) h[i] = (real)(nearbyint((double)h[i] / step) * step);
}

/* On a failed fused backward: where the wrong din entries are (by the
 * sign of h), whether they carry the unmasked gradient (dout w2), whether
 * the mask (O rows by B columns, leading dimension a multiple of 128 bits)
 * holds [h > 0], and what dbin sums. Printed for the first few cases only. */
static void relu_diagnose(const relu_bufs *x, const relu_bufs *cpu, const real *hw2,
                          const real *hdout, int B, int O, int O2) {
    static int printed;
    if (printed++ >= 3) return;
    const size_t nh = (size_t)B * O;
    real *h = fetch(cpu->be, cpu->h, nh), *dx = fetch(x->be, x->din, nh);
    real *dr = fetch(cpu->be, cpu->din, nh), *bx = fetch(x->be, x->dbin, (size_t)O);
    double *u = test_xmalloc(nh * sizeof(double));
    long pos = 0, pos_bad = 0, pos_zero = 0, zero = 0, zero_bad = 0, zero_unmasked = 0;
    for (int s = 0; s < B; s++)
        for (int i = 0; i < O; i++) {
            double acc = 0;
            for (int o = 0; o < O2; o++)
                acc += (double)hdout[(size_t)s * O2 + o] * hw2[(size_t)o * O + i];
            const size_t k = (size_t)s * O + i;
            u[k] = acc;
            const int bad = fabs((double)dx[k] - dr[k]) > 1e-4 * (fabs((double)dr[k]) + 1);
            if (h[k] > 0) {
                pos++;
                pos_bad += bad;
                pos_zero += bad && dx[k] == 0;
            } else {
                zero++;
                zero_bad += bad;
                zero_unmasked += bad && fabs((double)dx[k] - acc) <= 1e-4 * (fabs(acc) + 1);
            }
        }
    printf("  diagnosis (%s): din wrong at %ld of %ld entries with h > 0 (%ld of them 0), "
           "%ld of %ld with h = 0 (%ld of them the unmasked dout w2)\n",
           x->name, pos_bad, pos, pos_zero, zero_bad, zero, zero_unmasked);
    if (x->mask && x->mbytes) {
        uint8_t *m = test_xmalloc(x->mbytes);
        x->be->download(x->be, m, x->mask, x->mbytes);
        const size_t ld = ((size_t)O + 127) / 128 * 128;
        long agree = 0, set = 0;
        for (size_t bit = 0; bit < x->mbytes * 8; bit++) set += (m[bit / 8] >> (bit % 8)) & 1;
        for (int s = 0; s < B; s++)
            for (int i = 0; i < O; i++) {
                const size_t bit = (size_t)s * ld + (size_t)i;
                if (bit / 8 >= x->mbytes) continue;
                agree += (int)((m[bit / 8] >> (bit % 8)) & 1) == (h[(size_t)s * O + i] > 0);
            }
        printf("  mask: %ld bits set of %zu (h > 0 at %ld); bit s*%zu + i == [h > 0] at %ld of "
               "%zu; first bytes", set, x->mbytes * 8, pos, ld, agree, nh);
        for (size_t i = 0; i < x->mbytes && i < 16; i++) printf(" %02x", m[i]);
        printf("\n");
        free(m);
    }
    double bmax_self = 0, bmax_unm = 0, bmax_ref = 0;
    real *br = fetch(cpu->be, cpu->dbin, (size_t)O);
    for (int i = 0; i < O; i++) {
        double sx = 0, su = 0;
        for (int s = 0; s < B; s++) sx += dx[(size_t)s * O + i], su += u[(size_t)s * O + i];
        bmax_self = fmax(bmax_self, fabs(bx[i] - sx) / (fabs(sx) + 1));
        bmax_unm = fmax(bmax_unm, fabs(bx[i] - su) / (fabs(su) + 1));
        bmax_ref = fmax(bmax_ref, fabs((double)bx[i] - br[i]) / (fabs((double)br[i]) + 1));
    }
    printf("  dbin: max rel. difference to sum_B of its own din %.3g, of the unmasked dout w2 "
           "%.3g, to the CPU's dbin %.3g; din[0..3] %g %g %g %g vs CPU %g %g %g %g\n",
           bmax_self, bmax_unm, bmax_ref, nh > 0 ? dx[0] : 0., nh > 1 ? dx[1] : 0.,
           nh > 2 ? dx[2] : 0., nh > 3 ? dx[3] : 0., nh > 0 ? dr[0] : 0., nh > 1 ? dr[1] : 0.,
           nh > 2 ? dr[2] : 0., nh > 3 ? dr[3] : 0.);
    free(br);
    free(u);
    free(h);
    free(dx);
    free(dr);
    free(bx);
}

static void test_dense_relu(int B, int I, int O, int O2, int woff, int boff, int moff,
                            unsigned seed) {
    char what[160];
    const size_t nin = (size_t)B * I, nh = (size_t)B * O;
    real *hin = test_xmalloc(nin * sizeof(real)), *hw = test_xmalloc((size_t)O * I * sizeof(real));
    real *hb = test_xmalloc((size_t)O * sizeof(real));
    real *hw2 = test_xmalloc((size_t)O2 * O * sizeof(real));
    real *hdout = test_xmalloc((size_t)B * O2 * sizeof(real));
    test_rand_fill_real(hin, nin, -1, 1, seed);
    test_rand_fill_real(hw, (size_t)O * I, -0.5, 0.5, seed + 1);
    test_rand_fill_real(hb, (size_t)O, -0.5, 0.5, seed + 2);
    test_rand_fill_real(hw2, (size_t)O2 * O, -0.5, 0.5, seed + 3);
    test_rand_fill_real(hdout, (size_t)B * O2, -1, 1, seed + 4);
    /* Inputs on a grid (in: multiples of 1/2, w: of 1/8, b: of 1/16) make
     * every product and partial sum of the forward exact in fp32 (|sum| <=
     * I/2 + 1/2 in steps of 1/16, I <= 2^20), so every backend computes the
     * same h bit for bit, in any order: the ReLU pattern cannot differ by a
     * rounding at 0 (which would move a whole din element), and many
     * pre-activations are exactly 0. Output 0 is exactly 0 in every sample
     * besides (zero weight row and bias). Its ReLU derivative must be 0, as
     * act_backward's from out > 0. */
    quantize(hin, nin, 0.5);
    quantize(hw, (size_t)O * I, 0.125);
    quantize(hb, (size_t)O, 0.0625);
    if (O > 1) {
        memset(hw, 0, (size_t)I * sizeof(real));
        hb[0] = 0;
    }

    relu_bufs r[3];
    r[0] = relu_run(&g_pc, "cpu", hin, hw, hb, hw2, hdout, B, I, O, O2, woff, boff, moff);
    r[1] = relu_run(&g_pg, "cuda", hin, hw, hb, hw2, hdout, B, I, O, O2, woff, boff, moff);
    r[2] = relu_run(&g_pg_nolt, "cuda VAE_CUBLASLT=0", hin, hw, hb, hw2, hdout, B, I, O, O2, woff,
                    boff, moff);
#define RELU_CASE "dense+relu B=%d I=%d O=%d O2=%d (w +%d, b +%d floats, mask +%d bytes)"
    /* each GPU path against the CPU, and the two GPU paths against each other */
    static const int pairs[3][2] = {{1, 0}, {2, 0}, {1, 2}};
    for (int k = 0; k < 3; k++) {
        const int failed_before = g_test_fail;
        const relu_bufs *x = &r[pairs[k][0]], *ref = &r[pairs[k][1]];
        struct {
            const char *name;
            const real *a, *b;
            size_t n;
            long K;
        } outs[] = {
            {"forward (mask)", x->h, ref->h, nh, I},
            {"forward (no mask)", x->h2, ref->h2, nh, I},
            {"din", x->din, ref->din, nh, O2},
            {"dbin", x->dbin, ref->dbin, (size_t)O, (long)B * O2},
            {"dw", x->dw, ref->dw, (size_t)O2 * O, B},
            {"db", x->db, ref->db, (size_t)O2, B},
            {"din (second backward)", x->din2, ref->din2, nh, O2},
            {"dbin (second backward)", x->dbin2, ref->dbin2, (size_t)O, (long)B * O2},
        };
        for (size_t i = 0; i < sizeof outs / sizeof outs[0]; i++) {
            snprintf(what, sizeof what, RELU_CASE " %s", B, I, O, O2, woff, boff, moff,
                     outs[i].name);
            real *hx = fetch(x->be, outs[i].a, outs[i].n);
            real *hr = fetch(ref->be, outs[i].b, outs[i].n);
            double e = test_norm_err(hx, hr, outs[i].n);
            CHECK_MSG(e <= gemm_tol(outs[i].K), "%s: %s vs %s: error %.3g > %.1g (n = %zu)", what,
                      x->name, ref->name, e, gemm_tol(outs[i].K), outs[i].n);
            CHECK_MSG(guard_intact(hx, outs[i].n), "%s: %s wrote past the end", what, x->name);
            free(hx);
            free(hr);
        }
        if (g_test_fail > failed_before && pairs[k][1] == 0)
            relu_diagnose(x, ref, hw2, hdout, B, O, O2);
    }
    for (int k = 0; k < 3; k++) {
        const relu_bufs *x = &r[k];
        CHECK_MSG(be_bits_equal(x->be, x->din2, x->din_u, nh * sizeof(real)) &&
                      be_bits_equal(x->be, x->dbin2, x->dbin_u, (size_t)O * sizeof(real)),
                  RELU_CASE ": %s backward without mask (din, dbin) differs from dense_backward, "
                            "act_backward and the bias gradient in sequence",
                  B, I, O, O2, woff, boff, moff, x->name);
        if (k > 0)
            CHECK_MSG(be_bits_equal(x->be, x->h, x->h2, nh * sizeof(real)) &&
                          be_bits_equal(x->be, x->h, x->h3, nh * sizeof(real)),
                      RELU_CASE ": %s forward with and without mask differ (exact inputs)", B, I,
                      O, O2, woff, boff, moff, x->name);
        if (k > 0) {
            real *hg = fetch(x->be, x->h, nh), *hc = fetch(r[0].be, r[0].h, nh);
            CHECK_MSG(memcmp(hg, hc, nh * sizeof(real)) == 0,
                      RELU_CASE ": %s forward differs from the CPU's (exact inputs)", B, I, O, O2,
                      woff, boff, moff, x->name);
            free(hg);
            free(hc);
        }
        /* the exactly-zero output: no gradient passes, none summed */
        if (O > 1) {
            real *hd = fetch(x->be, x->din, nh), *hdb = fetch(x->be, x->dbin, (size_t)O);
            int zero = hdb[0] == 0;
            for (int s = 0; s < B; s++) zero &= hd[(size_t)s * O] == 0;
            CHECK_MSG(zero, RELU_CASE ": %s passes a gradient where the ReLU output is exactly 0",
                      B, I, O, O2, woff, boff, moff, x->name);
            free(hd);
            free(hdb);
        }
        if (k == 0) continue;
        /* the rerun (cached plans, the mask recorded again): bit-equal */
        struct {
            const char *name;
            const real *a, *b;
            size_t n;
        } same[] = {{"forward", x->h, x->h3, nh},
                    {"din", x->din, x->din3, nh},
                    {"dbin", x->dbin, x->dbin3, (size_t)O},
                    {"dw", x->dw, x->dw3, (size_t)O2 * O},
                    {"db", x->db, x->db3, (size_t)O2}};
        for (size_t i = 0; i < sizeof same / sizeof same[0]; i++)
            CHECK_MSG(be_bits_equal(x->be, same[i].a, same[i].b, same[i].n * sizeof(real)),
                      RELU_CASE ": %s %s not reproducible", B, I, O, O2, woff, boff, moff,
                      x->name, same[i].name);
    }
#undef RELU_CASE
    free(hin);
    free(hw);
    free(hb);
    free(hw2);
    free(hdout);
    pools_reset();
}

/* The fused pair forward and backward captured in a graph (after one eager
 * run, as the contract asks) and replayed, against the same ops issued
 * eagerly on a second set of buffers: bit-equal. */
typedef struct {
    vae_backend *be;
    real *in, *w, *b, *w2, *dout, *h, *din, *dbin, *dw, *db;
    void *mask;
    int B, I, O, O2;
} relu_work;

static void relu_work_run(void *arg) {
    const relu_work *a = arg;
    vae_backend *be = a->be;
    be->dense_relu_forward(be, a->h, a->mask, a->in, a->w, a->b, a->B, a->I, a->O);
    be->dense_backward_relu(be, a->din, a->dbin, a->dw, a->db, a->dout, a->h, a->mask, a->w2,
                            a->B, a->O, a->O2);
}

/* Plans first needed inside a capture (the header's contract): a dense
 * layer's cuBLASLt plan is host-side, so it may be made there, and the
 * replay gives the eager op's bits; a convolution's algorithm choice runs
 * convolutions and synchronises, so a capture meeting a new geometry is
 * refused softly (NULL, the reason named) and the convolution then runs
 * eagerly as before. Shapes used nowhere else in this test. */
typedef struct {
    vae_backend *be;
    real *out, *in, *w, *b;
    const vae_conv_geom *g; /* NULL: dense B x I -> O */
    int B, I, O;
} newplan_work;

static void newplan_run(void *arg) {
    const newplan_work *x = arg;
    if (x->g) x->be->conv2d_forward(x->be, x->out, x->in, x->w, x->b, x->g, x->B);
    else x->be->dense_forward(x->be, x->out, x->in, x->w, x->b, x->B, x->I, x->O);
}

static void test_capture_new_plans(void) {
    if (!g_gpu->graph_capture || !g_gpu->graph_launch || !g_gpu->graph_free) {
        printf("new plans in a capture: SKIPPED (no graph_capture)\n");
        return;
    }
    enum { B = 6, I = 11, O = 13 };
    pair in = in_rand((size_t)B * I, -1, 1, 1201), w = in_rand((size_t)O * I, -1, 1, 1202);
    pair b = in_rand(O, -1, 1, 1203), out = out_new((size_t)B * O);
    real *again = dev_sentinel(&g_pg, (size_t)B * O, 0);
    newplan_work d = {g_gpu, out.g, in.g, w.g, b.g, NULL, B, I, O};
    void *graph = g_gpu->graph_capture(g_gpu, newplan_run, &d);
    CHECK_MSG(graph != NULL, "dense plan made in a capture: %s", vae_error_get());
    if (graph) {
        g_gpu->graph_launch(g_gpu, graph);
        d.out = again;
        newplan_run(&d);
        g_gpu->sync(g_gpu);
        CHECK_MSG(gpu_bits_equal(out.g, again, (size_t)B * O * sizeof(real)),
                  "dense plan made in a capture: the replay differs from the eager op");
        g_gpu->graph_free(g_gpu, graph);
    }
    g_cpu->dense_forward(g_cpu, out.c, in.c, w.c, b.c, B, I, O);
    cmp("dense plan made in a capture, against the CPU", out, CMP_REL, 1e-5, 1);

    const vae_conv_geom g = {3, 9, 7, 5, 9, 7, 3, 1, 1}; /* 3x9x7 -> 5x9x7, k3 s1 p1 */
    pair cin = in_rand((size_t)2 * 3 * 9 * 7, -1, 1, 1204), cw = in_rand((size_t)5 * 3 * 9, -1, 1, 1205);
    pair cb = in_rand(5, -1, 1, 1206), cy = out_new((size_t)2 * 5 * 9 * 7);
    newplan_work cv = {g_gpu, cy.g, cin.g, cw.g, cb.g, &g, 2, 0, 0};
    graph = g_gpu->graph_capture(g_gpu, newplan_run, &cv);
    CHECK_MSG(graph == NULL && strstr(vae_error_get(), "first use"),
              "a convolution's first use in a capture: refused softly (got %p: %s)", graph,
              vae_error_get());
    if (graph) g_gpu->graph_free(g_gpu, graph);
    newplan_run(&cv);
    g_cpu->conv2d_forward(g_cpu, cy.c, cin.c, cw.c, cb.c, &g, 2);
    cmp("a convolution after a refused capture, against the CPU", cy, CMP_REL, 1e-5, 1);
    printf("new plans in a capture: the dense one made and replayed, the convolution refused\n");
    pools_reset();
}

static void test_dense_relu_graph(void) {
    if (!g_gpu->graph_capture || !g_gpu->graph_launch || !g_gpu->graph_free) {
        printf("dense+relu graph: SKIPPED (no graph_capture)\n");
        return;
    }
    enum { B = 32, I = 50, O = 129, O2 = 20 };
    relu_work a[2];
    real *hx = test_xmalloc((size_t)O * I * sizeof(real)); /* the largest input below */
    for (int k = 0; k < 2; k++) {
        relu_work *x = &a[k];
        x->be = g_gpu, x->B = B, x->I = I, x->O = O, x->O2 = O2;
        struct {
            real **p;
            size_t n;
        } in[] = {{&x->in, (size_t)B * I}, {&x->w, (size_t)O * I}, {&x->b, O},
                  {&x->w2, (size_t)O2 * O}, {&x->dout, (size_t)B * O2}};
        for (size_t i = 0; i < sizeof in / sizeof in[0]; i++) {
            test_rand_fill_real(hx, in[i].n, -1, 1, 700 + (unsigned)i);
            *in[i].p = dev_put(&g_pg, hx, in[i].n, 0);
        }
        x->h = dev_sentinel(&g_pg, (size_t)B * O, 0);
        x->din = dev_sentinel(&g_pg, (size_t)B * O, 0);
        x->dbin = dev_sentinel(&g_pg, O, 0);
        x->dw = dev_sentinel(&g_pg, (size_t)O2 * O, 0);
        x->db = dev_sentinel(&g_pg, O2, 0);
        size_t mb = g_gpu->relu_mask_bytes ? g_gpu->relu_mask_bytes(g_gpu, B, O) : 0;
        x->mask = mb ? palloc(&g_pg, mb) : NULL;
    }
    relu_work_run(&a[0]);
    g_gpu->sync(g_gpu);
    void *graph = g_gpu->graph_capture(g_gpu, relu_work_run, &a[0]);
    CHECK_MSG(graph != NULL, "dense+relu graph_capture: %s", vae_error_get());
    if (graph) {
        /* the inputs change between launches: new dout for both sets */
        test_rand_fill_real(hx, (size_t)B * O2, -1, 1, 777);
        g_gpu->upload(g_gpu, a[0].dout, hx, (size_t)B * O2 * sizeof(real));
        g_gpu->upload(g_gpu, a[1].dout, hx, (size_t)B * O2 * sizeof(real));
        g_gpu->graph_launch(g_gpu, graph);
        relu_work_run(&a[1]);
        g_gpu->sync(g_gpu);
        struct {
            const char *name;
            const void *p, *q;
            size_t n;
        } bufs[] = {{"h", a[0].h, a[1].h, (size_t)B * O},
                    {"din", a[0].din, a[1].din, (size_t)B * O},
                    {"dbin", a[0].dbin, a[1].dbin, O},
                    {"dw", a[0].dw, a[1].dw, (size_t)O2 * O},
                    {"db", a[0].db, a[1].db, O2}};
        for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
            CHECK_MSG(gpu_bits_equal(bufs[i].p, bufs[i].q, bufs[i].n * sizeof(real)),
                      "dense+relu graph: %s of the replay differs from the eager run",
                      bufs[i].name);
        g_gpu->graph_free(g_gpu, graph);
        printf("dense+relu graph: replay bit-equal to the eager ops\n");
    }
    free(hx);
    pools_reset();
}

/* ------------------------------------------------------- convolutions */

static real *host_of(const real *cpu_ptr, size_t n) {
    real *h = test_xmalloc((n ? n : 1) * sizeof(real));
    g_cpu->download(g_cpu, h, cpu_ptr, n * sizeof(real));
    return h;
}

/* out = convT(in, w) (+ bias) summed as the direct kernel documents
 * (convt.cu): for each output, acc = 0; ci, ky, kx ascending over the taps
 * that reach it, acc = fmaf(in, w, acc); then acc + 0 (-0 -> +0), + bias[co]. */
static void direct_ref(real *out, const real *in, const real *w, const real *bias, int N, int CI,
                       int HI, int WI, int CO, int HO, int WO, int K, int S, int P) {
    for (int n = 0; n < N; n++)
        for (int co = 0; co < CO; co++)
            for (int oy = 0; oy < HO; oy++)
                for (int ox = 0; ox < WO; ox++) {
                    float acc = 0;
                    for (int ci = 0; ci < CI; ci++)
                        for (int ky = 0; ky < K; ky++) {
                            const int ny = oy + P - ky, iy = ny / S;
                            if (ny < 0 || ny % S || iy >= HI) continue;
                            for (int kx = 0; kx < K; kx++) {
                                const int nx = ox + P - kx, ix = nx / S;
                                if (nx < 0 || nx % S || ix >= WI) continue;
                                acc = fmaf(in[(((size_t)n * CI + ci) * HI + iy) * WI + ix],
                                           w[(((size_t)ci * CO + co) * K + ky) * K + kx], acc);
                            }
                        }
                    real v = acc + (real)0; /* -0 -> +0, as the kernel */
                    if (bias) v = v + bias[co];
                    out[(((size_t)n * CO + co) * HO + oy) * WO + ox] = v;
                }
}

/* out = act(conv(in, w) + bias) summed as the direct forward kernel
 * documents (convf.cu): for each output, acc = 0; ci, ky, kx ascending over
 * the taps inside the input, acc = fmaf(in, w, acc); then acc + 0 (-0 -> +0), + bias[co],
 * then act (VAE_CUDA_CONVT_*: 0 none, 1 ReLU, 2 leaky). in [N, CI, H, W], w
 * [CO, CI, K, K]. */
static void fwd_ref(real *out, const real *in, const real *w, const real *bias, int act,
                    real slope, int N, int CI, int H, int W, int CO, int HO, int WO, int K,
                    int S, int P) {
    for (int n = 0; n < N; n++)
        for (int co = 0; co < CO; co++)
            for (int oy = 0; oy < HO; oy++)
                for (int ox = 0; ox < WO; ox++) {
                    float acc = 0;
                    for (int ci = 0; ci < CI; ci++)
                        for (int ky = 0; ky < K; ky++) {
                            const int iy = oy * S - P + ky;
                            if (iy < 0 || iy >= H) continue;
                            for (int kx = 0; kx < K; kx++) {
                                const int ix = ox * S - P + kx;
                                if (ix < 0 || ix >= W) continue;
                                acc = fmaf(in[(((size_t)n * CI + ci) * H + iy) * W + ix],
                                           w[(((size_t)co * CI + ci) * K + ky) * K + kx], acc);
                            }
                        }
                    real v = acc + (real)0; /* -0 -> +0, as the kernel */
                    if (bias) v = v + bias[co];
                    if (act == 1) v = v > 0 ? v : (real)0;
                    else if (act == 2) v = v > 0 ? v : slope * v;
                    out[(((size_t)n * CO + co) * HO + oy) * WO + ox] = v;
                }
}

/* dw = the weight gradient of the convolution x [N, CI, H, W] -> dy [N, CO,
 * HO, WO], dw [CO, CI, K, K], summed as the direct kernel documents
 * (convw.cu): groups of G images; per group p = 0, then n, oy, ox ascending
 * over the taps inside x, p = fmaf(dy, x, p); p = p + 0 (-0 -> +0); dw = p_0 + p_1
 * + ... in order. */
static void wgrad_ref(real *dw, const real *x, const real *dy, int G, int N, int CI, int H,
                      int W, int CO, int HO, int WO, int K, int S, int P) {
    for (int co = 0; co < CO; co++)
        for (int ci = 0; ci < CI; ci++)
            for (int ky = 0; ky < K; ky++)
                for (int kx = 0; kx < K; kx++) {
                    float sum = 0;
                    for (int n0 = 0; n0 < N; n0 += G) {
                        float p = 0;
                        for (int n = n0; n < N && n < n0 + G; n++)
                            for (int oy = 0; oy < HO; oy++) {
                                const int iy = oy * S - P + ky;
                                if (iy < 0 || iy >= H) continue;
                                for (int ox = 0; ox < WO; ox++) {
                                    const int ix = ox * S - P + kx;
                                    if (ix < 0 || ix >= W) continue;
                                    p = fmaf(dy[(((size_t)n * CO + co) * HO + oy) * WO + ox],
                                             x[(((size_t)n * CI + ci) * H + iy) * W + ix], p);
                                }
                            }
                        p = p + 0.0f; /* -0 -> +0, as the kernel */
                        sum = n0 == 0 ? p : sum + p;
                    }
                    dw[(((size_t)co * CI + ci) * K + ky) * K + kx] = sum;
                }
}

/* got (n values, then the GUARD sentinels) bit for bit against want */
static void bits_check(const char *tag, const char *what, const real *got, const real *want,
                       size_t n) {
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < n; i++)
        if (memcmp(&got[i], &want[i], sizeof(real)) && !bad++) first = i;
    CHECK_MSG(bad == 0, "%s %s by the direct kernel: %zu of %zu outputs differ from the "
              "documented sum order (first at %zu: %.9g, expected %.9g)", tag, what, bad, n,
              first, bad ? (double)got[first] : 0.0, bad ? (double)want[first] : 0.0);
    CHECK_MSG(guard_intact(got, n), "%s %s by the direct kernel wrote past the end", tag, what);
}

/* The direct forward kernel (g_gpu_direct, VAE_CONV_DIRECT=1) bit for bit
 * against fwd_ref where it takes the shape: conv (cg) conv2d_forward with
 * the bias, conv2d_act_forward (leaky ReLU, slope 0.2; ReLU without bias);
 * convT (tg) its data gradient (convt2d_backward's din). in/w/b/dout the
 * host copies. */
static void fwd_direct_check(const char *tag, const vae_conv_geom *cg, const vae_convt_geom *tg,
                             int B, const real *hin, const real *hw, const real *hb,
                             const real *hd, size_t nin, size_t nw, size_t nb, size_t nd) {
    pool *pl = &g_pg_direct;
    vae_backend *be = g_gpu_direct;
    /* in conv terms */
    const int CI = cg ? cg->cin : tg->cout, H = cg ? cg->hin : tg->hout;
    const int W = cg ? cg->win : tg->wout, CO = cg ? cg->cout : tg->cin;
    const int HO = cg ? cg->hout : tg->hin, WO = cg ? cg->wout : tg->win;
    const int K = cg ? cg->k : tg->k, S = cg ? cg->stride : tg->stride;
    const int P = cg ? cg->pad : tg->pad;
    if (B <= 0 || !g_fwd_direct_supported(CI, H, W, CO, HO, WO, K, S, P)) return;
    const size_t n = (size_t)B * CO * HO * WO;
    real *want = test_xmalloc((n ? n : 1) * sizeof(real));
    real *gw = dev_put(pl, hw, nw, 0), *gb = dev_put(pl, hb, nb, 0);
    if (cg) {
        real *gin = dev_put(pl, hin, nin, 0);
        static const struct {
            int act; /* VAE_CUDA_CONVT_* codes, as fwd_ref */
            int bias;
        } v[] = {{0, 1}, {2, 1}, {1, 0}};
        for (int i = 0; i < 3; i++) {
            real *gy = dev_sentinel(pl, n, 0);
            if (v[i].act == 0)
                be->conv2d_forward(be, gy, gin, gw, v[i].bias ? gb : NULL, cg, B);
            else
                be->conv2d_act_forward(be, gy, gin, gw, v[i].bias ? gb : NULL, cg, B,
                                       v[i].act == 2 ? VAE_ACT_LEAKY_RELU : VAE_ACT_RELU, 0.2f);
            fwd_ref(want, hin, hw, v[i].bias ? hb : NULL, v[i].act, 0.2f, B, CI, H, W, CO, HO,
                    WO, K, S, P);
            real *got = fetch(be, gy, n);
            bits_check(tag, v[i].act == 0 ? "conv2d_forward" : "conv2d_act_forward", got, want,
                       n);
            free(got);
        }
    } else {
        real *gd = dev_put(pl, hd, nd, 0), *gin = dev_put(pl, hin, nin, 0);
        real *gx = dev_sentinel(pl, n, 0);
        be->convt2d_backward(be, gx, NULL, NULL, gd, gin, gw, tg, B);
        fwd_ref(want, hd, hw, NULL, 0, 0, B, CI, H, W, CO, HO, WO, K, S, P);
        real *got = fetch(be, gx, n);
        bits_check(tag, "convt2d_backward din", got, want, n);
        free(got);
    }
    free(want);
}

/* Sums of zeros: with inputs of 1e-30 and weights of 1e-20 (random signs)
 * every product underflows to a signed zero, so every output of the
 * convolution's forward, data gradient and weight gradient is +0 or -0. The
 * direct kernels (g_gpu_direct) multiply the zero border and the padding
 * rows too, which can turn a -0 sum into +0; their documented order ends in
 * "+ 0" so that the bits (the sign included) are those of the references.
 * Shapes: K 3, S 2, P 1: the forward tile kernel, the data gradient's small
 * kernel (2 channels), the weight gradient's rows padded to a 16-row slice;
 * K 5, S 1, P 2: the generic forward and data-gradient kernels. */
static void test_direct_signed_zero(int K, int S, int P) {
    const int B = 2, CI = 2, H = 6, W = 6, CO = 3;
    const int HO = (H + 2 * P - K) / S + 1, WO = (W + 2 * P - K) / S + 1;
    const vae_conv_geom g = {CI, H, W, CO, HO, WO, K, S, P};
    const size_t nin = (size_t)B * CI * H * W, nw = (size_t)CO * CI * K * K;
    const size_t nout = (size_t)B * CO * HO * WO;
    real *hin = test_xmalloc(nin * sizeof(real)), *hw = test_xmalloc(nw * sizeof(real));
    real *hd = test_xmalloc(nout * sizeof(real));
    uint32_t r = 12345;
    struct {
        real *h;
        size_t n;
        float mag;
    } fills[3] = {{hin, nin, 1e-30f}, {hw, nw, 1e-20f}, {hd, nout, 1e-30f}};
    for (int f = 0; f < 3; f++)
        for (size_t i = 0; i < fills[f].n; i++) {
            r = r * 1664525u + 1013904223u;
            fills[f].h[i] = (r >> 31) ? fills[f].mag : -fills[f].mag;
        }
    pool *pl = &g_pg_direct;
    vae_backend *be = g_gpu_direct;
    real *gin = dev_put(pl, hin, nin, 0), *gw = dev_put(pl, hw, nw, 0);
    real *gd = dev_put(pl, hd, nout, 0), *gy = dev_sentinel(pl, nout, 0);
    real *gx = dev_sentinel(pl, nin, 0), *gdw = dev_sentinel(pl, nw, 0);
    be->conv2d_forward(be, gy, gin, gw, NULL, &g, B);
    be->conv2d_backward(be, gx, gdw, NULL, gd, gin, gw, &g, B);
    char tag[96];
    snprintf(tag, sizeof tag, "signed zeros B=2 2x6x6 -> 3x%dx%d k%d s%d p%d", HO, WO, K, S, P);
    const size_t most = nin > nout ? (nin > nw ? nin : nw) : (nout > nw ? nout : nw);
    real *want = test_xmalloc(most * sizeof(real)), *got;
    /* the direct kernels take all three at both shapes: none may be skipped */
    CHECK_MSG(g_fwd_direct_supported(CI, H, W, CO, HO, WO, K, S, P) &&
                  g_direct_supported(CO, HO, WO, CI, H, W, K, S, P) &&
                  g_wgrad_supported(CI, H, W, CO, HO, WO, K, S, P),
              "%s: a direct kernel does not take the shape", tag);
    if (g_fwd_direct_supported(CI, H, W, CO, HO, WO, K, S, P)) {
        fwd_ref(want, hin, hw, NULL, 0, 0, B, CI, H, W, CO, HO, WO, K, S, P);
        got = fetch(be, gy, nout);
        bits_check(tag, "conv2d_forward", got, want, nout);
        free(got);
    }
    if (g_direct_supported(CO, HO, WO, CI, H, W, K, S, P)) {
        direct_ref(want, hd, hw, NULL, B, CO, HO, WO, CI, H, W, K, S, P);
        got = fetch(be, gx, nin);
        bits_check(tag, "din", got, want, nin);
        free(got);
    }
    if (g_wgrad_supported(CI, H, W, CO, HO, WO, K, S, P)) {
        wgrad_ref(want, hin, hd, g_wgrad_group(B, CI, CO, K, HO, WO), B, CI, H, W, CO, HO, WO, K,
                  S, P);
        got = fetch(be, gdw, nw);
        bits_check(tag, "dw", got, want, nw);
        free(got);
    }
    free(want);
    free(hin);
    free(hw);
    free(hd);
    pools_reset();
}

/* The convolution gradients on a second or third CUDA backend (`form`: the
 * GEMM form, VAE_CONV_GEMM=1, slices of 3 images; the direct kernel,
 * VAE_CONV_DIRECT=1) against the CPU's results, with the same tolerances:
 * conv (cg): din and dw; convT (tg): the forward (the data gradient's form)
 * and dw. exact: the data gradient / forward also bit for bit against
 * direct_ref where the direct kernel takes the shape. */
static void by_form(vae_backend *be, pool *pl, const char *form, int exact, const char *tag,
                    const vae_conv_geom *cg, const vae_convt_geom *tg, int B, pair in, pair w,
                    pair b, pair dout, pair out_or_din, pair dw, double tol_x, double tol_w) {
    real *hin = host_of(in.c, in.n), *hw = host_of(w.c, w.n), *hd = host_of(dout.c, dout.n);
    real *hb = host_of(b.c, b.n);
    real *gin = dev_put(pl, hin, in.n, 0), *gw = dev_put(pl, hw, w.n, 0);
    real *gd = dev_put(pl, hd, dout.n, 0), *gb = dev_put(pl, hb, b.n, 0);
    real *gx = dev_sentinel(pl, out_or_din.n, 0), *gdw = dev_sentinel(pl, dw.n, 0);
    if (cg) {
        be->conv2d_backward(be, gx, gdw, NULL, gd, gin, gw, cg, B);
    } else {
        be->convt2d_forward(be, gx, gin, gw, gb, tg, B);
        be->convt2d_backward(be, NULL, gdw, NULL, gd, gin, gw, tg, B);
    }
    /* in convT terms */
    const int CI = cg ? cg->cout : tg->cin, HI = cg ? cg->hout : tg->hin;
    const int WI = cg ? cg->wout : tg->win, CO = cg ? cg->cin : tg->cout;
    const int HO = cg ? cg->hin : tg->hout, WO = cg ? cg->win : tg->wout;
    const int K = cg ? cg->k : tg->k, S = cg ? cg->stride : tg->stride;
    const int P = cg ? cg->pad : tg->pad;
    if (exact && B > 0 && g_direct_supported(CI, HI, WI, CO, HO, WO, K, S, P)) {
        real *want = test_xmalloc((out_or_din.n ? out_or_din.n : 1) * sizeof(real));
        direct_ref(want, cg ? hd : hin, hw, cg ? NULL : hb, B, CI, HI, WI, CO, HO, WO, K, S, P);
        real *got = fetch(be, gx, out_or_din.n);
        size_t bad = 0, first = 0;
        for (size_t i = 0; i < out_or_din.n; i++)
            if (memcmp(&got[i], &want[i], sizeof(real)) && !bad++) first = i;
        CHECK_MSG(bad == 0, "%s %s %s: %zu of %zu outputs differ from the documented sum order "
                  "(first at %zu: %.9g, expected %.9g)", tag, cg ? "din" : "out", form, bad,
                  out_or_din.n, first, bad ? (double)got[first] : 0.0,
                  bad ? (double)want[first] : 0.0);
        free(got);
        free(want);
    }
    if (exact)
        fwd_direct_check(tag, cg, tg, B, hin, hw, hb, hd, in.n, w.n, b.n, dout.n);
    /* dw by the direct weight-gradient kernel, in conv terms (convT: x =
     * dout, dy = in), bit for bit against wgrad_ref */
    if (exact && B > 0 && g_wgrad_supported(CO, HO, WO, CI, HI, WI, K, S, P)) {
        real *want = test_xmalloc((dw.n ? dw.n : 1) * sizeof(real));
        wgrad_ref(want, cg ? hin : hd, cg ? hd : hin, g_wgrad_group(B, CO, CI, K, HI, WI), B, CO,
                  HO, WO, CI, HI, WI, K, S, P);
        real *got = fetch(be, gdw, dw.n);
        bits_check(tag, "dw", got, want, dw.n);
        free(got);
        free(want);
    }
    struct {
        const char *name;
        real *g;
        pair ref;
        double tol;
    } outs[] = {{cg ? "din" : "out", gx, out_or_din, tol_x}, {"dw", gdw, dw, tol_w}};
    for (int i = 0; i < 2; i++) {
        real *got = fetch(be, outs[i].g, outs[i].ref.n);
        real *want = host_of(outs[i].ref.c, outs[i].ref.n);
        const double e = test_norm_err(got, want, outs[i].ref.n);
        CHECK_MSG(e <= outs[i].tol, "%s %s %s (%s): error %.3g > %.1g", tag, outs[i].name, form,
                  be->name, e, outs[i].tol);
        CHECK_MSG(guard_intact(got, outs[i].ref.n), "%s %s %s wrote past the end", tag,
                  outs[i].name, form);
        free(got);
        free(want);
    }
    free(hin);
    free(hw);
    free(hd);
    free(hb);
}

/* The conv / convT + activation forward (conv2d_act_forward,
 * convt2d_act_forward) and an activation's backward with the bias gradient
 * of the layer below (act_backward_bias), for relu and a leaky relu: against
 * the CPU's (the unfused ops there), and bit for bit against the GPU's own
 * unfused sequence (conv + act_forward; act_backward, then the layer's
 * backward for db alone): the fused kernels apply the same per-element
 * expressions and sum in the same order. Also the backward in place (din ==
 * dout, as the model runs it). */
static void fused_act_check(const char *tag, const vae_conv_geom *cg, const vae_convt_geom *tg,
                            int B, pair in, pair w, pair b, pair dout, double tol_out,
                            double tol_db) {
    const int C = cg ? cg->cout : tg->cout;
    const int HW = cg ? cg->hout * cg->wout : tg->hout * tg->wout;
    const size_t n = (size_t)B * C * HW;
    static const struct {
        vae_act act;
        float slope;
    } acts[] = {{VAE_ACT_RELU, 0}, {VAE_ACT_LEAKY_RELU, 0.2f}};
    char what[200];
    for (int a = 0; a < 2; a++) {
        const vae_act act = acts[a].act;
        const real slope = (real)acts[a].slope;
        pair out = out_new(n), ref = out_new(n);
        if (cg) {
            g_cpu->conv2d_act_forward(g_cpu, out.c, in.c, w.c, b.c, cg, B, act, slope);
            g_gpu->conv2d_act_forward(g_gpu, out.g, in.g, w.g, b.g, cg, B, act, slope);
            g_gpu->conv2d_forward(g_gpu, ref.g, in.g, w.g, b.g, cg, B);
        } else {
            g_cpu->convt2d_act_forward(g_cpu, out.c, in.c, w.c, b.c, tg, B, act, slope);
            g_gpu->convt2d_act_forward(g_gpu, out.g, in.g, w.g, b.g, tg, B, act, slope);
            g_gpu->convt2d_forward(g_gpu, ref.g, in.g, w.g, b.g, tg, B);
        }
        if (n) g_gpu->act_forward(g_gpu, ref.g, ref.g, n, act, slope);
        snprintf(what, sizeof what, "%s + act %d: out", tag, (int)act);
        cmp(what, out, CMP_NORM, tol_out, 0);
        CHECK_MSG(gpu_bits_equal(out.g, ref.g, n * sizeof(real)),
                  "%s: fused forward differs from the layer then act_forward", what);

        pair din = out_new(n), db = out_new((size_t)C);
        g_cpu->act_backward_bias(g_cpu, din.c, db.c, dout.c, out.c, B, C, HW, act, slope);
        g_gpu->act_backward_bias(g_gpu, din.g, db.g, dout.g, out.g, B, C, HW, act, slope);
        snprintf(what, sizeof what, "%s act_backward_bias %d: din", tag, (int)act);
        cmp(what, din, CMP_REL, 0, 1);
        snprintf(what, sizeof what, "%s act_backward_bias %d: db", tag, (int)act);
        cmp(what, db, CMP_NORM, tol_db, 0);

        pair din2 = out_new(n), db2 = out_new((size_t)C);
        if (n) g_gpu->act_backward(g_gpu, din2.g, dout.g, out.g, n, act, slope);
        if (cg) g_gpu->conv2d_backward(g_gpu, NULL, NULL, db2.g, din2.g, in.g, w.g, cg, B);
        else g_gpu->convt2d_backward(g_gpu, NULL, NULL, db2.g, din2.g, in.g, w.g, tg, B);
        CHECK_MSG(gpu_bits_equal(din.g, din2.g, n * sizeof(real)),
                  "%s: din differs from act_backward's", what);
        CHECK_MSG(gpu_bits_equal(db.g, db2.g, (size_t)C * sizeof(real)),
                  "%s: db differs from the unfused bias gradient", what);

        /* in place over a copy of dout */
        real *hd = test_xmalloc((n ? n : 1) * sizeof(real));
        g_gpu->download(g_gpu, hd, dout.g, n * sizeof(real));
        pair d3 = in_guarded(hd, n), db3 = out_new((size_t)C);
        g_cpu->act_backward_bias(g_cpu, d3.c, db3.c, d3.c, out.c, B, C, HW, act, slope);
        g_gpu->act_backward_bias(g_gpu, d3.g, db3.g, d3.g, out.g, B, C, HW, act, slope);
        CHECK_MSG(gpu_bits_equal(d3.g, din.g, n * sizeof(real)) &&
                      gpu_bits_equal(db3.g, db.g, (size_t)C * sizeof(real)),
                  "%s: in place differs", what);
        cmp(what, d3, CMP_REL, 0, 1); /* and the guards */
        free(hd);
    }
}

static void test_conv(int B, int cin, int hin, int win, int cout, int k, int stride, int pad,
                      unsigned seed) {
    vae_conv_geom g = {cin, hin, win, cout, (hin + 2 * pad - k) / stride + 1,
                       (win + 2 * pad - k) / stride + 1, k, stride, pad};
    char what[160], tag[96];
    snprintf(tag, sizeof tag, "B=%d %dx%dx%d -> %dx%dx%d k%d s%d p%d", B, cin, hin, win, cout,
             g.hout, g.wout, k, stride, pad);
    size_t nin = (size_t)B * cin * hin * win, nout = (size_t)B * cout * g.hout * g.wout;
    size_t nw = (size_t)cout * cin * k * k;
    pair in = in_rand(nin, -1, 1, seed), w = in_rand(nw, -0.5, 0.5, seed + 1);
    pair b = in_rand((size_t)cout, -0.5, 0.5, seed + 2), dout = in_rand(nout, -1, 1, seed + 3);
    pair out = out_new(nout), din = out_new(nin), dw = out_new(nw), db = out_new((size_t)cout);

    g_cpu->conv2d_forward(g_cpu, out.c, in.c, w.c, b.c, &g, B);
    g_gpu->conv2d_forward(g_gpu, out.g, in.g, w.g, b.g, &g, B);
    snprintf(what, sizeof what, "conv2d_forward %s out", tag);
    cmp(what, out, CMP_NORM, gemm_tol((long)cin * k * k), 0);

    g_cpu->conv2d_backward(g_cpu, din.c, dw.c, db.c, dout.c, in.c, w.c, &g, B);
    g_gpu->conv2d_backward(g_gpu, din.g, dw.g, db.g, dout.g, in.g, w.g, &g, B);
    snprintf(what, sizeof what, "conv2d_backward %s din", tag);
    cmp(what, din, CMP_NORM, gemm_tol((long)cout * k * k), 0);
    snprintf(what, sizeof what, "conv2d_backward %s dw", tag);
    cmp(what, dw, CMP_NORM, gemm_tol((long)B * g.hout * g.wout), 0);
    snprintf(what, sizeof what, "conv2d_backward %s db", tag);
    cmp(what, db, CMP_NORM, gemm_tol((long)B * g.hout * g.wout), 0);
    snprintf(what, sizeof what, "conv2d_backward %s", tag);
    by_form(g_gpu_nolt, &g_pg_nolt, "in GEMM form", 0, what, &g, NULL, B, in, w, b, dout, din,
            dw, gemm_tol((long)cout * k * k), gemm_tol((long)B * g.hout * g.wout));
    by_form(g_gpu_direct, &g_pg_direct, "by the direct kernel", 1, what, &g, NULL, B, in, w, b,
            dout, din, dw, gemm_tol((long)cout * k * k), gemm_tol((long)B * g.hout * g.wout));
    fused_act_check(tag, &g, NULL, B, in, w, b, dout, gemm_tol((long)cin * k * k),
                    gemm_tol((long)B * g.hout * g.wout));

    pair dw2 = out_new(nw), db2 = out_new((size_t)cout);
    g_gpu->conv2d_backward(g_gpu, NULL, dw2.g, db2.g, dout.g, in.g, w.g, &g, B);
    CHECK_MSG(gpu_bits_equal(dw.g, dw2.g, nw * sizeof(real)), "conv2d dw not reproducible: %s",
              tag);
    CHECK_MSG(gpu_bits_equal(db.g, db2.g, (size_t)cout * sizeof(real)),
              "conv2d db not reproducible: %s", tag);
    pools_reset();
}

/* set_precision between runs of one shape: the backend keeps a plan per
 * math type (the conv plans' and the cuBLASLt plans' keys hold tf32). A
 * conv and a dense layer in fp32, then TF32 (10 mantissa bits), then fp32
 * again: the second fp32 run is the first's bits, and the TF32 run is
 * within TF32's error of the CPU's fp32 result (each input rounded by at
 * most 2^-11 relative, so a product by 2^-10; 2e-3 in norm). With
 * $VAE_TEST_TF32_DIFFERS=1 (the mock's cuDNN-only variants: its cuDNN and
 * cuBLAS round the inputs to TF32 under tensor-op math, and no direct
 * kernel stands in for cuDNN) the TF32 run must also differ from the fp32
 * one: a plan made for fp32 reused under TF32 (or the reverse) shows. */
static void test_precision_switch(void) {
    if (!g_gpu->set_precision) {
        printf("precision switch: SKIPPED (%s has no set_precision)\n", g_gpu->name);
        return;
    }
    const char *e = getenv("VAE_TEST_TF32_DIFFERS");
    const int differs = e && strcmp(e, "1") == 0;
    const vae_conv_geom g = {4, 9, 9, 5, 9, 9, 3, 1, 1};
    const int B = 3, I = 50, O = 9;
    const size_t nin = (size_t)B * 4 * 81, nout = (size_t)B * 5 * 81;
    for (int dense = 0; dense < 2; dense++) {
        const size_t ni = dense ? (size_t)B * I : nin, no = dense ? (size_t)B * O : nout;
        const size_t nw = dense ? (size_t)O * I : (size_t)5 * 4 * 9, nb = dense ? (size_t)O : 5;
        pair in = in_rand(ni, -1, 1, 1401), w = in_rand(nw, -0.5, 0.5, 1402);
        pair b = in_rand(nb, -0.5, 0.5, 1403);
        pair out[3] = {out_new(no), out_new(no), out_new(no)};
        static const int bits[3] = {23, 10, 23};
        for (int r = 0; r < 3; r++) {
            CHECK(g_gpu->set_precision(g_gpu, bits[r]) == VAE_OK);
            if (dense) g_gpu->dense_forward(g_gpu, out[r].g, in.g, w.g, b.g, B, I, O);
            else g_gpu->conv2d_forward(g_gpu, out[r].g, in.g, w.g, b.g, &g, B);
            if (dense) g_cpu->dense_forward(g_cpu, out[r].c, in.c, w.c, b.c, B, I, O);
            else g_cpu->conv2d_forward(g_cpu, out[r].c, in.c, w.c, b.c, &g, B);
        }
        const char *what = dense ? "precision switch, dense 50->9" : "precision switch, conv";
        char m[120];
        snprintf(m, sizeof m, "%s: fp32", what);
        cmp(m, out[0], CMP_NORM, gemm_tol(dense ? I : 36), 0);
        snprintf(m, sizeof m, "%s: tf32", what);
        cmp(m, out[1], CMP_NORM, 2e-3, 0);
        CHECK_MSG(gpu_bits_equal(out[0].g, out[2].g, no * sizeof(real)),
                  "%s: fp32 after tf32 differs from fp32 before", what);
        if (differs)
            CHECK_MSG(!gpu_bits_equal(out[0].g, out[1].g, no * sizeof(real)),
                      "%s: the tf32 run gives the fp32 run's bits (a plan of the other math "
                      "type?)", what);
    }
    CHECK(g_gpu->set_precision(g_gpu, 23) == VAE_OK);
    pools_reset();
}

static void test_convt(int B, int cin, int hin, int win, int cout, int k, int stride, int pad,
                       int out_pad, unsigned seed) {
    vae_convt_geom g = {cin, hin, win, cout, (hin - 1) * stride - 2 * pad + k + out_pad,
                        (win - 1) * stride - 2 * pad + k + out_pad, k, stride, pad, out_pad};
    char what[160], tag[96];
    snprintf(tag, sizeof tag, "B=%d %dx%dx%d -> %dx%dx%d k%d s%d p%d op%d", B, cin, hin, win,
             cout, g.hout, g.wout, k, stride, pad, out_pad);
    size_t nin = (size_t)B * cin * hin * win, nout = (size_t)B * cout * g.hout * g.wout;
    size_t nw = (size_t)cin * cout * k * k;
    pair in = in_rand(nin, -1, 1, seed), w = in_rand(nw, -0.5, 0.5, seed + 1);
    pair b = in_rand((size_t)cout, -0.5, 0.5, seed + 2), dout = in_rand(nout, -1, 1, seed + 3);
    pair out = out_new(nout), din = out_new(nin), dw = out_new(nw), db = out_new((size_t)cout);

    g_cpu->convt2d_forward(g_cpu, out.c, in.c, w.c, b.c, &g, B);
    g_gpu->convt2d_forward(g_gpu, out.g, in.g, w.g, b.g, &g, B);
    snprintf(what, sizeof what, "convt2d_forward %s out", tag);
    cmp(what, out, CMP_NORM, gemm_tol((long)cin * k * k), 0);

    g_cpu->convt2d_backward(g_cpu, din.c, dw.c, db.c, dout.c, in.c, w.c, &g, B);
    g_gpu->convt2d_backward(g_gpu, din.g, dw.g, db.g, dout.g, in.g, w.g, &g, B);
    snprintf(what, sizeof what, "convt2d_backward %s din", tag);
    cmp(what, din, CMP_NORM, gemm_tol((long)cout * k * k), 0);
    snprintf(what, sizeof what, "convt2d_backward %s dw", tag);
    cmp(what, dw, CMP_NORM, gemm_tol((long)B * hin * win), 0);
    snprintf(what, sizeof what, "convt2d_backward %s db", tag);
    cmp(what, db, CMP_NORM, gemm_tol((long)B * g.hout * g.wout), 0);
    snprintf(what, sizeof what, "convt2d %s", tag);
    by_form(g_gpu_nolt, &g_pg_nolt, "in GEMM form", 0, what, NULL, &g, B, in, w, b, dout, out,
            dw, gemm_tol((long)cin * k * k), gemm_tol((long)B * hin * win));
    by_form(g_gpu_direct, &g_pg_direct, "by the direct kernel", 1, what, NULL, &g, B, in, w, b,
            dout, out, dw, gemm_tol((long)cin * k * k), gemm_tol((long)B * hin * win));
    fused_act_check(tag, NULL, &g, B, in, w, b, dout, gemm_tol((long)cin * k * k),
                    gemm_tol((long)B * g.hout * g.wout));

    pair dw2 = out_new(nw);
    g_gpu->convt2d_backward(g_gpu, NULL, dw2.g, NULL, dout.g, in.g, w.g, &g, B);
    CHECK_MSG(gpu_bits_equal(dw.g, dw2.g, nw * sizeof(real)), "convt2d dw not reproducible: %s",
              tag);
    pools_reset();
}

/* -------------------------------------------------------- activations */

/* oin, oout: the input (and dout) and the outputs start that many elements
 * past an aligned address: a scalar head before the vectors where they are
 * alike, all scalar where they differ. */
static void test_act(size_t n, vae_act act, real slope, unsigned seed, size_t oin, size_t oout) {
    char what[96];
    snprintf(what, sizeof what, "act %d slope %g n=%zu at +%zu/+%zu", (int)act, (double)slope, n,
             oin, oout);
    real *h = test_xmalloc((n + oin) * sizeof(real));
    test_rand_fill_real(h, n + oin, -2, 2, seed);
    if (n > 3) h[oin] = 0, h[oin + 1] = -0.0f, h[oin + 2] = 1e-30f; /* the branch edges */
    pair in = shifted(in_data(h, n + oin), oin), dout = shifted(in_rand(n + oin, -1, 1, seed + 1), oin);
    pair out = shifted(out_new(n + oout), oout), din = shifted(out_new(n + oout), oout);
    g_cpu->act_forward(g_cpu, out.c, in.c, n, act, slope);
    g_gpu->act_forward(g_gpu, out.g, in.g, n, act, slope);
    cmp(what, out, CMP_REL, 0, 1);
    g_cpu->act_backward(g_cpu, din.c, dout.c, out.c, n, act, slope);
    g_gpu->act_backward(g_gpu, din.g, dout.g, out.g, n, act, slope);
    cmp(what, din, CMP_REL, 0, 1);
    if (oin != oout) { /* the in-place checks below need one offset */
        free(h);
        pools_reset();
        return;
    }
    /* in place: forward over the input, backward over dout */
    g_cpu->act_forward(g_cpu, in.c, in.c, n, act, slope);
    g_gpu->act_forward(g_gpu, in.g, in.g, n, act, slope);
    g_cpu->act_backward(g_cpu, dout.c, dout.c, in.c, n, act, slope);
    g_gpu->act_backward(g_gpu, dout.g, dout.g, in.g, n, act, slope);
    real *a = test_xmalloc(n * sizeof(real)), *b = test_xmalloc(n * sizeof(real));
    g_gpu->download(g_gpu, a, in.g, n * sizeof(real));
    g_gpu->download(g_gpu, b, out.g, n * sizeof(real));
    CHECK_MSG(memcmp(a, b, n * sizeof(real)) == 0, "%s: in-place forward differs", what);
    g_gpu->download(g_gpu, a, dout.g, n * sizeof(real));
    g_gpu->download(g_gpu, b, din.g, n * sizeof(real));
    CHECK_MSG(memcmp(a, b, n * sizeof(real)) == 0, "%s: in-place backward differs", what);
    free(a);
    free(b);
    free(h);
    pools_reset();
}

/* ------------------------------------------------------------- noise */

static void test_normal_fill(size_t n, uint64_t seed, uint32_t stream, uint64_t sub,
                             uint64_t first) {
    pair z = out_new(n);
    g_cpu->normal_fill(g_cpu, z.c, n, seed, stream, sub, first);
    g_gpu->normal_fill(g_gpu, z.g, n, seed, stream, sub, first);
    real *c = fetch(g_cpu, z.c, n), *g = fetch(g_gpu, z.g, n);
    int64_t worst = 0, worst_ref = 0;
    for (size_t i = 0; i < n; i++) {
        int64_t d = ulp_dist(g[i], c[i]);
        real ref = vae_normal_at(seed, stream, sub, first + i); /* host vae_math.h */
        int64_t dr = ulp_dist(g[i], ref);
        if (d > worst) worst = d;
        if (dr > worst_ref) worst_ref = dr;
    }
    CHECK_MSG(worst == 0, "normal_fill n=%zu first=%llu: %lld ulp from the CPU backend", n,
              (unsigned long long)first, (long long)worst);
    CHECK_MSG(worst_ref == 0, "normal_fill n=%zu first=%llu: %lld ulp from vae_normal_at", n,
              (unsigned long long)first, (long long)worst_ref);
    CHECK(guard_intact(g, n));
    free(c);
    free(g);
    pools_reset();
}

static void test_reparam(int B, int L, uint64_t seed, uint64_t sub) {
    char what[96];
    pair head = in_rand((size_t)B * 2 * L, -2, 2, (unsigned)(seed + sub));
    pair z = out_new((size_t)B * L);
    /* the noise is addressed by sub, not by the step (they differ in the
     * importance-weighted evaluation): a step number apart from sub */
    vae_step_vals hv = vae_step_vals_make((int64_t)sub + 3, 0, sub, B, (real)1 / (real)B, 1, 1);
    vals_pair sv = vals_in(&hv);
    g_cpu->reparam_forward(g_cpu, z.c, head.c, B, L, seed, VAE_RNG_TRAIN, sv.c);
    g_gpu->reparam_forward(g_gpu, z.g, head.g, B, L, seed, VAE_RNG_TRAIN, sv.g);
    snprintf(what, sizeof what, "reparam_forward B=%d L=%d z", B, L);
    cmp(what, z, CMP_REL, 1e-6, 1);
    pools_reset();
}

static void test_kl(int B, int L, int with_dz, real beta, unsigned seed) {
    char what[96];
    pair head = in_rand((size_t)B * 2 * L, -2, 2, seed);
    pair dz = in_rand((size_t)B * L, -1, 1, seed + 1);
    pair dhead = out_new((size_t)B * 2 * L), kl = out_new((size_t)B);
    uint64_t rs = 1234 + seed, sub = 77;
    vae_step_vals hv = vae_step_vals_make(5, 0, sub, B, beta, 1, 1); /* kl_scale = beta; step != sub */
    vals_pair sv = vals_in(&hv);
    g_cpu->kl_backward(g_cpu, dhead.c, kl.c, with_dz ? dz.c : NULL, head.c, B, L, rs,
                       VAE_RNG_TRAIN, sv.c);
    g_gpu->kl_backward(g_gpu, dhead.g, kl.g, with_dz ? dz.g : NULL, head.g, B, L, rs,
                       VAE_RNG_TRAIN, sv.g);
    snprintf(what, sizeof what, "kl_backward B=%d L=%d dz=%d dhead", B, L, with_dz);
    cmp(what, dhead, CMP_REL, 1e-6, 1);
    snprintf(what, sizeof what, "kl_backward B=%d L=%d dz=%d kl", B, L, with_dz);
    cmp(what, kl, CMP_REL, 1e-6, L);

    pair kl2 = out_new((size_t)B);
    pair dhead2 = out_new((size_t)B * 2 * L);
    g_gpu->kl_backward(g_gpu, dhead2.g, kl2.g, with_dz ? dz.g : NULL, head.g, B, L, rs,
                       VAE_RNG_TRAIN, sv.g);
    CHECK_MSG(gpu_bits_equal(kl.g, kl2.g, (size_t)B * sizeof(real)), "kl not reproducible");
    pools_reset();
}

static void test_log_q(int B, int L, unsigned seed) {
    char what[96];
    pair head = in_rand((size_t)B * 2 * L, -2, 2, seed);
    pair z = in_rand((size_t)B * L, -3, 3, seed + 1);
    pair out = out_new((size_t)B);
    vae_step_vals hv = vae_step_vals_make(0, 0, 5, B, 0, 1, 1); /* sub = 5 */
    vals_pair sv = vals_in(&hv);
    g_cpu->log_q_minus_log_p(g_cpu, out.c, z.c, head.c, B, L, 99, VAE_RNG_EVAL, sv.c);
    g_gpu->log_q_minus_log_p(g_gpu, out.g, z.g, head.g, B, L, 99, VAE_RNG_EVAL, sv.g);
    snprintf(what, sizeof what, "log_q_minus_log_p B=%d L=%d", B, L);
    cmp(what, out, CMP_REL, 1e-6, L);
    pools_reset();
}

/* ------------------------------------------------------------ losses */

static void test_recon(int B, int D, vae_likelihood lik, int with_grad, unsigned seed) {
    char what[96];
    real sigma = (real)0.3, gs = (real)1 / (real)B;
    pair out = lik == VAE_LIK_BERNOULLI ? in_rand((size_t)B * D, -8, 8, seed)
                                        : in_rand((size_t)B * D, -0.5, 1.5, seed);
    pair x = in_rand((size_t)B * D, 0, 1, seed + 1);
    pair dout = out_new((size_t)B * D), recon = out_new((size_t)B);
    g_cpu->recon_loss(g_cpu, with_grad ? dout.c : NULL, recon.c, out.c, x.c, B, D, lik, sigma, gs);
    g_gpu->recon_loss(g_gpu, with_grad ? dout.g : NULL, recon.g, out.g, x.g, B, D, lik, sigma, gs);
    snprintf(what, sizeof what, "recon_loss lik=%d B=%d D=%d recon", (int)lik, B, D);
    cmp(what, recon, CMP_REL, 1e-6, D);
    if (with_grad) {
        snprintf(what, sizeof what, "recon_loss lik=%d B=%d D=%d dout", (int)lik, B, D);
        cmp(what, dout, CMP_NORM, 1e-6, 0);
    } else {
        real *g = fetch(g_gpu, dout.g, dout.n);
        CHECK_MSG(guard_intact(g, 0), "recon_loss wrote dout although it was NULL");
        free(g);
    }
    pools_reset();
}

/* ------------------------------------------------------ reductions */

/* off: v starts that many elements past an aligned address (the kernels
 * then load scalars; a vector load there would fault on a GPU, and UBSan
 * reports it in the emulator) */
static void test_reduce(size_t n, unsigned seed, size_t off) {
    pair v = shifted(in_rand(n + off, -1, 1, seed), off);
    double *ac = palloc(&g_pc, 4 * sizeof(double)), *ag = palloc(&g_pg, 4 * sizeof(double));
    /* [0], [1]: sum_into from 0.25; [2], [3]: sumsq over garbage */
    double init[4] = {0.25, 0.25, 12345.0, 12345.0}, rc[4], rg[4];
    g_cpu->upload(g_cpu, ac, init, sizeof init);
    g_gpu->upload(g_gpu, ag, init, sizeof init);
    g_cpu->sum_into(g_cpu, ac, v.c, n);
    g_gpu->sum_into(g_gpu, ag, v.g, n);
    g_gpu->sum_into(g_gpu, ag + 1, v.g, n);
    g_cpu->sumsq(g_cpu, ac + 2, v.c, n);
    g_gpu->sumsq(g_gpu, ag + 2, v.g, n);
    g_gpu->sumsq(g_gpu, ag + 3, v.g, n);
    g_cpu->download(g_cpu, rc, ac, sizeof rc);
    g_gpu->download(g_gpu, rg, ag, sizeof rg);
    CHECK_MSG(fabs(rg[0] - rc[0]) <= 1e-9 * fabs(rc[0]) + 1e-12, "sum_into n=%zu: %.17g vs %.17g",
              n, rg[0], rc[0]);
    CHECK_MSG(fabs(rg[2] - rc[2]) <= 1e-9 * fabs(rc[2]) + 1e-12, "sumsq n=%zu: %.17g vs %.17g", n,
              rg[2], rc[2]);
    CHECK_MSG(memcmp(&rg[0], &rg[1], sizeof(double)) == 0, "sum_into n=%zu not bit-reproducible",
              n);
    CHECK_MSG(memcmp(&rg[2], &rg[3], sizeof(double)) == 0, "sumsq n=%zu not bit-reproducible", n);
    pools_reset();
}

/* sum2_into (the step's two loss sums in one launch on CUDA): the bits of
 * sum_into(acc0, v0) then sum_into(acc1, v1) on the same backend, and the
 * CPU's sums within 1e-9; n0, n1 around the one-block limit (1024
 * elements: one launch below it, two sums above), v0 at +off0 elements
 * past an aligned address (its scalar loads), v1 aligned. */
static void test_sum2(size_t n0, size_t n1, size_t off0, unsigned seed) {
    pair v0 = shifted(in_rand(n0 + off0, -1, 1, seed), off0), v1 = in_rand(n1, -1, 1, seed + 1);
    double *ac = palloc(&g_pc, 4 * sizeof(double)), *ag = palloc(&g_pg, 4 * sizeof(double));
    const double init[4] = {0.25, -3.0, 0.25, -3.0};
    double rc[4], rg[4];
    g_cpu->upload(g_cpu, ac, init, sizeof init);
    g_gpu->upload(g_gpu, ag, init, sizeof init);
    vae_sum2_into(g_cpu, ac, v0.c, n0, ac + 1, v1.c, n1);
    vae_sum2_into(g_gpu, ag, v0.g, n0, ag + 1, v1.g, n1);
    g_gpu->sum_into(g_gpu, ag + 2, v0.g, n0);
    g_gpu->sum_into(g_gpu, ag + 3, v1.g, n1);
    g_cpu->download(g_cpu, rc, ac, sizeof rc);
    g_gpu->download(g_gpu, rg, ag, sizeof rg);
    for (int k = 0; k < 2; k++) {
        CHECK_MSG(fabs(rg[k] - rc[k]) <= 1e-9 * fabs(rc[k]) + 1e-12,
                  "sum2_into n=%zu,%zu (+%zu) sum %d: %.17g vs the CPU's %.17g", n0, n1, off0, k,
                  rg[k], rc[k]);
        CHECK_MSG(memcmp(&rg[k], &rg[k + 2], sizeof(double)) == 0,
                  "sum2_into n=%zu,%zu (+%zu) sum %d: %.17g, sum_into gives %.17g", n0, n1, off0,
                  k, rg[k], rg[k + 2]);
    }
    pools_reset();
}

/* -------------------------------------------------------------- Adam */

/* off: the four buffers start that many elements past an aligned address
 * (the kernel's scalar head) */
static void test_adam(size_t n, real wd, int decoupled, real clip, double gnorm2, unsigned seed,
                      size_t off) {
    char what[128];
    snprintf(what, sizeof what, "adam n=%zu wd=%g decoupled=%d clip=%g gnorm2=%g at +%zu", n,
             (double)wd, decoupled, (double)clip, gnorm2, off);
    vae_adam_hp hp = {(real)1e-3, (real)0.9, (real)0.999, (real)1e-8, wd, decoupled};
    /* step 2 (t = 3), a learning-rate schedule's factor 0.37 on odd seeds and
     * with AdamW's decay (whose p *= 1 - lr wd takes the scaled rate) */
    vae_step_vals hv =
        vae_step_vals_make(2, 0, 2, 1, 1, (real)(1 - pow(0.9, 3)), (real)(1 - pow(0.999, 3)));
    if (seed % 2 || decoupled) hv.lr_scale = (real)0.37;
    vals_pair sv = vals_in(&hv);
    real *h0 = test_xmalloc((n + off) * sizeof(real));
    test_rand_fill_real(h0, n + off, -1, 1, seed);
    /* p, m, v are compared by cmp(), which reads n + GUARD elements */
    pair p = shifted(in_guarded(h0, n + off), off);
    pair g = shifted(in_rand(n + off, -1, 1, seed + 1), off);
    pair m = shifted(in_rand_guarded(n + off, -0.1, 0.1, seed + 2), off);
    pair v = shifted(in_rand_guarded(n + off, 0, 0.01, seed + 3), off);
    int zero2[2] = {0, 0}, badc[2], badg[2];
    int *bc = palloc(&g_pc, sizeof zero2), *bg = palloc(&g_pg, sizeof zero2);
    double *gc = palloc(&g_pc, sizeof(double)), *gg = palloc(&g_pg, sizeof(double));
    g_cpu->upload(g_cpu, bc, zero2, sizeof zero2);
    g_gpu->upload(g_gpu, bg, zero2, sizeof zero2);
    g_cpu->upload(g_cpu, gc, &gnorm2, sizeof gnorm2);
    g_gpu->upload(g_gpu, gg, &gnorm2, sizeof gnorm2);
    g_cpu->adam_step(g_cpu, p.c, g.c, m.c, v.c, n, &hp, clip, gc, bc, sv.c);
    g_gpu->adam_step(g_gpu, p.g, g.g, m.g, v.g, n, &hp, clip, gg, bg, sv.g);
    g_cpu->download(g_cpu, badc, bc, sizeof badc);
    g_gpu->download(g_gpu, badg, bg, sizeof badg);
    int finite = isfinite(gnorm2);
    CHECK_MSG(badg[0] == !finite && badg[1] == 0, "%s: bad flag %d (CPU %d)", what, badg[0],
              badc[0]);
    if (!finite) { /* skipped: the parameters are untouched, bit for bit */
        real *a = test_xmalloc(n * sizeof(real));
        g_gpu->download(g_gpu, a, p.g, n * sizeof(real));
        CHECK_MSG(memcmp(a, h0 + off, n * sizeof(real)) == 0, "%s: parameters changed", what);
        free(a);
    }
    char w2[160];
    snprintf(w2, sizeof w2, "%s p", what);
    cmp(w2, p, CMP_REL, 1e-6, 1);
    snprintf(w2, sizeof w2, "%s m", what);
    cmp(w2, m, CMP_REL, 1e-6, 0.1);
    snprintf(w2, sizeof w2, "%s v", what);
    cmp(w2, v, CMP_REL, 1e-6, 1e-12);
    free(h0);
    pools_reset();
}

/* ------------------------------------------------ step bookkeeping */

/* adam_step with the HALTED flag set: nothing written on either backend,
 * also with a finite norm (parameters, moments and the flag word). */
static void test_adam_halted(size_t n, double gnorm2, unsigned seed) {
    vae_adam_hp hp = {(real)1e-3, (real)0.9, (real)0.999, (real)1e-8, 0, 0};
    vae_step_vals hsv = vae_step_vals_make(0, 0, 0, 1, 1, (real)0.1, (real)0.001);
    vals_pair sv = vals_in(&hsv);
    real *h0 = test_xmalloc(n * sizeof(real));
    test_rand_fill_real(h0, n, -1, 1, seed);
    pair p = in_data(h0, n), m = in_data(h0, n), v = in_rand(n, 0, 0.01, seed + 1);
    pair g = in_rand(n, -1, 1, seed + 2);
    real *hv = test_xmalloc(n * sizeof(real));
    g_gpu->download(g_gpu, hv, v.g, n * sizeof(real));
    int flags[2] = {VAE_STEP_HALTED, 0}, fc[2], fg[2];
    int *bc = palloc(&g_pc, sizeof flags), *bg = palloc(&g_pg, sizeof flags);
    double *gc = palloc(&g_pc, sizeof(double)), *gg = palloc(&g_pg, sizeof(double));
    g_cpu->upload(g_cpu, bc, flags, sizeof flags);
    g_gpu->upload(g_gpu, bg, flags, sizeof flags);
    g_cpu->upload(g_cpu, gc, &gnorm2, sizeof gnorm2);
    g_gpu->upload(g_gpu, gg, &gnorm2, sizeof gnorm2);
    g_cpu->adam_step(g_cpu, p.c, g.c, m.c, v.c, n, &hp, 0, gc, bc, sv.c);
    g_gpu->adam_step(g_gpu, p.g, g.g, m.g, v.g, n, &hp, 0, gg, bg, sv.g);
    g_cpu->download(g_cpu, fc, bc, sizeof fc);
    g_gpu->download(g_gpu, fg, bg, sizeof fg);
    CHECK_MSG(fc[0] == VAE_STEP_HALTED && fg[0] == VAE_STEP_HALTED && fg[1] == 0,
              "adam halted gnorm2=%g: flag word %d (CPU %d)", gnorm2, fg[0], fc[0]);
    real *a = test_xmalloc(n * sizeof(real));
    const pair *bufs[3] = {&p, &m, &v};
    const real *want[3] = {h0, h0, hv};
    for (int k = 0; k < 3; k++) {
        g_gpu->download(g_gpu, a, bufs[k]->g, n * sizeof(real));
        CHECK_MSG(memcmp(a, want[k], n * sizeof(real)) == 0, "adam halted gnorm2=%g: CUDA changed %s",
                  gnorm2, k == 0 ? "p" : k == 1 ? "m" : "v");
        g_cpu->download(g_cpu, a, bufs[k]->c, n * sizeof(real));
        CHECK_MSG(memcmp(a, want[k], n * sizeof(real)) == 0, "adam halted gnorm2=%g: CPU changed %s",
                  gnorm2, k == 0 ? "p" : k == 1 ? "m" : "v");
    }
    free(a);
    free(hv);
    free(h0);
    pools_reset();
}

/* step_commit over a scripted run of good and bad steps: the two backends'
 * blocks must be bit-equal after every step (the same double additions in
 * the same order, the same ints), and step_snapshot must copy them whole. */
static void test_step_commit(int max_bad) {
    double *ac = palloc(&g_pc, VAE_COMMIT_ACC_N * sizeof(double));
    double *ag = palloc(&g_pg, VAE_COMMIT_ACC_N * sizeof(double));
    int *sc = palloc(&g_pc, VAE_STEP_STATE_N * sizeof(int));
    int *sg = palloc(&g_pg, VAE_STEP_STATE_N * sizeof(int));
    double *snap_a = palloc(&g_pg, VAE_COMMIT_ACC_N * sizeof(double));
    int *snap_s = palloc(&g_pg, VAE_STEP_STATE_N * sizeof(int));
    vae_step_vals hv0 = vae_step_vals_make(0, 0, 0, 1, 1, 1, 1);
    vals_pair sv = vals_in(&hv0); /* rewritten before every commit */
    double a0[VAE_COMMIT_ACC_N] = {0, 0, 7.5, -1, 2, 0.125, 3.25, 100}; /* 2..4: caller's */
    int s0[VAE_STEP_STATE_N] = {0};
    g_cpu->upload(g_cpu, ac, a0, sizeof a0);
    g_gpu->upload(g_gpu, ag, a0, sizeof a0);
    g_cpu->upload(g_cpu, sc, s0, sizeof s0);
    g_gpu->upload(g_gpu, sg, s0, sizeof s0);
    /* steps: 1 = bad; indices beyond 2^32 for the two-word encoding */
    static const int bad[] = {0, 1, 0, 0, 1, 0, 1, 1, 0, 1, 0};
    const int64_t s_first = ((int64_t)1 << 32) - 3;
    double ha[VAE_COMMIT_ACC_N], hg[VAE_COMMIT_ACC_N];
    int hsc[VAE_STEP_STATE_N], hsg[VAE_STEP_STATE_N];
    for (int k = 0; k < (int)(sizeof bad / sizeof bad[0]); k++) {
        const int64_t s = s_first + k;
        /* this step's sums, as forward_backward leaves them (NaN when bad) */
        g_cpu->download(g_cpu, ha, ac, sizeof ha);
        g_gpu->download(g_gpu, hg, ag, sizeof hg);
        ha[VAE_COMMIT_STEP_RECON] = hg[VAE_COMMIT_STEP_RECON] = bad[k] ? NAN : 100.0 / (k + 3);
        ha[VAE_COMMIT_STEP_KL] = hg[VAE_COMMIT_STEP_KL] = 1.0 / (k + 7);
        g_cpu->upload(g_cpu, ac, ha, sizeof ha);
        g_gpu->upload(g_gpu, ag, hg, sizeof hg);
        if (bad[k]) { /* adam_step's flag (unless halted: then it writes nothing) */
            g_cpu->download(g_cpu, hsc, sc, sizeof hsc);
            g_gpu->download(g_gpu, hsg, sg, sizeof hsg);
            if (!(hsc[VAE_STEP_FLAGS] & VAE_STEP_HALTED)) hsc[VAE_STEP_FLAGS] = VAE_STEP_BAD;
            if (!(hsg[VAE_STEP_FLAGS] & VAE_STEP_HALTED)) hsg[VAE_STEP_FLAGS] = VAE_STEP_BAD;
            g_cpu->upload(g_cpu, sc, hsc, sizeof hsc);
            g_gpu->upload(g_gpu, sg, hsg, sizeof hsg);
        }
        /* the step's index and image count, from its block */
        vae_step_vals hv = vae_step_vals_make(s, 0, (uint64_t)s, 50 + k, 1, 1, 1);
        g_cpu->upload(g_cpu, sv.c, &hv, sizeof hv);
        g_gpu->upload(g_gpu, sv.g, &hv, sizeof hv);
        g_cpu->step_commit(g_cpu, ac, sc, sv.c, max_bad);
        g_gpu->step_commit(g_gpu, ag, sg, sv.g, max_bad);
        g_cpu->download(g_cpu, ha, ac, sizeof ha);
        g_gpu->download(g_gpu, hg, ag, sizeof hg);
        g_cpu->download(g_cpu, hsc, sc, sizeof hsc);
        g_gpu->download(g_gpu, hsg, sg, sizeof hsg);
        CHECK_MSG(memcmp(ha, hg, sizeof ha) == 0 && memcmp(hsc, hsg, sizeof hsc) == 0,
                  "step_commit max_bad=%d step %d: CUDA recon %.17g images %g nbad %d flags %d, "
                  "CPU %.17g %g %d %d",
                  max_bad, k, hg[VAE_COMMIT_RECON], hg[VAE_COMMIT_IMAGES], hsg[VAE_STEP_NBAD],
                  hsg[VAE_STEP_FLAGS], ha[VAE_COMMIT_RECON], ha[VAE_COMMIT_IMAGES],
                  hsc[VAE_STEP_NBAD], hsc[VAE_STEP_FLAGS]);
        CHECK(hg[VAE_COMMIT_STEP_RECON] == 0 && hg[VAE_COMMIT_STEP_KL] == 0);
        CHECK((hsg[VAE_STEP_FLAGS] & VAE_STEP_BAD) == 0);
    }
    /* the script has 5 bad steps: max_bad < 5 halts at bad step max_bad + 1 */
    CHECK(hsg[VAE_STEP_NBAD] == (max_bad < 5 ? max_bad + 1 : 5));
    CHECK(!!(hsg[VAE_STEP_FLAGS] & VAE_STEP_HALTED) == (max_bad < 5));
    CHECK(vae_step_state_i64(hsg + VAE_STEP_FIRST_BAD) == s_first + 1);
    CHECK(hg[VAE_COMMIT_RECON] == hg[VAE_COMMIT_RECON] && hg[2] == 7.5 && hg[3] == -1 && hg[4] == 2);
    /* the snapshot, downloaded asynchronously as the trainer does */
    g_gpu->step_snapshot(g_gpu, snap_a, snap_s, ag, sg);
    double pa[VAE_COMMIT_ACC_N];
    int ps[VAE_STEP_STATE_N];
    if (g_gpu->download_async && g_gpu->copy_wait) {
        g_gpu->download_async(g_gpu, pa, snap_a, sizeof pa);
        g_gpu->download_async(g_gpu, ps, snap_s, sizeof ps);
        g_gpu->copy_wait(g_gpu);
    } else {
        g_gpu->download(g_gpu, pa, snap_a, sizeof pa);
        g_gpu->download(g_gpu, ps, snap_s, sizeof ps);
    }
    CHECK_MSG(memcmp(pa, hg, sizeof pa) == 0 && memcmp(ps, hsg, sizeof ps) == 0,
              "step_snapshot max_bad=%d: copy differs", max_bad);
    pools_reset();
}

/* step_begin from the same `next` on both backends, `count` times; every
 * field compared after every call (tolerances: header comment). The start
 * block has nonsense in every field but `next`, so a field step_begin
 * forgets to write shows. */
static void test_step_begin(const vae_step_plan *plan, int64_t next, int count) {
    char what[160];
    snprintf(what, sizeof what,
             "step_begin n=%lld B=%d warmup=%lld beta=%g beta1=%g beta2=%g from %lld",
             (long long)plan->n, plan->batch, (long long)plan->warmup, plan->beta, plan->beta1,
             plan->beta2, (long long)next);
    if (!g_cpu->step_begin || !g_gpu->step_begin) {
        CHECK_MSG(0, "%s: step_begin missing (CPU %p, CUDA %p)", what,
                  (void *)g_cpu->step_begin, (void *)g_gpu->step_begin);
        return;
    }
    vae_step_vals h0;
    memset(&h0, 0x5a, sizeof h0);
    h0.next = next;
    h0.kl_scale = h0.bc1 = h0.bc2 = h0.lr_scale = (real)NAN;
    vals_pair sv = vals_in(&h0);
    int64_t worst = 0;
    for (int k = 0; k < count; k++) {
        const int64_t s = next + k;
        vae_step_vals c, g, ref;
        g_cpu->step_begin(g_cpu, sv.c, plan);
        g_gpu->step_begin(g_gpu, sv.g, plan);
        g_cpu->download(g_cpu, &c, sv.c, sizeof c);
        g_gpu->download(g_gpu, &g, sv.g, sizeof g);
        vae_step_vals_at(&ref, plan, s);
        CHECK_MSG(g.step == c.step && g.next == c.next && g.row0 == c.row0 && g.sub == c.sub &&
                      g.rows == c.rows,
                  "%s, step %lld: CUDA step %lld next %lld row0 %lld sub %llu rows %d, CPU %lld "
                  "%lld %lld %llu %d",
                  what, (long long)s, (long long)g.step, (long long)g.next, (long long)g.row0,
                  (unsigned long long)g.sub, (int)g.rows, (long long)c.step, (long long)c.next,
                  (long long)c.row0, (unsigned long long)c.sub, (int)c.rows);
        CHECK_MSG(c.step == ref.step && c.next == ref.next && c.row0 == ref.row0 &&
                      c.sub == ref.sub && c.rows == ref.rows && c.step == s && c.next == s + 1 &&
                      memcmp(&c.kl_scale, &ref.kl_scale, sizeof(real)) == 0 &&
                      memcmp(&c.bc1, &ref.bc1, sizeof(real)) == 0 &&
                      memcmp(&c.bc2, &ref.bc2, sizeof(real)) == 0 &&
                      memcmp(&c.lr_scale, &ref.lr_scale, sizeof(real)) == 0,
                  "%s, step %lld: the CPU's block is not vae_step_vals_at's", what, (long long)s);
        const real gf[4] = {g.kl_scale, g.bc1, g.bc2, g.lr_scale},
                   cf[4] = {c.kl_scale, c.bc1, c.bc2, c.lr_scale};
        static const char *const names[4] = {"kl_scale", "bc1", "bc2", "lr_scale"};
        for (int f = 0; f < 4; f++) {
            int64_t d = ulp_dist(gf[f], cf[f]);
            CHECK_MSG(d == 0 && gf[f] == gf[f], "%s, step %lld: %s CUDA %.9g, CPU %.9g (%lld ulp)",
                      what, (long long)s, names[f], (double)gf[f], (double)cf[f], (long long)d);
            if (d > worst) worst = d;
        }
    }
    printf("%s, %d steps: kl_scale/bc1/bc2/lr_scale at most %lld ulp from the CPU\n", what, count,
           (long long)worst);
    pools_reset();
}

/* -------------------------------------------------------------- data */

/* The batch is rows row0 .. row0 + B - 1 of the index array, row0 read from
 * the step's block; the rows before it hold other valid images, so an op
 * that ignored row0 would gather a wrong (not a crashing) batch, which the
 * check against the host's own gather catches on both backends. */
static void test_gather(int N, int B, int D, int row0, unsigned seed) {
    char what[96];
    size_t nd = (size_t)N * D, ni = (size_t)row0 + (size_t)B;
    uint8_t *h = test_xmalloc(nd);
    for (size_t i = 0; i < nd; i++) h[i] = (uint8_t)((i * 2654435761u + seed) >> 7);
    h[0] = 0, h[nd - 1] = 255;
    int32_t *idx = test_xmalloc(ni * sizeof(int32_t));
    for (size_t r = 0; r < ni; r++) idx[r] = (int32_t)(((unsigned)r * 7919u + seed) % (unsigned)N);
    idx[row0] = N - 1; /* the last image */
    if (B > 2) idx[row0 + 2] = idx[row0 + 1];
    uint8_t *dc = palloc(&g_pc, nd), *dg = palloc(&g_pg, nd);
    int32_t *ic = palloc(&g_pc, ni * sizeof(int32_t));
    int32_t *ig = palloc(&g_pg, ni * sizeof(int32_t));
    g_cpu->upload(g_cpu, dc, h, nd);
    g_gpu->upload(g_gpu, dg, h, nd);
    g_cpu->upload(g_cpu, ic, idx, ni * sizeof(int32_t));
    g_gpu->upload(g_gpu, ig, idx, ni * sizeof(int32_t));
    vae_step_vals hv = vae_step_vals_make(1, row0, 1, B, 1, 1, 1);
    vals_pair sv = vals_in(&hv);
    pair x = out_new((size_t)B * D);
    g_cpu->gather_batch(g_cpu, x.c, dc, ic, sv.c, B, D);
    g_gpu->gather_batch(g_gpu, x.g, dg, ig, sv.g, B, D);
    snprintf(what, sizeof what, "gather_batch N=%d B=%d D=%d row0=%d", N, B, D, row0);
    cmp(what, x, CMP_REL, 1e-6, 1e-6);
    real *c = fetch(g_cpu, x.c, x.n), *g = fetch(g_gpu, x.g, x.n);
    size_t wrong_c = 0, wrong_g = 0;
    for (size_t i = 0; i < x.n; i++) {
        size_t b = i / (size_t)D, d = i % (size_t)D;
        real want = (real)h[(size_t)idx[(size_t)row0 + b] * (size_t)D + d] / (real)255;
        wrong_c += c[i] != want;
        wrong_g += g[i] != want;
    }
    CHECK_MSG(wrong_c == 0 && wrong_g == 0,
              "%s: %zu CPU and %zu CUDA values differ from the host's gather", what, wrong_c,
              wrong_g);
    free(c);
    free(g);
    free(h);
    free(idx);
    pools_reset();
}

/* off: the pixels and the decoder's output start that many elements past
 * an aligned address (the kernel's scalar head) */
static void test_to_u8(size_t n, vae_likelihood lik, unsigned seed, size_t off) {
    real *h = test_xmalloc((n + off) * sizeof(real));
    test_rand_fill_real(h, n + off, lik == VAE_LIK_BERNOULLI ? -8 : -0.2,
                        lik == VAE_LIK_BERNOULLI ? 8 : 1.2, seed);
    if (n >= 6) {
        real *e = h + off;
        e[0] = NAN, e[1] = INFINITY, e[2] = -INFINITY, e[3] = 0;
        e[4] = (real)(0.5 / 255), e[5] = 1;
    }
    pair out = shifted(in_data(h, n + off), off);
    uint8_t *pc = (uint8_t *)palloc(&g_pc, n + off) + off, *pg = (uint8_t *)palloc(&g_pg, n + off) + off;
    g_cpu->to_u8(g_cpu, pc, out.c, n, lik);
    g_gpu->to_u8(g_gpu, pg, out.g, n, lik);
    uint8_t *a = test_xmalloc(n), *b = test_xmalloc(n);
    g_cpu->download(g_cpu, a, pc, n);
    g_gpu->download(g_gpu, b, pg, n);
    int worst = 0;
    for (size_t i = 0; i < n; i++) {
        int d = abs((int)a[i] - (int)b[i]);
        if (d > worst) worst = d;
    }
    /* 1 step allowed: an expf ulp can move p*255 + 0.5 across an integer */
    CHECK_MSG(worst <= 1, "to_u8 lik=%d n=%zu at +%zu: off by %d", (int)lik, n, off, worst);
    if (n >= 6) CHECK(b[0] == 0 && b[3] == a[3] && b[5] == a[5]);
    free(a);
    free(b);
    free(h);
    pools_reset();
}

/* ------------------------------------------------------------ graphs */

/* One training-step-shaped piece of work on one set of buffers: open the
 * step, gather its batch, use the batch as the gradient of B*D parameters
 * (||g||^2 into acc[2], a caller's slot, then Adam with clipping and the
 * step's bias corrections), commit. Everything that changes from step to
 * step is in sv, so the captured version must replay it exactly. */
typedef struct {
    vae_backend *be;
    const vae_step_plan *plan;
    vae_step_vals *sv;
    const uint8_t *data; /* [N, D] */
    const int32_t *idx;  /* [steps per epoch * B]: the epoch's order, padded */
    real *x, *p, *m, *v; /* [B, D] */
    double *acc;         /* [VAE_COMMIT_ACC_N] */
    int *state;          /* [VAE_STEP_STATE_N] */
    int B, D;
} graph_work;

static void graph_work_run(void *arg) {
    const graph_work *w = arg;
    vae_backend *be = w->be;
    const vae_adam_hp hp = {(real)1e-2, (real)w->plan->beta1, (real)w->plan->beta2, (real)1e-8,
                            (real)0.01, 1};
    const size_t n = (size_t)w->B * w->D;
    be->step_begin(be, w->sv, w->plan);
    be->gather_batch(be, w->x, w->data, w->idx, w->sv, w->B, w->D);
    be->sumsq(be, w->acc + 2, w->x, n);
    be->adam_step(be, w->p, w->x, w->m, w->v, n, &hp, (real)1, w->acc + 2,
                  w->state + VAE_STEP_FLAGS, w->sv);
    be->step_commit(be, w->acc, w->state, w->sv, 0);
}

/* A capture that calls a forbidden op (here: sync) must fail softly. */
static void graph_bad_run(void *arg) {
    graph_work *w = arg;
    w->be->step_begin(w->be, w->sv, w->plan);
    w->be->sync(w->be);
}

/* graph_capture of graph_work_run, launched K - 1 times after one eager
 * warm-up run (as the contract asks), against K eager runs on a second set
 * of buffers: every buffer bit-equal. */
static void test_graph(int K) {
    if (!g_gpu->graph_capture) {
        printf("graph_capture: SKIPPED (the CUDA backend left the hook NULL; VAE_CUDA_GRAPH=0?)\n");
        return;
    }
    CHECK(g_gpu->graph_launch != NULL && g_gpu->graph_free != NULL);
    if (!g_gpu->graph_launch || !g_gpu->graph_free) return;
    /* 97 images in batches of 16: 7 steps per epoch, the last one of 1 image;
     * K steps cross the epoch boundary, the end of the KL warm-up and a
     * cosine learning rate's warm-up and decay (the graph replays a factor
     * that changes every step) */
    enum { N = 97, B = 16, D = 50 };
    const vae_step_plan plan = {N, B, 5, 0.5, 0.9, 0.999, VAE_LR_COSINE, 2, 9, 0.1};
    const int spe = (N + B - 1) / B;
    const size_t ni = (size_t)spe * B, nd = (size_t)N * D, n = (size_t)B * D;
    uint8_t *hd = test_xmalloc(nd);
    for (size_t i = 0; i < nd; i++) hd[i] = (uint8_t)((i * 2654435761u) >> 9);
    int32_t *hi = test_xmalloc(ni * sizeof(int32_t));
    for (size_t r = 0; r < ni; r++) hi[r] = (int32_t)((r * 37u + 11u) % (unsigned)N);
    real *hp = test_xmalloc(n * sizeof(real));
    test_rand_fill_real(hp, n, -1, 1, 990);
    uint8_t *data = palloc(&g_pg, nd);
    int32_t *idx = palloc(&g_pg, ni * sizeof(int32_t));
    g_gpu->upload(g_gpu, data, hd, nd);
    g_gpu->upload(g_gpu, idx, hi, ni * sizeof(int32_t));
    vae_step_vals sv0;
    memset(&sv0, 0, sizeof sv0);
    sv0.next = 3; /* the trainer sets `next` once */
    graph_work w[2];
    for (int k = 0; k < 2; k++) {
        graph_work *a = &w[k];
        a->be = g_gpu, a->plan = &plan, a->data = data, a->idx = idx, a->B = B, a->D = D;
        a->sv = palloc(&g_pg, sizeof(vae_step_vals));
        a->x = palloc(&g_pg, n * sizeof(real));
        a->p = palloc(&g_pg, n * sizeof(real));
        a->m = palloc(&g_pg, n * sizeof(real));
        a->v = palloc(&g_pg, n * sizeof(real));
        a->acc = palloc(&g_pg, VAE_COMMIT_ACC_N * sizeof(double));
        a->state = palloc(&g_pg, VAE_STEP_STATE_N * sizeof(int));
        g_gpu->upload(g_gpu, a->sv, &sv0, sizeof sv0);
        g_gpu->zero(g_gpu, a->x, n * sizeof(real));
        g_gpu->upload(g_gpu, a->p, hp, n * sizeof(real));
        g_gpu->zero(g_gpu, a->m, n * sizeof(real));
        g_gpu->zero(g_gpu, a->v, n * sizeof(real));
        g_gpu->zero(g_gpu, a->acc, VAE_COMMIT_ACC_N * sizeof(double));
        g_gpu->zero(g_gpu, a->state, VAE_STEP_STATE_N * sizeof(int));
    }

    /* w[0]: one eager run, then the capture, which must run nothing */
    graph_work_run(&w[0]);
    g_gpu->sync(g_gpu);
    vae_step_vals got;
    void *graph = g_gpu->graph_capture(g_gpu, graph_work_run, &w[0]);
    CHECK_MSG(graph != NULL, "graph_capture: %s", vae_error_get());
    if (!graph) {
        pools_reset();
        free(hd), free(hi), free(hp);
        return;
    }
    g_gpu->download(g_gpu, &got, w[0].sv, sizeof got);
    CHECK_MSG(got.next == sv0.next + 1, "graph_capture ran the work: next %lld, expected %lld",
              (long long)got.next, (long long)sv0.next + 1);
    for (int k = 1; k < K; k++) g_gpu->graph_launch(g_gpu, graph);
    /* w[1]: K eager runs */
    for (int k = 0; k < K; k++) graph_work_run(&w[1]);
    g_gpu->sync(g_gpu);

    g_gpu->download(g_gpu, &got, w[0].sv, sizeof got);
    vae_step_vals want;
    vae_step_vals_at(&want, &plan, sv0.next + K - 1);
    CHECK_MSG(got.step == want.step && got.next == want.next && got.row0 == want.row0 &&
                  got.rows == want.rows,
              "graph: after %d launches the block is of step %lld (row0 %lld, rows %d), "
              "expected %lld (%lld, %d)",
              K, (long long)got.step, (long long)got.row0, (int)got.rows, (long long)want.step,
              (long long)want.row0, (int)want.rows);
    struct {
        const char *name;
        const void *a, *b;
        size_t bytes;
    } bufs[] = {
        {"sv", w[0].sv, w[1].sv, sizeof(vae_step_vals)},
        {"x", w[0].x, w[1].x, n * sizeof(real)},
        {"p", w[0].p, w[1].p, n * sizeof(real)},
        {"m", w[0].m, w[1].m, n * sizeof(real)},
        {"v", w[0].v, w[1].v, n * sizeof(real)},
        {"acc", w[0].acc, w[1].acc, VAE_COMMIT_ACC_N * sizeof(double)},
        {"state", w[0].state, w[1].state, VAE_STEP_STATE_N * sizeof(int)},
    };
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        CHECK_MSG(gpu_bits_equal(bufs[i].a, bufs[i].b, bufs[i].bytes),
                  "graph: %s after %d replayed steps differs from %d eager ones", bufs[i].name, K,
                  K);
    double acc[VAE_COMMIT_ACC_N];
    g_gpu->download(g_gpu, acc, w[0].acc, sizeof acc);
    double images = 0;
    for (int k = 0; k < K; k++) {
        vae_step_vals_at(&want, &plan, sv0.next + k);
        images += want.rows;
    }
    CHECK_MSG(acc[VAE_COMMIT_IMAGES] == images, "graph: %g images committed, expected %g",
              acc[VAE_COMMIT_IMAGES], images);
    g_gpu->graph_free(g_gpu, graph);
    g_gpu->graph_free(g_gpu, NULL);

    /* a sync inside the capture: NULL with a message, nothing run, and the
     * stream usable afterwards */
    g_gpu->download(g_gpu, &want, w[1].sv, sizeof want);
    void *bad = g_gpu->graph_capture(g_gpu, graph_bad_run, &w[1]);
    CHECK_MSG(bad == NULL && strstr(vae_error_get(), "sync") != NULL,
              "graph_capture of a sync: %p, message \"%s\"", bad, vae_error_get());
    if (bad) g_gpu->graph_free(g_gpu, bad);
    graph_work_run(&w[1]);
    g_gpu->download(g_gpu, &got, w[1].sv, sizeof got);
    CHECK_MSG(got.step == want.next, "after a failed capture: step %lld, expected %lld",
              (long long)got.step, (long long)want.next);
    printf("graph_capture: %d replayed steps bit-equal to eager ones\n", K);
    free(hd);
    free(hi);
    free(hp);
    pools_reset();
}

/* -------------------------------------------------------------- main */

/* ------------------------------------------------------------ sampling */

/* latent_fill: grid coordinates are double math rounded once and prior
 * draws normal_fill's float Box-Muller (both bit-equal); interpolations
 * involve the two libraries' double sin/cos (<= 1 ulp). */
static void test_latent_fill(int kind, int n, int64_t first, unsigned seed) {
    enum { L = 7 };
    real vecs[2 * L];
    test_rand_fill_real(vecs, 2 * L, -2, 2, seed);
    pair vec = in_data(vecs, 2 * L);
    vae_latent_spec s;
    memset(&s, 0, sizeof s);
    s.kind = kind, s.L = L, s.seed = 1234 + seed, s.d1 = 5, s.d2 = 2, s.steps = 33;
    s.range = 2.5, s.quantiles = (seed & 1) != 0, s.omega = 0.9;
    if (kind == VAE_LATENT_LERP || kind == VAE_LATENT_SLERP) s.steps = first + n;
    pair z = out_new((size_t)n * L);
    g_cpu->latent_fill(g_cpu, z.c, n, first, &s, vec.c);
    g_gpu->latent_fill(g_gpu, z.g, n, first, &s, vec.g);
    real *c = fetch(g_cpu, z.c, z.n), *g = fetch(g_gpu, z.g, z.n);
    int64_t worst = 0;
    for (size_t i = 0; i < z.n; i++) {
        int64_t d = ulp_dist(g[i], c[i]);
        if (d > worst) worst = d;
    }
    const int64_t allowed = kind == VAE_LATENT_GRID || kind == VAE_LATENT_PRIOR ? 0 : 1;
    CHECK_MSG(worst <= allowed, "latent_fill kind %d n=%d first=%lld: %lld ulp", kind, n,
              (long long)first, (long long)worst);
    CHECK(guard_intact(g, z.n));
    free(c);
    free(g);
    pools_reset();
}

/* round_mantissa: integer operations on the bits, bit-equal. */
static void test_round_mantissa(size_t n, int bits, unsigned seed, size_t off) {
    pair x = shifted(in_rand_guarded(n + off, -1e3, 1e3, seed), off); /* fetch() reads n + GUARD */
    g_cpu->round_mantissa(g_cpu, x.c, n, bits);
    g_gpu->round_mantissa(g_gpu, x.g, n, bits);
    real *c = fetch(g_cpu, x.c, n), *g = fetch(g_gpu, x.g, n);
    CHECK_MSG(memcmp(c, g, n * sizeof(real)) == 0, "round_mantissa n=%zu bits=%d differs", n, bits);
    free(c);
    free(g);
    pools_reset();
}

/* The whole streamed decoder on both backends: the same checkpoint-free
 * model (CPU-initialised parameters copied to the GPU), the same latents,
 * written through vae_sample_run (writer thread, and on CUDA pinned buffers
 * and the copy stream) to .npy files that must agree to within one level
 * per pixel (fp32: the decoders' sums differ in order, and a pixel whose
 * probability lies within ~1e-6 of a rounding boundary may round the other
 * way); tf32/bf16 likewise against the CPU's emulation (rounded inputs, exact
 * products, fp32 sums), to within two levels (see the check). */
static const char *DECODER_CFG =
    "[data]\ndataset = mnist\n[model]\ninput = 1x28x28\nlatent = 6\n"
    "[encoder]\nlayer = conv 8 k=3 stride=2 pad=1\nlayer = relu\nlayer = flatten\n"
    "[decoder]\nlayer = dense 392\nlayer = relu\nlayer = reshape 8x7x7\n"
    "layer = convT 8 k=4 stride=2 pad=1\nlayer = leaky_relu slope=0.1\n"
    "layer = convT 1 k=4 stride=2 pad=1\n[train]\nbatch = 96\n";

/* The run of *job on m again with every output at once: the .npy, the
 * latents and PNG sheets 17 columns wide of at most 64 pixels (9 block
 * columns) with 3 encoders, so the two writer threads (files, sheets) and
 * the sheets' pool all work. The .npy must be `want` (the run's, npy_path
 * alone) bit for bit, the latents file [n, 6] float32, and the sheets, with
 * no temp file left, byte for byte those that `want` pushed straight into
 * vae_sheets with one encoder gives. */
static void sample_all_outputs(vae_model *m, const vae_sample_job *job0, const char *npy,
                               const uint8_t *want, int64_t n) {
    char dir[256], ref[256], lat[300], path[600], rpath[600];
    snprintf(dir, sizeof dir, "/tmp/vae_test_cuda_sheets_%d", (int)getpid());
    snprintf(ref, sizeof ref, "/tmp/vae_test_cuda_sheets_%d_ref", (int)getpid());
    if (mkdir(dir, 0777) != 0 || mkdir(ref, 0777) != 0) {
        CHECK_MSG(0, "mkdir %s, %s", dir, ref);
        return;
    }
    snprintf(lat, sizeof lat, "%s/latents.npy", dir);
    vae_sample_job job = *job0;
    job.npy_path = npy;
    job.latents_path = lat;
    job.sheet_dir = dir, job.sheet_prefix = "s", job.sheet_cols = 17, job.sheet_px = 64;
    job.sheet_threads = 3;
    vae_sheets *rs = NULL;
    CHECK(vae_sheets_open(&rs, ref, "s", n, 17, 1, 28, 28, 64, 1) == VAE_OK);
    const int64_t count = vae_sheets_count(rs);
    CHECK(rs && vae_sheets_push(rs, want, n) == VAE_OK && vae_sheets_close(rs) == VAE_OK);
    vae_sample_result r;
    CHECK(vae_sample_run(m, &job, &r) == VAE_OK);
    CHECK_MSG(r.written == n && r.sheets == count && count > 1, "%lld written, %d of %lld sheets",
              (long long)r.written, r.sheets, (long long)count);
    uint8_t *got = NULL;
    int64_t sh[4];
    int nd = 0;
    CHECK(vae_npy_read_u8(npy, &got, sh, &nd) == VAE_OK);
    CHECK_MSG(got && nd == 4 && sh[0] == n && memcmp(got, want, (size_t)n * 784) == 0,
              "the .npy written beside the sheets and latents differs from the run's");
    free(got);
    struct stat st;
    CHECK_MSG(stat(lat, &st) == 0 && st.st_size == 128 + n * 6 * 4, "latents: %lld bytes",
              (long long)st.st_size);
    int64_t pngs = 0, other = 0;
    DIR *d = opendir(dir);
    for (struct dirent *e; d && (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        const size_t len = strlen(e->d_name);
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (e->d_name[0] == 's' && len > 4 && !strcmp(e->d_name + len - 4, ".png")) {
            pngs++;
            snprintf(rpath, sizeof rpath, "%s/%s", ref, e->d_name);
            size_t na = 0, nb = 0;
            char *pa = test_slurp(path, &na), *pb = test_slurp(rpath, &nb);
            CHECK_MSG(pa && pb && na == nb && memcmp(pa, pb, na) == 0, "%s differs from %s", path,
                      rpath);
            free(pa);
            free(pb);
            remove(rpath);
        } else if (strcmp(e->d_name, "latents.npy")) {
            other++;
        }
        remove(path);
    }
    if (d) closedir(d);
    CHECK_MSG(pngs == count && other == 0, "%lld sheets of %lld and %lld other files in %s",
              (long long)pngs, (long long)count, (long long)other, dir);
    rmdir(dir);
    rmdir(ref);
}

static void test_sample_run(int kind, int64_t n, int bits) {
    vae_config cfg;
    vae_config_defaults(&cfg);
    if (vae_config_parse(&cfg, DECODER_CFG, "<decoder test>")) {
        fprintf(stderr, "%s\n", vae_error_get());
        CHECK(0);
        return;
    }
    vae_model mc, mg;
    CHECK(vae_model_create(&mc, &cfg, g_cpu, cfg.batch) == VAE_OK);
    CHECK(vae_model_create(&mg, &cfg, g_gpu, cfg.batch) == VAE_OK);
    vae_model_init_params(&mc, 77);
    real *p = test_xmalloc(mc.n_real * sizeof(real));
    g_cpu->download(g_cpu, p, mc.p, mc.n_real * sizeof(real));
    g_gpu->upload(g_gpu, mg.p, p, mc.n_real * sizeof(real));
    if (bits < 23) {
        vae_model *ms[2] = {&mc, &mg};
        for (int i = 0; i < 2; i++) {
            ms[i]->be->round_mantissa(ms[i]->be, ms[i]->p, ms[i]->n_real, bits);
            ms[i]->round_bits = bits;
            if (ms[i]->be->set_precision) CHECK(ms[i]->be->set_precision(ms[i]->be, bits) == VAE_OK);
        }
    }
    real vec[12] = {0.5f, -1, 2, 0, 1, -0.5f, 1.5f, 0.25f, -2, 1, 0, 0.75f};
    vae_sample_job job;
    memset(&job, 0, sizeof job);
    job.spec.kind = kind, job.spec.L = 6, job.spec.seed = 5, job.spec.d1 = 1, job.spec.d2 = 4;
    job.spec.steps = kind == VAE_LATENT_GRID ? 17 : n, job.spec.range = 3, job.spec.omega = 0.7;
    job.vec = kind == VAE_LATENT_PRIOR ? NULL : vec;
    job.first = 3, job.last = n; /* a slice, crossing chunk boundaries */
    char pc[256], pg[256];
    snprintf(pc, sizeof pc, "/tmp/vae_test_cuda_sample_%d_cpu.npy", (int)getpid());
    snprintf(pg, sizeof pg, "/tmp/vae_test_cuda_sample_%d_gpu.npy", (int)getpid());
    vae_sample_result rc_, rg_;
    job.npy_path = pc;
    CHECK(vae_sample_run(&mc, &job, &rc_) == VAE_OK);
    job.npy_path = pg;
    CHECK(vae_sample_run(&mg, &job, &rg_) == VAE_OK);
    CHECK(rc_.written == n - 3 && rg_.written == n - 3);
    uint8_t *a = NULL, *b = NULL;
    int64_t sa[4], sb[4];
    int na = 0, nb = 0;
    CHECK(vae_npy_read_u8(pc, &a, sa, &na) == VAE_OK && vae_npy_read_u8(pg, &b, sb, &nb) == VAE_OK);
    if (a && b) {
        CHECK(na == 4 && nb == 4 && sa[0] == n - 3 && sb[0] == n - 3);
        int worst = 0;
        size_t differ = 0, total = (size_t)(n - 3) * 784;
        for (size_t i = 0; i < total; i++) {
            int d = abs((int)a[i] - (int)b[i]);
            if (d > worst) worst = d;
            differ += d != 0;
        }
        printf("sample kind %d n=%lld bits=%d: CPU vs CUDA max %d level(s), %zu of %zu pixels differ\n",
               kind, (long long)n, bits, worst, differ, total);
        /* fp32: 1 level (sums in another order); tf32/bf16: 2 — cuDNN may
         * pick a tensor-op algorithm that transforms the rounded inputs
         * (Winograd, FFT), whose products are then no longer exact */
        CHECK_MSG(worst <= (bits < 23 ? 2 : 1), "decoded pixels differ by %d levels", worst);
    }
    /* a piece of that run ending mid-chunk, on the GPU backend: its last
     * chunk is decoded at the full chunk size too (sample_stream.c), so its
     * images are the whole run's bit for bit (on a GPU the algorithms are
     * chosen per batch size; the stand-ins are batch-size invariant anyway) */
    const int64_t piece = 3 + cfg.batch + cfg.batch / 2;
    if (b && bits == 23 && n > piece) {
        char pp[256];
        snprintf(pp, sizeof pp, "/tmp/vae_test_cuda_sample_%d_piece.npy", (int)getpid());
        job.last = piece;
        job.npy_path = pp;
        vae_sample_result rp_;
        CHECK(vae_sample_run(&mg, &job, &rp_) == VAE_OK);
        uint8_t *c = NULL;
        int64_t sc[4];
        int nc = 0;
        CHECK(vae_npy_read_u8(pp, &c, sc, &nc) == VAE_OK);
        if (c) {
            CHECK_MSG(nc == 4 && sc[0] == piece - 3 &&
                          memcmp(c, b, (size_t)(piece - 3) * 784) == 0,
                      "sample kind %d: the piece [3, %lld) differs from the run's first images",
                      kind, (long long)piece);
        }
        free(c);
        remove(pp);
    }
    job.last = n; /* the whole slice again */
    if (b && bits == 23) sample_all_outputs(&mg, &job, pg, b, n - 3);
    free(a);
    free(b);
    remove(pc);
    remove(pg);
    free(p);
    vae_model_free(&mg);
    vae_model_free(&mc);
    vae_config_free(&cfg);
    if (g_gpu->set_precision) g_gpu->set_precision(g_gpu, 23);
}

/* VAE_TEST_EMU=1: the kernels run in the CPU emulator (tests/emu) behind
 * three emulator backends in the places of the CUDA ones (each runs the
 * direct convT kernel wherever it takes the shape); the cases that test
 * the CUDA arena, cuBLASLt or graphs say they are skipped. */
static int open_emulated(void) {
    const char *e = getenv("VAE_TEST_EMU");
    if (!e || !*e || strcmp(e, "0") == 0) return 0;
#ifdef VAE_TEST_HAVE_EMU
    g_gpu = vae_backend_emu_create();
    g_gpu_nolt = g_gpu ? vae_backend_emu_create() : NULL;
    g_gpu_direct = g_gpu_nolt ? vae_backend_emu_create() : NULL;
    g_direct_supported = vae_emu_convt_direct_supported;
    g_fwd_direct_supported = vae_emu_conv_direct_supported;
    g_wgrad_supported = vae_emu_conv_wgrad_supported;
    g_wgrad_group = vae_emu_conv_wgrad_group;
    if (!g_gpu || !g_gpu_nolt || !g_gpu_direct) {
        fprintf(stderr, "emulator backend: %s\n", vae_error_get());
        exit(1);
    }
    printf("under test: the CUDA kernels in the CPU emulator (VAE_TEST_EMU)\n");
    return 1;
#else
    TEST_SKIP("VAE_TEST_EMU: this test was built without the CUDA emulator");
#endif
}

/* A CUDA backend created with the environment variables vars[i][0] set to
 * vars[i][1] (the backend reads them when it is created), then restored. */
static vae_backend *cuda_with_env(const char *const (*vars)[2], int n) {
    char *saved[8];
    for (int i = 0; i < n; i++) {
        const char *v = getenv(vars[i][0]);
        saved[i] = v ? strdup(v) : NULL;
        setenv(vars[i][0], vars[i][1], 1);
    }
    vae_backend *be = vae_backend_cuda_create(0);
    for (int i = 0; i < n; i++) {
        if (saved[i]) setenv(vars[i][0], saved[i], 1);
        else unsetenv(vars[i][0]);
        free(saved[i]);
    }
    return be;
}

/* Side segments (VAE_CUDA_SIDE=1, a backend of their own) as the table's
 * contract states them, beyond model.c's one pattern of use: two segments
 * in a row, then side_wait(0) — the second's result is there; a segment
 * followed by sync(), or by download_async(), with no side_wait — the
 * segment is part of "everything issued" and its result comes back. On the
 * mock's asynchronous streams a missing or wrong wait reads a stale value
 * (ReLU of the input as a stand-in for a weight gradient: any op runs on the
 * side stream between side_begin and side_end). */
static void test_side_segments(void) {
#ifdef VAE_HAVE_CUDA
    static const char *const vars[][2] = {{"VAE_CUDA_SIDE", "1"}};
    vae_backend *be = cuda_with_env(vars, 1);
    CHECK_MSG(be && be->side_begin && be->side_end && be->side_wait,
              "a CUDA backend with side segments: %s", be ? "no side hooks" : vae_error_get());
    if (!be || !be->side_begin) {
        if (be) be->destroy(be);
        return;
    }
    enum { N = 4099 };
    real *h = test_xmalloc(N * sizeof(real)), *want = test_xmalloc(N * sizeof(real));
    real *got = test_xmalloc(N * sizeof(real));
    test_rand_fill_real(h, N, -1, 1, 1301);
    for (int i = 0; i < N; i++) want[i] = h[i] > 0 ? h[i] : 0;
    real *x = be->alloc(be, N * sizeof(real)), *y[4];
    for (int k = 0; k < 4; k++) y[k] = be->alloc(be, N * sizeof(real));
    be->upload(be, x, h, N * sizeof(real));
    be->sync(be);
    /* two segments, the second reading the first's output; then all joined */
    be->side_begin(be);
    be->act_forward(be, y[0], x, N, VAE_ACT_RELU, 0);
    be->side_end(be);
    be->side_begin(be);
    be->act_forward(be, y[1], y[0], N, VAE_ACT_RELU, 0);
    be->side_end(be);
    be->side_wait(be, 0);
    be->download(be, got, y[1], N * sizeof(real));
    CHECK_MSG(memcmp(got, want, N * sizeof(real)) == 0,
              "side segments: after side_wait(0) the second segment's result is not there");
    /* a segment, then sync() with no side_wait */
    be->side_begin(be);
    be->act_forward(be, y[2], x, N, VAE_ACT_RELU, 0);
    be->side_end(be);
    be->sync(be);
    be->download(be, got, y[2], N * sizeof(real));
    CHECK_MSG(memcmp(got, want, N * sizeof(real)) == 0,
              "side segments: sync() did not wait for a segment");
    /* a segment, then download_async with no side_wait */
    if (be->download_async && be->copy_wait && be->host_alloc && be->host_free) {
        real *pin = be->host_alloc(be, N * sizeof(real));
        be->side_begin(be);
        be->act_forward(be, y[3], x, N, VAE_ACT_RELU, 0);
        be->side_end(be);
        be->download_async(be, pin, y[3], N * sizeof(real));
        be->copy_wait(be);
        CHECK_MSG(pin && memcmp(pin, want, N * sizeof(real)) == 0,
                  "side segments: download_async did not wait for a segment");
        be->host_free(be, pin);
    }
    for (int k = 3; k >= 0; k--) be->release(be, y[k]);
    be->release(be, x);
    be->destroy(be);
    free(h);
    free(want);
    free(got);
#endif
}

/* The CUDA backend, a second one without the cuBLASLt epilogues and with
 * the convolutions' gradients in GEMM form (VAE_CONV_GEMM=1), and a third
 * with the data gradients by the direct kernel (VAE_CONV_DIRECT=1). */
static void open_cuda(void) {
#ifndef VAE_HAVE_CUDA
    TEST_SKIP("no usable GPU: this build has no CUDA backend "
              "(VAE_TEST_EMU=1 runs the kernels in the CPU emulator)");
#endif
    char why[512] = "";
    if (!vae_cuda_available(why, sizeof why)) TEST_SKIP("no usable GPU: %s", why);
    g_gpu = vae_backend_cuda_create(0);
    if (!g_gpu) { /* a GPU is there (above): a failure, not a skip (e.g. a bad VAE_* variable) */
        fprintf(stderr, "CUDA backend: %s\n", vae_error_get());
        exit(1);
    }
    /* the backend reads VAE_CUBLASLT when it is created */
    const char *lt_env = getenv("VAE_CUBLASLT");
    if (lt_env && strcmp(lt_env, "0") == 0)
        printf("note: VAE_CUBLASLT=0 in the environment: both CUDA backends run without the "
               "cuBLASLt epilogues\n");
    /* the second backend: no cuBLASLt epilogues, and the convolutions'
     * gradients in GEMM form wherever they fit, in slices of at most 3 images */
    static const char *const vars[][2] = {{"VAE_CUBLASLT", "0"},
                                          {"VAE_CONV_GEMM", "1"},
                                          {"VAE_CONV_GEMM_SLICE", "3"},
                                          {"VAE_CONV_DIRECT", "0"}};
    g_gpu_nolt = cuda_with_env(vars, 4);
    if (!g_gpu_nolt) {
        fprintf(stderr, "second CUDA backend (VAE_CUBLASLT=0): %s\n", vae_error_get());
        exit(1);
    }
    /* the third: the direct kernel wherever it takes the shape */
    static const char *const dvars[][2] = {{"VAE_CONV_DIRECT", "1"}};
    g_gpu_direct = cuda_with_env(dvars, 1);
    if (!g_gpu_direct) {
        fprintf(stderr, "third CUDA backend (VAE_CONV_DIRECT=1): %s\n", vae_error_get());
        exit(1);
    }
#ifdef VAE_HAVE_CUDA
    g_direct_supported = vae_cuda_convt_direct_supported;
    g_fwd_direct_supported = vae_cuda_conv_direct_supported;
    g_wgrad_supported = vae_cuda_conv_wgrad_supported;
    g_wgrad_group = vae_cuda_conv_wgrad_group;
#endif
}

int main(void) {
    const int emulated = open_emulated();
    if (!emulated) open_cuda();
    g_cpu = vae_backend_cpu_create(1);
    if (!g_cpu) {
        fprintf(stderr, "CPU backend: %s\n", vae_error_get());
        return 1;
    }
    g_pc.be = g_cpu;
    g_pg.be = g_gpu;
    g_pg_nolt.be = g_gpu_nolt;
    g_pg_direct.be = g_gpu_direct;
    CHECK(strcmp(g_gpu->name, emulated ? "cuda-emulator" : "cuda") == 0);
    if (g_gpu->reserve) CHECK(g_gpu->reserve(g_gpu, (size_t)256 << 20) == VAE_OK);
    if (g_gpu_nolt->reserve) CHECK(g_gpu_nolt->reserve(g_gpu_nolt, (size_t)64 << 20) == VAE_OK);
    if (g_gpu_direct->reserve)
        CHECK(g_gpu_direct->reserve(g_gpu_direct, (size_t)64 << 20) == VAE_OK);

    /* VAE_TEST_KERNELS_ONLY=1: only the cases of src/kernels' own kernels
     * (for compute-sanitizer's racecheck, which is slow on cuBLAS's and
     * cuDNN's kernels and has nothing to find in their shared memory) */
    const char *ko = getenv("VAE_TEST_KERNELS_ONLY");
    const int libs = !(ko && *ko && strcmp(ko, "0") != 0);
    if (!libs) printf("VAE_TEST_KERNELS_ONLY: the cases of cuBLAS, cuDNN and the arena are left out\n");

    if (emulated) printf("memory: SKIPPED (the CUDA arena is not emulated)\n");
    else if (libs) test_memory();

    /* B, I, O, weight offset, bias offset (floats past a 256-byte boundary):
     * +1 is 4-byte, +2 8-byte, +4 16-byte, +8 32-byte aligned; a bias at
     * +1 or +2 takes the fallback per call; a shape again with a less
     * aligned bias needs a plan of its own (the heuristic was shown the
     * first one's alignment) */
    static const int dense[][5] = {
        {1, 1, 1, 0, 0},      {1, 7, 3, 0, 0},     {5, 33, 17, 0, 0},    {3, 257, 129, 0, 0},
        {64, 784, 400, 0, 0}, {128, 20, 784, 0, 0}, {2, 1030, 9, 0, 0},  {1500, 5, 3, 0, 0},
        {128, 784, 20, 0, 0}, {128, 20, 400, 0, 0}, {128, 20, 400, 0, 4}, {4, 3, 5, 0, 0},
        {7, 5, 3, 0, 0},
        {1, 1, 1, 0, 1},      {128, 784, 20, 0, 1}, {3, 5, 3, 3, 2},     {128, 20, 400, 1, 0},
        {33, 400, 40, 2, 4},  {64, 400, 784, 1, 8}, {128, 3136, 128, 4, 4}, {17, 128, 3136, 8, 8},
        /* bias gradients over >= 256 rows (two-pass kernel: several row
         * chunks) with widths not a multiple of 32 */
        {300, 40, 45, 0, 0},  {1024, 64, 33, 0, 1},
        /* more than 32 row chunks: pass 2's lanes each add several partials */
        {10000, 3, 2, 0, 0}};
    for (size_t i = 0; libs && i < sizeof dense / sizeof dense[0]; i++)
        test_dense(dense[i][0], dense[i][1], dense[i][2], dense[i][3], dense[i][4],
                   100 + 4 * (unsigned)i);

    /* dense + ReLU pairs: B, I, O, O2 (width of the dense layer above),
     * weight offset, bias offset (floats), mask offset (bytes; below 16 the
     * fused path declines the mask, as below 4 floats the bias) */
    static const int relu[][7] = {
        {1, 1, 1, 1, 0, 0, 0},        {5, 33, 17, 9, 0, 0, 0},     {33, 129, 129, 33, 0, 0, 0},
        {3, 7, 200, 5, 4, 4, 0},      {128, 3136, 128, 40, 0, 0, 0}, /* encoder dense 128 -> head */
        {128, 20, 128, 3136, 0, 0, 0}, /* decoder dense 128 -> dense 3136 */
        {64, 400, 129, 20, 1, 0, 0},  {17, 33, 129, 7, 0, 1, 0},   {17, 33, 129, 7, 0, 0, 4},
        {17, 33, 129, 7, 2, 2, 8},    {300, 40, 45, 33, 0, 0, 16}, {1500, 5, 3, 2, 0, 0, 0}};
    if (libs && (!g_gpu->dense_relu_forward || !g_gpu->dense_backward_relu)) {
        printf("dense+relu: SKIPPED (%s has no fused dense + ReLU ops)\n", g_gpu->name);
    } else if (libs) {
        for (size_t i = 0; i < sizeof relu / sizeof relu[0]; i++)
            test_dense_relu(relu[i][0], relu[i][1], relu[i][2], relu[i][3], relu[i][4],
                            relu[i][5], relu[i][6], 400 + 8 * (unsigned)i);
        test_dense_relu_graph();
    }

    /* B, cin, h, w, cout, k, stride, pad */
    static const int conv[][8] = {{1, 1, 28, 28, 8, 3, 1, 1}, {4, 3, 15, 13, 5, 4, 2, 1},
                                  {5, 16, 7, 7, 32, 3, 2, 0}, {2, 32, 14, 14, 64, 4, 2, 1},
                                  {3, 7, 9, 11, 3, 5, 1, 2},  {1, 2, 1, 1, 3, 1, 1, 0},
                                  /* B*HW >= 4096: the bias gradient in several chunks */
                                  {128, 1, 28, 28, 32, 4, 2, 1},
                                  /* an empty batch: no output, zero gradients */
                                  {0, 3, 5, 5, 4, 3, 1, 1},
                                  /* data gradients the direct kernel tiles (convt.cu): the
                                   * mnist encoder's second conv; odd sizes and CO = 9, 70
                                   * (not multiples of its channel groups); k2 s2 p0 */
                                  {3, 32, 14, 14, 64, 3, 2, 1}, {2, 9, 13, 11, 6, 3, 2, 1},
                                  {1, 70, 8, 8, 10, 4, 2, 1},  {1, 5, 6, 6, 3, 2, 2, 0},
                                  /* the direct forward kernel (convf.cu): the mnist and
                                   * cifar encoders' layers (tile kernel), stride 1 tiles,
                                   * CO not a multiple of its groups of 4, rows and columns
                                   * past one tile (WO > 32), CI over several chunks; the
                                   * generic kernel: k 1, 2, 5, pad 0 .. 2 */
                                  {3, 1, 28, 28, 32, 3, 2, 1}, {2, 3, 32, 32, 32, 4, 2, 1},
                                  {2, 64, 8, 8, 128, 4, 2, 1}, {1, 3, 9, 10, 5, 3, 1, 1},
                                  {2, 2, 7, 6, 7, 4, 1, 2},    {1, 2, 70, 37, 3, 3, 1, 0},
                                  {1, 300, 5, 5, 6, 3, 2, 2},  {1, 4, 11, 9, 3, 1, 1, 0},
                                  {2, 3, 9, 8, 5, 5, 2, 2},
                                  /* the direct weight gradient (convw.cu): the mnist
                                   * encoder's second conv in groups of 3, 3 and 1 images */
                                  {7, 32, 14, 14, 64, 4, 2, 1}};
    for (size_t i = 0; libs && i < sizeof conv / sizeof conv[0]; i++) {
        const int *c = conv[i];
        test_conv(c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], 200 + (unsigned)i);
    }
    if (libs) {
        test_direct_signed_zero(3, 2, 1); /* the tiled kernels */
        test_direct_signed_zero(5, 1, 2); /* the generic ones */
    }
    /* B, cin, h, w, cout, k, stride, pad, out_pad */
    static const int convt[][9] = {{1, 8, 7, 7, 4, 4, 2, 1, 0},  {3, 3, 5, 6, 2, 3, 2, 1, 1},
                                   {2, 5, 1, 1, 7, 3, 1, 0, 0},  {4, 64, 7, 7, 32, 4, 2, 1, 0},
                                   {2, 6, 4, 5, 1, 5, 3, 2, 2},  {1, 32, 14, 14, 1, 3, 1, 1, 0},
                                   /* one channel of 64 x 28 x 28: many chunks */
                                   {64, 32, 14, 14, 1, 4, 2, 1, 0},
                                   /* 128 x 28 x 28: more than 32 chunks (pass 2 as above) */
                                   {128, 8, 14, 14, 1, 4, 2, 1, 0},
                                   {0, 3, 4, 4, 2, 3, 2, 1, 1}, /* an empty batch */
                                   /* the direct kernel's shapes (convt.cu): the mnist and
                                    * cifar decoders' layers (tile and small-CO kernels) */
                                   {3, 64, 7, 7, 32, 3, 2, 1, 1},  {3, 32, 14, 14, 1, 3, 2, 1, 1},
                                   {2, 128, 4, 4, 64, 4, 2, 1, 0}, {2, 64, 8, 8, 32, 4, 2, 1, 0},
                                   {2, 32, 16, 16, 3, 4, 2, 1, 0},
                                   /* the direct weight gradient (convw.cu): the mnist
                                    * decoder's first convT in groups of 3 and 2 images */
                                   {5, 64, 7, 7, 32, 4, 2, 1, 0},
                                   /* odd outputs, CO not a multiple of the channel groups,
                                    * CI over several chunks, odd widths (no paired stores) */
                                   {1, 5, 3, 4, 7, 3, 2, 1, 0},    {2, 200, 3, 3, 2, 4, 2, 1, 1},
                                   {1, 7, 2, 2, 4, 3, 2, 1, 1},
                                   /* 531 images: two per tile block, the last block half full */
                                   {531, 2, 2, 2, 5, 3, 2, 1, 1},
                                   /* the generic kernel: k 1, 2, 5; stride 1, 2; pad 0, 2 */
                                   {2, 3, 5, 4, 2, 1, 1, 0, 0},    {1, 4, 3, 3, 3, 2, 2, 0, 1},
                                   {2, 3, 4, 5, 5, 5, 2, 2, 1},    {1, 2, 6, 5, 3, 3, 1, 2, 0}};
    for (size_t i = 0; libs && i < sizeof convt / sizeof convt[0]; i++) {
        const int *c = convt[i];
        test_convt(c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8], 300 + (unsigned)i);
    }

    if (libs) test_capture_new_plans();
    if (libs) test_precision_switch();
    if (!emulated) test_side_segments();

    static const size_t sizes[] = {1, 31, 257, 100003};
    for (size_t i = 0; i < 4; i++) {
        test_act(sizes[i], VAE_ACT_RELU, 0, 400 + (unsigned)i, 0, 0);
        test_act(sizes[i], VAE_ACT_LEAKY_RELU, (real)0.2, 410 + (unsigned)i, 0, 0);
        test_act(sizes[i], VAE_ACT_LEAKY_RELU, (real)0.01, 420 + (unsigned)i, 0, 0);
    }
    /* buffers past an aligned address: the kernels' scalar head (alike) and
     * their all-scalar path (differently misaligned) */
    test_act(1001, VAE_ACT_RELU, 0, 430, 1, 1);
    test_act(1001, VAE_ACT_LEAKY_RELU, (real)0.2, 431, 3, 3);
    test_act(1001, VAE_ACT_RELU, 0, 432, 1, 2);

    test_normal_fill(1, 1, VAE_RNG_PRIOR, 0, 0);
    test_normal_fill(1001, 42, VAE_RNG_TRAIN, 7, 3);
    test_normal_fill(4096, 0xDEADBEEFCAFEull, VAE_RNG_EVAL, 123456789, (uint64_t)1 << 40);

    /* (B, L): also more samples than one block's 8 warps, L > 32, and L
     * above KL_TILE (1024: the KL and log q kernels for long rows) */
    static const int bl[][2] = {{1, 1},    {3, 7},    {64, 32},  {5, 33},
                                {2, 300},  {203, 20}, {1000, 3}, {3, 1100}};
    for (size_t i = 0; i < sizeof bl / sizeof bl[0]; i++) {
        test_reparam(bl[i][0], bl[i][1], 11 + i, 1000 + i);
        test_kl(bl[i][0], bl[i][1], 1, (real)0.7, 500 + (unsigned)i);
        test_kl(bl[i][0], bl[i][1], 0, (real)1, 510 + (unsigned)i);
        test_log_q(bl[i][0], bl[i][1], 520 + (unsigned)i);
    }

    static const int bd[][2] = {{1, 1}, {7, 784}, {3, 3072}, {2, 257}};
    for (size_t i = 0; i < sizeof bd / sizeof bd[0]; i++) {
        test_recon(bd[i][0], bd[i][1], VAE_LIK_BERNOULLI, 1, 600 + (unsigned)i);
        test_recon(bd[i][0], bd[i][1], VAE_LIK_GAUSSIAN, 1, 610 + (unsigned)i);
        test_recon(bd[i][0], bd[i][1], VAE_LIK_BERNOULLI, 0, 620 + (unsigned)i);
    }

    static const size_t rn[] = {1, 255, 256, 257, 262145, 1000003};
    for (size_t i = 0; i < sizeof rn / sizeof rn[0]; i++) test_reduce(rn[i], 700 + (unsigned)i, 0);
    test_reduce(1001, 710, 1);
    test_reduce(262145, 711, 3);
    test_sum2(128, 128, 0, 720);
    test_sum2(1024, 1, 1, 722);
    test_sum2(0, 1000, 0, 724);
    test_sum2(1025, 128, 2, 726);
    test_sum2(7, 5000, 3, 728);

    test_adam(1, 0, 0, 0, 1.0, 800, 0);
    test_adam(1000, (real)0.01, 0, 0, 1.0, 801, 0);
    test_adam(100003, (real)0.01, 1, 0, 1.0, 802, 0);
    test_adam(1000, 0, 0, (real)1, 100.0, 803, 0);  /* clipping active */
    test_adam(1000, 0, 0, (real)1e9, 100.0, 804, 0); /* clipping inactive */
    test_adam(1000, 0, 0, (real)1, INFINITY, 805, 0);
    test_adam(1000, 0, 0, 0, NAN, 806, 0);
    /* clipping active on the scalar tail and on a scalar head */
    test_adam(1003, 0, 0, (real)1, 100.0, 809, 0);
    test_adam(1001, (real)0.01, 1, (real)1, 100.0, 810, 1);
    /* clipping at a tiny norm, where the scale's + 1e-6 (vae_math.h) matters */
    test_adam(1000, 0, 0, (real)1e-7, 1e-12, 811, 0);
    test_adam_halted(1000, 1.0, 807);
    test_adam_halted(100003, NAN, 808);

    test_step_commit(0);
    test_step_commit(2);
    test_step_commit(1000);

    /* a short last batch (1000 = 15 * 64 + 40), a KL warm-up of 37 steps and
     * a cosine learning rate (warm-up 10, down to 0.1 at step 40: the
     * device's series cosine against the host's, bit for bit) */
    const vae_step_plan sp1 = {1000, 64, 37, 0.5, 0.9, 0.999, VAE_LR_COSINE, 10, 40, 0.1};
    test_step_begin(&sp1, 0, 40);                        /* 2.5 epochs, the warm-up's end */
    test_step_begin(&sp1, 990, 20);                      /* bc2 far from 0 and 1 */
    test_step_begin(&sp1, ((int64_t)1 << 33) + 7, 20);  /* int64 steps; bc = 1 */
    /* no short batch, no warm-up; a linear learning rate */
    const vae_step_plan sp2 = {128, 64, 0, 1.0, 0.5, 0.75, VAE_LR_LINEAR, 0, 10, 0};
    test_step_begin(&sp2, 5, 8);
    /* batch larger than the data */
    const vae_step_plan sp3 = {5, 8, 3, 2.0, 0.9, 0.999, VAE_LR_CONSTANT, 0, 0, 0};
    test_step_begin(&sp3, 0, 4);

    test_gather(50, 1, 105, 0, 900);
    test_gather(50, 13, 105, 39, 901);
    test_gather(7, 64, 784, 128, 902);
    test_gather(100, 40, 33, 960, 903); /* a short last batch's offset */

    test_to_u8(1, VAE_LIK_BERNOULLI, 950, 0);
    test_to_u8(1001, VAE_LIK_BERNOULLI, 951, 0);
    test_to_u8(1001, VAE_LIK_GAUSSIAN, 952, 0);
    test_to_u8(1001, VAE_LIK_BERNOULLI, 953, 1);
    test_to_u8(1001, VAE_LIK_GAUSSIAN, 954, 3);

    for (int kind = 0; kind < 4; kind++) {
        test_latent_fill(kind, 1, 0, 960 + (unsigned)kind);
        test_latent_fill(kind, 300, 1000, 964 + (unsigned)kind);
        test_latent_fill(kind, 1089, 0, 968 + (unsigned)kind);
    }
    test_graph(12);

    test_round_mantissa(100003, 10, 970, 0);
    test_round_mantissa(100003, 7, 971, 0);
    test_round_mantissa(1001, 7, 972, 2); /* the scalar head */
    if (libs) {
        test_sample_run(VAE_LATENT_PRIOR, 1000, 23);
        test_sample_run(VAE_LATENT_GRID, 17 * 17, 23);
        test_sample_run(VAE_LATENT_SLERP, 50, 23);
        test_sample_run(VAE_LATENT_PRIOR, 500, 10);
        test_sample_run(VAE_LATENT_PRIOR, 500, 7);
    }

    g_gpu_direct->destroy(g_gpu_direct);
    g_gpu_nolt->destroy(g_gpu_nolt);
    g_gpu->destroy(g_gpu);
    g_cpu->destroy(g_cpu);
    return test_finish();
}

/* backend_emu.c — a backend whose own-kernel ops run src/kernels' CUDA
 * kernels in the CPU emulator (cuda_emu.h), for the GPU tests on machines
 * without a GPU.
 *
 * It is the CUDA backend's op table with the libraries replaced: memory is
 * the CPU backend's (host memory, synchronous copies), cuBLAS and cuDNN are
 * the CPU backend's GEMMs and convolutions called without bias — except
 * the convolutions the CUDA backend's direct kernels (there timed
 * candidates) take: a convolution's data gradient and a transposed
 * convolution's forward run convt.cu's, a convolution's forward and a
 * transposed convolution's data gradient convf.cu's, and both weight
 * gradients convw.cu's, wherever it takes the shape, the forward's bias and
 * activation fused — and
 * everything src/host/backend_cuda.c does with a kernel of ours it does here
 * with the same launcher, the same arguments and the same scratch sizes:
 * bias add and bias gradients (the cuBLAS/cuDNN path of the CUDA backend,
 * i.e. its cuBLASLt fallback), activations, the fused VAE ops, reductions,
 * Adam, the step bookkeeping, the batch gather and the sampling kernels.
 * The launchers are the generated vae_emu_* copies of the vae_cuda_* ones
 * (tests/emu/cu2cpp.py). No graphs and no precision modes: those hooks stay
 * NULL, as on the CPU backend.
 */
#include <stdlib.h>

#include "backend_emu.h"
#include "vae_kernels.cuh" /* the generated copy: vae_emu_* launchers */

typedef struct {
    vae_backend *cpu;
    double *partials;      /* VAE_CUDA_REDUCE_SCRATCH, as the CUDA backend's */
    double *bias_partials; /* VAE_CUDA_BIAS_SCRATCH */
} emu_ctx;

static emu_ctx *E(vae_backend *be) { return (emu_ctx *)be->ctx; }
static vae_backend *C(vae_backend *be) { return E(be)->cpu; }
#define S ((cudaStream_t)0)

/* ---- memory: the CPU backend's ---- */
static void *emu_alloc(vae_backend *be, size_t bytes) { return C(be)->alloc(C(be), bytes); }
static void emu_release(vae_backend *be, void *p) { C(be)->release(C(be), p); }
static void emu_upload(vae_backend *be, void *dst, const void *src, size_t bytes) {
    C(be)->upload(C(be), dst, src, bytes);
}
static void emu_download(vae_backend *be, void *dst, const void *src, size_t bytes) {
    C(be)->download(C(be), dst, src, bytes);
}
static void emu_zero(vae_backend *be, void *dst, size_t bytes) { C(be)->zero(C(be), dst, bytes); }
static void emu_sync(vae_backend *be) { C(be)->sync(C(be)); }

/* ---- layers: library work on the CPU, bias through our kernels ---- */
static void emu_dense_forward(vae_backend *be, real *out, const real *in, const real *w,
                              const real *b, int B, int I, int O) {
    C(be)->dense_forward(C(be), out, in, w, NULL, B, I, O);
    if (b) vae_emu_bias_add_rows(S, out, b, B, O);
}
static void emu_dense_backward(vae_backend *be, real *din, real *dw, real *db, const real *dout,
                               const real *in, const real *w, int B, int I, int O) {
    C(be)->dense_backward(C(be), din, dw, NULL, dout, in, w, B, I, O);
    if (db) vae_emu_bias_grad_rows(S, db, dout, B, O, E(be)->bias_partials);
}
/* out = act(convT(in, w) + b) by the direct kernel (act: VAE_CUDA_CONVT_*),
 * geometry in convT terms; 0 (nothing done) where it does not take the shape */
static int emu_convt_direct(real *out, const real *in, const real *w, const real *b, int act,
                            real slope, int B, int cin, int hin, int win, int cout, int hout,
                            int wout, int k, int stride, int pad) {
    if (!vae_emu_convt_direct_supported(cin, hin, win, cout, hout, wout, k, stride, pad))
        return 0;
    vae_emu_convt_direct(S, out, in, w, b, act, slope, B, cin, hin, win, cout, hout, wout, k,
                         stride, pad);
    return 1;
}
/* out = act(conv(in, w) + b) by the direct forward kernel (convf.cu), geometry
 * in conv terms; 0 (nothing done) where it does not take the shape */
static int emu_conv_direct(real *out, const real *in, const real *w, const real *b, int act,
                           real slope, int B, int cin, int hin, int win, int cout, int hout,
                           int wout, int k, int stride, int pad) {
    if (B <= 0 ||
        !vae_emu_conv_direct_supported(cin, hin, win, cout, hout, wout, k, stride, pad))
        return 0;
    vae_emu_conv_direct(S, out, in, w, b, act, slope, B, cin, hin, win, cout, hout, wout, k,
                        stride, pad);
    return 1;
}
static void emu_conv2d_forward(vae_backend *be, real *out, const real *in, const real *w,
                               const real *b, const vae_conv_geom *g, int B) {
    if (emu_conv_direct(out, in, w, b, VAE_CUDA_CONVT_NONE, 0, B, g->cin, g->hin, g->win,
                        g->cout, g->hout, g->wout, g->k, g->stride, g->pad))
        return;
    C(be)->conv2d_forward(C(be), out, in, w, NULL, g, B);
    if (b) vae_emu_bias_add_nchw(S, out, b, B, g->cout, g->hout * g->wout);
}
/* dw = the weight gradient of the convolution x [B, cin, hin, win] -> dy
 * [B, cout, hout, wout] by the direct kernel (convw.cu), with the scratch
 * the CUDA backend gives it; 0 (nothing done) where it does not take the shape */
static int emu_conv_wgrad(vae_backend *be, real *dw, const real *x, const real *dy, int B,
                          int cin, int hin, int win, int cout, int hout, int wout, int k,
                          int stride, int pad) {
    if (B <= 0 ||
        !vae_emu_conv_wgrad_supported(cin, hin, win, cout, hout, wout, k, stride, pad))
        return 0;
    const size_t n = vae_emu_conv_wgrad_scratch(B, cin, cout, k, hout, wout);
    real *scratch = n ? C(be)->alloc(C(be), n * sizeof(real)) : NULL;
    if (n && !scratch) vae_panic(__FILE__, __LINE__, "emulator: no memory for %zu floats", n);
    vae_emu_conv_wgrad_direct(S, dw, x, dy, scratch, B, cin, hin, win, cout, hout, wout, k,
                              stride, pad);
    if (scratch) C(be)->release(C(be), scratch);
    return 1;
}
static void emu_conv2d_backward(vae_backend *be, real *din, real *dw, real *db, const real *dout,
                                const real *in, const real *w, const vae_conv_geom *g, int B) {
    if (db)
        vae_emu_bias_grad_nchw(S, db, dout, B, g->cout, g->hout * g->wout, E(be)->bias_partials);
    if (dw && emu_conv_wgrad(be, dw, in, dout, B, g->cin, g->hin, g->win, g->cout, g->hout,
                             g->wout, g->k, g->stride, g->pad))
        dw = NULL;
    /* the data gradient: the convT of dout with w [cout, cin, k, k] */
    if (din && B > 0 &&
        emu_convt_direct(din, dout, w, NULL, VAE_CUDA_CONVT_NONE, 0, B, g->cout, g->hout,
                         g->wout, g->cin, g->hin, g->win, g->k, g->stride, g->pad))
        din = NULL;
    /* what no kernel of ours took: the CPU's */
    if (din || dw) C(be)->conv2d_backward(C(be), din, dw, NULL, dout, in, w, g, B);
}
static void emu_convt2d_forward(vae_backend *be, real *out, const real *in, const real *w,
                                const real *b, const vae_convt_geom *g, int B) {
    if (B <= 0) return;
    if (emu_convt_direct(out, in, w, b, VAE_CUDA_CONVT_NONE, 0, B, g->cin, g->hin, g->win,
                         g->cout, g->hout, g->wout, g->k, g->stride, g->pad))
        return;
    C(be)->convt2d_forward(C(be), out, in, w, NULL, g, B);
    if (b) vae_emu_bias_add_nchw(S, out, b, B, g->cout, g->hout * g->wout);
}
static void emu_convt2d_backward(vae_backend *be, real *din, real *dw, real *db,
                                 const real *dout, const real *in, const real *w,
                                 const vae_convt_geom *g, int B) {
    if (db)
        vae_emu_bias_grad_nchw(S, db, dout, B, g->cout, g->hout * g->wout, E(be)->bias_partials);
    /* dw: the weight gradient of the conv dout -> in (conv terms: x = dout,
     * dy = in, w [cin, cout, k, k] as a filter [cin out, cout in]) */
    if (dw && emu_conv_wgrad(be, dw, dout, in, B, g->cout, g->hout, g->wout, g->cin, g->hin,
                             g->win, g->k, g->stride, g->pad))
        dw = NULL;
    /* the data gradient: the conv of dout with w as that filter */
    if (din && emu_conv_direct(din, dout, w, NULL, VAE_CUDA_CONVT_NONE, 0, B, g->cout, g->hout,
                               g->wout, g->cin, g->hin, g->win, g->k, g->stride, g->pad))
        din = NULL;
    /* what no kernel of ours took: the CPU's */
    if (din || dw) C(be)->convt2d_backward(C(be), din, dw, NULL, dout, in, w, g, B);
}
/* dense + ReLU as the CUDA backend's fallback (no cuBLASLt ReLU epilogues):
 * the GEMM, our bias and activation kernels (in the backward the ReLU's
 * with the bias gradient below, fused); no mask */
static void emu_dense_relu_forward(vae_backend *be, real *out, void *mask, const real *in,
                                   const real *w, const real *b, int B, int I, int O) {
    emu_dense_forward(be, out, in, w, b, B, I, O);
    vae_emu_act_forward(S, out, out, (size_t)B * O, VAE_ACT_RELU, 0);
}
static void emu_dense_backward_relu(vae_backend *be, real *din, real *dbin, real *dw, real *db,
                                    const real *dout, const real *in, const void *mask,
                                    const real *w, int B, int I, int O) {
    emu_dense_backward(be, din, dw, db, dout, in, w, B, I, O);
    if (!din) return;
    if (dbin)
        vae_emu_act_bias_grad_rows(S, din, dbin, din, in, B, I, VAE_ACT_RELU, 0,
                                   E(be)->bias_partials);
    else
        vae_emu_act_backward(S, din, din, in, (size_t)B * I, VAE_ACT_RELU, 0);
}
static void emu_act_forward(vae_backend *be, real *out, const real *in, size_t n, vae_act act,
                            real slope) {
    vae_emu_act_forward(S, out, in, n, (int)act, slope);
}
static void emu_act_backward(vae_backend *be, real *din, const real *dout, const real *out,
                             size_t n, vae_act act, real slope) {
    vae_emu_act_backward(S, din, dout, out, n, (int)act, slope);
}

/* ---- fused VAE ops, reductions, optimizer, bookkeeping, data ---- */
/* conv / convT + activation: the library's convolution (the CPU's, no
 * bias), then bias + activation in one kernel, as the CUDA backend; a conv
 * or convT a direct kernel takes: bias and activation fused into it */
/* out [B, C, HW] = act(out + b[c]) in one kernel (b may be NULL), as the
 * CUDA backend's bias_act */
static void emu_bias_act(real *out, const real *b, int B, int ch, int HW, vae_act act,
                         real slope) {
    if (b) vae_emu_bias_act_nchw(S, out, b, B, ch, HW, (int)act, slope);
    else vae_emu_act_forward(S, out, out, (size_t)B * ch * HW, (int)act, slope);
}
static void emu_conv2d_act_forward(vae_backend *be, real *out, const real *in, const real *w,
                                   const real *b, const vae_conv_geom *g, int B, vae_act act,
                                   real slope) {
    if (B <= 0) return;
    const int dact = act == VAE_ACT_LEAKY_RELU ? VAE_CUDA_CONVT_LEAKY_RELU : VAE_CUDA_CONVT_RELU;
    if (emu_conv_direct(out, in, w, b, dact, slope, B, g->cin, g->hin, g->win, g->cout, g->hout,
                        g->wout, g->k, g->stride, g->pad))
        return;
    C(be)->conv2d_forward(C(be), out, in, w, NULL, g, B);
    emu_bias_act(out, b, B, g->cout, g->hout * g->wout, act, slope);
}
static void emu_convt2d_act_forward(vae_backend *be, real *out, const real *in, const real *w,
                                    const real *b, const vae_convt_geom *g, int B, vae_act act,
                                    real slope) {
    if (B <= 0) return;
    const int dact = act == VAE_ACT_LEAKY_RELU ? VAE_CUDA_CONVT_LEAKY_RELU : VAE_CUDA_CONVT_RELU;
    if (emu_convt_direct(out, in, w, b, dact, slope, B, g->cin, g->hin, g->win, g->cout, g->hout,
                         g->wout, g->k, g->stride, g->pad))
        return;
    C(be)->convt2d_forward(C(be), out, in, w, NULL, g, B);
    emu_bias_act(out, b, B, g->cout, g->hout * g->wout, act, slope);
}
static void emu_act_backward_bias(vae_backend *be, real *din, real *db, const real *dout,
                                  const real *out, int B, int ch, int HW, vae_act act,
                                  real slope) {
    if (ch <= 0) return;
    if (!db) {
        if (B > 0 && HW > 0)
            vae_emu_act_backward(S, din, dout, out, (size_t)B * ch * HW, (int)act, slope);
        return;
    }
    vae_emu_act_bias_grad_nchw(S, din, db, dout, out, B, ch, HW, (int)act, slope,
                               E(be)->bias_partials);
}

static void emu_reparam_forward(vae_backend *be, real *z, const real *head, int B, int L,
                                uint64_t seed, uint32_t stream, const vae_step_vals *sv) {
    vae_emu_reparam_forward(S, z, head, B, L, seed, stream, sv);
}
static void emu_kl_backward(vae_backend *be, real *dhead, real *kl, const real *dz,
                            const real *head, int B, int L, uint64_t seed, uint32_t stream,
                            const vae_step_vals *sv) {
    vae_emu_kl_backward(S, dhead, kl, dz, head, B, L, seed, stream, sv);
}
static void emu_log_q_minus_log_p(vae_backend *be, real *out, const real *z, const real *head,
                                  int B, int L, uint64_t seed, uint32_t stream,
                                  const vae_step_vals *sv) {
    vae_emu_log_q_minus_log_p(S, out, z, head, B, L, seed, stream, sv);
}
static void emu_recon_loss(vae_backend *be, real *dout, real *recon, const real *out,
                           const real *x, int B, int D, vae_likelihood lik, real sigma,
                           real grad_scale) {
    vae_emu_recon_loss(S, dout, recon, out, x, B, D, (int)lik, sigma, grad_scale);
}
static void emu_sum_into(vae_backend *be, double *acc, const real *v, size_t n) {
    vae_emu_sum(S, acc, v, n, 0, 1, E(be)->partials);
}
static void emu_sum2_into(vae_backend *be, double *acc0, const real *v0, size_t n0,
                          double *acc1, const real *v1, size_t n1) {
    vae_emu_sum_pair(S, acc0, v0, n0, acc1, v1, n1, E(be)->partials);
}
static void emu_sumsq(vae_backend *be, double *acc, const real *v, size_t n) {
    vae_emu_sum(S, acc, v, n, 1, 0, E(be)->partials);
}
static void emu_adam_step(vae_backend *be, real *p, const real *g, real *m, real *v, size_t n,
                          const vae_adam_hp *hp, real clip, const double *gnorm2, int *bad,
                          const vae_step_vals *sv) {
    vae_emu_adam(S, p, g, m, v, n, hp, clip, gnorm2, bad, sv);
}
static void emu_step_begin(vae_backend *be, vae_step_vals *sv, const vae_step_plan *plan) {
    vae_emu_step_begin(S, sv, *plan);
}
static void emu_step_commit(vae_backend *be, double *acc, int *state, const vae_step_vals *sv,
                            int max_bad) {
    vae_emu_step_commit(S, acc, state, sv, max_bad);
}
static void emu_step_snapshot(vae_backend *be, double *acc_dst, int *state_dst,
                              const double *acc, const int *state) {
    vae_emu_step_snapshot(S, acc_dst, state_dst, acc, state);
}
static void emu_gather_batch(vae_backend *be, real *x, const uint8_t *data, const int32_t *idx,
                             const vae_step_vals *sv, int B, int D) {
    vae_emu_gather_batch(S, x, data, idx, sv, B, D);
}
static void emu_to_u8(vae_backend *be, uint8_t *px, const real *out, size_t n,
                      vae_likelihood lik) {
    vae_emu_to_u8(S, px, out, n, lik == VAE_LIK_BERNOULLI);
}
static void emu_normal_fill(vae_backend *be, real *z, size_t n, uint64_t seed, uint32_t stream,
                            uint64_t sub, uint64_t first) {
    vae_emu_normal_fill(S, z, n, seed, stream, sub, first);
}
static void emu_latent_fill(vae_backend *be, real *z, int n, int64_t first,
                            const vae_latent_spec *spec, const real *vec) {
    vae_emu_latent_fill(S, z, n, first, spec, vec);
}
static void emu_round_mantissa(vae_backend *be, real *x, size_t n, int bits) {
    vae_emu_round_mantissa(S, x, n, bits);
}

static void emu_destroy(vae_backend *be) {
    if (!be) return;
    emu_ctx *c = E(be);
    c->cpu->release(c->cpu, c->bias_partials);
    c->cpu->release(c->cpu, c->partials);
    c->cpu->destroy(c->cpu);
    free(c);
    free(be);
}

vae_backend *vae_backend_emu_create(void) {
    if (vae_emu_probe_kernels() != cudaSuccess) return NULL;
    vae_backend *cpu = vae_backend_cpu_create(1); /* one thread: BLAS workers would spin while kernels run */
    if (!cpu) return NULL;
    vae_backend *be = calloc(1, sizeof *be);
    emu_ctx *c = calloc(1, sizeof *c);
    if (!be || !c) {
        free(be);
        free(c);
        cpu->destroy(cpu);
        vae_error_set(VAE_ENOMEM, "emulator backend: out of memory");
        return NULL;
    }
    c->cpu = cpu;
    c->partials = cpu->alloc(cpu, VAE_CUDA_REDUCE_SCRATCH * sizeof(double));
    c->bias_partials = cpu->alloc(cpu, VAE_CUDA_BIAS_SCRATCH * sizeof(double));
    be->ctx = c;
    if (!c->partials || !c->bias_partials) {
        if (c->partials) cpu->release(cpu, c->partials);
        if (c->bias_partials) cpu->release(cpu, c->bias_partials);
        cpu->destroy(cpu);
        free(c);
        free(be);
        return NULL;
    }
    /* the completion counters at their ends start at zero, as the CUDA
     * backend's (its arena's scratch is zeroed) */
    cpu->zero(cpu, c->partials, VAE_CUDA_REDUCE_SCRATCH * sizeof(double));
    cpu->zero(cpu, c->bias_partials, VAE_CUDA_BIAS_SCRATCH * sizeof(double));
    be->name = "cuda-emulator";
    be->batch_variant = 1; /* as the CUDA backend (its sampler path) */
    be->alloc = emu_alloc;
    be->release = emu_release;
    be->upload = emu_upload;
    be->download = emu_download;
    be->zero = emu_zero;
    be->sync = emu_sync;
    be->destroy = emu_destroy;
    be->dense_forward = emu_dense_forward;
    be->dense_backward = emu_dense_backward;
    be->conv2d_forward = emu_conv2d_forward;
    be->conv2d_backward = emu_conv2d_backward;
    be->convt2d_forward = emu_convt2d_forward;
    be->convt2d_backward = emu_convt2d_backward;
    be->dense_relu_forward = emu_dense_relu_forward;
    be->dense_backward_relu = emu_dense_backward_relu;
    be->act_forward = emu_act_forward;
    be->act_backward = emu_act_backward;
    be->conv2d_act_forward = emu_conv2d_act_forward;
    be->convt2d_act_forward = emu_convt2d_act_forward;
    be->act_backward_bias = emu_act_backward_bias;
    be->reparam_forward = emu_reparam_forward;
    be->kl_backward = emu_kl_backward;
    be->log_q_minus_log_p = emu_log_q_minus_log_p;
    be->recon_loss = emu_recon_loss;
    be->sum_into = emu_sum_into;
    be->sum2_into = emu_sum2_into;
    be->sumsq = emu_sumsq;
    be->adam_step = emu_adam_step;
    be->step_begin = emu_step_begin;
    be->step_commit = emu_step_commit;
    be->step_snapshot = emu_step_snapshot;
    be->gather_batch = emu_gather_batch;
    be->to_u8 = emu_to_u8;
    be->normal_fill = emu_normal_fill;
    be->latent_fill = emu_latent_fill;
    be->round_mantissa = emu_round_mantissa;
    return be;
}

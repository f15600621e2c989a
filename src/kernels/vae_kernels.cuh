/* vae_kernels.cuh — the launchers of the CUDA backend's own kernels.
 *
 * Plain C declarations (extern "C"), included by src/host/backend_cuda.c.
 * Each launcher takes the stream first, sizes the grid (256 threads,
 * grid-stride loops), launches and checks the launch with CUDA_LAUNCH_CHECK.
 * Pointers are device memory; shapes follow include/vae_backend.h
 * (B batch, L latent, D pixels per image, C channels, HW = H*W).
 * All launchers return without launching when the element count is zero.
 * `sv` is always a device pointer to the step's vae_step_vals block
 * (vae_math.h): the kernels read the per-step values (noise subsequence, KL
 * weight, batch offset, bias corrections, step index) from it at run time,
 * so the launches can be captured into a CUDA graph and replayed.
 *
 * Families and files:
 *   act.cu     relu / leaky relu forward and backward
 *   bias.cu    bias add and bias gradient for dense rows and NCHW images
 *   fused.cu   reparameterisation, KL + reparam backward, log q - log p,
 *              reconstruction loss + gradient, to_u8, normal_fill
 *   reduce.cu  deterministic sum / sum of squares into a double
 *   adam.cu    Adam/AdamW with on-device clipping and non-finite skip;
 *              step_begin, step_commit, step_snapshot (one-thread bookkeeping)
 *   data.cu    batch gather uint8 -> real
 *   convt.cu   direct transposed convolution / convolution data gradient
 */
#ifndef VAE_KERNELS_CUH
#define VAE_KERNELS_CUH

#include <cuda_runtime_api.h>

#include "vae_core.h"
#include "vae_math.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Most blocks of vae_cuda_sum; the caller provides a scratch buffer of
 * VAE_CUDA_REDUCE_SCRATCH doubles: the blocks' partial sums, then a
 * completion counter (common.cuh, vae_last_block). */
#define VAE_CUDA_REDUCE_MAX_BLOCKS 1024
#define VAE_CUDA_REDUCE_SCRATCH (VAE_CUDA_REDUCE_MAX_BLOCKS + 1)
/* Doubles of scratch the bias-gradient launchers take (520 KiB): 65536 for
 * their pass-1 partials, then VAE_CUDA_BIAS_COUNTERS completion counters
 * (unsigned). Both scratch buffers must be zero when first given to a
 * launcher, and each belongs to one stream (its launches keep the counters
 * at zero between them). */
#define VAE_CUDA_BIAS_COUNTERS 2048
#define VAE_CUDA_BIAS_SCRATCH (65536 + VAE_CUDA_BIAS_COUNTERS / 2)

/* ---- act.cu (act: 0 relu, 1 leaky relu; see vae_act) ---- */
void vae_cuda_act_forward(cudaStream_t s, real *out, const real *in, size_t n, int act,
                          real slope);
void vae_cuda_act_backward(cudaStream_t s, real *din, const real *dout, const real *out,
                           size_t n, int act, real slope);

/* ---- bias.cu ---- */
/* out[r, c] += b[c] for out [rows, cols] */
void vae_cuda_bias_add_rows(cudaStream_t s, real *out, const real *b, int rows, int cols);
/* db[c] = sum_r dout[r, c] */
void vae_cuda_bias_grad_rows(cudaStream_t s, real *db, const real *dout, int rows, int cols,
                             double *partials);
/* din = dout * act'(out) (act_backward's values; din == dout allowed) and
 * db[c] = sum_r din[r, c], in one pass over [rows, cols]: a dense + ReLU
 * pair's ReLU backward with the dense layer's bias gradient; act -1: db only
 * (din and out unused: vae_cuda_bias_grad_rows) */
void vae_cuda_act_bias_grad_rows(cudaStream_t s, real *din, real *db, const real *dout,
                                 const real *out, int rows, int cols, int act, real slope,
                                 double *partials);
/* out[b, c, hw] += bias[c] for out [B, C, HW] */
void vae_cuda_bias_add_nchw(cudaStream_t s, real *out, const real *bias, int B, int C, int HW);
/* db[c] = sum_{b, hw} dout[b, c, hw] */
void vae_cuda_bias_grad_nchw(cudaStream_t s, real *db, const real *dout, int B, int C, int HW,
                             double *partials);
/* out[b, c, hw] = act(out[b, c, hw] + bias[c]); act: a vae_act, or -1 for none */
void vae_cuda_bias_act_nchw(cudaStream_t s, real *out, const real *bias, int B, int C, int HW,
                            int act, real slope);
/* din = dout * act'(out) (act_backward's values; din == dout allowed) and
 * db[c] = sum_{b, hw} din[b, c, hw], in one pass over [B, C, HW];
 * act -1: db only (din and out unused: vae_cuda_bias_grad_nchw) */
void vae_cuda_act_bias_grad_nchw(cudaStream_t s, real *din, real *db, const real *dout,
                                 const real *out, int B, int C, int HW, int act, real slope,
                                 double *partials);

/* ---- fused.cu ---- */
/* eps from (seed, rng_stream, sv->sub); kl_backward weights dKL by sv->kl_scale */
void vae_cuda_reparam_forward(cudaStream_t s, real *z, const real *head, int B, int L,
                              uint64_t seed, uint32_t rng_stream, const vae_step_vals *sv);
void vae_cuda_kl_backward(cudaStream_t s, real *dhead, real *kl, const real *dz,
                          const real *head, int B, int L, uint64_t seed, uint32_t rng_stream,
                          const vae_step_vals *sv);
void vae_cuda_log_q_minus_log_p(cudaStream_t s, real *out, const real *z, const real *head,
                                int B, int L, uint64_t seed, uint32_t rng_stream,
                                const vae_step_vals *sv);
/* lik: 0 Bernoulli (logits), 1 Gaussian with std sigma */
void vae_cuda_recon_loss(cudaStream_t s, real *dout, real *recon, const real *out,
                         const real *x, int B, int D, int lik, real sigma, real grad_scale);
void vae_cuda_to_u8(cudaStream_t s, uint8_t *px, const real *out, size_t n, int is_logit);
void vae_cuda_normal_fill(cudaStream_t s, real *z, size_t n, uint64_t seed, uint32_t rng_stream,
                          uint64_t sub, uint64_t first);

/* ---- reduce.cu ---- */
/* total = sum_i v[i] (square: v[i]^2), accumulated in double in a fixed order;
 * *acc = total (accumulate = 0) or *acc += total (accumulate = 1).
 * partials: VAE_CUDA_REDUCE_SCRATCH doubles of scratch, zero when first given.
 * One launch. n = 0 gives total 0. */
void vae_cuda_sum(cudaStream_t s, double *acc, const real *v, size_t n, int square,
                  int accumulate, double *partials);
/* *acc0 += sum v0, *acc1 += sum v1, the bits of two vae_cuda_sum calls; one
 * launch when each fits one block (n <= 4 * VAE_CUDA_THREADS), else those
 * two calls. */
void vae_cuda_sum_pair(cudaStream_t s, double *acc0, const real *v0, size_t n0, double *acc1,
                       const real *v1, size_t n1, double *partials);

/* ---- adam.cu ---- */
/* bias corrections sv->bc1, sv->bc2 */
void vae_cuda_adam(cudaStream_t s, real *p, const real *g, real *m, real *v, size_t n,
                   const vae_adam_hp *hp, real clip, const double *gnorm2, int *bad,
                   const vae_step_vals *sv);
/* vae_step_begin(sv, &plan) in one thread: *sv = the block of step sv->next */
void vae_cuda_step_begin(cudaStream_t s, vae_step_vals *sv, vae_step_plan plan);
/* vae_step_commit(acc, state, sv->step, sv->rows, max_bad) in one thread
 * (acc [VAE_COMMIT_ACC_N], state [VAE_STEP_STATE_N]; see vae_math.h) */
void vae_cuda_step_commit(cudaStream_t s, double *acc, int *state, const vae_step_vals *sv,
                          int max_bad);
/* acc_dst = acc [VAE_COMMIT_ACC_N], state_dst = state [VAE_STEP_STATE_N] */
void vae_cuda_step_snapshot(cudaStream_t s, double *acc_dst, int *state_dst, const double *acc,
                            const int *state);

/* ---- conv.cu ---- */
/* colT[(c R + r) R + s, (n P + p) Q + q] = x[n, c, p stride - pad + r, q stride - pad + s]
 * (0 outside x): the transposed im2col matrix of x [N, C, H, W], [C R R, N P Q] */
void vae_cuda_im2col_t(cudaStream_t s, real *col, const real *x, int N, int C, int H, int W,
                       int R, int P, int Q, int stride, int pad);
/* dx[n, c, y, x] = sum of colT[(c R + r) R + s, (n P + p) Q + q] over the taps with
 * y = p stride - pad + r, x = q stride - pad + s (r, s in order): col2im of colT
 * [C R R, N P Q] into dx [N, C, H, W] */
void vae_cuda_col2im_t(cudaStream_t s, real *dx, const real *col, int N, int C, int H, int W,
                       int R, int P, int Q, int stride, int pad);
/* out[k, n, e] = in[n, k, e]: [N, K, E] -> [K, N, E] */
void vae_cuda_swap_nk(cudaStream_t s, real *out, const real *in, int N, int K, int E);

/* ---- convt.cu ---- */
/* act of vae_cuda_convt_direct */
#define VAE_CUDA_CONVT_NONE 0
#define VAE_CUDA_CONVT_RELU 1
#define VAE_CUDA_CONVT_LEAKY_RELU 2
/* 1 if vae_cuda_convt_direct handles this shape (all sizes positive, K,
 * stride, pad <= 64, per-image sizes within int); plain C, no CUDA calls */
int vae_cuda_convt_direct_supported(int CI, int HI, int WI, int CO, int HO, int WO, int K,
                                    int stride, int pad);
/* out[n, co, oy, ox] = act(bias[co] + sum over ci, ky, kx with oy = iy stride - pad + ky,
 * ox = ix stride - pad + kx of in[n, ci, iy, ix] w[ci, co, ky, kx]): the transposed
 * convolution of in [N, CI, HI, WI] with w [CI, CO, K, K] into out [N, CO, HO, WO]
 * (= a convolution's data gradient), fp32 FMA in a fixed order (convt.cu); bias may
 * be NULL; act VAE_CUDA_CONVT_* (slope: leaky ReLU's). Nothing for an unsupported shape. */
void vae_cuda_convt_direct(cudaStream_t s, real *out, const real *in, const real *w,
                           const real *bias, int act, real slope, int N, int CI, int HI, int WI,
                           int CO, int HO, int WO, int K, int stride, int pad);

/* ---- convf.cu ---- */
/* 1 if vae_cuda_conv_direct handles this shape (all sizes positive, K, stride,
 * pad <= 64, per-image sizes within int); plain C, no CUDA calls */
int vae_cuda_conv_direct_supported(int CI, int H, int W, int CO, int HO, int WO, int K,
                                   int stride, int pad);
/* out[n, co, oy, ox] = act(bias[co] + sum over ci, ky, kx with iy = oy stride - pad + ky,
 * ix = ox stride - pad + kx inside in of in[n, ci, iy, ix] w[co, ci, ky, kx]): the
 * convolution of in [N, CI, H, W] with w [CO, CI, K, K] into out [N, CO, HO, WO] (= a
 * transposed convolution's data gradient), fp32 FMA in a fixed order (convf.cu); bias may
 * be NULL; act VAE_CUDA_CONVT_* (slope: leaky ReLU's). Nothing for an unsupported shape. */
void vae_cuda_conv_direct(cudaStream_t s, real *out, const real *in, const real *w,
                          const real *bias, int act, real slope, int N, int CI, int H, int W,
                          int CO, int HO, int WO, int K, int stride, int pad);

/* ---- convw.cu ---- */
/* 1 if vae_cuda_conv_wgrad_direct handles this shape (all sizes positive, K,
 * stride, pad <= 64, per-image sizes within int); plain C, no CUDA calls */
int vae_cuda_conv_wgrad_supported(int CI, int H, int W, int CO, int HO, int WO, int K,
                                  int stride, int pad);
/* Images per partial sum of vae_cuda_conv_wgrad_direct (its summation order
 * depends on it; convw.cu); plain C */
int vae_cuda_conv_wgrad_group(int N, int CI, int CO, int K, int HO, int WO);
/* Floats of scratch vae_cuda_conv_wgrad_direct needs (0: none); plain C */
size_t vae_cuda_conv_wgrad_scratch(int N, int CI, int CO, int K, int HO, int WO);
/* dw[co, ci, ky, kx] = sum over n, oy, ox with iy = oy stride - pad + ky, ix = ox stride -
 * pad + kx inside x of dy[n, co, oy, ox] x[n, ci, iy, ix]: the weight gradient of the
 * convolution of x [N, CI, H, W] into dy [N, CO, HO, WO], dw [CO, CI, K, K] overwritten,
 * fp32 FMA in a fixed order (convw.cu); scratch as vae_cuda_conv_wgrad_scratch says
 * (may be NULL when that is 0). Nothing for an unsupported shape or N < 1. */
void vae_cuda_conv_wgrad_direct(cudaStream_t s, real *dw, const real *x, const real *dy,
                                real *scratch, int N, int CI, int H, int W, int CO, int HO,
                                int WO, int K, int stride, int pad);

/* ---- data.cu ---- */
/* x[b, :] = data[idx[sv->row0 + b], :] / 255, b < B */
void vae_cuda_gather_batch(cudaStream_t s, real *x, const uint8_t *data, const int32_t *idx,
                           const vae_step_vals *sv, int B, int D);

/* ---- sample.cu ---- */
/* z[k, l] = vae_latent_elem(spec, vec, first + k, l), k < n, l < spec->L */
void vae_cuda_latent_fill(cudaStream_t s, real *z, int n, int64_t first,
                          const vae_latent_spec *spec, const real *vec);
/* x[i] = vae_round_mantissa(x[i], bits) */
void vae_cuda_round_mantissa(cudaStream_t s, real *x, size_t n, int bits);

/* Whether this build's kernels can run on the current device (a binary for
 * its architecture, or PTX the driver can compile). cudaSuccess if so. */
cudaError_t vae_cuda_probe_kernels(void);

/* Launch every kernel that follows with the programmatic-stream-
 * serialization attribute (1) or without (0, the default); common.cuh says
 * what it does. Only for devices of compute capability 9.0 or later. */
void vae_cuda_set_pdl(int on);
/* The PTX architecture of the kernels on the current device (90 for sm_90
 * code), or -1: programmatic dependent launch needs 90 or later. */
int vae_cuda_kernels_ptx_version(void);
/* x = relu(x) over n4 vectors of 4 (x 16-byte aligned), launched with the
 * programmatic attribute; returns the launch's status (not checked). */
cudaError_t vae_cuda_pdl_probe_launch(cudaStream_t s, real *x, size_t n4);

#ifdef __cplusplus
}
#endif
#endif /* VAE_KERNELS_CUH */

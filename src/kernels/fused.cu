/* fused.cu — the VAE-specific fused ops. All per-element math comes from
 * vae_math.h (the same lines the CPU reference runs); this file only maps
 * elements to threads and reduces.
 *
 * head[B, 2L] holds mu = head[b, :L] and lv = head[b, L:];
 * eps[b, l] = vae_normal_at(seed, stream, sv->sub, b*L + l) (Philox4x32-10 +
 * Box-Muller in double, so eps is the CPU's float to the last bit).
 * sv is the step's vae_step_vals block in device memory (vae_math.h): the
 * values that change from step to step are read there, never passed by
 * value, so a captured step replays with the current ones. Each thread loads
 * the fields it needs once into registers; every thread reads the same few
 * bytes of the 48-byte struct, a cached broadcast that is negligible beside
 * the tensors (not counted below).
 *
 *   reparam_forward   z = mu + e^(lv/2) eps
 *                     bytes/elem: 8 read + 4 written (+ ~10 Philox rounds,
 *                     one double log/sqrt/sin-or-cos)
 *   kl_backward       kl[b] = sum_l 1/2 (mu^2 + e^lv - 1 - lv)
 *                     dmu = dz + s dKL/dmu,  dlv = dz eps e^(lv/2)/2 + s dKL/dlv
 *                     with s = sv->kl_scale (beta / rows)
 *                     bytes/elem: 8 (+4 dz) read, 8 written; 4/B per kl
 *   log_q_minus_log_p out[b] = sum_l 1/2 (z^2 - eps^2 - lv)
 *                     bytes/elem: 8 read; 4/B written
 *   recon_loss        recon[b] = sum_d l(out, x) (+ D/2 log(2 pi sigma^2), Gaussian)
 *                     dout = grad_scale dl/dout
 *                     bytes/elem: 8 read + 4 written (loss only: 8 read)
 *   to_u8             px = vae_to_u8(out)      bytes/elem: 4 read + 1 written
 *   normal_fill       z = vae_normal_at(seed, stream, sub, first + i)
 *                     (sub an argument: sampling is not a training step)
 *                     bytes/elem: 4 written
 *
 * Per-sample sums, accumulated in double in an order fixed by the shape
 * alone, so they are bit-identical from run to run and across GPUs (no
 * atomics):
 *   kl, log q - log p (L = 2..128 terms per sample): one warp per sample,
 *     8 samples per 256-thread block (warp w of block k takes samples
 *     8k + w, then + 8 * gridDim.x, ...); lane j adds l = j, j+32, ... in
 *     order, then the xor butterfly (vae_warp_sum, common.cuh);
 *   recon (D = 784 or 3072 per sample): one block per sample; thread t adds
 *     d = t, t+256, ... in order, then the block tree of common.cuh.
 * reparam_forward splits i = b*L + l in 32-bit unsigned arithmetic when
 * B*L < 2^31 (vae_index_fits_u32), in size_t otherwise.
 */
#include "common.cuh"
#include "vae_kernels.cuh"
#include "vae_backend.h" /* vae_math.h, VAE_LIK_* */

template <typename I>
__global__ void reparam_forward_kernel(real *z, const real *head, size_t n, int L, uint64_t seed,
                                       uint32_t rng_stream, const vae_step_vals *sv) {
    const uint64_t sub = sv->sub;
    const I uL = (I)L;
    VAE_GRID_STRIDE_LOOP_T(I, i, n) {
        I b = i / uL, l = i - b * uL;
        const real *h = head + (size_t)b * 2 * (size_t)L;
        real eps = vae_normal_at(seed, rng_stream, sub, (uint64_t)i);
        z[i] = vae_reparam(h[l], h[(size_t)L + l], eps);
    }
}

/* Samples per block of the warp-per-sample kernels. */
#define VAE_SAMPLES_PER_BLOCK (VAE_CUDA_THREADS / 32)

/* Blocks for B samples, one warp each (the sample loop covers the rest). */
static unsigned vae_grid_for_samples(int B) {
    unsigned g = (unsigned)((B + VAE_SAMPLES_PER_BLOCK - 1) / VAE_SAMPLES_PER_BLOCK);
    if (g > VAE_CUDA_MAX_GRID) g = VAE_CUDA_MAX_GRID;
    return g ? g : 1u;
}

/* One warp per sample (b is uniform over the warp, so whole warps run the
 * loop body and the full-mask shuffles of vae_warp_sum together). b is
 * unsigned: b < B < 2^31 and the stride is below 2^22, so b + stride does not
 * wrap. */
__global__ void kl_backward_kernel(real *dhead, real *kl, const real *dz, const real *head,
                                   int B, int L, uint64_t seed, uint32_t rng_stream,
                                   const vae_step_vals *sv) {
    const real beta_scale = sv->kl_scale;
    const uint64_t sub = sv->sub;
    const int lane = threadIdx.x & 31;
    for (unsigned b = blockIdx.x * VAE_SAMPLES_PER_BLOCK + (threadIdx.x >> 5); b < (unsigned)B;
         b += gridDim.x * VAE_SAMPLES_PER_BLOCK) {
        const size_t row = (size_t)b * (size_t)L; /* b*L: index of sample b's first term */
        const real *h = head + 2 * row;
        real *dh = dhead ? dhead + 2 * row : NULL;
        double acc = 0;
        for (int l = lane; l < L; l += 32) {
            real mu = h[l], lv = h[L + l];
            acc += (double)vae_kl_term(mu, lv);
            if (dh) {
                real gmu = beta_scale * vae_kl_grad_mu(mu);
                real glv = beta_scale * vae_kl_grad_lv(lv);
                if (dz) {
                    uint64_t idx = (uint64_t)(row + (size_t)l);
                    real eps = vae_normal_at(seed, rng_stream, sub, idx);
                    real d = dz[idx];
                    gmu = d + gmu;
                    glv = vae_reparam_grad_lv(d, lv, eps) + glv;
                }
                dh[l] = gmu;
                dh[L + l] = glv;
            }
        }
        acc = vae_warp_sum(acc);
        if (lane == 0 && kl) kl[b] = (real)acc;
    }
}

/* One warp per sample, as kl_backward_kernel. */
__global__ void log_q_minus_log_p_kernel(real *out, const real *z, const real *head, int B, int L,
                                         uint64_t seed, uint32_t rng_stream,
                                         const vae_step_vals *sv) {
    const uint64_t sub = sv->sub;
    const int lane = threadIdx.x & 31;
    for (unsigned b = blockIdx.x * VAE_SAMPLES_PER_BLOCK + (threadIdx.x >> 5); b < (unsigned)B;
         b += gridDim.x * VAE_SAMPLES_PER_BLOCK) {
        const size_t row = (size_t)b * (size_t)L;
        const real *lv = head + 2 * row + L;
        double acc = 0;
        for (int l = lane; l < L; l += 32) {
            uint64_t idx = (uint64_t)(row + (size_t)l);
            real eps = vae_normal_at(seed, rng_stream, sub, idx);
            acc += (double)vae_log_q_minus_log_p(z[idx], lv[l], eps);
        }
        acc = vae_warp_sum(acc);
        if (lane == 0) out[b] = (real)acc;
    }
}

/* lik is uniform over the launch, so the branch does not diverge. */
__global__ void recon_loss_kernel(real *dout, real *recon, const real *out, const real *x, int D,
                                  int lik, real sigma, real grad_scale) {
    __shared__ double shm[VAE_CUDA_THREADS / 32];
    const size_t b = blockIdx.x;
    const real *o = out + b * (size_t)D;
    const real *t = x + b * (size_t)D;
    real *g = dout ? dout + b * (size_t)D : NULL;
    const real inv_var = lik == VAE_LIK_GAUSSIAN ? (real)1 / (sigma * sigma) : (real)0;
    double acc = 0;
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        real od = o[d], td = t[d];
        if (lik == VAE_LIK_GAUSSIAN) {
            acc += (double)vae_gauss_nll(od, td, inv_var);
            if (g) g[d] = grad_scale * vae_gauss_nll_grad(od, td, inv_var);
        } else {
            acc += (double)vae_bce_logits(od, td);
            if (g) g[d] = grad_scale * vae_bce_logits_grad(od, td);
        }
    }
    acc = vae_block_sum(acc, shm);
    if (threadIdx.x == 0 && recon) {
        if (lik == VAE_LIK_GAUSSIAN) {
            double s = (double)sigma;
            acc += 0.5 * (double)D * log(6.283185307179586 * s * s);
        }
        recon[b] = (real)acc;
    }
}

__global__ void to_u8_kernel(uint8_t *px, const real *out, size_t n, int is_logit) {
    VAE_GRID_STRIDE_LOOP(i, n) px[i] = vae_to_u8(out[i], is_logit);
}

__global__ void normal_fill_kernel(real *z, size_t n, uint64_t seed, uint32_t rng_stream,
                                   uint64_t sub, uint64_t first) {
    VAE_GRID_STRIDE_LOOP(i, n) z[i] = vae_normal_at(seed, rng_stream, sub, first + (uint64_t)i);
}

/* ------------------------------------------------------------ launchers */

extern "C" void vae_cuda_reparam_forward(cudaStream_t s, real *z, const real *head, int B, int L,
                                         uint64_t seed, uint32_t rng_stream,
                                         const vae_step_vals *sv) {
    if (B <= 0 || L <= 0) return;
    size_t n = (size_t)B * L;
    if (vae_index_fits_u32(n))
        reparam_forward_kernel<unsigned><<<vae_grid_for(n), VAE_CUDA_THREADS, 0, s>>>(
            z, head, n, L, seed, rng_stream, sv);
    else
        reparam_forward_kernel<size_t><<<vae_grid_for(n), VAE_CUDA_THREADS, 0, s>>>(
            z, head, n, L, seed, rng_stream, sv);
    CUDA_LAUNCH_CHECK();
}

extern "C" void vae_cuda_kl_backward(cudaStream_t s, real *dhead, real *kl, const real *dz,
                                     const real *head, int B, int L, uint64_t seed,
                                     uint32_t rng_stream, const vae_step_vals *sv) {
    if (B <= 0) return;
    kl_backward_kernel<<<vae_grid_for_samples(B), VAE_CUDA_THREADS, 0, s>>>(
        dhead, kl, dz, head, B, L, seed, rng_stream, sv);
    CUDA_LAUNCH_CHECK();
}

extern "C" void vae_cuda_log_q_minus_log_p(cudaStream_t s, real *out, const real *z,
                                           const real *head, int B, int L, uint64_t seed,
                                           uint32_t rng_stream, const vae_step_vals *sv) {
    if (B <= 0) return;
    log_q_minus_log_p_kernel<<<vae_grid_for_samples(B), VAE_CUDA_THREADS, 0, s>>>(
        out, z, head, B, L, seed, rng_stream, sv);
    CUDA_LAUNCH_CHECK();
}

extern "C" void vae_cuda_recon_loss(cudaStream_t s, real *dout, real *recon, const real *out,
                                    const real *x, int B, int D, int lik, real sigma,
                                    real grad_scale) {
    if (B <= 0) return;
    recon_loss_kernel<<<B, VAE_CUDA_THREADS, 0, s>>>(dout, recon, out, x, D, lik, sigma,
                                                     grad_scale);
    CUDA_LAUNCH_CHECK();
}

extern "C" void vae_cuda_to_u8(cudaStream_t s, uint8_t *px, const real *out, size_t n,
                               int is_logit) {
    if (n == 0) return;
    to_u8_kernel<<<vae_grid_for(n), VAE_CUDA_THREADS, 0, s>>>(px, out, n, is_logit);
    CUDA_LAUNCH_CHECK();
}

extern "C" void vae_cuda_normal_fill(cudaStream_t s, real *z, size_t n, uint64_t seed,
                                     uint32_t rng_stream, uint64_t sub, uint64_t first) {
    if (n == 0) return;
    normal_fill_kernel<<<vae_grid_for(n), VAE_CUDA_THREADS, 0, s>>>(z, n, seed, rng_stream, sub,
                                                                    first);
    CUDA_LAUNCH_CHECK();
}

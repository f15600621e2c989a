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
 * The per-sample sums (kl, log q - log p, recon) use one block per sample:
 * thread t takes elements t, t+256, ... in order, accumulating in double, and
 * the block tree of common.cuh adds the 256 partials in a fixed order, so the
 * sums are bit-identical from run to run (no atomics).
 */
#include "common.cuh"
#include "vae_kernels.cuh"
#include "vae_backend.h" /* vae_math.h, VAE_LIK_* */

__global__ void reparam_forward_kernel(real *z, const real *head, int B, int L, uint64_t seed,
                                       uint32_t rng_stream, const vae_step_vals *sv) {
    const size_t n = (size_t)B * L;
    const uint64_t sub = sv->sub;
    VAE_GRID_STRIDE_LOOP(i, n) {
        size_t b = i / (size_t)L, l = i % (size_t)L;
        const real *h = head + b * 2 * (size_t)L;
        real eps = vae_normal_at(seed, rng_stream, sub, (uint64_t)i);
        z[i] = vae_reparam(h[l], h[L + l], eps);
    }
}

__global__ void kl_backward_kernel(real *dhead, real *kl, const real *dz, const real *head,
                                   int L, uint64_t seed, uint32_t rng_stream,
                                   const vae_step_vals *sv) {
    __shared__ double shm[VAE_CUDA_THREADS / 32];
    const real beta_scale = sv->kl_scale;
    const uint64_t sub = sv->sub;
    const size_t b = blockIdx.x;
    const real *h = head + b * 2 * (size_t)L;
    real *dh = dhead ? dhead + b * 2 * (size_t)L : NULL;
    double acc = 0;
    for (int l = threadIdx.x; l < L; l += blockDim.x) {
        real mu = h[l], lv = h[L + l];
        acc += (double)vae_kl_term(mu, lv);
        if (dh) {
            real gmu = beta_scale * vae_kl_grad_mu(mu);
            real glv = beta_scale * vae_kl_grad_lv(lv);
            if (dz) {
                uint64_t idx = (uint64_t)(b * (size_t)L + (size_t)l);
                real eps = vae_normal_at(seed, rng_stream, sub, idx);
                real d = dz[idx];
                gmu = d + gmu;
                glv = vae_reparam_grad_lv(d, lv, eps) + glv;
            }
            dh[l] = gmu;
            dh[L + l] = glv;
        }
    }
    acc = vae_block_sum(acc, shm);
    if (threadIdx.x == 0 && kl) kl[b] = (real)acc;
}

__global__ void log_q_minus_log_p_kernel(real *out, const real *z, const real *head, int L,
                                         uint64_t seed, uint32_t rng_stream,
                                         const vae_step_vals *sv) {
    __shared__ double shm[VAE_CUDA_THREADS / 32];
    const uint64_t sub = sv->sub;
    const size_t b = blockIdx.x;
    const real *h = head + b * 2 * (size_t)L;
    double acc = 0;
    for (int l = threadIdx.x; l < L; l += blockDim.x) {
        uint64_t idx = (uint64_t)(b * (size_t)L + (size_t)l);
        real eps = vae_normal_at(seed, rng_stream, sub, idx);
        acc += (double)vae_log_q_minus_log_p(z[idx], h[L + l], eps);
    }
    acc = vae_block_sum(acc, shm);
    if (threadIdx.x == 0) out[b] = (real)acc;
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
    size_t n = (size_t)B * L;
    if (n == 0) return;
    reparam_forward_kernel<<<vae_grid_for(n), VAE_CUDA_THREADS, 0, s>>>(z, head, B, L, seed,
                                                                        rng_stream, sv);
    CUDA_LAUNCH_CHECK();
}

extern "C" void vae_cuda_kl_backward(cudaStream_t s, real *dhead, real *kl, const real *dz,
                                     const real *head, int B, int L, uint64_t seed,
                                     uint32_t rng_stream, const vae_step_vals *sv) {
    if (B <= 0) return;
    kl_backward_kernel<<<B, VAE_CUDA_THREADS, 0, s>>>(dhead, kl, dz, head, L, seed, rng_stream,
                                                      sv);
    CUDA_LAUNCH_CHECK();
}

extern "C" void vae_cuda_log_q_minus_log_p(cudaStream_t s, real *out, const real *z,
                                           const real *head, int B, int L, uint64_t seed,
                                           uint32_t rng_stream, const vae_step_vals *sv) {
    if (B <= 0) return;
    log_q_minus_log_p_kernel<<<B, VAE_CUDA_THREADS, 0, s>>>(out, z, head, L, seed, rng_stream,
                                                            sv);
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

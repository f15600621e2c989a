/* fused.cu — the VAE-specific fused ops. All per-element math comes from
 * vae_math.h (the same lines the CPU reference runs); this file only maps
 * elements to threads and reduces.
 *
 * head[B, 2L] holds mu = head[b, :L] and lv = head[b, L:];
 * eps[b, l] = vae_normal_at(seed, stream, sv->sub, b*L + l) (Philox4x32-10 +
 * vae_math.h's float Box-Muller, so eps is the CPU's float to the last bit).
 * sv is the step's vae_step_vals block in device memory (vae_math.h): the
 * values that change from step to step are read there, never passed by
 * value, so a captured step replays with the current ones. Each thread loads
 * the fields it needs once into registers; every thread reads the same few
 * bytes of the 56-byte struct, a cached broadcast that is negligible beside
 * the tensors (not counted below).
 *
 * The noise comes four normals at a time: the flat index e = b*L + l is cut
 * into Philox blocks e = 4q + j, and one thread computes the four normals of
 * block q with one vae_normal4_at call (one Philox, two Box-Muller pairs:
 * bit-identical to four vae_normal_at calls) and handles
 * the elements e = 4q .. 4q+3 that are its op's (a block at the edge of a
 * range, e.g. normal_fill from first = 4q + 2, uses only some lanes).
 *
 *   reparam_forward   z = mu + e^(lv/2) eps
 *                     bytes/elem: 8 read + 4 written (+ a quarter of a Philox
 *                     and half a float Box-Muller pair)
 *                     one thread per Philox block; float4 loads/stores when
 *                     L % 4 == 0 and head, z are 16-byte aligned
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
 *                     float4 loads, uchar4 stores, VAE_VEC_UNROLL per thread
 *                     (common.cuh; scalar head/tail where unaligned)
 *   normal_fill       z = vae_normal_at(seed, stream, sub, first + i)
 *                     (sub an argument: sampling is not a training step)
 *                     bytes/elem: 4 written; one thread per Philox block,
 *                     a float4 store where the block's 4 elements are
 *                     16-byte aligned in z
 *
 * Per-sample sums, accumulated in double in an order fixed by the shape
 * alone, so they are bit-identical from run to run and across GPUs (no
 * atomics):
 *   kl, log q - log p (L <= 1024): a 256-thread block takes a tile of
 *     T = floor(1024 / L) consecutive samples (the tiles of the batch in
 *     turn, grid-stride). Its threads take the Philox blocks that meet the
 *     tile's T*L elements (thread t: t, t + 256), compute each element (the
 *     gradients, written out, and the term, kept in shared memory); after a
 *     barrier warp w sums samples w, w + 8, ... of the tile: lane j adds
 *     l = j, j+32, ... in order, then the xor butterfly (vae_warp_sum,
 *     common.cuh). L > 1024: one warp per sample (8 per block), the same
 *     lane order, one vae_normal_at per element. Either way the terms are
 *     added in the same order, so the sums do not depend on the path;
 *   recon (D = 784 or 3072 per sample): one block per sample; the row is cut
 *     into groups of 4 (d = 4g .. 4g+3, the last maybe short) and thread t
 *     adds groups t, t+256, ... (each group's elements in order), then the
 *     block tree of common.cuh. A group is a float4 load of out and x when
 *     D % 4 == 0 and both are 16-byte aligned, four scalar loads otherwise
 *     (same values, same order).
 * The flat index of the per-element kernels is split in 32-bit unsigned
 * arithmetic when B*L < 2^31 (vae_index_fits_u32), in size_t otherwise.
 */
#include "common.cuh"
#include "vae_kernels.cuh"
#include "vae_backend.h" /* vae_math.h, VAE_LIK_* */

/* The four lanes of a float4, by index. */
__device__ __forceinline__ float4 f4_of(const real v[4]) {
    float4 r;
    r.x = v[0];
    r.y = v[1];
    r.z = v[2];
    r.w = v[3];
    return r;
}
__device__ __forceinline__ void f4_to(real v[4], float4 r) {
    v[0] = r.x;
    v[1] = r.y;
    v[2] = r.z;
    v[3] = r.w;
}

/* ------------------------------------------------------------- reparam */

/* Thread per Philox block q: elements i = 4q .. 4q+3 below n, i = b L + l.
 * vec: L % 4 == 0 and head, z 16-byte aligned, so every block lies in one
 * row at an aligned l and n is a multiple of 4. */
template <typename I>
__global__ void reparam_forward_kernel(real *z, const real *head, size_t n, int L, uint64_t seed,
                                       uint32_t rng_stream, const vae_step_vals *sv, int vec) {
    VAE_PDL_ENTRY();
    const uint64_t sub = sv->sub;
    const I uL = (I)L, nn = (I)n;
    const size_t ng = (n + 3) / 4;
    VAE_GRID_STRIDE_LOOP_T(I, q, ng) {
        const I i0 = 4 * q;
        I b = i0 / uL, l = i0 - b * uL;
        real mu[4] = {0, 0, 0, 0}, lv[4] = {0, 0, 0, 0}, eps[4], zz[4];
        if (vec) {
            const real *h = head + (size_t)b * 2 * (size_t)L + l;
            f4_to(mu, *reinterpret_cast<const float4 *>(h));
            f4_to(lv, *reinterpret_cast<const float4 *>(h + L));
        } else {
#pragma unroll
            for (int j = 0; j < 4; j++)
                if (i0 + (I)j < nn) {
                    const real *h = head + (size_t)b * 2 * (size_t)L;
                    mu[j] = h[l];
                    lv[j] = h[(size_t)L + l];
                    if (++l == uL) {
                        l = 0;
                        b++;
                    }
                }
        }
        vae_normal4_at(seed, rng_stream, sub, (uint64_t)q, eps);
#pragma unroll
        for (int j = 0; j < 4; j++) zz[j] = vae_reparam(mu[j], lv[j], eps[j]);
        if (vec) {
            *reinterpret_cast<float4 *>(z + i0) = f4_of(zz);
        } else {
#pragma unroll
            for (int j = 0; j < 4; j++)
                if (i0 + (I)j < nn) z[i0 + (I)j] = zz[j];
        }
    }
}

/* ------------------------------------- per-sample sums: tiles of samples */

/* Elements of a tile (its terms in shared memory); L <= KL_TILE takes the
 * tile kernels, larger L the warp-per-sample ones. */
#define KL_TILE 1024

/* Samples per block of the warp-per-sample kernels. */
#define VAE_SAMPLES_PER_BLOCK (VAE_CUDA_THREADS / 32)

/* The geometry of tile `tile` of T samples (b0 .. b0+nb-1 of B): elements
 * [e0, e1) of the flat index b*L + l, Philox blocks q0 .. q0+nq-1; the term of
 * element e sits at term[e - 4 q0], so sample b0 + s starts at
 * off0 + s L with off0 = e0 - 4 q0 (0..3). */
template <typename I>
struct kl_tile {
    int b0, nb;
    I e0, e1, q0, nq;
    int off0;
    __device__ kl_tile(int tile, int T, int B, I uL) {
        b0 = tile * T;
        nb = B - b0 < T ? B - b0 : T;
        e0 = (I)b0 * uL;
        e1 = e0 + (I)nb * uL;
        q0 = e0 / 4;
        nq = (e1 - 1) / 4 - q0 + 1;
        off0 = (int)(e0 - 4 * q0);
    }
};

/* out[b0 + s] = sum of the L terms of sample s of the tile, s < nb: warp w
 * takes s = w, w + 8, ...; lane j adds l = j, j+32, ... in order, then the
 * butterfly — the order of the warp-per-sample kernels. Whole warps call it. */
__device__ __forceinline__ void kl_tile_sums(real *out, const real *term, int b0, int nb, int L,
                                             int off0) {
    const int lane = threadIdx.x & 31;
    for (int s = threadIdx.x >> 5; s < nb; s += VAE_SAMPLES_PER_BLOCK) {
        const real *t = term + off0 + s * L;
        double acc = 0;
        for (int l = lane; l < L; l += 32) acc += (double)t[l];
        acc = vae_warp_sum(acc);
        if (lane == 0) out[b0 + s] = (real)acc;
    }
}

/* The gradients of one element (the lines of the CPU reference). */
__device__ __forceinline__ void kl_grads(real mu, real lv, real d, real eps, int with_dz,
                                         real beta_scale, real *gmu, real *glv) {
    real gm = beta_scale * vae_kl_grad_mu(mu);
    real gl = beta_scale * vae_kl_grad_lv(lv);
    if (with_dz) {
        gm = d + gm;
        gl = vae_reparam_grad_lv(d, lv, eps) + gl;
    }
    *gmu = gm;
    *glv = gl;
}

/* kl_backward for L <= KL_TILE, T = KL_TILE / L samples per tile. vec:
 * L % 4 == 0 and head, dz, dhead (those given) 16-byte aligned, so every
 * Philox block of a tile lies in one row at an aligned l. */
template <typename I>
__global__ void kl_backward_tile_kernel(real *dhead, real *kl, const real *dz, const real *head,
                                        int B, int L, int T, uint64_t seed, uint32_t rng_stream,
                                        const vae_step_vals *sv, int vec) {
    VAE_PDL_ENTRY();
    __shared__ real term[KL_TILE + 4];
    const real beta_scale = sv->kl_scale;
    const uint64_t sub = sv->sub;
    const int with_dz = dhead && dz;
    const I uL = (I)L;
    const int ntiles = (B + T - 1) / T;
    for (int tile = blockIdx.x; tile < ntiles; tile += gridDim.x) {
        const kl_tile<I> tl(tile, T, B, uL);
        for (I t = threadIdx.x; t < tl.nq; t += VAE_CUDA_THREADS) {
            const I q = tl.q0 + t, e4 = 4 * q;
            real *tq = term + (e4 - 4 * tl.q0);
            real mu[4] = {0, 0, 0, 0}, lv[4] = {0, 0, 0, 0}, d[4] = {0, 0, 0, 0};
            real eps[4] = {0, 0, 0, 0}, gmu[4], glv[4];
            if (vec) {
                const I b = e4 / uL, l = e4 - b * uL;
                const real *h = head + (size_t)b * 2 * (size_t)L + l;
                f4_to(mu, *reinterpret_cast<const float4 *>(h));
                f4_to(lv, *reinterpret_cast<const float4 *>(h + L));
                if (with_dz) f4_to(d, *reinterpret_cast<const float4 *>(dz + e4));
                if (with_dz) vae_normal4_at(seed, rng_stream, sub, (uint64_t)q, eps);
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    tq[j] = vae_kl_term(mu[j], lv[j]);
                    kl_grads(mu[j], lv[j], d[j], eps[j], with_dz, beta_scale, &gmu[j], &glv[j]);
                }
                if (dhead) {
                    real *dh = dhead + (size_t)b * 2 * (size_t)L + l;
                    *reinterpret_cast<float4 *>(dh) = f4_of(gmu);
                    *reinterpret_cast<float4 *>(dh + L) = f4_of(glv);
                }
            } else {
                /* the block's elements in the tile: e4 + j for j in [ja, jb) */
                const int ja = e4 < tl.e0 ? (int)(tl.e0 - e4) : 0;
                const int jb = e4 + 4 > tl.e1 ? (int)(tl.e1 - e4) : 4;
                const I ea = e4 + (I)ja, b0 = ea / uL, l0 = ea - b0 * uL;
                I b = b0, l = l0;
#pragma unroll
                for (int j = 0; j < 4; j++)
                    if (j >= ja && j < jb) {
                        const real *h = head + (size_t)b * 2 * (size_t)L;
                        mu[j] = h[l];
                        lv[j] = h[(size_t)L + l];
                        if (with_dz) d[j] = dz[e4 + (I)j];
                        if (++l == uL) {
                            l = 0;
                            b++;
                        }
                    }
                if (with_dz) vae_normal4_at(seed, rng_stream, sub, (uint64_t)q, eps);
                b = b0, l = l0;
#pragma unroll
                for (int j = 0; j < 4; j++)
                    if (j >= ja && j < jb) {
                        tq[j] = vae_kl_term(mu[j], lv[j]);
                        if (dhead) {
                            kl_grads(mu[j], lv[j], d[j], eps[j], with_dz, beta_scale, &gmu[j],
                                     &glv[j]);
                            real *dh = dhead + (size_t)b * 2 * (size_t)L;
                            dh[l] = gmu[j];
                            dh[(size_t)L + l] = glv[j];
                        }
                        if (++l == uL) {
                            l = 0;
                            b++;
                        }
                    }
            }
        }
        __syncthreads();
        if (kl) kl_tile_sums(kl, term, tl.b0, tl.nb, L, tl.off0);
        __syncthreads();
    }
}

/* log_q_minus_log_p for L <= KL_TILE, as kl_backward_tile_kernel. vec:
 * L % 4 == 0 and head, z 16-byte aligned. */
template <typename I>
__global__ void log_q_tile_kernel(real *out, const real *z, const real *head, int B, int L, int T,
                                  uint64_t seed, uint32_t rng_stream, const vae_step_vals *sv,
                                  int vec) {
    VAE_PDL_ENTRY();
    __shared__ real term[KL_TILE + 4];
    const uint64_t sub = sv->sub;
    const I uL = (I)L;
    const int ntiles = (B + T - 1) / T;
    for (int tile = blockIdx.x; tile < ntiles; tile += gridDim.x) {
        const kl_tile<I> tl(tile, T, B, uL);
        for (I t = threadIdx.x; t < tl.nq; t += VAE_CUDA_THREADS) {
            const I q = tl.q0 + t, e4 = 4 * q;
            real *tq = term + (e4 - 4 * tl.q0);
            real zz[4] = {0, 0, 0, 0}, lv[4] = {0, 0, 0, 0}, eps[4];
            if (vec) {
                const I b = e4 / uL, l = e4 - b * uL;
                f4_to(lv, *reinterpret_cast<const float4 *>(head + (size_t)b * 2 * (size_t)L +
                                                            (size_t)L + l));
                f4_to(zz, *reinterpret_cast<const float4 *>(z + e4));
                vae_normal4_at(seed, rng_stream, sub, (uint64_t)q, eps);
#pragma unroll
                for (int j = 0; j < 4; j++) tq[j] = vae_log_q_minus_log_p(zz[j], lv[j], eps[j]);
            } else {
                const int ja = e4 < tl.e0 ? (int)(tl.e0 - e4) : 0;
                const int jb = e4 + 4 > tl.e1 ? (int)(tl.e1 - e4) : 4;
                const I ea = e4 + (I)ja;
                I b = ea / uL, l = ea - b * uL;
#pragma unroll
                for (int j = 0; j < 4; j++)
                    if (j >= ja && j < jb) {
                        lv[j] = head[(size_t)b * 2 * (size_t)L + (size_t)L + l];
                        zz[j] = z[e4 + (I)j];
                        if (++l == uL) {
                            l = 0;
                            b++;
                        }
                    }
                vae_normal4_at(seed, rng_stream, sub, (uint64_t)q, eps);
#pragma unroll
                for (int j = 0; j < 4; j++)
                    if (j >= ja && j < jb) tq[j] = vae_log_q_minus_log_p(zz[j], lv[j], eps[j]);
            }
        }
        __syncthreads();
        kl_tile_sums(out, term, tl.b0, tl.nb, L, tl.off0);
        __syncthreads();
    }
}

/* Blocks for B samples, one warp each (the sample loop covers the rest). */
static unsigned vae_grid_for_samples(int B) {
    unsigned g = (unsigned)((B + VAE_SAMPLES_PER_BLOCK - 1) / VAE_SAMPLES_PER_BLOCK);
    if (g > VAE_CUDA_MAX_GRID) g = VAE_CUDA_MAX_GRID;
    return g ? g : 1u;
}

/* L > KL_TILE: one warp per sample (b is uniform over the warp, so whole
 * warps run the loop body and the full-mask shuffles of vae_warp_sum
 * together), one vae_normal_at per element. b is unsigned: b < B < 2^31 and
 * the stride is below 2^22, so b + stride does not wrap. */
__global__ void kl_backward_kernel(real *dhead, real *kl, const real *dz, const real *head,
                                   int B, int L, uint64_t seed, uint32_t rng_stream,
                                   const vae_step_vals *sv) {
    VAE_PDL_ENTRY();
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
                uint64_t idx = (uint64_t)(row + (size_t)l);
                real d = dz ? dz[idx] : (real)0;
                real eps = dz ? vae_normal_at(seed, rng_stream, sub, idx) : (real)0;
                kl_grads(mu, lv, d, eps, dz != NULL, beta_scale, &dh[l], &dh[L + l]);
            }
        }
        acc = vae_warp_sum(acc);
        if (lane == 0 && kl) kl[b] = (real)acc;
    }
}

/* L > KL_TILE: one warp per sample, as kl_backward_kernel. */
__global__ void log_q_minus_log_p_kernel(real *out, const real *z, const real *head, int B, int L,
                                         uint64_t seed, uint32_t rng_stream,
                                         const vae_step_vals *sv) {
    VAE_PDL_ENTRY();
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

/* ---------------------------------------------------------- recon loss */

/* One element: its loss added to acc, its gradient returned. lik is uniform
 * over the launch, so the branch does not diverge. */
__device__ __forceinline__ real recon_elem(real od, real td, int lik, real inv_var,
                                           real grad_scale, double *acc) {
    if (lik == VAE_LIK_GAUSSIAN) {
        *acc += (double)vae_gauss_nll(od, td, inv_var);
        return grad_scale * vae_gauss_nll_grad(od, td, inv_var);
    }
    *acc += (double)vae_bce_logits(od, td);
    return grad_scale * vae_bce_logits_grad(od, td);
}

/* Group q of a row of D elements: elements 4q .. 4q+3, those past D read
 * as 0 (and never used). */
__device__ __forceinline__ float4 recon_group(const real *r, int D, int q, int vec) {
    if (vec) return reinterpret_cast<const float4 *>(r)[q];
    float4 v;
    v.x = r[4 * q];
    v.y = 4 * q + 1 < D ? r[4 * q + 1] : (real)0;
    v.z = 4 * q + 2 < D ? r[4 * q + 2] : (real)0;
    v.w = 4 * q + 3 < D ? r[4 * q + 3] : (real)0;
    return v;
}

/* Groups a thread loads before it computes. */
#define RECON_UNROLL 2

/* One block per sample. vec: D % 4 == 0 and out, x, dout (if given)
 * 16-byte aligned. A block moves only one image (D = 784: 196 threads with
 * a group each), so the bytes in flight come from many resident blocks: the
 * launch bound keeps the kernel at 40 registers, 6 blocks per SM (52 and 4
 * without it; no spills either way). */
__global__ void __launch_bounds__(VAE_CUDA_THREADS, 6) recon_loss_kernel(real *dout, real *recon, const real *out, const real *x, int D,
                                  int lik, real sigma, real grad_scale, int vec) {
    VAE_PDL_ENTRY();
    __shared__ double shm[VAE_CUDA_THREADS / 32];
    const size_t b = blockIdx.x;
    const real *o = out + b * (size_t)D;
    const real *t = x + b * (size_t)D;
    real *g = dout ? dout + b * (size_t)D : NULL;
    const real inv_var = lik == VAE_LIK_GAUSSIAN ? (real)1 / (sigma * sigma) : (real)0;
    const int ng = (D + 3) / 4;
    double acc = 0;
    for (int q0 = threadIdx.x; q0 < ng; q0 += RECON_UNROLL * VAE_CUDA_THREADS) {
        float4 ov[RECON_UNROLL] = {}, tv[RECON_UNROLL] = {};
#pragma unroll
        for (int k = 0; k < RECON_UNROLL; k++) {
            const int q = q0 + k * VAE_CUDA_THREADS;
            if (q < ng) {
                ov[k] = recon_group(o, D, q, vec);
                tv[k] = recon_group(t, D, q, vec);
            }
        }
#pragma unroll
        for (int k = 0; k < RECON_UNROLL; k++) {
            const int q = q0 + k * VAE_CUDA_THREADS;
            if (q >= ng) break;
            real od[4], td[4], gd[4] = {0, 0, 0, 0};
            f4_to(od, ov[k]);
            f4_to(td, tv[k]);
            const int m = D - 4 * q < 4 ? D - 4 * q : 4;
#pragma unroll
            for (int j = 0; j < 4; j++)
                if (j < m) gd[j] = recon_elem(od[j], td[j], lik, inv_var, grad_scale, &acc);
            if (!g) continue;
            if (vec) {
                reinterpret_cast<float4 *>(g)[q] = f4_of(gd);
            } else {
#pragma unroll
                for (int j = 0; j < 4; j++)
                    if (j < m) g[4 * q + j] = gd[j];
            }
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

/* ---------------------------------------------------------------- to_u8 */

__global__ void to_u8_kernel(uint8_t *px, const real *out, size_t n, size_t head, size_t nv,
                             int is_logit) {
    VAE_PDL_ENTRY();
    const float4 *o4 = reinterpret_cast<const float4 *>(out + head);
    uchar4 *p4 = reinterpret_cast<uchar4 *>(px + head);
    VAE_VEC_LOOP(base, nv) {
        float4 o[VAE_VEC_UNROLL] = {};
#pragma unroll
        for (int k = 0; k < VAE_VEC_UNROLL; k++)
            if (VAE_VEC_AT(base, k) < nv) o[k] = o4[VAE_VEC_AT(base, k)];
#pragma unroll
        for (int k = 0; k < VAE_VEC_UNROLL; k++) {
            if (VAE_VEC_AT(base, k) >= nv) break;
            uchar4 u;
            u.x = vae_to_u8(o[k].x, is_logit);
            u.y = vae_to_u8(o[k].y, is_logit);
            u.z = vae_to_u8(o[k].z, is_logit);
            u.w = vae_to_u8(o[k].w, is_logit);
            p4[VAE_VEC_AT(base, k)] = u;
        }
    }
    VAE_GRID_STRIDE_LOOP(s, n - 4 * nv) {
        const size_t i = vae_vec_scalar_at(s, head, nv);
        px[i] = vae_to_u8(out[i], is_logit);
    }
}

/* ---------------------------------------------------------- normal_fill */

/* z[i] = vae_normal_at(seed, stream, sub, first + i), i < n. Thread per
 * Philox block g0 + q (g0 = first / 4): its lane j is element
 * i = 4q + j - off (off = first % 4), written when 0 <= i < n. vec: z + 4q -
 * off is 16-byte aligned, so a block with all four lanes in range is one
 * float4 store. */
__global__ void normal_fill_kernel(real *z, size_t n, uint64_t seed, uint32_t rng_stream,
                                   uint64_t sub, uint64_t first, int vec) {
    VAE_PDL_ENTRY();
    const uint64_t g0 = first >> 2;
    const size_t off = (size_t)(first & 3);
    const size_t ng = (off + n + 3) / 4;
    VAE_GRID_STRIDE_LOOP(q, ng) {
        real e[4];
        vae_normal4_at(seed, rng_stream, sub, g0 + (uint64_t)q, e);
        const size_t p = 4 * q; /* element p - off is lane 0 */
        if (vec && p >= off && p - off + 4 <= n) {
            *reinterpret_cast<float4 *>(z + (p - off)) = f4_of(e);
        } else {
#pragma unroll
            for (int j = 0; j < 4; j++)
                if (p + j >= off && p + j - off < n) z[p + j - off] = e[j];
        }
    }
}

/* ------------------------------------------------------------ launchers */

extern "C" void vae_cuda_reparam_forward(cudaStream_t s, real *z, const real *head, int B, int L,
                                         uint64_t seed, uint32_t rng_stream,
                                         const vae_step_vals *sv) {
    if (B <= 0 || L <= 0) return;
    const size_t n = (size_t)B * L, ng = (n + 3) / 4;
    const int vec = L % 4 == 0 && vae_vec4_head(z, sizeof(real)) == 0 &&
                    vae_vec4_head(head, sizeof(real)) == 0;
    if (vae_index_fits_u32(n + 3))
        vae_launch(reparam_forward_kernel<unsigned>, vae_grid_for(ng), VAE_CUDA_THREADS, 0, s)(
            z, head, n, L, seed, rng_stream, sv, vec);
    else
        vae_launch(reparam_forward_kernel<size_t>, vae_grid_for(ng), VAE_CUDA_THREADS, 0, s)(
            z, head, n, L, seed, rng_stream, sv, vec);
    CUDA_LAUNCH_CHECK();
}

/* Blocks of a tile launch: one per tile, the tile loop covers the rest. */
static unsigned kl_grid_for_tiles(int B, int T) {
    unsigned g = (unsigned)((B + T - 1) / T);
    return g > VAE_CUDA_MAX_GRID ? VAE_CUDA_MAX_GRID : g;
}

extern "C" void vae_cuda_kl_backward(cudaStream_t s, real *dhead, real *kl, const real *dz,
                                     const real *head, int B, int L, uint64_t seed,
                                     uint32_t rng_stream, const vae_step_vals *sv) {
    if (B <= 0) return;
    if (L <= 0 || L > KL_TILE) {
        vae_launch(kl_backward_kernel, vae_grid_for_samples(B), VAE_CUDA_THREADS, 0, s)(
            dhead, kl, dz, head, B, L, seed, rng_stream, sv);
        CUDA_LAUNCH_CHECK();
        return;
    }
    const int T = KL_TILE / L;
    const int vec = L % 4 == 0 && vae_vec4_head(head, sizeof(real)) == 0 &&
                    (!dz || vae_vec4_head(dz, sizeof(real)) == 0) &&
                    (!dhead || vae_vec4_head(dhead, sizeof(real)) == 0);
    const size_t n = (size_t)B * L;
    if (vae_index_fits_u32(n + 3))
        vae_launch(kl_backward_tile_kernel<unsigned>, kl_grid_for_tiles(B, T),
                   VAE_CUDA_THREADS, 0, s)(dhead, kl, dz, head, B, L, T, seed, rng_stream, sv, vec);
    else
        vae_launch(kl_backward_tile_kernel<size_t>, kl_grid_for_tiles(B, T),
                   VAE_CUDA_THREADS, 0, s)(dhead, kl, dz, head, B, L, T, seed, rng_stream, sv, vec);
    CUDA_LAUNCH_CHECK();
}

extern "C" void vae_cuda_log_q_minus_log_p(cudaStream_t s, real *out, const real *z,
                                           const real *head, int B, int L, uint64_t seed,
                                           uint32_t rng_stream, const vae_step_vals *sv) {
    if (B <= 0) return;
    if (L <= 0 || L > KL_TILE) {
        vae_launch(log_q_minus_log_p_kernel, vae_grid_for_samples(B), VAE_CUDA_THREADS, 0, s)(
            out, z, head, B, L, seed, rng_stream, sv);
        CUDA_LAUNCH_CHECK();
        return;
    }
    const int T = KL_TILE / L;
    const int vec = L % 4 == 0 && vae_vec4_head(head, sizeof(real)) == 0 &&
                    vae_vec4_head(z, sizeof(real)) == 0;
    const size_t n = (size_t)B * L;
    if (vae_index_fits_u32(n + 3))
        vae_launch(log_q_tile_kernel<unsigned>, kl_grid_for_tiles(B, T), VAE_CUDA_THREADS, 0, s)(
            out, z, head, B, L, T, seed, rng_stream, sv, vec);
    else
        vae_launch(log_q_tile_kernel<size_t>, kl_grid_for_tiles(B, T), VAE_CUDA_THREADS, 0, s)(
            out, z, head, B, L, T, seed, rng_stream, sv, vec);
    CUDA_LAUNCH_CHECK();
}

extern "C" void vae_cuda_recon_loss(cudaStream_t s, real *dout, real *recon, const real *out,
                                    const real *x, int B, int D, int lik, real sigma,
                                    real grad_scale) {
    if (B <= 0) return;
    const int vec = D % 4 == 0 && vae_vec4_head(out, sizeof(real)) == 0 &&
                    vae_vec4_head(x, sizeof(real)) == 0 &&
                    (!dout || vae_vec4_head(dout, sizeof(real)) == 0);
    vae_launch(recon_loss_kernel, B, VAE_CUDA_THREADS, 0, s)(
        dout, recon, out, x, D, lik, sigma, grad_scale, vec);
    CUDA_LAUNCH_CHECK();
}

extern "C" void vae_cuda_to_u8(cudaStream_t s, uint8_t *px, const real *out, size_t n,
                               int is_logit) {
    if (n == 0) return;
    const vae_vec4_split sp = vae_vec4_split_of(
        n, vae_vec4_agree(vae_vec4_head(out, sizeof(real)), vae_vec4_head(px, 1)));
    vae_launch(to_u8_kernel, vae_grid_for_split(sp), VAE_CUDA_THREADS, 0, s)(
        px, out, n, sp.head, sp.nv, is_logit);
    CUDA_LAUNCH_CHECK();
}

extern "C" void vae_cuda_normal_fill(cudaStream_t s, real *z, size_t n, uint64_t seed,
                                     uint32_t rng_stream, uint64_t sub, uint64_t first) {
    if (n == 0) return;
    const size_t ng = ((size_t)(first & 3) + n + 3) / 4;
    /* z + 4q - off aligned for every q: off elements before z's first boundary... */
    const int vec = vae_vec4_head(z, sizeof(real)) == (int)((4 - (first & 3)) & 3);
    vae_launch(normal_fill_kernel, vae_grid_for(ng), VAE_CUDA_THREADS, 0, s)(
        z, n, seed, rng_stream, sub, first, vec);
    CUDA_LAUNCH_CHECK();
}

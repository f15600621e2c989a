/* sample.cu — latents for `vae sample`, and reduced-precision rounding.
 *
 *   latent_fill     z[k, l] = vae_latent_elem(spec, vec, first + k, l)
 *                   (prior draw, grid point or interpolation point; the math,
 *                   and what each kind means, is in vae_math.h)
 *                   bytes/elem: 4 written (+ 4 read of vec for grid/interp)
 *   round_mantissa  x = vae_round_mantissa(x, bits), in place
 *                   bytes/elem: 4 read + 4 written
 *
 * latent_fill: a prior draw is z[k, l] = vae_normal_at(seed, VAE_RNG_PRIOR, 0,
 * (first + k) L + l), i.e. normal_fill (fused.cu) of the flat index from
 * first L on, which computes the four normals of a Philox block at once;
 * the launcher hands it there. The other kinds take four consecutive
 * elements per thread (one index division per four, 32-bit when n L < 2^31,
 * a float4 store when z is 16-byte aligned), each element one
 * vae_latent_elem call.
 * round_mantissa: float4 loads and stores, VAE_VEC_UNROLL per thread per
 * iteration, a scalar head/tail where x is not 16-byte aligned (common.cuh).
 *
 * Every element is computed on its own, so the result does not depend on the
 * launch shape and equals the CPU reference bit for bit (vae_normal_at is
 * single IEEE float operations, the grid coordinates are evaluated in double
 * and rounded once).
 */
#include "common.cuh"
#include "vae_kernels.cuh"

/* Elements 4q .. 4q+3 (below n) per thread: k = i / L, l = i % L. vec: z is
 * 16-byte aligned. */
template <typename I>
__global__ void latent_fill_kernel(real *z, size_t n, int64_t first, vae_latent_spec spec,
                                   const real *vec, int vec4) {
    VAE_PDL_ENTRY();
    const I uL = (I)spec.L, nn = (I)n;
    const size_t ng = (n + 3) / 4;
    VAE_GRID_STRIDE_LOOP_T(I, q, ng) {
        const I i0 = 4 * q;
        I k = i0 / uL, l = i0 - k * uL;
        real v[4] = {0, 0, 0, 0};
#pragma unroll
        for (int j = 0; j < 4; j++)
            if (i0 + (I)j < nn) {
                v[j] = vae_latent_elem(&spec, vec, first + (int64_t)k, (int)l);
                if (++l == uL) {
                    l = 0;
                    k++;
                }
            }
        if (vec4 && i0 + 4 <= nn) {
            float4 w;
            w.x = v[0];
            w.y = v[1];
            w.z = v[2];
            w.w = v[3];
            reinterpret_cast<float4 *>(z)[q] = w;
        } else {
#pragma unroll
            for (int j = 0; j < 4; j++)
                if (i0 + (I)j < nn) z[i0 + (I)j] = v[j];
        }
    }
}

__global__ void round_mantissa_kernel(real *x, size_t n, size_t head, size_t nv, int bits) {
    VAE_PDL_ENTRY();
    float4 *x4 = reinterpret_cast<float4 *>(x + head);
    VAE_VEC_LOOP(base, nv) {
        float4 a[VAE_VEC_UNROLL] = {};
#pragma unroll
        for (int k = 0; k < VAE_VEC_UNROLL; k++)
            if (VAE_VEC_AT(base, k) < nv) a[k] = x4[VAE_VEC_AT(base, k)];
#pragma unroll
        for (int k = 0; k < VAE_VEC_UNROLL; k++) {
            if (VAE_VEC_AT(base, k) >= nv) break;
            float4 r;
            r.x = vae_round_mantissa(a[k].x, bits);
            r.y = vae_round_mantissa(a[k].y, bits);
            r.z = vae_round_mantissa(a[k].z, bits);
            r.w = vae_round_mantissa(a[k].w, bits);
            x4[VAE_VEC_AT(base, k)] = r;
        }
    }
    VAE_GRID_STRIDE_LOOP(s, n - 4 * nv) {
        const size_t i = vae_vec_scalar_at(s, head, nv);
        x[i] = vae_round_mantissa(x[i], bits);
    }
}

extern "C" void vae_cuda_latent_fill(cudaStream_t s, real *z, int n, int64_t first,
                                     const vae_latent_spec *spec, const real *vec) {
    const size_t total = (size_t)n * (size_t)spec->L;
    if (total == 0) return;
    if (spec->kind == VAE_LATENT_PRIOR) {
        /* vae_latent_elem's prior index (first + k) L + l in uint64 */
        vae_cuda_normal_fill(s, z, total, spec->seed, VAE_RNG_PRIOR, 0,
                             (uint64_t)first * (uint64_t)spec->L);
        return;
    }
    const size_t ng = (total + 3) / 4;
    const int vec4 = vae_vec4_head(z, sizeof(real)) == 0;
    if (vae_index_fits_u32(total + 3))
        vae_launch(latent_fill_kernel<unsigned>, vae_grid_for(ng), VAE_CUDA_THREADS, 0, s)(
            z, total, first, *spec, vec, vec4);
    else
        vae_launch(latent_fill_kernel<size_t>, vae_grid_for(ng), VAE_CUDA_THREADS, 0, s)(
            z, total, first, *spec, vec, vec4);
    CUDA_LAUNCH_CHECK();
}

extern "C" void vae_cuda_round_mantissa(cudaStream_t s, real *x, size_t n, int bits) {
    if (n == 0 || bits >= 23) return;
    const vae_vec4_split sp = vae_vec4_split_of(n, vae_vec4_head(x, sizeof(real)));
    vae_launch(round_mantissa_kernel, vae_grid_for_split(sp), VAE_CUDA_THREADS, 0, s)(
        x, n, sp.head, sp.nv, bits);
    CUDA_LAUNCH_CHECK();
}

/* sample.cu — latents for `vae sample`, and reduced-precision rounding.
 *
 *   latent_fill     z[k, l] = vae_latent_elem(spec, vec, first + k, l)
 *                   (prior draw, grid point or interpolation point; the math,
 *                   and what each kind means, is in vae_math.h)
 *                   bytes/elem: 4 written (+ 4 read of vec for grid/interp)
 *   round_mantissa  x = vae_round_mantissa(x, bits), in place
 *                   bytes/elem: 4 read + 4 written
 *
 * Both are grid-stride loops over the flat index; every element is computed
 * on its own, so the result does not depend on the launch shape and equals
 * the CPU reference bit for bit (vae_normal_at and the grid coordinates are
 * evaluated in double and rounded once).
 */
#include "common.cuh"
#include "vae_kernels.cuh"

__global__ void latent_fill_kernel(real *z, size_t n, int64_t first, vae_latent_spec spec,
                                   const real *vec) {
    VAE_GRID_STRIDE_LOOP(i, n) {
        const int64_t k = (int64_t)(i / (size_t)spec.L);
        const int l = (int)(i % (size_t)spec.L);
        z[i] = vae_latent_elem(&spec, vec, first + k, l);
    }
}

__global__ void round_mantissa_kernel(real *x, size_t n, int bits) {
    VAE_GRID_STRIDE_LOOP(i, n) x[i] = vae_round_mantissa(x[i], bits);
}

extern "C" void vae_cuda_latent_fill(cudaStream_t s, real *z, int n, int64_t first,
                                     const vae_latent_spec *spec, const real *vec) {
    const size_t total = (size_t)n * (size_t)spec->L;
    if (total == 0) return;
    latent_fill_kernel<<<vae_grid_for(total), VAE_CUDA_THREADS, 0, s>>>(z, total, first, *spec,
                                                                         vec);
    CUDA_LAUNCH_CHECK();
}

extern "C" void vae_cuda_round_mantissa(cudaStream_t s, real *x, size_t n, int bits) {
    if (n == 0 || bits >= 23) return;
    round_mantissa_kernel<<<vae_grid_for(n), VAE_CUDA_THREADS, 0, s>>>(x, n, bits);
    CUDA_LAUNCH_CHECK();
}

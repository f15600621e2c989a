/* act.cu — pointwise activations, forward and backward.
 *
 *   relu:        y = x > 0 ? x : 0           dx = y > 0 ? dy : 0
 *   leaky relu:  y = x > 0 ? x : slope x     dx = y > 0 ? dy : slope dy   (slope > 0)
 *
 * The backward pass reads the forward *output* y (the input may have been
 * overwritten in place), as the CPU reference does. NaN inputs fail `> 0` and
 * take the negative branch on both backends.
 * Bytes per element: forward 4 read + 4 written; backward 8 read + 4 written.
 * In-place (out == in, din == dout) is allowed: each element is read before it
 * is written by the same thread.
 */
#include "common.cuh"
#include "vae_backend.h"
#include "vae_kernels.cuh"

__global__ void act_forward_kernel(real *out, const real *in, size_t n, int act, real slope) {
    VAE_GRID_STRIDE_LOOP(i, n) {
        real x = in[i];
        out[i] = x > 0 ? x : (act == VAE_ACT_LEAKY_RELU ? slope * x : (real)0);
    }
}

__global__ void act_backward_kernel(real *din, const real *dout, const real *out, size_t n,
                                    int act, real slope) {
    VAE_GRID_STRIDE_LOOP(i, n) {
        real d = dout[i];
        din[i] = out[i] > 0 ? d : (act == VAE_ACT_LEAKY_RELU ? slope * d : (real)0);
    }
}

extern "C" void vae_cuda_act_forward(cudaStream_t s, real *out, const real *in, size_t n,
                                     int act, real slope) {
    if (n == 0) return;
    act_forward_kernel<<<vae_grid_for(n), VAE_CUDA_THREADS, 0, s>>>(out, in, n, act, slope);
    CUDA_LAUNCH_CHECK();
}

extern "C" void vae_cuda_act_backward(cudaStream_t s, real *din, const real *dout,
                                      const real *out, size_t n, int act, real slope) {
    if (n == 0) return;
    act_backward_kernel<<<vae_grid_for(n), VAE_CUDA_THREADS, 0, s>>>(din, dout, out, n, act,
                                                                     slope);
    CUDA_LAUNCH_CHECK();
}

/* The probe lives here because every build has this family. */
extern "C" cudaError_t vae_cuda_probe_kernels(void) {
    cudaFuncAttributes attr;
    return cudaFuncGetAttributes(&attr, (const void *)act_forward_kernel);
}

/* data.cu — batch assembly on the device.
 *
 *   x[b, d] = data[idx[b], d] / 255      data [N, D] uint8, idx [B] int32
 *
 * The dataset lives on the device as bytes (4x smaller than floats); the
 * division is IEEE (nvcc's default -prec-div=true), the same float the CPU's
 * `(real)u / (real)255` gives.
 * Bytes per element: 1 read + 4 written (+ idx, cached).
 */
#include "common.cuh"
#include "vae_kernels.cuh"

__global__ void gather_batch_kernel(real *x, const uint8_t *data, const int32_t *idx, int B,
                                    int D) {
    const size_t n = (size_t)B * D;
    VAE_GRID_STRIDE_LOOP(i, n) {
        size_t b = i / (size_t)D, d = i % (size_t)D;
        x[i] = (real)data[(size_t)idx[b] * (size_t)D + d] / (real)255;
    }
}

extern "C" void vae_cuda_gather_batch(cudaStream_t s, real *x, const uint8_t *data,
                                      const int32_t *idx, int B, int D) {
    size_t n = (size_t)B * D;
    if (n == 0) return;
    gather_batch_kernel<<<vae_grid_for(n), VAE_CUDA_THREADS, 0, s>>>(x, data, idx, B, D);
    CUDA_LAUNCH_CHECK();
}

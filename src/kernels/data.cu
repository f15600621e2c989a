/* data.cu — batch assembly on the device.
 *
 *   x[b, d] = data[idx[r0 + b], d] / 255      data [N, D] uint8, idx int32,
 *                                              r0 = sv->row0
 *
 * The index array holds the epoch's whole permutation; the step's offset
 * into it, sv->row0, is read from the step's vae_step_vals block in device
 * memory (loaded once per thread into a register), so a captured step
 * gathers the batch of whichever step step_begin last opened.
 * The dataset lives on the device as bytes (4x smaller than floats); the
 * division is IEEE (nvcc's default -prec-div=true), the same float the CPU's
 * `(real)u / (real)255` gives.
 * Bytes per element: 1 read + 4 written (+ idx and the 48-byte sv, cached).
 */
#include "common.cuh"
#include "vae_kernels.cuh"

__global__ void gather_batch_kernel(real *x, const uint8_t *data, const int32_t *idx,
                                    const vae_step_vals *sv, int B, int D) {
    const size_t n = (size_t)B * D;
    const int32_t *rows = idx + sv->row0;
    VAE_GRID_STRIDE_LOOP(i, n) {
        size_t b = i / (size_t)D, d = i % (size_t)D;
        x[i] = (real)data[(size_t)rows[b] * (size_t)D + d] / (real)255;
    }
}

extern "C" void vae_cuda_gather_batch(cudaStream_t s, real *x, const uint8_t *data,
                                      const int32_t *idx, const vae_step_vals *sv, int B, int D) {
    size_t n = (size_t)B * D;
    if (n == 0) return;
    gather_batch_kernel<<<vae_grid_for(n), VAE_CUDA_THREADS, 0, s>>>(x, data, idx, sv, B, D);
    CUDA_LAUNCH_CHECK();
}

/* bias.cu — bias add and bias gradient for dense and convolution layers.
 *
 *   dense rows:  out[r, c] += b[c]                 db[c] = sum_r dout[r, c]
 *   NCHW:        out[b, c, hw] += bias[c]          db[c] = sum_{b, hw} dout[b, c, hw]
 *
 * Bytes per output element: add 4 read + 4 written (+ the bias, cached).
 * Gradients read each dout element once (4 bytes) and write C floats.
 *
 * Gradient sums are deterministic (no atomics) and accumulate in double:
 *   rows: one thread per column walks the rows in order (coalesced across
 *         columns);
 *   NCHW: one block per channel; thread t takes elements t, t+256, ... of the
 *         channel's B*HW values in (b, hw) order, then the fixed-order block
 *         tree of common.cuh.
 */
#include "common.cuh"
#include "vae_kernels.cuh"

__global__ void bias_add_rows_kernel(real *out, const real *b, size_t n, int cols) {
    VAE_GRID_STRIDE_LOOP(i, n) out[i] += b[i % (size_t)cols];
}

__global__ void bias_grad_rows_kernel(real *db, const real *dout, int rows, int cols) {
    for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < cols; c += gridDim.x * blockDim.x) {
        double acc = 0;
        for (int r = 0; r < rows; r++) acc += (double)dout[(size_t)r * cols + c];
        db[c] = (real)acc;
    }
}

__global__ void bias_add_nchw_kernel(real *out, const real *bias, size_t n, int C, int HW) {
    VAE_GRID_STRIDE_LOOP(i, n) out[i] += bias[(i / (size_t)HW) % (size_t)C];
}

__global__ void bias_grad_nchw_kernel(real *db, const real *dout, int B, int C, int HW) {
    __shared__ double shm[VAE_CUDA_THREADS / 32];
    const int c = blockIdx.x;
    const size_t per = (size_t)B * HW;
    double acc = 0;
    for (size_t j = threadIdx.x; j < per; j += blockDim.x) {
        size_t b = j / (size_t)HW, hw = j % (size_t)HW;
        acc += (double)dout[(b * C + c) * (size_t)HW + hw];
    }
    acc = vae_block_sum(acc, shm);
    if (threadIdx.x == 0) db[c] = (real)acc;
}

extern "C" void vae_cuda_bias_add_rows(cudaStream_t s, real *out, const real *b, int rows,
                                       int cols) {
    size_t n = (size_t)rows * cols;
    if (n == 0) return;
    bias_add_rows_kernel<<<vae_grid_for(n), VAE_CUDA_THREADS, 0, s>>>(out, b, n, cols);
    CUDA_LAUNCH_CHECK();
}

extern "C" void vae_cuda_bias_grad_rows(cudaStream_t s, real *db, const real *dout, int rows,
                                        int cols) {
    if (cols <= 0) return;
    bias_grad_rows_kernel<<<vae_grid_for((size_t)cols), VAE_CUDA_THREADS, 0, s>>>(db, dout, rows,
                                                                                  cols);
    CUDA_LAUNCH_CHECK();
}

extern "C" void vae_cuda_bias_add_nchw(cudaStream_t s, real *out, const real *bias, int B, int C,
                                       int HW) {
    size_t n = (size_t)B * C * HW;
    if (n == 0) return;
    bias_add_nchw_kernel<<<vae_grid_for(n), VAE_CUDA_THREADS, 0, s>>>(out, bias, n, C, HW);
    CUDA_LAUNCH_CHECK();
}

extern "C" void vae_cuda_bias_grad_nchw(cudaStream_t s, real *db, const real *dout, int B, int C,
                                        int HW) {
    if (C <= 0) return;
    bias_grad_nchw_kernel<<<C, VAE_CUDA_THREADS, 0, s>>>(db, dout, B, C, HW);
    CUDA_LAUNCH_CHECK();
}

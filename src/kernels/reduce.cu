/* reduce.cu — deterministic sums into one double (sum_into, sumsq).
 *
 *   total = sum_i v[i]        or   total = sum_i v[i]^2
 *   *acc = total  or  *acc += total
 *
 * Bytes: 4 per element read, 8 per block written/read between the passes.
 *
 * Order is fixed by n alone, never by the GPU model or by timing:
 *   pass 1: G = min(1024, ceil(n / 256)) blocks of 256 threads; thread t of
 *           block k accumulates elements k*256 + t, then + G*256, ... in
 *           double, and the block tree (common.cuh) writes partial[k];
 *   pass 2: one block adds the G partials the same way and updates *acc.
 * With G = 1 pass 1 updates *acc directly. No float atomics anywhere, so two
 * runs over the same data give the same bits. v[i]^2 is formed in double
 * (exact for a float), so sumsq loses nothing before the additions.
 */
#include "common.cuh"
#include "vae_kernels.cuh"

template <int SQUARE>
__global__ void sum_pass1_kernel(double *out, const real *v, size_t n, int accumulate) {
    __shared__ double shm[VAE_CUDA_THREADS / 32];
    double acc = 0;
    VAE_GRID_STRIDE_LOOP(i, n) {
        double x = (double)v[i];
        acc += SQUARE ? x * x : x;
    }
    acc = vae_block_sum(acc, shm);
    if (threadIdx.x == 0) {
        if (accumulate) out[blockIdx.x] += acc;
        else out[blockIdx.x] = acc;
    }
}

__global__ void sum_pass2_kernel(double *acc_out, const double *partial, int G, int accumulate) {
    __shared__ double shm[VAE_CUDA_THREADS / 32];
    double acc = 0;
    for (int k = threadIdx.x; k < G; k += blockDim.x) acc += partial[k];
    acc = vae_block_sum(acc, shm);
    if (threadIdx.x == 0) {
        if (accumulate) *acc_out += acc;
        else *acc_out = acc;
    }
}

extern "C" void vae_cuda_sum(cudaStream_t s, double *acc, const real *v, size_t n, int square,
                             int accumulate, double *partials) {
    size_t g = (n + VAE_CUDA_THREADS - 1) / VAE_CUDA_THREADS;
    if (g > VAE_CUDA_REDUCE_MAX_BLOCKS) g = VAE_CUDA_REDUCE_MAX_BLOCKS;
    if (g <= 1) {
        /* one block (n = 0 included: it writes 0 or adds 0) */
        if (square) sum_pass1_kernel<1><<<1, VAE_CUDA_THREADS, 0, s>>>(acc, v, n, accumulate);
        else sum_pass1_kernel<0><<<1, VAE_CUDA_THREADS, 0, s>>>(acc, v, n, accumulate);
        CUDA_LAUNCH_CHECK();
        return;
    }
    if (square) sum_pass1_kernel<1><<<(unsigned)g, VAE_CUDA_THREADS, 0, s>>>(partials, v, n, 0);
    else sum_pass1_kernel<0><<<(unsigned)g, VAE_CUDA_THREADS, 0, s>>>(partials, v, n, 0);
    CUDA_LAUNCH_CHECK();
    sum_pass2_kernel<<<1, VAE_CUDA_THREADS, 0, s>>>(acc, partials, (int)g, accumulate);
    CUDA_LAUNCH_CHECK();
}

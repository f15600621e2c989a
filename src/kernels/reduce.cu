/* reduce.cu — deterministic sums into one double (sum_into, sumsq).
 *
 *   total = sum_i v[i]        or   total = sum_i v[i]^2
 *   *acc = total  or  *acc += total
 *
 * Bytes: 4 per element read, 8 per block written/read between the passes.
 *
 * Order is fixed by n alone, never by the GPU model, by timing or by where v
 * lies in memory. The elements form groups of 4 (group j: elements 4j ..
 * 4j+3; the last group may be short) and
 *   pass 1: G = min(1024, ceil(ceil(n / 4) / 256)) blocks of 256 threads;
 *           thread t of block k (g = 256 k + t) adds, in double, groups
 *           g, g + 256 G, g + 2 * 256 G, ..., each group's elements in
 *           order, and the block tree (common.cuh) writes partial[k];
 *   pass 2: one block adds the G partials the same way and updates *acc:
 *           the last pass-1 block to finish (vae_last_block: an integer
 *           ticket after the partials in the caller's scratch of
 *           VAE_CUDA_REDUCE_SCRATCH doubles), so the sum is one launch.
 * With G = 1 pass 1 updates *acc directly; vae_cuda_sum_pair runs two such
 * sums (*acc += each) as the two blocks of one launch, with the same bits.
 * A group is one float4 load when v
 * is 16-byte aligned, four scalar loads otherwise — the same values added in
 * the same order. Each thread loads VAE_VEC_UNROLL groups before it adds
 * them (64 bytes in flight per thread). No float atomics anywhere, so two
 * runs over the same data give the same bits. v[i]^2 is formed in double
 * (exact for a float), so sumsq loses nothing before the additions.
 */
#include "common.cuh"
#include "vae_kernels.cuh"

/* Groups of 4 elements in n (the last one maybe short). */
__host__ __device__ __forceinline__ size_t sum_groups(size_t n) { return (n + 3) / 4; }

template <int SQUARE>
__device__ __forceinline__ double sum_add4(double acc, float4 q) {
    double x = (double)q.x;
    acc += SQUARE ? x * x : x;
    x = (double)q.y;
    acc += SQUARE ? x * x : x;
    x = (double)q.z;
    acc += SQUARE ? x * x : x;
    x = (double)q.w;
    acc += SQUARE ? x * x : x;
    return acc;
}

/* Group j of v (n elements): the missing elements of a short last group are
 * 0, which adds nothing (x + 0 == x for every double but -0, and acc starts
 * at +0, so it is never -0 when a zero is added to it). */
__device__ __forceinline__ float4 sum_group(const real *v, size_t n, size_t j, int aligned) {
    const size_t i = 4 * j;
    if (aligned && i + 4 <= n) return reinterpret_cast<const float4 *>(v)[j];
    float4 q;
    q.x = v[i];
    q.y = i + 1 < n ? v[i + 1] : 0.0f;
    q.z = i + 2 < n ? v[i + 2] : 0.0f;
    q.w = i + 3 < n ? v[i + 3] : 0.0f;
    return q;
}

/* One thread's part of pass 1: groups first, first + S, first + 2 S, ...
 * added in that order (S = the threads of the grid). */
template <int SQUARE>
__device__ __forceinline__ double sum_thread(const real *v, size_t n, int aligned, size_t first,
                                             size_t S) {
    const size_t ng = sum_groups(n);
    double acc = 0;
    for (size_t j0 = first; j0 < ng; j0 += VAE_VEC_UNROLL * S) {
        float4 q[VAE_VEC_UNROLL] = {};
#pragma unroll
        for (int k = 0; k < VAE_VEC_UNROLL; k++)
            if (j0 + k * S < ng) q[k] = sum_group(v, n, j0 + k * S, aligned);
#pragma unroll
        for (int k = 0; k < VAE_VEC_UNROLL; k++)
            if (j0 + k * S < ng) acc = sum_add4<SQUARE>(acc, q[k]);
    }
    return acc;
}

/* Pass 1 (and, with one block, the whole sum): block k's sum to partial[k];
 * the last block to finish then adds the G partials as pass 2 (header). */
template <int SQUARE>
__global__ void sum_pass1_kernel(double *acc_out, double *partial, const real *v, size_t n,
                                 int aligned, int accumulate) {
    VAE_PDL_ENTRY();
    __shared__ double shm[VAE_CUDA_THREADS / 32];
    double acc = sum_thread<SQUARE>(v, n, aligned,
                                    (size_t)blockIdx.x * VAE_CUDA_THREADS + threadIdx.x,
                                    (size_t)gridDim.x * VAE_CUDA_THREADS);
    acc = vae_block_sum(acc, shm);
    if (gridDim.x > 1) {
        if (threadIdx.x == 0) partial[blockIdx.x] = acc;
        const int G = (int)gridDim.x;
        if (!vae_last_block(reinterpret_cast<unsigned *>(partial + VAE_CUDA_REDUCE_MAX_BLOCKS),
                            (unsigned)G))
            return;
        /* pass 2, by the last block: thread t adds partials t, t + 256, ...
         * in order, then the block tree */
        acc = 0;
        for (int k = threadIdx.x; k < G; k += blockDim.x) acc += __ldcg(partial + k);
        acc = vae_block_sum(acc, shm);
    }
    if (threadIdx.x == 0) {
        if (accumulate) *acc_out += acc;
        else *acc_out = acc;
    }
}

/* Two one-block sums in one launch: block k adds v_k into *acc_k exactly
 * as sum_pass1_kernel's single block would (the same thread loop, the same
 * block tree), so the bits are those of two sums. */
__global__ void sum_pair_kernel(double *acc0, const real *v0, size_t n0, int aligned0,
                                double *acc1, const real *v1, size_t n1, int aligned1) {
    VAE_PDL_ENTRY();
    __shared__ double shm[VAE_CUDA_THREADS / 32];
    const int k = (int)blockIdx.x;
    double acc = sum_thread<0>(k ? v1 : v0, k ? n1 : n0, k ? aligned1 : aligned0, threadIdx.x,
                               VAE_CUDA_THREADS);
    acc = vae_block_sum(acc, shm);
    if (threadIdx.x == 0) *(k ? acc1 : acc0) += acc;
}

extern "C" void vae_cuda_sum_pair(cudaStream_t s, double *acc0, const real *v0, size_t n0,
                                  double *acc1, const real *v1, size_t n1, double *partials) {
    if (sum_groups(n0) > VAE_CUDA_THREADS || sum_groups(n1) > VAE_CUDA_THREADS) {
        vae_cuda_sum(s, acc0, v0, n0, 0, 1, partials);
        vae_cuda_sum(s, acc1, v1, n1, 0, 1, partials);
        return;
    }
    const int al0 = vae_vec4_head(v0, sizeof(real)) == 0;
    const int al1 = vae_vec4_head(v1, sizeof(real)) == 0;
    vae_launch(sum_pair_kernel, 2, VAE_CUDA_THREADS, 0, s)(acc0, v0, n0, al0, acc1, v1, n1, al1);
    CUDA_LAUNCH_CHECK();
}

extern "C" void vae_cuda_sum(cudaStream_t s, double *acc, const real *v, size_t n, int square,
                             int accumulate, double *partials) {
    size_t g = (sum_groups(n) + VAE_CUDA_THREADS - 1) / VAE_CUDA_THREADS;
    if (g > VAE_CUDA_REDUCE_MAX_BLOCKS) g = VAE_CUDA_REDUCE_MAX_BLOCKS;
    if (g < 1) g = 1; /* n = 0: one block writes 0 or adds 0 */
    const int aligned = vae_vec4_head(v, sizeof(real)) == 0;
    if (square)
        vae_launch(sum_pass1_kernel<1>, (unsigned)g, VAE_CUDA_THREADS, 0, s)(
            acc, partials, v, n, aligned, accumulate);
    else
        vae_launch(sum_pass1_kernel<0>, (unsigned)g, VAE_CUDA_THREADS, 0, s)(
            acc, partials, v, n, aligned, accumulate);
    CUDA_LAUNCH_CHECK();
}

/* bias.cu — bias add and bias gradient for dense and convolution layers,
 * and for conv / convT layers the same fused with the activation above them.
 *
 *   dense rows:  out[r, c] += b[c]                 db[c] = sum_r dout[r, c]
 *   rows + act:                                    din = dout act'(out),
 *                                                  db[c] = sum_r din[r, c]
 *   NCHW:        out[b, c, hw] += bias[c]          db[c] = sum_{b, hw} dout[b, c, hw]
 *   NCHW + act:  out = act(out + bias[c])          din = dout act'(out),
 *                                                  db[c] = sum_{b, hw} din[b, c, hw]
 * (act: relu or leaky relu, element by element as act.cu computes it, so the
 * fused forms give the unfused ops' values bit for bit; one pass instead of
 * two over the tensor, one launch fewer each.)
 *
 * Bytes per output element: add 4 read + 4 written (+ the bias, cached).
 * Gradients read each dout element once (4 bytes) and write C floats (with
 * the activation: + 4 read of out, + 4 written of din); when
 * the sum takes two passes, P*C double partials (8 bytes each, one per pass-1
 * block and column/channel: P*C <= 2048 for NCHW, <= 64 Ki for rows) are
 * written and read back in between — small beside dout.
 *
 * Adds: grid-stride loops; the column / channel index (i % cols,
 * (i / HW) % C) is computed in 32-bit unsigned arithmetic when n < 2^31
 * (vae_index_fits_u32), in size_t otherwise.
 *
 * Gradient sums: deterministic (no atomics, no arrival-order sums) and
 * accumulated in double, in an order fixed by the shape alone — never by the
 * GPU model, its SM count or timing — so every run on every GPU gives the
 * same bits. A size-only rule (bias_grad_plan below) splits each column's /
 * channel's terms into P consecutive chunks:
 *   pass 1: one 256-thread block per (chunk, column tile / channel) sums its
 *           chunk in double (each thread its terms in increasing order, then
 *           a fixed tree) and writes partial[c * P + p] — or, when P = 1,
 *           db[c] directly (then there is no pass 2);
 *   pass 2: one warp per column / channel: lane k adds partials k, k+32, ...
 *           in increasing p, then the xor butterfly of common.cuh — for
 *           NCHW in pass 1's launch: warp 0 of the channel's last block to
 *           finish (vae_last_block, a per-channel integer ticket in the
 *           scratch) does it, so the sum is one launch whatever P is;
 *           for rows a second launch.
 * P = terms / (smallest chunk), capped so that pass 1 has at most
 * VAE_BIAS_TARGET_BLOCKS blocks (2048: enough to fill an H100/H200, 132 SMs x
 * 8 resident blocks, whatever C is) and the partials fit the scratch; below
 * two smallest chunks P = 1, and the sum takes one launch.
 *   rows [rows, cols]: a block covers 32 columns (one per lane, so each warp
 *         reads 128 contiguous bytes of a row: coalesced) and one chunk of
 *         rows; warp w takes rows r0+w, r0+w+8, ... of its chunk (8 loads in
 *         flight per thread), and the 8 warp sums of a column are added in
 *         warp order through shared memory;
 *   NCHW [B, C, HW]: channel c's terms in (b, hw) order, j = b*HW + hw <
 *         B*HW, are cut into chunks of K (a multiple of 256); thread t takes
 *         j = j0+t, j0+t+256, ... (8 loads in flight), stepping (b, hw)
 *         incrementally without a division, then the block tree.
 *
 * Scratch: the partials go to the caller's `partials` buffer of
 * VAE_CUDA_BIAS_SCRATCH doubles (the backend's, in its arena; its first
 * 65536 for the partials, as before the counters came, so the plans are
 * unchanged), shared by the
 * launches of one stream: correct because they run in order (pass 2 of one
 * gradient finishes before pass 1 of the next starts), eagerly or replayed
 * from a CUDA graph. Each backend has its own (one per stream), so two
 * streams never share one. Its last VAE_CUDA_BIAS_COUNTERS unsigned words
 * are the NCHW tickets: zero when the buffer is first given (the caller
 * zeroes it), and each launch's last blocks set theirs back to zero.
 */
#include "common.cuh"
#include "vae_backend.h"
#include "vae_kernels.cuh"

/* Loads issued before their additions, per thread (the terms are still added
 * one by one, in increasing order). */
#define VAE_BIAS_UNROLL 8
#define VAE_BIAS_WARPS (VAE_CUDA_THREADS / 32)
/* Upper bound on the pass-1 blocks a plan aims for: a full wave on a
 * 132-SM GPU is ~1056 resident 256-thread blocks. */
#define VAE_BIAS_TARGET_BLOCKS 2048
/* Smallest chunk: NCHW terms per block (one unrolled group of 8 per thread);
 * rows per block (16 per warp, so a batch of up to 255 rows takes one
 * launch). Below twice this a column / channel is summed by one block. */
#define VAE_BIAS_NCHW_MIN_CHUNK ((size_t)VAE_BIAS_UNROLL * VAE_CUDA_THREADS)
#define VAE_BIAS_ROWS_MIN_CHUNK ((size_t)16 * VAE_BIAS_WARPS)

/* Pass-1 partials, [C][P] (see the header), in the caller's scratch:
 * P * C <= VAE_BIAS_SCRATCH whenever P > 1 (the plan caps P; the launchers
 * check); the scratch's last doubles hold the NCHW kernels' completion
 * counters, one per channel (bias_counters). */
#define VAE_BIAS_SCRATCH (VAE_CUDA_BIAS_SCRATCH - VAE_CUDA_BIAS_COUNTERS / 2) /* 65536 */
__host__ __device__ __forceinline__ unsigned *bias_counters(double *partials) {
    return reinterpret_cast<unsigned *>(partials + VAE_BIAS_SCRATCH);
}

/* ------------------------------------------------------------ adds */

template <typename I>
__global__ void bias_add_rows_kernel(real *out, const real *b, size_t n, int cols) {
    VAE_PDL_ENTRY();
    const I ucols = (I)cols;
    VAE_GRID_STRIDE_LOOP_T(I, i, n) out[i] += b[i % ucols];
}

/* ACT < 0: none; else the vae_act (VAE_ACT_RELU, VAE_ACT_LEAKY_RELU) as
 * act.cu applies it: y > 0 ? y : (leaky ? slope y : 0). */
template <int ACT>
__device__ __forceinline__ real bias_act_apply(real y, real slope) {
    if (ACT < 0) return y;
    return y > 0 ? y : (ACT == VAE_ACT_LEAKY_RELU ? slope * y : (real)0);
}

/* out = act(out + bias[c]): the bias add and, fused, the activation above a
 * conv / convT (the values of bias_add_nchw then act_forward in place) */
template <typename I, int ACT>
__global__ void bias_add_nchw_kernel(real *out, const real *bias, size_t n, int C, int HW,
                                     real slope) {
    VAE_PDL_ENTRY();
    const I uC = (I)C, uHW = (I)HW;
    VAE_GRID_STRIDE_LOOP_T(I, i, n) out[i] = bias_act_apply<ACT>(out[i] + bias[(i / uHW) % uC], slope);
}

/* ------------------------------------------------------------ gradients */

/* sum_p part[p] by one warp: lane k adds p = k, k+32, ... in order, then
 * the butterfly; fixed by P alone. Read from L2 (__ldcg): in the NCHW
 * kernel the other blocks of the launch wrote them (vae_last_block). */
__device__ __forceinline__ real bias_partials_sum(const double *part, int P, int lane) {
    double acc = 0;
    for (int p = lane; p < P; p += 32) acc += __ldcg(part + p);
    return (real)vae_warp_sum(acc);
}

/* Rows pass 2: db[c] = sum_p partial[c * P + p]: one warp per c, 8 per block. */
__global__ void bias_grad_pass2_kernel(real *db, const double *partials, int C, int P) {
    VAE_PDL_ENTRY();
    const int lane = threadIdx.x & 31;
    const int c = blockIdx.x * VAE_BIAS_WARPS + (threadIdx.x >> 5);
    if (c >= C) return; /* whole warps leave together (C is uniform) */
    const real s = bias_partials_sum(partials + (size_t)c * P, P, lane);
    if (lane == 0) db[c] = s;
}

/* Rows pass 1. Grid (ceil(cols / 32), P); block (x, p) sums rows
 * [p*chunk, min((p+1)*chunk, rows)) of columns 32x .. 32x+31.
 * ACT >= 0: each term is first the activation's backward from out (the
 * layer's output above the dense layer whose bias this is), written to
 * din[same index] and summed, as in the NCHW kernel below: a dense + ReLU
 * pair's ReLU backward fused with its bias gradient (every element belongs
 * to exactly one block and thread, so din is written once, in full). */
template <int ACT>
__global__ void bias_grad_rows_kernel(real *db, double *partials, const real *dout, int rows,
                                      int cols, int chunk, int P, real *din, const real *out,
                                      real slope) {
    VAE_PDL_ENTRY();
    __shared__ double shm[VAE_BIAS_WARPS][32];
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    const int c = blockIdx.x * 32 + lane;
    const int p = blockIdx.y;
    const int r0 = p * chunk;
    const int r1 = rows - r0 < chunk ? rows : r0 + chunk; /* no int overflow */
    double acc = 0;
    if (c < cols && r0 + w < r1) {
        const size_t step = (size_t)VAE_BIAS_WARPS * cols; /* 8 rows */
        size_t at = (size_t)(r0 + w) * cols + c; /* the current row's element */
        /* left: rows of the chunk from the current one on (r1 - r > 0) */
        for (int left = r1 - (r0 + w);; left -= VAE_BIAS_WARPS * VAE_BIAS_UNROLL) {
            real v[VAE_BIAS_UNROLL], y[VAE_BIAS_UNROLL];
#pragma unroll
            for (int u = 0; u < VAE_BIAS_UNROLL; u++) {
                const bool ok = u * VAE_BIAS_WARPS < left;
                v[u] = ok ? dout[at + u * step] : (real)0;
                if (ACT >= 0) y[u] = ok ? out[at + u * step] : (real)0;
            }
            if (ACT >= 0) {
#pragma unroll
                for (int u = 0; u < VAE_BIAS_UNROLL; u++) {
                    v[u] = y[u] > 0 ? v[u] : (ACT == VAE_ACT_LEAKY_RELU ? slope * v[u] : (real)0);
                    if (u * VAE_BIAS_WARPS < left) din[at + u * step] = v[u];
                }
            }
#pragma unroll
            for (int u = 0; u < VAE_BIAS_UNROLL; u++)
                if (u * VAE_BIAS_WARPS < left) acc += (double)v[u];
            if (left <= VAE_BIAS_WARPS * VAE_BIAS_UNROLL) break;
            at += VAE_BIAS_UNROLL * step;
        }
    }
    shm[w][lane] = acc;
    __syncthreads();
    if (w == 0 && c < cols) {
        double s = shm[0][lane];
#pragma unroll
        for (int k = 1; k < VAE_BIAS_WARPS; k++) s += shm[k][lane];
        if (P == 1) db[c] = (real)s;
        else partials[(size_t)c * P + p] = s;
    }
}

/* NCHW pass 1. Grid (P, min(C, 65535)); block (p, y) sums, for channels
 * c = y, y + gridDim.y, ..., the terms j in [p*K, min((p+1)*K, per)) of
 * channel c, j = b*HW + hw <-> dout[(b*C + c)*HW + hw], per = B*HW.
 * ACT >= 0: each term is first the activation's backward, as act.cu's,
 *   din = out > 0 ? dout : (leaky ? slope dout : 0),
 * written to din[same index] (din == dout allowed: each element is read and
 * then written by one thread) and summed: the activation's backward fused
 * with the bias gradient of the conv below it (every element belongs to
 * exactly one block and thread, so din is written once, in full). */
template <int ACT>
__global__ void bias_grad_nchw_kernel(real *db, double *partials, const real *dout, int C, int HW,
                                      size_t per, size_t K, int P, real *din, const real *out,
                                      real slope) {
    VAE_PDL_ENTRY();
    __shared__ double shm[VAE_CUDA_THREADS / 32];
    const int p = blockIdx.x;
    const size_t j0 = (size_t)p * K;
    const size_t j1 = per - j0 < K ? per : j0 + K;
    for (int c = blockIdx.y; c < C; c += gridDim.y) {
        double acc = 0;
        size_t j = j0 + threadIdx.x;
        if (j < j1) {
            /* one division per thread; then each step of 256 terms moves
             * (b, hw) by (qb, rh) with one carry, since rh < HW */
            const unsigned uHW = (unsigned)HW;
            const unsigned qb = VAE_CUDA_THREADS / uHW, rh = VAE_CUDA_THREADS % uHW;
            const size_t CHW = (size_t)C * uHW;
            const size_t step = (size_t)qb * CHW + rh, carry = CHW - uHW;
            size_t b = j / uHW;
            unsigned hw = (unsigned)(j - b * uHW);
            size_t off = (b * (size_t)C + (size_t)c) * uHW + hw;
            while (j < j1) {
                real v[VAE_BIAS_UNROLL], y[VAE_BIAS_UNROLL];
                size_t at[VAE_BIAS_UNROLL];
                bool ok[VAE_BIAS_UNROLL];
#pragma unroll
                for (int u = 0; u < VAE_BIAS_UNROLL; u++) {
                    ok[u] = j < j1;
                    at[u] = off;
                    v[u] = ok[u] ? dout[off] : (real)0;
                    if (ACT >= 0) y[u] = ok[u] ? out[off] : (real)0;
                    j += VAE_CUDA_THREADS;
                    off += step;
                    hw += rh;
                    if (hw >= uHW) {
                        hw -= uHW;
                        off += carry;
                    }
                }
                if (ACT >= 0) {
#pragma unroll
                    for (int u = 0; u < VAE_BIAS_UNROLL; u++) {
                        v[u] = y[u] > 0 ? v[u]
                                        : (ACT == VAE_ACT_LEAKY_RELU ? slope * v[u] : (real)0);
                        if (ok[u]) din[at[u]] = v[u];
                    }
                }
#pragma unroll
                for (int u = 0; u < VAE_BIAS_UNROLL; u++)
                    if (ok[u]) acc += (double)v[u];
            }
        }
        acc = vae_block_sum(acc, shm); /* ends with a barrier: shm reusable */
        if (P == 1) {
            if (threadIdx.x == 0) db[c] = (real)acc;
            continue;
        }
        /* several chunks: the channel's last block to finish adds the P
         * partials, as the rows' pass 2 would (one launch fewer) */
        if (threadIdx.x == 0) partials[(size_t)c * P + p] = acc;
        if (vae_last_block(bias_counters(partials) + c, (unsigned)P) && threadIdx.x < 32) {
            const real s = bias_partials_sum(partials + (size_t)c * P, P, (int)threadIdx.x);
            if (threadIdx.x == 0) db[c] = s;
        }
    }
}

/* P and the chunk length from the shape alone (never from the device).
 * `terms` per column/channel, `min_chunk` the smallest chunk, `per_p` the
 * pass-1 blocks of one chunk index (column tiles or channels), `cnt` the
 * columns/channels (partials per chunk index). Returns P >= 1 and *chunk
 * with P * chunk >= terms, (P - 1) * chunk < terms (no empty chunk), chunk a
 * multiple of `align` when P > 1; P > 1 only when P * per_p <=
 * VAE_BIAS_TARGET_BLOCKS and P * cnt <= VAE_BIAS_SCRATCH. */
static int bias_grad_plan(size_t terms, size_t min_chunk, size_t per_p, size_t cnt, size_t align,
                          size_t *chunk) {
    size_t cap = VAE_BIAS_TARGET_BLOCKS / per_p;
    if (cap > VAE_BIAS_SCRATCH / cnt) cap = VAE_BIAS_SCRATCH / cnt;
    size_t P = terms / min_chunk; /* chunks of at least min_chunk */
    if (P > cap) P = cap;
    if (P <= 1) {
        *chunk = terms > 0 ? terms : 1;
        return 1;
    }
    size_t k = (terms + P - 1) / P;
    k = (k + align - 1) / align * align;
    *chunk = k;
    P = (terms + k - 1) / k; /* <= the P above, so still within the cap */
    return (int)P;
}

extern "C" void vae_cuda_bias_add_rows(cudaStream_t s, real *out, const real *b, int rows,
                                       int cols) {
    if (rows <= 0 || cols <= 0) return;
    size_t n = (size_t)rows * cols;
    if (vae_index_fits_u32(n))
        vae_launch(bias_add_rows_kernel<unsigned>, vae_grid_for(n), VAE_CUDA_THREADS, 0, s)(
            out, b, n, cols);
    else
        vae_launch(bias_add_rows_kernel<size_t>, vae_grid_for(n), VAE_CUDA_THREADS, 0, s)(
            out, b, n, cols);
    CUDA_LAUNCH_CHECK();
}

extern "C" void vae_cuda_act_bias_grad_rows(cudaStream_t s, real *din, real *db,
                                            const real *dout, const real *out, int rows, int cols,
                                            int act, real slope, double *partials) {
    if (cols <= 0) return;
    if (rows < 0) rows = 0; /* no rows: db = 0 */
    const unsigned tiles = (unsigned)((cols + 31) / 32);
    size_t chunk = 1;
    int P = bias_grad_plan((size_t)rows, VAE_BIAS_ROWS_MIN_CHUNK, tiles, (size_t)cols,
                           VAE_BIAS_WARPS * VAE_BIAS_UNROLL, &chunk);
    if (P > 1 && (size_t)P * (size_t)cols > VAE_BIAS_SCRATCH)
        vae_panic(__FILE__, __LINE__, "bias_grad_rows: %d x %d partials exceed the scratch", P,
                  cols);
    dim3 grid(tiles, (unsigned)P);
    if (act == VAE_ACT_RELU)
        vae_launch(bias_grad_rows_kernel<VAE_ACT_RELU>, grid, VAE_CUDA_THREADS, 0, s)(
            db, partials, dout, rows, cols, (int)chunk, P, din, out, slope);
    else if (act == VAE_ACT_LEAKY_RELU)
        vae_launch(bias_grad_rows_kernel<VAE_ACT_LEAKY_RELU>, grid, VAE_CUDA_THREADS, 0, s)(
            db, partials, dout, rows, cols, (int)chunk, P, din, out, slope);
    else
        vae_launch(bias_grad_rows_kernel<-1>, grid, VAE_CUDA_THREADS, 0, s)(
            db, partials, dout, rows, cols, (int)chunk, P, din, out, slope);
    CUDA_LAUNCH_CHECK();
    if (P > 1) {
        vae_launch(bias_grad_pass2_kernel, (unsigned)((cols + VAE_BIAS_WARPS - 1) / VAE_BIAS_WARPS),
                   VAE_CUDA_THREADS, 0, s)(db, partials, cols, P);
        CUDA_LAUNCH_CHECK();
    }
}

extern "C" void vae_cuda_bias_grad_rows(cudaStream_t s, real *db, const real *dout, int rows,
                                        int cols, double *partials) {
    vae_cuda_act_bias_grad_rows(s, NULL, db, dout, NULL, rows, cols, -1, 0, partials);
}

template <int ACT>
static void bias_act_nchw_launch(cudaStream_t s, real *out, const real *bias, size_t n, int C,
                                 int HW, real slope) {
    if (vae_index_fits_u32(n))
        vae_launch(bias_add_nchw_kernel<unsigned, ACT>, vae_grid_for(n), VAE_CUDA_THREADS, 0, s)(
            out, bias, n, C, HW, slope);
    else
        vae_launch(bias_add_nchw_kernel<size_t, ACT>, vae_grid_for(n), VAE_CUDA_THREADS, 0, s)(
            out, bias, n, C, HW, slope);
    CUDA_LAUNCH_CHECK();
}

extern "C" void vae_cuda_bias_act_nchw(cudaStream_t s, real *out, const real *bias, int B, int C,
                                       int HW, int act, real slope) {
    if (B <= 0 || C <= 0 || HW <= 0) return;
    const size_t n = (size_t)B * C * HW;
    if (act == VAE_ACT_RELU) bias_act_nchw_launch<VAE_ACT_RELU>(s, out, bias, n, C, HW, slope);
    else if (act == VAE_ACT_LEAKY_RELU)
        bias_act_nchw_launch<VAE_ACT_LEAKY_RELU>(s, out, bias, n, C, HW, slope);
    else bias_act_nchw_launch<-1>(s, out, bias, n, C, HW, slope);
}

extern "C" void vae_cuda_bias_add_nchw(cudaStream_t s, real *out, const real *bias, int B, int C,
                                       int HW) {
    vae_cuda_bias_act_nchw(s, out, bias, B, C, HW, -1, 0);
}

extern "C" void vae_cuda_act_bias_grad_nchw(cudaStream_t s, real *din, real *db, const real *dout,
                                            const real *out, int B, int C, int HW, int act,
                                            real slope, double *partials) {
    if (C <= 0) return;
    /* no terms (B or HW zero): one block per channel writes db = 0 */
    const size_t per = B > 0 && HW > 0 ? (size_t)B * (size_t)HW : 0;
    size_t K = 1;
    int P = bias_grad_plan(per, VAE_BIAS_NCHW_MIN_CHUNK, (size_t)C, (size_t)C, VAE_CUDA_THREADS,
                           &K);
    if (P > 1 && ((size_t)P * (size_t)C > VAE_BIAS_SCRATCH || C > VAE_CUDA_BIAS_COUNTERS))
        vae_panic(__FILE__, __LINE__, "bias_grad_nchw: %d x %d partials exceed the scratch", P, C);
    dim3 grid((unsigned)P, (unsigned)(C < 65535 ? C : 65535));
    if (act == VAE_ACT_RELU)
        vae_launch(bias_grad_nchw_kernel<VAE_ACT_RELU>, grid, VAE_CUDA_THREADS, 0, s)(
            db, partials, dout, C, HW, per, K, P, din, out, slope);
    else if (act == VAE_ACT_LEAKY_RELU)
        vae_launch(bias_grad_nchw_kernel<VAE_ACT_LEAKY_RELU>, grid, VAE_CUDA_THREADS, 0, s)(
            db, partials, dout, C, HW, per, K, P, din, out, slope);
    else
        vae_launch(bias_grad_nchw_kernel<-1>, grid, VAE_CUDA_THREADS, 0, s)(
            db, partials, dout, C, HW, per, K, P, din, out, slope);
    CUDA_LAUNCH_CHECK();
}

extern "C" void vae_cuda_bias_grad_nchw(cudaStream_t s, real *db, const real *dout, int B, int C,
                                        int HW, double *partials) {
    vae_cuda_act_bias_grad_nchw(s, NULL, db, dout, NULL, B, C, HW, -1, 0, partials);
}

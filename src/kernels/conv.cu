/* conv.cu — the rearrangements that turn a convolution's two gradients
 * into GEMMs (backend_cuda.c, conv_gemm_run):
 *
 *   dW[k, c, r, s] = sum_j dyK[k, j] colT[(c R + r) R + s, j],   j = (n P + p) Q + q
 *   colT = W^T dyK, then dx = col2im(colT):
 *   dx[n, c, y, x] = sum over r, s (in that order) with y = p stride - pad + r,
 *                    x = q stride - pad + s for some p < P, q < Q of colT[(c R + r) R + s, j]
 *
 * with x [N, C, H, W], dy [N, K, P, Q], a square R x R filter, stride and pad:
 *
 *   colT[(c R + r) R + s, j] = x[n, c, p stride - pad + r, q stride - pad + s]
 *                              (0 where that falls outside x)          (im2col, transposed)
 *   dyK[k, j]                = dy[n, k, p, q]                         (n and k swapped)
 *
 * The GEMM (cuBLAS) sums over j in a fixed order, so the result is the same
 * bit for bit in every run, unlike cuDNN's faster backward algorithms,
 * which add with atomics; col2im adds each element's taps in a fixed order.
 * Bytes: im2col writes 4 C R R N P Q and reads at most as much (x stays in
 * L2); the swap reads and writes 4 N K P Q; col2im reads at most 4 C R R N
 * P Q and writes 4 N C H W.
 */
#include "common.cuh"
#include "vae_backend.h"
#include "vae_kernels.cuh"

/* one thread per colT element, in colT's order (j fastest: coalesced writes) */
template <typename I>
__global__ void im2col_t_kernel(real *col, const real *x, size_t total, int C, int H, int W,
                                int R, int P, int Q, int stride, int pad) {
    VAE_PDL_ENTRY();
    const I uQ = (I)Q, uP = (I)P, uR = (I)R;
    const I M = (I)(total / ((size_t)C * R * R)); /* N P Q */
    VAE_GRID_STRIDE_LOOP_T(I, i, total) {
        const I crs = i / M, j = i - crs * M;
        const I q = j % uQ, np = j / uQ, p = np % uP, n = np / uP;
        const I s = crs % uR, cr = crs / uR, r = cr % uR, c = cr / uR;
        const int y = (int)p * stride - pad + (int)r, xx = (int)q * stride - pad + (int)s;
        real v = 0;
        if (y >= 0 && y < H && xx >= 0 && xx < W)
            v = x[(((size_t)n * C + c) * H + y) * W + xx];
        col[i] = v;
    }
}

/* out[k, n, e] = in[n, k, e], e < E: one thread per out element */
template <typename I>
__global__ void swap_nk_kernel(real *out, const real *in, size_t total, int N, int K, int E) {
    VAE_PDL_ENTRY();
    const I uE = (I)E, uN = (I)N, uK = (I)K;
    VAE_GRID_STRIDE_LOOP_T(I, i, total) {
        const I e = i % uE, kn = i / uE, n = kn % uN, k = kn / uN;
        out[i] = in[((size_t)n * uK + k) * uE + e];
    }
}

/* one thread per dx element; its taps (r, s) in order */
template <typename I>
__global__ void col2im_t_kernel(real *dx, const real *col, size_t total, int C, int H, int W,
                                int R, int P, int Q, int stride, int pad, size_t M) {
    VAE_PDL_ENTRY();
    const I uW = (I)W, uH = (I)H, uC = (I)C;
    VAE_GRID_STRIDE_LOOP_T(I, i, total) {
        const I xx = i % uW, t = i / uW, y = t % uH, nc = t / uH, c = nc % uC, n = nc / uC;
        real acc = 0;
        for (int r = 0; r < R; r++) {
            const int py = (int)y + pad - r;
            if (py < 0 || py % stride) continue;
            const int p = py / stride;
            if (p >= P) continue;
            for (int s = 0; s < R; s++) {
                const int qx = (int)xx + pad - s;
                if (qx < 0 || qx % stride) continue;
                const int q = qx / stride;
                if (q >= Q) continue;
                acc += col[((size_t)((size_t)c * R + r) * R + s) * M +
                           ((size_t)n * P + p) * Q + q];
            }
        }
        dx[i] = acc;
    }
}

extern "C" void vae_cuda_col2im_t(cudaStream_t s, real *dx, const real *col, int N, int C, int H,
                                  int W, int R, int P, int Q, int stride, int pad) {
    const size_t total = (size_t)N * C * H * W, M = (size_t)N * P * Q;
    if (total == 0) return;
    if (vae_index_fits_u32(total))
        vae_launch(col2im_t_kernel<unsigned>, vae_grid_for(total), VAE_CUDA_THREADS, 0, s)(
            dx, col, total, C, H, W, R, P, Q, stride, pad, M);
    else
        vae_launch(col2im_t_kernel<size_t>, vae_grid_for(total), VAE_CUDA_THREADS, 0, s)(
            dx, col, total, C, H, W, R, P, Q, stride, pad, M);
    CUDA_LAUNCH_CHECK();
}

extern "C" void vae_cuda_im2col_t(cudaStream_t s, real *col, const real *x, int N, int C, int H,
                                  int W, int R, int P, int Q, int stride, int pad) {
    const size_t total = (size_t)C * R * R * N * P * Q;
    if (total == 0) return;
    if (vae_index_fits_u32(total))
        vae_launch(im2col_t_kernel<unsigned>, vae_grid_for(total), VAE_CUDA_THREADS, 0, s)(
            col, x, total, C, H, W, R, P, Q, stride, pad);
    else
        vae_launch(im2col_t_kernel<size_t>, vae_grid_for(total), VAE_CUDA_THREADS, 0, s)(
            col, x, total, C, H, W, R, P, Q, stride, pad);
    CUDA_LAUNCH_CHECK();
}

extern "C" void vae_cuda_swap_nk(cudaStream_t s, real *out, const real *in, int N, int K, int E) {
    const size_t total = (size_t)N * K * E;
    if (total == 0) return;
    if (vae_index_fits_u32(total))
        vae_launch(swap_nk_kernel<unsigned>, vae_grid_for(total), VAE_CUDA_THREADS, 0, s)(
            out, in, total, N, K, E);
    else
        vae_launch(swap_nk_kernel<size_t>, vae_grid_for(total), VAE_CUDA_THREADS, 0, s)(
            out, in, total, N, K, E);
    CUDA_LAUNCH_CHECK();
}

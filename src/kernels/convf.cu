/* convf.cu — the forward convolution as direct kernels: fp32 FMA, no
 * atomics, a summation order fixed by the shape, bias and activation fused
 * (backend_cuda.c, conv_fwd_direct_run). The forward twin of convt.cu:
 *
 *   out[n, co, oy, ox] = act(bias[co] + sum over ci, ky, kx with
 *                            iy = oy S - pad + ky, ix = ox S - pad + kx,
 *                            0 <= iy < H, 0 <= ix < W  of  in[n, ci, iy, ix] w[co, ci, ky, kx])
 *
 * in [N, CI, H, W], w [CO, CI, K, K] (Conv2d's layout), out [N, CO, HO, WO]
 * with HO, WO from the caller (taps outside the input are skipped). As the
 * data gradient of a transposed convolution with weight [C_in, C_out, K, K]
 * (viewed as a conv filter [K_out = C_in, C = C_out]): in = dout, out = din.
 *
 * Summation order, the same in every kernel below and for every N: acc = +0;
 * for ci ascending, ky ascending, kx ascending: acc = fmaf(in, w, acc); then
 * acc + 0 (a -0 sum becomes +0), then + bias[co] (when there is a bias),
 * then act: 0 none, 1 ReLU (x > 0 ? x : 0), 2 leaky ReLU (x > 0 ? x :
 * slope x) — convt.cu's VAE_CUDA_CONVT_* codes and expressions (act.cu's).
 * So the bits depend on the operands alone: not on N, the kernel, its
 * tiling or the GPU, and they are those of this sum followed by the bias
 * and act kernels (up to the sign of a zero sum without a bias). The tile
 * kernel also adds the taps that fall on the zero border around the input,
 * which for a finite w changes at most the sign of a zero acc (moot after
 * the + 0): the bits of skipping them (convt.cu's header).
 *
 * Kernels (vae_cuda_conv_direct picks by shape alone):
 *  - tile (K 3 or 4, stride 1 or 2, any pad): a block takes one image, GB
 *    groups of CQ = 4 output channels, SB segments of NB = 4 output rows and
 *    WT output columns. Thread t: output column x = t % WT first, then the
 *    segment, then the group: a warp's window loads are consecutive words
 *    (the lanes of other groups read the same ones: broadcast), its weight
 *    loads one 16-byte CQ-vector per group (the group's lanes share it), its
 *    stores consecutive words of an output row (coalesced). Input channels
 *    go through shared memory in chunks of CC (static, 48 KiB): the weights
 *    [CC][K K][WP], WP = GB CQ + 4 (channels past CO zero), and the input
 *    rows and columns the block's outputs read, with their zero border,
 *    [CC][PH][S][PWH] (both filled by asynchronous copies, vae_fill_async
 *    in common.cuh; the borders by plain stores): each row's columns split
 *    by phase (column c at (c % S) PWH + c / S), so that a warp reading every S-th column reads
 *    consecutive words (no bank conflicts at stride 2). Per input channel a
 *    thread loads its window ((NB - 1) S + K rows x K columns) once, then per
 *    tap one weight vector and CQ NB FMAs: K 3, S 2: 144 FMAs for 27 + 9
 *    shared loads; K 4, S 2: 256 for 40 + 16. No barrier inside a chunk.
 *    The host splits the groups (then the segments) in halves until the
 *    grid has CONVF_MIN_BLOCKS blocks (two per SM of a 132-SM GPU at N =
 *    128) or a block would drop under CONVF_MIN_T threads; a block has at
 *    most CONVF_MAXT threads (__launch_bounds__; sm_90 ptxas: K 3 64
 *    registers, K 4 64 (S 1) / 80 (S 2), no spills, no stack), and loops over the
 *    tiles when there are more than VAE_CUDA_MAX_GRID (N up to 2^20).
 *    At N = 128 (GB x SB x WT threads, blocks): mnist 1 -> 32, 28 -> 14,
 *    K 3: 4 x 4 x 14 = 224, 256; 32 -> 64, 14 -> 7: 8 x 2 x 7 = 112, 256;
 *    cifar K 4: 3 -> 32, 32 -> 16: 4 x 4 x 16 = 256, 256; 32 -> 64, 16 ->
 *    8: 8 x 2 x 8 = 128, 256; 64 -> 128, 8 -> 4: 16 x 1 x 4 = 64, 256.
 *  - generic (any other shape): one thread per output, its taps in the order
 *    above.
 *
 * Bytes and FLOPs (fp32). Per output: CI K^2 FMAs, 4 bytes written, CI H W
 * / (CO HO WO) x 4 bytes read (inputs once per channel-group block, from
 * L2 after the first). mnist 32 -> 64, 14 -> 7, K 3: 288 FMAs an output,
 * per image 0.9 M FMA, 25 KiB read, 12.3 KiB written; 128 images: 0.23
 * GFLOP, ~4 us at 60 TFLOPS, ~1.2 us of HBM traffic: compute-bound beyond
 * the ~3 us launch floor. 1 -> 32, 28 -> 14: 9 FMAs an output, 3.1 KiB read
 * and 25 KiB written an image: 3.6 MB, ~1 us at 4 TB/s (launch-bound).
 * Every block reads its channel groups' weights (32 -> 64: 36 KiB for half
 * the channels) from L2.
 */
#include "common.cuh"
#include "vae_backend.h"
#include "vae_kernels.cuh"

/* Floats of static shared memory per block (48 KiB, the static limit). */
#define CONVF_SMEM 12288
/* Output channels and output rows of a thread of the tile kernel. */
#define CONVF_CQ 4
#define CONVF_NB 4
/* Most threads of a tile block (two blocks, 128 registers a thread, fill an
 * SM's 64 Ki registers), fewest the block splitting goes down to, and the
 * blocks it aims for; constants, so that the tiling depends on the shape
 * alone (the sums do not depend on it at all). */
#define CONVF_MAXT 256
#define CONVF_MIN_T 64
#define CONVF_MIN_BLOCKS 256
/* Widest column tile. */
#define CONVF_WT 32

/* Everything a launch needs; the tile fields as the header says. */
struct convf_args {
    real *out;
    const real *in, *w, *bias;
    int act;
    real slope;
    int N, CI, H, W, CO, HO, WO, P;
    int GB, SB, WT;         /* tile: groups, row segments, columns of a block */
    int GBLK, SBLK, CBLK;   /* tile: blocks per image along each */
    int WP;                 /* tile: weight pitch per tap */
    int PH, PWH, PWS, PP;   /* tile: plane rows, half-row (phase) pitch, row pitch, plane size */
    int CC;                 /* tile: input channels per chunk */
    long long tiles;        /* tile: N GBLK SBLK CBLK */
};

__device__ __forceinline__ real convf_act(real x, int act, real slope) {
    if (act == VAE_CUDA_CONVT_RELU) return x > 0 ? x : (real)0;
    if (act == VAE_CUDA_CONVT_LEAKY_RELU) return x > 0 ? x : slope * x;
    return x;
}

/* The tile kernel (header). */
template <int K, int S>
__global__ void __launch_bounds__(CONVF_MAXT) convf_tile_kernel(convf_args a) {
    VAE_PDL_ENTRY();
    constexpr int CQ = CONVF_CQ, NB = CONVF_NB, KK = K * K, WR = (NB - 1) * S + K;
    alignas(16) __shared__ float sm[CONVF_SMEM];
    const int t = threadIdx.x, bd = blockDim.x;
    const int xl = t % a.WT, rest = t / a.WT, sl = rest % a.SB, gl = rest / a.SB;
    const int COB = a.GB * CQ; /* channels of a block */
    const size_t HW = (size_t)a.H * a.W;
    bool first = true;

    for (long long bi = blockIdx.x; bi < a.tiles; bi += gridDim.x) {
        long long q = bi;
        const int cb = (int)(q % a.CBLK);
        q /= a.CBLK;
        const int sb = (int)(q % a.SBLK);
        q /= a.SBLK;
        const int gb = (int)(q % a.GBLK);
        const long long n = q / a.GBLK;
        const int co0 = gb * COB, cob = a.CO - co0 < COB ? a.CO - co0 : COB;
        const int oy0 = sb * a.SB * NB, ox0 = cb * a.WT;
        const int iy0 = oy0 * S - a.P, ix0 = ox0 * S - a.P;
        const int PW = (a.WT - 1) * S + K; /* plane columns */
        const real *inb = a.in + (size_t)n * a.CI * HW;

        float acc[CQ][NB];
#pragma unroll
        for (int j = 0; j < CQ; j++)
#pragma unroll
            for (int k = 0; k < NB; k++) acc[j][k] = 0;

        for (int c0 = 0; c0 < a.CI; c0 += a.CC) {
            const int cc = a.CI - c0 < a.CC ? a.CI - c0 : a.CC;
            float *ws = sm, *xs = sm + cc * KK * a.WP;
            if (!first) __syncthreads(); /* the previous chunk (or tile) is read */
            first = false;

            /* weights: w[co0 + co, c0 + ci, tap] (tap, then ci, then co:
             * runs of cc K K consecutive words) -> ws[(ci K K + tap) WP + co] */
            {
                const int total = cob * cc * KK;
                int tap = t % KK, r = t / KK, ci = r % cc, co = r / cc;
                const int dtap = bd % KK, dr = bd / KK, dci = dr % cc, dco = dr / cc;
                for (int e = t; e < total; e += bd) {
                    vae_fill_async(&ws[(ci * KK + tap) * a.WP + co],
                                   &a.w[((size_t)(co0 + co) * a.CI + c0 + ci) * KK + tap]);
                    tap += dtap;
                    if (tap >= KK) tap -= KK, ci++;
                    ci += dci;
                    if (ci >= cc) ci -= cc, co++;
                    co += dco;
                }
                const int padc = COB - cob; /* channels past CO: zero */
                for (int e = t; e < cc * KK * padc; e += bd)
                    ws[(e / padc) * a.WP + cob + e % padc] = 0;
            }
            /* inputs: plane (ci, row, col) = in[n, c0 + ci, iy0 + row, ix0 +
             * col] (0 outside) at xs[ci PP + row PWS + (col % S) PWH + col / S] */
            {
                const int total = cc * a.PH * PW;
                int col = t % PW, r = t / PW, row = r % a.PH, ci = r / a.PH;
                const int dcol = bd % PW, dr = bd / PW, drow = dr % a.PH, dci = dr / a.PH;
                for (int e = t; e < total; e += bd) {
                    const int iy = iy0 + row, ix = ix0 + col;
                    real *x = &xs[ci * a.PP + row * a.PWS + (col % S) * a.PWH + col / S];
                    if (iy >= 0 && iy < a.H && ix >= 0 && ix < a.W)
                        vae_fill_async(x, &inb[(size_t)(c0 + ci) * HW + (size_t)iy * a.W + ix]);
                    else
                        *x = 0;
                    col += dcol;
                    if (col >= PW) col -= PW, row++;
                    row += drow;
                    if (row >= a.PH) row -= a.PH, ci++;
                    ci += dci;
                }
            }
            vae_fill_wait();
            __syncthreads();

            if (gl * CQ < cob) {
                const float *xp = xs + sl * NB * S * a.PWS + xl;
                const float *wp = ws + gl * CQ;
#pragma unroll 1
                for (int ci = 0; ci < cc; ci++, xp += a.PP, wp += KK * a.WP) {
                    float x[WR][K];
#pragma unroll
                    for (int i = 0; i < WR; i++)
#pragma unroll
                        for (int j = 0; j < K; j++)
                            x[i][j] = xp[i * a.PWS + (j % S) * a.PWH + j / S];
#pragma unroll
                    for (int ky = 0; ky < K; ky++)
#pragma unroll
                        for (int kx = 0; kx < K; kx++) {
                            float wv[CQ];
                            vae_load4_shared(wv, wp + (ky * K + kx) * a.WP);
#pragma unroll
                            for (int j = 0; j < CQ; j++)
#pragma unroll
                                for (int k = 0; k < NB; k++)
                                    acc[j][k] = fmaf(x[k * S + ky][kx], wv[j], acc[j][k]);
                        }
                }
            }
        }

        /* + bias, act; outside CO, HO, WO dropped */
        const int ox = ox0 + xl;
        if (ox < a.WO) {
#pragma unroll
            for (int j = 0; j < CQ; j++) {
                const int col = gl * CQ + j;
                if (col >= cob) break;
                const int co = co0 + col;
                real *pl = a.out + ((size_t)n * a.CO + co) * a.HO * a.WO;
                /* read once: out might alias bias as far as nvcc knows, so a
                 * read inside the loop was repeated after every store */
                const real b = a.bias ? a.bias[co] : (real)0;
#pragma unroll
                for (int k = 0; k < NB; k++) {
                    const int oy = oy0 + sl * NB + k;
                    if (oy >= a.HO) break;
                    real v = acc[j][k] + (real)0; /* -0 -> +0 (header) */
                    if (a.bias) v = v + b;
                    pl[(size_t)oy * a.WO + ox] = convf_act(v, a.act, a.slope);
                }
            }
        }
    }
}

/* One thread per output (index in out's order), its taps in order. */
template <typename I>
__global__ void convf_generic_kernel(convf_args a, int K, int S, size_t total) {
    VAE_PDL_ENTRY();
    const I uWO = (I)a.WO, uHO = (I)a.HO, uCO = (I)a.CO;
    const size_t HW = (size_t)a.H * a.W, KK = (size_t)K * K;
    VAE_GRID_STRIDE_LOOP_T(I, i, total) {
        const I ox = i % uWO, t1 = i / uWO, oy = t1 % uHO, t2 = t1 / uHO, co = t2 % uCO,
                n = t2 / uCO;
        const real *ip = a.in + (size_t)n * a.CI * HW;
        const real *wp = a.w + (size_t)co * a.CI * KK;
        float acc = 0;
        for (int ci = 0; ci < a.CI; ci++, ip += HW, wp += KK) {
            for (int ky = 0; ky < K; ky++) {
                const int iy = (int)oy * S - a.P + ky;
                if (iy < 0 || iy >= a.H) continue;
                for (int kx = 0; kx < K; kx++) {
                    const int ix = (int)ox * S - a.P + kx;
                    if (ix < 0 || ix >= a.W) continue;
                    acc = fmaf(ip[(size_t)iy * a.W + ix], wp[ky * K + kx], acc);
                }
            }
        }
        real v = acc + (real)0; /* -0 -> +0 (header) */
        if (a.bias) v = v + a.bias[co];
        a.out[i] = convf_act(v, a.act, a.slope);
    }
}

extern "C" int vae_cuda_conv_direct_supported(int CI, int H, int W, int CO, int HO, int WO,
                                              int K, int stride, int pad) {
    if (CI < 1 || H < 1 || W < 1 || CO < 1 || HO < 1 || WO < 1 || K < 1 || stride < 1 ||
        pad < 0)
        return 0;
    if (K > 64 || stride > 64 || pad > 64) return 0;
    const size_t lim = (size_t)INT32_MAX;
    if ((size_t)CI * H * W > lim || (size_t)CO * HO * WO > lim || (size_t)CI * CO * K * K > lim)
        return 0;
    /* the kernels' int arithmetic: oy S + ky, ox S + kx, and a tile side
     * (<= 64) added to CI K K (convw.cu) stay below 2^31 */
    if ((size_t)HO * stride + K > lim || (size_t)WO * stride + K > lim ||
        (size_t)CI * K * K > lim - 64)
        return 0;
    return 1;
}

/* The tile kernel's geometry in *a (K, S); 0 if it does not fit. */
static int convf_tile_plan(convf_args *a, int K, int S) {
    const int CQ = CONVF_CQ, NB = CONVF_NB, KK = K * K;
    const int G = (a->CO + CQ - 1) / CQ, SEGS = (a->HO + NB - 1) / NB;
    const int WT = a->WO < CONVF_WT ? a->WO : CONVF_WT;
    const int CBLK = (a->WO + WT - 1) / WT;
    int GB = G, SB = SEGS;
    /* halve the groups, then the segments: to CONVF_MAXT threads, then to
     * CONVF_MIN_BLOCKS blocks while a block keeps CONVF_MIN_T threads */
    for (;;) {
        const long t = (long)WT * SB * GB;
        const long long blocks = (long long)a->N * ((G + GB - 1) / GB) *
                                 ((SEGS + SB - 1) / SB) * CBLK;
        const int more = t > CONVF_MAXT || (blocks < CONVF_MIN_BLOCKS && t / 2 >= CONVF_MIN_T);
        if (!more) break;
        if (GB > 1) GB = (GB + 1) / 2;
        else if (SB > 1) SB = (SB + 1) / 2;
        else break;
    }
    if ((long)WT * SB * GB > CONVF_MAXT) return 0;
    const int WP = GB * CQ + 4;
    const int PH = (SB * NB - 1) * S + K, PW = (WT - 1) * S + K;
    /* at stride 2 an odd half-row pitch: segments are NB S PWS = 16 PWH words
     * apart, 16 mod 32 banks when PWH is odd, 0 (a 2-way conflict on every
     * window load) when it is even (mnist 32 -> 64: PWH 8) */
    const int PWH = S == 2 ? ((PW + 1) / 2) | 1 : (PW + S - 1) / S, PWS = S * PWH;
    const long per_ci = (long)KK * WP + (long)PH * PWS;
    if (per_ci > CONVF_SMEM) return 0;
    const int ccmax = (int)(CONVF_SMEM / per_ci);
    const int chunks = (a->CI + ccmax - 1) / ccmax;
    a->GB = GB, a->SB = SB, a->WT = WT;
    a->GBLK = (G + GB - 1) / GB, a->SBLK = (SEGS + SB - 1) / SB, a->CBLK = CBLK;
    a->WP = WP, a->PH = PH, a->PWH = PWH, a->PWS = PWS, a->PP = PH * PWS;
    a->CC = (a->CI + chunks - 1) / chunks;
    a->tiles = (long long)a->N * a->GBLK * a->SBLK * a->CBLK;
    return 1;
}

extern "C" void vae_cuda_conv_direct(cudaStream_t s, real *out, const real *in, const real *w,
                                     const real *bias, int act, real slope, int N, int CI, int H,
                                     int W, int CO, int HO, int WO, int K, int stride, int pad) {
    if (N <= 0 || !vae_cuda_conv_direct_supported(CI, H, W, CO, HO, WO, K, stride, pad)) return;
    convf_args a = {};
    a.out = out, a.in = in, a.w = w, a.bias = bias, a.act = act, a.slope = slope;
    a.N = N, a.CI = CI, a.H = H, a.W = W, a.CO = CO, a.HO = HO, a.WO = WO, a.P = pad;
    if ((K == 3 || K == 4) && (stride == 1 || stride == 2) && convf_tile_plan(&a, K, stride)) {
        const unsigned blocks =
            (unsigned)(a.tiles < (long long)VAE_CUDA_MAX_GRID ? a.tiles : VAE_CUDA_MAX_GRID);
        const unsigned threads = (unsigned)(a.WT * a.SB * a.GB);
        if (K == 3 && stride == 1) vae_launch(convf_tile_kernel<3, 1>, blocks, threads, 0, s)(a);
        else if (K == 3) vae_launch(convf_tile_kernel<3, 2>, blocks, threads, 0, s)(a);
        else if (stride == 1) vae_launch(convf_tile_kernel<4, 1>, blocks, threads, 0, s)(a);
        else vae_launch(convf_tile_kernel<4, 2>, blocks, threads, 0, s)(a);
        CUDA_LAUNCH_CHECK();
        return;
    }
    const size_t total = (size_t)N * CO * HO * WO;
    if (vae_index_fits_u32(total))
        vae_launch(convf_generic_kernel<unsigned>, vae_grid_for(total), VAE_CUDA_THREADS, 0, s)(
            a, K, stride, total);
    else
        vae_launch(convf_generic_kernel<size_t>, vae_grid_for(total), VAE_CUDA_THREADS, 0, s)(
            a, K, stride, total);
    CUDA_LAUNCH_CHECK();
}

/* convt.cu — the transposed convolution (which is also a convolution's data
 * gradient) as direct kernels: fp32 FMA, no atomics, a summation order fixed
 * by the shape, bias and activation fused (backend_cuda.c, conv_direct_run):
 *
 *   out[n, co, oy, ox] = act(bias[co] + sum over ci, ky, kx with
 *                            oy = iy S - pad + ky, ox = ix S - pad + kx,
 *                            0 <= iy < HI, 0 <= ix < WI  of  in[n, ci, iy, ix] w[ci, co, ky, kx])
 *
 * in [N, CI, HI, WI], w [CI, CO, K, K] (ConvTranspose2d's layout), out
 * [N, CO, HO, WO] with HO, WO from the caller (output padding is implied:
 * taps that land outside are dropped). As the data gradient of a convolution
 * with weight [K_out, C, R, R]: CI = K_out, CO = C, in = dy, out = dx.
 *
 * Summation order, the same in every kernel below and for every N: acc = +0;
 * for ci ascending, ky ascending, kx ascending, over the taps that reach
 * (oy, ox): acc = fmaf(in, w, acc); then acc + 0 (a -0 sum becomes +0),
 * then + bias[co] (when there is a bias), then act: 0 none, 1 ReLU (x > 0
 * ? x : 0), 2 leaky ReLU (x > 0 ? x : slope x), act.cu's expressions. So
 * the bits depend on the operands alone: not on N, the kernel, its tiling
 * or the GPU, and they are those of this sum followed by the bias and act
 * kernels (up to the sign of a zero sum without a bias). The tiled kernels
 * also add the taps that fall on the zero border around the input:
 * fmaf(0, w, acc) equals acc for a finite w except that it may turn a -0
 * acc (a product that underflowed) into +0, which the + 0 makes moot — the
 * bits of skipping them (an infinite or NaN weight would give NaN there
 * instead).
 *
 * Stride phases. A tap ky takes input row iy to output row oy = iy S - pad +
 * ky. Cut the output rows into cells of S, oy = S a + qy (cell row a, phase qy
 * in [0, S)): tap ky reaches phase qy(ky) = (ky - pad) mod S of cell a from
 * input row iy = a + dy(ky), dy(ky) = -floor((ky - pad) / S), whatever a is.
 * Columns likewise. So within a phase the taps are fixed and each phase is an
 * implicit GEMM
 *   C[co, (n, a, b)] = sum over (ci, ky, kx) of W[co, (ci, ky, kx)] X[(ci, ky, kx), (n, a, b)],
 * X[(ci, ky, kx), (n, a, b)] = in[n, ci, a + dy(ky), b + dy(kx)] (0 outside),
 * and a cell (its S x S outputs, all phases) reads a window of WH x WH input
 * pixels, WH = dy(0) - dy(K-1) + 1: stride 2, pad 1: K 3 takes rows a, a+1
 * (phase 0: tap 1; phase 1: taps 0, 2), K 4 rows a-1 .. a+1 (2 taps a phase).
 *
 * Kernels (vae_cuda_convt_direct picks by shape alone):
 *  - tile (stride 2, pad 1, K 3 or 4, CO > 4): a block takes NI images and
 *    every CO. A thread owns CQ output channels x NB consecutive cells of
 *    one cell column, all S x S phases: CQ S S NB accumulators (CQ 2, NB 7:
 *    56; CQ 4, NB 4: 64). The thread index runs over the cell column b
 *    first, then the channel group g, the segment of NB cell rows, the
 *    image: a warp's input loads are consecutive words (the lanes of other
 *    groups read the same ones: broadcast), its weight loads one CQ-vector
 *    per group (the group's lanes share it), and its stores 8-byte output
 *    pairs side by side (coalesced). Input channels go through shared
 *    memory in chunks of CC (static, 48 KiB): the weights [CC][K K][WP],
 *    WP = CO padded to the groups + 4 (so that the fill's scattered stores,
 *    read in the global [ci][co][tap] order, do not collide on banks), and
 *    the NI images' input planes with their zero border, [NI][CC][PH][PW],
 *    filled by asynchronous copies (vae_fill_async, common.cuh: every
 *    thread's loads in flight at once, not one memory round trip per
 *    element; the zero border by plain stores). Per input channel a thread
 *    loads its window (NB + WH - 1) x WH once and one CQ-vector of weights
 *    per tap, then does K K CQ NB FMAs: K 3, CQ 2,
 *    NB 7: 126 FMAs for 16 + 9 shared loads (LDS.32 and LDS.64); K 4, CQ 4,
 *    NB 4: 256 for 18 + 16 (LDS.128). No barrier inside a chunk. The (CQ,
 *    NB) pair is the one of {(2, 7), (4, 4)} with fewer instructions per
 *    image, the padding of CO and of the cell rows counted (mnist's 64 -> 32
 *    7x7: (2, 7), 112 threads an image; cifar's: (4, 4)). A block has at most
 *    224 / 192 threads, so that two fit an SM's registers at 144 / 168 per
 *    thread (__maxnreg__; sm_90 ptxas, nvcc 13.0: K 3 113 / 125, K 4 128 / 129, no
 *    spills, no stack), and NI images, NI > 1 only when that still leaves
 *    CONVT_MIN_BLOCKS blocks.
 *  - small (stride 2, pad 1, K 3 or 4, CO <= 4, all weights within 48 KiB):
 *    memory-bound last layers. One thread per 4 cells of a cell column, all
 *    CO channels, the column index fastest (coalesced loads and stores as
 *    above); the window straight from global memory (L1 catches the
 *    overlap), the weights in shared memory (warp-uniform: broadcast).
 *  - generic (any other shape): one thread per output, its taps in the order
 *    above.
 *
 * Bytes and FLOPs (fp32). Per output: CI x (taps reaching it: K^2 / S^2 on
 * average) FMAs, 4 bytes written, CI HI WI / (CO HO WO) x 4 bytes read (the
 * inputs once: the tiles reread them from shared memory or L1). 64 -> 32,
 * 7x7 -> 14x14, K 3: 144 FMAs and ~6 bytes an output; per image 0.9 M FMA
 * (1.8 MFLOP), 12.5 KiB read, 24.5 KiB written: 48 FLOP/byte, compute-bound
 * on an H100/H200 (~15 FLOP/byte balance); 16,384 images: 29.6 GFLOP, 0.5
 * ms at 60 TFLOPS, 0.15 ms of HBM traffic. 32 -> 1, 14x14 -> 28x28, K 3: 72
 * FMAs and 36 bytes an output; per image 24.5 KiB read, 3 KiB written, 56 K
 * FMA: memory-bound, 0.46 GB for 16,384 images, ~0.12 ms at 4 TB/s. Every
 * block reads all the weights (72 KiB for 64 -> 32) from L2.
 */
#include "common.cuh"
#include "vae_backend.h"
#include "vae_kernels.cuh"

#ifndef __maxnreg__ /* the CPU emulator's headers (tests/emu) have no such attribute */
#define __maxnreg__(n)
#endif

/* Floats of static shared memory per block (48 KiB, the static limit). */
#define CONVT_SMEM 12288
/* Threads of a small block. */
#define CONVT_BLOCK 256
/* Most threads of a tile block, (CQ, NB) = (2, 7) and (4, 4): two blocks
 * fill an SM's 64 Ki registers at CONVT_REGS(t) registers per thread
 * (144 and 168). */
#define CONVT_T27 224
#define CONVT_T44 192
#define CONVT_REGS(t) ((65536 / (2 * (t))) & ~7)
/* Cells per thread of the small kernel; its most output channels. */
#define CONVT_SMALL_NB 4
#define CONVT_SMALL_CO 4
/* Blocks the tile kernel aims for at least (two per SM of a 132-SM GPU)
 * before it puts more than one image in a block; a constant, so that the
 * tiling depends on the shape alone (the sums do not depend on it at all). */
#define CONVT_MIN_BLOCKS 264

/* floor(a / b) for b > 0 */
__host__ __device__ constexpr int convt_floordiv(int a, int b) {
    return a >= 0 ? a / b : -((-a + b - 1) / b);
}

/* Tap geometry of kernel K, stride S, pad P (the header's qy, dy). */
template <int K, int S, int P>
struct convt_geo {
    static constexpr int DMAX = -convt_floordiv(-P, S);        /* dy(0) */
    static constexpr int DMIN = -convt_floordiv(K - 1 - P, S); /* dy(K - 1) */
    static constexpr int WH = DMAX - DMIN + 1;                 /* window rows */
    /* the phase tap k reaches */
    __host__ __device__ static constexpr int q(int k) { return ((k - P) % S + S) % S; }
    /* its row in the window: dy(k) - DMIN */
    __host__ __device__ static constexpr int r(int k) { return -convt_floordiv(k - P, S) - DMIN; }
};

/* Everything a launch needs; the tile and small fields as the header says. */
struct convt_args {
    real *out;
    const real *in, *w, *bias;
    int act;
    real slope;
    int N, CI, HI, WI, CO, HO, WO;
    int HC, WC;     /* cell rows and columns */
    int SEGS;       /* segments of NB cell rows (each thread's cells run down a column) */
    int G, COP, WP; /* tile: channel groups of CQ, CO padded to G CQ, weight pitch per tap */
    int PH, PW;     /* tile: input plane rows and pitch in shared memory */
    int NI, CC;     /* tile: images per block, input channels per chunk */
    int vec2;       /* outputs in aligned pairs (S = 2, WO even, out 8-byte aligned) */
};

/* The vector accesses below assume an alignment the GPU would fault
 * without; the CPU emulator (tests/emu, not nvcc) does them one float at a
 * time and checks the alignment instead. */
#ifndef __NVCC__
#define CONVT_ALIGNED(p, bytes)                                                            \
    do {                                                                                   \
        if ((uintptr_t)(p) % (bytes))                                                      \
            vae_panic(__FILE__, __LINE__, "convt: %p not %d-byte aligned", (const void *)(p), \
                      (int)(bytes));                                                       \
    } while (0)
#else
#define CONVT_ALIGNED(p, bytes) ((void)0)
#endif

__device__ __forceinline__ real convt_act(real x, int act, real slope) {
    if (act == VAE_CUDA_CONVT_RELU) return x > 0 ? x : (real)0;
    if (act == VAE_CUDA_CONVT_LEAKY_RELU) return x > 0 ? x : slope * x;
    return x;
}

/* v = p[0 .. CQ-1] from shared memory; p is CQ-float aligned when CQ is 2 or
 * 4 (one 8- or 16-byte load on the GPU). */
template <int CQ>
__device__ __forceinline__ void convt_load_w(float (&v)[CQ], const float *p) {
#ifdef __CUDA_ARCH__
    if constexpr (CQ == 4) {
        const float4 t = *reinterpret_cast<const float4 *>(p);
        v[0] = t.x, v[1] = t.y, v[2] = t.z, v[3] = t.w;
    } else if constexpr (CQ == 2) {
        const float2 t = *reinterpret_cast<const float2 *>(p);
        v[0] = t.x, v[1] = t.y;
    } else
#endif
    {
        if (CQ == 2 || CQ == 4) CONVT_ALIGNED(p, 4 * CQ);
#pragma unroll
        for (int j = 0; j < CQ; j++) v[j] = p[j];
    }
}

/* acc = +0 (the start of every output's sum) */
template <int C, int S, int NB>
__device__ __forceinline__ void convt_zero(float (&acc)[C][S][S][NB]) {
#pragma unroll
    for (int j = 0; j < C; j++)
#pragma unroll
        for (int qy = 0; qy < S; qy++)
#pragma unroll
            for (int qx = 0; qx < S; qx++)
#pragma unroll
                for (int k = 0; k < NB; k++) acc[j][qy][qx][k] = 0;
}

/* Output pair at p (8-byte aligned on the GPU when vec2): one store. */
__device__ __forceinline__ void convt_put2(real *p, real v0, real v1) {
#ifdef __CUDA_ARCH__
    *reinterpret_cast<float2 *>(p) = make_float2(v0, v1);
#else
    CONVT_ALIGNED(p, 8);
    p[0] = v0, p[1] = v1;
#endif
}

/* One input channel's taps for CQ channels x NB cells of a cell column
 * (cell k is (a0 + k, b)): x is the window, x[i WH + j] = input row
 * a0 + DMIN + i, column b + DMIN + j; wt holds the channel's weights, tap
 * (ky, kx) at wt + (ky K + kx) pitch. Taps in (ky, kx) order. */
template <int K, int S, int P, int CQ, int NB>
__device__ __forceinline__ void convt_taps(float (&acc)[CQ][S][S][NB],
                                           const float (&x)[convt_geo<K, S, P>::WH *
                                                            (NB + convt_geo<K, S, P>::WH - 1)],
                                           const float *wt, int pitch) {
    typedef convt_geo<K, S, P> T;
    constexpr int WH = T::WH;
#pragma unroll
    for (int ky = 0; ky < K; ky++) {
#pragma unroll
        for (int kx = 0; kx < K; kx++) {
            float wv[CQ];
            convt_load_w<CQ>(wv, wt + (ky * K + kx) * pitch);
#pragma unroll
            for (int j = 0; j < CQ; j++)
#pragma unroll
                for (int k = 0; k < NB; k++) {
                    const int xi = (k + T::r(ky)) * WH + T::r(kx);
                    acc[j][T::q(ky)][T::q(kx)][k] =
                        fmaf(x[xi], wv[j], acc[j][T::q(ky)][T::q(kx)][k]);
                }
        }
    }
}

/* The outputs of CQ channels from co0 x NB cells from cell (cy, cx) down
 * its column into dst [CO, HO, WO] (one image): + bias, act; outside CO,
 * HO, WO dropped. VEC2 (a.vec2): each
 * pair of phases qx = 0, 1 in one 8-byte store. (Two instantiations rather
 * than a branch inside the loops, which made nvcc leave them rolled and the
 * accumulators in local memory.) */
template <int S, int CQ, int NB, bool VEC2>
__device__ __forceinline__ void convt_store(real *dst, const float (&acc)[CQ][S][S][NB], int co0,
                                            int cy, int cx, const convt_args &a) {
    static_assert(!VEC2 || S == 2, "paired stores are for stride 2");
#pragma unroll
    for (int j = 0; j < CQ; j++) {
        const int co = co0 + j;
        if (co >= a.CO) break;
        const real b = a.bias ? a.bias[co] : (real)0;
        real *pl = dst + (size_t)co * a.HO * a.WO;
#pragma unroll
        for (int k = 0; k < NB; k++)
#pragma unroll
            for (int qy = 0; qy < S; qy++) {
                const int oy = S * (cy + k) + qy, ox0 = S * cx;
                if (oy >= a.HO || ox0 >= a.WO) continue;
                real v[S];
#pragma unroll
                for (int qx = 0; qx < S; qx++) {
                    v[qx] = acc[j][qy][qx][k] + (real)0; /* -0 -> +0 (header) */
                    if (a.bias) v[qx] = v[qx] + b;
                    v[qx] = convt_act(v[qx], a.act, a.slope);
                }
                real *o = pl + (size_t)oy * a.WO + ox0;
                if (VEC2) {
                    convt_put2(o, v[0], v[S - 1]);
                } else {
#pragma unroll
                    for (int qx = 0; qx < S; qx++)
                        if (ox0 + qx < a.WO) o[qx] = v[qx];
                }
            }
    }
}

/* The tile kernel (header). Block: NI images from blockIdx.x NI; thread t:
 * cell column b = t % WC, then channel group g, segment of NB cell rows,
 * image. A warp's lanes take consecutive cell columns: its input loads are
 * consecutive words, its stores 8-byte pairs side by side (coalesced), its
 * weight loads shared by the WC lanes of a group (broadcast). */
template <int K, int S, int P, int CQ, int NB, int MAXT>
__global__ void __maxnreg__(CONVT_REGS(MAXT)) convt_tile_kernel(convt_args a) {
    VAE_PDL_ENTRY();
    typedef convt_geo<K, S, P> T;
    constexpr int WH = T::WH, WR = NB + WH - 1, KK = K * K;
    alignas(16) __shared__ float sm[CONVT_SMEM];
    const int t = threadIdx.x, bd = blockDim.x;
    const int b = t % a.WC;
    int rest = t / a.WC;
    const int g = rest % a.G;
    rest /= a.G;
    const int seg = rest % a.SEGS, img = rest / a.SEGS;
    const int n0 = blockIdx.x * a.NI;
    const int nimg = a.N - n0 < a.NI ? a.N - n0 : a.NI;
    const int PP = a.PH * a.PW;
    const size_t HWI = (size_t)a.HI * a.WI;

    float acc[CQ][S][S][NB];
    convt_zero(acc);

    for (int c0 = 0; c0 < a.CI; c0 += a.CC) {
        const int cc = a.CI - c0 < a.CC ? a.CI - c0 : a.CC;
        float *ws = sm, *xs = sm + cc * KK * a.WP;
        if (c0) __syncthreads(); /* the previous chunk is read */

        /* weights: w[c0 + ci, co, tap] (read in that, the global, order)
         * -> ws[(ci K K + tap) WP + co]; e advances by bd, (ci, co, tap)
         * with it, without divisions */
        {
            const int total = cc * a.CO * KK;
            const real *src = a.w + (size_t)c0 * a.CO * KK;
            int tap = t % KK, q = t / KK, co = q % a.CO, ci = q / a.CO;
            const int dtap = bd % KK, dq = bd / KK, dco = dq % a.CO, dci = dq / a.CO;
            for (int e = t; e < total; e += bd) {
                vae_fill_async(&ws[(ci * KK + tap) * a.WP + co], &src[e]);
                tap += dtap;
                if (tap >= KK) tap -= KK, co++;
                co += dco;
                if (co >= a.CO) co -= a.CO, ci++;
                ci += dci;
            }
            const int padc = a.COP - a.CO; /* the padded channels: zero */
            for (int e = t; e < cc * KK * padc; e += bd)
                ws[(e / padc) * a.WP + a.CO + e % padc] = 0;
        }
        /* inputs: xs[im][ci][row][col] = in[n0 + im, c0 + ci, row + DMIN,
         * col + DMIN], 0 outside the input or past the last image */
        {
            const int total = a.NI * cc * PP;
            int col = t % a.PW, q = t / a.PW, row = q % a.PH;
            q /= a.PH;
            int ci = q % cc, im = q / cc;
            const int dcol = bd % a.PW, dq0 = bd / a.PW, drow = dq0 % a.PH, dq = dq0 / a.PH;
            const int dci = dq % cc, dim = dq / cc;
            for (int e = t; e < total; e += bd) {
                const int iy = row + T::DMIN, ix = col + T::DMIN;
                if (im < nimg && iy >= 0 && iy < a.HI && ix >= 0 && ix < a.WI)
                    vae_fill_async(&xs[e], &a.in[((size_t)(n0 + im) * a.CI + c0 + ci) * HWI +
                                                 (size_t)iy * a.WI + ix]);
                else
                    xs[e] = 0;
                col += dcol;
                if (col >= a.PW) col -= a.PW, row++;
                row += drow;
                if (row >= a.PH) row -= a.PH, ci++;
                ci += dci;
                if (ci >= cc) ci -= cc, im++;
                im += dim;
            }
        }
        vae_fill_wait();
        __syncthreads();

        if (img < nimg) {
            const float *xp = xs + (size_t)img * cc * PP + seg * NB * a.PW + b;
            const float *wp = ws + g * CQ;
#pragma unroll 1
            for (int ci = 0; ci < cc; ci++, xp += PP, wp += KK * a.WP) {
                float x[WR * WH];
#pragma unroll
                for (int i = 0; i < WR; i++)
#pragma unroll
                    for (int j = 0; j < WH; j++) x[i * WH + j] = xp[i * a.PW + j];
                convt_taps<K, S, P, CQ, NB>(acc, x, wp, a.WP);
            }
        }
    }
    if (img >= nimg) return;
    real *dst = a.out + (size_t)(n0 + img) * a.CO * a.HO * a.WO;
    if (a.vec2) convt_store<S, CQ, NB, true>(dst, acc, g * CQ, seg * NB, b, a);
    else convt_store<S, CQ, NB, false>(dst, acc, g * CQ, seg * NB, b, a);
}

/* The small-CO kernel (header): COS = CO output channels, a thread per
 * CONVT_SMALL_NB cells of a cell column, grid-stride over (n, segment of
 * cell rows, cell column), the column fastest: a warp's window loads and
 * output pairs are consecutive along the rows. Weights ws[(ci K K + tap)
 * COS + co]. */
template <int K, int S, int P, int COS>
__global__ void __launch_bounds__(CONVT_BLOCK, 2) convt_small_kernel(convt_args a) {
    VAE_PDL_ENTRY();
    typedef convt_geo<K, S, P> T;
    constexpr int NB = CONVT_SMALL_NB, WH = T::WH, WR = NB + WH - 1, KK = K * K;
    alignas(16) __shared__ float ws[CONVT_SMEM];
    const int t = threadIdx.x;
    for (int e = t; e < a.CI * COS * KK; e += blockDim.x) {
        const int tap = e % KK, q = e / KK, co = q % COS, ci = q / COS;
        ws[(ci * KK + tap) * COS + co] = a.w[e];
    }
    __syncthreads();
    const unsigned per = (unsigned)a.WC * (unsigned)a.SEGS;
    const size_t tasks = (size_t)a.N * per;
    const size_t HWI = (size_t)a.HI * a.WI, HWO = (size_t)a.HO * a.WO;
    for (size_t task = (size_t)blockIdx.x * blockDim.x + t; task < tasks;
         task += (size_t)gridDim.x * blockDim.x) {
        unsigned n, r;
        if (tasks <= 0xffffffffu) { /* 32-bit division where it fits */
            n = (unsigned)task / per;
            r = (unsigned)task - n * per;
        } else {
            n = (unsigned)(task / per);
            r = (unsigned)(task - (size_t)n * per);
        }
        const int cy0 = (int)(r / (unsigned)a.WC) * NB, cx = (int)(r % (unsigned)a.WC);
        const int iy0 = cy0 + T::DMIN, ix0 = cx + T::DMIN;
        bool rok[WR], cok[WH];
#pragma unroll
        for (int i = 0; i < WR; i++) rok[i] = iy0 + i >= 0 && iy0 + i < a.HI;
#pragma unroll
        for (int j = 0; j < WH; j++) cok[j] = ix0 + j >= 0 && ix0 + j < a.WI;
        const real *ip = a.in + (size_t)n * a.CI * HWI;
        float acc[COS][S][S][NB];
        convt_zero(acc);
        for (int ci = 0; ci < a.CI; ci++, ip += HWI) {
            float x[WR * WH];
#pragma unroll
            for (int i = 0; i < WR; i++)
#pragma unroll
                for (int j = 0; j < WH; j++)
                    x[i * WH + j] = rok[i] && cok[j] ? ip[(iy0 + i) * a.WI + ix0 + j] : (real)0;
            convt_taps<K, S, P, COS, NB>(acc, x, ws + ci * KK * COS, COS);
        }
        real *dst = a.out + (size_t)n * a.CO * HWO;
        if (a.vec2) convt_store<S, COS, NB, true>(dst, acc, 0, cy0, cx, a);
        else convt_store<S, COS, NB, false>(dst, acc, 0, cy0, cx, a);
    }
}

/* One thread per output (index in out's order), its taps in order. */
template <typename I>
__global__ void convt_generic_kernel(convt_args a, int K, int S, int P, size_t total) {
    VAE_PDL_ENTRY();
    const I uWO = (I)a.WO, uHO = (I)a.HO, uCO = (I)a.CO;
    const size_t HWI = (size_t)a.HI * a.WI, KK = (size_t)K * K;
    VAE_GRID_STRIDE_LOOP_T(I, i, total) {
        const I ox = i % uWO, t1 = i / uWO, oy = t1 % uHO, t2 = t1 / uHO, co = t2 % uCO,
                n = t2 / uCO;
        const real *ip = a.in + (size_t)n * a.CI * HWI;
        const real *wp = a.w + (size_t)co * KK;
        float acc = 0;
        for (int ci = 0; ci < a.CI; ci++, ip += HWI, wp += (size_t)a.CO * KK) {
            for (int ky = 0; ky < K; ky++) {
                const int ny = (int)oy + P - ky;
                if (ny < 0 || ny % S) continue;
                const int iy = ny / S;
                if (iy >= a.HI) continue;
                for (int kx = 0; kx < K; kx++) {
                    const int nx = (int)ox + P - kx;
                    if (nx < 0 || nx % S) continue;
                    const int ix = nx / S;
                    if (ix >= a.WI) continue;
                    acc = fmaf(ip[iy * a.WI + ix], wp[ky * K + kx], acc);
                }
            }
        }
        real v = acc + (real)0; /* -0 -> +0 (header) */
        if (a.bias) v = v + a.bias[co];
        a.out[i] = convt_act(v, a.act, a.slope);
    }
}

extern "C" int vae_cuda_convt_direct_supported(int CI, int HI, int WI, int CO, int HO, int WO,
                                               int K, int stride, int pad) {
    if (CI < 1 || HI < 1 || WI < 1 || CO < 1 || HO < 1 || WO < 1 || K < 1 || stride < 1 ||
        pad < 0)
        return 0;
    if (K > 64 || stride > 64 || pad > 64) return 0;
    const size_t lim = (size_t)INT32_MAX;
    if ((size_t)CI * HI * WI > lim || (size_t)CO * HO * WO > lim ||
        (size_t)CI * CO * K * K > lim)
        return 0;
    return 1;
}

/* The tile kernel's geometry for (CQ, NB) in *a (stride 2, pad 1, kernel
 * K, blocks of at most maxt threads); returns its cost (instructions per
 * image and input channel: FMAs and shared loads, the padding of CO and of
 * the cell columns counted), or -1 if it does not fit. */
static double convt_tile_plan(convt_args *a, int K, int CQ, int NB, int maxt) {
    const int S = 2, P = 1, KK = K * K;
    const int WH = -convt_floordiv(-P, S) + convt_floordiv(K - 1 - P, S) + 1;
    const int HC = (a->HO + S - 1) / S, WC = (a->WO + S - 1) / S;
    const int SEGS = (HC + NB - 1) / NB, G = (a->CO + CQ - 1) / CQ;
    const long tpi = (long)WC * G * SEGS;
    if (tpi > maxt) return -1;
    const int COP = G * CQ, WP = COP + 4;
    const int PH = SEGS * NB + WH - 1, PW = (WC + WH - 1) | 1;
    const long pp = (long)PH * PW;
    int NI = maxt / (int)tpi;
    if (NI > a->N / CONVT_MIN_BLOCKS) NI = a->N / CONVT_MIN_BLOCKS;
    if (NI < 1) NI = 1;
    while (NI > 1 && (long)KK * WP + NI * pp > CONVT_SMEM) NI--;
    const long per_ci = (long)KK * WP + NI * pp;
    if (per_ci > CONVT_SMEM) return -1;
    const int ccmax = (int)(CONVT_SMEM / per_ci);
    const int chunks = (a->CI + ccmax - 1) / ccmax;
    a->HC = HC, a->WC = WC, a->SEGS = SEGS, a->G = G, a->COP = COP, a->WP = WP;
    a->PH = PH, a->PW = PW, a->NI = NI, a->CC = (a->CI + chunks - 1) / chunks;
    return (double)tpi * ((double)KK * CQ * NB + (double)WH * (NB + WH - 1) + KK);
}

/* The tile or small kernel for K (stride 2, pad 1); 0 if neither fits. */
template <int K>
static int convt_launch_s2p1(cudaStream_t s, convt_args a) {
    a.vec2 = a.WO % 2 == 0 && (uintptr_t)a.out % 8 == 0;
    if (a.CO <= CONVT_SMALL_CO && (size_t)a.CI * K * K * a.CO <= CONVT_SMEM) {
        a.HC = (a.HO + 1) / 2, a.WC = (a.WO + 1) / 2;
        a.SEGS = (a.HC + CONVT_SMALL_NB - 1) / CONVT_SMALL_NB;
        const size_t tasks = (size_t)a.N * a.WC * a.SEGS;
        size_t blocks = (tasks + CONVT_BLOCK - 1) / CONVT_BLOCK;
        if (blocks > VAE_CUDA_MAX_GRID) blocks = VAE_CUDA_MAX_GRID;
        const unsigned nb = (unsigned)blocks;
        switch (a.CO) {
        case 1: vae_launch(convt_small_kernel<K, 2, 1, 1>, nb, CONVT_BLOCK, 0, s)(a); break;
        case 2: vae_launch(convt_small_kernel<K, 2, 1, 2>, nb, CONVT_BLOCK, 0, s)(a); break;
        case 3: vae_launch(convt_small_kernel<K, 2, 1, 3>, nb, CONVT_BLOCK, 0, s)(a); break;
        default: vae_launch(convt_small_kernel<K, 2, 1, 4>, nb, CONVT_BLOCK, 0, s)(a); break;
        }
        return 1;
    }
    convt_args a27 = a, a44 = a;
    const double c27 = convt_tile_plan(&a27, K, 2, 7, CONVT_T27);
    const double c44 = convt_tile_plan(&a44, K, 4, 4, CONVT_T44);
    if (c27 < 0 && c44 < 0) return 0;
    const int use27 = c27 >= 0 && (c44 < 0 || c27 <= c44);
    const convt_args &b = use27 ? a27 : a44;
    const unsigned blocks = (unsigned)((b.N + b.NI - 1) / b.NI);
    const unsigned threads = (unsigned)(b.NI * b.WC * b.G * b.SEGS);
    if (use27)
        vae_launch(convt_tile_kernel<K, 2, 1, 2, 7, CONVT_T27>, blocks, threads, 0, s)(b);
    else
        vae_launch(convt_tile_kernel<K, 2, 1, 4, 4, CONVT_T44>, blocks, threads, 0, s)(b);
    return 1;
}

extern "C" void vae_cuda_convt_direct(cudaStream_t s, real *out, const real *in, const real *w,
                                      const real *bias, int act, real slope, int N, int CI,
                                      int HI, int WI, int CO, int HO, int WO, int K, int stride,
                                      int pad) {
    if (N <= 0 || !vae_cuda_convt_direct_supported(CI, HI, WI, CO, HO, WO, K, stride, pad))
        return;
    convt_args a = {};
    a.out = out, a.in = in, a.w = w, a.bias = bias, a.act = act, a.slope = slope;
    a.N = N, a.CI = CI, a.HI = HI, a.WI = WI, a.CO = CO, a.HO = HO, a.WO = WO;
    if (stride == 2 && pad == 1 && K == 3 && convt_launch_s2p1<3>(s, a)) {
        CUDA_LAUNCH_CHECK();
        return;
    }
    if (stride == 2 && pad == 1 && K == 4 && convt_launch_s2p1<4>(s, a)) {
        CUDA_LAUNCH_CHECK();
        return;
    }
    const size_t total = (size_t)N * CO * HO * WO;
    if (vae_index_fits_u32(total))
        vae_launch(convt_generic_kernel<unsigned>, vae_grid_for(total), VAE_CUDA_THREADS, 0, s)(
            a, K, stride, pad, total);
    else
        vae_launch(convt_generic_kernel<size_t>, vae_grid_for(total), VAE_CUDA_THREADS, 0, s)(
            a, K, stride, pad, total);
    CUDA_LAUNCH_CHECK();
}

/* convw.cu — a convolution's weight gradient as a direct kernel: fp32 FMA,
 * no atomics, a summation order fixed by the shape and the batch size. The
 * third candidate for the weight gradient, beside cuDNN's deterministic pick
 * and the GEMM form (backend_cuda.c, plan_bwd_filter: timed once at plan
 * time, taken when faster; $VAE_CONV_DIRECT=1 forces it, =0 never):
 *
 *   dw[co, ci, ky, kx] = sum over n, oy, ox with iy = oy S - P + ky,
 *                        ix = ox S - P + kx inside x  of  dy[n, co, oy, ox] x[n, ci, iy, ix]
 *
 * x [N, CI, H, W], dy [N, CO, HO, WO], dw [CO, CI, K, K] (Conv2d's layout).
 * A transposed convolution with weight [C_in, C_out, K, K] has the same
 * gradient with x = its dout (CI = C_out) and dy = its input (CO = C_in).
 *
 * Summation order. The images go in groups of G consecutive ones (G =
 * vae_cuda_conv_wgrad_group(N, ...); the last group may be shorter). For
 * group g: p_g = +0; for n ascending within the group, then oy ascending,
 * then ox ascending, over the taps inside x: p_g = fmaf(dy, x, p_g); then
 * p_g = p_g + 0 (a -0 becomes +0). Then dw = p_0, and dw = dw + p_g for g
 * = 1, 2, ... in order. So the bits depend on the operands, the shape and
 * N alone: not on the tiling, the launch or the GPU. The kernel also adds
 * the taps that fall outside x (and rows past the group or CO, zero
 * filled): fmaf(dy, 0, p) is p for a finite dy, except that it may turn a
 * -0 p (a product that underflowed) into +0, which the + 0 makes moot; so
 * the bits are those of skipping them. A non-finite dy at such a tap gives
 * NaN there instead (as the GEMM form, whose im2col holds zeros).
 *
 * Kernels.
 *  - tile: dw viewed as the matrix [CO, CRR], CRR = CI K K (column (ci K +
 *    ky) K + kx), times the rows m = (n HO + oy) WO + ox of a group. A block
 *    takes a TCO x TCR tile of dw (TCO, TCR each 16, 32 or 64, the smallest
 *    that covers CO resp. CRR) and one group; each of its TCO TCR / 16
 *    threads keeps a 4 x 4 register tile of sums. Per slice of BM = 16 rows
 *    the block stages dy [BM][TCO] and the gathered x [BM][TCR] (zero
 *    outside x, past the group, past CO or CRR) in shared memory, then each
 *    thread reads one 16-byte vector of each per row and does 16 FMAs, rows
 *    in order. A thread's staging row is threadIdx % BM throughout, so it
 *    decodes (n, oy, ox) once per slice and its columns' (ci, ky, kx) once;
 *    it loads the next slice's values into registers before the current
 *    slice's FMAs, so that the global loads are in flight during them.
 *    One group: the block writes dw; several: its partial sum p_g to the
 *    scratch [NG][CO][CRR].
 *  - reduce (several groups): dw[i] = p_0[i] + p_1[i] + ... in order, one
 *    thread per weight.
 *  G: at least CONVW_MIN_ROWS rows a block (128: 8 slices), and few enough
 *    groups that the grid has about CONVW_BLOCKS (512) blocks: NG <= 512,
 *    so the scratch is at most 512 tiles of 64 x 64 floats (8 MiB).
 *
 * Bytes and FLOPs (fp32). CO CRR N HO WO FMAs; reads dy and x once per tile
 * column resp. row of tiles (from L2 after the first), writes dw and, with
 * NG > 1 groups, NG partial copies of it, read back once. mnist_conv at N =
 * 128 (all K 3, S 2): conv 32 -> 64, 14 -> 7 (and, the same shape, the
 * decoder's convT 64 -> 32, 7 -> 14): 116 M FMA, 1 x 5 tiles of 64 x 64, G
 * 3, 43 groups: 215 blocks of 256 threads, 3.2 MB of partials (in L2);
 * conv 1 -> 32, 28 -> 14 (and convT 32 -> 1, 14 -> 28): 7.2 M FMA, one
 * 32 x 16 tile, G 1: 128 blocks of 32 threads, latency-bound. The GEMM form
 * took 0.048 and 0.033 ms for these on the H200 (im2col, a transpose and
 * one SGEMM with a 6,272- resp. 25,088-long reduction), cuDNN's
 * deterministic algorithm 0.46 and 0.23 ms.
 */
#include "common.cuh"
#include "vae_backend.h"
#include "vae_kernels.cuh"

/* Rows per shared-memory slice. */
#define CONVW_BM 16
/* Rows a block sums at least, and the blocks a launch aims for (a constant,
 * not the device's SM count: the grouping, and so the bits, depend on the
 * shape and N alone). */
#define CONVW_MIN_ROWS 128
#define CONVW_BLOCKS 512

struct convw_args {
    real *out; /* dw (one group) or the partials [NG][CO][CRR] */
    const real *x, *dy;
    int N, CI, H, W, CO, HO, WO, K, S, P;
    int CRR, PQ, G, NG;
    int TILES_CO; /* tiles along CO (blockIdx.x % TILES_CO) */
};

/* The tile kernel (header): grid (tiles of dw, groups), TCO TCR / 16 threads. */
template <int TCO, int TCR>
__global__ void __launch_bounds__(TCO *TCR / 16) convw_tile_kernel(convw_args a) {
    VAE_PDL_ENTRY();
    constexpr int NT = TCO * TCR / 16, BM = CONVW_BM;
    constexpr int DP = TCO + 4, XP = TCR + 4; /* pitches: 16-byte multiples */
    constexpr int DJ = BM * TCO / NT, XJ = BM * TCR / NT; /* staged values a thread */
    constexpr int CSTEP = NT / BM;                        /* column step between them */
    alignas(16) __shared__ float sdy[BM * DP];
    alignas(16) __shared__ float sx[BM * XP];

    const int t = threadIdx.x;
    const int co0 = (int)(blockIdx.x % (unsigned)a.TILES_CO) * TCO;
    const int cr0 = (int)(blockIdx.x / (unsigned)a.TILES_CO) * TCR;
    const int g = blockIdx.y;
    const long long m_begin = (long long)g * a.G * a.PQ;
    const long long n_end = (long long)(g + 1) * a.G < a.N ? (long long)(g + 1) * a.G : a.N;
    const long long m_end = n_end * a.PQ;
    const int KK = a.K * a.K;
    const size_t HW = (size_t)a.H * a.W;

    /* staging: row mm, columns c0 + j CSTEP */
    const int mm = t % BM, c0 = t / BM;
    int xoff[XJ], xky[XJ], xkx[XJ]; /* per staged x column: ci H W, ky - P, kx - P (xky < -1e6: none) */
#pragma unroll
    for (int j = 0; j < XJ; j++) {
        const int crr = cr0 + c0 + j * CSTEP;
        if (crr < a.CRR) {
            const int ci = crr / KK, r = crr - ci * KK, ky = r / a.K;
            xoff[j] = ci * (int)HW;
            xky[j] = ky - a.P;
            xkx[j] = r - ky * a.K - a.P;
        } else {
            xoff[j] = 0, xky[j] = -(1 << 30), xkx[j] = 0;
        }
    }
    /* computing: rows tr 4 .. + 3 of the tile's CO, columns tc 4 .. + 3 */
    const int tc = t % (TCR / 4), tr = t / (TCR / 4);
    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) acc[i][j] = 0;

    /* the values a thread stages for the slice at row m0 (0 outside) */
    float rdy[DJ], rx[XJ];
    auto fetch = [&](long long m0) {
        const long long m = m0 + mm;
        const bool in_rows = m < m_end;
        const long long n = in_rows ? m / a.PQ : 0;
        const int pq = in_rows ? (int)(m - n * a.PQ) : 0;
        const int oy = pq / a.WO, ox = pq - oy * a.WO;
        const real *dyn = a.dy + (size_t)n * a.CO * a.PQ + pq;
#pragma unroll
        for (int j = 0; j < DJ; j++) {
            const int co = co0 + c0 + j * CSTEP;
            rdy[j] = in_rows && co < a.CO ? dyn[(size_t)co * a.PQ] : (real)0;
        }
        const real *xn = a.x + (size_t)n * a.CI * HW;
        const int iy0 = oy * a.S, ix0 = ox * a.S;
#pragma unroll
        for (int j = 0; j < XJ; j++) {
            const int iy = iy0 + xky[j], ix = ix0 + xkx[j];
            const bool in = in_rows && iy >= 0 && iy < a.H && ix >= 0 && ix < a.W;
            rx[j] = in ? xn[xoff[j] + (size_t)iy * a.W + ix] : (real)0;
        }
    };
    fetch(m_begin);
    for (long long m0 = m_begin; m0 < m_end; m0 += BM) {
#pragma unroll
        for (int j = 0; j < DJ; j++) sdy[mm * DP + c0 + j * CSTEP] = rdy[j];
#pragma unroll
        for (int j = 0; j < XJ; j++) sx[mm * XP + c0 + j * CSTEP] = rx[j];
        __syncthreads();
        if (m0 + BM < m_end) fetch(m0 + BM); /* in flight during the FMAs below */
#pragma unroll 4
        for (int k = 0; k < BM; k++) {
            float dv[4], xv[4];
            vae_load4_shared(dv, &sdy[k * DP + tr * 4]);
            vae_load4_shared(xv, &sx[k * XP + tc * 4]);
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 4; j++) acc[i][j] = fmaf(dv[i], xv[j], acc[i][j]);
        }
        __syncthreads();
    }

    real *out = a.out + (a.NG > 1 ? (size_t)g * a.CO * a.CRR : 0);
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const int co = co0 + tr * 4 + i;
        if (co >= a.CO) break;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const int crr = cr0 + tc * 4 + j;
            if (crr < a.CRR) out[(size_t)co * a.CRR + crr] = acc[i][j] + (real)0; /* -0 -> +0 */
        }
    }
}

/* dw[i] = part[0][i] + part[1][i] + ... + part[ng - 1][i], in that order */
__global__ void convw_reduce_kernel(real *dw, const real *part, size_t n, int ng) {
    VAE_PDL_ENTRY();
    VAE_GRID_STRIDE_LOOP(i, n) {
        float s = part[i];
        /* the adds stay in order; unrolling lets the loads run ahead */
#pragma unroll 8
        for (int g = 1; g < ng; g++) s = s + part[(size_t)g * n + i];
        dw[i] = s;
    }
}

/* The tile sides for CO resp. CRR: 16, 32 or 64. */
static int convw_side(long long n) { return n <= 16 ? 16 : n <= 32 ? 32 : 64; }

template <int TCO, int TCR>
static void convw_launch(dim3 grid, cudaStream_t s, const convw_args &a) {
    const unsigned threads = TCO * TCR / 16;
    vae_launch(convw_tile_kernel<TCO, TCR>, grid, threads, 0, s)(a);
}

/* The same limits as the direct forward kernel's (convf.cu): sizes positive,
 * K, stride, pad <= 64, per-image sizes within int. */
extern "C" int vae_cuda_conv_wgrad_supported(int CI, int H, int W, int CO, int HO, int WO,
                                             int K, int stride, int pad) {
    return vae_cuda_conv_direct_supported(CI, H, W, CO, HO, WO, K, stride, pad);
}

extern "C" int vae_cuda_conv_wgrad_group(int N, int CI, int CO, int K, int HO, int WO) {
    if (N < 1) return 1;
    const long long crr = (long long)CI * K * K, pq = (long long)HO * WO;
    const int tco = convw_side(CO), tcr = convw_side(crr);
    const long long tiles = ((CO + tco - 1) / tco) * ((crr + tcr - 1) / tcr);
    const long long ng = tiles >= CONVW_BLOCKS ? 1 : CONVW_BLOCKS / tiles;
    long long g = (CONVW_MIN_ROWS + pq - 1) / pq;
    const long long g2 = (N + ng - 1) / ng;
    if (g2 > g) g = g2;
    return (int)(g < N ? g : N);
}

extern "C" size_t vae_cuda_conv_wgrad_scratch(int N, int CI, int CO, int K, int HO, int WO) {
    if (N < 1) return 0;
    const int g = vae_cuda_conv_wgrad_group(N, CI, CO, K, HO, WO);
    const size_t ng = ((size_t)N + g - 1) / g;
    return ng > 1 ? ng * CO * CI * K * K : 0;
}

extern "C" void vae_cuda_conv_wgrad_direct(cudaStream_t s, real *dw, const real *x,
                                           const real *dy, real *scratch, int N, int CI, int H,
                                           int W, int CO, int HO, int WO, int K, int stride,
                                           int pad) {
    if (N <= 0 || !vae_cuda_conv_wgrad_supported(CI, H, W, CO, HO, WO, K, stride, pad)) return;
    const size_t nw = (size_t)CO * CI * K * K;
    convw_args a = {};
    a.x = x, a.dy = dy;
    a.N = N, a.CI = CI, a.H = H, a.W = W, a.CO = CO, a.HO = HO, a.WO = WO, a.K = K;
    a.S = stride, a.P = pad;
    a.CRR = CI * K * K, a.PQ = HO * WO;
    a.G = vae_cuda_conv_wgrad_group(N, CI, CO, K, HO, WO);
    a.NG = (N + a.G - 1) / a.G;
    a.out = a.NG > 1 ? scratch : dw;
    const int tco = convw_side(CO), tcr = convw_side(a.CRR);
    a.TILES_CO = (CO + tco - 1) / tco;
    const unsigned tiles = (unsigned)a.TILES_CO * (unsigned)((a.CRR + tcr - 1) / tcr);
    const dim3 grid(tiles, (unsigned)a.NG);
    const int side = (tco == 16 ? 0 : tco == 32 ? 3 : 6) + (tcr == 16 ? 0 : tcr == 32 ? 1 : 2);
    switch (side) {
    case 0: convw_launch<16, 16>(grid, s, a); break;
    case 1: convw_launch<16, 32>(grid, s, a); break;
    case 2: convw_launch<16, 64>(grid, s, a); break;
    case 3: convw_launch<32, 16>(grid, s, a); break;
    case 4: convw_launch<32, 32>(grid, s, a); break;
    case 5: convw_launch<32, 64>(grid, s, a); break;
    case 6: convw_launch<64, 16>(grid, s, a); break;
    case 7: convw_launch<64, 32>(grid, s, a); break;
    default: convw_launch<64, 64>(grid, s, a); break;
    }
    CUDA_LAUNCH_CHECK();
    if (a.NG > 1) {
        vae_launch(convw_reduce_kernel, vae_grid_for(nw), VAE_CUDA_THREADS, 0, s)(
            dw, scratch, nw, a.NG);
        CUDA_LAUNCH_CHECK();
    }
}

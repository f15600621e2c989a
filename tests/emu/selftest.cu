/* selftest.cu — the CUDA emulator checks itself (tests/emu/README.md).
 *
 * Built like src/kernels (cu2cpp.py, then C++ against cuda_emu.h), so it is
 * also valid CUDA. First the cases that must compute the right values; then,
 * each in a child process, the kernels a GPU would hang on or run with
 * undefined results, which the emulator must stop (abort) with its message;
 * in the ThreadSanitizer build also a kernel with a shared-memory race.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <vector>

#include <cuda_runtime_api.h>

#include "vae_backend.h" /* vae_math.h, VAE_ACT_*, VAE_LIK_* */
#include "vae_kernels.cuh" /* the launchers of src/kernels (vae_emu_* here) */

/* each lane: the xor-butterfly sum of the lane values 1..32 of its warp */
__global__ void warp_sum_kernel(double *out) {
    double x = threadIdx.x % 32 + 1;
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    out[blockIdx.x * blockDim.x + threadIdx.x] = x;
}

/* a block reverses 256 values through shared memory; a grid-stride loop
 * covers n with whatever grid is launched */
__global__ void reverse_kernel(int *out, const int *in) {
    __shared__ int s[256];
    const int base = blockIdx.x * 256;
    s[threadIdx.x] = in[base + threadIdx.x];
    __syncthreads();
    out[base + threadIdx.x] = s[255 - threadIdx.x];
}

__global__ void grid_stride_kernel(int *out, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        out[i] += i;
}

/* a 2-D block and grid: every (block, thread) writes its own slot */
__global__ void index_kernel(int *out) {
    const int t = threadIdx.x + blockDim.x * threadIdx.y;
    const int b = blockIdx.x + gridDim.x * blockIdx.y;
    out[b * blockDim.x * blockDim.y + t] = b * 1000 + t;
}

/* undefined on a GPU: half the block at one barrier, half at another */
__global__ void divergent_kernel(int *out) {
    if (threadIdx.x < 128) __syncthreads();
    else __syncthreads();
    out[threadIdx.x] = 1;
}

/* a hang on a GPU: half of each warp at a barrier, half at a shuffle */
__global__ void deadlock_kernel(int *out) {
    if (threadIdx.x % 32 < 16) __syncthreads();
    else out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, (int)threadIdx.x, 1);
}

/* undefined on a GPU: a full-mask shuffle with half the warp gone */
__global__ void exited_lanes_kernel(int *out) {
    if (threadIdx.x % 32 < 16) return;
    out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, (int)threadIdx.x, 1);
}

/* a race: each thread reads a slot of shared memory another thread writes,
 * with no barrier between (what racecheck reports on a GPU; here the
 * ThreadSanitizer build's job) */
__global__ void race_kernel(int *out) {
    __shared__ int s[64];
    s[threadIdx.x] = (int)threadIdx.x;
    out[threadIdx.x] = s[63 - threadIdx.x];
}

/* launched with vae_launch (src/kernels/common.cuh), so it begins with
 * VAE_PDL_ENTRY(), as every kernel of src/kernels does */
__global__ void pdl_kernel(int *out) {
    VAE_PDL_ENTRY();
    out[threadIdx.x] = 2 * (int)threadIdx.x;
}

/* a race on a GPU with $VAE_CUDA_PDL=1: one thread leaves before the wait
 * (and the grid's completion no longer implies its predecessors') */
__global__ void pdl_early_exit_kernel(int *out) {
    if (threadIdx.x == 5) return;
    VAE_PDL_ENTRY();
    out[threadIdx.x] = 1;
}

/* the same mistake in a kernel with a barrier (run as fibers): no entry */
__global__ void pdl_missing_kernel(int *out) {
    __shared__ int s[64];
    s[threadIdx.x] = (int)threadIdx.x;
    __syncthreads();
    out[threadIdx.x] = s[63 - threadIdx.x];
}

static int failures;
#define EXPECT(c, ...)                                                                     \
    do {                                                                                   \
        if (!(c)) {                                                                        \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                                    \
            printf(__VA_ARGS__);                                                           \
            printf("\n");                                                                  \
            failures++;                                                                    \
        }                                                                                  \
    } while (0)

static void values(void) {
    double w[3 * 64];
    warp_sum_kernel<<<3, 64>>>(w);
    int bad = 0;
    for (int i = 0; i < 3 * 64; i++) bad += w[i] != 528.0; /* 1 + ... + 32 */
    EXPECT(bad == 0, "warp sums: %d of 192 lanes not 528", bad);

    int in[4 * 256], out[4 * 256];
    for (int i = 0; i < 4 * 256; i++) in[i] = i * 7 + 3;
    reverse_kernel<<<4, 256>>>(out, in);
    bad = 0;
    for (int b = 0; b < 4; b++)
        for (int t = 0; t < 256; t++) bad += out[b * 256 + t] != in[b * 256 + 255 - t];
    EXPECT(bad == 0, "block reversal through shared memory: %d wrong", bad);

    static int acc[10007];
    memset(acc, 0, sizeof acc);
    grid_stride_kernel<<<5, 96>>>(acc, 10007);
    bad = 0;
    for (int i = 0; i < 10007; i++) bad += acc[i] != i;
    EXPECT(bad == 0, "grid-stride loop: %d elements not visited exactly once", bad);

    int idx[6 * 24];
    index_kernel<<<dim3(3, 2), dim3(8, 3)>>>(idx);
    bad = 0;
    for (int b = 0; b < 6; b++)
        for (int t = 0; t < 24; t++) bad += idx[b * 24 + t] != b * 1000 + t;
    EXPECT(bad == 0, "2-D grid and block indices: %d wrong", bad);

    int twice[64] = {0};
    vae_launch(pdl_kernel, 1, 64, 0, 0)(twice);
    bad = 0;
    for (int t = 0; t < 64; t++) bad += twice[t] != 2 * t;
    EXPECT(bad == 0, "a vae_launch launch: %d of 64 threads wrong", bad);

    grid_stride_kernel<<<1, 2048>>>(acc, 1);
    EXPECT(cudaGetLastError() == cudaErrorInvalidConfiguration,
           "a 2048-thread block must be an invalid configuration");
    EXPECT(cudaGetLastError() == cudaSuccess, "the launch error must be read once");
}

/* ------------------------------------------- src/kernels at odd offsets
 *
 * The elementwise kernels take 16-byte vectors from the first aligned
 * element on, with a scalar head and tail, and go all-scalar when their
 * pointers are misaligned differently; the Philox kernels compute four
 * normals per block, with partial blocks at the ends of a range. The tests
 * of test_cuda_ops use the arena's aligned buffers, so here every launcher
 * runs with its pointers at element offsets 0..3 from a 256-byte boundary
 * (and at sizes around multiples of 4) against the per-element lines of
 * vae_math.h on the host: equal bits, or for sums equal bits across the
 * offsets (the order is set by the size alone) and the host's sum within a
 * tolerance. Under the sanitizer build, ASan checks every access and UBSan
 * the alignment of every float4. */

static uint32_t g_lcg = 12345u;
static float frand(float lo, float hi) {
    g_lcg = g_lcg * 1664525u + 1013904223u;
    return lo + (hi - lo) * (float)(g_lcg >> 8) * (1.0f / 16777216.0f);
}

/* n elements of T at element offset `off` from a 256-byte boundary */
template <class T>
struct obuf {
    void *base;
    T *p;
    obuf(size_t n, int off) {
        base = aligned_alloc(256, ((n + (size_t)off) * sizeof(T) + 255) / 256 * 256 + 256);
        if (!base) {
            perror("aligned_alloc");
            exit(1);
        }
        p = (T *)base + off;
    }
    ~obuf() { free(base); }
    obuf(const obuf &) = delete;
    obuf &operator=(const obuf &) = delete;
};

static int bits_differ(float a, float b) { return memcmp(&a, &b, sizeof a) != 0; }
static int bits_differ_d(double a, double b) { return memcmp(&a, &b, sizeof a) != 0; }

static const size_t k_sizes[] = {1, 2, 3, 4, 5, 7, 8, 9, 37, 1031, 4099};
#define NSIZES (sizeof k_sizes / sizeof k_sizes[0])

static void offsets_elementwise(void) {
    int bad_act = 0, bad_adam = 0, bad_u8 = 0, bad_round = 0, bad_sum = 0;
    for (size_t si = 0; si < NSIZES; si++) {
        const size_t n = k_sizes[si];
        for (int oa = 0; oa < 4; oa++)
            for (int ob = 0; ob < 4; ob++) {
                /* act forward, out-of-place and in place, and backward */
                obuf<float> in(n, oa), out(n, ob), dout(n, oa), din(n, oa), keep(n, 0);
                for (size_t i = 0; i < n; i++) {
                    in.p[i] = i % 7 == 3 ? 0.0f : frand(-2, 2);
                    dout.p[i] = frand(-1, 1);
                    keep.p[i] = in.p[i];
                }
                const float slope = 0.2f;
                vae_cuda_act_forward(NULL, out.p, in.p, n, VAE_ACT_LEAKY_RELU, slope);
                for (size_t i = 0; i < n; i++) {
                    const float x = keep.p[i];
                    bad_act += bits_differ(out.p[i], x > 0 ? x : slope * x);
                }
                vae_cuda_act_backward(NULL, din.p, dout.p, out.p, n, VAE_ACT_RELU, 0);
                for (size_t i = 0; i < n; i++)
                    bad_act += bits_differ(din.p[i], out.p[i] > 0 ? dout.p[i] : 0.0f);
                vae_cuda_act_forward(NULL, in.p, in.p, n, VAE_ACT_RELU, 0);
                for (size_t i = 0; i < n; i++)
                    bad_act += bits_differ(in.p[i], keep.p[i] > 0 ? keep.p[i] : 0.0f);

                /* adam: p, m at offset oa, g, v at ob */
                obuf<float> p(n, oa), g(n, ob), m(n, oa), v(n, ob);
                obuf<float> p0(n, 0), m0(n, 0), v0(n, 0);
                for (size_t i = 0; i < n; i++) {
                    p0.p[i] = p.p[i] = frand(-1, 1);
                    g.p[i] = frand(-0.5f, 0.5f);
                    m0.p[i] = m.p[i] = frand(-0.1f, 0.1f);
                    v0.p[i] = v.p[i] = frand(0, 0.01f);
                }
                vae_adam_hp hp = {1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, (oa + ob) & 1};
                const double gn2 = 4.0;
                int bad_flag = 0;
                vae_step_vals sv = vae_step_vals_make(3, 0, 3, 1, 1.0f, 0.271f, 0.00399f);
                vae_cuda_adam(NULL, p.p, g.p, m.p, v.p, n, &hp, 1.0f, &gn2, &bad_flag, &sv);
                const real gscale = (real)(1.0 / (sqrt(gn2) + 1e-6));
                for (size_t i = 0; i < n; i++) {
                    real pi = p0.p[i], mi = m0.p[i], vi = v0.p[i];
                    vae_adam_elem(&pi, g.p[i], &mi, &vi, &hp, sv.bc1, sv.bc2, gscale);
                    bad_adam += bits_differ(p.p[i], pi) + bits_differ(m.p[i], mi) +
                                bits_differ(v.p[i], vi);
                }
                bad_adam += bad_flag != 0;

                /* to_u8: logits at oa, pixels at byte offset ob */
                obuf<uint8_t> px(n, ob);
                vae_cuda_to_u8(NULL, px.p, dout.p, n, (oa + ob) & 1);
                for (size_t i = 0; i < n; i++)
                    bad_u8 += px.p[i] != vae_to_u8(dout.p[i], (oa + ob) & 1);

                /* round_mantissa in place at offset ob */
                obuf<float> r(n, ob);
                for (size_t i = 0; i < n; i++) r.p[i] = frand(-3, 3);
                for (size_t i = 0; i < n; i++) keep.p[i] = r.p[i];
                vae_cuda_round_mantissa(NULL, r.p, n, 7 + 3 * (oa & 1));
                for (size_t i = 0; i < n; i++)
                    bad_round += bits_differ(r.p[i], vae_round_mantissa(keep.p[i], 7 + 3 * (oa & 1)));
            }

        /* sum / sumsq: the same bits at every offset, near the host's sum */
        static double partials[VAE_CUDA_REDUCE_SCRATCH]; /* zero: the counter */
        const size_t big = n * 67 + 3; /* also the two-pass sizes */
        for (int square = 0; square < 2; square++) {
            double first = 0;
            for (int off = 0; off < 4; off++) {
                obuf<float> x(big, off);
                g_lcg = 777u + (uint32_t)si;
                double want = 0, mag = 0;
                for (size_t i = 0; i < big; i++) {
                    x.p[i] = frand(-2, 2);
                    want += square ? (double)x.p[i] * x.p[i] : x.p[i];
                    mag += square ? (double)x.p[i] * x.p[i] : fabs(x.p[i]);
                }
                double acc = 0.5; /* accumulate = 1 adds to it */
                vae_cuda_sum(NULL, &acc, x.p, big, square, 1, partials);
                if (off == 0) first = acc;
                bad_sum += bits_differ_d(acc, first);
                bad_sum += !(fabs(acc - 0.5 - want) <= 1e-12 * (mag + 1));
            }
        }
    }
    EXPECT(bad_act == 0, "act at offsets: %d elements differ from the per-element lines", bad_act);
    EXPECT(bad_adam == 0, "adam at offsets: %d values differ from vae_adam_elem", bad_adam);
    EXPECT(bad_u8 == 0, "to_u8 at offsets: %d pixels differ from vae_to_u8", bad_u8);
    EXPECT(bad_round == 0, "round_mantissa at offsets: %d differ", bad_round);
    EXPECT(bad_sum == 0, "sum/sumsq at offsets: %d results differ across offsets or from the host",
           bad_sum);
}

static void offsets_gather(void) {
    int bad = 0;
    const int Ds[] = {4, 8, 12, 6, 13};
    for (int di = 0; di < 5; di++)
        for (int ox = 0; ox < 4; ox++)
            for (int od = 0; od < 2; od++) {
                const int D = Ds[di], N = 9, B = 7, row0 = 3;
                obuf<uint8_t> data((size_t)N * D, od * 4 + (ox & 1));
                obuf<int32_t> idx(row0 + B, 0);
                obuf<float> x((size_t)B * D, ox);
                for (int i = 0; i < N * D; i++) data.p[i] = (uint8_t)(i * 37 + 11);
                for (int i = 0; i < row0 + B; i++) idx.p[i] = (i * 5 + 2) % N;
                vae_step_vals sv = vae_step_vals_make(0, row0, 0, B, 1.0f, 1.0f, 1.0f);
                vae_cuda_gather_batch(NULL, x.p, data.p, idx.p, &sv, B, D);
                for (int b = 0; b < B; b++)
                    for (int d = 0; d < D; d++) {
                        const float want = (float)data.p[(size_t)idx.p[row0 + b] * D + d] / 255.0f;
                        bad += bits_differ(x.p[(size_t)b * D + d], want);
                    }
            }
    EXPECT(bad == 0, "gather_batch at offsets: %d pixels differ", bad);
}

static void offsets_normals(void) {
    int bad_fill = 0, bad_latent = 0;
    const uint64_t firsts[] = {0, 1, 2, 3, 5, 6, 7, (1ull << 40) + 1};
    for (int fi = 0; fi < 8; fi++)
        for (size_t si = 0; si < NSIZES - 1; si++)
            for (int oz = 0; oz < 4; oz++) {
                const size_t n = k_sizes[si];
                obuf<float> z(n + 1, oz);
                z.p[n] = 12345.0f; /* must stay */
                vae_cuda_normal_fill(NULL, z.p, n, 99, VAE_RNG_EVAL, 7, firsts[fi]);
                for (size_t i = 0; i < n; i++)
                    bad_fill += bits_differ(z.p[i], vae_normal_at(99, VAE_RNG_EVAL, 7, firsts[fi] + i));
                bad_fill += z.p[n] != 12345.0f;
            }
    EXPECT(bad_fill == 0, "normal_fill at offsets: %d normals differ from vae_normal_at", bad_fill);

    float vec[2 * 20];
    for (int i = 0; i < 40; i++) vec[i] = frand(-1, 1);
    const int Ls[] = {1, 3, 4, 5, 20};
    for (int kind = 0; kind < 4; kind++)
        for (int li = 0; li < 5; li++)
            for (int64_t first = 0; first < 6; first += 5)
                for (int n = 1; n <= 9; n += 4)
                    for (int oz = 0; oz < 2; oz++) {
                        vae_latent_spec sp;
                        memset(&sp, 0, sizeof sp);
                        sp.kind = kind;
                        sp.L = Ls[li];
                        sp.seed = 4242;
                        sp.d1 = 0;
                        sp.d2 = Ls[li] - 1;
                        sp.steps = 4;
                        sp.range = 2.5;
                        sp.omega = 0.7;
                        const size_t total = (size_t)n * sp.L;
                        obuf<float> z(total, oz);
                        vae_cuda_latent_fill(NULL, z.p, n, first, &sp, vec);
                        for (int k = 0; k < n; k++)
                            for (int l = 0; l < sp.L; l++)
                                bad_latent += bits_differ(z.p[(size_t)k * sp.L + l],
                                                          vae_latent_elem(&sp, vec, first + k, l));
                    }
    EXPECT(bad_latent == 0, "latent_fill at offsets: %d latents differ from vae_latent_elem",
           bad_latent);
}

/* The sum of L terms as the kernels add them: lane j adds l = j, j+32, ...
 * in order, then the xor butterfly over the 32 lanes; lane 0's value. */
static double lane_order_sum(const float *t, int L) {
    double x[32];
    for (int j = 0; j < 32; j++) {
        x[j] = 0;
        for (int l = j; l < L; l += 32) x[j] += (double)t[l];
    }
    for (int o = 16; o > 0; o >>= 1) {
        double y[32];
        for (int j = 0; j < 32; j++) y[j] = x[j] + x[j ^ o];
        memcpy(x, y, sizeof x);
    }
    return x[0];
}

static void offsets_latent_ops(void) {
    int bad_z = 0, bad_dh = 0, bad_kl = 0, bad_lq = 0;
    /* (B, L): tiles of several samples, blocks across rows and tiles, and
     * L > 1024 (one warp per sample) */
    const int shapes[][2] = {{1, 1}, {3, 7}, {5, 4}, {2, 20}, {70, 20}, {600, 3},
                             {9, 128}, {3, 33}, {2, 1100}};
    const uint64_t seed = 77;
    for (int si = 0; si < 9; si++)
        for (int oh = 0; oh < 2; oh++)
            for (int oz = 0; oz < 2; oz++) {
                const int B = shapes[si][0], L = shapes[si][1];
                const size_t n = (size_t)B * L;
                obuf<float> head(2 * n, oh), z(n, oz), dz(n, oz), dhead(2 * n, oz), kl(B, 0),
                    lq(B, 0);
                for (size_t i = 0; i < 2 * n; i++) head.p[i] = frand(-1.5f, 1.5f);
                for (size_t i = 0; i < n; i++) dz.p[i] = frand(-1, 1);
                vae_step_vals sv = vae_step_vals_make(5, 0, 5, B, 0.37f, 1.0f, 1.0f);
                std::vector<float> eps(n), terms(n);
                for (size_t i = 0; i < n; i++) eps[i] = vae_normal_at(seed, VAE_RNG_TRAIN, 5, i);

                vae_cuda_reparam_forward(NULL, z.p, head.p, B, L, seed, VAE_RNG_TRAIN, &sv);
                for (int b = 0; b < B; b++)
                    for (int l = 0; l < L; l++) {
                        const size_t i = (size_t)b * L + l;
                        const float *h = head.p + (size_t)b * 2 * L;
                        bad_z += bits_differ(z.p[i], vae_reparam(h[l], h[L + l], eps[i]));
                    }

                for (int with_dz = 0; with_dz < 2; with_dz++) {
                    vae_cuda_kl_backward(NULL, dhead.p, kl.p, with_dz ? dz.p : NULL, head.p, B, L,
                                         seed, VAE_RNG_TRAIN, &sv);
                    for (int b = 0; b < B; b++) {
                        const float *h = head.p + (size_t)b * 2 * L;
                        for (int l = 0; l < L; l++) {
                            const size_t i = (size_t)b * L + l;
                            const real mu = h[l], lv = h[L + l];
                            real gmu = sv.kl_scale * vae_kl_grad_mu(mu);
                            real glv = sv.kl_scale * vae_kl_grad_lv(lv);
                            if (with_dz) {
                                gmu = dz.p[i] + gmu;
                                glv = vae_reparam_grad_lv(dz.p[i], lv, eps[i]) + glv;
                            }
                            bad_dh += bits_differ(dhead.p[(size_t)b * 2 * L + l], gmu);
                            bad_dh += bits_differ(dhead.p[(size_t)b * 2 * L + L + l], glv);
                            terms[i] = vae_kl_term(mu, lv);
                        }
                        bad_kl += bits_differ(kl.p[b], (real)lane_order_sum(&terms[(size_t)b * L], L));
                    }
                    /* kl only (evaluation): no gradients, the same sums */
                    obuf<float> kl2(B, 0);
                    vae_cuda_kl_backward(NULL, NULL, kl2.p, NULL, head.p, B, L, seed, VAE_RNG_TRAIN,
                                         &sv);
                    for (int b = 0; b < B; b++) bad_kl += bits_differ(kl2.p[b], kl.p[b]);
                }

                for (size_t i = 0; i < n; i++) z.p[i] = frand(-3, 3);
                vae_cuda_log_q_minus_log_p(NULL, lq.p, z.p, head.p, B, L, seed, VAE_RNG_TRAIN, &sv);
                for (int b = 0; b < B; b++) {
                    for (int l = 0; l < L; l++) {
                        const size_t i = (size_t)b * L + l;
                        terms[i] = vae_log_q_minus_log_p(z.p[i], head.p[(size_t)b * 2 * L + L + l],
                                                         eps[i]);
                    }
                    bad_lq += bits_differ(lq.p[b], (real)lane_order_sum(&terms[(size_t)b * L], L));
                }
            }
    EXPECT(bad_z == 0, "reparam_forward at offsets: %d z differ", bad_z);
    EXPECT(bad_dh == 0, "kl_backward at offsets: %d gradients differ", bad_dh);
    EXPECT(bad_kl == 0, "kl_backward at offsets: %d kl sums differ from the lane order", bad_kl);
    EXPECT(bad_lq == 0, "log_q_minus_log_p at offsets: %d sums differ from the lane order", bad_lq);
}

static void offsets_recon(void) {
    int bad_g = 0, bad_r = 0;
    const int Ds[] = {1, 5, 8, 784, 1030, 3072};
    for (int di = 0; di < 6; di++)
        for (int lik = 0; lik < 2; lik++) {
            const int D = Ds[di], B = 3;
            const size_t n = (size_t)B * D;
            float first[3] = {0, 0, 0};
            for (int off = 0; off < 3; off++) {
                obuf<float> out(n, off), x(n, off), g(n, off == 2 ? 1 : off), rec(B, 0);
                g_lcg = 99u + (uint32_t)di;
                for (size_t i = 0; i < n; i++) {
                    out.p[i] = frand(-4, 4);
                    x.p[i] = frand(0, 1);
                }
                const float sigma = 0.7f, gs = 0.25f, iv = 1.0f / (sigma * sigma);
                vae_cuda_recon_loss(NULL, g.p, rec.p, out.p, x.p, B, D, lik, sigma, gs);
                for (int b = 0; b < B; b++) {
                    double want = 0;
                    for (int d = 0; d < D; d++) {
                        const size_t i = (size_t)b * D + d;
                        const float o = out.p[i], t = x.p[i];
                        float wg;
                        if (lik == VAE_LIK_GAUSSIAN) {
                            want += vae_gauss_nll(o, t, iv);
                            wg = gs * vae_gauss_nll_grad(o, t, iv);
                        } else {
                            want += vae_bce_logits(o, t);
                            wg = gs * vae_bce_logits_grad(o, t);
                        }
                        bad_g += bits_differ(g.p[i], wg);
                    }
                    if (lik == VAE_LIK_GAUSSIAN) want += 0.5 * D * log(6.283185307179586 * sigma * sigma);
                    bad_r += !(fabs(rec.p[b] - want) <= 1e-5 * (fabs(want) + 1));
                    /* the order does not depend on the offsets */
                    if (off == 0) first[b] = rec.p[b];
                    else bad_r += bits_differ(rec.p[b], first[b]);
                }
            }
        }
    EXPECT(bad_g == 0, "recon_loss at offsets: %d gradients differ", bad_g);
    EXPECT(bad_r == 0, "recon_loss at offsets: %d sums off or offset-dependent", bad_r);
}

static void kernels_at_offsets(void) {
    offsets_elementwise();
    offsets_gather();
    offsets_normals();
    offsets_latent_ops();
    offsets_recon();
}

static int g_out[256];
static void run_divergent(void) { divergent_kernel<<<1, 256>>>(g_out); }
static void run_deadlock(void) { deadlock_kernel<<<1, 256>>>(g_out); }
static void run_exited(void) { exited_lanes_kernel<<<1, 64>>>(g_out); }
static void run_race(void) { race_kernel<<<1, 64>>>(g_out); }
static void run_pdl_exit(void) { vae_launch(pdl_early_exit_kernel, 2, 64, 0, 0)(g_out); }
static void run_pdl_missing(void) { vae_launch(pdl_missing_kernel, 1, 64, 0, 0)(g_out); }

/* run() in a child whose stderr is captured: it must fail (a signal, or a
 * nonzero exit) with `msg` in what it printed */
static void expect_stop(const char *name, void (*run)(void), const char *msg) {
    int fd[2];
    if (pipe(fd) != 0) {
        perror("pipe");
        exit(1);
    }
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        exit(1);
    }
    if (pid == 0) {
        dup2(fd[1], 2);
        close(fd[0]);
        run();
        _exit(0);
    }
    close(fd[1]);
    static char buf[1 << 16];
    size_t n = 0;
    ssize_t r;
    while (n + 1 < sizeof buf && (r = read(fd[0], buf + n, sizeof buf - 1 - n)) > 0) n += (size_t)r;
    buf[n] = 0;
    close(fd[0]);
    int st = 0;
    waitpid(pid, &st, 0);
    const int aborted = WIFSIGNALED(st) || (WIFEXITED(st) && WEXITSTATUS(st) != 0);
    EXPECT(aborted && strstr(buf, msg), "%s kernel: %s, message \"%s\" %s", name,
           aborted ? "stopped" : "NOT stopped by the emulator", msg,
           strstr(buf, msg) ? "printed" : "missing");
    if (aborted && strstr(buf, msg)) printf("%s kernel stopped: %.*s", name, (int)strcspn(buf, "\n") + 1, buf);
}

int main(void) {
    values();
    kernels_at_offsets();
    expect_stop("divergent", run_divergent, "divergent __syncthreads");
    expect_stop("deadlock", run_deadlock, "no barrier can be released");
    expect_stop("exited-lanes", run_exited, "lanes that left");
    expect_stop("early-exit PDL", run_pdl_exit, "passed VAE_PDL_ENTRY() 0 times");
    expect_stop("entry-less PDL", run_pdl_missing, "passed VAE_PDL_ENTRY() 0 times");
#ifdef __SANITIZE_THREAD__
    expect_stop("racy", run_race, "ThreadSanitizer: data race");
#else
    (void)run_race;
    printf("racy kernel: not run (the ThreadSanitizer build finds races)\n");
#endif
    printf("%s\n", failures ? "emulator self-test FAILED" : "emulator self-test passed");
    return failures ? 1 : 0;
}

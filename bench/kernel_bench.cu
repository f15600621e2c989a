/* kernel_bench.cu — per-kernel memory bandwidth of the CUDA backend's own
 * kernels (src/kernels), against the card's measured device-to-device copy.
 *
 *   vae_kernel_bench [--md FILE] [--quick] [--min-log2 N] [--max-log2 N]
 *                    [--budget-ms MS] [--only NAME[,NAME...]] [--device N]
 *
 * Every figure comes from the real launchers of src/kernels/vae_kernels.cuh
 * (this program links the vae_kernels library), so it measures what
 * `vae train` and `vae sample` run.
 *
 * Method
 *   - Bytes: what each kernel must move per element, read + written, from
 *     the header comments of src/kernels/NAME.cu (checked against the code;
 *     where a header is loose the count here follows the code). Small
 *     broadcast operands that stay in cache (a bias row, idx, gnorm2) are
 *     counted once, not per element. The step's vae_step_vals block (56
 *     bytes in device memory, from which the kernels read the noise
 *     subsequence, KL weight, batch offset or bias corrections) is not
 *     counted: every thread reads the same few bytes of it once, a cached
 *     broadcast that is negligible beside even the smallest case here.
 *   - Reference: cudaMemcpyAsync device-to-device of a large buffer, counted
 *     as read + written (2 x bytes), median of 20. "% D2D" = the kernel's
 *     GB/s over that figure. The theoretical peak (memory clock x bus width)
 *     is printed beside it.
 *   - Time ("cold"): before each timed launch a read of 4 x L2 bytes evicts
 *     the kernel's data from L2, then cudaEvents around the one launcher call;
 *     median over the repetitions (as many as fit --budget-ms, 10..200).
 *     Rows marked "L2" move less than 2 x the L2 size: their writes can still
 *     sit in L2 when the kernel ends, so they may read high.
 *     "b2b": the mean time of back-to-back launches with the data warm in L2,
 *     as a training step issues them (launch overhead shows at small sizes).
 *   - Checks: after the first launch, 16 sampled outputs (first, last, 14
 *     spread) against the same vae_math.h line computed on the host; after
 *     timing, a device scan of the float outputs for NaN/Inf. A failed check
 *     marks the row FAIL and makes the exit status 1, so a broken launch
 *     cannot pass as a fast one. Every CUDA call is checked; the launchers
 *     check their launches themselves (vae_panic aborts).
 *
 *   - Launch latency (launch_chain): 64 dependent launches of a tiny kernel,
 *     from the stream and as a graph, without and with programmatic
 *     dependent launch (both ways, whatever $VAE_CUDA_PDL says), in us per
 *     launch.
 *   - Beside the streaming kernels: the direct transposed convolution
 *     (convt.cu) on the decoders' layers and the direct convolution
 *     (convf.cu) on the encoders', and the direct weight gradient
 *     (convw.cu) on the training layers, whose notes give TFLOPS (compute-
 *     or latency-bound, so their % D2D says little).
 *
 * Exit status: 0 all checks passed, 1 a check failed or a CUDA error, 2 usage.
 */
#include <cuda_runtime.h>
#include <dlfcn.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <csignal>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <functional>
#include <string>
#include <vector>

#include "vae_backend.h" /* VAE_ACT_*, VAE_LIK_*, vae_math.h */
#include "vae_kernels.cuh"

/* Grid-stride loop (size_t index), as the kernels' own VAE_GRID_STRIDE_LOOP. */
#define LOOP(i, n)                                                              \
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);    \
         i += (size_t)gridDim.x * blockDim.x)

/* ------------------------------------------------------------ errors */

#define CK(call)                                                                            \
    do {                                                                                    \
        cudaError_t e_ = (call);                                                            \
        if (e_ != cudaSuccess) {                                                            \
            fprintf(stderr, "vae_kernel_bench: CUDA error at %s:%d: %s: %s (%d)\n", __FILE__, \
                    __LINE__, #call, cudaGetErrorString(e_), (int)e_);                      \
            exit(1);                                                                        \
        }                                                                                   \
    } while (0)

/* The launchers report a failed launch through vae_panic (src/host/util.c in
 * the engine); this program links only the kernels, so it provides its own. */
extern "C" void vae_panic(const char *file, int line, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "vae_kernel_bench: internal error at %s:%d: ", file, line);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    fflush(stderr);
    abort();
}

/* ------------------------------------------------------------ test data */

/* Deterministic inputs that the host can recompute: value i of tensor `tag`
 * is lo + span * k / 2^20 with k 20 random bits. span is a power of two and
 * lo a multiple of span / 2^20, so the value is exact in float on both sides
 * (no rounding, whether or not the compiler fuses the multiply-add). */
__host__ __device__ __forceinline__ uint64_t mix64(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
__host__ __device__ __forceinline__ uint64_t hbits(uint32_t tag, uint64_t i) {
    return mix64(i ^ ((uint64_t)tag << 40));
}
__host__ __device__ __forceinline__ float hval(uint32_t tag, uint64_t i, float lo, float span) {
    uint32_t k = (uint32_t)(hbits(tag, i) >> 44);
    return lo + span * ((float)k * (1.0f / 1048576.0f));
}

__global__ void fill_f32_kernel(float *x, size_t n, uint32_t tag, float lo, float span) {
    LOOP(i, n) x[i] = hval(tag, i, lo, span);
}
__global__ void fill_u8_kernel(uint8_t *x, size_t n, uint32_t tag) {
    LOOP(i, n) x[i] = (uint8_t)(hbits(tag, i) & 255u);
}
__global__ void fill_idx_kernel(int32_t *x, size_t n, uint32_t tag, uint32_t N) {
    LOOP(i, n) x[i] = (int32_t)(hbits(tag, i) % N);
}
static uint8_t hu8(uint32_t tag, uint64_t i) { return (uint8_t)(hbits(tag, i) & 255u); }
static int32_t hidx(uint32_t tag, uint64_t i, uint32_t N) { return (int32_t)(hbits(tag, i) % N); }

/* Count of non-finite floats, into *count (atomic; only for the check). */
__global__ void nonfinite_kernel(const float *x, size_t n, unsigned long long *count) {
    unsigned long long c = 0;
    LOOP(i, n) c += isfinite(x[i]) ? 0ull : 1ull;
    if (c) atomicAdd(count, c);
}

/* Reads the whole buffer (4 x L2), so that the next kernel finds none of its
 * data in L2; reads leave clean lines, which cost nothing to evict. */
__global__ void flush_kernel(const float4 *buf, size_t n4, float *sink) {
    float acc = 0.f;
    LOOP(i, n4) {
        float4 v = buf[i];
        acc += v.x + v.y + v.z + v.w;
    }
    if (acc == 1234.5f) *sink = acc; /* never: the buffer is zero */
}

/* Reference row: a plain float4 copy (what a streaming kernel can reach). */
__global__ void copy4_kernel(float4 *dst, const float4 *src, size_t n4) {
    LOOP(i, n4) dst[i] = src[i];
}

/* ------------------------------------------------------------ globals */

static cudaStream_t g_s;
static cudaEvent_t g_e0, g_e1;
static float *g_flush;
static size_t g_flush_n4;
static float *g_sink;
static unsigned long long *g_count;
static int g_sms, g_l2;
static double g_budget_ms = 120.0;
static double g_d2d_gbs = 0;
static std::vector<std::string> g_only;
static int g_failures;
/* SIGTERM/SIGINT (a `timeout` around the run): finish the case in hand, skip
 * the rest, and still print the summary and write --md. */
static volatile sig_atomic_t g_stop;
static void on_signal(int) { g_stop = 1; }

static unsigned grid_for(size_t n) {
    size_t g = (n + 255) / 256;
    if (g > (size_t)g_sms * 16) g = (size_t)g_sms * 16;
    return g ? (unsigned)g : 1u;
}

static void fill(float *x, size_t n, uint32_t tag, float lo, float span) {
    fill_f32_kernel<<<grid_for(n), 256, 0, g_s>>>(x, n, tag, lo, span);
    CK(cudaGetLastError());
}

static void flush_l2() {
    flush_kernel<<<(unsigned)g_sms * 8, 256, 0, g_s>>>((const float4 *)g_flush, g_flush_n4, g_sink);
    CK(cudaGetLastError());
}

template <class T> struct DBuf {
    T *p = nullptr;
    size_t n = 0;
    /* zeroed (the reductions' scratch must start with zero counters), and
     * done before any later work on the bench's non-blocking stream */
    explicit DBuf(size_t count) : n(count) {
        CK(cudaMalloc((void **)&p, (count ? count : 1) * sizeof(T)));
        CK(cudaMemset(p, 0, (count ? count : 1) * sizeof(T)));
        CK(cudaDeviceSynchronize());
    }
    ~DBuf() {
        if (p) {
            cudaError_t e = cudaFree(p);
            if (e != cudaSuccess) {
                fprintf(stderr, "vae_kernel_bench: cudaFree: %s\n", cudaGetErrorString(e));
                exit(1);
            }
        }
    }
    DBuf(const DBuf &) = delete;
    DBuf &operator=(const DBuf &) = delete;
};

template <class T> static T dget(const T *p, size_t i) {
    T v;
    CK(cudaMemcpy(&v, p + i, sizeof(T), cudaMemcpyDeviceToHost));
    return v;
}

/* The per-step values of a case, as step_begin would leave them, uploaded to
 * the one-element device buffer `d` that the launchers read. */
static void put_vals(vae_step_vals *d, int64_t step, uint64_t sub, int64_t row0, int rows,
                     float kl_scale, float bc1, float bc2) {
    const vae_step_vals h = vae_step_vals_make(step, row0, sub, rows, kl_scale, bc1, bc2);
    CK(cudaMemcpyAsync(d, &h, sizeof h, cudaMemcpyHostToDevice, g_s));
    CK(cudaStreamSynchronize(g_s));
}

static unsigned long long count_nonfinite(const float *x, size_t n) {
    CK(cudaMemsetAsync(g_count, 0, sizeof *g_count, g_s));
    nonfinite_kernel<<<grid_for(n), 256, 0, g_s>>>(x, n, g_count);
    CK(cudaGetLastError());
    unsigned long long c = 0;
    CK(cudaMemcpyAsync(&c, g_count, sizeof c, cudaMemcpyDeviceToHost, g_s));
    CK(cudaStreamSynchronize(g_s));
    return c;
}

/* 16 sample indices in [0, n): first, last, 14 spread by a hash. */
static std::vector<size_t> samples(size_t n) {
    std::vector<size_t> v;
    if (n == 0) return v;
    v.push_back(0);
    if (n > 1) v.push_back(n - 1);
    for (int k = 0; k < 14; k++) v.push_back((size_t)(mix64(777 + k) % n));
    return v;
}

static bool close_to(double got, double want, double tol) {
    return std::isfinite(got) && std::fabs(got - want) <= tol * std::max(1.0, std::fabs(want));
}

/* Collects the first few mismatches of a check. */
struct Check {
    std::string msg;
    int bad = 0;
    void expect(bool ok, const char *what, size_t i, double got, double want) {
        if (ok) return;
        if (bad++ < 3) {
            char b[256];
            snprintf(b, sizeof b, "%s[%zu] = %.9g, expected %.9g; ", what, i, got, want);
            msg += b;
        }
    }
    void near(const char *what, size_t i, double got, double want, double tol) {
        expect(close_to(got, want, tol), what, i, got, want);
    }
};

/* ------------------------------------------------------------ timing */

struct Timing {
    double cold_us = 0, cold_min_us = 0, b2b_us = 0;
    int reps = 0, b2b_reps = 0;
};

static float event_ms() {
    float ms = 0;
    CK(cudaEventElapsedTime(&ms, g_e0, g_e1));
    return ms;
}

static Timing time_launch(const std::function<void()> &launch) {
    Timing t;
    /* warm-up (module load, first-touch), then one cold probe */
    launch();
    launch();
    CK(cudaStreamSynchronize(g_s));
    flush_l2();
    CK(cudaEventRecord(g_e0, g_s));
    launch();
    CK(cudaEventRecord(g_e1, g_s));
    CK(cudaEventSynchronize(g_e1));
    double probe = event_ms();
    flush_l2();
    CK(cudaEventRecord(g_e0, g_s));
    flush_l2();
    CK(cudaEventRecord(g_e1, g_s));
    CK(cudaEventSynchronize(g_e1));
    double fl = event_ms();
    int reps = (int)(g_budget_ms / (probe + fl + 0.02));
    reps = std::min(200, std::max(10, reps));
    std::vector<double> ts;
    ts.reserve(reps);
    for (int r = 0; r < reps; r++) {
        flush_l2();
        CK(cudaEventRecord(g_e0, g_s));
        launch();
        CK(cudaEventRecord(g_e1, g_s));
        CK(cudaEventSynchronize(g_e1));
        ts.push_back(event_ms() * 1e3);
    }
    std::sort(ts.begin(), ts.end());
    t.reps = reps;
    t.cold_us = ts.size() % 2 ? ts[ts.size() / 2] : 0.5 * (ts[ts.size() / 2 - 1] + ts[ts.size() / 2]);
    t.cold_min_us = ts.front();
    /* back to back, warm */
    int k = (int)(0.5 * g_budget_ms / std::max(probe, 1e-3));
    k = std::min(1000, std::max(5, k));
    launch();
    CK(cudaEventRecord(g_e0, g_s));
    for (int r = 0; r < k; r++) launch();
    CK(cudaEventRecord(g_e1, g_s));
    CK(cudaEventSynchronize(g_e1));
    t.b2b_us = event_ms() * 1e3 / k;
    t.b2b_reps = k;
    CK(cudaGetLastError());
    return t;
}

/* ------------------------------------------------------------ rows */

struct Row {
    std::string kernel, shape, note;
    double elems = 0, bytes = 0;
    Timing t;
    bool ok = true, l2 = false;
};
static std::vector<Row> g_rows;

static bool want(const char *kernel) {
    if (g_stop) return false;
    if (g_only.empty()) return true;
    for (const std::string &o : g_only)
        if (strstr(kernel, o.c_str())) return true;
    return false;
}

static bool fits(double bytes_needed) {
    size_t fr = 0, tot = 0;
    CK(cudaMemGetInfo(&fr, &tot));
    return bytes_needed < 0.85 * (double)fr;
}

static void print_header() {
    printf("%-22s %-24s %11s %6s %9s %11s %8s %6s %10s %8s  %s\n", "kernel", "shape", "elements",
           "B/el", "MB", "cold us", "GB/s", "%D2D", "b2b us", "b2b GB/s", "check / note");
    fflush(stdout);
}

static void print_row(const Row &r) {
    double gbs = r.bytes / (r.t.cold_us * 1e-6) / 1e9;
    double gbs2 = r.bytes / (r.t.b2b_us * 1e-6) / 1e9;
    printf("%-22s %-24s %11.0f %6.2f %9.2f %11.2f %8.1f %5.1f%% %10.2f %8.1f  %s%s%s\n",
           r.kernel.c_str(), r.shape.c_str(), r.elems, r.bytes / r.elems, r.bytes / 1e6, r.t.cold_us,
           gbs, 100.0 * gbs / g_d2d_gbs, r.t.b2b_us, gbs2, r.ok ? "ok" : "FAIL", r.l2 ? " L2" : "",
           r.note.empty() ? "" : ("  " + r.note).c_str());
    fflush(stdout);
}

/* Runs one case: first launch, sampled check, timing, non-finite scan. */
static void run_case(const char *kernel, const std::string &shape, double elems, double bytes,
                     const std::function<void()> &launch, const std::function<std::string()> &check,
                     const std::vector<std::pair<const float *, size_t>> &scan,
                     const char *note = "") {
    Row r;
    r.kernel = kernel;
    r.shape = shape;
    r.elems = elems;
    r.bytes = bytes;
    r.note = note;
    r.l2 = bytes < 2.0 * g_l2;
    CK(cudaStreamSynchronize(g_s));
    launch();
    CK(cudaStreamSynchronize(g_s));
    std::string msg = check ? check() : std::string();
    r.t = time_launch(launch);
    for (const auto &b : scan) {
        unsigned long long c = count_nonfinite(b.first, b.second);
        if (c) {
            char m[96];
            snprintf(m, sizeof m, "%llu non-finite outputs after timing; ", c);
            msg += m;
        }
    }
    if (!msg.empty()) {
        r.ok = false;
        r.note = msg + r.note;
        g_failures++;
    }
    print_row(r);
    g_rows.push_back(r);
}

static std::string fmt(const char *f, ...) {
    char b[256];
    va_list ap;
    va_start(ap, f);
    vsnprintf(b, sizeof b, f, ap);
    va_end(ap);
    return b;
}

/* ------------------------------------------------------------ cases */

enum : uint32_t { T_A = 1, T_B, T_C, T_D, T_E, T_IDX, T_U8 };
static const uint64_t SEED = 0x1234567ull;
static const uint64_t SUB = 42;

static void case_copy(size_t n) {
    if (!want("copy(ref)") || !fits(8.0 * n)) return;
    DBuf<float> a(n), b(n);
    fill(a.p, n, T_A, -1, 2);
    auto launch = [&] {
        copy4_kernel<<<grid_for(n / 4), 256, 0, g_s>>>((float4 *)b.p, (const float4 *)a.p, n / 4);
        CK(cudaGetLastError());
    };
    auto check = [&] {
        Check c;
        for (size_t i : samples(n)) c.near("dst", i, dget(b.p, i), hval(T_A, i, -1, 2), 0);
        return c.msg;
    };
    run_case("copy(ref)", fmt("n=2^%d", (int)std::log2((double)n)), (double)n, 8.0 * n, launch, check,
             {}, "plain float4 copy kernel");
}

static void case_act(size_t n) {
    std::string sh = fmt("n=2^%d", (int)std::log2((double)n));
    if (want("act_fwd") && fits(8.0 * n)) {
        DBuf<float> in(n), out(n);
        fill(in.p, n, T_A, -1, 2);
        auto launch = [&] { vae_cuda_act_forward(g_s, out.p, in.p, n, VAE_ACT_RELU, 0); };
        auto check = [&] {
            Check c;
            for (size_t i : samples(n)) {
                float x = hval(T_A, i, -1, 2);
                c.near("out", i, dget(out.p, i), x > 0 ? x : 0.f, 0);
            }
            return c.msg;
        };
        run_case("act_fwd relu", sh, (double)n, 8.0 * n, launch, check, {{out.p, n}});
    }
    if (want("act_bwd") && fits(12.0 * n)) {
        DBuf<float> dout(n), out(n), din(n);
        fill(dout.p, n, T_A, -1, 2);
        fill(out.p, n, T_B, -1, 2);
        auto launch = [&] { vae_cuda_act_backward(g_s, din.p, dout.p, out.p, n, VAE_ACT_RELU, 0); };
        auto check = [&] {
            Check c;
            for (size_t i : samples(n)) {
                float y = hval(T_B, i, -1, 2), d = hval(T_A, i, -1, 2);
                c.near("din", i, dget(din.p, i), y > 0 ? d : 0.f, 0);
            }
            return c.msg;
        };
        run_case("act_bwd relu", sh, (double)n, 12.0 * n, launch, check, {{din.p, n}});
    }
}

/* Launch latency, what programmatic dependent launch (src/kernels/common.cuh;
 * the engine's $VAE_CUDA_PDL=1) is for: a chain of 64 dependent launches of a tiny
 * kernel — leaky ReLU with slope 1/2, in place on 4096 floats, so each launch
 * reads what the one before it wrote — issued to the stream one by one and
 * as one CUDA graph, each without and (compute capability 9.0 and later) with
 * the attribute. Time per launch: the median over 5 timings of 10 chains.
 * Check: after one chain each negative input is exactly x / 2^64 (a launch
 * that ran before its predecessor had finished would leave another power of
 * two), each positive one unchanged. */
static void launch_chain(std::vector<std::string> &out, int major) {
    if (!want("launch_chain")) return;
    const int chain = 64;
    const size_t n = 4096;
    DBuf<float> x(n);
    std::string line = fmt("launch chain: %d dependent launches of act_fwd (leaky ReLU, 1/2, in "
                           "place, %zu floats), us per launch:", chain, n);
    const bool can = major >= 9 && vae_cuda_kernels_ptx_version() >= 90;
    for (int pdl = 0; pdl <= (can ? 1 : 0); pdl++) {
        vae_cuda_set_pdl(pdl);
        for (int graph = 0; graph <= 1; graph++) {
            auto once = [&] {
                for (int k = 0; k < chain; k++)
                    vae_cuda_act_forward(g_s, x.p, x.p, n, VAE_ACT_LEAKY_RELU, 0.5f);
            };
            cudaGraphExec_t exec = nullptr;
            if (graph) {
                cudaGraph_t gr = nullptr;
                CK(cudaStreamBeginCapture(g_s, cudaStreamCaptureModeThreadLocal));
                once();
                CK(cudaStreamEndCapture(g_s, &gr));
                CK(cudaGraphInstantiate(&exec, gr, 0));
                CK(cudaGraphDestroy(gr));
            }
            auto run = [&] {
                if (graph) CK(cudaGraphLaunch(exec, g_s));
                else once();
            };
            fill(x.p, n, T_A, -1, 2);
            run();
            CK(cudaStreamSynchronize(g_s));
            Check c;
            for (size_t i : samples(n)) {
                const float v = hval(T_A, i, -1, 2);
                c.near("x", i, dget(x.p, i), v > 0 ? v : std::ldexp(v, -chain), 0);
            }
            std::vector<double> ts;
            for (int r = 0; r < 5; r++) {
                CK(cudaEventRecord(g_e0, g_s));
                for (int k = 0; k < 10; k++) run();
                CK(cudaEventRecord(g_e1, g_s));
                CK(cudaEventSynchronize(g_e1));
                ts.push_back(event_ms() * 1e3 / (10.0 * chain));
            }
            std::sort(ts.begin(), ts.end());
            if (exec) CK(cudaGraphExecDestroy(exec));
            line += fmt(" %s%s %.2f%s", graph ? "graph" : "stream", pdl ? "+PDL" : "", ts[2],
                        c.msg.empty() ? "" : " (CHECK FAILED)");
            if (!c.msg.empty()) {
                g_failures++;
                printf("launch chain%s%s: FAIL %s\n", graph ? " graph" : "", pdl ? " PDL" : "",
                       c.msg.c_str());
            }
        }
    }
    vae_cuda_set_pdl(0);
    if (!can) line += " (no PDL: needs compute capability 9.0 and kernels built for sm_90)";
    printf("%s\n", line.c_str());
    out.push_back(line);
}

static void case_adam(size_t n, bool clip) {
    const char *name = clip ? "adam clip" : "adam";
    if (!want(name) || !fits(16.0 * n)) return;
    DBuf<float> p(n), g(n), m(n), v(n);
    DBuf<double> g2(1);
    DBuf<int> bad(1);
    DBuf<vae_step_vals> sv(1);
    fill(p.p, n, T_A, -1, 2);
    fill(g.p, n, T_B, -0.5f, 1);
    fill(m.p, n, T_C, -0.125f, 0.25f);
    fill(v.p, n, T_D, 0, 0.0625f);
    const double gn2 = 16.0; /* ||g||^2: clip 1 -> scale 1 / (4 + 1e-6) */
    CK(cudaMemcpyAsync(g2.p, &gn2, sizeof gn2, cudaMemcpyHostToDevice, g_s));
    CK(cudaMemsetAsync(bad.p, 0, sizeof(int), g_s));
    vae_adam_hp hp;
    memset(&hp, 0, sizeof hp);
    hp.lr = 1e-3f;
    hp.beta1 = 0.9f;
    hp.beta2 = 0.999f;
    hp.eps = 1e-8f;
    hp.weight_decay = 0;
    hp.decoupled = 0;
    const float bc1 = 1.0f - 0.9f, bc2 = 1.0f - 0.999f; /* step 0 */
    put_vals(sv.p, 0, 0, 0, 1, 1.0f, bc1, bc2);
    const real clipv = clip ? 1.0f : 0.0f;
    auto launch = [&] { vae_cuda_adam(g_s, p.p, g.p, m.p, v.p, n, &hp, clipv, g2.p, bad.p, sv.p); };
    auto check = [&] {
        Check c;
        real gscale = 1;
        if (clipv > 0) {
            double cc = (double)clipv / (std::sqrt(gn2) + 1e-6);
            if (cc < 1.0) gscale = (real)cc;
        }
        for (size_t i : samples(n)) {
            real pi = hval(T_A, i, -1, 2), mi = hval(T_C, i, -0.125f, 0.25f), vi = hval(T_D, i, 0, 0.0625f);
            vae_adam_elem(&pi, hval(T_B, i, -0.5f, 1), &mi, &vi, &hp, bc1, bc2, gscale);
            c.near("p", i, dget(p.p, i), pi, 1e-5);
            c.near("m", i, dget(m.p, i), mi, 1e-5);
            c.near("v", i, dget(v.p, i), vi, 1e-5);
        }
        int b = dget(bad.p, 0);
        c.expect(b == 0, "bad", 0, b, 0);
        return c.msg;
    };
    run_case(name, fmt("n=2^%d", (int)std::log2((double)n)), (double)n, 28.0 * n, launch, check,
             {{p.p, n}, {m.p, n}, {v.p, n}}, clip ? "clip on: gscale from gnorm2 on device" : "");
}

static void case_to_u8(size_t n) {
    if (!want("to_u8") || !fits(5.0 * n)) return;
    DBuf<float> o(n);
    DBuf<uint8_t> px(n);
    fill(o.p, n, T_A, -4, 8);
    auto launch = [&] { vae_cuda_to_u8(g_s, px.p, o.p, n, 1); };
    auto check = [&] {
        Check c;
        for (size_t i : samples(n)) {
            int want_px = vae_to_u8(hval(T_A, i, -4, 8), 1), got = dget(px.p, i);
            c.expect(std::abs(got - want_px) <= 1, "px", i, got, want_px);
        }
        return c.msg;
    };
    run_case("to_u8 logit", fmt("n=2^%d", (int)std::log2((double)n)), (double)n, 5.0 * n, launch,
             check, {});
}

static void case_normal_fill(size_t n) {
    if (!want("normal_fill") || !fits(4.0 * n)) return;
    DBuf<float> z(n);
    const uint64_t first = 1000;
    auto launch = [&] { vae_cuda_normal_fill(g_s, z.p, n, SEED, VAE_RNG_PRIOR, SUB, first); };
    auto check = [&] {
        Check c;
        for (size_t i : samples(n))
            c.near("z", i, dget(z.p, i), vae_normal_at(SEED, VAE_RNG_PRIOR, SUB, first + i), 1e-6);
        return c.msg;
    };
    run_case("normal_fill", fmt("n=2^%d", (int)std::log2((double)n)), (double)n, 4.0 * n, launch, check,
             {{z.p, n}}, "Philox + float Box-Muller, 4 normals per thread");
}

static void case_latent_fill(size_t n_elems, int L, int kind) {
    const char *name = kind == VAE_LATENT_PRIOR ? "latent_fill prior" : "latent_fill grid";
    int nimg = (int)(n_elems / (size_t)L);
    size_t n = (size_t)nimg * L;
    if (!want(name) || nimg <= 0 || !fits(4.0 * n)) return;
    DBuf<float> z(n), vec(2 * (size_t)L);
    fill(vec.p, 2 * (size_t)L, T_B, -1, 2);
    std::vector<float> hvec(2 * (size_t)L);
    for (size_t i = 0; i < hvec.size(); i++) hvec[i] = hval(T_B, i, -1, 2);
    vae_latent_spec spec;
    memset(&spec, 0, sizeof spec);
    spec.kind = kind;
    spec.L = L;
    spec.seed = SEED;
    spec.d1 = 0;
    spec.d2 = 1;
    spec.quantiles = 0;
    spec.steps = 4096;
    spec.range = 3.0;
    const int64_t first = 5;
    auto launch = [&] { vae_cuda_latent_fill(g_s, z.p, nimg, first, &spec, vec.p); };
    auto check = [&] {
        Check c;
        for (size_t i : samples(n)) {
            float w = vae_latent_elem(&spec, hvec.data(), first + (int64_t)(i / L), (int)(i % L));
            c.near("z", i, dget(z.p, i), w, 1e-6);
        }
        return c.msg;
    };
    run_case(name, fmt("%d x L=%d", nimg, L), (double)n, 4.0 * n, launch, check, {{z.p, n}},
             kind == VAE_LATENT_PRIOR ? "Philox + float Box-Muller, 4 normals per thread" : "");
}

static void case_round(size_t n) {
    if (!want("round_mantissa") || !fits(4.0 * n)) return;
    DBuf<float> x(n);
    fill(x.p, n, T_A, -1, 2);
    auto launch = [&] { vae_cuda_round_mantissa(g_s, x.p, n, 10); };
    auto check = [&] {
        Check c;
        for (size_t i : samples(n))
            c.near("x", i, dget(x.p, i), vae_round_mantissa(hval(T_A, i, -1, 2), 10), 0);
        return c.msg;
    };
    run_case("round_mantissa tf32", fmt("n=2^%d", (int)std::log2((double)n)), (double)n, 8.0 * n,
             launch, check, {{x.p, n}}, "in place");
}

static void case_sum(size_t n, int square) {
    const char *name = square ? "sumsq" : "sum";
    if (!want(name) || !fits(4.0 * n)) return;
    DBuf<float> v(n);
    DBuf<double> acc(1), part(VAE_CUDA_REDUCE_SCRATCH);
    fill(v.p, n, T_A, -1, 2);
    /* pass-1 blocks (reduce.cu): one thread per group of 4 elements */
    size_t G = std::min<size_t>(((n + 3) / 4 + 255) / 256, VAE_CUDA_REDUCE_MAX_BLOCKS);
    double bytes = 4.0 * n + (G > 1 ? 16.0 * G : 0) + 8.0;
    auto launch = [&] { vae_cuda_sum(g_s, acc.p, v.p, n, square, 0, part.p); };
    auto check = [&] {
        Check c;
        double want_s = 0, abs_s = 0;
        for (size_t i = 0; i < n; i++) {
            double x = hval(T_A, i, -1, 2);
            want_s += square ? x * x : x;
            abs_s += square ? x * x : std::fabs(x);
        }
        double got = dget(acc.p, 0);
        c.expect(std::isfinite(got) && std::fabs(got - want_s) <= 1e-9 * std::max(1.0, abs_s), "acc", 0,
                 got, want_s);
        /* determinism: a second run gives the same bits */
        launch();
        CK(cudaStreamSynchronize(g_s));
        double again = dget(acc.p, 0);
        c.expect(memcmp(&again, &got, sizeof got) == 0, "acc(rerun)", 0, again, got);
        return c.msg;
    };
    run_case(name, fmt("n=2^%d", (int)std::log2((double)n)), (double)n, bytes, launch, check, {},
             G > 1 ? "1 launch (partials, the last block adds them)" : "1 launch");
}

static void case_reparam(int B, int L) {
    size_t n = (size_t)B * L;
    if (!want("reparam_fwd") || !fits(12.0 * n)) return;
    DBuf<float> head(2 * n), z(n);
    DBuf<vae_step_vals> sv(1);
    fill(head.p, 2 * n, T_A, -1, 2);
    put_vals(sv.p, (int64_t)SUB, SUB, 0, B, 1.0f / B, 1, 1);
    auto launch = [&] { vae_cuda_reparam_forward(g_s, z.p, head.p, B, L, SEED, VAE_RNG_TRAIN, sv.p); };
    auto check = [&] {
        Check c;
        for (size_t i : samples(n)) {
            size_t b = i / L, l = i % L;
            float mu = hval(T_A, b * 2 * L + l, -1, 2), lv = hval(T_A, b * 2 * L + L + l, -1, 2);
            float w = vae_reparam(mu, lv, vae_normal_at(SEED, VAE_RNG_TRAIN, SUB, i));
            c.near("z", i, dget(z.p, i), w, 1e-5);
        }
        return c.msg;
    };
    run_case("reparam_fwd", fmt("B=%d L=%d", B, L), (double)n, 12.0 * n, launch, check, {{z.p, n}},
             "Philox + float Box-Muller, 4 normals per thread");
}

static void case_kl_backward(int B, int L) {
    size_t n = (size_t)B * L;
    if (!want("kl_bwd") || !fits(20.0 * n + 4.0 * B)) return;
    DBuf<float> head(2 * n), dz(n), dhead(2 * n), kl(B);
    DBuf<vae_step_vals> sv(1);
    fill(head.p, 2 * n, T_A, -1, 2);
    fill(dz.p, n, T_B, -1, 2);
    const float beta = 1.0f / B; /* sv->kl_scale: beta 1 over B rows */
    put_vals(sv.p, (int64_t)SUB, SUB, 0, B, beta, 1, 1);
    auto launch = [&] {
        vae_cuda_kl_backward(g_s, dhead.p, kl.p, dz.p, head.p, B, L, SEED, VAE_RNG_TRAIN, sv.p);
    };
    auto check = [&] {
        Check c;
        for (size_t i : samples(n)) {
            size_t b = i / L, l = i % L;
            float mu = hval(T_A, b * 2 * L + l, -1, 2), lv = hval(T_A, b * 2 * L + L + l, -1, 2);
            float d = hval(T_B, i, -1, 2);
            float eps = vae_normal_at(SEED, VAE_RNG_TRAIN, SUB, i);
            float gmu = d + beta * vae_kl_grad_mu(mu);
            float glv = vae_reparam_grad_lv(d, lv, eps) + beta * vae_kl_grad_lv(lv);
            c.near("dmu", i, dget(dhead.p, b * 2 * L + l), gmu, 1e-5);
            c.near("dlv", i, dget(dhead.p, b * 2 * L + L + l), glv, 1e-5);
        }
        for (size_t b : samples((size_t)B)) {
            double s = 0;
            for (int l = 0; l < L; l++)
                s += vae_kl_term(hval(T_A, b * 2 * L + l, -1, 2), hval(T_A, b * 2 * L + L + l, -1, 2));
            c.near("kl", b, dget(kl.p, b), s, 1e-5);
        }
        return c.msg;
    };
    run_case("kl_bwd", fmt("B=%d L=%d", B, L), (double)n, 20.0 * n + 4.0 * B, launch, check,
             {{dhead.p, 2 * n}, {kl.p, (size_t)B}}, "1024/L samples per block, 4 normals per thread");
}

static void case_log_q(int B, int L) {
    size_t n = (size_t)B * L;
    if (!want("log_q_minus_log_p") || !fits(12.0 * n + 4.0 * B)) return;
    DBuf<float> head(2 * n), z(n), out(B);
    DBuf<vae_step_vals> sv(1);
    fill(head.p, 2 * n, T_A, -1, 2);
    fill(z.p, n, T_B, -2, 4);
    put_vals(sv.p, 0, SUB, 0, B, 0, 1, 1);
    auto launch = [&] { vae_cuda_log_q_minus_log_p(g_s, out.p, z.p, head.p, B, L, SEED, VAE_RNG_EVAL, sv.p); };
    auto check = [&] {
        Check c;
        for (size_t b : samples((size_t)B)) {
            double s = 0;
            for (int l = 0; l < L; l++) {
                size_t i = b * L + l;
                s += vae_log_q_minus_log_p(hval(T_B, i, -2, 4), hval(T_A, b * 2 * L + L + l, -1, 2),
                                           vae_normal_at(SEED, VAE_RNG_EVAL, SUB, i));
            }
            c.near("out", b, dget(out.p, b), s, 1e-5 * L);
        }
        return c.msg;
    };
    run_case("log_q_minus_log_p", fmt("B=%d L=%d", B, L), (double)n, 8.0 * n + 4.0 * B, launch, check,
             {{out.p, (size_t)B}}, "1024/L samples per block, 4 normals per thread");
}

static void case_recon(int B, int D, int lik, bool grad) {
    const char *name = lik == VAE_LIK_GAUSSIAN ? (grad ? "recon mse+grad" : "recon mse")
                                               : (grad ? "recon bce+grad" : "recon bce");
    size_t n = (size_t)B * D;
    double bytes = (grad ? 12.0 : 8.0) * n + 4.0 * B;
    if (!want(name) || !fits(bytes)) return;
    DBuf<float> out(n), x(n), dout(grad ? n : 1), recon(B);
    fill(out.p, n, T_A, -4, 8);
    fill(x.p, n, T_B, 0, 1);
    const float gs = 1.0f / B, sigma = 1.0f;
    float *dp = grad ? dout.p : nullptr;
    auto launch = [&] { vae_cuda_recon_loss(g_s, dp, recon.p, out.p, x.p, B, D, lik, sigma, gs); };
    auto check = [&] {
        Check c;
        const float iv = 1.0f / (sigma * sigma);
        if (grad)
            for (size_t i : samples(n)) {
                float o = hval(T_A, i, -4, 8), t = hval(T_B, i, 0, 1);
                float w = gs * (lik == VAE_LIK_GAUSSIAN ? vae_gauss_nll_grad(o, t, iv) : vae_bce_logits_grad(o, t));
                c.near("dout", i, dget(dout.p, i), w, 1e-5);
            }
        for (size_t b : samples((size_t)B)) {
            double s = 0;
            for (int d = 0; d < D; d++) {
                size_t i = b * D + d;
                float o = hval(T_A, i, -4, 8), t = hval(T_B, i, 0, 1);
                s += lik == VAE_LIK_GAUSSIAN ? vae_gauss_nll(o, t, iv) : vae_bce_logits(o, t);
            }
            if (lik == VAE_LIK_GAUSSIAN) s += 0.5 * D * std::log(6.283185307179586 * sigma * sigma);
            c.near("recon", b, dget(recon.p, b), s, 1e-5);
        }
        return c.msg;
    };
    std::vector<std::pair<const float *, size_t>> scan = {{recon.p, (size_t)B}};
    if (grad) scan.push_back({dout.p, n});
    run_case(name, fmt("B=%d D=%d", B, D), (double)n, bytes, launch, check, scan,
             "one 256-thread block per image");
}

static void case_gather(int B, int D, int N) {
    size_t n = (size_t)B * D;
    if (!want("gather_batch") || !fits(4.0 * n + (double)N * D)) return;
    /* the index array of two batches; the step gathers the second one
     * (sv->row0 = B), so the offset read from sv is exercised */
    DBuf<uint8_t> data((size_t)N * D);
    DBuf<int32_t> idx(2 * (size_t)B);
    DBuf<float> x(n);
    DBuf<vae_step_vals> sv(1);
    fill_u8_kernel<<<grid_for((size_t)N * D), 256, 0, g_s>>>(data.p, (size_t)N * D, T_U8);
    CK(cudaGetLastError());
    fill_idx_kernel<<<grid_for(2 * (size_t)B), 256, 0, g_s>>>(idx.p, 2 * (size_t)B, T_IDX, (uint32_t)N);
    CK(cudaGetLastError());
    put_vals(sv.p, 1, 1, B, B, 0, 1, 1);
    auto launch = [&] { vae_cuda_gather_batch(g_s, x.p, data.p, idx.p, sv.p, B, D); };
    auto check = [&] {
        Check c;
        for (size_t i : samples(n)) {
            size_t b = i / D, d = i % D;
            uint8_t u = hu8(T_U8, (size_t)hidx(T_IDX, (uint64_t)B + b, (uint32_t)N) * D + d);
            c.near("x", i, dget(x.p, i), (float)u / 255.0f, 0);
        }
        return c.msg;
    };
    run_case("gather_batch", fmt("B=%d D=%d (N=%d)", B, D, N), (double)n, 5.0 * n + 4.0 * B, launch, check,
             {{x.p, n}}, "u8 rows -> float");
}

/* The fused ReLU backward's din (dout T_A, out T_B): dout where out > 0,
 * else 0, at the sampled indices. */
static void check_relu_din(Check &c, const float *din, size_t n) {
    for (size_t i : samples(n)) {
        const float y = hval(T_B, i, -1, 2), d = hval(T_A, i, -1, 2);
        c.near("din", i, dget(din, i), y > 0 ? d : 0.f, 0);
    }
}

static void case_bias_rows(int rows, int cols) {
    size_t n = (size_t)rows * cols;
    if (want("bias_add_rows") && fits(4.0 * n)) {
        DBuf<float> out(n), b(cols);
        fill(out.p, n, T_A, -1, 2);
        fill(b.p, cols, T_B, -1, 2);
        auto launch = [&] { vae_cuda_bias_add_rows(g_s, out.p, b.p, rows, cols); };
        auto check = [&] {
            Check c;
            for (size_t i : samples(n))
                c.near("out", i, dget(out.p, i), hval(T_A, i, -1, 2) + hval(T_B, i % cols, -1, 2), 0);
            return c.msg;
        };
        run_case("bias_add_rows", fmt("%d x %d", rows, cols), (double)n, 8.0 * n + 4.0 * cols, launch,
                 check, {{out.p, n}}, "in place");
    }
    if (want("bias_grad_rows") && fits(4.0 * n)) {
        DBuf<float> dout(n), db(cols);
        DBuf<double> part(VAE_CUDA_BIAS_SCRATCH);
        fill(dout.p, n, T_A, -1, 2);
        auto launch = [&] { vae_cuda_bias_grad_rows(g_s, db.p, dout.p, rows, cols, part.p); };
        auto check = [&] {
            Check c;
            for (size_t col : samples((size_t)cols)) {
                double s = 0;
                for (int r = 0; r < rows; r++) s += hval(T_A, (size_t)r * cols + col, -1, 2);
                c.near("db", col, dget(db.p, col), s, 1e-6);
            }
            return c.msg;
        };
        run_case("bias_grad_rows", fmt("%d x %d", rows, cols), (double)n, 4.0 * n + 4.0 * cols, launch,
                 check, {{db.p, (size_t)cols}}, "two-pass: row chunks x 32-column tiles, then one warp per column");
    }
    /* the dense + ReLU backward's fallback: ReLU backward from out, din
     * written, db summed, one pass */
    if (want("act_bias_grad_rows") && fits(12.0 * n)) {
        DBuf<float> dout(n), out(n), din(n), db(cols);
        DBuf<double> part(VAE_CUDA_BIAS_SCRATCH);
        fill(dout.p, n, T_A, -1, 2);
        fill(out.p, n, T_B, -1, 2);
        auto launch = [&] {
            vae_cuda_act_bias_grad_rows(g_s, din.p, db.p, dout.p, out.p, rows, cols, VAE_ACT_RELU, 0,
                                        part.p);
        };
        auto check = [&] {
            Check c;
            check_relu_din(c, din.p, n);
            for (size_t col : samples((size_t)cols)) {
                double s = 0;
                for (int r = 0; r < rows; r++) {
                    const size_t i = (size_t)r * cols + col;
                    if (hval(T_B, i, -1, 2) > 0) s += hval(T_A, i, -1, 2);
                }
                c.near("db", col, dget(db.p, col), s, 1e-6);
            }
            return c.msg;
        };
        run_case("act_bias_grad_rows relu", fmt("%d x %d", rows, cols), (double)n,
                 12.0 * n + 4.0 * cols, launch, check, {{din.p, n}, {db.p, (size_t)cols}},
                 "ReLU backward + bias gradient, one pass (two launches above 255 rows)");
    }
}

static void case_bias_nchw(int B, int C, int HW) {
    size_t n = (size_t)B * C * HW;
    std::string sh = fmt("B=%d C=%d HW=%d", B, C, HW);
    if (want("bias_add_nchw") && fits(4.0 * n)) {
        DBuf<float> out(n), b(C);
        fill(out.p, n, T_A, -1, 2);
        fill(b.p, C, T_B, -1, 2);
        auto launch = [&] { vae_cuda_bias_add_nchw(g_s, out.p, b.p, B, C, HW); };
        auto check = [&] {
            Check c;
            for (size_t i : samples(n))
                c.near("out", i, dget(out.p, i), hval(T_A, i, -1, 2) + hval(T_B, (i / HW) % C, -1, 2), 0);
            return c.msg;
        };
        run_case("bias_add_nchw", sh, (double)n, 8.0 * n + 4.0 * C, launch, check, {{out.p, n}}, "in place");
    }
    if (want("bias_grad_nchw") && fits(4.0 * n)) {
        DBuf<float> dout(n), db(C);
        DBuf<double> part(VAE_CUDA_BIAS_SCRATCH);
        fill(dout.p, n, T_A, -1, 2);
        auto launch = [&] { vae_cuda_bias_grad_nchw(g_s, db.p, dout.p, B, C, HW, part.p); };
        auto check = [&] {
            Check c;
            std::vector<size_t> cs = {0, (size_t)C - 1};
            for (size_t ch : cs) {
                double s = 0;
                for (int b = 0; b < B; b++)
                    for (int hw = 0; hw < HW; hw++) s += hval(T_A, ((size_t)b * C + ch) * HW + hw, -1, 2);
                c.near("db", ch, dget(db.p, ch), s, 1e-6);
            }
            return c.msg;
        };
        run_case("bias_grad_nchw", sh, (double)n, 4.0 * n + 4.0 * C, launch, check, {{db.p, (size_t)C}},
                 "two-pass: chunks of each channel, then one warp per channel");
    }
}

/* The fused forms above a conv / convT (bias.cu): bias + ReLU in one pass,
 * and ReLU backward + bias gradient in one pass (din written, db summed). */
static void case_bias_act_nchw(int B, int C, int HW) {
    size_t n = (size_t)B * C * HW;
    std::string sh = fmt("B=%d C=%d HW=%d", B, C, HW);
    if (want("bias_act_nchw") && fits(4.0 * n)) {
        DBuf<float> out(n), b(C);
        fill(out.p, n, T_A, -1, 2);
        fill(b.p, C, T_B, -1, 2);
        auto launch = [&] { vae_cuda_bias_act_nchw(g_s, out.p, b.p, B, C, HW, VAE_ACT_RELU, 0); };
        auto check = [&] {
            Check c;
            for (size_t i : samples(n)) {
                const float y = hval(T_A, i, -1, 2) + hval(T_B, (i / HW) % C, -1, 2);
                c.near("out", i, dget(out.p, i), y > 0 ? y : 0.f, 0);
            }
            return c.msg;
        };
        /* timed in place: from the second launch on the values are >= 0, the
         * same bytes move */
        run_case("bias_act_nchw relu", sh, (double)n, 8.0 * n + 4.0 * C, launch, check,
                 {{out.p, n}}, "in place; the bias add and the ReLU in one pass");
    }
    if (want("act_bias_grad_nchw") && fits(12.0 * n)) {
        DBuf<float> dout(n), out(n), din(n), db(C);
        DBuf<double> part(VAE_CUDA_BIAS_SCRATCH);
        fill(dout.p, n, T_A, -1, 2);
        fill(out.p, n, T_B, -1, 2);
        auto launch = [&] {
            vae_cuda_act_bias_grad_nchw(g_s, din.p, db.p, dout.p, out.p, B, C, HW, VAE_ACT_RELU, 0,
                                        part.p);
        };
        auto check = [&] {
            Check c;
            check_relu_din(c, din.p, n);
            std::vector<size_t> cs = {0, (size_t)C - 1};
            for (size_t ch : cs) {
                double sum = 0;
                for (int b = 0; b < B; b++)
                    for (int hw = 0; hw < HW; hw++) {
                        const size_t i = ((size_t)b * C + ch) * HW + hw;
                        if (hval(T_B, i, -1, 2) > 0) sum += hval(T_A, i, -1, 2);
                    }
                c.near("db", ch, dget(db.p, ch), sum, 1e-6);
            }
            return c.msg;
        };
        run_case("act_bias_grad_nchw relu", sh, (double)n, 12.0 * n + 4.0 * C, launch, check,
                 {{din.p, n}, {db.p, (size_t)C}}, "ReLU backward + bias gradient, one launch");
    }
}

/* The newest row's TFLOPS for `flop` floating-point operations, added to its
 * note (the markdown table) and printed below it (the row is printed before
 * its time is known to the caller). */
static void flops_note(double flop, const char *tail) {
    Row &r = g_rows.back();
    r.note += fmt("%.1f TFLOPS (%.3f GFLOP); %s", flop / (r.t.cold_us * 1e-6) / 1e12, flop / 1e9,
                  tail);
    printf("  %s %s: %s\n", r.kernel.c_str(), r.shape.c_str(), r.note.c_str());
}

/* The direct transposed convolution (convt.cu) with bias + ReLU fused, on the
 * decoders' layers: compute-bound where CI is large, so the note gives its
 * TFLOPS (2 x the multiply-adds of the taps that reach each output). Bytes:
 * input + output + weights once. */
static void case_convt(int N, int CI, int HI, int CO, int K, int S, int P, int OP) {
    const int WI = HI, HO = (HI - 1) * S - 2 * P + K + OP, WO = HO;
    const size_t nin = (size_t)N * CI * HI * WI, nout = (size_t)N * CO * HO * WO;
    const size_t nw = (size_t)CI * CO * K * K;
    std::string sh = fmt("N=%d %dx%d->%dx%d k%d", N, CI, HI, CO, HO, K);
    if (!want("convt_direct") || !fits(4.0 * (nin + nout)) ||
        !vae_cuda_convt_direct_supported(CI, HI, WI, CO, HO, WO, K, S, P))
        return;
    /* taps that reach the outputs of one image and one (ci, co) pair */
    double taps = 0;
    for (int oy = 0; oy < HO; oy++)
        for (int ky = 0; ky < K; ky++) {
            const int ny = oy + P - ky;
            if (ny < 0 || ny % S || ny / S >= HI) continue;
            for (int ox = 0; ox < WO; ox++)
                for (int kx = 0; kx < K; kx++) {
                    const int nx = ox + P - kx;
                    if (nx >= 0 && nx % S == 0 && nx / S < WI) taps += 1;
                }
        }
    const double flop = 2.0 * taps * CI * CO * N;
    DBuf<float> in(nin), w(nw), b(CO), out(nout);
    fill(in.p, nin, T_A, -1, 2);
    fill(w.p, nw, T_B, -0.2f, 0.4f);
    fill(b.p, CO, T_C, -0.5f, 1);
    auto launch = [&] {
        vae_cuda_convt_direct(g_s, out.p, in.p, w.p, b.p, VAE_CUDA_CONVT_RELU, 0, N, CI, HI, WI, CO,
                              HO, WO, K, S, P);
    };
    auto check = [&] {
        Check c;
        for (size_t o : samples(nout)) {
            const int ox = (int)(o % WO), oy = (int)(o / WO % HO), co = (int)(o / ((size_t)WO * HO) % CO);
            const size_t n = o / ((size_t)WO * HO * CO);
            float acc = 0;
            for (int ci = 0; ci < CI; ci++)
                for (int ky = 0; ky < K; ky++) {
                    const int ny = oy + P - ky;
                    if (ny < 0 || ny % S || ny / S >= HI) continue;
                    for (int kx = 0; kx < K; kx++) {
                        const int nx = ox + P - kx;
                        if (nx < 0 || nx % S || nx / S >= WI) continue;
                        acc = fmaf(hval(T_A, ((n * CI + ci) * HI + ny / S) * WI + nx / S, -1, 2),
                                   hval(T_B, (((size_t)ci * CO + co) * K + ky) * K + kx, -0.2f, 0.4f),
                                   acc);
                    }
                }
            const float y = acc + hval(T_C, co, -0.5f, 1);
            c.near("out", o, dget(out.p, o), y > 0 ? y : 0.f, 1e-6);
        }
        return c.msg;
    };
    /* the note is filled after timing: TFLOPS needs the time */
    run_case("convt_direct +bias relu", sh, (double)nout, 4.0 * (nin + nout + nw + CO), launch, check,
             {{out.p, nout}}, "");
    flops_note(flop, "compute-bound for the wide layers");
}

/* A convolution's taps inside the input [H, W] over one image's outputs [HO,
 * WO], per (input, output) channel pair: its multiply-adds per image and
 * channel pair (forward and weight gradient alike). */
static double conv_taps(int H, int W, int HO, int WO, int K, int S, int P) {
    double taps = 0;
    for (int oy = 0; oy < HO; oy++)
        for (int ky = 0; ky < K; ky++) {
            const int iy = oy * S - P + ky;
            if (iy < 0 || iy >= H) continue;
            for (int ox = 0; ox < WO; ox++)
                for (int kx = 0; kx < K; kx++) {
                    const int ix = ox * S - P + kx;
                    if (ix >= 0 && ix < W) taps += 1;
                }
        }
    return taps;
}

/* The direct forward convolution (convf.cu) with bias + ReLU fused, on the
 * encoders' layers (and, the same shapes, the convT layers' data
 * gradients): small, latency-bound launches at batch 128, so the note gives
 * TFLOPS beside the time. Bytes: input + output + weights once. */
static void case_convf(int N, int CI, int H, int CO, int K, int S, int P) {
    const int W = H, HO = (H + 2 * P - K) / S + 1, WO = HO;
    const size_t nin = (size_t)N * CI * H * W, nout = (size_t)N * CO * HO * WO;
    const size_t nw = (size_t)CO * CI * K * K;
    std::string sh = fmt("N=%d %dx%d->%dx%d k%d", N, CI, H, CO, HO, K);
    if (!want("conv_direct") || !fits(4.0 * (nin + nout)) ||
        !vae_cuda_conv_direct_supported(CI, H, W, CO, HO, WO, K, S, P))
        return;
    const double flop = 2.0 * conv_taps(H, W, HO, WO, K, S, P) * CI * CO * N;
    DBuf<float> in(nin), w(nw), b(CO), out(nout);
    fill(in.p, nin, T_A, -1, 2);
    fill(w.p, nw, T_B, -0.2f, 0.4f);
    fill(b.p, CO, T_C, -0.5f, 1);
    auto launch = [&] {
        vae_cuda_conv_direct(g_s, out.p, in.p, w.p, b.p, VAE_CUDA_CONVT_RELU, 0, N, CI, H, W, CO, HO,
                             WO, K, S, P);
    };
    auto check = [&] {
        Check c;
        for (size_t o : samples(nout)) {
            const int ox = (int)(o % WO), oy = (int)(o / WO % HO), co = (int)(o / ((size_t)WO * HO) % CO);
            const size_t n = o / ((size_t)WO * HO * CO);
            float acc = 0;
            for (int ci = 0; ci < CI; ci++)
                for (int ky = 0; ky < K; ky++) {
                    const int iy = oy * S - P + ky;
                    if (iy < 0 || iy >= H) continue;
                    for (int kx = 0; kx < K; kx++) {
                        const int ix = ox * S - P + kx;
                        if (ix < 0 || ix >= W) continue;
                        acc = fmaf(hval(T_A, ((n * CI + ci) * H + iy) * W + ix, -1, 2),
                                   hval(T_B, (((size_t)co * CI + ci) * K + ky) * K + kx, -0.2f, 0.4f),
                                   acc);
                    }
                }
            const float y = acc + hval(T_C, co, -0.5f, 1);
            c.near("out", o, dget(out.p, o), y > 0 ? y : 0.f, 1e-6);
        }
        return c.msg;
    };
    run_case("conv_direct +bias relu", sh, (double)nout, 4.0 * (nin + nout + nw + CO), launch, check,
             {{out.p, nout}}, "");
    flops_note(flop, "cuDNN's pick is timed beside it at plan time");
}

/* The direct weight gradient (convw.cu) of a convolution x [N, CI, H, H] ->
 * dy [N, CO, HO, HO], on the training layers (an encoder conv, and a
 * decoder convT's weight gradient in conv terms): its two launches (tiles,
 * then the groups' sum) timed together; the note gives TFLOPS. Bytes: x, dy
 * and dw once. */
static void case_convw(int N, int CI, int H, int CO, int K, int S, int P) {
    const int W = H, HO = (H + 2 * P - K) / S + 1, WO = HO;
    const size_t nx = (size_t)N * CI * H * W, ndy = (size_t)N * CO * HO * WO;
    const size_t nw = (size_t)CO * CI * K * K;
    const size_t nscr = vae_cuda_conv_wgrad_scratch(N, CI, CO, K, HO, WO);
    std::string sh = fmt("N=%d %dx%d->%dx%d k%d", N, CI, H, CO, HO, K);
    if (!want("conv_wgrad") || !fits(4.0 * (nx + ndy + nscr)) ||
        !vae_cuda_conv_wgrad_supported(CI, H, W, CO, HO, WO, K, S, P))
        return;
    const int G = vae_cuda_conv_wgrad_group(N, CI, CO, K, HO, WO);
    const double flop = 2.0 * conv_taps(H, W, HO, WO, K, S, P) * CI * CO * N;
    DBuf<float> x(nx), dy(ndy), dw(nw), scr(nscr ? nscr : 1);
    fill(x.p, nx, T_A, -1, 2);
    fill(dy.p, ndy, T_B, -0.2f, 0.4f);
    auto launch = [&] {
        vae_cuda_conv_wgrad_direct(g_s, dw.p, x.p, dy.p, scr.p, N, CI, H, W, CO, HO, WO, K, S, P);
    };
    auto check = [&] {
        Check c;
        for (size_t o : samples(nw)) {
            const int kx = (int)(o % K), ky = (int)(o / K % K), ci = (int)(o / ((size_t)K * K) % CI);
            const int co = (int)(o / ((size_t)K * K * CI));
            float sum = 0;
            for (int n0 = 0; n0 < N; n0 += G) {
                float part = 0;
                for (int n = n0; n < N && n < n0 + G; n++)
                    for (int oy = 0; oy < HO; oy++) {
                        const int iy = oy * S - P + ky;
                        if (iy < 0 || iy >= H) continue;
                        for (int ox = 0; ox < WO; ox++) {
                            const int ix = ox * S - P + kx;
                            if (ix < 0 || ix >= W) continue;
                            part = fmaf(hval(T_B, (((size_t)n * CO + co) * HO + oy) * WO + ox, -0.2f, 0.4f),
                                        hval(T_A, (((size_t)n * CI + ci) * H + iy) * W + ix, -1, 2),
                                        part);
                        }
                    }
                sum = n0 == 0 ? part : sum + part;
            }
            c.near("dw", o, dget(dw.p, o), sum, 1e-6);
        }
        return c.msg;
    };
    run_case("conv_wgrad_direct", sh, (double)nw, 4.0 * (nx + ndy + nw), launch, check,
             {{dw.p, nw}}, "");
    flops_note(flop, fmt("groups of %d images; the GEMM form and cuDNN's pick are timed beside it "
                         "at plan time", G).c_str());
}

/* ------------------------------------------------------------ device info */

typedef int (*nvml_fn0)(void);
typedef int (*nvml_handle_fn)(const char *, void **);
typedef int (*nvml_clock_fn)(void *, int, unsigned *);

/* SM and memory clocks (current, max) via NVML when libnvidia-ml is there. */
static std::string nvml_clocks(int dev) {
    void *lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib) return "NVML not available";
    std::string out = "NVML: no answer";
    nvml_fn0 init = (nvml_fn0)dlsym(lib, "nvmlInit_v2");
    nvml_fn0 shut = (nvml_fn0)dlsym(lib, "nvmlShutdown");
    nvml_handle_fn bybus = (nvml_handle_fn)dlsym(lib, "nvmlDeviceGetHandleByPciBusId_v2");
    nvml_clock_fn cur = (nvml_clock_fn)dlsym(lib, "nvmlDeviceGetClockInfo");
    nvml_clock_fn mx = (nvml_clock_fn)dlsym(lib, "nvmlDeviceGetMaxClockInfo");
    char bus[64];
    if (init && shut && bybus && cur && mx && cudaDeviceGetPCIBusId(bus, sizeof bus, dev) == cudaSuccess &&
        init() == 0) {
        void *h = nullptr;
        unsigned sm = 0, mem = 0, smx = 0, memx = 0;
        if (bybus(bus, &h) == 0 && cur(h, 1, &sm) == 0 && cur(h, 2, &mem) == 0 && mx(h, 1, &smx) == 0 &&
            mx(h, 2, &memx) == 0)
            out = fmt("SM clock %u MHz (max %u), memory clock %u MHz (max %u)", sm, smx, mem, memx);
        shut();
    }
    cudaGetLastError(); /* a failed PCI-id query must not linger */
    dlclose(lib);
    return out;
}

static double measure_d2d(size_t bytes) {
    void *a = nullptr, *b = nullptr;
    CK(cudaMalloc(&a, bytes));
    CK(cudaMalloc(&b, bytes));
    CK(cudaMemsetAsync(a, 1, bytes, g_s));
    for (int i = 0; i < 3; i++) CK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, g_s));
    std::vector<double> ts;
    for (int i = 0; i < 20; i++) {
        CK(cudaEventRecord(g_e0, g_s));
        CK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, g_s));
        CK(cudaEventRecord(g_e1, g_s));
        CK(cudaEventSynchronize(g_e1));
        ts.push_back(event_ms() * 1e-3);
    }
    std::sort(ts.begin(), ts.end());
    CK(cudaFree(a));
    CK(cudaFree(b));
    return 2.0 * (double)bytes / (0.5 * (ts[9] + ts[10])) / 1e9;
}

/* ------------------------------------------------------------ main */

static void usage(FILE *f) {
    fprintf(f,
            "usage: vae_kernel_bench [--md FILE] [--quick] [--min-log2 N] [--max-log2 N]\n"
            "                        [--budget-ms MS] [--only NAME[,NAME...]] [--device N]\n"
            "Per-kernel bandwidth of src/kernels against the measured device-to-device copy.\n"
            "  --md FILE      also write the results as markdown\n"
            "  --quick        fewer sizes (2^16, 2^20, 2^24 flat; fewer batch sizes), shorter timing\n"
            "  --min-log2 N   smallest flat size 2^N elements (default 16)\n"
            "  --max-log2 N   largest size 2^N elements, all families (default 26)\n"
            "  --budget-ms MS timing budget per case (default 120)\n"
            "  --only LIST    only kernels whose name contains one of these (comma-separated)\n"
            "  --device N     CUDA device (default 0)\n");
}

int main(int argc, char **argv) {
    const char *md = nullptr;
    int min_log2 = 16, max_log2 = 26, dev = 0;
    bool quick = false;
    std::string cmdline;
    for (int i = 0; i < argc; i++) cmdline += (i ? " " : "") + std::string(argv[i]);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        auto next = [&]() -> const char * {
            if (i + 1 >= argc) {
                fprintf(stderr, "vae_kernel_bench: %s needs a value\n", a);
                usage(stderr);
                exit(2);
            }
            return argv[++i];
        };
        if (!strcmp(a, "--md")) md = next();
        else if (!strcmp(a, "--quick")) quick = true;
        else if (!strcmp(a, "--min-log2")) min_log2 = atoi(next());
        else if (!strcmp(a, "--max-log2")) max_log2 = atoi(next());
        else if (!strcmp(a, "--budget-ms")) g_budget_ms = atof(next());
        else if (!strcmp(a, "--device")) dev = atoi(next());
        else if (!strcmp(a, "--only")) {
            std::string s = next();
            size_t p = 0;
            while (p <= s.size()) {
                size_t q = s.find(',', p);
                if (q == std::string::npos) q = s.size();
                if (q > p) g_only.push_back(s.substr(p, q - p));
                p = q + 1;
            }
        } else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "vae_kernel_bench: unknown argument %s\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (min_log2 < 8 || max_log2 > 30 || min_log2 > max_log2 || !(g_budget_ms > 0)) {
        fprintf(stderr, "vae_kernel_bench: need 8 <= --min-log2 <= --max-log2 <= 30 and --budget-ms > 0\n");
        return 2;
    }
    if (quick && g_budget_ms == 120.0) g_budget_ms = 40.0;

    int ndev = 0;
    cudaError_t e = cudaGetDeviceCount(&ndev);
    if (e != cudaSuccess || ndev == 0) {
        fprintf(stderr, "vae_kernel_bench: no usable CUDA device (%s)\n",
                e != cudaSuccess ? cudaGetErrorString(e) : "device count 0");
        return 1;
    }
    if (dev < 0 || dev >= ndev) {
        fprintf(stderr, "vae_kernel_bench: --device %d, but %d device(s)\n", dev, ndev);
        return 2;
    }
    CK(cudaSetDevice(dev));
    e = vae_cuda_probe_kernels();
    if (e != cudaSuccess) {
        fprintf(stderr, "vae_kernel_bench: the kernels cannot run on this device: %s "
                        "(build for its architecture, CMAKE_CUDA_ARCHITECTURES)\n", cudaGetErrorString(e));
        return 1;
    }
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, dev));
    int clk = 0, memclk = 0, bus = 0, drv = 0, rt = 0;
    CK(cudaDeviceGetAttribute(&clk, cudaDevAttrClockRate, dev));
    CK(cudaDeviceGetAttribute(&memclk, cudaDevAttrMemoryClockRate, dev));
    CK(cudaDeviceGetAttribute(&bus, cudaDevAttrGlobalMemoryBusWidth, dev));
    CK(cudaDeviceGetAttribute(&g_sms, cudaDevAttrMultiProcessorCount, dev));
    CK(cudaDeviceGetAttribute(&g_l2, cudaDevAttrL2CacheSize, dev));
    CK(cudaDriverGetVersion(&drv));
    CK(cudaRuntimeGetVersion(&rt));
    const double peak = 2.0 * memclk * 1e3 * (bus / 8.0) / 1e9;

    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    CK(cudaStreamCreateWithFlags(&g_s, cudaStreamNonBlocking));
    CK(cudaEventCreate(&g_e0));
    CK(cudaEventCreate(&g_e1));
    size_t flush_bytes = std::max<size_t>((size_t)4 * g_l2, (size_t)64 << 20);
    g_flush_n4 = flush_bytes / 16;
    CK(cudaMalloc((void **)&g_flush, g_flush_n4 * 16));
    CK(cudaMemsetAsync(g_flush, 0, g_flush_n4 * 16, g_s));
    CK(cudaMalloc((void **)&g_sink, sizeof(float)));
    CK(cudaMalloc((void **)&g_count, sizeof *g_count));
    CK(cudaStreamSynchronize(g_s));

    time_t now = time(nullptr);
    char date[64];
    strftime(date, sizeof date, "%Y-%m-%d %H:%M UTC", gmtime(&now));
    std::string clocks0 = nvml_clocks(dev);
    size_t fr = 0, tot = 0;
    CK(cudaMemGetInfo(&fr, &tot));
    size_t d2d_bytes = std::min<size_t>((size_t)1 << 30, fr / 4) & ~(size_t)4095;
    g_d2d_gbs = measure_d2d(d2d_bytes);
    std::string clocks1 = nvml_clocks(dev);

    std::vector<std::string> head;
    head.push_back(fmt("date:    %s", date));
    head.push_back("command: " + cmdline);
    head.push_back(fmt("device:  %d: %s, compute capability %d.%d, %d SMs, %.1f GiB (%.1f GiB free), "
                       "L2 %.1f MB", dev, prop.name, prop.major, prop.minor, g_sms,
                       (double)prop.totalGlobalMem / (1 << 30), (double)fr / (1 << 30), g_l2 / 1e6));
    head.push_back(fmt("clocks:  max SM %.0f MHz, memory %.0f MHz x %d-bit bus = %.0f GB/s theoretical",
                       clk / 1e3, memclk / 1e3, bus, peak));
    head.push_back("clocks:  idle: " + clocks0 + "; after the copy: " + clocks1);
    head.push_back(fmt("versions: driver %d.%d, runtime %d.%d", drv / 1000, (drv % 1000) / 10, rt / 1000,
                       (rt % 1000) / 10));
    head.push_back(fmt("D2D:     cudaMemcpyAsync device-to-device, %.0f MiB, read + write: %.1f GB/s "
                       "(%.1f%% of theoretical) = 100%% below", d2d_bytes / 1048576.0, g_d2d_gbs,
                       100.0 * g_d2d_gbs / peak));
    head.push_back(fmt("timing:  cold = median of per-launch cudaEvent times, L2 evicted before each "
                       "(read of %.0f MB); b2b = mean of back-to-back launches, L2 warm; budget %.0f ms "
                       "per case", flush_bytes / 1e6, g_budget_ms));
    for (const std::string &h : head) printf("%s\n", h.c_str());
    printf("\n");
    print_header();

    /* sizes */
    std::vector<size_t> flat;
    for (int k = min_log2; k <= max_log2; k += quick ? 4 : 2) flat.push_back((size_t)1 << k);
    const double maxn = std::ldexp(1.0, max_log2);
    std::vector<int> Ls = {20, 64, 128};
    std::vector<int> Bl = quick ? std::vector<int>{128, 8192, 524288}
                                : std::vector<int>{128, 1024, 8192, 65536, 524288, 2097152};
    std::vector<int> Bd = quick ? std::vector<int>{128, 4096, 65536}
                                : std::vector<int>{128, 1024, 4096, 16384, 65536};

    for (size_t n : flat) case_copy(n);
    for (size_t n : flat) case_act(n);
    for (size_t n : flat) case_adam(n, false);
    for (size_t n : flat) case_adam(n, true);
    for (size_t n : flat) case_sum(n, 0);
    for (size_t n : flat) case_sum(n, 1);
    for (size_t n : flat) case_to_u8(n);
    for (size_t n : flat) case_round(n);
    for (size_t n : flat) case_normal_fill(n);
    for (size_t n : flat) case_latent_fill(n, 64, VAE_LATENT_PRIOR);
    for (size_t n : flat) case_latent_fill(n, 64, VAE_LATENT_GRID);
    for (int L : Ls)
        for (int B : Bl)
            if ((double)B * L <= maxn) case_reparam(B, L);
    for (int L : Ls)
        for (int B : Bl)
            if ((double)B * L <= maxn) case_kl_backward(B, L);
    for (int L : Ls)
        for (int B : Bl)
            if ((double)B * L <= maxn) case_log_q(B, L);
    const int lik[2] = {VAE_LIK_BERNOULLI, VAE_LIK_GAUSSIAN};
    for (int li = 0; li < 2; li++)
        for (int D : {784, 3072})
            for (int B : Bd)
                if ((double)B * D <= maxn) case_recon(B, D, lik[li], true);
    for (int D : {784, 3072})
        for (int B : Bd)
            if ((double)B * D <= maxn) case_recon(B, D, VAE_LIK_BERNOULLI, false);
    for (int D : {784, 3072})
        for (int B : Bd)
            if ((double)B * D <= maxn) case_gather(B, D, D == 784 ? 60000 : 50000);
    /* layer shapes of mnist_conv / cifar10_conv: dense 128 and 3136; conv1 32x14x14,
     * conv2 64x7x7 (MNIST), conv1 32x16x16 (CIFAR-10) */
    for (int cols : {128, 3136})
        for (int B : Bd)
            if ((double)B * cols <= maxn) case_bias_rows(B, cols);
    const int nchw[3][2] = {{32, 196}, {64, 49}, {32, 256}};
    for (const auto &s : nchw)
        for (int B : Bd)
            if ((double)B * s[0] * s[1] <= maxn) case_bias_nchw(B, s[0], s[1]);
    for (const auto &s : nchw)
        for (int B : Bd)
            if ((double)B * s[0] * s[1] <= maxn) case_bias_act_nchw(B, s[0], s[1]);
    /* the decoders' transposed convolutions (mnist_conv: 64->32 7->14, 32->1
     * 14->28, k3 s2 p1 op1; cifar10_conv: 128->64 4->8, 64->32 8->16, 32->3
     * 16->32, k4 s2 p1), at a training batch and a decoding chunk */
    const int convts[5][7] = {{64, 7, 32, 3, 2, 1, 1},
                              {32, 14, 1, 3, 2, 1, 1},
                              {128, 4, 64, 4, 2, 1, 0},
                              {64, 8, 32, 4, 2, 1, 0},
                              {32, 16, 3, 4, 2, 1, 0}};
    for (const auto &t : convts)
        for (int N : {128, 16384}) case_convt(N, t[0], t[1], t[2], t[3], t[4], t[5], t[6]);
    /* the encoders' convolutions (mnist_conv: 1->32 28->14, 32->64 14->7, k3
     * s2 p1; cifar10_conv: 3->32 32->16, 32->64 16->8, 64->128 8->4, k4 s2
     * p1) at batch 128 and 1024 */
    const int convfs[5][6] = {{1, 28, 32, 3, 2, 1},
                              {32, 14, 64, 3, 2, 1},
                              {3, 32, 32, 4, 2, 1},
                              {32, 16, 64, 4, 2, 1},
                              {64, 8, 128, 4, 2, 1}};
    for (const auto &t : convfs)
        for (int N : {128, 1024}) case_convf(N, t[0], t[1], t[2], t[3], t[4], t[5]);
    /* the weight gradients of training, on the encoders' shapes above, which
     * are also the decoders' transposed convolutions' in conv terms (x =
     * the convT's dout, dy = its input: mnist_conv 32x14x14 -> 64x7x7 and
     * 1x28x28 -> 32x14x14), at batch 128 and 1024 */
    for (const auto &t : convfs)
        for (int N : {128, 1024}) case_convw(N, t[0], t[1], t[2], t[3], t[4], t[5]);
    std::vector<std::string> latency;
    launch_chain(latency, prop.major);
    CK(cudaDeviceSynchronize());

    /* summary: the largest size of each kernel */
    std::vector<std::string> summary;
    std::vector<std::string> kernels;
    for (const Row &r : g_rows)
        if (std::find(kernels.begin(), kernels.end(), r.kernel) == kernels.end()) kernels.push_back(r.kernel);
    summary.push_back("| kernel | largest shape | GB/s | % of D2D | >= 80% |");
    summary.push_back("|---|---|---:|---:|---|");
    for (const std::string &k : kernels) {
        const Row *best = nullptr;
        for (const Row &r : g_rows)
            if (r.kernel == k && (!best || r.bytes > best->bytes)) best = &r;
        double gbs = best->bytes / (best->t.cold_us * 1e-6) / 1e9;
        summary.push_back(fmt("| %s | %s | %.0f | %.1f | %s |", k.c_str(), best->shape.c_str(), gbs,
                              100 * gbs / g_d2d_gbs,
                              !best->ok ? "check FAILED" : (gbs >= 0.8 * g_d2d_gbs ? "yes" : "no")));
    }
    printf("\nLargest size of each kernel (cold L2):\n");
    for (const std::string &s : summary) printf("%s\n", s.c_str());
    if (g_stop) printf("\nSTOPPED EARLY by a signal: the cases after the last row were not run\n");
    printf("\n%s: %d check failure(s)\n", g_failures ? "FAILED" : "all outputs checked", g_failures);

    if (md) {
        FILE *f = fopen(md, "w");
        if (!f) {
            fprintf(stderr, "vae_kernel_bench: cannot write %s: %s\n", md, strerror(errno));
            return 1;
        }
        fprintf(f, "# Kernel bandwidth: %s\n\n", prop.name);
        if (g_stop) fprintf(f, "**Partial: stopped early by a signal.**\n\n");
        for (const std::string &h : head) fprintf(f, "- %s\n", h.c_str());
        fprintf(f, "\nBytes per element: what the kernel must read + write (src/kernels/*.cu headers, "
                   "checked against the code); GB/s = bytes / median cold time. Rows marked L2 move "
                   "less than 2x the L2 size and can read high.\n\n");
        for (const std::string &s : summary) fprintf(f, "%s\n", s.c_str());
        fprintf(f, "\n| kernel | shape | elements | bytes/elem | MB | cold median us | GB/s | %% of D2D "
                   "| b2b us | b2b GB/s | check / note |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n");
        for (const Row &r : g_rows) {
            double gbs = r.bytes / (r.t.cold_us * 1e-6) / 1e9, gbs2 = r.bytes / (r.t.b2b_us * 1e-6) / 1e9;
            fprintf(f, "| %s | %s | %.0f | %.2f | %.2f | %.2f | %.1f | %.1f | %.2f | %.1f | %s%s%s%s |\n",
                    r.kernel.c_str(), r.shape.c_str(), r.elems, r.bytes / r.elems, r.bytes / 1e6, r.t.cold_us,
                    gbs, 100 * gbs / g_d2d_gbs, r.t.b2b_us, gbs2, r.ok ? "ok" : "FAIL", r.l2 ? ", L2" : "",
                    r.note.empty() ? "" : "; ", r.note.c_str());
        }
        for (const std::string &l : latency) fprintf(f, "\n%s\n", l.c_str());
        fprintf(f, "\n%s: %d check failure(s)\n", g_failures ? "FAILED" : "all outputs checked", g_failures);
        if (fclose(f) != 0) {
            fprintf(stderr, "vae_kernel_bench: writing %s: %s\n", md, strerror(errno));
            return 1;
        }
        printf("wrote %s\n", md);
    }
    CK(cudaFree(g_flush));
    CK(cudaFree(g_sink));
    CK(cudaFree(g_count));
    CK(cudaEventDestroy(g_e0));
    CK(cudaEventDestroy(g_e1));
    CK(cudaStreamDestroy(g_s));
    return g_failures ? 1 : g_stop ? 130 : 0;
}

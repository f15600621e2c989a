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

#include <cuda_runtime_api.h>

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

    grid_stride_kernel<<<1, 2048>>>(acc, 1);
    EXPECT(cudaGetLastError() == cudaErrorInvalidConfiguration,
           "a 2048-thread block must be an invalid configuration");
    EXPECT(cudaGetLastError() == cudaSuccess, "the launch error must be read once");
}

static int g_out[256];
static void run_divergent(void) { divergent_kernel<<<1, 256>>>(g_out); }
static void run_deadlock(void) { deadlock_kernel<<<1, 256>>>(g_out); }
static void run_exited(void) { exited_lanes_kernel<<<1, 64>>>(g_out); }
static void run_race(void) { race_kernel<<<1, 64>>>(g_out); }

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
    expect_stop("divergent", run_divergent, "divergent __syncthreads");
    expect_stop("deadlock", run_deadlock, "no barrier can be released");
    expect_stop("exited-lanes", run_exited, "lanes that left");
#ifdef __SANITIZE_THREAD__
    expect_stop("racy", run_race, "ThreadSanitizer: data race");
#else
    (void)run_race;
    printf("racy kernel: not run (the ThreadSanitizer build finds races)\n");
#endif
    printf("%s\n", failures ? "emulator self-test FAILED" : "emulator self-test passed");
    return failures ? 1 : 0;
}

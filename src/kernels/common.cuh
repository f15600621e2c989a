/* common.cuh — the CUDA backend's error-check macros and launch helpers.
 *
 * Included by the kernel files (nvcc, C++) and by src/host/backend_cuda.c
 * (gcc, C11), so everything outside `#ifdef __CUDACC__` is plain C.
 *
 * One macro family checks every library call. A failing CUDA, cuBLAS, cuDNN
 * or cuRAND call is a device fault or a broken invariant, not a user error:
 * the macro prints the library, the statement, file and line and the
 * library's own error text (via vae_panic) and aborts. Recoverable failures
 * (no GPU at backend creation, arena too small) are reported through
 * vae_error_set by the host code instead and never reach these macros.
 */
#ifndef VAE_CUDA_COMMON_CUH
#define VAE_CUDA_COMMON_CUH

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>
#include <curand.h>

#include "vae_core.h"

#ifdef VAE_REAL_DOUBLE
#error "the CUDA backend is float-only; the double build is CPU-only"
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* cuRAND has no status-to-string function. (The backend draws its noise with
 * the Philox of vae_math.h, so this is here for completeness of the family.) */
static inline const char *vae_curand_status_string(curandStatus_t s) {
    switch (s) {
    case CURAND_STATUS_SUCCESS: return "CURAND_STATUS_SUCCESS";
    case CURAND_STATUS_VERSION_MISMATCH: return "CURAND_STATUS_VERSION_MISMATCH";
    case CURAND_STATUS_NOT_INITIALIZED: return "CURAND_STATUS_NOT_INITIALIZED";
    case CURAND_STATUS_ALLOCATION_FAILED: return "CURAND_STATUS_ALLOCATION_FAILED";
    case CURAND_STATUS_TYPE_ERROR: return "CURAND_STATUS_TYPE_ERROR";
    case CURAND_STATUS_OUT_OF_RANGE: return "CURAND_STATUS_OUT_OF_RANGE";
    case CURAND_STATUS_LENGTH_NOT_MULTIPLE: return "CURAND_STATUS_LENGTH_NOT_MULTIPLE";
    case CURAND_STATUS_DOUBLE_PRECISION_REQUIRED: return "CURAND_STATUS_DOUBLE_PRECISION_REQUIRED";
    case CURAND_STATUS_LAUNCH_FAILURE: return "CURAND_STATUS_LAUNCH_FAILURE";
    case CURAND_STATUS_PREEXISTING_FAILURE: return "CURAND_STATUS_PREEXISTING_FAILURE";
    case CURAND_STATUS_INITIALIZATION_FAILED: return "CURAND_STATUS_INITIALIZATION_FAILED";
    case CURAND_STATUS_ARCH_MISMATCH: return "CURAND_STATUS_ARCH_MISMATCH";
    case CURAND_STATUS_INTERNAL_ERROR: return "CURAND_STATUS_INTERNAL_ERROR";
    default: return "unknown cuRAND status";
    }
}

#ifdef __cplusplus
}
#endif

/* The generator: evaluate `call` once, compare with the library's success
 * value, and on failure hand statement, location and error text to vae_panic
 * (prints "vae: internal error at file:line: ..." and aborts). */
#define VAE_LIB_CHECK(lib, type, ok, to_string, call)                                      \
    do {                                                                                   \
        type vae_st_ = (call);                                                             \
        if (vae_st_ != (ok))                                                               \
            vae_panic(__FILE__, __LINE__, "%s call failed: %s: %s (status %d)", lib, #call, \
                      to_string(vae_st_), (int)vae_st_);                                   \
    } while (0)

#define CUDA_CHECK(call) VAE_LIB_CHECK("CUDA", cudaError_t, cudaSuccess, cudaGetErrorString, call)
#define CUBLAS_CHECK(call)                                                                 \
    VAE_LIB_CHECK("cuBLAS", cublasStatus_t, CUBLAS_STATUS_SUCCESS, cublasGetStatusString, call)
#define CUDNN_CHECK(call)                                                                  \
    VAE_LIB_CHECK("cuDNN", cudnnStatus_t, CUDNN_STATUS_SUCCESS, cudnnGetErrorString, call)
#define CURAND_CHECK(call)                                                                 \
    VAE_LIB_CHECK("cuRAND", curandStatus_t, CURAND_STATUS_SUCCESS, vae_curand_status_string, call)

/* After every kernel launch: launch-configuration errors surface here;
 * asynchronous faults surface at the next synchronising call's CUDA_CHECK.
 * (vae_launch_status: the launch's own return value, below.) */
#if defined(__CUDACC__) && !defined(VAE_EMU_CUDA_EMU_H)
#define VAE_LAUNCH_STATUS() vae_launch_status()
#else
#define VAE_LAUNCH_STATUS() cudaGetLastError()
#endif
#define CUDA_LAUNCH_CHECK() CUDA_CHECK(VAE_LAUNCH_STATUS())

/* Threads per block for every kernel of the backend. */
#define VAE_CUDA_THREADS 256
/* Upper bound on the blocks of a grid-stride launch: enough to fill any
 * current GPU several times over; the loop covers the rest. */
#define VAE_CUDA_MAX_GRID 65535u

#ifdef __CUDACC__

/* A flag word that one thread writes while others read it (adam's *bad):
 * volatile accesses, which the PTX memory model treats as relaxed atomics,
 * so the read and the write are not a data race. (The CPU emulator, tests/emu,
 * defines these as relaxed atomics its ThreadSanitizer build understands.) */
#ifndef VAE_FLAG_LOAD
#define VAE_FLAG_LOAD(p) (*(const volatile int *)(p))
#define VAE_FLAG_STORE(p, v) (*(volatile int *)(p) = (v))
#endif

/* ------------------------------------------- programmatic dependent launch
 *
 * Every kernel of src/kernels starts with VAE_PDL_ENTRY(), before anything
 * else (tests/lint_kernels.py checks; the emulator checks that every thread
 * of a launch passes it), and every launch goes through vae_launch() below.
 * With $VAE_CUDA_PDL=1 on a GPU of compute capability 9.0 or later the
 * backend turns on vae_cuda_set_pdl(1): each launch then carries the
 * programmatic-stream-serialization attribute, so that a kernel may be
 * launched while the one before it in its stream is still running (a CUDA
 * graph captured from such launches has programmatic edges), and
 *   griddepcontrol.wait              blocks until every grid this one depends
 *                                    on has completed and its writes are
 *                                    visible — so nothing of the kernel runs
 *                                    before its inputs are whole, or before
 *                                    its predecessors have read what it is
 *                                    about to overwrite;
 *   griddepcontrol.launch_dependents then lets the next launch start as soon
 *                                    as every block of this grid has passed
 *                                    here (its blocks wait at their own
 *                                    entry until this grid has completed).
 * What this saves is the launch latency between two dependent kernels, not
 * any of their work: no kernel reads or writes global memory before the
 * wait. Without the attribute (the default) and on other architectures,
 * both instructions do nothing; cuBLAS and cuDNN launch their kernels as
 * they do (one of ours after one of theirs waits for it whether or not it
 * was let start early). Since each kernel triggers only after its own wait,
 * a kernel is launched only once the one two before it has completed, and
 * its completion implies its predecessors': the order of a stream is kept
 * transitively, and at most two of our grids of a stream are resident.
 * The flag is one per process: each CUDA backend created sets it (the
 * last one decides). The backend turns it on only where the kernels are
 * sm_90 code (vae_cuda_kernels_ptx_version) and a captured graph of such
 * launches replays (its probe at creation). */
#ifndef VAE_PDL_ENTRY
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define VAE_PDL_ENTRY()                                                                     \
    do {                                                                                    \
        asm volatile("griddepcontrol.wait;" ::: "memory");                                  \
        asm volatile("griddepcontrol.launch_dependents;" ::: "memory");                     \
    } while (0)
#else
#define VAE_PDL_ENTRY()                                                                     \
    do {                                                                                    \
    } while (0)
#endif
#endif

#ifndef VAE_EMU_CUDA_EMU_H
#include <utility>

/* The launch status that CUDA_LAUNCH_CHECK() reads after vae_launch: the
 * launch call's own return value, kept per host thread until read. */
inline cudaError_t &vae_launch_error_slot() {
    static thread_local cudaError_t e = cudaSuccess;
    return e;
}

extern "C" int vae_cuda_pdl_on; /* act.cu; vae_cuda_set_pdl */

/* vae_launch(kernel, grid, block, smem, stream)(args...): the triple-chevron
 * launch of kernel with that configuration and those arguments, made with
 * cudaLaunchKernelEx so that it can carry the programmatic-serialization
 * attribute when vae_cuda_pdl_on (above). Each argument is converted to
 * its parameter's type (a bare 0 or NULL for a pointer parameter does not
 * compile here: pass a typed null). Its error is reported by the
 * CUDA_LAUNCH_CHECK() that follows it.
 * (tests/emu/cu2cpp.py rewrites these launches for the CPU emulator.) */
template <class... P> struct vae_launcher {
    void (*kernel)(P...);
    cudaLaunchConfig_t cfg;
    template <class... A> void operator()(A &&...args) {
        cudaLaunchAttribute attr[1];
        attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
        attr[0].val.programmaticStreamSerializationAllowed = 1;
        cfg.attrs = attr;
        cfg.numAttrs = vae_cuda_pdl_on ? 1 : 0;
        const cudaError_t e = cudaLaunchKernelEx(&cfg, kernel, std::forward<A>(args)...);
        if (e != cudaSuccess && vae_launch_error_slot() == cudaSuccess) vae_launch_error_slot() = e;
    }
};

template <class... P>
inline vae_launcher<P...> vae_launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem,
                                     cudaStream_t stream) {
    vae_launcher<P...> l;
    l.kernel = kernel;
    l.cfg = cudaLaunchConfig_t{};
    l.cfg.gridDim = grid;
    l.cfg.blockDim = block;
    l.cfg.dynamicSmemBytes = smem;
    l.cfg.stream = stream;
    return l;
}

/* The error of the last vae_launch on this thread if it failed, else the
 * runtime's last error (both are then cleared). */
inline cudaError_t vae_launch_status() {
    const cudaError_t own = vae_launch_error_slot();
    vae_launch_error_slot() = cudaSuccess;
    const cudaError_t last = cudaGetLastError();
    return own != cudaSuccess ? own : last;
}
#endif /* !VAE_EMU_CUDA_EMU_H */

/* Blocks for a grid-stride loop over n elements. */
static inline unsigned vae_grid_for(size_t n) {
    size_t g = (n + VAE_CUDA_THREADS - 1) / VAE_CUDA_THREADS;
    if (g > VAE_CUDA_MAX_GRID) g = VAE_CUDA_MAX_GRID;
    return g ? (unsigned)g : 1u;
}

/* Grid-stride loop index helpers (size_t so that n may exceed 2^31). */
#define VAE_GRID_STRIDE_LOOP(i, n)                                                          \
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);                \
         i += (size_t)gridDim.x * blockDim.x)

/* The same loop with the index of type I (a kernel template parameter), so
 * that kernels which divide the index (i / L, i % C) can use 32-bit unsigned
 * division when vae_index_fits_u32(n): a 64-bit division is a long software
 * sequence, a 32-bit one a few instructions. With n < 2^31 and a stride of at
 * most VAE_CUDA_MAX_GRID * VAE_CUDA_THREADS < 2^24, i + stride < 2^32 never
 * wraps. */
#define VAE_GRID_STRIDE_LOOP_T(I, i, n)                                                     \
    for (I i = (I)blockIdx.x * (I)blockDim.x + (I)threadIdx.x; i < (I)(n);                 \
         i += (I)gridDim.x * (I)blockDim.x)

/* Whether a grid-stride loop over n elements may use a 32-bit unsigned index. */
static inline int vae_index_fits_u32(size_t n) { return n < ((size_t)1 << 31); }

/* ------------------------------------------- 128-bit vector access
 *
 * The memory-bound elementwise kernels move their tensors as vectors of four
 * elements (float4; uchar4 for bytes): one 16-byte access instead of four
 * 4-byte ones, and VAE_VEC_UNROLL of them per thread issued before any is
 * used, so that enough bytes are in flight to keep HBM busy. A launch splits
 * its n elements into a scalar head [0, head), nv vectors of 4 starting at
 * element head (16-byte aligned at every pointer), and a scalar tail of at
 * most 3 elements. When the pointers are not aligned alike (one starts on a
 * 16-byte boundary, another 4 bytes after one) there is no such split and
 * all n elements take the scalar path (head = n, nv = 0). The per-element
 * math is the same function on either path, so the results do not depend on
 * the split. */

/* Vectors per thread per iteration of a vectorised grid-stride loop. */
#define VAE_VEC_UNROLL 4
/* Upper bound on the blocks of a vectorised launch: about two waves of
 * 256-thread blocks on a 132-SM GPU, a few on smaller ones; the grid-stride
 * loop covers the rest. A constant (not the device's SM count), so that a
 * launch's shape depends on its size alone. */
#define VAE_VEC_MAX_GRID 2048u

/* Elements of `elem` bytes before the first address at p that is aligned for
 * a vector of 4 of them (4 elem bytes); -1 if p is not even elem-aligned. */
static inline int vae_vec4_head(const void *p, size_t elem) {
    const size_t a = (size_t)(uintptr_t)p, v = 4 * elem;
    if (a % elem) return -1;
    return (int)(((v - a % v) % v) / elem);
}

typedef struct {
    size_t head; /* scalar elements before the vectors (all n when nv = 0) */
    size_t nv;   /* vectors of 4 elements from element head on */
} vae_vec4_split;

/* The common head of two pointers' (vae_vec4_head), -1 when they differ. */
static inline int vae_vec4_agree(int head, int other_head) {
    return head == other_head ? head : -1;
}

/* The split of n elements whose pointers share `head` (-1: they do not). */
static inline vae_vec4_split vae_vec4_split_of(size_t n, int head) {
    vae_vec4_split s = {n, 0};
    if (head < 0 || n < (size_t)head + 4) return s;
    s.head = (size_t)head;
    s.nv = (n - (size_t)head) / 4;
    return s;
}

/* Blocks for a grid-stride loop over `items` work items taken `per` per
 * thread per iteration (per = VAE_VEC_UNROLL vectors, or 1). */
static inline unsigned vae_grid_for_items(size_t items, unsigned per) {
    const size_t per_block = (size_t)VAE_CUDA_THREADS * per;
    size_t g = (items + per_block - 1) / per_block;
    if (g > VAE_VEC_MAX_GRID) g = VAE_VEC_MAX_GRID;
    return g ? (unsigned)g : 1u;
}

/* The blocks of a launch split by s: the vector loop's when there are
 * vectors, else a scalar grid-stride loop's over all n. */
static inline unsigned vae_grid_for_split(vae_vec4_split s) {
    return s.nv ? vae_grid_for_items(s.nv, VAE_VEC_UNROLL) : vae_grid_for(s.head);
}

/* The vector loop: this thread's first vector of each iteration is `base`;
 * it takes base + k VAE_CUDA_THREADS for k < VAE_VEC_UNROLL (those below nv),
 * so each of the VAE_VEC_UNROLL accesses of a warp is 512 contiguous bytes. */
#define VAE_VEC_LOOP(base, nv)                                                              \
    for (size_t base = (size_t)blockIdx.x * (VAE_CUDA_THREADS * VAE_VEC_UNROLL) + threadIdx.x; \
         base < (nv); base += (size_t)gridDim.x * (VAE_CUDA_THREADS * VAE_VEC_UNROLL))
#define VAE_VEC_AT(base, k) ((base) + (size_t)(k) * VAE_CUDA_THREADS)

/* The scalar part of a split launch, elements [0, head) and [head + 4 nv, n)
 * (all n when nv = 0): a grid-stride loop over s < n - 4 nv with
 *   VAE_GRID_STRIDE_LOOP(s, n - 4 * nv) { size_t i = vae_vec_scalar_at(s, head, nv); ... } */
__device__ __forceinline__ size_t vae_vec_scalar_at(size_t s, size_t head, size_t nv) {
    return s < head ? s : s + 4 * nv;
}

/* Sum of one double per lane over a full warp (all 32 lanes must call it), in
 * a fixed order: the xor butterfly, offsets 16, 8, 4, 2, 1. Addition is
 * commutative in IEEE arithmetic, so every lane ends with the same bits; the
 * order depends on nothing but the lane values. */
__device__ __forceinline__ double vae_warp_sum(double x) {
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}

/* Sum of one double per thread over a block of VAE_CUDA_THREADS threads, in a
 * fixed order: a butterfly (xor shuffle) inside each warp, the warp sums
 * written to shared memory by warp index, then the same butterfly over those
 * in warp 0. No atomics, so the result depends only on the inputs and the
 * block size — bit-identical from run to run and across GPUs. The result is
 * returned to every thread of warp 0 (use it from thread 0). `shm` holds
 * VAE_CUDA_THREADS / 32 doubles; the trailing barrier makes it reusable. */
__device__ __forceinline__ double vae_block_sum(double x, double *shm) {
    x = vae_warp_sum(x);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) shm[warp] = x;
    __syncthreads();
    if (warp == 0) {
        x = lane < VAE_CUDA_THREADS / 32 ? shm[lane] : 0.0;
        x = vae_warp_sum(x);
    }
    __syncthreads();
    return x;
}

/* Whether this block is the last of the `total` blocks that call it with the
 * same counter (all threads of each block call it, once per counter use),
 * so that it can finish a two-pass sum in the same launch: thread 0 makes
 * the block's global writes before the call — its own, thread 0 being the
 * one that writes a block's partial sum — visible device-wide
 * (__threadfence), then takes a ticket from *counter; the last block resets
 * *counter to 0 for the next launch and fences again before it reads what
 * the others wrote (with __ldcg: from L2, never a stale L1 line). *counter
 * must be 0 when the launch starts: a zeroed scratch word that only these
 * launches use, one launch at a time (stream order). An integer ticket, no
 * float atomics: which block comes last varies from run to run, but it adds
 * the partials in a fixed order, so the sum does not. */
__device__ __forceinline__ bool vae_last_block(unsigned *counter, unsigned total) {
    __shared__ bool last;
    __syncthreads(); /* every thread is done with the previous call's flag */
    if (threadIdx.x == 0) {
        __threadfence();
        last = atomicAdd(counter, 1u) == total - 1;
        if (last) {
            *counter = 0;
            __threadfence();
        }
    }
    __syncthreads();
    return last;
}

/* v = p[0 .. 3] from shared memory, p 16-byte aligned: one 16-byte load on
 * the GPU; the CPU emulator (tests/emu) checks the alignment instead, which
 * the GPU would fault on. */
__device__ __forceinline__ void vae_load4_shared(float (&v)[4], const float *p) {
#ifdef __CUDA_ARCH__
    const float4 t = *reinterpret_cast<const float4 *>(p);
    v[0] = t.x, v[1] = t.y, v[2] = t.z, v[3] = t.w;
#else
    if ((uintptr_t)p % 16)
        vae_panic(__FILE__, __LINE__, "shared load of 4 floats: %p not 16-byte aligned",
                  (const void *)p);
    for (int j = 0; j < 4; j++) v[j] = p[j];
#endif
}

/* Shared-memory fills that do not wait for each load. vae_fill_async(dst,
 * src): *dst = *src for one float, dst in shared and src in global memory,
 * as an asynchronous copy (cp.async, compute capability 8.0 on: LDGSTS),
 * which holds no register and lets a thread have many loads in flight; a
 * loop of plain load-then-store waits a memory round trip per element (the
 * store needs the load's value), which made the direct convolutions' fills
 * latency-bound. vae_fill_wait(): this thread's copies have landed; a
 * __syncthreads() after it makes every thread's visible. Both are plain
 * copies in the CPU emulator (the same values, at once). */
__device__ __forceinline__ void vae_fill_async(float *dst, const float *src) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    const unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    const size_t g = __cvta_generic_to_global(src);
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(d), "l"(g) : "memory");
#else
    *dst = *src;
#endif
}
__device__ __forceinline__ void vae_fill_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_all;" ::: "memory");
#endif
}

#endif /* __CUDACC__ */

#endif /* VAE_CUDA_COMMON_CUH */

/* cuda_emu.h — enough of CUDA C++ to run src/kernels on the CPU.
 *
 * Force-included (g++ -include) into copies of the kernel files that
 * tests/emu/cu2cpp.py made (launches `k<<<g, b, smem, s>>>(args)` rewritten
 * as `vae_emu_launch(g, b, smem, s, k, args)`). Each CUDA thread of a block
 * is a fiber with its own stack (emu_runtime.cpp), so __syncthreads and the
 * warp shuffles are real barriers: a thread stops there until the others
 * arrive. `__shared__` variables are statics, shared by the block's threads;
 * blocks run one after another.
 *
 * What it checks that a GPU would not tell you plainly (it aborts with the
 * kernel's launch site and the source places): a __syncthreads that the
 * block's threads reach from two places or that some skip (divergent
 * barrier, deadlock), a full-mask shuffle with lanes that have left the
 * kernel or wait elsewhere, an invalid launch configuration (reported as
 * cudaGetLastError does). Under AddressSanitizer, every out-of-bounds access
 * of a kernel.
 *
 * What it does not model: timing; races (threads run one at a time, from
 * barrier to barrier, so a missing barrier between a shared-memory write and
 * another thread's read shows only if the order matters for the result);
 * inter-block interactions (blocks are serialised); device math functions'
 * own rounding (expf etc. are glibc's, the CPU reference's); FMA contraction
 * (the kernels are built with -ffp-contract=off).
 */
#ifndef VAE_EMU_CUDA_EMU_H
#define VAE_EMU_CUDA_EMU_H

#ifndef __cplusplus
#error "cuda_emu.h is for the C++ compile of the kernel files"
#endif

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <tuple>
#include <utility>

#include "cuda_runtime_api.h"

/* Kernels and inline device functions get internal linkage: in a CUDA build
 * the real kernels' host stubs have the same (mangled) names. */
#define __global__ static
#define __device__
#define __host__
#define __forceinline__ static inline
#define __shared__ static
#define __launch_bounds__(...)

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct uint3 {
    unsigned x, y, z;
};

/* The vector types the kernels use for 16-byte (float4) and 4-byte (uchar4)
 * accesses, with CUDA's sizes and alignments: a float4 access at an address
 * that is not 16-byte aligned is then undefined here too (UBSan reports it),
 * as it is a fault on a GPU. */
struct alignas(16) float4 {
    float x, y, z, w;
};
struct alignas(4) uchar4 {
    unsigned char x, y, z, w;
};
static_assert(sizeof(float4) == 16 && alignof(float4) == 16, "float4 as in CUDA");
static_assert(sizeof(uchar4) == 4 && alignof(uchar4) == 4, "uchar4 as in CUDA");
static inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
static inline uchar4 make_uchar4(unsigned char x, unsigned char y, unsigned char z,
                                 unsigned char w) {
    return uchar4{x, y, z, w};
}

extern uint3 threadIdx, blockIdx;
extern dim3 blockDim, gridDim;

/* Barrier of the block's threads; file and line name the barrier's place in
 * the kernel's source, for the divergence check (a macro, so that a
 * compiler's duplicating the call does not make two places of one). */
void vae_emu_syncthreads(const char *file, int line);
#define __syncthreads() vae_emu_syncthreads(__FILE__, __LINE__)

/* The lane's 8 bytes through the warp's exchange slots. */
uint64_t vae_emu_shfl_xor(const char *file, int line, unsigned mask, uint64_t bits,
                          int lane_mask, int width);

template <class T>
inline T vae_emu_shfl_xor_sync(const char *file, int line, unsigned mask, T v, int lane_mask,
                               int width = 32) {
    static_assert(sizeof(T) <= 8, "shuffle of more than 8 bytes");
    uint64_t b = 0;
    memcpy(&b, &v, sizeof v);
    b = vae_emu_shfl_xor(file, line, mask, b, lane_mask, width);
    T r;
    memcpy(&r, &b, sizeof r);
    return r;
}
#define __shfl_xor_sync(...) vae_emu_shfl_xor_sync(__FILE__, __LINE__, __VA_ARGS__)

/* common.cuh's flag accesses as relaxed atomics: the same on a CPU, and
 * ThreadSanitizer knows them for what they are. */
#define VAE_FLAG_LOAD(p) __atomic_load_n((const int *)(p), __ATOMIC_RELAXED)
#define VAE_FLAG_STORE(p, v) __atomic_store_n((int *)(p), (v), __ATOMIC_RELAXED)

/* vae_last_block (common.cuh): the ticket counter as a relaxed atomic; the
 * fence does nothing, since a launch's blocks run one after another on one
 * OS thread here (so the last block is always the last launched, and sees
 * the others' writes); __ldcg a plain load. */
inline unsigned atomicAdd(unsigned *p, unsigned v) {
    return __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
}
inline void __threadfence() {}
template <typename T> inline T __ldcg(const T *p) { return *p; }

/* __dmul_rn is "never fused": with -ffp-contract=off a plain multiply is. */
inline double __dmul_rn(double a, double b) { return a * b; }

/* Runs body() as grid x block threads (block by block), in the calling
 * thread's order of launches; `site` names the launch for error messages. */
/* free: the kernel reaches no barrier (cu2cpp.py), its threads run as plain
 * calls, in thread order, without fibers. */
/* pdl: launched by vae_launch (common.cuh), whose kernels begin with
 * VAE_PDL_ENTRY(): the emulator stops with a message if a thread of such a
 * launch ends without having passed it once. */
void vae_emu_run(dim3 grid, dim3 block, size_t smem, cudaStream_t s, void (*body)(void *),
                 void *arg, size_t arg_size, const char *site, int free, int pdl);

/* VAE_PDL_ENTRY() (common.cuh): on a GPU the wait for the grids a launch
 * depends on; here launches run one after another, so all that is left is
 * to count that the thread passed it. */
void vae_emu_pdl_entry(void);
#define VAE_PDL_ENTRY() vae_emu_pdl_entry()

template <class... P, class... A>
inline void vae_emu_launch_at(const char *site, int free, int pdl, dim3 grid, dim3 block,
                              size_t smem, cudaStream_t s, void (*kernel)(P...), A &&...args) {
    /* the arguments are converted to the kernel's parameter types once, by
     * the launching thread, as a launch copies them to the device */
    struct call {
        void (*k)(P...);
        std::tuple<P...> a;
        static void run(void *p) {
            call *c = static_cast<call *>(p);
            std::apply(c->k, c->a);
        }
    } c{kernel, std::tuple<P...>(std::forward<A>(args)...)};
    vae_emu_run(grid, block, smem, s, &call::run, &c, sizeof c, site, free, pdl);
}

#define VAE_EMU_STR2(x) #x
#define VAE_EMU_STR(x) VAE_EMU_STR2(x)
#define vae_emu_launch(...)                                                                 \
    vae_emu_launch_at(__FILE__ ":" VAE_EMU_STR(__LINE__), 0, 0, __VA_ARGS__)
#define vae_emu_launch_free(...)                                                            \
    vae_emu_launch_at(__FILE__ ":" VAE_EMU_STR(__LINE__), 1, 0, __VA_ARGS__)
#define vae_emu_launch_pdl(...)                                                             \
    vae_emu_launch_at(__FILE__ ":" VAE_EMU_STR(__LINE__), 0, 1, __VA_ARGS__)
#define vae_emu_launch_pdl_free(...)                                                        \
    vae_emu_launch_at(__FILE__ ":" VAE_EMU_STR(__LINE__), 1, 1, __VA_ARGS__)

#endif

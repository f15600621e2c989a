/* act.cu — pointwise activations, forward and backward.
 *
 *   relu:        y = x > 0 ? x : 0           dx = y > 0 ? dy : 0
 *   leaky relu:  y = x > 0 ? x : slope x     dx = y > 0 ? dy : slope dy   (slope > 0)
 *
 * The backward pass reads the forward *output* y (the input may have been
 * overwritten in place), as the CPU reference does. NaN inputs fail `> 0` and
 * take the negative branch on both backends.
 * Bytes per element: forward 4 read + 4 written; backward 8 read + 4 written.
 * In-place (out == in, din == dout) is allowed: each element is read before it
 * is written by the same thread.
 *
 * Access: 16-byte vectors (float4), VAE_VEC_UNROLL = 4 per thread per
 * iteration, all loaded before any is stored (forward: 64 bytes in flight per
 * thread, backward 128), a scalar head/tail where the pointers are not 16-byte
 * aligned, all scalar where they are misaligned differently (common.cuh).
 * Every element goes through act_fwd / act_bwd below on either path.
 */
#include "common.cuh"
#include "vae_backend.h"
#include "vae_kernels.cuh"

__device__ __forceinline__ real act_fwd(real x, int act, real slope) {
    return x > 0 ? x : (act == VAE_ACT_LEAKY_RELU ? slope * x : (real)0);
}

__device__ __forceinline__ real act_bwd(real d, real y, int act, real slope) {
    return y > 0 ? d : (act == VAE_ACT_LEAKY_RELU ? slope * d : (real)0);
}

/* out = act(in): vectors [head, head + 4 nv), the rest one by one. */
__global__ void act_forward_kernel(real *out, const real *in, size_t n, size_t head, size_t nv,
                                   int act, real slope) {
    VAE_PDL_ENTRY();
    const float4 *in4 = reinterpret_cast<const float4 *>(in + head);
    float4 *out4 = reinterpret_cast<float4 *>(out + head);
    VAE_VEC_LOOP(base, nv) {
        float4 x[VAE_VEC_UNROLL] = {};
#pragma unroll
        for (int k = 0; k < VAE_VEC_UNROLL; k++)
            if (VAE_VEC_AT(base, k) < nv) x[k] = in4[VAE_VEC_AT(base, k)];
#pragma unroll
        for (int k = 0; k < VAE_VEC_UNROLL; k++) {
            if (VAE_VEC_AT(base, k) >= nv) break;
            float4 y;
            y.x = act_fwd(x[k].x, act, slope);
            y.y = act_fwd(x[k].y, act, slope);
            y.z = act_fwd(x[k].z, act, slope);
            y.w = act_fwd(x[k].w, act, slope);
            out4[VAE_VEC_AT(base, k)] = y;
        }
    }
    VAE_GRID_STRIDE_LOOP(s, n - 4 * nv) {
        const size_t i = vae_vec_scalar_at(s, head, nv);
        out[i] = act_fwd(in[i], act, slope);
    }
}

__global__ void act_backward_kernel(real *din, const real *dout, const real *out, size_t n,
                                    size_t head, size_t nv, int act, real slope) {
    VAE_PDL_ENTRY();
    const float4 *d4 = reinterpret_cast<const float4 *>(dout + head);
    const float4 *y4 = reinterpret_cast<const float4 *>(out + head);
    float4 *g4 = reinterpret_cast<float4 *>(din + head);
    VAE_VEC_LOOP(base, nv) {
        float4 d[VAE_VEC_UNROLL] = {}, y[VAE_VEC_UNROLL] = {};
#pragma unroll
        for (int k = 0; k < VAE_VEC_UNROLL; k++)
            if (VAE_VEC_AT(base, k) < nv) {
                d[k] = d4[VAE_VEC_AT(base, k)];
                y[k] = y4[VAE_VEC_AT(base, k)];
            }
#pragma unroll
        for (int k = 0; k < VAE_VEC_UNROLL; k++) {
            if (VAE_VEC_AT(base, k) >= nv) break;
            float4 g;
            g.x = act_bwd(d[k].x, y[k].x, act, slope);
            g.y = act_bwd(d[k].y, y[k].y, act, slope);
            g.z = act_bwd(d[k].z, y[k].z, act, slope);
            g.w = act_bwd(d[k].w, y[k].w, act, slope);
            g4[VAE_VEC_AT(base, k)] = g;
        }
    }
    VAE_GRID_STRIDE_LOOP(s, n - 4 * nv) {
        const size_t i = vae_vec_scalar_at(s, head, nv);
        din[i] = act_bwd(dout[i], out[i], act, slope);
    }
}

extern "C" void vae_cuda_act_forward(cudaStream_t s, real *out, const real *in, size_t n,
                                     int act, real slope) {
    if (n == 0) return;
    const vae_vec4_split sp = vae_vec4_split_of(
        n, vae_vec4_agree(vae_vec4_head(out, sizeof(real)), vae_vec4_head(in, sizeof(real))));
    vae_launch(act_forward_kernel, vae_grid_for_split(sp), VAE_CUDA_THREADS, 0, s)(
        out, in, n, sp.head, sp.nv, act, slope);
    CUDA_LAUNCH_CHECK();
}

extern "C" void vae_cuda_act_backward(cudaStream_t s, real *din, const real *dout,
                                      const real *out, size_t n, int act, real slope) {
    if (n == 0) return;
    const int h = vae_vec4_agree(vae_vec4_head(din, sizeof(real)),
                                 vae_vec4_agree(vae_vec4_head(dout, sizeof(real)),
                                                vae_vec4_head(out, sizeof(real))));
    const vae_vec4_split sp = vae_vec4_split_of(n, h);
    vae_launch(act_backward_kernel, vae_grid_for_split(sp), VAE_CUDA_THREADS, 0, s)(
        din, dout, out, n, sp.head, sp.nv, act, slope);
    CUDA_LAUNCH_CHECK();
}

/* Programmatic dependent launch (common.cuh) for the launches that follow,
 * on this process's kernels; the backend turns it on. */
extern "C" {
int vae_cuda_pdl_on = 0;
}

extern "C" void vae_cuda_set_pdl(int on) { vae_cuda_pdl_on = on != 0; }

/* The PTX architecture the kernels were compiled for on this device (90 for
 * sm_90 code, whose VAE_PDL_ENTRY is griddepcontrol; 80 for sm_80 code run
 * there, whose entry is empty), or -1. The emulator runs what an sm_90 build
 * runs, entry included. */
extern "C" int vae_cuda_kernels_ptx_version(void) {
#ifdef VAE_EMU_CUDA_EMU_H
    return 90;
#else
    cudaFuncAttributes attr;
    if (cudaFuncGetAttributes(&attr, (const void *)act_forward_kernel) != cudaSuccess) return -1;
    return attr.ptxVersion;
#endif
}

/* For the backend's check that programmatic dependent launches can be
 * captured into a graph and replayed: x = relu(x) over n4 vectors of 4 (x
 * 16-byte aligned), launched with the attribute whatever the flag says; the
 * launch's status is returned, not checked. */
extern "C" cudaError_t vae_cuda_pdl_probe_launch(cudaStream_t s, real *x, size_t n4) {
    const int was = vae_cuda_pdl_on;
    vae_cuda_pdl_on = 1;
    vae_launch(act_forward_kernel, 1, VAE_CUDA_THREADS, 0, s)(x, x, 4 * n4, (size_t)0, n4,
                                                              (int)VAE_ACT_RELU, (real)0);
    vae_cuda_pdl_on = was;
    return VAE_LAUNCH_STATUS();
}

/* The probe lives here because every build has this family. */
extern "C" cudaError_t vae_cuda_probe_kernels(void) {
    cudaFuncAttributes attr;
    return cudaFuncGetAttributes(&attr, (const void *)act_forward_kernel);
}

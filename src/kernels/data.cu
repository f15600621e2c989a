/* data.cu — batch assembly on the device.
 *
 *   x[b, d] = data[idx[r0 + b], d] / 255      data [N, D] uint8, idx int32,
 *                                              r0 = sv->row0
 *
 * The index array holds the epoch's whole permutation; the step's offset
 * into it, sv->row0, is read from the step's vae_step_vals block in device
 * memory (loaded once per thread into a register), so a captured step
 * gathers the batch of whichever step step_begin last opened.
 * The dataset lives on the device as bytes (4x smaller than floats); the
 * division is IEEE (nvcc's default -prec-div=true), the same float the CPU's
 * `(real)u / (real)255` gives.
 * Bytes per element: 1 read + 4 written (+ idx and the 56-byte sv, cached).
 *
 * Access: when D is a multiple of 4, x is 16-byte and data 4-byte aligned,
 * each work item is 4 pixels of one row — a uchar4 load and a float4 store —
 * VAE_VEC_UNROLL items per thread per iteration, all loaded before any is
 * stored; otherwise one pixel per thread per iteration. Item v is row
 * b = v / (D/4), pixels 4 (v % (D/4)) ..+3, split in 32-bit unsigned
 * arithmetic when B*D < 2^31. Each pixel is the same division on either path.
 */
#include "common.cuh"
#include "vae_kernels.cuh"

__device__ __forceinline__ real gather_px(uint8_t u) { return (real)u / (real)255; }

/* The vector path: nv = B*D/4 items of 4 pixels, Dq = D/4 items per row. */
template <typename I>
__global__ void gather_batch_vec_kernel(real *x, const uint8_t *data, const int32_t *idx,
                                        const vae_step_vals *sv, I nv, I Dq) {
    VAE_PDL_ENTRY();
    const int32_t *rows = idx + sv->row0;
    const uchar4 *data4 = reinterpret_cast<const uchar4 *>(data);
    float4 *x4 = reinterpret_cast<float4 *>(x);
    VAE_VEC_LOOP(base, (size_t)nv) {
        uchar4 u[VAE_VEC_UNROLL] = {};
#pragma unroll
        for (int k = 0; k < VAE_VEC_UNROLL; k++) {
            const I j = (I)VAE_VEC_AT(base, k);
            if (j < nv) {
                const I b = j / Dq, q = j - b * Dq;
                u[k] = data4[(size_t)rows[b] * (size_t)Dq + (size_t)q];
            }
        }
#pragma unroll
        for (int k = 0; k < VAE_VEC_UNROLL; k++) {
            const size_t j = VAE_VEC_AT(base, k);
            if (j >= (size_t)nv) break;
            float4 f;
            f.x = gather_px(u[k].x);
            f.y = gather_px(u[k].y);
            f.z = gather_px(u[k].z);
            f.w = gather_px(u[k].w);
            x4[j] = f;
        }
    }
}

__global__ void gather_batch_kernel(real *x, const uint8_t *data, const int32_t *idx,
                                    const vae_step_vals *sv, int B, int D) {
    VAE_PDL_ENTRY();
    const size_t n = (size_t)B * D;
    const int32_t *rows = idx + sv->row0;
    VAE_GRID_STRIDE_LOOP(i, n) {
        size_t b = i / (size_t)D, d = i % (size_t)D;
        x[i] = gather_px(data[(size_t)rows[b] * (size_t)D + d]);
    }
}

extern "C" void vae_cuda_gather_batch(cudaStream_t s, real *x, const uint8_t *data,
                                      const int32_t *idx, const vae_step_vals *sv, int B, int D) {
    size_t n = (size_t)B * D;
    if (n == 0) return;
    if (D % 4 == 0 && vae_vec4_head(x, sizeof(real)) == 0 && vae_vec4_head(data, 1) == 0) {
        const size_t nv = n / 4;
        const unsigned grid = vae_grid_for_items(nv, VAE_VEC_UNROLL);
        if (vae_index_fits_u32(n))
            vae_launch(gather_batch_vec_kernel<unsigned>, grid, VAE_CUDA_THREADS, 0, s)(
                x, data, idx, sv, (unsigned)nv, (unsigned)(D / 4));
        else
            vae_launch(gather_batch_vec_kernel<size_t>, grid, VAE_CUDA_THREADS, 0, s)(
                x, data, idx, sv, nv, (size_t)(D / 4));
    } else {
        vae_launch(gather_batch_kernel, vae_grid_for(n), VAE_CUDA_THREADS, 0, s)(
            x, data, idx, sv, B, D);
    }
    CUDA_LAUNCH_CHECK();
}

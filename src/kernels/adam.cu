/* adam.cu — one Adam/AdamW step over the flat parameter buffer.
 *
 *   gscale = clip > 0 ? min(1, clip / (sqrt(gnorm2) + 1e-6)) : 1
 *   per element (vae_adam_elem, vae_math.h):
 *     g' = gscale g (+ wd p for L2);  m = b1 m + (1-b1) g';  v = b2 v + (1-b2) g'^2
 *     p -= lr/bc1 m / (sqrt(v)/sqrt(bc2) + eps)      (AdamW: p *= 1 - lr wd first)
 *   with lr = hp.lr sv->lr_scale (the schedule's factor, vae_adam_hp_at),
 *   bc1 = sv->bc1, bc2 = sv->bc2 read from the step's vae_step_vals block
 *   in device memory (vae_math.h; once per thread, into registers), so a
 *   captured step applies the learning rate and bias corrections of the
 *   step being run.
 *   If gnorm2 (||g||^2 from sumsq, on the device) is NaN or infinite the whole
 *   step is skipped — p, m, v untouched — and *bad = VAE_STEP_BAD (1).
 *   If *bad has VAE_STEP_HALTED (the run stopped on bad steps, step_commit)
 *   the kernel changes nothing at all.
 *
 * The clip scale is computed on the device from gnorm2, so the step needs no
 * host round trip. Every thread derives the same gscale from the same double
 * (in double, rounded once), so all elements see the same scale.
 * Bytes per element: 16 read (p, g, m, v) + 12 written (p, m, v)
 * (gnorm2, *bad and the 56-byte sv are per launch, from cache).
 * Access: 16-byte vectors (float4) of p, g, m, v, ADAM_UNROLL = 2 per thread
 * per iteration, all eight loaded before any is stored (128 bytes in flight
 * per thread); a scalar head/tail where the buffers are not 16-byte aligned,
 * all scalar where they are misaligned differently (common.cuh). Every
 * element is one vae_adam_elem call on either path.
 *
 * Also here, each one launch of one thread that runs the reference lines of
 * vae_math.h (a handful of scalar updates, with no host round trip):
 *   step_begin   *sv = vae_step_vals_at(plan, sv->next): the block of the
 *                next step (batch offset, noise subsequence, KL weight, bias
 *                corrections via vae_pow_int: the host's bits), next advanced
 *   step_commit  vae_step_commit(acc, state, sv->step, sv->rows, max_bad)
 * and the snapshot of the bookkeeping blocks for an asynchronous read-back.
 */
#include "common.cuh"
#include "vae_kernels.cuh"

/* float4 vectors of each buffer per thread per iteration */
#define ADAM_UNROLL 2

__global__ void adam_kernel(real *p, const real *g, real *m, real *v, size_t n, size_t head,
                            size_t nv, vae_adam_hp hp0, real clip, const double *gnorm2, int *bad,
                            const vae_step_vals *sv) {
    VAE_PDL_ENTRY();
    /* Only thread 0 ever writes *bad, and only VAE_STEP_BAD over a word
     * without VAE_STEP_HALTED, so every thread sees the same HALTED bit. The
     * other threads may read it while thread 0 writes it: both are relaxed
     * atomic accesses (VAE_FLAG_LOAD, common.cuh), not a data race. */
    if (VAE_FLAG_LOAD(bad) & VAE_STEP_HALTED) return;
    const double g2 = *gnorm2;
    if (!(fabs(g2) <= 1.7976931348623157e308)) { /* NaN or +-inf */
        if (blockIdx.x == 0 && threadIdx.x == 0) VAE_FLAG_STORE(bad, VAE_STEP_BAD);
        return;
    }
    const real bc1 = sv->bc1, bc2 = sv->bc2;
    const vae_adam_hp hp = vae_adam_hp_at(&hp0, sv); /* the step's learning rate */
    real gscale = (real)1;
    if (clip > 0) {
        double c = (double)clip / (sqrt(g2) + 1e-6);
        if (c < 1.0) gscale = (real)c;
    }
    float4 *p4 = reinterpret_cast<float4 *>(p + head);
    const float4 *g4 = reinterpret_cast<const float4 *>(g + head);
    float4 *m4 = reinterpret_cast<float4 *>(m + head);
    float4 *v4 = reinterpret_cast<float4 *>(v + head);
    const size_t stride = (size_t)gridDim.x * (VAE_CUDA_THREADS * ADAM_UNROLL);
    for (size_t base = (size_t)blockIdx.x * (VAE_CUDA_THREADS * ADAM_UNROLL) + threadIdx.x;
         base < nv; base += stride) {
        float4 pv[ADAM_UNROLL] = {}, gv[ADAM_UNROLL] = {}, mv[ADAM_UNROLL] = {},
               vv[ADAM_UNROLL] = {};
#pragma unroll
        for (int k = 0; k < ADAM_UNROLL; k++) {
            const size_t j = VAE_VEC_AT(base, k);
            if (j < nv) {
                pv[k] = p4[j];
                gv[k] = g4[j];
                mv[k] = m4[j];
                vv[k] = v4[j];
            }
        }
#pragma unroll
        for (int k = 0; k < ADAM_UNROLL; k++) {
            const size_t j = VAE_VEC_AT(base, k);
            if (j >= nv) break;
            vae_adam_elem(&pv[k].x, gv[k].x, &mv[k].x, &vv[k].x, &hp, bc1, bc2, gscale);
            vae_adam_elem(&pv[k].y, gv[k].y, &mv[k].y, &vv[k].y, &hp, bc1, bc2, gscale);
            vae_adam_elem(&pv[k].z, gv[k].z, &mv[k].z, &vv[k].z, &hp, bc1, bc2, gscale);
            vae_adam_elem(&pv[k].w, gv[k].w, &mv[k].w, &vv[k].w, &hp, bc1, bc2, gscale);
            p4[j] = pv[k];
            m4[j] = mv[k];
            v4[j] = vv[k];
        }
    }
    VAE_GRID_STRIDE_LOOP(s, n - 4 * nv) {
        const size_t i = vae_vec_scalar_at(s, head, nv);
        real pi = p[i], mi = m[i], vi = v[i];
        vae_adam_elem(&pi, g[i], &mi, &vi, &hp, bc1, bc2, gscale);
        p[i] = pi;
        m[i] = mi;
        v[i] = vi;
    }
}

extern "C" void vae_cuda_adam(cudaStream_t s, real *p, const real *g, real *m, real *v, size_t n,
                              const vae_adam_hp *hp, real clip, const double *gnorm2, int *bad,
                              const vae_step_vals *sv) {
    if (n == 0) return;
    const int h = vae_vec4_agree(
        vae_vec4_agree(vae_vec4_head(p, sizeof(real)), vae_vec4_head(g, sizeof(real))),
        vae_vec4_agree(vae_vec4_head(m, sizeof(real)), vae_vec4_head(v, sizeof(real))));
    const vae_vec4_split sp = vae_vec4_split_of(n, h);
    const unsigned grid = sp.nv ? vae_grid_for_items(sp.nv, ADAM_UNROLL) : vae_grid_for(n);
    vae_launch(adam_kernel, grid, VAE_CUDA_THREADS, 0, s)(
        p, g, m, v, n, sp.head, sp.nv, *hp, clip, gnorm2, bad, sv);
    CUDA_LAUNCH_CHECK();
}

/* One thread: the reference lines of vae_math.h on the device blocks. The
 * plan is constant over a run, so it travels by value (a captured graph
 * keeps it); everything that changes lives in *sv. */
__global__ void step_begin_kernel(vae_step_vals *sv, vae_step_plan plan) {
    VAE_PDL_ENTRY();
    if (blockIdx.x == 0 && threadIdx.x == 0) vae_step_begin(sv, &plan);
}

extern "C" void vae_cuda_step_begin(cudaStream_t s, vae_step_vals *sv, vae_step_plan plan) {
    vae_launch(step_begin_kernel, 1, 1, 0, s)(sv, plan);
    CUDA_LAUNCH_CHECK();
}

__global__ void step_commit_kernel(double *acc, int *state, const vae_step_vals *sv,
                                   int max_bad) {
    VAE_PDL_ENTRY();
    if (blockIdx.x == 0 && threadIdx.x == 0)
        vae_step_commit(acc, state, sv->step, (int)sv->rows, max_bad);
}

extern "C" void vae_cuda_step_commit(cudaStream_t s, double *acc, int *state,
                                     const vae_step_vals *sv, int max_bad) {
    vae_launch(step_commit_kernel, 1, 1, 0, s)(acc, state, sv, max_bad);
    CUDA_LAUNCH_CHECK();
}

/* acc_dst[i] = acc[i] (i < VAE_COMMIT_ACC_N), state_dst[i] = state[i]
 * (i < VAE_STEP_STATE_N); one warp, one element per thread. */
__global__ void step_snapshot_kernel(double *acc_dst, int *state_dst, const double *acc,
                                     const int *state) {
    VAE_PDL_ENTRY();
    const int i = (int)threadIdx.x;
    if (i < VAE_COMMIT_ACC_N) acc_dst[i] = acc[i];
    if (i < VAE_STEP_STATE_N) state_dst[i] = state[i];
}

extern "C" void vae_cuda_step_snapshot(cudaStream_t s, double *acc_dst, int *state_dst,
                                       const double *acc, const int *state) {
    vae_launch(step_snapshot_kernel, 1, 32, 0, s)(acc_dst, state_dst, acc, state);
    CUDA_LAUNCH_CHECK();
}

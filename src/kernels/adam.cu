/* adam.cu — one Adam/AdamW step over the flat parameter buffer.
 *
 *   gscale = clip > 0 ? min(1, clip / (sqrt(gnorm2) + 1e-6)) : 1
 *   per element (vae_adam_elem, vae_math.h):
 *     g' = gscale g (+ wd p for L2);  m = b1 m + (1-b1) g';  v = b2 v + (1-b2) g'^2
 *     p -= lr/bc1 m / (sqrt(v)/sqrt(bc2) + eps)      (AdamW: p *= 1 - lr wd first)
 *   with bc1 = sv->bc1, bc2 = sv->bc2 read from the step's vae_step_vals
 *   block in device memory (vae_math.h; once per thread, into registers), so
 *   a captured step applies the bias corrections of the step being run.
 *   If gnorm2 (||g||^2 from sumsq, on the device) is NaN or infinite the whole
 *   step is skipped — p, m, v untouched — and *bad = VAE_STEP_BAD (1).
 *   If *bad has VAE_STEP_HALTED (the run stopped on bad steps, step_commit)
 *   the kernel changes nothing at all.
 *
 * The clip scale is computed on the device from gnorm2, so the step needs no
 * host round trip. Every thread derives the same gscale from the same double
 * (in double, rounded once), so all elements see the same scale.
 * Bytes per element: 16 read (p, g, m, v) + 12 written (p, m, v)
 * (gnorm2, *bad and the 48-byte sv are per launch, from cache).
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

__global__ void adam_kernel(real *p, const real *g, real *m, real *v, size_t n, vae_adam_hp hp,
                            real clip, const double *gnorm2, int *bad, const vae_step_vals *sv) {
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
    real gscale = (real)1;
    if (clip > 0) {
        double c = (double)clip / (sqrt(g2) + 1e-6);
        if (c < 1.0) gscale = (real)c;
    }
    VAE_GRID_STRIDE_LOOP(i, n) {
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
    adam_kernel<<<vae_grid_for(n), VAE_CUDA_THREADS, 0, s>>>(p, g, m, v, n, *hp, clip, gnorm2,
                                                             bad, sv);
    CUDA_LAUNCH_CHECK();
}

/* One thread: the reference lines of vae_math.h on the device blocks. The
 * plan is constant over a run, so it travels by value (a captured graph
 * keeps it); everything that changes lives in *sv. */
__global__ void step_begin_kernel(vae_step_vals *sv, vae_step_plan plan) {
    if (blockIdx.x == 0 && threadIdx.x == 0) vae_step_begin(sv, &plan);
}

extern "C" void vae_cuda_step_begin(cudaStream_t s, vae_step_vals *sv, vae_step_plan plan) {
    step_begin_kernel<<<1, 1, 0, s>>>(sv, plan);
    CUDA_LAUNCH_CHECK();
}

__global__ void step_commit_kernel(double *acc, int *state, const vae_step_vals *sv,
                                   int max_bad) {
    if (blockIdx.x == 0 && threadIdx.x == 0)
        vae_step_commit(acc, state, sv->step, (int)sv->rows, max_bad);
}

extern "C" void vae_cuda_step_commit(cudaStream_t s, double *acc, int *state,
                                     const vae_step_vals *sv, int max_bad) {
    step_commit_kernel<<<1, 1, 0, s>>>(acc, state, sv, max_bad);
    CUDA_LAUNCH_CHECK();
}

/* acc_dst[i] = acc[i] (i < VAE_COMMIT_ACC_N), state_dst[i] = state[i]
 * (i < VAE_STEP_STATE_N); one warp, one element per thread. */
__global__ void step_snapshot_kernel(double *acc_dst, int *state_dst, const double *acc,
                                     const int *state) {
    const int i = (int)threadIdx.x;
    if (i < VAE_COMMIT_ACC_N) acc_dst[i] = acc[i];
    if (i < VAE_STEP_STATE_N) state_dst[i] = state[i];
}

extern "C" void vae_cuda_step_snapshot(cudaStream_t s, double *acc_dst, int *state_dst,
                                       const double *acc, const int *state) {
    step_snapshot_kernel<<<1, 32, 0, s>>>(acc_dst, state_dst, acc, state);
    CUDA_LAUNCH_CHECK();
}

/* vae_backend.h — the seam between the model and the hardware.
 *
 * The model, trainer, evaluator and sampler call only these function
 * pointers. The CPU backend (src/host/backend_cpu.c) is the reference; the
 * CUDA backend (src/host/backend_cuda.c + src/kernels) implements the same
 * table with the same argument order, plus its stream inside `ctx`.
 *
 * Conventions (as llm.c):
 *   - every pointer argument that names a tensor points to backend memory
 *     (host memory for the CPU backend, device memory for CUDA);
 *   - shapes are in the comments, row-major, batch first: [B, I] for dense
 *     activations, [B, C, H, W] (NCHW) for images;
 *   - forward outputs and parameter gradients are written with `=`
 *     (every parameter is used once per step, so no zeroing pass is needed);
 *   - a NULL input-gradient pointer means "not needed" (first layer).
 *   - calls are asynchronous on backends that can be; `sync` waits.
 */
#ifndef VAE_BACKEND_H
#define VAE_BACKEND_H

#include "vae_core.h"
#include "vae_math.h"

#ifdef __cplusplus
extern "C" {
#endif

/* 2-D convolution: in [B, cin, hin, win] -> out [B, cout, hout, wout],
 * weight [cout, cin, k, k] (PyTorch Conv2d layout), square kernel,
 * hout = (hin + 2 pad - k) / stride + 1. */
typedef struct {
    int cin, hin, win;
    int cout, hout, wout;
    int k, stride, pad;
} vae_conv_geom;

/* Transposed convolution in [B, cin, hin, win] -> out [B, cout, hout, wout],
 * weight [cin, cout, k, k] (PyTorch ConvTranspose2d layout),
 * hout = (hin - 1) stride - 2 pad + k + out_pad. */
typedef struct {
    int cin, hin, win;
    int cout, hout, wout;
    int k, stride, pad, out_pad;
} vae_convt_geom;

typedef enum { VAE_ACT_RELU = 0, VAE_ACT_LEAKY_RELU = 1 } vae_act;
typedef enum { VAE_LIK_BERNOULLI = 0, VAE_LIK_GAUSSIAN = 1 } vae_likelihood;

typedef struct vae_backend vae_backend;
struct vae_backend {
    const char *name; /* "cpu" or "cuda" */
    void *ctx;        /* backend private state */
    /* 1: an op's results may depend on the batch size it runs at, beyond
     * the rows themselves (CUDA: algorithms chosen per shape); the sampler
     * then decodes every chunk at the full chunk size. 0: the CPU's. */
    int batch_variant;

    /* ---- memory ---- */
    /* Backend memory; CPU: 64-byte aligned host memory; CUDA: carved from the
     * arena. NULL + vae_error_set on failure. */
    void *(*alloc)(vae_backend *be, size_t bytes);
    void (*release)(vae_backend *be, void *p);
    void (*upload)(vae_backend *be, void *dst, const void *src, size_t bytes);
    void (*download)(vae_backend *be, void *dst, const void *src, size_t bytes);
    void (*zero)(vae_backend *be, void *dst, size_t bytes);
    void (*sync)(vae_backend *be);
    void (*destroy)(vae_backend *be);

    /* ---- layers ---- */
    /* out[B,O] = in[B,I] w[O,I]^T + b[O] */
    void (*dense_forward)(vae_backend *be, real *out, const real *in, const real *w,
                          const real *b, int B, int I, int O);
    /* din[B,I] = dout[B,O] w[O,I];  dw[O,I] = dout^T in;  db[O] = sum_B dout */
    void (*dense_backward)(vae_backend *be, real *din, real *dw, real *db, const real *dout,
                           const real *in, const real *w, int B, int I, int O);
    /* Dense + ReLU fused: out[B,O] = relu(in[B,I] w[O,I]^T + b[O]), the same
     * values as dense_forward followed by act_forward(VAE_ACT_RELU) on out.
     * mask: NULL, or backend memory of relu_mask_bytes(be, B, O) bytes in
     * which the backend may record the sign pattern of this output for a
     * dense_backward_relu of the layer above, issued after this call and
     * before the next forward of the same layer (CUDA: cuBLASLt's ReLU
     * bit-mask, see relu_mask_bytes). Pass NULL when no such backward follows. */
    void (*dense_relu_forward)(vae_backend *be, real *out, void *mask, const real *in,
                               const real *w, const real *b, int B, int I, int O);
    /* Backward of a dense layer whose input in[B,I] is the output of a
     * dense_relu_forward of the layer below (which was given `mask`, or NULL):
     *   dw[O,I] = dout^T in;  db[O] = sum_B dout       (as dense_backward)
     *   din[B,I]  = (dout[B,O] w[O,I]) * [in > 0]     (the ReLU's backward)
     *   dbin[I]   = sum_B din                         (the lower layer's bias gradient)
     * The values of dense_backward, act_backward(VAE_ACT_RELU, out = in) and
     * the lower layer's dense_backward bias sum; din must not be NULL; dbin,
     * dw and db may be. The lower layer's own backward then runs with db = NULL. */
    void (*dense_backward_relu)(vae_backend *be, real *din, real *dbin, real *dw, real *db,
                                const real *dout, const real *in, const void *mask,
                                const real *w, int B, int I, int O);
    /* out[B,cout,hout,wout] = conv(in[B,cin,hin,win], w[cout,cin,k,k]) + b[cout] */
    void (*conv2d_forward)(vae_backend *be, real *out, const real *in, const real *w,
                           const real *b, const vae_conv_geom *g, int B);
    void (*conv2d_backward)(vae_backend *be, real *din, real *dw, real *db, const real *dout,
                            const real *in, const real *w, const vae_conv_geom *g, int B);
    /* out[B,cout,hout,wout] = convT(in[B,cin,hin,win], w[cin,cout,k,k]) + b[cout] */
    void (*convt2d_forward)(vae_backend *be, real *out, const real *in, const real *w,
                            const real *b, const vae_convt_geom *g, int B);
    void (*convt2d_backward)(vae_backend *be, real *din, real *dw, real *db, const real *dout,
                             const real *in, const real *w, const vae_convt_geom *g, int B);
    /* Convolution / transposed convolution + activation fused (optional: NULL
     * means the model issues the two ops): out = act(conv(in, w) + b), the
     * values of conv2d_forward (convt2d_forward) followed by act_forward(act,
     * slope) in place on out. */
    void (*conv2d_act_forward)(vae_backend *be, real *out, const real *in, const real *w,
                               const real *b, const vae_conv_geom *g, int B, vae_act act,
                               real slope);
    void (*convt2d_act_forward)(vae_backend *be, real *out, const real *in, const real *w,
                                const real *b, const vae_convt_geom *g, int B, vae_act act,
                                real slope);
    /* The backward of an activation whose input is the output of a layer with
     * a per-channel bias (conv or convT, out [B, C, HW]), with that layer's
     * bias gradient (optional: NULL means act_backward, then the layer's own
     * backward computes db):
     *   din[B,C,HW] = dout * act'(out)          (act_backward; din == dout allowed)
     *   db[C]       = sum over b, hw of din      (as conv2d_backward's db)
     * The lower layer's backward then runs with db = NULL. */
    void (*act_backward_bias)(vae_backend *be, real *din, real *db, const real *dout,
                              const real *out, int B, int C, int HW, vae_act act, real slope);
    /* out[n] = act(in[n]); in-place (out == in) allowed */
    void (*act_forward)(vae_backend *be, real *out, const real *in, size_t n, vae_act act,
                        real slope);
    /* din[n] = dout[n] * act'(.) computed from the forward *output*; in-place allowed */
    void (*act_backward)(vae_backend *be, real *din, const real *dout, const real *out,
                         size_t n, vae_act act, real slope);

    /* ---- fused VAE ops ----
     * The values that change from step to step (noise subsequence, KL
     * weight, batch offset, Adam's bias corrections, step index) come from a
     * vae_step_vals block `sv` in backend memory (vae_math.h), never from
     * arguments, so a step can be replayed as a captured graph. */
    /* head[B,2L] holds mu = head[:, :L], lv = head[:, L:].
     * z[B,L] = mu + exp(lv/2) eps, eps[b*L+l] = vae_normal_at(seed, stream, sv->sub, b*L+l). */
    void (*reparam_forward)(vae_backend *be, real *z, const real *head, int B, int L,
                            uint64_t seed, uint32_t stream, const vae_step_vals *sv);
    /* KL + reparameterisation backward in one pass:
     *   kl[B]       = sum_l kl_term(mu, lv)                       (per sample)
     *   dhead[B,2L] = (dz through reparam) + sv->kl_scale * dKL    (dz may be NULL: AE/no decoder grad)
     * eps is regenerated from the same (seed, stream, sv->sub). */
    void (*kl_backward)(vae_backend *be, real *dhead, real *kl, const real *dz, const real *head,
                        int B, int L, uint64_t seed, uint32_t stream, const vae_step_vals *sv);
    /* Per-sample sum over l of log q(z|x) - log p(z), for importance weighting
     * (eps from (seed, stream, sv->sub)). */
    void (*log_q_minus_log_p)(vae_backend *be, real *out, const real *z, const real *head, int B,
                              int L, uint64_t seed, uint32_t stream, const vae_step_vals *sv);
    /* Reconstruction loss and its gradient in one pass:
     *   recon[B]  = sum_d l(out[b,d], x[b,d]) (+ D/2 log(2 pi sigma^2) for Gaussian)
     *   dout[B,D] = grad_scale * dl/dout      (dout may be NULL: loss only) */
    void (*recon_loss)(vae_backend *be, real *dout, real *recon, const real *out, const real *x,
                       int B, int D, vae_likelihood lik, real sigma, real grad_scale);

    /* ---- reductions (deterministic order) ---- */
    /* *acc += sum_i v[i] (acc is one double in backend memory) */
    void (*sum_into)(vae_backend *be, double *acc, const real *v, size_t n);
    /* *acc = sum_i v[i]^2 */
    void (*sumsq)(vae_backend *be, double *acc, const real *v, size_t n);
    /* Optional (NULL: two sum_into calls): *acc0 += sum v0 and *acc1 += sum
     * v1, the bits of sum_into(acc0, v0, n0) then sum_into(acc1, v1, n1);
     * the CUDA backend runs a step's two loss sums as one launch. */
    void (*sum2_into)(vae_backend *be, double *acc0, const real *v0, size_t n0, double *acc1,
                      const real *v1, size_t n1);

    /* ---- optimizer ---- */
    /* Adam over the flat parameter buffer, with the bias corrections
     * sv->bc1, sv->bc2 (backend memory). gnorm2 (backend memory) holds
     * ||g||^2 from sumsq; with clip > 0 the gradient is scaled by
     * min(1, clip / (sqrt(gnorm2) + 1e-6)) (torch.nn.utils.clip_grad_norm_).
     * *bad (backend memory, one int) is the step's flag word, in training
     * state[VAE_STEP_FLAGS] of step_commit's block (vae_math.h): if it has
     * VAE_STEP_HALTED set, nothing is read or written; else, if gnorm2 is not
     * finite, the step is skipped and *bad = VAE_STEP_BAD (1). A skipped step
     * leaves parameters and moments unchanged, bit for bit. */
    void (*adam_step)(vae_backend *be, real *p, const real *g, real *m, real *v, size_t n,
                      const vae_adam_hp *hp, real clip, const double *gnorm2, int *bad,
                      const vae_step_vals *sv);
    /* Open a training step: *sv = the block of step sv->next
     * (vae_step_begin: every field from the plan, next advanced). */
    void (*step_begin)(vae_backend *be, vae_step_vals *sv, const vae_step_plan *plan);
    /* Close training step sv->step (0-based) with sv->rows images, after adam_step:
     * acc (double[VAE_COMMIT_ACC_N]) and state (int[VAE_STEP_STATE_N]) are
     * backend memory, laid out as vae_math.h documents. A good step adds its
     * sums acc[STEP_RECON], acc[STEP_KL] and its images to the epoch's
     * acc[RECON], acc[KL], acc[IMAGES]; a bad one (flag set by adam_step) is
     * counted instead, and the (max_bad + 1)-th sets VAE_STEP_HALTED, after
     * which adam_step and step_commit change nothing. Clears the step's flag
     * and its sums. The host need not look: it reads the state when it likes
     * (vae_step_commit is the reference; the CUDA backend runs it in one
     * thread). */
    void (*step_commit)(vae_backend *be, double *acc, int *state, const vae_step_vals *sv,
                        int max_bad);
    /* acc_dst[0 .. VAE_COMMIT_ACC_N) = acc[..], state_dst[0 .. VAE_STEP_STATE_N) =
     * state[..], in stream order: a copy that later steps do not touch, for
     * download_async (whose source must stay unmodified until copy_wait). */
    void (*step_snapshot)(vae_backend *be, double *acc_dst, int *state_dst, const double *acc,
                          const int *state);

    /* ---- data ---- */
    /* x[B,D] = data[idx[sv->row0 + b], :] / 255 — data [N,D] uint8 and idx
     * int32 in backend memory */
    void (*gather_batch)(vae_backend *be, real *x, const uint8_t *data, const int32_t *idx,
                         const vae_step_vals *sv, int B, int D);
    /* px[n] = vae_to_u8(out[n], lik == BERNOULLI) */
    void (*to_u8)(vae_backend *be, uint8_t *px, const real *out, size_t n, vae_likelihood lik);
    /* z[n] = vae_normal_at(seed, stream, sub, first + i) */
    void (*normal_fill)(vae_backend *be, real *z, size_t n, uint64_t seed, uint32_t stream,
                        uint64_t sub, uint64_t first);
    /* z[k, l] = vae_latent_elem(spec, vec, first + k, l) for k < n, l < spec->L
     * (z [n, L] and vec in backend memory; vec may be NULL for PRIOR) */
    void (*latent_fill)(vae_backend *be, real *z, int n, int64_t first,
                        const vae_latent_spec *spec, const real *vec);
    /* x[i] = vae_round_mantissa(x[i], bits), in place (reduced-precision decoding) */
    void (*round_mantissa)(vae_backend *be, real *x, size_t n, int bits);

    /* ---- optional hooks: NULL means unsupported; callers check first ---- */
    /* Size the backend memory up front so that allocations totalling `bytes`
     * more can be made (count each buffer rounded up to 256 bytes). CUDA: the
     * arena is one cudaMalloc; without reserve() the first alloc() takes 3/4
     * of the free device memory (or $VAE_CUDA_ARENA_MB MiB). When no buffer
     * is live, reserve() re-creates the arena at the new size. Returns VAE_OK,
     * or VAE_ENOMEM with the bytes needed and available. */
    int (*reserve)(vae_backend *be, size_t bytes);
    /* Page-locked host memory, for download_async to be truly asynchronous.
     * NULL + vae_error_set on failure. */
    void *(*host_alloc)(vae_backend *be, size_t bytes);
    void (*host_free)(vae_backend *be, void *p);
    /* Copy src (backend memory) to dst (host) after all work issued so far,
     * on a separate copy stream, without waiting. dst must stay valid and
     * src unmodified — by the host or by work issued afterwards — until
     * copy_wait() returns (use two buffers to overlap compute and copy). */
    void (*download_async)(vae_backend *be, void *dst, const void *src, size_t bytes);
    /* Wait for every download_async issued so far. */
    void (*copy_wait)(vae_backend *be);
    /* Math mode of the dense and conv layers: bits = 23 is IEEE fp32 (the
     * default, FMA only); bits < 23 allows tensor cores (TF32), whose inputs
     * are exact when the caller has rounded them to <= 10 mantissa bits.
     * NULL on the CPU backend, where fp32 on rounded inputs is already exact. */
    int (*set_precision)(vae_backend *be, int bits);
    /* Bytes of backend memory held in all (CUDA: the arena's size), 0 if none
     * yet. For the memory report at the start of a run. */
    size_t (*arena_bytes)(vae_backend *be);
    /* Bytes of the ReLU mask dense_relu_forward may write for a [B, O]
     * output (the caller allocates it, 16-byte aligned: alloc() is); NULL
     * hook or 0: the backend wants none, pass mask = NULL. CUDA: cuBLASLt's
     * bit-mask, a column-major bit matrix of O rows and B columns whose
     * leading dimension is O rounded up to a multiple of 128 bits, i.e.
     * vae_relu_mask_bytes(B, O) = B * 16 * ceil(O / 128). */
    size_t (*relu_mask_bytes)(vae_backend *be, int B, int O);
    /* Concurrent weight gradients (optional; NULL: every op in issue order).
     * side_begin(): the ops issued from here to side_end() form a side
     * segment, which starts after everything issued before side_begin() and
     * may run concurrently with the ops issued after side_end() (CUDA: on a
     * second stream, with its own library handles and scratch); the side
     * segments run one after another, in issue order. side_wait(be, keep):
     * the ops issued after it start only after every side segment but the
     * newest `keep` has finished (keep = 0: all of them; the end of a
     * backward pass). The caller orders the memory: a side segment reads and
     * writes only what nothing issued concurrently with it writes. Results
     * are the same, bit for bit, as without segments. */
    void (*side_begin)(vae_backend *be);
    void (*side_end)(vae_backend *be);
    void (*side_wait)(vae_backend *be, int keep);
    /* Graphs (CUDA graphs): graph_capture records the work that fn(arg)
     * issues, without running it, into a graph that graph_launch re-issues
     * with one call, each launch doing what fn(arg) would have issued then.
     * fn must issue only backend ops on memory that stays allocated, with
     * everything that varies between launches in backend memory (as
     * vae_step_vals); no upload, download or sync. Run fn once uncaptured
     * first, so that lazily made state (cuDNN plans) exists. Returns NULL +
     * vae_error_set if the capture failed; then nothing of fn ran. */
    void *(*graph_capture)(vae_backend *be, void (*fn)(void *arg), void *arg);
    void (*graph_launch)(vae_backend *be, void *graph);
    void (*graph_free)(vae_backend *be, void *graph);
};

/* B * 16 * ceil(O / 128): the size of cuBLASLt's ReLU bit-mask for a [B, O]
 * dense output (relu_mask_bytes); 0 for B <= 0 or O <= 0. */
static inline size_t vae_relu_mask_bytes(int B, int O) {
    if (B <= 0 || O <= 0) return 0;
    return (size_t)B * 16u * (((size_t)O + 127u) / 128u);
}

/* be->sum2_into, or the two sum_into calls it stands for */
static inline void vae_sum2_into(vae_backend *be, double *acc0, const real *v0, size_t n0,
                                 double *acc1, const real *v1, size_t n1) {
    if (be->sum2_into) {
        be->sum2_into(be, acc0, v0, n0, acc1, v1, n1);
    } else {
        be->sum_into(be, acc0, v0, n0);
        be->sum_into(be, acc1, v1, n1);
    }
}

typedef enum { VAE_DEVICE_AUTO = 0, VAE_DEVICE_CPU = 1, VAE_DEVICE_CUDA = 2 } vae_device;

/* CPU backend with `threads` BLAS/worker threads (0 = all cores). */
vae_backend *vae_backend_cpu_create(int threads);
/* CUDA backend on GPU `device` (only in builds with VAE_HAVE_CUDA). NULL and
 * vae_error_get() on failure. */
vae_backend *vae_backend_cuda_create(int device);

/* Picks and creates a backend. With AUTO and no usable GPU, prints once to
 * stderr that it runs on the CPU and why. CUDA without a usable GPU is an
 * error (NULL, vae_error_get() says why). */
vae_backend *vae_backend_create(vae_device dev, int threads);
/* 1 if this build has the CUDA backend and a GPU is usable; else 0 and a
 * reason in `why` (may be NULL). */
int vae_cuda_available(char *why, size_t why_len);
/* One line on GPU `device`: name, compute capability, SMs, memory, and the
 * driver, runtime, cuDNN and cuBLAS versions; or "not available: why".
 * Returns 1 if a GPU was described. */
int vae_cuda_describe(int device, char *out, size_t len);

#ifdef __cplusplus
}
#endif
#endif /* VAE_BACKEND_H */

/* backend_cuda.c — the CUDA implementation of the vae_backend table.
 *
 * Host side in C11: CUDA runtime, cuBLAS and cuDNN through their C APIs, our
 * kernels through the extern "C" launchers of src/kernels/vae_kernels.cuh.
 * Compiled only in the float build with VAE_HAVE_CUDA.
 *
 * Streams. All work goes to one compute stream (non-blocking, so nothing
 * else in the process serialises with it); cuBLAS and cuDNN are bound to it.
 * A second stream with two events carries download_async() copies, so the
 * sampler can copy one batch back while the next is computed.
 * With $VAE_CUDA_SIDE=1 a third, the side stream, runs the side segments of
 * vae_backend.h (the model puts each layer's weight gradient there, beside
 * the chain of input gradients on the compute stream), with its own cuBLAS
 * and cuDNN handles, cuBLAS workspace, bias partials and half of the conv
 * workspace, ordered by events ("side segments" below). Off by default
 * until it is measured on a GPU.
 *
 * Memory: one arena, one cudaMalloc, laid out as
 *
 *   [ scratch | buffers from alloc(), bump upward ->  ...  <- cuDNN workspace ]
 *     scratch: the reduction partials (VAE_CUDA_REDUCE_SCRATCH doubles),
 *              the bias gradients' partials (VAE_CUDA_BIAS_SCRATCH doubles;
 *              both end in completion counters, so the scratch is zeroed
 *              when the arena is made) and
 *              cuBLAS's workspace (cublasSetWorkspace, 32 MiB; also passed to
 *              every cublasLtMatmul), so cuBLAS never allocates behind our
 *              back; with the side stream, a second bias scratch and cuBLAS
 *              workspace for it;
 *     buffers: 256-byte aligned bump allocation. release() pops LIFO: freeing
 *              the newest live buffer lowers the bump pointer (past any older
 *              buffers already released); freeing an older one only marks it,
 *              and its bytes return when everything above it is released.
 *              vae_model_free() releases in reverse order, so a model can be
 *              rebuilt (another batch size) in the same arena.
 *     workspace: one cuDNN workspace shared by all convolutions, grown
 *              downward from the end to the largest need of the algorithms
 *              chosen so far (it is scratch, so growing needs no copy); with
 *              the side stream, two halves of that size from the start, the
 *              compute stream's below the side stream's (a plan made before
 *              the first side segment, a forward's, then chose within the
 *              half it will have).
 * The arena is made by reserve() or, failing that, at the first alloc() with
 * 3/4 of the free device memory ($VAE_CUDA_ARENA_MB overrides). After that
 * the training step never calls cudaMalloc/cudaFree.
 *
 * Convolutions: cuDNN's legacy API. A plan per distinct geometry (conv view
 * + batch) holds the tensor/filter/convolution descriptors and, per
 * direction, the algorithm, chosen at first use among the *deterministic*
 * algorithms whose workspace fits (the project requires run-to-run identical
 * results) — by timing (cudnnFind*AlgorithmEx, default) or by cuDNN's
 * heuristics ($VAE_CUDNN_ALGO=heuristic: no timing, so the same choice in
 * every process, which keeps resumed runs bit-identical to uninterrupted
 * ones). The two backward directions also have a deterministic form of our
 * own (im2col / col2im around one cuBLAS GEMM, "GEMM form" below), timed
 * against cuDNN's pick and taken when faster; the data gradient a third, a
 * direct kernel (src/kernels/convt.cu, $VAE_CONV_DIRECT), which as a
 * transposed convolution's forward also adds the bias and applies the
 * activation above it (convt_forward). The forward likewise has a direct
 * kernel of ours (src/kernels/convf.cu, the same $VAE_CONV_DIRECT), timed
 * against cuDNN's pick, which adds the bias and applies the activation of
 * conv2d_forward / conv2d_act_forward (conv_forward). A transposed convolution is
 * the adjoint of a convolution with the
 * same weight viewed as a conv filter [K = cin, C = cout, k, k]:
 *   convT forward        = cudnnConvolutionBackwardData (dy = in, dx = out)
 *   convT backward data  = cudnnConvolutionForward      (x = dout, y = din)
 *   convT backward filter= cudnnConvolutionBackwardFilter (x = dout, dy = in)
 * and its output padding is implied by the output tensor size.
 *
 * Precision: fp32 by default. cuDNN runs with CUDNN_FMA_MATH (on Ampere and
 * later CUDNN_DEFAULT_MATH permits TF32 tensor cores for float convolutions,
 * which would cost ~3 decimal digits); cuBLAS with CUBLAS_DEFAULT_MATH, which
 * never uses TF32 for cublasSgemm; cuBLASLt with CUBLAS_COMPUTE_32F.
 * set_precision (`vae sample --precision tf32|bf16`, whose caller rounds
 * weights and layer inputs first) switches all three to tensor-op math
 * (cuBLASLt: CUBLAS_COMPUTE_32F_FAST_TF32) for the plans made from then on.
 *
 * Errors: a failing library call is a device fault and aborts through
 * CUDA_CHECK / CUBLAS_CHECK / CUDNN_CHECK (common.cuh), naming the statement,
 * the location and the library's message. The recoverable failures —
 * no usable GPU at creation, an arena too small — return NULL/an error code
 * with vae_error_set(), as the table's contract says.
 *
 * Per-step values: the ops that depend on the step (gather_batch,
 * reparam_forward, kl_backward, log_q_minus_log_p, adam_step, step_commit)
 * take a device pointer to a vae_step_vals block and their kernels read the
 * values from it; step_begin advances the block on the device (one thread).
 * So the launches of a step are the same from step to step, and a step can
 * be captured once and replayed.
 *
 * Graphs: graph_capture puts the compute stream into capture
 * (cudaStreamBeginCapture, thread-local mode: only this thread's unsafe calls
 * are refused), calls fn(arg) — whose kernels, cuBLAS GEMMs and cuDNN
 * convolutions are recorded, not run — ends the capture, instantiates the
 * graph and returns the cudaGraphExec_t; graph_launch is one cudaGraphLaunch
 * on the compute stream, in order with everything else issued there. What
 * must not happen inside a capture, and why it does not:
 *   - cuDNN algorithm choice (cudnnFind* runs convolutions and synchronises)
 *     and the workspace growth it may bring happen at a plan's first use;
 *     the caller runs fn once uncaptured first, so every plan fn needs
 *     exists. A plan missing during a capture is refused softly: the op is
 *     not recorded and graph_capture returns NULL with a message, as it does
 *     for an upload, download, sync, download_async or copy_wait issued from
 *     fn. A graph captured earlier survives a later plan's growth: the
 *     workspace grows downward, so the old one lies inside the new one, and
 *     no buffer is ever placed there;
 *   - cuBLAS allocates nothing: its workspace is ours (cublasSetWorkspace in
 *     the arena), which is what makes cuBLAS capture-safe; cuBLASLt gets the
 *     same workspace with each call, and its plans (descriptors and the
 *     heuristic's algorithm) are host-side, so one may be made mid-capture;
 *   - no cudaMalloc: the arena exists before any buffer does.
 * A graph keeps raw pointers into the arena, so the buffers fn used must
 * stay allocated while the graph lives. $VAE_CUDA_GRAPH=0 leaves
 * graph_capture NULL, so callers run every step eagerly.
 *
 * Dense layers: cuBLASLt with bias (and ReLU) epilogues, where cuBLASLt
 * offers them.
 * In cuBLAS's column-major terms (row-major [r, c] arrays are column-major
 * [c, r] matrices; the same transposes as the cublasSgemm calls):
 *   forward   out^T[O,B] = op_T(w-view[I,O]) in^T[I,B] + b:    m = O, n = B,
 *             k = I, A = w (T, lda I), B = in (N, ldb I), D = out (ldd O);
 *             CUBLASLT_EPILOGUE_BIAS adds a vector of m = O entries, one per
 *             row of D and broadcast over its columns: exactly b.
 *   backward  dw^T[I,O] = in^T[I,B] op_T(dout^T[O,B]):         m = I, n = O,
 *             k = B, A = in (N, lda I), B = dout (T, ldb O), D = dw (ldd I);
 *             CUBLASLT_EPILOGUE_BGRADB writes the sums over k of op(B), one
 *             per column of D: sum_b dout[b, o] = db[o]. (BGRADA would sum
 *             op(A) over k per row of D, i.e. sum_b in[b, i]: not a bias
 *             gradient here.) This is the combination NVIDIA's Apex (and
 *             flash-attention's fused_dense) use for Linear's weight and
 *             bias gradient (N, T with A = input, B = grad output).
 *   din stays one cublasSgemm (no epilogue to fuse) ...
 * ... except in a dense + ReLU pair (the model's dense_relu_forward and
 * dense_backward_relu, vae_backend.h):
 *   forward   the forward GEMM above with CUBLASLT_EPILOGUE_RELU_AUX_BIAS:
 *             out = relu(acc + b), and the ReLU bit-mask of D (cublasLt.h:
 *             a column-major bit matrix, rows of D = O by columns = B, leading
 *             dimension in bits a multiple of 128, >= O: vae_relu_mask_bytes
 *             = B * 16 * ceil(O / 128)); CUBLASLT_EPILOGUE_RELU_BIAS when no
 *             mask is wanted (mask NULL: the layer above is not dense).
 *   backward  of the dense layer *above* such a pair (its input `in` is the
 *             pair's output; I here is the pair's O):
 *             din^T[I,B] = w-view[I,O] dout^T[O,B]:            m = I, n = B,
 *             k = O, A = w (N, lda I), B = dout (N, ldb O), D = din (ldd I);
 *             CUBLASLT_EPILOGUE_DRELU_BGRAD multiplies D by the mask the
 *             pair's forward wrote (I rows by B columns: the same matrix)
 *             and writes the sums of the result over its columns, one per
 *             row of D: sum_b din[b, i], the pair's bias gradient. dw and db
 *             of the layer above as before.
 *   The backward reads a mask only when the host-side record (lt_mask_*)
 *   says the forward that was issued last for it wrote it with RELU_AUX_BIAS
 *   for this very input; otherwise (the forward fell back, the mask is not
 *   16-byte aligned (LT_MASK_ALIGN), ...) it is cublasSgemm + the ReLU-backward
 *   kernel from `in` + the bias-gradient kernel, which is what every refused
 *   ReLU epilogue falls back to: the unfused ops, kernels of act.cu and
 *   bias.cu. The ReLU derivative is 1 where the mask bit is set; act_backward
 *   takes it from out > 0. They differ: on an H200 (cuBLAS 13.1) the bit is
 *   set for a pre-activation of exactly 0 too, so an output of exactly 0
 *   passes its gradient, where PyTorch's and our subgradient is 0. Hence the
 *   mask and this backward are opt-in ($VAE_LT_DRELU=1; relu_mask_bytes is 0
 *   without it, so the model allocates no masks and the pair's forward is
 *   RELU_BIAS).
 * A plan per (kind, B, I, O, tf32, alignment of A, B, D, the bias and the
 * mask) holds
 * the matmul descriptor (CUBLAS_COMPUTE_32F, or CUBLAS_COMPUTE_32F_FAST_TF32
 * after set_precision(tf32); scale type R_32F), the three layouts and one
 * algorithm: of the (up to LT_HEUR_MAX) cublasLtMatmulAlgoGetHeuristic
 * offers, the fastest on the plan's first call, timed there (lt_plan_time),
 * or with $VAE_CUDNN_ALGO=heuristic, for a plan made during a capture and
 * for a large GEMM, the heuristic's first (with the heuristic choice, the
 * same one in every process). Every
 * candidate is deterministic. Its preference offers the cuBLAS
 * workspace we already own (CUBLAS_WS_BYTES in the arena's scratch: cuBLAS
 * and cuBLASLt use it one after the other on the one stream), states the
 * real alignment of each pointer (the default assumes 256 bytes; parameters
 * are carved from the flat buffer at float offsets) and allows no in-place
 * split-K reduction (see LT_REDUCTION_OK). The bias pointer changes from
 * call to call: it is set on the plan's descriptor before each cublasLtMatmul
 * (a host-side attribute, fine during a graph capture; a plan may even be
 * made during one, since the heuristic query is host-only); so is the
 * mask pointer (CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER; its leading
 * dimension CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD is fixed by the plan's shape,
 * the data type left at the bit-mask default). The bias / bias
 * gradient must be 16-byte aligned (LT_BIAS_ALIGN), checked per call. If a
 * plan cannot be made, the heuristic offers no algorithm, or cublasLtMatmul
 * refuses (e.g. CUBLAS_STATUS_NOT_SUPPORTED), the plan is marked unusable,
 * stderr says why (a few lines per backend at most) and the op runs as
 * before: cublasSgemm + our bias kernel (bias.cu). So does every call with
 * $VAE_CUBLASLT=0 (read at creation), which is how the two paths are
 * compared on one GPU (test_cuda_ops). In the shipped configs (configs/
 * *.ini: parameter table of model.c, weight then bias per layer, from a
 * 256-byte aligned buffer) every dense bias starts at a float offset that
 * is a multiple of 8, i.e. is at least 32-byte aligned, so every dense layer
 * takes the epilogue path, if cuBLASLt supports it on the GPU.
 * Numerics: the epilogue adds b to the fp32 accumulator (the kernel adds it
 * to the stored result: the same float operation); BGRADB sums dout in fp32
 * inside the GEMM where the kernel sums in double, so db agrees with the
 * CPU to the GEMM tolerance of a k = B reduction, not to 1 ulp; so does the
 * DRELU_BGRAD bias gradient. The ReLU epilogues compare and select as the
 * kernel does.
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cublasLt.h>

#include "common.cuh"
#include "vae_backend.h"
#include "vae_kernels.cuh"

_Static_assert(sizeof(real) == sizeof(float), "the CUDA backend is float-only");

#define ARENA_ALIGN ((size_t)256)
#define CUBLAS_WS_BYTES ((size_t)32 << 20)  /* cuBLAS's recommendation for Hopper */
#define CONV_WS_CAP ((size_t)256 << 20)     /* most workspace offered to one cuDNN algorithm */
#define DEVICE_HEADROOM ((size_t)256 << 20) /* left outside a reserve()d arena */

/* ------------------------------------------------------------ context */

typedef struct {
    size_t off; /* from the arena base */
    int freed;
} arena_rec;

/* One convolution geometry in conv terms: x [n, c, h, w] -> y [n, k, ho, wo]
 * with filter [k, c, r, r]. */
typedef struct {
    int n, c, h, w, k, r, ho, wo, stride, pad;
    int tf32; /* math type: CUDNN_TENSOR_OP_MATH (TF32 allowed) or CUDNN_FMA_MATH */
    cudnnTensorDescriptor_t xd, yd;
    cudnnFilterDescriptor_t fd;
    cudnnConvolutionDescriptor_t cd;
    int have_fwd, have_bwd_data, have_bwd_filter;
    int wgrad_ns, dgrad_ns; /* > 0: that gradient in GEMM form, slices of so many images */
    int dgrad_direct;       /* the data gradient by the direct kernel (conv_direct_run) */
    int fwd_direct;         /* the forward by the direct kernel (conv_direct_run) */
    int wgrad_direct;       /* the weight gradient by the direct kernel (convw.cu) */
    cudnnConvolutionFwdAlgo_t fwd;
    cudnnConvolutionBwdDataAlgo_t bwd_data;
    cudnnConvolutionBwdFilterAlgo_t bwd_filter;
} conv_plan;

/* End events of the side segments kept (a ring: waiting on a slot that a
 * later segment re-recorded waits longer, never too little). */
#define SIDE_EVENTS 4

/* ReLU masks remembered at once (lt_mask_*); one per fused dense + relu pair
 * below a dense layer. A mask pushed out only costs that layer the fallback. */
#define LT_MASKS_MAX 32

typedef struct {
    int device;
    cudaStream_t stream;      /* all compute */
    cudaStream_t copy_stream; /* download_async */
    cudaEvent_t ev_issued;    /* "work issued so far" on the compute stream */
    cublasHandle_t blas;
    cublasLtHandle_t lt; /* dense layers with bias epilogues (lt_plan) */
    cudnnHandle_t dnn;
    /* Side segments ($VAE_CUDA_SIDE=1; side_begin / side_end / side_wait,
     * "Side segments" in the header comment): lane 0 is the stream and
     * handles above, lane 1 a second compute stream with its own cuBLAS and
     * cuDNN handles, cuBLAS workspace, bias partials and half of the conv
     * workspace. stream, blas, dnn and bias_partials are always those of the
     * lane in use (lane_use). */
    int side_on, in_side;
    struct cuda_lane {
        cudaStream_t stream;
        cublasHandle_t blas;
        cudnnHandle_t dnn;
        double *bias_partials;
    } lanes[2];
    cudaEvent_t ev_fork;             /* main's work issued before a segment */
    cudaEvent_t ev_seg[SIDE_EVENTS]; /* the end of segment k: ev_seg[k % SIDE_EVENTS] */
    long long nseg, nseg_waited;     /* segments issued; main has waited for the first nseg_waited */
    int use_find; /* cuDNN algorithm choice by timing (1) or heuristics (0) */
    int conv_gemm;           /* CONV_GEMM_*: the GEMM forms of the conv gradients */
    int conv_gemm_slice_max; /* $VAE_CONV_GEMM_SLICE (0: no cap) */
    int conv_direct; /* CONV_GEMM_*: the direct forward and data-gradient kernels ($VAE_CONV_DIRECT) */
    int tf32;     /* set_precision: tensor-core TF32 math allowed (0: fp32 FMA only) */

    /* arena */
    char *base;
    size_t size;    /* bytes */
    size_t floor_;  /* end of the backend's own scratch */
    size_t top;     /* bump pointer: end of the newest live buffer */
    size_t ws_lo;   /* start of the cuDNN workspace; == size when none */
    size_t ws_need; /* largest workspace of the chosen algorithms */
    arena_rec *recs;
    int nrec, caprec;
    double *partials; /* [VAE_CUDA_REDUCE_SCRATCH] reduction scratch */
    double *bias_partials; /* [VAE_CUDA_BIAS_SCRATCH] the bias gradients' pass-1 scratch */

    conv_plan **plans;
    int nplan, capplan;

    /* cuBLASLt dense plans; use_lt: 0 with $VAE_CUBLASLT=0; use_lt_drelu:
     * the ReLU mask and the DRELU_BGRAD backward, only with $VAE_LT_DRELU=1
     * (its mask passes the gradient at exactly 0: the header comment) */
    int use_lt, use_lt_drelu;
    int dnn_verbose; /* $VAE_CUDNN_VERBOSE=1: the algorithm searches on stderr */
    struct lt_plan **lt_plans;
    int nlt, caplt;
    int lt_notes;          /* fallback lines printed so far (LT_NOTES_MAX) */
    int lt_noted_unaligned; /* the unaligned-bias line was printed */
    int lt_noted_unaligned_mask; /* the unaligned-mask line was printed */
    /* ReLU masks written by a RELU_AUX_BIAS forward and not yet read by the
     * DRELU_BGRAD backward (lt_mask_*): host-side, set when the op is issued */
    struct lt_mask_rec {
        const void *mask, *out; /* the mask, and the forward output it describes */
        int B, O;
    } lt_masks[LT_MASKS_MAX];
    int lt_mask_next; /* round-robin slot when the table is full */

    /* graph_capture in progress: ops that cannot be captured refuse, and the
     * first refusal is kept for the error message */
    int capturing;
    char capture_err[160];
} cuda_ctx;

static cuda_ctx *ctx_of(vae_backend *be) { return (cuda_ctx *)be->ctx; }

static size_t align_up(size_t x) { return (x + ARENA_ALIGN - 1) & ~(ARENA_ALIGN - 1); }

/* ------------------------------------------------- recoverable errors */

static int soft_cuda(cudaError_t e, const char *what) {
    if (e == cudaSuccess) return 0;
    (void)cudaGetLastError(); /* clear a non-sticky error */
    vae_error_set(VAE_EDEVICE, "CUDA backend: %s: %s", what, cudaGetErrorString(e));
    return 1;
}
static int soft_cublas(cublasStatus_t s, const char *what) {
    if (s == CUBLAS_STATUS_SUCCESS) return 0;
    vae_error_set(VAE_EDEVICE, "CUDA backend: %s: %s", what, cublasGetStatusString(s));
    return 1;
}
static int soft_cudnn(cudnnStatus_t s, const char *what) {
    if (s == CUDNN_STATUS_SUCCESS) return 0;
    vae_error_set(VAE_EDEVICE, "CUDA backend: %s: %s", what, cudnnGetErrorString(s));
    return 1;
}

/* Inside graph_capture: 1 (and the first such `what` noted) if the caller
 * must skip an op that cannot be captured; the capture then fails softly.
 * Outside a capture: 0. */
static int capture_refuse(cuda_ctx *c, const char *what) {
    if (!c->capturing) return 0;
    if (!c->capture_err[0]) snprintf(c->capture_err, sizeof c->capture_err, "%s", what);
    return 1;
}

/* ------------------------------------------------------------- arena */

/* The arena's scratch: the reduction partials, then per lane (one, or two
 * with side segments) the bias partials and cuBLAS's workspace. */
static size_t lane_scratch_bytes(void) {
    return align_up(VAE_CUDA_BIAS_SCRATCH * sizeof(double)) + align_up(CUBLAS_WS_BYTES);
}
static size_t lane_scratch_off(int lane) {
    return align_up(VAE_CUDA_REDUCE_SCRATCH * sizeof(double)) +
           (size_t)lane * lane_scratch_bytes();
}
static size_t scratch_bytes(const cuda_ctx *c) { return lane_scratch_off(c->side_on ? 2 : 1); }

/* A lane's bias partials and cuBLAS's (and cuBLASLt's) workspace. */
static double *lane_bias_partials(const cuda_ctx *c, int lane) {
    return (double *)(void *)(c->base + lane_scratch_off(lane));
}
static void *lane_blas_ws(const cuda_ctx *c, int lane) {
    return c->base + lane_scratch_off(lane) + align_up(VAE_CUDA_BIAS_SCRATCH * sizeof(double));
}
/* the lane in use's */
static void *blas_ws(const cuda_ctx *c) { return lane_blas_ws(c, c->in_side); }

/* Bytes of conv workspace the arena holds for a need of `need` per lane. */
static size_t ws_region(const cuda_ctx *c, size_t need) {
    return (c->side_on ? 2 : 1) * align_up(need);
}

/* Makes the arena. user_bytes > 0: room for that many bytes of buffers plus
 * scratch, the workspace already needed and up to CONV_WS_CAP of spare for
 * cuDNN; user_bytes == 0: the default size (header comment). */
static int arena_create(cuda_ctx *c, size_t user_bytes) {
    size_t free_b = 0, total_b = 0;
    CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
    size_t fixed = scratch_bytes(c) + ws_region(c, c->ws_need);
    size_t size;
    if (user_bytes > 0) {
        size_t need = fixed + align_up(user_bytes);
        if (need > free_b)
            return vae_error_set(VAE_ENOMEM,
                                 "CUDA arena: %zu bytes needed (%zu for buffers + %zu backend "
                                 "scratch), but only %zu of %zu bytes are free on the device",
                                 need, user_bytes, fixed, free_b, total_b);
        size_t spare = free_b - need > DEVICE_HEADROOM ? free_b - need - DEVICE_HEADROOM : 0;
        size = need + (spare < CONV_WS_CAP ? spare : CONV_WS_CAP);
    } else {
        const char *env = getenv("VAE_CUDA_ARENA_MB");
        if (env && *env) {
            char *end = NULL;
            unsigned long long mb = strtoull(env, &end, 10);
            if (!end || *end || mb == 0 || mb > ((size_t)-1 >> 20))
                return vae_error_set(VAE_EINVAL, "VAE_CUDA_ARENA_MB=\"%s\": expected a positive "
                                     "number of MiB", env);
            size = (size_t)mb << 20;
        } else {
            size = free_b / 4 * 3;
        }
        if (size < fixed + ARENA_ALIGN)
            return vae_error_set(VAE_ENOMEM,
                                 "CUDA arena: %zu bytes is too small (the backend's own scratch "
                                 "takes %zu); %zu of %zu bytes free on the device",
                                 size, fixed, free_b, total_b);
    }
    size &= ~(ARENA_ALIGN - 1);
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, size);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return vae_error_set(VAE_ENOMEM,
                             "CUDA arena: cudaMalloc of %zu bytes failed: %s (%zu of %zu bytes "
                             "free on the device)",
                             size, cudaGetErrorString(e), free_b, total_b);
    }
    /* the reductions' completion counters start at zero (vae_last_block) */
    e = cudaMemsetAsync(p, 0, scratch_bytes(c), c->stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(c->stream);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        (void)cudaFree(p);
        return vae_error_set(VAE_EDEVICE, "CUDA arena: zeroing its scratch failed: %s",
                             cudaGetErrorString(e));
    }
    c->base = (char *)p;
    c->size = size;
    c->partials = (double *)(void *)c->base;
    for (int i = 0; i < (c->side_on ? 2 : 1); i++) {
        c->lanes[i].bias_partials = lane_bias_partials(c, i);
        /* after cublasSetStream, which resets the workspace to cuBLAS's own pool */
        CUBLAS_CHECK(cublasSetWorkspace(c->lanes[i].blas, lane_blas_ws(c, i), CUBLAS_WS_BYTES));
    }
    c->bias_partials = c->lanes[c->in_side].bias_partials;
    c->floor_ = c->top = scratch_bytes(c);
    c->ws_lo = c->size - ws_region(c, c->ws_need);
    return VAE_OK;
}

static void side_join(cuda_ctx *c);

static void arena_free(cuda_ctx *c) {
    if (!c->base) return;
    side_join(c);
    CUDA_CHECK(cudaStreamSynchronize(c->stream));
    CUDA_CHECK(cudaFree(c->base));
    c->base = NULL;
    c->size = c->floor_ = c->top = c->ws_lo = 0;
    c->partials = c->bias_partials = c->lanes[0].bias_partials = c->lanes[1].bias_partials = NULL;
    memset(c->lt_masks, 0, sizeof c->lt_masks); /* no buffer survives the arena */
}

/* Bytes between the bump pointer and the workspace. */
static size_t arena_gap(const cuda_ctx *c) {
    size_t off = align_up(c->top);
    return off < c->ws_lo ? c->ws_lo - off : 0;
}

static void *cuda_alloc(vae_backend *be, size_t bytes) {
    cuda_ctx *c = ctx_of(be);
    if (!c->base && arena_create(c, 0) != VAE_OK) return NULL;
    if (bytes == 0) bytes = 1; /* distinct pointers */
    size_t off = align_up(c->top);
    if (bytes > arena_gap(c)) {
        size_t free_b = 0, total_b = 0;
        CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
        vae_error_set(VAE_ENOMEM,
                      "CUDA arena: cannot allocate %zu bytes: %zu of its %zu bytes are free "
                      "(%zu bytes free on the device of %zu); reserve() the total up front",
                      bytes, arena_gap(c), c->size, free_b, total_b);
        return NULL;
    }
    if (c->nrec == c->caprec) {
        int cap = c->caprec ? 2 * c->caprec : 64;
        arena_rec *r = realloc(c->recs, (size_t)cap * sizeof *r);
        if (!r) {
            vae_error_set(VAE_ENOMEM, "CUDA arena: out of host memory for the allocation table");
            return NULL;
        }
        c->recs = r;
        c->caprec = cap;
    }
    c->recs[c->nrec].off = off;
    c->recs[c->nrec].freed = 0;
    c->nrec++;
    c->top = off + bytes;
    return c->base + off;
}

/* LIFO release (see the header comment); releasing out of order is legal but
 * returns the bytes only once every newer buffer is released too. */
static void cuda_release(vae_backend *be, void *p) {
    cuda_ctx *c = ctx_of(be);
    if (!p) return;
    int i = c->nrec - 1;
    while (i >= 0 && c->base + c->recs[i].off != (char *)p) i--;
    if (i < 0 || c->recs[i].freed)
        vae_panic(__FILE__, __LINE__, "CUDA arena: release of %p, which is not a live buffer", p);
    c->recs[i].freed = 1;
    while (c->nrec > 0 && c->recs[c->nrec - 1].freed) {
        c->top = c->recs[c->nrec - 1].off;
        c->nrec--;
    }
    if (c->nrec == 0) c->top = c->floor_;
}

static int cuda_reserve(vae_backend *be, size_t bytes) {
    cuda_ctx *c = ctx_of(be);
    if (!c->base) return arena_create(c, bytes);
    if (align_up(bytes) <= arena_gap(c)) return VAE_OK;
    if (c->nrec == 0) { /* nothing live: make a bigger one */
        arena_free(c);
        return arena_create(c, bytes);
    }
    return vae_error_set(VAE_ENOMEM,
                         "CUDA arena: reserve(%zu) while %d buffers are live and only %zu of "
                         "%zu bytes are free; reserve() before allocating",
                         bytes, c->nrec, arena_gap(c), c->size);
}

/* ----------------------------------------------------- cuDNN workspace */

/* The lane in use's workspace: [ws_lo, size), or with side segments
 * (side_on) two halves of align_up(ws_need) bytes, main's first. */
static void *ws_ptr(const cuda_ctx *c) {
    if (c->ws_lo >= c->size) return NULL;
    return c->base + c->ws_lo + (c->side_on && c->in_side ? align_up(c->ws_need) : 0);
}
static size_t ws_size(const cuda_ctx *c) {
    return c->side_on ? align_up(c->ws_need) : c->size - c->ws_lo;
}

/* Grow the workspace to hold `bytes` per lane (the caller made sure it fits:
 * search_ws offers at most what fits in both halves). */
static void ws_require(cuda_ctx *c, size_t bytes) {
    if (bytes <= ws_size(c)) {
        if (bytes > c->ws_need) c->ws_need = bytes;
        return;
    }
    size_t region = ws_region(c, bytes);
    VAE_ASSERT(region <= c->size && c->size - region >= align_up(c->top));
    c->ws_lo = c->size - region;
    c->ws_need = bytes;
}

/* Workspace offered to an algorithm search: everything above the buffers
 * (half of it with side segments, so that both lanes can have what a search
 * picks), up to CONV_WS_CAP (or the current workspace, if larger), at the
 * arena's end. The device is idle first: with side segments the search may
 * overlap either lane's workspace and the other lane may have work queued,
 * and the timings that follow should not share the GPU with another
 * stream's work (a sampling run's copy of the previous chunk to the host,
 * when its last, shorter chunk makes new plans). Plan time only. */
static size_t search_ws(const cuda_ctx *c, void **ws) {
    CUDA_CHECK(cudaDeviceSynchronize());
    size_t avail = c->size - align_up(c->top);
    if (c->side_on) avail /= 2;
    size_t cap = ws_size(c) > CONV_WS_CAP ? ws_size(c) : CONV_WS_CAP;
    if (cap > avail) cap = avail;
    cap &= ~(ARENA_ALIGN - 1);
    *ws = cap ? c->base + (c->size - cap) : NULL;
    return cap;
}

/* ------------------------------------------------------- conv plans */

static conv_plan *plan_get(cuda_ctx *c, int n, int ch, int h, int w, int k, int r, int ho, int wo,
                           int stride, int pad) {
    for (int i = 0; i < c->nplan; i++) {
        conv_plan *p = c->plans[i];
        if (p->n == n && p->c == ch && p->h == h && p->w == w && p->k == k && p->r == r &&
            p->ho == ho && p->wo == wo && p->stride == stride && p->pad == pad &&
            p->tf32 == c->tf32)
            return p;
    }
    if (c->nplan == c->capplan) {
        int cap = c->capplan ? 2 * c->capplan : 16;
        conv_plan **np = realloc(c->plans, (size_t)cap * sizeof *np);
        VAE_ASSERT(np);
        c->plans = np;
        c->capplan = cap;
    }
    conv_plan *p = calloc(1, sizeof *p);
    VAE_ASSERT(p);
    p->n = n, p->c = ch, p->h = h, p->w = w, p->k = k, p->r = r;
    p->ho = ho, p->wo = wo, p->stride = stride, p->pad = pad;
    p->tf32 = c->tf32;
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&p->xd));
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&p->yd));
    CUDNN_CHECK(cudnnCreateFilterDescriptor(&p->fd));
    CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&p->cd));
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(p->xd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, n, ch, h, w));
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(p->yd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, n, k, ho, wo));
    CUDNN_CHECK(cudnnSetFilter4dDescriptor(p->fd, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, k, ch, r, r));
    CUDNN_CHECK(cudnnSetConvolution2dDescriptor(p->cd, pad, pad, stride, stride, 1, 1,
                                                CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    CUDNN_CHECK(cudnnSetConvolutionMathType(p->cd, p->tf32 ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH));
    int on, oc, oh, ow;
    CUDNN_CHECK(cudnnGetConvolution2dForwardOutputDim(p->cd, p->xd, p->fd, &on, &oc, &oh, &ow));
    if (on != n || oc != k || oh != ho || ow != wo)
        vae_panic(__FILE__, __LINE__,
                  "conv geometry inconsistent: x [%d,%d,%d,%d] filter [%d,%d,%d,%d] stride %d pad "
                  "%d gives y [%d,%d,%d,%d], expected [%d,%d,%d,%d]",
                  n, ch, h, w, k, ch, r, r, stride, pad, on, oc, oh, ow, n, k, ho, wo);
    c->plans[c->nplan++] = p;
    return p;
}

static void plan_destroy(conv_plan *p) {
    CUDNN_CHECK(cudnnDestroyTensorDescriptor(p->xd));
    CUDNN_CHECK(cudnnDestroyTensorDescriptor(p->yd));
    CUDNN_CHECK(cudnnDestroyFilterDescriptor(p->fd));
    CUDNN_CHECK(cudnnDestroyConvolutionDescriptor(p->cd));
    free(p);
}

/* Index of the first (fastest, or best by heuristics) result that succeeded,
 * is deterministic, runs in fp32 FMA math (or, with tf32, tensor-op math)
 * and fits the workspace; -1 if none. */
#define PICK_ALGO(perf, got, cap, tf32, out)                                               \
    do {                                                                                   \
        (out) = -1;                                                                        \
        for (int i_ = 0; i_ < (got); i_++) {                                               \
            if ((perf)[i_].status == CUDNN_STATUS_SUCCESS &&                               \
                (perf)[i_].determinism == CUDNN_DETERMINISTIC &&                           \
                ((perf)[i_].mathType == CUDNN_FMA_MATH ||                                  \
                 (perf)[i_].mathType == CUDNN_DEFAULT_MATH ||                              \
                 ((tf32) && (perf)[i_].mathType == CUDNN_TENSOR_OP_MATH)) &&               \
                (perf)[i_].memory <= (cap)) {                                              \
                (out) = i_;                                                                \
                break;                                                                     \
            }                                                                              \
        }                                                                                  \
    } while (0)

/* ---- the two gradients of a convolution as GEMMs (src/kernels/conv.cu)
 *
 * With M = N P Q output positions, colT the transposed im2col matrix of x
 * [C R R, M] and dyK the output gradient with n and k swapped [K, M]:
 *   weight gradient   dW [K, C R R] = dyK colT^T   (im2col, swap, GEMM)
 *   data gradient     colT = W^T dyK, then dx = col2im(colT)   (swap, GEMM,
 *                     col2im: each dx element adds its R R taps in order)
 * The data gradient is also the convT's forward. Both add in a fixed order
 * (cuBLAS's GEMM, col2im's loop): deterministic, unlike cuDNN's faster
 * algorithms (atomics); on an H200 both beat cuDNN's deterministic ones for
 * this project's layers (bench/results/2026-11-27-h200-gpu-check.md). They
 * run in slices of images that fit the workspace (the weight gradient adds
 * the slices' GEMMs, beta = 1, in slice order), are offered beside cuDNN's
 * algorithms and timed with them. $VAE_CONV_GEMM=1 takes them wherever the
 * workspace holds one image, =0 never; with $VAE_CUDNN_ALGO=heuristic,
 * cuDNN's choice unless it has none. $VAE_CONV_GEMM_SLICE=n caps a slice at
 * n images (for tests).
 *
 * The data gradient has a third deterministic candidate: a direct kernel
 * (src/kernels/convt.cu: fp32 FMA, each output's taps summed in a fixed
 * order, stride-2 tiles in shared memory), which needs no workspace and can
 * add the bias and apply the activation itself (conv_direct_run). So a
 * plan's data gradient is the fastest of cuDNN's pick, the GEMM form and the
 * direct kernel, each timed once at plan time. $VAE_CONV_DIRECT=1 takes the
 * direct kernel wherever it supports the shape (before the GEMM form, also
 * with $VAE_CONV_GEMM=1), =0 never; with $VAE_CUDNN_ALGO=heuristic it is
 * not timed and is taken only where neither cuDNN nor the GEMM form has an
 * algorithm. The forward's direct kernel (src/kernels/convf.cu, the same
 * order and epilogue) is chosen the same way against cuDNN's forward pick
 * (plan_fwd): forced by $VAE_CONV_DIRECT=1, never with =0, else timed (with
 * heuristics: only where cuDNN has no algorithm). So is the weight
 * gradient's (src/kernels/convw.cu: sums over fixed groups of images, then
 * the groups' sums in order; the partial sums in the workspace), against
 * cuDNN's pick and then the GEMM form, as the data gradient's. The same
 * enum's values. */
enum { CONV_GEMM_TIMED = 0, CONV_GEMM_ALWAYS = 1, CONV_GEMM_NEVER = 2 };

/* Images per slice within `cap` bytes of workspace (0: not one). */
static int conv_gemm_slice(const cuda_ctx *c, const conv_plan *p, size_t cap) {
    const size_t pq = (size_t)p->ho * p->wo, crs = (size_t)p->c * p->r * p->r;
    const size_t per = (crs + (size_t)p->k) * pq * sizeof(real);
    if (per == 0 || p->n <= 0 || cap <= 2 * ARENA_ALIGN) return 0;
    size_t ns = (cap - 2 * ARENA_ALIGN) / per;
    if (ns > (size_t)p->n) ns = (size_t)p->n;
    if (c->conv_gemm_slice_max > 0 && ns > (size_t)c->conv_gemm_slice_max)
        ns = (size_t)c->conv_gemm_slice_max;
    if (ns * pq > (size_t)INT32_MAX) ns = (size_t)INT32_MAX / pq;
    if (crs * pq > (size_t)INT32_MAX) ns = 0; /* the GEMM's int dimensions */
    return (int)ns;
}

/* The workspace of a slice of m output cells: the column matrix [crs, m],
 * then (at the next aligned byte) dy with n and k swapped, [m, K]. Its bytes
 * and where dyK starts: one layout for the sizing and the run. */
static size_t conv_gemm_dyk_at(const conv_plan *p, size_t m) {
    return align_up((size_t)p->c * p->r * p->r * m * sizeof(real));
}

static size_t conv_gemm_bytes(const conv_plan *p, int ns) {
    const size_t m = (size_t)ns * p->ho * p->wo;
    return conv_gemm_dyk_at(p, m) + (size_t)p->k * m * sizeof(real);
}

/* The weight gradient (dgrad 0: a = x, out = dw) or the data gradient
 * (dgrad 1: a = w, out = dx) in GEMM form, slice after slice of ns images. */
static void conv_gemm_run(cuda_ctx *c, const conv_plan *p, int dgrad, const real *a,
                          const real *dy, real *out, void *ws, int ns) {
    const int pq = p->ho * p->wo, crs = p->c * p->r * p->r;
    const size_t x_img = (size_t)p->c * p->h * p->w, dy_img = (size_t)p->k * pq;
    const float one = 1.0f, zero = 0.0f;
    for (int n0 = 0; n0 < p->n; n0 += ns) {
        const int cnt = p->n - n0 < ns ? p->n - n0 : ns, m = cnt * pq;
        real *col = ws;
        real *dyk = (real *)((char *)ws + conv_gemm_dyk_at(p, (size_t)m));
        vae_cuda_swap_nk(c->stream, dyk, dy + (size_t)n0 * dy_img, cnt, p->k, pq);
        if (dgrad) {
            /* column-major: colT as [m, crs] = (dyK as [m, K]) (W as [crs, K])^T */
            CUBLAS_CHECK(cublasSgemm(c->blas, CUBLAS_OP_N, CUBLAS_OP_T, m, crs, p->k, &one, dyk, m,
                                     a, crs, &zero, col, m));
            vae_cuda_col2im_t(c->stream, out + (size_t)n0 * x_img, col, cnt, p->c, p->h, p->w,
                              p->r, p->ho, p->wo, p->stride, p->pad);
        } else {
            vae_cuda_im2col_t(c->stream, col, a + (size_t)n0 * x_img, cnt, p->c, p->h, p->w, p->r,
                              p->ho, p->wo, p->stride, p->pad);
            /* column-major: dW as [crs, K] = (colT as [m, crs])^T (dyK as [m, K]);
             * later slices add to the earlier ones (beta = 1), in slice order */
            CUBLAS_CHECK(cublasSgemm(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, crs, p->k, m, &one, col, m,
                                     dyk, m, n0 ? &one : &zero, out, crs));
        }
    }
}

/* Mean ms of three runs of run(c, job) after a first one (warm-up: lazy
 * module loading, caches), on the stream in use; one run after it when the
 * first took over TIME_MS_LONG ms: a decoding chunk's candidates take
 * milliseconds each, where one run times them well enough and every run is
 * set-up time that a `vae sample` pays (synchronises; plan time only). */
#define TIME_MS_LONG 1.0f
static float time_ms(cuda_ctx *c, void (*run)(cuda_ctx *c, const void *job), const void *job) {
    cudaEvent_t t0, t1;
    float first = 0, ms = 0;
    CUDA_CHECK(cudaEventCreate(&t0));
    CUDA_CHECK(cudaEventCreate(&t1));
    CUDA_CHECK(cudaEventRecord(t0, c->stream));
    run(c, job);
    CUDA_CHECK(cudaEventRecord(t1, c->stream));
    CUDA_CHECK(cudaEventSynchronize(t1));
    CUDA_CHECK(cudaEventElapsedTime(&first, t0, t1));
    const int reps = first > TIME_MS_LONG ? 1 : 3;
    CUDA_CHECK(cudaEventRecord(t0, c->stream));
    for (int i = 0; i < reps; i++) run(c, job);
    CUDA_CHECK(cudaEventRecord(t1, c->stream));
    CUDA_CHECK(cudaEventSynchronize(t1));
    CUDA_CHECK(cudaEventElapsedTime(&ms, t0, t1));
    CUDA_CHECK(cudaEventDestroy(t0));
    CUDA_CHECK(cudaEventDestroy(t1));
    return ms / (float)reps;
}

/* The weight (dgrad 0) or data (1) gradient in GEMM form, for time_ms */
typedef struct {
    const conv_plan *p;
    int dgrad, ns;
    const real *a, *dy;
    real *out;
    void *ws;
} gemm_job;
static void gemm_job_run(cuda_ctx *c, const void *job) {
    const gemm_job *j = job;
    conv_gemm_run(c, j->p, j->dgrad, j->a, j->dy, j->out, j->ws, j->ns);
}

/* The slice (images) if the plan takes the GEMM form, its workspace then
 * required; 0: cuDNN's pick. Taken as forced, where cuDNN has no
 * deterministic algorithm, or by timing against cuDNN's pick. */
static int conv_gemm_choose(cuda_ctx *c, const conv_plan *p, int dgrad, float cudnn_ms,
                            int have_pick, const real *a, const real *dy, real *out, void *ws,
                            size_t cap) {
    const int ns = conv_gemm_slice(c, p, cap);
    int take = 0;
    if (ns <= 0 || c->conv_gemm == CONV_GEMM_NEVER) {
        take = 0;
    } else if (c->conv_gemm == CONV_GEMM_ALWAYS || !have_pick) {
        take = 1;
    } else if (c->use_find) {
        const gemm_job job = {p, dgrad, ns, a, dy, out, ws};
        const float t = time_ms(c, gemm_job_run, &job);
        take = t < cudnn_ms;
        if (c->dnn_verbose)
            fprintf(stderr, "vae: cuDNN %s: GEMM form %.3f ms in slices of %d images, %.1f MiB%s\n",
                    dgrad ? "backward-data" : "backward-filter", (double)t, ns,
                    (double)conv_gemm_bytes(p, ns) / 1048576.0, take ? " (chosen)" : "");
    }
    if (!take) return 0;
    ws_require(c, conv_gemm_bytes(p, ns));
    return ns;
}

/* The plan's direct kernels: for its forward (fwd 1: convf.cu, x [n, c, h,
 * w] -> y [n, k, ho, wo]) and for its data gradient (fwd 0: convt.cu, in
 * convT terms in = dy [n, k, ho, wo] -> out = dx [n, c, h, w]); the weight
 * w [k, c, r, r] either way. */
enum { DIRECT_DGRAD = 0, DIRECT_FWD = 1 };

static int conv_direct_supported(const conv_plan *p, int fwd) {
    return fwd ? vae_cuda_conv_direct_supported(p->c, p->h, p->w, p->k, p->ho, p->wo, p->r,
                                                p->stride, p->pad)
               : vae_cuda_convt_direct_supported(p->k, p->ho, p->wo, p->c, p->h, p->w, p->r,
                                                 p->stride, p->pad);
}

static void conv_direct_launch(cuda_ctx *c, const conv_plan *p, int fwd, const real *in,
                               const real *w, real *out, const real *bias, int act, real slope) {
    if (fwd)
        vae_cuda_conv_direct(c->stream, out, in, w, bias, act, slope, p->n, p->c, p->h, p->w,
                             p->k, p->ho, p->wo, p->r, p->stride, p->pad);
    else
        vae_cuda_convt_direct(c->stream, out, in, w, bias, act, slope, p->n, p->k, p->ho, p->wo,
                              p->c, p->h, p->w, p->r, p->stride, p->pad);
}

/* A direct kernel on a plan (no bias), for time_ms */
typedef struct {
    const conv_plan *p;
    int fwd;
    const real *in, *w;
    real *out;
} direct_job;
static void direct_job_run(cuda_ctx *c, const void *job) {
    const direct_job *j = job;
    conv_direct_launch(c, j->p, j->fwd, j->in, j->w, j->out, NULL, VAE_CUDA_CONVT_NONE, 0);
}

/* out = act(conv(in, w) + bias) (fwd) or act(conv^T(in, w) + bias) (the
 * data gradient) by the direct kernel, if the plan (made: plan_fwd /
 * plan_bwd_data) chose it for that direction: then 1; else 0 and nothing is
 * done. bias may be NULL; act VAE_CUDA_CONVT_* (src/kernels/vae_kernels.cuh). */
static int conv_direct_run(cuda_ctx *c, const conv_plan *p, int fwd, const real *in,
                           const real *w, real *out, const real *bias, int act, real slope) {
    if (!(fwd ? p->fwd_direct : p->dgrad_direct)) return 0;
    conv_direct_launch(c, p, fwd, in, w, out, bias, act, slope);
    return 1;
}

/* The weight gradient by the direct kernel (convw.cu; dw = sum over the
 * batch of x (*) dy, its partial sums in ws), the workspace bytes it needs,
 * and a job for time_ms. */
static void wgrad_direct_run(cuda_ctx *c, const conv_plan *p, const real *x, const real *dy,
                             real *dw, void *ws) {
    vae_cuda_conv_wgrad_direct(c->stream, dw, x, dy, ws, p->n, p->c, p->h, p->w, p->k, p->ho,
                               p->wo, p->r, p->stride, p->pad);
}
static size_t wgrad_direct_bytes(const conv_plan *p) {
    return vae_cuda_conv_wgrad_scratch(p->n, p->c, p->k, p->r, p->ho, p->wo) * sizeof(real);
}
typedef struct {
    const conv_plan *p;
    const real *x, *dy;
    real *dw;
    void *ws;
} wgrad_job;
static void wgrad_job_run(cuda_ctx *c, const void *job) {
    const wgrad_job *j = job;
    wgrad_direct_run(c, j->p, j->x, j->dy, j->dw, j->ws);
}

/* A gradient's three-way choice (dgrad 1: the data gradient, a = w; 0: the
 * weight gradient, a = x): our direct kernel (run(c, job) on the search's
 * buffers; direct_ok: it takes the shape and its direct_bytes of workspace
 * fit), cuDNN's pick (have_pick, its pick_ms) and the GEMM form. The direct
 * kernel is forced by $VAE_CONV_DIRECT=1, else timed against cuDNN's pick
 * (not when $VAE_CONV_GEMM=1 takes the shape anyway); then the GEMM form
 * against the faster of the two (conv_gemm_choose). Sets *direct; returns
 * the GEMM form's slice (0: not the GEMM form). */
static int choose_gradient(cuda_ctx *c, const conv_plan *p, int dgrad, int direct_ok,
                           size_t direct_bytes, void (*run)(cuda_ctx *c, const void *job),
                           const void *job, int have_pick, float pick_ms, const real *a,
                           const real *dy, real *out, void *ws, size_t cap, int *direct) {
    *direct = direct_ok && c->conv_direct == CONV_GEMM_ALWAYS;
    if (*direct) return 0;
    float direct_ms = -1; /* < 0: not timed */
    if (direct_ok && c->use_find &&
        !(c->conv_gemm == CONV_GEMM_ALWAYS && conv_gemm_slice(c, p, cap) > 0))
        direct_ms = time_ms(c, run, job);
    const int direct_wins = direct_ms >= 0 && (!have_pick || direct_ms < pick_ms);
    const float rival_ms = direct_wins ? direct_ms : have_pick ? pick_ms : 0;
    const int ns = conv_gemm_choose(c, p, dgrad, rival_ms, have_pick || direct_ms >= 0, a, dy,
                                    out, ws, cap);
    *direct = !ns && direct_ok && (direct_wins || !have_pick);
    if (c->dnn_verbose && direct_ms >= 0)
        fprintf(stderr, "vae: cuDNN %s: direct kernel %.3f ms, %.1f MiB%s\n",
                dgrad ? "backward-data" : "backward-filter", (double)direct_ms,
                (double)direct_bytes / 1048576.0, *direct ? " (chosen)" : "");
    return ns;
}

/* $VAE_CUDNN_VERBOSE=1: each search's candidates on stderr, the pick marked */
#define LOG_ALGOS(c, p, dir, perf, got, pick)                                                \
    do {                                                                                   \
        if (!(c)->dnn_verbose) break;                                                      \
        fprintf(stderr, "vae: cuDNN %s x [%d,%d,%d,%d] filter %dx%d k%d s%d p%d:", (dir), (p)->n, \
                (p)->c, (p)->h, (p)->w, (p)->k, (p)->r, (p)->r, (p)->stride, (p)->pad);    \
        for (int j_ = 0; j_ < (got); j_++)                                                 \
            if ((perf)[j_].status == CUDNN_STATUS_SUCCESS)                                 \
                fprintf(stderr, " %s%d(%.3f ms, %.1f MiB%s%s)", j_ == (pick) ? "*" : "",     \
                        (int)(perf)[j_].algo, (double)(perf)[j_].time,                     \
                        (double)(perf)[j_].memory / 1048576.0,                             \
                        (perf)[j_].determinism == CUDNN_DETERMINISTIC ? "" : ", nondet",   \
                        (perf)[j_].mathType == CUDNN_TENSOR_OP_MATH ? ", tensor-op" : ""); \
        fputc('\n', stderr);                                                               \
    } while (0)

__attribute__((noreturn)) static void plan_panic(const conv_plan *p, const char *dir, size_t cap,
                                                  int line) {
    vae_panic(__FILE__, line,
              "cuDNN: no deterministic fp32 %s algorithm within %zu bytes of workspace for x "
              "[%d,%d,%d,%d] filter [%d,%d,%d,%d] stride %d pad %d",
              dir, cap, p->n, p->c, p->h, p->w, p->k, p->c, p->r, p->r, p->stride, p->pad);
}

/* The searches run the convolutions on the caller's buffers (outputs are
 * overwritten right after) and synchronise the device: first use only, and
 * never inside a graph capture (then they return 0 and the op is skipped;
 * see the header comment). 1: the algorithm is chosen. */
static int plan_fwd(cuda_ctx *c, conv_plan *p, const void *x, const void *w, void *y) {
    if (p->have_fwd) return 1;
    if (capture_refuse(c, "a convolution's first use (cuDNN forward algorithm choice)")) return 0;
    cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    int got = 0, pick;
    void *ws;
    size_t cap = search_ws(c, &ws);
    if (c->use_find)
        CUDNN_CHECK(cudnnFindConvolutionForwardAlgorithmEx(c->dnn, p->xd, x, p->fd, w, p->cd,
                                                           p->yd, y,
                                                           CUDNN_CONVOLUTION_FWD_ALGO_COUNT,
                                                           &got, perf, ws, cap));
    else
        CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(
            c->dnn, p->xd, p->fd, p->cd, p->yd, CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &got, perf));
    PICK_ALGO(perf, got, cap, p->tf32, pick);
    LOG_ALGOS(c, p, "forward", perf, got, pick);
    /* the direct kernel: forced, or timed against cuDNN's pick */
    const int direct_ok = c->conv_direct != CONV_GEMM_NEVER && conv_direct_supported(p, DIRECT_FWD);
    p->fwd_direct = direct_ok && (c->conv_direct == CONV_GEMM_ALWAYS || pick < 0);
    if (!p->fwd_direct && direct_ok && c->use_find) {
        const direct_job job = {p, DIRECT_FWD, x, w, y};
        const float direct_ms = time_ms(c, direct_job_run, &job);
        p->fwd_direct = direct_ms < perf[pick].time;
        if (c->dnn_verbose)
            fprintf(stderr, "vae: cuDNN forward: direct kernel %.3f ms%s\n", (double)direct_ms,
                    p->fwd_direct ? " (chosen)" : "");
    }
    if (!p->fwd_direct) {
        if (pick < 0) plan_panic(p, "forward", cap, __LINE__);
        p->fwd = perf[pick].algo;
        ws_require(c, perf[pick].memory);
    }
    p->have_fwd = 1;
    return 1;
}

static int plan_bwd_data(cuda_ctx *c, conv_plan *p, const void *w, const void *dy, void *dx) {
    if (p->have_bwd_data) return 1;
    if (capture_refuse(c, "a convolution's first use (cuDNN backward-data algorithm choice)"))
        return 0;
    cudnnConvolutionBwdDataAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
    int got = 0, pick;
    void *ws;
    size_t cap = search_ws(c, &ws);
    if (c->use_find)
        CUDNN_CHECK(cudnnFindConvolutionBackwardDataAlgorithmEx(
            c->dnn, p->fd, w, p->yd, dy, p->cd, p->xd, dx, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT,
            &got, perf, ws, cap));
    else
        CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(
            c->dnn, p->fd, p->yd, p->cd, p->xd, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &got, perf));
    PICK_ALGO(perf, got, cap, p->tf32, pick);
    LOG_ALGOS(c, p, "backward-data", perf, got, pick);
    const int direct_ok =
        c->conv_direct != CONV_GEMM_NEVER && conv_direct_supported(p, DIRECT_DGRAD);
    const direct_job job = {p, DIRECT_DGRAD, dy, w, dx};
    p->dgrad_ns = choose_gradient(c, p, 1, direct_ok, 0, direct_job_run, &job, pick >= 0,
                                  pick >= 0 ? perf[pick].time : 0, w, dy, dx, ws, cap,
                                  &p->dgrad_direct);
    if (!p->dgrad_ns && !p->dgrad_direct) {
        if (pick < 0) plan_panic(p, "backward-data", cap, __LINE__);
        p->bwd_data = perf[pick].algo;
        ws_require(c, perf[pick].memory);
    }
    p->have_bwd_data = 1;
    return 1;
}

static int plan_bwd_filter(cuda_ctx *c, conv_plan *p, const void *x, const void *dy, void *dw) {
    if (p->have_bwd_filter) return 1;
    if (capture_refuse(c, "a convolution's first use (cuDNN backward-filter algorithm choice)"))
        return 0;
    cudnnConvolutionBwdFilterAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
    int got = 0, pick;
    void *ws;
    size_t cap = search_ws(c, &ws);
    if (c->use_find)
        CUDNN_CHECK(cudnnFindConvolutionBackwardFilterAlgorithmEx(
            c->dnn, p->xd, x, p->yd, dy, p->cd, p->fd, dw,
            CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &got, perf, ws, cap));
    else
        CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(
            c->dnn, p->xd, p->yd, p->cd, p->fd, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &got,
            perf));
    PICK_ALGO(perf, got, cap, p->tf32, pick);
    LOG_ALGOS(c, p, "backward-filter", perf, got, pick);
    /* the direct kernel needs its partial sums in the workspace */
    const size_t dbytes = wgrad_direct_bytes(p);
    const int direct_ok = c->conv_direct != CONV_GEMM_NEVER && dbytes <= cap &&
                          vae_cuda_conv_wgrad_supported(p->c, p->h, p->w, p->k, p->ho, p->wo,
                                                        p->r, p->stride, p->pad);
    if (c->dnn_verbose && c->conv_direct == CONV_GEMM_ALWAYS && dbytes > cap)
        fprintf(stderr, "vae: cuDNN backward-filter: direct kernel not used: its %zu bytes of "
                        "partial sums exceed the %zu bytes of workspace\n", dbytes, cap);
    const wgrad_job job = {p, x, dy, dw, ws};
    p->wgrad_ns = choose_gradient(c, p, 0, direct_ok, dbytes, wgrad_job_run, &job, pick >= 0,
                                  pick >= 0 ? perf[pick].time : 0, x, dy, dw, ws, cap,
                                  &p->wgrad_direct);
    if (p->wgrad_direct) ws_require(c, dbytes);
    if (!p->wgrad_ns && !p->wgrad_direct) {
        if (pick < 0) plan_panic(p, "backward-filter", cap, __LINE__);
        p->bwd_filter = perf[pick].algo;
        ws_require(c, perf[pick].memory);
    }
    p->have_bwd_filter = 1;
    return 1;
}

/* y = conv(x, w) */
static void run_fwd(cuda_ctx *c, conv_plan *p, const real *x, const real *w, real *y) {
    const float one = 1.0f, zero = 0.0f;
    if (!plan_fwd(c, p, x, w, y)) return;
    if (conv_direct_run(c, p, DIRECT_FWD, x, w, y, NULL, VAE_CUDA_CONVT_NONE, 0)) return;
    CUDNN_CHECK(cudnnConvolutionForward(c->dnn, &one, p->xd, x, p->fd, w, p->cd, p->fwd,
                                        ws_ptr(c), ws_size(c), &zero, p->yd, y));
}
/* dx = conv^T(dy, w) */
static void run_bwd_data(cuda_ctx *c, conv_plan *p, const real *w, const real *dy, real *dx) {
    const float one = 1.0f, zero = 0.0f;
    if (!plan_bwd_data(c, p, w, dy, dx)) return;
    if (conv_direct_run(c, p, DIRECT_DGRAD, dy, w, dx, NULL, VAE_CUDA_CONVT_NONE, 0)) return;
    if (p->dgrad_ns > 0) {
        conv_gemm_run(c, p, 1, w, dy, dx, ws_ptr(c), p->dgrad_ns);
        return;
    }
    CUDNN_CHECK(cudnnConvolutionBackwardData(c->dnn, &one, p->fd, w, p->yd, dy, p->cd,
                                             p->bwd_data, ws_ptr(c), ws_size(c), &zero, p->xd,
                                             dx));
}
/* dw = sum over the batch of x (*) dy */
static void run_bwd_filter(cuda_ctx *c, conv_plan *p, const real *x, const real *dy, real *dw) {
    const float one = 1.0f, zero = 0.0f;
    if (!plan_bwd_filter(c, p, x, dy, dw)) return;
    if (p->wgrad_direct) {
        wgrad_direct_run(c, p, x, dy, dw, ws_ptr(c));
        return;
    }
    if (p->wgrad_ns > 0) {
        conv_gemm_run(c, p, 0, x, dy, dw, ws_ptr(c), p->wgrad_ns);
        return;
    }
    CUDNN_CHECK(cudnnConvolutionBackwardFilter(c->dnn, &one, p->xd, x, p->yd, dy, p->cd,
                                               p->bwd_filter, ws_ptr(c), ws_size(c), &zero,
                                               p->fd, dw));
}

/* ------------------------------------------------------------ memory */

static void cuda_upload(vae_backend *be, void *dst, const void *src, size_t bytes) {
    if (bytes == 0 || capture_refuse(ctx_of(be), "upload")) return;
    /* from pageable memory the call returns once src has been staged, so the
     * caller may free src right away */
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, ctx_of(be)->stream));
}

static void cuda_download(vae_backend *be, void *dst, const void *src, size_t bytes) {
    cuda_ctx *c = ctx_of(be);
    if (bytes == 0 || capture_refuse(c, "download")) return;
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, c->stream));
    CUDA_CHECK(cudaStreamSynchronize(c->stream));
}

static void cuda_zero(vae_backend *be, void *dst, size_t bytes) {
    if (bytes == 0) return;
    CUDA_CHECK(cudaMemsetAsync(dst, 0, bytes, ctx_of(be)->stream));
}

static void cuda_sync(vae_backend *be) {
    cuda_ctx *c = ctx_of(be);
    if (capture_refuse(c, "sync")) return;
    side_join(c);
    CUDA_CHECK(cudaStreamSynchronize(c->stream));
}

/* ---------------------------------------------------- side segments
 *
 * side_begin: main records ev_fork, the side stream waits for it, and the
 * ops issued until side_end run on lane 1; side_end records the segment's
 * end event on the side stream. side_wait(keep): main waits for the end of
 * segment nseg - keep - 1, which (the side stream being in order) covers all
 * before it. Inside a graph capture the waits are the capture's edges: the
 * side stream joins the capture at its first wait on ev_fork and must be
 * joined back (side_wait(0)) before the capture ends, which graph_capture
 * makes sure of. With side_on the conv workspace is two halves, so that
 * the two lanes never share one. */

static void lane_use(cuda_ctx *c, int lane) {
    c->stream = c->lanes[lane].stream;
    c->blas = c->lanes[lane].blas;
    c->dnn = c->lanes[lane].dnn;
    c->bias_partials = c->lanes[lane].bias_partials;
    c->in_side = lane;
}

/* main waits for every segment issued */
static void side_join(cuda_ctx *c) {
    if (!c->side_on || c->nseg <= c->nseg_waited) return;
    if (c->in_side) lane_use(c, 0);
    const long long t = c->nseg;
    CUDA_CHECK(cudaStreamWaitEvent(c->lanes[0].stream, c->ev_seg[(t - 1) % SIDE_EVENTS], 0));
    c->nseg_waited = t;
}

static void cuda_side_begin(vae_backend *be) {
    cuda_ctx *c = ctx_of(be);
    VAE_ASSERT(!c->in_side);
    CUDA_CHECK(cudaEventRecord(c->ev_fork, c->lanes[0].stream));
    CUDA_CHECK(cudaStreamWaitEvent(c->lanes[1].stream, c->ev_fork, 0));
    lane_use(c, 1);
}

static void cuda_side_end(vae_backend *be) {
    cuda_ctx *c = ctx_of(be);
    VAE_ASSERT(c->in_side);
    CUDA_CHECK(cudaEventRecord(c->ev_seg[c->nseg % SIDE_EVENTS], c->lanes[1].stream));
    c->nseg++;
    lane_use(c, 0);
}

static void cuda_side_wait(vae_backend *be, int keep) {
    cuda_ctx *c = ctx_of(be);
    VAE_ASSERT(!c->in_side && keep >= 0);
    const long long t = c->nseg - keep;
    if (t <= c->nseg_waited) return;
    CUDA_CHECK(cudaStreamWaitEvent(c->stream, c->ev_seg[(t - 1) % SIDE_EVENTS], 0));
    c->nseg_waited = t;
}

static void *cuda_host_alloc(vae_backend *be, size_t bytes) {
    (void)be;
    void *p = NULL;
    cudaError_t e = cudaMallocHost(&p, bytes ? bytes : 1);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        vae_error_set(VAE_ENOMEM, "cudaMallocHost of %zu bytes failed: %s", bytes,
                      cudaGetErrorString(e));
        return NULL;
    }
    return p;
}

static void cuda_host_free(vae_backend *be, void *p) {
    (void)be;
    if (p) CUDA_CHECK(cudaFreeHost(p));
}

static void cuda_download_async(vae_backend *be, void *dst, const void *src, size_t bytes) {
    cuda_ctx *c = ctx_of(be);
    if (bytes == 0 || capture_refuse(c, "download_async")) return;
    side_join(c);
    CUDA_CHECK(cudaEventRecord(c->ev_issued, c->stream));
    CUDA_CHECK(cudaStreamWaitEvent(c->copy_stream, c->ev_issued, 0));
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, c->copy_stream));
}

static void cuda_copy_wait(vae_backend *be) {
    cuda_ctx *c = ctx_of(be);
    if (capture_refuse(c, "copy_wait")) return;
    CUDA_CHECK(cudaStreamSynchronize(c->copy_stream));
}

/* --------------------------------------------------- cuBLASLt dense plans */

/* The split-K reductions an algorithm may use. cublasLt.h describes every
 * scheme as ordered (NONE: one sequence; INPLACE: in the output, ordered by
 * counters kept in the workspace; COMPUTE_TYPE / OUTPUT_TYPE: partial results
 * in the workspace, summed in a separate step), and cuBLAS documents bitwise
 * reproducible results run to run on one GPU model given one stream and a
 * workspace of our own ("Results reproducibility"). We still leave out
 * INPLACE, the one whose order rests on counter state in the shared
 * workspace: NONE (which no mask bit can exclude) and the two separate-step
 * reductions remain. */
#define LT_REDUCTION_OK \
    ((uint32_t)(CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE | CUBLASLT_REDUCTION_SCHEME_OUTPUT_TYPE))
/* Bias / bias-gradient alignment the epilogue path requires. The headers
 * state none, but the heuristic takes the alignment from the pointer it is
 * given, and users report alignment faults on A100 below 16 bytes (Marian
 * NMT, src/tensors/gpu/prod.cpp). A smaller one: that call falls back. */
#define LT_BIAS_ALIGN 16u
#define LT_NOTES_MAX 8 /* fallback lines per backend, then one "not reported" */
#define LT_HEUR_MAX 8  /* heuristic results asked for */

/* ReLU bit-mask alignment the fused path requires (a smaller one: the
 * forward runs without the mask and the backward falls back). cublasLt.h
 * states the leading dimension's rule (a multiple of 128 bits: every column
 * starts 16 bytes after the previous one) and not the pointer's; 16 bytes
 * keeps every column 16-byte aligned, as the bias rule above. */
#define LT_MASK_ALIGN 16u

/* The epilogue GEMMs (header comment, "Dense layers"): */
enum {
    LT_FWD_BIAS = 0,          /* out = in w^T + b */
    LT_BWD_BGRADB = 1,        /* dw = dout^T in, db = sum_B dout */
    LT_FWD_RELU_BIAS = 2,     /* out = relu(in w^T + b) */
    LT_FWD_RELU_AUX_BIAS = 3, /* the same, and the ReLU bit-mask */
    LT_BWD_DRELU_BGRAD = 4    /* din = (dout w) * mask, dbin = sum_B din */
};

typedef struct lt_plan {
    int kind, B, I, O, tf32;
    unsigned al_a, al_b, al_d, al_bias, al_aux; /* pointer alignments, bytes (<= 256) */
    int usable;                         /* 0: plan or call failed; fall back */
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t la, lb, ld; /* ld: C and D (C = D, beta = 0) */
    cublasLtMatmulAlgo_t algo;
    cublasLtMatmulAlgo_t cand[LT_HEUR_MAX]; /* the heuristic's usable algorithms, its order */
    int ncand;
} lt_plan;

/* The largest power of two (<= 256) dividing the address. */
static unsigned ptr_align(const void *p) {
    uintptr_t a = (uintptr_t)p;
    unsigned r = 1;
    while (r < 256 && !(a & r)) r <<= 1;
    return r;
}

static const char *lt_what(int kind) {
    switch (kind) {
    case LT_FWD_BIAS: return "bias epilogue (forward)";
    case LT_BWD_BGRADB: return "bias-gradient epilogue (backward)";
    case LT_FWD_RELU_BIAS: return "ReLU + bias epilogue (forward)";
    case LT_FWD_RELU_AUX_BIAS: return "ReLU + bias epilogue with ReLU mask (forward)";
    default: return "ReLU-gradient + bias-gradient epilogue (backward)";
    }
}

/* What runs instead, for the fallback notes. */
static const char *lt_instead(int kind) {
    switch (kind) {
    case LT_FWD_BIAS:
    case LT_BWD_BGRADB: return "cuBLAS + bias kernel";
    case LT_FWD_RELU_BIAS: return "the unfused dense layer + ReLU kernel";
    case LT_FWD_RELU_AUX_BIAS:
        return "the ReLU + bias epilogue without the mask (or the unfused dense layer + ReLU "
               "kernel), and the unfused backward above";
    default: return "cuBLAS + ReLU-backward and bias-gradient kernels";
    }
}

static int lt_has_aux(int kind) {
    return kind == LT_FWD_RELU_AUX_BIAS || kind == LT_BWD_DRELU_BGRAD;
}

/* ReLU bit-mask leading dimension in bits for `rows` rows (cublasLt.h:
 * CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, divisible by 128, >= rows); the
 * mask of a [B, O] output is O rows by B columns: vae_relu_mask_bytes. */
static int64_t lt_mask_ld(int rows) { return ((int64_t)rows + 127) / 128 * 128; }

/* One line on stderr about a fallback, at most LT_NOTES_MAX per backend. */
static void lt_note(cuda_ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void lt_note(cuda_ctx *c, const char *fmt, ...) {
    if (c->lt_notes > LT_NOTES_MAX) return;
    if (c->lt_notes++ == LT_NOTES_MAX) {
        fprintf(stderr, "vae: further cuBLASLt fallbacks are not reported\n");
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    fputs("vae: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static void lt_plan_release(lt_plan *p, int checked) {
    if (checked) {
        if (p->desc) CUBLAS_CHECK(cublasLtMatmulDescDestroy(p->desc));
        if (p->la) CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(p->la));
        if (p->lb) CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(p->lb));
        if (p->ld) CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(p->ld));
    } else {
        if (p->desc) (void)cublasLtMatmulDescDestroy(p->desc);
        if (p->la) (void)cublasLtMatrixLayoutDestroy(p->la);
        if (p->lb) (void)cublasLtMatrixLayoutDestroy(p->lb);
        if (p->ld) (void)cublasLtMatrixLayoutDestroy(p->ld);
    }
    p->desc = NULL;
    p->la = p->lb = p->ld = NULL;
}

/* 1 if the algorithm splits k only with a reduction LT_REDUCTION_OK allows
 * (a second check behind the preference's mask); unreadable: trust the mask. */
static int lt_algo_ordered(const cublasLtMatmulAlgo_t *algo) {
    int32_t splits = 1;
    uint32_t scheme = CUBLASLT_REDUCTION_SCHEME_NONE;
    size_t got = 0;
    if (cublasLtMatmulAlgoConfigGetAttribute(algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &splits,
                                             sizeof splits, &got) != CUBLAS_STATUS_SUCCESS ||
        cublasLtMatmulAlgoConfigGetAttribute(algo, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &scheme,
                                             sizeof scheme, &got) != CUBLAS_STATUS_SUCCESS)
        return 1;
    return splits <= 1 || scheme == CUBLASLT_REDUCTION_SCHEME_NONE ||
           (scheme & ~LT_REDUCTION_OK) == 0;
}

#define LT_TRY(call)                                                                      \
    do {                                                                                  \
        cublasStatus_t st_ = (call);                                                      \
        if (st_ != CUBLAS_STATUS_SUCCESS) {                                               \
            snprintf(why, why_len, "%s: %s", #call, cublasGetStatusString(st_));          \
            goto out;                                                                     \
        }                                                                                 \
    } while (0)

/* Descriptors, layouts and algorithm of p (its key filled in); `bias` and
 * `aux` are the first call's bias and ReLU-mask pointers, from which the
 * heuristic reads the alignment. Host-only calls. 1: usable; 0: `why` says
 * why not. */
static int lt_plan_make(cuda_ctx *c, lt_plan *p, const void *bias, const void *aux, char *why,
                        size_t why_len) {
    /* the GEMMs of the header comment: the forwards (m = O, n = B, k = I),
     * the weight gradient (m = I, n = O, k = B) and the data gradient
     * (m = I, n = B, k = O) */
    const int fwd = p->kind == LT_FWD_BIAS || p->kind == LT_FWD_RELU_BIAS ||
                    p->kind == LT_FWD_RELU_AUX_BIAS;
    const int dgrad = p->kind == LT_BWD_DRELU_BGRAD;
    const uint64_t m = (uint64_t)(fwd ? p->O : p->I), n = (uint64_t)(fwd || dgrad ? p->B : p->O),
                   k = (uint64_t)(fwd ? p->I : dgrad ? p->O : p->B);
    const int32_t ta = fwd ? CUBLAS_OP_T : CUBLAS_OP_N;
    const int32_t tb = fwd || dgrad ? CUBLAS_OP_N : CUBLAS_OP_T;
    const int64_t lda = p->I, ldb = fwd ? p->I : p->O, ldd = fwd ? p->O : p->I;
    uint32_t epi = CUBLASLT_EPILOGUE_BIAS;
    switch (p->kind) {
    case LT_BWD_BGRADB: epi = CUBLASLT_EPILOGUE_BGRADB; break;
    case LT_FWD_RELU_BIAS: epi = CUBLASLT_EPILOGUE_RELU_BIAS; break;
    case LT_FWD_RELU_AUX_BIAS: epi = CUBLASLT_EPILOGUE_RELU_AUX_BIAS; break;
    case LT_BWD_DRELU_BGRAD: epi = CUBLASLT_EPILOGUE_DRELU_BGRAD; break;
    default: break;
    }
    /* the mask: rows of D (O forward, I backward) by its columns (B) */
    const int64_t aux_ld = lt_mask_ld((int)m);
    const cublasComputeType_t ct = p->tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    const uint64_t ws_max = CUBLAS_WS_BYTES;
    const uint32_t red = LT_REDUCTION_OK;
    const uint32_t al_a = p->al_a, al_b = p->al_b, al_d = p->al_d;
    cublasLtMatmulPreference_t pref = NULL;
    cublasLtMatmulHeuristicResult_t res[LT_HEUR_MAX];
    int got = 0, ok = 0;

    LT_TRY(cublasLtMatmulDescCreate(&p->desc, ct, CUDA_R_32F));
    LT_TRY(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    LT_TRY(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    LT_TRY(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi,
                                          sizeof epi));
    LT_TRY(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias,
                                          sizeof bias));
    if (lt_has_aux(p->kind)) {
        LT_TRY(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER,
                                              &aux, sizeof aux));
        LT_TRY(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD,
                                              &aux_ld, sizeof aux_ld));
    }
    /* stored shapes: op N stores [rows of op(X), cols of op(X)], op T the transpose */
    LT_TRY(cublasLtMatrixLayoutCreate(&p->la, CUDA_R_32F, ta == CUBLAS_OP_N ? m : k,
                                      ta == CUBLAS_OP_N ? k : m, lda));
    LT_TRY(cublasLtMatrixLayoutCreate(&p->lb, CUDA_R_32F, tb == CUBLAS_OP_N ? k : n,
                                      tb == CUBLAS_OP_N ? n : k, ldb));
    LT_TRY(cublasLtMatrixLayoutCreate(&p->ld, CUDA_R_32F, m, n, ldd));
    LT_TRY(cublasLtMatmulPreferenceCreate(&pref));
    LT_TRY(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                &ws_max, sizeof ws_max));
    LT_TRY(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK,
                                                &red, sizeof red));
    LT_TRY(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                                                &al_a, sizeof al_a));
    LT_TRY(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                                                &al_b, sizeof al_b));
    LT_TRY(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                                                &al_d, sizeof al_d));
    LT_TRY(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
                                                &al_d, sizeof al_d));
    memset(res, 0, sizeof res);
    cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(c->lt, p->desc, p->la, p->lb, p->ld, p->ld,
                                                       pref, LT_HEUR_MAX, res, &got);
    if (st != CUBLAS_STATUS_SUCCESS) {
        snprintf(why, why_len, "no algorithm (cublasLtMatmulAlgoGetHeuristic: %s)",
                 cublasGetStatusString(st));
        goto out;
    }
    for (int i = 0; i < got && i < LT_HEUR_MAX; i++)
        if (res[i].state == CUBLAS_STATUS_SUCCESS && res[i].workspaceSize <= CUBLAS_WS_BYTES &&
            lt_algo_ordered(&res[i].algo))
            p->cand[p->ncand++] = res[i].algo;
    if (p->ncand > 0) {
        p->algo = p->cand[0];
        ok = 1;
    }
    if (!ok && got > 0)
        snprintf(why, why_len,
                 "none of the %d algorithms of the heuristic fits (workspace <= %zu bytes, no "
                 "in-place split-K)",
                 got, (size_t)CUBLAS_WS_BYTES);
    else if (!ok)
        snprintf(why, why_len, "the heuristic found no algorithm");
out:
    if (pref) (void)cublasLtMatmulPreferenceDestroy(pref);
    if (!ok) lt_plan_release(p, 0);
    return ok;
}
#undef LT_TRY

/* D = op(A) op(B) with the plan's epilogue and algorithm `algo`, on the
 * stream in use (the bias and mask pointers set on p->desc before). */
static cublasStatus_t lt_matmul(cuda_ctx *c, const lt_plan *p, const cublasLtMatmulAlgo_t *algo,
                                const void *a, const void *b, void *d) {
    const float one = 1.0f, zero = 0.0f;
    return cublasLtMatmul(c->lt, p->desc, &one, a, p->la, b, p->lb, &zero, d, p->ld, d, p->ld,
                          algo, blas_ws(c), CUBLAS_WS_BYTES, c->stream);
}

/* With timed algorithm choice (not $VAE_CUDNN_ALGO=heuristic) and outside a
 * capture: run each of the heuristic's usable algorithms on the call's own
 * buffers (one untimed call, then the mean of three; D, and the bias
 * gradient or mask an epilogue writes, are all written again by the call
 * that follows) and keep the fastest. At a small batch the heuristic's
 * first pick is often a split-K algorithm with a separate reduction kernel,
 * which a single-pass one beats there. Every candidate is deterministic (no
 * atomics: LT_REDUCTION_OK), so only the choice can differ between
 * processes, as with cuDNN's. A plan made during a capture keeps the
 * heuristic's first, and so does a GEMM of more than LT_TIME_MAX_FLOP: the
 * heuristic does well on large problems, and timing eight candidates four
 * times each would cost a decoding run (16,384 x 3136 x 128: 13 GFLOP a
 * call) more than it could save. Plan time only: synchronises. */
#define LT_TIME_MAX_FLOP 2e9
static void lt_plan_time(cuda_ctx *c, lt_plan *p, const void *a, const void *b, void *d,
                         const void *bias, const void *aux) {
    if (!c->use_find || c->capturing || p->ncand < 2) return;
    if (2.0 * p->B * p->I * p->O > LT_TIME_MAX_FLOP) return;
    CUDA_CHECK(cudaDeviceSynchronize()); /* the GPU to itself, as search_ws */
    if (cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias,
                                       sizeof bias) != CUBLAS_STATUS_SUCCESS ||
        (lt_has_aux(p->kind) &&
         cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux,
                                        sizeof aux) != CUBLAS_STATUS_SUCCESS))
        return;
    cudaEvent_t t0, t1;
    CUDA_CHECK(cudaEventCreate(&t0));
    CUDA_CHECK(cudaEventCreate(&t1));
    int best = -1;
    float best_ms = 0;
    for (int i = 0; i < p->ncand; i++) {
        cublasStatus_t st = lt_matmul(c, p, &p->cand[i], a, b, d);
        float ms = 0;
        if (st == CUBLAS_STATUS_SUCCESS) {
            CUDA_CHECK(cudaEventRecord(t0, c->stream));
            for (int r = 0; r < 3 && st == CUBLAS_STATUS_SUCCESS; r++)
                st = lt_matmul(c, p, &p->cand[i], a, b, d);
            CUDA_CHECK(cudaEventRecord(t1, c->stream));
            CUDA_CHECK(cudaEventSynchronize(t1));
            CUDA_CHECK(cudaEventElapsedTime(&ms, t0, t1));
            ms /= 3;
        }
        if (st != CUBLAS_STATUS_SUCCESS) {
            (void)cudaGetLastError(); /* a refused launch's non-sticky error */
            continue;
        }
        if (best < 0 || ms < best_ms) best = i, best_ms = ms;
        if (c->dnn_verbose)
            fprintf(stderr, "vae: cuBLASLt %s dense %d->%d (batch %d): algorithm %d of %d %.4f ms\n",
                    lt_what(p->kind), p->I, p->O, p->B, i + 1, p->ncand, (double)ms);
    }
    CUDA_CHECK(cudaEventDestroy(t0));
    CUDA_CHECK(cudaEventDestroy(t1));
    if (best >= 0) p->algo = p->cand[best];
    if (c->dnn_verbose && best >= 0)
        fprintf(stderr, "vae: cuBLASLt %s dense %d->%d (batch %d): algorithm %d chosen\n",
                lt_what(p->kind), p->I, p->O, p->B, best + 1);
}

/* The plan for this call, made at first use (host-only calls: allowed during
 * a graph capture); NULL if the plan table cannot grow (then the op falls
 * back). An unusable plan is returned too: the caller checks p->usable. */
static lt_plan *lt_plan_get(cuda_ctx *c, int kind, int B, int I, int O, const void *a,
                            const void *b, void *d, const void *bias, const void *aux) {
    const unsigned aa = ptr_align(a), ab = ptr_align(b), ad = ptr_align(d), abias = ptr_align(bias);
    const unsigned aaux = ptr_align(aux);
    for (int i = 0; i < c->nlt; i++) {
        lt_plan *p = c->lt_plans[i];
        if (p->kind == kind && p->B == B && p->I == I && p->O == O && p->tf32 == c->tf32 &&
            p->al_a == aa && p->al_b == ab && p->al_d == ad && p->al_bias == abias &&
            p->al_aux == aaux)
            return p;
    }
    if (c->nlt == c->caplt) {
        int cap = c->caplt ? 2 * c->caplt : 16;
        lt_plan **np = realloc(c->lt_plans, (size_t)cap * sizeof *np);
        if (!np) return NULL;
        c->lt_plans = np;
        c->caplt = cap;
    }
    lt_plan *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->kind = kind, p->B = B, p->I = I, p->O = O, p->tf32 = c->tf32;
    p->al_a = aa, p->al_b = ab, p->al_d = ad, p->al_bias = abias, p->al_aux = aaux;
    char why[256] = "";
    p->usable = lt_plan_make(c, p, bias, aux, why, sizeof why);
    if (p->usable) lt_plan_time(c, p, a, b, d, bias, aux);
    if (!p->usable)
        lt_note(c, "cuBLASLt %s not used for dense %d->%d (batch %d%s): %s; using %s",
                lt_what(kind), I, O, B, p->tf32 ? ", tf32" : "", why, lt_instead(kind));
    c->lt_plans[c->nlt++] = p;
    return p;
}

/* D = op(A) op(B) with the plan's epilogue on `bias` (a bias, or the bias
 * gradient written) and, for the mask kinds, `aux` (the ReLU bit-mask,
 * written forward, read backward), through cuBLASLt. 1: issued; 0: the
 * caller must do the op the other way (nothing of it is left to rely on: D
 * and the bias gradient are overwritten entirely by the fallback; a mask
 * the fallback does not write is not used afterwards, see lt_mask_*). */
static int lt_dense(cuda_ctx *c, int kind, int B, int I, int O, const void *a, const void *b,
                    void *d, const void *bias, const void *aux) {
    if (!c->use_lt || !c->base || B <= 0 || I <= 0 || O <= 0) return 0;
    if (lt_has_aux(kind) && (!aux || ptr_align(aux) < LT_MASK_ALIGN)) return 0;
    if (ptr_align(bias) < LT_BIAS_ALIGN) {
        if (!c->lt_noted_unaligned) {
            c->lt_noted_unaligned = 1;
            lt_note(c, "cuBLASLt bias epilogues not used for a bias at %p (dense %d->%d): not "
                       "%u-byte aligned; using cuBLAS + bias kernel (for such biases only)",
                    bias, I, O, LT_BIAS_ALIGN);
        }
        return 0;
    }
    lt_plan *p = lt_plan_get(c, kind, B, I, O, a, b, d, bias, aux);
    if (!p || !p->usable) return 0;
    cublasStatus_t st = cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                       &bias, sizeof bias);
    if (st == CUBLAS_STATUS_SUCCESS && lt_has_aux(kind))
        st = cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER,
                                            &aux, sizeof aux);
    if (st == CUBLAS_STATUS_SUCCESS) st = lt_matmul(c, p, &p->algo, a, b, d);
    if (st == CUBLAS_STATUS_SUCCESS) return 1;
    /* a refused launch leaves a (non-sticky) error behind; a sticky one
     * resurfaces at the next CUDA_CHECK */
    (void)cudaGetLastError();
    p->usable = 0;
    lt_plan_release(p, 0);
    lt_note(c, "cuBLASLt %s not used for dense %d->%d (batch %d%s): cublasLtMatmul: %s; using %s",
            lt_what(kind), I, O, B, p->tf32 ? ", tf32" : "", cublasGetStatusString(st),
            lt_instead(kind));
    /* A failure that invalidated a capture in progress: on the real runtime
     * every later launch and library call into that capture fails too (the
     * step's next CUDA_LAUNCH_CHECK or CUBLAS_CHECK would abort with the
     * runtime's "previous error during capture"), so the capture cannot end
     * softly. Stop here, saying why and what avoids it. (Not seen: the same
     * plan ran eagerly on the step before the capture; a refusal, e.g.
     * CUBLAS_STATUS_NOT_SUPPORTED, leaves the capture valid, and the caller
     * records its fallback in the graph.) */
    enum cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
    if (c->capturing && cudaStreamIsCapturing(c->stream, &cs) == cudaSuccess &&
        cs == cudaStreamCaptureStatusInvalidated)
        vae_panic(__FILE__, __LINE__,
                  "cuBLASLt %s (dense %d->%d, batch %d) failed during the CUDA graph capture of "
                  "a training step (%s) and invalidated it; rerun with VAE_CUDA_GRAPH=0 (no "
                  "graphs) or VAE_CUBLASLT=0 (cuBLAS instead of cuBLASLt)",
                  lt_what(kind), I, O, B, cublasGetStatusString(st));
    return 0;
}

/* ------------------------------------------------------------ layers */

/* Row-major out[B,O] = in[B,I] w[O,I]^T is column-major out^T[O,B] =
 * w^T[O,I] in^T[I,B], where the row-major arrays already are the
 * column-major w^T-view [I,O] (ld I) and in^T [I,B] (ld I). */
static void cuda_dense_forward(vae_backend *be, real *out, const real *in, const real *w,
                               const real *b, int B, int I, int O) {
    cuda_ctx *c = ctx_of(be);
    if (b && lt_dense(c, LT_FWD_BIAS, B, I, O, w, in, out, b, NULL)) return;
    const float one = 1.0f, zero = 0.0f;
    CUBLAS_CHECK(cublasSgemm(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, O, B, I, &one, w, I, in, I, &zero,
                             out, O));
    if (b) vae_cuda_bias_add_rows(c->stream, out, b, B, O);
}

/* din^T[I,B] = w-view[I,O] dout^T[O,B];  dw^T[I,O] = in^T[I,B] (dout^T)^T[B,O];
 * db = column sums of dout: with dw, in the dw GEMM's BGRADB epilogue
 * (header comment), else (or as the fallback) by a deterministic kernel. */
static void cuda_dense_backward(vae_backend *be, real *din, real *dw, real *db, const real *dout,
                                const real *in, const real *w, int B, int I, int O) {
    cuda_ctx *c = ctx_of(be);
    const float one = 1.0f, zero = 0.0f;
    if (din)
        CUBLAS_CHECK(cublasSgemm(c->blas, CUBLAS_OP_N, CUBLAS_OP_N, I, B, O, &one, w, I, dout, O,
                                 &zero, din, I));
    if (dw && db && lt_dense(c, LT_BWD_BGRADB, B, I, O, in, dout, dw, db, NULL)) return;
    if (dw)
        CUBLAS_CHECK(cublasSgemm(c->blas, CUBLAS_OP_N, CUBLAS_OP_T, I, O, B, &one, in, I, dout, O,
                                 &zero, dw, I));
    if (db) vae_cuda_bias_grad_rows(c->stream, db, dout, B, O, c->bias_partials);
}

/* ---- dense + ReLU
 *
 * The record of the masks a fused forward wrote: the backward may read a
 * mask with CUBLASLT_EPILOGUE_DRELU_BGRAD only when the forward that wrote
 * it was issued (host order = stream order) for the very input it gets
 * (`in` == that forward's `out`, same B and width) and no forward of the
 * same mask has been issued since without writing it. Everything else takes
 * the fallback, which needs only `in`. Host-side, set when an op is issued:
 * inside a graph capture the captured forward and backward agree, and a
 * replay repeats what was captured. A backward takes its record (one
 * backward per forward). */

static void lt_mask_forget(cuda_ctx *c, const void *mask) {
    for (int i = 0; i < LT_MASKS_MAX; i++)
        if (c->lt_masks[i].mask == mask) c->lt_masks[i].mask = NULL;
}

static void lt_mask_wrote(cuda_ctx *c, const void *mask, const void *out, int B, int O) {
    lt_mask_forget(c, mask);
    int slot = -1;
    for (int i = 0; i < LT_MASKS_MAX && slot < 0; i++)
        if (!c->lt_masks[i].mask) slot = i;
    if (slot < 0) slot = c->lt_mask_next++ % LT_MASKS_MAX;
    c->lt_masks[slot].mask = mask;
    c->lt_masks[slot].out = out;
    c->lt_masks[slot].B = B;
    c->lt_masks[slot].O = O;
}

/* 1 if `mask` holds the sign pattern of in[B, I] (as above); the record is
 * consumed either way. */
static int lt_mask_take(cuda_ctx *c, const void *mask, const void *in, int B, int I) {
    if (!mask) return 0;
    for (int i = 0; i < LT_MASKS_MAX; i++) {
        struct lt_mask_rec *r = &c->lt_masks[i];
        if (r->mask != mask) continue;
        r->mask = NULL;
        return r->out == in && r->B == B && r->O == I;
    }
    return 0;
}

static size_t cuda_relu_mask_bytes(vae_backend *be, int B, int O) {
    const cuda_ctx *c = ctx_of(be);
    return c->use_lt && c->use_lt_drelu ? vae_relu_mask_bytes(B, O) : 0;
}

/* out = relu(in w^T + b): one cuBLASLt GEMM with the RELU_AUX_BIAS epilogue
 * (mask given: the ReLU bit-mask written too, and recorded) or RELU_BIAS
 * (mask NULL, or below LT_MASK_ALIGN); the fallback is the unfused dense
 * layer (its own bias epilogue or kernel) and the ReLU kernel in place. */
static void cuda_dense_relu_forward(vae_backend *be, real *out, void *mask, const real *in,
                                    const real *w, const real *b, int B, int I, int O) {
    cuda_ctx *c = ctx_of(be);
    if (mask) {
        lt_mask_forget(c, mask);
        if (!c->use_lt_drelu) {
            mask = NULL;
        } else if (ptr_align(mask) < LT_MASK_ALIGN) {
            if (c->use_lt && !c->lt_noted_unaligned_mask) {
                c->lt_noted_unaligned_mask = 1;
                lt_note(c, "cuBLASLt ReLU mask at %p (dense %d->%d) not %u-byte aligned: not "
                           "used; the backward of the layer above falls back (for such masks "
                           "only)", mask, I, O, LT_MASK_ALIGN);
            }
            mask = NULL;
        }
    }
    if (b) {
        if (mask && lt_dense(c, LT_FWD_RELU_AUX_BIAS, B, I, O, w, in, out, b, mask)) {
            lt_mask_wrote(c, mask, out, B, O);
            return;
        }
        if (lt_dense(c, LT_FWD_RELU_BIAS, B, I, O, w, in, out, b, NULL)) return;
    }
    cuda_dense_forward(be, out, in, w, b, B, I, O);
    if (B > 0 && O > 0) vae_cuda_act_forward(c->stream, out, out, (size_t)B * O, VAE_ACT_RELU, 0);
}

/* din = (dout w) * [in > 0] and dbin = sum_B din: with a mask this layer's
 * input's forward wrote (lt_mask_take), one cuBLASLt GEMM with the
 * DRELU_BGRAD epilogue: m = I, n = B, k = O, A = w (N, lda I), B = dout
 * (N, ldb O), D = din (ldd I), mask I rows by B columns, bias gradient of I
 * entries (one per row of D, summed over its columns: over the batch).
 * Otherwise dense_backward's data-gradient GEMM, then the ReLU backward from
 * `in` and, fused with it, the bias gradient (one kernel; the ReLU-backward
 * kernel alone when there is no dbin). dw and db as dense_backward. */
static void cuda_dense_backward_relu(vae_backend *be, real *din, real *dbin, real *dw, real *db,
                                     const real *dout, const real *in, const void *mask,
                                     const real *w, int B, int I, int O) {
    cuda_ctx *c = ctx_of(be);
    VAE_ASSERT(din);
    const int have_mask = lt_mask_take(c, mask, in, B, I);
    if (!(have_mask && dbin &&
          lt_dense(c, LT_BWD_DRELU_BGRAD, B, I, O, w, dout, din, dbin, mask))) {
        cuda_dense_backward(be, din, NULL, NULL, dout, in, w, B, I, O); /* din = dout w */
        if (dbin)
            vae_cuda_act_bias_grad_rows(c->stream, din, dbin, din, in, B, I, VAE_ACT_RELU, 0,
                                        c->bias_partials);
        else if (B > 0 && I > 0)
            vae_cuda_act_backward(c->stream, din, din, in, (size_t)B * I, VAE_ACT_RELU, 0);
    }
    cuda_dense_backward(be, NULL, dw, db, dout, in, w, B, I, O);
}

static conv_plan *conv_plan_of(cuda_ctx *c, const vae_conv_geom *g, int B) {
    return plan_get(c, B, g->cin, g->hin, g->win, g->cout, g->k, g->hout, g->wout, g->stride,
                    g->pad);
}

/* The convT's conv view: x = the convT output, y = the convT input. */
static conv_plan *convt_plan_of(cuda_ctx *c, const vae_convt_geom *g, int B) {
    return plan_get(c, B, g->cout, g->hout, g->wout, g->cin, g->k, g->hin, g->win, g->stride,
                    g->pad);
}

/* An empty batch (B <= 0) is nothing to do, and the weight and bias
 * gradients of no images are 0, as on the CPU: cuDNN rejects a tensor with
 * n = 0, so these never reach it. */
static void conv_empty_grads(cuda_ctx *c, real *dw, real *db, size_t nw, int cout) {
    if (dw) CUDA_CHECK(cudaMemsetAsync(dw, 0, nw * sizeof(real), c->stream));
    if (db) CUDA_CHECK(cudaMemsetAsync(db, 0, (size_t)cout * sizeof(real), c->stream));
}

/* out [B, C, HW] = act(out + b[c]) after a library convolution, as the
 * direct kernels' epilogue (act VAE_CUDA_CONVT_*: 0 none, else vae_act + 1;
 * b may be NULL): one kernel, or none for neither. */
static void bias_act(cuda_ctx *c, real *out, const real *b, int B, int C, int HW, int act,
                     real slope) {
    if (b) vae_cuda_bias_act_nchw(c->stream, out, b, B, C, HW, act - 1, slope);
    else if (act) vae_cuda_act_forward(c->stream, out, out, (size_t)B * C * HW, act - 1, slope);
}

/* The conv forward, + bias, then act (VAE_CUDA_CONVT_*: 0 none, else
 * vae_act + 1): in the direct kernel's epilogue when the plan chose that
 * kernel, else the plan's algorithm and our bias (+ activation) kernel (the
 * same values). */
static void conv_forward(cuda_ctx *c, const vae_conv_geom *g, int B, real *out, const real *in,
                         const real *w, const real *b, int act, real slope) {
    conv_plan *p = conv_plan_of(c, g, B);
    if (!plan_fwd(c, p, in, w, out)) return; /* refused in a capture: noted there */
    if (conv_direct_run(c, p, DIRECT_FWD, in, w, out, b, act, slope)) return;
    run_fwd(c, p, in, w, out);
    bias_act(c, out, b, B, g->cout, g->hout * g->wout, act, slope);
}

static void cuda_conv2d_forward(vae_backend *be, real *out, const real *in, const real *w,
                                const real *b, const vae_conv_geom *g, int B) {
    if (B <= 0) return;
    conv_forward(ctx_of(be), g, B, out, in, w, b, VAE_CUDA_CONVT_NONE, 0);
}

static void cuda_conv2d_backward(vae_backend *be, real *din, real *dw, real *db, const real *dout,
                                 const real *in, const real *w, const vae_conv_geom *g, int B) {
    cuda_ctx *c = ctx_of(be);
    if (B <= 0) {
        conv_empty_grads(c, dw, db, (size_t)g->cout * g->cin * g->k * g->k, g->cout);
        return;
    }
    conv_plan *p = conv_plan_of(c, g, B);
    if (db)
        vae_cuda_bias_grad_nchw(c->stream, db, dout, B, g->cout, g->hout * g->wout,
                                c->bias_partials);
    if (dw) run_bwd_filter(c, p, in, dout, dw);
    if (din) run_bwd_data(c, p, w, dout, din);
}

/* The convT forward (its plan's data gradient), + bias, then act
 * (VAE_CUDA_CONVT_*: 0 none, else vae_act + 1): in the direct kernel's
 * epilogue when the plan chose that kernel, else the plan's algorithm and
 * one bias + activation kernel (the same values). */
static void convt_forward(cuda_ctx *c, const vae_convt_geom *g, int B, real *out, const real *in,
                          const real *w, const real *b, int act, real slope) {
    conv_plan *p = convt_plan_of(c, g, B);
    if (!plan_bwd_data(c, p, w, in, out)) return; /* refused in a capture: noted there */
    if (conv_direct_run(c, p, DIRECT_DGRAD, in, w, out, b, act, slope)) return;
    run_bwd_data(c, p, w, in, out);
    bias_act(c, out, b, B, g->cout, g->hout * g->wout, act, slope);
}

static void cuda_convt2d_forward(vae_backend *be, real *out, const real *in, const real *w,
                                 const real *b, const vae_convt_geom *g, int B) {
    if (B <= 0) return;
    convt_forward(ctx_of(be), g, B, out, in, w, b, VAE_CUDA_CONVT_NONE, 0);
}

static void cuda_convt2d_backward(vae_backend *be, real *din, real *dw, real *db,
                                  const real *dout, const real *in, const real *w,
                                  const vae_convt_geom *g, int B) {
    cuda_ctx *c = ctx_of(be);
    if (B <= 0) {
        conv_empty_grads(c, dw, db, (size_t)g->cin * g->cout * g->k * g->k, g->cout);
        return;
    }
    conv_plan *p = convt_plan_of(c, g, B);
    if (db)
        vae_cuda_bias_grad_nchw(c->stream, db, dout, B, g->cout, g->hout * g->wout,
                                c->bias_partials);
    if (dw) run_bwd_filter(c, p, dout, in, dw);
    if (din) run_fwd(c, p, dout, w, din);
}

static void cuda_act_forward(vae_backend *be, real *out, const real *in, size_t n, vae_act act,
                             real slope) {
    vae_cuda_act_forward(ctx_of(be)->stream, out, in, n, (int)act, slope);
}

static void cuda_act_backward(vae_backend *be, real *din, const real *dout, const real *out,
                              size_t n, vae_act act, real slope) {
    vae_cuda_act_backward(ctx_of(be)->stream, din, dout, out, n, (int)act, slope);
}

/* Conv / convT + activation: the library's convolution, then one kernel for
 * bias + activation (bias.cu) instead of the bias kernel and the act kernel;
 * for a conv or convT whose plan took the direct kernel, that kernel's
 * epilogue (conv_forward, convt_forward). */
static void cuda_conv2d_act_forward(vae_backend *be, real *out, const real *in, const real *w,
                                    const real *b, const vae_conv_geom *g, int B, vae_act act,
                                    real slope) {
    if (B <= 0) return;
    conv_forward(ctx_of(be), g, B, out, in, w, b, (int)act + 1, slope);
}

static void cuda_convt2d_act_forward(vae_backend *be, real *out, const real *in, const real *w,
                                     const real *b, const vae_convt_geom *g, int B, vae_act act,
                                     real slope) {
    if (B <= 0) return;
    convt_forward(ctx_of(be), g, B, out, in, w, b, (int)act + 1, slope);
}

/* din = dout act'(out) and the conv's db in one pass (bias.cu) */
static void cuda_act_backward_bias(vae_backend *be, real *din, real *db, const real *dout,
                                   const real *out, int B, int C, int HW, vae_act act,
                                   real slope) {
    cuda_ctx *c = ctx_of(be);
    if (C <= 0) return;
    if (!db) {
        if (B > 0 && HW > 0)
            vae_cuda_act_backward(c->stream, din, dout, out, (size_t)B * C * HW, (int)act, slope);
        return;
    }
    /* B or HW 0: the kernel writes db = 0 and no din, as the CPU */
    vae_cuda_act_bias_grad_nchw(c->stream, din, db, dout, out, B > 0 ? B : 0, C, HW > 0 ? HW : 0,
                                (int)act, slope, c->bias_partials);
}

/* ------------------------------------------------------- fused VAE ops */

/* sv: device memory, read by the kernels (never dereferenced here) */
static void cuda_reparam_forward(vae_backend *be, real *z, const real *head, int B, int L,
                                 uint64_t seed, uint32_t stream, const vae_step_vals *sv) {
    vae_cuda_reparam_forward(ctx_of(be)->stream, z, head, B, L, seed, stream, sv);
}

static void cuda_kl_backward(vae_backend *be, real *dhead, real *kl, const real *dz,
                             const real *head, int B, int L, uint64_t seed, uint32_t stream,
                             const vae_step_vals *sv) {
    vae_cuda_kl_backward(ctx_of(be)->stream, dhead, kl, dz, head, B, L, seed, stream, sv);
}

static void cuda_log_q_minus_log_p(vae_backend *be, real *out, const real *z, const real *head,
                                   int B, int L, uint64_t seed, uint32_t stream,
                                   const vae_step_vals *sv) {
    vae_cuda_log_q_minus_log_p(ctx_of(be)->stream, out, z, head, B, L, seed, stream, sv);
}

static void cuda_recon_loss(vae_backend *be, real *dout, real *recon, const real *out,
                            const real *x, int B, int D, vae_likelihood lik, real sigma,
                            real grad_scale) {
    vae_cuda_recon_loss(ctx_of(be)->stream, dout, recon, out, x, B, D, (int)lik, sigma,
                        grad_scale);
}

/* ------------------------------------------------------- reductions */

static void cuda_sum_into(vae_backend *be, double *acc, const real *v, size_t n) {
    cuda_ctx *c = ctx_of(be);
    /* one reduction scratch (with its completion counter): main lane only */
    VAE_ASSERT(c->partials && !c->in_side);
    vae_cuda_sum(c->stream, acc, v, n, 0, 1, c->partials);
}

static void cuda_sum2_into(vae_backend *be, double *acc0, const real *v0, size_t n0,
                           double *acc1, const real *v1, size_t n1) {
    cuda_ctx *c = ctx_of(be);
    VAE_ASSERT(c->partials && !c->in_side);
    vae_cuda_sum_pair(c->stream, acc0, v0, n0, acc1, v1, n1, c->partials);
}

static void cuda_sumsq(vae_backend *be, double *acc, const real *v, size_t n) {
    cuda_ctx *c = ctx_of(be);
    VAE_ASSERT(c->partials && !c->in_side);
    vae_cuda_sum(c->stream, acc, v, n, 1, 0, c->partials);
}

/* hp (host memory) travels by value into the kernel: it is constant over a
 * run, so a captured graph may keep it; the bias corrections come from sv. */
static void cuda_adam_step(vae_backend *be, real *p, const real *g, real *m, real *v, size_t n,
                           const vae_adam_hp *hp, real clip, const double *gnorm2, int *bad,
                           const vae_step_vals *sv) {
    vae_cuda_adam(ctx_of(be)->stream, p, g, m, v, n, hp, clip, gnorm2, bad, sv);
}

/* plan (host memory) travels by value, likewise constant over a run. */
static void cuda_step_begin(vae_backend *be, vae_step_vals *sv, const vae_step_plan *plan) {
    vae_cuda_step_begin(ctx_of(be)->stream, sv, *plan);
}

static void cuda_step_commit(vae_backend *be, double *acc, int *state, const vae_step_vals *sv,
                             int max_bad) {
    vae_cuda_step_commit(ctx_of(be)->stream, acc, state, sv, max_bad);
}

static void cuda_step_snapshot(vae_backend *be, double *acc_dst, int *state_dst,
                               const double *acc, const int *state) {
    vae_cuda_step_snapshot(ctx_of(be)->stream, acc_dst, state_dst, acc, state);
}

/* ------------------------------------------------------------- data */

static void cuda_gather_batch(vae_backend *be, real *x, const uint8_t *data, const int32_t *idx,
                              const vae_step_vals *sv, int B, int D) {
    vae_cuda_gather_batch(ctx_of(be)->stream, x, data, idx, sv, B, D);
}

static void cuda_to_u8(vae_backend *be, uint8_t *px, const real *out, size_t n,
                       vae_likelihood lik) {
    vae_cuda_to_u8(ctx_of(be)->stream, px, out, n, lik == VAE_LIK_BERNOULLI);
}

static void cuda_normal_fill(vae_backend *be, real *z, size_t n, uint64_t seed, uint32_t stream,
                             uint64_t sub, uint64_t first) {
    vae_cuda_normal_fill(ctx_of(be)->stream, z, n, seed, stream, sub, first);
}

static void cuda_latent_fill(vae_backend *be, real *z, int n, int64_t first,
                             const vae_latent_spec *spec, const real *vec) {
    vae_cuda_latent_fill(ctx_of(be)->stream, z, n, first, spec, vec);
}

static void cuda_round_mantissa(vae_backend *be, real *x, size_t n, int bits) {
    vae_cuda_round_mantissa(ctx_of(be)->stream, x, n, bits);
}

static size_t cuda_arena_bytes(vae_backend *be) { return ctx_of(be)->size; }

/* ------------------------------------------------------------ graphs */

/* Records what fn(arg) issues on the compute stream (header comment). A
 * failure is soft: NULL + vae_error_set, the stream out of capture, nothing
 * of fn run on the device. */
static void *cuda_graph_capture(vae_backend *be, void (*fn)(void *arg), void *arg) {
    cuda_ctx *c = ctx_of(be);
    side_join(c); /* earlier segments are the capture's past, not its edges */
    if (soft_cuda(cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeThreadLocal),
                  "graph capture: cudaStreamBeginCapture"))
        return NULL;
    c->capturing = 1;
    c->capture_err[0] = '\0';
    fn(arg);
    side_join(c); /* a forked side stream must rejoin before the capture ends */
    c->capturing = 0;
    cudaGraph_t graph = NULL;
    cudaError_t e = cudaStreamEndCapture(c->stream, &graph);
    if (e != cudaSuccess) {
        if (graph) (void)cudaGraphDestroy(graph);
        soft_cuda(e, "graph capture: cudaStreamEndCapture");
        return NULL;
    }
    if (c->capture_err[0]) {
        CUDA_CHECK(cudaGraphDestroy(graph));
        vae_error_set(VAE_EDEVICE,
                      "CUDA backend: graph capture: %s is not allowed while capturing (run the "
                      "work once uncaptured first, and capture only device work)",
                      c->capture_err);
        return NULL;
    }
    cudaGraphExec_t exec = NULL;
    e = cudaGraphInstantiateWithFlags(&exec, graph, 0);
    CUDA_CHECK(cudaGraphDestroy(graph)); /* the exec is independent of it */
    if (soft_cuda(e, "graph capture: cudaGraphInstantiateWithFlags")) return NULL;
    return (void *)exec;
}

static void cuda_graph_launch(vae_backend *be, void *graph) {
    CUDA_CHECK(cudaGraphLaunch((cudaGraphExec_t)graph, ctx_of(be)->stream));
}

/* A graph still running is freed when it completes (cudaGraphExecDestroy). */
static void cuda_graph_free(vae_backend *be, void *graph) {
    (void)be;
    if (graph) CUDA_CHECK(cudaGraphExecDestroy((cudaGraphExec_t)graph));
}

/* bits < 23: cuBLAS may use TF32 tensor cores (CUBLAS_TF32_TENSOR_OP_MATH),
 * convolution plans made from now on use CUDNN_TENSOR_OP_MATH and cuBLASLt
 * dense plans CUBLAS_COMPUTE_32F_FAST_TF32 (both kinds of plans are keyed by
 * the mode, so fp32 plans stay as they were). With inputs already
 * rounded to <= 10 mantissa bits the tensor-core products are exact. */
static int cuda_set_precision(vae_backend *be, int bits) {
    cuda_ctx *c = ctx_of(be);
    c->tf32 = bits < 23;
    for (int i = 0; i < (c->side_on ? 2 : 1); i++)
        CUBLAS_CHECK(cublasSetMathMode(c->lanes[i].blas,
                                       c->tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
    return VAE_OK;
}

/* ---------------------------------------------------- create / destroy */

int vae_cuda_available(char *why, size_t why_len) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        if (why && why_len) snprintf(why, why_len, "cudaGetDeviceCount: %s", cudaGetErrorString(e));
        return 0;
    }
    if (n < 1) {
        if (why && why_len) snprintf(why, why_len, "no CUDA device found");
        return 0;
    }
    if (why && why_len) why[0] = '\0';
    return 1;
}

int vae_cuda_describe(int device, char *out, size_t len) {
    char why[256];
    if (!vae_cuda_available(why, sizeof why)) {
        snprintf(out, len, "not available: %s", why);
        return 0;
    }
    struct cudaDeviceProp prop;
    int drv = 0, rt = 0, blas_major = 0, blas_minor = 0, blas_patch = 0;
    if (soft_cuda(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties") ||
        soft_cuda(cudaDriverGetVersion(&drv), "cudaDriverGetVersion") ||
        soft_cuda(cudaRuntimeGetVersion(&rt), "cudaRuntimeGetVersion") ||
        soft_cublas(cublasGetProperty(MAJOR_VERSION, &blas_major), "cublasGetProperty") ||
        soft_cublas(cublasGetProperty(MINOR_VERSION, &blas_minor), "cublasGetProperty") ||
        soft_cublas(cublasGetProperty(PATCH_LEVEL, &blas_patch), "cublasGetProperty")) {
        snprintf(out, len, "not available: %s", vae_error_get());
        return 0;
    }
    const size_t dnn = cudnnGetVersion();
    snprintf(out, len,
             "device %d: %s, compute capability %d.%d, %d SMs, %.1f GiB; driver %d.%d, runtime "
             "%d.%d, cuDNN %zu.%zu.%zu, cuBLAS %d.%d.%d",
             device, prop.name, prop.major, prop.minor, prop.multiProcessorCount,
             prop.totalGlobalMem / 1073741824.0, drv / 1000, (drv % 1000) / 10, rt / 1000,
             (rt % 1000) / 10, dnn / 10000, (dnn % 10000) / 100, dnn % 100, blas_major, blas_minor,
             blas_patch);
    return 1;
}

/* Frees whatever was made; status codes are ignored on the creation-failure
 * path (an error is already being reported), checked otherwise. */
static void ctx_teardown(cuda_ctx *c, int checked) {
    if (c->in_side) lane_use(c, 0);
    if (checked && c->side_on && c->lanes[1].stream)
        CUDA_CHECK(cudaStreamSynchronize(c->lanes[1].stream));
    if (checked && c->stream) CUDA_CHECK(cudaStreamSynchronize(c->stream));
    if (checked && c->copy_stream) CUDA_CHECK(cudaStreamSynchronize(c->copy_stream));
    for (int i = 0; i < c->nplan; i++) plan_destroy(c->plans[i]);
    free(c->plans);
    for (int i = 0; i < c->nlt; i++) {
        lt_plan_release(c->lt_plans[i], checked);
        free(c->lt_plans[i]);
    }
    free(c->lt_plans);
    free(c->recs);
    if (checked) {
        if (c->lanes[1].dnn) CUDNN_CHECK(cudnnDestroy(c->lanes[1].dnn));
        if (c->lanes[1].blas) CUBLAS_CHECK(cublasDestroy(c->lanes[1].blas));
        if (c->lanes[1].stream) CUDA_CHECK(cudaStreamDestroy(c->lanes[1].stream));
        for (int i = 0; i < SIDE_EVENTS; i++)
            if (c->ev_seg[i]) CUDA_CHECK(cudaEventDestroy(c->ev_seg[i]));
        if (c->ev_fork) CUDA_CHECK(cudaEventDestroy(c->ev_fork));
        if (c->dnn) CUDNN_CHECK(cudnnDestroy(c->dnn));
        if (c->lt) CUBLAS_CHECK(cublasLtDestroy(c->lt));
        if (c->blas) CUBLAS_CHECK(cublasDestroy(c->blas));
        if (c->base) CUDA_CHECK(cudaFree(c->base));
        if (c->ev_issued) CUDA_CHECK(cudaEventDestroy(c->ev_issued));
        if (c->copy_stream) CUDA_CHECK(cudaStreamDestroy(c->copy_stream));
        if (c->stream) CUDA_CHECK(cudaStreamDestroy(c->stream));
    } else {
        if (c->lanes[1].dnn) (void)cudnnDestroy(c->lanes[1].dnn);
        if (c->lanes[1].blas) (void)cublasDestroy(c->lanes[1].blas);
        if (c->lanes[1].stream) (void)cudaStreamDestroy(c->lanes[1].stream);
        for (int i = 0; i < SIDE_EVENTS; i++)
            if (c->ev_seg[i]) (void)cudaEventDestroy(c->ev_seg[i]);
        if (c->ev_fork) (void)cudaEventDestroy(c->ev_fork);
        if (c->dnn) (void)cudnnDestroy(c->dnn);
        if (c->lt) (void)cublasLtDestroy(c->lt);
        if (c->blas) (void)cublasDestroy(c->blas);
        if (c->base) (void)cudaFree(c->base);
        if (c->ev_issued) (void)cudaEventDestroy(c->ev_issued);
        if (c->copy_stream) (void)cudaStreamDestroy(c->copy_stream);
        if (c->stream) (void)cudaStreamDestroy(c->stream);
        (void)cudaGetLastError();
    }
    free(c);
}

static void cuda_destroy(vae_backend *be) {
    if (!be) return;
    ctx_teardown(ctx_of(be), 1);
    free(be);
}

/* $name: unset or empty CONV_GEMM_TIMED, "1" CONV_GEMM_ALWAYS, "0"
 * CONV_GEMM_NEVER; anything else -1 with vae_error_set. */
static int env_choice(const char *name) {
    const char *v = getenv(name);
    if (!v || !*v) return CONV_GEMM_TIMED;
    if (strcmp(v, "1") == 0) return CONV_GEMM_ALWAYS;
    if (strcmp(v, "0") == 0) return CONV_GEMM_NEVER;
    vae_error_set(VAE_EINVAL, "%s=\"%s\": expected 1 (always) or 0 (never)", name, v);
    return -1;
}

/* Whether programmatic dependent launches can be captured into a CUDA graph
 * and replayed here (drivers of CUDA 12.3 and later): a memset and two
 * dependent launches captured, instantiated and replayed once. cudaSuccess
 * if so; else the first error, with the stream out of capture and the error
 * cleared. */
static cudaError_t pdl_probe(cudaStream_t s) {
    float *buf = NULL;
    cudaError_t e = cudaMalloc((void **)&buf, 64 * sizeof(float));
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return e;
    }
    cudaGraph_t graph = NULL;
    cudaGraphExec_t exec = NULL;
    e = cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal);
    if (e == cudaSuccess) {
        cudaError_t w = cudaMemsetAsync(buf, 0, 64 * sizeof(float), s);
        if (w == cudaSuccess) w = vae_cuda_pdl_probe_launch(s, buf, 16);
        if (w == cudaSuccess) w = vae_cuda_pdl_probe_launch(s, buf, 16);
        e = cudaStreamEndCapture(s, &graph);
        if (w != cudaSuccess) e = w;
    }
    if (e == cudaSuccess) e = cudaGraphInstantiateWithFlags(&exec, graph, 0);
    if (e == cudaSuccess) e = cudaGraphLaunch(exec, s);
    if (e == cudaSuccess) e = cudaStreamSynchronize(s);
    if (e != cudaSuccess) (void)cudaGetLastError();
    if (exec) CUDA_CHECK(cudaGraphExecDestroy(exec));
    if (graph) CUDA_CHECK(cudaGraphDestroy(graph));
    CUDA_CHECK(cudaFree(buf));
    return e;
}

vae_backend *vae_backend_cuda_create(int device) {
    char why[256];
    if (!vae_cuda_available(why, sizeof why)) {
        vae_error_set(VAE_EDEVICE, "CUDA backend: no usable GPU: %s", why);
        return NULL;
    }
    int ndev = 0;
    if (soft_cuda(cudaGetDeviceCount(&ndev), "cudaGetDeviceCount")) return NULL;
    if (device < 0 || device >= ndev) {
        vae_error_set(VAE_EDEVICE, "CUDA backend: device %d requested, %d present", device, ndev);
        return NULL;
    }
    cuda_ctx *c = calloc(1, sizeof *c);
    vae_backend *be = calloc(1, sizeof *be);
    if (!c || !be) {
        free(c);
        free(be);
        vae_error_set(VAE_ENOMEM, "CUDA backend: out of host memory");
        return NULL;
    }
    c->device = device;
    if (soft_cuda(cudaSetDevice(device), "cudaSetDevice")) goto fail;
    /* a build without code for this GPU fails here, cleanly, not at the
     * first kernel launch */
    cudaError_t pe = vae_cuda_probe_kernels();
    if (pe != cudaSuccess) {
        int major = 0, minor = 0;
        (void)cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
        (void)cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device);
        (void)cudaGetLastError();
        vae_error_set(VAE_EDEVICE,
                      "CUDA backend: the kernels cannot run on device %d (compute capability "
                      "%d.%d): %s; rebuild with CMAKE_CUDA_ARCHITECTURES including it",
                      device, major, minor, cudaGetErrorString(pe));
        goto fail;
    }
    if (soft_cuda(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking), "creating a stream") ||
        soft_cuda(cudaStreamCreateWithFlags(&c->copy_stream, cudaStreamNonBlocking),
                  "creating the copy stream") ||
        soft_cuda(cudaEventCreateWithFlags(&c->ev_issued, cudaEventDisableTiming),
                  "creating an event"))
        goto fail;
    if (soft_cublas(cublasCreate(&c->blas), "cublasCreate") ||
        soft_cublas(cublasSetStream(c->blas, c->stream), "cublasSetStream") ||
        soft_cublas(cublasSetMathMode(c->blas, CUBLAS_DEFAULT_MATH), "cublasSetMathMode") ||
        soft_cublas(cublasLtCreate(&c->lt), "cublasLtCreate"))
        goto fail;
    if (soft_cudnn(cudnnCreate(&c->dnn), "cudnnCreate") ||
        soft_cudnn(cudnnSetStream(c->dnn, c->stream), "cudnnSetStream"))
        goto fail;
    const char *algo = getenv("VAE_CUDNN_ALGO");
    c->use_find = !(algo && strcmp(algo, "heuristic") == 0);
    const char *lt = getenv("VAE_CUBLASLT");
    c->use_lt = !(lt && strcmp(lt, "0") == 0);
    if ((c->conv_gemm = env_choice("VAE_CONV_GEMM")) < 0 ||
        (c->conv_direct = env_choice("VAE_CONV_DIRECT")) < 0)
        goto fail;
    const char *cs = getenv("VAE_CONV_GEMM_SLICE");
    if (cs && *cs) {
        char *end = NULL;
        long v = strtol(cs, &end, 10);
        if (*end || v <= 0 || v > INT32_MAX) {
            vae_error_set(VAE_EINVAL, "VAE_CONV_GEMM_SLICE=\"%s\": expected a positive number "
                                      "of images", cs);
            goto fail;
        }
        c->conv_gemm_slice_max = (int)v;
    }
    const char *dv = getenv("VAE_CUDNN_VERBOSE");
    c->dnn_verbose = dv && strcmp(dv, "1") == 0;
    const char *drelu = getenv("VAE_LT_DRELU");
    c->use_lt_drelu = drelu && strcmp(drelu, "1") == 0;
    c->lanes[0] = (struct cuda_lane){c->stream, c->blas, c->dnn, NULL};
    const char *side = getenv("VAE_CUDA_SIDE");
    if (side && *side && strcmp(side, "0") != 0 && strcmp(side, "1") != 0) {
        vae_error_set(VAE_EINVAL, "VAE_CUDA_SIDE=\"%s\": expected 1 (weight gradients on a "
                                  "second stream) or 0", side);
        goto fail;
    }
    c->side_on = side && strcmp(side, "1") == 0;
    /* $VAE_CUDA_PDL=1: programmatic dependent launch of our kernels
     * (src/kernels/common.cuh), on GPUs of compute capability 9.0 and later */
    const char *pdl = getenv("VAE_CUDA_PDL");
    if (pdl && *pdl && strcmp(pdl, "0") != 0 && strcmp(pdl, "1") != 0) {
        vae_error_set(VAE_EINVAL, "VAE_CUDA_PDL=\"%s\": expected 1 (programmatic dependent "
                                  "launch of the engine's kernels) or 0", pdl);
        goto fail;
    }
    vae_cuda_set_pdl(0);
    if (pdl && strcmp(pdl, "1") == 0) {
        int major = 0;
        if (soft_cuda(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device),
                      "cudaDeviceGetAttribute"))
            goto fail;
        const int ptx = vae_cuda_kernels_ptx_version();
        cudaError_t probe = cudaSuccess;
        if (major < 9)
            fprintf(stderr, "vae: VAE_CUDA_PDL=1 ignored: programmatic dependent launch needs "
                            "compute capability 9.0 or later (this GPU: %d.x)\n", major);
        else if (ptx < 90)
            fprintf(stderr, "vae: VAE_CUDA_PDL=1 ignored: this build's kernels run here as "
                            "compute_%d code, without the wait that makes it safe; build with "
                            "CMAKE_CUDA_ARCHITECTURES including 90\n", ptx);
        else if ((probe = pdl_probe(c->stream)) != cudaSuccess)
            fprintf(stderr, "vae: VAE_CUDA_PDL=1 ignored: a CUDA graph of programmatic "
                            "dependent launches fails here: %s\n", cudaGetErrorString(probe));
        else {
            vae_cuda_set_pdl(1);
            fprintf(stderr, "vae: cuda: programmatic dependent launch of the engine's kernels "
                            "(VAE_CUDA_PDL=1)\n");
        }
    }
    if (c->side_on) {
        struct cuda_lane *l = &c->lanes[1];
        if (soft_cuda(cudaStreamCreateWithFlags(&l->stream, cudaStreamNonBlocking),
                      "creating the side stream") ||
            soft_cuda(cudaEventCreateWithFlags(&c->ev_fork, cudaEventDisableTiming),
                      "creating an event"))
            goto fail;
        for (int i = 0; i < SIDE_EVENTS; i++)
            if (soft_cuda(cudaEventCreateWithFlags(&c->ev_seg[i], cudaEventDisableTiming),
                          "creating an event"))
                goto fail;
        if (soft_cublas(cublasCreate(&l->blas), "cublasCreate (side stream)") ||
            soft_cublas(cublasSetStream(l->blas, l->stream), "cublasSetStream") ||
            soft_cublas(cublasSetMathMode(l->blas, CUBLAS_DEFAULT_MATH), "cublasSetMathMode") ||
            soft_cudnn(cudnnCreate(&l->dnn), "cudnnCreate (side stream)") ||
            soft_cudnn(cudnnSetStream(l->dnn, l->stream), "cudnnSetStream"))
            goto fail;
    }

    be->name = "cuda";
    be->batch_variant = 1;
    be->ctx = c;
    be->alloc = cuda_alloc;
    be->release = cuda_release;
    be->upload = cuda_upload;
    be->download = cuda_download;
    be->zero = cuda_zero;
    be->sync = cuda_sync;
    be->destroy = cuda_destroy;
    be->dense_forward = cuda_dense_forward;
    be->dense_backward = cuda_dense_backward;
    be->dense_relu_forward = cuda_dense_relu_forward;
    be->dense_backward_relu = cuda_dense_backward_relu;
    be->conv2d_forward = cuda_conv2d_forward;
    be->conv2d_backward = cuda_conv2d_backward;
    be->convt2d_forward = cuda_convt2d_forward;
    be->convt2d_backward = cuda_convt2d_backward;
    be->act_forward = cuda_act_forward;
    be->act_backward = cuda_act_backward;
    be->conv2d_act_forward = cuda_conv2d_act_forward;
    be->convt2d_act_forward = cuda_convt2d_act_forward;
    be->act_backward_bias = cuda_act_backward_bias;
    if (c->side_on) {
        be->side_begin = cuda_side_begin;
        be->side_end = cuda_side_end;
        be->side_wait = cuda_side_wait;
    }
    be->reparam_forward = cuda_reparam_forward;
    be->kl_backward = cuda_kl_backward;
    be->log_q_minus_log_p = cuda_log_q_minus_log_p;
    be->recon_loss = cuda_recon_loss;
    be->sum_into = cuda_sum_into;
    be->sum2_into = cuda_sum2_into;
    be->sumsq = cuda_sumsq;
    be->adam_step = cuda_adam_step;
    be->step_begin = cuda_step_begin;
    be->step_commit = cuda_step_commit;
    be->step_snapshot = cuda_step_snapshot;
    be->gather_batch = cuda_gather_batch;
    be->to_u8 = cuda_to_u8;
    be->normal_fill = cuda_normal_fill;
    be->latent_fill = cuda_latent_fill;
    be->round_mantissa = cuda_round_mantissa;
    be->reserve = cuda_reserve;
    be->host_alloc = cuda_host_alloc;
    be->host_free = cuda_host_free;
    be->download_async = cuda_download_async;
    be->copy_wait = cuda_copy_wait;
    be->set_precision = cuda_set_precision;
    be->arena_bytes = cuda_arena_bytes;
    be->relu_mask_bytes = cuda_relu_mask_bytes;
    /* graph_launch/graph_free stay set either way (free of NULL is a no-op) */
    const char *graphs = getenv("VAE_CUDA_GRAPH");
    be->graph_capture = graphs && strcmp(graphs, "0") == 0 ? NULL : cuda_graph_capture;
    be->graph_launch = cuda_graph_launch;
    be->graph_free = cuda_graph_free;
    return be;

fail:
    vae_cuda_set_pdl(0);
    ctx_teardown(c, 0);
    free(be);
    return NULL;
}

/* mock_cublas.c — cuBLAS and cuBLASLt of the mock device (mock.h): the
 * functions src/host/backend_cuda.c calls, on the CPU, for fp32 data in host
 * memory (device pointers are host pointers here).
 *
 *   cuBLAS:   cublasCreate_v2, cublasDestroy_v2, cublasSetStream_v2,
 *             cublasSetWorkspace_v2, cublasSetMathMode, cublasGetProperty,
 *             cublasGetStatusString, cublasSgemm_v2
 *   cuBLASLt: cublasLtCreate, cublasLtDestroy, cublasLtMatmulDescCreate,
 *             cublasLtMatmulDescDestroy, cublasLtMatmulDescSetAttribute,
 *             cublasLtMatrixLayoutCreate, cublasLtMatrixLayoutDestroy,
 *             cublasLtMatmulPreferenceCreate, cublasLtMatmulPreferenceDestroy,
 *             cublasLtMatmulPreferenceSetAttribute,
 *             cublasLtMatmulAlgoGetHeuristic,
 *             cublasLtMatmulAlgoConfigGetAttribute, cublasLtMatmul
 *
 * Arguments are checked at call time, as the library does, and a violation
 * returns the library's status with a mock_note saying why. Work is issued
 * with mock_enqueue on the handle's stream (cublasSgemm) or the call's
 * stream (cublasLtMatmul), its arguments by value (alpha and beta read from
 * the host pointers at call time: both APIs are in host pointer mode).
 *
 * Numerics: products of fp32 values are exact in double and are summed in
 * double, in the order of k, so every result is deterministic (and
 * independent of the transposes); the result (scaled, plus beta C, plus the
 * bias) is rounded to fp32 once. TF32 (cublasSetMathMode
 * CUBLAS_TF32_TENSOR_OP_MATH, or CUBLAS_COMPUTE_32F_FAST_TF32) is emulated
 * by rounding A and B to TF32 (10 mantissa bits, to nearest even — "input
 * conversions round to nearest even", cuBLAS docs) before the products. As
 * in the reference BLAS, alpha == 0 reads neither A nor B, beta == 0 does
 * not read C.
 *
 * Test hooks (environment, read at every call):
 *   VAE_MOCK_LT_REFUSE=NAME,NAME,...|all     cublasLtMatmulAlgoGetHeuristic
 *     returns CUBLAS_STATUS_NOT_SUPPORTED and 0 algorithms for the listed
 *     epilogues (the names of cublasLtEpilogue_t without CUBLASLT_EPILOGUE_,
 *     any case, e.g. RELU_AUX_BIAS,DRELU_BGRAD,BGRADB,BIAS,RELU_BIAS); "all"
 *     refuses every epilogue.
 *   VAE_MOCK_LT_REFUSE_MATMUL=...            the same for cublasLtMatmul
 *     itself (after all its checks passed), for the callers' paths where a
 *     plan was made but the call is refused.
 *
 * What a GPU would not report as a status but fault on, or compute garbage
 * for (undefined behaviour), aborts with a note instead: an output
 * overlapping an input, an fp32 pointer that is not 4-byte aligned in
 * cublasSgemm, and a bias or ReLU-mask pointer less aligned than the one
 * cublasLtMatmulAlgoGetHeuristic was shown ("Routines that don't dereference
 * this pointer, like cublasLtMatmulAlgoGetHeuristic() depend on its value to
 * determine expected pointer alignment", cublasLt.h; a real kernel then
 * faults with "misaligned address"). A failing status would only make the
 * caller fall back silently.
 */
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cublas_v2.h>
#include <cublasLt.h>

#include "mock.h"

/* ------------------------------------------------------------ common */

#define BLAS_MAGIC 0x53414c42u   /* "BLAS" */
#define LT_MAGIC 0x4c54484cu     /* "LTHL" */
#define DESC_MAGIC 0x43534544u   /* "DESC" */
#define LAYOUT_MAGIC 0x5459414cu /* "LAYT" */
#define PREF_MAGIC 0x46455250u   /* "PREF" */
#define ALGO_MAGIC 0x6f676c416b636f4dull /* "MockAlgo": cublasLtMatmulAlgo_t.data[0] */

/* what cublasGetProperty reports */
#define MOCK_CUBLAS_MAJOR 13
#define MOCK_CUBLAS_MINOR 0
#define MOCK_CUBLAS_PATCH 0

static const char *status_name(cublasStatus_t s) {
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
    }
    return "<unknown>";
}

/* The largest power of two (<= 256) dividing the address; NULL: 256. */
static unsigned ptr_align(const void *p) {
    uintptr_t a = (uintptr_t)p;
    unsigned r = 1;
    while (r < 256 && !(a & r)) r <<= 1;
    return r;
}

/* A device fault or undefined behaviour on a GPU (file comment). */
static void fault(const char *fn, const char *why) __attribute__((noreturn));
static void fault(const char *fn, const char *why) {
    mock_note("%s: %s (a fault or undefined behaviour on a GPU): aborting", fn, why);
    abort();
}

/* A byte range [lo, hi) of device memory an operation touches. */
typedef struct {
    const char *name;
    uintptr_t lo, hi;
    int written;
} region;

/* Extent of a column-major rows x cols matrix of fp32 with leading dim ld. */
static region mat_region(const char *name, const void *p, int64_t rows, int64_t cols, int64_t ld,
                         int written) {
    region r = {name, (uintptr_t)p, (uintptr_t)p, written};
    if (p && rows > 0 && cols > 0)
        r.hi = r.lo + (uintptr_t)(((cols - 1) * ld + rows) * (int64_t)sizeof(float));
    return r;
}

static region vec_region(const char *name, const void *p, uint64_t bytes, int written) {
    region r = {name, (uintptr_t)p, (uintptr_t)p + (p ? (uintptr_t)bytes : 0), written};
    return r;
}

/* Aborts if a written region overlaps another one (skip_a/skip_b: a pair
 * allowed to coincide, the in-place C == D). */
static void check_overlaps(const char *fn, const region *r, int nr, int skip_a, int skip_b) {
    for (int i = 0; i < nr; i++) {
        if (!r[i].written || r[i].lo == r[i].hi) continue;
        for (int j = 0; j < nr; j++) {
            if (j == i || r[j].lo == r[j].hi) continue;
            if ((i == skip_a && j == skip_b) || (i == skip_b && j == skip_a)) continue;
            if (r[j].written && j < i) continue; /* that pair was seen */
            if (r[i].lo < r[j].hi && r[j].lo < r[i].hi) {
                char why[200];
                snprintf(why, sizeof why, "%s [%p, %p) overlaps %s [%p, %p)", r[i].name,
                         (void *)r[i].lo, (void *)r[i].hi, r[j].name, (void *)r[j].lo,
                         (void *)r[j].hi);
                fault(fn, why);
            }
        }
    }
}

/* ------------------------------------------------------- the GEMM work */

/* One GEMM with its epilogue, by value (cublasSgemm: C = D, DEFAULT). */
typedef struct {
    const float *A, *B, *C;
    float *D;
    const float *bias;       /* BIAS, RELU_BIAS, RELU_AUX_BIAS: read */
    float *bgrad;            /* DRELU_BGRAD, BGRADA, BGRADB: written */
    unsigned char *aux_out;  /* RELU_AUX, RELU_AUX_BIAS: the ReLU bit-mask */
    const unsigned char *aux_in; /* DRELU, DRELU_BGRAD */
    int64_t m, n, k, lda, ldb, ldc, ldd, aux_ld;
    float alpha, beta;
    int ta, tb; /* 1: transposed */
    int tf32;
    uint32_t epi;
} gemm_args;

static float op_elem(const float *X, int64_t ld, int trans, int64_t r, int64_t c) {
    return trans ? X[c + r * ld] : X[r + c * ld];
}

static void gemm_run(void *p) {
    const gemm_args *a = p;
    const int64_t m = a->m, n = a->n, k = a->k;
    const uint32_t epi = a->epi;
    const int use_prod = a->alpha != 0.0f && k > 0 && m > 0 && n > 0;
    float *ap = NULL, *bp = NULL;
    if (use_prod) {
        /* op(A) row i and op(B) column j contiguous over l */
        ap = malloc((size_t)(m * k) * sizeof *ap);
        bp = malloc((size_t)(n * k) * sizeof *bp);
        if (!ap || !bp) {
            mock_note("cuBLAS GEMM %lldx%lldx%lld: out of host memory", (long long)m,
                      (long long)n, (long long)k);
            abort();
        }
        for (int64_t i = 0; i < m; i++)
            for (int64_t l = 0; l < k; l++) {
                float v = op_elem(a->A, a->lda, a->ta, i, l);
                ap[i * k + l] = a->tf32 ? mock_tf32_round(v) : v;
            }
        for (int64_t j = 0; j < n; j++)
            for (int64_t l = 0; l < k; l++) {
                float v = op_elem(a->B, a->ldb, a->tb, l, j);
                bp[j * k + l] = a->tf32 ? mock_tf32_round(v) : v;
            }
    }
    const int relu = epi == CUBLASLT_EPILOGUE_RELU || epi == CUBLASLT_EPILOGUE_RELU_AUX ||
                     epi == CUBLASLT_EPILOGUE_RELU_BIAS || epi == CUBLASLT_EPILOGUE_RELU_AUX_BIAS;
    const int drelu = epi == CUBLASLT_EPILOGUE_DRELU || epi == CUBLASLT_EPILOGUE_DRELU_BGRAD;
    const int64_t col_bytes = a->aux_ld / 8;
    /* acc[c * m + i] = sum_l op(A)[i,l] op(B)[l,j0+c], c < 2: each sum in the
     * order of l; 4 rows x 2 columns at a time only to overlap the chains */
    double *acc = malloc((size_t)(2 * (m > 0 ? m : 1)) * sizeof *acc);
    if (!acc) {
        mock_note("cuBLAS GEMM %lldx%lldx%lld: out of host memory", (long long)m, (long long)n,
                  (long long)k);
        abort();
    }
    for (int64_t j0 = 0; j0 < n; j0 += 2) {
        const int64_t nc = n - j0 < 2 ? n - j0 : 2;
        if (use_prod) {
            const float *y0 = bp + j0 * k, *y1 = nc > 1 ? y0 + k : y0;
            int64_t i = 0;
            for (; i + 4 <= m; i += 4) {
                const float *x0 = ap + i * k, *x1 = x0 + k, *x2 = x1 + k, *x3 = x2 + k;
                double s00 = 0, s10 = 0, s20 = 0, s30 = 0, s01 = 0, s11 = 0, s21 = 0, s31 = 0;
                for (int64_t l = 0; l < k; l++) {
                    const double v0 = y0[l], v1 = y1[l];
                    s00 += (double)x0[l] * v0, s10 += (double)x1[l] * v0;
                    s20 += (double)x2[l] * v0, s30 += (double)x3[l] * v0;
                    s01 += (double)x0[l] * v1, s11 += (double)x1[l] * v1;
                    s21 += (double)x2[l] * v1, s31 += (double)x3[l] * v1;
                }
                acc[i] = s00, acc[i + 1] = s10, acc[i + 2] = s20, acc[i + 3] = s30;
                acc[m + i] = s01, acc[m + i + 1] = s11, acc[m + i + 2] = s21, acc[m + i + 3] = s31;
            }
            for (; i < m; i++) {
                const float *x = ap + i * k;
                double s0 = 0, s1 = 0;
                for (int64_t l = 0; l < k; l++)
                    s0 += (double)x[l] * (double)y0[l], s1 += (double)x[l] * (double)y1[l];
                acc[i] = s0, acc[m + i] = s1;
            }
        }
        for (int64_t c = 0; c < nc; c++) {
            const int64_t j = j0 + c;
            if (a->aux_out) memset(a->aux_out + j * col_bytes, 0, (size_t)col_bytes);
            for (int64_t i = 0; i < m; i++) {
                double v = use_prod ? (double)a->alpha * acc[c * m + i] : 0.0;
                if (a->beta != 0.0f) v += (double)a->beta * (double)a->C[i + j * a->ldc];
                if (a->bias) v += (double)a->bias[i];
                float f = (float)v;
                if (relu) {
                    if (a->aux_out && f > 0.0f) {
                        const int64_t bit = i + j * a->aux_ld;
                        a->aux_out[bit >> 3] |= (unsigned char)(1u << (bit & 7));
                    }
                    f = f > 0.0f ? f : 0.0f;
                } else if (drelu) {
                    const int64_t bit = i + j * a->aux_ld;
                    if (!((a->aux_in[bit >> 3] >> (bit & 7)) & 1u)) f = 0.0f;
                }
                a->D[i + j * a->ldd] = f;
            }
        }
    }
    free(acc);
    if (a->bgrad) {
        if (epi == CUBLASLT_EPILOGUE_DRELU_BGRAD) {
            for (int64_t i = 0; i < m; i++) {
                double s = 0.0;
                for (int64_t j = 0; j < n; j++) s += (double)a->D[i + j * a->ldd];
                a->bgrad[i] = (float)s;
            }
        } else if (epi == CUBLASLT_EPILOGUE_BGRADA) {
            for (int64_t i = 0; i < m; i++) {
                double s = 0.0;
                for (int64_t l = 0; l < k; l++) s += (double)op_elem(a->A, a->lda, a->ta, i, l);
                a->bgrad[i] = (float)s;
            }
        } else { /* BGRADB */
            for (int64_t j = 0; j < n; j++) {
                double s = 0.0;
                for (int64_t l = 0; l < k; l++) s += (double)op_elem(a->B, a->ldb, a->tb, l, j);
                a->bgrad[j] = (float)s;
            }
        }
    }
    free(ap);
    free(bp);
}

/* ------------------------------------------------------------ cuBLAS */

struct cublasContext {
    uint32_t magic;
    cudaStream_t stream;
    void *ws;          /* cublasSetWorkspace; NULL with ws_user 0: the default pool */
    size_t ws_bytes;
    int ws_user;
    cublasMath_t math;
};

static struct cublasContext *blas_of(cublasHandle_t h, const char *fn) {
    if (!h || h->magic != BLAS_MAGIC) {
        mock_note("%s: handle %p is not a live cuBLAS handle", fn, (void *)h);
        return NULL;
    }
    return h;
}

cublasStatus_t cublasCreate_v2(cublasHandle_t *handle) {
    if (!handle) {
        mock_note("cublasCreate: handle is NULL");
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    struct cublasContext *c = calloc(1, sizeof *c);
    if (!c) return CUBLAS_STATUS_ALLOC_FAILED;
    c->magic = BLAS_MAGIC;
    c->math = CUBLAS_DEFAULT_MATH;
    *handle = c;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy_v2(cublasHandle_t handle) {
    struct cublasContext *c = blas_of(handle, "cublasDestroy");
    if (!c) return CUBLAS_STATUS_NOT_INITIALIZED;
    c->magic = 0;
    free(c);
    return CUBLAS_STATUS_SUCCESS;
}

/* "This function unconditionally resets the cuBLAS library workspace back to
 * the default workspace pool" (cuBLAS docs, cublasSetStream). */
cublasStatus_t cublasSetStream_v2(cublasHandle_t handle, cudaStream_t streamId) {
    struct cublasContext *c = blas_of(handle, "cublasSetStream");
    if (!c) return CUBLAS_STATUS_NOT_INITIALIZED;
    c->stream = streamId;
    c->ws = NULL;
    c->ws_bytes = 0;
    c->ws_user = 0;
    return CUBLAS_STATUS_SUCCESS;
}

/* "The workspace pointer has to be aligned to at least 256 bytes, otherwise
 * CUBLAS_STATUS_INVALID_VALUE error is returned" (cuBLAS docs). */
cublasStatus_t cublasSetWorkspace_v2(cublasHandle_t handle, void *workspace,
                                     size_t workspaceSizeInBytes) {
    struct cublasContext *c = blas_of(handle, "cublasSetWorkspace");
    if (!c) return CUBLAS_STATUS_NOT_INITIALIZED;
    if ((uintptr_t)workspace % 256) {
        mock_note("cublasSetWorkspace: workspace %p is not 256-byte aligned", workspace);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    if (!workspace && workspaceSizeInBytes) {
        mock_note("cublasSetWorkspace: workspace NULL with %zu bytes", workspaceSizeInBytes);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    c->ws = workspace;
    c->ws_bytes = workspaceSizeInBytes;
    c->ws_user = 1;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode) {
    struct cublasContext *c = blas_of(handle, "cublasSetMathMode");
    if (!c) return CUBLAS_STATUS_NOT_INITIALIZED;
    const unsigned base = (unsigned)mode & ~(unsigned)CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION;
    switch (base) {
    case CUBLAS_DEFAULT_MATH:
    case CUBLAS_TENSOR_OP_MATH:
    case CUBLAS_PEDANTIC_MATH:
    case CUBLAS_TF32_TENSOR_OP_MATH:
    case CUBLAS_FP32_EMULATED_BF16X9_MATH:
    case CUBLAS_FP64_EMULATED_FIXEDPOINT_MATH: break;
    default:
        mock_note("cublasSetMathMode: %u is not a cublasMath_t", (unsigned)mode);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    c->math = mode;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGetProperty(libraryPropertyType type, int *value) {
    if (!value) {
        mock_note("cublasGetProperty: value is NULL");
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    switch (type) {
    case MAJOR_VERSION: *value = MOCK_CUBLAS_MAJOR; return CUBLAS_STATUS_SUCCESS;
    case MINOR_VERSION: *value = MOCK_CUBLAS_MINOR; return CUBLAS_STATUS_SUCCESS;
    case PATCH_LEVEL: *value = MOCK_CUBLAS_PATCH; return CUBLAS_STATUS_SUCCESS;
    }
    mock_note("cublasGetProperty: %d is not a libraryPropertyType", (int)type);
    return CUBLAS_STATUS_INVALID_VALUE;
}

const char *cublasGetStatusString(cublasStatus_t status) { return status_name(status); }

static int op_ok(cublasOperation_t op) {
    return op == CUBLAS_OP_N || op == CUBLAS_OP_T || op == CUBLAS_OP_C;
}

static int64_t imax1(int64_t x) { return x > 1 ? x : 1; }

/* C = alpha op(A) op(B) + beta C, column-major (cuBLAS docs, cublas<t>gemm:
 * CUBLAS_STATUS_INVALID_VALUE "if m < 0 or n < 0 or k < 0, or if transa and
 * transb are not one of CUBLAS_OP_N, CUBLAS_OP_C, CUBLAS_OP_T, or if lda <
 * max(1, m) when transa == CUBLAS_OP_N and lda < max(1, k) otherwise, or if
 * ldb < max(1, k) when transb == CUBLAS_OP_N and ldb < max(1, n) otherwise,
 * or if ldc < max(1, m)", or alpha / beta NULL, or C NULL when beta != 0). */
cublasStatus_t cublasSgemm_v2(cublasHandle_t handle, cublasOperation_t transa,
                              cublasOperation_t transb, int m, int n, int k, const float *alpha,
                              const float *A, int lda, const float *B, int ldb, const float *beta,
                              float *C, int ldc) {
    static const char fn[] = "cublasSgemm";
    struct cublasContext *c = blas_of(handle, fn);
    if (!c) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (m < 0 || n < 0 || k < 0) {
        mock_note("%s: m = %d, n = %d, k = %d: negative", fn, m, n, k);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    if (!op_ok(transa) || !op_ok(transb)) {
        mock_note("%s: transa %d / transb %d: not CUBLAS_OP_N, _T or _C", fn, (int)transa,
                  (int)transb);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    const int ta = transa != CUBLAS_OP_N, tb = transb != CUBLAS_OP_N;
    if (lda < imax1(ta ? k : m)) {
        mock_note("%s: lda = %d < max(1, %s = %d)", fn, lda, ta ? "k" : "m", ta ? k : m);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    if (ldb < imax1(tb ? n : k)) {
        mock_note("%s: ldb = %d < max(1, %s = %d)", fn, ldb, tb ? "n" : "k", tb ? n : k);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    if (ldc < imax1(m)) {
        mock_note("%s: ldc = %d < max(1, m = %d)", fn, ldc, m);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    if (!alpha || !beta) {
        mock_note("%s: alpha or beta is NULL", fn);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    const float al = *alpha, be = *beta;
    const int reads_ab = al != 0.0f && k > 0 && m > 0 && n > 0;
    if (m > 0 && n > 0 && !C) {
        mock_note("%s: C is NULL", fn);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    if (reads_ab && (!A || !B)) {
        mock_note("%s: %s is NULL", fn, !A ? "A" : "B");
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    const unsigned math = (unsigned)c->math & ~(unsigned)CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION;
    if (math == CUBLAS_TENSOR_OP_MATH) {
        mock_note("%s: CUBLAS_TENSOR_OP_MATH (fp16 compute) is not modelled by the mock", fn);
        return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    /* quick return, as the reference BLAS */
    if (m == 0 || n == 0 || ((al == 0.0f || k == 0) && be == 1.0f)) return CUBLAS_STATUS_SUCCESS;
    if ((uintptr_t)C % sizeof(float) || (reads_ab && ((uintptr_t)A % sizeof(float) ||
                                                       (uintptr_t)B % sizeof(float))))
        fault(fn, "an fp32 matrix pointer is not 4-byte aligned");
    if (reads_ab) {
        region r[3] = {mat_region("C", C, m, n, ldc, 1),
                       mat_region("A", A, ta ? k : m, ta ? m : k, lda, 0),
                       mat_region("B", B, tb ? n : k, tb ? k : n, ldb, 0)};
        check_overlaps(fn, r, 3, -1, -1);
    }
    gemm_args a;
    memset(&a, 0, sizeof a);
    a.A = A, a.B = B, a.C = C, a.D = C;
    a.m = m, a.n = n, a.k = k, a.lda = lda, a.ldb = ldb, a.ldc = ldc, a.ldd = ldc;
    a.alpha = al, a.beta = be, a.ta = ta, a.tb = tb;
    a.tf32 = math == CUBLAS_TF32_TENSOR_OP_MATH;
    a.epi = CUBLASLT_EPILOGUE_DEFAULT;
    if (mock_enqueue(c->stream, "cublasSgemm", gemm_run, &a, sizeof a))
        return CUBLAS_STATUS_EXECUTION_FAILED;
    return CUBLAS_STATUS_SUCCESS;
}

/* ---------------------------------------------------------- cuBLASLt */

struct cublasLtContext {
    uint32_t magic;
};

typedef struct {
    cublasLtMatmulDescOpaque_t opaque; /* first: the handle points here */
    uint32_t magic;
    int32_t compute, scale, pointer_mode, transa, transb, transc;
    uint32_t epilogue;
    const void *bias;
    int64_t bias_batch_stride;
    const void *aux;
    int64_t aux_ld, aux_batch_stride;
    int32_t aux_type, bias_type;
} lt_desc;

typedef struct {
    cublasLtMatrixLayoutOpaque_t opaque;
    uint32_t magic;
    int32_t type;
    uint64_t rows, cols;
    int64_t ld;
} lt_layout;

typedef struct {
    cublasLtMatmulPreferenceOpaque_t opaque;
    uint32_t magic;
    uint32_t search_mode;
    uint64_t max_ws;
    uint32_t red_mask;
    uint32_t align[4]; /* A, B, C, D */
    float max_waves;
    uint64_t impl_mask;
} lt_pref;

static struct cublasLtContext *lt_of(cublasLtHandle_t h, const char *fn) {
    if (!h || h->magic != LT_MAGIC) {
        mock_note("%s: handle %p is not a live cuBLASLt handle", fn, (void *)h);
        return NULL;
    }
    return h;
}

static lt_desc *desc_of(cublasLtMatmulDesc_t d, const char *fn) {
    lt_desc *p = (lt_desc *)(void *)d;
    if (!p || p->magic != DESC_MAGIC) {
        mock_note("%s: %p is not a live matmul descriptor", fn, (void *)d);
        return NULL;
    }
    return p;
}

static lt_layout *layout_of(cublasLtMatrixLayout_t l, const char *fn, const char *which) {
    lt_layout *p = (lt_layout *)(void *)l;
    if (!p || p->magic != LAYOUT_MAGIC) {
        mock_note("%s: %s %p is not a live matrix layout", fn, which, (void *)l);
        return NULL;
    }
    return p;
}

static lt_pref *pref_of(cublasLtMatmulPreference_t q, const char *fn) {
    lt_pref *p = (lt_pref *)(void *)q;
    if (!p || p->magic != PREF_MAGIC) {
        mock_note("%s: %p is not a live matmul preference", fn, (void *)q);
        return NULL;
    }
    return p;
}

cublasStatus_t cublasLtCreate(cublasLtHandle_t *lightHandle) {
    if (!lightHandle) {
        mock_note("cublasLtCreate: lightHandle is NULL");
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    struct cublasLtContext *c = calloc(1, sizeof *c);
    if (!c) return CUBLAS_STATUS_ALLOC_FAILED;
    c->magic = LT_MAGIC;
    *lightHandle = c;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtDestroy(cublasLtHandle_t lightHandle) {
    struct cublasLtContext *c = lt_of(lightHandle, "cublasLtDestroy");
    if (!c) return CUBLAS_STATUS_NOT_INITIALIZED;
    c->magic = 0;
    free(c);
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *matmulDesc,
                                        cublasComputeType_t computeType,
                                        cudaDataType_t scaleType) {
    if (!matmulDesc) {
        mock_note("cublasLtMatmulDescCreate: matmulDesc is NULL");
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    lt_desc *d = calloc(1, sizeof *d);
    if (!d) return CUBLAS_STATUS_ALLOC_FAILED;
    d->magic = DESC_MAGIC;
    d->compute = (int32_t)computeType;
    d->scale = (int32_t)scaleType;
    d->pointer_mode = CUBLASLT_POINTER_MODE_HOST;
    d->transa = d->transb = d->transc = CUBLAS_OP_N;
    d->epilogue = CUBLASLT_EPILOGUE_DEFAULT;
    d->aux_type = -1;  /* header: "default: -1" */
    d->bias_type = -1; /* header: "default: -1" */
    *matmulDesc = &d->opaque;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t matmulDesc) {
    lt_desc *d = desc_of(matmulDesc, "cublasLtMatmulDescDestroy");
    if (!d) return CUBLAS_STATUS_INVALID_VALUE;
    d->magic = 0;
    free(d);
    return CUBLAS_STATUS_SUCCESS;
}

/* "CUBLAS_STATUS_INVALID_VALUE if buf is NULL or sizeInBytes doesn't match
 * size of internal storage for selected attribute" (cublasLt.h). */
static cublasStatus_t put_attr(const char *fn, const char *name, void *dst, size_t dsize,
                               const void *buf, size_t size) {
    if (!buf || size != dsize) {
        mock_note("%s(%s): buf %p, sizeInBytes %zu (the attribute has %zu bytes)", fn, name, buf,
                  size, dsize);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    memcpy(dst, buf, size);
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t matmulDesc,
                                              cublasLtMatmulDescAttributes_t attr,
                                              const void *buf, size_t sizeInBytes) {
    static const char fn[] = "cublasLtMatmulDescSetAttribute";
    lt_desc *d = desc_of(matmulDesc, fn);
    if (!d) return CUBLAS_STATUS_INVALID_VALUE;
#define ATTR(name, field) \
    case name: return put_attr(fn, #name, &d->field, sizeof d->field, buf, sizeInBytes)
    switch ((int)attr) {
        ATTR(CUBLASLT_MATMUL_DESC_COMPUTE_TYPE, compute);
        ATTR(CUBLASLT_MATMUL_DESC_SCALE_TYPE, scale);
        ATTR(CUBLASLT_MATMUL_DESC_POINTER_MODE, pointer_mode);
        ATTR(CUBLASLT_MATMUL_DESC_TRANSA, transa);
        ATTR(CUBLASLT_MATMUL_DESC_TRANSB, transb);
        ATTR(CUBLASLT_MATMUL_DESC_TRANSC, transc);
        ATTR(CUBLASLT_MATMUL_DESC_EPILOGUE, epilogue);
        ATTR(CUBLASLT_MATMUL_DESC_BIAS_POINTER, bias);
        ATTR(CUBLASLT_MATMUL_DESC_BIAS_BATCH_STRIDE, bias_batch_stride);
        ATTR(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, aux);
        ATTR(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, aux_ld);
        ATTR(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_BATCH_STRIDE, aux_batch_stride);
        ATTR(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_DATA_TYPE, aux_type);
        ATTR(CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, bias_type);
    }
#undef ATTR
    mock_note("%s: attribute %d is unknown or not modelled by the mock", fn, (int)attr);
    return CUBLAS_STATUS_INVALID_VALUE;
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *matLayout, cudaDataType type,
                                          uint64_t rows, uint64_t cols, int64_t ld) {
    if (!matLayout) {
        mock_note("cublasLtMatrixLayoutCreate: matLayout is NULL");
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    lt_layout *l = calloc(1, sizeof *l);
    if (!l) return CUBLAS_STATUS_ALLOC_FAILED;
    l->magic = LAYOUT_MAGIC;
    l->type = (int32_t)type;
    l->rows = rows;
    l->cols = cols;
    l->ld = ld;
    *matLayout = &l->opaque;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t matLayout) {
    lt_layout *l = layout_of(matLayout, "cublasLtMatrixLayoutDestroy", "matLayout");
    if (!l) return CUBLAS_STATUS_INVALID_VALUE;
    l->magic = 0;
    free(l);
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *pref) {
    if (!pref) {
        mock_note("cublasLtMatmulPreferenceCreate: pref is NULL");
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    lt_pref *p = calloc(1, sizeof *p);
    if (!p) return CUBLAS_STATUS_ALLOC_FAILED;
    p->magic = PREF_MAGIC;
    p->search_mode = CUBLASLT_SEARCH_BEST_FIT;
    p->max_ws = 0;                               /* "default: 0 - no workspace allowed" */
    p->red_mask = CUBLASLT_REDUCTION_SCHEME_MASK; /* "allows all reduction schemes" */
    for (int i = 0; i < 4; i++) p->align[i] = 256; /* "default: 256" */
    p->impl_mask = UINT64_MAX;                   /* "allow everything" */
    *pref = &p->opaque;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t pref) {
    lt_pref *p = pref_of(pref, "cublasLtMatmulPreferenceDestroy");
    if (!p) return CUBLAS_STATUS_INVALID_VALUE;
    p->magic = 0;
    free(p);
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t pref,
                                                    cublasLtMatmulPreferenceAttributes_t attr,
                                                    const void *buf, size_t sizeInBytes) {
    static const char fn[] = "cublasLtMatmulPreferenceSetAttribute";
    lt_pref *p = pref_of(pref, fn);
    if (!p) return CUBLAS_STATUS_INVALID_VALUE;
#define ATTR(name, field) \
    case name: return put_attr(fn, #name, &p->field, sizeof p->field, buf, sizeInBytes)
    switch ((int)attr) {
        ATTR(CUBLASLT_MATMUL_PREF_SEARCH_MODE, search_mode);
        ATTR(CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, max_ws);
        ATTR(CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, red_mask);
        ATTR(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, align[0]);
        ATTR(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, align[1]);
        ATTR(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, align[2]);
        ATTR(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, align[3]);
        ATTR(CUBLASLT_MATMUL_PREF_MAX_WAVES_COUNT, max_waves);
        ATTR(CUBLASLT_MATMUL_PREF_IMPL_MASK, impl_mask);
    }
#undef ATTR
    mock_note("%s: attribute %d is unknown or not modelled by the mock", fn, (int)attr);
    return CUBLAS_STATUS_INVALID_VALUE;
}

/* ---- epilogues */

static const char *epi_name(uint32_t e) {
    switch (e) {
    case CUBLASLT_EPILOGUE_DEFAULT: return "DEFAULT";
    case CUBLASLT_EPILOGUE_RELU: return "RELU";
    case CUBLASLT_EPILOGUE_RELU_AUX: return "RELU_AUX";
    case CUBLASLT_EPILOGUE_BIAS: return "BIAS";
    case CUBLASLT_EPILOGUE_RELU_BIAS: return "RELU_BIAS";
    case CUBLASLT_EPILOGUE_RELU_AUX_BIAS: return "RELU_AUX_BIAS";
    case CUBLASLT_EPILOGUE_DRELU: return "DRELU";
    case CUBLASLT_EPILOGUE_DRELU_BGRAD: return "DRELU_BGRAD";
    case CUBLASLT_EPILOGUE_GELU: return "GELU";
    case CUBLASLT_EPILOGUE_GELU_AUX: return "GELU_AUX";
    case CUBLASLT_EPILOGUE_GELU_BIAS: return "GELU_BIAS";
    case CUBLASLT_EPILOGUE_GELU_AUX_BIAS: return "GELU_AUX_BIAS";
    case CUBLASLT_EPILOGUE_DGELU: return "DGELU";
    case CUBLASLT_EPILOGUE_DGELU_BGRAD: return "DGELU_BGRAD";
    case CUBLASLT_EPILOGUE_BGRADA: return "BGRADA";
    case CUBLASLT_EPILOGUE_BGRADB: return "BGRADB";
    }
    return NULL;
}

/* What the mock computes (file comment and gemm_run); the GELU family is
 * known but not modelled. */
static int epi_modelled(uint32_t e) {
    switch (e) {
    case CUBLASLT_EPILOGUE_DEFAULT:
    case CUBLASLT_EPILOGUE_RELU:
    case CUBLASLT_EPILOGUE_RELU_AUX:
    case CUBLASLT_EPILOGUE_BIAS:
    case CUBLASLT_EPILOGUE_RELU_BIAS:
    case CUBLASLT_EPILOGUE_RELU_AUX_BIAS:
    case CUBLASLT_EPILOGUE_DRELU:
    case CUBLASLT_EPILOGUE_DRELU_BGRAD:
    case CUBLASLT_EPILOGUE_BGRADA:
    case CUBLASLT_EPILOGUE_BGRADB: return 1;
    }
    return 0;
}

static int epi_bias_in(uint32_t e) {
    return e == CUBLASLT_EPILOGUE_BIAS || e == CUBLASLT_EPILOGUE_RELU_BIAS ||
           e == CUBLASLT_EPILOGUE_RELU_AUX_BIAS;
}

static int epi_bias_out(uint32_t e) {
    return e == CUBLASLT_EPILOGUE_DRELU_BGRAD || e == CUBLASLT_EPILOGUE_BGRADA ||
           e == CUBLASLT_EPILOGUE_BGRADB;
}

static int epi_aux_out(uint32_t e) {
    return e == CUBLASLT_EPILOGUE_RELU_AUX || e == CUBLASLT_EPILOGUE_RELU_AUX_BIAS;
}

static int epi_aux_in(uint32_t e) {
    return e == CUBLASLT_EPILOGUE_DRELU || e == CUBLASLT_EPILOGUE_DRELU_BGRAD;
}

/* Case-insensitive comparison of n bytes. */
static int ci_eq(const char *a, const char *b, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (tolower((unsigned char)a[i]) != tolower((unsigned char)b[i])) return 0;
    return 1;
}

/* 1 if $var lists the epilogue (file comment). */
static int lt_refused(const char *var, uint32_t epi) {
    const char *v = getenv(var);
    if (!v || !*v) return 0;
    static const char prefix[] = "CUBLASLT_EPILOGUE_";
    const size_t plen = sizeof prefix - 1;
    int hit = 0;
    while (*v) {
        while (*v == ',' || isspace((unsigned char)*v)) v++;
        const char *s = v;
        while (*v && *v != ',') v++;
        const char *e = v;
        while (e > s && isspace((unsigned char)e[-1])) e--;
        size_t len = (size_t)(e - s);
        if (!len) continue;
        if (len > plen && ci_eq(s, prefix, plen)) s += plen, len -= plen;
        int known = len == 3 && ci_eq(s, "all", 3);
        if (known) hit = 1;
        for (uint32_t cand = 1; cand <= CUBLASLT_EPILOGUE_BGRADB && !known; cand++) {
            const char *cn = epi_name(cand);
            if (cn && strlen(cn) == len && ci_eq(s, cn, len)) {
                known = 1;
                if (cand == epi) hit = 1;
            }
        }
        if (!known) mock_note("%s: \"%.*s\" is not an epilogue name (ignored)", var, (int)len, s);
    }
    return hit;
}

/* ---- the problem a descriptor and four layouts describe */

typedef struct {
    int ta, tb, tf32;
    int64_t m, n, k, lda, ldb, ldc, ldd, aux_ld;
    int64_t a_rows, a_cols, b_rows, b_cols; /* as stored */
    uint32_t epi;
    int64_t bias_len; /* entries of the bias / bias gradient; 0: none */
} lt_prob;

static cublasStatus_t layout_check(const char *fn, const char *which, const lt_layout *l) {
    if (l->type != CUDA_R_32F) {
        mock_note("%s: %s has data type %d; the mock models CUDA_R_32F only", fn, which,
                  (int)l->type);
        return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    /* "Usually only values that can be expressed as int32_t are supported" */
    if (l->rows > INT32_MAX || l->cols > INT32_MAX ||
        (l->cols > 1 && l->ld > 0 && l->cols - 1 > ((uint64_t)1 << 52) / (uint64_t)l->ld)) {
        mock_note("%s: %s is %llu x %llu, ld %lld: too large", fn, which,
                  (unsigned long long)l->rows, (unsigned long long)l->cols, (long long)l->ld);
        return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    /* "Currently only non-negative values are supported, must be large enough
     * so that matrix memory locations are not overlapping (e.g. greater or
     * equal to CUBLASLT_MATRIX_LAYOUT_ROWS in case of CUBLASLT_ORDER_COL)" */
    if (l->ld < 0 || (uint64_t)l->ld < l->rows) {
        mock_note("%s: %s has ld %lld < rows %llu", fn, which, (long long)l->ld,
                  (unsigned long long)l->rows);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    return CUBLAS_STATUS_SUCCESS;
}

/* What cublasLtMatmulAlgoGetHeuristic and cublasLtMatmul both check: no
 * pointers (but the ones in the descriptor are not dereferenced). */
static cublasStatus_t lt_check(const char *fn, const lt_desc *d, const lt_layout *la,
                               const lt_layout *lb, const lt_layout *lc, const lt_layout *ldd,
                               lt_prob *p) {
    memset(p, 0, sizeof *p);
    switch (d->compute) {
    case CUBLAS_COMPUTE_32F:
    case CUBLAS_COMPUTE_32F_PEDANTIC:
    case CUBLAS_COMPUTE_32F_EMULATED_16BFX9: p->tf32 = 0; break;
    case CUBLAS_COMPUTE_32F_FAST_TF32: p->tf32 = 1; break;
    default:
        mock_note("%s: compute type %d is not modelled by the mock (fp32 data: CUBLAS_COMPUTE_32F, "
                  "_PEDANTIC, _FAST_TF32, _EMULATED_16BFX9)", fn, (int)d->compute);
        return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    if (d->scale != CUDA_R_32F) {
        mock_note("%s: scale type %d with fp32 data: not supported", fn, (int)d->scale);
        return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    if (d->pointer_mode != CUBLASLT_POINTER_MODE_HOST) {
        mock_note("%s: pointer mode %d is not modelled by the mock", fn, (int)d->pointer_mode);
        return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    if (!op_ok((cublasOperation_t)d->transa) || !op_ok((cublasOperation_t)d->transb)) {
        mock_note("%s: TRANSA %d / TRANSB %d: not a cublasOperation_t", fn, (int)d->transa,
                  (int)d->transb);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    if (d->transc != CUBLAS_OP_N) { /* "Currently only CUBLAS_OP_N is supported." */
        mock_note("%s: TRANSC %d: only CUBLAS_OP_N is supported", fn, (int)d->transc);
        return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    cublasStatus_t st;
    if ((st = layout_check(fn, "Adesc", la)) != CUBLAS_STATUS_SUCCESS ||
        (st = layout_check(fn, "Bdesc", lb)) != CUBLAS_STATUS_SUCCESS ||
        (st = layout_check(fn, "Cdesc", lc)) != CUBLAS_STATUS_SUCCESS ||
        (st = layout_check(fn, "Ddesc", ldd)) != CUBLAS_STATUS_SUCCESS)
        return st;
    p->ta = d->transa != CUBLAS_OP_N;
    p->tb = d->transb != CUBLAS_OP_N;
    /* D = alpha op(A) op(B) + beta C: op(A) m x k, op(B) k x n, C and D m x n */
    p->m = (int64_t)ldd->rows, p->n = (int64_t)ldd->cols;
    p->a_rows = (int64_t)la->rows, p->a_cols = (int64_t)la->cols;
    p->b_rows = (int64_t)lb->rows, p->b_cols = (int64_t)lb->cols;
    p->k = p->ta ? p->a_rows : p->a_cols;
    const int64_t opa_rows = p->ta ? p->a_cols : p->a_rows;
    const int64_t opb_rows = p->tb ? p->b_cols : p->b_rows, opb_cols = p->tb ? p->b_rows : p->b_cols;
    if (lc->rows != ldd->rows || lc->cols != ldd->cols) {
        mock_note("%s: C is %llu x %llu, D %llu x %llu", fn, (unsigned long long)lc->rows,
                  (unsigned long long)lc->cols, (unsigned long long)ldd->rows,
                  (unsigned long long)ldd->cols);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    if (opa_rows != p->m || opb_rows != p->k || opb_cols != p->n) {
        mock_note("%s: op(A) is %lld x %lld, op(B) %lld x %lld, D %lld x %lld: not m x k, k x n, "
                  "m x n", fn, (long long)opa_rows, (long long)p->k, (long long)opb_rows,
                  (long long)opb_cols, (long long)p->m, (long long)p->n);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    p->lda = la->ld, p->ldb = lb->ld, p->ldc = lc->ld, p->ldd = ldd->ld;
    p->epi = d->epilogue;
    if (!epi_name(p->epi)) {
        mock_note("%s: epilogue %u is not a cublasLtEpilogue_t", fn, (unsigned)p->epi);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    if (!epi_modelled(p->epi)) {
        mock_note("%s: epilogue %s is not modelled by the mock", fn, epi_name(p->epi));
        return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    if (epi_bias_in(p->epi) || epi_bias_out(p->epi)) {
        /* "Bias vector length must match matrix D rows count"; BGRADB: "The
         * bias size corresponds to the number of columns of the matrix D" */
        p->bias_len = p->epi == CUBLASLT_EPILOGUE_BGRADB ? p->n : p->m;
        if (d->bias_type != -1 && d->bias_type != CUDA_R_32F) {
            mock_note("%s: bias data type %d with fp32 output: not supported", fn,
                      (int)d->bias_type);
            return CUBLAS_STATUS_NOT_SUPPORTED;
        }
    }
    if (epi_aux_in(p->epi) || epi_aux_out(p->epi)) {
        if (d->aux_type != -1) { /* "ReLu uses a bit-mask." */
            mock_note("%s: %s with an aux data type (%d): the ReLU mask is a bit-mask", fn,
                      epi_name(p->epi), (int)d->aux_type);
            return CUBLAS_STATUS_NOT_SUPPORTED;
        }
        /* "ReLu bit-mask matrix leading dimension in elements (i.e. bits) ...
         * Must be divisible by 128 and be no less than the number of rows in
         * the output matrix." */
        if (d->aux_ld < 0 || d->aux_ld % 128 || d->aux_ld < p->m) {
            mock_note("%s: %s: EPILOGUE_AUX_LD %lld is not a multiple of 128 >= the %lld rows of D",
                      fn, epi_name(p->epi), (long long)d->aux_ld, (long long)p->m);
            return CUBLAS_STATUS_INVALID_VALUE;
        }
        p->aux_ld = d->aux_ld;
    }
    return CUBLAS_STATUS_SUCCESS;
}

/* The algorithm: cublasLtMatmulAlgo_t.data[0] = ALGO_MAGIC, data[1] the
 * alignments of A, B, C, D the preference stated (16 bits each), data[2]
 * those of the bias and aux pointers the descriptor held, data[3] the
 * epilogue, data[4] its index among the results (two when two or more are
 * requested, so that a caller that times the heuristic's candidates runs
 * that path; both compute the same); the rest 0. */
static unsigned cap256(uint32_t a) { return a > 256 ? 256 : a; }

static unsigned algo_align(const cublasLtMatmulAlgo_t *al, int i) {
    return (unsigned)((al->data[1 + i / 4] >> (16 * (i % 4))) & 0xffffu);
}
enum { AL_A = 0, AL_B = 1, AL_C = 2, AL_D = 3, AL_BIAS = 4, AL_AUX = 5 };

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t lightHandle,
                                              cublasLtMatmulDesc_t operationDesc,
                                              cublasLtMatrixLayout_t Adesc,
                                              cublasLtMatrixLayout_t Bdesc,
                                              cublasLtMatrixLayout_t Cdesc,
                                              cublasLtMatrixLayout_t Ddesc,
                                              cublasLtMatmulPreference_t preference,
                                              int requestedAlgoCount,
                                              cublasLtMatmulHeuristicResult_t heuristicResultsArray[],
                                              int *returnAlgoCount) {
    static const char fn[] = "cublasLtMatmulAlgoGetHeuristic";
    if (returnAlgoCount) *returnAlgoCount = 0;
    if (!lt_of(lightHandle, fn)) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (requestedAlgoCount <= 0 || !heuristicResultsArray || !returnAlgoCount) {
        mock_note("%s: requestedAlgoCount %d, heuristicResultsArray %p, returnAlgoCount %p", fn,
                  requestedAlgoCount, (void *)heuristicResultsArray, (void *)returnAlgoCount);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    const lt_desc *d = desc_of(operationDesc, fn);
    const lt_layout *la = layout_of(Adesc, fn, "Adesc"), *lb = layout_of(Bdesc, fn, "Bdesc");
    const lt_layout *lc = layout_of(Cdesc, fn, "Cdesc"), *ldd = layout_of(Ddesc, fn, "Ddesc");
    const lt_pref *pref = pref_of(preference, fn);
    if (!d || !la || !lb || !lc || !ldd || !pref) return CUBLAS_STATUS_INVALID_VALUE;
    lt_prob p;
    cublasStatus_t st = lt_check(fn, d, la, lb, lc, ldd, &p);
    if (st != CUBLAS_STATUS_SUCCESS) return st;
    if (pref->search_mode != CUBLASLT_SEARCH_BEST_FIT) {
        mock_note("%s: search mode %u is not modelled by the mock", fn, (unsigned)pref->search_mode);
        return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    /* the one algorithm, and whether the preference lets it through */
    for (int i = 0; i < 4; i++)
        if (pref->align[i] < sizeof(float)) {
            mock_note("%s: MIN_ALIGNMENT_%c_BYTES = %u: no fp32 algorithm works below %zu", fn,
                      "ABCD"[i], (unsigned)pref->align[i], sizeof(float));
            return CUBLAS_STATUS_NOT_SUPPORTED;
        }
    const uint64_t impl = CUBLASLT_NUMERICAL_IMPL_FLAGS_ACCUMULATOR_32F |
                          (p.tf32 ? CUBLASLT_NUMERICAL_IMPL_FLAGS_HMMA |
                                        CUBLASLT_NUMERICAL_IMPL_FLAGS_INPUT_TF32
                                  : CUBLASLT_NUMERICAL_IMPL_FLAGS_FMA |
                                        CUBLASLT_NUMERICAL_IMPL_FLAGS_INPUT_32F);
    const float waves = 1.0f;
    if ((impl & ~pref->impl_mask) || (pref->max_waves > 0.0f && waves > pref->max_waves)) {
        mock_note("%s: the preference (IMPL_MASK %#llx, MAX_WAVES_COUNT %g) excludes the mock's "
                  "algorithm", fn, (unsigned long long)pref->impl_mask, (double)pref->max_waves);
        return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    /* workspace 0 fits any MAX_WORKSPACE_BYTES; split-K 1 (reduction scheme
     * NONE) passes any REDUCTION_SCHEME_MASK */
    if (lt_refused("VAE_MOCK_LT_REFUSE", p.epi)) {
        mock_note("%s: epilogue %s refused ($VAE_MOCK_LT_REFUSE)", fn, epi_name(p.epi));
        return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    const int nres = requestedAlgoCount < 2 ? requestedAlgoCount : 2;
    for (int i = 0; i < nres; i++) {
        cublasLtMatmulHeuristicResult_t *r = &heuristicResultsArray[i];
        memset(r, 0, sizeof *r);
        r->algo.data[0] = ALGO_MAGIC;
        r->algo.data[1] = (uint64_t)cap256(pref->align[0]) | (uint64_t)cap256(pref->align[1]) << 16 |
                          (uint64_t)cap256(pref->align[2]) << 32 |
                          (uint64_t)cap256(pref->align[3]) << 48;
        r->algo.data[2] = (uint64_t)ptr_align(d->bias) | (uint64_t)ptr_align(d->aux) << 16;
        r->algo.data[3] = p.epi;
        r->algo.data[4] = (uint64_t)i;
        r->workspaceSize = 0;
        r->state = CUBLAS_STATUS_SUCCESS;
        r->wavesCount = waves;
    }
    *returnAlgoCount = nres;
    return CUBLAS_STATUS_SUCCESS;
}

/* "CUBLAS_STATUS_INVALID_VALUE if sizeInBytes is 0 and sizeWritten is NULL,
 * or if sizeInBytes is non-zero and buf is NULL or sizeInBytes doesn't match
 * size of internal storage for selected attribute" (cublasLt.h). */
cublasStatus_t cublasLtMatmulAlgoConfigGetAttribute(const cublasLtMatmulAlgo_t *algo,
                                                    cublasLtMatmulAlgoConfigAttributes_t attr,
                                                    void *buf, size_t sizeInBytes,
                                                    size_t *sizeWritten) {
    static const char fn[] = "cublasLtMatmulAlgoConfigGetAttribute";
    if (!algo || algo->data[0] != ALGO_MAGIC) {
        mock_note("%s: %p is not an algorithm of cublasLtMatmulAlgoGetHeuristic", fn,
                  (const void *)algo);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    const int32_t splitk = 1;
    const uint32_t scheme = CUBLASLT_REDUCTION_SCHEME_NONE;
    const void *src;
    size_t size;
    switch ((int)attr) {
    case CUBLASLT_ALGO_CONFIG_SPLITK_NUM: src = &splitk, size = sizeof splitk; break;
    case CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME: src = &scheme, size = sizeof scheme; break;
    default:
        mock_note("%s: attribute %d is unknown or not modelled by the mock", fn, (int)attr);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    if (sizeInBytes == 0) {
        if (!sizeWritten) {
            mock_note("%s: sizeInBytes 0 and sizeWritten NULL", fn);
            return CUBLAS_STATUS_INVALID_VALUE;
        }
        *sizeWritten = size;
        return CUBLAS_STATUS_SUCCESS;
    }
    if (!buf || sizeInBytes != size) {
        mock_note("%s: buf %p, sizeInBytes %zu (the attribute has %zu bytes)", fn, buf,
                  sizeInBytes, size);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    memcpy(buf, src, size);
    if (sizeWritten) *sizeWritten = size;
    return CUBLAS_STATUS_SUCCESS;
}

/* D = alpha op(A) op(B) + beta C, then the epilogue (cublasLt.h):
 *
 * BIAS: "apply (broadcasted) Bias from bias vector. Bias vector length must
 *   match matrix D rows, it must be packed (stride between vector elements
 *   is 1). Bias vector is broadcasted to all columns and added before
 *   applying final postprocessing."  D[i,j] = acc[i,j] + bias[i], i < m.
 * RELU_BIAS: "apply Bias and then ReLu transform" (ReLu: "x:=max(x, 0)").
 * RELU_AUX_BIAS: the same, and "produces an extra output, a ReLu bit-mask
 *   matrix": the aux pointer, "ReLu bit-mask matrix leading dimension in
 *   elements (i.e. bits) ... divisible by 128 and ... no less than the
 *   number of rows in the output matrix". The header does not say which
 *   outputs set a bit nor the bit order in a byte: here bit (i, j) is bit
 *   (i + j aux_ld) % 8 of byte (i + j aux_ld) / 8, set iff the fp32 value
 *   before the ReLU is > 0 (so it agrees with "output > 0"; NaN: 0); bits
 *   m .. aux_ld-1 of each of the n columns are written 0 (the whole
 *   n aux_ld / 8 bytes are written).
 * DRELU_BGRAD: "Apply independently ReLu and Bias gradient to matmul output.
 *   Store ReLu gradient in the output matrix, and Bias gradient in the
 *   auxiliary output (see CUBLASLT_MATMUL_DESC_BIAS_POINTER)", the mask an
 *   input: D[i,j] = bit(i,j) ? acc[i,j] : 0, and bias[i] = sum_j D[i,j]
 *   (length m, "Bias vector length must match matrix D rows count"): the sum
 *   of the ReLU gradient, i.e. of the masked D — what makes it the gradient
 *   of a bias added before the ReLU (Apex's use of DGELU_BGRAD likewise).
 *   "Independently" could also be read as summing the unmasked product; the
 *   masked reading is the one that is a bias gradient.
 * BGRADA: "Bias gradient based on the input matrix A. The bias size
 *   corresponds to the number of rows of the matrix D. The reduction happens
 *   over the GEMM's "k" dimension."  bias[i] = sum_l op(A)[i,l], i < m.
 * BGRADB: "Bias gradient based on the input matrix B. The bias size
 *   corresponds to the number of columns of the matrix D. The reduction
 *   happens over the GEMM's "k" dimension."  bias[j] = sum_l op(B)[l,j],
 *   j < n. D is the plain product for both. The input sums are not scaled
 *   by alpha (the header names the input matrix, not the product).
 */
cublasStatus_t cublasLtMatmul(cublasLtHandle_t lightHandle, cublasLtMatmulDesc_t computeDesc,
                              const void *alpha, const void *A, cublasLtMatrixLayout_t Adesc,
                              const void *B, cublasLtMatrixLayout_t Bdesc, const void *beta,
                              const void *C, cublasLtMatrixLayout_t Cdesc, void *D,
                              cublasLtMatrixLayout_t Ddesc, const cublasLtMatmulAlgo_t *algo,
                              void *workspace, size_t workspaceSizeInBytes, cudaStream_t stream) {
    static const char fn[] = "cublasLtMatmul";
    (void)workspace; /* the mock's algorithm needs none: any size is enough */
    (void)workspaceSizeInBytes;
    if (!lt_of(lightHandle, fn)) return CUBLAS_STATUS_NOT_INITIALIZED;
    const lt_desc *d = desc_of(computeDesc, fn);
    const lt_layout *la = layout_of(Adesc, fn, "Adesc"), *lb = layout_of(Bdesc, fn, "Bdesc");
    const lt_layout *lc = layout_of(Cdesc, fn, "Cdesc"), *ldd = layout_of(Ddesc, fn, "Ddesc");
    if (!d || !la || !lb || !lc || !ldd) return CUBLAS_STATUS_INVALID_VALUE;
    lt_prob p;
    cublasStatus_t st = lt_check(fn, d, la, lb, lc, ldd, &p);
    if (st != CUBLAS_STATUS_SUCCESS) return st;
    if (!alpha || !beta) {
        mock_note("%s: alpha or beta is NULL", fn);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    float al, be;
    memcpy(&al, alpha, sizeof al);
    memcpy(&be, beta, sizeof be);
    const int64_t m = p.m, n = p.n, k = p.k;
    const uint32_t epi = p.epi;
    const int reads_ab = al != 0.0f && k > 0 && m > 0 && n > 0;
    const int reads_a = reads_ab || (epi == CUBLASLT_EPILOGUE_BGRADA && m > 0 && k > 0);
    const int reads_b = reads_ab || (epi == CUBLASLT_EPILOGUE_BGRADB && n > 0 && k > 0);
    const int reads_c = be != 0.0f && m > 0 && n > 0;
    const int has_bias = (epi_bias_in(epi) || epi_bias_out(epi)) && p.bias_len > 0;
    const int has_aux = (epi_aux_in(epi) || epi_aux_out(epi)) && m > 0 && n > 0;
    if ((reads_a && !A) || (reads_b && !B) || (reads_c && !C) || (m > 0 && n > 0 && !D)) {
        mock_note("%s: %s is NULL", fn,
                  reads_a && !A ? "A" : reads_b && !B ? "B" : reads_c && !C ? "C" : "D");
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    if (C && C == D && p.ldc != p.ldd) { /* in place: C and D are one matrix */
        mock_note("%s: C == D (in place) with ldc %lld != ldd %lld", fn, (long long)p.ldc,
                  (long long)p.ldd);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    if (has_bias && !d->bias) {
        mock_note("%s: epilogue %s needs CUBLASLT_MATMUL_DESC_BIAS_POINTER", fn, epi_name(epi));
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    if (has_aux && !d->aux) {
        mock_note("%s: epilogue %s needs CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER", fn,
                  epi_name(epi));
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    const void *ptrs[4] = {reads_a ? A : NULL, reads_b ? B : NULL, reads_c ? C : NULL, D};
    if (algo) {
        if (algo->data[0] != ALGO_MAGIC) {
            mock_note("%s: algo %p is not an algorithm of cublasLtMatmulAlgoGetHeuristic", fn,
                      (const void *)algo);
            return CUBLAS_STATUS_INVALID_VALUE;
        }
        if (algo->data[3] != epi) { /* cublasLtMatmulAlgoCheck: "INVALID_VALUE if ...
                                     * operation descriptor don't match algo descriptor" */
            mock_note("%s: the algorithm was found for epilogue %s, the descriptor has %s", fn,
                      epi_name((uint32_t)algo->data[3]) ? epi_name((uint32_t)algo->data[3]) : "?",
                      epi_name(epi));
            return CUBLAS_STATUS_INVALID_VALUE;
        }
        /* the preference promised these alignments; an algorithm may rely on
         * them (cuBLASLt answers CUBLAS_STATUS_NOT_SUPPORTED for pointers
         * less aligned than its algorithm needs). $VAE_MOCK_LT_STRICT=1
         * aborts instead: a caller whose plans record the alignments they
         * were made for never breaks the promise, and one that does would,
         * on a GPU, fall back quietly, losing the epilogue for the shape. */
        for (int i = 0; i < 4; i++) {
            const unsigned need = algo_align(algo, i);
            if (ptrs[i] && need > 1 && (uintptr_t)ptrs[i] % need) {
                mock_note("%s: %c = %p is not %u-byte aligned, as the preference stated "
                          "(MIN_ALIGNMENT_%c_BYTES)", fn, "ABCD"[i], ptrs[i], need, "ABCD"[i]);
                const char *strict = getenv("VAE_MOCK_LT_STRICT");
                if (strict && *strict && strcmp(strict, "0") != 0)
                    fault(fn, "a pointer less aligned than the preference promised "
                              "(VAE_MOCK_LT_STRICT)");
                return CUBLAS_STATUS_NOT_SUPPORTED;
            }
        }
        if (has_bias && ptr_align(d->bias) < algo_align(algo, AL_BIAS)) {
            char why[160];
            snprintf(why, sizeof why, "bias %p is less aligned than the %u bytes of the bias "
                     "pointer the heuristic was shown", d->bias, algo_align(algo, AL_BIAS));
            fault(fn, why);
        }
        if (has_aux && ptr_align(d->aux) < algo_align(algo, AL_AUX)) {
            char why[160];
            snprintf(why, sizeof why, "aux %p is less aligned than the %u bytes of the aux "
                     "pointer the heuristic was shown", d->aux, algo_align(algo, AL_AUX));
            fault(fn, why);
        }
    }
    for (int i = 0; i < 4; i++)
        if (ptrs[i] && (uintptr_t)ptrs[i] % sizeof(float)) {
            mock_note("%s: %c = %p is not aligned to its fp32 elements", fn, "ABCD"[i], ptrs[i]);
            return CUBLAS_STATUS_NOT_SUPPORTED;
        }
    if (has_bias && (uintptr_t)d->bias % sizeof(float))
        fault(fn, "the bias pointer is not aligned to its fp32 elements");
    if (lt_refused("VAE_MOCK_LT_REFUSE_MATMUL", epi)) {
        mock_note("%s: epilogue %s refused ($VAE_MOCK_LT_REFUSE_MATMUL)", fn, epi_name(epi));
        return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    /* outputs must not overlap what the operation reads or writes */
    region r[6];
    int nr = 0;
    r[nr++] = mat_region("A", reads_a ? A : NULL, p.a_rows, p.a_cols, p.lda, 0);
    r[nr++] = mat_region("B", reads_b ? B : NULL, p.b_rows, p.b_cols, p.ldb, 0);
    r[nr++] = mat_region("C", reads_c ? C : NULL, m, n, p.ldc, 0);
    r[nr++] = mat_region("D", D, m, n, p.ldd, 1);
    r[nr++] = vec_region(epi_bias_out(epi) ? "the bias gradient" : "the bias",
                         has_bias ? d->bias : NULL, (uint64_t)p.bias_len * sizeof(float),
                         epi_bias_out(epi));
    r[nr++] = vec_region("the ReLU mask", has_aux ? d->aux : NULL,
                         epi_aux_out(epi) ? (uint64_t)(n * p.aux_ld / 8)
                                          : (uint64_t)(((n - 1) * p.aux_ld + m + 7) / 8),
                         epi_aux_out(epi));
    check_overlaps(fn, r, nr, C == D ? 2 : -1, C == D ? 3 : -1);
    if (m == 0 && n == 0) return CUBLAS_STATUS_SUCCESS;
    gemm_args a;
    memset(&a, 0, sizeof a);
    a.A = A, a.B = B, a.C = C, a.D = D;
    a.m = m, a.n = n, a.k = k, a.lda = p.lda, a.ldb = p.ldb, a.ldc = p.ldc, a.ldd = p.ldd;
    a.alpha = al, a.beta = be, a.ta = p.ta, a.tb = p.tb, a.tf32 = p.tf32, a.epi = epi;
    a.aux_ld = p.aux_ld;
    if (has_bias && epi_bias_in(epi)) a.bias = d->bias;
    if (has_bias && epi_bias_out(epi)) a.bgrad = (float *)(uintptr_t)d->bias;
    if (has_aux && epi_aux_out(epi)) a.aux_out = (unsigned char *)(uintptr_t)d->aux;
    if (has_aux && epi_aux_in(epi)) a.aux_in = d->aux;
    if (mock_enqueue(stream, "cublasLtMatmul", gemm_run, &a, sizeof a))
        return CUBLAS_STATUS_EXECUTION_FAILED;
    return CUBLAS_STATUS_SUCCESS;
}

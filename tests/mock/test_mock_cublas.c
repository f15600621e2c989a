/* test_mock_cublas.c — checks tests/mock/mock_cublas.c on its own: every
 * GEMM and epilogue against a naive reference written from the formulas of
 * cublas_api.h / cublasLt.h (all transposes, odd sizes, ld > rows, beta 0
 * with NaN in C, alpha 0 with NaN in A and B), the argument checks, the
 * heuristic, the VAE_MOCK_LT_REFUSE hooks, the aborts for what would fault
 * on a GPU, and that work is issued through mock_enqueue by value.
 *
 * Built with mock_cublas.c alone: the mock.h functions are stubbed here
 * (mock_enqueue runs a copy of the arguments, now or, in "deferred" mode,
 * when the test says; mock_note counts the notes and prints the unexpected
 * ones). Define TEST_MOCK_CUBLAS_NO_STUB to link with mock_cudart.c instead
 * (the checks that need the stub's counters are then skipped).
 *
 *   gcc -std=c11 -Wall -Wextra -I/usr/local/cuda/include -Itests/mock \
 *       tests/mock/mock_cublas.c tests/mock/test_mock_cublas.c -lm
 * Exit status 0: all passed; 1: a check failed.
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cublas_v2.h>
#include <cublasLt.h>

#include "mock.h"

static int g_fail, g_checks;
static int g_notes;        /* notes seen */
static int g_expect_note;  /* a failure is expected: notes are counted, not printed */
static int g_enqueued;     /* mock_enqueue calls */
static cudaStream_t g_last_stream;
static int g_defer;        /* mock_enqueue keeps the work until run_deferred() */

#define CHECK(c)                                                                  \
    do {                                                                          \
        g_checks++;                                                               \
        if (!(c)) {                                                               \
            g_fail++;                                                             \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c); \
        }                                                                         \
    } while (0)

#define CHECK_MSG(c, ...)                                                \
    do {                                                                 \
        g_checks++;                                                      \
        if (!(c)) {                                                      \
            g_fail++;                                                    \
            fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #c); \
            fprintf(stderr, __VA_ARGS__);                                \
            fputc('\n', stderr);                                         \
        }                                                                \
    } while (0)

#ifndef TEST_MOCK_CUBLAS_NO_STUB
#define HAVE_STUB 1
static struct {
    mock_fn fn;
    void *args;
} g_pending[8];
static int g_npending;

int mock_enqueue(cudaStream_t s, const char *what, mock_fn fn, const void *args, size_t size) {
    void *copy = malloc(size);
    if (!copy) abort();
    memcpy(copy, args, size);
    g_enqueued++;
    g_last_stream = s;
    if (g_defer && g_npending < 8) {
        g_pending[g_npending].fn = fn;
        g_pending[g_npending++].args = copy;
        return 0;
    }
    fn(copy);
    free(copy);
    return 0;
}

int mock_capturing(cudaStream_t s) {
    (void)s;
    return 0;
}

void mock_note(const char *fmt, ...) {
    g_notes++;
    if (g_expect_note) return;
    va_list ap;
    va_start(ap, fmt);
    fputs("mock device: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static void run_deferred(void) {
    for (int i = 0; i < g_npending; i++) {
        g_pending[i].fn(g_pending[i].args);
        free(g_pending[i].args);
    }
    g_npending = 0;
}
#else
#define HAVE_STUB 0
static void run_deferred(void) {}
#endif

/* A call expected to fail with `want`, saying why in a note. */
#define EXPECT_FAIL(call, want)                                                         \
    do {                                                                                \
        int n0_ = g_notes;                                                              \
        g_expect_note = 1;                                                              \
        cublasStatus_t st_ = (call);                                                    \
        g_expect_note = 0;                                                              \
        CHECK_MSG(st_ == (want), "%s returned %s, expected %s", #call,                 \
                  cublasGetStatusString(st_), cublasGetStatusString(want));             \
        if (HAVE_STUB) CHECK_MSG(g_notes > n0_, "%s: no mock_note said why", #call);    \
    } while (0)

#define EXPECT_OK(call)                                                                  \
    do {                                                                                 \
        cublasStatus_t st_ = (call);                                                     \
        CHECK_MSG(st_ == CUBLAS_STATUS_SUCCESS, "%s returned %s", #call,                 \
                  cublasGetStatusString(st_));                                           \
    } while (0)

/* ------------------------------------------------------------ helpers */

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng >> 11);
}
/* values in [-1, 1), some exactly 0 */
static float frand(void) {
    uint32_t r = rnd();
    if (r % 13 == 0) return 0.0f;
    return (float)((double)(r % 2000001u) / 1000000.0 - 1.0);
}

/* 256-byte aligned buffer of n floats (+ slack), filled with `fill` */
static float *fbuf(size_t n, float fill) {
    size_t bytes = (n + 64) * sizeof(float);
    bytes = (bytes + 255) / 256 * 256;
    float *p = aligned_alloc(256, bytes);
    if (!p) abort();
    for (size_t i = 0; i < bytes / sizeof(float); i++) p[i] = fill;
    return p;
}

static void frandom(float *p, size_t n) {
    for (size_t i = 0; i < n; i++) p[i] = frand();
}

static int same_bits(float a, float b) { return memcmp(&a, &b, sizeof a) == 0; }

static int close_to(double got, double want) {
    return fabs(got - want) <= 1e-6 * fmax(1.0, fabs(want)) || (isnan(got) && isnan(want));
}

/* op(X)[r, c] of a column-major X with leading dimension ld */
static double opx(const float *X, int ld, int trans, int r, int c) {
    return trans ? (double)X[c + (size_t)r * ld] : (double)X[r + (size_t)c * ld];
}

/* TF32 by the definition: 11 significant bits, to nearest even */
static float tf32_ref(float x) {
    if (x == 0.0f || !isfinite(x)) return x;
    int e;
    double m = frexp((double)x, &e);
    return (float)ldexp(nearbyint(ldexp(m, 11)), e - 11);
}


/* ---------------------------------------------------------- cuBLAS */

static void test_status_and_property(void) {
    static const struct {
        cublasStatus_t s;
        const char *name;
    } names[] = {
        {CUBLAS_STATUS_SUCCESS, "CUBLAS_STATUS_SUCCESS"},
        {CUBLAS_STATUS_NOT_INITIALIZED, "CUBLAS_STATUS_NOT_INITIALIZED"},
        {CUBLAS_STATUS_ALLOC_FAILED, "CUBLAS_STATUS_ALLOC_FAILED"},
        {CUBLAS_STATUS_INVALID_VALUE, "CUBLAS_STATUS_INVALID_VALUE"},
        {CUBLAS_STATUS_ARCH_MISMATCH, "CUBLAS_STATUS_ARCH_MISMATCH"},
        {CUBLAS_STATUS_MAPPING_ERROR, "CUBLAS_STATUS_MAPPING_ERROR"},
        {CUBLAS_STATUS_EXECUTION_FAILED, "CUBLAS_STATUS_EXECUTION_FAILED"},
        {CUBLAS_STATUS_INTERNAL_ERROR, "CUBLAS_STATUS_INTERNAL_ERROR"},
        {CUBLAS_STATUS_NOT_SUPPORTED, "CUBLAS_STATUS_NOT_SUPPORTED"},
        {CUBLAS_STATUS_LICENSE_ERROR, "CUBLAS_STATUS_LICENSE_ERROR"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        CHECK(strcmp(cublasGetStatusString(names[i].s), names[i].name) == 0);
    CHECK(cublasGetStatusString((cublasStatus_t)12345) != NULL);
    int v = -1;
    EXPECT_OK(cublasGetProperty(MAJOR_VERSION, &v));
    CHECK(v == 13);
    EXPECT_OK(cublasGetProperty(MINOR_VERSION, &v));
    CHECK(v == 0);
    EXPECT_OK(cublasGetProperty(PATCH_LEVEL, &v));
    CHECK(v == 0);
    EXPECT_FAIL(cublasGetProperty(MAJOR_VERSION, NULL), CUBLAS_STATUS_INVALID_VALUE);
    EXPECT_FAIL(cublasGetProperty((libraryPropertyType)7, &v), CUBLAS_STATUS_INVALID_VALUE);
}

static void test_handle_calls(void) {
    cublasHandle_t h = NULL;
    EXPECT_OK(cublasCreate(&h));
    EXPECT_FAIL(cublasCreate(NULL), CUBLAS_STATUS_INVALID_VALUE);
    EXPECT_OK(cublasSetStream(h, (cudaStream_t)(uintptr_t)0x5000));
    EXPECT_OK(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH));
    EXPECT_OK(cublasSetMathMode(h, CUBLAS_TF32_TENSOR_OP_MATH));
    EXPECT_OK(cublasSetMathMode(h, (cublasMath_t)(CUBLAS_PEDANTIC_MATH |
                                                  CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION)));
    EXPECT_FAIL(cublasSetMathMode(h, (cublasMath_t)5), CUBLAS_STATUS_INVALID_VALUE);
    float *ws = fbuf(1024, 0.0f);
    EXPECT_OK(cublasSetWorkspace(h, ws, 4096));
    EXPECT_FAIL(cublasSetWorkspace(h, ws + 4, 4096), CUBLAS_STATUS_INVALID_VALUE); /* 16 bytes */
    EXPECT_OK(cublasSetWorkspace(h, NULL, 0));
    EXPECT_FAIL(cublasSetWorkspace(h, NULL, 64), CUBLAS_STATUS_INVALID_VALUE);
    EXPECT_OK(cublasDestroy(h));
    EXPECT_FAIL(cublasDestroy(NULL), CUBLAS_STATUS_NOT_INITIALIZED);
    EXPECT_FAIL(cublasSetStream(NULL, NULL), CUBLAS_STATUS_NOT_INITIALIZED);
    free(ws);
}

/* C = alpha op(A) op(B) + beta C against the reference, every transpose. */
static void test_sgemm(void) {
    static const int sizes[][3] = {{1, 1, 1}, {3, 5, 7}, {17, 4, 9}, {8, 1, 13},
                                   {5, 6, 0}, {0, 3, 2}, {33, 31, 65}};
    static const float ab[][2] = {{1, 0}, {0.75f, -0.5f}, {0, 2}, {1, 1}, {0, 1}};
    static const cublasOperation_t ops[] = {CUBLAS_OP_N, CUBLAS_OP_T, CUBLAS_OP_C};
    cublasHandle_t h;
    EXPECT_OK(cublasCreate(&h));
    const cudaStream_t stream = (cudaStream_t)(uintptr_t)0x1234;
    EXPECT_OK(cublasSetStream(h, stream));
    int cases = 0;
    for (int mode = 0; mode < 2; mode++) { /* fp32, then TF32 */
        EXPECT_OK(cublasSetMathMode(h, mode ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
        int tf32_differs = 0;
        for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++)
            for (int ia = 0; ia < 3; ia++)
                for (int ib = 0; ib < 3; ib++)
                    for (int pad = 0; pad <= 3; pad += 3)
                        for (size_t ai = 0; ai < sizeof ab / sizeof ab[0]; ai++) {
                            const int m = sizes[si][0], n = sizes[si][1], k = sizes[si][2];
                            const int ta = ops[ia] != CUBLAS_OP_N, tb = ops[ib] != CUBLAS_OP_N;
                            const float alpha = ab[ai][0], beta = ab[ai][1];
                            const int ar = ta ? k : m, ac = ta ? m : k;
                            const int br = tb ? n : k, bc = tb ? k : n;
                            const int lda = (ar > 1 ? ar : 1) + pad, ldb = (br > 1 ? br : 1) + pad;
                            const int ldc = (m > 1 ? m : 1) + pad;
                            float *A = fbuf((size_t)lda * ac, NAN);
                            float *B = fbuf((size_t)ldb * bc, NAN);
                            float *C = fbuf((size_t)ldc * n, NAN);
                            /* alpha 0: A and B are not read (NaN stays out) */
                            if (alpha != 0.0f) {
                                for (int c = 0; c < ac; c++) frandom(A + (size_t)c * lda, ar);
                                for (int c = 0; c < bc; c++) frandom(B + (size_t)c * ldb, br);
                            }
                            /* beta 0: C is not read (NaN) */
                            if (beta != 0.0f)
                                for (int c = 0; c < n; c++) frandom(C + (size_t)c * ldc, m);
                            float *C0 = fbuf((size_t)ldc * n, 0.0f);
                            memcpy(C0, C, (size_t)ldc * n * sizeof(float));
                            const int e0 = g_enqueued;
                            EXPECT_OK(cublasSgemm(h, ops[ia], ops[ib], m, n, k, &alpha, A, lda, B,
                                                  ldb, &beta, C, ldc));
                            const int quick = m == 0 || n == 0 ||
                                              ((alpha == 0.0f || k == 0) && beta == 1.0f);
                            if (HAVE_STUB) {
                                CHECK(g_enqueued == e0 + !quick);
                                if (!quick) CHECK(g_last_stream == stream);
                            }
                            for (int j = 0; j < n; j++)
                                for (int i = 0; i < ldc; i++) {
                                    const float got = C[i + (size_t)j * ldc];
                                    if (i >= m) { /* padding: untouched */
                                        CHECK(same_bits(got, C0[i + (size_t)j * ldc]));
                                        continue;
                                    }
                                    double acc = 0.0, acc32 = 0.0;
                                    if (alpha != 0.0f)
                                        for (int l = 0; l < k; l++) {
                                            double x = opx(A, lda, ta, i, l), y = opx(B, ldb, tb, l, j);
                                            acc32 += x * y;
                                            acc += mode ? (double)tf32_ref((float)x) *
                                                              (double)tf32_ref((float)y)
                                                        : x * y;
                                        }
                                    double want = (double)alpha * acc, want32 = (double)alpha * acc32;
                                    if (beta != 0.0f) {
                                        want += (double)beta * C0[i + (size_t)j * ldc];
                                        want32 += (double)beta * C0[i + (size_t)j * ldc];
                                    }
                                    CHECK_MSG(close_to(got, (float)want),
                                              "sgemm %c%c m%d n%d k%d pad%d a%g b%g tf32 %d: "
                                              "C[%d,%d] = %.9g, want %.9g",
                                              "NTC"[ia], "NTC"[ib], m, n, k, pad, (double)alpha,
                                              (double)beta, mode, i, j, (double)got, want);
                                    if ((float)want != (float)want32) tf32_differs = 1;
                                }
                            cases++;
                            free(A);
                            free(B);
                            free(C);
                            free(C0);
                        }
        if (mode) CHECK(tf32_differs); /* the TF32 rounding did something */
    }
    printf("cublasSgemm: %d cases\n", cases);
    EXPECT_OK(cublasDestroy(h));
}

static void test_sgemm_args(void) {
    cublasHandle_t h;
    EXPECT_OK(cublasCreate(&h));
    float *A = fbuf(64, 1.0f), *B = fbuf(64, 1.0f), *C = fbuf(64, 0.0f);
    const float one = 1.0f, zero = 0.0f;
    const cublasOperation_t N = CUBLAS_OP_N, T = CUBLAS_OP_T;
    EXPECT_FAIL(cublasSgemm(NULL, N, N, 2, 2, 2, &one, A, 2, B, 2, &zero, C, 2),
                CUBLAS_STATUS_NOT_INITIALIZED);
    EXPECT_FAIL(cublasSgemm(h, N, N, -1, 2, 2, &one, A, 2, B, 2, &zero, C, 2),
                CUBLAS_STATUS_INVALID_VALUE);
    EXPECT_FAIL(cublasSgemm(h, N, N, 2, -1, 2, &one, A, 2, B, 2, &zero, C, 2),
                CUBLAS_STATUS_INVALID_VALUE);
    EXPECT_FAIL(cublasSgemm(h, N, N, 2, 2, -1, &one, A, 2, B, 2, &zero, C, 2),
                CUBLAS_STATUS_INVALID_VALUE);
    EXPECT_FAIL(cublasSgemm(h, (cublasOperation_t)CUBLAS_OP_CONJG, N, 2, 2, 2, &one, A, 2, B, 2,
                            &zero, C, 2),
                CUBLAS_STATUS_INVALID_VALUE);
    EXPECT_FAIL(cublasSgemm(h, N, (cublasOperation_t)7, 2, 2, 2, &one, A, 2, B, 2, &zero, C, 2),
                CUBLAS_STATUS_INVALID_VALUE);
    /* lda >= max(1, m) for N, max(1, k) for T */
    EXPECT_FAIL(cublasSgemm(h, N, N, 3, 2, 2, &one, A, 2, B, 2, &zero, C, 3),
                CUBLAS_STATUS_INVALID_VALUE);
    EXPECT_OK(cublasSgemm(h, T, N, 3, 2, 2, &one, A, 2, B, 2, &zero, C, 3));
    EXPECT_FAIL(cublasSgemm(h, T, N, 2, 2, 3, &one, A, 2, B, 3, &zero, C, 2),
                CUBLAS_STATUS_INVALID_VALUE);
    /* ldb >= max(1, k) for N, max(1, n) for T */
    EXPECT_FAIL(cublasSgemm(h, N, N, 2, 2, 3, &one, A, 2, B, 2, &zero, C, 2),
                CUBLAS_STATUS_INVALID_VALUE);
    EXPECT_OK(cublasSgemm(h, N, T, 2, 2, 3, &one, A, 2, B, 2, &zero, C, 2));
    EXPECT_FAIL(cublasSgemm(h, N, T, 2, 3, 2, &one, A, 2, B, 2, &zero, C, 2),
                CUBLAS_STATUS_INVALID_VALUE);
    /* ldc >= max(1, m), also for m = 0 */
    EXPECT_FAIL(cublasSgemm(h, N, N, 3, 2, 2, &one, A, 3, B, 2, &zero, C, 2),
                CUBLAS_STATUS_INVALID_VALUE);
    EXPECT_FAIL(cublasSgemm(h, N, N, 0, 2, 2, &one, A, 1, B, 2, &zero, C, 0),
                CUBLAS_STATUS_INVALID_VALUE);
    EXPECT_OK(cublasSgemm(h, N, N, 0, 2, 2, &one, A, 1, B, 2, &zero, C, 1));
    EXPECT_FAIL(cublasSgemm(h, N, N, 2, 2, 2, NULL, A, 2, B, 2, &zero, C, 2),
                CUBLAS_STATUS_INVALID_VALUE);
    EXPECT_FAIL(cublasSgemm(h, N, N, 2, 2, 2, &one, A, 2, B, 2, NULL, C, 2),
                CUBLAS_STATUS_INVALID_VALUE);
    EXPECT_FAIL(cublasSgemm(h, N, N, 2, 2, 2, &one, A, 2, B, 2, &one, NULL, 2),
                CUBLAS_STATUS_INVALID_VALUE);
    EXPECT_FAIL(cublasSgemm(h, N, N, 2, 2, 2, &one, NULL, 2, B, 2, &zero, C, 2),
                CUBLAS_STATUS_INVALID_VALUE);
    /* CUBLAS_TENSOR_OP_MATH (fp16 compute) is not modelled */
    EXPECT_OK(cublasSetMathMode(h, CUBLAS_TENSOR_OP_MATH));
    EXPECT_FAIL(cublasSgemm(h, N, N, 2, 2, 2, &one, A, 2, B, 2, &zero, C, 2),
                CUBLAS_STATUS_NOT_SUPPORTED);
    EXPECT_OK(cublasDestroy(h));
    free(A);
    free(B);
    free(C);
}

/* ---------------------------------------------------------- cuBLASLt */

typedef struct {
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t la, lb, lc, ld;
    cublasLtMatmulPreference_t pref;
} lt_plan;

static void plan_free(lt_plan *p) {
    if (p->desc) EXPECT_OK(cublasLtMatmulDescDestroy(p->desc));
    if (p->la) EXPECT_OK(cublasLtMatrixLayoutDestroy(p->la));
    if (p->lb) EXPECT_OK(cublasLtMatrixLayoutDestroy(p->lb));
    if (p->lc && p->lc != p->ld) EXPECT_OK(cublasLtMatrixLayoutDestroy(p->lc));
    if (p->ld) EXPECT_OK(cublasLtMatrixLayoutDestroy(p->ld));
    if (p->pref) EXPECT_OK(cublasLtMatmulPreferenceDestroy(p->pref));
    memset(p, 0, sizeof *p);
}

/* Descriptors as backend_cuda.c makes them (lt_plan_make); ldc < 0: C and D
 * share the layout. */
static void plan_make(lt_plan *p, int ta, int tb, uint32_t epi, int64_t m, int64_t n, int64_t k,
                      int64_t lda, int64_t ldb, int64_t ldc, int64_t ldd, const void *bias,
                      const void *aux, int64_t aux_ld, int tf32, uint32_t align) {
    memset(p, 0, sizeof *p);
    const int32_t opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    EXPECT_OK(cublasLtMatmulDescCreate(&p->desc, tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32
                                                      : CUBLAS_COMPUTE_32F,
                                       CUDA_R_32F));
    EXPECT_OK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa));
    EXPECT_OK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof opb));
    EXPECT_OK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
    EXPECT_OK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias,
                                             sizeof bias));
    EXPECT_OK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER,
                                             &aux, sizeof aux));
    EXPECT_OK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &aux_ld,
                                             sizeof aux_ld));
    EXPECT_OK(cublasLtMatrixLayoutCreate(&p->la, CUDA_R_32F, ta ? k : m, ta ? m : k, lda));
    EXPECT_OK(cublasLtMatrixLayoutCreate(&p->lb, CUDA_R_32F, tb ? n : k, tb ? k : n, ldb));
    EXPECT_OK(cublasLtMatrixLayoutCreate(&p->ld, CUDA_R_32F, m, n, ldd));
    if (ldc < 0) p->lc = p->ld;
    else EXPECT_OK(cublasLtMatrixLayoutCreate(&p->lc, CUDA_R_32F, m, n, ldc));
    const uint64_t ws = (uint64_t)32 << 20;
    const uint32_t red = CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE | CUBLASLT_REDUCTION_SCHEME_OUTPUT_TYPE;
    EXPECT_OK(cublasLtMatmulPreferenceCreate(&p->pref));
    EXPECT_OK(cublasLtMatmulPreferenceSetAttribute(p->pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                   &ws, sizeof ws));
    EXPECT_OK(cublasLtMatmulPreferenceSetAttribute(p->pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK,
                                                   &red, sizeof red));
    const cublasLtMatmulPreferenceAttributes_t al[4] = {
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
    for (int i = 0; i < 4; i++)
        EXPECT_OK(cublasLtMatmulPreferenceSetAttribute(p->pref, al[i], &align, sizeof align));
}

static cublasStatus_t heuristic(cublasLtHandle_t lt, const lt_plan *p, cublasLtMatmulAlgo_t *algo,
                                int *got) {
    cublasLtMatmulHeuristicResult_t res[4];
    memset(res, 0xab, sizeof res);
    *got = -1;
    cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(lt, p->desc, p->la, p->lb, p->lc, p->ld,
                                                       p->pref, 4, res, got);
    if (st == CUBLAS_STATUS_SUCCESS && *got >= 1) {
        /* two results (the same numerics) when two or more are asked for */
        CHECK(*got == 2);
        for (int i = 0; i < 2; i++) {
            CHECK(res[i].state == CUBLAS_STATUS_SUCCESS);
            CHECK(res[i].workspaceSize == 0);
        }
        CHECK(memcmp(&res[0].algo, &res[1].algo, sizeof res[0].algo) != 0);
        *algo = res[0].algo;
        /* one when one is asked for */
        int one = -1;
        CHECK(cublasLtMatmulAlgoGetHeuristic(lt, p->desc, p->la, p->lb, p->lc, p->ld, p->pref, 1,
                                             res, &one) == CUBLAS_STATUS_SUCCESS);
        CHECK(one == 1);
    }
    return st;
}

static const uint32_t EPIS[] = {
    CUBLASLT_EPILOGUE_DEFAULT,     CUBLASLT_EPILOGUE_RELU,        CUBLASLT_EPILOGUE_RELU_AUX,
    CUBLASLT_EPILOGUE_BIAS,        CUBLASLT_EPILOGUE_RELU_BIAS,   CUBLASLT_EPILOGUE_RELU_AUX_BIAS,
    CUBLASLT_EPILOGUE_DRELU,       CUBLASLT_EPILOGUE_DRELU_BGRAD, CUBLASLT_EPILOGUE_BGRADA,
    CUBLASLT_EPILOGUE_BGRADB};
static const char *const EPI_NAMES[] = {"DEFAULT", "RELU", "RELU_AUX", "BIAS", "RELU_BIAS",
                                        "RELU_AUX_BIAS", "DRELU", "DRELU_BGRAD", "BGRADA",
                                        "BGRADB"};

static int bit_of(const unsigned char *mask, int64_t idx) { return (mask[idx >> 3] >> (idx & 7)) & 1; }

/* cublasLtMatmul with each epilogue against the header's formulas. */
static void test_lt_epilogues(void) {
    static const int sizes[][3] = {{1, 1, 1}, {5, 3, 7}, {130, 9, 4}, {3, 17, 1}, {4, 3, 0},
                                   {129, 2, 33}};
    cublasLtHandle_t lt;
    EXPECT_OK(cublasLtCreate(&lt));
    const cudaStream_t stream = (cudaStream_t)(uintptr_t)0x777;
    int cases = 0;
    for (size_t ei = 0; ei < sizeof EPIS / sizeof EPIS[0]; ei++)
        for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++)
            for (int ta = 0; ta < 2; ta++)
                for (int tb = 0; tb < 2; tb++)
                    for (int var = 0; var < 6; var++) {
                        const uint32_t epi = EPIS[ei];
                        const int64_t m = sizes[si][0], n = sizes[si][1], k = sizes[si][2];
                        const int pad = var & 1 ? 5 : 0;
                        const int inplace = (var >> 1) != 1; /* var 2, 3: C != D */
                        const float beta = var >= 4 ? 0.5f : 0.0f;
                        const float alpha = var == 3 ? 0.5f : 1.0f;
                        const int tf32 = var == 5;
                        const int64_t ar = ta ? k : m, ac = ta ? m : k, br = tb ? n : k,
                                      bc = tb ? k : n;
                        const int64_t lda = ar + pad, ldb = br + pad, ldd = m + pad,
                                      ldc = inplace ? ldd : m + 2 * pad + 1;
                        const int aux_epi = epi == CUBLASLT_EPILOGUE_RELU_AUX ||
                                            epi == CUBLASLT_EPILOGUE_RELU_AUX_BIAS ||
                                            epi == CUBLASLT_EPILOGUE_DRELU ||
                                            epi == CUBLASLT_EPILOGUE_DRELU_BGRAD;
                        const int64_t aux_ld = aux_epi ? (m + 127) / 128 * 128 + (pad ? 128 : 0) : 0;
                        const int64_t blen = epi == CUBLASLT_EPILOGUE_BGRADB ? n : m;
                        float *A = fbuf((size_t)(lda * ac), NAN), *B = fbuf((size_t)(ldb * bc), NAN);
                        float *D = fbuf((size_t)(ldd * n), NAN);
                        float *C = inplace ? D : fbuf((size_t)(ldc * n), NAN);
                        float *bias = fbuf((size_t)blen + 8, NAN);
                        const size_t aux_bytes = (size_t)(n * aux_ld / 8);
                        unsigned char *aux = aligned_alloc(256, (aux_bytes + 64 + 255) / 256 * 256);
                        if (!aux) abort();
                        memset(aux, 0x5a, aux_bytes + 64);
                        for (int64_t c = 0; c < ac; c++) frandom(A + c * lda, (size_t)ar);
                        for (int64_t c = 0; c < bc; c++) frandom(B + c * ldb, (size_t)br);
                        if (beta != 0.0f)
                            for (int64_t c = 0; c < n; c++) frandom(C + c * ldc, (size_t)m);
                        const int bias_in = epi == CUBLASLT_EPILOGUE_BIAS ||
                                            epi == CUBLASLT_EPILOGUE_RELU_BIAS ||
                                            epi == CUBLASLT_EPILOGUE_RELU_AUX_BIAS;
                        const int drelu = epi == CUBLASLT_EPILOGUE_DRELU ||
                                          epi == CUBLASLT_EPILOGUE_DRELU_BGRAD;
                        if (bias_in) frandom(bias, (size_t)blen);
                        if (drelu)
                            for (size_t i = 0; i < aux_bytes; i++) aux[i] = (unsigned char)rnd();
                        float *C0 = fbuf((size_t)(ldc * n), NAN), *D0 = fbuf((size_t)(ldd * n), NAN);
                        unsigned char *aux0 = malloc(aux_bytes + 64);
                        if (!aux0) abort();
                        memcpy(C0, C, (size_t)(ldc * n) * sizeof(float));
                        memcpy(D0, D, (size_t)(ldd * n) * sizeof(float));
                        memcpy(aux0, aux, aux_bytes + 64);
                        float bias0[300];
                        memcpy(bias0, bias, (size_t)(blen + 8) * sizeof(float));

                        lt_plan p;
                        plan_make(&p, ta, tb, epi, m, n, k, lda, ldb, inplace ? -1 : ldc, ldd, bias,
                                  aux, aux_ld, tf32, 256);
                        cublasLtMatmulAlgo_t algo;
                        int got;
                        EXPECT_OK(heuristic(lt, &p, &algo, &got));
                        CHECK(got == 2);
                        int32_t splits = 0;
                        uint32_t scheme = 99;
                        size_t wr = 0;
                        EXPECT_OK(cublasLtMatmulAlgoConfigGetAttribute(
                            &algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &splits, sizeof splits, &wr));
                        CHECK(splits == 1 && wr == sizeof splits);
                        EXPECT_OK(cublasLtMatmulAlgoConfigGetAttribute(
                            &algo, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &scheme, sizeof scheme, &wr));
                        CHECK(scheme == CUBLASLT_REDUCTION_SCHEME_NONE && wr == sizeof scheme);
                        const int e0 = g_enqueued;
                        EXPECT_OK(cublasLtMatmul(lt, p.desc, &alpha, A, p.la, B, p.lb, &beta, C,
                                                 p.lc, D, p.ld, &algo, NULL, 0, stream));
                        if (HAVE_STUB) {
                            CHECK(g_enqueued == e0 + 1);
                            CHECK(g_last_stream == stream);
                        }
                        /* the reference, from the header's formulas */
                        const char *what = EPI_NAMES[ei];
                        int bad = 0;
                        for (int64_t j = 0; j < n && bad < 5; j++)
                            for (int64_t i = 0; i < ldd && bad < 5; i++) {
                                const float got_d = D[i + j * ldd];
                                if (i >= m) {
                                    if (!same_bits(got_d, D0[i + j * ldd])) bad++;
                                    continue;
                                }
                                double acc = 0.0;
                                for (int64_t l = 0; l < k; l++) {
                                    float x = (float)opx(A, (int)lda, ta, (int)i, (int)l);
                                    float y = (float)opx(B, (int)ldb, tb, (int)l, (int)j);
                                    if (tf32) x = tf32_ref(x), y = tf32_ref(y);
                                    acc += (double)x * (double)y;
                                }
                                double v = (double)alpha * acc;
                                if (beta != 0.0f) v += (double)beta * C0[i + j * ldc];
                                if (bias_in) v += (double)bias0[i];
                                float f = (float)v, want = f;
                                const int64_t bit = i + j * aux_ld;
                                if (epi == CUBLASLT_EPILOGUE_RELU || epi == CUBLASLT_EPILOGUE_RELU_AUX ||
                                    epi == CUBLASLT_EPILOGUE_RELU_BIAS ||
                                    epi == CUBLASLT_EPILOGUE_RELU_AUX_BIAS) {
                                    want = f > 0 ? f : 0.0f;
                                    if (aux_ld && bit_of(aux, bit) != (f > 0)) {
                                        bad++;
                                        fprintf(stderr, "%s: mask bit (%lld,%lld) = %d, output %g\n",
                                                what, (long long)i, (long long)j, bit_of(aux, bit),
                                                (double)f);
                                    }
                                } else if (drelu) {
                                    want = bit_of(aux0, bit) ? f : 0.0f;
                                }
                                if (!close_to(got_d, want)) {
                                    bad++;
                                    fprintf(stderr,
                                            "%s %c%c m%lld n%lld k%lld var %d: D[%lld,%lld] = %.9g, "
                                            "want %.9g\n", what, "NT"[ta], "NT"[tb], (long long)m,
                                            (long long)n, (long long)k, var, (long long)i,
                                            (long long)j, (double)got_d, (double)want);
                                }
                            }
                        /* mask: rows m .. aux_ld-1 written 0; nothing after n columns */
                        if (epi == CUBLASLT_EPILOGUE_RELU_AUX || epi == CUBLASLT_EPILOGUE_RELU_AUX_BIAS) {
                            for (int64_t j = 0; j < n; j++)
                                for (int64_t i = m; i < aux_ld; i++)
                                    if (bit_of(aux, i + j * aux_ld)) bad++;
                        }
                        if (aux_ld && memcmp(aux + aux_bytes, aux0 + aux_bytes, 64)) bad++;
                        if (drelu && memcmp(aux, aux0, aux_bytes)) bad++; /* an input */
                        /* C (when not D) is an input */
                        if (!inplace && memcmp(C, C0, (size_t)(ldc * n) * sizeof(float))) bad++;
                        /* the bias gradients */
                        if (epi == CUBLASLT_EPILOGUE_DRELU_BGRAD || epi == CUBLASLT_EPILOGUE_BGRADA ||
                            epi == CUBLASLT_EPILOGUE_BGRADB) {
                            for (int64_t t = 0; t < blen; t++) {
                                double s = 0.0;
                                if (epi == CUBLASLT_EPILOGUE_DRELU_BGRAD) /* sum_j D[t, j] */
                                    for (int64_t j = 0; j < n; j++) s += (double)D[t + j * ldd];
                                else if (epi == CUBLASLT_EPILOGUE_BGRADA) /* sum_l op(A)[t, l] */
                                    for (int64_t l = 0; l < k; l++) s += opx(A, (int)lda, ta, (int)t, (int)l);
                                else /* sum_l op(B)[l, t] */
                                    for (int64_t l = 0; l < k; l++) s += opx(B, (int)ldb, tb, (int)l, (int)t);
                                if (!close_to(bias[t], (float)s)) {
                                    bad++;
                                    fprintf(stderr, "%s m%lld n%lld k%lld: bias grad[%lld] = %.9g, "
                                            "want %.9g\n", what, (long long)m, (long long)n,
                                            (long long)k, (long long)t, (double)bias[t], s);
                                }
                            }
                            for (int64_t t = blen; t < blen + 8; t++)
                                if (!same_bits(bias[t], bias0[t])) bad++;
                        } else if (memcmp(bias, bias0, (size_t)(blen + 8) * sizeof(float))) {
                            bad++; /* read only */
                        }
                        CHECK_MSG(bad == 0, "%s %c%c m%lld n%lld k%lld var %d: %d mismatches", what,
                                  "NT"[ta], "NT"[tb], (long long)m, (long long)n, (long long)k, var,
                                  bad);
                        /* the same again: bitwise the same (deterministic) */
                        if (inplace && beta == 0.0f) {
                            float *D1 = fbuf((size_t)(ldd * n), NAN);
                            memcpy(D1, D, (size_t)(ldd * n) * sizeof(float));
                            EXPECT_OK(cublasLtMatmul(lt, p.desc, &alpha, A, p.la, B, p.lb, &beta, C,
                                                     p.lc, D, p.ld, &algo, NULL, 0, stream));
                            CHECK(memcmp(D1, D, (size_t)(ldd * n) * sizeof(float)) == 0);
                            free(D1);
                        }
                        plan_free(&p);
                        cases++;
                        free(A);
                        free(B);
                        if (!inplace) free(C);
                        free(D);
                        free(bias);
                        free(aux);
                        free(C0);
                        free(D0);
                        free(aux0);
                    }
    printf("cublasLtMatmul: %d cases\n", cases);
    EXPECT_OK(cublasLtDestroy(lt));
}

/* The dense layers as backend_cuda.c issues them (its header comment,
 * "Dense layers"), row-major arrays against row-major references:
 *   forward  out[B,O] = relu(in[B,I] w[O,I]^T + b): RELU_AUX_BIAS, m = O,
 *            n = B, k = I, A = w (T, lda I), B = in (N, ldb I), D = out (ldd O)
 *   backward of the layer above (w2[O2,O]) with that mask:
 *            din[B,O] = (dout[B,O2] w2) * [out > 0], dbin[O] = sum_B din:
 *            DRELU_BGRAD, m = O, n = B, k = O2, A = w2 (N, lda O),
 *            B = dout (N, ldb O2), D = din (ldd O)
 *   weight gradient dw[O,I] = dout^T in, db[O] = sum_B dout: BGRADB, m = I,
 *            n = O, k = B, A = in (N, lda I), B = dout (T, ldb O), D = dw
 *            (ldd I). */
static void test_backend_dense(void) {
    const int Bn = 37, I = 45, O = 131, O2 = 7;
    cublasLtHandle_t lt;
    EXPECT_OK(cublasLtCreate(&lt));
    float *in = fbuf((size_t)Bn * I, NAN), *w = fbuf((size_t)O * I, NAN), *b = fbuf(O, NAN);
    float *out = fbuf((size_t)Bn * O, NAN), *w2 = fbuf((size_t)O2 * O, NAN);
    float *dout2 = fbuf((size_t)Bn * O2, NAN), *din = fbuf((size_t)Bn * O, NAN);
    float *dbin = fbuf(O, NAN), *dw = fbuf((size_t)O * I, NAN), *db = fbuf(O, NAN);
    const int64_t mask_ld = (O + 127) / 128 * 128;
    const size_t mask_bytes = (size_t)Bn * 16 * ((O + 127) / 128); /* vae_relu_mask_bytes */
    unsigned char *mask = aligned_alloc(256, (mask_bytes + 255) / 256 * 256);
    if (!mask) abort();
    frandom(in, (size_t)Bn * I);
    frandom(w, (size_t)O * I);
    frandom(b, O);
    frandom(w2, (size_t)O2 * O);
    frandom(dout2, (size_t)Bn * O2);
    const float one = 1.0f, zero = 0.0f;
    lt_plan p;
    cublasLtMatmulAlgo_t algo;
    int got;
    /* forward */
    plan_make(&p, 1, 0, CUBLASLT_EPILOGUE_RELU_AUX_BIAS, O, Bn, I, I, I, -1, O, b, mask, mask_ld, 0,
              256);
    EXPECT_OK(heuristic(lt, &p, &algo, &got));
    EXPECT_OK(cublasLtMatmul(lt, p.desc, &one, w, p.la, in, p.lb, &zero, out, p.ld, out, p.ld, &algo,
                             NULL, 0, NULL));
    plan_free(&p);
    int bad = 0;
    for (int r = 0; r < Bn; r++)
        for (int o = 0; o < O; o++) {
            double s = 0;
            for (int i = 0; i < I; i++) s += (double)in[r * I + i] * w[o * I + i];
            float f = (float)(s + b[o]);
            bad += !close_to(out[r * O + o], f > 0 ? f : 0.0f);
        }
    CHECK_MSG(bad == 0, "dense forward: %d mismatches", bad);
    /* backward of the layer above, through the mask */
    plan_make(&p, 0, 0, CUBLASLT_EPILOGUE_DRELU_BGRAD, O, Bn, O2, O, O2, -1, O, dbin, mask, mask_ld,
              0, 256);
    EXPECT_OK(heuristic(lt, &p, &algo, &got));
    EXPECT_OK(cublasLtMatmul(lt, p.desc, &one, w2, p.la, dout2, p.lb, &zero, din, p.ld, din, p.ld,
                             &algo, NULL, 0, NULL));
    plan_free(&p);
    bad = 0;
    for (int o = 0; o < O; o++) {
        double sb = 0;
        for (int r = 0; r < Bn; r++) {
            double s = 0;
            for (int q = 0; q < O2; q++) s += (double)dout2[r * O2 + q] * w2[q * O + o];
            float want = out[r * O + o] > 0 ? (float)s : 0.0f; /* act_backward: out > 0 */
            bad += !close_to(din[r * O + o], want);
            sb += din[r * O + o];
        }
        bad += !close_to(dbin[o], (float)sb);
    }
    CHECK_MSG(bad == 0, "dense + ReLU backward (DRELU_BGRAD): %d mismatches", bad);
    /* weight and bias gradient of the forward layer, dout = din */
    plan_make(&p, 0, 1, CUBLASLT_EPILOGUE_BGRADB, I, O, Bn, I, O, -1, I, db, NULL, 0, 0, 256);
    EXPECT_OK(heuristic(lt, &p, &algo, &got));
    EXPECT_OK(cublasLtMatmul(lt, p.desc, &one, in, p.la, din, p.lb, &zero, dw, p.ld, dw, p.ld, &algo,
                             NULL, 0, NULL));
    plan_free(&p);
    bad = 0;
    for (int o = 0; o < O; o++) {
        double sb = 0;
        for (int r = 0; r < Bn; r++) sb += din[r * O + o];
        bad += !close_to(db[o], (float)sb); /* db[o] = sum_b dout[b, o] */
        for (int i = 0; i < I; i++) {
            double s = 0;
            for (int r = 0; r < Bn; r++) s += (double)din[r * O + o] * in[r * I + i];
            bad += !close_to(dw[o * I + i], (float)s);
        }
    }
    CHECK_MSG(bad == 0, "dense backward (BGRADB): %d mismatches", bad);
    EXPECT_OK(cublasLtDestroy(lt));
    free(in), free(w), free(b), free(out), free(w2), free(dout2), free(din), free(dbin);
    free(dw), free(db), free(mask);
}

static void test_lt_args(void) {
    cublasLtHandle_t lt;
    EXPECT_OK(cublasLtCreate(&lt));
    EXPECT_FAIL(cublasLtCreate(NULL), CUBLAS_STATUS_INVALID_VALUE);
    const int m = 6, n = 5, k = 4;
    float *A = fbuf(64, 1.0f), *B = fbuf(64, 1.0f), *D = fbuf(64, 0.0f), *bias = fbuf(16, 0.5f);
    unsigned char *aux = aligned_alloc(256, 256);
    if (!aux) abort();
    memset(aux, 0xff, 256);
    const float one = 1.0f, zero = 0.0f;
    lt_plan p;
    cublasLtMatmulAlgo_t algo;
    cublasLtMatmulHeuristicResult_t res[2];
    int got;

    /* descriptor attributes: size, NULL buf, unknown or unmodelled */
    EXPECT_OK(cublasLtMatmulDescCreate(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const int32_t t32 = CUBLAS_OP_T;
    const int64_t t64 = CUBLAS_OP_T;
    EXPECT_FAIL(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &t64, sizeof t64),
                CUBLAS_STATUS_INVALID_VALUE);
    EXPECT_FAIL(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, NULL, sizeof t32),
                CUBLAS_STATUS_INVALID_VALUE);
    const void *ptr = D;
    EXPECT_FAIL(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_AMAX_D_POINTER, &ptr,
                                               sizeof ptr),
                CUBLAS_STATUS_INVALID_VALUE);
    EXPECT_FAIL(cublasLtMatmulDescSetAttribute(p.desc, (cublasLtMatmulDescAttributes_t)999, &t32,
                                               sizeof t32),
                CUBLAS_STATUS_INVALID_VALUE);
    const int32_t bias_type = CUDA_R_32F;
    EXPECT_OK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type,
                                             sizeof bias_type));
    EXPECT_OK(cublasLtMatmulDescDestroy(p.desc));
    EXPECT_OK(cublasLtMatmulPreferenceCreate(&p.pref));
    const uint32_t u32 = 16;
    EXPECT_FAIL(cublasLtMatmulPreferenceSetAttribute(p.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                     &u32, sizeof u32),
                CUBLAS_STATUS_INVALID_VALUE);
    EXPECT_FAIL(cublasLtMatmulPreferenceSetAttribute(p.pref, (cublasLtMatmulPreferenceAttributes_t)77,
                                                     &u32, sizeof u32),
                CUBLAS_STATUS_INVALID_VALUE);
    EXPECT_OK(cublasLtMatmulPreferenceDestroy(p.pref));

    /* a good plan: BIAS, A^T */
    plan_make(&p, 1, 0, CUBLASLT_EPILOGUE_BIAS, m, n, k, k, k, -1, m, bias, NULL, 0, 0, 256);
    EXPECT_OK(heuristic(lt, &p, &algo, &got));
    EXPECT_FAIL(cublasLtMatmulAlgoGetHeuristic(NULL, p.desc, p.la, p.lb, p.lc, p.ld, p.pref, 2, res,
                                               &got),
                CUBLAS_STATUS_NOT_INITIALIZED);
    EXPECT_FAIL(cublasLtMatmulAlgoGetHeuristic(lt, p.desc, p.la, p.lb, p.lc, p.ld, p.pref, 0, res,
                                               &got),
                CUBLAS_STATUS_INVALID_VALUE);
    CHECK(got == 0);
    EXPECT_FAIL(cublasLtMatmulAlgoGetHeuristic(lt, p.desc, p.la, p.lb, p.lc, p.ld, NULL, 2, res,
                                               &got),
                CUBLAS_STATUS_INVALID_VALUE);
    /* the algorithm's configuration */
    size_t wr = 0;
    EXPECT_OK(cublasLtMatmulAlgoConfigGetAttribute(&algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, NULL, 0,
                                                   &wr));
    CHECK(wr == sizeof(int32_t));
    int32_t splits;
    EXPECT_FAIL(cublasLtMatmulAlgoConfigGetAttribute(&algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &splits,
                                                     8, &wr),
                CUBLAS_STATUS_INVALID_VALUE);
    EXPECT_FAIL(cublasLtMatmulAlgoConfigGetAttribute(&algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, NULL, 0,
                                                     NULL),
                CUBLAS_STATUS_INVALID_VALUE);
    uint32_t tile;
    EXPECT_FAIL(cublasLtMatmulAlgoConfigGetAttribute(&algo, CUBLASLT_ALGO_CONFIG_TILE_ID, &tile,
                                                     sizeof tile, &wr),
                CUBLAS_STATUS_INVALID_VALUE);
    cublasLtMatmulAlgo_t zero_algo;
    memset(&zero_algo, 0, sizeof zero_algo);
    EXPECT_FAIL(cublasLtMatmulAlgoConfigGetAttribute(&zero_algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM,
                                                     &splits, sizeof splits, &wr),
                CUBLAS_STATUS_INVALID_VALUE);
    /* cublasLtMatmul */
    EXPECT_OK(cublasLtMatmul(lt, p.desc, &one, A, p.la, B, p.lb, &zero, D, p.ld, D, p.ld, &algo, NULL,
                             0, NULL));
    EXPECT_OK(cublasLtMatmul(lt, p.desc, &one, A, p.la, B, p.lb, &zero, D, p.ld, D, p.ld, NULL, NULL,
                             0, NULL));
    EXPECT_FAIL(cublasLtMatmul(NULL, p.desc, &one, A, p.la, B, p.lb, &zero, D, p.ld, D, p.ld, &algo,
                               NULL, 0, NULL),
                CUBLAS_STATUS_NOT_INITIALIZED);
    EXPECT_FAIL(cublasLtMatmul(lt, p.desc, NULL, A, p.la, B, p.lb, &zero, D, p.ld, D, p.ld, &algo,
                               NULL, 0, NULL),
                CUBLAS_STATUS_INVALID_VALUE);
    EXPECT_FAIL(cublasLtMatmul(lt, p.desc, &one, A, p.la, B, p.lb, &zero, D, p.ld, D, p.ld, &zero_algo,
                               NULL, 0, NULL),
                CUBLAS_STATUS_INVALID_VALUE);
    EXPECT_FAIL(cublasLtMatmul(lt, p.desc, &one, NULL, p.la, B, p.lb, &zero, D, p.ld, D, p.ld, &algo,
                               NULL, 0, NULL),
                CUBLAS_STATUS_INVALID_VALUE);
    EXPECT_FAIL(cublasLtMatmul(lt, p.desc, &one, A, p.la, B, p.lb, &one, NULL, p.ld, D, p.ld, &algo,
                               NULL, 0, NULL),
                CUBLAS_STATUS_INVALID_VALUE);
    /* A less aligned than the preference stated (256) */
    EXPECT_FAIL(cublasLtMatmul(lt, p.desc, &one, A + 1, p.la, B, p.lb, &zero, D, p.ld, D, p.ld, &algo,
                               NULL, 0, NULL),
                CUBLAS_STATUS_NOT_SUPPORTED);
    /* in place with another ld */
    cublasLtMatrixLayout_t lc2;
    EXPECT_OK(cublasLtMatrixLayoutCreate(&lc2, CUDA_R_32F, m, n, m + 1));
    EXPECT_FAIL(cublasLtMatmul(lt, p.desc, &one, A, p.la, B, p.lb, &one, D, lc2, D, p.ld, &algo, NULL,
                               0, NULL),
                CUBLAS_STATUS_INVALID_VALUE);
    EXPECT_OK(cublasLtMatrixLayoutDestroy(lc2));
    /* the bias pointer NULL */
    const void *null = NULL;
    EXPECT_OK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &null,
                                             sizeof null));
    EXPECT_FAIL(cublasLtMatmul(lt, p.desc, &one, A, p.la, B, p.lb, &zero, D, p.ld, D, p.ld, &algo,
                               NULL, 0, NULL),
                CUBLAS_STATUS_INVALID_VALUE);
    /* another epilogue than the algorithm was found for */
    const uint32_t relu = CUBLASLT_EPILOGUE_RELU;
    EXPECT_OK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &relu, sizeof relu));
    EXPECT_FAIL(cublasLtMatmul(lt, p.desc, &one, A, p.la, B, p.lb, &zero, D, p.ld, D, p.ld, &algo,
                               NULL, 0, NULL),
                CUBLAS_STATUS_INVALID_VALUE);
    /* not modelled / not an epilogue / TRANSC */
    const uint32_t gelu = CUBLASLT_EPILOGUE_GELU_BIAS, nonsense = 3;
    EXPECT_OK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &gelu, sizeof gelu));
    EXPECT_FAIL(heuristic(lt, &p, &algo, &got), CUBLAS_STATUS_NOT_SUPPORTED);
    CHECK(got == 0);
    EXPECT_OK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &nonsense,
                                             sizeof nonsense));
    EXPECT_FAIL(heuristic(lt, &p, &algo, &got), CUBLAS_STATUS_INVALID_VALUE);
    EXPECT_OK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &relu, sizeof relu));
    EXPECT_OK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSC, &t32, sizeof t32));
    EXPECT_FAIL(heuristic(lt, &p, &algo, &got), CUBLAS_STATUS_NOT_SUPPORTED);
    plan_free(&p);

    /* layouts inconsistent with the transposes */
    plan_make(&p, 0, 0, CUBLASLT_EPILOGUE_DEFAULT, m, n, k, m, k, -1, m, NULL, NULL, 0, 0, 256);
    EXPECT_OK(heuristic(lt, &p, &algo, &got));
    const int32_t tN = CUBLAS_OP_T; /* op(A) is now k x m */
    EXPECT_OK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &tN, sizeof tN));
    EXPECT_FAIL(heuristic(lt, &p, &algo, &got), CUBLAS_STATUS_INVALID_VALUE);
    plan_free(&p);
    plan_make(&p, 0, 0, CUBLASLT_EPILOGUE_DEFAULT, m, n, k, m - 1, k, -1, m, NULL, NULL, 0, 0, 256);
    EXPECT_FAIL(heuristic(lt, &p, &algo, &got), CUBLAS_STATUS_INVALID_VALUE); /* lda < rows */
    plan_free(&p);
    plan_make(&p, 0, 0, CUBLASLT_EPILOGUE_DEFAULT, m, n, k, m, k, m, m - 1, NULL, NULL, 0, 0, 256);
    EXPECT_FAIL(heuristic(lt, &p, &algo, &got), CUBLAS_STATUS_INVALID_VALUE); /* ldd < rows */
    plan_free(&p);
    plan_make(&p, 0, 0, CUBLASLT_EPILOGUE_DEFAULT, m, n, k, m, k, -1, m, NULL, NULL, 0, 0, 256);
    cublasLtMatrixLayout_t lc3;
    EXPECT_OK(cublasLtMatrixLayoutCreate(&lc3, CUDA_R_32F, m, n + 1, m));
    EXPECT_FAIL(cublasLtMatmulAlgoGetHeuristic(lt, p.desc, p.la, p.lb, lc3, p.ld, p.pref, 2, res, &got),
                CUBLAS_STATUS_INVALID_VALUE); /* C not m x n */
    EXPECT_OK(cublasLtMatrixLayoutDestroy(lc3));
    cublasLtMatrixLayout_t l16;
    EXPECT_OK(cublasLtMatrixLayoutCreate(&l16, CUDA_R_16F, m, k, m));
    EXPECT_FAIL(cublasLtMatmulAlgoGetHeuristic(lt, p.desc, l16, p.lb, p.lc, p.ld, p.pref, 2, res, &got),
                CUBLAS_STATUS_NOT_SUPPORTED);
    EXPECT_OK(cublasLtMatrixLayoutDestroy(l16));
    plan_free(&p);
    /* preference alignment below the element size */
    plan_make(&p, 0, 0, CUBLASLT_EPILOGUE_DEFAULT, m, n, k, m, k, -1, m, NULL, NULL, 0, 0, 2);
    EXPECT_FAIL(heuristic(lt, &p, &algo, &got), CUBLAS_STATUS_NOT_SUPPORTED);
    plan_free(&p);
    /* a 4-byte-aligned preference accepts A + 1 */
    plan_make(&p, 0, 0, CUBLASLT_EPILOGUE_DEFAULT, m, n, k, m, k, -1, m, NULL, NULL, 0, 0, 4);
    EXPECT_OK(heuristic(lt, &p, &algo, &got));
    EXPECT_OK(cublasLtMatmul(lt, p.desc, &one, A + 1, p.la, B + 1, p.lb, &zero, D + 1, p.ld, D + 1,
                             p.ld, &algo, NULL, 0, NULL));
    plan_free(&p);

    /* the ReLU mask's leading dimension: a multiple of 128, >= m */
    plan_make(&p, 0, 0, CUBLASLT_EPILOGUE_RELU_AUX_BIAS, m, n, k, m, k, -1, m, bias, aux, 100, 0, 256);
    EXPECT_FAIL(heuristic(lt, &p, &algo, &got), CUBLAS_STATUS_INVALID_VALUE);
    plan_free(&p);
    plan_make(&p, 0, 0, CUBLASLT_EPILOGUE_DRELU_BGRAD, 130, 1, 1, 130, 1, -1, 130, bias, aux, 128, 0,
              256);
    EXPECT_FAIL(heuristic(lt, &p, &algo, &got), CUBLAS_STATUS_INVALID_VALUE);
    plan_free(&p);
    plan_make(&p, 0, 0, CUBLASLT_EPILOGUE_RELU_AUX_BIAS, m, n, k, m, k, -1, m, bias, aux, 128, 0, 256);
    EXPECT_OK(heuristic(lt, &p, &algo, &got));
    EXPECT_OK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &null,
                                             sizeof null));
    EXPECT_FAIL(cublasLtMatmul(lt, p.desc, &one, A, p.la, B, p.lb, &zero, D, p.ld, D, p.ld, &algo,
                               NULL, 0, NULL),
                CUBLAS_STATUS_INVALID_VALUE); /* the mask pointer NULL */
    const int32_t aux_type = CUDA_R_32F;
    EXPECT_OK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_DATA_TYPE,
                                             &aux_type, sizeof aux_type));
    EXPECT_FAIL(heuristic(lt, &p, &algo, &got), CUBLAS_STATUS_NOT_SUPPORTED); /* not a bit-mask */
    plan_free(&p);
    EXPECT_OK(cublasLtDestroy(lt));
    EXPECT_FAIL(cublasLtDestroy(NULL), CUBLAS_STATUS_NOT_INITIALIZED);
    free(A), free(B), free(D), free(bias), free(aux);
}

/* $VAE_MOCK_LT_REFUSE and $VAE_MOCK_LT_REFUSE_MATMUL */
static void test_refuse(void) {
    cublasLtHandle_t lt;
    EXPECT_OK(cublasLtCreate(&lt));
    float *A = fbuf(64, 1.0f), *B = fbuf(64, 1.0f), *D = fbuf(64, 0.0f), *bias = fbuf(16, 0.5f);
    unsigned char *aux = aligned_alloc(256, 256);
    if (!aux) abort();
    const float one = 1.0f, zero = 0.0f;
    cublasLtMatmulAlgo_t algo;
    int got;
    lt_plan p[4];
    const uint32_t epis[4] = {CUBLASLT_EPILOGUE_RELU_AUX_BIAS, CUBLASLT_EPILOGUE_BGRADB,
                              CUBLASLT_EPILOGUE_BIAS, CUBLASLT_EPILOGUE_DRELU_BGRAD};
    for (int i = 0; i < 4; i++)
        plan_make(&p[i], 0, 0, epis[i], 3, 3, 3, 3, 3, -1, 3, bias, aux, 128, 0, 256);
    setenv("VAE_MOCK_LT_REFUSE", "relu_aux_bias, CUBLASLT_EPILOGUE_BGRADB", 1);
    EXPECT_FAIL(heuristic(lt, &p[0], &algo, &got), CUBLAS_STATUS_NOT_SUPPORTED);
    CHECK(got == 0);
    EXPECT_FAIL(heuristic(lt, &p[1], &algo, &got), CUBLAS_STATUS_NOT_SUPPORTED);
    CHECK(got == 0);
    EXPECT_OK(heuristic(lt, &p[2], &algo, &got));
    CHECK(got == 2);
    EXPECT_OK(heuristic(lt, &p[3], &algo, &got));
    setenv("VAE_MOCK_LT_REFUSE", "all", 1);
    for (int i = 0; i < 4; i++) {
        EXPECT_FAIL(heuristic(lt, &p[i], &algo, &got), CUBLAS_STATUS_NOT_SUPPORTED);
        CHECK(got == 0);
    }
    setenv("VAE_MOCK_LT_REFUSE", "BIASS", 1); /* a typo: noted, nothing refused */
    int n0 = g_notes;
    g_expect_note = 1;
    EXPECT_OK(heuristic(lt, &p[2], &algo, &got));
    g_expect_note = 0;
    if (HAVE_STUB) CHECK(g_notes > n0);
    unsetenv("VAE_MOCK_LT_REFUSE");
    EXPECT_OK(heuristic(lt, &p[2], &algo, &got));
    setenv("VAE_MOCK_LT_REFUSE_MATMUL", "BIAS", 1);
    const int e0 = g_enqueued;
    EXPECT_FAIL(cublasLtMatmul(lt, p[2].desc, &one, A, p[2].la, B, p[2].lb, &zero, D, p[2].ld, D,
                               p[2].ld, &algo, NULL, 0, NULL),
                CUBLAS_STATUS_NOT_SUPPORTED);
    if (HAVE_STUB) CHECK(g_enqueued == e0);
    unsetenv("VAE_MOCK_LT_REFUSE_MATMUL");
    EXPECT_OK(cublasLtMatmul(lt, p[2].desc, &one, A, p[2].la, B, p[2].lb, &zero, D, p[2].ld, D,
                             p[2].ld, &algo, NULL, 0, NULL));
    for (int i = 0; i < 4; i++) plan_free(&p[i]);
    EXPECT_OK(cublasLtDestroy(lt));
    free(A), free(B), free(D), free(bias), free(aux);
}

/* The work runs later (a graph replay): everything by value at call time. */
static void test_by_value(void) {
    if (!HAVE_STUB) return;
    cublasLtHandle_t lt;
    cublasHandle_t h;
    EXPECT_OK(cublasLtCreate(&lt));
    EXPECT_OK(cublasCreate(&h));
    float *A = fbuf(16, 2.0f), *B = fbuf(16, 3.0f), *D = fbuf(16, 0.0f), *C = fbuf(16, 0.0f);
    float *b1 = fbuf(4, 1.0f), *b2 = fbuf(4, 100.0f);
    lt_plan p;
    cublasLtMatmulAlgo_t algo;
    int got;
    plan_make(&p, 0, 0, CUBLASLT_EPILOGUE_BIAS, 2, 2, 2, 2, 2, -1, 2, b1, NULL, 0, 0, 256);
    EXPECT_OK(heuristic(lt, &p, &algo, &got));
    float alpha = 1.0f, beta = 0.0f;
    g_defer = 1;
    EXPECT_OK(cublasLtMatmul(lt, p.desc, &alpha, A, p.la, B, p.lb, &beta, D, p.ld, D, p.ld, &algo,
                             NULL, 0, NULL));
    EXPECT_OK(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, &alpha, A, 2, B, 2, &beta, C, 2));
    alpha = 10.0f, beta = 5.0f; /* after the calls: no effect */
    EXPECT_OK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &b2,
                                             sizeof b2));
    plan_free(&p);
    g_defer = 0;
    run_deferred();
    for (int i = 0; i < 4; i++) {
        CHECK(D[i] == 13.0f); /* 2*3*2 + 1 */
        CHECK(C[i] == 12.0f);
    }
    EXPECT_OK(cublasDestroy(h));
    EXPECT_OK(cublasLtDestroy(lt));
    free(A), free(B), free(D), free(C), free(b1), free(b2);
}

/* What a GPU would fault on aborts (in a child process). */
static int aborts(void (*fn)(void)) {
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        g_expect_note = 1;
        fn();
        _exit(0);
    }
    int status = 0;
    if (waitpid(pid, &status, 0) != pid) return -1;
    return WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT;
}

static void child_bias_misaligned(void) {
    cublasLtHandle_t lt;
    cublasLtCreate(&lt);
    float *A = fbuf(64, 1.0f), *bias = fbuf(64, 0.0f);
    lt_plan p;
    cublasLtMatmulAlgo_t algo;
    int got;
    plan_make(&p, 0, 0, CUBLASLT_EPILOGUE_BIAS, 2, 2, 2, 2, 2, -1, 2, bias, NULL, 0, 0, 256);
    heuristic(lt, &p, &algo, &got);
    const void *b16 = bias + 4; /* 16-byte aligned, the heuristic saw 256 */
    cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &b16, sizeof b16);
    const float one = 1.0f, zero = 0.0f;
    float *D = fbuf(64, 0.0f);
    cublasLtMatmul(lt, p.desc, &one, A, p.la, A, p.lb, &zero, D, p.ld, D, p.ld, &algo, NULL, 0, NULL);
}

static void child_lt_overlap(void) {
    cublasLtHandle_t lt;
    cublasLtCreate(&lt);
    float *A = fbuf(64, 1.0f);
    lt_plan p;
    cublasLtMatmulAlgo_t algo;
    int got;
    plan_make(&p, 0, 0, CUBLASLT_EPILOGUE_DEFAULT, 2, 2, 2, 2, 2, -1, 2, NULL, NULL, 0, 0, 4);
    heuristic(lt, &p, &algo, &got);
    const float one = 1.0f, zero = 0.0f;
    cublasLtMatmul(lt, p.desc, &one, A, p.la, A + 16, p.lb, &zero, A + 2, p.ld, A + 2, p.ld, &algo,
                   NULL, 0, NULL); /* D overlaps A */
}

static void child_sgemm_overlap(void) {
    cublasHandle_t h;
    cublasCreate(&h);
    float *A = fbuf(64, 1.0f);
    const float one = 1.0f, zero = 0.0f;
    cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, &one, A, 2, A + 16, 2, &zero, A + 17, 2);
}

static void child_dgrad_bias_overlaps_d(void) {
    cublasLtHandle_t lt;
    cublasLtCreate(&lt);
    float *A = fbuf(64, 1.0f), *D = fbuf(64, 0.0f);
    unsigned char *aux = aligned_alloc(256, 256);
    lt_plan p;
    cublasLtMatmulAlgo_t algo;
    int got;
    plan_make(&p, 0, 0, CUBLASLT_EPILOGUE_DRELU_BGRAD, 2, 2, 2, 2, 2, -1, 2, D + 2, aux, 128, 0, 4);
    heuristic(lt, &p, &algo, &got);
    const float one = 1.0f, zero = 0.0f;
    cublasLtMatmul(lt, p.desc, &one, A, p.la, A + 16, p.lb, &zero, D, p.ld, D, p.ld, &algo, NULL, 0,
                   NULL); /* the bias gradient inside D */
}

static void test_aborts(void) {
    CHECK(aborts(child_bias_misaligned) == 1);
    CHECK(aborts(child_lt_overlap) == 1);
    CHECK(aborts(child_sgemm_overlap) == 1);
    CHECK(aborts(child_dgrad_bias_overlaps_d) == 1);
}

int main(void) {
    test_status_and_property();
    test_handle_calls();
    test_sgemm();
    test_sgemm_args();
    test_lt_epilogues();
    test_backend_dense();
    test_lt_args();
    test_refuse();
    test_by_value();
    test_aborts();
    if (g_fail) {
        fprintf(stderr, "test_mock_cublas: %d of %d checks failed\n", g_fail, g_checks);
        return 1;
    }
    printf("test_mock_cublas: all %d checks passed\n", g_checks);
    return 0;
}

/* testutil.h — a tiny assertion library for the C tests.
 * CHECK* macros count failures and print file:line and the values; a test's
 * main returns test_finish(), which prints "N passed, M failed" and exits
 * 1 if anything failed. TEST_SKIP(reason) exits 77 (ctest: skipped). */
#ifndef VAE_TESTUTIL_H
#define VAE_TESTUTIL_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vae_backend.h" /* vae_core.h, vae_math.h */

extern int g_test_pass, g_test_fail;

#define CHECK(cond)                                                                   \
    do {                                                                              \
        if (cond) g_test_pass++;                                                      \
        else {                                                                        \
            g_test_fail++;                                                            \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);  \
        }                                                                             \
    } while (0)

#define CHECK_MSG(cond, ...)                                                          \
    do {                                                                              \
        if (cond) g_test_pass++;                                                      \
        else {                                                                        \
            g_test_fail++;                                                            \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond);  \
            fprintf(stderr, __VA_ARGS__);                                             \
            fputc('\n', stderr);                                                      \
        }                                                                             \
    } while (0)

/* |a - b| <= atol + rtol * |b|, NaN fails. */
#define CHECK_CLOSE(a, b, rtol, atol)                                                 \
    do {                                                                              \
        double a_ = (double)(a), b_ = (double)(b);                                    \
        if (fabs(a_ - b_) <= (atol) + (rtol)*fabs(b_)) g_test_pass++;                 \
        else {                                                                        \
            g_test_fail++;                                                            \
            fprintf(stderr, "%s:%d: CHECK_CLOSE failed: %s = %.10g vs %s = %.10g\n",  \
                    __FILE__, __LINE__, #a, a_, #b, b_);                              \
        }                                                                             \
    } while (0)

/* The call returned an error and its message contains `needle`. */
#define CHECK_ERR(call, needle)                                                       \
    do {                                                                              \
        int rc_ = (call);                                                             \
        const char *m_ = vae_error_get();                                             \
        if (rc_ != 0 && strstr(m_, (needle))) g_test_pass++;                          \
        else {                                                                        \
            g_test_fail++;                                                            \
            fprintf(stderr, "%s:%d: CHECK_ERR failed: %s returned %d, message \"%s\", " \
                    "expected to contain \"%s\"\n", __FILE__, __LINE__, #call, rc_,   \
                    rc_ ? m_ : "", (needle));                                         \
        }                                                                             \
    } while (0)

#define TEST_SKIP(...)                                                                \
    do {                                                                              \
        printf("SKIP: ");                                                             \
        printf(__VA_ARGS__);                                                          \
        printf("\n");                                                                 \
        exit(77);                                                                     \
    } while (0)

int test_finish(void);

/* A fresh empty directory under $TMPDIR (or /tmp) for this test; removed by
 * test_finish() when all checks passed. */
const char *test_tmpdir(void);
/* test_tmpdir()/name, in one of 16 rotating static slots. */
const char *test_tmp_path(const char *name);
/* malloc that exits with a message when out of memory (0 bytes: 1). */
void *test_xmalloc(size_t bytes);
/* The whole file, NUL-terminated (malloc'ed; *len its size if len is not
 * NULL); NULL if it cannot be opened. */
char *test_slurp(const char *path, size_t *len);
/* max|a-b| / max|b| (NaN anywhere: infinity; both all-zero: 0). */
double test_norm_err(const real *a, const real *b, size_t n);
/* Writes `len` bytes to dir/name, returns the full path (static buffer per call slot). */
const char *test_write_file(const char *name, const void *data, size_t len);
/* $VAE_DATA_DIR or NULL */
const char *test_data_dir(void);
/* Deterministic pseudo-random doubles in [lo, hi) (xorshift, seeded). */
void test_rand_fill(double *dst, size_t n, double lo, double hi, unsigned seed);
void test_rand_fill_real(real *dst, size_t n, double lo, double hi, unsigned seed);
/* Max relative error max_i |a-b| / max(|b|, floor). */
double test_max_rel(const real *a, const real *b, size_t n, double floor);

/* A guarded buffer: n reals between two guards of TEST_GB_GUARD elements of
 * a quiet-NaN sentinel (a read past either end computes NaN, a write past it
 * shows in test_gb_intact); the data is 64-byte aligned. Host memory, for
 * the CPU backend's ops. */
enum { TEST_GB_GUARD = 16 };
typedef struct {
    real *base, *p;
    size_t n;
} test_gbuf;
test_gbuf test_gb_new(size_t n);   /* every element the sentinel */
void test_gb_reset(test_gbuf *b); /* every element the sentinel again */
test_gbuf test_gb_rand(size_t n, double lo, double hi, unsigned seed);
test_gbuf test_gb_copy(const test_gbuf *src);
int test_gb_intact(const test_gbuf *b);                   /* both guards untouched */
int test_gb_same(const test_gbuf *a, const test_gbuf *b); /* bit-equal data, guards intact */
void test_gb_free(test_gbuf *b);

/* Per-step values (vae_math.h) for tests that call the ops directly; a
 * block filled by hand is vae_step_vals_make. */
/* 1 when a and b agree in every field (compared field by field, not with
 * memcmp: the double build's struct has padding). */
int test_step_vals_equal(const vae_step_vals *a, const vae_step_vals *b);
/* A block in backend memory (be->alloc, uploaded from *v); the caller
 * releases it with be->release. Exits if the allocation fails. */
vae_step_vals *test_step_vals_dev(vae_backend *be, const vae_step_vals *v);

#endif

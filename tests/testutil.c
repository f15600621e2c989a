#include "testutil.h"

#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

int g_test_pass = 0, g_test_fail = 0;
static char g_tmp[512];

const char *test_tmpdir(void) {
    if (!g_tmp[0]) {
        const char *base = getenv("TMPDIR");
        snprintf(g_tmp, sizeof g_tmp, "%s/vae_test_XXXXXX", base && *base ? base : "/tmp");
        if (!mkdtemp(g_tmp)) {
            perror("mkdtemp");
            exit(1);
        }
    }
    return g_tmp;
}

const char *test_tmp_path(const char *name) {
    static char paths[16][640];
    static int slot = 0;
    char *p = paths[slot++ % 16];
    snprintf(p, 640, "%s/%s", test_tmpdir(), name);
    return p;
}

/* the guards' element: a quiet NaN of real's width */
static real gb_sentinel(void) {
    real r;
    if (sizeof(real) == sizeof(uint32_t)) {
        const uint32_t bits = 0x7fa5a5a5u;
        memcpy(&r, &bits, sizeof r);
    } else {
        const uint64_t bits = 0x7ffa5a5a5a5a5a5aull;
        memcpy(&r, &bits, sizeof r);
    }
    return r;
}

static int gb_is_sentinel(const real *x) {
    const real s = gb_sentinel();
    return memcmp(x, &s, sizeof s) == 0;
}

test_gbuf test_gb_new(size_t n) {
    test_gbuf b;
    const size_t bytes = (n + 2 * TEST_GB_GUARD) * sizeof(real);
    b.n = n;
    b.base = aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!b.base) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    b.p = b.base + TEST_GB_GUARD;
    test_gb_reset(&b);
    return b;
}

void test_gb_reset(test_gbuf *b) {
    const real s = gb_sentinel();
    for (size_t i = 0; i < b->n + 2 * TEST_GB_GUARD; i++) b->base[i] = s;
}

test_gbuf test_gb_rand(size_t n, double lo, double hi, unsigned seed) {
    test_gbuf b = test_gb_new(n);
    test_rand_fill_real(b.p, n, lo, hi, seed);
    return b;
}

test_gbuf test_gb_copy(const test_gbuf *src) {
    test_gbuf b = test_gb_new(src->n);
    memcpy(b.p, src->p, src->n * sizeof(real));
    return b;
}

int test_gb_intact(const test_gbuf *b) {
    for (size_t i = 0; i < TEST_GB_GUARD; i++)
        if (!gb_is_sentinel(&b->base[i]) || !gb_is_sentinel(&b->p[b->n + i])) return 0;
    return 1;
}

int test_gb_same(const test_gbuf *a, const test_gbuf *b) {
    return a->n == b->n && memcmp(a->p, b->p, a->n * sizeof(real)) == 0 && test_gb_intact(a) &&
           test_gb_intact(b);
}

void test_gb_free(test_gbuf *b) {
    free(b->base);
    b->base = b->p = NULL;
}

void *test_xmalloc(size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    return p;
}

char *test_slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = test_xmalloc((size_t)n + 1);
    if (fread(b, 1, (size_t)n, f) != (size_t)n) n = 0;
    b[n] = 0;
    fclose(f);
    if (len) *len = (size_t)n;
    return b;
}

double test_norm_err(const real *a, const real *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d != d) return INFINITY;
        if (d > num) num = d;
        if (fabs((double)b[i]) > den) den = fabs((double)b[i]);
    }
    return num / (den + 1e-30);
}

const char *test_write_file(const char *name, const void *data, size_t len) {
    const char *p = test_tmp_path(name);
    FILE *f = fopen(p, "wb");
    if (!f || (len && fwrite(data, 1, len, f) != len) || fclose(f) != 0) {
        perror(p);
        exit(1);
    }
    return p;
}

const char *test_data_dir(void) {
    const char *d = getenv("VAE_DATA_DIR");
    return d && *d ? d : NULL;
}

void test_rand_fill(double *dst, size_t n, double lo, double hi, unsigned seed) {
    uint64_t s = 0x9E3779B97F4A7C15ull * (seed + 1);
    for (size_t i = 0; i < n; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        dst[i] = lo + (hi - lo) * ((double)(s >> 11) / 9007199254740992.0);
    }
}

void test_rand_fill_real(real *dst, size_t n, double lo, double hi, unsigned seed) {
    uint64_t s = 0x9E3779B97F4A7C15ull * (seed + 1);
    for (size_t i = 0; i < n; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        dst[i] = (real)(lo + (hi - lo) * ((double)(s >> 11) / 9007199254740992.0));
    }
}

double test_max_rel(const real *a, const real *b, size_t n, double floor) {
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        double s = fabs((double)b[i]);
        double r = d / (s > floor ? s : floor);
        if (r != r) return INFINITY;
        if (r > worst) worst = r;
    }
    return worst;
}

int test_step_vals_equal(const vae_step_vals *a, const vae_step_vals *b) {
    return a->step == b->step && a->next == b->next && a->row0 == b->row0 && a->sub == b->sub &&
           a->rows == b->rows && a->kl_scale == b->kl_scale && a->bc1 == b->bc1 &&
           a->bc2 == b->bc2 && a->lr_scale == b->lr_scale;
}

vae_step_vals *test_step_vals_dev(vae_backend *be, const vae_step_vals *v) {
    vae_step_vals *d = (vae_step_vals *)be->alloc(be, sizeof *d);
    if (!d) {
        fprintf(stderr, "alloc: %s\n", vae_error_get());
        exit(1);
    }
    be->upload(be, d, v, sizeof *d);
    return d;
}

int test_finish(void) {
    printf("%d passed, %d failed\n", g_test_pass, g_test_fail);
    if (g_test_fail == 0 && g_tmp[0]) {
        char cmd[700];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmp);
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_tmp);
    }
    return g_test_fail ? 1 : 0;
}

/* fuzz_safetensors.c — libFuzzer harness for the safetensors reader
 * (vae_st_parse: length prefix, UTF-8 and JSON header, dtypes, shapes,
 * offsets, overlap, crc32).
 *
 * After a successful parse every tensor's bytes are read (ASan flags any
 * pointer outside the file buffer) and F32/F64/I64 tensors are read through
 * typed pointers (UBSan's alignment check holds the reader to its promise
 * that t->data is aligned to the element size). */
#include "fuzz_util.h"

#include "vae_io.h"

static size_t dtype_size(const char *d) {
    static const struct {
        const char *n;
        size_t s;
    } k[] = {{"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"I64", 8},
             {"I32", 4}, {"I16", 2}, {"I8", 1},  {"U8", 1},   {"BOOL", 1}};
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++)
        if (!strcmp(k[i].n, d)) return k[i].s;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    vae_st_file f;
    int rc = vae_st_parse(&f, data, size, "<fuzz>");
    if (rc != VAE_OK) {
        if (f.buf || f.t || f.meta || f.n_t || f.n_meta) abort(); /* freed and reset on error */
        return 0;
    }
    if (f.len != size) abort();
    volatile double sink = 0;
    for (int i = 0; i < f.n_t; i++) {
        const vae_st_tensor *t = &f.t[i];
        size_t es = dtype_size(t->dtype);
        if (!es || t->ndim < 0 || t->ndim > 4) abort();
        uint64_t count = 1;
        for (int d = 0; d < t->ndim; d++) {
            if (t->shape[d] < 0) abort();
            count *= (uint64_t)t->shape[d];
        }
        if (count * es != t->bytes) abort();
        if (t->bytes) {
            const uint8_t *p = t->data;
            if (p < f.buf || p + t->bytes > f.buf + f.len) abort();
            (void)fuzz_touch(p, t->bytes);
        }
        if (!strcmp(t->dtype, "F32")) {
            const float *x = t->data;
            for (uint64_t j = 0; j < count; j++) sink += x[j];
        } else if (!strcmp(t->dtype, "F64")) {
            const double *x = t->data;
            for (uint64_t j = 0; j < count; j++) sink += x[j];
        } else if (!strcmp(t->dtype, "I64")) {
            const int64_t *x = t->data;
            for (uint64_t j = 0; j < count; j++) sink += (double)x[j];
        }
        if (vae_st_find(&f, t->name) != t) abort(); /* names are unique */
    }
    for (int i = 0; i < f.n_meta; i++) {
        if (!f.meta[i].value) abort();
        if (vae_st_meta_get(&f, f.meta[i].key) != f.meta[i].value) abort();
        sink += (double)strlen(f.meta[i].value);
    }
    (void)sink;
    vae_st_free(&f);
    return 0;
}

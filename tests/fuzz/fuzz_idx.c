/* fuzz_idx.c — libFuzzer harness for the IDX loader (vae_load_idx) and the
 * file reader under it (vae_read_file: raw and gzip, multi-member gzip).
 *
 * The input is an IDX images file, raw or gzipped (the fuzzer reaches the
 * gzip path through the 1f 8b magic). If it contains the separator
 * "\n--labels--\n", the bytes after it are an IDX labels file loaded with it. */
#include "fuzz_util.h"

#include "vae_data.h"

#define SEP "\n--labels--\n"

static fuzz_file g_images, g_labels;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    size_t ilen, llen;
    const uint8_t *lab;
    int with_labels = fuzz_split(data, size, SEP, &ilen, &lab, &llen);
    fuzz_file_set(&g_images, "idx-images", data, ilen);
    if (with_labels) fuzz_file_set(&g_labels, "idx-labels", lab, llen);

    vae_dataset ds;
    int rc = vae_load_idx(&ds, g_images.path, with_labels ? g_labels.path : NULL);
    if (rc == VAE_OK) {
        if (ds.n < 1 || ds.c != 1 || ds.h < 1 || ds.w < 1 || !ds.images) abort();
        if (with_labels && !ds.labels) abort();
        size_t bytes = (size_t)ds.n * (size_t)ds.h * (size_t)ds.w;
        (void)fuzz_touch(ds.images, bytes);
        if (ds.labels) (void)fuzz_touch(ds.labels, (size_t)ds.n);
        vae_dataset_free(&ds);
    } else if (ds.images || ds.labels) {
        abort(); /* nothing is handed back on error */
    }

    /* The reader on its own, with a small limit (exercises the size cap). */
    uint8_t *buf = NULL;
    size_t len = 0;
    rc = vae_read_file(g_images.path, &buf, &len, 1000);
    if (rc == VAE_OK) {
        if (len > 1000) abort();
        (void)fuzz_touch(buf, len);
    } else if (buf) {
        abort();
    }
    free(buf);
    return 0;
}

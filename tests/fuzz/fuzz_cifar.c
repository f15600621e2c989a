/* fuzz_cifar.c — libFuzzer harness for the CIFAR-10 batch loader
 * (vae_load_cifar10, through vae_read_file: raw or gzipped).
 *
 * The input is one batch file, or up to three separated by "\n--next--\n"
 * (the loader concatenates the records of every file). */
#include "fuzz_util.h"

#include "vae_data.h"

#define SEP "\n--next--\n"
#define MAX_FILES 3

static fuzz_file g_files[MAX_FILES];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const char *const tags[MAX_FILES] = {"cifar-0", "cifar-1", "cifar-2"};
    const char *paths[MAX_FILES];
    int n = 0;
    const uint8_t *p = data;
    size_t left = size;
    for (;;) {
        size_t first, rest_len;
        const uint8_t *rest;
        int more = fuzz_split(p, left, SEP, &first, &rest, &rest_len);
        if (n == MAX_FILES - 1) { /* the last file takes the remainder */
            first = left;
            more = 0;
        }
        fuzz_file_set(&g_files[n], tags[n], p, first);
        paths[n] = g_files[n].path;
        n++;
        if (!more) break;
        p = rest;
        left = rest_len;
    }

    vae_dataset ds;
    int rc = vae_load_cifar10(&ds, paths, n);
    if (rc == VAE_OK) {
        if (ds.n < 1 || ds.c != 3 || ds.h != 32 || ds.w != 32 || !ds.images || !ds.labels) abort();
        (void)fuzz_touch(ds.images, (size_t)ds.n * 3 * 32 * 32);
        for (int i = 0; i < ds.n; i++)
            if (ds.labels[i] > 9) abort();
        vae_dataset_free(&ds);
    } else if (ds.images || ds.labels) {
        abort();
    }
    return 0;
}

/* fuzz_npy.c — libFuzzer harness for the .npy reader (vae_npy_read_u8). */
#include "fuzz_util.h"

#include "vae_io.h"

static fuzz_file g_file;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_file_set(&g_file, "npy", data, size);
    uint8_t *arr = NULL;
    int64_t shape[4] = {-1, -1, -1, -1};
    int ndim = -1;
    int rc = vae_npy_read_u8(g_file.path, &arr, shape, &ndim);
    if (rc == VAE_OK) {
        if (!arr || ndim < 1 || ndim > 4) abort();
        uint64_t count = 1;
        for (int d = 0; d < ndim; d++) {
            if (shape[d] < 0) abort();
            count *= (uint64_t)shape[d];
        }
        if (count > size) abort();
        (void)fuzz_touch(arr, (size_t)count);
    } else if (arr) {
        abort();
    }
    free(arr);
    return 0;
}

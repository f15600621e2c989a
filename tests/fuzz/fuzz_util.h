/* fuzz_util.h — helpers shared by the libFuzzer harnesses.
 *
 * The path-based loaders (vae_load_idx, vae_load_cifar10, vae_npy_read_u8,
 * vae_ckpt_open) are fed through a file: an anonymous in-memory file
 * (memfd_create) opened by its /proc/self/fd/N path, so nothing is written to
 * disk. Where memfd is unavailable, a per-process temp file under /tmp is
 * used instead and removed at exit. Harnesses never write anywhere else.
 */
#ifndef VAE_FUZZ_UTIL_H
#define VAE_FUZZ_UTIL_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

typedef struct {
    int fd;
    char path[128];
} fuzz_file;

#define FUZZ_MAX_TMP 8
static char fuzz_tmp_paths[FUZZ_MAX_TMP][128];
static int fuzz_n_tmp;

__attribute__((unused)) static void fuzz_unlink_tmp(void) {
    for (int i = 0; i < fuzz_n_tmp; i++) unlink(fuzz_tmp_paths[i]);
}

/* Open the backing file once (memfd, else /tmp/vae-fuzz-<tag>-<pid>-XXXXXX). */
__attribute__((unused)) static void fuzz_file_init(fuzz_file *ff, const char *tag) {
    if (ff->path[0]) return;
#ifdef MFD_CLOEXEC
    ff->fd = memfd_create(tag, MFD_CLOEXEC);
    if (ff->fd >= 0) {
        snprintf(ff->path, sizeof ff->path, "/proc/self/fd/%d", ff->fd);
        FILE *probe = fopen(ff->path, "rb"); /* /proc may be missing in a sandbox */
        if (probe) {
            fclose(probe);
            return;
        }
        close(ff->fd);
    }
#endif
    if (fuzz_n_tmp == FUZZ_MAX_TMP) abort();
    snprintf(ff->path, sizeof ff->path, "/tmp/vae-fuzz-%s-%d-XXXXXX", tag, (int)getpid());
    ff->fd = mkstemp(ff->path);
    if (ff->fd < 0) {
        perror("fuzz: mkstemp");
        abort();
    }
    if (fuzz_n_tmp == 0) atexit(fuzz_unlink_tmp);
    memcpy(fuzz_tmp_paths[fuzz_n_tmp++], ff->path, sizeof ff->path);
}

/* Replace the file's contents with data[0..n). */
__attribute__((unused)) static void fuzz_file_set(fuzz_file *ff, const char *tag, const uint8_t *data, size_t n) {
    fuzz_file_init(ff, tag);
    if (ftruncate(ff->fd, 0) != 0) {
        perror("fuzz: ftruncate");
        abort();
    }
    size_t done = 0;
    while (done < n) {
        ssize_t w = pwrite(ff->fd, data + done, n - done, (off_t)done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            perror("fuzz: pwrite");
            abort();
        }
        done += (size_t)w;
    }
}

/* Split data at the first occurrence of `sep` (not included in either part).
 * Returns 1 and the second part when found; else 0 (the first part is all). */
__attribute__((unused)) static int fuzz_split(const uint8_t *data, size_t n, const char *sep, size_t *first_len,
                      const uint8_t **rest, size_t *rest_len) {
    size_t k = strlen(sep);
    const uint8_t *p = n >= k ? memmem(data, n, sep, k) : NULL;
    if (!p) {
        *first_len = n;
        *rest = NULL;
        *rest_len = 0;
        return 0;
    }
    *first_len = (size_t)(p - data);
    *rest = p + k;
    *rest_len = n - *first_len - k;
    return 1;
}

/* Touch every byte (so ASan sees any out-of-bounds buffer) and fold them. */
__attribute__((unused)) static uint8_t fuzz_touch(const uint8_t *p, size_t n) {
    volatile uint8_t acc = 0;
    for (size_t i = 0; i < n; i++) acc ^= p[i];
    return acc;
}

#endif /* VAE_FUZZ_UTIL_H */

/* sheets_bench.c — how fast `vae sample` can write PNG sheets: pushes uint8
 * images [N, C, H, W] through vae_sheets (src/host/sheets.c, the code the
 * sampler's writer thread runs) as a grid of --cols columns, and prints
 * images/s, pixel MB/s and the bytes written. The images come from a .npy of
 * the sampler (`vae sample CKPT --grid 0,1 --steps S --no-png` writes
 * grid.npy), repeated until --images are pushed, so a large grid's rate can
 * be measured from a small file; without --npy they are random blobs.
 *
 *   vae_sheets_bench [--npy FILE] [--images N] [--cols N] [--threads N]
 *                    [--sheet-px N] [--repeats N] [--out DIR]
 *
 * Each repeat writes the whole grid into DIR as bench*.png (DIR must exist
 * and be empty; default a fresh temp folder, removed at the end) and its
 * sheets are deleted before the next; the median repeat is reported, with
 * the encoder threads the grid got (vae_sheets_threads: min(threads, block
 * columns), one when the grid is a single sheet wide). The figure bounds
 * `vae sample --grid` (PNG on by default) on the host side, beside the disk
 * and the copy from the GPU.
 */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "vae_core.h"
#include "vae_io.h"
#include "vae_sheets.h"

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Bytes of the sheets this program wrote in dir (bench*.png: dir was empty
 * at the start); removes them when rm. */
static int64_t dir_bytes(const char *dir, int rm) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int64_t total = 0;
    struct dirent *e;
    char p[4096];
    while ((e = readdir(d))) {
        const size_t len = strlen(e->d_name);
        if (strncmp(e->d_name, "bench", 5) || len < 9 || strcmp(e->d_name + len - 4, ".png"))
            continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(p, &st) == 0 && S_ISREG(st.st_mode)) {
            total += (int64_t)st.st_size;
            if (rm) unlink(p);
        }
    }
    closedir(d);
    return total;
}

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static long long arg_ll(const char *flag, const char *v, long long lo, long long hi) {
    char *end;
    errno = 0;
    const long long x = v ? strtoll(v, &end, 10) : 0;
    if (!v || errno || *end || x < lo || x > hi) {
        fprintf(stderr, "vae_sheets_bench: %s %s: expected an integer in [%lld, %lld]\n", flag,
                v ? v : "(missing)", lo, hi);
        exit(2);
    }
    return x;
}

/* The sheets' folder: emptied of our files, and removed when it was made
 * here; then the exit status. */
static int finish(const char *dir, int made, int status) {
    dir_bytes(dir, 1);
    if (made) rmdir(dir);
    return status;
}

/* Is dir an existing folder with nothing in it? */
static int empty_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(d);
    return n == 0;
}

int main(int argc, char **argv) {
    const char *npy = NULL, *out = NULL;
    long long images = 0, cols = 1000, threads = 0, sheet_px = 0, repeats = 3;
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if ((!strcmp(f, "--npy") || !strcmp(f, "--out")) && (!v || !*v)) {
            fprintf(stderr, "vae_sheets_bench: %s: expected a path\n", f);
            return 2;
        }
        if (!strcmp(f, "--npy")) npy = v, i++;
        else if (!strcmp(f, "--out")) out = v, i++;
        else if (!strcmp(f, "--images")) images = arg_ll(f, v, 1, 1LL << 40), i++;
        else if (!strcmp(f, "--cols")) cols = arg_ll(f, v, 1, 1 << 20), i++;
        else if (!strcmp(f, "--threads")) threads = arg_ll(f, v, 0, 1024), i++;
        else if (!strcmp(f, "--sheet-px")) sheet_px = arg_ll(f, v, 0, 1000000), i++;
        else if (!strcmp(f, "--repeats")) repeats = arg_ll(f, v, 1, 100), i++;
        else {
            fprintf(stderr,
                    "usage: vae_sheets_bench [--npy FILE] [--images N] [--cols N] [--threads N]\n"
                    "                        [--sheet-px N] [--repeats N] [--out DIR]\n");
            return 2;
        }
    }

    uint8_t *data = NULL;
    int64_t shape[4] = {0, 1, 28, 28};
    int ndim = 4;
    if (npy) {
        if (vae_npy_read_u8(npy, &data, shape, &ndim) != VAE_OK) {
            fprintf(stderr, "vae_sheets_bench: %s\n", vae_error_get());
            return 1;
        }
        if (ndim != 4 || (shape[1] != 1 && shape[1] != 3)) {
            fprintf(stderr, "vae_sheets_bench: %s: expected uint8 [N, C, H, W] with C 1 or 3\n",
                    npy);
            return 1;
        }
    } else { /* random blobs on black: a stand-in with some structure */
        shape[0] = 4096;
        data = malloc((size_t)shape[0] * 784);
        if (!data) return 1;
        uint32_t r = 12345;
        for (int64_t n = 0; n < shape[0]; n++)
            for (int y = 0; y < 28; y++)
                for (int x = 0; x < 28; x++) {
                    r = r * 1664525u + 1013904223u;
                    const int dy = y - 14, dx = x - 14, in = dy * dy + dx * dx < 64;
                    data[n * 784 + y * 28 + x] = in ? (uint8_t)(128 + (r >> 25)) : 0;
                }
    }
    const int64_t N = shape[0];
    const int c = (int)shape[1], h = (int)shape[2], w = (int)shape[3];
    const size_t D = (size_t)c * h * w;
    if (N < 1 || h < 1 || w < 1) {
        fprintf(stderr, "vae_sheets_bench: %s holds no images\n", npy);
        return 1;
    }
    if (!images) images = N;

    char tmp[] = "/tmp/vae-sheets-bench-XXXXXX";
    const char *dir = out;
    if (out && !empty_dir(out)) {
        fprintf(stderr, "vae_sheets_bench: --out %s: expected an existing, empty folder\n", out);
        return 2;
    }
    if (!dir && !(dir = mkdtemp(tmp))) {
        perror("vae_sheets_bench: mkdtemp");
        return 1;
    }
    double *secs = calloc((size_t)repeats, sizeof *secs);
    int64_t bytes = 0, sheets = 0;
    int enc = 1;
    for (long long r = 0; r < repeats; r++) {
        vae_sheets *s = NULL;
        const double t0 = now_s();
        int rc = vae_sheets_open(&s, dir, "bench", images, (int)cols, c, h, w, (int)sheet_px,
                                 (int)threads);
        for (int64_t done = 0; !rc && done < images;) {
            const int64_t k = images - done < N ? images - done : N;
            rc = vae_sheets_push(s, data, k);
            done += k;
        }
        if (rc) {
            fprintf(stderr, "vae_sheets_bench: %s\n", vae_error_get());
            vae_sheets_abort(s);
            return finish(dir, !out, 1);
        }
        sheets = vae_sheets_count(s);
        enc = vae_sheets_threads(s);
        rc = vae_sheets_close(s);
        secs[r] = now_s() - t0;
        if (rc) {
            fprintf(stderr, "vae_sheets_bench: %s\n", vae_error_get());
            return finish(dir, !out, 1);
        }
        bytes = dir_bytes(dir, 1);
    }
    finish(dir, !out, 0);
    qsort(secs, (size_t)repeats, sizeof *secs, cmp_double);
    const double med = secs[repeats / 2];
    printf("sheets: %lld images [%d, %d, %d] from %s, %lld columns, %" PRId64
           " sheet(s), %d encoder thread(s) (--threads %lld)\n",
           images, c, h, w, npy ? npy : "random blobs", cols, sheets, enc, threads);
    printf("sheets: median %.3f s of %lld (best %.3f): %.0f images/s, %.1f MB/s of pixels; "
           "%.1f MB of PNG (%.2f PNG bytes per image byte)\n",
           med, repeats, secs[0], (double)images / med, (double)images * (double)D / med / 1e6,
           (double)bytes / 1e6, (double)bytes / ((double)images * (double)D));
    free(secs);
    free(data);
    return 0;
}

/* test_sheets.c — streaming PNG sheets (vae_sheets.h).
 *
 * Every sheet is read back with libpng and compared pixel by pixel with the
 * layout the header documents, computed here independently of sheets.c:
 * spr = max(1, (max_px + pad) / (W + pad)), sps likewise with H, sheet (R, Cb)
 * holds grid rows [R*sps, ...) and columns [Cb*spr, ...), images separated by
 * `pad` white pixels, empty slots white, sheets without any image absent.
 * Image pixels are hash values in [0, 254], so a white pixel is always
 * padding. A single sheet must equal vae_tile_images + vae_png_write byte
 * for byte. Every test runs twice, with the caller encoding alone (threads
 * 1) and with threads 3 (a pool of encoders for the layouts more than one
 * sheet wide), and (8) checks that the pool's files are the single thread's
 * byte for byte, and a libpng error inside a worker. */
#include <dirent.h>
#include <inttypes.h>
#include <png.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"
#include "vae_io.h"
#include "vae_sheets.h"

enum { PAD = VAE_SHEETS_PAD };

/* encoder threads of this pass (main), and its suffix for directory names */
static int g_threads = 1;
static const char *g_pass = "";

/* ---------------------------------------------------------------- helpers */

static uint8_t pix(int64_t i, int ch, int y, int x) {
    uint64_t v = (uint64_t)i * 0x9E3779B97F4A7C15ull ^ (uint64_t)(ch * 1000003 + y * 7919 + x * 104729);
    v ^= v >> 29;
    v *= 0xBF58476D1CE4E5B9ull;
    v ^= v >> 32;
    return (uint8_t)(v % 255); /* never 255 */
}

/* n images [n, c, h, w] of hash pixels */
static uint8_t *make_imgs(int64_t n, int c, int h, int w) {
    uint8_t *p = malloc((size_t)n * c * h * w);
    size_t k = 0;
    for (int64_t i = 0; i < n; i++)
        for (int ch = 0; ch < c; ch++)
            for (int y = 0; y < h; y++)
                for (int x = 0; x < w; x++) p[k++] = pix(i, ch, y, x);
    return p;
}

static const char *subdir(const char *name) {
    char full[256];
    snprintf(full, sizeof full, "%s%s", name, g_pass);
    const char *p = test_tmp_path(full);
    if (mkdir(p, 0777) != 0) {
        perror(p);
        exit(1);
    }
    return p;
}

static int same_file(const char *a, const char *b) {
    size_t na = 0, nb = 0;
    char *pa = test_slurp(a, &na), *pb = test_slurp(b, &nb);
    int ok = pa && pb && na == nb && na > 0 && memcmp(pa, pb, na) == 0;
    free(pa);
    free(pb);
    return ok;
}

/* Entries in dir (not . and ..), and how many look like temp files. */
static int count_entries(const char *dir, int *tmp) {
    DIR *d = opendir(dir);
    int n = 0;
    if (tmp) *tmp = 0;
    if (!d) return -1;
    for (struct dirent *e; (e = readdir(d));) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        n++;
        if (tmp && strstr(e->d_name, ".tmp.")) (*tmp)++;
    }
    closedir(d);
    return n;
}

/* Read an 8-bit grey / RGB PNG; returns interleaved pixels [h, w, c] or NULL. */
static uint8_t *read_png(const char *path, int *w, int *h, int *c) {
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_file(&img, path)) {
        fprintf(stderr, "%s: %s\n", path, img.message);
        return NULL;
    }
    if (img.format != PNG_FORMAT_RGB && img.format != PNG_FORMAT_GRAY) {
        fprintf(stderr, "%s: unexpected PNG format %u\n", path, img.format);
        png_image_free(&img);
        return NULL;
    }
    *w = (int)img.width, *h = (int)img.height, *c = img.format == PNG_FORMAT_RGB ? 3 : 1;
    uint8_t *buf = malloc(PNG_IMAGE_SIZE(img));
    if (!png_image_finish_read(&img, NULL, buf, 0, NULL)) {
        fprintf(stderr, "%s: %s\n", path, img.message);
        free(buf);
        return NULL;
    }
    return buf;
}

static int ndigits(int64_t v) {
    int d = 1;
    while (v >= 10) v /= 10, d++;
    return d;
}

/* Check every sheet file of a grid against the documented layout: names,
 * which sheets exist, sizes and every pixel. Returns the number of sheets
 * found (and checks that the directory holds nothing else). */
static int64_t check_layout(const char *dir, const char *prefix, const uint8_t *imgs, int64_t n, int cols,
                            int c, int h, int w, int max_px) {
    const int64_t rows = (n + cols - 1) / cols;
    int64_t spr = (max_px + PAD) / (w + PAD), sps = (max_px + PAD) / (h + PAD);
    if (spr < 1) spr = 1;
    if (sps < 1) sps = 1;
    const int64_t BR = (rows + sps - 1) / sps, BC = (cols + spr - 1) / spr;
    int64_t expect = 0; /* sheets holding at least one image */
    for (int64_t R = 0; R < BR; R++)
        for (int64_t Cb = 0; Cb < BC; Cb++) expect += R * sps * cols + Cb * spr < n;
    int64_t found = 0;
    for (int64_t R = 0; R < BR; R++)
        for (int64_t Cb = 0; Cb < BC; Cb++) {
            char path[800];
            int len;
            if (expect == 1) len = snprintf(path, sizeof path, "%s/%s.png", dir, prefix);
            else if (BC == 1)
                len = snprintf(path, sizeof path, "%s/%s-%0*" PRId64 ".png", dir, prefix,
                               ndigits(BR - 1), R);
            else
                len = snprintf(path, sizeof path, "%s/%s-%0*" PRId64 "-%0*" PRId64 ".png", dir, prefix,
                               ndigits(BR - 1), R, ndigits(BC - 1), Cb);
            if (len < 0 || len >= (int)sizeof path) {
                CHECK_MSG(0, "path too long");
                continue;
            }
            const int want = R * sps * cols + Cb * spr < n;
            CHECK_MSG((access(path, F_OK) == 0) == want, "%s should %sexist", path, want ? "" : "not ");
            if (!want) continue;
            int pw, ph, pc;
            uint8_t *got = read_png(path, &pw, &ph, &pc);
            CHECK_MSG(got != NULL, "%s unreadable", path);
            if (!got) continue;
            found++;
            const int64_t nr = rows - R * sps < sps ? rows - R * sps : sps;
            const int64_t nc = cols - Cb * spr < spr ? cols - Cb * spr : spr;
            CHECK_MSG(pw == nc * (w + PAD) - PAD && ph == nr * (h + PAD) - PAD && pc == c,
                      "%s is %dx%dx%d", path, pw, ph, pc);
            if (pw != nc * (w + PAD) - PAD || ph != nr * (h + PAD) - PAD || pc != c) {
                free(got);
                continue;
            }
            int64_t bad = 0;
            for (int y = 0; y < ph; y++)
                for (int x = 0; x < pw; x++)
                    for (int ch = 0; ch < c; ch++) {
                        const int oy = y % (h + PAD), ox = x % (w + PAD);
                        const int64_t gr = R * sps + y / (h + PAD), gc = Cb * spr + x / (w + PAD);
                        const int64_t i = gr * cols + gc;
                        uint8_t e = 255;
                        if (oy < h && ox < w && i < n)
                            e = imgs[(((size_t)i * c + ch) * h + oy) * w + ox];
                        bad += got[((size_t)y * pw + x) * c + ch] != e;
                    }
            CHECK_MSG(bad == 0, "%s: %" PRId64 " wrong pixels", path, bad);
            free(got);
        }
    CHECK_MSG(found == expect, "%" PRId64 " sheets found, %" PRId64 " expected", found, expect);
    int tmp = 0;
    CHECK_MSG(count_entries(dir, &tmp) == (int)expect && tmp == 0, "%s: %d entries, %d temp",
              dir, count_entries(dir, NULL), tmp);
    return found;
}

/* Write n images to dir/prefix in chunks of `chunk` images (cycling through
 * the list; 0 = all at once) with `threads` encoders. Returns the status of
 * close. */
static int write_sheets_n(const char *dir, const char *prefix, const uint8_t *imgs, int64_t n,
                          int cols, int c, int h, int w, int max_px, const int *chunks,
                          int n_chunks, int64_t *count, int threads) {
    vae_sheets *s;
    int rc = vae_sheets_open(&s, dir, prefix, n, cols, c, h, w, max_px, threads);
    if (rc) return rc;
    if (count) *count = vae_sheets_count(s);
    const size_t D = (size_t)c * h * w;
    for (int64_t i = 0, k = 0; i < n && !rc; k++) {
        int64_t m = n_chunks ? chunks[k % n_chunks] : n;
        if (m > n - i) m = n - i;
        rc = vae_sheets_push(s, imgs + (size_t)i * D, m);
        i += m;
    }
    if (rc) {
        vae_sheets_abort(s);
        return rc;
    }
    return vae_sheets_close(s);
}

/* write_sheets_n with this pass's threads */
static int write_sheets(const char *dir, const char *prefix, const uint8_t *imgs, int64_t n, int cols,
                        int c, int h, int w, int max_px, const int *chunks, int n_chunks,
                        int64_t *count) {
    return write_sheets_n(dir, prefix, imgs, n, cols, c, h, w, max_px, chunks, n_chunks, count,
                          g_threads);
}

static int write_sheets_threads(const char *dir, const char *prefix, const uint8_t *imgs,
                                int64_t n, int cols, int c, int h, int w, int max_px,
                                const int *chunks, int n_chunks, int threads) {
    return write_sheets_n(dir, prefix, imgs, n, cols, c, h, w, max_px, chunks, n_chunks, NULL,
                          threads);
}

/* ---------------------------------------------------------------- tests */

/* (1) one sheet == vae_tile_images + vae_png_write, byte for byte */
static void test_single(void) {
    const int shapes[2][5] = {{13, 5, 3, 4, 6}, {12, 4, 1, 7, 3}}; /* n, cols, c, h, w */
    for (int t = 0; t < 2; t++) {
        const int n = shapes[t][0], cols = shapes[t][1], c = shapes[t][2], h = shapes[t][3],
                  w = shapes[t][4];
        const char *dir = subdir(t ? "single1" : "single3");
        uint8_t *imgs = make_imgs(n, c, h, w);
        int64_t count = 0;
        CHECK(write_sheets(dir, "grid", imgs, n, cols, c, h, w, 0, NULL, 0, &count) == VAE_OK);
        CHECK(count == 1);
        CHECK(check_layout(dir, "grid", imgs, n, cols, c, h, w, VAE_SHEETS_DEFAULT_MAX_PX) == 1);

        int gw, gh, pw, ph, pc;
        uint8_t *tiles = vae_tile_images(imgs, n, c, h, w, cols, PAD, &gw, &gh);
        char path[800], ref[800];
        snprintf(path, sizeof path, "%s/grid.png", dir);
        uint8_t *got = read_png(path, &pw, &ph, &pc);
        CHECK(tiles && got && pw == gw && ph == gh && pc == c);
        if (tiles && got && pw == gw && ph == gh)
            CHECK(memcmp(got, tiles, (size_t)gw * gh * c) == 0);
        /* the same encoder settings give the same file */
        snprintf(ref, sizeof ref, "%s/../ref%d.png", dir, t);
        CHECK(tiles && vae_png_write(ref, tiles, gw, gh, c) == VAE_OK);
        CHECK_MSG(same_file(path, ref), "%s differs from %s", path, ref);
        free(got);
        free(tiles);
        free(imgs);
    }
}

/* (2) a 10x7 grid of 4x5 RGB images, max_px 26: spr = 28/7 = 4, sps = 28/6 = 4,
 * so 3 block rows x 2 block columns; sheet (2,1) is 3 images x 2 images. */
static void test_split(void) {
    const char *dir = subdir("split");
    const int n = 70, cols = 7, c = 3, h = 4, w = 5, mpx = 26;
    uint8_t *imgs = make_imgs(n, c, h, w);
    int64_t count = 0;
    CHECK(write_sheets(dir, "s", imgs, n, cols, c, h, w, mpx, NULL, 0, &count) == VAE_OK);
    CHECK(count == 6);
    CHECK(check_layout(dir, "s", imgs, n, cols, c, h, w, mpx) == 6);
    char p[800];
    snprintf(p, sizeof p, "%s/s-2-1.png", dir);
    int pw = 0, ph = 0, pc = 0;
    uint8_t *got = read_png(p, &pw, &ph, &pc);
    CHECK(got && pw == 3 * 5 + 2 * PAD && ph == 2 * 4 + PAD && pc == 3); /* 19 x 10 */
    /* spot check: image 8*7+4 = 60 (grid row 8, col 4) is at the top-left of s-2-1 */
    if (got) CHECK(got[0] == pix(60, 0, 0, 0) && got[1] == pix(60, 1, 0, 0) && got[2] == pix(60, 2, 0, 0));
    free(got);
    free(imgs);

    /* one block column, 12 block rows: names zero-padded to 2 digits */
    dir = subdir("tall");
    imgs = make_imgs(12, 1, 1, 1);
    CHECK(write_sheets(dir, "t", imgs, 12, 1, 1, 1, 1, 1, NULL, 0, &count) == VAE_OK);
    CHECK(count == 12);
    CHECK(check_layout(dir, "t", imgs, 12, 1, 1, 1, 1, 1) == 12);
    snprintf(p, sizeof p, "%s/t-00.png", dir);
    CHECK(access(p, F_OK) == 0);
    snprintf(p, sizeof p, "%s/t-11.png", dir);
    CHECK(access(p, F_OK) == 0);
    free(imgs);

    /* one block row, 12 block columns: "-0-00" ... "-0-11" */
    dir = subdir("wide");
    imgs = make_imgs(12, 1, 1, 1);
    CHECK(write_sheets(dir, "w", imgs, 12, 12, 1, 1, 1, 1, NULL, 0, &count) == VAE_OK);
    CHECK(count == 12);
    CHECK(check_layout(dir, "w", imgs, 12, 12, 1, 1, 1, 1) == 12);
    snprintf(p, sizeof p, "%s/w-0-11.png", dir);
    CHECK(access(p, F_OK) == 0);
    free(imgs);
}

/* (3) partial last grid row: white slots; a sheet with no image is not written */
static void test_partial(void) {
    const char *dir = subdir("partial");
    /* 23 images in 7 columns: 4 grid rows, the last with 2 images; one block row */
    uint8_t *imgs = make_imgs(23, 3, 4, 5);
    int64_t count = 0;
    CHECK(write_sheets(dir, "p", imgs, 23, 7, 3, 4, 5, 26, NULL, 0, &count) == VAE_OK);
    CHECK(count == 2);
    CHECK(check_layout(dir, "p", imgs, 23, 7, 3, 4, 5, 26) == 2);
    /* the bottom-right image slot of p-0-1 (grid row 3, col 6) is white */
    char path[800];
    int pw = 0, ph = 0, pc = 0;
    snprintf(path, sizeof path, "%s/p-0-1.png", dir);
    uint8_t *got = read_png(path, &pw, &ph, &pc);
    CHECK(got && pw == 19 && ph == 22);
    if (got && pw == 19 && ph == 22) {
        int white = 1;
        for (int y = 18; y < 22; y++)
            for (int x = 0; x < 19 * 3; x++) white &= got[(size_t)y * 19 * 3 + x] == 255;
        CHECK(white);
    }
    free(got);
    free(imgs);

    /* 8x5 images, max_px 26: spr 4, sps 2; 16 images in 7 columns -> grid rows
     * 0-1 in block row 0, grid row 2 (images 14, 15) alone in block row 1: sheet
     * (1, 1) would be all white and is not written. */
    dir = subdir("empty");
    imgs = make_imgs(16, 1, 8, 5);
    CHECK(write_sheets(dir, "e", imgs, 16, 7, 1, 8, 5, 26, NULL, 0, &count) == VAE_OK);
    CHECK(count == 3);
    CHECK(check_layout(dir, "e", imgs, 16, 7, 1, 8, 5, 26) == 3);
    snprintf(path, sizeof path, "%s/e-1-1.png", dir);
    CHECK(access(path, F_OK) != 0);
    free(imgs);

    /* the same layout with 18 images: sheet (1, 1)'s first slot is image 18,
     * one past the last, so it is not written either */
    dir = subdir("empty18");
    imgs = make_imgs(18, 1, 8, 5);
    CHECK(write_sheets(dir, "e", imgs, 18, 7, 1, 8, 5, 26, NULL, 0, &count) == VAE_OK);
    CHECK(count == 3);
    CHECK(check_layout(dir, "e", imgs, 18, 7, 1, 8, 5, 26) == 3);
    free(imgs);

    /* max_px 25 with 5-wide images: (25 + 2) / 7 = 3 per sheet row, not 4 */
    dir = subdir("mpx25");
    imgs = make_imgs(23, 3, 4, 5);
    CHECK(write_sheets(dir, "q", imgs, 23, 7, 3, 4, 5, 25, NULL, 0, &count) == VAE_OK);
    CHECK(count == 3 && check_layout(dir, "q", imgs, 23, 7, 3, 4, 5, 25) == 3);
    free(imgs);

    /* exactly 10 block rows of one column: names of one digit, q-0 .. q-9 */
    dir = subdir("ten");
    imgs = make_imgs(10, 1, 2, 2);
    CHECK(write_sheets(dir, "t", imgs, 10, 1, 1, 2, 2, 2, NULL, 0, &count) == VAE_OK);
    CHECK(count == 10 && check_layout(dir, "t", imgs, 10, 1, 1, 2, 2, 2) == 10);
    snprintf(path, sizeof path, "%s/t-9.png", dir);
    CHECK(access(path, F_OK) == 0);
    free(imgs);

    /* fewer images than one grid row: one sheet, as vae_tile_images lays it out */
    dir = subdir("short");
    imgs = make_imgs(3, 1, 2, 2);
    CHECK(write_sheets(dir, "x", imgs, 3, 8, 1, 2, 2, 0, NULL, 0, &count) == VAE_OK);
    CHECK(count == 1);
    CHECK(check_layout(dir, "x", imgs, 3, 8, 1, 2, 2, VAE_SHEETS_DEFAULT_MAX_PX) == 1);
    free(imgs);
}

/* (4) chunking does not change the files */
static void test_chunks(void) {
    const int n = 67, cols = 7, c = 3, h = 4, w = 5, mpx = 26;
    uint8_t *imgs = make_imgs(n, c, h, w);
    const int one[] = {1}, seven[] = {7}, odd[] = {3, 11, 1, 5, 2, 13};
    const char *dirs[4] = {subdir("chunk_all"), subdir("chunk_1"), subdir("chunk_7"), subdir("chunk_odd")};
    CHECK(write_sheets(dirs[0], "c", imgs, n, cols, c, h, w, mpx, NULL, 0, NULL) == VAE_OK);
    CHECK(write_sheets(dirs[1], "c", imgs, n, cols, c, h, w, mpx, one, 1, NULL) == VAE_OK);
    CHECK(write_sheets(dirs[2], "c", imgs, n, cols, c, h, w, mpx, seven, 1, NULL) == VAE_OK);
    CHECK(write_sheets(dirs[3], "c", imgs, n, cols, c, h, w, mpx, odd, 6, NULL) == VAE_OK);
    CHECK(check_layout(dirs[0], "c", imgs, n, cols, c, h, w, mpx) == 6);
    const char *names[6] = {"c-0-0", "c-0-1", "c-1-0", "c-1-1", "c-2-0", "c-2-1"};
    for (int d = 1; d < 4; d++)
        for (int i = 0; i < 6; i++) {
            char a[800], b[800];
            snprintf(a, sizeof a, "%s/%s.png", dirs[0], names[i]);
            snprintf(b, sizeof b, "%s/%s.png", dirs[d], names[i]);
            CHECK_MSG(same_file(a, b), "%s differs from %s", b, a);
        }
    /* pushing 0 images is a no-op */
    vae_sheets *s;
    CHECK(vae_sheets_open(&s, dirs[0], "zero", 1, 1, 1, 1, 1, 0, g_threads) == VAE_OK);
    CHECK(vae_sheets_push(s, NULL, 0) == VAE_OK);
    CHECK(vae_sheets_committed(s) == 0);
    vae_sheets_abort(s);
    free(imgs);
}

/* (5) abort keeps the committed sheets, removes the ones in progress */
static void test_abort(void) {
    const char *dir = subdir("abort");
    const int n = 70, cols = 7, c = 3, h = 4, w = 5, mpx = 26;
    uint8_t *imgs = make_imgs(n, c, h, w);
    const size_t D = (size_t)c * h * w;
    vae_sheets *s;
    CHECK(vae_sheets_open(&s, dir, "a", n, cols, c, h, w, mpx, g_threads) == VAE_OK);
    CHECK(count_entries(dir, NULL) == 0); /* nothing written at open */
    /* grid rows 0-3 (block row 0) and 3 images of row 4 */
    CHECK(vae_sheets_push(s, imgs, 31) == VAE_OK);
    CHECK(vae_sheets_committed(s) == 2);
    int tmp = 0;
    CHECK(count_entries(dir, &tmp) == 2 && tmp == 0);
    /* complete row 4: block row 1's two sheets are now in progress */
    CHECK(vae_sheets_push(s, imgs + 31 * D, 4) == VAE_OK);
    CHECK(count_entries(dir, &tmp) == 4 && tmp == 2);
    vae_sheets_abort(s);
    CHECK(count_entries(dir, &tmp) == 2 && tmp == 0);
    char p[800];
    snprintf(p, sizeof p, "%s/a-0-0.png", dir);
    CHECK(access(p, F_OK) == 0);
    snprintf(p, sizeof p, "%s/a-0-1.png", dir);
    CHECK(access(p, F_OK) == 0);

    /* the committed sheets are complete and right: compare with a full run */
    const char *full = subdir("abort_full");
    CHECK(write_sheets(full, "a", imgs, n, cols, c, h, w, mpx, NULL, 0, NULL) == VAE_OK);
    for (int Cb = 0; Cb < 2; Cb++) {
        char a[800], b[800];
        snprintf(a, sizeof a, "%s/a-0-%d.png", dir, Cb);
        snprintf(b, sizeof b, "%s/a-0-%d.png", full, Cb);
        CHECK(same_file(a, b));
    }

    /* close before all images were pushed: error, in-progress sheets dropped */
    const char *early = subdir("abort_close");
    CHECK(vae_sheets_open(&s, early, "a", n, cols, c, h, w, mpx, g_threads) == VAE_OK);
    CHECK(vae_sheets_push(s, imgs, 35) == VAE_OK);
    CHECK_ERR(vae_sheets_close(s), "closed after 35 of 70 images");
    CHECK(count_entries(early, &tmp) == 2 && tmp == 0);
    free(imgs);
}

/* (6) bad arguments and I/O errors */
static void test_errors(void) {
    const char *dir = subdir("errors");
    vae_sheets *s = (vae_sheets *)&s;
    CHECK_ERR(vae_sheets_open(&s, dir, "e", 10, 5, 2, 4, 4, 0, g_threads), "2 channels per image, expected 1 (grey) or 3");
    CHECK(s == NULL);
    CHECK_ERR(vae_sheets_open(&s, dir, "e", 0, 5, 1, 4, 4, 0, g_threads), "0 images");
    CHECK_ERR(vae_sheets_open(&s, dir, "e", -3, 5, 1, 4, 4, 0, g_threads), "bad sheet layout");
    CHECK_ERR(vae_sheets_open(&s, dir, "e", 10, 0, 1, 4, 4, 0, g_threads), "0 columns");
    CHECK_ERR(vae_sheets_open(&s, dir, "e", 10, 5, 1, 0, 4, 0, g_threads), "0x4 pixels");
    CHECK_ERR(vae_sheets_open(&s, dir, "e", 10, 5, 1, 4, 4, -1, g_threads), "max_px -1");
    CHECK_ERR(vae_sheets_open(&s, dir, "", 10, 5, 1, 4, 4, 0, g_threads), "non-empty file prefix");
    /* sheets beyond the PNG limit: one wide image, or a large max_px */
    CHECK_ERR(vae_sheets_open(&s, dir, "e", 10, 5, 1, 4, 1000001, 0, g_threads), "exceeds the PNG limit");
    CHECK_ERR(vae_sheets_open(&s, dir, "e", 10, 5, 1, 1000001, 4, 0, g_threads),
              "a sheet of 28x1000001 pixels"); /* one tall image: the height's limit */
    /* a max_px far wider than the grid: a sheet is at most the grid's width,
     * so 2 columns of 4 pixels fit whatever max_px says */
    CHECK(vae_sheets_open(&s, dir, "e", 10, 2, 1, 4, 4, 2000000, g_threads) == VAE_OK);
    vae_sheets_abort(s);
    CHECK_ERR(vae_sheets_open(&s, dir, "e", 1000000000, 1000000, 1, 4, 1000, 2000000, g_threads),
              "lower max_px");
    CHECK_ERR(vae_sheets_open(&s, dir, "e", 10, 5, 1, 4, 4, 0, -1), "-1 threads");
    /* file names too long */
    char longp[1100];
    memset(longp, 'x', sizeof longp - 1);
    longp[sizeof longp - 1] = 0;
    CHECK_ERR(vae_sheets_open(&s, dir, longp, 10, 5, 1, 4, 4, 0, g_threads), "too long");
    CHECK(count_entries(dir, NULL) == 0);

    /* pushing more than announced: refused, nothing written, still usable */
    uint8_t *imgs = make_imgs(6, 1, 2, 2);
    CHECK(vae_sheets_open(&s, dir, "e", 5, 5, 1, 2, 2, 0, g_threads) == VAE_OK);
    CHECK_ERR(vae_sheets_push(s, imgs, 6), "push of 6 images after 0 exceeds the 5 announced");
    CHECK_ERR(vae_sheets_push(s, imgs, -1), "expected >= 0");
    CHECK_ERR(vae_sheets_push(s, NULL, 2), "NULL buffer");
    CHECK(count_entries(dir, NULL) == 0);
    CHECK(vae_sheets_push(s, imgs, 5) == VAE_OK);
    CHECK_ERR(vae_sheets_push(s, imgs, 1), "after 5 exceeds the 5");
    CHECK(vae_sheets_close(s) == VAE_OK);
    CHECK(check_layout(dir, "e", imgs, 5, 5, 1, 2, 2, VAE_SHEETS_DEFAULT_MAX_PX) == 1);

    /* a directory that does not exist: the push that opens the sheet fails
     * naming the file; later pushes are refused; abort is safe */
    char nodir[800];
    snprintf(nodir, sizeof nodir, "%s/missing", dir);
    CHECK(vae_sheets_open(&s, nodir, "m", 6, 3, 1, 2, 2, 0, g_threads) == VAE_OK);
    CHECK(vae_sheets_push(s, imgs, 2) == VAE_OK); /* buffered: no file yet */
    CHECK_ERR(vae_sheets_push(s, imgs, 1), "missing/m.png: No such file or directory");
    CHECK_ERR(vae_sheets_push(s, imgs, 1), "earlier error");
    vae_sheets_abort(s);
    CHECK(vae_sheets_open(&s, nodir, "m", 6, 3, 1, 2, 2, 0, g_threads) == VAE_OK);
    CHECK_ERR(vae_sheets_push(s, imgs, 6), "cannot create temporary file");
    CHECK_ERR(vae_sheets_close(s), "earlier error");
    vae_sheets_abort(NULL);
    CHECK(vae_sheets_close(NULL) == VAE_OK);
    free(imgs);

    /* a write failure inside libpng (longjmp): files limited to 2000 bytes,
     * noisy 32x32 RGB images. libpng's write fails or, if stdio holds the
     * tail, the commit does; either names the file and the cause, and no
     * temp file is left behind. */
    const char *full = subdir("fsize");
    struct rlimit old_lim, lim;
    if (getrlimit(RLIMIT_FSIZE, &old_lim) == 0) {
        void (*old_sig)(int) = signal(SIGXFSZ, SIG_IGN);
        imgs = make_imgs(8, 3, 32, 32);
        lim = old_lim;
        lim.rlim_cur = 2000;
        CHECK(setrlimit(RLIMIT_FSIZE, &lim) == 0);
        CHECK(vae_sheets_open(&s, full, "f", 8, 4, 3, 32, 32, 0, g_threads) == VAE_OK);
        int rc = vae_sheets_push(s, imgs, 4);
        if (rc == VAE_OK) rc = vae_sheets_push(s, imgs + 4 * 3 * 32 * 32, 4);
        CHECK(setrlimit(RLIMIT_FSIZE, &old_lim) == 0);
        signal(SIGXFSZ, old_sig);
        CHECK_MSG(rc == VAE_EIO && strstr(vae_error_get(), full) &&
                      strstr(vae_error_get(), "/f.png: "),
                  "rc %d: %s", rc, vae_error_get());
        /* libpng's write fails (the message says why, not libpng's "Write
         * Error"), or, if stdio holds the tail, the commit does */
        CHECK_MSG(strstr(vae_error_get(), "File too large"), "%s", vae_error_get());
        CHECK_ERR(vae_sheets_push(s, imgs, 1), "earlier error");
        vae_sheets_abort(s);
        int tmp = 0;
        CHECK(count_entries(full, &tmp) == 0 && tmp == 0);
        free(imgs);
    }
}

/* (7) memory: the module's buffers are one grid row, whatever n_total */
static void test_memory(void) {
    const char *dir = subdir("memory");
    const int cols = 100, h = 28, w = 28;
    const size_t D = (size_t)h * w;
    vae_sheets *a, *b;
    CHECK(vae_sheets_open(&a, dir, "m", (int64_t)cols * 10000, cols, 1, h, w, 4096, g_threads) == VAE_OK);
    CHECK(vae_sheets_open(&b, dir, "m", 1000000000, cols, 1, h, w, 4096, g_threads) == VAE_OK);
    const size_t bytes = vae_sheets_buffer_bytes(a);
    CHECK(vae_sheets_threads(a) == 1); /* one block column: no workers */
    CHECK(bytes == vae_sheets_buffer_bytes(b));
    CHECK_MSG(bytes >= cols * D && bytes <= cols * D + 64 * 1024, "%zu bytes of buffers", bytes);
    /* ... and the caller's line of a sheet: 100 slots of 28 + 2 pixels, less the last pad */
    CHECK_MSG(bytes >= cols * D + (size_t)cols * (w + PAD) - PAD, "%zu bytes of buffers", bytes);
    /* 30 x 30 = 900 pixels per slot, 4098 / 30 = 136 grid rows per sheet */
    CHECK(vae_sheets_count(a) == (10000 + 135) / 136);
    CHECK(vae_sheets_count(b) == (10000000 + 135) / 136);
    char p[800];
    CHECK(vae_sheets_path(b, 73529, 0, p, sizeof p) == 0 && strstr(p, "/m-73529.png"));
    CHECK(vae_sheets_path(b, 0, 0, p, sizeof p) == 0 && strstr(p, "/m-00000.png"));
    CHECK(vae_sheets_path(b, 73530, 0, p, sizeof p) == -1);
    vae_sheets_abort(b);

    /* stream 300 grid rows (30000 images, 23.5 MB) through a 1000-image
     * chunk: two sheets committed, the buffers unchanged */
    uint8_t *chunk = malloc(1000 * D);
    for (size_t i = 0; i < 1000 * D; i++) chunk[i] = (uint8_t)(i % 251);
    int ok = 1;
    for (int k = 0; k < 30 && ok; k++) ok = vae_sheets_push(a, chunk, 1000) == VAE_OK;
    CHECK(ok);
    CHECK(vae_sheets_committed(a) == 2);
    CHECK(vae_sheets_buffer_bytes(a) == bytes);
    vae_sheets_abort(a);
    int tmp = 0;
    CHECK(count_entries(dir, &tmp) == 2 && tmp == 0);
    free(chunk);
}

/* (8) a pool of encoders writes the single thread's files byte for byte,
 * whatever its size; an error in a worker names the leftmost failed sheet */
static void test_threads(void) {
    /* n, cols, c, h, w, max_px: 2, 7, 12 and 25 block columns */
    const int lay[4][6] = {{70, 7, 3, 4, 5, 26}, {67, 20, 1, 3, 3, 13}, {12, 12, 1, 1, 1, 1},
                           {260, 50, 3, 2, 3, 8}};
    const int threads[] = {2, 3, 5, 0};
    for (int t = 0; t < 4; t++) {
        const int n = lay[t][0], cols = lay[t][1], c = lay[t][2], h = lay[t][3], w = lay[t][4],
                  mpx = lay[t][5];
        uint8_t *imgs = make_imgs(n, c, h, w);
        const int odd[] = {3, 11, 1, 5, 2, 13};
        char name[64];
        snprintf(name, sizeof name, "thr%d_1", t);
        const char *one = subdir(name);
        vae_sheets *s;
        const int64_t count = vae_sheets_open(&s, one, "t", n, cols, c, h, w, mpx, 1) == VAE_OK
                                  ? vae_sheets_count(s)
                                  : -1;
        vae_sheets_abort(s);
        CHECK(count > 1);
        CHECK(write_sheets_threads(one, "t", imgs, n, cols, c, h, w, mpx, odd, 6, 1) == VAE_OK);
        CHECK(check_layout(one, "t", imgs, n, cols, c, h, w, mpx) == count);
        for (int k = 0; k < 4; k++) {
            snprintf(name, sizeof name, "thr%d_%d", t, threads[k]);
            const char *dir = subdir(name);
            CHECK(write_sheets_threads(dir, "t", imgs, n, cols, c, h, w, mpx, odd, 6, threads[k]) ==
                  VAE_OK);
            CHECK(check_layout(dir, "t", imgs, n, cols, c, h, w, mpx) == count);
            DIR *d = opendir(one);
            for (struct dirent *e; d && (e = readdir(d));) {
                if (e->d_name[0] == '.') continue;
                char a[800], b[800];
                snprintf(a, sizeof a, "%s/%s", one, e->d_name);
                snprintf(b, sizeof b, "%s/%s", dir, e->d_name);
                CHECK_MSG(same_file(a, b), "%s differs from %s", b, a);
            }
            if (d) closedir(d);
        }
        free(imgs);
    }
    /* 6 sheets side by side in a folder that does not exist: every worker
     * fails; the error names the first sheet, as with one thread */
    char nodir[800];
    snprintf(nodir, sizeof nodir, "%s/missing", subdir("thr_err"));
    uint8_t *imgs = make_imgs(6, 1, 2, 2);
    vae_sheets *s;
    CHECK(vae_sheets_open(&s, nodir, "m", 6, 6, 1, 2, 2, 4, 3) == VAE_OK);
    CHECK(vae_sheets_count(s) == 6 && vae_sheets_threads(s) == 3);
    CHECK_ERR(vae_sheets_push(s, imgs, 6), "missing/m-0-0.png: No such file or directory");
    CHECK_ERR(vae_sheets_push(s, imgs, 1), "earlier error");
    vae_sheets_abort(s);
    free(imgs);

    /* a write error inside libpng (longjmp) in a worker, and the leftmost
     * failing sheet reported: 4 sheets side by side of one 64x64 RGB image
     * each, files limited to 2000 bytes; sheets 1 and 2 hold noise (12 KiB,
     * over the limit and over stdio's buffer, so libpng's own write fails),
     * 0 and 3 a flat grey. With 2 workers, worker 0 fails at sheet 2 and
     * worker 1 at sheet 1: the error must name sheet 1. */
    const char *fs = subdir("thr_fsize");
    struct rlimit old_lim, lim;
    if (getrlimit(RLIMIT_FSIZE, &old_lim) == 0) {
        void (*old_sig)(int) = signal(SIGXFSZ, SIG_IGN);
        const size_t D = 3 * 64 * 64;
        imgs = make_imgs(4, 3, 64, 64);
        memset(imgs, 128, D);
        memset(imgs + 3 * D, 128, D);
        lim = old_lim;
        lim.rlim_cur = 2000;
        CHECK(vae_sheets_open(&s, fs, "x", 4, 4, 3, 64, 64, 64, 2) == VAE_OK);
        CHECK(vae_sheets_count(s) == 4);
        CHECK(setrlimit(RLIMIT_FSIZE, &lim) == 0);
        const int rc = vae_sheets_push(s, imgs, 4);
        CHECK(setrlimit(RLIMIT_FSIZE, &old_lim) == 0);
        signal(SIGXFSZ, old_sig);
        CHECK_MSG(rc == VAE_EIO &&
                      strstr(vae_error_get(), "/x-0-1.png: PNG write failed: File too large"),
                  "rc %d: %s", rc, vae_error_get());
        CHECK_ERR(vae_sheets_push(s, imgs, 1), "earlier error");
        vae_sheets_abort(s);
        int tmp = 0, n = count_entries(fs, &tmp);
        CHECK_MSG(tmp == 0 && n <= 2, "%d files, %d temp, in %s", n, tmp, fs);
        free(imgs);
    }
}

/* vae_sheets_foreign: files named as sheets of the same prefix but not of
 * this layout; other names (another prefix, a longer word, not .png, temp
 * files) are not sheets. */
static void touch(const char *dir, const char *name) {
    char p[900];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    CHECK(f != NULL);
    if (f) fclose(f);
}

static void test_foreign(void) {
    const char *dir = subdir("foreign");
    /* 70 images, 7 columns, max 26 px: 3 x 2 blocks, "g-R-C.png" */
    const char *mine[] = {"g-0-0.png", "g-2-1.png"};
    const char *other[] = {"g-x.png", "gg-0-0.png", "g-0-0.npy", "g-latents.npy", "g-0-0.png.tmp.12",
                           "g-0-0-0.png", "g-.png", "g-0-.png", "h.png"};
    for (size_t i = 0; i < sizeof mine / sizeof mine[0]; i++) touch(dir, mine[i]);
    for (size_t i = 0; i < sizeof other / sizeof other[0]; i++) touch(dir, other[i]);
    vae_sheets *s = NULL;
    char first[1200];
    CHECK(vae_sheets_open(&s, dir, "g", 70, 7, 3, 4, 5, 26, g_threads) == VAE_OK);
    CHECK_MSG(s && vae_sheets_foreign(s, first, sizeof first) == 0, "foreign: %s", first);
    /* of another layout: one sheet, one block column, a block past the grid */
    const char *theirs[] = {"g.png", "g-1.png", "g-3-0.png", "g-00-1.png", "g-0-1000.png"};
    for (size_t i = 0; i < sizeof theirs / sizeof theirs[0]; i++) {
        touch(dir, theirs[i]);
        CHECK_MSG(s && vae_sheets_foreign(s, first, sizeof first) == (int64_t)i + 1 &&
                      strstr(first, "/g") != NULL,
                  "%s: %s", theirs[i], first);
    }
    vae_sheets_abort(s);
    /* a grid of one sheet: its own name is "g.png", the blocks are foreign */
    CHECK(vae_sheets_open(&s, dir, "g", 4, 2, 1, 1, 1, 0, g_threads) == VAE_OK);
    CHECK(s && vae_sheets_foreign(s, NULL, 0) == 2 + 4); /* all but g.png */
    vae_sheets_abort(s);
}

int main(void) {
    /* the whole suite with the caller encoding alone, then with 3 workers */
    for (int pass = 0; pass < 2; pass++) {
        g_threads = pass ? 3 : 1;
        g_pass = pass ? "_t3" : "";
        test_single();
        test_split();
        test_partial();
        test_chunks();
        test_abort();
        test_errors();
        test_memory();
        test_foreign();
    }
    g_threads = 1, g_pass = "";
    test_threads();
    return test_finish();
}

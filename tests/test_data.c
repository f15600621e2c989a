/* test_data.c — dataset loaders: IDX (raw and gzip), CIFAR-10 batches,
 * file lookup by vae_dataset_load, and every class of broken file, each
 * rejected with a message that names the file and the problem. With
 * VAE_DATA_DIR set, the real MNIST files are loaded and checked too. */
#include <errno.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "testutil.h"
#include "vae_data.h"

/* ------------------------------------------------------------ helpers */

static void put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* Known pixel value of image i at (y, x). */
static uint8_t pix(int i, int y, int x) { return (uint8_t)((i * 97 + y * 13 + x * 5 + 1) & 255); }

/* An IDX images file [n, rows, cols] with pixels pix(); returns its length.
 * `extra` bytes of 0xEE are appended after the body (for trailing-byte tests). */
static size_t make_idx_images(uint8_t *buf, uint32_t magic, int n, int rows, int cols, int extra) {
    put_be32(buf, magic);
    put_be32(buf + 4, (uint32_t)n);
    put_be32(buf + 8, (uint32_t)rows);
    put_be32(buf + 12, (uint32_t)cols);
    size_t o = 16;
    for (int i = 0; i < n; i++)
        for (int y = 0; y < rows; y++)
            for (int x = 0; x < cols; x++) buf[o++] = pix(i, y, x);
    for (int e = 0; e < extra; e++) buf[o++] = 0xEE;
    return o;
}

static size_t make_idx_labels(uint8_t *buf, int n, const uint8_t *labels) {
    put_be32(buf, 0x00000801u);
    put_be32(buf + 4, (uint32_t)n);
    memcpy(buf + 8, labels, (size_t)n);
    return 8 + (size_t)n;
}

/* Write `len` bytes gzip-compressed with zlib's gz* API; returns the path. */
static const char *write_gz(const char *name, const void *data, size_t len) {
    const char *p = test_tmp_path(name);
    gzFile g = gzopen(p, "wb6");
    if (!g || (len && gzwrite(g, data, (unsigned)len) != (int)len) || gzclose(g) != Z_OK) {
        fprintf(stderr, "cannot write %s\n", p);
        exit(1);
    }
    return p;
}

static uint8_t *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        exit(1);
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)n + 1);
    if (!b || fread(b, 1, (size_t)n, f) != (size_t)n) exit(1);
    fclose(f);
    *len = (size_t)n;
    return b;
}

static void make_dir(const char *name) {
    const char *p = test_tmp_path(name);
    if (mkdir(p, 0755) != 0 && errno != EEXIST) {
        perror(p);
        exit(1);
    }
}

static vae_config idx_cfg(vae_dataset_kind kind, int c, int h, int w) {
    vae_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.dataset = kind;
    cfg.input.c = c;
    cfg.input.h = h;
    cfg.input.w = w;
    return cfg;
}

/* Every pixel of ds equals pix() and scales to pix()/255 in [0,1]. */
static int idx_pixels_ok(const vae_dataset *ds) {
    for (int i = 0; i < ds->n; i++)
        for (int y = 0; y < ds->h; y++)
            for (int x = 0; x < ds->w; x++) {
                uint8_t v = ds->images[((size_t)i * ds->h + y) * ds->w + x];
                if (v != pix(i, y, x)) return 0;
                real s = (real)v / (real)255;
                if (s < 0 || s > 1 || fabs((double)s - pix(i, y, x) / 255.0) > 1e-6) return 0;
            }
    return 1;
}

/* ------------------------------------------------------------ vae_read_file */

static void test_read_file(void) {
    uint8_t data[300000];
    for (size_t i = 0; i < sizeof data; i++) data[i] = (uint8_t)((i * 2654435761u) >> 13);
    const char *raw = test_write_file("blob.bin", data, sizeof data);
    char rawp[640];
    snprintf(rawp, sizeof rawp, "%s", raw);
    const char *gz = write_gz("blob.bin.gz", data, sizeof data);
    char gzp[640];
    snprintf(gzp, sizeof gzp, "%s", gz);

    uint8_t *b = NULL;
    size_t n = 0;
    /* Raw and gzip read back the same bytes; the gzip output buffer grows
     * well past its first chunk. */
    CHECK(vae_read_file(rawp, &b, &n, sizeof data) == VAE_OK);
    CHECK(n == sizeof data && b && memcmp(b, data, n) == 0);
    free(b);
    CHECK(vae_read_file(gzp, &b, &n, sizeof data) == VAE_OK);
    CHECK(n == sizeof data && b && memcmp(b, data, n) == 0);
    free(b);

    /* The limit: exactly max_bytes is fine, one less is refused. */
    CHECK_ERR(vae_read_file(gzp, &b, &n, sizeof data - 1), "decompressed size exceeds 299999 bytes");
    CHECK_ERR(vae_read_file(gzp, &b, &n, sizeof data - 1), "blob.bin.gz");
    CHECK(b == NULL && n == 0);
    CHECK_ERR(vae_read_file(rawp, &b, &n, 1000), "blob.bin: file size exceeds 1000 bytes");

    /* Two concatenated gzip members decode to the concatenation. */
    size_t l1 = 0;
    const char *m1 = write_gz("m1.gz", "hello, ", 7);
    uint8_t *g1 = slurp(m1, &l1);
    size_t l2 = 0;
    const char *m2 = write_gz("m2.gz", "world", 5);
    uint8_t *g2 = slurp(m2, &l2);
    uint8_t cat[512];
    memcpy(cat, g1, l1);
    memcpy(cat + l1, g2, l2);
    const char *mp = test_write_file("multi.gz", cat, l1 + l2);
    CHECK(vae_read_file(mp, &b, &n, 100) == VAE_OK);
    CHECK(n == 12 && memcmp(b, "hello, world", 12) == 0);
    free(b);
    /* Garbage after the stream is an error. */
    memcpy(cat + l1, "XYZ", 3);
    mp = test_write_file("garbage.gz", cat, l1 + 3);
    CHECK_ERR(vae_read_file(mp, &b, &n, 100), "garbage.gz: corrupt gzip data: trailing garbage");
    free(g1);
    free(g2);

    /* Empty raw file: success with zero bytes. */
    const char *ep = test_write_file("empty.bin", "", 0);
    CHECK(vae_read_file(ep, &b, &n, 100) == VAE_OK);
    CHECK(n == 0);
    free(b);

    /* Missing file and a directory. */
    CHECK_ERR(vae_read_file(test_tmp_path("nope.bin"), &b, &n, 100), "nope.bin: No such file or directory");
    CHECK_ERR(vae_read_file(test_tmpdir(), &b, &n, 100), "Is a directory");
}

/* ------------------------------------------------------------ valid IDX */

static void test_idx_valid(void) {
    static uint8_t buf[4096], lb[64];
    const uint8_t labels[3] = {3, 1, 255};
    size_t len = make_idx_images(buf, 0x00000803u, 3, 2, 5, 0);
    char ip[640], lp[640], gip[640], glp[640];
    snprintf(ip, sizeof ip, "%s", test_write_file("small-images", buf, len));
    snprintf(gip, sizeof gip, "%s", write_gz("small-images.gz", buf, len));
    size_t ll = make_idx_labels(lb, 3, labels);
    snprintf(lp, sizeof lp, "%s", test_write_file("small-labels", lb, ll));
    snprintf(glp, sizeof glp, "%s", write_gz("small-labels.gz", lb, ll));

    const char *imgs[2] = {ip, gip}, *labs[2] = {lp, glp};
    for (int v = 0; v < 2; v++) {
        vae_dataset ds;
        CHECK(vae_load_idx(&ds, imgs[v], labs[v]) == VAE_OK);
        CHECK(ds.n == 3 && ds.c == 1 && ds.h == 2 && ds.w == 5);
        CHECK(ds.images && idx_pixels_ok(&ds));
        /* Spot values: image 1, row 1, col 4 = (97 + 13 + 20 + 1) & 255 = 131. */
        CHECK(ds.images[(1 * 2 + 1) * 5 + 4] == 131);
        CHECK_CLOSE((real)ds.images[(1 * 2 + 1) * 5 + 4] / (real)255, 131.0 / 255.0, 0, 1e-7);
        CHECK(ds.labels && ds.labels[0] == 3 && ds.labels[1] == 1 && ds.labels[2] == 255);
        vae_dataset_free(&ds);
        CHECK(ds.images == NULL && ds.labels == NULL && ds.n == 0);
    }
    /* Labels are optional. */
    vae_dataset ds;
    CHECK(vae_load_idx(&ds, gip, NULL) == VAE_OK);
    CHECK(ds.n == 3 && ds.labels == NULL && idx_pixels_ok(&ds));
    vae_dataset_free(&ds);
    /* One image of 1x1 and of the largest side both load. */
    len = make_idx_images(buf, 0x00000803u, 1, 1, 1, 0);
    CHECK(vae_load_idx(&ds, test_write_file("one.idx", buf, len), NULL) == VAE_OK);
    CHECK(ds.n == 1 && ds.h == 1 && ds.w == 1 && ds.images[0] == pix(0, 0, 0));
    vae_dataset_free(&ds);
}

/* ------------------------------------------------------------ broken IDX */

static void test_idx_broken(void) {
    static uint8_t buf[4096], lb[64];
    vae_dataset ds;
    size_t len;

    /* Wrong magic. */
    len = make_idx_images(buf, 0x12345678u, 2, 2, 2, 0);
    const char *p = test_write_file("magic.idx", buf, len);
    CHECK_ERR(vae_load_idx(&ds, p, NULL), "magic.idx: bad magic 0x12345678, expected 0x00000803");
    /* A labels file given as images: wrong number of dimensions. */
    put_be32(buf, 0x00000801u);
    p = test_write_file("dims.idx", buf, len);
    CHECK_ERR(vae_load_idx(&ds, p, NULL), "dims.idx: bad magic 0x00000801: IDX file with 1 dimensions");
    put_be32(buf, 0x00000802u);
    p = test_write_file("dims2.idx", buf, len);
    CHECK_ERR(vae_load_idx(&ds, p, NULL), "expected 0x00000803 (IDX images, 3 dimensions)");
    CHECK(ds.images == NULL && ds.n == 0);

    /* Truncated body and trailing bytes. */
    len = make_idx_images(buf, 0x00000803u, 3, 2, 3, 0);
    p = test_write_file("short.idx", buf, len - 1);
    CHECK_ERR(vae_load_idx(&ds, p, NULL),
              "short.idx: truncated: header says 3 images of 2x3 (34 bytes) but file has 33 bytes");
    len = make_idx_images(buf, 0x00000803u, 3, 2, 3, 2);
    p = test_write_file("long.idx", buf, len);
    CHECK_ERR(vae_load_idx(&ds, p, NULL), "long.idx: 2 trailing bytes");
    /* Gzipped, the same checks apply to the decompressed bytes. */
    p = write_gz("long.idx.gz", buf, len);
    CHECK_ERR(vae_load_idx(&ds, p, NULL),
              "long.idx.gz: trailing bytes: header says 3 images of 2x3 (34 bytes) but the "
              "decompressed file is longer");
    /* A valid header followed by far more than it describes is refused having
     * read only what the header describes: 256 MiB after a raw file (sparse:
     * no disk), 64 MiB of zeros after a gzipped one (a 64 KiB file). */
    {
        struct rusage ru0, ru1;
        getrusage(RUSAGE_SELF, &ru0);
        len = make_idx_images(buf, 0x00000803u, 3, 2, 3, 0);
        p = test_write_file("padded.idx", buf, len);
        FILE *f = fopen(p, "r+b");
        CHECK(f && ftruncate(fileno(f), (off_t)len + (256 << 20)) == 0);
        if (f) fclose(f);
        CHECK_ERR(vae_load_idx(&ds, p, NULL), "padded.idx: 268435456 trailing bytes");
        const char *gp = test_tmp_path("padded.idx.gz");
        gzFile g = gzopen(gp, "wb1");
        uint8_t *zeros = calloc(1, 1 << 20);
        int ok = g && zeros && gzwrite(g, buf, (unsigned)len) == (int)len;
        for (int k = 0; ok && k < 64; k++) ok = gzwrite(g, zeros, 1 << 20) == 1 << 20;
        CHECK(g && gzclose(g) == Z_OK && ok);
        free(zeros);
        CHECK_ERR(vae_load_idx(&ds, gp, NULL), "padded.idx.gz: trailing bytes");
        getrusage(RUSAGE_SELF, &ru1);
        CHECK_MSG(ru1.ru_maxrss - ru0.ru_maxrss < 16 * 1024, "peak RSS grew by %ld KiB",
                  ru1.ru_maxrss - ru0.ru_maxrss);
    }
    /* Header shorter than 16 bytes. */
    p = test_write_file("hdr.idx", buf, 10);
    CHECK_ERR(vae_load_idx(&ds, p, NULL), "hdr.idx: truncated: 10 bytes, shorter than the 16-byte");
    /* ... by one byte, the magic being right (the dimensions would be read
     * past the end) */
    len = make_idx_images(buf, 0x00000803u, 1, 2, 2, 0);
    p = test_write_file("hdr15.idx", buf, 15);
    CHECK_ERR(vae_load_idx(&ds, p, NULL),
              "hdr15.idx: truncated: 15 bytes, shorter than the 16-byte IDX images header");
    /* A first byte of 0x1f is gzip's only with 0x8b after it: this is read
     * as a raw file (and its magic refused), not handed to the inflater. */
    buf[0] = 0x1f;
    p = test_write_file("half_gz.idx", buf, len);
    CHECK_ERR(vae_load_idx(&ds, p, NULL), "half_gz.idx: bad magic 0x1f000803");

    /* A header claiming 10^12 bytes of pixels (10^6 images of 1000x1000) in a
     * 16-byte file fails at once, without allocating what the header says. */
    put_be32(buf, 0x00000803u);
    put_be32(buf + 4, 1000000);
    put_be32(buf + 8, 1000);
    put_be32(buf + 12, 1000);
    p = write_gz("huge.idx.gz", buf, 16);
    double t0 = vae_now();
    CHECK_ERR(vae_load_idx(&ds, p, NULL),
              "huge.idx.gz: truncated: header says 1000000 images of 1000x1000 (1000000000016 bytes) "
              "but file has 16 bytes");
    CHECK(vae_now() - t0 < 1.0);
    /* Counts beyond the limits. */
    put_be32(buf + 4, 4000000000u);
    p = test_write_file("many.idx", buf, 16);
    CHECK_ERR(vae_load_idx(&ds, p, NULL), "many.idx: header says 4000000000 images, more than the limit");
    put_be32(buf + 4, 100000001); /* the limit is 10^8 */
    p = test_write_file("many1.idx", buf, 16);
    CHECK_ERR(vae_load_idx(&ds, p, NULL), "many1.idx: header says 100000001 images, more than the limit");
    put_be32(buf + 4, 1);
    put_be32(buf + 8, 5000);
    p = test_write_file("wide.idx", buf, 16);
    CHECK_ERR(vae_load_idx(&ds, p, NULL), "wide.idx: header says images of 5000x1000; each side must be 1..4096");
    put_be32(buf + 8, 2);
    put_be32(buf + 12, 4097); /* one past the limit, in the other side */
    p = test_write_file("wide1.idx", buf, 16);
    CHECK_ERR(vae_load_idx(&ds, p, NULL), "wide1.idx: header says images of 2x4097; each side must be 1..4096");
    put_be32(buf + 12, 1000);
    put_be32(buf + 8, 0);
    p = test_write_file("flat.idx", buf, 16);
    CHECK_ERR(vae_load_idx(&ds, p, NULL), "flat.idx: header says images of 0x1000");

    /* Zero images, empty file, nonexistent file. */
    len = make_idx_images(buf, 0x00000803u, 0, 28, 28, 0);
    p = test_write_file("zero.idx", buf, len);
    CHECK_ERR(vae_load_idx(&ds, p, NULL), "zero.idx: header says 0 images");
    /* ... with an image's bytes after it: still "0 images", not trailing bytes */
    len = make_idx_images(buf, 0x00000803u, 0, 28, 28, 784);
    p = test_write_file("zero_body.idx", buf, len);
    CHECK_ERR(vae_load_idx(&ds, p, NULL), "zero_body.idx: header says 0 images");
    p = test_write_file("empty.idx", "", 0);
    CHECK_ERR(vae_load_idx(&ds, p, NULL), "empty.idx: empty file");
    CHECK_ERR(vae_load_idx(&ds, test_tmp_path("missing.idx"), NULL), "missing.idx: No such file or directory");

    /* Labels: count mismatch, truncated, wrong magic, missing. */
    len = make_idx_images(buf, 0x00000803u, 3, 2, 3, 0);
    char ip[640];
    snprintf(ip, sizeof ip, "%s", test_write_file("ok.idx", buf, len));
    const uint8_t labs[4] = {1, 2, 3, 4};
    size_t ll = make_idx_labels(lb, 4, labs);
    p = test_write_file("four.lab", lb, ll);
    CHECK_ERR(vae_load_idx(&ds, ip, p), "four.lab: has 4 labels but");
    CHECK_ERR(vae_load_idx(&ds, ip, p), "ok.idx has 3 images");
    ll = make_idx_labels(lb, 3, labs);
    lb[ll] = lb[ll + 1] = 9; /* two bytes past what the header says */
    p = test_write_file("long.lab", lb, ll + 2);
    CHECK_ERR(vae_load_idx(&ds, ip, p), "long.lab: 2 trailing bytes");
    p = test_write_file("cut.lab", lb, ll - 1);
    CHECK_ERR(vae_load_idx(&ds, ip, p), "cut.lab: truncated: header says 3 labels (11 bytes) but file has 10");
    put_be32(lb, 0x00000803u);
    p = test_write_file("img.lab", lb, ll);
    CHECK_ERR(vae_load_idx(&ds, ip, p), "img.lab: bad magic 0x00000803: IDX file with 3 dimensions");
    CHECK_ERR(vae_load_idx(&ds, ip, test_tmp_path("nolabels")), "nolabels: No such file or directory");
    CHECK(ds.images == NULL && ds.labels == NULL);

    /* Truncated gzip: the first half of a valid .gz file. */
    len = make_idx_images(buf, 0x00000803u, 3, 10, 10, 0);
    size_t gl = 0;
    uint8_t *g = slurp(write_gz("full.idx.gz", buf, len), &gl);
    p = test_write_file("cut.idx.gz", g, gl / 2);
    CHECK_ERR(vae_load_idx(&ds, p, NULL), "cut.idx.gz: unexpected end of gzip stream");
    /* Only the trailer (CRC32 + size) missing. */
    p = test_write_file("notrailer.idx.gz", g, gl - 8);
    CHECK_ERR(vae_load_idx(&ds, p, NULL), "notrailer.idx.gz: unexpected end of gzip stream");
    /* Corrupt gzip: an invalid deflate block type right after the header. */
    uint8_t save = g[10];
    g[10] = 0x07; /* BFINAL = 1, BTYPE = 11 (reserved) */
    p = test_write_file("bad.idx.gz", g, gl);
    CHECK_ERR(vae_load_idx(&ds, p, NULL), "bad.idx.gz: corrupt gzip data: invalid block type");
    /* A flipped bit in the CRC32 trailer. */
    g[10] = save;
    g[gl - 8] ^= 0x01;
    p = test_write_file("crc.idx.gz", g, gl);
    CHECK_ERR(vae_load_idx(&ds, p, NULL), "crc.idx.gz: corrupt gzip data: incorrect data check");
    /* Just the gzip magic. */
    p = test_write_file("magiconly.gz", "\x1f\x8b", 2);
    CHECK_ERR(vae_load_idx(&ds, p, NULL), "magiconly.gz: unexpected end of gzip stream");
    free(g);
    CHECK(ds.images == NULL && ds.n == 0);
}

/* ------------------------------------------------------------ CIFAR-10 */

enum { CREC = 3073, CPIX = 3072 };

static uint8_t cpix(int r, int ch, int y, int x) {
    return (uint8_t)((r * 31 + ch * 101 + y * 7 + x * 3) & 255);
}

/* `n` records starting at global record index r0, labels from lab[]. */
static size_t make_cifar(uint8_t *buf, int r0, int n, const uint8_t *lab) {
    size_t o = 0;
    for (int r = 0; r < n; r++) {
        buf[o++] = lab[r];
        for (int ch = 0; ch < 3; ch++)
            for (int y = 0; y < 32; y++)
                for (int x = 0; x < 32; x++) buf[o++] = cpix(r0 + r, ch, y, x);
    }
    return o;
}

static void test_cifar(void) {
    static uint8_t buf[8 * CREC];
    const uint8_t lab_a[2] = {0, 9}, lab_b[1] = {4};
    char pa[640], pb[640];
    snprintf(pa, sizeof pa, "%s", test_write_file("batch_a.bin", buf, make_cifar(buf, 0, 2, lab_a)));
    snprintf(pb, sizeof pb, "%s", test_write_file("batch_b.bin", buf, make_cifar(buf, 2, 1, lab_b)));

    vae_dataset ds;
    const char *two[2] = {pa, pb};
    CHECK(vae_load_cifar10(&ds, two, 2) == VAE_OK);
    CHECK(ds.n == 3 && ds.c == 3 && ds.h == 32 && ds.w == 32);
    CHECK(ds.labels && ds.labels[0] == 0 && ds.labels[1] == 9 && ds.labels[2] == 4);
    int ok = ds.images != NULL;
    for (int r = 0; ok && r < 3; r++)
        for (int ch = 0; ch < 3; ch++)
            for (int y = 0; y < 32; y++)
                for (int x = 0; x < 32; x++)
                    if (ds.images[(((size_t)r * 3 + ch) * 32 + y) * 32 + x] != cpix(r, ch, y, x)) ok = 0;
    CHECK(ok); /* NCHW: R plane, then G, then B, for every record in file order */
    /* Spot: record 2, G plane (ch 1), y 5, x 7 = (62 + 101 + 35 + 21) & 255 = 219. */
    CHECK(ds.images[((2 * 3 + 1) * 32 + 5) * 32 + 7] == 219);
    vae_dataset_free(&ds);

    /* Size not a multiple of 3073, empty file. */
    size_t len = make_cifar(buf, 0, 2, lab_a);
    const char *p = test_write_file("odd.bin", buf, len + 5);
    CHECK_ERR(vae_load_cifar10(&ds, &p, 1), "odd.bin: size 6151 bytes is not a positive multiple of the 3073-byte");
    p = test_write_file("empty.bin", "", 0);
    CHECK_ERR(vae_load_cifar10(&ds, &p, 1), "empty.bin: size 0 bytes is not a positive multiple");
    /* Label 10 in record 1 of the second file. */
    const uint8_t bad[3] = {1, 10, 2};
    char pc[640];
    snprintf(pc, sizeof pc, "%s", test_write_file("badlabel.bin", buf, make_cifar(buf, 0, 3, bad)));
    const char *mix[2] = {pa, pc};
    CHECK_ERR(vae_load_cifar10(&ds, mix, 2), "badlabel.bin: record 1 has label 10; expected 0..9");
    const char *miss[2] = {pa, test_tmp_path("data_batch_9.bin")};
    CHECK_ERR(vae_load_cifar10(&ds, miss, 2), "data_batch_9.bin: No such file or directory");
    CHECK(ds.images == NULL && ds.labels == NULL && ds.n == 0);
}

/* ------------------------------------------------------------ lookup */

static void test_data_dir_flag(void) {
    char saved[1024] = {0};
    const char *env = getenv("VAE_DATA_DIR");
    int had = env != NULL;
    if (had) snprintf(saved, sizeof saved, "%s", env);
    char out[256];
    setenv("VAE_DATA_DIR", "/from/env", 1);
    vae_data_dir(out, sizeof out, "/from/flag");
    CHECK(strcmp(out, "/from/flag") == 0);
    vae_data_dir(out, sizeof out, NULL);
    CHECK(strcmp(out, "/from/env") == 0);
    vae_data_dir(out, sizeof out, "");
    CHECK(strcmp(out, "/from/env") == 0);
    setenv("VAE_DATA_DIR", "", 1);
    vae_data_dir(out, sizeof out, NULL);
    CHECK(strcmp(out, "data") == 0);
    unsetenv("VAE_DATA_DIR");
    vae_data_dir(out, sizeof out, NULL);
    CHECK(strcmp(out, "data") == 0);
    if (had) setenv("VAE_DATA_DIR", saved, 1);
}

static void test_dataset_load(void) {
    static uint8_t buf[8192], lb[64];
    vae_dataset ds;
    char dir[640];

    /* idx: file names from the config, shape checked against the input. */
    make_dir("ds_idx");
    snprintf(dir, sizeof dir, "%s", test_tmp_path("ds_idx"));
    size_t len = make_idx_images(buf, 0x00000803u, 4, 2, 3, 0);
    test_write_file("ds_idx/tr.idx", buf, len);
    len = make_idx_images(buf, 0x00000803u, 2, 2, 3, 0);
    write_gz("ds_idx/te.idx.gz", buf, len);
    vae_config cfg = idx_cfg(VAE_DATA_IDX, 1, 2, 3);
    snprintf(cfg.train_images, sizeof cfg.train_images, "tr.idx");
    snprintf(cfg.test_images, sizeof cfg.test_images, "te.idx.gz");
    CHECK(vae_dataset_load(&ds, &cfg, dir, 1) == VAE_OK);
    CHECK(ds.n == 4 && ds.c == 1 && ds.h == 2 && ds.w == 3 && idx_pixels_ok(&ds) && ds.labels == NULL);
    vae_dataset_free(&ds);
    CHECK(vae_dataset_load(&ds, &cfg, dir, 0) == VAE_OK);
    CHECK(ds.n == 2 && idx_pixels_ok(&ds));
    vae_dataset_free(&ds);
    vae_config wrong = idx_cfg(VAE_DATA_IDX, 3, 32, 32);
    snprintf(wrong.train_images, sizeof wrong.train_images, "tr.idx");
    CHECK_ERR(vae_dataset_load(&ds, &wrong, dir, 1),
              "tr.idx: images are 1x2x3 but the model's input is 3x32x32");
    CHECK(ds.images == NULL && ds.n == 0);
    /* each dimension on its own: the width alone differs */
    vae_config narrow = idx_cfg(VAE_DATA_IDX, 1, 2, 4);
    snprintf(narrow.train_images, sizeof narrow.train_images, "tr.idx");
    CHECK_ERR(vae_dataset_load(&ds, &narrow, dir, 1),
              "tr.idx: images are 1x2x3 but the model's input is 1x2x4");
    CHECK(ds.images == NULL && ds.n == 0);
    CHECK_ERR(vae_dataset_load(&ds, &wrong, dir, 0), "test_images is not set");
    snprintf(wrong.test_images, sizeof wrong.test_images, "nothere.idx");
    CHECK_ERR(vae_dataset_load(&ds, &wrong, dir, 0), "ds_idx/nothere.idx: no such file");
    /* "not found" has its own code (vae sample's grids go on without test
     * images only then); a file that is there but unreadable is an error */
    CHECK(vae_dataset_load(&ds, &wrong, dir, 0) == VAE_ENOTFOUND);
    make_dir("ds_idx/adir.idx");
    snprintf(wrong.test_images, sizeof wrong.test_images, "adir.idx");
    CHECK_ERR(vae_dataset_load(&ds, &wrong, dir, 0), "ds_idx/adir.idx: not a regular file");
    CHECK(vae_dataset_load(&ds, &wrong, dir, 0) == VAE_EIO);

    /* mnist: dir/mnist/<name>[.gz], also dir/<name>; labels picked up. */
    make_dir("ds_mnist");
    make_dir("ds_mnist/mnist");
    snprintf(dir, sizeof dir, "%s", test_tmp_path("ds_mnist"));
    vae_config mn = idx_cfg(VAE_DATA_MNIST, 1, 28, 28);
    CHECK_ERR(vae_dataset_load(&ds, &mn, dir, 1), "MNIST training images not found");
    /* a data "dir" that is a file: nothing can be under it (ENOTDIR), the
     * same "not found" that says where it looked, not a system error */
    CHECK_ERR(vae_dataset_load(&ds, &mn, test_write_file("plainfile", "x", 1), 1),
              "MNIST training images not found");
    CHECK(vae_dataset_load(&ds, &mn, test_tmp_path("plainfile"), 1) == VAE_ENOTFOUND);
    /* a regular file named "mnist" beside the MNIST files themselves: the
     * lookup under it finds nothing (ENOTDIR) and the data dir's own files
     * are taken */
    make_dir("ds_mfile");
    test_write_file("ds_mfile/mnist", "x", 1);
    {
        static uint8_t one[16 + 784];
        const size_t n1 = make_idx_images(one, 0x00000803u, 1, 28, 28, 0);
        test_write_file("ds_mfile/train-images-idx3-ubyte", one, n1);
        CHECK_MSG(vae_dataset_load(&ds, &mn, test_tmp_path("ds_mfile"), 1) == VAE_OK, "%s",
                  vae_error_get());
        CHECK(ds.n == 1 && ds.h == 28 && ds.w == 28 && idx_pixels_ok(&ds));
        vae_dataset_free(&ds);
    }
    CHECK_ERR(vae_dataset_load(&ds, &mn, dir, 1), "ds_mnist/mnist");
    CHECK_ERR(vae_dataset_load(&ds, &mn, dir, 1), "scripts/get-data.sh");
    CHECK_ERR(vae_dataset_load(&ds, &mn, dir, 0), "t10k-images-idx3-ubyte.gz");
    CHECK(vae_dataset_load(&ds, &mn, dir, 0) == VAE_ENOTFOUND);
    len = make_idx_images(buf, 0x00000803u, 3, 28, 28, 0);
    write_gz("ds_mnist/mnist/train-images-idx3-ubyte.gz", buf, len);
    const uint8_t labs[3] = {5, 0, 4};
    size_t ll = make_idx_labels(lb, 3, labs);
    write_gz("ds_mnist/mnist/train-labels-idx1-ubyte.gz", lb, ll);
    CHECK(vae_dataset_load(&ds, &mn, dir, 1) == VAE_OK);
    CHECK(ds.n == 3 && ds.h == 28 && ds.w == 28 && idx_pixels_ok(&ds));
    CHECK(ds.labels && ds.labels[0] == 5 && ds.labels[2] == 4);
    vae_dataset_free(&ds);
    /* A folder named like the file (as some downloads lay MNIST out) is
     * passed over: the file inside it is not looked for, the search goes on
     * to dir/ */
    make_dir("ds_mnist/mnist/t10k-images-idx3-ubyte");
    /* Test split directly in dir/, uncompressed, without labels. */
    len = make_idx_images(buf, 0x00000803u, 2, 28, 28, 0);
    test_write_file("ds_mnist/t10k-images-idx3-ubyte", buf, len);
    CHECK(vae_dataset_load(&ds, &mn, dir, 0) == VAE_OK);
    CHECK(ds.n == 2 && ds.labels == NULL && idx_pixels_ok(&ds));
    vae_dataset_free(&ds);
    vae_config mn3 = idx_cfg(VAE_DATA_MNIST, 3, 32, 32);
    CHECK_ERR(vae_dataset_load(&ds, &mn3, dir, 0),
              "t10k-images-idx3-ubyte: images are 1x28x28 but the model's input is 3x32x32");

    /* cifar10: dir/cifar-10-batches-bin/, also dir/. */
    make_dir("ds_cifar");
    make_dir("ds_cifar/cifar-10-batches-bin");
    snprintf(dir, sizeof dir, "%s", test_tmp_path("ds_cifar"));
    vae_config cf = idx_cfg(VAE_DATA_CIFAR10, 3, 32, 32);
    CHECK_ERR(vae_dataset_load(&ds, &cf, dir, 0), "CIFAR-10 test batch (test_batch.bin) not found");
    CHECK_ERR(vae_dataset_load(&ds, &cf, dir, 0), "scripts/get-data.sh cifar10");
    CHECK(vae_dataset_load(&ds, &cf, dir, 0) == VAE_ENOTFOUND);
    const uint8_t cl[2] = {7, 3};
    len = make_cifar(buf, 0, 2, cl);
    test_write_file("ds_cifar/cifar-10-batches-bin/test_batch.bin", buf, len);
    CHECK(vae_dataset_load(&ds, &cf, dir, 0) == VAE_OK);
    CHECK(ds.n == 2 && ds.c == 3 && ds.labels && ds.labels[0] == 7 && ds.labels[1] == 3);
    CHECK(ds.images && ds.images[CPIX + 1] == cpix(1, 0, 0, 1));
    vae_dataset_free(&ds);
    CHECK_ERR(vae_dataset_load(&ds, &cf, dir, 1), "data_batch_1.bin");
    /* Five training batches directly in dir/, one record each; the 2nd and
     * 4th gzipped. The first two alone are an incomplete set, named so. */
    for (int b = 1; b <= 5; b++) {
        char name[64];
        uint8_t l = (uint8_t)b;
        len = make_cifar(buf, b - 1, 1, &l);
        snprintf(name, sizeof name, "ds_cifar/data_batch_%d.bin%s", b, b % 2 ? "" : ".gz");
        if (b % 2) test_write_file(name, buf, len);
        else write_gz(name, buf, len);
        if (b == 2) {
            CHECK_ERR(vae_dataset_load(&ds, &cf, dir, 1),
                      "ds_cifar holds data_batch_1.bin but not data_batch_3.bin (or "
                      "data_batch_3.bin.gz); all five are needed");
            CHECK(vae_dataset_load(&ds, &cf, dir, 1) == VAE_EIO);
        }
    }
    CHECK(vae_dataset_load(&ds, &cf, dir, 1) == VAE_OK);
    CHECK(ds.n == 5 && ds.labels && ds.labels[0] == 1 && ds.labels[4] == 5);
    CHECK(ds.images && ds.images[4 * CPIX + 2 * 1024 + 3] == cpix(4, 2, 0, 3));
    vae_dataset_free(&ds);
    vae_config cf1 = idx_cfg(VAE_DATA_CIFAR10, 1, 28, 28);
    CHECK_ERR(vae_dataset_load(&ds, &cf1, dir, 0),
              "test_batch.bin: images are 3x32x32 but the model's input is 1x28x28");

    /* A folder on the way that cannot be looked into is reported as such,
     * not as "not found" (a symbolic-link loop: root, which the CI runs as,
     * reads through missing permissions) */
    make_dir("ds_loop");
    snprintf(dir, sizeof dir, "%s", test_tmp_path("ds_loop"));
    char link[700];
    snprintf(link, sizeof link, "%s/cifar-10-batches-bin", dir);
    CHECK(symlink(link, link) == 0 || errno == EEXIST);
    CHECK_ERR(vae_dataset_load(&ds, &cf, dir, 1),
              "ds_loop/cifar-10-batches-bin/data_batch_1.bin: Too many levels of symbolic links");
    CHECK(vae_dataset_load(&ds, &cf, dir, 1) == VAE_EIO);
}

/* ------------------------------------------------------------ real MNIST */

static void test_real_mnist(void) {
    const char *dir = test_data_dir();
    if (!dir) {
        printf("note: VAE_DATA_DIR is not set; skipping the real MNIST checks\n");
        return;
    }
    vae_config cfg = idx_cfg(VAE_DATA_MNIST, 1, 28, 28);
    vae_dataset tr, te;
    int rc = vae_dataset_load(&tr, &cfg, dir, 1);
    CHECK_MSG(rc == VAE_OK, "%s", vae_error_get());
    if (rc) return;
    CHECK(tr.n == 60000 && tr.c == 1 && tr.h == 28 && tr.w == 28);
    CHECK(tr.labels && tr.labels[0] == 5);
    uint64_t sum = 0;
    size_t total = (size_t)tr.n * 784;
    for (size_t i = 0; i < total; i++) sum += tr.images[i];
    double mean = (double)sum / (double)total / 255.0;
    printf("MNIST train: n=%d, mean pixel %.6f (x255 = %.4f)\n", tr.n, mean, mean * 255);
    CHECK_CLOSE(mean, 0.1307, 0, 2e-4);
    int lab_ok = tr.labels != NULL;
    for (int i = 0; lab_ok && i < tr.n; i++) lab_ok = tr.labels[i] <= 9;
    CHECK(lab_ok);
    vae_dataset_free(&tr);

    rc = vae_dataset_load(&te, &cfg, dir, 0);
    CHECK_MSG(rc == VAE_OK, "%s", vae_error_get());
    if (rc) return;
    CHECK(te.n == 10000 && te.c == 1 && te.h == 28 && te.w == 28);
    CHECK(te.labels && te.labels[0] == 7);
    vae_dataset_free(&te);
}

int main(void) {
    test_read_file();
    test_idx_valid();
    test_idx_broken();
    test_cifar();
    test_data_dir_flag();
    test_dataset_load();
    test_real_mnist();
    return test_finish();
}

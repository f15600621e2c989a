/* test_io.c — atomic files, safetensors, PNG, tiling and .npy.
 *
 * Broken inputs are crafted byte by byte here; each must fail with a message
 * that names the file and the problem. */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <png.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"
#include "vae_io.h"

/* ---------------------------------------------------------------- helpers */

static int file_is(const char *path, const char *want) {
    size_t n;
    char *b = test_slurp(path, &n);
    int ok = b && n == strlen(want) && memcmp(b, want, n) == 0;
    free(b);
    return ok;
}

static int exists(const char *path) { return access(path, F_OK) == 0; }

/* Number of entries in dir whose name contains ".tmp." (leftover temp files). */
static int count_tmp(const char *dir) {
    DIR *d = opendir(dir);
    int n = 0;
    if (!d) return -1;
    for (struct dirent *e; (e = readdir(d));)
        if (strstr(e->d_name, ".tmp.")) n++;
    closedir(d);
    return n;
}

/* ---------------------------------------------------------------- atomic */

static void test_atomic(void) {
    const char *dir = test_tmpdir();
    const char *p = test_tmp_path("atomic.txt");
    vae_atomic_file af;

    CHECK(vae_atomic_open(&af, p) == VAE_OK);
    CHECK(exists(af.tmp) && strstr(af.tmp, ".tmp.") != NULL);
    CHECK(vae_atomic_write(&af, "hello", 5) == VAE_OK);
    CHECK(!exists(p)); /* nothing at path before the commit */
    CHECK(vae_atomic_commit(&af) == VAE_OK);
    CHECK(file_is(p, "hello"));

    /* replace an existing file */
    CHECK(vae_atomic_open(&af, p) == VAE_OK);
    CHECK(vae_atomic_write(&af, "world!", 6) == VAE_OK);
    CHECK(file_is(p, "hello")); /* untouched until commit */
    CHECK(vae_atomic_commit(&af) == VAE_OK);
    CHECK(file_is(p, "world!"));
    CHECK(count_tmp(dir) == 0);

    /* abort leaves the old file and no temp */
    CHECK(vae_atomic_open(&af, p) == VAE_OK);
    CHECK(vae_atomic_write(&af, "junk", 4) == VAE_OK);
    char tmp[sizeof af.tmp];
    snprintf(tmp, sizeof tmp, "%s", af.tmp);
    vae_atomic_abort(&af);
    vae_atomic_abort(&af); /* idempotent */
    CHECK(!exists(tmp));
    CHECK(file_is(p, "world!"));

    /* non-existent directory: error names the path and errno's text */
    const char *bad = test_tmp_path("no/such/dir/x.bin");
    CHECK_ERR(vae_atomic_open(&af, bad), bad);
    CHECK_ERR(vae_atomic_open(&af, bad), "No such file or directory");
    CHECK(af.f == NULL);
    vae_atomic_abort(&af); /* safe after a failed open */

    /* parent is a regular file (ENOTDIR, fails even for root) */
    const char *notdir = test_tmp_path("atomic.txt/x.bin");
    CHECK_ERR(vae_atomic_open(&af, notdir), "Not a directory");

    /* read-only directory (root ignores permissions: skip there) */
    const char *ro = test_tmp_path("ro");
    CHECK(mkdir(ro, 0555) == 0);
    if (geteuid() != 0) {
        char rp[800];
        snprintf(rp, sizeof rp, "%s/x.bin", ro);
        CHECK_ERR(vae_atomic_open(&af, rp), rp);
        CHECK_ERR(vae_atomic_open(&af, rp), "Permission denied");
    } else {
        printf("note: running as root, read-only directory case skipped\n");
    }
    chmod(ro, 0755);

    /* full disk: swap the stream for /dev/full. Small writes land in the
     * stdio buffer and fail at commit's fflush; a large write fails at once. */
    if (access("/dev/full", W_OK) == 0) {
        for (int big = 0; big < 2; big++) {
            CHECK(vae_atomic_open(&af, p) == VAE_OK);
            snprintf(tmp, sizeof tmp, "%s", af.tmp);
            fclose(af.f);
            af.f = fopen("/dev/full", "w");
            CHECK(af.f != NULL);
            if (!af.f) break;
            if (big) {
                size_t n = 1 << 20;
                char *junk = calloc(n, 1);
                CHECK_ERR(vae_atomic_write(&af, junk, n), "No space left on device");
                CHECK(af.failed == ENOSPC);
                free(junk);
            } else {
                CHECK(vae_atomic_write(&af, "tiny", 4) == VAE_OK);
            }
            int rc = vae_atomic_commit(&af);
            CHECK(rc == VAE_EIO);
            CHECK_MSG(strstr(vae_error_get(), p) && strstr(vae_error_get(), "No space left on device"),
                      "message: %s", vae_error_get());
            CHECK(!exists(tmp));
            CHECK(file_is(p, "world!"));
        }
        CHECK(count_tmp(dir) == 0);
    } else {
        printf("note: /dev/full not available, full-disk case skipped\n");
    }
}

/* ---------------------------------------------------------------- safetensors */

static uint64_t rd_u64(const uint8_t *b) {
    uint64_t n = 0;
    for (int i = 0; i < 8; i++) n |= (uint64_t)b[i] << (8 * i);
    return n;
}

static void test_st_roundtrip(void) {
    const char *p = test_tmp_path("rt.safetensors");
    float a[2 * 3], b[4], c[1 * 2 * 2 * 3];
    for (int i = 0; i < 6; i++) a[i] = (float)i * 0.5f - 1.0f;
    for (int i = 0; i < 4; i++) b[i] = 1e-30f * (float)(i + 1);
    for (int i = 0; i < 12; i++) c[i] = (float)(i * i) - 3.25f;
    double dd[3] = {1.0 / 3.0, -2.0, 1e300};
    vae_st_tensor t[5];
    memset(t, 0, sizeof t);
    snprintf(t[0].name, sizeof t[0].name, "enc.w");
    snprintf(t[0].dtype, sizeof t[0].dtype, "F32");
    t[0].ndim = 2, t[0].shape[0] = 2, t[0].shape[1] = 3, t[0].data = a, t[0].bytes = sizeof a;
    snprintf(t[1].name, sizeof t[1].name, "enc.b");
    snprintf(t[1].dtype, sizeof t[1].dtype, "F32");
    t[1].ndim = 1, t[1].shape[0] = 4, t[1].data = b, t[1].bytes = sizeof b;
    snprintf(t[2].name, sizeof t[2].name, "empty");
    snprintf(t[2].dtype, sizeof t[2].dtype, "F32");
    t[2].ndim = 2, t[2].shape[0] = 0, t[2].shape[1] = 7, t[2].data = NULL, t[2].bytes = 0;
    snprintf(t[3].name, sizeof t[3].name, "conv.w");
    snprintf(t[3].dtype, sizeof t[3].dtype, "F32");
    t[3].ndim = 4, t[3].shape[0] = 1, t[3].shape[1] = 2, t[3].shape[2] = 2, t[3].shape[3] = 3;
    t[3].data = c, t[3].bytes = sizeof c;
    snprintf(t[4].name, sizeof t[4].name, "scalar.f64");
    snprintf(t[4].dtype, sizeof t[4].dtype, "F64");
    t[4].ndim = 1, t[4].shape[0] = 3, t[4].data = dd, t[4].bytes = sizeof dd;
    /* F64 after 6+4+12 floats = 88 bytes: offset 88 is 8-aligned */
    const char *tricky = "a \"quoted\" line\nsecond\tline \\ und Gr\xc3\xbc\xc3\x9f\x65 \xe2\x9c\x93";
    vae_st_meta meta[2] = {{"config", (char *)tricky}, {"step", "42"}};
    CHECK(vae_st_write(p, t, 5, meta, 2) == VAE_OK);

    size_t len;
    uint8_t *raw = (uint8_t *)test_slurp(p, &len);
    CHECK(raw && len >= 8);
    uint64_t n = rd_u64(raw);
    CHECK(n % 8 == 0);
    CHECK(len == 8 + n + sizeof a + sizeof b + sizeof c + sizeof dd);
    CHECK(raw[8] == '{');
    /* the data area is exactly the tensors, in order */
    const uint8_t *area = raw + 8 + n;
    CHECK(memcmp(area, a, sizeof a) == 0);
    CHECK(memcmp(area + 24, b, sizeof b) == 0);
    CHECK(memcmp(area + 40, c, sizeof c) == 0);
    CHECK(memcmp(area + 88, dd, sizeof dd) == 0);
    free(raw);

    vae_st_file f;
    int rc = vae_st_read(&f, p);
    CHECK_MSG(rc == VAE_OK, "%s", vae_error_get());
    if (rc) return;
    CHECK(f.n_t == 5);
    CHECK(f.n_meta == 3);
    const vae_st_tensor *x = vae_st_find(&f, "enc.w");
    CHECK(x && x->ndim == 2 && x->shape[0] == 2 && x->shape[1] == 3 && strcmp(x->dtype, "F32") == 0);
    CHECK(x && x->bytes == sizeof a && memcmp(x->data, a, sizeof a) == 0);
    CHECK(x && (uintptr_t)x->data % 8 == 0);
    x = vae_st_find(&f, "enc.b");
    CHECK(x && x->ndim == 1 && x->shape[0] == 4 && memcmp(x->data, b, sizeof b) == 0);
    x = vae_st_find(&f, "empty");
    CHECK(x && x->ndim == 2 && x->shape[0] == 0 && x->shape[1] == 7 && x->bytes == 0);
    x = vae_st_find(&f, "conv.w");
    CHECK(x && x->ndim == 4 && x->shape[3] == 3 && x->bytes == sizeof c && memcmp(x->data, c, sizeof c) == 0);
    x = vae_st_find(&f, "scalar.f64");
    CHECK(x && strcmp(x->dtype, "F64") == 0 && ((const double *)x->data)[0] == 1.0 / 3.0 &&
          ((const double *)x->data)[2] == 1e300 && (uintptr_t)x->data % 8 == 0);
    CHECK(vae_st_find(&f, "nope") == NULL);
    CHECK(strcmp(f.t[0].name, "enc.w") == 0 && strcmp(f.t[4].name, "scalar.f64") == 0); /* file order */
    const char *cfg = vae_st_meta_get(&f, "config");
    CHECK(cfg && strcmp(cfg, tricky) == 0);
    CHECK(vae_st_meta_get(&f, "step") && strcmp(vae_st_meta_get(&f, "step"), "42") == 0);
    CHECK(vae_st_meta_get(&f, "crc32") != NULL);
    CHECK(vae_st_meta_get(&f, "missing") == NULL);
    vae_st_free(&f);
    vae_st_free(&f); /* safe twice */

    /* in-memory parse of the same bytes */
    raw = (uint8_t *)test_slurp(p, &len);
    CHECK(vae_st_parse(&f, raw, len, "mem") == VAE_OK && f.n_t == 5);
    vae_st_free(&f);
    free(raw);

    /* no tensors at all */
    const char *p0 = test_tmp_path("empty.safetensors");
    CHECK(vae_st_write(p0, NULL, 0, NULL, 0) == VAE_OK);
    CHECK(vae_st_read(&f, p0) == VAE_OK && f.n_t == 0 && f.n_meta == 1);
    vae_st_free(&f);

    /* writer-side argument errors */
    vae_st_tensor bad = t[0];
    bad.bytes = 20;
    CHECK_ERR(vae_st_write(p0, &bad, 1, NULL, 0), "need 24");
    bad = t[0];
    snprintf(bad.dtype, sizeof bad.dtype, "F8");
    CHECK_ERR(vae_st_write(p0, &bad, 1, NULL, 0), "unknown dtype 'F8'");
    vae_st_tensor two[2] = {t[0], t[0]};
    CHECK_ERR(vae_st_write(p0, two, 2, NULL, 0), "duplicate tensor name 'enc.w'");
    vae_st_meta crcm = {"crc32", "1"};
    CHECK_ERR(vae_st_write(p0, t, 1, &crcm, 1), "reserved");
    uint8_t u8[3] = {1, 2, 3};
    vae_st_tensor mis[2] = {t[0], t[0]};
    snprintf(mis[0].name, sizeof mis[0].name, "bytes");
    snprintf(mis[0].dtype, sizeof mis[0].dtype, "U8");
    mis[0].ndim = 1, mis[0].shape[0] = 3, mis[0].data = u8, mis[0].bytes = 3;
    CHECK_ERR(vae_st_write(p0, mis, 2, NULL, 0), "not a multiple of its 4-byte element size");
    CHECK(vae_st_read(&f, p0) == VAE_OK && f.n_t == 0); /* failed writes left the old file */
    vae_st_free(&f);
    const char *nodir = test_tmp_path("missing/dir/w.safetensors");
    CHECK_ERR(vae_st_write(nodir, t, 1, NULL, 0), nodir);
    CHECK_ERR(vae_st_read(&f, nodir), "No such file or directory");
    CHECK(count_tmp(test_tmpdir()) == 0);
}

/* Writes u64 header length + header (space-padded to a multiple of 8, as
 * writers do, so that F32 data stays aligned) + data; returns the path. If
 * hlen_override is nonzero it is stored instead of the header's length. */
static const char *st_craft(const char *name, const char *header, const void *data, size_t dlen,
                            uint64_t hlen_override) {
    size_t hl0 = strlen(header), hl = (hl0 + 7) & ~(size_t)7;
    size_t total = 8 + hl + dlen;
    uint8_t *b = malloc(total);
    uint64_t n = hlen_override ? hlen_override : hl;
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(n >> (8 * i));
    memset(b + 8, ' ', hl);
    memcpy(b + 8, header, hl0);
    if (dlen) memcpy(b + 8 + hl, data, dlen);
    const char *p = test_write_file(name, b, total);
    free(b);
    return p;
}

/* Reads a crafted file; expects failure with a message naming it and `what`. */
static void st_expect(const char *path, const char *what) {
    vae_st_file f;
    int rc = vae_st_read(&f, path);
    const char *m = vae_error_get();
    CHECK_MSG(rc != VAE_OK && strncmp(m, path, strlen(path)) == 0 && strstr(m, what),
              "%s: rc %d, message \"%s\", expected \"%s\"", path, rc, rc ? m : "", what);
    CHECK(f.buf == NULL && f.t == NULL && f.meta == NULL && f.n_t == 0); /* nothing left to free */
    if (rc == VAE_OK) vae_st_free(&f);
}

static void test_st_broken(void) {
    float data[8] = {0};
    const char *ok_hdr = "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    vae_st_file f;
    const char *good = st_craft("good.st", ok_hdr, data, 8, 0);
    CHECK_MSG(vae_st_read(&f, good) == VAE_OK, "%s", vae_error_get());
    vae_st_free(&f);

    st_expect(st_craft("huge.st", ok_hdr, data, 8, (uint64_t)1 << 63), "header length 9223372036854775808");
    st_expect(st_craft("huge2.st", ok_hdr, data, 8, (uint64_t)1 << 63), "100 MiB limit");
    st_expect(st_craft("long.st", ok_hdr, data, 8, strlen(ok_hdr) + 100), "exceeds the file");
    st_expect(test_write_file("short.st", "\x10\0\0", 3), "too short");
    st_expect(st_craft("json.st", "{\"w\": {\"dtype\": \"F32\",, }}    ", data, 8, 0), "not valid JSON");
    st_expect(st_craft("trail.st", "{} x    ", data, 0, 0), "trailing bytes");
    st_expect(st_craft("array.st", "[1, 2, 3]       ", data, 0, 0), "not a JSON object");
    st_expect(st_craft("str.st", "\"just a string\" ", data, 0, 0), "not a JSON object");
    st_expect(st_craft("utf8.st", "{\"\xff\":{}}       ", data, 0, 0), "not valid UTF-8");
    st_expect(st_craft("nul.st", "{}\x01     ", data, 0, 0), "control byte");
    st_expect(st_craft("dtype.st", "{\"w\":{\"dtype\":\"F8\",\"shape\":[2],\"data_offsets\":[0,8]}}    ",
                       data, 8, 0),
              "tensor 'w' has unknown dtype 'F8'");
    st_expect(st_craft("notobj.st", "{\"w\": 5}", data, 8, 0), "tensor 'w' is not a JSON object");
    st_expect(st_craft("size.st", "{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}   ",
                       data, 8, 0),
              "tensor 'w': data_offsets span 8 bytes but shape and dtype F32 need 12");
    st_expect(st_craft("oob.st", "{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}  ",
                       data, 8, 0),
              "lie outside the data area (8 bytes");
    st_expect(st_craft("flip.st", "{\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,0]}}   ",
                       data, 8, 0),
              "begin > end");
    st_expect(st_craft("overlap.st",
                       "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                       "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}  ",
                       data, 16, 0),
              "tensors 'a' [0, 8) and 'b' [4, 12) overlap");
    st_expect(st_craft("neg.st", "{\"w\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}  ",
                       data, 8, 0),
              "tensor 'w': shape[0] is negative");
    st_expect(st_craft("frac.st", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,8]}} ",
                       data, 8, 0),
              "shape[0] is not a non-negative integer");
    st_expect(st_craft("ndim.st",
                       "{\"w\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,8],\"data_offsets\":[0,8]}}", data, 8, 0),
              "tensor 'w' has 5 dimensions; at most 4 are supported");
    st_expect(st_craft("ovf.st",
                       "{\"w\":{\"dtype\":\"F64\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,8]}}",
                       data, 8, 0),
              "overflows");
    st_expect(st_craft("lack.st", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2]}}       ", data, 8, 0),
              "tensor 'w' lacks 'data_offsets'");
    st_expect(st_craft("mdnum.st", "{\"__metadata__\":{\"k\":1}}      ", data, 0, 0),
              "metadata 'k' is not a string");
    st_expect(st_craft("dup.st",
                       "{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                       "\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}",
                       data, 8, 0),
              "duplicate tensor name 'w'");
    st_expect(st_craft("align.st", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[2,6]}}   ",
                       data, 8, 0),
              "not aligned");
    /* the limits themselves, one byte past each (a mutation audit's cases) */
    st_expect(st_craft("long4.st", ok_hdr, data, 8, (strlen(ok_hdr) + 7) / 8 * 8 + 8 + 8 - 4),
              "exceeds the file");
    st_expect(test_write_file("short5.st", "\x10\0\0\0\0", 5), "too short");
    st_expect(st_craft("oob1.st", "{\"w\":{\"dtype\":\"U8\",\"shape\":[9],\"data_offsets\":[0,9]}}",
                       data, 8, 0),
              "lie outside the data area (8 bytes");
    st_expect(st_craft("wide.st", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,8]}}",
                       data, 8, 0),
              "data_offsets span 8 bytes but shape and dtype F32 need 4");
    st_expect(st_craft("overlap1.st",
                       "{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]},"
                       "\"b\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[7,15]}}",
                       data, 15, 0),
              "tensors 'a' [0, 8) and 'b' [7, 15) overlap");
    st_expect(st_craft("after1.st", "{\"w\":{\"dtype\":\"U8\",\"shape\":[7],\"data_offsets\":[0,7]}}",
                       data, 8, 0),
              "1 bytes after the last tensor's data");
    st_expect(st_craft("mddup.st", "{\"__metadata__\":{\"k\":\"a\",\"k\":\"b\"}}", data, 0, 0),
              "duplicate metadata key 'k'");
    st_expect(st_craft("crc33.st",
                       "{\"__metadata__\":{\"crc32\":\"4294967296\"},"
                       "\"w\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]}}",
                       data, 8, 0),
              "metadata crc32 '4294967296' is not a 32-bit decimal number");
    char mdkey[160] = "{\"__metadata__\":{\"";
    for (int i = 0; i < (int)sizeof(((vae_st_meta *)0)->key); i++) strcat(mdkey, "k");
    strcat(mdkey, "\":\"v\"}}");
    st_expect(st_craft("mdkey.st", mdkey, data, 0, 0), "is too long");
    char longname[400] = "{\"";
    for (int i = 0; i < 200; i++) strcat(longname, "n");
    strcat(longname, "\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}");
    st_expect(st_craft("name.st", longname, data, 8, 0), "is too long (200 bytes; at most 127)");

    /* checksum: a valid file from the writer, then one flipped data byte */
    const char *p = test_tmp_path("crc.safetensors");
    float w[16];
    for (int i = 0; i < 16; i++) w[i] = (float)i;
    vae_st_tensor t;
    memset(&t, 0, sizeof t);
    snprintf(t.name, sizeof t.name, "w");
    snprintf(t.dtype, sizeof t.dtype, "F32");
    t.ndim = 2, t.shape[0] = 4, t.shape[1] = 4, t.data = w, t.bytes = sizeof w;
    CHECK(vae_st_write(p, &t, 1, NULL, 0) == VAE_OK);
    size_t len;
    uint8_t *raw = (uint8_t *)test_slurp(p, &len);
    CHECK(vae_st_parse(&f, raw, len, p) == VAE_OK);
    char stored[16];
    snprintf(stored, sizeof stored, "%s", vae_st_meta_get(&f, "crc32"));
    vae_st_free(&f);
    raw[len - 5] ^= 0x40;
    const char *flip = test_write_file("flipped.safetensors", raw, len);
    st_expect(flip, "checksum mismatch: tensors are corrupted (stored crc32 ");
    char want[64];
    snprintf(want, sizeof want, "(stored crc32 %s, computed ", stored);
    st_expect(flip, want);
    /* truncated: the data area is shorter than the header promises */
    const char *trunc = test_write_file("truncated.safetensors", raw, len - 4);
    st_expect(trunc, "lie outside the data area");
    /* truncated inside the header */
    const char *trunc2 = test_write_file("truncated2.safetensors", raw, 20);
    st_expect(trunc2, "exceeds the file");
    /* bad crc text */
    free(raw);
    st_expect(st_craft("crctext.st", "{\"__metadata__\":{\"crc32\":\"12ab\"}}", data, 0, 0),
              "metadata crc32 '12ab' is not a 32-bit decimal number");
    /* vae_st_parse uses the name given */
    CHECK_ERR(vae_st_parse(&f, (const uint8_t *)"abc", 3, "<fuzz>"), "<fuzz>: file is 3 bytes");
}

/* ---------------------------------------------------------------- PNG and tiles */

static void check_png(const char *path, const uint8_t *want, int w, int h, int c) {
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    CHECK_MSG(png_image_begin_read_from_file(&img, path), "%s: %s", path, img.message);
    CHECK(img.width == (png_uint_32)w && img.height == (png_uint_32)h);
    png_uint_32 fmt = c == 3 ? PNG_FORMAT_RGB : PNG_FORMAT_GRAY;
    CHECK(img.format == fmt); /* stored as grey / RGB, no alpha */
    img.format = fmt;
    size_t n = PNG_IMAGE_SIZE(img);
    CHECK(n == (size_t)w * h * c);
    uint8_t *buf = malloc(n);
    CHECK(png_image_finish_read(&img, NULL, buf, 0, NULL));
    CHECK(memcmp(buf, want, n) == 0);
    free(buf);
    png_image_free(&img);
}

static void test_png(void) {
    uint8_t rgb[3 * 2 * 3], grey[5 * 4];
    for (int i = 0; i < 18; i++) rgb[i] = (uint8_t)(i * 14 + 1);
    for (int i = 0; i < 20; i++) grey[i] = (uint8_t)(255 - i * 12);
    const char *prgb = test_tmp_path("rgb.png"), *pgrey = test_tmp_path("grey.png");
    CHECK(vae_png_write(prgb, rgb, 2, 3, 3) == VAE_OK); /* w 2, h 3 */
    CHECK(vae_png_write(pgrey, grey, 4, 5, 1) == VAE_OK);
    check_png(prgb, rgb, 2, 3, 3);
    check_png(pgrey, grey, 4, 5, 1);
    CHECK_ERR(vae_png_write(prgb, rgb, 2, 3, 4), "4 channels");
    CHECK_ERR(vae_png_write(prgb, rgb, 2, 3, 2), "with 2 channels (1 or 3)"); /* grey + alpha: no */
    CHECK_ERR(vae_png_write(prgb, rgb, 2, 0, 1), "cannot write a 2x0 PNG");
    const char *nodir = test_tmp_path("missing/x.png");
    CHECK_ERR(vae_png_write(nodir, rgb, 2, 3, 3), nodir);
    /* libpng's own limit (width > 2^31-1 rows of nothing): error, not a crash */
    CHECK_ERR(vae_png_write(test_tmp_path("wide.png"), rgb, 2000000, 1, 1), "PNG write failed");
    check_png(prgb, rgb, 2, 3, 3); /* failed writes did not touch it */
    CHECK(count_tmp(test_tmpdir()) == 0);
}

static void test_tile(void) {
    /* 3 grey 2x2 images, 2 columns, pad 1 -> 5x5 grid, last slot white */
    const uint8_t g[3 * 4] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    int gw = 0, gh = 0;
    uint8_t *grid = vae_tile_images(g, 3, 1, 2, 2, 2, 1, &gw, &gh);
    CHECK(grid && gw == 5 && gh == 5);
    const uint8_t want[25] = {1,   2,   255, 5,   6,   //
                              3,   4,   255, 7,   8,   //
                              255, 255, 255, 255, 255, //
                              9,   10,  255, 255, 255, //
                              11,  12,  255, 255, 255};
    CHECK(grid && memcmp(grid, want, 25) == 0);
    free(grid);

    /* planar RGB in, interleaved out: 2 images [3, 1, 2], 2 columns, pad 2 */
    const uint8_t c3[2 * 3 * 2] = {10, 11, 20, 21, 30, 31, /* image 0: R row, G row, B row */
                                   40, 41, 50, 51, 60, 61};
    grid = vae_tile_images(c3, 2, 3, 1, 2, 2, 2, &gw, &gh);
    CHECK(grid && gw == 6 && gh == 1);
    const uint8_t want3[18] = {10, 20, 30, 11, 21, 31, 255, 255, 255,
                               255, 255, 255, 40, 50, 60, 41, 51, 61};
    CHECK(grid && memcmp(grid, want3, 18) == 0);
    free(grid);

    /* single column, no padding: a plain vertical stack */
    grid = vae_tile_images(g, 3, 1, 2, 2, 1, 0, &gw, &gh);
    CHECK(grid && gw == 2 && gh == 6 && memcmp(grid, g, 12) == 0);
    free(grid);

    CHECK(vae_tile_images(g, 0, 1, 2, 2, 2, 1, &gw, &gh) == NULL);
    CHECK(strstr(vae_error_get(), "bad arguments") != NULL);
    /* a grid taller than 2^31 - 1 rows: refused before any allocation */
    CHECK(vae_tile_images(g, 2, 1, 1 << 30, 1, 1, 0, &gw, &gh) == NULL);
    CHECK(strstr(vae_error_get(), "tile images: a 1x2147483648 grid is too large") != NULL);
    CHECK(vae_tile_images(g, 3, 1, 2, 2, 2, -1, &gw, &gh) == NULL); /* a negative pad */
    CHECK(strstr(vae_error_get(), "bad arguments (n 3, c 1, 2x2, cols 2, pad -1)") != NULL);
}

/* ---------------------------------------------------------------- npy */

static int have_numpy(void) {
    if (access("/usr/bin/python3", X_OK) != 0) return 0;
    return system("/usr/bin/python3 -c 'import numpy' >/dev/null 2>&1") == 0;
}

static void test_npy(void) {
    enum { C = 1, H = 2, W = 3, D = C * H * W };
    uint8_t px[10 * D];
    for (int i = 0; i < 10 * D; i++) px[i] = (uint8_t)(i * 7 + 3);

    /* full file, appended in two pieces */
    const char *p5 = test_tmp_path("five.npy");
    vae_npy_writer nw;
    CHECK(vae_npy_open(&nw, p5, 5, C, H, W) == VAE_OK);
    CHECK(vae_npy_append(&nw, px, 2) == VAE_OK);
    CHECK(vae_npy_append(&nw, px + 2 * D, 3) == VAE_OK);
    CHECK_ERR(vae_npy_append(&nw, px, 1), "would exceed the announced shape");
    CHECK(vae_npy_close(&nw) == VAE_OK);
    uint8_t *data = NULL;
    int64_t shape[4] = {0};
    int nd = 0;
    int rc = vae_npy_read_u8(p5, &data, shape, &nd);
    CHECK_MSG(rc == VAE_OK, "%s", vae_error_get());
    CHECK(nd == 4 && shape[0] == 5 && shape[1] == C && shape[2] == H && shape[3] == W);
    CHECK(data && memcmp(data, px, 5 * D) == 0);
    free(data);
    size_t len;
    char *raw = test_slurp(p5, &len);
    CHECK(len == 128 + 5 * D);
    CHECK(raw && memcmp(raw, "\x93NUMPY\x01\x00", 8) == 0 && (uint8_t)raw[8] == 118 && raw[9] == 0);
    CHECK(raw && raw[127] == '\n' && strstr(raw + 10, "'shape': (5, 1, 2, 3)") != NULL);
    free(raw);

    /* announced 10, wrote 4: close shrinks the shape */
    const char *p4 = test_tmp_path("four.npy");
    CHECK(vae_npy_open(&nw, p4, 10, C, H, W) == VAE_OK);
    CHECK(vae_npy_append(&nw, px, 4) == VAE_OK);
    CHECK(vae_npy_close(&nw) == VAE_OK);
    raw = test_slurp(p4, &len);
    CHECK(len == 128 + 4 * D);
    const char *dict4 = "{'descr': '|u1', 'fortran_order': False, 'shape': (4, 1, 2, 3), }";
    CHECK(raw && strncmp(raw + 10, dict4, strlen(dict4)) == 0);
    CHECK(raw && ((uint8_t)raw[8] | (uint8_t)raw[9] << 8) + 10 == 128 && 128 % 64 == 0);
    free(raw);
    rc = vae_npy_read_u8(p4, &data, shape, &nd);
    CHECK(rc == VAE_OK && nd == 4 && shape[0] == 4 && shape[3] == W && memcmp(data, px, 4 * D) == 0);
    free(data);
    CHECK(count_tmp(test_tmpdir()) == 0);

    if (have_numpy()) {
        char cmd[1600];
        snprintf(cmd, sizeof cmd,
                 "/usr/bin/python3 -c \"import numpy as np; a=np.load('%s'); "
                 "assert a.shape==(4,1,2,3) and a.dtype==np.uint8 and "
                 "(a.ravel()==(np.arange(a.size)*7+3)%%256).all()\"",
                 p4);
        CHECK_MSG(system(cmd) == 0, "numpy rejected %s", p4);
        snprintf(cmd, sizeof cmd,
                 "/usr/bin/python3 -c \"import numpy as np; a=np.load('%s'); assert a.shape==(5,1,2,3)\"", p5);
        CHECK_MSG(system(cmd) == 0, "numpy rejected %s", p5);
    } else {
        printf("note: /usr/bin/python3 with numpy not available, numpy cross-check skipped\n");
    }

    /* a header written by numpy itself (1-d, version 2.0 length field, no trailing comma) */
    {
        char b[64 + 3];
        const char *d = "{'descr':'|u1','fortran_order':False,'shape':(3,)}";
        memset(b, ' ', 64);
        memcpy(b, "\x93NUMPY\x02\x00", 8);
        b[8] = 52, b[9] = b[10] = b[11] = 0;
        memcpy(b + 12, d, strlen(d));
        b[63] = '\n';
        b[64] = 9, b[65] = 8, b[66] = 7;
        rc = vae_npy_read_u8(test_write_file("v2.npy", b, sizeof b), &data, shape, &nd);
        CHECK_MSG(rc == VAE_OK, "%s", vae_error_get());
        CHECK(rc == VAE_OK && nd == 1 && shape[0] == 3 && data[0] == 9 && data[2] == 7);
        free(rc == VAE_OK ? data : NULL);
    }

    /* broken files: built from the good 4-row file */
    raw = test_slurp(p4, &len);
    char *b = malloc(len);
    memcpy(b, raw, len);
    b[1] = 'X';
    const char *q = test_write_file("magic.npy", b, len);
    CHECK_ERR(vae_npy_read_u8(q, &data, shape, &nd), q);
    CHECK_ERR(vae_npy_read_u8(q, &data, shape, &nd), "bad magic");

    memcpy(b, raw, len);
    memcpy(strstr(b + 10, "|u1"), "<f4", 3);
    q = test_write_file("f4.npy", b, len);
    CHECK_ERR(vae_npy_read_u8(q, &data, shape, &nd), "dtype '<f4' is not supported");

    memcpy(b, raw, len);
    memcpy(strstr(b + 10, "False"), "True ", 5);
    q = test_write_file("fortran.npy", b, len);
    CHECK_ERR(vae_npy_read_u8(q, &data, shape, &nd), "fortran_order True");

    memcpy(b, raw, len);
    b[6] = 3;
    q = test_write_file("ver.npy", b, len);
    CHECK_ERR(vae_npy_read_u8(q, &data, shape, &nd), "unsupported .npy format version 3.0");

    memcpy(b, raw, len);
    b[8] = (char)0xff, b[9] = 0x7f;
    q = test_write_file("hlen.npy", b, len);
    CHECK_ERR(vae_npy_read_u8(q, &data, shape, &nd), "header length 32767 exceeds the file");

    q = test_write_file("short.npy", raw, len - 1);
    CHECK_ERR(vae_npy_read_u8(q, &data, shape, &nd), "data is 23 bytes but the shape needs 24");
    CHECK_ERR(vae_npy_read_u8(q, &data, shape, &nd), q);

    /* shape overflow: a dimension beyond int64, and a product beyond it */
    char hb[128];
    const char *dicts[3] = {"{'descr': '|u1', 'fortran_order': False, 'shape': (99999999999999999999, 1), }",
                            "{'descr': '|u1', 'fortran_order': False, 'shape': (4294967296, 4294967296), }",
                            "{'descr': '|u1', 'fortran_order': False, 'shape': (1, 2, 3, 4, 5), }"};
    const char *errs[3] = {"shape dimension 0 overflows", "shape product overflows", "more than 4 dimensions"};
    for (int i = 0; i < 3; i++) {
        memset(hb, ' ', sizeof hb);
        memcpy(hb, "\x93NUMPY\x01\x00\x76\x00", 10);
        memcpy(hb + 10, dicts[i], strlen(dicts[i]));
        hb[127] = '\n';
        q = test_write_file("shape.npy", hb, sizeof hb);
        CHECK_ERR(vae_npy_read_u8(q, &data, shape, &nd), errs[i]);
    }
    /* headers at each limit of the reader: a 128-byte version 1.0 file with
     * the dict given, padded with spaces, then `extra` data bytes beyond the
     * 24 that (4, 1, 2, 3) needs. (A key of 32 characters does not fit the
     * reader's 32-byte buffer with its NUL: refused, not written past.) */
    struct {
        const char *dict;
        int extra;
        const char *err; /* NULL: must load */
    } hdrs[] = {
        {"{'descr': '<u1', 'fortran_order': False, 'shape': (4, 1, 2, 3), }", 0, NULL},
        {"{'descr': '>u1', 'fortran_order': False, 'shape': (4, 1, 2, 3), }", 0, NULL},
        {"{'descr': '|u1', 'fortran_order': False, 'shape': (4, 1, 2, 3), } x", 0,
         "header has trailing text near 'x "},
        {"{'descr': '|u1', 'fortran_order': False, 'shape': (4, 1, 2, 3), }", 1,
         "data is 25 bytes but the shape needs 24"},
        {"{'descr': '|u1', 'fortran_order': False, 'shape': (), }", 0, "0-dimensional"},
        {"{'descr': '|u1', 'fortran_order': False, 'a_key_of_exactly_thirty_two_ch__': 1}", 0,
         "expected a key"},
    };
    for (size_t i = 0; i < sizeof hdrs / sizeof hdrs[0]; i++) {
        uint8_t fb[128 + 25];
        memset(fb, ' ', 128);
        memcpy(fb, "\x93NUMPY\x01\x00\x76\x00", 10);
        memcpy(fb + 10, hdrs[i].dict, strlen(hdrs[i].dict));
        fb[127] = '\n';
        for (int k = 0; k < 25; k++) fb[128 + k] = (uint8_t)(k + 1);
        q = test_write_file("limits.npy", fb, (size_t)(128 + 24 + hdrs[i].extra));
        rc = vae_npy_read_u8(q, &data, shape, &nd);
        if (!hdrs[i].err) {
            CHECK_MSG(rc == VAE_OK && nd == 4 && shape[0] == 4 && data[23] == 24, "%s: %s",
                      hdrs[i].dict, rc ? vae_error_get() : "wrong shape or data");
            if (rc == VAE_OK) free(data);
        } else {
            CHECK_ERR(rc, hdrs[i].err);
        }
    }
    {
        /* the header's length one byte past the file (counted from the
         * header's start, not the file's); a 2.0 preamble cut short */
        memcpy(b, raw, len);
        const size_t hl = len - 10 + 1;
        b[8] = (char)(hl & 0xff), b[9] = (char)(hl >> 8);
        q = test_write_file("hlen1.npy", b, len);
        CHECK_ERR(vae_npy_read_u8(q, &data, shape, &nd), "exceeds the file");
        q = test_write_file("v2cut.npy", "\x93NUMPY\x02\x00\x10\x00\x00", 11);
        CHECK_ERR(vae_npy_read_u8(q, &data, shape, &nd), "truncated in its preamble");
    }
    const char *missing = test_tmp_path("nope.npy");
    CHECK_ERR(vae_npy_read_u8(missing, &data, shape, &nd), "No such file or directory");
    free(b);
    free(raw);

    CHECK_ERR(vae_npy_open(&nw, test_tmp_path("neg.npy"), -1, 1, 2, 3), "bad .npy shape");
    CHECK_ERR(vae_npy_open(&nw, test_tmp_path("c0.npy"), 3, 0, 2, 3), "bad .npy shape (3, 0, 2, 3)");
    /* rows x bytes per row beyond int64: refused before any file is made */
    CHECK_ERR(vae_npy_open(&nw, test_tmp_path("big.npy"), INT64_MAX / 1000, 1000, 1000, 1000),
              "overflows");
    CHECK(count_tmp(test_tmpdir()) == 0);
    const char *nodir = test_tmp_path("missing/x.npy");
    CHECK_ERR(vae_npy_open(&nw, nodir, 3, 1, 2, 3), nodir);
}

/* The float32 .npy writer: header text and little-endian data, and a
 * stopped run's shorter header. */
static void test_npy_f32(void) {
    const char *p = test_tmp_path("lat.npy");
    vae_npy_writer nw;
    float z[6] = {1.5f, -2, 0.25f, 3, 0, -0.125f};
    CHECK(vae_npy_open_f32(&nw, p, 4, 3) == VAE_OK);
    CHECK(vae_npy_append(&nw, z, 2) == VAE_OK);
    CHECK(vae_npy_close(&nw) == VAE_OK); /* 2 of 4 rows: header says 2 */
    size_t len;
    char *raw = test_slurp(p, &len);
    CHECK(raw && len == 128 + 6 * 4);
    if (raw && len == 128 + 6 * 4) {
        CHECK(strstr(raw + 10, "'descr': '<f4'") && strstr(raw + 10, "'shape': (2, 3)"));
        CHECK(memcmp(raw + 128, z, sizeof z) == 0); /* this host is little-endian */
    }
    free(raw);
}

static int is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* vae_mkdir_p: creates the missing folders and names the outermost it made;
 * vae_rmdir_made removes those still empty, and nothing it did not make; an
 * existing file is refused. */
static void test_mkdir_p(void) {
    char top[700], deep[800], made[1024], f[900];
    snprintf(top, sizeof top, "%s/mk", test_tmpdir());
    snprintf(deep, sizeof deep, "%s/a/b/c/", top);
    CHECK(vae_mkdir_p(top, made, sizeof made) == VAE_OK && strcmp(made, top) == 0);
    CHECK(vae_mkdir_p(top, made, sizeof made) == VAE_OK && made[0] == 0); /* exists */
    CHECK(vae_mkdir_p(deep, made, sizeof made) == VAE_OK);
    snprintf(f, sizeof f, "%s/a", top);
    CHECK_MSG(strcmp(made, f) == 0, "made %s, want %s", made, f);
    snprintf(f, sizeof f, "%s/a/b/c", top);
    CHECK(is_dir(f));
    vae_rmdir_made(deep, made); /* all three empty: all go, top stays */
    snprintf(f, sizeof f, "%s/a", top);
    CHECK(!is_dir(f) && is_dir(top));
    /* a file written inside: the folders holding it stay */
    CHECK(vae_mkdir_p(deep, made, sizeof made) == VAE_OK);
    snprintf(f, sizeof f, "%s/a/b/x.txt", top);
    FILE *fp = fopen(f, "w");
    if (fp) fclose(fp);
    vae_rmdir_made(deep, made);
    snprintf(f, sizeof f, "%s/a/b/c", top);
    CHECK(!is_dir(f));
    snprintf(f, sizeof f, "%s/a/b", top);
    CHECK(is_dir(f));
    vae_rmdir_made(deep, ""); /* made none: removes none */
    CHECK(is_dir(f));
    /* a file where the folder should be, and a folder under a file */
    snprintf(f, sizeof f, "%s/a/b/x.txt", top);
    CHECK(vae_mkdir_p(f, made, sizeof made) == VAE_EIO && strstr(vae_error_get(), "not a directory"));
    CHECK(made[0] == 0);
    snprintf(f, sizeof f, "%s/a/b/x.txt/d", top);
    CHECK(vae_mkdir_p(f, made, sizeof made) == VAE_EIO);
    CHECK(vae_mkdir_p("", made, sizeof made) == VAE_EINVAL);
}

/* vae_atomic_remove_stale: removes temp files of dead writers only. */
static void test_remove_stale(void) {
    char dir[700], f[800];
    snprintf(dir, sizeof dir, "%s/stale", test_tmpdir());
    CHECK(vae_mkdir_p(dir, NULL, 0) == VAE_OK);
    pid_t child = fork();
    if (child == 0) _exit(0);
    int st;
    waitpid(child, &st, 0); /* a pid that no longer runs */
    const long pids[3] = {(long)child, (long)getpid(), 1L /* init: alive */};
    for (int i = 0; i < 3; i++) {
        snprintf(f, sizeof f, "%s/x%d.npy.tmp.%ld", dir, i, pids[i]);
        FILE *fp = fopen(f, "w");
        CHECK(fp != NULL);
        if (fp) fclose(fp);
    }
    snprintf(f, sizeof f, "%s/keep.tmp.12ab", dir); /* not a temp name */
    FILE *fp = fopen(f, "w");
    if (fp) fclose(fp);
    CHECK(vae_atomic_remove_stale(dir) == 1);
    snprintf(f, sizeof f, "%s/x0.npy.tmp.%ld", dir, pids[0]);
    CHECK(access(f, F_OK) != 0);
    snprintf(f, sizeof f, "%s/x1.npy.tmp.%ld", dir, pids[1]);
    CHECK(access(f, F_OK) == 0);
    snprintf(f, sizeof f, "%s/x2.npy.tmp.%ld", dir, pids[2]);
    CHECK(access(f, F_OK) == 0);
    snprintf(f, sizeof f, "%s/keep.tmp.12ab", dir);
    CHECK(access(f, F_OK) == 0);
    CHECK(vae_atomic_remove_stale(dir) == 0);
}

int main(void) {
    test_atomic();
    test_st_roundtrip();
    test_st_broken();
    test_png();
    test_tile();
    test_npy();
    test_npy_f32();
    test_remove_stale();
    test_mkdir_p();
    return test_finish();
}

/* data.c — dataset loaders: whole-file reads with transparent gunzip, IDX
 * (MNIST and anything else in that format) and CIFAR-10's binary batches.
 *
 * Rule for every loader: a size written in a file header is never used to
 * size an allocation. Files are read first (growing the buffer as bytes
 * actually arrive, bounded by a limit), and the header is then checked
 * against the number of bytes that really exist, in 64-bit arithmetic with
 * overflow checks. A header claiming 10^12 images of a 16-byte file fails
 * at once with a "truncated" message and allocates nothing.
 *
 * Layout produced: images uint8 [n, c, h, w] (NCHW), labels uint8 [n].
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "vae_data.h"

/* Largest file (after decompression) any loader reads: far above CIFAR-10
 * (30.7 MB per batch) and MNIST (47 MB), small enough that a gzip bomb or a
 * wrong file cannot exhaust host memory. */
#if SIZE_MAX > 0xFFFFFFFFu
#define DATA_FILE_LIMIT ((size_t)1 << 32)
#else
#define DATA_FILE_LIMIT ((size_t)1 << 30)
#endif

#define READ_CHUNK ((size_t)1 << 16)

#define CIFAR_SIDE 32
#define CIFAR_PIXELS (3 * CIFAR_SIDE * CIFAR_SIDE) /* 3072, R then G then B planes */
#define CIFAR_RECORD (1 + CIFAR_PIXELS)            /* 3073: label byte + pixels */

/* ------------------------------------------------------------ file reading */

/* Grow *buf (capacity *cap, `used` bytes filled) so that at least one more
 * byte fits, never beyond `limit` bytes of capacity. Returns 0, 1 when the
 * capacity is already at the limit, or VAE_ENOMEM. */
static int grow(uint8_t **buf, size_t *cap, size_t used, size_t limit) {
    if (used < *cap) return 0;
    if (*cap >= limit) return 1;
    size_t ncap = *cap ? *cap : READ_CHUNK;
    while (ncap <= used) ncap = ncap > SIZE_MAX / 2 ? SIZE_MAX : ncap * 2;
    if (ncap > limit) ncap = limit;
    uint8_t *p = realloc(*buf, ncap);
    if (!p) return vae_error_set(VAE_ENOMEM, "out of host memory allocating %zu bytes", ncap);
    *buf = p;
    *cap = ncap;
    return 0;
}

/* Plain file: `head` holds the first `nhead` bytes already read. Sets
 * *over when the file holds more than max_bytes (the error then). */
static int read_raw(FILE *f, const char *path, const uint8_t *head, size_t nhead,
                    uint8_t **out, size_t *len, size_t max_bytes, size_t hint, int *over) {
    /* Capacity may reach max_bytes + 1 so that one byte too many is seen. */
    size_t limit = max_bytes < SIZE_MAX ? max_bytes + 1 : SIZE_MAX;
    size_t cap = hint < limit ? hint + 1 : limit; /* st_size is a hint, not trusted */
    if (cap < nhead) cap = nhead;
    if (cap == 0) cap = 1;
    uint8_t *buf = malloc(cap);
    if (!buf) return vae_error_set(VAE_ENOMEM, "out of host memory allocating %zu bytes", cap);
    memcpy(buf, head, nhead);
    size_t used = nhead;
    for (;;) {
        int g = grow(&buf, &cap, used, limit);
        if (g < 0) {
            free(buf);
            return g;
        }
        if (g > 0) break;
        size_t n = fread(buf + used, 1, cap - used, f);
        used += n;
        if (n == 0) {
            if (ferror(f)) {
                int e = errno;
                free(buf);
                return vae_error_set(VAE_EIO, "%s: read error: %s", path, strerror(e ? e : EIO));
            }
            break;
        }
    }
    if (used > max_bytes) {
        free(buf);
        *over = 1;
        return vae_error_set(VAE_EINVAL, "%s: file size exceeds %zu bytes", path, max_bytes);
    }
    *out = buf;
    *len = used;
    return VAE_OK;
}

/* gzip file (one or more members), streamed: compressed bytes are read in
 * chunks and the output buffer grows as data comes out, up to max_bytes
 * (*over set when there is more: the error then). */
static int read_gzip(FILE *f, const char *path, uint8_t *in, size_t nin, uint8_t **out,
                     size_t *len, size_t max_bytes, int *over) {
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    int zr = inflateInit2(&zs, 16 + MAX_WBITS);
    if (zr != Z_OK)
        return vae_error_set(zr == Z_MEM_ERROR ? VAE_ENOMEM : VAE_EINVAL,
                             "%s: cannot start gzip decoder: %s", path, zs.msg ? zs.msg : zError(zr));
    size_t limit = max_bytes < SIZE_MAX ? max_bytes + 1 : SIZE_MAX;
    uint8_t *buf = NULL;
    size_t cap = 0, used = 0;
    int eof = 0, rc = VAE_OK;
    zs.next_in = in;
    zs.avail_in = (uInt)nin;
    for (;;) {
        if (zs.avail_in == 0 && !eof) {
            size_t n = fread(in, 1, READ_CHUNK, f);
            if (n == 0) {
                if (ferror(f)) {
                    int e = errno;
                    rc = vae_error_set(VAE_EIO, "%s: read error: %s", path, strerror(e ? e : EIO));
                    break;
                }
                eof = 1;
            }
            zs.next_in = in;
            zs.avail_in = (uInt)n;
        }
        int g = grow(&buf, &cap, used, limit);
        if (g < 0) {
            rc = g;
            break;
        }
        if (g > 0) {
            *over = 1;
            rc = vae_error_set(VAE_EINVAL, "%s: decompressed size exceeds %zu bytes", path, max_bytes);
            break;
        }
        size_t room = cap - used;
        if (room > (size_t)1 << 30) room = (size_t)1 << 30; /* avail_out is a uInt */
        zs.next_out = buf + used;
        zs.avail_out = (uInt)room;
        zr = inflate(&zs, Z_NO_FLUSH);
        used += room - zs.avail_out;
        if (zr == Z_STREAM_END) {
            /* End of one member. More bytes may be another member (gzip
             * allows concatenation); anything else is garbage. */
            if (zs.avail_in == 0 && !eof) {
                size_t n = fread(in, 1, READ_CHUNK, f);
                if (n == 0 && ferror(f)) {
                    int e = errno;
                    rc = vae_error_set(VAE_EIO, "%s: read error: %s", path, strerror(e ? e : EIO));
                    break;
                }
                if (n == 0) eof = 1;
                zs.next_in = in;
                zs.avail_in = (uInt)n;
            }
            if (zs.avail_in == 0) break; /* done */
            if (zs.next_in[0] != 0x1f) {
                rc = vae_error_set(VAE_EINVAL, "%s: corrupt gzip data: trailing garbage after the gzip stream",
                                   path);
                break;
            }
            inflateReset(&zs);
            continue;
        }
        if (zr == Z_OK || zr == Z_BUF_ERROR) {
            /* inflate stops when input or output runs out; output space was
             * left, so it needs input that the file does not have. */
            if (zs.avail_in == 0 && eof && zs.avail_out > 0) {
                rc = vae_error_set(VAE_EINVAL, "%s: unexpected end of gzip stream (truncated file?)", path);
                break;
            }
            continue;
        }
        if (zr == Z_MEM_ERROR) {
            rc = vae_error_set(VAE_ENOMEM, "%s: out of memory while decompressing", path);
            break;
        }
        /* Z_DATA_ERROR, Z_NEED_DICT, Z_STREAM_ERROR */
        rc = vae_error_set(VAE_EINVAL, "%s: corrupt gzip data: %s", path, zs.msg ? zs.msg : zError(zr));
        break;
    }
    inflateEnd(&zs);
    if (rc == VAE_OK && used > max_bytes) {
        *over = 1;
        rc = vae_error_set(VAE_EINVAL, "%s: decompressed size exceeds %zu bytes", path, max_bytes);
    }
    if (rc != VAE_OK) {
        free(buf);
        return rc;
    }
    *out = buf;
    *len = used;
    return VAE_OK;
}

static int read_file(const char *path, uint8_t **out, size_t *len, size_t max_bytes, int gunzip,
                     int *over) {
    *out = NULL;
    *len = 0;
    *over = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return vae_error_set(VAE_EIO, "%s: %s", path, strerror(errno));
    struct stat st;
    size_t hint = 0;
    if (fstat(fileno(f), &st) == 0) {
        if (S_ISDIR(st.st_mode)) {
            fclose(f);
            return vae_error_set(VAE_EIO, "%s: %s", path, strerror(EISDIR));
        }
        if (S_ISREG(st.st_mode) && st.st_size > 0 && (uint64_t)st.st_size < SIZE_MAX)
            hint = (size_t)st.st_size;
    }
    uint8_t *in = malloc(READ_CHUNK);
    if (!in) {
        fclose(f);
        return vae_error_set(VAE_ENOMEM, "out of host memory allocating %zu bytes", READ_CHUNK);
    }
    size_t n = fread(in, 1, READ_CHUNK, f);
    int rc;
    if (n == 0 && ferror(f)) {
        rc = vae_error_set(VAE_EIO, "%s: read error: %s", path, strerror(errno ? errno : EIO));
    } else if (gunzip && n >= 2 && in[0] == 0x1f && in[1] == 0x8b) {
        rc = read_gzip(f, path, in, n, out, len, max_bytes, over);
    } else {
        rc = read_raw(f, path, in, n, out, len, max_bytes, hint, over);
    }
    free(in);
    fclose(f);
    return rc;
}

int vae_read_file(const char *path, uint8_t **out, size_t *len, size_t max_bytes) {
    int over;
    return read_file(path, out, len, max_bytes, 1, &over);
}

int vae_read_file_raw(const char *path, uint8_t **out, size_t *len, size_t max_bytes) {
    int over;
    return read_file(path, out, len, max_bytes, 0, &over);
}

/* The first (up to) n bytes of a file's content, decompressed when it is
 * gzip; 0 when they cannot be read (the full read then says why). */
static size_t read_head(const char *path, uint8_t *dst, unsigned n) {
    gzFile g = gzopen(path, "rb");
    if (!g) return 0;
    const int r = gzread(g, dst, n);
    gzclose(g);
    return r > 0 ? (size_t)r : 0;
}

/* An IDX file of `header` bytes whose header says it holds `want` bytes in
 * all: read at most that many (a header that lies, or a file padded after
 * it, costs no more memory than the data it describes). The trailing-bytes
 * error names the excess when the file is not compressed. */
static int read_idx_bounded(const char *path, size_t want, uint8_t **out, size_t *len,
                            const char *what) {
    int over;
    int rc = read_file(path, out, len, want, 1, &over);
    if (!over) return rc;
    struct stat st;
    uint8_t magic[2] = {0, 0};
    FILE *f = fopen(path, "rb");
    const int gz = f && fread(magic, 1, 2, f) == 2 && magic[0] == 0x1f && magic[1] == 0x8b;
    if (f) fclose(f);
    if (!gz && stat(path, &st) == 0 && (uint64_t)st.st_size > want)
        return vae_error_set(VAE_EINVAL,
                             "%s: %llu trailing bytes: %s (%zu bytes) but file has %llu bytes", path,
                             (unsigned long long)((uint64_t)st.st_size - want), what, want,
                             (unsigned long long)st.st_size);
    return vae_error_set(VAE_EINVAL,
                         "%s: trailing bytes: %s (%zu bytes) but the decompressed file is longer",
                         path, what, want);
}

/* ------------------------------------------------------------ IDX */

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* a * b with an overflow check (0 on overflow). */
static int mul_u64(uint64_t a, uint64_t b, uint64_t *r) {
    if (a && b > UINT64_MAX / a) return 0;
    *r = a * b;
    return 1;
}

/* Check the magic of an IDX file of unsigned bytes with `ndims` dimensions:
 * 00 00 08 <ndims>, i.e. 0x00000803 for images [n, rows, cols] and
 * 0x00000801 for labels [n]. */
static int idx_check_magic(const char *path, const uint8_t *buf, size_t len, int ndims,
                           const char *what) {
    uint32_t want = 0x00000800u | (uint32_t)ndims;
    size_t header = 4 + 4 * (size_t)ndims;
    if (len == 0) return vae_error_set(VAE_EINVAL, "%s: empty file; expected IDX %s", path, what);
    if (len < 4)
        return vae_error_set(VAE_EINVAL,
                             "%s: truncated: %zu bytes, shorter than the %zu-byte IDX %s header",
                             path, len, header, what);
    uint32_t magic = be32(buf);
    if (magic != want) {
        if ((magic & 0xFFFFFF00u) == 0x00000800u)
            return vae_error_set(VAE_EINVAL,
                                 "%s: bad magic 0x%08x: IDX file with %u dimensions, expected "
                                 "0x%08x (IDX %s, %d dimensions)",
                                 path, magic, magic & 0xFFu, want, what, ndims);
        return vae_error_set(VAE_EINVAL,
                             "%s: bad magic 0x%08x, expected 0x%08x (IDX %s); not an "
                             "uncompressed or gzipped IDX file?",
                             path, magic, want, what);
    }
    if (len < header)
        return vae_error_set(VAE_EINVAL,
                             "%s: truncated: %zu bytes, shorter than the %zu-byte IDX %s header",
                             path, len, header, what);
    return VAE_OK;
}

/* The bytes an IDX images file with this 16-byte header holds in all, or 0
 * when the header is not a valid one (the full read then says why). */
static size_t idx_images_bytes(const uint8_t *h, size_t n) {
    if (n < 16 || be32(h) != 0x00000803u) return 0;
    const uint64_t c = be32(h + 4), r = be32(h + 8), w = be32(h + 12);
    if (c == 0 || c > VAE_DATA_MAX_IMAGES || r == 0 || w == 0 || r > VAE_DATA_MAX_DIM ||
        w > VAE_DATA_MAX_DIM)
        return 0;
    const uint64_t want = 16 + c * r * w; /* <= 1e8 * 4096^2: no overflow */
    return want <= DATA_FILE_LIMIT ? (size_t)want : 0;
}

int vae_load_idx(vae_dataset *ds, const char *images_path, const char *labels_path) {
    memset(ds, 0, sizeof *ds);
    uint8_t *img = NULL, *lab = NULL;
    size_t ilen = 0, llen = 0;
    /* read no more than the header describes (when it is valid) */
    uint8_t head[16];
    const size_t iwant = idx_images_bytes(head, read_head(images_path, head, sizeof head));
    char what[160];
    if (iwant)
        snprintf(what, sizeof what, "header says %u images of %ux%u", be32(head + 4), be32(head + 8),
                 be32(head + 12));
    int rc = iwant ? read_idx_bounded(images_path, iwant, &img, &ilen, what)
                   : vae_read_file(images_path, &img, &ilen, DATA_FILE_LIMIT);
    if (rc) return rc;
    rc = idx_check_magic(images_path, img, ilen, 3, "images");
    if (rc) goto fail;

    uint32_t n = be32(img + 4), rows = be32(img + 8), cols = be32(img + 12);
    if (n == 0) {
        rc = vae_error_set(VAE_EINVAL, "%s: header says 0 images; expected at least 1", images_path);
        goto fail;
    }
    if (n > VAE_DATA_MAX_IMAGES) {
        rc = vae_error_set(VAE_EINVAL, "%s: header says %u images, more than the limit of %d",
                           images_path, n, VAE_DATA_MAX_IMAGES);
        goto fail;
    }
    if (rows == 0 || cols == 0 || rows > VAE_DATA_MAX_DIM || cols > VAE_DATA_MAX_DIM) {
        rc = vae_error_set(VAE_EINVAL, "%s: header says images of %ux%u; each side must be 1..%d",
                           images_path, rows, cols, VAE_DATA_MAX_DIM);
        goto fail;
    }
    uint64_t per, body, want;
    if (!mul_u64(rows, cols, &per) || !mul_u64(per, n, &body) || body > UINT64_MAX - 16) {
        rc = vae_error_set(VAE_EINVAL, "%s: header sizes overflow (%u images of %ux%u)",
                           images_path, n, rows, cols);
        goto fail;
    }
    want = 16 + body;
    if ((uint64_t)ilen < want) {
        rc = vae_error_set(VAE_EINVAL,
                           "%s: truncated: header says %u images of %ux%u (%llu bytes) but file "
                           "has %zu bytes",
                           images_path, n, rows, cols, (unsigned long long)want, ilen);
        goto fail;
    }
    if ((uint64_t)ilen > want) {
        rc = vae_error_set(VAE_EINVAL,
                           "%s: %llu trailing bytes: header says %u images of %ux%u (%llu bytes) "
                           "but file has %zu bytes",
                           images_path, (unsigned long long)((uint64_t)ilen - want), n, rows, cols,
                           (unsigned long long)want, ilen);
        goto fail;
    }

    if (labels_path) {
        const size_t nh = read_head(labels_path, head, 8);
        const uint64_t lwant =
            nh == 8 && be32(head) == 0x00000801u ? 8 + (uint64_t)be32(head + 4) : 0;
        if (lwant && lwant <= 8 + (uint64_t)VAE_DATA_MAX_IMAGES) {
            snprintf(what, sizeof what, "header says %u labels", be32(head + 4));
            rc = read_idx_bounded(labels_path, (size_t)lwant, &lab, &llen, what);
        } else {
            rc = vae_read_file(labels_path, &lab, &llen, DATA_FILE_LIMIT);
        }
        if (rc) goto fail;
        rc = idx_check_magic(labels_path, lab, llen, 1, "labels");
        if (rc) goto fail;
        uint32_t nl = be32(lab + 4);
        if ((uint64_t)llen != 8 + (uint64_t)nl) {
            rc = vae_error_set(VAE_EINVAL,
                               "%s: %s: header says %u labels (%llu bytes) but file has %zu bytes",
                               labels_path, (uint64_t)llen < 8 + (uint64_t)nl ? "truncated" : "trailing bytes",
                               nl, (unsigned long long)(8 + (uint64_t)nl), llen);
            goto fail;
        }
        if (nl != n) {
            rc = vae_error_set(VAE_EINVAL, "%s: has %u labels but %s has %u images", labels_path, nl,
                               images_path, n);
            goto fail;
        }
        /* Labels are any byte value; keep them in place without the header. */
        memmove(lab, lab + 8, nl);
        uint8_t *shrunk = realloc(lab, nl);
        if (shrunk) lab = shrunk;
    }

    /* Drop the 16-byte header in place: the body is exactly n*rows*cols. */
    memmove(img, img + 16, (size_t)body);
    uint8_t *shrunk = realloc(img, (size_t)body);
    if (shrunk) img = shrunk;
    ds->images = img;
    ds->labels = lab;
    ds->n = (int)n;
    ds->c = 1;
    ds->h = (int)rows;
    ds->w = (int)cols;
    return VAE_OK;

fail:
    free(img);
    free(lab);
    return rc;
}

/* ------------------------------------------------------------ CIFAR-10 */

int vae_load_cifar10(vae_dataset *ds, const char *const *paths, int n_paths) {
    memset(ds, 0, sizeof *ds);
    if (n_paths <= 0) return vae_error_set(VAE_EINVAL, "CIFAR-10: no batch files given");
    uint8_t *images = NULL, *labels = NULL;
    size_t total = 0; /* records so far */
    int rc = VAE_OK;
    for (int i = 0; i < n_paths; i++) {
        uint8_t *buf = NULL;
        size_t len = 0;
        rc = vae_read_file(paths[i], &buf, &len, DATA_FILE_LIMIT);
        if (rc) goto fail;
        if (len == 0 || len % CIFAR_RECORD != 0) {
            rc = vae_error_set(VAE_EINVAL,
                               "%s: size %zu bytes is not a positive multiple of the %d-byte "
                               "CIFAR-10 record (1 label byte + 3x32x32 pixels)",
                               paths[i], len, CIFAR_RECORD);
            free(buf);
            goto fail;
        }
        size_t recs = len / CIFAR_RECORD;
        if (recs > (size_t)VAE_DATA_MAX_IMAGES - total) {
            rc = vae_error_set(VAE_EINVAL, "%s: more than %d images in total", paths[i],
                               VAE_DATA_MAX_IMAGES);
            free(buf);
            goto fail;
        }
        for (size_t r = 0; r < recs; r++) {
            uint8_t lab = buf[r * CIFAR_RECORD];
            if (lab > 9) {
                rc = vae_error_set(VAE_EINVAL, "%s: record %zu has label %u; expected 0..9", paths[i],
                                   r, (unsigned)lab);
                free(buf);
                goto fail;
            }
        }
        /* Sizes come from bytes actually read, so these allocations are bounded. */
        uint8_t *ni = realloc(images, (total + recs) * CIFAR_PIXELS);
        if (!ni) {
            rc = vae_error_set(VAE_ENOMEM, "out of host memory allocating %zu bytes",
                               (total + recs) * CIFAR_PIXELS);
            free(buf);
            goto fail;
        }
        images = ni;
        uint8_t *nl = realloc(labels, total + recs);
        if (!nl) {
            rc = vae_error_set(VAE_ENOMEM, "out of host memory allocating %zu bytes", total + recs);
            free(buf);
            goto fail;
        }
        labels = nl;
        /* The record's pixels are already channel-major (R plane, G, B), i.e. CHW. */
        for (size_t r = 0; r < recs; r++) {
            labels[total + r] = buf[r * CIFAR_RECORD];
            memcpy(images + (total + r) * CIFAR_PIXELS, buf + r * CIFAR_RECORD + 1, CIFAR_PIXELS);
        }
        total += recs;
        free(buf);
    }
    ds->images = images;
    ds->labels = labels;
    ds->n = (int)total;
    ds->c = 3;
    ds->h = CIFAR_SIDE;
    ds->w = CIFAR_SIDE;
    return VAE_OK;

fail:
    free(images);
    free(labels);
    return rc;
}

/* ------------------------------------------------------------ locating files */

void vae_data_dir(char *out, size_t len, const char *flag) {
    const char *env = getenv("VAE_DATA_DIR");
    const char *d = flag && *flag ? flag : env && *env ? env : "data";
    if (len) snprintf(out, len, "%s", d);
}

/* 1: p is a regular file; 0: no such file there; 2: something else is
 * there (a folder: some downloads put each file in a folder of its name);
 * -1, with the error set naming p: it cannot be looked at (a folder on the
 * way not searchable, ...). */
static int probe_file(const char *p) {
    struct stat st;
    if (stat(p, &st) == 0) return S_ISREG(st.st_mode) ? 1 : 2;
    if (errno == ENOENT || errno == ENOTDIR) return 0;
    return vae_error_set(VAE_EIO, "%s: %s", p, strerror(errno)), -1;
}

/* out = a "/" b (or b itself when absolute); 0 if it does not fit. */
static int join(char *out, size_t cap, const char *a, const char *b) {
    int n = b[0] == '/' ? snprintf(out, cap, "%s", b) : snprintf(out, cap, "%s/%s", a, b);
    return n >= 0 && (size_t)n < cap;
}

#define PATH_CAP 4096

/* `name` or `name`.gz in folder d (uncompressed wins when both exist: it
 * loads faster): 1 and out filled when found, 0 when not (a folder of that
 * name is passed over), -1 on an error (set) that keeps us from looking. */
static int find_here(char *out, const char *d, const char *name) {
    char base[PATH_CAP], cand[PATH_CAP];
    if (!join(base, sizeof base, d, name)) return 0;
    const char *ext[2] = {"", ".gz"};
    for (int e = 0; e < 2; e++) {
        int n = snprintf(cand, sizeof cand, "%s%s", base, ext[e]);
        if (n < 0 || (size_t)n >= sizeof cand) continue;
        int r = probe_file(cand);
        if (r < 0) return -1;
        if (r != 1) continue;
        memcpy(out, cand, (size_t)n + 1);
        return 1;
    }
    return 0;
}

/* `name` (or .gz) in dir/sub, then in dir; as find_here. *where (when not
 * NULL) is then dir/sub or dir, the folder it was found in. */
static int find_in(char *out, const char *dir, const char *sub, const char *name, char *where) {
    const char *dirs[2] = {NULL, dir};
    char subdir[PATH_CAP];
    if (sub && join(subdir, sizeof subdir, dir, sub)) dirs[0] = subdir;
    for (int d = 0; d < 2; d++) {
        if (!dirs[d]) continue;
        int r = find_here(out, dirs[d], name);
        if (r && where) snprintf(where, PATH_CAP, "%s", dirs[d]);
        if (r) return r;
    }
    return 0;
}

static int load_mnist(vae_dataset *ds, const char *dir, int train, char *shown, size_t shown_len) {
    const char *img_name = train ? "train-images-idx3-ubyte" : "t10k-images-idx3-ubyte";
    const char *lab_name = train ? "train-labels-idx1-ubyte" : "t10k-labels-idx1-ubyte";
    char img[PATH_CAP], lab[PATH_CAP];
    int found = find_in(img, dir, "mnist", img_name, NULL);
    if (found < 0) return VAE_EIO;
    if (!found)
        return vae_error_set(VAE_ENOTFOUND,
                             "MNIST %s images not found: looked for %s and %s.gz in %s/mnist and "
                             "in %s; run scripts/get-data.sh mnist (or scripts/get-data.sh mnist "
                             "--from DIR), or point --data / VAE_DATA_DIR at the folder that holds them",
                             train ? "training" : "test", img_name, img_name, dir, dir);
    /* Labels are not needed to train a VAE; they are loaded when present
     * (and looked for no further where the search fails). */
    int have_lab = find_in(lab, dir, "mnist", lab_name, NULL) == 1;
    snprintf(shown, shown_len, "%s", img);
    return vae_load_idx(ds, img, have_lab ? lab : NULL);
}

static int load_cifar(vae_dataset *ds, const char *dir, int train, char *shown, size_t shown_len) {
    static const char *const train_names[5] = {"data_batch_1.bin", "data_batch_2.bin",
                                               "data_batch_3.bin", "data_batch_4.bin",
                                               "data_batch_5.bin"};
    static const char *const test_names[1] = {"test_batch.bin"};
    const char *const *names = train ? train_names : test_names;
    const int count = train ? 5 : 1;
    const char *what = train ? "training batches (data_batch_1.bin .. data_batch_5.bin)"
                             : "test batch (test_batch.bin)";
    char where[PATH_CAP], paths[5][PATH_CAP];
    /* the folder is the one that holds the first; the others must be there */
    int found = find_in(paths[0], dir, "cifar-10-batches-bin", names[0], where);
    if (found < 0) return VAE_EIO;
    if (!found)
        return vae_error_set(VAE_ENOTFOUND,
                             "CIFAR-10 %s not found: looked for %s (or .gz) in "
                             "%s/cifar-10-batches-bin and in %s; run scripts/get-data.sh cifar10, "
                             "or point --data / VAE_DATA_DIR at the folder that holds them",
                             what, names[0], dir, dir);
    const char *ptrs[5] = {paths[0]};
    for (int i = 1; i < count; i++) {
        found = find_here(paths[i], where, names[i]);
        if (found < 0) return VAE_EIO;
        if (!found)
            return vae_error_set(VAE_EIO,
                                 "CIFAR-10 %s incomplete: %s holds %s but not %s (or %s.gz); "
                                 "all five are needed",
                                 what, where, names[0], names[i], names[i]);
        ptrs[i] = paths[i];
    }
    snprintf(shown, shown_len, "%s", count == 1 ? paths[0] : where);
    return vae_load_cifar10(ds, ptrs, count);
}

static int load_idx_named(vae_dataset *ds, const vae_config *cfg, const char *dir, int train,
                          char *shown, size_t shown_len) {
    const char *name = train ? cfg->train_images : cfg->test_images;
    if (!name[0])
        return vae_error_set(VAE_EINVAL, "%s: [data] %s is not set; dataset = idx needs it",
                             cfg->path[0] ? cfg->path : "config",
                             train ? "train_images" : "test_images");
    char path[PATH_CAP];
    if (!join(path, sizeof path, dir, name))
        return vae_error_set(VAE_EINVAL, "%s/%s: data path too long", dir, name);
    int found = probe_file(path);
    if (found < 0) return VAE_EIO;
    if (found == 2) return vae_error_set(VAE_EIO, "%s: not a regular file", path);
    if (!found)
        return vae_error_set(VAE_ENOTFOUND, "%s: no such file (the config's [data] %s, in %s)",
                             path, train ? "train_images" : "test_images", dir);
    snprintf(shown, shown_len, "%s", path);
    return vae_load_idx(ds, path, NULL);
}

int vae_dataset_load(vae_dataset *ds, const vae_config *cfg, const char *dir, int train) {
    memset(ds, 0, sizeof *ds);
    if (!dir || !*dir) dir = "data";
    char shown[PATH_CAP]; /* the file (or folder) named in a shape mismatch */
    shown[0] = 0;
    int rc;
    switch (cfg->dataset) {
    case VAE_DATA_MNIST: rc = load_mnist(ds, dir, train, shown, sizeof shown); break;
    case VAE_DATA_CIFAR10: rc = load_cifar(ds, dir, train, shown, sizeof shown); break;
    case VAE_DATA_IDX: rc = load_idx_named(ds, cfg, dir, train, shown, sizeof shown); break;
    default: return vae_error_set(VAE_EINVAL, "unknown dataset kind %d", (int)cfg->dataset);
    }
    if (rc) return rc;
    if (ds->c != cfg->input.c || ds->h != cfg->input.h || ds->w != cfg->input.w) {
        rc = vae_error_set(VAE_EINVAL, "%s: images are %dx%dx%d but the model's input is %dx%dx%d",
                           shown, ds->c, ds->h, ds->w, cfg->input.c, cfg->input.h, cfg->input.w);
        vae_dataset_free(ds);
        return rc;
    }
    return VAE_OK;
}

void vae_dataset_free(vae_dataset *ds) {
    if (!ds) return;
    free(ds->images);
    free(ds->labels);
    memset(ds, 0, sizeof *ds);
}

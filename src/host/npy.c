/* npy.c — uint8 .npy arrays (NumPy format 1.0), streamed out and read back.
 *
 * File: "\x93NUMPY" | major | minor | u16 LE header length (v1; u32 in v2)
 *       | dict text padded with spaces and ending in '\n' | raw data (C order).
 * The whole preamble (magic + version + length + dict) is a multiple of 64
 * bytes. The writer always uses NPY_HEADER bytes (128): enough for any
 * int64 n and int c, h, w, so rewriting the header with a smaller n on close
 * never changes its length or moves the data.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "vae_data.h"
#include "vae_io.h"

#define NPY_HEADER 128
static const char k_magic[6] = {'\x93', 'N', 'U', 'M', 'P', 'Y'};

/* The full NPY_HEADER-byte preamble for the writer's shape with n rows:
 * uint8 (n, c, h, w) or float32 (n, c). */
static void npy_header(char out[NPY_HEADER], const vae_npy_writer *nw, int64_t n) {
    char dict[NPY_HEADER];
    int len = nw->f32 ? snprintf(dict, sizeof dict,
                                 "{'descr': '<f4', 'fortran_order': False, 'shape': (%" PRId64 ", %d), }",
                                 n, nw->c)
                      : snprintf(dict, sizeof dict,
                                 "{'descr': '|u1', 'fortran_order': False, 'shape': (%" PRId64
                                 ", %d, %d, %d), }",
                                 n, nw->c, nw->h, nw->w);
    /* longest case: 19-digit n and three 10-digit ints -> 110 chars + 10 + '\n' <= 128 */
    VAE_ASSERT(len > 0 && 10 + len + 1 <= NPY_HEADER);
    memset(out, ' ', NPY_HEADER);
    memcpy(out, k_magic, 6);
    out[6] = 1;
    out[7] = 0;
    out[8] = (char)((NPY_HEADER - 10) & 0xFF);
    out[9] = (char)((NPY_HEADER - 10) >> 8);
    memcpy(out + 10, dict, (size_t)len);
    out[NPY_HEADER - 1] = '\n';
}

/* Bytes per row. */
static size_t npy_row_bytes(const vae_npy_writer *nw) {
    return (size_t)nw->c * (size_t)nw->h * (size_t)nw->w * (nw->f32 ? sizeof(float) : 1);
}

static int npy_open(vae_npy_writer *nw, const char *path, int64_t n, int c, int h, int w, int f32) {
    memset(nw, 0, sizeof *nw);
    if (n < 0 || c <= 0 || h <= 0 || w <= 0)
        return vae_error_set(VAE_EINVAL, "%s: bad .npy shape (%" PRId64 ", %d, %d, %d)", path, n, c, h, w);
    int64_t row = (int64_t)c * h * w * (f32 ? 4 : 1); /* < 2^63 for int c, h, w */
    if (n > 0 && row > INT64_MAX / n)
        return vae_error_set(VAE_EINVAL, "%s: .npy shape (%" PRId64 ", %d, %d, %d) overflows", path, n, c,
                             h, w);
    int rc = vae_atomic_open(&nw->af, path);
    if (rc) return rc;
    nw->n_total = n;
    nw->c = c;
    nw->h = h;
    nw->w = w;
    nw->f32 = f32;
    nw->header_len = NPY_HEADER;
    char hdr[NPY_HEADER];
    npy_header(hdr, nw, n);
    rc = vae_atomic_write(&nw->af, hdr, sizeof hdr);
    if (rc) vae_atomic_abort(&nw->af);
    return rc;
}

int vae_npy_open(vae_npy_writer *nw, const char *path, int64_t n, int c, int h, int w) {
    return npy_open(nw, path, n, c, h, w, 0);
}

int vae_npy_open_f32(vae_npy_writer *nw, const char *path, int64_t n, int cols) {
    _Static_assert(sizeof(float) == 4, "float32");
    return npy_open(nw, path, n, cols, 1, 1, 1);
}

/* Appends rows [n_rows, c, h, w] (uint8) or [n_rows, c] (float32, the host's
 * little-endian floats). On error the file stays open: the caller ends with
 * vae_npy_close or vae_atomic_abort(&nw->af). */
int vae_npy_append(vae_npy_writer *nw, const void *rows, int64_t n_rows) {
    if (n_rows < 0 || n_rows > nw->n_total - nw->n_written)
        return vae_error_set(VAE_EINVAL, "%s: appending %" PRId64 " rows to %" PRId64 " of %" PRId64
                             " would exceed the announced shape", nw->af.path, n_rows, nw->n_written,
                             nw->n_total);
    int rc = vae_atomic_write(&nw->af, rows, (size_t)n_rows * npy_row_bytes(nw));
    if (rc) return rc;
    nw->n_written += n_rows;
    return VAE_OK;
}

int vae_npy_close(vae_npy_writer *nw) {
    vae_atomic_file *af = &nw->af;
    if (!af->f) return vae_error_set(VAE_EIO, "%s: .npy writer is not open", af->path);
    if (nw->n_written < nw->n_total && !af->failed) {
        char hdr[NPY_HEADER];
        npy_header(hdr, nw, nw->n_written);
        if (fseek(af->f, 0, SEEK_SET) != 0) {
            int e = errno;
            vae_atomic_abort(af);
            return vae_error_set(VAE_EIO, "%s: %s (rewriting the .npy header)", af->path, strerror(e));
        }
        vae_atomic_write(af, hdr, sizeof hdr); /* failure is recorded and reported by commit */
    }
    return vae_atomic_commit(af);
}

/* ---------------------------------------------------------------- reader */

typedef struct {
    const char *p, *end;
} cursor;

static void skip_ws(cursor *c) {
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r')) c->p++;
}

static int eat(cursor *c, char ch) {
    skip_ws(c);
    if (c->p < c->end && *c->p == ch) {
        c->p++;
        return 1;
    }
    return 0;
}

/* A Python string literal in '' or "" (no escapes needed for our keys). */
static int parse_str(cursor *c, char *out, size_t cap) {
    skip_ws(c);
    if (c->p >= c->end || (*c->p != '\'' && *c->p != '"')) return 0;
    char q = *c->p++;
    size_t n = 0;
    while (c->p < c->end && *c->p != q) {
        if (*c->p == '\\' || n + 1 >= cap) return 0;
        out[n++] = *c->p++;
    }
    if (c->p >= c->end) return 0;
    c->p++;
    out[n] = 0;
    return 1;
}

static int starts(cursor *c, const char *word) {
    skip_ws(c);
    size_t n = strlen(word);
    if ((size_t)(c->end - c->p) >= n && memcmp(c->p, word, n) == 0) {
        c->p += n;
        return 1;
    }
    return 0;
}

/* Snippet of the text at the cursor, for messages. */
static const char *near(const cursor *c, char buf[24]) {
    size_t n = (size_t)(c->end - c->p) < 20 ? (size_t)(c->end - c->p) : 20;
    for (size_t i = 0; i < n; i++) buf[i] = (c->p[i] >= 0x20 && c->p[i] < 0x7f) ? c->p[i] : '?';
    buf[n] = 0;
    return buf;
}

int vae_npy_read_u8(const char *path, uint8_t **data, int64_t *shape, int *ndim) {
    *data = NULL;
    *ndim = 0;
    uint8_t *buf;
    size_t len;
    int rc = vae_read_file_raw(path, &buf, &len, (size_t)1 << 40);
    if (rc) return rc;
    rc = VAE_EINVAL;
#define FAIL(...)                                                                                  \
    do {                                                                                           \
        rc = vae_error_set(VAE_EINVAL, __VA_ARGS__);                                               \
        goto fail;                                                                                 \
    } while (0)
    if (len < 10 || memcmp(buf, k_magic, 6) != 0) FAIL("%s: not a .npy file (bad magic)", path);
    size_t hstart, hlen;
    if (buf[6] == 1 && buf[7] == 0) {
        hstart = 10;
        hlen = (size_t)buf[8] | (size_t)buf[9] << 8;
    } else if (buf[6] == 2 && buf[7] == 0) {
        if (len < 12) FAIL("%s: .npy file truncated in its preamble", path);
        hstart = 12;
        hlen = (size_t)buf[8] | (size_t)buf[9] << 8 | (size_t)buf[10] << 16 | (size_t)buf[11] << 24;
    } else {
        FAIL("%s: unsupported .npy format version %d.%d (1.0 and 2.0 are read)", path, buf[6], buf[7]);
    }
    if (hlen > len - hstart)
        FAIL("%s: .npy header length %zu exceeds the file (%zu bytes)", path, hlen, len);

    cursor c = {(const char *)buf + hstart, (const char *)buf + hstart + hlen};
    char key[32], val[32], snip[24];
    int have_descr = 0, have_order = 0, have_shape = 0;
    int64_t shp[4];
    int nd = 0;
    if (!eat(&c, '{')) FAIL("%s: .npy header is not a dict (near '%s')", path, near(&c, snip));
    while (!eat(&c, '}')) {
        if (!parse_str(&c, key, sizeof key))
            FAIL("%s: .npy header: expected a key near '%s'", path, near(&c, snip));
        if (!eat(&c, ':')) FAIL("%s: .npy header: expected ':' after '%s'", path, key);
        if (strcmp(key, "descr") == 0 && !have_descr++) {
            if (!parse_str(&c, val, sizeof val))
                FAIL("%s: .npy header: descr is not a string (near '%s')", path, near(&c, snip));
            if (strcmp(val, "|u1") != 0 && strcmp(val, "u1") != 0 && strcmp(val, "<u1") != 0 &&
                strcmp(val, ">u1") != 0)
                FAIL("%s: .npy dtype '%s' is not supported; expected uint8 ('|u1')", path, val);
        } else if (strcmp(key, "fortran_order") == 0 && !have_order++) {
            if (starts(&c, "True")) FAIL("%s: .npy fortran_order True is not supported", path);
            if (!starts(&c, "False"))
                FAIL("%s: .npy header: fortran_order is not True/False (near '%s')", path, near(&c, snip));
        } else if (strcmp(key, "shape") == 0 && !have_shape++) {
            if (!eat(&c, '(')) FAIL("%s: .npy header: shape is not a tuple (near '%s')", path, near(&c, snip));
            while (!eat(&c, ')')) {
                skip_ws(&c);
                if (c.p >= c.end || *c.p < '0' || *c.p > '9')
                    FAIL("%s: .npy shape: expected a non-negative integer near '%s'", path, near(&c, snip));
                int64_t v = 0;
                while (c.p < c.end && *c.p >= '0' && *c.p <= '9') {
                    int dgt = *c.p++ - '0';
                    if (v > (INT64_MAX - dgt) / 10) FAIL("%s: .npy shape dimension %d overflows", path, nd);
                    v = v * 10 + dgt;
                }
                if (nd == 4) FAIL("%s: .npy shape has more than 4 dimensions", path);
                shp[nd++] = v;
                if (!eat(&c, ',')) {
                    if (!eat(&c, ')')) FAIL("%s: .npy shape: expected ',' or ')' near '%s'", path, near(&c, snip));
                    break;
                }
            }
        } else {
            FAIL("%s: .npy header: unexpected or repeated key '%s'", path, key);
        }
        if (!eat(&c, ',')) {
            if (!eat(&c, '}')) FAIL("%s: .npy header: expected ',' or '}' near '%s'", path, near(&c, snip));
            break;
        }
    }
    if (!have_descr || !have_order || !have_shape)
        FAIL("%s: .npy header lacks '%s'", path, !have_descr ? "descr" : !have_order ? "fortran_order" : "shape");
    skip_ws(&c);
    if (c.p != c.end) FAIL("%s: .npy header has trailing text near '%s'", path, near(&c, snip));
    if (nd < 1) FAIL("%s: .npy array is 0-dimensional; 1 to 4 dimensions are supported", path);

    uint64_t count = 1;
    for (int d = 0; d < nd; d++) {
        if (shp[d] && count > (uint64_t)INT64_MAX / (uint64_t)shp[d])
            FAIL("%s: .npy shape product overflows", path);
        count *= (uint64_t)shp[d];
    }
    size_t data_len = len - hstart - hlen;
    if (count != (uint64_t)data_len)
        FAIL("%s: .npy data is %zu bytes but the shape needs %" PRIu64 "%s", path, data_len, count,
             (uint64_t)data_len < count ? " (file truncated?)" : "");
#undef FAIL
    /* hand back the payload alone */
    memmove(buf, buf + hstart + hlen, data_len);
    for (int d = 0; d < nd; d++) shape[d] = shp[d];
    *ndim = nd;
    *data = buf;
    return VAE_OK;
fail:
    free(buf);
    return rc;
}

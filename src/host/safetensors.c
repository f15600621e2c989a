/* safetensors.c — reader and writer for the safetensors format
 * (https://github.com/huggingface/safetensors).
 *
 * Layout:  u64 N (little-endian) | N bytes of UTF-8 JSON | data area
 *   {"__metadata__": {"key": "value", ...},
 *    "name": {"dtype": "F32", "shape": [d0, ...], "data_offsets": [begin, end]}, ...}
 * Offsets are relative to the start of the data area.
 *
 * Writer: tensors are laid out contiguously in the order given; the JSON
 * header is padded with spaces to a multiple of 8 bytes (as the reference
 * implementation does), so the data area starts 8-aligned in the file.
 * Metadata "crc32" holds the decimal zlib CRC-32 of the whole data area.
 *
 * Reader: every promise the header makes is checked before it is used
 * (lengths, JSON, dtypes, shapes, offsets, overlap, CRC). Data pointers point
 * into f->buf. ALIGNMENT: f->buf comes from malloc (>= 16-aligned) and the
 * reader rejects any tensor whose data is not aligned to its element size
 * (file offset 8 + N + begin must be a multiple of it). Files written by
 * vae_st_write or by the reference writers (header padded to 8, tensors
 * ordered by decreasing alignment) always pass, so callers may read
 * t->data directly as float/double/int64 arrays. Gaps between tensors are
 * accepted; overlapping tensors are not.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>
#include <zlib.h>

#include "vae_data.h"
#include "vae_io.h"

#define ST_MAX_HEADER ((uint64_t)100 << 20) /* 100 MiB, as the reference reader */
#define ST_MAX_NDIM 4
#define ST_MAX_EXACT ((uint64_t)1 << 53) /* JSON numbers are doubles in cJSON */

static const struct {
    const char *name;
    size_t size;
} k_dtypes[] = {{"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"I64", 8},
                {"I32", 4}, {"I16", 2}, {"I8", 1},  {"U8", 1},   {"BOOL", 1}};

/* Element size of a dtype name, 0 if unknown. */
static size_t dtype_size(const char *name) {
    for (size_t i = 0; i < sizeof k_dtypes / sizeof k_dtypes[0]; i++)
        if (strcmp(k_dtypes[i].name, name) == 0) return k_dtypes[i].size;
    return 0;
}

/* zlib's crc32 takes a uInt length: feed it in 1 GiB pieces. */
static uint32_t crc32_all(const uint8_t *p, size_t n) {
    uLong c = crc32(0L, Z_NULL, 0);
    while (n) {
        size_t k = n < ((size_t)1 << 30) ? n : ((size_t)1 << 30);
        c = crc32(c, p, (uInt)k);
        p += k;
        n -= k;
    }
    return (uint32_t)c;
}

/* a * b with overflow detection: returns 0 on overflow. */
static int mul_ok(uint64_t a, uint64_t b, uint64_t *out) {
    if (a && b > UINT64_MAX / a) return 0;
    *out = a * b;
    return 1;
}

/* ================================================================ writer */

int vae_st_write(const char *path, const vae_st_tensor *t, int n_t, const vae_st_meta *meta,
                 int n_meta) {
    if (n_t < 0 || n_meta < 0 || (n_t && !t) || (n_meta && !meta))
        return vae_error_set(VAE_EINVAL, "%s: bad tensor or metadata count", path);

    /* Validate every tensor and compute its offsets before writing anything. */
    uint64_t off = 0;
    uint32_t crc = (uint32_t)crc32(0L, Z_NULL, 0);
    for (int i = 0; i < n_t; i++) {
        const vae_st_tensor *x = &t[i];
        size_t nlen = strnlen(x->name, sizeof x->name);
        if (nlen == 0 || nlen == sizeof x->name)
            return vae_error_set(VAE_EINVAL, "%s: tensor %d has an empty or unterminated name", path, i);
        if (strcmp(x->name, "__metadata__") == 0)
            return vae_error_set(VAE_EINVAL, "%s: '__metadata__' cannot be a tensor name", path);
        for (int j = 0; j < i; j++)
            if (strcmp(t[j].name, x->name) == 0)
                return vae_error_set(VAE_EINVAL, "%s: duplicate tensor name '%s'", path, x->name);
        size_t es = strnlen(x->dtype, sizeof x->dtype) < sizeof x->dtype ? dtype_size(x->dtype) : 0;
        if (!es)
            return vae_error_set(VAE_EINVAL, "%s: tensor '%s' has unknown dtype '%.8s'", path, x->name,
                                 x->dtype);
        if (x->ndim < 0 || x->ndim > ST_MAX_NDIM)
            return vae_error_set(VAE_EINVAL, "%s: tensor '%s' has %d dimensions (0..%d supported)", path,
                                 x->name, x->ndim, ST_MAX_NDIM);
        uint64_t count = 1;
        for (int d = 0; d < x->ndim; d++) {
            if (x->shape[d] < 0 || !mul_ok(count, (uint64_t)x->shape[d], &count))
                return vae_error_set(VAE_EINVAL, "%s: tensor '%s' has a negative or overflowing shape",
                                     path, x->name);
        }
        uint64_t bytes;
        if (!mul_ok(count, es, &bytes) || bytes != (uint64_t)x->bytes)
            return vae_error_set(VAE_EINVAL,
                                 "%s: tensor '%s': %zu bytes given, but its shape and dtype %s need %" PRIu64,
                                 path, x->name, x->bytes, x->dtype, count * es);
        if (bytes && !x->data)
            return vae_error_set(VAE_EINVAL, "%s: tensor '%s' has no data", path, x->name);
        /* The header is padded to 8, so the file offset of the tensor is
         * aligned iff its data-area offset is: keep readers' pointers aligned. */
        if (off % es)
            return vae_error_set(VAE_EINVAL,
                                 "%s: tensor '%s' would start at data offset %" PRIu64
                                 ", not a multiple of its %zu-byte element size; order tensors by "
                                 "decreasing element size",
                                 path, x->name, off, es);
        if (bytes > ST_MAX_EXACT - off)
            return vae_error_set(VAE_EINVAL, "%s: tensors exceed 2^53 bytes", path);
        off += bytes;
        /* crc32 over the concatenated data = crc32 of the data area */
        const uint8_t *p = x->data;
        for (uint64_t done = 0; done < bytes;) {
            uint64_t k = bytes - done < ((uint64_t)1 << 30) ? bytes - done : ((uint64_t)1 << 30);
            crc = (uint32_t)crc32(crc, p + done, (uInt)k);
            done += k;
        }
    }
    for (int i = 0; i < n_meta; i++) {
        size_t klen = strnlen(meta[i].key, sizeof meta[i].key);
        if (klen == 0 || klen == sizeof meta[i].key)
            return vae_error_set(VAE_EINVAL, "%s: metadata %d has an empty or unterminated key", path, i);
        if (strcmp(meta[i].key, "crc32") == 0)
            return vae_error_set(VAE_EINVAL, "%s: metadata key 'crc32' is reserved for the checksum", path);
        for (int j = 0; j < i; j++)
            if (strcmp(meta[j].key, meta[i].key) == 0)
                return vae_error_set(VAE_EINVAL, "%s: duplicate metadata key '%s'", path, meta[i].key);
        if (!meta[i].value)
            return vae_error_set(VAE_EINVAL, "%s: metadata '%s' has no value", path, meta[i].key);
    }

    /* Build the header. Integers go in as raw text so that they are exact. */
    cJSON *root = cJSON_CreateObject();
    cJSON *md = root ? cJSON_AddObjectToObject(root, "__metadata__") : NULL;
    int ok = md != NULL;
    char num[32];
    snprintf(num, sizeof num, "%" PRIu32, crc);
    ok = ok && cJSON_AddStringToObject(md, "crc32", num);
    for (int i = 0; ok && i < n_meta; i++)
        ok = cJSON_AddStringToObject(md, meta[i].key, meta[i].value) != NULL;
    off = 0;
    for (int i = 0; ok && i < n_t; i++) {
        const vae_st_tensor *x = &t[i];
        cJSON *o = cJSON_AddObjectToObject(root, x->name);
        cJSON *shape = o ? cJSON_AddArrayToObject(o, "shape") : NULL;
        cJSON *offs = o ? cJSON_AddArrayToObject(o, "data_offsets") : NULL;
        ok = o && shape && offs && cJSON_AddStringToObject(o, "dtype", x->dtype);
        for (int d = 0; ok && d < x->ndim; d++) {
            snprintf(num, sizeof num, "%" PRId64, x->shape[d]);
            cJSON *v = cJSON_CreateRaw(num);
            ok = v && cJSON_AddItemToArray(shape, v);
        }
        for (int k = 0; ok && k < 2; k++) {
            snprintf(num, sizeof num, "%" PRIu64, off + (k ? (uint64_t)x->bytes : 0));
            cJSON *v = cJSON_CreateRaw(num);
            ok = v && cJSON_AddItemToArray(offs, v);
        }
        off += x->bytes;
    }
    char *json = ok ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    if (!json) return vae_error_set(VAE_ENOMEM, "%s: out of memory building the header", path);

    size_t jlen = strlen(json);
    size_t hlen = (jlen + 7) & ~(size_t)7;
    uint8_t lenbuf[8];
    for (int b = 0; b < 8; b++) lenbuf[b] = (uint8_t)((uint64_t)hlen >> (8 * b));
    static const char spaces[8] = "        ";

    vae_atomic_file af;
    int rc = vae_atomic_open(&af, path);
    if (rc) {
        free(json);
        return rc;
    }
    vae_atomic_write(&af, lenbuf, 8);
    vae_atomic_write(&af, json, jlen);
    vae_atomic_write(&af, spaces, hlen - jlen);
    free(json);
    for (int i = 0; i < n_t && !af.failed; i++) vae_atomic_write(&af, t[i].data, t[i].bytes);
    return vae_atomic_commit(&af); /* reports any recorded write failure */
}

/* ================================================================ reader */

void vae_st_free(vae_st_file *f) {
    if (!f) return;
    for (int i = 0; i < f->n_meta; i++) free(f->meta[i].value);
    free(f->meta);
    free(f->t);
    free(f->buf);
    memset(f, 0, sizeof *f);
}

const vae_st_tensor *vae_st_find(const vae_st_file *f, const char *name) {
    for (int i = 0; i < f->n_t; i++)
        if (strcmp(f->t[i].name, name) == 0) return &f->t[i];
    return NULL;
}

const char *vae_st_meta_get(const vae_st_file *f, const char *key) {
    for (int i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta[i].key, key) == 0) return f->meta[i].value;
    return NULL;
}

/* Strict UTF-8 (no overlongs, no surrogates, <= U+10FFFF). Returns the
 * offset of the first bad byte or n. */
static size_t utf8_check(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        size_t k;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) k = 1, cp = c & 0x1F;
        else if ((c & 0xF0) == 0xE0) k = 2, cp = c & 0x0F;
        else if ((c & 0xF8) == 0xF0) k = 3, cp = c & 0x07;
        else return i;
        if (n - i <= k) return i;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xC0) != 0x80) return i;
            cp = (cp << 6) | (s[i + j] & 0x3F);
        }
        static const uint32_t min_cp[4] = {0, 0x80, 0x800, 0x10000};
        if (cp < min_cp[k] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
        i += k + 1;
    }
    return n;
}

/* A JSON number that is a non-negative integer below 2^53 (exact in a double).
 * Returns 1 and *out, or 0 with *neg set when it was negative. */
static int json_uint(const cJSON *v, uint64_t *out, int *neg) {
    *neg = 0;
    if (!cJSON_IsNumber(v)) return 0;
    double d = v->valuedouble;
    if (d != d) return 0; /* NaN (cJSON never makes one, but be safe) */
    if (d < 0) {
        *neg = 1;
        return 0;
    }
    if (d >= (double)ST_MAX_EXACT) return 0;
    uint64_t u = (uint64_t)d;
    if ((double)u != d) return 0; /* not an integer */
    *out = u;
    return 1;
}

typedef struct {
    uint64_t begin, end;
    int idx;
} st_span;

static int cmp_span(const void *a, const void *b) {
    const st_span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

static int cmp_name(const void *a, const void *b) {
    const vae_st_tensor *const *x = a, *const *y = b;
    return strcmp((*x)->name, (*y)->name);
}

/* Parse and validate `buf` (ownership passes to f on success and failure). */
static int st_parse_owned(vae_st_file *f, uint8_t *buf, size_t len, const char *name) {
    memset(f, 0, sizeof *f);
    f->buf = buf;
    f->len = len;
    cJSON *root = NULL;
    st_span *spans = NULL;
    const vae_st_tensor **sorted = NULL;
    int rc = VAE_EINVAL;
#define FAIL(...)                                                                                  \
    do {                                                                                           \
        rc = vae_error_set(VAE_EINVAL, __VA_ARGS__);                                               \
        goto fail;                                                                                 \
    } while (0)

    if (len < 8) FAIL("%s: file is %zu bytes, too short for a safetensors header", name, len);
    uint64_t n = 0;
    for (int b = 0; b < 8; b++) n |= (uint64_t)buf[b] << (8 * b);
    if (n > ST_MAX_HEADER)
        FAIL("%s: header length %" PRIu64 " is over the %" PRIu64 " MiB limit (corrupted or not a "
             "safetensors file)", name, n, ST_MAX_HEADER >> 20);
    if (n > len - 8)
        FAIL("%s: header length %" PRIu64 " exceeds the file (%zu bytes after the length field; "
             "truncated?)", name, n, len - 8);
    if (n < 2) FAIL("%s: header length %" PRIu64 " is too short for a JSON object", name, n);
    const uint8_t *hdr = buf + 8;
    const uint8_t *data = buf + 8 + n;
    const size_t data_len = len - 8 - (size_t)n;

    size_t bad = utf8_check(hdr, (size_t)n);
    if (bad != n) FAIL("%s: header is not valid UTF-8 (byte %zu)", name, bad);
    for (size_t i = 0; i < n; i++)
        if (hdr[i] < 0x20 && hdr[i] != '\t' && hdr[i] != '\n' && hdr[i] != '\r')
            FAIL("%s: header contains control byte 0x%02x at offset %zu", name, hdr[i], i);

    const char *end = NULL;
    root = cJSON_ParseWithLengthOpts((const char *)hdr, (size_t)n, &end, 0);
    if (!root) {
        size_t at = end && end >= (const char *)hdr ? (size_t)(end - (const char *)hdr) : 0;
        const char *e = cJSON_GetErrorPtr();
        if (e && e >= (const char *)hdr && e <= (const char *)hdr + n) at = (size_t)(e - (const char *)hdr);
        FAIL("%s: header is not valid JSON (error near byte %zu of %" PRIu64 ")", name, at, n);
    }
    for (const char *p = end; p < (const char *)hdr + n; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r')
            FAIL("%s: header has trailing bytes after the JSON value (offset %zu)", name,
                 (size_t)(p - (const char *)hdr));
    if (!cJSON_IsObject(root)) FAIL("%s: header is not a JSON object", name);

    /* count entries */
    int n_t = 0, n_meta = 0, have_md = 0;
    for (const cJSON *e = root->child; e; e = e->next) {
        if (strcmp(e->string, "__metadata__") == 0) {
            if (have_md++) FAIL("%s: header has two '__metadata__' entries", name);
            if (!cJSON_IsObject(e)) FAIL("%s: '__metadata__' is not an object", name);
            for (const cJSON *m = e->child; m; m = m->next) {
                if (n_meta == INT32_MAX) FAIL("%s: too many metadata entries", name);
                n_meta++;
            }
        } else {
            if (n_t == INT32_MAX) FAIL("%s: too many tensors", name);
            n_t++;
        }
    }
    f->t = vae_calloc((size_t)n_t, sizeof *f->t);
    f->meta = vae_calloc((size_t)n_meta, sizeof *f->meta);
    spans = vae_malloc((size_t)n_t + 1, sizeof *spans);
    sorted = vae_malloc((size_t)n_t + 1, sizeof *sorted);
    if (!f->t || !f->meta || !spans || !sorted) {
        rc = vae_error_prefix(VAE_ENOMEM, "%s", name);
        goto fail;
    }

    /* metadata: string -> string */
    const cJSON *md = cJSON_GetObjectItemCaseSensitive(root, "__metadata__");
    for (const cJSON *m = md ? md->child : NULL; m; m = m->next) {
        vae_st_meta *dst = &f->meta[f->n_meta];
        size_t klen = strlen(m->string);
        if (klen >= sizeof dst->key)
            FAIL("%s: metadata key '%.40s...' is too long (%zu bytes; at most %zu)", name, m->string,
                 klen, sizeof dst->key - 1);
        if (!cJSON_IsString(m) || !m->valuestring)
            FAIL("%s: metadata '%s' is not a string", name, m->string);
        for (int j = 0; j < f->n_meta; j++)
            if (strcmp(f->meta[j].key, m->string) == 0)
                FAIL("%s: duplicate metadata key '%s'", name, m->string);
        memcpy(dst->key, m->string, klen + 1);
        size_t vlen = strlen(m->valuestring);
        dst->value = vae_malloc(vlen + 1, 1);
        if (!dst->value) {
            rc = vae_error_prefix(VAE_ENOMEM, "%s", name);
            goto fail;
        }
        memcpy(dst->value, m->valuestring, vlen + 1);
        f->n_meta++;
    }

    /* tensors */
    for (const cJSON *e = root->child; e; e = e->next) {
        if (strcmp(e->string, "__metadata__") == 0) continue;
        vae_st_tensor *x = &f->t[f->n_t];
        const char *tn = e->string;
        size_t tlen = strlen(tn);
        if (tlen == 0) FAIL("%s: a tensor has an empty name", name);
        if (tlen >= sizeof x->name)
            FAIL("%s: tensor name '%.40s...' is too long (%zu bytes; at most %zu)", name, tn, tlen,
                 sizeof x->name - 1);
        memcpy(x->name, tn, tlen + 1);
        if (!cJSON_IsObject(e)) FAIL("%s: tensor '%s' is not a JSON object", name, tn);
        const cJSON *dt = NULL, *sh = NULL, *of = NULL;
        for (const cJSON *k = e->child; k; k = k->next) {
            const cJSON **slot = strcmp(k->string, "dtype") == 0          ? &dt
                                 : strcmp(k->string, "shape") == 0        ? &sh
                                 : strcmp(k->string, "data_offsets") == 0 ? &of
                                                                          : NULL;
            if (!slot) FAIL("%s: tensor '%s' has unknown field '%s'", name, tn, k->string);
            if (*slot) FAIL("%s: tensor '%s' has two '%s' fields", name, tn, k->string);
            *slot = k;
        }
        if (!dt || !sh || !of)
            FAIL("%s: tensor '%s' lacks '%s'", name, tn, !dt ? "dtype" : !sh ? "shape" : "data_offsets");
        if (!cJSON_IsString(dt) || !dt->valuestring) FAIL("%s: tensor '%s': dtype is not a string", name, tn);
        size_t es = strlen(dt->valuestring) < sizeof x->dtype ? dtype_size(dt->valuestring) : 0;
        if (!es) FAIL("%s: tensor '%s' has unknown dtype '%.32s'", name, tn, dt->valuestring);
        memcpy(x->dtype, dt->valuestring, strlen(dt->valuestring) + 1);

        if (!cJSON_IsArray(sh)) FAIL("%s: tensor '%s': shape is not an array", name, tn);
        int nd = cJSON_GetArraySize(sh);
        if (nd > ST_MAX_NDIM)
            FAIL("%s: tensor '%s' has %d dimensions; at most %d are supported", name, tn, nd, ST_MAX_NDIM);
        x->ndim = nd;
        uint64_t count = 1;
        int d = 0;
        for (const cJSON *v = sh->child; v; v = v->next, d++) {
            uint64_t u;
            int neg;
            if (!json_uint(v, &u, &neg))
                FAIL("%s: tensor '%s': shape[%d] is %s", name, tn, d,
                     neg ? "negative" : "not a non-negative integer below 2^53");
            x->shape[d] = (int64_t)u;
            if (!mul_ok(count, u, &count))
                FAIL("%s: tensor '%s': shape product overflows", name, tn);
        }
        uint64_t need;
        if (!mul_ok(count, es, &need)) FAIL("%s: tensor '%s': byte size overflows", name, tn);

        if (!cJSON_IsArray(of) || cJSON_GetArraySize(of) != 2)
            FAIL("%s: tensor '%s': data_offsets is not a [begin, end] array", name, tn);
        uint64_t be[2];
        int k = 0;
        for (const cJSON *v = of->child; v; v = v->next, k++) {
            int neg;
            if (!json_uint(v, &be[k], &neg))
                FAIL("%s: tensor '%s': data_offsets[%d] is %s", name, tn, k,
                     neg ? "negative" : "not a non-negative integer below 2^53");
        }
        if (be[0] > be[1])
            FAIL("%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] has begin > end", name, tn,
                 be[0], be[1]);
        if (be[1] > data_len)
            FAIL("%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] lie outside the data area "
                 "(%zu bytes; file truncated?)", name, tn, be[0], be[1], data_len);
        if (be[1] - be[0] != need)
            FAIL("%s: tensor '%s': data_offsets span %" PRIu64 " bytes but shape and dtype %s need %" PRIu64,
                 name, tn, be[1] - be[0], x->dtype, need);
        uint64_t file_off = 8 + n + be[0];
        if (need && file_off % es)
            FAIL("%s: tensor '%s' starts at file offset %" PRIu64 ", not aligned to its %zu-byte "
                 "elements", name, tn, file_off, es);
        x->data = data + be[0];
        x->bytes = (size_t)need;
        spans[f->n_t] = (st_span){be[0], be[1], f->n_t};
        sorted[f->n_t] = x;
        f->n_t++;
    }

    /* no two tensors share a name or a byte (empty tensors occupy no bytes) */
    qsort(sorted, (size_t)f->n_t, sizeof *sorted, cmp_name);
    for (int i = 1; i < f->n_t; i++)
        if (strcmp(sorted[i - 1]->name, sorted[i]->name) == 0)
            FAIL("%s: duplicate tensor name '%s'", name, sorted[i]->name);
    qsort(spans, (size_t)f->n_t, sizeof *spans, cmp_span);
    const st_span *prev = NULL;
    for (int i = 0; i < f->n_t; i++) {
        const st_span *s = &spans[i];
        if (s->begin == s->end) continue;
        if (prev && s->begin < prev->end)
            FAIL("%s: tensors '%s' [%" PRIu64 ", %" PRIu64 ") and '%s' [%" PRIu64 ", %" PRIu64 ") overlap",
                 name, f->t[prev->idx].name, prev->begin, prev->end, f->t[s->idx].name, s->begin, s->end);
        prev = s;
    }

    /* the data area is the tensors' bytes and nothing more (safetensors has
     * no padding after the last tensor) */
    uint64_t end_max = 0;
    for (int i = 0; i < f->n_t; i++)
        if (spans[i].end > end_max) end_max = spans[i].end;
    if (end_max < data_len)
        FAIL("%s: %" PRIu64 " bytes after the last tensor's data (file appended to?); expected none",
             name, (uint64_t)data_len - end_max);
    /* checksum, when the writer stored one */
    const char *cs = vae_st_meta_get(f, "crc32");
    if (cs) {
        char *e = NULL;
        errno = 0;
        unsigned long long stored = strtoull(cs, &e, 10);
        if (!*cs || *cs < '0' || *cs > '9' || *e || errno || stored > 0xFFFFFFFFull)
            FAIL("%s: metadata crc32 '%.40s' is not a 32-bit decimal number", name, cs);
        uint32_t got = crc32_all(data, data_len);
        if (got != (uint32_t)stored)
            FAIL("%s: checksum mismatch: tensors are corrupted (stored crc32 %llu, computed %" PRIu32 ")",
                 name, stored, got);
    }
#undef FAIL
    cJSON_Delete(root);
    free(spans);
    free(sorted);
    return VAE_OK;
fail:
    cJSON_Delete(root);
    free(spans);
    free(sorted);
    vae_st_free(f);
    return rc;
}

int vae_st_parse(vae_st_file *f, const uint8_t *data, size_t len, const char *name) {
    memset(f, 0, sizeof *f);
    uint8_t *copy = vae_malloc(len ? len : 1, 1);
    if (!copy) return vae_error_prefix(VAE_ENOMEM, "%s", name);
    if (len) memcpy(copy, data, len);
    return st_parse_owned(f, copy, len, name);
}

int vae_st_read(vae_st_file *f, const char *path) {
    memset(f, 0, sizeof *f);
    uint8_t *buf;
    size_t len;
    int rc = vae_read_file_raw(path, &buf, &len, (size_t)1 << 40);
    if (rc) return rc;
    return st_parse_owned(f, buf, len, path);
}

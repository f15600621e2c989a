/* config.c — the run configuration: INI parsing (inih), per-key checks and
 * shape chaining of the encoder/decoder layer lists.
 *
 * How it reads a file:
 *   - inih (Debian r55) parses the text through ini_parse_stream() with our
 *     own line reader. inih calls the reader once per line and calls the key
 *     handler while it processes that line, so the reader's line counter is
 *     the line of the key being handled (r55 handlers get no line number).
 *   - The reader also checks each line before inih sees it: lines longer than
 *     inih's buffer (ini_max_line - 3 characters), section headers (known
 *     names, each once, closed by ']') and lines that are neither a comment,
 *     a header nor `key = value` (indented continuation lines included:
 *     ini_allow_multiline is off). inih would silently split a long line in
 *     two and accept "[model] junk"; we reject both with the line number.
 *   - The first error is remembered; after it the handler returns 0 and the
 *     reader reports end of input, so parsing stops there.
 *   - Checks that need the whole file (required keys, idx-only keys, shape
 *     chaining) run afterwards and name the line of the key or layer.
 *
 * Everything is parsed into a scratch config that is copied to the caller's
 * only when all checks pass; on error the caller's config is reset to the
 * defaults with text == NULL, so vae_config_free() is always safe.
 *
 * inih's behaviour switches are process-wide globals; they are set before
 * every parse (nothing else in this program uses inih), so parsing is not
 * reentrant across threads.
 */
#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <ini.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vae_config.h"
#include "vae_math.h"

#define CONFIG_MAX_BYTES (1 << 20)  /* 1 MiB: a config is a few hundred bytes */
#define SHAPE_MAX_DIM 65536         /* any one of C, H, W, N */
#define SHAPE_MAX_VALUES (1 << 26)  /* C*H*W of any activation, per sample */
#define MAX_TOKENS 16               /* words in one layer spec */

/* ------------------------------------------------------------ key table */

typedef enum { K_INT, K_U64, K_FLOAT, K_BOOL, K_ENUM, K_SHAPE, K_STRING, K_LAYER } key_type;

typedef struct {
    const char *section, *name;
    key_type type;
    size_t off;                 /* offsetof(vae_config, field) */
    double lo, hi;              /* K_INT: inclusive; K_FLOAT: see lo_open/hi_open */
    int lo_open, hi_open;       /* K_FLOAT: bound excluded (> rather than >=) */
    const char *const *choices; /* K_ENUM: NULL-terminated, index == enum value */
    int required;
} key_def;

static const char *const SECTIONS[] = {"data", "model", "encoder", "decoder", "train", "optim", NULL};
static const char *const DATASETS[] = {"mnist", "cifar10", "idx", NULL};
static const char *const MODEL_TYPES[] = {"vae", "ae", NULL};
static const char *const LIKELIHOODS[] = {"bernoulli", "gaussian", NULL};
static const char *const DEVICES[] = {"auto", "cpu", "cuda", NULL};
static const char *const LR_SCHEDULES[] = {"constant", "cosine", "linear", NULL};
_Static_assert(VAE_LR_CONSTANT == 0 && VAE_LR_COSINE == 1 && VAE_LR_LINEAR == 2,
               "LR_SCHEDULES is indexed by the vae_math.h values");

/* Enum-typed fields are written through an int. */
_Static_assert(sizeof(vae_dataset_kind) == sizeof(int), "enum size");
_Static_assert(sizeof(vae_model_type) == sizeof(int), "enum size");
_Static_assert(sizeof(vae_likelihood) == sizeof(int), "enum size");
_Static_assert(sizeof(vae_device) == sizeof(int), "enum size");

#define OFF(field) offsetof(vae_config, field)
static const key_def KEYS[] = {
    {"data", "dataset", K_ENUM, OFF(dataset), 0, 0, 0, 0, DATASETS, 1},
    {"data", "train_images", K_STRING, OFF(train_images), 0, 0, 0, 0, NULL, 0},
    {"data", "test_images", K_STRING, OFF(test_images), 0, 0, 0, 0, NULL, 0},
    {"model", "type", K_ENUM, OFF(type), 0, 0, 0, 0, MODEL_TYPES, 0},
    {"model", "input", K_SHAPE, OFF(input), 0, 0, 0, 0, NULL, 1},
    {"model", "latent", K_INT, OFF(latent), 1, 4096, 0, 0, NULL, 1},
    {"model", "likelihood", K_ENUM, OFF(likelihood), 0, 0, 0, 0, LIKELIHOODS, 0},
    {"model", "sigma", K_FLOAT, OFF(sigma), 0, INFINITY, 1, 0, NULL, 0},
    {"encoder", "layer", K_LAYER, 0, 0, 0, 0, 0, NULL, 0},
    {"decoder", "layer", K_LAYER, 0, 0, 0, 0, 0, NULL, 0},
    {"train", "epochs", K_INT, OFF(epochs), 1, 1000000, 0, 0, NULL, 0},
    {"train", "batch", K_INT, OFF(batch), 1, 65536, 0, 0, NULL, 0},
    {"train", "seed", K_U64, OFF(seed), 0, 0, 0, 0, NULL, 0},
    {"train", "beta", K_FLOAT, OFF(beta), 0, INFINITY, 0, 0, NULL, 0},
    {"train", "kl_warmup_steps", K_INT, OFF(kl_warmup_steps), 0, 1000000000, 0, 0, NULL, 0},
    {"train", "threads", K_INT, OFF(threads), 0, 1024, 0, 0, NULL, 0},
    {"train", "device", K_ENUM, OFF(device), 0, 0, 0, 0, DEVICES, 0},
    {"train", "checkpoint_every", K_INT, OFF(checkpoint_every), 1, 1000000, 0, 0, NULL, 0},
    {"train", "keep", K_INT, OFF(keep), 0, 1000000, 0, 0, NULL, 0},
    {"optim", "lr", K_FLOAT, OFF(lr), 0, 10, 1, 0, NULL, 0},
    {"optim", "beta1", K_FLOAT, OFF(beta1), 0, 1, 0, 1, NULL, 0},
    {"optim", "beta2", K_FLOAT, OFF(beta2), 0, 1, 0, 1, NULL, 0},
    {"optim", "eps", K_FLOAT, OFF(eps), 0, INFINITY, 1, 0, NULL, 0},
    {"optim", "weight_decay", K_FLOAT, OFF(weight_decay), 0, INFINITY, 0, 0, NULL, 0},
    {"optim", "decoupled_weight_decay", K_BOOL, OFF(decoupled_weight_decay), 0, 0, 0, 0, NULL, 0},
    {"optim", "clip_grad_norm", K_FLOAT, OFF(clip_grad_norm), 0, INFINITY, 0, 0, NULL, 0},
    {"optim", "lr_schedule", K_ENUM, OFF(lr_schedule), 0, 0, 0, 0, LR_SCHEDULES, 0},
    {"optim", "lr_warmup_steps", K_INT, OFF(lr_warmup_steps), 0, 1000000000, 0, 0, NULL, 0},
    {"optim", "min_lr", K_FLOAT, OFF(min_lr), 0, 10, 0, 0, NULL, 0},
};
#undef OFF
#define N_KEYS ((int)(sizeof KEYS / sizeof KEYS[0]))

static int key_index(const char *section, const char *name) {
    for (int i = 0; i < N_KEYS; i++)
        if (!strcmp(KEYS[i].section, section) && !strcmp(KEYS[i].name, name)) return i;
    return -1;
}

/* "epochs, batch, seed, ..." for one section. */
static void key_list(const char *section, char *buf, size_t n) {
    size_t o = 0;
    buf[0] = 0;
    for (int i = 0; i < N_KEYS && o < n; i++)
        if (!strcmp(KEYS[i].section, section))
            o += (size_t)snprintf(buf + o, n - o, "%s%s", o ? ", " : "", KEYS[i].name);
}

/* "mnist, cifar10 or idx" */
static void choice_list(const char *const *c, char *buf, size_t n) {
    size_t o = 0;
    buf[0] = 0;
    for (int i = 0; c[i] && o < n; i++)
        o += (size_t)snprintf(buf + o, n - o, "%s%s", i == 0 ? "" : c[i + 1] ? ", " : " or ", c[i]);
}

/* What a numeric key accepts, e.g. "an integer in 1..65536", "a number > 0 and <= 10". */
static void range_text(const key_def *k, char *buf, size_t n) {
    if (k->type == K_INT) {
        snprintf(buf, n, "an integer in %.0f..%.0f", k->lo, k->hi);
    } else if (k->type == K_U64) {
        snprintf(buf, n, "an integer in 0..18446744073709551615");
    } else if (isinf(k->hi)) {
        snprintf(buf, n, "a number %s %g", k->lo_open ? ">" : ">=", k->lo);
    } else {
        snprintf(buf, n, "a number %s %g and %s %g", k->lo_open ? ">" : ">=", k->lo,
                 k->hi_open ? "<" : "<=", k->hi);
    }
}

static int float_in_range(const key_def *k, double v) {
    if (!isfinite(v)) return 0;
    if (k->lo_open ? !(v > k->lo) : !(v >= k->lo)) return 0;
    if (k->hi_open ? !(v < k->hi) : !(v <= k->hi)) return 0;
    return 1;
}

/* ------------------------------------------------------------ value parsers */

/* Return codes of the number parsers. */
enum { NUM_OK = 0, NUM_EMPTY, NUM_MALFORMED, NUM_RANGE };

/* Decimal integer, whole string, in [lo, hi]. Overflow of long long is NUM_RANGE. */
static int parse_int(const char *s, long long lo, long long hi, long long *out) {
    if (!*s) return NUM_EMPTY;
    if (!(isdigit((unsigned char)*s) || ((*s == '-' || *s == '+') && isdigit((unsigned char)s[1]))))
        return NUM_MALFORMED;
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (*end) return NUM_MALFORMED;
    if (errno == ERANGE || v < lo || v > hi) return NUM_RANGE;
    *out = v;
    return NUM_OK;
}

static int parse_u64(const char *s, uint64_t *out) {
    if (!*s) return NUM_EMPTY;
    if (!isdigit((unsigned char)*s)) return NUM_MALFORMED; /* strtoull would wrap "-1" */
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end) return NUM_MALFORMED;
    if (errno == ERANGE) return NUM_RANGE;
    *out = (uint64_t)v;
    return NUM_OK;
}

/* A finite number that fits a float (checked after rounding to float). */
static int parse_float(const char *s, float *out) {
    if (!*s) return NUM_EMPTY;
    char *end = NULL;
    errno = 0;
    double d = strtod(s, &end);
    if (end == s || *end) return NUM_MALFORMED;
    if (errno == ERANGE) return NUM_RANGE;         /* 1e999, 1e-999 */
    if (isnan(d) || isinf(d)) return NUM_MALFORMED; /* "nan", "inf" */
    if (fabs(d) > FLT_MAX) return NUM_RANGE;
    *out = (float)d;
    return NUM_OK;
}

/* "CxHxW", each dimension 1..65536, C*H*W <= SHAPE_MAX_VALUES. */
static int parse_shape(const char *s, vae_shape *out) {
    long long d[3];
    const char *p = s;
    if (!*s) return NUM_EMPTY;
    for (int i = 0; i < 3; i++) {
        if (!isdigit((unsigned char)*p)) return NUM_MALFORMED;
        char *end = NULL;
        errno = 0;
        d[i] = strtoll(p, &end, 10);
        if (errno == ERANGE) d[i] = LLONG_MAX;
        p = end;
        if (i < 2) {
            if (*p != 'x') return NUM_MALFORMED;
            p++;
        }
    }
    if (*p) return NUM_MALFORMED;
    for (int i = 0; i < 3; i++)
        if (d[i] < 1 || d[i] > SHAPE_MAX_DIM) return NUM_RANGE;
    if (d[0] * d[1] * d[2] > SHAPE_MAX_VALUES) return NUM_RANGE;
    out->c = (int)d[0];
    out->h = (int)d[1];
    out->w = (int)d[2];
    return NUM_OK;
}

static int parse_bool(const char *s, int *out) {
    if (!strcmp(s, "true") || !strcmp(s, "yes") || !strcmp(s, "1")) *out = 1;
    else if (!strcmp(s, "false") || !strcmp(s, "no") || !strcmp(s, "0")) *out = 0;
    else return NUM_MALFORMED;
    return NUM_OK;
}

/* "64x7x7", or "784 (flat)" for {784, 1, 1}. */
static const char *shape_str(vae_shape s, char *buf, size_t n) {
    if (s.h == 1 && s.w == 1) snprintf(buf, n, "%d (flat)", s.c);
    else snprintf(buf, n, "%dx%dx%d", s.c, s.h, s.w);
    return buf;
}

/* ------------------------------------------------------------ parse state */

typedef struct {
    vae_config *cfg;   /* scratch config being filled */
    const char *name;  /* file name for messages */
    const char *text;  /* whole text */
    const char *pos;   /* next unread byte */
    int line;          /* line most recently handed to inih */
    int err;           /* first error (VAE_EINVAL/...), 0 while none */
    int key_line[sizeof KEYS / sizeof KEYS[0]]; /* where each key was (first) set; 0 = unset */
    int section_line[sizeof SECTIONS / sizeof SECTIONS[0]];
} parse_state;

/* Record the first error as "<name>:<line>: <msg>" (no line when line == 0).
 * Returns 0, the inih handler's "stop" value. */
static int fail_at(parse_state *st, int line, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
static int fail_at(parse_state *st, int line, const char *fmt, ...) {
    if (st->err) return 0;
    char msg[1536];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (line > 0) vae_error_set(VAE_EINVAL, "%s:%d: %s", st->name, line, msg);
    else vae_error_set(VAE_EINVAL, "%s: %s", st->name, msg);
    st->err = VAE_EINVAL;
    return 0;
}
#define FAIL(...) fail_at(st, st->line, __VA_ARGS__)

static int section_index(const char *s, size_t len) {
    for (int i = 0; SECTIONS[i]; i++)
        if (strlen(SECTIONS[i]) == len && !strncmp(SECTIONS[i], s, len)) return i;
    return -1;
}

/* ------------------------------------------------------------ line reader */

/* inih's ini_reader: hands out one line of st->text per call (fgets-style,
 * keeping the '\n'), after checking it. Returns NULL at the end of the text
 * or once an error is recorded, which ends ini_parse_stream(). */
static char *read_line(char *str, int num, void *stream) {
    parse_state *st = stream;
    if (st->err || !*st->pos) return NULL;
    const char *p = st->pos;
    const char *nl = strchr(p, '\n');
    size_t len = nl ? (size_t)(nl - p) + 1 : strlen(p);
    st->pos = p + len;
    st->line++;

    /* Content without the line ending. inih needs room for "\r\n\0". */
    size_t content = len;
    if (content && p[content - 1] == '\n') content--;
    if (content && p[content - 1] == '\r') content--;
    size_t max_content = num > 3 ? (size_t)num - 3 : 0;
    if (content > max_content) {
        FAIL("line is %zu characters long; expected at most %zu characters per line", content,
             max_content);
        return NULL;
    }

    /* Classify the line the way inih will, but with useful messages. */
    const char *s = p, *e = p + content;
    if (st->line == 1 && content >= 3 && !memcmp(s, "\xEF\xBB\xBF", 3)) s += 3; /* UTF-8 BOM */
    const char *t = s;
    while (t < e && isspace((unsigned char)*t)) t++;
    if (t == e || *t == ';' || *t == '#') {
        /* blank or comment */
    } else if (*t == '[') {
        const char *c = t + 1;
        while (c < e && *c != ']' && !(*c == ';' && isspace((unsigned char)c[-1]))) c++;
        if (c == e || *c != ']') {
            FAIL("section header '%.*s' has no closing ']'; expected '[name]'", (int)(e - t), t);
            return NULL;
        }
        const char *rest = c + 1;
        while (rest < e && isspace((unsigned char)*rest)) rest++;
        if (rest < e && *rest != ';' && *rest != '#') {
            FAIL("unexpected '%.*s' after the section header; expected nothing or a ';' comment",
                 (int)(e - rest), rest);
            return NULL;
        }
        int si = section_index(t + 1, (size_t)(c - t - 1));
        if (si < 0) {
            FAIL("unknown section [%.*s]; expected one of [data], [model], [encoder], [decoder], "
                 "[train], [optim]", (int)(c - t - 1), t + 1);
            return NULL;
        }
        if (st->section_line[si]) {
            FAIL("section [%s] appears again (first on line %d); expected each section once",
                 SECTIONS[si], st->section_line[si]);
            return NULL;
        }
        st->section_line[si] = st->line;
    } else {
        const char *c = t;
        while (c < e && *c != '=' && *c != ':' && !(*c == ';' && isspace((unsigned char)c[-1]))) c++;
        if (c == e || *c == ';') {
            FAIL("cannot parse '%.*s'%s; expected 'key = value', a [section] header or a ';' comment",
                 (int)(e - t), t,
                 t > s ? " (indented continuation lines are not supported)" : "");
            return NULL;
        }
    }

    size_t n = len < (size_t)num - 1 ? len : (size_t)num - 1;
    memcpy(str, p, n);
    str[n] = 0;
    return str;
}

/* ------------------------------------------------------------ layer specs */

static const char *const LAYER_NAMES[] = {"dense", "conv", "convT", "relu", "leaky_relu", "flatten",
                                          "reshape"};
static const char *const LAYER_USAGE[] = {
    "'dense N'", "'conv N k=K [stride=S] [pad=P]'",
    "'convT N k=K [stride=S] [pad=P] [out_pad=O]'", "'relu'", "'leaky_relu [slope=A]'",
    "'flatten'", "'reshape CxHxW'"};

const char *vae_layer_kind_name(vae_layer_kind k) {
    if ((unsigned)k < sizeof LAYER_NAMES / sizeof LAYER_NAMES[0]) return LAYER_NAMES[k];
    return "unknown";
}

/* One option's value as an integer in [lo, hi]; *seen guards duplicates. */
static int layer_int_opt(parse_state *st, const char *spec, const char *opt, const char *val,
                         long long lo, long long hi, int *seen, int *out) {
    long long v = 0;
    if (*seen) return FAIL("option '%s=' given twice in '%s'; expected each option once", opt, spec);
    *seen = 1;
    int r = parse_int(val, lo, hi, &v);
    if (r == NUM_EMPTY) return FAIL("option '%s=' has no value in '%s'; expected %s=<integer>", opt, spec, opt);
    if (r == NUM_MALFORMED)
        return FAIL("'%s=%s' is not an integer in '%s'; expected %s in %lld..%lld", opt, val, spec, opt, lo, hi);
    if (r == NUM_RANGE)
        return FAIL("'%s=%s' is out of range in '%s'; expected %s in %lld..%lld", opt, val, spec, opt, lo, hi);
    *out = (int)v;
    return 1;
}

/* Parse one "layer = <spec>" value into *L (line = current line). Returns 1 or 0 (error). */
static int parse_layer(parse_state *st, const char *spec, vae_layer_spec *L) {
    char buf[512];
    char *tok[MAX_TOKENS];
    int n = 0;
    if (strlen(spec) >= sizeof buf) return FAIL("layer spec too long; expected a short spec such as 'dense 128'");
    strcpy(buf, spec);
    for (char *p = strtok(buf, " \t\r\n\v\f"); p; p = strtok(NULL, " \t\r\n\v\f")) {
        if (n == MAX_TOKENS) return FAIL("too many words in layer '%s'; expected at most %d", spec, MAX_TOKENS);
        tok[n++] = p;
    }
    if (n == 0)
        return FAIL("empty layer; expected one of dense, conv, convT, relu, leaky_relu, flatten, reshape");

    int kind = -1;
    for (int i = 0; i < (int)(sizeof LAYER_NAMES / sizeof LAYER_NAMES[0]); i++)
        if (!strcmp(tok[0], LAYER_NAMES[i])) kind = i;
    if (kind < 0)
        return FAIL("unknown layer type '%s'; expected one of dense, conv, convT, relu, leaky_relu, "
                    "flatten, reshape", tok[0]);

    memset(L, 0, sizeof *L);
    L->kind = (vae_layer_kind)kind;
    L->stride = 1;
    L->slope = 0.01f;
    L->line = st->line;
    const char *usage = LAYER_USAGE[kind];
    int has_n = kind == VAE_LAYER_DENSE || kind == VAE_LAYER_CONV || kind == VAE_LAYER_CONVT;
    int is_conv = kind == VAE_LAYER_CONV || kind == VAE_LAYER_CONVT;
    int seen_n = 0, seen_shape = 0, seen_k = 0, seen_stride = 0, seen_pad = 0, seen_op = 0,
        seen_slope = 0;

    for (int i = 1; i < n; i++) {
        char *eq = strchr(tok[i], '=');
        if (!eq) {
            if (has_n && !seen_n) {
                long long v = 0;
                int r = parse_int(tok[i], 1, SHAPE_MAX_DIM, &v);
                const char *what = kind == VAE_LAYER_DENSE ? "features" : "channels";
                if (r == NUM_MALFORMED)
                    return FAIL("'%s' is not an integer in '%s'; expected %s with N (%s) in 1..%d",
                                tok[i], spec, usage, what, SHAPE_MAX_DIM);
                if (r != NUM_OK)
                    return FAIL("%s '%s' is out of range in '%s'; expected N in 1..%d", what, tok[i],
                                spec, SHAPE_MAX_DIM);
                L->out = (int)v;
                seen_n = 1;
            } else if (kind == VAE_LAYER_RESHAPE && !seen_shape) {
                int r = parse_shape(tok[i], &L->reshape);
                if (r == NUM_RANGE)
                    return FAIL("reshape target '%s' is out of range; expected each of C, H, W in "
                                "1..%d and C*H*W <= %d", tok[i], SHAPE_MAX_DIM, SHAPE_MAX_VALUES);
                if (r != NUM_OK)
                    return FAIL("'%s' is not a shape in '%s'; expected %s, e.g. 'reshape 64x7x7'",
                                tok[i], spec, usage);
                seen_shape = 1;
            } else {
                return FAIL("unexpected '%s' in layer '%s'; expected %s", tok[i], spec, usage);
            }
            continue;
        }
        *eq = 0;
        const char *opt = tok[i], *val = eq + 1;
        int ok;
        if (is_conv && !strcmp(opt, "k")) {
            ok = layer_int_opt(st, spec, opt, val, 1, 15, &seen_k, &L->k);
        } else if (is_conv && !strcmp(opt, "stride")) {
            ok = layer_int_opt(st, spec, opt, val, 1, 8, &seen_stride, &L->stride);
        } else if (is_conv && !strcmp(opt, "pad")) {
            ok = layer_int_opt(st, spec, opt, val, 0, 14, &seen_pad, &L->pad);
        } else if (kind == VAE_LAYER_CONVT && !strcmp(opt, "out_pad")) {
            ok = layer_int_opt(st, spec, opt, val, 0, 7, &seen_op, &L->out_pad);
        } else if (kind == VAE_LAYER_LEAKY_RELU && !strcmp(opt, "slope")) {
            float f = 0;
            if (seen_slope) return FAIL("option 'slope=' given twice in '%s'; expected each option once", spec);
            seen_slope = 1;
            int r = parse_float(val, &f);
            if (r != NUM_OK || !(f >= 0.0f && f < 1.0f))
                return FAIL("'slope=%s' %s in '%s'; expected slope a number >= 0 and < 1", val,
                            r == NUM_OK || r == NUM_RANGE ? "is out of range" : "is not a number", spec);
            L->slope = f;
            ok = 1;
        } else {
            return FAIL("unknown option '%s=' in layer '%s'; expected %s", opt, spec, usage);
        }
        if (!ok) return 0;
    }

    if (has_n && !seen_n)
        return FAIL("%s needs its number of %s in '%s'; expected %s", tok[0],
                    kind == VAE_LAYER_DENSE ? "features" : "output channels", spec, usage);
    if (kind == VAE_LAYER_RESHAPE && !seen_shape)
        return FAIL("reshape needs a target shape; expected %s, e.g. 'reshape 64x7x7'", usage);
    if (is_conv && !seen_k) return FAIL("%s needs the kernel size k= in '%s'; expected %s", tok[0], spec, usage);
    if (is_conv && L->pad >= L->k)
        return FAIL("pad=%d is out of range in '%s'; expected pad in 0..%d (less than k=%d)", L->pad,
                    spec, L->k - 1, L->k);
    if (kind == VAE_LAYER_CONVT && L->out_pad >= L->stride)
        return FAIL("out_pad=%d is out of range in '%s'; expected out_pad in 0..%d (less than stride=%d)",
                    L->out_pad, spec, L->stride - 1, L->stride);
    return 1;
}

/* ------------------------------------------------------------ key handler */

static int handle_key(void *user, const char *section, const char *name, const char *value) {
    parse_state *st = user;
    vae_config *cfg = st->cfg;
    char list[512];
    if (st->err) return 0;
    if (!section[0])
        return FAIL("key '%s' is outside any section; expected a [section] header (e.g. [model]) above it", name);
    if (section_index(section, strlen(section)) < 0) /* the reader checked headers already */
        return FAIL("unknown section [%s]; expected one of [data], [model], [encoder], [decoder], "
                    "[train], [optim]", section);
    int ki = key_index(section, name);
    if (ki < 0) {
        key_list(section, list, sizeof list);
        return FAIL("unknown key '%s' in [%s]; expected one of: %s", name, section, list);
    }
    const key_def *k = &KEYS[ki];
    if (k->type != K_LAYER && st->key_line[ki])
        return FAIL("duplicate key '%s' in [%s] (first set on line %d); expected each key once", name,
                    section, st->key_line[ki]);
    if (!st->key_line[ki]) st->key_line[ki] = st->line;

    void *field = (char *)cfg + k->off;
    char expect[128];
    int r;
    /* '#' is not an inline comment in inih; say so when it is the likely cause. */
    const char *hash_hint = strchr(value, '#') ? " (inline comments start with ' ;', not '#')" : "";

    switch (k->type) {
    case K_INT: {
        long long v = 0;
        range_text(k, expect, sizeof expect);
        r = parse_int(value, (long long)k->lo, (long long)k->hi, &v);
        if (r == NUM_EMPTY) return FAIL("[%s] %s has no value; expected %s", section, name, expect);
        if (r == NUM_MALFORMED)
            return FAIL("[%s] %s = '%s' is not an integer%s; expected %s", section, name, value, hash_hint, expect);
        if (r == NUM_RANGE) return FAIL("[%s] %s = %s is out of range; expected %s", section, name, value, expect);
        *(int *)field = (int)v;
        return 1;
    }
    case K_U64: {
        uint64_t v = 0;
        range_text(k, expect, sizeof expect);
        r = parse_u64(value, &v);
        if (r == NUM_EMPTY) return FAIL("[%s] %s has no value; expected %s", section, name, expect);
        if (r == NUM_MALFORMED)
            return FAIL("[%s] %s = '%s' is not an integer%s; expected %s", section, name, value, hash_hint, expect);
        if (r == NUM_RANGE) return FAIL("[%s] %s = %s is out of range; expected %s", section, name, value, expect);
        *(uint64_t *)field = v;
        return 1;
    }
    case K_FLOAT: {
        float v = 0;
        range_text(k, expect, sizeof expect);
        r = parse_float(value, &v);
        if (r == NUM_EMPTY) return FAIL("[%s] %s has no value; expected %s", section, name, expect);
        if (r == NUM_MALFORMED)
            return FAIL("[%s] %s = '%s' is not a finite number%s; expected %s", section, name, value,
                        hash_hint, expect);
        if (r == NUM_RANGE || !float_in_range(k, (double)v))
            return FAIL("[%s] %s = %s is out of range; expected %s", section, name, value, expect);
        *(float *)field = v;
        return 1;
    }
    case K_BOOL: {
        int v = 0;
        if (parse_bool(value, &v) != NUM_OK)
            return FAIL("[%s] %s = '%s' is not a boolean; expected true, false, yes, no, 1 or 0",
                        section, name, value);
        *(int *)field = v;
        return 1;
    }
    case K_ENUM: {
        for (int i = 0; k->choices[i]; i++)
            if (!strcmp(value, k->choices[i])) {
                *(int *)field = i;
                return 1;
            }
        choice_list(k->choices, list, sizeof list);
        return FAIL("[%s] %s = '%s' is not a valid choice; expected %s", section, name, value, list);
    }
    case K_SHAPE: {
        r = parse_shape(value, (vae_shape *)field);
        if (r == NUM_EMPTY)
            return FAIL("[%s] %s has no value; expected a shape CxHxW such as 1x28x28", section, name);
        if (r == NUM_MALFORMED)
            return FAIL("[%s] %s = '%s' is not a shape; expected CxHxW such as 1x28x28", section, name, value);
        if (r == NUM_RANGE)
            return FAIL("[%s] %s = %s is out of range; expected each of C, H, W in 1..%d and "
                        "C*H*W <= %d", section, name, value, SHAPE_MAX_DIM, SHAPE_MAX_VALUES);
        return 1;
    }
    case K_STRING: {
        size_t len = strlen(value);
        if (len == 0) return FAIL("[%s] %s has no value; expected a file name", section, name);
        if (len >= sizeof cfg->train_images)
            return FAIL("[%s] %s is %zu characters long; expected at most %zu", section, name, len,
                        sizeof cfg->train_images - 1);
        memcpy(field, value, len + 1);
        return 1;
    }
    case K_LAYER: {
        int enc = !strcmp(section, "encoder");
        int *count = enc ? &cfg->n_enc : &cfg->n_dec;
        if (*count >= VAE_MAX_LAYERS)
            return FAIL("too many layers in [%s]; expected at most %d", section, VAE_MAX_LAYERS);
        vae_layer_spec *L = enc ? &cfg->enc[*count] : &cfg->dec[*count];
        if (!parse_layer(st, value, L)) return 0;
        (*count)++;
        return 1;
    }
    }
    return FAIL("internal error: unhandled key type");
}

/* ------------------------------------------------------------ shape chaining */

/* Fill in_shape/out_shape of layers L[0..n) starting from `in`. `image` says
 * whether `in` is an image (the model input, or a reshape/conv output) rather
 * than a vector from dense/flatten or the latent: conv layers need one. */
static int chain_shapes(parse_state *st, const char *sec, vae_layer_spec *L, int n, vae_shape in,
                        int image, vae_shape *out) {
    char a[48];
    vae_shape s = in;
    for (int i = 0; i < n; i++) {
        vae_layer_spec *l = &L[i];
        const char *kn = vae_layer_kind_name(l->kind);
        int line = l->line;
        long long c = s.c, h = s.h, w = s.w;
        l->in_shape = s;
        switch (l->kind) {
        case VAE_LAYER_DENSE:
            if (s.h != 1 || s.w != 1)
                return fail_at(st, line, "%s.%d (dense) needs a flat input but gets %s; "
                               "expected a flat input: add 'flatten' before it", sec, i,
                               shape_str(s, a, sizeof a));
            c = l->out;
            image = 0;
            break;
        case VAE_LAYER_CONV:
        case VAE_LAYER_CONVT:
            if (!image)
                return fail_at(st, line, "%s.%d (%s) needs an image input but gets the vector "
                               "%s; expected 'reshape CxHxW' before it", sec, i, kn,
                               shape_str(s, a, sizeof a));
            if (l->kind == VAE_LAYER_CONV) {
                if (h + 2 * l->pad < l->k || w + 2 * l->pad < l->k)
                    return fail_at(st, line, "%s.%d (conv k=%d pad=%d) gets %s, so its output "
                                   "would be empty; expected height and width + 2*pad >= k", sec,
                                   i, l->k, l->pad, shape_str(s, a, sizeof a));
                h = (h + 2 * l->pad - l->k) / l->stride + 1;
                w = (w + 2 * l->pad - l->k) / l->stride + 1;
            } else {
                h = (h - 1) * l->stride - 2 * l->pad + l->k + l->out_pad;
                w = (w - 1) * l->stride - 2 * l->pad + l->k + l->out_pad;
                if (h < 1 || w < 1)
                    return fail_at(st, line, "%s.%d (convT k=%d stride=%d pad=%d) gets %s, so "
                                   "its output would be empty; expected (size-1)*stride - 2*pad + k + "
                                   "out_pad >= 1", sec, i, l->k, l->stride, l->pad,
                                   shape_str(s, a, sizeof a));
            }
            c = l->out;
            image = 1;
            break;
        case VAE_LAYER_RELU:
        case VAE_LAYER_LEAKY_RELU:
            break;
        case VAE_LAYER_FLATTEN:
            c = c * h * w;
            h = w = 1;
            image = 0;
            break;
        case VAE_LAYER_RESHAPE:
            if (vae_shape_count(l->reshape) != vae_shape_count(s))
                return fail_at(st, line, "%s.%d (reshape %dx%dx%d) has %d values but its input is "
                               "%s; expected a shape with %d values", sec, i, l->reshape.c,
                               l->reshape.h, l->reshape.w, vae_shape_count(l->reshape),
                               shape_str(s, a, sizeof a), vae_shape_count(s));
            c = l->reshape.c;
            h = l->reshape.h;
            w = l->reshape.w;
            image = 1;
            break;
        }
        if (h > SHAPE_MAX_DIM || w > SHAPE_MAX_DIM || c * h * w > SHAPE_MAX_VALUES)
            return fail_at(st, line, "%s.%d (%s) output %lldx%lldx%lld is too large; expected "
                           "H, W <= %d and at most %d values", sec, i, kn, c, h, w,
                           SHAPE_MAX_DIM, SHAPE_MAX_VALUES);
        s.c = (int)c;
        s.h = (int)h;
        s.w = (int)w;
        l->out_shape = s;
    }
    *out = s;
    return 1;
}

/* Checks that need the whole file, then shape chaining. Returns 1 or 0. */
static int check_config(parse_state *st) {
    vae_config *cfg = st->cfg;
    char a[48], b[48];
    for (int i = 0; i < N_KEYS; i++)
        if (KEYS[i].required && !st->key_line[i])
            return fail_at(st, 0, "missing required key '%s' in [%s]", KEYS[i].name, KEYS[i].section);
    int ti = key_index("data", "train_images"), vi = key_index("data", "test_images");
    if (cfg->dataset == VAE_DATA_IDX) {
        if (!st->key_line[ti])
            return fail_at(st, 0, "missing required key 'train_images' in [data] (needed by dataset = idx)");
        if (!st->key_line[vi])
            return fail_at(st, 0, "missing required key 'test_images' in [data] (needed by dataset = idx)");
    } else {
        int li = st->key_line[ti] ? ti : st->key_line[vi] ? vi : -1;
        if (li >= 0)
            return fail_at(st, st->key_line[li], "[data] %s is only used with dataset = idx but dataset "
                           "is %s; expected no %s (or dataset = idx)", KEYS[li].name,
                           DATASETS[cfg->dataset], KEYS[li].name);
    }
    if (cfg->min_lr > cfg->lr) {
        /* min_lr > 0 is in the file: its default is 0 */
        return fail_at(st, st->key_line[key_index("optim", "min_lr")],
                       "[optim] min_lr = %g is above lr = %g; expected min_lr <= lr",
                       (double)cfg->min_lr, (double)cfg->lr);
    }
    if (cfg->n_enc == 0)
        return fail_at(st, 0, "missing required key 'layer' in [encoder] (at least one layer)");
    if (cfg->n_dec == 0)
        return fail_at(st, 0, "missing required key 'layer' in [decoder] (at least one layer)");

    vae_shape s;
    if (!chain_shapes(st, "encoder", cfg->enc, cfg->n_enc, cfg->input, 1, &s)) return 0;
    if (s.h != 1 || s.w != 1)
        return fail_at(st, cfg->enc[cfg->n_enc - 1].line, "[encoder] output is %s, not flat; expected "
                       "a flat vector for the latent head: end the encoder with 'flatten' (and "
                       "'dense N')", shape_str(s, a, sizeof a));
    vae_shape z = {cfg->latent, 1, 1};
    if (!chain_shapes(st, "decoder", cfg->dec, cfg->n_dec, z, 0, &s)) return 0;
    int last = cfg->dec[cfg->n_dec - 1].line;
    int d = vae_shape_count(cfg->input);
    if (vae_shape_count(s) != d)
        return fail_at(st, last, "[decoder] output is %s with %d values but the input %s has %d; "
                       "expected the decoder to end with %d values", shape_str(s, a, sizeof a),
                       vae_shape_count(s), shape_str(cfg->input, b, sizeof b), d, d);
    int flat = s.h == 1 && s.w == 1;
    int same = s.c == cfg->input.c && s.h == cfg->input.h && s.w == cfg->input.w;
    if (!flat && !same)
        return fail_at(st, last, "[decoder] output is %s but the input is %s; expected a flat vector "
                       "of %d or exactly %s", shape_str(s, a, sizeof a),
                       shape_str(cfg->input, b, sizeof b), d, shape_str(cfg->input, b, sizeof b));
    return 1;
}

/* ------------------------------------------------------------ public API */

void vae_config_defaults(vae_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->type = VAE_MODEL_VAE;
    cfg->likelihood = VAE_LIK_BERNOULLI;
    cfg->sigma = 1.0f;
    cfg->epochs = 10;
    cfg->batch = 128;
    cfg->seed = 1;
    cfg->beta = 1.0f;
    cfg->kl_warmup_steps = 0;
    cfg->threads = 0;
    cfg->device = VAE_DEVICE_AUTO;
    cfg->checkpoint_every = 1;
    cfg->keep = 3;
    cfg->lr = 1e-3f;
    cfg->beta1 = 0.9f;
    cfg->beta2 = 0.999f;
    cfg->eps = 1e-8f;
    cfg->weight_decay = 0.0f;
    cfg->decoupled_weight_decay = 0;
    cfg->clip_grad_norm = 0.0f;
    cfg->lr_schedule = VAE_LR_CONSTANT;
    cfg->lr_warmup_steps = 0;
    cfg->min_lr = 0.0f;
}

void vae_config_free(vae_config *cfg) {
    if (!cfg) return;
    free(cfg->text);
    cfg->text = NULL;
}

/* On error: *cfg = defaults (text NULL, path = name), message set, code returned. */
static int reset_on_error(vae_config *cfg, const char *name, int rc) {
    vae_config_defaults(cfg);
    snprintf(cfg->path, sizeof cfg->path, "%s", name);
    return rc;
}

int vae_config_parse(vae_config *cfg, const char *text, const char *name) {
    if (!name) name = "<string>";
    if (!text) return reset_on_error(cfg, name, vae_error_set(VAE_EINVAL, "%s: no config text", name));
    size_t len = strlen(text);
    if (len > CONFIG_MAX_BYTES)
        return reset_on_error(cfg, name, vae_error_set(VAE_EINVAL, "%s: config is %zu bytes; expected "
                                                       "at most %d (1 MiB)", name, len, CONFIG_MAX_BYTES));

    parse_state *st = vae_calloc(1, sizeof *st);
    vae_config *tmp = vae_calloc(1, sizeof *tmp);
    char *copy = vae_malloc(len + 1, 1);
    if (!st || !tmp || !copy) {
        free(st);
        free(tmp);
        free(copy);
        return reset_on_error(cfg, name, VAE_ENOMEM);
    }
    memcpy(copy, text, len + 1);
    vae_config_defaults(tmp);
    snprintf(tmp->path, sizeof tmp->path, "%s", name);
    st->cfg = tmp;
    st->name = name;
    st->text = copy;
    st->pos = copy;

    ini_allow_multiline = false;      /* an indented line is an error, not a continuation */
    ini_allow_inline_comments = true; /* "key = value ; comment" */
    ini_allow_no_value = false;
    ini_stop_on_first_error = true;
    ini_allow_bom = true;

    int r = ini_parse_stream(read_line, st, handle_key, st);
    if (!st->err && r > 0) /* a line inih rejected that the reader let through */
        fail_at(st, r, "cannot parse this line; expected 'key = value', a [section] header or a ';' comment");
    if (!st->err && r < 0) {
        st->err = vae_error_set(VAE_ENOMEM, "%s: inih failed (%d)", name, r);
    }
    if (!st->err) check_config(st);

    int rc = st->err;
    if (rc) {
        free(copy);
        free(tmp);
        free(st);
        return reset_on_error(cfg, name, rc);
    }
    tmp->text = copy;
    *cfg = *tmp;
    free(tmp);
    free(st);
    return VAE_OK;
}

int vae_config_load(vae_config *cfg, const char *path) {
    if (!path) path = "(null)";
    FILE *f = fopen(path, "rb");
    if (!f)
        return reset_on_error(cfg, path, vae_error_set(VAE_EIO, "%s: cannot open config: %s", path,
                                                       strerror(errno)));
    char *buf = vae_malloc((size_t)CONFIG_MAX_BYTES + 2, 1);
    if (!buf) {
        fclose(f);
        return reset_on_error(cfg, path, VAE_ENOMEM);
    }
    size_t n = fread(buf, 1, (size_t)CONFIG_MAX_BYTES + 1, f);
    int rerr = ferror(f);
    int saved = errno;
    fclose(f);
    if (rerr) {
        free(buf);
        return reset_on_error(cfg, path, vae_error_set(VAE_EIO, "%s: cannot read config: %s", path,
                                                       strerror(saved)));
    }
    if (n > CONFIG_MAX_BYTES) {
        free(buf);
        return reset_on_error(cfg, path, vae_error_set(VAE_EINVAL, "%s: config file is larger than "
                                                       "1 MiB; expected at most %d bytes", path,
                                                       CONFIG_MAX_BYTES));
    }
    const char *nul = memchr(buf, 0, n);
    if (nul) {
        int line = 1;
        for (const char *p = buf; p < nul; p++) line += *p == '\n';
        free(buf);
        return reset_on_error(cfg, path, vae_error_set(VAE_EINVAL, "%s:%d: NUL byte in the config; "
                                                       "expected a text file", path, line));
    }
    buf[n] = 0;
    int rc = vae_config_parse(cfg, buf, path);
    free(buf);
    return rc;
}

/* Re-check the keys a command-line flag may have overridden (every numeric
 * [train]/[optim] key, and device). The message names the flag: "--batch 0:
 * batch must be in 1..65536". */
int vae_config_validate(vae_config *cfg) {
    char expect[128];
    for (int i = 0; i < N_KEYS; i++) {
        const key_def *k = &KEYS[i];
        if (strcmp(k->section, "train") && strcmp(k->section, "optim")) continue;
        const void *field = (const char *)cfg + k->off;
        if (k->type == K_INT) {
            int v = *(const int *)field;
            if (v < k->lo || v > k->hi)
                return vae_error_set(VAE_EINVAL, "--%s %d: %s must be in %.0f..%.0f", k->name, v,
                                     k->name, k->lo, k->hi);
        } else if (k->type == K_FLOAT) {
            float v = *(const float *)field;
            if (!float_in_range(k, (double)v)) {
                range_text(k, expect, sizeof expect);
                return vae_error_set(VAE_EINVAL, "--%s %g: %s must be %s", k->name, (double)v,
                                     k->name, expect + 9 /* skip "a number " */);
            }
        } else if (k->type == K_ENUM) {
            int v = *(const int *)field, nc = 0;
            while (k->choices[nc]) nc++;
            if (v < 0 || v >= nc) {
                choice_list(k->choices, expect, sizeof expect);
                return vae_error_set(VAE_EINVAL, "--%s %d: %s must be %s", k->name, v, k->name, expect);
            }
        } else if (k->type == K_BOOL) {
            int v = *(const int *)field;
            if (v != 0 && v != 1)
                return vae_error_set(VAE_EINVAL, "--%s %d: %s must be 0 or 1", k->name, v, k->name);
        }
    }
    if (cfg->min_lr > cfg->lr) /* only --lr can make it so: the file was checked */
        return vae_error_set(VAE_EINVAL, "--lr %g: lr must be >= the config's min_lr = %g",
                             (double)cfg->lr, (double)cfg->min_lr);
    return VAE_OK;
}

/* ------------------------------------------------------------ comparing */

/* appends an item to out[len]; out NULL or len 0: nothing */
static void diff_add(char *out, size_t len, const char *fmt, ...) {
    if (!out || !len) return;
    const size_t k = strlen(out);
    if (k + 1 >= len) return;
    if (k) snprintf(out + k, len - k, "; ");
    const size_t k2 = strlen(out);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out + k2, len - k2, fmt, ap);
    va_end(ap);
}

/* key i of a and b as text, for the differences */
static void key_text(const key_def *k, const vae_config *c, char *t, size_t len) {
    const void *f = (const char *)c + k->off;
    switch (k->type) {
    case K_INT: case K_BOOL: snprintf(t, len, "%d", *(const int *)f); break;
    case K_U64: snprintf(t, len, "%llu", (unsigned long long)*(const uint64_t *)f); break;
    case K_FLOAT: { /* the shortest text that reads back as the same float */
        const float v = *(const float *)f;
        for (int digits = 6; digits <= 9; digits++) {
            snprintf(t, len, "%.*g", digits, (double)v);
            if (strtof(t, NULL) == v) break;
        }
        break;
    }
    case K_ENUM: {
        const int v = *(const int *)f;
        int nc = 0;
        while (k->choices[nc]) nc++;
        snprintf(t, len, "%s", v >= 0 && v < nc ? k->choices[v] : "?");
        break;
    }
    case K_SHAPE: {
        const vae_shape *sh = (const vae_shape *)f;
        snprintf(t, len, "%dx%dx%d", sh->c, sh->h, sh->w);
        break;
    }
    case K_STRING: snprintf(t, len, "%s", (const char *)f); break;
    default: snprintf(t, len, "?");
    }
}

static int same_layer(const vae_layer_spec *x, const vae_layer_spec *y) {
    return x->kind == y->kind && x->out == y->out && x->k == y->k && x->stride == y->stride &&
           x->pad == y->pad && x->out_pad == y->out_pad && x->slope == y->slope &&
           x->reshape.c == y->reshape.c && x->reshape.h == y->reshape.h &&
           x->reshape.w == y->reshape.w;
}

static int layers_diff(const char *sec, const vae_layer_spec *x, int nx, const vae_layer_spec *y,
                       int ny, char *out, size_t len) {
    if (nx != ny) {
        diff_add(out, len, "[%s] %d layers -> %d", sec, nx, ny);
        return 1;
    }
    for (int i = 0; i < nx; i++)
        if (!same_layer(&x[i], &y[i])) {
            diff_add(out, len, "[%s] layer %d (line %d -> line %d)", sec, i + 1, x[i].line, y[i].line);
            return 1;
        }
    return 0;
}

int vae_config_compare(const vae_config *a, const vae_config *b, char *model, size_t mlen,
                       char *other, size_t olen) {
    int nm = 0;
    if (model && mlen) model[0] = 0;
    if (other && olen) other[0] = 0;
    for (int i = 0; i < N_KEYS; i++) {
        const key_def *k = &KEYS[i];
        if (k->type == K_LAYER) continue;
        const int is_model = !strcmp(k->section, "model");
        const int counts = is_model || !strcmp(k->section, "data") || !strcmp(k->section, "optim") ||
                           !strcmp(k->name, "beta") || !strcmp(k->name, "kl_warmup_steps");
        if (!counts) continue;
        char ta[300], tb[300];
        key_text(k, a, ta, sizeof ta);
        key_text(k, b, tb, sizeof tb);
        if (!strcmp(ta, tb)) continue;
        nm += is_model;
        if (is_model) diff_add(model, mlen, "[%s] %s %s -> %s", k->section, k->name, ta, tb);
        else diff_add(other, olen, "[%s] %s %s -> %s", k->section, k->name, ta, tb);
    }
    /* a decaying learning rate runs over the run's steps: more epochs stretch it */
    const int decays = a->lr_schedule != VAE_LR_CONSTANT || b->lr_schedule != VAE_LR_CONSTANT;
    if (a->epochs != b->epochs && decays)
        diff_add(other, olen, "[train] epochs %d -> %d (the lr_schedule's decay spans all the "
                 "run's steps)", a->epochs, b->epochs);
    nm += layers_diff("encoder", a->enc, a->n_enc, b->enc, b->n_enc, model, mlen);
    nm += layers_diff("decoder", a->dec, a->n_dec, b->dec, b->n_dec, model, mlen);
    return nm;
}

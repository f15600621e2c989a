/* main.c — the `vae` command line: train, eval, sample, info. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <png.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "vae_sample.h"
#include "vae_sheets.h"
#include "vae_train.h"

/* Model activations one decode chunk may take when --chunk is not given
 * (vae_sample_auto_chunk). CPU: 16 MiB keeps a chunk's activations near the
 * caches' scale (mnist_conv: 64 images, measured 2-17% faster than 256 by
 * bench/decode_bench.py) and RSS in tens of MB; CUDA: large chunks keep the
 * GPU busy between host calls. */
#define SAMPLE_BUDGET_CPU ((size_t)16 << 20)
#define SAMPLE_BUDGET_CUDA ((size_t)1 << 30)

#ifndef VAE_VERSION
#define VAE_VERSION "0"
#endif

char *openblas_get_config(void);

static const char *USAGE =
    "usage: vae <command> [options]\n"
    "\n"
    "commands:\n"
    "  train CONFIG [options]     train a model described by an INI config\n"
    "  train --resume CKPT|DIR    continue a run exactly where it stopped\n"
    "  eval CKPT [options]        test-set negative ELBO (and --iw K bound)\n"
    "  sample CKPT [options]      image grids and prior samples\n"
    "  info CONFIG|CKPT|DIR       layer table, parameters, FLOPs, memory, devices\n"
    "\n"
    "Run 'vae <command> --help' for the options of a command.\n";

static const char *USAGE_TRAIN =
    "usage: vae train CONFIG [options]\n"
    "       vae train --resume CKPT|DIR [CONFIG] [options]\n"
    "\n"
    "Flags override the config's keys:\n"
    "  --epochs N        total epochs of the run (also when resuming)\n"
    "  --batch N         batch size\n"
    "  --lr X            Adam learning rate\n"
    "  --seed N          seed of initialisation, shuffling and noise\n"
    "  --threads N       CPU threads (0 = all cores)\n"
    "  --device D        cpu | cuda | auto (default: the config's, else auto)\n"
    "  --data DIR        data directory (default: $VAE_DATA_DIR, else ./data)\n"
    "  --out DIR         run directory (default: runs/<config>-<time>, or the\n"
    "                    checkpoint's directory when resuming)\n"
    "  --resume P        checkpoint file, or a directory: its newest valid one\n"
    "  --keep N          checkpoints kept in the run directory (0 = all)\n"
    "  --max-bad-steps N skip up to N steps with NaN/Inf gradients (default 0: stop)\n"
    "  --progress / --no-progress   progress bar (default: on a terminal)\n";

static const char *USAGE_EVAL =
    "usage: vae eval CKPT [options]\n"
    "  --iw K        also estimate the test NLL with K importance samples per image\n"
    "  --json        print one JSON object\n"
    "  --data DIR    data directory\n"
    "  --batch N     evaluation batch size (default: the checkpoint's)\n"
    "  --seed N      evaluation noise seed (default: the checkpoint's)\n"
    "  --device D    cpu | cuda | auto\n"
    "  --threads N   CPU threads\n";

static const char *USAGE_SAMPLE =
    "usage: vae sample CKPT [options]                 image grids (below)\n"
    "       vae sample CKPT --prior N [options]       N images from z ~ N(0, I)\n"
    "       vae sample CKPT --grid D1,D2 [options]    S x S grid over latent dims D1, D2\n"
    "       vae sample CKPT --interpolate I,J [opts]  S points between test images I and J\n"
    "\n"
    "Without a mode: samples.png, traversal.png, reconstructions.png and\n"
    "interpolation.png. With one: <mode>.npy (uint8 [N,C,H,W], written while\n"
    "decoding) and PNG sheets <mode>*.png, where <mode> is prior, grid or interp.\n"
    "  --steps S          grid side / interpolation points (default 10)\n"
    "  --range R          grid coordinates evenly over [-R, R] (default 3)\n"
    "  --quantiles        grid coordinates Phi^-1((k + 1/2) / S) instead\n"
    "  --at V1,V2,...     grid: values of the other latent dims (default all 0)\n"
    "  --slerp            spherical interpolation (default: linear)\n"
    "  --slice A:B        only images [A, B) of the run, into <mode>-A-B.npy; the\n"
    "                     pieces of a split run concatenate to the whole run\n"
    "  --chunk N          images decoded per chunk (default: chosen from memory)\n"
    "  --precision P      fp32 | tf32 | bf16 decoding (default fp32)\n"
    "  --png / --no-png   PNG sheets (default: on for --grid/--interpolate)\n"
    "  --sheet-px N       largest sheet side in pixels (default 4096)\n"
    "  --no-npy           no .npy (with --no-png: decode to device memory only)\n"
    "  --save-latents     also write <mode>-latents.npy (float32 [N, L])\n"
    "  --json             print a JSON summary on stdout\n"
    "  --out DIR          where to write (default: the checkpoint's directory)\n"
    "  --seed N           sampling seed (default: the checkpoint's)\n"
    "  --data DIR         data directory (test images: --interpolate and the\n"
    "                     grids reconstructions.png and interpolation.png)\n"
    "  --device D         cpu | cuda | auto\n"
    "  --threads N        CPU threads, for decoding on the CPU and PNG encoding\n"
    "                     (0 = all cores)\n"
    "  --progress / --no-progress   progress bar (default: on a terminal)\n";

static const char *USAGE_INFO =
    "usage: vae info CONFIG|CKPT|DIR [--batch N]\n"
    "Prints the layer table with shapes, parameter counts and FLOPs per image,\n"
    "the memory the model needs for a batch, and the devices this build can use.\n"
    "DIR: a run's folder (its newest checkpoint).\n";

/* ------------------------------------------------------------ arguments */

typedef struct {
    const char *positional;
    const char *data, *out, *resume, *device, *interpolate;
    long long epochs, batch, threads, keep, iw, prior, max_bad;
    uint64_t seed;
    int has_seed;
    double lr;
    int json, progress, help;
    /* sample */
    const char *grid, *at, *slice, *precision;
    long long steps, sheet_px;
    double range;
    int quantiles, slerp, png, no_npy, save_latents;
    int64_t auto_chunk_n; /* > 0: choose the batch (chunk) for this many images */
} args_t;

static int parse_ll(const char *flag, const char *v, long long lo, long long hi, long long *out) {
    char *end = NULL;
    errno = 0;
    long long x = v ? strtoll(v, &end, 10) : 0;
    if (!v || errno || end == v || *end || x < lo || x > hi) {
        fprintf(stderr, "vae: %s %s: expected an integer in %lld..%lld\n", flag, v ? v : "(missing)", lo, hi);
        return -1;
    }
    *out = x;
    return 0;
}

/* Is the option f listed in the command's help text (as "--flag" followed
 * by a space, newline, ']' or '/')? The help text is the list of what the
 * command takes. */
static int flag_in_usage(const char *usage, const char *f) {
    const size_t n = strlen(f);
    for (const char *p = strstr(usage, f); p; p = strstr(p + 1, f)) {
        const char before = p == usage ? ' ' : p[-1], after = p[n];
        if ((before == ' ' || before == '[' || before == '\n') &&
            (after == ' ' || after == '\n' || after == ']' || after == '/' || after == 0))
            return 1;
    }
    return 0;
}

/* Unsigned 64-bit integer (a seed: the config takes 0 .. 2^64 - 1 too). */
static int parse_u64(const char *flag, const char *v, uint64_t *out) {
    char *end = NULL;
    errno = 0;
    const int digit = v && *v >= '0' && *v <= '9'; /* no sign, no blanks (as the config) */
    unsigned long long x = digit ? strtoull(v, &end, 10) : 0;
    if (!digit || errno || end == v || *end) {
        fprintf(stderr, "vae: %s %s: expected an integer in 0..18446744073709551615\n", flag,
                v ? v : "(missing)");
        return -1;
    }
    *out = (uint64_t)x;
    return 0;
}

/* The options of `vae <cmd>` (those its help text `usage` lists), in the
 * tokens av[0 .. n); is_val[i]: av[i] is the value written attached to the
 * option before it (--opt=value), taken as a value even when it starts with
 * "--". */
static int parse_tokens(int argc, const char **argv, const unsigned char *is_val, args_t *a,
                        const char *cmd, const char *usage) {
    memset(a, 0, sizeof *a);
    a->epochs = a->batch = a->threads = a->keep = a->iw = a->prior = a->max_bad = -1;
    a->lr = -1;
    a->progress = -1;
    a->steps = a->sheet_px = -1;
    a->range = -1;
    a->png = -1;
    for (int i = 0; i < argc; i++) {
        const char *f = argv[i];
        if (is_val[i]) { /* an attached value its option did not take */
            fprintf(stderr, "vae: %s takes no value (found %s=%s)\n", argv[i - 1], argv[i - 1], f);
            return -1;
        }
        /* the value after an option; another option there means it is missing
         * (unless attached: --opt=--value), and so does an empty attached one */
        const char *next = i + 1 < argc ? argv[i + 1] : NULL;
        const char *v = !next           ? NULL
                        : is_val[i + 1] ? (*next ? next : NULL)
                        : !(next[0] == '-' && next[1] == '-') ? next
                                                              : NULL;
#define NEXT() (i++, v)
        if (f[0] == '-' && f[1] == '-' && strcmp(f, "--help") && !flag_in_usage(usage, f)) {
            fprintf(stderr, "vae: %s is not an option of 'vae %s' (see vae %s --help)\n", f, cmd,
                    cmd);
            return -1;
        }
        if (!v && next && (!strcmp(f, "--epochs") || !strcmp(f, "--batch") || !strcmp(f, "--seed") ||
                           !strcmp(f, "--threads") || !strcmp(f, "--keep") || !strcmp(f, "--iw") ||
                           !strcmp(f, "--prior") || !strcmp(f, "--max-bad-steps") ||
                           !strcmp(f, "--lr") || !strcmp(f, "--steps") || !strcmp(f, "--sheet-px") ||
                           !strcmp(f, "--chunk") || !strcmp(f, "--range")))
            goto missing;
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) a->help = 1;
        else if (!strcmp(f, "--json")) a->json = 1;
        else if (!strcmp(f, "--progress")) a->progress = 1;
        else if (!strcmp(f, "--no-progress")) a->progress = 0;
        else if (!strcmp(f, "--quantiles")) a->quantiles = 1;
        else if (!strcmp(f, "--slerp")) a->slerp = 1;
        else if (!strcmp(f, "--png")) a->png = 1;
        else if (!strcmp(f, "--no-png")) a->png = 0;
        else if (!strcmp(f, "--no-npy")) a->no_npy = 1;
        else if (!strcmp(f, "--save-latents")) a->save_latents = 1;
        else if (!strcmp(f, "--grid")) { if (!v) goto missing; a->grid = NEXT(); }
        else if (!strcmp(f, "--at")) { if (!v) goto missing; a->at = NEXT(); }
        else if (!strcmp(f, "--slice")) { if (!v) goto missing; a->slice = NEXT(); }
        else if (!strcmp(f, "--precision")) { if (!v) goto missing; a->precision = NEXT(); }
        else if (!strcmp(f, "--steps")) { if (parse_ll(f, NEXT(), 1, 1000000, &a->steps)) return -1; }
        else if (!strcmp(f, "--sheet-px")) { if (parse_ll(f, NEXT(), 16, 1000000, &a->sheet_px)) return -1; }
        else if (!strcmp(f, "--chunk")) { if (parse_ll(f, NEXT(), 1, 65536, &a->batch)) return -1; }
        else if (!strcmp(f, "--range")) {
            char *end = NULL;
            const char *t = NEXT();
            a->range = t ? strtod(t, &end) : -1;
            if (!t || end == t || *end || !(a->range > 0 && a->range <= 1e6)) {
                fprintf(stderr, "vae: --range %s: expected a number in (0, 1e6]\n", t ? t : "(missing)");
                return -1;
            }
        }
        else if (!strcmp(f, "--data")) { if (!v) goto missing; a->data = NEXT(); }
        else if (!strcmp(f, "--out")) { if (!v) goto missing; a->out = NEXT(); }
        else if (!strcmp(f, "--resume")) { if (!v) goto missing; a->resume = NEXT(); }
        else if (!strcmp(f, "--device")) { if (!v) goto missing; a->device = NEXT(); }
        else if (!strcmp(f, "--interpolate")) { if (!v) goto missing; a->interpolate = NEXT(); }
        else if (!strcmp(f, "--epochs")) { if (parse_ll(f, NEXT(), 1, 1000000, &a->epochs)) return -1; }
        else if (!strcmp(f, "--batch")) { if (parse_ll(f, NEXT(), 1, 65536, &a->batch)) return -1; }
        else if (!strcmp(f, "--seed")) {
            if (parse_u64(f, NEXT(), &a->seed)) return -1;
            a->has_seed = 1;
        }
        else if (!strcmp(f, "--threads")) { if (parse_ll(f, NEXT(), 0, 1024, &a->threads)) return -1; }
        else if (!strcmp(f, "--keep")) { if (parse_ll(f, NEXT(), 0, 1000000, &a->keep)) return -1; }
        else if (!strcmp(f, "--iw")) { if (parse_ll(f, NEXT(), 1, 100000, &a->iw)) return -1; }
        else if (!strcmp(f, "--prior")) { if (parse_ll(f, NEXT(), 1, (long long)1 << 40, &a->prior)) return -1; }
        else if (!strcmp(f, "--max-bad-steps")) { if (parse_ll(f, NEXT(), 0, 1000000000, &a->max_bad)) return -1; }
        else if (!strcmp(f, "--lr")) {
            char *end = NULL;
            const char *s = NEXT();
            a->lr = s ? strtod(s, &end) : -1;
            if (!s || end == s || *end || !(a->lr > 0 && a->lr <= 10)) {
                fprintf(stderr, "vae: --lr %s: expected a number in (0, 10]\n", s ? s : "(missing)");
                return -1;
            }
        } else if (f[0] == '-' && f[1]) {
            fprintf(stderr, "vae: unknown option '%s' (see --help)\n", f);
            return -1;
        } else if (!a->positional) a->positional = f;
        else {
            fprintf(stderr, "vae: unexpected argument '%s' (see --help)\n", f);
            return -1;
        }
        continue;
    missing:
        if (next && !is_val[i + 1])
            fprintf(stderr, "vae: %s needs a value (found the option %s)\n", f, next);
        else
            fprintf(stderr, "vae: %s needs a value\n", f);
        return -1;
#undef NEXT
    }
    return 0;
}

/* parse_tokens on argv with each --opt=value split into --opt and value. */
static int parse_args(int argc, char **argv, args_t *a, const char *cmd, const char *usage) {
    size_t names = 0;
    for (int i = 0; i < argc; i++)
        if (argv[i][0] == '-' && argv[i][1] == '-' && strchr(argv[i], '='))
            names += strlen(argv[i]) + 1;
    const char **av = malloc((2 * (size_t)argc + 1) * sizeof *av);
    unsigned char *is_val = calloc(2 * (size_t)argc + 1, 1);
    char *name = malloc(names + 1), *np = name;
    if (!av || !is_val || !name) {
        free(av), free(is_val), free(name);
        fprintf(stderr, "vae: out of memory\n");
        return -1;
    }
    int n = 0;
    for (int i = 0; i < argc; i++) {
        const char *eq = argv[i][0] == '-' && argv[i][1] == '-' ? strchr(argv[i], '=') : NULL;
        if (!eq) {
            av[n++] = argv[i];
            continue;
        }
        const size_t k = (size_t)(eq - argv[i]);
        if (k == 2) { /* "--=x" */
            free(av), free(is_val), free(name);
            fprintf(stderr, "vae: %s: expected --option=value\n", argv[i]);
            return -1;
        }
        memcpy(np, argv[i], k);
        np[k] = 0;
        av[n++] = np;
        np += k + 1;
        is_val[n] = 1;
        av[n++] = eq + 1; /* points into argv: it outlives the parse */
    }
    int rc = parse_tokens(n, av, is_val, a, cmd, usage);
    free(av), free(is_val), free(name);
    return rc;
}

static int parse_device(const char *s, vae_device *d) {
    if (!strcmp(s, "cpu")) *d = VAE_DEVICE_CPU;
    else if (!strcmp(s, "cuda")) *d = VAE_DEVICE_CUDA;
    else if (!strcmp(s, "auto")) *d = VAE_DEVICE_AUTO;
    else {
        fprintf(stderr, "vae: --device %s: expected cpu, cuda or auto\n", s);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------ config overrides */

/* Set `key = value` in [section] of an INI text (replacing the key's line, or
 * adding it after the section header, or adding the section). Returns a new
 * malloc'd text. Keeps the saved config equal to what the run used. */
static char *ini_set(const char *text, const char *section, const char *key, const char *value) {
    size_t len = strlen(text), cap = len + strlen(section) + strlen(key) + strlen(value) + 64;
    char *out = malloc(cap);
    if (!out) return NULL;
    char hdr[64];
    snprintf(hdr, sizeof hdr, "[%s]", section);
    const char *p = text, *sec_hdr_end = NULL;
    int in_sec = 0;
    const char *key_line = NULL, *key_line_end = NULL;
    while (*p) {
        const char *e = strchr(p, '\n');
        const char *next = e ? e + 1 : p + strlen(p);
        const char *s = p;
        while (*s == ' ' || *s == '\t') s++;
        if (*s == '[') {
            in_sec = !strncmp(s, hdr, strlen(hdr));
            if (in_sec) sec_hdr_end = next;
        } else if (in_sec && !key_line && !strncmp(s, key, strlen(key))) {
            const char *t = s + strlen(key);
            while (*t == ' ' || *t == '\t') t++;
            if (*t == '=' || *t == ':') key_line = p, key_line_end = next;
        }
        p = next;
    }
    if (key_line) {
        snprintf(out, cap, "%.*s%s = %s\n%s", (int)(key_line - text), text, key, value, key_line_end);
    } else if (sec_hdr_end) {
        int pre = (int)(sec_hdr_end - text);
        int need_nl = pre > 0 && text[pre - 1] != '\n';
        snprintf(out, cap, "%.*s%s%s = %s\n%s", pre, text, need_nl ? "\n" : "", key, value, sec_hdr_end);
    } else {
        int need_nl = len > 0 && text[len - 1] != '\n';
        snprintf(out, cap, "%s%s\n[%s]\n%s = %s\n", text, need_nl ? "\n" : "", section, key, value);
    }
    return out;
}

static int override(vae_config *cfg, const char *section, const char *key, const char *value) {
    char *t = ini_set(cfg->text, section, key, value);
    if (!t) {
        fprintf(stderr, "vae: out of memory\n");
        return -1;
    }
    free(cfg->text);
    cfg->text = t;
    return 0;
}

/* Apply command-line overrides to the struct and to the saved text. */
static int apply_overrides(vae_config *cfg, const args_t *a) {
    char v[64];
    if (a->epochs > 0) {
        cfg->epochs = (int)a->epochs;
        snprintf(v, sizeof v, "%lld", a->epochs);
        if (override(cfg, "train", "epochs", v)) return -1;
    }
    if (a->batch > 0) {
        cfg->batch = (int)a->batch;
        snprintf(v, sizeof v, "%lld", a->batch);
        if (override(cfg, "train", "batch", v)) return -1;
    }
    if (a->has_seed) {
        cfg->seed = a->seed;
        snprintf(v, sizeof v, "%" PRIu64, a->seed);
        if (override(cfg, "train", "seed", v)) return -1;
    }
    if (a->threads >= 0) {
        cfg->threads = (int)a->threads;
        snprintf(v, sizeof v, "%lld", a->threads);
        if (override(cfg, "train", "threads", v)) return -1;
    }
    if (a->lr > 0) {
        cfg->lr = (float)a->lr;
        snprintf(v, sizeof v, "%.9g", a->lr);
        if (override(cfg, "optim", "lr", v)) return -1;
    }
    if (a->keep >= 0) {
        cfg->keep = (int)a->keep;
        snprintf(v, sizeof v, "%lld", a->keep);
        if (override(cfg, "train", "keep", v)) return -1;
    }
    if (a->device) {
        if (parse_device(a->device, &cfg->device)) return -1;
        if (override(cfg, "train", "device", a->device)) return -1;
    }
    if (vae_config_validate(cfg) != VAE_OK) {
        fprintf(stderr, "vae: %s\n", vae_error_get());
        return -1;
    }
    return 0;
}

static vae_backend *make_backend(const vae_config *cfg) {
    vae_backend *be = vae_backend_create(cfg->device, cfg->threads);
    if (!be) fprintf(stderr, "vae: %s\n", vae_error_get());
    return be;
}

static const char *basename_noext(const char *path, char *buf, size_t len) {
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    snprintf(buf, len, "%s", b);
    char *dot = strrchr(buf, '.');
    if (dot && dot != buf) *dot = 0;
    return buf;
}

static void dirname_of(const char *path, char *buf, size_t len) {
    snprintf(buf, len, "%s", path);
    char *s = strrchr(buf, '/');
    if (s && s != buf) *s = 0;
    else if (s) s[1] = 0;
    else snprintf(buf, len, ".");
}

/* run.json: what is needed to reproduce the run. */
static void write_run_json(const char *dir, const char *name, const vae_config *cfg,
                           const vae_backend *be, int argc, char **argv) {
    cJSON *j = cJSON_CreateObject();
    char buf[64];
    time_t now = time(NULL);
    strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    cJSON_AddStringToObject(j, "started", buf);
    cJSON_AddStringToObject(j, "version", VAE_VERSION);
    cJSON_AddStringToObject(j, "git_describe", vae_git_describe());
    cJSON *cmd = cJSON_AddArrayToObject(j, "argv"); /* the whole command line */
    cJSON_AddItemToArray(cmd, cJSON_CreateString("vae"));
    cJSON_AddItemToArray(cmd, cJSON_CreateString("train"));
    for (int i = 0; i < argc; i++) cJSON_AddItemToArray(cmd, cJSON_CreateString(argv[i]));
    snprintf(buf, sizeof buf, "%" PRIu64, cfg->seed);
    cJSON_AddStringToObject(j, "seed", buf);
    cJSON_AddStringToObject(j, "device", be->name);
    cJSON_AddStringToObject(j, "config_file", cfg->path);
    cJSON *lib = cJSON_AddObjectToObject(j, "libraries");
    cJSON_AddStringToObject(lib, "openblas", openblas_get_config());
    cJSON_AddStringToObject(lib, "zlib", zlibVersion());
    cJSON_AddStringToObject(lib, "libpng", png_get_libpng_ver(NULL));
    cJSON_AddStringToObject(lib, "cjson", cJSON_Version());
    char *s = cJSON_Print(j);
    char path[2048];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    vae_atomic_file af;
    if (s && vae_atomic_open(&af, path) == VAE_OK) {
        vae_atomic_write(&af, s, strlen(s));
        vae_atomic_write(&af, "\n", 1);
        if (vae_atomic_commit(&af)) fprintf(stderr, "vae: %s\n", vae_error_get());
    }
    free(s);
    cJSON_Delete(j);
}

/* ------------------------------------------------------------ train */

/* What record_run writes: run.json for a new run, run-resumed-<time>[-k].json
 * (a new name each time) for a resume. */
typedef struct {
    const char *out_dir;
    int resumed;
    const vae_config *cfg;
    const vae_backend *be;
    int argc;
    char **argv;
} run_record;

static void record_run(void *arg) {
    const run_record *r = arg;
    char rname[80] = "run.json";
    if (r->resumed) {
        time_t now = time(NULL);
        char stamp[40], p[1200];
        strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", localtime(&now));
        snprintf(rname, sizeof rname, "run-resumed-%s.json", stamp);
        for (int k = 2; k < 1000; k++) {
            snprintf(p, sizeof p, "%s/%s", r->out_dir, rname);
            if (access(p, F_OK) != 0) break;
            snprintf(rname, sizeof rname, "run-resumed-%s-%d.json", stamp, k);
        }
    }
    write_run_json(r->out_dir, rname, r->cfg, r->be, r->argc, r->argv);
}

static int cmd_train(int argc, char **argv) {
    args_t a;
    if (parse_args(argc, argv, &a, "train", USAGE_TRAIN)) return 2;
    if (a.help) {
        fputs(USAGE_TRAIN, stdout);
        return 0;
    }
    if (!a.positional && !a.resume) {
        fputs(USAGE_TRAIN, stderr);
        return 2;
    }
    vae_config cfg;
    vae_config_defaults(&cfg);
    char ckpath[2048] = "";
    if (a.resume) {
        if (vae_ckpt_resolve(a.resume, ckpath, sizeof ckpath)) {
            fprintf(stderr, "vae: --resume: %s\n", vae_error_get());
            return 1;
        }
    }
    if (a.positional) {
        if (vae_config_load(&cfg, a.positional)) {
            fprintf(stderr, "vae: %s\n", vae_error_get());
            return 1;
        }
    } else {
        /* the config stored in the checkpoint */
        vae_st_file f;
        if (vae_ckpt_open(ckpath, &f, &cfg)) {
            fprintf(stderr, "vae: --resume: %s\n", vae_error_get());
            return 1;
        }
        vae_st_free(&f);
    }
    if (apply_overrides(&cfg, &a)) {
        vae_config_free(&cfg);
        return 2;
    }

    char data_dir[1024], out_dir[1024], base[256];
    vae_data_dir(data_dir, sizeof data_dir, a.data);
    if (a.out) snprintf(out_dir, sizeof out_dir, "%s", a.out);
    else if (a.resume) dirname_of(ckpath, out_dir, sizeof out_dir);
    else {
        char ts[32];
        time_t now = time(NULL);
        strftime(ts, sizeof ts, "%Y%m%d-%H%M%S", localtime(&now));
        snprintf(out_dir, sizeof out_dir, "runs/%s-%s",
                 basename_noext(a.positional ? a.positional : "run", base, sizeof base), ts);
    }
    vae_backend *be = make_backend(&cfg);
    if (!be) {
        vae_config_free(&cfg);
        return 1;
    }
    vae_train_opts o = {0};
    o.config_path = a.positional ? a.positional : ckpath;
    o.data_dir = data_dir;
    o.out_dir = out_dir;
    o.resume = a.resume ? ckpath : NULL;
    o.progress = a.progress >= 0 ? a.progress : isatty(2);
    o.keep = cfg.keep;
    o.max_bad_steps = a.max_bad > 0 ? (int)a.max_bad : 0;
    char made[1024]; /* the folders of out_dir this run creates */
    if (vae_mkdir_p(out_dir, made, sizeof made)) {
        fprintf(stderr, "vae: %s\n", vae_error_get());
        be->destroy(be);
        vae_config_free(&cfg);
        return 1;
    }
    /* how this run was made, written once it has started (so that a run
     * that dies still says what it was, and one that could not start
     * leaves nothing): run.json, or run-resumed-<time>.json */
    run_record rec = {out_dir, a.resume != NULL, &cfg, be, argc, argv};
    o.on_start = record_run;
    o.on_start_arg = &rec;
    int rc = vae_train(&cfg, be, &o);
    if (rc) vae_rmdir_made(out_dir, made); /* those that a failed run left empty */
    be->destroy(be);
    vae_config_free(&cfg);
    return rc == 0 ? 0 : (rc == 130 ? 130 : 1);
}

/* ------------------------------------------------------------ eval / sample */

typedef struct {
    vae_config cfg;
    vae_backend *be;
    vae_model model;
    vae_train_state st;
    char path[2048];
    char chunk_why[160]; /* how the sample chunk was chosen */
} loaded_t;

/* Does the file start as a safetensors file does: an 8-byte little-endian
 * header length (well under 2^48: its last bytes are 0), then '{'? */
static int starts_like_safetensors(const char *path) {
    FILE *in = fopen(path, "rb");
    unsigned char h[9];
    const int yes = in && fread(h, 1, 9, in) == 9 && h[8] == '{' && h[7] == 0 && h[6] == 0;
    if (in) fclose(in);
    return yes;
}

static int load_for_inference(const char *ckpt, const args_t *a, loaded_t *L) {
    memset(L, 0, sizeof *L);
    vae_config_defaults(&L->cfg);
    vae_st_file f;
    if (vae_ckpt_resolve(ckpt, L->path, sizeof L->path) || vae_ckpt_open(L->path, &f, &L->cfg)) {
        if (L->path[0] && !starts_like_safetensors(L->path))
            fprintf(stderr, "vae: %s is not a checkpoint (not a safetensors file: a config?); "
                            "expected a checkpoint (*.safetensors, as vae train writes) or a run's "
                            "folder\n", L->path);
        else
            fprintf(stderr, "vae: %s\n", vae_error_get());
        return -1;
    }
    if (a->batch > 0) L->cfg.batch = (int)a->batch;
    /* where the checkpoint is used, not where it was trained: --device
     * (default auto) and --threads (default all cores) */
    L->cfg.threads = a->threads >= 0 ? (int)a->threads : 0;
    L->cfg.device = VAE_DEVICE_AUTO;
    if (a->device && parse_device(a->device, &L->cfg.device)) {
        vae_st_free(&f);
        return -1;
    }
    L->be = make_backend(&L->cfg);
    if (L->be && a->auto_chunk_n > 0 && a->batch <= 0) {
        size_t budget = strcmp(L->be->name, "cuda") ? SAMPLE_BUDGET_CPU : SAMPLE_BUDGET_CUDA, per = 0;
        L->cfg.batch = vae_sample_auto_chunk(&L->cfg, budget, a->auto_chunk_n, &per);
        snprintf(L->chunk_why, sizeof L->chunk_why,
                 "chosen: %.1f KiB of activations per image, %zu MiB budget on %s", per / 1024.0,
                 budget >> 20, L->be->name);
    }
    const int64_t avail = vae_host_memory_available();
    if (L->be && !L->be->reserve && avail >= 0) { /* host memory: see vae train */
        const size_t need = vae_model_plan_bytes(&L->cfg, L->cfg.batch);
        if ((int64_t)need > avail) {
            fprintf(stderr, "vae: %s at %s %d needs %.1f MiB of host memory; %.1f MiB are "
                            "available; lower %s\n",
                    L->path, a->auto_chunk_n > 0 ? "chunk" : "batch", L->cfg.batch, need / 1048576.0,
                    avail / 1048576.0, a->auto_chunk_n > 0 ? "--chunk" : "--batch");
            vae_st_free(&f);
            return -1;
        }
    }
    if (!L->be || vae_model_create(&L->model, &L->cfg, L->be, L->cfg.batch) ||
        vae_ckpt_restore(&f, L->path, &L->model, &L->st, 0)) {
        if (L->be) fprintf(stderr, "vae: %s\n", vae_error_get());
        vae_st_free(&f);
        return -1;
    }
    vae_st_free(&f);
    return 0;
}

static void unload(loaded_t *L) {
    if (L->model.be) vae_model_free(&L->model);
    if (L->be) L->be->destroy(L->be);
    vae_config_free(&L->cfg);
}

static int cmd_eval(int argc, char **argv) {
    args_t a;
    if (parse_args(argc, argv, &a, "eval", USAGE_EVAL)) return 2;
    if (a.help) {
        fputs(USAGE_EVAL, stdout);
        return 0;
    }
    if (!a.positional) {
        fputs(USAGE_EVAL, stderr);
        return 2;
    }
    if (a.device && parse_device(a.device, &(vae_device){0})) return 2;
    loaded_t L;
    if (load_for_inference(a.positional, &a, &L)) {
        unload(&L);
        return 1;
    }
    char dir[1024];
    vae_data_dir(dir, sizeof dir, a.data);
    vae_dataset test = {0};
    vae_dev_data dd = {0};
    vae_eval_result r;
    int rc = 1;
    uint64_t seed = a.has_seed ? a.seed : L.st.seed;
    double t0 = vae_now();
    if (vae_dataset_load(&test, &L.cfg, dir, 0) || vae_dev_data_upload(&dd, L.be, &test) ||
        vae_evaluate(&L.model, &dd, seed, a.iw > 0 ? (int)a.iw : 0, &r)) {
        fprintf(stderr, "vae: %s\n", vae_error_get());
    } else {
        double secs = vae_now() - t0;
        int D = L.model.D;
        if (a.json) {
            cJSON *j = cJSON_CreateObject();
            cJSON_AddStringToObject(j, "checkpoint", L.path);
            cJSON_AddNumberToObject(j, "n", r.n);
            cJSON_AddNumberToObject(j, "test_nelbo", r.nelbo);
            cJSON_AddNumberToObject(j, "test_recon", r.recon);
            cJSON_AddNumberToObject(j, "test_kl", r.kl);
            cJSON_AddNumberToObject(j, "test_bpd", r.nelbo / (D * log(2.0)));
            if (a.iw > 0) {
                cJSON_AddNumberToObject(j, "iw_k", r.iw_k);
                cJSON_AddNumberToObject(j, "test_iw_nll", r.iw_nll);
                cJSON_AddNumberToObject(j, "test_iw_bpd", r.iw_nll / (D * log(2.0)));
            }
            if (L.cfg.likelihood == VAE_LIK_GAUSSIAN) cJSON_AddNumberToObject(j, "test_mse", r.mse);
            cJSON_AddNumberToObject(j, "seconds", secs);
            char *s = cJSON_PrintUnformatted(j);
            printf("%s\n", s);
            free(s);
            cJSON_Delete(j);
        } else {
            printf("checkpoint      %s (step %" PRId64 ")\n", L.path, L.st.step);
            printf("test images     %d\n", r.n);
            printf("test nelbo      %.4f nats/image  (%.4f bits/dim)\n", r.nelbo, r.nelbo / (D * log(2.0)));
            printf("  recon         %.4f\n", r.recon);
            printf("  kl            %.4f\n", r.kl);
            if (L.cfg.likelihood == VAE_LIK_GAUSSIAN) printf("  mse/pixel     %.6f\n", r.mse);
            if (a.iw > 0)
                printf("test nll (iw)   %.4f nats/image  (%.4f bits/dim) with K=%d importance "
                       "samples\n", r.iw_nll, r.iw_nll / (D * log(2.0)), r.iw_k);
        }
        rc = 0;
    }
    vae_dev_data_free(&dd, L.be);
    vae_dataset_free(&test);
    unload(&L);
    return rc;
}

/* Stop request for a streamed sample run: the loop finishes its chunk and
 * the .npy is closed with the rows written so far. */
static volatile sig_atomic_t g_sample_stop = 0;
static void on_sample_signal(int sig) { g_sample_stop = sig; }

/* "X,Y": two integers in 0 .. INT_MAX, nothing else. */
static int parse_index_pair(const char *t, int *x, int *y) {
    long v[2];
    const char *p = t;
    for (int i = 0; i < 2; i++) {
        char *end = NULL;
        if (*p < '0' || *p > '9') return -1; /* no sign, no space */
        errno = 0;
        v[i] = strtol(p, &end, 10);
        if (errno || v[i] > INT_MAX || *end != (i == 0 ? ',' : 0)) return -1;
        p = end + 1;
    }
    *x = (int)v[0], *y = (int)v[1];
    return 0;
}

/* "A:B" with 0 <= A < B <= n. */
static int parse_slice(const char *t, int64_t n, int64_t *a, int64_t *b) {
    char *end = NULL;
    errno = 0;
    long long x = strtoll(t, &end, 10);
    if (errno || end == t || *end != ':') goto bad;
    const char *u = end + 1;
    long long y = strtoll(u, &end, 10);
    if (errno || end == u || *end || x < 0 || y <= x || y > n) goto bad;
    *a = x, *b = y;
    return 0;
bad:
    fprintf(stderr, "vae: --slice %s: expected A:B with 0 <= A < B <= %" PRId64 " (the run's size)\n", t, n);
    return -1;
}

/* "v1,v2,...,vL" into out[L]. */
static int parse_vector(const char *flag, const char *t, real *out, int L) {
    const char *p = t;
    for (int l = 0; l < L; l++) {
        char *end = NULL;
        double x = strtod(p, &end);
        if (end == p || (l < L - 1 ? *end != ',' : *end != 0)) {
            fprintf(stderr, "vae: %s %s: expected %d comma-separated numbers (one per latent dimension)\n",
                    flag, t, L);
            return -1;
        }
        if (!isfinite((real)x)) { /* finite as a float too: 1e39 is not */
            fprintf(stderr, "vae: %s: value %d is %.*s; expected a finite number (float)\n", flag,
                    l + 1, (int)(end - p), p);
            return -1;
        }
        out[l] = (real)x;
        p = end + 1;
    }
    return 0;
}

/* Peak resident memory of this process image in MiB: VmHWM from
 * /proc/self/status (getrusage's ru_maxrss would include the parent's memory
 * at fork, which exec carries over); -1 where there is no /proc. */
static double peak_rss_mib(void) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    double kb = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %lf kB", &kb) == 1) break;
    fclose(f);
    return kb < 0 ? -1 : kb / 1024.0;
}

/* vae sample with --prior / --grid / --interpolate: the streamed decoder. */
static int sample_stream(const args_t *a, int mode, int64_t n_total, int ia, int ib, int d1, int d2) {
    static const char *names[] = {"prior", "grid", "interp"};
    const char *name = names[mode];
    args_t a2 = *a;
    a2.auto_chunk_n = n_total;
    loaded_t L;
    if (load_for_inference(a->positional, &a2, &L)) {
        unload(&L);
        return 1;
    }
    vae_model *m = &L.model;
    int rc = 1;
    real *vec = NULL;
    vae_dataset test = {0};
    vae_sample_job job;
    memset(&job, 0, sizeof job);
    job.spec.L = m->L;
    job.spec.seed = a->has_seed ? a->seed : L.st.seed;
    job.first = 0, job.last = n_total;
    if (L.cfg.type != VAE_MODEL_VAE && mode == 0) {
        fprintf(stderr, "vae: --prior needs a VAE; %s is a plain autoencoder\n", L.path);
        goto done;
    }
    if (mode == 1 && (d1 >= m->L || d2 >= m->L)) {
        fprintf(stderr, "vae: --grid %d,%d: latent dimensions must be in 0..%d (latent = %d)\n", d1, d2,
                m->L - 1, m->L);
        goto done;
    }
    if (a->slice && parse_slice(a->slice, n_total, &job.first, &job.last)) goto done;
    const int bits = vae_precision_bits(a->precision);
    if (bits < 0) {
        fprintf(stderr, "vae: --precision %s: expected fp32, tf32 or bf16\n", a->precision);
        goto done;
    }
    char out[1024], path[1100], lpath[1100], made[1024] = "";
    if (a->out) snprintf(out, sizeof out, "%s", a->out);
    else dirname_of(L.path, out, sizeof out);

    if (mode == 0) {
        job.spec.kind = VAE_LATENT_PRIOR;
    } else if (mode == 1) {
        job.spec.kind = VAE_LATENT_GRID;
        job.spec.d1 = d1, job.spec.d2 = d2;
        job.spec.steps = a->steps > 0 ? a->steps : 10;
        job.spec.quantiles = a->quantiles;
        job.spec.range = a->range > 0 ? a->range : 3.0;
        vec = vae_calloc((size_t)m->L, sizeof(real));
        if (!vec || (a->at && parse_vector("--at", a->at, vec, m->L))) goto done;
    } else {
        /* the endpoints: posterior means of test images ia and ib, in fp32 */
        char dir[1024];
        vae_data_dir(dir, sizeof dir, a->data);
        if (vae_dataset_load(&test, &L.cfg, dir, 0)) {
            fprintf(stderr, "vae: --interpolate needs the test images: %s\n", vae_error_get());
            goto done;
        }
        if (ia >= test.n || ib >= test.n) {
            fprintf(stderr, "vae: --interpolate %d,%d: test image indices must be in 0..%d\n", ia, ib,
                    test.n - 1);
            goto done;
        }
        vec = vae_malloc(2 * (size_t)m->L, sizeof(real));
        if (!vec) goto done;
        int ends[2] = {ia, ib};
        vae_encode_means(m, &test, ends, 2, vec);
        double ab = 0, aa = 0, bb = 0;
        for (int l = 0; l < m->L; l++) {
            ab += (double)vec[l] * vec[m->L + l];
            aa += (double)vec[l] * vec[l];
            bb += (double)vec[m->L + l] * vec[m->L + l];
        }
        double cosw = aa > 0 && bb > 0 ? ab / sqrt(aa * bb) : 1.0;
        job.spec.kind = a->slerp ? VAE_LATENT_SLERP : VAE_LATENT_LERP;
        job.spec.steps = n_total;
        job.spec.omega = acos(cosw > 1 ? 1 : cosw < -1 ? -1 : cosw);
    }
    job.vec = vec;

    if (bits < 23) {
        /* reduced precision: weights rounded once, activations per layer */
        m->be->round_mantissa(m->be, m->p, m->n_real, bits);
        m->round_bits = bits;
        if (m->be->set_precision && m->be->set_precision(m->be, bits)) {
            fprintf(stderr, "vae: %s\n", vae_error_get());
            goto done;
        }
    }

    const int png = a->png >= 0 ? a->png : mode != 0;
    /* a slice gets its own names, so pieces of a split run can share --out */
    char base[64];
    if (a->slice)
        snprintf(base, sizeof base, "%s-%" PRId64 "-%" PRId64, name, job.first, job.last);
    else
        snprintf(base, sizeof base, "%s", name);
    snprintf(path, sizeof path, "%s/%s.npy", out, base);
    snprintf(lpath, sizeof lpath, "%s/%s-latents.npy", out, base);
    /* the output folder once the arguments are known to be good; those of
     * its folders that it creates are removed again if nothing is written */
    if (vae_mkdir_p(out, made, sizeof made)) {
        fprintf(stderr, "vae: %s\n", vae_error_get());
        goto done;
    }
    vae_atomic_remove_stale(out);
    job.npy_path = a->no_npy ? NULL : path;
    job.latents_path = a->save_latents ? lpath : NULL;
    if (png) {
        const int sheet_px = a->sheet_px > 0 ? (int)a->sheet_px : VAE_SHEETS_DEFAULT_MAX_PX;
        job.sheet_dir = out;
        job.sheet_prefix = base;
        job.sheet_px = sheet_px;
        job.sheet_threads = L.cfg.threads; /* --threads, else the config's (0: all cores) */
        if (mode != 0) {
            job.sheet_cols = (int)(mode == 1 ? job.spec.steps : job.last - job.first);
        } else { /* prior: a square-ish sheet, as wide as one sheet allows */
            int64_t n = job.last - job.first, cols = (int64_t)ceil(sqrt((double)n));
            int64_t fit = (sheet_px + VAE_SHEETS_PAD) / (L.cfg.input.w + VAE_SHEETS_PAD);
            if (cols > fit) cols = fit > 0 ? fit : 1;
            job.sheet_cols = (int)cols;
        }
    }
    job.progress = a->progress >= 0 ? a->progress : isatty(2);
    job.stop = &g_sample_stop;

    const int64_t n = job.last - job.first;
    if (!a->json)
        fprintf(stderr,
                "vae: decoding %" PRId64 " images ([%" PRId64 ", %" PRId64 ") of %" PRId64
                ") on %s in chunks of %d (%s), %s\n",
                n, job.first, job.last, n_total, m->be->name, m->B,
                a->batch > 0 ? "--chunk" : L.chunk_why,
                bits == 23 ? "fp32" : bits == 10 ? "tf32" : "bf16");
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sample_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    vae_sample_result res;
    if (vae_sample_run(m, &job, &res)) {
        fprintf(stderr, "vae: %s\n", vae_error_get());
        vae_rmdir_made(out, made);
        goto done;
    }
    rc = res.stopped ? 130 : 0;
    /* the new .npy replaces the old one; latents beside it would be those of
     * the old images: they go with it */
    if (job.npy_path && !job.latents_path && access(lpath, F_OK) == 0) {
        if (unlink(lpath) == 0)
            fprintf(stderr, "vae: removed %s (the latents of the %s it replaced; --save-latents "
                            "writes this run's)\n", lpath, path);
        else
            fprintf(stderr, "vae: warning: %s is left from an earlier run (%s); it does not "
                            "describe the new %s\n", lpath, strerror(errno), path);
    }
    const double ips = res.seconds > 0 ? (double)res.written / res.seconds : 0;
    if (a->json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "mode", name);
        cJSON_AddStringToObject(j, "checkpoint", L.path);
        cJSON_AddNumberToObject(j, "images", (double)res.written);
        cJSON_AddNumberToObject(j, "first", (double)job.first);
        /* [first, last): the images written (a stopped run's last is where
         * the --slice that continues it starts) */
        cJSON_AddNumberToObject(j, "last", (double)(job.first + res.written));
        cJSON_AddNumberToObject(j, "seconds", res.seconds);
        cJSON_AddNumberToObject(j, "images_per_s", ips);
        /* after the first chunk (set-up included there): null with one chunk */
        if (res.first_images > 0 && res.written > res.first_images &&
            res.seconds > res.first_seconds) {
            cJSON_AddNumberToObject(j, "first_chunk_seconds", res.first_seconds);
            cJSON_AddNumberToObject(j, "steady_images_per_s",
                                    (double)(res.written - res.first_images) /
                                        (res.seconds - res.first_seconds));
        } else {
            cJSON_AddNullToObject(j, "first_chunk_seconds");
            cJSON_AddNullToObject(j, "steady_images_per_s");
        }
        cJSON_AddNumberToObject(j, "chunk", m->B);
        cJSON_AddStringToObject(j, "device", m->be->name);
        cJSON_AddStringToObject(j, "precision", bits == 23 ? "fp32" : bits == 10 ? "tf32" : "bf16");
        if (job.npy_path) cJSON_AddStringToObject(j, "npy", job.npy_path);
        else cJSON_AddNullToObject(j, "npy");
        if (job.latents_path) cJSON_AddStringToObject(j, "latents", job.latents_path);
        cJSON_AddNumberToObject(j, "sheets", res.sheets);
        cJSON_AddBoolToObject(j, "stopped", res.stopped);
        cJSON_AddNumberToObject(j, "peak_rss_mib", peak_rss_mib());
        char *txt = cJSON_PrintUnformatted(j);
        if (txt) printf("%s\n", txt);
        free(txt);
        cJSON_Delete(j);
    } else {
        printf("decoded %" PRId64 " images in %.2f s (%.0f images/s)", res.written, res.seconds, ips);
        if (job.npy_path) printf("; %s", job.npy_path);
        if (res.sheets) printf("; %d PNG sheet%s %s/%s*.png", res.sheets, res.sheets > 1 ? "s" : "", out, base);
        printf("\n");
    }
    if (res.stopped)
        fprintf(stderr, "vae: stopped by %s after %" PRId64 " of %" PRId64 " images; %s holds them "
                "(continue with --slice %" PRId64 ":%" PRId64 ")\n",
                g_sample_stop == SIGTERM ? "SIGTERM" : "SIGINT", res.written, n,
                job.npy_path ? job.npy_path : "nothing", job.first + res.written, job.last);
done:
    free(vec);
    vae_dataset_free(&test);
    unload(&L);
    return rc;
}

static int cmd_sample(int argc, char **argv) {
    args_t a;
    if (parse_args(argc, argv, &a, "sample", USAGE_SAMPLE)) return 2;
    if (a.help) {
        fputs(USAGE_SAMPLE, stdout);
        return 0;
    }
    if (!a.positional) {
        fputs(USAGE_SAMPLE, stderr);
        return 2;
    }
    if (a.device && parse_device(a.device, &(vae_device){0})) return 2;
    int ia = 0, ib = 1, d1 = 0, d2 = 1;
    if (a.interpolate && parse_index_pair(a.interpolate, &ia, &ib)) {
        fprintf(stderr, "vae: --interpolate %s: expected two test image indices I,J (0 to %d)\n",
                a.interpolate, INT_MAX);
        return 2;
    }
    if (a.grid && (parse_index_pair(a.grid, &d1, &d2) || d1 == d2)) {
        fprintf(stderr,
                "vae: --grid %s: expected two different latent dimensions D1,D2 (integers from 0)\n",
                a.grid);
        return 2;
    }
    const int modes = (a.prior > 0) + (a.grid != NULL) + (a.interpolate != NULL);
    if (modes > 1) {
        fprintf(stderr, "vae: --prior, --grid and --interpolate are separate runs; give one\n");
        return 2;
    }
    if (a.quantiles && a.range > 0) {
        fprintf(stderr, "vae: --quantiles and --range are two spacings of the grid; give one\n");
        return 2;
    }
    /* options that mean nothing in this mode are errors, not ignored */
    const int mode = a.prior > 0 ? 0 : a.grid ? 1 : a.interpolate ? 2 : -1;
    const struct {
        const char *flag;
        int given;
        const char *where; /* the modes it applies to */
        int in_mode[3];    /* prior, grid, interpolate */
    } only[] = {
        {"--steps", a.steps > 0, "--grid and --interpolate", {0, 1, 1}},
        {"--range", a.range > 0, "--grid", {0, 1, 0}},
        {"--quantiles", a.quantiles, "--grid", {0, 1, 0}},
        {"--at", a.at != NULL, "--grid", {0, 1, 0}},
        {"--slerp", a.slerp, "--interpolate", {0, 0, 1}},
        {"--slice", a.slice != NULL, "--prior, --grid and --interpolate", {1, 1, 1}},
        {"--chunk", a.batch > 0, "--prior, --grid and --interpolate", {1, 1, 1}},
        {"--precision", a.precision != NULL, "--prior, --grid and --interpolate", {1, 1, 1}},
        {"--png/--no-png", a.png >= 0, "--prior, --grid and --interpolate", {1, 1, 1}},
        {"--sheet-px", a.sheet_px > 0, "--prior, --grid and --interpolate", {1, 1, 1}},
        {"--no-npy", a.no_npy, "--prior, --grid and --interpolate", {1, 1, 1}},
        {"--save-latents", a.save_latents, "--prior, --grid and --interpolate", {1, 1, 1}},
        {"--json", a.json, "--prior, --grid and --interpolate", {1, 1, 1}},
    };
    for (size_t k = 0; k < sizeof only / sizeof only[0]; k++)
        if (only[k].given && (mode < 0 || !only[k].in_mode[mode])) {
            fprintf(stderr, "vae: %s applies to %s only\n", only[k].flag, only[k].where);
            return 2;
        }
    if (modes == 1) {
        const int64_t S = a.steps > 0 ? a.steps : 10;
        const int64_t n_total = mode == 0 ? a.prior : mode == 1 ? S * S : S;
        int64_t first, last;
        if (a.slice && parse_slice(a.slice, n_total, &first, &last)) return 2;
        if (vae_precision_bits(a.precision) < 0) {
            fprintf(stderr, "vae: --precision %s: expected fp32, tf32 or bf16\n", a.precision);
            return 2;
        }
        if (mode == 0) return sample_stream(&a, 0, n_total, 0, 0, 0, 0);
        if (mode == 1) return sample_stream(&a, 1, n_total, 0, 0, d1, d2);
        return sample_stream(&a, 2, n_total, ia, ib, 0, 0);
    }

    loaded_t L;
    if (load_for_inference(a.positional, &a, &L)) {
        unload(&L);
        return 1;
    }
    char out[1024], dir[1024];
    if (a.out) snprintf(out, sizeof out, "%s", a.out);
    else dirname_of(L.path, out, sizeof out);
    vae_data_dir(dir, sizeof dir, a.data);
    uint64_t seed = a.has_seed ? a.seed : L.st.seed;
    /* Without test images the grids that need them are left out, unless
     * --data named a folder that does not hold them; test files that exist
     * but do not load are an error either way. */
    vae_dataset test = {0};
    int rc = vae_dataset_load(&test, &L.cfg, dir, 0);
    if (rc && (rc != VAE_ENOTFOUND || (a.data && *a.data))) {
        fprintf(stderr, "vae: %s\n", vae_error_get());
        unload(&L);
        return 1;
    }
    const int have_test = rc == VAE_OK;
    if (!have_test && L.cfg.type != VAE_MODEL_VAE) { /* no prior: every grid needs test images */
        fprintf(stderr, "vae: %s is a plain autoencoder: its grids (reconstructions, "
                        "interpolation) need the test images, and there are none (%s); give --data\n",
                L.path, vae_error_get());
        unload(&L);
        return 1;
    }
    if (!have_test)
        fprintf(stderr, "vae: no test data (%s); writing the prior grids only\n", vae_error_get());
    else if (test.n < 2)
        fprintf(stderr, "vae: the test set has one image: no interpolation.png (it needs two)\n");
    if (have_test && L.cfg.type != VAE_MODEL_VAE)
        fprintf(stderr, "vae: %s is a plain autoencoder (no prior): no samples.png or "
                        "traversal.png\n", L.path);
    char made[1024];
    if (vae_mkdir_p(out, made, sizeof made)) { /* after the data: a failure leaves no folder */
        fprintf(stderr, "vae: %s\n", vae_error_get());
        vae_dataset_free(&test);
        unload(&L);
        return 1;
    }
    rc = 0;
    char wrote[200];
    if (vae_write_grids(&L.model, have_test ? &test : NULL, out, seed, 0, 1, wrote, sizeof wrote)) {
        fprintf(stderr, "vae: %s\n", vae_error_get());
        vae_rmdir_made(out, made);
        rc = 1;
    } else {
        printf("wrote %s to %s\n", wrote, out);
    }
    vae_dataset_free(&test);
    unload(&L);
    return rc;
}

/* ------------------------------------------------------------ info */

static void shape_str(char *out, size_t len, vae_shape s) {
    if (s.h == 1 && s.w == 1) snprintf(out, len, "%d", s.c);
    else snprintf(out, len, "%dx%dx%d", s.c, s.h, s.w);
}

static void print_layers(const vae_model *m, const char *part, const vae_layer *ls, int n,
                         double *flops, size_t *params) {
    char in[32], out[32], desc[64];
    for (int i = 0; i < n; i++) {
        const vae_layer_spec *s = &ls[i].spec;
        switch (s->kind) {
        case VAE_LAYER_CONV:
            snprintf(desc, sizeof desc, "conv k%d s%d p%d", s->k, s->stride, s->pad);
            break;
        case VAE_LAYER_CONVT:
            snprintf(desc, sizeof desc, "convT k%d s%d p%d op%d", s->k, s->stride, s->pad, s->out_pad);
            break;
        case VAE_LAYER_LEAKY_RELU:
            snprintf(desc, sizeof desc, "leaky_relu %.3g", s->slope);
            break;
        default:
            snprintf(desc, sizeof desc, "%s", vae_layer_kind_name(s->kind));
        }
        shape_str(in, sizeof in, s->in_shape);
        shape_str(out, sizeof out, s->out_shape);
        char name[32];
        if (!strcmp(part, "head")) snprintf(name, sizeof name, "head");
        else snprintf(name, sizeof name, "%s.%d", part, i);
        double f = vae_layer_flops(&ls[i]);
        size_t p = vae_layer_params(m, &ls[i]);
        printf("  %-12s %-22s %12s -> %-12s %10zu %12.0f\n", name, desc, in, out, p, f);
        *flops += f;
        *params += p;
    }
}

static int cmd_info(int argc, char **argv) {
    args_t a;
    if (parse_args(argc, argv, &a, "info", USAGE_INFO)) return 2;
    if (a.help) {
        fputs(USAGE_INFO, stdout);
        return 0;
    }
    if (!a.positional) {
        fputs(USAGE_INFO, stderr);
        return 2;
    }
    vae_config cfg;
    vae_config_defaults(&cfg);
    char ckdir[2048];
    struct stat sb;
    if (stat(a.positional, &sb) == 0 && S_ISDIR(sb.st_mode)) { /* a run folder: its newest */
        if (vae_ckpt_resolve(a.positional, ckdir, sizeof ckdir)) {
            fprintf(stderr, "vae: %s\n", vae_error_get());
            return 1;
        }
        a.positional = ckdir;
    }
    size_t len = strlen(a.positional);
    int is_ckpt = len > 12 && !strcmp(a.positional + len - 12, ".safetensors");
    if (!is_ckpt) is_ckpt = starts_like_safetensors(a.positional); /* by another name */
    vae_st_file f;
    int rc = is_ckpt ? vae_ckpt_open(a.positional, &f, &cfg) : vae_config_load(&cfg, a.positional);
    if (rc) {
        fprintf(stderr, "vae: %s\n", vae_error_get());
        return 1;
    }
    if (is_ckpt) vae_st_free(&f);
    if (a.batch > 0) cfg.batch = (int)a.batch;
    /* the model's shapes and sizes without its memory: a config may describe
     * more than this machine holds */
    vae_backend *be = vae_backend_plan_create();
    vae_model m;
    if (!be || vae_model_create(&m, &cfg, be, cfg.batch)) {
        fprintf(stderr, "vae: %s\n", vae_error_get());
        if (be) be->destroy(be);
        vae_config_free(&cfg);
        return 1;
    }
    char in[32];
    shape_str(in, sizeof in, cfg.input);
    printf("%s: %s, input %s, latent %d, likelihood %s\n", a.positional,
           cfg.type == VAE_MODEL_VAE ? "VAE" : "autoencoder", in, cfg.latent,
           cfg.likelihood == VAE_LIK_BERNOULLI ? "bernoulli (BCE on logits)" : "gaussian (MSE)");
    printf("  %-12s %-22s %12s    %-12s %10s %12s\n", "layer", "op", "in", "out", "params", "FLOPs/img");
    double flops = 0;
    size_t params = 0;
    print_layers(&m, "encoder", m.enc, m.n_enc - 1, &flops, &params);
    print_layers(&m, "head", m.enc + m.n_enc - 1, 1, &flops, &params);
    print_layers(&m, "decoder", m.dec, m.n_dec, &flops, &params);
    printf("  total: %zu parameters (%.2f MiB as float32), %.3f MFLOPs per image forward "
           "(about 3x that per training image)\n", params, params * 4.0 / 1048576.0, flops / 1e6);
    printf("memory for batch %d: %.2f MiB (parameters, gradients, Adam moments, activations)\n",
           cfg.batch, vae_model_plan_bytes(&cfg, cfg.batch) / 1048576.0);
    /* what a run of this config needs in one device arena (vae train reserves it) */
    size_t D = (size_t)vae_shape_count(cfg.input), n_img = 0;
    if (cfg.dataset == VAE_DATA_MNIST) n_img = 70000;
    else if (cfg.dataset == VAE_DATA_CIFAR10) n_img = 60000;
    size_t plan = vae_model_plan_bytes(&cfg, cfg.batch);
    if (n_img)
        printf("device arena for training: %.1f MiB (model %.1f MiB + %zu training and test images "
               "as uint8 %.1f MiB), plus backend scratch and cuDNN workspace\n",
               (plan + n_img * (D + 4)) / 1048576.0, plan / 1048576.0, n_img,
               n_img * (D + 4) / 1048576.0);
    char desc[512];
    vae_cuda_describe(0, desc, sizeof desc);
    printf("cuda: %s\n", desc);
    vae_model_free(&m);
    be->destroy(be);
    vae_config_free(&cfg);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fputs(USAGE, stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        fputs(USAGE, stdout);
        return 0;
    }
    if (!strcmp(cmd, "--version")) {
        printf("vae %s (%s)\n", VAE_VERSION, vae_git_describe());
        return 0;
    }
    if (!strcmp(cmd, "train")) return cmd_train(argc - 2, argv + 2);
    if (!strcmp(cmd, "eval")) return cmd_eval(argc - 2, argv + 2);
    if (!strcmp(cmd, "sample")) return cmd_sample(argc - 2, argv + 2);
    if (!strcmp(cmd, "info")) return cmd_info(argc - 2, argv + 2);
    fprintf(stderr, "vae: unknown command '%s'\n\n%s", cmd, USAGE);
    return 2;
}

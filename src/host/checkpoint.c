/* checkpoint.c — training state <-> safetensors.
 *
 * One file per checkpoint holds
 *   <state_dict name>                  model parameters (PyTorch layout)
 *   optimizer.exp_avg.<name>           Adam first moment
 *   optimizer.exp_avg_sq.<name>        Adam second moment
 * and string metadata: format, format_version, config (the full config
 * text), step, steps_per_epoch, seed, batch, acc_recon, acc_kl, elapsed_s,
 * version, dtype, crc32 (added by the writer). torch's load_state_dict(strict=True)
 * accepts the model tensors once the optimizer.* keys are set aside.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "vae_train.h"

#define CKPT_FORMAT "vae-engine-checkpoint"
#define CKPT_VERSION "1"
#define OPT_M "optimizer.exp_avg."
#define OPT_V "optimizer.exp_avg_sq."

int vae_ckpt_save(const char *path, vae_model *m, const vae_train_state *st) {
    size_t P = m->n_real;
    real *host = vae_malloc(3 * P + 1, sizeof(real));
    vae_st_tensor *t = vae_calloc((size_t)3 * m->n_params, sizeof *t);
    if (!host || !t) {
        free(host);
        free(t);
        return vae_error_prefix(VAE_ENOMEM, "%s", path);
    }
    m->be->download(m->be, host, m->p, P * sizeof(real));
    m->be->download(m->be, host + P, m->m, P * sizeof(real));
    m->be->download(m->be, host + 2 * P, m->v, P * sizeof(real));

    static const char *prefixes[3] = {"", OPT_M, OPT_V};
    int n = 0;
    for (int part = 0; part < 3; part++) {
        for (int i = 0; i < m->n_params; i++) {
            const vae_param *p = &m->params[i];
            vae_st_tensor *x = &t[n++];
            snprintf(x->name, sizeof x->name, "%s%s", prefixes[part], p->name);
            snprintf(x->dtype, sizeof x->dtype, "%s", VAE_REAL_NAME);
            x->ndim = p->ndim;
            for (int d = 0; d < p->ndim; d++) x->shape[d] = p->shape[d];
            x->data = host + (size_t)part * P + p->offset;
            x->bytes = p->count * sizeof(real);
        }
    }

    char step[32], spe[32], seed[32], batch[32], ar[40], ak[40], el[40];
    snprintf(step, sizeof step, "%" PRId64, st->step);
    snprintf(spe, sizeof spe, "%" PRId64, st->steps_per_epoch);
    snprintf(seed, sizeof seed, "%" PRIu64, st->seed);
    snprintf(batch, sizeof batch, "%d", st->batch);
    snprintf(ar, sizeof ar, "%.17g", st->acc_recon);
    snprintf(ak, sizeof ak, "%.17g", st->acc_kl);
    snprintf(el, sizeof el, "%.6f", st->elapsed_s);
    char ver[128];
    snprintf(ver, sizeof ver, "%s", vae_git_describe());
    vae_st_meta meta[] = {
        {"format", CKPT_FORMAT},
        {"format_version", CKPT_VERSION},
        {"config", m->cfg->text ? m->cfg->text : ""},
        {"step", step},
        {"steps_per_epoch", spe},
        {"seed", seed},
        {"batch", batch},
        {"acc_recon", ar},
        {"acc_kl", ak},
        {"elapsed_s", el},
        {"version", VAE_VERSION}, /* as run.json: the release, and the commit */
        {"git_describe", ver},
        {"rng", VAE_RNG_NAME},
    };
    int rc = vae_st_write(path, t, n, meta, (int)(sizeof meta / sizeof meta[0]));
    free(host);
    free(t);
    return rc;
}

int vae_ckpt_open(const char *path, vae_st_file *f, vae_config *cfg) {
    memset(f, 0, sizeof *f);
    int rc = vae_st_read(f, path);
    if (rc) return rc;
    const char *fmt = vae_st_meta_get(f, "format");
    /* The messages quote metadata that lives in f: format them before freeing f. */
    if (!fmt || strcmp(fmt, CKPT_FORMAT) != 0) {
        rc = vae_error_set(VAE_EINVAL,
                           "%s: not a vae checkpoint (metadata 'format' is %s%s%s; expected \"%s\")",
                           path, fmt ? "\"" : "", fmt ? fmt : "missing", fmt ? "\"" : "",
                           CKPT_FORMAT);
        vae_st_free(f);
        return rc;
    }
    const char *ver = vae_st_meta_get(f, "format_version");
    if (!ver || strcmp(ver, CKPT_VERSION) != 0) {
        rc = vae_error_set(VAE_EINVAL, "%s: checkpoint format_version %s; this build reads %s",
                           path, ver ? ver : "missing", CKPT_VERSION);
        vae_st_free(f);
        return rc;
    }
    /* vae_st_read checked the checksum if there is one; ours always has one */
    if (!vae_st_meta_get(f, "crc32")) {
        vae_st_free(f);
        return vae_error_set(VAE_EINVAL,
                             "%s: checkpoint has no 'crc32' metadata, which every checkpoint this "
                             "engine writes has: its tensors cannot be checked",
                             path);
    }
    const char *text = vae_st_meta_get(f, "config");
    if (!text) {
        vae_st_free(f);
        return vae_error_set(VAE_EINVAL, "%s: checkpoint has no 'config' metadata", path);
    }
    char name[1100];
    snprintf(name, sizeof name, "%s[config]", path);
    rc = vae_config_parse(cfg, text, name);
    if (rc) vae_st_free(f);
    return rc;
}

static int meta_i64(const vae_st_file *f, const char *path, const char *key, int64_t *out) {
    const char *s = vae_st_meta_get(f, key);
    char *end = NULL;
    if (!s) return vae_error_set(VAE_EINVAL, "%s: checkpoint metadata '%s' is missing", path, key);
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < 0)
        return vae_error_set(VAE_EINVAL, "%s: checkpoint metadata '%s' = \"%s\"; expected a non-negative integer",
                             path, key, s);
    *out = v;
    return VAE_OK;
}

static int meta_f64(const vae_st_file *f, const char *path, const char *key, double *out) {
    const char *s = vae_st_meta_get(f, key);
    char *end = NULL;
    if (!s) return vae_error_set(VAE_EINVAL, "%s: checkpoint metadata '%s' is missing", path, key);
    double v = strtod(s, &end);
    if (end == s || *end || !isfinite(v))
        return vae_error_set(VAE_EINVAL,
                             "%s: checkpoint metadata '%s' = \"%s\"; expected a finite number", path,
                             key, s);
    *out = v;
    return VAE_OK;
}

/* Copy tensor `name` into host[count], checking dtype and shape against p. */
static int take(const vae_st_file *f, const char *path, const char *name, const vae_param *p,
                real *dst) {
    const vae_st_tensor *t = vae_st_find(f, name);
    if (!t) return vae_error_set(VAE_EINVAL, "%s: tensor '%s' is missing", path, name);
    int same = t->ndim == p->ndim;
    for (int d = 0; same && d < p->ndim; d++) same = t->shape[d] == p->shape[d];
    if (!same) {
        char want[64] = "", got[64] = "";
        for (int d = 0; d < p->ndim; d++)
            snprintf(want + strlen(want), sizeof want - strlen(want), "%s%" PRId64, d ? "," : "", p->shape[d]);
        for (int d = 0; d < t->ndim; d++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%" PRId64, d ? "," : "", t->shape[d]);
        return vae_error_set(VAE_EINVAL, "%s: tensor '%s' has shape [%s]; the model expects [%s]",
                             path, name, got, want);
    }
    if (strcmp(t->dtype, "F32") == 0) {
        const float *s = t->data;
        for (size_t i = 0; i < p->count; i++) dst[i] = (real)s[i];
    } else if (strcmp(t->dtype, "F64") == 0) {
        const double *s = t->data;
        for (size_t i = 0; i < p->count; i++) dst[i] = (real)s[i];
    } else {
        return vae_error_set(VAE_EINVAL, "%s: tensor '%s' has dtype %s; expected F32 or F64", path,
                             name, t->dtype);
    }
    /* training never saves a non-finite value (its NaN guard stops first) */
    for (size_t i = 0; i < p->count; i++)
        if (!isfinite(dst[i]))
            return vae_error_set(VAE_EINVAL,
                                 "%s: tensor '%s' holds a non-finite value (%g at index %zu)", path,
                                 name, (double)dst[i], i);
    return VAE_OK;
}

int vae_ckpt_restore(const vae_st_file *f, const char *path, vae_model *m, vae_train_state *st,
                     int with_optim) {
    size_t P = m->n_real;
    real *host = vae_malloc(3 * P + 1, sizeof(real));
    if (!host) return vae_error_prefix(VAE_ENOMEM, "%s", path);
    int rc = VAE_OK;
    char name[160];
    for (int part = 0; part < (with_optim ? 3 : 1) && !rc; part++) {
        static const char *prefixes[3] = {"", OPT_M, OPT_V};
        for (int i = 0; i < m->n_params && !rc; i++) {
            snprintf(name, sizeof name, "%s%s", prefixes[part], m->params[i].name);
            rc = take(f, path, name, &m->params[i], host + (size_t)part * P + m->params[i].offset);
        }
    }
    /* every model tensor in the file must belong to the model */
    for (int i = 0; i < f->n_t && !rc; i++) {
        const char *nm = f->t[i].name;
        if (strncmp(nm, "optimizer.", 10) == 0) continue;
        if (vae_model_find_param(m, nm) < 0)
            rc = vae_error_set(VAE_EINVAL, "%s: tensor '%s' is not a parameter of this model", path, nm);
    }
    int64_t step = 0, spe = 0, seed = 0, batch = 0;
    if (!rc && st) {
        rc = meta_i64(f, path, "step", &step);
        if (!rc) rc = meta_i64(f, path, "steps_per_epoch", &spe);
        if (!rc) rc = meta_i64(f, path, "seed", &seed);
        if (!rc) rc = meta_i64(f, path, "batch", &batch);
        if (!rc) rc = meta_f64(f, path, "acc_recon", &st->acc_recon);
        if (!rc) rc = meta_f64(f, path, "acc_kl", &st->acc_kl);
        if (!rc) rc = meta_f64(f, path, "elapsed_s", &st->elapsed_s);
        st->step = step;
        st->steps_per_epoch = spe;
        st->seed = (uint64_t)seed;
        st->batch = (int)batch;
    }
    if (!rc) {
        m->be->upload(m->be, m->p, host, P * sizeof(real));
        if (with_optim) {
            m->be->upload(m->be, m->m, host + P, P * sizeof(real));
            m->be->upload(m->be, m->v, host + 2 * P, P * sizeof(real));
        }
    }
    free(host);
    return rc;
}

/* Step recorded in a checkpoint, or -1 if it is not a valid checkpoint. */
static int64_t ckpt_step(const char *path) {
    vae_st_file f;
    vae_config cfg;
    vae_config_defaults(&cfg);
    if (vae_ckpt_open(path, &f, &cfg) != VAE_OK) return -1;
    int64_t step = -1;
    if (meta_i64(&f, path, "step", &step) != VAE_OK) step = -1;
    vae_st_free(&f);
    vae_config_free(&cfg);
    return step;
}

int vae_ckpt_resolve(const char *path, char *out, size_t out_len) {
    struct stat sb;
    if (stat(path, &sb) != 0)
        return vae_error_set(VAE_EIO, "%s: %s", path, strerror(errno));
    if (!S_ISDIR(sb.st_mode)) {
        snprintf(out, out_len, "%s", path);
        return VAE_OK;
    }
    DIR *d = opendir(path);
    if (!d) return vae_error_set(VAE_EIO, "%s: %s", path, strerror(errno));
    int64_t best = -1;
    int skipped = 0;
    struct dirent *e;
    char full[2048];
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        const char *ext = ".safetensors";
        if (len < strlen(ext) || strcmp(e->d_name + len - strlen(ext), ext) != 0) continue;
        snprintf(full, sizeof full, "%s/%s", path, e->d_name);
        int64_t s = ckpt_step(full);
        if (s < 0) {
            fprintf(stderr, "vae: skipping damaged checkpoint: %s\n", vae_error_get());
            skipped++;
            continue;
        }
        if (s > best) {
            best = s;
            snprintf(out, out_len, "%s", full);
        }
    }
    closedir(d);
    if (best < 0)
        return vae_error_set(VAE_EINVAL, "%s: no valid checkpoint (*.safetensors) in this directory%s",
                             path, skipped ? " (the ones found are damaged, see above)" : "");
    return VAE_OK;
}

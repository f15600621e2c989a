/* train.c — the training loop, test-set evaluation and the run directory.
 *
 * Reproducibility: every random choice is a pure function of (seed, step):
 * the epoch's shuffle is Fisher-Yates driven by Philox stream
 * VAE_RNG_SHUFFLE with subsequence = epoch, the reparameterisation noise of
 * optimizer step s is stream VAE_RNG_TRAIN with subsequence = s. Resuming
 * from a checkpoint taken after step s therefore replays steps s+1.. exactly,
 * also from the middle of an epoch (the partial epoch's loss sums are in the
 * checkpoint too).
 *
 * No host decision inside a step depends on device data, and nothing the
 * host passes changes between steps: a step is step_begin (the step's
 * values, vae_step_vals, computed on the device), gather, forward/backward,
 * Adam and step_commit, all issued without a read, so on CUDA it is captured
 * once as a graph and replayed (vae_stepper in vae_train.h). The
 * NaN guard lives on the device (vae_math.h, "step bookkeeping"): adam_step
 * flags a non-finite gradient norm and skips the update, step_commit adds a
 * good step's loss sums and images to the epoch's, counts a bad one instead,
 * and after more than --max-bad-steps bad steps marks the run halted, after
 * which Adam changes nothing. The host reads that state a few times per
 * epoch (step_reader: progress bar, every POLL_STEPS steps, epoch end, stop)
 * and, on a halt, writes the last good state — still on the device — as the
 * checkpoint of the halting step.
 */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vae_train.h"

/* ------------------------------------------------------------ signals */

static volatile sig_atomic_t g_stop_signal = 0;
static void on_signal(int sig) { g_stop_signal = sig; }

static void install_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

static const char *stop_name(void) {
    return g_stop_signal == SIGINT ? "interrupted (SIGINT)" : "terminated (SIGTERM)";
}

static void restore_signals(void) {
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
}

/* ------------------------------------------------------------ data */

int vae_dev_data_upload(vae_dev_data *dd, vae_backend *be, const vae_dataset *ds) {
    memset(dd, 0, sizeof *dd);
    dd->n = ds->n;
    dd->d = ds->c * ds->h * ds->w;
    size_t bytes = (size_t)dd->n * (size_t)dd->d;
    dd->data = be->alloc(be, bytes);
    dd->idx = be->alloc(be, (size_t)dd->n * sizeof(int32_t));
    int32_t *iota = vae_malloc((size_t)dd->n, sizeof(int32_t));
    if (!dd->data || !dd->idx || !iota) {
        free(iota);
        vae_dev_data_free(dd, be);
        return vae_error_prefix(VAE_ENOMEM, "placing the dataset (%zu bytes) in %s memory", bytes,
                                be->name);
    }
    for (int i = 0; i < dd->n; i++) iota[i] = i;
    be->upload(be, dd->data, ds->images, bytes);
    be->upload(be, dd->idx, iota, (size_t)dd->n * sizeof(int32_t));
    free(iota);
    return VAE_OK;
}

/* Backend bytes vae_dev_data_upload takes for ds (256-byte rounding, as reserve counts). */
static size_t data_plan_bytes(const vae_dataset *ds) {
    size_t px = (size_t)ds->n * (size_t)ds->c * (size_t)ds->h * (size_t)ds->w;
    return ((px + 255) & ~(size_t)255) + (((size_t)ds->n * sizeof(int32_t) + 255) & ~(size_t)255);
}

void vae_dev_data_free(vae_dev_data *dd, vae_backend *be) {
    if (dd->idx) be->release(be, dd->idx);
    if (dd->data) be->release(be, dd->data);
    memset(dd, 0, sizeof *dd);
}

vae_step_plan vae_train_plan(const vae_config *cfg, int64_t n) {
    vae_step_plan p;
    memset(&p, 0, sizeof p);
    p.n = n;
    p.batch = cfg->batch;
    p.warmup = cfg->kl_warmup_steps;
    p.beta = cfg->beta;
    p.beta1 = cfg->beta1;
    p.beta2 = cfg->beta2;
    p.lr_schedule = cfg->lr_schedule;
    p.lr_warmup = cfg->lr_warmup_steps;
    p.total_steps = (int64_t)cfg->epochs * ((n + cfg->batch - 1) / cfg->batch);
    p.min_lr_ratio = cfg->lr > 0 ? (double)cfg->min_lr / (double)cfg->lr : 0.0;
    return p;
}

void vae_shuffle_perm(int32_t *perm, int n, uint64_t seed, int64_t epoch) {
    for (int i = 0; i < n; i++) perm[i] = i;
    for (int i = n - 1; i > 0; i--) {
        double u = vae_uniform_at(seed, VAE_RNG_SHUFFLE, (uint64_t)epoch, (uint64_t)(n - 1 - i));
        int j = (int)(u * (double)(i + 1));
        if (j > i) j = i;
        int32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

/* ------------------------------------------------------------ evaluation */

static double logsumexp(const double *v, int n) {
    double mx = -INFINITY;
    for (int i = 0; i < n; i++)
        if (v[i] > mx) mx = v[i];
    if (!isfinite(mx)) return mx;
    double s = 0;
    for (int i = 0; i < n; i++) s += exp(v[i] - mx);
    return mx + log(s);
}

int vae_evaluate(vae_model *m, const vae_dev_data *dd, uint64_t seed, int iw_k,
                 vae_eval_result *r) {
    vae_backend *be = m->be;
    const int B = m->B, L = m->L;
    const int nb = (dd->n + B - 1) / B;
    memset(r, 0, sizeof *r);
    r->n = dd->n;
    r->iw_k = iw_k;
    r->iw_nll = NAN;
    if (iw_k > 0 && m->cfg->type != VAE_MODEL_VAE)
        return vae_error_set(VAE_EINVAL, "--iw needs a VAE; this model is a plain autoencoder");

    real *rec = vae_malloc((size_t)B, sizeof(real));
    real *lq = vae_malloc((size_t)B, sizeof(real));
    double *logw = iw_k > 0 ? vae_malloc((size_t)B * iw_k, sizeof(double)) : NULL;
    real *lqd = iw_k > 0 ? be->alloc(be, (size_t)B * sizeof(real)) : NULL;
    if (!rec || !lq || (iw_k > 0 && (!logw || !lqd))) {
        free(rec), free(lq), free(logw);
        if (lqd) be->release(be, lqd);
        return vae_error_prefix(VAE_ENOMEM, "evaluation buffers");
    }
    double sum_rec = 0, sum_kl = 0, sum_iw = 0;
    be->zero(be, m->acc + VAE_ACC_EVAL_RECON, 2 * sizeof(double));
    for (int bi = 0; bi < nb; bi++) {
        int b0 = bi * B, bn = dd->n - b0 < B ? dd->n - b0 : B;
        /* the ELBO with fixed evaluation noise: sample k = 0 of this batch */
        vae_step_vals v = vae_step_vals_make(bi, b0, (uint64_t)bi, bn, 0, 1, 1);
        const vae_step_vals *sv = vae_model_put_vals(m, &v);
        be->gather_batch(be, m->x, dd->data, dd->idx, sv, bn, dd->d);
        vae_model_forward(m, bn, seed, VAE_RNG_EVAL, sv);
        vae_sum2_into(be, m->acc + VAE_ACC_EVAL_RECON, m->recon, (size_t)bn,
                      m->acc + VAE_ACC_EVAL_KL, m->kl, (size_t)bn);
        for (int k = 0; k < iw_k; k++) {
            v.sub = (uint64_t)k * (uint64_t)nb + (uint64_t)bi;
            if (k > 0) {
                sv = vae_model_put_vals(m, &v);
                vae_model_forward(m, bn, seed, VAE_RNG_EVAL, sv);
            }
            be->log_q_minus_log_p(be, lqd, m->z, vae_model_head(m), bn, L, seed, VAE_RNG_EVAL, sv);
            be->download(be, rec, m->recon, (size_t)bn * sizeof(real));
            be->download(be, lq, lqd, (size_t)bn * sizeof(real));
            /* log w = log p(x|z) + log p(z) - log q(z|x) */
            for (int b = 0; b < bn; b++) logw[(size_t)b * iw_k + k] = -(double)rec[b] - (double)lq[b];
        }
        for (int b = 0; b < bn && iw_k > 0; b++)
            sum_iw += -(logsumexp(logw + (size_t)b * iw_k, iw_k) - log((double)iw_k));
    }
    double acc[2];
    be->download(be, acc, m->acc + VAE_ACC_EVAL_RECON, sizeof acc);
    sum_rec = acc[0];
    sum_kl = acc[1];
    r->recon = sum_rec / dd->n;
    r->kl = sum_kl / dd->n;
    r->nelbo = r->recon + r->kl;
    if (iw_k > 0) r->iw_nll = sum_iw / dd->n;
    if (m->cfg->likelihood == VAE_LIK_GAUSSIAN) {
        /* recon = sum (x - x^)^2 / (2 s^2) + D/2 log(2 pi s^2) per image */
        double s2 = (double)m->cfg->sigma * m->cfg->sigma;
        double c = 0.5 * m->D * log(2 * M_PI * s2);
        r->mse = (r->recon - c) * 2 * s2 / m->D;
    } else {
        r->mse = NAN;
    }
    free(rec), free(lq), free(logw);
    if (lqd) be->release(be, lqd);
    return VAE_OK;
}

/* ------------------------------------------------------------ run directory */

static int write_text_atomic(const char *path, const char *text) {
    vae_atomic_file af;
    int rc = vae_atomic_open(&af, path);
    if (rc) return rc;
    vae_atomic_write(&af, text, strlen(text));
    return vae_atomic_commit(&af);
}

/* Keep only the metrics lines of epochs <= last_epoch (after a resume). */
static int trim_metrics(const char *path, int64_t last_epoch) {
    uint8_t *buf = NULL;
    size_t len = 0;
    if (access(path, F_OK) != 0) return VAE_OK;
    int rc = vae_read_file(path, &buf, &len, (size_t)1 << 30);
    if (rc) return rc;
    char *out = vae_malloc(len + 1, 1);
    if (!out) {
        free(buf);
        return VAE_ENOMEM;
    }
    size_t o = 0;
    char *s = (char *)buf;
    char *line_start = s;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || s[i] == '\n') {
            size_t n = (size_t)(s + i - line_start);
            char save = i < len ? s[i] : 0;
            if (i < len) s[i] = 0;
            cJSON *j = n ? cJSON_ParseWithLength(line_start, n) : NULL;
            cJSON *e = j ? cJSON_GetObjectItemCaseSensitive(j, "epoch") : NULL;
            if (e && cJSON_IsNumber(e) && e->valuedouble <= (double)last_epoch) {
                memcpy(out + o, line_start, n);
                o += n;
                out[o++] = '\n';
            }
            cJSON_Delete(j);
            if (i < len) s[i] = save;
            line_start = s + i + 1;
        }
    }
    out[o] = 0;
    rc = write_text_atomic(path, out);
    free(out);
    free(buf);
    return rc;
}

static int append_metrics(const char *path, cJSON *obj) {
    char *line = cJSON_PrintUnformatted(obj);
    if (!line) return vae_error_set(VAE_ENOMEM, "%s: out of memory formatting metrics", path);
    FILE *f = fopen(path, "a");
    int rc = VAE_OK;
    if (!f || fprintf(f, "%s\n", line) < 0 || fflush(f) != 0 || fsync(fileno(f)) != 0)
        rc = vae_error_set(VAE_EIO, "%s: %s", path, strerror(errno));
    if (f && fclose(f) != 0 && !rc) rc = vae_error_set(VAE_EIO, "%s: %s", path, strerror(errno));
    free(line);
    return rc;
}

/* s as one shell word: as it is when it has only safe characters, else in
 * single quotes (a ' written as '\''); truncated to fit len. */
static const char *shell_quote(char *dst, size_t len, const char *s) {
    if (!len) return "";
    int plain = *s != 0;
    for (const char *p = s; *p && plain; p++)
        plain = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
                strchr("._/-+=:,@%", *p);
    if (plain) {
        snprintf(dst, len, "%s", s);
        return dst;
    }
    size_t k = 0;
    dst[k++] = '\'';
    for (const char *p = s; *p && k + 5 < len; p++) {
        if (*p == '\'') {
            memcpy(dst + k, "'\\''", 4);
            k += 4;
        } else {
            dst[k++] = *p;
        }
    }
    if (k + 1 < len) dst[k++] = '\'';
    dst[k < len ? k : len - 1] = 0;
    return dst;
}

/* The message of a run stopped by SIGINT/SIGTERM after step `step` of
 * epoch `epoch` (1-based), its checkpoint at path written (wrc == 0) or
 * not; returns 130. The checkpoint holds the config with the flags given
 * (--max-bad-steps aside, which the command repeats), so the printed
 * command continues the run exactly. */
static int report_stop(const vae_train_opts *o, int64_t step, int64_t epoch, const char *path,
                       int wrc) {
    fprintf(stderr, "%svae: %s at step %" PRId64 " (epoch %" PRId64 "); %s %s\n",
            o->progress ? "\n" : "", /* below the progress bar */ stop_name(), step, epoch,
            wrc ? "could not write checkpoint" : "checkpoint written to", path);
    if (wrc) {
        fprintf(stderr, "vae: %s\n", vae_error_get());
    } else {
        char qo[2100], qd[2100], mb[48] = "";
        if (o->max_bad_steps > 0) snprintf(mb, sizeof mb, " --max-bad-steps %d", o->max_bad_steps);
        /* a folder named like an option goes attached (--data=--x), as a value */
        fprintf(stderr, "vae: resume with: vae train --resume%s%s --data%s%s%s\n",
                o->out_dir[0] == '-' ? "=" : " ", shell_quote(qo, sizeof qo, o->out_dir),
                o->data_dir[0] == '-' ? "=" : " ", shell_quote(qd, sizeof qd, o->data_dir), mb);
    }
    return 130;
}

/* A stop after the last step (training complete, its checkpoint at ckpt):
 * the sample grids are not written, or not all (during: they were being
 * written). Returns 130. */
static int report_stop_after_training(const vae_train_opts *o, const char *ckpt, int during) {
    char qc[2100], qo[2100], qd[2100];
    fprintf(stderr,
            "%svae: %s %s: training is complete (%s); %s: vae sample %s%s --out%s%s --data%s%s\n",
            o->progress ? "\n" : "", stop_name(),
            during ? "while writing the sample grids" : "after the last step", ckpt,
            during ? "the grids written so far are complete; all four with"
                   : "the sample grids were not written; write them with",
            ckpt[0] == '-' ? "./" : "", shell_quote(qc, sizeof qc, ckpt),
            o->out_dir[0] == '-' ? "=" : " ", shell_quote(qo, sizeof qo, o->out_dir),
            o->data_dir[0] == '-' ? "=" : " ", shell_quote(qd, sizeof qd, o->data_dir));
    return 130;
}

/* ckpt-s<step>-e<epoch>.safetensors (the names sort by step): step = steps
 * done, epoch = epochs completed */
static void ckpt_name(char *out, size_t len, const char *dir, int64_t step, int64_t epoch) {
    snprintf(out, len, "%s/ckpt-s%010" PRId64 "-e%04" PRId64 ".safetensors", dir, step, epoch);
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Is this file name one of ckpt_name's? */
static int is_ckpt_name(const char *name) {
    const size_t l = strlen(name);
    return strncmp(name, "ckpt-s", 6) == 0 && l > 12 && strcmp(name + l - 12, ".safetensors") == 0;
}

/* Does dir hold checkpoints (ckpt-*.safetensors)? */
static int has_checkpoints(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int found = 0;
    for (struct dirent *e; !found && (e = readdir(d));) found = is_ckpt_name(e->d_name);
    closedir(d);
    return found;
}

/* Delete all but the newest `keep` ckpt-*.safetensors in dir. */
static void rotate_checkpoints(const char *dir, int keep) {
    if (keep <= 0) return;
    DIR *d = opendir(dir);
    if (!d) return;
    char *names[4096];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < 4096)
        if (is_ckpt_name(e->d_name) && (names[n] = strdup(e->d_name)) != NULL) n++;
    closedir(d);
    qsort(names, (size_t)n, sizeof names[0], cmp_str);
    char path[2048];
    for (int i = 0; i < n; i++) {
        if (i < n - keep) {
            snprintf(path, sizeof path, "%s/%s", dir, names[i]);
            if (unlink(path) != 0) fprintf(stderr, "vae: could not remove %s: %s\n", path, strerror(errno));
        }
        free(names[i]);
    }
}

/* ------------------------------------------------------------ progress */

static void fmt_time(char *out, size_t len, double s) {
    if (!(s >= 0) || s > 1e7) s = 0;
    int t = (int)(s + 0.5);
    if (t >= 3600) snprintf(out, len, "%d:%02d:%02d", t / 3600, t / 60 % 60, t % 60);
    else snprintf(out, len, "%d:%02d", t / 60, t % 60);
}

static void progress_bar(int64_t epoch, int epochs, int64_t done, int64_t total, double loss,
                         double ips, double eta) {
    char bar[31], et[16];
    int fill = total ? (int)(30 * done / total) : 30;
    for (int i = 0; i < 30; i++) bar[i] = i < fill ? '#' : '.';
    bar[30] = 0;
    fmt_time(et, sizeof et, eta);
    char ls[32];
    if (isfinite(loss)) snprintf(ls, sizeof ls, "%8.3f", loss);
    else snprintf(ls, sizeof ls, "%8s", "--"); /* no read-back yet this epoch */
    fprintf(stderr, "\repoch %" PRId64 "/%d [%s] %3d%% loss %s  %7.0f img/s  ETA %s  ", epoch,
            epochs, bar, total ? (int)(100 * done / total) : 100, ls, ips, et);
    fflush(stderr);
}

/* ------------------------------------------------------------ NaN report */

/* After a step whose gradient norm was not finite: name the first tensor,
 * in the order the backward pass produced them, that holds a NaN/Inf. */
static void describe_bad(vae_model *m, int B, char *out, size_t len) {
    vae_backend *be = m->be;
    real *h = vae_malloc(m->n_real + (size_t)2 * B + 1, sizeof(real));
    if (!h) {
        snprintf(out, len, "(could not inspect: out of memory)");
        return;
    }
    be->download(be, h, m->recon, (size_t)B * sizeof(real));
    be->download(be, h + B, m->kl, (size_t)B * sizeof(real));
    for (int i = 0; i < 2 * B; i++)
        if (!isfinite((double)h[i])) {
            snprintf(out, len, "the loss (%s term of sample %d)", i < B ? "reconstruction" : "KL",
                     i % B);
            free(h);
            return;
        }
    be->download(be, h, m->g, m->n_real * sizeof(real));
    for (int t = m->n_params - 1; t >= 0; t--) {
        const vae_param *p = &m->params[t];
        for (size_t i = 0; i < p->count; i++)
            if (!isfinite((double)h[p->offset + i])) {
                snprintf(out, len, "gradient of %s (element %zu)", p->name, i);
                free(h);
                return;
            }
    }
    snprintf(out, len, "the gradient norm (overflow; every tensor is finite)");
    free(h);
}

/* ------------------------------------------------------------ one step */

/* The step machinery (vae_stepper, vae_train.h). */

/* Fault injection for the tests: VAE_FAULT_NAN_AT_STEP=N[,M...]. */
static void parse_faults(vae_stepper *T) {
    const char *s = getenv("VAE_FAULT_NAN_AT_STEP");
    T->n_faults = 0;
    while (s && *s && T->n_faults < VAE_MAX_FAULTS) {
        char *end;
        long long v = strtoll(s, &end, 10);
        if (end == s) break;
        T->faults[T->n_faults++] = v;
        s = *end == ',' ? end + 1 : end;
    }
}

/* Fault injection for the tests: VAE_FAULT_SIGINT_AT_STEP=N stops the run
 * as a SIGINT arriving during step N (1-based) does; 0: never. Outside the
 * steps, VAE_FAULT_SIGINT_AT=load (while the data and the model load),
 * setup (after the run record, before the first step) or grids (while the
 * sample grids are written) does the same there. */
static int64_t fault_sigint_step(void) {
    const char *s = getenv("VAE_FAULT_SIGINT_AT_STEP");
    return s && *s ? strtoll(s, NULL, 10) : 0;
}

static void fault_sigint_at(const char *where) {
    const char *s = getenv("VAE_FAULT_SIGINT_AT");
    if (s && strcmp(s, where) == 0) g_stop_signal = SIGINT;
}

static int is_fault(const vae_stepper *T, int64_t step) {
    for (int i = 0; i < T->n_faults; i++)
        if (T->faults[i] == step + 1) return 1;
    return 0;
}

int vae_stepper_init(vae_stepper *T, vae_model *m, vae_dev_data *dd, int64_t first, int max_bad,
                     int graphs) {
    vae_backend *be = m->be;
    memset(T, 0, sizeof *T);
    T->perm = vae_malloc((size_t)dd->n, sizeof(int32_t));
    if (!T->perm) return vae_error_prefix(VAE_ENOMEM, "the shuffle of %d images", dd->n);
    T->m = m;
    T->cfg = m->cfg;
    T->dd = dd;
    T->plan = vae_train_plan(m->cfg, dd->n);
    T->max_bad = max_bad;
    T->perm_epoch = -1;
    T->spe = (dd->n + m->cfg->batch - 1) / m->cfg->batch;
    T->use_graphs = graphs && be->graph_capture && be->graph_launch && be->graph_free;
    parse_faults(T);
    vae_step_vals v0; /* step_begin takes it from here */
    memset(&v0, 0, sizeof v0);
    v0.next = first;
    be->upload(be, m->step_vals, &v0, sizeof v0);
    return VAE_OK;
}

void vae_stepper_free(vae_stepper *T) {
    if (!T->m) return;
    for (int i = 0; i < 2; i++)
        if (T->graph[i]) T->m->be->graph_free(T->m->be, T->graph[i]);
    free(T->perm);
    memset(T, 0, sizeof *T);
}

/* Places the shuffle of `epoch` in dd->idx unless it is there (an upload,
 * outside any graph: graphs read dd->idx, which stays where it is). */
static void place_shuffle(vae_stepper *T, int64_t epoch) {
    if (epoch == T->perm_epoch) return;
    vae_backend *be = T->m->be;
    vae_shuffle_perm(T->perm, T->dd->n, T->cfg->seed, epoch);
    be->upload(be, T->dd->idx, T->perm, (size_t)T->dd->n * sizeof(int32_t));
    T->perm_epoch = epoch;
}

/* Gather, fault hook, forward/backward of the step whose values sv holds
 * (backend memory), `rows` rows. */
static void step_grad(vae_stepper *T, const vae_step_vals *sv, int rows, int fault) {
    vae_model *m = T->m;
    vae_backend *be = m->be;
    be->gather_batch(be, m->x, T->dd->data, T->dd->idx, sv, rows, T->dd->d);
    if (fault) {
        const real nan = (real)NAN;
        be->upload(be, m->x, &nan, sizeof nan);
    }
    vae_model_forward_backward(m, rows, T->cfg->seed, VAE_RNG_TRAIN, sv);
}

int vae_stepper_grad(vae_stepper *T, int64_t step) {
    vae_step_vals v;
    vae_step_vals_at(&v, &T->plan, step);
    place_shuffle(T, step / T->spe);
    step_grad(T, vae_model_put_vals(T->m, &v), v.rows, is_fault(T, step));
    return v.rows;
}

/* The whole step of T->rows rows: values, gradient, Adam, commit. */
static void step_issue(vae_stepper *T, int fault) {
    vae_model *m = T->m;
    vae_backend *be = m->be;
    be->step_begin(be, m->step_vals, &T->plan);
    step_grad(T, m->step_vals, T->rows, fault);
    vae_model_adam(m, T->cfg, (real)T->cfg->lr, m->step_vals);
    be->step_commit(be, m->acc, m->state, m->step_vals, T->max_bad);
}
static void step_issue_captured(void *arg) { step_issue((vae_stepper *)arg, 0); }

int vae_stepper_run(vae_stepper *T, int64_t step) {
    vae_backend *be = T->m->be;
    vae_step_vals v; /* what step_begin will compute on the device; the host needs the rows */
    vae_step_vals_at(&v, &T->plan, step);
    place_shuffle(T, step / T->spe);
    T->rows = v.rows;
    const int shape = T->rows == T->cfg->batch ? 0 : 1;
    const int fault = is_fault(T, step);
    if (fault || !T->use_graphs || (!T->graph[shape] && !T->ran[shape])) {
        step_issue(T, fault);
        T->ran[shape] |= !fault;
        return T->rows;
    }
    if (!T->graph[shape]) {
        T->graph[shape] = be->graph_capture(be, step_issue_captured, T);
        if (!T->graph[shape]) {
            fprintf(stderr, "\nvae: could not capture the training step as a graph (%s); "
                            "running it without graphs\n", vae_error_get());
            T->use_graphs = 0;
            step_issue(T, 0);
            return T->rows;
        }
    }
    be->graph_launch(be, T->graph[shape]);
    return T->rows;
}

/* Names the first non-finite tensor of bad step `step` by replaying its
 * forward/backward (vae_stepper_grad: same shuffle, batch, beta, noise,
 * fault) from the current parameters. At a halt those are the parameters the
 * step saw (Adam changed nothing from the halting step on), so the replay is
 * the step itself; for a skipped step that later good steps moved past it
 * may not reproduce, and says so. Parameters, moments and the training
 * step's values are not touched; the step slots are left zero, as
 * step_commit leaves them. */
static void name_bad_step(vae_stepper *T, int64_t step, char *out, size_t len) {
    vae_model *m = T->m;
    vae_backend *be = m->be;
    const int rows = vae_stepper_grad(T, step);
    double g2;
    be->sumsq(be, m->acc + VAE_ACC_GNORM2, m->g, m->n_real);
    be->download(be, &g2, m->acc + VAE_ACC_GNORM2, sizeof g2);
    if (isfinite(g2))
        snprintf(out, len, "a tensor not found again (replaying the step from the current "
                           "parameters gives finite gradients)");
    else
        describe_bad(m, rows, out, len);
    be->zero(be, m->acc + VAE_ACC_STEP_RECON, 2 * sizeof(double));
}

/* ------------------------------------------------ reading the bookkeeping */

/* The device's bookkeeping as the host last read it. */
typedef struct {
    double acc[VAE_ACC_N];
    int state[VAE_STEP_STATE_N];
} step_view;

/* How many steps may pass between two reads (besides the progress bar's,
 * about 5 per second, the epoch's end and a stop). */
#define POLL_STEPS 64

/* Read-back of model.acc/model.state without a synchronizing read per step.
 * Synchronous reads (download: a memcpy on the CPU, a stream sync on CUDA)
 * happen only at the end of an epoch, at a stop and to confirm a bad step.
 * With host_alloc/download_async/copy_wait, a poll takes the copy issued at
 * the previous poll (long done by then) and issues the next one: step_snapshot
 * copies the blocks, in stream order, into the model's snapshot slots, which
 * no step writes, and download_async copies those into pinned memory — so the
 * source of the copy stays unmodified until copy_wait, as the contract asks.
 * Without those hooks (CPU) a poll is a synchronous read. */
typedef struct {
    vae_model *m;
    step_view *pinned; /* NULL: synchronous reads only */
    int in_flight;     /* a copy into `pinned` was issued and not yet waited for */
} step_reader;

static void reader_init(step_reader *r, vae_model *m) {
    vae_backend *be = m->be;
    memset(r, 0, sizeof *r);
    r->m = m;
    if (be->host_alloc && be->host_free && be->download_async && be->copy_wait)
        r->pinned = be->host_alloc(be, sizeof(step_view)); /* NULL: fall back to download */
}

static void reader_free(step_reader *r) {
    if (!r->m) return;
    vae_backend *be = r->m->be;
    if (r->in_flight) be->copy_wait(be);
    if (r->pinned) be->host_free(be, r->pinned);
    memset(r, 0, sizeof *r);
}

/* The state after all work issued so far. An asynchronous copy still in
 * flight is older: it is waited for and dropped. */
static void reader_sync(step_reader *r, step_view *v) {
    vae_backend *be = r->m->be;
    if (r->in_flight) {
        be->copy_wait(be);
        r->in_flight = 0;
    }
    be->download(be, v->acc, r->m->acc, sizeof v->acc);
    be->download(be, v->state, r->m->state, sizeof v->state);
}

/* A poll: 1 and *v = the state as of the previous poll (asynchronous) or as
 * of now (synchronous); 0 when there is nothing yet (the first asynchronous
 * poll after a synchronous read). */
static int reader_poll(step_reader *r, step_view *v) {
    vae_model *m = r->m;
    vae_backend *be = m->be;
    if (!r->pinned) {
        reader_sync(r, v);
        return 1;
    }
    int got = 0;
    if (r->in_flight) {
        be->copy_wait(be);
        *v = *r->pinned;
        r->in_flight = 0;
        got = 1;
    }
    be->step_snapshot(be, m->acc_snap, m->state_snap, m->acc, m->state);
    be->download_async(be, r->pinned->acc, m->acc_snap, sizeof r->pinned->acc);
    be->download_async(be, r->pinned->state, m->state_snap, sizeof r->pinned->state);
    r->in_flight = 1;
    return got;
}

/* Does the view show bad steps not reported yet (or a halt)? */
static int view_has_news(const step_view *v, int seen_bad) {
    return v->state[VAE_STEP_NBAD] != seen_bad || (v->state[VAE_STEP_FLAGS] & VAE_STEP_HALTED);
}

/* Reports the bad steps the device counted since the last report (*seen of
 * them were reported) from an up-to-date (synchronous) view; if the run
 * halted, writes the checkpoint of the last good state: the parameters as
 * they were before the halting step h (adam_step skipped every update from
 * h on), step = h, and the epoch's sums of its good steps before h (where
 * step_commit stopped adding). Returns 0 to go on, 3 after a halt. */
static int report_bad_steps(vae_stepper *T, const step_view *v, int *seen, vae_train_state *st,
                            const vae_train_opts *o, double run_start) {
    const int nbad = v->state[VAE_STEP_NBAD];
    const int halted = (v->state[VAE_STEP_FLAGS] & VAE_STEP_HALTED) != 0;
    const int64_t first = vae_step_state_i64(v->state + VAE_STEP_FIRST_BAD);
    const int64_t last = vae_step_state_i64(v->state + VAE_STEP_LAST_BAD);
    if (nbad == *seen && !halted) return 0;
    /* the newly skipped steps: the new bad ones but a halting one */
    const int n_new = nbad - *seen - (halted ? 1 : 0);
    const int n_skipped = nbad - (halted ? 1 : 0);
    char what[256];
    if (n_new == 1 && (!halted || *seen == 0)) {
        /* one, and its index is known: the latest bad step, or the first */
        const int64_t s = halted ? first : last;
        name_bad_step(T, s, what, sizeof what);
        fprintf(stderr,
                "%svae: step %" PRId64 ": non-finite value in %s; step skipped (%d of %d allowed)\n",
                o->progress ? "\n" : "", s + 1, what, n_skipped, o->max_bad_steps);
    } else if (n_new > 0) {
        fprintf(stderr, "%svae: %d steps with non-finite values skipped, the %s step %" PRId64
                        " (%d of %d allowed)\n",
                o->progress ? "\n" : "", n_new, halted ? "first at" : "last at",
                (halted ? first : last) + 1, n_skipped, o->max_bad_steps);
    }
    *seen = nbad;
    if (!halted) return 0;

    name_bad_step(T, last, what, sizeof what);
    const int64_t epoch = last / T->spe;
    char path[2048];
    st->step = last;
    st->acc_recon = v->acc[VAE_ACC_RECON];
    st->acc_kl = v->acc[VAE_ACC_KL];
    st->elapsed_s = vae_now() - run_start;
    ckpt_name(path, sizeof path, o->out_dir, last, epoch);
    int wrc = vae_ckpt_save(path, T->m, st);
    fprintf(stderr,
            "%svae: step %" PRId64 " (epoch %" PRId64 "): non-finite value in %s; "
            "stopped. %s %s (the last good state)%s\n",
            o->progress ? "\n" : "", last + 1, epoch + 1, what, wrc ? "could not write" : "wrote",
            path, o->max_bad_steps ? "" : "; --max-bad-steps N skips up to N such steps");
    if (wrc) fprintf(stderr, "vae: %s\n", vae_error_get());
    return 3;
}

/* ------------------------------------------------------------ training */

static double bits_per_dim(double nats, int D) { return nats / (D * log(2.0)); }

int vae_train(vae_config *cfg, vae_backend *be, const vae_train_opts *o) {
    int rc = 0;
    vae_dataset train = {0}, test = {0};
    vae_dev_data dtrain = {0}, dtest = {0};
    vae_model model = {0};
    step_reader rd = {0};
    vae_stepper T = {0};
    char path[2048];

    /* a new run does not go into another run's folder: its checkpoints
     * would be mixed with this one's (and --resume DIR would take theirs) */
    if (!o->resume && has_checkpoints(o->out_dir)) {
        fprintf(stderr,
                "vae: --out %s already holds a run's checkpoints; continue it with "
                "'vae train --resume %s', or give another --out\n",
                o->out_dir, o->out_dir);
        return 1;
    }
    /* SIGINT/SIGTERM from here on: before the first step the run ends
     * without a trace, from the first step on with a checkpoint, after the
     * last one without the sample grids; always with status 130 */
    g_stop_signal = 0;
    install_signals();
    if ((rc = vae_dataset_load(&train, cfg, o->data_dir, 1)) ||
        (rc = vae_dataset_load(&test, cfg, o->data_dir, 0))) {
        fprintf(stderr, "vae: %s\n", vae_error_get());
        goto done;
    }
    if ((rc = vae_mkdir_p(o->out_dir, NULL, 0))) {
        fprintf(stderr, "vae: %s\n", vae_error_get());
        goto done;
    }
    vae_atomic_remove_stale(o->out_dir);
    const int B = cfg->batch;
    /* Backend memory for the whole run, sized up front where the backend has
     * one arena (CUDA), so that a run that does not fit stops here with the
     * bytes needed and available: the model (parameters, gradients, Adam
     * moments, activations for the batch), both datasets as uint8 with their
     * index arrays, and room for the evaluator's and the end-of-run grids'
     * buffers (a few per-batch vectors and one batch of pixels). */
    const size_t D = (size_t)vae_shape_count(cfg->input);
    const size_t plan_model = vae_model_plan_bytes(cfg, B);
    const size_t plan_data = data_plan_bytes(&train) + data_plan_bytes(&test);
    const size_t plan_extra = ((size_t)4 << 20) + (size_t)B * (D + 16) * sizeof(real);
    if (be->reserve && (rc = be->reserve(be, plan_model + plan_data + plan_extra))) {
        fprintf(stderr, "vae: the run does not fit in %s memory (model %.1f MiB for batch %d, data "
                        "%.1f MiB): %s\n",
                be->name, plan_model / 1048576.0, B, plan_data / 1048576.0, vae_error_get());
        goto done;
    }
    /* host memory (the CPU backend): fail here, with the figures, rather
     * than be killed by the kernel part-way through allocating */
    const int64_t avail = vae_host_memory_available();
    if (!be->reserve && avail >= 0 && (int64_t)(plan_model + plan_extra) > avail) {
        fprintf(stderr, "vae: the run needs %.1f MiB of host memory for the model at batch %d "
                        "(besides the data); %.1f MiB are available; lower --batch or the "
                        "layer sizes\n",
                (plan_model + plan_extra) / 1048576.0, B, avail / 1048576.0);
        rc = VAE_ENOMEM;
        goto done;
    }
    if ((rc = vae_model_create(&model, cfg, be, B)) || (rc = vae_dev_data_upload(&dtrain, be, &train)) ||
        (rc = vae_dev_data_upload(&dtest, be, &test))) {
        fprintf(stderr, "vae: %s\n", vae_error_get());
        goto done;
    }

    vae_train_state st = {0};
    st.seed = cfg->seed;
    st.batch = B;
    st.steps_per_epoch = (train.n + B - 1) / B;
    if (o->resume) {
        char ck[2048];
        vae_st_file f;
        vae_config ckcfg;
        vae_config_defaults(&ckcfg);
        if ((rc = vae_ckpt_resolve(o->resume, ck, sizeof ck)) ||
            (rc = vae_ckpt_open(ck, &f, &ckcfg))) {
            fprintf(stderr, "vae: --resume: %s\n", vae_error_get());
            goto done;
        }
        /* the config given (the checkpoint's, with a CONFIG or flags over
         * it): the same model, and a note of what else changes */
        char mdiff[1024], odiff[1024];
        if (vae_config_compare(&ckcfg, cfg, mdiff, sizeof mdiff, odiff, sizeof odiff)) {
            fprintf(stderr,
                    "vae: --resume %s: the config given defines another model than the "
                    "checkpoint's (%s); a resume continues the same model: train the new one as "
                    "a new run\n",
                    ck, mdiff);
            vae_st_free(&f);
            vae_config_free(&ckcfg);
            rc = 1;
            goto done;
        }
        if (odiff[0])
            fprintf(stderr, "vae: note: --resume %s: this run's config differs from the "
                            "checkpoint's in %s; the run goes on with these values\n", ck, odiff);
        rc = vae_ckpt_restore(&f, ck, &model, &st, 1);
        const char *rng = rc ? NULL : vae_st_meta_get(&f, "rng");
        if (!rc && (!rng || strcmp(rng, VAE_RNG_NAME) != 0))
            fprintf(stderr,
                    "vae: note: --resume %s: the checkpoint's run drew its noise as \"%.80s\"; "
                    "this version draws \"%s\", so the run goes on with other noise than the "
                    "version that wrote it would have drawn\n",
                    ck, rng ? rng : "(not recorded)", VAE_RNG_NAME);
        vae_st_free(&f);
        vae_config_free(&ckcfg);
        if (rc) {
            fprintf(stderr, "vae: --resume: %s\n", vae_error_get());
            goto done;
        }
        if (st.batch != B || st.seed != cfg->seed) {
            fprintf(stderr,
                    "vae: --resume %s: the checkpoint was trained with batch %d and seed %" PRIu64
                    "; this run has batch %d and seed %" PRIu64 " (an exact resume needs the same)\n",
                    ck, st.batch, st.seed, B, cfg->seed);
            rc = 1;
            goto done;
        }
        if (st.steps_per_epoch != (train.n + B - 1) / B) {
            fprintf(stderr,
                    "vae: --resume %s: the checkpoint's run had %" PRId64 " steps an epoch; %d "
                    "training images at batch %d give %d (another training set?)\n",
                    ck, (int64_t)st.steps_per_epoch, train.n, B, (train.n + B - 1) / B);
            rc = 1;
            goto done;
        }
        const int64_t done_epochs = st.step / st.steps_per_epoch;
        if (st.step >= (int64_t)cfg->epochs * st.steps_per_epoch) {
            fprintf(stderr,
                    "vae: %s has completed %" PRId64 " epoch(s) of %" PRId64
                    " batches; the run is %d epoch(s): nothing to train (--epochs N sets a "
                    "longer one)\n",
                    ck, done_epochs, st.steps_per_epoch, cfg->epochs);
            rc = 0;
            goto done;
        }
        fprintf(stderr,
                "vae: resuming from %s at step %" PRId64 " (epoch %" PRId64 ", after %" PRId64
                " of its %" PRId64 " batches)\n",
                ck, st.step, done_epochs + 1, st.step % st.steps_per_epoch, st.steps_per_epoch);
        /* the unfinished epoch's sums; its images are counted as all used
         * (the checkpoint does not record skipped steps), the first
         * step % spe batches being full */
        const double sums[3] = {st.acc_recon, st.acc_kl,
                                (double)(st.step % st.steps_per_epoch) * (double)B};
        be->upload(be, model.acc + VAE_ACC_RECON, sums, sizeof sums);
    } else {
        vae_model_init_params(&model, cfg->seed);
    }

    fault_sigint_at("load");
    if (g_stop_signal) { /* loading the data and the model: nothing written yet */
        fprintf(stderr, "vae: %s before the first step; nothing was trained%s\n", stop_name(),
                o->resume ? " (the checkpoint is as it was)" : "");
        rc = 130;
        goto done;
    }

    /* the run directory: effective config, metrics */
    snprintf(path, sizeof path, "%s/config.ini", o->out_dir);
    if ((rc = write_text_atomic(path, cfg->text))) {
        fprintf(stderr, "vae: %s\n", vae_error_get());
        goto done;
    }
    char metrics_path[2048];
    snprintf(metrics_path, sizeof metrics_path, "%s/metrics.jsonl", o->out_dir);
    if (o->resume) trim_metrics(metrics_path, st.step / st.steps_per_epoch);
    else unlink(metrics_path);
    if (o->on_start) o->on_start(o->on_start_arg);

    fprintf(stderr,
            "vae: training %s on %s: %d train / %d test images, batch %d, %zu parameters, "
            "%.1f MiB of %s memory, output in %s\n",
            o->config_path, be->name, train.n, test.n, B, model.n_real,
            (double)(model.bytes + (size_t)(train.n + test.n) * model.D) / 1048576.0, be->name,
            o->out_dir);
    if (be->arena_bytes)
        fprintf(stderr,
                "vae: %s arena %.1f MiB: parameters, gradients and Adam moments %.1f MiB, "
                "activations and per-batch buffers for batch %d %.1f MiB, datasets (uint8) %.1f MiB, the rest for "
                "the backend's scratch, cuDNN workspace and evaluation buffers\n",
                be->name, be->arena_bytes(be) / 1048576.0, 4.0 * model.n_real * sizeof(real) / 1048576.0,
                B, (plan_model - 4.0 * model.n_real * sizeof(real)) / 1048576.0, plan_data / 1048576.0);

    if ((rc = vae_stepper_init(&T, &model, &dtrain, st.step, o->max_bad_steps, 1))) {
        fprintf(stderr, "vae: %s\n", vae_error_get());
        goto done;
    }
    reader_init(&rd, &model);
    if (T.use_graphs)
        fprintf(stderr, "vae: each training step runs as one %s graph launch "
                        "(captured on the second step of each batch shape; VAE_CUDA_GRAPH=0 turns this off)\n",
                be->name);

    const int64_t spe = st.steps_per_epoch;
    const int64_t total_steps = spe * cfg->epochs;
    fault_sigint_at("setup");
    if (g_stop_signal) { /* during the set-up above: the run record is written, so a checkpoint */
        ckpt_name(path, sizeof path, o->out_dir, st.step, st.step / spe);
        rc = report_stop(o, st.step, st.step / spe + 1, path, vae_ckpt_save(path, &model, &st));
        goto done;
    }
    int seen_bad = 0; /* bad steps reported so far */
    const int scheduled = cfg->lr_schedule != VAE_LR_CONSTANT || cfg->lr_warmup_steps > 0;
    if (scheduled) {
        static const char *const names[] = {"constant", "cosine", "linear"};
        const int w = cfg->lr_warmup_steps;
        fprintf(stderr, "vae: learning rate: ");
        if (w > 0)
            fprintf(stderr, "%d warm-up step%s from %.3g to %g, then ", w, w == 1 ? "" : "s",
                    (double)(cfg->lr / (real)w), (double)cfg->lr);
        if (cfg->lr_schedule == VAE_LR_CONSTANT) fprintf(stderr, "constant\n");
        else if (w >= T.plan.total_steps)
            fprintf(stderr, "%s (not reached: the run has %" PRId64 " steps)\n",
                    names[cfg->lr_schedule], T.plan.total_steps);
        else /* PyTorch's convention: min_lr is where the rate would be after the last step */
            fprintf(stderr, "%s from %g down to %g after step %" PRId64 "\n",
                    names[cfg->lr_schedule], (double)cfg->lr, (double)cfg->min_lr,
                    T.plan.total_steps);
    }
    step_view view;
    double run_start = vae_now() - st.elapsed_s;
    const int64_t sigint_at = fault_sigint_step();
    while (st.step < total_steps) {
        const int64_t epoch = st.step / spe; /* 0-based epoch in progress */
        const double t0 = vae_now();
        const int64_t first = st.step % spe;
        int64_t imgs = 0, last_poll = st.step;
        double last_bar = 0, shown_loss = NAN;
        for (int64_t bi = first; bi < spe; bi++) {
            /* the step: nothing here waits for the device or reads it */
            const int bn = vae_stepper_run(&T, st.step);
            st.step++;
            imgs += bn;
            if (st.step == sigint_at) g_stop_signal = SIGINT;

            /* a few reads per epoch: with the progress bar, every POLL_STEPS */
            const double now = o->progress ? vae_now() : 0;
            const int bar = o->progress && (now - last_bar > 0.2 || bi == spe - 1);
            if (bar || st.step - last_poll >= POLL_STEPS) {
                last_poll = st.step;
                if (reader_poll(&rd, &view)) {
                    if (view_has_news(&view, seen_bad)) {
                        reader_sync(&rd, &view); /* rare: a bad step */
                        if ((rc = report_bad_steps(&T, &view, &seen_bad, &st, o, run_start)))
                            goto done;
                    }
                    const double n_img = view.acc[VAE_ACC_IMAGES];
                    if (n_img > 0) shown_loss = (view.acc[VAE_ACC_RECON] + view.acc[VAE_ACC_KL]) / n_img;
                }
                if (bar) {
                    double ips = imgs / (now - t0);
                    double left = (double)(total_steps - st.step) * B / (ips > 0 ? ips : 1);
                    progress_bar(epoch + 1, cfg->epochs, bi + 1, spe, shown_loss, ips, left);
                    last_bar = now;
                }
            }
            /* a stop on an epoch's last step waits for the epoch's end
             * (evaluation, metrics line, checkpoint) below */
            if (g_stop_signal && bi + 1 < spe) {
                reader_sync(&rd, &view);
                if ((rc = report_bad_steps(&T, &view, &seen_bad, &st, o, run_start))) goto done;
                st.acc_recon = view.acc[VAE_ACC_RECON], st.acc_kl = view.acc[VAE_ACC_KL];
                st.elapsed_s = vae_now() - run_start;
                ckpt_name(path, sizeof path, o->out_dir, st.step, epoch);
                rc = report_stop(o, st.step, epoch + 1, path, vae_ckpt_save(path, &model, &st));
                goto done;
            }
        }
        /* epoch done: read the bookkeeping before its sums are reset and the
         * evaluation runs, so a halt is always handled within its epoch */
        reader_sync(&rd, &view);
        if ((rc = report_bad_steps(&T, &view, &seen_bad, &st, o, run_start))) goto done;
        double epoch_time = vae_now() - t0;
        double n_used = view.acc[VAE_ACC_IMAGES];
        double tr_rec = view.acc[VAE_ACC_RECON] / n_used, tr_kl = view.acc[VAE_ACC_KL] / n_used;
        double ips = imgs / epoch_time;
        be->zero(be, model.acc + VAE_ACC_RECON, 3 * sizeof(double)); /* RECON, KL, IMAGES */
        st.acc_recon = st.acc_kl = 0;

        vae_eval_result ev;
        if ((rc = vae_evaluate(&model, &dtest, cfg->seed, 0, &ev))) {
            fprintf(stderr, "vae: %s\n", vae_error_get());
            goto done;
        }
        st.elapsed_s = vae_now() - run_start;
        const int64_t ep = epoch + 1;
        if (o->progress) fprintf(stderr, "\r\033[K");
        int is_cifar = cfg->dataset == VAE_DATA_CIFAR10;
        char el[16];
        fmt_time(el, sizeof el, st.elapsed_s);
        printf("epoch %3" PRId64 "/%d  train nelbo %9.4f (recon %9.4f kl %8.4f)  "
               "test nelbo %9.4f (recon %9.4f kl %8.4f)",
               ep, cfg->epochs, tr_rec + tr_kl, tr_rec, tr_kl, ev.nelbo, ev.recon, ev.kl);
        if (is_cifar) printf("  test bpd %.4f", bits_per_dim(ev.nelbo, model.D));
        /* the learning rate of the epoch's last step, as Adam applied it */
        vae_step_vals last;
        vae_step_vals_at(&last, &T.plan, st.step - 1);
        const real lr_now = vae_adam_hp_at(&(vae_adam_hp){.lr = (real)cfg->lr}, &last).lr;
        if (scheduled) printf("  lr %.3g", (double)lr_now);
        printf("  %8.0f img/s  %s\n", ips, el);
        fflush(stdout);

        cJSON *j = cJSON_CreateObject();
        cJSON_AddNumberToObject(j, "epoch", (double)ep);
        cJSON_AddNumberToObject(j, "step", (double)st.step);
        cJSON_AddNumberToObject(j, "train_nelbo", tr_rec + tr_kl);
        cJSON_AddNumberToObject(j, "train_recon", tr_rec);
        cJSON_AddNumberToObject(j, "train_kl", tr_kl);
        cJSON_AddNumberToObject(j, "test_nelbo", ev.nelbo);
        cJSON_AddNumberToObject(j, "test_recon", ev.recon);
        cJSON_AddNumberToObject(j, "test_kl", ev.kl);
        if (is_cifar) {
            cJSON_AddNumberToObject(j, "train_bpd", bits_per_dim(tr_rec + tr_kl, model.D));
            cJSON_AddNumberToObject(j, "test_bpd", bits_per_dim(ev.nelbo, model.D));
        }
        if (cfg->likelihood == VAE_LIK_GAUSSIAN) cJSON_AddNumberToObject(j, "test_mse", ev.mse);
        cJSON_AddNumberToObject(j, "lr", (double)lr_now);
        cJSON_AddNumberToObject(j, "images_per_s", ips);
        cJSON_AddNumberToObject(j, "epoch_time_s", epoch_time);
        cJSON_AddNumberToObject(j, "elapsed_s", st.elapsed_s);
        cJSON_AddNumberToObject(j, "skipped_steps", view.state[VAE_STEP_NBAD]);
        cJSON_AddStringToObject(j, "device", be->name);

        /* checkpoint first, then the metrics line: a metrics line never
         * describes an epoch whose checkpoint could be missing */
        if (ep % cfg->checkpoint_every == 0 || ep == cfg->epochs) {
            ckpt_name(path, sizeof path, o->out_dir, st.step, ep);
            if ((rc = vae_ckpt_save(path, &model, &st))) {
                fprintf(stderr, "vae: checkpoint: %s\n", vae_error_get());
                cJSON_Delete(j);
                goto done;
            }
            rotate_checkpoints(o->out_dir, o->keep);
        }
        rc = append_metrics(metrics_path, j);
        cJSON_Delete(j);
        if (rc) {
            fprintf(stderr, "vae: %s\n", vae_error_get());
            goto done;
        }
        /* a stop during this epoch's last step or its evaluation: after the
         * epoch, with a checkpoint of it (the last epoch's is written above,
         * and the stop is reported after the loop) */
        if (g_stop_signal && ep < cfg->epochs) {
            int wrc = VAE_OK;
            ckpt_name(path, sizeof path, o->out_dir, st.step, ep);
            if (ep % cfg->checkpoint_every != 0) {
                wrc = vae_ckpt_save(path, &model, &st);
                if (!wrc) rotate_checkpoints(o->out_dir, o->keep);
            }
            rc = report_stop(o, st.step, ep, path, wrc);
            goto done;
        }
    }
    /* path: the last epoch's checkpoint (always written) */
    if (g_stop_signal) {
        rc = report_stop_after_training(o, path, 0);
        goto done;
    }
    if ((rc = vae_write_grids(&model, &test, o->out_dir, cfg->seed, 0, 1, NULL, 0))) {
        fprintf(stderr, "vae: sample grids: %s\n", vae_error_get());
        goto done;
    }
    fault_sigint_at("grids");
    if (g_stop_signal) {
        rc = report_stop_after_training(o, path, 1);
        goto done;
    }
    fprintf(stderr, "vae: done; checkpoints, metrics.jsonl and sample grids are in %s\n", o->out_dir);

done:
    restore_signals();
    reader_free(&rd);
    vae_stepper_free(&T);
    if (model.be) vae_model_free(&model);
    vae_dev_data_free(&dtest, be);
    vae_dev_data_free(&dtrain, be);
    vae_dataset_free(&test);
    vae_dataset_free(&train);
    return rc;
}

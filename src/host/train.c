/* train.c — the training loop, test-set evaluation and the run directory.
 *
 * Reproducibility: every random choice is a pure function of (seed, step):
 * the epoch's shuffle is Fisher-Yates driven by Philox stream
 * VAE_RNG_SHUFFLE with subsequence = epoch, the reparameterisation noise of
 * optimizer step s is stream VAE_RNG_TRAIN with subsequence = s. Resuming
 * from a checkpoint taken after step s therefore replays steps s+1.. exactly,
 * also from the middle of an epoch (the partial epoch's loss sums are in the
 * checkpoint too).
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

void vae_dev_data_free(vae_dev_data *dd, vae_backend *be) {
    if (dd->idx) be->release(be, dd->idx);
    if (dd->data) be->release(be, dd->data);
    memset(dd, 0, sizeof *dd);
}

/* Fisher-Yates shuffle of 0..n-1 for `epoch` (Philox stream SHUFFLE). */
static void shuffle_perm(int32_t *perm, int n, uint64_t seed, int64_t epoch) {
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
        be->gather_batch(be, m->x, dd->data, dd->idx + b0, bn, dd->d);
        /* the ELBO with fixed evaluation noise: sample k = 0 of this batch */
        vae_model_forward(m, bn, seed, VAE_RNG_EVAL, (uint64_t)bi);
        be->sum_into(be, m->acc + VAE_ACC_EVAL_RECON, m->recon, (size_t)bn);
        be->sum_into(be, m->acc + VAE_ACC_EVAL_KL, m->kl, (size_t)bn);
        for (int k = 0; k < iw_k; k++) {
            uint64_t sub = (uint64_t)k * (uint64_t)nb + (uint64_t)bi;
            if (k > 0) vae_model_forward(m, bn, seed, VAE_RNG_EVAL, sub);
            be->log_q_minus_log_p(be, lqd, m->z, vae_model_head(m), bn, L, seed, VAE_RNG_EVAL, sub);
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

/* Remove the temp files ("<name>.tmp.<pid>") a killed writer left behind in
 * the run directory. They are never read: a final name only appears after a
 * complete, fsynced write and the rename. */
static void remove_stale_temps(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char path[2048];
    while ((e = readdir(d))) {
        const char *t = strstr(e->d_name, ".tmp.");
        if (!t || t == e->d_name) continue;
        const char *q = t + 5;
        if (!*q || strspn(q, "0123456789") != strlen(q)) continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        unlink(path);
    }
    closedir(d);
}

/* Checkpoint names sort by step: ckpt-s<step>-e<epoch>.safetensors. */
static void ckpt_name(char *out, size_t len, const char *dir, int64_t step, int64_t epoch) {
    snprintf(out, len, "%s/ckpt-s%010" PRId64 "-e%04" PRId64 ".safetensors", dir, step, epoch);
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Delete all but the newest `keep` ckpt-*.safetensors in dir. */
static void rotate_checkpoints(const char *dir, int keep) {
    if (keep <= 0) return;
    DIR *d = opendir(dir);
    if (!d) return;
    char *names[4096];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < 4096) {
        size_t l = strlen(e->d_name);
        if (strncmp(e->d_name, "ckpt-s", 6) == 0 && l > 12 &&
            strcmp(e->d_name + l - 12, ".safetensors") == 0)
            names[n++] = strdup(e->d_name);
    }
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
    fprintf(stderr, "\repoch %" PRId64 "/%d [%s] %3d%% loss %8.3f  %7.0f img/s  ETA %s  ", epoch,
            epochs, bar, total ? (int)(100 * done / total) : 100, loss, ips, et);
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

/* ------------------------------------------------------------ training */

static double bits_per_dim(double nats, int D) { return nats / (D * log(2.0)); }

int vae_train(vae_config *cfg, vae_backend *be, const vae_train_opts *o) {
    int rc = 0;
    vae_dataset train = {0}, test = {0};
    vae_dev_data dtrain = {0}, dtest = {0};
    vae_model model = {0};
    int32_t *perm = NULL;
    char path[2048];

    if ((rc = vae_dataset_load(&train, cfg, o->data_dir, 1)) ||
        (rc = vae_dataset_load(&test, cfg, o->data_dir, 0))) {
        fprintf(stderr, "vae: %s\n", vae_error_get());
        goto done;
    }
    if ((rc = vae_mkdir_p(o->out_dir))) {
        fprintf(stderr, "vae: %s\n", vae_error_get());
        goto done;
    }
    remove_stale_temps(o->out_dir);
    const int B = cfg->batch;
    if ((rc = vae_model_create(&model, cfg, be, B)) || (rc = vae_dev_data_upload(&dtrain, be, &train)) ||
        (rc = vae_dev_data_upload(&dtest, be, &test))) {
        fprintf(stderr, "vae: %s\n", vae_error_get());
        goto done;
    }
    perm = vae_malloc((size_t)train.n, sizeof(int32_t));
    if (!perm) {
        fprintf(stderr, "vae: %s\n", vae_error_get());
        rc = 1;
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
        rc = vae_ckpt_restore(&f, ck, &model, &st, 1);
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
            fprintf(stderr, "vae: --resume %s: the training set size differs from the checkpoint's run\n", ck);
            rc = 1;
            goto done;
        }
        fprintf(stderr, "vae: resuming from %s at step %" PRId64 " (epoch %" PRId64 ", batch %" PRId64 ")\n",
                ck, st.step, st.step / st.steps_per_epoch, st.step % st.steps_per_epoch);
        be->upload(be, model.acc + VAE_ACC_RECON, &st.acc_recon, sizeof(double));
        be->upload(be, model.acc + VAE_ACC_KL, &st.acc_kl, sizeof(double));
    } else {
        vae_model_init_params(&model, cfg->seed);
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

    fprintf(stderr,
            "vae: training %s on %s: %d train / %d test images, batch %d, %zu parameters, "
            "%.1f MiB of %s memory, output in %s\n",
            o->config_path, be->name, train.n, test.n, B, model.n_real,
            (double)(model.bytes + (size_t)(train.n + test.n) * model.D) / 1048576.0, be->name,
            o->out_dir);

    /* Fault injection for the tests: VAE_FAULT_NAN_AT_STEP=N puts a NaN into
     * the first pixel of step N's batch (1-based), as a corrupt input would. */
    const char *fault = getenv("VAE_FAULT_NAN_AT_STEP");
    const int64_t nan_step = fault ? strtoll(fault, NULL, 10) : -1;

    install_signals();
    const int64_t spe = st.steps_per_epoch;
    const int64_t total_steps = spe * cfg->epochs;
    int bad_steps = 0;
    double run_start = vae_now() - st.elapsed_s;
    while (st.step < total_steps) {
        const int64_t epoch = st.step / spe; /* 0-based epoch in progress */
        const double t0 = vae_now();
        const int64_t first = st.step % spe;
        shuffle_perm(perm, train.n, cfg->seed, epoch);
        be->upload(be, dtrain.idx, perm, (size_t)train.n * sizeof(int32_t));
        int64_t imgs = 0, skipped_imgs = 0;
        double last_bar = 0;
        double acc_before[2];
        for (int64_t bi = first; bi < spe; bi++) {
            int b0 = (int)(bi * B), bn = train.n - b0 < B ? train.n - b0 : B;
            real beta = (real)cfg->beta;
            if (cfg->kl_warmup_steps > 0 && st.step < cfg->kl_warmup_steps)
                beta *= (real)((double)(st.step + 1) / cfg->kl_warmup_steps);
            be->gather_batch(be, model.x, dtrain.data, dtrain.idx + b0, bn, dtrain.d);
            /* the sums before this step, to drop it from the metrics if it is skipped */
            be->download(be, acc_before, model.acc, sizeof acc_before);
            if (st.step + 1 == nan_step) {
                const real nan = (real)NAN;
                be->upload(be, model.x, &nan, sizeof nan);
            }
            vae_model_forward_backward(&model, bn, beta, cfg->seed, VAE_RNG_TRAIN, (uint64_t)st.step);
            vae_model_adam(&model, cfg, st.step + 1, (real)cfg->lr);
            int bad = 0;
            be->download(be, &bad, model.bad, sizeof bad);
            if (bad) {
                char what[256];
                describe_bad(&model, bn, what, sizeof what);
                be->zero(be, model.bad, sizeof(int));
                be->upload(be, model.acc, acc_before, sizeof acc_before);
                bad_steps++;
                skipped_imgs += bn;
                if (bad_steps > o->max_bad_steps) {
                    /* the bad step was skipped: the parameters are the last good ones */
                    st.acc_recon = acc_before[0], st.acc_kl = acc_before[1];
                    st.elapsed_s = vae_now() - run_start;
                    ckpt_name(path, sizeof path, o->out_dir, st.step, epoch);
                    int wrc = vae_ckpt_save(path, &model, &st);
                    fprintf(stderr,
                            "\nvae: step %" PRId64 " (epoch %" PRId64 "): non-finite value in %s; "
                            "stopped. %s %s (the last good state)%s\n",
                            st.step + 1, epoch + 1, what, wrc ? "could not write" : "wrote", path,
                            o->max_bad_steps ? "" : "; --max-bad-steps N skips up to N such steps");
                    if (wrc) fprintf(stderr, "vae: %s\n", vae_error_get());
                    rc = 3;
                    goto done;
                }
                fprintf(stderr, "\nvae: step %" PRId64 ": non-finite value in %s; step skipped (%d of %d allowed)\n",
                        st.step + 1, what, bad_steps, o->max_bad_steps);
            }
            st.step++;
            imgs += bn;
            if (o->progress) {
                double now = vae_now();
                if (now - last_bar > 0.2 || bi == spe - 1) {
                    double acc[2];
                    be->download(be, acc, model.acc, sizeof acc);
                    double seen = (double)(bi + 1) * B < train.n ? (double)(bi + 1) * B : train.n;
                    double ips = imgs / (now - t0);
                    double left = (double)(total_steps - st.step) * B / (ips > 0 ? ips : 1);
                    progress_bar(epoch + 1, cfg->epochs, bi + 1, spe, (acc[0] + acc[1]) / seen, ips, left);
                    last_bar = now;
                }
            }
            if (g_stop_signal) {
                double acc[2];
                be->download(be, acc, model.acc, sizeof acc);
                st.acc_recon = acc[0], st.acc_kl = acc[1];
                st.elapsed_s = vae_now() - run_start;
                ckpt_name(path, sizeof path, o->out_dir, st.step, epoch);
                int wrc = vae_ckpt_save(path, &model, &st);
                fprintf(stderr, "\nvae: %s at step %" PRId64 " (epoch %" PRId64 "); %s %s\n",
                        g_stop_signal == SIGINT ? "interrupted (SIGINT)" : "terminated (SIGTERM)",
                        st.step, epoch + 1, wrc ? "could not write checkpoint" : "checkpoint written to", path);
                if (wrc) fprintf(stderr, "vae: %s\n", vae_error_get());
                else fprintf(stderr, "vae: resume with: vae train %s --resume %s --out %s\n",
                             o->config_path, o->out_dir, o->out_dir);
                rc = 130;
                goto done;
            }
        }
        /* epoch done: training metrics from the device accumulators */
        double acc[2];
        be->download(be, acc, model.acc, sizeof acc);
        double epoch_time = vae_now() - t0;
        double n_used = (double)(train.n - skipped_imgs);
        double tr_rec = acc[0] / n_used, tr_kl = acc[1] / n_used;
        double ips = imgs / epoch_time;
        be->zero(be, model.acc, 2 * sizeof(double));
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
        cJSON_AddNumberToObject(j, "images_per_s", ips);
        cJSON_AddNumberToObject(j, "epoch_time_s", epoch_time);
        cJSON_AddNumberToObject(j, "elapsed_s", st.elapsed_s);
        cJSON_AddNumberToObject(j, "skipped_steps", bad_steps);
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
    }
    restore_signals();
    if ((rc = vae_write_grids(&model, &test, o->out_dir, cfg->seed, 0, 1))) {
        fprintf(stderr, "vae: sample grids: %s\n", vae_error_get());
        goto done;
    }
    fprintf(stderr, "vae: done; checkpoints, metrics.jsonl and sample grids are in %s\n", o->out_dir);

done:
    restore_signals();
    free(perm);
    if (model.be) vae_model_free(&model);
    vae_dev_data_free(&dtest, be);
    vae_dev_data_free(&dtrain, be);
    vae_dataset_free(&test);
    vae_dataset_free(&train);
    return rc;
}

/* sample_stream.c — streamed decoding of many latents (see vae_sample.h).
 *
 * Two host buffers of pixels (and of latents, when they are saved) go round
 * between the decode loop and the writers:
 *
 *   loop k:  issue latent_fill + decode + to_u8 of chunk k into dev[k%2]
 *            wait for the copy of chunk k-1, hand host[(k-1)%2] to the writers
 *            wait until the writers are done with host[k%2] (chunk k-2)
 *            issue the copy dev[k%2] -> host[k%2] (second stream on CUDA)
 *
 * so on the CUDA backend chunk k decodes while chunk k-1 is copied and
 * written. On the CPU backend the calls are synchronous and the overlap is
 * between decoding (this thread and the CPU backend's pool) and writing. There is
 * a writer thread per kind of output: one appends each buffer to the .npy
 * files, one pushes it into the PNG sheets (whose encoders are a pool of
 * their own), so the disk and the PNG encoders work at the same time; a
 * buffer is free again when both have taken it.
 */
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vae_io.h"
#include "vae_sample.h"
#include "vae_sheets.h"

int vae_precision_bits(const char *name) {
    if (!name || !strcmp(name, "fp32")) return 23;
    if (!strcmp(name, "tf32")) return 10;
    if (!strcmp(name, "bf16")) return 7;
    return -1;
}

int vae_sample_auto_chunk(const vae_config *cfg, size_t budget, int64_t n, size_t *per_image) {
    /* per image, the model holds every layer's output, the input, the head,
     * z/dz and two gradient buffers of the largest activation */
    size_t act = 0, max_act = (size_t)vae_shape_count(cfg->input);
    for (int i = 0; i < cfg->n_enc; i++) {
        size_t k = (size_t)vae_shape_count(cfg->enc[i].out_shape);
        act += k;
        if (k > max_act) max_act = k;
    }
    for (int i = 0; i < cfg->n_dec; i++) {
        size_t k = (size_t)vae_shape_count(cfg->dec[i].out_shape);
        act += k;
        if (k > max_act) max_act = k;
    }
    size_t per = sizeof(real) * (act + 2 * max_act + (size_t)vae_shape_count(cfg->input) +
                                 6 * (size_t)cfg->latent) +
                 2 * (size_t)vae_shape_count(cfg->input); /* + two uint8 chunks */
    if (per_image) *per_image = per;
    int64_t c = 64;
    while (c < 65536 && (size_t)(2 * c) * per <= budget) c *= 2;
    int64_t n64 = (n + 63) / 64 * 64;
    if (n64 > 0 && c > n64) c = n64;
    return (int)c;
}

/* ------------------------------------------------------------ writers */

/* The writers' roles: the .npy files (images, latents) and the PNG sheets. */
enum { W_FILES, W_SHEETS, W_ROLES };

typedef struct writer_t writer_t;
typedef struct {
    writer_t *w;
    int role;
    pthread_t th;
} writer_role;

struct writer_t {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int users[2];          /* writers still to take buffer b (0: free) */
    int done[W_ROLES][2];  /* role r has taken buffer b since it was handed over */
    int n[2];              /* images in buffer b */
    int nroles;            /* writer threads running */
    int quit;              /* no more buffers will come */
    int err;               /* first error (the writers stop writing) */
    char msg[2048];        /* its message (errors are thread-local) */
    writer_role role[W_ROLES];
    int L;
    uint8_t *px[2];
    real *zs[2];
    vae_npy_writer *npy, *lat;
    vae_sheets *sheets;
};

/* A writer: takes buffers 0, 1, 0, ... as they are handed over. */
static void *writer_main(void *arg) {
    const writer_role *r = arg;
    writer_t *w = r->w;
    for (int b = 0;; b = 1 - b) {
        pthread_mutex_lock(&w->mu);
        while (!(w->users[b] > 0 && !w->done[r->role][b]) && !w->quit)
            pthread_cond_wait(&w->cv, &w->mu);
        if (!(w->users[b] > 0 && !w->done[r->role][b])) { /* quit and nothing left */
            pthread_mutex_unlock(&w->mu);
            return NULL;
        }
        const int n = w->n[b], failed = w->err;
        pthread_mutex_unlock(&w->mu);

        int rc = VAE_OK;
        if (!failed && r->role == W_FILES) {
            if (w->npy) rc = vae_npy_append(w->npy, w->px[b], n);
            if (!rc && w->lat) {
                if (sizeof(real) != sizeof(float)) {
                    /* the double build: narrow in place, front to back (float i
                     * lands below double i, which is already read) */
                    float *f = (float *)w->zs[b];
                    for (size_t i = 0; i < (size_t)n * (size_t)w->L; i++) f[i] = (float)w->zs[b][i];
                }
                rc = vae_npy_append(w->lat, w->zs[b], n);
            }
        } else if (!failed) {
            rc = vae_sheets_push(w->sheets, w->px[b], n);
        }

        pthread_mutex_lock(&w->mu);
        if (rc && !w->err) {
            w->err = rc;
            snprintf(w->msg, sizeof w->msg, "%s", vae_error_get());
        }
        w->done[r->role][b] = 1;
        w->users[b]--;
        pthread_cond_broadcast(&w->cv);
        pthread_mutex_unlock(&w->mu);
    }
}

/* Start a writer per role in use (files: .npy or latents; sheets); 0 or an
 * error (the ones started are stopped by writers_stop). */
static int writers_start(writer_t *w) {
    const int use[W_ROLES] = {w->npy || w->lat, w->sheets != NULL};
    for (int r = 0; r < W_ROLES; r++) {
        if (!use[r]) continue;
        writer_role *wr = &w->role[w->nroles];
        wr->w = w, wr->role = r;
        if (pthread_create(&wr->th, NULL, writer_main, wr))
            return vae_error_set(VAE_ENOMEM, "cannot start the writer thread");
        w->nroles++;
    }
    return VAE_OK;
}

/* No more buffers: the writers finish what was handed over and end. */
static void writers_stop(writer_t *w) {
    pthread_mutex_lock(&w->mu);
    w->quit = 1;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    for (int i = 0; i < w->nroles; i++) pthread_join(w->role[i].th, NULL);
}

/* Hand buffer b (n images) to the writers. */
static void writer_put(writer_t *w, int b, int n) {
    pthread_mutex_lock(&w->mu);
    w->n[b] = n;
    for (int r = 0; r < W_ROLES; r++) w->done[r][b] = 0;
    w->users[b] = w->nroles;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* Wait until buffer b is free; returns the writers' error code so far. */
static int writer_wait(writer_t *w, int b) {
    pthread_mutex_lock(&w->mu);
    while (w->users[b] > 0) pthread_cond_wait(&w->cv, &w->mu);
    int err = w->err;
    pthread_mutex_unlock(&w->mu);
    return err;
}

/* ------------------------------------------------------------ progress */

static void progress(int64_t done, int64_t total, double secs, int final) {
    char bar[31];
    int fill = total ? (int)(30 * done / total) : 30;
    for (int i = 0; i < 30; i++) bar[i] = i < fill ? '#' : '.';
    bar[30] = 0;
    double ips = secs > 0 ? (double)done / secs : 0;
    double eta = ips > 0 ? (double)(total - done) / ips : 0;
    fprintf(stderr, "\rsample [%s] %3d%% %" PRId64 "/%" PRId64 " images  %9.0f img/s  ETA %5.0f s  %s", bar,
            total ? (int)(100 * done / total) : 100, done, total, ips, eta, final ? "\n" : "");
    fflush(stderr);
}

/* ------------------------------------------------------------ run */

int vae_sample_run(vae_model *m, const vae_sample_job *job, vae_sample_result *res) {
    vae_backend *be = m->be;
    const vae_shape s = m->cfg->input;
    const int D = m->D, L = m->L, B = m->B;
    const int64_t n = job->last - job->first;
    memset(res, 0, sizeof *res);
    if (job->first < 0 || n <= 0)
        return vae_error_set(VAE_EINVAL, "empty slice [%" PRId64 ", %" PRId64 ")", job->first, job->last);
    if (job->spec.L != L)
        return vae_error_set(VAE_EINVAL, "latent spec has %d dimensions, the model %d", job->spec.L, L);
    const int want_host = job->npy_path || job->sheet_dir; /* pixels come back to the host */
    const int want_z = job->latents_path != NULL;
    const int async = be->download_async && be->copy_wait && be->host_alloc && be->host_free;

    vae_npy_writer npy, lat;
    vae_sheets *sheets = NULL;
    writer_t w;
    memset(&w, 0, sizeof w);
    w.L = L;
    uint8_t *dev_px[2] = {NULL, NULL};
    real *dev_vec = NULL;
    int rc = VAE_OK, npy_open = 0, lat_open = 0, thread_up = 0, sync_up = 0;

    /* ---- buffers */
    for (int b = 0; b < 2 && !rc; b++) {
        dev_px[b] = be->alloc(be, (size_t)B * D);
        if (!dev_px[b]) rc = vae_error_prefix(VAE_ENOMEM, "decoded pixels");
        if (!rc && want_host) {
            w.px[b] = async ? be->host_alloc(be, (size_t)B * D) : vae_malloc((size_t)B, (size_t)D);
            if (!w.px[b]) rc = vae_error_prefix(VAE_ENOMEM, "host pixel buffer");
        }
        if (!rc && want_z) {
            w.zs[b] = async ? be->host_alloc(be, (size_t)B * L * sizeof(real))
                            : vae_malloc((size_t)B * L, sizeof(real));
            if (!w.zs[b]) rc = vae_error_prefix(VAE_ENOMEM, "host latent buffer");
        }
    }
    if (!rc && job->vec) {
        size_t nv = job->spec.kind == VAE_LATENT_GRID ? (size_t)L : 2 * (size_t)L;
        dev_vec = be->alloc(be, nv * sizeof(real));
        if (!dev_vec) rc = vae_error_prefix(VAE_ENOMEM, "latent vectors");
        else be->upload(be, dev_vec, job->vec, nv * sizeof(real));
    }

    /* ---- outputs */
    if (!rc && job->npy_path) {
        rc = vae_npy_open(&npy, job->npy_path, n, s.c, s.h, s.w);
        npy_open = !rc;
        w.npy = npy_open ? &npy : NULL;
    }
    if (!rc && want_z) {
        rc = vae_npy_open_f32(&lat, job->latents_path, n, L);
        lat_open = !rc;
        w.lat = lat_open ? &lat : NULL;
    }
    if (!rc && job->sheet_dir) {
        rc = vae_sheets_open(&sheets, job->sheet_dir, job->sheet_prefix, n, job->sheet_cols, s.c, s.h,
                             s.w, job->sheet_px, job->sheet_threads);
        w.sheets = sheets;
        char other[1200];
        const int64_t nf = rc ? 0 : vae_sheets_foreign(sheets, other, sizeof other);
        if (nf < 0) rc = VAE_EIO;
        else if (nf > 0)
            rc = vae_error_set(VAE_EINVAL,
                               "%s holds %" PRId64 " PNG sheet%s of an earlier run under the name "
                               "%s* with another layout (%s%s); this run's sheets would be mixed "
                               "with them: remove them, or give another --out (or --no-png)",
                               job->sheet_dir, nf, nf > 1 ? "s" : "", job->sheet_prefix, other,
                               nf > 1 ? ", ..." : "");
    }
    if (!rc && (want_host || want_z)) {
        if (pthread_mutex_init(&w.mu, NULL) || pthread_cond_init(&w.cv, NULL)) {
            rc = vae_error_set(VAE_ENOMEM, "cannot start the writer thread");
        } else {
            sync_up = 1;
            rc = writers_start(&w);
            thread_up = !rc;
        }
    }

    /* ---- decode loop */
    const double t0 = vae_now();
    double last_bar = 0;
    int64_t done = 0;       /* images handed to the writer (or decoded, without outputs) */
    int pending = -1, pending_n = 0; /* buffer whose copy is in flight */
    int k = 0;
    for (int64_t i = 0; i < n && !rc; i += B, k++) {
        if (job->stop && *job->stop) {
            res->stopped = 1;
            break;
        }
        const int b = k & 1;
        const int c = n - i < B ? (int)(n - i) : B;
        be->latent_fill(be, m->z, c, job->first + i, &job->spec, dev_vec);
        if (want_z) {
            /* the latents as generated, before any rounding by the decoder */
            if (writer_wait(&w, b)) break;
            if (async) {
                /* waited for at once: decoding may overwrite z (rounding,
                 * in-place layers) while a copy of it would be in flight */
                be->download_async(be, w.zs[b], m->z, (size_t)c * L * sizeof(real));
                be->copy_wait(be);
            } else {
                be->download(be, w.zs[b], m->z, (size_t)c * L * sizeof(real));
            }
        }
        /* On a backend whose results may depend on the batch size (CUDA:
         * algorithms chosen per shape), once there are several chunks each
         * is decoded at the full size B: the last one's rows past c still
         * hold the chunk before's latents, decoded and dropped. So every
         * image goes through the same plans and algorithms, a slice's images
         * are the whole run's bit for bit, and the last chunk starts no new
         * algorithm search; at most one chunk of extra work. (The CPU
         * backend keeps its short last chunk: the slice test of
         * tests/cli/test_sample.py shows the same images either way.) */
        const int cb = be->batch_variant && n > B ? B : c;
        real *out = vae_model_decode(m, m->z, cb);
        be->to_u8(be, dev_px[b], out, (size_t)c * D, m->cfg->likelihood);
        if (pending >= 0) { /* chunk k-1: its copy is done once copy_wait returns */
            if (async) be->copy_wait(be);
            writer_put(&w, pending, pending_n);
            done += pending_n;
            pending = -1;
        }
        if (thread_up) {
            if (writer_wait(&w, b)) break;
            if (want_host) {
                if (async) be->download_async(be, w.px[b], dev_px[b], (size_t)c * D);
                else be->download(be, w.px[b], dev_px[b], (size_t)c * D);
            }
            pending = b, pending_n = c;
        } else {
            done += c;
        }
        if (k == 0 && n > B) {
            /* the first chunk's end, one-time set-up included (one sync) */
            be->sync(be);
            res->first_images = c;
            res->first_seconds = vae_now() - t0;
        }
        if (job->progress) {
            double now = vae_now();
            if (now - last_bar > 0.2) {
                progress(done, n, now - t0, 0);
                last_bar = now;
            }
        }
    }
    if (pending >= 0) {
        if (async) be->copy_wait(be);
        writer_put(&w, pending, pending_n);
        done += pending_n;
    }
    be->sync(be);
    if (sync_up) {
        writers_stop(&w);
        if (w.err) rc = vae_error_set(w.err, "%s", w.msg);
        pthread_mutex_destroy(&w.mu);
        pthread_cond_destroy(&w.cv);
    }
    res->written = done;

    /* ---- close: complete (or stopped: shorter, valid) files, or none on error */
    if (npy_open) {
        if (rc) vae_atomic_abort(&npy.af);
        else rc = vae_npy_close(&npy);
    }
    if (lat_open) {
        if (rc) vae_atomic_abort(&lat.af);
        else rc = vae_npy_close(&lat);
    }
    if (sheets) {
        if (rc || res->stopped) {
            res->sheets = (int)vae_sheets_committed(sheets);
            vae_sheets_abort(sheets);
        } else {
            res->sheets = (int)vae_sheets_count(sheets);
            rc = vae_sheets_close(sheets);
        }
    }
    /* the files are complete (fsynced, renamed) before the clock stops */
    res->seconds = vae_now() - t0;
    if (job->progress) progress(done, n, res->seconds, 1);
    for (int b = 0; b < 2; b++) {
        if (dev_px[b]) be->release(be, dev_px[b]);
        if (async) {
            if (w.px[b]) be->host_free(be, w.px[b]);
            if (w.zs[b]) be->host_free(be, w.zs[b]);
        } else {
            free(w.px[b]);
            free(w.zs[b]);
        }
    }
    if (dev_vec) be->release(be, dev_vec);
    return rc;
}

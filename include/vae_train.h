/* vae_train.h — checkpoints, the training loop, evaluation and sampling:
 * what the `vae` subcommands run. */
#ifndef VAE_TRAIN_H
#define VAE_TRAIN_H

#include "vae_core.h"
#include "vae_config.h"
#include "vae_data.h"
#include "vae_io.h"
#include "vae_model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Everything besides the tensors that an exact resume needs. The random
 * state is the pair (seed, step): shuffling and noise are counter-based, so
 * nothing else is carried. */
typedef struct {
    int64_t step;            /* optimizer steps done */
    int64_t steps_per_epoch; /* ceil(N_train / batch) */
    uint64_t seed;
    int batch;
    double acc_recon, acc_kl; /* sums over the images of the current, unfinished epoch */
    double elapsed_s;         /* training time so far */
} vae_train_state;

/* safetensors: model tensors under their state_dict names, Adam moments as
 * "optimizer.exp_avg.<name>" / "optimizer.exp_avg_sq.<name>", and metadata
 * (format, config text, step, seed, batch, ...). Atomic. */
int vae_ckpt_save(const char *path, vae_model *m, const vae_train_state *st);
/* Read a checkpoint file and parse the config embedded in it into `cfg`
 * (a fresh config: any text it held is not freed). `f` holds the
 * file for vae_ckpt_restore and must be freed with vae_st_free. */
int vae_ckpt_open(const char *path, vae_st_file *f, vae_config *cfg);
/* Copy parameters (and, if with_optim, Adam moments) into the model and
 * fill st. Every tensor's presence, dtype and shape are checked. */
int vae_ckpt_restore(const vae_st_file *f, const char *path, vae_model *m, vae_train_state *st,
                     int with_optim);
/* For a directory: the newest checkpoint (highest step) in it that loads and
 * passes its checksum; for a file: the file. Writes the chosen path. */
int vae_ckpt_resolve(const char *path_or_dir, char *out, size_t out_len);

typedef struct {
    const char *config_path; /* for the record in messages */
    const char *data_dir;    /* resolved data directory */
    const char *out_dir;     /* run directory */
    const char *resume;      /* checkpoint file or directory, or NULL */
    int progress;            /* 1: progress bar (terminal), 0: one line per epoch */
    int keep;                /* checkpoints kept (0 = all) */
    int max_bad_steps;       /* steps with non-finite gradients tolerated (0 = stop at first) */
    /* called once the run is set up (data and checkpoint loaded, config.ini
     * written), before its first step; NULL: nothing. A run that fails
     * before never calls it. */
    void (*on_start)(void *arg);
    void *on_start_arg;
} vae_train_opts;

/* Train per cfg (already merged with command-line overrides). Returns 0,
 * or non-zero after printing why. */
int vae_train(vae_config *cfg, vae_backend *be, const vae_train_opts *o);

typedef struct {
    double nelbo, recon, kl; /* mean per image, nats */
    double iw_nll;           /* importance-weighted NLL estimate (NAN if not computed) */
    double mse;              /* mean squared error per pixel of the mean reconstruction */
    int n, iw_k;
} vae_eval_result;

/* The shuffle of epoch `epoch`: Fisher-Yates over 0..n-1 driven by Philox
 * stream (seed, VAE_RNG_SHUFFLE, epoch), so a resumed run replays it. */
void vae_shuffle_perm(int32_t *perm, int n, uint64_t seed, int64_t epoch);
/* The constants of a training run on n images that step_begin computes each
 * step's values from (vae_step_vals_at in vae_math.h: batch offset, noise
 * subsequence, KL weight ramped linearly over the first kl_warmup_steps
 * steps, Adam's bias corrections, the learning-rate schedule's factor over
 * the run's epochs x ceil(n / batch) steps). */
vae_step_plan vae_train_plan(const vae_config *cfg, int64_t n);

/* Data resident in backend memory for gather_batch. */
typedef struct {
    uint8_t *data;  /* [N, D] backend memory */
    int32_t *idx;   /* [N] backend memory: a permutation or 0..N-1 */
    int n, d;
} vae_dev_data;
int vae_dev_data_upload(vae_dev_data *dd, vae_backend *be, const vae_dataset *ds);
void vae_dev_data_free(vae_dev_data *dd, vae_backend *be);

/* The training step as vae_train issues it (public for the tests). Step s
 * (0-based) is batch s % spe of epoch s / spe's shuffle (vae_shuffle_perm),
 * with the values vae_step_vals_at(plan, s) gives: beta ramped by s, noise
 * from Philox (seed, TRAIN, s), Adam's bias corrections for t = s + 1. A
 * step takes nothing from the host that changes between steps — step_begin
 * computes its values on the device — so on a backend with graphs each step
 * is one graph launch: one graph for a full batch and one for an epoch's
 * short last batch, each captured on the second step of its shape (the
 * first, run directly, makes the backend's lazy state: cuDNN plans). */
#define VAE_MAX_FAULTS 16
typedef struct {
    vae_model *m;
    const vae_config *cfg;
    vae_dev_data *dd;      /* the training set */
    vae_step_plan plan;
    int max_bad;           /* step_commit's max_bad (--max-bad-steps) */
    int32_t *perm;         /* host copy of the shuffle [dd->n] */
    int64_t perm_epoch;    /* the epoch whose shuffle is in dd->idx, -1: none */
    int64_t spe;           /* steps per epoch */
    int64_t faults[VAE_MAX_FAULTS]; /* 1-based steps whose batch gets a NaN */
    int n_faults;
    int rows;              /* rows of the step being issued */
    int use_graphs;        /* the backend has graphs, asked for, no capture failed */
    void *graph[2];        /* [0] full batch, [1] short last batch */
    int ran[2];            /* a step of that shape has run directly */
} vae_stepper;

/* Sets up steps from `first` on (writes m->step_vals->next = first). graphs:
 * use the backend's graphs if it has them. Reads VAE_FAULT_NAN_AT_STEP (the
 * tests' fault injection: N[,M..] puts a NaN in the first pixel of the batch
 * of 1-based step N, ...; those steps run outside graphs). VAE_OK or
 * VAE_ENOMEM. */
int vae_stepper_init(vae_stepper *T, vae_model *m, vae_dev_data *dd, int64_t first, int max_bad,
                     int graphs);
/* Issues step `step` — the one m->step_vals->next names — whole: values,
 * gather, forward/backward, Adam, step_commit; directly or as a graph
 * launch. Nothing waits for the device or reads it. Returns the rows. */
int vae_stepper_run(vae_stepper *T, int64_t step);
/* Gather and forward/backward of step `step` only, from values the host
 * computes into m->aux_vals (the training step's values are not touched):
 * the gradient lands in m->g and the step's sums in the step slots. Places
 * the step's shuffle. Returns the rows. */
int vae_stepper_grad(vae_stepper *T, int64_t step);
void vae_stepper_free(vae_stepper *T);

/* Test-set evaluation: the ELBO with fixed evaluation noise (stream
 * VAE_RNG_EVAL), and with iw_k > 0 the importance-weighted bound
 * log (1/K) sum_k p(x, z_k) / q(z_k | x). */
int vae_evaluate(vae_model *m, const vae_dev_data *dd, uint64_t seed, int iw_k,
                 vae_eval_result *r);

/* Image grids for `vae sample` and the end of training, into dir:
 * samples.png (prior), reconstructions.png (test images beside their
 * reconstructions), traversal.png (latent dims 0 and 1 over [-3, 3]),
 * interpolation.png (test images ia -> ib, left out when the test set has
 * no such images). With test == NULL only the grids that need no data are
 * written; a plain autoencoder has no prior, so it writes only the two
 * that need test images. wrote (if not NULL, len bytes) receives the names
 * of the grids written, comma-separated ("" for none). */
int vae_write_grids(vae_model *m, const vae_dataset *test, const char *dir, uint64_t seed,
                    int ia, int ib, char *wrote, size_t len);
/* Posterior means mu[n, L] (host) of test images idx[n], encoded in batches of m->B. */
void vae_encode_means(vae_model *m, const vae_dataset *ds, const int *idx, int n, real *mu);

#ifdef __cplusplus
}
#endif
#endif /* VAE_TRAIN_H */

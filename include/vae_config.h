/* vae_config.h — the run configuration, parsed from an INI file (inih).
 *
 * Sections and keys (README "Config keys" is the user-facing copy):
 *   [data]    dataset = mnist | cifar10 | idx
 *             train_images, test_images (idx only: file names inside the data dir)
 *   [model]   type = vae | ae, input = CxHxW, latent = L,
 *             likelihood = bernoulli | gaussian, sigma (gaussian std, > 0)
 *   [encoder] layer = <spec>   (repeated, in order)
 *   [decoder] layer = <spec>   (repeated, in order)
 *   [train]   epochs, batch, seed, beta, kl_warmup_steps, threads, device,
 *             checkpoint_every (epochs), keep (checkpoints kept)
 *   [optim]   lr, beta1, beta2, eps, weight_decay, decoupled_weight_decay,
 *             clip_grad_norm, lr_schedule, lr_warmup_steps, min_lr
 *
 * Layer specs: "dense N", "conv N k=3 stride=2 pad=1",
 * "convT N k=3 stride=2 pad=1 out_pad=1", "relu", "leaky_relu [slope=0.01]",
 * "flatten", "reshape CxHxW". The encoder's output must be flat; the engine
 * appends the head (dense to 2L for a VAE: mu then log-variance; to L for an
 * AE). The decoder takes [L] and must end with as many values as the input.
 */
#ifndef VAE_CONFIG_H
#define VAE_CONFIG_H

#include "vae_core.h"
#include "vae_backend.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct { int c, h, w; } vae_shape; /* a flat vector of n is {n, 1, 1} */

typedef enum {
    VAE_LAYER_DENSE = 0,
    VAE_LAYER_CONV,
    VAE_LAYER_CONVT,
    VAE_LAYER_RELU,
    VAE_LAYER_LEAKY_RELU,
    VAE_LAYER_FLATTEN,
    VAE_LAYER_RESHAPE
} vae_layer_kind;

typedef struct {
    vae_layer_kind kind;
    int out;                       /* dense: features; conv/convT: channels */
    int k, stride, pad, out_pad;   /* conv/convT */
    float slope;                   /* leaky_relu */
    vae_shape reshape;             /* reshape target */
    int line;                      /* line in the config file, for messages */
    vae_shape in_shape, out_shape; /* filled by shape chaining */
} vae_layer_spec;

typedef enum { VAE_MODEL_VAE = 0, VAE_MODEL_AE = 1 } vae_model_type;
typedef enum { VAE_DATA_MNIST = 0, VAE_DATA_CIFAR10 = 1, VAE_DATA_IDX = 2 } vae_dataset_kind;

#define VAE_MAX_LAYERS 64

typedef struct {
    char path[1024];  /* file it came from ("<string>" if parsed from text) */
    char *text;       /* the whole config text, NUL-terminated (owned) */

    /* [data] */
    vae_dataset_kind dataset;
    char train_images[256], test_images[256]; /* idx only */

    /* [model] */
    vae_model_type type;
    vae_shape input;
    int latent;
    vae_likelihood likelihood;
    float sigma;

    /* [encoder] / [decoder] */
    vae_layer_spec enc[VAE_MAX_LAYERS];
    int n_enc;
    vae_layer_spec dec[VAE_MAX_LAYERS];
    int n_dec;

    /* [train] */
    int epochs;
    int batch;
    uint64_t seed;
    float beta;            /* KL weight */
    int kl_warmup_steps;   /* beta ramps linearly from 0 over this many steps; 0 = off */
    int threads;           /* 0 = all cores */
    vae_device device;
    int checkpoint_every;  /* epochs between checkpoints (the last epoch always saves) */
    int keep;              /* rotating checkpoints kept; 0 = keep all */

    /* [optim] */
    float lr, beta1, beta2, eps, weight_decay;
    int decoupled_weight_decay;
    float clip_grad_norm;  /* 0 = off */
    int lr_schedule;       /* VAE_LR_CONSTANT, _COSINE, _LINEAR (vae_math.h) */
    int lr_warmup_steps;   /* lr ramps from lr / n to lr over the first n steps; 0 = off */
    float min_lr;          /* where cosine and linear end, <= lr */
} vae_config;

/* Defaults for every optional key (required keys are zero/invalid). */
void vae_config_defaults(vae_config *cfg);

/* Parse a file / a text. On error returns VAE_EINVAL (or VAE_EIO) and
 * vae_error_get() reads "<path>:<line>: <what is wrong>; expected <what>".
 * Unknown keys, unknown sections, missing required keys, out-of-range values
 * and layer lists whose shapes do not chain are all errors. On success the
 * shapes of every layer are filled in. */
int vae_config_load(vae_config *cfg, const char *path);
int vae_config_parse(vae_config *cfg, const char *text, const char *name);
void vae_config_free(vae_config *cfg);

/* How config b (a resumed run's) differs from a (its checkpoint's). model
 * (mlen bytes) receives the differences in what defines the model and its
 * objective ([model] keys, the [encoder] and [decoder] layers), other
 * (olen) those in the keys that change the results from here on ([data],
 * [optim], [train] beta and kl_warmup_steps); each as "[section] key a ->
 * b" items separated by "; ", "" when there are none. Epochs, threads,
 * device, checkpoint_every and keep are settings of the run, not compared
 * (batch and seed must match for a resume, checked by the caller), except
 * that epochs count as a change of results when either config's
 * lr_schedule decays (over all the run's steps). Returns
 * the number of model differences. */
int vae_config_compare(const vae_config *a, const vae_config *b, char *model, size_t mlen,
                       char *other, size_t olen);

/* Re-run the checks that depend on keys a flag may override (batch, epochs,
 * lr, seed...). Returns VAE_OK or VAE_EINVAL with a message naming the key. */
int vae_config_validate(vae_config *cfg);

/* "dense", "conv", ... */
const char *vae_layer_kind_name(vae_layer_kind k);
/* D = c*h*w */
static inline int vae_shape_count(vae_shape s) { return s.c * s.h * s.w; }

#ifdef __cplusplus
}
#endif
#endif /* VAE_CONFIG_H */

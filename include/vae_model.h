/* vae_model.h — a VAE (or plain autoencoder) built from a config's layer
 * list, running on any backend.
 *
 *   x[B,D] -> encoder layers -> head (dense -> [B,2L] = mu | logvar) ->
 *   z = mu + exp(lv/2) eps -> decoder layers -> out[B,D] (logits or means)
 *   loss per image = recon(out, x) + beta * KL(q(z|x) || N(0,I))
 *
 * Parameters, gradients and the two Adam moments are each one flat buffer
 * [n_real] in backend memory, carved into named tensors by a table whose
 * names and layouts follow PyTorch's state_dict for the equivalent
 * nn.Sequential model: encoder.<i>.weight/bias, head.weight/bias,
 * decoder.<i>.weight/bias (i = index in the layer list, activations count).
 * Linear weight [out,in]; Conv2d weight [out,in,k,k];
 * ConvTranspose2d weight [in,out,k,k].
 */
#ifndef VAE_MODEL_H
#define VAE_MODEL_H

#include "vae_core.h"
#include "vae_backend.h"
#include "vae_config.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    char name[64];      /* state_dict key */
    int ndim;
    int64_t shape[4];
    size_t offset;      /* in reals, into the flat buffers */
    size_t count;
    int fan_in;         /* PyTorch's fan_in for the default init */
} vae_param;

typedef struct {
    vae_layer_spec spec;   /* kind, hyper-parameters, in/out shapes */
    int w, b;              /* indices into model->params, or -1 */
    vae_conv_geom cg;      /* conv */
    vae_convt_geom tg;     /* convT */
    real *out;             /* [B, out_count]; aliases the input for flatten/reshape */
    /* Dense + ReLU fusion (model.c, fuse_plan): a dense layer followed by a
     * relu (which runs in place on the dense output) is issued as one
     * dense_relu_forward; both layers have relu_fused = 1 and the relu does
     * nothing in the forward. relu_bwd_fused (both layers of such a pair):
     * the next layer above the pair that is not a view is a dense layer,
     * whose dense_backward_relu applies the ReLU's backward and computes
     * the lower dense layer's bias gradient; the relu then does nothing in
     * the backward either. */
    int relu_fused, relu_bwd_fused;
    /* Conv / convT + activation fusion (fuse_plan): a conv or convT layer
     * followed by a relu or leaky relu (in place on its output) is issued as
     * one conv2d_act_forward / convt2d_act_forward, and the activation's
     * backward is act_backward_bias, which also writes the conv's bias
     * gradient; the conv's backward then runs with db = NULL. Both layers
     * have act_fused = 1; the activation does nothing in the forward. */
    int act_fused;
    void *mask;            /* dense of a relu_bwd_fused pair: the backend's ReLU mask
                            * (relu_mask_bytes for batch B), or NULL if it wants none */
} vae_layer;

#define VAE_MAX_PARAMS (2 * (2 * VAE_MAX_LAYERS + 1))

typedef struct {
    const vae_config *cfg;
    vae_backend *be;
    int B;                 /* batch capacity the buffers were sized for */
    int D, L;              /* pixels per image, latent size */
    int head_out;          /* 2L for a VAE, L for an AE */

    vae_layer enc[VAE_MAX_LAYERS + 1]; /* encoder layers, then the head */
    int n_enc;                         /* includes the head */
    vae_layer dec[VAE_MAX_LAYERS];
    int n_dec;

    vae_param params[VAE_MAX_PARAMS];
    int n_params;
    size_t n_real;         /* total parameter count */

    /* backend memory */
    real *p, *g, *m, *v;   /* [n_real] each: params, grads, Adam m, Adam v */
    real *x;               /* [B, D] input batch in [0,1] */
    real *z;               /* [B, L] latents (for an AE: aliases the head output) */
    real *dz;              /* [B, L] */
    real *dhead;           /* [B, head_out] */
    real *recon, *kl;      /* [B] per-sample loss parts */
    real *gbuf[2];         /* [B, max activation] ping-pong gradient buffers */
    double *acc;           /* [VAE_ACC_N] accumulators, see VAE_ACC_*; followed by
                            * acc_snap */
    double *acc_snap;      /* [VAE_ACC_N] step_snapshot's copy of acc (read-back) */
    int *state;            /* [VAE_STEP_STATE_N] the step bookkeeping of step_commit
                            * (vae_math.h): flags, bad-step count, first/last bad
                            * step; state[VAE_STEP_FLAGS] is adam_step's `bad`.
                            * Followed by state_snap */
    int *state_snap;       /* [VAE_STEP_STATE_N] step_snapshot's copy of state */
    vae_step_vals *step_vals; /* [1] the training step's values (vae_math.h): the
                               * trainer sets `next` once, step_begin advances it;
                               * followed by aux_vals */
    vae_step_vals *aux_vals;  /* [1] values the host writes (vae_model_put_vals):
                               * evaluation, encoding, replays of a past step */
    void *masks;           /* one buffer holding every layer's ReLU mask, or NULL */
    size_t max_act;        /* largest per-sample activation count */
    size_t bytes;          /* backend bytes held by this model */
    int round_bits;        /* vae_model_decode: 0 = fp32; else the input of every
                            * weight layer is first rounded to this many mantissa
                            * bits (10 = TF32, 7 = bf16), see vae_round_mantissa */
} vae_model;

/* Accumulator slots, laid out as step_commit's block (vae_math.h):
 *   STEP_RECON, STEP_KL  sum_b recon_b, sum_b kl_b of the current training
 *                        step (forward_backward adds, step_commit clears);
 *   GNORM2               ||g||^2 of the step (vae_model_adam);
 *   EVAL_RECON, EVAL_KL  the evaluation's own sums, so an evaluation never
 *                        disturbs a training epoch;
 *   RECON, KL, IMAGES    the epoch's sums over its good steps and the number of
 *                        images in them (step_commit adds; the trainer resets
 *                        the three, which are contiguous, per epoch). */
enum {
    VAE_ACC_STEP_RECON = VAE_COMMIT_STEP_RECON, /* 0 */
    VAE_ACC_STEP_KL = VAE_COMMIT_STEP_KL,       /* 1 */
    VAE_ACC_GNORM2 = 2,
    VAE_ACC_EVAL_RECON = 3,
    VAE_ACC_EVAL_KL = 4,
    VAE_ACC_RECON = VAE_COMMIT_RECON,   /* 5 */
    VAE_ACC_KL = VAE_COMMIT_KL,         /* 6 */
    VAE_ACC_IMAGES = VAE_COMMIT_IMAGES, /* 7 */
    VAE_ACC_N = VAE_COMMIT_ACC_N        /* 8 */
};

/* Build the parameter table and allocate every buffer for batch capacity B. */
int vae_model_create(vae_model *m, const vae_config *cfg, vae_backend *be, int B);
void vae_model_free(vae_model *m);
/* Backend bytes vae_model_create(cfg, B) allocates, each buffer rounded up
 * to 256 bytes (what reserve() wants), on a backend that asks for ReLU masks
 * (relu_mask_bytes = vae_relu_mask_bytes, as the CUDA backend); a backend
 * that asks for none (CPU) allocates that less the one mask buffer. 0 on a
 * config error. Allocates nothing. */
size_t vae_model_plan_bytes(const vae_config *cfg, int B);
/* The backend vae_model_plan_bytes counts on, for a model whose shapes,
 * parameter table and byte count are wanted without its memory (vae info):
 * every buffer is one small static block, never to be read or written (no
 * init_params, no ops). Free with be->destroy after vae_model_free. NULL
 * when out of memory. */
vae_backend *vae_backend_plan_create(void);

/* PyTorch's default init (uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights
 * and biases of Linear, Conv2d and ConvTranspose2d), drawn from Philox
 * stream VAE_RNG_INIT; Adam moments zeroed. */
void vae_model_init_params(vae_model *m, uint64_t seed);

/* Uploads *v into m->aux_vals and returns it (backend memory), for the ops
 * that read a vae_step_vals block outside a training step. */
const vae_step_vals *vae_model_put_vals(vae_model *m, const vae_step_vals *v);

/* Forward pass on m->x[:B] without gradients (evaluation): fills every
 * activation, m->recon[B] and m->kl[B] (zero for an AE). Noise eps from
 * (seed, stream, sv->sub), element b*L + l; sv in backend memory. */
void vae_model_forward(vae_model *m, int B, uint64_t seed, uint32_t stream,
                       const vae_step_vals *sv);

/* One training pass on m->x[:B]: forward, the fused loss gradient, backward,
 * with the noise subsequence sv->sub and the KL weight sv->kl_scale = beta / B
 * (sv in backend memory; B = sv->rows in a training step).
 * Writes d/dtheta of mean_b(recon_b + beta * kl_b) into m->g, fills
 * m->recon/m->kl, and adds sum_b recon_b and sum_b kl_b into the step slots
 * m->acc[VAE_ACC_STEP_RECON], m->acc[VAE_ACC_STEP_KL] (zero before the step:
 * step_commit moves them into the epoch's slots if the step is good, and
 * clears them). */
void vae_model_forward_backward(vae_model *m, int B, uint64_t seed, uint32_t stream,
                                const vae_step_vals *sv);

/* ||g||^2 into m->acc[VAE_ACC_GNORM2], then Adam on the flat buffers, with
 * m->state[VAE_STEP_FLAGS] as the bad flag: a non-finite norm sets
 * VAE_STEP_BAD and skips the update, a halted state skips it too.
 * The bias corrections are sv->bc1, sv->bc2 (backend memory). */
void vae_model_adam(vae_model *m, const vae_config *cfg, real lr, const vae_step_vals *sv);

/* Decoder only: decode z[B,L] (backend memory) into the decoder's output,
 * returned as a backend pointer [B, D]. */
real *vae_model_decode(vae_model *m, const real *z, int B);

/* Encoder output (head) [B, head_out] of the last forward pass. */
real *vae_model_head(vae_model *m);
/* Decoder output [B, D] of the last forward pass. */
real *vae_model_output(vae_model *m);

/* Index of a parameter by name, or -1. */
int vae_model_find_param(const vae_model *m, const char *name);

/* FLOPs per image of the forward pass (multiply-adds count 2) and the
 * parameter count of layer i (encoder, head, decoder in order); used by
 * `vae info`. */
double vae_layer_flops(const vae_layer *l);
size_t vae_layer_params(const vae_model *m, const vae_layer *l);

#ifdef __cplusplus
}
#endif
#endif /* VAE_MODEL_H */

/* refdump.c — dump one training step of the engine for the PyTorch parity
 * check (tests/reference/check_reference.py).
 *
 *   vae_refdump CONFIG OUT_DIR [B]
 *
 * Builds the model of CONFIG on the CPU backend (one thread, so the sums run
 * in a fixed order), initialises it from the config's seed, runs one
 * vae_model_forward_backward on a deterministic batch of B images (default 8)
 * and writes
 *   OUT_DIR/ckpt.safetensors   the engine's own checkpoint (vae_ckpt_save):
 *                              the parameters the step used, under their
 *                              state_dict names
 *   OUT_DIR/debug.safetensors  what the step saw and produced:
 *     x        [B, C, H, W]   the batch, in [0,1]
 *     eps      [B, L]         the reparameterisation noise (VAE only):
 *                             vae_normal_at(seed, VAE_RNG_TRAIN, SUB, b*L + l)
 *     head     [B, head_out]  encoder head output (mu | log-variance, or the code)
 *     out      [B, D]         decoder output (logits or means)
 *     recon    [B], kl [B]    per-sample loss parts (kl = 0 for an AE)
 *     loss     [1] (F64)      mean_b (recon_b + beta kl_b), summed in double
 *     grad.<name>             d loss / d <name> for every parameter
 *   and metadata: beta, seed, sub, batch, x_source, and "layers", the engine's
 *   resolved layer list (one line per layer) for the reference to cross-check
 *   its own parse of the config against.
 *
 * The batch: the first B MNIST test images when $VAE_DATA_DIR is set, the
 * config is an MNIST 1x28x28 model and the files load; otherwise pseudo-random
 * pixels in [0,1] with exact 0s and 1s mixed in (both ends of the Bernoulli
 * target range). Exit status: 0 ok, 1 error (message on stderr).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "vae_train.h"

#define SUB 7 /* Philox subsequence of the dumped step's noise */

/* splitmix64: the synthetic batch's generator, independent of the engine's
 * Philox streams so that it cannot mask a bug in them. */
static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* x[B*D]: every 7th value exactly 0, every 11th exactly 1, the rest uniform
 * in [0,1) in steps of 2^-24 (exact in float). */
static void synthetic_batch(real *x, size_t n, uint64_t seed) {
    uint64_t s = seed ^ 0x5EEDull;
    for (size_t i = 0; i < n; i++) {
        double u = (double)(splitmix64(&s) >> 40) / 16777216.0;
        if (i % 7 == 3) u = 0.0;
        else if (i % 11 == 5) u = 1.0;
        x[i] = (real)u;
    }
}

/* The first B test images as reals in [0,1]; VAE_OK or an error. */
static int mnist_batch(real *x, const vae_config *cfg, int B, char *why, size_t why_len) {
    const char *dir = getenv("VAE_DATA_DIR");
    if (!dir || !*dir) {
        snprintf(why, why_len, "VAE_DATA_DIR is not set");
        return VAE_EINVAL;
    }
    if (cfg->dataset != VAE_DATA_MNIST || cfg->input.c != 1 || cfg->input.h != 28 ||
        cfg->input.w != 28) {
        snprintf(why, why_len, "not an MNIST 1x28x28 config");
        return VAE_EINVAL;
    }
    vae_dataset ds;
    memset(&ds, 0, sizeof ds);
    int rc = vae_dataset_load(&ds, cfg, dir, 0);
    if (rc) {
        snprintf(why, why_len, "%s", vae_error_get());
        return rc;
    }
    if (ds.n < B) {
        snprintf(why, why_len, "the test set has %d images, fewer than B = %d", ds.n, B);
        vae_dataset_free(&ds);
        return VAE_EINVAL;
    }
    size_t D = (size_t)ds.c * ds.h * ds.w;
    for (size_t i = 0; i < (size_t)B * D; i++) x[i] = (real)ds.images[i] / (real)255;
    vae_dataset_free(&ds);
    return VAE_OK;
}

/* The engine's resolved layer list, one line per layer:
 *   "<section> <i> <kind> out=<n> k= stride= pad= out_pad= slope= in=CxHxW out_shape=CxHxW" */
static char *describe_layers(const vae_config *cfg) {
    size_t cap = 256 * (size_t)(cfg->n_enc + cfg->n_dec + 1), len = 0;
    char *s = vae_malloc(cap, 1);
    if (!s) return NULL;
    s[0] = 0;
    for (int part = 0; part < 2; part++) {
        const vae_layer_spec *ls = part ? cfg->dec : cfg->enc;
        int n = part ? cfg->n_dec : cfg->n_enc;
        for (int i = 0; i < n; i++) {
            const vae_layer_spec *l = &ls[i];
            len += (size_t)snprintf(s + len, cap - len,
                                    "%s %d %s out=%d k=%d stride=%d pad=%d out_pad=%d slope=%.9g "
                                    "in=%dx%dx%d out_shape=%dx%dx%d\n",
                                    part ? "decoder" : "encoder", i, vae_layer_kind_name(l->kind),
                                    l->out, l->k, l->stride, l->pad, l->out_pad, (double)l->slope,
                                    l->in_shape.c, l->in_shape.h, l->in_shape.w, l->out_shape.c,
                                    l->out_shape.h, l->out_shape.w);
            VAE_ASSERT(len < cap);
        }
    }
    return s;
}

static void set_tensor(vae_st_tensor *t, const char *name, const char *dtype, const void *data,
                       size_t bytes, int ndim, const int64_t *shape) {
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    snprintf(t->dtype, sizeof t->dtype, "%s", dtype);
    t->ndim = ndim;
    for (int d = 0; d < ndim; d++) t->shape[d] = shape[d];
    t->data = data;
    t->bytes = bytes;
}

int main(int argc, char **argv) {
    if (argc < 3 || argc > 4) {
        fprintf(stderr, "usage: vae_refdump CONFIG OUT_DIR [B]\n");
        return 1;
    }
    const char *cfg_path = argv[1], *out_dir = argv[2];
    int B = 8;
    if (argc == 4) {
        char *end = NULL;
        long b = strtol(argv[3], &end, 10);
        if (end == argv[3] || *end || b < 1 || b > 4096) {
            fprintf(stderr, "vae_refdump: B = %s: expected an integer in 1..4096\n", argv[3]);
            return 1;
        }
        B = (int)b;
    }
    if (mkdir(out_dir, 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "vae_refdump: %s: %s\n", out_dir, strerror(errno));
        return 1;
    }

    vae_config cfg;
    vae_config_defaults(&cfg);
    if (vae_config_load(&cfg, cfg_path)) {
        fprintf(stderr, "vae_refdump: %s\n", vae_error_get());
        return 1;
    }
    vae_backend *be = vae_backend_cpu_create(1);
    if (!be) {
        fprintf(stderr, "vae_refdump: CPU backend: %s\n", vae_error_get());
        vae_config_free(&cfg);
        return 1;
    }
    vae_model m;
    if (vae_model_create(&m, &cfg, be, B)) {
        fprintf(stderr, "vae_refdump: %s\n", vae_error_get());
        be->destroy(be);
        vae_config_free(&cfg);
        return 1;
    }
    vae_model_init_params(&m, cfg.seed);

    const int D = m.D, L = m.L, H = m.head_out;
    const size_t P = m.n_real;
    real *x = vae_malloc((size_t)B * D, sizeof(real));
    real *eps = vae_malloc((size_t)B * L, sizeof(real));
    real *head = vae_malloc((size_t)B * H, sizeof(real));
    real *out = vae_malloc((size_t)B * D, sizeof(real));
    real *recon = vae_malloc((size_t)B, sizeof(real));
    real *kl = vae_malloc((size_t)B, sizeof(real));
    real *g = vae_malloc(P + 1, sizeof(real));
    vae_st_tensor *t = vae_calloc((size_t)m.n_params + 8, sizeof *t);
    char (*gname)[128] = vae_calloc((size_t)m.n_params + 1, sizeof *gname);
    char *layers = describe_layers(&cfg);
    int rc = 1;
    if (!x || !eps || !head || !out || !recon || !kl || !g || !t || !gname || !layers) {
        fprintf(stderr, "vae_refdump: out of memory\n");
        goto done;
    }

    char why[1200], x_source[1300];
    if (mnist_batch(x, &cfg, B, why, sizeof why) == VAE_OK) {
        snprintf(x_source, sizeof x_source, "mnist test images 0..%d", B - 1);
    } else {
        synthetic_batch(x, (size_t)B * D, cfg.seed);
        snprintf(x_source, sizeof x_source, "synthetic (%s)", why);
    }
    fprintf(stderr, "vae_refdump: %s, B = %d, x: %s\n", cfg_path, B, x_source);
    be->upload(be, m.x, x, (size_t)B * D * sizeof(real));

    /* the dumped step's values: noise subsequence SUB, KL weight beta / B
     * (the other fields are not read by forward_backward) */
    const real beta = (real)cfg.beta;
    const vae_step_vals vals = vae_step_vals_make(SUB, 0, SUB, B, beta * ((real)1 / (real)B), 1, 1);
    vae_model_forward_backward(&m, B, cfg.seed, VAE_RNG_TRAIN, vae_model_put_vals(&m, &vals));
    be->sync(be);
    be->download(be, head, vae_model_head(&m), (size_t)B * H * sizeof(real));
    be->download(be, out, vae_model_output(&m), (size_t)B * D * sizeof(real));
    be->download(be, recon, m.recon, (size_t)B * sizeof(real));
    be->download(be, kl, m.kl, (size_t)B * sizeof(real));
    be->download(be, g, m.g, P * sizeof(real));

    double loss = 0;
    for (int b = 0; b < B; b++) loss += (double)recon[b] + (double)beta * (double)kl[b];
    loss /= B;
    const int is_vae = cfg.type == VAE_MODEL_VAE;
    if (is_vae)
        for (int b = 0; b < B; b++)
            for (int l = 0; l < L; l++)
                eps[(size_t)b * L + l] =
                    vae_normal_at(cfg.seed, VAE_RNG_TRAIN, SUB, (uint64_t)b * L + l);

    /* the checkpoint: the parameters this step used */
    char path[2048];
    vae_train_state st;
    memset(&st, 0, sizeof st);
    st.steps_per_epoch = 1;
    st.seed = cfg.seed;
    st.batch = B;
    snprintf(path, sizeof path, "%s/ckpt.safetensors", out_dir);
    if (vae_ckpt_save(path, &m, &st)) {
        fprintf(stderr, "vae_refdump: %s\n", vae_error_get());
        goto done;
    }

    /* the debug state */
    int n = 0;
    int64_t sx[4] = {B, cfg.input.c, cfg.input.h, cfg.input.w};
    int64_t se[2] = {B, L}, sh[2] = {B, H}, so[2] = {B, D}, sb[1] = {B}, s1[1] = {1};
    /* F64 first: the writer keeps every tensor aligned to its element size */
    set_tensor(&t[n++], "loss", "F64", &loss, sizeof loss, 1, s1);
    set_tensor(&t[n++], "x", VAE_REAL_NAME, x, (size_t)B * D * sizeof(real), 4, sx);
    if (is_vae) set_tensor(&t[n++], "eps", VAE_REAL_NAME, eps, (size_t)B * L * sizeof(real), 2, se);
    set_tensor(&t[n++], "head", VAE_REAL_NAME, head, (size_t)B * H * sizeof(real), 2, sh);
    set_tensor(&t[n++], "out", VAE_REAL_NAME, out, (size_t)B * D * sizeof(real), 2, so);
    set_tensor(&t[n++], "recon", VAE_REAL_NAME, recon, (size_t)B * sizeof(real), 1, sb);
    set_tensor(&t[n++], "kl", VAE_REAL_NAME, kl, (size_t)B * sizeof(real), 1, sb);
    for (int i = 0; i < m.n_params; i++) {
        const vae_param *p = &m.params[i];
        snprintf(gname[i], sizeof gname[i], "grad.%s", p->name);
        set_tensor(&t[n++], gname[i], VAE_REAL_NAME, g + p->offset, p->count * sizeof(real),
                   p->ndim, p->shape);
    }
    char s_beta[40], s_seed[32], s_sub[16], s_batch[16];
    snprintf(s_beta, sizeof s_beta, "%.9g", (double)beta);
    snprintf(s_seed, sizeof s_seed, "%" PRIu64, cfg.seed);
    snprintf(s_sub, sizeof s_sub, "%d", SUB);
    snprintf(s_batch, sizeof s_batch, "%d", B);
    vae_st_meta meta[] = {
        {"format", "vae-refdump"}, {"config_path", (char *)cfg_path}, {"beta", s_beta},
        {"seed", s_seed},          {"sub", s_sub},                    {"batch", s_batch},
        {"x_source", x_source},    {"layers", layers},
    };
    snprintf(path, sizeof path, "%s/debug.safetensors", out_dir);
    if (vae_st_write(path, t, n, meta, (int)(sizeof meta / sizeof meta[0]))) {
        fprintf(stderr, "vae_refdump: %s\n", vae_error_get());
        goto done;
    }
    rc = 0;

done:
    free(x);
    free(eps);
    free(head);
    free(out);
    free(recon);
    free(kl);
    free(g);
    free(t);
    free(gname);
    free(layers);
    vae_model_free(&m);
    be->destroy(be);
    vae_config_free(&cfg);
    return rc;
}

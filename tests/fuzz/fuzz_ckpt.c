/* fuzz_ckpt.c — libFuzzer harness for checkpoint loading: vae_ckpt_open
 * (safetensors file, then the 'format', 'format_version' and 'config'
 * metadata, then the embedded config through the INI parser).
 *
 * When the checkpoint opens and the model its config describes is small, the
 * model is built on the CPU backend and vae_ckpt_restore copies the tensors
 * in (presence, dtype and shape checks, numeric metadata) — the path `vae
 * train --resume`, `eval` and `sample` take. */
#include "fuzz_util.h"

#include "vae_train.h"

#define MAX_PARAMS (1 << 18)
#define MAX_ACT (1 << 16)

static fuzz_file g_file;
static vae_backend *g_be;

/* Rough size of the model a config describes, to skip huge ones. */
static int small_model(const vae_config *cfg) {
    double params = 0;
    const vae_layer_spec *lists[2] = {cfg->enc, cfg->dec};
    int counts[2] = {cfg->n_enc, cfg->n_dec};
    double flat = 0;
    for (int s = 0; s < 2; s++)
        for (int i = 0; i < counts[s]; i++) {
            const vae_layer_spec *l = &lists[s][i];
            double in = (double)l->in_shape.c * l->in_shape.h * l->in_shape.w;
            double out = (double)l->out_shape.c * l->out_shape.h * l->out_shape.w;
            if (in > MAX_ACT || out > MAX_ACT) return 0;
            if (l->kind == VAE_LAYER_DENSE) params += in * l->out + l->out;
            else if (l->kind == VAE_LAYER_CONV || l->kind == VAE_LAYER_CONVT)
                params += (double)l->in_shape.c * l->out * l->k * l->k + l->out;
            if (s == 0 && i == counts[0] - 1) flat = out;
        }
    params += flat * 2 * cfg->latent + 2 * cfg->latent; /* head */
    return params <= MAX_PARAMS;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_file_set(&g_file, "ckpt", data, size);
    vae_st_file f;
    vae_config cfg;
    vae_config_defaults(&cfg);
    int rc = vae_ckpt_open(g_file.path, &f, &cfg);
    if (rc != VAE_OK) {
        if (f.buf || f.t || f.meta || cfg.text) abort(); /* nothing is handed back on error */
        vae_config_free(&cfg);
        return 0;
    }
    if (small_model(&cfg)) {
        if (!g_be) g_be = vae_backend_cpu_create(1); /* kept for the whole run */
        vae_model m;
        if (g_be && vae_model_create(&m, &cfg, g_be, 1) == VAE_OK) {
            vae_train_state st;
            memset(&st, 0, sizeof st);
            (void)vae_ckpt_restore(&f, g_file.path, &m, &st, 1);
            (void)vae_ckpt_restore(&f, g_file.path, &m, NULL, 0);
            vae_model_free(&m);
        }
    }
    vae_st_free(&f);
    vae_config_free(&cfg);
    return 0;
}

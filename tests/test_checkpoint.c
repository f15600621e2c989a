/* test_checkpoint.c — checkpoint round trip and mismatches.
 *
 * A model with trained-looking state (parameters and Adam moments after a few
 * steps) is saved, restored into a fresh model, and compared bit for bit,
 * together with the training state. Restoring into a model of another
 * architecture, a checkpoint missing a tensor, or a file that is not a vae
 * checkpoint fail with messages naming the file and the tensor. */
#include <string.h>

#include "testutil.h"
#include "vae_train.h"

static const char *CFG =
    "[data]\ndataset = mnist\n"
    "[model]\ninput = 1x8x8\nlatent = 3\n"
    "[encoder]\nlayer = conv 4 k=3 stride=2 pad=1\nlayer = relu\nlayer = flatten\nlayer = dense 16\nlayer = relu\n"
    "[decoder]\nlayer = dense 64\nlayer = relu\nlayer = reshape 4x4x4\nlayer = convT 1 k=3 stride=2 pad=1 out_pad=1\n"
    "[train]\nbatch = 4\nseed = 9\n";

/* Writes the tensors and metadata to `bad`, and expects opening it and
 * restoring it into m (with a training state when with_state) to fail with
 * a message holding `want`. */
static void restore_refused(const char *bad, const vae_st_tensor *ts, int nt, const vae_st_meta *ms,
                            int nm, vae_model *m, int with_state, const char *want) {
    CHECK(vae_st_write(bad, ts, nt, ms, nm) == VAE_OK);
    vae_st_file f;
    vae_config cfg;
    vae_train_state st;
    vae_config_defaults(&cfg);
    int rc = vae_ckpt_open(bad, &f, &cfg);
    if (rc == VAE_OK) {
        rc = vae_ckpt_restore(&f, bad, m, with_state ? &st : NULL, with_state);
        vae_st_free(&f);
    }
    CHECK_MSG(rc != VAE_OK && strstr(vae_error_get(), want), "want \"%s\": %s", want,
              rc ? vae_error_get() : "accepted");
    vae_config_free(&cfg);
}

static void train_a_little(vae_model *m, const vae_config *cfg) {
    real x[4 * 64];
    test_rand_fill_real(x, 4 * 64, 0, 1, 2);
    m->be->upload(m->be, m->x, x, sizeof x);
    /* steps 0..2 over 4 images in batches of 4, beta 1, no warm-up */
    const vae_step_plan plan = {4, 4, 0, 1.0, cfg->beta1, cfg->beta2, VAE_LR_CONSTANT, 0, 0, 0};
    for (int s = 0; s < 3; s++) {
        vae_step_vals v;
        vae_step_vals_at(&v, &plan, s);
        const vae_step_vals *sv = vae_model_put_vals(m, &v);
        vae_model_forward_backward(m, 4, cfg->seed, VAE_RNG_TRAIN, sv);
        vae_model_adam(m, cfg, (real)cfg->lr, sv);
    }
}

int main(void) {
    vae_config cfg;
    vae_config_defaults(&cfg);
    CHECK(vae_config_parse(&cfg, CFG, "mem.ini") == VAE_OK);
    vae_backend *be = vae_backend_cpu_create(1);
    vae_model a, b;
    CHECK(vae_model_create(&a, &cfg, be, 4) == VAE_OK);
    vae_model_init_params(&a, cfg.seed);
    train_a_little(&a, &cfg);

    char path[700];
    snprintf(path, sizeof path, "%s/ck.safetensors", test_tmpdir());
    vae_train_state st = {.step = 3, .steps_per_epoch = 7, .seed = 9, .batch = 4,
                          .acc_recon = 123.25, .acc_kl = 0.1 + 0.2, .elapsed_s = 1.5};
    CHECK(vae_ckpt_save(path, &a, &st) == VAE_OK);

    vae_st_file f;
    vae_config cfg2;
    vae_config_defaults(&cfg2);
    CHECK(vae_ckpt_open(path, &f, &cfg2) == VAE_OK);
    CHECK(cfg2.latent == 3 && cfg2.n_enc == cfg.n_enc && cfg2.n_dec == cfg.n_dec);
    CHECK(strcmp(cfg2.text, cfg.text) == 0);
    CHECK(vae_model_create(&b, &cfg2, be, 4) == VAE_OK);
    vae_train_state st2;
    memset(&st2, 0, sizeof st2);
    CHECK(vae_ckpt_restore(&f, path, &b, &st2, 1) == VAE_OK);
    CHECK(a.n_real == b.n_real);
    size_t P = a.n_real * sizeof(real);
    CHECK(memcmp(a.p, b.p, P) == 0);
    CHECK(memcmp(a.m, b.m, P) == 0);
    CHECK(memcmp(a.v, b.v, P) == 0);
    CHECK(st2.step == 3 && st2.steps_per_epoch == 7 && st2.seed == 9 && st2.batch == 4);
    CHECK(st2.acc_recon == 123.25 && st2.acc_kl == 0.1 + 0.2); /* %.17g round-trips doubles */
    CHECK(st2.elapsed_s == 1.5);
    /* the state_dict names and layouts */
    const vae_st_tensor *t = vae_st_find(&f, "encoder.0.weight");
    CHECK(t && t->ndim == 4 && t->shape[0] == 4 && t->shape[1] == 1 && t->shape[2] == 3);
    t = vae_st_find(&f, "decoder.3.weight"); /* convT: [in, out, k, k] */
    CHECK(t && t->ndim == 4 && t->shape[0] == 4 && t->shape[1] == 1);
    t = vae_st_find(&f, "head.weight");
    CHECK(t && t->shape[0] == 6 && t->shape[1] == 16);
    CHECK(vae_st_find(&f, "optimizer.exp_avg.head.bias") && vae_st_find(&f, "optimizer.exp_avg_sq.head.bias"));
    vae_st_free(&f);

    /* another architecture: a shape mismatch names the tensor */
    vae_config cfg3;
    vae_config_defaults(&cfg3);
    char *other = strdup(CFG);
    char *p = strstr(other, "dense 16");
    p[7] = '7'; /* dense 17 */
    CHECK(vae_config_parse(&cfg3, other, "other.ini") == VAE_OK);
    vae_model c;
    CHECK(vae_model_create(&c, &cfg3, be, 4) == VAE_OK);
    vae_config cfg4; /* vae_ckpt_open parses into a fresh config */
    vae_config_defaults(&cfg4);
    CHECK(vae_ckpt_open(path, &f, &cfg4) == VAE_OK);
    CHECK_ERR(vae_ckpt_restore(&f, path, &c, NULL, 0), "tensor 'encoder.3.weight' has shape [16,64]; the model expects [17,64]");
    vae_st_free(&f);
    /* ... and one whose last dimension alone differs (the conv at stride 1:
     * 256 inputs to the dense layer, not 64) */
    {
        vae_config cfg5;
        vae_config_defaults(&cfg5);
        char *s1 = strdup(CFG);
        char *q = strstr(s1, "stride=2");
        q[7] = '1';
        CHECK(vae_config_parse(&cfg5, s1, "stride1.ini") == VAE_OK);
        vae_model e;
        CHECK(vae_model_create(&e, &cfg5, be, 4) == VAE_OK);
        vae_config_free(&cfg4);
        vae_config_defaults(&cfg4);
        CHECK(vae_ckpt_open(path, &f, &cfg4) == VAE_OK);
        CHECK_ERR(vae_ckpt_restore(&f, path, &e, NULL, 0),
                  "tensor 'encoder.3.weight' has shape [16,64]; the model expects [16,256]");
        vae_st_free(&f);
        vae_model_free(&e);
        vae_config_free(&cfg5);
        free(s1);
    }

    /* a checkpoint missing a tensor */
    vae_st_tensor one = {.name = "head.bias", .dtype = "F32", .ndim = 1, .shape = {6}};
    float z[6] = {0};
    one.data = z;
    one.bytes = sizeof z;
    vae_st_meta meta[] = {{"format", "vae-engine-checkpoint"}, {"format_version", "1"}, {"config", cfg.text}};
    char path2[700];
    snprintf(path2, sizeof path2, "%s/partial.safetensors", test_tmpdir());
    CHECK(vae_st_write(path2, &one, 1, meta, 3) == VAE_OK);
    vae_config_free(&cfg4);
    vae_config_defaults(&cfg4);
    CHECK(vae_ckpt_open(path2, &f, &cfg4) == VAE_OK);
    CHECK_ERR(vae_ckpt_restore(&f, path2, &b, NULL, 0), "partial.safetensors: tensor 'encoder.0.weight' is missing");
    vae_st_free(&f);

    /* damage that the checksum does not catch, each refused naming what:
     * the same checkpoint rewritten (a fresh crc32) with one change */
    {
        vae_st_file g;
        CHECK(vae_st_read(&g, path) == VAE_OK);
        vae_st_tensor *ts = calloc((size_t)g.n_t, sizeof *ts);
        vae_st_meta *ms = calloc((size_t)g.n_meta, sizeof *ms);
        int nm = 0;
        for (int i = 0; i < g.n_meta; i++)
            if (strcmp(g.meta[i].key, "crc32")) ms[nm++] = g.meta[i];
        for (int i = 0; i < g.n_t; i++) ts[i] = g.t[i];
        char bad[700];
        snprintf(bad, sizeof bad, "%s/bad.safetensors", test_tmpdir());
        /* a NaN parameter (training never saves one), also at a tensor's
         * last element (the scan's bound) */
        const vae_st_tensor *w0 = vae_st_find(&g, "encoder.0.weight");
        float *nanw = malloc(w0->bytes);
        const size_t nanat[2] = {5, w0->bytes / sizeof(float) - 1};
        for (int k = 0; k < 2; k++) {
            memcpy(nanw, w0->data, w0->bytes);
            nanw[nanat[k]] = NAN;
            for (int i = 0; i < g.n_t; i++)
                if (!strcmp(ts[i].name, "encoder.0.weight")) ts[i].data = nanw;
            char want[160];
            snprintf(want, sizeof want,
                     "tensor 'encoder.0.weight' holds a non-finite value (nan at index %zu)", nanat[k]);
            restore_refused(bad, ts, g.n_t, ms, nm, &b, 0, want);
        }
        for (int i = 0; i < g.n_t; i++) ts[i] = g.t[i];
        /* metadata: a NaN loss sum, a negative step, another format version */
        static const struct {
            const char *key;
            char *value;
            const char *want;
        } md[] = {{"acc_recon", "nan", "metadata 'acc_recon' = \"nan\"; expected a finite number"},
                  {"step", "-5", "metadata 'step' = \"-5\"; expected a non-negative integer"},
                  {"format_version", "2", "checkpoint format_version 2; this build reads 1"}};
        for (size_t k = 0; k < sizeof md / sizeof md[0]; k++) {
            char *was = NULL;
            for (int i = 0; i < nm; i++)
                if (!strcmp(ms[i].key, md[k].key)) was = ms[i].value, ms[i].value = md[k].value;
            CHECK_MSG(was != NULL, "metadata '%s' not in the checkpoint", md[k].key);
            restore_refused(bad, ts, g.n_t, ms, nm, &b, 1, md[k].want);
            for (int i = 0; i < nm; i++)
                if (!strcmp(ms[i].key, md[k].key)) ms[i].value = was;
        }
        /* a tensor the model does not have */
        vae_st_tensor *ts2 = calloc((size_t)g.n_t + 1, sizeof *ts2);
        for (int i = 0; i < g.n_t; i++) ts2[i] = g.t[i];
        ts2[g.n_t] = one;
        snprintf(ts2[g.n_t].name, sizeof ts2[g.n_t].name, "encoder.9.weight");
        restore_refused(bad, ts2, g.n_t + 1, ms, nm, &b, 0,
                        "tensor 'encoder.9.weight' is not a parameter of this model");
        free(ts2);
        /* bytes appended after the tensors: named as such, not as corruption */
        size_t n = 0;
        char *raw = test_slurp(path, &n);
        FILE *o = fopen(bad, "wb");
        CHECK(raw && o && fwrite(raw, 1, n, o) == n && fwrite("xxxx", 1, 4, o) == 4);
        if (o) fclose(o);
        vae_config_free(&cfg4);
        vae_config_defaults(&cfg4);
        CHECK_ERR(vae_ckpt_open(bad, &f, &cfg4), "4 bytes after the last tensor's data");
        /* no crc32 at all: the header rewritten without it, the same data */
        uint64_t hl = 0;
        for (int k = 7; k >= 0; k--) hl = hl << 8 | (uint8_t)raw[k];
        char *hdr = strndup(raw + 8, (size_t)hl);
        char *cp = strstr(hdr, "\"crc32\"");
        CHECK(cp != NULL);
        if (cp) { /* "crc32":"<digits>" and a comma beside it -> spaces (JSON allows them) */
            char *e = strchr(cp + 8, '"');
            e = e ? strchr(e + 1, '"') : NULL;
            if (e) {
                char *from = cp, *to = e + 1;
                if (*to == ',') to++;
                else if (from > hdr && from[-1] == ',') from--;
                memset(from, ' ', (size_t)(to - from));
            }
        }
        o = fopen(bad, "wb");
        CHECK(o && fwrite(raw, 1, 8, o) == 8 && fwrite(hdr, 1, (size_t)hl, o) == hl &&
              fwrite(raw + 8 + hl, 1, n - 8 - hl, o) == n - 8 - hl);
        if (o) fclose(o);
        vae_config_free(&cfg4);
        vae_config_defaults(&cfg4);
        CHECK_ERR(vae_ckpt_open(bad, &f, &cfg4), "checkpoint has no 'crc32' metadata");
        free(hdr);
        free(raw);
        free(nanw);
        free(ts);
        free(ms);
        vae_st_free(&g);
    }

    /* a safetensors file that is not ours */
    vae_st_meta foreign[] = {{"format", "pt"}};
    CHECK(vae_st_write(path2, &one, 1, foreign, 1) == VAE_OK);
    vae_config_free(&cfg4);
    vae_config_defaults(&cfg4);
    CHECK_ERR(vae_ckpt_open(path2, &f, &cfg4), "not a vae checkpoint (metadata 'format' is \"pt\"");

    /* resolve: a directory gives its newest valid checkpoint */
    char best[1024];
    CHECK(vae_ckpt_resolve(test_tmpdir(), best, sizeof best) == VAE_OK);
    CHECK(strstr(best, "ck.safetensors") != NULL);

    free(other);
    vae_model_free(&c);
    vae_model_free(&b);
    vae_model_free(&a);
    vae_config_free(&cfg4);
    vae_config_free(&cfg3);
    vae_config_free(&cfg2);
    vae_config_free(&cfg);
    be->destroy(be);
    return test_finish();
}

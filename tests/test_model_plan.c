/* test_model_plan.c — vae_model_plan_bytes (what `vae train` reserves in the
 * CUDA arena before anything is allocated) against the bytes the real
 * vae_model_create asks a backend for: the CPU backend wrapped so that every
 * alloc is counted, rounded up to 256 bytes as the arena places buffers, and
 * so that it asks for the ReLU masks of the fused dense + relu pairs as the
 * CUDA backend does (relu_mask_bytes = vae_relu_mask_bytes; the CPU ops
 * ignore the masks). The plain CPU backend asks for no masks: it allocates
 * the plan less the one mask buffer. */
#include "testutil.h"
#include "vae_config.h"
#include "vae_model.h"

static vae_backend *g_inner;
static size_t g_counted;
static int g_nalloc;

static void *counting_alloc(vae_backend *be, size_t bytes) {
    (void)be;
    g_counted += (bytes + 255) & ~(size_t)255;
    g_nalloc++;
    return g_inner->alloc(g_inner, bytes);
}

static size_t cuda_like_mask_bytes(vae_backend *be, int B, int O) {
    (void)be;
    return vae_relu_mask_bytes(B, O);
}

/* Bytes vae_model_create allocates on `be` for cfg at batch B (counted);
 * the model keeps a pointer to the wrapper, which lives until the next call. */
static vae_backend g_wrapped;
static size_t counted_create(const vae_config *cfg, const vae_backend *be, int B, vae_model *m) {
    g_wrapped = *be;
    g_wrapped.alloc = counting_alloc;
    g_counted = 0, g_nalloc = 0;
    CHECK(vae_model_create(m, cfg, &g_wrapped, B) == VAE_OK);
    return g_counted;
}

static void check_config(const char *file, int B) {
    char path[1024];
    const char *src = getenv("VAE_SOURCE_DIR");
    snprintf(path, sizeof path, "%s/configs/%s", src ? src : ".", file);
    vae_config cfg;
    vae_config_defaults(&cfg);
    if (vae_config_load(&cfg, path)) {
        fprintf(stderr, "%s\n", vae_error_get());
        CHECK(0);
        return;
    }
    vae_backend masked = *g_inner;
    masked.relu_mask_bytes = cuda_like_mask_bytes;
    vae_model m;
    size_t counted = counted_create(&cfg, &masked, B, &m);
    size_t plan = vae_model_plan_bytes(&cfg, B);
    CHECK_MSG(plan == counted, "%s batch %d: plan %zu bytes, create allocated %zu (%d buffers)",
              file, B, plan, counted, g_nalloc);
    CHECK(plan >= m.bytes && plan - m.bytes < (size_t)256 * (size_t)g_nalloc);
    /* every shipped config has a dense + relu pair below a dense layer (the
     * encoder's last hidden layer below the head): one mask buffer */
    CHECK_MSG(m.masks != NULL, "%s: no ReLU mask allocated", file);
    size_t masks = 0;
    const vae_layer *ls[2] = {m.enc, m.dec};
    const int ns[2] = {m.n_enc, m.n_dec};
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < ns[k]; i++)
            if (ls[k][i].mask)
                masks += (vae_relu_mask_bytes(B, ls[k][i].spec.out) + 255) & ~(size_t)255;
    vae_model_free(&m);

    /* the plain CPU backend: no masks, everything else the same */
    size_t cpu = counted_create(&cfg, g_inner, B, &m);
    CHECK(m.masks == NULL);
    CHECK_MSG(cpu + masks == plan, "%s batch %d: CPU allocated %zu + masks %zu, plan %zu", file,
              B, cpu, masks, plan);
    vae_model_free(&m);
    vae_config_free(&cfg);
}

int main(void) {
    g_inner = vae_backend_cpu_create(1);
    if (!g_inner) return 1;
    const char *files[] = {"mnist_mlp.ini", "mnist_conv.ini", "cifar10_conv.ini", "mnist_ae.ini"};
    for (int i = 0; i < 4; i++) {
        check_config(files[i], 1);
        check_config(files[i], 128);
        check_config(files[i], 1000);
    }
    g_inner->destroy(g_inner);
    return test_finish();
}

/* test_model_plan.c — vae_model_plan_bytes (what `vae train` reserves in the
 * CUDA arena before anything is allocated) against the bytes the real
 * vae_model_create asks a backend for: the CPU backend wrapped so that every
 * alloc is counted, rounded up to 256 bytes as the arena places buffers. */
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
    vae_backend wrapped = *g_inner;
    wrapped.alloc = counting_alloc;
    g_counted = 0, g_nalloc = 0;
    vae_model m;
    CHECK(vae_model_create(&m, &cfg, &wrapped, B) == VAE_OK);
    size_t plan = vae_model_plan_bytes(&cfg, B);
    CHECK_MSG(plan == g_counted, "%s batch %d: plan %zu bytes, create allocated %zu (%d buffers)",
              file, B, plan, g_counted, g_nalloc);
    CHECK(plan >= m.bytes && plan - m.bytes < (size_t)256 * (size_t)g_nalloc);
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

/* fuzz_config.c — libFuzzer harness for the INI config parser.
 *
 * The input is a config file. It goes through both entry points:
 *   vae_config_parse (text; the bytes up to the first NUL) and
 *   vae_config_load  (file; the whole input, NUL bytes and 1 MiB limit included).
 * On success the result is validated and freed. */
#include "fuzz_util.h"

#include "vae_config.h"

static fuzz_file g_file;

static void check(vae_config *cfg, int rc) {
    if (rc == VAE_OK) {
        /* A parsed config must be internally consistent. */
        if (!cfg->text || cfg->n_enc < 1 || cfg->n_dec < 1 || cfg->n_enc > VAE_MAX_LAYERS ||
            cfg->n_dec > VAE_MAX_LAYERS)
            abort();
        (void)vae_config_validate(cfg);
        for (int i = 0; i < cfg->n_enc; i++) (void)vae_layer_kind_name(cfg->enc[i].kind);
        for (int i = 0; i < cfg->n_dec; i++) (void)vae_layer_kind_name(cfg->dec[i].kind);
    } else if (cfg->text) {
        abort(); /* on error the config must be reset (text NULL) */
    }
    vae_config_free(cfg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = 0;
    vae_config cfg;
    vae_config_defaults(&cfg);
    check(&cfg, vae_config_parse(&cfg, text, "<fuzz>"));
    free(text);

    fuzz_file_set(&g_file, "config", data, size);
    vae_config_defaults(&cfg);
    check(&cfg, vae_config_load(&cfg, g_file.path));
    return 0;
}

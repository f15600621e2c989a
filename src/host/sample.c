/* sample.c — image grids and prior samples from a trained model.
 *
 * Prior sample i uses latent elements i*L .. i*L+L-1 of Philox stream
 * VAE_RNG_PRIOR (subsequence 0), so any slice [a, b) of a run can be
 * regenerated alone and matches the same slice of a longer run.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vae_train.h"

/* Decode z[:n] (backend memory, n <= B) into host pixels out[n, D]. */
static void decode_u8(vae_model *m, const real *z, int n, uint8_t *dev_px, uint8_t *out) {
    real *o = vae_model_decode(m, z, n);
    m->be->to_u8(m->be, dev_px, o, (size_t)n * m->D, m->cfg->likelihood);
    m->be->download(m->be, out, dev_px, (size_t)n * m->D);
}

/* Decode host latents zs[n, L] in chunks of B into host pixels out[n, D]. */
static void decode_host_latents(vae_model *m, const real *zs, int n, uint8_t *dev_px, uint8_t *out) {
    for (int i = 0; i < n; i += m->B) {
        int c = n - i < m->B ? n - i : m->B;
        m->be->upload(m->be, m->z, zs + (size_t)i * m->L, (size_t)c * m->L * sizeof(real));
        decode_u8(m, m->z, c, dev_px, out + (size_t)i * m->D);
    }
}

/* Encode test images idx[n] to their posterior means mu[n, L] (host). */
void vae_encode_means(vae_model *m, const vae_dataset *ds, const int *idx, int n, real *mu) {
    real *x = vae_malloc((size_t)m->B * m->D, sizeof(real));
    real *head = vae_malloc((size_t)m->B * m->head_out, sizeof(real));
    VAE_ASSERT(x && head);
    /* the noise is drawn but not used: only mu is kept */
    const vae_step_vals v = vae_step_vals_make(0, 0, 0, 0, 0, 1, 1);
    const vae_step_vals *sv = vae_model_put_vals(m, &v);
    for (int i = 0; i < n; i += m->B) {
        int c = n - i < m->B ? n - i : m->B;
        for (int b = 0; b < c; b++)
            for (int d = 0; d < m->D; d++)
                x[(size_t)b * m->D + d] = (real)ds->images[(size_t)idx[i + b] * m->D + d] / (real)255;
        m->be->upload(m->be, m->x, x, (size_t)c * m->D * sizeof(real));
        vae_model_forward(m, c, 0, VAE_RNG_EVAL, sv);
        m->be->download(m->be, head, vae_model_head(m), (size_t)c * m->head_out * sizeof(real));
        for (int b = 0; b < c; b++)
            memcpy(mu + (size_t)(i + b) * m->L, head + (size_t)b * m->head_out, (size_t)m->L * sizeof(real));
    }
    free(x);
    free(head);
}

static int write_grid(const char *dir, const char *name, const uint8_t *imgs, int n, int cols,
                      const vae_config *cfg) {
    char path[2048];
    int gw, gh;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    uint8_t *grid = vae_tile_images(imgs, n, cfg->input.c, cfg->input.h, cfg->input.w, cols, 2, &gw, &gh);
    if (!grid) return vae_error_prefix(VAE_ENOMEM, "%s", path);
    int rc = vae_png_write(path, grid, gw, gh, cfg->input.c);
    free(grid);
    return rc;
}

/* "name" appended to the comma-separated list in wrote[len] */
static void note_wrote(char *wrote, size_t len, const char *name) {
    if (!wrote || !len) return;
    const size_t k = strlen(wrote);
    snprintf(wrote + k, len - k, "%s%s", k ? ", " : "", name);
}

int vae_write_grids(vae_model *m, const vae_dataset *test, const char *dir, uint64_t seed, int ia,
                    int ib, char *wrote, size_t len) {
    if (wrote && len) wrote[0] = 0;
    const int L = m->L, D = m->D;
    const int n_prior = 64, n_rec = 32, steps = 10, n_interp = 12;
    const vae_config *cfg = m->cfg;
    /* interpolation.png needs test images ia and ib (a test set of one
     * image has no pair: that grid is left out) */
    const int interp = test && ia >= 0 && ib >= 0 && ia < test->n && ib < test->n;
    int n_max = steps * steps > 2 * n_rec ? steps * steps : 2 * n_rec;
    uint8_t *px = vae_malloc((size_t)n_max * D, 1);
    real *zs = vae_malloc((size_t)n_max * L, sizeof(real));
    real *mu = vae_malloc((size_t)n_rec * L, sizeof(real));
    uint8_t *tmp = vae_malloc((size_t)n_max * D, 1);
    uint8_t *dev_px = m->be->alloc(m->be, (size_t)m->B * D);
    int rc = VAE_OK;
    if (!px || !zs || !mu || !tmp || !dev_px) {
        rc = vae_error_prefix(VAE_ENOMEM, "sample grids");
        goto done;
    }

    if (cfg->type == VAE_MODEL_VAE) {
        /* prior samples: the first 64 of the prior stream (as --prior) */
        for (size_t i = 0; i < (size_t)n_prior * L; i++) zs[i] = vae_normal_at(seed, VAE_RNG_PRIOR, 0, i);
        decode_host_latents(m, zs, n_prior, dev_px, px);
        if ((rc = write_grid(dir, "samples.png", px, n_prior, 8, cfg))) goto done;
        note_wrote(wrote, len, "samples.png");

        /* traversal of latent dims 0 and 1 over [-3, 3], the others 0 */
        memset(zs, 0, (size_t)steps * steps * L * sizeof(real));
        for (int r = 0; r < steps; r++)
            for (int c = 0; c < steps; c++) {
                real *z = zs + (size_t)(r * steps + c) * L;
                z[0] = (real)(-3.0 + 6.0 * c / (steps - 1));
                if (L > 1) z[1] = (real)(-3.0 + 6.0 * r / (steps - 1));
            }
        decode_host_latents(m, zs, steps * steps, dev_px, px);
        if ((rc = write_grid(dir, "traversal.png", px, steps * steps, steps, cfg))) goto done;
        note_wrote(wrote, len, "traversal.png");
    }

    if (!test) goto done; /* no data: prior grids only */

    /* test images beside their reconstructions (decoded from the mean) */
    int idx[32];
    for (int i = 0; i < n_rec; i++) idx[i] = i % test->n;
    vae_encode_means(m, test, idx, n_rec, mu);
    decode_host_latents(m, mu, n_rec, dev_px, tmp);
    for (int i = 0; i < n_rec; i++) {
        memcpy(px + (size_t)(2 * i) * D, test->images + (size_t)idx[i] * D, (size_t)D);
        memcpy(px + (size_t)(2 * i + 1) * D, tmp + (size_t)i * D, (size_t)D);
    }
    if ((rc = write_grid(dir, "reconstructions.png", px, 2 * n_rec, 8, cfg))) goto done;
    note_wrote(wrote, len, "reconstructions.png");

    /* interpolation between the means of test images ia and ib */
    if (!interp) goto done;
    int ends[2] = {ia, ib};
    vae_encode_means(m, test, ends, 2, mu);
    for (int s = 0; s < steps; s++) {
        double t = (double)s / (steps - 1);
        for (int l = 0; l < L; l++)
            zs[(size_t)s * L + l] = (real)((1 - t) * mu[l] + t * mu[L + l]);
    }
    decode_host_latents(m, zs, steps, dev_px, tmp);
    memcpy(px, test->images + (size_t)ia * D, (size_t)D);
    memcpy(px + (size_t)D, tmp, (size_t)steps * D);
    memcpy(px + (size_t)(steps + 1) * D, test->images + (size_t)ib * D, (size_t)D);
    rc = write_grid(dir, "interpolation.png", px, n_interp, n_interp, cfg);
    if (!rc) note_wrote(wrote, len, "interpolation.png");

done:
    if (dev_px) m->be->release(m->be, dev_px);
    free(px), free(zs), free(mu), free(tmp);
    return rc;
}

/* test_model_grad.c — the whole model's loss gradient against central finite
 * differences, in double precision (this file links libvae_f64: the same
 * engine sources compiled with real = double).
 *
 * For every parameter tensor of several models (every layer kind, both
 * likelihoods, VAE and AE, the shipped configs), a sample of its elements is
 * perturbed by +-h and the loss mean_b(recon_b + beta kl_b) re-evaluated with
 * the same batch and the same noise eps. Also a directional derivative along
 * a random direction of all parameters at once.
 *
 * Tolerance: |g - fd| <= 1e-5 * max(|fd|, 1e-3 * max|g of that tensor|)
 * + 16 eps |L| / h. With h = 1e-5 the truncation error O(h^2) ~ 1e-10 is
 * negligible and the last term bounds the rounding error of the difference
 * quotient (eps |L| / h ~ 2e-8 for |L| ~ 100).
 *
 * Which models: small ones that together use every layer kind, both
 * likelihoods, a VAE and an AE, plus the shipped MLP configs. The shipped
 * conv configs are left to the PyTorch float64 reference
 * (tests/reference, agreement ~1e-6): with ~10^5 ReLU units per batch their
 * loss is piecewise smooth at a scale below h (measured: forward and
 * backward differences of an encoder.0 weight of cifar10_conv disagree by
 * ~sqrt(h), the signature of many kinks inside [-h, h]), so central
 * differences there test the kinks, not the gradient.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "vae_model.h"

/* sv: the step's values in backend memory (noise subsequence 3) */
static double loss_of(vae_model *m, int B, double beta, const vae_step_vals *sv) {
    vae_backend *be = m->be;
    vae_model_forward(m, B, 42, VAE_RNG_TRAIN, sv);
    real rec[16], kl[16];
    be->download(be, rec, m->recon, (size_t)B * sizeof(real));
    be->download(be, kl, m->kl, (size_t)B * sizeof(real));
    double s = 0;
    for (int b = 0; b < B; b++) s += (double)rec[b] + beta * (double)kl[b];
    return s / B;
}

static void check_model(const char *name, const char *text, int per_tensor) {
    vae_config cfg;
    vae_config_defaults(&cfg);
    if (vae_config_parse(&cfg, text, name) != VAE_OK) {
        fprintf(stderr, "%s: config error: %s\n", name, vae_error_get());
        g_test_fail++;
        return;
    }
    const int B = 3;
    const double beta = 0.7;
    vae_backend *be = vae_backend_cpu_create(1);
    vae_model m;
    if (vae_model_create(&m, &cfg, be, B) != VAE_OK) {
        fprintf(stderr, "%s: %s\n", name, vae_error_get());
        g_test_fail++;
        return;
    }
    vae_model_init_params(&m, 5);
    /* a batch with values in [0,1] including exact 0 and 1 (as pixels) */
    real *x = malloc(sizeof(real) * (size_t)B * m.D);
    test_rand_fill_real(x, (size_t)B * m.D, 0, 1, 11);
    for (int i = 0; i < B * m.D; i += 7) x[i] = (i % 2) ? 1 : 0;
    be->upload(be, m.x, x, sizeof(real) * (size_t)B * m.D);

    /* the step's values: noise subsequence 3, KL weight beta / B */
    const vae_step_vals vals =
        vae_step_vals_make(3, 0, 3, B, (real)beta * ((real)1 / (real)B), 1, 1);
    const vae_step_vals *sv = vae_model_put_vals(&m, &vals);
    vae_model_forward_backward(&m, B, 42, VAE_RNG_TRAIN, sv);
    real *g = malloc(sizeof(real) * m.n_real);
    real *p = m.p; /* CPU backend: backend memory is host memory */
    be->download(be, g, m.g, sizeof(real) * m.n_real);

    /* accumulated recon/kl must equal the per-sample sums */
    double acc[2];
    be->download(be, acc, m.acc, sizeof acc);
    double L0 = loss_of(&m, B, beta, sv);
    CHECK_CLOSE((acc[0] + beta * acc[1]) / B, L0, 1e-12, 0);

    const double h = 1e-5;
    int checked = 0, bad = 0;
    double worst = 0, worst_raw = 0;
    for (int t = 0; t < m.n_params; t++) {
        const vae_param *pp = &m.params[t];
        double gscale = 0;
        for (size_t i = 0; i < pp->count; i++) gscale = fmax(gscale, fabs((double)g[pp->offset + i]));
        int n = (int)(pp->count < (size_t)per_tensor ? pp->count : (size_t)per_tensor);
        for (int k = 0; k < n; k++) {
            size_t i = pp->offset + (pp->count <= (size_t)per_tensor ? (size_t)k
                                     : ((size_t)k * 2654435761u) % pp->count);
            real save = p[i];
            p[i] = save + (real)h;
            double lp = loss_of(&m, B, beta, sv);
            p[i] = save - (real)h;
            double lm = loss_of(&m, B, beta, sv);
            p[i] = save;
            double fd = (lp - lm) / (2 * h);
            /* rounding noise of the difference quotient: ~eps |L| / h */
            double noise = 16 * 2.2e-16 * fabs(L0) / h;
            double err = fmax(0, fabs(fd - (double)g[i]) - noise) / fmax(fabs(fd), 1e-3 * gscale + 1e-12);
            if (err > worst) worst = err;
            double raw = fabs(fd - (double)g[i]) / fmax(fabs(fd), 1e-3 * gscale + 1e-12);
            if (raw > worst_raw) worst_raw = raw;
            checked++;
            if (err > 1e-5) {
                bad++;
                if (bad < 10)
                    fprintf(stderr, "%s: %s[%zu]: analytic %.10g, finite difference %.10g\n", name,
                            pp->name, i - pp->offset, (double)g[i], fd);
            }
        }
    }
    CHECK_MSG(bad == 0, "%s: %d of %d gradient elements off by more than 1e-5 relative", name, bad, checked);

    /* directional derivative along a random direction u of all parameters */
    double *u = malloc(sizeof(double) * m.n_real);
    test_rand_fill(u, m.n_real, -1, 1, 3);
    real *save = malloc(sizeof(real) * m.n_real);
    memcpy(save, p, sizeof(real) * m.n_real);
    double gu = 0;
    for (size_t i = 0; i < m.n_real; i++) gu += (double)g[i] * u[i];
    for (size_t i = 0; i < m.n_real; i++) p[i] = save[i] + (real)(h * u[i]);
    double lp = loss_of(&m, B, beta, sv);
    for (size_t i = 0; i < m.n_real; i++) p[i] = save[i] - (real)(h * u[i]);
    double lm = loss_of(&m, B, beta, sv);
    memcpy(p, save, sizeof(real) * m.n_real);
    double fdu = (lp - lm) / (2 * h);
    CHECK_CLOSE(gu, fdu, 1e-5, 1e-9);
    printf("%-14s %8zu params, %4d elements checked, worst rel err %.2e (%.2e before allowing for "
           "rounding), directional %.10g vs %.10g\n", name, m.n_real, checked, worst, worst_raw, gu, fdu);

    free(u), free(save), free(x), free(g);
    vae_model_free(&m);
    be->destroy(be);
    vae_config_free(&cfg);
}

/* Every layer kind, small: conv (stride 1/2, pad 0/1), leaky relu, flatten,
 * reshape, convT with and without output padding, Gaussian likelihood. */
static const char *SMALL_CONV =
    "[data]\ndataset = mnist\n"
    "[model]\ninput = 2x9x8\nlatent = 3\nlikelihood = bernoulli\n"
    "[encoder]\nlayer = conv 4 k=3 stride=2 pad=1\nlayer = leaky_relu slope=0.1\n"
    "layer = conv 5 k=2 stride=1 pad=0\nlayer = relu\nlayer = flatten\nlayer = dense 7\nlayer = relu\n"
    "[decoder]\nlayer = dense 24\nlayer = relu\nlayer = reshape 6x2x2\n"
    "layer = convT 3 k=3 stride=2 pad=0 out_pad=0\nlayer = leaky_relu slope=0.2\n"
    "layer = convT 2 k=2 stride=2 pad=1 out_pad=1\nlayer = relu\nlayer = flatten\nlayer = dense 144\n"
    "layer = reshape 2x9x8\n";

static const char *SMALL_GAUSS =
    "[data]\ndataset = mnist\n"
    "[model]\ninput = 1x6x6\nlatent = 2\nlikelihood = gaussian\nsigma = 0.3\n"
    "[encoder]\nlayer = flatten\nlayer = dense 10\nlayer = relu\n"
    "[decoder]\nlayer = dense 10\nlayer = leaky_relu\nlayer = dense 36\nlayer = reshape 1x6x6\n";

static const char *SMALL_AE =
    "[data]\ndataset = mnist\n"
    "[model]\ntype = ae\ninput = 1x6x6\nlatent = 4\nlikelihood = gaussian\n"
    "[encoder]\nlayer = flatten\nlayer = dense 8\nlayer = relu\n"
    "[decoder]\nlayer = dense 8\nlayer = relu\nlayer = dense 36\n";

static char *slurp_config(const char *name) {
    const char *src = getenv("VAE_SOURCE_DIR");
    char path[1024];
    const char *dirs[] = {src ? src : ".", ".", "..", "../.."};
    for (int d = 0; d < 4; d++) {
        snprintf(path, sizeof path, "%s/configs/%s", dirs[d], name);
        FILE *f = fopen(path, "rb");
        if (!f) continue;
        static char buf[65536];
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = 0;
        return buf;
    }
    return NULL;
}

int main(void) {
    check_model("small_conv", SMALL_CONV, 1000);
    check_model("small_gauss", SMALL_GAUSS, 1000);
    check_model("small_ae", SMALL_AE, 1000);
    const char *shipped[] = {"mnist_mlp.ini", "mnist_ae.ini"};
    for (int i = 0; i < 2; i++) {
        char *text = slurp_config(shipped[i]);
        if (!text) {
            fprintf(stderr, "configs/%s not found (set VAE_SOURCE_DIR)\n", shipped[i]);
            g_test_fail++;
            continue;
        }
        check_model(shipped[i], text, 12);
    }
    return test_finish();
}

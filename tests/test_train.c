/* test_train.c — train.c's pieces that have closed forms, on the CPU backend.
 *
 *   - vae_shuffle_perm is a uniform Fisher-Yates shuffle: every epoch's
 *     order is a permutation, and over 6,000 epochs of 3 items each of the
 *     6 orders turns up about 1,000 times (binomial sd ~29; the bounds
 *     [850, 1150] are 5 sd away, and the seeds are fixed, so this cannot
 *     flake). A Sattolo shuffle (j < i, one cycle) gives only 2 orders and
 *     no fixed point; an off-by-one in j's range skews the counts.
 *   - vae_evaluate with every parameter 0: the encoder gives mu = 0 and
 *     log-variance 0, so q(z|x) = p(z) and KL = 0 and log q - log p = 0 at
 *     every z; the decoder gives logits 0 whatever z, so the Bernoulli
 *     reconstruction term is D ln 2 per image and every importance weight
 *     is the same: the IW bound (with its - log K) equals the ELBO, D ln 2.
 *     For a Gaussian likelihood the decoder's mean is 0, so the reported
 *     MSE is the mean of x^2 over the images, and the reconstruction term
 *     sum x^2 / (2 s^2) + D/2 log(2 pi s^2) per image.
 *   - an evaluation set that is not a multiple of the batch counts every
 *     image once (the short last batch included).
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "vae_backend.h"
#include "vae_data.h"
#include "vae_model.h"
#include "vae_train.h"

static void test_shuffle(void) {
    int counts[6] = {0}, fixed = 0;
    for (int64_t e = 0; e < 6000; e++) {
        int32_t p[3];
        vae_shuffle_perm(p, 3, 7, e);
        const int ok = (p[0] + p[1] + p[2] == 3) && p[0] != p[1] && p[1] != p[2] && p[0] != p[2];
        CHECK_MSG(ok, "epoch %lld: [%d %d %d] is not a permutation", (long long)e, p[0], p[1],
                  p[2]);
        if (!ok) return;
        counts[p[0] * 2 + (p[1] > p[2])]++; /* the order's index */
        fixed += (p[0] == 0) + (p[1] == 1) + (p[2] == 2);
    }
    for (int k = 0; k < 6; k++)
        CHECK_MSG(counts[k] >= 850 && counts[k] <= 1150, "order %d of 3 items: %d of 6000 epochs",
                  k, counts[k]);
    /* each item stays in place with probability 1/3: 6000 fixed points expected */
    CHECK_MSG(fixed > 5600 && fixed < 6400, "%d fixed points in 6000 shuffles of 3", fixed);

    /* a larger one: a permutation, and another epoch gives another order */
    enum { N = 1000 };
    static int32_t a[N], b[N];
    static char seen[N];
    vae_shuffle_perm(a, N, 7, 3);
    vae_shuffle_perm(b, N, 7, 4);
    int dup = 0, same = 0;
    for (int i = 0; i < N; i++) {
        if (a[i] < 0 || a[i] >= N || seen[a[i]]++) dup++;
        same += a[i] == b[i];
    }
    CHECK_MSG(dup == 0, "the shuffle of %d is not a permutation (%d repeats)", N, dup);
    CHECK_MSG(same < 20, "epochs 3 and 4 agree at %d of %d places", same, N);
}

/* %s: the likelihood's lines of [model] */
static const char *CFG_FMT =
    "[data]\ndataset = mnist\n"
    "[model]\ninput = 1x4x5\nlatent = 3\n%s"
    "[encoder]\nlayer = flatten\nlayer = dense 6\nlayer = relu\n"
    "[decoder]\nlayer = dense 7\nlayer = relu\nlayer = dense 20\nlayer = reshape 1x4x5\n";

/* vae_evaluate with all parameters zero on n random images (batch B). */
static void test_eval_zero(const char *lik, int n, int B) {
    char text[600];
    snprintf(text, sizeof text, CFG_FMT, lik);
    vae_config cfg;
    vae_config_defaults(&cfg);
    if (vae_config_parse(&cfg, text, "zero.ini") != VAE_OK) {
        CHECK_MSG(0, "config: %s", vae_error_get());
        return;
    }
    vae_backend *be = vae_backend_cpu_create(1);
    vae_model m;
    CHECK(be && vae_model_create(&m, &cfg, be, B) == VAE_OK);
    be->zero(be, m.p, m.n_real * sizeof(real));
    const int D = 20;
    vae_dataset ds = {0};
    ds.n = n, ds.c = 1, ds.h = 4, ds.w = 5;
    ds.images = malloc((size_t)n * D);
    double sum_x2 = 0;
    for (int i = 0; i < n * D; i++) {
        ds.images[i] = (uint8_t)((i * 37 + 11) % 256);
        const double x = ds.images[i] / 255.0;
        sum_x2 += x * x;
    }
    vae_dev_data dd;
    CHECK(vae_dev_data_upload(&dd, be, &ds) == VAE_OK);
    vae_eval_result r;
    const int gauss = cfg.likelihood == VAE_LIK_GAUSSIAN;
    CHECK(vae_evaluate(&m, &dd, 5, 8, &r) == VAE_OK);
    const double s2 = (double)cfg.sigma * cfg.sigma;
    const double want =
        gauss ? sum_x2 / n / (2 * s2) + 0.5 * D * log(2 * M_PI * s2) : D * log(2.0);
    CHECK_MSG(r.n == n && fabs(r.kl) < 1e-12, "%s n=%d B=%d: %d images, KL %g", lik, n, B, r.n, r.kl);
    CHECK_MSG(fabs(r.nelbo - want) <= 1e-5 * want, "%s n=%d B=%d: nelbo %.9g, want %.9g", lik, n, B,
              r.nelbo, want);
    CHECK_MSG(fabs(r.iw_nll - r.nelbo) <= 1e-6 * want,
              "%s n=%d B=%d: IW bound (K = 8) %.9g, the ELBO %.9g (equal weights)", lik, n, B,
              r.iw_nll, r.nelbo);
    if (gauss)
        CHECK_MSG(fabs(r.mse - sum_x2 / ((double)n * D)) <= 1e-5 * r.mse,
                  "%s: mse %.9g, the mean of x^2 %.9g", lik, r.mse, sum_x2 / ((double)n * D));
    else
        CHECK(isnan(r.mse));
    vae_dev_data_free(&dd, be);
    free(ds.images);
    vae_model_free(&m);
    be->destroy(be);
    vae_config_free(&cfg);
}

int main(void) {
    test_shuffle();
    test_eval_zero("likelihood = bernoulli\n", 10, 4); /* batches of 4, 4, 2 */
    test_eval_zero("likelihood = bernoulli\n", 1, 4);
    test_eval_zero("likelihood = gaussian\nsigma = 0.1\n", 9, 4);
    return test_finish();
}

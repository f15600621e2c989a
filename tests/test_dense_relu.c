/* test_dense_relu.c — the fused dense + ReLU ops of the CPU backend
 * (dense_relu_forward, dense_backward_relu) against the unfused sequence
 * they replace, bit for bit, and the model that issues them against the
 * same model run unfused.
 *
 * Ops: on odd shapes (batch 1, widths 1, 33, 129) with negative and exactly
 * zero pre-activations (a weight row and its bias set to zero gives an
 * output of exactly 0 in every sample; a zero input row gives the bias):
 *   dense_relu_forward            == dense_forward; act_forward(relu) in place
 *   dense_backward_relu din, dw, db == dense_backward; act_backward(relu, out = in)
 *   dense_backward_relu dbin      == the lower layer's dense_backward db
 *   lower dense_backward with db = NULL: din and dw unchanged, db untouched
 * with sentinels around every output, and with and without a mask argument
 * (the CPU backend ignores it).
 *
 * Model: vae_model_forward_backward with the fused ops against the same
 * model on a CPU backend table without them (the model then issues the
 * unfused ops): every activation, the loss parts and every gradient equal
 * bit for bit — on configs where pairs sit below a dense layer (fused
 * backward, also through a flatten/reshape view), below a reshape -> convT
 * (fused forward only), and next to leaky_relu (never fused). Also with a
 * backend that asks for masks (the model then allocates and passes them),
 * and the evaluation forward and vae_model_decode (fp32 and rounded).
 */
#include <stdint.h>

#include "testutil.h"
#include "vae_backend.h"
#include "vae_config.h"
#include "vae_math.h"
#include "vae_model.h"

static vae_backend *g_be;
static unsigned g_seed = 11;

/* ------------------------------------------------------------ helpers */

/* guarded buffers (testutil.h), a fresh seed for each random one */
static test_gbuf gb_rand(size_t n, double lo, double hi) {
    return test_gb_rand(n, lo, hi, g_seed++);
}

/* ----------------------------------------------------------------- ops */

/* Lower layer: in[B,I] -> dense (w[O,I], b[O]) -> relu -> h[B,O];
 * upper layer: h -> dense (w2[O2,O]) with output gradient dout[B,O2]. */
static void test_ops(int B, int I, int O, int O2, int with_mask) {
    char what[128];
    snprintf(what, sizeof what, "B=%d I=%d O=%d O2=%d%s", B, I, O, O2, with_mask ? " mask" : "");
    test_gbuf in = gb_rand((size_t)B * I, -1, 1), w = gb_rand((size_t)O * I, -1, 1);
    test_gbuf b = gb_rand((size_t)O, -1, 1), w2 = gb_rand((size_t)O2 * O, -1, 1);
    test_gbuf dout = gb_rand((size_t)B * O2, -1, 1);
    /* exact zero pre-activations: output 0 has a zero weight row and bias
     * (when O > 1: otherwise the only output stays random); a zero input row
     * makes every output of sample 0 its bias, which is negative for some */
    if (O > 1) {
        memset(w.p, 0, (size_t)I * sizeof(real));
        b.p[0] = 0;
    }
    if (B > 1) memset(in.p, 0, (size_t)I * sizeof(real));
    /* a mask buffer the CPU must ignore (left as it is) */
    unsigned char maskbuf[64];
    memset(maskbuf, 0x5a, sizeof maskbuf);
    void *mask = with_mask ? maskbuf : NULL;

    /* forward */
    test_gbuf h_u = test_gb_new((size_t)B * O), h_f = test_gb_new((size_t)B * O);
    g_be->dense_forward(g_be, h_u.p, in.p, w.p, b.p, B, I, O);
    size_t neg = 0, zero = 0;
    for (size_t i = 0; i < h_u.n; i++) neg += h_u.p[i] < 0, zero += h_u.p[i] == 0;
    g_be->act_forward(g_be, h_u.p, h_u.p, (size_t)B * O, VAE_ACT_RELU, 0);
    g_be->dense_relu_forward(g_be, h_f.p, mask, in.p, w.p, b.p, B, I, O);
    CHECK_MSG(test_gb_same(&h_u, &h_f), "%s: dense_relu_forward differs from dense + relu", what);
    if (B * O >= 8)
        CHECK_MSG(neg > 0 && (O == 1 || zero >= (size_t)B), "%s: %zu negative, %zu zero "
                  "pre-activations: the case does not test the ReLU", what, neg, zero);

    /* backward, unfused: upper dense, relu in place, lower dense */
    test_gbuf din_u = test_gb_new((size_t)B * O), dw2_u = test_gb_new((size_t)O2 * O), db2_u = test_gb_new((size_t)O2);
    test_gbuf dx_u = test_gb_new((size_t)B * I), dw_u = test_gb_new((size_t)O * I), db_u = test_gb_new((size_t)O);
    g_be->dense_backward(g_be, din_u.p, dw2_u.p, db2_u.p, dout.p, h_u.p, w2.p, B, O, O2);
    g_be->act_backward(g_be, din_u.p, din_u.p, h_u.p, (size_t)B * O, VAE_ACT_RELU, 0);
    g_be->dense_backward(g_be, dx_u.p, dw_u.p, db_u.p, din_u.p, in.p, w.p, B, I, O);

    /* fused: upper dense_backward_relu, lower dense with db = NULL */
    test_gbuf din_f = test_gb_new((size_t)B * O), dw2_f = test_gb_new((size_t)O2 * O), db2_f = test_gb_new((size_t)O2);
    test_gbuf dbin_f = test_gb_new((size_t)O);
    test_gbuf dx_f = test_gb_new((size_t)B * I), dw_f = test_gb_new((size_t)O * I), db_f = test_gb_new((size_t)O);
    test_gbuf db_f0 = test_gb_copy(&db_f); /* all sentinel */
    g_be->dense_backward_relu(g_be, din_f.p, dbin_f.p, dw2_f.p, db2_f.p, dout.p, h_f.p, mask,
                              w2.p, B, O, O2);
    g_be->dense_backward(g_be, dx_f.p, dw_f.p, NULL, din_f.p, in.p, w.p, B, I, O);
    CHECK_MSG(test_gb_same(&din_u, &din_f), "%s: din differs", what);
    CHECK_MSG(test_gb_same(&dw2_u, &dw2_f), "%s: dw differs", what);
    CHECK_MSG(test_gb_same(&db2_u, &db2_f), "%s: db differs", what);
    CHECK_MSG(test_gb_same(&db_u, &dbin_f), "%s: dbin differs from the lower layer's db", what);
    CHECK_MSG(test_gb_same(&dx_u, &dx_f), "%s: lower din differs", what);
    CHECK_MSG(test_gb_same(&dw_u, &dw_f), "%s: lower dw differs", what);
    CHECK_MSG(test_gb_same(&db_f, &db_f0), "%s: dense_backward wrote db = NULL", what);

    /* without dw, db and dbin (allowed): din the same */
    test_gbuf din_g = test_gb_new((size_t)B * O);
    g_be->dense_backward_relu(g_be, din_g.p, NULL, NULL, NULL, dout.p, h_f.p, mask, w2.p, B, O,
                              O2);
    CHECK_MSG(test_gb_same(&din_u, &din_g), "%s: din without dw/db/dbin differs", what);

    int mask_kept = 1;
    for (size_t i = 0; i < sizeof maskbuf; i++) mask_kept &= maskbuf[i] == 0x5a;
    CHECK_MSG(mask_kept, "%s: the CPU backend wrote the mask", what);
    if (getenv("VAE_TEST_VERBOSE"))
        printf("  ops %-32s %zu negative, %zu zero pre-activations\n", what, neg, zero);

    test_gbuf all[] = {in, w, b, w2, dout, h_u, h_f, din_u, dw2_u, db2_u, dx_u, dw_u, db_u,
                  din_f, dw2_f, db2_f, dbin_f, dx_f, dw_f, db_f, db_f0, din_g};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) test_gb_free(&all[i]);
}

/* --------------------------------------------------------------- model */

/* The CPU backend's table without the fused ops (the model runs unfused),
 * or with a mask hook (the model allocates masks and passes them). */
static vae_backend g_unfused, g_masked;
static size_t mask_hook(vae_backend *be, int B, int O) {
    (void)be;
    return vae_relu_mask_bytes(B, O);
}

typedef struct {
    vae_model m;
    vae_config cfg;
} run;

static int run_make(run *r, const char *name, const char *text, vae_backend *be, int B) {
    vae_config_defaults(&r->cfg);
    if (vae_config_parse(&r->cfg, text, name) != VAE_OK) {
        fprintf(stderr, "%s: config error: %s\n", name, vae_error_get());
        g_test_fail++;
        return 0;
    }
    if (vae_model_create(&r->m, &r->cfg, be, B) != VAE_OK) {
        fprintf(stderr, "%s: %s\n", name, vae_error_get());
        g_test_fail++;
        vae_config_free(&r->cfg);
        return 0;
    }
    vae_model_init_params(&r->m, 3);
    return 1;
}

static void run_free(run *r) {
    vae_model_free(&r->m);
    vae_config_free(&r->cfg);
}

static int same(const void *a, const void *b, size_t n) { return memcmp(a, b, n) == 0; }

/* Every layer output of both models equal (CPU: backend memory is host memory). */
static int acts_same(const vae_model *a, const vae_model *b, int B) {
    int ok = a->n_enc == b->n_enc && a->n_dec == b->n_dec;
    for (int i = 0; ok && i < a->n_enc; i++)
        ok = same(a->enc[i].out, b->enc[i].out,
                  (size_t)B * vae_shape_count(a->enc[i].spec.out_shape) * sizeof(real));
    for (int i = 0; ok && i < a->n_dec; i++)
        ok = same(a->dec[i].out, b->dec[i].out,
                  (size_t)B * vae_shape_count(a->dec[i].spec.out_shape) * sizeof(real));
    return ok;
}

/* Counts of fused pairs, to check the plan the model made. */
static void count_fused(const vae_model *m, int *fwd, int *bwd, int *masks) {
    *fwd = *bwd = *masks = 0;
    const vae_layer *ls[2] = {m->enc, m->dec};
    const int ns[2] = {m->n_enc, m->n_dec};
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < ns[k]; i++) {
            const vae_layer *l = &ls[k][i];
            if (l->spec.kind != VAE_LAYER_DENSE) continue;
            *fwd += l->relu_fused;
            *bwd += l->relu_bwd_fused;
            *masks += l->mask != NULL;
        }
}

static void test_model(const char *name, const char *text, int want_fwd, int want_bwd) {
    const int B = 5;
    run u, f, k;
    if (!run_make(&u, name, text, &g_unfused, B)) return;
    if (!run_make(&f, name, text, g_be, B)) {
        run_free(&u);
        return;
    }
    if (!run_make(&k, name, text, &g_masked, B)) {
        run_free(&u), run_free(&f);
        return;
    }
    int nf, nb, nm;
    count_fused(&u.m, &nf, &nb, &nm);
    CHECK_MSG(nf == 0 && nb == 0 && nm == 0, "%s: fused without the ops", name);
    count_fused(&f.m, &nf, &nb, &nm);
    CHECK_MSG(nf == want_fwd && nb == want_bwd && nm == 0,
              "%s: %d forward-fused, %d backward-fused pairs, %d masks; expected %d, %d, 0",
              name, nf, nb, nm, want_fwd, want_bwd);
    count_fused(&k.m, &nf, &nb, &nm);
    CHECK_MSG(nm == want_bwd, "%s: %d masks with the mask hook, expected %d", name, nm, want_bwd);

    run *rs[3] = {&u, &f, &k};
    const size_t D = (size_t)u.m.D;
    real *x = test_xmalloc((size_t)B * D * sizeof(real));
    test_rand_fill_real(x, (size_t)B * D, 0, 1, 17);
    for (size_t i = 0; i < (size_t)B * D; i += 5) x[i] = (i % 2) ? 1 : 0;
    const vae_step_vals vals = vae_step_vals_make(2, 0, 2, B, (real)1 / (real)B, 0.1f, 0.001f);
    for (int r = 0; r < 3; r++) {
        vae_model *m = &rs[r]->m;
        m->be->upload(m->be, m->x, x, (size_t)B * D * sizeof(real));
        m->be->zero(m->be, m->acc, VAE_ACC_N * sizeof(double));
        const vae_step_vals *sv = vae_model_put_vals(m, &vals);
        vae_model_forward_backward(m, B, 9, VAE_RNG_TRAIN, sv);
    }
    for (int r = 1; r < 3; r++) {
        const vae_model *a = &rs[r]->m, *b = &u.m;
        const char *how = r == 1 ? "fused" : "fused with masks";
        CHECK_MSG(acts_same(a, b, B), "%s: %s activations differ from unfused", name, how);
        CHECK_MSG(same(a->g, b->g, b->n_real * sizeof(real)), "%s: %s gradients differ", name,
                  how);
        CHECK_MSG(same(a->recon, b->recon, (size_t)B * sizeof(real)) &&
                      same(a->kl, b->kl, (size_t)B * sizeof(real)) &&
                      same(a->acc, b->acc, 2 * sizeof(double)),
                  "%s: %s losses differ", name, how);
    }
    /* evaluation forward and decoding (fp32, then rounded to bf16) */
    for (int r = 0; r < 3; r++) {
        vae_model *m = &rs[r]->m;
        const vae_step_vals *sv = vae_model_put_vals(m, &vals);
        vae_model_forward(m, B, 4, VAE_RNG_TRAIN, sv);
    }
    for (int r = 1; r < 3; r++)
        CHECK_MSG(acts_same(&rs[r]->m, &u.m, B) &&
                      same(rs[r]->m.recon, u.m.recon, (size_t)B * sizeof(real)),
                  "%s: evaluation forward differs", name);
    real *zs = test_xmalloc((size_t)B * u.m.L * sizeof(real));
    test_rand_fill_real(zs, (size_t)B * u.m.L, -2, 2, 23);
    for (int bits = 0; bits <= 7; bits += 7) {
        const real *out[3];
        for (int r = 0; r < 3; r++) {
            vae_model *m = &rs[r]->m;
            real *z = (real *)m->be->alloc(m->be, (size_t)B * m->L * sizeof(real));
            m->be->upload(m->be, z, zs, (size_t)B * m->L * sizeof(real));
            m->round_bits = bits;
            out[r] = vae_model_decode(m, z, B - 1);
            m->round_bits = 0;
            m->be->release(m->be, z);
        }
        for (int r = 1; r < 3; r++)
            CHECK_MSG(same(out[r], out[0], (size_t)(B - 1) * D * sizeof(real)),
                      "%s: decode (round_bits %d) differs", name, bits);
    }
    printf("%-16s %d dense+relu pairs fused, %d of them also in the backward: bit-identical\n",
           name, want_fwd, want_bwd);
    free(zs);
    free(x);
    run_free(&k), run_free(&f), run_free(&u);
}

/* The shipped MLP layout in small: encoder pair below the head, decoder pair
 * below the output dense (both backward-fused). */
static const char *MLP =
    "[data]\ndataset = mnist\n[model]\ninput = 1x6x6\nlatent = 3\n"
    "[encoder]\nlayer = flatten\nlayer = dense 33\nlayer = relu\n"
    "[decoder]\nlayer = dense 33\nlayer = relu\nlayer = dense 36\nlayer = reshape 1x6x6\n";

/* mnist_conv.ini's layout in small: pairs below the head, below a dense
 * (backward-fused) and below a reshape -> convT (forward only); conv + relu
 * stays unfused. */
static const char *CONV =
    "[data]\ndataset = mnist\n[model]\ninput = 1x8x8\nlatent = 4\n"
    "[encoder]\nlayer = conv 4 k=3 stride=2 pad=1\nlayer = relu\nlayer = flatten\n"
    "layer = dense 17\nlayer = relu\n"
    "[decoder]\nlayer = dense 17\nlayer = relu\nlayer = dense 64\nlayer = relu\n"
    "layer = reshape 4x4x4\nlayer = convT 1 k=3 stride=2 pad=1 out_pad=1\n";

/* Views between a pair and the dense above (reshape then flatten), a pair
 * right after another pair, leaky_relu (never fused), a dense without a relu,
 * an AE with a Gaussian likelihood. */
static const char *MIXED =
    "[data]\ndataset = mnist\n[model]\ntype = ae\ninput = 1x5x5\nlatent = 2\n"
    "likelihood = gaussian\n"
    "[encoder]\nlayer = flatten\nlayer = dense 12\nlayer = relu\nlayer = reshape 3x2x2\n"
    "layer = flatten\nlayer = dense 129\nlayer = relu\nlayer = dense 7\nlayer = leaky_relu\n"
    "[decoder]\nlayer = dense 1\nlayer = relu\nlayer = dense 9\nlayer = dense 25\n"
    "layer = relu\nlayer = reshape 1x5x5\n";

int main(void) {
    g_be = vae_backend_cpu_create(1);
    if (!g_be) {
        fprintf(stderr, "cpu backend: %s\n", vae_error_get());
        return 1;
    }
    CHECK(g_be->dense_relu_forward && g_be->dense_backward_relu);
    CHECK(g_be->relu_mask_bytes == NULL); /* the CPU keeps no mask */
    CHECK(vae_relu_mask_bytes(1, 1) == 16 && vae_relu_mask_bytes(3, 128) == 48 &&
          vae_relu_mask_bytes(3, 129) == 96 && vae_relu_mask_bytes(0, 5) == 0);

    /* B, I, O, O2 */
    static const int shapes[][4] = {{1, 1, 1, 1},   {1, 33, 129, 1}, {33, 129, 1, 33},
                                    {129, 1, 33, 129}, {5, 33, 129, 17}, {2, 129, 33, 1},
                                    {64, 300, 128, 40}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        for (int mk = 0; mk < 2; mk++)
            test_ops(shapes[i][0], shapes[i][1], shapes[i][2], shapes[i][3], mk);

    g_unfused = *g_be;
    g_unfused.dense_relu_forward = NULL;
    g_unfused.dense_backward_relu = NULL;
    g_masked = *g_be;
    g_masked.relu_mask_bytes = mask_hook;
    test_model("mlp", MLP, 2, 2);
    test_model("conv", CONV, 3, 2);
    /* pairs: enc dense 12 (bwd through reshape+flatten), enc dense 129 (bwd),
     * dec dense 1 (bwd), dec dense 25 (last layer below a reshape: fwd only) */
    test_model("mixed", MIXED, 4, 3);

    g_be->destroy(g_be);
    return test_finish();
}

/* test_config.c — the INI config parser: the shipped configs parse to the
 * expected shapes, and every class of broken input is rejected with a message
 * that names the file, the line and what was expected. */
#include <stdarg.h>
#include <unistd.h>

#include "testutil.h"
#include "vae_config.h"

/* ------------------------------------------------------------ helpers */

/* A small valid config; the broken-input tests replace one line of it, so the
 * line numbers below are the ones the messages must name. */
static const char *const BASE[] = {
    /*  1 */ "[data]",
    /*  2 */ "dataset = mnist",
    /*  3 */ "",
    /*  4 */ "[model]",
    /*  5 */ "input = 1x28x28",
    /*  6 */ "latent = 8",
    /*  7 */ "",
    /*  8 */ "[encoder]",
    /*  9 */ "layer = flatten",
    /* 10 */ "layer = dense 16",
    /* 11 */ "layer = relu",
    /* 12 */ "",
    /* 13 */ "[decoder]",
    /* 14 */ "layer = dense 784",
    /* 15 */ "layer = reshape 1x28x28",
    /* 16 */ "",
    /* 17 */ "[train]",
    /* 18 */ "epochs = 2",
    /* 19 */ "",
    /* 20 */ "[optim]",
    /* 21 */ "lr = 1e-3",
};
#define BASE_LINES ((int)(sizeof BASE / sizeof BASE[0]))

/* BASE with up to three lines replaced: edit(buf, line, text, line, text, ..., 0). */
static const char *edit(char *buf, size_t cap, ...) {
    const char *repl[BASE_LINES + 1] = {0};
    va_list ap;
    va_start(ap, cap);
    for (;;) {
        int line = va_arg(ap, int);
        if (line <= 0) break;
        const char *t = va_arg(ap, const char *);
        if (line <= BASE_LINES) repl[line] = t;
    }
    va_end(ap);
    size_t o = 0;
    buf[0] = 0;
    for (int i = 1; i <= BASE_LINES && o < cap; i++)
        o += (size_t)snprintf(buf + o, cap - o, "%s\n", repl[i] ? repl[i] : BASE[i - 1]);
    return buf;
}

/* Write `text` to <tmp>/<fname> and load it. */
static int load_text(vae_config *cfg, const char *fname, const char *text) {
    const char *path = test_write_file(fname, text, strlen(text));
    return vae_config_load(cfg, path);
}

/* rc is an error and the message contains every non-NULL needle. */
static void expect_msg(int line, int rc, const char *n1, const char *n2, const char *n3,
                       const char *n4) {
    const char *m = vae_error_get();
    const char *n[4] = {n1, n2, n3, n4};
    CHECK_MSG(rc != 0, "test line %d: expected an error, got success", line);
    for (int i = 0; i < 4; i++)
        if (n[i]) CHECK_MSG(rc != 0 && strstr(m, n[i]), "test line %d: message \"%s\" lacks \"%s\"",
                            line, rc ? m : "", n[i]);
}

/* Load BASE edited as given under <fname>; expect the message to hold the
 * file name, ":<errline>:" (0: no line) and the needles. */
static void bad(int test_line, const char *fname, int errline, const char *text, const char *n1,
                const char *n2, const char *n3) {
    vae_config cfg;
    vae_config_defaults(&cfg);
    int rc = load_text(&cfg, fname, text);
    char at[32];
    snprintf(at, sizeof at, ":%d: ", errline);
    expect_msg(test_line, rc, fname, errline ? at : NULL, n1, n2);
    if (n3) expect_msg(test_line, rc, n3, NULL, NULL, NULL);
    if (rc && !errline) {
        /* "<path>: <what>" — no line number */
        char pre[64];
        snprintf(pre, sizeof pre, "%s: ", fname);
        CHECK_MSG(strstr(vae_error_get(), pre) != NULL, "test line %d: \"%s\" lacks \"%s\"",
                  test_line, vae_error_get(), pre);
    }
    if (rc && errline) /* line-numbered messages also say what was expected */
        CHECK_MSG(strstr(vae_error_get(), "; expected ") != NULL, "test line %d: \"%s\" lacks '; expected '",
                  test_line, vae_error_get());
    /* nothing half-parsed survives */
    CHECK(cfg.text == NULL);
    CHECK(cfg.n_enc == 0 && cfg.n_dec == 0);
    vae_config_free(&cfg);
}
#define BAD(fname, errline, text, n1, n2, n3) bad(__LINE__, fname, errline, text, n1, n2, n3)

static int shape_eq(vae_shape s, int c, int h, int w) { return s.c == c && s.h == h && s.w == w; }

/* Locate configs/<name> under $VAE_SOURCE_DIR, ., .. or ../.. */
static const char *config_path(const char *name) {
    static char buf[1100];
    const char *env = getenv("VAE_SOURCE_DIR");
    const char *roots[] = {env && *env ? env : NULL, ".", "..", "../.."};
    for (int i = 0; i < 4; i++) {
        if (!roots[i]) continue;
        snprintf(buf, sizeof buf, "%s/configs/%s", roots[i], name);
        if (access(buf, R_OK) == 0) return buf;
    }
    return NULL;
}

/* in_shape of each layer is the out_shape of the one before it. */
static void check_chain(const vae_layer_spec *L, int n, vae_shape first) {
    vae_shape s = first;
    for (int i = 0; i < n; i++) {
        CHECK_MSG(shape_eq(L[i].in_shape, s.c, s.h, s.w), "layer %d in_shape", i);
        s = L[i].out_shape;
    }
}

/* ------------------------------------------------------------ shipped configs */

static int load_shipped(vae_config *cfg, const char *name) {
    const char *p = config_path(name);
    CHECK_MSG(p != NULL, "configs/%s not found (set VAE_SOURCE_DIR)", name);
    if (!p) return -1;
    int rc = vae_config_load(cfg, p);
    CHECK_MSG(rc == 0, "%s: %s", p, vae_error_get());
    if (rc) return rc;
    CHECK(cfg->text != NULL && strstr(cfg->text, "[encoder]") != NULL);
    CHECK(strcmp(cfg->path, p) == 0);
    check_chain(cfg->enc, cfg->n_enc, cfg->input);
    vae_shape z = {cfg->latent, 1, 1};
    check_chain(cfg->dec, cfg->n_dec, z);
    CHECK(vae_config_validate(cfg) == VAE_OK);
    return 0;
}

static void test_mnist_mlp(void) {
    vae_config c;
    vae_config_defaults(&c);
    if (load_shipped(&c, "mnist_mlp.ini")) return;
    CHECK(c.dataset == VAE_DATA_MNIST);
    CHECK(c.type == VAE_MODEL_VAE);
    CHECK(c.likelihood == VAE_LIK_BERNOULLI);
    CHECK(shape_eq(c.input, 1, 28, 28));
    CHECK(c.latent == 20);
    CHECK(c.n_enc == 3 && c.n_dec == 4);
    CHECK(c.enc[0].kind == VAE_LAYER_FLATTEN && shape_eq(c.enc[0].out_shape, 784, 1, 1));
    CHECK(c.enc[1].kind == VAE_LAYER_DENSE && c.enc[1].out == 400);
    CHECK(shape_eq(c.enc[2].out_shape, 400, 1, 1));
    CHECK(shape_eq(c.dec[0].in_shape, 20, 1, 1));
    CHECK(shape_eq(c.dec[2].out_shape, 784, 1, 1));
    CHECK(c.dec[3].kind == VAE_LAYER_RESHAPE && shape_eq(c.dec[3].out_shape, 1, 28, 28));
    CHECK(c.epochs == 10 && c.batch == 128);
    CHECK_CLOSE(c.lr, 1e-3, 1e-6, 0);
    CHECK(c.enc[1].line > 0 && c.enc[1].line > c.enc[0].line);
    vae_config_free(&c);
    CHECK(c.text == NULL);
}

static void test_mnist_conv(void) {
    vae_config c;
    vae_config_defaults(&c);
    if (load_shipped(&c, "mnist_conv.ini")) return;
    CHECK(c.latent == 20 && c.likelihood == VAE_LIK_BERNOULLI);
    CHECK(c.n_enc == 7 && c.n_dec == 8);
    CHECK(c.enc[0].kind == VAE_LAYER_CONV && c.enc[0].out == 32 && c.enc[0].k == 3 &&
          c.enc[0].stride == 2 && c.enc[0].pad == 1);
    CHECK(shape_eq(c.enc[0].out_shape, 32, 14, 14));
    CHECK(shape_eq(c.enc[2].out_shape, 64, 7, 7));
    CHECK(shape_eq(c.enc[4].out_shape, 3136, 1, 1));
    CHECK(shape_eq(c.enc[6].out_shape, 128, 1, 1)); /* encoder output 128 */
    CHECK(shape_eq(c.dec[3].out_shape, 3136, 1, 1));
    CHECK(shape_eq(c.dec[4].out_shape, 64, 7, 7));
    CHECK(c.dec[5].kind == VAE_LAYER_CONVT && c.dec[5].out_pad == 1);
    CHECK(shape_eq(c.dec[5].out_shape, 32, 14, 14));
    CHECK(shape_eq(c.dec[7].out_shape, 1, 28, 28)); /* decoder output 1x28x28 */
    vae_config_free(&c);
}

static void test_cifar10_conv(void) {
    vae_config c;
    vae_config_defaults(&c);
    if (load_shipped(&c, "cifar10_conv.ini")) return;
    CHECK(c.dataset == VAE_DATA_CIFAR10);
    CHECK(shape_eq(c.input, 3, 32, 32));
    CHECK(c.latent == 64);
    CHECK(c.n_enc == 9 && c.n_dec == 10);
    CHECK(shape_eq(c.enc[0].out_shape, 32, 16, 16));
    CHECK(shape_eq(c.enc[2].out_shape, 64, 8, 8));
    CHECK(shape_eq(c.enc[4].out_shape, 128, 4, 4));
    CHECK(shape_eq(c.enc[6].out_shape, 2048, 1, 1));
    CHECK(shape_eq(c.enc[8].out_shape, 256, 1, 1));
    CHECK(shape_eq(c.dec[4].out_shape, 128, 4, 4));
    CHECK(shape_eq(c.dec[5].out_shape, 64, 8, 8) && c.dec[5].out_pad == 0);
    CHECK(shape_eq(c.dec[7].out_shape, 32, 16, 16));
    CHECK(shape_eq(c.dec[9].out_shape, 3, 32, 32));
    CHECK(c.epochs == 30 && c.batch == 128);
    vae_config_free(&c);
}

static void test_mnist_ae(void) {
    vae_config c;
    vae_config_defaults(&c);
    if (load_shipped(&c, "mnist_ae.ini")) return;
    CHECK(c.type == VAE_MODEL_AE);
    CHECK(c.likelihood == VAE_LIK_GAUSSIAN);
    CHECK_CLOSE(c.sigma, 1.0, 0, 0);
    CHECK(c.latent == 128);
    CHECK(c.n_enc == 3 && c.n_dec == 4);
    CHECK(shape_eq(c.enc[2].out_shape, 256, 1, 1));
    CHECK(shape_eq(c.dec[0].in_shape, 128, 1, 1) && shape_eq(c.dec[0].out_shape, 256, 1, 1));
    CHECK(shape_eq(c.dec[3].out_shape, 1, 28, 28));
    CHECK(c.epochs == 10 && c.batch == 128);
    vae_config_free(&c);
}

/* ------------------------------------------------------------ valid inputs */

static void test_defaults_and_syntax(void) {
    char buf[4096];
    vae_config c;

    vae_config_defaults(&c);
    CHECK(c.type == VAE_MODEL_VAE && c.likelihood == VAE_LIK_BERNOULLI);
    CHECK(c.epochs == 10 && c.batch == 128 && c.seed == 1 && c.threads == 0);
    CHECK(c.kl_warmup_steps == 0 && c.device == VAE_DEVICE_AUTO);
    CHECK(c.checkpoint_every == 1 && c.keep == 3 && c.decoupled_weight_decay == 0);
    CHECK_CLOSE(c.sigma, 1, 0, 0);
    CHECK_CLOSE(c.beta, 1, 0, 0);
    CHECK_CLOSE(c.lr, 1e-3, 1e-6, 0);
    CHECK_CLOSE(c.beta1, 0.9, 1e-6, 0);
    CHECK_CLOSE(c.beta2, 0.999, 1e-6, 0);
    CHECK_CLOSE(c.eps, 1e-8, 1e-6, 0);
    CHECK(c.weight_decay == 0 && c.clip_grad_norm == 0);
    CHECK(c.text == NULL);

    /* from memory: path is the name, text a copy */
    edit(buf, sizeof buf, 0);
    CHECK(vae_config_parse(&c, buf, "ckpt.st[config]") == 0);
    CHECK(strcmp(c.path, "ckpt.st[config]") == 0);
    CHECK(c.text && c.text != buf && strcmp(c.text, buf) == 0);
    CHECK(c.epochs == 2 && c.batch == 128 && c.latent == 8);
    CHECK(c.enc[1].line == 10 && c.dec[1].line == 15);
    vae_config_free(&c);
    CHECK(c.text == NULL);
    vae_config_free(&c); /* twice is fine */

    /* every optional key, inline ';' comments, ':' separators, a BOM */
    const char *full =
        "\xEF\xBB\xBF; all keys\n"
        "[data]\n"
        "dataset = idx ; custom files\n"
        "train_images = my-train-images.idx\n"
        "test_images: my-test-images.idx\n"
        "[model]\n"
        "type = ae\n"
        "input = 1x8x8\n"
        "latent = 4\n"
        "likelihood = gaussian\n"
        "sigma = 0.25\n"
        "[encoder]\n"
        "layer = conv 2 k=3 pad=1\n"
        "layer = leaky_relu\n"
        "layer = conv 4 k=2 stride=2\n"
        "layer = leaky_relu slope=0.2\n"
        "layer = flatten\n"
        "[decoder]\n"
        "layer = reshape 4x1x1\n"
        "layer = convT 2 k=4 stride=2 pad=1 out_pad=1\n"
        "layer = relu\n"
        "layer = convT 1 k=4 stride=2\n"
        "[train]\n"
        "epochs = 1000000\n"
        "batch = 65536\n"
        "seed = 18446744073709551615\n"
        "beta = 0\n"
        "kl_warmup_steps = 500\n"
        "threads = 1024\n"
        "device = cuda\n"
        "checkpoint_every = 5\n"
        "keep = 0\n"
        "[optim]\n"
        "lr = 10\n"
        "beta1 = 0\n"
        "beta2 = 0.99\n"
        "eps = 1e-6\n"
        "weight_decay = 0.01\n"
        "decoupled_weight_decay = yes\n"
        "clip_grad_norm = 1.5\n";
    int rc = vae_config_parse(&c, full, "full.ini");
    CHECK_MSG(rc == 0, "%s", vae_error_get());
    CHECK(c.dataset == VAE_DATA_IDX);
    CHECK(strcmp(c.train_images, "my-train-images.idx") == 0);
    CHECK(strcmp(c.test_images, "my-test-images.idx") == 0);
    CHECK(c.type == VAE_MODEL_AE && c.likelihood == VAE_LIK_GAUSSIAN);
    CHECK_CLOSE(c.sigma, 0.25, 0, 0);
    CHECK(c.n_enc == 5 && c.n_dec == 4);
    CHECK(c.enc[0].stride == 1 && c.enc[0].pad == 1 && shape_eq(c.enc[0].out_shape, 2, 8, 8));
    CHECK_CLOSE(c.enc[1].slope, 0.01, 1e-6, 0);
    CHECK(c.enc[2].pad == 0 && shape_eq(c.enc[2].out_shape, 4, 4, 4));
    CHECK_CLOSE(c.enc[3].slope, 0.2, 1e-6, 0);
    CHECK(shape_eq(c.enc[4].out_shape, 64, 1, 1));
    /* convT: (1-1)*2 - 2 + 4 + 1 = 3, then (3-1)*2 + 4 = 8 */
    CHECK(shape_eq(c.dec[1].out_shape, 2, 3, 3));
    CHECK(c.dec[3].pad == 0 && c.dec[3].out_pad == 0 && shape_eq(c.dec[3].out_shape, 1, 8, 8));
    CHECK(c.epochs == 1000000 && c.batch == 65536 && c.seed == UINT64_MAX);
    CHECK(c.beta == 0 && c.kl_warmup_steps == 500 && c.threads == 1024);
    CHECK(c.device == VAE_DEVICE_CUDA && c.checkpoint_every == 5 && c.keep == 0);
    CHECK_CLOSE(c.lr, 10, 0, 0);
    CHECK(c.beta1 == 0);
    CHECK_CLOSE(c.beta2, 0.99, 1e-6, 0);
    CHECK_CLOSE(c.eps, 1e-6, 1e-6, 0);
    CHECK_CLOSE(c.weight_decay, 0.01, 1e-6, 0);
    CHECK(c.decoupled_weight_decay == 1);
    CHECK_CLOSE(c.clip_grad_norm, 1.5, 0, 0);
    vae_config_free(&c);

    /* CRLF line endings, indented keys, a flat decoder output */
    const char *crlf = "[data]\r\ndataset = cifar10\r\n[model]\r\n  input = 3x4x4\r\nlatent=2\r\n"
                       "[encoder]\r\nlayer = flatten\r\n[decoder]\r\nlayer = dense 48\r\n";
    rc = vae_config_parse(&c, crlf, "crlf.ini");
    CHECK_MSG(rc == 0, "%s", vae_error_get());
    CHECK(c.dataset == VAE_DATA_CIFAR10 && shape_eq(c.dec[0].out_shape, 48, 1, 1));
    vae_config_free(&c);

    /* booleans */
    const char *bools[] = {"true", "yes", "1", "false", "no", "0"};
    for (int i = 0; i < 6; i++) {
        char line[64];
        snprintf(line, sizeof line, "decoupled_weight_decay = %s", bools[i]);
        edit(buf, sizeof buf, 19, "[optim]", 20, line, 21, "", 0);
        rc = vae_config_parse(&c, buf, "bool.ini");
        CHECK_MSG(rc == 0 && c.decoupled_weight_decay == (i < 3), "%s: %s", bools[i], vae_error_get());
        vae_config_free(&c);
    }
}

/* ------------------------------------------------------------ broken inputs */

static void test_errors(void) {
    char buf[8192];
#define E(...) edit(buf, sizeof buf, __VA_ARGS__, 0)

    /* unknown key / section, keys outside a section */
    BAD("unknown_key.ini", 18, E(18, "epoch = 2"), "unknown key 'epoch' in [train]", "epochs, batch", NULL);
    BAD("unknown_section.ini", 17, E(17, "[trian]"), "unknown section [trian]", "[train]", NULL);
    BAD("no_section.ini", 1, E(1, "latent = 3"), "outside any section", "[section]", NULL);
    BAD("dup_section.ini", 19, E(19, "[train]"), "section [train] appears again", "line 17", NULL);
    BAD("open_section.ini", 17, E(17, "[train"), "no closing ']'", NULL, NULL);
    BAD("section_junk.ini", 17, E(17, "[train] epochs"), "unexpected 'epochs'", NULL, NULL);
    BAD("no_equals.ini", 19, E(19, "batch 128"), "cannot parse 'batch 128'", "key = value", NULL);
    BAD("continuation.ini", 11, E(11, "   relu"), "continuation", "key = value", NULL);

    /* missing required keys: "<path>: missing required key ..." */
    BAD("missing_latent.ini", 0, E(6, ""), "missing required key 'latent' in [model]", NULL, NULL);
    BAD("missing_input.ini", 0, E(5, ""), "missing required key 'input' in [model]", NULL, NULL);
    BAD("missing_dataset.ini", 0, E(2, ""), "missing required key 'dataset' in [data]", NULL, NULL);
    BAD("missing_enc.ini", 0, E(9, "", 10, "", 11, ""), "missing required key 'layer' in [encoder]", NULL, NULL);
    BAD("missing_dec.ini", 0, E(14, "", 15, ""), "missing required key 'layer' in [decoder]", NULL, NULL);
    BAD("empty.ini", 0, "", "missing required key 'dataset' in [data]", NULL, NULL);

    /* idx dataset and its keys */
    BAD("idx_no_train.ini", 0, E(2, "dataset = idx"), "missing required key 'train_images' in [data]", NULL, NULL);
    BAD("idx_no_test.ini", 0, E(2, "dataset = idx", 3, "train_images = a.idx"),
        "missing required key 'test_images' in [data]", NULL, NULL);
    BAD("idx_key_mnist.ini", 3, E(3, "train_images = a.idx"), "train_images is only used with dataset = idx",
        "mnist", NULL);
    BAD("idx_empty_name.ini", 3, E(2, "dataset = idx", 3, "train_images ="), "train_images has no value", NULL, NULL);

    /* duplicate keys (layer may repeat) */
    BAD("dup_key.ini", 19, E(19, "epochs = 3"), "duplicate key 'epochs' in [train]", "first set on line 18", NULL);

    /* out of range */
    BAD("range_epochs.ini", 18, E(18, "epochs = 0"), "epochs = 0 is out of range", "an integer in 1..1000000", NULL);
    BAD("range_batch.ini", 19, E(19, "batch = 65537"), "batch = 65537 is out of range", "1..65536", NULL);
    BAD("range_latent.ini", 6, E(6, "latent = 4097"), "latent = 4097", "1..4096", NULL);
    BAD("range_threads.ini", 19, E(19, "threads = 1025"), "threads", "0..1024", NULL);
    BAD("range_keep.ini", 19, E(19, "keep = -1"), "keep = -1 is out of range", "0..1000000", NULL);
    BAD("range_lr0.ini", 21, E(21, "lr = 0"), "lr = 0 is out of range", "a number > 0 and <= 10", NULL);
    BAD("range_lr11.ini", 21, E(21, "lr = 11"), "lr = 11 is out of range", "<= 10", NULL);
    BAD("range_lr_tiny.ini", 21, E(21, "lr = 1e-60"), "lr = 1e-60 is out of range", "> 0", NULL);
    BAD("range_beta1.ini", 21, E(21, "beta1 = 1"), "beta1 = 1 is out of range", ">= 0 and < 1", NULL);
    BAD("range_beta2.ini", 21, E(21, "beta2 = -0.1"), "beta2", ">= 0 and < 1", NULL);
    BAD("range_beta2_round.ini", 21, E(21, "beta2 = 0.9999999999"), "beta2", "< 1", NULL); /* 1.0f as float */
    BAD("range_eps.ini", 21, E(21, "eps = 0"), "eps = 0 is out of range", "a number > 0", NULL);
    BAD("range_wd.ini", 21, E(21, "weight_decay = -1"), "weight_decay", ">= 0", NULL);
    BAD("range_clip.ini", 21, E(21, "clip_grad_norm = -0.5"), "clip_grad_norm", ">= 0", NULL);
    BAD("lr_sched.ini", 21, E(21, "lr_schedule = step"),
        "lr_schedule = 'step' is not a valid choice", "constant, cosine or linear", NULL);
    BAD("lr_warm.ini", 21, E(21, "lr_warmup_steps = -1"), "lr_warmup_steps", "0..1000000000", NULL);
    BAD("min_lr_neg.ini", 21, E(21, "min_lr = -1e-5"), "min_lr", ">= 0", NULL);
    /* min_lr above lr: named at min_lr's line, after lr's or before it, or
     * above the default lr */
    BAD("min_lr_big.ini", 22, edit(buf, sizeof buf, 21, "lr = 1e-3\nmin_lr = 2e-3", 0),
        "min_lr = 0.002 is above lr = 0.001", "expected min_lr <= lr", NULL);
    BAD("min_lr_first.ini", 21,
        edit(buf, sizeof buf, 20, "[optim]\nmin_lr = 0.5", 21, "lr = 0.1", 0),
        "min_lr = 0.5 is above lr = 0.1", NULL, NULL);
    BAD("min_lr_default_lr.ini", 21, E(21, "min_lr = 0.01"), "above lr = 0.001", NULL, NULL);
    BAD("range_beta.ini", 19, E(19, "beta = -1"), "beta = -1 is out of range", ">= 0", NULL);
    BAD("range_sigma.ini", 7, E(7, "sigma = 0"), "sigma = 0 is out of range", "> 0", NULL);
    BAD("range_ckpt.ini", 19, E(19, "checkpoint_every = 0"), "checkpoint_every", "1..1000000", NULL);
    BAD("range_input.ini", 5, E(5, "input = 0x28x28"), "input = 0x28x28 is out of range", "1..65536", NULL);

    /* malformed numbers */
    BAD("garbage_lr.ini", 21, E(21, "lr = 1e3x"), "lr = '1e3x' is not a finite number", "> 0 and <= 10", NULL);
    BAD("garbage_epochs.ini", 18, E(18, "epochs = 1e3x"), "epochs = '1e3x' is not an integer", "1..1000000", NULL);
    BAD("float_epochs.ini", 18, E(18, "epochs = 2.5"), "'2.5' is not an integer", NULL, NULL);
    BAD("empty_epochs.ini", 18, E(18, "epochs ="), "epochs has no value", "an integer", NULL);
    BAD("overflow_epochs.ini", 18, E(18, "epochs = 99999999999999999999999"), "is out of range", "1..1000000", NULL);
    BAD("overflow_lr.ini", 21, E(21, "lr = 1e999"), "lr = 1e999 is out of range", NULL, NULL);
    BAD("nan_lr.ini", 21, E(21, "lr = nan"), "'nan' is not a finite number", NULL, NULL);
    BAD("neg_seed.ini", 19, E(19, "seed = -1"), "seed = '-1' is not an integer", NULL, NULL);
    BAD("overflow_seed.ini", 19, E(19, "seed = 18446744073709551616"), "seed", "out of range", NULL);
    BAD("hash_comment.ini", 18, E(18, "epochs = 2 # two"), "not an integer", "inline comments start with ' ;'", NULL);
    BAD("bad_shape.ini", 5, E(5, "input = 1x28"), "input = '1x28' is not a shape", "CxHxW", NULL);

    /* bools and choices */
    BAD("bad_bool.ini", 21, E(21, "decoupled_weight_decay = maybe"), "decoupled_weight_decay = 'maybe' is not a boolean",
        "true, false, yes, no, 1 or 0", NULL);
    BAD("bad_device.ini", 19, E(19, "device = gpu"), "device = 'gpu'", "auto, cpu or cuda", NULL);
    BAD("bad_dataset.ini", 2, E(2, "dataset = MNIST"), "dataset = 'MNIST'", "mnist, cifar10 or idx", NULL);
    BAD("bad_type.ini", 7, E(7, "type = gan"), "type = 'gan'", "vae or ae", NULL);
    BAD("bad_lik.ini", 7, E(7, "likelihood = poisson"), "likelihood = 'poisson'", "bernoulli or gaussian", NULL);

    /* layer specs */
    BAD("layer_token.ini", 10, E(10, "layer = dens 16"), "unknown layer type 'dens'", "dense, conv, convT", NULL);
    BAD("layer_empty.ini", 10, E(10, "layer ="), "empty layer", "dense", NULL);
    BAD("layer_option.ini", 9, E(9, "layer = conv 4 kernel=3"), "unknown option 'kernel='",
        "'conv N k=K [stride=S] [pad=P]'", NULL);
    BAD("layer_no_k.ini", 9, E(9, "layer = conv 4 stride=2"), "conv needs the kernel size k=", NULL, NULL);
    BAD("layer_k16.ini", 9, E(9, "layer = conv 4 k=16"), "'k=16' is out of range", "k in 1..15", NULL);
    BAD("layer_k_garbage.ini", 9, E(9, "layer = conv 4 k=3x"), "'k=3x' is not an integer", NULL, NULL);
    BAD("layer_k_dup.ini", 9, E(9, "layer = conv 4 k=3 k=3"), "option 'k=' given twice", NULL, NULL);
    BAD("layer_stride.ini", 9, E(9, "layer = conv 4 k=3 stride=9"), "'stride=9' is out of range", "1..8", NULL);
    BAD("layer_pad.ini", 9, E(9, "layer = conv 4 pad=3 k=3"), "pad=3 is out of range", "pad in 0..2 (less than k=3)", NULL);
    BAD("layer_outpad.ini", 15, E(15, "layer = convT 1 k=3 stride=2 out_pad=2"), "out_pad=2 is out of range",
        "0..1 (less than stride=2)", NULL);
    BAD("layer_outpad_conv.ini", 9, E(9, "layer = conv 4 k=3 out_pad=1"), "unknown option 'out_pad='", NULL, NULL);
    BAD("layer_no_n.ini", 10, E(10, "layer = dense"), "dense needs its number of features", "'dense N'", NULL);
    BAD("layer_n0.ini", 10, E(10, "layer = dense 0"), "features '0' is out of range", "1..65536", NULL);
    BAD("layer_n_garbage.ini", 10, E(10, "layer = dense 16x"), "'16x' is not an integer", NULL, NULL);
    BAD("layer_extra.ini", 11, E(11, "layer = relu 3"), "unexpected '3' in layer 'relu 3'", "'relu'", NULL);
    BAD("layer_dense_extra.ini", 10, E(10, "layer = dense 16 32"), "unexpected '32'", NULL, NULL);
    BAD("layer_slope.ini", 11, E(11, "layer = leaky_relu slope=2"), "'slope=2' is out of range", ">= 0 and < 1", NULL);
    BAD("layer_slope_garbage.ini", 11, E(11, "layer = leaky_relu slope=x"), "'slope=x' is not a number", NULL, NULL);
    BAD("layer_reshape_bad.ini", 15, E(15, "layer = reshape 1x28"), "'1x28' is not a shape", NULL, NULL);
    BAD("layer_reshape_none.ini", 15, E(15, "layer = reshape"), "reshape needs a target shape", NULL, NULL);

    /* shape chaining */
    BAD("dense_after_conv.ini", 10, E(9, "layer = conv 4 k=3"),
        "encoder.1 (dense) needs a flat input but gets 4x26x26", "add 'flatten' before it", NULL);
    BAD("dense_on_image.ini", 9, E(9, "layer = dense 16", 10, "layer = relu"), "needs a flat input but gets 1x28x28",
        "flatten", NULL);
    BAD("conv_after_flatten.ini", 10, E(10, "layer = conv 4 k=1"), "needs an image input", "reshape", NULL);
    BAD("conv_on_latent.ini", 14, E(14, "layer = conv 4 k=1"), "decoder.0 (conv) needs an image input",
        "reshape CxHxW", NULL);
    BAD("reshape_count.ini", 15, E(15, "layer = reshape 1x28x27"), "reshape 1x28x27) has 756 values",
        "expected a shape with 784 values", NULL);
    BAD("dec_count.ini", 15, E(14, "layer = dense 783", 15, "layer = relu"), "[decoder] output is 783 (flat) with 783 values",
        "expected the decoder to end with 784 values", NULL);
    BAD("dec_shape.ini", 15, E(15, "layer = reshape 4x14x14"), "[decoder] output is 4x14x14", "flat vector of 784 or exactly 1x28x28",
        NULL);
    BAD("enc_not_flat.ini", 11, E(9, "layer = relu", 10, "layer = relu"), "[encoder] output is 1x28x28, not flat", "flatten",
        NULL);
    BAD("conv_empty.ini", 9, E(5, "input = 1x4x4", 9, "layer = conv 4 k=5 stride=2"), "output would be empty",
        "+ 2*pad >= k", NULL);
    BAD("convt_empty.ini", 15, E(14, "layer = reshape 8x1x1", 15, "layer = convT 1 k=5 pad=4"), "output would be empty",
        "convT k=5", NULL);
    BAD("too_large.ini", 16, E(14, "layer = dense 64", 15, "layer = reshape 1x8x8", 16, "layer = convT 65536 k=15 stride=8"),
        "(convT) output 65536x71x71 is too large", "at most 67108864 values", NULL);

    /* too many layers */
    {
        char big[8192];
        size_t o = (size_t)snprintf(big, sizeof big, "[data]\ndataset = mnist\n[model]\ninput = 1x28x28\n"
                                    "latent = 8\n[encoder]\nlayer = flatten\n");
        for (int i = 0; i < 64; i++) o += (size_t)snprintf(big + o, sizeof big - o, "layer = relu\n");
        BAD("too_many_layers.ini", 71, big, "too many layers in [encoder]", "at most 64", NULL);
    }

    /* a line longer than inih's buffer, even inside a comment (inih would split it) */
    {
        char longline[400], text[1024];
        memset(longline, 'x', sizeof longline);
        memcpy(longline, "; ", 2);
        longline[250] = 0;
        BAD("long_comment.ini", 3, E(3, longline), "line is 250 characters long", "at most 197", NULL);
        snprintf(text, sizeof text, "[data]\ndataset = mnist\n[model]\nlatent = %0240d\n", 8);
        BAD("long_value.ini", 4, text, "characters long", NULL, NULL);
        /* 197 characters is still fine */
        memset(longline, ' ', sizeof longline);
        memcpy(longline, "epochs = 2", 10);
        longline[197] = 0;
        vae_config c;
        int rc = vae_config_parse(&c, E(18, longline), "len197.ini");
        CHECK_MSG(rc == 0, "%s", vae_error_get());
        vae_config_free(&c);
    }

    /* NUL byte, oversized file, missing file */
    {
        vae_config c;
        const char nul[] = "[data]\ndataset = mnist\nlat\0ent = 3\n";
        const char *p = test_write_file("nul.ini", nul, sizeof nul - 1);
        CHECK_ERR(vae_config_load(&c, p), "nul.ini:3: NUL byte");
        CHECK(strstr(vae_error_get(), "expected a text file") != NULL);
        CHECK(c.text == NULL);
        /* a NUL that starts a line: that line's number, not the one before */
        const char nul0[] = "[data]\ndataset = mnist\n\0latent = 3\n";
        p = test_write_file("nul0.ini", nul0, sizeof nul0 - 1);
        CHECK_ERR(vae_config_load(&c, p), "nul0.ini:3: NUL byte");

        size_t n = (1u << 20) + 2;
        char *huge = malloc(n);
        CHECK(huge != NULL);
        if (huge) {
            for (size_t i = 0; i < n; i += 2) huge[i] = ';', huge[i + 1] = '\n';
            p = test_write_file("huge.ini", huge, n);
            CHECK_ERR(vae_config_load(&c, p), "huge.ini: config file is larger than 1 MiB");
            huge[n - 1] = 0;
            CHECK_ERR(vae_config_parse(&c, huge, "huge-text"), "huge-text: config is");
            free(huge);
        }
        char missing[700];
        snprintf(missing, sizeof missing, "%s/does-not-exist.ini", test_tmpdir());
        int rc = vae_config_load(&c, missing);
        CHECK(rc == VAE_EIO);
        CHECK(strstr(vae_error_get(), "does-not-exist.ini: cannot open config") != NULL);
        CHECK(c.text == NULL);
        rc = vae_config_load(&c, test_tmpdir()); /* a directory */
        CHECK(rc != 0 && c.text == NULL);
        vae_config_free(&c);
    }

    /* errors from a text (checkpoint-embedded config, the fuzzer) name the given name */
    {
        vae_config c;
        CHECK_ERR(vae_config_parse(&c, E(18, "epochs = x"), "run.ckpt[config]"), "run.ckpt[config]:18: [train] epochs");
        CHECK_ERR(vae_config_parse(&c, "[data]\ndataset = mnist\n", NULL), "<string>: missing required key");
        CHECK(c.text == NULL);
        /* a failed parse after a good one leaves the config reset, not half-updated */
        CHECK(vae_config_parse(&c, E(0, ""), "good.ini") == 0);
        vae_config_free(&c);
        CHECK(vae_config_parse(&c, E(18, "epochs = 7", 21, "lr = -1"), "bad.ini") != 0);
        CHECK(c.epochs == 10 && c.text == NULL && c.n_enc == 0 && c.latent == 0);
        CHECK(strcmp(c.path, "bad.ini") == 0); /* a reset config still names its source */
        vae_config_free(&c);
    }

    /* each limit exactly, and one past it */
    {
        vae_config c;
        /* an integer may carry a '+' */
        CHECK(vae_config_parse(&c, E(18, "epochs = +2"), "plus.ini") == 0 && c.epochs == 2);
        vae_config_free(&c);
        /* C*H*W of a shape: 2^26 is allowed (that config then fails later, at
         * its decoder, not at the shape), 2^26 + 8192 is out of range */
        int rc = vae_config_parse(&c, E(5, "input = 1x8192x8192"), "shape_max.ini");
        CHECK_MSG(rc != 0 && !strstr(vae_error_get(), "is out of range") &&
                      strstr(vae_error_get(), "decoder"),
                  "a 1x8192x8192 input: %s", vae_error_get());
        BAD("shape_over.ini", 5, E(5, "input = 1x8192x8193"), "input = 1x8192x8193 is out of range",
            "C*H*W <= 67108864", NULL);
        /* leaky_relu's slope: below 1, not 1 */
        CHECK(vae_config_parse(&c, E(11, "layer = leaky_relu slope=0.999"), "slope.ini") == 0);
        CHECK_CLOSE(c.enc[2].slope, 0.999, 1e-6, 0);
        vae_config_free(&c);
        BAD("slope1.ini", 11, E(11, "layer = leaky_relu slope=1"), "'slope=1' is out of range",
            "a number >= 0 and < 1", NULL);
        /* a conv whose padded input is exactly k: an output of 1x1 */
        CHECK_MSG(vae_config_parse(&c, E(5, "input = 1x3x3", 9, "layer = conv 4 k=3", 10,
                                         "layer = flatten", 14, "layer = dense 9", 15,
                                         "layer = reshape 1x3x3"),
                                   "conv_k.ini") == 0,
                  "conv k=3 on 3x3: %s", vae_error_get());
        vae_config_free(&c);
        BAD("conv_empty.ini", 9, E(5, "input = 1x2x3", 9, "layer = conv 4 k=3", 10, "layer = flatten",
                                   14, "layer = dense 6", 15, "layer = reshape 1x2x3"),
            "output would be empty", "height and width + 2*pad >= k", NULL);
    }
#undef E
}

static void test_validate(void) {
    char buf[4096];
    vae_config c;
    CHECK(vae_config_parse(&c, edit(buf, sizeof buf, 0), "v.ini") == 0);
    CHECK(vae_config_validate(&c) == VAE_OK);
    c.batch = 0;
    CHECK_ERR(vae_config_validate(&c), "--batch 0: batch must be in 1..65536");
    c.batch = 64;
    c.epochs = 0;
    CHECK_ERR(vae_config_validate(&c), "--epochs 0: epochs must be in 1..1000000");
    c.epochs = 3;
    c.threads = 2000;
    CHECK_ERR(vae_config_validate(&c), "--threads 2000: threads must be in 0..1024");
    c.threads = 4;
    c.lr = 0;
    CHECK_ERR(vae_config_validate(&c), "--lr 0: lr must be > 0 and <= 10");
    c.lr = 20;
    CHECK_ERR(vae_config_validate(&c), "--lr 20: lr must be > 0 and <= 10");
    c.lr = NAN;
    CHECK_ERR(vae_config_validate(&c), "--lr nan");
    c.lr = 0.5f;
    c.keep = -1;
    CHECK_ERR(vae_config_validate(&c), "--keep -1: keep must be in 0..1000000");
    c.keep = 0;
    c.device = (vae_device)7;
    CHECK_ERR(vae_config_validate(&c), "device must be auto, cpu or cuda");
    c.device = VAE_DEVICE_CPU;
    c.seed = UINT64_MAX;
    CHECK(vae_config_validate(&c) == VAE_OK);
    /* integer limits inclusive: 65536 is a batch, 65537 is not */
    c.batch = 65536;
    CHECK(vae_config_validate(&c) == VAE_OK);
    c.batch = 65537;
    CHECK_ERR(vae_config_validate(&c), "--batch 65537: batch must be in 1..65536");
    c.batch = 64;
    /* a boolean is 0 or 1 */
    c.decoupled_weight_decay = 2;
    CHECK_ERR(vae_config_validate(&c), "--decoupled_weight_decay 2: decoupled_weight_decay must "
                                       "be 0 or 1");
    c.decoupled_weight_decay = 1;
    CHECK(vae_config_validate(&c) == VAE_OK);
    /* --lr below the config's min_lr; equal is fine */
    c.min_lr = 0.25f, c.lr = 0.125f;
    CHECK_ERR(vae_config_validate(&c), "--lr 0.125: lr must be >= the config's min_lr = 0.25");
    c.lr = 0.25f;
    CHECK(vae_config_validate(&c) == VAE_OK);
    c.lr_schedule = 3;
    CHECK_ERR(vae_config_validate(&c), "lr_schedule must be constant, cosine or linear");
    c.lr_schedule = VAE_LR_LINEAR;
    CHECK(vae_config_validate(&c) == VAE_OK);
    vae_config_free(&c);
}

static void test_kind_names(void) {
    CHECK(strcmp(vae_layer_kind_name(VAE_LAYER_DENSE), "dense") == 0);
    CHECK(strcmp(vae_layer_kind_name(VAE_LAYER_CONV), "conv") == 0);
    CHECK(strcmp(vae_layer_kind_name(VAE_LAYER_CONVT), "convT") == 0);
    CHECK(strcmp(vae_layer_kind_name(VAE_LAYER_RELU), "relu") == 0);
    CHECK(strcmp(vae_layer_kind_name(VAE_LAYER_LEAKY_RELU), "leaky_relu") == 0);
    CHECK(strcmp(vae_layer_kind_name(VAE_LAYER_FLATTEN), "flatten") == 0);
    CHECK(strcmp(vae_layer_kind_name(VAE_LAYER_RESHAPE), "reshape") == 0);
    CHECK(strcmp(vae_layer_kind_name((vae_layer_kind)99), "unknown") == 0);
}

/* vae_config_compare: what defines the model vs what changes the results,
 * run settings not compared, floats as the shortest text that reads back */
static void test_compare(void) {
    vae_config a, b;
    char m[512], o[512];
    const char *p = config_path("mnist_conv.ini");
    CHECK_MSG(p != NULL, "configs/mnist_conv.ini not found (set VAE_SOURCE_DIR)");
    if (!p) return;
    CHECK(vae_config_load(&a, p) == 0);
    CHECK(vae_config_load(&b, p) == 0);
    CHECK(vae_config_compare(&a, &b, m, sizeof m, o, sizeof o) == 0 && !m[0] && !o[0]);
    b.epochs = 99, b.threads = 3, b.keep = 0, b.device = VAE_DEVICE_CPU, b.checkpoint_every = 5;
    CHECK(vae_config_compare(&a, &b, m, sizeof m, o, sizeof o) == 0 && !m[0] && !o[0]);
    /* under a decaying learning rate the epochs change the results */
    b.lr_schedule = VAE_LR_COSINE;
    CHECK(vae_config_compare(&a, &b, m, sizeof m, o, sizeof o) == 0 && !m[0]);
    CHECK_MSG(strstr(o, "[optim] lr_schedule constant -> cosine") &&
                  strstr(o, "[train] epochs 10 -> 99 (the lr_schedule's decay"), "%s", o);
    b.lr_schedule = VAE_LR_CONSTANT, b.lr_warmup_steps = 5;
    CHECK(vae_config_compare(&a, &b, m, sizeof m, o, sizeof o) == 0 && !m[0]);
    CHECK_MSG(strstr(o, "[optim] lr_warmup_steps 0 -> 5") && !strstr(o, "epochs"), "%s", o);
    b.lr_warmup_steps = 0;
    b.lr = 2e-3f, b.beta = 0.5f;
    CHECK(vae_config_compare(&a, &b, m, sizeof m, o, sizeof o) == 0 && !m[0]);
    CHECK_MSG(strstr(o, "[optim] lr 0.001 -> 0.002") && strstr(o, "[train] beta 1 -> 0.5"), "%s", o);
    b.likelihood = VAE_LIK_GAUSSIAN;
    b.dec[5].out = 16;
    CHECK(vae_config_compare(&a, &b, m, sizeof m, NULL, 0) == 2);
    CHECK_MSG(strstr(m, "[model] likelihood bernoulli -> gaussian") && strstr(m, "[decoder] layer 6"),
              "%s", m);
    b.n_enc--;
    CHECK(vae_config_compare(&a, &b, NULL, 0, NULL, 0) == 3);
    vae_config_free(&a);
    vae_config_free(&b);
}

int main(void) {
    test_compare();
    test_mnist_mlp();
    test_mnist_conv();
    test_cifar10_conv();
    test_mnist_ae();
    test_defaults_and_syntax();
    test_errors();
    test_validate();
    test_kind_names();
    return test_finish();
}

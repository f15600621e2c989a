/* test_cuda_train.c — whole models, CUDA against the CPU reference.
 *
 * test_cuda_ops.c proves every op; this proves them composed as training
 * composes them, on four configs (CASES: an MLP VAE, a conv VAE with a leaky
 * ReLU and KL warm-up, a CIFAR-shaped 3x32x32 conv VAE with a Gaussian
 * likelihood and gradient clipping, a plain autoencoder with AdamW decay),
 * each on 200 synthetic training images (batch 32: 7 steps per epoch, the
 * last of 8 images) and 100 test images:
 *
 *   1. One step: the same initial parameters (initialised on the CPU,
 *      copied), the same batch (gathered on each backend from the same uint8
 *      images and shuffle), the same noise (Philox, same seed and step):
 *      per-sample recon and KL, the step sums in m->acc, the encoder head,
 *      the decoder output and every parameter's gradient. Again after
 *      training, at the CPU's trained parameters (beta past the warm-up, a
 *      non-trivial posterior).
 *   2. 100 steps as vae_train runs them (run_step: train.c's
 *      vae_stepper_grad — the epoch's shuffle, gather, beta warm-up,
 *      forward_backward — then vae_model_adam and step_commit as
 *      vae_stepper_run issues them, with the step's sums read between; the
 *      per-epoch reset of the epoch sums), twice:
 *      a. in lockstep: before each step the device is given the CPU's
 *         parameters and moments, and the step's loss, every tensor's Adam
 *         update and new moments are compared from that same state: the
 *         precise check of the 100 steps;
 *      b. free: each backend alone from its start, as two real runs: the
 *         loss curves, the epoch means, the final parameters and
 *         vae_evaluate (ELBO and the IW bound, K = 8) are compared, loosely
 *         (below), and both curves must go down. The evaluator is also
 *         compared at identical parameters, precisely.
 *      Every run's bookkeeping is checked at each epoch's end: the epoch's
 *      sums (step_commit) equal the host's sum of the step sums read before
 *      each commit, the images counted are the epoch's, no step is bad.
 *   3. Determinism: the 100 GPU steps again from the same start on the same
 *      backend must give bit-identical parameters, moments and loss curve;
 *      so must the 100 steps issued as vae_train issues them
 *      (vae_stepper_run: the values from step_begin on the device), without
 *      and with graphs (a full-batch and a short-batch graph, both captured),
 *      against the instrumented run (parameters, moments, epoch means); and
 *      on two fresh CUDA backends with VAE_CUDNN_ALGO=heuristic, which
 *      stand for two processes (a run and its resume), bit-identical to each
 *      other — the second with the side stream ($VAE_CUDA_SIDE: the weight
 *      gradients beside the input gradients) the other way round from the
 *      first, so side segments must change no bit either. cuDNN's default choice is by timing (cudnnFind*), which may pick
 *      another (deterministic) algorithm in another process, so bit-identity
 *      across processes is only promised with the heuristic choice; within a
 *      backend the chosen algorithms are cached per geometry, so the rerun
 *      uses the same ones whatever the mode, and every kernel must be
 *      deterministic. Whether the heuristic runs also match the timed one is
 *      printed, not required.
 *
 * Tolerances. Both sides compute in fp32 without TF32 (cuDNN in FMA math,
 * cuBLAS in default math) but sum in different orders, and the GPU fuses
 * multiply-adds: results differ by a few ulps per op, growing through the
 * layers. "Seen": the float CPU reference against the same code in double
 * (the f64 library), and VAE_TEST_CPU_VS_CPU=ulp (below); CPU vs CUDA should
 * be of the same order, up to 2x (both sides round).
 *   per-sample recon and KL, step sums, each lockstep step's loss:
 *     max_b |a-b| / max(max_b |b|, 1 nat) <= 1e-5 (seen <= 2e-7). The 1-nat
 *     floor is for the KL, ~0.04 nats at init: second order in mu and the
 *     log-variance, its relative error is theirs amplified by ~1/|mu| (seen
 *     5e-6 relative to itself). The autoencoder's KL must be exactly 0.
 *   head (mu | log-variance), decoder output: max|a-b| / max|b| <= 1e-5
 *     (seen <= 8e-7).
 *   gradients, per tensor: max|a-b| / max|b| <= 1e-4 (seen <= 2e-6), as
 *     test_cuda_ops.c's bound for weight gradients that reduce over the
 *     batch and the spatial positions.
 *   ReLU ties: an activation's input within rounding of 0 may land on either
 *     side on the two backends, both right, and then one sample's term of
 *     the rows that unit feeds moves: a gradient error of percents, no bug.
 *     relu_ties finds them (outputs of opposite sign, which must be within
 *     1e-4 of the layer's max, else it is a real disagreement), and for that
 *     step gradients, update and moments are only held to "no garbage" (1).
 *     Seen with 1-ulp differences: 1-2 steps in 100; more on the GPU.
 *   lockstep, per tensor: the Adam update rms(dp_dev - dp_cpu) / lr <= 1e-2
 *     (seen <= 1e-4; lr, not the update, is the scale, as m / sqrt(v) is
 *     ill-conditioned where m ~ 0), the new moments max|a-b| / max|b| <= 1e-3
 *     (seen <= 6e-6).
 *   free runs: the loss at every step |a-b| / |b| <= 1e-2, the epoch means
 *     and the evaluation after training likewise, relative to the loss; the
 *     final parameters ||a-b|| / ||b|| per tensor <= 0.2. Free runs diverge:
 *     each ReLU tie, and each gradient element at the size of its own
 *     rounding error (Adam gives it an update of ~lr of either sign), kicks
 *     the two trajectories apart and training amplifies the difference.
 *     Seen over 20 seeds of these configs at lr 3e-4: mostly 1e-8 .. 1e-5,
 *     a few chaotic ones up to 1.3e-3 (loss) and 4e-2 (parameters); at lr
 *     1e-3 up to 5e-3 and 0.2, hence lr 3e-4 here. So the free runs only
 *     catch gross errors (a wrong batch, a skipped or doubled update, stale
 *     state), and the lockstep is the precise check. Step 1 of the free runs
 *     is held to 1e-5.
 *   evaluation at identical parameters: nelbo, recon, kl and the IW bound,
 *     each relative to max(|itself|, 1 nat), <= 1e-5; the Gaussian MSE 1e-4
 *     (it is recon less the constant D/2 log 2 pi sigma^2: cancellation).
 *   training happens: the loss above its floor (the images' mean Bernoulli
 *     entropy, or D/2 log 2 pi sigma^2) falls below 0.9 of step 1's by the
 *     last full epoch (seen 0.73 MLP, 0.78 conv, 0.21 CIFAR-shaped, 0.15 AE).
 *
 * VAE_TEST_CPU_VS_CPU=1 puts a second CPU backend in the GPU's place (also in
 * builds without CUDA): every path runs end to end, and every tolerance is 0
 * (the two must agree bit for bit). VAE_TEST_CPU_VS_CPU=ulp moves every
 * parameter the "device" is given (its start, its state at each lockstep
 * step) by about an ulp: differences of the size CUDA's rounding makes, for
 * the tolerance paths. Without it the test skips (exit 77) when the build has
 * no CUDA backend or no GPU is usable.
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#ifdef VAE_TEST_HAVE_EMU
#include "backend_emu.h"
#endif
#include "vae_backend.h"
#include "vae_config.h"
#include "vae_math.h"
#include "vae_model.h"
#include "vae_train.h"

#define STEPS 100
#define N_TRAIN 200 /* with batch 32: 7 steps per epoch, the last of 8 images */
#define N_TEST 100
#define IW_K 8

/* Tolerances (header comment); all 0 in the exact CPU-vs-CPU mode */
#define TOL(x) (g_exact ? 0.0 : (x))
#define TOL_SAMPLE TOL(1e-5) /* per-sample losses, step sums, evaluation at equal parameters */
#define TOL_ACT TOL(1e-5)    /* head, decoder output */
#define TOL_GRAD TOL(1e-4)   /* every gradient tensor, relative to its max */
#define TOL_UPDATE TOL(1e-2) /* lockstep: each tensor's Adam update, rms(a-b) / lr */
#define TOL_MOMENT TOL(1e-3) /* lockstep: each tensor's new Adam moments, relative to max */
#define TOL_CURVE TOL(1e-2)  /* free runs: the loss at each step; evaluation after */
#define TOL_PARAM TOL(0.2)   /* free runs: final parameters, ||a-b|| / ||b|| per tensor */
#define TOL_TIE_SIZE TOL(1e-4) /* a ReLU tie's output, relative to the layer's max */
#define TOL_TIE 1.0          /* a step with a ReLU tie: no garbage */
#define TRAIN_DROP 0.9       /* the loss above its floor after 100 steps, relative to step 1 */

static vae_backend *g_ref;    /* the CPU reference */
static vae_backend *g_dev;    /* the backend under test (CUDA, or CPU in CPU-vs-CPU mode) */
static vae_backend *g_heu[2]; /* two more of it, with cuDNN's heuristic algorithm choice */
static int g_cpu_mode;         /* VAE_TEST_CPU_VS_CPU set */
static int g_perturb;          /* VAE_TEST_CPU_VS_CPU=ulp */
static int g_exact;            /* VAE_TEST_CPU_VS_CPU, not ulp: everything bit-equal */
static int g_emu;              /* VAE_TEST_EMU: the CUDA kernels in the CPU emulator */

/* ------------------------------------------------------------ configs */

typedef struct {
    const char *name;
    const char *ini;
} tcase;

static const tcase CASES[] = {
    {"mlp", /* configs/mnist_mlp.ini at batch 32 */
     "[data]\ndataset = mnist\n"
     "[model]\ntype = vae\ninput = 1x28x28\nlatent = 20\nlikelihood = bernoulli\n"
     "[encoder]\nlayer = flatten\nlayer = dense 400\nlayer = relu\n"
     "[decoder]\nlayer = dense 400\nlayer = relu\nlayer = dense 784\nlayer = reshape 1x28x28\n"
     "[train]\nbatch = 32\nseed = 11\n"
     "[optim]\nlr = 3e-4\n"},
    {"conv", /* configs/mnist_conv.ini at half the width, a leaky ReLU, KL warm-up */
     "[data]\ndataset = mnist\n"
     "[model]\ntype = vae\ninput = 1x28x28\nlatent = 10\nlikelihood = bernoulli\n"
     "[encoder]\nlayer = conv 16 k=3 stride=2 pad=1\nlayer = relu\n"
     "layer = conv 32 k=3 stride=2 pad=1\nlayer = leaky_relu slope=0.1\nlayer = flatten\n"
     "layer = dense 64\nlayer = relu\n"
     "[decoder]\nlayer = dense 64\nlayer = relu\nlayer = dense 1568\nlayer = relu\n"
     "layer = reshape 32x7x7\nlayer = convT 16 k=3 stride=2 pad=1 out_pad=1\nlayer = relu\n"
     "layer = convT 1 k=3 stride=2 pad=1 out_pad=1\n"
     "[train]\nbatch = 32\nseed = 12\nkl_warmup_steps = 50\n"
     "[optim]\nlr = 3e-4\n"},
    {"cifar-gauss", /* 3x32x32, k=4 stride-2 convs, Gaussian likelihood, clipping, beta 0.5 */
     "[data]\ndataset = cifar10\n"
     "[model]\ntype = vae\ninput = 3x32x32\nlatent = 16\nlikelihood = gaussian\nsigma = 1\n"
     "[encoder]\nlayer = conv 16 k=4 stride=2 pad=1\nlayer = relu\n"
     "layer = conv 32 k=4 stride=2 pad=1\nlayer = relu\nlayer = flatten\n"
     "layer = dense 64\nlayer = relu\n"
     "[decoder]\nlayer = dense 64\nlayer = relu\nlayer = dense 2048\nlayer = relu\n"
     "layer = reshape 32x8x8\nlayer = convT 16 k=4 stride=2 pad=1\nlayer = relu\n"
     "layer = convT 3 k=4 stride=2 pad=1\n"
     "[train]\nbatch = 32\nseed = 13\nbeta = 0.5\n"
     "[optim]\nlr = 3e-4\nclip_grad_norm = 5\n"},
    {"ae", /* configs/mnist_ae.ini at batch 32, sigma 0.5, with AdamW-style decay */
     "[data]\ndataset = mnist\n"
     "[model]\ntype = ae\ninput = 1x28x28\nlatent = 128\nlikelihood = gaussian\nsigma = 0.5\n"
     "[encoder]\nlayer = flatten\nlayer = dense 256\nlayer = relu\n"
     "[decoder]\nlayer = dense 256\nlayer = relu\nlayer = dense 784\nlayer = reshape 1x28x28\n"
     "[train]\nbatch = 32\nseed = 14\n"
     "[optim]\nlr = 3e-4\nweight_decay = 0.01\ndecoupled_weight_decay = true\n"},
};

/* ------------------------------------------------------------ helpers */

static real *fetch(vae_backend *be, const real *p, size_t n) {
    real *h = test_xmalloc(n * sizeof(real));
    be->download(be, h, p, n * sizeof(real));
    return h;
}

static double max_abs(const real *a, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++)
        if (fabs((double)a[i]) > m) m = fabs((double)a[i]);
    return m;
}

static double rel(double a, double b) {
    double d = fabs(a - b);
    if (d != d) return INFINITY;
    return d == 0 ? 0 : d / (fabs(b) + 1e-300);
}

/* Losses in nats: |a-b| / max(|b|, 1 nat) (see the header: KL near 0). */
static double loss_err(double a, double b) {
    double d = fabs(a - b);
    if (d != d) return INFINITY;
    return d / (fabs(b) > 1 ? fabs(b) : 1);
}

/* Per-sample losses: max_b |a-b| / max(max_b |b|, 1 nat). */
static double losses_err(const real *a, const real *b, size_t n) {
    double num = 0, mx = max_abs(b, n);
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d != d) return INFINITY;
        if (d > num) num = d;
    }
    return num / (mx > 1 ? mx : 1);
}

/* ||a-b||_2 / ||b||_2 */
static double l2_err(const real *a, const real *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - (double)b[i];
        num += d * d;
        den += (double)b[i] * (double)b[i];
    }
    if (num != num) return INFINITY;
    return num == 0 ? 0 : sqrt(num / (den + 1e-300));
}

static void shape_str(const vae_param *p, char *out, size_t len) {
    size_t o = (size_t)snprintf(out, len, "[");
    for (int i = 0; i < p->ndim && o < len; i++)
        o += (size_t)snprintf(out + o, len - o, "%s%" PRId64, i ? "," : "", p->shape[i]);
    if (o < len) snprintf(out + o, len - o, "]");
}

/* Synthetic images, quantised to k/255: per image and channel a smooth
 * pattern — two random waves and a random blob through a sigmoid — so that
 * there is structure to learn, every pixel varies across images (no pixel
 * whose gradient is identically zero) and values span (0, 1). */
static void make_images(vae_dataset *ds, int n, vae_shape s, unsigned seed) {
    memset(ds, 0, sizeof *ds);
    ds->n = n, ds->c = s.c, ds->h = s.h, ds->w = s.w;
    const size_t D = (size_t)s.c * s.h * s.w;
    ds->images = test_xmalloc((size_t)n * D);
    double prm[10];
    for (int i = 0; i < n; i++)
        for (int c = 0; c < s.c; c++) {
            test_rand_fill(prm, 10, 0, 1, seed * 7919u + (unsigned)(i * s.c + c));
            const double a0 = 4 * prm[0] - 2, a1 = 3 * prm[1], a2 = 3 * prm[2];
            const double f1 = 0.5 + 2 * prm[3], f2 = 0.5 + 2 * prm[4];
            const double p1 = prm[5], p2 = prm[6], cx = prm[7], cy = prm[8];
            const double sw = 0.08 + 0.2 * prm[9];
            for (int y = 0; y < s.h; y++)
                for (int x = 0; x < s.w; x++) {
                    const double u = (double)x / (s.w - 1), v = (double)y / (s.h - 1);
                    const double r2 = (u - cx) * (u - cx) + (v - cy) * (v - cy);
                    const double t = a0 + a1 * sin(2 * M_PI * (f1 * u + p1)) +
                                     a2 * cos(2 * M_PI * (f2 * v + p2)) +
                                     5 * exp(-r2 / (2 * sw * sw));
                    const double val = 1 / (1 + exp(-t));
                    ds->images[(size_t)i * D + ((size_t)c * s.h + y) * s.w + x] =
                        (uint8_t)lrint(val * 255);
                }
        }
}

/* The least loss per image a perfect reconstruction could have: for the
 * Bernoulli likelihood on targets in [0, 1] the mean over the images of
 * sum_d H(x_d), for the Gaussian D/2 log(2 pi sigma^2). */
static double loss_floor(const vae_config *cfg, const vae_dataset *ds) {
    const size_t D = (size_t)ds->c * ds->h * ds->w;
    if (cfg->likelihood == VAE_LIK_GAUSSIAN)
        return 0.5 * (double)D * log(2 * M_PI * (double)cfg->sigma * cfg->sigma);
    double h[256], sum = 0;
    for (int k = 0; k < 256; k++) {
        double x = k / 255.0;
        h[k] = (k == 0 || k == 255) ? 0 : -(x * log(x) + (1 - x) * log1p(-x));
    }
    for (size_t i = 0; i < (size_t)ds->n * D; i++) sum += h[ds->images[i]];
    return sum / ds->n;
}

/* ------------------------------------------------- the training step */

/* Steps go through train.c's own vae_stepper: vae_stepper_grad (gather and
 * forward/backward of step s from the values vae_step_vals_at gives, in the
 * model's aux_vals) for the instrumented steps below, which read the step's
 * sums before Adam; vae_stepper_run (step_begin on the device, graphs where
 * the backend has them) for part 3's runs exactly as vae_train issues them. */
static void stepper_init(vae_stepper *T, vae_model *m, vae_dev_data *dd, int graphs) {
    if (vae_stepper_init(T, m, dd, 0, 0, graphs) != VAE_OK) {
        fprintf(stderr, "%s\n", vae_error_get());
        exit(1);
    }
}

/* The state a run segment starts from: acc and state zeroed (with their
 * snapshot copies), as vae_model_create leaves them. */
static void reset_bookkeeping(vae_model *m) {
    m->be->zero(m->be, m->acc, 2 * VAE_ACC_N * sizeof(double));
    m->be->zero(m->be, m->state, 2 * VAE_STEP_STATE_N * sizeof(int));
}

/* VAE_TEST_CPU_VS_CPU=ulp: moves every parameter the device is given by
 * about an ulp, so that the comparisons see differences of the size that
 * CPU vs CUDA rounding makes (otherwise a no-op). */
static void perturb(real *p, size_t n) {
    if (!g_perturb) return;
    for (size_t i = 0; i < n; i++)
        p[i] = (real)((double)p[i] * (1 + (((i * 2654435761u) >> 9) & 1 ? 1.2e-7 : -1.2e-7)));
}

/* Parameters := host copy p, Adam moments zeroed. */
static void set_params(vae_model *m, const real *p) {
    const size_t P = m->n_real * sizeof(real);
    m->be->upload(m->be, m->p, p, P);
    m->be->zero(m->be, m->m, P);
    m->be->zero(m->be, m->v, P);
}

/* ---------------------------------------------------------- one step */

/* ReLU outputs on opposite sides of the kink on the two backends: inputs
 * within rounding of 0, where each side is right. Returns their number. An
 * output that differs so but is not tiny is a real disagreement. */
static int relu_ties(const char *cname, const char *when, vae_model *mr, vae_model *md, int B) {
    int ties = 0;
    for (int part = 0; part < 2; part++) {
        vae_layer *lr = part ? mr->dec : mr->enc, *ld = part ? md->dec : md->enc;
        const int nl = part ? mr->n_dec : mr->n_enc;
        for (int i = 0; i < nl; i++) {
            const vae_layer_kind k = lr[i].spec.kind;
            if (k != VAE_LAYER_RELU && k != VAE_LAYER_LEAKY_RELU) continue;
            const size_t cnt = (size_t)B * vae_shape_count(lr[i].spec.out_shape);
            real *a = fetch(g_ref, lr[i].out, cnt), *b = fetch(g_dev, ld[i].out, cnt);
            double mx = max_abs(a, cnt), worst = 0;
            int t = 0;
            for (size_t j = 0; j < cnt; j++)
                if ((a[j] > 0) != (b[j] > 0)) {
                    t++;
                    worst = fmax(worst, fmax(fabs((double)a[j]), fabs((double)b[j])));
                }
            if (t)
                printf("  [%s] %s: %s.%d: %d activation(s) on opposite sides of the kink (|x| <= "
                       "%.2e of the layer's max %.3g)\n",
                       cname, when, part ? "decoder" : "encoder", i, t, worst / mx, mx);
            CHECK_MSG(worst <= TOL_TIE_SIZE * mx,
                      "[%s] %s: %s.%d: activations differ in sign, up to %.3g (layer max %.3g)",
                      cname, when, part ? "decoder" : "encoder", i, worst, mx);
            ties += t;
            free(a), free(b);
        }
    }
    return ties;
}

/* Forward/backward of training step `step` on both models (same parameters
 * expected) and the comparisons of part 1. */
static void compare_step(const char *cname, const char *when, vae_stepper *Tr, vae_stepper *Td,
                         int64_t step) {
    vae_model *mr = Tr->m, *md = Td->m;
    Tr->perm_epoch = Td->perm_epoch = -1; /* a training run may have placed another shuffle */
    reset_bookkeeping(mr);
    reset_bookkeeping(md);
    const int B = vae_stepper_grad(Tr, step);
    CHECK(vae_stepper_grad(Td, step) == B);
    printf("[%s] one step %s (step %" PRId64 ", %d images, beta %g):\n", cname, when, step + 1, B,
           (double)vae_kl_beta_at(mr->cfg->beta, mr->cfg->kl_warmup_steps, step));

    /* per-sample losses */
    real *rr = fetch(g_ref, mr->recon, (size_t)B), *rd = fetch(g_dev, md->recon, (size_t)B);
    real *kr = fetch(g_ref, mr->kl, (size_t)B), *kd = fetch(g_dev, md->kl, (size_t)B);
    double e_rec = losses_err(rd, rr, (size_t)B), e_kl = losses_err(kd, kr, (size_t)B);
    printf("  per-sample recon err %.2e (|recon| <= %.4g), kl err %.2e (|kl| <= %.4g)\n", e_rec,
           max_abs(rr, (size_t)B), e_kl, max_abs(kr, (size_t)B));
    CHECK_MSG(e_rec <= TOL_SAMPLE, "[%s] %s: per-sample recon error %.3g > %g", cname, when, e_rec,
              TOL_SAMPLE);
    CHECK_MSG(e_kl <= TOL_SAMPLE, "[%s] %s: per-sample KL error %.3g > %g", cname, when, e_kl,
              TOL_SAMPLE);
    if (mr->cfg->type == VAE_MODEL_AE)
        CHECK_MSG(max_abs(kr, (size_t)B) == 0 && max_abs(kd, (size_t)B) == 0,
                  "[%s] autoencoder with a non-zero KL", cname);

    /* the step sums, and that each is the sum of that backend's per-sample values */
    double ar[VAE_ACC_N], ad[VAE_ACC_N], hr = 0, hd = 0, hkr = 0, hkd = 0;
    g_ref->download(g_ref, ar, mr->acc, sizeof ar);
    g_dev->download(g_dev, ad, md->acc, sizeof ad);
    for (int b = 0; b < B; b++) hr += rr[b], hd += rd[b], hkr += kr[b], hkd += kd[b];
    double e_sr = loss_err(ad[VAE_ACC_STEP_RECON], ar[VAE_ACC_STEP_RECON]);
    double e_sk = loss_err(ad[VAE_ACC_STEP_KL], ar[VAE_ACC_STEP_KL]);
    printf("  step sums: recon %.10g (err %.2e), kl %.10g (err %.2e)\n", ar[VAE_ACC_STEP_RECON],
           e_sr, ar[VAE_ACC_STEP_KL], e_sk);
    CHECK_MSG(e_sr <= TOL_SAMPLE && e_sk <= TOL_SAMPLE,
              "[%s] %s: step sums recon %.10g vs %.10g, kl %.10g vs %.10g", cname, when,
              ad[VAE_ACC_STEP_RECON], ar[VAE_ACC_STEP_RECON], ad[VAE_ACC_STEP_KL],
              ar[VAE_ACC_STEP_KL]);
    CHECK_MSG(rel(ar[VAE_ACC_STEP_RECON], hr) <= 1e-9 && rel(ad[VAE_ACC_STEP_RECON], hd) <= 1e-9 &&
                  fabs(ar[VAE_ACC_STEP_KL] - hkr) <= 1e-9 * fabs(hkr) &&
                  fabs(ad[VAE_ACC_STEP_KL] - hkd) <= 1e-9 * fabs(hkd),
              "[%s] %s: acc step slots are not the sums of m->recon / m->kl", cname, when);
    for (int i = 0; i < VAE_ACC_N; i++)
        if (i != VAE_ACC_STEP_RECON && i != VAE_ACC_STEP_KL)
            CHECK_MSG(ad[i] == 0 && ar[i] == 0, "[%s] %s: acc[%d] = %g (dev) / %g (ref) after "
                      "forward_backward, expected 0", cname, when, i, ad[i], ar[i]);
    free(rr), free(rd), free(kr), free(kd);

    /* activations: the encoder head and the decoder output */
    size_t nh = (size_t)B * mr->head_out, no = (size_t)B * mr->D;
    real *hr_ = fetch(g_ref, vae_model_head(mr), nh), *hd_ = fetch(g_dev, vae_model_head(md), nh);
    real *or_ = fetch(g_ref, vae_model_output(mr), no);
    real *od = fetch(g_dev, vae_model_output(md), no);
    double e_h = test_norm_err(hd_, hr_, nh), e_o = test_norm_err(od, or_, no);
    printf("  head err %.2e, decoder output err %.2e\n", e_h, e_o);
    CHECK_MSG(e_h <= TOL_ACT, "[%s] %s: head error %.3g > %g", cname, when, e_h, TOL_ACT);
    CHECK_MSG(e_o <= TOL_ACT, "[%s] %s: decoder output error %.3g > %g", cname, when, e_o, TOL_ACT);
    free(hr_), free(hd_), free(or_), free(od);

    /* every gradient tensor; a ReLU tie moves one sample's term of the rows
     * it feeds (see the header), so with one the check only catches garbage */
    const int ties = relu_ties(cname, when, mr, md, B);
    const double tol = ties ? TOL_TIE : TOL_GRAD;
    if (ties)
        printf("  NOTE: %d ReLU tie(s) this step: gradient tolerance %g instead of %g\n", ties, tol,
               TOL_GRAD);
    real *gr = fetch(g_ref, mr->g, mr->n_real), *gd = fetch(g_dev, md->g, md->n_real);
    double worst = 0;
    const char *worst_name = "";
    for (int t = 0; t < mr->n_params; t++) {
        const vae_param *p = &mr->params[t];
        char shp[64];
        shape_str(p, shp, sizeof shp);
        double e = test_norm_err(gd + p->offset, gr + p->offset, p->count);
        double mx = max_abs(gr + p->offset, p->count);
        printf("  grad %-18s %-16s max|g| %.3e  err %.2e\n", p->name, shp, mx, e);
        CHECK_MSG(e <= tol, "[%s] %s: gradient of %s: error %.3g > %g (max|g| %.3g)", cname,
                  when, p->name, e, tol, mx);
        CHECK_MSG(mx > 0, "[%s] %s: gradient of %s is all zero", cname, when, p->name);
        if (e > worst) worst = e, worst_name = p->name;
    }
    printf("  worst gradient error %.2e (%s), tolerance %g\n", worst, worst_name, tol);
    free(gr), free(gd);
    reset_bookkeeping(mr);
    reset_bookkeeping(md);
}

/* ------------------------------------------------------------ 100 steps */

typedef struct {
    double loss[STEPS]; /* nelbo per image of each step (recon + kl, beta = 1) */
    double epoch_mean[STEPS];
    int n_epochs;
} curve;

/* One backend's run, a step at a time. */
typedef struct {
    const char *cname;
    vae_model *m;
    vae_stepper T;
    curve *c;
    double sum_rec, sum_kl; /* the epoch's step sums, added up on the host */
    int64_t images;
} runner;

static void run_begin(runner *r, const char *cname, vae_model *m, vae_dev_data *dd, curve *c) {
    memset(r, 0, sizeof *r);
    r->cname = cname;
    r->m = m;
    r->c = c;
    stepper_init(&r->T, m, dd, 0);
    reset_bookkeeping(m);
    memset(c, 0, sizeof *c);
}

/* Step s as vae_train runs it (its values from the host, in aux_vals, rather
 * than from step_begin: the same bits, vae_step_vals_at), with the step's
 * sums read before Adam; returns its batch rows. */
static int run_step(runner *r, int64_t s) {
    vae_model *m = r->m;
    vae_backend *be = m->be;
    const vae_config *cfg = m->cfg;
    curve *c = r->c;
    const int bn = vae_stepper_grad(&r->T, s);
    double a[VAE_ACC_N];
    be->download(be, a, m->acc, sizeof a);
    c->loss[s] = (a[VAE_ACC_STEP_RECON] + a[VAE_ACC_STEP_KL]) / bn;
    r->sum_rec += a[VAE_ACC_STEP_RECON];
    r->sum_kl += a[VAE_ACC_STEP_KL];
    r->images += bn;
    vae_model_adam(m, cfg, (real)cfg->lr, m->aux_vals);
    be->step_commit(be, m->acc, m->state, m->aux_vals, 0);
    if ((s + 1) % r->T.spe == 0 || s + 1 == STEPS) {
        int st[VAE_STEP_STATE_N];
        be->download(be, a, m->acc, sizeof a);
        be->download(be, st, m->state, sizeof st);
        CHECK_MSG(st[VAE_STEP_FLAGS] == 0 && st[VAE_STEP_NBAD] == 0,
                  "[%s] %s: step %" PRId64 ": flags %d, %d bad steps", r->cname, be->name, s + 1,
                  st[VAE_STEP_FLAGS], st[VAE_STEP_NBAD]);
        CHECK_MSG(a[VAE_ACC_IMAGES] == (double)r->images &&
                      rel(a[VAE_ACC_RECON], r->sum_rec) <= 1e-12 &&
                      fabs(a[VAE_ACC_KL] - r->sum_kl) <= 1e-12 * fabs(r->sum_kl) &&
                      a[VAE_ACC_STEP_RECON] == 0 && a[VAE_ACC_STEP_KL] == 0,
                  "[%s] %s: epoch bookkeeping at step %" PRId64 ": images %g (expected %" PRId64
                  "), recon %.17g (expected %.17g), kl %.17g (expected %.17g)",
                  r->cname, be->name, s + 1, a[VAE_ACC_IMAGES], r->images, a[VAE_ACC_RECON],
                  r->sum_rec, a[VAE_ACC_KL], r->sum_kl);
        c->epoch_mean[c->n_epochs++] = (a[VAE_ACC_RECON] + a[VAE_ACC_KL]) / a[VAE_ACC_IMAGES];
        be->zero(be, m->acc + VAE_ACC_RECON, 3 * sizeof(double)); /* as the trainer does */
        r->sum_rec = r->sum_kl = 0;
        r->images = 0;
    }
    return bn;
}

static void run_end(runner *r) { vae_stepper_free(&r->T); }

/* STEPS steps through vae_stepper_run, as vae_train issues them, with the
 * epoch means read at each epoch's end into c->epoch_mean (c->loss is not
 * filled: a step's sums are not read). *captured: graphs made. Returns
 * whether the backend has graphs. */
static int stepper_train(vae_model *m, vae_dev_data *dd, int graphs, curve *c, int *captured) {
    vae_backend *be = m->be;
    vae_stepper T;
    stepper_init(&T, m, dd, graphs);
    reset_bookkeeping(m);
    memset(c, 0, sizeof *c);
    for (int64_t s = 0; s < STEPS; s++) {
        vae_stepper_run(&T, s);
        if ((s + 1) % T.spe == 0 || s + 1 == STEPS) {
            double a[VAE_ACC_N];
            be->download(be, a, m->acc, sizeof a);
            c->epoch_mean[c->n_epochs++] = (a[VAE_ACC_RECON] + a[VAE_ACC_KL]) / a[VAE_ACC_IMAGES];
            be->zero(be, m->acc + VAE_ACC_RECON, 3 * sizeof(double));
        }
    }
    *captured = (T.graph[0] != NULL) + (T.graph[1] != NULL);
    const int has = graphs && be->graph_capture != NULL;
    vae_stepper_free(&T);
    return has;
}

/* STEPS training steps from the model's current parameters and moments, as
 * vae_train runs them; the step sums are read before each step_commit (the
 * trainer reads less often; reading changes nothing), the bookkeeping at
 * each epoch's end, whose sums are then reset as the trainer does. */
static void train_run(const char *cname, vae_model *m, vae_dev_data *dd, curve *c) {
    runner r;
    run_begin(&r, cname, m, dd, c);
    for (int64_t s = 0; s < STEPS; s++) run_step(&r, s);
    run_end(&r);
}

/* The reference's STEPS steps (its free run, into *cr) with the device in
 * lockstep: before each step the device is given the reference's parameters
 * and moments, so that every step is compared from the same state, free of
 * the divergence that free runs accumulate: the step's loss, every tensor's
 * Adam update (||dp_dev - dp_ref|| / ||dp_ref||) and its new moments (relative
 * to their max). A step with a ReLU tie (see compare_step) is held only to
 * "no garbage". */
static void train_lockstep(const char *cn, vae_model *mr, vae_dev_data *tr, vae_model *md,
                           vae_dev_data *td, curve *cr, curve *cs) {
    const size_t n = mr->n_real, P = n * sizeof(real);
    runner rr, rd;
    run_begin(&rr, cn, mr, tr, cr);
    run_begin(&rd, cn, md, td, cs);
    real *pre = test_xmalloc(3 * P), *a = test_xmalloc(3 * P), *b = test_xmalloc(3 * P);
    double w_loss = 0, w_upd = 0, w_mom = 0;
    int64_t s_loss = 0, s_upd = 0, s_mom = 0;
    const char *n_upd = "", *n_mom = "";
    int tie_steps = 0;
    for (int64_t s = 0; s < STEPS; s++) {
        mr->be->download(mr->be, pre, mr->p, P);
        mr->be->download(mr->be, pre + n, mr->m, P);
        mr->be->download(mr->be, pre + 2 * n, mr->v, P);
        memcpy(b, pre, P);
        perturb(b, n);
        md->be->upload(md->be, md->p, b, P);
        md->be->upload(md->be, md->m, pre + n, P);
        md->be->upload(md->be, md->v, pre + 2 * n, P);
        const int bn = run_step(&rr, s);
        CHECK(run_step(&rd, s) == bn);
        char when[48];
        snprintf(when, sizeof when, "lockstep step %" PRId64, s + 1);
        const int ties = relu_ties(cn, when, mr, md, bn);
        tie_steps += ties > 0;
        const double tol_u = ties ? TOL_TIE : TOL_UPDATE, tol_m = ties ? TOL_TIE : TOL_MOMENT;
        const double el = loss_err(cs->loss[s], cr->loss[s]);
        CHECK_MSG(el <= TOL_SAMPLE, "[%s] %s: loss %.9g vs %.9g", cn, when, cs->loss[s],
                  cr->loss[s]);
        if (!(el <= w_loss)) w_loss = el, s_loss = s;
        mr->be->download(mr->be, a, mr->p, P);
        mr->be->download(mr->be, a + n, mr->m, P);
        mr->be->download(mr->be, a + 2 * n, mr->v, P);
        md->be->download(md->be, b, md->p, P);
        md->be->download(md->be, b + n, md->m, P);
        md->be->download(md->be, b + 2 * n, md->v, P);
        for (int t = 0; t < mr->n_params; t++) {
            const vae_param *p = &mr->params[t];
            const size_t o = p->offset, k = p->count;
            double num = 0;
            for (size_t i = 0; i < k; i++) {
                const double d = (double)b[o + i] - (double)a[o + i];
                num += d * d;
            }
            double eu = sqrt(num / (double)k) / (double)mr->cfg->lr;
            if (eu != eu) eu = INFINITY;
            const double em = fmax(test_norm_err(b + n + o, a + n + o, k),
                                   test_norm_err(b + 2 * n + o, a + 2 * n + o, k));
            CHECK_MSG(eu <= tol_u, "[%s] %s: Adam update of %s: rms(a-b) / lr = %.3g > %g", cn,
                      when, p->name, eu, tol_u);
            CHECK_MSG(em <= tol_m, "[%s] %s: Adam moments of %s: error %.3g > %g", cn, when,
                      p->name, em, tol_m);
            if (!ties && !(eu <= w_upd)) w_upd = eu, s_upd = s, n_upd = p->name;
            if (!ties && !(em <= w_mom)) w_mom = em, s_mom = s, n_mom = p->name;
        }
    }
    printf("[%s] %d steps in lockstep: worst loss error %.2e (step %" PRId64 "), Adam update "
           "%.2e (%s, step %" PRId64 "), moments %.2e (%s, step %" PRId64 "); %d step(s) with a "
           "ReLU tie\n",
           cn, STEPS, w_loss, s_loss + 1, w_upd, n_upd, s_upd + 1, w_mom, n_mom, s_mom + 1,
           tie_steps);
    free(pre), free(a), free(b);
    run_end(&rr);
    run_end(&rd);
}

/* All of a model's optimizer state, downloaded. */
typedef struct {
    real *p, *m, *v;
} snapshot;

static void snap_take(snapshot *s, vae_model *m) {
    s->p = fetch(m->be, m->p, m->n_real);
    s->m = fetch(m->be, m->m, m->n_real);
    s->v = fetch(m->be, m->v, m->n_real);
}
static void snap_free(snapshot *s) {
    free(s->p), free(s->m), free(s->v);
    memset(s, 0, sizeof *s);
}
static int snap_equal(const snapshot *a, const snapshot *b, size_t n) {
    return memcmp(a->p, b->p, n * sizeof(real)) == 0 && memcmp(a->m, b->m, n * sizeof(real)) == 0 &&
           memcmp(a->v, b->v, n * sizeof(real)) == 0;
}

/* Evaluation of two models (same config) on their test data: the ELBO with
 * the evaluation noise and, for a VAE, the IW bound. */
static void compare_eval(const char *cname, const char *when, vae_model *mr, vae_dev_data *tr,
                         vae_model *md, vae_dev_data *td, int same_params) {
    const double tol = same_params ? TOL_SAMPLE : TOL_CURVE;
    const uint64_t seed = mr->cfg->seed;
    const int k = mr->cfg->type == VAE_MODEL_VAE ? IW_K : 0;
    vae_eval_result er, ed;
    CHECK(vae_evaluate(mr, tr, seed, k, &er) == VAE_OK);
    CHECK(vae_evaluate(md, td, seed, k, &ed) == VAE_OK);
    /* at equal parameters each figure against itself (floor 1 nat); at
     * different ones against the loss (the KL, a few nats of hundreds, moves
     * with the parameters) */
    const double sc = same_params ? 0 : fabs(er.nelbo);
    double e[4] = {fabs(ed.nelbo - er.nelbo) / fmax(1, fmax(sc, fabs(er.nelbo))),
                   fabs(ed.recon - er.recon) / fmax(1, fmax(sc, fabs(er.recon))),
                   fabs(ed.kl - er.kl) / fmax(1, fmax(sc, fabs(er.kl))),
                   k ? fabs(ed.iw_nll - er.iw_nll) / fmax(1, fmax(sc, fabs(er.iw_nll))) : 0};
    for (int i = 0; i < 4; i++)
        if (e[i] != e[i]) e[i] = INFINITY;
    printf("[%s] evaluation %s: nelbo %.6f / %.6f (err %.2e), recon err %.2e, kl %.6f (err "
           "%.2e)",
           cname, when, er.nelbo, ed.nelbo, e[0], e[1], er.kl, e[2]);
    if (k) printf(", iw-%d nll %.6f (err %.2e)", k, er.iw_nll, e[3]);
    printf("\n");
    static const char *what[4] = {"nelbo", "recon", "kl", "iw_nll"};
    for (int i = 0; i < 4; i++)
        CHECK_MSG(e[i] <= tol, "[%s] evaluation %s: %s error %.3g > %g", cname, when, what[i], e[i],
                  tol);
    CHECK(er.n == N_TEST && ed.n == N_TEST);
    CHECK(isfinite(er.nelbo) && (k == 0 || isfinite(er.iw_nll)));
    if (mr->cfg->likelihood == VAE_LIK_GAUSSIAN && same_params) /* else recon says it */
        CHECK_MSG(rel(ed.mse, er.mse) <= TOL(1e-4), "[%s] evaluation %s: mse %.9g vs %.9g", cname,
                  when, ed.mse, er.mse);
}

/* ------------------------------------------------------------ one config */

/* A model and its data on one backend. */
typedef struct {
    vae_model m;
    vae_dev_data train, test;
} rig;

static int rig_make(rig *r, const vae_config *cfg, vae_backend *be, const vae_dataset *train,
                    const vae_dataset *test) {
    memset(r, 0, sizeof *r);
    if (vae_model_create(&r->m, cfg, be, cfg->batch) || vae_dev_data_upload(&r->train, be, train) ||
        vae_dev_data_upload(&r->test, be, test)) {
        fprintf(stderr, "%s: %s\n", be->name, vae_error_get());
        return 1;
    }
    return 0;
}

static void rig_free(rig *r) {
    vae_backend *be = r->m.be;
    if (!be) return;
    /* reverse order of allocation (the CUDA arena frees LIFO) */
    vae_dev_data_free(&r->test, be);
    vae_dev_data_free(&r->train, be);
    vae_model_free(&r->m);
    be->sync(be);
}

static void run_case(const tcase *tc, unsigned data_seed) {
    const char *cn = tc->name;
    vae_config cfg;
    vae_config_defaults(&cfg);
    if (vae_config_parse(&cfg, tc->ini, cn)) {
        fprintf(stderr, "%s\n", vae_error_get());
        CHECK(0);
        return;
    }
    vae_dataset train, test;
    make_images(&train, N_TRAIN, cfg.input, data_seed);
    make_images(&test, N_TEST, cfg.input, data_seed + 1000);

    rig R, G;
    if (rig_make(&R, &cfg, g_ref, &train, &test) || rig_make(&G, &cfg, g_dev, &train, &test)) {
        CHECK(0);
        exit(1);
    }
    vae_model *mr = &R.m, *md = &G.m;
    const size_t n = mr->n_real;
    CHECK(md->n_real == n && md->n_params == mr->n_params);
    printf("\n[%s] %zu parameters in %d tensors, batch %d, %d train / %d test images, %d steps\n",
           cn, n, mr->n_params, cfg.batch, N_TRAIN, N_TEST, STEPS);

    /* the same start on both: initialised on the CPU, copied */
    vae_model_init_params(mr, cfg.seed);
    real *p0d = fetch(g_ref, mr->p, n); /* the device's start: the same, or 1 ulp off */
    perturb(p0d, n);
    set_params(md, p0d);

    /* 1. one step at the initial parameters */
    vae_stepper Tr, Td;
    stepper_init(&Tr, mr, &R.train, 0);
    stepper_init(&Td, md, &G.train, 0);
    compare_step(cn, "at init", &Tr, &Td, 0);

    /* 2. 100 steps: the reference's run with the device in lockstep, then
     * the device's own run from its start */
    static curve cr, cs, cd, cd2, ch[2];
    double t0 = vae_now();
    train_lockstep(cn, mr, &R.train, md, &G.train, &cr, &cs);
    double t1 = vae_now();
    set_params(md, p0d);
    train_run(cn, md, &G.train, &cd);
    g_dev->sync(g_dev);
    double t2 = vae_now();
    printf("[%s] %d steps: lockstep (both) %.2f s, %s alone %.2f s\n", cn, STEPS, t1 - t0,
           g_dev->name, t2 - t1);
    double worst = 0;
    int worst_s = 0;
    for (int s = 0; s < STEPS; s++) {
        double e = rel(cd.loss[s], cr.loss[s]);
        if (!(e <= worst)) worst = e, worst_s = s;
    }
    printf("[%s] loss curve (%s / %s, rel err):", cn, g_ref->name, g_dev->name);
    static const int show[] = {0, 1, 9, 49, STEPS - 1};
    for (int i = 0; i < 5; i++)
        printf("  step %d %.4f/%.4f %.1e", show[i] + 1, cr.loss[show[i]], cd.loss[show[i]],
               rel(cd.loss[show[i]], cr.loss[show[i]]));
    printf("\n[%s] worst loss error %.2e at step %d (tolerance %g)\n", cn, worst, worst_s + 1,
           TOL_CURVE);
    CHECK_MSG(worst <= TOL_CURVE, "[%s] loss at step %d: %.9g (%s) vs %.9g (%s): error %.3g > %g",
              cn, worst_s + 1, cd.loss[worst_s], g_dev->name, cr.loss[worst_s], g_ref->name,
              worst, TOL_CURVE);
    CHECK_MSG(rel(cd.loss[0], cr.loss[0]) <= TOL_SAMPLE, "[%s] loss at step 1: error %.3g > %g", cn,
              rel(cd.loss[0], cr.loss[0]), TOL_SAMPLE);
    const int spe = (N_TRAIN + cfg.batch - 1) / cfg.batch;
    CHECK(cr.n_epochs == cd.n_epochs && cr.n_epochs == (STEPS + spe - 1) / spe);
    double we = 0;
    for (int i = 0; i < cr.n_epochs && i < cd.n_epochs; i++) {
        double e = rel(cd.epoch_mean[i], cr.epoch_mean[i]);
        if (!(e <= we)) we = e;
    }
    CHECK_MSG(we <= TOL_CURVE, "[%s] epoch means: error %.3g > %g", cn, we, TOL_CURVE);
    /* training happens: the loss above its floor (the least a perfect
     * reconstruction costs: the images' mean Bernoulli entropy, or the
     * Gaussian's D/2 log(2 pi sigma^2)), the last full epoch's mean against
     * step 1's, falls to at most TRAIN_DROP */
    const int last = STEPS / spe - 1;
    const double c0 = loss_floor(&cfg, &train);
    const double dr = (cr.epoch_mean[last] - c0) / (cr.loss[0] - c0);
    const double dd = (cd.epoch_mean[last] - c0) / (cd.loss[0] - c0);
    printf("[%s] loss above its floor %.4f: step 1 %.4f, last full epoch (%d) %.4f, ratio %.3f "
           "(%s); %.4f, %.4f, %.3f (%s)\n",
           cn, c0, cr.loss[0] - c0, last + 1, cr.epoch_mean[last] - c0, dr, g_ref->name,
           cd.loss[0] - c0, cd.epoch_mean[last] - c0, dd, g_dev->name);
    CHECK_MSG(dr < TRAIN_DROP && dd < TRAIN_DROP,
              "[%s] training does not reduce the loss: its excess over the floor falls to %.3f "
              "(%s), %.3f (%s) of step 1's, expected < %g", cn, dr, g_ref->name, dd, g_dev->name,
              TRAIN_DROP);

    /* final parameters */
    snapshot sr, sd;
    snap_take(&sr, mr);
    snap_take(&sd, md);
    double wp = 0, wm = 0;
    const char *wp_name = "", *wm_name = "";
    for (int t = 0; t < mr->n_params; t++) {
        const vae_param *p = &mr->params[t];
        double e = l2_err(sd.p + p->offset, sr.p + p->offset, p->count);
        double em = test_norm_err(sd.p + p->offset, sr.p + p->offset, p->count);
        CHECK_MSG(e <= TOL_PARAM,
                  "[%s] final %s: ||a-b|| / ||b|| = %.3g > %g (max-norm error %.3g)",
                  cn, p->name, e, TOL_PARAM, em);
        if (!(e <= wp)) wp = e, wp_name = p->name;
        if (!(em <= wm)) wm = em, wm_name = p->name;
    }
    printf("[%s] final parameters: worst ||a-b||/||b|| %.2e (%s), tolerance %g; worst "
           "max|a-b|/max|b| %.2e (%s), not checked\n",
           cn, wp, wp_name, TOL_PARAM, wm, wm_name);

    /* evaluation, each at its own parameters */
    compare_eval(cn, "after training", mr, &R.test, md, &G.test, 0);

    /* 1 again, and the evaluator, at identical (the CPU's trained) parameters */
    real *pt = fetch(g_ref, mr->p, n);
    perturb(pt, n);
    set_params(md, pt);
    free(pt);
    compare_step(cn, "after training, at the CPU's parameters", &Tr, &Td, STEPS);
    compare_eval(cn, "at the CPU's trained parameters", mr, &R.test, md, &G.test, 1);

    /* 3. determinism: the same run again on the same backend */
    set_params(md, p0d);
    train_run(cn, md, &G.train, &cd2);
    snapshot s2;
    snap_take(&s2, md);
    int same = snap_equal(&sd, &s2, n) && memcmp(cd.loss, cd2.loss, sizeof cd.loss) == 0;
    printf("[%s] %s rerun from the same start: %s\n", cn, g_dev->name,
           same ? "bit-identical" : "DIFFERS");
    CHECK_MSG(same, "[%s] two %d-step runs on the same %s backend differ", cn, STEPS, g_dev->name);
    snap_free(&s2);

    /* ... and as vae_train issues it (vae_stepper_run: step_begin on the
     * device, with and without graphs): the same kernels on the same values,
     * so bit-identical to the instrumented run */
    for (int graphs = 0; graphs < 2; graphs++) {
        if (graphs && !g_dev->graph_capture) {
            printf("[%s] %s, vae_stepper_run with graphs: the same run (no graphs on this "
                   "backend)\n", cn, g_dev->name);
            break;
        }
        set_params(md, p0d);
        int captured = 0;
        const int has = stepper_train(md, &G.train, graphs, &cd2, &captured);
        snapshot s3;
        snap_take(&s3, md);
        same = snap_equal(&sd, &s3, n) &&
               memcmp(cd.epoch_mean, cd2.epoch_mean, sizeof cd.epoch_mean) == 0 &&
               cd.n_epochs == cd2.n_epochs;
        printf("[%s] %s, vae_stepper_run %s: %s to the instrumented run\n", cn, g_dev->name,
               !graphs ? "without graphs" : has ? (captured == 2 ? "with 2 graphs (full and short batch)" : "with graphs, NOT CAPTURED")
                                                : "(no graphs on this backend)",
               same ? "bit-identical" : "NOT bit-identical");
        CHECK_MSG(same, "[%s] vae_stepper_run (graphs %d) differs from the instrumented run", cn, graphs);
        if (graphs && has) CHECK_MSG(captured == 2, "[%s] %d of 2 graphs captured", cn, captured);
        snap_free(&s3);
    }

    /* ... and on two fresh backends with the heuristic algorithm choice (not
     * in the emulator, whose convolutions are the CPU's: no choice to make) */
    snapshot sh[2];
    for (int i = 0; i < 2 && !g_emu; i++) {
        rig H;
        if (rig_make(&H, &cfg, g_heu[i], &train, &test)) {
            CHECK(0);
            exit(1);
        }
        set_params(&H.m, p0d);
        train_run(cn, &H.m, &H.train, &ch[i]);
        snap_take(&sh[i], &H.m);
        rig_free(&H);
    }
    if (!g_emu) {
        same = snap_equal(&sh[0], &sh[1], n) &&
               memcmp(ch[0].loss, ch[1].loss, sizeof ch[0].loss) == 0;
        printf("[%s] two fresh %s backends (VAE_CUDNN_ALGO=heuristic; side stream %s / %s): "
               "%s; %s the first run\n",
               cn, g_dev->name, g_heu[0]->side_begin ? "on" : "off",
               g_heu[1]->side_begin ? "on" : "off", same ? "bit-identical" : "DIFFER",
               snap_equal(&sh[0], &sd, n) ? "also bit-identical to" : "not bit-identical to");
        CHECK_MSG(same, "[%s] two fresh %s backends with heuristic algorithm choice differ", cn,
                  g_dev->name);
        snap_free(&sh[0]);
        snap_free(&sh[1]);
    }

    snap_free(&sr);
    snap_free(&sd);
    vae_stepper_free(&Tr);
    vae_stepper_free(&Td);
    free(p0d);
    rig_free(&G);
    rig_free(&R);
    vae_dataset_free(&test);
    vae_dataset_free(&train);
    vae_config_free(&cfg);
}

/* ------------------------------------------------------------ main */

/* 1 if `name` is one of the comma-separated words of `list` */
static int name_listed(const char *list, const char *name) {
    const size_t n = strlen(name);
    for (const char *p = list; *p;) {
        const size_t len = strcspn(p, ",");
        if (len == n && strncmp(p, name, n) == 0) return 1;
        p += len;
        if (*p == ',') p++;
    }
    return 0;
}

static vae_backend *dev_create(void) {
    vae_backend *be = NULL;
    if (g_cpu_mode) {
        be = vae_backend_cpu_create(0);
    } else if (g_emu) {
#ifdef VAE_TEST_HAVE_EMU
        be = vae_backend_emu_create();
#endif
    } else {
#ifdef VAE_HAVE_CUDA
        be = vae_backend_cuda_create(0);
#endif
    }
    if (!be) {
        fprintf(stderr, "creating the backend under test: %s\n", vae_error_get());
        exit(1);
    }
    /* a few MiB per model; the rest of the arena is cuDNN workspace */
    if (be->reserve && be->reserve(be, (size_t)256 << 20) != VAE_OK) {
        fprintf(stderr, "%s reserve: %s\n", be->name, vae_error_get());
        exit(1);
    }
    return be;
}

int main(void) {
    const char *mode = getenv("VAE_TEST_CPU_VS_CPU");
    g_cpu_mode = mode && *mode && strcmp(mode, "0") != 0;
    g_perturb = g_cpu_mode && strcmp(mode, "ulp") == 0;
    g_exact = g_cpu_mode && !g_perturb;
    const char *emu = getenv("VAE_TEST_EMU");
    g_emu = !g_cpu_mode && emu && *emu && strcmp(emu, "0") != 0;
#ifndef VAE_TEST_HAVE_EMU
    if (g_emu) TEST_SKIP("VAE_TEST_EMU: this test was built without the CUDA emulator");
#endif
    if (!g_cpu_mode && !g_emu) {
#ifndef VAE_HAVE_CUDA
        TEST_SKIP("no usable GPU: this build has no CUDA backend "
                  "(VAE_TEST_CPU_VS_CPU=1 runs the comparisons CPU against CPU)");
#else
        char why[512] = "";
        if (!vae_cuda_available(why, sizeof why)) TEST_SKIP("no usable GPU: %s", why);
#endif
    }
    g_ref = vae_backend_cpu_create(0);
    if (!g_ref) {
        fprintf(stderr, "CPU backend: %s\n", vae_error_get());
        return 1;
    }
    const char *algo = getenv("VAE_CUDNN_ALGO");
    printf("reference: cpu; under test: %s%s (cuDNN algorithm choice: %s)\n",
           g_cpu_mode ? "cpu" : g_emu ? "the CUDA kernels in the CPU emulator" : "cuda",
           g_perturb ? " (VAE_TEST_CPU_VS_CPU=ulp: its initial parameters 1 ulp off)"
           : g_cpu_mode ? " (VAE_TEST_CPU_VS_CPU)" : "",
           algo && strcmp(algo, "heuristic") == 0 ? "heuristic" : "by timing");
    g_dev = dev_create();
    /* the backend reads VAE_CUDNN_ALGO when it is created */
    char *saved = algo ? strdup(algo) : NULL;
    setenv("VAE_CUDNN_ALGO", "heuristic", 1);
    g_heu[0] = dev_create();
    /* the second one with the side stream ($VAE_CUDA_SIDE, read at creation)
     * the other way round from the first, so that their comparison also
     * shows that the weight gradients' side segments change no bit */
    const char *side = getenv("VAE_CUDA_SIDE");
    char *saved_side = side ? strdup(side) : NULL;
    setenv("VAE_CUDA_SIDE", side && strcmp(side, "1") == 0 ? "0" : "1", 1);
    g_heu[1] = dev_create();
    if (saved_side) setenv("VAE_CUDA_SIDE", saved_side, 1);
    else unsetenv("VAE_CUDA_SIDE");
    free(saved_side);
    if (saved) setenv("VAE_CUDNN_ALGO", saved, 1);
    else unsetenv("VAE_CUDNN_ALGO");
    free(saved);

    /* VAE_TEST_CASES=a,b,...: only those cases (the slow CPU stand-ins for
     * the GPU run a subset in ctest) */
    const char *only = getenv("VAE_TEST_CASES");
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) {
        if (only && *only && !name_listed(only, CASES[i].name)) {
            printf("[%s] not run (VAE_TEST_CASES=%s)\n", CASES[i].name, only);
            continue;
        }
        run_case(&CASES[i], 500 + (unsigned)i);
    }

    g_heu[1]->destroy(g_heu[1]);
    g_heu[0]->destroy(g_heu[0]);
    g_dev->destroy(g_dev);
    g_ref->destroy(g_ref);
    return test_finish();
}

/* vae_math.h — per-element math shared by the CPU reference (C) and the CUDA
 * kernels (nvcc). Every function here is compiled by both, so the CPU tests
 * exercise exactly the lines the GPU kernels run.
 *
 * Contents
 *   Philox4x32-10 counter-based generator (Salmon et al., SC'11; the
 *   generator behind cuRAND's CURAND_RNG_PSEUDO_PHILOX4_32_10 and
 *   curand_init()/curandStatePhilox4_32_10_t), addressed by
 *   (seed, stream, step, element) — no state to carry between calls.
 *   Standard normals by Box-Muller, in float through our own polynomials and
 *   IEEE-rounded operations only, so C and CUDA give the same bits.
 *   Stable BCE-with-logits, Gaussian NLL, KL(N(mu, e^lv) || N(0,1)),
 *   the reparameterisation z = mu + e^(lv/2) eps, and one Adam element update.
 */
#ifndef VAE_MATH_H
#define VAE_MATH_H

#include "vae_core.h"

#if defined(__CUDACC__)
#define VAE_HD __host__ __device__ __forceinline__
#if !defined(__CUDA_ARCH__)
#include <string.h> /* memcpy in the host pass's vae_float_bits */
#endif
#else
#include <math.h>
#include <string.h>
#define VAE_HD static inline
#endif

#ifdef VAE_REAL_DOUBLE
#define R_EXP exp
#define R_LOG log
#define R_LOG1P log1p
#define R_SQRT sqrt
#define R_FABS fabs
#else
#define R_EXP expf
#define R_LOG logf
#define R_LOG1P log1pf
#define R_SQRT sqrtf
#define R_FABS fabsf
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- Philox */

/* Random streams: each use of randomness has its own tag so that, e.g., the
 * evaluation noise never overlaps the training noise. The tag goes into the
 * top 8 bits of the 64-bit subsequence. */
enum {
    VAE_RNG_TRAIN = 0,  /* reparameterisation noise, subsequence = train step   */
    VAE_RNG_EVAL = 1,   /* eval / importance sampling, subsequence = k-th sample */
    VAE_RNG_PRIOR = 2,  /* prior samples for `vae sample`, subsequence = 0      */
    VAE_RNG_INIT = 3,   /* parameter initialisation, subsequence = tensor index */
    VAE_RNG_SHUFFLE = 4 /* data shuffling, subsequence = epoch                  */
};

typedef struct { uint32_t v[4]; } vae_u32x4;

#define VAE_PHILOX_M0 0xD2511F53u
#define VAE_PHILOX_M1 0xCD9E8D57u
#define VAE_PHILOX_W0 0x9E3779B9u /* golden ratio */
#define VAE_PHILOX_W1 0xBB67AE85u /* sqrt(3) - 1  */

/* One Philox round: two 32x32->64 multiplies, xor with the other words and
 * the key. */
VAE_HD vae_u32x4 vae_philox_round(vae_u32x4 c, uint32_t k0, uint32_t k1) {
    uint64_t p0 = (uint64_t)VAE_PHILOX_M0 * c.v[0];
    uint64_t p1 = (uint64_t)VAE_PHILOX_M1 * c.v[2];
    vae_u32x4 r;
    r.v[0] = (uint32_t)(p1 >> 32) ^ c.v[1] ^ k0;
    r.v[1] = (uint32_t)p1;
    r.v[2] = (uint32_t)(p0 >> 32) ^ c.v[3] ^ k1;
    r.v[3] = (uint32_t)p0;
    return r;
}

/* Philox4x32-10: ten rounds, the key bumped by the Weyl constants between
 * rounds. Matches the Random123 known-answer vectors (tests/test_math.c). */
VAE_HD vae_u32x4 vae_philox4x32_10(vae_u32x4 ctr, uint32_t k0, uint32_t k1) {
    for (int i = 0; i < 9; i++) {
        ctr = vae_philox_round(ctr, k0, k1);
        k0 += VAE_PHILOX_W0;
        k1 += VAE_PHILOX_W1;
    }
    return vae_philox_round(ctr, k0, k1);
}

/* Counter layout as cuRAND's curand_init(seed, subsequence, 4*group):
 * key = seed, counter = {group lo, group hi, subsequence lo, subsequence hi}.
 * subsequence = (stream << 56) | index_in_stream. */
VAE_HD vae_u32x4 vae_philox_block(uint64_t seed, uint32_t stream, uint64_t sub, uint64_t group) {
    uint64_t s = ((uint64_t)stream << 56) | (sub & 0x00FFFFFFFFFFFFFFull);
    vae_u32x4 c;
    c.v[0] = (uint32_t)group;
    c.v[1] = (uint32_t)(group >> 32);
    c.v[2] = (uint32_t)s;
    c.v[3] = (uint32_t)(s >> 32);
    return vae_philox4x32_10(c, (uint32_t)seed, (uint32_t)(seed >> 32));
}

/* Uniform in the open interval (0, 1) from 32 random bits: (x + 1/2) / 2^32. */
VAE_HD double vae_u01(uint32_t x) { return ((double)x + 0.5) * (1.0 / 4294967296.0); }

/* ------------------------------------------------- Box-Muller in float
 *
 * The normals come from one Box-Muller pair per two Philox words (wa, wb):
 *   u = (w + 1/2) 2^-32 in (0, 1),  r = sqrt(-2 ln u_a),  theta = 2 pi u_b,
 *   (r sin theta, r cos theta).
 * It is evaluated in float with the polynomials below rather than libm's or
 * CUDA's logf/sinf/cosf (which differ in the last ulp between C and CUDA, and
 * between CUDA's fast and accurate forms): every operation is one IEEE
 * float operation rounded to nearest (vae_fmul_rn .. vae_fsqrt_rn below; on
 * the device CUDA's __f*_rn intrinsics, which nvcc never contracts into an
 * FMA), so C and CUDA give the same bits by construction. (The host's C is
 * compiled with -ffp-contract=off for the same reason.) Float rather than
 * double: a GPU runs float at 2x (H100/H200) to 64x (workstation cards) the
 * rate of double, and the double log, sin and cos were most of the arithmetic
 * of every kernel that draws noise (a four-normal fill, sm_90 PTX: 682
 * instructions, 256 of them double, before; 327 and none after, counted
 * in a minimal kernel). Error: below 4 FLT_EPSILON |z| (a relative error of
 * 4 x 2^-23, 4 to 8 float ulps): r within 1.34 FLT_EPSILON r and the sine
 * and cosine within 1.63 FLT_EPSILON (each worst case over all 2^32 words),
 * so at most about 3.5 with the product's rounding; the worst pair found is
 * 3.40 (tests/test_math.c checks it against a long-double Box-Muller).
 *
 * ln u. Cut u = 2^e m with m in [sqrt(1/2), sqrt(2)), f = m - 1 exact:
 *   - u < 1/2 (wa < 2^31): u = fma(float(wa), 2^-32, 2^-33), within a float
 *     ulp of (wa + 1/2) 2^-32; e and m from its bits (m in [1/2, 1), doubled
 *     when below sqrt(1/2));
 *   - u >= 1/2: w = 1 - u = (~wa + 1/2) 2^-32 (~wa = 2^32 - 1 - wa), taken
 *     likewise, so that u near 1 keeps its relative precision in w (float(u)
 *     would round the top 2^-25 of (0, 1) to 1): f = -w (e = 0) when
 *     w <= 1 - sqrt(1/2), else f = 1 - 2w (e = -1; 2w is in (0.58, 1], so
 *     the subtraction is exact).
 * ln(1 + f) = 2 atanh(s), s = f / (2 + f) in [-0.172, 0.172]:
 *   2 s (1 + s^2/3 + s^4/5 + s^6/7 + s^8/9), the next term (s^10/11) below
 *   2.2e-9 relative; then ln u = e ln 2 + ln(1 + f), < 0 for every wa.
 *
 * sin and cos of theta. The nearest quarter turn q = round(4 u_b) mod 4 and
 * the rest d = wb - q 2^30 in [-2^29, 2^29) are exact integers:
 * theta = q pi/2 + phi, phi = 2 pi (d + 1/2) 2^-32 in [-pi/4, pi/4]; Taylor
 * polynomials of sin phi to phi^9 and cos phi to phi^10 (next terms below
 * 2e-9), then the quadrant's swap and signs. No range reduction of a float
 * angle, so no loss near multiples of pi/2. */
#if defined(__FAST_MATH__)
/* -ffast-math / -Ofast let the compiler reorder float operations: the CPU's
 * normals would no longer be the GPU's bits */
#error "vae_math.h: build without -ffast-math / -Ofast (the normals' bits)"
#endif
#if defined(__CUDA_ARCH__)
#define vae_fmul_rn(a, b) __fmul_rn(a, b)
#define vae_fadd_rn(a, b) __fadd_rn(a, b)
#define vae_fdiv_rn(a, b) __fdiv_rn(a, b)
#define vae_fmaf_rn(a, b, c) __fmaf_rn(a, b, c)
#define vae_fsqrt_rn(a) __fsqrt_rn(a)
#define vae_float_bits(x) __float_as_uint(x)
#define vae_bits_float(u) __uint_as_float(u)
#else
VAE_HD float vae_fmul_rn(float a, float b) { return a * b; }
VAE_HD float vae_fadd_rn(float a, float b) { return a + b; }
VAE_HD float vae_fdiv_rn(float a, float b) { return a / b; }
VAE_HD float vae_fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
VAE_HD float vae_fsqrt_rn(float a) { return sqrtf(a); }
VAE_HD uint32_t vae_float_bits(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}
VAE_HD float vae_bits_float(uint32_t u) {
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}
#endif

#define VAE_BM_SQRT1_2 0.70710677f /* float(sqrt(1/2)) */
#define VAE_BM_LN2 0.693147182f    /* float(ln 2) */
#define VAE_BM_TURN (6.28318548f * 0x1p-32f) /* float(2 pi) 2^-32, exactly */

/* What a checkpoint records as its noise ("rng" in its metadata): the
 * generator, its addressing and the normals' transform. A resumed run whose
 * checkpoint names another (one written before the float Box-Muller says
 * "philox4x32-10 (seed, step)") continues with other noise than the
 * writer would have drawn; `vae train --resume` says so. */
#define VAE_RNG_NAME "philox4x32-10 (seed, step), float box-muller"

/* ln((wa + 1/2) 2^-32), in float, as above. */
VAE_HD float vae_bm_log_u(uint32_t wa) {
    float f, e;
    if (wa < 0x80000000u) {
        float u = vae_fmaf_rn((float)wa, 0x1p-32f, 0x1p-33f);
        uint32_t b = vae_float_bits(u);
        float m = vae_bits_float((b & 0x007FFFFFu) | 0x3F000000u); /* [1/2, 1) */
        e = (float)((int)(b >> 23) - 126);
        if (m < VAE_BM_SQRT1_2) {
            m = vae_fmul_rn(m, 2.0f);
            e = vae_fadd_rn(e, -1.0f);
        }
        f = vae_fadd_rn(m, -1.0f);
    } else {
        float w = vae_fmaf_rn((float)~wa, 0x1p-32f, 0x1p-33f); /* 1 - u, (0, 1/2] */
        int low = w > 1.0f - VAE_BM_SQRT1_2;
        f = low ? vae_fmaf_rn(-2.0f, w, 1.0f) : -w;
        e = low ? -1.0f : 0.0f;
    }
    float s = vae_fdiv_rn(f, vae_fadd_rn(2.0f, f));
    float z = vae_fmul_rn(s, s);
    float p = vae_fmaf_rn(z, 0.111111112f, 0.142857149f);
    p = vae_fmaf_rn(z, p, 0.200000003f);
    p = vae_fmaf_rn(z, p, 0.333333343f);
    float s2 = vae_fmul_rn(2.0f, s);
    float l1p = vae_fmaf_rn(s2, vae_fmul_rn(z, p), s2);
    return vae_fmaf_rn(e, VAE_BM_LN2, l1p);
}

/* The Box-Muller pair of words (wa, wb): zs = r sin theta, zc = r cos theta. */
VAE_HD void vae_box_muller(uint32_t wa, uint32_t wb, float *zs, float *zc) {
    float r = vae_fsqrt_rn(vae_fmul_rn(-2.0f, vae_bm_log_u(wa)));
    uint32_t q = ((wb >> 30) + ((wb >> 29) & 1u)) & 3u;
    int32_t d = (int32_t)(wb & 0x3FFFFFFFu) - ((wb & 0x20000000u) ? 0x40000000 : 0);
    float ph = vae_fmaf_rn((float)d, VAE_BM_TURN, 0.5f * VAE_BM_TURN);
    float x2 = vae_fmul_rn(ph, ph);
    float ps = vae_fmaf_rn(x2, 2.75573188e-06f, -0.000198412701f);
    ps = vae_fmaf_rn(x2, ps, 0.00833333377f);
    ps = vae_fmaf_rn(x2, ps, -0.166666672f);
    float sn = vae_fmaf_rn(vae_fmul_rn(ph, x2), ps, ph);
    float pc = vae_fmaf_rn(x2, -2.755732e-07f, 2.48015876e-05f);
    pc = vae_fmaf_rn(x2, pc, -0.00138888892f);
    pc = vae_fmaf_rn(x2, pc, 0.0416666679f);
    pc = vae_fmaf_rn(x2, pc, -0.5f);
    float cs = vae_fmaf_rn(x2, pc, 1.0f);
    float st = (q & 1u) ? cs : sn, ct = (q & 1u) ? sn : cs; /* q odd: swap */
    if (q == 1u || q == 2u) ct = -ct;
    if (q >= 2u) st = -st;
    *zs = vae_fmul_rn(r, st);
    *zc = vae_fmul_rn(r, ct);
}

/* Standard normal number `index` of stream (seed, stream, sub). Each Philox
 * block gives four normals: the Box-Muller pair of words (0,1) -> lanes 0,1
 * and of words (2,3) -> lanes 2,3, sin in the even lane and cos in the odd,
 * as cuRAND's curand_normal4 pairs them. */
VAE_HD real vae_normal_at(uint64_t seed, uint32_t stream, uint64_t sub, uint64_t index) {
    vae_u32x4 b = vae_philox_block(seed, stream, sub, index >> 2);
    int lane = (int)(index & 3);
    float zs, zc;
    vae_box_muller(lane < 2 ? b.v[0] : b.v[2], lane < 2 ? b.v[1] : b.v[3], &zs, &zc);
    return (real)((lane & 1) ? zc : zs);
}

/* The four normals of Philox block `group` at once:
 *   out[j] = vae_normal_at(seed, stream, sub, 4 group + j),  j = 0..3,
 * bit for bit, for one Philox call and two Box-Muller pairs instead of four
 * of each. The kernels that fill consecutive normals use this (tests/test_math.c
 * checks the bit equality). */
VAE_HD void vae_normal4_at(uint64_t seed, uint32_t stream, uint64_t sub, uint64_t group,
                           real out[4]) {
    vae_u32x4 b = vae_philox_block(seed, stream, sub, group);
    float z[4];
    vae_box_muller(b.v[0], b.v[1], &z[0], &z[1]);
    vae_box_muller(b.v[2], b.v[3], &z[2], &z[3]);
    for (int j = 0; j < 4; j++) out[j] = (real)z[j];
}

/* Uniform (0,1) number `index` of stream (seed, stream, sub): one word each. */
VAE_HD double vae_uniform_at(uint64_t seed, uint32_t stream, uint64_t sub, uint64_t index) {
    vae_u32x4 b = vae_philox_block(seed, stream, sub, index >> 2);
    return vae_u01(b.v[index & 3]);
}

/* ---------------------------------------------------------- likelihoods */

/* Logistic sigmoid without overflow for either sign of x. */
VAE_HD real vae_sigmoid(real x) {
    if (x >= 0) return (real)1 / ((real)1 + R_EXP(-x));
    real e = R_EXP(x);
    return e / ((real)1 + e);
}

/* Binary cross-entropy on a logit x against a target t in [0,1]:
 *   l(x,t) = -[t log s(x) + (1-t) log(1 - s(x))] = max(x,0) - x t + log(1 + e^-|x|)
 * which never overflows and keeps precision for large |x|.
 *   dl/dx = s(x) - t. */
VAE_HD real vae_bce_logits(real x, real t) {
    return (x > 0 ? x : (real)0) - x * t + R_LOG1P(R_EXP(-R_FABS(x)));
}
VAE_HD real vae_bce_logits_grad(real x, real t) { return vae_sigmoid(x) - t; }

/* Gaussian negative log-likelihood of t under N(x, sigma^2) without the
 * constant (D/2) log(2 pi sigma^2), which the caller adds per image:
 *   l = (x - t)^2 / (2 sigma^2),   dl/dx = (x - t) / sigma^2. */
VAE_HD real vae_gauss_nll(real x, real t, real inv_var) {
    real d = x - t;
    return (real)0.5 * d * d * inv_var;
}
VAE_HD real vae_gauss_nll_grad(real x, real t, real inv_var) { return (x - t) * inv_var; }

/* ------------------------------------------------------------- latents */

/* KL(N(mu, e^lv) || N(0, 1)) for one latent dimension:
 *   kl = 1/2 (mu^2 + e^lv - 1 - lv),  dkl/dmu = mu,  dkl/dlv = 1/2 (e^lv - 1). */
VAE_HD real vae_kl_term(real mu, real lv) {
    return (real)0.5 * (mu * mu + R_EXP(lv) - (real)1 - lv);
}
VAE_HD real vae_kl_grad_mu(real mu) { return mu; }
VAE_HD real vae_kl_grad_lv(real lv) { return (real)0.5 * (R_EXP(lv) - (real)1); }

/* Reparameterisation z = mu + sigma eps with sigma = e^(lv/2). Backward:
 *   dmu += dz,  dlv += dz * eps * sigma / 2. */
VAE_HD real vae_reparam(real mu, real lv, real eps) { return mu + R_EXP((real)0.5 * lv) * eps; }
VAE_HD real vae_reparam_grad_lv(real dz, real lv, real eps) {
    return dz * eps * (real)0.5 * R_EXP((real)0.5 * lv);
}

/* log q(z|x) - log p(z) for one dimension, where z = mu + sigma eps:
 *   log N(z; mu, sigma^2) - log N(z; 0, 1) = -eps^2/2 - lv/2 + z^2/2
 * (the 1/2 log 2 pi terms cancel). Used by the importance-weighted bound. */
VAE_HD real vae_log_q_minus_log_p(real z, real lv, real eps) {
    return (real)0.5 * (z * z - eps * eps - lv);
}

/* ---------------------------------------------------------------- Adam */

typedef struct {
    real lr, beta1, beta2, eps, weight_decay;
    int decoupled; /* 0: L2 (PyTorch Adam, wd*p added to g); 1: AdamW */
} vae_adam_hp;

/* One Adam step for one parameter, following torch.optim.Adam/AdamW:
 *   g' = gscale*g (+ wd*p for L2);  m = b1 m + (1-b1) g';  v = b2 v + (1-b2) g'^2
 *   p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps)   (AdamW first p *= 1 - lr*wd)
 * gscale carries global-norm clipping (1 when off); bc1 = 1 - beta1^t and
 * bc2 = 1 - beta2^t are the bias corrections of the 1-based step t
 * (vae_step_vals, below). */
VAE_HD void vae_adam_elem(real *p, real g, real *m, real *v, const vae_adam_hp *hp, real bc1,
                          real bc2, real gscale) {
    real w = *p;
    g *= gscale;
    if (hp->weight_decay != 0) {
        if (hp->decoupled) w -= hp->lr * hp->weight_decay * w;
        else g += hp->weight_decay * w;
    }
    real mm = hp->beta1 * *m + ((real)1 - hp->beta1) * g;
    real vv = hp->beta2 * *v + ((real)1 - hp->beta2) * g * g;
    *m = mm;
    *v = vv;
    real denom = R_SQRT(vv) / R_SQRT(bc2) + hp->eps;
    *p = w - (hp->lr / bc1) * mm / denom;
}

/* ---------------------------------------------------- per-step values */

/* What the ops of one training step read besides tensors: a pure function of
 * the 0-based step s and the run's constants (vae_step_plan). The block lives
 * in backend memory, so that a step is issued — or replayed as one captured
 * CUDA graph — with no argument from the host that changes from step to step:
 * step_begin (vae_backend.h) fills the block for step `next` and advances
 * `next`; gather_batch, reparam_forward, kl_backward, log_q_minus_log_p,
 * adam_step and step_commit read it. Evaluation and replays of a past step
 * fill a block on the host (vae_step_vals_at, or by hand) and upload it. */
typedef struct {
    int64_t step;  /* s, the step this block describes */
    int64_t next;  /* the step the next step_begin describes: s + 1 */
    int64_t row0;  /* first row of the step's batch in the index array: (s mod spe) B */
    uint64_t sub;  /* Philox subsequence of the step's noise eps: s */
    int32_t rows;  /* images in the batch: min(B, n - row0) */
    real kl_scale; /* weight of dKL/dhead in kl_backward: beta(s) / rows */
    real bc1, bc2; /* Adam's bias corrections 1 - beta1^(s+1), 1 - beta2^(s+1) */
    real lr_scale; /* the learning-rate schedule's factor (vae_lr_scale_at); 1 = none */
} vae_step_vals;

/* The run's constants that the per-step values are computed from. */
typedef struct {
    int64_t n;           /* training images per epoch */
    int32_t batch;       /* B; an epoch is ceil(n / B) steps, the last maybe short */
    int64_t warmup;      /* KL warm-up steps, 0 for none */
    double beta;         /* KL weight after the warm-up */
    double beta1, beta2; /* Adam's moment decays */
    /* learning-rate schedule (vae_lr_scale_at): VAE_LR_CONSTANT, _COSINE or
     * _LINEAR; warm-up steps; the steps of the whole run; min_lr / lr */
    int32_t lr_schedule;
    int64_t lr_warmup, total_steps;
    double min_lr_ratio;
} vae_step_plan;

enum { VAE_LR_CONSTANT = 0, VAE_LR_COSINE = 1, VAE_LR_LINEAR = 2 };

/* KL weight of step s: beta * (s + 1) / warmup during the warm-up, then beta. */
VAE_HD real vae_kl_beta_at(double beta, int64_t warmup, int64_t s) {
    real b = (real)beta;
    if (warmup > 0 && s < warmup) b *= (real)((double)(s + 1) / (double)warmup);
    return b;
}

/* x^n for n >= 0 by binary powering in double: plain IEEE multiplies (no
 * library pow, no fused operations), so host and device get the same bits.
 * The relative error of x^n is about n/2 ulps of double (each squaring
 * doubles it), so the error of 1 - x^n is about n x^n 2^-53, and relative to
 * 1 - x^n >= n x^(n-1) (1 - x) at most 2^-53 / (x (1 - x)): 1.1e-13 for
 * x = 0.999, 1.1e-12 for 0.9999 — far below the float rounding that follows. */
#ifdef __CUDA_ARCH__
#define VAE_DMUL(a, b) __dmul_rn((a), (b)) /* never fused into an FMA */
#else
#define VAE_DMUL(a, b) ((a) * (b)) /* ISO C11 build: no contraction */
#endif
VAE_HD double vae_pow_int(double x, int64_t n) {
    double r = 1.0;
    while (n > 0) {
        if (n & 1) r = VAE_DMUL(r, x);
        x = VAE_DMUL(x, x);
        n >>= 1;
    }
    return r;
}

/* cos(pi t) for 0 <= t <= 1 in double by its own series, so that host and
 * device get the same bits (a libm cos and CUDA's may differ in the last
 * place): cos(pi t) = sin(pi (1/2 - t)) = sin(y), |y| <= pi/2, by the
 * Taylor series of sin to the y^27 term (the first left out is below
 * (pi/2)^29 / 29! ~ 6e-26), Horner's rule with plain IEEE operations
 * (VAE_DMUL: never fused). Within a few ulps of libm's cos (test_math). */
VAE_HD double vae_cos_pi(double t) {
    const double y = VAE_DMUL(3.141592653589793, 0.5 - t), y2 = VAE_DMUL(y, y);
    double r = 1.0;
    for (int k = 27; k >= 3; k -= 2) r = 1.0 - VAE_DMUL(r, y2) / (double)(k * (k - 1));
    return VAE_DMUL(y, r);
}

/* The learning-rate factor of 0-based step s (the rate is lr times it):
 *   warm-up, s < W:    (s + 1) / W        (1 / W up to 1, as llm.c)
 *   after it:          constant: 1
 *                      cosine:   r + (1 - r) (1 + cos(pi u)) / 2
 *                      linear:   r + (1 - r) (1 - u)
 * with u = (s - W) / (T - W) the fraction of the decay done (T the run's
 * steps; u = 1 from T on, and where T <= W) and r = min_lr / lr. This is
 * PyTorch's SequentialLR of LinearLR(start_factor = 1/W, total_iters =
 * W - 1) and CosineAnnealingLR(T_max = T - W, eta_min = min_lr) or
 * LinearLR(1, r, T - W) (cli_lr_schedule). In double, rounded once. */
VAE_HD real vae_lr_scale_at(const vae_step_plan *p, int64_t s) {
    if (p->lr_warmup > 0 && s < p->lr_warmup)
        return (real)((double)(s + 1) / (double)p->lr_warmup);
    if (p->lr_schedule == VAE_LR_CONSTANT) return (real)1;
    const int64_t span = p->total_steps - p->lr_warmup;
    const double u = span > 0 && s - p->lr_warmup < span
                         ? (double)(s - p->lr_warmup) / (double)span
                         : 1.0;
    const double r = p->min_lr_ratio;
    const double f = p->lr_schedule == VAE_LR_COSINE ? VAE_DMUL(0.5, 1.0 + vae_cos_pi(u))
                                                     : 1.0 - u;
    return (real)(r + VAE_DMUL(1.0 - r, f));
}

/* The block of step s (next = s + 1). The bias corrections are computed in
 * double (vae_pow_int) and rounded once. */
VAE_HD void vae_step_vals_at(vae_step_vals *v, const vae_step_plan *p, int64_t s) {
    const int64_t spe = (p->n + p->batch - 1) / p->batch;
    const int64_t row0 = (s % spe) * p->batch;
    const int64_t left = p->n - row0;
    v->step = s;
    v->next = s + 1;
    v->row0 = row0;
    v->sub = (uint64_t)s;
    v->rows = left < p->batch ? (int32_t)left : p->batch;
    v->kl_scale = vae_kl_beta_at(p->beta, p->warmup, s) * ((real)1 / (real)v->rows);
    v->bc1 = (real)(1.0 - vae_pow_int(p->beta1, s + 1));
    v->bc2 = (real)(1.0 - vae_pow_int(p->beta2, s + 1));
    v->lr_scale = vae_lr_scale_at(p, s);
}

/* A block made by hand (evaluation, encoding, tests): step, next = step + 1
 * and the given values; no learning-rate schedule (lr_scale 1). */
VAE_HD vae_step_vals vae_step_vals_make(int64_t step, int64_t row0, uint64_t sub, int32_t rows,
                                        real kl_scale, real bc1, real bc2) {
    vae_step_vals v;
    memset(&v, 0, sizeof v); /* padding too, so blocks compare with memcmp */
    v.step = step;
    v.next = step + 1;
    v.row0 = row0;
    v.sub = sub;
    v.rows = rows;
    v.kl_scale = kl_scale;
    v.bc1 = bc1;
    v.bc2 = bc2;
    v.lr_scale = 1;
    return v;
}

/* The Adam hyper-parameters of the step sv describes: hp with its learning
 * rate times the schedule's factor (hp->lr itself where there is none: a
 * factor of 1 changes no bit). Both backends' adam_step start from it. */
VAE_HD vae_adam_hp vae_adam_hp_at(const vae_adam_hp *hp, const vae_step_vals *sv) {
    vae_adam_hp h = *hp;
    h.lr = hp->lr * sv->lr_scale;
    return h;
}

/* step_begin: the block of step v->next. */
VAE_HD void vae_step_begin(vae_step_vals *v, const vae_step_plan *p) {
    vae_step_vals_at(v, p, v->next);
}

/* ------------------------------------------------- step bookkeeping */

/* The training step's bookkeeping lives in backend memory, so that the host
 * never has to read the device inside a step (see step_commit in
 * vae_backend.h). Two blocks:
 *
 * state, int[VAE_STEP_STATE_N] (zeroed at the start of a run segment):
 *   [VAE_STEP_FLAGS]      bit field: VAE_STEP_BAD — this step's gradient norm
 *                         was not finite (set by adam_step, cleared by
 *                         step_commit); VAE_STEP_HALTED — more than max_bad
 *                         bad steps were seen (set by step_commit, sticky:
 *                         adam_step and step_commit do nothing from then on)
 *   [VAE_STEP_NBAD]       bad steps counted so far, the halting one included
 *   [VAE_STEP_FIRST_BAD]  0-based index of the first bad step   (int64 as two
 *   [VAE_STEP_LAST_BAD]   ... of the latest one; when halted, the halting step
 *                         ints, low word first: vae_step_state_i64)
 *   other slots: zero, reserved
 * acc, double[VAE_COMMIT_ACC_N]:
 *   [VAE_COMMIT_STEP_RECON], [VAE_COMMIT_STEP_KL]  this step's loss sums
 *       (summed into by the model's forward/backward, zeroed by step_commit)
 *   [VAE_COMMIT_RECON], [VAE_COMMIT_KL], [VAE_COMMIT_IMAGES]  the epoch's sums
 *       over the good steps and the number of images in them
 *   slots 2..4 belong to the caller (step_commit neither reads nor writes them) */
enum {
    VAE_STEP_FLAGS = 0,
    VAE_STEP_NBAD = 1,
    VAE_STEP_FIRST_BAD = 2, /* and 3 */
    VAE_STEP_LAST_BAD = 4,  /* and 5 */
    VAE_STEP_STATE_N = 8
};
enum { VAE_STEP_BAD = 1, VAE_STEP_HALTED = 2 };
enum {
    VAE_COMMIT_STEP_RECON = 0,
    VAE_COMMIT_STEP_KL = 1,
    VAE_COMMIT_RECON = 5,
    VAE_COMMIT_KL = 6,
    VAE_COMMIT_IMAGES = 7,
    VAE_COMMIT_ACC_N = 8
};

/* An int64 kept in two consecutive ints of the state block (low word first),
 * so the block stays plain ints with no alignment or aliasing demands. */
VAE_HD int64_t vae_step_state_i64(const int *w) {
    return (int64_t)(((uint64_t)(uint32_t)w[1] << 32) | (uint64_t)(uint32_t)w[0]);
}
VAE_HD void vae_step_state_set_i64(int *w, int64_t v) {
    w[0] = (int)(uint32_t)((uint64_t)v & 0xffffffffu);
    w[1] = (int)(uint32_t)((uint64_t)v >> 32);
}

/* Commit training step `step` (0-based) with n_images images:
 *   halted:            nothing is counted or added
 *   flags & BAD:       nbad += 1, first_bad (if nbad was 0) = last_bad = step;
 *                      if nbad > max_bad: flags |= HALTED
 *   good:              RECON += STEP_RECON, KL += STEP_KL, IMAGES += n_images
 *   always:            flags &= ~BAD, STEP_RECON = STEP_KL = 0
 * so a bad step never reaches the epoch's sums, and after a halt the epoch
 * sums stay those of the steps before the halting one. */
VAE_HD void vae_step_commit(double *acc, int *state, int64_t step, int n_images, int max_bad) {
    int flags = state[VAE_STEP_FLAGS];
    if (!(flags & VAE_STEP_HALTED)) {
        if (flags & VAE_STEP_BAD) {
            const int prev = state[VAE_STEP_NBAD];
            if (prev < 0x7fffffff) state[VAE_STEP_NBAD] = prev + 1;
            if (prev == 0) vae_step_state_set_i64(state + VAE_STEP_FIRST_BAD, step);
            vae_step_state_set_i64(state + VAE_STEP_LAST_BAD, step);
            if (prev >= max_bad) flags |= VAE_STEP_HALTED; /* nbad = prev + 1 > max_bad */
        } else {
            acc[VAE_COMMIT_RECON] += acc[VAE_COMMIT_STEP_RECON];
            acc[VAE_COMMIT_KL] += acc[VAE_COMMIT_STEP_KL];
            acc[VAE_COMMIT_IMAGES] += (double)n_images;
        }
    }
    state[VAE_STEP_FLAGS] = flags & ~VAE_STEP_BAD;
    acc[VAE_COMMIT_STEP_RECON] = 0;
    acc[VAE_COMMIT_STEP_KL] = 0;
}

/* ---------------------------------------------------------- conversion */

/* Model output to an 8-bit pixel: probabilities (sigmoid of logits) for the
 * Bernoulli likelihood, the mean clamped to [0,1] for the Gaussian one;
 * rounded to nearest. */
VAE_HD uint8_t vae_to_u8(real out, int is_logit) {
    real p = is_logit ? vae_sigmoid(out) : out;
    if (!(p > 0)) p = 0; /* also maps NaN to 0 */
    if (p > 1) p = 1;
    return (uint8_t)(p * (real)255 + (real)0.5);
}

/* ------------------------------------------------------ latent grids */

/* Inverse of the standard normal CDF, Phi^-1(p) for 0 < p < 1, in double:
 * Acklam's rational approximation (relative error < 1.2e-9) refined by one
 * Halley step on Phi(x) - p with Phi(x) = erfc(-x / sqrt 2) / 2, which brings
 * it to about 1e-15. p <= 0 gives -inf, p >= 1 +inf, NaN gives NaN. */
VAE_HD double vae_norm_quantile(double p) {
    if (!(p > 0.0)) return p == 0.0 || p < 0.0 ? -HUGE_VAL : p;
    if (p >= 1.0) return HUGE_VAL;
    const double a0 = -3.969683028665376e+01, a1 = 2.209460984245205e+02,
                 a2 = -2.759285104469687e+02, a3 = 1.383577518672690e+02,
                 a4 = -3.066479806614716e+01, a5 = 2.506628277459239e+00;
    const double b0 = -5.447609879822406e+01, b1 = 1.615858368580409e+02,
                 b2 = -1.556989798598866e+02, b3 = 6.680131188771972e+01,
                 b4 = -1.328068155288572e+01;
    const double c0 = -7.784894002430293e-03, c1 = -3.223964580411365e-01,
                 c2 = -2.400758277161838e+00, c3 = -2.549671010243052e+00,
                 c4 = 4.374664141464968e+00, c5 = 2.938163982698783e+00;
    const double d0 = 7.784695709041462e-03, d1 = 3.224671290700398e-01,
                 d2 = 2.445134137142996e+00, d3 = 3.754408661907416e+00;
    const double plow = 0.02425;
    double x;
    if (p < plow || p > 1.0 - plow) {
        double q = sqrt(-2.0 * log(p < plow ? p : 1.0 - p));
        x = (((((c0 * q + c1) * q + c2) * q + c3) * q + c4) * q + c5) /
            ((((d0 * q + d1) * q + d2) * q + d3) * q + 1.0);
        if (p > plow) x = -x;
    } else {
        double q = p - 0.5, r = q * q;
        x = (((((a0 * r + a1) * r + a2) * r + a3) * r + a4) * r + a5) * q /
            (((((b0 * r + b1) * r + b2) * r + b3) * r + b4) * r + 1.0);
    }
    /* Halley: e = Phi(x) - p, u = e / phi(x), x -= u / (1 + x u / 2) */
    double e = 0.5 * erfc(-x * 0.70710678118654752440) - p;
    double u = e * 2.50662827463100050242 * exp(0.5 * x * x);
    return x - u / (1.0 + 0.5 * x * u);
}

/* Coordinate k (0 <= k < S) of a grid axis with S points:
 *   evenly spaced:  -R + 2R k / (S - 1)          (S = 1: 0)
 *   quantiles:      Phi^-1((k + 1/2) / S)        (equal prior mass per cell) */
VAE_HD double vae_grid_coord(int64_t k, int64_t S, int quantiles, double range) {
    if (quantiles) return vae_norm_quantile(((double)k + 0.5) / (double)S);
    if (S <= 1) return 0.0;
    return -range + 2.0 * range * (double)k / (double)(S - 1);
}

/* Which latents `vae sample` decodes; latent i of a run is a pure function of
 * (spec, i), so any slice [a, b) of a run can be made alone:
 *   PRIOR:  z[i, l] = vae_normal_at(seed, VAE_RNG_PRIOR, 0, i L + l)
 *   GRID:   point i of the S x S grid is row r = i / S, column c = i % S;
 *           z[i] = base, then z[i, d1] = coord(c), z[i, d2] = coord(r)
 *           (columns move along d1, rows along d2; row 0 is the top row)
 *   LERP:   t = i / (S - 1);  z[i] = (1 - t) a + t b
 *   SLERP:  z[i] = (sin((1 - t) w) a + sin(t w) b) / sin w, w = angle(a, b);
 *           as LERP when sin w < 1e-6 (a and b (anti)parallel)
 * `vec` (backend memory) holds base [L] for GRID, a [L] then b [L] for the
 * interpolations, nothing for PRIOR. */
typedef enum {
    VAE_LATENT_PRIOR = 0,
    VAE_LATENT_GRID = 1,
    VAE_LATENT_LERP = 2,
    VAE_LATENT_SLERP = 3
} vae_latent_kind;

typedef struct {
    int kind, L;
    uint64_t seed;       /* PRIOR */
    int d1, d2;          /* GRID */
    int quantiles;       /* GRID */
    int64_t steps;       /* GRID: side S; LERP/SLERP: points S */
    double range;        /* GRID */
    double omega;        /* SLERP: angle between a and b, radians */
} vae_latent_spec;

VAE_HD real vae_latent_elem(const vae_latent_spec *s, const real *vec, int64_t i, int l) {
    switch (s->kind) {
    case VAE_LATENT_PRIOR:
        return vae_normal_at(s->seed, VAE_RNG_PRIOR, 0, (uint64_t)i * (uint64_t)s->L + (uint64_t)l);
    case VAE_LATENT_GRID:
        if (l == s->d1) return (real)vae_grid_coord(i % s->steps, s->steps, s->quantiles, s->range);
        if (l == s->d2) return (real)vae_grid_coord(i / s->steps, s->steps, s->quantiles, s->range);
        return vec[l];
    default: {
        double t = s->steps > 1 ? (double)i / (double)(s->steps - 1) : 0.0;
        double wa = 1.0 - t, wb = t;
        double so = sin(s->omega);
        if (s->kind == VAE_LATENT_SLERP && so >= 1e-6) {
            wa = sin((1.0 - t) * s->omega) / so;
            wb = sin(t * s->omega) / so;
        }
        return (real)(wa * (double)vec[l] + wb * (double)vec[s->L + l]);
    }
    }
}

/* ------------------------------------------------- reduced precision */

/* x rounded to nearest-even with `bits` explicit mantissa bits (23 = float
 * itself, 10 = TF32, 7 = bfloat16), kept in a float. Products of two such
 * numbers are exact in float (2 (bits + 1) <= 24), so an fp32 GEMM over
 * rounded inputs computes what a TF32/bf16 tensor-core GEMM with fp32
 * accumulation computes, up to the order of the additions. NaN and +-inf
 * pass through; a finite value may round up to +-inf, as a cast would. */
VAE_HD float vae_round_mantissa(float x, int bits) {
    if (bits >= 23 || bits < 0) return x;
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    if ((u & 0x7f800000u) == 0x7f800000u) return x; /* inf, NaN */
    const int drop = 23 - bits;
    const uint32_t half = (1u << (drop - 1)) - 1u + ((u >> drop) & 1u);
    u = (u + half) & ~((1u << drop) - 1u);
    memcpy(&x, &u, sizeof x);
    return x;
}

#ifdef __cplusplus
}
#endif
#endif /* VAE_MATH_H */

/* test_math.c — every function of vae_math.h against an independent reference.
 *
 * Built twice: as is (real = float) and, through tests/f64/test_math.c, with
 * -DVAE_REAL_DOUBLE (real = double). Tolerances are written in units of
 * EPS_R, the machine epsilon of `real`, so one statement covers both builds;
 * each carries a one-line justification where it is used.
 *
 * References used here and nowhere in vae_math.h:
 *   - Random123's published known-answer vectors (philox4x32, 7 and 10 rounds);
 *   - ref_philox4x32(): a second Philox written from the algorithm description
 *     (variable round count, 32x32 multiply from 16-bit limbs), itself checked
 *     against the KATs above;
 *   - a transcription of cuRAND's curand_init/skipahead state arithmetic;
 *   - Box-Muller, BCE, Gaussian densities, KL and the reparameterisation written
 *     out from their definitions in long double;
 *   - torch.optim.Adam / AdamW's documented update in double;
 *   - the per-step values (batch layout, KL warm-up, Adam's bias corrections)
 *     from their definitions, in integers and long double.
 */
#include <float.h>
#include <stdint.h>

#include "testutil.h"
#include "vae_math.h"

#ifdef VAE_REAL_DOUBLE
#define EPS_R DBL_EPSILON
#else
#define EPS_R FLT_EPSILON
#endif
#define PI_L 3.141592653589793238462643383279502884L

/* splitmix64: test inputs only (integers for the Philox checks). */
static uint64_t g_sm = 0x0123456789ABCDEFull;
static uint64_t rnd64(void) {
    uint64_t z = (g_sm += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* ===================================================================== Philox */

/* Independent Philox4x32-R (Salmon, Moraes, Dror, Shaw, "Parallel Random
 * Numbers: As Easy as 1, 2, 3", SC'11, and Random123's philox.h):
 *   round:  (c0,c1,c2,c3) -> (hi(M1*c2) ^ c1 ^ k0, lo(M1*c2), hi(M0*c0) ^ c3 ^ k1, lo(M0*c0))
 *   key schedule: round r (0-based) uses k + r*(W0, W1).
 * Constants PHILOX_M4x32_0/1 and PHILOX_W32_0/1 as in Random123's philox.h;
 * written out here (not taken from vae_math.h's macros) so that a wrong macro
 * in the header is caught by the KATs. The 32x32->64 product is built from
 * 16-bit limbs, a different path from vae_philox_round's uint64 multiply. */
static void ref_mulhilo32(uint32_t a, uint32_t b, uint32_t *hi, uint32_t *lo) {
    uint32_t a0 = a & 0xFFFFu, a1 = a >> 16, b0 = b & 0xFFFFu, b1 = b >> 16;
    uint32_t p00 = a0 * b0, p01 = a0 * b1, p10 = a1 * b0, p11 = a1 * b1;
    uint32_t mid = (p00 >> 16) + (p01 & 0xFFFFu) + (p10 & 0xFFFFu); /* < 3 * 2^16 */
    *lo = (mid << 16) | (p00 & 0xFFFFu);
    *hi = p11 + (p01 >> 16) + (p10 >> 16) + (mid >> 16);
}

static void ref_philox4x32(const uint32_t ctr[4], const uint32_t key[2], int rounds, uint32_t out[4]) {
    uint32_t c[4] = {ctr[0], ctr[1], ctr[2], ctr[3]};
    uint32_t k0 = key[0], k1 = key[1];
    for (int r = 0; r < rounds; r++) {
        if (r > 0) {
            k0 += 0x9E3779B9u;
            k1 += 0xBB67AE85u;
        }
        uint32_t hi0, lo0, hi1, lo1;
        ref_mulhilo32(0xD2511F53u, c[0], &hi0, &lo0);
        ref_mulhilo32(0xCD9E8D57u, c[2], &hi1, &lo1);
        uint32_t n0 = hi1 ^ c[1] ^ k0, n2 = hi0 ^ c[3] ^ k1;
        c[0] = n0;
        c[1] = lo1;
        c[2] = n2;
        c[3] = lo0;
    }
    for (int i = 0; i < 4; i++) out[i] = c[i];
}

static int same4(const uint32_t *a, const uint32_t *b) {
    return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3];
}

/* Known-answer vectors: the "philox4x32" rows of Random123's tests/kat_vectors,
 * as cut-and-pasted into DEShawResearch/Random123-Boost,
 * libs/random/test/test_philox.cpp (commit 916db91ae4c6fd8324ef054a518851321ab41f91),
 * test_kat_philox4x32: "counter[4] key[2]   expected[4]" in hex.
 * The same rows appear verbatim in many independent ports (e.g. a Python port
 * that embeds the kat_vectors file). cuRAND's Philox4_32_10 is this generator
 * (curand_Philox4x32_10 in curand_philox4x32_x.h has the identical round). */
static const struct {
    int rounds;
    uint32_t ctr[4], key[2], out[4];
    const char *name;
} KAT[] = {
    {7, {0, 0, 0, 0}, {0, 0}, {0x5f6fb709u, 0x0d893f64u, 0x4f121f81u, 0x4f730a48u}, "zero, 7 rounds"},
    {7, {0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}, {0xffffffffu, 0xffffffffu},
     {0x5207ddc2u, 0x45165e59u, 0x4d8ee751u, 0x8c52f662u}, "ones, 7 rounds"},
    {7, {0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}, {0xa4093822u, 0x299f31d0u},
     {0x4dfccabau, 0x190a87f0u, 0xc47362bau, 0xb6b5242au}, "pi, 7 rounds"},
    {10, {0, 0, 0, 0}, {0, 0}, {0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}, "zero, 10 rounds"},
    {10, {0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}, {0xffffffffu, 0xffffffffu},
     {0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}, "ones, 10 rounds"},
    {10, {0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}, {0xa4093822u, 0x299f31d0u},
     {0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}, "pi, 10 rounds"},
};
#define N_KAT (sizeof KAT / sizeof KAT[0])

static void test_philox_kat(void) {
    for (size_t i = 0; i < N_KAT; i++) {
        uint32_t got[4];
        /* the reference must reproduce every published row (7 and 10 rounds) */
        ref_philox4x32(KAT[i].ctr, KAT[i].key, KAT[i].rounds, got);
        CHECK_MSG(same4(got, KAT[i].out), "reference Philox, KAT %s", KAT[i].name);
        if (KAT[i].rounds != 10) continue;

        vae_u32x4 c = {{KAT[i].ctr[0], KAT[i].ctr[1], KAT[i].ctr[2], KAT[i].ctr[3]}};
        vae_u32x4 r = vae_philox4x32_10(c, KAT[i].key[0], KAT[i].key[1]);
        CHECK_MSG(same4(r.v, KAT[i].out), "vae_philox4x32_10, KAT %s: got %08x %08x %08x %08x",
                  KAT[i].name, r.v[0], r.v[1], r.v[2], r.v[3]);

        /* All three 10-round rows are reachable through vae_philox_block:
         * group = ctr1:ctr0, subsequence = ctr3:ctr2 (stream = top byte), seed = key1:key0. */
        uint64_t group = ((uint64_t)KAT[i].ctr[1] << 32) | KAT[i].ctr[0];
        uint64_t s = ((uint64_t)KAT[i].ctr[3] << 32) | KAT[i].ctr[2];
        uint64_t seed = ((uint64_t)KAT[i].key[1] << 32) | KAT[i].key[0];
        vae_u32x4 b = vae_philox_block(seed, (uint32_t)(s >> 56), s & 0x00FFFFFFFFFFFFFFull, group);
        CHECK_MSG(same4(b.v, KAT[i].out), "vae_philox_block, KAT %s", KAT[i].name);
    }

    /* One round, and the full generator, on random inputs: bit-exact. */
    int bad_round = 0, bad_full = 0;
    for (int i = 0; i < 2000; i++) {
        uint64_t a = rnd64(), b = rnd64(), k = rnd64();
        uint32_t ctr[4] = {(uint32_t)a, (uint32_t)(a >> 32), (uint32_t)b, (uint32_t)(b >> 32)};
        uint32_t key[2] = {(uint32_t)k, (uint32_t)(k >> 32)};
        vae_u32x4 c = {{ctr[0], ctr[1], ctr[2], ctr[3]}};
        uint32_t want[4];
        ref_philox4x32(ctr, key, 1, want);
        vae_u32x4 r1 = vae_philox_round(c, key[0], key[1]);
        bad_round += !same4(r1.v, want);
        ref_philox4x32(ctr, key, 10, want);
        vae_u32x4 r10 = vae_philox4x32_10(c, key[0], key[1]);
        bad_full += !same4(r10.v, want);
    }
    CHECK_MSG(bad_round == 0, "%d of 2000 vae_philox_round mismatches", bad_round);
    CHECK_MSG(bad_full == 0, "%d of 2000 vae_philox4x32_10 mismatches", bad_full);
}

/* ============================================================ counter layout */

/* cuRAND's Philox state arithmetic, transcribed from curand_kernel.h and
 * curand_philox4x32_x.h (read in CUDA 13.0's /usr/local/cuda/include and in
 * the copy stored at ggerganov/llama.cpp include/cuda/, commit f555db44):
 *   curand_init(seed, subsequence, offset, &st):
 *     ctr = (0,0,0,0); key.x = (uint)seed; key.y = (uint)(seed >> 32); STATE = 0;
 *     skipahead_sequence(subsequence)  -> Philox_State_Incr_hi: adds subsequence to
 *                                         (ctr.z, ctr.w) with carry z -> w;
 *     skipahead(offset)                -> STATE += offset & 3; n = offset / 4 (+1 if
 *                                         STATE > 3); Philox_State_Incr(n): adds n to
 *                                         (ctr.x, ctr.y) carrying into z, w;
 *     output = curand_Philox4x32_10(ctr, key).
 *   curand4(): returns output when STATE == 0, then increments ctr by one.
 *   curand_normal4() = curand_box_muller4(): x = curand4(); Box-Muller on (x.x, x.y)
 *     -> (.x = s sin v, .y = s cos v), and on (x.z, x.w) -> (.z, .w), with
 *     u = x*2^-32 + 2^-33, v = (y*2^-32 + 2^-33) * 2 pi, s = sqrt(-2 ln u).
 * So curand_init(seed, sub, 4*group) yields the block of counter
 * {group lo, group hi, sub lo, sub hi}, key {seed lo, seed hi} — the layout
 * vae_philox_block documents. (Also cross-checked once outside this test by
 * compiling the CUDA 13.0 headers host-side with nvcc: curand4 and
 * curand_normal4 after curand_init(seed, (stream<<56)|sub, 4*group) matched
 * vae_philox_block / vae_normal_at in 48 of 48 cases. That was the double
 * Box-Muller; vae_normal_at now evaluates the same pairs of the same words in
 * float with its own polynomials, within 4 FLT_EPSILON |z| of the exact pair.) */
typedef struct {
    uint32_t ctr[4], key[2], out[4];
    unsigned state;
} cu_philox;

static void cu_incr_hi(cu_philox *s, uint64_t n) {
    uint32_t nlo = (uint32_t)n, nhi = (uint32_t)(n >> 32);
    s->ctr[2] += nlo;
    if (s->ctr[2] < nlo) nhi++;
    s->ctr[3] += nhi;
}
static void cu_incr_n(cu_philox *s, uint64_t n) {
    uint32_t nlo = (uint32_t)n, nhi = (uint32_t)(n >> 32);
    s->ctr[0] += nlo;
    if (s->ctr[0] < nlo) nhi++;
    s->ctr[1] += nhi;
    if (nhi <= s->ctr[1]) return;
    if (++s->ctr[2]) return;
    ++s->ctr[3];
}
static void cu_incr1(cu_philox *s) {
    if (++s->ctr[0]) return;
    if (++s->ctr[1]) return;
    if (++s->ctr[2]) return;
    ++s->ctr[3];
}
static void cu_init(cu_philox *s, uint64_t seed, uint64_t subsequence, uint64_t offset) {
    memset(s, 0, sizeof *s);
    s->key[0] = (uint32_t)seed;
    s->key[1] = (uint32_t)(seed >> 32);
    cu_incr_hi(s, subsequence);
    s->state += (unsigned)(offset & 3);
    uint64_t n = offset / 4;
    if (s->state > 3) {
        n += 1;
        s->state -= 4;
    }
    cu_incr_n(s, n);
    ref_philox4x32(s->ctr, s->key, 10, s->out);
}
/* curand4 for the aligned case (STATE == 0), which is all vae uses. */
static void cu_curand4(cu_philox *s, uint32_t r[4]) {
    for (int i = 0; i < 4; i++) r[i] = s->out[i];
    cu_incr1(s);
    ref_philox4x32(s->ctr, s->key, 10, s->out);
}

static void test_counter_layout(void) {
    int bad_direct = 0, bad_ref = 0, bad_cu = 0, bad_next = 0, bad_mask = 0;
    for (int i = 0; i < 600; i++) {
        uint64_t seed = rnd64(), group = rnd64(), sub = rnd64() & 0x00FFFFFFFFFFFFFFull;
        uint32_t stream = (uint32_t)(rnd64() & 0xFF);
        /* a few structured cases: carries across the 32-bit halves */
        if (i % 6 == 1) group = 0xFFFFFFFFull;
        if (i % 6 == 2) sub = 0xFFFFFFFFull;
        if (i % 6 == 3) group = (group & 3) ? group : 0;
        if (i < 5) stream = (uint32_t)i; /* the named VAE_RNG_* streams */
        uint64_t s = ((uint64_t)stream << 56) | sub;

        vae_u32x4 b = vae_philox_block(seed, stream, sub, group);

        /* (1) as documented: counter {g lo, g hi, s lo, s hi}, key {seed lo, seed hi} */
        vae_u32x4 c = {{(uint32_t)group, (uint32_t)(group >> 32), (uint32_t)s, (uint32_t)(s >> 32)}};
        vae_u32x4 d = vae_philox4x32_10(c, (uint32_t)seed, (uint32_t)(seed >> 32));
        bad_direct += !same4(b.v, d.v);

        /* (2) same with the independent reference generator */
        uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)}, want[4];
        ref_philox4x32(c.v, key, 10, want);
        bad_ref += !same4(b.v, want);

        /* (3) cuRAND: curand_init(seed, s, 4*group); curand4() — and the next
         * curand4() is block group+1 (cuRAND increments the low counter words) */
        if (group < (1ull << 62)) {
            cu_philox st;
            uint32_t r[4];
            cu_init(&st, seed, s, 4 * group);
            cu_curand4(&st, r);
            bad_cu += !same4(b.v, r);
            cu_curand4(&st, r);
            vae_u32x4 b1 = vae_philox_block(seed, stream, sub, group + 1);
            bad_next += !same4(b1.v, r);
        }

        /* (4) the stream tag owns the top 8 bits: sub bits 56..63 are ignored */
        uint64_t junk = (rnd64() | 1) << 56;
        vae_u32x4 bm = vae_philox_block(seed, stream, sub | junk, group);
        bad_mask += !same4(b.v, bm.v);
    }
    CHECK_MSG(bad_direct == 0, "%d vae_philox_block vs documented counter layout", bad_direct);
    CHECK_MSG(bad_ref == 0, "%d vae_philox_block vs reference Philox", bad_ref);
    CHECK_MSG(bad_cu == 0, "%d vae_philox_block vs curand_init(seed, sub, 4*group)+curand4", bad_cu);
    CHECK_MSG(bad_next == 0, "%d second curand4 vs block group+1", bad_next);
    CHECK_MSG(bad_mask == 0, "%d sub bits >= 56 leaked into the counter", bad_mask);

    /* the stream tag changes the block: (stream 1, sub 0) != (stream 0, sub 0) */
    vae_u32x4 s0 = vae_philox_block(7, 0, 0, 0), s1 = vae_philox_block(7, 1, 0, 0);
    CHECK(!same4(s0.v, s1.v));
}

/* ==================================================================== normals */

/* Box-Muller from the two 32-bit words in long double, from the definition:
 * u = (w + 1/2) / 2^32; r = sqrt(-2 ln u_a); (r sin 2 pi u_b, r cos 2 pi u_b). */
static long double ref_u01(uint32_t w) { return ((long double)w + 0.5L) / 4294967296.0L; }
static long double ref_bm(uint32_t wa, uint32_t wb, int second, long double *r_out) {
    long double r = sqrtl(-2.0L * logl(ref_u01(wa)));
    long double ang = 2.0L * PI_L * ref_u01(wb);
    *r_out = r;
    return second ? r * cosl(ang) : r * sinl(ang);
}

/* vae_box_muller against ref_bm in long double, the error in FLT_EPSILON
 * |z| (a relative error; one unit is 1 to 2 float ulps). Its float
 * evaluation has about 25 rounded operations on any path, but the error of
 * each reaches z scaled down (s^2 and phi^2 are below 0.62; the polynomials'
 * terms shrink fast). Swept over all 2^32 words (a review's sweep, against
 * double log1p and long-double sin/cos): r is within 1.34 FLT_EPSILON r (at
 * wa 0xFDEF8355) and the sine and cosine within 1.63 FLT_EPSILON (wb
 * 0x014634D3), so z within about 1.34 + 1.63 + 0.5 (the product) = 3.47;
 * the worst pair found is 3.40 (0xDFF78D1F, 0x7EB93D11), among the edge
 * words below. The bounds: 4 for z, 2 for r. The error is relative to |z|
 * also near a zero of sin or cos: there phi is small, with one rounding. */
static int bm_check(uint32_t wa, uint32_t wb, double *worst) {
    float zs, zc;
    vae_box_muller(wa, wb, &zs, &zc);
    long double r, ws = ref_bm(wa, wb, 0, &r), wc = ref_bm(wa, wb, 1, &r);
    double es = fabs((double)((long double)zs - ws)) / (FLT_EPSILON * fabs((double)ws));
    double ec = fabs((double)((long double)zc - wc)) / (FLT_EPSILON * fabs((double)wc));
    float rf = sqrtf(-2.0f * vae_bm_log_u(wa));
    double er = fabs((double)((long double)rf - r)) / (FLT_EPSILON * (double)r);
    double e = es > ec ? es : ec;
    if (e > *worst) *worst = e;
    /* NaN-safe: a NaN error fails */
    return !(es <= 4) || !(ec <= 4) || !(er <= 2) || zs != zs || zc != zc;
}

static void test_box_muller(void) {
    /* The helpers are single IEEE operations: not contracted into an FMA.
     * a = 1 + 2^-12: a a = 1 + 2^-11 + 2^-24 rounds (a tie, to even) to
     * 1 + 2^-11, so a a - (1 + 2^-11) is 0, and 2^-24 when fused. */
    volatile float va = 1.0f + 0x1p-12f, vb = -(1.0f + 0x1p-11f);
    float a = va, b = vb;
    CHECK_MSG(vae_fadd_rn(vae_fmul_rn(a, a), b) == 0.0f,
              "vae_fmul_rn + vae_fadd_rn fused into an FMA");
    CHECK(vae_fmaf_rn(a, a, b) == 0x1p-24f);
    CHECK(vae_fdiv_rn(1.0f, 3.0f) == 0.333333343f && vae_fsqrt_rn(2.0f) == 1.41421354f);
    CHECK(vae_bits_float(vae_float_bits(-1.5f)) == -1.5f && vae_float_bits(1.0f) == 0x3F800000u);

    /* ln u at the ends, in closed form: u = 2^-33 (wa 0) is e = -33, f = 0;
     * u = 1 - 2^-33 (wa 2^32 - 1) is f = -2^-33 exactly, ln(1 + f) = f to
     * within 2^-67; u = 1/2 - 2^-33 rounds to 1/2 in float: -ln 2. */
    CHECK(vae_bm_log_u(0) == -33.0f * 0.693147182f);
    CHECK(vae_bm_log_u(0xFFFFFFFFu) == -0x1p-33f);
    CHECK(vae_bm_log_u(0x7FFFFFFFu) == -0.693147182f);
    CHECK(vae_bm_log_u(0x80000000u) == -0.693147182f); /* u = 1/2 + 2^-33: also 1/2 */
    /* the largest radius: r = sqrt(66 ln 2) = 6.7637 at wa 0 */
    float zs, zc;
    vae_box_muller(0, 0, &zs, &zc);
    CHECK_MSG(fabsf(zc - 6.76370564f) <= 4 * FLT_EPSILON * 6.8f && fabsf(zs) < 1e-8f,
              "wa 0, wb 0: (%.9g, %.9g)", zs, zc);
    /* quarter turns: wb = k 2^30 is theta = k pi/2 plus half a step */
    const float qs[4] = {0, 1, 0, -1}, qc[4] = {1, 0, -1, 0};
    for (uint32_t k = 0; k < 4; k++) {
        vae_box_muller(0x80000000u, k << 30, &zs, &zc);
        float r = sqrtf(2 * 0.693147182f);
        CHECK_MSG(fabsf(zs - r * qs[k]) < 1e-8f && fabsf(zc - r * qc[k]) < 1e-8f,
                  "quarter turn %u: (%.9g, %.9g)", k, zs, zc);
    }

    double worst = 0;
    int bad = 0;
    /* edge words: u near 0, 1/2, 1 and the two sqrt(1/2) cuts (u = sqrt(1/2) / 2 at
     * wa ~ 0x5A82799A, u = sqrt(1/2) at wa ~ 0xB504F334),
     * angles at and beside every eighth of a turn (the quadrant rounding) */
    const uint32_t was[] = {0, 1, 2, 0x00FFFFFFu, 0x01000000u, 0x7FFFFFFEu, 0x7FFFFFFFu,
                            0x80000000u, 0x80000001u, 0xB504F333u, 0xB504F334u, 0xB504F335u,
                            0xFDEF8355u, 0xDFF78D1Fu, 0xB3ADF73Fu,
                            0x5A827999u, 0x5A82799Au, 0xFFFFFF00u, 0xFFFFFFFEu, 0xFFFFFFFFu};
    for (size_t i = 0; i < sizeof was / sizeof was[0]; i++)
        for (uint32_t k = 0; k < 8; k++)
            for (int dlt = -2; dlt <= 2; dlt++)
                bad += bm_check(was[i], (k << 29) + (uint32_t)dlt, &worst);
    /* the worst words of the sweeps: angles 0x014634D3 (and a quarter turn
     * on), 0x7EB93D11, 0xBEB93D11, 0x02C17E2E with every edge radius word */
    const uint32_t wbs[] = {0x014634D3u, 0xC14634D3u, 0x7EB93D11u, 0xBEB93D11u, 0x02C17E2Eu};
    for (size_t i = 0; i < sizeof was / sizeof was[0]; i++)
        for (size_t j = 0; j < sizeof wbs / sizeof wbs[0]; j++)
            bad += bm_check(was[i], wbs[j], &worst);
    /* random words, and random words near u = 1 */
    for (int k = 0; k < 1000000; k++) {
        uint64_t x = rnd64();
        uint32_t wa = (uint32_t)x;
        if (k & 1) wa |= 0xFFFF0000u;
        bad += bm_check(wa, (uint32_t)(x >> 32), &worst);
    }
    CHECK_MSG(bad == 0, "%d Box-Muller pairs off by more than 4 FLT_EPSILON |z| (worst %.2f)", bad,
              worst);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void test_normals(void) {
    /* u01 end points: (0 + 1/2)/2^32 and (2^32 - 1/2)/2^32, both exact in double */
    CHECK(vae_u01(0) == ldexp(1.0, -33));
    CHECK(vae_u01(0xFFFFFFFFu) == 1.0 - ldexp(1.0, -33));
    CHECK(vae_u01(0) > 0 && vae_u01(0xFFFFFFFFu) < 1);

    /* Lane pairing, recomputed by hand. Tolerance: the pair is evaluated in
     * float (vae_box_muller) whatever `real` is, within 4 FLT_EPSILON |z|
     * (test_box_muller above). */
    const uint64_t seeds[3] = {0, 42, 0xFEEDFACECAFEBEEFull};
    const uint64_t groups[4] = {0, 1, 12345, 0x1234567890ull};
    int bad_bm = 0, bad_uni = 0;
    for (int si = 0; si < 3; si++)
        for (int gi = 0; gi < 4; gi++)
            for (uint32_t stream = 0; stream < 5; stream++) {
                uint64_t sub = 1000 * stream + 3;
                uint32_t ctr[4] = {(uint32_t)groups[gi], (uint32_t)(groups[gi] >> 32),
                                   (uint32_t)sub, (uint32_t)((sub >> 32) | ((uint64_t)stream << 24))};
                uint32_t key[2] = {(uint32_t)seeds[si], (uint32_t)(seeds[si] >> 32)}, w[4];
                ref_philox4x32(ctr, key, 10, w);
                for (int lane = 0; lane < 4; lane++) {
                    long double r;
                    /* lanes 0,1 from words (0,1); lanes 2,3 from words (2,3);
                     * even lane = r sin, odd lane = r cos */
                    long double want = ref_bm(w[lane & 2], w[(lane & 2) + 1], lane & 1, &r);
                    double got = (double)vae_normal_at(seeds[si], stream, sub, 4 * groups[gi] + (uint64_t)lane);
                    double tol = 4 * FLT_EPSILON * fabs((double)want);
                    (void)r;
                    if (!(fabs(got - (double)want) <= tol)) {
                        if (bad_bm++ < 5)
                            fprintf(stderr, "normal seed %d group %d stream %u lane %d: %.17g vs %.17Lg\n",
                                    si, gi, stream, lane, got, want);
                    }
                    /* uniforms: word `lane` exactly, (w + 1/2) 2^-32 is exact in double */
                    double u = vae_uniform_at(seeds[si], stream, sub, 4 * groups[gi] + (uint64_t)lane);
                    bad_uni += u != (double)ref_u01(w[lane]);
                }
            }
    CHECK_MSG(bad_bm == 0, "%d normals differ from hand Box-Muller", bad_bm);
    CHECK_MSG(bad_uni == 0, "%d uniforms differ from (word + 1/2) / 2^32", bad_uni);

    /* Determinism: counter-based, so the same address gives the same number
     * whatever was drawn before. */
    real a1 = vae_normal_at(99, VAE_RNG_EVAL, 5, 1000003);
    for (int i = 0; i < 100; i++) (void)vae_normal_at(99, VAE_RNG_EVAL, 5, (uint64_t)i);
    real a2 = vae_normal_at(99, VAE_RNG_EVAL, 5, 1000003);
    CHECK(memcmp(&a1, &a2, sizeof a1) == 0);

    /* vae_normal4_at: lane j of block g is vae_normal_at(4 g + j) bit for bit
     * (the kernels fill four consecutive normals from one call). Random seeds,
     * streams, subsequences and blocks (also near the top of the 64-bit
     * index), plus the first blocks of a fixed stream. A swapped lane or a
     * radius or angle taken from the other pair differs in (almost) every
     * block, so bad4 would count thousands. */
    {
        int bad4 = 0, same_lanes = 0;
        for (int k = 0; k < 200000; k++) {
            uint64_t seed = k < 4096 ? 0x5EEDull : rnd64();
            uint32_t stream = k < 4096 ? VAE_RNG_TRAIN : (uint32_t)(rnd64() % 5);
            uint64_t sub = k < 4096 ? 3 : (k & 1 ? rnd64() : rnd64() % 1000);
            uint64_t group = k < 4096 ? (uint64_t)k : (k & 2 ? rnd64() >> 2 : rnd64() % 100000);
            real four[4];
            vae_normal4_at(seed, stream, sub, group, four);
            for (int j = 0; j < 4; j++) {
                real one = vae_normal_at(seed, stream, sub, 4 * group + (uint64_t)j);
                if (memcmp(&one, &four[j], sizeof one) != 0 && bad4++ < 5)
                    fprintf(stderr, "normal4 k %d lane %d: %.9g vs vae_normal_at %.9g\n", k, j,
                            (double)four[j], (double)one);
            }
            same_lanes += four[0] == four[1] || four[2] == four[3] || four[0] == four[2];
        }
        CHECK_MSG(bad4 == 0, "%d of 800000 vae_normal4_at lanes differ from vae_normal_at", bad4);
        /* the four lanes are four different numbers (else a swap would pass) */
        CHECK_MSG(same_lanes <= 2, "%d blocks with equal lanes", same_lanes);
    }

    /* Moments of n = 10^6 draws. */
    enum { N = 1000000 };
    double *z = malloc(N * sizeof *z);
    if (!z) {
        perror("malloc");
        exit(1);
    }
    int nonfinite = 0;
    double s1 = 0, maxabs = 0;
    for (int i = 0; i < N; i++) {
        z[i] = (double)vae_normal_at(0x5EEDull, VAE_RNG_TRAIN, 17, (uint64_t)i);
        if (!isfinite(z[i])) nonfinite++;
        s1 += z[i];
        if (fabs(z[i]) > maxabs) maxabs = fabs(z[i]);
    }
    CHECK_MSG(nonfinite == 0, "%d non-finite normals", nonfinite);
    /* u >= 2^-33 bounds |z| <= sqrt(66 ln 2) = 6.764 */
    CHECK_MSG(maxabs <= 6.7645, "max |z| = %g", maxabs);
    double mean = s1 / N, m2 = 0, m4 = 0, c01 = 0, c02 = 0, q01 = 0;
    for (int i = 0; i < N; i++) {
        double d = z[i] - mean;
        m2 += d * d;
        m4 += d * d * d * d;
    }
    for (int i = 0; i < N; i += 4) {
        c01 += z[i] * z[i + 1]; /* the two halves of one Box-Muller pair */
        c02 += z[i] * z[i + 2]; /* the two pairs of one block */
        q01 += (z[i] * z[i] - 1) * (z[i + 1] * z[i + 1] - 1);
    }
    m2 /= N;
    m4 /= N;
    double kurt = m4 / (m2 * m2);
    /* mean: sd of the sample mean is 1/sqrt(n); allow 5 sigma */
    CHECK_MSG(fabs(mean) < 5.0 / sqrt((double)N), "mean %g", mean);
    /* variance: sd of the sample variance of N(0,1) is sqrt(2/n); 5 sigma */
    CHECK_MSG(fabs(m2 - 1) < 5 * sqrt(2.0 / N), "variance %g", m2);
    /* kurtosis: sd of the sample kurtosis of a normal is sqrt(24/n) = 0.0049; 5 sigma */
    CHECK_MSG(fabs(kurt - 3) < 5 * sqrt(24.0 / N), "kurtosis %g", kurt);
    /* Box-Muller pairs are independent: E[z0 z1] = 0 (sd 1/sqrt(n/4)) and
     * E[(z0^2-1)(z1^2-1)] = 0 (sd 2/sqrt(n/4)); 5 sigma. Catches a pairing that
     * reuses one angle or one radius wrongly. */
    double npair = N / 4;
    CHECK_MSG(fabs(c01 / npair) < 5 / sqrt(npair), "corr(lane0, lane1) %g", c01 / npair);
    CHECK_MSG(fabs(c02 / npair) < 5 / sqrt(npair), "corr(lane0, lane2) %g", c02 / npair);
    CHECK_MSG(fabs(q01 / npair) < 10 / sqrt(npair), "corr(lane0^2, lane1^2) %g", q01 / npair);
    /* Kolmogorov-Smirnov against Phi: critical value 1.949/sqrt(n) at alpha = 0.001 */
    qsort(z, N, sizeof *z, cmp_double);
    double dks = 0;
    for (int i = 0; i < N; i++) {
        double F = 0.5 * erfc(-z[i] / sqrt(2.0));
        double lo = F - (double)i / N, hi = (double)(i + 1) / N - F;
        if (lo > dks) dks = lo;
        if (hi > dks) dks = hi;
    }
    CHECK_MSG(dks * sqrt((double)N) < 1.949, "KS statistic sqrt(n) D = %g", dks * sqrt((double)N));

    /* Uniforms: strictly inside (0,1); mean 1/2 (sd sqrt(1/12n)) and
     * variance 1/12 (sd sqrt(1/180n)), 5 sigma. */
    int outside = 0;
    double us = 0, uq = 0;
    for (int i = 0; i < N; i++) {
        double u = vae_uniform_at(0xABCull, VAE_RNG_SHUFFLE, 3, (uint64_t)i);
        outside += !(u > 0 && u < 1);
        us += u;
        uq += (u - 0.5) * (u - 0.5);
    }
    CHECK_MSG(outside == 0, "%d uniforms outside (0,1)", outside);
    CHECK_MSG(fabs(us / N - 0.5) < 5 * sqrt(1.0 / (12.0 * N)), "uniform mean %g", us / N);
    CHECK_MSG(fabs(uq / N - 1.0 / 12) < 5 * sqrt(1.0 / (180.0 * N)), "uniform var %g", uq / N);
    free(z);

    /* Distinct seeds / streams / subsequences give different numbers: 16 draws
     * each for 2 seeds x 5 streams x 4 subs; any two of the 40 sequences must
     * differ in at least 15 of the 16 positions (a float collision has
     * probability ~1e-7 per position). */
    enum { NS = 40, NI = 16 };
    real seq[NS][NI];
    const uint64_t subs[4] = {0, 1, 2, 1ull << 40};
    for (int k = 0; k < NS; k++) {
        uint64_t seed = (uint64_t)(k / 20) + 1;
        uint32_t stream = (uint32_t)((k / 4) % 5);
        for (int i = 0; i < NI; i++) seq[k][i] = vae_normal_at(seed, stream, subs[k % 4], (uint64_t)i);
    }
    int worst = NI;
    for (int a = 0; a < NS; a++)
        for (int b = a + 1; b < NS; b++) {
            int diff = 0;
            for (int i = 0; i < NI; i++) diff += seq[a][i] != seq[b][i];
            if (diff < worst) worst = diff;
        }
    CHECK_MSG(worst >= NI - 1, "two streams share %d of %d draws", NI - worst, NI);
}

/* ============================================================ likelihoods */

/* Long-double references from the definitions. 1 - s(x) is evaluated as
 * s(-x) = 1/(1 + e^x) (an identity), so the reference keeps full precision
 * where s(x) is near 1. */
static long double ref_sig(long double x) { return 1.0L / (1.0L + expl(-x)); }
static long double ref_bce(long double x, long double t) {
    return -(t * logl(ref_sig(x)) + (1.0L - t) * logl(ref_sig(-x)));
}

static void test_bce(void) {
    /* known values */
    CHECK(vae_sigmoid(0) == (real)0.5);
    const real ts[7] = {0, (real)0.1, (real)0.3, (real)0.5, (real)0.7, (real)0.9, 1};
    for (int i = 0; i < 7; i++) {
        /* l(0, t) = -[t log 1/2 + (1-t) log 1/2] = log 2; one log1p(1) rounding */
        CHECK_CLOSE(vae_bce_logits(0, ts[i]), 0.69314718055994530942, 2 * EPS_R, 0);
    }

    /* sigmoid against 1/(1+e^-x) in long double over [-30, 30]: exp, add and
     * divide in real give <= ~3 ulp, so 4 EPS_R relative. Symmetry
     * s(-x) = 1 - s(x): each side within 2 ulp of a value <= 1, so 4 EPS_R absolute. */
    int bad_sig = 0, bad_sym = 0;
    for (int i = -300; i <= 300; i++) {
        real x = (real)(i * 0.1 + 0.0123);
        long double want = ref_sig((long double)x);
        real got = vae_sigmoid(x);
        if (!(fabsl((long double)got - want) <= 4 * EPS_R * want)) bad_sig++;
        if (!(fabs((double)vae_sigmoid(-x) - (1.0 - (double)vae_sigmoid(x))) <= 4 * EPS_R)) bad_sym++;
    }
    CHECK_MSG(bad_sig == 0, "%d sigmoid values off", bad_sig);
    CHECK_MSG(bad_sym == 0, "%d sigmoid symmetry violations", bad_sym);
    /* no overflow / NaN at extreme logits */
    CHECK(vae_sigmoid(1000) == 1 && vae_sigmoid(-1000) == 0);
    CHECK_CLOSE(vae_sigmoid(-50), expl(-50.0L) / (1.0L + expl(-50.0L)), 4 * EPS_R, 0);

    /* BCE vs the naive formula in long double, |x| <= 15. Tolerance:
     * max(x,0) - x t rounds x t and the difference (each <= EPS_R/2 |x|), log1p(exp)
     * adds ~2 ulp of a value <= log 2: 4 EPS_R (|x| + 1) absolute covers it. */
    int bad_l = 0, bad_g = 0;
    for (int i = -150; i <= 150; i++) {
        real x = (real)(i * 0.1 + 0.0037);
        for (int j = 0; j < 7; j++) {
            real t = ts[j];
            long double want = ref_bce(x, t);
            real got = vae_bce_logits(x, t);
            if (!(fabsl((long double)got - want) <= 4 * EPS_R * (fabsl((long double)x) + 1))) {
                if (bad_l++ < 5) fprintf(stderr, "bce(%g, %g) = %.10g vs %.10Lg\n", (double)x, (double)t, (double)got, want);
            }
            /* gradient vs central difference of the long-double loss, h = 1e-5:
             * truncation h^2 |l'''| / 6 < 2e-12, rounding LDBL_EPSILON 15 / h < 2e-13.
             * s(x) - t in real: <= 2 ulp of s plus the subtraction: 4 EPS_R + 1e-10. */
            const long double h = 1e-5L;
            long double fd = (ref_bce((long double)x + h, t) - ref_bce((long double)x - h, t)) / (2 * h);
            real g = vae_bce_logits_grad(x, t);
            if (!(fabsl((long double)g - fd) <= 4 * EPS_R + 1e-10)) {
                if (bad_g++ < 5) fprintf(stderr, "bce'(%g, %g) = %.10g vs FD %.10Lg\n", (double)x, (double)t, (double)g, fd);
            }
        }
    }
    CHECK_MSG(bad_l == 0, "%d BCE values off", bad_l);
    CHECK_MSG(bad_g == 0, "%d BCE gradients off", bad_g);

    /* Large |x|: the naive float/double formula gives inf or NaN here; the stable
     * one gives the asymptotic values max(x,0) - x t + e^-|x| (e^-100 = 3.72e-44). */
    const long double e100 = expl(-100.0L);
    CHECK(vae_bce_logits(100, 0) == 100);  /* 100 + 3.7e-44 rounds to 100 */
    CHECK(vae_bce_logits(-100, 1) == 100); /* 0 + 100 + 3.7e-44 */
#ifdef VAE_REAL_DOUBLE
    /* log1p(exp(-100)) in double: a normal number, a couple of ulp */
    CHECK_CLOSE(vae_bce_logits(-100, 0), e100, 4 * EPS_R, 0);
    CHECK_CLOSE(vae_bce_logits(100, 1), e100, 4 * EPS_R, 0);
#else
    /* in float e^-100 is subnormal (spacing FLT_TRUE_MIN = 1.4e-45): within 2 spacings */
    CHECK_CLOSE(vae_bce_logits(-100, 0), e100, 0, 2 * FLT_TRUE_MIN);
    CHECK_CLOSE(vae_bce_logits(100, 1), e100, 0, 2 * FLT_TRUE_MIN);
    CHECK(vae_bce_logits(-100, 0) > 0);
#endif
    {
        real t = (real)0.3; /* asymptote with the real-rounded t: 100 (1 - t), resp. 100 t */
        CHECK_CLOSE(vae_bce_logits(100, t), 100.0L * (1.0L - (long double)t) + e100, 0, 4 * EPS_R * 101);
        CHECK_CLOSE(vae_bce_logits(-100, t), 100.0L * (long double)t + e100, 0, 4 * EPS_R * 101);
        CHECK(isfinite(vae_bce_logits((real)1e30, t)) && isfinite(vae_bce_logits((real)-1e30, t)));
        CHECK(vae_bce_logits_grad(100, t) == 1 - t && vae_bce_logits_grad(-1000, t) == -t);
    }
}

/* -log N(t; x, var) - 1/2 log(2 pi var), written from the density */
static long double ref_gnll(long double x, long double t, long double var) {
    long double pdf = expl(-(t - x) * (t - x) / (2 * var)) / sqrtl(2 * PI_L * var);
    return -logl(pdf) - 0.5L * logl(2 * PI_L * var);
}

static void test_gauss_nll(void) {
    const real ivs[4] = {100, 2, 1, (real)0.25};
    int bad_l = 0, bad_g = 0;
    for (int k = 0; k < 4; k++)
        for (int i = -20; i <= 20; i++)
            for (int j = 0; j < 5; j++) {
                real x = (real)(i * 0.1 + 0.003), t = (real)(j * 0.25), iv = ivs[k];
                long double var = 1.0L / (long double)iv;
                long double want = ref_gnll(x, t, var);
                /* x - t, square, two products: <= 4 ulp relative to the result;
                 * + 1e-14 absolute for the long-double reference's cancellation */
                real got = vae_gauss_nll(x, t, iv);
                if (!(fabsl((long double)got - want) <= 4 * EPS_R * want + 1e-14L)) bad_l++;
                /* central difference, h = 1e-6: the loss is quadratic, so only
                 * rounding (~LDBL_EPSILON |l| / h < 1e-10) remains; grad is 2 roundings */
                const long double h = 1e-6L;
                long double fd = (ref_gnll((long double)x + h, t, var) - ref_gnll((long double)x - h, t, var)) / (2 * h);
                real g = vae_gauss_nll_grad(x, t, iv);
                if (!(fabsl((long double)g - fd) <= 4 * EPS_R * fabsl(fd) + 1e-9L)) bad_g++;
            }
    CHECK_MSG(bad_l == 0, "%d Gaussian NLL values off", bad_l);
    CHECK_MSG(bad_g == 0, "%d Gaussian NLL gradients off", bad_g);
}

/* ================================================================= latents */

/* KL(N(mu, s^2) || N(0,1)) = log(1/s) + (s^2 + mu^2)/2 - 1/2 (textbook form,
 * written in s rather than in log-variance) */
static long double ref_kl_s(long double mu, long double s) { return logl(1 / s) + (s * s + mu * mu) / 2 - 0.5L; }
static long double ref_kl_lv(long double mu, long double lv) { return ref_kl_s(mu, expl(lv / 2)); }

static void test_kl(void) {
    CHECK(vae_kl_term(0, 0) == 0); /* KL of the prior to itself */
    int bad_v = 0, bad_gm = 0, bad_gl = 0;
    for (int i = -10; i <= 10; i++)
        for (int j = -12; j <= 8; j++) {
            real mu = (real)(i * 0.3 + 0.01), lv = (real)(j * 0.5 + 0.02);
            long double s = expl((long double)lv / 2); /* s from the real-rounded lv */
            long double want = ref_kl_s(mu, s);
            /* 1/2 (mu^2 + e^lv - 1 - lv): each term within ~2 ulp of itself, and the
             * sum may cancel: 4 EPS_R (mu^2 + e^lv + 1 + |lv|) absolute */
            long double scale = (long double)mu * mu + expl(lv) + 1 + fabsl((long double)lv);
            if (!(fabsl((long double)vae_kl_term(mu, lv) - want) <= 4 * EPS_R * scale)) bad_v++;
            /* central differences in long double, h = 1e-6: truncation h^2 e^lv / 24 <
             * 1e-12, rounding LDBL_EPSILON |kl| / h < 1e-11 */
            const long double h = 1e-6L;
            long double fdm = (ref_kl_lv((long double)mu + h, lv) - ref_kl_lv((long double)mu - h, lv)) / (2 * h);
            long double fdl = (ref_kl_lv(mu, (long double)lv + h) - ref_kl_lv(mu, (long double)lv - h)) / (2 * h);
            if (!(fabsl((long double)vae_kl_grad_mu(mu) - fdm) <= 1e-9L)) bad_gm++;
            /* 1/2 (e^lv - 1): ~2 ulp of e^lv plus the subtraction */
            if (!(fabsl((long double)vae_kl_grad_lv(lv) - fdl) <= 4 * EPS_R * (expl(lv) + 1) + 1e-9L)) bad_gl++;
        }
    CHECK_MSG(bad_v == 0, "%d KL values off", bad_v);
    CHECK_MSG(bad_gm == 0, "%d dKL/dmu off", bad_gm);
    CHECK_MSG(bad_gl == 0, "%d dKL/dlv off", bad_gl);

    /* Monte Carlo: KL = E_q[log q(z) - log p(z)], z = mu + s eps, eps from
     * vae_normal_at, 10^6 samples, log densities written out in double. The
     * estimate must be within 5 standard errors (sample sd / sqrt(n)). */
    const double cases[3][2] = {{0.5, 0.7}, {-1.2, 1.6}, {0.0, 1.0}};
    const double half_log_2pi = 0.91893853320467274178;
    enum { N = 1000000 };
    for (int c = 0; c < 3; c++) {
        double mu = cases[c][0], s = cases[c][1];
        double sum = 0, sq = 0;
        for (int i = 0; i < N; i++) {
            double e = (double)vae_normal_at(2024, VAE_RNG_EVAL, (uint64_t)c, (uint64_t)i);
            double zz = mu + s * e;
            double lq = -half_log_2pi - log(s) - 0.5 * ((zz - mu) / s) * ((zz - mu) / s);
            double lp = -half_log_2pi - 0.5 * zz * zz;
            sum += lq - lp;
            sq += (lq - lp) * (lq - lp);
        }
        double mc = sum / N, var = sq / N - mc * mc;
        double se = sqrt(var > 0 ? var / N : 0);
        double lv = 2 * log(s);
        double kl = (double)vae_kl_term((real)mu, (real)lv);
        /* 5 standard errors, plus the closed form's own rounding in real
         * (4 EPS_R (mu^2 + s^2 + 1 + |lv|), as above) — all that is left when
         * mu = 0, s = 1 makes every sample exactly 0 */
        double tol = 5 * se + 4 * EPS_R * (mu * mu + s * s + 1 + fabs(lv));
        CHECK_MSG(fabs(mc - kl) <= tol, "case %d: MC KL %.6g +- %.2g vs closed form %.6g", c, mc, se, kl);
    }
}

static void test_reparam(void) {
    int bad_z = 0, bad_g = 0, bad_lq = 0;
    for (int i = -6; i <= 6; i++)
        for (int j = -8; j <= 6; j++)
            for (int k = -5; k <= 5; k++) {
                real mu = (real)(i * 0.4 + 0.013), lv = (real)(j * 0.5 + 0.007), eps = (real)(k * 0.6 + 0.011);
                long double sig = expl((long double)lv / 2);
                long double want = (long double)mu + sig * (long double)eps;
                /* exp, product and sum in real: 4 EPS_R (|mu| + |sigma eps|) */
                real z = vae_reparam(mu, lv, eps);
                if (!(fabsl((long double)z - want) <= 4 * EPS_R * (fabsl((long double)mu) + fabsl(sig * eps)))) bad_z++;

                /* d z / d lv by central difference of mu + e^(lv/2) eps (h = 1e-6:
                 * truncation < 1e-13, rounding < 1e-12), times an upstream dz */
                real dz = (real)(0.7 - 0.1 * k);
                const long double h = 1e-6L;
                long double fd = ((long double)eps * (expl(((long double)lv + h) / 2) - expl(((long double)lv - h) / 2))) / (2 * h);
                long double wantg = (long double)dz * fd;
                real g = vae_reparam_grad_lv(dz, lv, eps);
                if (!(fabsl((long double)g - wantg) <= 4 * EPS_R * fabsl(wantg) + 1e-10L)) bad_g++;

                /* log N(z; m, s^2) - log N(z; 0, 1) from the two densities, with
                 * m = z - s eps so that (z - m)/s is exactly the eps passed in */
                long double zl = (long double)z, m = zl - sig * (long double)eps;
                long double lq = -0.5L * logl(2 * PI_L * sig * sig) - (zl - m) * (zl - m) / (2 * sig * sig);
                long double lp = -0.5L * logl(2 * PI_L) - zl * zl / 2;
                long double wantl = lq - lp;
                /* 1/2 (z^2 - eps^2 - lv): cancellation, 4 EPS_R (z^2 + eps^2 + |lv|) */
                long double sc = zl * zl + (long double)eps * eps + fabsl((long double)lv);
                if (!(fabsl((long double)vae_log_q_minus_log_p(z, lv, eps) - wantl) <= 4 * EPS_R * sc + 1e-15L)) bad_lq++;
            }
    CHECK_MSG(bad_z == 0, "%d reparam values off", bad_z);
    CHECK_MSG(bad_g == 0, "%d reparam lv-gradients off", bad_g);
    CHECK_MSG(bad_lq == 0, "%d log q - log p values off", bad_lq);
}

/* ==================================================================== Adam */

/* torch.optim.Adam / AdamW as documented (pytorch.org/docs, "Algorithm"),
 * gradient clipping as a prior scaling of g (clip_grad_norm_ multiplies the
 * gradients in place):
 *   g <- gscale g;  Adam:  g <- g + lambda theta;   AdamW: theta <- theta - gamma lambda theta
 *   m <- b1 m + (1-b1) g;   v <- b2 v + (1-b2) g^2
 *   m^ = m / (1 - b1^t);    v^ = v / (1 - b2^t)
 *   theta <- theta - gamma m^ / (sqrt(v^) + eps)                              */
static void adam_ref(double *p, double *m, double *v, double g, int t, double lr, double b1, double b2,
                     double eps, double wd, int decoupled, double gscale) {
    g *= gscale;
    if (wd != 0 && !decoupled) g += wd * *p;
    if (wd != 0 && decoupled) *p -= lr * wd * *p;
    *m = b1 * *m + (1 - b1) * g;
    *v = b2 * *v + (1 - b2) * g * g;
    double mhat = *m / (1 - pow(b1, t)), vhat = *v / (1 - pow(b2, t));
    *p -= lr * mhat / (sqrt(vhat) + eps);
}

static double adam_grad(int t, int j) { return j == 5 ? 0.0 : 0.3 * sin(1.3 * t + j) + 0.1 * cos(0.4 * t * (j + 1)) - 0.02 * j; }

static void test_adam(void) {
    const struct {
        double lr, b1, b2, eps, wd;
        int decoupled;
        double gscale;
    } cfg[4] = {
        {1e-3, 0.9, 0.999, 1e-8, 0, 0, 1},     /* defaults */
        {1e-2, 0.8, 0.99, 1e-6, 0.01, 0, 0.5}, /* L2 weight decay + clipping */
        {5e-3, 0.9, 0.999, 1e-8, 0.1, 1, 0.25},/* AdamW + clipping */
        {1e-3, 0.9, 0.999, 1e-2, 0.05, 1, 0.1},/* eps large enough to matter */
    };
    enum { NP = 6, STEPS = 30 };
    for (int c = 0; c < 4; c++) {
        vae_adam_hp hp;
        hp.lr = (real)cfg[c].lr;
        hp.beta1 = (real)cfg[c].b1;
        hp.beta2 = (real)cfg[c].b2;
        hp.eps = (real)cfg[c].eps;
        hp.weight_decay = (real)cfg[c].wd;
        hp.decoupled = cfg[c].decoupled;
        real p[NP], m[NP], v[NP];
        double pr[NP], mr[NP], vr[NP];
        for (int j = 0; j < NP; j++) {
            p[j] = (real)(-1.5 + 0.6 * j);
            pr[j] = (double)p[j];
            m[j] = v[j] = 0;
            mr[j] = vr[j] = 0;
        }
        /* the reference runs on the real-rounded hyper-parameters */
        double lr = hp.lr, b1 = hp.beta1, b2 = hp.beta2, eps = hp.eps, wd = hp.weight_decay;
        real gs = (real)cfg[c].gscale;
        for (int t = 1; t <= STEPS; t++) {
            const real bc1 = (real)(1 - pow(b1, t));
            const real bc2 = (real)(1 - pow(b2, t));
            for (int j = 0; j < NP; j++) {
                real g = (real)adam_grad(t, j);
                vae_adam_elem(&p[j], g, &m[j], &v[j], &hp, bc1, bc2, gs);
                adam_ref(&pr[j], &mr[j], &vr[j], (double)g, t, lr, b1, b2, eps, wd, hp.decoupled, (double)gs);
            }
        }
        /* each step rounds p, m, v a few times in real and bc1/bc2 once:
         * 4 EPS_R per step, relative to max(|p|, 1) — 1.4e-5 after 30 float steps,
         * against 30 lr = 3e-2..3e-1 of movement */
        for (int j = 0; j < NP; j++) {
            CHECK_CLOSE(p[j], pr[j], 0, 4 * EPS_R * STEPS * (fabs(pr[j]) + 1));
            CHECK_CLOSE(m[j], mr[j], 4 * EPS_R * STEPS, 1e-30);
            CHECK_CLOSE(v[j], vr[j], 4 * EPS_R * STEPS, 1e-30);
        }
    }

    /* A property of the bias correction, independent of any formula above:
     * the first Adam step (no decay) moves p by lr g/(|g| + eps) ~ lr sign(g).
     * Tolerance: one rounding of p = 1 (EPS_R) relative to lr = 1e-3, plus eps/|g|. */
    {
        vae_adam_hp hp = {(real)1e-3, (real)0.9, (real)0.999, (real)1e-8, 0, 0};
        const real bc1 = 1 - hp.beta1;
        const real bc2 = 1 - hp.beta2;
        real p = 1, m = 0, v = 0;
        vae_adam_elem(&p, (real)0.25, &m, &v, &hp, bc1, bc2, 1);
        CHECK_CLOSE(1 - (double)p, 1e-3, 2 * EPS_R / 1e-3 + 1e-7, 0);
        p = 1;
        m = 0;
        v = 0;
        vae_adam_elem(&p, (real)-4.0, &m, &v, &hp, bc1, bc2, 1);
        CHECK_CLOSE((double)p - 1, 1e-3, 2 * EPS_R / 1e-3 + 1e-7, 0);
    }
}

/* ========================================================= per-step values */

/* vae_step_vals_at / vae_step_begin (vae_math.h, "per-step values") against
 * their definitions, computed here independently:
 *   - batch layout from a running offset that starts at 0, advances by each
 *     batch's rows and wraps at n (no division): row0, rows;
 *   - step = sub = s, next = s + 1;
 *   - kl_scale = beta min(1, (s + 1) / warmup) / rows, in long double;
 *   - bc_i = 1 - beta_i^(s + 1), powl in long double.
 * Tolerances:
 *   kl_scale: bit-equal to vae_kl_beta_at(...) * (1 / rows) in real, which is
 *     what the documented expression rounds to; against the long double value
 *     it is off by the rounding of beta, of the ramp (s + 1) / warmup (double,
 *     then real), of 1 / rows and of two products: <= 5 roundings of EPS_R / 2
 *     = 2.5 EPS_R, allowed 4 EPS_R (float: 4.8e-7, inside 1e-6).
 *   bc_i: computed in double and rounded once to real (the float rounding of
 *     a double). The power x^t (t = s + 1) is a product tree of t factors x
 *     (vae_pow_int), so its relative error is <= (t - 1) u with u = 2^-53 =
 *     DBL_EPSILON / 2, i.e. <= t x^t DBL_EPSILON / 2 absolute; 1 - x^t is
 *     exact by Sterbenz's lemma while x^t >= 1/2, else one rounding of
 *     <= u bc; the final (real) rounding is <= EPS_R / 2 relative. Allowed:
 *     EPS_R relative + (t x^t + 1) DBL_EPSILON absolute, twice the bound. In
 *     the float build the EPS_R term dominates (the double part is < 1e-13);
 *     in the double build the absolute part matters, as 1 - beta2 = 0.001
 *     amplifies the power's error up to ~1000-fold relative to bc2. */
#define KL_TOL (4 * EPS_R)
#define BC_RTOL EPS_R
static long double bc_atol(double x, int64_t t) {
    return ((long double)t * powl((long double)x, (long double)t) + 1) * DBL_EPSILON;
}

static long double kl_ref(const vae_step_plan *p, int64_t s, int rows) {
    long double ramp = 1;
    if (p->warmup > 0 && (long double)(s + 1) < (long double)p->warmup)
        ramp = (long double)(s + 1) / (long double)p->warmup;
    return (long double)p->beta * ramp / rows;
}

static int close_l(long double got, long double want, long double rtol, long double atol) {
    return fabsl(got - want) <= atol + rtol * fabsl(want);
}

/* The learning-rate factor of step s by its definition (vae_math.h,
 * vae_lr_scale_at) in long double with libm's cosl. */
static long double lr_ref(const vae_step_plan *p, int64_t s) {
    if (p->lr_warmup > 0 && s < p->lr_warmup) return (long double)(s + 1) / p->lr_warmup;
    if (p->lr_schedule == VAE_LR_CONSTANT) return 1;
    long double u = 1;
    if (p->total_steps > p->lr_warmup && s < p->total_steps)
        u = (long double)(s - p->lr_warmup) / (long double)(p->total_steps - p->lr_warmup);
    const long double r = p->min_lr_ratio;
    const long double f = p->lr_schedule == VAE_LR_COSINE
                              ? (1 + cosl(3.141592653589793238462643383279503L * u)) / 2
                              : 1 - u;
    return r + (1 - r) * f;
}
/* lr_scale: one rounding to real of a double computation whose absolute
 * error is a few DBL_EPSILON (u's division, the cosine series, two sums:
 * near the end of a cosine to 0 the factor is small and the error absolute,
 * so an absolute term), allowed EPS_R relative + 64 DBL_EPSILON. */
#define LR_RTOL EPS_R
#define LR_ATOL (64 * DBL_EPSILON)

/* Every field of the block of step s, against the references above, given
 * the expected batch layout (row0, rows). Returns the number of bad fields
 * and prints the first few. */
static int check_vals_at(const vae_step_plan *p, int64_t s, int64_t row0, int rows) {
    static int printed = 0;
    vae_step_vals v;
    memset(&v, 0x5A, sizeof v); /* every field must be written */
    vae_step_vals_at(&v, p, s);
    const real kl_exact = vae_kl_beta_at(p->beta, p->warmup, s) * ((real)1 / (real)rows);
    const long double b1 = 1 - powl((long double)p->beta1, (long double)(s + 1));
    const long double b2 = 1 - powl((long double)p->beta2, (long double)(s + 1));
    int bad = 0;
    bad += v.step != s;
    bad += v.next != s + 1;
    bad += v.sub != (uint64_t)s;
    bad += v.row0 != row0;
    bad += v.rows != rows;
    bad += !(v.kl_scale == kl_exact);
    bad += !close_l((long double)v.kl_scale, kl_ref(p, s, rows), KL_TOL, 0);
    bad += !close_l((long double)v.bc1, b1, BC_RTOL, bc_atol(p->beta1, s + 1));
    bad += !close_l((long double)v.bc2, b2, BC_RTOL, bc_atol(p->beta2, s + 1));
    bad += !(v.lr_scale == vae_lr_scale_at(p, s));
    if (!close_l((long double)v.lr_scale, lr_ref(p, s), LR_RTOL, LR_ATOL)) {
        bad++;
        if (printed < 5)
            fprintf(stderr, "lr schedule %d warmup %lld total %lld r %g, step %lld: "
                    "lr_scale %.17g, want %.20Lg\n", p->lr_schedule, (long long)p->lr_warmup,
                    (long long)p->total_steps, p->min_lr_ratio, (long long)s, (double)v.lr_scale,
                    lr_ref(p, s));
    }
    if (bad && printed++ < 5)
        fprintf(stderr,
                "plan n %lld B %d warmup %lld, step %lld: got step %lld next %lld sub %llu "
                "row0 %lld rows %d kl_scale %.9g bc1 %.9g bc2 %.9g; want row0 %lld rows %d "
                "kl_scale %.9g (%.12Lg) bc1 %.12Lg bc2 %.12Lg\n",
                (long long)p->n, p->batch, (long long)p->warmup, (long long)s,
                (long long)v.step, (long long)v.next, (unsigned long long)v.sub,
                (long long)v.row0, v.rows, (double)v.kl_scale, (double)v.bc1, (double)v.bc2,
                (long long)row0, rows, (double)kl_exact, kl_ref(p, s, rows), b1, b2);
    return bad;
}

/* Steps 0 .. steps-1 of plan p with the batch layout from a running offset;
 * also the chain of vae_step_begin from next = 0 over the same steps, which
 * must give vae_step_vals_at's block each time; the first epoch's rows must
 * add up to n. */
static void check_plan(const vae_step_plan *p, int64_t steps, const char *what) {
    int bad = 0, bad_chain = 0, epochs = 0;
    int64_t off = 0, first_epoch_images = -1, images = 0;
    vae_step_vals chain;
    memset(&chain, 0x5A, sizeof chain);
    chain.next = 0;
    for (int64_t s = 0; s < steps; s++) {
        const int64_t left = p->n - off;
        const int rows = (int)(left < p->batch ? left : p->batch);
        bad += check_vals_at(p, s, off, rows);

        vae_step_vals at;
        vae_step_vals_at(&at, p, s);
        vae_step_begin(&chain, p);
        bad_chain += !test_step_vals_equal(&chain, &at);

        images += rows;
        off += rows;
        if (off >= p->n) {
            if (first_epoch_images < 0) first_epoch_images = images;
            off = 0;
            epochs++;
        }
    }
    CHECK_MSG(bad == 0, "%s: %d fields of vae_step_vals_at off over %lld steps", what, bad,
              (long long)steps);
    CHECK_MSG(bad_chain == 0, "%s: %d of %lld vae_step_begin blocks differ from vae_step_vals_at",
              what, bad_chain, (long long)steps);
    CHECK_MSG(first_epoch_images == p->n && epochs >= 3, "%s: first epoch %lld images, %d epochs",
              what, (long long)first_epoch_images, epochs);
}

/* vae_pow_int(x, n) = x^n by products only: against powl in long double,
 * within the bound of any product tree of n factors, (n - 1) u relative
 * (u = DBL_EPSILON / 2), allowed (n + 1) u; exact where every partial product
 * is exact; 0 once x^n underflows. */
static void test_pow_int(void) {
    const double xs[] = {0.9, 0.999, 0.9999, 0.5, 0.75, 0.99, 1.0, 1.5, -0.9};
    const int64_t ns[] = {0, 1, 2, 3, 7, 8, 42, 255, 300, 1000, 4097, 123457};
    int bad = 0;
    for (size_t i = 0; i < sizeof xs / sizeof xs[0]; i++)
        for (size_t j = 0; j < sizeof ns / sizeof ns[0]; j++) {
            const double x = xs[i];
            const int64_t n = ns[j];
            const long double want = powl((long double)x, (long double)n);
            if (fabsl(want) > 1e300L || (want != 0 && fabsl(want) < 1e-300L)) continue;
            const double got = vae_pow_int(x, n);
            const long double tol = (long double)(n + 1) * (DBL_EPSILON / 2) * fabsl(want);
            if (!(fabsl((long double)got - want) <= tol)) {
                bad++;
                fprintf(stderr, "vae_pow_int(%.17g, %lld) = %.17g, powl %.20Lg\n", x,
                        (long long)n, got, want);
            }
        }
    CHECK_MSG(bad == 0, "%d vae_pow_int values off", bad);
    CHECK(vae_pow_int(0.9, 0) == 1.0 && vae_pow_int(0.0, 0) == 1.0 && vae_pow_int(0.9, 1) == 0.9);
    CHECK(vae_pow_int(0.5, 10) == 0x1p-10 && vae_pow_int(-2.0, 5) == -32.0 &&
          vae_pow_int(3.0, 20) == 3486784401.0);
    CHECK(vae_pow_int(1.0, (int64_t)1 << 40) == 1.0);
    CHECK(vae_pow_int(0.999, (int64_t)1 << 40) == 0.0); /* underflow */
}

/* vae_cos_pi(t) = cos(pi t) against cosl on a fine grid of [0, 1] and at
 * the points where it is exact: within 4 DBL_EPSILON absolute (the series'
 * Horner steps; its truncation is ~1e-28). */
static void test_cos_pi(void) {
    int bad = 0;
    double worst = 0;
    for (int i = 0; i <= 200000; i++) {
        const double t = i / 200000.0;
        const long double want = cosl(3.141592653589793238462643383279503L * (long double)t);
        const double e = (double)fabsl((long double)vae_cos_pi(t) - want);
        if (e > worst) worst = e;
        bad += !(e <= 4 * DBL_EPSILON);
    }
    CHECK_MSG(bad == 0, "%d vae_cos_pi values off by more than 4 DBL_EPSILON (worst %.3g)", bad,
              worst);
    CHECK(fabs(vae_cos_pi(0) - 1) <= DBL_EPSILON && fabs(vae_cos_pi(1) + 1) <= DBL_EPSILON);
    CHECK(fabs(vae_cos_pi(0.5)) <= DBL_EPSILON);
    CHECK(fabs(vae_cos_pi(1.0 / 3) - 0.5) <= 2 * DBL_EPSILON);
}

/* The learning-rate schedule's factor (vae_lr_scale_at) at the points its
 * definition pins: the warm-up's (s + 1) / W, 1 where the decay starts, the
 * midpoint of a cosine (1 + r) / 2, r from the run's last step on; rising
 * through the warm-up and falling after it. check_plan compares every step
 * with lr_ref. */
static void test_lr_schedule(void) {
    vae_step_plan p = {1000, 128, 0, 1.0, 0.9, 0.999, VAE_LR_CONSTANT, 0, 0, 0};
    p.lr_schedule = VAE_LR_COSINE, p.lr_warmup = 10, p.total_steps = 110, p.min_lr_ratio = 0.1;
    CHECK(vae_lr_scale_at(&p, 0) == (real)0.1 && vae_lr_scale_at(&p, 4) == (real)0.5);
    CHECK(vae_lr_scale_at(&p, 9) == 1 && vae_lr_scale_at(&p, 10) == 1);
    CHECK(vae_lr_scale_at(&p, 60) == (real)0.55);                 /* u = 1/2 */
    CHECK(close_l(vae_lr_scale_at(&p, 35), 0.1L + 0.9L * (1 + sqrtl(0.5L)) / 2, LR_RTOL, LR_ATOL));
    CHECK(close_l(vae_lr_scale_at(&p, 110), 0.1L, LR_RTOL, LR_ATOL)); /* the end and past it */
    CHECK(close_l(vae_lr_scale_at(&p, 1000000), 0.1L, LR_RTOL, LR_ATOL));
    int bad = 0;
    for (int64_t s = 0; s < 120; s++) {
        const real a = vae_lr_scale_at(&p, s), b = vae_lr_scale_at(&p, s + 1);
        bad += s < 9 ? !(a < b) : !(a >= b);
        bad += !(a > 0 && a <= 1);
    }
    CHECK_MSG(bad == 0, "cosine: %d steps break the rise / fall", bad);
    p.lr_schedule = VAE_LR_LINEAR, p.min_lr_ratio = 0;
    CHECK(vae_lr_scale_at(&p, 10) == 1 && vae_lr_scale_at(&p, 35) == (real)0.75);
    CHECK(vae_lr_scale_at(&p, 60) == (real)0.5 && vae_lr_scale_at(&p, 110) == 0);
    p.lr_schedule = VAE_LR_CONSTANT;
    CHECK(vae_lr_scale_at(&p, 4) == (real)0.5 && vae_lr_scale_at(&p, 10) == 1 &&
          vae_lr_scale_at(&p, 1000) == 1);
    p.lr_warmup = 0;
    CHECK(vae_lr_scale_at(&p, 0) == 1);
    /* a warm-up as long as the run: the decay has nothing left, r after it */
    p.lr_schedule = VAE_LR_COSINE, p.lr_warmup = 110, p.min_lr_ratio = 0.25;
    CHECK(vae_lr_scale_at(&p, 109) == 1);
    CHECK(close_l(vae_lr_scale_at(&p, 110), 0.25L, LR_RTOL, LR_ATOL));
    /* a hand-made block has no schedule */
    CHECK(vae_step_vals_make(3, 0, 3, 1, 1, 1, 1).lr_scale == 1);
    /* Adam's rate: hp->lr times the factor, hp->lr itself at a factor of 1 */
    const vae_adam_hp hp = {(real)3e-3, (real)0.9, (real)0.999, (real)1e-8, 0, 0};
    vae_step_vals v = vae_step_vals_make(3, 0, 3, 1, 1, 1, 1);
    CHECK(vae_adam_hp_at(&hp, &v).lr == hp.lr);
    v.lr_scale = (real)0.25;
    CHECK(vae_adam_hp_at(&hp, &v).lr == hp.lr * (real)0.25);
    CHECK(vae_adam_hp_at(&hp, &v).beta2 == hp.beta2);
}

static void test_per_step_vals(void) {
    test_pow_int();
    test_cos_pi();
    test_lr_schedule();

    /* n = 1000, batch 128: 8 steps per epoch, the 8th of 1000 - 7 * 128 = 104 */
    const vae_step_plan p = {1000, 128, 300, 0.7, 0.9, 0.999, VAE_LR_CONSTANT, 0, 0, 0};
    /* 400 steps: 50 epochs, the warm-up boundary (s + 1 = 300) and 100 steps after */
    check_plan(&p, 400, "n 1000 B 128 warmup 300");

    /* the same steps with the layout written as constants */
    int bad = 0;
    for (int64_t s = 0; s < 400; s++) {
        const int rows = s % 8 == 7 ? 104 : 128;
        bad += check_vals_at(&p, s, (s % 8) * 128, rows);
    }
    /* far steps: past 2^31 and 2^32 (int64 step, uint64 sub) */
    const int64_t far[] = {1000003, ((int64_t)1 << 31) - 1, (int64_t)1 << 31,
                           ((int64_t)1 << 33) + 7, ((int64_t)1 << 40) + 5};
    for (size_t i = 0; i < sizeof far / sizeof far[0]; i++) {
        const int64_t s = far[i];
        bad += check_vals_at(&p, s, (s % 8) * 128, s % 8 == 7 ? 104 : 128);
    }
    CHECK_MSG(bad == 0, "%d fields off (explicit layout, far steps)", bad);

    /* the KL ramp: rising by beta / warmup a step up to s = warmup - 1, where
     * it reaches beta exactly, then flat */
    int bad_ramp = 0;
    for (int64_t s = 0; s < 400; s++) {
        const real b = vae_kl_beta_at(0.7, 300, s);
        if (s >= 299) bad_ramp += b != (real)0.7;
        else bad_ramp += !(b < vae_kl_beta_at(0.7, 300, s + 1)) ||
                         !close_l((long double)b, 0.7L * (s + 1) / 300, 2 * EPS_R, 0);
    }
    CHECK_MSG(bad_ramp == 0, "%d KL ramp values off", bad_ramp);
    CHECK(vae_kl_beta_at(0.7, 300, 0) > 0);
    CHECK(vae_kl_beta_at(0.7, 0, 0) == (real)0.7 && vae_kl_beta_at(0.7, 0, 5) == (real)0.7);

    /* vae_step_begin from next = s gives vae_step_vals_at(s), whatever else
     * the block held, chained across the 2^31 and 2^32 boundaries */
    int bad_chain = 0;
    const int64_t starts[] = {299 - 20, ((int64_t)1 << 31) - 10, ((int64_t)1 << 32) - 10};
    for (size_t i = 0; i < sizeof starts / sizeof starts[0]; i++) {
        vae_step_vals c, at;
        memset(&c, 0xA5, sizeof c);
        c.next = starts[i];
        for (int64_t s = starts[i]; s < starts[i] + 40; s++) {
            vae_step_begin(&c, &p);
            vae_step_vals_at(&at, &p, s);
            bad_chain += !test_step_vals_equal(&c, &at) || c.next != s + 1 || c.step != s;
        }
    }
    CHECK_MSG(bad_chain == 0, "%d chained vae_step_begin blocks off", bad_chain);

    /* edges: n divisible by the batch (no short batch), no warm-up */
    const vae_step_plan even = {1024, 128, 0, 0.7, 0.9, 0.999, VAE_LR_CONSTANT, 0, 0, 0};
    check_plan(&even, 100, "n 1024 B 128 warmup 0");
    bad = 0;
    for (int64_t s = 0; s < 100; s++) {
        vae_step_vals v;
        vae_step_vals_at(&v, &even, s);
        bad += v.rows != 128 || v.row0 != (s % 8) * 128;
        bad += !(v.kl_scale == (real)0.7 * ((real)1 / (real)128));
    }
    CHECK_MSG(bad == 0, "%d blocks of the even plan off", bad);
    /* one short batch per epoch (n < B), other Adam betas */
    const vae_step_plan tiny = {100, 128, 7, 2.5, 0.5, 0.75, VAE_LR_CONSTANT, 0, 0, 0};
    check_plan(&tiny, 20, "n 100 B 128 warmup 7");
    /* batch 1 */
    const vae_step_plan one = {3, 1, 2, 1.0, 0.9, 0.999, VAE_LR_CONSTANT, 0, 0, 0};
    check_plan(&one, 12, "n 3 B 1 warmup 2");
    /* learning-rate schedules over 50 epochs of 8 steps (400), and past the
     * run's end (a plan of 300 steps checked over 400) */
    vae_step_plan lr = p;
    lr.lr_schedule = VAE_LR_COSINE, lr.lr_warmup = 37, lr.total_steps = 400;
    lr.min_lr_ratio = 0.01;
    check_plan(&lr, 400, "cosine, warm-up 37, r 0.01");
    lr.lr_warmup = 0, lr.min_lr_ratio = 0, lr.total_steps = 300;
    check_plan(&lr, 400, "cosine to 0 over 300 steps");
    lr.lr_schedule = VAE_LR_LINEAR, lr.lr_warmup = 5, lr.min_lr_ratio = 0.5;
    check_plan(&lr, 400, "linear, warm-up 5, r 0.5");
    lr.lr_schedule = VAE_LR_CONSTANT, lr.lr_warmup = 100;
    check_plan(&lr, 400, "constant, warm-up 100");
}

/* ============================================================== conversion */

/* Inputs go through a volatile so that the conversions run at run time and are
 * not constant-folded (an out-of-range float -> uint8_t conversion is undefined
 * and gcc folds it to a saturated value). */
static uint8_t u8_of(double x, int is_logit) {
    volatile real vx = (real)x;
    return vae_to_u8(vx, is_logit);
}

static void test_to_u8(void) {
    CHECK(u8_of(0, 0) == 0);
    CHECK(u8_of(1, 0) == 255);
    CHECK(u8_of(0.5, 0) == 128); /* 127.5 + 0.5 rounds half up */
    CHECK(u8_of(0, 1) == 128);   /* sigmoid(0) = 0.5 */
    CHECK(u8_of(NAN, 0) == 0);
    CHECK(u8_of(NAN, 1) == 0);
    CHECK(u8_of(1.5, 0) == 255);
    CHECK(u8_of(1.01, 0) == 255);
    CHECK(u8_of(1e30, 0) == 255);
    CHECK(u8_of(INFINITY, 0) == 255);
    CHECK(u8_of(-0.3, 0) == 0);
    CHECK(u8_of(-INFINITY, 0) == 0);
    CHECK(u8_of(100, 1) == 255 && u8_of(-100, 1) == 0);
    CHECK(u8_of(INFINITY, 1) == 255 && u8_of(-INFINITY, 1) == 0);
    /* round to nearest: k/255 -> k, (k + 0.49)/255 -> k, (k + 0.51)/255 -> k + 1 */
    int bad = 0;
    for (int k = 0; k <= 255; k++) {
        bad += u8_of((double)((real)k / 255), 0) != k;
        if (k < 255) {
            bad += u8_of((k + 0.49) / 255, 0) != k;
            bad += u8_of((k + 0.51) / 255, 0) != k + 1;
        }
        /* logits: logit((k + 0.1)/255) maps to k (0 < k < 255) */
        if (k > 0 && k < 255) {
            double q = (k + 0.1) / 255.0;
            bad += u8_of(log(q / (1 - q)), 1) != k;
        }
    }
    CHECK_MSG(bad == 0, "%d rounding errors in vae_to_u8", bad);
}

/* Phi^-1 against closed-form and tabulated values, and as the inverse of
 * Phi(x) = erfc(-x / sqrt 2) / 2 (C's erfc, an independent implementation)
 * over the whole range, tails included. Tolerance: the Halley step gives
 * ~1e-15 relative; 1e-12 leaves room for erfc's own error in the far tails. */
static void test_norm_quantile(void) {
    CHECK(vae_norm_quantile(0.5) == 0.0 || fabs(vae_norm_quantile(0.5)) < 1e-15);
    CHECK_CLOSE(vae_norm_quantile(0.975), 1.959963984540054, 1e-13, 0);
    CHECK_CLOSE(vae_norm_quantile(0.025), -1.959963984540054, 1e-13, 0);
    CHECK_CLOSE(vae_norm_quantile(0.8413447460685429), 1.0, 1e-12, 0); /* Phi(1) */
    CHECK_CLOSE(vae_norm_quantile(1e-10), -6.361340902404056, 1e-12, 0);
    CHECK(isinf(vae_norm_quantile(0.0)) && vae_norm_quantile(0.0) < 0);
    CHECK(isinf(vae_norm_quantile(1.0)) && vae_norm_quantile(1.0) > 0);
    CHECK(isnan(vae_norm_quantile(NAN)));
    double worst = 0;
    for (int i = 1; i < 20000; i++) {
        double p = i / 20000.0;
        if (i % 2) p = pow(10.0, -1.0 - 15.0 * i / 20000.0); /* tails down to 1e-16 */
        double x = vae_norm_quantile(p);
        double back = 0.5 * erfc(-x / sqrt(2.0));
        double rel = fabs(back - p) / p;
        if (rel > worst) worst = rel;
    }
    CHECK_MSG(worst < 1e-12, "Phi(Phi^-1(p)) relative error %.3g", worst);
    /* monotone and antisymmetric */
    int bad = 0;
    for (int i = 1; i < 1000; i++) {
        bad += !(vae_norm_quantile(i / 1000.0) < vae_norm_quantile((i + 1) / 1000.0));
        bad += fabs(vae_norm_quantile(i / 1000.0) + vae_norm_quantile(1 - i / 1000.0)) > 1e-12;
    }
    CHECK_MSG(bad == 0, "%d monotonicity/symmetry failures", bad);
}

/* Grid coordinates and the latents of every kind, from the formulas in
 * vae_math.h's comment, computed here independently. */
static void test_latents(void) {
    CHECK(vae_grid_coord(0, 5, 0, 3.0) == -3.0 && vae_grid_coord(4, 5, 0, 3.0) == 3.0);
    CHECK(vae_grid_coord(2, 5, 0, 3.0) == 0.0 && vae_grid_coord(0, 1, 0, 3.0) == 0.0);
    CHECK_CLOSE(vae_grid_coord(0, 4, 1, 0), vae_norm_quantile(0.125), 0, 0);

    enum { L = 5 };
    real vec[2 * L] = {1, -2, 0.5f, 3, -1, 0.25f, 4, -0.5f, 1, 2};
    vae_latent_spec s;
    memset(&s, 0, sizeof s);
    s.L = L;
    s.kind = VAE_LATENT_GRID, s.d1 = 3, s.d2 = 0, s.steps = 6, s.range = 2.5;
    int bad = 0;
    for (int64_t i = 0; i < 36; i++)
        for (int l = 0; l < L; l++) {
            double want = l == 3 ? -2.5 + 5.0 * (double)(i % 6) / 5
                        : l == 0 ? -2.5 + 5.0 * (double)(i / 6) / 5 : (double)vec[l];
            bad += fabs((double)vae_latent_elem(&s, vec, i, l) - want) > 1e-6;
        }
    CHECK_MSG(bad == 0, "%d grid latents off", bad);

    s.kind = VAE_LATENT_PRIOR, s.seed = 99;
    bad = 0;
    for (int64_t i = 0; i < 20; i++)
        for (int l = 0; l < L; l++)
            bad += vae_latent_elem(&s, NULL, i, l) !=
                   vae_normal_at(99, VAE_RNG_PRIOR, 0, (uint64_t)(i * L + l));
    CHECK_MSG(bad == 0, "%d prior latents are not the documented Philox draws", bad);

    double ab = 0, aa = 0, bb = 0;
    for (int l = 0; l < L; l++) {
        ab += (double)vec[l] * vec[L + l];
        aa += (double)vec[l] * vec[l];
        bb += (double)vec[L + l] * vec[L + l];
    }
    const double w = acos(ab / sqrt(aa * bb));
    s.steps = 9, s.omega = w;
    bad = 0;
    for (int64_t i = 0; i < 9; i++) {
        double t = i / 8.0;
        double na = 0, nlin = 0;
        for (int l = 0; l < L; l++) {
            s.kind = VAE_LATENT_LERP;
            double lin = vae_latent_elem(&s, vec, i, l);
            bad += fabs(lin - ((1 - t) * vec[l] + t * vec[L + l])) > 1e-6;
            s.kind = VAE_LATENT_SLERP;
            double sl = vae_latent_elem(&s, vec, i, l);
            bad += fabs(sl - (sin((1 - t) * w) * vec[l] + sin(t * w) * vec[L + l]) / sin(w)) > 1e-6;
            na += sl * sl, nlin += lin * lin;
        }
        /* slerp between vectors of equal norm keeps the norm; here the norms
         * differ, but slerp never dips below lerp's norm at interior points */
        if (i > 0 && i < 8) bad += !(na >= nlin - 1e-9);
    }
    CHECK_MSG(bad == 0, "%d interpolation latents off", bad);
    /* parallel endpoints: slerp falls back to lerp */
    real par[2 * L] = {1, 2, 3, 4, 5, 2, 4, 6, 8, 10};
    s.kind = VAE_LATENT_SLERP, s.omega = 0, s.steps = 3;
    CHECK_CLOSE(vae_latent_elem(&s, par, 1, 2), 4.5, 1e-6, 0);
}

/* Round-to-nearest-even to `bits` mantissa bits, against a reference in
 * double: ulp = 2^(e - bits) with e the binade of x, r = rint(x / ulp) ulp
 * (rint rounds half to even in the default mode). */
static double round_ref(double x, int bits) {
    if (x == 0 || !isfinite(x)) return x;
    int e;
    frexp(x, &e); /* x = f 2^e, 0.5 <= |f| < 1 */
    double ulp = ldexp(1.0, e - 1 - bits);
    if (e - 1 < -126) ulp = ldexp(1.0, -126 - bits); /* subnormals: fixed ulp */
    return rint(x / ulp) * ulp;
}

static void test_round_mantissa(void) {
    CHECK(vae_round_mantissa(1.0f, 7) == 1.0f);
    CHECK(vae_round_mantissa(1.0f + 0x1p-8f, 7) == 1.0f);                /* tie -> even */
    CHECK(vae_round_mantissa(1.0f + 0x1p-7f + 0x1p-8f, 7) == 1.0f + 0x1p-6f); /* tie -> even */
    CHECK(vae_round_mantissa(1.0f + 0x1p-8f + 0x1p-20f, 7) == 1.0f + 0x1p-7f);
    CHECK(vae_round_mantissa(1.2345678f, 23) == 1.2345678f);
    CHECK(isnan(vae_round_mantissa(NAN, 7)) && isinf(vae_round_mantissa(INFINITY, 10)));
    CHECK(isinf(vae_round_mantissa(3.4e38f, 7))); /* FLT_MAX region rounds up to inf in bf16 */
    int bad = 0;
    for (uint64_t i = 0; i < 200000; i++) {
        vae_u32x4 r = vae_philox4x32_10((vae_u32x4){{(uint32_t)i, 0, 0, 0}}, 1234, 5678);
        float x;
        uint32_t u = r.v[0];
        if ((u & 0x7f800000u) == 0x7f800000u) continue;
        memcpy(&x, &u, 4);
        for (int bits = 7; bits <= 10; bits += 3) {
            double want = round_ref((double)x, bits);
            if (fabs(want) >= 3.4028234663852886e38) continue; /* overflow tested above */
            bad += (double)vae_round_mantissa(x, bits) != want;
        }
    }
    CHECK_MSG(bad == 0, "%d of 400000 random floats rounded differently from the reference", bad);
}

int main(void) {
    printf("test_math (%s)\n", VAE_REAL_NAME);
    test_philox_kat();
    test_counter_layout();
    test_box_muller();
    test_normals();
    test_bce();
    test_gauss_nll();
    test_kl();
    test_reparam();
    test_adam();
    test_per_step_vals();
    test_to_u8();
    test_norm_quantile();
    test_latents();
    test_round_mantissa();
    return test_finish();
}

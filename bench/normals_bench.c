/* normals_bench.c — the host side of vae_math.h's normals: how fast this
 * build draws them (vae_normal4_at, one thread) and how far its float
 * Box-Muller is from the exact pair over many word pairs.
 *
 *   vae_normals_bench [PAIRS]      (default 2e8 pairs; 2e8 take about a minute)
 *
 * Accuracy: for each word pair (wa, wb), vae_box_muller's (r sin, r cos)
 * against the same pair in long double from the definition (u = (w + 1/2)
 * 2^-32, r = sqrt(-2 ln u_a), theta = 2 pi u_b), as the error over
 * FLT_EPSILON |z| (the bound tests/test_math.c holds it to is 4), and r's
 * relative error over FLT_EPSILON. The pairs: 65,536 structured ones, then
 * xorshift words, with every 7th wa near 2^32 (u near 1) and every 11th wb
 * within 4 of a multiple of 2^29 (eighths of a turn: the quadrant split). */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "vae_math.h"

static long double u01l(uint32_t w) { return ((long double)w + 0.5L) / 4294967296.0L; }

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int main(int argc, char **argv) {
    long pairs = argc > 1 ? (long)strtod(argv[1], NULL) : 200000000L;
    if (pairs < 65536) pairs = 65536;

    /* speed: 2^24 normals through vae_normal4_at, best of 5 */
    enum { N = 1 << 24 };
    float *z = malloc(N * sizeof *z);
    if (!z) {
        perror("malloc");
        return 1;
    }
    double best = 1e30, sum = 0;
    for (int rep = 0; rep < 5; rep++) {
        double t0 = now_s();
        for (uint64_t g = 0; g < N / 4; g++) {
            real four[4];
            vae_normal4_at(7, VAE_RNG_PRIOR, 0, g, four);
            for (int j = 0; j < 4; j++) z[4 * g + (uint64_t)j] = (float)four[j];
        }
        double t = now_s() - t0;
        if (t < best) best = t;
    }
    for (int i = 0; i < N; i++) sum += z[i];
    free(z);
    printf("speed: %.1f M normals/s (vae_normal4_at, one thread, best of 5 x 2^24; mean %.2e)\n",
           N / best / 1e6, sum / N);

    /* accuracy */
    const long double two_pi = 6.283185307179586476925286766559005768L;
    uint64_t x = 88172645463325252ull;
    double worst_z = 0, worst_rz = 0, worst_r = 0;
    uint32_t at_a = 0, at_b = 0;
    for (long k = 0; k < pairs; k++) {
        uint32_t wa, wb;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if (k < 65536) {
            wa = (uint32_t)k * 65537u;
            wb = (uint32_t)k;
        } else {
            wa = (uint32_t)x;
            wb = (uint32_t)(x >> 32);
        }
        if (k % 7 == 0) wa = (uint32_t)(x >> 40) ^ 0xFFFFFF00u;
        if (k % 11 == 0) wb = ((uint32_t)(x >> 50) << 29) + (uint32_t)(x & 7) - 4u;
        float zs, zc;
        vae_box_muller(wa, wb, &zs, &zc);
        long double r = sqrtl(-2.0L * logl(u01l(wa))), th = two_pi * u01l(wb);
        long double want[2] = {r * sinl(th), r * cosl(th)};
        float got[2] = {zs, zc};
        for (int i = 0; i < 2; i++) {
            double e = fabs((double)((long double)got[i] - want[i]));
            double ez = e / (FLT_EPSILON * fmax(fabs((double)want[i]), FLT_MIN));
            double er = e / (FLT_EPSILON * (double)r);
            if (ez > worst_z) {
                worst_z = ez;
                at_a = wa;
                at_b = wb;
            }
            if (er > worst_rz) worst_rz = er;
        }
        double rr = fabs((double)((long double)sqrtf(-2.0f * vae_bm_log_u(wa)) - r)) /
                    (FLT_EPSILON * (double)r);
        if (rr > worst_r) worst_r = rr;
    }
    printf("accuracy over %ld pairs: worst |z - exact| = %.3f FLT_EPSILON |z| (wa %08x, wb %08x), "
           "%.3f FLT_EPSILON r; worst r error %.3f FLT_EPSILON r\n",
           pairs, worst_z, at_a, at_b, worst_rz, worst_r);
    return 0;
}

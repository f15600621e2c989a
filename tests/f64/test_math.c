/* tests/f64/test_math.c — the vae_math.h checks of tests/test_math.c in the
 * double-precision build (real = double); tolerances there are in units of
 * EPS_R, so they tighten automatically. */
#ifndef VAE_REAL_DOUBLE
#error "tests/f64/test_math.c must be compiled with -DVAE_REAL_DOUBLE"
#endif
#include "../test_math.c"

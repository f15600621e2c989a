/* backend.c — picks the backend for --device cpu|cuda|auto. */
#include <stdio.h>
#include <string.h>

#include "vae_backend.h"

#ifndef VAE_HAVE_CUDA
/* CPU-only build: the CUDA backend is not compiled in. */
int vae_cuda_available(char *why, size_t why_len) {
    if (why && why_len) snprintf(why, why_len, "this build has no CUDA backend (built without nvcc/cuDNN)");
    return 0;
}
int vae_cuda_describe(int device, char *out, size_t len) {
    (void)device;
    if (out && len) snprintf(out, len, "not available: this build has no CUDA backend (built without nvcc/cuDNN)");
    return 0;
}
vae_backend *vae_backend_cuda_create(int device) {
    (void)device;
    vae_error_set(VAE_EDEVICE, "this build has no CUDA backend (built without nvcc/cuDNN)");
    return NULL;
}
#endif

vae_backend *vae_backend_create(vae_device dev, int threads) {
    if (dev == VAE_DEVICE_CPU) return vae_backend_cpu_create(threads);
#ifdef VAE_REAL_DOUBLE
    /* the double-precision test library has only the CPU backend */
    if (dev == VAE_DEVICE_CUDA) {
        vae_error_set(VAE_EDEVICE, "--device cuda: not available in the double-precision build");
        return NULL;
    }
    return vae_backend_cpu_create(threads);
#else
    char why[512] = "";
    int ok = vae_cuda_available(why, sizeof why);
    if (dev == VAE_DEVICE_CUDA) {
        if (!ok) {
            vae_error_set(VAE_EDEVICE, "--device cuda: no usable GPU: %s", why);
            return NULL;
        }
        return vae_backend_cuda_create(0);
    }
    /* auto */
    if (ok) {
        vae_backend *be = vae_backend_cuda_create(0);
        if (be) return be;
        snprintf(why, sizeof why, "%s", vae_error_get());
    }
    fprintf(stderr, "vae: running on the CPU (--device auto): %s\n", why);
    return vae_backend_cpu_create(threads);
#endif
}

/* util.c — error messages, checked allocation, clock. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vae_core.h"

static _Thread_local char g_err[2048];

int vae_error_set(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_err, sizeof g_err, fmt, ap);
    va_end(ap);
    return code;
}

int vae_error_prefix(int code, const char *fmt, ...) {
    char old[sizeof g_err];
    memcpy(old, g_err, sizeof old);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(g_err, sizeof g_err, fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n < sizeof g_err - 2) {
        size_t used = (size_t)n;
        g_err[used++] = ':';
        g_err[used++] = ' ';
        size_t room = sizeof g_err - used - 1, len = strlen(old);
        if (len > room) len = room;
        memcpy(g_err + used, old, len);
        g_err[used + len] = 0;
    }
    return code;
}

const char *vae_error_get(void) { return g_err[0] ? g_err : "unknown error"; }

void vae_panic(const char *file, int line, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "vae: internal error at %s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    abort();
}

void *vae_malloc(size_t n, size_t size) {
    if (size && n > (size_t)-1 / size) {
        vae_error_set(VAE_ENOMEM, "allocation of %zu x %zu bytes overflows", n, size);
        return NULL;
    }
    size_t bytes = n * size;
    void *p = malloc(bytes ? bytes : 1);
    if (!p) vae_error_set(VAE_ENOMEM, "out of host memory allocating %zu bytes", n * size);
    return p;
}

void *vae_calloc(size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) vae_error_set(VAE_ENOMEM, "out of host memory allocating %zu x %zu bytes", n, size);
    return p;
}

void *vae_malloc_aligned(size_t bytes) {
    void *p = NULL;
    size_t sz = (bytes + 63) & ~(size_t)63;
    if (sz < bytes || posix_memalign(&p, 64, sz ? sz : 64) != 0) {
        vae_error_set(VAE_ENOMEM, "out of host memory allocating %zu bytes", bytes);
        return NULL;
    }
    return p;
}

void vae_free_aligned(void *p) { free(p); }

double vae_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int64_t vae_host_memory_available(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return -1;
    char line[256];
    long long kb = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %lld kB", &kb) == 1) break;
    fclose(f);
    return kb < 0 ? -1 : (int64_t)kb * 1024;
}

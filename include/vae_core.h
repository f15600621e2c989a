/* vae_core.h — basic types, the precision switch and error helpers shared by all host code.
 *
 * Dimension letters used throughout the project (defined once, here):
 *   B batch, C channels, H height, W width, D = C*H*W pixels of one image,
 *   L latent size, I/O input/output features of a dense layer, K = Cin*kh*kw.
 *
 * Precision: host code is written against `real`. The production build uses
 * float; the test-only library libvae_f64 compiles the same sources with
 * -DVAE_REAL_DOUBLE so finite-difference checks of every op and of the whole
 * model run in double precision on exactly the same lines of code.
 */
#ifndef VAE_CORE_H
#define VAE_CORE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifdef VAE_REAL_DOUBLE
typedef double real;
#define VAE_REAL_NAME "F64"
#else
typedef float real;
#define VAE_REAL_NAME "F32"
#endif

/* Status codes for recoverable errors. Functions that can fail on user input
 * return int: VAE_OK (0) or a negative code, after writing a message with
 * vae_error_set(). The caller prints vae_error_get(). */
enum {
    VAE_OK = 0,
    VAE_EINVAL = -1, /* bad argument, malformed file, config error */
    VAE_EIO = -2,    /* open/read/write/fsync failure */
    VAE_ENOMEM = -3, /* allocation failed */
    VAE_EDEVICE = -4, /* backend unavailable or failed */
    VAE_ENOTFOUND = -5 /* a data file looked for is not there (vae_dataset_load) */
};

/* Thread-local last error message, printf-style. Returns `code` so that
 * `return vae_error_set(VAE_EINVAL, "%s: ...", path);` reads naturally. */
int vae_error_set(int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* Prefix the current message: "<prefix>: <old message>". Returns `code`. */
int vae_error_prefix(int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
const char *vae_error_get(void);

/* `git describe --always --dirty --tags` of the sources this library was
 * built from ("unknown" outside a git checkout); generated at build time. */
const char *vae_git_describe(void);

/* Broken invariants (programming errors, not user input): print the
 * expression, file and line and abort. */
#define VAE_ASSERT(cond)                                                       \
    do {                                                                       \
        if (!(cond)) vae_panic(__FILE__, __LINE__, "assertion failed: %s", #cond); \
    } while (0)
void vae_panic(const char *file, int line, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((noreturn, format(printf, 3, 4)))
#endif
    ;

/* Checked allocation for host buffers whose size may come from user data:
 * returns NULL and sets VAE_ENOMEM with the byte count on failure or on
 * n*size overflow. Never aborts. */
void *vae_malloc(size_t n, size_t size);
void *vae_calloc(size_t n, size_t size);
/* 64-byte aligned; free with vae_free_aligned. */
void *vae_malloc_aligned(size_t bytes);
void vae_free_aligned(void *p);

/* Wall clock in seconds (monotonic). */
double vae_now(void);
/* Bytes of host memory available to a new allocation without swapping
 * (MemAvailable in /proc/meminfo), or -1 where that is not known. */
int64_t vae_host_memory_available(void);

#ifdef __cplusplus
}
#endif
#endif /* VAE_CORE_H */

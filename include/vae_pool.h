/* vae_pool.h — a fixed set of threads that run one loop together: the CPU
 * backend's GEMM slices and its element-wise and data-movement passes
 * (im2col, col2im, Adam, activations), with OpenBLAS itself on one thread.
 *
 * vae_pool_for(p, n, grain, fn, ctx) cuts [0, n) into k contiguous parts,
 * k = min(VAE_POOL_PARTS threads, n / grain) (at least 1), part i = [n i / k,
 * n (i+1) / k), runs fn(ctx, lo, hi) once per part and returns when all are
 * done. The parts are taken by whichever thread is free first, the caller
 * included (so a thread the scheduler has put behind another process does
 * not hold the loop up), so a part may run on any of them. A loop whose
 * iterations write disjoint data therefore gives the same bits as fn(ctx,
 * 0, n), whatever the thread count or the order; nothing here reduces
 * across parts. A pool that another thread is using, a NULL pool or k = 1
 * runs fn(ctx, 0, n) in the caller. */
#ifndef VAE_POOL_H
#define VAE_POOL_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* parts per thread, at most: room to even out threads that run slower */
#define VAE_POOL_PARTS 4

typedef struct vae_pool vae_pool;
typedef void (*vae_pool_fn)(void *ctx, size_t lo, size_t hi);

/* CPUs this process may run on (its affinity mask, as OpenBLAS counts them),
 * else the online ones; 1 to 1024. */
int vae_cpus_usable(void);

/* A pool of `threads` (the caller and threads - 1 workers; threads <= 0:
 * vae_cpus_usable()). NULL with the error set when a thread cannot be
 * started; a pool of 1 starts none. */
vae_pool *vae_pool_create(int threads);
int vae_pool_threads(const vae_pool *p);
void vae_pool_for(vae_pool *p, size_t n, size_t grain, vae_pool_fn fn, void *ctx);
void vae_pool_destroy(vae_pool *p);

#ifdef __cplusplus
}
#endif
#endif

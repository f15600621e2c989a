/* emu_launch.h — one kernel launch of the CPU emulator, as data (C and C++),
 * for a host runtime that records launches into graphs (tests/mock). */
#ifndef VAE_EMU_LAUNCH_H
#define VAE_EMU_LAUNCH_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    unsigned grid[3], block[3];
    size_t smem;
    void *stream;             /* the cudaStream_t it was launched on */
    void (*body)(void *);     /* runs one thread's kernel body */
    void *arg;                /* body's argument (the kernel and its arguments) */
    size_t arg_size;          /* bytes at arg: a plain copy is a valid argument */
    const char *site;         /* file:line of the launch */
    int free;                 /* barrier-free (cu2cpp.py) */
    int pdl;                  /* by vae_launch: each thread must pass VAE_PDL_ENTRY() */
} vae_emu_launch_rec;

/* When set (by tests/mock), every launch is offered to it first; a nonzero
 * return means it took the launch, which then does not run now: 1 recorded
 * it (into a graph being captured, or a stream's queue of work to run
 * later), 2 refused it (a capture already invalidated: the launch's error
 * is then cudaErrorStreamCaptureInvalidated, as the runtime's), 3 refused
 * it with the error already set (vae_emu_launch_check). */
extern int (*vae_emu_launch_hook)(const vae_emu_launch_rec *rec);

/* Runs a launch now, without offering it to the hook (a graph's replay, a
 * queued launch's turn). */
void vae_emu_run_rec(const vae_emu_launch_rec *rec);

/* 0 when the launch's configuration (grid, block, shared memory) is one
 * CUDA accepts; else -1, with a note on stderr and the last error set to
 * cudaErrorInvalidConfiguration, as the launch itself would (a runtime
 * that queues launches checks them when they are issued, as CUDA does). */
int vae_emu_launch_check(const vae_emu_launch_rec *rec);

/* The error of the last invalid launch, then cudaSuccess (0): the value of
 * cudaGetLastError for whichever runtime implements it. */
int vae_emu_take_launch_error(void);

#ifdef __cplusplus
}
#endif
#endif

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
} vae_emu_launch_rec;

/* When set (by tests/mock), every launch is offered to it first; a nonzero
 * return means it took the launch, which then does not run now: 1 recorded
 * it into a graph being captured, 2 refused it (a capture already
 * invalidated: the launch's error is then cudaErrorStreamCaptureInvalidated,
 * as the runtime's). */
extern int (*vae_emu_launch_hook)(const vae_emu_launch_rec *rec);

/* Runs a launch now, without offering it to the hook (a graph's replay). */
void vae_emu_run_rec(const vae_emu_launch_rec *rec);

/* The error of the last invalid launch, then cudaSuccess (0): the value of
 * cudaGetLastError for whichever runtime implements it. */
int vae_emu_take_launch_error(void);

#ifdef __cplusplus
}
#endif
#endif

/* mock.h — the mock device's parts share this (tests/mock/README.md).
 *
 * The mock device is the CUDA runtime, cuBLAS, cuBLASLt and cuDNN APIs that
 * src/host/backend_cuda.c calls, implemented on the CPU in host memory, so
 * that the CUDA backend's host code runs (and is tested) without a GPU. Our
 * own kernels run in the CPU emulator (tests/emu). Every function checks its
 * arguments as the library documents and returns the library's error status
 * for a violation, never guessing.
 *
 * Stream order is program order: work "enqueued" on a stream runs at once,
 * unless the stream is being captured (cudaStreamBeginCapture), in which case
 * it is recorded into the graph and runs when the graph is launched — or,
 * with $VAE_MOCK_ASYNC set (mock_cudart.c), it is queued on the stream and
 * runs when the host has to see it done.
 */
#ifndef VAE_MOCK_H
#define VAE_MOCK_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef void (*mock_fn)(void *args);

/* fn(args) in stream order on stream s (NULL = the legacy default stream):
 * now, or recorded with a copy of the `size` bytes at args when s is being
 * captured (or queued so, with $VAE_MOCK_ASYNC). args must hold everything fn needs by value (pointers to device
 * memory and scalars; host-side scalars such as alpha/beta copied in).
 * what: the API call it stands for (a static string; VAE_MOCK_GRAPH_DUMP
 * prints it for the graph's node). Returns 0, or -1 without doing anything
 * when s is in a capture already invalidated (the real libraries then fail
 * the call: the caller returns its execution-failed status). */
int mock_enqueue(cudaStream_t s, const char *what, mock_fn fn, const void *args, size_t size);

/* 1 when s is being captured (cudaStreamIsCapturing without the status). */
int mock_capturing(cudaStream_t s);

/* A printf-style note on stderr, prefixed "mock device: ", for the argument
 * violations the functions return an error status for (so that the failing
 * test says why). */
void mock_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* x rounded to TF32 (10 explicit mantissa bits, to nearest even; Inf and NaN
 * kept), as the mock cuBLAS and cuDNN round their inputs under TF32 math. */
static inline float mock_tf32_round(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    if ((u & 0x7f800000u) == 0x7f800000u) return x;
    u += 0x0fffu + ((u >> 13) & 1u);
    u &= 0xffffe000u;
    memcpy(&x, &u, sizeof x);
    return x;
}

#ifdef __cplusplus
}
#endif
#endif

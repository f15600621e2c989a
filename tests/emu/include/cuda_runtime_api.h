/* cuda_runtime_api.h — the emulator's stand-in for the CUDA runtime header:
 * only the types and calls that src/kernels uses (tests/emu/README.md). */
#ifndef VAE_EMU_CUDA_RUNTIME_API_H
#define VAE_EMU_CUDA_RUNTIME_API_H

typedef enum cudaError {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorStreamCaptureInvalidated = 901, /* a launch the mock's capture refused */
} cudaError_t;

typedef struct vae_emu_stream *cudaStream_t;

typedef struct cudaFuncAttributes {
    int maxThreadsPerBlock;
} cudaFuncAttributes;

#ifdef __cplusplus
extern "C" {
#endif
const char *cudaGetErrorString(cudaError_t e);
/* The error of the last launch (an invalid grid or block), then cudaSuccess. */
cudaError_t cudaGetLastError(void);
cudaError_t cudaFuncGetAttributes(cudaFuncAttributes *attr, const void *func);
#ifdef __cplusplus
}
#endif
#endif

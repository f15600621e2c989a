/* emu_cudart.cpp — the few CUDA runtime, cuBLAS and cuDNN functions the
 * kernel files call (through common.cuh), for the emulator on its own
 * (vae_emu). The mock device (tests/mock) implements the same functions with
 * the real headers' types, and links emu_runtime.cpp without this file. */
#include "cublas_v2.h"
#include "cuda_runtime_api.h"
#include "cudnn.h"
#include "emu_launch.h"

extern "C" {

cudaError_t cudaGetLastError(void) { return (cudaError_t)vae_emu_take_launch_error(); }

const char *cudaGetErrorString(cudaError_t e) {
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorStreamCaptureInvalidated:
        return "operation failed due to a previous error during capture";
    }
    return "unknown error";
}

cudaError_t cudaFuncGetAttributes(cudaFuncAttributes *attr, const void *func) {
    if (!attr || !func) return cudaErrorInvalidValue;
    attr->maxThreadsPerBlock = 1024;
    return cudaSuccess;
}

const char *cublasGetStatusString(cublasStatus_t s) {
    return s == CUBLAS_STATUS_SUCCESS ? "CUBLAS_STATUS_SUCCESS" : "CUBLAS_STATUS_NOT_SUPPORTED";
}

const char *cudnnGetErrorString(cudnnStatus_t s) {
    return s == CUDNN_STATUS_SUCCESS ? "CUDNN_STATUS_SUCCESS" : "CUDNN_STATUS_NOT_SUPPORTED";
}

} // extern "C"

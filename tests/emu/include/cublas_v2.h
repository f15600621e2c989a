/* cublas_v2.h — the emulator's stand-in: the status type common.cuh checks. */
#ifndef VAE_EMU_CUBLAS_V2_H
#define VAE_EMU_CUBLAS_V2_H
typedef enum { CUBLAS_STATUS_SUCCESS = 0, CUBLAS_STATUS_NOT_SUPPORTED = 15 } cublasStatus_t;
#ifdef __cplusplus
extern "C" {
#endif
const char *cublasGetStatusString(cublasStatus_t s);
#ifdef __cplusplus
}
#endif
#endif

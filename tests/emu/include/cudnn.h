/* cudnn.h — the emulator's stand-in: the status type common.cuh checks. */
#ifndef VAE_EMU_CUDNN_H
#define VAE_EMU_CUDNN_H
typedef enum { CUDNN_STATUS_SUCCESS = 0, CUDNN_STATUS_NOT_SUPPORTED = 3000 } cudnnStatus_t;
#ifdef __cplusplus
extern "C" {
#endif
const char *cudnnGetErrorString(cudnnStatus_t s);
#ifdef __cplusplus
}
#endif
#endif

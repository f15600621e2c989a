/* backend_emu.h — the CUDA backend's own kernels, run in the CPU emulator
 * (tests/emu/README.md), behind the vae_backend table. */
#ifndef VAE_BACKEND_EMU_H
#define VAE_BACKEND_EMU_H

#include "vae_backend.h"

#ifdef __cplusplus
extern "C" {
#endif
/* NULL (and vae_error_get) if it cannot be made. */
vae_backend *vae_backend_emu_create(void);
#ifdef __cplusplus
}
#endif
#endif

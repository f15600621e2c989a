/* vae_sample.h — streamed decoding of many latents: `vae sample --prior N`,
 * `--grid D1,D2 --steps S`, `--interpolate I,J --steps S`.
 *
 * Latent i of a run is a pure function of (spec, i) (vae_latent_elem in
 * vae_math.h), so a slice [first, last) of a run decodes exactly the images
 * first..last-1 of the whole run: a long run can be split across processes
 * and the pieces concatenated.
 *
 * Pipeline per chunk of `chunk` images, with two buffers of each kind:
 *
 *   backend stream:  latent_fill -> decode -> to_u8 ---------------> px_dev[b]
 *   copy stream:                             download_async(px_host[b])
 *   files writer:                      .npy appends (images, latents)
 *   sheets writer:                     PNG sheet rows (vae_sheets: encoder pool)
 *
 * Chunk k+1 is issued to the backend before the host waits for chunk k's
 * copy, and the writers write chunk k while chunk k+1 decodes, the two at
 * the same time, so the device does not wait for the disk (or the PNG
 * encoders) unless they are slower than decoding.
 * Memory is O(chunk): two chunks of pixels on the host and on the device,
 * one row of sheet images, and the model's buffers for `chunk` images.
 *
 * Outputs are atomic: a .npy appears complete, or — after a stop request
 * (SIGINT/SIGTERM) at a chunk boundary — with the rows written so far and a
 * header saying so; after a crash or SIGKILL it does not appear at all.
 * PNG sheets appear one by one as they fill.
 */
#ifndef VAE_SAMPLE_H
#define VAE_SAMPLE_H

#include <signal.h>

#include "vae_model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    vae_latent_spec spec;      /* what to decode; spec.L must equal the model's L */
    const real *vec;           /* host: base [L] (GRID) or a [L], b [L] (LERP/SLERP); NULL for PRIOR */
    int64_t first, last;       /* the slice [first, last) of the run to decode */
    const char *npy_path;      /* uint8 [n, C, H, W] images; NULL: none */
    const char *latents_path;  /* float32 [n, L] latents; NULL: none */
    const char *sheet_dir;     /* PNG sheets <sheet_dir>/<sheet_prefix>*.png; NULL: none */
    const char *sheet_prefix;
    int sheet_cols;            /* images per sheet-grid row */
    int sheet_px;              /* largest sheet side in pixels */
    int sheet_threads;         /* PNG encoder threads (vae_sheets_open; 0 = one per CPU) */
    int progress;              /* progress bar on stderr */
    volatile sig_atomic_t *stop; /* if non-NULL and set: stop at the next chunk boundary */
} vae_sample_job;

typedef struct {
    int64_t written;  /* images decoded and written (the whole slice unless stopped) */
    double seconds;   /* wall time of the decode loop */
    int stopped;      /* 1 if *stop ended the run early */
    int sheets;       /* PNG sheets written */
    /* With more than one chunk: the images of the first chunk and the time
     * until it was decoded, which holds the one-time
     * set-up (plans, algorithm searches, first kernel loads); 0 otherwise.
     * The rest of the run, (written - first_images) / (seconds -
     * first_seconds), is the steady rate. */
    int64_t first_images;
    double first_seconds;
} vae_sample_result;

/* Decode job->first .. job->last - 1 in chunks of m->B images. Returns VAE_OK
 * (also when stopped early: res->stopped) or an error with the message set;
 * on error no .npy is left behind. */
int vae_sample_run(vae_model *m, const vae_sample_job *job, vae_sample_result *res);

/* Images per chunk chosen for a decoder when the user gives none: as many as
 * fit `budget` bytes of model activations, from 64 up to 65536 (a power of
 * two), and at most `n` rounded up to 64. *per_image (may be NULL) receives
 * the estimated bytes per image. */
int vae_sample_auto_chunk(const vae_config *cfg, size_t budget, int64_t n, size_t *per_image);

/* Mantissa bits of a --precision name: fp32 23, tf32 10, bf16 7; -1 if unknown. */
int vae_precision_bits(const char *name);

#ifdef __cplusplus
}
#endif
#endif /* VAE_SAMPLE_H */

/* png_err.h — libpng's error and warning callbacks, shared by image.c and
 * sheets.c (defined in image.c). Hand a vae_png_err as libpng's error
 * pointer: an error stores libpng's message in msg and longjmps to jb (set
 * it with setjmp first); warnings are ignored (they do not affect the output
 * we write). */
#ifndef VAE_PNG_ERR_H
#define VAE_PNG_ERR_H

#include <png.h>
#include <setjmp.h>

typedef struct {
    jmp_buf jb;
    char msg[256];
} vae_png_err;

void vae_png_err_fail(png_structp png, png_const_charp msg);
void vae_png_err_warn(png_structp png, png_const_charp msg);
/* png_init_io(png, f), but a failed write's error says why ("No space left
 * on device") where libpng's own says "Write Error". */
void vae_png_init_io(png_structp png, FILE *f);

/* The compression every PNG we write uses (before png_write_info): zlib
 * level 1 and the Up filter on every row, instead of libpng's level 6 with
 * a filter chosen per row. Measured with vae_sheets_bench on one core
 * (bench/results/2026-11-27-cpu-png-sheets.md): decoded MNIST sheets 2.3x
 * as fast for 12% more bytes, smooth RGB (CIFAR-like) 4.2x as fast for 25%
 * more. At level 6 a 10^7-image MNIST grid took about 3 minutes a core to
 * encode; a GPU decodes it in seconds. */
static inline void vae_png_set_fast(png_structp png) {
    png_set_compression_level(png, 1);
    png_set_filter(png, PNG_FILTER_TYPE_BASE, PNG_FILTER_UP);
}

#endif /* VAE_PNG_ERR_H */

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

#endif /* VAE_PNG_ERR_H */

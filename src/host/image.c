/* image.c — PNG output (libpng) and image-grid tiling.
 *
 * vae_png_write streams an 8-bit grey or RGB PNG into an atomic temp file;
 * libpng reports errors by longjmp (vae_png_err_fail, png_err.h), which
 * becomes VAE_EIO with libpng's message.
 */
#include <errno.h>
#include <inttypes.h>
#include <png.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "png_err.h"
#include "vae_io.h"

void vae_png_err_fail(png_structp png, png_const_charp msg) {
    vae_png_err *ctx = png_get_error_ptr(png);
    snprintf(ctx->msg, sizeof ctx->msg, "%s", msg ? msg : "libpng error");
    longjmp(ctx->jb, 1);
}

void vae_png_err_warn(png_structp png, png_const_charp msg) {
    (void)png;
    (void)msg;
}

static void png_write_file(png_structp png, png_bytep data, size_t n) {
    FILE *f = png_get_io_ptr(png);
    errno = 0;
    if (fwrite(data, 1, n, f) != n) png_error(png, strerror(errno ? errno : EIO));
}

static void png_flush_file(png_structp png) {
    FILE *f = png_get_io_ptr(png);
    errno = 0;
    if (fflush(f) != 0) png_error(png, strerror(errno ? errno : EIO));
}

void vae_png_init_io(png_structp png, FILE *f) {
    png_set_write_fn(png, f, png_write_file, png_flush_file);
}

int vae_png_write(const char *path, const uint8_t *pixels, int w, int h, int c) {
    if (w <= 0 || h <= 0 || (c != 1 && c != 3) || !pixels)
        return vae_error_set(VAE_EINVAL, "%s: cannot write a %dx%d PNG with %d channels (1 or 3)", path,
                             w, h, c);
    vae_atomic_file af;
    int rc = vae_atomic_open(&af, path);
    if (rc) return rc;

    /* Everything libpng may longjmp over lives in the context or is volatile. */
    vae_png_err ctx;
    ctx.msg[0] = 0;
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &ctx, vae_png_err_fail,
                                              vae_png_err_warn);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info) {
        png_destroy_write_struct(&png, NULL);
        vae_atomic_abort(&af);
        return vae_error_set(VAE_ENOMEM, "%s: out of memory creating the PNG writer", path);
    }
    if (setjmp(ctx.jb)) {
        png_destroy_write_struct(&png, &info);
        vae_atomic_abort(&af);
        return vae_error_set(VAE_EIO, "%s: PNG write failed: %s", path, ctx.msg);
    }
    vae_png_init_io(png, af.f);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8,
                 c == 3 ? PNG_COLOR_TYPE_RGB : PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    vae_png_set_fast(png);
    png_write_info(png, info);
    const size_t stride = (size_t)w * (size_t)c;
    for (int y = 0; y < h; y++) png_write_row(png, pixels + (size_t)y * stride);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    return vae_atomic_commit(&af);
}

/* Grid layout: tile i sits at row i / cols, column i % cols; tiles are
 * separated (not surrounded) by `pad` pixels of 255, and slots without an
 * image stay 255:
 *   gw = cols*iw + (cols-1)*pad,  gh = rows*ih + (rows-1)*pad,  rows = ceil(n/cols).
 * Input is planar [n, c, ih, iw]; output interleaved [gh, gw, c]. */
uint8_t *vae_tile_images(const uint8_t *imgs, int n, int c, int ih, int iw, int cols, int pad,
                         int *gw, int *gh) {
    if (n <= 0 || c <= 0 || ih <= 0 || iw <= 0 || cols <= 0 || pad < 0 || !imgs) {
        vae_error_set(VAE_EINVAL, "tile images: bad arguments (n %d, c %d, %dx%d, cols %d, pad %d)", n, c,
                      ih, iw, cols, pad);
        return NULL;
    }
    const int64_t rows = (n + (int64_t)cols - 1) / cols;
    const int64_t W = (int64_t)cols * iw + (int64_t)(cols - 1) * pad;
    const int64_t H = rows * ih + (rows - 1) * pad;
    if (W > INT32_MAX || H > INT32_MAX || (uint64_t)W * (uint64_t)H > (uint64_t)(SIZE_MAX / 4) / (uint64_t)c) {
        vae_error_set(VAE_EINVAL, "tile images: a %" PRId64 "x%" PRId64 " grid is too large", W, H);
        return NULL;
    }
    uint8_t *g = vae_malloc((size_t)W * (size_t)H, (size_t)c);
    if (!g) return NULL;
    memset(g, 255, (size_t)W * (size_t)H * (size_t)c);
    const size_t plane = (size_t)ih * (size_t)iw;
    for (int i = 0; i < n; i++) {
        const uint8_t *img = imgs + (size_t)i * (size_t)c * plane; /* [c, ih, iw] */
        const size_t y0 = (size_t)(i / cols) * ((size_t)ih + (size_t)pad);
        const size_t x0 = (size_t)(i % cols) * ((size_t)iw + (size_t)pad);
        for (int y = 0; y < ih; y++) {
            uint8_t *dst = g + ((y0 + (size_t)y) * (size_t)W + x0) * (size_t)c;
            for (int x = 0; x < iw; x++)
                for (int ch = 0; ch < c; ch++)
                    dst[(size_t)x * c + ch] = img[(size_t)ch * plane + (size_t)y * iw + x];
        }
    }
    *gw = (int)W;
    *gh = (int)H;
    return g;
}

/* vae_sheets.h — streaming PNG "sheets": a grid of any number of images
 * written as tiled PNG files with memory bounded by one grid row.
 *
 * Layout. The logical picture is a grid of `cols` columns and
 * rows = ceil(n_total / cols) rows of images, each image planar uint8
 * [C, H, W] (C = 1 grey or 3 RGB, as the decoder produces). Image i sits at
 * grid row i / cols, column i % cols. Images are separated (not surrounded)
 * by VAE_SHEETS_PAD = 2 pixels of 255, exactly as vae_tile_images does; grid
 * slots of a partial last row are white (255). A grid that fits one sheet
 * therefore gives the same PNG as vae_tile_images + vae_png_write.
 *
 * Splitting. A sheet is at most max_px pixels per side (0 = default 4096),
 * so it holds at most
 *   spr = max(1, (max_px + pad) / (W + pad))   image columns and
 *   sps = max(1, (max_px + pad) / (H + pad))   image rows
 * (k images and k-1 separators take k*(W+pad) - pad <= max_px pixels). A
 * larger grid is cut into blocks: sheet (R, Cb) holds grid rows
 * [R*sps, min(rows, (R+1)*sps)) and columns [Cb*spr, min(cols, (Cb+1)*spr)),
 * so sheets of the last block row / column are smaller, never padded beyond
 * the grid. A sheet whose every slot lies past image n_total - 1 (possible
 * only in the last block row) is not written: no all-white files.
 *
 * Files. "<dir>/<prefix>.png" when there is one sheet in all; else
 * "<prefix>-<R>.png" when the grid has one block column, else
 * "<prefix>-<R>-<Cb>.png"; R and Cb are zero-padded to the digits of the
 * largest block row / column index, so the names sort.
 *
 * Streaming. Images are pushed in order, in chunks of any size. One grid
 * row is buffered (cols * C*H*W bytes; none when a chunk holds whole grid
 * rows starting at a row boundary); when it is complete its pixel rows are
 * converted to interleaved [W, C] and written with png_write_row into every
 * sheet of the current block row, all of which are open at once (up to
 * ceil(cols / spr) files and libpng/zlib writers, about 300 KB each). Each
 * sheet goes through vae_atomic_open and is committed as soon as its last
 * pixel row is written, so a sheet file appears complete or not at all.
 * Memory is O(cols * C*H*W) plus per-open-sheet state, independent of
 * n_total.
 *
 * Threads. With threads > 1 the sheets of a block row are encoded in
 * parallel by up to min(threads, ceil(cols / spr)) worker threads (0 = one
 * per CPU the process may use), each with its own pixel row; push returns
 * when its grid rows are written, as with one thread, and the files are the
 * same bytes. (After an error, sheets right of the failed one that one
 * thread would not have reached may be committed: complete, but one thread
 * would not have written them.) A grid one sheet wide is encoded by the
 * pushing thread alone. Every PNG is compressed with zlib level 1 and the
 * Up filter (png_err.h).
 *
 * Errors. Functions return VAE_OK or VAE_EINVAL / VAE_EIO / VAE_ENOMEM with a
 * message naming the file and what was expected. After any error the object
 * refuses further pushes; vae_sheets_abort (or close) is still safe.
 */
#ifndef VAE_SHEETS_H
#define VAE_SHEETS_H

#include <stddef.h>
#include <stdint.h>

#include "vae_core.h"

#ifdef __cplusplus
extern "C" {
#endif

#define VAE_SHEETS_PAD 2               /* pixels of 255 between images (as vae_tile_images) */
#define VAE_SHEETS_DEFAULT_MAX_PX 4096 /* used when max_px == 0 */

typedef struct vae_sheets vae_sheets;

/* Plan the sheets of n_total images [C, H, W] in a grid of `cols` columns,
 * to be written as dir/prefix*.png by up to `threads` encoders (Threads).
 * Writes no file yet; dir must exist. Fails (EINVAL) on c not 1 or 3,
 * n_total, cols, h or w <= 0, max_px or threads < 0, a sheet side over
 * libpng's limit of 1000000 pixels, a grid row that does not fit in memory
 * (size_t), or file names too long. */
int vae_sheets_open(vae_sheets **out, const char *dir, const char *prefix, int64_t n_total, int cols,
                    int c, int h, int w, int max_px, int threads);

/* Append the next n images imgs [n, C, H, W] (n >= 0). Pushing more than
 * n_total in all is an error (nothing of that chunk is written). */
int vae_sheets_push(vae_sheets *s, const uint8_t *imgs, int64_t n);

/* Finish: all n_total images must have been pushed; the remaining sheets are
 * committed. Always frees s; on error the sheets still in progress are
 * dropped (as by abort) and the committed ones kept. NULL is a no-op. */
int vae_sheets_close(vae_sheets *s);

/* Interrupted run: drop the sheets in progress (their temp files are
 * removed), keep the committed ones, free s. NULL is a no-op. */
void vae_sheets_abort(vae_sheets *s);

/* Number of sheet files the whole grid gives. */
int64_t vae_sheets_count(const vae_sheets *s);
/* Threads that encode the sheets (Threads): the workers, or 1 when the
 * pushing thread encodes alone. */
int vae_sheets_threads(const vae_sheets *s);
/* Number of sheet files committed so far. */
int64_t vae_sheets_committed(const vae_sheets *s);
/* Sheets of another layout under the same prefix in dir, left by an earlier
 * run: files named as sheets are ("<prefix>.png", "<prefix>-<digits>.png",
 * "<prefix>-<digits>-<digits>.png") but not one of this grid's names.
 * Returns how many (first: the first found, when len > 0), or -1 with the
 * error set when dir cannot be read. A run that wrote its sheets beside
 * them would leave a set that mixes two grids. */
int64_t vae_sheets_foreign(const vae_sheets *s, char *first, size_t len);
/* Path of sheet (R, Cb) as it is (or would be) written; returns 0, or -1 if
 * R / Cb are outside the block grid or dst (bytes) is too small. */
int vae_sheets_path(const vae_sheets *s, int64_t R, int64_t Cb, char *dst, size_t bytes);
/* Bytes of the module's own buffers (grid row + an interleaved pixel row
 * for the pushing thread and one per worker), fixed at open: O(cols *
 * C*H*W), independent of n_total. libpng and zlib state (per open sheet)
 * comes on top. */
size_t vae_sheets_buffer_bytes(const vae_sheets *s);

#ifdef __cplusplus
}
#endif
#endif /* VAE_SHEETS_H */

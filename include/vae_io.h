/* vae_io.h — files the engine writes (and reads back): safetensors
 * checkpoints, PNG image grids, uint8 .npy arrays, atomic file replacement.
 */
#ifndef VAE_IO_H
#define VAE_IO_H

#include <stdio.h>
#include "vae_core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------- atomic write */
/* Write to "<path>.tmp.<pid>", fsync, rename over path, fsync the directory.
 * On any failure the temp file is removed, the old `path` is untouched, and
 * an error naming the path and errno's text is set. */
typedef struct {
    FILE *f;
    char path[1024];
    char tmp[1100];
    int failed;
} vae_atomic_file;
int vae_atomic_open(vae_atomic_file *af, const char *path);
/* fwrite that records failure (ENOSPC etc.) in af->failed */
int vae_atomic_write(vae_atomic_file *af, const void *data, size_t bytes);
/* Commit (fsync, rename, fsync dir). Returns VAE_OK or VAE_EIO. */
int vae_atomic_commit(vae_atomic_file *af);
/* Abandon: close and unlink the temp file. */
void vae_atomic_abort(vae_atomic_file *af);
/* Remove the temp files ("<name>.tmp.<pid>") that writers killed before
 * their commit left in dir: those whose pid is not a live process (another
 * live process may be writing into the same directory). They are never
 * read: a final name only appears after a complete, fsynced write. Returns
 * how many were removed. */
int vae_atomic_remove_stale(const char *dir);
/* mkdir -p; then checks that path is a writable directory (an existing
 * file of that name is an error). Errors name the path. made (if not NULL,
 * len bytes) receives the first, outermost directory this call created, ""
 * if it created none; vae_rmdir_made(path, made) then removes those of them
 * that are still empty, innermost first (for a run that failed before it
 * wrote anything). */
int vae_mkdir_p(const char *path, char *made, size_t len);
void vae_rmdir_made(const char *path, const char *made);

/* ---------------------------------------------------------- safetensors */
/* A tensor in a safetensors file. dtype is "F32", "F64", "I64", "U8"... */
typedef struct {
    char name[128];
    char dtype[8];
    int ndim;
    int64_t shape[4];
    const void *data;  /* write: caller's buffer; read: points into the file buffer */
    size_t bytes;
} vae_st_tensor;

typedef struct {
    char key[64];
    char *value; /* owned on read; caller's string on write */
} vae_st_meta;

/* Write tensors and string metadata ("__metadata__") atomically. Tensor data
 * is written in the order given, little-endian, with offsets in the header.
 * A CRC-32 (zlib) of all tensor bytes is stored as metadata "crc32". */
int vae_st_write(const char *path, const vae_st_tensor *t, int n_t, const vae_st_meta *meta,
                 int n_meta);

/* Parsed file: owns the bytes; tensors point into them. */
typedef struct {
    uint8_t *buf;
    size_t len;
    vae_st_tensor *t;
    int n_t;
    vae_st_meta *meta;
    int n_meta;
} vae_st_file;

/* Read and validate a safetensors file: header length against file size,
 * JSON well-formed, every dtype known, shape product * dtype size ==
 * end - begin, offsets inside the data area and not overlapping, and the
 * crc32 metadata (when present) matching. Errors name the file and problem. */
int vae_st_read(vae_st_file *f, const char *path);
/* Same, from memory (for the fuzzer); `name` is used in messages. The buffer
 * is copied. */
int vae_st_parse(vae_st_file *f, const uint8_t *data, size_t len, const char *name);
void vae_st_free(vae_st_file *f);
const vae_st_tensor *vae_st_find(const vae_st_file *f, const char *name);
const char *vae_st_meta_get(const vae_st_file *f, const char *key);

/* ---------------------------------------------------------- images */
/* Write an 8-bit PNG (c = 1 grey, c = 3 RGB) from interleaved pixels
 * [h, w, c] (libpng), atomically. */
int vae_png_write(const char *path, const uint8_t *pixels, int w, int h, int c);

/* Tile n images [n, c, ih, iw] (planar NCHW) into a grid of `cols` columns
 * separated by `pad` pixels of value 255, as interleaved pixels [gh, gw, c]
 * ready for vae_png_write. Returns the grid (caller frees) or NULL. */
uint8_t *vae_tile_images(const uint8_t *imgs, int n, int c, int ih, int iw, int cols, int pad,
                         int *gw, int *gh);

/* ---------------------------------------------------------- npy */
/* Streaming uint8 .npy writer of shape [n, c, h, w] (format 1.0). The
 * header is written for the final n up front; rows are appended; on close
 * the file is committed atomically. If fewer rows than announced were
 * written, close rewrites the header to the count actually written (so a
 * stopped run leaves a valid, shorter file). */
typedef struct {
    vae_atomic_file af;
    int64_t n_total, n_written;
    int c, h, w;
    int f32; /* 0: uint8 [n, c, h, w]; 1: float32 [n, c] (h = w = 1) */
    long header_len;
} vae_npy_writer;
int vae_npy_open(vae_npy_writer *nw, const char *path, int64_t n, int c, int h, int w);
/* The same writer for little-endian float32 rows: shape [n, cols]. */
int vae_npy_open_f32(vae_npy_writer *nw, const char *path, int64_t n, int cols);
int vae_npy_append(vae_npy_writer *nw, const void *rows, int64_t n_rows);
int vae_npy_close(vae_npy_writer *nw);
/* Read back a uint8 .npy (validates magic, header dict, shape, size). */
int vae_npy_read_u8(const char *path, uint8_t **data, int64_t *shape, int *ndim);

#ifdef __cplusplus
}
#endif
#endif /* VAE_IO_H */

/* vae_data.h — dataset loaders: IDX (MNIST and anything in that format),
 * gzip-compressed or raw, and CIFAR-10's binary batches.
 *
 * Images are kept as uint8 [N, C, H, W] (NCHW, the order PyTorch uses);
 * the trainer converts a batch to real in [0,1] (x / 255) when it gathers it.
 * Every loader checks magic numbers, dimensions, counts and the file size
 * against each other before it allocates, and never reads past a buffer;
 * errors name the file and what is wrong.
 */
#ifndef VAE_DATA_H
#define VAE_DATA_H

#include "vae_core.h"
#include "vae_config.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    uint8_t *images;  /* [n, c, h, w] */
    uint8_t *labels;  /* [n] (may be NULL when no label file was given) */
    int n, c, h, w;
} vae_dataset;

/* Largest image count accepted from any header (CIFAR-10 has 60k, MNIST
 * 70k); a header claiming more is rejected before any allocation. */
#define VAE_DATA_MAX_IMAGES 100000000
#define VAE_DATA_MAX_DIM 4096

/* Read a whole file, transparently gunzipping it if it starts with the gzip
 * magic (1f 8b). `max_bytes` bounds the decompressed size. */
int vae_read_file(const char *path, uint8_t **out, size_t *len, size_t max_bytes);
/* The same without the gunzip (checkpoints, .npy). */
int vae_read_file_raw(const char *path, uint8_t **out, size_t *len, size_t max_bytes);

/* IDX images (magic 0x00000803, [n, rows, cols], c = 1) and optional labels
 * (0x00000801, [n]); labels_path may be NULL. Counts must agree. */
int vae_load_idx(vae_dataset *ds, const char *images_path, const char *labels_path);

/* CIFAR-10 binary batches: each record is 1 label byte + 3072 pixel bytes
 * (3x32x32, channel-major). Concatenates the given files in order. */
int vae_load_cifar10(vae_dataset *ds, const char *const *paths, int n_paths);

/* Resolve the data directory: `flag` (--data) if set, else $VAE_DATA_DIR,
 * else "data". Writes into out. */
void vae_data_dir(char *out, size_t len, const char *flag);

/* Load the train or test split named by the config from `dir`:
 *   mnist:   dir/mnist/{train,t10k}-images-idx3-ubyte[.gz] (also dir/ itself)
 *   cifar10: dir/cifar-10-batches-bin/{data_batch_1..5,test_batch}.bin (also dir/)
 *   idx:     dir/<train_images|test_images>
 * and check that the image shape matches the model's input shape. */
int vae_dataset_load(vae_dataset *ds, const vae_config *cfg, const char *dir, int train);

void vae_dataset_free(vae_dataset *ds);

#ifdef __cplusplus
}
#endif
#endif /* VAE_DATA_H */

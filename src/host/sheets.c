/* sheets.c — streaming PNG sheets (layout and guarantees in vae_sheets.h).
 *
 * State: one grid row of images [cols, D] (D = C*H*W), one interleaved pixel
 * row [sheet_w, C] of the widest sheet, and one writer per block column
 * (the sheets of the current block row). A complete grid row is emitted to
 * every open sheet as H pixel rows (preceded by `pad` white rows unless it
 * is the sheet's first grid row); the sheet is committed after its last
 * grid row.
 *
 * Threads. The sheets of a block row are independent files, so with
 * threads > 1 each grid row is encoded by a pool of workers, worker i taking
 * the sheets Cb = i, i + T, ... (T = min(threads, block columns)), each with
 * its own pixel-row buffer; the pushing thread hands them the row and waits
 * until all are done, so the caller's buffer and every guarantee above stay
 * as with one thread (the files and their bytes do not depend on T). After
 * an error, though, the other workers finish their sheets of that grid row,
 * so a sheet right of the failed one may be committed where one thread
 * would have stopped before it (each committed sheet is complete; the error
 * reported is the leftmost failed sheet's, as with one thread). A grid with
 * one block column (at most 4096 pixels wide by default) has nothing to
 * share and is encoded by the caller alone.
 *
 * libpng reports errors by longjmp. Each sheet owns its context (jmp_buf +
 * message) at a fixed heap address, and every libpng call runs under a
 * setjmp in sheet_guarded(), whose locals are not modified after setjmp, so
 * nothing needs to be volatile. A failed sheet is destroyed and its temp
 * file removed at once; the object then refuses further pushes.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <png.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "png_err.h"
#include "vae_io.h"
#include "vae_pool.h"
#include "vae_sheets.h"

/* libpng's default user limit on width and height; readers with default
 * settings refuse anything larger, and so does the writer. */
#define SHEET_MAX_SIDE 1000000


typedef struct {
    vae_png_err ctx;   /* error context handed to libpng: must not move */
    png_structp png;   /* NULL when not open */
    png_infop info;
    vae_atomic_file af;
    int live;          /* open: png + af valid */
    int ncols, nrows;  /* images across / down in this sheet */
} sheet;

/* A worker of the pool (header: Threads). */
typedef struct {
    struct vae_sheets *s;
    pthread_t th;
    int id;            /* takes the sheets Cb = id, id + T, ... */
    uint8_t *line;     /* [line_px, c] its interleaved pixel row */
    int64_t committed; /* sheets it committed in the current job */
    int rc, cb;        /* its first error in the current job and the sheet's Cb */
    char msg[2048];    /* that error's message (messages are per thread) */
} sheets_worker;

struct vae_sheets {
    char base[1024];    /* "<dir>/<prefix>" */
    int64_t n_total;    /* images in the whole grid */
    int64_t n_pushed;   /* images received so far */
    int cols, c, h, w, pad;
    size_t D;           /* c*h*w bytes per image */
    int64_t rows;       /* grid rows = ceil(n_total / cols) */
    int spr, sps;       /* images per sheet across / down (at most) */
    int64_t brows;      /* block rows = ceil(rows / sps) */
    int bcols;          /* block columns = ceil(cols / spr) */
    int rdig, cdig;     /* digits of brows-1 and bcols-1 in file names */
    int64_t count;      /* sheet files in all */
    int64_t committed;  /* sheet files committed */
    uint8_t *row;       /* [cols, c, h, w] images of the grid row being filled */
    int in_row;         /* images in row */
    uint8_t *line;      /* [line_px, c] one interleaved pixel row */
    size_t line_px;     /* width of the widest sheet */
    sheet *sh;          /* [bcols] writers of the current block row */
    int64_t grow;       /* next grid row to emit */
    /* the pool (header: Threads); nthreads 0: no workers, the caller encodes */
    int nthreads;       /* workers running */
    int nwk;            /* workers allocated (wk[i].line for i < nwk) */
    sheets_worker *wk;  /* [nwk] */
    pthread_mutex_t mu;
    pthread_cond_t go, done;
    int sync_up;        /* mu, go and done initialised */
    int64_t job;        /* number of the current job (a grid row); workers wait for a new one */
    const uint8_t *job_imgs;
    int job_k;
    int busy;           /* workers still on the current job */
    int quit;
    int failed;         /* error code of an earlier I/O failure, else 0 */
};

static int digits(int64_t v) {
    int d = 1;
    while (v >= 10) v /= 10, d++;
    return d;
}

static int64_t ceil_div(int64_t a, int64_t b) { return a / b + (a % b != 0); }

/* Does sheet (R, Cb) hold at least one image? Its top-left slot has the
 * smallest image index of all its slots. */
static int sheet_exists(const vae_sheets *s, int64_t R, int64_t Cb) {
    return R * s->sps * (int64_t)s->cols + Cb * s->spr < s->n_total;
}

int vae_sheets_path(const vae_sheets *s, int64_t R, int64_t Cb, char *dst, size_t bytes) {
    if (R < 0 || R >= s->brows || Cb < 0 || Cb >= s->bcols || !dst || bytes == 0) return -1;
    int n;
    if (s->count == 1) n = snprintf(dst, bytes, "%s.png", s->base);
    else if (s->bcols == 1) n = snprintf(dst, bytes, "%s-%0*" PRId64 ".png", s->base, s->rdig, R);
    else
        n = snprintf(dst, bytes, "%s-%0*" PRId64 "-%0*" PRId64 ".png", s->base, s->rdig, R, s->cdig,
                     Cb);
    return n >= 0 && (size_t)n < bytes ? 0 : -1;
}

/* Does name (in the sheets' folder) look like a sheet of prefix, and is it
 * not one of this grid's? */
static int is_foreign_sheet(const vae_sheets *s, const char *prefix, const char *name) {
    const size_t np = strlen(prefix);
    if (strncmp(name, prefix, np) != 0) return 0;
    const char *p = name + np;
    int64_t v[2];
    int k = 0;
    while (*p == '-' && k < 2) {
        const char *d = ++p;
        while (*p >= '0' && *p <= '9') p++;
        if (p == d || p - d > 18) return 0;
        v[k++] = strtoll(d, NULL, 10);
    }
    if (strcmp(p, ".png") != 0) return 0; /* not a sheet's name */
    char own[1100];
    const int64_t R = k > 0 ? v[0] : 0, Cb = k > 1 ? v[1] : 0;
    if (vae_sheets_path(s, R, Cb, own, sizeof own) != 0) return 1;
    const char *base = strrchr(own, '/');
    return strcmp(base ? base + 1 : own, name) != 0;
}

int64_t vae_sheets_foreign(const vae_sheets *s, char *first, size_t len) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", s->base);
    char *slash = strrchr(dir, '/');
    const char *prefix = slash ? slash + 1 : s->base;
    if (slash == dir) dir[1] = 0;
    else if (slash) *slash = 0;
    else snprintf(dir, sizeof dir, ".");
    if (first && len) first[0] = 0;
    DIR *d = opendir(dir);
    if (!d) return vae_error_set(VAE_EIO, "%s: cannot read the folder: %s", dir, strerror(errno)), -1;
    int64_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (is_foreign_sheet(s, prefix, e->d_name) && n++ == 0 && first && len)
            snprintf(first, len, "%s/%s", dir, e->d_name);
    closedir(d);
    return n;
}

/* Free libpng state and remove the temp file of a sheet in progress. */
static void sheet_drop(sheet *sh) {
    if (!sh->live) return;
    png_destroy_write_struct(&sh->png, &sh->info);
    vae_atomic_abort(&sh->af);
    sh->live = 0;
}

/* --------------------------------------------------- libpng calls (may longjmp) */

enum { OP_HEADER, OP_ROWS, OP_END };

static void op_header(vae_sheets *s, sheet *sh) {
    const png_uint_32 pw = (png_uint_32)(sh->ncols * (s->w + s->pad) - s->pad);
    const png_uint_32 ph = (png_uint_32)(sh->nrows * (s->h + s->pad) - s->pad);
    vae_png_init_io(sh->png, sh->af.f);
    png_set_IHDR(sh->png, sh->info, pw, ph, 8, s->c == 3 ? PNG_COLOR_TYPE_RGB : PNG_COLOR_TYPE_GRAY,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    vae_png_set_fast(sh->png);
    png_write_info(sh->png, sh->info);
}

/* The pixel rows of one grid row in sheet column block Cb: `pad` white rows
 * when this is not the sheet's first grid row, then H rows. imgs [k, D]
 * holds the grid row's first k images (k < cols only for the last row). */
static void op_rows(vae_sheets *s, sheet *sh, int Cb, const uint8_t *imgs, uint8_t *line, int k,
                    int first) {
    const int c = s->c, w = s->w, pad = s->pad;
    const size_t plane = (size_t)s->h * (size_t)w;
    const size_t span = (size_t)(sh->ncols * (w + pad) - pad) * (size_t)c; /* bytes per pixel row */
    if (!first) {
        memset(line, 255, span);
        for (int y = 0; y < pad; y++) png_write_row(sh->png, line);
    }
    memset(line, 255, span); /* separators and empty slots stay white */
    for (int y = 0; y < s->h; y++) {
        for (int j = 0; j < sh->ncols; j++) {
            const int gc = Cb * s->spr + j; /* grid column */
            if (gc >= k) break;             /* the rest of a partial last row: white */
            uint8_t *dst = line + (size_t)j * (size_t)(w + pad) * (size_t)c;
            const uint8_t *img = imgs + (size_t)gc * s->D + (size_t)y * (size_t)w; /* [c, h, w] */
            if (c == 1) memcpy(dst, img, (size_t)w);
            else
                for (int x = 0; x < w; x++)
                    for (int ch = 0; ch < c; ch++) dst[(size_t)x * c + ch] = img[(size_t)ch * plane + x];
        }
        png_write_row(sh->png, line);
    }
}

/* Run one libpng step on sheet sh (OP_ROWS: with the pixel-row buffer
 * line); on a libpng error drop the sheet and return VAE_EIO naming its file
 * and libpng's message. */
static int sheet_guarded(vae_sheets *s, sheet *sh, int op, int Cb, const uint8_t *imgs,
                         uint8_t *line, int k, int first) {
    sh->ctx.msg[0] = 0;
    if (setjmp(sh->ctx.jb)) {
        int rc = vae_error_set(VAE_EIO, "%s: PNG write failed: %s", sh->af.path, sh->ctx.msg);
        sheet_drop(sh);
        return rc;
    }
    if (op == OP_HEADER) op_header(s, sh);
    else if (op == OP_ROWS) op_rows(s, sh, Cb, imgs, line, k, first);
    else png_write_end(sh->png, NULL);
    return VAE_OK;
}

/* --------------------------------------------------- sheet lifecycle */

static int sheet_open(vae_sheets *s, sheet *sh, int64_t R, int Cb) {
    char path[sizeof sh->af.path];
    if (vae_sheets_path(s, R, Cb, path, sizeof path) != 0) /* checked at open: cannot happen */
        return vae_error_set(VAE_EINVAL, "%s: sheet file name too long", s->base);
    memset(sh, 0, sizeof *sh);
    sh->ncols = (int)(s->cols - (int64_t)Cb * s->spr < s->spr ? s->cols - (int64_t)Cb * s->spr : s->spr);
    sh->nrows = (int)(s->rows - R * s->sps < s->sps ? s->rows - R * s->sps : s->sps);
    int rc = vae_atomic_open(&sh->af, path);
    if (rc) return rc;
    sh->png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &sh->ctx, vae_png_err_fail,
                                      vae_png_err_warn);
    sh->info = sh->png ? png_create_info_struct(sh->png) : NULL;
    sh->live = 1;
    if (!sh->png || !sh->info) {
        sheet_drop(sh);
        return vae_error_set(VAE_ENOMEM, "%s: out of memory creating the PNG writer", path);
    }
    return sheet_guarded(s, sh, OP_HEADER, Cb, NULL, NULL, 0, 1);
}

static int sheet_finish(vae_sheets *s, sheet *sh, int Cb, int64_t *committed) {
    int rc = sheet_guarded(s, sh, OP_END, Cb, NULL, NULL, 0, 0);
    if (rc) return rc;
    png_destroy_write_struct(&sh->png, &sh->info);
    sh->live = 0;
    rc = vae_atomic_commit(&sh->af); /* removes the temp file itself on failure */
    if (rc) return rc;
    ++*committed;
    return VAE_OK;
}

/* Grid row s->grow, whose first k images are imgs [k, D], into sheet Cb of
 * its block row (opened at the block row's first grid row, committed after
 * its last; *committed counts it), with the pixel-row buffer line. Touches
 * sheet Cb alone, so different Cb may run in different threads. */
static int sheet_row(vae_sheets *s, int Cb, const uint8_t *imgs, int k, uint8_t *line,
                     int64_t *committed) {
    const int64_t R = s->grow / s->sps;
    const int lr = (int)(s->grow % s->sps); /* grid row inside the block row */
    sheet *sh = &s->sh[Cb];
    int rc;
    if (lr == 0) {
        VAE_ASSERT(!sh->live);
        if (!sheet_exists(s, R, Cb)) return VAE_OK;
        if ((rc = sheet_open(s, sh, R, Cb))) return rc;
    }
    if (!sh->live) return VAE_OK; /* a sheet not written in this block row */
    if ((rc = sheet_guarded(s, sh, OP_ROWS, Cb, imgs, line, k, lr == 0))) return rc;
    if (lr == sh->nrows - 1 && (rc = sheet_finish(s, sh, Cb, committed))) return rc;
    return VAE_OK;
}

/* --------------------------------------------------- the pool */

static void pool_stop(vae_sheets *s);

static void *worker_main(void *arg) {
    sheets_worker *w = arg;
    vae_sheets *s = w->s;
    int64_t seen = 0;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (s->job == seen && !s->quit) pthread_cond_wait(&s->go, &s->mu);
        if (s->quit) break;
        seen = s->job;
        const uint8_t *imgs = s->job_imgs;
        const int k = s->job_k;
        pthread_mutex_unlock(&s->mu);
        for (int Cb = w->id; Cb < s->bcols; Cb += s->nthreads) {
            const int rc = sheet_row(s, Cb, imgs, k, w->line, &w->committed);
            if (rc) {
                w->rc = rc, w->cb = Cb;
                snprintf(w->msg, sizeof w->msg, "%s", vae_error_get());
                break;
            }
        }
        pthread_mutex_lock(&s->mu);
        if (--s->busy == 0) pthread_cond_signal(&s->done);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* Start up to `want` workers (fewer if the system refuses threads; none
 * when fewer than two start, and the caller then encodes alone). */
static int pool_start(vae_sheets *s, int want) {
    if (want < 2) return VAE_OK;
    if (pthread_mutex_init(&s->mu, NULL)) return VAE_OK;
    if (pthread_cond_init(&s->go, NULL)) {
        pthread_mutex_destroy(&s->mu);
        return VAE_OK;
    }
    if (pthread_cond_init(&s->done, NULL)) {
        pthread_cond_destroy(&s->go);
        pthread_mutex_destroy(&s->mu);
        return VAE_OK;
    }
    s->sync_up = 1;
    s->wk = vae_calloc((size_t)want, sizeof *s->wk);
    if (!s->wk) return vae_error_prefix(VAE_ENOMEM, "%s: sheet encoders", s->base);
    s->nwk = want;
    for (int i = 0; i < want; i++) {
        s->wk[i].line = vae_malloc(s->line_px, (size_t)s->c);
        if (!s->wk[i].line) return vae_error_prefix(VAE_ENOMEM, "%s: sheet encoders", s->base);
    }
    /* nthreads counts the started ones: a worker reads it only during a
     * job, and the first job comes after the last start */
    for (int i = 0; i < want; i++) {
        s->wk[i].s = s, s->wk[i].id = i;
        if (pthread_create(&s->wk[i].th, NULL, worker_main, &s->wk[i])) break;
        s->nthreads = i + 1;
    }
    if (s->nthreads < 2) {
        pool_stop(s); /* one worker would only add hand-offs */
        return VAE_OK;
    }
    for (int i = s->nthreads; i < s->nwk; i++) free(s->wk[i].line); /* not started */
    s->nwk = s->nthreads;
    return VAE_OK;
}

static void pool_stop(vae_sheets *s) {
    if (s->sync_up) {
        pthread_mutex_lock(&s->mu);
        s->quit = 1;
        pthread_cond_broadcast(&s->go);
        pthread_mutex_unlock(&s->mu);
        for (int i = 0; i < s->nthreads; i++) pthread_join(s->wk[i].th, NULL);
        pthread_cond_destroy(&s->done);
        pthread_cond_destroy(&s->go);
        pthread_mutex_destroy(&s->mu);
        s->sync_up = 0;
    }
    for (int i = 0; i < s->nwk; i++) free(s->wk[i].line);
    free(s->wk);
    s->wk = NULL;
    s->nthreads = s->nwk = 0;
}

/* Write grid row s->grow (imgs [k, D]) into every sheet of its block row:
 * by the workers when there are two or more, else here. On errors the one
 * of the leftmost sheet is reported (the same as without workers). */
static int emit_row(vae_sheets *s, const uint8_t *imgs, int k) {
    int rc = VAE_OK;
    if (s->nthreads < 2) {
        for (int Cb = 0; Cb < s->bcols && !rc; Cb++)
            rc = sheet_row(s, Cb, imgs, k, s->line, &s->committed);
    } else {
        pthread_mutex_lock(&s->mu);
        s->job_imgs = imgs, s->job_k = k;
        s->busy = s->nthreads;
        s->job++;
        pthread_cond_broadcast(&s->go);
        while (s->busy) pthread_cond_wait(&s->done, &s->mu);
        pthread_mutex_unlock(&s->mu);
        int cb = -1;
        for (int i = 0; i < s->nthreads; i++) {
            sheets_worker *w = &s->wk[i];
            s->committed += w->committed;
            w->committed = 0;
            if (w->rc && (cb < 0 || w->cb < cb)) {
                cb = w->cb;
                rc = vae_error_set(w->rc, "%s", w->msg);
            }
            w->rc = 0;
        }
    }
    if (rc) return rc;
    s->grow++;
    return VAE_OK;
}

/* --------------------------------------------------- public API */

int vae_sheets_open(vae_sheets **out, const char *dir, const char *prefix, int64_t n_total, int cols,
                    int c, int h, int w, int max_px, int threads) {
    if (!out) return vae_error_set(VAE_EINVAL, "sheets: no output handle");
    *out = NULL;
    if (!dir || !prefix || !*prefix)
        return vae_error_set(VAE_EINVAL, "sheets: a directory and a non-empty file prefix are needed");
    if (c != 1 && c != 3)
        return vae_error_set(VAE_EINVAL, "%s/%s: %d channels per image, expected 1 (grey) or 3 (RGB)",
                             dir, prefix, c);
    if (n_total <= 0 || cols <= 0 || h <= 0 || w <= 0 || max_px < 0 || threads < 0)
        return vae_error_set(VAE_EINVAL,
                             "%s/%s: bad sheet layout (%" PRId64 " images, %d columns, %dx%d pixels, "
                             "max_px %d, %d threads): expected counts and sizes > 0, max_px and "
                             "threads >= 0",
                             dir, prefix, n_total, cols, h, w, max_px, threads);
    const int pad = VAE_SHEETS_PAD;
    const int64_t mpx = max_px ? max_px : VAE_SHEETS_DEFAULT_MAX_PX;
    int64_t spr = (mpx + pad) / ((int64_t)w + pad), sps = (mpx + pad) / ((int64_t)h + pad);
    if (spr < 1) spr = 1;
    if (sps < 1) sps = 1;
    if (spr > cols) spr = cols;
    const int64_t rows = ceil_div(n_total, cols);
    if (sps > rows) sps = rows;
    /* the largest sheet: spr images across, sps down */
    const int64_t sw = spr * ((int64_t)w + pad) - pad, sh = sps * ((int64_t)h + pad) - pad;
    if (sw > SHEET_MAX_SIDE || sh > SHEET_MAX_SIDE)
        return vae_error_set(VAE_EINVAL,
                             "%s/%s: a sheet of %" PRId64 "x%" PRId64 " pixels (%dx%d images) exceeds "
                             "the PNG limit of %d pixels per side; lower max_px",
                             dir, prefix, sw, sh, h, w, SHEET_MAX_SIDE);
    /* h, w <= 1e6 here, so D < 3e12 fits int64; the grid row must fit size_t */
    const uint64_t D = (uint64_t)c * (uint64_t)h * (uint64_t)w;
    if (D > SIZE_MAX / (uint64_t)cols || (uint64_t)sw * (uint64_t)c > SIZE_MAX / 2)
        return vae_error_set(VAE_EINVAL,
                             "%s/%s: a grid row of %d images of %" PRIu64 " bytes does not fit in memory",
                             dir, prefix, cols, D);

    vae_sheets *s = vae_calloc(1, sizeof *s);
    if (!s) return vae_error_prefix(VAE_ENOMEM, "%s/%s: sheets", dir, prefix);
    int n = snprintf(s->base, sizeof s->base, "%s/%s", dir, prefix);
    s->n_total = n_total;
    s->cols = cols, s->c = c, s->h = h, s->w = w, s->pad = pad;
    s->D = (size_t)D;
    s->rows = rows;
    s->spr = (int)spr, s->sps = (int)sps;
    s->brows = ceil_div(rows, sps);
    s->bcols = (int)ceil_div(cols, spr);
    s->rdig = digits(s->brows - 1), s->cdig = digits(s->bcols - 1);
    /* all block rows but the last are full; in the last, sheets whose
     * top-left slot is past the last image are not written */
    const int64_t left = n_total - (s->brows - 1) * sps * (int64_t)cols; /* images in the last block row */
    const int64_t last = ceil_div(left, spr);
    s->count = (s->brows - 1) * s->bcols + (last < s->bcols ? last : s->bcols);
    s->line_px = (size_t)sw;

    /* the longest file name must fit an atomic file's path */
    char probe[sizeof ((vae_atomic_file *)0)->path];
    if (n < 0 || (size_t)n >= sizeof s->base ||
        vae_sheets_path(s, s->brows - 1, s->bcols - 1, probe, sizeof probe) != 0) {
        vae_sheets_abort(s);
        return vae_error_set(VAE_EINVAL, "%s/%s: sheet file names would be too long (at most %zu bytes)",
                             dir, prefix, sizeof probe - 1);
    }
    s->row = vae_malloc((size_t)cols, s->D);
    s->line = vae_malloc(s->line_px, (size_t)c);
    s->sh = vae_calloc((size_t)s->bcols, sizeof *s->sh);
    if (!s->row || !s->line || !s->sh) {
        vae_sheets_abort(s);
        return vae_error_prefix(VAE_ENOMEM, "%s/%s: sheets", dir, prefix);
    }
    if (threads == 0) threads = vae_cpus_usable();
    int rc = pool_start(s, threads < s->bcols ? threads : s->bcols);
    if (rc) {
        vae_sheets_abort(s);
        return rc;
    }
    *out = s;
    return VAE_OK;
}

int vae_sheets_push(vae_sheets *s, const uint8_t *imgs, int64_t n) {
    if (!s) return vae_error_set(VAE_EINVAL, "sheets: push to a NULL handle");
    if (s->failed)
        return vae_error_set(s->failed, "%s: sheets stopped by an earlier error; abort them", s->base);
    if (n < 0 || (n > 0 && !imgs))
        return vae_error_set(VAE_EINVAL, "%s: push of %" PRId64 " images%s", s->base, n,
                             n < 0 ? " (expected >= 0)" : " from a NULL buffer");
    if (n > s->n_total - s->n_pushed)
        return vae_error_set(VAE_EINVAL,
                             "%s: push of %" PRId64 " images after %" PRId64 " exceeds the %" PRId64
                             " announced",
                             s->base, n, s->n_pushed, s->n_total);
    int rc = VAE_OK;
    while (n > 0 && !rc) {
        if (s->in_row == 0 && n >= s->cols) {
            /* whole grid row in the caller's buffer: no copy */
            rc = emit_row(s, imgs, s->cols);
            imgs += (size_t)s->cols * s->D;
            n -= s->cols;
            s->n_pushed += s->cols;
            continue;
        }
        const int64_t take = n < s->cols - s->in_row ? n : s->cols - s->in_row;
        memcpy(s->row + (size_t)s->in_row * s->D, imgs, (size_t)take * s->D);
        s->in_row += (int)take;
        imgs += (size_t)take * s->D;
        n -= take;
        s->n_pushed += take;
        if (s->in_row == s->cols) {
            s->in_row = 0;
            rc = emit_row(s, s->row, s->cols);
        }
    }
    if (!rc && s->n_pushed == s->n_total && s->in_row > 0) { /* partial last grid row */
        const int k = s->in_row;
        s->in_row = 0;
        rc = emit_row(s, s->row, k);
    }
    if (rc) s->failed = rc;
    return rc;
}

void vae_sheets_abort(vae_sheets *s) {
    if (!s) return;
    pool_stop(s); /* the workers are idle between pushes: this only joins them */
    if (s->sh)
        for (int i = 0; i < s->bcols; i++) sheet_drop(&s->sh[i]);
    free(s->sh);
    free(s->line);
    free(s->row);
    free(s);
}

int vae_sheets_close(vae_sheets *s) {
    if (!s) return VAE_OK;
    int rc = VAE_OK;
    if (s->failed)
        rc = vae_error_set(s->failed, "%s: sheets stopped by an earlier error", s->base);
    else if (s->n_pushed != s->n_total)
        rc = vae_error_set(VAE_EINVAL,
                           "%s: closed after %" PRId64 " of %" PRId64 " images; the sheets in progress "
                           "were dropped",
                           s->base, s->n_pushed, s->n_total);
    else /* the last grid row committed every sheet */
        VAE_ASSERT(s->committed == s->count);
    vae_sheets_abort(s);
    return rc;
}

int64_t vae_sheets_count(const vae_sheets *s) { return s ? s->count : 0; }
int64_t vae_sheets_committed(const vae_sheets *s) { return s ? s->committed : 0; }
int vae_sheets_threads(const vae_sheets *s) { return s && s->nthreads >= 2 ? s->nthreads : 1; }

size_t vae_sheets_buffer_bytes(const vae_sheets *s) {
    if (!s) return 0;
    return (size_t)s->cols * s->D + (size_t)(1 + s->nwk) * s->line_px * (size_t)s->c +
           (size_t)s->bcols * sizeof(sheet) + (size_t)s->nwk * sizeof(sheets_worker);
}

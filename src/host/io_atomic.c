/* io_atomic.c — crash-safe file replacement.
 *
 * Protocol: write everything to "<path>.tmp.<pid>" in the same directory
 * (so that rename() stays within one filesystem), then
 *   fflush -> fsync(file) -> fclose -> rename(tmp, path) -> fsync(directory).
 * A crash at any point leaves either the complete old file or the complete
 * new one at `path`, never a mixture. Every step is checked; on any failure
 * before the rename the temp file is unlinked and `path` is untouched.
 *
 * af->failed holds 0 while all writes succeeded, else the errno of the first
 * failed write (EIO when the C library left errno at 0), so the message at
 * commit names the real cause, e.g. "No space left on device".
 */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vae_io.h"

int vae_atomic_open(vae_atomic_file *af, const char *path) {
    memset(af, 0, sizeof *af);
    size_t n = strlen(path);
    if (n == 0) return vae_error_set(VAE_EINVAL, "atomic write: empty path");
    if (n >= sizeof af->path)
        return vae_error_set(VAE_EINVAL, "%.64s...: path is too long (%zu bytes; at most %zu)", path,
                             n, sizeof af->path - 1);
    memcpy(af->path, path, n + 1);
    /* path < 1024 bytes and ".tmp.<pid>" < 30 bytes, so this always fits in tmp[1100] */
    snprintf(af->tmp, sizeof af->tmp, "%s.tmp.%ld", path, (long)getpid());
    af->f = fopen(af->tmp, "wb");
    if (!af->f) {
        int e = errno;
        af->tmp[0] = 0; /* nothing was created: abort must not unlink a stranger's file */
        return vae_error_set(VAE_EIO, "%s: %s (cannot create temporary file)", path, strerror(e));
    }
    return VAE_OK;
}

int vae_atomic_write(vae_atomic_file *af, const void *data, size_t bytes) {
    if (!af->f)
        return vae_error_set(VAE_EIO, "%s: write to a file that is not open", af->path);
    if (af->failed) return vae_error_set(VAE_EIO, "%s: %s", af->path, strerror(af->failed));
    if (bytes == 0) return VAE_OK;
    errno = 0;
    if (fwrite(data, 1, bytes, af->f) != bytes) {
        af->failed = errno ? errno : EIO;
        return vae_error_set(VAE_EIO, "%s: %s", af->path, strerror(af->failed));
    }
    return VAE_OK;
}

void vae_atomic_abort(vae_atomic_file *af) {
    if (af->f) fclose(af->f);
    af->f = NULL;
    if (af->tmp[0]) unlink(af->tmp);
    af->tmp[0] = 0;
}

/* fsync the directory holding `path` so that the rename itself is durable.
 * Returns 0 or an errno value. Filesystems that cannot fsync a directory
 * (EINVAL) are not an error: there is nothing more we can do there. */
static int fsync_parent_dir(const char *path) {
    char dir[sizeof ((vae_atomic_file *)0)->path];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash) snprintf(dir, sizeof dir, ".");
    else if (slash == dir) dir[1] = 0; /* "/name" -> "/" */
    else *slash = 0;
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0) return errno;
    int e = 0;
    if (fsync(fd) != 0 && errno != EINVAL) e = errno;
    if (close(fd) != 0 && !e) e = errno;
    return e;
}

int vae_atomic_commit(vae_atomic_file *af) {
    if (!af->f) return vae_error_set(VAE_EIO, "%s: commit of a file that is not open", af->path);
    int e = af->failed;
    const char *step = "write";
    if (!e) {
        errno = 0;
        if (fflush(af->f) != 0) e = errno ? errno : EIO, step = "flush";
    }
    if (!e && fsync(fileno(af->f)) != 0) e = errno, step = "fsync";
    /* fclose always releases the stream, even when it fails */
    errno = 0;
    int close_rc = fclose(af->f);
    af->f = NULL;
    if (!e && close_rc != 0) e = errno ? errno : EIO, step = "close";
    if (!e && rename(af->tmp, af->path) != 0) e = errno, step = "rename";
    if (e) {
        unlink(af->tmp);
        af->tmp[0] = 0;
        return vae_error_set(VAE_EIO, "%s: %s (%s failed; the previous file, if any, is unchanged)",
                             af->path, strerror(e), step);
    }
    af->tmp[0] = 0; /* renamed: the temp name no longer exists */
    e = fsync_parent_dir(af->path);
    if (e)
        return vae_error_set(VAE_EIO, "%s: %s (written, but syncing its directory failed)", af->path,
                             strerror(e));
    return VAE_OK;
}

int vae_mkdir_p(const char *path, char *made, size_t len) {
    char tmp[1024];
    if (made && len) made[0] = 0;
    if (!path[0]) return vae_error_set(VAE_EINVAL, "empty output directory name");
    if (snprintf(tmp, sizeof tmp, "%s", path) >= (int)sizeof tmp)
        return vae_error_set(VAE_EINVAL, "%s: path too long", path);
    for (char *p = tmp + 1;; p++) {
        const int last = *p == 0;
        if (!last && *p != '/') continue;
        *p = 0;
        if (mkdir(tmp, 0777) == 0) {
            if (made && len && !made[0]) snprintf(made, len, "%s", tmp);
        } else if (errno != EEXIST) {
            return vae_error_set(VAE_EIO, "%s: cannot create directory: %s", tmp, strerror(errno));
        }
        if (last) break;
        *p = '/';
    }
    struct stat st;
    if (stat(tmp, &st) != 0 || !S_ISDIR(st.st_mode))
        return vae_error_set(VAE_EIO, "%s: exists and is not a directory", tmp);
    if (access(tmp, W_OK) != 0)
        return vae_error_set(VAE_EIO, "%s: output directory is not writable: %s", tmp, strerror(errno));
    return VAE_OK;
}

void vae_rmdir_made(const char *path, const char *made) {
    char tmp[1024];
    const size_t m = made ? strlen(made) : 0;
    if (!m || snprintf(tmp, sizeof tmp, "%s", path) >= (int)sizeof tmp) return;
    for (;;) {
        size_t n = strlen(tmp);
        while (n > 1 && tmp[n - 1] == '/') tmp[--n] = 0; /* "a/b/" is "a/b" */
        if (n < m || rmdir(tmp) != 0 || n == m) return;  /* not empty, or the outermost done */
        char *s = strrchr(tmp, '/');
        if (!s || s == tmp) return;
        *s = 0;
    }
}

int vae_atomic_remove_stale(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    struct dirent *e;
    char path[2048];
    int removed = 0;
    while ((e = readdir(d))) {
        const char *t = strstr(e->d_name, ".tmp.");
        if (!t || t == e->d_name) continue;
        const char *q = t + 5;
        if (!*q || strlen(q) > 9 || strspn(q, "0123456789") != strlen(q)) continue;
        long pid = strtol(q, NULL, 10);
        if (pid <= 0 || pid == (long)getpid()) continue; /* our own files are in progress */
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue; /* a live writer: leave it */
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (unlink(path) == 0) removed++;
    }
    closedir(d);
    return removed;
}

/* test_util.c — src/host/util.c: the error message buffer (set, prefix, the
 * fallback text), the allocation helpers' overflow checks, and the host
 * memory figure the sampler sizes its chunks from. */
#include <pthread.h>
#include <stdint.h>

#include "testutil.h"

static void *fresh_thread(void *out) {
    /* the message buffer is per thread: nothing set here yet */
    *(const char **)out = vae_error_get();
    return NULL;
}

int main(void) {
    /* prefix: "<context>: <the message before>", exactly */
    CHECK(vae_error_set(1, "inner %s", "cause") == 1);
    CHECK(vae_error_prefix(2, "outer %d", 5) == 2);
    CHECK_MSG(strcmp(vae_error_get(), "outer 5: inner cause") == 0, "\"%s\"", vae_error_get());
    /* a thread that set no message reads a placeholder, not an empty string */
    pthread_t t;
    const char *got = NULL;
    CHECK(pthread_create(&t, NULL, fresh_thread, &got) == 0 && pthread_join(t, NULL) == 0);
    CHECK_MSG(got && strcmp(got, "unknown error") == 0, "\"%s\"", got ? got : "(null)");

    /* n x size past SIZE_MAX: refused, not wrapped to a small buffer */
    void *p = vae_malloc(SIZE_MAX / 2 + 1, 4);
    CHECK(p == NULL);
    CHECK_MSG(strstr(vae_error_get(), "overflows") != NULL, "\"%s\"", vae_error_get());
    free(p);
    p = vae_malloc(3, 5);
    CHECK(p != NULL);
    free(p);

    /* MemAvailable is in KiB: the figure is whole KiB in bytes */
    const int64_t avail = vae_host_memory_available();
    CHECK_MSG(avail > 0 && avail % 1024 == 0, "%lld bytes available", (long long)avail);
    return test_finish();
}

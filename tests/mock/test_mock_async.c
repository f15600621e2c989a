/* test_mock_async.c — the mock runtime's asynchrony (mock_cudart.c,
 * $VAE_MOCK_ASYNC=lazy): work queued on its stream runs only when the host
 * has to see it, and then only what that needs, so that a missing wait shows
 * as a stale value. Each check states what CUDA allows a GPU to do and that
 * the mock does the latest of it:
 *
 *   1. a copy to pinned memory lands at the stream's synchronize, not before;
 *   2. a stream that waits on an event sees the other stream's work before
 *      the record; without the wait it does not (the other stream's work
 *      is still pending), and that work runs at its own synchronize;
 *   2b. a wait is for the record current when it was issued: a later record
 *      of the same event (on another stream, already run) does not release
 *      it, and destroying the event leaves it in force;
 *   3. a copy to pageable memory is synchronous, as the runtime's; one from
 *      pageable memory reads it when issued and lands in stream order;
 *   4. a copy from pinned memory reads what the host wrote there before the
 *      stream ran, even if written after the copy was issued;
 *   5. cudaEventSynchronize runs the work before the record, not after it;
 *      cudaEventElapsedTime of an event not yet done is cudaErrorNotReady;
 *   6. a graph launched is queued like any work;
 *   7. a kernel launch is queued (the emulator's hook takes it), and an
 *      invalid configuration is refused when issued, as CUDA does;
 *   8. cudaFree and cudaDeviceSynchronize run everything pending.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include "emu_launch.h"
#include "mock.h"

#include "rt_check.h"

/* a one-thread kernel body for the emulator: *arg->p = arg->v */
typedef struct {
    int *p;
    int v;
} store_arg;
static void store_body(void *a) {
    store_arg *s = a;
    *s->p = s->v;
}

static int launch_store(cudaStream_t s, int *p, int v, unsigned block) {
    store_arg a = {p, v};
    vae_emu_launch_rec rec = {{1, 1, 1}, {block, 1, 1}, 0, (void *)s, store_body,
                              &a, sizeof a, __FILE__, 1, 0};
    return vae_emu_launch_hook(&rec);
}

/* the first byte at dev, read through a pageable copy on its own stream
 * (synchronous; it waits for nothing on the other streams) */
static unsigned char peek(const void *dev, cudaStream_t s) {
    unsigned char b = 0;
    MUST(cudaMemcpyAsync(&b, dev, 1, cudaMemcpyDeviceToHost, s));
    return b;
}

int main(void) {
    setenv("VAE_MOCK_ASYNC", "lazy", 1);
    cudaStream_t a, b, c;
    MUST(cudaStreamCreateWithFlags(&a, cudaStreamNonBlocking));
    MUST(cudaStreamCreateWithFlags(&b, cudaStreamNonBlocking));
    MUST(cudaStreamCreateWithFlags(&c, cudaStreamNonBlocking));
    unsigned char *x, *y, *h;
    MUST(cudaMalloc((void **)&x, 256));
    MUST(cudaMalloc((void **)&y, 256));
    MUST(cudaMallocHost((void **)&h, 256));

    /* 1 */
    memset(h, 0, 256);
    MUST(cudaMemsetAsync(x, 1, 16, a));
    MUST(cudaMemcpyAsync(h, x, 16, cudaMemcpyDeviceToHost, a));
    CHECK(h[0] == 0, "1: a copy to pinned memory landed before the synchronize (%d)", h[0]);
    MUST(cudaStreamSynchronize(a));
    CHECK(h[0] == 1 && h[15] == 1, "1: after the synchronize the copy has landed (%d)", h[0]);

    /* 2: with an event between the streams ... */
    cudaEvent_t e, t0, t1;
    MUST(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    MUST(cudaMemsetAsync(x, 2, 16, a));
    MUST(cudaEventRecord(e, a));
    MUST(cudaStreamWaitEvent(b, e, 0));
    MUST(cudaMemcpyAsync(y, x, 16, cudaMemcpyDeviceToDevice, b));
    MUST(cudaStreamSynchronize(b));
    CHECK(peek(y, c) == 2, "2: b waited for a's memset through the event (%d)", peek(y, c));
    /* ... and without it */
    MUST(cudaMemsetAsync(x, 3, 16, a));
    MUST(cudaMemcpyAsync(y, x, 16, cudaMemcpyDeviceToDevice, b));
    MUST(cudaStreamSynchronize(b));
    CHECK(peek(y, c) == 2, "2: without a wait, b ran before a's pending memset (%d)", peek(y, c));
    CHECK(peek(x, c) == 2, "2: a's memset is still pending (%d)", peek(x, c));
    MUST(cudaStreamSynchronize(a));
    CHECK(peek(x, c) == 3, "2: a's memset ran at a's synchronize (%d)", peek(x, c));

    /* 2b: record on a, wait on b, the same event recorded again on c and
     * run there, the event destroyed: b still waits for a's memset */
    cudaEvent_t e2;
    MUST(cudaEventCreateWithFlags(&e2, cudaEventDisableTiming));
    MUST(cudaMemsetAsync(x, 20, 16, a));
    MUST(cudaEventRecord(e2, a));
    MUST(cudaStreamWaitEvent(b, e2, 0));
    MUST(cudaMemcpyAsync(y, x, 16, cudaMemcpyDeviceToDevice, b));
    MUST(cudaEventRecord(e2, c));
    MUST(cudaEventSynchronize(e2));
    MUST(cudaEventDestroy(e2));
    CHECK(peek(x, c) == 3, "2b: a's memset has not run (%d)", peek(x, c));
    MUST(cudaStreamSynchronize(b));
    CHECK(peek(y, c) == 20, "2b: b waited for a's record, not the later one (%d)", peek(y, c));

    /* 3: pageable memory: the copy from the device is done when the call
     * returns, the stream's earlier work first */
    unsigned char pg[16] = {0};
    MUST(cudaMemsetAsync(x, 4, 16, a));
    MUST(cudaMemcpyAsync(pg, x, 16, cudaMemcpyDeviceToHost, a));
    CHECK(pg[0] == 4 && pg[15] == 4, "3: a pageable copy is synchronous (%d)", pg[0]);
    unsigned char src[16];
    memset(src, 5, sizeof src);
    MUST(cudaMemsetAsync(x, 4, 16, a));
    MUST(cudaMemcpyAsync(x, src, 16, cudaMemcpyHostToDevice, a));
    memset(src, 6, sizeof src); /* allowed: the pageable source was staged */
    CHECK(peek(x, c) == 4, "3: a copy from pageable memory lands in stream order (%d)", peek(x, c));
    MUST(cudaStreamSynchronize(a));
    CHECK(peek(x, c) == 5, "3: a pageable source is read when the call is made (%d)", peek(x, c));

    /* 4: a pinned source is read when the stream gets to the copy */
    memset(h, 7, 16);
    MUST(cudaMemcpyAsync(x, h, 16, cudaMemcpyHostToDevice, a));
    memset(h, 8, 16); /* a hazard: the copy has not run */
    MUST(cudaStreamSynchronize(a));
    CHECK(peek(x, c) == 8, "4: the pinned source was read late, as a GPU may (%d)", peek(x, c));

    /* 5: an event's synchronize runs what is before its record only */
    MUST(cudaEventCreate(&t0));
    MUST(cudaEventCreate(&t1));
    MUST(cudaEventRecord(t0, a));
    MUST(cudaMemsetAsync(x, 9, 16, a));
    MUST(cudaEventRecord(t1, a));
    MUST(cudaMemsetAsync(x, 10, 16, a));
    float ms = -1;
    CHECK(cudaEventElapsedTime(&ms, t0, t1) == cudaErrorNotReady,
          "5: elapsed time of events not yet done is cudaErrorNotReady");
    MUST(cudaEventSynchronize(t1));
    CHECK(peek(x, c) == 9, "5: the event's synchronize ran up to its record (%d)", peek(x, c));
    CHECK(cudaEventElapsedTime(&ms, t0, t1) == cudaSuccess && ms >= 0,
          "5: elapsed time once both are done (%g)", ms);
    MUST(cudaStreamSynchronize(a));
    CHECK(peek(x, c) == 10, "5: the rest ran at the stream's synchronize (%d)", peek(x, c));

    /* 6: a graph launch */
    cudaGraph_t g;
    cudaGraphExec_t ge;
    MUST(cudaStreamBeginCapture(a, cudaStreamCaptureModeThreadLocal));
    MUST(cudaMemsetAsync(x, 11, 16, a));
    MUST(cudaStreamEndCapture(a, &g));
    MUST(cudaGraphInstantiateWithFlags(&ge, g, 0));
    MUST(cudaGraphLaunch(ge, a));
    CHECK(peek(x, c) == 10, "6: the graph's work is queued (%d)", peek(x, c));
    MUST(cudaStreamSynchronize(a));
    CHECK(peek(x, c) == 11, "6: and runs at the synchronize (%d)", peek(x, c));

    /* 7: kernels */
    int *k;
    MUST(cudaMalloc((void **)&k, sizeof *k));
    MUST(cudaMemsetAsync(k, 0, sizeof *k, a));
    MUST(cudaStreamSynchronize(a));
    CHECK(launch_store(a, k, 12, 1) == 1, "7: the hook queues a launch");
    int kv = -1;
    MUST(cudaMemcpyAsync(&kv, k, sizeof kv, cudaMemcpyDeviceToHost, c));
    CHECK(kv == 0, "7: the kernel has not run (%d)", kv);
    MUST(cudaStreamSynchronize(a));
    MUST(cudaMemcpyAsync(&kv, k, sizeof kv, cudaMemcpyDeviceToHost, c));
    CHECK(kv == 12, "7: it ran at the synchronize (%d)", kv);
    (void)cudaGetLastError();
    CHECK(launch_store(a, k, 13, 2048) == 3 && cudaGetLastError() == cudaErrorInvalidConfiguration,
          "7: a block of 2048 threads is refused when launched");
    MUST(cudaStreamSynchronize(a));
    MUST(cudaMemcpyAsync(&kv, k, sizeof kv, cudaMemcpyDeviceToHost, c));
    CHECK(kv == 12, "7: and never runs (%d)", kv);

    /* 8 */
    MUST(cudaMemsetAsync(y, 14, 16, b));
    MUST(cudaDeviceSynchronize());
    CHECK(peek(y, c) == 14, "8: cudaDeviceSynchronize ran b's work (%d)", peek(y, c));
    MUST(cudaMemsetAsync(y, 15, 16, b));
    MUST(cudaMemcpyAsync(h, y, 16, cudaMemcpyDeviceToHost, b));
    h[0] = 0;
    MUST(cudaFree(k));
    CHECK(h[0] == 15, "8: cudaFree synchronized the device first (%d)", h[0]);

    MUST(cudaGraphExecDestroy(ge));
    MUST(cudaGraphDestroy(g));
    MUST(cudaEventDestroy(e));
    MUST(cudaEventDestroy(t0));
    MUST(cudaEventDestroy(t1));
    MUST(cudaFreeHost(h));
    MUST(cudaFree(x));
    MUST(cudaFree(y));
    MUST(cudaStreamDestroy(a));
    MUST(cudaStreamDestroy(b));
    MUST(cudaStreamDestroy(c));
    printf("%d passed, %d failed\n", g_pass, g_fail);
    return g_fail ? 1 : 0;
}

/* test_capture_invalidated.c — what a stream capture does after an illegal
 * call invalidates it, on whichever CUDA runtime it is linked with: the mock
 * of tests/mock (test_mock_capture) and, in a CUDA build on a GPU, the real
 * one (test_capture_invalidated; skipped without a GPU). The same checks on
 * both, so that a GPU run shows whether the mock models the runtime here:
 *
 *   1. cudaStreamBeginCapture (global mode) on a non-blocking stream;
 *      cudaMemsetAsync into the capture: recorded, cudaSuccess;
 *   2. cudaDeviceSynchronize: refused (cudaErrorStreamCaptureUnsupported),
 *      and the capture is invalidated (cudaStreamIsCapturing says so);
 *   3. cudaMemsetAsync again: cudaErrorStreamCaptureInvalidated, and nothing
 *      is written (the buffer still holds what step 0 set);
 *   4. cudaStreamEndCapture: cudaErrorStreamCaptureInvalidated, no graph;
 *   5. after it, the stream works eagerly again (a memset lands).
 * With the mock also: a kernel launch offered to its launch hook in that
 * state is refused (2, tests/emu/emu_launch.h), and library work
 * (mock_enqueue) likewise (-1), as the real libraries fail such calls. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>

#ifdef VAE_TEST_MOCK
#include "emu_launch.h"
#include "mock.h"
#endif

#include "rt_check.h"

#ifdef VAE_TEST_MOCK
static void nothing(void *arg) { (void)arg; }
#endif

/* the first byte of the device buffer (s not capturing) */
static unsigned char first_byte(const void *dev, cudaStream_t s) {
    unsigned char b = 0;
    MUST(cudaMemcpyAsync(&b, dev, 1, cudaMemcpyDeviceToHost, s));
    MUST(cudaStreamSynchronize(s));
    return b;
}

int main(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n < 1) {
        printf("SKIPPED: no CUDA device\n");
        return 77;
    }
    (void)cudaGetLastError();
    void *buf = NULL;
    cudaStream_t s;
    MUST(cudaMalloc(&buf, 256));
    MUST(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    MUST(cudaMemsetAsync(buf, 0x11, 256, s));
    MUST(cudaStreamSynchronize(s));

    /* 1 */
    MUST(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    CHECK(cudaMemsetAsync(buf, 0x22, 256, s) == cudaSuccess, "memset into a valid capture");
    /* 2 */
    cudaError_t e = cudaDeviceSynchronize();
    CHECK(e == cudaErrorStreamCaptureUnsupported,
          "cudaDeviceSynchronize during a capture: %s, expected "
          "cudaErrorStreamCaptureUnsupported",
          cudaGetErrorString(e));
    enum cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
    e = cudaStreamIsCapturing(s, &cs);
    CHECK(e == cudaSuccess && cs == cudaStreamCaptureStatusInvalidated,
          "capture status after the refused call: %d (%s), expected invalidated", (int)cs,
          cudaGetErrorString(e));
    (void)cudaGetLastError();
    /* 3 */
    e = cudaMemsetAsync(buf, 0x33, 256, s);
    CHECK(e == cudaErrorStreamCaptureInvalidated,
          "memset into an invalidated capture: %s, expected "
          "cudaErrorStreamCaptureInvalidated",
          cudaGetErrorString(e));
    (void)cudaGetLastError();
#ifdef VAE_TEST_MOCK
    vae_emu_launch_rec rec;
    memset(&rec, 0, sizeof rec);
    rec.grid[0] = rec.grid[1] = rec.grid[2] = 1;
    rec.block[0] = rec.block[1] = rec.block[2] = 1;
    rec.stream = (void *)s;
    rec.site = __FILE__;
    CHECK(vae_emu_launch_hook && vae_emu_launch_hook(&rec) == 2,
          "a kernel launch into an invalidated capture is not refused by the mock's hook");
    int dummy = 0;
    CHECK(mock_enqueue(s, "test", nothing, &dummy, sizeof dummy) == -1,
          "library work into an invalidated capture is not refused by mock_enqueue");
#endif
    /* 4 */
    cudaGraph_t g = (cudaGraph_t)(void *)&g; /* must come back NULL */
    e = cudaStreamEndCapture(s, &g);
    CHECK(e == cudaErrorStreamCaptureInvalidated && g == NULL,
          "end of an invalidated capture: %s, graph %p; expected "
          "cudaErrorStreamCaptureInvalidated and none",
          cudaGetErrorString(e), (void *)g);
    (void)cudaGetLastError();
    MUST(cudaDeviceSynchronize());
    unsigned char b = first_byte(buf, s);
    CHECK(b == 0x11, "the invalidated capture's work ran: byte %#x, expected 0x11", b);
    /* 5 */
    e = cudaStreamIsCapturing(s, &cs);
    CHECK(e == cudaSuccess && cs == cudaStreamCaptureStatusNone,
          "the stream still captures after the end: %d", (int)cs);
    CHECK(cudaMemsetAsync(buf, 0x44, 256, s) == cudaSuccess, "an eager memset after the capture");
    b = first_byte(buf, s);
    CHECK(b == 0x44, "the eager memset after the capture: byte %#x, expected 0x44", b);

    MUST(cudaStreamDestroy(s));
    MUST(cudaFree(buf));
    printf("%d passed, %d failed\n", g_pass, g_fail);
    return g_fail ? 1 : 0;
}

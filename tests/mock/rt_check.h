/* rt_check.h — the checks of the small runtime programs in tests/mock
 * (test_capture_invalidated.c, test_mock_async.c), which build against the
 * mock runtime and, the first, the real one: CHECK counts and reports,
 * MUST stops at a failed runtime call. Include after cuda_runtime_api.h. */
#ifndef VAE_RT_CHECK_H
#define VAE_RT_CHECK_H

#include <stdio.h>
#include <stdlib.h>

static int g_fail, g_pass;

#define CHECK(cond, ...)                                   \
    do {                                                   \
        if (cond) {                                        \
            g_pass++;                                      \
        } else {                                           \
            g_fail++;                                      \
            printf("%s:%d: FAILED: ", __FILE__, __LINE__); \
            printf(__VA_ARGS__);                           \
            printf("\n");                                  \
        }                                                  \
    } while (0)

#define MUST(call)                                                                        \
    do {                                                                                  \
        cudaError_t e_ = (call);                                                          \
        if (e_ != cudaSuccess) {                                                          \
            printf("%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
            exit(1);                                                                      \
        }                                                                                 \
    } while (0)

#endif

/* mock_cudnn.c — the mock device's cuDNN (tests/mock/mock.h).
 *
 * The cuDNN 9 legacy-API functions that src/host/backend_cuda.c calls,
 * implemented on the CPU against the real headers: handles and
 * tensor/filter/convolution descriptors (heap structs holding exactly what
 * was set), the output-size query, the algorithm searches (Find*Ex, which
 * "run" on the caller's buffers) and heuristics (Get*_v7), and the three
 * convolutions. Every call validates its arguments as the cuDNN API reference
 * describes and returns cuDNN's status, with a mock_note saying why.
 *
 * What is implemented (anything else is refused with a note):
 *   - tensors: 4-D, NCHW, CUDNN_DATA_FLOAT (packed, as Set4dDescriptor makes);
 *   - filters: 4-D, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW (KCRS);
 *   - convolutions: 2-D, any pad >= 0, stride >= 1, dilation >= 1, group
 *     count 1, compute type CUDNN_DATA_FLOAT (cuDNN's FLOAT_CONFIG, the only
 *     configuration for float data), both modes: CUDNN_CONVOLUTION flips the
 *     filter (w[k, c, R-1-r, S-1-s]), CUDNN_CROSS_CORRELATION does not.
 *     Every result is accumulated in double and rounded to float once. The
 *     math type is stored and reported, and under any but CUDNN_FMA_MATH
 *     the two inputs are first rounded to TF32 (10 mantissa bits, to
 *     nearest even, as mock_cublas.c does): cudnnMathType_t's documentation
 *     permits TF32 tensor-core math for float data on A100 and later
 *     devices (the mock device is sm_90) under CUDNN_DEFAULT_MATH and the
 *     TENSOR_OP types, and FMA_MATH alone rules it out. So a caller that
 *     runs a plan made for the other math type gets different numbers.
 *
 * Definitions (x [N, C, H, W], w [K, C, R, S], y [N, K, P, Q]; the mode's
 * filter tap wm[k, c, r, s] = w[k, c, r, s] or w[k, c, R-1-r, S-1-s]):
 *   P = 1 + (H + 2 pad_h - ((R - 1) dil_h + 1)) / u, likewise Q;
 *   forward         y[n,k,p,q]  = sum_{c,r,s} x[n, c, p u - pad_h + r dil_h,
 *                                                q v - pad_w + s dil_w] wm[k,c,r,s]
 *                                 (taps outside x are zero padding);
 *   backward data   dx = the adjoint of x -> forward(x, w) applied to dy;
 *   backward filter dw = the adjoint of w -> forward(x, w) applied to dy
 *                        (so dw is indexed like w: the flip is undone).
 * Each is out = alpha * result + beta * out with alpha and beta read as
 * floats from host memory at the call; beta == 0 never reads out (it may hold
 * NaN). The work runs through mock_enqueue with every value it needs copied
 * (descriptors may be destroyed before a captured graph is launched).
 *
 * Algorithms. Find*Ex and Get*_v7 return one result: forward
 * CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM (0), backward data and backward
 * filter ALGO_1 — cudnn_ops.h marks ALGO_0 of both as non-deterministic, so a
 * result claiming CUDNN_DETERMINISTIC for ALGO_0 would contradict the
 * header. status SUCCESS, determinism CUDNN_DETERMINISTIC, the math type set
 * on the descriptor, and `memory` a small nonzero workspace (ws_need below,
 * deliberately not a multiple of 256) that the convolution calls then
 * require: workSpaceSizeInBytes >= it, a non-NULL workSpace, and no overlap
 * with the tensors. The workspace's first ws_need bytes are overwritten with
 * NaN bytes (0xFF) by every call that uses it, as real scratch is, and a
 * Find*Ex overwrites all the workspace it was offered (its candidates may
 * use all of it; big_scribble). $VAE_MOCK_CUDNN_WS and $VAE_MOCK_CUDNN_TRAP
 * (below) list further algorithms ahead of that one.
 * Find*Ex with less workspace than that reports the result with status
 * CUDNN_STATUS_ALLOC_FAILED (the API reference's status for "the provided
 * workspace is insufficient"), still returning SUCCESS itself. Find*Ex does
 * write its output tensor, as cuDNN's does (it runs the candidates there):
 * it fills it with NaN, so a caller that relied on the output being untouched
 * — or on it holding the convolution's result — sees NaNs. Find*Ex times the
 * candidates and synchronises, which a stream being captured forbids: during
 * a capture it returns CUDNN_STATUS_EXECUTION_FAILED_CUDART (the mock's
 * choice of status: the documentation names none). Get*_v7 runs nothing and
 * is allowed anywhere.
 *
 * Validation statuses, from the cuDNN API reference (function by function):
 *   Set*Descriptor: BAD_PARAM for a NULL descriptor, an invalid enumerant, a
 *     dimension <= 0 (the Nd setters' "negative or zero", which the 4-D ones
 *     go through), a negative pad, a stride or dilation <= 0; NOT_SUPPORTED
 *     for a tensor of more than 2^31 - 1 elements;
 *   GetConvolution2dForwardOutputDim: BAD_PARAM for NULL arguments, an unset
 *     descriptor, x and w feature maps that differ, a filter larger than the
 *     padded input;
 *   the convolutions / Find*Ex / Get*_v7: BAD_PARAM for NULL arguments
 *     (handle, descriptors, data, alpha, beta, returnedAlgoCount,
 *     perfResults), requestedAlgoCount < 1, unset descriptors, data types that
 *     differ, x and w feature maps that differ, a filter larger than the
 *     padded input, a y whose batch or feature maps differ from x's / w's
 *     (the "numbers of feature maps ... differ" rows), a workspace that is too
 *     small or NULL; y's spatial size not the one
 *     GetConvolution2dForwardOutputDim gives: NOT_SUPPORTED for
 *     cudnnConvolutionForward (its reference lists it there), BAD_PARAM for
 *     the others; NOT_SUPPORTED for a valid configuration the mock does not
 *     implement (non-float data or compute type, NHWC, NCHW_VECT_C) and for
 *     CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD ("not implemented" in
 *     cudnn_ops.h); BAD_PARAM for an algo outside its enum.
 *   The mock also refuses (BAD_PARAM) an output that overlaps an input or
 *   the workspace: cuDNN does not document in-place convolutions, and the
 *   result would be garbage on a GPU.
 */
#include <cudnn.h>

#include "mock.h"

#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------- objects */

#define MAGIC_HANDLE 0x444e4e48u /* "HNND" */
#define MAGIC_TENSOR 0x444e4e54u
#define MAGIC_FILTER 0x444e4e46u
#define MAGIC_CONV 0x444e4e43u
#define MAGIC_DEAD 0xdeadd00du

struct cudnnContext {
    unsigned magic;
    cudaStream_t stream; /* NULL: the legacy default stream, as after cudnnCreate */
};

struct cudnnTensorStruct {
    unsigned magic;
    int set; /* cudnnSetTensor4dDescriptor succeeded */
    cudnnTensorFormat_t format;
    cudnnDataType_t type;
    int n, c, h, w;
};

struct cudnnFilterStruct {
    unsigned magic;
    int set;
    cudnnDataType_t type;
    cudnnTensorFormat_t format;
    int k, c, h, w;
};

struct cudnnConvolutionStruct {
    unsigned magic;
    int set; /* cudnnSetConvolution2dDescriptor succeeded */
    int pad_h, pad_w, u, v, dil_h, dil_w;
    cudnnConvolutionMode_t mode;
    cudnnDataType_t compute;
    cudnnMathType_t math; /* CUDNN_DEFAULT_MATH until set */
};

/* ---------------------------------------------------------- versions */

size_t cudnnGetVersion(void) { return (size_t)CUDNN_VERSION; }

const char *cudnnGetErrorString(cudnnStatus_t status) {
    switch ((int)status) {
#define S(x) \
    case x:  \
        return #x;
        S(CUDNN_STATUS_SUCCESS)
        S(CUDNN_STATUS_NOT_INITIALIZED)
        S(CUDNN_STATUS_SUBLIBRARY_VERSION_MISMATCH)
        S(CUDNN_STATUS_SERIALIZATION_VERSION_MISMATCH)
        S(CUDNN_STATUS_DEPRECATED)
        S(CUDNN_STATUS_LICENSE_ERROR)
        S(CUDNN_STATUS_RUNTIME_IN_PROGRESS)
        S(CUDNN_STATUS_RUNTIME_FP_OVERFLOW)
        S(CUDNN_STATUS_SUBLIBRARY_LOADING_FAILED)
        S(CUDNN_STATUS_BAD_PARAM)
        case 2001: return "CUDNN_STATUS_INVALID_VALUE";
        S(CUDNN_STATUS_BAD_PARAM_NULL_POINTER)
        S(CUDNN_STATUS_BAD_PARAM_MISALIGNED_POINTER)
        S(CUDNN_STATUS_BAD_PARAM_NOT_FINALIZED)
        S(CUDNN_STATUS_BAD_PARAM_OUT_OF_BOUND)
        S(CUDNN_STATUS_BAD_PARAM_SIZE_INSUFFICIENT)
        S(CUDNN_STATUS_BAD_PARAM_STREAM_MISMATCH)
        S(CUDNN_STATUS_BAD_PARAM_SHAPE_MISMATCH)
        S(CUDNN_STATUS_BAD_PARAM_DUPLICATED_ENTRIES)
        S(CUDNN_STATUS_BAD_PARAM_ATTRIBUTE_TYPE)
        S(CUDNN_STATUS_BAD_PARAM_CUDA_GRAPH_MISMATCH)
        S(CUDNN_STATUS_BAD_PARAM_DESCRIPTOR_TYPE)
        S(CUDNN_STATUS_NOT_SUPPORTED)
        S(CUDNN_STATUS_NOT_SUPPORTED_GRAPH_PATTERN)
        S(CUDNN_STATUS_NOT_SUPPORTED_SHAPE)
        S(CUDNN_STATUS_NOT_SUPPORTED_DATA_TYPE)
        S(CUDNN_STATUS_NOT_SUPPORTED_LAYOUT)
        S(CUDNN_STATUS_NOT_SUPPORTED_INCOMPATIBLE_CUDA_DRIVER)
        S(CUDNN_STATUS_NOT_SUPPORTED_INCOMPATIBLE_CUDART)
        S(CUDNN_STATUS_NOT_SUPPORTED_ARCH_MISMATCH)
        S(CUDNN_STATUS_NOT_SUPPORTED_RUNTIME_PREREQUISITE_MISSING)
        S(CUDNN_STATUS_NOT_SUPPORTED_SUBLIBRARY_UNAVAILABLE)
        S(CUDNN_STATUS_NOT_SUPPORTED_SHARED_MEMORY_INSUFFICIENT)
        S(CUDNN_STATUS_NOT_SUPPORTED_PADDING)
        S(CUDNN_STATUS_NOT_SUPPORTED_BAD_LAUNCH_PARAM)
        S(CUDNN_STATUS_NOT_SUPPORTED_CUDA_GRAPH_NATIVE_API)
        S(CUDNN_STATUS_NOT_SUPPORTED_INVALID_DYNAMIC_SHAPE)
        S(CUDNN_STATUS_INTERNAL_ERROR)
        S(CUDNN_STATUS_INTERNAL_ERROR_COMPILATION_FAILED)
        S(CUDNN_STATUS_INTERNAL_ERROR_UNEXPECTED_VALUE)
        S(CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED)
        S(CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED)
        S(CUDNN_STATUS_INTERNAL_ERROR_BAD_LAUNCH_PARAM)
        S(CUDNN_STATUS_INTERNAL_ERROR_TEXTURE_CREATION_FAILED)
        S(CUDNN_STATUS_EXECUTION_FAILED)
        S(CUDNN_STATUS_EXECUTION_FAILED_CUDA_DRIVER)
        S(CUDNN_STATUS_EXECUTION_FAILED_CUBLAS)
        S(CUDNN_STATUS_EXECUTION_FAILED_CUDART)
        S(CUDNN_STATUS_EXECUTION_FAILED_CURAND)
#undef S
    default:
        return "CUDNN_UNKNOWN_STATUS_FOUND";
    }
}

/* ------------------------------------------------------------- handle */

static int bad_handle(const char *fn, cudnnHandle_t h) {
    if (!h) {
        mock_note("%s: handle is NULL", fn);
        return 1;
    }
    if (h->magic != MAGIC_HANDLE) {
        mock_note("%s: handle %p is not a live handle from cudnnCreate", fn, (void *)h);
        return 1;
    }
    return 0;
}

cudnnStatus_t cudnnCreate(cudnnHandle_t *handle) {
    if (!handle) {
        mock_note("cudnnCreate: handle pointer is NULL");
        return CUDNN_STATUS_BAD_PARAM;
    }
    struct cudnnContext *h = calloc(1, sizeof *h);
    if (!h) {
        mock_note("cudnnCreate: out of host memory");
        return CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED;
    }
    h->magic = MAGIC_HANDLE;
    h->stream = NULL;
    *handle = h;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnDestroy(cudnnHandle_t handle) {
    if (bad_handle("cudnnDestroy", handle)) return CUDNN_STATUS_BAD_PARAM;
    handle->magic = MAGIC_DEAD;
    free(handle);
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnSetStream(cudnnHandle_t handle, cudaStream_t streamId) {
    if (bad_handle("cudnnSetStream", handle)) return CUDNN_STATUS_BAD_PARAM;
    handle->stream = streamId;
    return CUDNN_STATUS_SUCCESS;
}

/* ------------------------------------------------------- descriptors */

static int valid_type(cudnnDataType_t t) { return (int)t >= 0 && (int)t <= CUDNN_DATA_COMPLEX_FP64; }
static int valid_format(cudnnTensorFormat_t f) {
    return f == CUDNN_TENSOR_NCHW || f == CUDNN_TENSOR_NHWC || f == CUDNN_TENSOR_NCHW_VECT_C;
}

cudnnStatus_t cudnnCreateTensorDescriptor(cudnnTensorDescriptor_t *tensorDesc) {
    if (!tensorDesc) {
        mock_note("cudnnCreateTensorDescriptor: tensorDesc is NULL");
        return CUDNN_STATUS_BAD_PARAM;
    }
    struct cudnnTensorStruct *d = calloc(1, sizeof *d);
    if (!d) return CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED;
    d->magic = MAGIC_TENSOR;
    *tensorDesc = d;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnSetTensor4dDescriptor(cudnnTensorDescriptor_t tensorDesc,
                                         cudnnTensorFormat_t format, cudnnDataType_t dataType,
                                         int n, int c, int h, int w) {
    const char *fn = "cudnnSetTensor4dDescriptor";
    if (!tensorDesc || tensorDesc->magic != MAGIC_TENSOR) {
        mock_note("%s: tensorDesc %p is not a live tensor descriptor", fn, (void *)tensorDesc);
        return CUDNN_STATUS_BAD_PARAM;
    }
    if (!valid_format(format)) {
        mock_note("%s: format %d is not a cudnnTensorFormat_t", fn, (int)format);
        return CUDNN_STATUS_BAD_PARAM;
    }
    if (!valid_type(dataType)) {
        mock_note("%s: dataType %d is not a cudnnDataType_t", fn, (int)dataType);
        return CUDNN_STATUS_BAD_PARAM;
    }
    if (n <= 0 || c <= 0 || h <= 0 || w <= 0) {
        mock_note("%s: dimensions [%d, %d, %d, %d] must all be positive", fn, n, c, h, w);
        return CUDNN_STATUS_BAD_PARAM;
    }
    if ((double)n * c * h * w > (double)INT_MAX) {
        mock_note("%s: [%d, %d, %d, %d] exceeds 2 Giga-elements", fn, n, c, h, w);
        return CUDNN_STATUS_NOT_SUPPORTED;
    }
    tensorDesc->format = format;
    tensorDesc->type = dataType;
    tensorDesc->n = n, tensorDesc->c = c, tensorDesc->h = h, tensorDesc->w = w;
    tensorDesc->set = 1;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnDestroyTensorDescriptor(cudnnTensorDescriptor_t tensorDesc) {
    if (!tensorDesc) return CUDNN_STATUS_SUCCESS; /* NULL: no operation */
    if (tensorDesc->magic != MAGIC_TENSOR) {
        mock_note("cudnnDestroyTensorDescriptor: %p is not a live tensor descriptor",
                  (void *)tensorDesc);
        return CUDNN_STATUS_BAD_PARAM;
    }
    tensorDesc->magic = MAGIC_DEAD;
    free(tensorDesc);
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnCreateFilterDescriptor(cudnnFilterDescriptor_t *filterDesc) {
    if (!filterDesc) {
        mock_note("cudnnCreateFilterDescriptor: filterDesc is NULL");
        return CUDNN_STATUS_BAD_PARAM;
    }
    struct cudnnFilterStruct *d = calloc(1, sizeof *d);
    if (!d) return CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED;
    d->magic = MAGIC_FILTER;
    *filterDesc = d;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnSetFilter4dDescriptor(cudnnFilterDescriptor_t filterDesc,
                                         cudnnDataType_t dataType, cudnnTensorFormat_t format,
                                         int k, int c, int h, int w) {
    const char *fn = "cudnnSetFilter4dDescriptor";
    if (!filterDesc || filterDesc->magic != MAGIC_FILTER) {
        mock_note("%s: filterDesc %p is not a live filter descriptor", fn, (void *)filterDesc);
        return CUDNN_STATUS_BAD_PARAM;
    }
    if (!valid_type(dataType)) {
        mock_note("%s: dataType %d is not a cudnnDataType_t (argument order: dataType, then "
                  "format)", fn, (int)dataType);
        return CUDNN_STATUS_BAD_PARAM;
    }
    if (!valid_format(format)) {
        mock_note("%s: format %d is not a cudnnTensorFormat_t", fn, (int)format);
        return CUDNN_STATUS_BAD_PARAM;
    }
    if (k <= 0 || c <= 0 || h <= 0 || w <= 0) {
        mock_note("%s: dimensions [%d, %d, %d, %d] must all be positive", fn, k, c, h, w);
        return CUDNN_STATUS_BAD_PARAM;
    }
    if ((double)k * c * h * w > (double)INT_MAX) {
        mock_note("%s: [%d, %d, %d, %d] exceeds 2 Giga-elements", fn, k, c, h, w);
        return CUDNN_STATUS_NOT_SUPPORTED;
    }
    filterDesc->type = dataType;
    filterDesc->format = format;
    filterDesc->k = k, filterDesc->c = c, filterDesc->h = h, filterDesc->w = w;
    filterDesc->set = 1;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnDestroyFilterDescriptor(cudnnFilterDescriptor_t filterDesc) {
    if (!filterDesc) return CUDNN_STATUS_SUCCESS;
    if (filterDesc->magic != MAGIC_FILTER) {
        mock_note("cudnnDestroyFilterDescriptor: %p is not a live filter descriptor",
                  (void *)filterDesc);
        return CUDNN_STATUS_BAD_PARAM;
    }
    filterDesc->magic = MAGIC_DEAD;
    free(filterDesc);
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnCreateConvolutionDescriptor(cudnnConvolutionDescriptor_t *convDesc) {
    if (!convDesc) {
        mock_note("cudnnCreateConvolutionDescriptor: convDesc is NULL");
        return CUDNN_STATUS_BAD_PARAM;
    }
    struct cudnnConvolutionStruct *d = calloc(1, sizeof *d);
    if (!d) return CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED;
    d->magic = MAGIC_CONV;
    d->math = CUDNN_DEFAULT_MATH;
    *convDesc = d;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnSetConvolution2dDescriptor(cudnnConvolutionDescriptor_t convDesc, int pad_h,
                                              int pad_w, int u, int v, int dilation_h,
                                              int dilation_w, cudnnConvolutionMode_t mode,
                                              cudnnDataType_t computeType) {
    const char *fn = "cudnnSetConvolution2dDescriptor";
    if (!convDesc || convDesc->magic != MAGIC_CONV) {
        mock_note("%s: convDesc %p is not a live convolution descriptor", fn, (void *)convDesc);
        return CUDNN_STATUS_BAD_PARAM;
    }
    if (pad_h < 0 || pad_w < 0) {
        mock_note("%s: padding (%d, %d) is negative", fn, pad_h, pad_w);
        return CUDNN_STATUS_BAD_PARAM;
    }
    if (u <= 0 || v <= 0) {
        mock_note("%s: strides (%d, %d) must be positive", fn, u, v);
        return CUDNN_STATUS_BAD_PARAM;
    }
    if (dilation_h <= 0 || dilation_w <= 0) {
        mock_note("%s: dilations (%d, %d) must be positive", fn, dilation_h, dilation_w);
        return CUDNN_STATUS_BAD_PARAM;
    }
    if (mode != CUDNN_CONVOLUTION && mode != CUDNN_CROSS_CORRELATION) {
        mock_note("%s: mode %d is not a cudnnConvolutionMode_t", fn, (int)mode);
        return CUDNN_STATUS_BAD_PARAM;
    }
    if (!valid_type(computeType)) {
        mock_note("%s: computeType %d is not a cudnnDataType_t", fn, (int)computeType);
        return CUDNN_STATUS_BAD_PARAM;
    }
    convDesc->pad_h = pad_h, convDesc->pad_w = pad_w;
    convDesc->u = u, convDesc->v = v;
    convDesc->dil_h = dilation_h, convDesc->dil_w = dilation_w;
    convDesc->mode = mode;
    convDesc->compute = computeType;
    convDesc->set = 1;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnSetConvolutionMathType(cudnnConvolutionDescriptor_t convDesc,
                                          cudnnMathType_t mathType) {
    const char *fn = "cudnnSetConvolutionMathType";
    if (!convDesc || convDesc->magic != MAGIC_CONV) {
        mock_note("%s: convDesc %p is not a live convolution descriptor", fn, (void *)convDesc);
        return CUDNN_STATUS_BAD_PARAM;
    }
    if (mathType != CUDNN_DEFAULT_MATH && mathType != CUDNN_TENSOR_OP_MATH &&
        mathType != CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION && mathType != CUDNN_FMA_MATH) {
        mock_note("%s: mathType %d is not a cudnnMathType_t", fn, (int)mathType);
        return CUDNN_STATUS_BAD_PARAM;
    }
    convDesc->math = mathType;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnDestroyConvolutionDescriptor(cudnnConvolutionDescriptor_t convDesc) {
    if (!convDesc) return CUDNN_STATUS_SUCCESS;
    if (convDesc->magic != MAGIC_CONV) {
        mock_note("cudnnDestroyConvolutionDescriptor: %p is not a live convolution descriptor",
                  (void *)convDesc);
        return CUDNN_STATUS_BAD_PARAM;
    }
    convDesc->magic = MAGIC_DEAD;
    free(convDesc);
    return CUDNN_STATUS_SUCCESS;
}

/* ------------------------------------------------------------ geometry */

/* One convolution, by value: x [n, c, h, w], w [k, c, r, s], y [n, k, p, q]. */
typedef struct {
    int n, c, h, w;
    int k, r, s;
    int p, q;
    int pad_h, pad_w, u, v, dil_h, dil_w;
    int flip; /* CUDNN_CONVOLUTION */
} geom;

static size_t x_elems(const geom *g) { return (size_t)g->n * g->c * g->h * g->w; }
static size_t w_elems(const geom *g) { return (size_t)g->k * g->c * g->r * g->s; }
static size_t y_elems(const geom *g) { return (size_t)g->n * g->k * g->p * g->q; }

static int desc_tensor_ok(const char *fn, const char *what, cudnnTensorDescriptor_t d) {
    if (!d) {
        mock_note("%s: %s is NULL", fn, what);
        return 0;
    }
    if (d->magic != MAGIC_TENSOR) {
        mock_note("%s: %s %p is not a live tensor descriptor", fn, what, (void *)d);
        return 0;
    }
    if (!d->set) {
        mock_note("%s: %s was never set (cudnnSetTensor4dDescriptor)", fn, what);
        return 0;
    }
    return 1;
}

static int desc_filter_ok(const char *fn, const char *what, cudnnFilterDescriptor_t d) {
    if (!d) {
        mock_note("%s: %s is NULL", fn, what);
        return 0;
    }
    if (d->magic != MAGIC_FILTER) {
        mock_note("%s: %s %p is not a live filter descriptor", fn, what, (void *)d);
        return 0;
    }
    if (!d->set) {
        mock_note("%s: %s was never set (cudnnSetFilter4dDescriptor)", fn, what);
        return 0;
    }
    return 1;
}

static int desc_conv_ok(const char *fn, cudnnConvolutionDescriptor_t d) {
    if (!d) {
        mock_note("%s: convDesc is NULL", fn);
        return 0;
    }
    if (d->magic != MAGIC_CONV) {
        mock_note("%s: convDesc %p is not a live convolution descriptor", fn, (void *)d);
        return 0;
    }
    if (!d->set) {
        mock_note("%s: convDesc was never set (cudnnSetConvolution2dDescriptor)", fn);
        return 0;
    }
    return 1;
}

/* The output size for x, w, conv (descriptors already checked); the
 * feature-map and filter-size checks of GetConvolution2dForwardOutputDim. */
static cudnnStatus_t out_dims(const char *fn, cudnnTensorDescriptor_t x, const char *xname,
                              cudnnFilterDescriptor_t w, const char *wname,
                              cudnnConvolutionDescriptor_t cd, geom *g) {
    if (x->c != w->c) {
        mock_note("%s: %s has %d feature maps but %s [%d, %d, %d, %d] expects %d", fn, xname,
                  x->c, wname, w->k, w->c, w->h, w->w, w->c);
        return CUDNN_STATUS_BAD_PARAM;
    }
    const long eh = (long)(w->h - 1) * cd->dil_h + 1, ew = (long)(w->w - 1) * cd->dil_w + 1;
    const long ph = (long)x->h + 2L * cd->pad_h, pw = (long)x->w + 2L * cd->pad_w;
    if (eh > ph || ew > pw) {
        mock_note("%s: the (dilated) filter %ldx%ld is larger than the padded input %ldx%ld", fn,
                  eh, ew, ph, pw);
        return CUDNN_STATUS_BAD_PARAM;
    }
    g->n = x->n, g->c = x->c, g->h = x->h, g->w = x->w;
    g->k = w->k, g->r = w->h, g->s = w->w;
    g->p = (int)(1 + (ph - eh) / cd->u);
    g->q = (int)(1 + (pw - ew) / cd->v);
    g->pad_h = cd->pad_h, g->pad_w = cd->pad_w;
    g->u = cd->u, g->v = cd->v;
    g->dil_h = cd->dil_h, g->dil_w = cd->dil_w;
    g->flip = cd->mode == CUDNN_CONVOLUTION;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnGetConvolution2dForwardOutputDim(const cudnnConvolutionDescriptor_t convDesc,
                                                    const cudnnTensorDescriptor_t inputTensorDesc,
                                                    const cudnnFilterDescriptor_t filterDesc,
                                                    int *n, int *c, int *h, int *w) {
    const char *fn = "cudnnGetConvolution2dForwardOutputDim";
    if (!desc_conv_ok(fn, convDesc) || !desc_tensor_ok(fn, "inputTensorDesc", inputTensorDesc) ||
        !desc_filter_ok(fn, "filterDesc", filterDesc))
        return CUDNN_STATUS_BAD_PARAM;
    if (!n || !c || !h || !w) {
        mock_note("%s: an output pointer is NULL", fn);
        return CUDNN_STATUS_BAD_PARAM;
    }
    geom g;
    cudnnStatus_t st = out_dims(fn, inputTensorDesc, "inputTensorDesc", filterDesc, "filterDesc",
                                convDesc, &g);
    if (st != CUDNN_STATUS_SUCCESS) return st;
    *n = g.n, *c = g.k, *h = g.p, *w = g.q;
    return CUDNN_STATUS_SUCCESS;
}

enum { DIR_FWD = 0, DIR_BWD_DATA = 1, DIR_BWD_FILTER = 2 };

/* Everything a convolution call checks about its descriptors, in every
 * direction; fills g. spatial_status: what a y of the wrong spatial size
 * returns. */
static cudnnStatus_t check_conv(const char *fn, int dir, cudnnTensorDescriptor_t x,
                                cudnnFilterDescriptor_t w, cudnnConvolutionDescriptor_t cd,
                                cudnnTensorDescriptor_t y, geom *g) {
    const char *xn = dir == DIR_BWD_DATA ? "dxDesc" : "xDesc";
    const char *yn = dir == DIR_FWD ? "yDesc" : "dyDesc";
    const char *wn = dir == DIR_BWD_FILTER ? "dwDesc" : "wDesc";
    if (!desc_tensor_ok(fn, xn, x) || !desc_filter_ok(fn, wn, w) || !desc_conv_ok(fn, cd) ||
        !desc_tensor_ok(fn, yn, y))
        return CUDNN_STATUS_BAD_PARAM;
    if (x->type != y->type || x->type != w->type) {
        mock_note("%s: data types differ: %s %d, %s %d, %s %d", fn, xn, (int)x->type, wn,
                  (int)w->type, yn, (int)y->type);
        return CUDNN_STATUS_BAD_PARAM;
    }
    if (x->type != CUDNN_DATA_FLOAT) {
        mock_note("%s: data type %d: the mock implements CUDNN_DATA_FLOAT only", fn, (int)x->type);
        return CUDNN_STATUS_NOT_SUPPORTED;
    }
    if (cd->compute != CUDNN_DATA_FLOAT) {
        mock_note("%s: compute type %d with float data: cuDNN's FLOAT_CONFIG needs "
                  "CUDNN_DATA_FLOAT", fn, (int)cd->compute);
        return CUDNN_STATUS_NOT_SUPPORTED;
    }
    if (x->format != CUDNN_TENSOR_NCHW || y->format != CUDNN_TENSOR_NCHW) {
        mock_note("%s: tensor formats %d / %d: the mock implements CUDNN_TENSOR_NCHW only", fn,
                  (int)x->format, (int)y->format);
        return CUDNN_STATUS_NOT_SUPPORTED;
    }
    if (w->format != CUDNN_TENSOR_NCHW) {
        mock_note("%s: filter format %d: the mock implements CUDNN_TENSOR_NCHW (KCRS) only", fn,
                  (int)w->format);
        return CUDNN_STATUS_NOT_SUPPORTED;
    }
    cudnnStatus_t st = out_dims(fn, x, xn, w, wn, cd, g);
    if (st != CUDNN_STATUS_SUCCESS) return st;
    if (y->n != g->n || y->c != g->k) {
        mock_note("%s: %s is [%d, %d, %d, %d] but %s [%d, %d, %d, %d] with filter [%d, %d, %d, "
                  "%d] gives [%d, %d, %d, %d] (batch or feature maps differ)",
                  fn, yn, y->n, y->c, y->h, y->w, xn, g->n, g->c, g->h, g->w, g->k, g->c, g->r,
                  g->s, g->n, g->k, g->p, g->q);
        return CUDNN_STATUS_BAD_PARAM;
    }
    if (y->h != g->p || y->w != g->q) {
        mock_note("%s: %s is [%d, %d, %d, %d] but cudnnGetConvolution2dForwardOutputDim gives "
                  "[%d, %d, %d, %d] for %s [%d, %d, %d, %d], filter [%d, %d, %d, %d], pad "
                  "(%d, %d), stride (%d, %d), dilation (%d, %d)",
                  fn, yn, y->n, y->c, y->h, y->w, g->n, g->k, g->p, g->q, xn, g->n, g->c, g->h,
                  g->w, g->k, g->c, g->r, g->s, g->pad_h, g->pad_w, g->u, g->v, g->dil_h,
                  g->dil_w);
        return dir == DIR_FWD ? CUDNN_STATUS_NOT_SUPPORTED : CUDNN_STATUS_BAD_PARAM;
    }
    return CUDNN_STATUS_SUCCESS;
}

/* The workspace the mock's algorithm of each direction needs (bytes):
 * nonzero, geometry dependent and not a multiple of the usual alignments, so
 * that the caller's workspace bookkeeping is exercised. */
static size_t ws_need(int dir, const geom *g) {
    switch (dir) {
    case DIR_FWD: return (size_t)g->c * g->r * g->s * g->q * sizeof(float) + 4;
    case DIR_BWD_DATA: return (size_t)g->k * g->r * g->s * g->w * sizeof(float) + 8;
    default: return (size_t)g->k * g->c * g->r * g->s * sizeof(float) + 12;
    }
}

/* $VAE_MOCK_CUDNN_WS=MIB: every search lists first, ahead of the rest, a
 * deterministic algorithm that claims to be the fastest and needs MIB MiB
 * of workspace (forward IMPLICIT_PRECOMP_GEMM, backward data and backward
 * filter FFT_TILING; each needs workspace in cuDNN too). Find*Ex offered
 * less reports it ALLOC_FAILED; Get*_v7, which ignores the workspace,
 * SUCCESS. Run, it computes what the small algorithm does and clobbers its
 * whole workspace (big_scribble), so a workspace that the backend sized or
 * placed wrongly (past the arena, over a buffer, over the other stream's
 * half) shows: as an out-of-bounds write, a corrupt buffer, or the call's
 * refusal for too small a workspace. Unset or 0: no such algorithm. */
static size_t big_bytes(void) {
    /* read at every call (test_mock_cudnn sets it midway) */
    const char *e = getenv("VAE_MOCK_CUDNN_WS");
    if (!e || !*e) return 0;
    char *end = NULL;
    const long long mib = strtoll(e, &end, 10);
    if (*end || mib < 0 || mib > (1LL << 20)) {
        mock_note("VAE_MOCK_CUDNN_WS=%s: expected a number of MiB", e);
        abort();
    }
    return (size_t)mib << 20;
}

static int big_algo(int dir) {
    switch (dir) {
    case DIR_FWD: return CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM;
    case DIR_BWD_DATA: return CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT_TILING;
    default: return CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT_TILING;
    }
}

/* The workspace algorithm `algo` of direction `dir` needs. */
static size_t algo_need(int dir, int algo, const geom *g) {
    return big_bytes() && algo == big_algo(dir) ? big_bytes() : ws_need(dir, g);
}

/* Clobbers [ws, ws + n) as an algorithm that uses all of it would: the
 * first 64 KiB and the last 64 bytes whole, then 64 bytes of every 4 KiB
 * (writing all of a workspace of hundreds of MiB at every call would make
 * the tests crawl; a buffer it overlaps is hit either way). */
static void big_scribble(unsigned char *ws, size_t n) {
    const size_t head = n < ((size_t)64 << 10) ? n : ((size_t)64 << 10);
    memset(ws, 0xFF, head);
    for (size_t off = head; off < n; off += 4096)
        memset(ws + off, 0xFF, n - off < 64 ? n - off : 64);
    if (n > 64) memset(ws + n - 64, 0xFF, 64);
}

/* [a, a + an) and [b, b + bn) overlap */
static int overlaps(const void *a, size_t an, const void *b, size_t bn) {
    const uintptr_t pa = (uintptr_t)a, pb = (uintptr_t)b;
    return an && bn && pa < pb + bn && pb < pa + an;
}

/* ---------------------------------------------------------- the work */

enum { JOB_RUN = 0, JOB_FIND_FILL = 1 };

typedef struct {
    int dir, kind;
    geom g;
    double alpha, beta;
    const float *in0, *in1; /* FWD: x, w; BWD_DATA: dy, w; BWD_FILTER: x, dy */
    float *out;             /* FWD: y; BWD_DATA: dx; BWD_FILTER: dw */
    unsigned char *ws;      /* scratch, or NULL when need is 0 */
    size_t ws_bytes;        /* the bytes of it used (clobbered by the run) */
    int tf32;               /* the inputs rounded to TF32 first (math type) */
} conv_job;

/* The range [lo, hi) of output columns q whose input column q v + off lies
 * in [0, W). */
static void col_range(int off, int v, int W, int Q, int *lo, int *hi) {
    *lo = off >= 0 ? 0 : (-off + v - 1) / v;
    const int last = W - 1 - off; /* q v <= last */
    int h = last >= 0 ? last / v + 1 : 0;
    if (h > Q) h = Q;
    *hi = h;
    if (*lo > *hi) *lo = *hi;
}

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "mock device: cuDNN: out of host memory (%zu bytes)\n", n);
        abort();
    }
    return p;
}

static float blend(double acc, double alpha, double beta, float old) {
    double r = alpha * acc;
    if (beta != 0.0) r += beta * (double)old;
    return (float)r;
}

/* the filter tap that position (r, s) of the window uses */
static size_t tap(const geom *g, int k, int c, int r, int s) {
    const int rr = g->flip ? g->r - 1 - r : r, ss = g->flip ? g->s - 1 - s : s;
    return (((size_t)k * g->c + c) * g->r + rr) * g->s + ss;
}

static void run_fwd(const conv_job *j) {
    const geom *g = &j->g;
    const float *x = j->in0, *w = j->in1;
    double *acc = xmalloc((size_t)g->q * sizeof *acc);
    for (int n = 0; n < g->n; n++)
        for (int k = 0; k < g->k; k++)
            for (int p = 0; p < g->p; p++) {
                for (int q = 0; q < g->q; q++) acc[q] = 0.0;
                for (int c = 0; c < g->c; c++)
                    for (int r = 0; r < g->r; r++) {
                        const int ih = p * g->u - g->pad_h + r * g->dil_h;
                        if (ih < 0 || ih >= g->h) continue;
                        const float *xr = x + (((size_t)n * g->c + c) * g->h + ih) * g->w;
                        for (int s = 0; s < g->s; s++) {
                            const double wv = w[tap(g, k, c, r, s)];
                            const int off = s * g->dil_w - g->pad_w;
                            int lo, hi;
                            col_range(off, g->v, g->w, g->q, &lo, &hi);
                            for (int q = lo; q < hi; q++) acc[q] += wv * xr[q * g->v + off];
                        }
                    }
                float *yr = j->out + (((size_t)n * g->k + k) * g->p + p) * g->q;
                for (int q = 0; q < g->q; q++) yr[q] = blend(acc[q], j->alpha, j->beta, yr[q]);
            }
    free(acc);
}

static void run_bwd_data(const conv_job *j) {
    const geom *g = &j->g;
    const float *dy = j->in0, *w = j->in1;
    double *acc = xmalloc((size_t)g->w * sizeof *acc);
    for (int n = 0; n < g->n; n++)
        for (int c = 0; c < g->c; c++)
            for (int ih = 0; ih < g->h; ih++) {
                for (int iw = 0; iw < g->w; iw++) acc[iw] = 0.0;
                for (int k = 0; k < g->k; k++)
                    for (int r = 0; r < g->r; r++) {
                        const int t = ih + g->pad_h - r * g->dil_h; /* = p u */
                        if (t < 0 || t % g->u) continue;
                        const int p = t / g->u;
                        if (p >= g->p) continue;
                        const float *dr = dy + (((size_t)n * g->k + k) * g->p + p) * g->q;
                        for (int s = 0; s < g->s; s++) {
                            const double wv = w[tap(g, k, c, r, s)];
                            const int off = s * g->dil_w - g->pad_w;
                            int lo, hi;
                            col_range(off, g->v, g->w, g->q, &lo, &hi);
                            for (int q = lo; q < hi; q++) acc[q * g->v + off] += wv * dr[q];
                        }
                    }
                float *xr = j->out + (((size_t)n * g->c + c) * g->h + ih) * g->w;
                for (int iw = 0; iw < g->w; iw++)
                    xr[iw] = blend(acc[iw], j->alpha, j->beta, xr[iw]);
            }
    free(acc);
}

static void run_bwd_filter(const conv_job *j) {
    const geom *g = &j->g;
    const float *x = j->in0, *dy = j->in1;
    for (int k = 0; k < g->k; k++)
        for (int c = 0; c < g->c; c++)
            for (int r = 0; r < g->r; r++)
                for (int s = 0; s < g->s; s++) {
                    double acc = 0.0;
                    const int off = s * g->dil_w - g->pad_w;
                    int lo, hi;
                    col_range(off, g->v, g->w, g->q, &lo, &hi);
                    for (int n = 0; n < g->n; n++)
                        for (int p = 0; p < g->p; p++) {
                            const int ih = p * g->u - g->pad_h + r * g->dil_h;
                            if (ih < 0 || ih >= g->h) continue;
                            const float *xr = x + (((size_t)n * g->c + c) * g->h + ih) * g->w;
                            const float *dr = dy + (((size_t)n * g->k + k) * g->p + p) * g->q;
                            for (int q = lo; q < hi; q++)
                                acc += (double)xr[q * g->v + off] * dr[q];
                        }
                    float *o = j->out + tap(g, k, c, r, s);
                    *o = blend(acc, j->alpha, j->beta, *o);
                }
}

/* a copy of p[0, n) rounded to TF32 */
static float *tf32_copy(const float *p, size_t n) {
    float *q = malloc((n ? n : 1) * sizeof *q);
    if (!q) {
        mock_note("mock cuDNN: out of host memory");
        abort();
    }
    for (size_t i = 0; i < n; i++) q[i] = mock_tf32_round(p[i]);
    return q;
}

static void conv_worker(void *args) {
    const conv_job *j = args;
    if (j->ws && j->ws_bytes) big_scribble(j->ws, j->ws_bytes); /* scratch is clobbered */
    if (j->kind == JOB_FIND_FILL) {
        const size_t cnt = j->dir == DIR_FWD        ? y_elems(&j->g)
                           : j->dir == DIR_BWD_DATA ? x_elems(&j->g)
                                                    : w_elems(&j->g);
        const float nan = nanf("");
        for (size_t i = 0; i < cnt; i++) j->out[i] = nan;
        return;
    }
    conv_job r = *j;
    float *c0 = NULL, *c1 = NULL;
    if (j->tf32) { /* in0, in1: FWD x, w; BWD_DATA dy, w; BWD_FILTER x, dy */
        const geom *g = &j->g;
        r.in0 = c0 = tf32_copy(j->in0, j->dir == DIR_BWD_DATA ? y_elems(g) : x_elems(g));
        r.in1 = c1 = tf32_copy(j->in1, j->dir == DIR_BWD_FILTER ? y_elems(g) : w_elems(g));
    }
    switch (j->dir) {
    case DIR_FWD: run_fwd(&r); break;
    case DIR_BWD_DATA: run_bwd_data(&r); break;
    default: run_bwd_filter(&r); break;
    }
    free(c0);
    free(c1);
}

/* The data-pointer, overlap and workspace checks common to the convolutions
 * and the searches, then the job (alpha/beta filled by the caller). check_ws:
 * the workspace must hold ws_need (convolutions; the searches handle a short
 * one themselves). */
static cudnnStatus_t prepare_job(const char *fn, int dir, const geom *g, const void *in0,
                                 const char *n0, const void *in1, const char *n1, void *out,
                                 const char *nout, void *ws, size_t ws_size, size_t need,
                                 int check_ws, conv_job *j) {
    if (!in0 || !in1 || !out) {
        mock_note("%s: a data pointer is NULL (%s %p, %s %p, %s %p)", fn, n0, in0, n1, in1, nout,
                  out);
        return CUDNN_STATUS_BAD_PARAM;
    }
    size_t b0, b1, bo;
    switch (dir) {
    case DIR_FWD: b0 = x_elems(g), b1 = w_elems(g), bo = y_elems(g); break;
    case DIR_BWD_DATA: b0 = y_elems(g), b1 = w_elems(g), bo = x_elems(g); break;
    default: b0 = x_elems(g), b1 = y_elems(g), bo = w_elems(g); break;
    }
    b0 *= sizeof(float), b1 *= sizeof(float), bo *= sizeof(float);
    if (overlaps(out, bo, in0, b0) || overlaps(out, bo, in1, b1)) {
        mock_note("%s: the output %s [%p, +%zu) overlaps an input (%s [%p, +%zu), %s [%p, +%zu)); "
                  "cuDNN convolutions are not in-place",
                  fn, nout, out, bo, n0, in0, b0, n1, in1, b1);
        return CUDNN_STATUS_BAD_PARAM;
    }
    if (check_ws) {
        if (ws_size < need) {
            mock_note("%s: workSpaceSizeInBytes %zu is less than the %zu bytes the algorithm "
                      "needs (its perfResults[].memory)", fn, ws_size, need);
            return CUDNN_STATUS_BAD_PARAM;
        }
        if (!ws) {
            mock_note("%s: workSpace is NULL but the algorithm needs %zu bytes", fn, need);
            return CUDNN_STATUS_BAD_PARAM;
        }
    }
    if (ws && ws_size >= need &&
        (overlaps(ws, need, in0, b0) || overlaps(ws, need, in1, b1) ||
         overlaps(ws, need, out, bo))) {
        mock_note("%s: the workspace [%p, +%zu) overlaps a tensor (%s %p, %s %p, %s %p)", fn, ws,
                  need, n0, in0, n1, in1, nout, out);
        return CUDNN_STATUS_BAD_PARAM;
    }
    memset(j, 0, sizeof *j);
    j->dir = dir;
    j->kind = JOB_RUN;
    j->g = *g;
    j->in0 = in0, j->in1 = in1, j->out = out;
    j->ws = ws_size >= need ? ws : NULL;
    j->ws_bytes = j->ws ? need : 0;
    return CUDNN_STATUS_SUCCESS;
}

/* alpha and beta, and the math type's TF32 rounding, into the job */
static cudnnStatus_t scalars(const char *fn, const void *alpha, const void *beta,
                             cudnnConvolutionDescriptor_t cd, conv_job *j) {
    j->tf32 = cd->math != CUDNN_FMA_MATH;
    if (!alpha || !beta) {
        mock_note("%s: alpha (%p) or beta (%p) is NULL", fn, alpha, beta);
        return CUDNN_STATUS_BAD_PARAM;
    }
    /* host pointers to float for float data, read now */
    j->alpha = *(const float *)alpha;
    j->beta = *(const float *)beta;
    return CUDNN_STATUS_SUCCESS;
}

/* --------------------------------------------------------- searches */

static cudnnStatus_t search_common(const char *fn, cudnnHandle_t handle, int requested,
                                   const int *returned, const void *perf, int running) {
    if (bad_handle(fn, handle)) return CUDNN_STATUS_BAD_PARAM;
    if (!returned || !perf) {
        mock_note("%s: returnedAlgoCount (%p) or perfResults (%p) is NULL", fn,
                  (const void *)returned, perf);
        return CUDNN_STATUS_BAD_PARAM;
    }
    if (requested < 1) {
        mock_note("%s: requestedAlgoCount %d < 1", fn, requested);
        return CUDNN_STATUS_BAD_PARAM;
    }
    if (running && mock_capturing(handle->stream)) {
        mock_note("%s: the algorithm search times the candidates and synchronises, which a "
                  "stream being captured does not allow", fn);
        return CUDNN_STATUS_EXECUTION_FAILED_CUDART;
    }
    return CUDNN_STATUS_SUCCESS;
}

/* One perf result (the three perf structs have the same members). */
#define FILL_PERF(pr, algo_, status_, time_, memory_, math_)   \
    do {                                                       \
        memset(&(pr), 0, sizeof(pr));                          \
        (pr).algo = (algo_);                                   \
        (pr).status = (status_);                               \
        (pr).time = (time_);                                   \
        (pr).memory = (memory_);                               \
        (pr).determinism = CUDNN_DETERMINISTIC;                \
        (pr).mathType = (math_);                               \
    } while (0)

/* $VAE_MOCK_CUDNN_TRAP=1: each search lists first a result the backend must
 * pass over — faster than the real one, but for the two backward directions
 * ALGO_0 marked CUDNN_NON_DETERMINISTIC (the project promises bit-identical
 * reruns), for the forward FFT with a workspace of 2^40 bytes (Find*Ex with
 * the workspace offered reports it ALLOC_FAILED, as cuDNN does; Get*_v7,
 * which ignores workspace, reports it SUCCESS). Running a convolution with
 * that algorithm aborts with a note: a caller's determinism or workspace
 * filter missing shows. Asked for one result only, a search gives the real
 * one, as before. */
static int trap_on(void) {
    static int on = -1;
    if (on < 0) {
        const char *e = getenv("VAE_MOCK_CUDNN_TRAP");
        on = e && *e && strcmp(e, "0") != 0;
    }
    return on;
}

#define TRAP_FWD_ALGO CUDNN_CONVOLUTION_FWD_ALGO_FFT
#define TRAP_FWD_BYTES ((size_t)1 << 40)

/* perf[0] (filled, *returned = 1) moves to perf[1] below the trap */
#define TRAP_FIRST(perf, requested, returned, algo_, status_, memory_, det_, math_) \
    do {                                                                             \
        if (trap_on() && (requested) >= 2) {                                         \
            (perf)[1] = (perf)[0];                                                   \
            FILL_PERF((perf)[0], algo_, status_, 0.5f, memory_, math_);              \
            (perf)[0].determinism = (det_);                                          \
            *(returned) = 2;                                                         \
        }                                                                            \
    } while (0)

/* $VAE_MOCK_CUDNN_WS: the big-workspace algorithm ahead of the results
 * listed (after the trap, if any), as many as requested kept */
#define BIG_FIRST(perf, requested, returned, dir, status_, math_)                           \
    do {                                                                                    \
        if (big_bytes() && (requested) >= 2) {                                              \
            const int n_ = *(returned) < (requested) - 1 ? *(returned) : (requested) - 1;    \
            memmove(&(perf)[1], &(perf)[0], (size_t)n_ * sizeof(perf)[0]);                 \
            FILL_PERF((perf)[0], big_algo(dir), status_, 0.25f, big_bytes(), math_);       \
            *(returned) = n_ + 1;                                                           \
        }                                                                                   \
    } while (0)

static void trap_ran(const char *fn, int algo) {
    mock_note("%s: algorithm %d ran, which the search listed first as a trap "
              "(VAE_MOCK_CUDNN_TRAP: non-deterministic, or a workspace beyond what was offered)",
              fn, algo);
    abort();
}

/* Find*Ex: the result for a workspace of ws_size bytes at ws, and the
 * output filled with NaN in stream order when it ran, the whole workspace
 * offered clobbered (the candidates it runs may use all of it). */
static cudnnStatus_t find_run(const char *fn, cudnnHandle_t handle, int dir, const geom *g,
                              const void *in0, const char *n0, const void *in1, const char *n1,
                              void *out, const char *nout, void *ws, size_t ws_size,
                              cudnnStatus_t *algo_status) {
    conv_job j;
    cudnnStatus_t st =
        prepare_job(fn, dir, g, in0, n0, in1, n1, out, nout, ws, ws_size, ws_size, 0, &j);
    if (st != CUDNN_STATUS_SUCCESS) return st;
    if (ws_size < ws_need(dir, g) || !ws) {
        /* "CUDNN_STATUS_ALLOC_FAILED if ... the provided workspace is insufficient" */
        *algo_status = CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED;
        return CUDNN_STATUS_SUCCESS;
    }
    j.kind = JOB_FIND_FILL;
    if (mock_enqueue(handle->stream, fn, conv_worker, &j, sizeof j))
        return CUDNN_STATUS_EXECUTION_FAILED;
    *algo_status = CUDNN_STATUS_SUCCESS;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnFindConvolutionForwardAlgorithmEx(
    cudnnHandle_t handle, const cudnnTensorDescriptor_t xDesc, const void *x,
    const cudnnFilterDescriptor_t wDesc, const void *w, const cudnnConvolutionDescriptor_t convDesc,
    const cudnnTensorDescriptor_t yDesc, void *y, const int requestedAlgoCount,
    int *returnedAlgoCount, cudnnConvolutionFwdAlgoPerf_t *perfResults, void *workSpace,
    size_t workSpaceSizeInBytes) {
    const char *fn = "cudnnFindConvolutionForwardAlgorithmEx";
    geom g;
    cudnnStatus_t st, as;
    if ((st = search_common(fn, handle, requestedAlgoCount, returnedAlgoCount, perfResults, 1)) ||
        (st = check_conv(fn, DIR_FWD, xDesc, wDesc, convDesc, yDesc, &g)) ||
        (st = find_run(fn, handle, DIR_FWD, &g, x, "x", w, "w", y, "y", workSpace,
                       workSpaceSizeInBytes, &as)))
        return st;
    FILL_PERF(perfResults[0], CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, as,
              as == CUDNN_STATUS_SUCCESS ? 1.0f : -1.0f, ws_need(DIR_FWD, &g), convDesc->math);
    *returnedAlgoCount = 1;
    TRAP_FIRST(perfResults, requestedAlgoCount, returnedAlgoCount, TRAP_FWD_ALGO,
               workSpaceSizeInBytes >= TRAP_FWD_BYTES ? CUDNN_STATUS_SUCCESS
                                                      : CUDNN_STATUS_ALLOC_FAILED,
               TRAP_FWD_BYTES, CUDNN_DETERMINISTIC, convDesc->math);
    BIG_FIRST(perfResults, requestedAlgoCount, returnedAlgoCount, DIR_FWD,
              workSpace && workSpaceSizeInBytes >= big_bytes() ? CUDNN_STATUS_SUCCESS
                                                           : CUDNN_STATUS_ALLOC_FAILED,
              convDesc->math);
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnGetConvolutionForwardAlgorithm_v7(
    cudnnHandle_t handle, const cudnnTensorDescriptor_t srcDesc,
    const cudnnFilterDescriptor_t filterDesc, const cudnnConvolutionDescriptor_t convDesc,
    const cudnnTensorDescriptor_t destDesc, const int requestedAlgoCount, int *returnedAlgoCount,
    cudnnConvolutionFwdAlgoPerf_t *perfResults) {
    const char *fn = "cudnnGetConvolutionForwardAlgorithm_v7";
    geom g;
    cudnnStatus_t st;
    if ((st = search_common(fn, handle, requestedAlgoCount, returnedAlgoCount, perfResults, 0)) ||
        (st = check_conv(fn, DIR_FWD, srcDesc, filterDesc, convDesc, destDesc, &g)))
        return st;
    FILL_PERF(perfResults[0], CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, CUDNN_STATUS_SUCCESS, 1.0f,
              ws_need(DIR_FWD, &g), convDesc->math);
    *returnedAlgoCount = 1;
    TRAP_FIRST(perfResults, requestedAlgoCount, returnedAlgoCount, TRAP_FWD_ALGO,
               CUDNN_STATUS_SUCCESS, TRAP_FWD_BYTES, CUDNN_DETERMINISTIC, convDesc->math);
    BIG_FIRST(perfResults, requestedAlgoCount, returnedAlgoCount, DIR_FWD,
              CUDNN_STATUS_SUCCESS,
              convDesc->math);
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnFindConvolutionBackwardDataAlgorithmEx(
    cudnnHandle_t handle, const cudnnFilterDescriptor_t wDesc, const void *w,
    const cudnnTensorDescriptor_t dyDesc, const void *dy,
    const cudnnConvolutionDescriptor_t convDesc, const cudnnTensorDescriptor_t dxDesc, void *dx,
    const int requestedAlgoCount, int *returnedAlgoCount,
    cudnnConvolutionBwdDataAlgoPerf_t *perfResults, void *workSpace,
    size_t workSpaceSizeInBytes) {
    const char *fn = "cudnnFindConvolutionBackwardDataAlgorithmEx";
    geom g;
    cudnnStatus_t st, as;
    if ((st = search_common(fn, handle, requestedAlgoCount, returnedAlgoCount, perfResults, 1)) ||
        (st = check_conv(fn, DIR_BWD_DATA, dxDesc, wDesc, convDesc, dyDesc, &g)) ||
        (st = find_run(fn, handle, DIR_BWD_DATA, &g, dy, "dy", w, "w", dx, "dx", workSpace,
                       workSpaceSizeInBytes, &as)))
        return st;
    FILL_PERF(perfResults[0], CUDNN_CONVOLUTION_BWD_DATA_ALGO_1, as,
              as == CUDNN_STATUS_SUCCESS ? 1.0f : -1.0f, ws_need(DIR_BWD_DATA, &g),
              convDesc->math);
    *returnedAlgoCount = 1;
    TRAP_FIRST(perfResults, requestedAlgoCount, returnedAlgoCount, CUDNN_CONVOLUTION_BWD_DATA_ALGO_0,
               as, ws_need(DIR_BWD_DATA, &g), CUDNN_NON_DETERMINISTIC, convDesc->math);
    BIG_FIRST(perfResults, requestedAlgoCount, returnedAlgoCount, DIR_BWD_DATA,
              workSpace && workSpaceSizeInBytes >= big_bytes() ? CUDNN_STATUS_SUCCESS
                                                           : CUDNN_STATUS_ALLOC_FAILED,
              convDesc->math);
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnGetConvolutionBackwardDataAlgorithm_v7(
    cudnnHandle_t handle, const cudnnFilterDescriptor_t filterDesc,
    const cudnnTensorDescriptor_t diffDesc, const cudnnConvolutionDescriptor_t convDesc,
    const cudnnTensorDescriptor_t gradDesc, const int requestedAlgoCount, int *returnedAlgoCount,
    cudnnConvolutionBwdDataAlgoPerf_t *perfResults) {
    const char *fn = "cudnnGetConvolutionBackwardDataAlgorithm_v7";
    geom g;
    cudnnStatus_t st;
    if ((st = search_common(fn, handle, requestedAlgoCount, returnedAlgoCount, perfResults, 0)) ||
        (st = check_conv(fn, DIR_BWD_DATA, gradDesc, filterDesc, convDesc, diffDesc, &g)))
        return st;
    FILL_PERF(perfResults[0], CUDNN_CONVOLUTION_BWD_DATA_ALGO_1, CUDNN_STATUS_SUCCESS, 1.0f,
              ws_need(DIR_BWD_DATA, &g), convDesc->math);
    *returnedAlgoCount = 1;
    TRAP_FIRST(perfResults, requestedAlgoCount, returnedAlgoCount, CUDNN_CONVOLUTION_BWD_DATA_ALGO_0,
               CUDNN_STATUS_SUCCESS, ws_need(DIR_BWD_DATA, &g), CUDNN_NON_DETERMINISTIC,
               convDesc->math);
    BIG_FIRST(perfResults, requestedAlgoCount, returnedAlgoCount, DIR_BWD_DATA,
              CUDNN_STATUS_SUCCESS,
              convDesc->math);
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnFindConvolutionBackwardFilterAlgorithmEx(
    cudnnHandle_t handle, const cudnnTensorDescriptor_t xDesc, const void *x,
    const cudnnTensorDescriptor_t dyDesc, const void *y,
    const cudnnConvolutionDescriptor_t convDesc, const cudnnFilterDescriptor_t dwDesc, void *dw,
    const int requestedAlgoCount, int *returnedAlgoCount,
    cudnnConvolutionBwdFilterAlgoPerf_t *perfResults, void *workSpace,
    size_t workSpaceSizeInBytes) {
    const char *fn = "cudnnFindConvolutionBackwardFilterAlgorithmEx";
    geom g;
    cudnnStatus_t st, as;
    if ((st = search_common(fn, handle, requestedAlgoCount, returnedAlgoCount, perfResults, 1)) ||
        (st = check_conv(fn, DIR_BWD_FILTER, xDesc, dwDesc, convDesc, dyDesc, &g)) ||
        (st = find_run(fn, handle, DIR_BWD_FILTER, &g, x, "x", y, "dy", dw, "dw", workSpace,
                       workSpaceSizeInBytes, &as)))
        return st;
    FILL_PERF(perfResults[0], CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1, as,
              as == CUDNN_STATUS_SUCCESS ? 1.0f : -1.0f, ws_need(DIR_BWD_FILTER, &g),
              convDesc->math);
    *returnedAlgoCount = 1;
    TRAP_FIRST(perfResults, requestedAlgoCount, returnedAlgoCount,
               CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0, as, ws_need(DIR_BWD_FILTER, &g),
               CUDNN_NON_DETERMINISTIC, convDesc->math);
    BIG_FIRST(perfResults, requestedAlgoCount, returnedAlgoCount, DIR_BWD_FILTER,
              workSpace && workSpaceSizeInBytes >= big_bytes() ? CUDNN_STATUS_SUCCESS
                                                           : CUDNN_STATUS_ALLOC_FAILED,
              convDesc->math);
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnGetConvolutionBackwardFilterAlgorithm_v7(
    cudnnHandle_t handle, const cudnnTensorDescriptor_t srcDesc,
    const cudnnTensorDescriptor_t diffDesc, const cudnnConvolutionDescriptor_t convDesc,
    const cudnnFilterDescriptor_t gradDesc, const int requestedAlgoCount, int *returnedAlgoCount,
    cudnnConvolutionBwdFilterAlgoPerf_t *perfResults) {
    const char *fn = "cudnnGetConvolutionBackwardFilterAlgorithm_v7";
    geom g;
    cudnnStatus_t st;
    if ((st = search_common(fn, handle, requestedAlgoCount, returnedAlgoCount, perfResults, 0)) ||
        (st = check_conv(fn, DIR_BWD_FILTER, srcDesc, gradDesc, convDesc, diffDesc, &g)))
        return st;
    FILL_PERF(perfResults[0], CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1, CUDNN_STATUS_SUCCESS, 1.0f,
              ws_need(DIR_BWD_FILTER, &g), convDesc->math);
    *returnedAlgoCount = 1;
    TRAP_FIRST(perfResults, requestedAlgoCount, returnedAlgoCount,
               CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0, CUDNN_STATUS_SUCCESS,
               ws_need(DIR_BWD_FILTER, &g), CUDNN_NON_DETERMINISTIC, convDesc->math);
    BIG_FIRST(perfResults, requestedAlgoCount, returnedAlgoCount, DIR_BWD_FILTER,
              CUDNN_STATUS_SUCCESS,
              convDesc->math);
    return CUDNN_STATUS_SUCCESS;
}

/* ------------------------------------------------------ convolutions */

cudnnStatus_t cudnnConvolutionForward(cudnnHandle_t handle, const void *alpha,
                                      const cudnnTensorDescriptor_t xDesc, const void *x,
                                      const cudnnFilterDescriptor_t wDesc, const void *w,
                                      const cudnnConvolutionDescriptor_t convDesc,
                                      cudnnConvolutionFwdAlgo_t algo, void *workSpace,
                                      size_t workSpaceSizeInBytes, const void *beta,
                                      const cudnnTensorDescriptor_t yDesc, void *y) {
    const char *fn = "cudnnConvolutionForward";
    if (bad_handle(fn, handle)) return CUDNN_STATUS_BAD_PARAM;
    if ((int)algo < 0 || (int)algo >= CUDNN_CONVOLUTION_FWD_ALGO_COUNT) {
        mock_note("%s: algo %d is not a cudnnConvolutionFwdAlgo_t", fn, (int)algo);
        return CUDNN_STATUS_BAD_PARAM;
    }
    if (trap_on() && algo == TRAP_FWD_ALGO) trap_ran(fn, (int)algo);
    geom g;
    conv_job j;
    cudnnStatus_t st;
    if ((st = check_conv(fn, DIR_FWD, xDesc, wDesc, convDesc, yDesc, &g)) ||
        (st = prepare_job(fn, DIR_FWD, &g, x, "x", w, "w", y, "y", workSpace,
                          workSpaceSizeInBytes, algo_need(DIR_FWD, (int)algo, &g), 1, &j)) ||
        (st = scalars(fn, alpha, beta, convDesc, &j)))
        return st;
    if (mock_enqueue(handle->stream, fn, conv_worker, &j, sizeof j))
        return CUDNN_STATUS_EXECUTION_FAILED;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnConvolutionBackwardData(cudnnHandle_t handle, const void *alpha,
                                           const cudnnFilterDescriptor_t wDesc, const void *w,
                                           const cudnnTensorDescriptor_t dyDesc, const void *dy,
                                           const cudnnConvolutionDescriptor_t convDesc,
                                           cudnnConvolutionBwdDataAlgo_t algo, void *workSpace,
                                           size_t workSpaceSizeInBytes, const void *beta,
                                           const cudnnTensorDescriptor_t dxDesc, void *dx) {
    const char *fn = "cudnnConvolutionBackwardData";
    if (bad_handle(fn, handle)) return CUDNN_STATUS_BAD_PARAM;
    if ((int)algo < 0 || (int)algo >= CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT) {
        mock_note("%s: algo %d is not a cudnnConvolutionBwdDataAlgo_t", fn, (int)algo);
        return CUDNN_STATUS_BAD_PARAM;
    }
    if (trap_on() && algo == CUDNN_CONVOLUTION_BWD_DATA_ALGO_0) trap_ran(fn, (int)algo);
    geom g;
    conv_job j;
    cudnnStatus_t st;
    if ((st = check_conv(fn, DIR_BWD_DATA, dxDesc, wDesc, convDesc, dyDesc, &g)) ||
        (st = prepare_job(fn, DIR_BWD_DATA, &g, dy, "dy", w, "w", dx, "dx", workSpace,
                          workSpaceSizeInBytes, algo_need(DIR_BWD_DATA, (int)algo, &g), 1, &j)) ||
        (st = scalars(fn, alpha, beta, convDesc, &j)))
        return st;
    if (mock_enqueue(handle->stream, fn, conv_worker, &j, sizeof j))
        return CUDNN_STATUS_EXECUTION_FAILED;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnConvolutionBackwardFilter(cudnnHandle_t handle, const void *alpha,
                                             const cudnnTensorDescriptor_t xDesc, const void *x,
                                             const cudnnTensorDescriptor_t dyDesc, const void *dy,
                                             const cudnnConvolutionDescriptor_t convDesc,
                                             cudnnConvolutionBwdFilterAlgo_t algo,
                                             void *workSpace, size_t workSpaceSizeInBytes,
                                             const void *beta,
                                             const cudnnFilterDescriptor_t dwDesc, void *dw) {
    const char *fn = "cudnnConvolutionBackwardFilter";
    if (bad_handle(fn, handle)) return CUDNN_STATUS_BAD_PARAM;
    if ((int)algo < 0 || (int)algo >= CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT) {
        mock_note("%s: algo %d is not a cudnnConvolutionBwdFilterAlgo_t", fn, (int)algo);
        return CUDNN_STATUS_BAD_PARAM;
    }
    if (trap_on() && algo == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0) trap_ran(fn, (int)algo);
    if (algo == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD) {
        mock_note("%s: CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD is not implemented in cuDNN",
                  fn);
        return CUDNN_STATUS_NOT_SUPPORTED;
    }
    geom g;
    conv_job j;
    cudnnStatus_t st;
    if ((st = check_conv(fn, DIR_BWD_FILTER, xDesc, dwDesc, convDesc, dyDesc, &g)) ||
        (st = prepare_job(fn, DIR_BWD_FILTER, &g, x, "x", dy, "dy", dw, "dw", workSpace,
                          workSpaceSizeInBytes, algo_need(DIR_BWD_FILTER, (int)algo, &g), 1, &j)) ||
        (st = scalars(fn, alpha, beta, convDesc, &j)))
        return st;
    if (mock_enqueue(handle->stream, fn, conv_worker, &j, sizeof j))
        return CUDNN_STATUS_EXECUTION_FAILED;
    return CUDNN_STATUS_SUCCESS;
}

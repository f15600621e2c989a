/* mock_cudart.c — the CUDA runtime of the mock device (mock.h): one device,
 * host memory, synchronous streams, events that order nothing (everything
 * already runs in program order), and stream capture into graphs that
 * replay the recorded work: library calls (mock_enqueue), copies, memsets
 * and kernel launches (the emulator's vae_emu_launch_hook).
 *
 * Asynchrony ($VAE_MOCK_ASYNC, "asynchrony" below): with it set, work is not
 * run when it is issued but queued on its stream, and runs only when the
 * host must see it done — a stream, event or device synchronize, a copy to
 * pageable memory, a free — and then only as much as that needs
 * (lazy) or interleaved across streams at random, so that a missing wait
 * between streams or between the device and the host shows as a wrong
 * value, as it would on a GPU.
 *
 * What the real runtime refuses, this refuses too, with the same error:
 * capture on the legacy stream, a synchronize or a copy to or from pageable
 * host memory inside a capture (which also invalidates the capture, so
 * cudaStreamEndCapture fails), a launch of a graph on a capturing stream,
 * cudaFree of a pointer cudaMalloc did not return. Captures follow events
 * across streams: a stream that waits on an event recorded in a capture
 * joins it, a capture waiting on an event from outside is refused, and a
 * capture ends only when every stream that joined it was joined back.
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cuda_runtime_api.h>

#include "emu_launch.h"
#include "mock.h"

#define MOCK_TOTAL_MEM ((size_t)4 << 30)
/* fresh device memory (and pinned host memory) is filled with 0xff bytes
 * (NaN as float) up to this size, so that reading memory nobody wrote shows
 * in results */
#define MOCK_FILL_MAX ((size_t)512 << 20)

/* ------------------------------------------------------------ graphs */

typedef struct node {
    struct node *next;
    int is_launch;
    mock_fn fn;               /* !is_launch: fn(args) */
    const char *what;         /* !is_launch: the API call (mock_enqueue's) */
    vae_emu_launch_rec rec;   /* is_launch: rec.arg points into args */
    size_t size;
    unsigned char args[];     /* the copy */
} node;

struct CUgraph_st {
    node *head, *tail;
};
struct CUgraphExec_st {
    node *head;
};
struct op;
struct rec_tok;
struct CUstream_st {
    struct op *qhead, *qtail; /* work issued and not yet run (asynchrony) */
    int capturing;    /* cudaStreamCaptureStatusActive */
    int invalidated;  /* an illegal call happened during the capture */
    struct CUgraph_st *graph;
    /* A stream that joined another's capture (it waited on an event recorded
     * there): origin is the capturing stream, whose graph it records into
     * (work runs in program order, so issue order is a valid order). Its
     * work must be joined back — the origin waits on an event recorded
     * after its last node — before the origin's capture ends, or
     * cudaStreamEndCapture fails with cudaErrorStreamCaptureUnjoined, as on
     * the real runtime. */
    struct CUstream_st *origin;
    long seq;        /* nodes this stream recorded in the capture */
    int joined_back; /* the origin waited for all of them */
};
struct CUevent_st {
    int recorded, no_timing; /* no_timing: cudaEventDisableTiming */
    double ms; /* host clock at the record: work runs when issued, so this is "device" time */
    struct CUstream_st *st;  /* the record's stream, when it was capturing ... */
    struct CUstream_st *cap; /* ... the capture's origin stream (else NULL) */
    long seq;                /* ... and how many nodes that stream had recorded */
    /* asynchrony: the latest record issued outside a capture (NULL: none) */
    struct rec_tok *tok;
};

/* the streams made, for cudaStreamEndCapture's check of joined streams */
#define MOCK_STREAMS_MAX 64
static struct CUstream_st *g_streams[MOCK_STREAMS_MAX];

static struct CUstream_st g_legacy; /* the NULL stream */

static struct CUstream_st *stream_of(cudaStream_t s) { return s ? s : &g_legacy; }

void mock_note(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("mock device: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static void free_nodes(node *n) {
    while (n) {
        node *next = n->next;
        free(n);
        n = next;
    }
}

static node *node_new(size_t size) {
    node *n = calloc(1, sizeof *n + size);
    if (!n) {
        mock_note("out of host memory recording a graph node");
        abort();
    }
    n->size = size;
    return n;
}

static void append(struct CUstream_st *st, node *n) {
    if (st->graph->tail) st->graph->tail->next = n;
    else st->graph->head = n;
    st->graph->tail = n;
    st->seq++;
    st->joined_back = 0;
}

/* the stream whose capture st records into (itself, or the one it joined) */
static struct CUstream_st *capture_origin(struct CUstream_st *st) {
    return st->origin ? st->origin : st;
}

int mock_capturing(cudaStream_t s) { return stream_of(s)->capturing; }

/* ------------------------------------------------------------ asynchrony
 *
 * $VAE_MOCK_ASYNC: unset or 0, every stream runs its work when issued (the
 * mock's first model: program order). "lazy": each stream keeps a queue of
 * the work issued on it outside a capture (kernels, library calls, copies,
 * memsets, graph launches, event records and waits), and nothing runs until
 * the host has to see a result: cudaStreamSynchronize, cudaEventSynchronize,
 * cudaDeviceSynchronize, a copy to pageable memory (which the runtime makes
 * synchronous; one from pageable memory is staged when issued and lands in
 * stream order), cudaFree/cudaFreeHost (which synchronize the device), the
 * destruction of a stream with work pending. Even then only
 * the work that has to run does: the stream's own queue and, through the
 * events it waits on, the parts of other queues before those records — as
 * if the device ran every stream as late as CUDA allows. So a result read on
 * the host without a wait for the copy that brings it, a pinned buffer
 * overwritten while a copy from it is pending, or one stream reading what
 * another writes without an event between them, reads a stale value, where
 * the eager model showed the right one. "random[:SEED]": the same queues,
 * run in an order drawn at random among those CUDA allows — when the host
 * waits, each next piece of work is taken from the stream waited for or from
 * any stream whose next work may run, and each piece of work issued lets
 * some pending work run in the background — so that work on one stream also
 * runs early with respect to another's (a buffer reused on one stream while
 * another still reads it). */

/* One event record: a wait issued after it waits for this record, not for
 * a later record of the same event (CUDA: "the work captured by the event
 * at the time of the call"). Shared by the record's op, the event (while it
 * is the latest record) and the waits on it; freed with the last of them. */
struct rec_tok {
    int done, refs;
    double ms;               /* host clock when it ran: the event's time */
    struct CUstream_st *st;  /* the stream it is queued on (alive until it ran) */
};

enum { OP_WORK, OP_RECORD, OP_WAIT };
struct op {
    struct op *next;
    int kind;
    node *work;            /* OP_WORK: a launch or fn(args) */
    struct rec_tok *tok;   /* OP_RECORD: the record; OP_WAIT: the one awaited */
};

static int g_async = -1; /* 0 eager, 1 lazy, 2 random; -1 not read yet */
static unsigned long long g_rng = 0x9e3779b97f4a7c15ull;

static int async_mode(void) {
    if (g_async >= 0) return g_async;
    const char *e = getenv("VAE_MOCK_ASYNC");
    g_async = 0;
    if (!e || !*e || !strcmp(e, "0")) return g_async;
    if (!strcmp(e, "lazy")) {
        g_async = 1;
    } else if (!strncmp(e, "random", 6) && (e[6] == 0 || e[6] == ':')) {
        g_async = 2;
        if (e[6] == ':') {
            char *end = NULL;
            const unsigned long long seed = strtoull(e + 7, &end, 10);
            if (end == e + 7 || *end) {
                mock_note("VAE_MOCK_ASYNC=%s: the seed is not a number", e);
                abort();
            }
            g_rng ^= seed * 0xbf58476d1ce4e5b9ull;
        }
        if (!g_rng) g_rng = 1; /* xorshift stays at 0 */
    } else {
        mock_note("VAE_MOCK_ASYNC=%s: expected 0, lazy, random or random:SEED", e);
        abort();
    }
    return g_async;
}

static unsigned rnd(unsigned n) { /* xorshift64*, uniform enough for picking */
    g_rng ^= g_rng >> 12;
    g_rng ^= g_rng << 25;
    g_rng ^= g_rng >> 27;
    return (unsigned)((g_rng * 0x2545f4914f6cdd1dull) >> 33) % n;
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

static void run_node(const node *n);
static void background(void);

static struct rec_tok *tok_ref(struct rec_tok *t) {
    t->refs++;
    return t;
}

static void tok_put(struct rec_tok *t) {
    if (t && --t->refs == 0) free(t);
}

static struct op *op_new(int kind) {
    struct op *o = calloc(1, sizeof *o);
    if (!o) {
        mock_note("out of host memory queueing work");
        abort();
    }
    o->kind = kind;
    return o;
}

static void q_push(struct CUstream_st *st, struct op *o) {
    if (st->qtail) st->qtail->next = o;
    else st->qhead = o;
    st->qtail = o;
}

/* n (a node of its own) queued on st, then maybe some background progress */
static void queue_work(struct CUstream_st *st, node *n) {
    struct op *o = op_new(OP_WORK);
    o->work = n;
    q_push(st, o);
    if (g_async == 2) background();
}

static int head_ready(const struct CUstream_st *st) {
    const struct op *o = st->qhead;
    return o && (o->kind != OP_WAIT || o->tok->done);
}

/* runs st's next piece of work, which must be ready */
static void op_exec(struct CUstream_st *st) {
    struct op *o = st->qhead;
    st->qhead = o->next;
    if (!st->qhead) st->qtail = NULL;
    if (o->kind == OP_WORK) {
        run_node(o->work);
        free(o->work);
    } else if (o->kind == OP_RECORD) {
        o->tok->done = 1;
        o->tok->ms = now_ms();
    }
    tok_put(o->tok);
    free(o);
}

/* runs st's next piece of work, first running (lazily) what it waits for */
static void advance(struct CUstream_st *st) {
    while (!head_ready(st)) {
        struct op *o = st->qhead;
        if (!o || !o->tok->st->qhead) {
            mock_note("asynchrony: a wait on an event whose record is not queued (internal)");
            abort();
        }
        advance(o->tok->st);
    }
    op_exec(st);
}

/* the streams made, then the legacy stream */
static struct CUstream_st *all_stream(int i) {
    return i == MOCK_STREAMS_MAX ? &g_legacy : g_streams[i];
}

/* a stream whose next piece of work may run, drawn at random; NULL if none */
static struct CUstream_st *random_ready(void) {
    struct CUstream_st *pick[MOCK_STREAMS_MAX + 1];
    unsigned n = 0;
    for (int i = 0; i <= MOCK_STREAMS_MAX; i++) {
        struct CUstream_st *st = all_stream(i);
        if (st && head_ready(st)) pick[n++] = st;
    }
    return n ? pick[rnd(n)] : NULL;
}

/* one piece of work toward what the host waits for on stream want */
static void step_toward(struct CUstream_st *want) {
    if (g_async == 2 && rnd(2)) {
        struct CUstream_st *st = random_ready();
        if (st) {
            op_exec(st);
            return;
        }
    }
    advance(want);
}

/* random: now and then, some pending work runs while the host goes on */
static void background(void) {
    while (rnd(4) == 0) {
        struct CUstream_st *st = random_ready();
        if (!st) return;
        op_exec(st);
    }
}

static void drain_stream(struct CUstream_st *st) {
    while (st->qhead) step_toward(st);
}

static void drain_event(struct CUevent_st *e) {
    while (e->tok && !e->tok->done) step_toward(e->tok->st);
}

static void drain_all(void) {
    for (int i = 0; i <= MOCK_STREAMS_MAX; i++) {
        struct CUstream_st *st = all_stream(i);
        if (st) drain_stream(st);
    }
}

int mock_enqueue(cudaStream_t s, const char *what, mock_fn fn, const void *args, size_t size) {
    struct CUstream_st *st = stream_of(s);
    if (!st->capturing) {
        if (!async_mode()) {
            fn((void *)args);
            return 0;
        }
        node *n = node_new(size);
        n->fn = fn;
        n->what = what;
        memcpy(n->args, args, size);
        queue_work(st, n);
        return 0;
    }
    if (capture_origin(st)->invalidated) {
        mock_note("%s into a capture already invalidated: refused", what);
        return -1;
    }
    node *n = node_new(size);
    n->fn = fn;
    n->what = what;
    memcpy(n->args, args, size);
    append(st, n);
    return 0;
}

/* a node of the launch, with its own copy of the arguments */
static node *launch_node(const vae_emu_launch_rec *rec) {
    node *n = node_new(rec->arg_size);
    n->is_launch = 1;
    n->rec = *rec;
    memcpy(n->args, rec->arg, rec->arg_size);
    n->rec.arg = n->args;
    return n;
}

/* The emulator offers every kernel launch here first. */
static int launch_hook(const vae_emu_launch_rec *rec) {
    struct CUstream_st *st = stream_of((cudaStream_t)rec->stream);
    if (!st->capturing) {
        if (!async_mode()) return 0; /* runs now */
        if (vae_emu_launch_check(rec)) return 3; /* refused at launch, as CUDA does */
        queue_work(st, launch_node(rec));
        return 1;
    }
    if (capture_origin(st)->invalidated) { /* the runtime refuses it likewise */
        mock_note("kernel launch at %s into a capture already invalidated: refused",
                  rec->site ? rec->site : "?");
        return 2;
    }
    append(st, launch_node(rec));
    return 1;
}

__attribute__((constructor)) static void install_hook(void) { vae_emu_launch_hook = launch_hook; }

static void run_node(const node *n) {
    /* the work may not modify its argument copy, but give each replay a
     * fresh one all the same */
    unsigned char *copy = malloc(n->size ? n->size : 1);
    if (!copy) abort();
    memcpy(copy, n->args, n->size);
    if (n->is_launch) {
        vae_emu_launch_rec r = n->rec;
        r.arg = copy;
        vae_emu_run_rec(&r);
    } else {
        n->fn(copy);
    }
    free(copy);
}

static void run_nodes(const node *n) {
    for (; n; n = n->next) run_node(n);
}

static node *node_copy(const node *n) {
    node *c = node_new(n->size);
    c->is_launch = n->is_launch;
    c->fn = n->fn;
    c->what = n->what;
    c->rec = n->rec;
    memcpy(c->args, n->args, n->size);
    c->rec.arg = c->args;
    return c;
}

/* VAE_MOCK_GRAPH_DUMP=1: each captured graph's nodes on stderr, one line
 * each (a kernel's launch site, grid and block; a library call's name), then
 * their counts. A census of what one replay launches, for reasoning about a
 * step's launch overheads; a library call may be several kernels on a GPU. */
static void dump_graph(const struct CUgraph_st *g) {
    const char *e = getenv("VAE_MOCK_GRAPH_DUMP");
    if (!e || !*e || !strcmp(e, "0")) return;
    long kernels = 0, calls = 0;
    fprintf(stderr, "mock graph:\n");
    for (const node *n = g->head; n; n = n->next) {
        if (n->is_launch) {
            const unsigned *gr = n->rec.grid, *bl = n->rec.block;
            fprintf(stderr, "  kernel  %-28s grid %u,%u,%u  block %u,%u,%u\n",
                    n->rec.site ? n->rec.site : "?", gr[0], gr[1], gr[2], bl[0], bl[1], bl[2]);
            kernels++;
        } else {
            fprintf(stderr, "  call    %s\n", n->what ? n->what : "?");
            calls++;
        }
    }
    fprintf(stderr, "mock graph: %ld nodes: %ld kernels of ours, %ld library calls/copies\n",
            kernels + calls, kernels, calls);
}

/* ------------------------------------------------------------ errors */

cudaError_t cudaGetLastError(void) { return (cudaError_t)vae_emu_take_launch_error(); }

const char *cudaGetErrorString(cudaError_t e) {
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorInvalidDevicePointer: return "invalid device pointer";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated: return "operation failed due to a previous error during capture";
    case cudaErrorIllegalState: return "the operation cannot be performed in the present state";
    default: return "unknown error (mock device)";
    }
}

/* ------------------------------------------------------------ device */

static int no_device(void) {
    const char *e = getenv("VAE_MOCK_NO_DEVICE");
    return e && *e && strcmp(e, "0") != 0;
}

cudaError_t cudaGetDeviceCount(int *count) {
    if (!count) return cudaErrorInvalidValue;
    *count = no_device() ? 0 : 1;
    return no_device() ? cudaErrorNoDevice : cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
    return device == 0 && !no_device() ? cudaSuccess : cudaErrorInvalidDevice;
}

cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *prop, int device) {
    if (!prop) return cudaErrorInvalidValue;
    if (device != 0) return cudaErrorInvalidDevice;
    memset(prop, 0, sizeof *prop);
    snprintf(prop->name, sizeof prop->name, "mock device (CPU, tests/mock)");
    prop->major = 9;
    prop->minor = 0;
    prop->multiProcessorCount = 4;
    prop->totalGlobalMem = MOCK_TOTAL_MEM;
    prop->warpSize = 32;
    prop->maxThreadsPerBlock = 1024;
    return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int *value, enum cudaDeviceAttr attr, int device) {
    if (!value) return cudaErrorInvalidValue;
    if (device != 0) return cudaErrorInvalidDevice;
    switch (attr) {
    case cudaDevAttrComputeCapabilityMajor: *value = 9; return cudaSuccess;
    case cudaDevAttrComputeCapabilityMinor: *value = 0; return cudaSuccess;
    case cudaDevAttrMultiProcessorCount: *value = 4; return cudaSuccess;
    case cudaDevAttrWarpSize: *value = 32; return cudaSuccess;
    case cudaDevAttrMaxThreadsPerBlock: *value = 1024; return cudaSuccess;
    default:
        mock_note("cudaDeviceGetAttribute: attribute %d not modelled", (int)attr);
        return cudaErrorInvalidValue;
    }
}

cudaError_t cudaDriverGetVersion(int *v) {
    if (!v) return cudaErrorInvalidValue;
    *v = 13000;
    return cudaSuccess;
}

cudaError_t cudaRuntimeGetVersion(int *v) {
    if (!v) return cudaErrorInvalidValue;
    *v = 13000;
    return cudaSuccess;
}

/* The kernel probe's (act.cu) call: only the status matters. *attr is left
 * alone: the caller is an emulated kernel file, built against the emulator's
 * one-field stand-in of the struct, not this header's. */
cudaError_t cudaFuncGetAttributes(struct cudaFuncAttributes *attr, const void *func) {
    return attr && func ? cudaSuccess : cudaErrorInvalidValue;
}

/* ------------------------------------------------------------ memory */

typedef struct alloc_rec {
    struct alloc_rec *next;
    void *p;
    size_t bytes;
    int host; /* cudaMallocHost */
} alloc_rec;
static alloc_rec *g_allocs;
static size_t g_in_use;

/* pointer inside an allocation of the given kind */
static int inside(const void *p, size_t bytes, int host) {
    const uintptr_t x = (uintptr_t)p;
    for (alloc_rec *a = g_allocs; a; a = a->next)
        if (a->host == host && x >= (uintptr_t)a->p && x + bytes <= (uintptr_t)a->p + a->bytes)
            return 1;
    return 0;
}

static cudaError_t do_alloc(void **p, size_t bytes, int host) {
    if (!p) return cudaErrorInvalidValue;
    *p = NULL;
    if (!host && bytes > MOCK_TOTAL_MEM - g_in_use) return cudaErrorMemoryAllocation;
    alloc_rec *a = calloc(1, sizeof *a);
    void *m = NULL;
    if (!a || posix_memalign(&m, 256, bytes ? (bytes + 255) / 256 * 256 : 256) != 0) {
        free(a);
        return cudaErrorMemoryAllocation;
    }
    /* pinned host memory too: the runtime promises no contents either */
    memset(m, 0xff, bytes < MOCK_FILL_MAX ? bytes : MOCK_FILL_MAX);
    a->p = m;
    a->bytes = bytes;
    a->host = host;
    a->next = g_allocs;
    g_allocs = a;
    if (!host) g_in_use += bytes;
    *p = m;
    return cudaSuccess;
}

static cudaError_t do_free(void *p, int host) {
    if (!p) return cudaSuccess;
    for (alloc_rec **pp = &g_allocs; *pp; pp = &(*pp)->next) {
        alloc_rec *a = *pp;
        if (a->p == p && a->host == host) {
            *pp = a->next;
            if (!host) g_in_use -= a->bytes;
            free(a->p);
            free(a);
            return cudaSuccess;
        }
    }
    mock_note("%s(%p): not a pointer %s returned", host ? "cudaFreeHost" : "cudaFree", p,
              host ? "cudaMallocHost" : "cudaMalloc");
    return host ? cudaErrorInvalidValue : cudaErrorInvalidDevicePointer;
}

cudaError_t cudaMalloc(void **p, size_t bytes) { return do_alloc(p, bytes, 0); }
/* cudaFree and cudaFreeHost synchronize the device first, as the runtime's */
cudaError_t cudaFree(void *p) {
    if (p && async_mode()) drain_all();
    return do_free(p, 0);
}
cudaError_t cudaMallocHost(void **p, size_t bytes) { return do_alloc(p, bytes, 1); }
cudaError_t cudaFreeHost(void *p) {
    if (p && async_mode()) drain_all();
    return do_free(p, 1);
}

cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total) {
    if (!free_bytes || !total) return cudaErrorInvalidValue;
    *total = MOCK_TOTAL_MEM;
    *free_bytes = MOCK_TOTAL_MEM - g_in_use;
    return cudaSuccess;
}

typedef struct {
    void *dst;
    const void *src;
    size_t n;
} copy_args;
static void run_copy(void *a) {
    copy_args *c = a;
    memmove(c->dst, c->src, c->n);
}

/* a copy from pageable memory, its bytes staged when it was issued */
typedef struct {
    void *dst;
    size_t n;
    unsigned char data[];
} staged_args;
static void run_staged(void *a) {
    staged_args *c = a;
    memcpy(c->dst, c->data, c->n);
}

typedef struct {
    void *dst;
    int value;
    size_t n;
} set_args;
static void run_set(void *a) {
    set_args *c = a;
    memset(c->dst, c->value, c->n);
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, enum cudaMemcpyKind kind,
                            cudaStream_t s) {
    struct CUstream_st *st = stream_of(s);
    if (n == 0) return cudaSuccess;
    if (!dst || !src) return cudaErrorInvalidValue;
    /* the direction must agree with where the pointers are */
    const int dst_dev = inside(dst, n, 0), src_dev = inside(src, n, 0);
    int ok;
    switch (kind) {
    case cudaMemcpyHostToDevice: ok = dst_dev && !src_dev; break;
    case cudaMemcpyDeviceToHost: ok = src_dev && !dst_dev; break;
    case cudaMemcpyDeviceToDevice: ok = src_dev && dst_dev; break;
    case cudaMemcpyDefault: ok = 1; break;
    default: ok = 0; break;
    }
    if (!ok) {
        mock_note("cudaMemcpyAsync(%p, %p, %zu, kind %d): the pointers are not where the kind "
                  "says (or the range leaves its allocation)",
                  dst, src, n, (int)kind);
        return cudaErrorInvalidValue;
    }
    if (st->capturing) {
        const void *host = kind == cudaMemcpyHostToDevice ? src
                           : kind == cudaMemcpyDeviceToHost ? dst : NULL;
        if (host && !inside(host, n, 1)) {
            mock_note("cudaMemcpyAsync of pageable host memory during stream capture");
            capture_origin(st)->invalidated = 1;
            return cudaErrorStreamCaptureUnsupported;
        }
    }
    copy_args c = {dst, src, n};
    if (!st->capturing && async_mode()) {
        /* The runtime's rules (API synchronization behavior): to pageable
         * memory, and between two host buffers, the call returns when the
         * copy is done (the stream's work before it runs first); from
         * pageable memory it is staged when the call is made (the caller may
         * reuse src at once) and lands in stream order, like any copy. */
        if ((!dst_dev && !inside(dst, n, 1)) || (!dst_dev && !src_dev)) {
            drain_stream(st);
            run_copy(&c);
            return cudaSuccess;
        }
        if (!src_dev && !inside(src, n, 1)) {
            staged_args *a = malloc(sizeof *a + n);
            if (!a) return cudaErrorMemoryAllocation;
            a->dst = dst;
            a->n = n;
            memcpy(a->data, src, n);
            int rc = mock_enqueue(s, "cudaMemcpyAsync", run_staged, a, sizeof *a + n);
            free(a);
            return rc ? cudaErrorStreamCaptureInvalidated : cudaSuccess;
        }
    }
    if (mock_enqueue(s, "cudaMemcpyAsync", run_copy, &c, sizeof c))
        return cudaErrorStreamCaptureInvalidated;
    return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void *dst, int value, size_t n, cudaStream_t s) {
    if (n == 0) return cudaSuccess;
    if (!inside(dst, n, 0)) {
        mock_note("cudaMemsetAsync(%p, %zu): not inside a cudaMalloc allocation", dst, n);
        return cudaErrorInvalidValue;
    }
    set_args c = {dst, value, n};
    if (mock_enqueue(s, "cudaMemsetAsync", run_set, &c, sizeof c))
        return cudaErrorStreamCaptureInvalidated;
    return cudaSuccess;
}

/* ------------------------------------------------------------ streams */

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned int flags) {
    (void)flags;
    if (!s) return cudaErrorInvalidValue;
    *s = calloc(1, sizeof **s);
    if (!*s) return cudaErrorMemoryAllocation;
    for (int i = 0; i < MOCK_STREAMS_MAX; i++)
        if (!g_streams[i]) {
            g_streams[i] = *s;
            return cudaSuccess;
        }
    mock_note("more than %d streams", MOCK_STREAMS_MAX);
    free(*s);
    *s = NULL;
    return cudaErrorMemoryAllocation;
}

cudaError_t cudaStreamDestroy(cudaStream_t s) {
    if (!s) return cudaErrorInvalidValue;
    drain_stream(s); /* the runtime lets pending work finish */
    for (int i = 0; i < MOCK_STREAMS_MAX; i++)
        if (g_streams[i] == s) g_streams[i] = NULL;
    if (s->origin) {
        mock_note("cudaStreamDestroy of a stream in another stream's capture");
        s->origin->invalidated = 1;
    } else if (s->graph) {
        free_nodes(s->graph->head);
        free(s->graph);
    }
    free(s);
    return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t s) {
    struct CUstream_st *st = stream_of(s);
    if (st->capturing) {
        mock_note("cudaStreamSynchronize on a capturing stream");
        capture_origin(st)->invalidated = 1;
        return cudaErrorStreamCaptureUnsupported;
    }
    drain_stream(st);
    return cudaSuccess;
}

/* everything issued has run; refused (and the capture invalidated) while a
 * stream captures, as the runtime does */
cudaError_t cudaDeviceSynchronize(void) {
    for (int i = 0; i < MOCK_STREAMS_MAX; i++)
        if (g_streams[i] && g_streams[i]->capturing) {
            mock_note("cudaDeviceSynchronize during a stream capture");
            capture_origin(g_streams[i])->invalidated = 1;
            return cudaErrorStreamCaptureUnsupported;
        }
    drain_all();
    return cudaSuccess;
}

cudaError_t cudaStreamIsCapturing(cudaStream_t s, enum cudaStreamCaptureStatus *status) {
    if (!status) return cudaErrorInvalidValue;
    struct CUstream_st *st = stream_of(s);
    *status = !st->capturing      ? cudaStreamCaptureStatusNone
              : capture_origin(st)->invalidated ? cudaStreamCaptureStatusInvalidated
                                : cudaStreamCaptureStatusActive;
    return cudaSuccess;
}

cudaError_t cudaStreamBeginCapture(cudaStream_t s, enum cudaStreamCaptureMode mode) {
    (void)mode;
    if (!s) {
        mock_note("cudaStreamBeginCapture on the legacy NULL stream");
        return cudaErrorStreamCaptureUnsupported;
    }
    if (s->capturing) return cudaErrorIllegalState;
    s->seq = 0;
    s->graph = calloc(1, sizeof *s->graph);
    if (!s->graph) return cudaErrorMemoryAllocation;
    s->capturing = 1;
    s->invalidated = 0;
    return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *graph) {
    if (!s || !graph) return cudaErrorInvalidValue;
    *graph = NULL;
    if (!s->capturing || s->origin) return cudaErrorIllegalState;
    /* the streams that joined this capture leave it; all must have rejoined */
    for (int i = 0; i < MOCK_STREAMS_MAX; i++) {
        struct CUstream_st *j = g_streams[i];
        if (!j || j->origin != s) continue;
        if (!j->joined_back) {
            mock_note("cudaStreamEndCapture with a forked stream not joined back");
            s->invalidated = 2;
        }
        j->capturing = 0;
        j->graph = NULL;
        j->origin = NULL;
        j->invalidated = 0;
    }
    s->capturing = 0;
    struct CUgraph_st *g = s->graph;
    s->graph = NULL;
    if (s->invalidated) {
        const int unjoined = s->invalidated == 2;
        free_nodes(g->head);
        free(g);
        return unjoined ? cudaErrorStreamCaptureUnjoined : cudaErrorStreamCaptureInvalidated;
    }
    dump_graph(g);
    *graph = g;
    return cudaSuccess;
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned int flags) {
    if (!e) return cudaErrorInvalidValue;
    *e = calloc(1, sizeof **e);
    if (!*e) return cudaErrorMemoryAllocation;
    (*e)->no_timing = (flags & cudaEventDisableTiming) != 0;
    return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t *e) { return cudaEventCreateWithFlags(e, 0); }

/* Returns at once, as the runtime's: a queued record or wait holds its own
 * reference to the record it stands for. */
cudaError_t cudaEventDestroy(cudaEvent_t e) {
    if (!e) return cudaErrorInvalidValue;
    tok_put(e->tok);
    free(e);
    return cudaSuccess;
}

/* Eagerly, work runs in program order, so an event orders nothing that is
 * not already ordered; it only has to exist. With asynchrony a record
 * outside a capture is queued on the stream and marks the event done when
 * its turn comes (the time it ran is the event's time). */
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
    if (!e) return cudaErrorInvalidValue;
    struct CUstream_st *st = stream_of(s);
    e->st = st;
    e->cap = st->capturing ? capture_origin(st) : NULL;
    e->seq = st->seq;
    e->recorded = 1;
    if (!st->capturing && async_mode()) {
        struct rec_tok *t = calloc(1, sizeof *t);
        if (!t) {
            mock_note("out of host memory queueing work");
            abort();
        }
        t->st = st;
        t->refs = 1; /* the event's */
        tok_put(e->tok);
        e->tok = t;
        struct op *o = op_new(OP_RECORD);
        o->tok = tok_ref(t);
        q_push(st, o);
        return cudaSuccess;
    }
    e->ms = now_ms();
    return cudaSuccess;
}

/* everything issued has run (with asynchrony: runs what the record needs) */
cudaError_t cudaEventSynchronize(cudaEvent_t e) {
    if (!e) return cudaErrorInvalidValue;
    if (!e->recorded) return cudaErrorInvalidResourceHandle;
    drain_event(e);
    return cudaSuccess;
}

cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b) {
    if (!ms || !a || !b) return cudaErrorInvalidValue;
    if (!a->recorded || !b->recorded) return cudaErrorInvalidResourceHandle;
    if (a->no_timing || b->no_timing) return cudaErrorInvalidResourceHandle;
    if ((a->tok && !a->tok->done) || (b->tok && !b->tok->done)) return cudaErrorNotReady;
    *ms = (float)((b->tok ? b->tok->ms : b->ms) - (a->tok ? a->tok->ms : a->ms));
    return cudaSuccess;
}

/* Eagerly it orders nothing (program order already does); with asynchrony
 * s's later work waits for the event's latest record outside a capture (that
 * record: a later record of the event changes nothing for it). It follows
 * captures as the runtime does: a stream that waits on an event recorded in
 * a capture joins that capture; the capture's origin waiting on a joined stream's event
 * recorded after its last node joins it back; a capturing stream waiting on
 * an event from outside its capture is refused (cudaErrorStreamCaptureIsolation)
 * and invalidates the capture. */
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned int flags) {
    (void)flags;
    if (!e) return cudaErrorInvalidValue;
    struct CUstream_st *st = stream_of(s);
    if (!st->capturing) {
        if (e->cap && e->cap->capturing) { /* joins e's capture */
            if (!s) {
                mock_note("the legacy stream waits on an event of a capture");
                e->cap->invalidated = 1;
                return cudaErrorStreamCaptureImplicit;
            }
            st->capturing = 1;
            st->origin = e->cap;
            st->graph = e->cap->graph;
            st->seq = 0;
            st->joined_back = 1; /* nothing recorded yet */
        } else if (async_mode() && e->tok && !e->tok->done) {
            struct op *o = op_new(OP_WAIT); /* for this record, not a later one */
            o->tok = tok_ref(e->tok);
            q_push(st, o);
        }
        return cudaSuccess;
    }
    struct CUstream_st *o = capture_origin(st);
    if (!e->cap || e->cap != o || !e->cap->capturing) {
        mock_note("a capturing stream waits on an event recorded outside its capture");
        o->invalidated = 1;
        return cudaErrorStreamCaptureIsolation;
    }
    if (st == o && e->st != o && e->st->origin == o && e->seq == e->st->seq)
        e->st->joined_back = 1;
    return cudaSuccess;
}

/* ------------------------------------------------------------ graphs */

cudaError_t cudaGraphInstantiateWithFlags(cudaGraphExec_t *exec, cudaGraph_t graph,
                                          unsigned long long flags) {
    (void)flags;
    if (!exec || !graph) return cudaErrorInvalidValue;
    *exec = calloc(1, sizeof **exec);
    if (!*exec) return cudaErrorMemoryAllocation;
    /* the exec is independent of the graph: copy the nodes */
    node **tail = &(*exec)->head;
    for (const node *n = graph->head; n; n = n->next) {
        node *c = node_copy(n);
        *tail = c;
        tail = &c->next;
    }
    return cudaSuccess;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t s) {
    if (!exec) return cudaErrorInvalidValue;
    if (stream_of(s)->capturing) {
        mock_note("cudaGraphLaunch on a capturing stream (not modelled)");
        return cudaErrorStreamCaptureUnsupported;
    }
    if (!async_mode()) {
        run_nodes(exec->head);
        return cudaSuccess;
    }
    for (const node *n = exec->head; n; n = n->next) queue_work(stream_of(s), node_copy(n));
    return cudaSuccess;
}

cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
    if (!graph) return cudaErrorInvalidValue;
    free_nodes(graph->head);
    free(graph);
    return cudaSuccess;
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
    if (!exec) return cudaErrorInvalidValue;
    free_nodes(exec->head);
    free(exec);
    return cudaSuccess;
}

/* emu_runtime.cpp — the scheduler behind cuda_emu.h.
 *
 * A launch runs on the calling thread, block after block (in a scattered
 * order, block_step below; every other block runs its threads backwards,
 * run_block). Each CUDA thread
 * of a block is a fiber (its own stack; a switch is a handful of register
 * moves, vae_emu_switch below); the scheduler runs every
 * ready fiber in thread order until it finishes or stops at a barrier, then
 * releases the barriers whose threads have all arrived:
 *   - __syncthreads: every thread of the block still in the kernel (a thread
 *     that returned no longer counts, as on current GPUs) waits there, all
 *     from one place in the source;
 *   - a full-mask warp shuffle: all 32 lanes of the warp wait at the same
 *     shuffle; each gets its partner's value.
 * If fibers wait and no barrier can be released (a __syncthreads some
 * threads skip, a shuffle with lanes that left or wait elsewhere), that is
 * a deadlock or undefined behaviour on a GPU: the emulator says which
 * threads wait where, and aborts. Launches are synchronous and serialised,
 * so stream order is program order.
 *
 * Under AddressSanitizer the stack switches are announced to it
 * (__sanitizer_start/finish_switch_fiber), so kernels are checked for
 * out-of-bounds accesses like any host code.
 */
#include <sys/mman.h>

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <vector>

#include "cuda_emu.h"
#include "emu_launch.h"

#if defined(__SANITIZE_ADDRESS__)
#define VAE_EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define VAE_EMU_ASAN 1
#endif
#endif
#ifdef VAE_EMU_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

/* ThreadSanitizer (VAE_EMU_TSAN, set by tests/CMakeLists.txt in a
 * -DVAE_TSAN=ON build: the kernels are instrumented, this file is not).
 * Each fiber is a TSan fiber, switched to without synchronisation, so TSan
 * sees the threads of a block as concurrent. The only happens-before edges
 * are the ones CUDA gives:
 *   - a launch is ordered after the host's work before it (`launch_in`: the
 *     host releases it, each thread acquires it when it starts) and before
 *     the host's work after it; blocks are ordered one after another, as
 *     executed here (`block_done[2]`: a thread releases its block's object
 *     when it returns and acquires the previous block's when it starts; two
 *     objects, by block parity, so that threads of one block, which start
 *     one after another, are not ordered by them; the host acquires the
 *     last block's after the launch);
 *   - a __syncthreads orders everything before it in the block before
 *     everything after it (`block_sync`: release on arrival, acquire when
 *     released); a shuffle likewise within the warp (`warp_sync[w]`).
 * So an unsynchronised pair of accesses to the same shared or global memory
 * by two threads of a block, one a write, is reported as a data race: the
 * hazard compute-sanitizer's racecheck reports on a GPU. (Blocks are ordered
 * here, so races between blocks are not found; the scheduler's own accesses
 * to fiber state are not instrumented.) Barrier-free kernels also run as
 * fibers under TSan. */
#ifdef VAE_EMU_TSAN
#include <sanitizer/tsan_interface.h>
#define TSAN(...) __VA_ARGS__
#else
#define TSAN(...)
#endif

uint3 threadIdx, blockIdx;
dim3 blockDim, gridDim;

namespace {

enum state { READY, AT_SYNC, AT_SHFL, DONE };

struct fiber {
    void *sp = nullptr;           /* its saved stack pointer while switched out */
    char *stack = nullptr;
    state st = DONE;
    uint3 tid;
    const char *file = nullptr; /* the barrier it waits at */
    int line = 0;
    uint64_t slot = 0;          /* shuffle: its value, then its partner's */
    unsigned lane_mask = 0;
    int pdl = 0;                /* VAE_PDL_ENTRY() passes in this launch's block */
    void *fake = nullptr;       /* ASan's fake stack of this fiber */
    void *tsan = nullptr;       /* its TSan fiber */
};

const size_t k_stack = 256 * 1024; /* per fiber (ASan frames are large) */

struct launch_state {
    std::vector<fiber> fibers; /* grows to the largest block seen; stacks kept */
    void *sched_sp = nullptr;  /* the scheduler's, while a fiber runs */
    void *dead_sp = nullptr;   /* where a finished fiber's last switch saves to */
    int cur = -1;
    void (*body)(void *) = nullptr;
    void *arg = nullptr;
    const char *site = "";
    int live = 0;        /* fibers of the block not DONE */
    int at_sync = 0;     /* fibers waiting at __syncthreads */
    int at_shfl[32] = {}; /* per warp: lanes waiting at a shuffle */
    /* ASan: the scheduler's stack as seen from the fibers */
    const void *sched_bottom = nullptr;
    size_t sched_size = 0;
    void *sched_fake = nullptr;
    /* TSan: the host thread's fiber and the sync objects (header comment) */
    void *sched_tsan = nullptr;
    char launch_in, block_done[2], block_sync, warp_sync[32];
    unsigned long long block_no = 0; /* blocks run so far, all launches */
    int free_pdl = 0; /* VAE_PDL_ENTRY() passes of the barrier-free thread running */
};

launch_state g;

/* vae_emu_switch(save, to): saves the callee-saved registers on the current
 * stack and the stack pointer in *save, then continues on the stack `to`
 * where an earlier switch (or fiber_init) left the same layout. Plain
 * function-call semantics otherwise: a few nanoseconds, where swapcontext
 * spends a system call on the signal mask. */
extern "C" void vae_emu_switch(void **save, void *to);
#if defined(__x86_64__)
asm(R"(
    .pushsection .text
    .globl vae_emu_switch
    .type vae_emu_switch, @function
vae_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size vae_emu_switch, .-vae_emu_switch
    .popsection
)");
#else
#error "the CUDA emulator's context switch is written for x86-64 (tests/CMakeLists.txt builds it only there)"
#endif

void trampoline(void);

/* A fresh stack for `f` whose first switch-in starts trampoline(). */
void fiber_init(fiber &f) {
#ifdef VAE_EMU_ASAN
    /* the top of the stack held the last run's trampoline frame, which never
     * returned, so ASan still has its redzones marked there */
    ASAN_UNPOISON_MEMORY_REGION(f.stack + k_stack - 4096, 4096);
#endif
    uintptr_t top = (uintptr_t)(f.stack + k_stack) & ~(uintptr_t)15;
    void **sp = (void **)top;
    *--sp = nullptr;                  /* trampoline's return address: never used */
    *--sp = (void *)&trampoline;      /* popped by vae_emu_switch's ret */
    for (int i = 0; i < 6; i++) *--sp = nullptr; /* rbp rbx r12-r15 */
    f.sp = sp;
}
cudaError_t g_last = cudaSuccess;
std::mutex g_launch; /* one launch at a time, from any host thread */

[[noreturn]] void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "cuda emulator: kernel launched at %s, block (%u,%u,%u): ", g.site,
            blockIdx.x, blockIdx.y, blockIdx.z);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    abort();
}

/* scheduler -> fiber i, until it yields or finishes */
void enter(int i) {
    fiber &f = g.fibers[i];
    g.cur = i;
    threadIdx = f.tid;
#ifdef VAE_EMU_ASAN
    __sanitizer_start_switch_fiber(&g.sched_fake, f.stack, k_stack);
#endif
    TSAN(__tsan_switch_to_fiber(f.tsan, __tsan_switch_to_fiber_no_sync));
    vae_emu_switch(&g.sched_sp, f.sp);
#ifdef VAE_EMU_ASAN
    __sanitizer_finish_switch_fiber(g.sched_fake, nullptr, nullptr);
#endif
    g.cur = -1;
}

/* fiber -> scheduler; returns when the scheduler resumes it */
void yield(void) {
    fiber &f = g.fibers[g.cur];
#ifdef VAE_EMU_ASAN
    __sanitizer_start_switch_fiber(&f.fake, g.sched_bottom, g.sched_size);
#endif
    TSAN(__tsan_switch_to_fiber(g.sched_tsan, __tsan_switch_to_fiber_no_sync));
    vae_emu_switch(&f.sp, g.sched_sp);
#ifdef VAE_EMU_ASAN
    __sanitizer_finish_switch_fiber(f.fake, &g.sched_bottom, &g.sched_size);
#endif
}

void trampoline(void) {
#ifdef VAE_EMU_ASAN
    __sanitizer_finish_switch_fiber(nullptr, &g.sched_bottom, &g.sched_size);
#endif
    TSAN(__tsan_acquire(&g.launch_in));
    TSAN(__tsan_acquire(&g.block_done[(g.block_no + 1) % 2]));
    g.body(g.arg);
    TSAN(__tsan_release(&g.block_done[g.block_no % 2]));
    fiber &f = g.fibers[g.cur];
    f.st = DONE;
    g.live--;
#ifdef VAE_EMU_ASAN
    __sanitizer_start_switch_fiber(nullptr, g.sched_bottom, g.sched_size);
#endif
    TSAN(__tsan_switch_to_fiber(g.sched_tsan, __tsan_switch_to_fiber_no_sync));
    vae_emu_switch(&g.dead_sp, g.sched_sp);
    abort(); /* not reached: a finished fiber is never switched to */
}

void ensure_fibers(int n) {
    while ((int)g.fibers.size() < n) {
        g.fibers.emplace_back();
        fiber &f = g.fibers.back();
        /* a PROT_NONE page below the stack turns an overflow into a fault */
        void *p = mmap(nullptr, k_stack + 4096, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED) die("mmap of a fiber stack failed");
        TSAN(f.tsan = __tsan_create_fiber(0));
        mprotect(p, 4096, PROT_NONE);
        f.stack = static_cast<char *>(p) + 4096;
    }
}

const char *state_name(state s) {
    switch (s) {
    case READY: return "ready";
    case AT_SYNC: return "__syncthreads";
    case AT_SHFL: return "__shfl_xor_sync";
    case DONE: return "done";
    }
    return "?";
}

[[noreturn]] void deadlock(int n) {
    fprintf(stderr, "cuda emulator: kernel launched at %s, block (%u,%u,%u): no barrier can be "
                    "released; threads wait at:\n",
            g.site, blockIdx.x, blockIdx.y, blockIdx.z);
    int shown = 0;
    for (int i = 0; i < n && shown < 40; i++) {
        const fiber &f = g.fibers[i];
        if (f.st == DONE) continue;
        fprintf(stderr, "  thread %d: %s at %s:%d\n", i, state_name(f.st), f.file ? f.file : "",
                f.line);
        shown++;
    }
    die("deadlock (a barrier some threads skip, or a shuffle with lanes elsewhere)");
}

int same_place(const fiber &a, const fiber &b) {
    return a.line == b.line && (a.file == b.file || strcmp(a.file, b.file) == 0);
}

/* Release what can be released; 1 if anything was. */
int release(int n) {
    int released = 0;
    /* warp shuffles: all 32 lanes at one shuffle */
    for (int w = 0; w * 32 < n; w++) {
        if (!g.at_shfl[w]) continue;
        const int l0 = w * 32;
        if (n - l0 < 32) die("a full-mask shuffle in a warp of %d threads", n - l0);
        if (g.at_shfl[w] != 32) {
            int done = 0;
            for (int i = l0; i < l0 + 32; i++) done += g.fibers[i].st == DONE;
            if (done)
                die("a full-mask __shfl_xor_sync in warp %d with %d lanes that left", w, done);
            continue; /* the others wait elsewhere: released there, or a deadlock */
        }
        const fiber &first = g.fibers[l0];
        uint64_t v[32];
        for (int k = 0; k < 32; k++) {
            const fiber &f = g.fibers[l0 + k];
            if (!same_place(f, first))
                die("warp %d's lanes wait at two shuffles, %s:%d and %s:%d", w, first.file,
                    first.line, f.file, f.line);
            v[k] = f.slot;
        }
        for (int k = 0; k < 32; k++) {
            fiber &f = g.fibers[l0 + k];
            f.slot = v[k ^ (int)(f.lane_mask & 31u)];
            f.st = READY;
        }
        g.at_shfl[w] = 0;
        released = 1;
    }
    if (released) return 1;
    /* __syncthreads: every thread still in the kernel waits there */
    if (!g.at_sync || g.at_sync != g.live) return 0;
    const fiber *first = nullptr;
    for (int i = 0; i < n; i++) {
        fiber &f = g.fibers[i];
        if (f.st != AT_SYNC) continue;
        if (!first) first = &f;
        else if (!same_place(f, *first))
            die("divergent __syncthreads: threads wait at %s:%d and at %s:%d", first->file,
                first->line, f.file, f.line);
        f.st = READY;
    }
    g.at_sync = 0;
    return 1;
}

/* rev: run the threads from the last to the first (every other block, the
 * launch loop below) */
void run_block(int n, bool rev) {
    for (int i = 0; i < n; i++) {
        fiber &f = g.fibers[i];
        fiber_init(f);
        f.st = READY;
        f.file = nullptr;
        f.pdl = 0;
    }
    g.live = n;
    g.at_sync = 0;
    for (int w = 0; w * 32 < n; w++) g.at_shfl[w] = 0;
    for (;;) {
        /* each ready fiber runs until it finishes or waits at a barrier */
        for (int j = 0; j < n; j++) {
            const int i = rev ? n - 1 - j : j;
            if (g.fibers[i].st == READY) enter(i);
        }
        if (!g.live) return;
        if (!release(n)) deadlock(n);
    }
}

void wait_at(state s, const char *file, int line) {
    fiber &f = g.fibers[g.cur];
    f.st = s;
    f.file = file;
    f.line = line;
    if (s == AT_SYNC) g.at_sync++;
    else g.at_shfl[g.cur / 32]++;
    void *sync = s == AT_SYNC ? (void *)&g.block_sync : (void *)&g.warp_sync[g.cur / 32];
    TSAN(__tsan_release(sync));
    yield();
    TSAN(__tsan_acquire(sync));
    (void)sync;
}

/* g.cur: the running fiber; FREE_RUN while a barrier-free kernel runs */
const int FREE_RUN = -2;

[[noreturn]] void outside(const char *what, const char *file, int line) {
    if (g.cur == FREE_RUN)
        die("%s at %s:%d in a kernel that tests/emu/cu2cpp.py found barrier-free (launched "
            "with vae_emu_launch_free): its analysis missed a call path",
            what, file, line);
    die("%s at %s:%d outside a kernel", what, file, line);
}

} // namespace

void vae_emu_syncthreads(const char *file, int line) {
    if (g.cur < 0) outside("__syncthreads", file, line);
    wait_at(AT_SYNC, file, line);
}

uint64_t vae_emu_shfl_xor(const char *file, int line, unsigned mask, uint64_t bits,
                          int lane_mask, int width) {
    if (g.cur < 0) outside("__shfl_xor_sync", file, line);
    if (mask != 0xffffffffu || width != 32)
        die("__shfl_xor_sync with mask %#x width %d at %s:%d: the emulator has full warps only",
            mask, width, file, line);
    fiber &f = g.fibers[g.cur];
    f.slot = bits;
    f.lane_mask = (unsigned)lane_mask;
    wait_at(AT_SHFL, file, line);
    return g.fibers[g.cur].slot;
}

void vae_emu_pdl_entry(void) {
    if (g.cur == -1) die("VAE_PDL_ENTRY() outside a kernel");
    if (g.cur == FREE_RUN) g.free_pdl++;
    else g.fibers[g.cur].pdl++;
}

int (*vae_emu_launch_hook)(const vae_emu_launch_rec *rec) = nullptr;

void vae_emu_run(dim3 grid, dim3 block, size_t smem, cudaStream_t s, void (*body)(void *),
                 void *arg, size_t arg_size, const char *site, int free, int pdl) {
    const vae_emu_launch_rec rec = {{grid.x, grid.y, grid.z}, {block.x, block.y, block.z},
                                    smem, (void *)s, body, arg, arg_size, site, free, pdl};
    const int took = vae_emu_launch_hook ? vae_emu_launch_hook(&rec) : 0;
    if (took == 2) {
        std::lock_guard<std::mutex> l(g_launch);
        g_last = cudaErrorStreamCaptureInvalidated;
    }
    if (took) return;
    vae_emu_run_rec(&rec);
}

/* Block order. A GPU runs a grid's blocks in no promised order, so the
 * blocks do not run in index order here either: the k-th block run is
 * block (k step + nb/2) mod nb of the nb in the grid (x fastest, then y,
 * z), step the first of a few primes that does not divide nb (so every
 * block runs once), which scatters neighbours apart and starts mid-grid. A
 * kernel whose result depends on the order its blocks run in (two blocks
 * writing one place; a block reading what another writes in the same
 * launch; a "last block" taken to be the highest index) then shows it
 * against the reference. VAE_EMU_BLOCK_ORDER=index runs them in index
 * order (for debugging). */
static unsigned long long block_step(unsigned long long nb) {
    static const int in_order = [] {
        const char *e = getenv("VAE_EMU_BLOCK_ORDER");
        return e && strcmp(e, "index") == 0;
    }();
    if (in_order || nb < 3) return 1;
    static const unsigned long long primes[] = {7919, 104729, 1299709, 15485863};
    for (unsigned long long p : primes)
        if (nb % p && p % nb > 1) return p % nb; /* p prime: coprime to nb */
    return 1;
}

/* The launch's configuration within CUDA's limits; else a note, the last
 * error cudaErrorInvalidConfiguration and 0. Caller holds g_launch. */
static bool launch_valid(const vae_emu_launch_rec *rec) {
    const unsigned *gr = rec->grid, *bl = rec->block;
    const unsigned long long nt = (unsigned long long)bl[0] * bl[1] * bl[2];
    if (nt == 0 || nt > 1024 || bl[2] > 64 || gr[0] == 0 || gr[1] == 0 || gr[2] == 0 ||
        gr[0] > 2147483647u || gr[1] > 65535 || gr[2] > 65535 || rec->smem > 48 * 1024) {
        fprintf(stderr, "cuda emulator: invalid launch at %s: grid (%u,%u,%u) block (%u,%u,%u)\n",
                rec->site, gr[0], gr[1], gr[2], bl[0], bl[1], bl[2]);
        g_last = cudaErrorInvalidConfiguration;
        return false;
    }
    return true;
}

int vae_emu_launch_check(const vae_emu_launch_rec *rec) {
    std::lock_guard<std::mutex> l(g_launch);
    return launch_valid(rec) ? 0 : -1;
}

int vae_emu_take_launch_error(void) {
    std::lock_guard<std::mutex> l(g_launch);
    cudaError_t e = g_last;
    g_last = cudaSuccess;
    return (int)e;
}

/* A kernel launched by vae_launch whose threads did not each pass its
 * VAE_PDL_ENTRY() once: on a GPU with $VAE_CUDA_PDL=1 it could read its
 * inputs before the kernel that writes them has finished (common.cuh). */
[[noreturn]] static void pdl_missed(const vae_emu_launch_rec *rec, uint3 t, int passes) {
    (void)rec; /* die() names the launch site and the block */
    die("thread (%u,%u,%u) passed VAE_PDL_ENTRY() %d times, not once; every kernel launched "
        "with vae_launch (src/kernels/common.cuh) must begin with it", t.x, t.y, t.z, passes);
}

void vae_emu_run_rec(const vae_emu_launch_rec *rec) {
    const dim3 grid(rec->grid[0], rec->grid[1], rec->grid[2]);
    const dim3 block(rec->block[0], rec->block[1], rec->block[2]);
    void (*body)(void *) = rec->body;
    void *arg = rec->arg;
    const char *site = rec->site;
    int free = rec->free;
    std::lock_guard<std::mutex> l(g_launch);
    if (!launch_valid(rec)) return;
    const unsigned long long nt = (unsigned long long)block.x * block.y * block.z;
    const int n = (int)nt;
    ensure_fibers(n);
#ifdef VAE_EMU_TSAN
    free = 0; /* every thread a fiber, so that TSan sees them apart */
    g.sched_tsan = __tsan_get_current_fiber();
    __tsan_release(&g.launch_in);
#endif
    g.body = body;
    g.arg = arg;
    g.site = site;
    blockDim = block;
    gridDim = grid;
    for (int i = 0; i < n; i++)
        g.fibers[i].tid = {i % block.x, (i / block.x) % block.y, i / (block.x * block.y)};
    const unsigned long long nb = (unsigned long long)grid.x * grid.y * grid.z;
    const unsigned long long step = block_step(nb);
    unsigned long long b = 0; /* the block run k-th: k step + nb/2 mod nb (header) */
    if (step != 1) b = nb / 2;
    for (unsigned long long k = 0; k < nb; k++, b = (b + step) % nb) {
        blockIdx = {(unsigned)(b % grid.x), (unsigned)((b / grid.x) % grid.y),
                    (unsigned)(b / ((unsigned long long)grid.x * grid.y))};
        /* every other block runs its threads from the last to the first, so
         * that two threads' accesses with no barrier between them (a race)
         * happen in both orders within a launch and a wrong value shows
         * even without the ThreadSanitizer build */
        const bool rev = k & 1;
        if (!free) {
            run_block(n, rev);
            g.block_no++;
            for (int i = 0; rec->pdl && i < n; i++)
                if (g.fibers[i].pdl != 1) pdl_missed(rec, g.fibers[i].tid, g.fibers[i].pdl);
            continue;
        }
        g.cur = FREE_RUN;
        for (int j = 0; j < n; j++) {
            threadIdx = g.fibers[rev ? n - 1 - j : j].tid;
            g.free_pdl = 0;
            body(arg);
            if (rec->pdl && g.free_pdl != 1) pdl_missed(rec, threadIdx, g.free_pdl);
        }
        g.cur = -1;
    }
    TSAN(__tsan_acquire(&g.block_done[(g.block_no + 1) % 2]));
    g.site = "";
}


/* Bump allocation inside the module (ABI.md, "Memory").
 *
 * The heap starts at the linker's __heap_base and grows linear memory on demand, up to
 * SF_HEAP_CAP_BYTES: a fixed cap so that a kernel can never ask the host for more, whatever
 * sizes it is given. memory.grow fails (returns -1) when the host's limit would be passed;
 * sf_alloc then returns 0 and the model entries report SF_NO_MEMORY.
 */
#include "sandflower.h"

extern unsigned char __heap_base;

/* 0 until the first allocation: a global cannot be initialised from __heap_base's address. */
static uintptr_t heap_top;
/* Highest heap_top ever reached: memory above it is fresh from memory.grow, already zero. */
static uintptr_t heap_high;

static uintptr_t heap_start(void) { return ((uintptr_t)&__heap_base + 15u) & ~(uintptr_t)15u; }

void *sf__alloc(uint64_t nbytes) {
    uintptr_t start = heap_start();
    if (heap_top == 0) heap_top = start;
    if (heap_high == 0) heap_high = start;
    /* At least 16 bytes, so that two allocations never share an address. */
    uint64_t size = nbytes < 16u ? 16u : (nbytes + 15u) & ~(uint64_t)15u;
    uint64_t used = (uint64_t)(heap_top - start);
    if (size > (uint64_t)SF_HEAP_CAP_BYTES - used) return NULL;
    uint64_t end = (uint64_t)heap_top + size;
    uint64_t have = (uint64_t)__builtin_wasm_memory_size(0) * 65536u;
    if (end > have) {
        uint64_t pages = (end - have + 65535u) / 65536u;
        if (__builtin_wasm_memory_grow(0, (size_t)pages) == (size_t)-1) return NULL;
    }
    unsigned char *ptr = (unsigned char *)heap_top;
    if (heap_top < heap_high) {
        uint64_t dirty = (uint64_t)heap_high - heap_top;
        __builtin_memset(ptr, 0, (size_t)(dirty < size ? dirty : size));
    }
    heap_top = (uintptr_t)end;
    if (heap_top > heap_high) heap_high = heap_top;
    return ptr;
}

uintptr_t sf__heap_mark(void) { return heap_top; }

void sf__heap_release(uintptr_t mark) { heap_top = mark; }

int32_t sf_abi_version(void) { return SF_ABI_VERSION; }

int32_t sf_alloc(int32_t nbytes) {
    if (nbytes < 0) return 0;
    return (int32_t)(uintptr_t)sf__alloc((uint64_t)nbytes);
}

void sf_heap_reset(void) { heap_top = heap_start(); }

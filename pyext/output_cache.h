/* A NumPy memory handler (NEP 49) that keeps freed blocks of 128 KiB or more for reuse.
 *
 * cnncore allocates its kernels' outputs through it (pyext/output_cache.pyx). A large array from
 * malloc is a fresh mapping, and each of its pages faults on first touch; handed back when freed,
 * the next step's outputs fault again. Kept here instead, a block of the same size is handed out
 * again with its pages already mapped. At most `limit` bytes are kept (the oldest blocks go first),
 * in at most CNNCORE_CACHE_SLOTS blocks; a block is only reused for a request of exactly its size.
 *
 * Blocks in use are plain malloc blocks: realloc is the C library's, and a block the cache does not
 * keep is freed with free(). The cache's state is guarded by a PyThread lock, which does not need
 * the GIL: NumPy may free an array's data from any thread.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include "Python.h"
#include "pythread.h"

#define CNNCORE_CACHE_SLOTS 128
#define CNNCORE_CACHE_MIN_BYTES ((size_t)1 << 17)
#define CNNCORE_HUGE_PAGE_BYTES ((size_t)1 << 22)   /* NumPy's own threshold for MADV_HUGEPAGE */

typedef struct {
    void *ptr;
    size_t size;
} cnncore_block;

static struct {
    PyThread_type_lock lock;
    size_t limit, held;
    int count;
    cnncore_block blocks[CNNCORE_CACHE_SLOTS];   /* oldest first */
} cnncore_cache;

/* A block of exactly size bytes from the cache (the newest such), or NULL. */
static void *cnncore_cache_take(size_t size)
{
    void *ptr = NULL;
    int i;
    if (size < CNNCORE_CACHE_MIN_BYTES || cnncore_cache.lock == NULL)
        return NULL;
    PyThread_acquire_lock(cnncore_cache.lock, WAIT_LOCK);
    for (i = cnncore_cache.count - 1; i >= 0; i--) {
        if (cnncore_cache.blocks[i].size == size) {
            ptr = cnncore_cache.blocks[i].ptr;
            cnncore_cache.held -= size;
            memmove(&cnncore_cache.blocks[i], &cnncore_cache.blocks[i + 1],
                    (size_t)(cnncore_cache.count - 1 - i) * sizeof(cnncore_block));
            cnncore_cache.count--;
            break;
        }
    }
    PyThread_release_lock(cnncore_cache.lock);
    return ptr;
}

/* Drop the oldest blocks until `room` more bytes fit, and a free slot when need_slot (lock held):
 * their pointers go to dropped, to be freed after the lock is released. Returns how many. */
static int cnncore_cache_make_room(size_t room, int need_slot, void **dropped)
{
    int n = 0, i;
    while (cnncore_cache.count > 0
           && (cnncore_cache.held + room > cnncore_cache.limit
               || (need_slot && cnncore_cache.count == CNNCORE_CACHE_SLOTS))) {
        dropped[n++] = cnncore_cache.blocks[0].ptr;
        cnncore_cache.held -= cnncore_cache.blocks[0].size;
        for (i = 1; i < cnncore_cache.count; i++)
            cnncore_cache.blocks[i - 1] = cnncore_cache.blocks[i];
        cnncore_cache.count--;
    }
    return n;
}

/* Keep ptr (size bytes) for reuse; 0 when it is not kept (the caller frees it). */
static int cnncore_cache_put(void *ptr, size_t size)
{
    void *dropped[CNNCORE_CACHE_SLOTS];
    int n, i, kept = 0;
    if (size < CNNCORE_CACHE_MIN_BYTES || cnncore_cache.lock == NULL)
        return 0;
#if defined(__GLIBC__)
    if (malloc_usable_size(ptr) < size)   /* never hand out a block shorter than its label */
        return 0;
#endif
    PyThread_acquire_lock(cnncore_cache.lock, WAIT_LOCK);
    n = 0;
    if (size <= cnncore_cache.limit) {
        n = cnncore_cache_make_room(size, 1, dropped);
        cnncore_cache.blocks[cnncore_cache.count].ptr = ptr;
        cnncore_cache.blocks[cnncore_cache.count].size = size;
        cnncore_cache.count++;
        cnncore_cache.held += size;
        kept = 1;
    }
    PyThread_release_lock(cnncore_cache.lock);
    for (i = 0; i < n; i++)
        free(dropped[i]);
    return kept;
}

/* Set the limit in bytes (0: keep nothing), freeing the blocks over it. */
static void cnncore_cache_set_limit(size_t limit)
{
    void *dropped[CNNCORE_CACHE_SLOTS];
    int n, i;
    if (cnncore_cache.lock == NULL)
        return;
    PyThread_acquire_lock(cnncore_cache.lock, WAIT_LOCK);
    cnncore_cache.limit = limit;
    n = cnncore_cache_make_room(0, 0, dropped);
    PyThread_release_lock(cnncore_cache.lock);
    for (i = 0; i < n; i++)
        free(dropped[i]);
}

/* The limit and the bytes kept now, read together (0 and 0 without a lock). */
static void cnncore_cache_state(size_t *limit, size_t *held)
{
    *limit = *held = 0;
    if (cnncore_cache.lock == NULL)
        return;
    PyThread_acquire_lock(cnncore_cache.lock, WAIT_LOCK);
    *limit = cnncore_cache.limit;
    *held = cnncore_cache.held;
    PyThread_release_lock(cnncore_cache.lock);
}

static void cnncore_advise_huge_pages(void *ptr, size_t size)
{
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    /* As NumPy's default handler does: from the first page boundary on. */
    if (ptr != NULL && size >= CNNCORE_HUGE_PAGE_BYTES) {
        size_t offset = (4096 - (uintptr_t)ptr % 4096) % 4096;
        madvise((char *)ptr + offset, size - offset, MADV_HUGEPAGE);
    }
#else
    (void)ptr;
    (void)size;
#endif
}

/* The handler's four functions (ctx unused). */
static void *cnncore_cache_malloc(void *ctx, size_t size)
{
    void *ptr = cnncore_cache_take(size);
    (void)ctx;
    if (ptr == NULL) {
        ptr = malloc(size ? size : 1);
        cnncore_advise_huge_pages(ptr, size);
    }
    return ptr;
}

static void *cnncore_cache_calloc(void *ctx, size_t nelem, size_t elsize)
{
    void *ptr;
    size_t size;
    (void)ctx;
    if (elsize != 0 && nelem > SIZE_MAX / elsize)
        return NULL;
    size = nelem * elsize;
    ptr = cnncore_cache_take(size);
    if (ptr != NULL) {
        memset(ptr, 0, size);
        return ptr;
    }
    return calloc(size ? nelem : 1, size ? elsize : 1);
}

static void *cnncore_cache_realloc(void *ctx, void *ptr, size_t new_size)
{
    (void)ctx;
    return realloc(ptr, new_size ? new_size : 1);
}

static void cnncore_cache_free(void *ctx, void *ptr, size_t size)
{
    (void)ctx;
    if (ptr != NULL && !cnncore_cache_put(ptr, size))
        free(ptr);
}

/* 0 on success, -1 (with a Python error set) when the lock cannot be made. */
static int cnncore_cache_init(size_t limit)
{
    cnncore_cache.lock = PyThread_allocate_lock();
    if (cnncore_cache.lock == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    cnncore_cache.limit = limit;
    return 0;
}

/* In a child after fork(): a lock another thread held at the fork stays held there, so the child
 * gets a new one (without one, the cache is off in the child). */
static int cnncore_cache_after_fork(void)
{
    cnncore_cache.lock = PyThread_allocate_lock();
    return cnncore_cache.lock == NULL ? -1 : 0;
}

/* Needs numpy/arrayobject.h included before this header. */
static PyDataMem_Handler cnncore_cache_handler = {
    "cnncore_output_cache",
    1,
    {NULL, cnncore_cache_malloc, cnncore_cache_calloc, cnncore_cache_realloc, cnncore_cache_free}
};

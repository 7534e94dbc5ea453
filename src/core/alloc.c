/* The library's allocator (64-byte aligned, with test-only fault injection),
 * overflow-checked size arithmetic and bump arenas. */
#include "trimodal/core.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define TM_ALIGN 64

static atomic_long alloc_count;
static atomic_long alloc_fail_at; /* 0: never fail */

long tm_alloc_fail_after(long n)
{
    long made = atomic_exchange(&alloc_count, 0);
    atomic_store(&alloc_fail_at, n);
    return made;
}

int tm_mul_size(size_t a, size_t b, size_t *out)
{
    if (a && b > SIZE_MAX / a) return 0;
    *out = a * b;
    return 1;
}

int tm_add_size(size_t a, size_t b, size_t *out)
{
    if (b > SIZE_MAX - a) return 0;
    *out = a + b;
    return 1;
}

void *tm_alloc(size_t bytes)
{
    long n = atomic_fetch_add(&alloc_count, 1) + 1;
    long fail = atomic_load(&alloc_fail_at);
    if (fail > 0 && n >= fail) {
        tm_fail(TM_ERR_NOMEM, "allocation of %zu bytes failed (fault injection)", bytes);
        return NULL;
    }
    size_t rounded;
    if (!tm_add_size(bytes ? bytes : 1, TM_ALIGN - 1, &rounded)) {
        tm_fail(TM_ERR_NOMEM, "allocation of %zu bytes overflows", bytes);
        return NULL;
    }
    rounded &= ~(size_t)(TM_ALIGN - 1);
    void *p = aligned_alloc(TM_ALIGN, rounded);
    if (!p) tm_fail(TM_ERR_NOMEM, "out of memory allocating %zu bytes", bytes);
    return p;
}

void *tm_calloc(size_t n, size_t size)
{
    size_t bytes;
    if (!tm_mul_size(n, size, &bytes)) {
        tm_fail(TM_ERR_NOMEM, "allocation of %zu x %zu bytes overflows", n, size);
        return NULL;
    }
    void *p = tm_alloc(bytes);
    if (p) memset(p, 0, bytes);
    return p;
}

void tm_free(void *p) { free(p); }

/* ------------------------------------------------------------- arenas */

typedef struct arena_block {
    struct arena_block *next;
    size_t size, used;
    unsigned char *data;
} arena_block;

struct tm_arena {
    size_t block_bytes;
    arena_block *head; /* the current block; older ones follow */
    size_t total_used;
};

static arena_block *block_new(size_t size)
{
    arena_block *b = tm_alloc(sizeof *b);
    if (!b) return NULL;
    b->data = tm_alloc(size);
    if (!b->data) {
        tm_free(b);
        return NULL;
    }
    b->next = NULL;
    b->size = size;
    b->used = 0;
    return b;
}

tm_arena *tm_arena_new(size_t block_bytes)
{
    tm_arena *a = tm_alloc(sizeof *a);
    if (!a) return NULL;
    a->block_bytes = block_bytes ? block_bytes : (size_t)1 << 20;
    a->head = NULL;
    a->total_used = 0;
    return a;
}

void *tm_arena_alloc(tm_arena *a, size_t bytes)
{
    size_t need;
    if (!tm_add_size(bytes, TM_ALIGN - 1, &need)) {
        tm_fail(TM_ERR_NOMEM, "arena allocation of %zu bytes overflows", bytes);
        return NULL;
    }
    need &= ~(size_t)(TM_ALIGN - 1);
    arena_block *b = a->head;
    if (!b || b->size - b->used < need) {
        size_t size = need > a->block_bytes ? need : a->block_bytes;
        arena_block *nb = block_new(size);
        if (!nb) return NULL;
        nb->next = b;
        a->head = nb;
        b = nb;
    }
    void *p = b->data + b->used;
    b->used += need;
    a->total_used += need;
    return p;
}

void tm_arena_reset(tm_arena *a)
{
    if (!a || !a->head) return;
    /* keep the oldest block (the last in the list), free the rest */
    arena_block *b = a->head;
    while (b->next) {
        arena_block *next = b->next;
        tm_free(b->data);
        tm_free(b);
        b = next;
    }
    b->used = 0;
    a->head = b;
    a->total_used = 0;
}

size_t tm_arena_used(const tm_arena *a) { return a ? a->total_used : 0; }

void tm_arena_free(tm_arena *a)
{
    if (!a) return;
    arena_block *b = a->head;
    while (b) {
        arena_block *next = b->next;
        tm_free(b->data);
        tm_free(b);
        b = next;
    }
    tm_free(a);
}

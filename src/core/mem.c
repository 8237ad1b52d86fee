/*
 * mem.c - aborting allocators, the request arena and capped buffers (see mem.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"

static _Noreturn void oom(size_t n)
{
    fprintf(stderr, "{\"level\":\"fatal\",\"msg\":\"out of memory allocating %zu bytes\"}\n", n);
    abort();
}

void *ts_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        oom(n);
    return p;
}

void *ts_xcalloc(size_t count, size_t n)
{
    void *p = calloc(count ? count : 1, n ? n : 1);
    if (!p)
        oom(count * n);
    return p;
}

void *ts_xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        oom(n);
    return q;
}

char *ts_xstrdup(const char *s)
{
    return ts_xstrndup(s, strlen(s));
}

char *ts_xstrndup(const char *s, size_t n)
{
    char *p = ts_xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *ts_xasprintf(const char *fmt, ...)
{
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        oom(0);
    char *p = ts_xmalloc((size_t)n + 1);
    vsnprintf(p, (size_t)n + 1, fmt, ap2);
    va_end(ap2);
    return p;
}

void ts_wipe(void *p, size_t n)
{
    if (p && n)
        explicit_bzero(p, n);
}

/* ---- arena ---- */

struct ts_arena_block {
    struct ts_arena_block *next; /* older block */
    size_t size;                 /* usable bytes in data[] */
    size_t used;                 /* bytes handed out */
    _Alignas(max_align_t) unsigned char data[];
};

struct ts_arena_defer_entry {
    struct ts_arena_defer_entry *next;
    ts_arena_cleanup_fn *fn;
    void *p;
};

#define ARENA_ALIGN (sizeof(max_align_t))

void ts_arena_init(struct ts_arena *a, size_t block_size)
{
    a->head = NULL;
    a->defers = NULL;
    a->block_size = block_size ? block_size : 4096;
    a->total = 0;
}

static void run_defers(struct ts_arena *a)
{
    /* Entries live in the arena's own blocks, so walk them before freeing anything. */
    while (a->defers) {
        struct ts_arena_defer_entry *d = a->defers;
        a->defers = d->next;
        d->fn(d->p);
    }
}

void ts_arena_reset(struct ts_arena *a)
{
    run_defers(a);
    /* Keep one block of the default size warm (most requests fit in it); oversized blocks
     * made for one big allocation are not worth keeping. */
    struct ts_arena_block *b = a->head, *keep = NULL;
    while (b) {
        struct ts_arena_block *next = b->next;
        if (!keep && b->size == a->block_size)
            keep = b;
        else
            free(b);
        b = next;
    }
    a->head = keep;
    a->total = 0;
    if (keep) {
        keep->used = 0;
        keep->next = NULL;
        a->total = keep->size;
    }
}

void ts_arena_free(struct ts_arena *a)
{
    run_defers(a);
    struct ts_arena_block *b = a->head;
    while (b) {
        struct ts_arena_block *next = b->next;
        free(b);
        b = next;
    }
    a->head = NULL;
    a->total = 0;
}

void *ts_arena_alloc(struct ts_arena *a, size_t n)
{
    size_t need = (n + ARENA_ALIGN - 1) & ~(ARENA_ALIGN - 1);
    if (need < n)
        oom(n);
    struct ts_arena_block *b = a->head;
    if (!b || b->size - b->used < need) {
        size_t size = a->block_size;
        if (size < need)
            size = need;
        b = ts_xmalloc(sizeof(*b) + size);
        b->size = size;
        b->used = 0;
        /* Grow behind the current head when the request is oversized, so the
         * head's free space stays usable for the small allocations that follow. */
        if (a->head && need > a->block_size) {
            b->next = a->head->next;
            a->head->next = b;
        } else {
            b->next = a->head;
            a->head = b;
        }
        a->total += size;
    }
    void *p = b->data + b->used;
    b->used += need;
    return p;
}

void *ts_arena_calloc(struct ts_arena *a, size_t n)
{
    void *p = ts_arena_alloc(a, n);
    memset(p, 0, n);
    return p;
}

char *ts_arena_strndup(struct ts_arena *a, const char *s, size_t n)
{
    char *p = ts_arena_alloc(a, n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *ts_arena_strdup(struct ts_arena *a, const char *s)
{
    return ts_arena_strndup(a, s, strlen(s));
}

void *ts_arena_memdup(struct ts_arena *a, const void *p, size_t n)
{
    void *q = ts_arena_alloc(a, n);
    memcpy(q, p, n);
    return q;
}

char *ts_arena_vsprintf(struct ts_arena *a, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    if (n < 0)
        oom(0);
    char *p = ts_arena_alloc(a, (size_t)n + 1);
    vsnprintf(p, (size_t)n + 1, fmt, ap2);
    va_end(ap2);
    return p;
}

char *ts_arena_sprintf(struct ts_arena *a, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *p = ts_arena_vsprintf(a, fmt, ap);
    va_end(ap);
    return p;
}

void ts_arena_defer(struct ts_arena *a, ts_arena_cleanup_fn *fn, void *p)
{
    struct ts_arena_defer_entry *d = ts_arena_alloc(a, sizeof(*d));
    d->fn = fn;
    d->p = p;
    d->next = a->defers;
    a->defers = d;
}

/* ---- capped buffer ---- */

void ts_buf_init(struct ts_buf *b, size_t max)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max;
}

void ts_buf_free(struct ts_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

void ts_buf_clear(struct ts_buf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

enum ts_rc ts_buf_append(struct ts_buf *b, const void *p, size_t n)
{
    if (n > b->max || b->len > b->max - n)
        return TS_E_TOO_BIG;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        if (cap > b->max + 1)
            cap = b->max + 1;
        b->data = ts_xrealloc(b->data, cap);
        b->cap = cap;
    }
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return TS_OK;
}

enum ts_rc ts_buf_append_str(struct ts_buf *b, const char *s)
{
    return ts_buf_append(b, s, strlen(s));
}

enum ts_rc ts_buf_appendf(struct ts_buf *b, const char *fmt, ...)
{
    char small[256];
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    enum ts_rc rc;
    if (n < 0) {
        rc = TS_E_INTERNAL;
    } else if ((size_t)n < sizeof(small)) {
        rc = ts_buf_append(b, small, (size_t)n);
    } else {
        char *big = ts_xmalloc((size_t)n + 1);
        vsnprintf(big, (size_t)n + 1, fmt, ap2);
        rc = ts_buf_append(b, big, (size_t)n);
        free(big);
    }
    va_end(ap2);
    return rc;
}

enum ts_rc ts_buf_append_json_escaped(struct ts_buf *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    const char *run = s;
    for (const char *p = s;; p++) {
        unsigned char c = (unsigned char)*p;
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        enum ts_rc rc = ts_buf_append(b, run, (size_t)(p - run));
        if (rc || c == '\0')
            return rc;
        char esc[6] = {'\\', 0};
        size_t n = 2;
        switch (c) {
        case '"':
            esc[1] = '"';
            break;
        case '\\':
            esc[1] = '\\';
            break;
        case '\n':
            esc[1] = 'n';
            break;
        case '\r':
            esc[1] = 'r';
            break;
        case '\t':
            esc[1] = 't';
            break;
        default:
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            n = 6;
        }
        rc = ts_buf_append(b, esc, n);
        if (rc)
            return rc;
        run = p + 1;
    }
}

char *ts_buf_take(struct ts_buf *b, size_t *len)
{
    char *p = b->data;
    if (len)
        *len = b->len;
    if (!p)
        p = ts_xstrdup("");
    b->data = NULL;
    b->len = b->cap = 0;
    return p;
}

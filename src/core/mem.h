/*
 * mem.h - allocation: aborting allocators, the per-request arena, capped buffers.
 *
 * Out-of-memory aborts the process (ts_xmalloc and friends): a server that cannot
 * allocate a few bytes cannot answer correctly anyway, and handling OOM at every
 * call site hides real bugs. Sizes chosen by a client never reach ts_xmalloc
 * directly: they go through a capped struct ts_buf that answers TS_E_TOO_BIG.
 *
 * The arena (struct ts_arena) owns everything a request allocates; nothing in it is
 * freed one by one. Non-memory cleanups (statement resets, key frees, wiping
 * secrets) are registered with ts_arena_defer and run, last first, on reset.
 */
#ifndef TS_CORE_MEM_H
#define TS_CORE_MEM_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "rc.h"

void *ts_xmalloc(size_t n);
void *ts_xcalloc(size_t count, size_t n);
void *ts_xrealloc(void *p, size_t n);
char *ts_xstrdup(const char *s);
char *ts_xstrndup(const char *s, size_t n);
/* Printf into a fresh heap string; the caller frees it. */
char *ts_xasprintf(const char *fmt, ...) TS_PRINTF(1, 2);

/* Overwrites n bytes at p in a way the compiler may not drop. */
void ts_wipe(void *p, size_t n);

struct ts_arena_block;
struct ts_arena_defer_entry;

struct ts_arena {
    struct ts_arena_block *head;         /* newest block; allocations come from it */
    struct ts_arena_defer_entry *defers; /* cleanups, newest first */
    size_t block_size;                   /* default size of a new block, bytes */
    size_t total;                        /* bytes held in all blocks */
};

/* Prepares an empty arena; no memory is taken until the first allocation. */
void ts_arena_init(struct ts_arena *a, size_t block_size);
/* Runs the deferred cleanups, then frees every block but one of the default size (kept warm). */
void ts_arena_reset(struct ts_arena *a);
/* Runs the deferred cleanups and frees every block. The arena may be reused after init. */
void ts_arena_free(struct ts_arena *a);

/* Returns n bytes aligned for any type; never NULL (aborts on OOM). */
void *ts_arena_alloc(struct ts_arena *a, size_t n);
void *ts_arena_calloc(struct ts_arena *a, size_t n);
char *ts_arena_strdup(struct ts_arena *a, const char *s);
char *ts_arena_strndup(struct ts_arena *a, const char *s, size_t n);
void *ts_arena_memdup(struct ts_arena *a, const void *p, size_t n);
char *ts_arena_sprintf(struct ts_arena *a, const char *fmt, ...) TS_PRINTF(2, 3);
char *ts_arena_vsprintf(struct ts_arena *a, const char *fmt, va_list ap) TS_PRINTF(2, 0);

typedef void ts_arena_cleanup_fn(void *p);
/* Registers fn(p) to run when the arena is reset or freed. */
void ts_arena_defer(struct ts_arena *a, ts_arena_cleanup_fn *fn, void *p);

/* A growable byte buffer with a hard cap (curl's dynbuf). Always NUL-terminated. */
struct ts_buf {
    char *data; /* NULL until the first append */
    size_t len; /* bytes used, excluding the terminating NUL */
    size_t cap; /* bytes allocated */
    size_t max; /* appends that would exceed this many bytes fail with TS_E_TOO_BIG */
};

void ts_buf_init(struct ts_buf *b, size_t max);
void ts_buf_free(struct ts_buf *b);
void ts_buf_clear(struct ts_buf *b);
TS_NODISCARD enum ts_rc ts_buf_append(struct ts_buf *b, const void *p, size_t n);
TS_NODISCARD enum ts_rc ts_buf_appendf(struct ts_buf *b, const char *fmt, ...) TS_PRINTF(2, 3);
TS_NODISCARD enum ts_rc ts_buf_append_str(struct ts_buf *b, const char *s);
/* Appends s as the inside of a JSON string (quotes not included), escaping as RFC 8259 says. */
TS_NODISCARD enum ts_rc ts_buf_append_json_escaped(struct ts_buf *b, const char *s);
/* Takes the data out of the buffer (the caller frees it); the buffer is left empty. */
char *ts_buf_take(struct ts_buf *b, size_t *len);

#endif

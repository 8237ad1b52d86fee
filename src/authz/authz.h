/*
 * authz.h - the predicate language of authorization (issue 6): a small, total, statically
 * checked expression language over the caller, the token claims, the document acted on and
 * the request, with a bounded number of document fetches per decision.
 *
 * A predicate is compiled once (when a role is saved): syntax errors, type errors that the
 * literals and function results reveal, unknown names, wrong arities and over-large sources
 * are refused then, with a line and a column. A compiled predicate is immutable; any number
 * of threads may evaluate it at once.
 *
 * Evaluation answers TS_OK with true or false, or an error code: callers must treat every
 * error as a denial (and log the trace's reason). Evaluation allocates only from the
 * caller's arena, never loops beyond the size of its inputs, recurses at most max_depth deep,
 * and fetches at most max_fetches distinct documents per decision, through the caller's
 * callback; repeated fetches of the same arguments are answered from a per-decision cache.
 *
 * What this module must never do: I/O of its own, read the clock (now is passed in), turn an
 * evaluation error into "allow", or keep a pointer into an evaluation's inputs after it
 * returns. Depends on core and jansson only. The language: docs/internals/authz.md.
 */
#ifndef TS_AUTHZ_H
#define TS_AUTHZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "core/core.h"

/* Compile-time and evaluation bounds. Zero fields take the defaults; larger values are
 * clamped to the hard maxima (TS_PRED_HARD_*), which keep evaluation's recursion small. */
struct ts_pred_limits {
    uint32_t max_depth;   /* deepest nesting of the syntax tree; default 32 */
    uint32_t max_source;  /* bytes of source text; default 4096 */
    uint32_t max_nodes;   /* nodes of the syntax tree; default 256 */
    uint32_t max_fetches; /* distinct get/exists/lookup fetches per decision; default 4 */
};

#define TS_PRED_DEFAULT_DEPTH 32
#define TS_PRED_DEFAULT_SOURCE 4096
#define TS_PRED_DEFAULT_NODES 256
#define TS_PRED_DEFAULT_FETCHES 4
#define TS_PRED_HARD_DEPTH 128
#define TS_PRED_HARD_SOURCE 65536
#define TS_PRED_HARD_NODES 4096
#define TS_PRED_HARD_FETCHES 64

/* Where and why compilation failed. line and column count from 1; column counts bytes. */
struct ts_pred_error {
    uint32_t line;
    uint32_t column;
    char message[128]; /* "unknown function 'foo'", "'<' needs numbers or strings", ... */
};

struct ts_pred;

/* Compiles text (NUL-terminated) under lim (NULL: the defaults). TS_OK with *out, which the
 * caller frees with ts_pred_free; TS_E_PARSE with err filled (when err is not NULL) and *out
 * untouched for a syntax error, a compile-time type error or a source over the limits. */
TS_NODISCARD enum ts_rc ts_pred_compile(const char *text, const struct ts_pred_limits *lim,
                                        struct ts_pred **out, struct ts_pred_error *err);
/* Frees a compiled predicate; NULL is ignored. */
void ts_pred_free(struct ts_pred *p);
/* The limits the predicate was compiled with (defaults filled in, clamped). */
const struct ts_pred_limits *ts_pred_limits_of(const struct ts_pred *p);

/* What a predicate reads, so that callers build only the inputs it needs. */
enum {
    TS_PRED_USES_IDENTITY = 1u << 0,
    TS_PRED_USES_CLAIMS = 1u << 1,
    TS_PRED_USES_RESOURCE = 1u << 2,
    TS_PRED_USES_OLD = 1u << 3,
    TS_PRED_USES_NEW = 1u << 4,
    TS_PRED_USES_REQUEST = 1u << 5,
    TS_PRED_USES_NOW = 1u << 6,
    TS_PRED_USES_FETCH = 1u << 7, /* get, exists or lookup */
};
unsigned ts_pred_uses(const struct ts_pred *p);

enum ts_pred_fetch {
    TS_PRED_FETCH_GET,    /* get(collection, id): the document, or NULL when there is none */
    TS_PRED_FETCH_EXISTS, /* exists(collection, id): any non-NULL value means "exists" */
    TS_PRED_FETCH_LOOKUP, /* lookup(collection, index, term): the first match, or NULL */
};

/* Reads from the store. term is NULL except for TS_PRED_FETCH_LOOKUP (where id_or_index is
 * the index name). On TS_OK *out is a new reference the evaluator takes (and decrefs when the
 * arena is reset) or NULL for "not found"; TS_E_NOT_FOUND also means "not found"; any other
 * code makes the evaluation fail with that code. Called on the evaluating thread. */
typedef enum ts_rc ts_pred_fetch_fn(void *cls, enum ts_pred_fetch kind, const char *collection,
                                    const char *id_or_index, const char *term, json_t **out);

struct ts_pred_cache_entry;

/* The fetches of one decision, shared by every predicate evaluated for it: zero it (or
 * ts_pred_cache_init) before the first evaluation, in memory that lives as long as the arena
 * given to the evaluations. Fields are private. */
struct ts_pred_cache {
    struct ts_pred_cache_entry *head; /* entries, in the arena */
    uint32_t fetches;                 /* distinct fetches made so far */
};

void ts_pred_cache_init(struct ts_pred_cache *c);

/* What a predicate sees. Every JSON root is borrowed for the evaluation and may be NULL (a
 * missing root: every path under it is missing). */
struct ts_pred_input {
    const json_t *identity;  /* identity: the caller's document and metadata */
    const json_t *claims;    /* claims: the access token's claims */
    const json_t *resource;  /* resource: the document acted on */
    const json_t *old_doc;   /* old: a write's document before */
    const json_t *new_doc;   /* new: a write's document after */
    const json_t *request;   /* request: method, path, ip, headers */
    int64_t now_s;           /* now: seconds since the epoch */
    ts_pred_fetch_fn *fetch; /* NULL: every fetch fails (TS_E_UNAVAILABLE) */
    void *fetch_cls;
    struct ts_pred_cache *cache; /* NULL: a cache for this evaluation alone */
};

/* Why an evaluation failed (or what it fetched). */
struct ts_pred_trace {
    enum ts_rc rc; /* the evaluation's answer */
    uint32_t line; /* where the failing expression starts; 0 when it succeeded */
    uint32_t column;
    uint32_t fetches; /* distinct fetches of the decision so far */
    char reason[96];  /* "type mismatch in '<'", "fetch limit (4) reached", ... */
};

/* Evaluates p. TS_OK with *result; otherwise *result is untouched and the code says why:
 * TS_E_INVALID for a runtime type error (a missing or null operand where a value is needed,
 * string against number...), TS_E_TOO_BIG for the fetch limit, or the fetch callback's code.
 * Callers deny on anything but TS_OK. Temporaries, cache entries and the fetched documents'
 * decrefs go to arena, which must outlive in->cache. trace may be NULL. */
TS_NODISCARD enum ts_rc ts_pred_eval(const struct ts_pred *p, const struct ts_pred_input *in,
                                     struct ts_arena *arena, bool *result,
                                     struct ts_pred_trace *trace);

#endif

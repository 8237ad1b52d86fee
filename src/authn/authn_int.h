/*
 * authn_int.h - private to src/authn: the verified-token cache.
 */
#ifndef TS_AUTHN_INT_H
#define TS_AUTHN_INT_H

#include "authn.h"

struct ts_tokencache;

/* A cache of at most max_entries verified tokens, keyed by the whole token. */
struct ts_tokencache *ts__tokencache_new(size_t max_entries);
void ts__tokencache_free(struct ts_tokencache *tc);
/* Finds token; true (and *out filled) only when present and not expired at now (seconds). */
bool ts__tokencache_get(struct ts_tokencache *tc, const char *token, size_t len, int64_t now,
                        struct ts_principal *out);
void ts__tokencache_put(struct ts_tokencache *tc, const char *token, size_t len,
                        const struct ts_principal *p);
/* Forgets everything (after a key was withdrawn). */
void ts__tokencache_clear(struct ts_tokencache *tc);
void ts__tokencache_stats(struct ts_tokencache *tc, struct ts_tokencache_stats *out);

#endif

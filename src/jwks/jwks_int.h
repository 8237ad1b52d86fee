/*
 * jwks_int.h - what the jwks files share: parsed key sets (jwks_set.c), the HTTP fetch
 * (jwks_fetch.c, the only file that knows libcurl) and the cache (jwks_cache.c).
 * Private to src/jwks/.
 */
#ifndef TS_JWKS_INT_H
#define TS_JWKS_INT_H

#include <stdatomic.h>

#include "jwks.h"

/* Algorithms index the per-JWK key table; EdDSA is the last one jose knows. */
#define TS__JWKS_ALG_SLOTS ((size_t)TS_JOSE_ALG_EDDSA + 1)

struct ts_jwks_key {
    _Atomic long refs;       /* one for the set that holds it, one per lookup answer */
    struct ts_jose_key *key; /* public, bound to one algorithm */
};

/* One usable JWK of a set: its kid and a parsed key for each algorithm it serves. */
struct ts__jwks_jwk {
    char *kid;                                      /* NULL when the JWK has none */
    struct ts_jwks_key *by_alg[TS__JWKS_ALG_SLOTS]; /* NULL where it does not serve alg */
};

/* An immutable parsed set; only the cache's lock guards who points at it. */
struct ts__jwks_set {
    size_t n; /* usable JWKs */
    struct ts__jwks_jwk *jwks;
};

/* True for the algorithms an external key may ever verify (RS*, PS*, ES256, ES384, EdDSA). */
bool ts__jwks_alg_usable(enum ts_jose_alg alg);

/*
 * Parses a JWKS document: a JSON object (duplicate members refused) with a "keys" array.
 * Every JWK that cannot serve is skipped and counted in *skipped. Returns NULL and writes the
 * reason into why when the document itself is unusable.
 */
struct ts__jwks_set *ts__jwks_set_parse(const char *body, size_t len, int64_t *skipped, char *why,
                                        size_t why_len);
/* Drops the set's references to its keys and frees it; NULL is ignored. */
void ts__jwks_set_free(struct ts__jwks_set *s);
/* The key for (alg, kid) as jwks.h's lookup defines it, borrowed from the set, or NULL. */
struct ts_jwks_key *ts__jwks_set_find(const struct ts__jwks_set *s, enum ts_jose_alg alg,
                                      const char *kid);

enum ts__jwks_outcome {
    TS__JWKS_GOT_SET,      /* 200 with a usable document */
    TS__JWKS_NOT_MODIFIED, /* 304 to a conditional request */
    TS__JWKS_FAILED,       /* anything else; why says what */
};

/* One fetch: the cache fills the inputs, ts__jwks_fetch the outputs. */
struct ts__jwks_fetch {
    const char *uri;  /* in */
    const char *etag; /* in: send If-None-Match with it; NULL for an unconditional GET */
    enum ts__jwks_outcome outcome;
    struct ts__jwks_set *set; /* GOT_SET: owned by the caller afterwards */
    char *new_etag;           /* the response's ETag (heap) or NULL */
    int64_t max_age_s;        /* Cache-Control max-age; 0 for no-cache/no-store; -1 absent */
    int64_t skipped;          /* JWKs skipped in the set */
    char why[256];            /* FAILED: the precise reason, for the log */
};

struct ts__jwks_fetcher;

/* An HTTP client for the fetcher thread (one reused libcurl handle, so connections to a
 * provider are kept alive). A fetch in progress gives up soon after *stop becomes true. */
struct ts__jwks_fetcher *ts__jwks_fetcher_new(const struct ts_jwks_options *opts,
                                              const _Atomic bool *stop);
void ts__jwks_fetcher_free(struct ts__jwks_fetcher *f);
/* Runs one GET to its end (timeout_ms at most). Blocking: the fetcher thread only. */
void ts__jwks_fetch(struct ts__jwks_fetcher *f, struct ts__jwks_fetch *job);

#endif

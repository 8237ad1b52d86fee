/*
 * jwks.h - a cache of JSON Web Key Sets (RFC 7517 §5) fetched over HTTPS, for verifying JWTs
 * signed by external identity providers (issue 5).
 *
 * One fetcher thread per cache does all HTTP, with libcurl; request threads only look keys up
 * and never wait: a lookup that needs the network answers TS_JWKS_PENDING and calls the
 * caller back when the fetch has ended. Concurrent lookups of one URL share one fetch; an
 * unknown kid forces at most one refetch per min_refetch_us per URL (Fauna's rule: requests
 * inside that window fail fast); a set whose refresh fails keeps being served for stale_max_us.
 *
 * What this module must never do: fetch on the caller's thread or hold its lock during HTTP;
 * hand out an HMAC key or any key for "none" (an external JWKS is public, so an HS* token
 * "signed" with it proves nothing, RFC 8725 §2.1/§3.1); let a JWK serve an algorithm other
 * than its own "alg" or one its key type does not fit; follow redirects; speak anything but
 * https (plain http only to a loopback host, for tests); log a token. Callers must never pass
 * a URL that came from a token ("jku", "x5u"): URLs come from configuration only, and each one
 * costs an entry and fetches.
 *
 * Depends on core, jose and libcurl (only here). Internals: docs/internals/jwks.md.
 */
#ifndef TS_JWKS_H
#define TS_JWKS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/core.h"
#include "jose/jose.h"

struct ts_jwks_options {
    int64_t refresh_us;     /* scheduled refresh when the response has no max-age; 1 h */
    int64_t min_refetch_us; /* an unconditional refetch (unknown kid, retry after a failure)
                             * starts at most this long after the previous fetch of the URL
                             * was requested or ended; 500 ms */
    int64_t idle_evict_us;  /* a URL no lookup used for this long is dropped; 1 h */
    int64_t max_age_min_us; /* Cache-Control: max-age is clamped to [min, max]: 1 min, 24 h; */
    int64_t max_age_max_us; /* min is also the retry delay of a failed scheduled refresh */
    int64_t stale_max_us;   /* a set is served this long after its last successful fetch
                             * (200 or 304) while fetches fail; 24 h */
    long timeout_ms;        /* whole fetch, connect included; 5000 */
    size_t max_body;        /* response body cap, bytes; 1 MiB */
    bool allow_http;        /* true (default): http:// allowed for 127.0.0.1, [::1] and
                             * localhost only; false: https:// everywhere */
};

/* The defaults above. */
struct ts_jwks_options ts_jwks_options_default(void);

/* Why uri cannot be fetched under opts (a static string), or NULL when it can: an absolute
 * http(s) URL of at most 2048 bytes with a host and no user info, https unless allowed above.
 * For validating configuration (AccessProviders) before the first lookup. */
const char *ts_jwks_uri_refusal(const struct ts_jwks_options *opts, const char *uri);

/*
 * OpenID Connect Discovery: GETs <issuer>/.well-known/openid-configuration (blocking, up to
 * timeout_ms: for start-up, never on a request thread), checks that the document names the
 * same issuer exactly, and returns its jwks_uri (heap) when ts_jwks_uri_refusal accepts it.
 * On failure *err is a heap message for the log.
 */
TS_NODISCARD enum ts_rc ts_jwks_discover(const struct ts_jwks_options *opts, const char *issuer,
                                         char **jwks_uri, char **err);

struct ts_jwks_cache;

/* Creates a cache and starts its fetcher thread. TS_E_INVALID for options that are not
 * positive or where max_age_min_us > max_age_max_us; TS_E_INTERNAL when no thread starts. */
TS_NODISCARD enum ts_rc ts_jwks_cache_new(const struct ts_jwks_options *opts,
                                          struct ts_jwks_cache **out);
/* Stops the fetcher (a fetch in progress is aborted), calls every notify still owed, from the
 * fetcher thread, before that thread ends, and frees the cache. Keys still referenced stay
 * valid until released. No lookup may run concurrently with or after this call. */
void ts_jwks_cache_free(struct ts_jwks_cache *c);

/* A verification key from a fetched set, bound to one algorithm. Reference-counted:
 * it stays valid after its set is replaced or evicted, until released. */
struct ts_jwks_key;

/* The jose key (public, bound to the algorithm it was looked up for); valid as long as the
 * reference. Safe to use from many threads at once. */
const struct ts_jose_key *ts_jwks_key_jose(const struct ts_jwks_key *key);
/* Drops one reference; NULL is ignored. */
void ts_jwks_key_release(struct ts_jwks_key *key);

enum ts_jwks_result {
    TS_JWKS_FOUND,   /* *out holds a new reference */
    TS_JWKS_NO_KEY,  /* no usable key, and no fetch may be started now: fail fast */
    TS_JWKS_PENDING, /* a fetch of this URL is queued or running; notify comes once */
};

/*
 * Finds the verification key for a token whose header says alg and kid, in the set at uri.
 * Never blocks on the network: takes the cache's lock for a list walk and string comparisons.
 *
 * now_us must come from ts_mono_us() (the fetcher stamps fetches with the same clock; a test
 * may pass a later time to simulate elapsed time, never an earlier one).
 *
 * The key: the JWK whose "kid" equals kid; when kid is NULL, the set's only usable JWK if it
 * has exactly one. Its key type must fit alg (RSA for RS* and PS*, EC P-256 for ES256, EC
 * P-384 for ES384, OKP Ed25519 for EdDSA); a JWK with an "alg" member serves that algorithm
 * only; one without serves every algorithm its type fits. Never usable: HS*, ES512, "none"
 * and unknown algorithms (NO_KEY at once, no fetch).
 *
 * - FOUND: *out is set. If the set is due for its scheduled refresh, a conditional refresh is
 *   queued in the background and this answer still comes from the current set.
 * - PENDING: a fetch of uri is queued or running: the first lookup of a URL starts one; a
 *   kid the set lacks, a failed or missing set, or a set older than stale_max_us starts an
 *   unconditional one unless the previous fetch is within min_refetch_us. When notify is not
 *   NULL, notify(cls) is called exactly once, on the fetcher thread with no lock held, when
 *   that fetch ends (success or failure); then look up again. notify may run before this
 *   call has returned, so park the request first (as ts_http_suspend does). Lookups that
 *   arrive while a fetch is pending join it (one fetch for all of them).
 * - NO_KEY: uri is refused (ts_jwks_uri_refusal; logged once), or there is no usable set or
 *   no key in it for (kid, alg) and no fetch may start yet.
 * *out is left untouched unless FOUND.
 */
enum ts_jwks_result ts_jwks_lookup(struct ts_jwks_cache *c, const char *uri, enum ts_jose_alg alg,
                                   const char *kid, int64_t now_us, void (*notify)(void *cls),
                                   void *cls, struct ts_jwks_key **out);

struct ts_jwks_stats {
    int64_t fetches;      /* HTTP requests started */
    int64_t not_modified; /* 304 answers to conditional refreshes */
    int64_t failures;     /* fetches that did not give a usable document or a 304 */
    int64_t keys_skipped; /* JWKs left out of fetched sets: "use" not "sig", kty "oct", an
                           * algorithm or curve we never verify with, private members, or
                           * unparsable */
    int64_t urls;         /* URLs cached now (1 or 0 for one URL) */
};

/* Counters for uri (since it was last added to the cache), or for the cache's whole life when
 * uri is NULL (these never decrease, for /metrics). */
void ts_jwks_stats(struct ts_jwks_cache *c, const char *uri, struct ts_jwks_stats *out);

#endif

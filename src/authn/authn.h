/*
 * authn.h - authentication: password hashing on a bounded worker pool, the JWT
 * signing keyring, and the cache of verified access tokens.
 *
 * Must never: hash or verify a password on an HTTP thread (the pool exists so that
 * a login storm cannot stall token checks); log or return a password or hash;
 * compare secrets with anything but a constant-time comparison.
 *
 * Depends on core, jose and store. Internals: docs/internals/authn.md.
 */
#ifndef TS_AUTHN_H
#define TS_AUTHN_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/core.h"
#include "jose/jose.h"
#include "store/store.h"

/* ---- passwords ---- */

struct ts_password_params {
    uint32_t memory_kib; /* argon2id m */
    uint32_t iterations; /* argon2id t; p is always 1 */
    int nice;            /* hash pool only: niceness of the worker threads (0 = as the caller) */
};

/* Hashes password with argon2id (libsodium) into a PHC string (heap; the caller frees).
 * Slow by design: call it on a hash worker only. */
TS_NODISCARD enum ts_rc ts_password_hash(const struct ts_password_params *p, const char *password,
                                         size_t len, char **out_phc);

/*
 * Verifies password against a stored hash: argon2id PHC ($argon2id$...) or bcrypt
 * ($2a$, $2b$, $2y$) through libcrypt. *match is set in every TS_OK case; *needs_rehash
 * tells whether the hash should be replaced by one with the current parameters (always for
 * bcrypt). TS_E_INVALID for a hash in no format we know.
 */
TS_NODISCARD enum ts_rc ts_password_verify(const struct ts_password_params *p, const char *phc,
                                           const char *password, size_t len, bool *match,
                                           bool *needs_rehash);

/* True when hash is a stored-hash format we can verify (for imports). */
bool ts_password_hash_format_ok(const char *hash);

/* ---- the hash pool ---- */

enum ts_hash_op {
    TS_HASH_CREATE, /* hash password */
    TS_HASH_VERIFY, /* verify password against hash; on a match that needs it, rehash */
    TS_HASH_CHANGE, /* a password change: check current_password (when given) against hash,
                     * tell whether password equals the old one, then hash password */
};

struct ts_hash_job {
    /* filled by the submitter */
    enum ts_hash_op op;
    const char *password; /* borrowed until done() runs */
    size_t password_len;
    const char *hash; /* VERIFY, CHANGE: the stored hash, or NULL. VERIFY with NULL spends
                       * the time of a verification and fails, so an unknown user costs
                       * what a wrong password costs */
    const char *current_password; /* CHANGE: may be NULL */
    size_t current_password_len;
    void (*done)(struct ts_hash_job *job); /* runs on the worker thread when finished */
    void *cls;
    /* filled by the pool */
    enum ts_rc rc;            /* TS_OK, or the error of hashing/verifying */
    bool match;               /* VERIFY: the password matched a real hash. CHANGE: current_password
                               * matched (true when none was given) */
    bool same;                /* CHANGE: password equals the old one */
    bool needs_rehash;        /* VERIFY: the match used outdated parameters; new_hash holds a fresh
                               * hash (NULL if rehashing failed) */
    char *new_hash;           /* CREATE, CHANGE, VERIFY+needs_rehash: a PHC string (heap; the
                               * submitter frees it) */
    int64_t wait_us;          /* time spent queued */
    int64_t run_us;           /* time spent hashing */
    struct ts_hash_job *next; /* queue link (pool-private) */
};

struct ts_hashpool;

struct ts_hashpool_stats {
    int64_t queued;        /* jobs waiting now */
    int64_t running;       /* jobs being hashed now */
    int64_t completed;     /* jobs finished since start */
    int64_t rejected;      /* submissions refused because the queue was full */
    int64_t wait_us_total; /* sum of queue waits of completed jobs */
    int64_t run_us_total;  /* sum of hashing times of completed jobs */
};

/* Starts `workers` threads; at most queue_cap jobs may wait beyond those being hashed. */
TS_NODISCARD enum ts_rc ts_hashpool_new(int workers, int queue_cap,
                                        const struct ts_password_params *params,
                                        struct ts_hashpool **out);
/* Queues job. TS_E_BUSY when the queue is full (job untouched, done() never called). */
TS_NODISCARD enum ts_rc ts_hashpool_submit(struct ts_hashpool *pool, struct ts_hash_job *job);
void ts_hashpool_stats(struct ts_hashpool *pool, struct ts_hashpool_stats *out);
const struct ts_password_params *ts_hashpool_params(const struct ts_hashpool *pool);
/* Finishes the jobs already queued, then stops the workers and frees the pool. */
void ts_hashpool_free(struct ts_hashpool *pool);

/* ---- signing keys and access tokens ---- */

/* The claims of a verified access token that requests need. */
struct ts_principal {
    char sub[TS_STORE_ID_LEN + 1];        /* empty for API keys (anon, service_role) */
    char session_id[TS_STORE_ID_LEN + 1]; /* empty for API keys */
    char role[64];
    bool is_anonymous;
    int64_t exp;
    /* Tokens issued by a /v1 token exchange name their identity "collection/id" in the claim
     * "tessera_identity" and have neither sub (here) nor session: empty for every other token. */
    char identity[200];
};

/* Seconds a retired signing key keeps verifying (and stays published). */
#define TS_KEYS_RETIRED_KEEP (7LL * 24 * 3600)

struct ts_keys_config {
    const char *hs256_secret; /* non-empty: HS256 with this secret, no keys in the database */
    const char *issuer;
    const char *audience;
    int64_t access_ttl;   /* seconds */
    int64_t retired_keep; /* seconds a retired key stays published and accepted */
};

struct ts_keyring;

/*
 * Loads the signing keys. With an HS256 secret, nothing is read. Otherwise the keys in the
 * store are loaded, and on an empty store an active and a next ES256 key are created.
 * *out_created (may be NULL) tells whether keys were created. The keyring is shared by all
 * threads; ts_keyring_reload swaps in a fresh set atomically.
 */
TS_NODISCARD enum ts_rc ts_keyring_open(struct ts_store *st, const struct ts_keys_config *cfg,
                                        struct ts_keyring **out, bool *out_created);
/* Re-reads the keys from the store (after a rotation by another process). */
TS_NODISCARD enum ts_rc ts_keyring_reload(struct ts_keyring *kr);
void ts_keyring_free(struct ts_keyring *kr);

/* Signs claims (a JSON object) with the active key. Heap token; the caller frees it. */
TS_NODISCARD enum ts_rc ts_keyring_sign(struct ts_keyring *kr, const json_t *claims,
                                        char **out_token);

/* Signs payload (the exact text of a JSON object) with the active key. */
TS_NODISCARD enum ts_rc ts_keyring_sign_text(struct ts_keyring *kr, const char *payload, size_t len,
                                             char **out_token);

/*
 * Verifies an access token (signature with the key its kid names, pinned algorithm; exp; iss;
 * aud when present — required when the token has a sub) and fills *out. Verified tokens are
 * cached until their exp, so a repeated token costs a hash lookup, not a signature check.
 * TS_E_EXPIRED or TS_E_BAD_TOKEN on failure.
 */
TS_NODISCARD enum ts_rc ts_keyring_verify(struct ts_keyring *kr, const char *token, size_t len,
                                          struct ts_principal *out);

/* The public JWKS document, {"keys":[...]}: active, next and recently retired keys. A heap
 * string the caller frees. */
char *ts_keyring_jwks(struct ts_keyring *kr);

/* Mints an API key JWT (role anon or service_role, no sub) valid for ten years from iat. */
TS_NODISCARD enum ts_rc ts_keyring_mint_api_key(struct ts_keyring *kr, const char *role,
                                                int64_t iat, char **out_token);

/* Rotation (tessera jwt rotate): ensure a next key exists, promote it to active, retire the
 * old active key, drop keys retired long ago, and create a new next key. Runs on the store;
 * running servers pick the change up within seconds (ts_keyring_reload). */
TS_NODISCARD enum ts_rc ts_keys_rotate(struct ts_store *st, const struct ts_keys_config *cfg,
                                       char **out_new_kid);

/* Cache counters, for /metrics. */
struct ts_tokencache_stats {
    int64_t hits, misses, entries;
};
void ts_keyring_cache_stats(struct ts_keyring *kr, struct ts_tokencache_stats *out);

/* ---- refresh tokens ---- */

#define TS_REFRESH_TOKEN_BYTES 24 /* 192 bits of entropy */
#define TS_REFRESH_TOKEN_LEN 32   /* base64url of 24 bytes */

/* A new random refresh token (text, NUL-terminated) and its SHA-256. */
void ts_refresh_token_new(char token[TS_REFRESH_TOKEN_LEN + 1], uint8_t hash[TS_REFRESH_HASH_LEN]);
/* SHA-256 of n bytes (for derived identifiers; never for passwords). */
void ts_sha256(const void *p, size_t n, uint8_t out[32]);

/* ---- opaque secrets (/v1 tokens and keys) ---- */

#define TS_SECRET_TEXT_LEN (4 + TS_REFRESH_TOKEN_LEN) /* "tst_"/"tsk_" + 32 base64url */
/* A new secret: the 4-character prefix followed by 192 bits from the OS CSPRNG in base64url,
 * and the SHA-256 of the whole text (what the store keeps). */
void ts_opaque_secret_new(const char prefix[4], char out[TS_SECRET_TEXT_LEN + 1],
                          uint8_t hash[TS_SECRET_HASH_LEN]);

/* Constant-time equality of n bytes (OpenSSL's CRYPTO_memcmp), for secrets and their hashes. */
bool ts_ct_equal(const void *a, const void *b, size_t n);

/* SHA-256 of a presented token. */
void ts_refresh_token_hash(const char *token, size_t len, uint8_t hash[TS_REFRESH_HASH_LEN]);

#endif

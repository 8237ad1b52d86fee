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

/* ---- breached passwords (PASSWORD_BLOCKLIST, authn_blocklist.c) ---- */

struct ts_pw_blocklist;

/*
 * Opens the list at path: Have I Been Pwned's "SHA1:COUNT" file sorted by hash (mapped and
 * searched in place, never loaded), or a plain list of passwords, one per line (at most
 * 64 MiB, hashed into memory); the first line tells which. TS_E_INVALID with a heap message
 * in *err naming the file and the problem (missing, empty, the NTLM edition, a malformed or
 * unsorted line among those checked, a plain list too big). Read-only afterwards: any thread
 * may look up.
 */
TS_NODISCARD enum ts_rc ts_pw_blocklist_open(const char *path, struct ts_pw_blocklist **out,
                                             char **err);
/* True when the password (len bytes) is on the list; false for a NULL list. */
bool ts_pw_blocklist_contains(struct ts_pw_blocklist *bl, const char *password, size_t len);
void ts_pw_blocklist_free(struct ts_pw_blocklist *bl);

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

/* ---- signing keys at rest: the master key (authn_seal.c, docs/internals/authn.md) ---- */

#define TS_MASTER_KEY_LEN 32    /* bytes of TESSERA_MASTER_KEY */
#define TS_MASTER_KEY_ID_LEN 12 /* hex digits naming a master key in sealed rows and messages */

/* TESSERA_MASTER_KEY and TESSERA_MASTER_KEY_PREVIOUS, decoded. The id of a key is derived
 * from it one-way, so it can be printed; the key never is. Wipe with ts_master_keys_wipe. */
struct ts_master_keys {
    bool set; /* false: signing keys are written in clear (and sealed ones cannot be read) */
    uint8_t key[TS_MASTER_KEY_LEN];
    char id[TS_MASTER_KEY_ID_LEN + 1];
    bool has_previous; /* only opens rows, which are then re-sealed under key */
    uint8_t previous[TS_MASTER_KEY_LEN];
    char previous_id[TS_MASTER_KEY_ID_LEN + 1];
};

/*
 * Decodes the master keys from the configuration: key_text (TESSERA_MASTER_KEY) or, when
 * empty, the file key_file names (TESSERA_MASTER_KEY_FILE, for mounted secrets; surrounding
 * white space ignored), and previous_text (TESSERA_MASTER_KEY_PREVIOUS). Each is 32 bytes as
 * 64 hex digits or as base64 / base64url (`openssl rand -hex 32`, `openssl rand -base64 32`).
 * All empty: out->set is false. TS_E_INVALID with a heap message in *err (naming the setting,
 * never quoting the value) for a malformed key, an unreadable file, both a key and a file, or
 * a previous key without a current one.
 */
TS_NODISCARD enum ts_rc ts_master_keys_load(const char *key_text, const char *key_file,
                                            const char *previous_text, struct ts_master_keys *out,
                                            char **err);
void ts_master_keys_wipe(struct ts_master_keys *mk);

/*
 * The stored form of a private key. Clear rows are the PEM text itself (what versions
 * without a master key wrote, and still write). Sealed rows are
 *   "$tsmk1$" <master key id> "$" base64url(nonce[24] || XChaCha20-Poly1305 ciphertext+tag)
 * under a key derived from the master key, with the purpose, kid and alg as associated data,
 * so a sealed key moved to another row (or given another algorithm) no longer opens.
 */
#define TS_SEALED_PREFIX "$tsmk1$"

/* Seals pem for row (kid, alg) under mk->key (mk->set must be true). Heap text in *out. */
TS_NODISCARD enum ts_rc ts_key_seal(const struct ts_master_keys *mk, const char *kid,
                                    const char *alg, const char *pem, char **out);

/*
 * Opens a stored private key: clear text is returned as it is; sealed text is opened with the
 * master key (or the previous one) whose id it names. *out_pem is heap (wipe it before free);
 * *out_current (may be NULL) tells whether stored is already sealed under mk->key, i.e. needs
 * no re-sealing. On failure a heap message in *err names the kid and the cause, never a key:
 * TS_E_DENIED sealed under a master key that is not configured (or none is);
 * TS_E_BAD_TOKEN the right master key id but the text does not authenticate (tampered, moved
 * to another kid); TS_E_PARSE not a key in any form we wrote (including a newer "$tsmkN$").
 */
TS_NODISCARD enum ts_rc ts_key_open(const struct ts_master_keys *mk, const char *kid,
                                    const char *alg, const char *stored, char **out_pem,
                                    bool *out_current, char **err);

/* True when stored is sealed; its master key id is copied to id (may be NULL). */
bool ts_key_is_sealed(const char *stored, char id[TS_MASTER_KEY_ID_LEN + 1]);

struct ts_keys_config {
    const char *hs256_secret; /* non-empty: HS256 with this secret, no keys in the database */
    const char *issuer;
    const char *audience;
    int64_t access_ttl;   /* seconds */
    int64_t retired_keep; /* seconds a retired key stays published and accepted */
    /* NULL or !set: keys are stored in clear. Set: new keys are sealed, and rows in clear or
     * under the previous key are re-sealed whenever the keys are read (compare-and-swap, so
     * several nodes may do it at once). Sealed rows that no configured key opens make
     * ts_keyring_open fail (never a fresh key set). Copied by ts_keyring_open. */
    const struct ts_master_keys *master;
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

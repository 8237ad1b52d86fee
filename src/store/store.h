/*
 * store.h - the storage interface: every durable fact of Tessera goes through here.
 *
 * The interface is made of operations (create a user, rotate a refresh token...),
 * not of SQL: each backend implements an operation with the transactions and
 * isolation its engine needs, so nothing outside a backend file knows which engine
 * it is talking to. Backends: SQLite (store_sqlite.c) and PostgreSQL (store_pg.c).
 *
 * Contract shared by every operation:
 * - Safe to call from any number of threads at once (each backend pools connections).
 * - Returns TS_OK, TS_E_NOT_FOUND when the thing named does not exist (or has expired),
 *   TS_E_CONFLICT when a unique constraint would break, TS_E_UNAVAILABLE when the
 *   database cannot be reached or written (full, read-only, locked too long), and
 *   TS_E_STORE for anything unexpected (logged by the backend with the engine's message).
 * - When an operation returns TS_OK its writes are committed (durable as configured).
 * - Outputs are untouched on error. Objects returned are owned by the caller.
 * - Times are microseconds since the epoch; 0 means "not set" (SQL NULL).
 * - Secrets arrive already hashed: refresh tokens as SHA-256, passwords as PHC strings.
 */
#ifndef TS_STORE_H
#define TS_STORE_H

#include <jansson.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/core.h"

#define TS_STORE_ID_LEN 36 /* a UUID in text form */

struct ts_store;

struct ts_store_options {
    bool durable_full;  /* SQLite: fsync every commit (survives power loss), not just process
                           death. PostgreSQL: no effect (the server's synchronous_commit rules) */
    const char *schema; /* PostgreSQL: the schema holding Tessera's tables, created by
                           ts_store_migrate; NULL means "tessera". Must match
                           ^[a-z_][a-z0-9_]{0,62}$ (else TS_E_INVALID). SQLite ignores it. */
};

/* An identity of the built-in "users" collection, as GoTrue shows it. */
struct ts_user {
    char id[TS_STORE_ID_LEN + 1];
    char *aud;   /* never NULL */
    char *role;  /* never NULL */
    char *email; /* NULL when the user has none */
    char *phone; /* NULL when the user has none */
    int64_t email_confirmed_at;
    int64_t phone_confirmed_at;
    int64_t confirmation_sent_at;
    int64_t invited_at;
    int64_t last_sign_in_at;
    int64_t banned_until;
    int64_t deleted_at;
    int64_t created_at;
    int64_t updated_at;
    json_t *user_metadata; /* an object, never NULL; owned */
    json_t *app_metadata;  /* an object, never NULL; owned */
    bool is_anonymous;
    bool has_password; /* a password credential exists (filled by reads) */
};

/* A fresh user with empty metadata objects; the caller fills in the rest. */
struct ts_user *ts_user_new(void);
void ts_user_free(struct ts_user *u);

/* Opens the store named by url ("sqlite://PATH", "sqlite:///ABS/PATH", or a libpq URI
 * "postgres://..." / "postgresql://...", where the PG* environment variables apply too). On
 * failure *err is a heap message. The store is usable only after ts_store_migrate. */
TS_NODISCARD enum ts_rc ts_store_open(const char *url, const struct ts_store_options *opt,
                                      struct ts_store **out, char **err);
void ts_store_close(struct ts_store *st);

/* Applies pending migrations in order (SQLite: each in its own transaction; PostgreSQL: all in
 * one, under an advisory lock, so that nodes starting together migrate once). Sets *applied to
 * how many ran (may be NULL). */
TS_NODISCARD enum ts_rc ts_store_migrate(struct ts_store *st, int *applied, char **err);
/* Latest migration applied, and the latest this binary knows. */
TS_NODISCARD enum ts_rc ts_store_schema_version(struct ts_store *st, int *current, int *latest);
/* Cheap liveness check (a trivial query). */
TS_NODISCARD enum ts_rc ts_store_ping(struct ts_store *st);

/* ---- small key/value facts about the instance (e.g. when the API keys were minted) ---- */
TS_NODISCARD enum ts_rc ts_store_meta_get(struct ts_store *st, const char *key, char **out_value);
/* Inserts key only if absent; TS_E_CONFLICT if it exists already. */
TS_NODISCARD enum ts_rc ts_store_meta_insert(struct ts_store *st, const char *key,
                                             const char *value);

/* ---- users ---- */

/* Inserts u (id, created_at and updated_at must be set) and, when password_hash is not NULL,
 * its password credential, atomically. TS_E_CONFLICT when the id, e-mail or phone is taken. */
TS_NODISCARD enum ts_rc ts_store_user_create(struct ts_store *st, const struct ts_user *u,
                                             const char *password_hash);
TS_NODISCARD enum ts_rc ts_store_user_get(struct ts_store *st, const char *id,
                                          struct ts_user **out);
/* Looks an e-mail up exactly as stored (callers lower-case it first). When out_password_hash
 * is not NULL it receives the password hash, or NULL when the user has no password. */
TS_NODISCARD enum ts_rc ts_store_user_get_by_email(struct ts_store *st, const char *email,
                                                   struct ts_user **out, char **out_password_hash);
/* Writes every mutable field of u (all but id, created_at and last_sign_in_at) if, and only if, the
 * stored row still has updated_at == expected_updated_at (compare-and-swap: two read-modify-write
 * cycles racing on one user cannot lose either's changes). The caller sets u->updated_at to a value
 * greater than expected_updated_at. TS_E_STALE when the row changed meanwhile (re-read and
 * retry), TS_E_NOT_FOUND if the user is gone, TS_E_CONFLICT if the new e-mail or phone is
 * taken. */
TS_NODISCARD enum ts_rc ts_store_user_update(struct ts_store *st, const struct ts_user *u,
                                             int64_t expected_updated_at);
/* Deletes the user with its credentials, sessions, refresh tokens, and the /v1 tokens and keys
 * bound to it, atomically. */
TS_NODISCARD enum ts_rc ts_store_user_delete(struct ts_store *st, const char *id);
/* Lists users ordered by creation (oldest first), offset >= 0, limit > 0 (else TS_E_INVALID);
 * filter (may be NULL) matches a substring of the e-mail, case-insensitively. *total counts all
 * matches. */
TS_NODISCARD enum ts_rc ts_store_user_list(struct ts_store *st, int64_t offset, int64_t limit,
                                           const char *filter, struct ts_user ***out, size_t *out_n,
                                           int64_t *total);
void ts_user_list_free(struct ts_user **list, size_t n);
/* Users that are not soft-deleted, ordered by id, ids after `after` (NULL: from the start; else
 * a UUID, TS_E_INVALID otherwise), at most limit (1..1000): the users collection's pages. */
TS_NODISCARD enum ts_rc ts_store_user_page(struct ts_store *st, const char *after, int64_t limit,
                                           struct ts_user ***out, size_t *out_n);

/* ---- password credentials ---- */
TS_NODISCARD enum ts_rc ts_store_password_get(struct ts_store *st, const char *user_id,
                                              char **out_hash);
/* Sets (or replaces) the user's password hash and, when revoke is true, deletes the user's
 * sessions except keep_session (may be NULL), in one transaction. Only replaces when the
 * stored hash still equals expect_old (if not NULL), so a rehash never overwrites a password
 * changed in between (TS_E_CONFLICT then). */
TS_NODISCARD enum ts_rc ts_store_password_set(struct ts_store *st, const char *user_id,
                                              const char *hash, const char *expect_old, bool revoke,
                                              const char *keep_session, int64_t now);

/* ---- sessions and refresh tokens ---- */

#define TS_REFRESH_HASH_LEN 32 /* SHA-256 */

struct ts_session_new {
    const char *user_id;
    const char *aal;        /* "aal1" */
    const char *amr_json;   /* [{"method":"password","timestamp":N}] */
    const char *ip;         /* may be NULL */
    const char *user_agent; /* may be NULL */
    uint8_t refresh_hash[TS_REFRESH_HASH_LEN];
    int64_t now;
};

/* Creates a session with its first refresh token and sets the user's last_sign_in_at, in one
 * transaction. Writes the new session id into session_id. TS_E_NOT_FOUND if the user is gone. */
TS_NODISCARD enum ts_rc ts_store_session_create(struct ts_store *st, const struct ts_session_new *s,
                                                char session_id[TS_STORE_ID_LEN + 1]);

/* Returns the user owning session_id when the session exists and belongs to user_id: the
 * check behind every authenticated request. TS_E_NOT_FOUND when the session is gone. */
TS_NODISCARD enum ts_rc ts_store_session_user(struct ts_store *st, const char *session_id,
                                              const char *user_id, struct ts_user **out);
TS_NODISCARD enum ts_rc ts_store_session_delete(struct ts_store *st, const char *session_id);
/* Deletes every session of user_id but except_session (may be NULL); *deleted may be NULL. */
TS_NODISCARD enum ts_rc ts_store_sessions_delete_for_user(struct ts_store *st, const char *user_id,
                                                          const char *except_session,
                                                          int64_t *deleted);

enum ts_refresh_outcome {
    TS_REFRESH_ROTATED,      /* the token was live: it is now revoked and next is its child */
    TS_REFRESH_REUSED,       /* revoked within the reuse interval: next is a new child */
    TS_REFRESH_NOT_FOUND,    /* no such token (or its session is gone) */
    TS_REFRESH_ALREADY_USED, /* revoked beyond the interval; session revoked if rotation is on */
};

struct ts_refresh_request {
    uint8_t presented[TS_REFRESH_HASH_LEN]; /* hash of the token the client sent */
    uint8_t next[TS_REFRESH_HASH_LEN];      /* hash of the token to issue */
    int64_t now;
    int64_t reuse_interval; /* microseconds */
    bool rotation_enabled;
    const char *ip;         /* may be NULL; recorded on the session */
    const char *user_agent; /* may be NULL */
};

struct ts_refresh_result {
    enum ts_refresh_outcome outcome;
    char session_id[TS_STORE_ID_LEN + 1]; /* set for ROTATED and REUSED */
    char user_id[TS_STORE_ID_LEN + 1];    /* set for ROTATED and REUSED */
    char aal[8];                          /* the session's, for ROTATED and REUSED */
    char amr_json[512];                   /* the session's, for ROTATED and REUSED */
};

/* The refresh-token grant's state machine, atomically (gotrue-api.md §6). */
TS_NODISCARD enum ts_rc ts_store_refresh_rotate(struct ts_store *st,
                                                const struct ts_refresh_request *req,
                                                struct ts_refresh_result *out);

/* ---- JWT signing keys ---- */

enum ts_key_state { TS_KEY_NEXT, TS_KEY_ACTIVE, TS_KEY_RETIRED };

struct ts_signing_key_row {
    char *kid;
    char *alg;
    char *private_pem; /* secret: wipe before free (ts_signing_key_rows_free does) */
    enum ts_key_state state;
    int64_t created_at;
    int64_t state_changed_at;
};

TS_NODISCARD enum ts_rc ts_store_signing_keys_list(struct ts_store *st,
                                                   struct ts_signing_key_row **out, size_t *out_n);
void ts_signing_key_rows_free(struct ts_signing_key_row *rows, size_t n);
/* Inserts a key in state `state`. When state is ACTIVE no other key may be active
 * (TS_E_CONFLICT). */
TS_NODISCARD enum ts_rc ts_store_signing_key_insert(struct ts_store *st,
                                                    const struct ts_signing_key_row *row);
/* Rotation in one transaction: the active key becomes retired, the key `kid` (NEXT) becomes
 * active, and retired keys older than drop_before are deleted. */
TS_NODISCARD enum ts_rc ts_store_signing_key_promote(struct ts_store *st, const char *kid,
                                                     int64_t now, int64_t drop_before);
/* Replaces the stored private_pem of key `kid` by replacement, only if it still reads
 * expected (a compare-and-swap: the keyring re-encrypts a row under a new master key, and two
 * nodes doing it at once must not overwrite each other). TS_E_STALE when the row holds
 * something else or is gone (another process got there first: read again). */
TS_NODISCARD enum ts_rc ts_store_signing_key_reseal(struct ts_store *st, const char *kid,
                                                    const char *expected, const char *replacement);

/* ---- counters: token buckets and windowed counters shared by every node ---- */

/*
 * The state behind rate limits and account lockout (docs/internals/store.md, "Counters").
 * Every call is one atomic read-modify-write in the database, so a limit holds for the whole
 * cluster: threads of one process, and processes or nodes sharing the database, never both
 * win the last token or the last slot. Callers pass the time (now_us, microseconds since the
 * epoch), so nodes' clocks should agree (NTP); a node whose clock is off by d sees buckets
 * that much fuller or emptier and windows that much earlier or later, never more.
 *
 * Counters are not users or sessions: they never move the change epoch, nor notify other
 * nodes. Buckets and windowed counters are separate namespaces (the same key may name one of
 * each). Rows of idle buckets and ended windows stay until ts_store_counters_sweep.
 *
 * Common to every call: TS_E_INVALID when key is NULL, empty, longer than
 * TS_STORE_COUNTER_KEY_MAX bytes or not UTF-8, or when a number is out of the range given
 * below (the caller's bug, never the client's); otherwise the store.h contract.
 */

#define TS_STORE_COUNTER_KEY_MAX 200 /* bytes */
/* Bounds that keep every sum in 64 bits on both engines. */
#define TS_STORE_COUNTER_TIME_MAX (INT64_C(1) << 62)  /* for now_us */
#define TS_STORE_COUNTER_SPAN_MAX (INT64_C(1) << 61)  /* window_us, capacity * refill_us */
#define TS_STORE_COUNTER_DELTA_MAX (INT64_C(1) << 32) /* |delta| */
#define TS_STORE_COUNTER_VALUE_MAX (INT64_C(1) << 62) /* values saturate here */
/* ts_store_counters_sweep keeps rows this long after they stopped mattering, for clock skew
 * between nodes and for a window made longer by a configuration change. */
#define TS_STORE_COUNTER_SWEEP_GRACE_US (INT64_C(60) * 1000000)

struct ts_bucket_rule {
    uint32_t capacity; /* burst: tokens in a full bucket, >= 1 */
    int64_t refill_us; /* time to regain one token, >= 1; capacity * refill_us must not exceed
                          TS_STORE_COUNTER_SPAN_MAX */
};

struct ts_bucket_result {
    bool allowed;           /* the tokens were taken */
    uint32_t remaining;     /* whole tokens left after this call */
    int64_t retry_after_us; /* 0 when allowed; else the wait until `cost` tokens are there */
};

/*
 * Takes cost tokens (0 <= cost <= rule->capacity, else TS_E_INVALID; 0 only reports) from the
 * bucket named key, or none at all: a denied take consumes nothing. A bucket never seen is
 * full. Tokens come back continuously, one per refill_us, up to capacity.
 *
 * Integer scheme (exact, no fractions stored): the row holds full_at, the time at which the
 * bucket will be full again. At now the bucket lacks deficit = clamp(full_at - now, 0,
 * capacity * refill_us) microseconds' worth of tokens; a take of cost is allowed iff
 * deficit + cost * refill_us <= capacity * refill_us, and then full_at = now + deficit +
 * cost * refill_us. remaining = floor((capacity * refill_us - deficit') / refill_us).
 * When denied, retry_after_us = deficit + cost * refill_us - capacity * refill_us, exactly.
 * Changing a rule between calls is safe: the deficit is clamped to the new capacity (a
 * denied take stores that clamp, and nothing else).
 */
TS_NODISCARD enum ts_rc ts_store_bucket_take(struct ts_store *st, const char *key,
                                             const struct ts_bucket_rule *rule, int64_t now_us,
                                             uint32_t cost, struct ts_bucket_result *out);

struct ts_counter_result {
    bool allowed;           /* the delta was applied */
    int64_t value;          /* the value after the call (unchanged when refused) */
    int64_t window_ends_us; /* when the current window ends (0 from ts_store_counter_get when
                               there is no current window) */
    int64_t retry_after_us; /* 0 when allowed; else window_ends_us - now_us (> 0) */
};

/*
 * A counter over a fixed window, with reservations: atomically,
 * 1. if the key has no window, or its window is over (now_us >= start + window_us), a new
 *    one starts at now_us with value 0;
 * 2. if limit > 0, delta > 0 and value + delta > limit, the call is refused: allowed =
 *    false, nothing changes, retry_after_us = the time until the window ends;
 * 3. else value = clamp(value + delta, 0, TS_STORE_COUNTER_VALUE_MAX): a negative delta
 *    (releasing a reservation) never takes it below 0.
 * limit <= 0 means "no limit". Counting before acting is what makes a limit race-free: to
 * allow at most N password checks, add +1 with limit N before checking and -1 after a check
 * that must not count: however many attempts run at once, at most N get past step 2.
 * Ranges: 1 <= window_us <= TS_STORE_COUNTER_SPAN_MAX, |delta| <= TS_STORE_COUNTER_DELTA_MAX,
 * and delta <= limit when limit > 0 (a delta that could never fit is a bug), 0 <= now_us <=
 * TS_STORE_COUNTER_TIME_MAX.
 */
TS_NODISCARD enum ts_rc ts_store_counter_add(struct ts_store *st, const char *key, int64_t delta,
                                             int64_t window_us, int64_t now_us, int64_t limit,
                                             struct ts_counter_result *out);
/* Reads a counter without changing it, using the window length of its last successful add:
 * value 0 and window_ends_us 0 when it has no window or its window is over. allowed is true
 * and retry_after_us 0. */
TS_NODISCARD enum ts_rc ts_store_counter_get(struct ts_store *st, const char *key, int64_t now_us,
                                             struct ts_counter_result *out);
/* Deletes the windowed counter key (TS_OK whether it existed or not). */
TS_NODISCARD enum ts_rc ts_store_counter_reset(struct ts_store *st, const char *key);

/*
 * Housekeeping: deletes the buckets that have been full (and so untouched) since before
 * now_us - TS_STORE_COUNTER_SWEEP_GRACE_US and the counters whose window ended before then;
 * neither changes what any call above would answer. *deleted (may be NULL) gets the number
 * of rows deleted. The server is to call it periodically (every few minutes) from one
 * thread; each call scans both tables once.
 */
TS_NODISCARD enum ts_rc ts_store_counters_sweep(struct ts_store *st, int64_t now_us,
                                                int64_t *deleted);

/* ---- the native model (/v1): collections, documents, indexes ---- */

/*
 * Collections hold documents: {id, data (a JSON object), ts, optional expiry}. The built-in
 * "users" collection is not stored here: its documents are the users above, and every call
 * below that takes a collection refuses "users" with TS_E_INVALID unless it says otherwise
 * (the API maps "users" onto the user operations).
 *
 * Liveness: a document whose expires_at is set and <= now is expired. It reads as absent
 * everywhere (get, list, lookups, unique indexes, identity checks) and is deleted by
 * ts_store_sweep later, or at once when its id or one of its unique terms is written again.
 * Every write of a document, collection or index moves the change epoch.
 *
 * Names (collections, indexes) match ^[A-Za-z_][A-Za-z0-9_-]{0,63}$ and document ids
 * ^[A-Za-z0-9._-]{1,128}$; the API checks them and the store trusts them.
 */
#define TS_STORE_NAME_MAX 64
#define TS_STORE_DOC_ID_MAX 128

struct ts_collection_info {
    char *name;
    int64_t created_at;
};
void ts_collection_infos_free(struct ts_collection_info *list, size_t n);

/* TS_E_CONFLICT when it exists. */
TS_NODISCARD enum ts_rc ts_store_collection_create(struct ts_store *st, const char *name,
                                                   int64_t now);
/* TS_E_NOT_FOUND when it does not exist. out may be NULL (existence check). */
TS_NODISCARD enum ts_rc ts_store_collection_get(struct ts_store *st, const char *name,
                                                struct ts_collection_info *out);
/* Collections by name, those after `after` (NULL: from the start), at most limit (> 0). */
TS_NODISCARD enum ts_rc ts_store_collection_list(struct ts_store *st, const char *after,
                                                 int64_t limit, struct ts_collection_info **out,
                                                 size_t *out_n);
/* Deletes the collection, its indexes and its documents, with everything bound to them
 * (credentials, tokens, keys), atomically. TS_E_NOT_FOUND when it does not exist. */
TS_NODISCARD enum ts_rc ts_store_collection_delete(struct ts_store *st, const char *name);

struct ts_index_def {
    char *name;
    json_t *terms; /* an array of 1..8 paths "data.a.b" (each segment 1..64 bytes); owned */
    bool unique;
    int64_t created_at;
};
void ts_index_defs_free(struct ts_index_def *list, size_t n);

/*
 * Creates an index and fills it from the collection's live documents in the same
 * transaction. TS_E_NOT_FOUND without the collection; TS_E_CONFLICT when the name is taken,
 * or when the index is unique and two live documents share a term (nothing is created);
 * TS_E_INVALID when terms is not a valid array of paths.
 */
TS_NODISCARD enum ts_rc ts_store_index_create(struct ts_store *st, const char *collection,
                                              const struct ts_index_def *def, int64_t now);
/* The collection's indexes by name. TS_E_NOT_FOUND without the collection. */
TS_NODISCARD enum ts_rc ts_store_index_list(struct ts_store *st, const char *collection,
                                            struct ts_index_def **out, size_t *out_n);
TS_NODISCARD enum ts_rc ts_store_index_get(struct ts_store *st, const char *collection,
                                           const char *name, struct ts_index_def *out);
TS_NODISCARD enum ts_rc ts_store_index_delete(struct ts_store *st, const char *collection,
                                              const char *name);

/*
 * The term key of an index entry: the values at the index's term paths, each turned into
 * text (a string as it is; a number as its JSON text, integers without a fraction; true and
 * false as words), packed as a compact JSON array of strings. A document whose value at any
 * path is missing, null, an object or an array is not in the index (ts_store_index_key_of
 * returns NULL). ts_store_index_key packs values given by a client (an array of strings,
 * numbers or booleans, one per term) the same way, so `?term=5` finds both 5 and "5".
 * Heap strings; NULL when there is no key. Used by the backends, and by the API for lookups.
 */
char *ts_store_index_key_of(const json_t *terms, const json_t *data);
char *ts_store_index_key(const json_t *values);
/* True when terms is a valid terms array (see struct ts_index_def). */
bool ts_store_index_terms_valid(const json_t *terms);

struct ts_doc {
    char *collection;
    char *id;
    json_t *data; /* an object; owned */
    int64_t ts;   /* the time of the last write, microseconds; grows with every write */
    int64_t created_at;
    int64_t expires_at; /* 0: never */
};
void ts_doc_free(struct ts_doc *d);
void ts_doc_list_free(struct ts_doc **list, size_t n);

enum ts_doc_mode {
    TS_DOC_CREATE,  /* a new document: TS_E_CONFLICT if a live one has this id */
    TS_DOC_REPLACE, /* an existing live document: TS_E_NOT_FOUND otherwise */
};

struct ts_doc_write {
    enum ts_doc_mode mode;
    const char *collection;
    const char *id;
    const json_t *data; /* the whole new data object */
    int64_t expires_at; /* 0: never */
    /* REPLACE: when non-zero, write only if the stored ts still equals it (compare-and-swap;
     * TS_E_STALE otherwise) */
    int64_t expect_ts;
    /* When not NULL, the document's password credential becomes this hash (PHC string) in the
     * same transaction. */
    const char *password_hash;
    int64_t now; /* the new ts is max(now, previous ts + 1); created_at = now on CREATE */
};

/*
 * Creates or replaces a document, keeping every index of its collection in step, atomically.
 * TS_E_NOT_FOUND without the collection (or, for REPLACE, without a live document);
 * TS_E_CONFLICT when a live document holds the id (CREATE) or one of the new unique terms.
 * CREATE over an expired document first deletes it with everything bound to it (tokens, keys,
 * credential), so a re-created id never revives them. *out (may be NULL) gets the document
 * as stored.
 */
TS_NODISCARD enum ts_rc ts_store_doc_write(struct ts_store *st, const struct ts_doc_write *w,
                                           struct ts_doc **out);
/* TS_E_NOT_FOUND when absent or expired (or the collection does not exist). */
TS_NODISCARD enum ts_rc ts_store_doc_get(struct ts_store *st, const char *collection,
                                         const char *id, int64_t now, struct ts_doc **out);
/* Deletes the document with its index entries, credential, tokens and keys, atomically.
 * TS_E_NOT_FOUND when it was absent or already expired (an expired one is deleted too). */
TS_NODISCARD enum ts_rc ts_store_doc_delete(struct ts_store *st, const char *collection,
                                            const char *id, int64_t now);
/* Live documents ordered by id, ids after `after` (NULL: from the start), at most limit
 * (1..1000). TS_E_NOT_FOUND without the collection. */
TS_NODISCARD enum ts_rc ts_store_doc_list(struct ts_store *st, const char *collection,
                                          const char *after, int64_t limit, int64_t now,
                                          struct ts_doc ***out, size_t *out_n);
/* Live documents whose entry in index `index` has term key `key` (ts_store_index_key),
 * ordered by id, after `after`, at most limit (1..1000), through the database index.
 * TS_E_NOT_FOUND when the collection or the index does not exist. */
TS_NODISCARD enum ts_rc ts_store_index_lookup(struct ts_store *st, const char *collection,
                                              const char *index, const char *key, const char *after,
                                              int64_t limit, int64_t now, struct ts_doc ***out,
                                              size_t *out_n);

/* The collections ("users" included, first) in which a live identity with this id exists:
 * a user (not deleted) or a live document. Heap array of heap strings; *out_n may be 0. */
TS_NODISCARD enum ts_rc ts_store_identity_collections(struct ts_store *st, const char *id,
                                                      int64_t now, char ***out, size_t *out_n);
void ts_strings_free(char **list, size_t n);

/* ---- credentials of any identity (collection "users" allowed: the users' passwords) ---- */

struct ts_credential_info {
    char *collection;
    char *id;       /* the identity's id */
    char *strategy; /* "password" */
    int64_t created_at;
    int64_t updated_at;
};
void ts_credential_infos_free(struct ts_credential_info *list, size_t n);

/* The identity's password hash. TS_E_NOT_FOUND when the identity is not live (a user that
 * does not exist; a document absent or expired) or has no password. */
TS_NODISCARD enum ts_rc ts_store_credential_get(struct ts_store *st, const char *collection,
                                                const char *id, int64_t now, char **out_hash);
/* Sets the identity's password hash, only if the stored hash still equals expect_old when that
 * is not NULL (TS_E_CONFLICT otherwise, as ts_store_password_set). TS_E_NOT_FOUND when the
 * identity is not live. */
TS_NODISCARD enum ts_rc ts_store_credential_set(struct ts_store *st, const char *collection,
                                                const char *id, const char *hash,
                                                const char *expect_old, int64_t now);
/* Deletes the identity's password credential; with revoke, also its tokens (and, for users,
 * its sessions) in the same transaction, counted in *revoked (may be NULL). TS_E_NOT_FOUND
 * when it had none. */
TS_NODISCARD enum ts_rc ts_store_credential_delete(struct ts_store *st, const char *collection,
                                                   const char *id, bool revoke, int64_t *revoked);
/* Credentials ordered by (collection, id), "users" included; only those of `collection` when
 * it is not NULL; after the position (after_collection, after_id) when both are not NULL; at
 * most limit (1..1000). Never a hash. */
TS_NODISCARD enum ts_rc ts_store_credential_list(struct ts_store *st, const char *collection,
                                                 const char *after_collection, const char *after_id,
                                                 int64_t limit, struct ts_credential_info **out,
                                                 size_t *out_n);

/* ---- opaque secrets: tokens (tst_, bound to an identity) and keys (tsk_, bound to a role) ---- */

#define TS_SECRET_HASH_LEN 32 /* SHA-256 of the whole secret text */

enum ts_secret_kind { TS_SECRET_TOKEN, TS_SECRET_KEY };

struct ts_secret_row {
    char id[TS_STORE_ID_LEN + 1];
    enum ts_secret_kind kind;
    char *identity_collection; /* tokens: always; keys: NULL unless bound to an identity */
    char *identity_id;
    char *role;        /* keys: the role; tokens: NULL */
    char *origin;      /* "login", "admin", "exchange", "cli" */
    char *description; /* may be NULL */
    json_t *data;      /* the caller's data (an object), may be NULL; owned */
    json_t *meta;      /* origin metadata (exchanges: provider, sub...), may be NULL; owned */
    int64_t created_at;
    int64_t expires_at; /* 0: never (keys only; tokens always expire) */
};
void ts_secret_row_free(struct ts_secret_row *r);
void ts_secret_rows_free(struct ts_secret_row **list, size_t n);

/* Stores a secret's row under the SHA-256 of its text. For a row with an identity, the
 * identity must be live at now (in the same transaction; TS_E_NOT_FOUND otherwise).
 * TS_E_CONFLICT when the id or hash exists (never, with random ones). */
TS_NODISCARD enum ts_rc ts_store_secret_create(struct ts_store *st, const struct ts_secret_row *row,
                                               const uint8_t hash[TS_SECRET_HASH_LEN], int64_t now);

enum ts_secret_state {
    TS_SECRET_LIVE,          /* usable */
    TS_SECRET_UNKNOWN,       /* no secret with this hash */
    TS_SECRET_EXPIRED,       /* its expires_at is <= now */
    TS_SECRET_IDENTITY_GONE, /* its identity does not exist, has expired, is banned (users),
                                or was re-created after the secret (never revived) */
};

/*
 * Fauna's check for a presented secret, in order: the secret exists, has not expired, and its
 * identity (if any) exists, has not expired and was created before the secret. *state says
 * which failed; *out (may be NULL) gets the row when LIVE (NULL otherwise), and
 * *valid_until the time until which the answer LIVE holds unless something is written
 * (the earliest of the secret's and the identity's expiries; INT64_MAX when neither expires).
 */
TS_NODISCARD enum ts_rc ts_store_secret_check(struct ts_store *st,
                                              const uint8_t hash[TS_SECRET_HASH_LEN], int64_t now,
                                              enum ts_secret_state *state,
                                              struct ts_secret_row **out, int64_t *valid_until);
/* A live (unexpired) secret's row by id. TS_E_NOT_FOUND otherwise. */
TS_NODISCARD enum ts_rc ts_store_secret_get(struct ts_store *st, const char *id, int64_t now,
                                            struct ts_secret_row **out);

struct ts_secret_filter {
    enum ts_secret_kind kind;
    const char *identity_collection; /* with identity_id: only secrets bound to it */
    const char *identity_id;
    const char *after; /* ids after this one (NULL: from the start) */
    int64_t limit;     /* 1..1000 */
    int64_t now;       /* expired secrets are left out */
};
/* Secrets of one kind ordered by id. */
TS_NODISCARD enum ts_rc ts_store_secret_list(struct ts_store *st, const struct ts_secret_filter *f,
                                             struct ts_secret_row ***out, size_t *out_n);
/* Deletes the secret of this kind and id. TS_E_NOT_FOUND when there is none. */
TS_NODISCARD enum ts_rc ts_store_secret_delete(struct ts_store *st, enum ts_secret_kind kind,
                                               const char *id);
/* Deletes the secrets of one kind bound to an identity, except except_id (may be NULL);
 * *deleted (may be NULL) gets the count. */
TS_NODISCARD enum ts_rc ts_store_secrets_delete_for_identity(struct ts_store *st,
                                                             enum ts_secret_kind kind,
                                                             const char *collection, const char *id,
                                                             const char *except_id,
                                                             int64_t *deleted);

/* ---- the sessions ledger (GoTrue sessions of a user) ---- */

struct ts_session_info {
    char id[TS_STORE_ID_LEN + 1];
    char *aal;
    char *ip;         /* may be NULL */
    char *user_agent; /* may be NULL */
    int64_t created_at;
    int64_t refreshed_at;          /* 0: never refreshed */
    int64_t not_after;             /* 0: none */
    int64_t refresh_tokens;        /* tokens issued in the session's refresh family */
    int64_t refresh_tokens_active; /* of which not yet used (0 after a reuse revoked it) */
};
void ts_session_infos_free(struct ts_session_info *list, size_t n);
/* The user's sessions, oldest first. */
TS_NODISCARD enum ts_rc ts_store_session_list(struct ts_store *st, const char *user_id,
                                              struct ts_session_info **out, size_t *out_n);

/* ---- external identity providers (AccessProviders) and the identities they vouch for ---- */

/*
 * An AccessProvider: an outside issuer whose JWTs Tessera accepts (issue 5). The store keeps
 * the provider's document as given (validated by the API) and indexes it by name and by
 * issuer, both unique. Provider writes move the change epoch (callers cache providers).
 */
struct ts_access_provider {
    char *name;
    char *issuer;
    json_t *config; /* the whole provider document; owned */
    int64_t created_at;
    int64_t updated_at;
};
void ts_access_provider_free(struct ts_access_provider *p);
void ts_access_providers_free(struct ts_access_provider **list, size_t n);

/* TS_E_CONFLICT when the name or the issuer is taken. created_at and updated_at are set by the
 * caller. */
TS_NODISCARD enum ts_rc ts_store_provider_create(struct ts_store *st,
                                                 const struct ts_access_provider *p);
/* Replaces the issuer and config of the provider p->name (created_at is kept).
 * TS_E_NOT_FOUND when there is none; TS_E_CONFLICT when the issuer is another's. */
TS_NODISCARD enum ts_rc ts_store_provider_update(struct ts_store *st,
                                                 const struct ts_access_provider *p);
TS_NODISCARD enum ts_rc ts_store_provider_get(struct ts_store *st, const char *name,
                                              struct ts_access_provider **out);
/* Every provider, by name (there are few). */
TS_NODISCARD enum ts_rc ts_store_provider_list(struct ts_store *st,
                                               struct ts_access_provider ***out, size_t *out_n);
/* Deletes the provider (its links stay: re-creating it finds the same identities).
 * TS_E_NOT_FOUND when there is none. */
TS_NODISCARD enum ts_rc ts_store_provider_delete(struct ts_store *st, const char *name);

/*
 * External identity links: (issuer, subject) -> an identity (a user, or a document of any
 * collection), never by e-mail alone. A link is live when its identity is live (a user not
 * soft-deleted; a document present and unexpired) and was created no later than the link
 * (a re-created id never inherits a link). Deleting an identity (user_delete, doc_delete,
 * collection_delete, an expired document swept or replaced) deletes its links in the same
 * transaction.
 */
struct ts_external_link {
    char *issuer;
    char *subject;
    char *collection;
    char *id;
    json_t *claims; /* the claims seen at the last sign-in (an object; may be NULL); owned */
    int64_t created_at;
    int64_t updated_at;
};
void ts_external_link_free(struct ts_external_link *l);
void ts_external_links_free(struct ts_external_link **list, size_t n);

/* What to create when (issuer, subject) has no live link yet. */
struct ts_external_create {
    const char *collection;     /* "users", or an existing collection */
    const json_t *data;         /* a document's data (an object) */
    const struct ts_user *user; /* collection "users": the user to create (id set by caller) */
};

/*
 * Finds the live identity linked to (issuer, subject), atomically creating it and the link
 * when there is none and create is not NULL. A dead link (its identity gone) is replaced.
 * On success *out is the link (claims, when not NULL, stored as the link's claims and
 * updated_at = now), and *created tells whether the identity was made by this call.
 * TS_E_NOT_FOUND when there is no live link and create is NULL, or create->collection does
 * not exist; TS_E_CONFLICT when creating a user whose e-mail or phone is taken (never linked
 * by e-mail: the caller decides). Concurrent calls for one (issuer, subject) all return the
 * same identity: exactly one creates it.
 */
TS_NODISCARD enum ts_rc ts_store_external_link(struct ts_store *st, const char *issuer,
                                               const char *subject, const json_t *claims,
                                               const struct ts_external_create *create, int64_t now,
                                               struct ts_external_link **out, bool *created);
/* The links of an identity, oldest first (for user.identities and the ledger). */
TS_NODISCARD enum ts_rc ts_store_external_list(struct ts_store *st, const char *collection,
                                               const char *id, struct ts_external_link ***out,
                                               size_t *out_n);

/* ---- token exchanges (RFC 8693): what was issued for which outside subject ---- */

struct ts_exchange_row {
    char id[TS_STORE_ID_LEN + 1];
    char *provider;   /* the AccessProvider's name */
    char *subject;    /* the subject token's sub */
    char *collection; /* the identity the token was issued to */
    char *identity_id;
    char *token_id;   /* the tst_ token's id for opaque tokens, NULL for JWTs */
    char *token_type; /* the issued_token_type URN */
    json_t *meta;     /* caller metadata (client, scope, audience...); never a secret; owned */
    int64_t created_at;
    int64_t expires_at; /* when the issued token expires; the record is swept after */
};
void ts_exchange_row_free(struct ts_exchange_row *r);
void ts_exchange_rows_free(struct ts_exchange_row **list, size_t n);

TS_NODISCARD enum ts_rc ts_store_exchange_record(struct ts_store *st,
                                                 const struct ts_exchange_row *row);
/* Unexpired exchanges of an identity (both NULL: all), by id, after `after`, at most limit
 * (1..1000). */
TS_NODISCARD enum ts_rc ts_store_exchange_list(struct ts_store *st, const char *collection,
                                               const char *id, const char *after, int64_t limit,
                                               int64_t now, struct ts_exchange_row ***out,
                                               size_t *out_n);

/* ---- authorization objects: roles and profiles (issue 6) ---- */

/*
 * A role or a profile as the API validated it: the store keeps the whole object as given
 * (config), keyed by (kind, name), so a role and a profile may share a name. Names are 1 to
 * TS_STORE_NAME_MAX bytes and config is a JSON object, else TS_E_INVALID. Every successful
 * write moves the change epoch and ts_store_authz_version (callers cache compiled roles).
 */
enum ts_authz_kind { TS_AUTHZ_ROLE = 1, TS_AUTHZ_PROFILE = 2 };

struct ts_authz_object {
    enum ts_authz_kind kind;
    char *name;
    json_t *config;     /* the whole object as validated by the API; owned */
    int64_t created_at; /* set by the caller on create; kept on update */
    int64_t updated_at;
};
void ts_authz_object_free(struct ts_authz_object *o);
void ts_authz_objects_free(struct ts_authz_object **list, size_t n);

/* TS_E_CONFLICT when (kind, name) exists. */
TS_NODISCARD enum ts_rc ts_store_authz_create(struct ts_store *st, const struct ts_authz_object *o);
/* Replaces config and updated_at; TS_E_NOT_FOUND when there is none. */
TS_NODISCARD enum ts_rc ts_store_authz_update(struct ts_store *st, const struct ts_authz_object *o);
TS_NODISCARD enum ts_rc ts_store_authz_get(struct ts_store *st, enum ts_authz_kind kind,
                                           const char *name, struct ts_authz_object **out);
/* Every object of kind, by name (byte order). */
TS_NODISCARD enum ts_rc ts_store_authz_list(struct ts_store *st, enum ts_authz_kind kind,
                                            struct ts_authz_object ***out, size_t *out_n);
/* TS_E_NOT_FOUND when there is none. */
TS_NODISCARD enum ts_rc ts_store_authz_delete(struct ts_store *st, enum ts_authz_kind kind,
                                              const char *name);
/* A number that changes (grows) with every committed create, update or delete of an
 * authorization object, by this process or any other sharing the database; callers that cache
 * compiled roles re-read it when the change epoch has moved, and rebuild only when it changed. */
TS_NODISCARD enum ts_rc ts_store_authz_version(struct ts_store *st, int64_t *out);

/* ---- the sweeper ---- */

struct ts_sweep_counts {
    int64_t tokens;         /* expired tokens deleted */
    int64_t keys;           /* expired keys deleted */
    int64_t documents;      /* expired documents deleted (with what was bound to them) */
    int64_t sessions;       /* sessions past their not_after */
    int64_t refresh_tokens; /* refresh tokens used before refresh_before */
    int64_t exchanges;      /* exchange records whose token has expired */
    int64_t counters;       /* rate-limit buckets and counters (ts_store_sweep_pass only) */
};

/*
 * One batch of housekeeping: deletes at most `batch` (1..100000) rows of each kind that can
 * no longer be used: tokens and keys with expires_at <= now, documents expired at now (and
 * their tokens, keys and credentials), sessions with not_after <= now, and refresh tokens
 * revoked before refresh_before (used long ago: kept until then so that their reuse is still
 * recognised), and exchange records with expires_at <= now. Each kind is its own short transaction,
 * so requests are never held up for long. *out receives this batch's counts (added to nothing): the
 * caller repeats until a batch deletes fewer than `batch` of every kind. Moves the epoch when it
 * deleted anything.
 */
TS_NODISCARD enum ts_rc ts_store_sweep(struct ts_store *st, int64_t now, int64_t refresh_before,
                                       int64_t batch, struct ts_sweep_counts *out);

/*
 * A whole pass: ts_store_sweep batches until nothing is left (sleeping pause_us between
 * batches, so that requests get the database in between), then ts_store_counters_sweep.
 * Stops early, with what it did so far, when *stop (may be NULL) becomes true. *total gets
 * the sums. The server's sweeper thread and `tessera token sweep` call it.
 */
TS_NODISCARD enum ts_rc ts_store_sweep_pass(struct ts_store *st, int64_t now,
                                            int64_t refresh_before, int64_t batch, int64_t pause_us,
                                            const _Atomic bool *stop,
                                            struct ts_sweep_counts *total);

/* ---- change epoch: lets callers cache what they read about users and sessions ---- */

/*
 * A number that grows whenever a user or a session may have changed: every successful write
 * through this store that deletes or alters a session or a user (new sessions included, since
 * they change last_sign_in_at), and, once ts_store_poll_external notices them, commits made by
 * other processes. A cache entry filled from reads that started at epoch E is valid while the
 * epoch is still E. Read it before reading the data it guards.
 *
 * A backend that cannot currently see other processes' commits is "blind" and then returns a
 * new, never-repeating value on every call, so no cache entry is ever valid: PostgreSQL is blind
 * while its LISTEN connection (see ts_store_poll_external) is down or not yet set up, i.e. from
 * ts_store_open until the first ts_store_poll_external that completes LISTEN, and after the
 * connection is lost until it is back (the epoch is bumped once more when it is). SQLite is
 * never blind.
 */
uint64_t ts_store_epoch(struct ts_store *st);
/* Looks for commits by other processes (e.g. the CLI, other nodes) and bumps the epoch if there
 * were any. The server calls it every 100 ms, from one thread; it never blocks. PostgreSQL: drains
 * the notifications (LISTEN tessera_changes) that other nodes' writes send at commit, and
 * (re)connects the listener when it is down. */
void ts_store_poll_external(struct ts_store *st);

/* ---- import from GoTrue (Supabase Auth) ---- */

struct ts_import_stats {
    int64_t users;            /* users created */
    int64_t passwords;        /* of which with a password hash (bcrypt or argon2id) */
    int64_t unusable_hashes;  /* users whose stored hash is in no format we verify */
    int64_t skipped_existing; /* users whose id, e-mail or phone exists already */
    int64_t skipped_deleted;  /* soft-deleted GoTrue users, not copied */
    int64_t other_identities; /* identities of other providers, not copied (no table yet) */
};

/*
 * Copies the users of the GoTrue `auth` schema (source_schema, NULL = "auth") of the
 * PostgreSQL database at source_url into st (either backend): ids, e-mails, phones,
 * confirmation and sign-in times, bans, metadata and password hashes (kept as they are;
 * bcrypt is replaced by argon2id at the next sign-in). Reads one consistent snapshot and
 * writes nothing to the source. Users that exist already (same id, e-mail or phone) are
 * skipped, so the import can be run again. On failure *err is a heap message.
 */
TS_NODISCARD enum ts_rc ts_store_import_gotrue(struct ts_store *st, const char *source_url,
                                               const char *source_schema,
                                               struct ts_import_stats *stats, char **err);

/* ---- audit log: security events (sign-ins, failures, revocations, admin changes) ---- */
/* Best effort: a failure is logged, never returned, so auditing cannot block a sign-in. */
void ts_store_audit(struct ts_store *st, const char *event, const char *actor, const char *target,
                    const char *ip, const char *meta_json);

#endif

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
/* Deletes the user with its credentials, sessions and refresh tokens, atomically. */
TS_NODISCARD enum ts_rc ts_store_user_delete(struct ts_store *st, const char *id);
/* Lists users ordered by creation (oldest first), offset >= 0, limit > 0 (else TS_E_INVALID);
 * filter (may be NULL) matches a substring of the e-mail, case-insensitively. *total counts all
 * matches. */
TS_NODISCARD enum ts_rc ts_store_user_list(struct ts_store *st, int64_t offset, int64_t limit,
                                           const char *filter, struct ts_user ***out, size_t *out_n,
                                           int64_t *total);
void ts_user_list_free(struct ts_user **list, size_t n);

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

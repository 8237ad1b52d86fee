/*
 * store_pg.c - the PostgreSQL backend of store.h (libpq).
 *
 * Design:
 * - Every table lives in one schema (struct ts_store_options.schema, "tessera" by default);
 *   each connection sets search_path to it, so the SQL below names no schema.
 * - Connections live in a pool, as in store_sqlite.c: a connection serves one thread at a
 *   time and keeps the statements it prepared (lazily, under stable names) for its life.
 *   A connection that broke (server restarted, network lost) is closed instead of pooled,
 *   and with it every connection opened before it (they most likely broke too); new ones
 *   are opened on demand, so the store recovers by itself when the database comes back.
 * - Many Tessera nodes may share the database, so every operation must stay correct when
 *   another node runs it at the same moment. Transactions run at READ COMMITTED and take
 *   the row locks their decisions depend on: refresh rotation locks the session and then
 *   the token (the order a cascading delete takes them in), so two nodes rotating one token
 *   are serialised and the second sees it revoked; the user update is a compare-and-swap in
 *   its WHERE clause; a rehash locks the credential it compares; unique indexes decide
 *   sign-up races and the single active signing key. Deadlocks and serialization failures
 *   (40P01, 40001) re-run the whole transaction, up to SERIAL_RETRIES times.
 * - A failure on a pooled connection that lost its server is retried once on a new
 *   connection when nothing can have been committed (a read, or a transaction that had not
 *   sent COMMIT), so a database restart costs the requests in flight, not one per pooled
 *   connection.
 * - Other nodes learn about changes to users and sessions through LISTEN/NOTIFY: every write
 *   store.c bumps the epoch for also runs pg_notify(NOTIFY_CHANNEL, schema) in its
 *   transaction, and poll_external drains a dedicated, non-blocking listener connection.
 *   While that connection is down (or not yet up) the store is "blind" (store.h) and
 *   callers' caches never hit.
 * - Durability is the server's (synchronous_commit); options.durable_full changes nothing.
 *
 * Must never: build SQL from input (everything is bound; the schema name is validated and
 * quoted), or log a bound value (data-exception and constraint messages quote values, so
 * only their SQLSTATE and constraint name are logged).
 */
#include <libpq-fe.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store_int.h"

#define DEFAULT_SCHEMA "tessera"
#define NOTIFY_CHANNEL "tessera_changes"
/* pg_advisory_xact_lock key serialising migrations ("tessera" in ASCII). */
#define MIGRATE_LOCK_KEY "32199672134693217"
#define SERIAL_RETRIES 5
#define DEFAULT_CONNECT_TIMEOUT "10" /* seconds, unless the URL or PGCONNECT_TIMEOUT says */
#define LISTEN_RETRY_US INT64_C(1000000)
#define LISTEN_CONNECT_TIMEOUT_US INT64_C(10000000)
#define LISTEN_PROBE_EVERY_US INT64_C(2000000)
#define LISTEN_PROBE_TIMEOUT_US INT64_C(5000000)

/* ---- migrations: append only; never edit one that has shipped ---- */

static const char *const migrations[] = {
    /* 1: identities, credentials, sessions, refresh tokens, signing keys, audit log */
    "CREATE TABLE meta(key text PRIMARY KEY, value text NOT NULL);"
    "CREATE TABLE identities("
    "  id uuid PRIMARY KEY,"
    "  collection text NOT NULL DEFAULT 'users',"
    "  aud text NOT NULL,"
    "  role text NOT NULL,"
    "  email text,"
    "  phone text,"
    "  email_confirmed_at bigint,"
    "  phone_confirmed_at bigint,"
    "  confirmation_sent_at bigint,"
    "  invited_at bigint,"
    "  last_sign_in_at bigint,"
    "  banned_until bigint,"
    "  deleted_at bigint,"
    "  user_metadata jsonb NOT NULL DEFAULT '{}',"
    "  app_metadata jsonb NOT NULL DEFAULT '{}',"
    "  is_anonymous boolean NOT NULL DEFAULT false,"
    "  expires_at bigint,"
    "  created_at bigint NOT NULL,"
    "  updated_at bigint NOT NULL"
    ");"
    "CREATE UNIQUE INDEX identities_email ON identities(collection, email) WHERE email IS NOT NULL;"
    "CREATE UNIQUE INDEX identities_phone ON identities(collection, phone) WHERE phone IS NOT NULL;"
    "CREATE INDEX identities_created ON identities(collection, created_at, id);"
    "CREATE TABLE credentials("
    "  identity_id uuid NOT NULL REFERENCES identities(id) ON DELETE CASCADE,"
    "  strategy text NOT NULL,"
    "  hash text NOT NULL,"
    "  meta jsonb,"
    "  created_at bigint NOT NULL,"
    "  updated_at bigint NOT NULL,"
    "  PRIMARY KEY(identity_id, strategy)"
    ");"
    "CREATE TABLE sessions("
    "  id uuid PRIMARY KEY,"
    "  identity_id uuid NOT NULL REFERENCES identities(id) ON DELETE CASCADE,"
    "  aal text NOT NULL,"
    "  amr text NOT NULL," /* JSON, but returned byte for byte as it was given */
    "  ip text,"
    "  user_agent text,"
    "  not_after bigint,"
    "  created_at bigint NOT NULL,"
    "  refreshed_at bigint"
    ");"
    "CREATE INDEX sessions_identity ON sessions(identity_id);"
    "CREATE TABLE refresh_tokens("
    "  hash bytea PRIMARY KEY,"
    "  session_id uuid NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,"
    "  parent bytea,"
    "  revoked_at bigint,"
    "  created_at bigint NOT NULL"
    ");"
    "CREATE INDEX refresh_tokens_session ON refresh_tokens(session_id);"
    "CREATE TABLE signing_keys("
    "  kid text PRIMARY KEY,"
    "  alg text NOT NULL,"
    "  private_pem text NOT NULL,"
    "  state text NOT NULL CHECK(state IN ('next','active','retired')),"
    "  created_at bigint NOT NULL,"
    "  state_changed_at bigint NOT NULL"
    ");"
    "CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys(state) WHERE state = 'active';"
    "CREATE TABLE audit_log("
    "  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
    "  created_at bigint NOT NULL,"
    "  event text NOT NULL,"
    "  actor text,"
    "  target text,"
    "  ip text,"
    "  meta jsonb"
    ");",
    /* 2: the counter store (store.h "counters"): token buckets and windowed counters. The
     * rows are updated in place all the time: no index but the key's, so that updates stay
     * HOT, and room left in each page for them. last_allowed is how the one-statement upsert
     * tells its caller what it decided (RETURNING sees only the new row). */
    "CREATE TABLE buckets("
    "  key text PRIMARY KEY,"
    "  full_at bigint NOT NULL," /* when the bucket is full again (no row: full) */
    "  last_allowed boolean NOT NULL"
    ") WITH (fillfactor = 80);"
    "CREATE TABLE counters("
    "  key text PRIMARY KEY,"
    "  value bigint NOT NULL,"
    "  window_start bigint NOT NULL,"
    "  window_end bigint NOT NULL,"
    "  last_allowed boolean NOT NULL"
    ") WITH (fillfactor = 80);",
};

#define MIGRATION_COUNT ((int)TS_ARRAY_LEN(migrations))

/* ---- prepared statements ---- */

#define USER_COLS                                                                                  \
    "i.id, i.aud, i.role, i.email, i.phone, i.email_confirmed_at, i.phone_confirmed_at, "          \
    "i.confirmation_sent_at, i.invited_at, i.last_sign_in_at, i.banned_until, i.deleted_at, "      \
    "i.created_at, i.updated_at, i.user_metadata::text, i.app_metadata::text, i.is_anonymous, "    \
    "EXISTS(SELECT 1 FROM credentials c WHERE c.identity_id = i.id AND c.strategy = 'password')"
#define USER_NCOLS 18

#define EMAIL_FILTER "($1::text IS NULL OR strpos(lower(i.email), lower($1::text)) > 0)"

/*
 * The counters' rules (store.h; ts__bucket_decide and ts__counter_decide in store.c) as SQL,
 * evaluated by one INSERT ... ON CONFLICT DO UPDATE on the row it has locked: the latest
 * committed version, whatever other nodes did meanwhile. In DO UPDATE, b.* and c.* are the
 * row before the update.
 *
 * BUCKET_TAKE: $1 key, $2 now, $3 cost * refill_us, $4 capacity * refill_us (the span).
 */
#define B_DEFICIT "LEAST(GREATEST(b.full_at - $2::bigint, 0), $4::bigint)"
#define B_OK "(" B_DEFICIT " + $3::bigint <= $4::bigint)"
/* COUNTER_ADD: $1 key, $2 delta, $3 window_us, $4 now, $5 limit, $6 the value's maximum. */
#define C_EXPIRED "($4::bigint >= c.window_start + $3::bigint)"
#define C_BASE "(CASE WHEN " C_EXPIRED " THEN 0 ELSE c.value END)"
#define C_START "(CASE WHEN " C_EXPIRED " THEN $4::bigint ELSE c.window_start END)"
#define C_REFUSED "($5::bigint > 0 AND $2::bigint > 0 AND " C_BASE " + $2::bigint > $5::bigint)"

#define STMT_TABLE(X)                                                                              \
    X(PING, "SELECT 1")                                                                            \
    X(META_GET, "SELECT value FROM meta WHERE key = $1::text")                                     \
    X(META_INSERT, "INSERT INTO meta(key, value) VALUES($1::text, $2::text)")                      \
    X(USER_INSERT,                                                                                 \
      "INSERT INTO identities(id, collection, aud, role, email, phone, email_confirmed_at, "       \
      "phone_confirmed_at, confirmation_sent_at, invited_at, last_sign_in_at, banned_until, "      \
      "deleted_at, created_at, updated_at, user_metadata, app_metadata, is_anonymous) "            \
      "VALUES($1::uuid, 'users', $2::text, $3::text, $4::text, $5::text, $6::bigint, $7::bigint, " \
      "$8::bigint, $9::bigint, $10::bigint, $11::bigint, $12::bigint, $13::bigint, $14::bigint, "  \
      "$15::jsonb, $16::jsonb, $17::boolean)")                                                     \
    X(USER_UPDATE,                                                                                 \
      "UPDATE identities SET aud = $2::text, role = $3::text, email = $4::text, "                  \
      "phone = $5::text, email_confirmed_at = $6::bigint, phone_confirmed_at = $7::bigint, "       \
      "confirmation_sent_at = $8::bigint, invited_at = $9::bigint, banned_until = $10::bigint, "   \
      "deleted_at = $11::bigint, updated_at = $12::bigint, user_metadata = $13::jsonb, "           \
      "app_metadata = $14::jsonb, is_anonymous = $15::boolean "                                    \
      "WHERE id = $1::uuid AND collection = 'users' AND updated_at = $16::bigint")                 \
    X(USER_EXISTS, "SELECT 1 FROM identities WHERE id = $1::uuid AND collection = 'users'")        \
    X(USER_GET,                                                                                    \
      "SELECT " USER_COLS " FROM identities i WHERE i.id = $1::uuid AND i.collection = 'users'")   \
    X(USER_BY_EMAIL,                                                                               \
      "SELECT " USER_COLS ", (SELECT c.hash FROM credentials c WHERE c.identity_id = i.id AND "    \
      "c.strategy = 'password') FROM identities i WHERE i.collection = 'users' AND "               \
      "i.email = $1::text")                                                                        \
    X(USER_DELETE, "DELETE FROM identities WHERE id = $1::uuid AND collection = 'users'")          \
    X(USER_LIST,                                                                                   \
      "SELECT " USER_COLS " FROM identities i WHERE i.collection = 'users' AND " EMAIL_FILTER      \
      " ORDER BY i.created_at, i.id LIMIT $2::bigint OFFSET $3::bigint")                           \
    X(USER_COUNT,                                                                                  \
      "SELECT count(*) FROM identities i WHERE i.collection = 'users' AND " EMAIL_FILTER)          \
    X(USER_TOUCH_SIGN_IN,                                                                          \
      "UPDATE identities SET last_sign_in_at = $2::bigint WHERE id = $1::uuid")                    \
    X(PASSWORD_GET,                                                                                \
      "SELECT hash FROM credentials WHERE identity_id = $1::uuid AND strategy = 'password'")       \
    X(PASSWORD_LOCK, "SELECT hash FROM credentials WHERE identity_id = $1::uuid AND "              \
                     "strategy = 'password' FOR UPDATE")                                           \
    X(PASSWORD_UPSERT,                                                                             \
      "INSERT INTO credentials(identity_id, strategy, hash, created_at, updated_at) "              \
      "VALUES($1::uuid, 'password', $2::text, $3::bigint, $3::bigint) "                            \
      "ON CONFLICT(identity_id, strategy) DO UPDATE SET hash = excluded.hash, "                    \
      "updated_at = excluded.updated_at")                                                          \
    X(SESSION_INSERT,                                                                              \
      "INSERT INTO sessions(id, identity_id, aal, amr, ip, user_agent, created_at, refreshed_at) " \
      "VALUES($1::uuid, $2::uuid, $3::text, $4::text, $5::text, $6::text, $7::bigint, NULL)")      \
    X(SESSION_USER,                                                                                \
      "SELECT " USER_COLS " FROM sessions s JOIN identities i ON i.id = s.identity_id "            \
      "WHERE s.id = $1::uuid AND s.identity_id = $2::uuid")                                        \
    X(SESSION_DELETE, "DELETE FROM sessions WHERE id = $1::uuid")                                  \
    X(SESSIONS_DELETE_USER, "DELETE FROM sessions WHERE identity_id = $1::uuid AND "               \
                            "($2::uuid IS NULL OR id <> $2::uuid)")                                \
    X(SESSION_TOUCH,                                                                               \
      "UPDATE sessions SET refreshed_at = $2::bigint, ip = coalesce($3::text, ip), "               \
      "user_agent = coalesce($4::text, user_agent) WHERE id = $1::uuid")                           \
    X(REFRESH_INSERT,                                                                              \
      "INSERT INTO refresh_tokens(hash, session_id, parent, revoked_at, created_at) "              \
      "VALUES($1::bytea, $2::uuid, $3::bytea, NULL, $4::bigint)")                                  \
    X(REFRESH_LOCK_SESSION,                                                                        \
      "SELECT s.id, s.identity_id, s.aal, s.amr FROM sessions s WHERE s.id = "                     \
      "(SELECT r.session_id FROM refresh_tokens r WHERE r.hash = $1::bytea) FOR NO KEY UPDATE")    \
    X(REFRESH_LOCK_TOKEN,                                                                          \
      "SELECT revoked_at FROM refresh_tokens WHERE hash = $1::bytea AND session_id = $2::uuid "    \
      "FOR UPDATE")                                                                                \
    X(REFRESH_REVOKE, "UPDATE refresh_tokens SET revoked_at = $2::bigint WHERE hash = $1::bytea")  \
    X(KEYS_LIST,                                                                                   \
      "SELECT kid, alg, private_pem, state, created_at, state_changed_at FROM signing_keys "       \
      "ORDER BY created_at, kid")                                                                  \
    X(KEY_INSERT,                                                                                  \
      "INSERT INTO signing_keys(kid, alg, private_pem, state, created_at, state_changed_at) "      \
      "VALUES($1::text, $2::text, $3::text, $4::text, $5::bigint, $5::bigint)")                    \
    X(KEY_RETIRE_ACTIVE, "UPDATE signing_keys SET state = 'retired', state_changed_at = "          \
                         "$1::bigint WHERE state = 'active'")                                      \
    X(KEY_ACTIVATE, "UPDATE signing_keys SET state = 'active', state_changed_at = $2::bigint "     \
                    "WHERE kid = $1::text AND state = 'next'")                                     \
    X(KEY_DROP_RETIRED,                                                                            \
      "DELETE FROM signing_keys WHERE state = 'retired' AND state_changed_at < $1::bigint")        \
    X(AUDIT_INSERT, "INSERT INTO audit_log(created_at, event, actor, target, ip, meta) "           \
                    "VALUES($1::bigint, $2::text, $3::text, $4::text, $5::text, $6::jsonb)")       \
    X(BUCKET_TAKE,                                                                                 \
      "INSERT INTO buckets AS b(key, full_at, last_allowed) "                                      \
      "VALUES($1::text, $2::bigint + $3::bigint, true) ON CONFLICT(key) DO UPDATE SET "            \
      "full_at = $2::bigint + " B_DEFICIT " + CASE WHEN " B_OK " THEN $3::bigint ELSE 0 END, "     \
      "last_allowed = " B_OK " RETURNING full_at, last_allowed")                                   \
    X(COUNTER_ADD,                                                                                 \
      "INSERT INTO counters AS c(key, value, window_start, window_end, last_allowed) "             \
      "VALUES($1::text, LEAST(GREATEST($2::bigint, 0), $6::bigint), $4::bigint, "                  \
      "$4::bigint + $3::bigint, true) ON CONFLICT(key) DO UPDATE SET "                             \
      "value = CASE WHEN " C_REFUSED " THEN c.value "                                              \
      "ELSE LEAST(GREATEST(" C_BASE " + $2::bigint, 0), $6::bigint) END, "                         \
      "window_start = CASE WHEN " C_REFUSED " THEN c.window_start ELSE " C_START " END, "          \
      "window_end = CASE WHEN " C_REFUSED " THEN c.window_end "                                    \
      "ELSE " C_START " + $3::bigint END, "                                                        \
      "last_allowed = NOT " C_REFUSED " RETURNING value, window_start, last_allowed")              \
    X(COUNTER_GET, "SELECT value, window_start, window_end FROM counters WHERE key = $1::text")    \
    X(COUNTER_DELETE, "DELETE FROM counters WHERE key = $1::text")                                 \
    X(COUNTERS_SWEEP, "WITH b AS (DELETE FROM buckets WHERE full_at < $1::bigint RETURNING 1), "   \
                      "c AS (DELETE FROM counters WHERE window_end < $1::bigint RETURNING 1) "     \
                      "SELECT (SELECT count(*) FROM b) + (SELECT count(*) FROM c)")                \
    X(SCHEMA_VERSION, "SELECT coalesce(max(version), 0) FROM schema_migrations")                   \
    X(NOTIFY, "SELECT pg_notify('" NOTIFY_CHANNEL "', $1::text)")

enum stmt_id {
#define STMT_ENUM(id, sql) S_##id,
    STMT_TABLE(STMT_ENUM)
#undef STMT_ENUM
        S__COUNT
};

static const char *const stmt_sql[] = {
#define STMT_SQL(id, sql) sql,
    STMT_TABLE(STMT_SQL)
#undef STMT_SQL
};

/* The names the statements are prepared under, also used in log lines. */
static const char *const stmt_name[] = {
#define STMT_NAME(id, sql) "ts_" #id,
    STMT_TABLE(STMT_NAME)
#undef STMT_NAME
};

/* ---- state ---- */

struct pg_conn {
    PGconn *db;
    uint64_t gen;            /* the pool generation it was opened in */
    bool broken;             /* lost its server: close, never pool */
    bool prepared[S__COUNT]; /* statements prepared on this connection */
    struct pg_conn *next;    /* free-list link while pooled */
};

enum listen_state { L_DOWN, L_CONNECTING, L_STARTING, L_UP };

struct pg_store {
    struct ts_store base; /* must be first */
    char *url;
    char schema[64];
    char set_path[96]; /* SET search_path TO "<schema>" */
    pthread_mutex_t pool_lock;
    struct pg_conn *idle; /* connections not in use */
    uint64_t gen;         /* bumped when a connection broke; older idle ones are closed */
    _Atomic int64_t last_connect_log;
    /* The listener: touched only by poll_external (one thread) and close. */
    PGconn *lis;
    enum listen_state lstate;
    PostgresPollingStatusType lis_want; /* what PQconnectPoll waits for while L_CONNECTING */
    int64_t lis_since;                  /* when the current connection attempt started */
    int64_t lis_retry_at;               /* no new attempt before this (monotonic) */
    int64_t probe_at;                   /* when the query in flight (or the last one) was sent */
    bool probe_in_flight;
};

static struct pg_store *pg(struct ts_store *st)
{
    return (struct pg_store *)(void *)st;
}

/* ---- connections ---- */

/* Copies libpq's message for db without its trailing newline. */
static void conn_message(PGconn *db, char *out, size_t cap)
{
    snprintf(out, cap, "%s", db ? PQerrorMessage(db) : "out of memory");
    size_t n = strlen(out);
    while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == ' '))
        out[--n] = '\0';
}

/* Sends the server's notices to our log instead of libpq's stderr default. */
static void on_notice(void *arg, const PGresult *r)
{
    (void)arg;
    const char *sev = PQresultErrorField(r, PG_DIAG_SEVERITY_NONLOCALIZED);
    const char *msg = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
    bool bad = sev && strcmp(sev, "NOTICE") != 0 && strcmp(sev, "DEBUG") != 0 &&
               strcmp(sev, "INFO") != 0 && strcmp(sev, "LOG") != 0;
    ts_log(bad ? TS_LOG_WARN : TS_LOG_DEBUG, "postgres %s: %s", sev ? sev : "notice",
           msg ? msg : "");
}

/* Starts a connection to the store's URL. Parameters before "dbname" are defaults the URL
 * (or the PG* variables) may override; those after it are imposed. */
static PGconn *connect_db(struct pg_store *s, bool nonblocking)
{
    const char *kw[5], *val[5];
    int n = 0;
    kw[n] = "fallback_application_name";
    val[n++] = "tessera";
    if (!getenv("PGCONNECT_TIMEOUT")) {
        kw[n] = "connect_timeout";
        val[n++] = DEFAULT_CONNECT_TIMEOUT;
    }
    kw[n] = "dbname";
    val[n++] = s->url;
    kw[n] = "client_encoding";
    val[n++] = "UTF8";
    kw[n] = NULL;
    val[n] = NULL;
    return nonblocking ? PQconnectStartParams(kw, val, 1) : PQconnectdbParams(kw, val, 1);
}

/* Logs a failure to connect, at most once a second: during an outage every request tries. */
static void log_connect_failure(struct pg_store *s, const char *msg)
{
    int64_t now = ts_mono_us(), last = atomic_load(&s->last_connect_log);
    if (now - last >= 1000000 && atomic_compare_exchange_strong(&s->last_connect_log, &last, now))
        ts_log_error("postgres connect: %s", msg);
}

static void conn_close(struct pg_conn *c)
{
    PQfinish(c->db);
    free(c);
}

/* Opens a connection with search_path set. msg (may be NULL) receives the failure. */
static enum ts_rc conn_open(struct pg_store *s, struct pg_conn **out, char *msg, size_t cap)
{
    char buf[256];
    PGconn *db = connect_db(s, false);
    if (!db || PQstatus(db) != CONNECTION_OK) {
        conn_message(db, buf, sizeof(buf));
        log_connect_failure(s, buf);
        if (msg)
            snprintf(msg, cap, "%s", buf);
        PQfinish(db);
        return TS_E_UNAVAILABLE;
    }
    PQsetNoticeReceiver(db, on_notice, NULL);
    PGresult *r = PQexec(db, s->set_path);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        conn_message(db, buf, sizeof(buf));
        ts_log_error("postgres search_path: %s", buf);
        if (msg)
            snprintf(msg, cap, "%s", buf);
        PQclear(r);
        PQfinish(db);
        return TS_E_UNAVAILABLE;
    }
    PQclear(r);
    struct pg_conn *c = ts_xcalloc(1, sizeof(*c));
    c->db = db;
    pthread_mutex_lock(&s->pool_lock);
    c->gen = s->gen;
    pthread_mutex_unlock(&s->pool_lock);
    *out = c;
    return TS_OK;
}

/* Takes an idle connection of the current generation, or opens one (*fresh then). */
static enum ts_rc acquire(struct pg_store *s, struct pg_conn **out, bool *fresh)
{
    struct pg_conn *stale = NULL, *c;
    pthread_mutex_lock(&s->pool_lock);
    while ((c = s->idle) && c->gen != s->gen) {
        s->idle = c->next;
        c->next = stale;
        stale = c;
    }
    if (c)
        s->idle = c->next;
    pthread_mutex_unlock(&s->pool_lock);
    while (stale) {
        struct pg_conn *next = stale->next;
        conn_close(stale);
        stale = next;
    }
    if (c) {
        *fresh = false;
        *out = c;
        return TS_OK;
    }
    *fresh = true;
    return conn_open(s, out, NULL, 0);
}

/* Pools c again, or closes it when it broke or was left inside a transaction. */
static void release(struct pg_store *s, struct pg_conn *c)
{
    bool ok = !c->broken && PQstatus(c->db) == CONNECTION_OK &&
              PQtransactionStatus(c->db) == PQTRANS_IDLE;
    pthread_mutex_lock(&s->pool_lock);
    if (ok) {
        c->next = s->idle;
        s->idle = c;
    } else if (c->broken && c->gen == s->gen) {
        s->gen++; /* the connections opened before this one probably broke too */
    }
    pthread_mutex_unlock(&s->pool_lock);
    if (!ok)
        conn_close(c);
}

/* ---- one operation: attempts, transactions, statements ---- */

/*
 * An operation runs as a loop of attempts, each on a connection from the pool:
 *
 *     struct op t; enum ts_rc rc = TS_OK;
 *     for (op_start(&t, s, read_only); op_next(&t, &rc);)
 *         rc = body(&t, ...);
 *
 * The body writes its outputs only when it returns TS_OK (which ends the loop). op_next
 * starts another attempt after a deadlock or serialization failure, or after the pooled
 * connection turned out dead when nothing can have been committed.
 */
struct op {
    struct pg_store *s;
    struct pg_conn *c; /* the attempt's connection, NULL before the first */
    int attempt;
    bool read_only;   /* the operation writes nothing */
    bool fresh;       /* c was opened for this attempt */
    bool in_tx;       /* a transaction is open and COMMIT not yet sent */
    bool serial;      /* the last failure was a deadlock or serialization failure */
    bool lost;        /* the last failure was the connection's */
    bool lost_unsent; /* ... and nothing can have been committed */
};

static void op_start(struct op *t, struct pg_store *s, bool read_only)
{
    memset(t, 0, sizeof(*t));
    t->s = s;
    t->read_only = read_only;
    t->attempt = -1;
}

static enum ts_rc tx_rollback(struct op *t);

static bool op_next(struct op *t, enum ts_rc *rc)
{
    if (t->c) {
        if (t->in_tx)
            (void)tx_rollback(t); /* a body that forgot tx_end; never expected */
        bool again = false;
        if (*rc != TS_OK) {
            if (t->serial) {
                again = t->attempt < SERIAL_RETRIES;
                if (!again)
                    ts_log_warn("postgres: still deadlocked or not serializable after %d "
                                "attempts; giving up",
                                t->attempt + 1);
            } else if (t->lost)
                again = t->lost_unsent && !t->fresh && t->attempt == 0;
        }
        release(t->s, t->c);
        t->c = NULL;
        if (!again)
            return false;
        if (t->serial) {
            /* Let the transaction we collided with finish: 1, 2, 4... ms, plus jitter. */
            unsigned jitter;
            ts_rand_bytes(&jitter, sizeof(jitter));
            usleep((useconds_t)((1000u << t->attempt) + jitter % 1000u));
        }
    }
    t->attempt++;
    t->serial = t->lost = t->lost_unsent = false;
    t->in_tx = false;
    enum ts_rc r = acquire(t->s, &t->c, &t->fresh);
    if (r) {
        t->c = NULL;
        *rc = r;
        return false;
    }
    return true;
}

static bool class_is(const char *state, const char *cls)
{
    return strncmp(state, cls, 2) == 0;
}

/* Maps a failed result (r may be NULL) to our code, records what op_next needs, and logs
 * what is unexpected. */
static enum ts_rc fail(struct op *t, const PGresult *r, const char *what)
{
    PGconn *db = t->c->db;
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    if (PQstatus(db) != CONNECTION_OK ||
        (state && (class_is(state, "08") || strcmp(state, "57P01") == 0 ||
                   strcmp(state, "57P02") == 0 || strcmp(state, "57P03") == 0))) {
        char msg[256];
        conn_message(db, msg, sizeof(msg));
        t->c->broken = true;
        t->lost = true;
        t->lost_unsent = t->read_only || t->in_tx;
        ts_log_warn("postgres %s: connection lost (%s)", what, msg);
        return TS_E_UNAVAILABLE;
    }
    if (!state) {
        char msg[256];
        conn_message(db, msg, sizeof(msg));
        ts_log_error("postgres %s: %s", what, msg);
        return TS_E_STORE;
    }
    if (strcmp(state, "23505") == 0)
        return TS_E_CONFLICT;
    if (strcmp(state, "23503") == 0)
        return TS_E_NOT_FOUND;
    if (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0) {
        t->serial = true;
        ts_log_debug("postgres %s: %s, attempt %d", what, state, t->attempt + 1);
        return TS_E_UNAVAILABLE;
    }
    const char *msg = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
    if (class_is(state, "22") || class_is(state, "23")) {
        /* Their messages quote the offending value. */
        const char *constraint = PQresultErrorField(r, PG_DIAG_CONSTRAINT_NAME);
        ts_log_error("postgres %s: SQLSTATE %s%s%s", what, state, constraint ? " on " : "",
                     constraint ? constraint : "");
        return TS_E_STORE;
    }
    bool unavailable = class_is(state, "53") || strcmp(state, "25006") == 0 ||
                       strcmp(state, "55P03") == 0 || strcmp(state, "57014") == 0;
    ts_log_error("postgres %s: %s (SQLSTATE %s)", what, msg ? msg : "?", state);
    return unavailable ? TS_E_UNAVAILABLE : TS_E_STORE;
}

/* Parameters of one statement: text, except byte strings (binary). */
#define MAX_PARAMS 20

struct params {
    int n;
    const char *v[MAX_PARAMS];
    int len[MAX_PARAMS];
    int fmt[MAX_PARAMS];
    char num[MAX_PARAMS][24];
};

static void p_text(struct params *p, const char *v)
{
    TS_ASSERT(p->n < MAX_PARAMS);
    p->v[p->n] = v;
    p->len[p->n] = 0;
    p->fmt[p->n] = 0;
    p->n++;
}

static void p_i64(struct params *p, int64_t v)
{
    TS_ASSERT(p->n < MAX_PARAMS);
    snprintf(p->num[p->n], sizeof(p->num[p->n]), "%lld", (long long)v);
    p_text(p, p->num[p->n]);
}

/* A time: 0 is NULL. */
static void p_time(struct params *p, int64_t v)
{
    if (v)
        p_i64(p, v);
    else
        p_text(p, NULL);
}

static void p_bool(struct params *p, bool v)
{
    p_text(p, v ? "t" : "f");
}

static void p_bytes(struct params *p, const uint8_t *b, int n)
{
    TS_ASSERT(p->n < MAX_PARAMS);
    p->v[p->n] = (const char *)b;
    p->len[p->n] = n;
    p->fmt[p->n] = 1;
    p->n++;
}

/* Runs statement id on the attempt's connection, preparing it first if this connection
 * never did. Returns the result (the caller clears it), or NULL with *rc set. */
static PGresult *q(struct op *t, enum stmt_id id, const struct params *p, enum ts_rc *rc)
{
    PGconn *db = t->c->db;
    if (!t->c->prepared[id]) {
        PGresult *r = PQprepare(db, stmt_name[id], stmt_sql[id], 0, NULL);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            *rc = fail(t, r, stmt_name[id]);
            PQclear(r);
            return NULL;
        }
        PQclear(r);
        t->c->prepared[id] = true;
    }
    static const struct params none;
    if (!p)
        p = &none;
    PGresult *r = PQexecPrepared(db, stmt_name[id], p->n, p->v, p->len, p->fmt, 0);
    ExecStatusType es = PQresultStatus(r);
    if (es == PGRES_COMMAND_OK || es == PGRES_TUPLES_OK)
        return r;
    *rc = fail(t, r, stmt_name[id]);
    PQclear(r);
    return NULL;
}

/* Runs a statement whose rows are not needed; *changed (may be NULL) gets the row count. */
static enum ts_rc run(struct op *t, enum stmt_id id, const struct params *p, int64_t *changed)
{
    enum ts_rc rc = TS_OK;
    PGresult *r = q(t, id, p, &rc);
    if (!r)
        return rc;
    if (changed) {
        const char *n = PQcmdTuples(r);
        *changed = *n ? strtoll(n, NULL, 10) : PQntuples(r);
    }
    PQclear(r);
    return TS_OK;
}

/* Runs SQL text (no parameters, or p) outside the statement cache. */
static enum ts_rc exec_sql(struct op *t, const char *sql, const struct params *p, const char *what,
                           PGresult **out)
{
    PGresult *r = p ? PQexecParams(t->c->db, sql, p->n, NULL, p->v, p->len, p->fmt, 0)
                    : PQexec(t->c->db, sql);
    ExecStatusType es = PQresultStatus(r);
    if (es != PGRES_COMMAND_OK && es != PGRES_TUPLES_OK) {
        enum ts_rc rc = fail(t, r, what);
        PQclear(r);
        return rc;
    }
    if (out)
        *out = r;
    else
        PQclear(r);
    return TS_OK;
}

static enum ts_rc tx_begin(struct op *t)
{
    t->in_tx = true; /* set first: losing the connection during BEGIN commits nothing */
    enum ts_rc rc = exec_sql(t, "BEGIN ISOLATION LEVEL READ COMMITTED", NULL, "begin", NULL);
    if (rc)
        t->in_tx = false;
    return rc;
}

static enum ts_rc tx_rollback(struct op *t)
{
    t->in_tx = false;
    if (PQstatus(t->c->db) != CONNECTION_OK || PQtransactionStatus(t->c->db) == PQTRANS_IDLE)
        return TS_OK;
    return exec_sql(t, "ROLLBACK", NULL, "rollback", NULL);
}

/* Commits when rc is TS_OK, else rolls back; returns the first error. */
static enum ts_rc tx_end(struct op *t, enum ts_rc rc)
{
    if (rc == TS_OK) {
        t->in_tx = false; /* from here on, a lost connection may have committed */
        PGresult *r = NULL;
        rc = exec_sql(t, "COMMIT", NULL, "commit", &r);
        /* COMMIT of a failed transaction "succeeds" as ROLLBACK: never expected here. */
        if (!rc && strcmp(PQcmdStatus(r), "COMMIT") != 0) {
            ts_log_error("postgres commit: rolled back instead");
            rc = TS_E_STORE;
        }
        PQclear(r);
    } else {
        /* Keep the first error; a failed rollback closes the connection (release). */
        (void)tx_rollback(t);
    }
    return rc;
}

/* Tells the other nodes (poll_external) that users or sessions changed, at commit. */
static enum ts_rc notify(struct op *t)
{
    struct params p = {0};
    p_text(&p, t->s->schema);
    return run(t, S_NOTIFY, &p, NULL);
}

/* ---- reading rows ---- */

static char *col_dup(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? NULL : ts_xstrdup(PQgetvalue(r, row, col));
}

static int64_t col_i64(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? 0 : strtoll(PQgetvalue(r, row, col), NULL, 10);
}

static bool col_bool(const PGresult *r, int row, int col)
{
    return !PQgetisnull(r, row, col) && PQgetvalue(r, row, col)[0] == 't';
}

static json_t *col_json_object(const PGresult *r, int row, int col)
{
    json_t *j = PQgetisnull(r, row, col) ? NULL : json_loads(PQgetvalue(r, row, col), 0, NULL);
    if (!json_is_object(j)) {
        json_decref(j);
        j = json_object();
    }
    return j;
}

static struct ts_user *row_to_user(const PGresult *r, int row)
{
    struct ts_user *u = ts_xcalloc(1, sizeof(*u));
    snprintf(u->id, sizeof(u->id), "%s", PQgetvalue(r, row, 0));
    u->aud = col_dup(r, row, 1);
    u->role = col_dup(r, row, 2);
    if (!u->aud)
        u->aud = ts_xstrdup("");
    if (!u->role)
        u->role = ts_xstrdup("");
    u->email = col_dup(r, row, 3);
    u->phone = col_dup(r, row, 4);
    u->email_confirmed_at = col_i64(r, row, 5);
    u->phone_confirmed_at = col_i64(r, row, 6);
    u->confirmation_sent_at = col_i64(r, row, 7);
    u->invited_at = col_i64(r, row, 8);
    u->last_sign_in_at = col_i64(r, row, 9);
    u->banned_until = col_i64(r, row, 10);
    u->deleted_at = col_i64(r, row, 11);
    u->created_at = col_i64(r, row, 12);
    u->updated_at = col_i64(r, row, 13);
    u->user_metadata = col_json_object(r, row, 14);
    u->app_metadata = col_json_object(r, row, 15);
    u->is_anonymous = col_bool(r, row, 16);
    u->has_password = col_bool(r, row, 17);
    return u;
}

/* Runs a query expected to return at most one user row. */
static enum ts_rc one_user(struct op *t, enum stmt_id id, const struct params *p,
                           struct ts_user **out, char **out_hash)
{
    enum ts_rc rc = TS_OK;
    PGresult *r = q(t, id, p, &rc);
    if (!r)
        return rc;
    if (PQntuples(r) > 0) {
        *out = row_to_user(r, 0);
        if (out_hash)
            *out_hash = col_dup(r, 0, USER_NCOLS);
    } else {
        rc = TS_E_NOT_FOUND;
    }
    PQclear(r);
    return rc;
}

/* ---- operations ---- */

static void pg_close(struct ts_store *st)
{
    struct pg_store *s = pg(st);
    while (s->idle) {
        struct pg_conn *c = s->idle;
        s->idle = c->next;
        conn_close(c);
    }
    if (s->lis)
        PQfinish(s->lis);
    pthread_mutex_destroy(&s->pool_lock);
    free(s->url);
    free(s);
}

static enum ts_rc current_version(struct op *t, int *out)
{
    enum ts_rc rc = TS_OK;
    PGresult *r = q(t, S_SCHEMA_VERSION, NULL, &rc);
    if (!r)
        return rc;
    *out = PQntuples(r) > 0 ? (int)col_i64(r, 0, 0) : 0;
    PQclear(r);
    return TS_OK;
}

/* One attempt at migrating: everything in one transaction under an advisory lock, so nodes
 * starting together migrate once (the others wait, then find nothing to do). *failed_at is
 * the migration that failed, 0 if none did. */
static enum ts_rc migrate_once(struct op *t, int *applied, int *failed_at)
{
    *applied = 0;
    *failed_at = 0;
    struct pg_store *s = t->s;
    enum ts_rc rc = tx_begin(t);
    if (rc)
        return rc;
    rc = exec_sql(t, "SELECT pg_advisory_xact_lock(" MIGRATE_LOCK_KEY ")", NULL, "migrate lock",
                  NULL);
    /* CREATE SCHEMA IF NOT EXISTS needs CREATE on the database even when the schema exists,
     * so look first: a DBA may have created it and granted us only the schema. */
    PGresult *r = NULL;
    struct params p = {0};
    p_text(&p, s->schema);
    if (!rc)
        rc = exec_sql(t, "SELECT 1 FROM pg_namespace WHERE nspname = $1::text", &p, "schema check",
                      &r);
    if (!rc) {
        bool exists = PQntuples(r) > 0;
        PQclear(r);
        if (!exists) {
            char sql[128];
            snprintf(sql, sizeof(sql), "CREATE SCHEMA \"%s\"", s->schema);
            rc = exec_sql(t, sql, NULL, "create schema", NULL);
            if (!rc)
                rc = exec_sql(t, s->set_path, NULL, "search_path", NULL);
        }
    }
    if (!rc)
        rc = exec_sql(t,
                      "CREATE TABLE IF NOT EXISTS schema_migrations("
                      "version integer PRIMARY KEY, applied_at bigint NOT NULL)",
                      NULL, "migrations table", NULL);
    int version = 0;
    if (!rc)
        rc = exec_sql(t, "SELECT coalesce(max(version), 0) FROM schema_migrations", NULL,
                      "schema version", &r);
    if (!rc) {
        version = (int)col_i64(r, 0, 0);
        PQclear(r);
    }
    for (int v = version + 1; !rc && v <= MIGRATION_COUNT; v++) {
        rc = exec_sql(t, migrations[v - 1], NULL, "migration", NULL);
        if (!rc) {
            struct params mp = {0};
            p_i64(&mp, v);
            p_i64(&mp, ts_now_us());
            rc = exec_sql(t,
                          "INSERT INTO schema_migrations(version, applied_at) "
                          "VALUES($1::integer, $2::bigint)",
                          &mp, "record migration", NULL);
        }
        if (rc)
            *failed_at = v;
        else
            ++*applied;
    }
    rc = tx_end(t, rc);
    if (rc)
        *applied = 0;
    return rc;
}

static enum ts_rc pg_migrate(struct ts_store *st, int *applied, char **err)
{
    struct pg_store *s = pg(st);
    struct op t;
    enum ts_rc rc = TS_OK;
    int n = 0, failed_at = 0;
    for (op_start(&t, s, false); op_next(&t, &rc);)
        rc = migrate_once(&t, &n, &failed_at);
    if (rc) {
        if (failed_at)
            *err =
                ts_xasprintf("migration %d failed on PostgreSQL schema %s", failed_at, s->schema);
        else
            *err =
                ts_xasprintf("cannot migrate PostgreSQL schema %s (%s)", s->schema, ts_rc_name(rc));
        return rc;
    }
    if (applied)
        *applied = n;
    return TS_OK;
}

static enum ts_rc pg_schema_version(struct ts_store *st, int *current, int *latest)
{
    struct op t;
    enum ts_rc rc = TS_OK;
    int v = 0;
    for (op_start(&t, pg(st), true); op_next(&t, &rc);)
        rc = current_version(&t, &v);
    if (!rc) {
        *current = v;
        *latest = MIGRATION_COUNT;
    }
    return rc;
}

static enum ts_rc pg_ping(struct ts_store *st)
{
    struct op t;
    enum ts_rc rc = TS_OK;
    for (op_start(&t, pg(st), true); op_next(&t, &rc);)
        rc = run(&t, S_PING, NULL, NULL);
    return rc;
}

static enum ts_rc meta_get(struct op *t, const char *key, char **out)
{
    struct params p = {0};
    p_text(&p, key);
    enum ts_rc rc = TS_OK;
    PGresult *r = q(t, S_META_GET, &p, &rc);
    if (!r)
        return rc;
    if (PQntuples(r) > 0)
        *out = col_dup(r, 0, 0);
    else
        rc = TS_E_NOT_FOUND;
    PQclear(r);
    return rc;
}

static enum ts_rc pg_meta_get(struct ts_store *st, const char *key, char **out)
{
    struct op t;
    enum ts_rc rc = TS_OK;
    for (op_start(&t, pg(st), true); op_next(&t, &rc);)
        rc = meta_get(&t, key, out);
    return rc;
}

static enum ts_rc pg_meta_insert(struct ts_store *st, const char *key, const char *value)
{
    struct params p = {0};
    p_text(&p, key);
    p_text(&p, value);
    struct op t;
    enum ts_rc rc = TS_OK;
    for (op_start(&t, pg(st), false); op_next(&t, &rc);)
        rc = run(&t, S_META_INSERT, &p, NULL);
    return rc;
}

static enum ts_rc upsert_password(struct op *t, const char *user_id, const char *hash, int64_t now)
{
    struct params p = {0};
    p_text(&p, user_id);
    p_text(&p, hash);
    p_i64(&p, now);
    return run(t, S_PASSWORD_UPSERT, &p, NULL);
}

/* The user's fields in USER_INSERT order ($1..$17). um and am are its JSON texts. */
static void user_insert_params(struct params *p, const struct ts_user *u, const char *um,
                               const char *am)
{
    p_text(p, u->id);
    p_text(p, u->aud);
    p_text(p, u->role);
    p_text(p, u->email);
    p_text(p, u->phone);
    p_time(p, u->email_confirmed_at);
    p_time(p, u->phone_confirmed_at);
    p_time(p, u->confirmation_sent_at);
    p_time(p, u->invited_at);
    p_time(p, u->last_sign_in_at);
    p_time(p, u->banned_until);
    p_time(p, u->deleted_at);
    p_i64(p, u->created_at);
    p_i64(p, u->updated_at);
    p_text(p, um);
    p_text(p, am);
    p_bool(p, u->is_anonymous);
}

/* USER_UPDATE's parameters: the mutable fields, then the expected updated_at ($16). It leaves
 * out created_at, which never changes, and last_sign_in_at, which only session_create
 * writes, so that an update racing a sign-in cannot put back an older sign-in time. */
static void user_update_params(struct params *p, const struct ts_user *u, const char *um,
                               const char *am, int64_t expected)
{
    p_text(p, u->id);
    p_text(p, u->aud);
    p_text(p, u->role);
    p_text(p, u->email);
    p_text(p, u->phone);
    p_time(p, u->email_confirmed_at);
    p_time(p, u->phone_confirmed_at);
    p_time(p, u->confirmation_sent_at);
    p_time(p, u->invited_at);
    p_time(p, u->banned_until);
    p_time(p, u->deleted_at);
    p_i64(p, u->updated_at);
    p_text(p, um);
    p_text(p, am);
    p_bool(p, u->is_anonymous);
    p_i64(p, expected);
}

static enum ts_rc user_create(struct op *t, const struct params *p, const char *id,
                              const char *hash, int64_t created_at)
{
    enum ts_rc rc = tx_begin(t);
    if (rc)
        return rc;
    rc = run(t, S_USER_INSERT, p, NULL);
    if (!rc && hash)
        rc = upsert_password(t, id, hash, created_at);
    return tx_end(t, rc);
}

static enum ts_rc pg_user_create(struct ts_store *st, const struct ts_user *u, const char *hash)
{
    if (!ts_uuid_valid(u->id))
        return TS_E_INVALID; /* the uuid column cannot hold it */
    char *um = json_dumps(u->user_metadata, JSON_COMPACT);
    char *am = json_dumps(u->app_metadata, JSON_COMPACT);
    struct params p = {0};
    user_insert_params(&p, u, um ? um : "{}", am ? am : "{}");
    struct op t;
    enum ts_rc rc = TS_OK;
    for (op_start(&t, pg(st), false); op_next(&t, &rc);)
        rc = user_create(&t, &p, u->id, hash, u->created_at);
    free(um);
    free(am);
    return rc;
}

static enum ts_rc pg_user_get(struct ts_store *st, const char *id, struct ts_user **out)
{
    if (!ts_uuid_valid(id))
        return TS_E_NOT_FOUND;
    struct params p = {0};
    p_text(&p, id);
    struct op t;
    enum ts_rc rc = TS_OK;
    for (op_start(&t, pg(st), true); op_next(&t, &rc);)
        rc = one_user(&t, S_USER_GET, &p, out, NULL);
    return rc;
}

static enum ts_rc pg_user_get_by_email(struct ts_store *st, const char *email, struct ts_user **out,
                                       char **out_hash)
{
    struct params p = {0};
    p_text(&p, email);
    struct op t;
    enum ts_rc rc = TS_OK;
    char *hash = NULL;
    for (op_start(&t, pg(st), true); op_next(&t, &rc);)
        rc = one_user(&t, S_USER_BY_EMAIL, &p, out, &hash);
    if (!rc && out_hash) {
        *out_hash = hash;
    } else if (hash) {
        ts_wipe(hash, strlen(hash));
        free(hash);
    }
    return rc;
}

static enum ts_rc user_update(struct op *t, const struct params *p)
{
    enum ts_rc rc = tx_begin(t);
    if (rc)
        return rc;
    int64_t n = 0;
    rc = run(t, S_USER_UPDATE, p, &n);
    if (!rc && n == 0) {
        /* Gone, or changed since the caller read it. A concurrent writer's committed
         * update makes ours re-check the WHERE clause against the new row: no lost write. */
        struct params e = {0};
        p_text(&e, p->v[0]);
        int64_t found = 0;
        rc = run(t, S_USER_EXISTS, &e, &found);
        if (!rc)
            rc = found ? TS_E_STALE : TS_E_NOT_FOUND;
    }
    if (!rc)
        rc = notify(t);
    return tx_end(t, rc);
}

static enum ts_rc pg_user_update(struct ts_store *st, const struct ts_user *u, int64_t expected)
{
    if (!ts_uuid_valid(u->id))
        return TS_E_NOT_FOUND;
    char *um = json_dumps(u->user_metadata, JSON_COMPACT);
    char *am = json_dumps(u->app_metadata, JSON_COMPACT);
    struct params p = {0};
    user_update_params(&p, u, um ? um : "{}", am ? am : "{}", expected);
    struct op t;
    enum ts_rc rc = TS_OK;
    for (op_start(&t, pg(st), false); op_next(&t, &rc);)
        rc = user_update(&t, &p);
    free(um);
    free(am);
    return rc;
}

/* Deletes with statement id (one parameter) in a transaction that notifies the other nodes;
 * TS_E_NOT_FOUND when nothing was deleted. */
static enum ts_rc delete_one(struct op *t, enum stmt_id id, const struct params *p)
{
    enum ts_rc rc = tx_begin(t);
    if (rc)
        return rc;
    int64_t n = 0;
    rc = run(t, id, p, &n);
    if (!rc && n == 0)
        rc = TS_E_NOT_FOUND;
    if (!rc)
        rc = notify(t);
    return tx_end(t, rc);
}

static enum ts_rc pg_user_delete(struct ts_store *st, const char *id)
{
    if (!ts_uuid_valid(id))
        return TS_E_NOT_FOUND;
    struct params p = {0};
    p_text(&p, id);
    struct op t;
    enum ts_rc rc = TS_OK;
    for (op_start(&t, pg(st), false); op_next(&t, &rc);)
        rc = delete_one(&t, S_USER_DELETE, &p);
    return rc;
}

static enum ts_rc user_list(struct op *t, int64_t offset, int64_t limit, const char *filter,
                            struct ts_user ***out, size_t *out_n, int64_t *total)
{
    struct params p = {0};
    p_text(&p, filter);
    enum ts_rc rc = TS_OK;
    PGresult *r = q(t, S_USER_COUNT, &p, &rc);
    if (!r)
        return rc;
    int64_t count = col_i64(r, 0, 0);
    PQclear(r);
    p_i64(&p, limit);
    p_i64(&p, offset);
    r = q(t, S_USER_LIST, &p, &rc);
    if (!r)
        return rc;
    int rows = PQntuples(r);
    size_t n = rows > 0 && (int64_t)rows <= limit ? (size_t)rows : 0;
    struct ts_user **list = ts_xcalloc(n ? n : 1, sizeof(*list));
    for (size_t i = 0; i < n; i++)
        list[i] = row_to_user(r, (int)i);
    PQclear(r);
    *out = list;
    *out_n = n;
    *total = count;
    return TS_OK;
}

static enum ts_rc pg_user_list(struct ts_store *st, int64_t offset, int64_t limit,
                               const char *filter, struct ts_user ***out, size_t *out_n,
                               int64_t *total)
{
    if (limit <= 0 || offset < 0)
        return TS_E_INVALID;
    struct op t;
    enum ts_rc rc = TS_OK;
    for (op_start(&t, pg(st), true); op_next(&t, &rc);)
        rc = user_list(&t, offset, limit, filter, out, out_n, total);
    return rc;
}

static enum ts_rc password_get(struct op *t, const struct params *p, char **out_hash)
{
    enum ts_rc rc = TS_OK;
    PGresult *r = q(t, S_PASSWORD_GET, p, &rc);
    if (!r)
        return rc;
    if (PQntuples(r) > 0)
        *out_hash = col_dup(r, 0, 0);
    else
        rc = TS_E_NOT_FOUND;
    PQclear(r);
    return rc;
}

static enum ts_rc pg_password_get(struct ts_store *st, const char *user_id, char **out_hash)
{
    if (!ts_uuid_valid(user_id))
        return TS_E_NOT_FOUND;
    struct params p = {0};
    p_text(&p, user_id);
    struct op t;
    enum ts_rc rc = TS_OK;
    for (op_start(&t, pg(st), true); op_next(&t, &rc);)
        rc = password_get(&t, &p, out_hash);
    return rc;
}

/* keep (may be NULL) is a session id that no row can have when it is not a UUID: treat it
 * as none, which deletes what the SQLite backend would. */
static enum ts_rc delete_user_sessions(struct op *t, const char *user_id, const char *keep,
                                       int64_t *deleted)
{
    struct params p = {0};
    p_text(&p, user_id);
    p_text(&p, keep && ts_uuid_valid(keep) ? keep : NULL);
    return run(t, S_SESSIONS_DELETE_USER, &p, deleted);
}

static enum ts_rc password_set(struct op *t, const char *user_id, const char *hash,
                               const char *expect_old, bool revoke, const char *keep_session,
                               int64_t now)
{
    enum ts_rc rc = tx_begin(t);
    if (rc)
        return rc;
    if (expect_old) {
        /* Locked until commit: a concurrent change waits for us, and we for it. */
        struct params p = {0};
        p_text(&p, user_id);
        PGresult *r = q(t, S_PASSWORD_LOCK, &p, &rc);
        if (r) {
            if (PQntuples(r) == 0 || PQgetisnull(r, 0, 0) ||
                strcmp(PQgetvalue(r, 0, 0), expect_old) != 0)
                rc = TS_E_CONFLICT;
            PQclear(r);
        }
    }
    if (!rc)
        rc = upsert_password(t, user_id, hash, now);
    if (!rc && revoke)
        rc = delete_user_sessions(t, user_id, keep_session, NULL);
    if (!rc)
        rc = notify(t);
    return tx_end(t, rc);
}

static enum ts_rc pg_password_set(struct ts_store *st, const char *user_id, const char *hash,
                                  const char *expect_old, bool revoke, const char *keep_session,
                                  int64_t now)
{
    if (!ts_uuid_valid(user_id))
        return expect_old ? TS_E_CONFLICT : TS_E_NOT_FOUND; /* as for an unknown user */
    struct op t;
    enum ts_rc rc = TS_OK;
    for (op_start(&t, pg(st), false); op_next(&t, &rc);)
        rc = password_set(&t, user_id, hash, expect_old, revoke, keep_session, now);
    return rc;
}

static enum ts_rc insert_refresh(struct op *t, const uint8_t hash[TS_REFRESH_HASH_LEN],
                                 const char *session_id, const uint8_t *parent, int64_t now)
{
    struct params p = {0};
    p_bytes(&p, hash, TS_REFRESH_HASH_LEN);
    p_text(&p, session_id);
    if (parent)
        p_bytes(&p, parent, TS_REFRESH_HASH_LEN);
    else
        p_text(&p, NULL);
    p_i64(&p, now);
    return run(t, S_REFRESH_INSERT, &p, NULL);
}

static enum ts_rc session_create(struct op *t, const struct ts_session_new *n, const char *id)
{
    enum ts_rc rc = tx_begin(t);
    if (rc)
        return rc;
    struct params p = {0};
    p_text(&p, id);
    p_text(&p, n->user_id);
    p_text(&p, n->aal);
    p_text(&p, n->amr_json);
    p_text(&p, n->ip);
    p_text(&p, n->user_agent);
    p_i64(&p, n->now);
    rc = run(t, S_SESSION_INSERT, &p, NULL);
    if (!rc)
        rc = insert_refresh(t, n->refresh_hash, id, NULL, n->now);
    if (!rc) {
        struct params tp = {0};
        p_text(&tp, n->user_id);
        p_i64(&tp, n->now);
        rc = run(t, S_USER_TOUCH_SIGN_IN, &tp, NULL);
    }
    if (!rc)
        rc = notify(t);
    return tx_end(t, rc);
}

static enum ts_rc pg_session_create(struct ts_store *st, const struct ts_session_new *n,
                                    char session_id[TS_STORE_ID_LEN + 1])
{
    if (!ts_uuid_valid(n->user_id))
        return TS_E_NOT_FOUND;
    char id[TS_STORE_ID_LEN + 1];
    ts_uuid_v4(id);
    struct op t;
    enum ts_rc rc = TS_OK;
    for (op_start(&t, pg(st), false); op_next(&t, &rc);)
        rc = session_create(&t, n, id);
    if (!rc)
        memcpy(session_id, id, sizeof(id));
    return rc;
}

static enum ts_rc pg_session_user(struct ts_store *st, const char *session_id, const char *user_id,
                                  struct ts_user **out)
{
    if (!ts_uuid_valid(session_id) || !ts_uuid_valid(user_id))
        return TS_E_NOT_FOUND;
    struct params p = {0};
    p_text(&p, session_id);
    p_text(&p, user_id);
    struct op t;
    enum ts_rc rc = TS_OK;
    for (op_start(&t, pg(st), true); op_next(&t, &rc);)
        rc = one_user(&t, S_SESSION_USER, &p, out, NULL);
    return rc;
}

static enum ts_rc pg_session_delete(struct ts_store *st, const char *session_id)
{
    if (!ts_uuid_valid(session_id))
        return TS_E_NOT_FOUND;
    struct params p = {0};
    p_text(&p, session_id);
    struct op t;
    enum ts_rc rc = TS_OK;
    for (op_start(&t, pg(st), false); op_next(&t, &rc);)
        rc = delete_one(&t, S_SESSION_DELETE, &p);
    return rc;
}

static enum ts_rc sessions_delete_for_user(struct op *t, const char *user_id, const char *except,
                                           int64_t *deleted)
{
    enum ts_rc rc = tx_begin(t);
    if (rc)
        return rc;
    int64_t n = 0;
    rc = delete_user_sessions(t, user_id, except, &n);
    if (!rc && n > 0)
        rc = notify(t);
    rc = tx_end(t, rc);
    if (!rc && deleted)
        *deleted = n;
    return rc;
}

static enum ts_rc pg_sessions_delete_for_user(struct ts_store *st, const char *user_id,
                                              const char *except_session, int64_t *deleted)
{
    if (!ts_uuid_valid(user_id)) {
        if (deleted)
            *deleted = 0; /* no such user, so no sessions */
        return TS_OK;
    }
    struct op t;
    enum ts_rc rc = TS_OK;
    for (op_start(&t, pg(st), false); op_next(&t, &rc);)
        rc = sessions_delete_for_user(&t, user_id, except_session, deleted);
    return rc;
}

static enum ts_rc touch_session(struct op *t, const char *session_id,
                                const struct ts_refresh_request *req)
{
    struct params p = {0};
    p_text(&p, session_id);
    p_i64(&p, req->now);
    p_text(&p, req->ip);
    p_text(&p, req->user_agent);
    return run(t, S_SESSION_TOUCH, &p, NULL);
}

/*
 * The refresh grant's state machine (same outcomes as store_sqlite.c). The session row is
 * locked first, then the token: the order in which deleting a session (logout, user
 * deletion, reuse detection) takes them, so the two never deadlock, and every rotation in
 * one session waits for the one before it and then reads the token as it committed it.
 */
static enum ts_rc refresh_rotate(struct op *t, const struct ts_refresh_request *req,
                                 struct ts_refresh_result *out)
{
    enum ts_rc rc = tx_begin(t);
    if (rc)
        return rc;
    struct ts_refresh_result res;
    memset(&res, 0, sizeof(res));
    res.outcome = TS_REFRESH_NOT_FOUND;
    int64_t revoked_at = 0;
    struct params p = {0};
    p_bytes(&p, req->presented, TS_REFRESH_HASH_LEN);
    PGresult *r = q(t, S_REFRESH_LOCK_SESSION, &p, &rc);
    if (r) {
        if (PQntuples(r) > 0) {
            snprintf(res.session_id, sizeof(res.session_id), "%s", PQgetvalue(r, 0, 0));
            snprintf(res.user_id, sizeof(res.user_id), "%s", PQgetvalue(r, 0, 1));
            snprintf(res.aal, sizeof(res.aal), "%s", PQgetvalue(r, 0, 2));
            snprintf(res.amr_json, sizeof(res.amr_json), "%s", PQgetvalue(r, 0, 3));
            res.outcome = TS_REFRESH_ROTATED;
        }
        PQclear(r);
    }
    if (!rc && res.outcome == TS_REFRESH_ROTATED) {
        p_text(&p, res.session_id);
        r = q(t, S_REFRESH_LOCK_TOKEN, &p, &rc);
        if (r) {
            if (PQntuples(r) > 0)
                revoked_at = col_i64(r, 0, 0);
            else
                res.outcome = TS_REFRESH_NOT_FOUND; /* cannot happen while the session is locked */
            PQclear(r);
        }
    }
    if (!rc && res.outcome == TS_REFRESH_ROTATED) {
        if (revoked_at == 0) {
            struct params rp = {0};
            p_bytes(&rp, req->presented, TS_REFRESH_HASH_LEN);
            p_i64(&rp, req->now);
            rc = run(t, S_REFRESH_REVOKE, &rp, NULL);
        } else if (req->now - revoked_at <= req->reuse_interval) {
            /* A client that lost the answer to its last refresh, or two tabs racing:
             * continue the family with a new child instead of ending the session. */
            res.outcome = TS_REFRESH_REUSED;
        } else {
            res.outcome = TS_REFRESH_ALREADY_USED;
            if (req->rotation_enabled) {
                /* gotrue-api.md §6: reuse past the interval means the token leaked. */
                struct params sp = {0};
                p_text(&sp, res.session_id);
                rc = run(t, S_SESSION_DELETE, &sp, NULL);
                if (!rc)
                    rc = notify(t);
            }
        }
        if (!rc && res.outcome != TS_REFRESH_ALREADY_USED) {
            rc = insert_refresh(t, req->next, res.session_id, req->presented, req->now);
            if (!rc)
                rc = touch_session(t, res.session_id, req);
        }
    }
    rc = tx_end(t, rc);
    if (!rc)
        *out = res;
    return rc;
}

static enum ts_rc pg_refresh_rotate(struct ts_store *st, const struct ts_refresh_request *req,
                                    struct ts_refresh_result *out)
{
    struct op t;
    enum ts_rc rc = TS_OK;
    for (op_start(&t, pg(st), false); op_next(&t, &rc);)
        rc = refresh_rotate(&t, req, out);
    return rc;
}

static enum ts_key_state state_from_text(const char *t)
{
    if (t && strcmp(t, "active") == 0)
        return TS_KEY_ACTIVE;
    if (t && strcmp(t, "next") == 0)
        return TS_KEY_NEXT;
    return TS_KEY_RETIRED;
}

static const char *state_text(enum ts_key_state st)
{
    return st == TS_KEY_ACTIVE ? "active" : st == TS_KEY_NEXT ? "next" : "retired";
}

static enum ts_rc signing_keys_list(struct op *t, struct ts_signing_key_row **out, size_t *out_n)
{
    enum ts_rc rc = TS_OK;
    PGresult *r = q(t, S_KEYS_LIST, NULL, &rc);
    if (!r)
        return rc;
    int n = PQntuples(r);
    struct ts_signing_key_row *rows = ts_xcalloc(n > 0 ? (size_t)n : 1, sizeof(*rows));
    for (int i = 0; i < n; i++) {
        rows[i].kid = col_dup(r, i, 0);
        rows[i].alg = col_dup(r, i, 1);
        rows[i].private_pem = col_dup(r, i, 2);
        rows[i].state = state_from_text(PQgetvalue(r, i, 3));
        rows[i].created_at = col_i64(r, i, 4);
        rows[i].state_changed_at = col_i64(r, i, 5);
    }
    /* The result held the private keys too. */
    for (int i = 0; i < n; i++) {
        if (!PQgetisnull(r, i, 2))
            ts_wipe(PQgetvalue(r, i, 2), (size_t)PQgetlength(r, i, 2));
    }
    PQclear(r);
    *out = rows;
    *out_n = (size_t)n;
    return TS_OK;
}

static enum ts_rc pg_signing_keys_list(struct ts_store *st, struct ts_signing_key_row **out,
                                       size_t *out_n)
{
    struct op t;
    enum ts_rc rc = TS_OK;
    for (op_start(&t, pg(st), true); op_next(&t, &rc);)
        rc = signing_keys_list(&t, out, out_n);
    return rc;
}

static enum ts_rc pg_signing_key_insert(struct ts_store *st, const struct ts_signing_key_row *row)
{
    struct params p = {0};
    p_text(&p, row->kid);
    p_text(&p, row->alg);
    p_text(&p, row->private_pem);
    p_text(&p, state_text(row->state));
    p_i64(&p, row->created_at);
    struct op t;
    enum ts_rc rc = TS_OK;
    for (op_start(&t, pg(st), false); op_next(&t, &rc);)
        rc = run(&t, S_KEY_INSERT, &p, NULL);
    return rc;
}

static enum ts_rc signing_key_promote(struct op *t, const char *kid, int64_t now,
                                      int64_t drop_before)
{
    enum ts_rc rc = tx_begin(t);
    if (rc)
        return rc;
    struct params p = {0};
    p_i64(&p, now);
    rc = run(t, S_KEY_RETIRE_ACTIVE, &p, NULL);
    if (!rc) {
        struct params ap = {0};
        p_text(&ap, kid);
        p_i64(&ap, now);
        int64_t n = 0;
        rc = run(t, S_KEY_ACTIVATE, &ap, &n);
        if (!rc && n == 0)
            rc = TS_E_NOT_FOUND;
    }
    if (!rc) {
        struct params dp = {0};
        p_i64(&dp, drop_before);
        rc = run(t, S_KEY_DROP_RETIRED, &dp, NULL);
    }
    return tx_end(t, rc);
}

static enum ts_rc pg_signing_key_promote(struct ts_store *st, const char *kid, int64_t now,
                                         int64_t drop_before)
{
    struct op t;
    enum ts_rc rc = TS_OK;
    for (op_start(&t, pg(st), false); op_next(&t, &rc);)
        rc = signing_key_promote(&t, kid, now, drop_before);
    return rc;
}

static void pg_audit(struct ts_store *st, const char *event, const char *actor, const char *target,
                     const char *ip, const char *meta_json)
{
    struct params p = {0};
    p_i64(&p, ts_now_us());
    p_text(&p, event);
    p_text(&p, actor);
    p_text(&p, target);
    p_text(&p, ip);
    p_text(&p, meta_json);
    struct op t;
    enum ts_rc rc = TS_OK;
    for (op_start(&t, pg(st), false); op_next(&t, &rc);)
        rc = run(&t, S_AUDIT_INSERT, &p, NULL);
    if (rc)
        ts_log_warn("audit event %s not recorded", event);
}

/* ---- counters ---- */

/*
 * Each call is one statement outside any transaction (autocommit), atomic across nodes by
 * the row lock the upsert takes. They run no pg_notify: counters are not what caches hold.
 * A write lost with its connection is not retried (it may have committed), as for
 * meta_insert; the caller sees TS_E_UNAVAILABLE.
 */
static enum ts_rc bucket_take(struct op *t, const struct params *p, bool *allowed, int64_t *full_at)
{
    enum ts_rc rc = TS_OK;
    PGresult *r = q(t, S_BUCKET_TAKE, p, &rc);
    if (!r)
        return rc;
    if (PQntuples(r) == 1) {
        *full_at = col_i64(r, 0, 0);
        *allowed = col_bool(r, 0, 1);
    } else {
        ts_log_error("postgres bucket take: %d rows", PQntuples(r));
        rc = TS_E_STORE;
    }
    PQclear(r);
    return rc;
}

static enum ts_rc pg_bucket_take(struct ts_store *st, const char *key,
                                 const struct ts_bucket_rule *rule, int64_t now, uint32_t cost,
                                 struct ts_bucket_result *out)
{
    struct params p = {0};
    p_text(&p, key);
    p_i64(&p, now);
    p_i64(&p, (int64_t)cost * rule->refill_us);
    p_i64(&p, (int64_t)rule->capacity * rule->refill_us);
    bool allowed = false;
    int64_t full_at = 0;
    struct op t;
    enum ts_rc rc = TS_OK;
    for (op_start(&t, pg(st), false); op_next(&t, &rc);)
        rc = bucket_take(&t, &p, &allowed, &full_at);
    if (!rc)
        ts__bucket_report(rule, now, cost, allowed, full_at, out);
    return rc;
}

static enum ts_rc counter_add(struct op *t, const struct params *p, bool *allowed, int64_t *value,
                              int64_t *window_start)
{
    enum ts_rc rc = TS_OK;
    PGresult *r = q(t, S_COUNTER_ADD, p, &rc);
    if (!r)
        return rc;
    if (PQntuples(r) == 1) {
        *value = col_i64(r, 0, 0);
        *window_start = col_i64(r, 0, 1);
        *allowed = col_bool(r, 0, 2);
    } else {
        ts_log_error("postgres counter add: %d rows", PQntuples(r));
        rc = TS_E_STORE;
    }
    PQclear(r);
    return rc;
}

static enum ts_rc pg_counter_add(struct ts_store *st, const char *key, int64_t delta,
                                 int64_t window_us, int64_t now, int64_t limit,
                                 struct ts_counter_result *out)
{
    struct params p = {0};
    p_text(&p, key);
    p_i64(&p, delta);
    p_i64(&p, window_us);
    p_i64(&p, now);
    p_i64(&p, limit);
    p_i64(&p, TS_STORE_COUNTER_VALUE_MAX);
    bool allowed = false;
    int64_t value = 0, start = 0;
    struct op t;
    enum ts_rc rc = TS_OK;
    for (op_start(&t, pg(st), false); op_next(&t, &rc);)
        rc = counter_add(&t, &p, &allowed, &value, &start);
    if (!rc)
        ts__counter_report(allowed, value, start, window_us, now, out);
    return rc;
}

static enum ts_rc counter_read(struct op *t, const struct params *p, bool *found,
                               struct ts__counter_row *row)
{
    enum ts_rc rc = TS_OK;
    PGresult *r = q(t, S_COUNTER_GET, p, &rc);
    if (!r)
        return rc;
    *found = PQntuples(r) > 0;
    if (*found) {
        row->value = col_i64(r, 0, 0);
        row->window_start = col_i64(r, 0, 1);
        row->window_end = col_i64(r, 0, 2);
    }
    PQclear(r);
    return TS_OK;
}

static enum ts_rc pg_counter_read(struct ts_store *st, const char *key, bool *found,
                                  struct ts__counter_row *out)
{
    struct params p = {0};
    p_text(&p, key);
    struct op t;
    enum ts_rc rc = TS_OK;
    for (op_start(&t, pg(st), true); op_next(&t, &rc);)
        rc = counter_read(&t, &p, found, out);
    return rc;
}

static enum ts_rc pg_counter_reset(struct ts_store *st, const char *key)
{
    struct params p = {0};
    p_text(&p, key);
    struct op t;
    enum ts_rc rc = TS_OK;
    for (op_start(&t, pg(st), false); op_next(&t, &rc);)
        rc = run(&t, S_COUNTER_DELETE, &p, NULL);
    return rc;
}

static enum ts_rc counters_sweep(struct op *t, const struct params *p, int64_t *deleted)
{
    enum ts_rc rc = TS_OK;
    PGresult *r = q(t, S_COUNTERS_SWEEP, p, &rc);
    if (!r)
        return rc;
    if (deleted)
        *deleted = PQntuples(r) > 0 ? col_i64(r, 0, 0) : 0;
    PQclear(r);
    return TS_OK;
}

static enum ts_rc pg_counters_sweep(struct ts_store *st, int64_t before, int64_t *deleted)
{
    struct params p = {0};
    p_i64(&p, before);
    struct op t;
    enum ts_rc rc = TS_OK;
    int64_t n = 0;
    for (op_start(&t, pg(st), false); op_next(&t, &rc);)
        rc = counters_sweep(&t, &p, &n);
    if (!rc && deleted)
        *deleted = n;
    return rc;
}

/* ---- change notifications from other nodes ---- */

/* The listener is down: close it, try again in LISTEN_RETRY_US, and stop trusting caches. */
static void listener_down(struct pg_store *s, const char *why)
{
    if (s->lis) {
        PQfinish(s->lis);
        s->lis = NULL;
    }
    s->lstate = L_DOWN;
    s->probe_in_flight = false;
    s->lis_retry_at = ts_mono_us() + LISTEN_RETRY_US;
    if (!atomic_exchange(&s->base.blind, true))
        ts_log_warn("postgres: change notifications lost (%s); caches are off until they "
                    "are back",
                    why);
}

/* True when fd is ready for what PQconnectPoll waits for; never blocks. */
static bool socket_ready(int fd, PostgresPollingStatusType want)
{
    if (fd < 0)
        return false;
    struct pollfd pfd = {.fd = fd, .events = want == PGRES_POLLING_READING ? POLLIN : POLLOUT};
    return poll(&pfd, 1, 0) > 0;
}

/*
 * Called every 100 ms by the server, never blocks. The listener connects asynchronously,
 * runs LISTEN, then sends a trivial query every LISTEN_PROBE_EVERY_US: a connection whose
 * server vanished without closing it (a network partition) is noticed when the answer does
 * not come within LISTEN_PROBE_TIMEOUT_US. Notifications from this node's own commits come
 * back too; they cost cache refills only.
 */
static void pg_poll_external(struct ts_store *st)
{
    struct pg_store *s = pg(st);
    int64_t now = ts_mono_us();
    if (s->lstate == L_DOWN) {
        if (now < s->lis_retry_at)
            return;
        s->lis = connect_db(s, true);
        if (!s->lis || PQstatus(s->lis) == CONNECTION_BAD) {
            listener_down(s, "cannot connect");
            return;
        }
        s->lstate = L_CONNECTING;
        s->lis_want = PGRES_POLLING_WRITING;
        s->lis_since = now;
    }
    if (s->lstate == L_CONNECTING) {
        while (s->lis_want != PGRES_POLLING_OK) {
            if (!socket_ready(PQsocket(s->lis), s->lis_want)) {
                if (now - s->lis_since > LISTEN_CONNECT_TIMEOUT_US)
                    listener_down(s, "connection timed out");
                return;
            }
            s->lis_want = PQconnectPoll(s->lis);
            if (s->lis_want == PGRES_POLLING_FAILED) {
                char msg[256];
                conn_message(s->lis, msg, sizeof(msg));
                ts_log_debug("postgres listener: %s", msg);
                listener_down(s, "cannot connect");
                return;
            }
        }
        PQsetNoticeReceiver(s->lis, on_notice, NULL);
        if (PQsetnonblocking(s->lis, 1) != 0 || !PQsendQuery(s->lis, "LISTEN " NOTIFY_CHANNEL)) {
            listener_down(s, "LISTEN failed");
            return;
        }
        s->lstate = L_STARTING;
        s->probe_in_flight = true;
        s->probe_at = now;
    }
    if (PQflush(s->lis) < 0 || !PQconsumeInput(s->lis) || PQstatus(s->lis) != CONNECTION_OK) {
        listener_down(s, "connection lost");
        return;
    }
    while (s->probe_in_flight && !PQisBusy(s->lis)) {
        PGresult *r = PQgetResult(s->lis);
        if (!r) {
            s->probe_in_flight = false;
            if (s->lstate == L_STARTING) {
                /* From now on every commit reaches us; what came before, we cannot know. */
                s->lstate = L_UP;
                atomic_store(&s->base.blind, false);
                ts__store_bump_epoch(st);
                ts_log_info("postgres: listening for changes from other nodes");
            }
            break;
        }
        ExecStatusType es = PQresultStatus(r);
        PQclear(r);
        if (es != PGRES_COMMAND_OK && es != PGRES_TUPLES_OK) {
            listener_down(s, "LISTEN failed");
            return;
        }
    }
    bool changed = false;
    PGnotify *n;
    while ((n = PQnotifies(s->lis))) {
        /* Our payload is the schema: other deployments sharing the database are not us. */
        if (!n->extra[0] || strcmp(n->extra, s->schema) == 0)
            changed = true;
        PQfreemem(n);
    }
    if (changed)
        ts__store_bump_epoch(st);
    if (s->probe_in_flight) {
        if (now - s->probe_at > LISTEN_PROBE_TIMEOUT_US)
            listener_down(s, "no answer");
    } else if (now - s->probe_at >= LISTEN_PROBE_EVERY_US) {
        if (!PQsendQuery(s->lis, "SELECT 1")) {
            listener_down(s, "connection lost");
            return;
        }
        s->probe_in_flight = true;
        s->probe_at = now;
    }
}

static const struct ts_store_ops pg_ops = {
    .close = pg_close,
    .migrate = pg_migrate,
    .schema_version = pg_schema_version,
    .ping = pg_ping,
    .meta_get = pg_meta_get,
    .meta_insert = pg_meta_insert,
    .user_create = pg_user_create,
    .user_get = pg_user_get,
    .user_get_by_email = pg_user_get_by_email,
    .user_update = pg_user_update,
    .user_delete = pg_user_delete,
    .user_list = pg_user_list,
    .password_get = pg_password_get,
    .password_set = pg_password_set,
    .session_create = pg_session_create,
    .session_user = pg_session_user,
    .session_delete = pg_session_delete,
    .sessions_delete_for_user = pg_sessions_delete_for_user,
    .refresh_rotate = pg_refresh_rotate,
    .signing_keys_list = pg_signing_keys_list,
    .signing_key_insert = pg_signing_key_insert,
    .signing_key_promote = pg_signing_key_promote,
    .poll_external = pg_poll_external,
    .audit = pg_audit,
    .bucket_take = pg_bucket_take,
    .counter_add = pg_counter_add,
    .counter_read = pg_counter_read,
    .counter_reset = pg_counter_reset,
    .counters_sweep = pg_counters_sweep,
};

/* ^[a-z_][a-z0-9_]{0,62}$: a name PostgreSQL takes as is, quoted or not. */
static bool schema_valid(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 63 || (s[0] >= '0' && s[0] <= '9'))
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
            return false;
    }
    return true;
}

enum ts_rc ts__store_pg_open(const char *url, const struct ts_store_options *opt,
                             struct ts_store **out, char **err)
{
    const char *schema = opt && opt->schema ? opt->schema : DEFAULT_SCHEMA;
    if (!schema_valid(schema)) {
        *err = ts_xstrdup("DATABASE_SCHEMA: expected a lower-case name of letters, digits and "
                          "_ (at most 63, not starting with a digit)");
        return TS_E_INVALID;
    }
    if (!PQisthreadsafe()) {
        *err = ts_xstrdup("this libpq was built without thread support");
        return TS_E_INVALID;
    }
    struct pg_store *s = ts_xcalloc(1, sizeof(*s));
    s->base.ops = &pg_ops;
    /* No listener yet: blind until poll_external has one (store.h). */
    atomic_store(&s->base.blind, true);
    s->url = ts_xstrdup(url);
    snprintf(s->schema, sizeof(s->schema), "%s", schema);
    snprintf(s->set_path, sizeof(s->set_path), "SET search_path TO \"%s\"", schema);
    pthread_mutex_init(&s->pool_lock, NULL);
    struct pg_conn *c;
    char msg[256];
    enum ts_rc rc = conn_open(s, &c, msg, sizeof(msg));
    if (rc) {
        *err = ts_xasprintf("cannot connect to PostgreSQL: %s", msg);
        pg_close(&s->base);
        return rc;
    }
    release(s, c);
    *out = &s->base;
    return TS_OK;
}

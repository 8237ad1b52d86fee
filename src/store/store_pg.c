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
 * - The native model (collections, documents, indexes, tokens and keys) settles its races
 *   with the locks described above its operations ("the native model").
 * - Other nodes learn about changes to users and sessions through LISTEN/NOTIFY: every write
 *   store.c or store_docs.c bumps the epoch for also runs pg_notify(NOTIFY_CHANNEL, schema) in
 *   its transaction, and poll_external drains a dedicated, non-blocking listener connection.
 *   While that connection is down (or not yet up) the store is "blind" (store.h) and
 *   callers' caches never hit.
 * - Durability is the server's (synchronous_commit); options.durable_full changes nothing.
 *
 * Must never: build SQL from input (everything is bound; the schema name is validated and
 * quoted), or log a bound value (data-exception and constraint messages quote values, so
 * only their SQLSTATE and constraint name are logged).
 */
#include <ctype.h>
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
    /* 3: the native model (store.h): collections, documents, indexes and their entries,
     * credentials of documents, and opaque tokens and keys. Names, ids and terms compare
     * byte by byte (COLLATE "C"), as in SQLite, so that pages ordered by them and the
     * `> after` positions that continue them agree with the primary keys. Documents and
     * secrets keep their JSON as text, returned as it was written. */
    "CREATE TABLE collections("
    "  name text COLLATE \"C\" PRIMARY KEY,"
    "  created_at bigint NOT NULL"
    ");"
    "CREATE TABLE documents("
    "  collection text COLLATE \"C\" NOT NULL REFERENCES collections(name) ON DELETE CASCADE,"
    "  id text COLLATE \"C\" NOT NULL,"
    "  data text NOT NULL,"
    "  ts bigint NOT NULL,"
    "  created_at bigint NOT NULL,"
    "  expires_at bigint,"
    "  PRIMARY KEY(collection, id)"
    ");"
    "CREATE INDEX documents_expiry ON documents(expires_at) WHERE expires_at IS NOT NULL;"
    "CREATE TABLE doc_indexes("
    "  collection text COLLATE \"C\" NOT NULL REFERENCES collections(name) ON DELETE CASCADE,"
    "  name text COLLATE \"C\" NOT NULL,"
    "  terms text NOT NULL,"
    "  is_unique boolean NOT NULL,"
    "  created_at bigint NOT NULL,"
    "  PRIMARY KEY(collection, name)"
    ");"
    "CREATE TABLE doc_index_entries("
    "  collection text COLLATE \"C\" NOT NULL,"
    "  index_name text COLLATE \"C\" NOT NULL,"
    "  term text COLLATE \"C\" NOT NULL,"
    "  doc_id text COLLATE \"C\" NOT NULL,"
    "  is_unique boolean NOT NULL,"
    "  PRIMARY KEY(collection, index_name, term, doc_id),"
    "  FOREIGN KEY(collection, doc_id) REFERENCES documents(collection, id) ON DELETE CASCADE,"
    "  FOREIGN KEY(collection, index_name) REFERENCES doc_indexes(collection, name) "
    "    ON DELETE CASCADE"
    ");"
    /* the unique index is what makes two racing creates (on any nodes) unable to both win */
    "CREATE UNIQUE INDEX doc_index_unique ON doc_index_entries(collection, index_name, term) "
    "  WHERE is_unique;"
    "CREATE INDEX doc_index_entries_doc ON doc_index_entries(collection, doc_id);"
    "CREATE TABLE doc_credentials("
    "  collection text COLLATE \"C\" NOT NULL,"
    "  doc_id text COLLATE \"C\" NOT NULL,"
    "  strategy text NOT NULL,"
    "  hash text NOT NULL,"
    "  created_at bigint NOT NULL,"
    "  updated_at bigint NOT NULL,"
    "  PRIMARY KEY(collection, doc_id, strategy),"
    "  FOREIGN KEY(collection, doc_id) REFERENCES documents(collection, id) ON DELETE CASCADE"
    ");"
    "CREATE TABLE tokens("
    "  id text COLLATE \"C\" PRIMARY KEY,"
    "  hash bytea NOT NULL UNIQUE,"
    "  kind text NOT NULL CHECK(kind IN ('token','key')),"
    "  identity_collection text COLLATE \"C\","
    "  identity_id text COLLATE \"C\","
    "  role text,"
    "  origin text NOT NULL,"
    "  description text,"
    "  data text,"
    "  meta text,"
    "  created_at bigint NOT NULL,"
    "  expires_at bigint"
    ");"
    "CREATE INDEX tokens_identity ON tokens(identity_collection, identity_id) "
    "  WHERE identity_id IS NOT NULL;"
    "CREATE INDEX tokens_expiry ON tokens(expires_at) WHERE expires_at IS NOT NULL;"
    "CREATE INDEX refresh_tokens_revoked ON refresh_tokens(revoked_at) "
    "  WHERE revoked_at IS NOT NULL;"
    "CREATE INDEX sessions_not_after ON sessions(not_after) WHERE not_after IS NOT NULL;",
    /* 4: the sweep deletes tokens and keys separately: with the kind leading the expiry index,
     * a batch of keys no longer walks past every expired token (1M expired tokens took 259 s
     * to sweep on SQLite, quadratic in their number) */
    "DROP INDEX tokens_expiry;"
    "CREATE INDEX tokens_expiry ON tokens(kind, expires_at) WHERE expires_at IS NOT NULL;",
    /* 5: external identity providers (AccessProviders), the links from their (issuer,
     * subject) pairs to identities, and the token exchanges made for them (store.h). Names,
     * ids, issuers and subjects compare byte by byte, as in migration 3; the JSON is text. */
    "CREATE TABLE access_providers("
    "  name text COLLATE \"C\" PRIMARY KEY,"
    "  issuer text COLLATE \"C\" NOT NULL UNIQUE,"
    "  config text NOT NULL,"
    "  created_at bigint NOT NULL,"
    "  updated_at bigint NOT NULL"
    ");"
    "CREATE TABLE external_identities("
    "  issuer text COLLATE \"C\" NOT NULL,"
    "  subject text COLLATE \"C\" NOT NULL,"
    "  identity_collection text COLLATE \"C\" NOT NULL,"
    "  identity_id text COLLATE \"C\" NOT NULL,"
    "  claims text,"
    "  created_at bigint NOT NULL,"
    "  updated_at bigint NOT NULL,"
    "  PRIMARY KEY(issuer, subject)"
    ");"
    "CREATE INDEX external_identities_identity ON external_identities(identity_collection, "
    "  identity_id);"
    "CREATE TABLE exchanges("
    "  id text COLLATE \"C\" PRIMARY KEY,"
    "  provider text COLLATE \"C\" NOT NULL,"
    "  subject text COLLATE \"C\" NOT NULL,"
    "  identity_collection text COLLATE \"C\" NOT NULL,"
    "  identity_id text COLLATE \"C\" NOT NULL,"
    "  token_id text COLLATE \"C\","
    "  token_type text NOT NULL,"
    "  meta text,"
    "  created_at bigint NOT NULL,"
    "  expires_at bigint NOT NULL"
    ");"
    /* id last: an identity's page (ORDER BY id after a position) reads the index in order */
    "CREATE INDEX exchanges_identity ON exchanges(identity_collection, identity_id, id);"
    "CREATE INDEX exchanges_expiry ON exchanges(expires_at);",
    /* 6: authorization objects, roles and profiles (issue 6), and the version every write of
     * one bumps in its transaction (callers cache compiled roles under it). Names compare
     * byte by byte; the JSON is text, as for providers. */
    "CREATE TABLE authz_objects("
    "  kind smallint NOT NULL CHECK(kind IN (1, 2)),"
    "  name text COLLATE \"C\" NOT NULL,"
    "  config text NOT NULL,"
    "  created_at bigint NOT NULL,"
    "  updated_at bigint NOT NULL,"
    "  PRIMARY KEY(kind, name)"
    ");"
    "CREATE TABLE authz_version("
    "  id smallint PRIMARY KEY CHECK(id = 1),"
    "  version bigint NOT NULL"
    ");"
    "INSERT INTO authz_version(id, version) VALUES(1, 0);",
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

/* The native model. A row of `alias` (documents or tokens) is live at the time in parameter
 * $n when it never expires or expires after that time. */
#define LIVE(alias, n) "(" alias ".expires_at IS NULL OR " alias ".expires_at > $" n "::bigint)"
#define DOC_COLS "d.id, d.data, d.ts, d.created_at, d.expires_at"
#define TOKEN_COLS                                                                                 \
    "t.id, t.kind, t.identity_collection, t.identity_id, t.role, t.origin, t.description, "        \
    "t.data, t.meta, t.created_at, t.expires_at"
#define TOKEN_NCOLS 11
#define INDEX_COLS "name, terms, is_unique, created_at"
#define CRED_COLS "collection, doc_id, strategy, created_at, updated_at"
#define PROVIDER_COLS "name, issuer, config, created_at, updated_at"
#define LINK_COLS                                                                                  \
    "l.issuer, l.subject, l.identity_collection, l.identity_id, l.claims, l.created_at, "          \
    "l.updated_at"
#define EXCHANGE_COLS                                                                              \
    "x.id, x.provider, x.subject, x.identity_collection, x.identity_id, x.token_id, "              \
    "x.token_type, x.meta, x.created_at, x.expires_at"
#define AUTHZ_COLS "kind, name, config, created_at, updated_at"
/* Seed of the hashes that name external_link's advisory locks. */
#define LINK_LOCK_SEED "5"
/* The users' password credentials from position ($lb, $after) on, ordered by id: uuid order
 * is the order of their lower-case text, so the primary key serves it; $lb (a uuid at or
 * below the position) makes the position usable by the index, $after (text) exact. */
#define CRED_USERS(cond, lb, after, lim)                                                           \
    "SELECT 'users', p.identity_id::text, p.strategy, p.created_at, p.updated_at "                 \
    "FROM credentials p WHERE " cond "p.strategy = 'password' AND p.identity_id >= $" lb           \
    "::uuid AND "                                                                                  \
    "p.identity_id::text COLLATE \"C\" > $" after "::text ORDER BY p.identity_id LIMIT $" lim      \
    "::bigint"

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
    X(USER_PAGE, "SELECT " USER_COLS " FROM identities i WHERE i.collection = 'users' AND "        \
                 "i.deleted_at IS NULL AND i.id > $1::uuid ORDER BY i.id LIMIT $2::bigint")        \
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
    X(KEY_RESEAL, "UPDATE signing_keys SET private_pem = $3::text WHERE kid = $1::text AND "       \
                  "private_pem = $2::text")                                                        \
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
    X(COLL_INSERT, "INSERT INTO collections(name, created_at) VALUES($1::text, $2::bigint)")       \
    X(COLL_GET, "SELECT name, created_at FROM collections WHERE name = $1::text")                  \
    X(COLL_SHARE, "SELECT 1 FROM collections WHERE name = $1::text FOR SHARE")                     \
    X(COLL_LOCK, "SELECT 1 FROM collections WHERE name = $1::text FOR NO KEY UPDATE")              \
    X(COLL_LIST, "SELECT name, created_at FROM collections WHERE name > $1::text ORDER BY name "   \
                 "LIMIT $2::bigint")                                                               \
    X(COLL_DELETE, "DELETE FROM collections WHERE name = $1::text")                                \
    X(TOKENS_DELETE_COLLECTION,                                                                    \
      "DELETE FROM tokens WHERE identity_collection = $1::text AND identity_id IS NOT NULL")       \
    X(TOKENS_DELETE_IDENTITY,                                                                      \
      "DELETE FROM tokens WHERE identity_collection = $1::text AND identity_id = $2::text")        \
    X(LINKS_DELETE_COLLECTION,                                                                     \
      "DELETE FROM external_identities WHERE identity_collection = $1::text")                      \
    X(LINKS_DELETE_IDENTITY, "DELETE FROM external_identities WHERE identity_collection = "        \
                             "$1::text AND identity_id = $2::text")                                \
    X(INDEX_INSERT, "INSERT INTO doc_indexes(collection, name, terms, is_unique, created_at) "     \
                    "VALUES($1::text, $2::text, $3::text, $4::boolean, $5::bigint)")               \
    X(INDEX_LIST,                                                                                  \
      "SELECT " INDEX_COLS " FROM doc_indexes WHERE collection = $1::text ORDER BY name")          \
    X(INDEX_GET, "SELECT " INDEX_COLS " FROM doc_indexes WHERE collection = $1::text AND "         \
                 "name = $2::text")                                                                \
    X(INDEX_DELETE, "DELETE FROM doc_indexes WHERE collection = $1::text AND name = $2::text")     \
    X(INDEXES_OF, "SELECT name, terms, is_unique FROM doc_indexes WHERE collection = $1::text")    \
    X(INDEX_FILL_PAGE,                                                                             \
      "SELECT d.id, d.data FROM documents d WHERE d.collection = $1::text AND d.id > $2::text "    \
      "AND " LIVE("d", "3") " ORDER BY d.id LIMIT $4::bigint FOR KEY SHARE")                       \
    X(ENTRY_INSERT,                                                                                \
      "INSERT INTO doc_index_entries(collection, index_name, term, doc_id, is_unique) "            \
      "VALUES($1::text, $2::text, $3::text, $4::text, $5::boolean)")                               \
    X(ENTRIES_DELETE_DOC,                                                                          \
      "DELETE FROM doc_index_entries WHERE collection = $1::text AND doc_id = $2::text")           \
    X(DOC_DELETE_EXPIRED_TERM,                                                                     \
      "DELETE FROM documents d USING doc_index_entries e WHERE e.collection = $1::text AND "       \
      "e.index_name = $2::text AND e.term = $3::text AND e.is_unique AND "                         \
      "d.collection = e.collection AND d.id = e.doc_id AND d.expires_at <= $4::bigint "            \
      "RETURNING d.id")                                                                            \
    X(DOC_LOCK, "SELECT ts, created_at, expires_at FROM documents WHERE collection = $1::text "    \
                "AND id = $2::text FOR NO KEY UPDATE")                                             \
    X(DOC_INSERT, "INSERT INTO documents(collection, id, data, ts, expires_at, created_at) "       \
                  "VALUES($1::text, $2::text, $3::text, $4::bigint, $5::bigint, $6::bigint)")      \
    X(DOC_UPDATE,                                                                                  \
      "UPDATE documents SET data = $3::text, ts = $4::bigint, expires_at = $5::bigint "            \
      "WHERE collection = $1::text AND id = $2::text")                                             \
    X(DOC_DELETE, "DELETE FROM documents d WHERE d.collection = $1::text AND d.id = $2::text "     \
                  "RETURNING " LIVE("d", "3"))                                                     \
    X(DOC_GET, "SELECT " DOC_COLS " FROM documents d WHERE d.collection = $1::text AND "           \
               "d.id = $2::text AND " LIVE("d", "3"))                                              \
    X(DOC_LIST, "SELECT " DOC_COLS " FROM documents d WHERE d.collection = $1::text AND "          \
                "d.id > $2::text AND " LIVE("d", "3") " ORDER BY d.id LIMIT $4::bigint")           \
    X(DOC_LOOKUP,                                                                                  \
      "SELECT " DOC_COLS " FROM doc_index_entries e JOIN documents d ON "                          \
      "d.collection = e.collection AND d.id = e.doc_id WHERE e.collection = $1::text AND "         \
      "e.index_name = $2::text AND e.term = $3::text AND e.doc_id > $4::text AND " LIVE(           \
          "d", "5") " ORDER BY e.doc_id LIMIT $6::bigint")                                         \
    X(INDEX_EXISTS, "SELECT 1 FROM doc_indexes WHERE collection = $1::text AND name = $2::text")   \
    X(DOC_LIVE_LOCK, "SELECT 1 FROM documents d WHERE d.collection = $1::text AND "                \
                     "d.id = $2::text AND " LIVE("d", "3") " FOR KEY SHARE")                       \
    X(USER_LIVE_LOCK, "SELECT 1 FROM identities WHERE id = $1::uuid AND collection = 'users' AND " \
                      "deleted_at IS NULL FOR KEY SHARE")                                          \
    X(IDENTITY_COLLECTIONS,                                                                        \
      "SELECT 'users', 0 WHERE EXISTS(SELECT 1 FROM identities WHERE id = $2::uuid AND "           \
      "collection = 'users' AND deleted_at IS NULL) UNION ALL SELECT c.name, 1 FROM "              \
      "collections c WHERE EXISTS(SELECT 1 FROM documents d WHERE d.collection = c.name AND "      \
      "d.id = $1::text AND " LIVE("d", "3") ") ORDER BY 2, 1")                                     \
    X(DOC_CRED_GET,                                                                                \
      "SELECT c.hash FROM documents d JOIN doc_credentials c ON c.collection = d.collection AND "  \
      "c.doc_id = d.id AND c.strategy = 'password' WHERE d.collection = $1::text AND "             \
      "d.id = $2::text AND " LIVE("d", "3"))                                                       \
    X(DOC_CRED_LOCK, "SELECT hash FROM doc_credentials WHERE collection = $1::text AND "           \
                     "doc_id = $2::text AND strategy = 'password' FOR UPDATE")                     \
    X(DOC_CRED_UPSERT,                                                                             \
      "INSERT INTO doc_credentials(collection, doc_id, strategy, hash, created_at, updated_at) "   \
      "VALUES($1::text, $2::text, 'password', $3::text, $4::bigint, $4::bigint) "                  \
      "ON CONFLICT(collection, doc_id, strategy) DO UPDATE SET hash = excluded.hash, "             \
      "updated_at = excluded.updated_at")                                                          \
    X(DOC_CRED_DELETE, "DELETE FROM doc_credentials WHERE collection = $1::text AND "              \
                       "doc_id = $2::text AND strategy = 'password'")                              \
    X(USER_CRED_GET,                                                                               \
      "SELECT c.hash FROM identities i JOIN credentials c ON c.identity_id = i.id AND "            \
      "c.strategy = 'password' WHERE i.id = $1::uuid AND i.collection = 'users' AND "              \
      "i.deleted_at IS NULL")                                                                      \
    X(PASSWORD_DELETE,                                                                             \
      "DELETE FROM credentials WHERE identity_id = $1::uuid AND strategy = 'password'")            \
    X(CRED_LIST,                                                                                   \
      "SELECT x.* FROM ((SELECT " CRED_COLS " FROM doc_credentials WHERE strategy = 'password' "   \
      "AND (collection, doc_id) > ($1::text, $2::text) ORDER BY collection, doc_id "               \
      "LIMIT $6::bigint) UNION ALL (" CRED_USERS(                                                  \
          "$3::boolean AND ", "4", "5",                                                            \
          "6") ")) "                                                                               \
               "AS x(collection, id) ORDER BY x.collection COLLATE \"C\", x.id COLLATE \"C\" "     \
               "LIMIT $6::bigint")                                                                 \
    X(CRED_LIST_IN,                                                                                \
      "SELECT " CRED_COLS " FROM doc_credentials WHERE collection = $1::text AND "                 \
      "strategy = 'password' AND doc_id > $2::text ORDER BY doc_id LIMIT $3::bigint")              \
    X(CRED_LIST_USERS, CRED_USERS("", "1", "2", "3"))                                              \
    X(SECRET_INSERT,                                                                               \
      "INSERT INTO tokens(id, hash, kind, identity_collection, identity_id, role, origin, "        \
      "description, data, meta, created_at, expires_at) VALUES($1::text, $2::bytea, $3::text, "    \
      "$4::text, $5::text, $6::text, $7::text, $8::text, $9::text, $10::text, $11::bigint, "       \
      "$12::bigint)")                                                                              \
    X(SECRET_CHECK,                                                                                \
      "SELECT " TOKEN_COLS ", i.id IS NOT NULL, i.deleted_at, i.banned_until, i.created_at, "      \
      "d.id IS NOT NULL, d.created_at, d.expires_at FROM tokens t "                                \
      "LEFT JOIN identities i ON t.identity_collection = 'users' AND i.collection = 'users' AND "  \
      "i.id = CASE WHEN t.identity_collection = 'users' THEN t.identity_id::uuid END "             \
      "LEFT JOIN documents d ON t.identity_collection <> 'users' AND "                             \
      "d.collection = t.identity_collection AND d.id = t.identity_id WHERE t.hash = $1::bytea")    \
    X(SECRET_GET, "SELECT " TOKEN_COLS " FROM tokens t WHERE t.id = $1::text AND " LIVE("t", "2")) \
    X(SECRET_LIST,                                                                                 \
      "SELECT " TOKEN_COLS " FROM tokens t WHERE t.kind = $1::text AND t.id > $2::text AND " LIVE( \
          "t", "3") " ORDER BY t.id LIMIT $4::bigint")                                             \
    X(SECRET_LIST_IDENTITY,                                                                        \
      "SELECT " TOKEN_COLS " FROM tokens t WHERE t.kind = $1::text AND t.id > $2::text AND " LIVE( \
          "t", "3") " AND t.identity_collection = $5::text AND t.identity_id = $6::text "          \
                    "ORDER BY t.id LIMIT $4::bigint")                                              \
    X(SECRET_DELETE, "DELETE FROM tokens WHERE kind = $1::text AND id = $2::text")                 \
    X(SECRETS_DELETE_IDENTITY,                                                                     \
      "DELETE FROM tokens WHERE kind = $1::text AND identity_collection = $2::text AND "           \
      "identity_id = $3::text AND ($4::text IS NULL OR id <> $4::text)")                           \
    X(SESSION_LIST,                                                                                \
      "SELECT s.id, s.aal, s.ip, s.user_agent, s.created_at, s.refreshed_at, s.not_after, "        \
      "n.issued, n.active FROM sessions s CROSS JOIN LATERAL (SELECT count(*) AS issued, "         \
      "count(*) FILTER (WHERE r.revoked_at IS NULL) AS active FROM refresh_tokens r "              \
      "WHERE r.session_id = s.id) n WHERE s.identity_id = $1::uuid ORDER BY s.created_at, s.id")   \
    X(SWEEP_SECRETS,                                                                               \
      "DELETE FROM tokens WHERE id IN (SELECT id FROM tokens WHERE kind = $1::text AND "           \
      "expires_at <= $2::bigint LIMIT $3::bigint FOR UPDATE SKIP LOCKED)")                         \
    X(SWEEP_DOCS,                                                                                  \
      "WITH d AS (DELETE FROM documents WHERE (collection, id) IN (SELECT collection, id FROM "    \
      "documents WHERE expires_at <= $1::bigint LIMIT $2::bigint FOR UPDATE SKIP LOCKED) "         \
      "RETURNING collection, id) SELECT count(*), array_agg(collection), array_agg(id) FROM d")    \
    X(SWEEP_DOC_TOKENS, "DELETE FROM tokens t USING unnest($1::text[], $2::text[]) AS g(c, i) "    \
                        "WHERE t.identity_collection = g.c AND t.identity_id = g.i")               \
    X(SWEEP_DOC_LINKS,                                                                             \
      "DELETE FROM external_identities l USING unnest($1::text[], $2::text[]) AS g(c, i) "         \
      "WHERE l.identity_collection = g.c AND l.identity_id = g.i")                                 \
    X(SWEEP_EXCHANGES, "DELETE FROM exchanges WHERE id IN (SELECT id FROM exchanges WHERE "        \
                       "expires_at <= $1::bigint LIMIT $2::bigint FOR UPDATE SKIP LOCKED)")        \
    X(SWEEP_SESSIONS,                                                                              \
      "DELETE FROM sessions WHERE id IN (SELECT id FROM sessions WHERE not_after <= $1::bigint "   \
      "LIMIT $2::bigint FOR UPDATE SKIP LOCKED)")                                                  \
    X(SWEEP_REFRESH,                                                                               \
      "DELETE FROM refresh_tokens WHERE hash IN (SELECT hash FROM refresh_tokens WHERE "           \
      "revoked_at < $1::bigint LIMIT $2::bigint FOR UPDATE SKIP LOCKED)")                          \
    X(PROVIDER_INSERT, "INSERT INTO access_providers(" PROVIDER_COLS ") VALUES($1::text, "         \
                       "$2::text, $3::text, $4::bigint, $5::bigint)")                              \
    X(PROVIDER_UPDATE, "UPDATE access_providers SET issuer = $2::text, config = $3::text, "        \
                       "updated_at = $4::bigint WHERE name = $1::text")                            \
    X(PROVIDER_GET, "SELECT " PROVIDER_COLS " FROM access_providers WHERE name = $1::text")        \
    X(PROVIDER_LIST, "SELECT " PROVIDER_COLS " FROM access_providers ORDER BY name")               \
    X(PROVIDER_DELETE, "DELETE FROM access_providers WHERE name = $1::text")                       \
    X(LINK_LOCK_KEY, "SELECT pg_advisory_xact_lock(hashtextextended($2::text, "                    \
                     "hashtextextended($1::text, " LINK_LOCK_SEED ")))")                           \
    /* the link, locked, and whether its identity is live at $3 and no younger than the link */    \
    X(LINK_LOCK,                                                                                   \
      "SELECT " LINK_COLS ", CASE WHEN l.identity_collection = 'users' THEN EXISTS(SELECT 1 FROM " \
      "identities i WHERE i.id = CASE WHEN l.identity_collection = 'users' THEN "                  \
      "l.identity_id::uuid END AND i.collection = 'users' AND i.deleted_at IS NULL AND "           \
      "i.created_at <= l.created_at) ELSE EXISTS(SELECT 1 FROM documents d WHERE "                 \
      "d.collection = l.identity_collection AND d.id = l.identity_id AND "                         \
      "d.created_at <= l.created_at AND (d.expires_at IS NULL OR d.expires_at > $3::bigint)) "     \
      "END FROM external_identities l WHERE l.issuer = $1::text AND l.subject = $2::text "         \
      "FOR UPDATE OF l")                                                                           \
    X(LINK_TOUCH, "UPDATE external_identities SET claims = coalesce($3::text, claims), "           \
                  "updated_at = $4::bigint WHERE issuer = $1::text AND subject = $2::text")        \
    /* a dead link (locked by LINK_LOCK) is replaced in place */                                   \
    X(LINK_UPSERT,                                                                                 \
      "INSERT INTO external_identities(issuer, subject, identity_collection, identity_id, "        \
      "claims, created_at, updated_at) VALUES($1::text, $2::text, $3::text, $4::text, "            \
      "$5::text, $6::bigint, $6::bigint) ON CONFLICT(issuer, subject) DO UPDATE SET "              \
      "identity_collection = excluded.identity_collection, identity_id = excluded.identity_id, "   \
      "claims = excluded.claims, created_at = excluded.created_at, "                               \
      "updated_at = excluded.updated_at")                                                          \
    X(LINK_LIST, "SELECT " LINK_COLS " FROM external_identities l WHERE "                          \
                 "l.identity_collection = $1::text AND l.identity_id = $2::text "                  \
                 "ORDER BY l.created_at, l.issuer, l.subject")                                     \
    X(EXCHANGE_INSERT,                                                                             \
      "INSERT INTO exchanges(id, provider, subject, identity_collection, identity_id, token_id, "  \
      "token_type, meta, created_at, expires_at) VALUES($1::text, $2::text, $3::text, $4::text, "  \
      "$5::text, $6::text, $7::text, $8::text, $9::bigint, $10::bigint)")                          \
    X(EXCHANGE_LIST, "SELECT " EXCHANGE_COLS " FROM exchanges x WHERE x.expires_at > $1::bigint "  \
                     "AND x.id > $2::text ORDER BY x.id LIMIT $3::bigint")                         \
    X(EXCHANGE_LIST_IDENTITY,                                                                      \
      "SELECT " EXCHANGE_COLS " FROM exchanges x WHERE x.identity_collection = $4::text AND "      \
      "x.identity_id = $5::text AND x.expires_at > $1::bigint AND x.id > $2::text "                \
      "ORDER BY x.id LIMIT $3::bigint")                                                            \
    X(AUTHZ_INSERT, "INSERT INTO authz_objects(" AUTHZ_COLS ") VALUES($1::smallint, $2::text, "    \
                    "$3::text, $4::bigint, $5::bigint)")                                           \
    X(AUTHZ_UPDATE, "UPDATE authz_objects SET config = $3::text, updated_at = $4::bigint "         \
                    "WHERE kind = $1::smallint AND name = $2::text")                               \
    X(AUTHZ_GET, "SELECT " AUTHZ_COLS " FROM authz_objects WHERE kind = $1::smallint AND "         \
                 "name = $2::text")                                                                \
    X(AUTHZ_LIST, "SELECT " AUTHZ_COLS " FROM authz_objects WHERE kind = $1::smallint "            \
                  "ORDER BY name")                                                                 \
    X(AUTHZ_DELETE, "DELETE FROM authz_objects WHERE kind = $1::smallint AND name = $2::text")     \
    X(AUTHZ_VERSION_BUMP, "UPDATE authz_version SET version = version + 1 WHERE id = 1")           \
    X(AUTHZ_VERSION, "SELECT version FROM authz_version WHERE id = 1")                             \
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

/* ---- identities of the native model ---- */

static bool is_users(const char *collection)
{
    return collection && strcmp(collection, "users") == 0;
}

/*
 * The text under which tokens name their identity (tokens.identity_id). A user's id is kept
 * in the lower-case form PostgreSQL prints for uuids: the users table takes a uuid in either
 * case, and every spelling of one user must reach the same tokens. Other ids are as given.
 */
static const char *identity_text(const char *collection, const char *id,
                                 char buf[TS_STORE_ID_LEN + 1])
{
    if (!is_users(collection) || !ts_uuid_valid(id))
        return id;
    for (size_t i = 0; i <= TS_STORE_ID_LEN; i++) /* the terminator included */
        buf[i] = (char)tolower((unsigned char)id[i]);
    return buf;
}

/* Deletes what is bound to an identity (id as identity_text gives it): its tokens and keys,
 * and the external identities linked to it. */
static enum ts_rc delete_identity_bound(struct op *t, const char *collection, const char *id)
{
    struct params p = {0};
    p_text(&p, collection);
    p_text(&p, id);
    enum ts_rc rc = run(t, S_TOKENS_DELETE_IDENTITY, &p, NULL);
    return rc ? rc : run(t, S_LINKS_DELETE_IDENTITY, &p, NULL);
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

/* Runs the write statement id in a transaction that notifies the other nodes;
 * TS_E_NOT_FOUND when it changed no row. */
static enum ts_rc write_one(struct op *t, enum stmt_id id, const struct params *p)
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

/* The user goes with everything bound to it: credentials, sessions and refresh tokens by
 * cascade, then its /v1 tokens and keys and its external links (after the row, as for
 * documents: see lock_live_identity). */
static enum ts_rc user_delete(struct op *t, const struct params *p, const char *id_text)
{
    enum ts_rc rc = tx_begin(t);
    if (rc)
        return rc;
    int64_t n = 0;
    rc = run(t, S_USER_DELETE, p, &n);
    if (!rc && n == 0)
        rc = TS_E_NOT_FOUND;
    if (!rc)
        rc = delete_identity_bound(t, "users", id_text);
    if (!rc)
        rc = notify(t);
    return tx_end(t, rc);
}

static enum ts_rc pg_user_delete(struct ts_store *st, const char *id)
{
    if (!ts_uuid_valid(id))
        return TS_E_NOT_FOUND;
    char buf[TS_STORE_ID_LEN + 1];
    const char *id_text = identity_text("users", id, buf);
    struct params p = {0};
    p_text(&p, id);
    struct op t;
    enum ts_rc rc = TS_OK;
    for (op_start(&t, pg(st), false); op_next(&t, &rc);)
        rc = user_delete(&t, &p, id_text);
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

static enum ts_rc user_page(struct op *t, const struct params *p, int64_t limit,
                            struct ts_user ***out, size_t *out_n)
{
    enum ts_rc rc = TS_OK;
    PGresult *r = q(t, S_USER_PAGE, p, &rc);
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
    return TS_OK;
}

static enum ts_rc pg_user_page(struct ts_store *st, const char *after, int64_t limit,
                               struct ts_user ***out, size_t *out_n)
{
    struct params p = {0};
    /* the nil UUID sorts before every id a user can have */
    p_text(&p, after ? after : "00000000-0000-0000-0000-000000000000");
    p_i64(&p, limit);
    struct op t;
    enum ts_rc rc = TS_OK;
    for (op_start(&t, pg(st), true); op_next(&t, &rc);)
        rc = user_page(&t, &p, limit, out, out_n);
    return rc;
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
        rc = write_one(&t, S_SESSION_DELETE, &p);
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

static enum ts_rc pg_signing_key_reseal(struct ts_store *st, const char *kid, const char *expected,
                                        const char *replacement)
{
    struct params p = {0};
    p_text(&p, kid);
    p_text(&p, expected);
    p_text(&p, replacement);
    struct op t;
    enum ts_rc rc = TS_OK;
    for (op_start(&t, pg(st), false); op_next(&t, &rc);) {
        int64_t n = 0;
        rc = run(&t, S_KEY_RESEAL, &p, &n);
        if (!rc && n == 0)
            rc = TS_E_STALE;
    }
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

/* ---- the native model (store.h): collections, documents, indexes ---- */

/*
 * Races between nodes, and the locks that settle them (READ COMMITTED throughout):
 * - A document write holds its collection row FOR SHARE; creating or deleting an index
 *   holds it FOR NO KEY UPDATE. So an index never misses a document written while it is
 *   being filled, and a write never keeps entries of an index deleted meanwhile: the two
 *   wait for each other, and each then reads what the other committed.
 * - Unique terms are decided by the partial unique index doc_index_unique: of two writes
 *   racing for one term, the second waits for the first and fails with 23505 (conflict).
 * - Creating a token or key for an identity locks the identity's row FOR KEY SHARE while it
 *   checks that the identity is live; deleting the identity deletes its row first and its
 *   tokens after (a new statement, hence a new snapshot). A token inserted in between is
 *   either seen by that second statement, or its transaction found the row gone.
 * - The sweeper takes its batches with SKIP LOCKED: nodes sweeping together share the work,
 *   and rows that requests hold are left for the next batch.
 */

#define FILL_PAGE 1000 /* documents read per round trip while filling a new index */

/* A JSON value's compact text (NULL for NULL). Jansson fails here only without memory. */
static char *json_text(const json_t *j)
{
    if (!j)
        return NULL;
    char *s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!s)
        abort();
    return s;
}

/* A JSON column, NULL when SQL NULL (or, never expected, not JSON). */
static json_t *col_json(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? NULL : json_loads(PQgetvalue(r, row, col), 0, NULL);
}

/* DOC_COLS of one row. */
static struct ts_doc *row_to_doc(const PGresult *r, int row, const char *collection)
{
    struct ts_doc *d = ts_xcalloc(1, sizeof(*d));
    d->collection = ts_xstrdup(collection);
    d->id = col_dup(r, row, 0);
    d->data = col_json_object(r, row, 1);
    d->ts = col_i64(r, row, 2);
    d->created_at = col_i64(r, row, 3);
    d->expires_at = col_i64(r, row, 4);
    return d;
}

/* INDEX_COLS of one row into out. */
static void row_to_index(const PGresult *r, int row, struct ts_index_def *out)
{
    out->name = col_dup(r, row, 0);
    out->terms = col_json(r, row, 1);
    if (!json_is_array(out->terms)) {
        json_decref(out->terms);
        out->terms = json_array();
    }
    out->unique = col_bool(r, row, 2);
    out->created_at = col_i64(r, row, 3);
}

/* Runs a query that must return a row (an existence check, a lock), else TS_E_NOT_FOUND. */
static enum ts_rc must_exist(struct op *t, enum stmt_id id, const struct params *p)
{
    int64_t n = 0;
    enum ts_rc rc = run(t, id, p, &n);
    return rc ? rc : n > 0 ? TS_OK : TS_E_NOT_FOUND;
}

/* ---- collections ---- */

static enum ts_rc pg_collection_create(struct ts_store *st, const char *name, int64_t now)
{
    struct params p = {0};
    p_text(&p, name);
    p_i64(&p, now);
    struct op t;
    enum ts_rc rc = TS_OK;
    for (op_start(&t, pg(st), false); op_next(&t, &rc);)
        rc = write_one(&t, S_COLL_INSERT, &p);
    return rc;
}

static enum ts_rc collection_get(struct op *t, const struct params *p,
                                 struct ts_collection_info *out)
{
    enum ts_rc rc = TS_OK;
    PGresult *r = q(t, S_COLL_GET, p, &rc);
    if (!r)
        return rc;
    if (PQntuples(r) == 0)
        rc = TS_E_NOT_FOUND;
    else if (out) {
        out->name = col_dup(r, 0, 0);
        out->created_at = col_i64(r, 0, 1);
    }
    PQclear(r);
    return rc;
}

static enum ts_rc pg_collection_get(struct ts_store *st, const char *name,
                                    struct ts_collection_info *out)
{
    struct params p = {0};
    p_text(&p, name);
    struct op t;
    enum ts_rc rc = TS_OK;
    for (op_start(&t, pg(st), true); op_next(&t, &rc);)
        rc = collection_get(&t, &p, out);
    return rc;
}

static enum ts_rc collection_list(struct op *t, const struct params *p,
                                  struct ts_collection_info **out, size_t *out_n)
{
    enum ts_rc rc = TS_OK;
    PGresult *r = q(t, S_COLL_LIST, p, &rc);
    if (!r)
        return rc;
    int n = PQntuples(r);
    struct ts_collection_info *list = ts_xcalloc(n > 0 ? (size_t)n : 1, sizeof(*list));
    for (int i = 0; i < n; i++) {
        list[i].name = col_dup(r, i, 0);
        list[i].created_at = col_i64(r, i, 1);
    }
    PQclear(r);
    *out = list;
    *out_n = (size_t)n;
    return TS_OK;
}

static enum ts_rc pg_collection_list(struct ts_store *st, const char *after, int64_t limit,
                                     struct ts_collection_info **out, size_t *out_n)
{
    struct params p = {0};
    p_text(&p, after ? after : ""); /* every name sorts after "" */
    p_i64(&p, limit);
    struct op t;
    enum ts_rc rc = TS_OK;
    for (op_start(&t, pg(st), true); op_next(&t, &rc);)
        rc = collection_list(&t, &p, out, out_n);
    return rc;
}

/* The collection goes first (its documents, indexes, entries and credentials by cascade),
 * then the tokens, keys and external links bound to its documents. */
static enum ts_rc collection_delete(struct op *t, const struct params *p)
{
    enum ts_rc rc = tx_begin(t);
    if (rc)
        return rc;
    int64_t n = 0;
    rc = run(t, S_COLL_DELETE, p, &n);
    if (!rc && n == 0)
        rc = TS_E_NOT_FOUND;
    if (!rc)
        rc = run(t, S_TOKENS_DELETE_COLLECTION, p, NULL);
    if (!rc)
        rc = run(t, S_LINKS_DELETE_COLLECTION, p, NULL);
    if (!rc)
        rc = notify(t);
    return tx_end(t, rc);
}

static enum ts_rc pg_collection_delete(struct ts_store *st, const char *name)
{
    struct params p = {0};
    p_text(&p, name);
    struct op t;
    enum ts_rc rc = TS_OK;
    for (op_start(&t, pg(st), false); op_next(&t, &rc);)
        rc = collection_delete(&t, &p);
    return rc;
}

/* ---- indexes ---- */

/*
 * Inserts one index entry. Before a unique one, an expired document still holding the term
 * gives it up: it reads as absent, so it is deleted with everything bound to it (a new
 * index is filled from live documents only, so index_create skips this).
 */
static enum ts_rc insert_entry(struct op *t, const char *collection, const char *index,
                               const char *term, const char *doc_id, bool unique,
                               bool clear_expired, int64_t now)
{
    enum ts_rc rc = TS_OK;
    if (unique && clear_expired) {
        struct params p = {0};
        p_text(&p, collection);
        p_text(&p, index);
        p_text(&p, term);
        p_i64(&p, now);
        PGresult *r = q(t, S_DOC_DELETE_EXPIRED_TERM, &p, &rc);
        if (!r)
            return rc;
        for (int i = 0; !rc && i < PQntuples(r); i++)
            rc = delete_identity_bound(t, collection, PQgetvalue(r, i, 0));
        PQclear(r);
        if (rc)
            return rc;
    }
    struct params p = {0};
    p_text(&p, collection);
    p_text(&p, index);
    p_text(&p, term);
    p_text(&p, doc_id);
    p_bool(&p, unique);
    return run(t, S_ENTRY_INSERT, &p, NULL);
}

/* Fills a new index from the collection's live documents, a page at a time, each page
 * locked FOR KEY SHARE so that no document can vanish under its entry. */
static enum ts_rc fill_index(struct op *t, const char *collection, const struct ts_index_def *def,
                             int64_t now)
{
    enum ts_rc rc = TS_OK;
    char *after = ts_xstrdup("");
    for (;;) {
        struct params p = {0};
        p_text(&p, collection);
        p_text(&p, after);
        p_i64(&p, now);
        p_i64(&p, FILL_PAGE);
        PGresult *r = q(t, S_INDEX_FILL_PAGE, &p, &rc);
        if (!r)
            break;
        int n = PQntuples(r);
        for (int i = 0; !rc && i < n; i++) {
            json_t *data = col_json(r, i, 1);
            char *key = ts_store_index_key_of(def->terms, data);
            json_decref(data);
            if (key)
                rc = insert_entry(t, collection, def->name, key, PQgetvalue(r, i, 0), def->unique,
                                  false, now);
            free(key);
        }
        if (n > 0) {
            free(after);
            after = col_dup(r, n - 1, 0);
        }
        PQclear(r);
        if (rc || n < FILL_PAGE)
            break;
    }
    free(after);
    return rc;
}

static enum ts_rc index_create(struct op *t, const char *collection, const struct ts_index_def *def,
                               const char *terms, int64_t now)
{
    enum ts_rc rc = tx_begin(t);
    if (rc)
        return rc;
    struct params p = {0};
    p_text(&p, collection);
    rc = must_exist(t, S_COLL_LOCK, &p);
    if (!rc) {
        p_text(&p, def->name);
        p_text(&p, terms);
        p_bool(&p, def->unique);
        p_i64(&p, now);
        rc = run(t, S_INDEX_INSERT, &p, NULL); /* 23505: the name is taken */
    }
    if (!rc)
        rc = fill_index(t, collection, def, now); /* 23505: two documents share a term */
    if (!rc)
        rc = notify(t);
    return tx_end(t, rc);
}

static enum ts_rc pg_index_create(struct ts_store *st, const char *collection,
                                  const struct ts_index_def *def, int64_t now)
{
    char *terms = json_text(def->terms);
    struct op t;
    enum ts_rc rc = TS_OK;
    for (op_start(&t, pg(st), false); op_next(&t, &rc);)
        rc = index_create(&t, collection, def, terms, now);
    free(terms);
    return rc;
}

static enum ts_rc index_list(struct op *t, const struct params *p, struct ts_index_def **out,
                             size_t *out_n)
{
    enum ts_rc rc = TS_OK;
    PGresult *r = q(t, S_INDEX_LIST, p, &rc);
    if (!r)
        return rc;
    int n = PQntuples(r);
    if (n == 0) {
        PQclear(r);
        rc = must_exist(t, S_COLL_GET, p);
        if (rc)
            return rc;
    }
    struct ts_index_def *list = ts_xcalloc(n > 0 ? (size_t)n : 1, sizeof(*list));
    for (int i = 0; i < n; i++)
        row_to_index(r, i, &list[i]);
    if (n > 0)
        PQclear(r);
    *out = list;
    *out_n = (size_t)n;
    return TS_OK;
}

static enum ts_rc pg_index_list(struct ts_store *st, const char *collection,
                                struct ts_index_def **out, size_t *out_n)
{
    struct params p = {0};
    p_text(&p, collection);
    struct op t;
    enum ts_rc rc = TS_OK;
    for (op_start(&t, pg(st), true); op_next(&t, &rc);)
        rc = index_list(&t, &p, out, out_n);
    return rc;
}

static enum ts_rc index_get(struct op *t, const struct params *p, struct ts_index_def *out)
{
    enum ts_rc rc = TS_OK;
    PGresult *r = q(t, S_INDEX_GET, p, &rc);
    if (!r)
        return rc;
    if (PQntuples(r) == 0)
        rc = TS_E_NOT_FOUND;
    else if (out)
        row_to_index(r, 0, out);
    PQclear(r);
    return rc;
}

static enum ts_rc pg_index_get(struct ts_store *st, const char *collection, const char *name,
                               struct ts_index_def *out)
{
    struct params p = {0};
    p_text(&p, collection);
    p_text(&p, name);
    struct op t;
    enum ts_rc rc = TS_OK;
    for (op_start(&t, pg(st), true); op_next(&t, &rc);)
        rc = index_get(&t, &p, out);
    return rc;
}

/* The entries go by cascade. */
static enum ts_rc index_delete(struct op *t, const struct params *p)
{
    enum ts_rc rc = tx_begin(t);
    if (rc)
        return rc;
    struct params cp = {0};
    p_text(&cp, p->v[0]);
    rc = must_exist(t, S_COLL_LOCK, &cp);
    int64_t n = 0;
    if (!rc)
        rc = run(t, S_INDEX_DELETE, p, &n);
    if (!rc && n == 0)
        rc = TS_E_NOT_FOUND;
    if (!rc)
        rc = notify(t);
    return tx_end(t, rc);
}

static enum ts_rc pg_index_delete(struct ts_store *st, const char *collection, const char *name)
{
    struct params p = {0};
    p_text(&p, collection);
    p_text(&p, name);
    struct op t;
    enum ts_rc rc = TS_OK;
    for (op_start(&t, pg(st), false); op_next(&t, &rc);)
        rc = index_delete(&t, &p);
    return rc;
}

/* ---- documents ---- */

/* Deletes a document (its entries and credential by cascade), then the tokens, keys and
 * external links bound to it. *found: there was one; *live: it was live at now. */
static enum ts_rc delete_doc(struct op *t, const char *collection, const char *id, int64_t now,
                             bool *found, bool *live)
{
    struct params p = {0};
    p_text(&p, collection);
    p_text(&p, id);
    p_i64(&p, now);
    enum ts_rc rc = TS_OK;
    PGresult *r = q(t, S_DOC_DELETE, &p, &rc);
    if (!r)
        return rc;
    *found = PQntuples(r) > 0;
    *live = *found && col_bool(r, 0, 0);
    PQclear(r);
    return *found ? delete_identity_bound(t, collection, id) : TS_OK;
}

/* The entries of every index of the collection for the document's new data. */
static enum ts_rc write_entries(struct op *t, const struct ts_doc_write *w)
{
    struct params p = {0};
    p_text(&p, w->collection);
    enum ts_rc rc = TS_OK;
    PGresult *r = q(t, S_INDEXES_OF, &p, &rc);
    if (!r)
        return rc;
    for (int i = 0; !rc && i < PQntuples(r); i++) {
        json_t *terms = col_json(r, i, 1);
        char *key = ts_store_index_key_of(terms, w->data);
        json_decref(terms);
        if (key)
            rc = insert_entry(t, w->collection, PQgetvalue(r, i, 0), key, w->id, col_bool(r, i, 2),
                              true, w->now);
        free(key);
    }
    PQclear(r);
    return rc;
}

/*
 * One attempt at a document write (store.h). *res receives the stored document's times.
 * The document's row is locked before it is judged, so that two writes of one id on any
 * nodes are serialised: a REPLACE compares ts against the latest commit, and of two CREATEs
 * the second sees the first's document (or its insert fails with 23505).
 */
static enum ts_rc doc_write(struct op *t, const struct ts_doc_write *w, const char *data,
                            struct ts_doc *res)
{
    enum ts_rc rc = tx_begin(t);
    if (rc)
        return rc;
    struct params p = {0};
    p_text(&p, w->collection);
    rc = must_exist(t, S_COLL_SHARE, &p);
    int64_t ts = w->now, created_at = w->now;
    bool replace = false, expired = false;
    PGresult *r = NULL;
    if (!rc) {
        p_text(&p, w->id);
        r = q(t, S_DOC_LOCK, &p, &rc);
    }
    if (r) {
        if (PQntuples(r) > 0) {
            int64_t old_ts = col_i64(r, 0, 0), exp = col_i64(r, 0, 2);
            bool live = exp == 0 || exp > w->now;
            if (old_ts >= ts)
                ts = old_ts + 1; /* ts grows with every write of this id */
            if (w->mode == TS_DOC_CREATE) {
                if (live)
                    rc = TS_E_CONFLICT;
                else
                    expired = true;
            } else if (!live) {
                rc = TS_E_NOT_FOUND;
            } else if (w->expect_ts != 0 && old_ts != w->expect_ts) {
                rc = TS_E_STALE;
            } else {
                replace = true;
                created_at = col_i64(r, 0, 1);
            }
        } else if (w->mode == TS_DOC_REPLACE) {
            rc = TS_E_NOT_FOUND;
        }
        PQclear(r);
    }
    if (!rc && expired) {
        /* Its tokens, keys and credential must not outlive it into the new document. */
        bool found = false, live = false;
        rc = delete_doc(t, w->collection, w->id, w->now, &found, &live);
    }
    if (!rc) {
        struct params dp = {0};
        p_text(&dp, w->collection);
        p_text(&dp, w->id);
        p_text(&dp, data);
        p_i64(&dp, ts);
        p_time(&dp, w->expires_at);
        if (replace) {
            rc = run(t, S_DOC_UPDATE, &dp, NULL);
            if (!rc)
                rc = run(t, S_ENTRIES_DELETE_DOC, &p, NULL); /* the old data's entries */
        } else {
            p_i64(&dp, created_at);
            rc = run(t, S_DOC_INSERT, &dp, NULL); /* 23505: created meanwhile */
        }
    }
    if (!rc)
        rc = write_entries(t, w); /* 23505: a live document holds a unique term */
    if (!rc && w->password_hash) {
        struct params cp = {0};
        p_text(&cp, w->collection);
        p_text(&cp, w->id);
        p_text(&cp, w->password_hash);
        p_i64(&cp, w->now);
        rc = run(t, S_DOC_CRED_UPSERT, &cp, NULL);
    }
    if (!rc)
        rc = notify(t);
    rc = tx_end(t, rc);
    if (!rc) {
        res->ts = ts;
        res->created_at = created_at;
    }
    return rc;
}

static enum ts_rc pg_doc_write(struct ts_store *st, const struct ts_doc_write *w,
                               struct ts_doc **out)
{
    char *data = json_text(w->data);
    struct ts_doc res = {0};
    struct op t;
    enum ts_rc rc = TS_OK;
    for (op_start(&t, pg(st), false); op_next(&t, &rc);)
        rc = doc_write(&t, w, data, &res);
    free(data);
    if (!rc && out) {
        struct ts_doc *d = ts_xcalloc(1, sizeof(*d));
        d->collection = ts_xstrdup(w->collection);
        d->id = ts_xstrdup(w->id);
        d->data = json_deep_copy(w->data);
        if (!d->data)
            abort(); /* jansson fails only without memory */
        d->ts = res.ts;
        d->created_at = res.created_at;
        d->expires_at = w->expires_at;
        *out = d;
    }
    return rc;
}

static enum ts_rc doc_get(struct op *t, const struct params *p, const char *collection,
                          struct ts_doc **out)
{
    enum ts_rc rc = TS_OK;
    PGresult *r = q(t, S_DOC_GET, p, &rc);
    if (!r)
        return rc;
    if (PQntuples(r) > 0)
        *out = row_to_doc(r, 0, collection);
    else
        rc = TS_E_NOT_FOUND;
    PQclear(r);
    return rc;
}

static enum ts_rc pg_doc_get(struct ts_store *st, const char *collection, const char *id,
                             int64_t now, struct ts_doc **out)
{
    struct params p = {0};
    p_text(&p, collection);
    p_text(&p, id);
    p_i64(&p, now);
    struct op t;
    enum ts_rc rc = TS_OK;
    for (op_start(&t, pg(st), true); op_next(&t, &rc);)
        rc = doc_get(&t, &p, collection, out);
    return rc;
}

static enum ts_rc doc_delete(struct op *t, const char *collection, const char *id, int64_t now,
                             bool *live)
{
    enum ts_rc rc = tx_begin(t);
    if (rc)
        return rc;
    bool found = false;
    rc = delete_doc(t, collection, id, now, &found, live);
    if (!rc && found)
        rc = notify(t);
    return tx_end(t, rc);
}

static enum ts_rc pg_doc_delete(struct ts_store *st, const char *collection, const char *id,
                                int64_t now)
{
    bool live = false;
    struct op t;
    enum ts_rc rc = TS_OK;
    for (op_start(&t, pg(st), false); op_next(&t, &rc);)
        rc = doc_delete(&t, collection, id, now, &live);
    if (!rc && !live)
        rc = TS_E_NOT_FOUND; /* absent, or expired (and now deleted) */
    return rc;
}

/*
 * Runs a page query of documents (DOC_COLS). An empty page costs a second round trip, to
 * tell an empty answer from a missing collection or index (exists_id with ep).
 */
static enum ts_rc doc_page(struct op *t, enum stmt_id id, const struct params *p,
                           enum stmt_id exists_id, const struct params *ep, const char *collection,
                           struct ts_doc ***out, size_t *out_n)
{
    enum ts_rc rc = TS_OK;
    PGresult *r = q(t, id, p, &rc);
    if (!r)
        return rc;
    int n = PQntuples(r);
    if (n == 0) {
        PQclear(r);
        rc = must_exist(t, exists_id, ep);
        if (rc)
            return rc;
    }
    struct ts_doc **list = ts_xcalloc(n > 0 ? (size_t)n : 1, sizeof(*list));
    for (int i = 0; i < n; i++)
        list[i] = row_to_doc(r, i, collection);
    if (n > 0)
        PQclear(r);
    *out = list;
    *out_n = (size_t)n;
    return TS_OK;
}

static enum ts_rc pg_doc_list(struct ts_store *st, const char *collection, const char *after,
                              int64_t limit, int64_t now, struct ts_doc ***out, size_t *out_n)
{
    struct params p = {0}, ep = {0};
    p_text(&p, collection);
    p_text(&p, after ? after : ""); /* every id sorts after "" */
    p_i64(&p, now);
    p_i64(&p, limit);
    p_text(&ep, collection);
    struct op t;
    enum ts_rc rc = TS_OK;
    for (op_start(&t, pg(st), true); op_next(&t, &rc);)
        rc = doc_page(&t, S_DOC_LIST, &p, S_COLL_GET, &ep, collection, out, out_n);
    return rc;
}

static enum ts_rc pg_index_lookup(struct ts_store *st, const char *collection, const char *index,
                                  const char *key, const char *after, int64_t limit, int64_t now,
                                  struct ts_doc ***out, size_t *out_n)
{
    struct params p = {0}, ep = {0};
    p_text(&p, collection);
    p_text(&p, index);
    p_text(&p, key);
    p_text(&p, after ? after : "");
    p_i64(&p, now);
    p_i64(&p, limit);
    p_text(&ep, collection);
    p_text(&ep, index);
    struct op t;
    enum ts_rc rc = TS_OK;
    for (op_start(&t, pg(st), true); op_next(&t, &rc);)
        rc = doc_page(&t, S_DOC_LOOKUP, &p, S_INDEX_EXISTS, &ep, collection, out, out_n);
    return rc;
}

static enum ts_rc identity_collections(struct op *t, const struct params *p, char ***out,
                                       size_t *out_n)
{
    enum ts_rc rc = TS_OK;
    PGresult *r = q(t, S_IDENTITY_COLLECTIONS, p, &rc);
    if (!r)
        return rc;
    int n = PQntuples(r);
    char **list = ts_xcalloc(n > 0 ? (size_t)n : 1, sizeof(*list));
    for (int i = 0; i < n; i++)
        list[i] = col_dup(r, i, 0);
    PQclear(r);
    *out = list;
    *out_n = (size_t)n;
    return TS_OK;
}

static enum ts_rc pg_identity_collections(struct ts_store *st, const char *id, int64_t now,
                                          char ***out, size_t *out_n)
{
    struct params p = {0};
    p_text(&p, id);
    p_text(&p, ts_uuid_valid(id) ? id : NULL); /* no user has an id that is not a uuid */
    p_i64(&p, now);
    struct op t;
    enum ts_rc rc = TS_OK;
    for (op_start(&t, pg(st), true); op_next(&t, &rc);)
        rc = identity_collections(&t, &p, out, out_n);
    return rc;
}

/* ---- credentials of any identity ---- */

/*
 * Checks that the identity is live at now and keeps it so until commit (FOR KEY SHARE: its
 * deletion waits for us, and then deletes what we bound to it). TS_E_NOT_FOUND otherwise.
 */
static enum ts_rc lock_live_identity(struct op *t, const char *collection, const char *id,
                                     int64_t now)
{
    struct params p = {0};
    if (is_users(collection)) {
        if (!ts_uuid_valid(id))
            return TS_E_NOT_FOUND;
        p_text(&p, id);
        return must_exist(t, S_USER_LIVE_LOCK, &p);
    }
    p_text(&p, collection);
    p_text(&p, id);
    p_i64(&p, now);
    return must_exist(t, S_DOC_LIVE_LOCK, &p);
}

static enum ts_rc credential_get(struct op *t, const char *collection, const char *id, int64_t now,
                                 char **out_hash)
{
    struct params p = {0};
    enum stmt_id sid = S_USER_CRED_GET;
    if (!is_users(collection)) {
        sid = S_DOC_CRED_GET;
        p_text(&p, collection);
    }
    p_text(&p, id);
    if (sid == S_DOC_CRED_GET)
        p_i64(&p, now);
    enum ts_rc rc = TS_OK;
    PGresult *r = q(t, sid, &p, &rc);
    if (!r)
        return rc;
    if (PQntuples(r) > 0)
        *out_hash = col_dup(r, 0, 0);
    else
        rc = TS_E_NOT_FOUND;
    PQclear(r);
    return rc;
}

static enum ts_rc pg_credential_get(struct ts_store *st, const char *collection, const char *id,
                                    int64_t now, char **out_hash)
{
    if (is_users(collection) && !ts_uuid_valid(id))
        return TS_E_NOT_FOUND;
    struct op t;
    enum ts_rc rc = TS_OK;
    for (op_start(&t, pg(st), true); op_next(&t, &rc);)
        rc = credential_get(&t, collection, id, now, out_hash);
    return rc;
}

static enum ts_rc credential_set(struct op *t, const char *collection, const char *id,
                                 const char *hash, const char *expect_old, int64_t now)
{
    enum ts_rc rc = tx_begin(t);
    if (rc)
        return rc;
    bool users = is_users(collection);
    rc = lock_live_identity(t, collection, id, now);
    if (!rc && expect_old) {
        /* Locked until commit: a concurrent change waits for us, and we for it. */
        struct params p = {0};
        if (!users)
            p_text(&p, collection);
        p_text(&p, id);
        PGresult *r = q(t, users ? S_PASSWORD_LOCK : S_DOC_CRED_LOCK, &p, &rc);
        if (r) {
            if (PQntuples(r) == 0 || PQgetisnull(r, 0, 0) ||
                strcmp(PQgetvalue(r, 0, 0), expect_old) != 0)
                rc = TS_E_CONFLICT;
            PQclear(r);
        }
    }
    if (!rc && users) {
        rc = upsert_password(t, id, hash, now);
    } else if (!rc) {
        struct params p = {0};
        p_text(&p, collection);
        p_text(&p, id);
        p_text(&p, hash);
        p_i64(&p, now);
        rc = run(t, S_DOC_CRED_UPSERT, &p, NULL);
    }
    if (!rc)
        rc = notify(t);
    return tx_end(t, rc);
}

static enum ts_rc pg_credential_set(struct ts_store *st, const char *collection, const char *id,
                                    const char *hash, const char *expect_old, int64_t now)
{
    struct op t;
    enum ts_rc rc = TS_OK;
    for (op_start(&t, pg(st), false); op_next(&t, &rc);)
        rc = credential_set(&t, collection, id, hash, expect_old, now);
    return rc;
}

/* Deletes the tokens (or keys) of kind bound to an identity but except (may be NULL). */
static enum ts_rc delete_secrets_of(struct op *t, enum ts_secret_kind kind, const char *collection,
                                    const char *id_text, const char *except, int64_t *deleted)
{
    struct params p = {0};
    p_text(&p, ts__secret_kind_text(kind));
    p_text(&p, collection);
    p_text(&p, id_text);
    p_text(&p, except);
    return run(t, S_SECRETS_DELETE_IDENTITY, &p, deleted);
}

static enum ts_rc credential_delete(struct op *t, const char *collection, const char *id,
                                    const char *id_text, bool revoke, int64_t *revoked)
{
    enum ts_rc rc = tx_begin(t);
    if (rc)
        return rc;
    bool users = is_users(collection);
    struct params p = {0};
    if (!users)
        p_text(&p, collection);
    p_text(&p, id);
    int64_t n = 0, tokens = 0, sessions = 0;
    rc = run(t, users ? S_PASSWORD_DELETE : S_DOC_CRED_DELETE, &p, &n);
    if (!rc && n == 0)
        rc = TS_E_NOT_FOUND;
    if (!rc && revoke)
        rc = delete_secrets_of(t, TS_SECRET_TOKEN, collection, id_text, NULL, &tokens);
    if (!rc && revoke && users)
        rc = delete_user_sessions(t, id, NULL, &sessions);
    if (!rc)
        rc = notify(t);
    rc = tx_end(t, rc);
    if (!rc)
        *revoked = tokens + sessions;
    return rc;
}

static enum ts_rc pg_credential_delete(struct ts_store *st, const char *collection, const char *id,
                                       bool revoke, int64_t *revoked)
{
    if (is_users(collection) && !ts_uuid_valid(id))
        return TS_E_NOT_FOUND;
    char buf[TS_STORE_ID_LEN + 1];
    const char *id_text = identity_text(collection, id, buf);
    int64_t n = 0;
    struct op t;
    enum ts_rc rc = TS_OK;
    for (op_start(&t, pg(st), false); op_next(&t, &rc);)
        rc = credential_delete(&t, collection, id, id_text, revoke, &n);
    if (!rc && revoked)
        *revoked = n;
    return rc;
}

static enum ts_rc credential_list(struct op *t, enum stmt_id id, const struct params *p,
                                  struct ts_credential_info **out, size_t *out_n)
{
    enum ts_rc rc = TS_OK;
    PGresult *r = q(t, id, p, &rc);
    if (!r)
        return rc;
    int n = PQntuples(r);
    struct ts_credential_info *list = ts_xcalloc(n > 0 ? (size_t)n : 1, sizeof(*list));
    for (int i = 0; i < n; i++) {
        list[i].collection = col_dup(r, i, 0);
        list[i].id = col_dup(r, i, 1);
        list[i].strategy = col_dup(r, i, 2);
        list[i].created_at = col_i64(r, i, 3);
        list[i].updated_at = col_i64(r, i, 4);
    }
    PQclear(r);
    *out = list;
    *out_n = (size_t)n;
    return TS_OK;
}

/*
 * Credentials in (collection, id) order: the documents' from doc_credentials, the users'
 * from credentials, merged by one statement when no collection is named. Positions are
 * strict: (after_collection, after_id) itself is never listed again.
 */
static enum ts_rc pg_credential_list(struct ts_store *st, const char *collection,
                                     const char *after_collection, const char *after_id,
                                     int64_t limit, struct ts_credential_info **out, size_t *out_n)
{
    /* Where the users' section starts: after_id when the position is inside it. */
    int vs_users = after_collection ? strcmp(after_collection, "users") : -1;
    char lb[TS_STORE_ID_LEN + 1] = "00000000-0000-0000-0000-000000000000";
    const char *users_after = "";
    if (vs_users == 0) {
        users_after = after_id;
        if (ts_uuid_valid(after_id))
            (void)identity_text("users", after_id, lb);
    }
    struct params p = {0};
    enum stmt_id id;
    bool none = false; /* the position is past everything asked for */
    if (!collection) {
        id = S_CRED_LIST;
        p_text(&p, after_collection ? after_collection : "");
        p_text(&p, after_id ? after_id : "");
        p_bool(&p, vs_users <= 0);
        p_text(&p, lb);
        p_text(&p, users_after);
    } else if (is_users(collection)) {
        id = S_CRED_LIST_USERS;
        none = vs_users > 0;
        p_text(&p, lb);
        p_text(&p, users_after);
    } else {
        id = S_CRED_LIST_IN;
        int vs = after_collection ? strcmp(after_collection, collection) : -1;
        none = vs > 0;
        p_text(&p, collection);
        p_text(&p, vs == 0 ? after_id : "");
    }
    p_i64(&p, limit);
    if (none) {
        *out = ts_xcalloc(1, sizeof(**out));
        *out_n = 0;
        return TS_OK;
    }
    struct op t;
    enum ts_rc rc = TS_OK;
    for (op_start(&t, pg(st), true); op_next(&t, &rc);)
        rc = credential_list(&t, id, &p, out, out_n);
    return rc;
}

/* ---- opaque secrets: tokens and keys ---- */

/* TOKEN_COLS of one row. */
static struct ts_secret_row *row_to_secret(const PGresult *r, int row)
{
    struct ts_secret_row *s = ts_xcalloc(1, sizeof(*s));
    snprintf(s->id, sizeof(s->id), "%s", PQgetvalue(r, row, 0));
    s->kind = ts__secret_kind_from_text(PQgetvalue(r, row, 1));
    s->identity_collection = col_dup(r, row, 2);
    s->identity_id = col_dup(r, row, 3);
    s->role = col_dup(r, row, 4);
    s->origin = col_dup(r, row, 5);
    s->description = col_dup(r, row, 6);
    s->data = col_json(r, row, 7);
    s->meta = col_json(r, row, 8);
    s->created_at = col_i64(r, row, 9);
    s->expires_at = col_i64(r, row, 10);
    return s;
}

/* A secret bound to an identity is inserted under the identity's lock (lock_live_identity);
 * one bound to nothing is one statement. No notification: a new secret changes no answer
 * that any node may have cached. */
static enum ts_rc secret_create(struct op *t, const struct ts_secret_row *row, const char *id_text,
                                const struct params *p, int64_t now)
{
    bool bound = row->identity_collection != NULL;
    enum ts_rc rc = TS_OK;
    if (bound) {
        rc = tx_begin(t);
        if (rc)
            return rc;
        rc = lock_live_identity(t, row->identity_collection, id_text, now);
    }
    if (!rc)
        rc = run(t, S_SECRET_INSERT, p, NULL);
    return bound ? tx_end(t, rc) : rc;
}

static enum ts_rc pg_secret_create(struct ts_store *st, const struct ts_secret_row *row,
                                   const uint8_t hash[TS_SECRET_HASH_LEN], int64_t now)
{
    char buf[TS_STORE_ID_LEN + 1];
    const char *id_text = identity_text(row->identity_collection, row->identity_id, buf);
    char *data = json_text(row->data);
    char *meta = json_text(row->meta);
    struct params p = {0};
    p_text(&p, row->id);
    p_bytes(&p, hash, TS_SECRET_HASH_LEN);
    p_text(&p, ts__secret_kind_text(row->kind));
    p_text(&p, row->identity_collection);
    p_text(&p, id_text);
    p_text(&p, row->role);
    p_text(&p, row->origin);
    p_text(&p, row->description);
    p_text(&p, data);
    p_text(&p, meta);
    p_i64(&p, row->created_at ? row->created_at : now);
    p_time(&p, row->expires_at);
    struct op t;
    enum ts_rc rc = TS_OK;
    for (op_start(&t, pg(st), false); op_next(&t, &rc);)
        rc = secret_create(&t, row, id_text, &p, now);
    free(data);
    free(meta);
    return rc;
}

/* SECRET_CHECK's columns after TOKEN_COLS: what it found of the token's identity. */
enum {
    CK_USER = TOKEN_NCOLS, /* a users row with that id exists */
    CK_USER_DELETED,
    CK_USER_BANNED,
    CK_USER_CREATED,
    CK_DOC, /* the document exists (live or not) */
    CK_DOC_CREATED,
    CK_DOC_EXPIRES,
};

/* Judges SECRET_CHECK's row at now (store.h, ts_store_secret_check, in its order). */
static enum ts_secret_state secret_state(const PGresult *r, int64_t now, int64_t *valid_until)
{
    int64_t created = col_i64(r, 0, 9), expires = col_i64(r, 0, 10);
    if (expires != 0 && expires <= now)
        return TS_SECRET_EXPIRED;
    int64_t until = expires != 0 ? expires : INT64_MAX;
    if (!PQgetisnull(r, 0, 2)) {
        bool live;
        if (is_users(PQgetvalue(r, 0, 2))) {
            int64_t banned = col_i64(r, 0, CK_USER_BANNED);
            live = col_bool(r, 0, CK_USER) && PQgetisnull(r, 0, CK_USER_DELETED) &&
                   (banned == 0 || banned <= now) && col_i64(r, 0, CK_USER_CREATED) <= created;
        } else {
            int64_t doc_expires = col_i64(r, 0, CK_DOC_EXPIRES);
            /* A document re-created after the secret is another identity: never revived. */
            live = col_bool(r, 0, CK_DOC) && (doc_expires == 0 || doc_expires > now) &&
                   col_i64(r, 0, CK_DOC_CREATED) <= created;
            if (live && doc_expires != 0 && doc_expires < until)
                until = doc_expires;
        }
        if (!live)
            return TS_SECRET_IDENTITY_GONE;
    }
    *valid_until = until;
    return TS_SECRET_LIVE;
}

/* One round trip: the token with what its identity looks like. */
static enum ts_rc secret_check(struct op *t, const struct params *p, int64_t now,
                               enum ts_secret_state *state, struct ts_secret_row **out,
                               int64_t *valid_until)
{
    enum ts_rc rc = TS_OK;
    PGresult *r = q(t, S_SECRET_CHECK, p, &rc);
    if (!r)
        return rc;
    int64_t until = 0;
    enum ts_secret_state s = PQntuples(r) == 0 ? TS_SECRET_UNKNOWN : secret_state(r, now, &until);
    *state = s;
    if (valid_until)
        *valid_until = s == TS_SECRET_LIVE ? until : 0;
    if (out)
        *out = s == TS_SECRET_LIVE ? row_to_secret(r, 0) : NULL;
    PQclear(r);
    return TS_OK;
}

static enum ts_rc pg_secret_check(struct ts_store *st, const uint8_t hash[TS_SECRET_HASH_LEN],
                                  int64_t now, enum ts_secret_state *state,
                                  struct ts_secret_row **out, int64_t *valid_until)
{
    struct params p = {0};
    p_bytes(&p, hash, TS_SECRET_HASH_LEN);
    struct op t;
    enum ts_rc rc = TS_OK;
    for (op_start(&t, pg(st), true); op_next(&t, &rc);)
        rc = secret_check(&t, &p, now, state, out, valid_until);
    return rc;
}

static enum ts_rc secret_get(struct op *t, const struct params *p, struct ts_secret_row **out)
{
    enum ts_rc rc = TS_OK;
    PGresult *r = q(t, S_SECRET_GET, p, &rc);
    if (!r)
        return rc;
    if (PQntuples(r) > 0)
        *out = row_to_secret(r, 0);
    else
        rc = TS_E_NOT_FOUND;
    PQclear(r);
    return rc;
}

static enum ts_rc pg_secret_get(struct ts_store *st, const char *id, int64_t now,
                                struct ts_secret_row **out)
{
    struct params p = {0};
    p_text(&p, id);
    p_i64(&p, now);
    struct op t;
    enum ts_rc rc = TS_OK;
    for (op_start(&t, pg(st), true); op_next(&t, &rc);)
        rc = secret_get(&t, &p, out);
    return rc;
}

static enum ts_rc secret_list(struct op *t, enum stmt_id id, const struct params *p,
                              struct ts_secret_row ***out, size_t *out_n)
{
    enum ts_rc rc = TS_OK;
    PGresult *r = q(t, id, p, &rc);
    if (!r)
        return rc;
    int n = PQntuples(r);
    struct ts_secret_row **list = ts_xcalloc(n > 0 ? (size_t)n : 1, sizeof(*list));
    for (int i = 0; i < n; i++)
        list[i] = row_to_secret(r, i);
    PQclear(r);
    *out = list;
    *out_n = (size_t)n;
    return TS_OK;
}

static enum ts_rc pg_secret_list(struct ts_store *st, const struct ts_secret_filter *f,
                                 struct ts_secret_row ***out, size_t *out_n)
{
    char buf[TS_STORE_ID_LEN + 1];
    struct params p = {0};
    p_text(&p, ts__secret_kind_text(f->kind));
    p_text(&p, f->after ? f->after : ""); /* every id sorts after "" */
    p_i64(&p, f->now);
    p_i64(&p, f->limit);
    enum stmt_id id = S_SECRET_LIST;
    if (f->identity_collection) {
        id = S_SECRET_LIST_IDENTITY;
        p_text(&p, f->identity_collection);
        p_text(&p, identity_text(f->identity_collection, f->identity_id, buf));
    }
    struct op t;
    enum ts_rc rc = TS_OK;
    for (op_start(&t, pg(st), true); op_next(&t, &rc);)
        rc = secret_list(&t, id, &p, out, out_n);
    return rc;
}

static enum ts_rc pg_secret_delete(struct ts_store *st, enum ts_secret_kind kind, const char *id)
{
    struct params p = {0};
    p_text(&p, ts__secret_kind_text(kind));
    p_text(&p, id);
    struct op t;
    enum ts_rc rc = TS_OK;
    for (op_start(&t, pg(st), false); op_next(&t, &rc);)
        rc = write_one(&t, S_SECRET_DELETE, &p);
    return rc;
}

static enum ts_rc secrets_delete_for_identity(struct op *t, enum ts_secret_kind kind,
                                              const char *collection, const char *id_text,
                                              const char *except, int64_t *deleted)
{
    enum ts_rc rc = tx_begin(t);
    if (rc)
        return rc;
    int64_t n = 0;
    rc = delete_secrets_of(t, kind, collection, id_text, except, &n);
    if (!rc && n > 0)
        rc = notify(t);
    rc = tx_end(t, rc);
    if (!rc)
        *deleted = n;
    return rc;
}

static enum ts_rc pg_secrets_delete_for_identity(struct ts_store *st, enum ts_secret_kind kind,
                                                 const char *collection, const char *id,
                                                 const char *except_id, int64_t *deleted)
{
    char buf[TS_STORE_ID_LEN + 1];
    const char *id_text = identity_text(collection, id, buf);
    int64_t n = 0;
    struct op t;
    enum ts_rc rc = TS_OK;
    for (op_start(&t, pg(st), false); op_next(&t, &rc);)
        rc = secrets_delete_for_identity(&t, kind, collection, id_text, except_id, &n);
    if (!rc && deleted)
        *deleted = n;
    return rc;
}

/* ---- the sessions ledger ---- */

static enum ts_rc session_list(struct op *t, const struct params *p, struct ts_session_info **out,
                               size_t *out_n)
{
    enum ts_rc rc = TS_OK;
    PGresult *r = q(t, S_SESSION_LIST, p, &rc);
    if (!r)
        return rc;
    int n = PQntuples(r);
    struct ts_session_info *list = ts_xcalloc(n > 0 ? (size_t)n : 1, sizeof(*list));
    for (int i = 0; i < n; i++) {
        snprintf(list[i].id, sizeof(list[i].id), "%s", PQgetvalue(r, i, 0));
        list[i].aal = col_dup(r, i, 1);
        list[i].ip = col_dup(r, i, 2);
        list[i].user_agent = col_dup(r, i, 3);
        list[i].created_at = col_i64(r, i, 4);
        list[i].refreshed_at = col_i64(r, i, 5);
        list[i].not_after = col_i64(r, i, 6);
        list[i].refresh_tokens = col_i64(r, i, 7);
        list[i].refresh_tokens_active = col_i64(r, i, 8);
    }
    PQclear(r);
    *out = list;
    *out_n = (size_t)n;
    return TS_OK;
}

static enum ts_rc pg_session_list(struct ts_store *st, const char *user_id,
                                  struct ts_session_info **out, size_t *out_n)
{
    if (!ts_uuid_valid(user_id)) { /* no such user, so no sessions */
        *out = ts_xcalloc(1, sizeof(**out));
        *out_n = 0;
        return TS_OK;
    }
    struct params p = {0};
    p_text(&p, user_id);
    struct op t;
    enum ts_rc rc = TS_OK;
    for (op_start(&t, pg(st), true); op_next(&t, &rc);)
        rc = session_list(&t, &p, out, out_n);
    return rc;
}

/* ---- external identity providers (AccessProviders) and the identities they vouch for ----
 */

/*
 * Races between nodes (READ COMMITTED, as above):
 * - Provider names and issuers are decided by their unique indexes (23505: conflict).
 * - external_link, when it may create, first takes a transaction-scoped advisory lock named
 *   by a hash of (issuer, subject): creators of one outside subject take turns on every
 *   node, and each reads the link (locked FOR UPDATE, by a statement started after the lock
 *   was granted) as the one before it committed it, so exactly one creates the identity. A
 *   document is created under its collection's row lock FOR SHARE, taken before the link's
 *   lock: collection_delete takes the collection first, then the links, so the two wait for
 *   each other in one order only.
 * - Deleting an identity deletes its links after its row (delete_identity_bound), as for
 *   tokens: a link made meanwhile is either seen by that statement, or its transaction saw
 *   the identity gone (and made another).
 */

/* PROVIDER_COLS of one row. */
static struct ts_access_provider *row_to_provider(const PGresult *r, int row)
{
    struct ts_access_provider *p = ts_xcalloc(1, sizeof(*p));
    p->name = col_dup(r, row, 0);
    p->issuer = col_dup(r, row, 1);
    p->config = col_json_object(r, row, 2);
    p->created_at = col_i64(r, row, 3);
    p->updated_at = col_i64(r, row, 4);
    return p;
}

static enum ts_rc pg_provider_create(struct ts_store *st, const struct ts_access_provider *pr)
{
    char *config = json_text(pr->config);
    struct params p = {0};
    p_text(&p, pr->name);
    p_text(&p, pr->issuer);
    p_text(&p, config);
    p_i64(&p, pr->created_at);
    p_i64(&p, pr->updated_at);
    struct op t;
    enum ts_rc rc = TS_OK;
    for (op_start(&t, pg(st), false); op_next(&t, &rc);)
        rc = write_one(&t, S_PROVIDER_INSERT, &p); /* 23505: the name or issuer is taken */
    free(config);
    return rc;
}

static enum ts_rc pg_provider_update(struct ts_store *st, const struct ts_access_provider *pr)
{
    char *config = json_text(pr->config);
    struct params p = {0};
    p_text(&p, pr->name);
    p_text(&p, pr->issuer);
    p_text(&p, config);
    p_i64(&p, pr->updated_at);
    struct op t;
    enum ts_rc rc = TS_OK;
    for (op_start(&t, pg(st), false); op_next(&t, &rc);)
        rc = write_one(&t, S_PROVIDER_UPDATE, &p); /* 23505: the issuer is another's */
    free(config);
    return rc;
}

static enum ts_rc provider_get(struct op *t, const struct params *p,
                               struct ts_access_provider **out)
{
    enum ts_rc rc = TS_OK;
    PGresult *r = q(t, S_PROVIDER_GET, p, &rc);
    if (!r)
        return rc;
    if (PQntuples(r) > 0)
        *out = row_to_provider(r, 0);
    else
        rc = TS_E_NOT_FOUND;
    PQclear(r);
    return rc;
}

static enum ts_rc pg_provider_get(struct ts_store *st, const char *name,
                                  struct ts_access_provider **out)
{
    struct params p = {0};
    p_text(&p, name);
    struct op t;
    enum ts_rc rc = TS_OK;
    for (op_start(&t, pg(st), true); op_next(&t, &rc);)
        rc = provider_get(&t, &p, out);
    return rc;
}

static enum ts_rc provider_list(struct op *t, struct ts_access_provider ***out, size_t *out_n)
{
    enum ts_rc rc = TS_OK;
    PGresult *r = q(t, S_PROVIDER_LIST, NULL, &rc);
    if (!r)
        return rc;
    int n = PQntuples(r);
    struct ts_access_provider **list = ts_xcalloc(n > 0 ? (size_t)n : 1, sizeof(*list));
    for (int i = 0; i < n; i++)
        list[i] = row_to_provider(r, i);
    PQclear(r);
    *out = list;
    *out_n = (size_t)n;
    return TS_OK;
}

static enum ts_rc pg_provider_list(struct ts_store *st, struct ts_access_provider ***out,
                                   size_t *out_n)
{
    struct op t;
    enum ts_rc rc = TS_OK;
    for (op_start(&t, pg(st), true); op_next(&t, &rc);)
        rc = provider_list(&t, out, out_n);
    return rc;
}

static enum ts_rc pg_provider_delete(struct ts_store *st, const char *name)
{
    struct params p = {0};
    p_text(&p, name);
    struct op t;
    enum ts_rc rc = TS_OK;
    for (op_start(&t, pg(st), false); op_next(&t, &rc);)
        rc = write_one(&t, S_PROVIDER_DELETE, &p);
    return rc;
}

/* LINK_COLS of one row. */
static struct ts_external_link *row_to_link(const PGresult *r, int row)
{
    struct ts_external_link *l = ts_xcalloc(1, sizeof(*l));
    l->issuer = col_dup(r, row, 0);
    l->subject = col_dup(r, row, 1);
    l->collection = col_dup(r, row, 2);
    l->id = col_dup(r, row, 3);
    l->claims = col_json(r, row, 4);
    l->created_at = col_i64(r, row, 5);
    l->updated_at = col_i64(r, row, 6);
    return l;
}

/* A deep copy of a JSON value (NULL for NULL). Jansson fails here only without memory. */
static json_t *json_dup(const json_t *j)
{
    if (!j)
        return NULL;
    json_t *c = json_deep_copy(j);
    if (!c)
        abort();
    return c;
}

/* external_link's arguments, with the texts they are bound as. */
struct link_req {
    const char *issuer;
    const char *subject;
    const json_t *claims;
    const char *claims_text; /* NULL when claims is */
    const struct ts_external_create *create;
    const struct params *user; /* USER_INSERT's, when creating a user */
    const char *data;          /* the document's data, when creating a document */
    int64_t now;
};

/* Creates the identity that a new link will name: the user of create, or a document with a
 * fresh id, its index entries as doc_write makes them. *id_text gets its id (a heap string).
 */
static enum ts_rc create_identity(struct op *t, const struct link_req *a, char **id_text)
{
    const struct ts_external_create *c = a->create;
    if (is_users(c->collection)) {
        char buf[TS_STORE_ID_LEN + 1];
        enum ts_rc rc = run(t, S_USER_INSERT, a->user, NULL); /* 23505: e-mail or phone taken */
        if (!rc)
            *id_text = ts_xstrdup(identity_text("users", c->user->id, buf));
        return rc;
    }
    char id[TS_STORE_ID_LEN + 1];
    ts_uuid_v4(id);
    struct params p = {0};
    p_text(&p, c->collection);
    p_text(&p, id);
    p_text(&p, a->data);
    p_i64(&p, a->now);
    p_time(&p, 0);
    p_i64(&p, a->now);
    enum ts_rc rc = run(t, S_DOC_INSERT, &p, NULL);
    if (!rc) {
        struct ts_doc_write w = {.mode = TS_DOC_CREATE,
                                 .collection = c->collection,
                                 .id = id,
                                 .data = c->data,
                                 .now = a->now};
        rc = write_entries(t, &w); /* 23505: a live document holds a unique term */
    }
    if (!rc)
        *id_text = ts_xstrdup(id);
    return rc;
}

/* One attempt at external_link (store.h). *out is written only when it returns TS_OK. */
static enum ts_rc external_link(struct op *t, const struct link_req *a,
                                struct ts_external_link **out, bool *created)
{
    enum ts_rc rc = tx_begin(t);
    if (rc)
        return rc;
    const struct ts_external_create *c = a->create;
    int64_t collection_found = 1;
    if (c) {
        /* Creators of this (issuer, subject) take turns, on every node. */
        struct params p = {0};
        p_text(&p, a->issuer);
        p_text(&p, a->subject);
        rc = run(t, S_LINK_LOCK_KEY, &p, NULL);
        if (!rc && !is_users(c->collection)) {
            struct params cp = {0};
            p_text(&cp, c->collection);
            rc = run(t, S_COLL_SHARE, &cp, &collection_found);
        }
    }
    struct ts_external_link *l = NULL;
    if (!rc) {
        struct params p = {0};
        p_text(&p, a->issuer);
        p_text(&p, a->subject);
        p_i64(&p, a->now);
        PGresult *r = q(t, S_LINK_LOCK, &p, &rc);
        if (r) {
            if (PQntuples(r) > 0 && col_bool(r, 0, 7))
                l = row_to_link(r, 0);
            PQclear(r);
        }
    }
    bool made = false;
    if (!rc && l) {
        /* Live: this sign-in's claims (if any) replace the last ones. */
        struct params p = {0};
        p_text(&p, a->issuer);
        p_text(&p, a->subject);
        p_text(&p, a->claims_text);
        p_i64(&p, a->now);
        rc = run(t, S_LINK_TOUCH, &p, NULL);
        if (!rc) {
            l->updated_at = a->now;
            if (a->claims) {
                json_decref(l->claims);
                l->claims = json_dup(a->claims);
            }
        }
    } else if (!rc && (!c || !collection_found)) {
        rc = TS_E_NOT_FOUND;
    } else if (!rc) {
        char *id = NULL;
        rc = create_identity(t, a, &id);
        if (!rc) {
            struct params p = {0};
            p_text(&p, a->issuer);
            p_text(&p, a->subject);
            p_text(&p, c->collection);
            p_text(&p, id);
            p_text(&p, a->claims_text);
            p_i64(&p, a->now);
            rc = run(t, S_LINK_UPSERT, &p, NULL); /* over the dead link, if any */
        }
        if (!rc)
            rc = notify(t);
        if (!rc) {
            l = ts_xcalloc(1, sizeof(*l));
            l->issuer = ts_xstrdup(a->issuer);
            l->subject = ts_xstrdup(a->subject);
            l->collection = ts_xstrdup(c->collection);
            l->id = id;
            id = NULL;
            l->claims = json_dup(a->claims);
            l->created_at = a->now;
            l->updated_at = a->now;
            made = true;
        }
        free(id);
    }
    rc = tx_end(t, rc);
    if (rc) {
        ts_external_link_free(l);
        return rc;
    }
    *out = l;
    *created = made;
    return TS_OK;
}

static enum ts_rc pg_external_link(struct ts_store *st, const char *issuer, const char *subject,
                                   const json_t *claims, const struct ts_external_create *create,
                                   int64_t now, struct ts_external_link **out, bool *created)
{
    bool users = create && is_users(create->collection);
    if (users && !ts_uuid_valid(create->user->id))
        return TS_E_INVALID; /* as user_create: the uuid column cannot hold it */
    struct link_req a = {
        .issuer = issuer, .subject = subject, .claims = claims, .create = create, .now = now};
    char *claims_text = json_text(claims), *data = NULL, *um = NULL, *am = NULL;
    a.claims_text = claims_text;
    struct params up = {0};
    if (users) {
        um = json_dumps(create->user->user_metadata, JSON_COMPACT);
        am = json_dumps(create->user->app_metadata, JSON_COMPACT);
        user_insert_params(&up, create->user, um ? um : "{}", am ? am : "{}");
        a.user = &up;
    } else if (create) {
        data = json_text(create->data);
        a.data = data;
    }
    struct op t;
    enum ts_rc rc = TS_OK;
    for (op_start(&t, pg(st), false); op_next(&t, &rc);)
        rc = external_link(&t, &a, out, created);
    free(claims_text);
    free(data);
    free(um);
    free(am);
    return rc;
}

static enum ts_rc external_list(struct op *t, const struct params *p,
                                struct ts_external_link ***out, size_t *out_n)
{
    enum ts_rc rc = TS_OK;
    PGresult *r = q(t, S_LINK_LIST, p, &rc);
    if (!r)
        return rc;
    int n = PQntuples(r);
    struct ts_external_link **list = ts_xcalloc(n > 0 ? (size_t)n : 1, sizeof(*list));
    for (int i = 0; i < n; i++)
        list[i] = row_to_link(r, i);
    PQclear(r);
    *out = list;
    *out_n = (size_t)n;
    return TS_OK;
}

static enum ts_rc pg_external_list(struct ts_store *st, const char *collection, const char *id,
                                   struct ts_external_link ***out, size_t *out_n)
{
    char buf[TS_STORE_ID_LEN + 1];
    struct params p = {0};
    p_text(&p, collection);
    p_text(&p, identity_text(collection, id, buf));
    struct op t;
    enum ts_rc rc = TS_OK;
    for (op_start(&t, pg(st), true); op_next(&t, &rc);)
        rc = external_list(&t, &p, out, out_n);
    return rc;
}

/* ---- token exchanges ---- */

/* EXCHANGE_COLS of one row. */
static struct ts_exchange_row *row_to_exchange(const PGresult *r, int row)
{
    struct ts_exchange_row *x = ts_xcalloc(1, sizeof(*x));
    snprintf(x->id, sizeof(x->id), "%s", PQgetvalue(r, row, 0));
    x->provider = col_dup(r, row, 1);
    x->subject = col_dup(r, row, 2);
    x->collection = col_dup(r, row, 3);
    x->identity_id = col_dup(r, row, 4);
    x->token_id = col_dup(r, row, 5);
    x->token_type = col_dup(r, row, 6);
    x->meta = col_json(r, row, 7);
    x->created_at = col_i64(r, row, 8);
    x->expires_at = col_i64(r, row, 9);
    return x;
}

/* One statement; no notification: a record changes no answer that any node may cache. */
static enum ts_rc pg_exchange_record(struct ts_store *st, const struct ts_exchange_row *row)
{
    char buf[TS_STORE_ID_LEN + 1];
    char *meta = json_text(row->meta);
    struct params p = {0};
    p_text(&p, row->id);
    p_text(&p, row->provider);
    p_text(&p, row->subject);
    p_text(&p, row->collection);
    p_text(&p, identity_text(row->collection, row->identity_id, buf));
    p_text(&p, row->token_id);
    p_text(&p, row->token_type);
    p_text(&p, meta);
    p_i64(&p, row->created_at);
    p_i64(&p, row->expires_at);
    struct op t;
    enum ts_rc rc = TS_OK;
    for (op_start(&t, pg(st), false); op_next(&t, &rc);)
        rc = run(&t, S_EXCHANGE_INSERT, &p, NULL); /* 23505: the id exists */
    free(meta);
    return rc;
}

static enum ts_rc exchange_list(struct op *t, enum stmt_id id, const struct params *p,
                                struct ts_exchange_row ***out, size_t *out_n)
{
    enum ts_rc rc = TS_OK;
    PGresult *r = q(t, id, p, &rc);
    if (!r)
        return rc;
    int n = PQntuples(r);
    struct ts_exchange_row **list = ts_xcalloc(n > 0 ? (size_t)n : 1, sizeof(*list));
    for (int i = 0; i < n; i++)
        list[i] = row_to_exchange(r, i);
    PQclear(r);
    *out = list;
    *out_n = (size_t)n;
    return TS_OK;
}

static enum ts_rc pg_exchange_list(struct ts_store *st, const char *collection, const char *id,
                                   const char *after, int64_t limit, int64_t now,
                                   struct ts_exchange_row ***out, size_t *out_n)
{
    char buf[TS_STORE_ID_LEN + 1];
    struct params p = {0};
    p_i64(&p, now);
    p_text(&p, after ? after : ""); /* every id sorts after "" */
    p_i64(&p, limit);
    enum stmt_id sid = S_EXCHANGE_LIST;
    if (collection) {
        sid = S_EXCHANGE_LIST_IDENTITY;
        p_text(&p, collection);
        p_text(&p, identity_text(collection, id, buf));
    }
    struct op t;
    enum ts_rc rc = TS_OK;
    for (op_start(&t, pg(st), true); op_next(&t, &rc);)
        rc = exchange_list(&t, sid, &p, out, out_n);
    return rc;
}

/* ---- the sweeper ---- */

/* One kind's batch: a short transaction that notifies when it deleted anything. */
static enum ts_rc sweep_batch(struct op *t, enum stmt_id id, const struct params *p,
                              int64_t *deleted)
{
    enum ts_rc rc = tx_begin(t);
    if (rc)
        return rc;
    int64_t n = 0;
    rc = run(t, id, p, &n);
    if (!rc && n > 0)
        rc = notify(t);
    rc = tx_end(t, rc);
    if (!rc)
        *deleted = n;
    return rc;
}

/* Expired documents: the batch is deleted first (locking it), then, by statements that see
 * every token and link committed meanwhile, the tokens, keys and external links bound to it,
 * named by the arrays of collections and ids the first statement returned. */
static enum ts_rc sweep_docs(struct op *t, const struct params *p, int64_t *deleted)
{
    enum ts_rc rc = tx_begin(t);
    if (rc)
        return rc;
    int64_t n = 0;
    PGresult *r = q(t, S_SWEEP_DOCS, p, &rc);
    if (r) {
        n = col_i64(r, 0, 0);
        if (n > 0) {
            struct params tp = {0};
            p_text(&tp, PQgetvalue(r, 0, 1));
            p_text(&tp, PQgetvalue(r, 0, 2));
            rc = run(t, S_SWEEP_DOC_TOKENS, &tp, NULL);
            if (!rc)
                rc = run(t, S_SWEEP_DOC_LINKS, &tp, NULL);
        }
        PQclear(r);
    }
    if (!rc && n > 0)
        rc = notify(t);
    rc = tx_end(t, rc);
    if (!rc)
        *deleted = n;
    return rc;
}

/* Runs one kind's batch: statement id with (kind if not NULL, time, batch). */
static enum ts_rc sweep_kind(struct pg_store *s, enum stmt_id id, const char *kind, int64_t time,
                             int64_t batch, int64_t *deleted)
{
    struct params p = {0};
    if (kind)
        p_text(&p, kind);
    p_i64(&p, time);
    p_i64(&p, batch);
    struct op t;
    enum ts_rc rc = TS_OK;
    for (op_start(&t, s, false); op_next(&t, &rc);)
        rc = id == S_SWEEP_DOCS ? sweep_docs(&t, &p, deleted) : sweep_batch(&t, id, &p, deleted);
    return rc;
}

static enum ts_rc pg_sweep(struct ts_store *st, int64_t now, int64_t refresh_before, int64_t batch,
                           struct ts_sweep_counts *out)
{
    struct pg_store *s = pg(st);
    enum ts_rc rc = sweep_kind(s, S_SWEEP_SECRETS, "token", now, batch, &out->tokens);
    if (!rc)
        rc = sweep_kind(s, S_SWEEP_SECRETS, "key", now, batch, &out->keys);
    if (!rc)
        rc = sweep_kind(s, S_SWEEP_DOCS, NULL, now, batch, &out->documents);
    if (!rc)
        rc = sweep_kind(s, S_SWEEP_SESSIONS, NULL, now, batch, &out->sessions);
    if (!rc)
        rc = sweep_kind(s, S_SWEEP_REFRESH, NULL, refresh_before, batch, &out->refresh_tokens);
    if (!rc)
        rc = sweep_kind(s, S_SWEEP_EXCHANGES, NULL, now, batch, &out->exchanges);
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

/* ---- authorization objects (roles and profiles) ---- */

/*
 * Races between nodes: (kind, name) is decided by the primary key (23505: conflict). Every
 * write changes its object's row first, then authz_version's one row, in one transaction:
 * writers of different objects take turns on that row (writes are rare), and only ever wait
 * for it last, so they cannot deadlock; a reader that sees a version sees every write it
 * counts (both commit together).
 */

/* AUTHZ_COLS of one row. */
static struct ts_authz_object *row_to_authz(const PGresult *r, int row)
{
    struct ts_authz_object *o = ts_xcalloc(1, sizeof(*o));
    o->kind = (enum ts_authz_kind)col_i64(r, row, 0);
    o->name = col_dup(r, row, 1);
    o->config = col_json_object(r, row, 2);
    o->created_at = col_i64(r, row, 3);
    o->updated_at = col_i64(r, row, 4);
    return o;
}

/* Runs the write statement id (AUTHZ_INSERT, AUTHZ_UPDATE or AUTHZ_DELETE) in a transaction
 * that bumps authz_version and notifies the other nodes; TS_E_NOT_FOUND when it changed no
 * row. */
static enum ts_rc authz_write(struct op *t, enum stmt_id id, const struct params *p)
{
    enum ts_rc rc = tx_begin(t);
    if (rc)
        return rc;
    int64_t n = 0;
    rc = run(t, id, p, &n);
    if (!rc && n == 0)
        rc = TS_E_NOT_FOUND;
    if (!rc) {
        rc = run(t, S_AUTHZ_VERSION_BUMP, NULL, &n);
        if (!rc && n != 1) {
            ts_log_error("postgres authz version bump: the authz_version row is missing");
            rc = TS_E_STORE;
        }
    }
    if (!rc)
        rc = notify(t);
    return tx_end(t, rc);
}

static enum ts_rc authz_put(struct ts_store *st, enum stmt_id id, const struct ts_authz_object *o)
{
    char *config = json_text(o->config);
    struct params p = {0};
    p_i64(&p, o->kind);
    p_text(&p, o->name);
    p_text(&p, config);
    if (id == S_AUTHZ_INSERT)
        p_i64(&p, o->created_at);
    p_i64(&p, o->updated_at);
    struct op t;
    enum ts_rc rc = TS_OK;
    for (op_start(&t, pg(st), false); op_next(&t, &rc);)
        rc = authz_write(&t, id, &p); /* insert, 23505: (kind, name) is taken */
    free(config);
    return rc;
}

static enum ts_rc pg_authz_create(struct ts_store *st, const struct ts_authz_object *o)
{
    return authz_put(st, S_AUTHZ_INSERT, o);
}

static enum ts_rc pg_authz_update(struct ts_store *st, const struct ts_authz_object *o)
{
    return authz_put(st, S_AUTHZ_UPDATE, o);
}

static enum ts_rc authz_get(struct op *t, const struct params *p, struct ts_authz_object **out)
{
    enum ts_rc rc = TS_OK;
    PGresult *r = q(t, S_AUTHZ_GET, p, &rc);
    if (!r)
        return rc;
    if (PQntuples(r) > 0)
        *out = row_to_authz(r, 0);
    else
        rc = TS_E_NOT_FOUND;
    PQclear(r);
    return rc;
}

static enum ts_rc pg_authz_get(struct ts_store *st, enum ts_authz_kind kind, const char *name,
                               struct ts_authz_object **out)
{
    struct params p = {0};
    p_i64(&p, kind);
    p_text(&p, name);
    struct op t;
    enum ts_rc rc = TS_OK;
    for (op_start(&t, pg(st), true); op_next(&t, &rc);)
        rc = authz_get(&t, &p, out);
    return rc;
}

static enum ts_rc authz_list(struct op *t, const struct params *p, struct ts_authz_object ***out,
                             size_t *out_n)
{
    enum ts_rc rc = TS_OK;
    PGresult *r = q(t, S_AUTHZ_LIST, p, &rc);
    if (!r)
        return rc;
    int n = PQntuples(r);
    struct ts_authz_object **list = ts_xcalloc(n > 0 ? (size_t)n : 1, sizeof(*list));
    for (int i = 0; i < n; i++)
        list[i] = row_to_authz(r, i);
    PQclear(r);
    *out = list;
    *out_n = (size_t)n;
    return TS_OK;
}

static enum ts_rc pg_authz_list(struct ts_store *st, enum ts_authz_kind kind,
                                struct ts_authz_object ***out, size_t *out_n)
{
    struct params p = {0};
    p_i64(&p, kind);
    struct op t;
    enum ts_rc rc = TS_OK;
    for (op_start(&t, pg(st), true); op_next(&t, &rc);)
        rc = authz_list(&t, &p, out, out_n);
    return rc;
}

static enum ts_rc pg_authz_delete(struct ts_store *st, enum ts_authz_kind kind, const char *name)
{
    struct params p = {0};
    p_i64(&p, kind);
    p_text(&p, name);
    struct op t;
    enum ts_rc rc = TS_OK;
    for (op_start(&t, pg(st), false); op_next(&t, &rc);)
        rc = authz_write(&t, S_AUTHZ_DELETE, &p);
    return rc;
}

static enum ts_rc authz_version(struct op *t, int64_t *out)
{
    enum ts_rc rc = TS_OK;
    PGresult *r = q(t, S_AUTHZ_VERSION, NULL, &rc);
    if (!r)
        return rc;
    if (PQntuples(r) > 0) {
        *out = col_i64(r, 0, 0);
    } else {
        ts_log_error("postgres authz version: the authz_version row is missing");
        rc = TS_E_STORE;
    }
    PQclear(r);
    return rc;
}

static enum ts_rc pg_authz_version(struct ts_store *st, int64_t *out)
{
    struct op t;
    enum ts_rc rc = TS_OK;
    for (op_start(&t, pg(st), true); op_next(&t, &rc);)
        rc = authz_version(&t, out);
    return rc;
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
    .user_page = pg_user_page,
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
    .signing_key_reseal = pg_signing_key_reseal,
    .poll_external = pg_poll_external,
    .audit = pg_audit,
    .bucket_take = pg_bucket_take,
    .counter_add = pg_counter_add,
    .counter_read = pg_counter_read,
    .counter_reset = pg_counter_reset,
    .counters_sweep = pg_counters_sweep,
    .collection_create = pg_collection_create,
    .collection_get = pg_collection_get,
    .collection_list = pg_collection_list,
    .collection_delete = pg_collection_delete,
    .index_create = pg_index_create,
    .index_list = pg_index_list,
    .index_get = pg_index_get,
    .index_delete = pg_index_delete,
    .doc_write = pg_doc_write,
    .doc_get = pg_doc_get,
    .doc_delete = pg_doc_delete,
    .doc_list = pg_doc_list,
    .index_lookup = pg_index_lookup,
    .identity_collections = pg_identity_collections,
    .credential_get = pg_credential_get,
    .credential_set = pg_credential_set,
    .credential_delete = pg_credential_delete,
    .credential_list = pg_credential_list,
    .secret_create = pg_secret_create,
    .secret_check = pg_secret_check,
    .secret_get = pg_secret_get,
    .secret_list = pg_secret_list,
    .secret_delete = pg_secret_delete,
    .secrets_delete_for_identity = pg_secrets_delete_for_identity,
    .session_list = pg_session_list,
    .sweep = pg_sweep,
    .provider_create = pg_provider_create,
    .provider_update = pg_provider_update,
    .provider_get = pg_provider_get,
    .provider_list = pg_provider_list,
    .provider_delete = pg_provider_delete,
    .external_link = pg_external_link,
    .external_list = pg_external_list,
    .exchange_record = pg_exchange_record,
    .exchange_list = pg_exchange_list,
    .authz_create = pg_authz_create,
    .authz_update = pg_authz_update,
    .authz_get = pg_authz_get,
    .authz_list = pg_authz_list,
    .authz_delete = pg_authz_delete,
    .authz_version = pg_authz_version,
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

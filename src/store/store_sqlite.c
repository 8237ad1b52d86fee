/*
 * store_sqlite.c - the SQLite backend of store.h.
 *
 * Design:
 * - One database file in WAL mode, foreign keys on, opened once per thread that
 *   needs it: connections live in a pool and each keeps its prepared statements,
 *   so a request never re-parses SQL.
 * - SQLite allows one writer at a time. Instead of letting our own threads collide
 *   and back off through the busy handler (which sleeps in milliseconds), writers of
 *   this process queue on write_lock and only other processes (the CLI) ever meet
 *   SQLITE_BUSY, which busy_timeout absorbs.
 * - synchronous=NORMAL in WAL mode: a committed transaction is in the WAL file when
 *   COMMIT returns, so it survives the death of the process (kill -9); a power loss
 *   may lose the last commits. DATABASE_DURABILITY=full sets synchronous=FULL (an
 *   fsync per commit) for power-loss durability.
 *
 * - No mmap (SQLite's default, mmap_size=0): perf-facts.md measured faster point lookups
 *   with it on a read-only table, but with writes interleaved SQLite unmapped and remapped
 *   the file within transactions, and the munmap TLB shootdowns took 18 % of a refresh;
 *   turning it off took refreshes from ~2,100/s to ~5,200/s with GET /user unchanged.
 *
 * Must never: build SQL from input (everything is bound), or log a bound value.
 */
#include <pthread.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

#include "store_int.h"

/* ---- migrations: append only; never edit one that has shipped ---- */

static const char *const migrations[] = {
    /* 1: identities, credentials, sessions, refresh tokens, signing keys, audit log */
    "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE identities("
    "  id TEXT PRIMARY KEY,"
    "  collection TEXT NOT NULL DEFAULT 'users',"
    "  aud TEXT NOT NULL,"
    "  role TEXT NOT NULL,"
    "  email TEXT,"
    "  phone TEXT,"
    "  email_confirmed_at INTEGER,"
    "  phone_confirmed_at INTEGER,"
    "  confirmation_sent_at INTEGER,"
    "  invited_at INTEGER,"
    "  last_sign_in_at INTEGER,"
    "  banned_until INTEGER,"
    "  deleted_at INTEGER,"
    "  user_metadata TEXT NOT NULL DEFAULT '{}',"
    "  app_metadata TEXT NOT NULL DEFAULT '{}',"
    "  is_anonymous INTEGER NOT NULL DEFAULT 0,"
    "  expires_at INTEGER,"
    "  created_at INTEGER NOT NULL,"
    "  updated_at INTEGER NOT NULL"
    ") WITHOUT ROWID;"
    "CREATE UNIQUE INDEX identities_email ON identities(collection, email) WHERE email IS NOT NULL;"
    "CREATE UNIQUE INDEX identities_phone ON identities(collection, phone) WHERE phone IS NOT NULL;"
    "CREATE INDEX identities_created ON identities(collection, created_at, id);"
    "CREATE TABLE credentials("
    "  identity_id TEXT NOT NULL REFERENCES identities(id) ON DELETE CASCADE,"
    "  strategy TEXT NOT NULL,"
    "  hash TEXT NOT NULL,"
    "  meta TEXT,"
    "  created_at INTEGER NOT NULL,"
    "  updated_at INTEGER NOT NULL,"
    "  PRIMARY KEY(identity_id, strategy)"
    ") WITHOUT ROWID;"
    "CREATE TABLE sessions("
    "  id TEXT PRIMARY KEY,"
    "  identity_id TEXT NOT NULL REFERENCES identities(id) ON DELETE CASCADE,"
    "  aal TEXT NOT NULL,"
    "  amr TEXT NOT NULL,"
    "  ip TEXT,"
    "  user_agent TEXT,"
    "  not_after INTEGER,"
    "  created_at INTEGER NOT NULL,"
    "  refreshed_at INTEGER"
    ") WITHOUT ROWID;"
    "CREATE INDEX sessions_identity ON sessions(identity_id);"
    "CREATE TABLE refresh_tokens("
    "  hash BLOB PRIMARY KEY,"
    "  session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,"
    "  parent BLOB,"
    "  revoked_at INTEGER,"
    "  created_at INTEGER NOT NULL"
    ") WITHOUT ROWID;"
    "CREATE INDEX refresh_tokens_session ON refresh_tokens(session_id);"
    "CREATE TABLE signing_keys("
    "  kid TEXT PRIMARY KEY,"
    "  alg TEXT NOT NULL,"
    "  private_pem TEXT NOT NULL,"
    "  state TEXT NOT NULL CHECK(state IN ('next','active','retired')),"
    "  created_at INTEGER NOT NULL,"
    "  state_changed_at INTEGER NOT NULL"
    ") WITHOUT ROWID;"
    "CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys(state) WHERE state = 'active';"
    "CREATE TABLE audit_log("
    "  id INTEGER PRIMARY KEY,"
    "  created_at INTEGER NOT NULL,"
    "  event TEXT NOT NULL,"
    "  actor TEXT,"
    "  target TEXT,"
    "  ip TEXT,"
    "  meta TEXT"
    ");",
    /* 2: the counter store (store.h "counters"): token buckets and windowed counters */
    "CREATE TABLE buckets("
    "  key TEXT PRIMARY KEY,"
    "  full_at INTEGER NOT NULL" /* when the bucket is full again (no row: full) */
    ") WITHOUT ROWID;"
    "CREATE TABLE counters("
    "  key TEXT PRIMARY KEY,"
    "  value INTEGER NOT NULL,"
    "  window_start INTEGER NOT NULL,"
    "  window_end INTEGER NOT NULL"
    ") WITHOUT ROWID;",
    /* 3: the native model (store.h): collections, documents, indexes and their entries,
     * credentials of documents, and opaque tokens and keys */
    "CREATE TABLE collections("
    "  name TEXT PRIMARY KEY,"
    "  created_at INTEGER NOT NULL"
    ") WITHOUT ROWID;"
    "CREATE TABLE documents("
    "  collection TEXT NOT NULL REFERENCES collections(name) ON DELETE CASCADE,"
    "  id TEXT NOT NULL,"
    "  data TEXT NOT NULL,"
    "  ts INTEGER NOT NULL,"
    "  created_at INTEGER NOT NULL,"
    "  expires_at INTEGER,"
    "  PRIMARY KEY(collection, id)"
    ") WITHOUT ROWID;"
    "CREATE INDEX documents_expiry ON documents(expires_at) WHERE expires_at IS NOT NULL;"
    "CREATE TABLE doc_indexes("
    "  collection TEXT NOT NULL REFERENCES collections(name) ON DELETE CASCADE,"
    "  name TEXT NOT NULL,"
    "  terms TEXT NOT NULL,"
    "  is_unique INTEGER NOT NULL,"
    "  created_at INTEGER NOT NULL,"
    "  PRIMARY KEY(collection, name)"
    ") WITHOUT ROWID;"
    "CREATE TABLE doc_index_entries("
    "  collection TEXT NOT NULL,"
    "  index_name TEXT NOT NULL,"
    "  term TEXT NOT NULL,"
    "  doc_id TEXT NOT NULL,"
    "  is_unique INTEGER NOT NULL,"
    "  PRIMARY KEY(collection, index_name, term, doc_id),"
    "  FOREIGN KEY(collection, doc_id) REFERENCES documents(collection, id) ON DELETE CASCADE,"
    "  FOREIGN KEY(collection, index_name) REFERENCES doc_indexes(collection, name) "
    "    ON DELETE CASCADE"
    ") WITHOUT ROWID;"
    /* the unique index is what makes two racing creates unable to both win */
    "CREATE UNIQUE INDEX doc_index_unique ON doc_index_entries(collection, index_name, term) "
    "  WHERE is_unique = 1;"
    "CREATE INDEX doc_index_entries_doc ON doc_index_entries(collection, doc_id);"
    "CREATE TABLE doc_credentials("
    "  collection TEXT NOT NULL,"
    "  doc_id TEXT NOT NULL,"
    "  strategy TEXT NOT NULL,"
    "  hash TEXT NOT NULL,"
    "  created_at INTEGER NOT NULL,"
    "  updated_at INTEGER NOT NULL,"
    "  PRIMARY KEY(collection, doc_id, strategy),"
    "  FOREIGN KEY(collection, doc_id) REFERENCES documents(collection, id) ON DELETE CASCADE"
    ") WITHOUT ROWID;"
    "CREATE TABLE tokens("
    "  id TEXT PRIMARY KEY,"
    "  hash BLOB NOT NULL UNIQUE,"
    "  kind TEXT NOT NULL CHECK(kind IN ('token','key')),"
    "  identity_collection TEXT,"
    "  identity_id TEXT,"
    "  role TEXT,"
    "  origin TEXT NOT NULL,"
    "  description TEXT,"
    "  data TEXT,"
    "  meta TEXT,"
    "  created_at INTEGER NOT NULL,"
    "  expires_at INTEGER"
    ") WITHOUT ROWID;"
    "CREATE INDEX tokens_identity ON tokens(identity_collection, identity_id) "
    "  WHERE identity_id IS NOT NULL;"
    "CREATE INDEX tokens_expiry ON tokens(expires_at) WHERE expires_at IS NOT NULL;"
    "CREATE INDEX refresh_tokens_revoked ON refresh_tokens(revoked_at) "
    "  WHERE revoked_at IS NOT NULL;"
    "CREATE INDEX sessions_not_after ON sessions(not_after) WHERE not_after IS NOT NULL;",
    /* 4: the sweep deletes tokens and keys separately: with the kind leading the expiry index,
     * a batch of keys no longer walks past every expired token (1M expired tokens took 259 s
     * to sweep, quadratic in their number) */
    "DROP INDEX tokens_expiry;"
    "CREATE INDEX tokens_expiry ON tokens(kind, expires_at) WHERE expires_at IS NOT NULL;",
    /* 5: external identity providers (AccessProviders), the links from an outside (issuer,
     * subject) to an identity, and the record of token exchanges (issue 5) */
    "CREATE TABLE access_providers("
    "  name TEXT PRIMARY KEY,"
    "  issuer TEXT NOT NULL UNIQUE,"
    "  config TEXT NOT NULL,"
    "  created_at INTEGER NOT NULL,"
    "  updated_at INTEGER NOT NULL"
    ") WITHOUT ROWID;"
    "CREATE TABLE external_identities("
    "  issuer TEXT NOT NULL,"
    "  subject TEXT NOT NULL,"
    "  identity_collection TEXT NOT NULL,"
    "  identity_id TEXT NOT NULL,"
    "  claims TEXT,"
    "  created_at INTEGER NOT NULL,"
    "  updated_at INTEGER NOT NULL,"
    "  PRIMARY KEY(issuer, subject)"
    ") WITHOUT ROWID;"
    "CREATE INDEX external_identities_identity "
    "  ON external_identities(identity_collection, identity_id);"
    "CREATE TABLE exchanges("
    "  id TEXT PRIMARY KEY,"
    "  provider TEXT NOT NULL,"
    "  subject TEXT NOT NULL,"
    "  identity_collection TEXT NOT NULL,"
    "  identity_id TEXT NOT NULL,"
    "  token_id TEXT,"
    "  token_type TEXT NOT NULL,"
    "  meta TEXT,"
    "  created_at INTEGER NOT NULL,"
    "  expires_at INTEGER NOT NULL"
    ") WITHOUT ROWID;"
    "CREATE INDEX exchanges_identity ON exchanges(identity_collection, identity_id);"
    "CREATE INDEX exchanges_expiry ON exchanges(expires_at);",
    /* 6: authorization objects, roles and profiles (issue 6), and the version every write of
     * one bumps in its transaction (callers cache compiled roles under it) */
    "CREATE TABLE authz_objects("
    "  kind INTEGER NOT NULL CHECK(kind IN (1, 2)),"
    "  name TEXT NOT NULL,"
    "  config TEXT NOT NULL,"
    "  created_at INTEGER NOT NULL,"
    "  updated_at INTEGER NOT NULL,"
    "  PRIMARY KEY(kind, name)"
    ") WITHOUT ROWID;"
    "CREATE TABLE authz_version("
    "  id INTEGER PRIMARY KEY CHECK(id = 1),"
    "  version INTEGER NOT NULL"
    ");"
    "INSERT INTO authz_version(id, version) VALUES(1, 0);",
};

#define MIGRATION_COUNT ((int)TS_ARRAY_LEN(migrations))

/* ---- prepared statements ---- */

#define USER_COLS                                                                                  \
    "i.id, i.aud, i.role, i.email, i.phone, i.email_confirmed_at, i.phone_confirmed_at, "          \
    "i.confirmation_sent_at, i.invited_at, i.last_sign_in_at, i.banned_until, i.deleted_at, "      \
    "i.created_at, i.updated_at, i.user_metadata, i.app_metadata, i.is_anonymous, "                \
    "EXISTS(SELECT 1 FROM credentials c WHERE c.identity_id = i.id AND c.strategy = 'password')"
#define USER_NCOLS 18

#define DOC_COLS "d.collection, d.id, d.data, d.ts, d.created_at, d.expires_at"
#define SECRET_COLS                                                                                \
    "t.id, t.kind, t.identity_collection, t.identity_id, t.role, t.origin, t.description, "        \
    "t.data, t.meta, t.created_at, t.expires_at"
#define SECRET_NCOLS 11
#define PROVIDER_COLS "name, issuer, config, created_at, updated_at"
#define LINK_COLS                                                                                  \
    "x.issuer, x.subject, x.identity_collection, x.identity_id, x.claims, x.created_at, "          \
    "x.updated_at"
#define LINK_NCOLS 7
#define EXCHANGE_COLS                                                                              \
    "id, provider, subject, identity_collection, identity_id, token_id, token_type, meta, "        \
    "created_at, expires_at"
#define AUTHZ_COLS "kind, name, config, created_at, updated_at"

#define STMT_TABLE(X)                                                                              \
    X(BEGIN, "BEGIN IMMEDIATE")                                                                    \
    X(COMMIT, "COMMIT")                                                                            \
    X(ROLLBACK, "ROLLBACK")                                                                        \
    X(PING, "SELECT 1")                                                                            \
    X(META_GET, "SELECT value FROM meta WHERE key = ?1")                                           \
    X(META_INSERT, "INSERT INTO meta(key, value) VALUES(?1, ?2)")                                  \
    X(USER_INSERT,                                                                                 \
      "INSERT INTO identities(id, collection, aud, role, email, phone, email_confirmed_at, "       \
      "phone_confirmed_at, confirmation_sent_at, invited_at, last_sign_in_at, banned_until, "      \
      "deleted_at, created_at, updated_at, user_metadata, app_metadata, is_anonymous) "            \
      "VALUES(?1, 'users', ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, "    \
      "?17)")                                                                                      \
    X(USER_UPDATE, "UPDATE identities SET aud = ?2, role = ?3, email = ?4, phone = ?5, "           \
                   "email_confirmed_at = ?6, phone_confirmed_at = ?7, confirmation_sent_at = ?8, " \
                   "invited_at = ?9, banned_until = ?11, deleted_at = ?12, updated_at = ?14, "     \
                   "user_metadata = ?15, app_metadata = ?16, is_anonymous = ?17 "                  \
                   "WHERE id = ?1 AND collection = 'users' AND updated_at = ?18")                  \
    X(USER_EXISTS, "SELECT 1 FROM identities WHERE id = ?1 AND collection = 'users'")              \
    X(USER_GET,                                                                                    \
      "SELECT " USER_COLS " FROM identities i WHERE i.id = ?1 AND i.collection = 'users'")         \
    X(USER_BY_EMAIL,                                                                               \
      "SELECT " USER_COLS ", (SELECT c.hash FROM credentials c WHERE c.identity_id = i.id AND "    \
      "c.strategy = 'password') FROM identities i WHERE i.collection = 'users' AND i.email = ?1")  \
    X(USER_DELETE, "DELETE FROM identities WHERE id = ?1 AND collection = 'users'")                \
    X(USER_LIST,                                                                                   \
      "SELECT " USER_COLS " FROM identities i WHERE i.collection = 'users' AND "                   \
      "(?1 IS NULL OR instr(lower(i.email), lower(?1)) > 0) ORDER BY i.created_at, i.id "          \
      "LIMIT ?2 OFFSET ?3")                                                                        \
    X(USER_PAGE, "SELECT " USER_COLS " FROM identities i WHERE i.collection = 'users' AND "        \
                 "i.deleted_at IS NULL AND i.id > ?1 ORDER BY i.id LIMIT ?2")                      \
    X(USER_COUNT, "SELECT count(*) FROM identities i WHERE i.collection = 'users' AND "            \
                  "(?1 IS NULL OR instr(lower(i.email), lower(?1)) > 0)")                          \
    X(USER_TOUCH_SIGN_IN, "UPDATE identities SET last_sign_in_at = ?2 WHERE id = ?1")              \
    X(PASSWORD_GET,                                                                                \
      "SELECT hash FROM credentials WHERE identity_id = ?1 AND strategy = 'password'")             \
    X(PASSWORD_UPSERT,                                                                             \
      "INSERT INTO credentials(identity_id, strategy, hash, created_at, updated_at) "              \
      "VALUES(?1, 'password', ?2, ?3, ?3) ON CONFLICT(identity_id, strategy) DO UPDATE SET "       \
      "hash = excluded.hash, updated_at = excluded.updated_at")                                    \
    X(SESSION_INSERT,                                                                              \
      "INSERT INTO sessions(id, identity_id, aal, amr, ip, user_agent, created_at, refreshed_at) " \
      "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL)")                                                  \
    X(SESSION_USER,                                                                                \
      "SELECT " USER_COLS " FROM sessions s JOIN identities i ON i.id = s.identity_id "            \
      "WHERE s.id = ?1 AND s.identity_id = ?2")                                                    \
    X(SESSION_DELETE, "DELETE FROM sessions WHERE id = ?1")                                        \
    X(SESSIONS_DELETE_USER,                                                                        \
      "DELETE FROM sessions WHERE identity_id = ?1 AND (?2 IS NULL OR id <> ?2)")                  \
    X(SESSION_TOUCH, "UPDATE sessions SET refreshed_at = ?2, ip = coalesce(?3, ip), "              \
                     "user_agent = coalesce(?4, user_agent) WHERE id = ?1")                        \
    X(REFRESH_INSERT,                                                                              \
      "INSERT INTO refresh_tokens(hash, session_id, parent, revoked_at, created_at) "              \
      "VALUES(?1, ?2, ?3, NULL, ?4)")                                                              \
    X(REFRESH_FIND,                                                                                \
      "SELECT r.session_id, r.revoked_at, s.identity_id, s.aal, s.amr FROM refresh_tokens r "      \
      "JOIN sessions s ON s.id = r.session_id WHERE r.hash = ?1")                                  \
    X(REFRESH_REVOKE, "UPDATE refresh_tokens SET revoked_at = ?2 WHERE hash = ?1")                 \
    X(KEYS_LIST,                                                                                   \
      "SELECT kid, alg, private_pem, state, created_at, state_changed_at FROM signing_keys "       \
      "ORDER BY created_at, kid")                                                                  \
    X(KEY_INSERT,                                                                                  \
      "INSERT INTO signing_keys(kid, alg, private_pem, state, created_at, state_changed_at) "      \
      "VALUES(?1, ?2, ?3, ?4, ?5, ?5)")                                                            \
    X(KEY_RETIRE_ACTIVE,                                                                           \
      "UPDATE signing_keys SET state = 'retired', state_changed_at = ?1 WHERE state = 'active'")   \
    X(KEY_ACTIVATE,                                                                                \
      "UPDATE signing_keys SET state = 'active', state_changed_at = ?2 WHERE kid = ?1 AND "        \
      "state = 'next'")                                                                            \
    X(KEY_DROP_RETIRED,                                                                            \
      "DELETE FROM signing_keys WHERE state = 'retired' AND state_changed_at < ?1")                \
    X(KEY_RESEAL, "UPDATE signing_keys SET private_pem = ?3 WHERE kid = ?1 AND private_pem = ?2")  \
    X(AUDIT_INSERT, "INSERT INTO audit_log(created_at, event, actor, target, ip, meta) "           \
                    "VALUES(?1, ?2, ?3, ?4, ?5, ?6)")                                              \
    X(BUCKET_GET, "SELECT full_at FROM buckets WHERE key = ?1")                                    \
    X(BUCKET_PUT, "INSERT INTO buckets(key, full_at) VALUES(?1, ?2) "                              \
                  "ON CONFLICT(key) DO UPDATE SET full_at = excluded.full_at")                     \
    X(COUNTER_GET, "SELECT value, window_start, window_end FROM counters WHERE key = ?1")          \
    X(COUNTER_PUT,                                                                                 \
      "INSERT INTO counters(key, value, window_start, window_end) VALUES(?1, ?2, ?3, ?4) "         \
      "ON CONFLICT(key) DO UPDATE SET value = excluded.value, "                                    \
      "window_start = excluded.window_start, window_end = excluded.window_end")                    \
    X(COUNTER_DELETE, "DELETE FROM counters WHERE key = ?1")                                       \
    X(BUCKETS_SWEEP, "DELETE FROM buckets WHERE full_at < ?1")                                     \
    X(COUNTERS_SWEEP, "DELETE FROM counters WHERE window_end < ?1")                                \
    X(COLL_INSERT, "INSERT INTO collections(name, created_at) VALUES(?1, ?2)")                     \
    X(COLL_GET, "SELECT name, created_at FROM collections WHERE name = ?1")                        \
    X(COLL_LIST,                                                                                   \
      "SELECT name, created_at FROM collections WHERE name > ?1 ORDER BY name LIMIT ?2")           \
    X(COLL_DELETE, "DELETE FROM collections WHERE name = ?1")                                      \
    X(COLL_SECRETS_DELETE,                                                                         \
      "DELETE FROM tokens WHERE identity_collection = ?1 AND identity_id IS NOT NULL")             \
    X(INDEX_INSERT, "INSERT INTO doc_indexes(collection, name, terms, is_unique, created_at) "     \
                    "VALUES(?1, ?2, ?3, ?4, ?5)")                                                  \
    X(INDEX_GET, "SELECT name, terms, is_unique, created_at FROM doc_indexes "                     \
                 "WHERE collection = ?1 AND name = ?2")                                            \
    X(INDEX_LIST, "SELECT name, terms, is_unique, created_at FROM doc_indexes "                    \
                  "WHERE collection = ?1 ORDER BY name")                                           \
    X(INDEX_DELETE, "DELETE FROM doc_indexes WHERE collection = ?1 AND name = ?2")                 \
    X(ENTRY_INSERT, "INSERT INTO doc_index_entries(collection, index_name, term, doc_id, "         \
                    "is_unique) VALUES(?1, ?2, ?3, ?4, ?5)")                                       \
    X(ENTRIES_DELETE_DOC, "DELETE FROM doc_index_entries WHERE collection = ?1 AND doc_id = ?2")   \
    X(ENTRY_EXPIRED_HOLDER,                                                                        \
      "SELECT e.doc_id FROM doc_index_entries e JOIN documents d ON d.collection = e.collection "  \
      "AND d.id = e.doc_id WHERE e.collection = ?1 AND e.index_name = ?2 AND e.term = ?3 AND "     \
      "e.is_unique = 1 AND d.expires_at <= ?4")                                                    \
    X(DOC_GET, "SELECT " DOC_COLS " FROM documents d WHERE d.collection = ?1 AND d.id = ?2 AND "   \
               "(d.expires_at IS NULL OR d.expires_at > ?3)")                                      \
    X(DOC_STATE,                                                                                   \
      "SELECT ts, created_at, expires_at FROM documents WHERE collection = ?1 AND id = ?2")        \
    X(DOC_LIVE, "SELECT 1 FROM documents WHERE collection = ?1 AND id = ?2 AND "                   \
                "(expires_at IS NULL OR expires_at > ?3)")                                         \
    X(DOC_INSERT, "INSERT INTO documents(collection, id, data, ts, created_at, expires_at) "       \
                  "VALUES(?1, ?2, ?3, ?4, ?5, ?6)")                                                \
    X(DOC_UPDATE, "UPDATE documents SET data = ?3, ts = ?4, expires_at = ?5 "                      \
                  "WHERE collection = ?1 AND id = ?2")                                             \
    X(DOC_DELETE, "DELETE FROM documents WHERE collection = ?1 AND id = ?2")                       \
    X(DOC_LIST, "SELECT " DOC_COLS " FROM documents d WHERE d.collection = ?1 AND d.id > ?2 AND "  \
                "(d.expires_at IS NULL OR d.expires_at > ?3) ORDER BY d.id LIMIT ?4")              \
    X(DOC_SCAN, "SELECT id, data FROM documents WHERE collection = ?1 AND "                        \
                "(expires_at IS NULL OR expires_at > ?2)")                                         \
    X(INDEX_LOOKUP,                                                                                \
      "SELECT " DOC_COLS " FROM doc_index_entries e JOIN documents d ON d.collection = "           \
      "e.collection AND d.id = e.doc_id WHERE e.collection = ?1 AND e.index_name = ?2 AND "        \
      "e.term = ?3 AND e.doc_id > ?4 AND (d.expires_at IS NULL OR d.expires_at > ?5) "             \
      "ORDER BY e.doc_id LIMIT ?6")                                                                \
    X(USER_LIVE,                                                                                   \
      "SELECT 1 FROM identities WHERE id = ?1 AND collection = 'users' AND deleted_at IS NULL")    \
    /* collections are few: visit each (CROSS JOIN keeps it outer) and look the id up there */     \
    X(DOC_COLLECTIONS,                                                                             \
      "SELECT c.name FROM collections c CROSS JOIN documents d ON d.collection = c.name AND "      \
      "d.id = ?1 WHERE d.expires_at IS NULL OR d.expires_at > ?2 ORDER BY c.name")                 \
    X(CRED_USER_GET,                                                                               \
      "SELECT c.hash FROM credentials c JOIN identities i ON i.id = c.identity_id "                \
      "WHERE c.identity_id = ?1 AND c.strategy = 'password' AND i.collection = 'users' AND "       \
      "i.deleted_at IS NULL")                                                                      \
    X(CRED_USER_DELETE,                                                                            \
      "DELETE FROM credentials WHERE identity_id = ?1 AND strategy = 'password'")                  \
    X(CRED_DOC_GET,                                                                                \
      "SELECT c.hash FROM doc_credentials c JOIN documents d ON d.collection = c.collection AND "  \
      "d.id = c.doc_id WHERE c.collection = ?1 AND c.doc_id = ?2 AND c.strategy = 'password' "     \
      "AND (d.expires_at IS NULL OR d.expires_at > ?3)")                                           \
    X(CRED_DOC_HASH, "SELECT hash FROM doc_credentials WHERE collection = ?1 AND doc_id = ?2 AND " \
                     "strategy = 'password'")                                                      \
    X(CRED_DOC_UPSERT,                                                                             \
      "INSERT INTO doc_credentials(collection, doc_id, strategy, hash, created_at, updated_at) "   \
      "VALUES(?1, ?2, 'password', ?3, ?4, ?4) ON CONFLICT(collection, doc_id, strategy) DO "       \
      "UPDATE SET hash = excluded.hash, updated_at = excluded.updated_at")                         \
    X(CRED_DOC_DELETE, "DELETE FROM doc_credentials WHERE collection = ?1 AND doc_id = ?2 AND "    \
                       "strategy = 'password'")                                                    \
    X(CRED_LIST,                                                                                   \
      "SELECT collection, id, strategy, created_at, updated_at FROM ("                             \
      "SELECT 'users' AS collection, identity_id AS id, strategy, created_at, updated_at "         \
      "FROM credentials WHERE strategy = 'password' UNION ALL "                                    \
      "SELECT collection, doc_id, strategy, created_at, updated_at FROM doc_credentials "          \
      "WHERE strategy = 'password') WHERE (?1 IS NULL OR collection = ?1) AND "                    \
      "(collection, id) > (?2, ?3) ORDER BY collection, id LIMIT ?4")                              \
    X(SECRET_INSERT,                                                                               \
      "INSERT INTO tokens(id, hash, kind, identity_collection, identity_id, role, origin, "        \
      "description, data, meta, created_at, expires_at) "                                          \
      "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)")                                 \
    /* one step: the secret, and its identity by primary key (a user or a document) */             \
    X(SECRET_CHECK,                                                                                \
      "SELECT " SECRET_COLS ", i.id IS NOT NULL, i.created_at, i.banned_until, "                   \
      "d.id IS NOT NULL, d.created_at, d.expires_at FROM tokens t "                                \
      "LEFT JOIN identities i ON t.identity_collection = 'users' AND i.id = t.identity_id AND "    \
      "i.collection = 'users' AND i.deleted_at IS NULL "                                           \
      "LEFT JOIN documents d ON t.identity_collection <> 'users' AND "                             \
      "d.collection = t.identity_collection AND d.id = t.identity_id WHERE t.hash = ?1")           \
    X(SECRET_GET, "SELECT " SECRET_COLS " FROM tokens t WHERE t.id = ?1 AND "                      \
                  "(t.expires_at IS NULL OR t.expires_at > ?2)")                                   \
    X(SECRET_LIST, "SELECT " SECRET_COLS " FROM tokens t WHERE t.kind = ?1 AND t.id > ?2 AND "     \
                   "(t.expires_at IS NULL OR t.expires_at > ?3) ORDER BY t.id LIMIT ?4")           \
    X(SECRET_LIST_IDENTITY,                                                                        \
      "SELECT " SECRET_COLS " FROM tokens t WHERE t.identity_collection = ?5 AND "                 \
      "t.identity_id = ?6 AND t.kind = ?1 AND t.id > ?2 AND "                                      \
      "(t.expires_at IS NULL OR t.expires_at > ?3) ORDER BY t.id LIMIT ?4")                        \
    X(SECRET_DELETE, "DELETE FROM tokens WHERE id = ?1 AND kind = ?2")                             \
    X(SECRETS_DELETE_BOUND,                                                                        \
      "DELETE FROM tokens WHERE identity_collection = ?1 AND identity_id = ?2")                    \
    X(SECRETS_DELETE_IDENTITY,                                                                     \
      "DELETE FROM tokens WHERE identity_collection = ?2 AND identity_id = ?3 AND kind = ?1 AND "  \
      "(?4 IS NULL OR id <> ?4)")                                                                  \
    X(SESSION_LIST,                                                                                \
      "SELECT s.id, s.aal, s.ip, s.user_agent, s.created_at, s.refreshed_at, s.not_after, "        \
      "(SELECT count(*) FROM refresh_tokens r WHERE r.session_id = s.id), "                        \
      "(SELECT count(*) FROM refresh_tokens r WHERE r.session_id = s.id AND "                      \
      "r.revoked_at IS NULL) FROM sessions s WHERE s.identity_id = ?1 ORDER BY s.created_at, "     \
      "s.id")                                                                                      \
    /* the sweep: ?1 the cutoff, ?2 the batch size; each through its expiry index */               \
    X(SWEEP_SECRETS, "DELETE FROM tokens WHERE id IN (SELECT id FROM tokens WHERE "                \
                     "kind = ?3 AND expires_at <= ?1 LIMIT ?2)")                                   \
    /* the same documents as SWEEP_DOCS (same order), whose tokens and keys go first */            \
    X(SWEEP_DOC_SECRETS,                                                                           \
      "DELETE FROM tokens WHERE identity_id IS NOT NULL AND (identity_collection, identity_id) "   \
      "IN (SELECT collection, id FROM documents WHERE expires_at <= ?1 "                           \
      "ORDER BY expires_at, collection, id LIMIT ?2)")                                             \
    X(SWEEP_DOCS,                                                                                  \
      "DELETE FROM documents WHERE (collection, id) IN (SELECT collection, id FROM "               \
      "documents WHERE expires_at <= ?1 ORDER BY expires_at, collection, id LIMIT ?2)")            \
    X(SWEEP_SESSIONS, "DELETE FROM sessions WHERE id IN (SELECT id FROM sessions WHERE "           \
                      "not_after <= ?1 LIMIT ?2)")                                                 \
    X(SWEEP_REFRESH, "DELETE FROM refresh_tokens WHERE hash IN (SELECT hash FROM refresh_tokens "  \
                     "WHERE revoked_at < ?1 LIMIT ?2)")                                            \
    /* the same documents as SWEEP_DOCS, whose external links go first */                          \
    X(SWEEP_DOC_LINKS,                                                                             \
      "DELETE FROM external_identities WHERE (identity_collection, identity_id) IN (SELECT "       \
      "collection, id FROM documents WHERE expires_at <= ?1 ORDER BY expires_at, collection, id "  \
      "LIMIT ?2)")                                                                                 \
    X(SWEEP_EXCHANGES, "DELETE FROM exchanges WHERE id IN (SELECT id FROM exchanges WHERE "        \
                       "expires_at <= ?1 LIMIT ?2)")                                               \
    X(PROVIDER_INSERT,                                                                             \
      "INSERT INTO access_providers(" PROVIDER_COLS ") VALUES(?1, ?2, ?3, ?4, ?5)")                \
    X(PROVIDER_UPDATE, "UPDATE access_providers SET issuer = ?2, config = ?3, updated_at = ?4 "    \
                       "WHERE name = ?1")                                                          \
    X(PROVIDER_GET, "SELECT " PROVIDER_COLS " FROM access_providers WHERE name = ?1")              \
    X(PROVIDER_LIST, "SELECT " PROVIDER_COLS " FROM access_providers ORDER BY name")               \
    X(PROVIDER_DELETE, "DELETE FROM access_providers WHERE name = ?1")                             \
    /* a link, with its identity's created_at when the identity is live at ?3 (else NULL) */       \
    X(LINK_FIND,                                                                                   \
      "SELECT " LINK_COLS ", CASE WHEN x.identity_collection = 'users' THEN (SELECT i.created_at " \
      "FROM identities i WHERE i.id = x.identity_id AND i.collection = 'users' AND "               \
      "i.deleted_at IS NULL) ELSE (SELECT d.created_at FROM documents d WHERE "                    \
      "d.collection = x.identity_collection AND d.id = x.identity_id AND "                         \
      "(d.expires_at IS NULL OR d.expires_at > ?3)) END "                                          \
      "FROM external_identities x WHERE x.issuer = ?1 AND x.subject = ?2")                         \
    X(LINK_TOUCH, "UPDATE external_identities SET claims = coalesce(?3, claims), updated_at = ?4 " \
                  "WHERE issuer = ?1 AND subject = ?2")                                            \
    X(LINK_DELETE, "DELETE FROM external_identities WHERE issuer = ?1 AND subject = ?2")           \
    X(LINK_INSERT, "INSERT INTO external_identities(issuer, subject, identity_collection, "        \
                   "identity_id, claims, "                                                         \
                   "created_at, updated_at) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?6)")                   \
    X(LINK_LIST, "SELECT " LINK_COLS " FROM external_identities x WHERE "                          \
                 "x.identity_collection = ?1 AND x.identity_id = ?2 ORDER BY x.created_at, "       \
                 "x.issuer, x.subject")                                                            \
    X(LINKS_DELETE_BOUND,                                                                          \
      "DELETE FROM external_identities WHERE identity_collection = ?1 AND identity_id = ?2")       \
    X(COLL_LINKS_DELETE, "DELETE FROM external_identities WHERE identity_collection = ?1")         \
    X(EXCHANGE_INSERT, "INSERT INTO exchanges(" EXCHANGE_COLS ") "                                 \
                       "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)")                          \
    X(EXCHANGE_LIST, "SELECT " EXCHANGE_COLS " FROM exchanges WHERE expires_at > ?1 AND id > ?2 "  \
                     "ORDER BY id LIMIT ?3")                                                       \
    /* of one identity: through exchanges_identity rather than every exchange */                   \
    X(EXCHANGE_LIST_IDENTITY,                                                                      \
      "SELECT " EXCHANGE_COLS " FROM exchanges WHERE identity_collection = ?4 AND "                \
      "identity_id = ?5 AND expires_at > ?1 AND id > ?2 ORDER BY id LIMIT ?3")                     \
    X(AUTHZ_INSERT, "INSERT INTO authz_objects(" AUTHZ_COLS ") VALUES(?1, ?2, ?3, ?4, ?5)")        \
    X(AUTHZ_UPDATE, "UPDATE authz_objects SET config = ?3, updated_at = ?4 "                       \
                    "WHERE kind = ?1 AND name = ?2")                                               \
    X(AUTHZ_GET, "SELECT " AUTHZ_COLS " FROM authz_objects WHERE kind = ?1 AND name = ?2")         \
    X(AUTHZ_LIST, "SELECT " AUTHZ_COLS " FROM authz_objects WHERE kind = ?1 ORDER BY name")        \
    X(AUTHZ_DELETE, "DELETE FROM authz_objects WHERE kind = ?1 AND name = ?2")                     \
    X(AUTHZ_VERSION_BUMP, "UPDATE authz_version SET version = version + 1 WHERE id = 1")           \
    X(AUTHZ_VERSION, "SELECT version FROM authz_version WHERE id = 1")                             \
    X(SCHEMA_VERSION, "SELECT coalesce(max(version), 0) FROM schema_migrations")                   \
    X(DATA_VERSION, "PRAGMA data_version")

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

struct sq_conn {
    sqlite3 *db;
    sqlite3_stmt *stmts[S__COUNT]; /* prepared on first use, kept for the connection's life */
    struct sq_conn *next;          /* free-list link while pooled */
};

struct sq_store {
    struct ts_store base; /* must be first */
    char *path;
    bool durable_full;
    pthread_mutex_t pool_lock;
    struct sq_conn *idle;       /* connections not in use */
    pthread_mutex_t write_lock; /* serialises this process's write transactions */
    struct sq_conn *watch;      /* poll_external's own connection, or NULL */
    int64_t watch_version;      /* its last PRAGMA data_version */
};

static struct sq_store *sq(struct ts_store *st)
{
    return (struct sq_store *)(void *)st;
}

/* Maps an SQLite result to ours, logging the unexpected ones with the engine's message. */
static enum ts_rc map_rc(struct sq_conn *c, int rc, const char *what)
{
    switch (rc & 0xff) {
    case SQLITE_OK:
    case SQLITE_DONE:
    case SQLITE_ROW:
        return TS_OK;
    case SQLITE_CONSTRAINT:
        if (rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY)
            return TS_E_CONFLICT;
        if (rc == SQLITE_CONSTRAINT_FOREIGNKEY)
            return TS_E_NOT_FOUND;
        break;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_FULL:
    case SQLITE_READONLY:
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN:
    case SQLITE_PROTOCOL:
        ts_log_error("sqlite %s: %s", what, c ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc));
        return TS_E_UNAVAILABLE;
    default:
        break;
    }
    ts_log_error("sqlite %s: %s (%d)", what, c ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc), rc);
    return TS_E_STORE;
}

static enum ts_rc exec(struct sq_conn *c, const char *sql, const char *what)
{
    char *msg = NULL;
    int rc = sqlite3_exec(c->db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        ts_log_error("sqlite %s: %s", what, msg ? msg : sqlite3_errstr(rc));
        sqlite3_free(msg);
        return map_rc(NULL, rc, what);
    }
    return TS_OK;
}

static void conn_close(struct sq_conn *c)
{
    for (int i = 0; i < S__COUNT; i++)
        sqlite3_finalize(c->stmts[i]);
    sqlite3_close_v2(c->db);
    free(c);
}

static enum ts_rc conn_open(struct sq_store *s, struct sq_conn **out)
{
    struct sq_conn *c = ts_xcalloc(1, sizeof(*c));
    int rc = sqlite3_open_v2(
        s->path, &c->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        ts_log_error("sqlite open %s: %s", s->path, c->db ? sqlite3_errmsg(c->db) : "no memory");
        conn_close(c);
        return TS_E_UNAVAILABLE;
    }
    sqlite3_extended_result_codes(c->db, 1);
    sqlite3_busy_timeout(c->db, 5000);
    char pragmas[512];
    snprintf(pragmas, sizeof(pragmas),
             "PRAGMA journal_mode=WAL; PRAGMA synchronous=%s; PRAGMA foreign_keys=ON;"
             "PRAGMA cache_size=-2048; PRAGMA temp_store=MEMORY;",
             s->durable_full ? "FULL" : "NORMAL");
    enum ts_rc trc = exec(c, pragmas, "pragmas");
    if (trc) {
        conn_close(c);
        return trc;
    }
    *out = c;
    return TS_OK;
}

static enum ts_rc acquire(struct sq_store *s, struct sq_conn **out)
{
    pthread_mutex_lock(&s->pool_lock);
    struct sq_conn *c = s->idle;
    if (c)
        s->idle = c->next;
    pthread_mutex_unlock(&s->pool_lock);
    if (c) {
        *out = c;
        return TS_OK;
    }
    return conn_open(s, out);
}

static void release(struct sq_store *s, struct sq_conn *c)
{
    pthread_mutex_lock(&s->pool_lock);
    c->next = s->idle;
    s->idle = c;
    pthread_mutex_unlock(&s->pool_lock);
}

/* Returns the connection's prepared statement id, reset and unbound, or NULL (logged). */
static sqlite3_stmt *stmt(struct sq_conn *c, enum stmt_id id)
{
    if (!c->stmts[id]) {
        int rc = sqlite3_prepare_v3(c->db, stmt_sql[id], -1, SQLITE_PREPARE_PERSISTENT,
                                    &c->stmts[id], NULL);
        if (rc != SQLITE_OK) {
            ts_log_error("sqlite prepare %d: %s", (int)id, sqlite3_errmsg(c->db));
            return NULL;
        }
    }
    return c->stmts[id];
}

static void done(sqlite3_stmt *s)
{
    if (s) {
        sqlite3_reset(s);
        sqlite3_clear_bindings(s);
    }
}

static void bind_text(sqlite3_stmt *s, int i, const char *v)
{
    if (v)
        sqlite3_bind_text(s, i, v, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(s, i);
}

static void bind_time(sqlite3_stmt *s, int i, int64_t v)
{
    if (v)
        sqlite3_bind_int64(s, i, v);
    else
        sqlite3_bind_null(s, i);
}

static char *col_strdup(sqlite3_stmt *s, int i)
{
    const unsigned char *t = sqlite3_column_text(s, i);
    return t ? ts_xstrdup((const char *)t) : NULL;
}

/* Runs a statement that returns no rows; returns the mapped result. */
static enum ts_rc run(struct sq_conn *c, sqlite3_stmt *s, const char *what)
{
    if (!s)
        return TS_E_STORE;
    int rc = sqlite3_step(s);
    enum ts_rc r = rc == SQLITE_DONE || rc == SQLITE_ROW ? TS_OK : map_rc(c, rc, what);
    done(s);
    return r;
}

static json_t *col_json_object(sqlite3_stmt *s, int i)
{
    const char *t = (const char *)sqlite3_column_text(s, i);
    json_t *j = t ? json_loads(t, 0, NULL) : NULL;
    if (!json_is_object(j)) {
        json_decref(j);
        j = json_object();
    }
    return j;
}

static struct ts_user *row_to_user(sqlite3_stmt *s)
{
    struct ts_user *u = ts_xcalloc(1, sizeof(*u));
    const char *id = (const char *)sqlite3_column_text(s, 0);
    snprintf(u->id, sizeof(u->id), "%s", id ? id : "");
    u->aud = col_strdup(s, 1);
    u->role = col_strdup(s, 2);
    if (!u->aud)
        u->aud = ts_xstrdup("");
    if (!u->role)
        u->role = ts_xstrdup("");
    u->email = col_strdup(s, 3);
    u->phone = col_strdup(s, 4);
    u->email_confirmed_at = sqlite3_column_int64(s, 5);
    u->phone_confirmed_at = sqlite3_column_int64(s, 6);
    u->confirmation_sent_at = sqlite3_column_int64(s, 7);
    u->invited_at = sqlite3_column_int64(s, 8);
    u->last_sign_in_at = sqlite3_column_int64(s, 9);
    u->banned_until = sqlite3_column_int64(s, 10);
    u->deleted_at = sqlite3_column_int64(s, 11);
    u->created_at = sqlite3_column_int64(s, 12);
    u->updated_at = sqlite3_column_int64(s, 13);
    u->user_metadata = col_json_object(s, 14);
    u->app_metadata = col_json_object(s, 15);
    u->is_anonymous = sqlite3_column_int(s, 16) != 0;
    u->has_password = sqlite3_column_int(s, 17) != 0;
    return u;
}

/* Binds the user's fields in USER_INSERT / USER_UPDATE parameter order. The JSON texts are
 * heap strings the caller frees after the statement ran. USER_UPDATE leaves out created_at
 * (?13), which never changes, and last_sign_in_at (?10), which only session_create writes, so
 * that an update racing a sign-in cannot put back an older sign-in time. */
static void bind_user(sqlite3_stmt *s, const struct ts_user *u, char **um, char **am)
{
    *um = json_dumps(u->user_metadata, JSON_COMPACT);
    *am = json_dumps(u->app_metadata, JSON_COMPACT);
    bind_text(s, 1, u->id);
    bind_text(s, 2, u->aud);
    bind_text(s, 3, u->role);
    bind_text(s, 4, u->email);
    bind_text(s, 5, u->phone);
    bind_time(s, 6, u->email_confirmed_at);
    bind_time(s, 7, u->phone_confirmed_at);
    bind_time(s, 8, u->confirmation_sent_at);
    bind_time(s, 9, u->invited_at);
    bind_time(s, 10, u->last_sign_in_at);
    bind_time(s, 11, u->banned_until);
    bind_time(s, 12, u->deleted_at);
    sqlite3_bind_int64(s, 13, u->created_at);
    sqlite3_bind_int64(s, 14, u->updated_at);
    bind_text(s, 15, *um ? *um : "{}");
    bind_text(s, 16, *am ? *am : "{}");
    sqlite3_bind_int(s, 17, u->is_anonymous ? 1 : 0);
}

/* ---- transactions ---- */

static enum ts_rc tx_begin(struct sq_store *s, struct sq_conn *c)
{
    pthread_mutex_lock(&s->write_lock);
    enum ts_rc rc = run(c, stmt(c, S_BEGIN), "begin");
    if (rc)
        pthread_mutex_unlock(&s->write_lock);
    return rc;
}

/* Commits when rc is TS_OK, else rolls back; returns the first error. */
static enum ts_rc tx_end(struct sq_store *s, struct sq_conn *c, enum ts_rc rc)
{
    if (rc == TS_OK) {
        rc = run(c, stmt(c, S_COMMIT), "commit");
        if (rc && !sqlite3_get_autocommit(c->db))
            (void)run(c, stmt(c, S_ROLLBACK), "rollback");
    } else if (!sqlite3_get_autocommit(c->db)) {
        (void)run(c, stmt(c, S_ROLLBACK), "rollback");
    }
    pthread_mutex_unlock(&s->write_lock);
    return rc;
}

/* ---- operations ---- */

static void sq_close(struct ts_store *st)
{
    struct sq_store *s = sq(st);
    while (s->idle) {
        struct sq_conn *c = s->idle;
        s->idle = c->next;
        conn_close(c);
    }
    if (s->watch)
        conn_close(s->watch);
    pthread_mutex_destroy(&s->pool_lock);
    pthread_mutex_destroy(&s->write_lock);
    free(s->path);
    free(s);
}

static enum ts_rc current_version(struct sq_conn *c, int *out)
{
    sqlite3_stmt *q = stmt(c, S_SCHEMA_VERSION);
    if (!q)
        return TS_E_STORE;
    int rc = sqlite3_step(q);
    enum ts_rc r = map_rc(c, rc, "schema version");
    if (rc == SQLITE_ROW)
        *out = sqlite3_column_int(q, 0);
    done(q);
    return r;
}

static enum ts_rc sq_migrate(struct ts_store *st, int *applied, char **err)
{
    struct sq_store *s = sq(st);
    struct sq_conn *c;
    enum ts_rc rc = acquire(s, &c);
    if (rc) {
        *err = ts_xasprintf("cannot open database %s", s->path);
        return rc;
    }
    int n = 0;
    pthread_mutex_lock(&s->write_lock);
    rc = exec(c,
              "BEGIN IMMEDIATE; CREATE TABLE IF NOT EXISTS schema_migrations("
              "version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL); COMMIT;",
              "migrations table");
    int version = 0;
    if (!rc)
        rc = current_version(c, &version);
    for (int v = version + 1; !rc && v <= MIGRATION_COUNT; v++) {
        rc = exec(c, "BEGIN IMMEDIATE", "begin migration");
        /* Another process may have migrated while we waited for the lock. */
        int now_at = 0;
        if (!rc)
            rc = current_version(c, &now_at);
        if (!rc && now_at >= v) {
            rc = exec(c, "COMMIT", "commit");
            continue;
        }
        if (!rc)
            rc = exec(c, migrations[v - 1], "migration");
        if (!rc) {
            char sql[128];
            snprintf(sql, sizeof(sql),
                     "INSERT INTO schema_migrations(version, applied_at) VALUES(%d, %lld)", v,
                     (long long)ts_now_us());
            rc = exec(c, sql, "record migration");
        }
        if (!rc)
            rc = exec(c, "COMMIT", "commit migration");
        if (rc) {
            (void)exec(c, "ROLLBACK", "rollback migration");
            *err = ts_xasprintf("migration %d failed on %s", v, s->path);
        } else {
            n++;
        }
    }
    pthread_mutex_unlock(&s->write_lock);
    if (rc && !*err)
        *err = ts_xasprintf("cannot migrate %s", s->path);
    /* The schema changed: statements prepared before are stale, so start afresh. */
    conn_close(c);
    if (!rc && applied)
        *applied = n;
    return rc;
}

static enum ts_rc sq_schema_version(struct ts_store *st, int *current, int *latest)
{
    struct sq_store *s = sq(st);
    struct sq_conn *c;
    enum ts_rc rc = acquire(s, &c);
    if (rc)
        return rc;
    rc = current_version(c, current);
    release(s, c);
    if (!rc)
        *latest = MIGRATION_COUNT;
    return rc;
}

static enum ts_rc sq_ping(struct ts_store *st)
{
    struct sq_store *s = sq(st);
    struct sq_conn *c;
    enum ts_rc rc = acquire(s, &c);
    if (rc)
        return rc;
    rc = run(c, stmt(c, S_PING), "ping");
    release(s, c);
    return rc;
}

static enum ts_rc sq_meta_get(struct ts_store *st, const char *key, char **out)
{
    struct sq_store *s = sq(st);
    struct sq_conn *c;
    enum ts_rc rc = acquire(s, &c);
    if (rc)
        return rc;
    sqlite3_stmt *q = stmt(c, S_META_GET);
    if (!q) {
        rc = TS_E_STORE;
    } else {
        bind_text(q, 1, key);
        int r = sqlite3_step(q);
        if (r == SQLITE_ROW)
            *out = col_strdup(q, 0);
        rc = r == SQLITE_ROW ? TS_OK : r == SQLITE_DONE ? TS_E_NOT_FOUND : map_rc(c, r, "meta");
        done(q);
    }
    release(s, c);
    return rc;
}

static enum ts_rc sq_meta_insert(struct ts_store *st, const char *key, const char *value)
{
    struct sq_store *s = sq(st);
    struct sq_conn *c;
    enum ts_rc rc = acquire(s, &c);
    if (rc)
        return rc;
    rc = tx_begin(s, c);
    if (!rc) {
        sqlite3_stmt *q = stmt(c, S_META_INSERT);
        if (q) {
            bind_text(q, 1, key);
            bind_text(q, 2, value);
        }
        rc = tx_end(s, c, run(c, q, "meta insert"));
    }
    release(s, c);
    return rc;
}

static enum ts_rc upsert_password(struct sq_conn *c, const char *user_id, const char *hash,
                                  int64_t now)
{
    sqlite3_stmt *q = stmt(c, S_PASSWORD_UPSERT);
    if (q) {
        bind_text(q, 1, user_id);
        bind_text(q, 2, hash);
        sqlite3_bind_int64(q, 3, now);
    }
    return run(c, q, "password upsert");
}

/* Inserts u and, when hash is not NULL, its password credential (inside the caller's
 * transaction). TS_E_CONFLICT when the id, e-mail or phone is taken. */
static enum ts_rc insert_user(struct sq_conn *c, const struct ts_user *u, const char *hash)
{
    char *um = NULL, *am = NULL;
    sqlite3_stmt *q = stmt(c, S_USER_INSERT);
    if (q)
        bind_user(q, u, &um, &am);
    enum ts_rc r = run(c, q, "user insert");
    free(um);
    free(am);
    if (!r && hash)
        r = upsert_password(c, u->id, hash, u->created_at);
    return r;
}

static enum ts_rc sq_user_create(struct ts_store *st, const struct ts_user *u, const char *hash)
{
    struct sq_store *s = sq(st);
    struct sq_conn *c;
    enum ts_rc rc = acquire(s, &c);
    if (rc)
        return rc;
    rc = tx_begin(s, c);
    if (!rc)
        rc = tx_end(s, c, insert_user(c, u, hash));
    release(s, c);
    return rc;
}

/* Runs a query expected to return at most one user row. */
static enum ts_rc one_user(struct sq_conn *c, sqlite3_stmt *q, const char *what,
                           struct ts_user **out, char **out_hash)
{
    if (!q)
        return TS_E_STORE;
    int r = sqlite3_step(q);
    enum ts_rc rc;
    if (r == SQLITE_ROW) {
        *out = row_to_user(q);
        if (out_hash)
            *out_hash = col_strdup(q, USER_NCOLS);
        rc = TS_OK;
    } else {
        rc = r == SQLITE_DONE ? TS_E_NOT_FOUND : map_rc(c, r, what);
    }
    done(q);
    return rc;
}

static enum ts_rc sq_user_get(struct ts_store *st, const char *id, struct ts_user **out)
{
    struct sq_store *s = sq(st);
    struct sq_conn *c;
    enum ts_rc rc = acquire(s, &c);
    if (rc)
        return rc;
    sqlite3_stmt *q = stmt(c, S_USER_GET);
    if (q)
        bind_text(q, 1, id);
    rc = one_user(c, q, "user get", out, NULL);
    release(s, c);
    return rc;
}

static enum ts_rc sq_user_get_by_email(struct ts_store *st, const char *email, struct ts_user **out,
                                       char **out_hash)
{
    struct sq_store *s = sq(st);
    struct sq_conn *c;
    enum ts_rc rc = acquire(s, &c);
    if (rc)
        return rc;
    sqlite3_stmt *q = stmt(c, S_USER_BY_EMAIL);
    if (q)
        bind_text(q, 1, email);
    char *hash = NULL;
    rc = one_user(c, q, "user by email", out, &hash);
    if (!rc && out_hash)
        *out_hash = hash;
    else if (hash) {
        ts_wipe(hash, strlen(hash));
        free(hash);
    }
    release(s, c);
    return rc;
}

static enum ts_rc sq_user_update(struct ts_store *st, const struct ts_user *u, int64_t expected)
{
    struct sq_store *s = sq(st);
    struct sq_conn *c;
    enum ts_rc rc = acquire(s, &c);
    if (rc)
        return rc;
    rc = tx_begin(s, c);
    if (!rc) {
        char *um = NULL, *am = NULL;
        sqlite3_stmt *q = stmt(c, S_USER_UPDATE);
        if (q) {
            bind_user(q, u, &um, &am);
            sqlite3_bind_int64(q, 18, expected);
        }
        enum ts_rc r = run(c, q, "user update");
        free(um);
        free(am);
        if (!r && sqlite3_changes(c->db) == 0) {
            /* Gone, or changed since the caller read it. */
            q = stmt(c, S_USER_EXISTS);
            if (!q) {
                r = TS_E_STORE;
            } else {
                bind_text(q, 1, u->id);
                int sr = sqlite3_step(q);
                r = sr == SQLITE_ROW    ? TS_E_STALE
                    : sr == SQLITE_DONE ? TS_E_NOT_FOUND
                                        : map_rc(c, sr, "user exists");
                done(q);
            }
        }
        rc = tx_end(s, c, r);
    }
    release(s, c);
    return rc;
}

/* Runs one statement with one text parameter as a whole write transaction; with must_change,
 * a statement that changed no row gives TS_E_NOT_FOUND. */
static enum ts_rc write_one_text(struct ts_store *st, enum stmt_id id, const char *arg,
                                 bool must_change, const char *what)
{
    struct sq_store *s = sq(st);
    struct sq_conn *c;
    enum ts_rc rc = acquire(s, &c);
    if (rc)
        return rc;
    rc = tx_begin(s, c);
    if (!rc) {
        sqlite3_stmt *q = stmt(c, id);
        if (q)
            bind_text(q, 1, arg);
        enum ts_rc r = run(c, q, what);
        if (!r && must_change && sqlite3_changes(c->db) == 0)
            r = TS_E_NOT_FOUND;
        rc = tx_end(s, c, r);
    }
    release(s, c);
    return rc;
}

/* Runs a write statement (bound by the caller); TS_E_NOT_FOUND when it changed no row. */
static enum ts_rc run_changed(struct sq_conn *c, sqlite3_stmt *q, const char *what)
{
    enum ts_rc rc = run(c, q, what);
    if (!rc && sqlite3_changes(c->db) == 0)
        rc = TS_E_NOT_FOUND;
    return rc;
}

/* Deletes what is bound to an identity about to be deleted: every token and key bound to it
 * (*deleted, which may be NULL, gets their count) and its external links. */
static enum ts_rc delete_bound(struct sq_conn *c, const char *collection, const char *id,
                               int64_t *deleted)
{
    sqlite3_stmt *q = stmt(c, S_SECRETS_DELETE_BOUND);
    if (q) {
        bind_text(q, 1, collection);
        bind_text(q, 2, id);
    }
    enum ts_rc rc = run(c, q, "secrets delete");
    if (!rc && deleted)
        *deleted = sqlite3_changes(c->db);
    if (!rc) {
        q = stmt(c, S_LINKS_DELETE_BOUND);
        if (q) {
            bind_text(q, 1, collection);
            bind_text(q, 2, id);
        }
        rc = run(c, q, "links delete");
    }
    return rc;
}

/* The user's credentials, sessions and refresh tokens cascade from the identity; tokens, keys
 * and external links are no foreign keys (their identity may be a document) and go
 * explicitly. */
static enum ts_rc sq_user_delete(struct ts_store *st, const char *id)
{
    struct sq_store *s = sq(st);
    struct sq_conn *c;
    enum ts_rc rc = acquire(s, &c);
    if (rc)
        return rc;
    rc = tx_begin(s, c);
    if (!rc) {
        sqlite3_stmt *q = stmt(c, S_USER_DELETE);
        if (q)
            bind_text(q, 1, id);
        enum ts_rc r = run_changed(c, q, "user delete");
        if (!r)
            r = delete_bound(c, "users", id, NULL);
        rc = tx_end(s, c, r);
    }
    release(s, c);
    return rc;
}

static enum ts_rc sq_user_page(struct ts_store *st, const char *after, int64_t limit,
                               struct ts_user ***out, size_t *out_n)
{
    struct sq_store *s = sq(st);
    struct sq_conn *c;
    enum ts_rc rc = acquire(s, &c);
    if (rc)
        return rc;
    struct ts_user **list = ts_xcalloc((size_t)limit, sizeof(*list));
    size_t n = 0;
    sqlite3_stmt *q = stmt(c, S_USER_PAGE);
    if (!q) {
        rc = TS_E_STORE;
    } else {
        /* ids are stored lower-case; "" sorts before every one */
        char low[TS_STORE_ID_LEN + 1] = "";
        for (size_t i = 0; after && after[i] && i < TS_STORE_ID_LEN; i++)
            low[i] = (char)(after[i] >= 'A' && after[i] <= 'F' ? after[i] + 32 : after[i]);
        bind_text(q, 1, low);
        sqlite3_bind_int64(q, 2, limit);
        int r;
        while ((r = sqlite3_step(q)) == SQLITE_ROW && n < (size_t)limit)
            list[n++] = row_to_user(q);
        if (r != SQLITE_ROW && r != SQLITE_DONE)
            rc = map_rc(c, r, "user page");
        done(q);
    }
    release(s, c);
    if (rc) {
        ts_user_list_free(list, n);
        return rc;
    }
    *out = list;
    *out_n = n;
    return TS_OK;
}

static enum ts_rc sq_user_list(struct ts_store *st, int64_t offset, int64_t limit,
                               const char *filter, struct ts_user ***out, size_t *out_n,
                               int64_t *total)
{
    struct sq_store *s = sq(st);
    if (limit <= 0 || offset < 0)
        return TS_E_INVALID;
    struct sq_conn *c;
    enum ts_rc rc = acquire(s, &c);
    if (rc)
        return rc;
    struct ts_user **list = NULL;
    size_t n = 0;
    int64_t count = 0;
    sqlite3_stmt *q = stmt(c, S_USER_COUNT);
    if (!q) {
        rc = TS_E_STORE;
        goto out;
    }
    bind_text(q, 1, filter);
    int r = sqlite3_step(q);
    if (r == SQLITE_ROW)
        count = sqlite3_column_int64(q, 0);
    else
        rc = map_rc(c, r, "user count");
    done(q);
    if (rc)
        goto out;
    q = stmt(c, S_USER_LIST);
    if (!q) {
        rc = TS_E_STORE;
        goto out;
    }
    bind_text(q, 1, filter);
    sqlite3_bind_int64(q, 2, limit);
    sqlite3_bind_int64(q, 3, offset);
    list = ts_xcalloc((size_t)limit, sizeof(*list));
    while ((r = sqlite3_step(q)) == SQLITE_ROW && n < (size_t)limit)
        list[n++] = row_to_user(q);
    if (r != SQLITE_ROW && r != SQLITE_DONE)
        rc = map_rc(c, r, "user list");
    done(q);
out:
    release(s, c);
    if (rc) {
        ts_user_list_free(list, n);
        return rc;
    }
    *out = list;
    *out_n = n;
    *total = count;
    return TS_OK;
}

static enum ts_rc sq_password_get(struct ts_store *st, const char *user_id, char **out_hash)
{
    struct sq_store *s = sq(st);
    struct sq_conn *c;
    enum ts_rc rc = acquire(s, &c);
    if (rc)
        return rc;
    sqlite3_stmt *q = stmt(c, S_PASSWORD_GET);
    if (!q) {
        rc = TS_E_STORE;
    } else {
        bind_text(q, 1, user_id);
        int r = sqlite3_step(q);
        if (r == SQLITE_ROW)
            *out_hash = col_strdup(q, 0);
        rc = r == SQLITE_ROW ? TS_OK : r == SQLITE_DONE ? TS_E_NOT_FOUND : map_rc(c, r, "password");
        done(q);
    }
    release(s, c);
    return rc;
}

static enum ts_rc delete_user_sessions(struct sq_conn *c, const char *user_id, const char *except,
                                       int64_t *deleted)
{
    sqlite3_stmt *q = stmt(c, S_SESSIONS_DELETE_USER);
    if (q) {
        bind_text(q, 1, user_id);
        bind_text(q, 2, except);
    }
    enum ts_rc rc = run(c, q, "sessions delete");
    if (!rc && deleted)
        *deleted = sqlite3_changes(c->db);
    return rc;
}

/* TS_E_CONFLICT unless q (bound by the caller) finds a stored hash equal to expect. */
static enum ts_rc hash_still(struct sq_conn *c, sqlite3_stmt *q, const char *expect)
{
    if (!q)
        return TS_E_STORE;
    enum ts_rc rc;
    int r = sqlite3_step(q);
    if (r == SQLITE_ROW) {
        const char *cur = (const char *)sqlite3_column_text(q, 0);
        rc = cur && strcmp(cur, expect) == 0 ? TS_OK : TS_E_CONFLICT;
    } else {
        rc = r == SQLITE_DONE ? TS_E_CONFLICT : map_rc(c, r, "password check");
    }
    done(q);
    return rc;
}

static enum ts_rc sq_password_set(struct ts_store *st, const char *user_id, const char *hash,
                                  const char *expect_old, bool revoke, const char *keep_session,
                                  int64_t now)
{
    struct sq_store *s = sq(st);
    struct sq_conn *c;
    enum ts_rc rc = acquire(s, &c);
    if (rc)
        return rc;
    rc = tx_begin(s, c);
    if (rc)
        goto out;
    enum ts_rc r = TS_OK;
    if (expect_old) {
        sqlite3_stmt *q = stmt(c, S_PASSWORD_GET);
        if (q)
            bind_text(q, 1, user_id);
        r = hash_still(c, q, expect_old);
    }
    if (!r)
        r = upsert_password(c, user_id, hash, now);
    if (!r && revoke)
        r = delete_user_sessions(c, user_id, keep_session, NULL);
    rc = tx_end(s, c, r);
out:
    release(s, c);
    return rc;
}

static enum ts_rc insert_refresh(struct sq_conn *c, const uint8_t hash[TS_REFRESH_HASH_LEN],
                                 const char *session_id, const uint8_t *parent, int64_t now)
{
    sqlite3_stmt *q = stmt(c, S_REFRESH_INSERT);
    if (q) {
        sqlite3_bind_blob(q, 1, hash, TS_REFRESH_HASH_LEN, SQLITE_STATIC);
        bind_text(q, 2, session_id);
        if (parent)
            sqlite3_bind_blob(q, 3, parent, TS_REFRESH_HASH_LEN, SQLITE_STATIC);
        else
            sqlite3_bind_null(q, 3);
        sqlite3_bind_int64(q, 4, now);
    }
    return run(c, q, "refresh insert");
}

static enum ts_rc sq_session_create(struct ts_store *st, const struct ts_session_new *n,
                                    char session_id[TS_STORE_ID_LEN + 1])
{
    struct sq_store *s = sq(st);
    struct sq_conn *c;
    enum ts_rc rc = acquire(s, &c);
    if (rc)
        return rc;
    char id[TS_STORE_ID_LEN + 1];
    ts_uuid_v4(id);
    rc = tx_begin(s, c);
    if (!rc) {
        sqlite3_stmt *q = stmt(c, S_SESSION_INSERT);
        if (q) {
            bind_text(q, 1, id);
            bind_text(q, 2, n->user_id);
            bind_text(q, 3, n->aal);
            bind_text(q, 4, n->amr_json);
            bind_text(q, 5, n->ip);
            bind_text(q, 6, n->user_agent);
            sqlite3_bind_int64(q, 7, n->now);
        }
        enum ts_rc r = run(c, q, "session insert");
        if (!r)
            r = insert_refresh(c, n->refresh_hash, id, NULL, n->now);
        if (!r) {
            q = stmt(c, S_USER_TOUCH_SIGN_IN);
            if (q) {
                bind_text(q, 1, n->user_id);
                sqlite3_bind_int64(q, 2, n->now);
            }
            r = run(c, q, "user touch");
        }
        rc = tx_end(s, c, r);
    }
    release(s, c);
    if (!rc)
        memcpy(session_id, id, sizeof(id));
    return rc;
}

static enum ts_rc sq_session_user(struct ts_store *st, const char *session_id, const char *user_id,
                                  struct ts_user **out)
{
    struct sq_store *s = sq(st);
    struct sq_conn *c;
    enum ts_rc rc = acquire(s, &c);
    if (rc)
        return rc;
    sqlite3_stmt *q = stmt(c, S_SESSION_USER);
    if (q) {
        bind_text(q, 1, session_id);
        bind_text(q, 2, user_id);
    }
    rc = one_user(c, q, "session user", out, NULL);
    release(s, c);
    return rc;
}

static enum ts_rc sq_session_delete(struct ts_store *st, const char *session_id)
{
    return write_one_text(st, S_SESSION_DELETE, session_id, true, "session delete");
}

static enum ts_rc sq_sessions_delete_for_user(struct ts_store *st, const char *user_id,
                                              const char *except_session, int64_t *deleted)
{
    struct sq_store *s = sq(st);
    struct sq_conn *c;
    enum ts_rc rc = acquire(s, &c);
    if (rc)
        return rc;
    rc = tx_begin(s, c);
    if (!rc)
        rc = tx_end(s, c, delete_user_sessions(c, user_id, except_session, deleted));
    release(s, c);
    return rc;
}

static enum ts_rc touch_session(struct sq_conn *c, const char *session_id,
                                const struct ts_refresh_request *req)
{
    sqlite3_stmt *q = stmt(c, S_SESSION_TOUCH);
    if (q) {
        bind_text(q, 1, session_id);
        sqlite3_bind_int64(q, 2, req->now);
        bind_text(q, 3, req->ip);
        bind_text(q, 4, req->user_agent);
    }
    return run(c, q, "session touch");
}

static enum ts_rc sq_refresh_rotate(struct ts_store *st, const struct ts_refresh_request *req,
                                    struct ts_refresh_result *out)
{
    struct sq_store *s = sq(st);
    struct sq_conn *c;
    enum ts_rc rc = acquire(s, &c);
    if (rc)
        return rc;
    rc = tx_begin(s, c);
    if (rc)
        goto out;
    struct ts_refresh_result res;
    memset(&res, 0, sizeof(res));
    enum ts_rc r = TS_OK;
    int64_t revoked_at = 0;
    sqlite3_stmt *q = stmt(c, S_REFRESH_FIND);
    if (!q) {
        r = TS_E_STORE;
    } else {
        sqlite3_bind_blob(q, 1, req->presented, TS_REFRESH_HASH_LEN, SQLITE_STATIC);
        int sr = sqlite3_step(q);
        if (sr == SQLITE_ROW) {
            snprintf(res.session_id, sizeof(res.session_id), "%s",
                     (const char *)sqlite3_column_text(q, 0));
            revoked_at = sqlite3_column_int64(q, 1);
            snprintf(res.user_id, sizeof(res.user_id), "%s",
                     (const char *)sqlite3_column_text(q, 2));
            snprintf(res.aal, sizeof(res.aal), "%s", (const char *)sqlite3_column_text(q, 3));
            snprintf(res.amr_json, sizeof(res.amr_json), "%s",
                     (const char *)sqlite3_column_text(q, 4));
            res.outcome = TS_REFRESH_ROTATED;
        } else if (sr == SQLITE_DONE) {
            res.outcome = TS_REFRESH_NOT_FOUND;
        } else {
            r = map_rc(c, sr, "refresh find");
        }
        done(q);
    }
    if (!r && res.outcome == TS_REFRESH_ROTATED) {
        if (revoked_at == 0) {
            q = stmt(c, S_REFRESH_REVOKE);
            if (q) {
                sqlite3_bind_blob(q, 1, req->presented, TS_REFRESH_HASH_LEN, SQLITE_STATIC);
                sqlite3_bind_int64(q, 2, req->now);
            }
            r = run(c, q, "refresh revoke");
        } else if (req->now - revoked_at <= req->reuse_interval) {
            /* A client that lost the answer to its last refresh, or two tabs racing:
             * continue the family with a new child instead of ending the session. */
            res.outcome = TS_REFRESH_REUSED;
        } else {
            res.outcome = TS_REFRESH_ALREADY_USED;
            if (req->rotation_enabled) {
                /* gotrue-api.md §6: reuse past the interval means the token leaked. */
                q = stmt(c, S_SESSION_DELETE);
                if (q)
                    bind_text(q, 1, res.session_id);
                r = run(c, q, "session revoke");
            }
        }
        if (!r && res.outcome != TS_REFRESH_ALREADY_USED) {
            r = insert_refresh(c, req->next, res.session_id, req->presented, req->now);
            if (!r)
                r = touch_session(c, res.session_id, req);
        }
    }
    rc = tx_end(s, c, r);
    if (!rc)
        *out = res;
out:
    release(s, c);
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

static enum ts_rc sq_signing_keys_list(struct ts_store *st, struct ts_signing_key_row **out,
                                       size_t *out_n)
{
    struct sq_store *s = sq(st);
    struct sq_conn *c;
    enum ts_rc rc = acquire(s, &c);
    if (rc)
        return rc;
    struct ts_signing_key_row *rows = NULL;
    size_t n = 0, cap = 0;
    sqlite3_stmt *q = stmt(c, S_KEYS_LIST);
    int r = SQLITE_ERROR;
    if (q) {
        while ((r = sqlite3_step(q)) == SQLITE_ROW) {
            if (n == cap) {
                cap = cap ? cap * 2 : 4;
                rows = ts_xrealloc(rows, cap * sizeof(*rows));
            }
            struct ts_signing_key_row *row = &rows[n++];
            row->kid = col_strdup(q, 0);
            row->alg = col_strdup(q, 1);
            row->private_pem = col_strdup(q, 2);
            row->state = state_from_text((const char *)sqlite3_column_text(q, 3));
            row->created_at = sqlite3_column_int64(q, 4);
            row->state_changed_at = sqlite3_column_int64(q, 5);
        }
        rc = r == SQLITE_DONE ? TS_OK : map_rc(c, r, "keys list");
        done(q);
    } else {
        rc = TS_E_STORE;
    }
    release(s, c);
    if (rc) {
        ts_signing_key_rows_free(rows, n);
        return rc;
    }
    *out = rows;
    *out_n = n;
    return TS_OK;
}

static enum ts_rc sq_signing_key_insert(struct ts_store *st, const struct ts_signing_key_row *row)
{
    struct sq_store *s = sq(st);
    struct sq_conn *c;
    enum ts_rc rc = acquire(s, &c);
    if (rc)
        return rc;
    rc = tx_begin(s, c);
    if (!rc) {
        sqlite3_stmt *q = stmt(c, S_KEY_INSERT);
        if (q) {
            bind_text(q, 1, row->kid);
            bind_text(q, 2, row->alg);
            bind_text(q, 3, row->private_pem);
            bind_text(q, 4, state_text(row->state));
            sqlite3_bind_int64(q, 5, row->created_at);
        }
        rc = tx_end(s, c, run(c, q, "key insert"));
    }
    release(s, c);
    return rc;
}

static enum ts_rc sq_signing_key_promote(struct ts_store *st, const char *kid, int64_t now,
                                         int64_t drop_before)
{
    struct sq_store *s = sq(st);
    struct sq_conn *c;
    enum ts_rc rc = acquire(s, &c);
    if (rc)
        return rc;
    rc = tx_begin(s, c);
    if (!rc) {
        sqlite3_stmt *q = stmt(c, S_KEY_RETIRE_ACTIVE);
        if (q)
            sqlite3_bind_int64(q, 1, now);
        enum ts_rc r = run(c, q, "key retire");
        if (!r) {
            q = stmt(c, S_KEY_ACTIVATE);
            if (q) {
                bind_text(q, 1, kid);
                sqlite3_bind_int64(q, 2, now);
            }
            r = run(c, q, "key activate");
            if (!r && sqlite3_changes(c->db) == 0)
                r = TS_E_NOT_FOUND;
        }
        if (!r) {
            q = stmt(c, S_KEY_DROP_RETIRED);
            if (q)
                sqlite3_bind_int64(q, 1, drop_before);
            r = run(c, q, "key drop");
        }
        rc = tx_end(s, c, r);
    }
    release(s, c);
    return rc;
}

/* PRAGMA secure_delete of c: 0 off, 1 on, 2 fast; -1 when it cannot be read. */
static int secure_delete_mode(struct sq_conn *c)
{
    sqlite3_stmt *q = NULL;
    int mode = -1;
    if (sqlite3_prepare_v2(c->db, "PRAGMA secure_delete", -1, &q, NULL) == SQLITE_OK &&
        sqlite3_step(q) == SQLITE_ROW)
        mode = sqlite3_column_int(q, 0);
    sqlite3_finalize(q);
    return mode;
}

static enum ts_rc sq_signing_key_reseal(struct ts_store *st, const char *kid, const char *expected,
                                        const char *replacement)
{
    struct sq_store *s = sq(st);
    struct sq_conn *c;
    enum ts_rc rc = acquire(s, &c);
    if (rc)
        return rc;
    /* The rewritten row must not leave the clear key in the page's free space: secure_delete
     * zeroes it (Debian builds SQLite with it on; other builds may not). Only for this write,
     * so the cost of zeroing stays off every other delete. */
    int mode = secure_delete_mode(c);
    if (mode != 1)
        (void)exec(c, "PRAGMA secure_delete=ON", "secure_delete");
    rc = tx_begin(s, c);
    if (!rc) {
        sqlite3_stmt *q = stmt(c, S_KEY_RESEAL);
        if (q) {
            bind_text(q, 1, kid);
            bind_text(q, 2, expected);
            bind_text(q, 3, replacement);
        }
        enum ts_rc r = run(c, q, "key reseal");
        if (!r && sqlite3_changes(c->db) == 0)
            r = TS_E_STALE;
        rc = tx_end(s, c, r);
    }
    /* The WAL still holds the page as it was (the key in clear) until it is checkpointed and
     * cut: do both now, best effort (a reader holding an old snapshot makes it wait for the
     * next time; nothing depends on it). */
    if (!rc)
        (void)sqlite3_wal_checkpoint_v2(c->db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
    if (mode == 0 || mode == 2)
        (void)exec(c, mode ? "PRAGMA secure_delete=FAST" : "PRAGMA secure_delete=OFF",
                   "secure_delete");
    release(s, c);
    return rc;
}

static void sq_audit(struct ts_store *st, const char *event, const char *actor, const char *target,
                     const char *ip, const char *meta_json)
{
    struct sq_store *s = sq(st);
    struct sq_conn *c;
    if (acquire(s, &c))
        return;
    pthread_mutex_lock(&s->write_lock);
    sqlite3_stmt *q = stmt(c, S_AUDIT_INSERT);
    if (q) {
        sqlite3_bind_int64(q, 1, ts_now_us());
        bind_text(q, 2, event);
        bind_text(q, 3, actor);
        bind_text(q, 4, target);
        bind_text(q, 5, ip);
        bind_text(q, 6, meta_json);
    }
    if (run(c, q, "audit insert"))
        ts_log_warn("audit event %s not recorded", event);
    pthread_mutex_unlock(&s->write_lock);
    release(s, c);
}

/* ---- counters ---- */

/*
 * Each counter call is one BEGIN IMMEDIATE transaction: read the row, decide in C
 * (store.c), write it back if it changed. Our threads queue on write_lock and other processes
 * on SQLite's write lock, so no two calls ever see the same row state.
 */
static enum ts_rc sq_bucket_take(struct ts_store *st, const char *key,
                                 const struct ts_bucket_rule *rule, int64_t now, uint32_t cost,
                                 struct ts_bucket_result *out)
{
    struct sq_store *s = sq(st);
    struct sq_conn *c;
    enum ts_rc rc = acquire(s, &c);
    if (rc)
        return rc;
    rc = tx_begin(s, c);
    if (rc)
        goto out;
    enum ts_rc r = TS_OK;
    bool found = false;
    int64_t full_at = 0;
    sqlite3_stmt *q = stmt(c, S_BUCKET_GET);
    if (!q) {
        r = TS_E_STORE;
    } else {
        bind_text(q, 1, key);
        int sr = sqlite3_step(q);
        if (sr == SQLITE_ROW) {
            found = true;
            full_at = sqlite3_column_int64(q, 0);
        } else if (sr != SQLITE_DONE) {
            r = map_rc(c, sr, "bucket get");
        }
        done(q);
    }
    int64_t next = 0;
    bool allowed = false;
    if (!r) {
        allowed = ts__bucket_decide(rule, now, cost, found, full_at, &next);
        if (!found || next != full_at) {
            q = stmt(c, S_BUCKET_PUT);
            if (q) {
                bind_text(q, 1, key);
                sqlite3_bind_int64(q, 2, next);
            }
            r = run(c, q, "bucket put");
        }
    }
    rc = tx_end(s, c, r);
    if (!rc)
        ts__bucket_report(rule, now, cost, allowed, next, out);
out:
    release(s, c);
    return rc;
}

/* Reads key's counter row on c. */
static enum ts_rc counter_read(struct sq_conn *c, const char *key, bool *found,
                               struct ts__counter_row *row)
{
    sqlite3_stmt *q = stmt(c, S_COUNTER_GET);
    if (!q)
        return TS_E_STORE;
    bind_text(q, 1, key);
    enum ts_rc r = TS_OK;
    int sr = sqlite3_step(q);
    if (sr == SQLITE_ROW) {
        *found = true;
        row->value = sqlite3_column_int64(q, 0);
        row->window_start = sqlite3_column_int64(q, 1);
        row->window_end = sqlite3_column_int64(q, 2);
    } else if (sr == SQLITE_DONE) {
        *found = false;
    } else {
        r = map_rc(c, sr, "counter get");
    }
    done(q);
    return r;
}

static enum ts_rc sq_counter_add(struct ts_store *st, const char *key, int64_t delta,
                                 int64_t window_us, int64_t now, int64_t limit,
                                 struct ts_counter_result *out)
{
    struct sq_store *s = sq(st);
    struct sq_conn *c;
    enum ts_rc rc = acquire(s, &c);
    if (rc)
        return rc;
    rc = tx_begin(s, c);
    if (rc)
        goto out;
    bool found = false, allowed = false;
    struct ts__counter_row row = {0};
    enum ts_rc r = counter_read(c, key, &found, &row);
    if (!r) {
        allowed = ts__counter_decide(found, &row, delta, window_us, now, limit);
        if (allowed) {
            sqlite3_stmt *q = stmt(c, S_COUNTER_PUT);
            if (q) {
                bind_text(q, 1, key);
                sqlite3_bind_int64(q, 2, row.value);
                sqlite3_bind_int64(q, 3, row.window_start);
                sqlite3_bind_int64(q, 4, row.window_end);
            }
            r = run(c, q, "counter put");
        }
    }
    rc = tx_end(s, c, r);
    if (!rc)
        ts__counter_report(allowed, row.value, row.window_start, window_us, now, out);
out:
    release(s, c);
    return rc;
}

static enum ts_rc sq_counter_read(struct ts_store *st, const char *key, bool *found,
                                  struct ts__counter_row *out)
{
    struct sq_store *s = sq(st);
    struct sq_conn *c;
    enum ts_rc rc = acquire(s, &c);
    if (rc)
        return rc;
    rc = counter_read(c, key, found, out);
    release(s, c);
    return rc;
}

static enum ts_rc sq_counter_reset(struct ts_store *st, const char *key)
{
    return write_one_text(st, S_COUNTER_DELETE, key, false, "counter delete");
}

static enum ts_rc sq_counters_sweep(struct ts_store *st, int64_t before, int64_t *deleted)
{
    struct sq_store *s = sq(st);
    struct sq_conn *c;
    enum ts_rc rc = acquire(s, &c);
    if (rc)
        return rc;
    int64_t n = 0;
    rc = tx_begin(s, c);
    if (!rc) {
        sqlite3_stmt *q = stmt(c, S_BUCKETS_SWEEP);
        if (q)
            sqlite3_bind_int64(q, 1, before);
        enum ts_rc r = run(c, q, "buckets sweep");
        if (!r) {
            n += sqlite3_changes(c->db);
            q = stmt(c, S_COUNTERS_SWEEP);
            if (q)
                sqlite3_bind_int64(q, 1, before);
            r = run(c, q, "counters sweep");
        }
        if (!r)
            n += sqlite3_changes(c->db);
        rc = tx_end(s, c, r);
    }
    release(s, c);
    if (!rc && deleted)
        *deleted = n;
    return rc;
}

/* ---- the native model (store.h): collections, documents, indexes, credentials, secrets ---- */

/*
 * Every write is one BEGIN IMMEDIATE transaction, so the checks it makes (a collection
 * exists, an identity is live, a stored ts or hash is still the expected one) hold until it
 * commits. A document's index entries, credential and token rows reference it, so deleting
 * it (or its collection) takes the entries and credential along through ON DELETE CASCADE;
 * tokens and keys are not foreign keys (their identity may be a user) and are deleted
 * explicitly. Expired documents are filtered out by every read (expires_at > now) and
 * removed by writes that need their id or unique terms, or by the sweep.
 */

static bool is_users(const char *collection)
{
    return collection && strcmp(collection, "users") == 0;
}

static bool expired_at(int64_t expires_at, int64_t now)
{
    return expires_at != 0 && expires_at <= now;
}

/* Returns list with room for element n (of size bytes each), growing *cap as needed. */
static void *grow(void *list, size_t n, size_t *cap, size_t size)
{
    if (n < *cap)
        return list;
    *cap = *cap ? *cap * 2 : 8;
    return ts_xrealloc(list, *cap * size);
}

/* The column's JSON text parsed (any value), or NULL when it is NULL. */
static json_t *col_json(sqlite3_stmt *s, int i)
{
    const char *t = (const char *)sqlite3_column_text(s, i);
    return t ? json_loads(t, JSON_DECODE_ANY, NULL) : NULL;
}

/* Compact JSON text of v (NULL for NULL); jansson fails only for lack of memory here. */
static char *json_text(const json_t *v)
{
    if (!v)
        return NULL;
    char *t = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!t)
        abort();
    return t;
}

/* Steps q (bound by the caller; NULL when it could not be prepared) for one row: *found
 * says whether there was one. */
static enum ts_rc row_exists(struct sq_conn *c, sqlite3_stmt *q, const char *what, bool *found)
{
    if (!q)
        return TS_E_STORE;
    int r = sqlite3_step(q);
    enum ts_rc rc = r == SQLITE_ROW || r == SQLITE_DONE ? TS_OK : map_rc(c, r, what);
    *found = r == SQLITE_ROW;
    done(q);
    return rc;
}

/* As row_exists, but TS_E_NOT_FOUND when there is no row. */
static enum ts_rc must_exist(struct sq_conn *c, sqlite3_stmt *q, const char *what)
{
    bool found = false;
    enum ts_rc rc = row_exists(c, q, what, &found);
    return rc ? rc : found ? TS_OK : TS_E_NOT_FOUND;
}

/* Steps q (bound by the caller) for one row and copies its first column into *out;
 * TS_E_NOT_FOUND when there is no row. */
static enum ts_rc one_text(struct sq_conn *c, sqlite3_stmt *q, const char *what, char **out)
{
    if (!q)
        return TS_E_STORE;
    int r = sqlite3_step(q);
    enum ts_rc rc = r == SQLITE_ROW    ? TS_OK
                    : r == SQLITE_DONE ? TS_E_NOT_FOUND
                                       : map_rc(c, r, what);
    if (r == SQLITE_ROW)
        *out = col_strdup(q, 0);
    done(q);
    return rc;
}

static enum ts_rc collection_exists(struct sq_conn *c, const char *name)
{
    sqlite3_stmt *q = stmt(c, S_COLL_GET);
    if (q)
        bind_text(q, 1, name);
    return must_exist(c, q, "collection get");
}

/* TS_OK when the identity is live at now (a user not deleted; a document not expired),
 * TS_E_NOT_FOUND otherwise. */
static enum ts_rc identity_live(struct sq_conn *c, const char *collection, const char *id,
                                int64_t now)
{
    sqlite3_stmt *q;
    if (is_users(collection)) {
        q = stmt(c, S_USER_LIVE);
        if (q)
            bind_text(q, 1, id);
    } else {
        q = stmt(c, S_DOC_LIVE);
        if (q) {
            bind_text(q, 1, collection);
            bind_text(q, 2, id);
            sqlite3_bind_int64(q, 3, now);
        }
    }
    return must_exist(c, q, "identity live");
}

/* Deletes the secrets of one kind bound to the identity but except_id (may be NULL). */
static enum ts_rc delete_identity_secrets(struct sq_conn *c, enum ts_secret_kind kind,
                                          const char *collection, const char *id,
                                          const char *except_id, int64_t *deleted)
{
    sqlite3_stmt *q = stmt(c, S_SECRETS_DELETE_IDENTITY);
    if (q) {
        bind_text(q, 1, ts__secret_kind_text(kind));
        bind_text(q, 2, collection);
        bind_text(q, 3, id);
        bind_text(q, 4, except_id);
    }
    enum ts_rc rc = run(c, q, "secrets delete");
    if (!rc && deleted)
        *deleted = sqlite3_changes(c->db);
    return rc;
}

/* Deletes a document with the tokens, keys and external links bound to it; its index entries
 * and credential go with it (ON DELETE CASCADE). */
static enum ts_rc purge_doc(struct sq_conn *c, const char *collection, const char *id)
{
    enum ts_rc rc = delete_bound(c, collection, id, NULL);
    if (rc)
        return rc;
    sqlite3_stmt *q = stmt(c, S_DOC_DELETE);
    if (q) {
        bind_text(q, 1, collection);
        bind_text(q, 2, id);
    }
    return run(c, q, "doc delete");
}

/* ---- collections ---- */

static enum ts_rc sq_collection_create(struct ts_store *st, const char *name, int64_t now)
{
    struct sq_store *s = sq(st);
    struct sq_conn *c;
    enum ts_rc rc = acquire(s, &c);
    if (rc)
        return rc;
    rc = tx_begin(s, c);
    if (!rc) {
        sqlite3_stmt *q = stmt(c, S_COLL_INSERT);
        if (q) {
            bind_text(q, 1, name);
            sqlite3_bind_int64(q, 2, now);
        }
        rc = tx_end(s, c, run(c, q, "collection insert"));
    }
    release(s, c);
    return rc;
}

static enum ts_rc sq_collection_get(struct ts_store *st, const char *name,
                                    struct ts_collection_info *out)
{
    struct sq_store *s = sq(st);
    struct sq_conn *c;
    enum ts_rc rc = acquire(s, &c);
    if (rc)
        return rc;
    sqlite3_stmt *q = stmt(c, S_COLL_GET);
    if (!q) {
        rc = TS_E_STORE;
    } else {
        bind_text(q, 1, name);
        int r = sqlite3_step(q);
        if (r == SQLITE_ROW && out) {
            out->name = col_strdup(q, 0);
            out->created_at = sqlite3_column_int64(q, 1);
        }
        rc = r == SQLITE_ROW    ? TS_OK
             : r == SQLITE_DONE ? TS_E_NOT_FOUND
                                : map_rc(c, r, "collection get");
        done(q);
    }
    release(s, c);
    return rc;
}

static enum ts_rc sq_collection_list(struct ts_store *st, const char *after, int64_t limit,
                                     struct ts_collection_info **out, size_t *out_n)
{
    struct sq_store *s = sq(st);
    struct sq_conn *c;
    enum ts_rc rc = acquire(s, &c);
    if (rc)
        return rc;
    struct ts_collection_info *list = NULL;
    size_t n = 0, cap = 0;
    sqlite3_stmt *q = stmt(c, S_COLL_LIST);
    if (!q) {
        rc = TS_E_STORE;
    } else {
        bind_text(q, 1, after ? after : ""); /* every name sorts after "" */
        sqlite3_bind_int64(q, 2, limit);
        int r;
        while ((r = sqlite3_step(q)) == SQLITE_ROW) {
            list = grow(list, n, &cap, sizeof(*list));
            list[n].name = col_strdup(q, 0);
            list[n++].created_at = sqlite3_column_int64(q, 1);
        }
        rc = r == SQLITE_DONE ? TS_OK : map_rc(c, r, "collection list");
        done(q);
    }
    release(s, c);
    if (rc) {
        ts_collection_infos_free(list, n);
        return rc;
    }
    *out = list;
    *out_n = n;
    return TS_OK;
}

static enum ts_rc sq_collection_delete(struct ts_store *st, const char *name)
{
    struct sq_store *s = sq(st);
    struct sq_conn *c;
    enum ts_rc rc = acquire(s, &c);
    if (rc)
        return rc;
    rc = tx_begin(s, c);
    if (!rc) {
        /* documents, indexes, entries and credentials cascade from the collection; its
         * documents' tokens, keys and external links go explicitly */
        sqlite3_stmt *q = stmt(c, S_COLL_DELETE);
        if (q)
            bind_text(q, 1, name);
        enum ts_rc r = run_changed(c, q, "collection delete");
        if (!r) {
            q = stmt(c, S_COLL_SECRETS_DELETE);
            if (q)
                bind_text(q, 1, name);
            r = run(c, q, "collection secrets delete");
        }
        if (!r) {
            q = stmt(c, S_COLL_LINKS_DELETE);
            if (q)
                bind_text(q, 1, name);
            r = run(c, q, "collection links delete");
        }
        rc = tx_end(s, c, r);
    }
    release(s, c);
    return rc;
}

/* ---- indexes ---- */

/* Steps q (bound by the caller; INDEX_GET or INDEX_LIST rows) to the end. */
static enum ts_rc fetch_indexes(struct sq_conn *c, sqlite3_stmt *q, const char *what,
                                struct ts_index_def **out, size_t *out_n)
{
    if (!q)
        return TS_E_STORE;
    struct ts_index_def *list = NULL;
    size_t n = 0, cap = 0;
    int r;
    while ((r = sqlite3_step(q)) == SQLITE_ROW) {
        list = grow(list, n, &cap, sizeof(*list));
        struct ts_index_def *d = &list[n++];
        d->name = col_strdup(q, 0);
        d->terms = col_json(q, 1);
        if (!json_is_array(d->terms)) {
            json_decref(d->terms);
            d->terms = json_array();
        }
        d->unique = sqlite3_column_int(q, 2) != 0;
        d->created_at = sqlite3_column_int64(q, 3);
    }
    enum ts_rc rc = r == SQLITE_DONE ? TS_OK : map_rc(c, r, what);
    done(q);
    if (rc) {
        ts_index_defs_free(list, n);
        return rc;
    }
    *out = list;
    *out_n = n;
    return TS_OK;
}

static enum ts_rc insert_entry(struct sq_conn *c, const char *collection, const char *index,
                               const char *term, const char *doc_id, bool unique)
{
    sqlite3_stmt *q = stmt(c, S_ENTRY_INSERT);
    if (q) {
        bind_text(q, 1, collection);
        bind_text(q, 2, index);
        bind_text(q, 3, term);
        bind_text(q, 4, doc_id);
        sqlite3_bind_int(q, 5, unique ? 1 : 0);
    }
    /* a unique term held by another document: SQLITE_CONSTRAINT_UNIQUE, TS_E_CONFLICT */
    return run(c, q, "index entry insert");
}

/* An expired document never holds a unique term: the one holding term (if any) is deleted,
 * with what is bound to it, before the term is written again. */
static enum ts_rc take_unique_term(struct sq_conn *c, const char *collection, const char *index,
                                   const char *term, int64_t now)
{
    sqlite3_stmt *q = stmt(c, S_ENTRY_EXPIRED_HOLDER);
    if (!q)
        return TS_E_STORE;
    bind_text(q, 1, collection);
    bind_text(q, 2, index);
    bind_text(q, 3, term);
    sqlite3_bind_int64(q, 4, now);
    char *holder = NULL;
    enum ts_rc rc = one_text(c, q, "index holder", &holder);
    if (rc == TS_E_NOT_FOUND)
        return TS_OK;
    if (!rc)
        rc = purge_doc(c, collection, holder);
    free(holder);
    return rc;
}

/* Writes the document's entries in every index of its collection (it has none yet). */
static enum ts_rc index_doc(struct sq_conn *c, const char *collection, const char *id,
                            const json_t *data, int64_t now)
{
    struct ts_index_def *defs = NULL;
    size_t n = 0;
    sqlite3_stmt *q = stmt(c, S_INDEX_LIST);
    if (q)
        bind_text(q, 1, collection);
    enum ts_rc rc = fetch_indexes(c, q, "index list", &defs, &n);
    for (size_t i = 0; !rc && i < n; i++) {
        char *key = ts_store_index_key_of(defs[i].terms, data);
        if (!key)
            continue; /* a value is missing or not a scalar: not in this index */
        if (defs[i].unique)
            rc = take_unique_term(c, collection, defs[i].name, key, now);
        if (!rc)
            rc = insert_entry(c, collection, defs[i].name, key, id, defs[i].unique);
        free(key);
    }
    ts_index_defs_free(defs, n);
    return rc;
}

/* Fills a new index from the collection's live documents (expired ones hold no entries). */
static enum ts_rc fill_index(struct sq_conn *c, const char *collection,
                             const struct ts_index_def *def, int64_t now)
{
    sqlite3_stmt *q = stmt(c, S_DOC_SCAN);
    if (!q)
        return TS_E_STORE;
    bind_text(q, 1, collection);
    sqlite3_bind_int64(q, 2, now);
    enum ts_rc rc = TS_OK;
    int r = SQLITE_DONE;
    while (!rc && (r = sqlite3_step(q)) == SQLITE_ROW) {
        const char *id = (const char *)sqlite3_column_text(q, 0);
        json_t *data = col_json(q, 1);
        char *key = ts_store_index_key_of(def->terms, data);
        json_decref(data);
        if (key)
            rc = insert_entry(c, collection, def->name, key, id, def->unique);
        free(key);
    }
    if (!rc && r != SQLITE_DONE)
        rc = map_rc(c, r, "doc scan");
    done(q);
    return rc;
}

static enum ts_rc sq_index_create(struct ts_store *st, const char *collection,
                                  const struct ts_index_def *def, int64_t now)
{
    struct sq_store *s = sq(st);
    struct sq_conn *c;
    enum ts_rc rc = acquire(s, &c);
    if (rc)
        return rc;
    char *terms = json_text(def->terms);
    rc = tx_begin(s, c);
    if (!rc) {
        enum ts_rc r = collection_exists(c, collection);
        if (!r) {
            sqlite3_stmt *q = stmt(c, S_INDEX_INSERT);
            if (q) {
                bind_text(q, 1, collection);
                bind_text(q, 2, def->name);
                bind_text(q, 3, terms);
                sqlite3_bind_int(q, 4, def->unique ? 1 : 0);
                sqlite3_bind_int64(q, 5, now);
            }
            r = run(c, q, "index insert");
        }
        if (!r)
            r = fill_index(c, collection, def, now);
        rc = tx_end(s, c, r);
    }
    free(terms);
    release(s, c);
    return rc;
}

static enum ts_rc sq_index_list(struct ts_store *st, const char *collection,
                                struct ts_index_def **out, size_t *out_n)
{
    struct sq_store *s = sq(st);
    struct sq_conn *c;
    enum ts_rc rc = acquire(s, &c);
    if (rc)
        return rc;
    struct ts_index_def *list = NULL;
    size_t n = 0;
    sqlite3_stmt *q = stmt(c, S_INDEX_LIST);
    if (q)
        bind_text(q, 1, collection);
    rc = fetch_indexes(c, q, "index list", &list, &n);
    if (!rc && n == 0)
        rc = collection_exists(c, collection);
    release(s, c);
    if (rc) {
        ts_index_defs_free(list, n);
        return rc;
    }
    *out = list;
    *out_n = n;
    return TS_OK;
}

static enum ts_rc sq_index_get(struct ts_store *st, const char *collection, const char *name,
                               struct ts_index_def *out)
{
    struct sq_store *s = sq(st);
    struct sq_conn *c;
    enum ts_rc rc = acquire(s, &c);
    if (rc)
        return rc;
    struct ts_index_def *list = NULL;
    size_t n = 0;
    sqlite3_stmt *q = stmt(c, S_INDEX_GET);
    if (q) {
        bind_text(q, 1, collection);
        bind_text(q, 2, name);
    }
    rc = fetch_indexes(c, q, "index get", &list, &n);
    release(s, c);
    if (!rc && n == 0)
        rc = TS_E_NOT_FOUND;
    if (!rc && out) {
        *out = list[0];
        n = 0; /* moved into *out */
    }
    ts_index_defs_free(list, n);
    return rc;
}

static enum ts_rc sq_index_delete(struct ts_store *st, const char *collection, const char *name)
{
    struct sq_store *s = sq(st);
    struct sq_conn *c;
    enum ts_rc rc = acquire(s, &c);
    if (rc)
        return rc;
    rc = tx_begin(s, c);
    if (!rc) {
        /* its entries cascade */
        sqlite3_stmt *q = stmt(c, S_INDEX_DELETE);
        if (q) {
            bind_text(q, 1, collection);
            bind_text(q, 2, name);
        }
        rc = tx_end(s, c, run_changed(c, q, "index delete"));
    }
    release(s, c);
    return rc;
}

/* ---- documents ---- */

static struct ts_doc *row_to_doc(sqlite3_stmt *s)
{
    struct ts_doc *d = ts_xcalloc(1, sizeof(*d));
    d->collection = col_strdup(s, 0);
    d->id = col_strdup(s, 1);
    d->data = col_json_object(s, 2);
    d->ts = sqlite3_column_int64(s, 3);
    d->created_at = sqlite3_column_int64(s, 4);
    d->expires_at = sqlite3_column_int64(s, 5);
    return d;
}

/* Steps q (bound by the caller; DOC_COLS rows) to the end. */
static enum ts_rc fetch_docs(struct sq_conn *c, sqlite3_stmt *q, const char *what,
                             struct ts_doc ***out, size_t *out_n)
{
    if (!q)
        return TS_E_STORE;
    struct ts_doc **list = NULL;
    size_t n = 0, cap = 0;
    int r;
    while ((r = sqlite3_step(q)) == SQLITE_ROW) {
        list = grow(list, n, &cap, sizeof(*list));
        list[n++] = row_to_doc(q);
    }
    enum ts_rc rc = r == SQLITE_DONE ? TS_OK : map_rc(c, r, what);
    done(q);
    if (rc) {
        ts_doc_list_free(list, n);
        return rc;
    }
    *out = list;
    *out_n = n;
    return TS_OK;
}

/* The stored state of a document, live or not: *found false when there is no row. */
struct doc_state {
    bool found;
    int64_t ts;
    int64_t created_at;
    int64_t expires_at;
};

static enum ts_rc doc_state(struct sq_conn *c, const char *collection, const char *id,
                            struct doc_state *out)
{
    sqlite3_stmt *q = stmt(c, S_DOC_STATE);
    if (!q)
        return TS_E_STORE;
    bind_text(q, 1, collection);
    bind_text(q, 2, id);
    int r = sqlite3_step(q);
    enum ts_rc rc = r == SQLITE_ROW || r == SQLITE_DONE ? TS_OK : map_rc(c, r, "doc state");
    memset(out, 0, sizeof(*out));
    if (r == SQLITE_ROW) {
        out->found = true;
        out->ts = sqlite3_column_int64(q, 0);
        out->created_at = sqlite3_column_int64(q, 1);
        out->expires_at = sqlite3_column_int64(q, 2);
    }
    done(q);
    return rc;
}

static enum ts_rc upsert_doc_password(struct sq_conn *c, const char *collection, const char *id,
                                      const char *hash, int64_t now)
{
    sqlite3_stmt *q = stmt(c, S_CRED_DOC_UPSERT);
    if (q) {
        bind_text(q, 1, collection);
        bind_text(q, 2, id);
        bind_text(q, 3, hash);
        sqlite3_bind_int64(q, 4, now);
    }
    return run(c, q, "doc password upsert");
}

/* Inserts or updates the document row itself (DOC_INSERT / DOC_UPDATE parameters). */
static enum ts_rc put_doc(struct sq_conn *c, bool insert, const struct ts_doc_write *w,
                          const char *data, int64_t ts, int64_t created_at)
{
    sqlite3_stmt *q = stmt(c, insert ? S_DOC_INSERT : S_DOC_UPDATE);
    if (q) {
        bind_text(q, 1, w->collection);
        bind_text(q, 2, w->id);
        bind_text(q, 3, data);
        sqlite3_bind_int64(q, 4, ts);
        if (insert) {
            sqlite3_bind_int64(q, 5, created_at);
            bind_time(q, 6, w->expires_at);
        } else {
            bind_time(q, 5, w->expires_at);
        }
    }
    return run(c, q, insert ? "doc insert" : "doc update");
}

static enum ts_rc sq_doc_write(struct ts_store *st, const struct ts_doc_write *w,
                               struct ts_doc **out)
{
    struct sq_store *s = sq(st);
    struct sq_conn *c;
    enum ts_rc rc = acquire(s, &c);
    if (rc)
        return rc;
    char *data = json_text(w->data);
    bool replace = w->mode == TS_DOC_REPLACE;
    int64_t ts = w->now, created_at = w->now;
    rc = tx_begin(s, c);
    if (rc)
        goto out;
    struct doc_state old;
    enum ts_rc r = collection_exists(c, w->collection);
    if (!r)
        r = doc_state(c, w->collection, w->id, &old);
    if (!r) {
        bool live = old.found && !expired_at(old.expires_at, w->now);
        if (replace && !live)
            r = TS_E_NOT_FOUND;
        else if (replace && w->expect_ts != 0 && w->expect_ts != old.ts)
            r = TS_E_STALE;
        else if (!replace && live)
            r = TS_E_CONFLICT;
        else if (!replace && old.found) /* expired: nothing bound to it may survive */
            r = purge_doc(c, w->collection, w->id);
        /* ts only grows for an id, even when the clock does not */
        if (old.found && old.ts >= ts)
            ts = old.ts + 1;
        if (replace)
            created_at = old.created_at;
    }
    if (!r)
        r = put_doc(c, !replace, w, data, ts, created_at);
    if (!r && replace) {
        sqlite3_stmt *q = stmt(c, S_ENTRIES_DELETE_DOC);
        if (q) {
            bind_text(q, 1, w->collection);
            bind_text(q, 2, w->id);
        }
        r = run(c, q, "index entries delete");
    }
    if (!r)
        r = index_doc(c, w->collection, w->id, w->data, w->now);
    if (!r && w->password_hash)
        r = upsert_doc_password(c, w->collection, w->id, w->password_hash, w->now);
    rc = tx_end(s, c, r);
    if (!rc && out) {
        struct ts_doc *d = ts_xcalloc(1, sizeof(*d));
        d->collection = ts_xstrdup(w->collection);
        d->id = ts_xstrdup(w->id);
        d->data = json_loads(data, 0, NULL); /* as stored */
        if (!json_is_object(d->data)) {
            json_decref(d->data);
            d->data = json_object();
        }
        d->ts = ts;
        d->created_at = created_at;
        d->expires_at = w->expires_at;
        *out = d;
    }
out:
    free(data);
    release(s, c);
    return rc;
}

static enum ts_rc sq_doc_get(struct ts_store *st, const char *collection, const char *id,
                             int64_t now, struct ts_doc **out)
{
    struct sq_store *s = sq(st);
    struct sq_conn *c;
    enum ts_rc rc = acquire(s, &c);
    if (rc)
        return rc;
    sqlite3_stmt *q = stmt(c, S_DOC_GET);
    if (!q) {
        rc = TS_E_STORE;
    } else {
        bind_text(q, 1, collection);
        bind_text(q, 2, id);
        sqlite3_bind_int64(q, 3, now);
        int r = sqlite3_step(q);
        if (r == SQLITE_ROW)
            *out = row_to_doc(q);
        rc = r == SQLITE_ROW ? TS_OK : r == SQLITE_DONE ? TS_E_NOT_FOUND : map_rc(c, r, "doc get");
        done(q);
    }
    release(s, c);
    return rc;
}

static enum ts_rc sq_doc_delete(struct ts_store *st, const char *collection, const char *id,
                                int64_t now)
{
    struct sq_store *s = sq(st);
    struct sq_conn *c;
    enum ts_rc rc = acquire(s, &c);
    if (rc)
        return rc;
    bool expired = false;
    rc = tx_begin(s, c);
    if (!rc) {
        struct doc_state old;
        enum ts_rc r = doc_state(c, collection, id, &old);
        if (!r && !old.found)
            r = TS_E_NOT_FOUND;
        if (!r) {
            expired = expired_at(old.expires_at, now);
            r = purge_doc(c, collection, id);
        }
        rc = tx_end(s, c, r);
    }
    release(s, c);
    /* an expired document is deleted all the same, and reported absent */
    return !rc && expired ? TS_E_NOT_FOUND : rc;
}

static enum ts_rc sq_doc_list(struct ts_store *st, const char *collection, const char *after,
                              int64_t limit, int64_t now, struct ts_doc ***out, size_t *out_n)
{
    struct sq_store *s = sq(st);
    struct sq_conn *c;
    enum ts_rc rc = acquire(s, &c);
    if (rc)
        return rc;
    struct ts_doc **list = NULL;
    size_t n = 0;
    sqlite3_stmt *q = stmt(c, S_DOC_LIST);
    if (q) {
        bind_text(q, 1, collection);
        bind_text(q, 2, after ? after : ""); /* every id sorts after "" */
        sqlite3_bind_int64(q, 3, now);
        sqlite3_bind_int64(q, 4, limit);
    }
    rc = fetch_docs(c, q, "doc list", &list, &n);
    /* documents imply their collection; only an empty page needs the check */
    if (!rc && n == 0)
        rc = collection_exists(c, collection);
    release(s, c);
    if (rc) {
        ts_doc_list_free(list, n);
        return rc;
    }
    *out = list;
    *out_n = n;
    return TS_OK;
}

static enum ts_rc sq_index_lookup(struct ts_store *st, const char *collection, const char *index,
                                  const char *key, const char *after, int64_t limit, int64_t now,
                                  struct ts_doc ***out, size_t *out_n)
{
    struct sq_store *s = sq(st);
    struct sq_conn *c;
    enum ts_rc rc = acquire(s, &c);
    if (rc)
        return rc;
    struct ts_doc **list = NULL;
    size_t n = 0;
    sqlite3_stmt *q = stmt(c, S_INDEX_LOOKUP);
    if (q) {
        bind_text(q, 1, collection);
        bind_text(q, 2, index);
        bind_text(q, 3, key);
        bind_text(q, 4, after ? after : "");
        sqlite3_bind_int64(q, 5, now);
        sqlite3_bind_int64(q, 6, limit);
    }
    rc = fetch_docs(c, q, "index lookup", &list, &n);
    /* entries imply their index (and so the collection); only an empty page needs the check */
    if (!rc && n == 0) {
        q = stmt(c, S_INDEX_GET);
        if (q) {
            bind_text(q, 1, collection);
            bind_text(q, 2, index);
        }
        rc = must_exist(c, q, "index get");
    }
    release(s, c);
    if (rc) {
        ts_doc_list_free(list, n);
        return rc;
    }
    *out = list;
    *out_n = n;
    return TS_OK;
}

static enum ts_rc sq_identity_collections(struct ts_store *st, const char *id, int64_t now,
                                          char ***out, size_t *out_n)
{
    struct sq_store *s = sq(st);
    struct sq_conn *c;
    enum ts_rc rc = acquire(s, &c);
    if (rc)
        return rc;
    char **list = NULL;
    size_t n = 0, cap = 0;
    bool user = false;
    sqlite3_stmt *q = stmt(c, S_USER_LIVE);
    if (q)
        bind_text(q, 1, id);
    rc = row_exists(c, q, "user live", &user);
    if (!rc && user) {
        list = grow(list, n, &cap, sizeof(*list));
        list[n++] = ts_xstrdup("users");
    }
    if (!rc) {
        q = stmt(c, S_DOC_COLLECTIONS);
        if (!q) {
            rc = TS_E_STORE;
        } else {
            bind_text(q, 1, id);
            sqlite3_bind_int64(q, 2, now);
            int r;
            while ((r = sqlite3_step(q)) == SQLITE_ROW) {
                list = grow(list, n, &cap, sizeof(*list));
                list[n++] = col_strdup(q, 0);
            }
            rc = r == SQLITE_DONE ? TS_OK : map_rc(c, r, "identity collections");
            done(q);
        }
    }
    release(s, c);
    if (rc) {
        ts_strings_free(list, n);
        return rc;
    }
    *out = list;
    *out_n = n;
    return TS_OK;
}

/* ---- credentials of any identity ---- */

static enum ts_rc sq_credential_get(struct ts_store *st, const char *collection, const char *id,
                                    int64_t now, char **out_hash)
{
    struct sq_store *s = sq(st);
    struct sq_conn *c;
    enum ts_rc rc = acquire(s, &c);
    if (rc)
        return rc;
    sqlite3_stmt *q;
    if (is_users(collection)) {
        q = stmt(c, S_CRED_USER_GET);
        if (q)
            bind_text(q, 1, id);
    } else {
        q = stmt(c, S_CRED_DOC_GET);
        if (q) {
            bind_text(q, 1, collection);
            bind_text(q, 2, id);
            sqlite3_bind_int64(q, 3, now);
        }
    }
    rc = one_text(c, q, "credential get", out_hash);
    release(s, c);
    return rc;
}

static enum ts_rc sq_credential_set(struct ts_store *st, const char *collection, const char *id,
                                    const char *hash, const char *expect_old, int64_t now)
{
    struct sq_store *s = sq(st);
    struct sq_conn *c;
    enum ts_rc rc = acquire(s, &c);
    if (rc)
        return rc;
    bool user = is_users(collection);
    rc = tx_begin(s, c);
    if (!rc) {
        enum ts_rc r = identity_live(c, collection, id, now);
        if (!r && expect_old) {
            sqlite3_stmt *q = stmt(c, user ? S_PASSWORD_GET : S_CRED_DOC_HASH);
            if (q && user) {
                bind_text(q, 1, id);
            } else if (q) {
                bind_text(q, 1, collection);
                bind_text(q, 2, id);
            }
            r = hash_still(c, q, expect_old);
        }
        if (!r)
            r = user ? upsert_password(c, id, hash, now)
                     : upsert_doc_password(c, collection, id, hash, now);
        rc = tx_end(s, c, r);
    }
    release(s, c);
    return rc;
}

static enum ts_rc sq_credential_delete(struct ts_store *st, const char *collection, const char *id,
                                       bool revoke, int64_t *revoked)
{
    struct sq_store *s = sq(st);
    struct sq_conn *c;
    enum ts_rc rc = acquire(s, &c);
    if (rc)
        return rc;
    bool user = is_users(collection);
    int64_t total = 0;
    rc = tx_begin(s, c);
    if (!rc) {
        sqlite3_stmt *q = stmt(c, user ? S_CRED_USER_DELETE : S_CRED_DOC_DELETE);
        if (q && user) {
            bind_text(q, 1, id);
        } else if (q) {
            bind_text(q, 1, collection);
            bind_text(q, 2, id);
        }
        enum ts_rc r = run_changed(c, q, "credential delete");
        if (!r && revoke) {
            int64_t n = 0;
            r = delete_identity_secrets(c, TS_SECRET_TOKEN, collection, id, NULL, &n);
            total += n;
            if (!r && user) {
                n = 0;
                r = delete_user_sessions(c, id, NULL, &n);
                total += n;
            }
        }
        rc = tx_end(s, c, r);
    }
    release(s, c);
    if (!rc && revoked)
        *revoked = total;
    return rc;
}

static enum ts_rc sq_credential_list(struct ts_store *st, const char *collection,
                                     const char *after_collection, const char *after_id,
                                     int64_t limit, struct ts_credential_info **out, size_t *out_n)
{
    struct sq_store *s = sq(st);
    struct sq_conn *c;
    enum ts_rc rc = acquire(s, &c);
    if (rc)
        return rc;
    struct ts_credential_info *list = NULL;
    size_t n = 0, cap = 0;
    sqlite3_stmt *q = stmt(c, S_CRED_LIST);
    if (!q) {
        rc = TS_E_STORE;
    } else {
        bind_text(q, 1, collection);
        /* (collection, id) > ("", "") holds for every row: names are never empty */
        bind_text(q, 2, after_collection ? after_collection : "");
        bind_text(q, 3, after_collection ? after_id : "");
        sqlite3_bind_int64(q, 4, limit);
        int r;
        while ((r = sqlite3_step(q)) == SQLITE_ROW) {
            list = grow(list, n, &cap, sizeof(*list));
            struct ts_credential_info *ci = &list[n++];
            ci->collection = col_strdup(q, 0);
            ci->id = col_strdup(q, 1);
            ci->strategy = col_strdup(q, 2);
            ci->created_at = sqlite3_column_int64(q, 3);
            ci->updated_at = sqlite3_column_int64(q, 4);
        }
        rc = r == SQLITE_DONE ? TS_OK : map_rc(c, r, "credential list");
        done(q);
    }
    release(s, c);
    if (rc) {
        ts_credential_infos_free(list, n);
        return rc;
    }
    *out = list;
    *out_n = n;
    return TS_OK;
}

/* ---- opaque secrets (tokens and keys) ---- */

static struct ts_secret_row *row_to_secret(sqlite3_stmt *s)
{
    struct ts_secret_row *r = ts_xcalloc(1, sizeof(*r));
    const char *id = (const char *)sqlite3_column_text(s, 0);
    snprintf(r->id, sizeof(r->id), "%s", id ? id : "");
    r->kind = ts__secret_kind_from_text((const char *)sqlite3_column_text(s, 1));
    r->identity_collection = col_strdup(s, 2);
    r->identity_id = col_strdup(s, 3);
    r->role = col_strdup(s, 4);
    r->origin = col_strdup(s, 5);
    r->description = col_strdup(s, 6);
    r->data = col_json(s, 7);
    r->meta = col_json(s, 8);
    r->created_at = sqlite3_column_int64(s, 9);
    r->expires_at = sqlite3_column_int64(s, 10);
    return r;
}

static enum ts_rc sq_secret_create(struct ts_store *st, const struct ts_secret_row *row,
                                   const uint8_t hash[TS_SECRET_HASH_LEN], int64_t now)
{
    struct sq_store *s = sq(st);
    struct sq_conn *c;
    enum ts_rc rc = acquire(s, &c);
    if (rc)
        return rc;
    char *data = json_text(row->data);
    char *meta = json_text(row->meta);
    rc = tx_begin(s, c);
    if (!rc) {
        enum ts_rc r = TS_OK;
        if (row->identity_id)
            r = identity_live(c, row->identity_collection, row->identity_id, now);
        if (!r) {
            sqlite3_stmt *q = stmt(c, S_SECRET_INSERT);
            if (q) {
                bind_text(q, 1, row->id);
                sqlite3_bind_blob(q, 2, hash, TS_SECRET_HASH_LEN, SQLITE_STATIC);
                bind_text(q, 3, ts__secret_kind_text(row->kind));
                bind_text(q, 4, row->identity_collection);
                bind_text(q, 5, row->identity_id);
                bind_text(q, 6, row->role);
                bind_text(q, 7, row->origin);
                bind_text(q, 8, row->description);
                bind_text(q, 9, data);
                bind_text(q, 10, meta);
                sqlite3_bind_int64(q, 11, row->created_at ? row->created_at : now);
                bind_time(q, 12, row->expires_at);
            }
            r = run(c, q, "secret insert");
        }
        rc = tx_end(s, c, r);
    }
    free(data);
    free(meta);
    release(s, c);
    return rc;
}

/* SECRET_CHECK's columns after SECRET_COLS: the user's, then the document's. */
enum {
    CHECK_USER_FOUND = SECRET_NCOLS,
    CHECK_USER_CREATED,
    CHECK_USER_BANNED,
    CHECK_DOC_FOUND,
    CHECK_DOC_CREATED,
    CHECK_DOC_EXPIRES,
};

/* Judges the row SECRET_CHECK returned; *until gets the end of a LIVE answer. */
static enum ts_secret_state check_row(sqlite3_stmt *q, int64_t now, int64_t *until)
{
    int64_t created = sqlite3_column_int64(q, 9);
    int64_t expires = sqlite3_column_int64(q, 10);
    *until = expires ? expires : INT64_MAX;
    if (expired_at(expires, now))
        return TS_SECRET_EXPIRED;
    if (sqlite3_column_type(q, 3) == SQLITE_NULL)
        return TS_SECRET_LIVE; /* a key bound to a role only */
    if (is_users((const char *)sqlite3_column_text(q, 2))) {
        int64_t banned = sqlite3_column_int64(q, CHECK_USER_BANNED);
        if (!sqlite3_column_int(q, CHECK_USER_FOUND) ||
            sqlite3_column_int64(q, CHECK_USER_CREATED) > created || banned > now)
            return TS_SECRET_IDENTITY_GONE;
        return TS_SECRET_LIVE;
    }
    int64_t doc_expires = sqlite3_column_int64(q, CHECK_DOC_EXPIRES);
    /* a document re-created after the secret is another identity: never revived */
    if (!sqlite3_column_int(q, CHECK_DOC_FOUND) || expired_at(doc_expires, now) ||
        sqlite3_column_int64(q, CHECK_DOC_CREATED) > created)
        return TS_SECRET_IDENTITY_GONE;
    if (doc_expires && doc_expires < *until)
        *until = doc_expires;
    return TS_SECRET_LIVE;
}

static enum ts_rc sq_secret_check(struct ts_store *st, const uint8_t hash[TS_SECRET_HASH_LEN],
                                  int64_t now, enum ts_secret_state *state,
                                  struct ts_secret_row **out, int64_t *valid_until)
{
    struct sq_store *s = sq(st);
    struct sq_conn *c;
    enum ts_rc rc = acquire(s, &c);
    if (rc)
        return rc;
    enum ts_secret_state res = TS_SECRET_UNKNOWN;
    struct ts_secret_row *row = NULL;
    int64_t until = 0;
    sqlite3_stmt *q = stmt(c, S_SECRET_CHECK);
    if (!q) {
        rc = TS_E_STORE;
    } else {
        sqlite3_bind_blob(q, 1, hash, TS_SECRET_HASH_LEN, SQLITE_STATIC);
        int r = sqlite3_step(q);
        if (r == SQLITE_ROW) {
            res = check_row(q, now, &until);
            if (res == TS_SECRET_LIVE && out)
                row = row_to_secret(q);
        }
        rc = r == SQLITE_ROW || r == SQLITE_DONE ? TS_OK : map_rc(c, r, "secret check");
        done(q);
    }
    release(s, c);
    if (rc)
        return rc;
    *state = res;
    if (out)
        *out = row;
    if (valid_until)
        *valid_until = res == TS_SECRET_LIVE ? until : 0;
    return TS_OK;
}

static enum ts_rc sq_secret_get(struct ts_store *st, const char *id, int64_t now,
                                struct ts_secret_row **out)
{
    struct sq_store *s = sq(st);
    struct sq_conn *c;
    enum ts_rc rc = acquire(s, &c);
    if (rc)
        return rc;
    sqlite3_stmt *q = stmt(c, S_SECRET_GET);
    if (!q) {
        rc = TS_E_STORE;
    } else {
        bind_text(q, 1, id);
        sqlite3_bind_int64(q, 2, now);
        int r = sqlite3_step(q);
        if (r == SQLITE_ROW)
            *out = row_to_secret(q);
        rc = r == SQLITE_ROW    ? TS_OK
             : r == SQLITE_DONE ? TS_E_NOT_FOUND
                                : map_rc(c, r, "secret get");
        done(q);
    }
    release(s, c);
    return rc;
}

static enum ts_rc sq_secret_list(struct ts_store *st, const struct ts_secret_filter *f,
                                 struct ts_secret_row ***out, size_t *out_n)
{
    struct sq_store *s = sq(st);
    struct sq_conn *c;
    enum ts_rc rc = acquire(s, &c);
    if (rc)
        return rc;
    struct ts_secret_row **list = NULL;
    size_t n = 0, cap = 0;
    /* bound to an identity: through tokens_identity rather than every secret of the kind */
    sqlite3_stmt *q = stmt(c, f->identity_id ? S_SECRET_LIST_IDENTITY : S_SECRET_LIST);
    if (!q) {
        rc = TS_E_STORE;
    } else {
        bind_text(q, 1, ts__secret_kind_text(f->kind));
        bind_text(q, 2, f->after ? f->after : "");
        sqlite3_bind_int64(q, 3, f->now);
        sqlite3_bind_int64(q, 4, f->limit);
        if (f->identity_id) {
            bind_text(q, 5, f->identity_collection);
            bind_text(q, 6, f->identity_id);
        }
        int r;
        while ((r = sqlite3_step(q)) == SQLITE_ROW) {
            list = grow(list, n, &cap, sizeof(*list));
            list[n++] = row_to_secret(q);
        }
        rc = r == SQLITE_DONE ? TS_OK : map_rc(c, r, "secret list");
        done(q);
    }
    release(s, c);
    if (rc) {
        ts_secret_rows_free(list, n);
        return rc;
    }
    *out = list;
    *out_n = n;
    return TS_OK;
}

static enum ts_rc sq_secret_delete(struct ts_store *st, enum ts_secret_kind kind, const char *id)
{
    struct sq_store *s = sq(st);
    struct sq_conn *c;
    enum ts_rc rc = acquire(s, &c);
    if (rc)
        return rc;
    rc = tx_begin(s, c);
    if (!rc) {
        sqlite3_stmt *q = stmt(c, S_SECRET_DELETE);
        if (q) {
            bind_text(q, 1, id);
            bind_text(q, 2, ts__secret_kind_text(kind));
        }
        rc = tx_end(s, c, run_changed(c, q, "secret delete"));
    }
    release(s, c);
    return rc;
}

static enum ts_rc sq_secrets_delete_for_identity(struct ts_store *st, enum ts_secret_kind kind,
                                                 const char *collection, const char *id,
                                                 const char *except_id, int64_t *deleted)
{
    struct sq_store *s = sq(st);
    struct sq_conn *c;
    enum ts_rc rc = acquire(s, &c);
    if (rc)
        return rc;
    int64_t n = 0;
    rc = tx_begin(s, c);
    if (!rc)
        rc = tx_end(s, c, delete_identity_secrets(c, kind, collection, id, except_id, &n));
    release(s, c);
    if (!rc && deleted)
        *deleted = n;
    return rc;
}

/* ---- the sessions ledger ---- */

static enum ts_rc sq_session_list(struct ts_store *st, const char *user_id,
                                  struct ts_session_info **out, size_t *out_n)
{
    struct sq_store *s = sq(st);
    struct sq_conn *c;
    enum ts_rc rc = acquire(s, &c);
    if (rc)
        return rc;
    struct ts_session_info *list = NULL;
    size_t n = 0, cap = 0;
    sqlite3_stmt *q = stmt(c, S_SESSION_LIST);
    if (!q) {
        rc = TS_E_STORE;
    } else {
        bind_text(q, 1, user_id);
        int r;
        while ((r = sqlite3_step(q)) == SQLITE_ROW) {
            list = grow(list, n, &cap, sizeof(*list));
            struct ts_session_info *si = &list[n++];
            const char *id = (const char *)sqlite3_column_text(q, 0);
            snprintf(si->id, sizeof(si->id), "%s", id ? id : "");
            si->aal = col_strdup(q, 1);
            si->ip = col_strdup(q, 2);
            si->user_agent = col_strdup(q, 3);
            si->created_at = sqlite3_column_int64(q, 4);
            si->refreshed_at = sqlite3_column_int64(q, 5);
            si->not_after = sqlite3_column_int64(q, 6);
            si->refresh_tokens = sqlite3_column_int64(q, 7);
            si->refresh_tokens_active = sqlite3_column_int64(q, 8);
        }
        rc = r == SQLITE_DONE ? TS_OK : map_rc(c, r, "session list");
        done(q);
    }
    release(s, c);
    if (rc) {
        ts_session_infos_free(list, n);
        return rc;
    }
    *out = list;
    *out_n = n;
    return TS_OK;
}

/* ---- external identity providers (AccessProviders) and the identities they vouch for ---- */

static struct ts_access_provider *row_to_provider(sqlite3_stmt *s)
{
    struct ts_access_provider *p = ts_xcalloc(1, sizeof(*p));
    p->name = col_strdup(s, 0);
    p->issuer = col_strdup(s, 1);
    p->config = col_json_object(s, 2);
    p->created_at = sqlite3_column_int64(s, 3);
    p->updated_at = sqlite3_column_int64(s, 4);
    return p;
}

static enum ts_rc sq_provider_create(struct ts_store *st, const struct ts_access_provider *p)
{
    struct sq_store *s = sq(st);
    struct sq_conn *c;
    enum ts_rc rc = acquire(s, &c);
    if (rc)
        return rc;
    char *config = json_text(p->config);
    rc = tx_begin(s, c);
    if (!rc) {
        sqlite3_stmt *q = stmt(c, S_PROVIDER_INSERT);
        if (q) {
            bind_text(q, 1, p->name);
            bind_text(q, 2, p->issuer);
            bind_text(q, 3, config);
            sqlite3_bind_int64(q, 4, p->created_at);
            sqlite3_bind_int64(q, 5, p->updated_at);
        }
        /* the name (primary key) or the issuer (unique) taken: TS_E_CONFLICT */
        rc = tx_end(s, c, run(c, q, "provider insert"));
    }
    free(config);
    release(s, c);
    return rc;
}

static enum ts_rc sq_provider_update(struct ts_store *st, const struct ts_access_provider *p)
{
    struct sq_store *s = sq(st);
    struct sq_conn *c;
    enum ts_rc rc = acquire(s, &c);
    if (rc)
        return rc;
    char *config = json_text(p->config);
    rc = tx_begin(s, c);
    if (!rc) {
        sqlite3_stmt *q = stmt(c, S_PROVIDER_UPDATE);
        if (q) {
            bind_text(q, 1, p->name);
            bind_text(q, 2, p->issuer);
            bind_text(q, 3, config);
            sqlite3_bind_int64(q, 4, p->updated_at);
        }
        rc = tx_end(s, c, run_changed(c, q, "provider update"));
    }
    free(config);
    release(s, c);
    return rc;
}

static enum ts_rc sq_provider_get(struct ts_store *st, const char *name,
                                  struct ts_access_provider **out)
{
    struct sq_store *s = sq(st);
    struct sq_conn *c;
    enum ts_rc rc = acquire(s, &c);
    if (rc)
        return rc;
    sqlite3_stmt *q = stmt(c, S_PROVIDER_GET);
    if (!q) {
        rc = TS_E_STORE;
    } else {
        bind_text(q, 1, name);
        int r = sqlite3_step(q);
        if (r == SQLITE_ROW)
            *out = row_to_provider(q);
        rc = r == SQLITE_ROW    ? TS_OK
             : r == SQLITE_DONE ? TS_E_NOT_FOUND
                                : map_rc(c, r, "provider get");
        done(q);
    }
    release(s, c);
    return rc;
}

static enum ts_rc sq_provider_list(struct ts_store *st, struct ts_access_provider ***out,
                                   size_t *out_n)
{
    struct sq_store *s = sq(st);
    struct sq_conn *c;
    enum ts_rc rc = acquire(s, &c);
    if (rc)
        return rc;
    struct ts_access_provider **list = NULL;
    size_t n = 0, cap = 0;
    sqlite3_stmt *q = stmt(c, S_PROVIDER_LIST);
    if (!q) {
        rc = TS_E_STORE;
    } else {
        int r;
        while ((r = sqlite3_step(q)) == SQLITE_ROW) {
            list = grow(list, n, &cap, sizeof(*list));
            list[n++] = row_to_provider(q);
        }
        rc = r == SQLITE_DONE ? TS_OK : map_rc(c, r, "provider list");
        done(q);
    }
    release(s, c);
    if (rc) {
        ts_access_providers_free(list, n);
        return rc;
    }
    *out = list;
    *out_n = n;
    return TS_OK;
}

static enum ts_rc sq_provider_delete(struct ts_store *st, const char *name)
{
    return write_one_text(st, S_PROVIDER_DELETE, name, true, "provider delete");
}

static struct ts_external_link *row_to_link(sqlite3_stmt *s)
{
    struct ts_external_link *l = ts_xcalloc(1, sizeof(*l));
    l->issuer = col_strdup(s, 0);
    l->subject = col_strdup(s, 1);
    l->collection = col_strdup(s, 2);
    l->id = col_strdup(s, 3);
    l->claims = col_json(s, 4);
    l->created_at = sqlite3_column_int64(s, 5);
    l->updated_at = sqlite3_column_int64(s, 6);
    return l;
}

/* The link of (issuer, subject), or *out NULL when there is none; *live tells whether its
 * identity is live at now and was created no later than the link. */
static enum ts_rc find_link(struct sq_conn *c, const char *issuer, const char *subject, int64_t now,
                            struct ts_external_link **out, bool *live)
{
    *out = NULL;
    *live = false;
    sqlite3_stmt *q = stmt(c, S_LINK_FIND);
    if (!q)
        return TS_E_STORE;
    bind_text(q, 1, issuer);
    bind_text(q, 2, subject);
    sqlite3_bind_int64(q, 3, now);
    int r = sqlite3_step(q);
    enum ts_rc rc = r == SQLITE_ROW || r == SQLITE_DONE ? TS_OK : map_rc(c, r, "link find");
    if (r == SQLITE_ROW) {
        *out = row_to_link(q);
        *live = sqlite3_column_type(q, LINK_NCOLS) != SQLITE_NULL &&
                sqlite3_column_int64(q, LINK_NCOLS) <= (*out)->created_at;
    }
    done(q);
    return rc;
}

/* Creates the identity cr describes, inside the caller's transaction: a user inserted as
 * user_create does, or a document with a fresh id, data cr->data, no expiry, and its entries
 * in its collection's indexes as doc_write makes them (a unique term taken: TS_E_CONFLICT).
 * *out_id gets the new identity's id (heap). */
static enum ts_rc create_identity(struct sq_conn *c, const struct ts_external_create *cr,
                                  int64_t now, char **out_id)
{
    if (is_users(cr->collection)) {
        enum ts_rc rc = insert_user(c, cr->user, NULL);
        if (!rc)
            *out_id = ts_xstrdup(cr->user->id);
        return rc;
    }
    enum ts_rc rc = collection_exists(c, cr->collection);
    if (rc)
        return rc;
    char id[TS_STORE_ID_LEN + 1];
    ts_uuid_v4(id);
    struct ts_doc_write w = {.mode = TS_DOC_CREATE,
                             .collection = cr->collection,
                             .id = id,
                             .data = cr->data,
                             .now = now};
    char *data = json_text(cr->data);
    rc = put_doc(c, true, &w, data, now, now);
    free(data);
    if (!rc)
        rc = index_doc(c, cr->collection, id, cr->data, now);
    if (!rc)
        *out_id = ts_xstrdup(id);
    return rc;
}

/* One write transaction: the link is looked up, touched if live, or (with create) its dead
 * predecessor deleted and a new identity and link made, so two callers never both create. */
static enum ts_rc sq_external_link(struct ts_store *st, const char *issuer, const char *subject,
                                   const json_t *claims, const struct ts_external_create *create,
                                   int64_t now, struct ts_external_link **out, bool *created)
{
    struct sq_store *s = sq(st);
    struct sq_conn *c;
    enum ts_rc rc = acquire(s, &c);
    if (rc)
        return rc;
    char *claims_text = json_text(claims);
    struct ts_external_link *link = NULL;
    bool made = false;
    rc = tx_begin(s, c);
    if (rc)
        goto out;
    bool live = false;
    enum ts_rc r = find_link(c, issuer, subject, now, &link, &live);
    sqlite3_stmt *q;
    if (!r && link && live) {
        q = stmt(c, S_LINK_TOUCH);
        if (q) {
            bind_text(q, 1, issuer);
            bind_text(q, 2, subject);
            bind_text(q, 3, claims_text);
            sqlite3_bind_int64(q, 4, now);
        }
        r = run(c, q, "link touch");
        if (!r && claims_text) {
            json_decref(link->claims);
            link->claims = json_loads(claims_text, JSON_DECODE_ANY, NULL); /* as stored */
        }
        link->updated_at = now;
    } else if (!r && !create) {
        r = TS_E_NOT_FOUND; /* a dead link is left as it is */
    } else if (!r) {
        if (link) { /* dead: its identity is gone or another one holds the id now */
            q = stmt(c, S_LINK_DELETE);
            if (q) {
                bind_text(q, 1, issuer);
                bind_text(q, 2, subject);
            }
            r = run(c, q, "link delete");
            ts_external_link_free(link);
            link = NULL;
        }
        char *id = NULL;
        if (!r)
            r = create_identity(c, create, now, &id);
        if (!r) {
            q = stmt(c, S_LINK_INSERT);
            if (q) {
                bind_text(q, 1, issuer);
                bind_text(q, 2, subject);
                bind_text(q, 3, create->collection);
                bind_text(q, 4, id);
                bind_text(q, 5, claims_text);
                sqlite3_bind_int64(q, 6, now);
            }
            r = run(c, q, "link insert");
        }
        if (!r) {
            link = ts_xcalloc(1, sizeof(*link));
            link->issuer = ts_xstrdup(issuer);
            link->subject = ts_xstrdup(subject);
            link->collection = ts_xstrdup(create->collection);
            link->id = id;
            id = NULL;
            link->claims = claims_text ? json_loads(claims_text, JSON_DECODE_ANY, NULL) : NULL;
            link->created_at = now;
            link->updated_at = now;
            made = true;
        }
        free(id);
    }
    rc = tx_end(s, c, r);
out:
    free(claims_text);
    release(s, c);
    if (rc) {
        ts_external_link_free(link);
        return rc;
    }
    *out = link;
    *created = made;
    return TS_OK;
}

static enum ts_rc sq_external_list(struct ts_store *st, const char *collection, const char *id,
                                   struct ts_external_link ***out, size_t *out_n)
{
    struct sq_store *s = sq(st);
    struct sq_conn *c;
    enum ts_rc rc = acquire(s, &c);
    if (rc)
        return rc;
    struct ts_external_link **list = NULL;
    size_t n = 0, cap = 0;
    sqlite3_stmt *q = stmt(c, S_LINK_LIST);
    if (!q) {
        rc = TS_E_STORE;
    } else {
        bind_text(q, 1, collection);
        bind_text(q, 2, id);
        int r;
        while ((r = sqlite3_step(q)) == SQLITE_ROW) {
            list = grow(list, n, &cap, sizeof(*list));
            list[n++] = row_to_link(q);
        }
        rc = r == SQLITE_DONE ? TS_OK : map_rc(c, r, "link list");
        done(q);
    }
    release(s, c);
    if (rc) {
        ts_external_links_free(list, n);
        return rc;
    }
    *out = list;
    *out_n = n;
    return TS_OK;
}

/* ---- token exchanges ---- */

static struct ts_exchange_row *row_to_exchange(sqlite3_stmt *s)
{
    struct ts_exchange_row *r = ts_xcalloc(1, sizeof(*r));
    const char *id = (const char *)sqlite3_column_text(s, 0);
    snprintf(r->id, sizeof(r->id), "%s", id ? id : "");
    r->provider = col_strdup(s, 1);
    r->subject = col_strdup(s, 2);
    r->collection = col_strdup(s, 3);
    r->identity_id = col_strdup(s, 4);
    r->token_id = col_strdup(s, 5);
    r->token_type = col_strdup(s, 6);
    r->meta = col_json(s, 7);
    r->created_at = sqlite3_column_int64(s, 8);
    r->expires_at = sqlite3_column_int64(s, 9);
    return r;
}

static enum ts_rc sq_exchange_record(struct ts_store *st, const struct ts_exchange_row *row)
{
    struct sq_store *s = sq(st);
    struct sq_conn *c;
    enum ts_rc rc = acquire(s, &c);
    if (rc)
        return rc;
    char *meta = json_text(row->meta);
    rc = tx_begin(s, c);
    if (!rc) {
        sqlite3_stmt *q = stmt(c, S_EXCHANGE_INSERT);
        if (q) {
            bind_text(q, 1, row->id);
            bind_text(q, 2, row->provider);
            bind_text(q, 3, row->subject);
            bind_text(q, 4, row->collection);
            bind_text(q, 5, row->identity_id);
            bind_text(q, 6, row->token_id);
            bind_text(q, 7, row->token_type);
            bind_text(q, 8, meta);
            sqlite3_bind_int64(q, 9, row->created_at);
            sqlite3_bind_int64(q, 10, row->expires_at);
        }
        rc = tx_end(s, c, run(c, q, "exchange insert"));
    }
    free(meta);
    release(s, c);
    return rc;
}

static enum ts_rc sq_exchange_list(struct ts_store *st, const char *collection, const char *id,
                                   const char *after, int64_t limit, int64_t now,
                                   struct ts_exchange_row ***out, size_t *out_n)
{
    struct sq_store *s = sq(st);
    struct sq_conn *c;
    enum ts_rc rc = acquire(s, &c);
    if (rc)
        return rc;
    struct ts_exchange_row **list = NULL;
    size_t n = 0, cap = 0;
    sqlite3_stmt *q = stmt(c, id ? S_EXCHANGE_LIST_IDENTITY : S_EXCHANGE_LIST);
    if (!q) {
        rc = TS_E_STORE;
    } else {
        sqlite3_bind_int64(q, 1, now);
        bind_text(q, 2, after ? after : ""); /* every id sorts after "" */
        sqlite3_bind_int64(q, 3, limit);
        if (id) {
            bind_text(q, 4, collection);
            bind_text(q, 5, id);
        }
        int r;
        while ((r = sqlite3_step(q)) == SQLITE_ROW) {
            list = grow(list, n, &cap, sizeof(*list));
            list[n++] = row_to_exchange(q);
        }
        rc = r == SQLITE_DONE ? TS_OK : map_rc(c, r, "exchange list");
        done(q);
    }
    release(s, c);
    if (rc) {
        ts_exchange_rows_free(list, n);
        return rc;
    }
    *out = list;
    *out_n = n;
    return TS_OK;
}

/* ---- the sweeper ---- */

/*
 * One kind of the sweep, as its own short transaction: runs pre[0] and pre[1] (each unless
 * S__COUNT: they delete what is bound to the rows about to go) then del, all with ?1 = cutoff
 * and ?2 = batch, and ?3 = kind when kind is not NULL. *count gets the rows del deleted
 * (cascades not counted).
 */
static enum ts_rc sweep_kind(struct sq_store *s, struct sq_conn *c, const enum stmt_id pre[2],
                             enum stmt_id del, const char *kind, int64_t cutoff, int64_t batch,
                             int64_t *count)
{
    enum ts_rc rc = tx_begin(s, c);
    if (rc)
        return rc;
    enum ts_rc r = TS_OK;
    int64_t n = 0;
    for (int step = 0; !r && step < 3; step++) {
        enum stmt_id id = step < 2 ? pre[step] : del;
        if (id == S__COUNT)
            continue;
        sqlite3_stmt *q = stmt(c, id);
        if (q) {
            sqlite3_bind_int64(q, 1, cutoff);
            sqlite3_bind_int64(q, 2, batch);
            if (kind)
                bind_text(q, 3, kind);
        }
        r = run(c, q, "sweep");
        if (!r)
            n = sqlite3_changes(c->db);
    }
    rc = tx_end(s, c, r);
    if (!rc)
        *count = n;
    return rc;
}

static enum ts_rc sq_sweep(struct ts_store *st, int64_t now, int64_t refresh_before, int64_t batch,
                           struct ts_sweep_counts *out)
{
    struct sq_store *s = sq(st);
    struct sq_conn *c;
    enum ts_rc rc = acquire(s, &c);
    if (rc)
        return rc;
    static const enum stmt_id none[2] = {S__COUNT, S__COUNT};
    static const enum stmt_id doc_bound[2] = {S_SWEEP_DOC_SECRETS, S_SWEEP_DOC_LINKS};
    /* out holds what earlier kinds deleted even when a later one fails (store_docs.c moves
     * the epoch from it) */
    rc = sweep_kind(s, c, none, S_SWEEP_SECRETS, ts__secret_kind_text(TS_SECRET_TOKEN), now, batch,
                    &out->tokens);
    if (!rc)
        rc = sweep_kind(s, c, none, S_SWEEP_SECRETS, ts__secret_kind_text(TS_SECRET_KEY), now,
                        batch, &out->keys);
    if (!rc)
        rc = sweep_kind(s, c, doc_bound, S_SWEEP_DOCS, NULL, now, batch, &out->documents);
    if (!rc)
        rc = sweep_kind(s, c, none, S_SWEEP_SESSIONS, NULL, now, batch, &out->sessions);
    if (!rc)
        rc = sweep_kind(s, c, none, S_SWEEP_REFRESH, NULL, refresh_before, batch,
                        &out->refresh_tokens);
    if (!rc)
        rc = sweep_kind(s, c, none, S_SWEEP_EXCHANGES, NULL, now, batch, &out->exchanges);
    release(s, c);
    return rc;
}

/* PRAGMA data_version changes when any *other* connection committed since this one last
 * looked: the CLI, but also this process's pooled connections, so some bumps are spurious,
 * which only costs cache refills. */
static void sq_poll_external(struct ts_store *st)
{
    struct sq_store *s = sq(st);
    if (!s->watch && conn_open(s, &s->watch) != TS_OK)
        return;
    sqlite3_stmt *q = stmt(s->watch, S_DATA_VERSION);
    if (!q)
        return;
    if (sqlite3_step(q) == SQLITE_ROW) {
        int64_t v = sqlite3_column_int64(q, 0);
        if (v != s->watch_version) {
            s->watch_version = v;
            ts__store_bump_epoch(st);
        }
    }
    done(q);
}

/* ---- authorization objects (roles and profiles) ---- */

static struct ts_authz_object *row_to_authz(sqlite3_stmt *s)
{
    struct ts_authz_object *o = ts_xcalloc(1, sizeof(*o));
    o->kind = (enum ts_authz_kind)sqlite3_column_int(s, 0);
    o->name = col_strdup(s, 1);
    o->config = col_json_object(s, 2);
    o->created_at = sqlite3_column_int64(s, 3);
    o->updated_at = sqlite3_column_int64(s, 4);
    return o;
}

/* Ends an authorization object's write (r the result of its statement) inside its transaction:
 * TS_E_NOT_FOUND when it changed no row, else authz_version is bumped. */
static enum ts_rc authz_bump(struct sq_conn *c, enum ts_rc r)
{
    if (r)
        return r;
    if (sqlite3_changes(c->db) == 0)
        return TS_E_NOT_FOUND;
    r = run(c, stmt(c, S_AUTHZ_VERSION_BUMP), "authz version bump");
    if (!r && sqlite3_changes(c->db) != 1) {
        ts_log_error("sqlite authz version bump: the authz_version row is missing");
        r = TS_E_STORE;
    }
    return r;
}

/* Writes o with statement id (AUTHZ_INSERT or AUTHZ_UPDATE) and bumps the version. */
static enum ts_rc authz_put(struct ts_store *st, enum stmt_id id, const struct ts_authz_object *o,
                            const char *what)
{
    struct sq_store *s = sq(st);
    struct sq_conn *c;
    enum ts_rc rc = acquire(s, &c);
    if (rc)
        return rc;
    char *config = json_text(o->config);
    rc = tx_begin(s, c);
    if (!rc) {
        sqlite3_stmt *q = stmt(c, id);
        if (q) {
            sqlite3_bind_int(q, 1, (int)o->kind);
            bind_text(q, 2, o->name);
            bind_text(q, 3, config);
            if (id == S_AUTHZ_INSERT) {
                sqlite3_bind_int64(q, 4, o->created_at);
                sqlite3_bind_int64(q, 5, o->updated_at);
            } else {
                sqlite3_bind_int64(q, 4, o->updated_at);
            }
        }
        /* insert: (kind, name) taken is TS_E_CONFLICT; update: no row is TS_E_NOT_FOUND */
        rc = tx_end(s, c, authz_bump(c, run(c, q, what)));
    }
    free(config);
    release(s, c);
    return rc;
}

static enum ts_rc sq_authz_create(struct ts_store *st, const struct ts_authz_object *o)
{
    return authz_put(st, S_AUTHZ_INSERT, o, "authz insert");
}

static enum ts_rc sq_authz_update(struct ts_store *st, const struct ts_authz_object *o)
{
    return authz_put(st, S_AUTHZ_UPDATE, o, "authz update");
}

static enum ts_rc sq_authz_get(struct ts_store *st, enum ts_authz_kind kind, const char *name,
                               struct ts_authz_object **out)
{
    struct sq_store *s = sq(st);
    struct sq_conn *c;
    enum ts_rc rc = acquire(s, &c);
    if (rc)
        return rc;
    sqlite3_stmt *q = stmt(c, S_AUTHZ_GET);
    if (!q) {
        rc = TS_E_STORE;
    } else {
        sqlite3_bind_int(q, 1, (int)kind);
        bind_text(q, 2, name);
        int r = sqlite3_step(q);
        if (r == SQLITE_ROW)
            *out = row_to_authz(q);
        rc = r == SQLITE_ROW    ? TS_OK
             : r == SQLITE_DONE ? TS_E_NOT_FOUND
                                : map_rc(c, r, "authz get");
        done(q);
    }
    release(s, c);
    return rc;
}

static enum ts_rc sq_authz_list(struct ts_store *st, enum ts_authz_kind kind,
                                struct ts_authz_object ***out, size_t *out_n)
{
    struct sq_store *s = sq(st);
    struct sq_conn *c;
    enum ts_rc rc = acquire(s, &c);
    if (rc)
        return rc;
    struct ts_authz_object **list = NULL;
    size_t n = 0, cap = 0;
    sqlite3_stmt *q = stmt(c, S_AUTHZ_LIST);
    if (!q) {
        rc = TS_E_STORE;
    } else {
        sqlite3_bind_int(q, 1, (int)kind);
        int r;
        while ((r = sqlite3_step(q)) == SQLITE_ROW) {
            list = grow(list, n, &cap, sizeof(*list));
            list[n++] = row_to_authz(q);
        }
        rc = r == SQLITE_DONE ? TS_OK : map_rc(c, r, "authz list");
        done(q);
    }
    release(s, c);
    if (rc) {
        ts_authz_objects_free(list, n);
        return rc;
    }
    *out = list;
    *out_n = n;
    return TS_OK;
}

static enum ts_rc sq_authz_delete(struct ts_store *st, enum ts_authz_kind kind, const char *name)
{
    struct sq_store *s = sq(st);
    struct sq_conn *c;
    enum ts_rc rc = acquire(s, &c);
    if (rc)
        return rc;
    rc = tx_begin(s, c);
    if (!rc) {
        sqlite3_stmt *q = stmt(c, S_AUTHZ_DELETE);
        if (q) {
            sqlite3_bind_int(q, 1, (int)kind);
            bind_text(q, 2, name);
        }
        rc = tx_end(s, c, authz_bump(c, run(c, q, "authz delete")));
    }
    release(s, c);
    return rc;
}

static enum ts_rc sq_authz_version(struct ts_store *st, int64_t *out)
{
    struct sq_store *s = sq(st);
    struct sq_conn *c;
    enum ts_rc rc = acquire(s, &c);
    if (rc)
        return rc;
    sqlite3_stmt *q = stmt(c, S_AUTHZ_VERSION);
    if (!q) {
        rc = TS_E_STORE;
    } else {
        int r = sqlite3_step(q);
        if (r == SQLITE_ROW) {
            *out = sqlite3_column_int64(q, 0);
            rc = TS_OK;
        } else if (r == SQLITE_DONE) {
            ts_log_error("sqlite authz version: the authz_version row is missing");
            rc = TS_E_STORE;
        } else {
            rc = map_rc(c, r, "authz version");
        }
        done(q);
    }
    release(s, c);
    return rc;
}

static const struct ts_store_ops sqlite_ops = {
    .close = sq_close,
    .migrate = sq_migrate,
    .schema_version = sq_schema_version,
    .ping = sq_ping,
    .meta_get = sq_meta_get,
    .meta_insert = sq_meta_insert,
    .user_create = sq_user_create,
    .user_get = sq_user_get,
    .user_get_by_email = sq_user_get_by_email,
    .user_update = sq_user_update,
    .user_delete = sq_user_delete,
    .user_list = sq_user_list,
    .user_page = sq_user_page,
    .password_get = sq_password_get,
    .password_set = sq_password_set,
    .session_create = sq_session_create,
    .session_user = sq_session_user,
    .session_delete = sq_session_delete,
    .sessions_delete_for_user = sq_sessions_delete_for_user,
    .refresh_rotate = sq_refresh_rotate,
    .signing_keys_list = sq_signing_keys_list,
    .signing_key_insert = sq_signing_key_insert,
    .signing_key_promote = sq_signing_key_promote,
    .signing_key_reseal = sq_signing_key_reseal,
    .poll_external = sq_poll_external,
    .audit = sq_audit,
    .bucket_take = sq_bucket_take,
    .counter_add = sq_counter_add,
    .counter_read = sq_counter_read,
    .counter_reset = sq_counter_reset,
    .counters_sweep = sq_counters_sweep,
    .collection_create = sq_collection_create,
    .collection_get = sq_collection_get,
    .collection_list = sq_collection_list,
    .collection_delete = sq_collection_delete,
    .index_create = sq_index_create,
    .index_list = sq_index_list,
    .index_get = sq_index_get,
    .index_delete = sq_index_delete,
    .doc_write = sq_doc_write,
    .doc_get = sq_doc_get,
    .doc_delete = sq_doc_delete,
    .doc_list = sq_doc_list,
    .index_lookup = sq_index_lookup,
    .identity_collections = sq_identity_collections,
    .credential_get = sq_credential_get,
    .credential_set = sq_credential_set,
    .credential_delete = sq_credential_delete,
    .credential_list = sq_credential_list,
    .secret_create = sq_secret_create,
    .secret_check = sq_secret_check,
    .secret_get = sq_secret_get,
    .secret_list = sq_secret_list,
    .secret_delete = sq_secret_delete,
    .secrets_delete_for_identity = sq_secrets_delete_for_identity,
    .session_list = sq_session_list,
    .sweep = sq_sweep,
    .provider_create = sq_provider_create,
    .provider_update = sq_provider_update,
    .provider_get = sq_provider_get,
    .provider_list = sq_provider_list,
    .provider_delete = sq_provider_delete,
    .external_link = sq_external_link,
    .external_list = sq_external_list,
    .exchange_record = sq_exchange_record,
    .exchange_list = sq_exchange_list,
    .authz_create = sq_authz_create,
    .authz_update = sq_authz_update,
    .authz_get = sq_authz_get,
    .authz_list = sq_authz_list,
    .authz_delete = sq_authz_delete,
    .authz_version = sq_authz_version,
};

enum ts_rc ts__store_sqlite_open(const char *path, const struct ts_store_options *opt,
                                 struct ts_store **out, char **err)
{
    if (!path || !*path) {
        *err = ts_xstrdup("DATABASE_URL: sqlite:// needs a file path");
        return TS_E_INVALID;
    }
    if (sqlite3_threadsafe() == 0) {
        *err = ts_xstrdup("this SQLite library was built without thread support");
        return TS_E_INVALID;
    }
    struct sq_store *s = ts_xcalloc(1, sizeof(*s));
    s->base.ops = &sqlite_ops;
    s->path = ts_xstrdup(path);
    s->durable_full = opt->durable_full;
    pthread_mutex_init(&s->pool_lock, NULL);
    pthread_mutex_init(&s->write_lock, NULL);
    struct sq_conn *c;
    enum ts_rc rc = conn_open(s, &c);
    if (rc) {
        *err = ts_xasprintf("cannot open SQLite database %s", path);
        sq_close(&s->base);
        return rc;
    }
    release(s, c);
    *out = &s->base;
    return TS_OK;
}

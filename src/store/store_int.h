/*
 * store_int.h - private to src/store: the backend vtable. Each backend fills a
 * struct ts_store_ops and embeds struct ts_store at the start of its own state.
 */
#ifndef TS_STORE_INT_H
#define TS_STORE_INT_H

#include <stdatomic.h>

#include "store.h"

/* A windowed counter's row. */
struct ts__counter_row {
    int64_t value;
    int64_t window_start; /* microseconds since the epoch */
    int64_t window_end;   /* window_start + the window_us of the last successful add */
};

struct ts_store_ops {
    void (*close)(struct ts_store *st);
    enum ts_rc (*migrate)(struct ts_store *st, int *applied, char **err);
    enum ts_rc (*schema_version)(struct ts_store *st, int *current, int *latest);
    enum ts_rc (*ping)(struct ts_store *st);
    enum ts_rc (*meta_get)(struct ts_store *st, const char *key, char **out);
    enum ts_rc (*meta_insert)(struct ts_store *st, const char *key, const char *value);
    enum ts_rc (*user_create)(struct ts_store *st, const struct ts_user *u, const char *hash);
    enum ts_rc (*user_get)(struct ts_store *st, const char *id, struct ts_user **out);
    enum ts_rc (*user_get_by_email)(struct ts_store *st, const char *email, struct ts_user **out,
                                    char **out_hash);
    enum ts_rc (*user_update)(struct ts_store *st, const struct ts_user *u, int64_t expected);
    enum ts_rc (*user_delete)(struct ts_store *st, const char *id);
    enum ts_rc (*user_list)(struct ts_store *st, int64_t offset, int64_t limit, const char *filter,
                            struct ts_user ***out, size_t *out_n, int64_t *total);
    enum ts_rc (*user_page)(struct ts_store *st, const char *after, int64_t limit,
                            struct ts_user ***out, size_t *out_n);
    enum ts_rc (*password_get)(struct ts_store *st, const char *user_id, char **out_hash);
    enum ts_rc (*password_set)(struct ts_store *st, const char *user_id, const char *hash,
                               const char *expect_old, bool revoke, const char *keep_session,
                               int64_t now);
    enum ts_rc (*session_create)(struct ts_store *st, const struct ts_session_new *s,
                                 char session_id[TS_STORE_ID_LEN + 1]);
    enum ts_rc (*session_user)(struct ts_store *st, const char *session_id, const char *user_id,
                               struct ts_user **out);
    enum ts_rc (*session_delete)(struct ts_store *st, const char *session_id);
    enum ts_rc (*sessions_delete_for_user)(struct ts_store *st, const char *user_id,
                                           const char *except_session, int64_t *deleted);
    enum ts_rc (*refresh_rotate)(struct ts_store *st, const struct ts_refresh_request *req,
                                 struct ts_refresh_result *out);
    enum ts_rc (*signing_keys_list)(struct ts_store *st, struct ts_signing_key_row **out,
                                    size_t *out_n);
    enum ts_rc (*signing_key_insert)(struct ts_store *st, const struct ts_signing_key_row *row);
    enum ts_rc (*signing_key_promote)(struct ts_store *st, const char *kid, int64_t now,
                                      int64_t drop_before);
    enum ts_rc (*signing_key_reseal)(struct ts_store *st, const char *kid, const char *expected,
                                     const char *replacement);
    /* Bumps the epoch when another process (or connection) committed since the last call. */
    void (*poll_external)(struct ts_store *st);
    void (*audit)(struct ts_store *st, const char *event, const char *actor, const char *target,
                  const char *ip, const char *meta_json);
    /* Counters: store.c has checked every argument against store.h's ranges. */
    enum ts_rc (*bucket_take)(struct ts_store *st, const char *key,
                              const struct ts_bucket_rule *rule, int64_t now, uint32_t cost,
                              struct ts_bucket_result *out);
    enum ts_rc (*counter_add)(struct ts_store *st, const char *key, int64_t delta,
                              int64_t window_us, int64_t now, int64_t limit,
                              struct ts_counter_result *out);
    /* Reads the counter's row as stored; *found is false when there is none. */
    enum ts_rc (*counter_read)(struct ts_store *st, const char *key, bool *found,
                               struct ts__counter_row *out);
    enum ts_rc (*counter_reset)(struct ts_store *st, const char *key);
    enum ts_rc (*counters_sweep)(struct ts_store *st, int64_t before, int64_t *deleted);
    /* The native model (store.h): store.c has refused the "users" collection where the
     * contract says so, and checked limits (1..1000) and batch sizes. */
    enum ts_rc (*collection_create)(struct ts_store *st, const char *name, int64_t now);
    enum ts_rc (*collection_get)(struct ts_store *st, const char *name,
                                 struct ts_collection_info *out);
    enum ts_rc (*collection_list)(struct ts_store *st, const char *after, int64_t limit,
                                  struct ts_collection_info **out, size_t *out_n);
    enum ts_rc (*collection_delete)(struct ts_store *st, const char *name);
    enum ts_rc (*index_create)(struct ts_store *st, const char *collection,
                               const struct ts_index_def *def, int64_t now);
    enum ts_rc (*index_list)(struct ts_store *st, const char *collection, struct ts_index_def **out,
                             size_t *out_n);
    enum ts_rc (*index_get)(struct ts_store *st, const char *collection, const char *name,
                            struct ts_index_def *out);
    enum ts_rc (*index_delete)(struct ts_store *st, const char *collection, const char *name);
    enum ts_rc (*doc_write)(struct ts_store *st, const struct ts_doc_write *w, struct ts_doc **out);
    enum ts_rc (*doc_get)(struct ts_store *st, const char *collection, const char *id, int64_t now,
                          struct ts_doc **out);
    enum ts_rc (*doc_delete)(struct ts_store *st, const char *collection, const char *id,
                             int64_t now);
    enum ts_rc (*doc_list)(struct ts_store *st, const char *collection, const char *after,
                           int64_t limit, int64_t now, struct ts_doc ***out, size_t *out_n);
    enum ts_rc (*index_lookup)(struct ts_store *st, const char *collection, const char *index,
                               const char *key, const char *after, int64_t limit, int64_t now,
                               struct ts_doc ***out, size_t *out_n);
    enum ts_rc (*identity_collections)(struct ts_store *st, const char *id, int64_t now,
                                       char ***out, size_t *out_n);
    enum ts_rc (*credential_get)(struct ts_store *st, const char *collection, const char *id,
                                 int64_t now, char **out_hash);
    enum ts_rc (*credential_set)(struct ts_store *st, const char *collection, const char *id,
                                 const char *hash, const char *expect_old, int64_t now);
    enum ts_rc (*credential_delete)(struct ts_store *st, const char *collection, const char *id,
                                    bool revoke, int64_t *revoked);
    enum ts_rc (*credential_list)(struct ts_store *st, const char *collection,
                                  const char *after_collection, const char *after_id, int64_t limit,
                                  struct ts_credential_info **out, size_t *out_n);
    enum ts_rc (*secret_create)(struct ts_store *st, const struct ts_secret_row *row,
                                const uint8_t hash[TS_SECRET_HASH_LEN], int64_t now);
    enum ts_rc (*secret_check)(struct ts_store *st, const uint8_t hash[TS_SECRET_HASH_LEN],
                               int64_t now, enum ts_secret_state *state, struct ts_secret_row **out,
                               int64_t *valid_until);
    enum ts_rc (*secret_get)(struct ts_store *st, const char *id, int64_t now,
                             struct ts_secret_row **out);
    enum ts_rc (*secret_list)(struct ts_store *st, const struct ts_secret_filter *f,
                              struct ts_secret_row ***out, size_t *out_n);
    enum ts_rc (*secret_delete)(struct ts_store *st, enum ts_secret_kind kind, const char *id);
    enum ts_rc (*secrets_delete_for_identity)(struct ts_store *st, enum ts_secret_kind kind,
                                              const char *collection, const char *id,
                                              const char *except_id, int64_t *deleted);
    enum ts_rc (*session_list)(struct ts_store *st, const char *user_id,
                               struct ts_session_info **out, size_t *out_n);
    enum ts_rc (*sweep)(struct ts_store *st, int64_t now, int64_t refresh_before, int64_t batch,
                        struct ts_sweep_counts *out);
    /* External identities (store.h): store_docs.c has checked the arguments. */
    enum ts_rc (*provider_create)(struct ts_store *st, const struct ts_access_provider *p);
    enum ts_rc (*provider_update)(struct ts_store *st, const struct ts_access_provider *p);
    enum ts_rc (*provider_get)(struct ts_store *st, const char *name,
                               struct ts_access_provider **out);
    enum ts_rc (*provider_list)(struct ts_store *st, struct ts_access_provider ***out,
                                size_t *out_n);
    enum ts_rc (*provider_delete)(struct ts_store *st, const char *name);
    enum ts_rc (*external_link)(struct ts_store *st, const char *issuer, const char *subject,
                                const json_t *claims, const struct ts_external_create *create,
                                int64_t now, struct ts_external_link **out, bool *created);
    enum ts_rc (*external_list)(struct ts_store *st, const char *collection, const char *id,
                                struct ts_external_link ***out, size_t *out_n);
    enum ts_rc (*exchange_record)(struct ts_store *st, const struct ts_exchange_row *row);
    enum ts_rc (*exchange_list)(struct ts_store *st, const char *collection, const char *id,
                                const char *after, int64_t limit, int64_t now,
                                struct ts_exchange_row ***out, size_t *out_n);
    /* Authorization objects (store.h): store_docs.c has checked the arguments. Every write
     * that changes a row bumps authz_version.version in its transaction. */
    enum ts_rc (*authz_create)(struct ts_store *st, const struct ts_authz_object *o);
    enum ts_rc (*authz_update)(struct ts_store *st, const struct ts_authz_object *o);
    enum ts_rc (*authz_get)(struct ts_store *st, enum ts_authz_kind kind, const char *name,
                            struct ts_authz_object **out);
    enum ts_rc (*authz_list)(struct ts_store *st, enum ts_authz_kind kind,
                             struct ts_authz_object ***out, size_t *out_n);
    enum ts_rc (*authz_delete)(struct ts_store *st, enum ts_authz_kind kind, const char *name);
    enum ts_rc (*authz_version)(struct ts_store *st, int64_t *out);
};

struct ts_store {
    const struct ts_store_ops *ops;
    _Atomic uint64_t epoch; /* see ts_store_epoch; bumped by store.c and by poll_external */
    _Atomic bool blind;     /* the backend cannot see other processes' commits right now (its
                               change listener is down): ts_store_epoch never repeats */
};

/* Records that users or sessions changed (after the commit). */
void ts__store_bump_epoch(struct ts_store *st);

/*
 * The counters' arithmetic (store.h), in one place. SQLite runs ts__bucket_decide and
 * ts__counter_decide on the row it read inside its write transaction; PostgreSQL runs the
 * same rules as SQL in one upsert (store_pg.c mirrors them expression for expression). Both
 * then describe the outcome with the *_report functions, from the row as the call left it.
 */

/* Decides a take: returns whether cost tokens can be taken at now, and sets *new_full_at to
 * the bucket's full_at after the call (found is false when the bucket has no row: full).
 * Taken or not, the deficit is first clamped to the rule's span, so *new_full_at may differ
 * from full_at even when the take is denied; the row is then written all the same. */
bool ts__bucket_decide(const struct ts_bucket_rule *rule, int64_t now, uint32_t cost, bool found,
                       int64_t full_at, int64_t *new_full_at);
/* Fills out from the bucket's full_at after the call. */
void ts__bucket_report(const struct ts_bucket_rule *rule, int64_t now, uint32_t cost, bool allowed,
                       int64_t full_at, struct ts_bucket_result *out);

/* Applies an add to *row (found is false when the key has no row: *row is then filled in).
 * Returns false when it is refused, leaving *row as it was. */
bool ts__counter_decide(bool found, struct ts__counter_row *row, int64_t delta, int64_t window_us,
                        int64_t now, int64_t limit);
/* Fills out for an add, from the value and window start after the call. */
void ts__counter_report(bool allowed, int64_t value, int64_t window_start, int64_t window_us,
                        int64_t now, struct ts_counter_result *out);

/* Text forms of enum ts_secret_kind as stored ("token", "key"), and back. */
const char *ts__secret_kind_text(enum ts_secret_kind k);
enum ts_secret_kind ts__secret_kind_from_text(const char *t);

/* Backend constructors. path is the part of a sqlite URL after its scheme. */
enum ts_rc ts__store_sqlite_open(const char *path, const struct ts_store_options *opt,
                                 struct ts_store **out, char **err);
/* url is the whole postgres:// or postgresql:// URL, handed to libpq as is. */
enum ts_rc ts__store_pg_open(const char *url, const struct ts_store_options *opt,
                             struct ts_store **out, char **err);

#endif

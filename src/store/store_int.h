/*
 * store_int.h - private to src/store: the backend vtable. Each backend fills a
 * struct ts_store_ops and embeds struct ts_store at the start of its own state.
 */
#ifndef TS_STORE_INT_H
#define TS_STORE_INT_H

#include <stdatomic.h>

#include "store.h"

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
    /* Bumps the epoch when another process (or connection) committed since the last call. */
    void (*poll_external)(struct ts_store *st);
    void (*audit)(struct ts_store *st, const char *event, const char *actor, const char *target,
                  const char *ip, const char *meta_json);
};

struct ts_store {
    const struct ts_store_ops *ops;
    _Atomic uint64_t epoch; /* see ts_store_epoch; bumped by store.c and by poll_external */
    _Atomic bool blind;     /* the backend cannot see other processes' commits right now (its
                               change listener is down): ts_store_epoch never repeats */
};

/* Records that users or sessions changed (after the commit). */
void ts__store_bump_epoch(struct ts_store *st);

/* Backend constructors. path is the part of a sqlite URL after its scheme. */
enum ts_rc ts__store_sqlite_open(const char *path, const struct ts_store_options *opt,
                                 struct ts_store **out, char **err);
/* url is the whole postgres:// or postgresql:// URL, handed to libpq as is. */
enum ts_rc ts__store_pg_open(const char *url, const struct ts_store_options *opt,
                             struct ts_store **out, char **err);

#endif

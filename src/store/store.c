/*
 * store.c - picks a backend from the database URL and forwards every operation to
 * it. Nothing here knows SQL.
 */
#include <stdlib.h>
#include <string.h>

#include "store_int.h"

void ts__store_bump_epoch(struct ts_store *st)
{
    atomic_fetch_add(&st->epoch, 1);
}

uint64_t ts_store_epoch(struct ts_store *st)
{
    /* Blind: a fresh value each time, so that no cache entry is ever found valid. */
    if (atomic_load(&st->blind))
        return atomic_fetch_add(&st->epoch, 1) + 1;
    return atomic_load(&st->epoch);
}

void ts_store_poll_external(struct ts_store *st)
{
    st->ops->poll_external(st);
}

/* Passes rc through, bumping the epoch when a change was committed. */
static enum ts_rc changed(struct ts_store *st, enum ts_rc rc)
{
    if (rc == TS_OK)
        ts__store_bump_epoch(st);
    return rc;
}

struct ts_user *ts_user_new(void)
{
    struct ts_user *u = ts_xcalloc(1, sizeof(*u));
    u->user_metadata = json_object();
    u->app_metadata = json_object();
    return u;
}

void ts_user_free(struct ts_user *u)
{
    if (!u)
        return;
    free(u->aud);
    free(u->role);
    free(u->email);
    free(u->phone);
    json_decref(u->user_metadata);
    json_decref(u->app_metadata);
    free(u);
}

void ts_user_list_free(struct ts_user **list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        ts_user_free(list[i]);
    free(list);
}

void ts_signing_key_rows_free(struct ts_signing_key_row *rows, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(rows[i].kid);
        free(rows[i].alg);
        if (rows[i].private_pem) {
            ts_wipe(rows[i].private_pem, strlen(rows[i].private_pem));
            free(rows[i].private_pem);
        }
    }
    free(rows);
}

enum ts_rc ts_store_open(const char *url, const struct ts_store_options *opt, struct ts_store **out,
                         char **err)
{
    static const struct ts_store_options defaults = {0};
    if (!opt)
        opt = &defaults;
    if (strncmp(url, "sqlite://", 9) == 0)
        return ts__store_sqlite_open(url + 9, opt, out, err);
    if (strncmp(url, "file:", 5) == 0)
        return ts__store_sqlite_open(url + 5, opt, out, err);
    if (strncmp(url, "postgres://", 11) == 0 || strncmp(url, "postgresql://", 13) == 0)
        return ts__store_pg_open(url, opt, out, err);
    *err = ts_xstrdup("DATABASE_URL: expected sqlite://PATH, sqlite:///ABS/PATH or postgres://...");
    return TS_E_INVALID;
}

void ts_store_close(struct ts_store *st)
{
    if (st)
        st->ops->close(st);
}

enum ts_rc ts_store_migrate(struct ts_store *st, int *applied, char **err)
{
    return st->ops->migrate(st, applied, err);
}

enum ts_rc ts_store_schema_version(struct ts_store *st, int *current, int *latest)
{
    return st->ops->schema_version(st, current, latest);
}

enum ts_rc ts_store_ping(struct ts_store *st)
{
    return st->ops->ping(st);
}

enum ts_rc ts_store_meta_get(struct ts_store *st, const char *key, char **out)
{
    return st->ops->meta_get(st, key, out);
}

enum ts_rc ts_store_meta_insert(struct ts_store *st, const char *key, const char *value)
{
    return st->ops->meta_insert(st, key, value);
}

enum ts_rc ts_store_user_create(struct ts_store *st, const struct ts_user *u, const char *hash)
{
    return st->ops->user_create(st, u, hash);
}

enum ts_rc ts_store_user_get(struct ts_store *st, const char *id, struct ts_user **out)
{
    return st->ops->user_get(st, id, out);
}

enum ts_rc ts_store_user_get_by_email(struct ts_store *st, const char *email, struct ts_user **out,
                                      char **out_hash)
{
    return st->ops->user_get_by_email(st, email, out, out_hash);
}

enum ts_rc ts_store_user_update(struct ts_store *st, const struct ts_user *u,
                                int64_t expected_updated_at)
{
    return changed(st, st->ops->user_update(st, u, expected_updated_at));
}

enum ts_rc ts_store_user_delete(struct ts_store *st, const char *id)
{
    return changed(st, st->ops->user_delete(st, id));
}

enum ts_rc ts_store_user_list(struct ts_store *st, int64_t offset, int64_t limit,
                              const char *filter, struct ts_user ***out, size_t *out_n,
                              int64_t *total)
{
    return st->ops->user_list(st, offset, limit, filter, out, out_n, total);
}

enum ts_rc ts_store_password_get(struct ts_store *st, const char *user_id, char **out_hash)
{
    return st->ops->password_get(st, user_id, out_hash);
}

enum ts_rc ts_store_password_set(struct ts_store *st, const char *user_id, const char *hash,
                                 const char *expect_old, bool revoke, const char *keep_session,
                                 int64_t now)
{
    return changed(st,
                   st->ops->password_set(st, user_id, hash, expect_old, revoke, keep_session, now));
}

enum ts_rc ts_store_session_create(struct ts_store *st, const struct ts_session_new *s,
                                   char session_id[TS_STORE_ID_LEN + 1])
{
    return changed(st, st->ops->session_create(st, s, session_id));
}

enum ts_rc ts_store_session_user(struct ts_store *st, const char *session_id, const char *user_id,
                                 struct ts_user **out)
{
    return st->ops->session_user(st, session_id, user_id, out);
}

enum ts_rc ts_store_session_delete(struct ts_store *st, const char *session_id)
{
    return changed(st, st->ops->session_delete(st, session_id));
}

enum ts_rc ts_store_sessions_delete_for_user(struct ts_store *st, const char *user_id,
                                             const char *except_session, int64_t *deleted)
{
    return changed(st, st->ops->sessions_delete_for_user(st, user_id, except_session, deleted));
}

enum ts_rc ts_store_refresh_rotate(struct ts_store *st, const struct ts_refresh_request *req,
                                   struct ts_refresh_result *out)
{
    enum ts_rc rc = st->ops->refresh_rotate(st, req, out);
    /* Only a detected reuse changes what readers see (its session is gone); a plain
     * rotation does not, and must not empty caches thousands of times a second. */
    if (rc == TS_OK && out->outcome == TS_REFRESH_ALREADY_USED)
        ts__store_bump_epoch(st);
    return rc;
}

enum ts_rc ts_store_signing_keys_list(struct ts_store *st, struct ts_signing_key_row **out,
                                      size_t *out_n)
{
    return st->ops->signing_keys_list(st, out, out_n);
}

enum ts_rc ts_store_signing_key_insert(struct ts_store *st, const struct ts_signing_key_row *row)
{
    return st->ops->signing_key_insert(st, row);
}

enum ts_rc ts_store_signing_key_promote(struct ts_store *st, const char *kid, int64_t now,
                                        int64_t drop_before)
{
    return st->ops->signing_key_promote(st, kid, now, drop_before);
}

void ts_store_audit(struct ts_store *st, const char *event, const char *actor, const char *target,
                    const char *ip, const char *meta_json)
{
    st->ops->audit(st, event, actor, target, ip, meta_json);
}

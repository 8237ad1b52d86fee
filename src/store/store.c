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

enum ts_rc ts_store_signing_key_reseal(struct ts_store *st, const char *kid, const char *expected,
                                       const char *replacement)
{
    return st->ops->signing_key_reseal(st, kid, expected, replacement);
}

void ts_store_audit(struct ts_store *st, const char *event, const char *actor, const char *target,
                    const char *ip, const char *meta_json)
{
    st->ops->audit(st, event, actor, target, ip, meta_json);
}

/* ---- counters (store.h): argument checks and the arithmetic both backends share ---- */

/* Strict UTF-8 (no overlong forms, surrogates or code points past U+10FFFF): PostgreSQL's
 * text refuses anything else, and SQLite must accept exactly the same keys. */
static bool utf8_valid(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t len;
        uint32_t cp, min;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            len = 2, cp = c & 0x1f, min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            len = 3, cp = c & 0x0f, min = 0x800;
        } else if ((c & 0xf8) == 0xf0) {
            len = 4, cp = c & 0x07, min = 0x10000;
        } else {
            return false;
        }
        if (n - i < len)
            return false;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += len;
    }
    return true;
}

/* A key store.h accepts: 1 to TS_STORE_COUNTER_KEY_MAX bytes of UTF-8 (so no NUL). */
static bool key_valid(const char *key)
{
    if (!key)
        return false;
    size_t n = strnlen(key, TS_STORE_COUNTER_KEY_MAX + 1);
    return n >= 1 && n <= TS_STORE_COUNTER_KEY_MAX && utf8_valid((const unsigned char *)key, n);
}

static bool time_valid(int64_t now)
{
    return now >= 0 && now <= TS_STORE_COUNTER_TIME_MAX;
}

/* capacity * refill_us, the rule's "span": how long an empty bucket takes to fill. 0 when
 * the rule is out of range. */
static int64_t bucket_span(const struct ts_bucket_rule *rule)
{
    if (!rule || rule->capacity < 1 || rule->refill_us < 1 ||
        rule->refill_us > TS_STORE_COUNTER_SPAN_MAX / (int64_t)rule->capacity)
        return 0;
    return (int64_t)rule->capacity * rule->refill_us;
}

/* How much of the span the bucket lacks at now (0: full). Clamped to the span, so a bucket
 * left emptier by a larger rule, or by a node whose clock runs ahead, is at worst empty. */
static int64_t bucket_deficit(int64_t span, int64_t full_at, int64_t now)
{
    int64_t d = full_at - now;
    return d < 0 ? 0 : d > span ? span : d;
}

bool ts__bucket_decide(const struct ts_bucket_rule *rule, int64_t now, uint32_t cost, bool found,
                       int64_t full_at, int64_t *new_full_at)
{
    int64_t span = bucket_span(rule);
    int64_t need = (int64_t)cost * rule->refill_us;
    int64_t deficit = found ? bucket_deficit(span, full_at, now) : 0;
    bool allowed = deficit + need <= span;
    /* Denied, it still stores the clamp (never emptier than empty), so that the wait it
     * reports is the wait there will be. */
    *new_full_at = now + deficit + (allowed ? need : 0);
    return allowed;
}

void ts__bucket_report(const struct ts_bucket_rule *rule, int64_t now, uint32_t cost, bool allowed,
                       int64_t full_at, struct ts_bucket_result *out)
{
    int64_t span = bucket_span(rule);
    int64_t deficit = bucket_deficit(span, full_at, now);
    out->allowed = allowed;
    out->remaining = (uint32_t)((span - deficit) / rule->refill_us);
    /* Denied: the wait until the deficit has shrunk enough for cost more tokens. */
    out->retry_after_us = allowed ? 0 : deficit + (int64_t)cost * rule->refill_us - span;
}

bool ts__counter_decide(bool found, struct ts__counter_row *row, int64_t delta, int64_t window_us,
                        int64_t now, int64_t limit)
{
    bool expired = !found || now >= row->window_start + window_us;
    int64_t base = expired ? 0 : row->value;
    int64_t start = expired ? now : row->window_start;
    if (limit > 0 && delta > 0 && base + delta > limit)
        return false;
    int64_t v = base + delta;
    row->value = v < 0 ? 0 : v > TS_STORE_COUNTER_VALUE_MAX ? TS_STORE_COUNTER_VALUE_MAX : v;
    row->window_start = start;
    row->window_end = start + window_us;
    return true;
}

void ts__counter_report(bool allowed, int64_t value, int64_t window_start, int64_t window_us,
                        int64_t now, struct ts_counter_result *out)
{
    out->allowed = allowed;
    out->value = value;
    out->window_ends_us = window_start + window_us;
    /* A refusal happens only inside a live window (store.h), so this is > 0. */
    out->retry_after_us = allowed ? 0 : out->window_ends_us - now;
}

enum ts_rc ts_store_bucket_take(struct ts_store *st, const char *key,
                                const struct ts_bucket_rule *rule, int64_t now_us, uint32_t cost,
                                struct ts_bucket_result *out)
{
    if (!key_valid(key) || bucket_span(rule) == 0 || !time_valid(now_us) || cost > rule->capacity)
        return TS_E_INVALID;
    /* Not a user or session change: no epoch bump. */
    return st->ops->bucket_take(st, key, rule, now_us, cost, out);
}

enum ts_rc ts_store_counter_add(struct ts_store *st, const char *key, int64_t delta,
                                int64_t window_us, int64_t now_us, int64_t limit,
                                struct ts_counter_result *out)
{
    if (!key_valid(key) || window_us < 1 || window_us > TS_STORE_COUNTER_SPAN_MAX ||
        !time_valid(now_us) || delta < -TS_STORE_COUNTER_DELTA_MAX ||
        delta > TS_STORE_COUNTER_DELTA_MAX || (limit > 0 && delta > limit))
        return TS_E_INVALID;
    return st->ops->counter_add(st, key, delta, window_us, now_us, limit, out);
}

enum ts_rc ts_store_counter_get(struct ts_store *st, const char *key, int64_t now_us,
                                struct ts_counter_result *out)
{
    if (!key_valid(key) || !time_valid(now_us))
        return TS_E_INVALID;
    bool found = false;
    struct ts__counter_row row = {0};
    enum ts_rc rc = st->ops->counter_read(st, key, &found, &row);
    if (rc)
        return rc;
    bool live = found && now_us < row.window_end;
    *out = (struct ts_counter_result){.allowed = true,
                                      .value = live ? row.value : 0,
                                      .window_ends_us = live ? row.window_end : 0};
    return TS_OK;
}

enum ts_rc ts_store_counter_reset(struct ts_store *st, const char *key)
{
    if (!key_valid(key))
        return TS_E_INVALID;
    return st->ops->counter_reset(st, key);
}

enum ts_rc ts_store_counters_sweep(struct ts_store *st, int64_t now_us, int64_t *deleted)
{
    if (!time_valid(now_us))
        return TS_E_INVALID;
    return st->ops->counters_sweep(st, now_us - TS_STORE_COUNTER_SWEEP_GRACE_US, deleted);
}

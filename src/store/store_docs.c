/*
 * store_docs.c - the engine-independent half of the native model (store.h, "the native
 * model"): argument checks, the index term keys both backends store, and the frees.
 * Nothing here knows SQL; each operation is forwarded to the backend.
 */
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store_int.h"

#define MAX_TERMS 8
#define MAX_PAGE 1000

static bool is_users(const char *collection)
{
    return collection && strcmp(collection, "users") == 0;
}

static bool limit_ok(int64_t limit)
{
    return limit >= 1 && limit <= MAX_PAGE;
}

/* Passes rc through, bumping the epoch when a change was committed. */
static enum ts_rc changed(struct ts_store *st, enum ts_rc rc)
{
    if (rc == TS_OK)
        ts__store_bump_epoch(st);
    return rc;
}

const char *ts__secret_kind_text(enum ts_secret_kind k)
{
    return k == TS_SECRET_KEY ? "key" : "token";
}

enum ts_secret_kind ts__secret_kind_from_text(const char *t)
{
    return t && strcmp(t, "key") == 0 ? TS_SECRET_KEY : TS_SECRET_TOKEN;
}

/* ---- term keys ---- */

bool ts_store_index_terms_valid(const json_t *terms)
{
    if (!json_is_array(terms) || json_array_size(terms) < 1 || json_array_size(terms) > MAX_TERMS)
        return false;
    size_t i;
    const json_t *t;
    json_array_foreach(terms, i, t)
    {
        const char *p = json_string_value(t);
        if (!p || strncmp(p, "data.", 5) != 0)
            return false;
        /* segments of 1..64 bytes of [A-Za-z0-9_-] */
        const char *seg = p + 5;
        for (;;) {
            size_t n =
                strspn(seg, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-");
            if (n < 1 || n > 64)
                return false;
            if (seg[n] == '\0')
                break;
            if (seg[n] != '.')
                return false;
            seg += n + 1;
        }
    }
    return true;
}

/* The text a scalar is indexed under; false for values that are not indexed. */
static bool scalar_text(const json_t *v, char *buf, size_t cap, const char **out)
{
    switch (json_typeof(v)) {
    case JSON_STRING:
        *out = json_string_value(v);
        return true;
    case JSON_INTEGER:
        snprintf(buf, cap, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        *out = buf;
        return true;
    case JSON_REAL: {
        double d = json_real_value(v);
        if (!isfinite(d))
            return false;
        /* integral reals index as integers, so 5.0 and 5 are the same term */
        if (d == floor(d) && fabs(d) < 9.0e15)
            snprintf(buf, cap, "%lld", (long long)d);
        else
            snprintf(buf, cap, "%.17g", d);
        *out = buf;
        return true;
    }
    case JSON_TRUE:
        *out = "true";
        return true;
    case JSON_FALSE:
        *out = "false";
        return true;
    default:
        return false;
    }
}

static char *pack_key(json_t *texts)
{
    char *key = json_dumps(texts, JSON_COMPACT);
    json_decref(texts);
    if (!key) /* jansson fails only for lack of memory here */
        abort();
    return key;
}

char *ts_store_index_key(const json_t *values)
{
    if (!json_is_array(values) || json_array_size(values) < 1 ||
        json_array_size(values) > MAX_TERMS)
        return NULL;
    json_t *texts = json_array();
    size_t i;
    const json_t *v;
    json_array_foreach(values, i, v)
    {
        char buf[64];
        const char *t;
        if (!scalar_text(v, buf, sizeof(buf), &t)) {
            json_decref(texts);
            return NULL;
        }
        json_array_append_new(texts, json_string(t));
    }
    return pack_key(texts);
}

/* The value at path "data.a.b" inside the document's data object, or NULL. */
static const json_t *value_at(const json_t *data, const char *path)
{
    const json_t *cur = data;
    const char *seg = path + 5; /* after "data." */
    char name[65];
    while (cur) {
        size_t n = strcspn(seg, ".");
        if (n == 0 || n >= sizeof(name) || !json_is_object(cur))
            return NULL;
        memcpy(name, seg, n);
        name[n] = '\0';
        cur = json_object_get(cur, name);
        if (seg[n] == '\0')
            return cur;
        seg += n + 1;
    }
    return NULL;
}

char *ts_store_index_key_of(const json_t *terms, const json_t *data)
{
    if (!ts_store_index_terms_valid(terms) || !json_is_object(data))
        return NULL;
    json_t *values = json_array();
    size_t i;
    const json_t *t;
    json_array_foreach(terms, i, t)
    {
        const json_t *v = value_at(data, json_string_value(t));
        if (!v) {
            json_decref(values);
            return NULL;
        }
        json_array_append_new(values, json_deep_copy(v));
    }
    char *key = ts_store_index_key(values);
    json_decref(values);
    return key;
}

/* ---- frees ---- */

void ts_collection_infos_free(struct ts_collection_info *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(list[i].name);
    free(list);
}

void ts_index_defs_free(struct ts_index_def *list, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(list[i].name);
        json_decref(list[i].terms);
    }
    free(list);
}

void ts_doc_free(struct ts_doc *d)
{
    if (!d)
        return;
    free(d->collection);
    free(d->id);
    json_decref(d->data);
    free(d);
}

void ts_doc_list_free(struct ts_doc **list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        ts_doc_free(list[i]);
    free(list);
}

void ts_strings_free(char **list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(list[i]);
    free(list);
}

void ts_credential_infos_free(struct ts_credential_info *list, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(list[i].collection);
        free(list[i].id);
        free(list[i].strategy);
    }
    free(list);
}

void ts_secret_row_free(struct ts_secret_row *r)
{
    if (!r)
        return;
    free(r->identity_collection);
    free(r->identity_id);
    free(r->role);
    free(r->origin);
    free(r->description);
    json_decref(r->data);
    json_decref(r->meta);
    free(r);
}

void ts_secret_rows_free(struct ts_secret_row **list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        ts_secret_row_free(list[i]);
    free(list);
}

void ts_session_infos_free(struct ts_session_info *list, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(list[i].aal);
        free(list[i].ip);
        free(list[i].user_agent);
    }
    free(list);
}

/* ---- forwarders ---- */

enum ts_rc ts_store_collection_create(struct ts_store *st, const char *name, int64_t now)
{
    if (!name || !*name)
        return TS_E_INVALID;
    if (is_users(name))
        return TS_E_CONFLICT;
    return changed(st, st->ops->collection_create(st, name, now));
}

enum ts_rc ts_store_collection_get(struct ts_store *st, const char *name,
                                   struct ts_collection_info *out)
{
    if (is_users(name))
        return TS_E_INVALID;
    return st->ops->collection_get(st, name, out);
}

enum ts_rc ts_store_collection_list(struct ts_store *st, const char *after, int64_t limit,
                                    struct ts_collection_info **out, size_t *out_n)
{
    if (!limit_ok(limit))
        return TS_E_INVALID;
    return st->ops->collection_list(st, after, limit, out, out_n);
}

enum ts_rc ts_store_collection_delete(struct ts_store *st, const char *name)
{
    if (is_users(name))
        return TS_E_INVALID;
    return changed(st, st->ops->collection_delete(st, name));
}

enum ts_rc ts_store_index_create(struct ts_store *st, const char *collection,
                                 const struct ts_index_def *def, int64_t now)
{
    if (is_users(collection) || !def || !def->name || !ts_store_index_terms_valid(def->terms))
        return TS_E_INVALID;
    return changed(st, st->ops->index_create(st, collection, def, now));
}

enum ts_rc ts_store_index_list(struct ts_store *st, const char *collection,
                               struct ts_index_def **out, size_t *out_n)
{
    if (is_users(collection))
        return TS_E_INVALID;
    return st->ops->index_list(st, collection, out, out_n);
}

enum ts_rc ts_store_index_get(struct ts_store *st, const char *collection, const char *name,
                              struct ts_index_def *out)
{
    if (is_users(collection))
        return TS_E_INVALID;
    return st->ops->index_get(st, collection, name, out);
}

enum ts_rc ts_store_index_delete(struct ts_store *st, const char *collection, const char *name)
{
    if (is_users(collection))
        return TS_E_INVALID;
    return changed(st, st->ops->index_delete(st, collection, name));
}

enum ts_rc ts_store_doc_write(struct ts_store *st, const struct ts_doc_write *w,
                              struct ts_doc **out)
{
    if (!w || is_users(w->collection) || !w->id || !json_is_object(w->data))
        return TS_E_INVALID;
    return changed(st, st->ops->doc_write(st, w, out));
}

enum ts_rc ts_store_doc_get(struct ts_store *st, const char *collection, const char *id,
                            int64_t now, struct ts_doc **out)
{
    if (is_users(collection))
        return TS_E_INVALID;
    return st->ops->doc_get(st, collection, id, now, out);
}

enum ts_rc ts_store_doc_delete(struct ts_store *st, const char *collection, const char *id,
                               int64_t now)
{
    if (is_users(collection))
        return TS_E_INVALID;
    enum ts_rc rc = st->ops->doc_delete(st, collection, id, now);
    /* an expired document is deleted too (NOT_FOUND): tokens bound to it may have gone */
    ts__store_bump_epoch(st);
    return rc;
}

enum ts_rc ts_store_doc_list(struct ts_store *st, const char *collection, const char *after,
                             int64_t limit, int64_t now, struct ts_doc ***out, size_t *out_n)
{
    if (is_users(collection) || !limit_ok(limit))
        return TS_E_INVALID;
    return st->ops->doc_list(st, collection, after, limit, now, out, out_n);
}

enum ts_rc ts_store_index_lookup(struct ts_store *st, const char *collection, const char *index,
                                 const char *key, const char *after, int64_t limit, int64_t now,
                                 struct ts_doc ***out, size_t *out_n)
{
    if (is_users(collection) || !key || !limit_ok(limit))
        return TS_E_INVALID;
    return st->ops->index_lookup(st, collection, index, key, after, limit, now, out, out_n);
}

enum ts_rc ts_store_user_page(struct ts_store *st, const char *after, int64_t limit,
                              struct ts_user ***out, size_t *out_n)
{
    if (!limit_ok(limit) || (after && !ts_uuid_valid(after)))
        return TS_E_INVALID;
    return st->ops->user_page(st, after, limit, out, out_n);
}

enum ts_rc ts_store_identity_collections(struct ts_store *st, const char *id, int64_t now,
                                         char ***out, size_t *out_n)
{
    return st->ops->identity_collections(st, id, now, out, out_n);
}

enum ts_rc ts_store_credential_get(struct ts_store *st, const char *collection, const char *id,
                                   int64_t now, char **out_hash)
{
    return st->ops->credential_get(st, collection, id, now, out_hash);
}

enum ts_rc ts_store_credential_set(struct ts_store *st, const char *collection, const char *id,
                                   const char *hash, const char *expect_old, int64_t now)
{
    if (!hash)
        return TS_E_INVALID;
    return changed(st, st->ops->credential_set(st, collection, id, hash, expect_old, now));
}

enum ts_rc ts_store_credential_delete(struct ts_store *st, const char *collection, const char *id,
                                      bool revoke, int64_t *revoked)
{
    return changed(st, st->ops->credential_delete(st, collection, id, revoke, revoked));
}

enum ts_rc ts_store_credential_list(struct ts_store *st, const char *collection,
                                    const char *after_collection, const char *after_id,
                                    int64_t limit, struct ts_credential_info **out, size_t *out_n)
{
    if (!limit_ok(limit) || (!after_collection) != (!after_id))
        return TS_E_INVALID;
    return st->ops->credential_list(st, collection, after_collection, after_id, limit, out, out_n);
}

enum ts_rc ts_store_secret_create(struct ts_store *st, const struct ts_secret_row *row,
                                  const uint8_t hash[TS_SECRET_HASH_LEN], int64_t now)
{
    if (!row || !row->origin || (row->kind == TS_SECRET_TOKEN && !row->identity_id) ||
        (!row->identity_collection) != (!row->identity_id) ||
        (row->kind == TS_SECRET_KEY && !row->role) ||
        (row->kind == TS_SECRET_TOKEN && row->expires_at <= 0))
        return TS_E_INVALID;
    return st->ops->secret_create(st, row, hash, now);
}

enum ts_rc ts_store_secret_check(struct ts_store *st, const uint8_t hash[TS_SECRET_HASH_LEN],
                                 int64_t now, enum ts_secret_state *state,
                                 struct ts_secret_row **out, int64_t *valid_until)
{
    return st->ops->secret_check(st, hash, now, state, out, valid_until);
}

enum ts_rc ts_store_secret_get(struct ts_store *st, const char *id, int64_t now,
                               struct ts_secret_row **out)
{
    return st->ops->secret_get(st, id, now, out);
}

enum ts_rc ts_store_secret_list(struct ts_store *st, const struct ts_secret_filter *f,
                                struct ts_secret_row ***out, size_t *out_n)
{
    if (!f || !limit_ok(f->limit) || (!f->identity_collection) != (!f->identity_id))
        return TS_E_INVALID;
    return st->ops->secret_list(st, f, out, out_n);
}

enum ts_rc ts_store_secret_delete(struct ts_store *st, enum ts_secret_kind kind, const char *id)
{
    return changed(st, st->ops->secret_delete(st, kind, id));
}

enum ts_rc ts_store_secrets_delete_for_identity(struct ts_store *st, enum ts_secret_kind kind,
                                                const char *collection, const char *id,
                                                const char *except_id, int64_t *deleted)
{
    if (!collection || !id)
        return TS_E_INVALID;
    return changed(
        st, st->ops->secrets_delete_for_identity(st, kind, collection, id, except_id, deleted));
}

enum ts_rc ts_store_session_list(struct ts_store *st, const char *user_id,
                                 struct ts_session_info **out, size_t *out_n)
{
    return st->ops->session_list(st, user_id, out, out_n);
}

enum ts_rc ts_store_sweep(struct ts_store *st, int64_t now, int64_t refresh_before, int64_t batch,
                          struct ts_sweep_counts *out)
{
    if (batch < 1 || batch > 100000 || !out)
        return TS_E_INVALID;
    memset(out, 0, sizeof(*out));
    enum ts_rc rc = st->ops->sweep(st, now, refresh_before, batch, out);
    if (out->tokens || out->keys || out->documents || out->sessions || out->refresh_tokens ||
        out->exchanges)
        ts__store_bump_epoch(st);
    return rc;
}

enum ts_rc ts_store_sweep_pass(struct ts_store *st, int64_t now, int64_t refresh_before,
                               int64_t batch, int64_t pause_us, const _Atomic bool *stop,
                               struct ts_sweep_counts *total)
{
    memset(total, 0, sizeof(*total));
    enum ts_rc rc = TS_OK;
    for (;;) {
        if (stop && atomic_load(stop))
            return TS_OK;
        struct ts_sweep_counts c;
        rc = ts_store_sweep(st, now, refresh_before, batch, &c);
        if (rc)
            return rc;
        total->tokens += c.tokens;
        total->keys += c.keys;
        total->documents += c.documents;
        total->sessions += c.sessions;
        total->refresh_tokens += c.refresh_tokens;
        total->exchanges += c.exchanges;
        if (c.tokens < batch && c.keys < batch && c.documents < batch && c.sessions < batch &&
            c.refresh_tokens < batch && c.exchanges < batch)
            break;
        if (pause_us > 0) {
            struct timespec ts = {pause_us / 1000000, (pause_us % 1000000) * 1000};
            nanosleep(&ts, NULL);
        }
    }
    return ts_store_counters_sweep(st, now, &total->counters);
}

/* ---- external identities ---- */

void ts_access_provider_free(struct ts_access_provider *p)
{
    if (!p)
        return;
    free(p->name);
    free(p->issuer);
    json_decref(p->config);
    free(p);
}

void ts_access_providers_free(struct ts_access_provider **list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        ts_access_provider_free(list[i]);
    free(list);
}

void ts_external_link_free(struct ts_external_link *l)
{
    if (!l)
        return;
    free(l->issuer);
    free(l->subject);
    free(l->collection);
    free(l->id);
    json_decref(l->claims);
    free(l);
}

void ts_external_links_free(struct ts_external_link **list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        ts_external_link_free(list[i]);
    free(list);
}

void ts_exchange_row_free(struct ts_exchange_row *r)
{
    if (!r)
        return;
    free(r->provider);
    free(r->subject);
    free(r->collection);
    free(r->identity_id);
    free(r->token_id);
    free(r->token_type);
    json_decref(r->meta);
    free(r);
}

void ts_exchange_rows_free(struct ts_exchange_row **list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        ts_exchange_row_free(list[i]);
    free(list);
}

static bool provider_ok(const struct ts_access_provider *p)
{
    return p && p->name && *p->name && p->issuer && *p->issuer && json_is_object(p->config);
}

enum ts_rc ts_store_provider_create(struct ts_store *st, const struct ts_access_provider *p)
{
    if (!provider_ok(p))
        return TS_E_INVALID;
    return changed(st, st->ops->provider_create(st, p));
}

enum ts_rc ts_store_provider_update(struct ts_store *st, const struct ts_access_provider *p)
{
    if (!provider_ok(p))
        return TS_E_INVALID;
    return changed(st, st->ops->provider_update(st, p));
}

enum ts_rc ts_store_provider_get(struct ts_store *st, const char *name,
                                 struct ts_access_provider **out)
{
    if (!name)
        return TS_E_INVALID;
    return st->ops->provider_get(st, name, out);
}

enum ts_rc ts_store_provider_list(struct ts_store *st, struct ts_access_provider ***out,
                                  size_t *out_n)
{
    return st->ops->provider_list(st, out, out_n);
}

enum ts_rc ts_store_provider_delete(struct ts_store *st, const char *name)
{
    if (!name)
        return TS_E_INVALID;
    return changed(st, st->ops->provider_delete(st, name));
}

enum ts_rc ts_store_external_link(struct ts_store *st, const char *issuer, const char *subject,
                                  const json_t *claims, const struct ts_external_create *create,
                                  int64_t now, struct ts_external_link **out, bool *created)
{
    if (!issuer || !*issuer || !subject || !*subject || !out || !created ||
        (claims && !json_is_object(claims)))
        return TS_E_INVALID;
    if (create) {
        bool users = is_users(create->collection);
        if (!create->collection || (users && !create->user) ||
            (!users && !json_is_object(create->data)))
            return TS_E_INVALID;
    }
    *created = false;
    enum ts_rc rc = st->ops->external_link(st, issuer, subject, claims, create, now, out, created);
    if (rc == TS_OK && *created)
        ts__store_bump_epoch(st);
    return rc;
}

enum ts_rc ts_store_external_list(struct ts_store *st, const char *collection, const char *id,
                                  struct ts_external_link ***out, size_t *out_n)
{
    if (!collection || !id)
        return TS_E_INVALID;
    return st->ops->external_list(st, collection, id, out, out_n);
}

enum ts_rc ts_store_exchange_record(struct ts_store *st, const struct ts_exchange_row *row)
{
    if (!row || !row->provider || !row->subject || !row->collection || !row->identity_id ||
        !row->token_type || row->expires_at <= 0)
        return TS_E_INVALID;
    return st->ops->exchange_record(st, row);
}

enum ts_rc ts_store_exchange_list(struct ts_store *st, const char *collection, const char *id,
                                  const char *after, int64_t limit, int64_t now,
                                  struct ts_exchange_row ***out, size_t *out_n)
{
    if (!limit_ok(limit) || (!collection) != (!id))
        return TS_E_INVALID;
    return st->ops->exchange_list(st, collection, id, after, limit, now, out, out_n);
}

/* ---- authorization objects ---- */

void ts_authz_object_free(struct ts_authz_object *o)
{
    if (!o)
        return;
    free(o->name);
    json_decref(o->config);
    free(o);
}

void ts_authz_objects_free(struct ts_authz_object **list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        ts_authz_object_free(list[i]);
    free(list);
}

static bool authz_kind_ok(enum ts_authz_kind kind)
{
    return kind == TS_AUTHZ_ROLE || kind == TS_AUTHZ_PROFILE;
}

static bool authz_name_ok(const char *name)
{
    return name && *name && strlen(name) <= TS_STORE_NAME_MAX;
}

static bool authz_ok(const struct ts_authz_object *o)
{
    return o && authz_kind_ok(o->kind) && authz_name_ok(o->name) && json_is_object(o->config);
}

enum ts_rc ts_store_authz_create(struct ts_store *st, const struct ts_authz_object *o)
{
    if (!authz_ok(o))
        return TS_E_INVALID;
    return changed(st, st->ops->authz_create(st, o));
}

enum ts_rc ts_store_authz_update(struct ts_store *st, const struct ts_authz_object *o)
{
    if (!authz_ok(o))
        return TS_E_INVALID;
    return changed(st, st->ops->authz_update(st, o));
}

enum ts_rc ts_store_authz_get(struct ts_store *st, enum ts_authz_kind kind, const char *name,
                              struct ts_authz_object **out)
{
    if (!authz_kind_ok(kind) || !authz_name_ok(name) || !out)
        return TS_E_INVALID;
    return st->ops->authz_get(st, kind, name, out);
}

enum ts_rc ts_store_authz_list(struct ts_store *st, enum ts_authz_kind kind,
                               struct ts_authz_object ***out, size_t *out_n)
{
    if (!authz_kind_ok(kind) || !out || !out_n)
        return TS_E_INVALID;
    return st->ops->authz_list(st, kind, out, out_n);
}

enum ts_rc ts_store_authz_delete(struct ts_store *st, enum ts_authz_kind kind, const char *name)
{
    if (!authz_kind_ok(kind) || !authz_name_ok(name))
        return TS_E_INVALID;
    return changed(st, st->ops->authz_delete(st, kind, name));
}

enum ts_rc ts_store_authz_version(struct ts_store *st, int64_t *out)
{
    if (!out)
        return TS_E_INVALID;
    return st->ops->authz_version(st, out);
}

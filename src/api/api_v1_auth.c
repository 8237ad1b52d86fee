/*
 * api_v1_auth.c - /v1 login, identify, logout, tokens, keys, credentials, the caller and the
 * sessions ledger (docs/API.md, "Native API").
 *
 * Login and identify verify the password on the hash pool. An unknown identity, one without
 * a password, an expired or banned one and a wrong password all cost one argon2id
 * verification and give the same answer, so neither timing nor wording tells them apart.
 */
#include <stdlib.h>
#include <string.h>

#include "api_v1_int.h"

#define MAX_DATA_BYTES 4096 /* token and key data, compact JSON */

static void invalid_credentials(struct ts_http_req *req)
{
    v1_error(req, 400, "invalid_credentials", "Invalid login credentials");
}

/* data member of body: absent/null -> NULL, an object of bounded size, else 400. */
static bool small_data(struct ts_http_req *req, json_t *body, json_t **out)
{
    json_t *d = json_object_get(body, "data");
    *out = NULL;
    if (!d || json_is_null(d))
        return true;
    char *text = json_is_object(d) ? json_dumps(d, JSON_COMPACT) : NULL;
    size_t n = text ? strlen(text) : 0;
    free(text);
    if (!json_is_object(d) || n > MAX_DATA_BYTES) {
        v1_error(req, 400, "invalid_request", "data must be an object of at most 4 KiB");
        return false;
    }
    *out = d;
    return true;
}

/* An identity reference {collection, id} member; 400 when malformed. */
/* Splits "collection/id" into the arena; false when it is not of that shape. */
static bool split_ref(struct ts_http_req *req, const char *ref, const char **coll, const char **id)
{
    const char *slash = ref ? strchr(ref, '/') : NULL;
    if (!slash)
        return false;
    *coll = ts_arena_strndup(ts_http_arena(req), ref, (size_t)(slash - ref));
    *id = slash + 1;
    return true;
}

/* An identity reference member: {"collection":..,"id":..} or "collection/id"; 400 when
 * malformed. */
static bool identity_ref(struct ts_http_req *req, const json_t *v, const char **coll,
                         const char **id)
{
    bool ok;
    if (json_is_string(v)) {
        ok = split_ref(req, json_string_value(v), coll, id);
    } else {
        *coll = json_string_value(json_object_get(v, "collection"));
        *id = json_string_value(json_object_get(v, "id"));
        ok = json_is_object(v) && json_object_size(v) == 2;
    }
    if (!ok || !v1_name_ok(*coll) || !v1_doc_id_ok(*id)) {
        v1_error(req, 400, "invalid_request",
                 "identity must be {\"collection\":...,\"id\":...} or \"collection/id\"");
        return false;
    }
    return true;
}

/* ---- login and identify ---- */

struct login_work {
    struct ts_hash_job job; /* first: api_hash_job() hands back &work->job */
    bool identify;
    const char *collection;
    char *id;   /* the identity found (arena), NULL when none */
    char *hash; /* its password hash (heap, wiped at the end), NULL when none */
    bool unconfirmed;
    int64_t expires_at;
    json_t *data;
    struct ts_lockout lockout; /* the account's failure slot, held during the check */
};

static void free_login_hash(void *p)
{
    struct login_work *w = p;
    if (w->hash) {
        ts_wipe(w->hash, strlen(w->hash));
        free(w->hash);
    }
}

static void login_checked(struct ts_http_req *req)
{
    struct ts_api *api = ts_http_app(req);
    struct login_work *w = (struct login_work *)api_hash_job(req);
    api_lockout_settle(req, &w->lockout, w->job.rc, w->job.match && w->id);
    if (w->job.rc == TS_E_BUSY) {
        v1_fail(req, TS_E_BUSY, "login");
        return;
    }
    bool ok = w->job.rc == TS_OK && w->job.match && w->id;
    if (ok && w->job.needs_rehash && w->job.new_hash) {
        /* an imported bcrypt hash (or old parameters): replace it, unless it changed */
        enum ts_rc rc = ts_store_credential_set(api->store, w->collection, w->id, w->job.new_hash,
                                                w->hash, ts_now_us());
        if (rc && rc != TS_E_CONFLICT)
            ts_log_warn("login: rehash not stored: %s", ts_rc_name(rc));
    }
    if (w->identify) {
        api_json(req, 200, json_pack("{s:b}", "valid", ok));
        return;
    }
    if (!ok) {
        ts_store_audit(api->store, "login_failed", NULL, w->id, ts_http_client_ip(req), NULL);
        invalid_credentials(req);
        return;
    }
    if (w->unconfirmed) {
        v1_error(req, 400, "email_not_confirmed", "Email not confirmed");
        return;
    }
    ts_store_audit(api->store, "login", w->id, w->id, ts_http_client_ip(req), NULL);
    v1_issue_token(req, 200, w->collection, w->id, w->expires_at, w->data, "login");
}

/* The account a login names, for its limits and lockout (api_account_checks): the identity
 * found, else what the request named, so that unknown accounts are counted alike. */
static const char *login_account(struct ts_http_req *req, const struct login_work *w,
                                 const char *id, const char *index, const json_t *term)
{
    struct ts_arena *a = ts_http_arena(req);
    bool users = strcmp(w->collection, "users") == 0;
    if (w->id || id)
        return users ? ts_arena_sprintf(a, "user:%s", w->id ? w->id : id)
                     : ts_arena_sprintf(a, "doc:%s/%s", w->collection, w->id ? w->id : id);
    if (users && strcmp(index, "users_by_email") == 0 && json_is_string(term)) {
        const char *email = api_normalize_email(req, json_string_value(term));
        if (email)
            return ts_arena_sprintf(a, "email:%s", email);
    }
    char *t = json_dumps(term, JSON_ENCODE_ANY | JSON_COMPACT);
    const char *out = ts_arena_sprintf(a, "term:%s/%s/%s", w->collection, index, t ? t : "");
    free(t);
    return out;
}

/* Finds the identity of a users login; leaves w->id NULL when there is none usable. */
static enum ts_rc find_user(struct ts_http_req *req, struct login_work *w, const char *id,
                            const char *index, const json_t *term)
{
    struct ts_api *api = ts_http_app(req);
    struct ts_user *u = NULL;
    char *hash = NULL;
    enum ts_rc rc = TS_E_NOT_FOUND;
    if (id && ts_uuid_valid(id)) {
        rc = ts_store_user_get(api->store, id, &u);
        if (!rc) {
            rc = ts_store_password_get(api->store, id, &hash);
            if (rc == TS_E_NOT_FOUND)
                rc = TS_OK;
        }
    } else if (index && strcmp(index, "users_by_email") == 0 && json_is_string(term)) {
        char *email = api_normalize_email(req, json_string_value(term));
        if (email)
            rc = ts_store_user_get_by_email(api->store, email, &u, &hash);
    }
    if (rc == TS_E_NOT_FOUND)
        return TS_OK;
    if (rc)
        return rc;
    if (!u->deleted_at && u->banned_until <= ts_now_us() && hash) {
        w->id = ts_arena_strdup(ts_http_arena(req), u->id);
        w->hash = hash;
        w->unconfirmed = !api->cfg->mailer_autoconfirm && u->email && !u->email_confirmed_at;
    } else if (hash) {
        ts_wipe(hash, strlen(hash));
        free(hash);
    }
    ts_user_free(u);
    return TS_OK;
}

static enum ts_rc find_document(struct ts_http_req *req, struct login_work *w, const char *id,
                                const char *index, const json_t *term)
{
    struct ts_api *api = ts_http_app(req);
    int64_t now = ts_now_us();
    char *found = NULL;
    if (id) {
        found = ts_arena_strdup(ts_http_arena(req), id);
    } else {
        json_t *values = json_array();
        json_array_append_new(values, json_deep_copy(term));
        char *key = v1_name_ok(index) ? ts_store_index_key(values) : NULL;
        json_decref(values);
        if (!key)
            return TS_OK;
        struct ts_doc **list = NULL;
        size_t n = 0;
        enum ts_rc rc =
            ts_store_index_lookup(api->store, w->collection, index, key, NULL, 1, now, &list, &n);
        free(key);
        if (rc == TS_E_NOT_FOUND)
            return TS_OK;
        if (rc)
            return rc;
        if (n) /* Fauna's Login with a set uses its first document */
            found = ts_arena_strdup(ts_http_arena(req), list[0]->id);
        ts_doc_list_free(list, n);
    }
    if (!found)
        return TS_OK;
    enum ts_rc rc = ts_store_credential_get(api->store, w->collection, found, now, &w->hash);
    if (rc == TS_E_NOT_FOUND)
        return TS_OK;
    if (rc)
        return rc;
    w->id = found;
    return TS_OK;
}

static void login_or_identify(struct ts_http_req *req, bool identify)
{
    struct ts_arena *a = ts_http_arena(req);
    struct v1_caller c;
    if (!api_limit_address(req, TS_LIMIT_TOKEN) || !v1_caller(req, &c) ||
        (c.kind == V1_KEY && !api_limit_subject(req, TS_LIMIT_KEY, c.secret_id)))
        return;
    json_t *body = v1_body(req);
    static const char *const login_members[] = {"strategy", "collection", "id",   "index", "term",
                                                "password", "ttl",        "data", NULL};
    static const char *const identify_members[] = {"strategy", "collection", "id", "index",
                                                   "term",     "password",   NULL};
    if (!body || !v1_only(req, body, identify ? identify_members : login_members))
        return;
    struct login_work *w = ts_arena_calloc(a, sizeof(*w));
    ts_arena_defer(a, free_login_hash, w);
    w->identify = identify;
    bool bad = false;
    const char *strategy = api_str(body, "strategy", &bad);
    const char *coll = api_str(body, "collection", &bad);
    const char *id = api_str(body, "id", &bad);
    const char *index = api_str(body, "index", &bad);
    const char *password = api_str(body, "password", &bad);
    const json_t *term = json_object_get(body, "term");
    if (bad || !v1_name_ok(coll) || !password || (!id == !index) || (index && !term) ||
        (term && !index) || (id && !v1_doc_id_ok(id)) ||
        (term && !json_is_string(term) && !json_is_number(term) && !json_is_boolean(term))) {
        v1_error(req, 400, "invalid_request",
                 "Give collection, password, and either id or index and term");
        return;
    }
    if (strategy && strcmp(strategy, "password") != 0) {
        v1_error(req, 400, "invalid_request", "Unknown strategy (only \"password\" for now)");
        return;
    }
    int64_t now = ts_now_us();
    if (!identify &&
        (!v1_token_expiry(req, body, now, &w->expires_at) || !small_data(req, body, &w->data)))
        return;
    w->collection = coll;
    enum ts_rc rc = strcmp(coll, "users") == 0 ? find_user(req, w, id, index, term)
                                               : find_document(req, w, id, index, term);
    if (rc) {
        v1_fail(req, rc, "login lookup");
        return;
    }
    if (!api_account_checks(req, login_account(req, w, id, index, term), &w->lockout))
        return;
    w->job.op = TS_HASH_VERIFY;
    w->job.hash = w->hash; /* NULL: the worker spends a verification's time and fails */
    w->job.password = api_secret_copy(req, password);
    w->job.password_len = strlen(password);
    api_hash_async(req, &w->job, login_checked);
}

void v1_login(struct ts_http_req *req)
{
    login_or_identify(req, false);
}

void v1_identify(struct ts_http_req *req)
{
    login_or_identify(req, true);
}

/* ---- logout ---- */

/* /v1/me, /v1/me/sessions and /v1/logout: as the roles say (the default profile has them),
 * but never anonymous callers or keys without an identity or a built-in role (client keys
 * and keys of a defined role: they have no session of their own). */
static bool require_me(struct ts_http_req *req, struct v1_caller *c, enum v1_act act)
{
    if (!v1_require(req, c, act))
        return false;
    if (c->kind == V1_KEY && c->role == V1_ROLE_NONE && !c->has_identity) {
        v1_forbidden(req);
        return false;
    }
    return true;
}

void v1_logout(struct ts_http_req *req)
{
    struct ts_api *api = ts_http_app(req);
    struct v1_caller c;
    if (!require_me(req, &c, V1_ACT_AUTH_LOGOUT))
        return;
    size_t len;
    ts_http_body(req, &len);
    bool all = false;
    if (len) {
        json_t *body = v1_body(req);
        static const char *const allowed[] = {"all", NULL};
        if (!body || !v1_only(req, body, allowed))
            return;
        const json_t *v = json_object_get(body, "all");
        if (v && !json_is_boolean(v)) {
            v1_error(req, 400, "invalid_request", "all must be a boolean");
            return;
        }
        all = json_is_true(v);
    }
    int64_t revoked = 0;
    enum ts_rc rc = TS_OK;
    if (c.kind == V1_TOKEN) {
        if (all) {
            rc = ts_store_secrets_delete_for_identity(
                api->store, TS_SECRET_TOKEN, c.identity_collection, c.identity_id, NULL, &revoked);
        } else {
            rc = ts_store_secret_delete(api->store, TS_SECRET_TOKEN, c.secret_id);
            revoked = rc == TS_OK;
            if (rc == TS_E_NOT_FOUND) /* idempotent, as Fauna's Logout(false) */
                rc = TS_OK;
        }
    } else if (c.kind == V1_JWT_USER) {
        if (all) {
            int64_t tokens = 0;
            rc = ts_store_sessions_delete_for_user(api->store, c.identity_id, NULL, &revoked);
            if (!rc)
                rc = ts_store_secrets_delete_for_identity(api->store, TS_SECRET_TOKEN, "users",
                                                          c.identity_id, NULL, &tokens);
            revoked += tokens;
        } else {
            rc = ts_store_session_delete(api->store, c.session_id);
            revoked = rc == TS_OK;
            if (rc == TS_E_NOT_FOUND)
                rc = TS_OK;
        }
    } else {
        /* keys are never logged out (Fauna's Logout answers false for them) */
        api_json(req, 200, json_pack("{s:b, s:i}", "logged_out", 0, "revoked", 0));
        return;
    }
    if (rc) {
        v1_fail(req, rc, "logout");
        return;
    }
    ts_store_audit(api->store, all ? "logout_all" : "logout", c.identity_id, c.identity_id,
                   ts_http_client_ip(req), NULL);
    api_json(req, 200, json_pack("{s:b, s:I}", "logged_out", 1, "revoked", (json_int_t)revoked));
}

/* ---- tokens ---- */

void v1_tokens_create(struct ts_http_req *req)
{
    struct v1_caller c;
    if (!v1_require(req, &c, V1_ACT_TOKEN_CREATE))
        return;
    json_t *body = v1_body(req);
    static const char *const allowed[] = {"identity", "ttl", "data", "origin", "meta", NULL};
    if (!body || !v1_only(req, body, allowed))
        return;
    const char *coll, *id;
    json_t *data;
    int64_t expires_at;
    if (!identity_ref(req, json_object_get(body, "identity"), &coll, &id) ||
        !v1_token_expiry(req, body, ts_now_us(), &expires_at) || !small_data(req, body, &data))
        return;
    /* A service doing its own token exchange (seed 002's pattern) records where the token
     * came from: origin "exchange" and the caller's metadata (never a secret of theirs). */
    bool bad = false;
    const char *origin = api_str(body, "origin", &bad);
    json_t *meta = json_object_get(body, "meta");
    char *meta_text = json_is_object(meta) ? json_dumps(meta, JSON_COMPACT) : NULL;
    size_t meta_len = meta_text ? strlen(meta_text) : 0;
    free(meta_text);
    if (bad || (origin && strcmp(origin, "admin") != 0 && strcmp(origin, "exchange") != 0)) {
        v1_error(req, 400, "invalid_request", "origin must be \"admin\" or \"exchange\"");
        return;
    }
    if ((meta && !json_is_null(meta) && !json_is_object(meta)) || meta_len > MAX_DATA_BYTES) {
        v1_error(req, 400, "invalid_request", "meta must be an object of at most 4 KiB");
        return;
    }
    if (strcmp(coll, "users") == 0 && !ts_uuid_valid(id)) {
        v1_error(req, 404, "not_found", "No such identity");
        return;
    }
    v1_issue_token_meta(req, 201, coll, id, expires_at, data, origin ? origin : "admin",
                        json_is_object(meta) ? meta : NULL);
}

static void respond_secret_page(struct ts_http_req *req, struct ts_secret_row **list, size_t n,
                                int64_t size)
{
    json_t *data = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(data, v1_secret_json(list[i]));
    json_t *answer = json_pack("{s:o}", "data", data);
    if (n == (size_t)size)
        json_object_set_new(answer, "after", json_string(list[n - 1]->id));
    api_json(req, 200, answer);
}

static void secrets_list(struct ts_http_req *req, enum ts_secret_kind kind, enum v1_act need)
{
    struct ts_api *api = ts_http_app(req);
    struct v1_caller c;
    int64_t size;
    if (!v1_require(req, &c, need) || !v1_page_size(req, &size))
        return;
    struct ts_secret_filter f = {.kind = kind,
                                 .identity_collection = ts_http_query(req, "collection"),
                                 .identity_id = ts_http_query(req, "identity"),
                                 .after = ts_http_query(req, "after"),
                                 .limit = size,
                                 .now = ts_now_us()};
    /* ?identity=collection/id is the same as ?collection=..&identity=.. */
    if (!f.identity_collection && f.identity_id && strchr(f.identity_id, '/'))
        split_ref(req, f.identity_id, &f.identity_collection, &f.identity_id);
    if ((!f.identity_collection) != (!f.identity_id)) {
        v1_error(req, 400, "invalid_request", "Give both collection and identity, or neither");
        return;
    }
    struct ts_secret_row **list = NULL;
    size_t n = 0;
    enum ts_rc rc = ts_store_secret_list(api->store, &f, &list, &n);
    if (rc) {
        v1_fail(req, rc, "secret list");
        return;
    }
    respond_secret_page(req, list, n, size);
    ts_secret_rows_free(list, n);
}

static void secret_get(struct ts_http_req *req, enum ts_secret_kind kind, enum v1_act need)
{
    struct ts_api *api = ts_http_app(req);
    struct v1_caller c;
    if (!v1_require(req, &c, need))
        return;
    const char *id = ts_http_param(req, "id");
    struct ts_secret_row *r = NULL;
    enum ts_rc rc =
        ts_uuid_valid(id) ? ts_store_secret_get(api->store, id, ts_now_us(), &r) : TS_E_NOT_FOUND;
    if (!rc && r->kind != kind)
        rc = TS_E_NOT_FOUND;
    if (rc) {
        ts_secret_row_free(r);
        v1_fail(req, rc, "secret get");
        return;
    }
    api_json(req, 200, v1_secret_json(r));
    ts_secret_row_free(r);
}

static void secret_delete(struct ts_http_req *req, enum ts_secret_kind kind, enum v1_act need)
{
    struct ts_api *api = ts_http_app(req);
    struct v1_caller c;
    if (!v1_require(req, &c, need))
        return;
    const char *id = ts_http_param(req, "id");
    enum ts_rc rc =
        ts_uuid_valid(id) ? ts_store_secret_delete(api->store, kind, id) : TS_E_NOT_FOUND;
    if (rc) {
        v1_fail(req, rc, "secret delete");
        return;
    }
    ts_store_audit(api->store, kind == TS_SECRET_KEY ? "key_revoked" : "token_revoked",
                   c.secret_id[0] ? c.secret_id : NULL, id, ts_http_client_ip(req), NULL);
    ts_http_respond(req, 204, NULL, "", 0);
}

void v1_tokens_list(struct ts_http_req *req)
{
    secrets_list(req, TS_SECRET_TOKEN, V1_ACT_TOKEN_LIST);
}

void v1_token_get(struct ts_http_req *req)
{
    secret_get(req, TS_SECRET_TOKEN, V1_ACT_TOKEN_GET);
}

void v1_token_delete(struct ts_http_req *req)
{
    secret_delete(req, TS_SECRET_TOKEN, V1_ACT_TOKEN_DELETE);
}

/* ---- keys ---- */

static bool key_role_ok(const char *r)
{
    return r && (strcmp(r, "admin") == 0 || strcmp(r, "server") == 0 ||
                 strcmp(r, "server-readonly") == 0 || strcmp(r, "client") == 0);
}

void v1_keys_create(struct ts_http_req *req)
{
    struct ts_api *api = ts_http_app(req);
    struct v1_caller c;
    if (!v1_require(req, &c, V1_ACT_KEY_CREATE))
        return;
    json_t *body = v1_body(req);
    static const char *const allowed[] = {"role", "ttl", "description", "data", "identity", NULL};
    if (!body || !v1_only(req, body, allowed))
        return;
    bool bad = false;
    const char *role = api_str(body, "role", &bad);
    const char *description = api_str(body, "description", &bad);
    if (bad || !role || (!key_role_ok(role) && !v1_name_ok(role))) {
        v1_error(req, 400, "invalid_request",
                 "role must be admin, server, server-readonly, client or a defined role");
        return;
    }
    bool defined = false;
    if (!key_role_ok(role)) {
        if (!v1_role_defined(req, role, &defined))
            return;
        if (!defined) {
            v1_error(req, 400, "invalid_request", "No role has that name");
            return;
        }
    }
    if (description && strlen(description) > 256) {
        v1_error(req, 400, "invalid_request", "description is limited to 256 bytes");
        return;
    }
    int64_t now = ts_now_us(), expires_at = 0;
    const json_t *ttl = json_object_get(body, "ttl");
    json_t *data;
    if ((ttl && !json_is_null(ttl) && !v1_ttl(req, ttl, now, &expires_at)) ||
        !small_data(req, body, &data))
        return;
    const char *coll = NULL, *id = NULL;
    const json_t *ident = json_object_get(body, "identity");
    if (ident && !json_is_null(ident) && !identity_ref(req, ident, &coll, &id))
        return;
    struct ts_arena *a = ts_http_arena(req);
    char secret[V1_SECRET_LEN + 1];
    uint8_t hash[TS_SECRET_HASH_LEN];
    v1_secret_new(V1_SECRET_PREFIX_KEY, secret, hash);
    struct ts_secret_row row = {.kind = TS_SECRET_KEY,
                                .identity_collection = coll ? ts_arena_strdup(a, coll) : NULL,
                                .identity_id = id ? ts_arena_strdup(a, id) : NULL,
                                .role = ts_arena_strdup(a, role),
                                .origin = ts_arena_strdup(a, "admin"),
                                .description = description ? ts_arena_strdup(a, description) : NULL,
                                .data = data,
                                .created_at = now,
                                .expires_at = expires_at};
    ts_uuid_v4(row.id);
    enum ts_rc rc = ts_store_secret_create(api->store, &row, hash, now);
    if (rc) {
        ts_wipe(secret, sizeof(secret));
        v1_fail(req, rc, "key create");
        return;
    }
    ts_store_audit(api->store, "key_created", c.secret_id[0] ? c.secret_id : NULL, row.id,
                   ts_http_client_ip(req), NULL);
    json_t *k = v1_secret_json(&row);
    json_object_set_new(k, "secret", json_string(secret));
    ts_wipe(secret, sizeof(secret));
    v1_respond_secret(req, 201, json_pack("{s:o}", "key", k));
}

void v1_keys_list(struct ts_http_req *req)
{
    secrets_list(req, TS_SECRET_KEY, V1_ACT_KEY_LIST);
}

void v1_key_get(struct ts_http_req *req)
{
    secret_get(req, TS_SECRET_KEY, V1_ACT_KEY_GET);
}

void v1_key_delete(struct ts_http_req *req)
{
    secret_delete(req, TS_SECRET_KEY, V1_ACT_KEY_DELETE);
}

/* ---- credentials ---- */

void v1_credentials_list(struct ts_http_req *req)
{
    struct ts_api *api = ts_http_app(req);
    struct v1_caller c;
    int64_t size;
    if (!v1_require(req, &c, V1_ACT_CREDENTIAL_LIST) || !v1_page_size(req, &size))
        return;
    const char *coll = ts_http_query(req, "collection");
    if (coll && !v1_name_ok(coll)) {
        v1_error(req, 400, "invalid_request", "Bad collection name");
        return;
    }
    /* the cursor is "collection/id" */
    const char *after = ts_http_query(req, "after");
    char *after_coll = NULL;
    const char *after_id = NULL;
    if (after) {
        const char *slash = strchr(after, '/');
        if (!slash || slash == after || !slash[1]) {
            v1_error(req, 400, "invalid_request", "Bad cursor");
            return;
        }
        after_coll = ts_arena_strndup(ts_http_arena(req), after, (size_t)(slash - after));
        after_id = slash + 1;
    }
    struct ts_credential_info *list = NULL;
    size_t n = 0;
    enum ts_rc rc =
        ts_store_credential_list(api->store, coll, after_coll, after_id, size, &list, &n);
    if (rc) {
        v1_fail(req, rc, "credential list");
        return;
    }
    json_t *data = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(data,
                              json_pack("{s:s, s:s, s:s, s:o, s:o}", "collection",
                                        list[i].collection, "id", list[i].id, "strategy",
                                        list[i].strategy, "created_at", v1_time(list[i].created_at),
                                        "updated_at", v1_time(list[i].updated_at)));
    json_t *answer = json_pack("{s:o}", "data", data);
    if (n == (size_t)size) {
        char *cursor = ts_xasprintf("%s/%s", list[n - 1].collection, list[n - 1].id);
        json_object_set_new(answer, "after", json_string(cursor));
        free(cursor);
    }
    ts_credential_infos_free(list, n);
    api_json(req, 200, answer);
}

void v1_credential_delete(struct ts_http_req *req)
{
    struct ts_api *api = ts_http_app(req);
    struct v1_caller c;
    if (!v1_require(req, &c, V1_ACT_CREDENTIAL_DELETE))
        return;
    const char *coll = ts_http_param(req, "c");
    const char *id = ts_http_param(req, "id");
    const char *rv = ts_http_query(req, "revoke");
    bool revoke = false;
    if (rv && ts_parse_bool(rv, &revoke) != TS_OK) {
        v1_error(req, 400, "invalid_request", "revoke must be true or false");
        return;
    }
    int64_t revoked = 0;
    enum ts_rc rc = v1_name_ok(coll) && v1_doc_id_ok(id)
                        ? ts_store_credential_delete(api->store, coll, id, revoke, &revoked)
                        : TS_E_NOT_FOUND;
    if (rc) {
        v1_fail(req, rc, "credential delete");
        return;
    }
    ts_store_audit(api->store, "credential_deleted", c.secret_id[0] ? c.secret_id : NULL, id,
                   ts_http_client_ip(req), NULL);
    api_json(req, 200, json_pack("{s:b, s:I}", "deleted", 1, "revoked", (json_int_t)revoked));
}

/* ---- the caller ---- */

static const char *kind_name(enum v1_kind k)
{
    return k == V1_KEY ? "key" : k == V1_TOKEN ? "token" : "jwt";
}

void v1_me(struct ts_http_req *req)
{
    struct ts_api *api = ts_http_app(req);
    struct v1_caller c;
    if (!require_me(req, &c, V1_ACT_AUTH_ME))
        return;
    /* The answer changes only when something is written (the epoch moves): served from the
     * cache of checked secrets, a token check costs no database read at all. */
    bool cacheable = c.kind == V1_TOKEN || c.kind == V1_KEY || c.kind == V1_JWT_EXTERNAL ||
                     c.kind == V1_JWT_EXCHANGE;
    uint64_t epoch = ts_store_epoch(api->store);
    const char *cached;
    size_t cached_len;
    if (cacheable && v1_me_cache_get(api->secret_cache, c.hash, epoch, ts_http_arena(req), &cached,
                                     &cached_len)) {
        ts_http_respond(req, 200, "application/json", cached, cached_len);
        return;
    }
    json_t *cred = json_pack("{s:s}", "kind", kind_name(c.kind));
    if (c.secret_id[0])
        json_object_set_new(cred, "id", json_string(c.secret_id));
    if (c.kind == V1_KEY)
        json_object_set_new(cred, "role", json_string(c.key_role));
    else if (c.kind == V1_JWT_ADMIN)
        json_object_set_new(cred, "role", json_string("admin"));
    if (c.expires_at)
        json_object_set_new(cred, "expires_at", v1_time(c.expires_at));
    if (c.kind == V1_JWT_EXTERNAL) {
        json_object_set_new(cred, "provider", json_string(c.ext_provider));
        json_object_set_new(cred, "sub", json_string(c.ext_sub));
        static const char *const roles[] = {"client", "server-readonly", "server", "admin"};
        json_object_set_new(cred, "role", json_string(roles[c.role]));
    } else if (c.kind == V1_JWT_EXCHANGE) {
        json_object_set_new(cred, "exchanged", json_true());
    }
    json_t *doc = json_null();
    if (c.has_identity) {
        if (strcmp(c.identity_collection, "users") == 0) {
            struct ts_user *u = NULL;
            enum ts_rc rc = ts_store_user_get(api->store, c.identity_id, &u);
            if (!rc) {
                json_decref(doc);
                doc = v1_user_doc_json(u);
            }
            ts_user_free(u);
        } else {
            struct ts_doc *d = NULL;
            enum ts_rc rc =
                ts_store_doc_get(api->store, c.identity_collection, c.identity_id, ts_now_us(), &d);
            if (!rc) {
                json_decref(doc);
                doc = v1_doc_json(d);
            }
            ts_doc_free(d);
        }
    }
    json_t *ident =
        c.has_identity ? v1_identity_json(c.identity_collection, c.identity_id) : json_null();
    json_t *answer =
        json_pack("{s:o, s:o, s:o}", "identity", ident, "document", doc, "credential", cred);
    char *text = json_dumps(answer, JSON_COMPACT);
    json_decref(answer);
    if (!text) {
        v1_fail(req, TS_E_INTERNAL, "me");
        return;
    }
    size_t len = strlen(text);
    if (cacheable)
        v1_me_cache_put(api->secret_cache, c.hash, epoch, text, len);
    ts_http_respond(req, 200, "application/json", text, len);
    free(text);
}

/* ---- the sessions ledger ---- */

static void respond_ledger(struct ts_http_req *req, const char *coll, const char *id,
                           const struct v1_caller *caller)
{
    struct ts_api *api = ts_http_app(req);
    json_t *sessions = json_array();
    enum ts_rc rc = TS_OK;
    if (strcmp(coll, "users") == 0) {
        struct ts_session_info *list = NULL;
        size_t n = 0;
        rc = ts_store_session_list(api->store, id, &list, &n);
        for (size_t i = 0; !rc && i < n; i++) {
            json_t *s = json_pack(
                "{s:s, s:o, s:o, s:o, s:s, s:s?, s:s?, s:{s:I, s:I}}", "id", list[i].id,
                "created_at", v1_time(list[i].created_at), "refreshed_at",
                v1_time(list[i].refreshed_at), "not_after", v1_time(list[i].not_after), "aal",
                list[i].aal ? list[i].aal : "aal1", "ip", list[i].ip, "user_agent",
                list[i].user_agent, "refresh_tokens", "issued", (json_int_t)list[i].refresh_tokens,
                "active", (json_int_t)list[i].refresh_tokens_active);
            if (caller && strcmp(caller->session_id, list[i].id) == 0)
                json_object_set_new(s, "current", json_true());
            json_array_append_new(sessions, s);
        }
        if (!rc)
            ts_session_infos_free(list, n);
    }
    json_t *lists[2] = {json_array(), json_array()};
    for (int k = 0; k < 2 && !rc; k++) {
        struct ts_secret_filter f = {.kind = k ? TS_SECRET_KEY : TS_SECRET_TOKEN,
                                     .identity_collection = coll,
                                     .identity_id = id,
                                     .limit = 1000,
                                     .now = ts_now_us()};
        struct ts_secret_row **rows = NULL;
        size_t n = 0;
        rc = ts_store_secret_list(api->store, &f, &rows, &n);
        for (size_t i = 0; !rc && i < n; i++) {
            json_t *j = v1_secret_json(rows[i]);
            if (caller && strcmp(caller->secret_id, rows[i]->id) == 0)
                json_object_set_new(j, "current", json_true());
            json_array_append_new(lists[k], j);
        }
        if (!rc)
            ts_secret_rows_free(rows, n);
    }
    json_t *exchanges = json_array();
    if (!rc) {
        struct ts_exchange_row **ex = NULL;
        size_t n = 0;
        rc = ts_store_exchange_list(api->store, coll, id, NULL, 1000, ts_now_us(), &ex, &n);
        for (size_t i = 0; !rc && i < n; i++) {
            json_t *e = json_pack("{s:s, s:s, s:s, s:s, s:o, s:o}", "id", ex[i]->id, "provider",
                                  ex[i]->provider, "sub", ex[i]->subject, "token_type",
                                  ex[i]->token_type, "created_at", v1_time(ex[i]->created_at),
                                  "expires_at", v1_time(ex[i]->expires_at));
            if (ex[i]->token_id)
                json_object_set_new(e, "token_id", json_string(ex[i]->token_id));
            if (ex[i]->meta)
                json_object_set(e, "meta", ex[i]->meta);
            json_array_append_new(exchanges, e);
        }
        if (!rc)
            ts_exchange_rows_free(ex, n);
    }
    if (rc) {
        json_decref(sessions);
        json_decref(lists[0]);
        json_decref(lists[1]);
        json_decref(exchanges);
        v1_fail(req, rc, "ledger");
        return;
    }
    api_json(req, 200,
             json_pack("{s:o, s:o, s:o, s:o, s:o}", "identity", v1_identity_json(coll, id),
                       "sessions", sessions, "tokens", lists[0], "keys", lists[1], "exchanges",
                       exchanges));
}

/* Revokes the session, token or key `item` of the identity; answers. */
static void ledger_delete(struct ts_http_req *req, const char *coll, const char *id,
                          const char *item, const struct v1_caller *by)
{
    struct ts_api *api = ts_http_app(req);
    enum ts_rc rc = TS_E_NOT_FOUND;
    if (ts_uuid_valid(item)) {
        struct ts_secret_row *r = NULL;
        rc = ts_store_secret_get(api->store, item, ts_now_us(), &r);
        if (!rc) {
            bool mine = r->identity_id && strcmp(r->identity_collection, coll) == 0 &&
                        strcmp(r->identity_id, id) == 0;
            rc = mine ? ts_store_secret_delete(api->store, r->kind, item) : TS_E_NOT_FOUND;
        } else if (rc == TS_E_NOT_FOUND && strcmp(coll, "users") == 0) {
            struct ts_session_info *list = NULL;
            size_t n = 0;
            rc = ts_store_session_list(api->store, id, &list, &n);
            bool mine = false;
            for (size_t i = 0; !rc && i < n; i++)
                mine = mine || strcmp(list[i].id, item) == 0;
            if (!rc)
                ts_session_infos_free(list, n);
            if (!rc)
                rc = mine ? ts_store_session_delete(api->store, item) : TS_E_NOT_FOUND;
        }
        ts_secret_row_free(r);
    }
    if (rc) {
        v1_fail(req, rc, "ledger revoke");
        return;
    }
    ts_store_audit(api->store, "revoked", by->secret_id[0] ? by->secret_id : by->identity_id, item,
                   ts_http_client_ip(req), NULL);
    ts_http_respond(req, 204, NULL, "", 0);
}

void v1_me_sessions(struct ts_http_req *req)
{
    struct ts_api *api = ts_http_app(req);
    struct v1_caller c;
    if (!require_me(req, &c, V1_ACT_AUTH_SESSIONS))
        return;
    if (c.has_identity) {
        respond_ledger(req, c.identity_collection, c.identity_id, &c);
        return;
    }
    /* a key of no identity (or the service_role JWT): only itself */
    json_t *keys = json_array();
    if (c.kind == V1_KEY) {
        struct ts_secret_row *r = NULL;
        enum ts_rc rc = ts_store_secret_get(api->store, c.secret_id, ts_now_us(), &r);
        if (rc) {
            json_decref(keys);
            v1_fail(req, rc, "key get");
            return;
        }
        json_t *k = v1_secret_json(r);
        json_object_set_new(k, "current", json_true());
        json_array_append_new(keys, k);
        ts_secret_row_free(r);
    }
    api_json(req, 200,
             json_pack("{s:n, s:[], s:[], s:o}", "identity", "sessions", "tokens", "keys", keys));
}

void v1_me_session_delete(struct ts_http_req *req)
{
    struct v1_caller c;
    if (!v1_require_identity(req, &c, V1_ACT_AUTH_DELETE_SESSION))
        return;
    ledger_delete(req, c.identity_collection, c.identity_id, ts_http_param(req, "item"), &c);
}

/* The collection of identity {id} (?collection= or the only one holding the id); answers
 * 404/409 and returns NULL otherwise. */
static const char *identity_collection(struct ts_http_req *req, const char *id)
{
    struct ts_api *api = ts_http_app(req);
    const char *want = ts_http_query(req, "collection");
    if (!v1_doc_id_ok(id) || (want && !v1_name_ok(want))) {
        v1_error(req, 404, "not_found", "No such identity");
        return NULL;
    }
    char **colls = NULL;
    size_t n = 0;
    enum ts_rc rc = ts_store_identity_collections(api->store, id, ts_now_us(), &colls, &n);
    if (rc) {
        v1_fail(req, rc, "identity lookup");
        return NULL;
    }
    const char *found = NULL;
    for (size_t i = 0; i < n; i++)
        if (!want || strcmp(want, colls[i]) == 0)
            found = found ? "" : ts_arena_strdup(ts_http_arena(req), colls[i]);
    ts_strings_free(colls, n);
    if (!found)
        v1_error(req, 404, "not_found", "No such identity");
    else if (!*found)
        v1_error(req, 409, "conflict", "This id exists in several collections: give ?collection=");
    return found && *found ? found : NULL;
}

void v1_identity_sessions(struct ts_http_req *req)
{
    struct v1_caller c;
    if (!v1_require(req, &c, V1_ACT_SESSION_LIST))
        return;
    const char *id = ts_http_param(req, "id");
    const char *coll = identity_collection(req, id);
    if (coll)
        respond_ledger(req, coll, id, NULL);
}

void v1_identity_session_delete(struct ts_http_req *req)
{
    struct v1_caller c;
    if (!v1_require(req, &c, V1_ACT_SESSION_DELETE))
        return;
    const char *id = ts_http_param(req, "id");
    const char *coll = identity_collection(req, id);
    if (coll)
        ledger_delete(req, coll, id, ts_http_param(req, "item"), &c);
}

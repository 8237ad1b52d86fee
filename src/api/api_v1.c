/*
 * api_v1.c - what every /v1 handler shares: the error shape, who the caller is (with the
 * cache of checked secrets), body and ttl parsing, and the JSON of documents and secrets.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api_v1_int.h"

/* ---- errors ---- */

void v1_error(struct ts_http_req *req, int status, const char *code, const char *message)
{
    api_json(req, status, json_pack("{s:{s:s, s:s}}", "error", "code", code, "message", message));
}

void v1_unauthorized(struct ts_http_req *req, const char *reason)
{
    ts_log_info("v1: credential refused: %s", reason);
    ts_http_add_header(req, "WWW-Authenticate", "Bearer");
    v1_error(req, 401, "unauthorized", "Invalid or expired credentials");
}

void v1_forbidden(struct ts_http_req *req)
{
    v1_error(req, 403, "forbidden", "The caller may not do this");
}

void v1_fail(struct ts_http_req *req, enum ts_rc rc, const char *what)
{
    switch (rc) {
    case TS_E_NOT_FOUND:
        v1_error(req, 404, "not_found", "Not found");
        return;
    case TS_E_CONFLICT:
    case TS_E_STALE:
        v1_error(req, 409, "conflict", "Conflicts with an existing item (id, name or unique term)");
        return;
    case TS_E_INVALID:
        v1_error(req, 400, "invalid_request", "Invalid request");
        return;
    case TS_E_BUSY:
        ts_http_add_header(req, "Retry-After", "1");
        v1_error(req, 429, "too_many_requests", "Too many password checks in progress, retry");
        return;
    case TS_E_UNAVAILABLE:
        ts_log_warn("%s: storage unavailable", what);
        ts_http_add_header(req, "Retry-After", "1");
        v1_error(req, 503, "unavailable", "Service temporarily unavailable, please retry");
        return;
    default:
        ts_log_error("%s: %s", what, ts_rc_name(rc));
        v1_error(req, 500, "internal", "Unexpected failure");
    }
}

bool v1_path(struct ts_http_req *req)
{
    const char *p = ts_http_path(req);
    return strncmp(p, "/v1/", 4) == 0 || strcmp(p, "/v1") == 0;
}

void v1_not_found(struct ts_http_req *req)
{
    if (!ts_http_method_allowed(req)) {
        ts_http_add_header(req, "Allow", ts_http_allowed_methods(req));
        v1_error(req, 405, "method_not_allowed", "Method not allowed");
    } else {
        v1_error(req, 404, "not_found", "Not found");
    }
}

void v1_too_large(struct ts_http_req *req)
{
    v1_error(req, 413, "request_too_large", "Request body too large");
}

/* ---- the cache of checked secrets ---- */

struct v1_slot {
    pthread_mutex_t mu;
    bool used;
    uint8_t hash[TS_SECRET_HASH_LEN];
    uint64_t epoch;
    int64_t valid_until;
    struct v1_caller caller;
    /* GET /v1/me's answer for this secret (heap), valid while the epoch is still me_epoch */
    char *me_text;
    size_t me_len;
    uint64_t me_epoch;
};

struct v1_secret_cache {
    size_t n;
    struct v1_slot *slots;
    _Atomic int64_t hits, misses; /* for /metrics */
};

void v1_secret_cache_stats(struct v1_secret_cache *c, int64_t *hits, int64_t *misses)
{
    *hits = atomic_load(&c->hits);
    *misses = atomic_load(&c->misses);
}

struct v1_secret_cache *v1_secret_cache_new(size_t slots)
{
    struct v1_secret_cache *c = ts_xcalloc(1, sizeof(*c));
    c->n = slots;
    c->slots = ts_xcalloc(slots, sizeof(*c->slots));
    for (size_t i = 0; i < slots; i++)
        pthread_mutex_init(&c->slots[i].mu, NULL);
    return c;
}

void v1_secret_cache_free(struct v1_secret_cache *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n; i++) {
        pthread_mutex_destroy(&c->slots[i].mu);
        free(c->slots[i].me_text);
        ts_wipe(&c->slots[i], sizeof(c->slots[i]));
    }
    free(c->slots);
    free(c);
}

static struct v1_slot *slot_of(struct v1_secret_cache *c, const uint8_t hash[TS_SECRET_HASH_LEN])
{
    uint64_t h;
    memcpy(&h, hash, sizeof(h)); /* a SHA-256 of a secret: uniformly spread already */
    return &c->slots[h % c->n];
}

bool v1_secret_cache_lookup(struct v1_secret_cache *c, const uint8_t hash[TS_SECRET_HASH_LEN],
                            uint64_t epoch, int64_t now, struct v1_caller *out)
{
    struct v1_slot *s = slot_of(c, hash);
    bool hit = false;
    pthread_mutex_lock(&s->mu);
    if (s->used && s->epoch == epoch && now < s->valid_until &&
        ts_ct_equal(s->hash, hash, TS_SECRET_HASH_LEN)) {
        *out = s->caller;
        hit = true;
    }
    pthread_mutex_unlock(&s->mu);
    atomic_fetch_add(hit ? &c->hits : &c->misses, 1);
    return hit;
}

void v1_secret_cache_store(struct v1_secret_cache *c, const uint8_t hash[TS_SECRET_HASH_LEN],
                           uint64_t epoch, int64_t valid_until, const struct v1_caller *caller)
{
    struct v1_slot *s = slot_of(c, hash);
    pthread_mutex_lock(&s->mu);
    if (!s->used || !ts_ct_equal(s->hash, hash, TS_SECRET_HASH_LEN)) {
        free(s->me_text);
        s->me_text = NULL;
    }
    s->used = true;
    memcpy(s->hash, hash, TS_SECRET_HASH_LEN);
    s->epoch = epoch;
    s->valid_until = valid_until;
    s->caller = *caller;
    pthread_mutex_unlock(&s->mu);
}

bool v1_me_cache_get(struct v1_secret_cache *c, const uint8_t hash[TS_SECRET_HASH_LEN],
                     uint64_t epoch, struct ts_arena *a, const char **text, size_t *len)
{
    struct v1_slot *s = slot_of(c, hash);
    bool hit = false;
    pthread_mutex_lock(&s->mu);
    if (s->used && s->me_text && s->me_epoch == epoch &&
        ts_ct_equal(s->hash, hash, TS_SECRET_HASH_LEN)) {
        char *copy = ts_arena_alloc(a, s->me_len + 1);
        memcpy(copy, s->me_text, s->me_len + 1);
        *text = copy;
        *len = s->me_len;
        hit = true;
    }
    pthread_mutex_unlock(&s->mu);
    return hit;
}

void v1_me_cache_put(struct v1_secret_cache *c, const uint8_t hash[TS_SECRET_HASH_LEN],
                     uint64_t epoch, const char *text, size_t len)
{
    struct v1_slot *s = slot_of(c, hash);
    pthread_mutex_lock(&s->mu);
    /* only beside the caller entry of the same secret, which bounds its life */
    if (s->used && ts_ct_equal(s->hash, hash, TS_SECRET_HASH_LEN)) {
        free(s->me_text);
        s->me_text = ts_xstrndup(text, len);
        s->me_len = len;
        s->me_epoch = epoch;
    }
    pthread_mutex_unlock(&s->mu);
}

/* ---- the caller ---- */

static enum v1_role role_of_key(const char *role)
{
    if (strcmp(role, "admin") == 0)
        return V1_ROLE_ADMIN;
    if (strcmp(role, "server") == 0)
        return V1_ROLE_SERVER;
    if (strcmp(role, "server-readonly") == 0)
        return V1_ROLE_SERVER_READ;
    return V1_ROLE_NONE; /* client */
}

static void set_identity(struct v1_caller *c, const char *collection, const char *id)
{
    c->has_identity = collection && id && strlen(collection) <= TS_STORE_NAME_MAX &&
                      strlen(id) <= TS_STORE_DOC_ID_MAX;
    if (c->has_identity) {
        snprintf(c->identity_collection, sizeof(c->identity_collection), "%s", collection);
        snprintf(c->identity_id, sizeof(c->identity_id), "%s", id);
    }
}

static bool caller_from_secret(struct ts_http_req *req, const char *secret, size_t len,
                               struct v1_caller *c)
{
    struct ts_api *api = ts_http_app(req);
    bool is_key = strncmp(secret, V1_SECRET_PREFIX_KEY, 4) == 0;
    if (len != V1_SECRET_LEN) {
        v1_unauthorized(req, "malformed secret");
        return false;
    }
    uint8_t hash[TS_SECRET_HASH_LEN];
    ts_sha256(secret, len, hash);
    int64_t now = ts_now_us();
    uint64_t epoch = ts_store_epoch(api->store);
    if (v1_secret_cache_lookup(api->secret_cache, hash, epoch, now, c))
        return true;
    enum ts_secret_state state;
    struct ts_secret_row *row = NULL;
    int64_t valid_until = 0;
    enum ts_rc rc = ts_store_secret_check(api->store, hash, now, &state, &row, &valid_until);
    if (rc) {
        v1_fail(req, rc, "secret check");
        return false;
    }
    if (state != TS_SECRET_LIVE || (row->kind == TS_SECRET_KEY) != is_key) {
        ts_secret_row_free(row);
        v1_unauthorized(req, state == TS_SECRET_UNKNOWN   ? "unknown secret"
                             : state == TS_SECRET_EXPIRED ? "secret expired"
                             : state == TS_SECRET_LIVE    ? "secret of the other kind"
                                                          : "identity gone or expired");
        return false;
    }
    memset(c, 0, sizeof(*c));
    c->kind = is_key ? V1_KEY : V1_TOKEN;
    c->role = is_key ? role_of_key(row->role) : V1_ROLE_NONE;
    snprintf(c->secret_id, sizeof(c->secret_id), "%s", row->id);
    if (is_key)
        snprintf(c->key_role, sizeof(c->key_role), "%s", row->role);
    if (is_key && c->role == V1_ROLE_NONE && strcmp(row->role, "client") != 0)
        snprintf(c->roles, sizeof(c->roles), "%s", row->role); /* a defined role */
    set_identity(c, row->identity_collection, row->identity_id);
    c->expires_at = row->expires_at;
    memcpy(c->hash, hash, sizeof(hash));
    ts_secret_row_free(row);
    v1_secret_cache_store(api->secret_cache, hash, epoch, valid_until, c);
    return true;
}

/* A token from /v1/oauth/token (not in the cache: caller_from_jwt looked under hash, the
 * token's SHA-256): its identity must still be live. */
static bool caller_from_exchange(struct ts_http_req *req, const uint8_t hash[TS_SECRET_HASH_LEN],
                                 const struct ts_principal *p, struct v1_caller *c)
{
    struct ts_api *api = ts_http_app(req);
    int64_t now = ts_now_us();
    uint64_t epoch = ts_store_epoch(api->store);
    const char *slash = strchr(p->identity, '/');
    char coll[TS_STORE_NAME_MAX + 1];
    size_t cl = (size_t)(slash - p->identity);
    if (cl == 0 || cl > TS_STORE_NAME_MAX) {
        v1_unauthorized(req, "exchanged token names a bad identity");
        return false;
    }
    memcpy(coll, p->identity, cl);
    coll[cl] = '\0';
    char **colls = NULL;
    size_t n = 0;
    enum ts_rc rc = ts_store_identity_collections(api->store, slash + 1, now, &colls, &n);
    if (rc) {
        v1_fail(req, rc, "identity check");
        return false;
    }
    bool live = false;
    for (size_t i = 0; i < n; i++)
        live = live || strcmp(colls[i], coll) == 0;
    ts_strings_free(colls, n);
    if (!live) {
        v1_unauthorized(req, "identity of an exchanged token gone");
        return false;
    }
    memset(c, 0, sizeof(*c));
    c->kind = V1_JWT_EXCHANGE;
    set_identity(c, coll, slash + 1);
    c->expires_at = p->exp * 1000000;
    memcpy(c->hash, hash, TS_SECRET_HASH_LEN);
    v1_secret_cache_store(api->secret_cache, hash, epoch, c->expires_at, c);
    return true;
}

static bool caller_from_jwt(struct ts_http_req *req, const char *tok, size_t len,
                            struct v1_caller *c)
{
    struct ts_api *api = ts_http_app(req);
    /* outside and exchanged JWTs already verified: a hash lookup, before any parsing */
    uint8_t hash[TS_SECRET_HASH_LEN];
    ts_sha256(tok, len, hash);
    if (v1_secret_cache_lookup(api->secret_cache, hash, ts_store_epoch(api->store), ts_now_us(), c))
        return true;
    struct v1_jwt_peek pk;
    if (v1_jwt_peek(tok, len, &pk) && strcmp(pk.iss, api->cfg->jwt_issuer) != 0)
        return v1_caller_external(req, tok, len, hash, &pk, c);
    struct ts_principal p;
    if (ts_keyring_verify(api->keyring, tok, len, &p) != TS_OK) {
        v1_unauthorized(req, "JWT failed verification");
        return false;
    }
    if (p.identity[0])
        return caller_from_exchange(req, hash, &p, c);
    memset(c, 0, sizeof(*c));
    if (!p.sub[0]) {
        for (char **r = api->admin_roles; *r; r++)
            if (strcmp(*r, p.role) == 0) {
                c->kind = V1_JWT_ADMIN;
                c->role = V1_ROLE_ADMIN;
                return true;
            }
        c->kind = V1_ANONYMOUS; /* the anon key */
        return true;
    }
    /* A GoTrue access token: the user is an identity of "users" while its session lives. */
    struct ts_user *u = NULL;
    enum ts_rc rc = ts_store_session_user(api->store, p.session_id, p.sub, &u);
    if (rc == TS_E_NOT_FOUND) {
        v1_unauthorized(req, "session ended");
        return false;
    }
    if (rc) {
        v1_fail(req, rc, "session check");
        return false;
    }
    bool banned = u->banned_until > ts_now_us();
    ts_user_free(u);
    if (banned) {
        v1_unauthorized(req, "user banned");
        return false;
    }
    c->kind = V1_JWT_USER;
    set_identity(c, "users", p.sub);
    snprintf(c->session_id, sizeof(c->session_id), "%s", p.session_id);
    c->expires_at = p.exp * 1000000;
    api_req(req)->user_id = ts_arena_strdup(ts_http_arena(req), p.sub);
    return true;
}

static bool caller_of(struct ts_http_req *req, struct v1_caller *c);

bool v1_caller(struct ts_http_req *req, struct v1_caller *c)
{
    if (!caller_of(req, c))
        return false;
    /* An identity's every request draws on its profiles' budget, except logout (a client over
     * its budget may still end its session, as in Kuzzle) and the gateway (nginx's
     * auth_request takes any answer but 2xx, 401 and 403 for an error; limit_req is the tool
     * in front of it). */
    const char *route = ts_http_route_name(req);
    if (c->has_identity && strcmp(route, "/v1/logout") != 0 &&
        strcmp(route, "/v1/authz/gateway") != 0 && !v1_within_budget(req, c))
        return false;
    return true;
}

static bool caller_of(struct ts_http_req *req, struct v1_caller *c)
{
    memset(c, 0, sizeof(*c));
    const char *h = ts_http_header(req, "Authorization");
    const char *secret = NULL;
    if (h) {
        if (strncasecmp(h, "Bearer ", 7) != 0) {
            v1_unauthorized(req, "Authorization is not Bearer");
            return false;
        }
        secret = h + 7;
    } else {
        secret = ts_http_header(req, "apikey");
    }
    if (!secret)
        return true; /* anonymous */
    while (*secret == ' ')
        secret++;
    size_t len = strlen(secret);
    while (len && secret[len - 1] == ' ')
        len--;
    if (!len) {
        v1_unauthorized(req, "empty credential");
        return false;
    }
    if (len > 4 && (strncmp(secret, V1_SECRET_PREFIX_TOKEN, 4) == 0 ||
                    strncmp(secret, V1_SECRET_PREFIX_KEY, 4) == 0))
        return caller_from_secret(req, secret, len, c);
    if (len > 2 && secret[0] == 'e' && secret[1] == 'y' && memchr(secret, '.', len))
        return caller_from_jwt(req, secret, len, c);
    v1_unauthorized(req, "unrecognised credential");
    return false;
}

bool v1_is_self(const struct v1_caller *c, const char *collection, const char *id)
{
    return c->has_identity && strcmp(c->identity_collection, collection) == 0 &&
           strcmp(c->identity_id, id) == 0;
}

/* ---- request parsing ---- */

json_t *v1_body(struct ts_http_req *req)
{
    size_t len;
    const char *body = ts_http_body(req, &len);
    json_error_t err;
    json_t *j = json_loadb(body, len, JSON_REJECT_DUPLICATES, &err);
    if (!json_is_object(j)) {
        json_decref(j);
        v1_error(req, 400, "invalid_request", "The body must be a JSON object");
        return NULL;
    }
    ts_arena_defer(ts_http_arena(req), (void (*)(void *))json_decref, j);
    return j;
}

bool v1_only(struct ts_http_req *req, json_t *obj, const char *const *allowed)
{
    const char *key;
    const json_t *v;
    json_object_foreach(obj, key, v)
    {
        bool ok = false;
        for (const char *const *a = allowed; *a && !ok; a++)
            ok = strcmp(*a, key) == 0;
        if (!ok) {
            char msg[128];
            snprintf(msg, sizeof(msg), "Unknown member \"%.64s\"", key);
            v1_error(req, 400, "invalid_request", msg);
            return false;
        }
    }
    return true;
}

bool v1_name_ok(const char *s)
{
    if (!s || !*s || !((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || *s == '_'))
        return false;
    size_t n = strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-");
    return s[n] == '\0' && n <= TS_STORE_NAME_MAX;
}

bool v1_doc_id_ok(const char *s)
{
    /* "." and ".." are path segments every URL library rewrites: they could not be reached */
    if (!s || !*s || strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
        return false;
    size_t n = strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-");
    return s[n] == '\0' && n <= TS_STORE_DOC_ID_MAX;
}

#define TTL_MAX_US (INT64_C(100) * 365 * 86400 * 1000000) /* a century */

bool v1_ttl(struct ts_http_req *req, const json_t *v, int64_t now, int64_t *expires_at)
{
    int64_t at = 0;
    bool ok = false;
    if (json_is_integer(v)) {
        json_int_t s = json_integer_value(v);
        ok = s > 0 && s <= TTL_MAX_US / 1000000;
        at = now + (int64_t)s * 1000000;
    } else if (json_is_real(v)) {
        double s = json_real_value(v);
        ok = s > 0 && s <= (double)(TTL_MAX_US / 1000000);
        at = now + (int64_t)(s * 1e6);
    } else if (json_is_string(v)) {
        const char *t = json_string_value(v);
        int64_t d;
        if (ts_time_parse(t, &at) == TS_OK) {
            ok = at > now && at - now <= TTL_MAX_US;
        } else if (ts_duration_parse(t, &d) == TS_OK) {
            ok = d > 0 && d <= TTL_MAX_US;
            at = now + d;
        }
    }
    if (!ok) {
        v1_error(req, 400, "invalid_request",
                 "ttl must be seconds from now, a duration (\"90m\") or a future RFC 3339 time");
        return false;
    }
    *expires_at = at;
    return true;
}

bool v1_page_size(struct ts_http_req *req, int64_t *size)
{
    const char *s = ts_http_query(req, "size");
    *size = 64;
    if (s && ts_parse_i64(s, 1, 1000, size) != TS_OK) {
        v1_error(req, 400, "invalid_request", "size must be an integer from 1 to 1000");
        return false;
    }
    return true;
}

json_t *v1_time(int64_t t)
{
    if (!t)
        return json_null();
    char buf[TS_TIME_STR_LEN];
    ts_time_format(t, buf);
    return json_string(buf);
}

/* ---- objects ---- */

json_t *v1_doc_json(const struct ts_doc *d)
{
    json_t *j = json_pack("{s:s, s:s, s:I, s:O}", "id", d->id, "collection", d->collection, "ts",
                          (json_int_t)d->ts, "data", d->data);
    if (d->expires_at)
        json_object_set_new(j, "ttl", v1_time(d->expires_at));
    return j;
}

json_t *v1_doc_read(struct ts_api *api, const char *collection, const char *id, int64_t now,
                    int64_t *expires_at, enum ts_rc *rc)
{
    json_t *out = NULL;
    if (expires_at)
        *expires_at = 0;
    if (strcmp(collection, "users") == 0) {
        struct ts_user *u = NULL;
        *rc = ts_uuid_valid(id) ? ts_store_user_get(api->store, id, &u) : TS_E_NOT_FOUND;
        if (!*rc && u->deleted_at)
            *rc = TS_E_NOT_FOUND;
        if (!*rc)
            out = v1_user_doc_json(u);
        ts_user_free(u);
        return out;
    }
    struct ts_doc *d = NULL;
    *rc = ts_store_doc_get(api->store, collection, id, now, &d);
    if (!*rc) {
        out = v1_doc_json(d);
        if (expires_at)
            *expires_at = d->expires_at;
    }
    ts_doc_free(d);
    return out;
}

json_t *v1_user_doc_json(const struct ts_user *u)
{
    json_t *data = json_pack(
        "{s:s?, s:s?, s:s, s:s, s:O, s:O, s:b, s:o, s:o, s:o, s:o}", "email", u->email, "phone",
        u->phone, "role", u->role, "aud", u->aud, "user_metadata", u->user_metadata, "app_metadata",
        u->app_metadata, "is_anonymous", u->is_anonymous, "created_at", v1_time(u->created_at),
        "email_confirmed_at", v1_time(u->email_confirmed_at), "last_sign_in_at",
        v1_time(u->last_sign_in_at), "banned_until", v1_time(u->banned_until));
    return json_pack("{s:s, s:s, s:I, s:o}", "id", u->id, "collection", "users", "ts",
                     (json_int_t)u->updated_at, "data", data);
}

json_t *v1_identity_json(const char *collection, const char *id)
{
    return json_pack("{s:s, s:s}", "collection", collection, "id", id);
}

json_t *v1_secret_json(const struct ts_secret_row *r)
{
    json_t *j = json_pack("{s:s, s:s, s:o, s:o}", "id", r->id, "origin", r->origin, "created_at",
                          v1_time(r->created_at), "expires_at", v1_time(r->expires_at));
    if (r->identity_id)
        json_object_set_new(j, "identity",
                            v1_identity_json(r->identity_collection, r->identity_id));
    if (r->kind == TS_SECRET_KEY) {
        json_object_set_new(j, "role", json_string(r->role));
        if (r->description)
            json_object_set_new(j, "description", json_string(r->description));
    }
    if (r->data)
        json_object_set(j, "data", r->data);
    if (r->meta)
        json_object_set(j, "meta", r->meta);
    return j;
}

void v1_secret_new(const char *prefix, char out[V1_SECRET_LEN + 1],
                   uint8_t hash[TS_SECRET_HASH_LEN])
{
    ts_opaque_secret_new(prefix, out, hash);
}

bool v1_token_expiry(struct ts_http_req *req, const json_t *body, int64_t now, int64_t *expires_at)
{
    struct ts_api *api = ts_http_app(req);
    const json_t *ttl = json_object_get(body, "ttl");
    if (!ttl || json_is_null(ttl)) {
        *expires_at = now + api->cfg->token_default_ttl * 1000000;
        return true;
    }
    if (!v1_ttl(req, ttl, now, expires_at))
        return false;
    if (*expires_at - now > api->cfg->token_max_ttl * 1000000) {
        v1_error(req, 400, "invalid_request", "ttl is longer than TOKEN_MAX_TTL allows");
        return false;
    }
    return true;
}

static void wipe_secret(void *p)
{
    ts_wipe(p, V1_SECRET_LEN);
}

void v1_issue_token(struct ts_http_req *req, int status, const char *collection, const char *id,
                    int64_t expires_at, json_t *data, const char *origin)
{
    v1_issue_token_meta(req, status, collection, id, expires_at, data, origin, NULL);
}

void v1_issue_token_meta(struct ts_http_req *req, int status, const char *collection,
                         const char *id, int64_t expires_at, json_t *data, const char *origin,
                         json_t *meta)
{
    struct ts_api *api = ts_http_app(req);
    struct ts_arena *a = ts_http_arena(req);
    char *secret = ts_arena_alloc(a, V1_SECRET_LEN + 1);
    ts_arena_defer(ts_http_arena(req), wipe_secret, secret);
    uint8_t hash[TS_SECRET_HASH_LEN];
    v1_secret_new(V1_SECRET_PREFIX_TOKEN, secret, hash);
    struct ts_secret_row row = {.kind = TS_SECRET_TOKEN,
                                .identity_collection = ts_arena_strdup(a, collection),
                                .identity_id = ts_arena_strdup(a, id),
                                .origin = ts_arena_strdup(a, origin),
                                .data = data,
                                .meta = meta,
                                .created_at = ts_now_us(),
                                .expires_at = expires_at};
    ts_uuid_v4(row.id);
    enum ts_rc rc = ts_store_secret_create(api->store, &row, hash, row.created_at);
    if (rc) {
        v1_fail(req, rc, "token create");
        return;
    }
    ts_store_audit(api->store, "token_issued", NULL, row.id, ts_http_client_ip(req), NULL);
    json_t *t = v1_secret_json(&row);
    json_object_set_new(t, "secret", json_string(secret));
    v1_respond_secret(req, status, json_pack("{s:o}", "token", t));
}

void v1_respond_secret(struct ts_http_req *req, int status, json_t *answer)
{
    char *text = answer ? json_dumps(answer, JSON_COMPACT) : NULL;
    json_decref(answer);
    if (!text) {
        v1_fail(req, TS_E_INTERNAL, "secret answer");
        return;
    }
    size_t n = strlen(text);
    ts_http_respond(req, status, "application/json", text, n); /* copies the body */
    ts_wipe(text, n);
    free(text);
}

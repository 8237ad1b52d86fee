/*
 * api.c - the route table, the hooks every request passes through (CORS, request
 * log, 404/405/413) and the helpers shared by the handlers: JSON bodies, bearer
 * authentication, the User and session objects.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "api_v1_int.h"

static const struct ts_http_route routes[] = {
    {TS_HTTP_GET | TS_HTTP_HEAD, "/health", api_health},
    {TS_HTTP_GET | TS_HTTP_HEAD, "/ready", api_ready},
    {TS_HTTP_GET, "/settings", api_settings},
    {TS_HTTP_GET, "/.well-known/jwks.json", api_jwks},
    {TS_HTTP_GET, "/metrics", api_metrics},
    {TS_HTTP_POST, "/signup", api_signup},
    {TS_HTTP_POST, "/token", api_token},
    {TS_HTTP_GET, "/user", api_user_get},
    {TS_HTTP_PUT, "/user", api_user_put},
    {TS_HTTP_POST, "/logout", api_logout},
    {TS_HTTP_GET, "/admin/users", api_admin_users_list},
    {TS_HTTP_POST, "/admin/users", api_admin_users_create},
    {TS_HTTP_GET, "/admin/users/{id}", api_admin_user_get},
    {TS_HTTP_PUT, "/admin/users/{id}", api_admin_user_update},
    {TS_HTTP_DELETE, "/admin/users/{id}", api_admin_user_delete},
    /* the native API (api_v1_*.c) */
    {TS_HTTP_GET, "/v1/collections", v1_collections_list},
    {TS_HTTP_POST, "/v1/collections", v1_collections_create},
    {TS_HTTP_GET, "/v1/collections/{c}", v1_collection_get},
    {TS_HTTP_DELETE, "/v1/collections/{c}", v1_collection_delete},
    {TS_HTTP_GET, "/v1/collections/{c}/documents", v1_documents_list},
    {TS_HTTP_POST, "/v1/collections/{c}/documents", v1_documents_create},
    {TS_HTTP_GET, "/v1/collections/{c}/documents/{id}", v1_document_get},
    {TS_HTTP_PUT, "/v1/collections/{c}/documents/{id}", v1_document_put},
    {TS_HTTP_PATCH, "/v1/collections/{c}/documents/{id}", v1_document_patch},
    {TS_HTTP_DELETE, "/v1/collections/{c}/documents/{id}", v1_document_delete},
    {TS_HTTP_GET, "/v1/collections/{c}/indexes", v1_indexes_list},
    {TS_HTTP_POST, "/v1/collections/{c}/indexes", v1_indexes_create},
    {TS_HTTP_GET, "/v1/collections/{c}/indexes/{name}", v1_index_get},
    {TS_HTTP_DELETE, "/v1/collections/{c}/indexes/{name}", v1_index_delete},
    {TS_HTTP_POST, "/v1/login", v1_login},
    {TS_HTTP_POST, "/v1/identify", v1_identify},
    {TS_HTTP_POST, "/v1/logout", v1_logout},
    {TS_HTTP_GET, "/v1/tokens", v1_tokens_list},
    {TS_HTTP_POST, "/v1/tokens", v1_tokens_create},
    {TS_HTTP_GET, "/v1/tokens/{id}", v1_token_get},
    {TS_HTTP_DELETE, "/v1/tokens/{id}", v1_token_delete},
    {TS_HTTP_GET, "/v1/keys", v1_keys_list},
    {TS_HTTP_POST, "/v1/keys", v1_keys_create},
    {TS_HTTP_GET, "/v1/keys/{id}", v1_key_get},
    {TS_HTTP_DELETE, "/v1/keys/{id}", v1_key_delete},
    {TS_HTTP_GET, "/v1/credentials", v1_credentials_list},
    {TS_HTTP_DELETE, "/v1/credentials/{c}/{id}", v1_credential_delete},
    {TS_HTTP_GET, "/v1/me", v1_me},
    {TS_HTTP_GET, "/v1/me/sessions", v1_me_sessions},
    {TS_HTTP_DELETE, "/v1/me/sessions/{item}", v1_me_session_delete},
    {TS_HTTP_GET, "/v1/identities/{id}/sessions", v1_identity_sessions},
    {TS_HTTP_DELETE, "/v1/identities/{id}/sessions/{item}", v1_identity_session_delete},
    {TS_HTTP_GET, "/v1/access-providers", v1_providers_list},
    {TS_HTTP_POST, "/v1/access-providers", v1_providers_create},
    {TS_HTTP_GET, "/v1/access-providers/{name}", v1_provider_get},
    {TS_HTTP_PUT, "/v1/access-providers/{name}", v1_provider_put},
    {TS_HTTP_DELETE, "/v1/access-providers/{name}", v1_provider_delete},
    {TS_HTTP_POST, "/v1/oauth/token", v1_oauth_token},
    {TS_HTTP_GET, "/v1/roles", v1_roles_list},
    {TS_HTTP_POST, "/v1/roles", v1_roles_create},
    {TS_HTTP_GET, "/v1/roles/{name}", v1_role_get},
    {TS_HTTP_PUT, "/v1/roles/{name}", v1_role_put},
    {TS_HTTP_DELETE, "/v1/roles/{name}", v1_role_delete},
    {TS_HTTP_GET, "/v1/profiles", v1_profiles_list},
    {TS_HTTP_POST, "/v1/profiles", v1_profiles_create},
    {TS_HTTP_GET, "/v1/profiles/{name}", v1_profile_get},
    {TS_HTTP_PUT, "/v1/profiles/{name}", v1_profile_put},
    {TS_HTTP_DELETE, "/v1/profiles/{name}", v1_profile_delete},
    {TS_HTTP_POST, "/v1/authz/check", v1_authz_check},
    {TS_HTTP_GET | TS_HTTP_HEAD, "/v1/authz/gateway", v1_authz_gateway},
    {TS_HTTP_GET, "/v1/me/rights", v1_me_rights},
};

/* ---- per-request state and responses ---- */

static void add_cors_headers(struct ts_http_req *req);

/* The request's state, made on first use together with the headers every answer carries
 * (the API version echo and CORS), so that even answers given before routing (413) have them. */
struct api_req *api_req(struct ts_http_req *req)
{
    struct api_req *ar = ts_http_app_data(req);
    if (ar)
        return ar;
    ar = ts_arena_calloc(ts_http_arena(req), sizeof(*ar));
    ts_http_set_app_data(req, ar);
    const char *v = ts_http_header(req, "X-Supabase-Api-Version");
    /* gotrue-api.md §1: a dated version from 2024-01-01 on selects the {code,message} shape. */
    if (v && strlen(v) == 10 && v[4] == '-' && v[7] == '-' && strcmp(v, "2024-01-01") >= 0) {
        ar->versioned = true;
        ts_http_add_header(req, "X-Supabase-Api-Version", "2024-01-01");
    }
    add_cors_headers(req);
    return ar;
}

static void decref_json(void *p)
{
    json_decref(p);
}

void api_json(struct ts_http_req *req, int status, json_t *j)
{
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!text) {
        static const char fallback[] = "{\"code\":500,\"error_code\":\"unexpected_failure\"}";
        ts_http_respond(req, 500, "application/json", fallback, sizeof(fallback) - 1);
        return;
    }
    ts_http_respond(req, status, "application/json", text, strlen(text));
    free(text);
}

/* ---- request bodies ---- */

/* Decodes application/x-www-form-urlencoded text into an arena string; NULL if malformed. */
static char *form_decode(struct ts_arena *a, const char *s, size_t n)
{
    char *out = ts_arena_alloc(a, n + 1);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '+') {
            out[o++] = ' ';
        } else if (s[i] == '%') {
            if (i + 2 >= n)
                return NULL;
            int hi = ts_hex_digit((unsigned char)s[i + 1]);
            int lo = ts_hex_digit((unsigned char)s[i + 2]);
            if (hi < 0 || lo < 0)
                return NULL;
            out[o++] = (char)(hi * 16 + lo);
            i += 2;
        } else {
            out[o++] = s[i];
        }
    }
    out[o] = '\0';
    if (strlen(out) != o)
        return NULL; /* an encoded NUL */
    return out;
}

json_t *api_parse_form(struct ts_arena *a, const char *body, size_t len)
{
    json_t *obj = json_object();
    const char *p = body, *end = body + len;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *stop = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(stop - p));
        if (stop > p) {
            const char *kend = eq ? eq : stop;
            char *k = form_decode(a, p, (size_t)(kend - p));
            char *v = eq ? form_decode(a, eq + 1, (size_t)(stop - eq - 1)) : ts_arena_strdup(a, "");
            /* NULL also for invalid UTF-8; none is made for a refused key (it would leak:
             * found by tests/fuzz/fuzz_form.c) */
            json_t *js = k && v ? json_string(v) : NULL;
            if (!k || !js || json_object_set_new(obj, k, js) != 0) {
                json_decref(obj);
                return NULL;
            }
        }
        if (!amp)
            break; /* stop + 1 would point past the end of the body */
        p = amp + 1;
    }
    return obj;
}

json_t *api_body(struct ts_http_req *req)
{
    size_t len;
    const char *body = ts_http_body(req, &len);
    const char *ct = ts_http_header(req, "Content-Type");
    /* GoTrue parses every body as JSON whatever its Content-Type (curl -d sends JSON
     * labelled as a form); a real form body is accepted too, for OAuth-style clients. */
    json_error_t err;
    json_t *j = json_loadb(body, len, JSON_REJECT_DUPLICATES, &err);
    if (!j && ct && strncasecmp(ct, "application/x-www-form-urlencoded", 33) == 0)
        j = api_parse_form(ts_http_arena(req), body, len);
    if (!json_is_object(j)) {
        json_decref(j);
        api_error(req, ERR_BAD_JSON, NULL);
        return NULL;
    }
    ts_arena_defer(ts_http_arena(req), decref_json, j);
    return j;
}

const char *api_str(const json_t *obj, const char *key, bool *bad)
{
    const json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v))
        return NULL;
    if (!json_is_string(v)) {
        *bad = true;
        return NULL;
    }
    return json_string_value(v);
}

static void wipe_string(void *p)
{
    ts_wipe(p, strlen(p));
}

char *api_secret_copy(struct ts_http_req *req, const char *s)
{
    char *copy = ts_arena_strdup(ts_http_arena(req), s);
    ts_arena_defer(ts_http_arena(req), wipe_string, copy);
    return copy;
}

static bool email_char_ok(unsigned char c)
{
    return isalnum(c) || (c && strchr(".!#$%&'*+/=?^_`{|}~-", c));
}

char *api_normalize_email(struct ts_http_req *req, const char *email)
{
    while (isspace((unsigned char)*email))
        email++;
    size_t n = strlen(email);
    while (n && isspace((unsigned char)email[n - 1]))
        n--;
    if (n == 0 || n > 255)
        return NULL;
    char *e = ts_arena_strndup(ts_http_arena(req), email, n);
    char *at = strchr(e, '@');
    if (!at || at == e || strchr(at + 1, '@') || !at[1])
        return NULL;
    for (char *c = e; c < at; c++)
        if (!email_char_ok((unsigned char)*c))
            return NULL;
    /* The domain: dot-separated labels of letters, digits and inner hyphens. */
    const char *label = at + 1;
    for (const char *c = at + 1;; c++) {
        if (*c == '.' || *c == '\0') {
            size_t ll = (size_t)(c - label);
            if (ll == 0 || ll > 63 || label[0] == '-' || c[-1] == '-')
                return NULL;
            if (!*c)
                break;
            label = c + 1;
        } else if (!isalnum((unsigned char)*c) && *c != '-') {
            return NULL;
        }
    }
    for (char *c = e; *c; c++)
        *c = (char)tolower((unsigned char)*c);
    return e;
}

/* ---- authentication ---- */

static void free_user(void *p)
{
    ts_user_free(p);
}

void api_own_user(struct ts_http_req *req, struct ts_user *u)
{
    ts_arena_defer(ts_http_arena(req), free_user, u);
}

bool api_verify_bearer(struct ts_http_req *req, struct ts_principal *p)
{
    struct ts_api *api = ts_http_app(req);
    const char *h = ts_http_header(req, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7) != 0) {
        api_error(req, ERR_NO_AUTHORIZATION, NULL);
        return false;
    }
    const char *tok = h + 7;
    while (*tok == ' ')
        tok++;
    size_t len = strlen(tok);
    while (len && tok[len - 1] == ' ')
        len--;
    if (!len) {
        api_error(req, ERR_NO_AUTHORIZATION, NULL);
        return false;
    }
    enum ts_rc rc = ts_keyring_verify(api->keyring, tok, len, p);
    if (rc == TS_E_EXPIRED) {
        api_error(req, ERR_BAD_JWT,
                  "invalid JWT: unable to parse or verify signature, token has "
                  "invalid claims: token is expired");
        return false;
    }
    if (rc) {
        api_error(req, ERR_BAD_JWT, NULL);
        return false;
    }
    return true;
}

bool api_check_session(struct ts_http_req *req, const struct ts_principal *p, struct ts_user **user)
{
    struct ts_api *api = ts_http_app(req);
    struct ts_user *u = NULL;
    /* Every user request checks that its session still exists: this is what makes logout,
     * refresh-token reuse detection and user deletion take effect at once. */
    enum ts_rc rc = ts_store_session_user(api->store, p->session_id, p->sub, &u);
    if (rc == TS_E_NOT_FOUND) {
        api_error(req, ERR_SESSION_NOT_FOUND, NULL);
        return false;
    }
    if (rc) {
        api_fail(req, rc, "session check");
        return false;
    }
    api_own_user(req, u);
    if (u->banned_until > ts_now_us()) {
        api_error_status(req, ERR_USER_BANNED, 403, NULL);
        return false;
    }
    api_req(req)->user_id = u->id;
    *user = u;
    return true;
}

bool api_authenticate(struct ts_http_req *req, struct ts_principal *p, struct ts_user **user)
{
    struct ts_user *u = NULL;
    if (user)
        *user = NULL;
    if (!api_verify_bearer(req, p))
        return false;
    if (!p->sub[0])
        return true; /* an API key: no session to check */
    if (!api_check_session(req, p, &u))
        return false;
    if (user)
        *user = u;
    return true;
}

bool api_require_user(struct ts_http_req *req, struct ts_principal *p, struct ts_user **user)
{
    if (!api_authenticate(req, p, user))
        return false;
    if (!p->sub[0]) {
        api_error(req, ERR_BAD_JWT, "invalid claim: missing sub claim");
        return false;
    }
    return true;
}

bool api_require_admin(struct ts_http_req *req, struct ts_principal *p)
{
    struct ts_api *api = ts_http_app(req);
    if (!api_authenticate(req, p, NULL))
        return false;
    for (char **r = api->admin_roles; *r; r++)
        if (strcmp(*r, p->role) == 0)
            return true;
    api_error(req, ERR_NOT_ADMIN, NULL);
    return false;
}

/* ---- users ---- */

enum ts_rc api_update_user(struct ts_http_req *req, struct ts_user **pu,
                           api_user_reapply_fn *reapply, void *ctx)
{
    struct ts_api *api = ts_http_app(req);
    struct ts_user *u = *pu;
    enum ts_rc rc;
    for (int attempt = 0;; attempt++) {
        int64_t expected = u->updated_at;
        int64_t now = ts_now_us();
        u->updated_at = now > expected ? now : expected + 1; /* strictly newer */
        rc = ts_store_user_update(api->store, u, expected);
        if (rc != TS_E_STALE || attempt == 64)
            break;
        /* Writers racing on one user lose to each other in lockstep (read, write, stale,
         * read...). A short random pause, growing with the attempts and at most 2 ms of this
         * HTTP thread, breaks the lockstep; such races are rare outside tests. */
        uint32_t r;
        ts_rand_bytes(&r, sizeof(r));
        int64_t pause_us = (int64_t)(r % (uint32_t)(50 * (attempt + 1)));
        struct timespec ts = {.tv_sec = 0,
                              .tv_nsec = (long)(pause_us < 2000 ? pause_us : 2000) * 1000};
        nanosleep(&ts, NULL);
        struct ts_user *fresh = NULL;
        rc = ts_store_user_get(api->store, u->id, &fresh);
        if (rc)
            break;
        api_own_user(req, fresh);
        *pu = u = fresh;
        if (!reapply(req, u, ctx))
            return TS_E_INVALID;
    }
    /* 64 writers in a row beat us: tell the client to retry rather than spin. */
    return rc == TS_E_STALE ? TS_E_UNAVAILABLE : rc;
}

bool api_metadata_fits(struct ts_http_req *req, const struct ts_user *u)
{
    /* Metadata travels in every access token, and a token must fit in a request header
     * (HTTP_MAX_HEADER_BYTES): past this a user could sign in but never be recognised. */
    char probe[1];
    size_t n = json_dumpb(u->user_metadata, probe, 0, JSON_COMPACT) +
               json_dumpb(u->app_metadata, probe, 0, JSON_COMPACT);
    if (n <= API_MAX_METADATA)
        return true;
    api_error(req, ERR_VALIDATION_FAILED,
              "user_metadata and app_metadata together must stay under 8 KiB of JSON");
    return false;
}

void api_merge_metadata(json_t *target, json_t *patch)
{
    const char *key;
    json_t *value;
    json_object_foreach(patch, key, value)
    {
        if (json_is_null(value))
            json_object_del(target, key);
        else
            json_object_set(target, key, value);
    }
}

/*
 * The User object is written straight as text rather than built as a jansson tree and
 * dumped: GET /user and every session answer serialise one, and the tree cost more than the
 * rest of the request together (bench/RESULTS.md). Strings go through the JSON escaper;
 * metadata objects are dumped by jansson.
 */

/* Appends ,"key":"value" with value escaped. */
static enum ts_rc put_str(struct ts_buf *b, const char *key, const char *value)
{
    enum ts_rc rc = ts_buf_appendf(b, ",\"%s\":\"", key);
    if (!rc)
        rc = ts_buf_append_json_escaped(b, value);
    if (!rc)
        rc = ts_buf_append(b, "\"", 1);
    return rc;
}

/* Appends ,"key":"<RFC 3339 time>" unless us is 0 (GoTrue omits empty times). */
static enum ts_rc put_time(struct ts_buf *b, const char *key, int64_t us)
{
    if (!us)
        return TS_OK;
    char t[TS_TIME_STR_LEN];
    ts_time_format(us, t);
    return ts_buf_appendf(b, ",\"%s\":\"%s\"", key, t);
}

/* Appends ,"key":<compact JSON of j>. */
static enum ts_rc put_json(struct ts_buf *b, const char *key, const json_t *j)
{
    enum ts_rc rc = ts_buf_appendf(b, ",\"%s\":", key);
    char small[512];
    size_t n = json_dumpb(j, small, sizeof(small), JSON_COMPACT);
    if (rc || n == 0)
        return rc ? rc : ts_buf_append(b, "{}", 2);
    if (n <= sizeof(small))
        return ts_buf_append(b, small, n);
    char *big = json_dumps(j, JSON_COMPACT);
    rc = big ? ts_buf_append_str(b, big) : TS_E_INTERNAL;
    free(big);
    return rc;
}

/* The e-mail identity GoTrue lists for e-mail users. Its id is derived from the user id so
 * that it is stable without a row of its own. */
/* Opens an identity object with its identity_id: a stable UUID derived from seed (we keep no
 * identities table for these rows, so the same user always shows the same id). */
static enum ts_rc open_identity(struct ts_buf *b, const char *seed)
{
    uint8_t h[32];
    ts_sha256(seed, strlen(seed), h);
    h[6] = (uint8_t)((h[6] & 0x0f) | 0x40);
    h[8] = (uint8_t)((h[8] & 0x3f) | 0x80);
    char hex[33];
    ts_hex_encode(h, 16, hex);
    return ts_buf_appendf(b, "{\"identity_id\":\"%.8s-%.4s-%.4s-%.4s-%.12s\"", hex, hex + 8,
                          hex + 12, hex + 16, hex + 20);
}

static enum ts_rc put_email_identity(struct ts_buf *b, const struct ts_user *u)
{
    char seed[64];
    snprintf(seed, sizeof(seed), "identity:email:%s", u->id);
    enum ts_rc rc = open_identity(b, seed);
    if (!rc)
        rc = ts_buf_appendf(b, ",\"id\":\"%s\",\"user_id\":\"%s\"", u->id, u->id);
    if (!rc)
        rc = ts_buf_append_str(b, ",\"identity_data\":{\"email\":\"");
    if (!rc)
        rc = ts_buf_append_json_escaped(b, u->email);
    if (!rc)
        rc = ts_buf_appendf(b,
                            "\",\"sub\":\"%s\",\"email_verified\":%s,\"phone_verified\":false},"
                            "\"provider\":\"email\"",
                            u->id, u->email_confirmed_at ? "true" : "false");
    if (!rc)
        rc = put_str(b, "email", u->email);
    if (!rc)
        rc =
            put_time(b, "last_sign_in_at", u->last_sign_in_at ? u->last_sign_in_at : u->created_at);
    if (!rc)
        rc = put_time(b, "created_at", u->created_at);
    if (!rc)
        rc = put_time(b, "updated_at", u->updated_at);
    if (!rc)
        rc = ts_buf_append(b, "}", 1);
    return rc;
}

/* The identity of a user who came through an outside provider (the id_token grant): its
 * provider is app_metadata.provider and its data the claims kept in user_metadata, as GoTrue
 * fills them at sign-up. */
static enum ts_rc put_external_identity(struct ts_buf *b, const struct ts_user *u,
                                        const char *provider)
{
    const char *sub = json_string_value(json_object_get(u->user_metadata, "sub"));
    if (!sub)
        return TS_OK;
    char seed[600];
    snprintf(seed, sizeof(seed), "identity:%s:%s:%s", provider, sub, u->id);
    enum ts_rc rc = open_identity(b, seed);
    if (!rc)
        rc = ts_buf_append_str(b, ",\"id\":\"");
    if (!rc)
        rc = ts_buf_append_json_escaped(b, sub);
    if (!rc)
        rc = ts_buf_appendf(b, "\",\"user_id\":\"%s\"", u->id);
    if (!rc)
        rc = put_json(b, "identity_data", u->user_metadata);
    if (!rc)
        rc = put_str(b, "provider", provider);
    if (!rc && u->email)
        rc = put_str(b, "email", u->email);
    if (!rc)
        rc =
            put_time(b, "last_sign_in_at", u->last_sign_in_at ? u->last_sign_in_at : u->created_at);
    if (!rc)
        rc = put_time(b, "created_at", u->created_at);
    if (!rc)
        rc = put_time(b, "updated_at", u->updated_at);
    if (!rc)
        rc = ts_buf_append(b, "}", 1);
    return rc;
}

enum ts_rc api_user_write(struct ts_buf *b, const struct ts_user *u, bool hide_identities)
{
    enum ts_rc rc = ts_buf_appendf(b, "{\"id\":\"%s\"", u->id);
    if (!rc)
        rc = put_str(b, "aud", u->aud);
    if (!rc)
        rc = put_str(b, "role", u->role);
    if (!rc)
        rc = put_str(b, "email", u->email ? u->email : "");
    if (!rc)
        rc = put_time(b, "email_confirmed_at", u->email_confirmed_at);
    if (!rc)
        rc = put_str(b, "phone", u->phone ? u->phone : "");
    if (!rc)
        rc = put_time(b, "phone_confirmed_at", u->phone_confirmed_at);
    if (!rc)
        rc = put_time(b, "confirmation_sent_at", u->confirmation_sent_at);
    int64_t confirmed = u->email_confirmed_at;
    if (u->phone_confirmed_at && (!confirmed || u->phone_confirmed_at < confirmed))
        confirmed = u->phone_confirmed_at;
    if (!rc)
        rc = put_time(b, "confirmed_at", confirmed);
    if (!rc)
        rc = put_time(b, "invited_at", u->invited_at);
    if (!rc)
        rc = put_time(b, "last_sign_in_at", u->last_sign_in_at);
    if (!rc)
        rc = put_json(b, "app_metadata", u->app_metadata);
    if (!rc)
        rc = put_json(b, "user_metadata", u->user_metadata);
    if (!rc)
        rc = ts_buf_append_str(b, ",\"identities\":[");
    const char *provider = json_string_value(json_object_get(u->app_metadata, "provider"));
    bool external = provider && strcmp(provider, "email") != 0 && strcmp(provider, "phone") != 0;
    if (!rc && external && !u->is_anonymous && !hide_identities)
        rc = put_external_identity(b, u, provider);
    else if (!rc && u->email && !u->is_anonymous && !hide_identities)
        rc = put_email_identity(b, u);
    if (!rc)
        rc = ts_buf_append(b, "]", 1);
    if (!rc)
        rc = put_time(b, "created_at", u->created_at);
    if (!rc)
        rc = put_time(b, "updated_at", u->updated_at);
    if (!rc && u->banned_until > ts_now_us())
        rc = put_time(b, "banned_until", u->banned_until);
    if (!rc)
        rc = put_time(b, "deleted_at", u->deleted_at);
    if (!rc)
        rc = ts_buf_appendf(b, ",\"is_anonymous\":%s}", u->is_anonymous ? "true" : "false");
    return rc;
}

void api_respond_text(struct ts_http_req *req, int status, struct ts_buf *b, enum ts_rc rc)
{
    if (rc) {
        ts_buf_free(b);
        api_fail(req, rc, "serialise answer");
        return;
    }
    ts_http_respond(req, status, "application/json", b->data, b->len);
    ts_buf_free(b);
}

void api_respond_user(struct ts_http_req *req, const struct ts_user *u)
{
    struct ts_buf b;
    ts_buf_init(&b, API_MAX_ANSWER);
    api_respond_text(req, 200, &b, api_user_write(&b, u, false));
}

const char *api_password_problem(struct ts_api *api, const char *pw, const char **msg)
{
    /* Length in characters (UTF-8 code points), as GoTrue counts it. */
    size_t chars = 0;
    for (const unsigned char *c = (const unsigned char *)pw; *c; c++)
        chars += (*c & 0xc0) != 0x80;
    if ((int64_t)chars < api->cfg->password_min_length) {
        *msg = "Password should be at least the configured number of characters.";
        return "length";
    }
    const char *sets = api->cfg->password_required_characters;
    while (sets && *sets) {
        const char *end = strchr(sets, ':');
        size_t n = end ? (size_t)(end - sets) : strlen(sets);
        bool found = n == 0;
        for (size_t i = 0; i < n && !found; i++)
            found = strchr(pw, sets[i]) != NULL;
        if (!found) {
            *msg = "Password should contain at least one character of each required set.";
            return "characters";
        }
        sets = end ? end + 1 : NULL;
    }
    if (ts_pw_blocklist_contains(api->blocklist, pw, strlen(pw))) {
        *msg = "Password is known to be weak and easy to guess, please choose a different one.";
        return "pwned";
    }
    return NULL;
}

bool api_password_acceptable(struct ts_http_req *req, const char *password)
{
    /* GoTrue's limit, which bcrypt set; kept so that hashes stay portable both ways. */
    if (strlen(password) > 72) {
        api_error(req, ERR_VALIDATION_FAILED, "Password cannot be longer than 72 characters");
        return false;
    }
    const char *msg = NULL;
    const char *reason = api_password_problem(ts_http_app(req), password, &msg);
    if (reason) {
        api_weak_password(req, reason, msg);
        return false;
    }
    return true;
}

static void free_secret_text(void *p)
{
    char *h = p;
    ts_wipe(h, strlen(h));
    free(h);
}

void api_own_secret(struct ts_http_req *req, char *heap_text)
{
    if (heap_text)
        ts_arena_defer(ts_http_arena(req), free_secret_text, heap_text);
}

/* ---- sessions ---- */

/* The access token's claims (gotrue-api.md §5), written as text in the order GoTrue uses. */
static enum ts_rc write_claims(struct ts_buf *b, struct ts_api *api, const struct ts_user *u,
                               const char *session_id, const char *aal, const char *amr_json,
                               int64_t iat, int64_t exp)
{
    enum ts_rc rc = ts_buf_append_str(b, "{\"iss\":\"");
    if (!rc)
        rc = ts_buf_append_json_escaped(b, api->cfg->jwt_issuer);
    if (!rc)
        rc = ts_buf_appendf(b, "\",\"sub\":\"%s\"", u->id);
    if (!rc)
        rc = put_str(b, "aud", api->cfg->jwt_aud);
    if (!rc)
        rc = ts_buf_appendf(b, ",\"exp\":%lld,\"iat\":%lld", (long long)exp, (long long)iat);
    if (!rc)
        rc = put_str(b, "email", u->email ? u->email : "");
    if (!rc)
        rc = put_str(b, "phone", u->phone ? u->phone : "");
    if (!rc)
        rc = put_json(b, "app_metadata", u->app_metadata);
    if (!rc)
        rc = put_json(b, "user_metadata", u->user_metadata);
    if (!rc)
        rc = put_str(b, "role", u->role);
    if (!rc)
        rc = put_str(b, "aal", aal);
    if (!rc)
        rc = ts_buf_appendf(b, ",\"amr\":%s,\"session_id\":\"%s\",\"is_anonymous\":%s}", amr_json,
                            session_id, u->is_anonymous ? "true" : "false");
    return rc;
}

void api_respond_session(struct ts_http_req *req, const struct ts_user *u, const char *session_id,
                         const char *aal, const char *amr_json, const char *refresh_token,
                         const char *extra_members)
{
    struct ts_api *api = ts_http_app(req);
    int64_t now = ts_now_s();
    int64_t exp = now + api->cfg->jwt_exp;
    struct ts_buf b;
    ts_buf_init(&b, API_MAX_ANSWER);
    enum ts_rc rc = write_claims(&b, api, u, session_id, aal, amr_json, now, exp);
    char *token = NULL;
    if (!rc)
        rc = ts_keyring_sign_text(api->keyring, b.data, b.len, &token);
    if (rc) {
        ts_buf_free(&b);
        api_fail(req, rc, "sign access token");
        return;
    }
    ts_buf_clear(&b);
    rc = ts_buf_appendf(&b,
                        "{\"access_token\":\"%s\",\"token_type\":\"bearer\",\"expires_in\":%lld,"
                        "\"expires_at\":%lld,\"refresh_token\":\"%s\",\"user\":",
                        token, (long long)api->cfg->jwt_exp, (long long)exp, refresh_token);
    free(token);
    if (!rc)
        rc = api_user_write(&b, u, false);
    if (!rc && extra_members)
        rc = ts_buf_appendf(&b, ",%s", extra_members);
    if (!rc)
        rc = ts_buf_append(&b, "}", 1);
    api_req(req)->user_id = ts_arena_strdup(ts_http_arena(req), u->id);
    api_respond_text(req, 200, &b, rc);
}

void api_issue_session(struct ts_http_req *req, struct ts_user *u, const char *amr_method,
                       const char *extra_members)
{
    struct ts_api *api = ts_http_app(req);
    int64_t now = ts_now_us();
    char refresh[TS_REFRESH_TOKEN_LEN + 1];
    struct ts_session_new sn = {.user_id = u->id, .aal = "aal1", .now = now};
    ts_refresh_token_new(refresh, sn.refresh_hash);
    char amr[128];
    snprintf(amr, sizeof(amr), "[{\"method\":\"%s\",\"timestamp\":%lld}]", amr_method,
             (long long)(now / 1000000));
    sn.amr_json = amr;
    sn.ip = ts_http_client_ip(req);
    sn.user_agent = ts_http_header(req, "User-Agent");
    char session_id[TS_STORE_ID_LEN + 1];
    enum ts_rc rc = ts_store_session_create(api->store, &sn, session_id);
    if (rc) {
        ts_wipe(refresh, sizeof(refresh));
        if (rc == TS_E_NOT_FOUND)
            api_error(req, ERR_USER_NOT_FOUND, NULL);
        else
            api_fail(req, rc, "session create");
        return;
    }
    u->last_sign_in_at = now;
    api_respond_session(req, u, session_id, "aal1", amr, refresh, extra_members);
    ts_wipe(refresh, sizeof(refresh));
}

/* ---- the hash pool, seen from a request ---- */

static void hash_done(struct ts_hash_job *job)
{
    ts_http_resume(job->cls);
}

static void hash_start(struct ts_http_req *req)
{
    struct ts_api *api = ts_http_app(req);
    struct ts_hash_job *job = api_req(req)->work;
    if (ts_hashpool_submit(api->pool, job) != TS_OK) {
        job->rc = TS_E_BUSY;
        ts_http_resume(req);
    }
}

static void free_new_hash(void *p)
{
    struct ts_hash_job *job = p;
    if (job->new_hash) {
        ts_wipe(job->new_hash, strlen(job->new_hash));
        free(job->new_hash);
        job->new_hash = NULL;
    }
}

void api_hash_async(struct ts_http_req *req, struct ts_hash_job *job, ts_http_handler_fn *cont)
{
    job->done = hash_done;
    job->cls = req;
    job->rc = TS_OK;
    job->new_hash = NULL;
    api_req(req)->work = job;
    ts_arena_defer(ts_http_arena(req), free_new_hash, job);
    ts_http_suspend(req, hash_start, cont);
}

struct ts_hash_job *api_hash_job(struct ts_http_req *req)
{
    return api_req(req)->work;
}

/* ---- hooks ---- */

/* CORS (gotrue-api.md §1): allowed origins get their origin echoed with credentials and
 * the headers auth-js reads exposed. */
static bool origin_allowed(struct ts_http_req *req, const char *origin)
{
    struct ts_api *api = ts_http_app(req);
    const char *allowed = api->cfg->cors_allowed_origins;
    if (strcmp(allowed, "*") == 0)
        return true;
    size_t ol = strlen(origin);
    for (const char *p = allowed; p && *p;) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n == ol && strncmp(p, origin, n) == 0)
            return true;
        p = end ? end + 1 : NULL;
    }
    return false;
}

static void add_cors_headers(struct ts_http_req *req)
{
    const char *origin = ts_http_header(req, "Origin");
    if (!origin || !origin_allowed(req, origin))
        return;
    ts_http_add_header(req, "Access-Control-Allow-Origin", origin);
    ts_http_add_header(req, "Access-Control-Allow-Credentials", "true");
    ts_http_add_header(req, "Vary", "Origin");
    ts_http_add_header(req, "Access-Control-Expose-Headers",
                       "X-Total-Count, Link, X-Supabase-Api-Version, x-sb-error-code, "
                       "X-Request-Id");
    if (ts_http_method(req) == TS_HTTP_OPTIONS) {
        ts_http_add_header(req, "Access-Control-Allow-Methods",
                           "GET, POST, PUT, PATCH, DELETE, OPTIONS");
        ts_http_add_header(req, "Access-Control-Allow-Headers",
                           "Accept, Authorization, Content-Type, X-Client-IP, X-Client-Info, "
                           "X-JWT-AUD, x-use-cookie, X-Supabase-Api-Version, apikey, "
                           "x-client-info");
        ts_http_add_header(req, "Access-Control-Max-Age", "86400");
    }
}

static bool before(struct ts_http_req *req)
{
    (void)api_req(req);
    if (ts_http_method(req) == TS_HTTP_OPTIONS) {
        ts_http_respond(req, 204, NULL, "", 0);
        return true;
    }
    /* /auth/v1 is GoTrue's path; the native API lives at /v1 only */
    if (ts_http_prefixed(req) && v1_path(req)) {
        api_error(req, ERR_NOT_FOUND, NULL);
        return true;
    }
    return false;
}

static void after(struct ts_http_req *req)
{
    struct ts_api *api = ts_http_app(req);
    if (!api->cfg->log_requests)
        return;
    struct api_req *ar = ts_http_app_data(req);
    char when[TS_TIME_STR_LEN];
    ts_time_format(ts_now_us(), when);
    struct ts_buf b;
    ts_buf_init(&b, 4096);
    enum ts_rc rc = ts_buf_appendf(&b,
                                   "{\"time\":\"%s\",\"level\":\"info\",\"msg\":\"request\","
                                   "\"request_id\":\"%s\",\"method\":\"",
                                   when, ts_http_request_id(req));
    if (!rc)
        rc = ts_buf_append_json_escaped(&b, ts_http_method_name(req));
    if (!rc)
        rc = ts_buf_appendf(&b,
                            "\",\"route\":\"%s\",\"status\":%d,\"duration_us\":%lld,\"ip\":\"%s\"",
                            ts_http_route_name(req), ts_http_status(req),
                            (long long)ts_http_elapsed_us(req), ts_http_client_ip(req));
    if (!rc && ar && ar->user_id)
        rc = ts_buf_appendf(&b, ",\"user_id\":\"%s\"", ar->user_id);
    if (!rc)
        rc = ts_buf_append_str(&b, "}");
    if (!rc)
        ts_log_line(b.data, b.len);
    ts_buf_free(&b);
}

static void not_found(struct ts_http_req *req)
{
    if (v1_path(req)) {
        v1_not_found(req);
        return;
    }
    if (!ts_http_method_allowed(req)) {
        ts_http_add_header(req, "Allow", ts_http_allowed_methods(req));
        api_error(req, ERR_METHOD_NOT_ALLOWED, NULL);
    } else
        api_error(req, ERR_NOT_FOUND, NULL);
}

static void too_large(struct ts_http_req *req)
{
    if (v1_path(req)) {
        v1_too_large(req);
        return;
    }
    api_error(req, ERR_REQUEST_TOO_LARGE, NULL);
}

/* ---- setup ---- */

struct ts_api *ts_api_new(const struct ts_api_deps *deps)
{
    struct ts_api *api = ts_xcalloc(1, sizeof(*api));
    api->cfg = deps->cfg;
    api->store = deps->store;
    api->keyring = deps->keyring;
    api->pool = deps->hashpool;
    api->user_cache = api_user_cache_new(API_USER_CACHE_SLOTS);
    api->secret_cache = v1_secret_cache_new(API_USER_CACHE_SLOTS);
    struct ts_jwks_options jo = ts_jwks_options_default();
    if (ts_jwks_cache_new(&jo, &api->jwks) != TS_OK)
        ts_assert_fail("cannot start the JWKS cache", __FILE__, __LINE__);
    api->ext = v1_ext_new(api->jwks);
    api->authz = v1_authz_new(api->cfg);
    api->budgets = ts_local_limits_new();
    size_t n = 1;
    for (const char *c = api->cfg->jwt_admin_roles; *c; c++)
        n += *c == ',';
    api->admin_roles = ts_xcalloc(n + 1, sizeof(char *));
    size_t i = 0;
    for (const char *p = api->cfg->jwt_admin_roles; p && *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        while (len && *p == ' ') {
            p++;
            len--;
        }
        while (len && p[len - 1] == ' ')
            len--;
        if (len)
            api->admin_roles[i++] = ts_xstrndup(p, len);
        p = end ? end + 1 : NULL;
    }
    return api;
}

void ts_api_free(struct ts_api *api)
{
    if (!api)
        return;
    for (char **r = api->admin_roles; *r; r++)
        free(*r);
    free(api->admin_roles);
    api_user_cache_free(api->user_cache);
    v1_secret_cache_free(api->secret_cache);
    v1_ext_free(api->ext);
    v1_authz_free(api->authz);
    ts_jwks_cache_free(api->jwks);
    ts_pw_blocklist_free(api->blocklist);
    ts_limiter_free(api->limiter);
    ts_local_limits_free(api->budgets);
    free(api);
}

enum ts_rc ts_api_load_files(struct ts_api *api, char **err)
{
    if (!api->limiter) {
        enum ts_rc rc = ts_limiter_new(api->cfg, api->store, &api->limiter, err);
        if (rc)
            return rc;
    }
    if (!api->blocklist && api->cfg->password_blocklist[0]) {
        enum ts_rc rc = ts_pw_blocklist_open(api->cfg->password_blocklist, &api->blocklist, err);
        if (rc)
            return rc;
    }
    return v1_authz_load_routes(api->authz, api->cfg->gateway_routes, err);
}

void ts_api_http_options(struct ts_api *api, struct ts_http_options *opt)
{
    opt->routes = routes;
    opt->nroutes = TS_ARRAY_LEN(routes);
    opt->prefix = "/auth/v1";
    opt->not_found = not_found;
    opt->too_large = too_large;
    opt->before = before;
    opt->after = after;
    opt->app = api;
}

/*
 * api_admin.c - /admin/users: list, create, get, update, delete. Every handler
 * requires a bearer JWT whose role is one of JWT_ADMIN_ROLES.
 */
#include <stdlib.h>
#include <string.h>

#include "api_int.h"

static int64_t query_int(struct ts_http_req *req, const char *name, int64_t def, int64_t min,
                         int64_t max, bool *bad)
{
    const char *v = ts_http_query(req, name);
    if (!v || !*v)
        return def;
    int64_t n;
    if (ts_parse_i64(v, min, max, &n) != TS_OK) {
        *bad = true;
        return def;
    }
    return n;
}

/* ---- GET /admin/users ---- */

void api_admin_users_list(struct ts_http_req *req)
{
    struct ts_api *api = ts_http_app(req);
    struct ts_principal p;
    if (!api_require_admin(req, &p))
        return;
    bool bad = false;
    int64_t page = query_int(req, "page", 1, 1, 1000000000, &bad);
    int64_t per_page = query_int(req, "per_page", 50, 1, 1000, &bad);
    if (bad) {
        api_error(req, ERR_VALIDATION_FAILED,
                  "page and per_page must be positive integers "
                  "(per_page at most 1000)");
        return;
    }
    const char *filter = ts_http_query(req, "filter");
    if (filter && !*filter)
        filter = NULL;
    struct ts_user **users = NULL;
    size_t n = 0;
    int64_t total = 0;
    enum ts_rc rc =
        ts_store_user_list(api->store, (page - 1) * per_page, per_page, filter, &users, &n, &total);
    if (rc) {
        api_fail(req, rc, "user list");
        return;
    }
    struct ts_buf body;
    ts_buf_init(&body, API_MAX_ANSWER);
    rc = ts_buf_append_str(&body, "{\"users\":[");
    for (size_t i = 0; i < n && !rc; i++) {
        if (i)
            rc = ts_buf_append(&body, ",", 1);
        if (!rc)
            rc = api_user_write(&body, users[i], false);
    }
    ts_user_list_free(users, n);
    if (!rc)
        rc = ts_buf_append_str(&body, "],\"aud\":\"");
    if (!rc)
        rc = ts_buf_append_json_escaped(&body, api->cfg->jwt_aud);
    if (!rc)
        rc = ts_buf_append_str(&body, "\"}");

    char count[32];
    snprintf(count, sizeof(count), "%lld", (long long)total);
    ts_http_add_header(req, "X-Total-Count", count);
    /* gotrue-api.md §3: auth-js reads the page number right after the first '=' of each
     * link, so page comes first. */
    int64_t last = total == 0 ? 1 : (total + per_page - 1) / per_page;
    char *link;
    if (page < last)
        link = ts_arena_sprintf(ts_http_arena(req),
                                "</admin/users?page=%lld&per_page=%lld>; rel=\"next\", "
                                "</admin/users?page=%lld&per_page=%lld>; rel=\"last\"",
                                (long long)(page + 1), (long long)per_page, (long long)last,
                                (long long)per_page);
    else
        link = ts_arena_sprintf(ts_http_arena(req),
                                "</admin/users?page=%lld&per_page=%lld>; rel=\"last\"",
                                (long long)last, (long long)per_page);
    ts_http_add_header(req, "Link", link);
    api_respond_text(req, 200, &body, rc);
}

/* ---- shared by create and update ---- */

struct admin_work {
    struct ts_hash_job job; /* first: api_hash_job returns it */
    struct ts_user *user;
    json_t *body; /* the request's fields, re-applied if the user changed meanwhile */
    bool create;
    bool revoke_sessions; /* a ban, or a new password */
};

static bool apply_fields(struct ts_http_req *req, json_t *b, struct admin_work *w,
                         const char **password, const char **password_hash);

/* api_update_user's reapply: the same fields on a fresh copy of the user. */
static bool reapply_fields(struct ts_http_req *req, struct ts_user *u, void *ctx)
{
    struct admin_work *w = ctx;
    const char *password = NULL, *password_hash = NULL;
    w->user = u;
    return apply_fields(req, w->body, w, &password, &password_hash);
}

/* Parses ban_duration: "none" unbans (0), a Go duration bans until now + d. */
static bool parse_ban(const char *s, int64_t *banned_until)
{
    if (strcmp(s, "none") == 0) {
        *banned_until = 0;
        return true;
    }
    int64_t us;
    if (ts_duration_parse(s, &us) != TS_OK || us <= 0 || us > 100LL * 365 * 86400 * 1000000)
        return false;
    *banned_until = ts_now_us() + us;
    return true;
}

static void admin_finish(struct ts_http_req *req, struct admin_work *w, const char *hash)
{
    struct ts_api *api = ts_http_app(req);
    struct ts_user *u = w->user;
    enum ts_rc rc;
    if (w->create) {
        rc = ts_store_user_create(api->store, u, hash);
    } else {
        rc = api_update_user(req, &w->user, reapply_fields, w);
        if (rc == TS_E_INVALID)
            return; /* answered */
        u = w->user;
        if (!rc && hash)
            rc = ts_store_password_set(api->store, u->id, hash, NULL, false, NULL, u->updated_at);
        if (!rc && w->revoke_sessions)
            rc = ts_store_sessions_delete_for_user(api->store, u->id, NULL, NULL);
    }
    if (rc == TS_E_CONFLICT) {
        api_error(req, ERR_EMAIL_EXISTS, NULL);
        return;
    }
    if (rc == TS_E_NOT_FOUND) {
        api_error(req, ERR_USER_NOT_FOUND, NULL);
        return;
    }
    if (rc) {
        api_fail(req, rc, w->create ? "admin create user" : "admin update user");
        return;
    }
    if (hash)
        u->has_password = true;
    ts_store_audit(api->store, w->create ? "user_created_by_admin" : "user_updated_by_admin", NULL,
                   u->id, ts_http_client_ip(req), NULL);
    api_respond_user(req, u);
}

static void admin_hashed(struct ts_http_req *req)
{
    struct admin_work *w = (struct admin_work *)(void *)api_hash_job(req);
    if (w->job.rc) {
        api_fail(req, w->job.rc, "admin password hash");
        return;
    }
    admin_finish(req, w, w->job.new_hash);
}

/* Applies the body's fields to u; answers and returns false on a bad field. */
static bool apply_fields(struct ts_http_req *req, json_t *b, struct admin_work *w,
                         const char **password, const char **password_hash)
{
    struct ts_api *api = ts_http_app(req);
    struct ts_user *u = w->user;
    bool bad = false;
    const char *email = api_str(b, "email", &bad);
    const char *phone = api_str(b, "phone", &bad);
    const char *role = api_str(b, "role", &bad);
    const char *ban = api_str(b, "ban_duration", &bad);
    *password = api_str(b, "password", &bad);
    *password_hash = api_str(b, "password_hash", &bad);
    json_t *um = json_object_get(b, "user_metadata");
    json_t *am = json_object_get(b, "app_metadata");
    const json_t *email_confirm = json_object_get(b, "email_confirm");
    const json_t *phone_confirm = json_object_get(b, "phone_confirm");
    if (um && json_is_null(um))
        um = NULL;
    if (am && json_is_null(am))
        am = NULL;
    if (bad || (um && !json_is_object(um)) || (am && !json_is_object(am)) ||
        (email_confirm && !json_is_boolean(email_confirm) && !json_is_null(email_confirm)) ||
        (phone_confirm && !json_is_boolean(phone_confirm) && !json_is_null(phone_confirm))) {
        api_error(req, ERR_VALIDATION_FAILED, "a field has the wrong type");
        return false;
    }
    int64_t now = ts_now_us();
    if (email && *email) {
        char *norm = api_normalize_email(req, email);
        if (!norm) {
            api_error(req, ERR_EMAIL_ADDRESS_INVALID, NULL);
            return false;
        }
        if (!u->email || strcmp(u->email, norm) != 0) {
            free(u->email);
            u->email = ts_xstrdup(norm);
            u->email_confirmed_at = 0;
        }
    }
    if (phone && *phone) {
        if (strlen(phone) > 32) {
            api_error(req, ERR_VALIDATION_FAILED, "phone is too long");
            return false;
        }
        if (!u->phone || strcmp(u->phone, phone) != 0) {
            free(u->phone);
            u->phone = ts_xstrdup(phone);
            u->phone_confirmed_at = 0;
        }
    }
    if (json_is_true(email_confirm) && u->email && !u->email_confirmed_at)
        u->email_confirmed_at = now;
    if (json_is_false(email_confirm))
        u->email_confirmed_at = 0;
    if (json_is_true(phone_confirm) && u->phone && !u->phone_confirmed_at)
        u->phone_confirmed_at = now;
    if (json_is_false(phone_confirm))
        u->phone_confirmed_at = 0;
    if (role && *role) {
        if (strlen(role) > 63) {
            api_error(req, ERR_VALIDATION_FAILED, "role is too long");
            return false;
        }
        free(u->role);
        u->role = ts_xstrdup(role);
    }
    if (um)
        api_merge_metadata(u->user_metadata, um);
    if (am)
        api_merge_metadata(u->app_metadata, am);
    if (!api_metadata_fits(req, u))
        return false;
    if (ban && *ban) {
        if (!parse_ban(ban, &u->banned_until)) {
            api_error(req, ERR_VALIDATION_FAILED,
                      "ban_duration must be \"none\" or a duration such as \"24h\" or \"30m\"");
            return false;
        }
        /* SPEC §6: banning kills the user's sessions at once. */
        if (u->banned_until)
            w->revoke_sessions = true;
    }
    if (*password && *password_hash) {
        api_error(req, ERR_VALIDATION_FAILED, "give password or password_hash, not both");
        return false;
    }
    if (*password && !api_password_acceptable(req, *password))
        return false;
    if (*password_hash && !ts_password_hash_format_ok(*password_hash)) {
        api_error(req, ERR_VALIDATION_FAILED,
                  "password_hash must be an argon2id or bcrypt ($2a$/$2b$/$2y$) hash");
        return false;
    }
    if ((*password || *password_hash) && api->cfg->password_change_revokes_sessions && !w->create)
        w->revoke_sessions = true;
    return true;
}

static void admin_write(struct ts_http_req *req, struct admin_work *w, const char *password,
                        const char *password_hash)
{
    if (password) {
        w->job.op = TS_HASH_CREATE;
        w->job.password = api_secret_copy(req, password);
        w->job.password_len = strlen(password);
        api_hash_async(req, &w->job, admin_hashed);
        return;
    }
    admin_finish(req, w, password_hash);
}

/* ---- POST /admin/users ---- */

void api_admin_users_create(struct ts_http_req *req)
{
    struct ts_api *api = ts_http_app(req);
    struct ts_principal p;
    if (!api_require_admin(req, &p))
        return;
    json_t *b = api_body(req);
    if (!b)
        return;
    bool bad = false;
    const char *id = api_str(b, "id", &bad);
    if (bad || (id && !ts_uuid_valid(id))) {
        api_error(req, ERR_VALIDATION_FAILED, "id must be a UUID");
        return;
    }
    struct admin_work *w = ts_arena_calloc(ts_http_arena(req), sizeof(*w));
    struct ts_user *u = ts_user_new();
    api_own_user(req, u);
    w->user = u;
    w->create = true;
    if (id) {
        snprintf(u->id, sizeof(u->id), "%s", id);
        for (char *c = u->id; *c; c++)
            *c = (char)(*c >= 'A' && *c <= 'F' ? *c - 'A' + 'a' : *c);
    } else {
        ts_uuid_v4(u->id);
    }
    u->aud = ts_xstrdup(api->cfg->jwt_aud);
    u->role = ts_xstrdup(api->cfg->jwt_default_group_name);
    u->created_at = u->updated_at = ts_now_us();
    const char *password = NULL, *password_hash = NULL;
    if (!apply_fields(req, b, w, &password, &password_hash))
        return;
    if (!u->email && !u->phone) {
        api_error(req, ERR_VALIDATION_FAILED, "email or phone is required");
        return;
    }
    /* Provider facts are the server's, whatever app_metadata the caller sent. */
    const char *provider = u->email ? "email" : "phone";
    json_object_set_new(u->app_metadata, "provider", json_string(provider));
    json_object_set_new(u->app_metadata, "providers", json_pack("[s]", provider));
    admin_write(req, w, password, password_hash);
}

/* ---- GET /admin/users/{id} ---- */

static struct ts_user *load_user(struct ts_http_req *req)
{
    struct ts_api *api = ts_http_app(req);
    const char *id = ts_http_param(req, "id");
    if (!id || !ts_uuid_valid(id)) {
        api_error(req, ERR_USER_NOT_FOUND, NULL);
        return NULL;
    }
    struct ts_user *u = NULL;
    enum ts_rc rc = ts_store_user_get(api->store, id, &u);
    if (rc == TS_E_NOT_FOUND) {
        api_error(req, ERR_USER_NOT_FOUND, NULL);
        return NULL;
    }
    if (rc) {
        api_fail(req, rc, "admin get user");
        return NULL;
    }
    api_own_user(req, u);
    return u;
}

void api_admin_user_get(struct ts_http_req *req)
{
    struct ts_principal p;
    if (!api_require_admin(req, &p))
        return;
    struct ts_user *u = load_user(req);
    if (u)
        api_respond_user(req, u);
}

/* ---- PUT /admin/users/{id} ---- */

void api_admin_user_update(struct ts_http_req *req)
{
    struct ts_principal p;
    if (!api_require_admin(req, &p))
        return;
    json_t *b = api_body(req);
    if (!b)
        return;
    struct ts_user *u = load_user(req);
    if (!u)
        return;
    struct admin_work *w = ts_arena_calloc(ts_http_arena(req), sizeof(*w));
    w->user = u;
    w->body = b;
    const char *password = NULL, *password_hash = NULL;
    if (!apply_fields(req, b, w, &password, &password_hash))
        return;
    admin_write(req, w, password, password_hash);
}

/* ---- DELETE /admin/users/{id} ---- */

/* Soft deletion keeps the row (and its id) but makes it unusable: no address to sign in with,
 * metadata cleared, deleted_at set; the caller then ends the sessions. */
static bool soft_delete(struct ts_http_req *req, struct ts_user *u, void *ctx)
{
    (void)req;
    (void)ctx;
    free(u->email);
    free(u->phone);
    u->email = u->phone = NULL;
    if (!u->deleted_at)
        u->deleted_at = ts_now_us();
    json_object_clear(u->user_metadata);
    return true;
}

void api_admin_user_delete(struct ts_http_req *req)
{
    struct ts_api *api = ts_http_app(req);
    struct ts_principal p;
    if (!api_require_admin(req, &p))
        return;
    size_t len;
    ts_http_body(req, &len);
    bool soft = false;
    if (len) {
        json_t *b = api_body(req);
        if (!b)
            return;
        const json_t *s = json_object_get(b, "should_soft_delete");
        if (s && !json_is_boolean(s) && !json_is_null(s)) {
            api_error(req, ERR_VALIDATION_FAILED, "should_soft_delete must be a boolean");
            return;
        }
        soft = json_is_true(s);
    }
    const char *id = ts_http_param(req, "id");
    if (!id || !ts_uuid_valid(id)) {
        api_error(req, ERR_USER_NOT_FOUND, NULL);
        return;
    }
    enum ts_rc rc;
    if (soft) {
        struct ts_user *u = load_user(req);
        if (!u)
            return;
        (void)soft_delete(req, u, NULL);
        rc = api_update_user(req, &u, soft_delete, NULL);
        if (!rc)
            rc = ts_store_sessions_delete_for_user(api->store, u->id, NULL, NULL);
    } else {
        rc = ts_store_user_delete(api->store, id);
    }
    if (rc == TS_E_NOT_FOUND) {
        api_error(req, ERR_USER_NOT_FOUND, NULL);
        return;
    }
    if (rc) {
        api_fail(req, rc, "admin delete user");
        return;
    }
    ts_store_audit(api->store, "user_deleted", NULL, id, ts_http_client_ip(req),
                   soft ? "{\"soft\":true}" : NULL);
    api_json(req, 200, json_object());
}

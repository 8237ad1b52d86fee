/*
 * api_token.c - POST /token: the password and refresh_token grants.
 *
 * The password grant looks the user up, then verifies on the hash pool; an unknown
 * e-mail is verified against a dummy hash, so it costs the same time and gets the
 * same answer as a wrong password (invalid_credentials).
 */
#include <stdlib.h>
#include <string.h>

#include "api_int.h"

struct login_work {
    struct ts_hash_job job;    /* first: api_hash_job returns it */
    struct ts_user *user;      /* NULL for an unknown e-mail */
    char *hash;                /* the stored hash, or NULL */
    struct ts_lockout lockout; /* the account's failure slot, held during the check */
};

static void password_verified(struct ts_http_req *req)
{
    struct ts_api *api = ts_http_app(req);
    struct login_work *w = (struct login_work *)(void *)api_hash_job(req);
    api_lockout_settle(req, &w->lockout, w->job.rc, w->job.match && w->user);
    if (w->job.rc) {
        api_fail(req, w->job.rc, "password verify");
        return;
    }
    if (!w->job.match || !w->user) {
        ts_store_audit(api->store, "login_failed", w->user ? w->user->id : NULL, NULL,
                       ts_http_client_ip(req), NULL);
        api_error(req, ERR_INVALID_CREDENTIALS, NULL);
        return;
    }
    struct ts_user *u = w->user;
    if (w->job.needs_rehash && w->job.new_hash) {
        /* Upgrade an imported or outdated hash; lose no sleep if the password changed. */
        enum ts_rc rc = ts_store_password_set(api->store, u->id, w->job.new_hash, w->hash, false,
                                              NULL, ts_now_us());
        if (rc && rc != TS_E_CONFLICT)
            ts_log_warn("password rehash for a user failed: %s", ts_rc_name(rc));
    }
    if (u->banned_until > ts_now_us()) {
        api_error(req, ERR_USER_BANNED, NULL);
        return;
    }
    if (!u->email_confirmed_at) {
        api_error(req, ERR_EMAIL_NOT_CONFIRMED, NULL);
        return;
    }
    ts_store_audit(api->store, "login", u->id, NULL, ts_http_client_ip(req),
                   "{\"provider\":\"email\"}");
    /* gotrue-api.md §3: a password that no longer meets the policy still signs in, and the
     * session says so, so that the application can ask for a new one. */
    const char *msg = NULL;
    const char *reason = api_password_problem(api, w->job.password, &msg);
    char *weak = NULL;
    if (reason)
        weak = ts_arena_sprintf(ts_http_arena(req),
                                "\"weak_password\":{\"reasons\":[\"%s\"],\"message\":\"%s\"}",
                                reason, msg);
    api_issue_session(req, u, "password", weak);
}

static void grant_password(struct ts_http_req *req, json_t *b)
{
    struct ts_api *api = ts_http_app(req);
    bool bad = false;
    const char *email = api_str(b, "email", &bad);
    const char *phone = api_str(b, "phone", &bad);
    const char *password = api_str(b, "password", &bad);
    if (bad) {
        api_error(req, ERR_VALIDATION_FAILED, "email, phone and password must be strings");
        return;
    }
    if (email && !*email)
        email = NULL;
    if (phone && !*phone)
        phone = NULL;
    if (email && phone) {
        api_error(req, ERR_VALIDATION_FAILED,
                  "Only an email address or phone number should be provided on login.");
        return;
    }
    if (!email && !phone) {
        api_error(req, ERR_VALIDATION_FAILED, "An email address or phone number is required");
        return;
    }
    if (email && !api->cfg->external_email_enabled) {
        api_error(req, ERR_EMAIL_PROVIDER_DISABLED, NULL);
        return;
    }
    if (!password)
        password = "";
    struct login_work *w = ts_arena_calloc(ts_http_arena(req), sizeof(*w));
    /* Phone sign-in is not offered yet: such users are never found, at the same cost. */
    char *norm = email ? api_normalize_email(req, email) : NULL;
    if (norm) {
        enum ts_rc rc = ts_store_user_get_by_email(api->store, norm, &w->user, &w->hash);
        if (rc && rc != TS_E_NOT_FOUND) {
            api_fail(req, rc, "login lookup");
            return;
        }
        if (w->user)
            api_own_user(req, w->user);
        api_own_secret(req, w->hash);
        /* the same account name whichever API signs in, and for unknown e-mails alike */
        const char *account = w->user ? ts_arena_sprintf(ts_http_arena(req), "user:%s", w->user->id)
                                      : ts_arena_sprintf(ts_http_arena(req), "email:%s", norm);
        if (!api_account_checks(req, account, &w->lockout))
            return;
    }
    w->job.op = TS_HASH_VERIFY;
    w->job.hash = w->hash; /* NULL: the pool verifies against its dummy hash */
    w->job.password = api_secret_copy(req, password);
    w->job.password_len = strlen(password);
    api_hash_async(req, &w->job, password_verified);
}

static void grant_refresh(struct ts_http_req *req, json_t *b)
{
    struct ts_api *api = ts_http_app(req);
    bool bad = false;
    const char *token = api_str(b, "refresh_token", &bad);
    if (bad || !token || !*token) {
        api_oauth_error(req, "invalid_request", "refresh_token required");
        return;
    }
    if (strlen(token) < 12 || strlen(token) > 256) {
        api_error(req, ERR_VALIDATION_FAILED, "Refresh token is not valid");
        return;
    }
    struct ts_refresh_request rr = {
        .now = ts_now_us(),
        .reuse_interval = api->cfg->refresh_token_reuse_interval * 1000000,
        .rotation_enabled = api->cfg->refresh_token_rotation_enabled,
        .ip = ts_http_client_ip(req),
        .user_agent = ts_http_header(req, "User-Agent"),
    };
    ts_refresh_token_hash(token, strlen(token), rr.presented);
    char next[TS_REFRESH_TOKEN_LEN + 1];
    ts_refresh_token_new(next, rr.next);
    struct ts_refresh_result res;
    enum ts_rc rc = ts_store_refresh_rotate(api->store, &rr, &res);
    if (rc) {
        api_fail(req, rc, "refresh");
        return;
    }
    switch (res.outcome) {
    case TS_REFRESH_NOT_FOUND:
        api_error(req, ERR_REFRESH_TOKEN_NOT_FOUND, NULL);
        return;
    case TS_REFRESH_ALREADY_USED:
        ts_store_audit(api->store, "token_revoked", NULL, res.session_id, ts_http_client_ip(req),
                       "{\"reason\":\"refresh_token_reused\"}");
        api_error(req, ERR_REFRESH_TOKEN_ALREADY_USED, NULL);
        return;
    case TS_REFRESH_ROTATED:
    case TS_REFRESH_REUSED:
        break;
    }
    struct ts_user *u = NULL;
    rc = ts_store_session_user(api->store, res.session_id, res.user_id, &u);
    if (rc == TS_E_NOT_FOUND) {
        api_error(req, ERR_REFRESH_TOKEN_NOT_FOUND, NULL);
        return;
    }
    if (rc) {
        api_fail(req, rc, "refresh user");
        return;
    }
    api_own_user(req, u);
    if (u->banned_until > ts_now_us()) {
        api_error(req, ERR_USER_BANNED, NULL);
        return;
    }
    api_respond_session(req, u, res.session_id, res.aal, res.amr_json, next, NULL);
    ts_wipe(next, sizeof(next));
}

void api_token(struct ts_http_req *req)
{
    if (!api_limit_address(req, TS_LIMIT_TOKEN))
        return;
    json_t *b = api_body(req);
    if (!b)
        return;
    /* GoTrue reads grant_type with FormValue: the query string, or a form body. */
    const char *grant = ts_http_query(req, "grant_type");
    bool bad = false;
    if (!grant)
        grant = api_str(b, "grant_type", &bad);
    if (grant && strcmp(grant, "password") == 0)
        grant_password(req, b);
    else if (grant && strcmp(grant, "id_token") == 0)
        api_grant_id_token(req, b);
    else if (grant && strcmp(grant, "refresh_token") == 0)
        grant_refresh(req, b);
    else
        api_error(req, ERR_INVALID_CREDENTIALS, "unsupported_grant_type");
}

/*
 * api_user.c - POST /signup, GET /user, PUT /user, POST /logout.
 */
#include <stdlib.h>
#include <string.h>

#include "api_int.h"

/* ---- POST /signup ---- */

struct signup_work {
    struct ts_hash_job job; /* first: the pool's continuation finds the work through it */
    struct ts_user *user;
};

static struct ts_user *new_user(struct ts_api *api, int64_t now)
{
    struct ts_user *u = ts_user_new();
    ts_uuid_v4(u->id);
    u->aud = ts_xstrdup(api->cfg->jwt_aud);
    u->role = ts_xstrdup(api->cfg->jwt_default_group_name);
    u->created_at = now;
    u->updated_at = now;
    return u;
}

/* GoTrue answers a sign-up for a taken address with a plausible user that exists nowhere,
 * so that sign-up cannot be used to find out who has an account (gotrue-api.md §3). */
static void respond_obfuscated_user(struct ts_http_req *req, const char *email)
{
    struct ts_api *api = ts_http_app(req);
    struct ts_user *fake = new_user(api, ts_now_us());
    api_own_user(req, fake);
    fake->email = ts_xstrdup(email);
    fake->confirmation_sent_at = fake->created_at;
    json_object_set_new(fake->app_metadata, "provider", json_string("email"));
    json_object_set_new(fake->app_metadata, "providers", json_pack("[s]", "email"));
    struct ts_buf b;
    ts_buf_init(&b, API_MAX_ANSWER);
    api_respond_text(req, 200, &b, api_user_write(&b, fake, true));
}

static void signup_hashed(struct ts_http_req *req)
{
    struct ts_api *api = ts_http_app(req);
    struct signup_work *w = (struct signup_work *)(void *)api_hash_job(req);
    struct ts_user *u = w->user;
    if (w->job.rc) {
        api_fail(req, w->job.rc, "signup hash");
        return;
    }
    enum ts_rc rc = ts_store_user_create(api->store, u, w->job.new_hash);
    if (rc == TS_E_CONFLICT) {
        if (api->cfg->mailer_autoconfirm) {
            api_error(req, ERR_USER_ALREADY_EXISTS, NULL);
        } else {
            respond_obfuscated_user(req, u->email);
        }
        return;
    }
    if (rc) {
        api_fail(req, rc, "signup");
        return;
    }
    ts_store_audit(api->store, "user_signedup", u->id, u->id, ts_http_client_ip(req),
                   "{\"provider\":\"email\"}");
    if (u->email_confirmed_at) {
        api_issue_session(req, u, "password", NULL);
        return;
    }
    api_respond_user(req, u);
}

static void signup_anonymous(struct ts_http_req *req, json_t *data)
{
    struct ts_api *api = ts_http_app(req);
    if (!api->cfg->external_anonymous_users_enabled) {
        api_error(req, ERR_ANONYMOUS_PROVIDER_DISABLED, NULL);
        return;
    }
    struct ts_user *u = new_user(api, ts_now_us());
    api_own_user(req, u);
    u->is_anonymous = true;
    if (data)
        json_object_update(u->user_metadata, data);
    if (!api_metadata_fits(req, u))
        return;
    enum ts_rc rc = ts_store_user_create(api->store, u, NULL);
    if (rc) {
        api_fail(req, rc, "anonymous signup");
        return;
    }
    ts_store_audit(api->store, "user_signedup", u->id, u->id, ts_http_client_ip(req),
                   "{\"provider\":\"anonymous\"}");
    api_issue_session(req, u, "anonymous", NULL);
}

/* The account's bucket (RATE_LIMIT_ACCOUNT), named as a login names it ("user:<id>" when the
 * e-mail is taken, else "email:<address>"), so that sign-ups and logins together tell nobody
 * whether an address is registered. False when it answered. */
static bool signup_account_check(struct ts_http_req *req, const char *email)
{
    struct ts_api *api = ts_http_app(req);
    struct ts_user *known = NULL;
    char *hash = NULL;
    enum ts_rc rc = ts_store_user_get_by_email(api->store, email, &known, &hash);
    if (rc && rc != TS_E_NOT_FOUND) {
        api_fail(req, rc, "sign-up lookup");
        return false;
    }
    const char *account = known ? ts_arena_sprintf(ts_http_arena(req), "user:%s", known->id)
                                : ts_arena_sprintf(ts_http_arena(req), "email:%s", email);
    if (known)
        api_own_user(req, known);
    api_own_secret(req, hash);
    return api_limit_subject(req, TS_LIMIT_ACCOUNT, account);
}

void api_signup(struct ts_http_req *req)
{
    struct ts_api *api = ts_http_app(req);
    json_t *b = api_body(req);
    if (!b)
        return;
    bool bad = false;
    const char *email = api_str(b, "email", &bad);
    const char *phone = api_str(b, "phone", &bad);
    const char *password = api_str(b, "password", &bad);
    json_t *data = json_object_get(b, "data");
    if (data && json_is_null(data))
        data = NULL;
    if (bad || (data && !json_is_object(data))) {
        api_error(req, ERR_VALIDATION_FAILED,
                  "email, phone and password must be strings and "
                  "data an object");
        return;
    }
    if (api->cfg->disable_signup) {
        api_error(req, ERR_SIGNUP_DISABLED, NULL);
        return;
    }
    if (email && !*email)
        email = NULL;
    if (phone && !*phone)
        phone = NULL;
    if (!api_limit_address(req, !email && !phone ? TS_LIMIT_ANONYMOUS : TS_LIMIT_OTP))
        return;
    if (!email && !phone) {
        signup_anonymous(req, data);
        return;
    }
    if (phone && !email) {
        api_error(req, ERR_PHONE_PROVIDER_DISABLED, "Phone signups are disabled");
        return;
    }
    if (!api->cfg->external_email_enabled) {
        api_error(req, ERR_EMAIL_PROVIDER_DISABLED, "Email signups are disabled");
        return;
    }
    char *norm = api_normalize_email(req, email);
    if (!norm) {
        api_error(req, ERR_EMAIL_ADDRESS_INVALID, NULL);
        return;
    }
    if (!password || !*password) {
        api_error(req, ERR_VALIDATION_FAILED, "Signup requires a valid password");
        return;
    }
    if (!api_password_acceptable(req, password))
        return;
    int64_t now = ts_now_us();
    struct ts_user *u = new_user(api, now);
    api_own_user(req, u);
    u->email = ts_xstrdup(norm);
    if (api->cfg->mailer_autoconfirm)
        u->email_confirmed_at = now;
    json_object_set_new(u->app_metadata, "provider", json_string("email"));
    json_object_set_new(u->app_metadata, "providers", json_pack("[s]", "email"));
    if (data)
        json_object_update(u->user_metadata, data);
    if (!api_metadata_fits(req, u) || !signup_account_check(req, norm))
        return;
    struct signup_work *w = ts_arena_calloc(ts_http_arena(req), sizeof(*w));
    w->user = u;
    w->job.op = TS_HASH_CREATE;
    w->job.password = api_secret_copy(req, password);
    w->job.password_len = strlen(password);
    api_hash_async(req, &w->job, signup_hashed);
}

/* ---- GET /user ---- */

void api_user_get(struct ts_http_req *req)
{
    struct ts_api *api = ts_http_app(req);
    struct ts_principal p;
    if (!api_verify_bearer(req, &p))
        return;
    if (!p.sub[0]) {
        api_error(req, ERR_BAD_JWT, "invalid claim: missing sub claim");
        return;
    }
    /* The epoch is read before the session check, so a change committed during the check
     * leaves the entry stale at once. */
    uint64_t epoch = ts_store_epoch(api->store);
    const char *text;
    size_t len;
    if (api_user_cache_get(api->user_cache, p.session_id, p.sub, epoch, ts_http_arena(req), &text,
                           &len)) {
        api_req(req)->user_id = ts_arena_strdup(ts_http_arena(req), p.sub);
        ts_http_respond(req, 200, "application/json", text, len);
        return;
    }
    struct ts_user *u;
    if (!api_check_session(req, &p, &u))
        return;
    struct ts_buf b;
    ts_buf_init(&b, API_MAX_ANSWER);
    enum ts_rc rc = api_user_write(&b, u, false);
    if (!rc && !u->banned_until)
        api_user_cache_put(api->user_cache, p.session_id, p.sub, epoch, b.data, b.len);
    api_respond_text(req, 200, &b, rc);
}

/* ---- PUT /user ---- */

/* The profile changes of a PUT /user, validated once and applied to whichever copy of the user
 * is current (see api_update_user). */
struct user_changes {
    const char *email; /* normalised; NULL when unchanged */
    json_t *data;      /* merged into user_metadata; may be NULL */
};

static bool apply_user_changes(struct ts_http_req *req, struct ts_user *u, void *ctx)
{
    const struct user_changes *ch = ctx;
    if (ch->email && (!u->email || strcmp(ch->email, u->email) != 0)) {
        free(u->email);
        u->email = ts_xstrdup(ch->email);
        u->email_confirmed_at = ts_now_us();
        if (u->is_anonymous) {
            /* An anonymous user who gives an address becomes a permanent e-mail user. */
            u->is_anonymous = false;
            json_object_set_new(u->app_metadata, "provider", json_string("email"));
            json_object_set_new(u->app_metadata, "providers", json_pack("[s]", "email"));
        }
    }
    if (ch->data)
        api_merge_metadata(u->user_metadata, ch->data);
    return api_metadata_fits(req, u);
}

/* Writes the user's changes; answers and returns false on failure. */
static bool write_user_changes(struct ts_http_req *req, struct ts_user **pu,
                               struct user_changes *ch)
{
    enum ts_rc rc = api_update_user(req, pu, apply_user_changes, ch);
    if (rc == TS_E_INVALID)
        return false; /* answered */
    if (rc == TS_E_CONFLICT) {
        api_error(req, ERR_EMAIL_EXISTS, NULL);
        return false;
    }
    if (rc == TS_E_NOT_FOUND) {
        api_error_status(req, ERR_USER_NOT_FOUND, 403, NULL);
        return false;
    }
    if (rc) {
        api_fail(req, rc, "user update");
        return false;
    }
    return true;
}

struct update_work {
    struct ts_hash_job job; /* first, as in signup_work */
    struct ts_user *user;
    struct user_changes changes;
    char *old_hash;
    const char *session_id;
    struct ts_lockout lockout; /* held while current_password is checked */
};

static void user_put_hashed(struct ts_http_req *req)
{
    struct ts_api *api = ts_http_app(req);
    struct update_work *w = (struct update_work *)(void *)api_hash_job(req);
    api_lockout_settle(req, &w->lockout, w->job.rc, w->job.match);
    if (w->job.rc) {
        api_fail(req, w->job.rc, "password change hash");
        return;
    }
    if (!w->job.match) {
        /* The same answer as a failed login: nothing to learn from it. */
        api_error(req, ERR_INVALID_CREDENTIALS, "Current password is incorrect");
        return;
    }
    if (w->job.same) {
        api_error(req, ERR_SAME_PASSWORD, NULL);
        return;
    }
    if (!write_user_changes(req, &w->user, &w->changes))
        return;
    enum ts_rc rc = ts_store_password_set(api->store, w->user->id, w->job.new_hash, w->old_hash,
                                          api->cfg->password_change_revokes_sessions, w->session_id,
                                          ts_now_us());
    if (rc == TS_E_CONFLICT) {
        /* The password changed while we were hashing: let the client retry. */
        api_error_status(req, ERR_VALIDATION_FAILED, 409, "The password changed meanwhile");
        return;
    }
    if (rc) {
        api_fail(req, rc, "password change");
        return;
    }
    w->user->has_password = true;
    ts_store_audit(api->store, "user_updated_password", w->user->id, w->user->id,
                   ts_http_client_ip(req), NULL);
    api_respond_user(req, w->user);
}

void api_user_put(struct ts_http_req *req)
{
    struct ts_api *api = ts_http_app(req);
    struct ts_principal p;
    struct ts_user *u;
    if (!api_require_user(req, &p, &u))
        return;
    json_t *b = api_body(req);
    if (!b)
        return;
    bool bad = false;
    const char *email = api_str(b, "email", &bad);
    const char *phone = api_str(b, "phone", &bad);
    const char *password = api_str(b, "password", &bad);
    const char *current = api_str(b, "current_password", &bad);
    struct user_changes ch = {.data = json_object_get(b, "data")};
    if (ch.data && json_is_null(ch.data))
        ch.data = NULL;
    if (bad || (ch.data && !json_is_object(ch.data))) {
        api_error(req, ERR_VALIDATION_FAILED,
                  "email, phone and passwords must be strings and data an object");
        return;
    }
    if ((email || phone || password) && !api_limit_address(req, TS_LIMIT_OTP))
        return;
    if (phone && *phone && (!u->phone || strcmp(phone, u->phone) != 0)) {
        api_error(req, ERR_PHONE_PROVIDER_DISABLED, "Phone changes are not supported");
        return;
    }
    if (email && *email) {
        char *norm = api_normalize_email(req, email);
        if (!norm) {
            api_error(req, ERR_EMAIL_ADDRESS_INVALID, NULL);
            return;
        }
        if (!u->email || strcmp(norm, u->email) != 0) {
            if (!api->cfg->mailer_autoconfirm) {
                api_error(req, ERR_VALIDATION_FAILED,
                          "Changing the e-mail address needs a confirmation mail, which this "
                          "server does not send yet; with MAILER_AUTOCONFIRM=true it changes at "
                          "once");
                return;
            }
            ch.email = norm;
        }
    }
    /* Applied now to answer a bad change before any hashing; written later. */
    if (!apply_user_changes(req, u, &ch))
        return;
    if (!password) {
        if (write_user_changes(req, &u, &ch))
            api_respond_user(req, u);
        return;
    }
    if (!u->email) {
        api_error(req, ERR_VALIDATION_FAILED, "Add an e-mail address before a password");
        return;
    }
    if (!api_password_acceptable(req, password))
        return;
    struct update_work *w = ts_arena_calloc(ts_http_arena(req), sizeof(*w));
    w->user = u;
    w->changes = ch;
    w->session_id = ts_arena_strdup(ts_http_arena(req), p.session_id);
    enum ts_rc rc = ts_store_password_get(api->store, u->id, &w->old_hash);
    if (rc && rc != TS_E_NOT_FOUND) {
        api_fail(req, rc, "password read");
        return;
    }
    api_own_secret(req, w->old_hash);
    w->job.op = TS_HASH_CHANGE;
    w->job.hash = w->old_hash;
    w->job.password = api_secret_copy(req, password);
    w->job.password_len = strlen(password);
    if (current) {
        if (w->old_hash &&
            !api_account_checks(req, ts_arena_sprintf(ts_http_arena(req), "user:%s", u->id),
                                &w->lockout))
            return;
        w->job.current_password = api_secret_copy(req, current);
        w->job.current_password_len = strlen(current);
    }
    api_hash_async(req, &w->job, user_put_hashed);
}

/* ---- POST /logout ---- */

void api_logout(struct ts_http_req *req)
{
    struct ts_api *api = ts_http_app(req);
    struct ts_principal p;
    struct ts_user *u;
    if (!api_require_user(req, &p, &u))
        return;
    const char *scope = ts_http_query(req, "scope");
    enum ts_rc rc;
    if (!scope || !*scope || strcmp(scope, "global") == 0) {
        rc = ts_store_sessions_delete_for_user(api->store, p.sub, NULL, NULL);
    } else if (strcmp(scope, "local") == 0) {
        rc = ts_store_session_delete(api->store, p.session_id);
        if (rc == TS_E_NOT_FOUND)
            rc = TS_OK;
    } else if (strcmp(scope, "others") == 0) {
        rc = ts_store_sessions_delete_for_user(api->store, p.sub, p.session_id, NULL);
    } else {
        api_error(req, ERR_VALIDATION_FAILED, "scope must be global, local or others");
        return;
    }
    if (rc) {
        api_fail(req, rc, "logout");
        return;
    }
    ts_store_audit(api->store, "logout", p.sub, p.session_id, ts_http_client_ip(req), NULL);
    ts_http_respond(req, 204, NULL, "", 0);
}

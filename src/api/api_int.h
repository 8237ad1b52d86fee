/*
 * api_int.h - private to src/api: the application context, the error table and the
 * helpers every handler shares (JSON bodies, authentication, user and session JSON).
 */
#ifndef TS_API_INT_H
#define TS_API_INT_H

#include <jansson.h>
#include <stdatomic.h>

#include "api.h"
#include "limit/limit.h"

struct ts_api {
    const struct ts_config *cfg;
    struct ts_store *store;
    struct ts_keyring *keyring;
    struct ts_hashpool *pool;
    char **admin_roles;                   /* split JWT_ADMIN_ROLES, NULL-terminated */
    struct api_user_cache *user_cache;    /* GET /user answers by session (api_cache.c) */
    struct v1_secret_cache *secret_cache; /* checked tst_/tsk_ secrets (api_v1.c) */
    struct ts_jwks_cache *jwks;           /* outside issuers' key sets (src/jwks) */
    struct v1_ext *ext;                   /* AccessProviders in use (api_v1_ext.c) */
    struct v1_authz *authz;               /* roles, profiles, gateway rules (api_v1_authz.c) */
    struct ts_pw_blocklist *blocklist;    /* PASSWORD_BLOCKLIST (ts_api_load_files), or NULL */
    struct ts_limiter *limiter;           /* abuse controls (NULL until ts_api_load_files) */
    struct ts_local_limits *budgets;      /* per-identity /v1 budgets of profiles, per node */
    atomic_llong limited;                 /* requests answered 429 by a limit or lockout */
};

/*
 * The GET /user cache: the User text last served for a session, valid while the store's epoch
 * (ts_store_epoch) has not moved since it was read. Any committed change to a user or session
 * moves the epoch, so an entry never outlives a logout, deletion, ban or update; it only
 * spares the session check's read when nothing changed.
 */
#define API_USER_CACHE_SLOTS 4096
struct api_user_cache;
struct api_user_cache *api_user_cache_new(size_t slots);
void api_user_cache_free(struct api_user_cache *c);
/* Copies the text cached for (session_id, user_id) at epoch into the arena; false on a miss. */
bool api_user_cache_get(struct api_user_cache *c, const char *session_id, const char *user_id,
                        uint64_t epoch, struct ts_arena *a, const char **text, size_t *len);
/* Caches text for (session_id, user_id), read at epoch (read before the data). */
void api_user_cache_put(struct api_user_cache *c, const char *session_id, const char *user_id,
                        uint64_t epoch, const char *text, size_t len);

/* Per-request state kept by this module (ts_http_app_data). */
struct api_req {
    bool versioned;      /* the client sent X-Supabase-Api-Version >= 2024-01-01 */
    const char *user_id; /* the authenticated user, for the log line */
    void *work;          /* the handler's state while the request is parked */
    bool ext_waited;     /* the request already waited once for a key set */
    void *ext_wait;      /* what it waits for (api_v1_ext.c) */
    void *authz;         /* the caller's roles and the decision inputs (api_v1_authz.c) */
};

/*
 * GoTrue's error codes: the code, the usual HTTP status and the default message.
 * Call sites may pass another status where GoTrue does (e.g. user_banned).
 */
#define API_ERROR_TABLE(X)                                                                         \
    X(ERR_BAD_JSON, 400, "bad_json", "Could not parse request body as JSON")                       \
    X(ERR_VALIDATION_FAILED, 400, "validation_failed", "Invalid request")                          \
    X(ERR_INVALID_CREDENTIALS, 400, "invalid_credentials", "Invalid login credentials")            \
    X(ERR_EMAIL_NOT_CONFIRMED, 400, "email_not_confirmed", "Email not confirmed")                  \
    X(ERR_USER_BANNED, 400, "user_banned", "User is banned")                                       \
    X(ERR_EMAIL_ADDRESS_INVALID, 400, "email_address_invalid",                                     \
      "Unable to validate email address: invalid format")                                          \
    X(ERR_EMAIL_PROVIDER_DISABLED, 400, "email_provider_disabled", "Email logins are disabled")    \
    X(ERR_PHONE_PROVIDER_DISABLED, 400, "phone_provider_disabled", "Phone logins are disabled")    \
    X(ERR_USER_ALREADY_EXISTS, 422, "user_already_exists", "User already registered")              \
    X(ERR_EMAIL_EXISTS, 422, "email_exists",                                                       \
      "A user with this email address has already been registered")                                \
    X(ERR_WEAK_PASSWORD, 422, "weak_password", "Password is too weak")                             \
    X(ERR_SAME_PASSWORD, 422, "same_password",                                                     \
      "New password should be different from the old password.")                                   \
    X(ERR_SIGNUP_DISABLED, 422, "signup_disabled", "Signups not allowed for this instance")        \
    X(ERR_ANONYMOUS_PROVIDER_DISABLED, 422, "anonymous_provider_disabled",                         \
      "Anonymous sign-ins are disabled")                                                           \
    X(ERR_REFRESH_TOKEN_NOT_FOUND, 400, "refresh_token_not_found",                                 \
      "Invalid Refresh Token: Refresh Token Not Found")                                            \
    X(ERR_REFRESH_TOKEN_ALREADY_USED, 400, "refresh_token_already_used",                           \
      "Invalid Refresh Token: Already Used")                                                       \
    X(ERR_SESSION_NOT_FOUND, 403, "session_not_found",                                             \
      "Session from session_id claim in JWT does not exist")                                       \
    X(ERR_NO_AUTHORIZATION, 401, "no_authorization", "This endpoint requires a Bearer token")      \
    X(ERR_BAD_JWT, 403, "bad_jwt", "invalid JWT: unable to parse or verify signature")             \
    X(ERR_NOT_ADMIN, 403, "not_admin", "User not allowed")                                         \
    X(ERR_USER_NOT_FOUND, 404, "user_not_found", "User not found")                                 \
    X(ERR_OVER_REQUEST_RATE_LIMIT, 429, "over_request_rate_limit", "Request rate limit reached")   \
    X(ERR_NOT_FOUND, 404, "not_found", "Not found")                                                \
    X(ERR_METHOD_NOT_ALLOWED, 405, "method_not_allowed", "Method not allowed")                     \
    X(ERR_REQUEST_TOO_LARGE, 413, "request_too_large", "Request body too large")                   \
    X(ERR_SERVICE_UNAVAILABLE, 503, "service_unavailable",                                         \
      "Service temporarily unavailable, please retry")                                             \
    X(ERR_UNEXPECTED_FAILURE, 500, "unexpected_failure", "Unexpected failure")

enum api_error {
#define API_ERROR_ENUM(id, status, code, msg) id,
    API_ERROR_TABLE(API_ERROR_ENUM)
#undef API_ERROR_ENUM
};

/* ---- responses ---- */

struct api_req *api_req(struct ts_http_req *req);
/* Sends j (consumed) as JSON with status. */
void api_json(struct ts_http_req *req, int status, json_t *j);
/* Sends a GoTrue error in the shape the client asked for; msg NULL = the table's. */
void api_error(struct ts_http_req *req, enum api_error e, const char *msg);
void api_error_status(struct ts_http_req *req, enum api_error e, int status, const char *msg);
/* 422 weak_password with {"weak_password":{"reasons":[reason]}}. */
void api_weak_password(struct ts_http_req *req, const char *reason, const char *msg);
/* OAuth-style {"error","error_description"}, always 400 (gotrue-api.md §1). */
void api_oauth_error(struct ts_http_req *req, const char *error, const char *description);
/* Maps a store/internal failure to 503 or 500 with a log line. */
void api_fail(struct ts_http_req *req, enum ts_rc rc, const char *what);

/* ---- requests ---- */

/* The JSON object body (form bodies are converted), owned by the request arena; on failure
 * it answers 400 bad_json and returns NULL. */
json_t *api_body(struct ts_http_req *req);
/* Decodes an application/x-www-form-urlencoded body into a new JSON object of strings (a key
 * without '=' gets ""; the last of repeated keys wins); NULL when a %-escape is malformed, one
 * decodes to NUL or a key or value is not UTF-8. Scratch space comes from a. Exposed for
 * tests/fuzz/fuzz_form.c. */
json_t *api_parse_form(struct ts_arena *a, const char *body, size_t len);
/* A string member of obj, or NULL when absent or null; *bad set when present but no string. */
const char *api_str(const json_t *obj, const char *key, bool *bad);
/* Copies s into the arena and registers its wiping at the end of the request. */
char *api_secret_copy(struct ts_http_req *req, const char *s);
/* Lower-cases and trims an e-mail into the arena; NULL if it is not a plausible address. */
char *api_normalize_email(struct ts_http_req *req, const char *email);

/* ---- authentication ---- */

/* Verifies the bearer token alone (signature, claims); answers and returns false on failure. */
bool api_verify_bearer(struct ts_http_req *req, struct ts_principal *p);
/* Checks that a user token's session exists and its user is not banned, and loads the user
 * (owned by the request); answers and returns false on failure. */
bool api_check_session(struct ts_http_req *req, const struct ts_principal *p,
                       struct ts_user **user);
/* Verifies the bearer token and, for user tokens, that its session exists. On success fills
 * *p and (for user tokens) *user (owned by the request). On failure answers and returns false. */
bool api_authenticate(struct ts_http_req *req, struct ts_principal *p, struct ts_user **user);
/* api_authenticate, then requires a user token. */
bool api_require_user(struct ts_http_req *req, struct ts_principal *p, struct ts_user **user);
/* api_authenticate, then requires an admin role. */
bool api_require_admin(struct ts_http_req *req, struct ts_principal *p);
/* Registers u to be freed with the request. */
void api_own_user(struct ts_http_req *req, struct ts_user *u);

/* ---- users and sessions ---- */

/* Merges patch into target key by key; a null value deletes the key (gotrue-api.md §3). */
void api_merge_metadata(json_t *target, json_t *patch);
/* Largest user_metadata + app_metadata, bytes of compact JSON. */
#define API_MAX_METADATA 8192
/* False (and answers 400) when u's metadata is too large to travel in its tokens. */
bool api_metadata_fits(struct ts_http_req *req, const struct ts_user *u);

/* Largest answer we build, bytes. */
#define API_MAX_ANSWER (16u << 20)

/* Appends GoTrue's User object for u to b (identities:[] when hide_identities). */
TS_NODISCARD enum ts_rc api_user_write(struct ts_buf *b, const struct ts_user *u,
                                       bool hide_identities);
/* Answers b's text (freeing b) with status, or api_fail when rc says building it failed. */
void api_respond_text(struct ts_http_req *req, int status, struct ts_buf *b, enum ts_rc rc);
/* Answers 200 with u's User object. */
void api_respond_user(struct ts_http_req *req, const struct ts_user *u);
/* The length and policy checks of a new password; answers (400 or 422) and returns false
 * when it is not acceptable. */
bool api_password_acceptable(struct ts_http_req *req, const char *password);
/* Registers a heap string holding a secret (a password hash) to be wiped and freed with the
 * request; NULL is ignored. */
void api_own_secret(struct ts_http_req *req, char *heap_text);

/* Makes a change to a user again, on a freshly read copy; false when it answered an error. */
typedef bool api_user_reapply_fn(struct ts_http_req *req, struct ts_user *u, void *ctx);

/*
 * Writes *pu, which already carries the request's changes, with the store's compare-and-swap.
 * When another writer changed the user meanwhile, the user is read again, reapply() makes the
 * same changes on the fresh copy (*pu then points to it; it is owned by the request) and the
 * write is retried, so concurrent updates never lose each other's changes. Returns the store's
 * result; TS_E_INVALID when reapply answered an error itself.
 */
TS_NODISCARD enum ts_rc api_update_user(struct ts_http_req *req, struct ts_user **pu,
                                        api_user_reapply_fn *reapply, void *ctx);

/* Password policy: NULL when acceptable, else the weak_password reason ("length",
 * "characters", or "pwned" when PASSWORD_BLOCKLIST lists it) and sets *msg. Passwords over
 * 72 bytes are refused as GoTrue does. */
const char *api_password_problem(struct ts_api *api, const char *pw, const char **msg);

/* Creates a session for u (amr method), signs its access token and answers 200 with GoTrue's
 * session object. extra_members (may be NULL) is JSON text of further members, such as
 * "weak_password":{...}, appended to the object. */
void api_issue_session(struct ts_http_req *req, struct ts_user *u, const char *amr_method,
                       const char *extra_members);

/* Answers 200 with the session object of an existing session: a fresh access token for it
 * and the given refresh token. */
void api_respond_session(struct ts_http_req *req, const struct ts_user *u, const char *session_id,
                         const char *aal, const char *amr_json, const char *refresh_token,
                         const char *extra_members);

/* Hands job to the hash pool with the request parked; cont runs when it finishes (or with
 * job->rc = TS_E_BUSY when the queue was full). job lives in the request arena. */
void api_hash_async(struct ts_http_req *req, struct ts_hash_job *job, ts_http_handler_fn *cont);
/* In a continuation: the job submitted by api_hash_async. */
struct ts_hash_job *api_hash_job(struct ts_http_req *req);

/* ---- abuse controls (api_limits.c) ---- */

/* Answers 429 with Retry-After in the API's shape (GoTrue's over_request_rate_limit, or /v1's
 * too_many_requests). */
void api_too_many(struct ts_http_req *req, int64_t retry_after_s, const char *msg);
/* Takes a token of cls for the client's address (ts_limit_client: RATE_LIMIT_HEADER and
 * RATE_LIMIT_EXEMPT apply). False when it answered (429, or 503 when the store failed). */
bool api_limit_address(struct ts_http_req *req, enum ts_limit_class cls);
/* The same for another subject (an account, a key id); NULL subject: nothing to limit. */
bool api_limit_subject(struct ts_http_req *req, enum ts_limit_class cls, const char *subject);
/* Reserves a failure slot for account before its password is checked; false when it
 * answered (locked: 429; store failure: 503). NULL account: nothing reserved. */
bool api_lockout_reserve(struct ts_http_req *req, const char *account, struct ts_lockout *t);
/* After the check (ts_lockout_settle): check_rc not TS_OK means no check ran (the slot is
 * given back); else matched says whether the password was right (clears the failures) or
 * wrong (the slot stays counted and may start a lockout). */
void api_lockout_settle(struct ts_http_req *req, struct ts_lockout *t, enum ts_rc check_rc,
                        bool matched);
/* The account's bucket (RATE_LIMIT_ACCOUNT), then its lockout reservation. Accounts are
 * "user:<id>", "email:<address>" or "doc:<collection>/<id>", the same whichever API names
 * them, and exist or not alike. */
bool api_account_checks(struct ts_http_req *req, const char *account, struct ts_lockout *t);

/* Handlers, by file. */
void api_signup(struct ts_http_req *req);
void api_user_get(struct ts_http_req *req);
void api_user_put(struct ts_http_req *req);
void api_logout(struct ts_http_req *req);
void api_token(struct ts_http_req *req);
/* POST /token?grant_type=id_token (api_idtoken.c), with the request's body. */
void api_grant_id_token(struct ts_http_req *req, json_t *body);
void api_admin_users_list(struct ts_http_req *req);
void api_admin_users_create(struct ts_http_req *req);
void api_admin_user_get(struct ts_http_req *req);
void api_admin_user_update(struct ts_http_req *req);
void api_admin_user_delete(struct ts_http_req *req);
void api_health(struct ts_http_req *req);
void api_ready(struct ts_http_req *req);
void api_settings(struct ts_http_req *req);
void api_jwks(struct ts_http_req *req);
void api_metrics(struct ts_http_req *req);

#endif

/*
 * api_v1_int.h - private to src/api: the native /v1 API (docs/API.md, "Native API").
 *
 * Who the caller is (a tsk_ key with a role, a tst_ token of an identity, the service_role
 * JWT, a GoTrue user's access token, or nobody), the error shape of /v1, and the helpers the
 * /v1 handlers share. Handlers: api_v1_docs.c (collections, documents, indexes),
 * api_v1_auth.c (login, identify, logout, tokens, keys, credentials, the ledger).
 */
#ifndef TS_API_V1_INT_H
#define TS_API_V1_INT_H

#include <jansson.h>

#include "api_int.h"
#include "jwks/jwks.h"

#define V1_SECRET_PREFIX_TOKEN "tst_"
#define V1_SECRET_PREFIX_KEY "tsk_"
#define V1_SECRET_LEN (4 + TS_REFRESH_TOKEN_LEN) /* prefix + 32 base64url characters */

/* The built-in roles of keys (Fauna's), which hold rights of their own beside defined roles
 * (docs/AUTHORIZATION.md, "Built-in roles"). */
enum v1_role {
    V1_ROLE_NONE,        /* anonymous, client keys, and identities acting for themselves */
    V1_ROLE_SERVER_READ, /* server-readonly */
    V1_ROLE_SERVER,      /* server */
    V1_ROLE_ADMIN,       /* admin keys and the service_role JWT */
};

enum v1_kind {
    V1_ANONYMOUS,    /* no credential, or the anon JWT */
    V1_KEY,          /* tsk_ */
    V1_TOKEN,        /* tst_ */
    V1_JWT_ADMIN,    /* the service_role JWT */
    V1_JWT_USER,     /* a GoTrue access token */
    V1_JWT_EXTERNAL, /* a JWT of an AccessProvider */
    V1_JWT_EXCHANGE, /* a Tessera access token issued by /v1/oauth/token */
};

/*
 * The actions of /v1 that roles govern, one per endpoint (resource "api/<controller>"), and
 * the least built-in key role that may take each without a defined role. Public actions
 * verify their own credentials (login) and need no right; `always` ones are open to every
 * caller that presented a valid credential (ending one's own session, asking what one may
 * do), and to anonymous callers as their roles say. `protected` ones administer authorization
 * itself (minting keys and tokens for anyone, editing roles, profiles and providers, assigning
 * profiles): each is as good as admin, so a role grants them only by naming the controller,
 * never through the wildcard api/(star).
 */
#define V1_ACTION_TABLE(X)                                                                         \
    X(AUTH_LOGIN, "auth", "login", V1_ROLE_NONE, V1_PUBLIC)                                        \
    X(AUTH_IDENTIFY, "auth", "identify", V1_ROLE_NONE, V1_PUBLIC)                                  \
    X(AUTH_LOGOUT, "auth", "logout", V1_ROLE_NONE, V1_ALWAYS)                                      \
    X(AUTH_ME, "auth", "me", V1_ROLE_SERVER_READ, V1_GOVERNED)                                     \
    X(AUTH_SESSIONS, "auth", "sessions", V1_ROLE_SERVER_READ, V1_GOVERNED)                         \
    X(AUTH_DELETE_SESSION, "auth", "delete_session", V1_ROLE_SERVER_READ, V1_GOVERNED)             \
    X(AUTH_RIGHTS, "auth", "rights", V1_ROLE_SERVER_READ, V1_ALWAYS)                               \
    X(AUTHZ_CHECK, "authz", "check", V1_ROLE_SERVER_READ, V1_ALWAYS)                               \
    X(AUTHZ_GATEWAY, "authz", "gateway", V1_ROLE_NONE, V1_PUBLIC)                                  \
    X(OAUTH_TOKEN, "oauth", "token", V1_ROLE_NONE, V1_PUBLIC)                                      \
    X(COLLECTION_LIST, "collection", "list", V1_ROLE_SERVER_READ, V1_GOVERNED)                     \
    X(COLLECTION_GET, "collection", "get", V1_ROLE_SERVER_READ, V1_GOVERNED)                       \
    X(COLLECTION_CREATE, "collection", "create", V1_ROLE_ADMIN, V1_GOVERNED)                       \
    X(COLLECTION_DELETE, "collection", "delete", V1_ROLE_ADMIN, V1_GOVERNED)                       \
    X(INDEX_LIST, "index", "list", V1_ROLE_SERVER_READ, V1_GOVERNED)                               \
    X(INDEX_GET, "index", "get", V1_ROLE_SERVER_READ, V1_GOVERNED)                                 \
    X(INDEX_CREATE, "index", "create", V1_ROLE_ADMIN, V1_GOVERNED)                                 \
    X(INDEX_DELETE, "index", "delete", V1_ROLE_ADMIN, V1_GOVERNED)                                 \
    X(TOKEN_LIST, "token", "list", V1_ROLE_SERVER_READ, V1_GOVERNED)                               \
    X(TOKEN_GET, "token", "get", V1_ROLE_SERVER_READ, V1_GOVERNED)                                 \
    X(TOKEN_CREATE, "token", "create", V1_ROLE_SERVER, V1_PROTECTED)                               \
    X(TOKEN_DELETE, "token", "delete", V1_ROLE_SERVER, V1_GOVERNED)                                \
    X(KEY_LIST, "key", "list", V1_ROLE_ADMIN, V1_GOVERNED)                                         \
    X(KEY_GET, "key", "get", V1_ROLE_ADMIN, V1_GOVERNED)                                           \
    X(KEY_CREATE, "key", "create", V1_ROLE_ADMIN, V1_PROTECTED)                                    \
    X(KEY_DELETE, "key", "delete", V1_ROLE_ADMIN, V1_PROTECTED)                                    \
    X(CREDENTIAL_LIST, "credential", "list", V1_ROLE_ADMIN, V1_GOVERNED)                           \
    X(CREDENTIAL_DELETE, "credential", "delete", V1_ROLE_ADMIN, V1_GOVERNED)                       \
    X(SESSION_LIST, "session", "list", V1_ROLE_SERVER_READ, V1_GOVERNED)                           \
    X(SESSION_DELETE, "session", "delete", V1_ROLE_SERVER, V1_GOVERNED)                            \
    X(PROVIDER_LIST, "access_provider", "list", V1_ROLE_ADMIN, V1_GOVERNED)                        \
    X(PROVIDER_GET, "access_provider", "get", V1_ROLE_ADMIN, V1_GOVERNED)                          \
    X(PROVIDER_CREATE, "access_provider", "create", V1_ROLE_ADMIN, V1_PROTECTED)                   \
    X(PROVIDER_UPDATE, "access_provider", "update", V1_ROLE_ADMIN, V1_PROTECTED)                   \
    X(PROVIDER_DELETE, "access_provider", "delete", V1_ROLE_ADMIN, V1_PROTECTED)                   \
    X(ROLE_LIST, "role", "list", V1_ROLE_SERVER_READ, V1_GOVERNED)                                 \
    X(ROLE_GET, "role", "get", V1_ROLE_SERVER_READ, V1_GOVERNED)                                   \
    X(ROLE_CREATE, "role", "create", V1_ROLE_ADMIN, V1_PROTECTED)                                  \
    X(ROLE_UPDATE, "role", "update", V1_ROLE_ADMIN, V1_PROTECTED)                                  \
    X(ROLE_DELETE, "role", "delete", V1_ROLE_ADMIN, V1_PROTECTED)                                  \
    X(PROFILE_LIST, "profile", "list", V1_ROLE_SERVER_READ, V1_GOVERNED)                           \
    X(PROFILE_GET, "profile", "get", V1_ROLE_SERVER_READ, V1_GOVERNED)                             \
    X(PROFILE_CREATE, "profile", "create", V1_ROLE_ADMIN, V1_PROTECTED)                            \
    X(PROFILE_UPDATE, "profile", "update", V1_ROLE_ADMIN, V1_PROTECTED)                            \
    X(PROFILE_DELETE, "profile", "delete", V1_ROLE_ADMIN, V1_PROTECTED)                            \
    X(PROFILE_ASSIGN, "profile", "assign", V1_ROLE_SERVER, V1_PROTECTED)

enum v1_access { V1_GOVERNED, V1_PUBLIC, V1_ALWAYS, V1_PROTECTED };

enum v1_act {
#define V1_ACT_ENUM(e, c, a, r, p) V1_ACT_##e,
    V1_ACTION_TABLE(V1_ACT_ENUM)
#undef V1_ACT_ENUM
        V1_ACT_COUNT
};

struct v1_action {
    const char *controller;
    const char *action;
    const char *resource; /* "api/<controller>" */
    enum v1_role builtin; /* the least key role that may take it; NONE: none */
    enum v1_access access;
};
extern const struct v1_action v1_actions[V1_ACT_COUNT];

struct v1_caller {
    enum v1_kind kind;
    enum v1_role role;
    char secret_id[TS_STORE_ID_LEN + 1];  /* the tst_/tsk_ row id */
    char key_role[TS_STORE_NAME_MAX + 1]; /* V1_KEY: the key's role name */
    bool has_identity;
    char identity_collection[TS_STORE_NAME_MAX + 1];
    char identity_id[TS_STORE_DOC_ID_MAX + 1];
    char session_id[TS_STORE_ID_LEN + 1];     /* V1_JWT_USER */
    int64_t expires_at;                       /* of the secret; 0 = never */
    char ext_provider[TS_STORE_NAME_MAX + 1]; /* V1_JWT_EXTERNAL: the AccessProvider */
    char ext_sub[256];                        /* V1_JWT_EXTERNAL: the token's sub */
    uint8_t hash[TS_SECRET_HASH_LEN];         /* V1_KEY, V1_TOKEN: the secret's SHA-256 */
    char roles[400]; /* roles the credential itself grants (a key's defined role, an
                        AccessProvider's rules), space-separated; "" = none */
};

/*
 * Cache of checked secrets: SHA-256 of the secret -> the caller it stands for, valid while the
 * store's change epoch has not moved since it was read and until the earliest expiry involved
 * (ts_store_secret_check's valid_until). Every revocation, deletion or expiry change moves the
 * epoch, so an entry never outlives them; only live answers are cached.
 */
struct v1_secret_cache;
struct v1_secret_cache *v1_secret_cache_new(size_t slots);
void v1_secret_cache_free(struct v1_secret_cache *c);
/* Lookups answered from the cache, and those that went to the store. */
void v1_secret_cache_stats(struct v1_secret_cache *c, int64_t *hits, int64_t *misses);
/* Looks up / stores a caller under a hash (of a secret or of an outside JWT): see above. */
bool v1_secret_cache_lookup(struct v1_secret_cache *c, const uint8_t hash[TS_SECRET_HASH_LEN],
                            uint64_t epoch, int64_t now, struct v1_caller *out);
void v1_secret_cache_store(struct v1_secret_cache *c, const uint8_t hash[TS_SECRET_HASH_LEN],
                           uint64_t epoch, int64_t valid_until, const struct v1_caller *caller);
/* GET /v1/me's answer kept beside a cached secret (same validity: the epoch it was read at,
 * and the secret's own entry, whose expiry is checked first by v1_caller). */
bool v1_me_cache_get(struct v1_secret_cache *c, const uint8_t hash[TS_SECRET_HASH_LEN],
                     uint64_t epoch, struct ts_arena *a, const char **text, size_t *len);
void v1_me_cache_put(struct v1_secret_cache *c, const uint8_t hash[TS_SECRET_HASH_LEN],
                     uint64_t epoch, const char *text, size_t len);

/* ---- errors ---- */

/* Answers {"error":{"code","message"}} with status. */
void v1_error(struct ts_http_req *req, int status, const char *code, const char *message);
/* 401 with WWW-Authenticate: Bearer, the uniform answer to every credential failure; reason
 * goes to the log only. */
void v1_unauthorized(struct ts_http_req *req, const char *reason);
void v1_forbidden(struct ts_http_req *req);
/* Maps a store result to an answer (404, 409, 503...). what names the operation for logs. */
void v1_fail(struct ts_http_req *req, enum ts_rc rc, const char *what);
/* 404 not_found / 405 / 413 in the /v1 shape (the router's hooks call these for /v1 paths). */
void v1_not_found(struct ts_http_req *req);
void v1_too_large(struct ts_http_req *req);
bool v1_path(struct ts_http_req *req);

/* ---- the caller ---- */

/* Works out who is calling. Answers 401 and returns false when a credential was presented
 * and is not valid; no credential is the anonymous caller. An identity's request then draws
 * on its budget (v1_within_budget; 429 over it). */
bool v1_caller(struct ts_http_req *req, struct v1_caller *c);
/* Draws one request on an identity caller's per-node budget (its profiles' rate_limit),
 * once per request; false when it answered (429 over the budget, 503). v1_caller calls it
 * for every route but /v1/logout and the gateway. */
bool v1_within_budget(struct ts_http_req *req, const struct v1_caller *c);
/* v1_caller, then v1_allowed(act); answers 403 (or 401 for anonymous) otherwise. */
bool v1_require(struct ts_http_req *req, struct v1_caller *c, enum v1_act act);
/* v1_require, then requires an identity (tokens, user JWTs, keys bound to one). */
bool v1_require_identity(struct ts_http_req *req, struct v1_caller *c, enum v1_act act);
/* True when the caller's identity is (collection, id). */
bool v1_is_self(const struct v1_caller *c, const char *collection, const char *id);

/* ---- authorization (api_v1_authz.c; docs/AUTHORIZATION.md) ---- */

/* The roles, profiles and caches of authorization. */
struct v1_authz;
struct v1_authz *v1_authz_new(const struct ts_config *cfg);
void v1_authz_free(struct v1_authz *z);
/* Reads GATEWAY_ROUTES; TS_E_INVALID with *err (heap) when the file is unusable. */
TS_NODISCARD enum ts_rc v1_authz_load_routes(struct v1_authz *z, const char *path, char **err);

/* Whether the caller may take act (its built-in role, then its roles); no answer given. */
bool v1_allowed(struct ts_http_req *req, const struct v1_caller *c, enum v1_act act);
/* Whether the membership rules of collection grant new_doc (an identity's document after a
 * write) a role they did not grant old_doc (NULL for a create). False when it answered. */
bool v1_membership_raises(struct ts_http_req *req, const char *collection, const json_t *old_doc,
                          const json_t *new_doc, bool *raises);
/* Whether a role of that name is defined (the defaults are created first when missing).
 * False when it answered (503). */
bool v1_role_defined(struct ts_http_req *req, const char *name, bool *defined);
/* 401 for an anonymous caller, 403 otherwise. */
void v1_deny(struct ts_http_req *req, const struct v1_caller *c);

enum v1_doc_action { V1_DOC_READ, V1_DOC_CREATE, V1_DOC_WRITE, V1_DOC_DELETE, V1_DOC_LIST };
/*
 * Whether the caller may take action on a document of collection: built-in roles (read and
 * list from server-readonly, the others from server), then the roles' privileges on
 * "collections/<collection>", whose predicates see resource, old and new (any may be NULL).
 * answer: give the 401/403 when refused (listing filters instead).
 */
bool v1_doc_allowed(struct ts_http_req *req, const struct v1_caller *c, const char *collection,
                    enum v1_doc_action action, const json_t *resource, const json_t *old_doc,
                    const json_t *new_doc, bool answer);
/* Whether some role could allow action on collection (a true rule or a predicate): the
 * check before a document is read, so that a caller with no right at all learns nothing of
 * its existence. Answers 401/403 (or 503) and returns false otherwise. */
bool v1_doc_may(struct ts_http_req *req, const struct v1_caller *c, const char *collection,
                enum v1_doc_action action);
/* True when a built-in role alone allows action (no per-document decision is needed). */
bool v1_doc_builtin(const struct v1_caller *c, enum v1_doc_action action);

/* ---- request parsing ---- */

/* The JSON object body; answers 400 and returns NULL on failure. */
json_t *v1_body(struct ts_http_req *req);
/* Refuses members of obj not in the NULL-terminated list allowed (400). */
bool v1_only(struct ts_http_req *req, json_t *obj, const char *const *allowed);
/* Name and id checks (docs/API.md "Names and ids"). */
bool v1_name_ok(const char *s);
bool v1_doc_id_ok(const char *s);
/* Parses a ttl value (seconds, duration text, or RFC 3339 time) into an absolute expiry after
 * now; false (answered 400) when it is malformed or not in the future. */
bool v1_ttl(struct ts_http_req *req, const json_t *v, int64_t now, int64_t *expires_at);
/* ?size= (default 64, 1..1000); false (answered 400) when malformed. */
bool v1_page_size(struct ts_http_req *req, int64_t *size);
/* A JSON time string member, or null when t is 0. */
json_t *v1_time(int64_t t);

/* ---- objects ---- */

json_t *v1_doc_json(const struct ts_doc *d);
/* A live document, or a user (not deleted) of the users collection, as JSON (new reference),
 * read at now; *expires_at (may be NULL) gets the document's expiry, 0 for none. NULL with
 * *rc: TS_E_NOT_FOUND when there is none, another code when the store failed. */
json_t *v1_doc_read(struct ts_api *api, const char *collection, const char *id, int64_t now,
                    int64_t *expires_at, enum ts_rc *rc);
/* A user as a document of the users collection. */
json_t *v1_user_doc_json(const struct ts_user *u);
json_t *v1_identity_json(const char *collection, const char *id);
json_t *v1_secret_json(const struct ts_secret_row *r);

/* Makes a secret (prefix + 192 random bits in base64url) and its SHA-256. */
void v1_secret_new(const char *prefix, char out[V1_SECRET_LEN + 1],
                   uint8_t hash[TS_SECRET_HASH_LEN]);

/* Creates a token for an identity and answers status with {"token":{...,"secret"}}. */
void v1_issue_token(struct ts_http_req *req, int status, const char *collection, const char *id,
                    int64_t expires_at, json_t *data, const char *origin);
/* The same with origin metadata (an object, or NULL). */
void v1_issue_token_meta(struct ts_http_req *req, int status, const char *collection,
                         const char *id, int64_t expires_at, json_t *data, const char *origin,
                         json_t *meta);
/* Answers answer (consumed), which holds a secret: the text is wiped after it is copied out. */
void v1_respond_secret(struct ts_http_req *req, int status, json_t *answer);
/* Resolves the ttl member of body for a new token: default, maximum (answers 400). */
bool v1_token_expiry(struct ts_http_req *req, const json_t *body, int64_t now, int64_t *expires_at);

/* ---- outside JWTs (api_v1_ext.c) ---- */

/* The AccessProviders in use and the JWKS cache behind them. */
struct v1_ext;
struct v1_ext *v1_ext_new(struct ts_jwks_cache *jwks);
void v1_ext_free(struct v1_ext *x);

/* What a JWT says about itself before it is verified: enough to pick the issuer and key. */
struct v1_jwt_peek {
    enum ts_jose_alg alg;
    bool has_kid;
    char kid[256];
    char iss[520];
};
/* False when token is not a JWS of three parts with JSON header and payload naming an iss. */
bool v1_jwt_peek(const char *token, size_t len, struct v1_jwt_peek *out);

enum v1_key_result { V1_KEY_FOUND, V1_KEY_NONE, V1_KEY_WAITING };
/*
 * The key (alg, kid) of the JWKS at uri. When the set must be fetched first, the request is
 * parked and will start over (ts_http_redispatch) once the fetch has ended: WAITING, and the
 * handler must return without answering. A request waits at most once.
 */
enum v1_key_result v1_jwks_key(struct ts_http_req *req, const char *uri, enum ts_jose_alg alg,
                               const char *kid, struct ts_jwks_key **out);

enum v1_ext_verdict { V1_EXT_OK, V1_EXT_BAD, V1_EXT_WAITING };
/*
 * Verifies an outside JWT: algorithm allowed by alg_mask (never none or HS*), signature with
 * the key chosen by kid from jwks_uri, exact issuer, an aud holding one of audiences, exp
 * (required) and nbf with skew seconds, a string sub. OK: *claims_out (new reference).
 * BAD: *why says why, for the log. WAITING: parked, as v1_jwks_key.
 */
enum v1_ext_verdict v1_verify_external(struct ts_http_req *req, const char *token, size_t len,
                                       const struct v1_jwt_peek *pk, const char *issuer,
                                       const char *jwks_uri, const char *const *audiences,
                                       size_t naud, unsigned alg_mask, int64_t skew,
                                       json_t **claims_out, const char **why);
/* v1_caller for a JWT whose issuer is not this instance: an AccessProvider's. hash is the
 * token's SHA-256, already looked up in the secret cache (a miss). False when it answered
 * (401...) or parked the request (nothing answered). */
bool v1_caller_external(struct ts_http_req *req, const char *token, size_t len,
                        const uint8_t hash[TS_SECRET_HASH_LEN], const struct v1_jwt_peek *pk,
                        struct v1_caller *c);

/* Handlers. */
void v1_collections_list(struct ts_http_req *req);
void v1_collections_create(struct ts_http_req *req);
void v1_collection_get(struct ts_http_req *req);
void v1_collection_delete(struct ts_http_req *req);
void v1_documents_list(struct ts_http_req *req);
void v1_documents_create(struct ts_http_req *req);
void v1_document_get(struct ts_http_req *req);
void v1_document_put(struct ts_http_req *req);
void v1_document_patch(struct ts_http_req *req);
void v1_document_delete(struct ts_http_req *req);
void v1_indexes_list(struct ts_http_req *req);
void v1_indexes_create(struct ts_http_req *req);
void v1_index_get(struct ts_http_req *req);
void v1_index_delete(struct ts_http_req *req);
void v1_login(struct ts_http_req *req);
void v1_identify(struct ts_http_req *req);
void v1_logout(struct ts_http_req *req);
void v1_tokens_create(struct ts_http_req *req);
void v1_tokens_list(struct ts_http_req *req);
void v1_token_get(struct ts_http_req *req);
void v1_token_delete(struct ts_http_req *req);
void v1_keys_create(struct ts_http_req *req);
void v1_keys_list(struct ts_http_req *req);
void v1_key_get(struct ts_http_req *req);
void v1_key_delete(struct ts_http_req *req);
void v1_credentials_list(struct ts_http_req *req);
void v1_credential_delete(struct ts_http_req *req);
void v1_me(struct ts_http_req *req);
void v1_me_sessions(struct ts_http_req *req);
void v1_me_session_delete(struct ts_http_req *req);
void v1_identity_sessions(struct ts_http_req *req);
void v1_identity_session_delete(struct ts_http_req *req);
void v1_providers_list(struct ts_http_req *req);
void v1_providers_create(struct ts_http_req *req);
void v1_provider_get(struct ts_http_req *req);
void v1_provider_put(struct ts_http_req *req);
void v1_provider_delete(struct ts_http_req *req);
void v1_oauth_token(struct ts_http_req *req);
void v1_roles_list(struct ts_http_req *req);
void v1_roles_create(struct ts_http_req *req);
void v1_role_get(struct ts_http_req *req);
void v1_role_put(struct ts_http_req *req);
void v1_role_delete(struct ts_http_req *req);
void v1_profiles_list(struct ts_http_req *req);
void v1_profiles_create(struct ts_http_req *req);
void v1_profile_get(struct ts_http_req *req);
void v1_profile_put(struct ts_http_req *req);
void v1_profile_delete(struct ts_http_req *req);
void v1_authz_check(struct ts_http_req *req);
void v1_authz_gateway(struct ts_http_req *req);
void v1_me_rights(struct ts_http_req *req);

#endif

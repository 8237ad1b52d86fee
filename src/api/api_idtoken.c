/*
 * api_idtoken.c - GoTrue's id_token grant (POST /token?grant_type=id_token, auth-js's
 * signInWithIdToken): an ID token from an external OpenID provider named in the configuration
 * (EXTERNAL_<NAME>_ISSUER, _CLIENT_ID, _JWKS_URI) signs the user in.
 *
 * The token is verified as every outside JWT is (api_v1_ext.c: the JWKS cache, exact issuer,
 * an audience among the client ids, exp/nbf, a sub), the nonce as GoTrue checks it (the token
 * carries the SHA-256 hex of the raw nonce the client sends), and the user is found or created
 * by (issuer, sub) — never by e-mail alone: an e-mail already held by another user is refused
 * (422 email_exists) rather than linked.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api_v1_int.h"

#define SKEW_S 30

struct known_issuer {
    const char *name, *issuer, *jwks_uri;
};

/* Providers whose issuer and keys need no configuration (GoTrue's defaults). */
static const struct known_issuer known[] = {
    {"google", "https://accounts.google.com", "https://www.googleapis.com/oauth2/v3/certs"},
    {"apple", "https://appleid.apple.com", "https://appleid.apple.com/auth/keys"},
};

static void bad_request(struct ts_http_req *req, const char *msg)
{
    api_oauth_error(req, "invalid_request", msg);
}

static bool claim_true(const json_t *v)
{
    return json_is_true(v) || (json_is_string(v) && strcmp(json_string_value(v), "true") == 0);
}

/* A new user for the token's claims. */
static struct ts_user *user_from_claims(struct ts_api *api, const char *provider,
                                        const json_t *claims, int64_t now)
{
    struct ts_user *u = ts_user_new();
    ts_uuid_v4(u->id);
    u->aud = ts_xstrdup(api->cfg->jwt_aud);
    u->role = ts_xstrdup(api->cfg->jwt_default_group_name);
    const char *email = json_string_value(json_object_get(claims, "email"));
    bool verified = claim_true(json_object_get(claims, "email_verified"));
    if (email && *email && strlen(email) < 256) {
        char *e = ts_xstrdup(email);
        for (char *c = e; *c; c++)
            *c = (char)tolower((unsigned char)*c);
        u->email = e;
        if (verified)
            u->email_confirmed_at = now;
    }
    /* user_metadata: the claims GoTrue keeps from an ID token */
    static const char *const keep[] = {
        "iss",         "sub",       "name",       "email",       "email_verified",
        "picture",     "full_name", "given_name", "family_name", "preferred_username",
        "phone_number"};
    for (size_t i = 0; i < TS_ARRAY_LEN(keep); i++) {
        json_t *v = json_object_get(claims, keep[i]);
        if (v && (json_is_string(v) || json_is_boolean(v)))
            json_object_set(u->user_metadata, keep[i], v);
    }
    json_object_set(u->user_metadata, "provider_id", json_object_get(claims, "sub"));
    json_object_set_new(u->app_metadata, "provider", json_string(provider));
    json_object_set_new(u->app_metadata, "providers", json_pack("[s]", provider));
    u->created_at = u->updated_at = now;
    return u;
}

void api_grant_id_token(struct ts_http_req *req, json_t *body)
{
    struct ts_api *api = ts_http_app(req);
    bool bad = false;
    const char *provider = api_str(body, "provider", &bad);
    const char *token = api_str(body, "id_token", &bad);
    const char *nonce = api_str(body, "nonce", &bad);
    if (bad || !provider || !*provider || !token || !*token) {
        bad_request(req, "provider and id_token are required");
        return;
    }
    const struct ts_external_cfg *ec = NULL;
    for (int i = 0; i < api->cfg->n_externals; i++)
        if (strcasecmp(api->cfg->externals[i].name, provider) == 0)
            ec = &api->cfg->externals[i];
    if (!ec || !ec->enabled || !ec->client_id || !*ec->client_id) {
        bad_request(req, "Provider is not enabled (EXTERNAL_<NAME>_ENABLED, _CLIENT_ID)");
        return;
    }
    const char *issuer = ec->issuer, *jwks = ec->jwks_uri;
    for (size_t i = 0; i < TS_ARRAY_LEN(known); i++)
        if (strcmp(known[i].name, ec->name) == 0) {
            if (!issuer || !*issuer)
                issuer = known[i].issuer;
            if (!jwks || !*jwks)
                jwks = known[i].jwks_uri;
        }
    if (!issuer || !*issuer || !jwks || !*jwks) {
        ts_log_warn("id_token grant: provider %s has no issuer or JWKS URI", ec->name);
        bad_request(req, "Provider is not configured (EXTERNAL_<NAME>_ISSUER, _JWKS_URI)");
        return;
    }
    /* audiences: the client ids, comma-separated */
    const char *auds[16];
    size_t naud = 0;
    char *ids = ts_arena_strdup(ts_http_arena(req), ec->client_id);
    for (char *save = NULL, *t = strtok_r(ids, ", ", &save); t && naud < 16;
         t = strtok_r(NULL, ", ", &save))
        auds[naud++] = t;
    size_t len = strlen(token);
    struct v1_jwt_peek pk;
    if (!v1_jwt_peek(token, len, &pk) || strcmp(pk.iss, issuer) != 0) {
        ts_log_info("id_token grant (%s): token of another issuer or malformed", ec->name);
        bad_request(req, "Bad ID token");
        return;
    }
    unsigned algs = 0;
    static const enum ts_jose_alg ok_algs[] = {
        TS_JOSE_ALG_RS256, TS_JOSE_ALG_RS384, TS_JOSE_ALG_RS512, TS_JOSE_ALG_PS256,
        TS_JOSE_ALG_ES256, TS_JOSE_ALG_ES384, TS_JOSE_ALG_EDDSA};
    for (size_t i = 0; i < TS_ARRAY_LEN(ok_algs); i++)
        algs |= 1u << ok_algs[i];
    const char *why = NULL;
    json_t *claims = NULL;
    enum v1_ext_verdict v = v1_verify_external(req, token, len, &pk, issuer, jwks, auds, naud, algs,
                                               SKEW_S, &claims, &why);
    if (v == V1_EXT_WAITING)
        return; /* parked until the key set is fetched; the handler starts over */
    if (v != V1_EXT_OK) {
        ts_log_info("id_token grant (%s) refused: %s", ec->name, why);
        bad_request(req, "Bad ID token");
        return;
    }
    ts_arena_defer(ts_http_arena(req), (void (*)(void *))json_decref, claims);
    /* GoTrue: the token holds sha256_hex(raw nonce) when the client passed a nonce */
    const char *tn = json_string_value(json_object_get(claims, "nonce"));
    if (nonce && *nonce) {
        uint8_t h[32];
        char hex[65];
        ts_sha256(nonce, strlen(nonce), h);
        ts_hex_encode(h, 32, hex);
        if (!tn || strlen(tn) != 64 || !ts_ct_equal(hex, tn, 64)) {
            bad_request(req, "Nonces mismatch");
            return;
        }
    } else if (tn && *tn) {
        bad_request(req, "Passed nonce and nonce in id_token should either both exist or not.");
        return;
    }
    int64_t now = ts_now_us();
    struct ts_user *nu = user_from_claims(api, ec->name, claims, now);
    struct ts_external_create create = {.collection = "users", .user = nu};
    struct ts_external_link *link = NULL;
    bool created = false;
    /* GoTrue keys identities by (provider, sub): a namespace of its own, apart from the
     * AccessProviders' (issuer, sub) links of /v1, so one person may be a /v1 document and a
     * user without the two colliding */
    char *key = ts_arena_sprintf(ts_http_arena(req), "urn:tessera:gotrue-provider:%s", ec->name);
    enum ts_rc rc =
        ts_store_external_link(api->store, key, json_string_value(json_object_get(claims, "sub")),
                               claims, &create, now, &link, &created);
    ts_user_free(nu);
    if (rc == TS_E_CONFLICT) {
        api_error(req, ERR_EMAIL_EXISTS, NULL);
        return;
    }
    if (rc) {
        api_fail(req, rc, "external identity");
        return;
    }
    struct ts_user *u = NULL;
    rc = strcmp(link->collection, "users") == 0 ? ts_store_user_get(api->store, link->id, &u)
                                                : TS_E_NOT_FOUND;
    ts_external_link_free(link);
    if (rc == TS_E_NOT_FOUND) {
        bad_request(req, "This identity is not a user");
        return;
    }
    if (rc) {
        api_fail(req, rc, "user read");
        return;
    }
    api_own_user(req, u);
    if (u->banned_until > now) {
        api_error(req, ERR_USER_BANNED, NULL);
        return;
    }
    ts_store_audit(api->store, created ? "user_signedup" : "login", u->id, ec->name,
                   ts_http_client_ip(req), "{\"method\":\"id_token\"}");
    api_req(req)->user_id = u->id;
    api_issue_session(req, u, "oauth", NULL);
}

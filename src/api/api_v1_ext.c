/*
 * api_v1_ext.c - outside identity providers (docs/API.md, "AccessProviders"; issue 5):
 * /v1/access-providers, JWTs of those providers accepted as bearer credentials on /v1, the
 * RFC 8693 token exchange at /v1/oauth/token, and the verification GoTrue's id_token grant
 * shares (api_idtoken.c).
 *
 * A provider's keys come from the JWKS cache (src/jwks), which fetches on its own thread.
 * A request whose key set is not there yet is parked (ts_http_suspend) until the fetch ends,
 * then its handler starts over (ts_http_redispatch) and finds the key; a request never waits
 * for the network on an HTTP thread. Every failure of an outside token is the same 401 (or,
 * for the exchange, the same invalid_grant), with the precise reason in the log.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "api_v1_int.h"
#include "authz/authz.h"

#define MAX_RULES 16
/* ---- role rules: claims -> roles ---- */

/*
 * A rule grants a role (a built-in key role, or a defined one) to the bearer of a JWT whose
 * claims satisfy its predicate, written in the predicate language (src/authz) over the root
 * claims; no predicate means every token of the provider.
 */
struct ext_rule {
    enum v1_role role; /* the built-in role, or NONE for a defined role */
    bool defined;      /* role_name is a defined role (docs/AUTHORIZATION.md) */
    char role_name[TS_STORE_NAME_MAX + 1];
    struct ts_pred *pred; /* NULL: always */
};

static void rule_clear(struct ext_rule *r)
{
    ts_pred_free(r->pred);
    r->pred = NULL;
}

/* Compiles a predicate; on error returns false with a message naming the line and column. */
static bool compile_predicate(const char *text, struct ext_rule *r, size_t at, char *err,
                              size_t errcap)
{
    struct ts_pred_error pe = {0};
    if (ts_pred_compile(text, NULL, &r->pred, &pe) == TS_OK)
        return true;
    snprintf(err, errcap, "roles[%zu].predicate: line %u, column %u: %s", at, pe.line, pe.column,
             pe.message);
    return false;
}

/* Whether the rule applies to claims; an evaluation error does not grant. */
static bool rule_matches(const struct ext_rule *r, const json_t *claims, struct ts_arena *a)
{
    if (!r->pred)
        return true;
    struct ts_pred_input in = {.claims = claims, .now_s = ts_now_us() / 1000000};
    bool yes = false;
    return ts_pred_eval(r->pred, &in, a, &yes, NULL) == TS_OK && yes;
}

static const json_t *claim_at(const json_t *claims, const char *path)
{
    const json_t *cur = claims;
    char seg[128];
    const char *p = path;
    while (cur && *p) {
        size_t n = strcspn(p, ".");
        if (n >= sizeof(seg) || !json_is_object(cur))
            return NULL;
        memcpy(seg, p, n);
        seg[n] = '\0';
        cur = json_object_get(cur, seg);
        p += n;
        if (*p == '.')
            p++;
    }
    return cur;
}

/* ---- providers ---- */

struct ext_provider {
    char *name;
    char *issuer;
    char *jwks_uri;
    char *audience;
    unsigned algs; /* bit per enum ts_jose_alg */
    int64_t skew;  /* seconds */
    bool allow_outlive;
    size_t nrules;
    struct ext_rule rules[MAX_RULES];
    char *provision_collection; /* NULL: no provisioning */
    json_t *provision_data;     /* {data key: claim path} */
    json_t *doc;                /* the normalised document, as answered */
};

static const enum ts_jose_alg allowed_algs[] = {
    TS_JOSE_ALG_RS256, TS_JOSE_ALG_RS384, TS_JOSE_ALG_RS512, TS_JOSE_ALG_PS256,
    TS_JOSE_ALG_ES256, TS_JOSE_ALG_ES384, TS_JOSE_ALG_EDDSA};

static void provider_free(struct ext_provider *p)
{
    if (!p)
        return;
    free(p->name);
    free(p->issuer);
    free(p->jwks_uri);
    free(p->audience);
    for (size_t i = 0; i < p->nrules; i++)
        rule_clear(&p->rules[i]);
    free(p->provision_collection);
    json_decref(p->provision_data);
    json_decref(p->doc);
    free(p);
}

static bool url_ok(const char *u)
{
    if (!u)
        return false;
    bool https = strncmp(u, "https://", 8) == 0;
    bool loop = strncmp(u, "http://127.0.0.1", 16) == 0 ||
                strncmp(u, "http://localhost", 16) == 0 || strncmp(u, "http://[::1]", 12) == 0;
    return (https || loop) && strlen(u) < 2048 && !strpbrk(u, " \t\r\n");
}

static enum v1_role role_named(const char *r, bool *ok, bool *defined)
{
    *ok = true;
    *defined = false;
    if (strcmp(r, "admin") == 0)
        return V1_ROLE_ADMIN;
    if (strcmp(r, "server") == 0)
        return V1_ROLE_SERVER;
    if (strcmp(r, "server-readonly") == 0)
        return V1_ROLE_SERVER_READ;
    if (strcmp(r, "client") == 0)
        return V1_ROLE_NONE;
    *ok = v1_name_ok(r);
    *defined = *ok;
    return V1_ROLE_NONE;
}

/*
 * Builds a provider from its document (a request body, or what the store kept). Fills
 * defaults; on error returns NULL with a message in err.
 */
static struct ext_provider *provider_from_json(struct ts_api *api, json_t *in, char *err,
                                               size_t errcap)
{
    static const char *const members[] = {"name",          "issuer",     "jwks_uri", "audience",
                                          "algorithms",    "clock_skew", "roles",    "provision",
                                          "allow_outlive", "data"};
    const char *key;
    json_t *v;
    json_object_foreach(in, key, v)
    {
        bool known = false;
        for (size_t i = 0; i < TS_ARRAY_LEN(members) && !known; i++)
            known = strcmp(members[i], key) == 0;
        if (!known) {
            snprintf(err, errcap, "Unknown member \"%.64s\"", key);
            return NULL;
        }
    }
    struct ext_provider *p = ts_xcalloc(1, sizeof(*p));
    const char *name = json_string_value(json_object_get(in, "name"));
    const char *issuer = json_string_value(json_object_get(in, "issuer"));
    const char *jwks = json_string_value(json_object_get(in, "jwks_uri"));
    json_t *aud = json_object_get(in, "audience");
    json_t *algs = json_object_get(in, "algorithms");
    json_t *skew = json_object_get(in, "clock_skew");
    json_t *roles = json_object_get(in, "roles");
    json_t *prov = json_object_get(in, "provision");
    json_t *outlive = json_object_get(in, "allow_outlive");
    json_t *data = json_object_get(in, "data");
    if (!v1_name_ok(name)) {
        snprintf(err, errcap, "name must match ^[A-Za-z_][A-Za-z0-9_-]{0,63}$");
        goto fail;
    }
    if (!issuer || !*issuer || strlen(issuer) > 512) {
        snprintf(err, errcap, "issuer must be the exact iss of the provider's tokens");
        goto fail;
    }
    if (!url_ok(jwks)) {
        snprintf(err, errcap, "jwks_uri must be an https URL (http only on loopback)");
        goto fail;
    }
    if (aud && !json_is_null(aud) && (!json_is_string(aud) || !json_string_length(aud))) {
        snprintf(err, errcap, "audience must be a string");
        goto fail;
    }
    p->name = ts_xstrdup(name);
    p->issuer = ts_xstrdup(issuer);
    p->jwks_uri = ts_xstrdup(jwks);
    p->audience =
        ts_xstrdup(json_is_string(aud) ? json_string_value(aud) : api->cfg->api_external_url);
    json_t *alg_list = json_array();
    if (!algs || json_is_null(algs)) {
        for (size_t i = 0; i < TS_ARRAY_LEN(allowed_algs); i++) {
            p->algs |= 1u << allowed_algs[i];
            json_array_append_new(alg_list, json_string(ts_jose_alg_name(allowed_algs[i])));
        }
    } else {
        size_t i;
        json_t *a;
        bool ok = json_is_array(algs) && json_array_size(algs) > 0;
        json_array_foreach(algs, i, a)
        {
            enum ts_jose_alg alg = ts_jose_alg_from_name(json_string_value(a));
            bool allowed = false;
            for (size_t k = 0; k < TS_ARRAY_LEN(allowed_algs); k++)
                allowed = allowed || allowed_algs[k] == alg;
            ok = ok && allowed;
            if (allowed && !(p->algs & (1u << alg))) {
                p->algs |= 1u << alg;
                json_array_append_new(alg_list, json_string(ts_jose_alg_name(alg)));
            }
        }
        if (!ok) {
            json_decref(alg_list);
            snprintf(err, errcap,
                     "algorithms: RS256, RS384, RS512, PS256, ES256, ES384, EdDSA (never none "
                     "or HS*)");
            goto fail;
        }
    }
    p->skew = 30;
    if (skew && !json_is_null(skew)) {
        if (!json_is_integer(skew) || json_integer_value(skew) < 0 ||
            json_integer_value(skew) > 300) {
            json_decref(alg_list);
            snprintf(err, errcap, "clock_skew must be whole seconds from 0 to 300");
            goto fail;
        }
        p->skew = (int64_t)json_integer_value(skew);
    }
    if (outlive && !json_is_null(outlive) && !json_is_boolean(outlive)) {
        json_decref(alg_list);
        snprintf(err, errcap, "allow_outlive must be a boolean");
        goto fail;
    }
    p->allow_outlive = json_is_true(outlive);
    if (roles && !json_is_null(roles)) {
        size_t i;
        json_t *r;
        if (!json_is_array(roles) || json_array_size(roles) > MAX_RULES) {
            json_decref(alg_list);
            snprintf(err, errcap, "roles must be an array of at most %d {role, predicate}",
                     MAX_RULES);
            goto fail;
        }
        json_array_foreach(roles, i, r)
        {
            const char *rn = json_string_value(json_object_get(r, "role"));
            const char *pred = json_string_value(json_object_get(r, "predicate"));
            bool ok = false;
            struct ext_rule *rule = &p->rules[p->nrules];
            if (rn && json_object_size(r) <= 2)
                rule->role = role_named(rn, &ok, &rule->defined);
            if (!ok) {
                json_decref(alg_list);
                snprintf(err, errcap,
                         "roles[%zu].role must be admin, server, server-readonly, client or the "
                         "name of a defined role",
                         i);
                goto fail;
            }
            snprintf(rule->role_name, sizeof(rule->role_name), "%s", rn);
            p->nrules++;
            if (pred && !compile_predicate(pred, rule, i, err, errcap)) {
                json_decref(alg_list);
                goto fail;
            }
        }
    }
    if (prov && !json_is_null(prov)) {
        const char *coll = json_string_value(json_object_get(prov, "collection"));
        json_t *map = json_object_get(prov, "data");
        bool ok = json_is_object(prov) && v1_name_ok(coll) && (!map || json_is_object(map)) &&
                  json_object_size(prov) <= 2;
        const char *k2;
        json_t *cv;
        if (ok && map)
            json_object_foreach(map, k2, cv) ok = ok && json_is_string(cv);
        if (!ok) {
            json_decref(alg_list);
            snprintf(err, errcap,
                     "provision must be {\"collection\":..., \"data\":{<member>: \"<claim "
                     "path>\"}}");
            goto fail;
        }
        p->provision_collection = ts_xstrdup(coll);
        p->provision_data = map ? json_deep_copy(map) : json_object();
    }
    if (data && !json_is_null(data) && !json_is_object(data)) {
        json_decref(alg_list);
        snprintf(err, errcap, "data must be an object");
        goto fail;
    }
    p->doc = json_pack("{s:s, s:s, s:s, s:s, s:o, s:I, s:b, s:O?, s:O?, s:O?}", "name", p->name,
                       "issuer", p->issuer, "jwks_uri", p->jwks_uri, "audience", p->audience,
                       "algorithms", alg_list, "clock_skew", (json_int_t)p->skew, "allow_outlive",
                       p->allow_outlive, "roles", roles, "provision", prov, "data", data);
    return p;
fail:
    provider_free(p);
    return NULL;
}

/* ---- the providers in use: a snapshot rebuilt when the store's epoch moves ---- */

struct ext_set {
    _Atomic int refs;
    uint64_t epoch;
    size_t n;
    struct ext_provider **items;
};

struct v1_ext {
    pthread_mutex_t mu;
    struct ext_set *cur;
    struct ts_jwks_cache *jwks;
};

static void set_unref(struct ext_set *s)
{
    if (!s || atomic_fetch_sub(&s->refs, 1) != 1)
        return;
    for (size_t i = 0; i < s->n; i++)
        provider_free(s->items[i]);
    free(s->items);
    free(s);
}

struct v1_ext *v1_ext_new(struct ts_jwks_cache *jwks)
{
    struct v1_ext *x = ts_xcalloc(1, sizeof(*x));
    pthread_mutex_init(&x->mu, NULL);
    x->jwks = jwks;
    return x;
}

void v1_ext_free(struct v1_ext *x)
{
    if (!x)
        return;
    set_unref(x->cur);
    pthread_mutex_destroy(&x->mu);
    free(x);
}

/* The current providers (a reference: set_unref when done); NULL when the store failed. */
static struct ext_set *providers(struct ts_api *api, enum ts_rc *rc)
{
    struct v1_ext *x = api->ext;
    uint64_t epoch = ts_store_epoch(api->store);
    pthread_mutex_lock(&x->mu);
    struct ext_set *s = x->cur;
    if (s && s->epoch == epoch) {
        atomic_fetch_add(&s->refs, 1);
        pthread_mutex_unlock(&x->mu);
        return s;
    }
    pthread_mutex_unlock(&x->mu);
    struct ts_access_provider **rows = NULL;
    size_t n = 0;
    *rc = ts_store_provider_list(api->store, &rows, &n);
    if (*rc)
        return NULL;
    s = ts_xcalloc(1, sizeof(*s));
    s->epoch = epoch;
    s->items = ts_xcalloc(n ? n : 1, sizeof(*s->items));
    atomic_store(&s->refs, 2); /* the cache's and the caller's */
    for (size_t i = 0; i < n; i++) {
        char err[256];
        struct ext_provider *p = provider_from_json(api, rows[i]->config, err, sizeof(err));
        if (p)
            s->items[s->n++] = p;
        else
            ts_log_warn("access provider %s is not usable: %s", rows[i]->name, err);
    }
    ts_access_providers_free(rows, n);
    pthread_mutex_lock(&x->mu);
    struct ext_set *old = x->cur;
    x->cur = s;
    pthread_mutex_unlock(&x->mu);
    set_unref(old);
    return s;
}

static const struct ext_provider *by_issuer(const struct ext_set *s, const char *iss)
{
    for (size_t i = 0; s && iss && i < s->n; i++)
        if (strcmp(s->items[i]->issuer, iss) == 0)
            return s->items[i];
    return NULL;
}

/* ---- reading an outside JWT before it is verified (only to pick the provider and key) ---- */

static json_t *decode_part(const char *p, size_t n)
{
    if (n == 0 || n > 16384)
        return NULL;
    uint8_t *buf = ts_xmalloc(ts_b64url_decoded_max(n) + 1);
    size_t len = 0;
    json_t *j = NULL;
    if (ts_b64url_decode(p, n, buf, &len) == TS_OK) {
        json_error_t err;
        j = json_loadb((const char *)buf, len, JSON_REJECT_DUPLICATES, &err);
    }
    free(buf);
    if (!json_is_object(j)) {
        json_decref(j);
        return NULL;
    }
    return j;
}

bool v1_jwt_peek(const char *token, size_t len, struct v1_jwt_peek *out)
{
    memset(out, 0, sizeof(*out));
    const char *d1 = memchr(token, '.', len);
    const char *d2 = d1 ? memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - token)) : NULL;
    if (!d1 || !d2)
        return false;
    json_t *h = decode_part(token, (size_t)(d1 - token));
    json_t *c = decode_part(d1 + 1, (size_t)(d2 - d1 - 1));
    bool ok = h && c;
    if (ok) {
        out->alg = ts_jose_alg_from_name(json_string_value(json_object_get(h, "alg")));
        const char *kid = json_string_value(json_object_get(h, "kid"));
        const char *iss = json_string_value(json_object_get(c, "iss"));
        out->has_kid = kid != NULL;
        snprintf(out->kid, sizeof(out->kid), "%s", kid ? kid : "");
        snprintf(out->iss, sizeof(out->iss), "%s", iss ? iss : "");
        ok = iss && strlen(iss) < sizeof(out->iss) && (!kid || strlen(kid) < sizeof(out->kid));
    }
    json_decref(h);
    json_decref(c);
    return ok;
}

/* ---- waiting for a key set ---- */

struct ext_wait {
    char uri[2048];
    enum ts_jose_alg alg;
    char kid[256];
    bool has_kid;
};

static void wait_notify(void *cls)
{
    ts_http_resume(cls);
}

static void wait_start(struct ts_http_req *req)
{
    struct ts_api *api = ts_http_app(req);
    struct ext_wait *w = api_req(req)->ext_wait;
    struct ts_jwks_key *k = NULL;
    enum ts_jwks_result r =
        ts_jwks_lookup(api->ext->jwks, w->uri, w->alg, w->has_kid ? w->kid : NULL, ts_mono_us(),
                       wait_notify, req, &k);
    if (r == TS_JWKS_FOUND)
        ts_jwks_key_release(k);
    if (r != TS_JWKS_PENDING)
        ts_http_resume(req);
}

enum v1_key_result v1_jwks_key(struct ts_http_req *req, const char *uri, enum ts_jose_alg alg,
                               const char *kid, struct ts_jwks_key **out)
{
    struct ts_api *api = ts_http_app(req);
    struct api_req *ar = api_req(req);
    if (!ar->ext_waited) {
        /* first pass: look without being notified; park only when a fetch is needed */
        enum ts_jwks_result r =
            ts_jwks_lookup(api->ext->jwks, uri, alg, kid, ts_mono_us(), NULL, NULL, out);
        if (r == TS_JWKS_FOUND)
            return V1_KEY_FOUND;
        if (r == TS_JWKS_NO_KEY)
            return V1_KEY_NONE;
        struct ext_wait *w = ts_arena_calloc(ts_http_arena(req), sizeof(*w));
        snprintf(w->uri, sizeof(w->uri), "%s", uri);
        w->alg = alg;
        w->has_kid = kid != NULL;
        snprintf(w->kid, sizeof(w->kid), "%s", kid ? kid : "");
        ar->ext_wait = w;
        ar->ext_waited = true;
        ts_http_suspend(req, wait_start, ts_http_redispatch);
        return V1_KEY_WAITING;
    }
    enum ts_jwks_result r =
        ts_jwks_lookup(api->ext->jwks, uri, alg, kid, ts_mono_us(), NULL, NULL, out);
    return r == TS_JWKS_FOUND ? V1_KEY_FOUND : V1_KEY_NONE;
}

/* ---- verification ---- */

static const struct ts_jose_key *one_key(void *cls, enum ts_jose_alg alg, const char *kid)
{
    (void)alg;
    (void)kid;
    return cls;
}

enum v1_ext_verdict v1_verify_external(struct ts_http_req *req, const char *token, size_t len,
                                       const struct v1_jwt_peek *pk, const char *issuer,
                                       const char *jwks_uri, const char *const *audiences,
                                       size_t naud, unsigned alg_mask, int64_t skew,
                                       json_t **claims_out, const char **why)
{
    *claims_out = NULL;
    if (pk->alg == TS_JOSE_ALG_UNKNOWN || ts_jose_alg_is_hmac(pk->alg) ||
        !(alg_mask & (1u << pk->alg))) {
        *why = "algorithm not accepted for this issuer";
        return V1_EXT_BAD;
    }
    struct ts_jwks_key *key = NULL;
    enum v1_key_result kr = v1_jwks_key(req, jwks_uri, pk->alg, pk->has_kid ? pk->kid : NULL, &key);
    if (kr == V1_KEY_WAITING)
        return V1_EXT_WAITING;
    if (kr != V1_KEY_FOUND) {
        *why = "no key for this kid and algorithm in the issuer's JWKS (after a refetch)";
        return V1_EXT_BAD;
    }
    json_t *claims = NULL;
    enum ts_rc rc =
        ts_jws_verify(token, len, one_key, (void *)(uintptr_t)ts_jwks_key_jose(key), &claims, NULL);
    ts_jwks_key_release(key);
    if (rc) {
        *why = "signature or format";
        return V1_EXT_BAD;
    }
    bool aud_ok = false;
    for (size_t i = 0; i < naud && !aud_ok; i++) {
        struct ts_jwt_rules rules = {.issuer = issuer,
                                     .audience = audiences[i],
                                     .now = ts_now_s(),
                                     .leeway = skew,
                                     .require_exp = true};
        rc = ts_jwt_check_claims(claims, &rules);
        aud_ok = rc == TS_OK;
        if (rc == TS_E_EXPIRED)
            break;
    }
    const json_t *sub = json_object_get(claims, "sub");
    if (!aud_ok || !json_is_string(sub) || !json_string_length(sub) ||
        json_string_length(sub) > 255) {
        *why = rc == TS_E_EXPIRED ? "expired or not yet valid"
               : aud_ok           ? "no sub"
                                  : "issuer, audience, exp or nbf";
        json_decref(claims);
        return V1_EXT_BAD;
    }
    *claims_out = claims;
    return V1_EXT_OK;
}

/* The identity of (issuer, sub): linked, or provisioned by the provider's rule. */
static enum ts_rc identity_of(struct ts_api *api, const struct ext_provider *p,
                              const json_t *claims, struct ts_external_link **link)
{
    const char *sub = json_string_value(json_object_get(claims, "sub"));
    struct ts_external_create create = {0};
    json_t *data = NULL;
    if (p->provision_collection) {
        data = json_object();
        const char *k;
        json_t *path;
        json_object_foreach(p->provision_data, k, path)
        {
            const char *ps = json_string_value(path);
            if (ps && strncmp(ps, "claims.", 7) == 0)
                ps += 7;
            const json_t *v = ps ? claim_at(claims, ps) : NULL;
            if (v)
                json_object_set_new(data, k, json_deep_copy(v));
        }
        create.collection = p->provision_collection;
        create.data = data;
    }
    bool created = false;
    enum ts_rc rc = ts_store_external_link(api->store, p->issuer, sub, claims,
                                           p->provision_collection ? &create : NULL, ts_now_us(),
                                           link, &created);
    json_decref(data);
    if (created)
        ts_store_audit(api->store, "identity_provisioned", p->name, (*link)->id, NULL, NULL);
    return rc;
}

/* The best built-in role the claims earn; the defined roles they earn go to c->roles. */
static enum v1_role role_from_claims(const struct ext_provider *p, const json_t *claims,
                                     struct ts_arena *a, struct v1_caller *c, bool *any)
{
    enum v1_role best = V1_ROLE_NONE;
    *any = false;
    size_t used = 0;
    for (size_t i = 0; i < p->nrules; i++)
        if (rule_matches(&p->rules[i], claims, a)) {
            *any = true;
            if (p->rules[i].role > best)
                best = p->rules[i].role;
            size_t len = strlen(p->rules[i].role_name);
            if (p->rules[i].defined && used + len + 2 <= sizeof(c->roles)) {
                snprintf(c->roles + used, sizeof(c->roles) - used, "%s%s", used ? " " : "",
                         p->rules[i].role_name);
                used += len + (used ? 1 : 0);
            }
        }
    return best;
}

bool v1_caller_external(struct ts_http_req *req, const char *token, size_t len,
                        const uint8_t hash[TS_SECRET_HASH_LEN], const struct v1_jwt_peek *pk,
                        struct v1_caller *c)
{
    struct ts_api *api = ts_http_app(req);
    uint64_t epoch = ts_store_epoch(api->store);
    enum ts_rc rc = TS_OK;
    struct ext_set *set = providers(api, &rc);
    if (!set) {
        v1_fail(req, rc, "access providers");
        return false;
    }
    const struct ext_provider *p = by_issuer(set, pk->iss);
    if (!p) {
        set_unref(set);
        v1_unauthorized(req, "JWT of an unknown issuer");
        return false;
    }
    const char *why = NULL;
    json_t *claims = NULL;
    const char *auds[] = {p->audience};
    enum v1_ext_verdict v = v1_verify_external(req, token, len, pk, p->issuer, p->jwks_uri, auds, 1,
                                               p->algs, p->skew, &claims, &why);
    if (v == V1_EXT_WAITING) {
        set_unref(set);
        return false; /* parked: the handler starts over when the key set is there */
    }
    if (v != V1_EXT_OK) {
        ts_log_info("v1: external JWT of %s refused: %s", p->name, why);
        set_unref(set);
        v1_unauthorized(req, "external JWT refused");
        return false;
    }
    struct ts_external_link *link = NULL;
    rc = identity_of(api, p, claims, &link);
    bool any_role = false;
    memset(c, 0, sizeof(*c));
    enum v1_role role = role_from_claims(p, claims, ts_http_arena(req), c, &any_role);
    int64_t exp = (int64_t)json_number_value(json_object_get(claims, "exp"));
    c->kind = V1_JWT_EXTERNAL;
    c->role = role;
    snprintf(c->ext_provider, sizeof(c->ext_provider), "%s", p->name);
    snprintf(c->ext_sub, sizeof(c->ext_sub), "%s",
             json_string_value(json_object_get(claims, "sub")));
    c->expires_at = exp * 1000000;
    json_decref(claims);
    set_unref(set);
    if (rc && rc != TS_E_NOT_FOUND) {
        ts_external_link_free(link);
        v1_fail(req, rc, "external identity");
        return false;
    }
    if (link) {
        snprintf(c->identity_collection, sizeof(c->identity_collection), "%s", link->collection);
        snprintf(c->identity_id, sizeof(c->identity_id), "%s", link->id);
        c->has_identity = true;
        ts_external_link_free(link);
    }
    if (!c->has_identity && !any_role) {
        v1_unauthorized(req, "external JWT maps to no identity and no role");
        return false;
    }
    memcpy(c->hash, hash, TS_SECRET_HASH_LEN);
    v1_secret_cache_store(api->secret_cache, hash, epoch, c->expires_at, c);
    return true;
}

/* ---- /v1/access-providers ---- */

void v1_providers_list(struct ts_http_req *req)
{
    struct ts_api *api = ts_http_app(req);
    struct v1_caller c;
    if (!v1_require(req, &c, V1_ACT_PROVIDER_LIST))
        return;
    struct ts_access_provider **rows = NULL;
    size_t n = 0;
    enum ts_rc rc = ts_store_provider_list(api->store, &rows, &n);
    if (rc) {
        v1_fail(req, rc, "provider list");
        return;
    }
    json_t *data = json_array();
    for (size_t i = 0; i < n; i++) {
        json_t *d = json_deep_copy(rows[i]->config);
        json_object_set_new(d, "created_at", v1_time(rows[i]->created_at));
        json_object_set_new(d, "updated_at", v1_time(rows[i]->updated_at));
        json_array_append_new(data, d);
    }
    ts_access_providers_free(rows, n);
    api_json(req, 200, json_pack("{s:o}", "data", data));
}

static void provider_write(struct ts_http_req *req, bool create)
{
    struct ts_api *api = ts_http_app(req);
    struct v1_caller c;
    if (!v1_require(req, &c, create ? V1_ACT_PROVIDER_CREATE : V1_ACT_PROVIDER_UPDATE))
        return;
    json_t *body = v1_body(req);
    if (!body)
        return;
    const char *name = ts_http_param(req, "name");
    if (!create) {
        const char *given = json_string_value(json_object_get(body, "name"));
        if (given && strcmp(given, name) != 0) {
            v1_error(req, 400, "invalid_request", "name cannot change (delete and create)");
            return;
        }
        json_object_set_new(body, "name", json_string(name));
    }
    char err[256];
    struct ext_provider *p = provider_from_json(api, body, err, sizeof(err));
    if (!p) {
        v1_error(req, 400, "invalid_request", err);
        return;
    }
    /* a rule's defined role must exist when the provider is written (deleting it later only
     * makes the rule grant nothing) */
    for (size_t i = 0; i < p->nrules; i++) {
        if (!p->rules[i].defined)
            continue;
        bool defined = false;
        if (!v1_role_defined(req, p->rules[i].role_name, &defined)) {
            provider_free(p);
            return;
        }
        if (!defined) {
            provider_free(p);
            snprintf(err, sizeof(err),
                     "roles[%zu].role must be admin, server, server-readonly, client or the "
                     "name of a defined role",
                     i);
            v1_error(req, 400, "invalid_request", err);
            return;
        }
    }
    int64_t now = ts_now_us();
    struct ts_access_provider row = {.name = p->name,
                                     .issuer = p->issuer,
                                     .config = p->doc,
                                     .created_at = now,
                                     .updated_at = now};
    enum ts_rc rc = create ? ts_store_provider_create(api->store, &row)
                           : ts_store_provider_update(api->store, &row);
    if (rc) {
        provider_free(p);
        v1_fail(req, rc, "provider write");
        return;
    }
    ts_store_audit(api->store, create ? "provider_created" : "provider_updated",
                   c.secret_id[0] ? c.secret_id : NULL, p->name, ts_http_client_ip(req), NULL);
    json_t *d = json_deep_copy(p->doc);
    provider_free(p);
    api_json(req, create ? 201 : 200, d);
}

void v1_providers_create(struct ts_http_req *req)
{
    provider_write(req, true);
}

void v1_provider_put(struct ts_http_req *req)
{
    provider_write(req, false);
}

void v1_provider_get(struct ts_http_req *req)
{
    struct ts_api *api = ts_http_app(req);
    struct v1_caller c;
    if (!v1_require(req, &c, V1_ACT_PROVIDER_GET))
        return;
    struct ts_access_provider *row = NULL;
    const char *name = ts_http_param(req, "name");
    enum ts_rc rc =
        v1_name_ok(name) ? ts_store_provider_get(api->store, name, &row) : TS_E_NOT_FOUND;
    if (rc) {
        v1_fail(req, rc, "provider get");
        return;
    }
    json_t *d = json_deep_copy(row->config);
    json_object_set_new(d, "created_at", v1_time(row->created_at));
    json_object_set_new(d, "updated_at", v1_time(row->updated_at));
    ts_access_provider_free(row);
    api_json(req, 200, d);
}

void v1_provider_delete(struct ts_http_req *req)
{
    struct ts_api *api = ts_http_app(req);
    struct v1_caller c;
    if (!v1_require(req, &c, V1_ACT_PROVIDER_DELETE))
        return;
    const char *name = ts_http_param(req, "name");
    enum ts_rc rc = v1_name_ok(name) ? ts_store_provider_delete(api->store, name) : TS_E_NOT_FOUND;
    if (rc) {
        v1_fail(req, rc, "provider delete");
        return;
    }
    ts_store_audit(api->store, "provider_deleted", c.secret_id[0] ? c.secret_id : NULL, name,
                   ts_http_client_ip(req), NULL);
    ts_http_respond(req, 204, NULL, "", 0);
}

/* ---- RFC 8693 token exchange ---- */

#define URN_EXCHANGE "urn:ietf:params:oauth:grant-type:token-exchange"
#define URN_JWT "urn:ietf:params:oauth:token-type:jwt"
#define URN_ID_TOKEN "urn:ietf:params:oauth:token-type:id_token"
#define URN_ACCESS "urn:ietf:params:oauth:token-type:access_token"
#define URN_TST "urn:ietf:params:oauth:token-type:tst"
#define URN_TST_TESSERA "urn:tessera:params:oauth:token-type:tst"

static void oauth_error(struct ts_http_req *req, const char *error, const char *description)
{
    ts_http_add_header(req, "Cache-Control", "no-store");
    api_json(req, 400, json_pack("{s:s, s:s}", "error", error, "error_description", description));
}

static const char *param(const json_t *body, const char *name, bool *bad)
{
    const json_t *v = json_object_get(body, name);
    if (!v || json_is_null(v))
        return NULL;
    if (!json_is_string(v)) {
        *bad = true;
        return NULL;
    }
    return json_string_value(v);
}

/* Signs a Tessera access token for an identity reached by exchange. */
/* act (RFC 8693 §4.1) names the subject token's issuer and subject. */
static enum ts_rc exchange_jwt(struct ts_api *api, const char *coll, const char *id, int64_t exp,
                               const char *subject_iss, const char *sub, char **out)
{
    char ident[200];
    snprintf(ident, sizeof(ident), "%s/%s", coll, id);
    json_t *claims = json_pack(
        "{s:s, s:s, s:s, s:s, s:I, s:I, s:{s:s, s:s}}", "iss", api->cfg->jwt_issuer, "aud",
        api->cfg->jwt_aud, "role", "authenticated", "tessera_identity", ident, "iat",
        (json_int_t)ts_now_s(), "exp", (json_int_t)exp, "act", "iss", subject_iss, "sub", sub);
    enum ts_rc rc = ts_keyring_sign(api->keyring, claims, out);
    json_decref(claims);
    return rc;
}

void v1_oauth_token(struct ts_http_req *req)
{
    struct ts_api *api = ts_http_app(req);
    struct v1_caller c;
    if (!api_limit_address(req, TS_LIMIT_TOKEN) || !v1_caller(req, &c) ||
        (c.kind == V1_KEY && !api_limit_subject(req, TS_LIMIT_KEY, c.secret_id)))
        return;
    /* form (RFC 8693's own encoding) or JSON */
    json_t *body = api_body(req);
    if (!body)
        return;
    bool bad = false;
    const char *grant = param(body, "grant_type", &bad);
    const char *subject = param(body, "subject_token", &bad);
    const char *subject_type = param(body, "subject_token_type", &bad);
    const char *requested = param(body, "requested_token_type", &bad);
    const char *audience = param(body, "audience", &bad);
    const char *scope = param(body, "scope", &bad);
    if (bad) {
        oauth_error(req, "invalid_request", "Parameters must be strings");
        return;
    }
    if (!grant || strcmp(grant, URN_EXCHANGE) != 0) {
        oauth_error(req, "unsupported_grant_type", "grant_type must be " URN_EXCHANGE);
        return;
    }
    if (!subject || !*subject || !subject_type) {
        oauth_error(req, "invalid_request", "subject_token and subject_token_type are required");
        return;
    }
    if (strcmp(subject_type, URN_JWT) != 0 && strcmp(subject_type, URN_ID_TOKEN) != 0) {
        oauth_error(req, "invalid_request", "subject_token_type must be " URN_JWT);
        return;
    }
    bool want_tst = false;
    if (requested && strcmp(requested, URN_ACCESS) != 0) {
        if (strcmp(requested, URN_TST) != 0 && strcmp(requested, URN_TST_TESSERA) != 0) {
            oauth_error(req, "invalid_request",
                        "requested_token_type must be " URN_ACCESS " or " URN_TST);
            return;
        }
        want_tst = true;
    }
    size_t len = strlen(subject);
    struct v1_jwt_peek pk;
    enum ts_rc rc = TS_OK;
    struct ext_set *set = v1_jwt_peek(subject, len, &pk) ? providers(api, &rc) : NULL;
    if (!set && rc) {
        v1_fail(req, rc, "access providers");
        return;
    }
    const struct ext_provider *p = by_issuer(set, pk.iss);
    if (!p) {
        set_unref(set);
        ts_log_info("token exchange refused: subject token of no known issuer");
        oauth_error(req, "invalid_grant", "The subject token is not valid");
        return;
    }
    const char *why = NULL;
    json_t *claims = NULL;
    const char *auds[] = {p->audience};
    enum v1_ext_verdict v = v1_verify_external(req, subject, len, &pk, p->issuer, p->jwks_uri, auds,
                                               1, p->algs, p->skew, &claims, &why);
    if (v == V1_EXT_WAITING) {
        set_unref(set);
        return;
    }
    if (v != V1_EXT_OK) {
        ts_log_info("token exchange refused (%s): %s", p->name, why);
        set_unref(set);
        oauth_error(req, "invalid_grant", "The subject token is not valid");
        return;
    }
    struct ts_external_link *link = NULL;
    rc = identity_of(api, p, claims, &link);
    int64_t now = ts_now_us();
    int64_t subject_exp = (int64_t)json_number_value(json_object_get(claims, "exp")) * 1000000;
    char sub[256];
    snprintf(sub, sizeof(sub), "%s", json_string_value(json_object_get(claims, "sub")));
    char provider[TS_STORE_NAME_MAX + 1];
    snprintf(provider, sizeof(provider), "%s", p->name);
    char *subject_iss = ts_arena_strdup(ts_http_arena(req), p->issuer);
    bool outlive = p->allow_outlive;
    json_decref(claims);
    set_unref(set);
    if (rc == TS_E_NOT_FOUND) {
        oauth_error(req, "invalid_grant",
                    "No identity is linked to this subject (and the provider provisions none)");
        return;
    }
    if (rc) {
        v1_fail(req, rc, "external identity");
        return;
    }
    /* never outlive the subject token, unless the provider says so */
    int64_t life = want_tst ? api->cfg->token_default_ttl * 1000000 : api->cfg->jwt_exp * 1000000;
    int64_t expires_at = now + life;
    if (!outlive && subject_exp < expires_at)
        expires_at = subject_exp;
    if (expires_at <= now) {
        ts_external_link_free(link);
        oauth_error(req, "invalid_grant", "The subject token is not valid");
        return;
    }
    json_t *meta =
        json_pack("{s:s, s:s, s:o, s:s?, s:s?, s:s, s:s?}", "provider", provider, "sub", sub,
                  "subject_expires_at", v1_time(subject_exp), "audience", audience, "scope", scope,
                  "ip", ts_http_client_ip(req), "client", c.secret_id[0] ? c.secret_id : NULL);
    struct ts_exchange_row ex = {
        .provider = provider,
        .subject = sub,
        .collection = link->collection,
        .identity_id = link->id,
        .token_type = ts_arena_strdup(ts_http_arena(req),
                                      want_tst ? (requested ? requested : URN_TST) : URN_ACCESS),
        .meta = meta,
        .created_at = now,
        .expires_at = expires_at};
    ts_uuid_v4(ex.id);
    char *access = NULL;
    char secret[V1_SECRET_LEN + 1] = "";
    char token_id[TS_STORE_ID_LEN + 1] = "";
    if (want_tst) {
        uint8_t hash[TS_SECRET_HASH_LEN];
        v1_secret_new(V1_SECRET_PREFIX_TOKEN, secret, hash);
        struct ts_secret_row row = {.kind = TS_SECRET_TOKEN,
                                    .identity_collection = link->collection,
                                    .identity_id = link->id,
                                    .origin = ts_arena_strdup(ts_http_arena(req), "exchange"),
                                    .meta = meta,
                                    .created_at = now,
                                    .expires_at = expires_at};
        ts_uuid_v4(row.id);
        rc = ts_store_secret_create(api->store, &row, hash, now);
        snprintf(token_id, sizeof(token_id), "%s", row.id);
        ex.token_id = token_id;
    } else {
        rc = exchange_jwt(api, link->collection, link->id, expires_at / 1000000, subject_iss, sub,
                          &access);
    }
    if (!rc)
        rc = ts_store_exchange_record(api->store, &ex);
    json_decref(meta);
    ts_external_link_free(link);
    if (rc) {
        ts_wipe(secret, sizeof(secret));
        free(access);
        v1_fail(req, rc, "token exchange");
        return;
    }
    ts_store_audit(api->store, "token_exchanged", provider, ex.id, ts_http_client_ip(req), NULL);
    json_t *answer = json_pack("{s:s, s:s, s:s, s:I}", "access_token", want_tst ? secret : access,
                               "issued_token_type", ex.token_type, "token_type", "Bearer",
                               "expires_in", (json_int_t)((expires_at - now + 999999) / 1000000));
    ts_wipe(secret, sizeof(secret));
    if (access) {
        ts_wipe(access, strlen(access));
        free(access);
    }
    ts_http_add_header(req, "Cache-Control", "no-store");
    v1_respond_secret(req, 200, answer);
}

/*
 * api_v1_authz.c - authorization on /v1 (issue 6; docs/AUTHORIZATION.md): the policy set in
 * use (rebuilt when a role or profile changes), the roles that apply to a caller (cached per
 * identity while nothing is written), the checks every /v1 handler makes, and the endpoints
 * /v1/roles, /v1/profiles, /v1/authz/check, /v1/authz/gateway and /v1/me/rights.
 */
#include <ctype.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api_v1_int.h"
#include "authz/authz_policy.h"

const struct v1_action v1_actions[V1_ACT_COUNT] = {
#define V1_ACT_ROW(e, c, a, r, p) [V1_ACT_##e] = {c, a, "api/" c, r, p},
    V1_ACTION_TABLE(V1_ACT_ROW)
#undef V1_ACT_ROW
};

/* Roles that name key kinds: a defined role may not take them. */
static const char *const builtin_role_names[] = {"admin", "server", "server-readonly", "client",
                                                 NULL};
/* Roles and profiles every instance has, which cannot be deleted (Kuzzle's rule). */
static const char *const fixed_names[] = {"admin", "default", "anonymous", NULL};

static bool in_list(const char *const *list, const char *s)
{
    for (; *list; list++)
        if (strcmp(*list, s) == 0)
            return true;
    return false;
}

/* ---- the policy set in use ---- */

struct snap {
    _Atomic int refs;
    _Atomic uint64_t epoch; /* the store epoch it is known to be current at */
    int64_t version;        /* ts_store_authz_version when it was read */
    uint64_t gen;           /* distinguishes sets for the identity cache */
    struct ts_policy_set *ps;
};

#define ID_SLOTS 1024

/* What an identity's roles are, while the epoch and the set have not moved. */
struct id_slot {
    pthread_mutex_t mu;
    bool used;
    uint64_t epoch, gen;
    char key[TS_STORE_NAME_MAX + TS_STORE_DOC_ID_MAX + 2];
    json_t *identity; /* the identity's document (immutable once cached), or NULL */
    struct ts_grants grants;
    int64_t budget; /* requests per second its profiles allow (0: unlimited) */
};

/* Documents read for decisions (get, exists, the gateway's and check's resource), while the
 * epoch has not moved and the document has not expired. */
struct doc_slot {
    pthread_mutex_t mu;
    bool used;
    uint64_t epoch;
    int64_t expires_at; /* 0: never */
    char key[TS_STORE_NAME_MAX + TS_STORE_DOC_ID_MAX + 2];
    json_t *doc; /* immutable once cached; NULL: there is none */
};

struct gw_rule {
    char *method;    /* "GET"..., or "*" */
    char **segments; /* the path pattern split on '/'; "{x}" captures, a last "*" the rest */
    size_t nsegments;
    bool rest;      /* ends with "*" */
    char *resource; /* with {x} placeholders */
    char *action;
    bool public_route; /* no credential needed */
};

struct v1_authz {
    pthread_mutex_t mu;
    struct snap *cur;
    uint64_t next_gen;
    struct ts_pred_limits lim;
    struct id_slot slots[ID_SLOTS];
    struct doc_slot docs[ID_SLOTS];
    struct gw_rule *rules;
    size_t nrules;
};

static void snap_unref(struct snap *s)
{
    if (!s || atomic_fetch_sub(&s->refs, 1) != 1)
        return;
    ts_policy_set_free(s->ps);
    free(s);
}

static void snap_unref_cb(void *p)
{
    snap_unref(p);
}

struct v1_authz *v1_authz_new(const struct ts_config *cfg)
{
    struct v1_authz *z = ts_xcalloc(1, sizeof(*z));
    pthread_mutex_init(&z->mu, NULL);
    for (size_t i = 0; i < ID_SLOTS; i++) {
        pthread_mutex_init(&z->slots[i].mu, NULL);
        pthread_mutex_init(&z->docs[i].mu, NULL);
    }
    z->lim.max_fetches = (uint32_t)cfg->authz_max_fetches;
    return z;
}

static void rules_free(struct gw_rule *rules, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(rules[i].method);
        for (size_t k = 0; k < rules[i].nsegments; k++)
            free(rules[i].segments[k]);
        free(rules[i].segments);
        free(rules[i].resource);
        free(rules[i].action);
    }
    free(rules);
}

void v1_authz_free(struct v1_authz *z)
{
    if (!z)
        return;
    snap_unref(z->cur);
    for (size_t i = 0; i < ID_SLOTS; i++) {
        json_decref(z->slots[i].identity);
        pthread_mutex_destroy(&z->slots[i].mu);
        json_decref(z->docs[i].doc);
        pthread_mutex_destroy(&z->docs[i].mu);
    }
    rules_free(z->rules, z->nrules);
    pthread_mutex_destroy(&z->mu);
    free(z);
}

/* Creates the default roles and profiles that are missing (a fresh database, or one from
 * before issue 6); a concurrent creator's conflict is fine. */
static enum ts_rc seed_defaults(struct ts_store *st, struct ts_authz_object **roles, size_t nroles,
                                struct ts_authz_object **profs, size_t nprofs, bool *created)
{
    *created = false;
    for (int pass = 0; pass < 2; pass++) {
        const char *const *defs = pass == 0 ? ts_policy_default_roles : ts_policy_default_profiles;
        struct ts_authz_object **have = pass == 0 ? roles : profs;
        size_t nhave = pass == 0 ? nroles : nprofs;
        for (; *defs; defs++) {
            json_t *doc = json_loads(*defs, 0, NULL);
            const char *name = json_string_value(json_object_get(doc, "name"));
            bool found = false;
            for (size_t i = 0; i < nhave && !found; i++)
                found = strcmp(have[i]->name, name) == 0;
            enum ts_rc rc = TS_OK;
            if (!found) {
                int64_t now = ts_now_us();
                char *owned = ts_xstrdup(name);
                struct ts_authz_object o = {.kind = pass == 0 ? TS_AUTHZ_ROLE : TS_AUTHZ_PROFILE,
                                            .name = owned,
                                            .config = doc,
                                            .created_at = now,
                                            .updated_at = now};
                rc = ts_store_authz_create(st, &o);
                free(owned);
                if (rc == TS_E_CONFLICT)
                    rc = TS_OK;
                *created = true;
            }
            json_decref(doc);
            if (rc)
                return rc;
        }
    }
    return TS_OK;
}

static struct snap *load(struct v1_authz *z, struct ts_store *st, uint64_t epoch, int64_t version,
                         enum ts_rc *rc_out)
{
    struct ts_authz_object **roles = NULL, **profs = NULL;
    size_t nroles = 0, nprofs = 0;
    enum ts_rc rc = TS_OK;
    for (int attempt = 0; attempt < 2; attempt++) {
        rc = ts_store_authz_list(st, TS_AUTHZ_ROLE, &roles, &nroles);
        if (!rc)
            rc = ts_store_authz_list(st, TS_AUTHZ_PROFILE, &profs, &nprofs);
        bool created = false;
        if (!rc && attempt == 0)
            rc = seed_defaults(st, roles, nroles, profs, nprofs, &created);
        if (rc || !created)
            break;
        ts_authz_objects_free(roles, nroles);
        ts_authz_objects_free(profs, nprofs);
        roles = profs = NULL;
        nroles = nprofs = 0;
        epoch = ts_store_epoch(st);
        rc = ts_store_authz_version(st, &version);
        if (rc)
            break;
    }
    if (rc) {
        ts_authz_objects_free(roles, nroles);
        ts_authz_objects_free(profs, nprofs);
        *rc_out = rc;
        return NULL;
    }
    json_t **rj = ts_xcalloc(nroles + 1, sizeof(*rj));
    json_t **pj = ts_xcalloc(nprofs + 1, sizeof(*pj));
    for (size_t i = 0; i < nroles; i++)
        rj[i] = roles[i]->config;
    for (size_t i = 0; i < nprofs; i++)
        pj[i] = profs[i]->config;
    size_t skipped = 0;
    struct snap *s = ts_xcalloc(1, sizeof(*s));
    s->ps = ts_policy_set_new(rj, nroles, pj, nprofs, &z->lim, &skipped);
    if (skipped)
        ts_log_warn("authz: %zu stored roles or profiles no longer validate and are ignored",
                    skipped);
    free(rj);
    free(pj);
    ts_authz_objects_free(roles, nroles);
    ts_authz_objects_free(profs, nprofs);
    atomic_init(&s->refs, 1);
    atomic_init(&s->epoch, epoch);
    s->version = version;
    return s;
}

/* The set in use, referenced for the request (released when its arena is reset). */
static struct snap *snapshot(struct ts_http_req *req, enum ts_rc *rc)
{
    struct ts_api *api = ts_http_app(req);
    struct v1_authz *z = api->authz;
    uint64_t epoch = ts_store_epoch(api->store);
    pthread_mutex_lock(&z->mu);
    struct snap *s = z->cur;
    if (s && atomic_load(&s->epoch) == epoch) {
        atomic_fetch_add(&s->refs, 1);
        pthread_mutex_unlock(&z->mu);
        ts_arena_defer(ts_http_arena(req), snap_unref_cb, s);
        return s;
    }
    pthread_mutex_unlock(&z->mu);
    int64_t version = 0;
    *rc = ts_store_authz_version(api->store, &version);
    if (*rc)
        return NULL;
    pthread_mutex_lock(&z->mu);
    s = z->cur;
    if (s && s->version == version) {
        atomic_store(&s->epoch, epoch);
        atomic_fetch_add(&s->refs, 1);
        pthread_mutex_unlock(&z->mu);
        ts_arena_defer(ts_http_arena(req), snap_unref_cb, s);
        return s;
    }
    pthread_mutex_unlock(&z->mu);
    struct snap *fresh = load(z, api->store, epoch, version, rc);
    if (!fresh)
        return NULL;
    pthread_mutex_lock(&z->mu);
    if (!z->cur || z->cur->version <= fresh->version) {
        fresh->gen = ++z->next_gen;
        snap_unref(z->cur);
        z->cur = fresh;
    } else {
        snap_unref(fresh); /* another thread installed a newer one meanwhile */
    }
    s = z->cur;
    atomic_fetch_add(&s->refs, 1);
    pthread_mutex_unlock(&z->mu);
    ts_arena_defer(ts_http_arena(req), snap_unref_cb, s);
    return s;
}

/* ---- the request's authorization state ---- */

struct az_req {
    struct snap *snap;
    bool grants_ready;
    struct ts_grants grants;
    int64_t budget;         /* the identity's requests per second (0: unlimited) */
    bool budget_taken;      /* this request drew on it already */
    const json_t *identity; /* the caller's document, or NULL */
    json_t *claims;         /* the JWT's claims, or NULL */
    bool claims_ready;
    json_t *request;           /* method, path, ip, headers */
    const char *method, *path; /* the request described (the gateway's: the original one) */
};

static void decref_cb(void *p)
{
    json_decref(p);
}

static struct az_req *az(struct ts_http_req *req)
{
    struct api_req *ar = api_req(req);
    if (!ar->authz)
        ar->authz = ts_arena_calloc(ts_http_arena(req), sizeof(struct az_req));
    return ar->authz;
}

static uint64_t fnv(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

/* Reads a document for a predicate's get/exists/lookup (get and exists through a cache). */
static enum ts_rc fetch_doc(void *cls, enum ts_pred_fetch kind, const char *collection,
                            const char *id_or_index, const char *term, json_t **out)
{
    struct ts_http_req *req = cls;
    struct ts_api *api = ts_http_app(req);
    *out = NULL;
    if (!v1_name_ok(collection))
        return TS_E_NOT_FOUND;
    if (kind == TS_PRED_FETCH_LOOKUP) {
        if (!v1_name_ok(id_or_index) || !term || strcmp(collection, "users") == 0)
            return TS_E_NOT_FOUND;
        json_t *values = json_pack("[s]", term);
        char *key = ts_store_index_key(values);
        json_decref(values);
        if (!key)
            return TS_E_NOT_FOUND;
        struct ts_doc **list = NULL;
        size_t n = 0;
        enum ts_rc rc = ts_store_index_lookup(api->store, collection, id_or_index, key, NULL, 1,
                                              ts_now_us(), &list, &n);
        free(key);
        if (!rc && n)
            *out = v1_doc_json(list[0]);
        ts_doc_list_free(list, n);
        return rc == TS_E_NOT_FOUND ? TS_OK : rc;
    }
    if (!v1_doc_id_ok(id_or_index))
        return TS_E_NOT_FOUND;
    char key[sizeof(((struct doc_slot *)0)->key)];
    snprintf(key, sizeof(key), "%s/%s", collection, id_or_index);
    uint64_t epoch = ts_store_epoch(api->store);
    int64_t now = ts_now_us();
    struct doc_slot *slot = &api->authz->docs[fnv(key) % ID_SLOTS];
    pthread_mutex_lock(&slot->mu);
    if (slot->used && slot->epoch == epoch && (!slot->expires_at || now < slot->expires_at) &&
        strcmp(slot->key, key) == 0) {
        *out = slot->doc ? json_incref(slot->doc) : NULL;
        pthread_mutex_unlock(&slot->mu);
        return TS_OK;
    }
    pthread_mutex_unlock(&slot->mu);
    enum ts_rc rc;
    int64_t expires_at = 0;
    *out = v1_doc_read(api, collection, id_or_index, now, &expires_at, &rc);
    if (rc && rc != TS_E_NOT_FOUND)
        return rc;
    pthread_mutex_lock(&slot->mu);
    json_decref(slot->doc);
    slot->used = true;
    slot->epoch = epoch;
    slot->expires_at = expires_at;
    snprintf(slot->key, sizeof(slot->key), "%s", key);
    slot->doc = *out ? json_incref(*out) : NULL;
    pthread_mutex_unlock(&slot->mu);
    return TS_OK;
}

/* The document of identity (collection, id), or NULL (gone; or the store failed: *rc). */
static json_t *identity_doc(struct ts_api *api, const char *collection, const char *id,
                            enum ts_rc *rc)
{
    json_t *out = NULL;
    if (strcmp(collection, "users") == 0) {
        struct ts_user *u = NULL;
        *rc = ts_store_user_get(api->store, id, &u);
        if (!*rc)
            out = v1_user_doc_json(u);
        ts_user_free(u);
    } else {
        struct ts_doc *d = NULL;
        *rc = ts_store_doc_get(api->store, collection, id, ts_now_us(), &d);
        if (!*rc)
            out = v1_doc_json(d);
        ts_doc_free(d);
    }
    if (*rc == TS_E_NOT_FOUND)
        *rc = TS_OK;
    return out;
}

/* The profiles an identity's document names: data.profiles, or for users
 * data.app_metadata.profiles (which only servers may set). */
static const json_t *profiles_of(const char *collection, const json_t *doc)
{
    const json_t *data = json_object_get(doc, "data");
    if (strcmp(collection, "users") == 0)
        data = json_object_get(data, "app_metadata");
    return json_object_get(data, "profiles");
}

static void add_profiles(struct ts_grants *g, const struct ts_policy_set *ps,
                         const json_t *profiles)
{
    size_t i, named = 0;
    const json_t *p;
    if (json_is_array(profiles))
        json_array_foreach(profiles, i, p)
        {
            if (json_is_string(p)) {
                named++;
                ts_grants_add_profile(g, ps, json_string_value(p));
            }
        }
    if (!named)
        ts_grants_add_profile(g, ps, "default");
}

/* A profile's rate_limit: as set (0: unlimited), or -1 when it is null or the profile is
 * missing (inherit). */
static int64_t profile_rate(const struct ts_policy_set *ps, const char *name)
{
    const json_t *p = ts_policy_profile(ps, name);
    const json_t *r = p ? json_object_get(p, "rate_limit") : NULL;
    return json_is_integer(r) && json_integer_value(r) >= 0 ? (int64_t)json_integer_value(r) : -1;
}

/*
 * The requests per second an identity may make on /v1 (per node): the most permissive of its
 * profiles' rate_limit, as in Kuzzle, except that an unset (null) rate_limit inherits: the
 * default profile's, and when that is unset too, RATE_LIMIT_PROFILE_DEFAULT. So a profile
 * without a limit never lifts the cap by being added; only an explicit 0 does.
 */
static int64_t identity_budget(const struct ts_config *cfg, const struct ts_policy_set *ps,
                               const json_t *profiles)
{
    int64_t fallback = profile_rate(ps, "default");
    if (fallback < 0)
        fallback = cfg->rate_limit_profile_default;
    int64_t best = -1;
    size_t i;
    const json_t *p;
    if (json_is_array(profiles))
        json_array_foreach(profiles, i, p)
        {
            if (!json_is_string(p) || !ts_policy_profile(ps, json_string_value(p)))
                continue;
            int64_t r = profile_rate(ps, json_string_value(p));
            if (r < 0)
                r = fallback;
            if (best < 0 || r == 0 || (best != 0 && r > best))
                best = r;
        }
    return best < 0 ? fallback : best;
}

/* The roles an identity's profiles and memberships give it, cached while nothing changes. */
static enum ts_rc identity_grants(struct ts_http_req *req, struct snap *s, const char *collection,
                                  const char *id, struct ts_grants *g, int64_t *budget,
                                  const json_t **identity)
{
    struct ts_api *api = ts_http_app(req);
    struct v1_authz *z = api->authz;
    struct ts_arena *a = ts_http_arena(req);
    char key[sizeof(((struct id_slot *)0)->key)];
    snprintf(key, sizeof(key), "%s/%s", collection, id);
    uint64_t epoch = ts_store_epoch(api->store);
    struct id_slot *slot = &z->slots[fnv(key) % ID_SLOTS];
    pthread_mutex_lock(&slot->mu);
    if (slot->used && slot->epoch == epoch && slot->gen == s->gen && strcmp(slot->key, key) == 0) {
        *g = slot->grants;
        *budget = slot->budget;
        *identity = slot->identity;
        if (slot->identity) {
            json_incref(slot->identity);
            ts_arena_defer(a, decref_cb, slot->identity);
        }
        pthread_mutex_unlock(&slot->mu);
        return TS_OK;
    }
    pthread_mutex_unlock(&slot->mu);
    enum ts_rc rc = TS_OK;
    json_t *doc = identity_doc(api, collection, id, &rc);
    if (rc)
        return rc;
    memset(g, 0, sizeof(*g));
    *budget = identity_budget(api->cfg, s->ps, doc ? profiles_of(collection, doc) : NULL);
    if (doc) {
        add_profiles(g, s->ps, profiles_of(collection, doc));
        struct ts_pred_cache cache;
        ts_pred_cache_init(&cache);
        struct ts_pred_input in = {.identity = doc,
                                   .now_s = ts_now_us() / 1000000,
                                   .fetch = fetch_doc,
                                   .fetch_cls = req,
                                   .cache = &cache};
        ts_grants_add_membership(g, s->ps, collection, &in, a);
        ts_arena_defer(a, decref_cb, doc);
    }
    *identity = doc;
    pthread_mutex_lock(&slot->mu);
    json_decref(slot->identity);
    slot->used = true;
    slot->epoch = epoch;
    slot->gen = s->gen;
    snprintf(slot->key, sizeof(slot->key), "%s", key);
    slot->grants = *g;
    slot->budget = *budget;
    slot->identity = doc ? json_incref(doc) : NULL;
    pthread_mutex_unlock(&slot->mu);
    return TS_OK;
}

/* The roles the credential itself names (space-separated in c->roles). */
static void add_credential_roles(struct ts_grants *g, const struct ts_policy_set *ps,
                                 const struct v1_caller *c, const char *via)
{
    char buf[sizeof(c->roles)];
    snprintf(buf, sizeof(buf), "%s", c->roles);
    char *save = NULL;
    for (char *t = strtok_r(buf, " ", &save); t; t = strtok_r(NULL, " ", &save)) {
        const struct ts_role *r = ts_policy_role(ps, t);
        if (r)
            ts_grants_add_role(g, ps, ts_role_name(r), via, NULL);
    }
}

/*
 * The roles that apply to the caller: a key's defined role (keys get neither profiles nor
 * memberships, as in Fauna); an identity's profiles (default when it names none) and
 * memberships; an AccessProvider's rules; the anonymous profile for anonymous callers and
 * client keys. False (answered 503) when the store failed.
 */
static bool caller_grants(struct ts_http_req *req, const struct v1_caller *c)
{
    struct az_req *r = az(req);
    if (r->grants_ready)
        return true;
    enum ts_rc rc = TS_OK;
    if (!r->snap && !(r->snap = snapshot(req, &rc))) {
        v1_fail(req, rc, "roles");
        return false;
    }
    const struct ts_policy_set *ps = r->snap->ps;
    struct ts_grants *g = &r->grants;
    memset(g, 0, sizeof(*g));
    if (c->kind == V1_ANONYMOUS || (c->kind == V1_KEY && strcmp(c->key_role, "client") == 0)) {
        ts_grants_add_profile(g, ps, "anonymous");
    } else if (c->kind == V1_KEY) {
        add_credential_roles(g, ps, c, "key");
    } else if (c->kind != V1_JWT_ADMIN) {
        if (c->has_identity) {
            rc = identity_grants(req, r->snap, c->identity_collection, c->identity_id, g,
                                 &r->budget, &r->identity);
            if (rc) {
                v1_fail(req, rc, "roles of the identity");
                return false;
            }
        } else {
            ts_grants_add_profile(g, ps, "default");
        }
        add_credential_roles(g, ps, c, "provider");
    }
    r->grants_ready = true;
    return true;
}

bool v1_membership_raises(struct ts_http_req *req, const char *collection, const json_t *old_doc,
                          const json_t *new_doc, bool *raises)
{
    enum ts_rc rc = TS_OK;
    struct snap *s = snapshot(req, &rc);
    if (!s) {
        v1_fail(req, rc, "roles");
        return false;
    }
    *raises = false;
    struct ts_grants before = {0}, after = {0};
    int64_t now = ts_now_us() / 1000000;
    struct ts_pred_cache cb, ca;
    ts_pred_cache_init(&cb);
    ts_pred_cache_init(&ca);
    struct ts_pred_input in_b = {
        .identity = old_doc, .now_s = now, .fetch = fetch_doc, .fetch_cls = req, .cache = &cb};
    struct ts_pred_input in_a = {
        .identity = new_doc, .now_s = now, .fetch = fetch_doc, .fetch_cls = req, .cache = &ca};
    if (old_doc)
        ts_grants_add_membership(&before, s->ps, collection, &in_b, ts_http_arena(req));
    ts_grants_add_membership(&after, s->ps, collection, &in_a, ts_http_arena(req));
    for (size_t i = 0; i < after.n && !*raises; i++) {
        bool had = false;
        for (size_t k = 0; k < before.n && !had; k++)
            had = before.items[k].role == after.items[i].role;
        *raises = !had;
    }
    return true;
}

bool v1_role_defined(struct ts_http_req *req, const char *name, bool *defined)
{
    enum ts_rc rc = TS_OK;
    struct snap *s = snapshot(req, &rc);
    if (!s) {
        v1_fail(req, rc, "roles");
        return false;
    }
    /* the set in use: a role created by this node is in it (the write moved the epoch); one
     * created by another node a moment ago may not be yet, which only refuses */
    *defined = ts_policy_role(s->ps, name) != NULL;
    return true;
}

/* A JWT caller's claims (the token was verified by v1_caller). */
static json_t *caller_claims(struct ts_http_req *req, const struct v1_caller *c)
{
    struct az_req *r = az(req);
    if (r->claims_ready)
        return r->claims;
    r->claims_ready = true;
    if (c->kind != V1_JWT_USER && c->kind != V1_JWT_EXTERNAL && c->kind != V1_JWT_EXCHANGE &&
        c->kind != V1_JWT_ADMIN)
        return NULL;
    /* the credential v1_caller verified: Bearer, or else the apikey header */
    const char *h = ts_http_header(req, "Authorization");
    const char *tok = NULL;
    if (h && strncasecmp(h, "Bearer ", 7) == 0)
        tok = h + 7;
    else if (!h)
        tok = ts_http_header(req, "apikey");
    if (!tok)
        return NULL;
    while (*tok == ' ')
        tok++;
    const char *dot1 = strchr(tok, '.');
    const char *dot2 = dot1 ? strchr(dot1 + 1, '.') : NULL;
    if (!dot2)
        return NULL;
    size_t cap = ts_b64url_decoded_max((size_t)(dot2 - dot1 - 1));
    uint8_t *buf = ts_arena_alloc(ts_http_arena(req), cap + 1);
    size_t n = 0;
    if (ts_b64url_decode(dot1 + 1, (size_t)(dot2 - dot1 - 1), buf, &n) != TS_OK)
        return NULL;
    json_t *j = json_loadb((const char *)buf, n, 0, NULL);
    if (!json_is_object(j)) {
        json_decref(j);
        return NULL;
    }
    ts_arena_defer(ts_http_arena(req), decref_cb, j);
    r->claims = j;
    return j;
}

struct hdr_collect {
    json_t *obj;
};

static void collect_header(void *cls, const char *name, const char *value)
{
    struct hdr_collect *h = cls;
    char low[128];
    size_t n = strlen(name);
    if (n >= sizeof(low))
        return;
    for (size_t i = 0; i <= n; i++)
        low[i] = (char)tolower((unsigned char)name[i]);
    /* credentials never reach predicates (nor anything they could leak into) */
    if (strcmp(low, "authorization") == 0 || strcmp(low, "cookie") == 0 ||
        strcmp(low, "apikey") == 0 || strcmp(low, "proxy-authorization") == 0)
        return;
    json_object_set_new(h->obj, low, json_string(value));
}

static json_t *request_json(struct ts_http_req *req)
{
    struct az_req *r = az(req);
    if (r->request)
        return r->request;
    json_t *headers = json_object();
    struct hdr_collect h = {headers};
    ts_http_headers_each(req, collect_header, &h);
    const char *ip = ts_http_client_ip(req);
    r->request = json_pack("{s:s, s:s, s:s?, s:o}", "method",
                           r->method ? r->method : ts_http_method_name(req), "path",
                           r->path ? r->path : ts_http_path(req), "ip", ip, "headers", headers);
    ts_arena_defer(ts_http_arena(req), decref_cb, r->request);
    return r->request;
}

/* TS_AUTHZ_EXACT_RESOURCE for the protected actions of Tessera's own controllers. */
static unsigned action_flags(const char *resource, const char *action)
{
    if (strncmp(resource, "api/", 4) != 0)
        return 0;
    for (size_t i = 0; i < V1_ACT_COUNT; i++)
        if (v1_actions[i].access == V1_PROTECTED && strcmp(v1_actions[i].resource, resource) == 0 &&
            strcmp(v1_actions[i].action, action) == 0)
            return TS_AUTHZ_EXACT_RESOURCE;
    return 0;
}

/* Decides with the caller's grants; inputs are built only when a predicate must run. A
 * denial by a failing predicate is logged at info, or at debug while filtering a listing
 * (quiet), where one request may evaluate a thousand documents. */
static bool grants_decide(struct ts_http_req *req, const struct v1_caller *c,
                          const struct ts_grants *g, const json_t *identity, const json_t *claims,
                          const char *resource, const char *action, const json_t *res,
                          const json_t *old_doc, const json_t *new_doc, bool quiet,
                          struct ts_authz_decision *d)
{
    unsigned flags = action_flags(resource, action);
    struct ts_pred_cache cache;
    ts_pred_cache_init(&cache);
    struct ts_pred_input in = {.identity = identity,
                               .claims = claims,
                               .resource = res,
                               .old_doc = old_doc,
                               .new_doc = new_doc,
                               .now_s = ts_now_us() / 1000000,
                               .fetch = fetch_doc,
                               .fetch_cls = req,
                               .cache = &cache};
    /* only what a predicate that could decide reads: the request's headers cost more than
     * most decisions */
    unsigned uses = ts_grants_uses_ex(g, resource, action, flags);
    if (uses & TS_PRED_USES_REQUEST)
        in.request = request_json(req);
    if ((uses & TS_PRED_USES_CLAIMS) && c && !claims)
        in.claims = caller_claims(req, c);
    bool ok = ts_grants_decide_ex(g, resource, action, flags, &in, ts_http_arena(req), d);
    if (!ok && strncmp(d->reason, "role ", 5) == 0) {
        if (quiet)
            ts_log_debug("authz: %s on %s denied: %s", action, resource, d->reason);
        else
            ts_log_info("authz: %s on %s denied: %s", action, resource, d->reason);
    }
    return ok;
}

/* ---- the checks of the handlers ---- */

void v1_deny(struct ts_http_req *req, const struct v1_caller *c)
{
    if (c->kind == V1_ANONYMOUS)
        v1_unauthorized(req, "a credential is required");
    else
        v1_forbidden(req);
}

bool v1_allowed(struct ts_http_req *req, const struct v1_caller *c, enum v1_act act)
{
    const struct v1_action *a = &v1_actions[act];
    if (a->access == V1_PUBLIC)
        return true;
    if (a->access == V1_ALWAYS && c->kind != V1_ANONYMOUS)
        return true;
    if (a->builtin != V1_ROLE_NONE && c->role >= a->builtin)
        return true;
    if (!caller_grants(req, c))
        return false;
    struct az_req *r = az(req);
    struct ts_authz_decision d;
    return grants_decide(req, c, &r->grants, r->identity, NULL, a->resource, a->action, NULL, NULL,
                         NULL, false, &d);
}

bool v1_within_budget(struct ts_http_req *req, const struct v1_caller *c)
{
    if (!c->has_identity)
        return true;
    struct az_req *r = az(req);
    if (r->budget_taken) /* once per request, however often the caller is worked out */
        return true;
    if (!caller_grants(req, c))
        return false;
    r->budget_taken = true;
    struct ts_api *api = ts_http_app(req);
    if (r->budget <= 0)
        return true;
    char subject[TS_STORE_NAME_MAX + TS_STORE_DOC_ID_MAX + 2];
    snprintf(subject, sizeof(subject), "%s/%s", c->identity_collection, c->identity_id);
    struct ts_limit_verdict v;
    ts_local_take(api->budgets, subject, r->budget, ts_mono_us(), &v);
    if (v.allowed)
        return true;
    api_too_many(req, v.retry_after_s, "Request rate limit of the caller's profiles reached");
    return false;
}

bool v1_require(struct ts_http_req *req, struct v1_caller *c, enum v1_act act)
{
    if (!v1_caller(req, c))
        return false;
    if (v1_allowed(req, c, act))
        return true;
    if (ts_http_status(req) == 0)
        v1_deny(req, c);
    return false;
}

bool v1_require_identity(struct ts_http_req *req, struct v1_caller *c, enum v1_act act)
{
    if (!v1_require(req, c, act))
        return false;
    if (c->has_identity)
        return true;
    v1_deny(req, c);
    return false;
}

static const char *const doc_action_names[] = {"read", "create", "write", "delete", "list"};

bool v1_doc_builtin(const struct v1_caller *c, enum v1_doc_action action)
{
    bool reads = action == V1_DOC_READ || action == V1_DOC_LIST;
    return c->role >= (reads ? V1_ROLE_SERVER_READ : V1_ROLE_SERVER);
}

bool v1_doc_allowed(struct ts_http_req *req, const struct v1_caller *c, const char *collection,
                    enum v1_doc_action action, const json_t *resource, const json_t *old_doc,
                    const json_t *new_doc, bool answer)
{
    if (v1_doc_builtin(c, action))
        return true;
    if (!caller_grants(req, c))
        return false;
    struct az_req *r = az(req);
    char res[16 + TS_STORE_NAME_MAX];
    snprintf(res, sizeof(res), "collections/%s", collection);
    struct ts_authz_decision d;
    if (grants_decide(req, c, &r->grants, r->identity, NULL, res, doc_action_names[action],
                      resource, old_doc, new_doc, !answer, &d))
        return true;
    if (answer)
        v1_deny(req, c);
    return false;
}

bool v1_doc_may(struct ts_http_req *req, const struct v1_caller *c, const char *collection,
                enum v1_doc_action action)
{
    if (v1_doc_builtin(c, action))
        return true;
    if (!caller_grants(req, c))
        return false;
    char res[16 + TS_STORE_NAME_MAX];
    snprintf(res, sizeof(res), "collections/%s", collection);
    if (ts_grants_static(&az(req)->grants, res, doc_action_names[action]) != TS_AUTHZ_DENIED)
        return true;
    v1_deny(req, c);
    return false;
}

/* ---- /v1/roles and /v1/profiles ---- */

static json_t *object_json(const struct ts_authz_object *o)
{
    json_t *j = json_deep_copy(o->config);
    json_object_set_new(j, "created_at", v1_time(o->created_at));
    json_object_set_new(j, "updated_at", v1_time(o->updated_at));
    return j;
}

static void objects_list(struct ts_http_req *req, enum ts_authz_kind kind, enum v1_act act)
{
    struct ts_api *api = ts_http_app(req);
    struct v1_caller c;
    if (!v1_require(req, &c, act))
        return;
    struct ts_authz_object **list = NULL;
    size_t n = 0;
    enum ts_rc rc = ts_store_authz_list(api->store, kind, &list, &n);
    if (!rc && n == 0) {
        /* a fresh database: the defaults appear with the first use of the set */
        ts_authz_objects_free(list, n);
        list = NULL;
        if (snapshot(req, &rc))
            rc = ts_store_authz_list(api->store, kind, &list, &n);
    }
    if (rc) {
        v1_fail(req, rc, "roles list");
        return;
    }
    json_t *data = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(data, object_json(list[i]));
    ts_authz_objects_free(list, n);
    api_json(req, 200, json_pack("{s:o}", "data", data));
}

static void object_get(struct ts_http_req *req, enum ts_authz_kind kind, enum v1_act act)
{
    struct ts_api *api = ts_http_app(req);
    struct v1_caller c;
    if (!v1_require(req, &c, act))
        return;
    const char *name = ts_http_param(req, "name");
    enum ts_rc rc = TS_OK;
    if (!snapshot(req, &rc)) { /* makes sure the defaults exist */
        v1_fail(req, rc, "roles");
        return;
    }
    struct ts_authz_object *o = NULL;
    rc = v1_name_ok(name) ? ts_store_authz_get(api->store, kind, name, &o) : TS_E_NOT_FOUND;
    if (rc) {
        v1_fail(req, rc, kind == TS_AUTHZ_ROLE ? "role get" : "profile get");
        return;
    }
    api_json(req, 200, object_json(o));
    ts_authz_object_free(o);
}

/* Validates a role or profile body; for a profile, its roles must exist. NULL when answered. */
static json_t *object_validate(struct ts_http_req *req, enum ts_authz_kind kind, const char *name,
                               json_t *body)
{
    struct ts_api *api = ts_http_app(req);
    char err[256];
    json_t *canon = NULL;
    enum ts_rc rc = kind == TS_AUTHZ_ROLE
                        ? ts_role_validate(name, body, &api->authz->lim, &canon, err, sizeof(err))
                        : ts_profile_validate(name, body, &canon, err, sizeof(err));
    if (rc) {
        v1_error(req, 400, "invalid_request", err);
        return NULL;
    }
    ts_arena_defer(ts_http_arena(req), decref_cb, canon);
    const char *cname = json_string_value(json_object_get(canon, "name"));
    if (kind == TS_AUTHZ_ROLE && in_list(builtin_role_names, cname) &&
        strcmp(cname, "admin") != 0) {
        v1_error(req, 400, "invalid_request",
                 "server, server-readonly and client are the built-in key roles");
        return NULL;
    }
    if (kind == TS_AUTHZ_PROFILE) {
        struct snap *s = snapshot(req, &rc);
        if (!s) {
            v1_fail(req, rc, "roles");
            return NULL;
        }
        size_t i;
        json_t *p;
        json_array_foreach(json_object_get(canon, "policies"), i, p)
        {
            const char *role = json_string_value(json_object_get(p, "role"));
            if (!ts_policy_role(s->ps, role)) {
                char msg[160];
                snprintf(msg, sizeof(msg), "policies[%zu]: no role named %s", i, role);
                v1_error(req, 400, "invalid_request", msg);
                return NULL;
            }
        }
    }
    return canon;
}

static void object_create(struct ts_http_req *req, enum ts_authz_kind kind, enum v1_act act)
{
    struct ts_api *api = ts_http_app(req);
    struct v1_caller c;
    if (!v1_require(req, &c, act))
        return;
    json_t *body = v1_body(req);
    if (!body)
        return;
    if (!json_is_string(json_object_get(body, "name"))) {
        v1_error(req, 400, "invalid_request", "name is required");
        return;
    }
    json_t *canon = object_validate(req, kind, NULL, body);
    if (!canon)
        return;
    int64_t now = ts_now_us();
    struct ts_authz_object o = {
        .kind = kind,
        .name =
            ts_arena_strdup(ts_http_arena(req), json_string_value(json_object_get(canon, "name"))),
        .config = canon,
        .created_at = now,
        .updated_at = now};
    enum ts_rc rc = ts_store_authz_create(api->store, &o);
    if (rc) {
        v1_fail(req, rc, kind == TS_AUTHZ_ROLE ? "role create" : "profile create");
        return;
    }
    ts_store_audit(api->store, kind == TS_AUTHZ_ROLE ? "role_created" : "profile_created",
                   c.secret_id[0] ? c.secret_id : NULL, o.name, ts_http_client_ip(req), NULL);
    api_json(req, 201, object_json(&o));
}

static void object_put(struct ts_http_req *req, enum ts_authz_kind kind, enum v1_act act)
{
    struct ts_api *api = ts_http_app(req);
    struct v1_caller c;
    if (!v1_require(req, &c, act))
        return;
    const char *name = ts_http_param(req, "name");
    json_t *body = v1_body(req);
    if (!body)
        return;
    if (!v1_name_ok(name)) {
        v1_error(req, 404, "not_found", "Not found");
        return;
    }
    json_t *canon = object_validate(req, kind, name, body);
    if (!canon)
        return;
    struct ts_authz_object *old = NULL;
    enum ts_rc rc = ts_store_authz_get(api->store, kind, name, &old);
    if (rc) {
        v1_fail(req, rc, "role get");
        return;
    }
    struct ts_authz_object o = {.kind = kind,
                                .name = ts_arena_strdup(ts_http_arena(req), name),
                                .config = canon,
                                .created_at = old->created_at,
                                .updated_at = ts_now_us()};
    ts_authz_object_free(old);
    rc = ts_store_authz_update(api->store, &o);
    if (rc) {
        v1_fail(req, rc, kind == TS_AUTHZ_ROLE ? "role update" : "profile update");
        return;
    }
    ts_store_audit(api->store, kind == TS_AUTHZ_ROLE ? "role_updated" : "profile_updated",
                   c.secret_id[0] ? c.secret_id : NULL, name, ts_http_client_ip(req), NULL);
    api_json(req, 200, object_json(&o));
}

static void object_delete(struct ts_http_req *req, enum ts_authz_kind kind, enum v1_act act)
{
    struct ts_api *api = ts_http_app(req);
    struct v1_caller c;
    if (!v1_require(req, &c, act))
        return;
    const char *name = ts_http_param(req, "name");
    if (!v1_name_ok(name)) {
        v1_error(req, 404, "not_found", "Not found");
        return;
    }
    if (in_list(fixed_names, name)) {
        v1_error(req, 400, "invalid_request", "admin, default and anonymous cannot be deleted");
        return;
    }
    if (kind == TS_AUTHZ_ROLE) {
        /* a role still named by a profile stays (Kuzzle's rule) */
        struct ts_authz_object **profs = NULL;
        size_t n = 0;
        enum ts_rc rc = ts_store_authz_list(api->store, TS_AUTHZ_PROFILE, &profs, &n);
        if (rc) {
            v1_fail(req, rc, "profile list");
            return;
        }
        const char *user = NULL;
        for (size_t i = 0; i < n && !user; i++) {
            size_t k;
            json_t *p;
            json_array_foreach(json_object_get(profs[i]->config, "policies"), k, p)
            {
                if (strcmp(json_string_value(json_object_get(p, "role")), name) == 0)
                    user = ts_arena_strdup(ts_http_arena(req), profs[i]->name);
            }
        }
        ts_authz_objects_free(profs, n);
        if (user) {
            char msg[160];
            snprintf(msg, sizeof(msg), "The profile %s uses this role", user);
            v1_error(req, 409, "conflict", msg);
            return;
        }
    }
    enum ts_rc rc = ts_store_authz_delete(api->store, kind, name);
    if (rc) {
        v1_fail(req, rc, kind == TS_AUTHZ_ROLE ? "role delete" : "profile delete");
        return;
    }
    ts_store_audit(api->store, kind == TS_AUTHZ_ROLE ? "role_deleted" : "profile_deleted",
                   c.secret_id[0] ? c.secret_id : NULL, name, ts_http_client_ip(req), NULL);
    ts_http_respond(req, 204, NULL, "", 0);
}

void v1_roles_list(struct ts_http_req *req)
{
    objects_list(req, TS_AUTHZ_ROLE, V1_ACT_ROLE_LIST);
}
void v1_roles_create(struct ts_http_req *req)
{
    object_create(req, TS_AUTHZ_ROLE, V1_ACT_ROLE_CREATE);
}
void v1_role_get(struct ts_http_req *req)
{
    object_get(req, TS_AUTHZ_ROLE, V1_ACT_ROLE_GET);
}
void v1_role_put(struct ts_http_req *req)
{
    object_put(req, TS_AUTHZ_ROLE, V1_ACT_ROLE_UPDATE);
}
void v1_role_delete(struct ts_http_req *req)
{
    object_delete(req, TS_AUTHZ_ROLE, V1_ACT_ROLE_DELETE);
}
void v1_profiles_list(struct ts_http_req *req)
{
    objects_list(req, TS_AUTHZ_PROFILE, V1_ACT_PROFILE_LIST);
}
void v1_profiles_create(struct ts_http_req *req)
{
    object_create(req, TS_AUTHZ_PROFILE, V1_ACT_PROFILE_CREATE);
}
void v1_profile_get(struct ts_http_req *req)
{
    object_get(req, TS_AUTHZ_PROFILE, V1_ACT_PROFILE_GET);
}
void v1_profile_put(struct ts_http_req *req)
{
    object_put(req, TS_AUTHZ_PROFILE, V1_ACT_PROFILE_UPDATE);
}
void v1_profile_delete(struct ts_http_req *req)
{
    object_delete(req, TS_AUTHZ_PROFILE, V1_ACT_PROFILE_DELETE);
}

/* ---- decisions for services: /v1/authz/check ---- */

#define CHECK_BATCH_MAX 100

/* Whom a check is about: the caller, or (for server keys) another identity. */
struct subject {
    const struct v1_caller *caller; /* NULL for another identity */
    const struct ts_grants *grants;
    const json_t *identity;
    const json_t *claims;
    enum v1_role builtin;
    bool anonymous;
};

/* "collections/<c>[/<id>]" or "api/<controller>": the resource to decide on, and the
 * document id (arena) when one is named. */
static bool check_resource(struct ts_http_req *req, const char *text, char **resource, char **id)
{
    *id = NULL;
    if (!text || strlen(text) > 300)
        return false;
    *resource = ts_arena_strdup(ts_http_arena(req), text);
    if (strncmp(text, "collections/", 12) == 0) {
        char *slash = strchr(*resource + 12, '/');
        if (slash) {
            *slash = '\0';
            *id = slash + 1;
            if (!v1_doc_id_ok(*id))
                return false;
        }
    }
    return ts_policy_resource_ok(*resource);
}

static json_t *explain_json(const struct ts_authz_decision *d)
{
    if (!d->allowed)
        return json_pack("{s:n, s:s}", "role", "reason", d->reason);
    return json_pack("{s:s?, s:s, s:s, s:s, s:s?}", "role", d->role, "privilege", d->privilege,
                     "action", d->action, "rule", d->rule, "via", d->via);
}

/* Whether a built-in key role allows action on resource, as on /v1 itself: admin anything;
 * on documents, reads from server-readonly and the rest from server; on Tessera's own
 * controllers, what the action table says. Nothing on a service's own controllers. */
static bool builtin_allows(enum v1_role role, const char *resource, const char *action)
{
    if (role == V1_ROLE_ADMIN)
        return true;
    if (role == V1_ROLE_NONE)
        return false;
    if (strncmp(resource, "collections/", 12) == 0) {
        bool reads = strcmp(action, "read") == 0 || strcmp(action, "list") == 0;
        return role >= (reads ? V1_ROLE_SERVER_READ : V1_ROLE_SERVER);
    }
    for (size_t i = 0; i < V1_ACT_COUNT; i++)
        if (strcmp(v1_actions[i].resource, resource) == 0 &&
            strcmp(v1_actions[i].action, action) == 0)
            return v1_actions[i].builtin != V1_ROLE_NONE && role >= v1_actions[i].builtin;
    return false;
}

/* One check's answer, {allowed, explain}, as text: the single check is the hot path of
 * services, and building it as a jansson tree cost more than deciding. */
static enum ts_rc decision_text(struct ts_buf *b, const struct ts_authz_decision *d)
{
    enum ts_rc rc = TS_OK;
    if (!d->allowed) {
        rc = ts_buf_append_str(b, "{\"allowed\":false,\"explain\":{\"role\":null,\"reason\":\"");
        if (!rc)
            rc = ts_buf_append_json_escaped(b, d->reason);
        return rc ? rc : ts_buf_append_str(b, "\"}}");
    }
    const char *names[] = {"role", "privilege", "action", "rule", "via"};
    const char *vals[] = {d->role, d->privilege, d->action, d->rule, d->via};
    rc = ts_buf_append_str(b, "{\"allowed\":true,\"explain\":{");
    for (size_t i = 0; i < 5 && !rc; i++) {
        rc = ts_buf_appendf(b, "%s\"%s\":", i ? "," : "", names[i]);
        if (!rc && !vals[i])
            rc = ts_buf_append_str(b, "null");
        else if (!rc) {
            rc = ts_buf_append_str(b, "\"");
            if (!rc)
                rc = ts_buf_append_json_escaped(b, vals[i]);
            if (!rc)
                rc = ts_buf_append_str(b, "\"");
        }
    }
    return rc ? rc : ts_buf_append_str(b, "}}");
}

/* Decides one {action, resource, context?} into d; false with *msg when the check is
 * malformed (or "unavailable" when the store could not be read). */
static bool check_one(struct ts_http_req *req, const struct subject *sub, const json_t *item,
                      const char **msg, struct ts_authz_decision *d)
{
    static const char *const members[] = {"action", "resource", "context", "subject", NULL};
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)(uintptr_t)item, key, v)
    {
        if (!in_list(members, key)) {
            *msg = "A check is {subject?, action, resource, context?}";
            return false;
        }
    }
    const char *action = json_string_value(json_object_get(item, "action"));
    const json_t *ctx = json_object_get(item, "context");
    char *resource = NULL, *id = NULL;
    if (!action || !*action || strlen(action) > 64 || strcmp(action, "*") == 0) {
        *msg = "action must name one action";
        return false;
    }
    if (!check_resource(req, json_string_value(json_object_get(item, "resource")), &resource,
                        &id)) {
        *msg = "resource must be collections/<name>, collections/<name>/<id> or "
               "api/<controller>";
        return false;
    }
    if (ctx && !json_is_null(ctx) && !json_is_object(ctx)) {
        *msg = "context must be an object";
        return false;
    }
    const json_t *res = json_object_get(ctx, "resource");
    const json_t *old_doc = json_object_get(ctx, "old");
    const json_t *new_doc = json_object_get(ctx, "new");
    const json_t *claims = json_object_get(ctx, "claims");
    if (claims && sub->caller && sub->builtin == V1_ROLE_NONE) {
        /* a caller's claims are its verified token's; only services may supply others */
        *msg = "context.claims needs a built-in key role (server-readonly, server, admin)";
        return false;
    }
    memset(d, 0, sizeof(*d));
    bool coll = strncmp(resource, "collections/", 12) == 0;
    bool builtin = builtin_allows(sub->builtin, resource, action);
    for (size_t i = 0; i < V1_ACT_COUNT && !coll; i++) {
        const struct v1_action *a = &v1_actions[i];
        bool open = a->access == V1_PUBLIC || (a->access == V1_ALWAYS && !sub->anonymous);
        if (open && strcmp(a->resource, resource) == 0 && strcmp(a->action, action) == 0) {
            *d = (struct ts_authz_decision){.allowed = true,
                                            .privilege = resource,
                                            .action = action,
                                            .rule = "true",
                                            .via = a->access == V1_PUBLIC ? "public" : "always"};
            return true;
        }
    }
    if (builtin) {
        static const char *const names[] = {"client", "server-readonly", "server", "admin"};
        *d = (struct ts_authz_decision){.allowed = true,
                                        .role = names[sub->builtin],
                                        .privilege = resource,
                                        .action = action,
                                        .rule = "true",
                                        .via = "builtin"};
        return true;
    }
    json_t *fetched = NULL;
    if (coll && id && !res) {
        enum ts_rc rc = fetch_doc(req, TS_PRED_FETCH_GET, resource + 12, id, NULL, &fetched);
        if (rc) {
            *msg = "unavailable";
            return false;
        }
        res = fetched;
        /* as on /v1: a write or a delete sees the stored document as old too */
        if (!old_doc && (strcmp(action, "write") == 0 || strcmp(action, "delete") == 0))
            old_doc = fetched;
    }
    bool ok =
        grants_decide(req, sub->caller, sub->grants, sub->identity, claims ? claims : sub->claims,
                      resource, action, res, old_doc, new_doc, false, d);
    json_decref(fetched);
    if (!ok && sub->builtin == V1_ROLE_NONE && sub->caller)
        /* why a predicate failed (a missing value, a type) could tell an identity about
         * documents it may not read: only services get the reason */
        snprintf(d->reason, sizeof(d->reason), "no role allows %.16s on %.120s", action, resource);
    d->allowed = ok;
    return true;
}

/* The subject member: {collection, id} or "collection/id". */
static bool parse_subject(const json_t *s, char *coll, size_t ccap, char *id, size_t icap)
{
    const char *c = NULL, *i = NULL;
    char buf[TS_STORE_NAME_MAX + TS_STORE_DOC_ID_MAX + 2];
    if (json_is_string(s)) {
        snprintf(buf, sizeof(buf), "%s", json_string_value(s));
        char *slash = strchr(buf, '/');
        if (!slash)
            return false;
        *slash = '\0';
        c = buf;
        i = slash + 1;
    } else if (json_is_object(s) && json_object_size(s) == 2) {
        c = json_string_value(json_object_get(s, "collection"));
        i = json_string_value(json_object_get(s, "id"));
    }
    if (!v1_name_ok(c) || !v1_doc_id_ok(i) || strlen(c) >= ccap || strlen(i) >= icap)
        return false;
    snprintf(coll, ccap, "%s", c);
    snprintf(id, icap, "%s", i);
    return true;
}

void v1_authz_check(struct ts_http_req *req)
{
    struct v1_caller c;
    if (!v1_require(req, &c, V1_ACT_AUTHZ_CHECK))
        return;
    json_t *body = v1_body(req);
    if (!body)
        return;
    const json_t *checks = json_object_get(body, "checks");
    bool batch = checks != NULL;
    if (batch && (!json_is_array(checks) || json_array_size(checks) == 0 ||
                  json_array_size(checks) > CHECK_BATCH_MAX || json_object_size(body) > 2 ||
                  (json_object_size(body) == 2 && !json_object_get(body, "subject")))) {
        v1_error(req, 400, "invalid_request", "checks must be an array of 1 to 100 checks");
        return;
    }
    const json_t *subj = json_object_get(body, "subject");
    struct subject sub = {0};
    struct ts_grants other;
    if (subj && !json_is_null(subj)) {
        /* another identity's rights: a server key's question */
        if (c.role < V1_ROLE_SERVER_READ) {
            v1_forbidden(req);
            return;
        }
        char coll[TS_STORE_NAME_MAX + 1], id[TS_STORE_DOC_ID_MAX + 1];
        if (!parse_subject(subj, coll, sizeof(coll), id, sizeof(id))) {
            v1_error(req, 400, "invalid_request",
                     "subject must be {collection, id} or \"collection/id\"");
            return;
        }
        enum ts_rc rc = TS_OK;
        struct az_req *r = az(req);
        if (!r->snap && !(r->snap = snapshot(req, &rc))) {
            v1_fail(req, rc, "roles");
            return;
        }
        const json_t *identity = NULL;
        int64_t budget;
        rc = identity_grants(req, r->snap, coll, id, &other, &budget, &identity);
        if (rc) {
            v1_fail(req, rc, "roles of the subject");
            return;
        }
        if (!identity) {
            v1_error(req, 404, "not_found", "No such identity");
            return;
        }
        sub.grants = &other;
        sub.identity = identity;
    } else {
        if (!caller_grants(req, &c))
            return;
        struct az_req *r = az(req);
        sub.caller = &c;
        sub.grants = &r->grants;
        sub.identity = r->identity;
        /* claims are read only when a predicate needs them (grants_decide) */
        sub.builtin = c.kind == V1_JWT_ADMIN ? V1_ROLE_ADMIN : c.role;
        sub.anonymous = c.kind == V1_ANONYMOUS;
    }
    const char *msg = NULL;
    struct ts_authz_decision d;
    if (!batch) {
        if (!check_one(req, &sub, body, &msg, &d)) {
            if (strcmp(msg, "unavailable") == 0)
                v1_fail(req, TS_E_UNAVAILABLE, "check fetch");
            else
                v1_error(req, 400, "invalid_request", msg);
            return;
        }
        struct ts_buf b;
        ts_buf_init(&b, 4096);
        api_respond_text(req, 200, &b, decision_text(&b, &d));
        return;
    }
    json_t *results = json_array();
    size_t i;
    const json_t *item;
    json_array_foreach(checks, i, item)
    {
        bool good = json_is_object(item) && !json_object_get(item, "subject") &&
                    check_one(req, &sub, item, &msg, &d);
        json_t *one =
            good ? json_pack("{s:b, s:o}", "allowed", d.allowed, "explain", explain_json(&d))
                 : NULL;
        if (!one) {
            json_decref(results);
            char text[200];
            snprintf(text, sizeof(text), "checks[%zu]: %s", i,
                     msg ? msg : "a check is {action, resource, context?}");
            if (msg && strcmp(msg, "unavailable") == 0)
                v1_fail(req, TS_E_UNAVAILABLE, "check fetch");
            else
                v1_error(req, 400, "invalid_request", text);
            return;
        }
        json_array_append_new(results, one);
    }
    api_json(req, 200, json_pack("{s:o}", "results", results));
}

/* ---- GET /v1/me/rights ---- */

struct rights {
    json_t *list;
    json_t *seen; /* "resource action" -> true */
    json_t *collections;
    const struct v1_caller *caller;
    const struct ts_grants *grants;
};

static const char *value_name(enum ts_authz_value v)
{
    return v == TS_AUTHZ_ALLOWED ? "allowed" : v == TS_AUTHZ_CONDITIONAL ? "conditional" : "denied";
}

static void right_add(struct rights *r, const char *resource, const char *action,
                      enum ts_authz_value v)
{
    char key[400];
    snprintf(key, sizeof(key), "%s %s", resource, action);
    if (json_object_get(r->seen, key))
        return;
    json_object_set_new(r->seen, key, json_true());
    json_array_append_new(r->list, json_pack("{s:s, s:s, s:s}", "resource", resource, "action",
                                             action, "value", value_name(v)));
}

static void note_collection(void *cls, const char *name)
{
    struct rights *r = cls;
    json_object_set_new(r->collections, name, json_true());
}

static void note_api_action(void *cls, const char *controller, const char *action)
{
    struct rights *r = cls;
    char res[200];
    snprintf(res, sizeof(res), "api/%s", controller);
    bool admin = r->caller->role == V1_ROLE_ADMIN || r->caller->kind == V1_JWT_ADMIN;
    right_add(r, res, action, admin ? TS_AUTHZ_ALLOWED : ts_grants_static(r->grants, res, action));
}

void v1_me_rights(struct ts_http_req *req)
{
    struct ts_api *api = ts_http_app(req);
    struct v1_caller c;
    if (!v1_require(req, &c, V1_ACT_AUTH_RIGHTS) || !caller_grants(req, &c))
        return;
    struct az_req *az_r = az(req);
    struct rights r = {json_array(), json_object(), json_object(), &c, &az_r->grants};
    for (size_t i = 0; i < V1_ACT_COUNT; i++) {
        const struct v1_action *a = &v1_actions[i];
        enum ts_authz_value v = ts_grants_static_ex(&az_r->grants, a->resource, a->action,
                                                    action_flags(a->resource, a->action));
        if (a->access == V1_PUBLIC || (a->access == V1_ALWAYS && c.kind != V1_ANONYMOUS) ||
            (a->builtin != V1_ROLE_NONE && c.role >= a->builtin) || c.kind == V1_JWT_ADMIN)
            v = TS_AUTHZ_ALLOWED;
        right_add(&r, a->resource, a->action, v);
    }
    /* the controllers and collections the caller's own roles name; the store's collections
     * only for a caller that may list them (the names are not everyone's business) */
    bool every_role = c.kind == V1_JWT_ADMIN || c.role == V1_ROLE_ADMIN;
    size_t nroles = 0;
    const struct ts_role *const *roles = ts_policy_roles(az_r->snap->ps, &nroles);
    for (size_t i = 0; i < (every_role ? nroles : az_r->grants.n); i++) {
        const struct ts_role *role = every_role ? roles[i] : az_r->grants.items[i].role;
        ts_role_api_actions(role, note_api_action, &r);
        ts_role_collections(role, note_collection, &r);
    }
    struct ts_collection_info *colls = NULL;
    size_t ncolls = 0;
    enum ts_rc rc = TS_OK;
    if (v1_allowed(req, &c, V1_ACT_COLLECTION_LIST))
        rc = ts_store_collection_list(api->store, NULL, 1000, &colls, &ncolls);
    if (rc || ts_http_status(req) != 0) {
        json_decref(r.list);
        json_decref(r.seen);
        json_decref(r.collections);
        if (ts_http_status(req) == 0)
            v1_fail(req, rc, "collection list");
        return;
    }
    for (size_t i = 0; i < ncolls; i++)
        note_collection(&r, colls[i].name);
    ts_collection_infos_free(colls, ncolls);
    note_collection(&r, "users");
    const char *name;
    json_t *v;
    json_object_foreach(r.collections, name, v)
    {
        char res[16 + TS_STORE_NAME_MAX];
        snprintf(res, sizeof(res), "collections/%s", name);
        for (size_t k = 0; k < TS_ARRAY_LEN(doc_action_names); k++) {
            enum ts_authz_value val = ts_grants_static(&az_r->grants, res, doc_action_names[k]);
            if (v1_doc_builtin(&c, (enum v1_doc_action)k) || c.kind == V1_JWT_ADMIN)
                val = TS_AUTHZ_ALLOWED;
            right_add(&r, res, doc_action_names[k], val);
        }
    }
    json_decref(r.seen);
    json_decref(r.collections);
    api_json(req, 200, json_pack("{s:o}", "rights", r.list));
}

/* ---- GET /v1/authz/gateway: nginx auth_request, forward-auth ---- */

static bool split_path(const char *path, char ***segs, size_t *n)
{
    *segs = NULL;
    *n = 0;
    if (path[0] != '/')
        return false;
    const char *p = path + 1;
    while (*p) {
        const char *e = strchr(p, '/');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        *segs = ts_xrealloc(*segs, (*n + 1) * sizeof(char *));
        (*segs)[(*n)++] = ts_xstrndup(p, len);
        if (!e)
            break;
        p = e + 1;
    }
    return true;
}

enum ts_rc v1_authz_load_routes(struct v1_authz *z, const char *path, char **err)
{
    *err = NULL;
    if (!path || !*path)
        return TS_OK;
    json_error_t je;
    json_t *doc = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!doc) {
        *err = ts_xasprintf("GATEWAY_ROUTES %s: %s (line %d)", path, je.text, je.line);
        return TS_E_INVALID;
    }
    json_t *list = json_is_object(doc) ? json_object_get(doc, "routes") : doc;
    if (!json_is_array(list) || json_array_size(list) > 1000) {
        json_decref(doc);
        *err = ts_xasprintf("GATEWAY_ROUTES %s: an array of at most 1000 rules", path);
        return TS_E_INVALID;
    }
    struct gw_rule *rules = ts_xcalloc(json_array_size(list) + 1, sizeof(*rules));
    size_t n = 0, i;
    json_t *r;
    json_array_foreach(list, i, r)
    {
        const char *route = json_string_value(json_object_get(r, "route"));
        const char *resource = json_string_value(json_object_get(r, "resource"));
        const char *action = json_string_value(json_object_get(r, "action"));
        json_t *pub = json_object_get(r, "public");
        const char *sp = route ? strchr(route, ' ') : NULL;
        bool ok = json_is_object(r) && sp && (pub == NULL || json_is_boolean(pub)) &&
                  (json_is_true(pub) || (resource && action));
        struct gw_rule *g = &rules[n];
        if (ok) {
            g->method = ts_xstrndup(route, (size_t)(sp - route));
            for (char *m = g->method; *m; m++)
                *m = (char)toupper((unsigned char)*m);
            ok = split_path(sp + 1, &g->segments, &g->nsegments);
            n++;
        }
        if (ok && g->nsegments && strcmp(g->segments[g->nsegments - 1], "*") == 0) {
            g->rest = true;
            free(g->segments[--g->nsegments]);
        }
        if (ok) {
            g->public_route = json_is_true(pub);
            g->resource = resource ? ts_xstrdup(resource) : NULL;
            g->action = action ? ts_xstrdup(action) : NULL;
            /* the resource with placeholders filled by identifiers must still be one */
            if (resource) {
                char probe[512];
                size_t o = 0;
                for (const char *p = resource; *p && o + 2 < sizeof(probe); p++) {
                    if (*p == '}')
                        ok = false;
                    if (*p == '{') {
                        const char *e = strchr(p, '}');
                        if (!e || e == p + 1 || e - p > 60) {
                            ok = false;
                            break;
                        }
                        probe[o++] = 'x';
                        p = e;
                    } else {
                        probe[o++] = *p;
                    }
                }
                probe[o] = '\0';
                /* probe keeps resource's prefix: placeholders come after it */
                char *slash = strncmp(resource, "collections/", 12) == 0 && o > 12
                                  ? strchr(probe + 12, '/')
                                  : NULL;
                if (slash)
                    *slash = '\0';
                ok = ok && ts_policy_resource_ok(probe) && action && strlen(action) <= 64;
            }
        }
        if (!ok) {
            *err = ts_xasprintf("GATEWAY_ROUTES %s: rule %zu must be {\"route\": \"METHOD "
                                "/path/{param}\", \"resource\", \"action\"} or {\"route\", "
                                "\"public\": true}",
                                path, i);
            rules_free(rules, n);
            json_decref(doc);
            return TS_E_INVALID;
        }
    }
    json_decref(doc);
    rules_free(z->rules, z->nrules);
    z->rules = rules;
    z->nrules = n;
    return TS_OK;
}

/* Matches path against a rule; fills the captures (name -> value) into caps. */
static bool rule_match(const struct gw_rule *g, const char *method, char **segs, size_t n,
                       json_t *caps)
{
    if (strcmp(g->method, "*") != 0 && strcmp(g->method, method) != 0)
        return false;
    if (g->rest ? n < g->nsegments : n != g->nsegments)
        return false;
    for (size_t i = 0; i < g->nsegments; i++) {
        const char *p = g->segments[i];
        size_t pl = strlen(p);
        if (pl > 2 && p[0] == '{' && p[pl - 1] == '}') {
            if (!*segs[i])
                return false;
            char name[64];
            snprintf(name, sizeof(name), "%.*s", (int)(pl - 2), p + 1);
            json_object_set_new(caps, name, json_string(segs[i]));
        } else if (strcmp(p, segs[i]) != 0) {
            return false;
        }
    }
    return true;
}

/* The rule's resource with its placeholders replaced; NULL when a value is not an id. */
static char *fill_resource(struct ts_http_req *req, const char *tmpl, const json_t *caps)
{
    char out[512];
    size_t o = 0;
    for (const char *p = tmpl; *p; p++) {
        if (*p == '{') {
            const char *e = strchr(p, '}');
            if (!e)
                return NULL; /* refused at load; never trusted here */
            char name[64];
            snprintf(name, sizeof(name), "%.*s", (int)(e - p - 1), p + 1);
            const char *v = json_string_value(json_object_get(caps, name));
            if (!v || !v1_doc_id_ok(v) || o + strlen(v) >= sizeof(out))
                return NULL;
            memcpy(out + o, v, strlen(v));
            o += strlen(v);
            p = e;
        } else if (o + 1 < sizeof(out)) {
            out[o++] = *p;
        }
    }
    out[o] = '\0';
    return ts_arena_strdup(ts_http_arena(req), out);
}

/*
 * The original path as upstreams will see it, or false when it is ambiguous. Rules match the
 * decoded path, so that /%61dmin is /admin; anything that servers behind the proxy may read
 * differently is refused rather than guessed: an encoded '/', '\', '.', NUL or control
 * character, a '\' or ';', a "." or ".." segment, an empty segment inside the path ("//").
 * Matching stays case-sensitive. Decodes in place.
 */
static bool canonical_path(char *path)
{
    char *o = path;
    for (const char *p = path; *p; p++) {
        int c = (unsigned char)*p;
        if (c == '%') {
            int hi = ts_hex_digit((unsigned char)p[1]),
                lo = hi < 0 ? -1 : ts_hex_digit((unsigned char)p[2]);
            if (lo < 0)
                return false;
            c = hi * 16 + lo;
            if (c == '/' || c == '\\' || c == '.' || c < 0x20 || c == 0x7f)
                return false;
            p += 2;
        } else if (c < 0x20 || c == 0x7f || c == '\\' || c == ';') {
            return false;
        }
        *o++ = (char)c;
    }
    *o = '\0';
    for (const char *seg = path + 1; *seg;) {
        size_t n = strcspn(seg, "/");
        bool last = seg[n] == '\0';
        if ((n == 0 && !last) || (n == 1 && seg[0] == '.') ||
            (n == 2 && seg[0] == '.' && seg[1] == '.'))
            return false;
        seg += n + (last ? 0 : 1);
    }
    return true;
}

static void gateway_answer(struct ts_http_req *req, int status)
{
    if (status == 401)
        ts_http_add_header(req, "WWW-Authenticate", "Bearer");
    ts_http_respond(req, status, NULL, "", 0);
}

void v1_authz_gateway(struct ts_http_req *req)
{
    struct ts_api *api = ts_http_app(req);
    struct v1_authz *z = api->authz;
    const char *method = ts_http_header(req, api->cfg->gateway_method_header);
    const char *uri = ts_http_header(req, api->cfg->gateway_uri_header);
    if (!method || !uri || uri[0] != '/' || strlen(uri) > 4096 || strlen(method) > 16) {
        v1_error(req, 400, "invalid_request", "The proxy must send the original method and URI");
        return;
    }
    struct ts_arena *a = ts_http_arena(req);
    char *path = ts_arena_strdup(a, uri);
    path[strcspn(path, "?#")] = '\0';
    if (!canonical_path(path)) {
        gateway_answer(req, 403);
        return;
    }
    char *m = ts_arena_strdup(a, method);
    for (char *p = m; *p; p++)
        *p = (char)toupper((unsigned char)*p);
    char **segs = NULL;
    size_t nsegs = 0;
    split_path(path, &segs, &nsegs);
    json_t *caps = json_object();
    const struct gw_rule *rule = NULL;
    for (size_t i = 0; i < z->nrules && !rule; i++) {
        json_object_clear(caps);
        if (rule_match(&z->rules[i], m, segs, nsegs, caps))
            rule = &z->rules[i];
    }
    for (size_t i = 0; i < nsegs; i++)
        free(segs[i]);
    free(segs);
    ts_arena_defer(a, decref_cb, caps);
    if (rule && rule->public_route) {
        gateway_answer(req, 200);
        return;
    }
    struct v1_caller c;
    if (!v1_caller(req, &c))
        return; /* 401 (or parked while an outside key set is fetched) */
    if (!rule) {
        gateway_answer(req, c.kind == V1_ANONYMOUS ? 401 : 403);
        return;
    }
    az(req)->method = m;
    az(req)->path = path;
    char *resource = fill_resource(req, rule->resource, caps);
    char *id = NULL;
    if (!resource || !check_resource(req, resource, &resource, &id)) {
        gateway_answer(req, 403);
        return;
    }
    bool coll = strncmp(resource, "collections/", 12) == 0;
    const char *role = NULL;
    bool ok = false;
    static const char *const builtin_names[] = {"client", "server-readonly", "server", "admin"};
    enum v1_role builtin = c.kind == V1_JWT_ADMIN ? V1_ROLE_ADMIN : c.role;
    if (builtin_allows(builtin, resource, rule->action)) {
        ok = true;
        role = builtin_names[builtin];
    } else {
        if (!caller_grants(req, &c))
            return;
        struct az_req *r = az(req);
        json_t *doc = NULL;
        if (coll && id &&
            (ts_grants_uses(&r->grants, resource, rule->action) &
             (TS_PRED_USES_RESOURCE | TS_PRED_USES_OLD))) {
            enum ts_rc rc = fetch_doc(req, TS_PRED_FETCH_GET, resource + 12, id, NULL, &doc);
            if (rc) {
                v1_fail(req, rc, "gateway fetch");
                return;
            }
            if (doc)
                ts_arena_defer(a, decref_cb, doc);
        }
        struct ts_authz_decision d;
        ok = grants_decide(req, &c, &r->grants, r->identity, NULL, resource, rule->action, doc,
                           NULL, NULL, false, &d);
        role = d.role;
    }
    if (!ok) {
        gateway_answer(req, c.kind == V1_ANONYMOUS ? 401 : 403);
        return;
    }
    if (c.has_identity) {
        ts_http_add_header(req, "X-Tessera-User", c.identity_id);
        ts_http_add_header(req, "X-Tessera-Collection", c.identity_collection);
    } else if (c.secret_id[0]) {
        ts_http_add_header(req, "X-Tessera-Key", c.secret_id);
    }
    if (role)
        ts_http_add_header(req, "X-Tessera-Role", role);
    gateway_answer(req, 200);
}

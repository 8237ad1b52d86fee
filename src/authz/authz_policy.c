/*
 * authz_policy.c - roles, profiles, the roles that apply to a caller, and decisions.
 * Contract: authz_policy.h; the model: docs/AUTHORIZATION.md.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "authz_policy.h"

const char *const ts_policy_collection_actions[] = {"read",   "create", "write",
                                                    "delete", "list",   NULL};

const char *const ts_policy_default_roles[] = {
    /* the controllers that administer authorization itself are named: the wildcard resource
     * never grants their protected actions (api_v1_int.h) */
    "{\"name\":\"admin\",\"privileges\":["
    "{\"resource\":\"api/*\",\"actions\":{\"*\":true}},"
    "{\"resource\":\"api/key\",\"actions\":{\"*\":true}},"
    "{\"resource\":\"api/token\",\"actions\":{\"*\":true}},"
    "{\"resource\":\"api/role\",\"actions\":{\"*\":true}},"
    "{\"resource\":\"api/profile\",\"actions\":{\"*\":true}},"
    "{\"resource\":\"api/access_provider\",\"actions\":{\"*\":true}},"
    "{\"resource\":\"collections/*\",\"actions\":{\"*\":true}}],\"membership\":[]}",
    "{\"name\":\"default\",\"privileges\":["
    "{\"resource\":\"api/auth\",\"actions\":{\"login\":true,\"identify\":true,\"logout\":true,"
    "\"me\":true,\"sessions\":true,\"delete_session\":true,\"rights\":true}},"
    "{\"resource\":\"api/authz\",\"actions\":{\"check\":true}}],\"membership\":[]}",
    "{\"name\":\"anonymous\",\"privileges\":["
    "{\"resource\":\"api/auth\",\"actions\":{\"login\":true,\"identify\":true,\"rights\":true}}],"
    "\"membership\":[]}",
    NULL,
};

const char *const ts_policy_default_profiles[] = {
    "{\"name\":\"admin\",\"policies\":[{\"role\":\"admin\"}],\"rate_limit\":0}",
    "{\"name\":\"default\",\"policies\":[{\"role\":\"default\"}],\"rate_limit\":null}",
    "{\"name\":\"anonymous\",\"policies\":[{\"role\":\"anonymous\"}],\"rate_limit\":null}",
    NULL,
};

/* jansson's iteration macros take a json_t * but only read through it. */
static json_t *mut(const json_t *j)
{
    union {
        const json_t *c;
        json_t *m;
    } u = {.c = j};
    return u.m;
}

/* ---- names ---- */

enum kind { KIND_API = 1, KIND_COLL = 2 };

static bool is_word(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

/* Collection names as /v1 has them: ^[A-Za-z_][A-Za-z0-9_-]{0,63}$. */
static bool collection_name_ok(const char *s)
{
    if (!s || !*s || strlen(s) > 64 || (s[0] >= '0' && s[0] <= '9') || s[0] == '-')
        return false;
    for (; *s; s++)
        if (!is_word((unsigned char)*s) && *s != '-')
            return false;
    return true;
}

/* Controllers and actions: word characters and . / : -, 1..128 bytes, starting with a word
 * character (Kuzzle's plugin controllers are "plugin/name"). */
static bool token_ok(const char *s, size_t max)
{
    if (!s || !*s || strlen(s) > max || !is_word((unsigned char)s[0]))
        return false;
    for (; *s; s++)
        if (!is_word((unsigned char)*s) && !strchr("./:-", *s))
            return false;
    return true;
}

/* Splits a privilege's resource; *name points into r. Wildcards allowed when wild. */
static bool split_resource(const char *r, bool wild, enum kind *k, const char **name)
{
    if (!r)
        return false;
    if (strncmp(r, "collections/", 12) == 0) {
        *k = KIND_COLL;
        *name = r + 12;
        return (wild && strcmp(*name, "*") == 0) || collection_name_ok(*name);
    }
    if (strncmp(r, "api/", 4) == 0) {
        *k = KIND_API;
        *name = r + 4;
        return (wild && strcmp(*name, "*") == 0) || token_ok(*name, 128);
    }
    return false;
}

bool ts_policy_resource_ok(const char *resource)
{
    enum kind k;
    const char *name;
    return split_resource(resource, false, &k, &name);
}

static bool name_ok(const char *s)
{
    return s && strlen(s) <= TS_POLICY_NAME_MAX && collection_name_ok(s);
}

static void say(char *err, size_t cap, const char *fmt, ...) TS_PRINTF(3, 4);
static void say(char *err, size_t cap, const char *fmt, ...)
{
    if (!err || !cap)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, cap, fmt, ap);
    va_end(ap);
}

/* ---- compiled roles ---- */

enum rule_value { RULE_FALSE, RULE_TRUE, RULE_PRED };

struct rule {
    const char *action;
    enum rule_value value;
    struct ts_pred *pred; /* RULE_PRED */
    const char *source;   /* RULE_PRED: the text; otherwise "true" / "false" */
};

struct privilege {
    const char *resource; /* as written */
    enum kind kind;
    const char *name; /* "*" for the wildcard */
    bool wildcard;
    size_t nrules;
    struct rule *rules;
};

struct membership {
    const char *collection;
    struct ts_pred *pred; /* NULL: every identity of the collection */
};

struct ts_role {
    struct ts_arena arena;
    const char *name;
    size_t npriv;
    struct privilege *privs;
    size_t nmember;
    struct membership *members;
};

static void role_free(struct ts_role *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->npriv; i++)
        for (size_t k = 0; k < r->privs[i].nrules; k++)
            ts_pred_free(r->privs[i].rules[k].pred);
    for (size_t i = 0; i < r->nmember; i++)
        ts_pred_free(r->members[i].pred);
    ts_arena_free(&r->arena);
    free(r);
}

static bool compile(const char *src, const struct ts_pred_limits *lim, struct ts_pred **out,
                    const char *where, char *err, size_t cap)
{
    struct ts_pred_error pe = {0};
    if (ts_pred_compile(src, lim, out, &pe) == TS_OK)
        return true;
    say(err, cap, "%s: line %u, column %u: %s", where, pe.line, pe.column, pe.message);
    return false;
}

/* Builds a role from its canonical document. Refuses what ts_role_validate refuses. */
static struct ts_role *role_build(const json_t *doc, const struct ts_pred_limits *lim, char *err,
                                  size_t cap)
{
    struct ts_role *r = ts_xcalloc(1, sizeof(*r));
    ts_arena_init(&r->arena, 1024);
    const char *name = json_string_value(json_object_get(doc, "name"));
    json_t *privs = json_object_get(doc, "privileges");
    json_t *members = json_object_get(doc, "membership");
    if (!name_ok(name)) {
        say(err, cap, "name must match ^[A-Za-z_][A-Za-z0-9_-]{0,63}$");
        goto fail;
    }
    r->name = ts_arena_strdup(&r->arena, name);
    if (!json_is_array(privs) || json_array_size(privs) > TS_POLICY_MAX_PRIVILEGES) {
        say(err, cap, "privileges must be an array of at most %d {resource, actions}",
            TS_POLICY_MAX_PRIVILEGES);
        goto fail;
    }
    r->privs = ts_arena_calloc(&r->arena, (json_array_size(privs) + 1) * sizeof(*r->privs));
    size_t i;
    json_t *p;
    json_array_foreach(privs, i, p)
    {
        struct privilege *pv = &r->privs[i];
        const char *res = json_string_value(json_object_get(p, "resource"));
        json_t *actions = json_object_get(p, "actions");
        if (!json_is_object(p) || json_object_size(p) != 2 ||
            !split_resource(res, true, &pv->kind, &pv->name)) {
            say(err, cap,
                "privileges[%zu] must be {resource, actions} with resource \"collections/<name>\","
                " \"collections/*\", \"api/<controller>\" or \"api/*\"",
                i);
            goto fail;
        }
        for (size_t k = 0; k < i; k++)
            if (strcmp(r->privs[k].resource, res) == 0) {
                say(err, cap, "privileges[%zu]: %s is named twice", i, res);
                goto fail;
            }
        pv->resource = ts_arena_strdup(&r->arena, res);
        pv->name = pv->resource + (pv->kind == KIND_COLL ? 12 : 4);
        pv->wildcard = strcmp(pv->name, "*") == 0;
        r->npriv = i + 1;
        if (!json_is_object(actions) || json_object_size(actions) == 0 ||
            json_object_size(actions) > TS_POLICY_MAX_ACTIONS) {
            say(err, cap, "privileges[%zu].actions must be an object of 1 to %d actions", i,
                TS_POLICY_MAX_ACTIONS);
            goto fail;
        }
        pv->rules = ts_arena_calloc(&r->arena, json_object_size(actions) * sizeof(*pv->rules));
        const char *a;
        json_t *v;
        json_object_foreach(actions, a, v)
        {
            bool known = strcmp(a, "*") == 0;
            if (pv->kind == KIND_COLL)
                for (const char *const *c = ts_policy_collection_actions; *c; c++)
                    known = known || strcmp(*c, a) == 0;
            else
                known = known || token_ok(a, 64);
            if (!known) {
                say(err, cap,
                    pv->kind == KIND_COLL
                        ? "privileges[%zu].actions: '%.64s' is not read, create, write, delete, "
                          "list or *"
                        : "privileges[%zu].actions: '%.64s' is not an action name",
                    i, a);
                goto fail;
            }
            struct rule *ru = &pv->rules[pv->nrules];
            ru->action = ts_arena_strdup(&r->arena, a);
            if (json_is_boolean(v)) {
                ru->value = json_is_true(v) ? RULE_TRUE : RULE_FALSE;
                ru->source = json_is_true(v) ? "true" : "false";
            } else if (json_is_string(v)) {
                char where[160];
                snprintf(where, sizeof(where), "privileges[%zu].actions.%.64s", i, a);
                ru->value = RULE_PRED;
                ru->source = ts_arena_strdup(&r->arena, json_string_value(v));
                if (!compile(ru->source, lim, &ru->pred, where, err, cap))
                    goto fail;
            } else {
                say(err, cap, "privileges[%zu].actions.%.64s must be true, false or a predicate", i,
                    a);
                goto fail;
            }
            pv->nrules++;
        }
    }
    if (members && !json_is_null(members)) {
        if (!json_is_array(members) || json_array_size(members) > TS_POLICY_MAX_MEMBERSHIP) {
            say(err, cap, "membership must be an array of at most %d {collection, predicate?}",
                TS_POLICY_MAX_MEMBERSHIP);
            goto fail;
        }
        r->members =
            ts_arena_calloc(&r->arena, (json_array_size(members) + 1) * sizeof(*r->members));
        json_array_foreach(members, i, p)
        {
            const char *coll = json_string_value(json_object_get(p, "collection"));
            json_t *pred = json_object_get(p, "predicate");
            size_t allowed = 1 + (pred != NULL);
            if (!json_is_object(p) || json_object_size(p) != allowed || !collection_name_ok(coll) ||
                (pred && !json_is_null(pred) && !json_is_string(pred))) {
                say(err, cap, "membership[%zu] must be {collection, predicate?}", i);
                goto fail;
            }
            struct membership *m = &r->members[i];
            m->collection = ts_arena_strdup(&r->arena, coll);
            r->nmember = i + 1;
            if (json_is_string(pred)) {
                char where[64];
                snprintf(where, sizeof(where), "membership[%zu].predicate", i);
                if (!compile(json_string_value(pred), lim, &m->pred, where, err, cap))
                    goto fail;
            }
        }
    }
    return r;
fail:
    role_free(r);
    return NULL;
}

/* Kuzzle's {controllers: {<c>: {actions: {<a>: bool}}}} appended to privs as api/<c>. */
static bool convert_controllers(const json_t *controllers, json_t *privs, char *err, size_t cap)
{
    if (!json_is_object(controllers)) {
        say(err, cap, "controllers must be {<controller>: {actions: {<action>: bool}}}");
        return false;
    }
    const char *c;
    json_t *v;
    json_object_foreach(mut(controllers), c, v)
    {
        json_t *actions = json_object_get(v, "actions");
        if (!json_is_object(v) || json_object_size(v) != 1 || !json_is_object(actions)) {
            say(err, cap, "controllers.%.64s must be {actions: {<action>: bool}}", c);
            return false;
        }
        if (strcmp(c, "*") != 0 && !token_ok(c, 128)) {
            say(err, cap, "controllers: '%.64s' is not a controller name", c);
            return false;
        }
        char *res = ts_xasprintf("api/%s", c);
        json_array_append_new(privs, json_pack("{s:s, s:O}", "resource", res, "actions", actions));
        free(res);
    }
    return true;
}

/* The checks a role and a profile body share: an object of known members whose name, when
 * given, is the one of the path; *name becomes the name to use. what: "role", "profile". */
static bool object_head(const json_t *in, const char *const *members, const char *what,
                        const char **name, char *err, size_t cap)
{
    if (!json_is_object(in)) {
        say(err, cap, "a %s is a JSON object", what);
        return false;
    }
    const char *key;
    json_t *v;
    json_object_foreach(mut(in), key, v)
    {
        bool known = false;
        for (const char *const *m = members; *m; m++)
            known = known || strcmp(*m, key) == 0;
        if (!known) {
            say(err, cap, "unknown member '%.64s'", key);
            return false;
        }
    }
    const char *given = json_string_value(json_object_get(in, "name"));
    if (json_object_get(in, "name") && (!given || (*name && strcmp(given, *name) != 0))) {
        say(err, cap, "name does not match the %s's name", what);
        return false;
    }
    if (!*name)
        *name = given;
    return true;
}

enum ts_rc ts_role_validate(const char *name, const json_t *in, const struct ts_pred_limits *lim,
                            json_t **canon, char *err, size_t errcap)
{
    static const char *const members[] = {"name", "privileges", "controllers", "membership",
                                          "data", "tags",       NULL};
    if (!object_head(in, members, "role", &name, err, errcap))
        return TS_E_INVALID;
    json_t *privs = json_object_get(in, "privileges");
    json_t *controllers = json_object_get(in, "controllers");
    json_t *data = json_object_get(in, "data");
    json_t *tags = json_object_get(in, "tags");
    if (!privs && !controllers) {
        say(err, errcap, "a role needs privileges (or Kuzzle's controllers)");
        return TS_E_INVALID;
    }
    if (privs && !json_is_array(privs)) {
        say(err, errcap, "privileges must be an array of {resource, actions}");
        return TS_E_INVALID;
    }
    if ((data && !json_is_null(data) && !json_is_object(data)) ||
        (tags && !json_is_null(tags) && !json_is_array(tags))) {
        say(err, errcap, "data must be an object and tags an array");
        return TS_E_INVALID;
    }
    json_t *out_privs = privs ? json_deep_copy(privs) : json_array();
    if (controllers && !convert_controllers(controllers, out_privs, err, errcap)) {
        json_decref(out_privs);
        return TS_E_INVALID;
    }
    json_t *membership = json_object_get(in, "membership");
    json_t *doc =
        json_pack("{s:s?, s:o, s:o}", "name", name, "privileges", out_privs, "membership",
                  membership && !json_is_null(membership) ? json_incref(membership) : json_array());
    if (!doc) {
        say(err, errcap, "name must match ^[A-Za-z_][A-Za-z0-9_-]{0,63}$");
        return TS_E_INVALID;
    }
    if (data && json_is_object(data))
        json_object_set(doc, "data", data);
    if (tags && json_is_array(tags))
        json_object_set(doc, "tags", tags);
    struct ts_role *r = role_build(doc, lim, err, errcap);
    if (!r) {
        json_decref(doc);
        return TS_E_INVALID;
    }
    role_free(r);
    *canon = doc;
    return TS_OK;
}

/* ---- profiles ---- */

struct policy {
    const char *role;
    json_t *restricted_to; /* flattened collection names; NULL: unrestricted */
};

struct profile {
    const char *name;
    json_t *doc;
    size_t npolicies;
    struct policy *policies;
};

/* Validates restrictedTo and answers its canonical form and its flattened names (NULL when
 * it restricts nothing). */
static bool restrictions(const json_t *rt, size_t at, json_t **canon, json_t **flat, char *err,
                         size_t cap)
{
    *canon = json_array();
    *flat = NULL;
    if (!rt || json_is_null(rt))
        return true;
    if (!json_is_array(rt) || json_array_size(rt) > TS_POLICY_MAX_RESTRICT)
        goto bad;
    size_t i, total = 0;
    json_t *r;
    bool unrestricted = json_array_size(rt) == 0;
    json_array_foreach(mut(rt), i, r)
    {
        json_t *colls = json_object_get(r, "collections");
        if (!json_is_object(r))
            goto bad;
        const char *k;
        json_t *v;
        json_object_foreach(r, k, v) if (strcmp(k, "collections") != 0 &&
                                         strcmp(k, "index") != 0) goto bad;
        if (!colls || json_is_null(colls) || (json_is_array(colls) && !json_array_size(colls))) {
            /* Kuzzle: an index without collections means all of it; we have one namespace */
            unrestricted = true;
            json_array_append_new(*canon, json_pack("{s:[]}", "collections"));
            continue;
        }
        if (!json_is_array(colls))
            goto bad;
        size_t j;
        json_t *c;
        json_array_foreach(colls, j, c)
        {
            if (!collection_name_ok(json_string_value(c)) || ++total > TS_POLICY_MAX_RESTRICT)
                goto bad;
            if (!*flat)
                *flat = json_array();
            json_array_append(*flat, c);
        }
        json_array_append_new(*canon, json_pack("{s:O}", "collections", colls));
    }
    if (unrestricted && *flat) {
        json_decref(*flat);
        *flat = NULL;
    }
    return true;
bad:
    json_decref(*canon);
    json_decref(*flat);
    *canon = *flat = NULL;
    say(err, cap, "policies[%zu].restrictedTo must be [{collections: [<name>...]}] (at most %d)",
        at, TS_POLICY_MAX_RESTRICT);
    return false;
}

enum ts_rc ts_profile_validate(const char *name, const json_t *in, json_t **canon, char *err,
                               size_t errcap)
{
    static const char *const members[] = {"name", "policies", "rate_limit", "rateLimit",
                                          "data", "tags",     NULL};
    if (!object_head(in, members, "profile", &name, err, errcap))
        return TS_E_INVALID;
    if (!name_ok(name)) {
        say(err, errcap, "name must match ^[A-Za-z_][A-Za-z0-9_-]{0,63}$");
        return TS_E_INVALID;
    }
    json_t *policies = json_object_get(in, "policies");
    if (!json_is_array(policies) || json_array_size(policies) == 0 ||
        json_array_size(policies) > TS_POLICY_MAX_POLICIES) {
        say(err, errcap, "policies must be an array of 1 to %d {role, restrictedTo?}",
            TS_POLICY_MAX_POLICIES);
        return TS_E_INVALID;
    }
    json_t *rl = json_object_get(in, "rate_limit");
    if (!rl)
        rl = json_object_get(in, "rateLimit");
    if (json_object_get(in, "rate_limit") && json_object_get(in, "rateLimit")) {
        say(err, errcap, "give rate_limit or rateLimit, not both");
        return TS_E_INVALID;
    }
    if (rl && !json_is_null(rl) && (!json_is_integer(rl) || json_integer_value(rl) < 0)) {
        say(err, errcap,
            "rate_limit must be a whole number of requests per second (0: "
            "unlimited) or null (inherit)");
        return TS_E_INVALID;
    }
    json_t *data = json_object_get(in, "data");
    json_t *tags = json_object_get(in, "tags");
    if ((data && !json_is_null(data) && !json_is_object(data)) ||
        (tags && !json_is_null(tags) && !json_is_array(tags))) {
        say(err, errcap, "data must be an object and tags an array");
        return TS_E_INVALID;
    }
    json_t *out = json_array();
    size_t i;
    json_t *p;
    json_array_foreach(policies, i, p)
    {
        const char *role = json_string_value(json_object_get(p, "role"));
        if (!role)
            role = json_string_value(json_object_get(p, "roleId"));
        bool ok = json_is_object(p) && name_ok(role);
        const char *key;
        json_t *v;
        json_object_foreach(p, key, v) ok =
            ok && (strcmp(key, "role") == 0 || strcmp(key, "roleId") == 0 ||
                   strcmp(key, "restrictedTo") == 0);
        ok = ok && !(json_object_get(p, "role") && json_object_get(p, "roleId"));
        if (!ok) {
            say(err, errcap, "policies[%zu] must be {role, restrictedTo?}", i);
            json_decref(out);
            return TS_E_INVALID;
        }
        json_t *rc, *flat;
        if (!restrictions(json_object_get(p, "restrictedTo"), i, &rc, &flat, err, errcap)) {
            json_decref(out);
            return TS_E_INVALID;
        }
        json_decref(flat);
        json_array_append_new(out, json_pack("{s:s, s:o}", "role", role, "restrictedTo", rc));
    }
    json_t *doc = json_pack("{s:s, s:o, s:O}", "name", name, "policies", out, "rate_limit",
                            rl ? rl : json_null());
    if (data && json_is_object(data))
        json_object_set(doc, "data", data);
    if (tags && json_is_array(tags))
        json_object_set(doc, "tags", tags);
    *canon = doc;
    return TS_OK;
}

static void profile_clear(struct profile *p)
{
    for (size_t i = 0; i < p->npolicies; i++)
        json_decref(p->policies[i].restricted_to);
    free(p->policies);
    json_decref(p->doc);
}

/* ---- the set ---- */

struct ts_policy_set {
    size_t nroles;
    struct ts_role **roles; /* by name */
    size_t nprofiles;
    struct profile *profiles; /* by name */
};

static int cmp_role(const void *a, const void *b)
{
    return strcmp((*(struct ts_role *const *)a)->name, (*(struct ts_role *const *)b)->name);
}

static int cmp_profile(const void *a, const void *b)
{
    return strcmp(((const struct profile *)a)->name, ((const struct profile *)b)->name);
}

struct ts_policy_set *ts_policy_set_new(json_t *const *roles, size_t nroles,
                                        json_t *const *profiles, size_t nprofiles,
                                        const struct ts_pred_limits *lim, size_t *skipped)
{
    struct ts_policy_set *ps = ts_xcalloc(1, sizeof(*ps));
    size_t bad = 0;
    ps->roles = ts_xcalloc(nroles + 1, sizeof(*ps->roles));
    for (size_t i = 0; i < nroles; i++) {
        char err[256];
        struct ts_role *r = role_build(roles[i], lim, err, sizeof(err));
        bool dup = false;
        for (size_t k = 0; r && k < ps->nroles; k++)
            dup = dup || strcmp(ps->roles[k]->name, r->name) == 0;
        if (!r || dup) {
            role_free(r);
            bad++;
            continue;
        }
        ps->roles[ps->nroles++] = r;
    }
    qsort(ps->roles, ps->nroles, sizeof(*ps->roles), cmp_role);
    ps->profiles = ts_xcalloc(nprofiles + 1, sizeof(*ps->profiles));
    for (size_t i = 0; i < nprofiles; i++) {
        json_t *doc = NULL;
        char err[256];
        if (ts_profile_validate(NULL, profiles[i], &doc, err, sizeof(err)) != TS_OK) {
            bad++;
            continue;
        }
        struct profile *p = &ps->profiles[ps->nprofiles];
        p->doc = doc;
        p->name = json_string_value(json_object_get(doc, "name"));
        bool dup = false;
        for (size_t k = 0; k < ps->nprofiles; k++)
            dup = dup || strcmp(ps->profiles[k].name, p->name) == 0;
        if (dup) {
            json_decref(doc);
            memset(p, 0, sizeof(*p));
            bad++;
            continue;
        }
        json_t *pol = json_object_get(doc, "policies");
        p->policies = ts_xcalloc(json_array_size(pol) + 1, sizeof(*p->policies));
        size_t k;
        json_t *e;
        json_array_foreach(pol, k, e)
        {
            json_t *canon = NULL, *flat = NULL;
            if (restrictions(json_object_get(e, "restrictedTo"), k, &canon, &flat, NULL, 0))
                json_decref(canon);
            else
                flat = json_array(); /* cannot happen for a validated document: restrict all */
            p->policies[k].role = json_string_value(json_object_get(e, "role"));
            p->policies[k].restricted_to = flat;
            p->npolicies = k + 1;
        }
        ps->nprofiles++;
    }
    qsort(ps->profiles, ps->nprofiles, sizeof(*ps->profiles), cmp_profile);
    if (skipped)
        *skipped = bad;
    return ps;
}

void ts_policy_set_free(struct ts_policy_set *ps)
{
    if (!ps)
        return;
    for (size_t i = 0; i < ps->nroles; i++)
        role_free(ps->roles[i]);
    free(ps->roles);
    for (size_t i = 0; i < ps->nprofiles; i++)
        profile_clear(&ps->profiles[i]);
    free(ps->profiles);
    free(ps);
}

const struct ts_role *ts_policy_role(const struct ts_policy_set *ps, const char *name)
{
    size_t lo = 0, hi = ps && name ? ps->nroles : 0;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(ps->roles[mid]->name, name);
        if (c == 0)
            return ps->roles[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static const struct profile *find_profile(const struct ts_policy_set *ps, const char *name)
{
    size_t lo = 0, hi = ps && name ? ps->nprofiles : 0;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(ps->profiles[mid].name, name);
        if (c == 0)
            return &ps->profiles[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

const json_t *ts_policy_profile(const struct ts_policy_set *ps, const char *name)
{
    const struct profile *p = find_profile(ps, name);
    return p ? p->doc : NULL;
}

const char *ts_role_name(const struct ts_role *r)
{
    return r->name;
}

const struct ts_role *const *ts_policy_roles(const struct ts_policy_set *ps, size_t *n)
{
    *n = ps->nroles;
    return (const struct ts_role *const *)ps->roles;
}

void ts_role_collections(const struct ts_role *r, void (*fn)(void *cls, const char *name),
                         void *cls)
{
    for (size_t i = 0; i < r->npriv; i++)
        if (r->privs[i].kind == KIND_COLL && !r->privs[i].wildcard)
            fn(cls, r->privs[i].name);
    for (size_t i = 0; i < r->nmember; i++)
        fn(cls, r->members[i].collection);
}

void ts_role_api_actions(const struct ts_role *r,
                         void (*fn)(void *cls, const char *controller, const char *action),
                         void *cls)
{
    for (size_t i = 0; i < r->npriv; i++) {
        const struct privilege *pv = &r->privs[i];
        if (pv->kind != KIND_API || pv->wildcard)
            continue;
        for (size_t k = 0; k < pv->nrules; k++)
            if (strcmp(pv->rules[k].action, "*") != 0)
                fn(cls, pv->name, pv->rules[k].action);
    }
}

/* ---- grants ---- */

void ts_grants_add_role(struct ts_grants *g, const struct ts_policy_set *ps, const char *name,
                        const char *via, const json_t *restricted_to)
{
    const struct ts_role *r = ts_policy_role(ps, name);
    if (!r || g->n >= TS_POLICY_MAX_GRANTS)
        return;
    for (size_t i = 0; i < g->n; i++) /* the same role without restriction already applies */
        if (g->items[i].role == r && !g->items[i].restricted_to)
            return;
    g->items[g->n++] = (struct ts_grant){.role = r, .via = via, .restricted_to = restricted_to};
}

bool ts_grants_add_profile(struct ts_grants *g, const struct ts_policy_set *ps, const char *name)
{
    const struct profile *p = find_profile(ps, name);
    if (!p)
        return false;
    for (size_t i = 0; i < p->npolicies; i++)
        ts_grants_add_role(g, ps, p->policies[i].role, p->name, p->policies[i].restricted_to);
    return true;
}

void ts_grants_add_membership(struct ts_grants *g, const struct ts_policy_set *ps,
                              const char *collection, const struct ts_pred_input *in,
                              struct ts_arena *arena)
{
    if (!collection)
        return;
    for (size_t i = 0; i < ps->nroles; i++) {
        const struct ts_role *r = ps->roles[i];
        for (size_t k = 0; k < r->nmember; k++) {
            const struct membership *m = &r->members[k];
            if (strcmp(m->collection, collection) != 0)
                continue;
            bool yes = !m->pred;
            if (m->pred && ts_pred_eval(m->pred, in, arena, &yes, NULL) != TS_OK)
                yes = false;
            if (yes) {
                ts_grants_add_role(g, ps, r->name, "membership", NULL);
                break;
            }
        }
    }
}

/* ---- decisions ---- */

/* The rule of role r for (kind, name, action), with the shadowing rule; NULL when none. */
static const struct rule *role_rule(const struct ts_role *r, enum kind kind, const char *name,
                                    const char *action, unsigned flags,
                                    const struct privilege **pv_out)
{
    const struct privilege *exact = NULL, *wild = NULL;
    for (size_t i = 0; i < r->npriv; i++) {
        const struct privilege *pv = &r->privs[i];
        if (pv->kind != kind)
            continue;
        if (pv->wildcard)
            wild = pv;
        else if (strcmp(pv->name, name) == 0)
            exact = pv;
    }
    const struct privilege *pv = exact ? exact : (flags & TS_AUTHZ_EXACT_RESOURCE) ? NULL : wild;
    if (!pv)
        return NULL;
    const struct rule *star = NULL;
    for (size_t i = 0; i < pv->nrules; i++) {
        if (strcmp(pv->rules[i].action, action) == 0) {
            *pv_out = pv;
            return &pv->rules[i];
        }
        if (strcmp(pv->rules[i].action, "*") == 0)
            star = &pv->rules[i];
    }
    *pv_out = pv;
    return star;
}

static bool restricted_out(const struct ts_grant *gr, enum kind kind, const char *name)
{
    if (kind != KIND_COLL || !gr->restricted_to)
        return false;
    size_t i;
    json_t *c;
    json_array_foreach(gr->restricted_to, i,
                       c) if (strcmp(json_string_value(c), name) == 0) return false;
    return true;
}

static bool action_ok(const char *action)
{
    return token_ok(action, 64);
}

enum ts_authz_value ts_grants_static(const struct ts_grants *g, const char *resource,
                                     const char *action)
{
    return ts_grants_static_ex(g, resource, action, 0);
}

enum ts_authz_value ts_grants_static_ex(const struct ts_grants *g, const char *resource,
                                        const char *action, unsigned flags)
{
    enum kind kind;
    const char *name;
    if (!split_resource(resource, false, &kind, &name) || !action_ok(action))
        return TS_AUTHZ_DENIED;
    enum ts_authz_value best = TS_AUTHZ_DENIED;
    for (size_t i = 0; i < g->n; i++) {
        const struct privilege *pv;
        if (restricted_out(&g->items[i], kind, name))
            continue;
        const struct rule *ru = role_rule(g->items[i].role, kind, name, action, flags, &pv);
        if (ru && ru->value == RULE_TRUE)
            return TS_AUTHZ_ALLOWED;
        if (ru && ru->value == RULE_PRED)
            best = TS_AUTHZ_CONDITIONAL;
    }
    return best;
}

unsigned ts_grants_uses(const struct ts_grants *g, const char *resource, const char *action)
{
    return ts_grants_uses_ex(g, resource, action, 0);
}

unsigned ts_grants_uses_ex(const struct ts_grants *g, const char *resource, const char *action,
                           unsigned flags)
{
    enum kind kind;
    const char *name;
    unsigned uses = 0;
    if (!split_resource(resource, false, &kind, &name) || !action_ok(action))
        return 0;
    for (size_t i = 0; i < g->n; i++) {
        const struct privilege *pv;
        if (restricted_out(&g->items[i], kind, name))
            continue;
        const struct rule *ru = role_rule(g->items[i].role, kind, name, action, flags, &pv);
        if (ru && ru->value == RULE_TRUE)
            return 0; /* decided without any predicate */
        if (ru && ru->value == RULE_PRED)
            uses |= ts_pred_uses(ru->pred);
    }
    return uses;
}

static void allow(struct ts_authz_decision *d, const struct ts_grant *gr,
                  const struct privilege *pv, const struct rule *ru)
{
    d->allowed = true;
    d->role = gr->role->name;
    d->privilege = pv->resource;
    d->action = ru->action;
    d->rule = ru->source;
    d->via = gr->via;
    d->reason[0] = '\0';
}

bool ts_grants_decide(const struct ts_grants *g, const char *resource, const char *action,
                      const struct ts_pred_input *in, struct ts_arena *arena,
                      struct ts_authz_decision *d)
{
    return ts_grants_decide_ex(g, resource, action, 0, in, arena, d);
}

bool ts_grants_decide_ex(const struct ts_grants *g, const char *resource, const char *action,
                         unsigned flags, const struct ts_pred_input *in, struct ts_arena *arena,
                         struct ts_authz_decision *d)
{
    memset(d, 0, sizeof(*d));
    enum kind kind;
    const char *name;
    if (!split_resource(resource, false, &kind, &name) || !action_ok(action)) {
        snprintf(d->reason, sizeof(d->reason), "not a resource and action");
        return false;
    }
    for (size_t i = 0; i < g->n; i++) {
        const struct privilege *pv;
        if (restricted_out(&g->items[i], kind, name))
            continue;
        const struct rule *ru = role_rule(g->items[i].role, kind, name, action, flags, &pv);
        if (ru && ru->value == RULE_TRUE) {
            allow(d, &g->items[i], pv, ru);
            return true;
        }
    }
    for (size_t i = 0; i < g->n; i++) {
        const struct privilege *pv;
        if (restricted_out(&g->items[i], kind, name))
            continue;
        const struct rule *ru = role_rule(g->items[i].role, kind, name, action, flags, &pv);
        if (!ru || ru->value != RULE_PRED)
            continue;
        bool yes = false;
        struct ts_pred_trace tr;
        if (ts_pred_eval(ru->pred, in, arena, &yes, &tr) != TS_OK) {
            snprintf(d->reason, sizeof(d->reason), "role %.40s: line %u, column %u: %.80s",
                     g->items[i].role->name, tr.line, tr.column, tr.reason);
            continue;
        }
        if (yes) {
            allow(d, &g->items[i], pv, ru);
            return true;
        }
    }
    if (!d->reason[0]) /* written only for a denial: formatting costs more than deciding */
        snprintf(d->reason, sizeof(d->reason), "no role allows %.16s on %.120s", action, resource);
    return false;
}

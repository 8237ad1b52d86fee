/*
 * test_authz_policy.c - unit tests of roles, profiles and decisions (src/authz/authz_policy.h,
 * issue 6): role and profile validation in the native and Kuzzle forms with their refusals,
 * policy sets built from stored documents (invalid and duplicate documents skipped), the
 * default roles and profiles, and decisions: deny by default, Kuzzle's shadowing inside one
 * role, the allow-only union with its explanation, predicates over identity, resource, old and
 * new, restrictedTo, membership, fetches with their limit and failures, and requests that name
 * a wildcard.
 *
 * JSON is written with ' for " and ` for \" (a quote inside a JSON string, as the predicates'
 * string literals need); see jq().
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "authz/authz.h"
#include "authz/authz_policy.h"
#include "core/core.h"

/* ---- helpers ---- */

/* Parses text after turning ' into " and ` into \" ; fails the test when it is not JSON. */
static json_t *jq(const char *text)
{
    size_t n = strlen(text);
    char *s = malloc(2 * n + 1);
    assert_non_null(s);
    char *o = s;
    for (const char *p = text; *p; p++) {
        if (*p == '\'') {
            *o++ = '"';
        } else if (*p == '`') {
            *o++ = '\\';
            *o++ = '"';
        } else {
            *o++ = *p;
        }
    }
    *o = '\0';
    json_error_t e;
    json_t *j = json_loads(s, JSON_DECODE_ANY, &e);
    if (!j)
        fail_msg("bad test JSON %s: %s", s, e.text);
    free(s);
    return j;
}

/* Fails unless got equals want_text (in jq's notation); prints both when not. */
static void assert_json(const json_t *got, const char *want_text)
{
    json_t *want = jq(want_text);
    if (!json_equal(got, want)) {
        char *g = json_dumps(got, JSON_SORT_KEYS | JSON_ENCODE_ANY);
        char *w = json_dumps(want, JSON_SORT_KEYS | JSON_ENCODE_ANY);
        print_error("got  %s\nwant %s\n", g ? g : "(null)", w ? w : "(null)");
        free(g);
        free(w);
        json_decref(want);
        fail();
    }
    json_decref(want);
}

/* ts_role_validate that must succeed; the canonical form is compared with want. */
static void role_ok(const char *name, const char *text, const char *want)
{
    json_t *in = jq(text);
    json_t *canon = NULL;
    char err[256] = "";
    enum ts_rc rc = ts_role_validate(name, in, NULL, &canon, err, sizeof(err));
    if (rc != TS_OK)
        fail_msg("%s: %s: %s", text, ts_rc_name(rc), err);
    assert_non_null(canon);
    assert_json(canon, want);
    json_decref(canon);
    json_decref(in);
}

/* ts_role_validate that must refuse with TS_E_INVALID, a one-line err containing what, and
 * canon untouched. */
static void role_bad_lim(const char *name, const char *text, const struct ts_pred_limits *lim,
                         const char *what)
{
    json_t *in = jq(text);
    json_t *canon = (json_t *)(uintptr_t)1;
    char err[256] = "";
    enum ts_rc rc = ts_role_validate(name, in, lim, &canon, err, sizeof(err));
    if (rc != TS_E_INVALID)
        fail_msg("%s: got %s, expected invalid", text, ts_rc_name(rc));
    assert_ptr_equal(canon, (json_t *)(uintptr_t)1);
    if (!err[0] || !strstr(err, what))
        fail_msg("%s: err \"%s\" lacks \"%s\"", text, err, what);
    assert_null(strchr(err, '\n'));
    json_decref(in);
}

static void role_bad(const char *name, const char *text, const char *what)
{
    role_bad_lim(name, text, NULL, what);
}

static void profile_ok(const char *name, const char *text, const char *want)
{
    json_t *in = jq(text);
    json_t *canon = NULL;
    char err[256] = "";
    enum ts_rc rc = ts_profile_validate(name, in, &canon, err, sizeof(err));
    if (rc != TS_OK)
        fail_msg("%s: %s: %s", text, ts_rc_name(rc), err);
    assert_non_null(canon);
    assert_json(canon, want);
    json_decref(canon);
    json_decref(in);
}

static void profile_bad(const char *name, const char *text, const char *what)
{
    json_t *in = jq(text);
    json_t *canon = (json_t *)(uintptr_t)1;
    char err[256] = "";
    enum ts_rc rc = ts_profile_validate(name, in, &canon, err, sizeof(err));
    if (rc != TS_E_INVALID)
        fail_msg("%s: got %s, expected invalid", text, ts_rc_name(rc));
    assert_ptr_equal(canon, (json_t *)(uintptr_t)1);
    if (!err[0] || !strstr(err, what))
        fail_msg("%s: err \"%s\" lacks \"%s\"", text, err, what);
    json_decref(in);
}

/* A set from NULL-terminated lists of document texts (in jq's notation); the documents are
 * released before it returns, so the set must keep nothing of them but references. */
static struct ts_policy_set *set_of(const char *const *roles, const char *const *profiles,
                                    const struct ts_pred_limits *lim, size_t *skipped)
{
    json_t *r[80] = {0}, *p[80] = {0};
    size_t nr = 0, np = 0;
    for (; roles && roles[nr]; nr++) {
        assert_true(nr < TS_ARRAY_LEN(r));
        r[nr] = jq(roles[nr]);
    }
    for (; profiles && profiles[np]; np++) {
        assert_true(np < TS_ARRAY_LEN(p));
        p[np] = jq(profiles[np]);
    }
    struct ts_policy_set *ps = ts_policy_set_new(r, nr, p, np, lim, skipped);
    assert_non_null(ps);
    for (size_t i = 0; i < nr; i++)
        json_decref(r[i]);
    for (size_t i = 0; i < np; i++)
        json_decref(p[i]);
    return ps;
}

/* The set of the default roles and profiles. */
static struct ts_policy_set *default_set(size_t *skipped)
{
    json_t *r[8], *p[8];
    size_t nr = 0, np = 0;
    for (; ts_policy_default_roles[nr]; nr++) {
        assert_true(nr < TS_ARRAY_LEN(r));
        r[nr] = json_loads(ts_policy_default_roles[nr], 0, NULL);
        assert_non_null(r[nr]);
    }
    for (; ts_policy_default_profiles[np]; np++) {
        assert_true(np < TS_ARRAY_LEN(p));
        p[np] = json_loads(ts_policy_default_profiles[np], 0, NULL);
        assert_non_null(p[np]);
    }
    struct ts_policy_set *ps = ts_policy_set_new(r, nr, p, np, NULL, skipped);
    for (size_t i = 0; i < nr; i++)
        json_decref(r[i]);
    for (size_t i = 0; i < np; i++)
        json_decref(p[i]);
    return ps;
}

/* Decides with in (NULL: no inputs) in a fresh arena. The decision's strings are borrowed
 * from the set, so they stay readable after the arena is gone. */
static bool decide(const struct ts_grants *g, const char *resource, const char *action,
                   const struct ts_pred_input *in, struct ts_authz_decision *d)
{
    struct ts_pred_input none = {0};
    struct ts_arena a;
    ts_arena_init(&a, 512);
    bool ok = ts_grants_decide(g, resource, action, in ? in : &none, &a, d);
    ts_arena_free(&a);
    assert_int_equal(ok, d->allowed);
    if (ok)
        assert_string_equal(d->reason, "");
    else
        assert_true(d->reason[0] != '\0');
    return ok;
}

#define ALLOWED(g, res, act)                                                                       \
    do {                                                                                           \
        struct ts_authz_decision d_;                                                               \
        if (!decide((g), (res), (act), NULL, &d_))                                                 \
            fail_msg("%s %s: denied (%s)", (res), (act), d_.reason);                               \
    } while (0)
#define DENIED(g, res, act)                                                                        \
    do {                                                                                           \
        struct ts_authz_decision d_;                                                               \
        if (decide((g), (res), (act), NULL, &d_))                                                  \
            fail_msg("%s %s: allowed by %s", (res), (act), d_.role);                               \
        assert_null(d_.role);                                                                      \
        assert_int_equal(ts_grants_static((g), (res), (act)), TS_AUTHZ_DENIED);                    \
    } while (0)

/* Checks a decision's explanation. */
static void explain(const struct ts_authz_decision *d, const char *role, const char *privilege,
                    const char *action, const char *rule, const char *via)
{
    assert_true(d->allowed);
    assert_string_equal(d->role, role);
    assert_string_equal(d->privilege, privilege);
    assert_string_equal(d->action, action);
    assert_string_equal(d->rule, rule);
    assert_string_equal(d->via, via);
    assert_string_equal(d->reason, "");
}

/* ---- role validation ---- */

static void test_role_native(void **state)
{
    (void)state;
    /* name from the body, membership defaults to [], data and tags kept */
    role_ok(NULL,
            "{'name':'editor','privileges':[{'resource':'collections/docs','actions':{"
            "'read':true,'write':'resource.data.owner == identity.id','delete':false}}],"
            "'data':{'note':'x'},'tags':['a']}",
            "{'name':'editor','privileges':[{'resource':'collections/docs','actions':{"
            "'read':true,'write':'resource.data.owner == identity.id','delete':false}}],"
            "'membership':[],'data':{'note':'x'},'tags':['a']}");
    /* name from the parameter, the body naming none; membership kept; null data dropped */
    role_ok("r1",
            "{'privileges':[{'resource':'api/*','actions':{'*':true}}],"
            "'membership':[{'collection':'staff','predicate':'identity.data.level >= 3'},"
            "{'collection':'guests'}],'data':null}",
            "{'name':'r1','privileges':[{'resource':'api/*','actions':{'*':true}}],"
            "'membership':[{'collection':'staff','predicate':'identity.data.level >= 3'},"
            "{'collection':'guests'}]}");
    /* both names, equal; membership null is []; empty privileges are a role that grants none */
    role_ok("r2", "{'name':'r2','privileges':[],'membership':null}",
            "{'name':'r2','privileges':[],'membership':[]}");
    /* every collection action, plugin controllers, action names with . / : - */
    role_ok("r3",
            "{'privileges':[{'resource':'collections/*','actions':{'read':true,'create':true,"
            "'write':true,'delete':true,'list':true,'*':false}},"
            "{'resource':'api/plugin/name','actions':{'do.it':true,'a/b:c-d':true}}]}",
            "{'name':'r3','privileges':[{'resource':'collections/*','actions':{'read':true,"
            "'create':true,'write':true,'delete':true,'list':true,'*':false}},"
            "{'resource':'api/plugin/name','actions':{'do.it':true,'a/b:c-d':true}}],"
            "'membership':[]}");
    /* 64 characters is a name */
    role_ok("a234567890123456789012345678901234567890123456789012345678901234", "{'privileges':[]}",
            "{'name':'a234567890123456789012345678901234567890123456789012345678901234',"
            "'privileges':[],'membership':[]}");

    /* the canonical form is itself valid and a fixed point */
    json_t *in = jq("{'name':'e','privileges':[{'resource':'collections/d','actions':{'read':"
                    "true}}],'controllers':{'auth':{'actions':{'login':true}}}}");
    json_t *c1 = NULL, *c2 = NULL;
    char err[256];
    assert_int_equal(ts_role_validate("e", in, NULL, &c1, err, sizeof(err)), TS_OK);
    assert_int_equal(ts_role_validate(NULL, c1, NULL, &c2, err, sizeof(err)), TS_OK);
    assert_true(json_equal(c1, c2));
    json_decref(c1);
    json_decref(c2);
    json_decref(in);
}

static void test_role_kuzzle(void **state)
{
    (void)state;
    const char *kuzzle = "{'controllers':{'document':{'actions':{'create':true,'*':false}},"
                         "'*':{'actions':{'*':true}}}}";
    role_ok("k", kuzzle,
            "{'name':'k','privileges':["
            "{'resource':'api/document','actions':{'create':true,'*':false}},"
            "{'resource':'api/*','actions':{'*':true}}],'membership':[]}");
    /* both forms: privileges first, then the controllers */
    role_ok("both",
            "{'privileges':[{'resource':'collections/a','actions':{'read':true}}],"
            "'controllers':{'auth':{'actions':{'login':true,'logout':false}}}}",
            "{'name':'both','privileges':["
            "{'resource':'collections/a','actions':{'read':true}},"
            "{'resource':'api/auth','actions':{'login':true,'logout':false}}],'membership':[]}");
    /* empty controllers: a role with no privileges */
    role_ok("none", "{'controllers':{}}", "{'name':'none','privileges':[],'membership':[]}");

    /* and the converted role decides as Kuzzle would: document's own privilege hides the api
     * wildcard */
    json_t *in = jq(kuzzle), *canon = NULL;
    char err[256];
    assert_int_equal(ts_role_validate("k", in, NULL, &canon, err, sizeof(err)), TS_OK);
    struct ts_policy_set *ps = ts_policy_set_new(&canon, 1, NULL, 0, NULL, NULL);
    json_decref(canon);
    json_decref(in);
    struct ts_grants g = {0};
    ts_grants_add_role(&g, ps, "k", "key", NULL);
    assert_int_equal(g.n, 1);
    ALLOWED(&g, "api/document", "create");
    DENIED(&g, "api/document", "update");
    DENIED(&g, "api/document", "delete");
    ALLOWED(&g, "api/auth", "login");
    DENIED(&g, "collections/a", "read");
    ts_policy_set_free(ps);
}

static void test_role_refusals(void **state)
{
    (void)state;
    const char *ok_privs = "'privileges':[{'resource':'api/auth','actions':{'login':true}}]";
    char buf[512];

    /* not an object */
    role_bad("r", "[]", "JSON object");
    role_bad("r", "'role'", "JSON object");
    role_bad("r", "null", "JSON object");
    /* unknown member */
    snprintf(buf, sizeof(buf), "{%s,'frob':1}", ok_privs);
    role_bad("r", buf, "unknown member 'frob'");
    role_bad("r", "{'Privileges':[]}", "unknown member 'Privileges'");
    /* the name parameter against the body's */
    snprintf(buf, sizeof(buf), "{'name':'b',%s}", ok_privs);
    role_bad("a", buf, "name does not match");
    snprintf(buf, sizeof(buf), "{'name':5,%s}", ok_privs);
    role_bad("a", buf, "name does not match");
    role_bad(NULL, buf, "name does not match");
    snprintf(buf, sizeof(buf), "{'name':null,%s}", ok_privs);
    role_bad("a", buf, "name does not match");
    /* bad names */
    snprintf(buf, sizeof(buf), "{%s}", ok_privs);
    role_bad(NULL, buf, "name must match");
    role_bad("", buf, "name must match");
    role_bad("9lives", buf, "name must match");
    role_bad("-x", buf, "name must match");
    role_bad("bad name", buf, "name must match");
    role_bad("a/b", buf, "name must match");
    role_bad("\xff", buf, "name must match"); /* not UTF-8: the canonical document fails */
    snprintf(buf, sizeof(buf), "{%s,'membership':[{'collection':'a'}],'data':{}}", ok_privs);
    role_bad("\xff", buf, "name must match");
    snprintf(buf, sizeof(buf), "{%s}", ok_privs);
    role_bad("a2345678901234567890123456789012345678901234567890123456789012345", buf,
             "name must match");
    snprintf(buf, sizeof(buf), "{'name':'bad name',%s}", ok_privs);
    role_bad(NULL, buf, "name must match");
    /* privileges */
    role_bad("r", "{}", "needs privileges");
    role_bad("r", "{'name':'r','data':{}}", "needs privileges");
    role_bad("r", "{'privileges':{}}", "privileges must be an array");
    role_bad("r", "{'privileges':null}", "privileges must be an array");
    role_bad("r", "{'privileges':['api/auth']}", "privileges[0] must be {resource, actions}");
    role_bad("r", "{'privileges':[{'resource':'api/auth'}]}", "privileges[0] must be");
    role_bad("r", "{'privileges':[{'resource':'api/auth','actions':{'a':true},'x':1}]}",
             "privileges[0] must be");
    role_bad("r", "{'privileges':[{'resource':5,'actions':{'a':true}}]}", "privileges[0] must be");
    /* bad resources */
    static const char *const bad_resources[] = {
        "foo",           "collections/", "collections/bad name", "api/",          "api/bad name",
        "Collections/a", "collections",  "collections/9a",       "api/*x",        "collections/**",
        "/api/auth",     "api//x",       "collections/a/b",      "collections/é",
    };
    for (size_t i = 0; i < TS_ARRAY_LEN(bad_resources); i++) {
        snprintf(buf, sizeof(buf),
                 "{'privileges':[{'resource':'api/ok','actions':{'a':true}},"
                 "{'resource':'%s','actions':{'read':true}}]}",
                 bad_resources[i]);
        role_bad("r", buf, "privileges[1] must be {resource, actions} with resource");
    }
    /* the same resource twice, in one form or across the two */
    role_bad("r",
             "{'privileges':[{'resource':'collections/a','actions':{'read':true}},"
             "{'resource':'collections/a','actions':{'write':true}}]}",
             "privileges[1]: collections/a is named twice");
    role_bad("r",
             "{'privileges':[{'resource':'api/document','actions':{'get':true}}],"
             "'controllers':{'document':{'actions':{'create':true}}}}",
             "api/document is named twice");
    /* actions */
    role_bad("r", "{'privileges':[{'resource':'collections/a','actions':{'update':true}}]}",
             "privileges[0].actions: 'update' is not read, create, write, delete, list or *");
    role_bad("r", "{'privileges':[{'resource':'collections/*','actions':{'READ':true}}]}",
             "'READ' is not read, create");
    role_bad("r", "{'privileges':[{'resource':'api/a','actions':{'bad name':true}}]}",
             "privileges[0].actions: 'bad name' is not an action name");
    role_bad("r", "{'privileges':[{'resource':'api/a','actions':{'-x':true}}]}",
             "is not an action name");
    role_bad("r", "{'privileges':[{'resource':'api/a','actions':{}}]}",
             "privileges[0].actions must be an object of 1 to 64 actions");
    role_bad("r", "{'privileges':[{'resource':'api/a','actions':[]}]}",
             "privileges[0].actions must be an object");
    role_bad("r", "{'privileges':[{'resource':'api/a','actions':{'x':1}}]}",
             "privileges[0].actions.x must be true, false or a predicate");
    role_bad("r", "{'privileges':[{'resource':'api/a','actions':{'x':null}}]}",
             "must be true, false or a predicate");
    role_bad("r", "{'privileges':[{'resource':'api/a','actions':{'x':{}}}]}",
             "must be true, false or a predicate");
    role_bad("r", "{'controllers':{'a':{'actions':{'x':[true]}}}}",
             "must be true, false or a predicate");
    /* predicates: a syntax error and a type error, with the member and a position */
    role_bad("r",
             "{'privileges':[{'resource':'collections/a','actions':{'read':true,"
             "'write':'resource.data.owner =='}}]}",
             "privileges[0].actions.write: line 1, column");
    role_bad("r", "{'privileges':[{'resource':'collections/a','actions':{'read':'(true'}}]}",
             "line 1, column");
    role_bad("r", "{'privileges':[{'resource':'collections/a','actions':{'read':'`a` < 3'}}]}",
             "privileges[0].actions.read: line 1, column 5");
    role_bad("r", "{'privileges':[{'resource':'collections/a','actions':{'read':'size(3) > 1'}}]}",
             "privileges[0].actions.read: line 1, column");
    role_bad("r", "{'privileges':[{'resource':'api/a','actions':{'x':'frob(1)'}}]}",
             "unknown function 'frob'");
    role_bad("r", "{'privileges':[{'resource':'api/a','actions':{'x':'1 + 2'}}]}",
             "privileges[0].actions.x: line 1, column");
    role_bad("r", "{'privileges':[{'resource':'api/a','actions':{'x':'true &&\\n  (1 < `a`)'}}]}",
             "line 2, column");
    /* a predicate over the caller's limits */
    struct ts_pred_limits small = {.max_source = 16};
    role_bad_lim("r",
                 "{'privileges':[{'resource':'api/a','actions':{'x':"
                 "'identity.id == `a-rather-long-string`'}}]}",
                 &small, "privileges[0].actions.x: line");
    /* membership */
    snprintf(buf, sizeof(buf), "{%s,'membership':[{'predicate':'true'}]}", ok_privs);
    role_bad("r", buf, "membership[0] must be {collection, predicate?}");
    snprintf(buf, sizeof(buf), "{%s,'membership':[{'collection':'staff','x':1}]}", ok_privs);
    role_bad("r", buf, "membership[0] must be {collection, predicate?}");
    snprintf(buf, sizeof(buf),
             "{%s,'membership':[{'collection':'a'},{'collection':'staff','predicate':'true',"
             "'x':1}]}",
             ok_privs);
    role_bad("r", buf, "membership[1] must be {collection, predicate?}");
    snprintf(buf, sizeof(buf), "{%s,'membership':[{'collection':'bad name'}]}", ok_privs);
    role_bad("r", buf, "membership[0] must be");
    snprintf(buf, sizeof(buf), "{%s,'membership':[{'collection':'a','predicate':5}]}", ok_privs);
    role_bad("r", buf, "membership[0] must be");
    snprintf(buf, sizeof(buf), "{%s,'membership':['staff']}", ok_privs);
    role_bad("r", buf, "membership[0] must be");
    snprintf(buf, sizeof(buf), "{%s,'membership':{'collection':'a'}}", ok_privs);
    role_bad("r", buf, "membership must be an array of at most 16");
    snprintf(buf, sizeof(buf), "{%s,'membership':[{'collection':'a','predicate':'1 <'}]}",
             ok_privs);
    role_bad("r", buf, "membership[0].predicate: line 1, column");
    /* data and tags */
    snprintf(buf, sizeof(buf), "{%s,'data':[]}", ok_privs);
    role_bad("r", buf, "data must be an object");
    snprintf(buf, sizeof(buf), "{%s,'tags':'x'}", ok_privs);
    role_bad("r", buf, "tags an array");
    /* controllers */
    role_bad("r", "{'controllers':[]}", "controllers must be");
    role_bad("r", "{'controllers':{'document':{'actions':{'get':true},'x':1}}}",
             "controllers.document must be {actions");
    role_bad("r", "{'controllers':{'document':{'actions':true}}}", "controllers.document must be");
    role_bad("r", "{'controllers':{'document':true}}", "controllers.document must be");
    role_bad("r", "{'controllers':{'bad name':{'actions':{'get':true}}}}",
             "controllers: 'bad name' is not a controller name");
    role_bad("r", "{'controllers':{'document':{'actions':{}}}}",
             "actions must be an object of 1 to 64");
}

/* Builds text for a role with n privileges api/c<i>, or a privilege with n actions, or n
 * memberships; the caller frees. */
static char *many(const char *what, size_t n)
{
    size_t cap = 128 + n * 96, len = 0;
    char *s = malloc(cap);
    assert_non_null(s);
    if (strcmp(what, "privileges") == 0) {
        len += (size_t)snprintf(s + len, cap - len, "{'privileges':[");
        for (size_t i = 0; i < n; i++)
            len +=
                (size_t)snprintf(s + len, cap - len,
                                 "%s{'resource':'api/c%zu','actions':{'a':true}}", i ? "," : "", i);
        snprintf(s + len, cap - len, "]}");
    } else if (strcmp(what, "actions") == 0) {
        len +=
            (size_t)snprintf(s + len, cap - len, "{'privileges':[{'resource':'api/c','actions':{");
        for (size_t i = 0; i < n; i++)
            len += (size_t)snprintf(s + len, cap - len, "%s'a%zu':true", i ? "," : "", i);
        snprintf(s + len, cap - len, "}}]}");
    } else {
        len += (size_t)snprintf(s + len, cap - len, "{'privileges':[],'membership':[");
        for (size_t i = 0; i < n; i++)
            len += (size_t)snprintf(s + len, cap - len, "%s{'collection':'c%zu'}", i ? "," : "", i);
        snprintf(s + len, cap - len, "]}");
    }
    return s;
}

static void role_count_ok(const char *what, size_t n)
{
    char *s = many(what, n);
    json_t *in = jq(s);
    free(s);
    json_t *canon = NULL;
    char err[256] = "";
    if (ts_role_validate("r", in, NULL, &canon, err, sizeof(err)) != TS_OK)
        fail_msg("%zu %s: %s", n, what, err);
    json_decref(canon);
    json_decref(in);
}

static void test_role_limits(void **state)
{
    (void)state;
    role_count_ok("privileges", TS_POLICY_MAX_PRIVILEGES);
    char *s = many("privileges", TS_POLICY_MAX_PRIVILEGES + 1);
    role_bad("r", s, "privileges must be an array of at most 64");
    free(s);
    role_count_ok("actions", TS_POLICY_MAX_ACTIONS);
    s = many("actions", TS_POLICY_MAX_ACTIONS + 1);
    role_bad("r", s, "privileges[0].actions must be an object of 1 to 64 actions");
    free(s);
    role_count_ok("membership", TS_POLICY_MAX_MEMBERSHIP);
    s = many("membership", TS_POLICY_MAX_MEMBERSHIP + 1);
    role_bad("r", s, "membership must be an array of at most 16");
    free(s);
}

/* ---- profile validation ---- */

static void test_profile_validate(void **state)
{
    (void)state;
    profile_ok(NULL,
               "{'name':'p','policies':[{'role':'r1'},"
               "{'role':'r2','restrictedTo':[{'collections':['a','b']},{'collections':['c']}]}],"
               "'rate_limit':5,'data':{'k':1},'tags':['t']}",
               "{'name':'p','policies':[{'role':'r1','restrictedTo':[]},"
               "{'role':'r2','restrictedTo':[{'collections':['a','b']},{'collections':['c']}]}],"
               "'rate_limit':5,'data':{'k':1},'tags':['t']}");
    /* Kuzzle's roleId, rateLimit and index; the name from the parameter */
    profile_ok("p",
               "{'policies':[{'roleId':'r1','restrictedTo':[{'index':'i','collections':['a']}]}],"
               "'rateLimit':10}",
               "{'name':'p','policies':[{'role':'r1','restrictedTo':[{'collections':['a']}]}],"
               "'rate_limit':10}");
    /* an index alone (all of its collections), null and empty restrictions, a null limit, 0 */
    profile_ok("p",
               "{'name':'p','policies':[{'role':'r1','restrictedTo':[{'index':'i'}]},"
               "{'role':'r2','restrictedTo':null},{'role':'r3','restrictedTo':[]},"
               "{'role':'r4','restrictedTo':[{'index':'i','collections':[]}]}],"
               "'rate_limit':null}",
               "{'name':'p','policies':[{'role':'r1','restrictedTo':[{'collections':[]}]},"
               "{'role':'r2','restrictedTo':[]},{'role':'r3','restrictedTo':[]},"
               "{'role':'r4','restrictedTo':[{'collections':[]}]}],'rate_limit':null}");
    profile_ok("p", "{'policies':[{'role':'r'}],'rateLimit':0}",
               "{'name':'p','policies':[{'role':'r','restrictedTo':[]}],'rate_limit':0}");

    /* refusals */
    profile_bad("p", "[]", "a profile is a JSON object");
    profile_bad("p", "{'policies':[{'role':'r'}],'frob':1}", "unknown member 'frob'");
    profile_bad("p", "{'name':'q','policies':[{'role':'r'}]}", "name does not match");
    profile_bad("p", "{'name':1,'policies':[{'role':'r'}]}", "name does not match");
    profile_bad(NULL, "{'policies':[{'role':'r'}]}", "name must match");
    profile_bad("bad name", "{'policies':[{'role':'r'}]}", "name must match");
    profile_bad("p", "{}", "policies must be an array of 1 to 64");
    profile_bad("p", "{'policies':[]}", "policies must be an array of 1 to 64");
    profile_bad("p", "{'policies':{'role':'r'}}", "policies must be an array");
    profile_bad("p", "{'policies':[{'role':'bad name'}]}", "policies[0] must be {role");
    profile_bad("p", "{'policies':[{'role':'r'},{'role':''}]}", "policies[1] must be {role");
    profile_bad("p", "{'policies':[{'role':5}]}", "policies[0] must be");
    profile_bad("p", "{'policies':[{}]}", "policies[0] must be");
    profile_bad("p", "{'policies':['r']}", "policies[0] must be");
    profile_bad("p", "{'policies':[{'role':'r','roleId':'r'}]}", "policies[0] must be");
    profile_bad("p", "{'policies':[{'role':'r','x':1}]}", "policies[0] must be");
    profile_bad("p", "{'policies':[{'role':'r','restrictedTo':{'collections':['a']}}]}",
                "policies[0].restrictedTo must be");
    profile_bad("p", "{'policies':[{'role':'r','restrictedTo':['a']}]}",
                "policies[0].restrictedTo must be");
    profile_bad("p", "{'policies':[{'role':'r','restrictedTo':[{'collections':['bad name']}]}]}",
                "policies[0].restrictedTo must be");
    profile_bad("p", "{'policies':[{'role':'r','restrictedTo':[{'collections':[5]}]}]}",
                "policies[0].restrictedTo must be");
    profile_bad("p",
                "{'policies':[{'role':'r'},{'role':'s','restrictedTo':[{'collections':['a'],"
                "'x':1}]}]}",
                "policies[1].restrictedTo must be");
    /* collections that are not an array must not read as "unrestricted" */
    profile_bad("p", "{'policies':[{'role':'r','restrictedTo':[{'collections':'a'}]}]}",
                "policies[0].restrictedTo must be");
    profile_bad("p", "{'policies':[{'role':'r','restrictedTo':[{'collections':{}}]}]}",
                "policies[0].restrictedTo must be");
    profile_bad("p", "{'policies':[{'role':'r','restrictedTo':[{'collections':true}]}]}",
                "policies[0].restrictedTo must be");
    profile_bad("p", "{'policies':[{'role':'r'}],'rate_limit':-1}", "rate_limit must be");
    profile_bad("p", "{'policies':[{'role':'r'}],'rateLimit':-5}", "rate_limit must be");
    profile_bad("p", "{'policies':[{'role':'r'}],'rate_limit':1.5}", "rate_limit must be");
    profile_bad("p", "{'policies':[{'role':'r'}],'rate_limit':'5'}", "rate_limit must be");
    profile_bad("p", "{'policies':[{'role':'r'}],'rate_limit':1,'rateLimit':1}", "not both");
    profile_bad("p", "{'policies':[{'role':'r'}],'data':5}", "data must be an object");
    profile_bad("p", "{'policies':[{'role':'r'}],'tags':{}}", "tags an array");

    /* 64 policies and 64 restricted collections are allowed, 65 are not */
    char buf[8192];
    size_t len = (size_t)snprintf(buf, sizeof(buf), "{'policies':[");
    for (int i = 0; i <= TS_POLICY_MAX_POLICIES; i++)
        len += (size_t)snprintf(buf + len, sizeof(buf) - len, "%s{'role':'r%d'}", i ? "," : "", i);
    snprintf(buf + len, sizeof(buf) - len, "]}");
    profile_bad("p", buf, "policies must be an array of 1 to 64");
    char *last = strrchr(buf, ',');
    snprintf(last, sizeof(buf) - (size_t)(last - buf), "]}");
    json_t *in = jq(buf), *canon = NULL;
    char err[256];
    assert_int_equal(ts_profile_validate("p", in, &canon, err, sizeof(err)), TS_OK);
    assert_int_equal(json_array_size(json_object_get(canon, "policies")), TS_POLICY_MAX_POLICIES);
    json_decref(canon);
    json_decref(in);
    len = (size_t)snprintf(buf, sizeof(buf), "{'policies':[{'role':'r','restrictedTo':[");
    for (int i = 0; i <= TS_POLICY_MAX_RESTRICT; i++)
        len += (size_t)snprintf(buf + len, sizeof(buf) - len, "%s{'collections':['c%d']}",
                                i ? "," : "", i);
    snprintf(buf + len, sizeof(buf) - len, "]}]}");
    profile_bad("p", buf, "policies[0].restrictedTo must be");
}

/* ---- policy sets ---- */

static void test_default_set(void **state)
{
    (void)state;
    size_t skipped = 99;
    struct ts_policy_set *ps = default_set(&skipped);
    assert_non_null(ps);
    assert_int_equal(skipped, 0);
    static const char *const names[] = {"admin", "anonymous", "default"};
    size_t n = 0;
    const struct ts_role *const *all = ts_policy_roles(ps, &n);
    assert_int_equal(n, 3);
    for (size_t i = 0; i < TS_ARRAY_LEN(names); i++) {
        const struct ts_role *r = ts_policy_role(ps, names[i]);
        assert_non_null(r);
        assert_string_equal(ts_role_name(r), names[i]);
        assert_ptr_equal(all[i], r); /* listed by name */
        const json_t *p = ts_policy_profile(ps, names[i]);
        assert_non_null(p);
        assert_string_equal(json_string_value(json_object_get(p, "name")), names[i]);
        assert_string_equal(json_string_value(json_object_get(
                                json_array_get(json_object_get(p, "policies"), 0), "role")),
                            names[i]);
    }
    assert_null(ts_policy_role(ps, "nobody"));
    assert_null(ts_policy_role(ps, "Admin"));
    assert_null(ts_policy_role(ps, NULL));
    assert_null(ts_policy_profile(ps, "nobody"));
    assert_null(ts_policy_profile(ps, NULL));
    struct ts_grants g = {0};
    assert_false(ts_grants_add_profile(&g, ps, "nobody"));
    assert_int_equal(g.n, 0);
    ts_grants_add_role(&g, ps, "nobody", "key", NULL);
    assert_int_equal(g.n, 0);
    ts_policy_set_free(ps);
    ts_policy_set_free(NULL);

    /* the defaults are canonical: validating one answers the same document */
    for (size_t i = 0; ts_policy_default_roles[i]; i++) {
        json_t *in = json_loads(ts_policy_default_roles[i], 0, NULL), *canon = NULL;
        char err[256] = "";
        if (ts_role_validate(NULL, in, NULL, &canon, err, sizeof(err)) != TS_OK)
            fail_msg("%s: %s", ts_policy_default_roles[i], err);
        assert_true(json_equal(in, canon));
        json_decref(canon);
        json_decref(in);
    }
    for (size_t i = 0; ts_policy_default_profiles[i]; i++) {
        json_t *in = json_loads(ts_policy_default_profiles[i], 0, NULL), *canon = NULL;
        char err[256] = "";
        if (ts_profile_validate(NULL, in, &canon, err, sizeof(err)) != TS_OK)
            fail_msg("%s: %s", ts_policy_default_profiles[i], err);
        json_decref(canon);
        json_decref(in);
    }
}

static void collect_coll(void *cls, const char *name)
{
    char *s = cls;
    strcat(s, name);
    strcat(s, ";");
}

static void collect_api(void *cls, const char *controller, const char *action)
{
    char *s = cls;
    strcat(s, controller);
    strcat(s, ":");
    strcat(s, action);
    strcat(s, ";");
}

static void test_set_skips(void **state)
{
    (void)state;
    static const char *const roles[] = {
        "{'name':'zeta','privileges':[{'resource':'api/z','actions':{'first':true}}],"
        "'membership':[]}",
        /* not canonical any more: a bad resource, a bad predicate, a bad name, no privileges */
        "{'name':'bad1','privileges':[{'resource':'foo','actions':{'a':true}}],'membership':[]}",
        "{'name':'bad2','privileges':[{'resource':'api/a','actions':{'a':'1 <'}}],"
        "'membership':[]}",
        "{'name':'bad name','privileges':[],'membership':[]}",
        "{'name':'bad4','membership':[]}",
        "[]",
        /* a second zeta is skipped; the first stays */
        "{'name':'zeta','privileges':[{'resource':'api/z','actions':{'second':true}}],"
        "'membership':[]}",
        "{'name':'alpha','privileges':[{'resource':'collections/a','actions':{'read':true}},"
        "{'resource':'collections/*','actions':{'read':true}},"
        "{'resource':'api/*','actions':{'x':true}},"
        "{'resource':'api/auth','actions':{'login':true,'*':true,'me':'true'}}],"
        "'membership':[{'collection':'staff'}]}",
        NULL,
    };
    static const char *const profiles[] = {
        "{'name':'p','policies':[{'role':'zeta'}],'rate_limit':null}",
        "{'name':'empty','policies':[],'rate_limit':null}",
        "{'name':'p','policies':[{'role':'alpha'}],'rate_limit':null}",
        "{'name':'q','policies':[{'role':'alpha'},{'role':'zeta'}],'rate_limit':3}",
        "5",
        NULL,
    };
    size_t skipped = 0;
    struct ts_policy_set *ps = set_of(roles, profiles, NULL, &skipped);
    assert_int_equal(skipped, 6 + 3);
    size_t n = 0;
    const struct ts_role *const *all = ts_policy_roles(ps, &n);
    assert_int_equal(n, 2);
    assert_string_equal(ts_role_name(all[0]), "alpha");
    assert_string_equal(ts_role_name(all[1]), "zeta");
    assert_null(ts_policy_role(ps, "bad1"));
    assert_null(ts_policy_role(ps, "bad2"));
    assert_null(ts_policy_role(ps, "bad4"));
    assert_null(ts_policy_profile(ps, "empty"));
    assert_json(ts_policy_profile(ps, "p"),
                "{'name':'p','policies':[{'role':'zeta','restrictedTo':[]}],'rate_limit':null}");
    assert_json(ts_policy_profile(ps, "q"),
                "{'name':'q','policies':[{'role':'alpha','restrictedTo':[]},"
                "{'role':'zeta','restrictedTo':[]}],'rate_limit':3}");

    struct ts_grants g = {0};
    assert_true(ts_grants_add_profile(&g, ps, "p"));
    assert_int_equal(g.n, 1);
    ALLOWED(&g, "api/z", "first");
    DENIED(&g, "api/z", "second");

    /* what a role names, for listing rights */
    char seen[256] = "";
    ts_role_collections(ts_policy_role(ps, "alpha"), collect_coll, seen);
    assert_string_equal(seen, "a;staff;");
    seen[0] = '\0';
    ts_role_api_actions(ts_policy_role(ps, "alpha"), collect_api, seen);
    assert_string_equal(seen, "auth:login;auth:me;");
    seen[0] = '\0';
    ts_role_collections(ts_policy_role(ps, "zeta"), collect_coll, seen);
    assert_string_equal(seen, "");
    ts_policy_set_free(ps);

    /* skipped may be NULL; an empty set */
    ps = ts_policy_set_new(NULL, 0, NULL, 0, NULL, NULL);
    assert_non_null(ps);
    n = 99;
    ts_policy_roles(ps, &n);
    assert_int_equal(n, 0);
    assert_null(ts_policy_role(ps, "admin"));
    ts_policy_set_free(ps);
}

/* ---- decisions ---- */

static void test_deny_by_default(void **state)
{
    (void)state;
    struct ts_grants g = {0};
    struct ts_authz_decision d;
    assert_false(decide(&g, "collections/x", "read", NULL, &d));
    assert_null(d.role);
    assert_null(d.privilege);
    assert_null(d.action);
    assert_null(d.rule);
    assert_null(d.via);
    assert_string_equal(d.reason, "no role allows read on collections/x");
    assert_int_equal(ts_grants_static(&g, "collections/x", "read"), TS_AUTHZ_DENIED);
    DENIED(&g, "api/auth", "login");
}

static void test_default_profiles(void **state)
{
    (void)state;
    struct ts_policy_set *ps = default_set(NULL);
    struct ts_authz_decision d;

    struct ts_grants anon = {0};
    assert_true(ts_grants_add_profile(&anon, ps, "anonymous"));
    assert_int_equal(anon.n, 1);
    assert_null(anon.items[0].restricted_to);
    assert_true(decide(&anon, "api/auth", "login", NULL, &d));
    /* via: the profile's name (authz_policy.h's comment on struct ts_grant says
     * "profile:<name>"; the implementation and the API layer use the bare name) */
    explain(&d, "anonymous", "api/auth", "login", "true", "anonymous");
    assert_int_equal(ts_grants_static(&anon, "api/auth", "login"), TS_AUTHZ_ALLOWED);
    ALLOWED(&anon, "api/auth", "identify");
    DENIED(&anon, "api/token", "create");
    DENIED(&anon, "api/auth", "me");
    DENIED(&anon, "collections/x", "read");

    struct ts_grants def = {0};
    assert_true(ts_grants_add_profile(&def, ps, "default"));
    ALLOWED(&def, "api/auth", "me");
    ALLOWED(&def, "api/authz", "check");
    DENIED(&def, "api/token", "create");
    DENIED(&def, "collections/x", "read");

    struct ts_grants admin = {0};
    assert_true(ts_grants_add_profile(&admin, ps, "admin"));
    assert_true(decide(&admin, "collections/x", "read", NULL, &d));
    explain(&d, "admin", "collections/*", "*", "true", "admin");
    assert_true(decide(&admin, "api/token", "create", NULL, &d));
    explain(&d, "admin", "api/token", "*", "true", "admin");
    ALLOWED(&admin, "collections/x", "delete");
    ALLOWED(&admin, "collections/users", "write");
    ALLOWED(&admin, "api/plugin/name", "anything.at:all");
    assert_int_equal(ts_grants_static(&admin, "collections/x", "list"), TS_AUTHZ_ALLOWED);
    ts_policy_set_free(ps);
}

static void test_shadowing(void **state)
{
    (void)state;
    static const char *const roles[] = {
        "{'name':'k','privileges':[{'resource':'api/*','actions':{'*':true}},"
        "{'resource':'api/token','actions':{'list':true}}]}",
        "{'name':'doc','privileges':[{'resource':'api/document','actions':{'*':true,"
        "'delete':false}}]}",
        "{'name':'c','privileges':[{'resource':'collections/secret','actions':{'read':true}},"
        "{'resource':'collections/*','actions':{'*':true}},"
        "{'resource':'collections/mine','actions':{'write':'resource.data.owner == identity.id',"
        "'*':true}}]}",
        NULL,
    };
    struct ts_policy_set *ps = set_of(roles, NULL, NULL, NULL);
    struct ts_authz_decision d;

    struct ts_grants g = {0};
    ts_grants_add_role(&g, ps, "k", "key", NULL);
    assert_true(decide(&g, "api/token", "list", NULL, &d));
    explain(&d, "k", "api/token", "list", "true", "key");
    DENIED(&g, "api/token", "create"); /* api/token hides the api wildcard */
    assert_string_equal(d.via, "key");
    assert_true(decide(&g, "api/key", "create", NULL, &d));
    explain(&d, "k", "api/*", "*", "true", "key");
    /* with TS_AUTHZ_EXACT_RESOURCE the wildcard resource grants nothing: key:create must be
     * named; api/token is named, so token:list still is allowed */
    struct ts_arena ea;
    ts_arena_init(&ea, 1024);
    struct ts_pred_input none = {0};
    assert_false(
        ts_grants_decide_ex(&g, "api/key", "create", TS_AUTHZ_EXACT_RESOURCE, &none, &ea, &d));
    assert_int_equal(ts_grants_static_ex(&g, "api/key", "create", TS_AUTHZ_EXACT_RESOURCE),
                     TS_AUTHZ_DENIED);
    assert_true(
        ts_grants_decide_ex(&g, "api/token", "list", TS_AUTHZ_EXACT_RESOURCE, &none, &ea, &d));
    assert_int_equal(ts_grants_uses_ex(&g, "api/key", "create", TS_AUTHZ_EXACT_RESOURCE), 0u);
    ts_arena_free(&ea);

    struct ts_grants g2 = {0};
    ts_grants_add_role(&g2, ps, "doc", "key", NULL);
    DENIED(&g2, "api/document", "delete"); /* the exact action hides "*" */
    assert_true(decide(&g2, "api/document", "create", NULL, &d));
    explain(&d, "doc", "api/document", "*", "true", "key");
    DENIED(&g2, "api/other", "create");

    struct ts_grants g3 = {0};
    ts_grants_add_role(&g3, ps, "c", "key", NULL);
    ALLOWED(&g3, "collections/secret", "read");
    DENIED(&g3, "collections/secret", "write");
    ALLOWED(&g3, "collections/other", "write");
    /* a predicate on the exact resource hides the wildcard's true */
    assert_int_equal(ts_grants_static(&g3, "collections/mine", "write"), TS_AUTHZ_CONDITIONAL);
    json_t *id = jq("{'id':'u1'}"), *theirs = jq("{'data':{'owner':'u2'}}");
    struct ts_pred_input in = {.identity = id, .resource = theirs};
    assert_false(decide(&g3, "collections/mine", "write", &in, &d));
    json_decref(id);
    json_decref(theirs);
    assert_int_equal(ts_grants_static(&g3, "collections/mine", "read"), TS_AUTHZ_ALLOWED);
    ts_policy_set_free(ps);
}

static void test_union(void **state)
{
    (void)state;
    static const char *const roles[] = {
        "{'name':'A','privileges':[{'resource':'api/x','actions':{'y':false,'z':'identity.id == "
        "`u1`'}}]}",
        "{'name':'B','privileges':[{'resource':'api/x','actions':{'y':true}},"
        "{'resource':'api/*','actions':{'z':true}}]}",
        "{'name':'C','privileges':[{'resource':'api/x','actions':{'w':'identity.id == `u1`'}}]}",
        NULL,
    };
    static const char *const profiles[] = {
        "{'name':'pa','policies':[{'role':'A'}]}",
        "{'name':'pab','policies':[{'role':'A'},{'role':'B'}]}",
        NULL,
    };
    struct ts_policy_set *ps = set_of(roles, profiles, NULL, NULL);
    struct ts_authz_decision d;

    struct ts_grants a = {0};
    assert_true(ts_grants_add_profile(&a, ps, "pa"));
    DENIED(&a, "api/x", "y");

    /* A says false, B says true: allowed by B, whatever the order */
    struct ts_grants ab = {0};
    assert_true(ts_grants_add_profile(&ab, ps, "pab"));
    assert_int_equal(ab.n, 2);
    assert_true(decide(&ab, "api/x", "y", NULL, &d));
    explain(&d, "B", "api/x", "y", "true", "pab");
    /* B's api/x hides its api wildcard: z is A's predicate alone, and it needs an identity */
    assert_int_equal(ts_grants_static(&ab, "api/x", "z"), TS_AUTHZ_CONDITIONAL);
    json_t *id = jq("{'id':'u1'}");
    struct ts_pred_input in = {.identity = id};
    assert_true(decide(&ab, "api/x", "z", &in, &d));
    explain(&d, "A", "api/x", "z", "identity.id == \"u1\"", "pab");
    assert_false(decide(&ab, "api/x", "z", NULL, &d));

    /* a static true wins over an earlier predicate, without evaluating it */
    struct ts_grants cb = {0};
    ts_grants_add_role(&cb, ps, "C", "provider", NULL);
    ts_grants_add_role(&cb, ps, "B", "key", NULL);
    assert_int_equal(cb.n, 2);
    assert_true(decide(&cb, "api/x", "y", &in, &d));
    explain(&d, "B", "api/x", "y", "true", "key");
    assert_true(decide(&cb, "api/x", "w", &in, &d));
    explain(&d, "C", "api/x", "w", "identity.id == \"u1\"", "provider");
    DENIED(&cb, "api/x", "v");
    /* the same role twice, unrestricted, is one grant */
    ts_grants_add_role(&cb, ps, "B", "key", NULL);
    assert_int_equal(cb.n, 2);
    json_decref(id);
    ts_policy_set_free(ps);
}

static void test_predicates(void **state)
{
    (void)state;
    static const char *const roles[] = {
        "{'name':'owner','privileges':[{'resource':'collections/docs','actions':{"
        "'read':'resource.data.owner == identity.id',"
        "'list':'resource.data.level >= 3',"
        "'write':'old.data.owner == identity.id && new.data.owner == old.data.owner'}}]}",
        NULL,
    };
    struct ts_policy_set *ps = set_of(roles, NULL, NULL, NULL);
    struct ts_grants g = {0};
    ts_grants_add_role(&g, ps, "owner", "membership", NULL);
    struct ts_authz_decision d;
    assert_int_equal(ts_grants_static(&g, "collections/docs", "read"), TS_AUTHZ_CONDITIONAL);
    assert_int_equal(ts_grants_static(&g, "collections/docs", "delete"), TS_AUTHZ_DENIED);

    json_t *id = jq("{'id':'u1'}");
    json_t *mine = jq("{'id':'d1','data':{'owner':'u1','level':5}}");
    json_t *theirs = jq("{'id':'d2','data':{'owner':'u2','level':1}}");
    struct ts_pred_input in = {.identity = id, .resource = mine};
    assert_true(decide(&g, "collections/docs", "read", &in, &d));
    json_decref(mine); /* the decision keeps no pointer into its inputs */
    mine = NULL;
    explain(&d, "owner", "collections/docs", "read", "resource.data.owner == identity.id",
            "membership");
    in.resource = theirs;
    assert_false(decide(&g, "collections/docs", "read", &in, &d));
    assert_string_equal(d.reason, "no role allows read on collections/docs");
    /* a missing document: missing == "u1" is false, a plain denial */
    in.resource = NULL;
    assert_false(decide(&g, "collections/docs", "read", &in, &d));
    assert_null(d.role);
    /* a missing operand of >= is an error: denied, with the role and the position */
    assert_false(decide(&g, "collections/docs", "list", &in, &d));
    assert_non_null(strstr(d.reason, "role owner"));
    assert_non_null(strstr(d.reason, "line 1, column"));
    in.resource = theirs;
    assert_false(decide(&g, "collections/docs", "list", &in, &d));
    assert_string_equal(d.reason, "no role allows list on collections/docs");
    /* no identity at all */
    in = (struct ts_pred_input){.resource = theirs};
    assert_false(decide(&g, "collections/docs", "read", &in, &d));

    /* a write sees old and new */
    json_t *old_mine = jq("{'data':{'owner':'u1'}}");
    json_t *new_mine = jq("{'data':{'owner':'u1','x':1}}");
    json_t *new_given = jq("{'data':{'owner':'u2'}}");
    json_t *old_theirs = jq("{'data':{'owner':'u2'}}");
    in = (struct ts_pred_input){.identity = id, .old_doc = old_mine, .new_doc = new_mine};
    assert_true(decide(&g, "collections/docs", "write", &in, &d));
    explain(&d, "owner", "collections/docs", "write",
            "old.data.owner == identity.id && new.data.owner == old.data.owner", "membership");
    in.new_doc = new_given; /* giving the document away */
    assert_false(decide(&g, "collections/docs", "write", &in, &d));
    in.old_doc = old_theirs; /* taking someone's */
    in.new_doc = new_mine;
    assert_false(decide(&g, "collections/docs", "write", &in, &d));
    in.old_doc = old_mine; /* old and new must not be read from resource */
    in.new_doc = NULL;
    in.resource = new_mine;
    assert_false(decide(&g, "collections/docs", "write", &in, &d));

    json_decref(old_mine);
    json_decref(new_mine);
    json_decref(new_given);
    json_decref(old_theirs);
    json_decref(theirs);
    json_decref(id);
    ts_policy_set_free(ps);
}

static void test_restricted_to(void **state)
{
    (void)state;
    static const char *const roles[] = {
        "{'name':'R','privileges':[{'resource':'collections/*','actions':{'read':true}},"
        "{'resource':'api/*','actions':{'*':true}}]}",
        "{'name':'S','privileges':[{'resource':'collections/c','actions':{'write':true}}]}",
        NULL,
    };
    static const char *const profiles[] = {
        "{'name':'p','policies':[{'role':'R','restrictedTo':[{'collections':['a']}]}]}",
        "{'name':'p2','policies':[{'role':'R','restrictedTo':[{'index':'i','collections':['a']},"
        "{'collections':['b']}]},{'role':'S','restrictedTo':[{'collections':['a']}]}]}",
        "{'name':'p3','policies':[{'role':'R','restrictedTo':[{'index':'i'}]}]}",
        "{'name':'p4','policies':[{'role':'R','restrictedTo':[{'collections':['a']},"
        "{'index':'i'}]}]}",
        NULL,
    };
    size_t skipped = 9;
    struct ts_policy_set *ps = set_of(roles, profiles, NULL, &skipped);
    assert_int_equal(skipped, 0);
    struct ts_authz_decision d;

    struct ts_grants g = {0};
    assert_true(ts_grants_add_profile(&g, ps, "p"));
    assert_int_equal(g.n, 1);
    assert_non_null(g.items[0].restricted_to);
    assert_true(decide(&g, "collections/a", "read", NULL, &d));
    explain(&d, "R", "collections/*", "read", "true", "p");
    DENIED(&g, "collections/b", "read");
    DENIED(&g, "collections/aa", "read");
    ALLOWED(&g, "api/document", "create"); /* api resources are not restricted */
    ALLOWED(&g, "api/a", "read");

    struct ts_grants g2 = {0};
    assert_true(ts_grants_add_profile(&g2, ps, "p2"));
    assert_int_equal(g2.n, 2);
    ALLOWED(&g2, "collections/a", "read");
    ALLOWED(&g2, "collections/b", "read");
    DENIED(&g2, "collections/c", "read");
    DENIED(&g2, "collections/c", "write"); /* S applies to a only, and names c only */

    /* an index without collections: every collection */
    struct ts_grants g3 = {0};
    assert_true(ts_grants_add_profile(&g3, ps, "p3"));
    assert_null(g3.items[0].restricted_to);
    ALLOWED(&g3, "collections/zzz", "read");
    struct ts_grants g4 = {0};
    assert_true(ts_grants_add_profile(&g4, ps, "p4"));
    assert_null(g4.items[0].restricted_to);
    ALLOWED(&g4, "collections/zzz", "read");

    /* restricted first, then unrestricted: both apply; the other way round, one */
    ts_grants_add_role(&g, ps, "R", "key", NULL);
    assert_int_equal(g.n, 2);
    assert_true(decide(&g, "collections/b", "read", NULL, &d));
    explain(&d, "R", "collections/*", "read", "true", "key");
    json_t *only_b = jq("['b']");
    ts_grants_add_role(&g3, ps, "R", "key", only_b);
    assert_int_equal(g3.n, 1);
    struct ts_grants g5 = {0};
    ts_grants_add_role(&g5, ps, "R", "key", only_b);
    ALLOWED(&g5, "collections/b", "read");
    DENIED(&g5, "collections/a", "read");
    json_t *none = json_array();
    struct ts_grants g6 = {0};
    ts_grants_add_role(&g6, ps, "R", "key", none);
    DENIED(&g6, "collections/a", "read");
    ALLOWED(&g6, "api/x", "y");
    json_decref(none);
    json_decref(only_b);
    ts_policy_set_free(ps);
}

static void test_membership(void **state)
{
    (void)state;
    static const char *const roles[] = {
        "{'name':'staff_role','privileges':[{'resource':'collections/reports','actions':{"
        "'read':true}}],'membership':[{'collection':'staff','predicate':"
        "'identity.data.level >= 3'}]}",
        "{'name':'guest_role','privileges':[{'resource':'api/x','actions':{'y':true}}],"
        "'membership':[{'collection':'guests'}]}",
        "{'name':'two','privileges':[{'resource':'api/two','actions':{'y':true}}],"
        "'membership':[{'collection':'staff','predicate':'identity.data.level == 99'},"
        "{'collection':'staff','predicate':'identity.data.level > 4'}]}",
        NULL,
    };
    struct ts_policy_set *ps = set_of(roles, NULL, NULL, NULL);
    struct ts_arena a;
    ts_arena_init(&a, 512);
    struct ts_authz_decision d;

    json_t *senior = jq("{'id':'u1','data':{'level':5}}");
    json_t *junior = jq("{'id':'u2','data':{'level':1}}");
    json_t *nolevel = jq("{'id':'u3','data':{}}");
    struct ts_pred_input in = {.identity = senior};

    struct ts_grants g = {0};
    ts_grants_add_membership(&g, ps, "staff", &in, &a);
    assert_int_equal(g.n, 2); /* staff_role, and two (once, through its second rule) */
    assert_true(decide(&g, "collections/reports", "read", NULL, &d));
    explain(&d, "staff_role", "collections/reports", "read", "true", "membership");
    ALLOWED(&g, "api/two", "y");
    DENIED(&g, "api/x", "y");

    memset(&g, 0, sizeof(g));
    in.identity = junior;
    ts_grants_add_membership(&g, ps, "staff", &in, &a);
    assert_int_equal(g.n, 0);
    DENIED(&g, "collections/reports", "read");

    in.identity = nolevel; /* the predicate fails: no grant */
    ts_grants_add_membership(&g, ps, "staff", &in, &a);
    assert_int_equal(g.n, 0);

    in.identity = senior; /* another collection */
    ts_grants_add_membership(&g, ps, "other", &in, &a);
    assert_int_equal(g.n, 0);
    ts_grants_add_membership(&g, ps, NULL, &in, &a);
    assert_int_equal(g.n, 0);

    in.identity = NULL; /* no predicate: every identity of the collection */
    ts_grants_add_membership(&g, ps, "guests", &in, &a);
    assert_int_equal(g.n, 1);
    assert_true(decide(&g, "api/x", "y", NULL, &d));
    explain(&d, "guest_role", "api/x", "y", "true", "membership");
    DENIED(&g, "collections/reports", "read");
    ts_grants_add_membership(&g, ps, "guests", &in, &a);
    assert_int_equal(g.n, 1);

    ts_arena_free(&a);
    json_decref(senior);
    json_decref(junior);
    json_decref(nolevel);
    ts_policy_set_free(ps);
}

/* ---- fetches ---- */

struct store {
    json_t *docs; /* "collection/id" -> document */
    unsigned calls;
    enum ts_rc rc;
};

static enum ts_rc fetch(void *cls, enum ts_pred_fetch kind, const char *coll, const char *id,
                        const char *term, json_t **out)
{
    struct store *st = cls;
    (void)term;
    st->calls++;
    if (st->rc != TS_OK)
        return st->rc;
    if (kind == TS_PRED_FETCH_LOOKUP)
        return TS_E_NOT_FOUND;
    char key[256];
    snprintf(key, sizeof(key), "%s/%s", coll, id);
    json_t *doc = json_object_get(st->docs, key);
    *out = doc ? json_incref(doc) : NULL;
    return TS_OK;
}

static void test_fetch(void **state)
{
    (void)state;
    static const char *const roles[] = {
        "{'name':'team','privileges':[{'resource':'collections/docs','actions':{"
        "'read':'identity.id in get(`teams`, resource.data.team).data.members',"
        "'list':'exists(`teams`, `t1`) && exists(`teams`, `t2`)'}}]}",
        "{'name':'t2','privileges':[{'resource':'collections/docs','actions':{"
        "'delete':'exists(`teams`, `t1`) && identity.id == `nobody`'}}]}",
        "{'name':'t3','privileges':[{'resource':'collections/docs','actions':{"
        "'delete':'exists(`teams`, `t1`)'}}]}",
        NULL,
    };
    struct store st = {
        .docs = jq("{'teams/t1':{'id':'t1','data':{'members':['u1','u3']}},"
                   "'teams/t2':{'id':'t2','data':{'members':[]}}}"),
    };
    json_t *id = jq("{'id':'u1'}");
    json_t *doc1 = jq("{'data':{'team':'t1'}}");
    json_t *doc2 = jq("{'data':{'team':'t2'}}");
    json_t *doc9 = jq("{'data':{'team':'t9'}}");
    struct ts_pred_input in = {.identity = id, .resource = doc1, .fetch = fetch, .fetch_cls = &st};
    struct ts_authz_decision d;

    struct ts_policy_set *ps = set_of(roles, NULL, NULL, NULL);
    struct ts_grants g = {0};
    ts_grants_add_role(&g, ps, "team", "key", NULL);
    assert_true(decide(&g, "collections/docs", "read", &in, &d));
    explain(&d, "team", "collections/docs", "read",
            "identity.id in get(\"teams\", resource.data.team).data.members", "key");
    assert_int_equal(st.calls, 1);
    in.resource = doc2; /* not a member */
    assert_false(decide(&g, "collections/docs", "read", &in, &d));
    assert_int_equal(st.calls, 2);
    in.resource = doc9; /* no such team: get is null, its members missing: an error */
    assert_false(decide(&g, "collections/docs", "read", &in, &d));
    assert_non_null(strstr(d.reason, "role team"));
    assert_int_equal(st.calls, 3);
    /* the store failing denies */
    in.resource = doc1;
    st.rc = TS_E_UNAVAILABLE;
    assert_false(decide(&g, "collections/docs", "read", &in, &d));
    assert_non_null(strstr(d.reason, "role team: line 1, column"));
    assert_int_equal(st.calls, 4);
    st.rc = TS_OK;
    /* no fetch callback denies */
    in.fetch = NULL;
    assert_false(decide(&g, "collections/docs", "read", &in, &d));
    assert_int_equal(st.calls, 4);
    in.fetch = fetch;
    /* two fetches under the default limit */
    assert_true(decide(&g, "collections/docs", "list", &in, &d));
    assert_int_equal(st.calls, 6);

    /* a per-decision cache shared by the roles' predicates */
    struct ts_grants g2 = {0};
    ts_grants_add_role(&g2, ps, "t2", "key", NULL);
    ts_grants_add_role(&g2, ps, "t3", "key", NULL);
    st.calls = 0;
    struct ts_arena a;
    ts_arena_init(&a, 512);
    struct ts_pred_cache cache;
    ts_pred_cache_init(&cache);
    in.cache = &cache;
    assert_true(ts_grants_decide(&g2, "collections/docs", "delete", &in, &a, &d));
    explain(&d, "t3", "collections/docs", "delete", "exists(\"teams\", \"t1\")", "key");
    assert_int_equal(st.calls, 1);
    ts_arena_free(&a);
    in.cache = NULL;
    st.calls = 0;
    assert_true(decide(&g2, "collections/docs", "delete", &in, &d));
    assert_int_equal(st.calls, 2);
    ts_policy_set_free(ps);

    /* the set's limits bound the fetches of its predicates */
    struct ts_pred_limits one = {.max_fetches = 1};
    ps = set_of(roles, NULL, &one, NULL);
    memset(&g, 0, sizeof(g));
    ts_grants_add_role(&g, ps, "team", "key", NULL);
    st.calls = 0;
    assert_true(decide(&g, "collections/docs", "read", &in, &d));
    assert_int_equal(st.calls, 1);
    assert_false(decide(&g, "collections/docs", "list", &in, &d));
    assert_non_null(strstr(d.reason, "role team"));
    assert_non_null(strstr(d.reason, "fetch limit"));
    assert_int_equal(st.calls, 2); /* the second is refused before the callback */
    ts_policy_set_free(ps);

    json_decref(doc1);
    json_decref(doc2);
    json_decref(doc9);
    json_decref(id);
    json_decref(st.docs);
}

/* ---- requests ---- */

static void test_resource_ok(void **state)
{
    (void)state;
    assert_true(ts_policy_resource_ok("collections/x"));
    assert_true(ts_policy_resource_ok("collections/_a-b9"));
    assert_true(ts_policy_resource_ok("api/x"));
    assert_true(ts_policy_resource_ok("api/plugin/name.v2:x-y"));
    static const char *const bad[] = {
        "collections/*",
        "api/*",
        "collections/",
        "api/",
        "collections",
        "api",
        "",
        "x",
        "foo/bar",
        "collections/bad name",
        "collections/9",
        "collections/-a",
        "Api/x",
        "api/-x",
        "api/ x",
        "collections/a*",
        " collections/a",
        "collections/a\n",
        "collections/a2345678901234567890123456789012345678901234567890123456789012345",
    };
    for (size_t i = 0; i < TS_ARRAY_LEN(bad); i++)
        if (ts_policy_resource_ok(bad[i]))
            fail_msg("'%s' accepted", bad[i]);
    assert_false(ts_policy_resource_ok(NULL));
}

static void test_wildcard_requests(void **state)
{
    (void)state;
    struct ts_policy_set *ps = default_set(NULL);
    struct ts_grants g = {0};
    assert_true(ts_grants_add_profile(&g, ps, "admin"));
    struct ts_authz_decision d;
    static const char *const actions[] = {"*", "", "-x", "a b", "*x"};
    for (size_t i = 0; i < TS_ARRAY_LEN(actions); i++) {
        DENIED(&g, "api/document", actions[i]);
        DENIED(&g, "collections/x", actions[i]);
    }
    DENIED(&g, "collections/*", "read");
    DENIED(&g, "api/*", "create");
    DENIED(&g, "junk", "read");
    assert_false(decide(&g, "api/*", "*", NULL, &d));
    assert_string_equal(d.reason, "not a resource and action");
    assert_false(decide(&g, NULL, "read", NULL, &d));
    assert_false(decide(&g, "api/x", NULL, NULL, &d));
    assert_int_equal(ts_grants_static(&g, NULL, "read"), TS_AUTHZ_DENIED);
    assert_int_equal(ts_grants_static(&g, "api/x", NULL), TS_AUTHZ_DENIED);
    ALLOWED(&g, "api/document", "x");
    ts_policy_set_free(ps);
}

static void test_max_grants(void **state)
{
    (void)state;
    enum { N = TS_POLICY_MAX_GRANTS + 6 };
    char *texts[N + 1];
    char *ptexts[3] = {0};
    for (size_t i = 0; i < N; i++) {
        texts[i] = malloc(128);
        assert_non_null(texts[i]);
        snprintf(texts[i], 128,
                 "{'name':'r%02zu','privileges':[{'resource':'api/c%zu','actions':"
                 "{'a':true}}],'membership':[{'collection':'all'}]}",
                 i, i);
    }
    texts[N] = NULL;
    /* a profile of 64 policies */
    size_t cap = 64 * 32 + 64, len = 0;
    ptexts[0] = malloc(cap);
    assert_non_null(ptexts[0]);
    len += (size_t)snprintf(ptexts[0] + len, cap - len, "{'name':'big','policies':[");
    for (size_t i = 0; i < TS_POLICY_MAX_POLICIES; i++)
        len += (size_t)snprintf(ptexts[0] + len, cap - len, "%s{'role':'r%02zu'}", i ? "," : "",
                                N - 1 - i);
    snprintf(ptexts[0] + len, cap - len, "]}");
    size_t skipped = 9;
    struct ts_policy_set *ps =
        set_of((const char *const *)texts, (const char *const *)ptexts, NULL, &skipped);
    assert_int_equal(skipped, 0);
    for (size_t i = 0; i < N; i++)
        free(texts[i]);
    free(ptexts[0]);

    struct ts_grants g = {0};
    for (size_t i = 0; i < N; i++) {
        char name[8];
        snprintf(name, sizeof(name), "r%02zu", i);
        ts_grants_add_role(&g, ps, name, "key", NULL);
        assert_int_equal(g.n, i < TS_POLICY_MAX_GRANTS ? i + 1 : TS_POLICY_MAX_GRANTS);
    }
    ALLOWED(&g, "api/c0", "a");
    ALLOWED(&g, "api/c63", "a");
    DENIED(&g, "api/c64", "a");
    DENIED(&g, "api/c69", "a");

    /* a full profile, then more from membership: still 64 */
    struct ts_grants g2 = {0};
    assert_true(ts_grants_add_profile(&g2, ps, "big"));
    assert_int_equal(g2.n, TS_POLICY_MAX_GRANTS);
    struct ts_arena a;
    ts_arena_init(&a, 512);
    struct ts_pred_input in = {0};
    ts_grants_add_membership(&g2, ps, "all", &in, &a);
    ts_arena_free(&a);
    assert_int_equal(g2.n, TS_POLICY_MAX_GRANTS);
    ALLOWED(&g2, "api/c69", "a");
    DENIED(&g2, "api/c5", "a");
    ts_policy_set_free(ps);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_role_native),
        cmocka_unit_test(test_role_kuzzle),
        cmocka_unit_test(test_role_refusals),
        cmocka_unit_test(test_role_limits),
        cmocka_unit_test(test_profile_validate),
        cmocka_unit_test(test_default_set),
        cmocka_unit_test(test_set_skips),
        cmocka_unit_test(test_deny_by_default),
        cmocka_unit_test(test_default_profiles),
        cmocka_unit_test(test_shadowing),
        cmocka_unit_test(test_union),
        cmocka_unit_test(test_predicates),
        cmocka_unit_test(test_restricted_to),
        cmocka_unit_test(test_membership),
        cmocka_unit_test(test_fetch),
        cmocka_unit_test(test_resource_ok),
        cmocka_unit_test(test_wildcard_requests),
        cmocka_unit_test(test_max_grants),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

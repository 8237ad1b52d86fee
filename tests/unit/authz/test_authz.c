/*
 * test_authz.c - unit tests of the predicate language (src/authz, issue 6): precedence,
 * every operator and function, compile-time type errors with line and column, the depth,
 * size and node limits at max and max+1, the fetch limit and the per-decision cache, and the
 * runtime rules: a missing path equals only a literal null, null equals only null, anything
 * else given a null or
 * a wrongly typed operand is an error, which callers treat as a denial.
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
#include "core/core.h"

/* ---- fixture ---- */

static json_t *env;          /* identity, claims, resource, old, new, request, docs */
static unsigned fetch_calls; /* callback invocations */
static enum ts_rc fetch_rc;  /* what the callback answers */

static const char env_text[] =
    "{\"identity\":{\"id\":\"u1\",\"email\":\"Ada@Example.COM\",\"teams\":[\"t1\",\"t2\"],"
    "\"age\":36,\"score\":2.5,\"active\":true,\"nothing\":null},"
    "\"claims\":{\"aal\":\"aal2\",\"exp\":1700000100,\"roles\":{\"admin\":true}},"
    "\"resource\":{\"id\":\"d1\",\"data\":{\"owner\":\"u1\",\"title\":\"h\\u00e9llo w\\u00f6rld\","
    "\"tags\":[\"a\",\"b\",3],\"n\":[10,20],\"emoji\":\"\\ud83d\\ude00x\"}},"
    "\"old\":{\"data\":{\"owner\":\"u1\"}},\"new\":{\"data\":{\"owner\":\"u2\"}},"
    "\"request\":{\"method\":\"PUT\",\"path\":\"/v1/docs/d1\",\"headers\":{\"x-tenant\":\"acme\"}},"
    "\"docs\":{\"teams/t1\":{\"id\":\"t1\",\"data\":{\"members\":[\"u1\",\"u3\"]}},"
    "\"teams/t2\":{\"id\":\"t2\",\"data\":{\"members\":[]}},"
    "\"a/1\":{},\"a/2\":{},\"a/3\":{},\"a/4\":{},\"a/5\":{},"
    "\"users/email/ada\":{\"id\":\"u1\",\"data\":{\"admin\":true}}}}";

static enum ts_rc fetch(void *cls, enum ts_pred_fetch kind, const char *coll, const char *id,
                        const char *term, json_t **out)
{
    char key[256];
    fetch_calls++;
    if (fetch_rc != TS_OK)
        return fetch_rc;
    if (kind == TS_PRED_FETCH_LOOKUP)
        snprintf(key, sizeof key, "%s/%s/%s", coll, id, term);
    else
        snprintf(key, sizeof key, "%s/%s", coll, id);
    json_t *d = json_object_get(json_object_get(cls, "docs"), key);
    *out = d ? json_incref(d) : NULL;
    return TS_OK;
}

static struct ts_pred_input input(struct ts_pred_cache *cache)
{
    return (struct ts_pred_input){
        .identity = json_object_get(env, "identity"),
        .claims = json_object_get(env, "claims"),
        .resource = json_object_get(env, "resource"),
        .old_doc = json_object_get(env, "old"),
        .new_doc = json_object_get(env, "new"),
        .request = json_object_get(env, "request"),
        .now_s = 1700000000,
        .fetch = fetch,
        .fetch_cls = env,
        .cache = cache,
    };
}

static int setup(void **state)
{
    (void)state;
    env = json_loads(env_text, 0, NULL);
    return env ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    json_decref(env);
    return 0;
}

/* Compiles (which must succeed) and evaluates; the rc, and *r when TS_OK. */
static enum ts_rc run_with(const char *text, const struct ts_pred_limits *lim,
                           struct ts_pred_input *in, bool *r, struct ts_pred_trace *tr)
{
    struct ts_pred *p = NULL;
    struct ts_pred_error err;
    enum ts_rc rc = ts_pred_compile(text, lim, &p, &err);
    if (rc != TS_OK)
        fail_msg("compile of %s failed: %u:%u %s", text, err.line, err.column, err.message);
    struct ts_arena a;
    ts_arena_init(&a, 1024);
    rc = ts_pred_eval(p, in, &a, r, tr);
    ts_arena_free(&a);
    ts_pred_free(p);
    return rc;
}

static enum ts_rc run(const char *text, bool *r)
{
    struct ts_pred_input in = input(NULL);
    return run_with(text, NULL, &in, r, NULL);
}

#define IS(text, want)                                                                             \
    do {                                                                                           \
        bool r_ = !(want);                                                                         \
        enum ts_rc rc_ = run((text), &r_);                                                         \
        if (rc_ != TS_OK)                                                                          \
            fail_msg("%s: %s", (text), ts_rc_name(rc_));                                           \
        if (r_ != (want))                                                                          \
            fail_msg("%s: expected %s", (text), (want) ? "true" : "false");                        \
    } while (0)
#define T(text) IS(text, true)
#define F(text) IS(text, false)

/* Compiles but fails at evaluation with rc (a denial). */
static void deny_rc(const char *text, enum ts_rc want)
{
    bool r = true;
    struct ts_pred_trace tr;
    struct ts_pred_input in = input(NULL);
    enum ts_rc rc = run_with(text, NULL, &in, &r, &tr);
    if (rc != want)
        fail_msg("%s: got %s, expected %s", text, ts_rc_name(rc), ts_rc_name(want));
    assert_int_equal(tr.rc, want);
    assert_true(tr.reason[0] != '\0');
    assert_true(tr.line >= 1 && tr.column >= 1);
}

#define DENY(text) deny_rc((text), TS_E_INVALID)

/* Refused at compile time at line:col, with message containing what. */
static void bad(const char *text, uint32_t line, uint32_t col, const char *what)
{
    struct ts_pred *p = (struct ts_pred *)(uintptr_t)1;
    struct ts_pred_error err;
    enum ts_rc rc = ts_pred_compile(text, NULL, &p, &err);
    if (rc != TS_E_PARSE)
        fail_msg("%s: compiled", text);
    assert_ptr_equal(p, (struct ts_pred *)(uintptr_t)1); /* untouched */
    if (err.line != line || err.column != col || !strstr(err.message, what))
        fail_msg("%s: got %u:%u \"%s\", expected %u:%u \"%s\"", text, err.line, err.column,
                 err.message, line, col, what);
}

/* ---- tests ---- */

static void test_literals_and_equality(void **state)
{
    (void)state;
    T("true");
    F("false");
    T("!false");
    T("1 == 1");
    T("1 == 1.0");
    T("2.5 != 2");
    T("-3 == 0 - 3");
    T("-2.5 < -2");
    T("\"a\" == \"a\"");
    T("\"a\" != \"b\"");
    T("null == null");
    F("null != null");
    T("true == true && false != true");
    T("\"\\u00e9\" == \"é\"");
    T("\"\\ud83d\\ude00\" == \"😀\"");
    T("\"tab\\there\" != \"tab here\"");
    T("1e3 == 1000");
    T("9223372036854775807 > 0");
    T("-9223372036854775807 - 1 < 0");
}

static void test_precedence(void **state)
{
    (void)state;
    /* && binds tighter than ||. */
    T("true || false && false");
    F("(true || false) && false");
    T("false && false || true");
    /* ! binds tightest; comparisons bind tighter than && and ||. */
    F("!true && true");
    T("!(true && false)");
    T("!false == true");
    T("1 + 2 == 3 && 5 - 1 - 1 == 3");
    T("(1 < 2) == true");
    bad("1 < 2 == true", 1, 7, "do not chain");
    T("\"a\" + \"b\" + \"c\" == \"abc\"");
    bad("1 < 2 < 3", 1, 7, "do not chain");
    bad("a == 1 == 2", 1, 1, "unknown name 'a'");
}

static void test_short_circuit(void **state)
{
    (void)state;
    /* The right side would be an error (ordering with a missing path), but never runs. */
    T("true || resource.data.missing < 3");
    F("false && resource.data.missing < 3");
    DENY("true && resource.data.missing < 3");
    fetch_calls = 0;
    F("false && exists(\"a\", \"1\")");
    assert_int_equal(fetch_calls, 0);
}

static void test_ordering(void **state)
{
    (void)state;
    T("1 < 2 && 2 <= 2 && 3 > 2 && 3 >= 3");
    F("2 < 1 || 2 <= 1 || 1 > 2 || 1 >= 2");
    T("1 < 1.5 && 1.5 < 2 && 2.0 >= 2");
    T("\"abc\" < \"abd\" && \"ab\" < \"abc\" && \"b\" > \"abc\"");
    T("\"é\" > \"z\""); /* UTF-8 byte order is code point order */
    T("identity.age >= 18 && identity.score > 2 && identity.score < identity.age");
    T("now < claims.exp");
    T("claims.exp - now == 100");
}

static void test_paths(void **state)
{
    (void)state;
    T("resource.data.owner == identity.id");
    T("resource.data.owner == identity.id && new.data.owner != old.data.owner");
    T("request.headers[\"x-tenant\"] == \"acme\"");
    T("request[\"method\"] == \"PUT\"");
    T("resource.data.n[1] == 20");
    T("resource.data.n[5] == null");
    T("identity.teams[0] == \"t1\"");
    T("[\"x\", \"y\"][1] == \"y\"");
    T("claims.roles.admin");
    T("identity.active == true && !!identity.active");
    /* A root given as NULL is missing; every path under it is too. */
    struct ts_pred_input in = input(NULL);
    in.resource = NULL;
    bool r = false;
    assert_int_equal(run_with("resource.data.owner == null", NULL, &in, &r, NULL), TS_OK);
    assert_true(r);
    bad("resource.", 1, 10, "expected a name");
    bad("resource.data[x]", 1, 15, "inside '[ ]'");
    bad("\"s\".x == 1", 1, 1, "only objects and lists have members");
    bad("now.x == 1", 1, 1, "only objects and lists have members");
    /* A member of a string is a runtime error. */
    DENY("resource.data.owner.id == \"u1\"");
    DENY("resource.data.n.x == 1");
    DENY("resource.data.owner[0] == \"u\"");
}

static void test_null_and_missing(void **state)
{
    (void)state;
    /* A missing path equals only the literal null: two missing paths are not equal, so an
     * owner rule never allows a caller without an identity on a document without an owner. */
    T("resource.data.missing == null");
    T("null == resource.data.missing");
    F("resource.data.missing == \"u1\"");
    T("resource.data.missing != \"u1\"");
    T("identity.nothing == null");
    F("identity.nothing == resource.data.missing");
    T("identity.nothing == identity.nothing");
    T("identity.nothing != resource.data.missing");
    /* nor in `in` and contains(): a missing value is never a member, a missing element never
     * matches (identity.nothing is a stored null) */
    DENY("resource.data.missing in [identity.missing]");
    DENY("resource.data.missing in [\"x\", null]");
    DENY("!(resource.data.missing in [\"banned\"])");
    DENY("contains([identity.missing], resource.data.missing)");
    F("identity.nothing in [identity.missing]");
    T("identity.nothing in [null]");
    F("identity.id == null");
    /* Everything else given null or missing is an error (deny). */
    DENY("resource.data.missing < 3");
    DENY("identity.nothing >= 0");
    DENY("resource.data.missing");
    DENY("!resource.data.missing");
    DENY("resource.data.missing && true");
    DENY("resource.data.missing + 1 == 2");
    DENY("\"u1\" in resource.data.missing");
    DENY("startsWith(resource.data.missing, \"a\")");
    DENY("size(resource.data.missing) == 0");
    DENY("lower(identity.nothing) == \"\"");
    bad("null < 1", 1, 1, "ordering needs numbers or strings");
    bad("!null", 1, 2, "'!' needs a bool");
}

static void test_runtime_type_errors(void **state)
{
    (void)state;
    DENY("identity.id == identity.age");
    DENY("identity.id < identity.age");
    DENY("identity.active == 1");
    DENY("identity.teams == identity.teams");
    DENY("resource.data == old.data");
    DENY("identity.id + identity.age == \"\"");
    DENY("identity.id - 1 == 0");
    DENY("-identity.id == 0");
    DENY("identity.age && true");
    DENY("identity.id"); /* a predicate must give a bool */
    DENY("9223372036854775807 + identity.age > 0");
    DENY("-9223372036854775807 - 2 - identity.age < 0");
    DENY("1.7e308 + 1.7e308 > identity.score");
    DENY("identity.age in identity");
}

static void test_compile_type_errors(void **state)
{
    (void)state;
    bad("\"a\" < 3", 1, 5, "cannot order string against number");
    bad("\"a\" == 3", 1, 5, "cannot compare string with number");
    bad("true == 1", 1, 6, "cannot compare");
    bad("size(3) == 1", 1, 6, "size() needs a string, list or object");
    bad("startsWith(1, \"a\")", 1, 12, "needs a string");
    bad("startsWith(\"a\", 1)", 1, 17, "needs a string");
    bad("endsWith(resource.id, true)", 1, 23, "needs a string");
    bad("contains(1, 2)", 1, 10, "contains() needs a string or a list");
    bad("contains(\"abc\", 1)", 1, 17, "contains() on a string needs a string");
    bad("lower(1) == \"\"", 1, 7, "lower() needs a string");
    bad("frob(1)", 1, 1, "unknown function 'frob'");
    bad("user.id == 1", 1, 1, "unknown name 'user'");
    bad("size(\"a\", \"b\") == 1", 1, 1, "size() takes 1 argument");
    bad("startsWith(\"a\")", 1, 1, "startsWith() takes 2 arguments");
    bad("lookup(\"a\", \"b\", \"c\", \"d\")", 1, 1, "lookup() takes 3 arguments");
    bad("has(\"x\")", 1, 5, "has() needs a path");
    bad("has(identity)", 1, 5, "has() needs a path");
    bad("get(\"a\", 1) == null", 1, 10, "fetch arguments must be strings");
    bad("1 + \"a\" == 1", 1, 3, "cannot add");
    bad("\"a\" - \"b\" == 1", 1, 1, "'-' needs numbers");
    bad("-\"a\" == 1", 1, 2, "'-' needs a number");
    bad("1 && true", 1, 1, "'&&' needs bools");
    bad("true || \"x\"", 1, 9, "'||' needs bools");
    bad("1 in \"abc\"", 1, 6, "'in' needs a list or an object");
    bad("1 in identity", 1, 1, "'in' an object needs a string key");
    bad("[1] == [1]", 1, 5, "lists and objects cannot be compared");
    bad("size(\"a\")", 1, 1, "a predicate must be a bool");
    bad("\"x\"", 1, 1, "a predicate must be a bool");
    bad("lower(\"A\") < 1", 1, 12, "cannot order");
    bad("size(\"a\") == \"1\"", 1, 11, "cannot compare");
}

static void test_syntax_errors(void **state)
{
    (void)state;
    bad("", 1, 1, "unexpected end");
    bad("   ", 1, 4, "unexpected end");
    bad("true &&", 1, 8, "unexpected end");
    bad("(true", 1, 6, "expected ')'");
    bad("true)", 1, 5, "unexpected text after");
    bad("true & false", 1, 6, "unexpected character '&'");
    bad("a = b", 1, 3, "unexpected character '='");
    bad("1 = 1", 1, 3, "unexpected character '='");
    bad("\"abc", 1, 1, "unterminated string");
    bad("\"a\\qb\" == \"\"", 1, 3, "bad escape");
    bad("\"\\u12\" == \"\"", 1, 2, "bad \\u escape");
    bad("\"\\ud800\" == \"\"", 1, 2, "unpaired surrogate");
    bad("\"\\u0000\" == \"\"", 1, 2, "not allowed");
    bad("\"a\tb\" == \"\"", 1, 3, "control character");
    bad("01 == 1", 1, 1, "leading zero");
    bad("99999999999999999999 > 1", 1, 1, "integer out of range");
    bad("1e999 > 1", 1, 1, "number out of range");
    bad("12abc", 1, 1, "malformed number");
    bad("[1, 2", 1, 6, "expected ']'");
    bad("size([1,,2]) == 2", 1, 9, "expected a value");
    bad("true @", 1, 6, "unexpected character '@'");
    bad("true \x01", 1, 6, "unexpected byte 0x01");
    /* Lines and columns count from 1; comments and newlines are whitespace. */
    bad("true &&\n  // a comment\n  (1 < \"x\")", 3, 6, "cannot order");
    bad("true &&\n\n     frob()", 3, 6, "unknown function");
}

static void test_functions(void **state)
{
    (void)state;
    T("startsWith(request.path, \"/v1/\")");
    F("startsWith(request.path, \"/v2/\")");
    T("startsWith(\"abc\", \"\") && startsWith(\"abc\", \"abc\")");
    F("startsWith(\"ab\", \"abc\")");
    T("endsWith(request.path, \"/d1\")");
    F("endsWith(\"a\", \"ba\")");
    T("endsWith(resource.data.title, \"wörld\")");
    T("contains(request.path, \"docs\") && contains(\"abc\", \"\")");
    F("contains(request.path, \"nope\")");
    T("contains(identity.teams, \"t2\")");
    F("contains(identity.teams, \"t3\")");
    T("contains([1, \"x\", null], null) && contains([1, 2.0], 2)");
    T("contains(resource.data.tags, 3)");
    T("lower(identity.email) == \"ada@example.com\"");
    T("lower(\"already lower\") == \"already lower\"");
    T("lower(\"ÉA\") == \"Éa\""); /* ASCII only: É is kept */
    T("size(\"abc\") == 3 && size(\"\") == 0");
    T("size(resource.data.title) == 11"); /* code points, not bytes */
    T("size(resource.data.emoji) == 2");
    T("size(identity.teams) == 2 && size([]) == 0 && size([1, [2, 3]]) == 2");
    T("size(claims.roles) == 1 && size(identity) == 7");
    T("has(resource.data.owner) && !has(resource.data.nope)");
    T("has(identity.nothing)"); /* present, though null */
    F("has(resource.nope.deeper)");
    T("has(resource.data.n[1]) && !has(resource.data.n[2])");
    T("has(request.headers[\"x-tenant\"])");
    DENY("has(resource.data.owner.x)");
    DENY("contains(identity.age, 1)");
    DENY("contains(\"abc\", identity.age)");
    DENY("endsWith(identity.age, \"1\")");
}

static void test_in(void **state)
{
    (void)state;
    T("\"t1\" in identity.teams");
    F("\"t9\" in identity.teams");
    T("identity.id in [\"u0\", \"u1\"]");
    T("2 in [1, 2.0, 3]");
    F("\"2\" in [1, 2, 3]"); /* different kinds are unequal inside a list, not an error */
    T("null in [1, null]");
    F("null in [1, 2]");
    T("\"admin\" in claims.roles"); /* a key of an object */
    F("\"root\" in claims.roles");
    T("\"x-tenant\" in request.headers");
    T("3 in resource.data.tags");
    T("resource.data.owner in [identity.id, \"other\"]");
    F("\"a\" in []");
    DENY("identity.age in claims.roles");
    DENY("\"a\" in resource.data.owner"); /* not substring: contains() is for that */
}

static void test_arithmetic(void **state)
{
    (void)state;
    T("1 + 2 == 3");
    T("1 + 2.5 == 3.5");
    T("10 - 2.5 == 7.5");
    T("identity.age + 1 == 37");
    T("\"ab\" + \"cd\" == \"abcd\"");
    T("identity.id + \"-\" + resource.id == \"u1-d1\"");
    T("size(identity.id + resource.data.title) == 13");
    T("now + 60 > claims.exp - 100");
    T("-identity.age == -36 && -identity.score < 0");
    DENY("9223372036854775807 + identity.age > 0");
}

static void test_fetches(void **state)
{
    (void)state;
    fetch_calls = 0;
    fetch_rc = TS_OK;
    T("exists(\"teams\", \"t1\") && !exists(\"teams\", \"t9\")");
    assert_int_equal(fetch_calls, 2);
    T("identity.id in get(\"teams\", identity.teams[0]).data.members");
    F("identity.id in get(\"teams\", \"t2\").data.members");
    T("get(\"teams\", \"t9\") == null");
    T("get(\"teams\", \"t9\").data.members == null"); /* a missing document is null */
    T("lookup(\"users\", \"email\", \"ada\").data.admin");
    T("lookup(\"users\", \"email\", \"bob\") == null");

    /* Repeats of the same (kind, arguments) are cached and do not count again. */
    struct ts_pred_trace tr;
    struct ts_pred_input in = input(NULL);
    bool r = false;
    fetch_calls = 0;
    assert_int_equal(
        run_with("get(\"a\", \"1\") != null && get(\"a\", \"1\") != null && "
                 "get(\"a\", \"1\") != null && exists(\"a\", \"2\") && "
                 "exists(\"a\", \"2\") && exists(\"a\", \"3\") && exists(\"a\", \"4\")",
                 NULL, &in, &r, &tr),
        TS_OK);
    assert_true(r);
    assert_int_equal(fetch_calls, 4);
    assert_int_equal(tr.fetches, 4);

    /* A fifth distinct fetch is over the default limit: the evaluation fails (deny). */
    fetch_calls = 0;
    assert_int_equal(run_with("exists(\"a\", \"1\") && exists(\"a\", \"2\") && exists(\"a\", "
                              "\"3\") && exists(\"a\", \"4\") && exists(\"a\", \"5\")",
                              NULL, &in, &r, &tr),
                     TS_E_TOO_BIG);
    assert_int_equal(fetch_calls, 4);
    assert_non_null(strstr(tr.reason, "fetch limit (4)"));
    assert_int_equal(tr.line, 1);
    assert_int_equal(tr.column, 81);

    /* A configured limit; get and exists of the same document are distinct fetches. */
    struct ts_pred_limits lim = {.max_fetches = 1};
    assert_int_equal(run_with("exists(\"a\", \"1\") && exists(\"a\", \"1\")", &lim, &in, &r, NULL),
                     TS_OK);
    assert_int_equal(
        run_with("exists(\"a\", \"1\") && get(\"a\", \"1\") != null", &lim, &in, &r, NULL),
        TS_E_TOO_BIG);

    /* A shared cache spans the predicates of one decision: hits are free, the budget is
     * shared. */
    struct ts_arena a;
    struct ts_pred_cache cache;
    struct ts_pred *p1, *p2;
    ts_arena_init(&a, 1024);
    ts_pred_cache_init(&cache);
    in = input(&cache);
    assert_int_equal(
        ts_pred_compile("exists(\"a\", \"1\") && exists(\"a\", \"2\")", &lim, &p1, NULL), TS_OK);
    assert_int_equal(ts_pred_compile("exists(\"a\", \"1\")", &lim, &p2, NULL), TS_OK);
    fetch_calls = 0;
    assert_int_equal(ts_pred_eval(p2, &in, &a, &r, NULL), TS_OK);
    assert_int_equal(ts_pred_eval(p2, &in, &a, &r, NULL), TS_OK);
    assert_int_equal(fetch_calls, 1);
    assert_int_equal(ts_pred_eval(p1, &in, &a, &r, NULL), TS_E_TOO_BIG);
    assert_int_equal(cache.fetches, 1);
    ts_pred_free(p1);
    ts_pred_free(p2);
    ts_arena_free(&a);

    /* A failing store fails the evaluation with its code; no callback is "unavailable". */
    fetch_rc = TS_E_STORE;
    deny_rc("exists(\"a\", \"1\")", TS_E_STORE);
    fetch_rc = TS_E_NOT_FOUND;
    F("exists(\"a\", \"1\")");
    fetch_rc = TS_OK;
    in = input(NULL);
    in.fetch = NULL;
    assert_int_equal(run_with("exists(\"a\", \"1\")", NULL, &in, &r, NULL), TS_E_UNAVAILABLE);
    /* Fetch arguments computed at runtime must be strings. */
    DENY("exists(\"a\", resource.data.n[0] + \"\")");
    DENY("get(\"teams\", identity.age) == null");
}

static void test_limits(void **state)
{
    (void)state;
    struct ts_pred *p = NULL;
    struct ts_pred_error err;
    char buf[8192];

    /* Source size: 4096 bytes compile, 4097 do not. */
    memset(buf, ' ', 4096);
    memcpy(buf + 4092, "true", 4);
    buf[4096] = '\0';
    assert_int_equal(ts_pred_compile(buf, NULL, &p, &err), TS_OK);
    ts_pred_free(p);
    buf[4096] = ' ';
    buf[4097] = '\0';
    bad(buf, 1, 1, "longer than 4096 bytes");
    struct ts_pred_limits small = {.max_source = 10};
    assert_int_equal(ts_pred_compile("1 == 1.0000", &small, &p, &err), TS_E_PARSE);

    /* Depth: 32 nested parentheses around a negation chain are refused past the limit. */
    struct ts_pred_limits lim = {.max_depth = 8};
    assert_int_equal(ts_pred_compile("!!!!!!!true", &lim, &p, &err), TS_OK); /* depth 8 */
    ts_pred_free(p);
    assert_int_equal(ts_pred_compile("!!!!!!!!true", &lim, &p, &err), TS_E_PARSE);
    assert_non_null(strstr(err.message, "nesting deeper than 8"));
    size_t n = 0;
    for (int i = 0; i < 40; i++)
        buf[n++] = '(';
    memcpy(buf + n, "true", 4);
    n += 4;
    for (int i = 0; i < 40; i++)
        buf[n++] = ')';
    buf[n] = '\0';
    bad(buf, 1, 33, "nesting deeper than 32");
    /* A long left-leaning chain is deep too. */
    n = 0;
    for (int i = 0; i < 33; i++)
        n += (size_t)snprintf(buf + n, sizeof buf - n, "%strue", i ? " && " : "");
    assert_int_equal(ts_pred_compile(buf, NULL, &p, &err), TS_E_PARSE);
    assert_non_null(strstr(err.message, "nesting deeper than 32"));
    buf[n - 8] = '\0'; /* 32 operands: depth 32 */
    assert_int_equal(ts_pred_compile(buf, NULL, &p, &err), TS_OK);
    ts_pred_free(p);

    /* Nodes: a list of 20 elements is 21 nodes, plus 2 for "x in". */
    struct ts_pred_limits nl = {.max_nodes = 23};
    n = (size_t)snprintf(buf, sizeof buf, "1 in [");
    for (int i = 0; i < 20; i++)
        n += (size_t)snprintf(buf + n, sizeof buf - n, "%s%d", i ? "," : "", i);
    snprintf(buf + n, sizeof buf - n, "]");
    assert_int_equal(ts_pred_compile(buf, &nl, &p, &err), TS_OK);
    ts_pred_free(p);
    nl.max_nodes = 22;
    assert_int_equal(ts_pred_compile(buf, &nl, &p, &err), TS_E_PARSE);
    assert_non_null(strstr(err.message, "more than 22 nodes"));

    /* Defaults and clamping. */
    struct ts_pred_limits huge = {.max_depth = 100000, .max_fetches = 100000};
    assert_int_equal(ts_pred_compile("true", &huge, &p, &err), TS_OK);
    assert_int_equal(ts_pred_limits_of(p)->max_depth, TS_PRED_HARD_DEPTH);
    assert_int_equal(ts_pred_limits_of(p)->max_fetches, TS_PRED_HARD_FETCHES);
    assert_int_equal(ts_pred_limits_of(p)->max_nodes, TS_PRED_DEFAULT_NODES);
    assert_int_equal(ts_pred_limits_of(p)->max_source, TS_PRED_DEFAULT_SOURCE);
    ts_pred_free(p);
    assert_int_equal(ts_pred_compile(NULL, NULL, &p, &err), TS_E_PARSE);
}

static void test_trace(void **state)
{
    (void)state;
    struct ts_pred_input in = input(NULL);
    struct ts_pred_trace tr;
    bool r = true;
    assert_int_equal(run_with("true &&\n  identity.id < 3 + identity.age", NULL, &in, &r, &tr),
                     TS_E_INVALID);
    assert_true(r); /* untouched */
    assert_int_equal(tr.line, 2);
    assert_int_equal(tr.column, 15);
    assert_string_equal(tr.reason, "'<' of string and number");
    assert_int_equal(run_with("true", NULL, &in, &r, &tr), TS_OK);
    assert_int_equal(tr.rc, TS_OK);
    assert_int_equal(tr.line, 0);
    assert_string_equal(tr.reason, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_literals_and_equality),
        cmocka_unit_test(test_precedence),
        cmocka_unit_test(test_short_circuit),
        cmocka_unit_test(test_ordering),
        cmocka_unit_test(test_paths),
        cmocka_unit_test(test_null_and_missing),
        cmocka_unit_test(test_runtime_type_errors),
        cmocka_unit_test(test_compile_type_errors),
        cmocka_unit_test(test_syntax_errors),
        cmocka_unit_test(test_functions),
        cmocka_unit_test(test_in),
        cmocka_unit_test(test_arithmetic),
        cmocka_unit_test(test_fetches),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_trace),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

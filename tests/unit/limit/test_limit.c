/*
 * test_limit.c - src/limit: rate knobs, the client address, per-node budgets, and buckets and
 * lockout over a real SQLite store (times are passed in, so windows are exact).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/config.h"
#include "limit/limit.h"
#include "store/store.h"

#define SEC INT64_C(1000000)
#define T0 (INT64_C(1800000000) * SEC)

struct fix {
    char dir[64];
    struct ts_config cfg;
    struct ts_store *st;
};

static int setup(void **state)
{
    struct fix *f = calloc(1, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/tessera-limit-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    char url[128];
    snprintf(url, sizeof(url), "sqlite://%s/t.db", f->dir);
    char *err = NULL;
    if (ts_store_open(url, NULL, &f->st, &err) != TS_OK || ts_store_migrate(f->st, NULL, &err))
        return -1;
    ts_config_defaults(&f->cfg);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fix *f = *state;
    ts_store_close(f->st);
    ts_config_free(&f->cfg);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
    if (system(cmd) != 0)
        return -1;
    free(f);
    return 0;
}

static struct ts_limiter *limiter(struct fix *f)
{
    struct ts_limiter *l = NULL;
    char *err = NULL;
    assert_int_equal(ts_limiter_new(&f->cfg, f->st, &l, &err), TS_OK);
    return l;
}

static void set(struct fix *f, const char *name, const char *value)
{
    char *err = NULL;
    enum ts_rc rc = ts_config_set(&f->cfg, name, value, &err);
    if (rc)
        fail_msg("%s=%s: %s", name, value, err);
}

static void test_rate_knobs(void **state)
{
    struct fix *f = *state;
    const struct ts_rate *r = &f->cfg.rate_limit_token;
    assert_int_equal(r->count, 150);
    assert_int_equal(r->period_s, 300);
    assert_int_equal(r->burst, 30);
    set(f, "RATE_LIMIT_TOKEN_REFRESH", "1000"); /* GoTrue's bare count keeps period and burst */
    assert_int_equal(r->count, 1000);
    assert_int_equal(r->period_s, 300);
    assert_int_equal(r->burst, 30);
    set(f, "RATE_LIMIT_TOKEN_REFRESH", "10"); /* a burst above the count is capped */
    assert_int_equal(r->burst, 10);
    set(f, "RATE_LIMIT_TOKEN_REFRESH", "5/1h,2");
    assert_int_equal(r->count, 5);
    assert_int_equal(r->period_s, 3600);
    assert_int_equal(r->burst, 2);
    set(f, "RATE_LIMIT_TOKEN_REFRESH", "0");
    assert_int_equal(r->count, 0);
    static const char *const bad[] = {"",      "x",        "-1",         "5/0s",
                                      "5/1ms", "5,3",      "5/1h,0",     "5/1h,x",
                                      "5/31d", "5/1h,2,3", "1000000001", "1/30d,1000000"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *err = NULL;
        assert_int_equal(ts_config_set(&f->cfg, "RATE_LIMIT_TOKEN_REFRESH", bad[i], &err),
                         TS_E_INVALID);
        assert_non_null(err);
        free(err);
    }
    assert_int_equal(r->count, 0); /* a refused value changes nothing */
}

static void test_client_address(void **state)
{
    struct fix *f = *state;
    struct ts_limiter *l = limiter(f);
    char out[TS_LIMIT_ADDR_MAX];
    assert_false(ts_limit_client(l, "127.0.0.1", NULL, out)); /* loopback: exempt */
    assert_false(ts_limit_client(l, "127.9.9.9", NULL, out));
    assert_false(ts_limit_client(l, "::1", NULL, out));
    assert_false(ts_limit_client(l, "::ffff:127.0.0.1", NULL, out)); /* mapped counts as v4 */
    assert_true(ts_limit_client(l, "198.51.100.7", NULL, out));
    assert_string_equal(out, "198.51.100.7");
    assert_true(ts_limit_client(l, "::ffff:198.51.100.7", NULL, out));
    assert_string_equal(out, "198.51.100.7");
    assert_true(ts_limit_client(l, "2001:db8:1:2:3:4:5:6", NULL, out));
    assert_string_equal(out, "2001:db8:1:2::/64");
    /* the header's last entry is the client; a loopback peer (the proxy) no longer matters */
    assert_true(ts_limit_client(l, "127.0.0.1", "10.1.1.1, 203.0.113.9", out));
    assert_string_equal(out, "203.0.113.9");
    assert_true(ts_limit_client(l, "127.0.0.1", " 203.0.113.10 ", out));
    assert_string_equal(out, "203.0.113.10");
    /* read from the right past our own (exempt) proxies; all-exempt chains are exempt */
    assert_true(ts_limit_client(l, "198.51.100.7", "6.6.6.6, 203.0.113.9, 127.0.0.1", out));
    assert_string_equal(out, "203.0.113.9");
    assert_false(ts_limit_client(l, "198.51.100.7", "127.0.0.2, 127.0.0.1", out));
    /* ports and brackets, as proxies write them */
    assert_true(ts_limit_client(l, "127.0.0.1", "203.0.113.11:5678", out));
    assert_string_equal(out, "203.0.113.11");
    assert_true(ts_limit_client(l, "127.0.0.1", "[2001:db8:9::1]:443", out));
    assert_string_equal(out, "2001:db8:9::/64");
    assert_true(ts_limit_client(l, "127.0.0.1", "x, [2001:db8:9::2]", out));
    assert_string_equal(out, "2001:db8:9::/64");
    assert_true(ts_limit_client(l, "127.0.0.1", "::ffff:203.0.113.12", out));
    assert_string_equal(out, "203.0.113.12");
    /* an unparsable entry stops the walk: nothing left of it is believed */
    assert_true(ts_limit_client(l, "127.0.0.1", "203.0.113.9, not-an-address", out));
    assert_string_equal(out, "unparsable");
    assert_true(ts_limit_client(l, "127.0.0.1", "203.0.113.9, unknown, 127.0.0.1", out));
    assert_string_equal(out, "unparsable");
    assert_true(ts_limit_client(l, "127.0.0.1", "[2001:db8::1", out));
    assert_string_equal(out, "unparsable");
    assert_true(ts_limit_client(l, "127.0.0.1", "", out));
    assert_string_equal(out, "unparsable");
    ts_limiter_free(l);

    set(f, "RATE_LIMIT_EXEMPT", "10.0.0.0/8, 2001:db8::/32");
    l = limiter(f);
    assert_true(ts_limit_client(l, "127.0.0.1", NULL, out)); /* no longer exempt */
    assert_false(ts_limit_client(l, "10.200.3.4", NULL, out));
    assert_true(ts_limit_client(l, "11.0.0.1", NULL, out));
    assert_false(ts_limit_client(l, "2001:db8:ffff::1", NULL, out));
    assert_true(ts_limit_client(l, "2001:db9::1", NULL, out));
    ts_limiter_free(l);

    static const char *const bad[] = {"10.0.0.0/33", "nonsense", "::1/129", "1.2.3.4/x"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        set(f, "RATE_LIMIT_EXEMPT", bad[i]);
        char *err = NULL;
        l = NULL;
        assert_int_equal(ts_limiter_new(&f->cfg, f->st, &l, &err), TS_E_INVALID);
        assert_null(l);
        assert_non_null(strstr(err, "RATE_LIMIT_EXEMPT"));
        free(err);
    }
}

static void test_bucket(void **state)
{
    struct fix *f = *state;
    set(f, "RATE_LIMIT_OTP", "6/1m,3"); /* burst 3, one back every 10 s */
    struct ts_limiter *l = limiter(f);
    struct ts_limit_verdict v;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(ts_limit_take(l, TS_LIMIT_OTP, "198.51.100.7", T0, &v), TS_OK);
        assert_true(v.allowed);
    }
    assert_int_equal(ts_limit_take(l, TS_LIMIT_OTP, "198.51.100.7", T0, &v), TS_OK);
    assert_false(v.allowed);
    assert_int_equal(v.retry_after_s, 10);
    /* other subjects and classes have their own buckets */
    assert_int_equal(ts_limit_take(l, TS_LIMIT_OTP, "198.51.100.8", T0, &v), TS_OK);
    assert_true(v.allowed);
    assert_int_equal(ts_limit_take(l, TS_LIMIT_TOKEN, "198.51.100.7", T0, &v), TS_OK);
    assert_true(v.allowed);
    assert_int_equal(ts_limit_take(l, TS_LIMIT_OTP, "198.51.100.7", T0 + 9 * SEC, &v), TS_OK);
    assert_false(v.allowed);
    assert_int_equal(v.retry_after_s, 1);
    assert_int_equal(ts_limit_take(l, TS_LIMIT_OTP, "198.51.100.7", T0 + 10 * SEC, &v), TS_OK);
    assert_true(v.allowed);
    /* a long subject keeps a distinct bucket (prefix + digest) */
    char longer[400];
    memset(longer, 'a', sizeof(longer) - 1);
    longer[sizeof(longer) - 1] = '\0';
    for (int i = 0; i < 3; i++) {
        assert_int_equal(ts_limit_take(l, TS_LIMIT_OTP, longer, T0, &v), TS_OK);
        assert_true(v.allowed);
    }
    assert_int_equal(ts_limit_take(l, TS_LIMIT_OTP, longer, T0, &v), TS_OK);
    assert_false(v.allowed);
    longer[300] = 'b';
    assert_int_equal(ts_limit_take(l, TS_LIMIT_OTP, longer, T0, &v), TS_OK);
    assert_true(v.allowed);
    /* off: always allowed */
    set(f, "RATE_LIMIT_OTP", "0");
    ts_limiter_free(l);
    l = limiter(f);
    for (int i = 0; i < 10; i++) {
        assert_int_equal(ts_limit_take(l, TS_LIMIT_OTP, "198.51.100.7", T0, &v), TS_OK);
        assert_true(v.allowed);
    }
    ts_limiter_free(l);
}

/* n failed checks of account at now; asserts each was let through */
static void fail_n(struct ts_limiter *l, const char *account, int n, int64_t now)
{
    for (int i = 0; i < n; i++) {
        struct ts_lockout t;
        struct ts_limit_verdict v;
        assert_int_equal(ts_lockout_reserve(l, account, now, &t, &v), TS_OK);
        assert_true(v.allowed);
        ts_lockout_settle(l, &t, TS_LOCKOUT_FAILED, now);
    }
}

static bool locked(struct ts_limiter *l, const char *account, int64_t now, int64_t *retry)
{
    struct ts_lockout t;
    struct ts_limit_verdict v;
    assert_int_equal(ts_lockout_reserve(l, account, now, &t, &v), TS_OK);
    if (v.allowed)
        ts_lockout_settle(l, &t, TS_LOCKOUT_NOT_CHECKED, now);
    if (retry)
        *retry = v.retry_after_s;
    return !v.allowed;
}

static void test_lockout(void **state)
{
    struct fix *f = *state;
    set(f, "PASSWORD_LOCKOUT_ATTEMPTS", "3");
    set(f, "PASSWORD_LOCKOUT_WINDOW", "10m");
    set(f, "PASSWORD_LOCKOUT_MAX", "30m");
    struct ts_limiter *l = limiter(f);
    const char *acct = "user:6f1c3a52-0000-4000-8000-000000000001";
    int64_t retry = 0;

    /* a check that never ran gives its slot back; a success clears the failures */
    fail_n(l, acct, 2, T0);
    assert_false(locked(l, acct, T0, NULL)); /* NOT_CHECKED: still 2 */
    struct ts_lockout t;
    struct ts_limit_verdict v;
    assert_int_equal(ts_lockout_reserve(l, acct, T0, &t, &v), TS_OK);
    ts_lockout_settle(l, &t, TS_LOCKOUT_SUCCEEDED, T0);
    fail_n(l, acct, 3, T0 + SEC);

    /* locked until the window (from the first failure after the reset) ends */
    assert_true(locked(l, acct, T0 + 2 * SEC, &retry));
    assert_int_equal(retry, 599);
    assert_true(locked(l, acct, T0 + 600 * SEC, &retry));
    /* another account is not affected */
    assert_false(locked(l, "email:someone@example.com", T0 + 2 * SEC, NULL));
    /* the window is over (the probe opens the next one, and gives its slot back) */
    int64_t t2 = T0 + 601 * SEC;
    assert_false(locked(l, acct, t2, NULL));

    /* a second lockout in the day doubles the window: 20 min from its first failure */
    fail_n(l, acct, 3, t2);
    assert_true(locked(l, acct, t2 + SEC, &retry));
    assert_int_equal(retry, 1199);
    /* a third: 40 min, capped at PASSWORD_LOCKOUT_MAX (30 min) */
    int64_t t3 = t2 + 1200 * SEC;
    fail_n(l, acct, 3, t3);
    assert_true(locked(l, acct, t3, &retry));
    assert_int_equal(retry, 1800);
    ts_limiter_free(l);

    /* 0 attempts: no lockout at all */
    set(f, "PASSWORD_LOCKOUT_ATTEMPTS", "0");
    l = limiter(f);
    fail_n(l, "user:x", 50, T0);
    assert_false(locked(l, "user:x", T0, NULL));
    ts_limiter_free(l);
}

static void test_local_budgets(void **state)
{
    (void)state;
    struct ts_local_limits *b = ts_local_limits_new();
    struct ts_limit_verdict v;
    for (int i = 0; i < 3; i++) {
        ts_local_take(b, "people/ann", 3, T0, &v);
        assert_true(v.allowed);
    }
    ts_local_take(b, "people/ann", 3, T0, &v);
    assert_false(v.allowed);
    assert_int_equal(v.retry_after_s, 1);
    ts_local_take(b, "people/bob", 3, T0, &v); /* another subject */
    assert_true(v.allowed);
    ts_local_take(b, "people/ann", 3, T0 + 333334, &v); /* a third of a second: one back */
    assert_true(v.allowed);
    ts_local_take(b, "people/ann", 3, T0 + 333334, &v);
    assert_false(v.allowed);
    for (int i = 0; i < 100; i++) { /* 0: unlimited */
        ts_local_take(b, "people/cat", 0, T0, &v);
        assert_true(v.allowed);
    }
    /* a flood of subjects evicts (fullest first) but never fails or grows */
    char name[32];
    for (int i = 0; i < 100000; i++) {
        snprintf(name, sizeof(name), "flood/%d", i);
        ts_local_take(b, name, 10, T0 + 2 * SEC, &v);
        assert_true(v.allowed);
    }
    ts_local_limits_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_rate_knobs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_client_address, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bucket, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lockout, setup, teardown),
        cmocka_unit_test(test_local_budgets),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

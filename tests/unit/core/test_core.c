/*
 * test_core.c - unit tests of the core module: the arena, capped buffers, JSON escaping,
 * durations, number and boolean parsing, UUIDs, time formatting, result codes and the
 * configuration table with its file and environment loaders.
 *
 * Caps are tested at max and max+1 (STYLE.md §3). Configuration tests change the process
 * environment: every variable a test sets is unset again before it returns, and the group
 * setup removes any TESSERA_* or GOTRUE_* variable inherited from the caller, so the
 * results do not depend on the shell the tests run from.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "core/core.h"

/* ---- helpers ---- */

/* Removes every TESSERA_* and GOTRUE_* variable from the environment. */
static void scrub_env(void)
{
    char *names[256];
    size_t n = 0;
    for (char **e = environ; e && *e && n < TS_ARRAY_LEN(names); e++) {
        if (strncmp(*e, "TESSERA_", 8) != 0 && strncmp(*e, "GOTRUE_", 7) != 0)
            continue;
        const char *eq = strchr(*e, '=');
        if (eq)
            names[n++] = ts_xstrndup(*e, (size_t)(eq - *e));
    }
    for (size_t i = 0; i < n; i++) {
        unsetenv(names[i]);
        free(names[i]);
    }
}

static int group_setup(void **state)
{
    (void)state;
    scrub_env();
    return 0;
}

/* Writes text into a fresh temporary file; returns its heap path (the caller unlinks it). */
static char *temp_file(const char *text)
{
    char *path = ts_xstrdup("/tmp/tessera-test-config-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    size_t len = strlen(text);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    assert_int_equal(close(fd), 0);
    return path;
}

static void remove_temp_file(char *path)
{
    unlink(path);
    free(path);
}

/* ---- arena ---- */

static void test_arena_alignment(void **state)
{
    (void)state;
    struct ts_arena a;
    ts_arena_init(&a, 512);
    unsigned char *prev = NULL;
    size_t prev_n = 0;
    for (size_t n = 1; n <= 200; n++) {
        unsigned char *p = ts_arena_alloc(&a, n);
        assert_non_null(p);
        assert_int_equal((uintptr_t)p % _Alignof(max_align_t), 0);
        memset(p, (int)(n & 0xff), n);
        /* The previous allocation must not have been overwritten. */
        if (prev) {
            for (size_t i = 0; i < prev_n; i++)
                assert_int_equal(prev[i], (unsigned char)(prev_n & 0xff));
        }
        prev = p;
        prev_n = n;
    }
    /* Zero-byte allocations are aligned too and do not break what follows. */
    void *z = ts_arena_alloc(&a, 0);
    assert_non_null(z);
    assert_int_equal((uintptr_t)z % _Alignof(max_align_t), 0);
    long double *ld = ts_arena_alloc(&a, sizeof(long double) * 4);
    for (int i = 0; i < 4; i++)
        ld[i] = (long double)i / 3.0L;
    assert_true(ld[3] > 0.9L);
    ts_arena_free(&a);
}

static void test_arena_helpers(void **state)
{
    (void)state;
    struct ts_arena a;
    ts_arena_init(&a, 0); /* 0 picks the default block size */
    char *s = ts_arena_strdup(&a, "hello");
    assert_string_equal(s, "hello");
    char *t = ts_arena_strndup(&a, "hello world", 5);
    assert_string_equal(t, "hello");
    char *f = ts_arena_sprintf(&a, "%s-%d-%05.1f", "x", 42, 3.14159);
    assert_string_equal(f, "x-42-003.1");
    static const uint8_t bytes[] = {0, 1, 2, 0xff, 0};
    uint8_t *m = ts_arena_memdup(&a, bytes, sizeof(bytes));
    assert_memory_equal(m, bytes, sizeof(bytes));
    /* A long sprintf (beyond the block size) still works. */
    char big[10000];
    memset(big, 'q', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    char *g = ts_arena_sprintf(&a, "<%s>", big);
    assert_int_equal(strlen(g), sizeof(big) + 1);
    assert_int_equal(g[0], '<');
    assert_int_equal(g[sizeof(big)], '>');
    ts_arena_free(&a);
}

static void test_arena_calloc_zeroes_reused_memory(void **state)
{
    (void)state;
    struct ts_arena a;
    ts_arena_init(&a, 1024);
    unsigned char *p = ts_arena_alloc(&a, 512);
    memset(p, 0xa5, 512);
    ts_arena_reset(&a);
    unsigned char *q = ts_arena_calloc(&a, 512);
    for (size_t i = 0; i < 512; i++)
        assert_int_equal(q[i], 0);
    ts_arena_free(&a);
}

static void test_arena_big_allocations(void **state)
{
    (void)state;
    struct ts_arena a;
    ts_arena_init(&a, 256);
    char *small1 = ts_arena_strdup(&a, "before");
    size_t big_n = 100000;
    unsigned char *big = ts_arena_alloc(&a, big_n);
    assert_int_equal((uintptr_t)big % _Alignof(max_align_t), 0);
    memset(big, 0x5a, big_n); /* ASan reports it if the block is shorter */
    char *small2 = ts_arena_strdup(&a, "after");
    unsigned char *big2 = ts_arena_alloc(&a, 3 * big_n);
    memset(big2, 0x11, 3 * big_n);
    char *small3 = ts_arena_strdup(&a, "last");
    assert_string_equal(small1, "before");
    assert_string_equal(small2, "after");
    assert_string_equal(small3, "last");
    for (size_t i = 0; i < big_n; i++)
        assert_int_equal(big[i], 0x5a);
    assert_true(a.total >= 4 * big_n);
    ts_arena_free(&a);
    assert_int_equal(a.total, 0);
}

static void test_arena_reset_keeps_working(void **state)
{
    (void)state;
    struct ts_arena a;
    ts_arena_init(&a, 1024);
    for (int round = 0; round < 5; round++) {
        for (int i = 0; i < 100; i++) {
            char *s = ts_arena_sprintf(&a, "round %d item %d", round, i);
            assert_non_null(s);
        }
        assert_true(a.total > 1024); /* several blocks in use */
        ts_arena_reset(&a);
        /* mem.h: every block but the first is freed. */
        assert_int_equal(a.total, 1024);
        char *s = ts_arena_strdup(&a, "again");
        assert_string_equal(s, "again");
    }
    ts_arena_free(&a);
    /* The arena may be reused after init. */
    ts_arena_init(&a, 1024);
    assert_string_equal(ts_arena_strdup(&a, "reborn"), "reborn");
    ts_arena_free(&a);
}

/*
 * mem.h: reset "frees every block but the first (kept warm)". An oversized allocation is
 * linked behind the head; reset must still keep the first small block, not the big one.
 */
static void test_arena_reset_after_big_keeps_first_block(void **state)
{
    (void)state;
    struct ts_arena a;
    ts_arena_init(&a, 4096);
    (void)ts_arena_alloc(&a, 16);
    (void)ts_arena_alloc(&a, 1 << 20);
    ts_arena_reset(&a);
    assert_int_equal(a.total, 4096);
    assert_string_equal(ts_arena_strdup(&a, "x"), "x");
    ts_arena_free(&a);
}

struct defer_log {
    int order[16];
    int n;
};

struct defer_item {
    struct defer_log *log;
    int id;
};

static void record_defer(void *p)
{
    struct defer_item *it = p;
    assert_true(it->log->n < (int)TS_ARRAY_LEN(it->log->order));
    it->log->order[it->log->n++] = it->id;
}

static void test_arena_defer_order(void **state)
{
    (void)state;
    struct defer_log log = {.n = 0};
    struct defer_item items[6];
    for (int i = 0; i < 6; i++)
        items[i] = (struct defer_item){.log = &log, .id = i + 1};
    struct ts_arena a;
    ts_arena_init(&a, 64); /* small blocks: defer entries spread over several blocks */
    ts_arena_defer(&a, record_defer, &items[0]);
    (void)ts_arena_alloc(&a, 200);
    ts_arena_defer(&a, record_defer, &items[1]);
    (void)ts_arena_alloc(&a, 10);
    ts_arena_defer(&a, record_defer, &items[2]);
    assert_int_equal(log.n, 0);
    ts_arena_reset(&a);
    assert_int_equal(log.n, 3);
    assert_int_equal(log.order[0], 3);
    assert_int_equal(log.order[1], 2);
    assert_int_equal(log.order[2], 1);

    /* A second reset runs nothing again. */
    ts_arena_reset(&a);
    assert_int_equal(log.n, 3);

    ts_arena_defer(&a, record_defer, &items[3]);
    ts_arena_defer(&a, record_defer, &items[4]);
    (void)ts_arena_alloc(&a, 5000);
    ts_arena_defer(&a, record_defer, &items[5]);
    ts_arena_free(&a);
    assert_int_equal(log.n, 6);
    assert_int_equal(log.order[3], 6);
    assert_int_equal(log.order[4], 5);
    assert_int_equal(log.order[5], 4);
}

static void free_ptr(void *p)
{
    free(p);
}

static void test_arena_defer_frees_heap(void **state)
{
    (void)state;
    /* Under the sanitizer build a missed cleanup shows as a leak. */
    struct ts_arena a;
    ts_arena_init(&a, 128);
    for (int i = 0; i < 50; i++)
        ts_arena_defer(&a, free_ptr, ts_xasprintf("heap %d", i));
    ts_arena_reset(&a);
    for (int i = 0; i < 50; i++)
        ts_arena_defer(&a, free_ptr, ts_xmalloc(64));
    ts_arena_free(&a);
}

/* ---- capped buffer ---- */

static void test_buf_append_at_max(void **state)
{
    (void)state;
    struct ts_buf b;
    ts_buf_init(&b, 10);
    assert_null(b.data);
    assert_int_equal(ts_buf_append(&b, "01234", 5), TS_OK);
    assert_int_equal(ts_buf_append(&b, "56789", 5), TS_OK); /* exactly max */
    assert_int_equal(b.len, 10);
    assert_string_equal(b.data, "0123456789");
    assert_true(b.cap <= 11);
    assert_int_equal(ts_buf_append(&b, "", 0), TS_OK); /* nothing more is still fine */
    /* max + 1 */
    assert_int_equal(ts_buf_append(&b, "x", 1), TS_E_TOO_BIG);
    assert_int_equal(b.len, 10);
    assert_string_equal(b.data, "0123456789");
    assert_int_equal(ts_buf_append_str(&b, "y"), TS_E_TOO_BIG);
    assert_string_equal(b.data, "0123456789");
    ts_buf_free(&b);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
}

static void test_buf_single_append_over_max(void **state)
{
    (void)state;
    struct ts_buf b;
    ts_buf_init(&b, 10);
    assert_int_equal(ts_buf_append(&b, "0123456789A", 11), TS_E_TOO_BIG);
    assert_int_equal(b.len, 0);
    /* A huge length must not wrap around the cap check. */
    assert_int_equal(ts_buf_append(&b, "x", SIZE_MAX), TS_E_TOO_BIG);
    assert_int_equal(ts_buf_append(&b, "0123456789", 10), TS_OK);
    assert_int_equal(ts_buf_append(&b, "x", SIZE_MAX - 5), TS_E_TOO_BIG);
    assert_string_equal(b.data, "0123456789");
    ts_buf_free(&b);

    /* max 0: only empty appends succeed. */
    ts_buf_init(&b, 0);
    assert_int_equal(ts_buf_append(&b, "", 0), TS_OK);
    assert_string_equal(b.data, "");
    assert_int_equal(ts_buf_append(&b, "a", 1), TS_E_TOO_BIG);
    ts_buf_free(&b);
}

static void test_buf_growth_keeps_nul(void **state)
{
    (void)state;
    struct ts_buf b;
    ts_buf_init(&b, 100000);
    for (int i = 0; i < 5000; i++) {
        assert_int_equal(ts_buf_append(&b, "ab", 2), TS_OK);
        assert_int_equal(b.data[b.len], '\0');
        assert_true(b.len < b.cap);
    }
    assert_int_equal(b.len, 10000);
    assert_int_equal(b.data[9998], 'a');
    assert_int_equal(b.data[9999], 'b');
    ts_buf_clear(&b);
    assert_int_equal(b.len, 0);
    assert_string_equal(b.data, "");
    ts_buf_free(&b);
}

static void test_buf_appendf(void **state)
{
    (void)state;
    struct ts_buf b;
    ts_buf_init(&b, 1000);
    assert_int_equal(ts_buf_appendf(&b, "%d-%s-%c", 42, "x", 'z'), TS_OK);
    assert_string_equal(b.data, "42-x-z");
    /* Longer than the 256-byte fast path but within max. */
    char long_s[600];
    memset(long_s, 'L', sizeof(long_s) - 1);
    long_s[sizeof(long_s) - 1] = '\0';
    assert_int_equal(ts_buf_appendf(&b, "[%s]", long_s), TS_OK);
    assert_int_equal(b.len, 6 + 601);
    assert_int_equal(b.data[6], '[');
    assert_int_equal(b.data[b.len - 1], ']');
    /* Exactly up to max, then max + 1. */
    size_t room = 1000 - b.len;
    assert_int_equal(ts_buf_appendf(&b, "%.*s", (int)room, long_s), TS_OK);
    assert_int_equal(b.len, 1000);
    assert_int_equal(ts_buf_appendf(&b, "%s", "!"), TS_E_TOO_BIG);
    assert_int_equal(b.len, 1000);
    ts_buf_free(&b);

    ts_buf_init(&b, 300);
    assert_int_equal(ts_buf_appendf(&b, "%s", long_s), TS_E_TOO_BIG);
    assert_int_equal(b.len, 0);
    ts_buf_free(&b);
}

static void test_buf_take(void **state)
{
    (void)state;
    struct ts_buf b;
    ts_buf_init(&b, 100);
    size_t len = 99;
    char *empty = ts_buf_take(&b, &len);
    assert_non_null(empty);
    assert_string_equal(empty, "");
    assert_int_equal(len, 0);
    free(empty);

    assert_int_equal(ts_buf_append_str(&b, "taken"), TS_OK);
    char *p = ts_buf_take(&b, &len);
    assert_string_equal(p, "taken");
    assert_int_equal(len, 5);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    /* The buffer works again after a take, with the same cap. */
    assert_int_equal(ts_buf_append_str(&b, "again"), TS_OK);
    assert_string_equal(b.data, "again");
    free(p);
    ts_buf_free(&b);
}

/* Escapes s, parses the result back with jansson and compares with s. */
static void check_json_roundtrip(const char *s)
{
    struct ts_buf b;
    ts_buf_init(&b, 1 << 16);
    assert_int_equal(ts_buf_append(&b, "[\"", 2), TS_OK);
    assert_int_equal(ts_buf_append_json_escaped(&b, s), TS_OK);
    assert_int_equal(ts_buf_append(&b, "\"]", 2), TS_OK);
    /* RFC 8259 §7: no raw control characters inside a string. */
    for (size_t i = 0; i < b.len; i++)
        assert_true((unsigned char)b.data[i] >= 0x20);
    json_error_t err;
    json_t *j = json_loadb(b.data, b.len, 0, &err);
    if (!j)
        print_error("json: %s in %s\n", err.text, b.data);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_array_get(j, 0)), s);
    json_decref(j);
    ts_buf_free(&b);
}

static void test_buf_json_escape(void **state)
{
    (void)state;
    struct ts_buf b;
    ts_buf_init(&b, 1000);
    assert_int_equal(ts_buf_append_json_escaped(&b, "a\"b\\c\nd\re\tf"), TS_OK);
    assert_string_equal(b.data, "a\\\"b\\\\c\\nd\\re\\tf");
    ts_buf_clear(&b);
    assert_int_equal(ts_buf_append_json_escaped(&b, "\x01"), TS_OK);
    assert_int_equal(b.len, 6); /* \u0001: the only escape RFC 8259 §7 has for it */
    assert_memory_equal(b.data, "\\u000", 5);
    ts_buf_clear(&b);
    /* UTF-8 passes through unchanged: é, €, U+1F600. */
    const char *utf8 = "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80";
    assert_int_equal(ts_buf_append_json_escaped(&b, utf8), TS_OK);
    assert_string_equal(b.data, utf8);
    ts_buf_clear(&b);
    assert_int_equal(ts_buf_append_json_escaped(&b, ""), TS_OK);
    assert_int_equal(b.len, 0);
    assert_int_equal(ts_buf_append_json_escaped(&b, "plain"), TS_OK);
    assert_string_equal(b.data, "plain");
    ts_buf_free(&b);

    check_json_roundtrip("a\"b\\c\nd\re\tf");
    char ctl[32];
    for (int i = 1; i < 32; i++)
        ctl[i - 1] = (char)i;
    ctl[31] = '\0';
    check_json_roundtrip(ctl);
    check_json_roundtrip(utf8);
    check_json_roundtrip("\x7f/</script>");
}

static void test_buf_json_escape_respects_cap(void **state)
{
    (void)state;
    struct ts_buf b;
    /* Three quotes are three raw bytes but six escaped ones. */
    ts_buf_init(&b, 6);
    assert_int_equal(ts_buf_append_json_escaped(&b, "\"\"\""), TS_OK);
    assert_int_equal(b.len, 6);
    ts_buf_free(&b);
    ts_buf_init(&b, 5);
    assert_int_equal(ts_buf_append_json_escaped(&b, "\"\"\""), TS_E_TOO_BIG);
    assert_true(b.len <= 5);
    ts_buf_free(&b);
    ts_buf_init(&b, 5);
    assert_int_equal(ts_buf_append_json_escaped(&b, "\x01"), TS_E_TOO_BIG); /* \u0001 is 6 */
    ts_buf_free(&b);
}

/* ---- durations and numbers ---- */

static void test_duration_parse_ok(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        int64_t us;
    } cases[] = {
        {"10", 10000000},
        {"0", 0},
        {"10s", 10000000},
        {"1h30m", 5400000000},
        {"250ms", 250000},
        {"1m", 60000000},
        {"1m30s", 90000000},
        {"2h", 7200000000},
        {"1h1m1s1ms1us", 3661001001},
        {"15us", 15},
        {"0s", 0},
        {"9223372036854775807us", INT64_MAX},
        {"9223372036854s", INT64_C(9223372036854000000)},
        {"2562047788h", INT64_C(9223372036800000000)},
    };
    for (size_t i = 0; i < TS_ARRAY_LEN(cases); i++) {
        int64_t us = -1;
        if (ts_duration_parse(cases[i].in, &us) != TS_OK)
            fail_msg("ts_duration_parse(\"%s\") failed", cases[i].in);
        if (us != cases[i].us)
            fail_msg("ts_duration_parse(\"%s\") = %lld, want %lld", cases[i].in, (long long)us,
                     (long long)cases[i].us);
    }
}

static void test_duration_parse_bad(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "5x",
        "-1",
        "-1s",
        "s",
        "ms",
        "10 s",
        " 10",
        "10s ",
        "1h-30m",
        "1.5h",
        "10d",
        "0x10",
        "99999999999999999999",     /* overflows int64 as a number */
        "9223372036855",            /* seconds that overflow microseconds */
        "9223372036855s",           /* the same with a unit */
        "2562047789h",              /* hours that overflow */
        "9223372036854775807us1us", /* the sum overflows */
        "153722867280912931m",
    };
    for (size_t i = 0; i < TS_ARRAY_LEN(bad); i++) {
        int64_t us = 12345;
        if (ts_duration_parse(bad[i], &us) != TS_E_INVALID)
            fail_msg("ts_duration_parse(\"%s\") accepted (%lld)", bad[i], (long long)us);
        assert_int_equal(us, 12345); /* untouched on error */
    }
    int64_t us = 7;
    assert_int_equal(ts_duration_parse(NULL, &us), TS_E_INVALID);
    assert_int_equal(us, 7);
}

static void test_parse_i64(void **state)
{
    (void)state;
    int64_t v = 0;
    assert_int_equal(ts_parse_i64("42", 0, 100, &v), TS_OK);
    assert_int_equal(v, 42);
    assert_int_equal(ts_parse_i64("-42", -100, 100, &v), TS_OK);
    assert_int_equal(v, -42);
    assert_int_equal(ts_parse_i64("0", 0, 0, &v), TS_OK);
    assert_int_equal(v, 0);
    assert_int_equal(ts_parse_i64("100", 0, 100, &v), TS_OK); /* max inclusive */
    assert_int_equal(ts_parse_i64("6", 6, 72, &v), TS_OK);    /* min inclusive */
    assert_int_equal(ts_parse_i64("9223372036854775807", INT64_MIN, INT64_MAX, &v), TS_OK);
    assert_true(v == INT64_MAX);
    assert_int_equal(ts_parse_i64("-9223372036854775808", INT64_MIN, INT64_MAX, &v), TS_OK);
    assert_true(v == INT64_MIN);

    static const struct {
        const char *s;
        int64_t min, max;
    } bad[] = {
        {"", 0, 100},
        {" 1", 0, 100},
        {"1 ", 0, 100},
        {"\t1", 0, 100},
        {"1a", 0, 100},
        {"a1", 0, 100},
        {"0x10", 0, 100},
        {"1.0", 0, 100},
        {"1e3", 0, 10000},
        {"--1", -100, 100},
        {"- 1", -100, 100},
        {"101", 0, 100},
        {"-1", 0, 100},
        {"9223372036854775808", INT64_MIN, INT64_MAX},
        {"-9223372036854775809", INT64_MIN, INT64_MAX},
        {"99999999999999999999999", INT64_MIN, INT64_MAX},
    };
    for (size_t i = 0; i < TS_ARRAY_LEN(bad); i++) {
        v = 777;
        if (ts_parse_i64(bad[i].s, bad[i].min, bad[i].max, &v) != TS_E_INVALID)
            fail_msg("ts_parse_i64(\"%s\") accepted", bad[i].s);
        assert_int_equal(v, 777);
    }
    assert_int_equal(ts_parse_i64(NULL, 0, 1, &v), TS_E_INVALID);
    assert_int_equal(ts_parse_i64("5", 6, 72, &v), TS_E_INVALID);
    assert_int_equal(ts_parse_i64("73", 6, 72, &v), TS_E_INVALID);
    assert_int_equal(v, 777);
}

static void test_parse_bool(void **state)
{
    (void)state;
    static const char *const yes[] = {"true", "TRUE", "True", "1", "yes", "YES", "on", "On", "t"};
    static const char *const no[] = {"false", "FALSE", "0", "no", "No", "off", "OFF", "f"};
    for (size_t i = 0; i < TS_ARRAY_LEN(yes); i++) {
        bool v = false;
        assert_int_equal(ts_parse_bool(yes[i], &v), TS_OK);
        assert_true(v);
    }
    for (size_t i = 0; i < TS_ARRAY_LEN(no); i++) {
        bool v = true;
        assert_int_equal(ts_parse_bool(no[i], &v), TS_OK);
        assert_false(v);
    }
    static const char *const bad[] = {"",  "2",       "truex", " true", "true ", "y",
                                      "n", "enabled", "-1",    "10",    "nope"};
    for (size_t i = 0; i < TS_ARRAY_LEN(bad); i++) {
        bool v = true;
        if (ts_parse_bool(bad[i], &v) != TS_E_INVALID)
            fail_msg("ts_parse_bool(\"%s\") accepted", bad[i]);
        assert_true(v); /* untouched */
    }
}

/* ---- identifiers, time, encodings, result codes ---- */

static bool is_lower_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

static void test_uuid_v4_format(void **state)
{
    (void)state;
    char prev[TS_UUID_STR_LEN + 1] = "";
    for (int n = 0; n < 1000; n++) {
        char u[TS_UUID_STR_LEN + 1];
        memset(u, 'Z', sizeof(u));
        ts_uuid_v4(u);
        assert_int_equal(strlen(u), TS_UUID_STR_LEN);
        for (int i = 0; i < TS_UUID_STR_LEN; i++) {
            if (i == 8 || i == 13 || i == 18 || i == 23)
                assert_int_equal(u[i], '-');
            else
                assert_true(is_lower_hex(u[i]));
        }
        assert_int_equal(u[14], '4');           /* version 4 */
        assert_non_null(strchr("89ab", u[19])); /* variant 10 (RFC 4122 §4.1.1) */
        assert_true(ts_uuid_valid(u));
        assert_string_not_equal(u, prev);
        memcpy(prev, u, sizeof(u));
    }
}

static void test_uuid_valid(void **state)
{
    (void)state;
    assert_true(ts_uuid_valid("123e4567-e89b-12d3-a456-426614174000")); /* version 1 */
    assert_true(ts_uuid_valid("00000000-0000-0000-0000-000000000000"));
    assert_true(ts_uuid_valid("123E4567-E89B-42D3-A456-426614174000")); /* upper case */
    assert_false(ts_uuid_valid(NULL));
    assert_false(ts_uuid_valid(""));
    assert_false(ts_uuid_valid("123e4567-e89b-12d3-a456-42661417400"));   /* 35 */
    assert_false(ts_uuid_valid("123e4567-e89b-12d3-a456-4266141740000")); /* 37 */
    assert_false(ts_uuid_valid("123e4567e-89b-12d3-a456-426614174000"));  /* dash moved */
    assert_false(ts_uuid_valid("123e4567-e89b-12d3-a456-42661417400g"));  /* not hex */
    assert_false(ts_uuid_valid("{23e4567-e89b-12d3-a456-426614174000"));
    assert_false(ts_uuid_valid("123e4567-e89b-12d3-a456_426614174000"));
    assert_false(ts_uuid_valid("123e4567+e89b-12d3-a456-426614174000"));
    assert_false(ts_uuid_valid("123e4567-e89b-12d3-a456-4266141740\n0"));
}

static void test_time_format(void **state)
{
    (void)state;
    static const struct {
        int64_t us;
        const char *want;
    } cases[] = {
        {0, "1970-01-01T00:00:00.000000Z"},
        {INT64_C(1700000000123456), "2023-11-14T22:13:20.123456Z"},
        {INT64_C(951782400000000), "2000-02-29T00:00:00.000000Z"},
        {INT64_C(253402300799999999), "9999-12-31T23:59:59.999999Z"},
        {-1, "1969-12-31T23:59:59.999999Z"},
        {-1000000, "1969-12-31T23:59:59.000000Z"},
        {1, "1970-01-01T00:00:00.000001Z"},
    };
    for (size_t i = 0; i < TS_ARRAY_LEN(cases); i++) {
        char out[TS_TIME_STR_LEN];
        ts_time_format(cases[i].us, out);
        assert_string_equal(out, cases[i].want);
    }
    /* Now is after 2023 and the formatted form has the fixed shape. */
    int64_t now = ts_now_us();
    assert_true(now > INT64_C(1700000000000000));
    assert_true(ts_now_s() >= now / 1000000);
    char out[TS_TIME_STR_LEN];
    ts_time_format(now, out);
    assert_int_equal(strlen(out), 27);
    assert_int_equal(out[10], 'T');
    assert_int_equal(out[26], 'Z');
    int64_t m1 = ts_mono_us(), m2 = ts_mono_us();
    assert_true(m2 >= m1);
}

static void test_hex_and_rand(void **state)
{
    (void)state;
    static const uint8_t in[] = {0x00, 0x01, 0xab, 0xff, 0x10};
    char out[2 * sizeof(in) + 1];
    ts_hex_encode(in, sizeof(in), out);
    assert_string_equal(out, "0001abff10");
    ts_hex_encode(in, 0, out);
    assert_string_equal(out, "");
    uint8_t a[32] = {0}, b[32] = {0};
    ts_rand_bytes(a, sizeof(a));
    ts_rand_bytes(b, sizeof(b));
    assert_memory_not_equal(a, b, sizeof(a));
    assert_true(ts_cpu_count() >= 1);
}

static void test_rc_table(void **state)
{
    (void)state;
    assert_int_equal(ts_rc_http_status(TS_OK), 200);
    assert_int_equal(ts_rc_http_status(TS_E_TOO_BIG), 413);
    assert_int_equal(ts_rc_http_status(TS_E_BAD_TOKEN), 401);
    assert_int_equal(ts_rc_http_status(TS_E_BUSY), 429);
    assert_int_equal(ts_rc_http_status(TS_E_CONFLICT), 409);
    assert_int_equal(ts_rc_http_status((enum ts_rc)9999), 500);
    assert_string_equal(ts_rc_name(TS_E_TOO_BIG), "too_big");
    assert_string_equal(ts_rc_name(TS_E_EXPIRED), "expired");
    assert_non_null(ts_rc_name((enum ts_rc)9999));
    for (int rc = 0; rc < TS_RC__COUNT; rc++)
        assert_true(ts_rc_name((enum ts_rc)rc)[0] != '\0');
}

static void test_xalloc(void **state)
{
    (void)state;
    char *s = ts_xasprintf("%s=%d", "k", 7);
    assert_string_equal(s, "k=7");
    free(s);
    s = ts_xstrndup("abcdef", 3);
    assert_string_equal(s, "abc");
    ts_wipe(s, 3);
    assert_memory_equal(s, "\0\0\0", 3);
    free(s);
    ts_wipe(NULL, 10); /* allowed */
    void *z = ts_xmalloc(0);
    assert_non_null(z);
    free(z);
    int *c = ts_xcalloc(10, sizeof(int));
    for (int i = 0; i < 10; i++)
        assert_int_equal(c[i], 0);
    c = ts_xrealloc(c, 1000 * sizeof(int));
    c[999] = 1;
    free(c);
}

/* ---- configuration ---- */

static void test_config_defaults(void **state)
{
    (void)state;
    struct ts_config c;
    ts_config_defaults(&c);
    assert_string_equal(c.listen, "127.0.0.1:9999");
    assert_string_equal(c.database_url, "sqlite://./tessera.db");
    assert_string_equal(c.jwt_secret, "");
    assert_int_equal(c.jwt_exp, 3600);
    assert_string_equal(c.jwt_aud, "authenticated");
    assert_string_equal(c.jwt_issuer, "tessera");
    assert_string_equal(c.jwt_default_group_name, "authenticated");
    assert_false(c.disable_signup);
    assert_false(c.mailer_autoconfirm);
    assert_true(c.external_email_enabled);
    assert_false(c.external_anonymous_users_enabled);
    assert_int_equal(c.password_min_length, 6);
    assert_true(c.password_change_revokes_sessions);
    assert_true(c.refresh_token_rotation_enabled);
    assert_int_equal(c.refresh_token_reuse_interval, 10);
    assert_int_equal(c.password_hash_workers, ts_cpu_count());
    assert_int_equal(c.http_threads, ts_cpu_count());
    assert_int_equal(c.password_hash_queue, 64);
    assert_int_equal(c.password_hash_memory_kib, 19456);
    assert_int_equal(c.password_hash_iterations, 2);
    assert_int_equal(c.http_max_body, 1048576);
    assert_int_equal(c.http_connection_timeout, 30);
    assert_string_equal(c.http_event_loop, "poll");
    assert_string_equal(c.database_durability, "normal");
    assert_string_equal(c.log_level, "info");
    assert_true(c.log_requests);

    /* The defaults pass validation with an empty environment. */
    char *err = NULL;
    assert_int_equal(ts_config_load(&c, NULL, &err), TS_OK);
    assert_null(err);
    assert_string_equal(c.listen, "127.0.0.1:9999");
    ts_config_free(&c);
    assert_null(c.listen);
    ts_config_free(&c); /* twice is harmless */

    /* ts_config_set */
    ts_config_defaults(&c);
    assert_int_equal(ts_config_set(&c, "JWT_EXP", "60", &err), TS_OK);
    assert_int_equal(c.jwt_exp, 60);
    assert_int_equal(ts_config_set(&c, "JWT_EXP", "29", &err), TS_E_INVALID);
    assert_non_null(strstr(err, "JWT_EXP"));
    free(err);
    err = NULL;
    assert_int_equal(c.jwt_exp, 60);
    assert_int_equal(ts_config_set(&c, "NOT_A_KNOB", "1", &err), TS_E_INVALID);
    assert_non_null(strstr(err, "NOT_A_KNOB"));
    free(err);
    ts_config_free(&c);

    /* --help mentions every knob with its prefix. */
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    ts_config_print_help(f);
    fclose(f);
    assert_non_null(strstr(text, "TESSERA_JWT_SECRET"));
    assert_non_null(strstr(text, "TESSERA_SECURITY_REFRESH_TOKEN_REUSE_INTERVAL"));
    free(text);
}

static void test_config_file(void **state)
{
    (void)state;
    char *path = temp_file("# a comment\n"
                           "\n"
                           "   # an indented comment\n"
                           "  LISTEN = 0.0.0.0:8080  \n"
                           "TESSERA_JWT_EXP=600\n"
                           "GOTRUE_SITE_URL=\"http://example.com/app\"\n"
                           "JWT_AUD='my-aud'\n"
                           "DISABLE_SIGNUP=yes\r\n"
                           "SECURITY_REFRESH_TOKEN_REUSE_INTERVAL=1m\n"
                           "HTTP_CONNECTION_TIMEOUT=45s\n"
                           "URI_ALLOW_LIST=\"\"\n"
                           "PASSWORD_REQUIRED_CHARACTERS=abc:ABC:0123456789\n"
                           "JWT_ISSUER=\"half-quoted\n"
                           "JWT_SECRET=\"0123456789abcdef0123456789abcdef\"");
    struct ts_config c;
    ts_config_defaults(&c);
    char *err = NULL;
    enum ts_rc rc = ts_config_load(&c, path, &err);
    if (rc)
        fail_msg("ts_config_load: %s", err ? err : "(no message)");
    assert_string_equal(c.listen, "0.0.0.0:8080");
    assert_int_equal(c.jwt_exp, 600);
    assert_string_equal(c.site_url, "http://example.com/app");
    assert_string_equal(c.jwt_aud, "my-aud");
    assert_true(c.disable_signup);
    assert_int_equal(c.refresh_token_reuse_interval, 60);
    assert_int_equal(c.http_connection_timeout, 45);
    assert_string_equal(c.uri_allow_list, "");
    assert_string_equal(c.password_required_characters, "abc:ABC:0123456789");
    assert_string_equal(c.jwt_issuer, "\"half-quoted"); /* unmatched quotes are kept */
    assert_string_equal(c.jwt_secret, "0123456789abcdef0123456789abcdef");
    /* Untouched knobs keep their defaults. */
    assert_string_equal(c.log_level, "info");
    ts_config_free(&c);
    remove_temp_file(path);

    /* A missing file is an error naming it. */
    ts_config_defaults(&c);
    err = NULL;
    assert_int_equal(ts_config_load(&c, "/nonexistent/tessera.conf", &err), TS_E_INVALID);
    assert_non_null(err);
    assert_non_null(strstr(err, "/nonexistent/tessera.conf"));
    free(err);
    ts_config_free(&c);
}

static void test_config_env_precedence(void **state)
{
    (void)state;
    char *path = temp_file("JWT_ISSUER=from-file\nJWT_AUD=file-aud\nSITE_URL=http://file\n");
    struct ts_config c;
    char *err = NULL;

    /* file < GOTRUE_ */
    assert_int_equal(setenv("GOTRUE_JWT_ISSUER", "from-gotrue", 1), 0);
    assert_int_equal(setenv("GOTRUE_JWT_AUD", "gotrue-aud", 1), 0);
    ts_config_defaults(&c);
    assert_int_equal(ts_config_load(&c, path, &err), TS_OK);
    assert_string_equal(c.jwt_issuer, "from-gotrue");
    assert_string_equal(c.jwt_aud, "gotrue-aud");
    assert_string_equal(c.site_url, "http://file");
    ts_config_free(&c);

    /* GOTRUE_ < TESSERA_, whatever the order of the variables in environ. */
    assert_int_equal(setenv("TESSERA_JWT_ISSUER", "from-tessera", 1), 0);
    ts_config_defaults(&c);
    assert_int_equal(ts_config_load(&c, path, &err), TS_OK);
    assert_string_equal(c.jwt_issuer, "from-tessera");
    assert_string_equal(c.jwt_aud, "gotrue-aud");
    ts_config_free(&c);

    unsetenv("GOTRUE_JWT_ISSUER");
    unsetenv("GOTRUE_JWT_AUD");
    assert_int_equal(setenv("GOTRUE_JWT_ISSUER", "from-gotrue-later", 1), 0);
    ts_config_defaults(&c);
    assert_int_equal(ts_config_load(&c, path, &err), TS_OK);
    assert_string_equal(c.jwt_issuer, "from-tessera");
    assert_string_equal(c.jwt_aud, "file-aud");
    ts_config_free(&c);
    unsetenv("TESSERA_JWT_ISSUER");
    unsetenv("GOTRUE_JWT_ISSUER");

    /* GoTrue's DB_DATABASE_URL is an alias of DATABASE_URL. */
    assert_int_equal(setenv("GOTRUE_DB_DATABASE_URL", "sqlite:///tmp/alias.db", 1), 0);
    ts_config_defaults(&c);
    assert_int_equal(ts_config_load(&c, NULL, &err), TS_OK);
    assert_string_equal(c.database_url, "sqlite:///tmp/alias.db");
    ts_config_free(&c);
    unsetenv("GOTRUE_DB_DATABASE_URL");

    /* Environment values are taken verbatim: no quote stripping. */
    assert_int_equal(setenv("TESSERA_SITE_URL", "http://env", 1), 0);
    assert_int_equal(setenv("TESSERA_DISABLE_SIGNUP", "true", 1), 0);
    ts_config_defaults(&c);
    assert_int_equal(ts_config_load(&c, path, &err), TS_OK);
    assert_string_equal(c.site_url, "http://env");
    assert_true(c.disable_signup);
    ts_config_free(&c);
    unsetenv("TESSERA_SITE_URL");
    unsetenv("TESSERA_DISABLE_SIGNUP");
    remove_temp_file(path);
}

static void test_config_unknown_env(void **state)
{
    (void)state;
    struct ts_config c;
    char *err = NULL;

    /* Unknown TESSERA_* stops the start, naming the variable. */
    assert_int_equal(setenv("TESSERA_NO_SUCH_KNOB", "1", 1), 0);
    ts_config_defaults(&c);
    assert_int_equal(ts_config_load(&c, NULL, &err), TS_E_INVALID);
    assert_non_null(err);
    assert_non_null(strstr(err, "TESSERA_NO_SUCH_KNOB"));
    free(err);
    err = NULL;
    ts_config_free(&c);
    unsetenv("TESSERA_NO_SUCH_KNOB");

    /* Unknown GOTRUE_* is only warned about. */
    assert_int_equal(setenv("GOTRUE_SMTP_HOST", "mail.example.com", 1), 0);
    ts_config_defaults(&c);
    assert_int_equal(ts_config_load(&c, NULL, &err), TS_OK);
    assert_null(err);
    ts_config_free(&c);
    unsetenv("GOTRUE_SMTP_HOST");

    /* A prefix alone is not a knob either. */
    assert_int_equal(setenv("TESSERA_", "x", 1), 0);
    ts_config_defaults(&c);
    assert_int_equal(ts_config_load(&c, NULL, &err), TS_E_INVALID);
    free(err);
    err = NULL;
    ts_config_free(&c);
    unsetenv("TESSERA_");
}

static void test_config_unknown_key_in_file(void **state)
{
    (void)state;
    char *path = temp_file("# header\nLISTEN=127.0.0.1:1\nNO_SUCH_KEY=1\nJWT_EXP=60\n");
    struct ts_config c;
    ts_config_defaults(&c);
    char *err = NULL;
    assert_int_equal(ts_config_load(&c, path, &err), TS_E_INVALID);
    assert_non_null(err);
    assert_non_null(strstr(err, ":3:"));
    assert_non_null(strstr(err, "NO_SUCH_KEY"));
    free(err);
    ts_config_free(&c);
    remove_temp_file(path);

    /* A line without '=' is an error with its number too. */
    path = temp_file("LISTEN=127.0.0.1:1\n\njust words\n");
    ts_config_defaults(&c);
    err = NULL;
    assert_int_equal(ts_config_load(&c, path, &err), TS_E_INVALID);
    assert_non_null(err);
    assert_non_null(strstr(err, ":3:"));
    free(err);
    ts_config_free(&c);
    remove_temp_file(path);

    /* A malformed value in the file names the file, line and key. */
    path = temp_file("JWT_EXP=60\nTESSERA_DISABLE_SIGNUP=maybe\n");
    ts_config_defaults(&c);
    err = NULL;
    assert_int_equal(ts_config_load(&c, path, &err), TS_E_INVALID);
    assert_non_null(err);
    assert_non_null(strstr(err, ":2:"));
    assert_non_null(strstr(err, "DISABLE_SIGNUP"));
    free(err);
    ts_config_free(&c);
    remove_temp_file(path);
}

/* Sets name=value, loads, expects TS_E_INVALID with name in the message, unsets name. */
static void expect_env_refused(const char *name, const char *value)
{
    struct ts_config c;
    char *err = NULL;
    assert_int_equal(setenv(name, value, 1), 0);
    ts_config_defaults(&c);
    enum ts_rc rc = ts_config_load(&c, NULL, &err);
    unsetenv(name);
    ts_config_free(&c);
    if (rc != TS_E_INVALID)
        fail_msg("%s=%s was accepted (rc %s)", name, value, ts_rc_name(rc));
    assert_non_null(err);
    if (!strstr(err, name + (strncmp(name, "GOTRUE_", 7) == 0 ? 7 : 8)))
        fail_msg("error for %s=%s does not name it: %s", name, value, err);
    free(err);
}

static void test_config_malformed_values(void **state)
{
    (void)state;
    expect_env_refused("TESSERA_JWT_EXP", "abc");
    expect_env_refused("TESSERA_JWT_EXP", "29");     /* below min */
    expect_env_refused("TESSERA_JWT_EXP", "604801"); /* above max */
    expect_env_refused("TESSERA_JWT_EXP", "");
    expect_env_refused("TESSERA_JWT_EXP", " 60");
    expect_env_refused("TESSERA_PASSWORD_MIN_LENGTH", "5");
    expect_env_refused("TESSERA_PASSWORD_HASH_WORKERS", "0");
    expect_env_refused("TESSERA_DISABLE_SIGNUP", "maybe");
    expect_env_refused("TESSERA_DISABLE_SIGNUP", "");
    expect_env_refused("TESSERA_SECURITY_REFRESH_TOKEN_REUSE_INTERVAL", "5x");
    expect_env_refused("TESSERA_SECURITY_REFRESH_TOKEN_REUSE_INTERVAL", "1500ms");
    expect_env_refused("TESSERA_SECURITY_REFRESH_TOKEN_REUSE_INTERVAL", "-1");
    expect_env_refused("TESSERA_SECURITY_REFRESH_TOKEN_REUSE_INTERVAL", "86401");
    expect_env_refused("TESSERA_HTTP_CONNECTION_TIMEOUT", "0");
    expect_env_refused("GOTRUE_JWT_EXP", "soon");
    expect_env_refused("GOTRUE_MAILER_AUTOCONFIRM", "sure");
    expect_env_refused("TESSERA_LOG_LEVEL", "verbose");
    expect_env_refused("TESSERA_HTTP_EVENT_LOOP", "select");
    expect_env_refused("TESSERA_DATABASE_DURABILITY", "extra");
    expect_env_refused("TESSERA_LISTEN", "8080");
    expect_env_refused("TESSERA_JWT_AUD", "");

    /* The edges of the ranges are accepted. */
    struct ts_config c;
    char *err = NULL;
    assert_int_equal(setenv("TESSERA_SECURITY_REFRESH_TOKEN_REUSE_INTERVAL", "86400", 1), 0);
    assert_int_equal(setenv("TESSERA_JWT_EXP", "30", 1), 0);
    ts_config_defaults(&c);
    assert_int_equal(ts_config_load(&c, NULL, &err), TS_OK);
    assert_int_equal(c.refresh_token_reuse_interval, 86400);
    assert_int_equal(c.jwt_exp, 30);
    ts_config_free(&c);
    assert_int_equal(setenv("TESSERA_SECURITY_REFRESH_TOKEN_REUSE_INTERVAL", "0s", 1), 0);
    ts_config_defaults(&c);
    assert_int_equal(ts_config_load(&c, NULL, &err), TS_OK);
    assert_int_equal(c.refresh_token_reuse_interval, 0);
    ts_config_free(&c);
    unsetenv("TESSERA_SECURITY_REFRESH_TOKEN_REUSE_INTERVAL");
    unsetenv("TESSERA_JWT_EXP");
}

/* GoTrue's GOTRUE_API_HOST and unprefixed PORT give the address when LISTEN is not set, and
 * its log level names are accepted in any case. */
static void test_config_gotrue_listen_and_log_level(void **state)
{
    (void)state;
    struct ts_config c;
    char *err = NULL;
    assert_int_equal(setenv("PORT", "9876", 1), 0);
    assert_int_equal(setenv("GOTRUE_API_HOST", "127.0.0.2", 1), 0);
    assert_int_equal(setenv("GOTRUE_LOG_LEVEL", "DEBUG", 1), 0);
    ts_config_defaults(&c);
    assert_int_equal(ts_config_load(&c, NULL, &err), TS_OK);
    assert_string_equal(c.listen, "127.0.0.2:9876");
    assert_string_equal(c.log_level, "debug");
    ts_config_free(&c);

    /* TESSERA_LISTEN wins. */
    assert_int_equal(setenv("TESSERA_LISTEN", "127.0.0.1:1234", 1), 0);
    ts_config_defaults(&c);
    assert_int_equal(ts_config_load(&c, NULL, &err), TS_OK);
    assert_string_equal(c.listen, "127.0.0.1:1234");
    ts_config_free(&c);
    unsetenv("TESSERA_LISTEN");

    assert_int_equal(setenv("PORT", "http", 1), 0);
    ts_config_defaults(&c);
    assert_int_equal(ts_config_load(&c, NULL, &err), TS_E_INVALID);
    assert_non_null(strstr(err, "PORT"));
    free(err);
    err = NULL;
    ts_config_free(&c);

    assert_int_equal(setenv("GOTRUE_LOG_LEVEL", "chatty", 1), 0);
    unsetenv("PORT");
    ts_config_defaults(&c);
    assert_int_equal(ts_config_load(&c, NULL, &err), TS_E_INVALID);
    assert_non_null(strstr(err, "LOG_LEVEL"));
    free(err);
    ts_config_free(&c);
    unsetenv("GOTRUE_API_HOST");
    unsetenv("GOTRUE_LOG_LEVEL");
}

static void test_config_jwt_secret_length(void **state)
{
    (void)state;
    /* RFC 7518 §3.2: an HS256 key is at least 256 bits. 31 bytes: refused. */
    expect_env_refused("TESSERA_JWT_SECRET", "0123456789abcdef0123456789abcde");
    expect_env_refused("GOTRUE_JWT_SECRET", "short");

    struct ts_config c;
    char *err = NULL;
    assert_int_equal(setenv("TESSERA_JWT_SECRET", "0123456789abcdef0123456789abcdef", 1), 0);
    ts_config_defaults(&c);
    assert_int_equal(ts_config_load(&c, NULL, &err), TS_OK);
    assert_int_equal(strlen(c.jwt_secret), 32);
    ts_config_free(&c);
    unsetenv("TESSERA_JWT_SECRET");

    /* The same refusal from the file, naming the knob. */
    char *path = temp_file("JWT_SECRET=tooshort\n");
    ts_config_defaults(&c);
    assert_int_equal(ts_config_load(&c, path, &err), TS_E_INVALID);
    assert_non_null(err);
    assert_non_null(strstr(err, "JWT_SECRET"));
    free(err);
    ts_config_free(&c);
    remove_temp_file(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_arena_alignment),
        cmocka_unit_test(test_arena_helpers),
        cmocka_unit_test(test_arena_calloc_zeroes_reused_memory),
        cmocka_unit_test(test_arena_big_allocations),
        cmocka_unit_test(test_arena_reset_keeps_working),
        cmocka_unit_test(test_arena_reset_after_big_keeps_first_block),
        cmocka_unit_test(test_arena_defer_order),
        cmocka_unit_test(test_arena_defer_frees_heap),
        cmocka_unit_test(test_buf_append_at_max),
        cmocka_unit_test(test_buf_single_append_over_max),
        cmocka_unit_test(test_buf_growth_keeps_nul),
        cmocka_unit_test(test_buf_appendf),
        cmocka_unit_test(test_buf_take),
        cmocka_unit_test(test_buf_json_escape),
        cmocka_unit_test(test_buf_json_escape_respects_cap),
        cmocka_unit_test(test_duration_parse_ok),
        cmocka_unit_test(test_duration_parse_bad),
        cmocka_unit_test(test_parse_i64),
        cmocka_unit_test(test_parse_bool),
        cmocka_unit_test(test_uuid_v4_format),
        cmocka_unit_test(test_uuid_valid),
        cmocka_unit_test(test_time_format),
        cmocka_unit_test(test_hex_and_rand),
        cmocka_unit_test(test_rc_table),
        cmocka_unit_test(test_xalloc),
        cmocka_unit_test(test_config_defaults),
        cmocka_unit_test(test_config_file),
        cmocka_unit_test(test_config_env_precedence),
        cmocka_unit_test(test_config_gotrue_listen_and_log_level),
        cmocka_unit_test(test_config_unknown_env),
        cmocka_unit_test(test_config_unknown_key_in_file),
        cmocka_unit_test(test_config_malformed_values),
        cmocka_unit_test(test_config_jwt_secret_length),
    };
    return cmocka_run_group_tests(tests, group_setup, NULL);
}

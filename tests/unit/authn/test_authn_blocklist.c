/*
 * test_authn_blocklist.c - PASSWORD_BLOCKLIST lookups: Have I Been Pwned's SHA1:COUNT file
 * searched in place (the first and last lines, every line of a list, lower and upper case
 * hex, CRLF, counts left out, no final newline, a one-line file), the plain list of
 * passwords, and the files that must stop the start with a clear message (missing, empty,
 * a directory, the NTLM edition, unsorted, a malformed line, NUL bytes, overlong lines).
 */
#include <ctype.h>
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
#include <openssl/sha.h>

#include "authn/authn.h"

#define NWORDS 3000

struct line {
    char hex[41];
    int count;
};

static void sha1_upper(const char *pw, char out[41])
{
    uint8_t d[SHA_DIGEST_LENGTH];
    SHA1((const unsigned char *)pw, strlen(pw), d);
    for (int i = 0; i < SHA_DIGEST_LENGTH; i++)
        snprintf(out + 2 * i, 3, "%02X", d[i]);
}

static int line_cmp(const void *a, const void *b)
{
    return strcmp(((const struct line *)a)->hex, ((const struct line *)b)->hex);
}

/* The passwords "word0".."word{NWORDS-1}" as a sorted SHA1:COUNT list. */
static struct line *word_lines(void)
{
    struct line *l = calloc(NWORDS, sizeof(*l));
    assert_non_null(l);
    for (int i = 0; i < NWORDS; i++) {
        char pw[32];
        snprintf(pw, sizeof(pw), "word%d", i);
        sha1_upper(pw, l[i].hex);
        l[i].count = i + 1;
    }
    qsort(l, NWORDS, sizeof(*l), line_cmp);
    return l;
}

enum fmt_flags { F_LOWER = 1, F_CRLF = 2, F_NO_COUNT = 4, F_NO_FINAL_NL = 8 };

static char *write_file(const char *text, size_t len)
{
    char *path = strdup("/tmp/tessera-test-blocklist-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    close(fd);
    return path;
}

static char *write_lines(const struct line *l, size_t n, int flags)
{
    size_t cap = n * 64 + 1, len = 0;
    char *buf = malloc(cap);
    assert_non_null(buf);
    for (size_t i = 0; i < n; i++) {
        char hex[41];
        for (int k = 0; k < 41; k++)
            hex[k] = (char)((flags & F_LOWER) ? tolower((unsigned char)l[i].hex[k]) : l[i].hex[k]);
        len += (size_t)snprintf(buf + len, cap - len, "%s", hex);
        if (!(flags & F_NO_COUNT))
            len += (size_t)snprintf(buf + len, cap - len, ":%d", l[i].count);
        if (i + 1 < n || !(flags & F_NO_FINAL_NL))
            len += (size_t)snprintf(buf + len, cap - len, "%s", (flags & F_CRLF) ? "\r\n" : "\n");
    }
    char *path = write_file(buf, len);
    free(buf);
    return path;
}

static struct ts_pw_blocklist *open_ok(const char *path)
{
    struct ts_pw_blocklist *bl = NULL;
    char *err = NULL;
    if (ts_pw_blocklist_open(path, &bl, &err) != TS_OK)
        fail_msg("ts_pw_blocklist_open: %s", err);
    return bl;
}

static bool has(struct ts_pw_blocklist *bl, const char *pw)
{
    return ts_pw_blocklist_contains(bl, pw, strlen(pw));
}

/* Every word is found, and near misses are not. */
static void check_all_words(struct ts_pw_blocklist *bl)
{
    for (int i = 0; i < NWORDS; i++) {
        char pw[32];
        snprintf(pw, sizeof(pw), "word%d", i);
        assert_true(has(bl, pw));
        snprintf(pw, sizeof(pw), "Word%d", i);
        assert_false(has(bl, pw));
    }
    assert_false(has(bl, ""));
    assert_false(has(bl, "word-1"));
    assert_false(has(bl, "correct horse battery staple"));
}

static void test_hashed_formats(void **state)
{
    (void)state;
    struct line *l = word_lines();
    static const int variants[] = {0,
                                   F_LOWER,
                                   F_CRLF,
                                   F_NO_COUNT,
                                   F_NO_FINAL_NL,
                                   F_CRLF | F_NO_FINAL_NL,
                                   F_LOWER | F_CRLF | F_NO_COUNT | F_NO_FINAL_NL};
    for (size_t v = 0; v < sizeof(variants) / sizeof(variants[0]); v++) {
        char *path = write_lines(l, NWORDS, variants[v]);
        struct ts_pw_blocklist *bl = open_ok(path);
        check_all_words(bl);
        ts_pw_blocklist_free(bl);
        unlink(path);
        free(path);
    }
    free(l);
}

static void test_hashed_boundaries(void **state)
{
    (void)state;
    struct line *l = word_lines();
    /* The first and last lines, in a list of 1, 2 and 3 lines. */
    for (size_t n = 1; n <= 3; n++) {
        for (int flags = 0; flags <= (F_CRLF | F_NO_FINAL_NL); flags += F_CRLF) {
            char *path = write_lines(l, n, flags);
            struct ts_pw_blocklist *bl = open_ok(path);
            for (int i = 0; i < NWORDS; i++) {
                char pw[32], hex[41];
                snprintf(pw, sizeof(pw), "word%d", i);
                sha1_upper(pw, hex);
                bool listed = false;
                for (size_t k = 0; k < n; k++)
                    listed |= strcmp(hex, l[k].hex) == 0;
                assert_int_equal(has(bl, pw), listed);
            }
            ts_pw_blocklist_free(bl);
            unlink(path);
            free(path);
        }
    }
    free(l);
}

static void test_hashed_real_prefix(void **state)
{
    (void)state;
    /* "password" is 5BAA61E4C9B93F3F0682250B6CF8331B7EE68FD8 in the published list. */
    const char text[] = "0000000A0E3B9F25FF41DE4B5AC238C2D545C7A8:15\r\n"
                        "5BAA61E4C9B93F3F0682250B6CF8331B7EE68FD8:10434004\r\n"
                        "5BAA61E4C9B93F3F0682250B6CF8331B7EE68FD9:1\r\n"
                        "FFFFFFF8A0382AA9C8D9536EFBA77F261815334D:12\r\n";
    char *path = write_file(text, sizeof(text) - 1);
    struct ts_pw_blocklist *bl = open_ok(path);
    assert_true(has(bl, "password"));
    assert_false(has(bl, "Password"));
    assert_false(has(bl, "password1"));
    ts_pw_blocklist_free(bl);
    unlink(path);
    free(path);
}

static void test_plain_list(void **state)
{
    (void)state;
    const char text[] = "123456\r\n"
                        "password\n"
                        "\n"
                        "qwerty uiop\r\n"
                        "\xc3\xa9t\xc3\xa9\n" /* UTF-8 */
                        "last-no-newline";
    char *path = write_file(text, sizeof(text) - 1);
    struct ts_pw_blocklist *bl = open_ok(path);
    assert_true(has(bl, "123456"));
    assert_true(has(bl, "password"));
    assert_true(has(bl, "qwerty uiop"));
    assert_true(has(bl, "\xc3\xa9t\xc3\xa9"));
    assert_true(has(bl, "last-no-newline"));
    assert_false(has(bl, "123456\r"));
    assert_false(has(bl, "Password"));
    assert_false(has(bl, ""));
    assert_false(has(bl, "qwerty"));
    ts_pw_blocklist_free(bl);
    unlink(path);
    free(path);
    assert_false(ts_pw_blocklist_contains(NULL, "password", 8));
}

/* Opening text must fail with a message that contains want. */
static void refused(const char *text, size_t len, const char *want)
{
    char *path = write_file(text, len);
    struct ts_pw_blocklist *bl = NULL;
    char *err = NULL;
    assert_int_equal(ts_pw_blocklist_open(path, &bl, &err), TS_E_INVALID);
    assert_null(bl);
    assert_non_null(err);
    if (!strstr(err, want))
        fail_msg("expected \"%s\" in: %s", want, err);
    assert_non_null(strstr(err, path));
    free(err);
    unlink(path);
    free(path);
}

static void test_malformed_files(void **state)
{
    (void)state;
    refused("", 0, "empty");
    refused("\n\n\r\n", 4, "no passwords");
    refused("8846F7EAEE8FB117AD06BDD830B7586C:1\n", 35, "NTLM");
    refused("abc\0def\n", 8, "NUL");
    char *longline = malloc(2048);
    memset(longline, 'x', 2047);
    longline[2047] = '\n';
    refused(longline, 2048, "longer than");
    free(longline);

    struct line *l = word_lines();
    /* unsorted: two lines swapped in the middle */
    struct line t = l[1500];
    l[1500] = l[1501];
    l[1501] = t;
    char *path = write_lines(l, NWORDS, 0);
    struct ts_pw_blocklist *bl = NULL;
    char *err = NULL;
    assert_int_equal(ts_pw_blocklist_open(path, &bl, &err), TS_E_INVALID);
    assert_non_null(strstr(err, "not sorted"));
    free(err);
    unlink(path);
    free(path);
    l[1501] = l[1500];
    l[1500] = t;

    /* a malformed line: a short hash in the middle; then the last line */
    for (int at = 0; at < 2; at++) {
        size_t victim = at ? NWORDS - 1 : 1234;
        struct line keep = l[victim];
        l[victim].hex[39] = '\0';
        path = write_lines(l, NWORDS, F_CRLF);
        assert_int_equal(ts_pw_blocklist_open(path, &bl, &err), TS_E_INVALID);
        if (!strstr(err, "not SHA1:COUNT"))
            fail_msg("unexpected: %s", err);
        free(err);
        unlink(path);
        free(path);
        l[victim] = keep;
    }
    /* a count that is not a number */
    const char bad_count[] = "5BAA61E4C9B93F3F0682250B6CF8331B7EE68FD8:ten\n";
    refused(bad_count, sizeof(bad_count) - 1, "not SHA1:COUNT");
    free(l);

    assert_int_equal(ts_pw_blocklist_open("/nonexistent/pwned.txt", &bl, &err), TS_E_INVALID);
    assert_non_null(strstr(err, "cannot open"));
    free(err);
    assert_int_equal(ts_pw_blocklist_open("/tmp", &bl, &err), TS_E_INVALID);
    assert_non_null(strstr(err, "not a regular file"));
    free(err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hashed_formats),     cmocka_unit_test(test_hashed_boundaries),
        cmocka_unit_test(test_hashed_real_prefix), cmocka_unit_test(test_plain_list),
        cmocka_unit_test(test_malformed_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

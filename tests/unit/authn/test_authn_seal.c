/*
 * test_authn_seal.c - signing keys at rest under TESSERA_MASTER_KEY: decoding the master
 * key (hex, base64 in each alphabet, files, refusals), sealing and opening (round trip, the
 * associated data binding kid and alg, tampering, the previous key, clear rows), and the
 * keyring on a temporary SQLite store: new keys written sealed, clear rows sealed when a
 * master key is first set, rows re-sealed under a new key during a rotation, and a wrong or
 * missing master key refused instead of answered with fresh keys.
 */
#include <dirent.h>
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

#include "authn/authn.h"

#define ISSUER "tessera-test"
#define AUDIENCE "authenticated"
#define KEY_A_HEX "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
#define KEY_B_HEX "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100"
#define PEM_TEXT "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"

static struct ts_master_keys keys(const char *cur, const char *prev)
{
    struct ts_master_keys mk;
    char *err = NULL;
    if (ts_master_keys_load(cur, NULL, prev, &mk, &err) != TS_OK)
        fail_msg("ts_master_keys_load: %s", err);
    return mk;
}

/* ---- the master key's text ---- */

static void test_master_key_formats(void **state)
{
    (void)state;
    struct ts_master_keys hex = keys(KEY_A_HEX, NULL);
    assert_true(hex.set);
    assert_false(hex.has_previous);
    assert_int_equal(hex.key[0], 0x00);
    assert_int_equal(hex.key[31], 0x1f);
    assert_int_equal(strlen(hex.id), TS_MASTER_KEY_ID_LEN);
    /* The same 32 bytes in upper-case hex, base64 (padded or not) and base64url, with the
     * white space a file or a shell leaves around it: the same key, so the same id. */
    const char *same[] = {
        "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F",
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8",
        "  AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n",
    };
    for (size_t i = 0; i < sizeof(same) / sizeof(same[0]); i++) {
        struct ts_master_keys k = keys(same[i], NULL);
        assert_string_equal(k.id, hex.id);
        assert_memory_equal(k.key, hex.key, TS_MASTER_KEY_LEN);
    }
    /* base64url's alphabet ('-', '_') */
    struct ts_master_keys b = keys(KEY_B_HEX, NULL);
    struct ts_master_keys b64u = keys("_-7dzLuqmYh3ZlVEMyIRAP_u3cy7qpmId2ZVRDMiEQA", NULL);
    assert_memory_equal(b64u.key, b.key, TS_MASTER_KEY_LEN);
    assert_string_not_equal(b.id, hex.id);

    /* Nothing set: no master key, and that is fine. */
    struct ts_master_keys none;
    char *err = NULL;
    assert_int_equal(ts_master_keys_load("", "", "", &none, &err), TS_OK);
    assert_false(none.set);
}

static void test_master_key_refusals(void **state)
{
    (void)state;
    const char *bad[] = {
        "00010203",                                                           /* short */
        KEY_A_HEX "00",                                                       /* long */
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1g",   /* not hex */
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHg==",                       /* 31 bytes */
        "correct horse battery staple correct horse battery staple correct!", /* a passphrase */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct ts_master_keys mk;
        char *err = NULL;
        assert_int_equal(ts_master_keys_load(bad[i], NULL, NULL, &mk, &err), TS_E_INVALID);
        assert_non_null(strstr(err, "TESSERA_MASTER_KEY"));
        assert_null(strstr(err, bad[i])); /* never quotes the value */
        assert_false(mk.set);
        free(err);
    }
    struct ts_master_keys mk;
    char *err = NULL;
    /* a previous key alone */
    assert_int_equal(ts_master_keys_load("", NULL, KEY_A_HEX, &mk, &err), TS_E_INVALID);
    assert_non_null(strstr(err, "TESSERA_MASTER_KEY_PREVIOUS"));
    free(err);
    /* a malformed previous key */
    assert_int_equal(ts_master_keys_load(KEY_A_HEX, NULL, "nope", &mk, &err), TS_E_INVALID);
    assert_non_null(strstr(err, "TESSERA_MASTER_KEY_PREVIOUS"));
    free(err);
    /* both a key and a file; a file that is missing */
    assert_int_equal(ts_master_keys_load(KEY_A_HEX, "/etc/hostname", NULL, &mk, &err),
                     TS_E_INVALID);
    free(err);
    assert_int_equal(ts_master_keys_load(NULL, "/nonexistent/master.key", NULL, &mk, &err),
                     TS_E_INVALID);
    assert_non_null(strstr(err, "TESSERA_MASTER_KEY_FILE"));
    free(err);
}

static void test_master_key_file(void **state)
{
    (void)state;
    char path[] = "/tmp/tessera-test-mk-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char text[] = KEY_B_HEX "\n";
    assert_int_equal(write(fd, text, sizeof(text) - 1), (ssize_t)(sizeof(text) - 1));
    close(fd);
    struct ts_master_keys mk;
    char *err = NULL;
    assert_int_equal(ts_master_keys_load("", path, KEY_A_HEX, &mk, &err), TS_OK);
    struct ts_master_keys b = keys(KEY_B_HEX, NULL), a = keys(KEY_A_HEX, NULL);
    assert_string_equal(mk.id, b.id);
    assert_true(mk.has_previous);
    assert_string_equal(mk.previous_id, a.id);
    unlink(path);
}

/* ---- sealing ---- */

static void test_seal_open_roundtrip(void **state)
{
    (void)state;
    struct ts_master_keys a = keys(KEY_A_HEX, NULL);
    char *sealed = NULL, *pem = NULL, *err = NULL;
    assert_int_equal(ts_key_seal(&a, "kid1", "ES256", PEM_TEXT, &sealed), TS_OK);
    assert_null(strstr(sealed, "PRIVATE KEY"));
    assert_null(strstr(sealed, "AAAA"));
    char id[TS_MASTER_KEY_ID_LEN + 1];
    assert_true(ts_key_is_sealed(sealed, id));
    assert_string_equal(id, a.id);
    assert_int_equal(strncmp(sealed, TS_SEALED_PREFIX, strlen(TS_SEALED_PREFIX)), 0);
    bool current = false;
    assert_int_equal(ts_key_open(&a, "kid1", "ES256", sealed, &pem, &current, &err), TS_OK);
    assert_string_equal(pem, PEM_TEXT);
    assert_true(current);
    free(pem);
    /* A fresh nonce every time: sealing twice gives two texts. */
    char *again = NULL;
    assert_int_equal(ts_key_seal(&a, "kid1", "ES256", PEM_TEXT, &again), TS_OK);
    assert_string_not_equal(again, sealed);
    free(again);

    /* The associated data: another kid or alg does not open it. */
    pem = NULL;
    assert_int_equal(ts_key_open(&a, "kid2", "ES256", sealed, &pem, NULL, &err), TS_E_BAD_TOKEN);
    assert_null(pem);
    assert_non_null(strstr(err, "kid2"));
    free(err);
    assert_int_equal(ts_key_open(&a, "kid1", "ES384", sealed, &pem, NULL, &err), TS_E_BAD_TOKEN);
    free(err);
    /* One flipped character of the ciphertext. */
    size_t last = strlen(sealed) - 2;
    sealed[last] = sealed[last] == 'A' ? 'B' : 'A';
    assert_int_equal(ts_key_open(&a, "kid1", "ES256", sealed, &pem, NULL, &err), TS_E_BAD_TOKEN);
    free(err);
    free(sealed);
}

static void test_open_other_keys(void **state)
{
    (void)state;
    struct ts_master_keys a = keys(KEY_A_HEX, NULL), b = keys(KEY_B_HEX, NULL);
    struct ts_master_keys b_after_a = keys(KEY_B_HEX, KEY_A_HEX);
    struct ts_master_keys none = {0};
    char *under_a = NULL, *pem = NULL, *err = NULL;
    assert_int_equal(ts_key_seal(&a, "k", "ES256", PEM_TEXT, &under_a), TS_OK);

    /* Under another master key: refused, naming both ids. */
    assert_int_equal(ts_key_open(&b, "k", "ES256", under_a, &pem, NULL, &err), TS_E_DENIED);
    assert_non_null(strstr(err, a.id));
    assert_non_null(strstr(err, b.id));
    assert_non_null(strstr(err, "TESSERA_MASTER_KEY_PREVIOUS"));
    free(err);
    /* Without any master key: refused, saying so. */
    assert_int_equal(ts_key_open(&none, "k", "ES256", under_a, &pem, NULL, &err), TS_E_DENIED);
    assert_non_null(strstr(err, "not set"));
    free(err);
    assert_int_equal(ts_key_open(NULL, "k", "ES256", under_a, &pem, NULL, &err), TS_E_DENIED);
    free(err);
    /* With the old key as previous: opens, and says it is not under the current key. */
    bool current = true;
    assert_int_equal(ts_key_open(&b_after_a, "k", "ES256", under_a, &pem, &current, &err), TS_OK);
    assert_string_equal(pem, PEM_TEXT);
    assert_false(current);
    free(pem);

    /* Clear rows open with or without a master key; with one they need sealing. */
    assert_int_equal(ts_key_open(&none, "k", "ES256", PEM_TEXT, &pem, &current, &err), TS_OK);
    assert_true(current);
    free(pem);
    assert_int_equal(ts_key_open(&a, "k", "ES256", PEM_TEXT, &pem, &current, &err), TS_OK);
    assert_false(current);
    free(pem);
    assert_false(ts_key_is_sealed(PEM_TEXT, NULL));

    /* Neither: a newer format, garbage, a truncated sealed text. */
    assert_int_equal(ts_key_open(&a, "k", "ES256", "$tsmk2$abc$def", &pem, NULL, &err), TS_E_PARSE);
    assert_non_null(strstr(err, "newer"));
    free(err);
    assert_int_equal(ts_key_open(&a, "k", "ES256", "hello", &pem, NULL, &err), TS_E_PARSE);
    free(err);
    char truncated[64];
    snprintf(truncated, sizeof(truncated), "%s%s$AAAA", TS_SEALED_PREFIX, a.id);
    assert_int_equal(ts_key_open(&a, "k", "ES256", truncated, &pem, NULL, &err), TS_E_PARSE);
    free(err);
    free(under_a);
}

/* ---- the keyring on a store ---- */

struct fix {
    char dir[64];
    struct ts_store *st;
};

static int fix_setup(void **state)
{
    struct fix *f = ts_xcalloc(1, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/tessera-test-seal-XXXXXX");
    if (!mkdtemp(f->dir)) {
        free(f);
        return -1;
    }
    char url[128];
    snprintf(url, sizeof(url), "sqlite://%s/keys.db", f->dir);
    char *err = NULL;
    int applied = 0;
    if (ts_store_open(url, NULL, &f->st, &err) != TS_OK ||
        ts_store_migrate(f->st, &applied, &err) != TS_OK)
        return -1;
    *state = f;
    return 0;
}

static int fix_teardown(void **state)
{
    struct fix *f = *state;
    ts_store_close(f->st);
    DIR *d = opendir(f->dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        char p[512];
        snprintf(p, sizeof(p), "%s/%s", f->dir, e->d_name);
        if (e->d_name[0] != '.')
            unlink(p);
    }
    if (d)
        closedir(d);
    rmdir(f->dir);
    free(f);
    return 0;
}

static struct ts_keys_config cfg_with(const struct ts_master_keys *mk)
{
    struct ts_keys_config c = {.issuer = ISSUER,
                               .audience = AUDIENCE,
                               .access_ttl = 3600,
                               .retired_keep = TS_KEYS_RETIRED_KEEP,
                               .master = mk};
    return c;
}

/* Counts the rows sealed under id (NULL: rows in clear). */
static size_t rows_under(struct ts_store *st, const char *id, size_t *total)
{
    struct ts_signing_key_row *rows = NULL;
    size_t n = 0, k = 0;
    assert_int_equal(ts_store_signing_keys_list(st, &rows, &n), TS_OK);
    for (size_t i = 0; i < n; i++) {
        char got[TS_MASTER_KEY_ID_LEN + 1];
        bool sealed = ts_key_is_sealed(rows[i].private_pem, got);
        if (id ? sealed && strcmp(got, id) == 0 : !sealed)
            k++;
        if (!sealed)
            assert_non_null(strstr(rows[i].private_pem, "PRIVATE KEY"));
        else
            assert_null(strstr(rows[i].private_pem, "PRIVATE KEY"));
    }
    ts_signing_key_rows_free(rows, n);
    if (total)
        *total = n;
    return k;
}

static char *sign_token(struct ts_keyring *kr)
{
    int64_t now = ts_now_s();
    json_t *c = json_pack("{s:s, s:s, s:I, s:I}", "iss", ISSUER, "role", "anon", "iat",
                          (json_int_t)now, "exp", (json_int_t)(now + 3600));
    char *tok = NULL;
    assert_int_equal(ts_keyring_sign(kr, c, &tok), TS_OK);
    json_decref(c);
    return tok;
}

static void assert_verifies(struct ts_keyring *kr, const char *tok)
{
    struct ts_principal p;
    assert_int_equal(ts_keyring_verify(kr, tok, strlen(tok), &p), TS_OK);
    assert_string_equal(p.role, "anon");
}

static void test_keyring_creates_sealed_keys(void **state)
{
    struct fix *f = *state;
    struct ts_master_keys a = keys(KEY_A_HEX, NULL);
    struct ts_keys_config cfg = cfg_with(&a);
    struct ts_keyring *kr = NULL;
    bool created = false;
    assert_int_equal(ts_keyring_open(f->st, &cfg, &kr, &created), TS_OK);
    assert_true(created);
    size_t total = 0;
    assert_int_equal(rows_under(f->st, a.id, &total), 2);
    assert_int_equal(total, 2);
    char *tok = sign_token(kr);
    ts_keyring_free(kr);

    /* A restart with the same key verifies the old token with the stored key. */
    assert_int_equal(ts_keyring_open(f->st, &cfg, &kr, &created), TS_OK);
    assert_false(created);
    assert_verifies(kr, tok);
    /* Rotation writes the new next key sealed too. */
    char *kid = NULL;
    assert_int_equal(ts_keys_rotate(f->st, &cfg, &kid), TS_OK);
    free(kid);
    assert_int_equal(rows_under(f->st, a.id, &total), 3);
    assert_int_equal(total, 3);
    assert_int_equal(ts_keyring_reload(kr), TS_OK);
    assert_verifies(kr, tok); /* now a retired key */
    ts_keyring_free(kr);

    /* Without the master key, or with another one: refused, never fresh keys. */
    struct ts_keys_config bare = cfg_with(NULL);
    assert_int_equal(ts_keyring_open(f->st, &bare, &kr, &created), TS_E_DENIED);
    struct ts_master_keys b = keys(KEY_B_HEX, NULL);
    struct ts_keys_config wrong = cfg_with(&b);
    assert_int_equal(ts_keyring_open(f->st, &wrong, &kr, &created), TS_E_DENIED);
    assert_int_equal(rows_under(f->st, a.id, &total), 3);
    assert_int_equal(total, 3);
    free(tok);
}

static void test_keyring_seals_clear_rows_then_rotates(void **state)
{
    struct fix *f = *state;
    /* A database from before the master key: keys in clear. */
    struct ts_keys_config bare = cfg_with(NULL);
    struct ts_keyring *kr = NULL;
    assert_int_equal(ts_keyring_open(f->st, &bare, &kr, NULL), TS_OK);
    char *tok = sign_token(kr);
    ts_keyring_free(kr);
    size_t total = 0;
    assert_int_equal(rows_under(f->st, NULL, &total), 2);

    /* The first start with a master key seals every row and still verifies old tokens. */
    struct ts_master_keys a = keys(KEY_A_HEX, NULL);
    struct ts_keys_config ca = cfg_with(&a);
    assert_int_equal(ts_keyring_open(f->st, &ca, &kr, NULL), TS_OK);
    assert_int_equal(rows_under(f->st, a.id, &total), 2);
    assert_int_equal(rows_under(f->st, NULL, NULL), 0);
    assert_verifies(kr, tok);
    ts_keyring_free(kr);

    /* Rotation of the master key: the new one with the old as previous re-seals the rows. */
    struct ts_master_keys b = keys(KEY_B_HEX, KEY_A_HEX);
    struct ts_keys_config cb = cfg_with(&b);
    assert_int_equal(ts_keyring_open(f->st, &cb, &kr, NULL), TS_OK);
    assert_int_equal(rows_under(f->st, b.id, NULL), 2);
    assert_int_equal(rows_under(f->st, a.id, NULL), 0);
    assert_verifies(kr, tok);
    ts_keyring_free(kr);

    /* Afterwards the new key alone opens them; the old one no longer does. */
    struct ts_master_keys b_only = keys(KEY_B_HEX, NULL);
    struct ts_keys_config cbo = cfg_with(&b_only);
    assert_int_equal(ts_keyring_open(f->st, &cbo, &kr, NULL), TS_OK);
    assert_verifies(kr, tok);
    ts_keyring_free(kr);
    assert_int_equal(ts_keyring_open(f->st, &ca, &kr, NULL), TS_E_DENIED);
    free(tok);
}

static void test_keyring_swapped_rows_refused(void **state)
{
    struct fix *f = *state;
    struct ts_master_keys a = keys(KEY_A_HEX, NULL);
    struct ts_keys_config ca = cfg_with(&a);
    struct ts_keyring *kr = NULL;
    assert_int_equal(ts_keyring_open(f->st, &ca, &kr, NULL), TS_OK);
    ts_keyring_free(kr);
    /* Someone with write access copies the next key's sealed text over the active row. */
    struct ts_signing_key_row *rows = NULL;
    size_t n = 0;
    assert_int_equal(ts_store_signing_keys_list(f->st, &rows, &n), TS_OK);
    assert_int_equal(n, 2);
    assert_int_equal(
        ts_store_signing_key_reseal(f->st, rows[0].kid, rows[0].private_pem, rows[1].private_pem),
        TS_OK);
    ts_signing_key_rows_free(rows, n);
    assert_int_equal(ts_keyring_open(f->st, &ca, &kr, NULL), TS_E_BAD_TOKEN);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_master_key_formats),
        cmocka_unit_test(test_master_key_refusals),
        cmocka_unit_test(test_master_key_file),
        cmocka_unit_test(test_seal_open_roundtrip),
        cmocka_unit_test(test_open_other_keys),
        cmocka_unit_test_setup_teardown(test_keyring_creates_sealed_keys, fix_setup, fix_teardown),
        cmocka_unit_test_setup_teardown(test_keyring_seals_clear_rows_then_rotates, fix_setup,
                                        fix_teardown),
        cmocka_unit_test_setup_teardown(test_keyring_swapped_rows_refused, fix_setup, fix_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

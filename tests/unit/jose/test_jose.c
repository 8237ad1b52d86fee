/*
 * test_jose.c - unit tests of the jose module: base64url, keys and JWKs, JWS compact
 * signing and verification, JWT claim checks.
 *
 * The RFC examples live as data in tests/vectors/jose/ (RFC 4648, RFC 7515 appendix A,
 * RFC 7517 appendix A, RFC 8037 appendix A). Every refusal the module promises in jose.h
 * has at least one case here, most with a token whose signature is valid, so that the
 * refusal is shown to come from the check under test and not from a broken signature.
 * Internal primitives are reached through jose_int.h to craft tokens jose.h cannot make.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/encoder.h>
#include <openssl/evp.h>

#include "jose/jose.h"
#include "jose/jose_int.h"

#ifndef TS_TEST_VECTORS
#error "TS_TEST_VECTORS must name the tests/vectors directory"
#endif

/* A fixed "now" for claim tests: 2023-11-14T22:13:20Z. */
#define NOW INT64_C(1700000000)

/* ---- helpers ---- */

/* Loads tests/vectors/jose/<name>; the test fails when the file is missing or malformed. */
static json_t *load_vectors(const char *name)
{
    char path[1024];
    json_error_t err;

    snprintf(path, sizeof(path), "%s/jose/%s", TS_TEST_VECTORS, name);
    json_t *v = json_load_file(path, JSON_REJECT_DUPLICATES, &err);
    if (!v)
        print_error("%s:%d: %s\n", path, err.line, err.text);
    assert_non_null(v);
    return v;
}

/* The string member name of obj; the test fails when it is not a string. */
static const char *str_of(const json_t *obj, const char *name)
{
    const json_t *v = json_object_get(obj, name);
    assert_true(json_is_string(v));
    return json_string_value(v);
}

/* The base64url encoding of n bytes in a fresh heap string. */
static char *b64(const void *p, size_t n)
{
    char *s = ts_xmalloc(ts_b64url_encoded_len(n) + 1);
    ts_b64url_encode(p, n, s);
    return s;
}

/* Decodes a base64url string the test knows to be valid into a fresh heap buffer. */
static uint8_t *unb64(const char *s, size_t *out_len)
{
    uint8_t *buf = ts_xmalloc(ts_b64url_decoded_max(strlen(s)) + 1);
    assert_int_equal(ts_b64url_decode(s, strlen(s), buf, out_len), TS_OK);
    return buf;
}

/* Joins three strings with dots: the compact serialization of already-encoded parts. */
static char *join3(const char *a, const char *b, const char *c)
{
    return ts_xasprintf("%s.%s.%s", a, b, c);
}

/*
 * Signs the text "<h>.<p>" exactly as given (the parts may be deliberately malformed) with
 * key and returns the whole token. This is how the tests build tokens that carry a valid
 * signature over content ts_jws_sign would never produce.
 */
static char *sign_parts(const struct ts_jose_key *key, const char *h, const char *p)
{
    char *input = ts_xasprintf("%s.%s", h, p);
    uint8_t *sig = NULL;
    size_t sig_len = 0;

    assert_int_equal(ts__jose_sign_raw(key, (const uint8_t *)input, strlen(input), &sig, &sig_len),
                     TS_OK);
    char *s = b64(sig, sig_len);
    char *token = ts_xasprintf("%s.%s", input, s);
    free(s);
    free(sig);
    free(input);
    return token;
}

/* Like sign_parts, from the raw header and payload bytes (encoded here). */
static char *sign_json(const struct ts_jose_key *key, const char *header, const char *payload)
{
    char *h = b64(header, strlen(header));
    char *p = b64(payload, strlen(payload));
    char *token = sign_parts(key, h, p);
    free(h);
    free(p);
    return token;
}

/* A token from raw header and payload bytes and an arbitrary signature. */
static char *with_sig(const char *header, const char *payload, const uint8_t *sig, size_t n)
{
    char *h = b64(header, strlen(header)), *p = b64(payload, strlen(payload)), *s = b64(sig, n);
    char *token = join3(h, p, s);
    free(h);
    free(p);
    free(s);
    return token;
}

/* The decoded signature of a compact token. */
static uint8_t *sig_of(const char *token, size_t *out_len)
{
    const char *dot = strrchr(token, '.');
    assert_non_null(dot);
    return unb64(dot + 1, out_len);
}

/* The signing input of a compact token ("<h>.<p>") in a fresh heap string. */
static char *input_of(const char *token)
{
    const char *dot = strrchr(token, '.');
    assert_non_null(dot);
    return ts_xstrndup(token, (size_t)(dot - token));
}

/*
 * A test keyring. A careful lookup matches both alg and kid; a careless one matches kid
 * only (or returns the first key when the token has no kid), like a JWKS cache written
 * without RFC 8725 in mind. ts_jws_verify must be safe with either.
 */
struct keyring {
    const struct ts_jose_key *keys[8];
    size_t n;
    bool match_alg;
};

static const struct ts_jose_key *lookup(void *cls, enum ts_jose_alg alg, const char *kid)
{
    const struct keyring *kr = cls;

    assert_int_not_equal(alg, TS_JOSE_ALG_UNKNOWN);
    for (size_t i = 0; i < kr->n; i++) {
        const struct ts_jose_key *k = kr->keys[i];
        const char *kkid = ts_jose_key_kid(k);
        if (kr->match_alg && ts_jose_key_alg(k) != alg)
            continue;
        if (kid && (!kkid || strcmp(kid, kkid) != 0))
            continue;
        return k;
    }
    return NULL;
}

/* Verifies token against kr; checks that outputs are set on success and untouched on error. */
static enum ts_rc verify_kr(const char *token, struct keyring *kr)
{
    json_t *claims = NULL, *header = NULL;
    enum ts_rc rc = ts_jws_verify(token, strlen(token), lookup, kr, &claims, &header);

    if (rc == TS_OK) {
        assert_true(json_is_object(claims));
        assert_true(json_is_object(header));
    } else {
        assert_null(claims);
        assert_null(header);
    }
    json_decref(claims);
    json_decref(header);
    return rc;
}

/* Verifies token against a keyring holding only key, looked up carelessly. */
static enum ts_rc verify_one(const char *token, const struct ts_jose_key *key)
{
    struct keyring kr = {.keys = {key}, .n = 1, .match_alg = false};
    return verify_kr(token, &kr);
}

/* Imports a JWK given as JSON text. */
static enum ts_rc jwk_text(const char *text, enum ts_jose_alg def, bool allow_oct,
                           struct ts_jose_key **out)
{
    json_t *jwk = json_loads(text, 0, NULL);
    assert_non_null(jwk);
    enum ts_rc rc = ts_jose_key_from_jwk(jwk, def, allow_oct, out);
    json_decref(jwk);
    return rc;
}

/* Imports jwk after setting (or, with a NULL value, deleting) one member of a copy. */
static enum ts_rc jwk_with(const json_t *jwk, const char *name, json_t *value, enum ts_jose_alg def,
                           struct ts_jose_key **out)
{
    json_t *copy = json_deep_copy(jwk);
    if (value)
        json_object_set_new(copy, name, value);
    else
        json_object_del(copy, name);
    enum ts_rc rc = ts_jose_key_from_jwk(copy, def, false, out);
    json_decref(copy);
    return rc;
}

/* The SubjectPublicKeyInfo of a key as PEM (text) or DER, in a heap buffer. */
static uint8_t *spki_of(const struct ts_jose_key *key, const char *type, size_t *out_len)
{
    OSSL_ENCODER_CTX *ectx = OSSL_ENCODER_CTX_new_for_pkey(key->pkey, EVP_PKEY_PUBLIC_KEY, type,
                                                           "SubjectPublicKeyInfo", NULL);
    unsigned char *data = NULL;
    size_t len = 0;

    assert_non_null(ectx);
    assert_int_equal(OSSL_ENCODER_to_data(ectx, &data, &len), 1);
    OSSL_ENCODER_CTX_free(ectx);
    uint8_t *copy = ts_xmalloc(len + 1);
    memcpy(copy, data, len);
    copy[len] = 0;
    OPENSSL_free(data);
    *out_len = len;
    return copy;
}

/* ---- fixtures: one key per algorithm, made once (RSA key generation is slow) ---- */

#define ALG_FIRST TS_JOSE_ALG_HS256
#define ALG_LAST TS_JOSE_ALG_EDDSA

static struct ts_jose_key *fx[ALG_LAST + 1];

static int group_setup(void **state)
{
    (void)state;
    uint8_t secret[64];
    char *pem = NULL;

    ts_rand_bytes(secret, sizeof(secret));
    for (int a = ALG_FIRST; a <= ALG_LAST; a++) {
        enum ts_jose_alg alg = (enum ts_jose_alg)a;
        char *kid = ts_xasprintf("k-%s", ts_jose_alg_name(alg));
        enum ts_rc rc;
        if (ts_jose_alg_is_hmac(alg)) {
            rc = ts_jose_key_new_hmac(alg, secret, sizeof(secret), kid, &fx[a]);
        } else if (pem) {
            /* RS384 to PS512 share RS256's key material (it comes first), through its PEM. */
            rc = ts_jose_key_from_pem(pem, strlen(pem), alg, kid, &fx[a]);
        } else {
            rc = ts_jose_key_generate(alg, kid, &fx[a]);
            if (rc == TS_OK && alg == TS_JOSE_ALG_RS256)
                rc = ts_jose_key_private_pem(fx[a], &pem);
        }
        free(kid);
        if (rc != TS_OK)
            return -1;
        if (alg == TS_JOSE_ALG_PS512) {
            ts_wipe(pem, strlen(pem));
            free(pem);
            pem = NULL;
        }
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    for (int a = ALG_FIRST; a <= ALG_LAST; a++)
        ts_jose_key_free(fx[a]);
    return 0;
}

/* ---- base64url ---- */

static void test_b64url_vectors(void **state)
{
    (void)state;
    json_t *v = load_vectors("rfc4648.json");
    const json_t *vec;
    size_t i;

    json_array_foreach(json_object_get(v, "vectors"), i, vec)
    {
        const char *hex = str_of(vec, "hex"), *want = str_of(vec, "b64url");
        size_t n = strlen(hex) / 2, got_len = 0;
        uint8_t bytes[64], back[64];
        for (size_t j = 0; j < n; j++) {
            unsigned int byte;
            assert_int_equal(sscanf(hex + 2 * j, "%2x", &byte), 1);
            bytes[j] = (uint8_t)byte;
        }
        char out[128];
        assert_int_equal(ts_b64url_encoded_len(n), strlen(want));
        assert_int_equal(ts_b64url_encode(bytes, n, out), strlen(want));
        assert_string_equal(out, want);
        assert_int_equal(ts_b64url_decoded_max(strlen(want)), n);
        assert_int_equal(ts_b64url_decode(want, strlen(want), back, &got_len), TS_OK);
        assert_int_equal(got_len, n);
        assert_memory_equal(back, bytes, n);
    }
    json_decref(v);
}

static void test_b64url_invalid(void **state)
{
    (void)state;
    json_t *v = load_vectors("rfc4648.json");
    const json_t *vec;
    size_t i;

    json_array_foreach(json_object_get(v, "invalid"), i, vec)
    {
        const char *in = str_of(vec, "b64url");
        uint8_t out[16];
        size_t out_len = 12345;
        assert_int_equal(ts_b64url_decode(in, strlen(in), out, &out_len), TS_E_PARSE);
        /* The output length is untouched on error. */
        assert_int_equal(out_len, 12345);
    }
    /* A NUL byte inside the counted length is outside the alphabet too. */
    uint8_t out[4];
    size_t out_len;
    assert_int_equal(ts_b64url_decode("Zm\0v", 4, out, &out_len), TS_E_PARSE);
    json_decref(v);
}

static void test_b64url_roundtrip_lengths(void **state)
{
    (void)state;
    uint8_t in[70], back[70];
    char enc[100];

    /* Every length through several 3-byte groups, with every tail size; then one flipped
     * trailing bit per tail must be refused (RFC 4648 §3.5: one encoding per input). */
    for (size_t n = 0; n < sizeof(in); n++) {
        ts_rand_bytes(in, n);
        size_t len = ts_b64url_encode(in, n, enc), out_len = 0;
        assert_int_equal(len, ts_b64url_encoded_len(n));
        assert_int_not_equal(len % 4, 1);
        assert_true(ts_b64url_decoded_max(len) >= n);
        assert_int_equal(ts_b64url_decode(enc, len, back, &out_len), TS_OK);
        assert_int_equal(out_len, n);
        assert_memory_equal(back, in, n);
        if (n % 3 != 0) {
            /* The last character's lowest bit is always an unused one for a 1- or 2-byte tail. */
            static const char alpha[] =
                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
            const char *pos = strchr(alpha, enc[len - 1]);
            assert_non_null(pos);
            enc[len - 1] = alpha[(pos - alpha) ^ 1];
            assert_int_equal(ts_b64url_decode(enc, len, back, &out_len), TS_E_PARSE);
        }
    }
}

/* ---- algorithm names ---- */

static void test_alg_names(void **state)
{
    (void)state;
    for (int a = ALG_FIRST; a <= ALG_LAST; a++) {
        enum ts_jose_alg alg = (enum ts_jose_alg)a;
        assert_int_equal(ts_jose_alg_from_name(ts_jose_alg_name(alg)), alg);
        assert_int_equal(ts_jose_alg_is_hmac(alg), a <= TS_JOSE_ALG_HS512);
    }
    assert_string_equal(ts_jose_alg_name(TS_JOSE_ALG_EDDSA), "EdDSA");
    assert_string_equal(ts_jose_alg_name(TS_JOSE_ALG_PS384), "PS384");
    static const char *const bad[] = {"none",   "None",    "NONE",  "",        "hs256",   "HS256 ",
                                      "ES256K", "Ed25519", "EDDSA", "unknown", "RSA-OAEP"};
    for (size_t i = 0; i < TS_ARRAY_LEN(bad); i++)
        assert_int_equal(ts_jose_alg_from_name(bad[i]), TS_JOSE_ALG_UNKNOWN);
    assert_int_equal(ts_jose_alg_from_name(NULL), TS_JOSE_ALG_UNKNOWN);
    assert_string_equal(ts_jose_alg_name(TS_JOSE_ALG_UNKNOWN), "unknown");
    assert_string_equal(ts_jose_alg_name((enum ts_jose_alg)99), "unknown");
    assert_false(ts_jose_alg_is_hmac(TS_JOSE_ALG_UNKNOWN));
}

/* ---- RFC vectors ---- */

/* Checks that a raw signature over the vector's signing input equals the vector's. */
static void assert_raw_sign_matches(const struct ts_jose_key *key, const char *token)
{
    char *input = input_of(token);
    size_t want_len, got_len = 0;
    uint8_t *want = sig_of(token, &want_len), *got = NULL;

    assert_int_equal(ts__jose_sign_raw(key, (const uint8_t *)input, strlen(input), &got, &got_len),
                     TS_OK);
    assert_int_equal(got_len, want_len);
    assert_memory_equal(got, want, want_len);
    free(got);
    free(want);
    free(input);
}

/* Checks that the raw signature of a vector token verifies with key. */
static void assert_raw_verifies(const struct ts_jose_key *key, const char *token)
{
    char *input = input_of(token);
    size_t sig_len;
    uint8_t *sig = sig_of(token, &sig_len);

    assert_int_equal(ts__jose_verify_raw(key, (const uint8_t *)input, strlen(input), sig, sig_len),
                     TS_OK);
    free(sig);
    free(input);
}

static void test_rfc7515_a1_hs256(void **state)
{
    (void)state;
    json_t *v = load_vectors("rfc7515.json");
    const json_t *a1 = json_object_get(v, "A.1");
    const char *token = str_of(a1, "token");
    struct ts_jose_key *key = NULL;
    json_t *claims = NULL, *header = NULL;

    /* An "oct" JWK is a secret: refused unless the caller allows it. */
    assert_int_equal(
        ts_jose_key_from_jwk(json_object_get(a1, "jwk"), TS_JOSE_ALG_HS256, false, &key),
        TS_E_INVALID);
    assert_null(key);
    assert_int_equal(
        ts_jose_key_from_jwk(json_object_get(a1, "jwk"), TS_JOSE_ALG_HS256, true, &key), TS_OK);
    assert_int_equal(ts_jose_key_alg(key), TS_JOSE_ALG_HS256);
    assert_null(ts_jose_key_kid(key));
    assert_true(ts_jose_key_has_private(key));

    struct keyring kr = {.keys = {key}, .n = 1, .match_alg = true};
    assert_int_equal(ts_jws_verify(token, strlen(token), lookup, &kr, &claims, &header), TS_OK);
    assert_true(json_equal(claims, json_object_get(a1, "claims")));
    assert_string_equal(str_of(header, "typ"), "JWT");
    assert_string_equal(str_of(header, "alg"), "HS256");
    assert_raw_sign_matches(key, token);

    /* The RFC's token expired in 2011. */
    struct ts_jwt_rules rules = {.issuer = "joe", .now = 1300819379, .require_exp = true};
    assert_int_equal(ts_jwt_check_claims(claims, &rules), TS_OK);
    rules.now = 1300819380;
    assert_int_equal(ts_jwt_check_claims(claims, &rules), TS_E_EXPIRED);

    json_decref(claims);
    json_decref(header);
    ts_jose_key_free(key);
    json_decref(v);
}

static void test_rfc7515_a2_rs256(void **state)
{
    (void)state;
    json_t *v = load_vectors("rfc7515.json");
    const json_t *a2 = json_object_get(v, "A.2");
    const json_t *jwk = json_object_get(a2, "jwk");
    const char *token = str_of(a2, "token");
    struct ts_jose_key *priv = NULL, *pub = NULL, *pss = NULL;

    assert_int_equal(ts_jose_key_from_jwk(jwk, TS_JOSE_ALG_RS256, false, &priv), TS_OK);
    assert_true(ts_jose_key_has_private(priv));
    assert_int_equal(verify_one(token, priv), TS_OK);
    /* RSASSA-PKCS1-v1_5 is deterministic: we must produce the RFC's exact signature. */
    assert_raw_sign_matches(priv, token);

    json_t *pub_jwk = json_pack("{s:s, s:O, s:O}", "kty", "RSA", "n", json_object_get(jwk, "n"),
                                "e", json_object_get(jwk, "e"));
    assert_int_equal(ts_jose_key_from_jwk(pub_jwk, TS_JOSE_ALG_RS256, false, &pub), TS_OK);
    assert_false(ts_jose_key_has_private(pub));
    assert_int_equal(verify_one(token, pub), TS_OK);

    /* The same RSA key bound to PS256 refuses the RS256 token: the key decides. */
    assert_int_equal(ts_jose_key_from_jwk(pub_jwk, TS_JOSE_ALG_PS256, false, &pss), TS_OK);
    assert_int_equal(verify_one(token, pss), TS_E_BAD_TOKEN);

    json_decref(pub_jwk);
    ts_jose_key_free(priv);
    ts_jose_key_free(pub);
    ts_jose_key_free(pss);
    json_decref(v);
}

static void test_rfc7515_a3_es256(void **state)
{
    (void)state;
    json_t *v = load_vectors("rfc7515.json");
    const json_t *a3 = json_object_get(v, "A.3");
    const json_t *jwk = json_object_get(a3, "jwk");
    const char *token = str_of(a3, "token");
    struct ts_jose_key *priv = NULL, *pub = NULL;
    json_t *claims = NULL;

    assert_int_equal(ts_jose_key_from_jwk(jwk, TS_JOSE_ALG_ES256, false, &priv), TS_OK);
    assert_int_equal(verify_one(token, priv), TS_OK);
    assert_int_equal(jwk_with(jwk, "d", NULL, TS_JOSE_ALG_ES256, &pub), TS_OK);
    assert_false(ts_jose_key_has_private(pub));
    struct keyring kr = {.keys = {pub}, .n = 1, .match_alg = true};
    assert_int_equal(ts_jws_verify(token, strlen(token), lookup, &kr, &claims, NULL), TS_OK);
    assert_true(json_equal(claims, json_object_get(a3, "claims")));
    json_decref(claims);

    ts_jose_key_free(priv);
    ts_jose_key_free(pub);
    json_decref(v);
}

static void test_rfc7515_a4_es512(void **state)
{
    (void)state;
    json_t *v = load_vectors("rfc7515.json");
    const json_t *a4 = json_object_get(v, "A.4");
    const char *token = str_of(a4, "token");
    struct ts_jose_key *key = NULL;

    assert_int_equal(
        ts_jose_key_from_jwk(json_object_get(a4, "jwk"), TS_JOSE_ALG_ES512, false, &key), TS_OK);
    /* A 66-byte r and s (P-521) verify... */
    assert_raw_verifies(key, token);
    /* ...but the payload "Payload" is no JSON object, so it is no JWT we accept. */
    assert_int_equal(verify_one(token, key), TS_E_BAD_TOKEN);
    ts_jose_key_free(key);
    json_decref(v);
}

static void test_rfc8037_ed25519(void **state)
{
    (void)state;
    json_t *v = load_vectors("rfc8037.json");
    const json_t *a1 = json_object_get(json_object_get(v, "A.1"), "jwk");
    const json_t *a2 = json_object_get(json_object_get(v, "A.2"), "jwk");
    const json_t *a4 = json_object_get(v, "A.4");
    const char *token = str_of(a4, "token");
    struct ts_jose_key *priv = NULL, *pub = NULL;

    assert_int_equal(ts_jose_key_from_jwk(a1, TS_JOSE_ALG_EDDSA, false, &priv), TS_OK);
    assert_true(ts_jose_key_has_private(priv));
    assert_int_equal(ts_jose_key_from_jwk(a2, TS_JOSE_ALG_EDDSA, false, &pub), TS_OK);
    assert_false(ts_jose_key_has_private(pub));

    /* A.4: Ed25519 is deterministic, so signing reproduces the RFC's signature. */
    char *input = input_of(token);
    assert_string_equal(input, str_of(a4, "signing_input"));
    free(input);
    assert_raw_sign_matches(priv, token);
    /* A.5: the signature verifies with the public key alone. */
    assert_raw_verifies(pub, token);
    /* The payload is text, not a JSON object: no JWT. */
    assert_int_equal(verify_one(token, pub), TS_E_BAD_TOKEN);

    /* The public JWK of the private key is A.2's x. */
    json_t *out = ts_jose_key_public_jwk(priv);
    assert_non_null(out);
    assert_string_equal(str_of(out, "x"), str_of(a2, "x"));
    assert_string_equal(str_of(out, "crv"), "Ed25519");
    assert_string_equal(str_of(out, "kty"), "OKP");
    assert_null(json_object_get(out, "d"));
    json_decref(out);

    ts_jose_key_free(priv);
    ts_jose_key_free(pub);
    json_decref(v);
}

/* ---- round trips ---- */

static void test_roundtrip_every_alg(void **state)
{
    (void)state;
    for (int a = ALG_FIRST; a <= ALG_LAST; a++) {
        enum ts_jose_alg alg = (enum ts_jose_alg)a;
        const struct ts_jose_key *key = fx[a];
        char *payload = ts_xasprintf("{\"sub\":\"user-1\",\"alg_no\":%d}", a);
        char *token = NULL;
        json_t *claims = NULL, *header = NULL;

        assert_int_equal(ts_jws_sign(key, payload, strlen(payload), &token), TS_OK);
        struct keyring kr = {.keys = {key}, .n = 1, .match_alg = true};
        assert_int_equal(ts_jws_verify(token, strlen(token), lookup, &kr, &claims, &header), TS_OK);
        json_t *want = json_loads(payload, 0, NULL);
        assert_true(json_equal(claims, want));
        json_decref(want);
        assert_string_equal(str_of(header, "alg"), ts_jose_alg_name(alg));
        assert_string_equal(str_of(header, "kid"), ts_jose_key_kid(key));
        assert_string_equal(str_of(header, "typ"), "JWT");
        assert_int_equal(json_object_size(header), 3);

        /* The signature has the size its algorithm fixes. */
        size_t sig_len;
        uint8_t *sig = sig_of(token, &sig_len);
        const struct ts_jose_alg_info *info = ts__jose_alg_info(alg);
        switch (info->family) {
        case TS_JOSE_FAMILY_HMAC:
            assert_int_equal(sig_len, info->len);
            break;
        case TS_JOSE_FAMILY_EC:
        case TS_JOSE_FAMILY_ED:
            assert_int_equal(sig_len, 2 * info->len);
            break;
        default:
            assert_int_equal(sig_len, 256);
        }
        free(sig);

        /* Verification with the published public key alone. */
        if (!ts_jose_alg_is_hmac(alg)) {
            json_t *jwk = ts_jose_key_public_jwk(key);
            struct ts_jose_key *pub = NULL;
            assert_int_equal(ts_jose_key_from_jwk(jwk, TS_JOSE_ALG_UNKNOWN, false, &pub), TS_OK);
            assert_int_equal(verify_one(token, pub), TS_OK);
            ts_jose_key_free(pub);
            json_decref(jwk);
        }
        json_decref(claims);
        json_decref(header);
        free(token);
        free(payload);
    }
}

static void test_sign_needs_private(void **state)
{
    (void)state;
    json_t *jwk = ts_jose_key_public_jwk(fx[TS_JOSE_ALG_ES256]);
    struct ts_jose_key *pub = NULL;
    char *token = NULL, *pem = NULL;

    assert_int_equal(ts_jose_key_from_jwk(jwk, TS_JOSE_ALG_UNKNOWN, false, &pub), TS_OK);
    assert_int_equal(ts_jws_sign(pub, "{}", 2, &token), TS_E_INVALID);
    assert_null(token);
    assert_int_equal(ts_jose_key_private_pem(pub, &pem), TS_E_INVALID);
    assert_null(pem);
    /* HMAC secrets are never exported. */
    assert_int_equal(ts_jose_key_private_pem(fx[TS_JOSE_ALG_HS256], &pem), TS_E_INVALID);
    assert_null(ts_jose_key_public_jwk(fx[TS_JOSE_ALG_HS256]));
    ts_jose_key_free(pub);
    json_decref(jwk);
}

static void test_pem_roundtrip(void **state)
{
    (void)state;
    static const enum ts_jose_alg algs[] = {TS_JOSE_ALG_ES256, TS_JOSE_ALG_ES384,
                                            TS_JOSE_ALG_ES512, TS_JOSE_ALG_EDDSA,
                                            TS_JOSE_ALG_RS256, TS_JOSE_ALG_PS512};
    for (size_t i = 0; i < TS_ARRAY_LEN(algs); i++) {
        const struct ts_jose_key *orig = fx[algs[i]];
        struct ts_jose_key *back = NULL, *pub = NULL;
        char *pem = NULL, *t1 = NULL, *t2 = NULL;
        size_t spki_len;

        assert_int_equal(ts_jose_key_private_pem(orig, &pem), TS_OK);
        assert_non_null(strstr(pem, "-----BEGIN PRIVATE KEY-----"));
        assert_int_equal(
            ts_jose_key_from_pem(pem, strlen(pem), algs[i], ts_jose_key_kid(orig), &back), TS_OK);
        assert_true(ts_jose_key_has_private(back));
        assert_string_equal(ts_jose_key_kid(back), ts_jose_key_kid(orig));

        /* Each signs what the other verifies. */
        assert_int_equal(ts_jws_sign(orig, "{\"a\":1}", 7, &t1), TS_OK);
        assert_int_equal(ts_jws_sign(back, "{\"a\":2}", 7, &t2), TS_OK);
        assert_int_equal(verify_one(t1, back), TS_OK);
        assert_int_equal(verify_one(t2, orig), TS_OK);

        /* A public PEM gives a verify-only key. */
        uint8_t *spki = spki_of(orig, "PEM", &spki_len);
        assert_int_equal(ts_jose_key_from_pem((const char *)spki, spki_len, algs[i],
                                              ts_jose_key_kid(orig), &pub),
                         TS_OK);
        assert_false(ts_jose_key_has_private(pub));
        assert_int_equal(verify_one(t1, pub), TS_OK);

        free(spki);
        ts_jose_key_free(pub);
        ts_jose_key_free(back);
        free(t1);
        free(t2);
        ts_wipe(pem, strlen(pem));
        free(pem);
    }
}

/* ---- verification: refusals ---- */

static void test_reject_alg_none(void **state)
{
    (void)state;
    const struct ts_jose_key *hs = fx[TS_JOSE_ALG_HS256];
    static const char payload[] = "{\"sub\":\"admin\"}";
    static const char *const headers[] = {"{\"alg\":\"none\"}", "{\"alg\":\"None\"}",
                                          "{\"alg\":\"NONE\"}", "{\"alg\":\"nOnE\"}",
                                          "{\"alg\":\"none\",\"kid\":\"k-HS256\"}"};
    uint8_t junk[32];

    ts_rand_bytes(junk, sizeof(junk));
    for (size_t i = 0; i < TS_ARRAY_LEN(headers); i++) {
        /* RFC 7518 §3.6: an Unsecured JWS has an empty signature... */
        char *t = with_sig(headers[i], payload, NULL, 0);
        assert_int_equal(verify_one(t, hs), TS_E_BAD_TOKEN);
        free(t);
        /* ...and with any signature at all it is refused just the same. */
        t = with_sig(headers[i], payload, junk, sizeof(junk));
        assert_int_equal(verify_one(t, hs), TS_E_BAD_TOKEN);
        free(t);
        /* Even one whose signature is a valid HS256 MAC of its text. */
        t = sign_json(hs, headers[i], payload);
        assert_int_equal(verify_one(t, hs), TS_E_BAD_TOKEN);
        free(t);
    }
}

/* Signs an HS256 token with secret, the way an attacker holding a public key would. */
static void assert_confusion_refused(const uint8_t *secret, size_t secret_len,
                                     const struct ts_jose_key *victim)
{
    struct ts_jose_key *forger = NULL;
    static const char payload[] = "{\"sub\":\"admin\"}";
    char *header = ts_xasprintf("{\"alg\":\"HS256\",\"kid\":\"%s\"}", ts_jose_key_kid(victim));

    assert_int_equal(ts_jose_key_new_hmac(TS_JOSE_ALG_HS256, secret, secret_len, NULL, &forger),
                     TS_OK);
    char *with_kid = sign_json(forger, header, payload);
    char *no_kid = sign_json(forger, "{\"alg\":\"HS256\"}", payload);

    /* The tokens are well formed: a keyring holding the forger's secret takes them. */
    assert_int_equal(verify_one(no_kid, forger), TS_OK);

    struct keyring careless = {.keys = {victim}, .n = 1, .match_alg = false};
    struct keyring careful = {.keys = {victim}, .n = 1, .match_alg = true};
    assert_int_equal(verify_kr(with_kid, &careless), TS_E_BAD_TOKEN);
    assert_int_equal(verify_kr(no_kid, &careless), TS_E_BAD_TOKEN);
    assert_int_equal(verify_kr(with_kid, &careful), TS_E_BAD_TOKEN);
    assert_int_equal(verify_kr(no_kid, &careful), TS_E_BAD_TOKEN);

    free(with_kid);
    free(no_kid);
    free(header);
    ts_jose_key_free(forger);
}

static void test_reject_alg_confusion(void **state)
{
    (void)state;
    static const enum ts_jose_alg victims[] = {TS_JOSE_ALG_RS256, TS_JOSE_ALG_ES256,
                                               TS_JOSE_ALG_EDDSA};
    for (size_t i = 0; i < TS_ARRAY_LEN(victims); i++) {
        const struct ts_jose_key *victim = fx[victims[i]];
        size_t len;
        /* The public key as PEM text, with and without its final newline, and as DER. */
        uint8_t *pem = spki_of(victim, "PEM", &len);
        assert_confusion_refused(pem, len, victim);
        assert_confusion_refused(pem, len - 1, victim);
        free(pem);
        uint8_t *der = spki_of(victim, "DER", &len);
        assert_confusion_refused(der, len, victim);
        free(der);
        /* The raw JWK public key bytes, for the Ed25519 key (32 bytes, enough for HS256). */
        if (victims[i] == TS_JOSE_ALG_EDDSA) {
            json_t *jwk = ts_jose_key_public_jwk(victim);
            uint8_t *x = unb64(str_of(jwk, "x"), &len);
            assert_confusion_refused(x, len, victim);
            free(x);
            json_decref(jwk);
        }
    }
}

static void test_reject_kid_of_other_alg(void **state)
{
    (void)state;
    const struct ts_jose_key *es = fx[TS_JOSE_ALG_ES256], *hs = fx[TS_JOSE_ALG_HS256];
    struct keyring careless = {.keys = {es, hs}, .n = 2, .match_alg = false};

    /* An HS256 token naming the ES256 key's kid: the lookup hands out the EC key. */
    char *t = sign_json(hs, "{\"alg\":\"HS256\",\"kid\":\"k-ES256\"}", "{}");
    assert_int_equal(verify_kr(t, &careless), TS_E_BAD_TOKEN);
    free(t);
    /* An ES256 signature relabelled ES384 or ES512 with the same kid. */
    t = sign_json(es, "{\"alg\":\"ES384\",\"kid\":\"k-ES256\"}", "{}");
    assert_int_equal(verify_kr(t, &careless), TS_E_BAD_TOKEN);
    free(t);
    /* An RS256 signature relabelled PS256, and the reverse, with a shared RSA modulus. */
    struct keyring rsa = {.keys = {fx[TS_JOSE_ALG_RS256]}, .n = 1, .match_alg = false};
    t = sign_json(fx[TS_JOSE_ALG_RS256], "{\"alg\":\"PS256\"}", "{}");
    assert_int_equal(verify_kr(t, &rsa), TS_E_BAD_TOKEN);
    free(t);
    rsa.keys[0] = fx[TS_JOSE_ALG_PS256];
    t = sign_json(fx[TS_JOSE_ALG_PS256], "{\"alg\":\"RS256\"}", "{}");
    assert_int_equal(verify_kr(t, &rsa), TS_E_BAD_TOKEN);
    free(t);
    /* Control: with the right kid the HS256 token passes. */
    t = sign_json(hs, "{\"alg\":\"HS256\",\"kid\":\"k-HS256\"}", "{}");
    assert_int_equal(verify_kr(t, &careless), TS_OK);
    free(t);
}

static void test_reject_no_key(void **state)
{
    (void)state;
    struct keyring empty = {.n = 0};
    struct keyring one = {.keys = {fx[TS_JOSE_ALG_HS256]}, .n = 1, .match_alg = true};
    char *t = sign_json(fx[TS_JOSE_ALG_HS256], "{\"alg\":\"HS256\",\"kid\":\"nope\"}", "{}");

    assert_int_equal(verify_kr(t, &empty), TS_E_BAD_TOKEN);
    assert_int_equal(verify_kr(t, &one), TS_E_BAD_TOKEN);
    free(t);
}

static void test_reject_bad_base64url(void **state)
{
    (void)state;
    const struct ts_jose_key *hs = fx[TS_JOSE_ALG_HS256];
    static const char h[] = "eyJhbGciOiJIUzI1NiJ9"; /* {"alg":"HS256"} */
    /* Payload parts, each validly signed below, so only the encoding is at fault. */
    static const char *const bad_payloads[] = {
        "eyJhIjoxfQ==",        /* padding */
        "eyJhIjoxfQ=",         /* partial padding */
        "eyJzIjoiPz4_Pj8+In0", /* '+' for '-' */
        "eyJzIjoiPz4/Pj8-In0", /* '/' for '_' */
        "eyJhIjoxfR",          /* non-zero trailing bits (canonical: eyJhIjoxfQ) */
        "eyJhIjoxfQAAA",       /* length 1 mod 4 */
        "eyJh Ijoxf",          /* whitespace */
        "eyJhIjoxfQ\n",        /* trailing newline */
    };
    static const char *const bad_headers[] = {
        "eyJhbGciOiJIUzI1NiJ9==", "eyJhbGciOiJIUzI1NiJ9A", " eyJhbGciOiJIUzI1NiJ9",
        "eyJhbGciOiJIUzI1NiJ8", /* non-zero trailing bits */
    };

    /* Controls: the canonical spellings pass. */
    char *t = sign_parts(hs, h, "eyJhIjoxfQ");
    assert_int_equal(verify_one(t, hs), TS_OK);
    free(t);
    t = sign_parts(hs, h, "eyJzIjoiPz4_Pj8-In0");
    assert_int_equal(verify_one(t, hs), TS_OK);
    free(t);

    for (size_t i = 0; i < TS_ARRAY_LEN(bad_payloads); i++) {
        t = sign_parts(hs, h, bad_payloads[i]);
        assert_int_equal(verify_one(t, hs), TS_E_BAD_TOKEN);
        free(t);
    }
    for (size_t i = 0; i < TS_ARRAY_LEN(bad_headers); i++) {
        t = sign_parts(hs, bad_headers[i], "eyJhIjoxfQ");
        assert_int_equal(verify_one(t, hs), TS_E_BAD_TOKEN);
        free(t);
    }

    /*
     * The signature part: an HS256 MAC is 32 bytes, 43 characters with 2 unused bits, so
     * the last character can be re-spelled to decode to the very same MAC. Refused.
     */
    char *good = sign_parts(hs, h, "eyJhIjoxfQ");
    size_t len = strlen(good);
    static const char alpha[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    t = ts_xstrdup(good);
    t[len - 1] = alpha[(strchr(alpha, t[len - 1]) - alpha) ^ 1];
    assert_int_equal(verify_one(t, hs), TS_E_BAD_TOKEN);
    free(t);
    t = ts_xasprintf("%s=", good);
    assert_int_equal(verify_one(t, hs), TS_E_BAD_TOKEN);
    free(t);
    t = ts_xasprintf("%sA", good); /* 44 characters: one byte too many */
    assert_int_equal(verify_one(t, hs), TS_E_BAD_TOKEN);
    free(t);
    t = ts_xasprintf("%sAA", good); /* 45 characters: 1 mod 4 */
    assert_int_equal(verify_one(t, hs), TS_E_BAD_TOKEN);
    free(t);
    /* '-' and '_' of the signature spelled with the plain base64 alphabet. */
    t = ts_xstrdup(good);
    char *sig = strrchr(t, '.') + 1;
    bool changed = false;
    for (char *c = sig; *c; c++) {
        if (*c == '-' || *c == '_') {
            *c = *c == '-' ? '+' : '/';
            changed = true;
        }
    }
    if (changed)
        assert_int_equal(verify_one(t, hs), TS_E_BAD_TOKEN);
    free(t);
    free(good);
}

static void test_reject_part_count(void **state)
{
    (void)state;
    const struct ts_jose_key *hs = fx[TS_JOSE_ALG_HS256];
    char *good = NULL;

    assert_int_equal(ts_jws_sign(hs, "{}", 2, &good), TS_OK);
    char *input = input_of(good);
    char *four = ts_xasprintf("%s.%s", good, "AAAA");
    char *four_empty = ts_xasprintf("%s.", good);
    char *lead = ts_xasprintf(".%s", good);
    const char *const bad[] = {"", ".", "..", "...", "a", "a.b", input, four, four_empty, lead};

    for (size_t i = 0; i < TS_ARRAY_LEN(bad); i++)
        assert_int_equal(verify_one(bad[i], hs), TS_E_BAD_TOKEN);
    /* The JWS JSON serialization is not accepted either. */
    assert_int_equal(verify_one("{\"payload\":\"e30\",\"signatures\":[]}", hs), TS_E_BAD_TOKEN);
    assert_int_equal(verify_one(good, hs), TS_OK);
    free(lead);
    free(four_empty);
    free(four);
    free(input);
    free(good);
}

static void test_reject_duplicate_members(void **state)
{
    (void)state;
    const struct ts_jose_key *hs = fx[TS_JOSE_ALG_HS256];
    static const char *const cases[][2] = {
        {"{\"alg\":\"HS256\",\"alg\":\"HS256\"}", "{}"},
        {"{\"alg\":\"none\",\"alg\":\"HS256\"}", "{}"},
        {"{\"alg\":\"HS256\",\"kid\":\"k-HS256\",\"kid\":\"k-HS256\"}", "{}"},
        {"{\"alg\":\"HS256\"}", "{\"sub\":\"alice\",\"sub\":\"admin\"}"},
        {"{\"alg\":\"HS256\"}", "{\"exp\":1,\"exp\":99999999999}"},
        {"{\"alg\":\"HS256\"}", "{\"x\":{\"a\":1,\"a\":2}}"},
    };
    for (size_t i = 0; i < TS_ARRAY_LEN(cases); i++) {
        char *t = sign_json(hs, cases[i][0], cases[i][1]);
        assert_int_equal(verify_one(t, hs), TS_E_BAD_TOKEN);
        free(t);
    }
    char *t = sign_json(hs, "{\"alg\":\"HS256\"}", "{\"x\":{\"a\":1,\"b\":2},\"a\":3}");
    assert_int_equal(verify_one(t, hs), TS_OK);
    free(t);
}

static void test_reject_payload_not_object(void **state)
{
    (void)state;
    const struct ts_jose_key *hs = fx[TS_JOSE_ALG_HS256];
    static const char *const payloads[] = {
        "[1,2]",      "\"sub\"",     "42",          "null", "true", "",
        " ",          "{\"a\":1} x", "{\"a\":1}{}", "abc",  "{\"",  "{\"a\":\"\\u0000\"}",
        "{\"a\":1,}",
    };
    for (size_t i = 0; i < TS_ARRAY_LEN(payloads); i++) {
        char *t = sign_json(hs, "{\"alg\":\"HS256\"}", payloads[i]);
        assert_int_equal(verify_one(t, hs), TS_E_BAD_TOKEN);
        free(t);
    }
    /* Whitespace around an object is JSON, and fine. */
    char *t = sign_json(hs, "{\"alg\":\"HS256\"}", " {\"a\":1} ");
    assert_int_equal(verify_one(t, hs), TS_OK);
    free(t);
}

static void test_reject_header_problems(void **state)
{
    (void)state;
    const struct ts_jose_key *hs = fx[TS_JOSE_ALG_HS256];
    static const char *const headers[] = {
        "",
        "[]",
        "\"HS256\"",
        "{}",
        "{\"typ\":\"JWT\"}",
        "{\"alg\":5}",
        "{\"alg\":null}",
        "{\"alg\":[\"HS256\"]}",
        "{\"alg\":\"HS1024\"}",
        "{\"alg\":\"hs256\"}",
        "{\"alg\":\"HS256\\u0000\"}",
        "{\"alg\":\"HS256\",\"kid\":7}",
        "{\"alg\":\"HS256\",\"kid\":null}",
        "{\"alg\":\"HS256\",\"kid\":[\"k-HS256\"]}",
        "{\"alg\":\"HS256\"",
        "{\"alg\":\"HS256\"} {}",
    };
    for (size_t i = 0; i < TS_ARRAY_LEN(headers); i++) {
        char *t = sign_json(hs, headers[i], "{}");
        assert_int_equal(verify_one(t, hs), TS_E_BAD_TOKEN);
        free(t);
    }
    /* Unknown header members that need no understanding are fine (RFC 7515 §4). */
    char *t =
        sign_json(hs, "{\"alg\":\"HS256\",\"x-custom\":{\"a\":[1]},\"jku\":\"https://x\"}", "{}");
    assert_int_equal(verify_one(t, hs), TS_OK);
    free(t);
}

static void test_reject_crit(void **state)
{
    (void)state;
    const struct ts_jose_key *hs = fx[TS_JOSE_ALG_HS256];
    static const char *const headers[] = {
        "{\"alg\":\"HS256\",\"crit\":[\"exp\"],\"exp\":1363284000}",
        "{\"alg\":\"HS256\",\"crit\":[]}",
        "{\"alg\":\"HS256\",\"crit\":null}",
        "{\"alg\":\"HS256\",\"b64\":false,\"crit\":[\"b64\"]}",
    };
    for (size_t i = 0; i < TS_ARRAY_LEN(headers); i++) {
        char *t = sign_json(hs, headers[i], "{}");
        assert_int_equal(verify_one(t, hs), TS_E_BAD_TOKEN);
        free(t);
    }
}

static void test_reject_empty_signature(void **state)
{
    (void)state;
    for (int a = ALG_FIRST; a <= ALG_LAST; a++) {
        char *token = NULL;
        assert_int_equal(ts_jws_sign(fx[a], "{}", 2, &token), TS_OK);
        char *input = input_of(token);
        char *t = ts_xasprintf("%s.", input);
        assert_int_equal(verify_one(t, fx[a]), TS_E_BAD_TOKEN);
        free(t);
        free(input);
        free(token);
    }
}

/* The DER form of a raw r||s signature, as OpenSSL (and some JWT libraries) produce it. */
static uint8_t *raw_to_der(const uint8_t *raw, size_t n, size_t *out_len)
{
    ECDSA_SIG *sig = ECDSA_SIG_new();
    unsigned char *der = NULL;

    assert_non_null(sig);
    assert_int_equal(
        ECDSA_SIG_set0(sig, BN_bin2bn(raw, (int)n, NULL), BN_bin2bn(raw + n, (int)n, NULL)), 1);
    int len = i2d_ECDSA_SIG(sig, &der);
    assert_true(len > 0);
    ECDSA_SIG_free(sig);
    uint8_t *copy = ts_xmalloc((size_t)len);
    memcpy(copy, der, (size_t)len);
    OPENSSL_free(der);
    *out_len = (size_t)len;
    return copy;
}

static void test_reject_ecdsa_shapes(void **state)
{
    (void)state;
    static const enum ts_jose_alg algs[] = {TS_JOSE_ALG_ES256, TS_JOSE_ALG_ES384,
                                            TS_JOSE_ALG_ES512};
    for (size_t i = 0; i < TS_ARRAY_LEN(algs); i++) {
        const struct ts_jose_key *key = fx[algs[i]];
        size_t n = ts__jose_alg_info(algs[i])->len, raw_len, der_len;
        char *header = ts_xasprintf("{\"alg\":\"%s\"}", ts_jose_alg_name(algs[i]));
        static const char payload[] = "{\"sub\":\"x\"}";
        char *good = sign_json(key, header, payload);
        uint8_t *raw = sig_of(good, &raw_len);
        uint8_t buf[2 * 66 + 2];
        char *t;

        assert_int_equal(raw_len, 2 * n);
        assert_int_equal(verify_one(good, key), TS_OK);

        /* The DER encoding of the very same (valid) signature. */
        uint8_t *der = raw_to_der(raw, n, &der_len);
        t = with_sig(header, payload, der, der_len);
        assert_int_equal(verify_one(t, key), TS_E_BAD_TOKEN);
        free(t);
        free(der);

        /* One byte short, one byte long (either end), r and s swapped, all zero. */
        t = with_sig(header, payload, raw, 2 * n - 1);
        assert_int_equal(verify_one(t, key), TS_E_BAD_TOKEN);
        free(t);
        memcpy(buf, raw, 2 * n);
        buf[2 * n] = 0;
        t = with_sig(header, payload, buf, 2 * n + 1);
        assert_int_equal(verify_one(t, key), TS_E_BAD_TOKEN);
        free(t);
        buf[0] = 0;
        memcpy(buf + 1, raw, 2 * n);
        t = with_sig(header, payload, buf, 2 * n + 1);
        assert_int_equal(verify_one(t, key), TS_E_BAD_TOKEN);
        free(t);
        /* r and s each zero-extended by one byte: still the same integers, wrong layout. */
        buf[0] = 0;
        memcpy(buf + 1, raw, n);
        buf[n + 1] = 0;
        memcpy(buf + n + 2, raw + n, n);
        t = with_sig(header, payload, buf, 2 * n + 2);
        assert_int_equal(verify_one(t, key), TS_E_BAD_TOKEN);
        free(t);
        memcpy(buf, raw + n, n);
        memcpy(buf + n, raw, n);
        t = with_sig(header, payload, buf, 2 * n);
        assert_int_equal(verify_one(t, key), TS_E_BAD_TOKEN);
        free(t);
        memset(buf, 0, 2 * n);
        t = with_sig(header, payload, buf, 2 * n);
        assert_int_equal(verify_one(t, key), TS_E_BAD_TOKEN);
        free(t);

        free(raw);
        free(good);
        free(header);
    }
}

static void test_reject_tampered(void **state)
{
    (void)state;
    for (int a = ALG_FIRST; a <= ALG_LAST; a++) {
        const struct ts_jose_key *key = fx[a];
        char *token = NULL;
        static const char payload[] = "{\"sub\":\"alice\",\"role\":\"user\"}";
        assert_int_equal(ts_jws_sign(key, payload, strlen(payload), &token), TS_OK);
        const char *dot1 = strchr(token, '.'), *dot2 = strrchr(token, '.');
        size_t p0 = (size_t)(dot1 - token) + 1, s0 = (size_t)(dot2 - token) + 1;

        /* A changed payload character (first and last) breaks the signature. */
        size_t positions[] = {p0, s0 - 3, 0};
        for (size_t i = 0; i < TS_ARRAY_LEN(positions); i++) {
            char *t = ts_xstrdup(token);
            t[positions[i]] = t[positions[i]] == 'A' ? 'B' : 'A';
            assert_int_equal(verify_one(t, key), TS_E_BAD_TOKEN);
            free(t);
        }

        /* A flipped bit in the first, middle and last signature byte. */
        size_t sig_len;
        uint8_t *sig = sig_of(token, &sig_len);
        size_t bytes[] = {0, sig_len / 2, sig_len - 1};
        for (size_t i = 0; i < TS_ARRAY_LEN(bytes); i++) {
            sig[bytes[i]] ^= 0x01;
            char *s = b64(sig, sig_len);
            char *input = input_of(token);
            char *t = ts_xasprintf("%s.%s", input, s);
            assert_int_equal(verify_one(t, key), TS_E_BAD_TOKEN);
            free(t);
            free(input);
            free(s);
            sig[bytes[i]] ^= 0x01;
        }

        /* A whole other payload under the original header and signature. */
        char *h = ts_xstrndup(token, p0 - 1);
        static const char other[] = "{\"sub\":\"alice\",\"role\":\"root\"}";
        char *p = b64(other, strlen(other));
        char *t = join3(h, p, dot2 + 1);
        assert_int_equal(verify_one(t, key), TS_E_BAD_TOKEN);
        free(t);
        free(p);
        free(h);
        free(sig);
        free(token);
    }
}

static void test_reject_signature_lengths(void **state)
{
    (void)state;
    /* HMAC: a truncated MAC (even its first half, the "right" bytes) or a longer one. */
    static const enum ts_jose_alg algs[] = {TS_JOSE_ALG_HS256, TS_JOSE_ALG_HS512, TS_JOSE_ALG_RS256,
                                            TS_JOSE_ALG_PS256, TS_JOSE_ALG_EDDSA};
    for (size_t i = 0; i < TS_ARRAY_LEN(algs); i++) {
        const struct ts_jose_key *key = fx[algs[i]];
        char *header = ts_xasprintf("{\"alg\":\"%s\"}", ts_jose_alg_name(algs[i]));
        char *good = sign_json(key, header, "{}");
        size_t n;
        uint8_t *sig = sig_of(good, &n);
        uint8_t *longer = ts_xcalloc(1, n + 1);
        char *t;

        assert_int_equal(verify_one(good, key), TS_OK);
        t = with_sig(header, "{}", sig, n / 2);
        assert_int_equal(verify_one(t, key), TS_E_BAD_TOKEN);
        free(t);
        t = with_sig(header, "{}", sig, n - 1);
        assert_int_equal(verify_one(t, key), TS_E_BAD_TOKEN);
        free(t);
        /* RSA: a leading zero octet keeps the integer, but the length must be k octets. */
        memcpy(longer + 1, sig, n);
        t = with_sig(header, "{}", longer, n + 1);
        assert_int_equal(verify_one(t, key), TS_E_BAD_TOKEN);
        free(t);
        memcpy(longer, sig, n);
        t = with_sig(header, "{}", longer, n + 1);
        assert_int_equal(verify_one(t, key), TS_E_BAD_TOKEN);
        free(t);

        free(longer);
        free(sig);
        free(good);
        free(header);
    }
}

static void test_rsa_signature_rules(void **state)
{
    (void)state;
    json_t *v = load_vectors("rfc7515.json"), *d = load_vectors("derived.json");
    const json_t *jwk = json_object_get(json_object_get(v, "A.2"), "jwk");
    json_t *pub_jwk = json_pack("{s:s, s:O, s:O}", "kty", "RSA", "n", json_object_get(jwk, "n"),
                                "e", json_object_get(jwk, "e"));
    static const struct {
        const char *name;
        enum ts_jose_alg alg;
    } cases[] = {{"rs256_leading_zero", TS_JOSE_ALG_RS256},
                 {"ps256_leading_zero", TS_JOSE_ALG_PS256}};

    for (size_t i = 0; i < TS_ARRAY_LEN(cases); i++) {
        const json_t *c = json_object_get(d, cases[i].name);
        struct ts_jose_key *pub = NULL;
        assert_int_equal(ts_jose_key_from_jwk(pub_jwk, cases[i].alg, false, &pub), TS_OK);
        /* A signature that starts with a zero octet verifies at its full 256 octets... */
        assert_int_equal(verify_one(str_of(c, "token"), pub), TS_OK);
        /* ...and the same integer in 255 octets, a second spelling, is refused. */
        assert_int_equal(verify_one(str_of(c, "token_stripped"), pub), TS_E_BAD_TOKEN);
        ts_jose_key_free(pub);
    }

    /* RFC 7518 §3.5: PS256 means MGF1 over SHA-256 and a 32-octet salt, nothing else. */
    const json_t *pss = json_object_get(d, "ps256_parameters");
    struct ts_jose_key *pub = NULL;
    assert_int_equal(ts_jose_key_from_jwk(pub_jwk, TS_JOSE_ALG_PS256, false, &pub), TS_OK);
    assert_int_equal(verify_one(str_of(pss, "good"), pub), TS_OK);
    assert_int_equal(verify_one(str_of(pss, "salt_max"), pub), TS_E_BAD_TOKEN);
    assert_int_equal(verify_one(str_of(pss, "salt_0"), pub), TS_E_BAD_TOKEN);
    assert_int_equal(verify_one(str_of(pss, "mgf1_sha1"), pub), TS_E_BAD_TOKEN);
    ts_jose_key_free(pub);

    json_decref(pub_jwk);
    json_decref(d);
    json_decref(v);
}

/* Builds an HS256 token of exactly want bytes, padding the header and payload. */
static char *token_of_length(const struct ts_jose_key *hs, size_t want)
{
    for (size_t spaces = 0; spaces < 4; spaces++) {
        char *header = ts_xasprintf("{\"alg\":\"HS256\"%*s}", (int)spaces, "");
        size_t fixed = ts_b64url_encoded_len(strlen(header)) + 2 + 43;
        for (size_t pad = 0; pad < want; pad++) {
            size_t p_len = ts_b64url_encoded_len(pad + 8); /* {"p":"<pad>"} */
            if (fixed + p_len < want)
                continue;
            if (fixed + p_len == want) {
                char *payload = ts_xmalloc(pad + 9);
                memcpy(payload, "{\"p\":\"", 6);
                memset(payload + 6, 'x', pad);
                memcpy(payload + 6 + pad, "\"}", 3);
                char *t = sign_json(hs, header, payload);
                free(payload);
                free(header);
                assert_int_equal(strlen(t), want);
                return t;
            }
            break;
        }
        free(header);
    }
    fail();
    return NULL;
}

static void test_token_size_cap(void **state)
{
    (void)state;
    const struct ts_jose_key *hs = fx[TS_JOSE_ALG_HS256];
    json_t *claims = NULL, *header = NULL;
    struct keyring kr = {.keys = {hs}, .n = 1, .match_alg = true};

    /* 16 KiB exactly is accepted; one byte more is refused before any parsing. */
    char *t = token_of_length(hs, TS_JOSE_TOKEN_MAX);
    assert_int_equal(verify_one(t, hs), TS_OK);
    free(t);
    t = token_of_length(hs, TS_JOSE_TOKEN_MAX + 1);
    assert_int_equal(ts_jws_verify(t, strlen(t), lookup, &kr, &claims, &header), TS_E_TOO_BIG);
    assert_null(claims);
    assert_null(header);
    free(t);
    /* A huge one, which is never read at all. */
    size_t big = 1 << 20;
    t = ts_xmalloc(big);
    memset(t, 'A', big);
    assert_int_equal(ts_jws_verify(t, big, lookup, &kr, &claims, &header), TS_E_TOO_BIG);
    free(t);
}

/* ---- JWT claims ---- */

/* Checks claims given as JSON text against rules. */
static enum ts_rc check(const char *text, const struct ts_jwt_rules *rules)
{
    json_t *claims = json_loads(text, JSON_DECODE_ANY, NULL);
    assert_non_null(claims);
    enum ts_rc rc = ts_jwt_check_claims(claims, rules);
    json_decref(claims);
    return rc;
}

/* Checks claims text made by ts_xasprintf, then frees it. */
static enum ts_rc check_owned(char *text, const struct ts_jwt_rules *rules)
{
    enum ts_rc rc = check(text, rules);
    free(text);
    return rc;
}

/* Checks claims given as a format with one long long (a time) in it. */
#define checkf(rules, fmt, t) check_owned(ts_xasprintf(fmt, (long long)(t)), rules)

static void test_claims_valid(void **state)
{
    (void)state;
    struct ts_jwt_rules rules = {.issuer = "https://a.example",
                                 .audience = "api",
                                 .now = NOW,
                                 .leeway = 0,
                                 .require_exp = true};
    char *text = ts_xasprintf("{\"iss\":\"https://a.example\",\"sub\":\"u\",\"aud\":\"api\","
                              "\"exp\":%lld,\"nbf\":%lld,\"iat\":%lld,\"custom\":[1]}",
                              (long long)NOW + 60, (long long)NOW - 10, (long long)NOW - 10);
    assert_int_equal(check(text, &rules), TS_OK);
    free(text);

    /* No rules but time: iss and aud are then only type-checked. */
    struct ts_jwt_rules bare = {.now = NOW};
    assert_int_equal(check("{\"iss\":\"x\",\"aud\":[\"y\"]}", &bare), TS_OK);
    assert_int_equal(check("{}", &bare), TS_OK);
    /* NumericDate may have a fraction (RFC 7519 §2). */
    assert_int_equal(checkf(&bare, "{\"exp\":%lld.5}", (long long)NOW), TS_OK);
    assert_int_equal(checkf(&bare, "{\"exp\":%lld.0}", (long long)NOW), TS_E_EXPIRED);
}

static void test_claims_expired(void **state)
{
    (void)state;
    struct ts_jwt_rules r = {.now = NOW};

    assert_int_equal(checkf(&r, "{\"exp\":%lld}", (long long)NOW + 1), TS_OK);
    /* RFC 7519 §4.1.4: "on or after" exp is expired. */
    assert_int_equal(checkf(&r, "{\"exp\":%lld}", (long long)NOW), TS_E_EXPIRED);
    assert_int_equal(checkf(&r, "{\"exp\":%lld}", (long long)NOW - 1), TS_E_EXPIRED);
    assert_int_equal(check("{\"exp\":0}", &r), TS_E_EXPIRED);
    assert_int_equal(check("{\"exp\":-1e300}", &r), TS_E_EXPIRED);
    /* The leeway, at its edge and one past it. */
    r.leeway = 30;
    assert_int_equal(checkf(&r, "{\"exp\":%lld}", (long long)NOW - 29), TS_OK);
    assert_int_equal(checkf(&r, "{\"exp\":%lld}", (long long)NOW - 30), TS_E_EXPIRED);
    /* A negative leeway counts as none. */
    r.leeway = -1000;
    assert_int_equal(checkf(&r, "{\"exp\":%lld}", (long long)NOW + 1), TS_OK);
    assert_int_equal(checkf(&r, "{\"exp\":%lld}", (long long)NOW), TS_E_EXPIRED);
}

static void test_claims_not_yet_valid(void **state)
{
    (void)state;
    struct ts_jwt_rules r = {.now = NOW};

    /* nbf: valid from that second on (RFC 7519 §4.1.5). */
    assert_int_equal(checkf(&r, "{\"nbf\":%lld}", (long long)NOW), TS_OK);
    assert_int_equal(checkf(&r, "{\"nbf\":%lld}", (long long)NOW + 1), TS_E_BAD_TOKEN);
    /* iat in the future. */
    assert_int_equal(checkf(&r, "{\"iat\":%lld}", (long long)NOW), TS_OK);
    assert_int_equal(checkf(&r, "{\"iat\":%lld}", (long long)NOW + 1), TS_E_BAD_TOKEN);
    assert_int_equal(check("{\"iat\":1e300}", &r), TS_E_BAD_TOKEN);
    /* Both within and just past the leeway. */
    r.leeway = 30;
    assert_int_equal(checkf(&r, "{\"nbf\":%lld}", (long long)NOW + 30), TS_OK);
    assert_int_equal(checkf(&r, "{\"nbf\":%lld}", (long long)NOW + 31), TS_E_BAD_TOKEN);
    assert_int_equal(checkf(&r, "{\"iat\":%lld}", (long long)NOW + 30), TS_OK);
    assert_int_equal(checkf(&r, "{\"iat\":%lld}", (long long)NOW + 31), TS_E_BAD_TOKEN);
}

static void test_claims_issuer(void **state)
{
    (void)state;
    struct ts_jwt_rules r = {.issuer = "https://a.example", .now = NOW};

    assert_int_equal(check("{\"iss\":\"https://a.example\"}", &r), TS_OK);
    assert_int_equal(check("{\"iss\":\"https://b.example\"}", &r), TS_E_BAD_TOKEN);
    assert_int_equal(check("{\"iss\":\"HTTPS://A.EXAMPLE\"}", &r), TS_E_BAD_TOKEN);
    assert_int_equal(check("{\"iss\":\"https://a.example/\"}", &r), TS_E_BAD_TOKEN);
    assert_int_equal(check("{\"iss\":\"https://a.exampl\"}", &r), TS_E_BAD_TOKEN);
    assert_int_equal(check("{\"iss\":\"\"}", &r), TS_E_BAD_TOKEN);
    /* Missing when required. */
    assert_int_equal(check("{\"sub\":\"u\"}", &r), TS_E_BAD_TOKEN);
    /* Of the wrong type, required or not. */
    assert_int_equal(check("{\"iss\":[\"https://a.example\"]}", &r), TS_E_BAD_TOKEN);
    r.issuer = NULL;
    assert_int_equal(check("{\"iss\":5}", &r), TS_E_BAD_TOKEN);
    assert_int_equal(check("{\"iss\":\"anyone\"}", &r), TS_OK);
}

static void test_claims_audience(void **state)
{
    (void)state;
    struct ts_jwt_rules r = {.audience = "api", .now = NOW};

    assert_int_equal(check("{\"aud\":\"api\"}", &r), TS_OK);
    assert_int_equal(check("{\"aud\":\"api2\"}", &r), TS_E_BAD_TOKEN);
    assert_int_equal(check("{\"aud\":\"ap\"}", &r), TS_E_BAD_TOKEN);
    assert_int_equal(check("{\"aud\":\"API\"}", &r), TS_E_BAD_TOKEN);
    assert_int_equal(check("{\"aud\":[\"web\",\"api\"]}", &r), TS_OK);
    assert_int_equal(check("{\"aud\":[\"web\",\"admin\"]}", &r), TS_E_BAD_TOKEN);
    assert_int_equal(check("{\"aud\":[]}", &r), TS_E_BAD_TOKEN);
    /* Missing when required. */
    assert_int_equal(check("{}", &r), TS_E_BAD_TOKEN);
    /* Of the wrong type, required or not. */
    assert_int_equal(check("{\"aud\":[\"api\",1]}", &r), TS_E_BAD_TOKEN);
    assert_int_equal(check("{\"aud\":{\"api\":true}}", &r), TS_E_BAD_TOKEN);
    r.audience = NULL;
    assert_int_equal(check("{\"aud\":7}", &r), TS_E_BAD_TOKEN);
    assert_int_equal(check("{\"aud\":[\"x\",null]}", &r), TS_E_BAD_TOKEN);
    assert_int_equal(check("{\"aud\":[\"x\"]}", &r), TS_OK);
}

static void test_claims_types(void **state)
{
    (void)state;
    struct ts_jwt_rules r = {.now = NOW};
    static const char *const bad[] = {
        "{\"exp\":\"99999999999\"}",
        "{\"exp\":true}",
        "{\"exp\":null}",
        "{\"exp\":[1]}",
        "{\"nbf\":\"0\"}",
        "{\"nbf\":false}",
        "{\"iat\":{}}",
        "{\"iat\":\"now\"}",
        "{\"sub\":5}",
        "{\"sub\":null}",
    };
    for (size_t i = 0; i < TS_ARRAY_LEN(bad); i++)
        assert_int_equal(check(bad[i], &r), TS_E_BAD_TOKEN);
    /* Not an object at all. */
    assert_int_equal(check("[]", &r), TS_E_BAD_TOKEN);
    assert_int_equal(check("\"x\"", &r), TS_E_BAD_TOKEN);
    assert_int_equal(ts_jwt_check_claims(NULL, &r), TS_E_BAD_TOKEN);
}

static void test_claims_require_exp(void **state)
{
    (void)state;
    struct ts_jwt_rules r = {.now = NOW, .require_exp = true};

    assert_int_equal(check("{\"sub\":\"u\"}", &r), TS_E_BAD_TOKEN);
    assert_int_equal(checkf(&r, "{\"exp\":%lld}", (long long)NOW + 5), TS_OK);
    r.require_exp = false;
    assert_int_equal(check("{\"sub\":\"u\"}", &r), TS_OK);
}

/* ---- JWK import and export ---- */

static void test_jwk_public_keys(void **state)
{
    (void)state;
    json_t *v7517 = load_vectors("rfc7517.json"), *v7515 = load_vectors("rfc7515.json"),
           *v8037 = load_vectors("rfc8037.json");
    const json_t *rsa = json_array_get(json_object_get(v7517, "A.1"), 1);
    const json_t *ec = json_object_get(json_object_get(v7515, "A.3"), "jwk");
    const json_t *okp = json_object_get(json_object_get(v8037, "A.2"), "jwk");
    struct ts_jose_key *key = NULL;
    json_t *out;

    /* RSA with its own "alg" and "kid" (RFC 7517 A.1): the JWK's alg wins over the default. */
    assert_int_equal(ts_jose_key_from_jwk(rsa, TS_JOSE_ALG_PS512, false, &key), TS_OK);
    assert_int_equal(ts_jose_key_alg(key), TS_JOSE_ALG_RS256);
    assert_string_equal(ts_jose_key_kid(key), "2011-04-29");
    assert_false(ts_jose_key_has_private(key));
    out = ts_jose_key_public_jwk(key);
    assert_string_equal(str_of(out, "kty"), "RSA");
    assert_string_equal(str_of(out, "n"), str_of(rsa, "n"));
    assert_string_equal(str_of(out, "e"), "AQAB");
    assert_string_equal(str_of(out, "alg"), "RS256");
    assert_string_equal(str_of(out, "kid"), "2011-04-29");
    assert_string_equal(str_of(out, "use"), "sig");
    assert_string_equal(json_string_value(json_array_get(json_object_get(out, "key_ops"), 0)),
                        "verify");
    json_decref(out);
    ts_jose_key_free(key);
    key = NULL;

    /* EC without "alg": the default decides; the public half of RFC 7515 A.3. */
    assert_int_equal(jwk_with(ec, "d", NULL, TS_JOSE_ALG_ES256, &key), TS_OK);
    assert_int_equal(ts_jose_key_alg(key), TS_JOSE_ALG_ES256);
    assert_null(ts_jose_key_kid(key));
    out = ts_jose_key_public_jwk(key);
    assert_string_equal(str_of(out, "crv"), "P-256");
    assert_string_equal(str_of(out, "x"), str_of(ec, "x"));
    assert_string_equal(str_of(out, "y"), str_of(ec, "y"));
    assert_null(json_object_get(out, "kid"));
    json_decref(out);
    ts_jose_key_free(key);
    key = NULL;

    /* OKP (RFC 8037 A.2). */
    assert_int_equal(ts_jose_key_from_jwk(okp, TS_JOSE_ALG_EDDSA, false, &key), TS_OK);
    assert_false(ts_jose_key_has_private(key));
    ts_jose_key_free(key);
    key = NULL;

    /* No alg anywhere: refused. */
    assert_int_equal(ts_jose_key_from_jwk(okp, TS_JOSE_ALG_UNKNOWN, false, &key), TS_E_INVALID);
    assert_null(key);

    json_decref(v7517);
    json_decref(v7515);
    json_decref(v8037);
}

static void test_jwk_private_ec(void **state)
{
    (void)state;
    json_t *v = load_vectors("rfc7515.json"), *v7517 = load_vectors("rfc7517.json");
    const json_t *jwk = json_object_get(json_object_get(v, "A.3"), "jwk");
    const json_t *enc = json_array_get(json_object_get(v7517, "A.2"), 0);
    struct ts_jose_key *priv = NULL, *pub = NULL, *other = NULL;
    char *token = NULL;

    assert_int_equal(ts_jose_key_from_jwk(jwk, TS_JOSE_ALG_ES256, false, &priv), TS_OK);
    assert_true(ts_jose_key_has_private(priv));
    assert_int_equal(jwk_with(jwk, "d", NULL, TS_JOSE_ALG_ES256, &pub), TS_OK);
    assert_int_equal(ts_jws_sign(priv, "{\"sub\":\"x\"}", 11, &token), TS_OK);
    assert_int_equal(verify_one(token, pub), TS_OK);
    json_t *out = ts_jose_key_public_jwk(priv);
    assert_null(json_object_get(out, "d"));
    json_decref(out);

    /* RFC 7517 A.2's private EC key is for encryption ("use":"enc"): refused as is. */
    assert_int_equal(ts_jose_key_from_jwk(enc, TS_JOSE_ALG_ES256, false, &other), TS_E_INVALID);
    assert_int_equal(jwk_with(enc, "use", NULL, TS_JOSE_ALG_ES256, &other), TS_OK);
    assert_true(ts_jose_key_has_private(other));
    ts_jose_key_free(other);

    free(token);
    ts_jose_key_free(priv);
    ts_jose_key_free(pub);
    json_decref(v);
    json_decref(v7517);
}

static void test_jwk_oct(void **state)
{
    (void)state;
    json_t *v = load_vectors("rfc7515.json");
    const json_t *oct = json_object_get(json_object_get(v, "A.1"), "jwk");
    struct ts_jose_key *key = NULL;

    assert_int_equal(ts_jose_key_from_jwk(oct, TS_JOSE_ALG_HS256, false, &key), TS_E_INVALID);
    assert_int_equal(ts_jose_key_from_jwk(oct, TS_JOSE_ALG_HS512, true, &key), TS_OK);
    assert_int_equal(ts_jose_key_alg(key), TS_JOSE_ALG_HS512);
    assert_null(ts_jose_key_public_jwk(key));
    ts_jose_key_free(key);
    key = NULL;
    /* An oct key bound to an asymmetric algorithm. */
    assert_int_equal(ts_jose_key_from_jwk(oct, TS_JOSE_ALG_RS256, true, &key), TS_E_INVALID);
    /* A 16-byte secret is too short for HS256 (RFC 7518 §3.2). */
    assert_int_equal(jwk_text("{\"kty\":\"oct\",\"k\":\"GawgguFyGrWKav7AX4VKUg\"}",
                              TS_JOSE_ALG_HS256, true, &key),
                     TS_E_INVALID);
    assert_int_equal(jwk_text("{\"kty\":\"oct\"}", TS_JOSE_ALG_HS256, true, &key), TS_E_INVALID);
    assert_null(key);
    json_decref(v);
}

static void test_jwk_kty_alg_mismatch(void **state)
{
    (void)state;
    json_t *v = load_vectors("rfc7515.json"), *v8 = load_vectors("rfc8037.json");
    const json_t *ec = json_object_get(json_object_get(v, "A.3"), "jwk");
    const json_t *ec521 = json_object_get(json_object_get(v, "A.4"), "jwk");
    const json_t *rsa = json_object_get(json_object_get(v, "A.2"), "jwk");
    const json_t *okp = json_object_get(json_object_get(v8, "A.2"), "jwk");
    struct ts_jose_key *key = NULL;

    static const enum ts_jose_alg not_ec256[] = {TS_JOSE_ALG_HS256, TS_JOSE_ALG_RS256,
                                                 TS_JOSE_ALG_PS256, TS_JOSE_ALG_ES384,
                                                 TS_JOSE_ALG_ES512, TS_JOSE_ALG_EDDSA};
    for (size_t i = 0; i < TS_ARRAY_LEN(not_ec256); i++) {
        assert_int_equal(ts_jose_key_from_jwk(ec, not_ec256[i], true, &key), TS_E_INVALID);
        assert_int_equal(jwk_with(ec, "alg", json_string(ts_jose_alg_name(not_ec256[i])),
                                  TS_JOSE_ALG_ES256, &key),
                         TS_E_INVALID);
    }
    assert_int_equal(ts_jose_key_from_jwk(ec521, TS_JOSE_ALG_ES256, false, &key), TS_E_INVALID);
    assert_int_equal(ts_jose_key_from_jwk(rsa, TS_JOSE_ALG_ES256, false, &key), TS_E_INVALID);
    assert_int_equal(ts_jose_key_from_jwk(rsa, TS_JOSE_ALG_EDDSA, false, &key), TS_E_INVALID);
    assert_int_equal(ts_jose_key_from_jwk(rsa, TS_JOSE_ALG_HS256, true, &key), TS_E_INVALID);
    assert_int_equal(ts_jose_key_from_jwk(okp, TS_JOSE_ALG_ES256, false, &key), TS_E_INVALID);
    assert_int_equal(ts_jose_key_from_jwk(okp, TS_JOSE_ALG_RS256, false, &key), TS_E_INVALID);
    /* "alg" members that name nothing we sign with. */
    static const char *const names[] = {"none", "XYZ", "RSA-OAEP", "A128KW", ""};
    for (size_t i = 0; i < TS_ARRAY_LEN(names); i++)
        assert_int_equal(jwk_with(ec, "alg", json_string(names[i]), TS_JOSE_ALG_ES256, &key),
                         TS_E_INVALID);
    assert_int_equal(jwk_with(ec, "alg", json_integer(7), TS_JOSE_ALG_ES256, &key), TS_E_INVALID);
    assert_null(key);

    /* An RSA key fits PS* as well as RS*. */
    assert_int_equal(ts_jose_key_from_jwk(rsa, TS_JOSE_ALG_PS384, false, &key), TS_OK);
    assert_int_equal(ts_jose_key_alg(key), TS_JOSE_ALG_PS384);
    ts_jose_key_free(key);
    json_decref(v);
    json_decref(v8);
}

static void test_jwk_use_and_key_ops(void **state)
{
    (void)state;
    json_t *v = load_vectors("rfc7515.json"), *v7517 = load_vectors("rfc7517.json");
    const json_t *ec = json_object_get(json_object_get(v, "A.3"), "jwk");
    struct ts_jose_key *key = NULL;

    /* RFC 7517 A.1's EC key says "use":"enc". */
    assert_int_equal(ts_jose_key_from_jwk(json_array_get(json_object_get(v7517, "A.1"), 0),
                                          TS_JOSE_ALG_ES256, false, &key),
                     TS_E_INVALID);
    assert_int_equal(jwk_with(ec, "use", json_string("enc"), TS_JOSE_ALG_ES256, &key),
                     TS_E_INVALID);
    assert_int_equal(jwk_with(ec, "use", json_string("SIG"), TS_JOSE_ALG_ES256, &key),
                     TS_E_INVALID);
    assert_int_equal(jwk_with(ec, "use", json_integer(1), TS_JOSE_ALG_ES256, &key), TS_E_INVALID);
    assert_int_equal(jwk_with(ec, "key_ops", json_pack("[s]", "encrypt"), TS_JOSE_ALG_ES256, &key),
                     TS_E_INVALID);
    assert_int_equal(jwk_with(ec, "key_ops", json_pack("[]"), TS_JOSE_ALG_ES256, &key),
                     TS_E_INVALID);
    assert_int_equal(jwk_with(ec, "key_ops", json_string("verify"), TS_JOSE_ALG_ES256, &key),
                     TS_E_INVALID);
    assert_int_equal(
        jwk_with(ec, "key_ops", json_pack("[s,i]", "verify", 1), TS_JOSE_ALG_ES256, &key),
        TS_E_INVALID);
    assert_null(key);

    assert_int_equal(jwk_with(ec, "use", json_string("sig"), TS_JOSE_ALG_ES256, &key), TS_OK);
    ts_jose_key_free(key);
    assert_int_equal(
        jwk_with(ec, "key_ops", json_pack("[s,s]", "sign", "verify"), TS_JOSE_ALG_ES256, &key),
        TS_OK);
    ts_jose_key_free(key);
    json_decref(v);
    json_decref(v7517);
}

static void test_jwk_bad_members(void **state)
{
    (void)state;
    json_t *v = load_vectors("rfc7515.json"), *v8 = load_vectors("rfc8037.json");
    const json_t *ec = json_object_get(json_object_get(v, "A.3"), "jwk");
    const json_t *rsa = json_object_get(json_object_get(v, "A.2"), "jwk");
    const json_t *okp = json_object_get(json_object_get(v8, "A.1"), "jwk");
    const char *x = str_of(ec, "x");
    struct ts_jose_key *key = NULL;
    json_t *arr = json_array();

    assert_int_equal(ts_jose_key_from_jwk(arr, TS_JOSE_ALG_ES256, false, &key), TS_E_INVALID);
    assert_int_equal(ts_jose_key_from_jwk(NULL, TS_JOSE_ALG_ES256, false, &key), TS_E_INVALID);
    json_decref(arr);

    /* kty missing, of the wrong type, unknown, or of the wrong case. */
    assert_int_equal(jwk_with(ec, "kty", NULL, TS_JOSE_ALG_ES256, &key), TS_E_INVALID);
    assert_int_equal(jwk_with(ec, "kty", json_integer(2), TS_JOSE_ALG_ES256, &key), TS_E_INVALID);
    assert_int_equal(jwk_with(ec, "kty", json_string("ec"), TS_JOSE_ALG_ES256, &key), TS_E_INVALID);
    assert_int_equal(jwk_with(ec, "kid", json_integer(2), TS_JOSE_ALG_ES256, &key), TS_E_INVALID);

    /* EC: missing or wrong crv, missing y, short x, padded x, x not a string. */
    assert_int_equal(jwk_with(ec, "crv", NULL, TS_JOSE_ALG_ES256, &key), TS_E_INVALID);
    assert_int_equal(jwk_with(ec, "crv", json_string("P-384"), TS_JOSE_ALG_ES256, &key),
                     TS_E_INVALID);
    assert_int_equal(jwk_with(ec, "crv", json_string("secp256k1"), TS_JOSE_ALG_ES256, &key),
                     TS_E_INVALID);
    assert_int_equal(jwk_with(ec, "y", NULL, TS_JOSE_ALG_ES256, &key), TS_E_INVALID);
    char *shortx = ts_xstrndup(x, strlen(x) - 2); /* 41 characters: 30 bytes and a bit */
    assert_int_equal(jwk_with(ec, "x", json_string(shortx), TS_JOSE_ALG_ES256, &key), TS_E_INVALID);
    free(shortx);
    char *padded = ts_xasprintf("%s=", x);
    assert_int_equal(jwk_with(ec, "x", json_string(padded), TS_JOSE_ALG_ES256, &key), TS_E_INVALID);
    free(padded);
    assert_int_equal(jwk_with(ec, "x", json_integer(1), TS_JOSE_ALG_ES256, &key), TS_E_INVALID);
    /* A point off the curve (x with one bit changed): the invalid-curve attack. */
    size_t n;
    uint8_t *xb = unb64(x, &n);
    xb[n - 1] ^= 0x01;
    char *offx = b64(xb, n);
    json_t *pub = json_deep_copy(ec);
    json_object_del(pub, "d");
    assert_int_equal(jwk_with(pub, "x", json_string(offx), TS_JOSE_ALG_ES256, &key), TS_E_INVALID);
    json_decref(pub);
    free(offx);
    free(xb);

    /* OKP: other curves, short x. */
    assert_int_equal(jwk_with(okp, "crv", json_string("X25519"), TS_JOSE_ALG_EDDSA, &key),
                     TS_E_INVALID);
    assert_int_equal(jwk_with(okp, "crv", json_string("Ed448"), TS_JOSE_ALG_EDDSA, &key),
                     TS_E_INVALID);
    assert_int_equal(jwk_with(okp, "x", json_string("AAAA"), TS_JOSE_ALG_EDDSA, &key),
                     TS_E_INVALID);
    assert_int_equal(jwk_with(okp, "d", json_string("AAAA"), TS_JOSE_ALG_EDDSA, &key),
                     TS_E_INVALID);

    /* RSA: missing e, empty e, multi-prime, incomplete private key, private member alone. */
    assert_int_equal(jwk_with(rsa, "e", NULL, TS_JOSE_ALG_RS256, &key), TS_E_INVALID);
    assert_int_equal(jwk_with(rsa, "e", json_string(""), TS_JOSE_ALG_RS256, &key), TS_E_INVALID);
    /* e = 1 (anyone could sign: s^1 mod n = s), e = 0 and an even e. */
    json_t *pub_e = json_deep_copy(rsa);
    const char *const private_members[] = {"d", "p", "q", "dp", "dq", "qi"};
    for (size_t i = 0; i < TS_ARRAY_LEN(private_members); i++)
        json_object_del(pub_e, private_members[i]);
    assert_int_equal(jwk_with(pub_e, "e", json_string("AQ"), TS_JOSE_ALG_RS256, &key),
                     TS_E_INVALID);
    assert_int_equal(jwk_with(pub_e, "e", json_string("AA"), TS_JOSE_ALG_RS256, &key),
                     TS_E_INVALID);
    assert_int_equal(jwk_with(pub_e, "e", json_string("AQAA"), TS_JOSE_ALG_RS256, &key),
                     TS_E_INVALID);
    assert_int_equal(jwk_with(pub_e, "e", json_string("Aw"), TS_JOSE_ALG_RS256, &key), TS_OK);
    ts_jose_key_free(key);
    key = NULL;
    json_decref(pub_e);
    assert_int_equal(jwk_with(rsa, "oth", json_array(), TS_JOSE_ALG_RS256, &key), TS_E_INVALID);
    assert_int_equal(jwk_with(rsa, "qi", NULL, TS_JOSE_ALG_RS256, &key), TS_E_INVALID);
    json_t *pub_rsa = json_pack("{s:s,s:O,s:O,s:O}", "kty", "RSA", "n", json_object_get(rsa, "n"),
                                "e", json_object_get(rsa, "e"), "p", json_object_get(rsa, "p"));
    assert_int_equal(ts_jose_key_from_jwk(pub_rsa, TS_JOSE_ALG_RS256, false, &key), TS_E_INVALID);
    /* A 1024-bit modulus (the first half of A.2's n): too small (RFC 7518 §3.3). */
    uint8_t *nb = unb64(str_of(rsa, "n"), &n);
    char *half = b64(nb, n / 2);
    assert_int_equal(jwk_with(pub_rsa, "p", NULL, TS_JOSE_ALG_RS256, &key), TS_OK);
    ts_jose_key_free(key);
    key = NULL;
    json_object_del(pub_rsa, "p");
    assert_int_equal(jwk_with(pub_rsa, "n", json_string(half), TS_JOSE_ALG_RS256, &key),
                     TS_E_INVALID);
    free(half);
    free(nb);
    json_decref(pub_rsa);
    assert_null(key);

    json_decref(v);
    json_decref(v8);
}

static void test_jwk_mismatched_private(void **state)
{
    (void)state;
    json_t *v = load_vectors("rfc7515.json"), *v7517 = load_vectors("rfc7517.json"),
           *v8 = load_vectors("rfc8037.json");
    const json_t *ec = json_object_get(json_object_get(v, "A.3"), "jwk");
    const json_t *other_ec = json_array_get(json_object_get(v7517, "A.2"), 0);
    const json_t *rsa = json_object_get(json_object_get(v, "A.2"), "jwk");
    const json_t *other_rsa = json_array_get(json_object_get(v7517, "A.1"), 1);
    const json_t *okp = json_object_get(json_object_get(v8, "A.1"), "jwk");
    struct ts_jose_key *key = NULL;

    /* A "d" that belongs to another public key is refused (pairwise check). */
    assert_int_equal(
        jwk_with(ec, "d", json_copy(json_object_get(other_ec, "d")), TS_JOSE_ALG_ES256, &key),
        TS_E_INVALID);
    assert_int_equal(
        jwk_with(rsa, "n", json_copy(json_object_get(other_rsa, "n")), TS_JOSE_ALG_RS256, &key),
        TS_E_INVALID);
    json_t *jwk = ts_jose_key_public_jwk(fx[TS_JOSE_ALG_EDDSA]);
    assert_int_equal(
        jwk_with(okp, "x", json_copy(json_object_get(jwk, "x")), TS_JOSE_ALG_EDDSA, &key),
        TS_E_INVALID);
    json_decref(jwk);
    assert_null(key);

    json_decref(v);
    json_decref(v7517);
    json_decref(v8);
}

static void test_public_jwk_roundtrip(void **state)
{
    (void)state;
    for (int a = ALG_FIRST; a <= ALG_LAST; a++) {
        enum ts_jose_alg alg = (enum ts_jose_alg)a;
        if (ts_jose_alg_is_hmac(alg))
            continue;
        const struct ts_jose_key *orig = fx[a];
        json_t *jwk = ts_jose_key_public_jwk(orig);
        assert_non_null(jwk);
        /* No private member is ever published. */
        static const char *const secret[] = {"d", "p", "q", "dp", "dq", "qi", "k"};
        for (size_t i = 0; i < TS_ARRAY_LEN(secret); i++)
            assert_null(json_object_get(jwk, secret[i]));
        assert_string_equal(str_of(jwk, "alg"), ts_jose_alg_name(alg));
        assert_string_equal(str_of(jwk, "kid"), ts_jose_key_kid(orig));

        /* Publish it as text, read it back, and verify the original key's token with it. */
        char *text = json_dumps(jwk, JSON_COMPACT);
        struct ts_jose_key *pub = NULL;
        assert_int_equal(jwk_text(text, TS_JOSE_ALG_UNKNOWN, false, &pub), TS_OK);
        assert_int_equal(ts_jose_key_alg(pub), alg);
        assert_string_equal(ts_jose_key_kid(pub), ts_jose_key_kid(orig));
        assert_false(ts_jose_key_has_private(pub));
        char *token = NULL;
        assert_int_equal(ts_jws_sign(orig, "{\"sub\":\"rt\"}", 12, &token), TS_OK);
        struct keyring kr = {.keys = {pub}, .n = 1, .match_alg = true};
        assert_int_equal(verify_kr(token, &kr), TS_OK);
        /* Exporting the imported key gives the same JWK. */
        json_t *again = ts_jose_key_public_jwk(pub);
        assert_true(json_equal(again, jwk));
        json_decref(again);

        free(token);
        ts_jose_key_free(pub);
        free(text);
        json_decref(jwk);
    }
}

/* ---- key construction refusals ---- */

static void test_hmac_key_length(void **state)
{
    (void)state;
    uint8_t secret[64] = {1};
    struct ts_jose_key *key = NULL;
    static const struct {
        enum ts_jose_alg alg;
        size_t min;
    } cases[] = {{TS_JOSE_ALG_HS256, 32}, {TS_JOSE_ALG_HS384, 48}, {TS_JOSE_ALG_HS512, 64}};

    for (size_t i = 0; i < TS_ARRAY_LEN(cases); i++) {
        assert_int_equal(ts_jose_key_new_hmac(cases[i].alg, secret, cases[i].min - 1, NULL, &key),
                         TS_E_INVALID);
        assert_null(key);
        assert_int_equal(ts_jose_key_new_hmac(cases[i].alg, secret, cases[i].min, "s", &key),
                         TS_OK);
        assert_string_equal(ts_jose_key_kid(key), "s");
        ts_jose_key_free(key);
        key = NULL;
    }
    assert_int_equal(ts_jose_key_new_hmac(TS_JOSE_ALG_HS256, NULL, 32, NULL, &key), TS_E_INVALID);
    assert_int_equal(ts_jose_key_new_hmac(TS_JOSE_ALG_RS256, secret, 64, NULL, &key), TS_E_INVALID);
    assert_int_equal(ts_jose_key_new_hmac(TS_JOSE_ALG_UNKNOWN, secret, 64, NULL, &key),
                     TS_E_INVALID);
    assert_null(key);
    ts_jose_key_free(NULL);
}

static void test_key_from_pem_refusals(void **state)
{
    (void)state;
    struct ts_jose_key *key = NULL;
    char *pem = NULL;
    static const char garbage[] = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";

    assert_int_equal(ts_jose_key_private_pem(fx[TS_JOSE_ALG_ES256], &pem), TS_OK);
    size_t len = strlen(pem);
    static const enum ts_jose_alg wrong[] = {
        TS_JOSE_ALG_UNKNOWN, TS_JOSE_ALG_HS256, TS_JOSE_ALG_RS256, TS_JOSE_ALG_PS256,
        TS_JOSE_ALG_ES384,   TS_JOSE_ALG_ES512, TS_JOSE_ALG_EDDSA};
    for (size_t i = 0; i < TS_ARRAY_LEN(wrong); i++)
        assert_int_equal(ts_jose_key_from_pem(pem, len, wrong[i], NULL, &key), TS_E_INVALID);
    /* Truncated in the middle of its base64. */
    assert_int_equal(ts_jose_key_from_pem(pem, len / 2, TS_JOSE_ALG_ES256, NULL, &key),
                     TS_E_INVALID);
    ts_wipe(pem, len);
    free(pem);

    assert_int_equal(ts_jose_key_private_pem(fx[TS_JOSE_ALG_RS256], &pem), TS_OK);
    assert_int_equal(ts_jose_key_from_pem(pem, strlen(pem), TS_JOSE_ALG_ES256, NULL, &key),
                     TS_E_INVALID);
    assert_int_equal(ts_jose_key_from_pem(pem, strlen(pem), TS_JOSE_ALG_EDDSA, NULL, &key),
                     TS_E_INVALID);
    ts_wipe(pem, strlen(pem));
    free(pem);

    assert_int_equal(ts_jose_key_from_pem(garbage, strlen(garbage), TS_JOSE_ALG_ES256, NULL, &key),
                     TS_E_INVALID);
    assert_int_equal(ts_jose_key_from_pem("", 0, TS_JOSE_ALG_ES256, NULL, &key), TS_E_INVALID);
    assert_int_equal(ts_jose_key_from_pem("hello", 5, TS_JOSE_ALG_ES256, NULL, &key), TS_E_INVALID);
    /* Only PKCS#8 and SPKI labels: legacy and encrypted blocks are not tried. */
    static const char legacy[] = "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE "
                                 "KEY-----\n";
    assert_int_equal(ts_jose_key_from_pem(legacy, strlen(legacy), TS_JOSE_ALG_ES256, NULL, &key),
                     TS_E_INVALID);
    static const char encrypted[] = "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END "
                                    "ENCRYPTED PRIVATE KEY-----\n";
    assert_int_equal(
        ts_jose_key_from_pem(encrypted, strlen(encrypted), TS_JOSE_ALG_ES256, NULL, &key),
        TS_E_INVALID);
    assert_null(key);
}

static void test_generate_refusals(void **state)
{
    (void)state;
    struct ts_jose_key *key = NULL;

    assert_int_equal(ts_jose_key_generate(TS_JOSE_ALG_HS256, NULL, &key), TS_E_INVALID);
    assert_int_equal(ts_jose_key_generate(TS_JOSE_ALG_UNKNOWN, NULL, &key), TS_E_INVALID);
    assert_int_equal(ts_jose_key_generate((enum ts_jose_alg)99, NULL, &key), TS_E_INVALID);
    assert_null(key);
    /* Two generated keys differ. */
    struct ts_jose_key *k1 = NULL, *k2 = NULL;
    assert_int_equal(ts_jose_key_generate(TS_JOSE_ALG_EDDSA, NULL, &k1), TS_OK);
    assert_int_equal(ts_jose_key_generate(TS_JOSE_ALG_EDDSA, NULL, &k2), TS_OK);
    json_t *j1 = ts_jose_key_public_jwk(k1), *j2 = ts_jose_key_public_jwk(k2);
    assert_false(json_equal(j1, j2));
    json_decref(j1);
    json_decref(j2);
    ts_jose_key_free(k1);
    ts_jose_key_free(k2);
}

/* ---- concurrency ---- */

#define THREADS 8
#define ROUNDS 100

struct worker {
    pthread_t thread;
    const char *tokens[3]; /* HS256, ES256 and EdDSA tokens, signed by the fixtures */
    int failures;          /* results that differed from the expected ones */
};

/*
 * Each worker verifies the same tokens with the same shared keys, signs with the shared
 * HMAC key, and verifies a forged token, many times over. Under TSan or ASan this shows
 * that keys hold no per-call state.
 */
static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct keyring kr = {
        .keys = {fx[TS_JOSE_ALG_HS256], fx[TS_JOSE_ALG_ES256], fx[TS_JOSE_ALG_EDDSA]},
        .n = 3,
        .match_alg = true};

    for (int r = 0; r < ROUNDS; r++) {
        for (size_t i = 0; i < 3; i++) {
            json_t *claims = NULL;
            if (ts_jws_verify(w->tokens[i], strlen(w->tokens[i]), lookup, &kr, &claims, NULL) !=
                TS_OK)
                w->failures++;
            json_decref(claims);
        }
        char *t = NULL;
        if (ts_jws_sign(fx[TS_JOSE_ALG_HS256], "{\"w\":1}", 7, &t) != TS_OK) {
            w->failures++;
            continue;
        }
        json_t *claims = NULL;
        if (ts_jws_verify(t, strlen(t), lookup, &kr, &claims, NULL) != TS_OK)
            w->failures++;
        json_decref(claims);
        t[strlen(t) - 2] = t[strlen(t) - 2] == 'A' ? 'B' : 'A';
        if (ts_jws_verify(t, strlen(t), lookup, &kr, &claims, NULL) != TS_E_BAD_TOKEN)
            w->failures++;
        free(t);
    }
    return NULL;
}

static void test_concurrent_use(void **state)
{
    (void)state;
    struct worker workers[THREADS];
    char *tokens[3] = {NULL};
    static const enum ts_jose_alg algs[] = {TS_JOSE_ALG_HS256, TS_JOSE_ALG_ES256,
                                            TS_JOSE_ALG_EDDSA};

    for (size_t i = 0; i < 3; i++)
        assert_int_equal(ts_jws_sign(fx[algs[i]], "{\"sub\":\"t\"}", 11, &tokens[i]), TS_OK);
    for (int i = 0; i < THREADS; i++) {
        workers[i].failures = 0;
        for (size_t j = 0; j < 3; j++)
            workers[i].tokens[j] = tokens[j];
        assert_int_equal(pthread_create(&workers[i].thread, NULL, worker_main, &workers[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        assert_int_equal(pthread_join(workers[i].thread, NULL), 0);
        assert_int_equal(workers[i].failures, 0);
    }
    for (size_t i = 0; i < 3; i++)
        free(tokens[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_b64url_vectors),
        cmocka_unit_test(test_b64url_invalid),
        cmocka_unit_test(test_b64url_roundtrip_lengths),
        cmocka_unit_test(test_alg_names),
        cmocka_unit_test(test_rfc7515_a1_hs256),
        cmocka_unit_test(test_rfc7515_a2_rs256),
        cmocka_unit_test(test_rfc7515_a3_es256),
        cmocka_unit_test(test_rfc7515_a4_es512),
        cmocka_unit_test(test_rfc8037_ed25519),
        cmocka_unit_test(test_roundtrip_every_alg),
        cmocka_unit_test(test_sign_needs_private),
        cmocka_unit_test(test_pem_roundtrip),
        cmocka_unit_test(test_reject_alg_none),
        cmocka_unit_test(test_reject_alg_confusion),
        cmocka_unit_test(test_reject_kid_of_other_alg),
        cmocka_unit_test(test_reject_no_key),
        cmocka_unit_test(test_reject_bad_base64url),
        cmocka_unit_test(test_reject_part_count),
        cmocka_unit_test(test_reject_duplicate_members),
        cmocka_unit_test(test_reject_payload_not_object),
        cmocka_unit_test(test_reject_header_problems),
        cmocka_unit_test(test_reject_crit),
        cmocka_unit_test(test_reject_empty_signature),
        cmocka_unit_test(test_reject_ecdsa_shapes),
        cmocka_unit_test(test_reject_tampered),
        cmocka_unit_test(test_reject_signature_lengths),
        cmocka_unit_test(test_rsa_signature_rules),
        cmocka_unit_test(test_token_size_cap),
        cmocka_unit_test(test_claims_valid),
        cmocka_unit_test(test_claims_expired),
        cmocka_unit_test(test_claims_not_yet_valid),
        cmocka_unit_test(test_claims_issuer),
        cmocka_unit_test(test_claims_audience),
        cmocka_unit_test(test_claims_types),
        cmocka_unit_test(test_claims_require_exp),
        cmocka_unit_test(test_jwk_public_keys),
        cmocka_unit_test(test_jwk_private_ec),
        cmocka_unit_test(test_jwk_oct),
        cmocka_unit_test(test_jwk_kty_alg_mismatch),
        cmocka_unit_test(test_jwk_use_and_key_ops),
        cmocka_unit_test(test_jwk_bad_members),
        cmocka_unit_test(test_jwk_mismatched_private),
        cmocka_unit_test(test_public_jwk_roundtrip),
        cmocka_unit_test(test_hmac_key_length),
        cmocka_unit_test(test_key_from_pem_refusals),
        cmocka_unit_test(test_generate_refusals),
        cmocka_unit_test(test_concurrent_use),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

/*
 * fuzz_jwk.c - JWK import (ts_jose_key_from_jwk, src/jose/jose_key.c) and JWKS parsing
 * (ts__jwks_set_parse and ts__jwks_set_find, src/jwks/jwks_set.c) under a fuzzer.
 *
 * Input: a JSON document, either one JWK or a set {"keys": [...]}.
 * - The whole input goes through ts__jwks_set_parse. A refusal must say why; a set must hold
 *   at most 100 JWKs, count every other member of "keys" as skipped, and hold only public keys
 *   bound to algorithms an outside key may serve (RS*, PS*, ES256, ES384, EdDSA), each with its
 *   JWK's kid; ts__jwks_set_find must answer only keys of the algorithm asked for, and nothing
 *   for HS256 or without a kid when the set has more than one key.
 * - The document (when it is an object) and the first 8 members of its "keys" go through
 *   ts_jose_key_from_jwk with every default algorithm, allowing kty "oct". The answer must be
 *   TS_OK or TS_E_INVALID. An accepted key must have the JWK's "alg" (or the default), its
 *   "kid", a private part exactly when the JWK has "d", be refused when "oct" is not allowed
 *   and the JWK is kty "oct", and, for RSA, an odd public exponent above 1. Its public JWK
 *   (none for HMAC keys) must hold no "d", import again as a public key of the same algorithm
 *   that exports the same JWK, and, when the key is private, verify a token the key signed
 *   (the two halves belong together).
 * Every failed property calls abort(); ASan and LeakSanitizer catch the rest.
 *
 * Built with TS_FUZZ=ON as a libFuzzer program, otherwise with tests/fuzz/replay_main.c.
 * Includes jwks_int.h (private to src/jwks) for the set parser, as the module's own test would.
 * Seeds: tests/fuzz/corpus/jwk/; dictionary: tests/fuzz/dict/jwk.dict.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "jose/jose.h"
#include "jwks/jwks_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool same_str(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static void check_set(const uint8_t *data, size_t size, const json_t *doc)
{
    int64_t skipped = -1;
    char why[256] = "";
    struct ts__jwks_set *s =
        ts__jwks_set_parse((const char *)data, size, &skipped, why, sizeof why);
    if (!s) {
        if (!why[0] || skipped != 0)
            abort();
        return;
    }
    const json_t *keys = json_object_get(doc, "keys");
    if (!json_is_array(keys) || s->n > 100 || (size_t)skipped + s->n != json_array_size(keys))
        abort();
    for (size_t i = 0; i < s->n; i++) {
        bool any = false;
        for (size_t a = 0; a < TS__JWKS_ALG_SLOTS; a++) {
            const struct ts_jwks_key *k = s->jwks[i].by_alg[a];
            if (!k)
                continue;
            any = true;
            const struct ts_jose_key *jk = ts_jwks_key_jose(k);
            if (!ts__jwks_alg_usable((enum ts_jose_alg)a) ||
                ts_jose_key_alg(jk) != (enum ts_jose_alg)a || ts_jose_key_has_private(jk) ||
                !same_str(ts_jose_key_kid(jk), s->jwks[i].kid))
                abort();
            json_t *pub = ts_jose_key_public_jwk(jk);
            if (!pub)
                abort();
            json_decref(pub);
            const struct ts_jwks_key *f = ts__jwks_set_find(s, (enum ts_jose_alg)a, s->jwks[i].kid);
            if (s->jwks[i].kid || s->n == 1) {
                if (!f || ts_jose_key_alg(ts_jwks_key_jose(f)) != (enum ts_jose_alg)a)
                    abort();
            } else if (f) {
                abort(); /* no kid and several keys: ambiguous */
            }
        }
        if (!any)
            abort(); /* a kept JWK serves something */
        if (ts__jwks_set_find(s, TS_JOSE_ALG_HS256, s->jwks[i].kid) ||
            ts__jwks_set_find(s, TS_JOSE_ALG_UNKNOWN, s->jwks[i].kid))
            abort();
    }
    ts__jwks_set_free(s);
}

static const struct ts_jose_key *the_key(void *cls, enum ts_jose_alg alg, const char *kid)
{
    (void)alg;
    (void)kid;
    return cls;
}

/* The exported public exponent is odd and above 1. */
static bool rsa_exponent_ok(const json_t *pub)
{
    const char *e = json_string_value(json_object_get(pub, "e"));
    uint8_t b[16];
    size_t n = 0;
    if (!e || ts_b64url_decoded_max(strlen(e)) > sizeof b ||
        ts_b64url_decode(e, strlen(e), b, &n) != TS_OK || n == 0 || !(b[n - 1] & 1))
        return false;
    for (size_t i = 0; i + 1 < n; i++)
        if (b[i])
            return true;
    return b[n - 1] > 1;
}

static void check_key(const json_t *jwk, const struct ts_jose_key *k, enum ts_jose_alg def)
{
    const char *alg_name = json_string_value(json_object_get(jwk, "alg"));
    const char *kty = json_string_value(json_object_get(jwk, "kty"));
    enum ts_jose_alg want = alg_name ? ts_jose_alg_from_name(alg_name) : def;
    if (ts_jose_key_alg(k) != want ||
        !same_str(ts_jose_key_kid(k), json_string_value(json_object_get(jwk, "kid"))))
        abort();
    if (!kty)
        abort();
    json_t *pub = ts_jose_key_public_jwk(k);
    if (strcmp(kty, "oct") == 0) {
        struct ts_jose_key *k2 = NULL;
        if (!ts_jose_alg_is_hmac(want) || pub || !ts_jose_key_has_private(k) ||
            ts_jose_key_from_jwk(jwk, def, false, &k2) != TS_E_INVALID || k2)
            abort();
        return;
    }
    if (ts_jose_alg_is_hmac(want) || !pub || json_object_get(pub, "d") ||
        ts_jose_key_has_private(k) != (json_object_get(jwk, "d") != NULL))
        abort();
    if (strcmp(kty, "RSA") == 0 && !rsa_exponent_ok(pub))
        abort(); /* e = 1 would let anyone sign; an even e is no RSA key */
    struct ts_jose_key *k2 = NULL;
    if (ts_jose_key_from_jwk(pub, TS_JOSE_ALG_UNKNOWN, false, &k2) != TS_OK ||
        ts_jose_key_alg(k2) != want || ts_jose_key_has_private(k2))
        abort();
    json_t *pub2 = ts_jose_key_public_jwk(k2);
    if (!json_equal(pub, pub2))
        abort();
    if (ts_jose_key_has_private(k)) {
        static const char payload[] = "{\"sub\":\"fuzz\"}";
        char *tok = NULL;
        json_t *claims = NULL;
        if (ts_jws_sign(k, payload, sizeof payload - 1, &tok) != TS_OK ||
            ts_jws_verify(tok, strlen(tok), the_key, k2, &claims, NULL) != TS_OK)
            abort(); /* the private part does not belong to the public part */
        json_decref(claims);
        free(tok);
    }
    json_decref(pub2);
    json_decref(pub);
    ts_jose_key_free(k2);
}

static void check_jwk(const json_t *jwk)
{
    for (int a = TS_JOSE_ALG_UNKNOWN; a <= TS_JOSE_ALG_EDDSA; a++) {
        struct ts_jose_key *k = NULL;
        enum ts_rc rc = ts_jose_key_from_jwk(jwk, (enum ts_jose_alg)a, true, &k);
        if (rc != TS_OK && rc != TS_E_INVALID)
            abort();
        if ((rc == TS_OK) != (k != NULL))
            abort();
        if (k) {
            check_key(jwk, k, (enum ts_jose_alg)a);
            ts_jose_key_free(k);
        }
        /* with an "alg" member the default does not matter: one round is enough */
        if (json_object_get(jwk, "alg"))
            break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *doc = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
    check_set(data, size, doc);
    if (json_is_object(doc)) {
        check_jwk(doc);
        size_t i;
        const json_t *jwk;
        json_array_foreach(json_object_get(doc, "keys"), i, jwk)
        {
            if (i >= 8)
                break;
            check_jwk(jwk);
        }
    }
    json_decref(doc);
    return 0;
}

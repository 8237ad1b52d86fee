/*
 * fuzz_jws.c - JWS compact verification (ts_jws_verify), signing (ts_jws_sign) and the JWT
 * claim checks (ts_jwt_check_claims) of src/jose under a fuzzer.
 *
 * Fixed keys, built once from RFC test keys so that the RFCs' tokens are valid seeds: HS256
 * (RFC 7515 A.1, kid "hs"), RS256 (A.2, kid "rs"), ES256 (A.3, kid "es"), ES512 (A.4, kid
 * "es5") and EdDSA (RFC 8037 A.1, kid "ed"). The key lookup answers by kid when the header has
 * one (whatever the alg, as a careless keyring would) and by alg otherwise.
 *
 * Input, two forms:
 * - Anything not starting with '!': a token, verified as is. The answer must be TS_OK,
 *   TS_E_BAD_TOKEN or TS_E_TOO_BIG (that one exactly when it is over 16 KiB), the same with and
 *   without out_header, with nothing returned on a refusal. An accepted token must have an
 *   object header whose "alg" is exactly the verifying key's algorithm and no "crit", three
 *   canonical base64url parts, an object payload, and, for the HMAC key, a signature equal to
 *   the HMAC computed here with OpenSSL directly.
 * - '!', a key byte (index mod 5), a payload up to the first NUL, then mutations of 4 bytes
 *   each (op, position high, position low, byte; op mod 4: xor, delete, insert, truncate). The
 *   payload is signed with the key; that token must verify exactly when the payload is a JSON
 *   object without duplicate members, to that object and to the header {alg, kid, typ}; its
 *   claims go through ts_jwt_check_claims (TS_OK, TS_E_EXPIRED or TS_E_BAD_TOKEN only). The
 *   mutated token must be refused unless it is byte-for-byte the signed one.
 * Every failed property calls abort(); ASan and LeakSanitizer catch the rest.
 *
 * Built with TS_FUZZ=ON as a libFuzzer program, otherwise with tests/fuzz/replay_main.c.
 * Seeds: tests/fuzz/corpus/jws/; dictionary: tests/fuzz/dict/jws.dict.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "jose/jose.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define TOKEN_MAX 16384 /* TS_JOSE_TOKEN_MAX */
#define NKEYS 5

static const char *const jwks[NKEYS] = {
    /* RFC 7515 A.1 */
    "{\"kty\":\"oct\",\"alg\":\"HS256\",\"kid\":\"hs\",\"k\":\"AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-"
    "EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow\"}",
    /* RFC 7515 A.2 */
    "{\"kty\":\"RSA\",\"alg\":\"RS256\",\"kid\":\"rs\","
    "\"n\":\"ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1"
    "Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-"
    "bSf63kpaSHSXndS5z"
    "5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_"
    "I5IhlJH7aGhyxX"
    "FvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ\",\"e\":\"AQAB\","
    "\"d\":\"Eq5xpGnNCivDflJsRQBXHx1hdR1k6Ulwe2JZD50LpXyWPEAeP88vLNO97IjlA7_GQ5sLKMgvfTeXZx9SE-7YwV"
    "ol2NXOoAJe46sui395IW_GO-pWJ1O0BkTGoVEn2bKVRUCgu-"
    "GjBVaYLU6f3l9kJfFNS3E0QbVdxzubSu3Mkqzjkn439X0M_"
    "V51gfpRLI9JYanrC4D4qAdGcopV_0ZHHzQlBjudU2QvXt4ehNYTCBr6XCLQUShb1juUO1ZdiYoFaFQT5Tw8bGUl_x_jTj3"
    "ccPDVZFD9pIuhLhBOneufuBiB4cS98l2SR_RQyGWSeWjnczT0QU91p1DhOVRuOopznQ\","
    "\"p\":\"4BzEEOtIpmVdVEZNCqS7baC4crd0pqnRH_5IB3jw3bcxGn6QLvnEtfdUdiYrqBdss1l58BQ3KhooKeQTa9AB0H"
    "w_Py5PJdTJNPY8cQn7ouZ2KKDcmnPGBY5t7yLc1QlQ5xHdwW1VhvKn-nXqhJTBgIPgtldC-KDV5z-y2XDwGUc\","
    "\"q\":\"uQPEfgmVtjL0Uyyx88GZFF1fOunH3-7cepKmtH4pxhtCoHqpWmT8YAmZxaewHgHAjLYsp1ZSe7zFYHj7C6ul7T"
    "jeLQeZD_YwD66t62wDmpe_HlB-TnBA-njbglfIsRLtXlnDzQkv5dTltRJ11BKBBypeeF6689rjcJIDEz9RWdc\","
    "\"dp\":\"BwKfV3Akq5_MFZDFZCnW-wzl-CCo83WoZvnLQwCTeDv8uzluRSnm71I3QCLdhrqE2e9YkxvuxdBfpT_PI7Yz-"
    "FOKnu1R6HsJeDCjn12Sk3vmAktV2zb34MCdy7cpdTh_YVr7tss2u6vneTwrA86rZtu5Mbr1C1XsmvkxHQAdYo0\","
    "\"dq\":\"h_96-mK1R_7glhsum81dZxjTnYynPbZpHziZjeeHcXYsXaaMwkOlODsWa7I9xXDoRwbKgB719rrmI2oKr6N3D"
    "o9U0ajaHF-NKJnwgjMd2w9cjz3_-kyNlxAr2v4IKhGNpmM5iIgOS1VZnOZ68m6_pbLBSp3nssTdlqvd0tIiTHU\","
    "\"qi\":\"IYd7DHOhrWvxkwPQsRM2tOgrjbcrfvtQJipd-DlcxyVuuM9sQLdgjVk2oy26F0EmpScGLq2MowX7fhd_QJQ3y"
    "dy5cY7YIBi87w93IKLEdfnbJtoOPLUW0ITrJReOgo1cq9SbsxYawBgfp_gh6A5603k2-ZQwVK0JKSHuLFkuQ3U\"}",
    /* RFC 7515 A.3 */
    "{\"kty\":\"EC\",\"alg\":\"ES256\",\"kid\":\"es\",\"crv\":\"P-256\","
    "\"x\":\"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU\","
    "\"y\":\"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0\","
    "\"d\":\"jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI\"}",
    /* RFC 7515 A.4 */
    "{\"kty\":\"EC\",\"alg\":\"ES512\",\"kid\":\"es5\",\"crv\":\"P-521\","
    "\"x\":\"AekpBQ8ST8a8VcfVOTNl353vSrDCLLJXmPk06wTjxrrjcBpXp5EOnYG_"
    "NjFZ6OvLFV1jSfS9tsz4qUxcWceqwQGk"
    "\",\"y\":\"ADSmRA43Z1DSNx_RvcLI87cdL07l6jQyyBXMoxVg_l2Th-"
    "x3S1WDhjDly79ajL4Kkd0AZMaZmh9ubmf63e3ky"
    "Mj2\",\"d\":\"AY5pb7A0UFiB3RELSD64fTLOSV_"
    "jazdF7fLYyuTw8lOfRhWg6Y6rUrPAxerEzgdRhajnu0ferB0d53vM9m"
    "E15j2C\"}",
    /* RFC 8037 A.1 */
    "{\"kty\":\"OKP\",\"alg\":\"EdDSA\",\"kid\":\"ed\",\"crv\":\"Ed25519\","
    "\"d\":\"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A\","
    "\"x\":\"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo\"}",
};

static struct ts_jose_key *keys[NKEYS];
static uint8_t hmac_secret[64];
static size_t hmac_secret_len;
static const struct ts_jose_key *looked_up; /* the last key the lookup answered */

static void init(void)
{
    static bool done;
    if (done)
        return;
    for (size_t i = 0; i < NKEYS; i++) {
        json_t *jwk = json_loads(jwks[i], JSON_REJECT_DUPLICATES, NULL);
        if (!jwk || ts_jose_key_from_jwk(jwk, TS_JOSE_ALG_UNKNOWN, true, &keys[i]) != TS_OK ||
            !ts_jose_key_has_private(keys[i]))
            abort();
        if (i == 0) {
            const char *k = json_string_value(json_object_get(jwk, "k"));
            if (ts_b64url_decoded_max(strlen(k)) > sizeof(hmac_secret) ||
                ts_b64url_decode(k, strlen(k), hmac_secret, &hmac_secret_len) != TS_OK)
                abort();
        }
        json_decref(jwk);
    }
    /* names and algorithms map one to one */
    for (int a = TS_JOSE_ALG_HS256; a <= TS_JOSE_ALG_EDDSA; a++)
        if (ts_jose_alg_from_name(ts_jose_alg_name((enum ts_jose_alg)a)) != (enum ts_jose_alg)a)
            abort();
    done = true;
}

static const struct ts_jose_key *lookup(void *cls, enum ts_jose_alg alg, const char *kid)
{
    (void)cls;
    if (alg == TS_JOSE_ALG_UNKNOWN)
        abort(); /* jose.h: never UNKNOWN */
    looked_up = NULL;
    for (size_t i = 0; i < NKEYS && !looked_up; i++) {
        const char *k = ts_jose_key_kid(keys[i]);
        if (kid ? strcmp(k, kid) == 0 : ts_jose_key_alg(keys[i]) == alg)
            looked_up = keys[i];
    }
    return looked_up;
}

static bool same(const void *a, const void *b, size_t n)
{
    const unsigned char *x = a, *y = b;
    for (size_t i = 0; i < n; i++)
        if (x[i] != y[i])
            return false;
    return true;
}

/* Decodes a base64url part into a new heap buffer and checks it is the canonical spelling. */
static uint8_t *canonical_part(const char *part, size_t n, size_t *len)
{
    uint8_t *buf = malloc(ts_b64url_decoded_max(n) + 1);
    char *again = malloc(n + 1);
    if (!buf || !again || ts_b64url_decode(part, n, buf, len) != TS_OK ||
        ts_b64url_encode(buf, *len, again) != n || !same(again, part, n))
        abort();
    free(again);
    return buf;
}

/* Verifies with and without out_header; both must agree. */
static enum ts_rc verify(const char *tok, size_t len, json_t **claims, json_t **header)
{
    json_t *c2 = NULL;
    *claims = *header = NULL;
    looked_up = NULL;
    enum ts_rc rc = ts_jws_verify(tok, len, lookup, NULL, claims, header);
    const struct ts_jose_key *key = looked_up;
    enum ts_rc rc2 = ts_jws_verify(tok, len, lookup, NULL, &c2, NULL);
    looked_up = key;
    if (rc != rc2 || (rc == TS_OK) != (c2 != NULL) || (c2 && !json_equal(c2, *claims)))
        abort();
    json_decref(c2);
    if (rc != TS_OK && rc != TS_E_BAD_TOKEN && rc != TS_E_TOO_BIG)
        abort();
    if ((rc == TS_E_TOO_BIG) != (len > TOKEN_MAX))
        abort();
    if (rc != TS_OK && (*claims || *header))
        abort(); /* nothing comes back from a refusal */
    if (rc == TS_OK && (!json_is_object(*claims) || !json_is_object(*header) || !key))
        abort();
    return rc;
}

/* The properties of any token ts_jws_verify accepted. */
static void check_accepted(const char *tok, size_t len, const json_t *header)
{
    const struct ts_jose_key *key = looked_up;
    const char *alg = json_string_value(json_object_get(header, "alg"));
    if (!alg || strcmp(alg, ts_jose_alg_name(ts_jose_key_alg(key))) != 0 ||
        json_object_get(header, "crit"))
        abort();
    const char *d1 = memchr(tok, '.', len);
    const char *d2 = d1 ? memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - tok)) : NULL;
    if (!d2 || memchr(d2 + 1, '.', len - (size_t)(d2 + 1 - tok)))
        abort();
    size_t hl, pl, sl;
    free(canonical_part(tok, (size_t)(d1 - tok), &hl));
    free(canonical_part(d1 + 1, (size_t)(d2 - d1 - 1), &pl));
    uint8_t *sig = canonical_part(d2 + 1, len - (size_t)(d2 + 1 - tok), &sl);
    if (ts_jose_alg_is_hmac(ts_jose_key_alg(key))) {
        /* an oracle outside jose: HMAC-SHA256 over the signing input, as sent */
        uint8_t mac[EVP_MAX_MD_SIZE];
        size_t mac_len = 0;
        if (ts_jose_key_alg(key) != TS_JOSE_ALG_HS256 ||
            !EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, hmac_secret, hmac_secret_len,
                       (const unsigned char *)tok, (size_t)(d2 - tok), mac, sizeof mac, &mac_len) ||
            mac_len != sl || !same(mac, sig, sl))
            abort();
    }
    free(sig);
}

static void check_claims(const json_t *claims)
{
    const struct ts_jwt_rules rules[] = {
        {.now = 1300819000, .leeway = 30},
        {.issuer = "joe", .audience = "aud", .now = 1300819000, .leeway = 0, .require_exp = true},
        {.now = INT64_MAX, .leeway = INT64_MAX},
        {.now = INT64_MIN, .leeway = -1},
    };
    for (size_t i = 0; i < sizeof rules / sizeof rules[0]; i++) {
        enum ts_rc rc = ts_jwt_check_claims(claims, &rules[i]);
        if (rc != TS_OK && rc != TS_E_EXPIRED && rc != TS_E_BAD_TOKEN)
            abort();
    }
}

static void sign_and_mutate(const uint8_t *data, size_t size)
{
    const struct ts_jose_key *key = keys[data[1] % NKEYS];
    const uint8_t *p = data + 2, *nul = memchr(p, 0, size - 2);
    size_t plen = nul ? (size_t)(nul - p) : size - 2;
    const uint8_t *ops = nul ? nul + 1 : data + size;
    size_t nops = (size_t)(data + size - ops) / 4;

    char *tok = NULL;
    if (ts_jws_sign(key, (const char *)p, plen, &tok) != TS_OK)
        abort();
    size_t len = strlen(tok);

    json_t *claims, *header;
    enum ts_rc rc = verify(tok, len, &claims, &header);
    json_t *want = json_loadb((const char *)p, plen, JSON_REJECT_DUPLICATES, NULL);
    if (len > TOKEN_MAX) {
        if (rc != TS_E_TOO_BIG)
            abort();
    } else if (json_is_object(want)) {
        /* the signer's own token verifies, to the payload and header it signed */
        json_t *hdr = json_pack("{s:s, s:s, s:s}", "alg", ts_jose_alg_name(ts_jose_key_alg(key)),
                                "kid", ts_jose_key_kid(key), "typ", "JWT");
        if (rc != TS_OK || looked_up != key || !json_equal(claims, want) ||
            !json_equal(header, hdr))
            abort();
        json_decref(hdr);
        check_accepted(tok, len, header);
        check_claims(claims);
    } else if (rc != TS_E_BAD_TOKEN) {
        abort(); /* a payload that is no JSON object is refused after its signature */
    }
    json_decref(want);
    json_decref(claims);
    json_decref(header);

    /* mutate a copy; anything different from the signed token must be refused */
    size_t cap = len + 9;
    char *m = malloc(cap);
    if (!m)
        abort();
    memcpy(m, tok, len);
    size_t mlen = len;
    for (size_t i = 0; i < nops && i < 8; i++) {
        const uint8_t *op = ops + 4 * i;
        size_t pos = (size_t)(op[1] << 8 | op[2]);
        switch (op[0] % 4) {
        case 0: /* xor */
            if (mlen)
                m[pos % mlen] = (char)(m[pos % mlen] ^ op[3]);
            break;
        case 1: /* delete */
            if (mlen) {
                pos %= mlen;
                memmove(m + pos, m + pos + 1, mlen - pos - 1);
                mlen--;
            }
            break;
        case 2: /* insert */
            pos %= mlen + 1;
            memmove(m + pos + 1, m + pos, mlen - pos);
            m[pos] = (char)op[3];
            mlen++;
            break;
        case 3: /* truncate */
            mlen = pos % (mlen + 1);
            break;
        }
    }
    rc = verify(m, mlen, &claims, &header);
    if (rc == TS_OK) {
        if (mlen != len || !same(m, tok, len))
            abort(); /* a token the key never signed was accepted */
        check_accepted(m, mlen, header);
    }
    json_decref(claims);
    json_decref(header);
    free(m);
    free(tok);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    init();
    if (size >= 2 && data[0] == '!') {
        sign_and_mutate(data, size);
        return 0;
    }
    json_t *claims, *header;
    if (verify((const char *)data, size, &claims, &header) == TS_OK) {
        check_accepted((const char *)data, size, header);
        check_claims(claims);
    }
    json_decref(claims);
    json_decref(header);
    return 0;
}

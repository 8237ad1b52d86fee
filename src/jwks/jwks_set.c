/*
 * jwks_set.c - a fetched JWKS document turned into verification keys, and the choice of a key
 * for a token's (alg, kid).
 *
 * Every key is parsed here, on the fetcher thread, once per algorithm it may serve, so a
 * lookup only compares strings and takes a reference. A JWK without "alg" that fits several
 * algorithms (an RSA key: RS256..PS512) gets one jose key per algorithm, because jose binds a
 * key to exactly one algorithm (RFC 8725 §3.1) and we keep it that way.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jwks_int.h"

/* A set larger than this is a misconfiguration or an attack (each RSA JWK without "alg" costs
 * six imports); real providers publish two to ten keys. The rest are skipped and counted. */
#define JWKS_MAX_KEYS 100
/* Longer kids are skipped: they cannot be a provider's key identifier in good faith. */
#define JWKS_MAX_KID 256

bool ts__jwks_alg_usable(enum ts_jose_alg alg)
{
    switch (alg) {
    case TS_JOSE_ALG_RS256:
    case TS_JOSE_ALG_RS384:
    case TS_JOSE_ALG_RS512:
    case TS_JOSE_ALG_PS256:
    case TS_JOSE_ALG_PS384:
    case TS_JOSE_ALG_PS512:
    case TS_JOSE_ALG_ES256:
    case TS_JOSE_ALG_ES384:
    case TS_JOSE_ALG_EDDSA:
        return true;
    default:
        /* HS*: a public set's "secret" is known to everyone (RFC 8725 §2.1). ES512 is not on
         * issue 5's list. UNKNOWN covers "none". */
        return false;
    }
}

const struct ts_jose_key *ts_jwks_key_jose(const struct ts_jwks_key *key)
{
    return key->key;
}

void ts_jwks_key_release(struct ts_jwks_key *key)
{
    if (!key || atomic_fetch_sub(&key->refs, 1) != 1)
        return;
    ts_jose_key_free(key->key);
    free(key);
}

void ts__jwks_set_free(struct ts__jwks_set *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++) {
        for (size_t a = 0; a < TS__JWKS_ALG_SLOTS; a++)
            ts_jwks_key_release(s->jwks[i].by_alg[a]);
        free(s->jwks[i].kid);
    }
    free(s->jwks);
    free(s);
}

/* The member's string, NULL when absent; false when present but not a string. */
static bool opt_str(const json_t *obj, const char *name, const char **out)
{
    const json_t *v = json_object_get(obj, name);
    *out = NULL;
    if (!v)
        return true;
    if (!json_is_string(v))
        return false;
    *out = json_string_value(v);
    return true;
}

/* The algorithms a key of this kty (and crv) can verify for, within the usable ones. */
static size_t fitting_algs(const char *kty, const char *crv, enum ts_jose_alg out[6])
{
    static const enum ts_jose_alg rsa[] = {TS_JOSE_ALG_RS256, TS_JOSE_ALG_RS384, TS_JOSE_ALG_RS512,
                                           TS_JOSE_ALG_PS256, TS_JOSE_ALG_PS384, TS_JOSE_ALG_PS512};
    if (strcmp(kty, "RSA") == 0) {
        memcpy(out, rsa, sizeof(rsa));
        return TS_ARRAY_LEN(rsa);
    }
    if (strcmp(kty, "EC") == 0 && crv && strcmp(crv, "P-256") == 0) {
        out[0] = TS_JOSE_ALG_ES256;
        return 1;
    }
    if (strcmp(kty, "EC") == 0 && crv && strcmp(crv, "P-384") == 0) {
        out[0] = TS_JOSE_ALG_ES384;
        return 1;
    }
    if (strcmp(kty, "OKP") == 0 && crv && strcmp(crv, "Ed25519") == 0) {
        out[0] = TS_JOSE_ALG_EDDSA;
        return 1;
    }
    /* "oct" (RFC 7518 §6.4) never: see ts__jwks_alg_usable. Other types and curves: none. */
    return 0;
}

/* Fills out with the keys jwk serves; false (nothing kept) when it serves none. */
static bool parse_jwk(const json_t *jwk, struct ts__jwks_jwk *out)
{
    const char *kty, *crv, *use, *kid, *alg_name;
    enum ts_jose_alg algs[6];
    size_t nalgs;

    if (!json_is_object(jwk))
        return false;
    if (!opt_str(jwk, "kty", &kty) || !kty || !opt_str(jwk, "crv", &crv) ||
        !opt_str(jwk, "use", &use) || !opt_str(jwk, "kid", &kid) || !opt_str(jwk, "alg", &alg_name))
        return false;
    /* RFC 7517 §4.2: an encryption key is never a signature key. */
    if (use && strcmp(use, "sig") != 0)
        return false;
    /* A published private key (RFC 7518 §6.2.2.1, §6.3.2.1; RFC 8037 §2) means anyone can sign
     * with it: such a provider's tokens prove nothing. */
    if (json_object_get(jwk, "d"))
        return false;
    if (kid && strlen(kid) > JWKS_MAX_KID)
        return false;
    nalgs = fitting_algs(kty, crv, algs);
    if (alg_name) {
        /* RFC 7517 §4.4: the JWK names the one algorithm it is for. */
        enum ts_jose_alg a = ts_jose_alg_from_name(alg_name);
        bool fits = false;
        for (size_t i = 0; i < nalgs; i++)
            fits = fits || algs[i] == a;
        if (!fits || !ts__jwks_alg_usable(a))
            return false;
        algs[0] = a;
        nalgs = 1;
    }
    if (nalgs == 0)
        return false;

    memset(out, 0, sizeof(*out));
    for (size_t i = 0; i < nalgs; i++) {
        struct ts_jose_key *k = NULL;
        if (ts_jose_key_from_jwk(jwk, algs[i], false, &k) != TS_OK) {
            for (size_t a = 0; a < TS__JWKS_ALG_SLOTS; a++)
                ts_jwks_key_release(out->by_alg[a]);
            memset(out, 0, sizeof(*out));
            return false;
        }
        struct ts_jwks_key *key = ts_xmalloc(sizeof(*key));
        atomic_init(&key->refs, 1);
        key->key = k;
        out->by_alg[algs[i]] = key;
    }
    out->kid = kid ? ts_xstrdup(kid) : NULL;
    return true;
}

struct ts__jwks_set *ts__jwks_set_parse(const char *body, size_t len, int64_t *skipped, char *why,
                                        size_t why_len)
{
    json_error_t err;
    json_t *doc = json_loadb(body, len, JSON_REJECT_DUPLICATES, &err);
    struct ts__jwks_set *set = NULL;
    const json_t *keys;
    size_t i, n;
    const json_t *jwk;

    *skipped = 0;
    if (!doc) {
        snprintf(why, why_len, "body is not JSON: %s (line %d)", err.text, err.line);
        return NULL;
    }
    keys = json_object_get(doc, "keys");
    if (!json_is_object(doc) || !json_is_array(keys)) {
        snprintf(why, why_len, "body is not a JSON object with a \"keys\" array");
        goto out;
    }
    set = ts_xcalloc(1, sizeof(*set));
    n = json_array_size(keys);
    set->jwks = ts_xcalloc(n < JWKS_MAX_KEYS ? n + 1 : JWKS_MAX_KEYS, sizeof(*set->jwks));
    json_array_foreach(keys, i, jwk)
    {
        if (set->n < JWKS_MAX_KEYS && parse_jwk(jwk, &set->jwks[set->n]))
            set->n++;
        else
            (*skipped)++;
    }
out:
    json_decref(doc);
    return set;
}

struct ts_jwks_key *ts__jwks_set_find(const struct ts__jwks_set *s, enum ts_jose_alg alg,
                                      const char *kid)
{
    if (!ts__jwks_alg_usable(alg))
        return NULL;
    /* Without a kid, only a set with a single usable key is unambiguous (Fauna's rule). */
    if (!kid)
        return s->n == 1 ? s->jwks[0].by_alg[alg] : NULL;
    for (size_t i = 0; i < s->n; i++) {
        if (s->jwks[i].kid && strcmp(s->jwks[i].kid, kid) == 0 && s->jwks[i].by_alg[alg])
            return s->jwks[i].by_alg[alg];
    }
    return NULL;
}

/*
 * jose_key.c - algorithm names and keys: HMAC secrets, generated key pairs, PEM and JWK
 * import (RFC 7517, RFC 7518 §6, RFC 8037 §2) and public JWK export.
 *
 * What this file must never do: let one key serve two algorithms; accept a key whose type,
 * curve or size does not fit its algorithm (RFC 7518 §3.2 to §3.5, RFC 8037 §3.1); accept
 * a JWK meant for encryption; publish an HMAC secret or any private key member. Every key
 * leaves here immutable, so the signing code can share it between threads.
 *
 * Internals: docs/internals/jose.md.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/decoder.h>
#include <openssl/encoder.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>

#include "jose/jose_int.h"

/* The largest binary JWK member we decode, in bytes (an 8192-bit modulus is 1024). */
#define JWK_MEMBER_MAX 8192

/* Indexed by enum ts_jose_alg; the RFC 7518 §3.1 and RFC 8037 §3.1 "alg" values. */
static const struct ts_jose_alg_info algs[] = {
    [TS_JOSE_ALG_UNKNOWN] = {"unknown", NULL, TS_JOSE_FAMILY_NONE, 0, NULL, NULL},
    [TS_JOSE_ALG_HS256] = {"HS256", "SHA256", TS_JOSE_FAMILY_HMAC, 32, NULL, NULL},
    [TS_JOSE_ALG_HS384] = {"HS384", "SHA384", TS_JOSE_FAMILY_HMAC, 48, NULL, NULL},
    [TS_JOSE_ALG_HS512] = {"HS512", "SHA512", TS_JOSE_FAMILY_HMAC, 64, NULL, NULL},
    [TS_JOSE_ALG_RS256] = {"RS256", "SHA256", TS_JOSE_FAMILY_RSA, 0, NULL, NULL},
    [TS_JOSE_ALG_RS384] = {"RS384", "SHA384", TS_JOSE_FAMILY_RSA, 0, NULL, NULL},
    [TS_JOSE_ALG_RS512] = {"RS512", "SHA512", TS_JOSE_FAMILY_RSA, 0, NULL, NULL},
    [TS_JOSE_ALG_PS256] = {"PS256", "SHA256", TS_JOSE_FAMILY_PSS, 0, NULL, NULL},
    [TS_JOSE_ALG_PS384] = {"PS384", "SHA384", TS_JOSE_FAMILY_PSS, 0, NULL, NULL},
    [TS_JOSE_ALG_PS512] = {"PS512", "SHA512", TS_JOSE_FAMILY_PSS, 0, NULL, NULL},
    [TS_JOSE_ALG_ES256] = {"ES256", "SHA256", TS_JOSE_FAMILY_EC, 32, "prime256v1", "P-256"},
    [TS_JOSE_ALG_ES384] = {"ES384", "SHA384", TS_JOSE_FAMILY_EC, 48, "secp384r1", "P-384"},
    [TS_JOSE_ALG_ES512] = {"ES512", "SHA512", TS_JOSE_FAMILY_EC, 66, "secp521r1", "P-521"},
    [TS_JOSE_ALG_EDDSA] = {"EdDSA", NULL, TS_JOSE_FAMILY_ED, 32, NULL, "Ed25519"},
};

const struct ts_jose_alg_info *ts__jose_alg_info(enum ts_jose_alg alg)
{
    if ((size_t)alg >= TS_ARRAY_LEN(algs))
        return &algs[TS_JOSE_ALG_UNKNOWN];
    return &algs[alg];
}

enum ts_jose_alg ts_jose_alg_from_name(const char *name)
{
    if (!name)
        return TS_JOSE_ALG_UNKNOWN;
    /* Exact, case-sensitive match (RFC 7515 §4.1.1); "none" is not in the table. */
    for (size_t i = 1; i < TS_ARRAY_LEN(algs); i++) {
        if (strcmp(name, algs[i].name) == 0)
            return (enum ts_jose_alg)i;
    }
    return TS_JOSE_ALG_UNKNOWN;
}

const char *ts_jose_alg_name(enum ts_jose_alg alg)
{
    return ts__jose_alg_info(alg)->name;
}

bool ts_jose_alg_is_hmac(enum ts_jose_alg alg)
{
    return ts__jose_alg_info(alg)->family == TS_JOSE_FAMILY_HMAC;
}

/* ---- construction and accessors ---- */

/* Allocates a key with no key material yet; the caller fills it in. */
static struct ts_jose_key *key_alloc(enum ts_jose_alg alg, const char *kid)
{
    struct ts_jose_key *key = ts_xcalloc(1, sizeof(*key));
    key->alg = alg;
    key->kid = kid ? ts_xstrdup(kid) : NULL;
    return key;
}

void ts_jose_key_free(struct ts_jose_key *key)
{
    if (!key)
        return;
    /* Both free functions wipe the key material they hold (OpenSSL cleanses on free). */
    EVP_MAC_CTX_free(key->mac);
    EVP_PKEY_free(key->pkey);
    free(key->kid);
    free(key);
}

enum ts_jose_alg ts_jose_key_alg(const struct ts_jose_key *key)
{
    return key->alg;
}

const char *ts_jose_key_kid(const struct ts_jose_key *key)
{
    return key->kid;
}

bool ts_jose_key_has_private(const struct ts_jose_key *key)
{
    return key->has_private;
}

enum ts_rc ts_jose_key_new_hmac(enum ts_jose_alg alg, const uint8_t *secret, size_t secret_len,
                                const char *kid, struct ts_jose_key **out)
{
    const struct ts_jose_alg_info *info = ts__jose_alg_info(alg);
    EVP_MAC *mac = NULL;
    EVP_MAC_CTX *ctx = NULL;
    OSSL_PARAM params[2];
    char md[16];
    enum ts_rc rc = TS_E_INVALID;

    if (info->family != TS_JOSE_FAMILY_HMAC)
        goto out;
    /* RFC 7518 §3.2: a key of the same size as the hash output or larger MUST be used. */
    if (!secret || secret_len < info->len)
        goto out;

    rc = TS_E_CRYPTO;
    /* OSSL_PARAM wants a mutable buffer for the digest name; OpenSSL only reads it. */
    TS_ASSERT(strlen(info->md) < sizeof(md));
    memcpy(md, info->md, strlen(info->md) + 1);
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, md, 0);
    params[1] = OSSL_PARAM_construct_end();
    mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (!mac)
        goto out;
    ctx = EVP_MAC_CTX_new(mac);
    /*
     * Keying now computes the inner and outer pads once; each verification then starts
     * from a copy of this context (EVP_MAC_CTX_dup) instead of re-deriving them.
     */
    if (!ctx || !EVP_MAC_init(ctx, secret, secret_len, params))
        goto out;

    struct ts_jose_key *key = key_alloc(alg, kid);
    key->mac = ctx;
    ctx = NULL;
    key->has_private = true;
    *out = key;
    rc = TS_OK;
out:
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(mac);
    if (rc)
        ERR_clear_error();
    return rc;
}

enum ts_rc ts_jose_key_generate(enum ts_jose_alg alg, const char *kid, struct ts_jose_key **out)
{
    const struct ts_jose_alg_info *info = ts__jose_alg_info(alg);
    EVP_PKEY *pkey = NULL;

    switch (info->family) {
    case TS_JOSE_FAMILY_EC:
        pkey = EVP_PKEY_Q_keygen(NULL, NULL, "EC", info->group);
        break;
    case TS_JOSE_FAMILY_ED:
        pkey = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
        break;
    case TS_JOSE_FAMILY_RSA:
    case TS_JOSE_FAMILY_PSS:
        /* RFC 7518 §3.3: 2048 bits is the minimum, and enough for signatures today. */
        pkey = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
        break;
    case TS_JOSE_FAMILY_HMAC:
    case TS_JOSE_FAMILY_NONE:
        /* An HMAC secret is configured, never generated here: it could not be exported. */
        return TS_E_INVALID;
    }
    if (!pkey) {
        ERR_clear_error();
        return TS_E_CRYPTO;
    }
    struct ts_jose_key *key = key_alloc(alg, kid);
    key->pkey = pkey;
    key->has_private = true;
    *out = key;
    return TS_OK;
}

/* ---- checks shared by every way of loading an asymmetric key ---- */

/*
 * True when pkey is of the type, curve and size the algorithm needs. This is what binds a
 * key to one algorithm: an EC key never becomes an RS256 key, a P-384 key never an ES256
 * key, an RSA key under 2048 bits never anything (RFC 7518 §3.3, §3.4, §3.5; RFC 8037).
 */
static bool pkey_fits(const EVP_PKEY *pkey, const struct ts_jose_alg_info *info)
{
    char group[64];

    switch (info->family) {
    case TS_JOSE_FAMILY_RSA:
    case TS_JOSE_FAMILY_PSS:
        return EVP_PKEY_is_a(pkey, "RSA") && EVP_PKEY_get_bits(pkey) >= 2048 &&
               EVP_PKEY_get_bits(pkey) <= TS_JOSE_RSA_BITS_MAX;
    case TS_JOSE_FAMILY_EC:
        return EVP_PKEY_is_a(pkey, "EC") &&
               EVP_PKEY_get_group_name(pkey, group, sizeof(group), NULL) == 1 &&
               strcmp(group, info->group) == 0;
    case TS_JOSE_FAMILY_ED:
        return EVP_PKEY_is_a(pkey, "ED25519");
    case TS_JOSE_FAMILY_HMAC:
    case TS_JOSE_FAMILY_NONE:
        break;
    }
    return false;
}

/*
 * An RSA public exponent must be odd and above 1. With e = 1 every signature is its own
 * message (s^1 mod n = s), so anyone can "sign" for the key: OpenSSL verifies such a token
 * (seen while seeding tests/fuzz/fuzz_jwk.c). An even e is no RSA key at all.
 */
static bool rsa_exponent_ok(const EVP_PKEY *pkey)
{
    BIGNUM *e = NULL;
    bool ok = EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_E, &e) == 1 && BN_is_odd(e) &&
              !BN_is_one(e);
    BN_free(e);
    return ok;
}

/*
 * Runs OpenSSL's consistency checks on a key that came from outside. A private key must
 * match its public half (a JWK can carry a "d" that does not belong to its "x"); an EC
 * public point must lie on the curve, which stops invalid-curve attacks. RSA public keys
 * skip OpenSSL's SP 800-56B public check: it costs milliseconds (over 100 ms at 8192 bits)
 * and a malformed modulus can only fail its own signatures; the exponent is checked here.
 */
static bool pkey_valid(EVP_PKEY *pkey, bool has_private)
{
    EVP_PKEY_CTX *ctx;
    int ok;

    if (EVP_PKEY_is_a(pkey, "RSA") && !rsa_exponent_ok(pkey))
        return false;
    if (!has_private && EVP_PKEY_is_a(pkey, "RSA"))
        return true;
    ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
    if (!ctx)
        return false;
    ok = has_private ? EVP_PKEY_pairwise_check(ctx) : EVP_PKEY_public_check(ctx);
    EVP_PKEY_CTX_free(ctx);
    return ok == 1;
}

/* Wraps an imported pkey (consumed) into a key once it passed pkey_fits and pkey_valid. */
static enum ts_rc key_from_pkey(EVP_PKEY *pkey, bool has_private, enum ts_jose_alg alg,
                                const char *kid, struct ts_jose_key **out)
{
    if (!pkey_fits(pkey, ts__jose_alg_info(alg)) || !pkey_valid(pkey, has_private)) {
        EVP_PKEY_free(pkey);
        return TS_E_INVALID;
    }
    struct ts_jose_key *key = key_alloc(alg, kid);
    key->pkey = pkey;
    key->has_private = has_private;
    *out = key;
    return TS_OK;
}

/* ---- PEM ---- */

enum ts_rc ts_jose_key_from_pem(const char *pem, size_t pem_len, enum ts_jose_alg alg,
                                const char *kid, struct ts_jose_key **out)
{
    static const char priv_label[] = "-----BEGIN PRIVATE KEY-----";
    static const char pub_label[] = "-----BEGIN PUBLIC KEY-----";
    const struct ts_jose_alg_info *info = ts__jose_alg_info(alg);
    OSSL_DECODER_CTX *dctx = NULL;
    EVP_PKEY *pkey = NULL;
    const char *structure;
    int selection;
    bool has_private;
    enum ts_rc rc = TS_E_INVALID;

    if (info->family == TS_JOSE_FAMILY_NONE || info->family == TS_JOSE_FAMILY_HMAC || !pem)
        goto out;
    /*
     * The label decides what we decode, so a public key can never be mistaken for a private
     * one and no other format (encrypted keys, which would ask for a passphrase, or legacy
     * "RSA PRIVATE KEY" blocks) is tried.
     */
    if (memmem(pem, pem_len, priv_label, sizeof(priv_label) - 1)) {
        structure = "PrivateKeyInfo";
        selection = EVP_PKEY_KEYPAIR;
        has_private = true;
    } else if (memmem(pem, pem_len, pub_label, sizeof(pub_label) - 1)) {
        structure = "SubjectPublicKeyInfo";
        selection = EVP_PKEY_PUBLIC_KEY;
        has_private = false;
    } else {
        goto out;
    }

    dctx = OSSL_DECODER_CTX_new_for_pkey(&pkey, "PEM", structure, NULL, selection, NULL, NULL);
    if (!dctx) {
        rc = TS_E_CRYPTO;
        goto out;
    }
    const unsigned char *data = (const unsigned char *)pem;
    size_t len = pem_len;
    if (!OSSL_DECODER_from_data(dctx, &data, &len) || !pkey)
        goto out;
    rc = key_from_pkey(pkey, has_private, alg, kid, out);
    pkey = NULL;
out:
    EVP_PKEY_free(pkey);
    OSSL_DECODER_CTX_free(dctx);
    if (rc)
        ERR_clear_error();
    return rc;
}

enum ts_rc ts_jose_key_private_pem(const struct ts_jose_key *key, char **out_pem)
{
    OSSL_ENCODER_CTX *ectx = NULL;
    unsigned char *data = NULL;
    size_t len = 0;
    enum ts_rc rc = TS_E_INVALID;

    if (!key->pkey || !key->has_private)
        goto out;
    rc = TS_E_CRYPTO;
    ectx =
        OSSL_ENCODER_CTX_new_for_pkey(key->pkey, EVP_PKEY_KEYPAIR, "PEM", "PrivateKeyInfo", NULL);
    if (!ectx || OSSL_ENCODER_CTX_get_num_encoders(ectx) == 0)
        goto out;
    if (!OSSL_ENCODER_to_data(ectx, &data, &len))
        goto out;
    *out_pem = ts_xstrndup((const char *)data, len);
    rc = TS_OK;
out:
    if (data)
        OPENSSL_clear_free(data, len);
    OSSL_ENCODER_CTX_free(ectx);
    if (rc)
        ERR_clear_error();
    return rc;
}

/* ---- JWK import ---- */

/* Reads the optional string member name: *out is NULL when it is absent. */
static enum ts_rc member_str(const json_t *obj, const char *name, const char **out)
{
    const json_t *v = json_object_get(obj, name);

    if (!v) {
        *out = NULL;
        return TS_OK;
    }
    if (!json_is_string(v))
        return TS_E_INVALID;
    *out = json_string_value(v);
    return TS_OK;
}

/* True when the member name is a string equal to want. */
static bool member_is(const json_t *obj, const char *name, const char *want)
{
    const char *s;
    return member_str(obj, name, &s) == TS_OK && s && strcmp(s, want) == 0;
}

/*
 * Decodes the base64url member name (RFC 7518 §6: every binary member is base64url) into
 * a heap buffer the caller wipes and frees. TS_E_INVALID when it is absent, not a string,
 * not canonical base64url or longer than max bytes.
 */
static enum ts_rc member_bytes(const json_t *obj, const char *name, size_t max, uint8_t **out,
                               size_t *out_len)
{
    const json_t *v = json_object_get(obj, name);

    if (!json_is_string(v))
        return TS_E_INVALID;
    size_t n = json_string_length(v);
    size_t cap = ts_b64url_decoded_max(n);
    if (cap > max)
        return TS_E_INVALID;
    uint8_t *buf = ts_xmalloc(cap);
    size_t len;
    if (ts_b64url_decode(json_string_value(v), n, buf, &len) != TS_OK) {
        free(buf);
        return TS_E_INVALID;
    }
    *out = buf;
    *out_len = len;
    return TS_OK;
}

/* Like member_bytes, but requires exactly len bytes (fixed-size EC and OKP members). */
static enum ts_rc member_fixed(const json_t *obj, const char *name, size_t len, uint8_t **out)
{
    uint8_t *buf = NULL;
    size_t got = 0;
    enum ts_rc rc = member_bytes(obj, name, len, &buf, &got);

    if (rc)
        return rc;
    if (got != len) {
        ts_wipe(buf, got);
        free(buf);
        return TS_E_INVALID;
    }
    *out = buf;
    return TS_OK;
}

/*
 * Decodes a Base64urlUInt member (RFC 7518 §2) into a BIGNUM, a secure one when it is
 * private, so that OSSL_PARAM_BLD copies it into memory that is wiped when freed.
 */
static enum ts_rc member_bn(const json_t *obj, const char *name, size_t max, bool secret,
                            BIGNUM **out)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    enum ts_rc rc = member_bytes(obj, name, max, &buf, &len);

    if (rc)
        return rc;
    /* RFC 7518 §2: zero is represented as one 0 octet; an empty value is no number. */
    if (len == 0) {
        free(buf);
        return TS_E_INVALID;
    }
    BIGNUM *bn = secret ? BN_secure_new() : BN_new();
    if (!bn || !BN_bin2bn(buf, (int)len, bn)) {
        BN_free(bn);
        rc = TS_E_CRYPTO;
    } else {
        *out = bn;
    }
    ts_wipe(buf, len);
    free(buf);
    return rc;
}

/* Turns a parameter list into a key of the OpenSSL key type name (EVP_PKEY_fromdata). */
static enum ts_rc pkey_from_params(const char *name, bool has_private, OSSL_PARAM *params,
                                   EVP_PKEY **out)
{
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, name, NULL);
    EVP_PKEY *pkey = NULL;
    enum ts_rc rc = TS_E_CRYPTO;

    if (!ctx || EVP_PKEY_fromdata_init(ctx) != 1)
        goto out;
    /* A failure here is a value OpenSSL refused (a point not on the curve, ...). */
    rc = TS_E_INVALID;
    if (EVP_PKEY_fromdata(ctx, &pkey, has_private ? EVP_PKEY_KEYPAIR : EVP_PKEY_PUBLIC_KEY,
                          params) != 1)
        goto out;
    *out = pkey;
    rc = TS_OK;
out:
    EVP_PKEY_CTX_free(ctx);
    return rc;
}

/*
 * RSA (RFC 7518 §6.3): n and e; a private key adds d and all five CRT members. We refuse a
 * private key without them (§6.3.2 lets a producer omit them; none we need to read does)
 * and multi-prime keys ("oth", §6.3.2.7).
 */
static enum ts_rc rsa_from_jwk(const json_t *jwk, EVP_PKEY **out, bool *out_private)
{
    static const char *const names[] = {"n", "e", "d", "p", "q", "dp", "dq", "qi"};
    static const char *const params_names[] = {
        OSSL_PKEY_PARAM_RSA_N,         OSSL_PKEY_PARAM_RSA_E,
        OSSL_PKEY_PARAM_RSA_D,         OSSL_PKEY_PARAM_RSA_FACTOR1,
        OSSL_PKEY_PARAM_RSA_FACTOR2,   OSSL_PKEY_PARAM_RSA_EXPONENT1,
        OSSL_PKEY_PARAM_RSA_EXPONENT2, OSSL_PKEY_PARAM_RSA_COEFFICIENT1,
    };
    BIGNUM *bn[TS_ARRAY_LEN(names)] = {NULL};
    OSSL_PARAM_BLD *bld = NULL;
    OSSL_PARAM *params = NULL;
    size_t count = 2;
    enum ts_rc rc = TS_E_INVALID;
    bool has_private = json_object_get(jwk, "d") != NULL;

    if (json_object_get(jwk, "oth"))
        goto out;
    if (has_private) {
        count = TS_ARRAY_LEN(names);
    } else {
        for (size_t i = 3; i < TS_ARRAY_LEN(names); i++) {
            if (json_object_get(jwk, names[i]))
                goto out;
        }
    }
    for (size_t i = 0; i < count; i++) {
        /* e fits in 8 bytes for every real key; the other members are at most n's size. */
        size_t max = i == 1 ? 8 : TS_JOSE_RSA_BITS_MAX / 8;
        rc = member_bn(jwk, names[i], max, i >= 2, &bn[i]);
        if (rc)
            goto out;
    }

    rc = TS_E_CRYPTO;
    bld = OSSL_PARAM_BLD_new();
    if (!bld)
        goto out;
    for (size_t i = 0; i < count; i++) {
        if (!OSSL_PARAM_BLD_push_BN(bld, params_names[i], bn[i]))
            goto out;
    }
    params = OSSL_PARAM_BLD_to_param(bld);
    if (!params)
        goto out;
    rc = pkey_from_params("RSA", has_private, params, out);
    if (rc == TS_OK)
        *out_private = has_private;
out:
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    for (size_t i = 0; i < TS_ARRAY_LEN(bn); i++)
        BN_clear_free(bn[i]);
    return rc;
}

/*
 * EC (RFC 7518 §6.2): crv must be the algorithm's curve (§3.4 pairs each ES* with one),
 * x and y exactly the coordinate size (§6.2.1.2, §6.2.1.3), d too when present (§6.2.2.1).
 */
static enum ts_rc ec_from_jwk(const json_t *jwk, const struct ts_jose_alg_info *info,
                              EVP_PKEY **out, bool *out_private)
{
    uint8_t *x = NULL, *y = NULL, *pub = NULL;
    BIGNUM *d = NULL;
    OSSL_PARAM_BLD *bld = NULL;
    OSSL_PARAM *params = NULL;
    size_t n = info->len;
    bool has_private = json_object_get(jwk, "d") != NULL;
    enum ts_rc rc = TS_E_INVALID;

    if (!member_is(jwk, "crv", info->crv))
        goto out;
    if ((rc = member_fixed(jwk, "x", n, &x)) || (rc = member_fixed(jwk, "y", n, &y)))
        goto out;
    if (has_private) {
        uint8_t *dbuf = NULL;
        if ((rc = member_fixed(jwk, "d", n, &dbuf)))
            goto out;
        d = BN_secure_new();
        if (!d || !BN_bin2bn(dbuf, (int)n, d))
            rc = TS_E_CRYPTO;
        ts_wipe(dbuf, n);
        free(dbuf);
        if (rc)
            goto out;
    }

    /* The public key as an uncompressed SEC 1 point: 0x04 || x || y. */
    pub = ts_xmalloc(1 + 2 * n);
    pub[0] = 0x04;
    memcpy(pub + 1, x, n);
    memcpy(pub + 1 + n, y, n);

    rc = TS_E_CRYPTO;
    bld = OSSL_PARAM_BLD_new();
    if (!bld || !OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, info->group, 0) ||
        !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pub, 1 + 2 * n) ||
        (d && !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_PRIV_KEY, d)))
        goto out;
    params = OSSL_PARAM_BLD_to_param(bld);
    if (!params)
        goto out;
    rc = pkey_from_params("EC", has_private, params, out);
    if (rc == TS_OK)
        *out_private = has_private;
out:
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_clear_free(d);
    free(x);
    free(y);
    free(pub);
    return rc;
}

/* OKP (RFC 8037 §2): crv "Ed25519" only, x of 32 bytes, and d of 32 bytes when private. */
static enum ts_rc okp_from_jwk(const json_t *jwk, const struct ts_jose_alg_info *info,
                               EVP_PKEY **out, bool *out_private)
{
    uint8_t *x = NULL, *d = NULL;
    OSSL_PARAM params[3];
    size_t i = 0;
    bool has_private = json_object_get(jwk, "d") != NULL;
    enum ts_rc rc = TS_E_INVALID;

    if (!member_is(jwk, "crv", info->crv))
        goto out;
    if ((rc = member_fixed(jwk, "x", info->len, &x)))
        goto out;
    params[i++] = OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, x, info->len);
    if (has_private) {
        if ((rc = member_fixed(jwk, "d", info->len, &d)))
            goto out;
        params[i++] = OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PRIV_KEY, d, info->len);
    }
    params[i] = OSSL_PARAM_construct_end();
    rc = pkey_from_params("ED25519", has_private, params, out);
    if (rc == TS_OK)
        *out_private = has_private;
out:
    if (d)
        ts_wipe(d, info->len);
    free(d);
    free(x);
    return rc;
}

/* RFC 7517 §4.3: when "key_ops" is present it must allow signing or verifying. */
static bool key_ops_allow_signatures(const json_t *jwk)
{
    const json_t *ops = json_object_get(jwk, "key_ops");
    const json_t *op;
    size_t i;
    bool found = false;

    if (!ops)
        return true;
    if (!json_is_array(ops))
        return false;
    json_array_foreach(ops, i, op)
    {
        if (!json_is_string(op))
            return false;
        if (strcmp(json_string_value(op), "verify") == 0 ||
            strcmp(json_string_value(op), "sign") == 0)
            found = true;
    }
    return found;
}

enum ts_rc ts_jose_key_from_jwk(const json_t *jwk, enum ts_jose_alg default_alg, bool allow_oct,
                                struct ts_jose_key **out)
{
    const char *kty, *alg_name, *use, *kid;
    enum ts_jose_alg alg;
    const struct ts_jose_alg_info *info;
    EVP_PKEY *pkey = NULL;
    bool has_private = false;
    enum ts_rc rc = TS_E_INVALID;

    if (!json_is_object(jwk))
        goto out;
    if (member_str(jwk, "kty", &kty) || !kty || member_str(jwk, "alg", &alg_name) ||
        member_str(jwk, "use", &use) || member_str(jwk, "kid", &kid))
        goto out;
    /* RFC 7517 §4.4: "alg" names the one algorithm the key is meant for; it wins. */
    alg = alg_name ? ts_jose_alg_from_name(alg_name) : default_alg;
    info = ts__jose_alg_info(alg);
    if (info->family == TS_JOSE_FAMILY_NONE)
        goto out;
    /* RFC 7517 §4.2 and §4.3: a key for encryption is never used to verify signatures. */
    if ((use && strcmp(use, "sig") != 0) || !key_ops_allow_signatures(jwk))
        goto out;

    if (strcmp(kty, "oct") == 0) {
        /* RFC 7518 §6.4: a symmetric key; accepted only where the caller says so. */
        uint8_t *k = NULL;
        size_t k_len = 0;
        if (!allow_oct || info->family != TS_JOSE_FAMILY_HMAC)
            goto out;
        if ((rc = member_bytes(jwk, "k", JWK_MEMBER_MAX, &k, &k_len)))
            goto out;
        rc = ts_jose_key_new_hmac(alg, k, k_len, kid, out);
        ts_wipe(k, k_len);
        free(k);
        goto out;
    }
    if (strcmp(kty, "RSA") == 0) {
        if (info->family != TS_JOSE_FAMILY_RSA && info->family != TS_JOSE_FAMILY_PSS)
            goto out;
        rc = rsa_from_jwk(jwk, &pkey, &has_private);
    } else if (strcmp(kty, "EC") == 0) {
        if (info->family != TS_JOSE_FAMILY_EC)
            goto out;
        rc = ec_from_jwk(jwk, info, &pkey, &has_private);
    } else if (strcmp(kty, "OKP") == 0) {
        if (info->family != TS_JOSE_FAMILY_ED)
            goto out;
        rc = okp_from_jwk(jwk, info, &pkey, &has_private);
    } else {
        goto out;
    }
    if (rc)
        goto out;
    rc = key_from_pkey(pkey, has_private, alg, kid, out);
out:
    if (rc)
        ERR_clear_error();
    return rc;
}

/* ---- JWK export ---- */

/* A JSON string holding the base64url encoding of n bytes. */
static json_t *b64_json(const uint8_t *p, size_t n)
{
    size_t len = ts_b64url_encoded_len(n);
    char *s = ts_xmalloc(len + 1);
    ts_b64url_encode(p, n, s);
    json_t *v = json_stringn(s, len);
    free(s);
    return v;
}

/*
 * The named BIGNUM parameter of pkey as base64url: left-padded to pad bytes (EC
 * coordinates are fixed-size, RFC 7518 §6.2.1.2), or minimal when pad is 0 (Base64urlUInt).
 */
static json_t *bn_param_json(const EVP_PKEY *pkey, const char *name, size_t pad)
{
    BIGNUM *bn = NULL;
    json_t *v = NULL;

    if (EVP_PKEY_get_bn_param(pkey, name, &bn) != 1)
        return NULL;
    size_t n = pad ? pad : (size_t)BN_num_bytes(bn);
    if (n == 0)
        n = 1; /* RFC 7518 §2: zero is one 0 octet. */
    uint8_t *buf = ts_xmalloc(n);
    if (BN_bn2binpad(bn, buf, (int)n) == (int)n)
        v = b64_json(buf, n);
    free(buf);
    BN_free(bn);
    return v;
}

json_t *ts_jose_key_public_jwk(const struct ts_jose_key *key)
{
    const struct ts_jose_alg_info *info = ts__jose_alg_info(key->alg);
    json_t *jwk, *a = NULL, *b = NULL;
    uint8_t raw[64];
    size_t raw_len = 0;

    if (!key->pkey)
        return NULL;
    jwk = json_object();
    switch (info->family) {
    case TS_JOSE_FAMILY_EC:
        a = bn_param_json(key->pkey, OSSL_PKEY_PARAM_EC_PUB_X, info->len);
        b = bn_param_json(key->pkey, OSSL_PKEY_PARAM_EC_PUB_Y, info->len);
        if (!a || !b)
            goto fail;
        json_object_set_new(jwk, "kty", json_string("EC"));
        json_object_set_new(jwk, "crv", json_string(info->crv));
        json_object_set_new(jwk, "x", a);
        json_object_set_new(jwk, "y", b);
        break;
    case TS_JOSE_FAMILY_ED:
        if (EVP_PKEY_get_octet_string_param(key->pkey, OSSL_PKEY_PARAM_PUB_KEY, raw, sizeof(raw),
                                            &raw_len) != 1 ||
            raw_len != info->len)
            goto fail;
        json_object_set_new(jwk, "kty", json_string("OKP"));
        json_object_set_new(jwk, "crv", json_string(info->crv));
        json_object_set_new(jwk, "x", b64_json(raw, raw_len));
        break;
    case TS_JOSE_FAMILY_RSA:
    case TS_JOSE_FAMILY_PSS:
        a = bn_param_json(key->pkey, OSSL_PKEY_PARAM_RSA_N, 0);
        b = bn_param_json(key->pkey, OSSL_PKEY_PARAM_RSA_E, 0);
        if (!a || !b)
            goto fail;
        json_object_set_new(jwk, "kty", json_string("RSA"));
        json_object_set_new(jwk, "n", a);
        json_object_set_new(jwk, "e", b);
        break;
    case TS_JOSE_FAMILY_HMAC:
    case TS_JOSE_FAMILY_NONE:
        goto fail;
    }
    if (key->kid)
        json_object_set_new(jwk, "kid", json_string(key->kid));
    json_object_set_new(jwk, "alg", json_string(info->name));
    json_object_set_new(jwk, "use", json_string("sig"));
    json_t *ops = json_array();
    json_array_append_new(ops, json_string("verify"));
    json_object_set_new(jwk, "key_ops", ops);
    return jwk;
fail:
    json_decref(a);
    json_decref(b);
    json_decref(jwk);
    ERR_clear_error();
    return NULL;
}

/*
 * jose_jws.c - JWS compact serialization (RFC 7515 §7.1): signing, verification and the
 * signature primitives of every algorithm (RFC 7518 §3, RFC 8037 §3.1).
 *
 * What this file must never do: let a token choose the algorithm of a key (RFC 8725 §3.1);
 * accept "none", a "crit" header, duplicate JSON members or a non-canonical base64url part;
 * accept an ECDSA signature in any form but the fixed-length r||s of RFC 7518 §3.4; parse
 * the payload before its signature is verified; compare a MAC with anything but
 * CRYPTO_memcmp; write to a key (keys are shared between threads, so every call works on
 * its own copy of the HMAC context and its own EVP_MD_CTX).
 *
 * Internals: docs/internals/jose.md.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>

#include "jose/jose_int.h"

/* ---- signature primitives ---- */

/* Computes the HMAC of msg from a private copy of the key's pre-keyed template. */
static enum ts_rc hmac_compute(const struct ts_jose_key *key, const uint8_t *msg, size_t msg_len,
                               uint8_t *mac, size_t *mac_len)
{
    EVP_MAC_CTX *ctx = EVP_MAC_CTX_dup(key->mac);
    enum ts_rc rc = TS_E_CRYPTO;

    if (!ctx)
        goto out;
    if (!EVP_MAC_update(ctx, msg, msg_len) || !EVP_MAC_final(ctx, mac, mac_len, EVP_MAX_MD_SIZE))
        goto out;
    rc = TS_OK;
out:
    EVP_MAC_CTX_free(ctx);
    return rc;
}

/*
 * Prepares ctx to sign or verify with the key's algorithm: its digest (none for EdDSA,
 * RFC 8037 §3.1) and, for PS*, PSS padding with MGF1 over the same hash and a salt as long
 * as the hash output (RFC 7518 §3.5). Verification insists on that salt length too.
 */
static bool md_init(EVP_MD_CTX *ctx, const struct ts_jose_key *key, bool sign)
{
    const struct ts_jose_alg_info *info = ts__jose_alg_info(key->alg);
    EVP_PKEY_CTX *pctx = NULL;
    int ok;

    if (sign)
        ok = EVP_DigestSignInit_ex(ctx, &pctx, info->md, NULL, NULL, key->pkey, NULL);
    else
        ok = EVP_DigestVerifyInit_ex(ctx, &pctx, info->md, NULL, NULL, key->pkey, NULL);
    if (ok != 1)
        return false;
    if (info->family == TS_JOSE_FAMILY_PSS) {
        if (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
            EVP_PKEY_CTX_set_rsa_mgf1_md_name(pctx, info->md, NULL) != 1 ||
            EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) != 1)
            return false;
    }
    return true;
}

/*
 * Converts OpenSSL's DER ECDSA signature into the JWS form: r and s as big-endian
 * integers, each left-padded to n bytes, concatenated (RFC 7518 §3.4).
 */
static enum ts_rc ecdsa_der_to_raw(const uint8_t *der, size_t der_len, size_t n, uint8_t *raw)
{
    const unsigned char *p = der;
    ECDSA_SIG *sig = d2i_ECDSA_SIG(NULL, &p, (long)der_len);
    const BIGNUM *r, *s;
    enum ts_rc rc = TS_E_CRYPTO;

    if (!sig)
        return rc;
    ECDSA_SIG_get0(sig, &r, &s);
    if (BN_bn2binpad(r, raw, (int)n) == (int)n && BN_bn2binpad(s, raw + n, (int)n) == (int)n)
        rc = TS_OK;
    ECDSA_SIG_free(sig);
    return rc;
}

/*
 * Converts a JWS ECDSA signature (r||s, n bytes each) into the DER form OpenSSL verifies.
 * *out_der is allocated by OpenSSL (OPENSSL_free).
 */
static enum ts_rc ecdsa_raw_to_der(const uint8_t *raw, size_t n, uint8_t **out_der, size_t *out_len)
{
    BIGNUM *r = BN_bin2bn(raw, (int)n, NULL);
    BIGNUM *s = BN_bin2bn(raw + n, (int)n, NULL);
    ECDSA_SIG *sig = ECDSA_SIG_new();
    unsigned char *der = NULL;
    enum ts_rc rc = TS_E_CRYPTO;

    if (!r || !s || !sig || !ECDSA_SIG_set0(sig, r, s))
        goto out;
    r = s = NULL; /* now owned by sig */
    int len = i2d_ECDSA_SIG(sig, &der);
    if (len <= 0)
        goto out;
    *out_der = der;
    *out_len = (size_t)len;
    rc = TS_OK;
out:
    BN_free(r);
    BN_free(s);
    ECDSA_SIG_free(sig);
    return rc;
}

/* Signs msg with an RSA, EC or Ed25519 key; see ts__jose_sign_raw. */
static enum ts_rc pkey_sign(const struct ts_jose_key *key, const uint8_t *msg, size_t msg_len,
                            uint8_t **out_sig, size_t *out_sig_len)
{
    const struct ts_jose_alg_info *info = ts__jose_alg_info(key->alg);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    uint8_t *sig = NULL, *raw = NULL;
    size_t sig_len;
    enum ts_rc rc = TS_E_CRYPTO;

    if (!ctx || !md_init(ctx, key, true))
        goto out;
    /* The largest signature the key can make (for ECDSA, the largest DER encoding). */
    sig_len = (size_t)EVP_PKEY_get_size(key->pkey);
    sig = ts_xmalloc(sig_len);
    if (EVP_DigestSign(ctx, sig, &sig_len, msg, msg_len) != 1)
        goto out;
    if (info->family == TS_JOSE_FAMILY_EC) {
        raw = ts_xmalloc(2 * info->len);
        rc = ecdsa_der_to_raw(sig, sig_len, info->len, raw);
        if (rc)
            goto out;
        free(sig);
        sig = raw;
        raw = NULL;
        sig_len = 2 * info->len;
    }
    *out_sig = sig;
    *out_sig_len = sig_len;
    sig = NULL;
    rc = TS_OK;
out:
    free(raw);
    free(sig);
    EVP_MD_CTX_free(ctx);
    return rc;
}

/* Verifies sig over msg with an RSA, EC or Ed25519 key; see ts__jose_verify_raw. */
static enum ts_rc pkey_verify(const struct ts_jose_key *key, const uint8_t *msg, size_t msg_len,
                              const uint8_t *sig, size_t sig_len)
{
    const struct ts_jose_alg_info *info = ts__jose_alg_info(key->alg);
    EVP_MD_CTX *ctx = NULL;
    uint8_t *der = NULL;
    enum ts_rc rc = TS_E_BAD_TOKEN;

    switch (info->family) {
    case TS_JOSE_FAMILY_EC:
        /*
         * RFC 7518 §3.4: the signature is r||s, each exactly as long as the curve's order
         * (64 bytes for P-256). A DER signature, or r||s of any other length, is refused
         * rather than "repaired", so each signature has exactly one accepted encoding.
         */
        if (sig_len != 2 * info->len)
            goto out;
        rc = ecdsa_raw_to_der(sig, info->len, &der, &sig_len);
        if (rc)
            goto out;
        sig = der;
        break;
    case TS_JOSE_FAMILY_RSA:
    case TS_JOSE_FAMILY_PSS:
        /*
         * RFC 8017 §8.1.2 and §8.2.2, step 1: the signature is exactly k octets, k being the
         * modulus length. OpenSSL 3.0 checks this for PKCS#1 v1.5 but takes a shorter PSS
         * signature (leading zero octets stripped), a second spelling of the same one.
         */
        if (sig_len != (size_t)EVP_PKEY_get_size(key->pkey))
            goto out;
        break;
    case TS_JOSE_FAMILY_ED:
        /* RFC 8032 §5.1.7: an Ed25519 signature is 64 octets. */
        if (sig_len != 2 * info->len)
            goto out;
        break;
    case TS_JOSE_FAMILY_HMAC:
    case TS_JOSE_FAMILY_NONE:
        rc = TS_E_INTERNAL;
        goto out;
    }

    rc = TS_E_CRYPTO;
    ctx = EVP_MD_CTX_new();
    if (!ctx || !md_init(ctx, key, false))
        goto out;
    /* 1 is valid; 0 is a wrong signature and a negative value a malformed one. */
    rc = EVP_DigestVerify(ctx, sig, sig_len, msg, msg_len) == 1 ? TS_OK : TS_E_BAD_TOKEN;
out:
    OPENSSL_free(der);
    EVP_MD_CTX_free(ctx);
    return rc;
}

enum ts_rc ts__jose_sign_raw(const struct ts_jose_key *key, const uint8_t *msg, size_t msg_len,
                             uint8_t **out_sig, size_t *out_sig_len)
{
    const struct ts_jose_alg_info *info = ts__jose_alg_info(key->alg);
    enum ts_rc rc;

    if (!key->has_private)
        return TS_E_INVALID;
    if (info->family == TS_JOSE_FAMILY_HMAC) {
        uint8_t mac[EVP_MAX_MD_SIZE];
        size_t mac_len = 0;
        rc = hmac_compute(key, msg, msg_len, mac, &mac_len);
        if (rc == TS_OK) {
            *out_sig = ts_xmalloc(mac_len);
            memcpy(*out_sig, mac, mac_len);
            *out_sig_len = mac_len;
        }
    } else {
        rc = pkey_sign(key, msg, msg_len, out_sig, out_sig_len);
    }
    if (rc)
        ERR_clear_error();
    return rc;
}

enum ts_rc ts__jose_verify_raw(const struct ts_jose_key *key, const uint8_t *msg, size_t msg_len,
                               const uint8_t *sig, size_t sig_len)
{
    const struct ts_jose_alg_info *info = ts__jose_alg_info(key->alg);
    enum ts_rc rc;

    if (info->family == TS_JOSE_FAMILY_HMAC) {
        uint8_t mac[EVP_MAX_MD_SIZE];
        size_t mac_len = 0;
        rc = hmac_compute(key, msg, msg_len, mac, &mac_len);
        /*
         * RFC 7518 §3.2: compare in constant time, and the whole MAC: a truncated one is
         * refused by its length, which is public anyway.
         */
        if (rc == TS_OK && (sig_len != mac_len || CRYPTO_memcmp(mac, sig, mac_len) != 0))
            rc = TS_E_BAD_TOKEN;
        /* The right MAC for an attacker's message is what a forger needs: do not leave it. */
        ts_wipe(mac, sizeof(mac));
    } else {
        rc = pkey_verify(key, msg, msg_len, sig, sig_len);
    }
    /* OpenSSL's per-thread error queue would otherwise collect every forged token's errors. */
    if (rc)
        ERR_clear_error();
    return rc;
}

/* ---- compact serialization ---- */

enum ts_rc ts_jws_sign(const struct ts_jose_key *key, const char *payload, size_t payload_len,
                       char **out_token)
{
    struct ts_buf hdr;
    char *token = NULL;
    uint8_t *sig = NULL;
    size_t sig_len = 0;
    enum ts_rc rc;

    if (!key->has_private)
        return TS_E_INVALID;

    /* The protected header; members in a fixed order so equal inputs give equal tokens. */
    ts_buf_init(&hdr, TS_JOSE_TOKEN_MAX);
    rc = ts_buf_append_str(&hdr, "{\"alg\":\"");
    if (!rc)
        rc = ts_buf_append_str(&hdr, ts_jose_alg_name(key->alg));
    if (!rc && key->kid) {
        rc = ts_buf_append_str(&hdr, "\",\"kid\":\"");
        if (!rc)
            rc = ts_buf_append_json_escaped(&hdr, key->kid);
    }
    if (!rc)
        rc = ts_buf_append_str(&hdr, "\",\"typ\":\"JWT\"}");
    if (rc)
        goto out;

    /* RFC 7515 §7.1: BASE64URL(header) '.' BASE64URL(payload) '.' BASE64URL(signature). */
    size_t h_len = ts_b64url_encoded_len(hdr.len);
    size_t p_len = ts_b64url_encoded_len(payload_len);
    size_t input_len = h_len + 1 + p_len;
    token = ts_xmalloc(input_len + 1);
    ts_b64url_encode((const uint8_t *)hdr.data, hdr.len, token);
    token[h_len] = '.';
    ts_b64url_encode((const uint8_t *)payload, payload_len, token + h_len + 1);

    rc = ts__jose_sign_raw(key, (const uint8_t *)token, input_len, &sig, &sig_len);
    if (rc)
        goto out;
    token = ts_xrealloc(token, input_len + 1 + ts_b64url_encoded_len(sig_len) + 1);
    token[input_len] = '.';
    ts_b64url_encode(sig, sig_len, token + input_len + 1);
    *out_token = token;
    token = NULL;
    rc = TS_OK;
out:
    free(token);
    free(sig);
    ts_buf_free(&hdr);
    return rc;
}

/*
 * Decodes one base64url part into buf (which has room for it) and parses it as a JSON
 * object without duplicate members (RFC 7515 §4 and RFC 7519 §4 let a parser either
 * refuse them or keep the last one; we refuse, so no two parsers can read one token two
 * ways). NULL for anything else.
 */
static json_t *decode_object(const char *part, size_t part_len, uint8_t *buf)
{
    size_t len;
    json_t *v;

    if (ts_b64url_decode(part, part_len, buf, &len) != TS_OK)
        return NULL;
    v = json_loadb((const char *)buf, len, JSON_REJECT_DUPLICATES, NULL);
    if (v && !json_is_object(v)) {
        json_decref(v);
        v = NULL;
    }
    return v;
}

enum ts_rc ts_jws_verify(const char *token, size_t token_len, ts_jose_key_lookup_fn *lookup,
                         void *lookup_cls, json_t **out_claims, json_t **out_header)
{
    const char *dot1, *dot2, *kid = NULL;
    const json_t *v;
    const struct ts_jose_key *key;
    enum ts_jose_alg alg;
    json_t *header = NULL, *claims = NULL;
    uint8_t *buf = NULL;
    size_t sig_len;
    enum ts_rc rc = TS_E_BAD_TOKEN;

    /* The cap comes first: nothing below ever runs on an oversized input. */
    if (token_len > TS_JOSE_TOKEN_MAX)
        return TS_E_TOO_BIG;
    if (!token)
        return TS_E_BAD_TOKEN;

    /* RFC 7515 §7.1 and §5.2 step 1: exactly three parts, so exactly two dots. */
    dot1 = memchr(token, '.', token_len);
    if (!dot1)
        goto out;
    dot2 = memchr(dot1 + 1, '.', token_len - (size_t)(dot1 + 1 - token));
    if (!dot2 || memchr(dot2 + 1, '.', token_len - (size_t)(dot2 + 1 - token)))
        goto out;
    const char *h = token, *p = dot1 + 1, *s = dot2 + 1;
    size_t h_len = (size_t)(dot1 - h), p_len = (size_t)(dot2 - p);
    size_t s_len = token_len - (size_t)(s - token);
    /* An empty signature is never valid: every algorithm we accept produces bytes. */
    if (s_len == 0)
        goto out;

    /* One buffer, reused for each decoded part; the cap above bounds its size. */
    buf = ts_xmalloc(ts_b64url_decoded_max(token_len));

    /* RFC 7515 §5.2 steps 2 and 3: the header is the base64url of a JSON object. */
    header = decode_object(h, h_len, buf);
    if (!header)
        goto out;
    /*
     * RFC 7515 §4.1.1 and RFC 8725 §3.1: "alg" must name a signing algorithm we know;
     * "none" and unknown names map to UNKNOWN and stop here.
     */
    v = json_object_get(header, "alg");
    alg = json_is_string(v) ? ts_jose_alg_from_name(json_string_value(v)) : TS_JOSE_ALG_UNKNOWN;
    if (alg == TS_JOSE_ALG_UNKNOWN)
        goto out;
    /* RFC 7515 §4.1.11: "crit" lists extensions we must understand; we understand none. */
    if (json_object_get(header, "crit"))
        goto out;
    v = json_object_get(header, "kid");
    if (v) {
        if (!json_is_string(v))
            goto out;
        kid = json_string_value(v);
    }

    /*
     * RFC 8725 §3.1: the key decides the algorithm, not the token. Even when the lookup
     * ignored alg (a kid naming an RSA key in an "HS256" token), the key's own algorithm
     * must be the header's, so a public key never becomes an HMAC secret.
     */
    key = lookup(lookup_cls, alg, kid);
    if (!key || key->alg != alg)
        goto out;

    /* RFC 7515 §5.2 steps 7 and 8: the signature covers the first two parts as sent. */
    if (ts_b64url_decode(s, s_len, buf, &sig_len) != TS_OK)
        goto out;
    rc = ts__jose_verify_raw(key, (const uint8_t *)token, (size_t)(dot2 - token), buf, sig_len);
    if (rc)
        goto out;

    /* Only an authentic payload is parsed; for a JWT it must be a JSON object (RFC 7519 §7.2). */
    rc = TS_E_BAD_TOKEN;
    claims = decode_object(p, p_len, buf);
    if (!claims)
        goto out;

    *out_claims = claims;
    claims = NULL;
    if (out_header) {
        *out_header = header;
        header = NULL;
    }
    rc = TS_OK;
out:
    json_decref(claims);
    json_decref(header);
    free(buf);
    return rc;
}

/*
 * jose_int.h - what the files of the jose module share and nothing outside it may use:
 * the key structure, the algorithm table and the raw sign/verify primitives.
 *
 * What this header must never do: leak into another module. Only the .c files of src/jose
 * and the module's own unit test include it (docs/internals/jose.md).
 */
#ifndef TS_JOSE_INT_H
#define TS_JOSE_INT_H

#include <openssl/evp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "jose/jose.h"

/* The longest token ts_jws_verify looks at, in bytes (TS_E_TOO_BIG beyond it). */
#define TS_JOSE_TOKEN_MAX 16384

/* The largest RSA modulus a key may have, in bits; it bounds the cost of one verification. */
#define TS_JOSE_RSA_BITS_MAX 8192

/* How an algorithm signs; each family has one code path in jose_jws.c. */
enum ts_jose_family {
    TS_JOSE_FAMILY_NONE = 0, /* TS_JOSE_ALG_UNKNOWN */
    TS_JOSE_FAMILY_HMAC,     /* HS*: HMAC (RFC 7518 §3.2) */
    TS_JOSE_FAMILY_RSA,      /* RS*: RSASSA-PKCS1-v1_5 (RFC 7518 §3.3) */
    TS_JOSE_FAMILY_PSS,      /* PS*: RSASSA-PSS, MGF1 with the same hash (RFC 7518 §3.5) */
    TS_JOSE_FAMILY_EC,       /* ES*: ECDSA with raw r||s signatures (RFC 7518 §3.4) */
    TS_JOSE_FAMILY_ED,       /* EdDSA over Ed25519 (RFC 8037 §3.1) */
};

/* One row per enum ts_jose_alg value; see ts__jose_alg_info. */
struct ts_jose_alg_info {
    const char *name;           /* the JOSE "alg" value, e.g. "ES256" */
    const char *md;             /* OpenSSL digest name; NULL for EdDSA (no pre-hash) */
    enum ts_jose_family family; /* how it signs */
    size_t len;                 /* HMAC: MAC and minimum key length; EC: bytes of r, of s and
                                 * of a coordinate; EdDSA: bytes of a key; RSA: 0 */
    const char *group;          /* EC: OpenSSL group name ("prime256v1"); else NULL */
    const char *crv;            /* EC and EdDSA: the JWK "crv" value ("P-256"); else NULL */
};

/*
 * A key bound to one algorithm. Immutable after creation: every operation duplicates what
 * it needs (EVP_MAC_CTX_dup, a fresh EVP_MD_CTX), so many threads may share one key.
 */
struct ts_jose_key {
    enum ts_jose_alg alg; /* the only algorithm this key signs or verifies with */
    char *kid;            /* heap copy of the key id, or NULL */
    EVP_PKEY *pkey;       /* RSA, EC or Ed25519 key; NULL for HMAC keys */
    EVP_MAC_CTX *mac;     /* HMAC keys: a template already keyed with the secret; only ever
                           * duplicated, never updated, so it is safe to share */
    bool has_private;     /* HMAC keys always; others when the private part is loaded */
};

/* The table row for alg; the UNKNOWN row (family NONE) for any value out of range. */
const struct ts_jose_alg_info *ts__jose_alg_info(enum ts_jose_alg alg);

/*
 * Signs msg with key as its algorithm says and returns the JWS Signature octets (for ECDSA
 * the raw r||s of RFC 7518 §3.4) in a heap buffer the caller frees. TS_E_INVALID when key
 * has no private part, TS_E_CRYPTO when OpenSSL fails.
 */
TS_NODISCARD enum ts_rc ts__jose_sign_raw(const struct ts_jose_key *key, const uint8_t *msg,
                                          size_t msg_len, uint8_t **out_sig, size_t *out_sig_len);

/*
 * Verifies the JWS Signature sig over msg with key. TS_OK when it is valid, TS_E_BAD_TOKEN
 * for every kind of invalid signature (wrong length, wrong value, not decodable) and
 * TS_E_CRYPTO when OpenSSL fails for a reason that has nothing to do with the input.
 */
TS_NODISCARD enum ts_rc ts__jose_verify_raw(const struct ts_jose_key *key, const uint8_t *msg,
                                            size_t msg_len, const uint8_t *sig, size_t sig_len);

#endif

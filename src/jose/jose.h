/*
 * jose.h - base64url, JSON Web Keys, JWS compact serialization and JWT claim checks,
 * all cryptography through OpenSSL 3's EVP API.
 *
 * What this module must never do: accept "none"; let a token's header choose the
 * algorithm of a key (RFC 8725 §3.1: the algorithm is pinned to the key); accept a
 * JWS with a "crit" header it does not understand (RFC 7515 §4.1.11); accept JSON
 * with duplicate member names (RFC 7515 §5.2 step 4 allows rejecting; we always do);
 * compare MACs or signatures with anything but a constant-time comparison.
 *
 * Depends on core, OpenSSL and jansson only. Internals: docs/internals/jose.md.
 */
#ifndef TS_JOSE_H
#define TS_JOSE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/core.h"

/* ---- base64url (RFC 4648 §5, unpadded, as JOSE uses it) ---- */

/* Length of the encoding of n bytes, excluding the NUL. */
size_t ts_b64url_encoded_len(size_t n);
/* Encodes n bytes into out (ts_b64url_encoded_len(n) + 1 bytes); returns the length written. */
size_t ts_b64url_encode(const uint8_t *in, size_t n, char *out);
/* Upper bound of the decoded length of an n-character input. */
size_t ts_b64url_decoded_max(size_t n);
/*
 * Strictly decodes n characters into out (ts_b64url_decoded_max(n) bytes) and sets *out_len.
 * Refuses padding, characters outside the alphabet, a length of 1 mod 4 and non-zero
 * trailing bits (non-canonical encodings), with TS_E_PARSE.
 */
TS_NODISCARD enum ts_rc ts_b64url_decode(const char *in, size_t n, uint8_t *out, size_t *out_len);

/* ---- algorithms and keys ---- */

enum ts_jose_alg {
    TS_JOSE_ALG_UNKNOWN = 0,
    TS_JOSE_ALG_HS256,
    TS_JOSE_ALG_HS384,
    TS_JOSE_ALG_HS512,
    TS_JOSE_ALG_RS256,
    TS_JOSE_ALG_RS384,
    TS_JOSE_ALG_RS512,
    TS_JOSE_ALG_PS256,
    TS_JOSE_ALG_PS384,
    TS_JOSE_ALG_PS512,
    TS_JOSE_ALG_ES256,
    TS_JOSE_ALG_ES384,
    TS_JOSE_ALG_ES512,
    TS_JOSE_ALG_EDDSA, /* Ed25519 only (RFC 8037) */
};

/* "HS256" -> TS_JOSE_ALG_HS256; "none", unknown or NULL -> TS_JOSE_ALG_UNKNOWN. */
enum ts_jose_alg ts_jose_alg_from_name(const char *name);
/* TS_JOSE_ALG_HS256 -> "HS256"; UNKNOWN -> "unknown". */
const char *ts_jose_alg_name(enum ts_jose_alg alg);
bool ts_jose_alg_is_hmac(enum ts_jose_alg alg);

/*
 * A key is immutable after creation and safe to use from many threads at once.
 * Each key is bound to exactly one algorithm; verification refuses any other.
 */
struct ts_jose_key;

/* An HMAC key (alg HS256/384/512) over a copy of secret. kid may be NULL. */
TS_NODISCARD enum ts_rc ts_jose_key_new_hmac(enum ts_jose_alg alg, const uint8_t *secret,
                                             size_t secret_len, const char *kid,
                                             struct ts_jose_key **out);
/* Generates a new private key for alg (ES256, ES384, ES512, EdDSA, RS*, PS* with 2048 bits). */
TS_NODISCARD enum ts_rc ts_jose_key_generate(enum ts_jose_alg alg, const char *kid,
                                             struct ts_jose_key **out);
/* Loads a PEM private key (PKCS#8) or public key (SPKI) and binds it to alg; the key type
 * must fit alg (EC P-256 for ES256, ...), else TS_E_INVALID. */
TS_NODISCARD enum ts_rc ts_jose_key_from_pem(const char *pem, size_t pem_len, enum ts_jose_alg alg,
                                             const char *kid, struct ts_jose_key **out);
/* Writes the private key as PKCS#8 PEM into a heap string (the caller frees it and should
 * wipe it). TS_E_INVALID for public-only and HMAC keys. */
TS_NODISCARD enum ts_rc ts_jose_key_private_pem(const struct ts_jose_key *key, char **out_pem);
/*
 * Loads a JWK (RFC 7517/7518/8037): kty RSA, EC (P-256/384/521) or OKP (Ed25519), public or
 * private; kty oct only when allow_oct. The algorithm comes from the JWK's "alg" member, or
 * from default_alg when that member is absent; a key type that does not fit the algorithm,
 * a "use" other than "sig" or missing parameters give TS_E_INVALID.
 */
TS_NODISCARD enum ts_rc ts_jose_key_from_jwk(const json_t *jwk, enum ts_jose_alg default_alg,
                                             bool allow_oct, struct ts_jose_key **out);
/* The public JWK: {kty, crv?, x?, y?, n?, e?, kid?, alg, use:"sig", key_ops:["verify"]}.
 * NULL for HMAC keys (they are never published). New reference; the caller decrefs. */
json_t *ts_jose_key_public_jwk(const struct ts_jose_key *key);
enum ts_jose_alg ts_jose_key_alg(const struct ts_jose_key *key);
/* The kid, or NULL. Valid as long as the key. */
const char *ts_jose_key_kid(const struct ts_jose_key *key);
bool ts_jose_key_has_private(const struct ts_jose_key *key);
void ts_jose_key_free(struct ts_jose_key *key);

/* ---- JWS compact serialization (RFC 7515 §7.1) ---- */

/*
 * Signs payload (the exact bytes of a JSON object) with key, with the protected header
 * {"alg":<key's alg>,"kid":<key's kid, if any>,"typ":"JWT"}. Returns a heap string the caller
 * frees. TS_E_INVALID when key has no private part.
 */
TS_NODISCARD enum ts_rc ts_jws_sign(const struct ts_jose_key *key, const char *payload,
                                    size_t payload_len, char **out_token);

/*
 * Finds the key for a token's header: alg is the header's algorithm (never UNKNOWN), kid
 * the header's kid or NULL. Return NULL when there is none. The returned key is borrowed:
 * it must stay valid until ts_jws_verify returns.
 */
typedef const struct ts_jose_key *ts_jose_key_lookup_fn(void *cls, enum ts_jose_alg alg,
                                                        const char *kid);

/*
 * Verifies a compact JWS and returns its parsed payload (a JSON object; new reference) in
 * *out_claims and, when out_header is not NULL, its header (new reference).
 * Refuses, with TS_E_BAD_TOKEN: anything but three base64url parts; a header that is not a
 * JSON object or has duplicate members; alg missing, "none" or unknown; a "crit" member
 * (we understand no extensions); no key from lookup; a key whose algorithm differs from the
 * header's; a bad signature (ECDSA signatures must be the raw r||s of RFC 7518 §3.4 with the
 * exact length for the curve); a payload that is not a JSON object or has duplicate members.
 * Tokens longer than 16 KiB give TS_E_TOO_BIG.
 */
TS_NODISCARD enum ts_rc ts_jws_verify(const char *token, size_t token_len,
                                      ts_jose_key_lookup_fn *lookup, void *lookup_cls,
                                      json_t **out_claims, json_t **out_header);

/* ---- JWT claims (RFC 7519 §4.1) ---- */

struct ts_jwt_rules {
    const char *issuer;   /* when not NULL, "iss" must be present and equal it exactly */
    const char *audience; /* when not NULL, "aud" (string or array) must be present and hold it */
    int64_t now;          /* seconds since the epoch */
    int64_t leeway;       /* seconds of clock skew allowed on exp, nbf and iat */
    bool require_exp;     /* "exp" must be present */
};

/*
 * Checks registered claims of a verified payload: types (exp/nbf/iat numbers, iss/sub
 * strings, aud a string or an array of strings), exp > now - leeway, nbf <= now + leeway,
 * iat <= now + leeway, and the rules above. TS_E_EXPIRED for an expired token,
 * TS_E_BAD_TOKEN for every other failure.
 */
TS_NODISCARD enum ts_rc ts_jwt_check_claims(const json_t *claims, const struct ts_jwt_rules *rules);

#endif

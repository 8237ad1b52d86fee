/*
 * jose_jwt.c - checks of the registered JWT claims (RFC 7519 §4.1) on a payload whose
 * signature ts_jws_verify has already verified.
 *
 * What this file must never do: accept a claim of the wrong type (a string "exp" is not a
 * date, it is a malformed token); let a missing "iss" or "aud" pass when the rules ask for
 * one; allow more clock skew than the configured leeway.
 *
 * Internals: docs/internals/jose.md.
 */
#include <string.h>

#include "jose/jose.h"

/* True when v is a JSON string equal, byte for byte, to s (RFC 7519 §4.1.1: case-sensitive). */
static bool string_is(const json_t *v, const char *s)
{
    size_t n = strlen(s);
    return json_is_string(v) && json_string_length(v) == n &&
           memcmp(json_string_value(v), s, n) == 0; /* banned-ok: public claim values */
}

/* RFC 7519 §4.1.3: "aud" is one string or an array of strings. */
static bool aud_well_typed(const json_t *aud)
{
    const json_t *v;
    size_t i;

    if (json_is_string(aud))
        return true;
    if (!json_is_array(aud))
        return false;
    json_array_foreach(aud, i, v)
    {
        if (!json_is_string(v))
            return false;
    }
    return true;
}

/* RFC 7519 §4.1.3: the recipient must find itself among the audience values. */
static bool aud_holds(const json_t *aud, const char *audience)
{
    const json_t *v;
    size_t i;

    if (json_is_string(aud))
        return string_is(aud, audience);
    json_array_foreach(aud, i, v)
    {
        if (string_is(v, audience))
            return true;
    }
    return false;
}

enum ts_rc ts_jwt_check_claims(const json_t *claims, const struct ts_jwt_rules *rules)
{
    const json_t *exp, *nbf, *iat, *iss, *sub, *aud;
    double now, leeway;

    if (!json_is_object(claims))
        return TS_E_BAD_TOKEN;
    exp = json_object_get(claims, "exp");
    nbf = json_object_get(claims, "nbf");
    iat = json_object_get(claims, "iat");
    iss = json_object_get(claims, "iss");
    sub = json_object_get(claims, "sub");
    aud = json_object_get(claims, "aud");

    /*
     * Types first (RFC 7519 §4.1.1 to §4.1.6): NumericDate values are JSON numbers, integer
     * or not (§2); "iss" and "sub" are strings. A claim of another type is a malformed
     * token, never a claim to ignore.
     */
    if ((exp && !json_is_number(exp)) || (nbf && !json_is_number(nbf)) ||
        (iat && !json_is_number(iat)))
        return TS_E_BAD_TOKEN;
    if ((iss && !json_is_string(iss)) || (sub && !json_is_string(sub)))
        return TS_E_BAD_TOKEN;
    if (aud && !aud_well_typed(aud))
        return TS_E_BAD_TOKEN;

    /*
     * Times are compared as doubles: NumericDate may have a fraction, and a double holds
     * every second of the next few million years exactly. A negative leeway means none.
     */
    now = (double)rules->now;
    leeway = rules->leeway > 0 ? (double)rules->leeway : 0.0;

    if (!exp && rules->require_exp)
        return TS_E_BAD_TOKEN;
    /* RFC 7519 §4.1.4: refused on or after "exp", give or take the leeway. */
    if (exp && !(json_number_value(exp) > now - leeway))
        return TS_E_EXPIRED;
    /* RFC 7519 §4.1.5: refused before "nbf", give or take the leeway. */
    if (nbf && json_number_value(nbf) > now + leeway)
        return TS_E_BAD_TOKEN;
    /*
     * RFC 7519 §4.1.6 only defines "iat"; a token issued in the future (beyond the clock
     * skew we allow) was minted by a broken or hostile issuer, so we refuse it too.
     */
    if (iat && json_number_value(iat) > now + leeway)
        return TS_E_BAD_TOKEN;

    /* RFC 7519 §4.1.1: when we expect an issuer, "iss" must be present and equal it. */
    if (rules->issuer && (!iss || !string_is(iss, rules->issuer)))
        return TS_E_BAD_TOKEN;
    /* RFC 7519 §4.1.3: when we are an audience, "aud" must be present and name us. */
    if (rules->audience && (!aud || !aud_holds(aud, rules->audience)))
        return TS_E_BAD_TOKEN;
    return TS_OK;
}

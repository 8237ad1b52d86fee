/*
 * jose_b64url.c - base64url without padding (RFC 4648 §5, RFC 7515 §2 and appendix C), the
 * encoding of every part of a compact JWS and of every binary JWK member.
 *
 * What this file must never do: accept more than one spelling of the same bytes. The
 * decoder refuses padding, the characters '+' and '/' of plain base64, whitespace, a
 * length of 1 mod 4 and non-zero trailing bits, so a token or key has exactly one
 * accepted encoding and a signature cannot be "re-spelled" into a different string.
 *
 * Internals: docs/internals/jose.md.
 */
#include <stddef.h>
#include <stdint.h>

#include "jose/jose.h"

static const char alphabet[64] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/*
 * Maps a character to its 6-bit value, or to 0xff when it is not in the base64url
 * alphabet. Written out so the table is a constant the compiler can check, with no
 * initialisation race when many threads decode at once.
 */
#define XX 0xff
static const uint8_t values[256] = {
    XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, /* 0x00 */
    XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, /* 0x10 */
    XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, 62, XX, XX, /* 0x20: '-' */
    52, 53, 54, 55, 56, 57, 58, 59, 60, 61, XX, XX, XX, XX, XX, XX, /* 0x30: digits */
    XX, 0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, /* 0x40: A-O */
    15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, XX, XX, XX, XX, 63, /* 0x50: P-Z, '_' */
    XX, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, /* 0x60: a-o */
    41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, XX, XX, XX, XX, XX, /* 0x70: p-z */
    XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, /* 0x80 */
    XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, /* 0x90 */
    XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, /* 0xa0 */
    XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, /* 0xb0 */
    XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, /* 0xc0 */
    XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, /* 0xd0 */
    XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, /* 0xe0 */
    XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, /* 0xf0 */
};
#undef XX

size_t ts_b64url_encoded_len(size_t n)
{
    /* Every 3 bytes take 4 characters; a tail of 1 or 2 bytes takes 2 or 3 (no padding). */
    return n / 3 * 4 + (n % 3 ? n % 3 + 1 : 0);
}

size_t ts_b64url_encode(const uint8_t *in, size_t n, char *out)
{
    size_t i = 0, o = 0;

    for (; n - i >= 3; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = alphabet[v >> 18];
        out[o++] = alphabet[v >> 12 & 63];
        out[o++] = alphabet[v >> 6 & 63];
        out[o++] = alphabet[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = alphabet[v >> 18];
        out[o++] = alphabet[v >> 12 & 63];
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = alphabet[v >> 18];
        out[o++] = alphabet[v >> 12 & 63];
        out[o++] = alphabet[v >> 6 & 63];
    }
    out[o] = '\0';
    return o;
}

size_t ts_b64url_decoded_max(size_t n)
{
    /* Exact for every valid length; a length of 1 mod 4 is never valid and gets nothing. */
    return n / 4 * 3 + (n % 4 > 1 ? n % 4 - 1 : 0);
}

enum ts_rc ts_b64url_decode(const char *in, size_t n, uint8_t *out, size_t *out_len)
{
    const unsigned char *s = (const unsigned char *)in;
    size_t i = 0, o = 0;

    /* RFC 7515 §2: base64url without '=' padding, so n mod 4 is 0, 2 or 3, never 1. */
    if (n % 4 == 1)
        return TS_E_PARSE;

    for (; n - i >= 4; i += 4) {
        uint8_t a = values[s[i]], b = values[s[i + 1]], c = values[s[i + 2]], d = values[s[i + 3]];
        /* Any character outside the alphabet sets the high bits of the union. */
        if ((a | b | c | d) & 0xc0)
            return TS_E_PARSE;
        uint32_t v = (uint32_t)a << 18 | (uint32_t)b << 12 | (uint32_t)c << 6 | d;
        out[o++] = (uint8_t)(v >> 16);
        out[o++] = (uint8_t)(v >> 8);
        out[o++] = (uint8_t)v;
    }
    if (n - i == 2) {
        uint8_t a = values[s[i]], b = values[s[i + 1]];
        /* RFC 4648 §3.5: the 4 unused low bits of the last character must be zero. */
        if ((a | b) & 0xc0 || b & 0x0f)
            return TS_E_PARSE;
        out[o++] = (uint8_t)(a << 2 | b >> 4);
    } else if (n - i == 3) {
        uint8_t a = values[s[i]], b = values[s[i + 1]], c = values[s[i + 2]];
        /* RFC 4648 §3.5: the 2 unused low bits of the last character must be zero. */
        if ((a | b | c) & 0xc0 || c & 0x03)
            return TS_E_PARSE;
        out[o++] = (uint8_t)(a << 2 | b >> 4);
        out[o++] = (uint8_t)((b & 0x0f) << 4 | c >> 2);
    }
    *out_len = o;
    return TS_OK;
}

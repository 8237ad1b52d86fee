/*
 * fuzz_b64url.c - jose's base64url encoder and strict decoder (src/jose/jose_b64url.c) under a
 * fuzzer.
 *
 * Input: any bytes, used twice. (1) As text for ts_b64url_decode, into a heap buffer of exactly
 * ts_b64url_decoded_max(n) bytes (so ASan sees any overrun). The answer must be TS_OK or
 * TS_E_PARSE, and must agree with a reference check written here (alphabet A-Z a-z 0-9 - _
 * only, no padding, length not 1 mod 4, unused trailing bits zero). What is accepted must
 * decode to exactly decoded_max(n) bytes and re-encode to the very same text (one spelling per
 * byte string). (2) As bytes for ts_b64url_encode, into a buffer of exactly
 * ts_b64url_encoded_len(n) + 1: the output must be that long, NUL-terminated, in the alphabet,
 * and decode back to the input. Any failed property calls abort().
 *
 * Built with TS_FUZZ=ON as a libFuzzer program, otherwise with tests/fuzz/replay_main.c.
 * Seeds: tests/fuzz/corpus/b64url/; dictionary: tests/fuzz/dict/b64url.dict.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "jose/jose.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* The character's 6-bit value, or -1 outside the base64url alphabet. */
static int value(unsigned char c)
{
    const char *p = c ? strchr(alphabet, c) : NULL;
    return p ? (int)(p - alphabet) : -1;
}

/* RFC 4648 §5 without padding, canonical (RFC 4648 §3.5): the reference for the decoder. */
static bool reference_valid(const uint8_t *s, size_t n)
{
    if (n % 4 == 1)
        return false;
    for (size_t i = 0; i < n; i++)
        if (value(s[i]) < 0)
            return false;
    if (n % 4 == 2)
        return (value(s[n - 1]) & 0x0f) == 0;
    if (n % 4 == 3)
        return (value(s[n - 1]) & 0x03) == 0;
    return true;
}

static bool same(const void *a, const void *b, size_t n)
{
    const unsigned char *x = a, *y = b;
    for (size_t i = 0; i < n; i++)
        if (x[i] != y[i])
            return false;
    return true;
}

static void check_decode(const uint8_t *data, size_t size)
{
    size_t max = ts_b64url_decoded_max(size);
    uint8_t *out = malloc(max ? max : 1);
    size_t out_len = (size_t)-1;
    if (!out)
        return;
    enum ts_rc rc = ts_b64url_decode((const char *)data, size, out, &out_len);
    if (rc != TS_OK && rc != TS_E_PARSE)
        abort();
    if ((rc == TS_OK) != reference_valid(data, size))
        abort();
    if (rc == TS_OK) {
        /* decoded_max is exact for every valid length */
        if (out_len != max || ts_b64url_encoded_len(out_len) != size)
            abort();
        char *again = malloc(size + 1);
        if (!again)
            abort();
        if (ts_b64url_encode(out, out_len, again) != size || again[size] != '\0' ||
            !same(again, data, size))
            abort(); /* accepted text must be the one canonical spelling */
        free(again);
    } else if (out_len != (size_t)-1) {
        abort(); /* outputs are left untouched on error */
    }
    free(out);
}

static void check_encode(const uint8_t *data, size_t size)
{
    size_t len = ts_b64url_encoded_len(size);
    char *text = malloc(len + 1);
    if (!text)
        return;
    if (ts_b64url_encode(data, size, text) != len || text[len] != '\0' || strlen(text) != len)
        abort();
    for (size_t i = 0; i < len; i++)
        if (value((unsigned char)text[i]) < 0)
            abort();
    if (len % 4 == 1 || ts_b64url_decoded_max(len) != size)
        abort();
    uint8_t *back = malloc(size ? size : 1);
    size_t back_len = 0;
    if (!back)
        abort();
    if (ts_b64url_decode(text, len, back, &back_len) != TS_OK || back_len != size ||
        !same(back, data, size))
        abort(); /* decode(encode(x)) == x */
    free(back);
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_decode(data, size);
    check_encode(data, size);
    return 0;
}

/*
 * fuzz_form.c - the application/x-www-form-urlencoded body decoder (api_parse_form in
 * src/api/api.c, used by api_body for form bodies) under a fuzzer.
 *
 * Input: a request body, as is. api_parse_form's answer is compared with a reference decoder
 * written here from the rules (pairs split on '&', empty pairs skipped, the key ends at the
 * first '=', a pair without '=' has the value "", '+' is a space, %XX is a byte in either case,
 * the last of repeated keys wins; refused: a '%' without two hex digits, a NUL byte, raw or
 * escaped, and a key or value that is not strict UTF-8 — no overlong forms, surrogates or code
 * points above U+10FFFF). Properties (abort() when one fails): both refuse the same bodies and
 * otherwise give equal objects; every value is a string whose length is its strlen (no NUL got
 * through); the object, encoded again (unreserved bytes as is, space as '+', the rest %XX),
 * decodes to the same object. ASan and LeakSanitizer watch the arena and jansson.
 *
 * Built with TS_FUZZ=ON as a libFuzzer program, otherwise with tests/fuzz/replay_main.c.
 * Seeds: tests/fuzz/corpus/form/; dictionary: tests/fuzz/dict/form.dict.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "api/api_int.h"
#include "core/core.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int hex(uint8_t c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Strict UTF-8 (RFC 3629): what jansson accepts in a string. */
static bool utf8_ok(const uint8_t *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        uint8_t c = s[i];
        size_t len;
        uint32_t cp, min;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xc2 && c <= 0xdf) {
            len = 2, cp = c & 0x1f, min = 0x80;
        } else if (c >= 0xe0 && c <= 0xef) {
            len = 3, cp = c & 0x0f, min = 0x800;
        } else if (c >= 0xf0 && c <= 0xf4) {
            len = 4, cp = c & 0x07, min = 0x10000;
        } else {
            return false;
        }
        if (n - i < len)
            return false;
        for (size_t j = 1; j < len; j++) {
            if ((s[i + j] & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (s[i + j] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += len;
    }
    return true;
}

/* The reference decoding of one key or value into a new heap string; NULL when refused. */
static char *ref_decode(const uint8_t *s, size_t n)
{
    uint8_t *out = malloc(n + 1);
    size_t o = 0;
    if (!out)
        abort();
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%') {
            int hi = i + 1 < n ? hex(s[i + 1]) : -1, lo = i + 2 < n ? hex(s[i + 2]) : -1;
            if (hi < 0 || lo < 0)
                goto refuse;
            out[o++] = (uint8_t)(hi << 4 | lo);
            i += 2;
        } else {
            out[o++] = s[i] == '+' ? ' ' : s[i];
        }
        if (out[o - 1] == 0)
            goto refuse;
    }
    if (!utf8_ok(out, o))
        goto refuse;
    out[o] = 0;
    return (char *)out;
refuse:
    free(out);
    return NULL;
}

static json_t *ref_parse(const uint8_t *body, size_t len)
{
    json_t *obj = json_object();
    size_t p = 0;
    while (p < len) {
        size_t stop = p, eq = len;
        while (stop < len && body[stop] != '&') {
            if (body[stop] == '=' && eq == len)
                eq = stop;
            stop++;
        }
        if (stop > p) {
            size_t kend = eq < stop ? eq : stop;
            char *k = ref_decode(body + p, kend - p);
            char *v = eq < stop ? ref_decode(body + eq + 1, stop - eq - 1) : strdup("");
            bool ok = k && v && json_object_set_new(obj, k, json_string(v)) == 0;
            free(k);
            free(v);
            if (!ok) {
                json_decref(obj);
                return NULL;
            }
        }
        p = stop + 1;
    }
    return obj;
}

/* Percent-encodes s (every byte but ALPHA / DIGIT / "-._~"; space as '+') onto out. */
static size_t encode(const char *s, char *out)
{
    static const char digits[] = "0123456789ABCDEF";
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
            strchr("-._~", *p)) {
            out[o++] = (char)*p;
        } else if (*p == ' ') {
            out[o++] = '+';
        } else {
            out[o++] = '%';
            out[o++] = digits[*p >> 4];
            out[o++] = digits[*p & 15];
        }
    }
    return o;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct ts_arena arena;
    ts_arena_init(&arena, 1024);
    json_t *got = api_parse_form(&arena, (const char *)data, size);
    json_t *want = ref_parse(data, size);
    if (!got != !want || (got && !json_equal(got, want)))
        abort();
    if (got) {
        /* every member is a string without NUL; the whole encodes back to itself */
        char *text = malloc(3 * size + 2);
        size_t t = 0;
        const char *k;
        json_t *v;
        if (!json_is_object(got) || !text)
            abort();
        json_object_foreach(got, k, v)
        {
            if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v))
                abort();
            if (t)
                text[t++] = '&';
            t += encode(k, text + t);
            text[t++] = '=';
            t += encode(json_string_value(v), text + t);
        }
        json_t *again = api_parse_form(&arena, text, t);
        if (!again || !json_equal(again, got))
            abort();
        json_decref(again);
        free(text);
    }
    json_decref(got);
    json_decref(want);
    ts_arena_free(&arena);
    return 0;
}

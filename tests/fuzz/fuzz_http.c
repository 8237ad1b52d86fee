/*
 * fuzz_http.c - HTTP request handling, from the bytes on the socket through libmicrohttpd,
 * Tessera's glue (src/http: prefix, percent-decoding, body limits, routing, 404/405/413) and
 * the hooks of src/api (CORS, API version) into every handler, under a fuzzer.
 *
 * Input: a raw HTTP/1.1 request (or several, pipelined), written as is to a fresh connection
 * of a real server started once per process on a loopback port with a throwaway SQLite
 * database (tests/fuzz/server_fixture.c). So that seeds can reach past authentication, these
 * words are replaced before sending: $SERVICE, $ANON (the service_role and anon keys),
 * $SESSION (a GoTrue access token of a live session), $REFRESH (its refresh token), $DOCTOKEN
 * (a tst_ token of the document fz/alice), $SELF and $TARGET (two user ids); then $LEN by the
 * number of bytes after the first blank line, so a mutated body can keep a right
 * Content-Length. HTTP_MAX_BODY is 1024 here, so 413 is within reach.
 * Properties (abort() when one fails): those of fz_exchange (server_fixture.h): no 5xx from
 * Tessera, a JSON object in every error answer, only libmicrohttpd's own protocol statuses
 * when it answers alone, a well-formed answer, an answer (or a close) within 8 s; ASan,
 * UBSan and LeakSanitizer watch the server's threads in the same process.
 *
 * Built with TS_FUZZ=ON as a libFuzzer program, otherwise with tests/fuzz/replay_main.c.
 * Seeds: tests/fuzz/corpus/http/; dictionary: tests/fuzz/dict/http.dict.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server_fixture.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct word {
    const char *name;
    const char *value;
};

/* Copies src onto out with every word replaced; returns the length. out holds enough. */
static size_t substitute(const uint8_t *src, size_t n, const struct word *w, size_t nw,
                         uint8_t *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        bool done = false;
        for (size_t k = 0; k < nw && src[i] == '$'; k++) {
            size_t l = strlen(w[k].name);
            if (n - i >= l && memcmp(src + i, w[k].name, l) == 0) { /* banned-ok: fuzz input */
                size_t vl = strlen(w[k].value);
                memcpy(out + o, w[k].value, vl);
                o += vl;
                i += l;
                done = true;
                break;
            }
        }
        if (!done)
            out[o++] = src[i++];
    }
    return o;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const struct fz_fixture *fx = fz_server_start(1024);
    const struct word words[] = {
        {"$SERVICE", fx->service_key},   {"$ANON", fx->anon_key},
        {"$SESSION", fx->session_token}, {"$REFRESH", fx->refresh_token},
        {"$DOCTOKEN", fx->doc_token},    {"$SELF", fx->self_id},
        {"$TARGET", fx->target_id},
    };
    size_t longest = 0;
    for (size_t k = 0; k < sizeof(words) / sizeof(words[0]); k++)
        if (strlen(words[k].value) > longest)
            longest = strlen(words[k].value);
    /* every '$' may become the longest value, and $LEN at most 20 digits */
    uint8_t *req = malloc(size * (longest + 20) + 1);
    if (!req)
        abort();
    size_t n = substitute(data, size, words, sizeof(words) / sizeof(words[0]), req);

    const uint8_t *blank = memmem(req, n, "\r\n\r\n", 4);
    char len_text[24];
    snprintf(len_text, sizeof(len_text), "%zu", blank ? n - (size_t)(blank + 4 - req) : 0);
    /* $LEN sits in the headers, before the body it measures, so replacing it (with fewer or
     * more bytes) leaves the body's length as counted. */
    const struct word len_word[] = {{"$LEN", len_text}};
    uint8_t *final = malloc(n * 20 + 1);
    if (!final)
        abort();
    size_t fn = substitute(req, n, len_word, 1, final);
    free(req);

    char method[16] = "";
    for (size_t i = 0; i < fn && i < sizeof(method) - 1 && final[i] != ' '; i++) {
        method[i] = (char) final[i];
        method[i + 1] = '\0';
    }
    fz_exchange(final, fn, method[0] ? method : NULL);
    free(final);
    return 0;
}

/*
 * fuzz_json.c - the request bodies of every endpoint family that reads one (GoTrue's and
 * /v1's), through the real router and handlers, under a fuzzer.
 *
 * Input: byte 0 chooses the request, the rest is its body, sent with a right Content-Length
 * to a real server started once per process (tests/fuzz/server_fixture.c: a throwaway SQLite
 * database with a signed-in user, a second user, a collection with a unique index and a
 * document with a password, a token of that document, a role and a profile). Byte 0: the low
 * five bits pick the endpoint (modulo the table below); bit 0x20 labels the body
 * application/x-www-form-urlencoded instead of application/json (Tessera reads JSON first and
 * falls back to the form decoder); bit 0x40 swaps the credential: /v1 endpoints are called with
 * the document's tst_ token (decided by roles, not as admin), GoTrue's with none; bit 0x80
 * sends GoTrue's paths under /auth/v1. The credentials in the table are valid, so bodies reach
 * the handlers' parsing and checks, and their stores.
 * Properties (abort() when one fails): those of fz_exchange (server_fixture.h): no 5xx, a JSON
 * object in every error answer, a well-formed answer within 8 s; ASan, UBSan and
 * LeakSanitizer watch the server's threads in the same process.
 *
 * Built with TS_FUZZ=ON as a libFuzzer program, otherwise with tests/fuzz/replay_main.c.
 * Seeds: tests/fuzz/corpus/json/; dictionary: tests/fuzz/dict/json.dict.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server_fixture.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum cred { NONE, SERVICE, SESSION };

static const struct endpoint {
    const char *method;
    const char *path;
    enum cred cred;
    bool v1;
    bool target; /* the path ends with the id of the second user */
} endpoints[] = {
    {"POST", "/signup", NONE, false, false},
    {"POST", "/token?grant_type=password", NONE, false, false},
    {"POST", "/token?grant_type=refresh_token", NONE, false, false},
    {"POST", "/token?grant_type=pkce", NONE, false, false},
    {"POST", "/token?grant_type=id_token", NONE, false, false},
    {"POST", "/token", NONE, false, false},
    {"PUT", "/user", SESSION, false, false},
    {"POST", "/admin/users", SERVICE, false, false},
    {"PUT", "/admin/users/", SERVICE, false, true},
    {"POST", "/v1/login", NONE, true, false},
    {"POST", "/v1/identify", NONE, true, false},
    {"POST", "/v1/logout", SERVICE, true, false},
    {"POST", "/v1/collections", SERVICE, true, false},
    {"POST", "/v1/collections/fz/documents", SERVICE, true, false},
    {"PUT", "/v1/collections/fz/documents/alice", SERVICE, true, false},
    {"PATCH", "/v1/collections/fz/documents/alice", SERVICE, true, false},
    {"POST", "/v1/collections/fz/indexes", SERVICE, true, false},
    {"POST", "/v1/collections/users/documents", SERVICE, true, false},
    {"PATCH", "/v1/collections/users/documents/", SERVICE, true, true},
    {"POST", "/v1/tokens", SERVICE, true, false},
    {"POST", "/v1/keys", SERVICE, true, false},
    {"POST", "/v1/access-providers", SERVICE, true, false},
    {"POST", "/v1/oauth/token", NONE, true, false},
    {"POST", "/v1/roles", SERVICE, true, false},
    {"PUT", "/v1/roles/fzrole", SERVICE, true, false},
    {"POST", "/v1/profiles", SERVICE, true, false},
    {"PUT", "/v1/profiles/fzprof", SERVICE, true, false},
    {"POST", "/v1/authz/check", SERVICE, true, false},
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const struct fz_fixture *fx = fz_server_start(1048576);
    if (size == 0)
        return 0;
    uint8_t sel = data[0];
    const struct endpoint *e =
        &endpoints[(sel & 0x1f) % (sizeof(endpoints) / sizeof(endpoints[0]))];
    bool form = sel & 0x20, swap = sel & 0x40, prefixed = (sel & 0x80) && !e->v1;
    const char *body = (const char *)data + 1;
    size_t body_len = size - 1;

    const char *target = e->target ? fx->target_id : "";
    const char *bearer = NULL;
    if (e->v1 && swap)
        bearer = fx->doc_token;
    else if (!swap && e->cred == SERVICE)
        bearer = fx->service_key;
    else if (!swap && e->cred == SESSION)
        bearer = fx->session_token;

    char head[2048];
    int hl = snprintf(head, sizeof(head),
                      "%s %s%s%s HTTP/1.1\r\nHost: fuzz\r\nContent-Type: %s\r\n%s%s%s"
                      "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                      e->method, prefixed ? "/auth/v1" : "", e->path, target,
                      form ? "application/x-www-form-urlencoded" : "application/json",
                      bearer ? "Authorization: Bearer " : "", bearer ? bearer : "",
                      bearer ? "\r\n" : "", body_len);
    if (hl < 0 || (size_t)hl >= sizeof(head))
        abort();
    uint8_t *req = malloc((size_t)hl + body_len);
    if (!req)
        abort();
    memcpy(req, head, (size_t)hl);
    memcpy(req + hl, body, body_len);
    fz_exchange(req, (size_t)hl + body_len, e->method);
    free(req);
    return 0;
}

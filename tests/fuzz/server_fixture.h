/*
 * server_fixture.h - a real Tessera server inside the fuzzing process, for the targets that
 * drive whole requests (fuzz_http, fuzz_json).
 *
 * fz_server_start, called on every input (only the first call does anything), configures
 * Tessera through its own configuration loader, opens a fresh SQLite database in a temporary
 * directory, starts the hash pool, the API and the HTTP server on an ephemeral loopback port,
 * and makes the fixtures (below) through ordinary requests. The server is stopped and the
 * directory removed at exit. Any failure here aborts: a fuzzer without its server would only
 * report nothing.
 *
 * fz_exchange writes a request on a fresh connection and reads every answer until the server
 * closes (half-closing once the first answer is in, or at once for an incomplete request), then
 * checks the invariants,
 * abort()ing when one fails:
 *   - an answer of Tessera's own (it carries X-Request-Id) has a status below 500, or 503
 *     with Retry-After (the database unavailable: the fixture never causes it);
 *   - an answer of Tessera's with a status of 400 or more has a JSON object as its body
 *     (Content-Type application/json), unless it answers a HEAD request;
 *   - an answer libmicrohttpd gave by itself, before Tessera saw the request (a malformed
 *     request line or header, a header block over HTTP_MAX_HEADER_BYTES, an unsupported HTTP
 *     version or transfer coding), has one of the statuses it uses for those: 400, 413, 414,
 *     431, 501 or 505;
 *   - every answer is well formed (status line, headers, a Content-Length the bytes match).
 * The server crashing, or ASan or UBSan seeing anything in it, ends the process anyway.
 * With FZ_TRACE set in the environment, the start of every answer goes to stderr (to see how
 * far the seeds get).
 */
#ifndef TS_FUZZ_SERVER_FIXTURE_H
#define TS_FUZZ_SERVER_FIXTURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FZ_REPLY_TIMEOUT_MS 8000

/* What the fixture made at start-up. Secrets are printable ASCII. */
struct fz_fixture {
    const char *service_key;   /* the service_role JWT: admin on /admin and /v1 */
    const char *anon_key;      /* the anon JWT */
    const char *session_token; /* a GoTrue access token of self_id (a fuzzed /logout may end it) */
    const char *refresh_token; /* of a second session of self_id (fuzzing may revoke it) */
    const char *self_id;       /* the signed-in user (fuzz-self@example.com, "correct horse") */
    const char *target_id;     /* another user, for /admin/users/{id} */
    const char *doc_token;     /* a tst_ token of the document fz/alice */
    /* v1: collection "fz" with unique index "fz_by_email" on data.email, document "alice"
     * (password "correct horse"), role "fzrole", profile "fzprof" (policies: fzrole) */
};

/* max_body: HTTP_MAX_BODY for this process (the first call decides). */
const struct fz_fixture *fz_server_start(long max_body);

/* Sends len bytes as they are; method is the request's method as the caller knows it ("HEAD"
 * changes what a well-formed answer is), or NULL when unknown. Returns the status of the
 * first answer, 0 when the server closed without answering. */
int fz_exchange(const uint8_t *req, size_t len, const char *method);

#endif

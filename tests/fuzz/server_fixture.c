/*
 * server_fixture.c - the in-process Tessera server of fuzz_http and fuzz_json (contract in
 * server_fixture.h). Wired like `tessera serve` (src/cli/cli_serve.c), without its signal
 * loop and sweeper, on a throwaway SQLite database.
 */
#include "server_fixture.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <jansson.h>

#include "api/api.h"
#include "authn/authn.h"
#include "core/core.h"
#include "http/http.h"
#include "store/store.h"

extern char **environ;

static struct {
    bool started;
    char dir[64];
    struct ts_config cfg;
    struct ts_store *store;
    struct ts_keyring *keyring;
    struct ts_hashpool *pool;
    struct ts_api *api;
    struct ts_http_server *srv;
    uint16_t port;
    struct fz_fixture fx;
} S;

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "server_fixture: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    abort();
}

/* ---- one connection ---- */

struct reply {
    int status;
    bool tessera;   /* X-Request-Id present: Tessera answered, not libmicrohttpd alone */
    bool json_type; /* Content-Type application/json */
    bool retry_after;
    const char *body;
    size_t body_len;
    bool has_body; /* false when a HEAD answer carried only the length */
};

static bool header_is(const char *line, size_t len, const char *name, const char **value)
{
    size_t nl = strlen(name);
    if (len <= nl || strncasecmp(line, name, nl) != 0 || line[nl] != ':')
        return false;
    const char *v = line + nl + 1;
    while (*v == ' ')
        v++;
    *value = v;
    return true;
}

enum method_known { NOT_HEAD, HEAD, UNKNOWN };

/* Parses the answer at *pos; false when the bytes there are not a well-formed answer. */
static bool parse_reply(const char *buf, size_t n, size_t *pos, enum method_known head,
                        struct reply *r)
{
    memset(r, 0, sizeof(*r));
    const char *p = buf + *pos, *end = buf + n;
    const char *hdr_end = memmem(p, (size_t)(end - p), "\r\n\r\n", 4);
    if (!hdr_end || end - p < 12 || strncmp(p, "HTTP/1.", 7) != 0 || p[8] != ' ')
        return false;
    for (int k = 9; k < 12; k++) {
        if (p[k] < '0' || p[k] > '9')
            return false;
        r->status = r->status * 10 + (p[k] - '0');
    }
    if (r->status < 100 || r->status > 599)
        return false;
    long length = -1;
    const char *line = (const char *)memchr(p, '\n', (size_t)(hdr_end + 2 - p)) + 1;
    while (line < hdr_end + 2) {
        const char *eol = memmem(line, (size_t)(hdr_end + 2 - line), "\r\n", 2);
        size_t ll = (size_t)(eol - line);
        const char *v;
        if (header_is(line, ll, "Content-Length", &v))
            length = strtol(v, NULL, 10);
        else if (header_is(line, ll, "X-Request-Id", &v))
            r->tessera = true;
        else if (header_is(line, ll, "Retry-After", &v))
            r->retry_after = true;
        else if (header_is(line, ll, "Content-Type", &v))
            r->json_type = strncasecmp(v, "application/json", 16) == 0;
        line = eol + 2;
    }
    const char *body = hdr_end + 4;
    size_t avail = (size_t)(end - body);
    if (length < 0)
        length = (long)avail; /* no length: the body runs to the close */
    /* A HEAD answer carries the length of the body it does not send. When the method of a
     * pipelined request is unknown, another answer or the end right after the headers means
     * the same. */
    bool next = avail >= 7 && strncmp(body, "HTTP/1.", 7) == 0;
    bool bodiless = head == HEAD || r->status < 200 || r->status == 204 || r->status == 304 ||
                    (head == UNKNOWN && length > 0 && (avail == 0 || next));
    /* libmicrohttpd 0.9.75 sends the header block of its own 400 for a malformed
     * Content-Length twice, the first without a body: its bug, not Tessera's (Tessera never
     * sees such a request), tolerated here so that the fuzzer can go on. */
    if (!r->tessera && next)
        bodiless = true;
    if (bodiless) {
        *pos = (size_t)(body - buf);
        return true;
    }
    if ((size_t)length > avail)
        return false;
    r->has_body = true;
    r->body = body;
    r->body_len = (size_t)length;
    *pos = (size_t)(body - buf) + (size_t)length;
    return true;
}

/* Whether the bytes hold a whole request, as far as a strict reading tells: a request line
 * "METHOD TARGET HTTP/1.x", header lines with a colon, all ending in CRLF, the blank line, and
 * as many body bytes as Content-Length says (a chunked body: its last chunk). When in doubt,
 * the connection is half-closed at once so that the server does not wait for more. */
static bool request_complete(const uint8_t *req, size_t len)
{
    const char *s = (const char *)req, *end = memmem(s, len, "\r\n\r\n", 4);
    if (!end)
        return false;
    const char *eol = memchr(s, '\r', (size_t)(end + 2 - s));
    const char *sp1 = memchr(s, ' ', (size_t)(eol - s));
    const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1)) : NULL;
    if (eol[1] != '\n' || !sp1 || sp1 == s || !sp2 || sp2 == sp1 + 1 || eol - sp2 != 9 ||
        strncmp(sp2 + 1, "HTTP/1.", 7) != 0 || (sp2[8] != '0' && sp2[8] != '1'))
        return false;
    for (const char *c = s; c < eol; c++)
        if (*c < '!' && *c != ' ')
            return false;
    size_t have = len - (size_t)(end + 4 - s);
    for (const char *line = eol + 2; line < end + 2;) {
        const char *le = memchr(line, '\r', (size_t)(end + 2 - line));
        if (!le)
            return false;
        size_t ll = (size_t)(le - line);
        const char *v;
        if (le[1] != '\n' || !memchr(line, ':', ll) || memchr(line, '\n', ll))
            return false;
        if (header_is(line, ll, "Content-Length", &v)) {
            /* by hand: the request is not NUL-terminated, so no strtoull */
            size_t want = 0;
            for (; v < le && *v >= '0' && *v <= '9' && want <= len; v++)
                want = want * 10 + (size_t)(*v - '0');
            if (want > have)
                return false;
        }
        if (header_is(line, ll, "Transfer-Encoding", &v))
            return len >= 5 && memcmp(req + len - 5, "0\r\n\r\n", 5) == 0; /* banned-ok */
        line = le + 2;
    }
    return true;
}

/* Writes the request and reads until the server closes. The connection is half-closed once
 * the first answer is in (or at once when the request is incomplete, or after a second of
 * silence): libmicrohttpd drops a request that is parked for the hash pool when the client
 * half-closes, so an earlier half-close would lose answers. Returns the bytes (heap,
 * NUL-terminated) and their length in *n. */
static char *roundtrip(const uint8_t *req, size_t len, enum method_known head, size_t *n)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket", strerror(errno));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(S.port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    /* libFuzzer's timer (SIGALRM, once a second) may interrupt any call here: an interrupted
     * connect goes on by itself, so wait for it to finish. */
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        int soerr = errno;
        socklen_t sl = sizeof(soerr);
        struct pollfd w = {.fd = fd, .events = POLLOUT};
        while (soerr == EINTR && poll(&w, 1, FZ_REPLY_TIMEOUT_MS) < 0 && errno == EINTR)
            ;
        if (soerr == EINTR && getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0)
            soerr = errno;
        if (soerr)
            die("connect", strerror(soerr));
    }
    size_t off = 0;
    while (off < len) {
        ssize_t w = send(fd, req + off, len - off, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break; /* the server may close early (413, 431): read what it said */
        off += (size_t)w;
    }
    bool shut = !request_complete(req, len);
    if (shut)
        shutdown(fd, SHUT_WR);
    size_t cap = 4096, got = 0;
    char *buf = malloc(cap);
    if (!buf)
        abort();
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int r = poll(&p, 1, shut ? FZ_REPLY_TIMEOUT_MS : 1000);
        if (r == 0 && !shut) {
            shutdown(fd, SHUT_WR);
            shut = true;
            continue;
        }
        if (r == 0) {
            fprintf(stderr, "server_fixture: no answer and no close within %d ms\n",
                    FZ_REPLY_TIMEOUT_MS);
            abort();
        }
        if (r < 0 && errno == EINTR)
            continue;
        if (got + 2048 > cap) {
            cap *= 2;
            buf = realloc(buf, cap);
            if (!buf)
                abort();
        }
        ssize_t k = recv(fd, buf + got, cap - got - 1, 0);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            break; /* closed (or reset after an early answer) */
        got += (size_t)k;
        buf[got] = '\0'; /* parse_reply reads numbers with strtol */
        struct reply first;
        size_t pos = 0;
        if (!shut && parse_reply(buf, got, &pos, head, &first)) {
            shutdown(fd, SHUT_WR);
            shut = true;
        }
    }
    close(fd);
    buf[got] = '\0';
    *n = got;
    return buf;
}

static void violation(const char *what, const uint8_t *req, size_t len, const char *ans, size_t n)
{
    fprintf(stderr,
            "server_fixture: invariant broken: %s\n--- request (%zu bytes)\n%.*s\n"
            "--- answer (%zu bytes)\n%.*s\n---\n",
            what, len, (int)(len > 4000 ? 4000 : len), (const char *)req, n,
            (int)(n > 4000 ? 4000 : n), ans);
    abort();
}

static bool libmicrohttpd_status(int s)
{
    return s == 400 || s == 413 || s == 414 || s == 431 || s == 501 || s == 505;
}

static bool json_object_text(const char *s, size_t n)
{
    json_t *j = json_loadb(s, n, 0, NULL);
    bool ok = json_is_object(j);
    json_decref(j);
    return ok;
}

/* Whether the first request's path, percent-decoded, is the gateway's: nginx's auth_request
 * endpoint answers without a body by design (docs/API.md, "The gateway"). */
static bool gateway_request(const uint8_t *req, size_t len)
{
    static const char gateway[] = "/v1/authz/gateway";
    const uint8_t *p = memchr(req, ' ', len), *end = req + len;
    if (!p)
        return false;
    p++;
    const uint8_t *scheme = memmem(p, (size_t)(end - p), "://", 3);
    if (scheme && scheme < (const uint8_t *)memchr(p, ' ', (size_t)(end - p)) && *p != '/') {
        p = memchr(scheme + 3, '/', (size_t)(end - scheme - 3));
        if (!p)
            return false;
    }
    char path[sizeof(gateway) + 1];
    size_t o = 0;
    while (p < end && *p != ' ' && *p != '?' && o < sizeof(path) - 1) {
        int hi, lo;
        if (*p == '%' && end - p > 2 && (hi = ts_hex_digit(p[1])) >= 0 &&
            (lo = ts_hex_digit(p[2])) >= 0 && (hi | lo)) {
            path[o++] = (char)(hi * 16 + lo);
            p += 3;
        } else {
            path[o++] = (char)*p++;
        }
    }
    path[o] = '\0';
    return strcmp(path, gateway) == 0 || (strncmp(path, gateway, sizeof(gateway) - 1) == 0 &&
                                          strcmp(path + sizeof(gateway) - 1, "/") == 0);
}

int fz_exchange(const uint8_t *req, size_t len, const char *method)
{
    size_t n;
    enum method_known first_kind = !method                       ? UNKNOWN
                                   : strcmp(method, "HEAD") == 0 ? HEAD
                                                                 : NOT_HEAD;
    int64_t t0 = ts_mono_us();
    char *ans = roundtrip(req, len, first_kind, &n);
    size_t pos = 0;
    int first = 0;
    for (int i = 0; pos < n;) {
        struct reply r;
        /* only the first answer's request is known for sure */
        enum method_known kind = i == 0 ? first_kind : UNKNOWN;
        if (!parse_reply(ans, n, &pos, kind, &r))
            violation("a malformed answer", req, len, ans, n);
        if (r.status < 200 && !r.tessera)
            continue; /* 100 Continue, before the answer */
        if (i++ == 0)
            first = r.status;
        if (!r.tessera) {
            if (!libmicrohttpd_status(r.status))
                violation("libmicrohttpd answered with an unexpected status", req, len, ans, n);
            continue;
        }
        if (r.status >= 500 && !(r.status == 503 && r.retry_after))
            violation("a 5xx answer", req, len, ans, n);
        if (r.status < 400)
            continue;
        if (r.body_len && (!r.json_type || !json_object_text(r.body, r.body_len)))
            violation("an error answer whose body is not a JSON object", req, len, ans, n);
        if (!r.body_len && kind == NOT_HEAD && !gateway_request(req, len))
            violation("an error answer without a body", req, len, ans, n);
    }
    if (getenv("FZ_TRACE")) /* for checking what seeds reach: the first answer, shortened */
        fprintf(stderr, "fz: %lld ms: %.*s\n", (long long)(ts_mono_us() - t0) / 1000,
                (int)(n > 400 ? 400 : n), ans);
    free(ans);
    return first;
}

/* ---- start-up ---- */

/* Sends one request of the fixture and returns its first answer's body as JSON (NULL when
 * it is not JSON); *status gets the status. */
static json_t *call(const char *method, const char *path, const char *bearer, const char *body,
                    int *status)
{
    char *req = ts_xasprintf("%s %s HTTP/1.1\r\nHost: fuzz\r\nContent-Type: application/json\r\n"
                             "%s%s%sContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
                             method, path, bearer ? "Authorization: Bearer " : "",
                             bearer ? bearer : "", bearer ? "\r\n" : "", strlen(body), body);
    size_t n, pos = 0;
    char *ans = roundtrip((const uint8_t *)req, strlen(req), NOT_HEAD, &n);
    struct reply r;
    json_t *j = NULL;
    if (!parse_reply(ans, n, &pos, NOT_HEAD, &r))
        die("fixture request got a malformed answer", path);
    *status = r.status;
    if (r.has_body)
        j = json_loadb(r.body, r.body_len, 0, NULL);
    free(ans);
    free(req);
    return j;
}

/* call() that must answer want; returns a copy of the string at the JSON path a.b (or NULL). */
static const char *must(const char *method, const char *path, const char *bearer, const char *body,
                        int want, const char *member, const char *sub)
{
    int status;
    json_t *j = call(method, path, bearer, body, &status);
    if (status != want) {
        char *text = j ? json_dumps(j, 0) : NULL;
        fprintf(stderr, "server_fixture: %s %s: %d, not %d: %s\n", method, path, status, want,
                text ? text : "");
        abort();
    }
    const char *out = NULL;
    if (member) {
        json_t *v = json_object_get(j, member);
        if (sub)
            v = json_object_get(v, sub);
        if (!json_is_string(v))
            die("fixture answer lacks", member);
        out = ts_xstrdup(json_string_value(v));
    }
    json_decref(j);
    return out;
}

static void remove_dir(void)
{
    DIR *d = opendir(S.dir);
    struct dirent *de;
    while (d && (de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        unlinkat(dirfd(d), de->d_name, 0);
    }
    if (d)
        closedir(d);
    rmdir(S.dir);
}

static void stop(void)
{
    ts_http_stop(S.srv, 2000);
    ts_hashpool_free(S.pool);
    ts_api_free(S.api);
    ts_keyring_free(S.keyring);
    ts_store_close(S.store);
    ts_config_free(&S.cfg);
    remove_dir();
}

/* Everything but the fixtures: what cli_bootstrap and cli_serve do, on a throwaway database. */
static void start_server(long max_body)
{
    snprintf(S.dir, sizeof(S.dir), "/tmp/tessera-fuzz-srv.XXXXXX");
    if (!mkdtemp(S.dir))
        die("mkdtemp", strerror(errno));
    char url[128], body[32];
    snprintf(url, sizeof(url), "sqlite://%s/fuzz.db", S.dir);
    snprintf(body, sizeof(body), "%ld", max_body);
    /* Through the configuration loader, as an operator would: cheap hashes (the fuzzer wants
     * many requests), sign-ups confirmed at once so they get sessions, no request log. */
    static const char *const env[][2] = {
        {"TESSERA_LISTEN", "127.0.0.1:0"},
        {"TESSERA_MAILER_AUTOCONFIRM", "true"},
        {"TESSERA_EXTERNAL_ANONYMOUS_USERS_ENABLED", "true"},
        {"TESSERA_PASSWORD_HASH_MEMORY_KIB", "8"},
        {"TESSERA_PASSWORD_HASH_ITERATIONS", "1"},
        {"TESSERA_PASSWORD_HASH_WORKERS", "2"},
        {"TESSERA_PASSWORD_HASH_NICE", "0"},
        {"TESSERA_HTTP_THREADS", "2"},
        {"TESSERA_HTTP_CONNECTION_TIMEOUT", "5"},
        {"TESSERA_LOG_REQUESTS", "false"},
        {"TESSERA_LOG_LEVEL", "error"},
        /* the limits run (their code is fuzzed too) but never refuse: a refusal would hide
         * the handler behind it from the fuzzer */
        {"TESSERA_RATE_LIMIT_EXEMPT", ""},
        {"TESSERA_RATE_LIMIT_TOKEN_REFRESH", "1000000000/1s,1000000"},
        {"TESSERA_RATE_LIMIT_OTP", "1000000000/1s,1000000"},
        {"TESSERA_RATE_LIMIT_ANONYMOUS_USERS", "1000000000/1s,1000000"},
        {"TESSERA_RATE_LIMIT_ACCOUNT", "1000000000/1s,1000000"},
        {"TESSERA_RATE_LIMIT_KEY", "1000000000/1s,1000000"},
        {"TESSERA_RATE_LIMIT_PROFILE_DEFAULT", "0"},
        {"TESSERA_PASSWORD_LOCKOUT_ATTEMPTS", "1000000"},
    };
    /* Only these settings: the test runner's own variables (TESSERA_TEST_PG_HOST, ...) and an
     * operator's would otherwise reach the loader, which refuses unknown TESSERA_* names. */
    for (;;) {
        char *drop = NULL;
        for (char **e = environ; e && *e && !drop; e++)
            if (strncmp(*e, "TESSERA_", 8) == 0 || strncmp(*e, "GOTRUE_", 7) == 0)
                drop = *e;
        if (!drop)
            break;
        char name[256];
        size_t n = strcspn(drop, "=");
        snprintf(name, sizeof(name), "%.*s", (int)(n < sizeof(name) ? n : sizeof(name) - 1), drop);
        if (unsetenv(name) != 0)
            break;
    }
    for (size_t i = 0; i < TS_ARRAY_LEN(env); i++)
        setenv(env[i][0], env[i][1], 1);
    setenv("TESSERA_DATABASE_URL", url, 1);
    setenv("TESSERA_HTTP_MAX_BODY", body, 1);
    ts_config_defaults(&S.cfg);
    char *err = NULL;
    if (ts_config_load(&S.cfg, NULL, &err) != TS_OK)
        die("configuration", err);
    ts_log_set_level(TS_LOG_ERROR);
    signal(SIGPIPE, SIG_IGN);

    struct ts_store_options so = {.schema = S.cfg.database_schema};
    int applied = 0;
    if (ts_store_open(S.cfg.database_url, &so, &S.store, &err) != TS_OK ||
        ts_store_migrate(S.store, &applied, &err) != TS_OK)
        die("store", err);
    struct ts_keys_config kc = {.hs256_secret = S.cfg.jwt_secret,
                                .issuer = S.cfg.jwt_issuer,
                                .audience = S.cfg.jwt_aud,
                                .access_ttl = S.cfg.jwt_exp,
                                .retired_keep = TS_KEYS_RETIRED_KEEP};
    bool created;
    if (ts_keyring_open(S.store, &kc, &S.keyring, &created) != TS_OK)
        die("keyring", NULL);
    struct ts_password_params pp = {.memory_kib = (uint32_t)S.cfg.password_hash_memory_kib,
                                    .iterations = (uint32_t)S.cfg.password_hash_iterations};
    if (ts_hashpool_new((int)S.cfg.password_hash_workers, (int)S.cfg.password_hash_queue, &pp,
                        &S.pool) != TS_OK)
        die("hash pool", NULL);
    struct ts_api_deps deps = {
        .cfg = &S.cfg, .store = S.store, .keyring = S.keyring, .hashpool = S.pool};
    S.api = ts_api_new(&deps);
    if (ts_api_load_files(S.api, &err) != TS_OK)
        die("api files", err);
    struct ts_http_options ho = {
        .listen = S.cfg.listen,
        .threads = (int)S.cfg.http_threads,
        .max_body = (size_t)S.cfg.http_max_body,
        .max_header_bytes = (size_t)S.cfg.http_max_header_bytes,
        .connection_timeout = (unsigned)S.cfg.http_connection_timeout,
        .max_connections = (unsigned)S.cfg.http_max_connections,
    };
    ts_api_http_options(S.api, &ho);
    if (ts_http_start(&ho, &S.srv, &err) != TS_OK)
        die("http", err);
    S.port = ts_http_port(S.srv);
    atexit(stop);
}

static void make_fixtures(void)
{
    struct fz_fixture *fx = &S.fx;
    int64_t iat = ts_now_s();
    char *service = NULL, *anon = NULL;
    if (ts_keyring_mint_api_key(S.keyring, "service_role", iat, &service) != TS_OK ||
        ts_keyring_mint_api_key(S.keyring, "anon", iat, &anon) != TS_OK)
        die("api keys", NULL);
    fx->service_key = service;
    fx->anon_key = anon;
    const char *svc = fx->service_key;

    int status;
    json_t *s =
        call("POST", "/signup", NULL,
             "{\"email\":\"fuzz-self@example.com\",\"password\":\"correct horse\"}", &status);
    const char *at = json_string_value(json_object_get(s, "access_token"));
    const char *id = json_string_value(json_object_get(json_object_get(s, "user"), "id"));
    if (status != 200 || !at || !id)
        die("sign-up of the fixture user", NULL);
    fx->session_token = ts_xstrdup(at);
    fx->self_id = ts_xstrdup(id);
    /* The refresh token comes from a second session: reusing it late revokes its session,
     * which must not end the one session_token belongs to. */
    fx->refresh_token = must("POST", "/token?grant_type=password", NULL,
                             "{\"email\":\"fuzz-self@example.com\",\"password\":\"correct horse\"}",
                             200, "refresh_token", NULL);
    json_decref(s);
    fx->target_id = must("POST", "/admin/users", svc,
                         "{\"email\":\"fuzz-target@example.com\",\"password\":\"correct horse\","
                         "\"email_confirm\":true}",
                         200, "id", NULL);

    must("POST", "/v1/collections", svc, "{\"name\":\"fz\"}", 201, NULL, NULL);
    must("POST", "/v1/collections/fz/indexes", svc,
         "{\"name\":\"fz_by_email\",\"terms\":[\"data.email\"],\"unique\":true}", 201, NULL, NULL);
    must("POST", "/v1/collections/fz/documents", svc,
         "{\"id\":\"alice\",\"data\":{\"email\":\"alice@example.com\",\"owner\":\"alice\"},"
         "\"credentials\":{\"password\":\"correct horse\"}}",
         201, NULL, NULL);
    fx->doc_token = must("POST", "/v1/tokens", svc,
                         "{\"identity\":{\"collection\":\"fz\",\"id\":\"alice\"},\"ttl\":\"720h\"}",
                         201, "token", "secret");
    must("POST", "/v1/roles", svc,
         "{\"name\":\"fzrole\",\"privileges\":[{\"resource\":\"collections/fz\",\"actions\":{"
         "\"read\":\"resource.data.owner == identity.id\",\"list\":true,"
         "\"write\":\"old.data.owner == identity.id\"}}]}",
         201, NULL, NULL);
    must("POST", "/v1/profiles", svc, "{\"name\":\"fzprof\",\"policies\":[{\"role\":\"fzrole\"}]}",
         201, NULL, NULL);
}

const struct fz_fixture *fz_server_start(long max_body)
{
    if (!S.started) {
        S.started = true;
        start_server(max_body);
        make_fixtures();
    }
    return &S.fx;
}

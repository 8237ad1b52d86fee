/*
 * http.h - the HTTP server (libmicrohttpd), the router and the request object.
 *
 * This module knows HTTP and nothing of authentication: handlers receive a
 * struct ts_http_req whose memory comes from a per-request arena, and answer with
 * ts_http_respond. A handler that must wait for slow work (password hashing) calls
 * ts_http_suspend, hands the request to a worker, and the worker calls
 * ts_http_resume; the continuation then runs on an HTTP thread.
 *
 * Limits enforced here, before any handler runs: body size (413), header memory
 * (431 by libmicrohttpd), idle clients (connection timeout), slow clients (header
 * deadline), connection count. Must never: log a header value or a body.
 *
 * Depends on core and libmicrohttpd only. Internals: docs/internals/http.md.
 */
#ifndef TS_HTTP_H
#define TS_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/core.h"

struct ts_http_req;
struct ts_http_server;

typedef void ts_http_handler_fn(struct ts_http_req *req);

enum ts_http_method {
    TS_HTTP_GET = 1 << 0,
    TS_HTTP_POST = 1 << 1,
    TS_HTTP_PUT = 1 << 2,
    TS_HTTP_DELETE = 1 << 3,
    TS_HTTP_PATCH = 1 << 4,
    TS_HTTP_OPTIONS = 1 << 5,
    TS_HTTP_HEAD = 1 << 6,
};

struct ts_http_route {
    unsigned methods;    /* a mask of enum ts_http_method */
    const char *pattern; /* "/admin/users/{id}": literal segments and {name} params */
    ts_http_handler_fn *handler;
};

struct ts_http_options {
    const char *listen;          /* "host:port" */
    int threads;                 /* HTTP threads, each polling a share of the connections */
    bool use_epoll;              /* epoll instead of poll() (see docs/internals/http.md) */
    size_t max_body;             /* bytes; larger bodies get 413 */
    size_t max_header_bytes;     /* per-connection memory for request line and headers */
    unsigned connection_timeout; /* seconds of silence before a connection is closed */
    /* Seconds a client has to send a request's headers, from the accept or from the end of
     * the previous response; 0 = no deadline (the connection timeout only). */
    unsigned header_timeout;
    unsigned max_connections;
    const char *prefix; /* a path prefix also served ("/auth/v1"), or NULL */
    const struct ts_http_route *routes;
    size_t nroutes;
    /* Called for a path no route matches, and for a matched path with a method it does not
     * take (method_allowed false); handlers answer as for any request. */
    ts_http_handler_fn *not_found;
    /* Answers a request whose body is larger than max_body. */
    ts_http_handler_fn *too_large;
    /* Called before routing for every request (CORS preflight, common headers); return true
     * when it answered the request itself. */
    bool (*before)(struct ts_http_req *req);
    /* Called after the response was sent, for logging; status and timing are set. */
    void (*after)(struct ts_http_req *req);
    void *app; /* handed to handlers through ts_http_app */
};

TS_NODISCARD enum ts_rc ts_http_start(const struct ts_http_options *opt,
                                      struct ts_http_server **out, char **err);
/* The bound port (useful when listening on port 0). */
uint16_t ts_http_port(const struct ts_http_server *srv);
/* Stops accepting, waits up to grace_ms for requests in flight, then stops and frees. */
void ts_http_stop(struct ts_http_server *srv, unsigned grace_ms);

/* ---- the request ---- */

struct ts_arena *ts_http_arena(struct ts_http_req *req);
void *ts_http_app(struct ts_http_req *req);
enum ts_http_method ts_http_method(const struct ts_http_req *req);
const char *ts_http_method_name(const struct ts_http_req *req);
/* The path with the prefix (if any) removed, percent-decoded. */
const char *ts_http_path(const struct ts_http_req *req);
/* True when the URL began with the prefix (which ts_http_path has removed). */
bool ts_http_prefixed(const struct ts_http_req *req);
/* The route pattern that matched ("/admin/users/{id}"), or "-" when none did. */
const char *ts_http_route_name(const struct ts_http_req *req);
/* A path parameter of the matched route, or NULL. */
const char *ts_http_param(const struct ts_http_req *req, const char *name);
/* A request header (case-insensitive name), or NULL. */
const char *ts_http_header(struct ts_http_req *req, const char *name);
/* Calls fn for every request header, in the order received (names as sent). */
typedef void ts_http_header_fn(void *cls, const char *name, const char *value);
void ts_http_headers_each(struct ts_http_req *req, ts_http_header_fn *fn, void *cls);
/* A query-string argument (decoded), or NULL. */
const char *ts_http_query(struct ts_http_req *req, const char *name);
/* Every value of a repeated query-string argument, in order: fills up to max pointers into
 * out and returns how many there are (which may exceed max). */
size_t ts_http_query_all(struct ts_http_req *req, const char *name, const char **out, size_t max);
/* The request body (NUL-terminated; may contain NULs) and its length. */
const char *ts_http_body(const struct ts_http_req *req, size_t *len);
/* The client's address as text. */
const char *ts_http_client_ip(struct ts_http_req *req);
/* The request id (also sent as X-Request-Id). */
const char *ts_http_request_id(const struct ts_http_req *req);
/* False when the path exists but not with this method. */
bool ts_http_method_allowed(const struct ts_http_req *req);
/* The methods the path takes, as an Allow header value ("GET, POST"); "" when none. */
const char *ts_http_allowed_methods(struct ts_http_req *req);

/* Per-request values the application keeps (e.g., the authenticated user id, for logs). */
void ts_http_set_app_data(struct ts_http_req *req, void *data);
void *ts_http_app_data(const struct ts_http_req *req);

/* ---- answering ---- */

/* Adds a response header; name and value are copied. */
void ts_http_add_header(struct ts_http_req *req, const char *name, const char *value);
/* Sets the response (body copied). Call once per request. */
void ts_http_respond(struct ts_http_req *req, int status, const char *content_type,
                     const char *body, size_t len);
/* The status sent (0 before ts_http_respond). */
int ts_http_status(const struct ts_http_req *req);
/* Microseconds from the first byte of the request to now. */
int64_t ts_http_elapsed_us(const struct ts_http_req *req);

/* ---- waiting for a worker ---- */

/*
 * Parks the request until slow work finishes elsewhere. The handler calls this and
 * returns without responding. Once the connection is parked, start(req) runs (still on
 * the HTTP thread) and hands the work to another thread; that thread, or start itself
 * when the work cannot be handed over, calls ts_http_resume(req) exactly once. The
 * server then calls cont(req) on an HTTP thread, which must respond.
 * Starting the work only after parking means a fast worker can never resume a
 * connection that is not parked yet.
 */
void ts_http_suspend(struct ts_http_req *req, ts_http_handler_fn *start, ts_http_handler_fn *cont);
/* Thread-safe. */
void ts_http_resume(struct ts_http_req *req);
/* Routes the request and runs its handler again from the start (the `before` hook is not run
 * again). A continuation for a handler that parked the request before doing anything, to
 * wait for something it needs (a key set being fetched), and then simply starts over. */
void ts_http_redispatch(struct ts_http_req *req);

/* ---- metrics ---- */

/* Appends Prometheus text for request counts by route and status and the latency
 * histogram. */
TS_NODISCARD enum ts_rc ts_http_metrics_render(struct ts_http_server *srv, struct ts_buf *out);
struct ts_http_server *ts_http_server_of(struct ts_http_req *req);

#endif

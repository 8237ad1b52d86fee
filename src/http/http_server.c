/*
 * http_server.c - libmicrohttpd glue: request life cycle, routing, limits,
 * suspend/resume and graceful stop.
 *
 * Event loop: poll() with one internal thread per core by default. libmicrohttpd
 * 0.9.75's epoll loop was measured to collapse to a few hundred requests per second
 * when one thread holds exactly 128, 129 or 256 connections (perf-facts.md); its
 * poll() loop had no such stall from 128 to 1,000 connections. bench/ measures both
 * (TESSERA_HTTP_EVENT_LOOP=epoll) so the choice can be re-checked.
 *
 * Keep-alive: libmicrohttpd drops keep-alive when a response is queued on the first
 * call of the access handler, so normal responses are only queued once the request
 * (headers and body) is complete.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "http_int.h"

/* How much of an oversized body is read and dropped, in multiples of max_body, so that the
 * client gets its 413 instead of a reset connection. */
#define DRAIN_FACTOR 4

/* ---- routing ---- */

static void compile_routes(struct ts_http_server *srv)
{
    srv->nroutes = srv->opt.nroutes;
    srv->routes = ts_xcalloc(srv->nroutes ? srv->nroutes : 1, sizeof(*srv->routes));
    for (size_t i = 0; i < srv->nroutes; i++) {
        struct compiled_route *cr = &srv->routes[i];
        cr->route = &srv->opt.routes[i];
        const char *p = cr->route->pattern;
        while (*p) {
            TS_ASSERT(*p == '/');
            p++;
            const char *end = strchr(p, '/');
            size_t len = end ? (size_t)(end - p) : strlen(p);
            if (len == 0 && !end)
                break;
            TS_ASSERT(cr->nsegs < TS_HTTP_MAX_SEGMENTS);
            bool param = len > 2 && p[0] == '{' && p[len - 1] == '}';
            cr->is_param[cr->nsegs] = param;
            cr->segs[cr->nsegs] = param ? p + 1 : p;
            cr->seglens[cr->nsegs] = param ? len - 2 : len;
            cr->nsegs++;
            p += len;
        }
    }
}

static enum ts_http_method method_of(const char *m)
{
    static const struct {
        const char *name;
        enum ts_http_method method;
    } methods[] = {{"GET", TS_HTTP_GET},     {"POST", TS_HTTP_POST},
                   {"PUT", TS_HTTP_PUT},     {"DELETE", TS_HTTP_DELETE},
                   {"PATCH", TS_HTTP_PATCH}, {"OPTIONS", TS_HTTP_OPTIONS},
                   {"HEAD", TS_HTTP_HEAD}};
    for (size_t i = 0; i < TS_ARRAY_LEN(methods); i++)
        if (strcmp(m, methods[i].name) == 0)
            return methods[i].method;
    return 0;
}

/* Splits path into segments (in the arena) and finds the route. */
static void route(struct ts_http_req *req)
{
    struct ts_http_server *srv = req->srv;
    const char *segs[TS_HTTP_MAX_SEGMENTS];
    size_t lens[TS_HTTP_MAX_SEGMENTS];
    int n = 0;
    const char *p = req->path;
    bool too_deep = false;
    while (*p == '/') {
        p++;
        const char *end = strchr(p, '/');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == 0 && !end)
            break; /* a trailing slash */
        if (n == TS_HTTP_MAX_SEGMENTS) {
            too_deep = true;
            break;
        }
        segs[n] = p;
        lens[n] = len;
        n++;
        p += len;
    }
    req->route_index = -1;
    req->method_allowed = true;
    if (too_deep)
        return;
    for (size_t i = 0; i < srv->nroutes; i++) {
        const struct compiled_route *cr = &srv->routes[i];
        if (cr->nsegs != n)
            continue;
        bool ok = true;
        for (int s = 0; s < n && ok; s++) {
            if (cr->is_param[s])
                ok = lens[s] > 0;
            else
                ok = lens[s] == cr->seglens[s] &&
                     memcmp(segs[s], cr->segs[s], lens[s]) == 0; /* banned-ok: a path */
        }
        if (!ok)
            continue;
        req->path_methods |= cr->route->methods;
        if (!(cr->route->methods & req->method)) {
            if (req->route_index < 0)
                req->route_index = (int)i; /* remember the path matched, for 405 */
            req->method_allowed = false;
            continue;
        }
        req->route_index = (int)i;
        req->method_allowed = true;
        req->nparams = 0;
        for (int s = 0; s < n && req->nparams < TS_HTTP_MAX_PARAMS; s++) {
            if (!cr->is_param[s])
                continue;
            req->param_names[req->nparams] =
                ts_arena_strndup(&req->arena, cr->segs[s], cr->seglens[s]);
            req->param_values[req->nparams] = ts_arena_strndup(&req->arena, segs[s], lens[s]);
            req->nparams++;
        }
        return;
    }
}

/* ---- the header deadline ----
 *
 * libmicrohttpd's connection timeout counts silence only: a client sending its headers one
 * byte a second (slowloris) is never silent, so a few thousand such clients would hold every
 * connection slot for as long as they liked. Each connection therefore also has a deadline
 * for its request's headers, header_timeout from its accept and from the end of each
 * response (so an idle kept-alive connection lasts the shorter of the two timeouts). The
 * access handler's first call for a request marks the headers complete.
 *
 * A reaper thread cuts connections past the deadline, unless bytes of theirs are still
 * waiting in the socket (then the server is the slow one), with shutdown(2): libmicrohttpd then
 * reads the end of the stream and closes the connection on its own thread, the only one
 * that may. The descriptor cannot be closed and reused under the reaper: libmicrohttpd
 * reports a connection closed (watch_closed, which takes watch_lock) before it closes the
 * socket, and the reaper holds watch_lock. */

static void watch_started(struct ts_http_server *srv, struct MHD_Connection *conn, void **ctx)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    struct conn_watch *w = ts_xcalloc(1, sizeof(*w));
    w->fd = ci ? ci->connect_fd : MHD_INVALID_SOCKET;
    atomic_store(&w->waiting_since_us, ts_mono_us());
    pthread_mutex_lock(&srv->watch_lock);
    w->next = srv->watched;
    if (w->next)
        w->next->prev = w;
    srv->watched = w;
    pthread_mutex_unlock(&srv->watch_lock);
    *ctx = w;
}

static void watch_closed(struct ts_http_server *srv, void **ctx)
{
    struct conn_watch *w = *ctx;
    if (!w)
        return;
    *ctx = NULL;
    pthread_mutex_lock(&srv->watch_lock);
    if (w->prev)
        w->prev->next = w->next;
    else
        srv->watched = w->next;
    if (w->next)
        w->next->prev = w->prev;
    pthread_mutex_unlock(&srv->watch_lock);
    free(w);
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    struct ts_http_server *srv = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED && srv->opt.header_timeout)
        watch_started(srv, conn, socket_context);
    else if (code == MHD_CONNECTION_NOTIFY_CLOSED)
        watch_closed(srv, socket_context);
}

/* since_us: when the connection began waiting for headers again, or 0 once they are in. */
static void watch_mark(struct MHD_Connection *conn, int64_t since_us)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    struct conn_watch *w = ci ? ci->socket_context : NULL;
    if (w)
        atomic_store(&w->waiting_since_us, since_us);
}

static void *reaper_main(void *arg)
{
    struct ts_http_server *srv = arg;
    int64_t limit_us = (int64_t)srv->opt.header_timeout * 1000000;
    /* A connection goes at most a quarter of the deadline (and a second) past it. */
    int64_t period_us = limit_us / 4 < 1000000 ? limit_us / 4 : 1000000;
    pthread_mutex_lock(&srv->watch_lock);
    while (!srv->stopping) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        int64_t ns = until.tv_nsec + (period_us % 1000000) * 1000;
        until.tv_sec += (time_t)(period_us / 1000000 + ns / 1000000000);
        until.tv_nsec = (long)(ns % 1000000000);
        pthread_cond_timedwait(&srv->watch_wake, &srv->watch_lock, &until);
        int64_t now = ts_mono_us();
        for (struct conn_watch *w = srv->watched; w && !srv->stopping; w = w->next) {
            int64_t since = atomic_load(&w->waiting_since_us);
            if (w->cut || since == 0 || now - since < limit_us || w->fd == MHD_INVALID_SOCKET)
                continue;
            /* Bytes waiting in the socket mean the server is behind (its threads starved of
             * CPU), not the client: only a client whose every byte was read is too slow. */
            int unread = 0;
            if (ioctl(w->fd, FIONREAD, &unread) == 0 && unread > 0)
                continue;
            shutdown(w->fd, SHUT_RDWR);
            w->cut = true;
        }
    }
    pthread_mutex_unlock(&srv->watch_lock);
    return NULL;
}

static bool reaper_start(struct ts_http_server *srv)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&srv->watch_wake, &attr);
    pthread_condattr_destroy(&attr);
    pthread_mutex_init(&srv->watch_lock, NULL);
    if (!srv->opt.header_timeout)
        return true;
    srv->reaper_started = pthread_create(&srv->reaper, NULL, reaper_main, srv) == 0;
    return srv->reaper_started;
}

static void reaper_stop(struct ts_http_server *srv)
{
    pthread_mutex_lock(&srv->watch_lock);
    srv->stopping = true;
    pthread_cond_signal(&srv->watch_wake);
    pthread_mutex_unlock(&srv->watch_lock);
    if (srv->reaper_started)
        pthread_join(srv->reaper, NULL);
    srv->reaper_started = false;
}

static void reaper_free(struct ts_http_server *srv)
{
    /* libmicrohttpd reports every connection closed when it stops; this is only in case. */
    while (srv->watched) {
        struct conn_watch *w = srv->watched;
        srv->watched = w->next;
        free(w);
    }
    pthread_cond_destroy(&srv->watch_wake);
    pthread_mutex_destroy(&srv->watch_lock);
}

/* ---- request life cycle ---- */

static struct ts_http_req *req_new(struct ts_http_server *srv, struct MHD_Connection *conn,
                                   const char *url, const char *method)
{
    struct ts_http_req *req = ts_xcalloc(1, sizeof(*req));
    req->srv = srv;
    req->conn = conn;
    req->start_us = ts_mono_us();
    ts_arena_init(&req->arena, 8192);
    req->method = method_of(method);
    req->method_name = ts_arena_strdup(&req->arena, method);
    const char *path = url;
    size_t plen = srv->prefix_len;
    if (plen && strncmp(path, srv->opt.prefix, plen) == 0 && (path[plen] == '/' || !path[plen])) {
        path += plen;
        req->prefixed = true;
    }
    req->path = ts_arena_strdup(&req->arena, *path ? path : "/");
    ts_buf_init(&req->body, srv->opt.max_body);
    uint64_t id = atomic_fetch_add(&srv->next_id, 1);
    snprintf(req->request_id, sizeof(req->request_id), "%s-%llu", srv->id_prefix,
             (unsigned long long)id);
    atomic_fetch_add(&srv->in_flight, 1);
    return req;
}

static void req_free(struct ts_http_req *req)
{
    atomic_fetch_sub(&req->srv->in_flight, 1);
    ts_buf_free(&req->body);
    ts_arena_free(&req->arena);
    free(req);
}

static enum MHD_Result queue(struct ts_http_req *req)
{
    if (!req->status) {
        /* A handler returned without answering: a bug, but the client still gets JSON. */
        ts_log_error("route %s answered nothing", ts_http_route_name(req));
        static const char body[] = "{\"code\":500,\"error_code\":\"unexpected_failure\","
                                   "\"msg\":\"Unexpected failure\"}";
        ts_http_respond(req, 500, "application/json", body, sizeof(body) - 1);
    }
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        req->resp_len, (void *)(uintptr_t)req->resp_body, MHD_RESPMEM_MUST_COPY);
    if (!resp)
        return MHD_NO;
    if (req->content_type)
        MHD_add_response_header(resp, "Content-Type", req->content_type);
    MHD_add_response_header(resp, "X-Request-Id", req->request_id);
    for (struct resp_header *h = req->headers; h; h = h->next)
        MHD_add_response_header(resp, h->name, h->value);
    enum MHD_Result r = MHD_queue_response(req->conn, (unsigned)req->status, resp);
    MHD_destroy_response(resp);
    req->queued = true;
    return r;
}

/* After a handler or continuation: queue, park, or (for a bug) answer 500. */
static enum MHD_Result after_handler(struct ts_http_req *req)
{
    if (req->suspended) {
        MHD_suspend_connection(req->conn);
        ts_http_handler_fn *start = req->start;
        req->start = NULL;
        start(req); /* may resume at once */
        return MHD_YES;
    }
    return queue(req);
}

static void dispatch(struct ts_http_req *req)
{
    const struct ts_http_options *o = &req->srv->opt;
    if (o->before && o->before(req))
        return;
    ts_http_redispatch(req);
}

void ts_http_redispatch(struct ts_http_req *req)
{
    const struct ts_http_options *o = &req->srv->opt;
    route(req);
    if (req->route_index >= 0 && req->method_allowed)
        req->srv->routes[req->route_index].route->handler(req);
    else
        o->not_found(req);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    (void)version;
    struct ts_http_server *srv = cls;
    struct ts_http_req *req = *con_cls;
    if (!req) {
        watch_mark(conn, 0); /* the headers are in */
        req = req_new(srv, conn, url, method);
        *con_cls = req;
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
        int64_t n;
        if (cl && ts_parse_i64(cl, 0, INT64_MAX, &n) == TS_OK && (uint64_t)n > srv->opt.max_body) {
            req->too_big = true;
            if ((uint64_t)n > DRAIN_FACTOR * srv->opt.max_body) {
                /* Far too large to be worth reading: answer at once; the connection closes
                 * and a client still sending may see a reset instead of the answer. */
                req->dispatched = true;
                srv->opt.too_large(req);
                return queue(req);
            }
            /* Otherwise the body is read and dropped below, then answered 413: clients
             * such as fetch() write the whole body before reading, and closing under them
             * would lose the answer (RFC 9112 §9.6). */
        }
        return MHD_YES;
    }
    if (req->queued) {
        *upload_data_size = 0; /* draining a refused body */
        return MHD_YES;
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (!req->too_big && ts_buf_append(&req->body, upload_data, n) != TS_OK) {
            /* A body without Content-Length grew too large. */
            req->too_big = true;
            ts_buf_free(&req->body);
        }
        if (req->too_big) {
            /* Answering in the middle of the upload makes the kernel reset the connection
             * before the client reads the answer, so read and drop the rest (up to a bound)
             * and answer 413 at the end. */
            req->discarded += n;
            if (req->discarded > DRAIN_FACTOR * srv->opt.max_body)
                return MHD_NO; /* past the bound: close without an answer */
        }
        return MHD_YES;
    }
    if (req->suspended) {
        /* Resumed: the work is done; the continuation answers. */
        req->suspended = false;
        ts_http_handler_fn *cont = req->cont;
        req->cont = NULL;
        cont(req);
        return after_handler(req);
    }
    if (req->dispatched)
        return MHD_YES;
    req->dispatched = true;
    if (req->too_big) {
        srv->opt.too_large(req);
        return queue(req);
    }
    dispatch(req);
    return after_handler(req);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)toe;
    struct ts_http_server *srv = cls;
    struct ts_http_req *req = *con_cls;
    if (!req)
        return;
    *con_cls = NULL;
    watch_mark(conn, ts_mono_us()); /* the next request's headers are awaited from now */
    int64_t elapsed = ts_mono_us() - req->start_us;
    if (req->status) {
        ts__http_metrics_record(srv, req->route_index, req->status, elapsed);
        if (srv->opt.after)
            srv->opt.after(req);
    }
    req_free(req);
}

/* Percent-decodes the path and query arguments in place, except "%00": a NUL would cut the
 * string short ("/admin/users/%00" would read as "/admin/users"), so it stays as typed and
 * reaches the handlers as three ordinary characters. */
static size_t unescape(void *cls, struct MHD_Connection *conn, char *s)
{
    (void)cls;
    (void)conn;
    char *r = s, *w = s;
    while (*r) {
        int hi, lo;
        if (r[0] == '%' && (hi = ts_hex_digit(r[1])) >= 0 && (lo = ts_hex_digit(r[2])) >= 0 &&
            (hi | lo) != 0) {
            *w++ = (char)(hi * 16 + lo);
            r += 3;
        } else {
            *w++ = *r++;
        }
    }
    *w = '\0';
    return (size_t)(w - s);
}

TS_PRINTF(2, 0) static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    ts_log_debug("http: %s", msg);
}

/* ---- start and stop ---- */

/* Descriptors kept for everything but client connections: the listening socket, database
 * connections, the log, libraries' own. */
#define DESCRIPTOR_RESERVE 128

/* Each connection holds a descriptor: a connection limit above what the process may open
 * would turn the excess into accept() failures (EMFILE) rather than libmicrohttpd's orderly
 * limit. So the soft descriptor limit is raised to the hard one (commonly 1,024 and 524,288),
 * and the connection limit is bounded by it. */
static unsigned fit_connection_limit(unsigned wanted)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return wanted;
    if (rl.rlim_cur < rl.rlim_max) {
        struct rlimit raised = {.rlim_cur = rl.rlim_max, .rlim_max = rl.rlim_max};
        if (setrlimit(RLIMIT_NOFILE, &raised) == 0)
            rl.rlim_cur = rl.rlim_max;
    }
    if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= (rlim_t)wanted + DESCRIPTOR_RESERVE)
        return wanted;
    unsigned fit =
        rl.rlim_cur > DESCRIPTOR_RESERVE + 16 ? (unsigned)(rl.rlim_cur - DESCRIPTOR_RESERVE) : 16;
    ts_log_warn("HTTP_MAX_CONNECTIONS %u lowered to %u: this process may open %llu descriptors "
                "(ulimit -n)",
                wanted, fit, (unsigned long long)rl.rlim_cur);
    return fit;
}

static enum ts_rc parse_listen(const char *listen, struct sockaddr_storage *ss, socklen_t *sslen,
                               bool *ipv6, char **err)
{
    const char *colon = strrchr(listen, ':');
    if (!colon) {
        *err = ts_xasprintf("LISTEN %s: expected HOST:PORT", listen);
        return TS_E_INVALID;
    }
    char host[256];
    size_t hlen = (size_t)(colon - listen);
    if (hlen >= sizeof(host)) {
        *err = ts_xasprintf("LISTEN %s: host too long", listen);
        return TS_E_INVALID;
    }
    memcpy(host, listen, hlen);
    host[hlen] = '\0';
    if (hlen >= 2 && host[0] == '[' && host[hlen - 1] == ']') {
        memmove(host, host + 1, hlen - 2);
        host[hlen - 2] = '\0';
    }
    int64_t port;
    if (ts_parse_i64(colon + 1, 0, 65535, &port) != TS_OK) {
        *err = ts_xasprintf("LISTEN %s: bad port", listen);
        return TS_E_INVALID;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    int gai = getaddrinfo(host[0] ? host : NULL, colon + 1, &hints, &res);
    if (gai != 0 || !res) {
        *err = ts_xasprintf("LISTEN %s: %s", listen, gai_strerror(gai));
        return TS_E_INVALID;
    }
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *sslen = res->ai_addrlen;
    *ipv6 = res->ai_family == AF_INET6;
    freeaddrinfo(res);
    (void)port;
    return TS_OK;
}

enum ts_rc ts_http_start(const struct ts_http_options *opt, struct ts_http_server **out, char **err)
{
    struct sockaddr_storage ss;
    socklen_t sslen = 0;
    bool ipv6 = false;
    enum ts_rc rc = parse_listen(opt->listen, &ss, &sslen, &ipv6, err);
    if (rc)
        return rc;
    struct ts_http_server *srv = ts_xcalloc(1, sizeof(*srv));
    srv->opt = *opt;
    srv->prefix_len = opt->prefix ? strlen(opt->prefix) : 0;
    compile_routes(srv);
    srv->metrics = ts_xcalloc(srv->nroutes + 1, sizeof(*srv->metrics));
    uint8_t rnd[4];
    ts_rand_bytes(rnd, sizeof(rnd));
    ts_hex_encode(rnd, sizeof(rnd), srv->id_prefix);

    if (!reaper_start(srv)) {
        *err = ts_xasprintf("cannot start the header deadline's thread");
        reaper_free(srv);
        free(srv->metrics);
        free(srv->routes);
        free(srv);
        return TS_E_UNAVAILABLE;
    }

    unsigned max_connections = fit_connection_limit(opt->max_connections);
    unsigned flags = MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    flags |= opt->use_epoll ? MHD_USE_EPOLL_INTERNAL_THREAD : MHD_USE_POLL_INTERNAL_THREAD;
    if (ipv6)
        flags |= MHD_USE_IPv6;
    srv->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, srv, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned)(opt->threads > 0 ? opt->threads : 1),
        MHD_OPTION_CONNECTION_TIMEOUT, opt->connection_timeout, MHD_OPTION_CONNECTION_LIMIT,
        max_connections, MHD_OPTION_CONNECTION_MEMORY_LIMIT, opt->max_header_bytes,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv, MHD_OPTION_NOTIFY_CONNECTION, on_connection,
        srv, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, srv, MHD_OPTION_LISTENING_ADDRESS_REUSE, 1u,
        MHD_OPTION_UNESCAPE_CALLBACK, unescape, NULL, MHD_OPTION_END);
    if (!srv->daemon) {
        *err = ts_xasprintf("cannot listen on %s (address in use or not allowed?)", opt->listen);
        reaper_stop(srv);
        reaper_free(srv);
        free(srv->metrics);
        free(srv->routes);
        free(srv);
        return TS_E_UNAVAILABLE;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(srv->daemon, MHD_DAEMON_INFO_BIND_PORT);
    srv->port = info ? info->port : 0;
    *out = srv;
    return TS_OK;
}

uint16_t ts_http_port(const struct ts_http_server *srv)
{
    return srv->port;
}

void ts_http_stop(struct ts_http_server *srv, unsigned grace_ms)
{
    if (!srv)
        return;
    MHD_socket fd = MHD_quiesce_daemon(srv->daemon);
    int64_t deadline = ts_mono_us() + (int64_t)grace_ms * 1000;
    while (atomic_load(&srv->in_flight) > 0 && ts_mono_us() < deadline)
        usleep(10000);
    reaper_stop(srv);
    MHD_stop_daemon(srv->daemon); /* reports every connection closed: no watch is left */
    if (fd != MHD_INVALID_SOCKET)
        close(fd);
    reaper_free(srv);
    free(srv->metrics);
    free(srv->routes);
    free(srv);
}

/* ---- request accessors ---- */

struct ts_arena *ts_http_arena(struct ts_http_req *req)
{
    return &req->arena;
}

void *ts_http_app(struct ts_http_req *req)
{
    return req->srv->opt.app;
}

enum ts_http_method ts_http_method(const struct ts_http_req *req)
{
    return req->method;
}

const char *ts_http_method_name(const struct ts_http_req *req)
{
    return req->method_name;
}

const char *ts_http_path(const struct ts_http_req *req)
{
    return req->path;
}

const char *ts_http_route_name(const struct ts_http_req *req)
{
    if (req->route_index < 0 || !req->method_allowed)
        return "-";
    return req->srv->routes[req->route_index].route->pattern;
}

const char *ts_http_param(const struct ts_http_req *req, const char *name)
{
    for (int i = 0; i < req->nparams; i++)
        if (strcmp(req->param_names[i], name) == 0)
            return req->param_values[i];
    return NULL;
}

const char *ts_http_header(struct ts_http_req *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

struct headers_each {
    ts_http_header_fn *fn;
    void *cls;
};

static enum MHD_Result each_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                   const char *value)
{
    (void)kind;
    const struct headers_each *h = cls;
    if (key && value)
        h->fn(h->cls, key, value);
    return MHD_YES;
}

void ts_http_headers_each(struct ts_http_req *req, ts_http_header_fn *fn, void *cls)
{
    struct headers_each h = {fn, cls};
    MHD_get_connection_values(req->conn, MHD_HEADER_KIND, each_header, &h);
}

struct query_all {
    const char *name;
    const char **out;
    size_t max, n;
};

static enum MHD_Result collect_query(void *cls, enum MHD_ValueKind kind, const char *key,
                                     const char *value)
{
    (void)kind;
    struct query_all *q = cls;
    if (key && strcmp(key, q->name) == 0) {
        if (q->n < q->max)
            q->out[q->n] = value ? value : "";
        q->n++;
    }
    return MHD_YES;
}

bool ts_http_prefixed(const struct ts_http_req *req)
{
    return req->prefixed;
}

size_t ts_http_query_all(struct ts_http_req *req, const char *name, const char **out, size_t max)
{
    struct query_all q = {name, out, max, 0};
    MHD_get_connection_values(req->conn, MHD_GET_ARGUMENT_KIND, collect_query, &q);
    return q.n;
}

const char *ts_http_query(struct ts_http_req *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, name);
}

const char *ts_http_body(const struct ts_http_req *req, size_t *len)
{
    if (len)
        *len = req->body.len;
    return req->body.data ? req->body.data : "";
}

const char *ts_http_client_ip(struct ts_http_req *req)
{
    if (req->ip[0])
        return req->ip;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (ci && ci->client_addr) {
        const struct sockaddr *sa = ci->client_addr;
        if (sa->sa_family == AF_INET)
            inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, req->ip,
                      sizeof(req->ip));
        else if (sa->sa_family == AF_INET6)
            inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr,
                      req->ip, sizeof(req->ip));
    }
    if (!req->ip[0])
        snprintf(req->ip, sizeof(req->ip), "unknown");
    return req->ip;
}

const char *ts_http_request_id(const struct ts_http_req *req)
{
    return req->request_id;
}

bool ts_http_method_allowed(const struct ts_http_req *req)
{
    return req->method_allowed;
}

const char *ts_http_allowed_methods(struct ts_http_req *req)
{
    static const char *names[] = {"GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"};
    char buf[64] = "";
    size_t len = 0;
    for (size_t i = 0; i < TS_ARRAY_LEN(names); i++) {
        if (!(req->path_methods & (1u << i)))
            continue;
        int n = snprintf(buf + len, sizeof(buf) - len, "%s%s", len ? ", " : "", names[i]);
        if (n < 0 || (size_t)n >= sizeof(buf) - len)
            break;
        len += (size_t)n;
    }
    return ts_arena_strdup(&req->arena, buf);
}

void ts_http_set_app_data(struct ts_http_req *req, void *data)
{
    req->app_data = data;
}

void *ts_http_app_data(const struct ts_http_req *req)
{
    return req->app_data;
}

void ts_http_add_header(struct ts_http_req *req, const char *name, const char *value)
{
    struct resp_header *h = ts_arena_alloc(&req->arena, sizeof(*h));
    h->name = ts_arena_strdup(&req->arena, name);
    h->value = ts_arena_strdup(&req->arena, value);
    h->next = req->headers;
    req->headers = h;
}

void ts_http_respond(struct ts_http_req *req, int status, const char *content_type,
                     const char *body, size_t len)
{
    req->status = status;
    req->content_type = content_type ? ts_arena_strdup(&req->arena, content_type) : NULL;
    req->resp_body = len ? ts_arena_memdup(&req->arena, body, len) : "";
    req->resp_len = len;
}

int ts_http_status(const struct ts_http_req *req)
{
    return req->status;
}

int64_t ts_http_elapsed_us(const struct ts_http_req *req)
{
    return ts_mono_us() - req->start_us;
}

void ts_http_suspend(struct ts_http_req *req, ts_http_handler_fn *start, ts_http_handler_fn *cont)
{
    TS_ASSERT(!req->suspended);
    req->suspended = true;
    req->start = start;
    req->cont = cont;
}

void ts_http_resume(struct ts_http_req *req)
{
    MHD_resume_connection(req->conn);
}

struct ts_http_server *ts_http_server_of(struct ts_http_req *req)
{
    return req->srv;
}

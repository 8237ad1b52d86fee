/*
 * http_int.h - private to src/http: the server and request structures shared by
 * http_server.c and http_metrics.c.
 */
#ifndef TS_HTTP_INT_H
#define TS_HTTP_INT_H

#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>

#include "http.h"

#define TS_HTTP_MAX_SEGMENTS 8
#define TS_HTTP_MAX_PARAMS 4
#define TS_HTTP_STATUS_SLOTS 600
#define TS_HTTP_LATENCY_BUCKETS 14

struct compiled_route {
    const struct ts_http_route *route;
    int nsegs;
    const char *segs[TS_HTTP_MAX_SEGMENTS]; /* literal text, or a {name} parameter */
    size_t seglens[TS_HTTP_MAX_SEGMENTS];
    bool is_param[TS_HTTP_MAX_SEGMENTS];
};

struct route_metrics {
    _Atomic uint64_t by_status[TS_HTTP_STATUS_SLOTS];
    _Atomic uint64_t latency[TS_HTTP_LATENCY_BUCKETS + 1]; /* cumulative counts per bucket */
    _Atomic uint64_t latency_sum_us;
    _Atomic uint64_t count;
};

/* A connection watched for the header deadline (http_server.c); one per connection, its
 * libmicrohttpd socket context, linked in the server's list under watch_lock. */
struct conn_watch {
    struct conn_watch *prev, *next;
    MHD_socket fd;
    /* When the wait for a request's headers began (monotonic us): the accept, or the end of
     * the previous response; 0 while a request is being handled. */
    _Atomic int64_t waiting_since_us;
    bool cut; /* shut down by the reaper */
};

struct ts_http_server {
    struct MHD_Daemon *daemon;
    struct ts_http_options opt;
    struct compiled_route *routes;
    size_t nroutes;
    size_t prefix_len;
    struct route_metrics *metrics; /* nroutes + 1 entries; the last counts unmatched paths */
    _Atomic int64_t in_flight;     /* requests begun and not completed */
    _Atomic uint64_t next_id;
    char id_prefix[9]; /* random per process, so ids differ across restarts */
    uint16_t port;
    /* The header deadline's reaper: the watched connections and the thread that cuts those
     * past it (stopping, under watch_lock, ends it). */
    pthread_mutex_t watch_lock;
    pthread_cond_t watch_wake;
    struct conn_watch *watched;
    pthread_t reaper;
    bool reaper_started;
    bool stopping;
};

struct resp_header {
    struct resp_header *next;
    const char *name;
    const char *value;
};

struct ts_http_req {
    struct ts_http_server *srv;
    struct MHD_Connection *conn;
    struct ts_arena arena;
    enum ts_http_method method;
    const char *method_name;
    const char *path;
    bool prefixed;   /* the URL began with the prefix (opt.prefix), which was removed */
    int route_index; /* into srv->routes, or -1 */
    bool method_allowed;
    unsigned path_methods; /* methods of every route matching the path (for Allow) */
    int nparams;
    const char *param_names[TS_HTTP_MAX_PARAMS];
    const char *param_values[TS_HTTP_MAX_PARAMS];
    struct ts_buf body;
    bool too_big;
    size_t discarded; /* bytes of an oversized body read and dropped */
    bool dispatched;  /* the handler ran (or the 413 answer was chosen) */
    bool suspended;
    bool queued; /* a response went to MHD */
    ts_http_handler_fn *start;
    ts_http_handler_fn *cont;
    int status;
    const char *content_type;
    const char *resp_body;
    size_t resp_len;
    struct resp_header *headers;
    int64_t start_us; /* monotonic */
    char request_id[32];
    char ip[64];
    void *app_data;
};

/* Records one finished request in the route's counters. */
void ts__http_metrics_record(struct ts_http_server *srv, int route_index, int status,
                             int64_t elapsed_us);

#endif

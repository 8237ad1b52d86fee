/*
 * http_metrics.c - request counters and latency histograms per route, rendered in
 * the Prometheus text format. Lock-free: relaxed atomic increments on the hot path.
 */
#include <string.h>

#include "http_int.h"

/* Upper bounds of the latency buckets, microseconds. */
static const int64_t bucket_us[TS_HTTP_LATENCY_BUCKETS] = {
    100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 5000000};

void ts__http_metrics_record(struct ts_http_server *srv, int route_index, int status,
                             int64_t elapsed_us)
{
    size_t slot = route_index >= 0 ? (size_t)route_index : srv->nroutes;
    struct route_metrics *m = &srv->metrics[slot];
    if (status >= 0 && status < TS_HTTP_STATUS_SLOTS)
        atomic_fetch_add_explicit(&m->by_status[status], 1, memory_order_relaxed);
    size_t b = 0;
    while (b < TS_HTTP_LATENCY_BUCKETS && elapsed_us > bucket_us[b])
        b++;
    atomic_fetch_add_explicit(&m->latency[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->latency_sum_us, (uint64_t)elapsed_us, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->count, 1, memory_order_relaxed);
}

static const char *slot_name(struct ts_http_server *srv, size_t slot)
{
    return slot < srv->nroutes ? srv->routes[slot].route->pattern : "unmatched";
}

enum ts_rc ts_http_metrics_render(struct ts_http_server *srv, struct ts_buf *out)
{
    enum ts_rc rc = ts_buf_append_str(
        out, "# HELP tessera_http_requests_total HTTP requests answered, by route and status.\n"
             "# TYPE tessera_http_requests_total counter\n");
    for (size_t slot = 0; slot <= srv->nroutes && !rc; slot++) {
        struct route_metrics *m = &srv->metrics[slot];
        for (int st = 100; st < TS_HTTP_STATUS_SLOTS && !rc; st++) {
            uint64_t n = atomic_load_explicit(&m->by_status[st], memory_order_relaxed);
            if (n)
                rc = ts_buf_appendf(out,
                                    "tessera_http_requests_total{route=\"%s\",status=\"%d\"} "
                                    "%llu\n",
                                    slot_name(srv, slot), st, (unsigned long long)n);
        }
    }
    if (!rc)
        rc = ts_buf_append_str(
            out, "# HELP tessera_http_request_duration_seconds Time from first byte to "
                 "response, by route.\n"
                 "# TYPE tessera_http_request_duration_seconds histogram\n");
    for (size_t slot = 0; slot <= srv->nroutes && !rc; slot++) {
        struct route_metrics *m = &srv->metrics[slot];
        uint64_t count = atomic_load_explicit(&m->count, memory_order_relaxed);
        if (!count)
            continue;
        const char *name = slot_name(srv, slot);
        uint64_t cumulative = 0;
        for (size_t b = 0; b < TS_HTTP_LATENCY_BUCKETS && !rc; b++) {
            cumulative += atomic_load_explicit(&m->latency[b], memory_order_relaxed);
            rc = ts_buf_appendf(out,
                                "tessera_http_request_duration_seconds_bucket{route=\"%s\","
                                "le=\"%g\"} %llu\n",
                                name, (double)bucket_us[b] / 1e6, (unsigned long long)cumulative);
        }
        cumulative +=
            atomic_load_explicit(&m->latency[TS_HTTP_LATENCY_BUCKETS], memory_order_relaxed);
        if (!rc)
            rc = ts_buf_appendf(
                out,
                "tessera_http_request_duration_seconds_bucket{route=\"%s\",le=\"+Inf\"} %llu\n"
                "tessera_http_request_duration_seconds_sum{route=\"%s\"} %.6f\n"
                "tessera_http_request_duration_seconds_count{route=\"%s\"} %llu\n",
                name, (unsigned long long)cumulative, name,
                (double)atomic_load_explicit(&m->latency_sum_us, memory_order_relaxed) / 1e6, name,
                (unsigned long long)cumulative);
    }
    if (!rc)
        rc = ts_buf_appendf(out,
                            "# HELP tessera_http_in_flight Requests begun and not finished.\n"
                            "# TYPE tessera_http_in_flight gauge\ntessera_http_in_flight %lld\n",
                            (long long)atomic_load(&srv->in_flight));
    return rc;
}

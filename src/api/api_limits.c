/*
 * api_limits.c - the abuse controls as handlers use them (src/limit): per-address, per-account
 * and per-key buckets, password lockout, and the 429 answer in each API's shape.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "api_int.h"
#include "api_v1_int.h"

void api_too_many(struct ts_http_req *req, int64_t retry_after_s, const char *msg)
{
    struct ts_api *api = ts_http_app(req);
    atomic_fetch_add_explicit(&api->limited, 1, memory_order_relaxed);
    char secs[24];
    snprintf(secs, sizeof(secs), "%lld", (long long)(retry_after_s < 1 ? 1 : retry_after_s));
    ts_http_add_header(req, "Retry-After", secs);
    if (v1_path(req))
        v1_error(req, 429, "too_many_requests", msg);
    else
        api_error(req, ERR_OVER_REQUEST_RATE_LIMIT, msg);
}

/* Answers a refusal or a store failure; true when the request may go on. */
static bool verdict(struct ts_http_req *req, enum ts_rc rc, const struct ts_limit_verdict *v,
                    const char *msg)
{
    if (rc) {
        if (v1_path(req))
            v1_fail(req, rc, "rate limit");
        else
            api_fail(req, rc, "rate limit");
        return false;
    }
    if (v->allowed)
        return true;
    api_too_many(req, v->retry_after_s, msg);
    return false;
}

struct header_join {
    const char *name;
    struct ts_arena *arena;
    char *joined; /* every line of the header, in order, joined with ", " (RFC 9110 §5.3) */
};

static void join_header(void *cls, const char *name, const char *value)
{
    struct header_join *j = cls;
    if (strcasecmp(name, j->name) != 0)
        return;
    j->joined = j->joined ? ts_arena_sprintf(j->arena, "%s, %s", j->joined, value)
                          : ts_arena_strdup(j->arena, value);
}

bool api_limit_address(struct ts_http_req *req, enum ts_limit_class cls)
{
    struct ts_api *api = ts_http_app(req);
    if (!api->limiter)
        return true;
    /* All lines of the trusted header, not the first: a proxy that adds its own line after
     * the client's would otherwise let the client name its address. */
    struct header_join j = {.name = api->cfg->rate_limit_header, .arena = ts_http_arena(req)};
    if (j.name[0])
        ts_http_headers_each(req, join_header, &j);
    const char *header = j.joined;
    char subject[TS_LIMIT_ADDR_MAX];
    if (!ts_limit_client(api->limiter, ts_http_client_ip(req), header, subject))
        return true;
    struct ts_limit_verdict v;
    enum ts_rc rc = ts_limit_take(api->limiter, cls, subject, ts_now_us(), &v);
    return verdict(req, rc, &v, "Request rate limit reached");
}

bool api_limit_subject(struct ts_http_req *req, enum ts_limit_class cls, const char *subject)
{
    struct ts_api *api = ts_http_app(req);
    if (!api->limiter || !subject)
        return true;
    struct ts_limit_verdict v;
    enum ts_rc rc = ts_limit_take(api->limiter, cls, subject, ts_now_us(), &v);
    return verdict(req, rc, &v, "Request rate limit reached");
}

bool api_lockout_reserve(struct ts_http_req *req, const char *account, struct ts_lockout *t)
{
    struct ts_api *api = ts_http_app(req);
    memset(t, 0, sizeof(*t));
    if (!api->limiter || !account)
        return true;
    struct ts_limit_verdict v;
    enum ts_rc rc = ts_lockout_reserve(api->limiter, account, ts_now_us(), t, &v);
    if (!rc && !v.allowed)
        ts_store_audit(api->store, "login_locked", NULL, NULL, ts_http_client_ip(req), NULL);
    return verdict(req, rc, &v, "Too many failed attempts for this account; retry later");
}

void api_lockout_settle(struct ts_http_req *req, struct ts_lockout *t, enum ts_rc check_rc,
                        bool matched)
{
    struct ts_api *api = ts_http_app(req);
    if (!api->limiter)
        return;
    enum ts_lockout_outcome o = check_rc  ? TS_LOCKOUT_NOT_CHECKED
                                : matched ? TS_LOCKOUT_SUCCEEDED
                                          : TS_LOCKOUT_FAILED;
    ts_lockout_settle(api->limiter, t, o, ts_now_us());
}

bool api_account_checks(struct ts_http_req *req, const char *account, struct ts_lockout *t)
{
    /* A full hash queue would refuse the check anyway: answer before writing any counter, so
     * that a flood costs the store nothing (the queue can fill in between: the hash pool then
     * answers the same 429, and the reservation is given back). */
    struct ts_api *api = ts_http_app(req);
    struct ts_hashpool_stats hs;
    ts_hashpool_stats(api->pool, &hs);
    if (hs.queued >= api->cfg->password_hash_queue) {
        memset(t, 0, sizeof(*t));
        api_too_many(req, 1, "Too many password checks in progress, retry");
        return false;
    }
    return api_limit_subject(req, TS_LIMIT_ACCOUNT, account) &&
           api_lockout_reserve(req, account, t);
}

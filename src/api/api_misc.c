/*
 * api_misc.c - the cheap endpoints: /health, /ready, /settings, JWKS, /metrics.
 */
#include <stdlib.h>
#include <string.h>

#include "api_v1_int.h"

void api_health(struct ts_http_req *req)
{
    /* auth tooling reads name "GoTrue" (gotrue-api.md §3). */
    api_json(req, 200,
             json_pack("{s:s, s:s, s:s}", "version", TS_VERSION, "name", "GoTrue", "description",
                       "Tessera is a GoTrue-compatible authentication and authorization server"));
}

void api_ready(struct ts_http_req *req)
{
    struct ts_api *api = ts_http_app(req);
    int current = 0, latest = 0;
    enum ts_rc rc = ts_store_ping(api->store);
    if (!rc)
        rc = ts_store_schema_version(api->store, &current, &latest);
    bool ready = !rc && current == latest;
    api_json(req, ready ? 200 : 503,
             json_pack("{s:s, s:s, s:{s:i, s:i}}", "status", ready ? "ready" : "not_ready",
                       "database", rc ? "unreachable" : "ok", "migrations", "current", current,
                       "latest", latest));
}

void api_settings(struct ts_http_req *req)
{
    struct ts_api *api = ts_http_app(req);
    const struct ts_config *c = api->cfg;
    json_t *external = json_pack(
        "{s:b, s:b, s:b, s:b, s:b, s:b, s:b, s:b, s:b, s:b, s:b, s:b, s:b, s:b, s:b, s:b}",
        "anonymous_users", c->external_anonymous_users_enabled, "email", c->external_email_enabled,
        "phone", 0, "apple", 0, "azure", 0, "bitbucket", 0, "discord", 0, "facebook", 0, "figma", 0,
        "github", 0, "gitlab", 0, "google", 0, "keycloak", 0, "linkedin_oidc", 0, "slack_oidc", 0,
        "twitter", 0);
    api_json(req, 200,
             json_pack("{s:o, s:b, s:b, s:b, s:s, s:b}", "external", external, "disable_signup",
                       c->disable_signup, "mailer_autoconfirm", c->mailer_autoconfirm,
                       "phone_autoconfirm", 0, "sms_provider", "", "saml_enabled", 0));
}

void api_jwks(struct ts_http_req *req)
{
    struct ts_api *api = ts_http_app(req);
    char *jwks = ts_keyring_jwks(api->keyring);
    ts_http_add_header(req, "Cache-Control", "public, max-age=600");
    ts_http_respond(req, 200, "application/json", jwks, strlen(jwks));
    free(jwks);
}

void api_metrics(struct ts_http_req *req)
{
    struct ts_api *api = ts_http_app(req);
    struct ts_buf b;
    ts_buf_init(&b, 16 << 20);
    enum ts_rc rc = ts_http_metrics_render(ts_http_server_of(req), &b);
    struct ts_hashpool_stats hs;
    ts_hashpool_stats(api->pool, &hs);
    struct ts_tokencache_stats tc;
    ts_keyring_cache_stats(api->keyring, &tc);
    if (!rc)
        rc = ts_buf_appendf(
            &b,
            "# HELP tessera_hashpool_queue_depth Password hash jobs waiting for a worker.\n"
            "# TYPE tessera_hashpool_queue_depth gauge\ntessera_hashpool_queue_depth %lld\n"
            "# HELP tessera_hashpool_running Password hash jobs being computed.\n"
            "# TYPE tessera_hashpool_running gauge\ntessera_hashpool_running %lld\n"
            "# HELP tessera_hashpool_jobs_total Password hash jobs finished.\n"
            "# TYPE tessera_hashpool_jobs_total counter\ntessera_hashpool_jobs_total %lld\n"
            "# HELP tessera_hashpool_rejected_total Hash jobs refused because the queue was "
            "full (answered 429).\n"
            "# TYPE tessera_hashpool_rejected_total counter\n"
            "tessera_hashpool_rejected_total %lld\n"
            "# HELP tessera_hashpool_wait_seconds_total Time finished jobs spent queued.\n"
            "# TYPE tessera_hashpool_wait_seconds_total counter\n"
            "tessera_hashpool_wait_seconds_total %.6f\n"
            "# HELP tessera_hashpool_run_seconds_total Time finished jobs spent hashing.\n"
            "# TYPE tessera_hashpool_run_seconds_total counter\n"
            "tessera_hashpool_run_seconds_total %.6f\n"
            "# HELP tessera_token_cache_hits_total Access tokens found already verified.\n"
            "# TYPE tessera_token_cache_hits_total counter\ntessera_token_cache_hits_total %lld\n"
            "# HELP tessera_token_cache_misses_total Access tokens that needed a signature "
            "check.\n"
            "# TYPE tessera_token_cache_misses_total counter\n"
            "tessera_token_cache_misses_total %lld\n"
            "# HELP tessera_token_cache_entries Verified access tokens cached.\n"
            "# TYPE tessera_token_cache_entries gauge\ntessera_token_cache_entries %lld\n",
            (long long)hs.queued, (long long)hs.running, (long long)hs.completed,
            (long long)hs.rejected, (double)hs.wait_us_total / 1e6, (double)hs.run_us_total / 1e6,
            (long long)tc.hits, (long long)tc.misses, (long long)tc.entries);
    int64_t sh = 0, sm = 0;
    v1_secret_cache_stats(api->secret_cache, &sh, &sm);
    if (!rc)
        rc = ts_buf_appendf(&b,
                            "# HELP tessera_secret_cache_hits_total /v1 tst_/tsk_ secrets found "
                            "already checked.\n"
                            "# TYPE tessera_secret_cache_hits_total counter\n"
                            "tessera_secret_cache_hits_total %lld\n"
                            "# HELP tessera_secret_cache_misses_total /v1 secrets checked in the "
                            "store.\n"
                            "# TYPE tessera_secret_cache_misses_total counter\n"
                            "tessera_secret_cache_misses_total %lld\n",
                            (long long)sh, (long long)sm);
    if (!rc)
        rc = ts_buf_appendf(&b,
                            "# HELP tessera_rate_limited_total Requests answered 429 by a rate "
                            "limit, a profile budget or an account lockout.\n"
                            "# TYPE tessera_rate_limited_total counter\n"
                            "tessera_rate_limited_total %lld\n",
                            (long long)atomic_load_explicit(&api->limited, memory_order_relaxed));
    struct ts_jwks_stats js;
    ts_jwks_stats(api->jwks, NULL, &js);
    if (!rc)
        rc = ts_buf_appendf(&b,
                            "# HELP tessera_jwks_fetches_total JWKS requests sent to outside "
                            "issuers.\n"
                            "# TYPE tessera_jwks_fetches_total counter\n"
                            "tessera_jwks_fetches_total %lld\n"
                            "# HELP tessera_jwks_not_modified_total JWKS refreshes answered 304.\n"
                            "# TYPE tessera_jwks_not_modified_total counter\n"
                            "tessera_jwks_not_modified_total %lld\n"
                            "# HELP tessera_jwks_failures_total JWKS fetches that failed.\n"
                            "# TYPE tessera_jwks_failures_total counter\n"
                            "tessera_jwks_failures_total %lld\n"
                            "# HELP tessera_jwks_urls Key sets cached.\n"
                            "# TYPE tessera_jwks_urls gauge\ntessera_jwks_urls %lld\n",
                            (long long)js.fetches, (long long)js.not_modified,
                            (long long)js.failures, (long long)js.urls);
    if (rc) {
        ts_buf_free(&b);
        api_fail(req, rc, "metrics");
        return;
    }
    ts_http_respond(req, 200, "text/plain; version=0.0.4", b.data, b.len);
    ts_buf_free(&b);
}

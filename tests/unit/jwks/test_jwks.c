/*
 * test_jwks.c - unit tests of the jwks module against a real HTTP server on loopback
 * (libmicrohttpd, one thread per connection) that serves JWKS documents the tests change at
 * run time. The server counts requests and conditional requests, sends ETag (answering 304 to
 * a matching If-None-Match) and Cache-Control, can be slow, fail, redirect or be stopped.
 *
 * Not timing-fragile: every lookup passes an explicit time. Within one step of a test the
 * time is frozen (so "within min_refetch_us" always holds), and a step that needs time to
 * pass jumps the clock ahead of both the last time used and the real monotonic clock (so
 * "after min_refetch_us" and "refresh due" always hold). Waiting is by notify or by polling
 * with a 10 s deadline. Whether a lookup queued a background refresh is checked without
 * sleeping: a fetch of a fresh URL is queued behind it and waited for (one FIFO, one thread).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <microhttpd.h>

#include "jwks/jwks.h"

#define SEC INT64_C(1000000)
#define MS INT64_C(1000)
#define DEADLINE_US (10 * SEC)

/* ---- the JWKS server ---- */

struct doc {
    char path[64];
    char *body;
    char etag[64];          /* "" = none */
    char cache_control[64]; /* "" = none */
    int status;             /* 200, or what to answer instead */
    int delay_ms;
    int requests, conditional, not_modified;
};

static struct {
    struct MHD_Daemon *d;
    uint16_t port;
    pthread_mutex_t lock;
    struct doc docs[16];
    int ndocs;
    int unknown_requests;
} srv = {.lock = PTHREAD_MUTEX_INITIALIZER};

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_len, void **con_cls)
{
    (void)cls, (void)method, (void)version, (void)upload, (void)upload_len, (void)con_cls;
    const char *inm = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "If-None-Match");
    char *body = NULL, etag[64] = "", cc[64] = "";
    int status = 404, delay = 0;

    pthread_mutex_lock(&srv.lock);
    struct doc *d = NULL;
    for (int i = 0; i < srv.ndocs; i++) {
        if (strcmp(srv.docs[i].path, url) == 0)
            d = &srv.docs[i];
    }
    if (d) {
        d->requests++;
        if (inm)
            d->conditional++;
        status = d->status;
        delay = d->delay_ms;
        snprintf(etag, sizeof(etag), "%s", d->etag);
        snprintf(cc, sizeof(cc), "%s", d->cache_control);
        if (status == 200 && inm && etag[0] && strcmp(inm, etag) == 0) {
            status = 304;
            d->not_modified++;
        } else {
            body = strdup(d->body ? d->body : "");
        }
    } else {
        srv.unknown_requests++;
    }
    pthread_mutex_unlock(&srv.lock);

    if (delay)
        usleep((useconds_t)delay * 1000);
    static char empty[1];
    struct MHD_Response *r = MHD_create_response_from_buffer(
        body ? strlen(body) : 0, body ? body : empty, MHD_RESPMEM_MUST_COPY);
    free(body);
    if (etag[0])
        MHD_add_response_header(r, "ETag", etag);
    if (cc[0])
        MHD_add_response_header(r, "Cache-Control", cc);
    if (status == 302)
        MHD_add_response_header(r, "Location", "/a");
    MHD_add_response_header(r, "Content-Type", "application/json");
    enum MHD_Result ret = MHD_queue_response(conn, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

/* Starts the server on 127.0.0.1, on port (0: any free one). */
static void srv_start(uint16_t port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    srv.d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION, 0,
                             NULL, NULL, on_request, NULL, MHD_OPTION_SOCK_ADDR, &sa,
                             MHD_OPTION_LISTENING_ADDRESS_REUSE, 1u, MHD_OPTION_END);
    assert_non_null(srv.d);
    srv.port = MHD_get_daemon_info(srv.d, MHD_DAEMON_INFO_BIND_PORT)->port;
}

static void srv_stop(void)
{
    if (srv.d)
        MHD_stop_daemon(srv.d);
    srv.d = NULL;
}

static void srv_reset(void)
{
    for (int i = 0; i < srv.ndocs; i++)
        free(srv.docs[i].body);
    memset(srv.docs, 0, sizeof(srv.docs));
    srv.ndocs = 0;
    srv.unknown_requests = 0;
}

/* Serves body (a JSON value, consumed; NULL: keep the current one) at path. */
static void serve(const char *path, json_t *body, const char *etag, const char *cache_control)
{
    pthread_mutex_lock(&srv.lock);
    struct doc *d = NULL;
    for (int i = 0; i < srv.ndocs; i++) {
        if (strcmp(srv.docs[i].path, path) == 0)
            d = &srv.docs[i];
    }
    if (!d) {
        assert_true(srv.ndocs < (int)TS_ARRAY_LEN(srv.docs));
        d = &srv.docs[srv.ndocs++];
        snprintf(d->path, sizeof(d->path), "%s", path);
        d->status = 200;
    }
    if (body) {
        free(d->body);
        d->body = json_dumps(body, JSON_COMPACT);
        json_decref(body);
    }
    snprintf(d->etag, sizeof(d->etag), "%s", etag ? etag : "");
    snprintf(d->cache_control, sizeof(d->cache_control), "%s", cache_control ? cache_control : "");
    pthread_mutex_unlock(&srv.lock);
}

/* Serves body as given (any bytes), answering with status after delay_ms. */
static void serve_raw(const char *path, const char *body, int status, int delay_ms)
{
    serve(path, json_null(), NULL, NULL);
    pthread_mutex_lock(&srv.lock);
    for (int i = 0; i < srv.ndocs; i++) {
        if (strcmp(srv.docs[i].path, path) == 0) {
            free(srv.docs[i].body);
            srv.docs[i].body = strdup(body);
            srv.docs[i].status = status;
            srv.docs[i].delay_ms = delay_ms;
        }
    }
    pthread_mutex_unlock(&srv.lock);
}

static void set_delay(const char *path, int delay_ms)
{
    pthread_mutex_lock(&srv.lock);
    for (int i = 0; i < srv.ndocs; i++) {
        if (strcmp(srv.docs[i].path, path) == 0)
            srv.docs[i].delay_ms = delay_ms;
    }
    pthread_mutex_unlock(&srv.lock);
}

static struct doc counts(const char *path)
{
    struct doc out = {0};
    pthread_mutex_lock(&srv.lock);
    for (int i = 0; i < srv.ndocs; i++) {
        if (strcmp(srv.docs[i].path, path) == 0)
            out = srv.docs[i];
    }
    out.body = NULL;
    pthread_mutex_unlock(&srv.lock);
    return out;
}

static const char *url(const char *path)
{
    static char bufs[8][128];
    static int next;
    char *b = bufs[next++ % 8];
    snprintf(b, sizeof(bufs[0]), "http://127.0.0.1:%u%s", srv.port, path);
    return b;
}

/* ---- keys ---- */

static struct ts_jose_key *k_rs1, *k_rs2, *k_ps, *k_es, *k_es384, *k_ed, *k_es512;

static int keys_setup(void **state)
{
    (void)state;
    /* Fetch failures are expected here; JWKS_TEST_LOG=1 shows them and every fetch. */
    ts_log_set_level(getenv("JWKS_TEST_LOG") ? TS_LOG_DEBUG : TS_LOG_ERROR);
    if (ts_jose_key_generate(TS_JOSE_ALG_RS256, "rs1", &k_rs1) ||
        ts_jose_key_generate(TS_JOSE_ALG_RS256, "rs2", &k_rs2) ||
        ts_jose_key_generate(TS_JOSE_ALG_PS256, "ps1", &k_ps) ||
        ts_jose_key_generate(TS_JOSE_ALG_ES256, "es1", &k_es) ||
        ts_jose_key_generate(TS_JOSE_ALG_ES384, "es384", &k_es384) ||
        ts_jose_key_generate(TS_JOSE_ALG_EDDSA, "ed1", &k_ed) ||
        ts_jose_key_generate(TS_JOSE_ALG_ES512, "es512", &k_es512))
        return -1;
    return 0;
}

static int keys_teardown(void **state)
{
    (void)state;
    struct ts_jose_key *all[] = {k_rs1, k_rs2, k_ps, k_es, k_es384, k_ed, k_es512};
    for (size_t i = 0; i < TS_ARRAY_LEN(all); i++)
        ts_jose_key_free(all[i]);
    return 0;
}

/* The public JWK of key, without its "alg" member when strip_alg, with kid replaced when
 * kid is not NULL. */
static json_t *jwk(const struct ts_jose_key *key, bool strip_alg, const char *kid)
{
    json_t *j = ts_jose_key_public_jwk(key);
    assert_non_null(j);
    if (strip_alg)
        json_object_del(j, "alg");
    if (kid)
        json_object_set_new(j, "kid", json_string(kid));
    return j;
}

/* {"keys":[...]} of the JWKs given (consumed), NULL-terminated. */
static json_t *set_of(json_t *first, ...)
{
    json_t *keys = json_array();
    va_list ap;
    va_start(ap, first);
    for (json_t *j = first; j; j = va_arg(ap, json_t *))
        json_array_append_new(keys, j);
    va_end(ap);
    return json_pack("{s:o}", "keys", keys);
}

struct one_key {
    const struct ts_jose_key *key;
};

static const struct ts_jose_key *give_key(void *cls, enum ts_jose_alg alg, const char *kid)
{
    (void)alg, (void)kid;
    return ((struct one_key *)cls)->key;
}

/* A token signed by signer verifies with the key the cache gave. */
static void assert_verifies(const struct ts_jose_key *signer, const struct ts_jwks_key *k)
{
    char *tok = NULL;
    json_t *claims = NULL;
    struct one_key one = {ts_jwks_key_jose(k)};
    assert_int_equal(ts_jws_sign(signer, "{\"sub\":\"u1\"}", 12, &tok), TS_OK);
    assert_int_equal(ts_jws_verify(tok, strlen(tok), give_key, &one, &claims, NULL), TS_OK);
    assert_string_equal(json_string_value(json_object_get(claims, "sub")), "u1");
    json_decref(claims);
    free(tok);
}

/* ---- time, notification, fixture ---- */

static int64_t T; /* the time the test passes to lookups */

/* Makes T at least the real monotonic time, plus d. */
static int64_t jump(int64_t d)
{
    int64_t now = ts_mono_us();
    T = (T > now ? T : now) + d;
    return T;
}

struct flag {
    pthread_mutex_t m;
    pthread_cond_t cv;
    int count;
};

#define FLAG_INIT                                                                                  \
    {                                                                                              \
        PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0                                     \
    }

static void on_notify(void *cls)
{
    struct flag *f = cls;
    pthread_mutex_lock(&f->m);
    f->count++;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->m);
}

static void wait_flag(struct flag *f, int n)
{
    int64_t until = ts_mono_us() + DEADLINE_US;
    pthread_mutex_lock(&f->m);
    while (f->count < n && ts_mono_us() < until) {
        pthread_mutex_unlock(&f->m);
        usleep(2000);
        pthread_mutex_lock(&f->m);
    }
    int got = f->count;
    pthread_mutex_unlock(&f->m);
    assert_int_equal(got, n);
}

static struct ts_jwks_cache *C;

static struct ts_jwks_options test_options(void)
{
    struct ts_jwks_options o = ts_jwks_options_default();
    o.stale_max_us = 2 * 3600 * SEC; /* above refresh_us, so a due set is not yet stale */
    o.max_body = 64 * 1024;
    return o;
}

static int fx_setup_with(const struct ts_jwks_options *o)
{
    srv_reset();
    srv_start(0);
    T = ts_mono_us();
    return ts_jwks_cache_new(o, &C) == TS_OK ? 0 : -1;
}

static int fx_setup(void **state)
{
    (void)state;
    struct ts_jwks_options o = test_options();
    return fx_setup_with(&o);
}

static int fx_teardown(void **state)
{
    (void)state;
    ts_jwks_cache_free(C);
    C = NULL;
    srv_stop();
    srv_reset();
    return 0;
}

/* Looks up at time T; on PENDING waits for the notify and looks up again, which must then
 * answer FOUND or NO_KEY. Returns the final answer; *out is set on FOUND (release it). */
static enum ts_jwks_result lookup_wait(const char *path, enum ts_jose_alg alg, const char *kid,
                                       bool *was_pending, struct ts_jwks_key **out)
{
    struct flag f = FLAG_INIT;
    enum ts_jwks_result r = ts_jwks_lookup(C, url(path), alg, kid, T, on_notify, &f, out);
    if (was_pending)
        *was_pending = r == TS_JWKS_PENDING;
    if (r != TS_JWKS_PENDING)
        return r;
    wait_flag(&f, 1);
    r = ts_jwks_lookup(C, url(path), alg, kid, T, on_notify, &f, out);
    assert_int_not_equal(r, TS_JWKS_PENDING);
    return r;
}

/* lookup_wait that must find a key, which must verify signer's tokens; released here. */
static void expect_found(const char *path, enum ts_jose_alg alg, const char *kid,
                         const struct ts_jose_key *signer)
{
    struct ts_jwks_key *k = NULL;
    assert_int_equal(lookup_wait(path, alg, kid, NULL, &k), TS_JWKS_FOUND);
    assert_non_null(k);
    if (signer)
        assert_verifies(signer, k);
    ts_jwks_key_release(k);
}

static void expect_no_key(const char *path, enum ts_jose_alg alg, const char *kid)
{
    struct ts_jwks_key *k = NULL;
    assert_int_equal(lookup_wait(path, alg, kid, NULL, &k), TS_JWKS_NO_KEY);
    assert_null(k);
}

static struct ts_jwks_stats stats(const char *path)
{
    struct ts_jwks_stats s;
    ts_jwks_stats(C, path ? url(path) : NULL, &s);
    return s;
}

/* Waits until every fetch queued before now has ended: a new URL's first fetch goes behind
 * them in the one queue, and its notify comes after they are done. */
static void drain_queue(void)
{
    static int n;
    char path[64];
    struct flag f = FLAG_INIT;
    struct ts_jwks_key *k = NULL;
    snprintf(path, sizeof(path), "/drain/%d", n++);
    assert_int_equal(ts_jwks_lookup(C, url(path), TS_JOSE_ALG_ES256, "x", T, on_notify, &f, &k),
                     TS_JWKS_PENDING);
    wait_flag(&f, 1);
}

#define POLL_UNTIL(cond)                                                                           \
    do {                                                                                           \
        int64_t until_ = ts_mono_us() + DEADLINE_US;                                               \
        while (!(cond) && ts_mono_us() < until_)                                                   \
            usleep(2000);                                                                          \
        assert_true(cond);                                                                         \
    } while (0)

/* ---- tests ---- */

static void test_pending_then_found(void **state)
{
    (void)state;
    struct flag f = FLAG_INIT;
    struct ts_jwks_key *k = NULL;
    serve("/a", set_of(jwk(k_rs1, false, NULL), jwk(k_es, false, NULL), NULL), NULL, NULL);

    assert_int_equal(ts_jwks_lookup(C, url("/a"), TS_JOSE_ALG_RS256, "rs1", T, on_notify, &f, &k),
                     TS_JWKS_PENDING);
    assert_null(k);
    wait_flag(&f, 1);
    assert_int_equal(ts_jwks_lookup(C, url("/a"), TS_JOSE_ALG_RS256, "rs1", T, NULL, NULL, &k),
                     TS_JWKS_FOUND);
    assert_verifies(k_rs1, k);
    ts_jwks_key_release(k);
    /* The other key of the set, from the cache: no second fetch. */
    expect_found("/a", TS_JOSE_ALG_ES256, "es1", k_es);
    assert_int_equal(counts("/a").requests, 1);
    struct ts_jwks_stats s = stats("/a");
    assert_int_equal(s.fetches, 1);
    assert_int_equal(s.failures, 0);
    assert_int_equal(s.urls, 1);
    assert_int_equal(f.count, 1);
}

struct racer {
    pthread_barrier_t *start;
    const char *uri;
    const char *kid;
    int64_t now;
    struct flag f;
    enum ts_jwks_result first, last;
};

static void *race(void *arg)
{
    struct racer *r = arg;
    struct ts_jwks_key *k = NULL;
    pthread_barrier_wait(r->start);
    r->first = ts_jwks_lookup(C, r->uri, TS_JOSE_ALG_RS256, r->kid, r->now, on_notify, &r->f, &k);
    r->last = r->first;
    if (r->first == TS_JWKS_PENDING) {
        wait_flag(&r->f, 1);
        r->last = ts_jwks_lookup(C, r->uri, TS_JOSE_ALG_RS256, r->kid, r->now, NULL, NULL, &k);
    }
    if (r->last == TS_JWKS_FOUND)
        ts_jwks_key_release(k);
    return NULL;
}

/* Runs n concurrent lookups of kid; returns how many were PENDING at first. Each must end
 * with want, and each PENDING one must have been notified exactly once. */
static int race_lookups(int n, const char *kid, enum ts_jwks_result want)
{
    pthread_barrier_t start;
    pthread_t *th = calloc((size_t)n, sizeof(*th));
    struct racer *rs = calloc((size_t)n, sizeof(*rs));
    int pending = 0;
    pthread_barrier_init(&start, NULL, (unsigned)n);
    for (int i = 0; i < n; i++) {
        rs[i] = (struct racer){.start = &start, .uri = url("/a"), .kid = kid, .now = T};
        rs[i].f = (struct flag)FLAG_INIT;
        assert_int_equal(pthread_create(&th[i], NULL, race, &rs[i]), 0);
    }
    for (int i = 0; i < n; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < n; i++) {
        assert_int_equal(rs[i].last, want);
        assert_int_equal(rs[i].f.count, rs[i].first == TS_JWKS_PENDING ? 1 : 0);
        pending += rs[i].first == TS_JWKS_PENDING;
    }
    pthread_barrier_destroy(&start);
    free(rs);
    free(th);
    return pending;
}

static void test_concurrent_lookups_share_one_fetch(void **state)
{
    (void)state;
    serve("/a", set_of(jwk(k_rs1, false, NULL), NULL), "\"v1\"", NULL);
    set_delay("/a", 300); /* the 100 lookups arrive while the fetch runs */

    int pending = race_lookups(100, "rs1", TS_JWKS_FOUND);
    assert_true(pending >= 1);
    assert_int_equal(counts("/a").requests, 1);
    assert_int_equal(stats("/a").fetches, 1);

    /* 100 concurrent lookups of a kid the set lacks: one unconditional refetch for all. */
    jump(SEC);
    pending = race_lookups(100, "nope", TS_JWKS_NO_KEY);
    assert_true(pending >= 1);
    assert_int_equal(counts("/a").requests, 2);
    assert_int_equal(counts("/a").conditional, 0);
    assert_int_equal(stats("/a").fetches, 2);
}

static void test_unknown_kid_refetch(void **state)
{
    (void)state;
    bool pending = false;
    serve("/a", set_of(jwk(k_rs1, false, NULL), NULL), "\"v1\"", "max-age=3600");
    expect_found("/a", TS_JOSE_ALG_RS256, "rs1", k_rs1);
    assert_int_equal(counts("/a").requests, 1);

    /* An unknown kid forces one unconditional refetch (the ETag is not sent). */
    jump(SEC);
    assert_int_equal(lookup_wait("/a", TS_JOSE_ALG_RS256, "rs2", &pending, NULL), TS_JWKS_NO_KEY);
    assert_true(pending);
    assert_int_equal(counts("/a").requests, 2);
    assert_int_equal(counts("/a").conditional, 0);

    /* Within min_refetch_us: fail fast, no fetch, even once the key is published. */
    serve("/a", set_of(jwk(k_rs1, false, NULL), jwk(k_rs2, false, NULL), NULL), "\"v2\"",
          "max-age=3600");
    struct ts_jwks_key *k = NULL;
    for (int i = 0; i < 20; i++) {
        assert_int_equal(ts_jwks_lookup(C, url("/a"), TS_JOSE_ALG_RS256, "rs2", T, NULL, NULL, &k),
                         TS_JWKS_NO_KEY);
    }
    T += 499 * MS;
    assert_int_equal(ts_jwks_lookup(C, url("/a"), TS_JOSE_ALG_RS256, "rs2", T, NULL, NULL, &k),
                     TS_JWKS_NO_KEY);
    assert_int_equal(counts("/a").requests, 2);

    /* After the window: the rotated-in key is found by a second refetch. */
    jump(600 * MS);
    assert_int_equal(lookup_wait("/a", TS_JOSE_ALG_RS256, "rs2", &pending, &k), TS_JWKS_FOUND);
    assert_true(pending);
    assert_verifies(k_rs2, k);
    ts_jwks_key_release(k);
    assert_int_equal(counts("/a").requests, 3);
    expect_found("/a", TS_JOSE_ALG_RS256, "rs1", k_rs1);
    assert_int_equal(stats("/a").fetches, 3);
}

static void test_kid_null(void **state)
{
    (void)state;
    serve("/one", set_of(jwk(k_es, false, NULL), NULL), NULL, NULL);
    serve("/two", set_of(jwk(k_es, false, NULL), jwk(k_es, false, "es1b"), NULL), NULL, NULL);
    serve("/one-skipped", set_of(jwk(k_es, false, NULL), json_pack("{s:s}", "kty", "oct"), NULL),
          NULL, NULL);

    expect_found("/one", TS_JOSE_ALG_ES256, NULL, k_es);
    /* The only key must still fit the algorithm. */
    expect_no_key("/one", TS_JOSE_ALG_RS256, NULL);
    /* Two keys and no kid: ambiguous. */
    expect_no_key("/two", TS_JOSE_ALG_ES256, NULL);
    expect_found("/two", TS_JOSE_ALG_ES256, "es1b", k_es);
    /* A skipped JWK does not count: the set has one usable key. */
    expect_found("/one-skipped", TS_JOSE_ALG_ES256, NULL, k_es);
}

static void test_alg_and_type(void **state)
{
    (void)state;
    serve("/a",
          set_of(jwk(k_rs1, false, NULL), jwk(k_es, false, NULL), jwk(k_es384, false, NULL),
                 jwk(k_ed, false, NULL), jwk(k_rs2, true, "rs2-any"), jwk(k_ps, true, "ps-any"),
                 jwk(k_es, true, "es-any"), jwk(k_es512, false, NULL), NULL),
          NULL, NULL);
    expect_found("/a", TS_JOSE_ALG_RS256, "rs1", k_rs1);
    expect_found("/a", TS_JOSE_ALG_ES384, "es384", k_es384);
    expect_found("/a", TS_JOSE_ALG_EDDSA, "ed1", k_ed);

    /* Key type against algorithm. */
    expect_no_key("/a", TS_JOSE_ALG_ES256, "rs1");
    expect_no_key("/a", TS_JOSE_ALG_RS256, "es1");
    expect_no_key("/a", TS_JOSE_ALG_ES384, "es1");
    expect_no_key("/a", TS_JOSE_ALG_ES256, "es384");
    expect_no_key("/a", TS_JOSE_ALG_EDDSA, "es1");
    expect_no_key("/a", TS_JOSE_ALG_RS256, "ed1");
    /* The JWK's own "alg" wins: an RS256 key is not a PS256 key. */
    expect_no_key("/a", TS_JOSE_ALG_PS256, "rs1");
    expect_no_key("/a", TS_JOSE_ALG_RS384, "rs1");

    /* Without "alg", every algorithm the type fits, each its own bound key. */
    expect_found("/a", TS_JOSE_ALG_RS256, "rs2-any", k_rs2);
    expect_found("/a", TS_JOSE_ALG_RS512, "rs2-any", NULL);
    expect_found("/a", TS_JOSE_ALG_PS384, "rs2-any", NULL);
    expect_found("/a", TS_JOSE_ALG_PS256, "ps-any", k_ps);
    expect_found("/a", TS_JOSE_ALG_ES256, "es-any", k_es);
    expect_no_key("/a", TS_JOSE_ALG_ES384, "es-any");
    struct ts_jwks_key *k = NULL;
    assert_int_equal(lookup_wait("/a", TS_JOSE_ALG_PS256, "rs2-any", NULL, &k), TS_JWKS_FOUND);
    assert_int_equal(ts_jose_key_alg(ts_jwks_key_jose(k)), TS_JOSE_ALG_PS256);
    ts_jwks_key_release(k);

    /* Never usable: HMAC, none, ES512 (not on issue 5's list) - and no fetch for them. */
    struct ts_jwks_stats before = stats(NULL);
    const enum ts_jose_alg never[] = {TS_JOSE_ALG_HS256, TS_JOSE_ALG_HS384, TS_JOSE_ALG_HS512,
                                      TS_JOSE_ALG_UNKNOWN, TS_JOSE_ALG_ES512};
    for (size_t i = 0; i < TS_ARRAY_LEN(never); i++) {
        assert_int_equal(ts_jwks_lookup(C, url("/a"), never[i], "rs1", T, NULL, NULL, &k),
                         TS_JWKS_NO_KEY);
        assert_int_equal(ts_jwks_lookup(C, url("/new"), never[i], NULL, T, NULL, NULL, &k),
                         TS_JWKS_NO_KEY);
    }
    assert_int_equal(stats(NULL).fetches, before.fetches);
    assert_int_equal(stats(NULL).urls, before.urls);
    assert_int_equal(counts("/a").requests, 1);
}

static void test_skipped_jwks(void **state)
{
    (void)state;
    json_t *enc = jwk(k_es, false, "enc");
    json_object_set_new(enc, "use", json_string("enc"));
    json_t *priv = jwk(k_es, false, "priv");
    json_object_set_new(priv, "d", json_string("AAAA"));
    json_t *no_n = jwk(k_rs1, false, "no-n");
    json_object_del(no_n, "n");
    json_t *bad_kid = jwk(k_es, false, NULL);
    json_object_set_new(bad_kid, "kid", json_integer(7));
    json_t *alg_hs = jwk(k_es, false, "alg-hs");
    json_object_set_new(alg_hs, "alg", json_string("HS256"));
    json_t *alg_wrong = jwk(k_es, false, "alg-wrong");
    json_object_set_new(alg_wrong, "alg", json_string("RS256"));
    serve("/a",
          set_of(jwk(k_es, false, NULL), enc, priv, no_n, bad_kid, alg_hs, alg_wrong,
                 json_pack("{s:s,s:s,s:s}", "kty", "oct", "k", "c2VjcmV0c2VjcmV0c2VjcmV0", "kid",
                           "oct"),
                 json_pack("{s:s}", "kty", "XYZ"), json_integer(42), jwk(k_es512, false, NULL),
                 NULL),
          NULL, NULL);
    expect_found("/a", TS_JOSE_ALG_ES256, "es1", k_es);
    expect_no_key("/a", TS_JOSE_ALG_ES256, "enc");
    expect_no_key("/a", TS_JOSE_ALG_ES256, "priv");
    expect_no_key("/a", TS_JOSE_ALG_RS256, "no-n");
    expect_no_key("/a", TS_JOSE_ALG_HS256, "oct");
    expect_no_key("/a", TS_JOSE_ALG_ES256, "alg-hs");
    expect_no_key("/a", TS_JOSE_ALG_ES256, "alg-wrong");
    expect_no_key("/a", TS_JOSE_ALG_RS256, "alg-wrong");
    assert_int_equal(stats("/a").keys_skipped, 10);
    assert_int_equal(stats(NULL).keys_skipped, 10);
    assert_int_equal(stats("/a").fetches, 1);
}

static void test_etag_not_modified(void **state)
{
    (void)state;
    serve("/a", set_of(jwk(k_rs1, false, NULL), NULL), "\"v1\"", "public, max-age=120");
    expect_found("/a", TS_JOSE_ALG_RS256, "rs1", k_rs1);

    /* Due: the answer still comes from the set, and a conditional refresh runs behind it. */
    jump(121 * SEC);
    expect_found("/a", TS_JOSE_ALG_RS256, "rs1", k_rs1);
    POLL_UNTIL(stats("/a").not_modified == 1);
    assert_int_equal(stats("/a").fetches, 2);
    assert_int_equal(counts("/a").conditional, 1);
    assert_int_equal(counts("/a").not_modified, 1);

    /* The 304 extended the set: not due again right away. */
    expect_found("/a", TS_JOSE_ALG_RS256, "rs1", k_rs1);
    drain_queue();
    assert_int_equal(stats("/a").fetches, 2);

    /* A changed document answers the next conditional refresh with 200 and a new set. */
    serve("/a", set_of(jwk(k_rs2, false, NULL), NULL), "\"v2\"", "max-age=120");
    jump(121 * SEC);
    expect_found("/a", TS_JOSE_ALG_RS256, "rs1", k_rs1);
    POLL_UNTIL(stats("/a").fetches == 3 && counts("/a").requests == 3);
    drain_queue();
    expect_found("/a", TS_JOSE_ALG_RS256, "rs2", k_rs2);
    assert_int_equal(counts("/a").conditional, 2);
    assert_int_equal(stats("/a").not_modified, 1);
    assert_int_equal(stats("/a").failures, 0);
}

/* After the first fetch of path (at time t0), a lookup at t0 + ttl - 5 s queues nothing and
 * one at the real time + ttl + 5 s queues a refresh. */
static void check_ttl(const char *path, const char *cache_control, int64_t ttl)
{
    serve(path, set_of(jwk(k_es, false, NULL), NULL), "\"e\"", cache_control);
    int64_t t0 = jump(0);
    expect_found(path, TS_JOSE_ALG_ES256, "es1", NULL);
    T = t0 + ttl - 5 * SEC;
    expect_found(path, TS_JOSE_ALG_ES256, "es1", NULL);
    drain_queue();
    assert_int_equal(stats(path).fetches, 1);
    jump(ttl + 5 * SEC);
    expect_found(path, TS_JOSE_ALG_ES256, "es1", NULL);
    POLL_UNTIL(stats(path).fetches == 2 && stats(path).not_modified == 1);
}

static void test_max_age_bounds(void **state)
{
    (void)state;
    struct ts_jwks_options o = test_options();
    o.stale_max_us = 72 * 3600 * SEC;
    ts_jwks_cache_free(C);
    assert_int_equal(ts_jwks_cache_new(&o, &C), TS_OK);

    check_ttl("/low", "max-age=5", 60 * SEC);                     /* raised to 1 min */
    check_ttl("/mid", "max-age=600, must-revalidate", 600 * SEC); /* as given */
    check_ttl("/high", "max-age=9999999", 24 * 3600 * SEC);       /* lowered to 24 h */
    check_ttl("/none", NULL, 3600 * SEC);                         /* refresh_us */
    check_ttl("/nocache", "no-cache", 60 * SEC);                  /* the lower bound */
}

static void test_outage_serves_last_good_set(void **state)
{
    (void)state;
    bool pending = false;
    serve("/a", set_of(jwk(k_rs1, false, NULL), NULL), "\"v1\"", NULL);
    expect_found("/a", TS_JOSE_ALG_RS256, "rs1", k_rs1);
    uint16_t port = srv.port;
    srv_stop();

    /* Due for refresh while the provider is down: still FOUND; the failure is counted. */
    jump(3600 * SEC + 5 * SEC);
    expect_found("/a", TS_JOSE_ALG_RS256, "rs1", k_rs1);
    POLL_UNTIL(stats("/a").failures == 1);
    expect_found("/a", TS_JOSE_ALG_RS256, "rs1", k_rs1);
    /* A failed refresh is retried no sooner than max_age_min_us. */
    drain_queue();
    assert_int_equal(stats("/a").fetches, 2);

    /* An unknown kid still tries once, fails, and the known key keeps working. */
    jump(SEC);
    assert_int_equal(lookup_wait("/a", TS_JOSE_ALG_RS256, "rs2", &pending, NULL), TS_JWKS_NO_KEY);
    assert_true(pending);
    assert_int_equal(stats("/a").failures, 2);
    expect_found("/a", TS_JOSE_ALG_RS256, "rs1", k_rs1);

    /* Past stale_max_us since the last success: the set is no longer served. */
    jump(2 * 3600 * SEC);
    assert_int_equal(lookup_wait("/a", TS_JOSE_ALG_RS256, "rs1", &pending, NULL), TS_JWKS_NO_KEY);
    assert_true(pending);
    assert_int_equal(stats("/a").failures, 3);
    assert_int_equal(lookup_wait("/a", TS_JOSE_ALG_RS256, "rs1", &pending, NULL), TS_JWKS_NO_KEY);
    assert_false(pending);

    /* The provider is back: the next allowed fetch restores the set. */
    srv_start(port);
    jump(SEC);
    expect_found("/a", TS_JOSE_ALG_RS256, "rs1", k_rs1);
    assert_int_equal(stats("/a").failures, 3);
}

static void test_fetch_failures(void **state)
{
    (void)state;
    char big[70 * 1024];
    memset(big, ' ', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    memcpy(big, "{\"keys\":[]}", 11);
    serve_raw("/500", "{\"keys\":[]}", 500, 0);
    serve_raw("/badjson", "{\"keys\":[", 200, 0);
    serve_raw("/dup", "{\"keys\":[],\"keys\":[]}", 200, 0);
    serve_raw("/nokeys", "{\"keys\":5}", 200, 0);
    serve_raw("/array", "[]", 200, 0);
    serve_raw("/big", big, 200, 0);
    serve_raw("/redirect", "", 302, 0);
    serve_raw("/a", "{\"keys\":[]}", 200, 0);
    const char *paths[] = {"/500",   "/badjson", "/dup",      "/nokeys",
                           "/array", "/big",     "/redirect", "/unknown"};
    for (size_t i = 0; i < TS_ARRAY_LEN(paths); i++) {
        bool pending = false;
        assert_int_equal(lookup_wait(paths[i], TS_JOSE_ALG_ES256, "es1", &pending, NULL),
                         TS_JWKS_NO_KEY);
        assert_true(pending);
        assert_int_equal(stats(paths[i]).failures, 1);
        assert_int_equal(stats(paths[i]).fetches, 1);
    }
    /* The redirect was not followed. */
    assert_int_equal(counts("/a").requests, 0);
    assert_int_equal(counts("/redirect").requests, 1);
    assert_int_equal(stats(NULL).failures, (int64_t)TS_ARRAY_LEN(paths));

    /* A body exactly at the cap is fine. */
    char at_cap[64 * 1024 + 1];
    memset(at_cap, ' ', sizeof(at_cap) - 1);
    at_cap[sizeof(at_cap) - 1] = '\0';
    memcpy(at_cap, "{\"keys\":[]}", 11);
    serve_raw("/at-cap", at_cap, 200, 0);
    assert_int_equal(lookup_wait("/at-cap", TS_JOSE_ALG_ES256, "es1", NULL, NULL), TS_JWKS_NO_KEY);
    assert_int_equal(stats("/at-cap").failures, 0);
    assert_int_equal(stats("/at-cap").fetches, 1);
}

static void test_slow_provider_times_out(void **state)
{
    (void)state;
    struct ts_jwks_options o = test_options();
    o.timeout_ms = 200;
    ts_jwks_cache_free(C);
    assert_int_equal(ts_jwks_cache_new(&o, &C), TS_OK);
    /* A valid document, but after the timeout: only a timeout makes this fetch fail. */
    serve_raw("/slow", "{\"keys\":[]}", 200, 700);
    bool pending = false;
    assert_int_equal(lookup_wait("/slow", TS_JOSE_ALG_ES256, "es1", &pending, NULL),
                     TS_JWKS_NO_KEY);
    assert_true(pending);
    assert_int_equal(stats("/slow").failures, 1);
}

static void test_uri_policy(void **state)
{
    (void)state;
    struct ts_jwks_options o = ts_jwks_options_default();
    struct ts_jwks_key *k = NULL;

    assert_null(ts_jwks_uri_refusal(&o, "https://idp.example.com/.well-known/jwks.json"));
    assert_null(ts_jwks_uri_refusal(&o, "http://127.0.0.1:8080/jwks"));
    assert_null(ts_jwks_uri_refusal(&o, "http://[::1]:8080/jwks"));
    assert_null(ts_jwks_uri_refusal(&o, "http://LOCALHOST/jwks"));
    const char *bad[] = {"http://idp.example.com/jwks",
                         "http://127.0.0.2/jwks",
                         "http://10.0.0.1/jwks",
                         "ftp://127.0.0.1/jwks",
                         "file:///etc/passwd",
                         "gopher://127.0.0.1/",
                         "https://user:pw@idp.example.com/jwks",
                         "/relative/jwks",
                         "",
                         "https://"};
    for (size_t i = 0; i < TS_ARRAY_LEN(bad); i++) {
        assert_non_null(ts_jwks_uri_refusal(&o, bad[i]));
        assert_int_equal(ts_jwks_lookup(C, bad[i], TS_JOSE_ALG_RS256, "k", T, NULL, NULL, &k),
                         TS_JWKS_NO_KEY);
        assert_int_equal(ts_jwks_lookup(C, bad[i], TS_JOSE_ALG_RS256, "k", T + SEC, NULL, NULL, &k),
                         TS_JWKS_NO_KEY);
    }
    char longuri[2100];
    memset(longuri, 'a', sizeof(longuri) - 1);
    longuri[sizeof(longuri) - 1] = '\0';
    memcpy(longuri, "https://x/", 10);
    assert_non_null(ts_jwks_uri_refusal(&o, longuri));
    assert_int_equal(stats(NULL).fetches, 0);
    o.allow_http = false;
    assert_non_null(ts_jwks_uri_refusal(&o, "http://127.0.0.1:8080/jwks"));
    assert_null(ts_jwks_uri_refusal(&o, "https://127.0.0.1:8080/jwks"));

    /* With allow_http off, even the loopback server is refused. */
    ts_jwks_cache_free(C);
    assert_int_equal(ts_jwks_cache_new(&o, &C), TS_OK);
    serve("/a", set_of(jwk(k_es, false, NULL), NULL), NULL, NULL);
    assert_int_equal(ts_jwks_lookup(C, url("/a"), TS_JOSE_ALG_ES256, "es1", T, NULL, NULL, &k),
                     TS_JWKS_NO_KEY);
    assert_int_equal(counts("/a").requests, 0);

    struct ts_jwks_options inval = ts_jwks_options_default();
    struct ts_jwks_cache *c2 = NULL;
    inval.max_age_min_us = inval.max_age_max_us + 1;
    assert_int_equal(ts_jwks_cache_new(&inval, &c2), TS_E_INVALID);
    inval = ts_jwks_options_default();
    inval.min_refetch_us = 0;
    assert_int_equal(ts_jwks_cache_new(&inval, &c2), TS_E_INVALID);
    assert_null(c2);
}

static void test_key_outlives_its_set(void **state)
{
    (void)state;
    struct ts_jwks_key *old = NULL, *again = NULL;
    serve("/a", set_of(jwk(k_rs1, false, NULL), NULL), NULL, NULL);
    assert_int_equal(lookup_wait("/a", TS_JOSE_ALG_RS256, "rs1", NULL, &old), TS_JWKS_FOUND);
    assert_int_equal(lookup_wait("/a", TS_JOSE_ALG_RS256, "rs1", NULL, &again), TS_JWKS_FOUND);
    assert_ptr_equal(old, again); /* parsed once per (kid, alg) */
    ts_jwks_key_release(again);

    /* Rotation: rs1 is withdrawn and the set replaced. */
    serve("/a", set_of(jwk(k_rs2, false, NULL), NULL), NULL, NULL);
    jump(SEC);
    expect_found("/a", TS_JOSE_ALG_RS256, "rs2", k_rs2);
    jump(SEC);
    expect_no_key("/a", TS_JOSE_ALG_RS256, "rs1");
    assert_int_equal(stats("/a").fetches, 3);
    /* The reference still verifies, even after the cache itself is gone. */
    assert_verifies(k_rs1, old);
    ts_jwks_cache_free(C);
    C = NULL;
    assert_verifies(k_rs1, old);
    ts_jwks_key_release(old);
}

static void found_eventually(const char *path)
{
    for (int i = 0; i < 20; i++) {
        struct flag f = FLAG_INIT;
        struct ts_jwks_key *k = NULL;
        T = ts_mono_us();
        enum ts_jwks_result r =
            ts_jwks_lookup(C, url(path), TS_JOSE_ALG_ES256, "es1", T, on_notify, &f, &k);
        if (r == TS_JWKS_FOUND) {
            ts_jwks_key_release(k);
            return;
        }
        assert_int_equal(r, TS_JWKS_PENDING);
        wait_flag(&f, 1);
    }
    fail_msg("never found");
}

static void test_idle_eviction(void **state)
{
    (void)state;
    struct ts_jwks_options o = test_options();
    o.idle_evict_us = 300 * MS;
    ts_jwks_cache_free(C);
    assert_int_equal(ts_jwks_cache_new(&o, &C), TS_OK);
    serve("/a", set_of(jwk(k_es, false, NULL), NULL), NULL, NULL);

    /* Lookups use the real time here, as the fetcher's eviction does; on a slow machine the
     * entry might be evicted between a notify and the next lookup, so retry until found. */
    found_eventually("/a");
    assert_int_equal(counts("/a").requests, 1);
    POLL_UNTIL(stats(NULL).urls == 0);
    assert_int_equal(stats("/a").fetches, 0); /* forgotten */
    assert_int_equal(stats(NULL).fetches, 1); /* the totals are not */

    /* Used again: fetched again. */
    found_eventually("/a");
    assert_int_equal(counts("/a").requests, 2);
}

static void test_free_notifies_pending(void **state)
{
    (void)state;
    struct flag f = FLAG_INIT, g = FLAG_INIT;
    struct ts_jwks_key *k = NULL;
    serve_raw("/slow", "{\"keys\":[]}", 200, 300);
    serve_raw("/b", "{\"keys\":[]}", 200, 0);
    assert_int_equal(ts_jwks_lookup(C, url("/slow"), TS_JOSE_ALG_ES256, "x", T, on_notify, &f, &k),
                     TS_JWKS_PENDING);
    assert_int_equal(ts_jwks_lookup(C, url("/b"), TS_JOSE_ALG_ES256, "x", T, on_notify, &g, &k),
                     TS_JWKS_PENDING);
    ts_jwks_cache_free(C);
    C = NULL;
    assert_int_equal(f.count, 1);
    assert_int_equal(g.count, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_pending_then_found, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_lookups_share_one_fetch, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_unknown_kid_refetch, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_kid_null, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_alg_and_type, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_skipped_jwks, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_etag_not_modified, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_max_age_bounds, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_outage_serves_last_good_set, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_fetch_failures, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_slow_provider_times_out, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_uri_policy, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_key_outlives_its_set, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_idle_eviction, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_free_notifies_pending, fx_setup, fx_teardown),
    };
    return cmocka_run_group_tests(tests, keys_setup, keys_teardown);
}

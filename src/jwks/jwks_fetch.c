/*
 * jwks_fetch.c - one HTTP GET of a JWKS with libcurl, on the fetcher thread; and the check of
 * which URLs may be fetched at all. The only file that knows libcurl.
 *
 * Choices, each against a way a fetch could hurt the server:
 * - Redirects are not followed: a jwks_uri is configured by an administrator (or read from the
 *   provider's discovery document) and providers serve it directly; following a 3xx would let
 *   whoever controls the answer send the fetch elsewhere. A 3xx is a failure, logged with its
 *   target, so the operator can fix the URL.
 * - Only http and https (CURLOPT_PROTOCOLS_STR): no file://, gopher:// or the rest, whatever
 *   the URL says; plain http only to loopback (ts_jwks_uri_refusal).
 * - The whole fetch has timeout_ms, and the body (after content decoding, so a compressed
 *   bomb stops too) is capped at max_body.
 * - The ETag goes back in If-None-Match only if it is a printable single-line value, so a
 *   provider cannot inject a header.
 */
#include <curl/curl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "jwks_int.h"

#define JWKS_MAX_URI 2048
#define JWKS_MAX_ETAG 256
/* max-age values are clamped by the cache; this only keeps the arithmetic in range. */
#define JWKS_MAX_AGE_CAP_S 100000000

struct ts__jwks_fetcher {
    CURL *h; /* reused: keeps connections to providers alive */
    struct ts_jwks_options opts;
    const _Atomic bool *stop;
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc = CURLE_FAILED_INIT;

/* curl_global_init is not thread-safe in every build: run it once, and never clean up (other
 * threads of the process may still use libcurl or OpenSSL). */
static void curl_init(void)
{
    curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static bool is_loopback(const char *host)
{
    return strcasecmp(host, "localhost") == 0 || strcmp(host, "127.0.0.1") == 0 ||
           strcmp(host, "[::1]") == 0;
}

const char *ts_jwks_uri_refusal(const struct ts_jwks_options *opts, const char *uri)
{
    const char *why = NULL;
    char *scheme = NULL, *host = NULL, *user = NULL;
    CURLU *u;

    if (!uri || !*uri)
        return "empty URL";
    if (strlen(uri) > JWKS_MAX_URI)
        return "URL longer than 2048 bytes";
    u = curl_url();
    if (!u)
        return "out of memory";
    /* The same parser that will fetch it, so what is checked is what is fetched. */
    if (curl_url_set(u, CURLUPART_URL, uri, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK || !*host) {
        why = "not an absolute URL with a host";
        goto out;
    }
    if (curl_url_get(u, CURLUPART_USER, &user, 0) == CURLUE_OK) {
        why = "URL with user information";
        goto out;
    }
    if (strcmp(scheme, "https") == 0)
        goto out;
    if (strcmp(scheme, "http") != 0)
        why = "scheme other than https";
    else if (!opts->allow_http)
        why = "http:// refused (https required)";
    else if (!is_loopback(host))
        why = "http:// is allowed only to 127.0.0.1, [::1] and localhost (https required)";
out:
    curl_free(scheme);
    curl_free(host);
    curl_free(user);
    curl_url_cleanup(u);
    return why;
}

struct ts__jwks_fetcher *ts__jwks_fetcher_new(const struct ts_jwks_options *opts,
                                              const _Atomic bool *stop)
{
    pthread_once(&curl_once, curl_init);
    if (curl_init_rc != CURLE_OK)
        return NULL;
    CURL *h = curl_easy_init();
    if (!h)
        return NULL;
    struct ts__jwks_fetcher *f = ts_xcalloc(1, sizeof(*f));
    f->h = h;
    f->opts = *opts;
    f->stop = stop;
    return f;
}

void ts__jwks_fetcher_free(struct ts__jwks_fetcher *f)
{
    if (!f)
        return;
    curl_easy_cleanup(f->h);
    free(f);
}

struct xfer {
    struct ts_buf body;
    bool too_big;
    const _Atomic bool *stop;
};

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    struct xfer *x = ud;
    size_t total = size * n; /* size is always 1 (CURLOPT_WRITEFUNCTION) */
    if (ts_buf_append(&x->body, p, total) != TS_OK) {
        x->too_big = true;
        return 0; /* aborts the transfer with CURLE_WRITE_ERROR */
    }
    return total;
}

static int on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    struct xfer *x = ud;
    (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
    return atomic_load(x->stop) ? 1 : 0;
}

/* A copy of the response's ETag when it is safe to send back, else NULL. */
static char *response_etag(CURL *h)
{
    struct curl_header *hdr = NULL;
    if (curl_easy_header(h, "ETag", 0, CURLH_HEADER, -1, &hdr) != CURLHE_OK)
        return NULL;
    size_t len = strlen(hdr->value);
    if (len == 0 || len > JWKS_MAX_ETAG)
        return NULL;
    for (size_t i = 0; i < len; i++) {
        if (hdr->value[i] < 0x20 || hdr->value[i] > 0x7e)
            return NULL;
    }
    return ts_xstrdup(hdr->value);
}

/* Cache-Control (RFC 9111 §5.2.2): the smallest max-age in seconds; 0 for no-cache or
 * no-store (refetch at the lower bound); -1 when there is neither. */
static int64_t response_max_age(CURL *h)
{
    int64_t best = -1;
    size_t amount = 1;
    for (size_t i = 0; i < amount; i++) {
        struct curl_header *hdr = NULL;
        if (curl_easy_header(h, "Cache-Control", i, CURLH_HEADER, -1, &hdr) != CURLHE_OK)
            break;
        amount = hdr->amount;
        const char *p = hdr->value;
        while (*p) {
            while (*p == ' ' || *p == '\t' || *p == ',')
                p++;
            size_t tok = strcspn(p, "=,");
            int64_t v = -1;
            if (tok == 7 && strncasecmp(p, "max-age", 7) == 0 && p[7] == '=') {
                const char *d = p + 8;
                if (*d == '"')
                    d++;
                if (*d >= '0' && *d <= '9') {
                    v = 0;
                    for (; *d >= '0' && *d <= '9'; d++)
                        v = v < JWKS_MAX_AGE_CAP_S ? v * 10 + (*d - '0') : v;
                }
            } else if ((tok == 8 && strncasecmp(p, "no-cache", 8) == 0) ||
                       (tok == 8 && strncasecmp(p, "no-store", 8) == 0)) {
                v = 0;
            }
            if (v >= 0 && (best < 0 || v < best))
                best = v;
            p += strcspn(p, ",");
        }
    }
    return best;
}

static void fail(struct ts__jwks_fetch *job, const char *fmt, ...) TS_PRINTF(2, 3);

static void fail(struct ts__jwks_fetch *job, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(job->why, sizeof(job->why), fmt, ap);
    va_end(ap);
    job->outcome = TS__JWKS_FAILED;
}

void ts__jwks_fetch(struct ts__jwks_fetcher *f, struct ts__jwks_fetch *job)
{
    CURL *h = f->h;
    struct xfer x = {.stop = f->stop};
    struct curl_slist *headers = NULL;
    char errbuf[CURL_ERROR_SIZE] = "";
    char *inm = NULL;
    long status = 0;
    CURLcode rc;

    job->outcome = TS__JWKS_FAILED;
    job->set = NULL;
    job->new_etag = NULL;
    job->max_age_s = -1;
    job->skipped = 0;
    job->why[0] = '\0';
    ts_buf_init(&x.body, f->opts.max_body);

    headers = curl_slist_append(headers, "Accept: application/jwk-set+json, application/json");
    if (job->etag) {
        inm = ts_xasprintf("If-None-Match: %s", job->etag);
        headers = curl_slist_append(headers, inm);
    }
    if (!headers)
        ts_assert_fail("curl_slist_append: out of memory", __FILE__, __LINE__);

    curl_easy_reset(h); /* keeps the connection cache */
    curl_easy_setopt(h, CURLOPT_URL, job->uri);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, f->opts.timeout_ms);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, f->opts.timeout_ms);
    curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)f->opts.max_body);
    curl_easy_setopt(h, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "tessera/" TS_VERSION);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &x);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, &x);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);

    rc = curl_easy_perform(h);
    if (rc == CURLE_OK)
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);

    if (rc == CURLE_WRITE_ERROR && x.too_big) {
        fail(job, "body larger than %zu bytes", f->opts.max_body);
    } else if (rc == CURLE_FILESIZE_EXCEEDED) {
        fail(job, "Content-Length larger than %zu bytes", f->opts.max_body);
    } else if (rc == CURLE_ABORTED_BY_CALLBACK) {
        fail(job, "stopped: the cache is shutting down");
    } else if (rc != CURLE_OK) {
        fail(job, "%s%s%s", curl_easy_strerror(rc), errbuf[0] ? ": " : "", errbuf);
    } else if (status == 304 && job->etag) {
        job->outcome = TS__JWKS_NOT_MODIFIED;
    } else if (status >= 300 && status < 400) {
        char *loc = NULL;
        curl_easy_getinfo(h, CURLINFO_REDIRECT_URL, &loc);
        fail(job, "HTTP %ld redirect to %.120s not followed", status, loc ? loc : "(none)");
    } else if (status != 200) {
        fail(job, "HTTP status %ld", status);
    } else {
        job->set = ts__jwks_set_parse(x.body.data ? x.body.data : "", x.body.len, &job->skipped,
                                      job->why, sizeof(job->why));
        if (job->set)
            job->outcome = TS__JWKS_GOT_SET;
    }
    if (job->outcome != TS__JWKS_FAILED) {
        job->new_etag = response_etag(h);
        job->max_age_s = response_max_age(h);
    }

    /* The handle must not keep pointers into this frame. */
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, NULL);
    curl_slist_free_all(headers);
    free(inm);
    ts_buf_free(&x.body);
}

/* ---- OpenID discovery (start-up only) ---- */

enum ts_rc ts_jwks_discover(const struct ts_jwks_options *opts, const char *issuer, char **jwks_uri,
                            char **err)
{
    *jwks_uri = NULL;
    *err = NULL;
    size_t il = strlen(issuer);
    char *url = ts_xasprintf("%.*s/.well-known/openid-configuration",
                             (int)(il && issuer[il - 1] == '/' ? il - 1 : il), issuer);
    const char *why = ts_jwks_uri_refusal(opts, url);
    if (why) {
        *err = ts_xasprintf("%s: %s", url, why);
        free(url);
        return TS_E_INVALID;
    }
    pthread_once(&curl_once, curl_init);
    CURL *h = curl_init_rc == CURLE_OK ? curl_easy_init() : NULL;
    if (!h) {
        free(url);
        *err = ts_xstrdup("libcurl could not start");
        return TS_E_INTERNAL;
    }
    static const _Atomic bool never = false;
    struct xfer x = {.stop = &never};
    ts_buf_init(&x.body, opts->max_body);
    char errbuf[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, opts->timeout_ms);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, opts->timeout_ms);
    curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)opts->max_body);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "tessera/" TS_VERSION);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &x);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    long status = 0;
    CURLcode rc = curl_easy_perform(h);
    if (rc == CURLE_OK)
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(h);
    enum ts_rc out = TS_E_UNAVAILABLE;
    if (rc != CURLE_OK) {
        *err =
            ts_xasprintf("%s: %s%s%s", url, curl_easy_strerror(rc), errbuf[0] ? ": " : "", errbuf);
    } else if (status != 200) {
        *err = ts_xasprintf("%s: HTTP status %ld", url, status);
    } else {
        json_error_t jerr;
        json_t *doc =
            json_loadb(x.body.data ? x.body.data : "", x.body.len, JSON_REJECT_DUPLICATES, &jerr);
        const char *got_iss = json_string_value(json_object_get(doc, "issuer"));
        const char *uri = json_string_value(json_object_get(doc, "jwks_uri"));
        /* OpenID Connect Discovery §4.3: the document's issuer must be the one asked for */
        if (!got_iss || strcmp(got_iss, issuer) != 0) {
            *err = ts_xasprintf("%s: its issuer is not %s", url, issuer);
            out = TS_E_INVALID;
        } else if (!uri || ts_jwks_uri_refusal(opts, uri)) {
            *err = ts_xasprintf("%s: no usable jwks_uri", url);
            out = TS_E_INVALID;
        } else {
            *jwks_uri = ts_xstrdup(uri);
            out = TS_OK;
        }
        json_decref(doc);
    }
    ts_buf_free(&x.body);
    free(url);
    return out;
}

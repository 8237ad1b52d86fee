/*
 * jwks_cache.c - the per-URL cache, its fetcher thread and the non-blocking lookup.
 *
 * One mutex guards every entry; it is held for list walks and string comparisons only,
 * never during HTTP, JSON parsing or key import (all of which the fetcher thread does with
 * the lock released). Entries are few (one per identity provider), so a list does.
 *
 * Each entry has at most one fetch running and at most one queued. Lookups that need fresh
 * data attach a waiter to the queued fetch if there is one, else to the running one, so any
 * number of concurrent lookups cost one fetch. An entry is freed only by the fetcher thread
 * (eviction, shutdown), and never while it is queued, running or has waiters; so the fetcher
 * may read e->uri without the lock while it fetches.
 *
 * Time: lookups pass now_us (ts_mono_us); the fetcher stamps a fetch's end with
 * max(ts_mono_us(), the time the fetch was asked for), so a caller-supplied later time (tests)
 * never makes a fresh fetch look older than the request that caused it.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "jwks_int.h"

struct waiter {
    void (*notify)(void *cls);
    void *cls;
    struct waiter *next;
};

struct entry {
    struct entry *next;        /* the cache's list */
    struct entry *qnext;       /* the fetch queue, while queued */
    char *uri;                 /* immutable */
    const char *refused;       /* why uri may not be fetched (static), or NULL */
    struct ts__jwks_set *set;  /* the last good set; NULL until a fetch succeeds */
    char *etag;                /* of set, for If-None-Match; may be NULL */
    int64_t ok_us;             /* end of the last successful fetch (200 or 304) */
    int64_t next_refresh_us;   /* the scheduled conditional refresh is due from then */
    int64_t last_fetch_us;     /* latest request of an unconditional fetch or end of any */
    int64_t used_us;           /* latest lookup */
    bool queued, queue_full;   /* in the queue; unconditional (else If-None-Match) */
    int64_t queue_req_us;      /* latest now_us of the lookups that asked for it */
    struct waiter *queue_wait; /* notified when the queued fetch ends */
    bool running, run_full;
    struct waiter *run_wait; /* notified when the running fetch ends */
    struct ts_jwks_stats st; /* urls unused here */
};

struct ts_jwks_cache {
    struct ts_jwks_options opts;
    pthread_mutex_t lock;
    pthread_cond_t wake; /* the fetcher waits on it (CLOCK_MONOTONIC) */
    struct entry *entries;
    struct entry *qhead, *qtail;
    int64_t nentries;
    struct ts_jwks_stats total; /* never decreases, whatever is evicted */
    _Atomic bool stop;
    pthread_t thread;
    struct ts__jwks_fetcher *fetcher;
};

struct ts_jwks_options ts_jwks_options_default(void)
{
    return (struct ts_jwks_options){
        .refresh_us = 3600 * INT64_C(1000000),
        .min_refetch_us = 500 * INT64_C(1000),
        .idle_evict_us = 3600 * INT64_C(1000000),
        .max_age_min_us = 60 * INT64_C(1000000),
        .max_age_max_us = 24 * 3600 * INT64_C(1000000),
        .stale_max_us = 24 * 3600 * INT64_C(1000000),
        .timeout_ms = 5000,
        .max_body = 1024 * 1024,
        .allow_http = true,
    };
}

static int64_t max64(int64_t a, int64_t b)
{
    return a > b ? a : b;
}

/* ---- entries (lock held) ---- */

static struct entry *find(struct ts_jwks_cache *c, const char *uri)
{
    for (struct entry *e = c->entries; e; e = e->next) {
        if (strcmp(e->uri, uri) == 0)
            return e;
    }
    return NULL;
}

static struct entry *add(struct ts_jwks_cache *c, const char *uri)
{
    struct entry *e = ts_xcalloc(1, sizeof(*e));
    e->uri = ts_xstrdup(uri);
    e->refused = ts_jwks_uri_refusal(&c->opts, uri);
    /* Far enough in the past that the first fetch is allowed, with no overflow in now - it. */
    e->last_fetch_us = INT64_MIN / 2;
    e->next = c->entries;
    c->entries = e;
    c->nentries++;
    return e;
}

static void free_entry(struct entry *e)
{
    ts__jwks_set_free(e->set);
    free(e->etag);
    free(e->uri);
    free(e);
}

static void attach(struct waiter **list, void (*notify)(void *), void *cls)
{
    if (!notify)
        return;
    struct waiter *w = ts_xmalloc(sizeof(*w));
    w->notify = notify;
    w->cls = cls;
    w->next = *list;
    *list = w;
}

/* Calls and frees every waiter of the list; the lock must not be held. */
static void notify_all(struct waiter *w)
{
    while (w) {
        struct waiter *next = w->next;
        w->notify(w->cls);
        free(w);
        w = next;
    }
}

static void enqueue(struct ts_jwks_cache *c, struct entry *e, bool full, int64_t now_us)
{
    TS_ASSERT(!e->queued);
    e->queued = true;
    e->queue_full = full;
    e->queue_req_us = now_us;
    if (full)
        e->last_fetch_us = max64(e->last_fetch_us, now_us);
    e->qnext = NULL;
    if (c->qtail)
        c->qtail->qnext = e;
    else
        c->qhead = e;
    c->qtail = e;
    pthread_cond_signal(&c->wake);
}

/* ---- lookup (request threads) ---- */

enum ts_jwks_result ts_jwks_lookup(struct ts_jwks_cache *c, const char *uri, enum ts_jose_alg alg,
                                   const char *kid, int64_t now_us, void (*notify)(void *cls),
                                   void *cls, struct ts_jwks_key **out)
{
    enum ts_jwks_result r = TS_JWKS_NO_KEY;
    const char *refused_now = NULL;

    /* RFC 8725 §3.1: HS* with a public key and "none" are refused before anything else. */
    if (!uri || !ts__jwks_alg_usable(alg))
        return TS_JWKS_NO_KEY;

    pthread_mutex_lock(&c->lock);
    struct entry *e = find(c, uri);
    if (!e) {
        e = add(c, uri);
        refused_now = e->refused;
    }
    e->used_us = max64(e->used_us, now_us);
    if (e->refused)
        goto out;

    bool fresh = e->set && now_us - e->ok_us <= c->opts.stale_max_us;
    if (fresh) {
        struct ts_jwks_key *k = ts__jwks_set_find(e->set, alg, kid);
        if (k) {
            atomic_fetch_add(&k->refs, 1);
            *out = k;
            if (now_us >= e->next_refresh_us && !e->queued && !e->running)
                enqueue(c, e, false, now_us);
            r = TS_JWKS_FOUND;
            goto out;
        }
    }

    /* No key from the current set: the kid is unknown, or the set is missing or too old. An
     * unconditional fetch may start if the previous fetch is old enough; otherwise join the
     * pending fetch if there is one, else fail fast. */
    bool allowed = now_us - e->last_fetch_us >= c->opts.min_refetch_us;
    if (e->queued) {
        if (!e->queue_full && allowed) {
            e->queue_full = true;
            e->last_fetch_us = max64(e->last_fetch_us, now_us);
        }
        e->queue_req_us = max64(e->queue_req_us, now_us);
        attach(&e->queue_wait, notify, cls);
        r = TS_JWKS_PENDING;
    } else if (e->running && !e->run_full && allowed) {
        /* A conditional refresh may answer 304 for a server whose ETag does not follow key
         * changes; an unknown kid deserves an unconditional fetch after it. */
        enqueue(c, e, true, now_us);
        attach(&e->queue_wait, notify, cls);
        r = TS_JWKS_PENDING;
    } else if (e->running) {
        attach(&e->run_wait, notify, cls);
        r = TS_JWKS_PENDING;
    } else if (allowed) {
        enqueue(c, e, true, now_us);
        attach(&e->queue_wait, notify, cls);
        r = TS_JWKS_PENDING;
    }
out:
    pthread_mutex_unlock(&c->lock);
    if (refused_now)
        ts_log_warn("jwks: %s refused: %s", uri, refused_now);
    return r;
}

void ts_jwks_stats(struct ts_jwks_cache *c, const char *uri, struct ts_jwks_stats *out)
{
    pthread_mutex_lock(&c->lock);
    if (!uri) {
        *out = c->total;
        out->urls = c->nentries;
    } else {
        struct entry *e = find(c, uri);
        memset(out, 0, sizeof(*out));
        if (e) {
            *out = e->st;
            out->urls = 1;
        }
    }
    pthread_mutex_unlock(&c->lock);
}

/* ---- the fetcher thread ---- */

/* How long a successful answer is good for: max-age within the bounds, else refresh_us. */
static int64_t answer_ttl(const struct ts_jwks_options *o, int64_t max_age_s)
{
    if (max_age_s < 0)
        return o->refresh_us;
    int64_t us = max_age_s * 1000000;
    if (us < o->max_age_min_us)
        return o->max_age_min_us;
    if (us > o->max_age_max_us)
        return o->max_age_max_us;
    return us;
}

/* Runs the fetch at the head of the queue. Called and returns with the lock held; releases
 * it for the fetch and for the notifications. */
static void run_one(struct ts_jwks_cache *c)
{
    struct entry *e = c->qhead;
    struct ts__jwks_fetch job = {.uri = e->uri};
    struct ts__jwks_set *old = NULL;
    struct waiter *done;
    char *etag = NULL;
    int64_t req_us, stamp, age_s = -1;
    bool had_set;

    c->qhead = e->qnext;
    if (!c->qhead)
        c->qtail = NULL;
    e->qnext = NULL;
    e->queued = false;
    e->running = true;
    e->run_full = e->queue_full;
    e->run_wait = e->queue_wait;
    e->queue_wait = NULL;
    req_us = e->queue_req_us;
    if (!e->run_full && e->set && e->etag)
        etag = ts_xstrdup(e->etag);
    job.etag = etag;
    e->st.fetches++;
    c->total.fetches++;
    pthread_mutex_unlock(&c->lock);

    ts__jwks_fetch(c->fetcher, &job);

    pthread_mutex_lock(&c->lock);
    stamp = max64(ts_mono_us(), req_us);
    e->last_fetch_us = max64(e->last_fetch_us, stamp);
    if (job.outcome == TS__JWKS_NOT_MODIFIED && !e->set) {
        job.outcome = TS__JWKS_FAILED; /* cannot happen: only a set's ETag is ever sent */
        snprintf(job.why, sizeof(job.why), "304 without a cached set");
    }
    switch (job.outcome) {
    case TS__JWKS_GOT_SET:
        old = e->set;
        e->set = job.set;
        job.set = NULL;
        free(e->etag);
        e->etag = job.new_etag;
        job.new_etag = NULL;
        e->st.keys_skipped += job.skipped;
        c->total.keys_skipped += job.skipped;
        break;
    case TS__JWKS_NOT_MODIFIED:
        /* RFC 9110 §15.4.5: a 304 may carry a new ETag; keep the old one otherwise. */
        if (job.new_etag) {
            free(e->etag);
            e->etag = job.new_etag;
            job.new_etag = NULL;
        }
        e->st.not_modified++;
        c->total.not_modified++;
        break;
    case TS__JWKS_FAILED:
        e->st.failures++;
        c->total.failures++;
        /* Retry no sooner than the lower bound; an unknown kid may still force a fetch. */
        e->next_refresh_us = stamp + c->opts.max_age_min_us;
        break;
    }
    if (job.outcome != TS__JWKS_FAILED) {
        e->ok_us = stamp;
        e->next_refresh_us = stamp + answer_ttl(&c->opts, job.max_age_s);
        age_s = job.max_age_s;
    }
    had_set = e->set != NULL;
    done = e->run_wait;
    e->run_wait = NULL;
    e->running = false;
    size_t nkeys = e->set ? e->set->n : 0;
    int64_t set_age_s = e->set ? (stamp - e->ok_us) / 1000000 : 0;
    pthread_mutex_unlock(&c->lock);

    /* e stays valid here: only this thread frees entries. */
    switch (job.outcome) {
    case TS__JWKS_GOT_SET:
        ts_log_info("jwks: fetched %s: keys %zu usable, %lld skipped; max-age %lld", e->uri, nkeys,
                    (long long)job.skipped, (long long)age_s);
        break;
    case TS__JWKS_NOT_MODIFIED:
        ts_log_debug("jwks: %s: not modified", e->uri);
        break;
    case TS__JWKS_FAILED:
        if (had_set)
            ts_log_warn("jwks: fetch of %s failed: %s; serving the set fetched %lld s ago", e->uri,
                        job.why, (long long)set_age_s);
        else
            ts_log_warn("jwks: fetch of %s failed: %s; no set to serve", e->uri, job.why);
        break;
    }
    ts__jwks_set_free(old);
    ts__jwks_set_free(job.set);
    free(job.new_etag);
    free(etag);
    notify_all(done);
    pthread_mutex_lock(&c->lock);
}

/* Drops the entries no lookup used for idle_evict_us (lock held). */
static void evict(struct ts_jwks_cache *c, int64_t now_us)
{
    struct entry **pp = &c->entries;
    while (*pp) {
        struct entry *e = *pp;
        if (!e->queued && !e->running && !e->queue_wait && !e->run_wait &&
            now_us - e->used_us > c->opts.idle_evict_us) {
            *pp = e->next;
            c->nentries--;
            free_entry(e);
        } else {
            pp = &e->next;
        }
    }
}

static void *fetcher_main(void *arg)
{
    struct ts_jwks_cache *c = arg;
    int64_t sweep_every = c->opts.idle_evict_us / 4;
    if (sweep_every < 10000)
        sweep_every = 10000;
    if (sweep_every > 60 * INT64_C(1000000))
        sweep_every = 60 * INT64_C(1000000);
    int64_t next_sweep = ts_mono_us() + sweep_every;

    pthread_mutex_lock(&c->lock);
    while (!atomic_load(&c->stop)) {
        if (c->qhead) {
            run_one(c);
            continue;
        }
        int64_t now = ts_mono_us();
        if (now >= next_sweep) {
            evict(c, now);
            next_sweep = now + sweep_every;
            continue;
        }
        struct timespec until = {.tv_sec = (time_t)(next_sweep / 1000000),
                                 .tv_nsec = (long)(next_sweep % 1000000) * 1000};
        int err = pthread_cond_timedwait(&c->wake, &c->lock, &until);
        TS_ASSERT(err == 0 || err == ETIMEDOUT);
    }
    /* Shutting down: every lookup told PENDING still gets its one notify. */
    struct waiter *all = NULL;
    for (struct entry *e = c->entries; e; e = e->next) {
        while (e->queue_wait) {
            struct waiter *w = e->queue_wait;
            e->queue_wait = w->next;
            w->next = all;
            all = w;
        }
        e->queued = false;
    }
    c->qhead = c->qtail = NULL;
    pthread_mutex_unlock(&c->lock);
    notify_all(all);
    return NULL;
}

/* ---- life cycle ---- */

enum ts_rc ts_jwks_cache_new(const struct ts_jwks_options *opts, struct ts_jwks_cache **out)
{
    const struct ts_jwks_options *o = opts;
    if (o->refresh_us <= 0 || o->min_refetch_us <= 0 || o->idle_evict_us <= 0 ||
        o->max_age_min_us <= 0 || o->max_age_max_us < o->max_age_min_us || o->stale_max_us <= 0 ||
        o->timeout_ms <= 0 || o->max_body == 0)
        return TS_E_INVALID;

    struct ts_jwks_cache *c = ts_xcalloc(1, sizeof(*c));
    pthread_condattr_t ca;
    c->opts = *opts;
    atomic_init(&c->stop, false);
    pthread_mutex_init(&c->lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->wake, &ca);
    pthread_condattr_destroy(&ca);
    c->fetcher = ts__jwks_fetcher_new(&c->opts, &c->stop);
    if (!c->fetcher || pthread_create(&c->thread, NULL, fetcher_main, c) != 0) {
        ts_log_error("jwks: cannot start the fetcher (libcurl or thread)");
        ts__jwks_fetcher_free(c->fetcher);
        pthread_cond_destroy(&c->wake);
        pthread_mutex_destroy(&c->lock);
        free(c);
        return TS_E_INTERNAL;
    }
    *out = c;
    return TS_OK;
}

void ts_jwks_cache_free(struct ts_jwks_cache *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&c->lock);
    atomic_store(&c->stop, true);
    pthread_cond_signal(&c->wake);
    pthread_mutex_unlock(&c->lock);
    pthread_join(c->thread, NULL);
    while (c->entries) {
        struct entry *e = c->entries;
        c->entries = e->next;
        free_entry(e);
    }
    ts__jwks_fetcher_free(c->fetcher);
    pthread_cond_destroy(&c->wake);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

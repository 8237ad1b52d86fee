/*
 * limit_local.c - per-node request budgets (limit.h, ts_local_limits).
 *
 * A fixed table of SETS x WAYS buckets, each remembering a subject by a keyed 64-bit hash
 * (the key is random per process, so nobody can aim two subjects at one bucket; a chance
 * collision makes two subjects share a budget, which is only stricter) and the time its
 * bucket is full again (full_at, the store's integer scheme: no fractions). A subject not in
 * its set takes the way whose bucket is fullest: forgetting that one loses the least. The
 * table is calloc'd, so its pages cost memory only once used.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"
#include "core/util.h"
#include "limit.h"

#define SETS 4096
#define WAYS 4
#define STRIPES 64

struct way {
    uint64_t tag; /* 0 = empty */
    int64_t full_at;
};

struct ts_local_limits {
    uint64_t seed[2];
    pthread_mutex_t locks[STRIPES];
    struct way ways[SETS][WAYS];
};

struct ts_local_limits *ts_local_limits_new(void)
{
    struct ts_local_limits *t = ts_xcalloc(1, sizeof(*t));
    ts_rand_bytes(t->seed, sizeof(t->seed));
    for (size_t i = 0; i < STRIPES; i++)
        pthread_mutex_init(&t->locks[i], NULL);
    return t;
}

void ts_local_limits_free(struct ts_local_limits *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < STRIPES; i++)
        pthread_mutex_destroy(&t->locks[i]);
    free(t);
}

/* splitmix64's finaliser: a good avalanche for a 64-bit state. */
static uint64_t mix(uint64_t x)
{
    x ^= x >> 30;
    x *= UINT64_C(0xbf58476d1ce4e5b9);
    x ^= x >> 27;
    x *= UINT64_C(0x94d049bb133111eb);
    x ^= x >> 31;
    return x;
}

static uint64_t subject_hash(const struct ts_local_limits *t, const char *s)
{
    uint64_t h = t->seed[0];
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        h = mix(h ^ *p ^ t->seed[1]);
    return h ? h : 1;
}

void ts_local_take(struct ts_local_limits *t, const char *subject, int64_t per_second,
                   int64_t now_us, struct ts_limit_verdict *v)
{
    v->allowed = true;
    v->retry_after_s = 0;
    if (per_second <= 0)
        return;
    uint64_t h = subject_hash(t, subject);
    size_t set = (size_t)(h % SETS);
    int64_t refill = 1000000 / per_second;
    if (refill < 1)
        refill = 1;
    int64_t span = refill * per_second; /* a full bucket's worth of time: about a second */
    pthread_mutex_lock(&t->locks[set % STRIPES]);
    struct way *w = NULL, *victim = NULL; /* an empty way, else the fullest bucket */
    for (size_t i = 0; i < WAYS && !w; i++) {
        struct way *c = &t->ways[set][i];
        if (c->tag == h)
            w = c;
        else if (!victim || (victim->tag && (!c->tag || c->full_at < victim->full_at)))
            victim = c;
    }
    if (!w) {
        w = victim;
        w->tag = h;
        w->full_at = now_us; /* a subject never seen (or forgotten) is full */
    }
    int64_t deficit = w->full_at - now_us;
    if (deficit < 0)
        deficit = 0;
    if (deficit > span)
        deficit = span;
    if (deficit + refill <= span) {
        w->full_at = now_us + deficit + refill;
    } else {
        v->allowed = false;
        int64_t wait = deficit + refill - span;
        v->retry_after_s = wait <= 1000000 ? 1 : (wait + 999999) / 1000000;
    }
    pthread_mutex_unlock(&t->locks[set % STRIPES]);
}

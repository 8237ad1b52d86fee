/*
 * authn_tokencache.c - verified access tokens, so that a repeated token costs a
 * keyed hash and one comparison instead of a signature check (ES256 verify is 60-80 µs,
 * several times the cost of serving the whole request).
 *
 * Keyed by the whole token: a token is only ever found if the exact same bytes were
 * verified before. Bucket choice uses SipHash with a random key (libsodium's
 * crypto_shorthash), so clients cannot aim collisions at one bucket nor reach the final
 * comparison with a token they do not hold. Entries die at the token's exp. What the cache never
 * replaces: the per-request session check, so logout takes effect at once.
 */
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "authn_int.h"

#define SHARDS 32

struct entry {
    struct entry *next;
    uint64_t hash;
    struct ts_principal principal;
    size_t len;
    char token[]; /* len bytes, not NUL-terminated */
};

struct shard {
    pthread_mutex_t lock;
    struct entry **buckets;
    size_t nbuckets; /* power of two */
    size_t count;
};

struct ts_tokencache {
    unsigned char key[crypto_shorthash_KEYBYTES];
    size_t max_per_shard;
    struct shard shards[SHARDS];
    _Atomic int64_t hits, misses;
};

struct ts_tokencache *ts__tokencache_new(size_t max_entries)
{
    struct ts_tokencache *tc = ts_xcalloc(1, sizeof(*tc));
    ts_rand_bytes(tc->key, sizeof(tc->key));
    tc->max_per_shard = max_entries / SHARDS + 1;
    size_t nb = 64;
    while (nb < tc->max_per_shard)
        nb *= 2;
    for (int i = 0; i < SHARDS; i++) {
        pthread_mutex_init(&tc->shards[i].lock, NULL);
        tc->shards[i].nbuckets = nb;
        tc->shards[i].buckets = ts_xcalloc(nb, sizeof(struct entry *));
    }
    return tc;
}

static void shard_clear(struct shard *s)
{
    for (size_t b = 0; b < s->nbuckets; b++) {
        struct entry *e = s->buckets[b];
        while (e) {
            struct entry *next = e->next;
            free(e);
            e = next;
        }
        s->buckets[b] = NULL;
    }
    s->count = 0;
}

void ts__tokencache_free(struct ts_tokencache *tc)
{
    if (!tc)
        return;
    for (int i = 0; i < SHARDS; i++) {
        shard_clear(&tc->shards[i]);
        free(tc->shards[i].buckets);
        pthread_mutex_destroy(&tc->shards[i].lock);
    }
    free(tc);
}

static uint64_t hash_token(struct ts_tokencache *tc, const char *token, size_t len)
{
    unsigned char out[crypto_shorthash_BYTES];
    crypto_shorthash(out, (const unsigned char *)token, len, tc->key);
    uint64_t h;
    memcpy(&h, out, sizeof(h));
    return h;
}

bool ts__tokencache_get(struct ts_tokencache *tc, const char *token, size_t len, int64_t now,
                        struct ts_principal *out)
{
    uint64_t h = hash_token(tc, token, len);
    struct shard *s = &tc->shards[h % SHARDS];
    bool found = false;
    pthread_mutex_lock(&s->lock);
    for (struct entry *e = s->buckets[(h / SHARDS) & (s->nbuckets - 1)]; e; e = e->next) {
        /* memcmp is safe here although the token is a secret: it only runs when the keyed
         * 64-bit SipHash already matched, which a client cannot arrange for a token it does
         * not hold (it would need the random key), so its timing tells nothing. A
         * constant-time loop over ~800 bytes cost 5 % of GET /user. */
        if (e->hash == h && e->len == len && memcmp(e->token, token, len) == 0) { /* banned-ok */
            if (e->principal.exp > now) {
                *out = e->principal;
                found = true;
            }
            break;
        }
    }
    pthread_mutex_unlock(&s->lock);
    atomic_fetch_add(found ? &tc->hits : &tc->misses, 1);
    return found;
}

/* Drops expired entries of a full shard; if none expired, drops them all (rare: a shard
 * holds max_entries/SHARDS live tokens only under a flood of distinct valid tokens). */
static void shard_make_room(struct shard *s, int64_t now)
{
    for (size_t b = 0; b < s->nbuckets; b++) {
        struct entry **pp = &s->buckets[b];
        while (*pp) {
            struct entry *e = *pp;
            if (e->principal.exp <= now) {
                *pp = e->next;
                free(e);
                s->count--;
            } else {
                pp = &e->next;
            }
        }
    }
}

void ts__tokencache_put(struct ts_tokencache *tc, const char *token, size_t len,
                        const struct ts_principal *p)
{
    uint64_t h = hash_token(tc, token, len);
    struct shard *s = &tc->shards[h % SHARDS];
    struct entry *e = ts_xmalloc(sizeof(*e) + len);
    e->hash = h;
    e->principal = *p;
    e->len = len;
    memcpy(e->token, token, len);
    pthread_mutex_lock(&s->lock);
    if (s->count >= tc->max_per_shard) {
        shard_make_room(s, ts_now_s());
        if (s->count >= tc->max_per_shard)
            shard_clear(s);
    }
    size_t b = (h / SHARDS) & (s->nbuckets - 1);
    e->next = s->buckets[b];
    s->buckets[b] = e;
    s->count++;
    pthread_mutex_unlock(&s->lock);
}

void ts__tokencache_clear(struct ts_tokencache *tc)
{
    for (int i = 0; i < SHARDS; i++) {
        pthread_mutex_lock(&tc->shards[i].lock);
        shard_clear(&tc->shards[i]);
        pthread_mutex_unlock(&tc->shards[i].lock);
    }
}

void ts__tokencache_stats(struct ts_tokencache *tc, struct ts_tokencache_stats *out)
{
    out->hits = atomic_load(&tc->hits);
    out->misses = atomic_load(&tc->misses);
    int64_t n = 0;
    for (int i = 0; i < SHARDS; i++) {
        pthread_mutex_lock(&tc->shards[i].lock);
        n += (int64_t)tc->shards[i].count;
        pthread_mutex_unlock(&tc->shards[i].lock);
    }
    out->entries = n;
}

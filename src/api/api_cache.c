/*
 * api_cache.c - the GET /user cache (see api_int.h for its contract).
 *
 * Direct-mapped: a session id hashes to one slot, and a new entry simply replaces what was
 * there, so there is nothing to evict and memory is bounded by the slot count (a User is
 * about 1 KiB). Slots are guarded by striped mutexes. Session ids are server-made UUIDs
 * that only verified tokens can name, so a plain FNV-1a hash is enough.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "api_int.h"

#define STRIPES 64

struct slot {
    char session_id[TS_STORE_ID_LEN + 1]; /* empty = free */
    char user_id[TS_STORE_ID_LEN + 1];
    uint64_t epoch;
    char *text; /* heap; len bytes */
    size_t len;
};

struct api_user_cache {
    size_t nslots;
    struct slot *slots;
    pthread_mutex_t locks[STRIPES];
};

struct api_user_cache *api_user_cache_new(size_t slots)
{
    struct api_user_cache *c = ts_xcalloc(1, sizeof(*c));
    c->nslots = slots ? slots : 1;
    c->slots = ts_xcalloc(c->nslots, sizeof(*c->slots));
    for (int i = 0; i < STRIPES; i++)
        pthread_mutex_init(&c->locks[i], NULL);
    return c;
}

void api_user_cache_free(struct api_user_cache *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->nslots; i++)
        free(c->slots[i].text);
    for (int i = 0; i < STRIPES; i++)
        pthread_mutex_destroy(&c->locks[i]);
    free(c->slots);
    free(c);
}

static size_t slot_of(const struct api_user_cache *c, const char *session_id)
{
    uint64_t h = 1469598103934665603ULL;
    for (const unsigned char *p = (const unsigned char *)session_id; *p; p++)
        h = (h ^ *p) * 1099511628211ULL;
    return (size_t)(h % c->nslots);
}

bool api_user_cache_get(struct api_user_cache *c, const char *session_id, const char *user_id,
                        uint64_t epoch, struct ts_arena *a, const char **text, size_t *len)
{
    size_t i = slot_of(c, session_id);
    struct slot *s = &c->slots[i];
    pthread_mutex_t *lock = &c->locks[i % STRIPES];
    bool hit = false;
    pthread_mutex_lock(lock);
    if (s->text && s->epoch == epoch && strcmp(s->session_id, session_id) == 0 &&
        strcmp(s->user_id, user_id) == 0) {
        *text = ts_arena_memdup(a, s->text, s->len);
        *len = s->len;
        hit = true;
    }
    pthread_mutex_unlock(lock);
    return hit;
}

void api_user_cache_put(struct api_user_cache *c, const char *session_id, const char *user_id,
                        uint64_t epoch, const char *text, size_t len)
{
    if (strlen(session_id) > TS_STORE_ID_LEN || strlen(user_id) > TS_STORE_ID_LEN)
        return;
    char *copy = ts_xmalloc(len);
    memcpy(copy, text, len);
    size_t i = slot_of(c, session_id);
    struct slot *s = &c->slots[i];
    pthread_mutex_t *lock = &c->locks[i % STRIPES];
    pthread_mutex_lock(lock);
    char *old = s->text;
    memcpy(s->session_id, session_id, strlen(session_id) + 1);
    memcpy(s->user_id, user_id, strlen(user_id) + 1);
    s->epoch = epoch;
    s->text = copy;
    s->len = len;
    pthread_mutex_unlock(lock);
    free(old);
}

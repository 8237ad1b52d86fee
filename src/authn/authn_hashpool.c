/*
 * authn_hashpool.c - a fixed set of threads that hash and verify passwords.
 *
 * Why a pool: argon2id at the default cost takes 20-40 ms of one core. Run on the
 * HTTP threads, a few dozen concurrent logins would stall every token check behind
 * them. Here they wait in a bounded FIFO; when it is full the submitter is told at
 * once (TS_E_BUSY -> 429), so overload is refused quickly instead of timing out.
 *
 * Memory: libsodium maps its argon2 buffer with mmap(2) and unmaps it after every hash,
 * whatever the allocator's settings, so its pages are always fresh: measured here, 4,864
 * page faults (19 MiB) per hash, about a quarter of its 22-33 ms. No libsodium API takes a
 * caller's buffer; the reference libargon2, which does, computes 1.4-1.7x slower, which
 * costs more than the faults (docs/internals/authn.md).
 */
#include <pthread.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "authn.h"

struct ts_hashpool {
    struct ts_password_params params;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    struct ts_hash_job *head, *tail;
    int queued, queue_cap;
    int running;
    bool stopping;
    int nworkers;
    pthread_t *workers;
    int64_t completed, rejected, wait_us_total, run_us_total;
};

/* Spends what one verification costs without a hash to verify against: an argon2id hash of
 * the password with the same parameters (the cost of argon2id is the same either way). This
 * is what makes an unknown user indistinguishable from a wrong password by time. */
static void spend_like_verify(struct ts_hashpool *pool, const char *password, size_t len)
{
    char *scratch = NULL;
    if (ts_password_hash(&pool->params, password, len, &scratch) == TS_OK) {
        ts_wipe(scratch, strlen(scratch));
        free(scratch);
    }
}

/* Verifies password against hash, or spends the same time when hash is NULL. A hash we cannot
 * read also costs the same time and counts as a mismatch. */
static bool verify(struct ts_hashpool *pool, const char *hash, const char *password, size_t len,
                   bool *needs_rehash)
{
    bool match = false, rehash = false;
    *needs_rehash = false;
    if (!hash) {
        spend_like_verify(pool, password, len);
        return false;
    }
    enum ts_rc rc = ts_password_verify(&pool->params, hash, password, len, &match, &rehash);
    if (rc == TS_E_INVALID) {
        spend_like_verify(pool, password, len);
        ts_log_error("password hash of unknown format; treated as a mismatch");
        return false;
    }
    *needs_rehash = rehash;
    return match;
}

static void run_job(struct ts_hashpool *pool, struct ts_hash_job *job)
{
    int64_t t0 = ts_mono_us();
    job->rc = TS_OK;
    job->match = false;
    job->same = false;
    job->needs_rehash = false;
    job->new_hash = NULL;
    bool rehash = false;
    switch (job->op) {
    case TS_HASH_CREATE:
        job->rc = ts_password_hash(&pool->params, job->password, job->password_len, &job->new_hash);
        break;
    case TS_HASH_VERIFY:
        job->match = verify(pool, job->hash, job->password, job->password_len, &rehash);
        if (job->match && rehash) {
            job->needs_rehash = true;
            if (ts_password_hash(&pool->params, job->password, job->password_len, &job->new_hash) !=
                TS_OK)
                job->new_hash = NULL; /* the login still succeeds; rehash next time */
        }
        break;
    case TS_HASH_CHANGE:
        job->match = true;
        if (job->current_password)
            job->match =
                verify(pool, job->hash, job->current_password, job->current_password_len, &rehash);
        if (job->match && job->hash)
            job->same = verify(pool, job->hash, job->password, job->password_len, &rehash);
        if (job->match && !job->same)
            job->rc =
                ts_password_hash(&pool->params, job->password, job->password_len, &job->new_hash);
        break;
    }
    job->run_us = ts_mono_us() - t0;
}

static void *worker_main(void *arg)
{
    struct ts_hashpool *pool = arg;
    /* Linux applies niceness per thread. A niced worker yields the CPU to the HTTP threads
     * whenever they have work, so a login storm slows logins, not token checks. */
    if (pool->params.nice > 0 &&
        setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), pool->params.nice) != 0)
        ts_log_warn("hash worker: cannot set niceness %d", pool->params.nice);
    pthread_mutex_lock(&pool->lock);
    for (;;) {
        while (!pool->head && !pool->stopping)
            pthread_cond_wait(&pool->wake, &pool->lock);
        if (!pool->head)
            break; /* stopping and drained */
        struct ts_hash_job *job = pool->head;
        pool->head = job->next;
        if (!pool->head)
            pool->tail = NULL;
        pool->queued--;
        pool->running++;
        int64_t start = ts_mono_us();
        job->wait_us = start - job->wait_us; /* wait_us held the enqueue time */
        pthread_mutex_unlock(&pool->lock);

        run_job(pool, job);
        int64_t wait = job->wait_us, run = job->run_us;
        job->done(job); /* may free job: touch it no more */

        pthread_mutex_lock(&pool->lock);
        pool->running--;
        pool->completed++;
        pool->wait_us_total += wait;
        pool->run_us_total += run;
    }
    pthread_mutex_unlock(&pool->lock);
    return NULL;
}

enum ts_rc ts_hashpool_new(int workers, int queue_cap, const struct ts_password_params *params,
                           struct ts_hashpool **out)
{
    if (sodium_init() < 0)
        return TS_E_CRYPTO;
    struct ts_hashpool *pool = ts_xcalloc(1, sizeof(*pool));
    pool->params = *params;
    pool->queue_cap = queue_cap;
    pthread_mutex_init(&pool->lock, NULL);
    pthread_cond_init(&pool->wake, NULL);
    pool->workers = ts_xcalloc((size_t)workers, sizeof(pthread_t));
    for (int i = 0; i < workers; i++) {
        if (pthread_create(&pool->workers[i], NULL, worker_main, pool) != 0) {
            ts_log_error("cannot start hash worker %d", i);
            break;
        }
        pool->nworkers++;
    }
    if (pool->nworkers == 0) {
        ts_hashpool_free(pool);
        return TS_E_INTERNAL;
    }
    *out = pool;
    return TS_OK;
}

enum ts_rc ts_hashpool_submit(struct ts_hashpool *pool, struct ts_hash_job *job)
{
    pthread_mutex_lock(&pool->lock);
    /* Queued jobs that idle workers are about to take do not wait; at most queue_cap
     * jobs may wait behind busy workers. */
    int idle_workers = pool->nworkers - pool->running;
    if (pool->stopping || pool->queued - idle_workers >= pool->queue_cap) {
        pool->rejected++;
        pthread_mutex_unlock(&pool->lock);
        return TS_E_BUSY;
    }
    job->next = NULL;
    job->wait_us = ts_mono_us();
    if (pool->tail)
        pool->tail->next = job;
    else
        pool->head = job;
    pool->tail = job;
    pool->queued++;
    pthread_cond_signal(&pool->wake);
    pthread_mutex_unlock(&pool->lock);
    return TS_OK;
}

void ts_hashpool_stats(struct ts_hashpool *pool, struct ts_hashpool_stats *out)
{
    pthread_mutex_lock(&pool->lock);
    out->queued = pool->queued;
    out->running = pool->running;
    out->completed = pool->completed;
    out->rejected = pool->rejected;
    out->wait_us_total = pool->wait_us_total;
    out->run_us_total = pool->run_us_total;
    pthread_mutex_unlock(&pool->lock);
}

const struct ts_password_params *ts_hashpool_params(const struct ts_hashpool *pool)
{
    return &pool->params;
}

void ts_hashpool_free(struct ts_hashpool *pool)
{
    if (!pool)
        return;
    pthread_mutex_lock(&pool->lock);
    pool->stopping = true;
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->lock);
    for (int i = 0; i < pool->nworkers; i++)
        pthread_join(pool->workers[i], NULL);
    free(pool->workers);
    pthread_mutex_destroy(&pool->lock);
    pthread_cond_destroy(&pool->wake);
    free(pool);
}

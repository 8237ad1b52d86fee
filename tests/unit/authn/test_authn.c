/*
 * test_authn.c - unit tests of the authn module: argon2id and imported bcrypt hashes, the
 * password-hash pool (results, back-pressure, draining, counters), the signing keyring on a
 * temporary SQLite store (ES256 keys, rotation, claim rules, API keys, JWKS), HS256 mode,
 * and the refresh-token helpers.
 *
 * Argon2id runs with small parameters (m=1024 KiB, t=1) except where slowness is the point.
 * The pool tests never rely on timing: a job that must stay "running" blocks in its done()
 * callback on a gate the test opens, and every accepted job is waited for before the pool
 * is freed. bcrypt hashes are made at test time with libcrypt (we never create them in the
 * server).
 */
#include <crypt.h>
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <openssl/sha.h>

#include "authn/authn.h"

static const struct ts_password_params small_params = {.memory_kib = 1024, .iterations = 1};

#define ISSUER "tessera-test"
#define AUDIENCE "authenticated"
#define SECRET32 "0123456789abcdef0123456789abcdef"

/* ---- helpers ---- */

static bool password_matches(const struct ts_password_params *p, const char *hash,
                             const char *password)
{
    bool match = false, rehash = false;
    assert_int_equal(ts_password_verify(p, hash, password, strlen(password), &match, &rehash),
                     TS_OK);
    return match;
}

/* A bcrypt hash of password with the given prefix ("$2b$"...), cost 4; NULL when libcrypt
 * cannot make that variant. The caller frees it. */
static char *make_bcrypt(const char *prefix, const char *password)
{
    char salt[CRYPT_GENSALT_OUTPUT_SIZE];
    if (!crypt_gensalt_rn(prefix, 4, NULL, 0, salt, sizeof(salt)))
        return NULL;
    struct crypt_data *data = calloc(1, sizeof(*data));
    assert_non_null(data);
    const char *h = crypt_r(password, salt, data);
    char *out = NULL;
    if (h && h[0] != '*' && strncmp(h, prefix, 4) == 0)
        out = ts_xstrdup(h);
    free(data);
    return out;
}

/* ---- passwords ---- */

static void test_password_hash_verify(void **state)
{
    (void)state;
    char *h = NULL;
    assert_int_equal(ts_password_hash(&small_params, "correct horse", 13, &h), TS_OK);
    assert_non_null(h);
    assert_true(strncmp(h, "$argon2id$", 10) == 0);
    assert_non_null(strstr(h, "m=1024"));
    assert_non_null(strstr(h, "t=1"));
    assert_true(ts_password_hash_format_ok(h));

    bool match = false, rehash = true;
    assert_int_equal(ts_password_verify(&small_params, h, "correct horse", 13, &match, &rehash),
                     TS_OK);
    assert_true(match);
    assert_false(rehash);
    match = true;
    assert_int_equal(ts_password_verify(&small_params, h, "correct horsE", 13, &match, &rehash),
                     TS_OK);
    assert_false(match);
    match = true;
    assert_int_equal(ts_password_verify(&small_params, h, "", 0, &match, &rehash), TS_OK);
    assert_false(match);
    /* Only len bytes count: a longer buffer with the same prefix matches. */
    assert_int_equal(
        ts_password_verify(&small_params, h, "correct horse battery", 13, &match, &rehash), TS_OK);
    assert_true(match);

    /* Two hashes of one password differ (random salt) and both verify. */
    char *h2 = NULL;
    assert_int_equal(ts_password_hash(&small_params, "correct horse", 13, &h2), TS_OK);
    assert_string_not_equal(h, h2);
    assert_true(password_matches(&small_params, h2, "correct horse"));
    free(h);
    free(h2);
}

static void test_password_embedded_nul(void **state)
{
    (void)state;
    char *h = NULL;
    assert_int_equal(ts_password_hash(&small_params, "pass\0word", 9, &h), TS_OK);
    bool match = false, rehash = false;
    assert_int_equal(ts_password_verify(&small_params, h, "pass\0word", 9, &match, &rehash), TS_OK);
    assert_true(match);
    assert_int_equal(ts_password_verify(&small_params, h, "pass", 4, &match, &rehash), TS_OK);
    assert_false(match);
    assert_int_equal(ts_password_verify(&small_params, h, "pass\0wore", 9, &match, &rehash), TS_OK);
    assert_false(match);
    free(h);
}

static void test_password_needs_rehash(void **state)
{
    (void)state;
    char *h = NULL;
    assert_int_equal(ts_password_hash(&small_params, "pw123456", 8, &h), TS_OK);
    const struct ts_password_params more_memory = {.memory_kib = 2048, .iterations = 1};
    const struct ts_password_params more_time = {.memory_kib = 1024, .iterations = 2};
    bool match = false, rehash = false;
    assert_int_equal(ts_password_verify(&more_memory, h, "pw123456", 8, &match, &rehash), TS_OK);
    assert_true(match);
    assert_true(rehash);
    rehash = false;
    assert_int_equal(ts_password_verify(&more_time, h, "pw123456", 8, &match, &rehash), TS_OK);
    assert_true(match);
    assert_true(rehash);
    assert_int_equal(ts_password_verify(&small_params, h, "pw123456", 8, &match, &rehash), TS_OK);
    assert_true(match);
    assert_false(rehash);
    free(h);
}

static void check_bcrypt(const char *hash, const char *password)
{
    assert_true(ts_password_hash_format_ok(hash));
    bool match = false, rehash = false;
    assert_int_equal(
        ts_password_verify(&small_params, hash, password, strlen(password), &match, &rehash),
        TS_OK);
    assert_true(match);
    assert_true(rehash); /* always: bcrypt is replaced by argon2id at the next login */
    match = true;
    rehash = false;
    assert_int_equal(ts_password_verify(&small_params, hash, "wrong password", 14, &match, &rehash),
                     TS_OK);
    assert_false(match);
    assert_true(rehash);
    /* A password with an embedded NUL is never what bcrypt hashed. */
    char with_nul[64];
    size_t n = strlen(password);
    memcpy(with_nul, password, n);
    with_nul[n] = '\0';
    with_nul[n + 1] = 'x';
    match = true;
    assert_int_equal(ts_password_verify(&small_params, hash, with_nul, n + 2, &match, &rehash),
                     TS_OK);
    assert_false(match);
}

static void test_password_bcrypt_2b(void **state)
{
    (void)state;
    char *h = make_bcrypt("$2b$", "imported-secret");
    assert_non_null(h); /* libxcrypt always makes $2b$ */
    assert_int_equal(strlen(h), 60);
    check_bcrypt(h, "imported-secret");
    free(h);
}

static void test_password_bcrypt_2a_2y(void **state)
{
    (void)state;
    int tried = 0;
    static const char *const prefixes[] = {"$2a$", "$2y$"};
    for (size_t i = 0; i < TS_ARRAY_LEN(prefixes); i++) {
        char *h = make_bcrypt(prefixes[i], "another secret");
        if (!h)
            continue;
        tried++;
        check_bcrypt(h, "another secret");
        free(h);
    }
    if (!tried)
        skip();
}

static void test_password_garbage_hash(void **state)
{
    (void)state;
    static const char *const garbage[] = {
        "",
        "garbage",
        "plaintext-password",
        "$argon2i$v=19$m=1024,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo", /* argon2i, not id */
        "$1$salt$hash",                                              /* md5-crypt */
        "$6$salt$hash",                                              /* sha512-crypt */
        "$2x$04$abcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ01234",
        "$2b$04$short",
        "$2b$99$abcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ01234", /* cost out of range */
    };
    for (size_t i = 0; i < TS_ARRAY_LEN(garbage); i++) {
        bool match = true, rehash = false;
        enum ts_rc rc =
            ts_password_verify(&small_params, garbage[i], "password", 8, &match, &rehash);
        if (rc != TS_E_INVALID)
            fail_msg("hash \"%s\": rc %s, match %d", garbage[i], ts_rc_name(rc), match);
    }
    /* A damaged argon2id string has our prefix: it may not match, whatever rc says. */
    bool match = true, rehash = false;
    enum ts_rc rc = ts_password_verify(&small_params, "$argon2id$v=19$m=1024,t=1,p=1$garbage",
                                       "password", 8, &match, &rehash);
    assert_true(rc == TS_E_INVALID || (rc == TS_OK && !match));
}

static void test_password_hash_format_ok(void **state)
{
    (void)state;
    assert_false(ts_password_hash_format_ok(NULL));
    assert_false(ts_password_hash_format_ok(""));
    assert_false(ts_password_hash_format_ok("plain"));
    assert_false(ts_password_hash_format_ok("$2b$04$short"));
    assert_false(ts_password_hash_format_ok(
        "$2b$04$abcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ012345")); /* 61 */
    assert_true(ts_password_hash_format_ok(
        "$2b$04$abcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ01234")); /* 60 */
    assert_false(
        ts_password_hash_format_ok("$argon2i$v=19$m=1024,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2g"));
    assert_false(ts_password_hash_format_ok("$1$salt$hash"));
    /* An argon2id string too long for libsodium is refused. */
    char long_h[300];
    memset(long_h, 'A', sizeof(long_h) - 1);
    long_h[sizeof(long_h) - 1] = '\0';
    memcpy(long_h, "$argon2id$", 10);
    assert_false(ts_password_hash_format_ok(long_h));
    bool match = true, rehash = false;
    assert_int_equal(ts_password_verify(&small_params, long_h, "x", 1, &match, &rehash),
                     TS_E_INVALID);
}

/* ---- hash pool ---- */

struct waiter {
    pthread_mutex_t m;
    pthread_cond_t c;
    int done;
    /* the gate: a job whose cls is the gate blocks in done() until open */
    bool entered;
    bool open;
};

static void waiter_init(struct waiter *w)
{
    pthread_mutex_init(&w->m, NULL);
    pthread_cond_init(&w->c, NULL);
    w->done = 0;
    w->entered = false;
    w->open = false;
}

static void waiter_destroy(struct waiter *w)
{
    pthread_mutex_destroy(&w->m);
    pthread_cond_destroy(&w->c);
}

static void job_done(struct ts_hash_job *job)
{
    struct waiter *w = job->cls;
    pthread_mutex_lock(&w->m);
    w->done++;
    pthread_cond_broadcast(&w->c);
    pthread_mutex_unlock(&w->m);
}

/* done() of a job that must keep its worker busy until the test opens the gate. */
static void job_done_gated(struct ts_hash_job *job)
{
    struct waiter *w = job->cls;
    pthread_mutex_lock(&w->m);
    w->entered = true;
    pthread_cond_broadcast(&w->c);
    while (!w->open)
        pthread_cond_wait(&w->c, &w->m);
    w->done++;
    pthread_cond_broadcast(&w->c);
    pthread_mutex_unlock(&w->m);
}

static void deadline_in(struct timespec *ts, int seconds)
{
    clock_gettime(CLOCK_REALTIME, ts);
    ts->tv_sec += seconds;
}

/* Waits (at most two minutes, a liveness bound, not a timing check) until n jobs are done. */
static void wait_done(struct waiter *w, int n)
{
    struct timespec dl;
    deadline_in(&dl, 120);
    pthread_mutex_lock(&w->m);
    int rc = 0;
    while (w->done < n && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&w->c, &w->m, &dl);
    int done = w->done;
    pthread_mutex_unlock(&w->m);
    if (done < n)
        fail_msg("only %d of %d hash jobs finished", done, n);
}

static void wait_entered(struct waiter *w)
{
    struct timespec dl;
    deadline_in(&dl, 120);
    pthread_mutex_lock(&w->m);
    int rc = 0;
    while (!w->entered && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&w->c, &w->m, &dl);
    bool entered = w->entered;
    pthread_mutex_unlock(&w->m);
    if (!entered)
        fail_msg("the gated job never finished hashing");
}

static void gate_open(struct waiter *w)
{
    pthread_mutex_lock(&w->m);
    w->open = true;
    pthread_cond_broadcast(&w->c);
    pthread_mutex_unlock(&w->m);
}

/* Stats are updated just after done() returns: poll until the pool is idle with n
 * completed jobs (bounded, as wait_done). */
static void wait_stats(struct ts_hashpool *pool, int64_t completed, struct ts_hashpool_stats *out)
{
    for (int i = 0; i < 120000; i++) {
        ts_hashpool_stats(pool, out);
        if (out->completed >= completed && out->running == 0 && out->queued == 0)
            return;
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
    }
    fail_msg("pool stats never showed %lld completed jobs", (long long)completed);
}

static void job_init(struct ts_hash_job *job, enum ts_hash_op op, const char *password,
                     const char *hash, struct waiter *w)
{
    memset(job, 0, sizeof(*job));
    job->op = op;
    job->password = password;
    job->password_len = strlen(password);
    job->hash = hash;
    job->done = job_done;
    job->cls = w;
}

/* Submits one job and waits for it. */
static void run_one(struct ts_hashpool *pool, struct ts_hash_job *job)
{
    struct waiter *w = job->cls;
    int before;
    pthread_mutex_lock(&w->m);
    before = w->done;
    pthread_mutex_unlock(&w->m);
    assert_int_equal(ts_hashpool_submit(pool, job), TS_OK);
    wait_done(w, before + 1);
}

static void test_pool_create_verify(void **state)
{
    (void)state;
    struct ts_hashpool *pool = NULL;
    assert_int_equal(ts_hashpool_new(2, 8, &small_params, &pool), TS_OK);
    assert_int_equal(ts_hashpool_params(pool)->memory_kib, 1024);
    assert_int_equal(ts_hashpool_params(pool)->iterations, 1);
    struct waiter w;
    waiter_init(&w);

    struct ts_hash_job create;
    job_init(&create, TS_HASH_CREATE, "s3cret-pw", NULL, &w);
    run_one(pool, &create);
    assert_int_equal(create.rc, TS_OK);
    assert_non_null(create.new_hash);
    assert_true(password_matches(&small_params, create.new_hash, "s3cret-pw"));

    struct ts_hash_job ok;
    job_init(&ok, TS_HASH_VERIFY, "s3cret-pw", create.new_hash, &w);
    run_one(pool, &ok);
    assert_int_equal(ok.rc, TS_OK);
    assert_true(ok.match);
    assert_false(ok.needs_rehash);
    assert_null(ok.new_hash);

    struct ts_hash_job bad;
    job_init(&bad, TS_HASH_VERIFY, "s3cret-pW", create.new_hash, &w);
    run_one(pool, &bad);
    assert_int_equal(bad.rc, TS_OK);
    assert_false(bad.match);
    assert_null(bad.new_hash);

    /* A stored hash in no known format counts as a mismatch, not an error. */
    struct ts_hash_job unknown;
    job_init(&unknown, TS_HASH_VERIFY, "s3cret-pw", "not-a-hash", &w);
    run_one(pool, &unknown);
    assert_false(unknown.match);
    assert_null(unknown.new_hash);

    ts_hashpool_free(pool);
    waiter_destroy(&w);
    free(create.new_hash);
}

static void test_pool_verify_null_hash(void **state)
{
    (void)state;
    struct ts_hashpool *pool = NULL;
    assert_int_equal(ts_hashpool_new(1, 8, &small_params, &pool), TS_OK);
    struct waiter w;
    waiter_init(&w);
    /* An unknown user: whatever the password, never a match. */
    static const char *const pws[] = {"", "password", "a much longer password than usual"};
    for (size_t i = 0; i < TS_ARRAY_LEN(pws); i++) {
        struct ts_hash_job j;
        job_init(&j, TS_HASH_VERIFY, pws[i], NULL, &w);
        run_one(pool, &j);
        assert_int_equal(j.rc, TS_OK);
        assert_false(j.match);
        assert_false(j.needs_rehash);
        assert_null(j.new_hash);
    }
    ts_hashpool_free(pool);
    waiter_destroy(&w);
}

static void test_pool_verify_rehash(void **state)
{
    (void)state;
    const struct ts_password_params old_params = {.memory_kib = 2048, .iterations = 1};
    char *old = NULL;
    assert_int_equal(ts_password_hash(&old_params, "rehash-me", 9, &old), TS_OK);
    struct ts_hashpool *pool = NULL;
    assert_int_equal(ts_hashpool_new(1, 8, &small_params, &pool), TS_OK);
    struct waiter w;
    waiter_init(&w);

    struct ts_hash_job j;
    job_init(&j, TS_HASH_VERIFY, "rehash-me", old, &w);
    run_one(pool, &j);
    assert_true(j.match);
    assert_true(j.needs_rehash);
    assert_non_null(j.new_hash);
    bool match = false, rehash = true;
    assert_int_equal(ts_password_verify(&small_params, j.new_hash, "rehash-me", 9, &match, &rehash),
                     TS_OK);
    assert_true(match);
    assert_false(rehash);
    free(j.new_hash);

    /* Outdated parameters but a wrong password: no rehash. */
    job_init(&j, TS_HASH_VERIFY, "not-me", old, &w);
    run_one(pool, &j);
    assert_false(j.match);
    assert_null(j.new_hash);

    /* An imported bcrypt hash verifies and is replaced by argon2id. */
    char *bc = make_bcrypt("$2b$", "from-gotrue");
    assert_non_null(bc);
    job_init(&j, TS_HASH_VERIFY, "from-gotrue", bc, &w);
    run_one(pool, &j);
    assert_true(j.match);
    assert_true(j.needs_rehash);
    assert_non_null(j.new_hash);
    assert_true(strncmp(j.new_hash, "$argon2id$", 10) == 0);
    assert_true(password_matches(&small_params, j.new_hash, "from-gotrue"));
    free(j.new_hash);

    ts_hashpool_free(pool);
    waiter_destroy(&w);
    free(old);
    free(bc);
}

static void test_pool_change(void **state)
{
    (void)state;
    char *old = NULL;
    assert_int_equal(ts_password_hash(&small_params, "old-password", 12, &old), TS_OK);
    struct ts_hashpool *pool = NULL;
    assert_int_equal(ts_hashpool_new(2, 8, &small_params, &pool), TS_OK);
    struct waiter w;
    waiter_init(&w);
    struct ts_hash_job j;

    /* The current password is wrong: no match, nothing hashed. */
    job_init(&j, TS_HASH_CHANGE, "new-password", old, &w);
    j.current_password = "not-the-old-one";
    j.current_password_len = strlen(j.current_password);
    run_one(pool, &j);
    assert_int_equal(j.rc, TS_OK);
    assert_false(j.match);
    assert_null(j.new_hash);

    /* The new password equals the old one. */
    job_init(&j, TS_HASH_CHANGE, "old-password", old, &w);
    j.current_password = "old-password";
    j.current_password_len = 12;
    run_one(pool, &j);
    assert_int_equal(j.rc, TS_OK);
    assert_true(j.match);
    assert_true(j.same);
    free(j.new_hash);

    /* Same, without a current password. */
    job_init(&j, TS_HASH_CHANGE, "old-password", old, &w);
    run_one(pool, &j);
    assert_true(j.match);
    assert_true(j.same);
    free(j.new_hash);

    /* A real change, with the right current password. */
    job_init(&j, TS_HASH_CHANGE, "brand-new-password", old, &w);
    j.current_password = "old-password";
    j.current_password_len = 12;
    run_one(pool, &j);
    assert_int_equal(j.rc, TS_OK);
    assert_true(j.match);
    assert_false(j.same);
    assert_non_null(j.new_hash);
    assert_true(password_matches(&small_params, j.new_hash, "brand-new-password"));
    assert_false(password_matches(&small_params, j.new_hash, "old-password"));
    free(j.new_hash);

    /* A change without a current password (admin, recovery). */
    job_init(&j, TS_HASH_CHANGE, "another-one", old, &w);
    run_one(pool, &j);
    assert_true(j.match);
    assert_false(j.same);
    assert_non_null(j.new_hash);
    assert_true(password_matches(&small_params, j.new_hash, "another-one"));
    free(j.new_hash);

    /* A user without a password sets one. */
    job_init(&j, TS_HASH_CHANGE, "first-password", NULL, &w);
    run_one(pool, &j);
    assert_true(j.match);
    assert_false(j.same);
    assert_non_null(j.new_hash);
    assert_true(password_matches(&small_params, j.new_hash, "first-password"));
    free(j.new_hash);

    /* A user without a password who claims a current one: no match. */
    job_init(&j, TS_HASH_CHANGE, "first-password", NULL, &w);
    j.current_password = "guess";
    j.current_password_len = 5;
    run_one(pool, &j);
    assert_false(j.match);
    assert_null(j.new_hash);

    ts_hashpool_free(pool);
    waiter_destroy(&w);
    free(old);
}

static void test_pool_backpressure(void **state)
{
    (void)state;
    const struct ts_password_params slow = {.memory_kib = 65536, .iterations = 3};
    struct ts_hashpool *pool = NULL;
    assert_int_equal(ts_hashpool_new(1, 1, &slow, &pool), TS_OK);
    struct waiter gate, w;
    waiter_init(&gate);
    waiter_init(&w);

    struct ts_hash_job first, second, third;
    job_init(&first, TS_HASH_CREATE, "first", NULL, &gate);
    first.done = job_done_gated;
    job_init(&second, TS_HASH_CREATE, "second", NULL, &w);
    job_init(&third, TS_HASH_CREATE, "third", NULL, &w);
    third.rc = TS_E_INTERNAL; /* sentinel: a refused job is left untouched */

    assert_int_equal(ts_hashpool_submit(pool, &first), TS_OK);
    /* The first job runs: its worker is busy until the gate opens. */
    wait_entered(&gate);
    assert_int_equal(ts_hashpool_submit(pool, &second), TS_OK); /* waits in the queue */
    assert_int_equal(ts_hashpool_submit(pool, &third), TS_E_BUSY);
    assert_int_equal(third.rc, TS_E_INTERNAL);
    assert_null(third.new_hash);

    struct ts_hashpool_stats st;
    ts_hashpool_stats(pool, &st);
    assert_int_equal(st.queued, 1);
    assert_int_equal(st.running, 1);
    assert_int_equal(st.rejected, 1);
    assert_int_equal(st.completed, 0);

    gate_open(&gate);
    wait_done(&gate, 1);
    wait_done(&w, 1);
    wait_stats(pool, 2, &st);
    assert_int_equal(st.completed, 2);
    assert_int_equal(st.rejected, 1);
    ts_hashpool_free(pool);

    /* The refused job's done() never ran. */
    assert_int_equal(w.done, 1);
    assert_int_equal(first.rc, TS_OK);
    assert_int_equal(second.rc, TS_OK);
    assert_true(password_matches(&slow, first.new_hash, "first"));
    assert_true(password_matches(&slow, second.new_hash, "second"));
    free(first.new_hash);
    free(second.new_hash);
    waiter_destroy(&gate);
    waiter_destroy(&w);
}

static void test_pool_backpressure_two_workers(void **state)
{
    (void)state;
    struct ts_hashpool *pool = NULL;
    assert_int_equal(ts_hashpool_new(2, 1, &small_params, &pool), TS_OK);
    struct waiter g1, g2, w;
    waiter_init(&g1);
    waiter_init(&g2);
    waiter_init(&w);
    struct ts_hash_job a, b, c, d;
    job_init(&a, TS_HASH_VERIFY, "a", NULL, &g1);
    a.done = job_done_gated;
    job_init(&b, TS_HASH_VERIFY, "b", NULL, &g2);
    b.done = job_done_gated;
    job_init(&c, TS_HASH_VERIFY, "c", NULL, &w);
    job_init(&d, TS_HASH_VERIFY, "d", NULL, &w);
    /* Idle workers take jobs at once: two submissions never wait behind each other. */
    assert_int_equal(ts_hashpool_submit(pool, &a), TS_OK);
    assert_int_equal(ts_hashpool_submit(pool, &b), TS_OK);
    wait_entered(&g1);
    wait_entered(&g2);
    assert_int_equal(ts_hashpool_submit(pool, &c), TS_OK);
    assert_int_equal(ts_hashpool_submit(pool, &d), TS_E_BUSY);
    gate_open(&g1);
    gate_open(&g2);
    wait_done(&g1, 1);
    wait_done(&g2, 1);
    wait_done(&w, 1);
    ts_hashpool_free(pool);
    assert_int_equal(w.done, 1);
    waiter_destroy(&g1);
    waiter_destroy(&g2);
    waiter_destroy(&w);
}

static void test_pool_free_drains(void **state)
{
    (void)state;
    struct ts_hashpool *pool = NULL;
    assert_int_equal(ts_hashpool_new(1, 8, &small_params, &pool), TS_OK);
    struct waiter w;
    waiter_init(&w);
    struct ts_hash_job jobs[4];
    for (int i = 0; i < 4; i++) {
        job_init(&jobs[i], TS_HASH_CREATE, "drain-me", NULL, &w);
        assert_int_equal(ts_hashpool_submit(pool, &jobs[i]), TS_OK);
    }
    /* "Finishes the jobs already queued, then stops the workers." */
    ts_hashpool_free(pool);
    assert_int_equal(w.done, 4);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(jobs[i].rc, TS_OK);
        assert_non_null(jobs[i].new_hash);
        free(jobs[i].new_hash);
    }
    waiter_destroy(&w);
}

static void test_pool_stats(void **state)
{
    (void)state;
    struct ts_hashpool *pool = NULL;
    assert_int_equal(ts_hashpool_new(3, 64, &small_params, &pool), TS_OK);
    struct ts_hashpool_stats st;
    ts_hashpool_stats(pool, &st);
    assert_int_equal(st.queued, 0);
    assert_int_equal(st.running, 0);
    assert_int_equal(st.completed, 0);
    assert_int_equal(st.rejected, 0);
    struct waiter w;
    waiter_init(&w);
    struct ts_hash_job jobs[10];
    for (int i = 0; i < 10; i++) {
        job_init(&jobs[i], i % 2 ? TS_HASH_VERIFY : TS_HASH_CREATE, "stats", NULL, &w);
        assert_int_equal(ts_hashpool_submit(pool, &jobs[i]), TS_OK);
    }
    wait_done(&w, 10);
    wait_stats(pool, 10, &st);
    assert_int_equal(st.completed, 10);
    assert_int_equal(st.rejected, 0);
    assert_true(st.run_us_total > 0); /* argon2id does take time */
    assert_true(st.wait_us_total >= 0);
    int64_t run_sum = 0;
    for (int i = 0; i < 10; i++) {
        assert_true(jobs[i].run_us >= 0);
        assert_true(jobs[i].wait_us >= 0);
        run_sum += jobs[i].run_us;
        free(jobs[i].new_hash);
    }
    assert_int_equal(st.run_us_total, run_sum);
    ts_hashpool_free(pool);
    waiter_destroy(&w);
}

/* ---- keyring fixture: a temporary SQLite store ---- */

struct kfix {
    char dir[64];
    struct ts_store *st;
};

static struct ts_store *open_store(const char *dir)
{
    char url[128];
    snprintf(url, sizeof(url), "sqlite://%s/keys.db", dir);
    struct ts_store *st = NULL;
    char *err = NULL;
    if (ts_store_open(url, NULL, &st, &err) != TS_OK)
        fail_msg("ts_store_open(%s): %s", url, err ? err : "?");
    int applied = -1;
    if (ts_store_migrate(st, &applied, &err) != TS_OK)
        fail_msg("ts_store_migrate: %s", err ? err : "?");
    return st;
}

static int kfix_setup(void **state)
{
    struct kfix *f = ts_xcalloc(1, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/tessera-test-authn-XXXXXX");
    if (!mkdtemp(f->dir)) {
        free(f);
        return -1;
    }
    f->st = open_store(f->dir);
    *state = f;
    return 0;
}

static void remove_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char p[512];
        snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

static int kfix_teardown(void **state)
{
    struct kfix *f = *state;
    ts_store_close(f->st);
    remove_dir(f->dir);
    free(f);
    return 0;
}

static struct ts_keys_config keys_cfg(void)
{
    struct ts_keys_config c = {.hs256_secret = NULL,
                               .issuer = ISSUER,
                               .audience = AUDIENCE,
                               .access_ttl = 3600,
                               .retired_keep = TS_KEYS_RETIRED_KEEP};
    return c;
}

/* The claims of a user access token, as the token endpoint makes them. */
static json_t *user_claims(const char *sub, const char *sid)
{
    int64_t now = ts_now_s();
    json_t *c = json_pack("{s:s, s:s, s:s, s:I, s:I, s:s, s:s, s:b}", "iss", ISSUER, "sub", sub,
                          "aud", AUDIENCE, "exp", (json_int_t)(now + 3600), "iat", (json_int_t)now,
                          "role", "authenticated", "session_id", sid, "is_anonymous", 0);
    assert_non_null(c);
    return c;
}

static char *sign(struct ts_keyring *kr, const json_t *claims)
{
    char *tok = NULL;
    assert_int_equal(ts_keyring_sign(kr, claims, &tok), TS_OK);
    assert_non_null(tok);
    return tok;
}

/* Signs claims (consumed) and returns what verification says. */
static enum ts_rc sign_verify(struct ts_keyring *kr, json_t *claims, struct ts_principal *p)
{
    char *tok = sign(kr, claims);
    json_decref(claims);
    struct ts_principal tmp;
    enum ts_rc rc = ts_keyring_verify(kr, tok, strlen(tok), p ? p : &tmp);
    free(tok);
    return rc;
}

/* The protected header of a compact JWS (new reference). */
static json_t *token_header(const char *tok)
{
    const char *dot = strchr(tok, '.');
    assert_non_null(dot);
    size_t n = (size_t)(dot - tok);
    uint8_t *raw = ts_xmalloc(ts_b64url_decoded_max(n) + 1);
    size_t len = 0;
    assert_int_equal(ts_b64url_decode(tok, n, raw, &len), TS_OK);
    json_t *h = json_loadb((const char *)raw, len, 0, NULL);
    free(raw);
    assert_non_null(h);
    return h;
}

/* The kid of a token's header (heap), or NULL. */
static char *token_kid(const char *tok)
{
    json_t *h = token_header(tok);
    const char *kid = json_string_value(json_object_get(h, "kid"));
    char *out = kid ? ts_xstrdup(kid) : NULL;
    json_decref(h);
    return out;
}

/* Number of keys in the JWKS; true in *has_kid when one of them carries kid. */
static size_t jwks_count(struct ts_keyring *kr, const char *kid, bool *has_kid)
{
    char *s = ts_keyring_jwks(kr);
    json_t *j = json_loads(s, JSON_REJECT_DUPLICATES, NULL);
    free(s);
    assert_non_null(j);
    json_t *keys = json_object_get(j, "keys");
    assert_true(json_is_array(keys));
    size_t n = json_array_size(keys);
    if (has_kid)
        *has_kid = false;
    for (size_t i = 0; i < n; i++) {
        const char *k = json_string_value(json_object_get(json_array_get(keys, i), "kid"));
        if (kid && k && strcmp(k, kid) == 0 && has_kid)
            *has_kid = true;
    }
    json_decref(j);
    return n;
}

static void new_ids(char sub[TS_UUID_STR_LEN + 1], char sid[TS_UUID_STR_LEN + 1])
{
    ts_uuid_v4(sub);
    ts_uuid_v4(sid);
}

/* ---- keyring ---- */

static void test_keyring_open_creates_keys(void **state)
{
    struct kfix *f = *state;
    struct ts_keys_config cfg = keys_cfg();
    struct ts_keyring *kr = NULL;
    bool created = false;
    assert_int_equal(ts_keyring_open(f->st, &cfg, &kr, &created), TS_OK);
    assert_true(created);
    struct ts_signing_key_row *rows = NULL;
    size_t n = 0;
    assert_int_equal(ts_store_signing_keys_list(f->st, &rows, &n), TS_OK);
    assert_int_equal(n, 2);
    int active = 0, next = 0;
    for (size_t i = 0; i < n; i++) {
        active += rows[i].state == TS_KEY_ACTIVE;
        next += rows[i].state == TS_KEY_NEXT;
        assert_string_equal(rows[i].alg, "ES256");
    }
    assert_int_equal(active, 1);
    assert_int_equal(next, 1);
    ts_signing_key_rows_free(rows, n);

    /* A second open finds the keys. */
    struct ts_keyring *kr2 = NULL;
    created = true;
    assert_int_equal(ts_keyring_open(f->st, &cfg, &kr2, &created), TS_OK);
    assert_false(created);
    assert_int_equal(ts_store_signing_keys_list(f->st, &rows, &n), TS_OK);
    assert_int_equal(n, 2);
    ts_signing_key_rows_free(rows, n);
    /* out_created may be NULL. */
    struct ts_keyring *kr3 = NULL;
    assert_int_equal(ts_keyring_open(f->st, &cfg, &kr3, NULL), TS_OK);

    /* Both keyrings sign with the same key, so each verifies the other's tokens. */
    char sub[37], sid[37];
    new_ids(sub, sid);
    json_t *c = user_claims(sub, sid);
    char *tok = sign(kr, c);
    json_decref(c);
    struct ts_principal p;
    assert_int_equal(ts_keyring_verify(kr2, tok, strlen(tok), &p), TS_OK);
    assert_string_equal(p.sub, sub);
    free(tok);
    ts_keyring_free(kr);
    ts_keyring_free(kr2);
    ts_keyring_free(kr3);
}

static void test_keyring_sign_verify(void **state)
{
    struct kfix *f = *state;
    struct ts_keys_config cfg = keys_cfg();
    struct ts_keyring *kr = NULL;
    assert_int_equal(ts_keyring_open(f->st, &cfg, &kr, NULL), TS_OK);
    char sub[37], sid[37];
    new_ids(sub, sid);
    json_t *c = user_claims(sub, sid);
    int64_t exp = (int64_t)json_integer_value(json_object_get(c, "exp"));
    char *tok = sign(kr, c);
    json_decref(c);

    json_t *h = token_header(tok);
    assert_string_equal(json_string_value(json_object_get(h, "alg")), "ES256");
    assert_true(json_is_string(json_object_get(h, "kid")));
    json_decref(h);

    struct ts_principal p;
    memset(&p, 0x55, sizeof(p));
    assert_int_equal(ts_keyring_verify(kr, tok, strlen(tok), &p), TS_OK);
    assert_string_equal(p.sub, sub);
    assert_string_equal(p.session_id, sid);
    assert_string_equal(p.role, "authenticated");
    assert_false(p.is_anonymous);
    assert_int_equal(p.exp, exp);

    /* Again, from the cache: the same principal, and the cache counted a hit. */
    struct ts_tokencache_stats cs0, cs1;
    ts_keyring_cache_stats(kr, &cs0);
    struct ts_principal p2;
    assert_int_equal(ts_keyring_verify(kr, tok, strlen(tok), &p2), TS_OK);
    assert_memory_equal(&p, &p2, sizeof(p));
    ts_keyring_cache_stats(kr, &cs1);
    assert_int_equal(cs1.hits, cs0.hits + 1);
    assert_true(cs1.entries >= 1);

    /* A token verified with a length that cuts it short is refused. */
    assert_int_equal(ts_keyring_verify(kr, tok, strlen(tok) - 1, &p2), TS_E_BAD_TOKEN);

    /* Anonymous users carry is_anonymous. */
    new_ids(sub, sid);
    c = user_claims(sub, sid);
    json_object_set_new(c, "is_anonymous", json_true());
    assert_int_equal(sign_verify(kr, c, &p), TS_OK);
    assert_true(p.is_anonymous);

    /* aud as an array that holds ours. */
    c = user_claims(sub, sid);
    json_object_set_new(c, "aud", json_pack("[s,s]", "other", AUDIENCE));
    assert_int_equal(sign_verify(kr, c, &p), TS_OK);

    free(tok);
    ts_keyring_free(kr);
}

static void test_keyring_expired(void **state)
{
    struct kfix *f = *state;
    struct ts_keys_config cfg = keys_cfg();
    struct ts_keyring *kr = NULL;
    assert_int_equal(ts_keyring_open(f->st, &cfg, &kr, NULL), TS_OK);
    char sub[37], sid[37];
    new_ids(sub, sid);
    int64_t now = ts_now_s();
    json_t *c = user_claims(sub, sid);
    json_object_set_new(c, "iat", json_integer(now - 7200));
    json_object_set_new(c, "exp", json_integer(now - 60));
    assert_int_equal(sign_verify(kr, c, NULL), TS_E_EXPIRED);
    /* Expiring exactly now is expired too (RFC 7519 §4.1.4: "on or after"). */
    c = user_claims(sub, sid);
    json_object_set_new(c, "exp", json_integer(now));
    assert_int_equal(sign_verify(kr, c, NULL), TS_E_EXPIRED);
    /* No exp at all: refused. */
    c = user_claims(sub, sid);
    json_object_del(c, "exp");
    assert_int_equal(sign_verify(kr, c, NULL), TS_E_BAD_TOKEN);
    /* An exp that is not a number. */
    c = user_claims(sub, sid);
    json_object_set_new(c, "exp", json_string("tomorrow"));
    assert_int_equal(sign_verify(kr, c, NULL), TS_E_BAD_TOKEN);
    ts_keyring_free(kr);
}

static void test_keyring_wrong_iss(void **state)
{
    struct kfix *f = *state;
    struct ts_keys_config cfg = keys_cfg();
    struct ts_keyring *kr = NULL;
    assert_int_equal(ts_keyring_open(f->st, &cfg, &kr, NULL), TS_OK);
    char sub[37], sid[37];
    new_ids(sub, sid);
    json_t *c = user_claims(sub, sid);
    json_object_set_new(c, "iss", json_string("someone-else"));
    assert_int_equal(sign_verify(kr, c, NULL), TS_E_BAD_TOKEN);
    c = user_claims(sub, sid);
    json_object_set_new(c, "iss", json_string(ISSUER "x"));
    assert_int_equal(sign_verify(kr, c, NULL), TS_E_BAD_TOKEN);
    c = user_claims(sub, sid);
    json_object_del(c, "iss");
    assert_int_equal(sign_verify(kr, c, NULL), TS_E_BAD_TOKEN);

    /* A keyring with another issuer on the same keys refuses our tokens. */
    struct ts_keys_config other = keys_cfg();
    other.issuer = "other-issuer";
    struct ts_keyring *kr2 = NULL;
    assert_int_equal(ts_keyring_open(f->st, &other, &kr2, NULL), TS_OK);
    c = user_claims(sub, sid);
    char *tok = sign(kr, c);
    json_decref(c);
    struct ts_principal p;
    assert_int_equal(ts_keyring_verify(kr, tok, strlen(tok), &p), TS_OK);
    assert_int_equal(ts_keyring_verify(kr2, tok, strlen(tok), &p), TS_E_BAD_TOKEN);
    free(tok);
    ts_keyring_free(kr2);
    ts_keyring_free(kr);
}

static void test_keyring_user_token_aud(void **state)
{
    struct kfix *f = *state;
    struct ts_keys_config cfg = keys_cfg();
    struct ts_keyring *kr = NULL;
    assert_int_equal(ts_keyring_open(f->st, &cfg, &kr, NULL), TS_OK);
    char sub[37], sid[37];
    new_ids(sub, sid);
    json_t *c = user_claims(sub, sid);
    json_object_del(c, "aud");
    assert_int_equal(sign_verify(kr, c, NULL), TS_E_BAD_TOKEN);
    c = user_claims(sub, sid);
    json_object_set_new(c, "aud", json_string("another-app"));
    assert_int_equal(sign_verify(kr, c, NULL), TS_E_BAD_TOKEN);
    c = user_claims(sub, sid);
    json_object_set_new(c, "aud", json_pack("[s]", "another-app"));
    assert_int_equal(sign_verify(kr, c, NULL), TS_E_BAD_TOKEN);
    c = user_claims(sub, sid);
    json_object_set_new(c, "aud", json_integer(1));
    assert_int_equal(sign_verify(kr, c, NULL), TS_E_BAD_TOKEN);
    ts_keyring_free(kr);
}

static void test_keyring_session_required(void **state)
{
    struct kfix *f = *state;
    struct ts_keys_config cfg = keys_cfg();
    struct ts_keyring *kr = NULL;
    assert_int_equal(ts_keyring_open(f->st, &cfg, &kr, NULL), TS_OK);
    char sub[37], sid[37];
    new_ids(sub, sid);
    /* sub without session_id */
    json_t *c = user_claims(sub, sid);
    json_object_del(c, "session_id");
    assert_int_equal(sign_verify(kr, c, NULL), TS_E_BAD_TOKEN);
    /* session_id that is not a UUID */
    c = user_claims(sub, sid);
    json_object_set_new(c, "session_id", json_string("not-a-uuid"));
    assert_int_equal(sign_verify(kr, c, NULL), TS_E_BAD_TOKEN);
    /* empty session_id */
    c = user_claims(sub, sid);
    json_object_set_new(c, "session_id", json_string(""));
    assert_int_equal(sign_verify(kr, c, NULL), TS_E_BAD_TOKEN);
    /* sub that is not a UUID */
    c = user_claims(sub, sid);
    json_object_set_new(c, "sub", json_string("user-1"));
    assert_int_equal(sign_verify(kr, c, NULL), TS_E_BAD_TOKEN);
    /* a session_id without sub */
    c = user_claims(sub, sid);
    json_object_del(c, "sub");
    assert_int_equal(sign_verify(kr, c, NULL), TS_E_BAD_TOKEN);
    /* no role */
    c = user_claims(sub, sid);
    json_object_del(c, "role");
    assert_int_equal(sign_verify(kr, c, NULL), TS_E_BAD_TOKEN);
    /* a role too long for the principal */
    c = user_claims(sub, sid);
    char role[100];
    memset(role, 'r', sizeof(role) - 1);
    role[sizeof(role) - 1] = '\0';
    json_object_set_new(c, "role", json_string(role));
    assert_int_equal(sign_verify(kr, c, NULL), TS_E_BAD_TOKEN);
    /* is_anonymous that is not a boolean */
    c = user_claims(sub, sid);
    json_object_set_new(c, "is_anonymous", json_string("true"));
    assert_int_equal(sign_verify(kr, c, NULL), TS_E_BAD_TOKEN);
    ts_keyring_free(kr);
}

static void test_keyring_tampered(void **state)
{
    struct kfix *f = *state;
    struct ts_keys_config cfg = keys_cfg();
    struct ts_keyring *kr = NULL;
    assert_int_equal(ts_keyring_open(f->st, &cfg, &kr, NULL), TS_OK);
    char sub[37], sid[37];
    new_ids(sub, sid);
    json_t *c = user_claims(sub, sid);
    char *tok = sign(kr, c);
    json_decref(c);
    struct ts_principal p;
    size_t n = strlen(tok);
    /* Change one character of the signature (not the last: its low bits may be padding). */
    tok[n - 5] = tok[n - 5] == 'A' ? 'B' : 'A';
    assert_int_equal(ts_keyring_verify(kr, tok, n, &p), TS_E_BAD_TOKEN);
    assert_int_equal(ts_keyring_verify(kr, "", 0, &p), TS_E_BAD_TOKEN);
    assert_int_equal(ts_keyring_verify(kr, "a.b.c", 5, &p), TS_E_BAD_TOKEN);
    assert_int_equal(ts_keyring_verify(kr, "not a token", 11, &p), TS_E_BAD_TOKEN);
    /* Oversized tokens are refused as bad tokens. */
    size_t big_n = 40000;
    char *big = ts_xmalloc(big_n + 1);
    memset(big, 'A', big_n);
    big[100] = '.';
    big[200] = '.';
    big[big_n] = '\0';
    assert_int_equal(ts_keyring_verify(kr, big, big_n, &p), TS_E_BAD_TOKEN);
    free(big);
    free(tok);
    ts_keyring_free(kr);
}

/* A compact JWS with the given header and payload JSON and the given signature text. */
static char *craft_token(const char *header, const char *payload, const char *sig)
{
    size_t hl = strlen(header), pl = strlen(payload);
    char *h = ts_xmalloc(ts_b64url_encoded_len(hl) + 1);
    char *p = ts_xmalloc(ts_b64url_encoded_len(pl) + 1);
    ts_b64url_encode((const uint8_t *)header, hl, h);
    ts_b64url_encode((const uint8_t *)payload, pl, p);
    char *t = ts_xasprintf("%s.%s.%s", h, p, sig);
    free(h);
    free(p);
    return t;
}

static void test_keyring_alg_confusion(void **state)
{
    struct kfix *f = *state;
    struct ts_keys_config cfg = keys_cfg();
    struct ts_keyring *kr = NULL;
    assert_int_equal(ts_keyring_open(f->st, &cfg, &kr, NULL), TS_OK);
    char sub[37], sid[37];
    new_ids(sub, sid);
    json_t *c = user_claims(sub, sid);
    char *good = sign(kr, c);
    char *kid = token_kid(good);
    assert_non_null(kid);
    char *payload = json_dumps(c, JSON_COMPACT);
    json_decref(c);
    struct ts_principal p;

    /* RFC 8725 §3.1: "none" is never accepted. */
    char *hdr = ts_xasprintf("{\"alg\":\"none\",\"kid\":\"%s\",\"typ\":\"JWT\"}", kid);
    char *none = craft_token(hdr, payload, "");
    assert_int_equal(ts_keyring_verify(kr, none, strlen(none), &p), TS_E_BAD_TOKEN);
    free(none);
    free(hdr);

    /* HS256 naming our ES256 key's kid, MACed with a guessable secret. */
    struct ts_jose_key *hk = NULL;
    assert_int_equal(
        ts_jose_key_new_hmac(TS_JOSE_ALG_HS256, (const uint8_t *)SECRET32, 32, kid, &hk), TS_OK);
    char *forged = NULL;
    assert_int_equal(ts_jws_sign(hk, payload, strlen(payload), &forged), TS_OK);
    assert_int_equal(ts_keyring_verify(kr, forged, strlen(forged), &p), TS_E_BAD_TOKEN);
    free(forged);
    ts_jose_key_free(hk);

    /* An ES256 key of our own with the same kid: the signature does not verify. */
    struct ts_jose_key *ek = NULL;
    assert_int_equal(ts_jose_key_generate(TS_JOSE_ALG_ES256, kid, &ek), TS_OK);
    assert_int_equal(ts_jws_sign(ek, payload, strlen(payload), &forged), TS_OK);
    assert_int_equal(ts_keyring_verify(kr, forged, strlen(forged), &p), TS_E_BAD_TOKEN);
    free(forged);
    ts_jose_key_free(ek);

    /* An unknown kid. */
    assert_int_equal(ts_jose_key_generate(TS_JOSE_ALG_ES256, "unknown-kid", &ek), TS_OK);
    assert_int_equal(ts_jws_sign(ek, payload, strlen(payload), &forged), TS_OK);
    assert_int_equal(ts_keyring_verify(kr, forged, strlen(forged), &p), TS_E_BAD_TOKEN);
    free(forged);
    ts_jose_key_free(ek);

    /* No kid at all. */
    assert_int_equal(ts_jose_key_generate(TS_JOSE_ALG_ES256, NULL, &ek), TS_OK);
    assert_int_equal(ts_jws_sign(ek, payload, strlen(payload), &forged), TS_OK);
    assert_int_equal(ts_keyring_verify(kr, forged, strlen(forged), &p), TS_E_BAD_TOKEN);
    free(forged);
    ts_jose_key_free(ek);

    /* The genuine token still verifies. */
    assert_int_equal(ts_keyring_verify(kr, good, strlen(good), &p), TS_OK);
    free(good);
    free(kid);
    free(payload);
    ts_keyring_free(kr);
}

static void test_keyring_api_key(void **state)
{
    struct kfix *f = *state;
    struct ts_keys_config cfg = keys_cfg();
    struct ts_keyring *kr = NULL;
    assert_int_equal(ts_keyring_open(f->st, &cfg, &kr, NULL), TS_OK);
    int64_t iat = ts_now_s();
    char *anon = NULL, *service = NULL;
    assert_int_equal(ts_keyring_mint_api_key(kr, "anon", iat, &anon), TS_OK);
    assert_int_equal(ts_keyring_mint_api_key(kr, "service_role", iat, &service), TS_OK);
    struct ts_principal p;
    memset(&p, 0x41, sizeof(p));
    assert_int_equal(ts_keyring_verify(kr, anon, strlen(anon), &p), TS_OK);
    assert_string_equal(p.sub, "");
    assert_string_equal(p.session_id, "");
    assert_string_equal(p.role, "anon");
    assert_false(p.is_anonymous);
    assert_int_equal(p.exp, iat + 10LL * 365 * 24 * 3600);
    assert_int_equal(ts_keyring_verify(kr, service, strlen(service), &p), TS_OK);
    assert_string_equal(p.sub, "");
    assert_string_equal(p.role, "service_role");
    /* An API key minted ten years and a day ago has expired. */
    char *old = NULL;
    assert_int_equal(ts_keyring_mint_api_key(kr, "anon", iat - 10LL * 366 * 24 * 3600, &old),
                     TS_OK);
    assert_int_equal(ts_keyring_verify(kr, old, strlen(old), &p), TS_E_EXPIRED);
    free(old);
    free(anon);
    free(service);
    ts_keyring_free(kr);
}

static void test_keyring_jwks(void **state)
{
    struct kfix *f = *state;
    struct ts_keys_config cfg = keys_cfg();
    struct ts_keyring *kr = NULL;
    assert_int_equal(ts_keyring_open(f->st, &cfg, &kr, NULL), TS_OK);
    char *s = ts_keyring_jwks(kr);
    json_t *j = json_loads(s, JSON_REJECT_DUPLICATES, NULL);
    assert_non_null(j);
    free(s);
    json_t *keys = json_object_get(j, "keys");
    assert_true(json_is_array(keys));
    assert_int_equal(json_array_size(keys), 2); /* active and next */
    const char *kids[2];
    for (size_t i = 0; i < 2; i++) {
        json_t *k = json_array_get(keys, i);
        kids[i] = json_string_value(json_object_get(k, "kid"));
        assert_non_null(kids[i]);
        assert_true(kids[i][0] != '\0');
        assert_string_equal(json_string_value(json_object_get(k, "kty")), "EC");
        assert_string_equal(json_string_value(json_object_get(k, "crv")), "P-256");
        assert_string_equal(json_string_value(json_object_get(k, "alg")), "ES256");
        assert_non_null(json_object_get(k, "x"));
        assert_non_null(json_object_get(k, "y"));
        /* Never the private part. */
        assert_null(json_object_get(k, "d"));
    }
    assert_string_not_equal(kids[0], kids[1]);
    /* Tokens carry the kid of one of the published keys. */
    char sub[37], sid[37];
    new_ids(sub, sid);
    json_t *c = user_claims(sub, sid);
    char *tok = sign(kr, c);
    json_decref(c);
    char *kid = token_kid(tok);
    assert_non_null(kid);
    assert_true(strcmp(kid, kids[0]) == 0 || strcmp(kid, kids[1]) == 0);
    free(kid);
    free(tok);
    json_decref(j);
    ts_keyring_free(kr);
}

static void test_keyring_rotation(void **state)
{
    struct kfix *f = *state;
    struct ts_keys_config cfg = keys_cfg();
    struct ts_keyring *kr = NULL;
    assert_int_equal(ts_keyring_open(f->st, &cfg, &kr, NULL), TS_OK);
    char sub[37], sid[37];
    new_ids(sub, sid);
    json_t *c = user_claims(sub, sid);
    char *before = sign(kr, c);                   /* verified before the rotation, so cached */
    char *before_cold = sign(kr, c);              /* never verified before the rotation */
    assert_string_not_equal(before, before_cold); /* ECDSA signatures are randomized */
    char *old_kid = token_kid(before);
    struct ts_principal p;
    assert_int_equal(ts_keyring_verify(kr, before, strlen(before), &p), TS_OK);

    char *new_kid = NULL;
    assert_int_equal(ts_keys_rotate(f->st, &cfg, &new_kid), TS_OK);
    assert_non_null(new_kid);
    assert_string_not_equal(new_kid, old_kid);
    /* The promoted key was the published "next" one. */
    bool has = false;
    jwks_count(kr, new_kid, &has);
    assert_true(has);

    assert_int_equal(ts_keyring_reload(kr), TS_OK);
    /* Retired, active and a fresh next key are published. */
    assert_int_equal(jwks_count(kr, old_kid, &has), 3);
    assert_true(has);
    jwks_count(kr, new_kid, &has);
    assert_true(has);

    /* Tokens signed before the rotation still verify (the retired key is kept). */
    assert_int_equal(ts_keyring_verify(kr, before, strlen(before), &p), TS_OK);
    assert_int_equal(ts_keyring_verify(kr, before_cold, strlen(before_cold), &p), TS_OK);
    assert_string_equal(p.sub, sub);

    /* New tokens carry the new kid. */
    char *after = sign(kr, c);
    char *after_kid = token_kid(after);
    assert_string_equal(after_kid, new_kid);
    assert_int_equal(ts_keyring_verify(kr, after, strlen(after), &p), TS_OK);

    /* A keyring opened afresh on the store agrees. */
    struct ts_keyring *kr2 = NULL;
    assert_int_equal(ts_keyring_open(f->st, &cfg, &kr2, NULL), TS_OK);
    assert_int_equal(ts_keyring_verify(kr2, after, strlen(after), &p), TS_OK);
    assert_int_equal(ts_keyring_verify(kr2, before_cold, strlen(before_cold), &p), TS_OK);

    /* A reload with nothing changed keeps working. */
    assert_int_equal(ts_keyring_reload(kr), TS_OK);
    assert_int_equal(ts_keyring_verify(kr, after, strlen(after), &p), TS_OK);

    struct ts_signing_key_row *rows = NULL;
    size_t n = 0;
    assert_int_equal(ts_store_signing_keys_list(f->st, &rows, &n), TS_OK);
    int active = 0, next = 0, retired = 0;
    for (size_t i = 0; i < n; i++) {
        active += rows[i].state == TS_KEY_ACTIVE;
        next += rows[i].state == TS_KEY_NEXT;
        retired += rows[i].state == TS_KEY_RETIRED;
    }
    assert_int_equal(active, 1);
    assert_int_equal(next, 1);
    assert_int_equal(retired, 1);
    ts_signing_key_rows_free(rows, n);

    json_decref(c);
    free(before);
    free(before_cold);
    free(after);
    free(old_kid);
    free(new_kid);
    free(after_kid);
    ts_keyring_free(kr2);
    ts_keyring_free(kr);
}

static void test_keyring_withdrawn_key(void **state)
{
    struct kfix *f = *state;
    /* retired_keep 0: a retired key stops verifying at the reload, cached tokens included. */
    struct ts_keys_config cfg = keys_cfg();
    cfg.retired_keep = 0;
    struct ts_keyring *kr = NULL;
    assert_int_equal(ts_keyring_open(f->st, &cfg, &kr, NULL), TS_OK);
    char sub[37], sid[37];
    new_ids(sub, sid);
    json_t *c = user_claims(sub, sid);
    char *before = sign(kr, c);
    char *old_kid = token_kid(before);
    struct ts_principal p;
    assert_int_equal(ts_keyring_verify(kr, before, strlen(before), &p), TS_OK);
    char *new_kid = NULL;
    assert_int_equal(ts_keys_rotate(f->st, &cfg, &new_kid), TS_OK);
    struct timespec ms = {0, 2000000}; /* so that "now" moves past the retirement time */
    nanosleep(&ms, NULL);
    assert_int_equal(ts_keyring_reload(kr), TS_OK);
    bool has = true;
    assert_int_equal(jwks_count(kr, old_kid, &has), 2);
    assert_false(has);
    assert_int_equal(ts_keyring_verify(kr, before, strlen(before), &p), TS_E_BAD_TOKEN);
    char *after = sign(kr, c);
    assert_int_equal(ts_keyring_verify(kr, after, strlen(after), &p), TS_OK);
    json_decref(c);
    free(before);
    free(after);
    free(old_kid);
    free(new_kid);
    ts_keyring_free(kr);
}

static void test_keyring_hs256(void **state)
{
    struct kfix *f = *state;
    struct ts_keys_config cfg = keys_cfg();
    cfg.hs256_secret = SECRET32 SECRET32; /* 64 bytes: long enough for HS512 too */
    struct ts_keyring *kr = NULL;
    bool created = true;
    assert_int_equal(ts_keyring_open(f->st, &cfg, &kr, &created), TS_OK);
    assert_false(created);
    /* Nothing is written to the store in HS256 mode. */
    struct ts_signing_key_row *rows = NULL;
    size_t n = 99;
    assert_int_equal(ts_store_signing_keys_list(f->st, &rows, &n), TS_OK);
    assert_int_equal(n, 0);
    ts_signing_key_rows_free(rows, n);

    /* gotrue-api.md §3: symmetric keys are never published. */
    char *jwks = ts_keyring_jwks(kr);
    assert_string_equal(jwks, "{\"keys\":[]}");
    free(jwks);

    char sub[37], sid[37];
    new_ids(sub, sid);
    json_t *c = user_claims(sub, sid);
    char *tok = sign(kr, c);
    json_t *h = token_header(tok);
    assert_string_equal(json_string_value(json_object_get(h, "alg")), "HS256");
    json_decref(h);
    struct ts_principal p;
    assert_int_equal(ts_keyring_verify(kr, tok, strlen(tok), &p), TS_OK);
    assert_string_equal(p.sub, sub);
    char *api = NULL;
    assert_int_equal(ts_keyring_mint_api_key(kr, "anon", ts_now_s(), &api), TS_OK);
    assert_int_equal(ts_keyring_verify(kr, api, strlen(api), &p), TS_OK);
    assert_string_equal(p.role, "anon");
    free(api);

    char *payload = json_dumps(c, JSON_COMPACT);
    /* ES256 tokens are refused, with or without a kid. */
    struct ts_jose_key *ek = NULL;
    char *es = NULL;
    assert_int_equal(ts_jose_key_generate(TS_JOSE_ALG_ES256, NULL, &ek), TS_OK);
    assert_int_equal(ts_jws_sign(ek, payload, strlen(payload), &es), TS_OK);
    assert_int_equal(ts_keyring_verify(kr, es, strlen(es), &p), TS_E_BAD_TOKEN);
    free(es);
    ts_jose_key_free(ek);
    assert_int_equal(ts_jose_key_generate(TS_JOSE_ALG_ES256, "some-kid", &ek), TS_OK);
    assert_int_equal(ts_jws_sign(ek, payload, strlen(payload), &es), TS_OK);
    assert_int_equal(ts_keyring_verify(kr, es, strlen(es), &p), TS_E_BAD_TOKEN);
    free(es);
    ts_jose_key_free(ek);

    /* An ES256 keyring's token (a real key with a real kid) is refused too. */
    struct ts_keys_config es_cfg = keys_cfg();
    struct ts_keyring *es_kr = NULL;
    assert_int_equal(ts_keyring_open(f->st, &es_cfg, &es_kr, NULL), TS_OK);
    char *es_tok = sign(es_kr, c);
    assert_int_equal(ts_keyring_verify(kr, es_tok, strlen(es_tok), &p), TS_E_BAD_TOKEN);
    /* And the ES256 keyring refuses the HS256 token. */
    assert_int_equal(ts_keyring_verify(es_kr, tok, strlen(tok), &p), TS_E_BAD_TOKEN);
    free(es_tok);
    ts_keyring_free(es_kr);

    /* Another secret: refused. HS512 with our secret: refused (algorithm pinned). */
    struct ts_jose_key *hk = NULL;
    char *other = NULL;
    assert_int_equal(ts_jose_key_new_hmac(TS_JOSE_ALG_HS256,
                                          (const uint8_t *)"ffffffffffffffffffffffffffffffff", 32,
                                          NULL, &hk),
                     TS_OK);
    assert_int_equal(ts_jws_sign(hk, payload, strlen(payload), &other), TS_OK);
    assert_int_equal(ts_keyring_verify(kr, other, strlen(other), &p), TS_E_BAD_TOKEN);
    free(other);
    ts_jose_key_free(hk);
    const char *secret = cfg.hs256_secret;
    assert_int_equal(
        ts_jose_key_new_hmac(TS_JOSE_ALG_HS512, (const uint8_t *)secret, strlen(secret), NULL, &hk),
        TS_OK);
    assert_int_equal(ts_jws_sign(hk, payload, strlen(payload), &other), TS_OK);
    assert_int_equal(ts_keyring_verify(kr, other, strlen(other), &p), TS_E_BAD_TOKEN);
    free(other);
    ts_jose_key_free(hk);

    /* Rotation is for database keys only. */
    char *kid = NULL;
    assert_int_equal(ts_keys_rotate(f->st, &cfg, &kid), TS_E_INVALID);
    assert_null(kid);
    assert_int_equal(ts_keyring_reload(kr), TS_OK);
    assert_int_equal(ts_keyring_verify(kr, tok, strlen(tok), &p), TS_OK);

    free(payload);
    json_decref(c);
    free(tok);
    ts_keyring_free(kr);
}

/* ---- refresh tokens ---- */

static void test_refresh_token_new(void **state)
{
    (void)state;
    char prev[TS_REFRESH_TOKEN_LEN + 1] = "";
    for (int i = 0; i < 200; i++) {
        char tok[TS_REFRESH_TOKEN_LEN + 1];
        uint8_t hash[TS_REFRESH_HASH_LEN];
        memset(tok, '!', sizeof(tok));
        ts_refresh_token_new(tok, hash);
        assert_int_equal(strlen(tok), TS_REFRESH_TOKEN_LEN);
        for (size_t k = 0; k < TS_REFRESH_TOKEN_LEN; k++) {
            char ch = tok[k];
            bool ok = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
                      (ch >= '0' && ch <= '9') || ch == '-' || ch == '_';
            if (!ok)
                fail_msg("refresh token %s has '%c' outside base64url", tok, ch);
        }
        uint8_t want[SHA256_DIGEST_LENGTH];
        SHA256((const unsigned char *)tok, TS_REFRESH_TOKEN_LEN, want);
        assert_memory_equal(hash, want, TS_REFRESH_HASH_LEN);
        uint8_t again[TS_REFRESH_HASH_LEN];
        ts_refresh_token_hash(tok, strlen(tok), again);
        assert_memory_equal(again, want, TS_REFRESH_HASH_LEN);
        /* 24 random bytes decode back from the text. */
        uint8_t raw[TS_REFRESH_TOKEN_LEN];
        size_t raw_len = 0;
        assert_int_equal(ts_b64url_decode(tok, TS_REFRESH_TOKEN_LEN, raw, &raw_len), TS_OK);
        assert_int_equal(raw_len, TS_REFRESH_TOKEN_BYTES);
        assert_string_not_equal(tok, prev);
        memcpy(prev, tok, sizeof(tok));
    }
}

static void test_sha256_vectors(void **state)
{
    (void)state;
    /* FIPS 180-2 appendix B.1 and the empty string. */
    static const uint8_t abc[32] = {0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea,
                                    0x41, 0x41, 0x40, 0xde, 0x5d, 0xae, 0x22, 0x23,
                                    0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17, 0x7a, 0x9c,
                                    0xb4, 0x10, 0xff, 0x61, 0xf2, 0x00, 0x15, 0xad};
    static const uint8_t empty[32] = {0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14,
                                      0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
                                      0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c,
                                      0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55};
    uint8_t out[32];
    ts_sha256("abc", 3, out);
    assert_memory_equal(out, abc, 32);
    ts_refresh_token_hash("abc", 3, out);
    assert_memory_equal(out, abc, 32);
    ts_sha256("", 0, out);
    assert_memory_equal(out, empty, 32);
}

int main(void)
{
    ts_log_set_level(TS_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_password_hash_verify),
        cmocka_unit_test(test_password_embedded_nul),
        cmocka_unit_test(test_password_needs_rehash),
        cmocka_unit_test(test_password_bcrypt_2b),
        cmocka_unit_test(test_password_bcrypt_2a_2y),
        cmocka_unit_test(test_password_garbage_hash),
        cmocka_unit_test(test_password_hash_format_ok),
        cmocka_unit_test(test_pool_create_verify),
        cmocka_unit_test(test_pool_verify_null_hash),
        cmocka_unit_test(test_pool_verify_rehash),
        cmocka_unit_test(test_pool_change),
        cmocka_unit_test(test_pool_backpressure),
        cmocka_unit_test(test_pool_backpressure_two_workers),
        cmocka_unit_test(test_pool_free_drains),
        cmocka_unit_test(test_pool_stats),
        cmocka_unit_test_setup_teardown(test_keyring_open_creates_keys, kfix_setup, kfix_teardown),
        cmocka_unit_test_setup_teardown(test_keyring_sign_verify, kfix_setup, kfix_teardown),
        cmocka_unit_test_setup_teardown(test_keyring_expired, kfix_setup, kfix_teardown),
        cmocka_unit_test_setup_teardown(test_keyring_wrong_iss, kfix_setup, kfix_teardown),
        cmocka_unit_test_setup_teardown(test_keyring_user_token_aud, kfix_setup, kfix_teardown),
        cmocka_unit_test_setup_teardown(test_keyring_session_required, kfix_setup, kfix_teardown),
        cmocka_unit_test_setup_teardown(test_keyring_tampered, kfix_setup, kfix_teardown),
        cmocka_unit_test_setup_teardown(test_keyring_alg_confusion, kfix_setup, kfix_teardown),
        cmocka_unit_test_setup_teardown(test_keyring_api_key, kfix_setup, kfix_teardown),
        cmocka_unit_test_setup_teardown(test_keyring_jwks, kfix_setup, kfix_teardown),
        cmocka_unit_test_setup_teardown(test_keyring_rotation, kfix_setup, kfix_teardown),
        cmocka_unit_test_setup_teardown(test_keyring_withdrawn_key, kfix_setup, kfix_teardown),
        cmocka_unit_test_setup_teardown(test_keyring_hs256, kfix_setup, kfix_teardown),
        cmocka_unit_test(test_refresh_token_new),
        cmocka_unit_test(test_sha256_vectors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

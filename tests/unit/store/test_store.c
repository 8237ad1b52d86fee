/*
 * test_store.c - unit tests of the store interface (store.h), each test on a fresh database:
 * a file in a temporary directory (SQLite), and, when TESSERA_TEST_PG_HOST (and
 * TESSERA_TEST_PG_PORT) name a PostgreSQL server (scripts/pg.sh starts a throwaway one), the
 * whole group again with a database per test there, made with createdb and dropped after.
 *
 * Covers migrations, meta facts, users (create, read, update, delete, list, uniqueness),
 * password credentials, sessions, the refresh-token state machine, signing keys, durability
 * across a close and reopen, concurrent writers (distinct e-mails all succeed, one e-mail is
 * won exactly once), and the counter store (token buckets, windowed counters with
 * reservations, sweeping, argument checks, and races between threads of two "nodes": two
 * stores open on one database). Times are passed in explicitly, so nothing depends on the
 * clock.
 */
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "store/store.h"

/* A fixed "now": 2023-11-14T22:13:20Z in microseconds. */
#define T0 INT64_C(1700000000000000)
#define SEC INT64_C(1000000)

#include "store_fixture.h"

/* ---- helpers ---- */

/* A new user with a fresh id; email and phone may be NULL. */
static struct ts_user *new_user(const char *email, const char *phone, int64_t created_at)
{
    struct ts_user *u = ts_user_new();
    ts_uuid_v4(u->id);
    u->aud = ts_xstrdup("authenticated");
    u->role = ts_xstrdup("authenticated");
    u->email = email ? ts_xstrdup(email) : NULL;
    u->phone = phone ? ts_xstrdup(phone) : NULL;
    u->created_at = created_at;
    u->updated_at = created_at;
    return u;
}

/* Creates a user and returns it (the caller frees it). */
static struct ts_user *create_user(struct ts_store *st, const char *email, const char *hash,
                                   int64_t created_at)
{
    struct ts_user *u = new_user(email, NULL, created_at);
    assert_int_equal(ts_store_user_create(st, u, hash), TS_OK);
    return u;
}

static void fill_hash(uint8_t h[TS_REFRESH_HASH_LEN], int tag)
{
    memset(h, 0, TS_REFRESH_HASH_LEN);
    h[0] = 0xa5;
    h[1] = (uint8_t)(tag >> 8);
    h[2] = (uint8_t)tag;
    h[31] = 0x5a;
}

/* Creates a session for user_id whose first refresh token hashes to fill_hash(tag). */
static void create_session(struct ts_store *st, const char *user_id, int tag, int64_t now,
                           char sid[TS_STORE_ID_LEN + 1])
{
    struct ts_session_new s = {.user_id = user_id,
                               .aal = "aal1",
                               .amr_json = "[{\"method\":\"password\",\"timestamp\":1700000000}]",
                               .ip = "192.0.2.1",
                               .user_agent = "test/1.0",
                               .now = now};
    fill_hash(s.refresh_hash, tag);
    assert_int_equal(ts_store_session_create(st, &s, sid), TS_OK);
    assert_true(ts_uuid_valid(sid));
}

static bool session_alive(struct ts_store *st, const char *sid, const char *uid)
{
    struct ts_user *u = NULL;
    enum ts_rc rc = ts_store_session_user(st, sid, uid, &u);
    assert_true(rc == TS_OK || rc == TS_E_NOT_FOUND);
    ts_user_free(u);
    return rc == TS_OK;
}

static enum ts_refresh_outcome rotate(struct ts_store *st, int presented, int next, int64_t now,
                                      int64_t reuse_interval, bool rotation_enabled,
                                      struct ts_refresh_result *out)
{
    struct ts_refresh_request req = {.now = now,
                                     .reuse_interval = reuse_interval,
                                     .rotation_enabled = rotation_enabled,
                                     .ip = "198.51.100.7",
                                     .user_agent = NULL};
    fill_hash(req.presented, presented);
    fill_hash(req.next, next);
    struct ts_refresh_result tmp;
    struct ts_refresh_result *res = out ? out : &tmp;
    memset(res, 0, sizeof(*res));
    assert_int_equal(ts_store_refresh_rotate(st, &req, res), TS_OK);
    return res->outcome;
}

/* ---- migrations and meta ---- */

static void test_migrate_twice(void **state)
{
    struct fix *f = *state;
    int cur = -1, latest = -1;
    assert_int_equal(ts_store_schema_version(f->st, &cur, &latest), TS_OK);
    assert_true(latest >= 1);
    assert_int_equal(cur, latest);
    int applied = -1;
    char *err = NULL;
    assert_int_equal(ts_store_migrate(f->st, &applied, &err), TS_OK);
    assert_int_equal(applied, 0);
    assert_null(err);
    assert_int_equal(ts_store_migrate(f->st, NULL, &err), TS_OK); /* applied may be NULL */
    assert_int_equal(ts_store_schema_version(f->st, &cur, &latest), TS_OK);
    assert_int_equal(cur, latest);
    assert_int_equal(ts_store_ping(f->st), TS_OK);

    /* A brand-new file applies every migration. */
    char url[512];
    new_database(f, "fresh.db", url, sizeof(url));
    struct ts_store *st = NULL;
    assert_int_equal(ts_store_open(url, NULL, &st, &err), TS_OK);
    assert_int_equal(ts_store_migrate(st, &applied, &err), TS_OK);
    assert_int_equal(applied, latest);
    assert_int_equal(ts_store_migrate(st, &applied, &err), TS_OK);
    assert_int_equal(applied, 0);
    ts_store_close(st);
}

static void test_open_bad_urls(void **state)
{
    (void)state;
    struct ts_store *st = NULL;
    char *err = NULL;
    assert_int_equal(ts_store_open("mysql://localhost/db", NULL, &st, &err), TS_E_INVALID);
    assert_non_null(err);
    assert_null(st);
    free(err);
    err = NULL;
    assert_int_equal(ts_store_open("sqlite://", NULL, &st, &err), TS_E_INVALID);
    assert_non_null(err);
    free(err);
    err = NULL;
    assert_int_not_equal(
        ts_store_open("sqlite:///nonexistent-dir-for-tessera/x/y.db", NULL, &st, &err), TS_OK);
    assert_null(st);
    free(err);
}

static void test_meta(void **state)
{
    struct fix *f = *state;
    static char untouched[] = "untouched";
    char *v = untouched;
    assert_int_equal(ts_store_meta_get(f->st, "api_keys_minted_at", &v), TS_E_NOT_FOUND);
    assert_string_equal(v, "untouched");
    assert_int_equal(ts_store_meta_insert(f->st, "api_keys_minted_at", "1700000000"), TS_OK);
    assert_int_equal(ts_store_meta_get(f->st, "api_keys_minted_at", &v), TS_OK);
    assert_string_equal(v, "1700000000");
    free(v);
    assert_int_equal(ts_store_meta_insert(f->st, "api_keys_minted_at", "other"), TS_E_CONFLICT);
    assert_int_equal(ts_store_meta_get(f->st, "api_keys_minted_at", &v), TS_OK);
    assert_string_equal(v, "1700000000");
    free(v);
    assert_int_equal(ts_store_meta_insert(f->st, "second", ""), TS_OK);
    assert_int_equal(ts_store_meta_get(f->st, "second", &v), TS_OK);
    assert_string_equal(v, "");
    free(v);
}

/* ---- users ---- */

static void test_user_create_get(void **state)
{
    struct fix *f = *state;
    struct ts_user *u = new_user("alice@example.com", "+15550001", T0);
    u->email_confirmed_at = T0 + 1;
    u->confirmation_sent_at = T0 + 2;
    u->banned_until = T0 + 3;
    json_object_set_new(u->user_metadata, "name", json_string("Alice"));
    json_object_set_new(u->app_metadata, "provider", json_string("email"));
    json_object_set_new(u->app_metadata, "providers", json_pack("[s]", "email"));
    assert_int_equal(ts_store_user_create(f->st, u, NULL), TS_OK);

    struct ts_user *g = NULL;
    assert_int_equal(ts_store_user_get(f->st, u->id, &g), TS_OK);
    assert_string_equal(g->id, u->id);
    assert_string_equal(g->aud, "authenticated");
    assert_string_equal(g->role, "authenticated");
    assert_string_equal(g->email, "alice@example.com");
    assert_string_equal(g->phone, "+15550001");
    assert_int_equal(g->email_confirmed_at, T0 + 1);
    assert_int_equal(g->confirmation_sent_at, T0 + 2);
    assert_int_equal(g->banned_until, T0 + 3);
    assert_int_equal(g->phone_confirmed_at, 0); /* not set */
    assert_int_equal(g->invited_at, 0);
    assert_int_equal(g->last_sign_in_at, 0);
    assert_int_equal(g->deleted_at, 0);
    assert_int_equal(g->created_at, T0);
    assert_int_equal(g->updated_at, T0);
    assert_true(json_equal(g->user_metadata, u->user_metadata));
    assert_true(json_equal(g->app_metadata, u->app_metadata));
    assert_false(g->is_anonymous);
    assert_false(g->has_password);
    ts_user_free(g);

    /* An anonymous user with no e-mail or phone. */
    struct ts_user *anon = new_user(NULL, NULL, T0 + 10);
    anon->is_anonymous = true;
    assert_int_equal(ts_store_user_create(f->st, anon, NULL), TS_OK);
    assert_int_equal(ts_store_user_get(f->st, anon->id, &g), TS_OK);
    assert_null(g->email);
    assert_null(g->phone);
    assert_true(g->is_anonymous);
    assert_true(json_is_object(g->user_metadata));
    assert_int_equal(json_object_size(g->user_metadata), 0);
    ts_user_free(g);

    /* Unknown ids */
    char id[TS_UUID_STR_LEN + 1];
    ts_uuid_v4(id);
    g = NULL;
    assert_int_equal(ts_store_user_get(f->st, id, &g), TS_E_NOT_FOUND);
    assert_null(g);
    ts_user_free(u);
    ts_user_free(anon);
}

static void test_user_get_by_email(void **state)
{
    struct fix *f = *state;
    struct ts_user *with = create_user(f->st, "with@example.com", "$argon2id$fakehash", T0);
    struct ts_user *without = create_user(f->st, "without@example.com", NULL, T0 + 1);

    static char sentinel[] = "sentinel";
    struct ts_user *g = NULL;
    char *hash = sentinel;
    assert_int_equal(ts_store_user_get_by_email(f->st, "with@example.com", &g, &hash), TS_OK);
    assert_string_equal(g->id, with->id);
    assert_true(g->has_password);
    assert_non_null(hash);
    assert_string_equal(hash, "$argon2id$fakehash");
    free(hash);
    ts_user_free(g);

    hash = sentinel;
    assert_int_equal(ts_store_user_get_by_email(f->st, "without@example.com", &g, &hash), TS_OK);
    assert_string_equal(g->id, without->id);
    assert_false(g->has_password);
    assert_null(hash);
    ts_user_free(g);

    /* The hash output is optional. */
    assert_int_equal(ts_store_user_get_by_email(f->st, "with@example.com", &g, NULL), TS_OK);
    assert_true(g->has_password);
    ts_user_free(g);

    /* Exact match only: callers lower-case first. */
    g = NULL;
    hash = sentinel;
    assert_int_equal(ts_store_user_get_by_email(f->st, "WITH@example.com", &g, &hash),
                     TS_E_NOT_FOUND);
    assert_int_equal(ts_store_user_get_by_email(f->st, "nobody@example.com", &g, &hash),
                     TS_E_NOT_FOUND);
    assert_null(g);
    assert_ptr_equal(hash, sentinel); /* store.h: outputs are untouched on error */

    /* The password credential as such. */
    assert_int_equal(ts_store_password_get(f->st, with->id, &hash), TS_OK);
    assert_string_equal(hash, "$argon2id$fakehash");
    free(hash);
    hash = sentinel;
    assert_int_equal(ts_store_password_get(f->st, without->id, &hash), TS_E_NOT_FOUND);
    assert_ptr_equal(hash, sentinel); /* store.h: outputs are untouched on error */
    ts_user_free(with);
    ts_user_free(without);
}

static void test_user_uniqueness(void **state)
{
    struct fix *f = *state;
    struct ts_user *a = new_user("taken@example.com", "+15550002", T0);
    assert_int_equal(ts_store_user_create(f->st, a, "hash-a"), TS_OK);

    /* Same e-mail, other id: conflict, and nothing of it is written (no password either). */
    struct ts_user *b = new_user("taken@example.com", NULL, T0 + 1);
    assert_int_equal(ts_store_user_create(f->st, b, "hash-b"), TS_E_CONFLICT);
    struct ts_user *g = NULL;
    assert_int_equal(ts_store_user_get(f->st, b->id, &g), TS_E_NOT_FOUND);
    char *hash = NULL;
    assert_int_equal(ts_store_password_get(f->st, b->id, &hash), TS_E_NOT_FOUND);

    /* Same phone. */
    struct ts_user *c = new_user("c@example.com", "+15550002", T0 + 2);
    assert_int_equal(ts_store_user_create(f->st, c, NULL), TS_E_CONFLICT);

    /* Same id. */
    struct ts_user *d = new_user("d@example.com", NULL, T0 + 3);
    memcpy(d->id, a->id, sizeof(d->id));
    assert_int_equal(ts_store_user_create(f->st, d, NULL), TS_E_CONFLICT);

    /* Several users without e-mail or phone are fine. */
    for (int i = 0; i < 3; i++) {
        struct ts_user *n = new_user(NULL, NULL, T0 + 10 + i);
        assert_int_equal(ts_store_user_create(f->st, n, NULL), TS_OK);
        ts_user_free(n);
    }
    /* The original is untouched. */
    assert_int_equal(ts_store_user_get_by_email(f->st, "taken@example.com", &g, &hash), TS_OK);
    assert_string_equal(g->id, a->id);
    assert_string_equal(hash, "hash-a");
    free(hash);
    ts_user_free(g);
    ts_user_free(a);
    ts_user_free(b);
    ts_user_free(c);
    ts_user_free(d);
}

static void test_user_update(void **state)
{
    struct fix *f = *state;
    struct ts_user *u = create_user(f->st, "old@example.com", NULL, T0);
    struct ts_user *other = create_user(f->st, "other@example.com", NULL, T0 + 1);

    free(u->email);
    u->email = ts_xstrdup("new@example.com");
    u->phone = ts_xstrdup("+15550003");
    free(u->role);
    u->role = ts_xstrdup("admin");
    u->email_confirmed_at = T0 + 5;
    u->banned_until = T0 + 99;
    u->updated_at = T0 + 7;
    u->created_at = T0 + 1000; /* must be ignored: created_at never changes */
    json_object_set_new(u->user_metadata, "k", json_integer(42));
    /* Compare-and-swap: a copy read before another write is refused as stale. */
    assert_int_equal(ts_store_user_update(f->st, u, T0 - 1), TS_E_STALE);
    assert_int_equal(ts_store_user_update(f->st, u, T0), TS_OK);

    struct ts_user *g = NULL;
    assert_int_equal(ts_store_user_get(f->st, u->id, &g), TS_OK);
    assert_string_equal(g->email, "new@example.com");
    assert_string_equal(g->phone, "+15550003");
    assert_string_equal(g->role, "admin");
    assert_int_equal(g->email_confirmed_at, T0 + 5);
    assert_int_equal(g->banned_until, T0 + 99);
    assert_int_equal(g->updated_at, T0 + 7);
    assert_int_equal(g->created_at, T0);
    assert_int_equal(json_integer_value(json_object_get(g->user_metadata, "k")), 42);
    ts_user_free(g);
    /* The old address is free again, the new one is taken. */
    assert_int_equal(ts_store_user_get_by_email(f->st, "old@example.com", &g, NULL),
                     TS_E_NOT_FOUND);
    assert_int_equal(ts_store_user_get_by_email(f->st, "new@example.com", &g, NULL), TS_OK);
    ts_user_free(g);

    /* Clearing a time writes NULL (0). */
    u->banned_until = 0;
    u->updated_at = T0 + 8;
    assert_int_equal(ts_store_user_update(f->st, u, T0 + 7), TS_OK);
    assert_int_equal(ts_store_user_get(f->st, u->id, &g), TS_OK);
    assert_int_equal(g->banned_until, 0);
    ts_user_free(g);

    /* Taking another user's e-mail: conflict, nothing changed. */
    free(u->email);
    u->email = ts_xstrdup("other@example.com");
    u->updated_at = T0 + 9;
    assert_int_equal(ts_store_user_update(f->st, u, T0 + 8), TS_E_CONFLICT);
    assert_int_equal(ts_store_user_get(f->st, u->id, &g), TS_OK);
    assert_string_equal(g->email, "new@example.com");
    ts_user_free(g);

    /* An unknown user. */
    struct ts_user *ghost = new_user("ghost@example.com", NULL, T0);
    assert_int_equal(ts_store_user_update(f->st, ghost, T0), TS_E_NOT_FOUND);
    ts_user_free(ghost);
    ts_user_free(u);
    ts_user_free(other);
}

static void test_user_delete(void **state)
{
    struct fix *f = *state;
    struct ts_user *u = create_user(f->st, "gone@example.com", "h", T0);
    assert_int_equal(ts_store_user_delete(f->st, u->id), TS_OK);
    struct ts_user *g = NULL;
    assert_int_equal(ts_store_user_get(f->st, u->id, &g), TS_E_NOT_FOUND);
    char *hash = NULL;
    assert_int_equal(ts_store_password_get(f->st, u->id, &hash), TS_E_NOT_FOUND);
    assert_int_equal(ts_store_user_delete(f->st, u->id), TS_E_NOT_FOUND);
    /* The e-mail can be used again. */
    struct ts_user *again = create_user(f->st, "gone@example.com", NULL, T0 + 1);
    ts_user_free(again);
    ts_user_free(u);
}

static void test_user_list(void **state)
{
    struct fix *f = *state;
    char *ids[6];
    static const char *const emails[] = {"a1@x.com", "a2@x.com", "a3@x.com",
                                         "a4@x.com", "a5@x.com", "Boss@Y.org"};
    /* Created in an order different from their creation times. */
    static const int order[] = {3, 0, 5, 1, 4, 2};
    for (int k = 0; k < 6; k++) {
        int i = order[k];
        struct ts_user *u = create_user(f->st, emails[i], NULL, T0 + i * SEC);
        ids[i] = ts_xstrdup(u->id);
        ts_user_free(u);
    }
    struct ts_user *anon = create_user(f->st, NULL, NULL, T0 + 100 * SEC);

    struct ts_user **list = NULL;
    size_t n = 0;
    int64_t total = 0;
    assert_int_equal(ts_store_user_list(f->st, 0, 100, NULL, &list, &n, &total), TS_OK);
    assert_int_equal(total, 7);
    assert_int_equal(n, 7);
    for (int i = 0; i < 6; i++)
        assert_string_equal(list[i]->id, ids[i]); /* oldest first */
    assert_string_equal(list[6]->id, anon->id);
    ts_user_list_free(list, n);

    assert_int_equal(ts_store_user_list(f->st, 1, 2, NULL, &list, &n, &total), TS_OK);
    assert_int_equal(total, 7);
    assert_int_equal(n, 2);
    assert_string_equal(list[0]->id, ids[1]);
    assert_string_equal(list[1]->id, ids[2]);
    ts_user_list_free(list, n);

    /* Past the end. */
    assert_int_equal(ts_store_user_list(f->st, 50, 10, NULL, &list, &n, &total), TS_OK);
    assert_int_equal(n, 0);
    assert_int_equal(total, 7);
    ts_user_list_free(list, n);

    /* The last, partial page. */
    assert_int_equal(ts_store_user_list(f->st, 5, 10, NULL, &list, &n, &total), TS_OK);
    assert_int_equal(n, 2);
    ts_user_list_free(list, n);

    /* Filters match substrings of the e-mail, case-insensitively. */
    assert_int_equal(ts_store_user_list(f->st, 0, 100, "x.com", &list, &n, &total), TS_OK);
    assert_int_equal(total, 5);
    assert_int_equal(n, 5);
    ts_user_list_free(list, n);
    assert_int_equal(ts_store_user_list(f->st, 0, 100, "boss@y", &list, &n, &total), TS_OK);
    assert_int_equal(total, 1);
    assert_int_equal(n, 1);
    assert_string_equal(list[0]->email, "Boss@Y.org");
    ts_user_list_free(list, n);
    assert_int_equal(ts_store_user_list(f->st, 0, 100, "A3", &list, &n, &total), TS_OK);
    assert_int_equal(total, 1);
    assert_string_equal(list[0]->id, ids[2]);
    ts_user_list_free(list, n);
    assert_int_equal(ts_store_user_list(f->st, 0, 100, "nobody", &list, &n, &total), TS_OK);
    assert_int_equal(total, 0);
    assert_int_equal(n, 0);
    ts_user_list_free(list, n);
    /* Filter with offset/limit: total counts all matches. */
    assert_int_equal(ts_store_user_list(f->st, 3, 1, "@x.com", &list, &n, &total), TS_OK);
    assert_int_equal(total, 5);
    assert_int_equal(n, 1);
    assert_string_equal(list[0]->id, ids[3]);
    ts_user_list_free(list, n);
    /* LIKE wildcards in the filter are literal characters. */
    assert_int_equal(ts_store_user_list(f->st, 0, 100, "%", &list, &n, &total), TS_OK);
    assert_int_equal(total, 0);
    ts_user_list_free(list, n);
    assert_int_equal(ts_store_user_list(f->st, 0, 100, "a_@x.com", &list, &n, &total), TS_OK);
    assert_int_equal(total, 0);
    ts_user_list_free(list, n);

    for (int i = 0; i < 6; i++)
        free(ids[i]);
    ts_user_free(anon);
}

/* ---- sessions ---- */

static void test_sessions(void **state)
{
    struct fix *f = *state;
    struct ts_user *u = create_user(f->st, "s@example.com", NULL, T0);
    struct ts_user *v = create_user(f->st, "v@example.com", NULL, T0);
    char sid[TS_STORE_ID_LEN + 1];
    create_session(f->st, u->id, 1, T0 + 5 * SEC, sid);

    struct ts_user *g = NULL;
    assert_int_equal(ts_store_session_user(f->st, sid, u->id, &g), TS_OK);
    assert_string_equal(g->id, u->id);
    assert_string_equal(g->email, "s@example.com");
    assert_int_equal(g->last_sign_in_at, T0 + 5 * SEC); /* set by session_create */
    ts_user_free(g);

    /* Wrong user for the session, unknown session. */
    g = NULL;
    assert_int_equal(ts_store_session_user(f->st, sid, v->id, &g), TS_E_NOT_FOUND);
    assert_null(g);
    char unknown[TS_STORE_ID_LEN + 1];
    ts_uuid_v4(unknown);
    assert_int_equal(ts_store_session_user(f->st, unknown, u->id, &g), TS_E_NOT_FOUND);

    /* A session for a user that does not exist. */
    struct ts_session_new s = {.user_id = unknown, .aal = "aal1", .amr_json = "[]", .now = T0};
    fill_hash(s.refresh_hash, 99);
    char sid2[TS_STORE_ID_LEN + 1] = "untouched";
    assert_int_equal(ts_store_session_create(f->st, &s, sid2), TS_E_NOT_FOUND);
    assert_string_equal(sid2, "untouched");

    /* A second session, with NULL ip and user agent. */
    s.user_id = u->id;
    s.ip = NULL;
    s.user_agent = NULL;
    fill_hash(s.refresh_hash, 2);
    assert_int_equal(ts_store_session_create(f->st, &s, sid2), TS_OK);
    assert_string_not_equal(sid, sid2);

    /* A refresh hash already in use cannot start another session. */
    char sid3[TS_STORE_ID_LEN + 1];
    assert_int_equal(ts_store_session_create(f->st, &s, sid3), TS_E_CONFLICT);

    /* Delete */
    assert_int_equal(ts_store_session_delete(f->st, sid), TS_OK);
    assert_false(session_alive(f->st, sid, u->id));
    assert_true(session_alive(f->st, sid2, u->id));
    assert_int_equal(ts_store_session_delete(f->st, sid), TS_E_NOT_FOUND);
    /* Its refresh token is gone with it. */
    assert_int_equal(rotate(f->st, 1, 3, T0 + 10 * SEC, 10 * SEC, true, NULL),
                     TS_REFRESH_NOT_FOUND);
    ts_user_free(u);
    ts_user_free(v);
}

static void test_sessions_delete_for_user(void **state)
{
    struct fix *f = *state;
    struct ts_user *u = create_user(f->st, "many@example.com", NULL, T0);
    struct ts_user *v = create_user(f->st, "bystander@example.com", NULL, T0);
    char s1[37], s2[37], s3[37], sv[37];
    create_session(f->st, u->id, 1, T0, s1);
    create_session(f->st, u->id, 2, T0, s2);
    create_session(f->st, u->id, 3, T0, s3);
    create_session(f->st, v->id, 4, T0, sv);

    int64_t deleted = -1;
    assert_int_equal(ts_store_sessions_delete_for_user(f->st, u->id, s2, &deleted), TS_OK);
    assert_int_equal(deleted, 2);
    assert_false(session_alive(f->st, s1, u->id));
    assert_true(session_alive(f->st, s2, u->id));
    assert_false(session_alive(f->st, s3, u->id));
    assert_true(session_alive(f->st, sv, v->id)); /* other users keep theirs */

    assert_int_equal(ts_store_sessions_delete_for_user(f->st, u->id, NULL, &deleted), TS_OK);
    assert_int_equal(deleted, 1);
    assert_false(session_alive(f->st, s2, u->id));
    assert_int_equal(ts_store_sessions_delete_for_user(f->st, u->id, NULL, NULL), TS_OK);
    assert_int_equal(ts_store_sessions_delete_for_user(f->st, u->id, NULL, &deleted), TS_OK);
    assert_int_equal(deleted, 0);
    assert_true(session_alive(f->st, sv, v->id));
    ts_user_free(u);
    ts_user_free(v);
}

static void test_user_delete_cascades(void **state)
{
    struct fix *f = *state;
    struct ts_user *u = create_user(f->st, "cascade@example.com", "h", T0);
    char s1[37], s2[37];
    create_session(f->st, u->id, 1, T0, s1);
    create_session(f->st, u->id, 2, T0, s2);
    assert_int_equal(rotate(f->st, 2, 3, T0 + SEC, 10 * SEC, true, NULL), TS_REFRESH_ROTATED);
    assert_int_equal(ts_store_user_delete(f->st, u->id), TS_OK);
    assert_false(session_alive(f->st, s1, u->id));
    assert_false(session_alive(f->st, s2, u->id));
    assert_int_equal(ts_store_session_delete(f->st, s1), TS_E_NOT_FOUND);
    /* Refresh tokens went with the sessions. */
    assert_int_equal(rotate(f->st, 1, 10, T0 + 2 * SEC, 10 * SEC, true, NULL),
                     TS_REFRESH_NOT_FOUND);
    assert_int_equal(rotate(f->st, 3, 11, T0 + 2 * SEC, 10 * SEC, true, NULL),
                     TS_REFRESH_NOT_FOUND);
    /* The hashes are free again: a new user's session may reuse them. */
    struct ts_user *w = create_user(f->st, "w@example.com", NULL, T0);
    char s3[37];
    create_session(f->st, w->id, 1, T0 + 3 * SEC, s3);
    ts_user_free(w);
    ts_user_free(u);
}

/* ---- refresh tokens ---- */

static void test_refresh_rotation(void **state)
{
    struct fix *f = *state;
    struct ts_user *u = create_user(f->st, "r@example.com", NULL, T0);
    char sid[37];
    create_session(f->st, u->id, 100, T0, sid);
    const int64_t interval = 10 * SEC;
    struct ts_refresh_result r;

    /* A live token rotates. */
    assert_int_equal(rotate(f->st, 100, 101, T0 + SEC, interval, true, &r), TS_REFRESH_ROTATED);
    assert_string_equal(r.session_id, sid);
    assert_string_equal(r.user_id, u->id);
    assert_string_equal(r.aal, "aal1");
    assert_string_equal(r.amr_json, "[{\"method\":\"password\",\"timestamp\":1700000000}]");

    /* Used again within the interval: a new child (another client tab). */
    assert_int_equal(rotate(f->st, 100, 102, T0 + 5 * SEC, interval, true, &r), TS_REFRESH_REUSED);
    assert_string_equal(r.session_id, sid);
    assert_string_equal(r.user_id, u->id);
    /* Exactly at the end of the interval still counts as within. */
    assert_int_equal(rotate(f->st, 100, 103, T0 + SEC + interval, interval, true, &r),
                     TS_REFRESH_REUSED);
    /* The children work. */
    assert_int_equal(rotate(f->st, 102, 104, T0 + 12 * SEC, interval, true, &r),
                     TS_REFRESH_ROTATED);
    assert_string_equal(r.session_id, sid);
    assert_int_equal(rotate(f->st, 101, 105, T0 + 12 * SEC, interval, true, &r),
                     TS_REFRESH_ROTATED);

    /* Unknown token. */
    assert_int_equal(rotate(f->st, 999, 998, T0 + 13 * SEC, interval, true, &r),
                     TS_REFRESH_NOT_FOUND);
    /* A NOT_FOUND does not create the "next" token. */
    assert_int_equal(rotate(f->st, 998, 997, T0 + 13 * SEC, interval, true, &r),
                     TS_REFRESH_NOT_FOUND);

    /* Used beyond the interval with rotation on: the whole session is revoked. */
    assert_int_equal(rotate(f->st, 100, 106, T0 + 100 * SEC, interval, true, &r),
                     TS_REFRESH_ALREADY_USED);
    assert_false(session_alive(f->st, sid, u->id));
    /* ... and with it every token of the family, children included. */
    assert_int_equal(rotate(f->st, 104, 107, T0 + 101 * SEC, interval, true, &r),
                     TS_REFRESH_NOT_FOUND);
    assert_int_equal(rotate(f->st, 105, 108, T0 + 101 * SEC, interval, true, &r),
                     TS_REFRESH_NOT_FOUND);
    assert_int_equal(rotate(f->st, 106, 109, T0 + 101 * SEC, interval, true, &r),
                     TS_REFRESH_NOT_FOUND);
    ts_user_free(u);
}

static void test_refresh_reuse_rotation_disabled(void **state)
{
    struct fix *f = *state;
    struct ts_user *u = create_user(f->st, "nr@example.com", NULL, T0);
    char sid[37];
    create_session(f->st, u->id, 200, T0, sid);
    assert_int_equal(rotate(f->st, 200, 201, T0 + SEC, 0, false, NULL), TS_REFRESH_ROTATED);
    /* Interval 0: any reuse is beyond it. Rotation off: the session survives. */
    assert_int_equal(rotate(f->st, 200, 202, T0 + 2 * SEC, 0, false, NULL),
                     TS_REFRESH_ALREADY_USED);
    assert_true(session_alive(f->st, sid, u->id));
    /* No child was issued for the reused token. */
    assert_int_equal(rotate(f->st, 202, 203, T0 + 3 * SEC, 0, false, NULL), TS_REFRESH_NOT_FOUND);
    assert_int_equal(rotate(f->st, 201, 204, T0 + 3 * SEC, 0, false, NULL), TS_REFRESH_ROTATED);
    ts_user_free(u);
}

/* ---- passwords ---- */

static void test_password_set(void **state)
{
    struct fix *f = *state;
    struct ts_user *u = create_user(f->st, "pw@example.com", "hash-1", T0);
    char s1[37], s2[37], s3[37];
    create_session(f->st, u->id, 1, T0, s1);
    create_session(f->st, u->id, 2, T0, s2);
    create_session(f->st, u->id, 3, T0, s3);

    /* A rehash that lost the race: nothing changes, sessions included. */
    assert_int_equal(
        ts_store_password_set(f->st, u->id, "hash-2", "not-hash-1", true, NULL, T0 + SEC),
        TS_E_CONFLICT);
    char *h = NULL;
    assert_int_equal(ts_store_password_get(f->st, u->id, &h), TS_OK);
    assert_string_equal(h, "hash-1");
    free(h);
    assert_true(session_alive(f->st, s1, u->id));
    assert_true(session_alive(f->st, s2, u->id));
    assert_true(session_alive(f->st, s3, u->id));

    /* The right old hash, revoking all sessions but s2. */
    assert_int_equal(
        ts_store_password_set(f->st, u->id, "hash-2", "hash-1", true, s2, T0 + 2 * SEC), TS_OK);
    assert_int_equal(ts_store_password_get(f->st, u->id, &h), TS_OK);
    assert_string_equal(h, "hash-2");
    free(h);
    assert_false(session_alive(f->st, s1, u->id));
    assert_true(session_alive(f->st, s2, u->id));
    assert_false(session_alive(f->st, s3, u->id));

    /* No expectation, no revocation. */
    assert_int_equal(ts_store_password_set(f->st, u->id, "hash-3", NULL, false, NULL, T0), TS_OK);
    assert_true(session_alive(f->st, s2, u->id));
    assert_int_equal(ts_store_password_get(f->st, u->id, &h), TS_OK);
    assert_string_equal(h, "hash-3");
    free(h);

    /* Revoke everything (keep_session NULL). */
    assert_int_equal(ts_store_password_set(f->st, u->id, "hash-4", "hash-3", true, NULL, T0),
                     TS_OK);
    assert_false(session_alive(f->st, s2, u->id));

    /* A user without a password: an expectation cannot hold; none sets the first one. */
    struct ts_user *np = create_user(f->st, "nopw@example.com", NULL, T0);
    assert_int_equal(ts_store_password_set(f->st, np->id, "first", "anything", false, NULL, T0),
                     TS_E_CONFLICT);
    assert_int_equal(ts_store_password_get(f->st, np->id, &h), TS_E_NOT_FOUND);
    assert_int_equal(ts_store_password_set(f->st, np->id, "first", NULL, false, NULL, T0), TS_OK);
    struct ts_user *g = NULL;
    assert_int_equal(ts_store_user_get(f->st, np->id, &g), TS_OK);
    assert_true(g->has_password);
    ts_user_free(g);
    ts_user_free(np);
    ts_user_free(u);
}

/* ---- signing keys ---- */

static struct ts_signing_key_row key_row(const char *kid, enum ts_key_state state, int64_t at)
{
    struct ts_signing_key_row r = {.kid = (char *)(uintptr_t)kid,
                                   .alg = (char *)(uintptr_t) "ES256",
                                   .private_pem = (char *)(uintptr_t) "-----BEGIN PRIVATE KEY-----",
                                   .state = state,
                                   .created_at = at,
                                   .state_changed_at = at};
    return r;
}

static enum ts_key_state state_of(struct ts_store *st, const char *kid, size_t *count)
{
    struct ts_signing_key_row *rows = NULL;
    size_t n = 0;
    assert_int_equal(ts_store_signing_keys_list(st, &rows, &n), TS_OK);
    enum ts_key_state s = (enum ts_key_state) - 1;
    for (size_t i = 0; i < n; i++)
        if (strcmp(rows[i].kid, kid) == 0)
            s = rows[i].state;
    if (count)
        *count = n;
    ts_signing_key_rows_free(rows, n);
    return s;
}

static void test_signing_keys(void **state)
{
    struct fix *f = *state;
    struct ts_signing_key_row *rows = NULL;
    size_t n = 99;
    assert_int_equal(ts_store_signing_keys_list(f->st, &rows, &n), TS_OK);
    assert_int_equal(n, 0);
    ts_signing_key_rows_free(rows, n);

    struct ts_signing_key_row r1 = key_row("k1", TS_KEY_ACTIVE, T0);
    struct ts_signing_key_row r2 = key_row("k2", TS_KEY_NEXT, T0 + SEC);
    struct ts_signing_key_row r3 = key_row("k3", TS_KEY_ACTIVE, T0 + 2 * SEC);
    assert_int_equal(ts_store_signing_key_insert(f->st, &r1), TS_OK);
    assert_int_equal(ts_store_signing_key_insert(f->st, &r2), TS_OK);
    /* Two active keys: conflict. */
    assert_int_equal(ts_store_signing_key_insert(f->st, &r3), TS_E_CONFLICT);
    /* The same kid twice: conflict. */
    struct ts_signing_key_row dup = key_row("k2", TS_KEY_NEXT, T0 + 3 * SEC);
    assert_int_equal(ts_store_signing_key_insert(f->st, &dup), TS_E_CONFLICT);

    assert_int_equal(ts_store_signing_keys_list(f->st, &rows, &n), TS_OK);
    assert_int_equal(n, 2);
    assert_string_equal(rows[0].kid, "k1"); /* by creation */
    assert_int_equal(rows[0].state, TS_KEY_ACTIVE);
    assert_string_equal(rows[0].alg, "ES256");
    assert_string_equal(rows[0].private_pem, "-----BEGIN PRIVATE KEY-----");
    assert_int_equal(rows[0].created_at, T0);
    assert_string_equal(rows[1].kid, "k2");
    assert_int_equal(rows[1].state, TS_KEY_NEXT);
    ts_signing_key_rows_free(rows, n);

    /* Promoting an unknown kid fails and changes nothing (one transaction). */
    assert_int_equal(ts_store_signing_key_promote(f->st, "nope", T0 + 10 * SEC, 0), TS_E_NOT_FOUND);
    assert_int_equal(state_of(f->st, "k1", NULL), TS_KEY_ACTIVE);
    assert_int_equal(state_of(f->st, "k2", NULL), TS_KEY_NEXT);
    /* Promoting the active key itself is refused as well (only NEXT keys). */
    assert_int_equal(ts_store_signing_key_promote(f->st, "k1", T0 + 10 * SEC, 0), TS_E_NOT_FOUND);
    assert_int_equal(state_of(f->st, "k1", NULL), TS_KEY_ACTIVE);

    /* Rotation: k2 becomes active, k1 retired at that time. */
    assert_int_equal(ts_store_signing_key_promote(f->st, "k2", T0 + 20 * SEC, 0), TS_OK);
    assert_int_equal(state_of(f->st, "k1", NULL), TS_KEY_RETIRED);
    assert_int_equal(state_of(f->st, "k2", NULL), TS_KEY_ACTIVE);
    assert_int_equal(ts_store_signing_keys_list(f->st, &rows, &n), TS_OK);
    for (size_t i = 0; i < n; i++)
        if (strcmp(rows[i].kid, "k1") == 0 || strcmp(rows[i].kid, "k2") == 0)
            assert_int_equal(rows[i].state_changed_at, T0 + 20 * SEC);
    ts_signing_key_rows_free(rows, n);
    /* Now a new active key would conflict with k2. */
    assert_int_equal(ts_store_signing_key_insert(f->st, &r3), TS_E_CONFLICT);

    /* Next rotation drops keys retired before drop_before. */
    struct ts_signing_key_row r4 = key_row("k4", TS_KEY_NEXT, T0 + 30 * SEC);
    assert_int_equal(ts_store_signing_key_insert(f->st, &r4), TS_OK);
    size_t count = 0;
    assert_int_equal(ts_store_signing_key_promote(f->st, "k4", T0 + 40 * SEC, T0 + 25 * SEC),
                     TS_OK);
    assert_int_equal(state_of(f->st, "k1", &count), (enum ts_key_state) - 1); /* dropped */
    assert_int_equal(count, 2);
    assert_int_equal(state_of(f->st, "k2", NULL), TS_KEY_RETIRED); /* just retired: kept */
    assert_int_equal(state_of(f->st, "k4", NULL), TS_KEY_ACTIVE);

    /* Re-sealing is a compare-and-swap on the stored text: a stale expectation (another node
     * re-sealed first) or an unknown kid changes nothing. */
    assert_int_equal(ts_store_signing_key_reseal(f->st, "k4", "not what is stored", "x"),
                     TS_E_STALE);
    assert_int_equal(ts_store_signing_key_reseal(f->st, "nope", "-----BEGIN PRIVATE KEY-----", "x"),
                     TS_E_STALE);
    assert_int_equal(
        ts_store_signing_key_reseal(f->st, "k4", "-----BEGIN PRIVATE KEY-----", "$sealed$"), TS_OK);
    assert_int_equal(ts_store_signing_keys_list(f->st, &rows, &n), TS_OK);
    for (size_t i = 0; i < n; i++)
        assert_string_equal(rows[i].private_pem, strcmp(rows[i].kid, "k4") == 0
                                                     ? "$sealed$"
                                                     : "-----BEGIN PRIVATE KEY-----");
    ts_signing_key_rows_free(rows, n);
}

/* ---- durability ---- */

static void test_reopen(void **state)
{
    struct fix *f = *state;
    struct ts_user *u = create_user(f->st, "durable@example.com", "durable-hash", T0);
    char sid[37];
    create_session(f->st, u->id, 7, T0, sid);
    assert_int_equal(ts_store_meta_insert(f->st, "k", "v"), TS_OK);
    struct ts_signing_key_row r = key_row("kd", TS_KEY_ACTIVE, T0);
    assert_int_equal(ts_store_signing_key_insert(f->st, &r), TS_OK);
    ts_store_audit(f->st, "login", u->id, u->id, "192.0.2.1", "{\"ok\":true}");
    ts_store_audit(f->st, "logout", NULL, NULL, NULL, NULL);
    ts_store_close(f->st);
    f->st = NULL;

    int applied = -1;
    f->st = open_migrated(f->url, &applied);
    assert_int_equal(applied, 0);
    struct ts_user *g = NULL;
    char *h = NULL;
    assert_int_equal(ts_store_user_get_by_email(f->st, "durable@example.com", &g, &h), TS_OK);
    assert_string_equal(g->id, u->id);
    assert_string_equal(h, "durable-hash");
    free(h);
    ts_user_free(g);
    assert_true(session_alive(f->st, sid, u->id));
    char *v = NULL;
    assert_int_equal(ts_store_meta_get(f->st, "k", &v), TS_OK);
    assert_string_equal(v, "v");
    free(v);
    assert_int_equal(state_of(f->st, "kd", NULL), TS_KEY_ACTIVE);
    assert_int_equal(rotate(f->st, 7, 8, T0 + SEC, SEC, true, NULL), TS_REFRESH_ROTATED);
    ts_user_free(u);
}

/* ---- concurrency ---- */

#define WRITERS 8
#define PER_WRITER 200

struct writer {
    struct ts_store *st;
    int index;
    const char *email; /* NULL: distinct e-mails */
    int ok, conflict, other;
    pthread_barrier_t *start;
};

static void *writer_main(void *arg)
{
    struct writer *w = arg;
    pthread_barrier_wait(w->start);
    int n = w->email ? 1 : PER_WRITER;
    for (int i = 0; i < n; i++) {
        char email[64];
        if (w->email)
            snprintf(email, sizeof(email), "%s", w->email);
        else
            snprintf(email, sizeof(email), "w%d-%d@example.com", w->index, i);
        struct ts_user *u = new_user(email, NULL, T0 + w->index * 1000 + i);
        enum ts_rc rc = ts_store_user_create(w->st, u, "h");
        ts_user_free(u);
        if (rc == TS_OK)
            w->ok++;
        else if (rc == TS_E_CONFLICT)
            w->conflict++;
        else
            w->other++;
    }
    return NULL;
}

static void test_concurrent_creates(void **state)
{
    struct fix *f = *state;
    struct writer ws[2 * WRITERS];
    pthread_t th[2 * WRITERS];
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, 2 * WRITERS);
    for (int i = 0; i < 2 * WRITERS; i++) {
        ws[i] = (struct writer){.st = f->st,
                                .index = i,
                                .email = i < WRITERS ? NULL : "same@example.com",
                                .start = &start};
        assert_int_equal(pthread_create(&th[i], NULL, writer_main, &ws[i]), 0);
    }
    for (int i = 0; i < 2 * WRITERS; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&start);

    int distinct_ok = 0, same_ok = 0, same_conflict = 0, other = 0;
    for (int i = 0; i < 2 * WRITERS; i++) {
        other += ws[i].other;
        if (i < WRITERS) {
            distinct_ok += ws[i].ok;
            assert_int_equal(ws[i].conflict, 0);
        } else {
            same_ok += ws[i].ok;
            same_conflict += ws[i].conflict;
        }
    }
    assert_int_equal(other, 0);
    assert_int_equal(distinct_ok, WRITERS * PER_WRITER);
    assert_int_equal(same_ok, 1);
    assert_int_equal(same_conflict, WRITERS - 1);

    struct ts_user **list = NULL;
    size_t n = 0;
    int64_t total = 0;
    assert_int_equal(ts_store_user_list(f->st, 0, 1, NULL, &list, &n, &total), TS_OK);
    assert_int_equal(total, WRITERS * PER_WRITER + 1);
    ts_user_list_free(list, n);
    assert_int_equal(ts_store_user_list(f->st, 0, 10, "same@", &list, &n, &total), TS_OK);
    assert_int_equal(total, 1);
    ts_user_list_free(list, n);
}

/* ---- counters ---- */

static struct ts_bucket_result take(struct ts_store *st, const char *key, uint32_t capacity,
                                    int64_t refill_us, int64_t now, uint32_t cost)
{
    struct ts_bucket_rule rule = {.capacity = capacity, .refill_us = refill_us};
    struct ts_bucket_result r;
    memset(&r, 0xee, sizeof(r));
    assert_int_equal(ts_store_bucket_take(st, key, &rule, now, cost, &r), TS_OK);
    return r;
}

#define assert_bucket(r, ok, rem, retry)                                                           \
    do {                                                                                           \
        struct ts_bucket_result r_ = (r);                                                          \
        assert_int_equal(r_.allowed, (ok));                                                        \
        assert_int_equal(r_.remaining, (rem));                                                     \
        assert_int_equal(r_.retry_after_us, (retry));                                              \
    } while (0)

static struct ts_counter_result add(struct ts_store *st, const char *key, int64_t delta,
                                    int64_t window_us, int64_t now, int64_t limit)
{
    struct ts_counter_result r;
    memset(&r, 0xee, sizeof(r));
    assert_int_equal(ts_store_counter_add(st, key, delta, window_us, now, limit, &r), TS_OK);
    return r;
}

#define assert_counter(r, ok, val, ends, retry)                                                    \
    do {                                                                                           \
        struct ts_counter_result r_ = (r);                                                         \
        assert_int_equal(r_.allowed, (ok));                                                        \
        assert_int_equal(r_.value, (val));                                                         \
        assert_int_equal(r_.window_ends_us, (ends));                                               \
        assert_int_equal(r_.retry_after_us, (retry));                                              \
    } while (0)

static struct ts_counter_result get(struct ts_store *st, const char *key, int64_t now)
{
    struct ts_counter_result r;
    memset(&r, 0xee, sizeof(r));
    assert_int_equal(ts_store_counter_get(st, key, now, &r), TS_OK);
    return r;
}

static void test_bucket_refill(void **state)
{
    struct fix *f = *state;
    const char *k = "login:ip:192.0.2.1";
    /* 5 tokens, one back per second. A bucket never seen is full. */
    assert_bucket(take(f->st, k, 5, SEC, T0, 1), true, 4, 0);
    assert_bucket(take(f->st, k, 5, SEC, T0, 1), true, 3, 0);
    assert_bucket(take(f->st, k, 5, SEC, T0, 3), true, 0, 0);
    /* Empty: denied, and the wait is for the one token to come back. */
    assert_bucket(take(f->st, k, 5, SEC, T0, 1), false, 0, SEC);
    assert_bucket(take(f->st, k, 5, SEC, T0, 2), false, 0, 2 * SEC);
    assert_bucket(take(f->st, k, 5, SEC, T0 + SEC / 2, 1), false, 0, SEC / 2);
    /* A denied take consumed nothing: exactly one token is back after one second. */
    assert_bucket(take(f->st, k, 5, SEC, T0 + SEC, 1), true, 0, 0);
    assert_bucket(take(f->st, k, 5, SEC, T0 + SEC, 1), false, 0, SEC);
    /* Refill is continuous: 2.5 tokens after 2.5 s (two whole ones usable). */
    int64_t t = T0 + SEC + 5 * SEC / 2;
    assert_bucket(take(f->st, k, 5, SEC, t, 0), true, 2, 0); /* cost 0 only reports */
    assert_bucket(take(f->st, k, 5, SEC, t, 3), false, 2, SEC / 2);
    assert_bucket(take(f->st, k, 5, SEC, t, 1), true, 1, 0); /* 1.5 left */
    assert_bucket(take(f->st, k, 5, SEC, t, 2), false, 1, SEC / 2);
    assert_bucket(take(f->st, k, 5, SEC, t + SEC / 2, 2), true, 0, 0);
    /* Long idle: full again, never fuller. */
    assert_bucket(take(f->st, k, 5, SEC, t + 3600 * SEC, 1), true, 4, 0);
    assert_bucket(take(f->st, k, 5, SEC, t + 3600 * SEC, 5), false, 4, SEC);
    /* Fine-grained: 3 tokens, one back every 3 us (integer arithmetic, no drift). */
    const char *g = "fine";
    assert_bucket(take(f->st, g, 3, 3, T0, 3), true, 0, 0);
    assert_bucket(take(f->st, g, 3, 3, T0 + 2, 1), false, 0, 1);
    assert_bucket(take(f->st, g, 3, 3, T0 + 3, 1), true, 0, 0);
    assert_bucket(take(f->st, g, 3, 3, T0 + 9, 1), true, 1, 0);
    assert_bucket(take(f->st, g, 3, 3, T0 + 11, 1), true, 0, 0); /* 2/3 of a token left */
    assert_bucket(take(f->st, g, 3, 3, T0 + 11, 1), false, 0, 1);
    assert_bucket(take(f->st, g, 3, 3, T0 + 12, 1), true, 0, 0);
    /* Keys are independent. */
    assert_bucket(take(f->st, "other", 5, SEC, T0, 1), true, 4, 0);
}

static void test_bucket_capacity(void **state)
{
    struct fix *f = *state;
    /* The whole burst at once, then exactly nothing more. */
    assert_bucket(take(f->st, "b", 100, 60 * SEC, T0, 100), true, 0, 0);
    assert_bucket(take(f->st, "b", 100, 60 * SEC, T0, 1), false, 0, 60 * SEC);
    assert_bucket(take(f->st, "b", 100, 60 * SEC, T0 + 60 * SEC - 1, 1), false, 0, 1);
    assert_bucket(take(f->st, "b", 100, 60 * SEC, T0 + 60 * SEC, 1), true, 0, 0);
    /* A capacity of one. */
    assert_bucket(take(f->st, "one", 1, SEC, T0, 1), true, 0, 0);
    assert_bucket(take(f->st, "one", 1, SEC, T0, 1), false, 0, SEC);
    /* A rule made smaller between calls: the deficit is clamped to the new capacity, and the
     * wait reported is the wait there is. */
    assert_bucket(take(f->st, "shrink", 10, SEC, T0, 10), true, 0, 0);
    assert_bucket(take(f->st, "shrink", 2, SEC, T0, 1), false, 0, SEC);
    assert_bucket(take(f->st, "shrink", 2, SEC, T0 + SEC - 1, 1), false, 0, 1);
    assert_bucket(take(f->st, "shrink", 2, SEC, T0 + SEC, 1), true, 0, 0);
    assert_bucket(take(f->st, "shrink", 2, SEC, T0 + 3 * SEC, 0), true, 2, 0);
    /* ... and larger: what was missing stays missing. */
    assert_bucket(take(f->st, "grow", 2, SEC, T0, 2), true, 0, 0);
    assert_bucket(take(f->st, "grow", 10, SEC, T0, 1), true, 7, 0);

    /* Out of range: the caller's bug. */
    struct ts_bucket_result r = {.allowed = true, .remaining = 42, .retry_after_us = 42};
    struct ts_bucket_rule ok = {.capacity = 5, .refill_us = SEC};
    struct ts_bucket_rule zero_cap = {.capacity = 0, .refill_us = SEC};
    struct ts_bucket_rule zero_refill = {.capacity = 5, .refill_us = 0};
    struct ts_bucket_rule huge = {.capacity = UINT32_MAX, .refill_us = INT64_C(1) << 40};
    struct ts_bucket_rule max = {.capacity = 1, .refill_us = TS_STORE_COUNTER_SPAN_MAX};
    assert_int_equal(ts_store_bucket_take(f->st, "x", &ok, T0, 6, &r), TS_E_INVALID);
    assert_int_equal(ts_store_bucket_take(f->st, "x", &zero_cap, T0, 0, &r), TS_E_INVALID);
    assert_int_equal(ts_store_bucket_take(f->st, "x", &zero_refill, T0, 1, &r), TS_E_INVALID);
    assert_int_equal(ts_store_bucket_take(f->st, "x", &huge, T0, 1, &r), TS_E_INVALID);
    assert_int_equal(ts_store_bucket_take(f->st, "x", NULL, T0, 1, &r), TS_E_INVALID);
    assert_int_equal(ts_store_bucket_take(f->st, "x", &ok, -1, 1, &r), TS_E_INVALID);
    assert_int_equal(ts_store_bucket_take(f->st, "x", &ok, TS_STORE_COUNTER_TIME_MAX + 1, 1, &r),
                     TS_E_INVALID);
    assert_true(r.allowed && r.remaining == 42 && r.retry_after_us == 42); /* untouched */
    /* The largest values still compute exactly. */
    assert_int_equal(ts_store_bucket_take(f->st, "x", &max, TS_STORE_COUNTER_TIME_MAX, 1, &r),
                     TS_OK);
    assert_bucket(r, true, 0, 0);
    assert_int_equal(ts_store_bucket_take(f->st, "x", &max, TS_STORE_COUNTER_TIME_MAX, 1, &r),
                     TS_OK);
    assert_bucket(r, false, 0, TS_STORE_COUNTER_SPAN_MAX);
}

static void test_counter_window(void **state)
{
    struct fix *f = *state;
    const char *k = "lockout:alice@example.com";
    int64_t w = 10 * SEC;
    assert_counter(get(f->st, k, T0), true, 0, 0, 0); /* never seen */
    assert_counter(add(f->st, k, 1, w, T0, 3), true, 1, T0 + w, 0);
    assert_counter(add(f->st, k, 1, w, T0 + 4 * SEC, 3), true, 2, T0 + w, 0);
    assert_counter(add(f->st, k, 1, w, T0 + 5 * SEC, 3), true, 3, T0 + w, 0);
    /* Full: refused until the window ends, and the refusal changes nothing. */
    assert_counter(add(f->st, k, 1, w, T0 + 5 * SEC, 3), false, 3, T0 + w, 5 * SEC);
    assert_counter(add(f->st, k, 1, w, T0 + w - 1, 3), false, 3, T0 + w, 1);
    assert_counter(get(f->st, k, T0 + w - 1), true, 3, T0 + w, 0);
    /* The window is [start, start + window): at its end a new one starts, at 0. */
    assert_counter(get(f->st, k, T0 + w), true, 0, 0, 0);
    assert_counter(add(f->st, k, 1, w, T0 + w, 3), true, 1, T0 + 2 * w, 0);
    assert_counter(get(f->st, k, T0 + w + 1), true, 1, T0 + 2 * w, 0);
    /* Long after: a fresh window again, whatever the value was. */
    assert_counter(add(f->st, k, 2, w, T0 + 100 * w, 3), true, 2, T0 + 101 * w, 0);
    /* A limit larger than the adds never refuses; no limit (0 or less) either. */
    assert_counter(add(f->st, "n", 1000, w, T0, 0), true, 1000, T0 + w, 0);
    assert_counter(add(f->st, "n", 1000, w, T0, -1), true, 2000, T0 + w, 0);
    assert_counter(add(f->st, "n", 0, w, T0, 1), true, 2000, T0 + w, 0);
    /* The same key names a bucket of its own. */
    assert_bucket(take(f->st, k, 1, SEC, T0 + 100 * w, 1), true, 0, 0);
    assert_counter(get(f->st, k, T0 + 100 * w), true, 2, T0 + 101 * w, 0);

    /* Out of range. */
    struct ts_counter_result r = {.value = 42};
    assert_int_equal(ts_store_counter_add(f->st, k, 4, w, T0, 3, &r), TS_E_INVALID);
    assert_int_equal(ts_store_counter_add(f->st, k, 1, 0, T0, 3, &r), TS_E_INVALID);
    assert_int_equal(ts_store_counter_add(f->st, k, 1, TS_STORE_COUNTER_SPAN_MAX + 1, T0, 3, &r),
                     TS_E_INVALID);
    assert_int_equal(ts_store_counter_add(f->st, k, 1, w, -1, 3, &r), TS_E_INVALID);
    assert_int_equal(ts_store_counter_add(f->st, k, TS_STORE_COUNTER_DELTA_MAX + 1, w, T0, 0, &r),
                     TS_E_INVALID);
    assert_int_equal(ts_store_counter_add(f->st, k, -TS_STORE_COUNTER_DELTA_MAX - 1, w, T0, 0, &r),
                     TS_E_INVALID);
    assert_int_equal(ts_store_counter_get(f->st, k, -1, &r), TS_E_INVALID);
    assert_int_equal(r.value, 42);
}

static void test_counter_reservation(void **state)
{
    struct fix *f = *state;
    const char *k = "lockout:bob@example.com";
    int64_t w = 900 * SEC;
    /* Three checks allowed per window: reserve before checking... */
    for (int i = 1; i <= 3; i++)
        assert_counter(add(f->st, k, 1, w, T0 + i, 3), true, i, T0 + 1 + w, 0);
    assert_counter(add(f->st, k, 1, w, T0 + 10, 3), false, 3, T0 + 1 + w, w - 9);
    /* ... release the reservation of a check that succeeded ... */
    assert_counter(add(f->st, k, -1, w, T0 + 20, 3), true, 2, T0 + 1 + w, 0);
    /* ... which frees exactly one slot. */
    assert_counter(add(f->st, k, 1, w, T0 + 30, 3), true, 3, T0 + 1 + w, 0);
    assert_counter(add(f->st, k, 1, w, T0 + 40, 3), false, 3, T0 + 1 + w, w - 39);
    /* A release never takes the value below 0, and is never refused. */
    assert_counter(add(f->st, k, -5, w, T0 + 50, 3), true, 0, T0 + 1 + w, 0);
    assert_counter(add(f->st, k, -1, w, T0 + 60, 3), true, 0, T0 + 1 + w, 0);
    assert_counter(add(f->st, k, 3, w, T0 + 70, 3), true, 3, T0 + 1 + w, 0);
    /* A release on a key never seen, or after the window, starts an empty window. */
    assert_counter(add(f->st, "fresh", -1, w, T0, 3), true, 0, T0 + w, 0);
    assert_counter(add(f->st, k, -1, w, T0 + 1 + w, 3), true, 0, T0 + 1 + 2 * w, 0);
    /* Reset forgets the key (and is fine when there is nothing to forget). */
    assert_counter(add(f->st, k, 3, w, T0 + 2 + w, 3), true, 3, T0 + 1 + 2 * w, 0);
    assert_int_equal(ts_store_counter_reset(f->st, k), TS_OK);
    assert_counter(get(f->st, k, T0 + 3 + w), true, 0, 0, 0);
    assert_counter(add(f->st, k, 1, w, T0 + 4 + w, 3), true, 1, T0 + 4 + 2 * w, 0);
    assert_int_equal(ts_store_counter_reset(f->st, "never-seen"), TS_OK);
    /* Reset leaves a bucket of the same name alone. */
    assert_bucket(take(f->st, k, 2, SEC, T0, 1), true, 1, 0);
    assert_int_equal(ts_store_counter_reset(f->st, k), TS_OK);
    assert_bucket(take(f->st, k, 2, SEC, T0, 1), true, 0, 0);
}

static void test_counters_sweep(void **state)
{
    struct fix *f = *state;
    const int64_t grace = TS_STORE_COUNTER_SWEEP_GRACE_US;
    int64_t n = -1;
    assert_int_equal(ts_store_counters_sweep(f->st, T0, &n), TS_OK);
    assert_int_equal(n, 0);
    /* Full again at T0 + 1 s, T0 + 10 s; windows ending at T0 + 5 s, T0 + 100 s. */
    assert_bucket(take(f->st, "b1", 5, SEC, T0, 1), true, 4, 0);
    assert_bucket(take(f->st, "b10", 10, SEC, T0, 10), true, 0, 0);
    assert_counter(add(f->st, "c5", 1, 5 * SEC, T0, 0), true, 1, T0 + 5 * SEC, 0);
    assert_counter(add(f->st, "c100", 2, 100 * SEC, T0, 0), true, 2, T0 + 100 * SEC, 0);
    /* Within the grace: nothing goes. */
    assert_int_equal(ts_store_counters_sweep(f->st, T0 + SEC + grace, &n), TS_OK);
    assert_int_equal(n, 0);
    assert_int_equal(ts_store_counters_sweep(f->st, T0 + SEC + grace + 1, &n), TS_OK);
    assert_int_equal(n, 1); /* b1 */
    assert_int_equal(ts_store_counters_sweep(f->st, T0 + 10 * SEC + grace + 1, NULL), TS_OK);
    /* b10 and c5 are gone; c100 is still counting; answers are the same as before. */
    int64_t t = T0 + 10 * SEC + grace + 2;
    assert_counter(get(f->st, "c5", t), true, 0, 0, 0);
    assert_bucket(take(f->st, "b10", 10, SEC, t, 0), true, 10, 0);
    assert_counter(get(f->st, "c100", T0 + 99 * SEC), true, 2, T0 + 100 * SEC, 0);
    assert_int_equal(ts_store_counters_sweep(f->st, T0 + 100 * SEC + grace, &n), TS_OK);
    assert_int_equal(n, 1); /* b10, refilled by the take above at t (full at t) */
    assert_int_equal(ts_store_counters_sweep(f->st, T0 + 100 * SEC + grace + 1, &n), TS_OK);
    assert_int_equal(n, 1); /* c100 */
    assert_int_equal(ts_store_counters_sweep(f->st, T0 + 1000 * SEC, &n), TS_OK);
    assert_int_equal(n, 0);
    assert_int_equal(ts_store_counters_sweep(f->st, -1, &n), TS_E_INVALID);
}

static void test_counter_keys(void **state)
{
    struct fix *f = *state;
    char key[TS_STORE_COUNTER_KEY_MAX + 2];
    memset(key, 'k', sizeof(key));
    key[TS_STORE_COUNTER_KEY_MAX] = '\0'; /* the longest */
    struct ts_bucket_rule rule = {.capacity = 1, .refill_us = SEC};
    struct ts_bucket_result b;
    struct ts_counter_result c;
    assert_bucket(take(f->st, key, 1, SEC, T0, 1), true, 0, 0);
    assert_counter(add(f->st, key, 1, SEC, T0, 1), true, 1, T0 + SEC, 0);
    assert_counter(get(f->st, key, T0), true, 1, T0 + SEC, 0);
    assert_int_equal(ts_store_counter_reset(f->st, key), TS_OK);
    key[TS_STORE_COUNTER_KEY_MAX] = 'k'; /* one byte too many */
    key[TS_STORE_COUNTER_KEY_MAX + 1] = '\0';
    assert_int_equal(ts_store_bucket_take(f->st, key, &rule, T0, 1, &b), TS_E_INVALID);
    assert_int_equal(ts_store_counter_add(f->st, key, 1, SEC, T0, 1, &c), TS_E_INVALID);
    assert_int_equal(ts_store_counter_get(f->st, key, T0, &c), TS_E_INVALID);
    assert_int_equal(ts_store_counter_reset(f->st, key), TS_E_INVALID);
    /* Empty, NULL, and bytes that are not UTF-8 (PostgreSQL's text could not hold them). */
    static const char *const bad[] = {"",         "\xff",         "a\xc3",
                                      "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80"};
    for (size_t i = 0; i < TS_ARRAY_LEN(bad); i++) {
        assert_int_equal(ts_store_bucket_take(f->st, bad[i], &rule, T0, 1, &b), TS_E_INVALID);
        assert_int_equal(ts_store_counter_add(f->st, bad[i], 1, SEC, T0, 1, &c), TS_E_INVALID);
    }
    assert_int_equal(ts_store_bucket_take(f->st, NULL, &rule, T0, 1, &b), TS_E_INVALID);
    assert_int_equal(ts_store_counter_add(f->st, NULL, 1, SEC, T0, 1, &c), TS_E_INVALID);
    assert_int_equal(ts_store_counter_get(f->st, NULL, T0, &c), TS_E_INVALID);
    assert_int_equal(ts_store_counter_reset(f->st, NULL), TS_E_INVALID);
    /* Any UTF-8 is a key, byte for byte: "é" composed and decomposed are two keys. */
    assert_counter(add(f->st, "lockout:\xc3\xa9@example.com", 1, SEC, T0, 0), true, 1, T0 + SEC, 0);
    assert_counter(add(f->st, "lockout:e\xcc\x81@example.com", 1, SEC, T0, 0), true, 1, T0 + SEC,
                   0);
    assert_counter(add(f->st, "\xf0\x9f\x94\x91 key", 1, SEC, T0, 0), true, 1, T0 + SEC, 0);
}

/* Waits until the store sees other processes' commits (PostgreSQL: its listener is up). */
static void wait_not_blind(struct ts_store *st)
{
    for (int i = 0; i < 500; i++) {
        ts_store_poll_external(st);
        if (ts_store_epoch(st) == ts_store_epoch(st))
            return;
        usleep(10000);
    }
    fail_msg("the store stayed blind for 5 s");
}

/* Lets notifications of commits made so far arrive, and polls for them (PostgreSQL). SQLite's
 * poll_external cannot tell our own pooled connections' commits from other processes' (store.h)
 * and moves the epoch after any write, so there only the direct bumps are checked. */
static void settle(struct ts_store *st)
{
    if (!pg_host)
        return;
    for (int i = 0; i < 5; i++) {
        usleep(40000);
        ts_store_poll_external(st);
    }
}

static void test_counters_leave_epoch(void **state)
{
    struct fix *f = *state;
    wait_not_blind(f->st);
    settle(f->st);
    uint64_t e = ts_store_epoch(f->st);
    assert_bucket(take(f->st, "e", 2, SEC, T0, 1), true, 1, 0);
    assert_counter(add(f->st, "e", 1, SEC, T0, 2), true, 1, T0 + SEC, 0);
    assert_counter(add(f->st, "e", 5, SEC, T0, 0), true, 6, T0 + SEC, 0);
    assert_int_equal(ts_store_counter_reset(f->st, "e"), TS_OK);
    assert_int_equal(ts_store_counters_sweep(f->st, T0 + 3600 * SEC, NULL), TS_OK);
    settle(f->st);
    assert_int_equal(ts_store_epoch(f->st), e);
    /* A user change does move it, so the check above can fail. */
    struct ts_user *u = create_user(f->st, "epoch@example.com", NULL, T0);
    char sid[TS_STORE_ID_LEN + 1];
    create_session(f->st, u->id, 1, T0, sid);
    settle(f->st);
    assert_int_not_equal(ts_store_epoch(f->st), e);
    ts_user_free(u);
}

/* 16 threads, half on each of two stores open on one database (two "nodes"), race for the
 * last slot 50 times each. */
#define RACERS 16
#define RACES 50
#define RACE_LIMIT 100

enum race_kind { RACE_COUNTER, RACE_BUCKET, RACE_RESERVE };

struct racer {
    struct ts_store *st;
    enum race_kind kind;
    int allowed, refused, errors;
    atomic_int *in_check; /* RACE_RESERVE: threads between reserving and releasing */
    atomic_int *max_in_check;
    pthread_barrier_t *start;
};

static void *racer_main(void *arg)
{
    struct racer *r = arg;
    struct ts_bucket_rule rule = {.capacity = RACE_LIMIT, .refill_us = 3600 * SEC};
    pthread_barrier_wait(r->start);
    for (int i = 0; i < RACES; i++) {
        enum ts_rc rc;
        bool ok = false;
        if (r->kind == RACE_BUCKET) {
            struct ts_bucket_result b;
            rc = ts_store_bucket_take(r->st, "race", &rule, T0, 1, &b);
            ok = b.allowed;
        } else {
            /* RACE_RESERVE: at most 4 "password checks" at once, however many try. */
            int64_t limit = r->kind == RACE_COUNTER ? RACE_LIMIT : 4;
            struct ts_counter_result c;
            rc = ts_store_counter_add(r->st, "race", 1, 60 * SEC, T0, limit, &c);
            ok = c.allowed;
        }
        if (rc != TS_OK) {
            r->errors++;
            continue;
        }
        if (!ok) {
            r->refused++;
            continue;
        }
        r->allowed++;
        if (r->kind == RACE_RESERVE) {
            int now_in = atomic_fetch_add(r->in_check, 1) + 1;
            int seen = atomic_load(r->max_in_check);
            while (now_in > seen && !atomic_compare_exchange_weak(r->max_in_check, &seen, now_in)) {
            }
            usleep(200); /* the check */
            atomic_fetch_sub(r->in_check, 1);
            struct ts_counter_result c;
            if (ts_store_counter_add(r->st, "race", -1, 60 * SEC, T0, 4, &c) != TS_OK)
                r->errors++;
        }
    }
    return NULL;
}

static void race(struct fix *f, enum race_kind kind, int *allowed, int *max_in_check)
{
    struct ts_store *node2 = open_store(f->url);
    struct racer rs[RACERS];
    pthread_t th[RACERS];
    pthread_barrier_t start;
    atomic_int in_check = 0, max_in = 0;
    pthread_barrier_init(&start, NULL, RACERS);
    for (int i = 0; i < RACERS; i++) {
        rs[i] = (struct racer){.st = i % 2 ? node2 : f->st,
                               .kind = kind,
                               .in_check = &in_check,
                               .max_in_check = &max_in,
                               .start = &start};
        assert_int_equal(pthread_create(&th[i], NULL, racer_main, &rs[i]), 0);
    }
    for (int i = 0; i < RACERS; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&start);
    ts_store_close(node2);
    int total_allowed = 0, refused = 0, errors = 0;
    for (int i = 0; i < RACERS; i++) {
        total_allowed += rs[i].allowed;
        refused += rs[i].refused;
        errors += rs[i].errors;
    }
    assert_int_equal(errors, 0);
    assert_int_equal(total_allowed + refused, RACERS * RACES);
    *allowed = total_allowed;
    *max_in_check = atomic_load(&max_in);
}

static void test_counters_concurrent(void **state)
{
    struct fix *f = *state;
    int allowed = 0, max_in = 0;
    race(f, RACE_COUNTER, &allowed, &max_in);
    assert_int_equal(allowed, RACE_LIMIT);
    assert_counter(get(f->st, "race", T0), true, RACE_LIMIT, T0 + 60 * SEC, 0);

    race(f, RACE_BUCKET, &allowed, &max_in);
    assert_int_equal(allowed, RACE_LIMIT);
    assert_bucket(take(f->st, "race", RACE_LIMIT, 3600 * SEC, T0, 0), true, 0, 0);

    assert_int_equal(ts_store_counter_reset(f->st, "race"), TS_OK);
    race(f, RACE_RESERVE, &allowed, &max_in);
    assert_true(allowed >= 4);
    assert_in_range(max_in, 1, 4);
    assert_counter(get(f->st, "race", T0), true, 0, T0 + 60 * SEC, 0); /* all released */
}

int main(void)
{
    ts_log_set_level(TS_LOG_ERROR);
#define T(fn) cmocka_unit_test_setup_teardown(fn, store_setup, store_teardown)
    const struct CMUnitTest tests[] = {
        T(test_migrate_twice),
        cmocka_unit_test(test_open_bad_urls),
        T(test_meta),
        T(test_user_create_get),
        T(test_user_get_by_email),
        T(test_user_uniqueness),
        T(test_user_update),
        T(test_user_delete),
        T(test_user_list),
        T(test_sessions),
        T(test_sessions_delete_for_user),
        T(test_user_delete_cascades),
        T(test_refresh_rotation),
        T(test_refresh_reuse_rotation_disabled),
        T(test_password_set),
        T(test_signing_keys),
        T(test_reopen),
        T(test_concurrent_creates),
        T(test_bucket_refill),
        T(test_bucket_capacity),
        T(test_counter_window),
        T(test_counter_reservation),
        T(test_counters_sweep),
        T(test_counter_keys),
        T(test_counters_leave_epoch),
        T(test_counters_concurrent),
    };
#undef T
    return store_run_groups("store", tests, sizeof(tests) / sizeof(tests[0]));
}

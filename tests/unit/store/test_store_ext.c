/*
 * test_store_ext.c - unit tests of external identities in the store interface (store.h,
 * "external identity providers (AccessProviders) and the identities they vouch for" and
 * "token exchanges"), each test on a fresh database: a file in a temporary directory (SQLite)
 * and, when TESSERA_TEST_PG_HOST (and TESSERA_TEST_PG_PORT) name a PostgreSQL server
 * (scripts/pg.sh starts a throwaway one), the whole group again with a database per test
 * there (store_fixture.h).
 *
 * Covers providers (create, conflicts on name and issuer, update, list, delete), links from
 * (issuer, subject) to a document or a user (creation with the document's index entries,
 * repeat sign-ins, claims, conflicts that leave nothing behind, 16 racing first sign-ins),
 * dead links (identity deleted, expired, soft-deleted) and how every way of deleting an
 * identity takes its links along, the exchange records (list filters, paging, the sweep), the
 * change epoch, and the authorization objects (roles and profiles: create, conflicts per
 * kind, get, list, update, delete, argument checks, the version and the epoch their writes
 * move, writers on two stores at once). Times are passed in explicitly, as offsets from T0.
 */
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

#include "store/store.h"

#include "store_fixture.h"

#define SEC INT64_C(1000000)
#define HOUR (3600 * SEC)

/* The struct fields that take text are char *, never written through: this drops the const
 * of a string the test owns (-Wcast-qual forbids a plain cast). */
#define MUT(s) ((char *)(uintptr_t)(s))

#define ISS "https://idp.example.com"
#define ISS2 "https://other.example.org"

/* The base "now" of the running test (ts_now_us() at setup); every time is an offset of it. */
static int64_t T0;

static int setup(void **state)
{
    int rc = store_setup(state);
    T0 = ts_now_us();
    return rc;
}

/* ---- helpers ---- */

static json_t *js(const char *text)
{
    json_error_t e;
    json_t *v = json_loads(text, JSON_DECODE_ANY, &e);
    if (!v)
        fail_msg("bad JSON in the test: %s", text);
    return v;
}

/* Asserts that v equals the JSON text want (NULL: v is NULL). */
static void assert_json(const json_t *v, const char *want)
{
    if (!want) {
        assert_null(v);
        return;
    }
    json_t *w = js(want);
    if (!json_equal(v, w)) {
        char *got = v ? json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY) : NULL;
        fail_msg("JSON %s, expected %s", got ? got : "(null)", want);
    }
    json_decref(w);
}

static void make_collection(struct ts_store *st, const char *name)
{
    assert_int_equal(ts_store_collection_create(st, name, T0), TS_OK);
}

static void make_unique_index(struct ts_store *st, const char *coll, const char *name,
                              const char *terms)
{
    struct ts_index_def d = {.name = MUT(name), .terms = js(terms), .unique = true};
    assert_int_equal(ts_store_index_create(st, coll, &d, T0), TS_OK);
    json_decref(d.terms);
}

/* A provider named name for issuer, its config {"issuer": issuer, "tag": tag}. */
static enum ts_rc provider_put(struct ts_store *st, bool update, const char *name,
                               const char *issuer, int tag, int64_t now)
{
    struct ts_access_provider p = {
        .name = MUT(name),
        .issuer = MUT(issuer),
        .config = json_pack("{s:s, s:i, s:[s]}", "issuer", issuer, "tag", tag, "roles", "member"),
        .created_at = now,
        .updated_at = now};
    enum ts_rc rc = update ? ts_store_provider_update(st, &p) : ts_store_provider_create(st, &p);
    json_decref(p.config);
    return rc;
}

/* external_link with claims (JSON text, may be NULL) and, when coll is not NULL, a document of
 * coll with data (JSON text) to create. */
static enum ts_rc link_doc(struct ts_store *st, const char *issuer, const char *subject,
                           const char *claims, const char *coll, const char *data, int64_t now,
                           struct ts_external_link **out, bool *created)
{
    json_t *c = claims ? js(claims) : NULL;
    json_t *d = coll ? js(data) : NULL;
    struct ts_external_create cr = {.collection = coll, .data = d};
    enum ts_rc rc =
        ts_store_external_link(st, issuer, subject, c, coll ? &cr : NULL, now, out, created);
    json_decref(c);
    json_decref(d);
    return rc;
}

/* Links (issuer, subject) to a new document of coll and returns its id (heap). */
static char *new_linked_doc(struct ts_store *st, const char *issuer, const char *subject,
                            const char *coll, const char *data, int64_t now)
{
    struct ts_external_link *l = NULL;
    bool created = false;
    assert_int_equal(link_doc(st, issuer, subject, NULL, coll, data, now, &l, &created), TS_OK);
    assert_true(created);
    char *id = ts_xstrdup(l->id);
    ts_external_link_free(l);
    return id;
}

/* The id (heap) that (issuer, subject) is live-linked to, or NULL when the call finds none
 * (TS_E_NOT_FOUND); asserts that nothing is created. */
static char *linked_id(struct ts_store *st, const char *issuer, const char *subject, int64_t now)
{
    struct ts_external_link *l = NULL;
    bool created = true;
    enum ts_rc rc = link_doc(st, issuer, subject, NULL, NULL, NULL, now, &l, &created);
    if (rc == TS_E_NOT_FOUND) {
        assert_null(l);
        return NULL;
    }
    assert_int_equal(rc, TS_OK);
    assert_false(created);
    char *id = ts_xstrdup(l->id);
    ts_external_link_free(l);
    return id;
}

/* Asserts that (issuer, subject) has no live link at now (and that asking creates none). */
static void assert_unlinked(struct ts_store *st, const char *issuer, const char *subject,
                            int64_t now)
{
    char *id = linked_id(st, issuer, subject, now);
    if (id)
        fail_msg("%s %s is linked to %s", issuer, subject, id);
}

/* How many links the identity has (external_list). */
static size_t links_of(struct ts_store *st, const char *coll, const char *id)
{
    struct ts_external_link **l = NULL;
    size_t n = 0;
    assert_int_equal(ts_store_external_list(st, coll, id, &l, &n), TS_OK);
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(l[i]->collection, coll);
        assert_string_equal(l[i]->id, id);
    }
    ts_external_links_free(l, n);
    return n;
}

/* The number of live documents in coll. */
static size_t doc_count(struct ts_store *st, const char *coll, int64_t now)
{
    struct ts_doc **l = NULL;
    size_t n = 0;
    assert_int_equal(ts_store_doc_list(st, coll, NULL, 1000, now, &l, &n), TS_OK);
    ts_doc_list_free(l, n);
    return n;
}

/* A user to create (not stored), with a fresh id; the caller frees it. */
static struct ts_user *new_user(const char *email, int64_t now)
{
    struct ts_user *u = ts_user_new();
    ts_uuid_v4(u->id);
    u->aud = ts_xstrdup("authenticated");
    u->role = ts_xstrdup("authenticated");
    u->email = email ? ts_xstrdup(email) : NULL;
    u->created_at = now;
    u->updated_at = now;
    json_object_set_new(u->app_metadata, "provider", json_string("acme"));
    return u;
}

static enum ts_rc link_user(struct ts_store *st, const char *issuer, const char *subject,
                            const struct ts_user *u, int64_t now, struct ts_external_link **out,
                            bool *created)
{
    struct ts_external_create cr = {.collection = "users", .user = u};
    return ts_store_external_link(st, issuer, subject, NULL, &cr, now, out, created);
}

/* ---- providers ---- */

static void assert_provider(struct ts_store *st, const char *name, const char *issuer, int tag,
                            int64_t created_at, int64_t updated_at)
{
    struct ts_access_provider *p = NULL;
    assert_int_equal(ts_store_provider_get(st, name, &p), TS_OK);
    assert_string_equal(p->name, name);
    assert_string_equal(p->issuer, issuer);
    char want[256];
    snprintf(want, sizeof(want), "{\"issuer\":\"%s\",\"tag\":%d,\"roles\":[\"member\"]}", issuer,
             tag);
    assert_json(p->config, want);
    assert_int_equal(p->created_at, created_at);
    assert_int_equal(p->updated_at, updated_at);
    ts_access_provider_free(p);
}

static void assert_provider_names(struct ts_store *st, const char *want)
{
    struct ts_access_provider **l = NULL;
    size_t n = 0;
    assert_int_equal(ts_store_provider_list(st, &l, &n), TS_OK);
    char buf[256] = "";
    size_t len = 0;
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(buf + len, sizeof(buf) - len, "%s%s", i ? "," : "", l[i]->name);
    ts_access_providers_free(l, n);
    assert_string_equal(buf, want);
}

static void test_providers(void **state)
{
    struct fix *f = *state;
    struct ts_access_provider *p = NULL;
    assert_provider_names(f->st, "");
    assert_int_equal(ts_store_provider_get(f->st, "acme", &p), TS_E_NOT_FOUND);
    assert_null(p);

    assert_int_equal(provider_put(f->st, false, "zeta", ISS2, 1, T0), TS_OK);
    assert_int_equal(provider_put(f->st, false, "acme", ISS, 2, T0 + 1), TS_OK);
    assert_provider(f->st, "acme", ISS, 2, T0 + 1, T0 + 1);
    assert_provider(f->st, "zeta", ISS2, 1, T0, T0);

    /* name and issuer are both unique */
    assert_int_equal(provider_put(f->st, false, "acme", "https://new.example", 3, T0 + 2),
                     TS_E_CONFLICT);
    assert_int_equal(provider_put(f->st, false, "beta", ISS, 3, T0 + 2), TS_E_CONFLICT);
    assert_provider(f->st, "acme", ISS, 2, T0 + 1, T0 + 1);
    assert_int_equal(provider_put(f->st, false, "beta", "https://beta.example", 4, T0 + 3), TS_OK);
    assert_provider_names(f->st, "acme,beta,zeta"); /* by name, not by creation */

    /* update: another's issuer, a missing provider, then a real change */
    assert_int_equal(provider_put(f->st, true, "acme", ISS2, 5, T0 + 4), TS_E_CONFLICT);
    assert_provider(f->st, "acme", ISS, 2, T0 + 1, T0 + 1);
    assert_int_equal(provider_put(f->st, true, "nobody", "https://nobody.example", 5, T0 + 4),
                     TS_E_NOT_FOUND);
    assert_int_equal(provider_put(f->st, true, "acme", "https://acme2.example", 6, T0 + 5), TS_OK);
    assert_provider(f->st, "acme", "https://acme2.example", 6, T0 + 1, T0 + 5); /* created kept */
    /* the same issuer again is no conflict with itself; the old one is free */
    assert_int_equal(provider_put(f->st, true, "acme", "https://acme2.example", 7, T0 + 6), TS_OK);
    assert_provider(f->st, "acme", "https://acme2.example", 7, T0 + 1, T0 + 6);
    assert_int_equal(provider_put(f->st, false, "gamma", ISS, 8, T0 + 7), TS_OK);
    assert_provider_names(f->st, "acme,beta,gamma,zeta");

    /* delete */
    assert_int_equal(ts_store_provider_delete(f->st, "acme"), TS_OK);
    assert_int_equal(ts_store_provider_delete(f->st, "acme"), TS_E_NOT_FOUND);
    assert_int_equal(ts_store_provider_get(f->st, "acme", &p), TS_E_NOT_FOUND);
    assert_provider_names(f->st, "beta,gamma,zeta");
    assert_int_equal(provider_put(f->st, true, "acme", "https://acme3.example", 9, T0 + 8),
                     TS_E_NOT_FOUND);
    /* its name and issuer are free again */
    assert_int_equal(provider_put(f->st, false, "acme", "https://acme2.example", 10, T0 + 9),
                     TS_OK);
    assert_provider(f->st, "acme", "https://acme2.example", 10, T0 + 9, T0 + 9);

    /* the shared half's checks */
    struct ts_access_provider bad = {.name = MUT("x"), .issuer = MUT("https://x.example")};
    assert_int_equal(ts_store_provider_create(f->st, &bad), TS_E_INVALID);
}

/* ---- links to documents ---- */

static void test_link_document(void **state)
{
    struct fix *f = *state;
    make_collection(f->st, "people");
    make_unique_index(f->st, "people", "by_email", "[\"data.email\"]");

    /* The first sign-in creates the document, with its index entries, and the link. */
    struct ts_external_link *l = NULL;
    bool created = false;
    assert_int_equal(link_doc(f->st, ISS, "s1", "{\"sub\":\"s1\",\"email\":\"a@example.com\"}",
                              "people", "{\"email\":\"a@example.com\",\"name\":\"A\"}", T0, &l,
                              &created),
                     TS_OK);
    assert_true(created);
    assert_string_equal(l->issuer, ISS);
    assert_string_equal(l->subject, "s1");
    assert_string_equal(l->collection, "people");
    assert_true(ts_uuid_valid(l->id));
    assert_json(l->claims, "{\"sub\":\"s1\",\"email\":\"a@example.com\"}");
    assert_int_equal(l->created_at, T0);
    assert_int_equal(l->updated_at, T0);
    char *id = ts_xstrdup(l->id);
    ts_external_link_free(l);

    struct ts_doc *d = NULL;
    assert_int_equal(ts_store_doc_get(f->st, "people", id, T0, &d), TS_OK);
    assert_json(d->data, "{\"email\":\"a@example.com\",\"name\":\"A\"}");
    assert_int_equal(d->created_at, T0);
    assert_int_equal(d->ts, T0);
    assert_int_equal(d->expires_at, 0);
    ts_doc_free(d);
    json_t *vals = json_pack("[s]", "a@example.com");
    char *k = ts_store_index_key(vals);
    json_decref(vals);
    struct ts_doc **found = NULL;
    size_t n = 0;
    assert_int_equal(
        ts_store_index_lookup(f->st, "people", "by_email", k, NULL, 10, T0, &found, &n), TS_OK);
    assert_int_equal(n, 1);
    assert_string_equal(found[0]->id, id);
    ts_doc_list_free(found, n);
    free(k);

    /* Later sign-ins find it: same identity, claims replaced (kept when NULL). */
    l = NULL;
    assert_int_equal(link_doc(f->st, ISS, "s1", "{\"sub\":\"s1\",\"n\":2}", "people",
                              "{\"email\":\"other@example.com\"}", T0 + 10, &l, &created),
                     TS_OK);
    assert_false(created);
    assert_string_equal(l->id, id);
    assert_string_equal(l->collection, "people");
    assert_json(l->claims, "{\"sub\":\"s1\",\"n\":2}");
    assert_int_equal(l->created_at, T0);
    assert_int_equal(l->updated_at, T0 + 10);
    ts_external_link_free(l);
    l = NULL;
    assert_int_equal(link_doc(f->st, ISS, "s1", NULL, NULL, NULL, T0 + 20, &l, &created), TS_OK);
    assert_false(created);
    assert_string_equal(l->id, id);
    assert_json(l->claims, "{\"sub\":\"s1\",\"n\":2}");
    assert_int_equal(l->updated_at, T0 + 20);
    ts_external_link_free(l);
    assert_int_equal(doc_count(f->st, "people", T0 + 20), 1);

    struct ts_external_link **ls = NULL;
    assert_int_equal(ts_store_external_list(f->st, "people", id, &ls, &n), TS_OK);
    assert_int_equal(n, 1);
    assert_string_equal(ls[0]->issuer, ISS);
    assert_string_equal(ls[0]->subject, "s1");
    assert_json(ls[0]->claims, "{\"sub\":\"s1\",\"n\":2}");
    assert_int_equal(ls[0]->created_at, T0);
    assert_int_equal(ls[0]->updated_at, T0 + 20);
    ts_external_links_free(ls, n);

    /* No link and nothing to create: NOT_FOUND, *out untouched. */
    l = NULL;
    assert_int_equal(link_doc(f->st, ISS, "s2", "{}", NULL, NULL, T0 + 30, &l, &created),
                     TS_E_NOT_FOUND);
    assert_null(l);
    /* The subject belongs to its issuer: another issuer's "s1" is someone else. */
    char *other = new_linked_doc(f->st, ISS2, "s1", "people", "{\"name\":\"B\"}", T0 + 31);
    assert_string_not_equal(other, id);

    /* A unique term taken: TS_E_CONFLICT, and neither document nor link is left behind. */
    assert_int_equal(link_doc(f->st, ISS, "s3", NULL, "people", "{\"email\":\"a@example.com\"}",
                              T0 + 40, &l, &created),
                     TS_E_CONFLICT);
    assert_null(l);
    assert_int_equal(doc_count(f->st, "people", T0 + 40), 2);
    assert_unlinked(f->st, ISS, "s3", T0 + 41);

    /* No such collection. */
    assert_int_equal(link_doc(f->st, ISS, "s4", NULL, "nowhere", "{}", T0 + 50, &l, &created),
                     TS_E_NOT_FOUND);
    assert_unlinked(f->st, ISS, "s4", T0 + 51);

    /* The shared half's checks. */
    assert_int_equal(link_doc(f->st, ISS, "", NULL, "people", "{}", T0, &l, &created),
                     TS_E_INVALID);
    assert_int_equal(link_doc(f->st, ISS, "s5", "[1]", "people", "{}", T0, &l, &created),
                     TS_E_INVALID);
    free(other);
    free(id);
}

/* ---- links to users ---- */

static void test_link_users(void **state)
{
    struct fix *f = *state;
    struct ts_user *u = new_user("ext@example.com", T0);
    struct ts_external_link *l = NULL;
    bool created = false;
    assert_int_equal(link_user(f->st, ISS, "u1", u, T0, &l, &created), TS_OK);
    assert_true(created);
    assert_string_equal(l->collection, "users");
    assert_string_equal(l->id, u->id);
    assert_null(l->claims);
    ts_external_link_free(l);

    struct ts_user *got = NULL;
    assert_int_equal(ts_store_user_get(f->st, u->id, &got), TS_OK);
    assert_string_equal(got->email, "ext@example.com");
    assert_string_equal(got->aud, "authenticated");
    assert_json(got->app_metadata, "{\"provider\":\"acme\"}");
    assert_int_equal(got->created_at, T0);
    assert_false(got->has_password);
    ts_user_free(got);

    /* Again, with another user to create (ignored: the link is live). */
    struct ts_user *u2 = new_user("ext2@example.com", T0 + 1);
    l = NULL;
    assert_int_equal(link_user(f->st, ISS, "u1", u2, T0 + 1, &l, &created), TS_OK);
    assert_false(created);
    assert_string_equal(l->id, u->id);
    ts_external_link_free(l);
    assert_int_equal(ts_store_user_get(f->st, u2->id, &got), TS_E_NOT_FOUND);

    /* Never linked by e-mail: the e-mail taken is a conflict, and nothing is left behind. */
    struct ts_user *u3 = new_user("ext@example.com", T0 + 2);
    l = NULL;
    assert_int_equal(link_user(f->st, ISS, "u3", u3, T0 + 2, &l, &created), TS_E_CONFLICT);
    assert_null(l);
    assert_int_equal(ts_store_user_get(f->st, u3->id, &got), TS_E_NOT_FOUND);
    assert_unlinked(f->st, ISS, "u3", T0 + 3);
    assert_int_equal(links_of(f->st, "users", u->id), 1);

    /* Soft-deleted: the link is dead. Without create it is left alone; with create it is
     * replaced by a link to the new user. */
    got = NULL;
    assert_int_equal(ts_store_user_get(f->st, u->id, &got), TS_OK);
    int64_t prev = got->updated_at;
    got->deleted_at = T0 + 4;
    got->updated_at = T0 + 4;
    assert_int_equal(ts_store_user_update(f->st, got, prev), TS_OK);
    ts_user_free(got);
    assert_unlinked(f->st, ISS, "u1", T0 + 5);
    assert_int_equal(links_of(f->st, "users", u->id), 1);
    l = NULL;
    assert_int_equal(link_user(f->st, ISS, "u1", u2, T0 + 6, &l, &created), TS_OK);
    assert_true(created);
    assert_string_equal(l->id, u2->id);
    assert_int_equal(l->created_at, T0 + 6);
    ts_external_link_free(l);
    assert_int_equal(links_of(f->st, "users", u->id), 0);
    assert_int_equal(links_of(f->st, "users", u2->id), 1);
    char *id = linked_id(f->st, ISS, "u1", T0 + 7);
    assert_string_equal(id, u2->id);
    free(id);

    /* A link created before its identity is dead too (the id re-used by a newer user). */
    struct ts_user *u4 = new_user("later@example.com", T0 + 100);
    l = NULL;
    assert_int_equal(link_user(f->st, ISS, "u4", u4, T0 + 8, &l, &created), TS_OK);
    assert_true(created);
    ts_external_link_free(l);
    assert_unlinked(f->st, ISS, "u4", T0 + 9);

    ts_user_free(u);
    ts_user_free(u2);
    ts_user_free(u3);
    ts_user_free(u4);
}

/* ---- concurrency: racing first sign-ins of one subject ---- */

#define RACERS 16

struct racer {
    struct ts_store *st;
    int index;
    bool users;
    pthread_barrier_t *start;
    enum ts_rc rc;
    bool created;
    char id[64];
};

static void *racer_main(void *arg)
{
    struct racer *r = arg;
    json_t *data = json_pack("{s:i}", "n", r->index);
    json_t *claims = json_pack("{s:i}", "racer", r->index);
    char email[64];
    snprintf(email, sizeof(email), "racer%02d@example.com", r->index);
    struct ts_user *u = new_user(email, T0 + r->index);
    struct ts_external_create cr = {.collection = r->users ? "users" : "people", .data = data};
    if (r->users)
        cr.user = u;
    struct ts_external_link *l = NULL;
    pthread_barrier_wait(r->start);
    r->rc = ts_store_external_link(r->st, ISS, "racing", claims, &cr, T0 + 100 + r->index, &l,
                                   &r->created);
    if (r->rc == TS_OK)
        snprintf(r->id, sizeof(r->id), "%s", l->id);
    ts_external_link_free(l);
    ts_user_free(u);
    json_decref(claims);
    json_decref(data);
    return NULL;
}

/* Runs RACERS first sign-ins at once; all must find one identity, made by exactly one. */
static void race(struct ts_store *st, bool users, char winner[64])
{
    struct racer rs[RACERS];
    pthread_t th[RACERS];
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, RACERS);
    for (int i = 0; i < RACERS; i++) {
        rs[i] = (struct racer){.st = st, .index = i, .users = users, .start = &start};
        assert_int_equal(pthread_create(&th[i], NULL, racer_main, &rs[i]), 0);
    }
    for (int i = 0; i < RACERS; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&start);
    int made = 0;
    for (int i = 0; i < RACERS; i++) {
        if (rs[i].rc != TS_OK)
            fail_msg("racer %d: %s", i, ts_rc_name(rs[i].rc));
        if (strcmp(rs[i].id, rs[0].id) != 0)
            fail_msg("racer %d got %s, racer 0 got %s", i, rs[i].id, rs[0].id);
        made += rs[i].created;
    }
    assert_int_equal(made, 1);
    snprintf(winner, 64, "%s", rs[0].id);
}

static void test_link_concurrent(void **state)
{
    struct fix *f = *state;
    make_collection(f->st, "people");
    char id[64];
    race(f->st, false, id);
    assert_int_equal(doc_count(f->st, "people", T0 + HOUR), 1); /* the losers made nothing */
    assert_int_equal(links_of(f->st, "people", id), 1);

    /* the same for users (the collection's delete took the first link along) */
    assert_int_equal(ts_store_collection_delete(f->st, "people"), TS_OK);
    race(f->st, true, id);
    struct ts_user **users = NULL;
    size_t n = 0;
    int64_t total = 0;
    assert_int_equal(ts_store_user_list(f->st, 0, 100, NULL, &users, &n, &total), TS_OK);
    assert_int_equal(total, 1);
    assert_string_equal(users[0]->id, id);
    ts_user_list_free(users, n);
    assert_int_equal(links_of(f->st, "users", id), 1);
}

/* ---- dead links, and deletes that take links along ---- */

static void test_link_doc_deleted(void **state)
{
    struct fix *f = *state;
    make_collection(f->st, "people");
    char *id = new_linked_doc(f->st, ISS, "s1", "people", "{\"v\":1}", T0);
    char *keep = new_linked_doc(f->st, ISS, "s2", "people", "{\"v\":2}", T0);
    assert_int_equal(links_of(f->st, "people", id), 1);

    assert_int_equal(ts_store_doc_delete(f->st, "people", id, T0 + 1), TS_OK);
    assert_int_equal(links_of(f->st, "people", id), 0); /* gone with the document */
    assert_unlinked(f->st, ISS, "s1", T0 + 2);

    /* signing in again makes a new identity */
    char *id2 = new_linked_doc(f->st, ISS, "s1", "people", "{\"v\":3}", T0 + 3);
    assert_string_not_equal(id2, id);
    char *again = linked_id(f->st, ISS, "s1", T0 + 4);
    assert_string_equal(again, id2);
    free(again);
    /* the other subject's link was not touched */
    again = linked_id(f->st, ISS, "s2", T0 + 4);
    assert_string_equal(again, keep);
    free(again);
    free(id);
    free(id2);
    free(keep);
}

/* Makes the document coll/id expire at expires_at (a replace keeping its data). */
static void expire_doc(struct ts_store *st, const char *coll, const char *id, int64_t expires_at,
                       int64_t now)
{
    json_t *d = js("{\"v\":0}");
    struct ts_doc_write w = {.mode = TS_DOC_REPLACE,
                             .collection = coll,
                             .id = id,
                             .data = d,
                             .expires_at = expires_at,
                             .now = now};
    assert_int_equal(ts_store_doc_write(st, &w, NULL), TS_OK);
    json_decref(d);
}

static void test_link_doc_expired(void **state)
{
    struct fix *f = *state;
    make_collection(f->st, "people");

    /* Expired: the link is dead (but left alone without create), then replaced. */
    char *id = new_linked_doc(f->st, ISS, "s1", "people", "{}", T0);
    expire_doc(f->st, "people", id, T0 + 100, T0 + 1);
    char *got = linked_id(f->st, ISS, "s1", T0 + 99);
    assert_string_equal(got, id);
    free(got);
    assert_unlinked(f->st, ISS, "s1", T0 + 100);
    assert_int_equal(links_of(f->st, "people", id), 1);
    char *id2 = new_linked_doc(f->st, ISS, "s1", "people", "{}", T0 + 101);
    assert_string_not_equal(id2, id);
    assert_int_equal(links_of(f->st, "people", id), 0);
    assert_int_equal(links_of(f->st, "people", id2), 1);

    /* Swept: its links go with it. */
    char *id3 = new_linked_doc(f->st, ISS, "s3", "people", "{}", T0 + 102);
    expire_doc(f->st, "people", id3, T0 + 200, T0 + 103);
    struct ts_sweep_counts c;
    assert_int_equal(ts_store_sweep(f->st, T0 + 300, 0, 100, &c), TS_OK);
    assert_int_equal(c.documents, 2); /* id (expired, never swept) and id3 */
    assert_int_equal(links_of(f->st, "people", id3), 0);
    assert_int_equal(links_of(f->st, "people", id2), 1);
    assert_unlinked(f->st, ISS, "s3", T0 + 301);

    /* Created again over the expired document: its links are not inherited. */
    char *id4 = new_linked_doc(f->st, ISS, "s4", "people", "{}", T0 + 302);
    expire_doc(f->st, "people", id4, T0 + 400, T0 + 303);
    json_t *d = js("{}");
    struct ts_doc_write w = {
        .mode = TS_DOC_CREATE, .collection = "people", .id = id4, .data = d, .now = T0 + 500};
    assert_int_equal(ts_store_doc_write(f->st, &w, NULL), TS_OK);
    json_decref(d);
    assert_int_equal(links_of(f->st, "people", id4), 0);
    assert_unlinked(f->st, ISS, "s4", T0 + 501);

    free(id);
    free(id2);
    free(id3);
    free(id4);
}

static void test_link_user_delete(void **state)
{
    struct fix *f = *state;
    struct ts_user *u = new_user("del@example.com", T0);
    struct ts_external_link *l = NULL;
    bool created = false;
    assert_int_equal(link_user(f->st, ISS, "u1", u, T0, &l, &created), TS_OK);
    ts_external_link_free(l);
    l = NULL;
    /* another subject cannot create the same user again (its id is taken) */
    assert_int_equal(link_user(f->st, ISS2, "other-sub", u, T0 + 1, &l, &created), TS_E_CONFLICT);
    assert_null(l);
    struct ts_user *v = new_user("keep@example.com", T0);
    assert_int_equal(link_user(f->st, ISS2, "v1", v, T0, &l, &created), TS_OK);
    ts_external_link_free(l);
    assert_int_equal(links_of(f->st, "users", u->id), 1);

    assert_int_equal(ts_store_user_delete(f->st, u->id), TS_OK);
    assert_int_equal(links_of(f->st, "users", u->id), 0);
    assert_unlinked(f->st, ISS, "u1", T0 + 2);
    assert_int_equal(links_of(f->st, "users", v->id), 1);
    ts_user_free(u);
    ts_user_free(v);
}

static void test_link_collection_delete(void **state)
{
    struct fix *f = *state;
    make_collection(f->st, "people");
    make_collection(f->st, "other");
    char *a = new_linked_doc(f->st, ISS, "a", "people", "{}", T0);
    char *b = new_linked_doc(f->st, ISS2, "b", "people", "{}", T0);
    char *c = new_linked_doc(f->st, ISS, "c", "other", "{}", T0);

    assert_int_equal(ts_store_collection_delete(f->st, "people"), TS_OK);
    assert_int_equal(links_of(f->st, "people", a), 0);
    assert_int_equal(links_of(f->st, "people", b), 0);
    assert_unlinked(f->st, ISS, "a", T0 + 1);
    assert_unlinked(f->st, ISS2, "b", T0 + 1);
    char *got = linked_id(f->st, ISS, "c", T0 + 1);
    assert_string_equal(got, c);
    free(got);

    /* a collection made again under the same name starts without links */
    make_collection(f->st, "people");
    assert_unlinked(f->st, ISS, "a", T0 + 2);
    free(a);
    free(b);
    free(c);
}

/* ---- exchanges ---- */

static void exchange_id(char id[TS_STORE_ID_LEN + 1], int n)
{
    snprintf(id, TS_STORE_ID_LEN + 1, "00000000-0000-4000-8000-%012d", n);
}

static void record(struct ts_store *st, int n, const char *coll, const char *ident,
                   const char *token_id, const char *meta, int64_t expires_at)
{
    struct ts_exchange_row r = {.provider = MUT("acme"),
                                .subject = MUT("sub-1"),
                                .collection = MUT(coll),
                                .identity_id = MUT(ident),
                                .token_id = MUT(token_id),
                                .token_type = MUT("urn:ietf:params:oauth:token-type:access_token"),
                                .meta = meta ? js(meta) : NULL,
                                .created_at = T0 + n,
                                .expires_at = expires_at};
    exchange_id(r.id, n);
    assert_int_equal(ts_store_exchange_record(st, &r), TS_OK);
    json_decref(r.meta);
}

/* The numbers of the exchanges listed, joined with commas. */
static enum ts_rc exchange_nums(struct ts_store *st, const char *coll, const char *ident,
                                const char *after, int64_t limit, int64_t now, char buf[256])
{
    struct ts_exchange_row **l = NULL;
    size_t n = 0;
    enum ts_rc rc = ts_store_exchange_list(st, coll, ident, after, limit, now, &l, &n);
    buf[0] = '\0';
    size_t len = 0;
    for (size_t i = 0; rc == TS_OK && i < n; i++)
        len += (size_t)snprintf(buf + len, 256 - len, "%s%d", i ? "," : "",
                                atoi(l[i]->id + 24)); /* the last group */
    if (rc == TS_OK)
        ts_exchange_rows_free(l, n);
    return rc;
}

#define assert_exchanges(st, coll, ident, after, limit, now, want)                                 \
    do {                                                                                           \
        char b_[256];                                                                              \
        assert_int_equal(exchange_nums(st, coll, ident, after, limit, now, b_), TS_OK);            \
        assert_string_equal(b_, want);                                                             \
    } while (0)

static void test_exchanges(void **state)
{
    struct fix *f = *state;
    record(f->st, 3, "users", "u-1", NULL, "{\"client\":\"cli\",\"scope\":\"a b\"}", T0 + HOUR);
    record(f->st, 1, "people", "p-1", "tok-1", NULL, T0 + HOUR);
    record(f->st, 5, "people", "p-1", NULL, NULL, T0 + 10);
    record(f->st, 2, "users", "u-1", NULL, NULL, T0 + 2 * HOUR);
    record(f->st, 4, "people", "p-2", NULL, NULL, T0 + HOUR);

    /* one record, field by field */
    struct ts_exchange_row **l = NULL;
    size_t n = 0;
    assert_int_equal(ts_store_exchange_list(f->st, "users", "u-1", NULL, 10, T0, &l, &n), TS_OK);
    assert_int_equal(n, 2);
    char want[TS_STORE_ID_LEN + 1];
    exchange_id(want, 3);
    assert_string_equal(l[1]->id, want);
    assert_string_equal(l[1]->provider, "acme");
    assert_string_equal(l[1]->subject, "sub-1");
    assert_string_equal(l[1]->collection, "users");
    assert_string_equal(l[1]->identity_id, "u-1");
    assert_null(l[1]->token_id);
    assert_string_equal(l[1]->token_type, "urn:ietf:params:oauth:token-type:access_token");
    assert_json(l[1]->meta, "{\"client\":\"cli\",\"scope\":\"a b\"}");
    assert_int_equal(l[1]->created_at, T0 + 3);
    assert_int_equal(l[1]->expires_at, T0 + HOUR);
    assert_null(l[0]->meta);
    ts_exchange_rows_free(l, n);
    l = NULL;
    assert_int_equal(ts_store_exchange_list(f->st, "people", "p-1", NULL, 10, T0, &l, &n), TS_OK);
    assert_int_equal(n, 2);
    assert_string_equal(l[0]->token_id, "tok-1");
    ts_exchange_rows_free(l, n);

    /* by id; expired ones left out; filtered by identity; paged */
    assert_exchanges(f->st, NULL, NULL, NULL, 100, T0, "1,2,3,4,5");
    assert_exchanges(f->st, NULL, NULL, NULL, 100, T0 + 10, "1,2,3,4");
    assert_exchanges(f->st, NULL, NULL, NULL, 100, T0 + HOUR, "2");
    assert_exchanges(f->st, "people", "p-1", NULL, 100, T0, "1,5");
    assert_exchanges(f->st, "people", "p-1", NULL, 100, T0 + 10, "1");
    assert_exchanges(f->st, "people", "u-1", NULL, 100, T0, "");
    assert_exchanges(f->st, "users", "u-1", NULL, 100, T0, "2,3");
    assert_exchanges(f->st, NULL, NULL, NULL, 2, T0, "1,2");
    exchange_id(want, 2);
    assert_exchanges(f->st, NULL, NULL, want, 2, T0, "3,4");
    exchange_id(want, 4);
    assert_exchanges(f->st, NULL, NULL, want, 2, T0, "5");
    assert_exchanges(f->st, NULL, NULL, want, 2, T0 + 10, "");
    exchange_id(want, 1);
    assert_exchanges(f->st, "users", "u-1", want, 1, T0, "2");

    /* the id is unique; the shared half's checks */
    struct ts_exchange_row r = {.provider = MUT("acme"),
                                .subject = MUT("s"),
                                .collection = MUT("users"),
                                .identity_id = MUT("u-1"),
                                .token_type = MUT("t"),
                                .created_at = T0,
                                .expires_at = T0 + HOUR};
    exchange_id(r.id, 1);
    assert_int_equal(ts_store_exchange_record(f->st, &r), TS_E_CONFLICT);
    r.expires_at = 0;
    assert_int_equal(ts_store_exchange_record(f->st, &r), TS_E_INVALID);
    char buf[256];
    assert_int_equal(exchange_nums(f->st, NULL, NULL, NULL, 0, T0, buf), TS_E_INVALID);
    assert_int_equal(exchange_nums(f->st, "users", NULL, NULL, 10, T0, buf), TS_E_INVALID);
}

#define SWEEP_EXPIRED 25
#define SWEEP_BATCH 10

static void test_sweep_exchanges(void **state)
{
    struct fix *f = *state;
    for (int i = 0; i < SWEEP_EXPIRED; i++)
        record(f->st, 100 + i, "users", "u-1", NULL, NULL, T0 + 10 + i);
    record(f->st, 1, "users", "u-1", NULL, NULL, T0 + HOUR);
    record(f->st, 2, "people", "p-1", NULL, NULL, T0 + 1000); /* expires exactly at now */
    int64_t now = T0 + 1000;

    struct ts_sweep_counts c;
    int64_t total = 0;
    int batches = 0;
    do {
        assert_int_equal(ts_store_sweep(f->st, now, 0, SWEEP_BATCH, &c), TS_OK);
        assert_true(c.exchanges <= SWEEP_BATCH);
        total += c.exchanges;
        assert_true(++batches <= 5);
    } while (c.exchanges == SWEEP_BATCH);
    assert_int_equal(batches, 3);
    assert_int_equal(total, SWEEP_EXPIRED + 1);
    /* deleted, not just expired: absent even when read at an earlier now */
    assert_exchanges(f->st, NULL, NULL, NULL, 100, T0, "1");

    struct ts_sweep_counts sum;
    assert_int_equal(ts_store_sweep_pass(f->st, T0 + 2 * HOUR, 0, SWEEP_BATCH, 0, NULL, &sum),
                     TS_OK);
    assert_int_equal(sum.exchanges, 1);
    assert_exchanges(f->st, NULL, NULL, NULL, 100, T0, "");
}

/* ---- the change epoch ---- */

/* Lets notifications of commits made so far arrive, and polls for them (PostgreSQL). */
static void settle(struct ts_store *st)
{
    if (!pg_host)
        return;
    for (int i = 0; i < 5; i++) {
        usleep(40000);
        ts_store_poll_external(st);
    }
}

/* Asserts that op moves the epoch (or, with moves false, leaves it), from a settled, not
 * blind, store. */
#define assert_epoch(st, moves, op)                                                                \
    do {                                                                                           \
        settle(st);                                                                                \
        uint64_t e_ = ts_store_epoch(st);                                                          \
        assert_int_equal(ts_store_epoch(st), e_);                                                  \
        op;                                                                                        \
        if (moves)                                                                                 \
            assert_int_not_equal(ts_store_epoch(st), e_);                                          \
        else                                                                                       \
            assert_int_equal(ts_store_epoch(st), e_);                                              \
    } while (0)

/* PostgreSQL is blind (a new epoch on every read) until its listener is up: waits for it. */
static void wait_sighted(struct ts_store *st)
{
    for (int i = 0; ts_store_epoch(st) != ts_store_epoch(st); i++) {
        if (i == 500)
            fail_msg("the store stayed blind for 5 s");
        ts_store_poll_external(st);
        usleep(10000);
    }
}

static void test_epoch(void **state)
{
    struct fix *f = *state;
    wait_sighted(f->st);
    assert_epoch(f->st, true,
                 assert_int_equal(provider_put(f->st, false, "acme", ISS, 1, T0), TS_OK));
    assert_epoch(f->st, true,
                 assert_int_equal(provider_put(f->st, true, "acme", ISS2, 2, T0 + 1), TS_OK));
    assert_epoch(f->st, true, assert_int_equal(ts_store_provider_delete(f->st, "acme"), TS_OK));
    /* failures move nothing */
    assert_epoch(f->st, false,
                 assert_int_equal(ts_store_provider_delete(f->st, "acme"), TS_E_NOT_FOUND));
    assert_epoch(
        f->st, false,
        assert_int_equal(provider_put(f->st, true, "acme", ISS, 3, T0 + 2), TS_E_NOT_FOUND));

    /* a link that creates its identity moves it (the identity is new) */
    make_collection(f->st, "people");
    char *id = NULL;
    assert_epoch(f->st, true, id = new_linked_doc(f->st, ISS, "s1", "people", "{}", T0 + 3));
    free(id);
}

/* ---- authorization objects: roles and profiles ---- */

#define ROLE TS_AUTHZ_ROLE
#define PROFILE TS_AUTHZ_PROFILE

/* Creates (or, with update, updates) the object (kind, name) with config (JSON text). */
static enum ts_rc authz_put(struct ts_store *st, bool update, enum ts_authz_kind kind,
                            const char *name, const char *config, int64_t created_at,
                            int64_t updated_at)
{
    struct ts_authz_object o = {.kind = kind,
                                .name = MUT(name),
                                .config = js(config),
                                .created_at = created_at,
                                .updated_at = updated_at};
    enum ts_rc rc = update ? ts_store_authz_update(st, &o) : ts_store_authz_create(st, &o);
    json_decref(o.config);
    return rc;
}

static void assert_authz(struct ts_store *st, enum ts_authz_kind kind, const char *name,
                         const char *config, int64_t created_at, int64_t updated_at)
{
    struct ts_authz_object *o = NULL;
    assert_int_equal(ts_store_authz_get(st, kind, name, &o), TS_OK);
    assert_int_equal(o->kind, kind);
    assert_string_equal(o->name, name);
    assert_json(o->config, config);
    assert_int_equal(o->created_at, created_at);
    assert_int_equal(o->updated_at, updated_at);
    ts_authz_object_free(o);
}

/* Asserts the names ts_store_authz_list gives for kind, in its order, comma-separated. */
static void assert_authz_names(struct ts_store *st, enum ts_authz_kind kind, const char *want)
{
    struct ts_authz_object **l = NULL;
    size_t n = 0;
    assert_int_equal(ts_store_authz_list(st, kind, &l, &n), TS_OK);
    char buf[512] = "";
    size_t len = 0;
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(l[i]->kind, kind);
        len += (size_t)snprintf(buf + len, sizeof(buf) - len, "%s%s", i ? "," : "", l[i]->name);
    }
    ts_authz_objects_free(l, n);
    assert_string_equal(buf, want);
}

static int64_t authz_version(struct ts_store *st)
{
    int64_t v = -1;
    assert_int_equal(ts_store_authz_version(st, &v), TS_OK);
    assert_true(v >= 0);
    return v;
}

/* Asserts that op moves the authorization version by exactly `by` (0: leaves it). */
#define assert_version(st, by, op)                                                                 \
    do {                                                                                           \
        int64_t v_ = authz_version(st);                                                            \
        op;                                                                                        \
        assert_int_equal(authz_version(st), v_ + (by));                                            \
    } while (0)

#define EDITOR "{\"name\":\"editor\",\"membership\":[{\"resource\":\"people\"}],\"n\":1}"
#define EDITOR2 "{\"name\":\"editor\",\"privileges\":{\"people\":[\"read\"]},\"n\":2}"

static void test_authz(void **state)
{
    struct fix *f = *state;
    struct ts_authz_object *o = NULL;
    assert_int_equal(authz_version(f->st), 0); /* migration 6 seeds it */
    assert_authz_names(f->st, ROLE, "");
    assert_authz_names(f->st, PROFILE, "");
    assert_int_equal(ts_store_authz_get(f->st, ROLE, "editor", &o), TS_E_NOT_FOUND);
    assert_null(o);

    /* create; the config round-trips whole (nested values, numbers, non-ASCII text) */
    assert_version(
        f->st, 1, assert_int_equal(authz_put(f->st, false, ROLE, "editor", EDITOR, T0, T0), TS_OK));
    assert_authz(f->st, ROLE, "editor", EDITOR, T0, T0);
    const char *odd = "{\"name\":\"Zoë\",\"deep\":{\"a\":[1,2.5,true,null,{\"b\":\"c\"}]},"
                      "\"empty\":{}}";
    assert_version(
        f->st, 1,
        assert_int_equal(authz_put(f->st, false, ROLE, "Zoë", odd, T0 + 1, T0 + 2), TS_OK));
    assert_authz(f->st, ROLE, "Zoë", odd, T0 + 1, T0 + 2);

    /* (kind, name) is unique: a duplicate conflicts and changes nothing */
    assert_version(f->st, 0,
                   assert_int_equal(authz_put(f->st, false, ROLE, "editor", "{}", T0 + 3, T0 + 3),
                                    TS_E_CONFLICT));
    assert_authz(f->st, ROLE, "editor", EDITOR, T0, T0);
    /* ... but the same name under the other kind is another object */
    assert_version(
        f->st, 1,
        assert_int_equal(authz_put(f->st, false, PROFILE, "editor", "{\"p\":1}", T0 + 4, T0 + 4),
                         TS_OK));
    assert_authz(f->st, PROFILE, "editor", "{\"p\":1}", T0 + 4, T0 + 4);
    assert_authz(f->st, ROLE, "editor", EDITOR, T0, T0);

    /* list: one kind only, by name in byte order (upper case before '_' before lower case,
     * multi-byte UTF-8 last) */
    const char *names[] = {"b", "_x", "a", "Zed", "aa", "éclair"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        assert_int_equal(authz_put(f->st, false, ROLE, names[i], "{}", T0 + 5, T0 + 5), TS_OK);
    assert_authz_names(f->st, ROLE, "Zed,Zoë,_x,a,aa,b,editor,éclair");
    assert_authz_names(f->st, PROFILE, "editor");
    assert_int_equal(authz_version(f->st), 9);

    /* reads move nothing */
    assert_version(f->st, 0, {
        assert_authz(f->st, ROLE, "editor", EDITOR, T0, T0);
        assert_authz_names(f->st, ROLE, "Zed,Zoë,_x,a,aa,b,editor,éclair");
        assert_int_equal(ts_store_authz_get(f->st, PROFILE, "Zed", &o), TS_E_NOT_FOUND);
    });

    /* update: the config is replaced (not merged), created_at kept whatever the caller says */
    assert_version(
        f->st, 1,
        assert_int_equal(authz_put(f->st, true, ROLE, "editor", EDITOR2, T0 + 99, T0 + 10), TS_OK));
    assert_authz(f->st, ROLE, "editor", EDITOR2, T0, T0 + 10);
    assert_authz(f->st, PROFILE, "editor", "{\"p\":1}", T0 + 4, T0 + 4); /* the other kind */
    /* a missing object, or one of the other kind only */
    assert_version(f->st, 0,
                   assert_int_equal(authz_put(f->st, true, ROLE, "nobody", "{}", T0, T0 + 11),
                                    TS_E_NOT_FOUND));
    assert_version(f->st, 0,
                   assert_int_equal(authz_put(f->st, true, PROFILE, "Zed", "{}", T0, T0 + 11),
                                    TS_E_NOT_FOUND));
    assert_int_equal(ts_store_authz_get(f->st, PROFILE, "Zed", &o), TS_E_NOT_FOUND);
    assert_int_equal(ts_store_authz_get(f->st, ROLE, "nobody", &o), TS_E_NOT_FOUND);
    assert_null(o);
    /* an update to the same config still counts as a write */
    assert_version(
        f->st, 1,
        assert_int_equal(authz_put(f->st, true, ROLE, "editor", EDITOR2, T0, T0 + 12), TS_OK));
    assert_authz(f->st, ROLE, "editor", EDITOR2, T0, T0 + 12);

    /* delete: one kind only; a second time NOT_FOUND */
    assert_version(f->st, 1, assert_int_equal(ts_store_authz_delete(f->st, ROLE, "editor"), TS_OK));
    assert_version(f->st, 0,
                   assert_int_equal(ts_store_authz_delete(f->st, ROLE, "editor"), TS_E_NOT_FOUND));
    assert_version(f->st, 0,
                   assert_int_equal(ts_store_authz_delete(f->st, PROFILE, "Zed"), TS_E_NOT_FOUND));
    assert_int_equal(ts_store_authz_get(f->st, ROLE, "editor", &o), TS_E_NOT_FOUND);
    assert_authz(f->st, PROFILE, "editor", "{\"p\":1}", T0 + 4, T0 + 4);
    assert_authz_names(f->st, ROLE, "Zed,Zoë,_x,a,aa,b,éclair");
    assert_version(f->st, 0,
                   assert_int_equal(authz_put(f->st, true, ROLE, "editor", EDITOR, T0, T0 + 13),
                                    TS_E_NOT_FOUND));
    /* the name is free again */
    assert_version(
        f->st, 1,
        assert_int_equal(authz_put(f->st, false, ROLE, "editor", EDITOR, T0 + 14, T0 + 14), TS_OK));
    assert_authz(f->st, ROLE, "editor", EDITOR, T0 + 14, T0 + 14);
    assert_version(f->st, 1,
                   assert_int_equal(ts_store_authz_delete(f->st, PROFILE, "editor"), TS_OK));
    assert_authz_names(f->st, PROFILE, "");
    assert_int_equal(authz_version(f->st), 14);
}

static void test_authz_invalid(void **state)
{
    struct fix *f = *state;
    char long_name[TS_STORE_NAME_MAX + 2];
    memset(long_name, 'n', sizeof(long_name) - 1);
    long_name[sizeof(long_name) - 1] = '\0'; /* TS_STORE_NAME_MAX + 1 bytes */
    char max_name[TS_STORE_NAME_MAX + 1];
    memset(max_name, 'm', sizeof(max_name) - 1);
    max_name[sizeof(max_name) - 1] = '\0';
    const enum ts_authz_kind bad_kinds[] = {(enum ts_authz_kind)0, (enum ts_authz_kind)3,
                                            (enum ts_authz_kind) - 1};
    assert_int_equal(authz_put(f->st, false, ROLE, "r", "{}", T0, T0), TS_OK);
    wait_sighted(f->st);
    settle(f->st);
    uint64_t epoch = ts_store_epoch(f->st);
    int64_t version = authz_version(f->st);
    struct ts_authz_object *o = NULL;
    struct ts_authz_object **l = NULL;
    size_t n = 0;

    for (int update = 0; update < 2; update++) {
        for (size_t i = 0; i < sizeof(bad_kinds) / sizeof(bad_kinds[0]); i++)
            assert_int_equal(authz_put(f->st, update, bad_kinds[i], "r", "{}", T0, T0),
                             TS_E_INVALID);
        assert_int_equal(authz_put(f->st, update, ROLE, "", "{}", T0, T0), TS_E_INVALID);
        assert_int_equal(authz_put(f->st, update, ROLE, long_name, "{}", T0, T0), TS_E_INVALID);
        /* config must be an object */
        assert_int_equal(authz_put(f->st, update, ROLE, "r", "[]", T0, T0), TS_E_INVALID);
        assert_int_equal(authz_put(f->st, update, ROLE, "r", "\"x\"", T0, T0), TS_E_INVALID);
        assert_int_equal(authz_put(f->st, update, ROLE, "r", "null", T0, T0), TS_E_INVALID);
        struct ts_authz_object none = {.kind = ROLE, .name = NULL, .config = json_object()};
        assert_int_equal(update ? ts_store_authz_update(f->st, &none)
                                : ts_store_authz_create(f->st, &none),
                         TS_E_INVALID);
        none.name = MUT("r");
        json_decref(none.config);
        none.config = NULL;
        assert_int_equal(update ? ts_store_authz_update(f->st, &none)
                                : ts_store_authz_create(f->st, &none),
                         TS_E_INVALID);
        assert_int_equal(update ? ts_store_authz_update(f->st, NULL)
                                : ts_store_authz_create(f->st, NULL),
                         TS_E_INVALID);
    }
    for (size_t i = 0; i < sizeof(bad_kinds) / sizeof(bad_kinds[0]); i++) {
        assert_int_equal(ts_store_authz_get(f->st, bad_kinds[i], "r", &o), TS_E_INVALID);
        assert_int_equal(ts_store_authz_list(f->st, bad_kinds[i], &l, &n), TS_E_INVALID);
        assert_int_equal(ts_store_authz_delete(f->st, bad_kinds[i], "r"), TS_E_INVALID);
    }
    assert_int_equal(ts_store_authz_get(f->st, ROLE, NULL, &o), TS_E_INVALID);
    assert_int_equal(ts_store_authz_get(f->st, ROLE, "", &o), TS_E_INVALID);
    assert_int_equal(ts_store_authz_get(f->st, ROLE, long_name, &o), TS_E_INVALID);
    assert_int_equal(ts_store_authz_get(f->st, ROLE, "r", NULL), TS_E_INVALID);
    assert_int_equal(ts_store_authz_list(f->st, ROLE, NULL, &n), TS_E_INVALID);
    assert_int_equal(ts_store_authz_list(f->st, ROLE, &l, NULL), TS_E_INVALID);
    assert_int_equal(ts_store_authz_delete(f->st, ROLE, NULL), TS_E_INVALID);
    assert_int_equal(ts_store_authz_delete(f->st, ROLE, ""), TS_E_INVALID);
    assert_int_equal(ts_store_authz_delete(f->st, ROLE, long_name), TS_E_INVALID);
    assert_int_equal(ts_store_authz_version(f->st, NULL), TS_E_INVALID);
    assert_null(o);
    assert_null(l);
    assert_int_equal(n, 0);
    /* nothing was written */
    settle(f->st);
    assert_int_equal(ts_store_epoch(f->st), epoch);
    assert_int_equal(authz_version(f->st), version);
    assert_authz_names(f->st, ROLE, "r");

    /* a name of exactly TS_STORE_NAME_MAX bytes is fine */
    assert_int_equal(authz_put(f->st, false, ROLE, max_name, "{}", T0, T0), TS_OK);
    assert_int_equal(authz_put(f->st, true, ROLE, max_name, "{\"a\":1}", T0, T0 + 1), TS_OK);
    assert_authz(f->st, ROLE, max_name, "{\"a\":1}", T0, T0 + 1);
    assert_int_equal(ts_store_authz_delete(f->st, ROLE, max_name), TS_OK);
    assert_int_equal(authz_version(f->st), version + 3);
}

static void test_authz_epoch(void **state)
{
    struct fix *f = *state;
    wait_sighted(f->st);
    assert_epoch(f->st, true,
                 assert_int_equal(authz_put(f->st, false, ROLE, "editor", EDITOR, T0, T0), TS_OK));
    assert_epoch(f->st, true,
                 assert_int_equal(authz_put(f->st, false, PROFILE, "editor", "{}", T0, T0), TS_OK));
    assert_epoch(
        f->st, true,
        assert_int_equal(authz_put(f->st, true, ROLE, "editor", EDITOR2, T0, T0 + 1), TS_OK));
    assert_epoch(f->st, true,
                 assert_int_equal(ts_store_authz_delete(f->st, PROFILE, "editor"), TS_OK));
    /* reads and failures move nothing */
    struct ts_authz_object *o = NULL;
    assert_epoch(f->st, false, {
        assert_authz(f->st, ROLE, "editor", EDITOR2, T0, T0 + 1);
        assert_authz_names(f->st, ROLE, "editor");
        (void)authz_version(f->st);
    });
    assert_epoch(
        f->st, false,
        assert_int_equal(ts_store_authz_get(f->st, PROFILE, "editor", &o), TS_E_NOT_FOUND));
    assert_epoch(
        f->st, false,
        assert_int_equal(authz_put(f->st, false, ROLE, "editor", "{}", T0, T0), TS_E_CONFLICT));
    assert_epoch(f->st, false,
                 assert_int_equal(authz_put(f->st, true, PROFILE, "editor", "{}", T0, T0 + 2),
                                  TS_E_NOT_FOUND));
    assert_epoch(f->st, false,
                 assert_int_equal(ts_store_authz_delete(f->st, PROFILE, "editor"), TS_E_NOT_FOUND));

    /* Another process (a second store on the database) writes: this one's version shows it at
     * once, and its epoch moves once it has polled. */
    struct ts_store *other = open_store(f->url);
    ts_store_poll_external(f->st); /* SQLite: the first poll sets the watch up */
    settle(f->st);
    uint64_t e = ts_store_epoch(f->st);
    int64_t v = authz_version(f->st);
    assert_int_equal(authz_put(other, false, ROLE, "viewer", "{\"v\":1}", T0, T0), TS_OK);
    assert_true(authz_version(f->st) > v);
    assert_int_equal(authz_version(f->st), authz_version(other));
    assert_authz(f->st, ROLE, "viewer", "{\"v\":1}", T0, T0);
    settle(f->st);
    ts_store_poll_external(f->st);
    assert_int_not_equal(ts_store_epoch(f->st), e);
    ts_store_close(other);
}

#define AUTHZ_WRITERS 8
#define AUTHZ_WRITES 12

struct authz_writer {
    struct ts_store *st;
    int index;
    pthread_barrier_t *start;
    int ok;
    enum ts_rc bad; /* an unexpected result of a shared create, or TS_OK */
};

/* Creates, updates and deletes objects of its own, and races the others for shared names. */
static void *authz_writer_main(void *arg)
{
    struct authz_writer *w = arg;
    pthread_barrier_wait(w->start);
    for (int i = 0; i < AUTHZ_WRITES; i++) {
        char name[32], config[64];
        snprintf(name, sizeof(name), "w%d-%d", w->index, i);
        snprintf(config, sizeof(config), "{\"w\":%d,\"i\":%d}", w->index, i);
        w->ok += authz_put(w->st, false, ROLE, name, config, T0 + i, T0 + i) == TS_OK;
        w->ok += authz_put(w->st, true, ROLE, name, "{}", T0 + i, T0 + i + 1) == TS_OK;
        if (i % 2)
            w->ok += ts_store_authz_delete(w->st, ROLE, name) == TS_OK;
        snprintf(name, sizeof(name), "shared-%d", i);
        enum ts_rc rc = authz_put(w->st, false, PROFILE, name, config, T0, T0);
        if (rc != TS_OK && rc != TS_E_CONFLICT)
            w->bad = rc;
        w->ok += rc == TS_OK;
    }
    return NULL;
}

/* Writers on two stores at once ("nodes"): the version counts every successful write. */
static void test_authz_concurrent(void **state)
{
    struct fix *f = *state;
    struct ts_store *other = open_store(f->url);
    int64_t v0 = authz_version(f->st);
    struct authz_writer ws[AUTHZ_WRITERS];
    pthread_t th[AUTHZ_WRITERS];
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, AUTHZ_WRITERS);
    for (int i = 0; i < AUTHZ_WRITERS; i++) {
        ws[i] = (struct authz_writer){.st = i % 2 ? other : f->st, .index = i, .start = &start};
        assert_int_equal(pthread_create(&th[i], NULL, authz_writer_main, &ws[i]), 0);
    }
    int ok = 0;
    for (int i = 0; i < AUTHZ_WRITERS; i++) {
        pthread_join(th[i], NULL);
        if (ws[i].bad != TS_OK)
            fail_msg("writer %d: %s", i, ts_rc_name(ws[i].bad));
        ok += ws[i].ok;
    }
    pthread_barrier_destroy(&start);
    /* each writer: a create and an update of each of its names, a delete of every other one;
     * each shared name was created once */
    assert_int_equal(ok, AUTHZ_WRITERS * (AUTHZ_WRITES * 2 + AUTHZ_WRITES / 2) + AUTHZ_WRITES);
    assert_int_equal(authz_version(f->st), v0 + ok);
    assert_int_equal(authz_version(other), v0 + ok);
    struct ts_authz_object **l = NULL;
    size_t n = 0;
    assert_int_equal(ts_store_authz_list(f->st, ROLE, &l, &n), TS_OK);
    assert_int_equal(n, AUTHZ_WRITERS * (AUTHZ_WRITES - AUTHZ_WRITES / 2));
    for (size_t i = 0; i < n; i++)
        assert_json(l[i]->config, "{}");
    ts_authz_objects_free(l, n);
    assert_int_equal(ts_store_authz_list(f->st, PROFILE, &l, &n), TS_OK);
    assert_int_equal(n, AUTHZ_WRITES);
    ts_authz_objects_free(l, n);
    ts_store_close(other);
}

int main(void)
{
    ts_log_set_level(TS_LOG_ERROR);
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, store_teardown)
    const struct CMUnitTest tests[] = {
        T(test_providers),
        T(test_link_document),
        T(test_link_users),
        T(test_link_concurrent),
        T(test_link_doc_deleted),
        T(test_link_doc_expired),
        T(test_link_user_delete),
        T(test_link_collection_delete),
        T(test_exchanges),
        T(test_sweep_exchanges),
        T(test_epoch),
        T(test_authz),
        T(test_authz_invalid),
        T(test_authz_epoch),
        T(test_authz_concurrent),
    };
#undef T
    return store_run_groups("store ext", tests, sizeof(tests) / sizeof(tests[0]));
}

/*
 * test_store_docs.c - unit tests of the native model of the store interface (store.h, "the
 * native model (/v1)" through "the sweeper"), each test on a fresh database: a file in a
 * temporary directory (SQLite) and, when TESSERA_TEST_PG_HOST (and TESSERA_TEST_PG_PORT) name a
 * PostgreSQL server (scripts/pg.sh starts a throwaway one), the whole group again with a
 * database per test there, made with createdb and dropped after (as test_store.c).
 *
 * Covers index term keys, collections, documents (create, replace with compare-and-swap,
 * delete, list), expiry (expired documents read as absent and never revive what was bound to
 * them), indexes (backfill, lookups, unique terms, also under 16 racing writers), credentials
 * of any identity, opaque tokens and keys (the check, lists, deletes), the change epoch, the
 * sessions ledger, and the sweeper. Times are passed in explicitly, as offsets from T0.
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

#include "store_fixture.h"

#define SEC INT64_C(1000000)
#define HOUR (3600 * SEC)

/* The struct fields that take text are char *, never written through: this drops the const
 * of a string the test owns (-Wcast-qual forbids a plain cast). */
#define MUT(s) ((char *)(uintptr_t)(s))

/* The base "now" of the running test (ts_now_us() at setup); every time is an offset of it. */
static int64_t T0;

/* Every test also sets T0 to the time it starts. */
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

/* ts_store_index_key_of and ts_store_index_key with their arguments as JSON text. */
static char *key_of(const char *terms, const char *data)
{
    json_t *t = js(terms), *d = js(data);
    char *k = ts_store_index_key_of(t, d);
    json_decref(t);
    json_decref(d);
    return k;
}

static char *key(const char *values)
{
    json_t *v = js(values);
    char *k = ts_store_index_key(v);
    json_decref(v);
    return k;
}

static bool terms_valid(const char *terms)
{
    json_t *t = js(terms);
    bool ok = ts_store_index_terms_valid(t);
    json_decref(t);
    return ok;
}

static void make_collection(struct ts_store *st, const char *name)
{
    assert_int_equal(ts_store_collection_create(st, name, T0), TS_OK);
}

static enum ts_rc make_index(struct ts_store *st, const char *coll, const char *name,
                             const char *terms, bool unique, int64_t now)
{
    struct ts_index_def d = {.name = MUT(name), .terms = js(terms), .unique = unique};
    enum ts_rc rc = ts_store_index_create(st, coll, &d, now);
    json_decref(d.terms);
    return rc;
}

/* Writes a document as w says, with data given as JSON text. */
static enum ts_rc write_doc(struct ts_store *st, struct ts_doc_write w, const char *data,
                            struct ts_doc **out)
{
    json_t *d = js(data);
    w.data = d;
    enum ts_rc rc = ts_store_doc_write(st, &w, out);
    json_decref(d);
    return rc;
}

static enum ts_rc doc_create(struct ts_store *st, const char *coll, const char *id,
                             const char *data, int64_t expires_at, int64_t now)
{
    return write_doc(st,
                     (struct ts_doc_write){.mode = TS_DOC_CREATE,
                                           .collection = coll,
                                           .id = id,
                                           .expires_at = expires_at,
                                           .now = now},
                     data, NULL);
}

static enum ts_rc doc_replace(struct ts_store *st, const char *coll, const char *id,
                              const char *data, int64_t now)
{
    return write_doc(
        st, (struct ts_doc_write){.mode = TS_DOC_REPLACE, .collection = coll, .id = id, .now = now},
        data, NULL);
}

/* Asserts that the live document coll/id has exactly this data (JSON text), or is absent
 * (data NULL). */
static void assert_doc(struct ts_store *st, const char *coll, const char *id, int64_t now,
                       const char *data)
{
    struct ts_doc *d = NULL;
    enum ts_rc rc = ts_store_doc_get(st, coll, id, now, &d);
    if (!data) {
        assert_int_equal(rc, TS_E_NOT_FOUND);
        assert_null(d);
        return;
    }
    assert_int_equal(rc, TS_OK);
    assert_string_equal(d->collection, coll);
    assert_string_equal(d->id, id);
    json_t *want = js(data);
    if (!json_equal(d->data, want)) {
        char *got = json_dumps(d->data, JSON_COMPACT | JSON_SORT_KEYS);
        fail_msg("%s/%s: data %s, expected %s", coll, id, got, data);
    }
    json_decref(want);
    ts_doc_free(d);
}

#define IDS_CAP 2048

/* The ids of a page of documents, joined with commas. */
static void join_ids(struct ts_doc **list, size_t n, char buf[IDS_CAP])
{
    buf[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        assert_true(strlen(buf) + strlen(list[i]->id) + 2 < IDS_CAP);
        if (i)
            strcat(buf, ",");
        strcat(buf, list[i]->id);
    }
}

static enum ts_rc list_ids(struct ts_store *st, const char *coll, const char *after, int64_t limit,
                           int64_t now, char buf[IDS_CAP])
{
    struct ts_doc **l = NULL;
    size_t n = 0;
    enum ts_rc rc = ts_store_doc_list(st, coll, after, limit, now, &l, &n);
    if (rc == TS_OK)
        join_ids(l, n, buf);
    else
        strcpy(buf, "(error)");
    ts_doc_list_free(l, rc == TS_OK ? n : 0);
    return rc;
}

/* Looks the term values (JSON array text) up in coll's index. */
static enum ts_rc lookup_ids(struct ts_store *st, const char *coll, const char *index,
                             const char *values, const char *after, int64_t limit, int64_t now,
                             char buf[IDS_CAP])
{
    char *k = key(values);
    assert_non_null(k);
    struct ts_doc **l = NULL;
    size_t n = 0;
    enum ts_rc rc = ts_store_index_lookup(st, coll, index, k, after, limit, now, &l, &n);
    free(k);
    if (rc == TS_OK)
        join_ids(l, n, buf);
    else
        strcpy(buf, "(error)");
    ts_doc_list_free(l, rc == TS_OK ? n : 0);
    return rc;
}

#define assert_list(st, coll, after, limit, now, expected)                                         \
    do {                                                                                           \
        char ids_[IDS_CAP];                                                                        \
        assert_int_equal(list_ids(st, coll, after, limit, now, ids_), TS_OK);                      \
        assert_string_equal(ids_, expected);                                                       \
    } while (0)

#define assert_lookup(st, coll, index, values, now, expected)                                      \
    do {                                                                                           \
        char ids_[IDS_CAP];                                                                        \
        assert_int_equal(lookup_ids(st, coll, index, values, NULL, 1000, now, ids_), TS_OK);       \
        assert_string_equal(ids_, expected);                                                       \
    } while (0)

/* ---- secrets ---- */

static void secret_hash(uint8_t h[TS_SECRET_HASH_LEN], int tag)
{
    memset(h, 0x3c, TS_SECRET_HASH_LEN);
    h[0] = (uint8_t)(tag >> 16);
    h[1] = (uint8_t)(tag >> 8);
    h[2] = (uint8_t)tag;
}

/* Stores a secret hashed as secret_hash(tag), created at now (keys get the role "service");
 * its id goes to id (may be NULL). */
static enum ts_rc put_secret(struct ts_store *st, enum ts_secret_kind kind, int tag,
                             const char *coll, const char *ident, int64_t expires_at, int64_t now,
                             char id[TS_STORE_ID_LEN + 1])
{
    struct ts_secret_row r = {.kind = kind,
                              .identity_collection = MUT(coll),
                              .identity_id = MUT(ident),
                              .role = kind == TS_SECRET_KEY ? MUT("service") : NULL,
                              .origin = MUT("admin"),
                              .created_at = now,
                              .expires_at = expires_at};
    ts_uuid_v4(r.id);
    uint8_t h[TS_SECRET_HASH_LEN];
    secret_hash(h, tag);
    enum ts_rc rc = ts_store_secret_create(st, &r, h, now);
    if (id)
        memcpy(id, r.id, sizeof(r.id));
    return rc;
}

static void token(struct ts_store *st, int tag, const char *coll, const char *ident,
                  int64_t expires_at, int64_t now, char id[TS_STORE_ID_LEN + 1])
{
    assert_int_equal(put_secret(st, TS_SECRET_TOKEN, tag, coll, ident, expires_at, now, id), TS_OK);
}

/* The state of the secret hashed as secret_hash(tag) at now; *valid_until (may be NULL) is
 * set when LIVE. Checks that the row comes back exactly when LIVE. */
static enum ts_secret_state check(struct ts_store *st, int tag, int64_t now, int64_t *valid_until)
{
    uint8_t h[TS_SECRET_HASH_LEN];
    secret_hash(h, tag);
    enum ts_secret_state s = TS_SECRET_UNKNOWN;
    struct ts_secret_row *row = NULL;
    int64_t vu = -1;
    assert_int_equal(ts_store_secret_check(st, h, now, &s, &row, &vu), TS_OK);
    if (s == TS_SECRET_LIVE) {
        assert_non_null(row);
        if (valid_until)
            *valid_until = vu;
    } else {
        assert_null(row);
    }
    ts_secret_row_free(row);
    return s;
}

/* A user with a fresh id and optional password; the caller frees it. */
static struct ts_user *make_user(struct ts_store *st, const char *email, const char *hash)
{
    struct ts_user *u = ts_user_new();
    ts_uuid_v4(u->id);
    u->aud = ts_xstrdup("authenticated");
    u->role = ts_xstrdup("authenticated");
    u->email = email ? ts_xstrdup(email) : NULL;
    u->created_at = T0;
    u->updated_at = T0;
    assert_int_equal(ts_store_user_create(st, u, hash), TS_OK);
    return u;
}

static void refresh_hash(uint8_t h[TS_REFRESH_HASH_LEN], int tag)
{
    memset(h, 0, TS_REFRESH_HASH_LEN);
    h[0] = 0xa5;
    h[1] = (uint8_t)(tag >> 8);
    h[2] = (uint8_t)tag;
}

static void create_session(struct ts_store *st, const char *user_id, int tag, int64_t now,
                           char sid[TS_STORE_ID_LEN + 1])
{
    struct ts_session_new s = {.user_id = user_id,
                               .aal = "aal1",
                               .amr_json = "[{\"method\":\"password\",\"timestamp\":1700000000}]",
                               .ip = "192.0.2.1",
                               .user_agent = "test/1.0",
                               .now = now};
    refresh_hash(s.refresh_hash, tag);
    assert_int_equal(ts_store_session_create(st, &s, sid), TS_OK);
}

static enum ts_refresh_outcome rotate(struct ts_store *st, int presented, int next, int64_t now,
                                      bool rotation_enabled)
{
    struct ts_refresh_request req = {.now = now,
                                     .reuse_interval = 10 * SEC,
                                     .rotation_enabled = rotation_enabled,
                                     .ip = "198.51.100.7"};
    refresh_hash(req.presented, presented);
    refresh_hash(req.next, next);
    struct ts_refresh_result res;
    memset(&res, 0, sizeof(res));
    assert_int_equal(ts_store_refresh_rotate(st, &req, &res), TS_OK);
    return res.outcome;
}

static bool session_alive(struct ts_store *st, const char *sid, const char *uid)
{
    struct ts_user *u = NULL;
    enum ts_rc rc = ts_store_session_user(st, sid, uid, &u);
    assert_true(rc == TS_OK || rc == TS_E_NOT_FOUND);
    ts_user_free(u);
    return rc == TS_OK;
}

/* ---- term keys ---- */

static void assert_key_of(const char *terms, const char *data, const char *expected)
{
    char *k = key_of(terms, data);
    if (!expected) {
        if (k)
            fail_msg("key_of(%s, %s) = %s, expected none", terms, data, k);
        return;
    }
    if (!k)
        fail_msg("key_of(%s, %s) = none, expected %s", terms, data, expected);
    assert_string_equal(k, expected);
    free(k);
}

static void test_term_keys(void **state)
{
    (void)state;
    assert_key_of("[\"data.name\"]", "{\"name\":\"bob\"}", "[\"bob\"]");
    assert_key_of("[\"data.n\"]", "{\"n\":5}", "[\"5\"]");
    assert_key_of("[\"data.n\"]", "{\"n\":-12}", "[\"-12\"]");
    assert_key_of("[\"data.n\"]", "{\"n\":5.0}", "[\"5\"]"); /* 5.0 is the term 5 */
    assert_key_of("[\"data.n\"]", "{\"n\":2.5}", "[\"2.5\"]");
    assert_key_of("[\"data.n\"]", "{\"n\":\"5\"}", "[\"5\"]");
    assert_key_of("[\"data.b\"]", "{\"b\":true}", "[\"true\"]");
    assert_key_of("[\"data.b\"]", "{\"b\":false}", "[\"false\"]");
    /* Missing, null, objects and arrays are not indexed. */
    assert_key_of("[\"data.n\"]", "{\"other\":1}", NULL);
    assert_key_of("[\"data.n\"]", "{\"n\":null}", NULL);
    assert_key_of("[\"data.n\"]", "{\"n\":{}}", NULL);
    assert_key_of("[\"data.n\"]", "{\"n\":[1]}", NULL);
    /* Nested paths, several terms; one missing term leaves the document out. */
    assert_key_of("[\"data.a.b\",\"data.c\"]", "{\"a\":{\"b\":\"x\"},\"c\":1}", "[\"x\",\"1\"]");
    assert_key_of("[\"data.a.b\",\"data.c\"]", "{\"a\":{\"b\":\"x\"}}", NULL);
    assert_key_of("[\"data.a.b\"]", "{\"a\":\"x\"}", NULL); /* through a non-object */
    assert_key_of("[\"data.a.b\"]", "{\"a\":{\"c\":1}}", NULL);
    /* Packed as JSON: two terms never collide with one term holding a separator. */
    char *two = key_of("[\"data.x\",\"data.y\"]", "{\"x\":\"a\",\"y\":\"b\"}");
    char *one = key_of("[\"data.x\"]", "{\"x\":\"a\\\",\\\"b\"}");
    assert_non_null(two);
    assert_non_null(one);
    assert_string_not_equal(two, one);
    free(two);
    free(one);
    /* Invalid terms or non-object data: no key. */
    assert_key_of("[\"n\"]", "{\"n\":1}", NULL);
    assert_key_of("[\"data.n\"]", "[1]", NULL);

    /* Client values pack the same way: ?term=5 finds 5, 5.0 and "5". */
    char *k5 = key_of("[\"data.n\"]", "{\"n\":5}");
    char *v = key("[\"5\"]");
    assert_string_equal(v, k5);
    free(v);
    v = key("[5]");
    assert_string_equal(v, k5);
    free(v);
    v = key("[5.0]");
    assert_string_equal(v, k5);
    free(v);
    free(k5);
    v = key("[true,\"x\"]");
    assert_string_equal(v, "[\"true\",\"x\"]");
    free(v);
    assert_null(key("[null]"));
    assert_null(key("[{}]"));
    assert_null(key("[[1]]"));
    assert_null(key("[]"));
    assert_null(key("\"5\""));

    /* Valid terms: 1..8 paths "data.seg(.seg)*", segments of 1..64 of [A-Za-z0-9_-]. */
    assert_true(terms_valid("[\"data.a\"]"));
    assert_true(terms_valid("[\"data.a.b_c-D9\",\"data.x\"]"));
    assert_true(terms_valid("[\"data.a\",\"data.b\",\"data.c\",\"data.d\",\"data.e\",\"data.f\","
                            "\"data.g\",\"data.h\"]"));
    char seg[200];
    snprintf(seg, sizeof(seg), "[\"data.%064d\"]", 0);
    assert_true(terms_valid(seg));
    snprintf(seg, sizeof(seg), "[\"data.%065d\"]", 0);
    assert_false(terms_valid(seg));
    assert_false(ts_store_index_terms_valid(NULL));
    assert_false(terms_valid("\"data.a\""));
    assert_false(terms_valid("[]"));
    assert_false(terms_valid("[\"data.a\",\"data.b\",\"data.c\",\"data.d\",\"data.e\",\"data.f\","
                             "\"data.g\",\"data.h\",\"data.i\"]"));
    assert_false(terms_valid("[\"a\"]"));
    assert_false(terms_valid("[\"data\"]"));
    assert_false(terms_valid("[\"data.\"]"));
    assert_false(terms_valid("[\"data.a..b\"]"));
    assert_false(terms_valid("[\"data.a.\"]"));
    assert_false(terms_valid("[\".data.a\"]"));
    assert_false(terms_valid("[\"data.a b\"]"));
    assert_false(terms_valid("[\"data.\\u00e9\"]"));
    assert_false(terms_valid("[5]"));
    assert_false(terms_valid("[\"data.a\",null]"));
}

/* ---- collections ---- */

static void test_collections(void **state)
{
    struct fix *f = *state;
    assert_int_equal(ts_store_collection_create(f->st, "books", T0), TS_OK);
    assert_int_equal(ts_store_collection_create(f->st, "books", T0 + 1), TS_E_CONFLICT);
    assert_int_equal(ts_store_collection_create(f->st, "users", T0), TS_E_CONFLICT);
    assert_int_equal(ts_store_collection_get(f->st, "users", NULL), TS_E_INVALID);
    assert_int_equal(ts_store_collection_delete(f->st, "users"), TS_E_INVALID);

    struct ts_collection_info ci = {0};
    assert_int_equal(ts_store_collection_get(f->st, "books", &ci), TS_OK);
    assert_string_equal(ci.name, "books");
    assert_int_equal(ci.created_at, T0);
    free(ci.name);
    assert_int_equal(ts_store_collection_get(f->st, "books", NULL), TS_OK);
    ci = (struct ts_collection_info){0};
    assert_int_equal(ts_store_collection_get(f->st, "nope", &ci), TS_E_NOT_FOUND);
    assert_null(ci.name);

    /* Listed by name, with keyset pagination. */
    make_collection(f->st, "dogs");
    make_collection(f->st, "authors");
    make_collection(f->st, "cats");
    static const char *const all[] = {"authors", "books", "cats", "dogs"};
    struct ts_collection_info *l = NULL;
    size_t n = 0;
    assert_int_equal(ts_store_collection_list(f->st, NULL, 100, &l, &n), TS_OK);
    assert_int_equal(n, 4);
    for (size_t i = 0; i < n; i++)
        assert_string_equal(l[i].name, all[i]);
    ts_collection_infos_free(l, n);
    assert_int_equal(ts_store_collection_list(f->st, NULL, 2, &l, &n), TS_OK);
    assert_int_equal(n, 2);
    assert_string_equal(l[0].name, "authors");
    assert_string_equal(l[1].name, "books");
    ts_collection_infos_free(l, n);
    assert_int_equal(ts_store_collection_list(f->st, "books", 2, &l, &n), TS_OK);
    assert_int_equal(n, 2);
    assert_string_equal(l[0].name, "cats");
    assert_string_equal(l[1].name, "dogs");
    ts_collection_infos_free(l, n);
    assert_int_equal(ts_store_collection_list(f->st, "dogs", 2, &l, &n), TS_OK);
    assert_int_equal(n, 0);
    ts_collection_infos_free(l, n);
    assert_int_equal(ts_store_collection_list(f->st, NULL, 0, &l, &n), TS_E_INVALID);

    /* Delete */
    assert_int_equal(ts_store_collection_delete(f->st, "cats"), TS_OK);
    assert_int_equal(ts_store_collection_get(f->st, "cats", NULL), TS_E_NOT_FOUND);
    assert_int_equal(ts_store_collection_delete(f->st, "cats"), TS_E_NOT_FOUND);
    assert_int_equal(ts_store_collection_list(f->st, "books", 10, &l, &n), TS_OK);
    assert_int_equal(n, 1);
    assert_string_equal(l[0].name, "dogs");
    ts_collection_infos_free(l, n);
}

static void test_collection_delete_cascades(void **state)
{
    struct fix *f = *state;
    make_collection(f->st, "tmp");
    assert_int_equal(make_index(f->st, "tmp", "by_k", "[\"data.k\"]", true, T0), TS_OK);
    assert_int_equal(write_doc(f->st,
                               (struct ts_doc_write){.mode = TS_DOC_CREATE,
                                                     .collection = "tmp",
                                                     .id = "d",
                                                     .password_hash = "$argon2id$tmp",
                                                     .now = T0},
                               "{\"k\":1}", NULL),
                     TS_OK);
    token(f->st, 1, "tmp", "d", T0 + HOUR, T0 + 1, NULL);
    assert_int_equal(check(f->st, 1, T0 + SEC, NULL), TS_SECRET_LIVE);

    assert_int_equal(ts_store_collection_delete(f->st, "tmp"), TS_OK);
    assert_int_equal(check(f->st, 1, T0 + SEC, NULL), TS_SECRET_UNKNOWN);
    assert_doc(f->st, "tmp", "d", T0 + SEC, NULL);
    char ids[IDS_CAP];
    assert_int_equal(list_ids(f->st, "tmp", NULL, 10, T0 + SEC, ids), TS_E_NOT_FOUND);

    /* A new collection of the same name starts empty: no index, no document, no credential. */
    make_collection(f->st, "tmp");
    assert_list(f->st, "tmp", NULL, 10, T0 + SEC, "");
    struct ts_index_def def = {0};
    assert_int_equal(ts_store_index_get(f->st, "tmp", "by_k", &def), TS_E_NOT_FOUND);
    assert_int_equal(doc_create(f->st, "tmp", "d", "{\"k\":1}", 0, T0 + 2 * SEC), TS_OK);
    char *hash = NULL;
    assert_int_equal(ts_store_credential_get(f->st, "tmp", "d", T0 + 2 * SEC, &hash),
                     TS_E_NOT_FOUND);
    assert_null(hash);
    assert_int_not_equal(check(f->st, 1, T0 + 3 * SEC, NULL), TS_SECRET_LIVE);
}

/* ---- documents ---- */

static void test_doc_crud(void **state)
{
    struct fix *f = *state;
    make_collection(f->st, "notes");
    struct ts_doc *d = NULL;
    assert_int_equal(
        write_doc(f->st,
                  (struct ts_doc_write){
                      .mode = TS_DOC_CREATE, .collection = "notes", .id = "a", .now = T0},
                  "{\"x\":1,\"tags\":[\"p\",\"q\"],\"o\":{\"y\":null}}", &d),
        TS_OK);
    assert_string_equal(d->collection, "notes");
    assert_string_equal(d->id, "a");
    assert_int_equal(d->ts, T0);
    assert_int_equal(d->created_at, T0);
    assert_int_equal(d->expires_at, 0);
    ts_doc_free(d);

    d = NULL;
    assert_int_equal(ts_store_doc_get(f->st, "notes", "a", T0, &d), TS_OK);
    json_t *want = js("{\"x\":1,\"tags\":[\"p\",\"q\"],\"o\":{\"y\":null}}");
    assert_true(json_equal(d->data, want));
    json_decref(want);
    assert_int_equal(d->ts, T0);
    assert_int_equal(d->created_at, T0);
    assert_int_equal(d->expires_at, 0);
    ts_doc_free(d);

    /* The id is taken: nothing changes. */
    assert_int_equal(doc_create(f->st, "notes", "a", "{\"x\":99}", 0, T0 + SEC), TS_E_CONFLICT);
    assert_doc(f->st, "notes", "a", T0 + SEC,
               "{\"x\":1,\"tags\":[\"p\",\"q\"],\"o\":{\"y\":null}}");

    /* REPLACE: ts moves to now, created_at stays. */
    d = NULL;
    assert_int_equal(
        write_doc(f->st,
                  (struct ts_doc_write){
                      .mode = TS_DOC_REPLACE, .collection = "notes", .id = "a", .now = T0 + 10},
                  "{\"x\":2}", &d),
        TS_OK);
    assert_int_equal(d->ts, T0 + 10);
    assert_int_equal(d->created_at, T0);
    ts_doc_free(d);
    assert_doc(f->st, "notes", "a", T0 + 11, "{\"x\":2}");
    /* A clock behind the last write still makes ts grow: max(now, ts + 1). */
    d = NULL;
    assert_int_equal(
        write_doc(f->st,
                  (struct ts_doc_write){
                      .mode = TS_DOC_REPLACE, .collection = "notes", .id = "a", .now = T0 + 5},
                  "{\"x\":3}", &d),
        TS_OK);
    assert_int_equal(d->ts, T0 + 11);
    ts_doc_free(d);

    /* Compare-and-swap on ts. */
    static struct ts_doc sentinel;
    d = &sentinel;
    assert_int_equal(write_doc(f->st,
                               (struct ts_doc_write){.mode = TS_DOC_REPLACE,
                                                     .collection = "notes",
                                                     .id = "a",
                                                     .expect_ts = T0 + 10,
                                                     .now = T0 + 20},
                               "{\"x\":4}", &d),
                     TS_E_STALE);
    assert_ptr_equal(d, &sentinel); /* untouched on error */
    assert_doc(f->st, "notes", "a", T0 + 20, "{\"x\":3}");
    d = NULL;
    assert_int_equal(write_doc(f->st,
                               (struct ts_doc_write){.mode = TS_DOC_REPLACE,
                                                     .collection = "notes",
                                                     .id = "a",
                                                     .expect_ts = T0 + 11,
                                                     .now = T0 + 20},
                               "{\"x\":4}", &d),
                     TS_OK);
    assert_int_equal(d->ts, T0 + 20);
    ts_doc_free(d);
    assert_doc(f->st, "notes", "a", T0 + 21, "{\"x\":4}");

    /* REPLACE of a missing document creates nothing. */
    assert_int_equal(doc_replace(f->st, "notes", "zz", "{}", T0 + 30), TS_E_NOT_FOUND);
    assert_doc(f->st, "notes", "zz", T0 + 30, NULL);

    /* A missing collection. */
    assert_int_equal(doc_create(f->st, "nope", "a", "{}", 0, T0), TS_E_NOT_FOUND);
    assert_int_equal(doc_replace(f->st, "nope", "a", "{}", T0), TS_E_NOT_FOUND);
    assert_doc(f->st, "nope", "a", T0, NULL);
    assert_int_equal(ts_store_doc_delete(f->st, "nope", "a", T0), TS_E_NOT_FOUND);
    char ids[IDS_CAP];
    assert_int_equal(list_ids(f->st, "nope", NULL, 10, T0, ids), TS_E_NOT_FOUND);

    /* "users" is not a collection of documents. */
    d = NULL;
    assert_int_equal(doc_create(f->st, "users", "a", "{}", 0, T0), TS_E_INVALID);
    assert_int_equal(ts_store_doc_get(f->st, "users", "a", T0, &d), TS_E_INVALID);
    assert_int_equal(ts_store_doc_delete(f->st, "users", "a", T0), TS_E_INVALID);
    assert_int_equal(list_ids(f->st, "users", NULL, 10, T0, ids), TS_E_INVALID);

    /* Delete */
    assert_int_equal(doc_create(f->st, "notes", "b", "{}", 0, T0), TS_OK);
    assert_int_equal(ts_store_doc_delete(f->st, "notes", "a", T0 + 40), TS_OK);
    assert_doc(f->st, "notes", "a", T0 + 40, NULL);
    assert_int_equal(ts_store_doc_delete(f->st, "notes", "a", T0 + 41), TS_E_NOT_FOUND);
    assert_doc(f->st, "notes", "b", T0 + 41, "{}");
    /* The id is free again, and a new document starts afresh. */
    d = NULL;
    assert_int_equal(
        write_doc(f->st,
                  (struct ts_doc_write){
                      .mode = TS_DOC_CREATE, .collection = "notes", .id = "a", .now = T0 + 50},
                  "{\"new\":true}", &d),
        TS_OK);
    assert_int_equal(d->created_at, T0 + 50);
    ts_doc_free(d);
}

static void test_doc_list(void **state)
{
    struct fix *f = *state;
    make_collection(f->st, "items");
    make_collection(f->st, "other");
    static const char *const order[] = {"d", "a", "f", "c", "e", "b"};
    for (int i = 0; i < 6; i++)
        assert_int_equal(doc_create(f->st, "items", order[i], "{}", 0, T0 + i), TS_OK);
    assert_int_equal(doc_create(f->st, "items", "c2", "{}", T0 + 10, T0), TS_OK); /* expires */
    assert_int_equal(doc_create(f->st, "other", "aa", "{}", 0, T0), TS_OK);

    assert_list(f->st, "items", NULL, 1000, T0 + 20, "a,b,c,d,e,f");
    assert_list(f->st, "items", NULL, 2, T0 + 20, "a,b");
    assert_list(f->st, "items", "b", 2, T0 + 20, "c,d"); /* c2 expired: not in the page */
    assert_list(f->st, "items", "d", 2, T0 + 20, "e,f");
    assert_list(f->st, "items", "f", 2, T0 + 20, "");
    assert_list(f->st, "items", "bb", 1, T0 + 20, "c");  /* after an id that does not exist */
    assert_list(f->st, "items", "c", 2, T0 + 5, "c2,d"); /* before it expires */
    assert_list(f->st, "other", NULL, 10, T0 + 20, "aa");
    char ids[IDS_CAP];
    assert_int_equal(list_ids(f->st, "items", NULL, 0, T0, ids), TS_E_INVALID);
    assert_int_equal(list_ids(f->st, "items", NULL, 1001, T0, ids), TS_E_INVALID);

    /* A replace keeps the order (by id, not by ts). */
    assert_int_equal(doc_replace(f->st, "items", "a", "{\"v\":2}", T0 + 30), TS_OK);
    assert_list(f->st, "items", NULL, 3, T0 + 40, "a,b,c");
}

/* ---- expiry ---- */

static void test_doc_expiry(void **state)
{
    struct fix *f = *state;
    make_collection(f->st, "ex");
    assert_int_equal(make_index(f->st, "ex", "by_k", "[\"data.k\"]", false, T0), TS_OK);
    const int64_t exp = T0 + 100 * SEC;
    struct ts_doc *d = NULL;
    assert_int_equal(write_doc(f->st,
                               (struct ts_doc_write){.mode = TS_DOC_CREATE,
                                                     .collection = "ex",
                                                     .id = "e",
                                                     .expires_at = exp,
                                                     .password_hash = "$argon2id$old",
                                                     .now = T0},
                               "{\"k\":\"v\"}", &d),
                     TS_OK);
    assert_int_equal(d->expires_at, exp);
    ts_doc_free(d);
    token(f->st, 1, "ex", "e", T0 + HOUR, T0 + SEC, NULL);

    /* Live until expires_at. */
    int64_t vu = 0;
    assert_doc(f->st, "ex", "e", exp - 1, "{\"k\":\"v\"}");
    assert_list(f->st, "ex", NULL, 10, exp - 1, "e");
    assert_lookup(f->st, "ex", "by_k", "[\"v\"]", exp - 1, "e");
    assert_int_equal(check(f->st, 1, exp - 1, &vu), TS_SECRET_LIVE);
    assert_int_equal(vu, exp); /* the document expires before the token */
    char *hash = NULL;
    assert_int_equal(ts_store_credential_get(f->st, "ex", "e", exp - 1, &hash), TS_OK);
    assert_string_equal(hash, "$argon2id$old");
    free(hash);

    /* Absent from expires_at on, everywhere. */
    assert_doc(f->st, "ex", "e", exp, NULL);
    assert_list(f->st, "ex", NULL, 10, exp, "");
    assert_lookup(f->st, "ex", "by_k", "[\"v\"]", exp, "");
    assert_int_equal(check(f->st, 1, exp, NULL), TS_SECRET_IDENTITY_GONE);
    hash = NULL;
    assert_int_equal(ts_store_credential_get(f->st, "ex", "e", exp, &hash), TS_E_NOT_FOUND);
    assert_int_equal(ts_store_credential_set(f->st, "ex", "e", "$argon2id$x", NULL, exp),
                     TS_E_NOT_FOUND);
    assert_int_equal(doc_replace(f->st, "ex", "e", "{\"k\":\"r\"}", exp), TS_E_NOT_FOUND);
    assert_int_equal(put_secret(f->st, TS_SECRET_TOKEN, 2, "ex", "e", T0 + HOUR, exp, NULL),
                     TS_E_NOT_FOUND);

    /* CREATE over the expired id succeeds and revives nothing of the old document. */
    d = NULL;
    assert_int_equal(
        write_doc(f->st,
                  (struct ts_doc_write){
                      .mode = TS_DOC_CREATE, .collection = "ex", .id = "e", .now = exp + 100 * SEC},
                  "{\"k\":\"w\"}", &d),
        TS_OK);
    assert_int_equal(d->created_at, exp + 100 * SEC);
    assert_int_equal(d->expires_at, 0);
    ts_doc_free(d);
    assert_doc(f->st, "ex", "e", exp + 101 * SEC, "{\"k\":\"w\"}");
    assert_int_not_equal(check(f->st, 1, exp + 101 * SEC, NULL), TS_SECRET_LIVE);
    hash = NULL;
    assert_int_equal(ts_store_credential_get(f->st, "ex", "e", exp + 101 * SEC, &hash),
                     TS_E_NOT_FOUND);
    assert_null(hash);
    assert_lookup(f->st, "ex", "by_k", "[\"v\"]", exp + 101 * SEC, "");
    assert_lookup(f->st, "ex", "by_k", "[\"w\"]", exp + 101 * SEC, "e");

    /* Deleting an expired document: NOT_FOUND, and it is gone (even read at an earlier now). */
    assert_int_equal(doc_create(f->st, "ex", "f", "{}", T0 + 10 * SEC, T0), TS_OK);
    assert_int_equal(ts_store_doc_delete(f->st, "ex", "f", T0 + 20 * SEC), TS_E_NOT_FOUND);
    assert_doc(f->st, "ex", "f", T0, NULL);

    /* REPLACE may clear an expiry. */
    assert_int_equal(doc_create(f->st, "ex", "g", "{}", T0 + 10 * SEC, T0), TS_OK);
    assert_int_equal(doc_replace(f->st, "ex", "g", "{\"kept\":1}", T0 + SEC), TS_OK);
    assert_doc(f->st, "ex", "g", T0 + HOUR, "{\"kept\":1}");
}

/* ---- indexes ---- */

static void test_index_lookup(void **state)
{
    struct fix *f = *state;
    make_collection(f->st, "people");
    make_collection(f->st, "pets");
    assert_int_equal(doc_create(f->st, "people", "p1", "{\"city\":\"Oslo\",\"age\":30}", 0, T0),
                     TS_OK);
    assert_int_equal(doc_create(f->st, "people", "p2", "{\"city\":\"Oslo\",\"age\":30.0}", 0, T0),
                     TS_OK);
    assert_int_equal(doc_create(f->st, "people", "p3", "{\"city\":\"Rome\"}", 0, T0), TS_OK);
    assert_int_equal(doc_create(f->st, "people", "p4", "{\"age\":\"30\",\"city\":null}", 0, T0),
                     TS_OK);
    assert_int_equal(doc_create(f->st, "pets", "p1", "{\"city\":\"Oslo\"}", 0, T0), TS_OK);

    /* Created over existing documents: filled from them. */
    assert_int_equal(make_index(f->st, "people", "by_city", "[\"data.city\"]", false, T0 + 1),
                     TS_OK);
    assert_int_equal(make_index(f->st, "people", "by_age", "[\"data.age\"]", false, T0 + 2), TS_OK);
    assert_int_equal(
        make_index(f->st, "people", "by_city_age", "[\"data.city\",\"data.age\"]", false, T0 + 3),
        TS_OK);
    assert_lookup(f->st, "people", "by_city", "[\"Oslo\"]", T0 + 10, "p1,p2");
    assert_lookup(f->st, "people", "by_city", "[\"Rome\"]", T0 + 10, "p3");
    assert_lookup(f->st, "people", "by_city", "[\"Paris\"]", T0 + 10, "");
    assert_lookup(f->st, "people", "by_age", "[30]", T0 + 10, "p1,p2,p4");
    assert_lookup(f->st, "people", "by_age", "[\"30\"]", T0 + 10, "p1,p2,p4");
    assert_lookup(f->st, "people", "by_city_age", "[\"Oslo\",30]", T0 + 10, "p1,p2");
    assert_lookup(f->st, "people", "by_city_age", "[\"Rome\",30]", T0 + 10, "");

    /* Paging through one term. */
    char ids[IDS_CAP];
    assert_int_equal(lookup_ids(f->st, "people", "by_age", "[30]", NULL, 2, T0 + 10, ids), TS_OK);
    assert_string_equal(ids, "p1,p2");
    assert_int_equal(lookup_ids(f->st, "people", "by_age", "[30]", "p2", 2, T0 + 10, ids), TS_OK);
    assert_string_equal(ids, "p4");
    assert_int_equal(lookup_ids(f->st, "people", "by_age", "[30]", NULL, 0, T0 + 10, ids),
                     TS_E_INVALID);

    /* Definitions */
    struct ts_index_def def = {0};
    assert_int_equal(ts_store_index_get(f->st, "people", "by_city_age", &def), TS_OK);
    assert_string_equal(def.name, "by_city_age");
    json_t *want = js("[\"data.city\",\"data.age\"]");
    assert_true(json_equal(def.terms, want));
    json_decref(want);
    assert_false(def.unique);
    assert_int_equal(def.created_at, T0 + 3);
    free(def.name);
    json_decref(def.terms);
    struct ts_index_def *defs = NULL;
    size_t n = 0;
    assert_int_equal(ts_store_index_list(f->st, "people", &defs, &n), TS_OK);
    assert_int_equal(n, 3);
    assert_string_equal(defs[0].name, "by_age");
    assert_string_equal(defs[1].name, "by_city");
    assert_string_equal(defs[2].name, "by_city_age");
    ts_index_defs_free(defs, n);
    assert_int_equal(ts_store_index_list(f->st, "pets", &defs, &n), TS_OK);
    assert_int_equal(n, 0);
    ts_index_defs_free(defs, n);
    assert_int_equal(ts_store_index_list(f->st, "nope", &defs, &n), TS_E_NOT_FOUND);

    /* Errors */
    assert_int_equal(make_index(f->st, "people", "by_city", "[\"data.x\"]", false, T0),
                     TS_E_CONFLICT);
    assert_int_equal(make_index(f->st, "people", "bad", "[\"city\"]", false, T0), TS_E_INVALID);
    assert_int_equal(make_index(f->st, "nope", "by_x", "[\"data.x\"]", false, T0), TS_E_NOT_FOUND);
    assert_int_equal(make_index(f->st, "users", "by_x", "[\"data.x\"]", false, T0), TS_E_INVALID);
    assert_int_equal(lookup_ids(f->st, "people", "nope", "[1]", NULL, 10, T0, ids), TS_E_NOT_FOUND);
    assert_int_equal(lookup_ids(f->st, "nope", "by_city", "[1]", NULL, 10, T0, ids),
                     TS_E_NOT_FOUND);
    /* An index is its collection's: "pets" has no by_city. */
    assert_int_equal(lookup_ids(f->st, "pets", "by_city", "[\"Oslo\"]", NULL, 10, T0, ids),
                     TS_E_NOT_FOUND);

    /* Writes keep the index in step: create, replace (the entry moves), delete. */
    assert_int_equal(doc_create(f->st, "people", "p5", "{\"city\":\"Oslo\"}", 0, T0 + 20), TS_OK);
    assert_lookup(f->st, "people", "by_city", "[\"Oslo\"]", T0 + 21, "p1,p2,p5");
    assert_int_equal(doc_replace(f->st, "people", "p1", "{\"city\":\"Rome\",\"age\":31}", T0 + 22),
                     TS_OK);
    assert_lookup(f->st, "people", "by_city", "[\"Oslo\"]", T0 + 23, "p2,p5");
    assert_lookup(f->st, "people", "by_city", "[\"Rome\"]", T0 + 23, "p1,p3");
    assert_lookup(f->st, "people", "by_age", "[30]", T0 + 23, "p2,p4");
    assert_lookup(f->st, "people", "by_age", "[31]", T0 + 23, "p1");
    assert_int_equal(doc_replace(f->st, "people", "p2", "{}", T0 + 24), TS_OK); /* leaves */
    assert_lookup(f->st, "people", "by_city", "[\"Oslo\"]", T0 + 25, "p5");
    assert_lookup(f->st, "people", "by_city_age", "[\"Oslo\",30]", T0 + 25, "");
    assert_int_equal(ts_store_doc_delete(f->st, "people", "p5", T0 + 26), TS_OK);
    assert_lookup(f->st, "people", "by_city", "[\"Oslo\"]", T0 + 27, "");
    /* Results carry the documents. */
    struct ts_doc **l = NULL;
    char *k = key("[\"Rome\"]");
    assert_int_equal(
        ts_store_index_lookup(f->st, "people", "by_city", k, NULL, 10, T0 + 27, &l, &n), TS_OK);
    free(k);
    assert_int_equal(n, 2);
    assert_string_equal(l[0]->collection, "people");
    assert_int_equal(json_integer_value(json_object_get(l[0]->data, "age")), 31);
    ts_doc_list_free(l, n);

    /* Delete an index. */
    assert_int_equal(ts_store_index_delete(f->st, "people", "by_city"), TS_OK);
    def = (struct ts_index_def){0};
    assert_int_equal(ts_store_index_get(f->st, "people", "by_city", &def), TS_E_NOT_FOUND);
    assert_int_equal(lookup_ids(f->st, "people", "by_city", "[\"Rome\"]", NULL, 10, T0 + 30, ids),
                     TS_E_NOT_FOUND);
    assert_int_equal(ts_store_index_delete(f->st, "people", "by_city"), TS_E_NOT_FOUND);
    assert_lookup(f->st, "people", "by_age", "[31]", T0 + 30, "p1"); /* the others stay */
    /* Documents outlive their indexes; a new index of that name starts from them. */
    assert_int_equal(make_index(f->st, "people", "by_city", "[\"data.age\"]", false, T0 + 31),
                     TS_OK);
    assert_lookup(f->st, "people", "by_city", "[31]", T0 + 32, "p1");
    assert_lookup(f->st, "people", "by_city", "[\"Rome\"]", T0 + 32, "");
}

static void test_index_unique(void **state)
{
    struct fix *f = *state;
    make_collection(f->st, "acc");
    assert_int_equal(make_index(f->st, "acc", "by_email", "[\"data.email\"]", true, T0), TS_OK);
    assert_int_equal(make_index(f->st, "acc", "by_name", "[\"data.name\"]", false, T0), TS_OK);
    struct ts_index_def def = {0};
    assert_int_equal(ts_store_index_get(f->st, "acc", "by_email", &def), TS_OK);
    assert_true(def.unique);
    free(def.name);
    json_decref(def.terms);

    assert_int_equal(doc_create(f->st, "acc", "a1", "{\"email\":\"x\",\"name\":\"one\"}", 0, T0),
                     TS_OK);
    /* On create: refused, and nothing of the failed write remains (nor its password). */
    assert_int_equal(write_doc(f->st,
                               (struct ts_doc_write){.mode = TS_DOC_CREATE,
                                                     .collection = "acc",
                                                     .id = "a2",
                                                     .password_hash = "$argon2id$a2",
                                                     .now = T0 + 1},
                               "{\"email\":\"x\",\"name\":\"two\"}", NULL),
                     TS_E_CONFLICT);
    assert_doc(f->st, "acc", "a2", T0 + 2, NULL);
    char *hash = NULL;
    assert_int_equal(ts_store_credential_get(f->st, "acc", "a2", T0 + 2, &hash), TS_E_NOT_FOUND);
    assert_lookup(f->st, "acc", "by_email", "[\"x\"]", T0 + 2, "a1");
    assert_lookup(f->st, "acc", "by_name", "[\"two\"]", T0 + 2, "");

    /* On replace: refused, the old data and entries kept. */
    assert_int_equal(
        doc_create(f->st, "acc", "a2", "{\"email\":\"y\",\"name\":\"two\"}", 0, T0 + 3), TS_OK);
    assert_int_equal(doc_replace(f->st, "acc", "a2", "{\"email\":\"x\",\"name\":\"new\"}", T0 + 4),
                     TS_E_CONFLICT);
    assert_doc(f->st, "acc", "a2", T0 + 5, "{\"email\":\"y\",\"name\":\"two\"}");
    assert_lookup(f->st, "acc", "by_email", "[\"y\"]", T0 + 5, "a2");
    assert_lookup(f->st, "acc", "by_email", "[\"x\"]", T0 + 5, "a1");
    assert_lookup(f->st, "acc", "by_name", "[\"two\"]", T0 + 5, "a2");
    assert_lookup(f->st, "acc", "by_name", "[\"new\"]", T0 + 5, "");

    /* A document keeps its own term; a term given up is free for others. */
    assert_int_equal(doc_replace(f->st, "acc", "a1", "{\"email\":\"x\",\"name\":\"1\"}", T0 + 6),
                     TS_OK);
    assert_int_equal(doc_replace(f->st, "acc", "a1", "{\"email\":\"z\"}", T0 + 7), TS_OK);
    assert_lookup(f->st, "acc", "by_email", "[\"x\"]", T0 + 8, "");
    assert_int_equal(doc_create(f->st, "acc", "a3", "{\"email\":\"x\"}", 0, T0 + 8), TS_OK);
    /* Deleting frees a term too. */
    assert_int_equal(ts_store_doc_delete(f->st, "acc", "a3", T0 + 9), TS_OK);
    assert_int_equal(doc_replace(f->st, "acc", "a2", "{\"email\":\"x\"}", T0 + 9), TS_OK);

    /* Terms compare as keys: 5 and "5" are one term. Documents without it never collide. */
    assert_int_equal(doc_create(f->st, "acc", "n1", "{\"email\":5}", 0, T0 + 10), TS_OK);
    assert_int_equal(doc_create(f->st, "acc", "n2", "{\"email\":\"5\"}", 0, T0 + 10),
                     TS_E_CONFLICT);
    assert_int_equal(doc_create(f->st, "acc", "n3", "{\"email\":5.0}", 0, T0 + 10), TS_E_CONFLICT);
    assert_int_equal(doc_create(f->st, "acc", "m1", "{}", 0, T0 + 10), TS_OK);
    assert_int_equal(doc_create(f->st, "acc", "m2", "{\"email\":null}", 0, T0 + 10), TS_OK);

    /* A term held by an expired document does not block (create, nor replace). */
    assert_int_equal(doc_create(f->st, "acc", "e1", "{\"email\":\"exp\"}", T0 + 100, T0 + 10),
                     TS_OK);
    assert_int_equal(doc_create(f->st, "acc", "e2", "{\"email\":\"exp\"}", 0, T0 + 50),
                     TS_E_CONFLICT);
    assert_int_equal(doc_create(f->st, "acc", "e2", "{\"email\":\"exp\"}", 0, T0 + 100), TS_OK);
    assert_lookup(f->st, "acc", "by_email", "[\"exp\"]", T0 + 101, "e2");
    assert_int_equal(doc_create(f->st, "acc", "e3", "{\"email\":\"exp3\"}", T0 + 200, T0 + 101),
                     TS_OK);
    assert_int_equal(doc_replace(f->st, "acc", "m1", "{\"email\":\"exp3\"}", T0 + 200), TS_OK);
    assert_lookup(f->st, "acc", "by_email", "[\"exp3\"]", T0 + 201, "m1");
}

static void test_index_unique_backfill(void **state)
{
    struct fix *f = *state;
    make_collection(f->st, "dup");
    assert_int_equal(doc_create(f->st, "dup", "d1", "{\"k\":1}", 0, T0), TS_OK);
    assert_int_equal(doc_create(f->st, "dup", "d2", "{\"k\":\"1\"}", 0, T0), TS_OK);
    assert_int_equal(doc_create(f->st, "dup", "d3", "{\"k\":2}", T0 + 100, T0), TS_OK);
    assert_int_equal(doc_create(f->st, "dup", "d4", "{\"k\":2}", 0, T0), TS_OK);

    /* Two live documents share a term: no index at all. */
    assert_int_equal(make_index(f->st, "dup", "by_k", "[\"data.k\"]", true, T0 + 200),
                     TS_E_CONFLICT);
    struct ts_index_def def = {0};
    assert_int_equal(ts_store_index_get(f->st, "dup", "by_k", &def), TS_E_NOT_FOUND);
    struct ts_index_def *defs = NULL;
    size_t n = 0;
    assert_int_equal(ts_store_index_list(f->st, "dup", &defs, &n), TS_OK);
    assert_int_equal(n, 0);
    ts_index_defs_free(defs, n);
    char ids[IDS_CAP];
    assert_int_equal(lookup_ids(f->st, "dup", "by_k", "[1]", NULL, 10, T0 + 200, ids),
                     TS_E_NOT_FOUND);
    assert_list(f->st, "dup", NULL, 10, T0 + 200, "d1,d2,d4");

    /* Without the duplicate it is made; the expired d3 shares d4's term but does not count. */
    assert_int_equal(ts_store_doc_delete(f->st, "dup", "d2", T0 + 200), TS_OK);
    assert_int_equal(make_index(f->st, "dup", "by_k", "[\"data.k\"]", true, T0 + 200), TS_OK);
    assert_lookup(f->st, "dup", "by_k", "[1]", T0 + 201, "d1");
    assert_lookup(f->st, "dup", "by_k", "[2]", T0 + 201, "d4");
    assert_int_equal(doc_create(f->st, "dup", "d5", "{\"k\":2}", 0, T0 + 202), TS_E_CONFLICT);
    assert_int_equal(doc_create(f->st, "dup", "d5", "{\"k\":5}", 0, T0 + 202), TS_OK);
}

/* ---- concurrency: racing writers of one unique term, and of one id ---- */

#define RACERS 16

struct racer {
    struct ts_store *st;
    int index;
    bool same_id;
    enum ts_rc rc;
    pthread_barrier_t *start;
};

static void *racer_main(void *arg)
{
    struct racer *r = arg;
    char id[32];
    snprintf(id, sizeof(id), r->same_id ? "one" : "r%02d", r->index);
    json_t *data = json_pack("{s:s, s:i}", "email", "same@example.com", "n", r->index);
    struct ts_doc_write w = {.mode = TS_DOC_CREATE,
                             .collection = r->same_id ? "plain" : "race",
                             .id = id,
                             .data = data,
                             .now = T0 + r->index};
    pthread_barrier_wait(r->start);
    r->rc = ts_store_doc_write(r->st, &w, NULL);
    json_decref(data);
    return NULL;
}

/* Runs RACERS writers at once; returns the index of the one winner. */
static int race(struct fix *f, bool same_id)
{
    struct racer rs[RACERS];
    pthread_t th[RACERS];
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, RACERS);
    for (int i = 0; i < RACERS; i++) {
        rs[i] = (struct racer){.st = f->st, .index = i, .same_id = same_id, .start = &start};
        assert_int_equal(pthread_create(&th[i], NULL, racer_main, &rs[i]), 0);
    }
    for (int i = 0; i < RACERS; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&start);
    int ok = 0, conflict = 0, winner = -1;
    for (int i = 0; i < RACERS; i++) {
        if (rs[i].rc == TS_OK) {
            ok++;
            winner = i;
        } else if (rs[i].rc == TS_E_CONFLICT) {
            conflict++;
        } else {
            fail_msg("racer %d: %s", i, ts_rc_name(rs[i].rc));
        }
    }
    assert_int_equal(ok, 1);
    assert_int_equal(conflict, RACERS - 1);
    return winner;
}

static void test_unique_concurrent(void **state)
{
    struct fix *f = *state;
    make_collection(f->st, "race");
    make_collection(f->st, "plain");
    assert_int_equal(make_index(f->st, "race", "by_email", "[\"data.email\"]", true, T0), TS_OK);

    int w = race(f, false);
    char want[8];
    snprintf(want, sizeof(want), "r%02d", w);
    assert_lookup(f->st, "race", "by_email", "[\"same@example.com\"]", T0 + HOUR, want);
    assert_list(f->st, "race", NULL, 100, T0 + HOUR, want); /* the losers left nothing */

    w = race(f, true);
    struct ts_doc *d = NULL;
    assert_int_equal(ts_store_doc_get(f->st, "plain", "one", T0 + HOUR, &d), TS_OK);
    assert_int_equal(json_integer_value(json_object_get(d->data, "n")), w);
    ts_doc_free(d);
}

/* ---- credentials ---- */

static void test_credentials(void **state)
{
    struct fix *f = *state;
    make_collection(f->st, "members");
    struct ts_doc *d = NULL;
    assert_int_equal(write_doc(f->st,
                               (struct ts_doc_write){.mode = TS_DOC_CREATE,
                                                     .collection = "members",
                                                     .id = "m1",
                                                     .password_hash = "$argon2id$h1",
                                                     .now = T0},
                               "{\"name\":\"m\"}", &d),
                     TS_OK);
    /* The hash is a credential, never part of the data. */
    char *text = json_dumps(d->data, JSON_COMPACT);
    assert_null(strstr(text, "argon2id"));
    free(text);
    ts_doc_free(d);
    assert_doc(f->st, "members", "m1", T0, "{\"name\":\"m\"}");
    char *hash = NULL;
    assert_int_equal(ts_store_credential_get(f->st, "members", "m1", T0, &hash), TS_OK);
    assert_string_equal(hash, "$argon2id$h1");
    free(hash);

    /* A replace without a hash keeps the credential; with one, sets it. */
    assert_int_equal(doc_replace(f->st, "members", "m1", "{\"name\":\"n\"}", T0 + 1), TS_OK);
    assert_int_equal(ts_store_credential_get(f->st, "members", "m1", T0 + 1, &hash), TS_OK);
    assert_string_equal(hash, "$argon2id$h1");
    free(hash);
    assert_int_equal(write_doc(f->st,
                               (struct ts_doc_write){.mode = TS_DOC_REPLACE,
                                                     .collection = "members",
                                                     .id = "m1",
                                                     .password_hash = "$argon2id$h2",
                                                     .now = T0 + 2},
                               "{\"name\":\"o\"}", NULL),
                     TS_OK);
    assert_int_equal(ts_store_credential_get(f->st, "members", "m1", T0 + 2, &hash), TS_OK);
    assert_string_equal(hash, "$argon2id$h2");
    free(hash);
    assert_doc(f->st, "members", "m1", T0 + 2, "{\"name\":\"o\"}");

    /* credential_set: compare-and-swap on the old hash. */
    assert_int_equal(
        ts_store_credential_set(f->st, "members", "m1", "$argon2id$h3", "wrong", T0 + 3),
        TS_E_CONFLICT);
    assert_int_equal(ts_store_credential_get(f->st, "members", "m1", T0 + 3, &hash), TS_OK);
    assert_string_equal(hash, "$argon2id$h2");
    free(hash);
    assert_int_equal(
        ts_store_credential_set(f->st, "members", "m1", "$argon2id$h3", "$argon2id$h2", T0 + 4),
        TS_OK);
    assert_int_equal(ts_store_credential_set(f->st, "members", "m1", "$argon2id$h4", NULL, T0 + 5),
                     TS_OK);
    assert_int_equal(ts_store_credential_get(f->st, "members", "m1", T0 + 5, &hash), TS_OK);
    assert_string_equal(hash, "$argon2id$h4");
    free(hash);

    /* Identities without a password, or not there. */
    assert_int_equal(doc_create(f->st, "members", "m2", "{}", 0, T0), TS_OK);
    static char sentinel[] = "sentinel";
    hash = sentinel;
    assert_int_equal(ts_store_credential_get(f->st, "members", "m2", T0, &hash), TS_E_NOT_FOUND);
    assert_int_equal(ts_store_credential_get(f->st, "members", "zz", T0, &hash), TS_E_NOT_FOUND);
    assert_int_equal(ts_store_credential_get(f->st, "nope", "m1", T0, &hash), TS_E_NOT_FOUND);
    assert_ptr_equal(hash, sentinel);
    assert_int_equal(ts_store_credential_set(f->st, "members", "zz", "h", NULL, T0),
                     TS_E_NOT_FOUND);
    assert_int_equal(ts_store_credential_set(f->st, "members", "m2", "$argon2id$m2", NULL, T0),
                     TS_OK);
    assert_int_equal(ts_store_credential_get(f->st, "members", "m2", T0, &hash), TS_OK);
    assert_string_equal(hash, "$argon2id$m2");
    free(hash);

    /* Delete without revoking: tokens stay. */
    token(f->st, 1, "members", "m1", T0 + HOUR, T0 + 10, NULL);
    token(f->st, 2, "members", "m1", T0 + HOUR, T0 + 10, NULL);
    token(f->st, 3, "members", "m2", T0 + HOUR, T0 + 10, NULL);
    assert_int_equal(ts_store_credential_delete(f->st, "members", "m1", false, NULL), TS_OK);
    assert_int_equal(ts_store_credential_get(f->st, "members", "m1", T0 + 11, &hash),
                     TS_E_NOT_FOUND);
    assert_int_equal(check(f->st, 1, T0 + 11, NULL), TS_SECRET_LIVE);
    assert_int_equal(check(f->st, 2, T0 + 11, NULL), TS_SECRET_LIVE);
    assert_int_equal(ts_store_credential_delete(f->st, "members", "m1", false, NULL),
                     TS_E_NOT_FOUND);
    /* Delete revoking: the identity's tokens go with it, no one else's; the document stays. */
    assert_int_equal(ts_store_credential_set(f->st, "members", "m1", "$argon2id$h5", NULL, T0 + 12),
                     TS_OK);
    int64_t revoked = -1;
    assert_int_equal(ts_store_credential_delete(f->st, "members", "m1", true, &revoked), TS_OK);
    assert_int_equal(revoked, 2);
    assert_int_equal(check(f->st, 1, T0 + 13, NULL), TS_SECRET_UNKNOWN);
    assert_int_equal(check(f->st, 2, T0 + 13, NULL), TS_SECRET_UNKNOWN);
    assert_int_equal(check(f->st, 3, T0 + 13, NULL), TS_SECRET_LIVE);
    assert_doc(f->st, "members", "m1", T0 + 13, "{\"name\":\"o\"}");
}

static void test_credentials_users(void **state)
{
    struct fix *f = *state;
    struct ts_user *u = make_user(f->st, "u@example.com", "$argon2id$u1");
    struct ts_user *v = make_user(f->st, "v@example.com", NULL);
    char *hash = NULL;
    assert_int_equal(ts_store_credential_get(f->st, "users", u->id, T0, &hash), TS_OK);
    assert_string_equal(hash, "$argon2id$u1");
    free(hash);
    assert_int_equal(ts_store_credential_get(f->st, "users", v->id, T0, &hash), TS_E_NOT_FOUND);
    char ghost[TS_STORE_ID_LEN + 1];
    ts_uuid_v4(ghost);
    assert_int_equal(ts_store_credential_get(f->st, "users", ghost, T0, &hash), TS_E_NOT_FOUND);
    assert_int_equal(ts_store_credential_set(f->st, "users", ghost, "h", NULL, T0), TS_E_NOT_FOUND);

    /* Set: the same credential as the user operations see. */
    assert_int_equal(ts_store_credential_set(f->st, "users", u->id, "$argon2id$u2", "nope", T0),
                     TS_E_CONFLICT);
    assert_int_equal(
        ts_store_credential_set(f->st, "users", u->id, "$argon2id$u2", "$argon2id$u1", T0 + 1),
        TS_OK);
    assert_int_equal(ts_store_password_get(f->st, u->id, &hash), TS_OK);
    assert_string_equal(hash, "$argon2id$u2");
    free(hash);
    assert_int_equal(ts_store_credential_set(f->st, "users", v->id, "$argon2id$v1", NULL, T0 + 1),
                     TS_OK);
    struct ts_user *g = NULL;
    assert_int_equal(ts_store_user_get(f->st, v->id, &g), TS_OK);
    assert_true(g->has_password);
    ts_user_free(g);

    /* Revoking deletes the user's tokens and sessions; without, they stay. */
    char s1[TS_STORE_ID_LEN + 1], s2[TS_STORE_ID_LEN + 1];
    create_session(f->st, u->id, 1, T0 + 2, s1);
    create_session(f->st, v->id, 2, T0 + 2, s2);
    token(f->st, 1, "users", u->id, T0 + HOUR, T0 + 2, NULL);
    token(f->st, 2, "users", v->id, T0 + HOUR, T0 + 2, NULL);
    assert_int_equal(ts_store_credential_delete(f->st, "users", v->id, false, NULL), TS_OK);
    assert_true(session_alive(f->st, s2, v->id));
    assert_int_equal(check(f->st, 2, T0 + 3, NULL), TS_SECRET_LIVE);
    int64_t revoked = -1;
    assert_int_equal(ts_store_credential_delete(f->st, "users", u->id, true, &revoked), TS_OK);
    assert_true(revoked >= 1);
    assert_false(session_alive(f->st, s1, u->id));
    assert_int_equal(check(f->st, 1, T0 + 3, NULL), TS_SECRET_UNKNOWN);
    assert_int_equal(ts_store_password_get(f->st, u->id, &hash), TS_E_NOT_FOUND);
    assert_int_equal(ts_store_user_get(f->st, u->id, &g), TS_OK); /* the user stays */
    assert_false(g->has_password);
    ts_user_free(g);
    assert_true(session_alive(f->st, s2, v->id));
    ts_user_free(u);
    ts_user_free(v);
}

static void test_credential_list(void **state)
{
    struct fix *f = *state;
    make_collection(f->st, "members");
    make_collection(f->st, "staff");
    static const char *const mids[] = {"m3", "m1", "m2"};
    for (int i = 0; i < 3; i++)
        assert_int_equal(write_doc(f->st,
                                   (struct ts_doc_write){.mode = TS_DOC_CREATE,
                                                         .collection = "members",
                                                         .id = mids[i],
                                                         .password_hash = "$argon2id$secret",
                                                         .now = T0},
                                   "{}", NULL),
                         TS_OK);
    assert_int_equal(doc_create(f->st, "members", "m4", "{}", 0, T0), TS_OK); /* no password */
    assert_int_equal(write_doc(f->st,
                               (struct ts_doc_write){.mode = TS_DOC_CREATE,
                                                     .collection = "staff",
                                                     .id = "s1",
                                                     .password_hash = "$argon2id$secret",
                                                     .now = T0},
                               "{}", NULL),
                     TS_OK);
    struct ts_user *u = make_user(f->st, "u@example.com", "$argon2id$secret");
    struct ts_user *v = make_user(f->st, "v@example.com", NULL);
    assert_int_equal(ts_store_credential_set(f->st, "members", "m2", "$argon2id$new", NULL, T0 + 5),
                     TS_OK);

    char uid[64];
    snprintf(uid, sizeof(uid), "users/%s", u->id);
    const char *all[] = {"members/m1", "members/m2", "members/m3", "staff/s1", uid};
    struct ts_credential_info *l = NULL;
    size_t n = 0;
    assert_int_equal(ts_store_credential_list(f->st, NULL, NULL, NULL, 100, &l, &n), TS_OK);
    assert_int_equal(n, 5);
    for (size_t i = 0; i < n; i++) {
        char got[128];
        snprintf(got, sizeof(got), "%s/%s", l[i].collection, l[i].id);
        assert_string_equal(got, all[i]);
        assert_string_equal(l[i].strategy, "password");
        assert_true(l[i].created_at > 0);
    }
    assert_int_equal(l[1].created_at, T0); /* m2: set again later */
    assert_int_equal(l[1].updated_at, T0 + 5);
    assert_int_equal(l[0].updated_at, T0);
    ts_credential_infos_free(l, n);

    /* One collection; keyset pagination, across collections too. */
    assert_int_equal(ts_store_credential_list(f->st, "members", NULL, NULL, 100, &l, &n), TS_OK);
    assert_int_equal(n, 3);
    assert_string_equal(l[0].id, "m1");
    assert_string_equal(l[2].id, "m3");
    ts_credential_infos_free(l, n);
    assert_int_equal(ts_store_credential_list(f->st, NULL, "members", "m1", 2, &l, &n), TS_OK);
    assert_int_equal(n, 2);
    assert_string_equal(l[0].id, "m2");
    assert_string_equal(l[1].id, "m3");
    ts_credential_infos_free(l, n);
    assert_int_equal(ts_store_credential_list(f->st, NULL, "members", "m3", 10, &l, &n), TS_OK);
    assert_int_equal(n, 2);
    assert_string_equal(l[0].collection, "staff");
    assert_string_equal(l[1].collection, "users");
    assert_string_equal(l[1].id, u->id);
    ts_credential_infos_free(l, n);
    assert_int_equal(ts_store_credential_list(f->st, "members", "members", "m3", 10, &l, &n),
                     TS_OK);
    assert_int_equal(n, 0);
    ts_credential_infos_free(l, n);
    assert_int_equal(ts_store_credential_list(f->st, "users", NULL, NULL, 10, &l, &n), TS_OK);
    assert_int_equal(n, 1);
    assert_string_equal(l[0].id, u->id);
    ts_credential_infos_free(l, n);
    assert_int_equal(ts_store_credential_list(f->st, NULL, "members", NULL, 10, &l, &n),
                     TS_E_INVALID);
    assert_int_equal(ts_store_credential_list(f->st, NULL, NULL, NULL, 0, &l, &n), TS_E_INVALID);
    ts_user_free(u);
    ts_user_free(v);
}

/* ---- secrets ---- */

static void test_secret_check(void **state)
{
    struct fix *f = *state;
    make_collection(f->st, "apps");
    const int64_t doc_exp = T0 + HOUR;
    assert_int_equal(doc_create(f->st, "apps", "a1", "{}", doc_exp, T0), TS_OK);

    /* A token with every field. */
    struct ts_secret_row r = {.kind = TS_SECRET_TOKEN,
                              .identity_collection = MUT("apps"),
                              .identity_id = MUT("a1"),
                              .origin = MUT("login"),
                              .description = MUT("laptop"),
                              .data = js("{\"scope\":\"read\"}"),
                              .meta = js("{\"provider\":\"x\"}"),
                              .created_at = T0 + SEC,
                              .expires_at = T0 + 600 * SEC};
    ts_uuid_v4(r.id);
    uint8_t h[TS_SECRET_HASH_LEN];
    secret_hash(h, 1);
    assert_int_equal(ts_store_secret_create(f->st, &r, h, T0 + SEC), TS_OK);
    assert_int_equal(ts_store_secret_create(f->st, &r, h, T0 + SEC), TS_E_CONFLICT);

    enum ts_secret_state s = TS_SECRET_UNKNOWN;
    struct ts_secret_row *row = NULL;
    int64_t vu = 0;
    assert_int_equal(ts_store_secret_check(f->st, h, T0 + 2 * SEC, &s, &row, &vu), TS_OK);
    assert_int_equal(s, TS_SECRET_LIVE);
    assert_int_equal(vu, T0 + 600 * SEC); /* the token expires first */
    assert_string_equal(row->id, r.id);
    assert_int_equal(row->kind, TS_SECRET_TOKEN);
    assert_string_equal(row->identity_collection, "apps");
    assert_string_equal(row->identity_id, "a1");
    assert_null(row->role);
    assert_string_equal(row->origin, "login");
    assert_string_equal(row->description, "laptop");
    assert_true(json_equal(row->data, r.data));
    assert_true(json_equal(row->meta, r.meta));
    assert_int_equal(row->created_at, T0 + SEC);
    assert_int_equal(row->expires_at, T0 + 600 * SEC);
    ts_secret_row_free(row);
    row = NULL;
    assert_int_equal(ts_store_secret_get(f->st, r.id, T0 + 2 * SEC, &row), TS_OK);
    assert_string_equal(row->identity_id, "a1");
    ts_secret_row_free(row);
    row = NULL;
    assert_int_equal(ts_store_secret_get(f->st, r.id, T0 + 600 * SEC, &row), TS_E_NOT_FOUND);
    assert_null(row);
    json_decref(r.data);
    json_decref(r.meta);

    /* The identity expires first. */
    token(f->st, 2, "apps", "a1", T0 + 2 * HOUR, T0 + SEC, NULL);
    assert_int_equal(check(f->st, 2, T0 + 2 * SEC, &vu), TS_SECRET_LIVE);
    assert_int_equal(vu, doc_exp);

    /* The failures, in order. */
    assert_int_equal(check(f->st, 99, T0 + 2 * SEC, NULL), TS_SECRET_UNKNOWN);
    assert_int_equal(check(f->st, 1, T0 + 600 * SEC, NULL), TS_SECRET_EXPIRED);
    assert_int_equal(check(f->st, 1, doc_exp, NULL), TS_SECRET_EXPIRED); /* both: expired first */
    assert_int_equal(check(f->st, 2, doc_exp, NULL), TS_SECRET_IDENTITY_GONE);

    /* Keys: no identity, no expiry. */
    char kid[TS_STORE_ID_LEN + 1];
    assert_int_equal(put_secret(f->st, TS_SECRET_KEY, 3, NULL, NULL, 0, T0, kid), TS_OK);
    vu = 0;
    assert_int_equal(check(f->st, 3, T0 + 100 * HOUR, &vu), TS_SECRET_LIVE);
    assert_int_equal(vu, INT64_MAX);
    row = NULL;
    assert_int_equal(ts_store_secret_get(f->st, kid, T0, &row), TS_OK);
    assert_int_equal(row->kind, TS_SECRET_KEY);
    assert_string_equal(row->role, "service");
    assert_null(row->identity_collection);
    assert_null(row->identity_id);
    assert_int_equal(row->expires_at, 0);
    ts_secret_row_free(row);
    assert_int_equal(put_secret(f->st, TS_SECRET_KEY, 4, NULL, NULL, T0 + HOUR, T0, NULL), TS_OK);
    assert_int_equal(check(f->st, 4, T0, &vu), TS_SECRET_LIVE);
    assert_int_equal(vu, T0 + HOUR);
    assert_int_equal(check(f->st, 4, T0 + HOUR, NULL), TS_SECRET_EXPIRED);

    /* No live identity, no secret. */
    char ghost[TS_STORE_ID_LEN + 1];
    ts_uuid_v4(ghost);
    assert_int_equal(put_secret(f->st, TS_SECRET_TOKEN, 5, "apps", "ghost", T0 + HOUR, T0, NULL),
                     TS_E_NOT_FOUND);
    assert_int_equal(put_secret(f->st, TS_SECRET_TOKEN, 5, "nope", "a1", T0 + HOUR, T0, NULL),
                     TS_E_NOT_FOUND);
    assert_int_equal(put_secret(f->st, TS_SECRET_TOKEN, 5, "users", ghost, T0 + HOUR, T0, NULL),
                     TS_E_NOT_FOUND);
    assert_int_equal(
        put_secret(f->st, TS_SECRET_TOKEN, 5, "apps", "a1", T0 + 2 * HOUR, doc_exp, NULL),
        TS_E_NOT_FOUND);
    assert_int_equal(check(f->st, 5, T0, NULL), TS_SECRET_UNKNOWN);

    /* A secret older than its identity is not that identity's (the rule that keeps a
     * re-created document from reviving what was bound to its predecessor). */
    assert_int_equal(doc_create(f->st, "apps", "a3", "{}", 0, T0 + 10 * SEC), TS_OK);
    struct ts_secret_row older = {.kind = TS_SECRET_TOKEN,
                                  .identity_collection = MUT("apps"),
                                  .identity_id = MUT("a3"),
                                  .origin = MUT("admin"),
                                  .created_at = T0 + 5 * SEC,
                                  .expires_at = T0 + HOUR};
    ts_uuid_v4(older.id);
    secret_hash(h, 7);
    assert_int_equal(ts_store_secret_create(f->st, &older, h, T0 + 20 * SEC), TS_OK);
    assert_int_equal(check(f->st, 7, T0 + 20 * SEC, NULL), TS_SECRET_IDENTITY_GONE);

    /* Deleting the document deletes its tokens. */
    assert_int_equal(doc_create(f->st, "apps", "a2", "{}", 0, T0), TS_OK);
    token(f->st, 6, "apps", "a2", T0 + HOUR, T0 + 1, NULL);
    assert_int_equal(check(f->st, 6, T0 + SEC, NULL), TS_SECRET_LIVE);
    assert_int_equal(ts_store_doc_delete(f->st, "apps", "a2", T0 + SEC), TS_OK);
    assert_int_equal(check(f->st, 6, T0 + SEC, NULL), TS_SECRET_UNKNOWN);
    /* ... and a new document of that id does not bring them back. */
    assert_int_equal(doc_create(f->st, "apps", "a2", "{}", 0, T0 + 2 * SEC), TS_OK);
    assert_int_not_equal(check(f->st, 6, T0 + 3 * SEC, NULL), TS_SECRET_LIVE);
}

static void test_secret_users(void **state)
{
    struct fix *f = *state;
    struct ts_user *u = make_user(f->st, "u@example.com", NULL);
    struct ts_user *v = make_user(f->st, "v@example.com", NULL);
    token(f->st, 1, "users", u->id, T0 + HOUR, T0 + SEC, NULL);
    assert_int_equal(put_secret(f->st, TS_SECRET_KEY, 2, "users", u->id, 0, T0 + SEC, NULL), TS_OK);
    token(f->st, 3, "users", v->id, T0 + HOUR, T0 + SEC, NULL);
    int64_t vu = 0;
    assert_int_equal(check(f->st, 1, T0 + 2 * SEC, &vu), TS_SECRET_LIVE);
    assert_int_equal(vu, T0 + HOUR);
    assert_int_equal(check(f->st, 2, T0 + 2 * SEC, &vu), TS_SECRET_LIVE);
    assert_int_equal(vu, INT64_MAX);

    /* Banned: the identity is gone while the ban lasts. */
    struct ts_user *g = NULL;
    assert_int_equal(ts_store_user_get(f->st, u->id, &g), TS_OK);
    int64_t expected = g->updated_at;
    g->banned_until = T0 + 2 * HOUR;
    g->updated_at = expected + 1;
    assert_int_equal(ts_store_user_update(f->st, g, expected), TS_OK);
    ts_user_free(g);
    assert_int_equal(check(f->st, 1, T0 + 3 * SEC, NULL), TS_SECRET_IDENTITY_GONE);
    assert_int_equal(check(f->st, 2, T0 + 3 * SEC, NULL), TS_SECRET_IDENTITY_GONE);
    assert_int_equal(check(f->st, 3, T0 + 3 * SEC, NULL), TS_SECRET_LIVE);
    assert_int_equal(check(f->st, 2, T0 + 2 * HOUR + SEC, NULL), TS_SECRET_LIVE); /* ban over */

    /* Deleting the user deletes the tokens and keys bound to it. */
    assert_int_equal(ts_store_user_delete(f->st, u->id), TS_OK);
    assert_int_equal(check(f->st, 1, T0 + 3 * SEC, NULL), TS_SECRET_UNKNOWN);
    assert_int_equal(check(f->st, 2, T0 + 3 * SEC, NULL), TS_SECRET_UNKNOWN);
    assert_int_equal(check(f->st, 3, T0 + 3 * SEC, NULL), TS_SECRET_LIVE);
    assert_int_equal(
        put_secret(f->st, TS_SECRET_TOKEN, 4, "users", u->id, T0 + HOUR, T0 + 4 * SEC, NULL),
        TS_E_NOT_FOUND);
    ts_user_free(u);
    ts_user_free(v);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The ids of a secret_list page joined with commas. */
static enum ts_rc secret_ids(struct ts_store *st, struct ts_secret_filter flt, char buf[IDS_CAP])
{
    struct ts_secret_row **l = NULL;
    size_t n = 0;
    enum ts_rc rc = ts_store_secret_list(st, &flt, &l, &n);
    buf[0] = '\0';
    if (rc != TS_OK)
        return rc;
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(l[i]->kind, flt.kind);
        if (i)
            strcat(buf, ",");
        strcat(buf, l[i]->id);
    }
    ts_secret_rows_free(l, n);
    return rc;
}

/* The ids given, sorted and joined with commas. */
static void sorted_ids(char buf[IDS_CAP], int n, ...)
{
    const char *ids[8];
    va_list ap;
    va_start(ap, n);
    for (int i = 0; i < n; i++)
        ids[i] = va_arg(ap, const char *);
    va_end(ap);
    qsort(ids, (size_t)n, sizeof(ids[0]), cmp_str);
    buf[0] = '\0';
    for (int i = 0; i < n; i++) {
        if (i)
            strcat(buf, ",");
        strcat(buf, ids[i]);
    }
}

static void test_secret_list_delete(void **state)
{
    struct fix *f = *state;
    make_collection(f->st, "apps");
    static const char *const docs[] = {"x", "y", "z"};
    for (int i = 0; i < 3; i++)
        assert_int_equal(doc_create(f->st, "apps", docs[i], "{}", 0, T0 - SEC), TS_OK);
    char t1[37], t2[37], t3[37], t4[37], k5[37], k6[37], t7[37];
    token(f->st, 1, "apps", "x", T0 + HOUR, T0, t1);
    token(f->st, 2, "apps", "x", T0 + HOUR, T0, t2);
    token(f->st, 3, "apps", "y", T0 + HOUR, T0, t3);
    token(f->st, 4, "apps", "z", T0 + 10 * SEC, T0, t4);
    assert_int_equal(put_secret(f->st, TS_SECRET_KEY, 5, NULL, NULL, 0, T0, k5), TS_OK);
    assert_int_equal(put_secret(f->st, TS_SECRET_KEY, 6, "apps", "x", 0, T0, k6), TS_OK);
    const int64_t now = T0 + 20 * SEC;

    char got[IDS_CAP], want[IDS_CAP];
    struct ts_secret_filter all_tokens = {.kind = TS_SECRET_TOKEN, .limit = 100, .now = now};
    assert_int_equal(secret_ids(f->st, all_tokens, got), TS_OK);
    sorted_ids(want, 3, t1, t2, t3); /* t4 has expired */
    assert_string_equal(got, want);
    struct ts_secret_filter flt = all_tokens;
    flt.now = T0;
    assert_int_equal(secret_ids(f->st, flt, got), TS_OK);
    sorted_ids(want, 4, t1, t2, t3, t4);
    assert_string_equal(got, want);
    flt = all_tokens;
    flt.identity_collection = "apps";
    flt.identity_id = "x";
    assert_int_equal(secret_ids(f->st, flt, got), TS_OK);
    sorted_ids(want, 2, t1, t2);
    assert_string_equal(got, want);
    flt.kind = TS_SECRET_KEY;
    assert_int_equal(secret_ids(f->st, flt, got), TS_OK);
    assert_string_equal(got, k6);
    flt = (struct ts_secret_filter){.kind = TS_SECRET_KEY, .limit = 100, .now = now};
    assert_int_equal(secret_ids(f->st, flt, got), TS_OK);
    sorted_ids(want, 2, k5, k6);
    assert_string_equal(got, want);
    /* Pages */
    const char *sorted[3] = {t1, t2, t3};
    qsort(sorted, 3, sizeof(sorted[0]), cmp_str);
    flt = all_tokens;
    flt.limit = 2;
    assert_int_equal(secret_ids(f->st, flt, got), TS_OK);
    sorted_ids(want, 2, sorted[0], sorted[1]);
    assert_string_equal(got, want);
    flt.after = sorted[1];
    assert_int_equal(secret_ids(f->st, flt, got), TS_OK);
    assert_string_equal(got, sorted[2]);
    flt.limit = 0;
    assert_int_equal(secret_ids(f->st, flt, got), TS_E_INVALID);

    /* Delete one: by kind and id. */
    assert_int_equal(ts_store_secret_delete(f->st, TS_SECRET_KEY, t1), TS_E_NOT_FOUND);
    assert_int_equal(check(f->st, 1, now, NULL), TS_SECRET_LIVE);
    assert_int_equal(ts_store_secret_delete(f->st, TS_SECRET_TOKEN, t1), TS_OK);
    assert_int_equal(check(f->st, 1, now, NULL), TS_SECRET_UNKNOWN);
    assert_int_equal(ts_store_secret_delete(f->st, TS_SECRET_TOKEN, t1), TS_E_NOT_FOUND);
    assert_int_equal(ts_store_secret_delete(f->st, TS_SECRET_KEY, k5), TS_OK);
    assert_int_equal(check(f->st, 5, now, NULL), TS_SECRET_UNKNOWN);

    /* Delete an identity's: but one, then all; of one kind only. */
    token(f->st, 7, "apps", "x", T0 + HOUR, T0, t7);
    int64_t deleted = -1;
    assert_int_equal(
        ts_store_secrets_delete_for_identity(f->st, TS_SECRET_TOKEN, "apps", "x", t2, &deleted),
        TS_OK);
    assert_int_equal(deleted, 1);
    assert_int_equal(check(f->st, 7, now, NULL), TS_SECRET_UNKNOWN);
    assert_int_equal(check(f->st, 2, now, NULL), TS_SECRET_LIVE);
    assert_int_equal(
        ts_store_secrets_delete_for_identity(f->st, TS_SECRET_TOKEN, "apps", "x", NULL, NULL),
        TS_OK);
    assert_int_equal(check(f->st, 2, now, NULL), TS_SECRET_UNKNOWN);
    assert_int_equal(check(f->st, 3, now, NULL), TS_SECRET_LIVE); /* y's */
    assert_int_equal(check(f->st, 6, now, NULL), TS_SECRET_LIVE); /* x's key */
    assert_int_equal(
        ts_store_secrets_delete_for_identity(f->st, TS_SECRET_KEY, "apps", "x", NULL, &deleted),
        TS_OK);
    assert_int_equal(deleted, 1);
    assert_int_equal(check(f->st, 6, now, NULL), TS_SECRET_UNKNOWN);
    assert_int_equal(
        ts_store_secrets_delete_for_identity(f->st, TS_SECRET_TOKEN, "apps", "x", NULL, &deleted),
        TS_OK);
    assert_int_equal(deleted, 0);
}

static void test_identity_collections(void **state)
{
    struct fix *f = *state;
    struct ts_user *u = make_user(f->st, "u@example.com", NULL);
    make_collection(f->st, "bots");
    make_collection(f->st, "apps");
    assert_int_equal(doc_create(f->st, "apps", u->id, "{}", T0 + HOUR, T0), TS_OK);
    assert_int_equal(doc_create(f->st, "bots", u->id, "{}", 0, T0), TS_OK);
    assert_int_equal(doc_create(f->st, "bots", "b1", "{}", 0, T0), TS_OK);
    char **l = NULL;
    size_t n = 0;
    assert_int_equal(ts_store_identity_collections(f->st, u->id, T0, &l, &n), TS_OK);
    assert_int_equal(n, 3);
    assert_string_equal(l[0], "users");
    assert_true((strcmp(l[1], "apps") == 0 && strcmp(l[2], "bots") == 0) ||
                (strcmp(l[1], "bots") == 0 && strcmp(l[2], "apps") == 0));
    ts_strings_free(l, n);
    assert_int_equal(ts_store_identity_collections(f->st, u->id, T0 + HOUR, &l, &n), TS_OK);
    assert_int_equal(n, 2);
    assert_string_equal(l[0], "users");
    assert_string_equal(l[1], "bots");
    ts_strings_free(l, n);
    assert_int_equal(ts_store_identity_collections(f->st, "b1", T0, &l, &n), TS_OK);
    assert_int_equal(n, 1);
    assert_string_equal(l[0], "bots");
    ts_strings_free(l, n);
    assert_int_equal(ts_store_identity_collections(f->st, "nobody", T0, &l, &n), TS_OK);
    assert_int_equal(n, 0);
    ts_strings_free(l, n);
    ts_user_free(u);
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

/* Asserts that op moves the epoch, from a settled, not blind, store. */
#define assert_moves_epoch(st, op)                                                                 \
    do {                                                                                           \
        settle(st);                                                                                \
        uint64_t e_ = ts_store_epoch(st);                                                          \
        assert_int_equal(ts_store_epoch(st), e_);                                                  \
        op;                                                                                        \
        assert_int_not_equal(ts_store_epoch(st), e_);                                              \
    } while (0)

static void test_epoch(void **state)
{
    struct fix *f = *state;
    /* PostgreSQL is blind (a new epoch on every read) until its listener is up. */
    for (int i = 0; ts_store_epoch(f->st) != ts_store_epoch(f->st); i++) {
        if (i == 500)
            fail_msg("the store stayed blind for 5 s");
        ts_store_poll_external(f->st);
        usleep(10000);
    }
    assert_moves_epoch(f->st, make_collection(f->st, "ep"));
    assert_moves_epoch(f->st, assert_int_equal(doc_create(f->st, "ep", "d", "{}", 0, T0), TS_OK));
    assert_moves_epoch(f->st, assert_int_equal(doc_replace(f->st, "ep", "d", "{}", T0 + 1), TS_OK));
    char id[TS_STORE_ID_LEN + 1];
    token(f->st, 1, "ep", "d", T0 + HOUR, T0 + 2, id); /* may or may not move it */
    assert_moves_epoch(f->st,
                       assert_int_equal(ts_store_secret_delete(f->st, TS_SECRET_TOKEN, id), TS_OK));
    token(f->st, 2, "ep", "d", T0 + HOUR, T0 + 2, NULL);
    assert_moves_epoch(f->st, assert_int_equal(ts_store_secrets_delete_for_identity(
                                                   f->st, TS_SECRET_TOKEN, "ep", "d", NULL, NULL),
                                               TS_OK));
    assert_moves_epoch(f->st,
                       assert_int_equal(ts_store_doc_delete(f->st, "ep", "d", T0 + 3), TS_OK));
    assert_moves_epoch(
        f->st, assert_int_equal(make_index(f->st, "ep", "i", "[\"data.a\"]", false, T0), TS_OK));
    assert_moves_epoch(f->st, assert_int_equal(ts_store_index_delete(f->st, "ep", "i"), TS_OK));
    assert_int_equal(doc_create(f->st, "ep", "old", "{}", T0 + 10, T0), TS_OK);
    struct ts_sweep_counts c;
    assert_moves_epoch(f->st, assert_int_equal(ts_store_sweep(f->st, T0 + 20, 0, 100, &c), TS_OK));
    assert_int_equal(c.documents, 1);
    assert_moves_epoch(f->st, assert_int_equal(ts_store_collection_delete(f->st, "ep"), TS_OK));
}

/* ---- the sessions ledger ---- */

static void test_session_list(void **state)
{
    struct fix *f = *state;
    struct ts_user *u = make_user(f->st, "u@example.com", NULL);
    struct ts_user *v = make_user(f->st, "v@example.com", NULL);
    char s1[TS_STORE_ID_LEN + 1], s2[TS_STORE_ID_LEN + 1], sv[TS_STORE_ID_LEN + 1];
    create_session(f->st, u->id, 1, T0, s1);
    create_session(f->st, u->id, 2, T0 + SEC, s2);
    create_session(f->st, v->id, 3, T0, sv);
    assert_int_equal(rotate(f->st, 1, 4, T0 + 2 * SEC, true), TS_REFRESH_ROTATED);
    assert_int_equal(rotate(f->st, 1, 5, T0 + 3 * SEC, true), TS_REFRESH_REUSED);

    struct ts_session_info *l = NULL;
    size_t n = 0;
    assert_int_equal(ts_store_session_list(f->st, u->id, &l, &n), TS_OK);
    assert_int_equal(n, 2);
    assert_string_equal(l[0].id, s1); /* oldest first */
    assert_string_equal(l[0].aal, "aal1");
    assert_int_equal(l[0].created_at, T0);
    assert_int_equal(l[0].refreshed_at, T0 + 3 * SEC);
    assert_int_equal(l[0].refresh_tokens, 3);        /* 1, and its children 4 and 5 */
    assert_int_equal(l[0].refresh_tokens_active, 2); /* 4 and 5 */
    assert_string_equal(l[0].ip, "198.51.100.7");    /* recorded by the refresh */
    assert_string_equal(l[0].user_agent, "test/1.0");
    assert_string_equal(l[1].id, s2);
    assert_int_equal(l[1].created_at, T0 + SEC);
    assert_int_equal(l[1].refreshed_at, 0);
    assert_int_equal(l[1].refresh_tokens, 1);
    assert_int_equal(l[1].refresh_tokens_active, 1);
    assert_string_equal(l[1].ip, "192.0.2.1");
    ts_session_infos_free(l, n);

    /* Reuse beyond the interval with rotation on revokes the session: it leaves the list. */
    assert_int_equal(rotate(f->st, 1, 6, T0 + 100 * SEC, true), TS_REFRESH_ALREADY_USED);
    assert_int_equal(ts_store_session_list(f->st, u->id, &l, &n), TS_OK);
    assert_int_equal(n, 1);
    assert_string_equal(l[0].id, s2);
    ts_session_infos_free(l, n);
    assert_int_equal(ts_store_session_list(f->st, v->id, &l, &n), TS_OK);
    assert_int_equal(n, 1);
    assert_string_equal(l[0].id, sv);
    ts_session_infos_free(l, n);
    ts_user_free(u);
    ts_user_free(v);
}

/* ---- the sweeper ---- */

#define SWEEP_EXPIRED 2500
#define SWEEP_BATCH 1000

static void test_sweep(void **state)
{
    struct fix *f = *state;
    make_collection(f->st, "s");
    assert_int_equal(doc_create(f->st, "s", "keep", "{}", 0, T0 - SEC), TS_OK);
    assert_int_equal(doc_create(f->st, "s", "fresh", "{}", T0 + HOUR, T0), TS_OK);
    assert_int_equal(write_doc(f->st,
                               (struct ts_doc_write){.mode = TS_DOC_CREATE,
                                                     .collection = "s",
                                                     .id = "old",
                                                     .expires_at = T0 + 100 * SEC,
                                                     .password_hash = "$argon2id$old",
                                                     .now = T0 - SEC},
                               "{}", NULL),
                     TS_OK);
    assert_int_equal(doc_create(f->st, "s", "old2", "{}", T0 + 100 * SEC, T0), TS_OK);
    /* Expired at the sweep: 2500 tokens, one key, two documents (one with a live token). */
    for (int i = 0; i < SWEEP_EXPIRED; i++)
        token(f->st, 1000 + i, "s", "keep", T0 + 50 * SEC, T0, NULL);
    assert_int_equal(put_secret(f->st, TS_SECRET_KEY, 10, NULL, NULL, T0 + 60 * SEC, T0, NULL),
                     TS_OK);
    token(f->st, 11, "s", "old", T0 + HOUR, T0, NULL);
    /* Live at the sweep. */
    for (int i = 0; i < 3; i++)
        token(f->st, 20 + i, "s", "keep", T0 + HOUR, T0, NULL);
    assert_int_equal(put_secret(f->st, TS_SECRET_KEY, 30, NULL, NULL, 0, T0, NULL), TS_OK);
    /* A refresh token used at T0 + 1 s (swept: before refresh_before) and its child (kept). */
    struct ts_user *u = make_user(f->st, "u@example.com", NULL);
    char sid[TS_STORE_ID_LEN + 1];
    create_session(f->st, u->id, 1, T0, sid);
    assert_int_equal(rotate(f->st, 1, 2, T0 + SEC, false), TS_REFRESH_ROTATED);

    const int64_t now = T0 + 200 * SEC;
    struct ts_sweep_counts total = {0}, c;
    int batches = 0;
    do {
        memset(&c, 0xff, sizeof(c));
        assert_int_equal(ts_store_sweep(f->st, now, T0 + 2 * SEC, SWEEP_BATCH, &c), TS_OK);
        assert_in_range(c.tokens, 0, SWEEP_BATCH);
        if (batches == 0)
            assert_int_equal(c.tokens, SWEEP_BATCH);
        total.tokens += c.tokens;
        total.keys += c.keys;
        total.documents += c.documents;
        total.sessions += c.sessions;
        total.refresh_tokens += c.refresh_tokens;
        assert_true(++batches <= 5);
    } while (c.tokens == SWEEP_BATCH || c.keys == SWEEP_BATCH || c.documents == SWEEP_BATCH ||
             c.sessions == SWEEP_BATCH || c.refresh_tokens == SWEEP_BATCH);
    assert_int_equal(batches, 3);
    assert_int_equal(total.tokens, SWEEP_EXPIRED);
    assert_int_equal(total.keys, 1);
    assert_int_equal(total.documents, 2);
    assert_int_equal(total.sessions, 0);
    assert_int_equal(total.refresh_tokens, 1);

    /* Deleted, not just expired: absent even when read at an earlier now. */
    assert_int_equal(check(f->st, 1000, T0, NULL), TS_SECRET_UNKNOWN);
    assert_int_equal(check(f->st, 1000 + SWEEP_EXPIRED - 1, T0, NULL), TS_SECRET_UNKNOWN);
    assert_int_equal(check(f->st, 10, T0, NULL), TS_SECRET_UNKNOWN);
    assert_doc(f->st, "s", "old", T0, NULL);
    assert_doc(f->st, "s", "old2", T0, NULL);
    assert_int_equal(check(f->st, 11, T0 + SEC, NULL), TS_SECRET_UNKNOWN); /* with "old" */
    char *hash = NULL;
    assert_int_equal(ts_store_credential_get(f->st, "s", "old", T0, &hash), TS_E_NOT_FOUND);
    struct ts_secret_filter flt = {.kind = TS_SECRET_TOKEN,
                                   .identity_collection = "s",
                                   .identity_id = "keep",
                                   .limit = 1000,
                                   .now = T0};
    struct ts_secret_row **rows = NULL;
    size_t n = 0;
    assert_int_equal(ts_store_secret_list(f->st, &flt, &rows, &n), TS_OK);
    assert_int_equal(n, 3);
    ts_secret_rows_free(rows, n);

    /* What was live is untouched. */
    for (int i = 0; i < 3; i++)
        assert_int_equal(check(f->st, 20 + i, now, NULL), TS_SECRET_LIVE);
    assert_int_equal(check(f->st, 30, now, NULL), TS_SECRET_LIVE);
    assert_doc(f->st, "s", "keep", now, "{}");
    assert_doc(f->st, "s", "fresh", now, "{}");
    assert_int_equal(rotate(f->st, 1, 3, now, false), TS_REFRESH_NOT_FOUND); /* swept */
    assert_int_equal(rotate(f->st, 2, 3, now, false), TS_REFRESH_ROTATED);

    /* Nothing left to do. */
    assert_int_equal(ts_store_sweep(f->st, now, T0 + 2 * SEC, SWEEP_BATCH, &c), TS_OK);
    assert_int_equal(c.tokens + c.keys + c.documents + c.sessions + c.refresh_tokens, 0);
    assert_int_equal(ts_store_sweep(f->st, now, 0, 0, &c), TS_E_INVALID);
    ts_user_free(u);
}

int main(void)
{
    ts_log_set_level(TS_LOG_ERROR);
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, store_teardown)
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_term_keys),
        T(test_collections),
        T(test_collection_delete_cascades),
        T(test_doc_crud),
        T(test_doc_list),
        T(test_doc_expiry),
        T(test_index_lookup),
        T(test_index_unique),
        T(test_index_unique_backfill),
        T(test_unique_concurrent),
        T(test_credentials),
        T(test_credentials_users),
        T(test_credential_list),
        T(test_secret_check),
        T(test_secret_users),
        T(test_secret_list_delete),
        T(test_identity_collections),
        T(test_epoch),
        T(test_session_list),
        T(test_sweep),
    };
#undef T
    return store_run_groups("store docs", tests, sizeof(tests) / sizeof(tests[0]));
}

/*
 * api_v1_docs.c - /v1 collections, documents and indexes (docs/API.md, "Native API").
 *
 * The built-in "users" collection is the GoTrue users seen as documents: reads, deletes and
 * credentials map onto the user operations; other writes go through /admin/users.
 * A password given in a document body is hashed on the hash pool (never on this thread) and
 * written with the document in one transaction; it is never stored in the document.
 */
#include <stdlib.h>
#include <string.h>

#include "api_v1_int.h"

#define PATCH_RETRIES 16

static bool is_users(const char *c)
{
    return strcmp(c, "users") == 0;
}

/* ---- collections ---- */

static json_t *collection_json(const struct ts_collection_info *c)
{
    return json_pack("{s:s, s:o}", "name", c->name, "created_at", v1_time(c->created_at));
}

void v1_collections_list(struct ts_http_req *req)
{
    struct ts_api *api = ts_http_app(req);
    struct v1_caller c;
    int64_t size;
    if (!v1_require(req, &c, V1_ACT_COLLECTION_LIST) || !v1_page_size(req, &size))
        return;
    const char *after = ts_http_query(req, "after");
    struct ts_collection_info *list = NULL;
    size_t n = 0;
    enum ts_rc rc = ts_store_collection_list(api->store, after, size, &list, &n);
    if (rc) {
        v1_fail(req, rc, "collection list");
        return;
    }
    /* the built-in "users" takes its place in name order, like any collection */
    bool users_due = !after || strcmp("users", after) > 0;
    json_t *data = json_array();
    const char *last = NULL;
    size_t i = 0;
    while ((int64_t)json_array_size(data) < size && (i < n || users_due)) {
        if (users_due && (i == n || strcmp("users", list[i].name) < 0)) {
            json_array_append_new(data, json_pack("{s:s, s:b}", "name", "users", "builtin", 1));
            last = "users";
            users_due = false;
        } else {
            json_array_append_new(data, collection_json(&list[i]));
            last = list[i].name;
            i++;
        }
    }
    json_t *answer = json_pack("{s:o}", "data", data);
    if ((int64_t)json_array_size(data) == size && last)
        json_object_set_new(answer, "after", json_string(last));
    ts_collection_infos_free(list, n);
    api_json(req, 200, answer);
}

void v1_collections_create(struct ts_http_req *req)
{
    struct ts_api *api = ts_http_app(req);
    struct v1_caller c;
    if (!v1_require(req, &c, V1_ACT_COLLECTION_CREATE))
        return;
    json_t *body = v1_body(req);
    static const char *const allowed[] = {"name", NULL};
    if (!body || !v1_only(req, body, allowed))
        return;
    const char *name = json_string_value(json_object_get(body, "name"));
    if (!v1_name_ok(name)) {
        v1_error(req, 400, "invalid_request", "name must match ^[A-Za-z_][A-Za-z0-9_-]{0,63}$");
        return;
    }
    struct ts_collection_info info = {ts_arena_strdup(ts_http_arena(req), name), ts_now_us()};
    enum ts_rc rc = ts_store_collection_create(api->store, name, info.created_at);
    if (rc) {
        v1_fail(req, rc, "collection create");
        return;
    }
    api_json(req, 201, collection_json(&info));
}

/* The {c} parameter, checked; answers 400/404 and returns NULL when it is not usable. */
static const char *collection_param(struct ts_http_req *req)
{
    const char *c = ts_http_param(req, "c");
    if (!v1_name_ok(c)) {
        v1_error(req, 404, "not_found", "No such collection");
        return NULL;
    }
    return c;
}

void v1_collection_get(struct ts_http_req *req)
{
    struct ts_api *api = ts_http_app(req);
    struct v1_caller c;
    const char *name = collection_param(req);
    if (!name || !v1_require(req, &c, V1_ACT_COLLECTION_GET))
        return;
    if (is_users(name)) {
        api_json(req, 200, json_pack("{s:s, s:b}", "name", "users", "builtin", 1));
        return;
    }
    struct ts_collection_info info = {0};
    enum ts_rc rc = ts_store_collection_get(api->store, name, &info);
    if (rc) {
        v1_fail(req, rc, "collection get");
        return;
    }
    api_json(req, 200, collection_json(&info));
    free(info.name);
}

void v1_collection_delete(struct ts_http_req *req)
{
    struct ts_api *api = ts_http_app(req);
    struct v1_caller c;
    const char *name = collection_param(req);
    if (!name || !v1_require(req, &c, V1_ACT_COLLECTION_DELETE))
        return;
    if (is_users(name)) {
        v1_error(req, 400, "invalid_request", "The users collection cannot be deleted");
        return;
    }
    enum ts_rc rc = ts_store_collection_delete(api->store, name);
    if (rc) {
        v1_fail(req, rc, "collection delete");
        return;
    }
    ts_store_audit(api->store, "collection_deleted", c.secret_id[0] ? c.secret_id : NULL, name,
                   ts_http_client_ip(req), NULL);
    ts_http_respond(req, 204, NULL, "", 0);
}

/* ---- documents: reads ---- */

static void respond_doc(struct ts_http_req *req, int status, const struct ts_doc *d)
{
    api_json(req, status, v1_doc_json(d));
}

/* Reads a user as a document; answers 404 for a deleted one. */
static void respond_user_doc(struct ts_http_req *req, const char *id)
{
    struct ts_api *api = ts_http_app(req);
    struct ts_user *u = NULL;
    enum ts_rc rc = ts_uuid_valid(id) ? ts_store_user_get(api->store, id, &u) : TS_E_NOT_FOUND;
    if (!rc && u->deleted_at)
        rc = TS_E_NOT_FOUND;
    if (rc) {
        ts_user_free(u);
        v1_fail(req, rc, "user get");
        return;
    }
    api_json(req, 200, v1_user_doc_json(u));
    ts_user_free(u);
}

/* A document (or a user) as JSON; answers 404/503 and returns NULL when there is none. */
static json_t *read_doc_json(struct ts_http_req *req, const char *coll, const char *id)
{
    enum ts_rc rc;
    json_t *out = v1_doc_read(ts_http_app(req), coll, id, ts_now_us(), NULL, &rc);
    if (!out)
        v1_fail(req, rc, "document get");
    return out;
}

void v1_document_get(struct ts_http_req *req)
{
    struct v1_caller c;
    const char *coll = collection_param(req);
    const char *id = ts_http_param(req, "id");
    if (!coll || !v1_caller(req, &c))
        return;
    /* built-in roles and an identity reading itself need no decision */
    bool direct = v1_doc_builtin(&c, V1_DOC_READ) || v1_is_self(&c, coll, id);
    if (!direct && !v1_doc_may(req, &c, coll, V1_DOC_READ))
        return;
    if (!v1_doc_id_ok(id)) {
        v1_error(req, 404, "not_found", "Not found");
        return;
    }
    if (direct && is_users(coll)) {
        respond_user_doc(req, id);
        return;
    }
    json_t *doc = read_doc_json(req, coll, id);
    if (!doc)
        return;
    if (!direct && !v1_doc_allowed(req, &c, coll, V1_DOC_READ, doc, NULL, NULL, true)) {
        json_decref(doc);
        return;
    }
    api_json(req, 200, doc);
}

/* Keeps the documents the caller may read, when it is not a built-in role (filter set). */
static void append_readable(struct ts_http_req *req, json_t *data, json_t *doc,
                            const struct v1_caller *filter, const char *coll)
{
    if (filter && !v1_doc_allowed(req, filter, coll, V1_DOC_READ, doc, NULL, NULL, false))
        json_decref(doc);
    else
        json_array_append_new(data, doc);
}

/* A page of documents; the cursor is the last document read, kept or not, so that paging
 * goes on past documents the caller may not see. */
static void respond_doc_page(struct ts_http_req *req, struct ts_doc **list, size_t n, int64_t size,
                             const struct v1_caller *filter, const char *coll)
{
    json_t *data = json_array();
    for (size_t i = 0; i < n; i++)
        append_readable(req, data, v1_doc_json(list[i]), filter, coll);
    json_t *answer = json_pack("{s:o}", "data", data);
    if (n == (size_t)size)
        json_object_set_new(answer, "after", json_string(list[n - 1]->id));
    api_json(req, 200, answer);
}

/* users listed as documents, by id like every collection's. */
static void list_users(struct ts_http_req *req, int64_t size, const struct v1_caller *filter)
{
    struct ts_api *api = ts_http_app(req);
    const char *after = ts_http_query(req, "after");
    if (after && !ts_uuid_valid(after)) {
        v1_error(req, 400, "invalid_request", "Bad cursor");
        return;
    }
    struct ts_user **users = NULL;
    size_t n = 0;
    enum ts_rc rc = ts_store_user_page(api->store, after, size, &users, &n);
    if (rc) {
        v1_fail(req, rc, "user list");
        return;
    }
    json_t *data = json_array();
    for (size_t i = 0; i < n; i++)
        append_readable(req, data, v1_user_doc_json(users[i]), filter, "users");
    json_t *answer = json_pack("{s:o}", "data", data);
    if (n == (size_t)size)
        json_object_set_new(answer, "after", json_string(users[n - 1]->id));
    ts_user_list_free(users, n);
    api_json(req, 200, answer);
}

void v1_documents_list(struct ts_http_req *req)
{
    struct ts_api *api = ts_http_app(req);
    struct v1_caller c;
    int64_t size;
    const char *coll = collection_param(req);
    if (!coll || !v1_caller(req, &c) || !v1_page_size(req, &size))
        return;
    bool direct = v1_doc_builtin(&c, V1_DOC_LIST);
    if (!direct && !v1_doc_allowed(req, &c, coll, V1_DOC_LIST, NULL, NULL, NULL, true))
        return;
    const struct v1_caller *filter = direct ? NULL : &c;
    if (is_users(coll)) {
        list_users(req, size, filter);
        return;
    }
    struct ts_doc **list = NULL;
    size_t n = 0;
    enum ts_rc rc = ts_store_doc_list(api->store, coll, ts_http_query(req, "after"), size,
                                      ts_now_us(), &list, &n);
    if (rc) {
        v1_fail(req, rc, "document list");
        return;
    }
    respond_doc_page(req, list, n, size, filter, coll);
    ts_doc_list_free(list, n);
}

/* ---- documents: writes ---- */

enum write_op { OP_CREATE, OP_PUT, OP_PATCH };

struct doc_work {
    struct ts_hash_job job; /* first: api_hash_job() hands back &work->job */
    struct v1_caller caller;
    enum write_op op;
    const char *collection;
    const char *id;
    json_t *data;   /* CREATE, PUT: the new data; PATCH: the merge patch (may be NULL) */
    bool ttl_given; /* PATCH: ttl present (expires_at 0 when it was null) */
    int64_t expires_at;
    const char *password;        /* plain text (arena, wiped at the end of the request) */
    const char *hashed_password; /* an imported hash */
    const char *current_password;
    bool self_change; /* an identity changing its own password */
    bool checked;     /* not a built-in role: the roles decide, on the document */
    char *stored_hash;
    struct ts_lockout lockout; /* self_change: the account's failure slot during the check */
};

/* RFC 7386 JSON merge patch of patch into target (an object). */
static void merge_patch(json_t *target, json_t *patch)
{
    const char *key;
    json_t *v;
    json_object_foreach(patch, key, v)
    {
        if (json_is_null(v)) {
            json_object_del(target, key);
            continue;
        }
        json_t *cur = json_object_get(target, key);
        if (json_is_object(v) && json_is_object(cur)) {
            merge_patch(cur, v);
        } else if (json_is_object(v)) {
            json_t *fresh = json_object();
            merge_patch(fresh, v);
            json_object_set_new(target, key, fresh);
        } else {
            json_object_set_new(target, key, json_deep_copy(v));
        }
    }
}

static void free_hash_text(void *p)
{
    char *h = *(char **)p;
    if (h) {
        ts_wipe(h, strlen(h));
        free(h);
    }
}

static void write_credential(struct ts_http_req *req, struct doc_work *w, const char *hash,
                             const char *expect_old)
{
    struct ts_api *api = ts_http_app(req);
    enum ts_rc rc =
        ts_store_credential_set(api->store, w->collection, w->id, hash, expect_old, ts_now_us());
    if (rc) {
        v1_fail(req, rc, "credential set");
        return;
    }
    ts_store_audit(api->store, "password_changed",
                   w->caller.secret_id[0] ? w->caller.secret_id : NULL, w->id,
                   ts_http_client_ip(req), NULL);
    if (is_users(w->collection)) {
        respond_user_doc(req, w->id);
        return;
    }
    struct ts_doc *d = NULL;
    rc = ts_store_doc_get(api->store, w->collection, w->id, ts_now_us(), &d);
    if (rc) {
        v1_fail(req, rc, "document get");
        return;
    }
    respond_doc(req, 200, d);
    ts_doc_free(d);
}

/* The data a write leaves: PUT's, or PATCH's merged into cur's (a new reference). */
static json_t *data_after(const struct doc_work *w, const struct ts_doc *cur)
{
    if (w->op != OP_PATCH)
        return json_deep_copy(w->data);
    json_t *data = json_deep_copy(cur->data);
    if (w->data)
        merge_patch(data, w->data);
    return data;
}

/*
 * The roles' decision on a write by a caller without a built-in role: create sees the new
 * document, write the current one (old, resource) and the result (new). A write that sets or
 * changes data.profiles also needs profile:assign, or identities could raise themselves.
 * cur: the current document, or NULL to read it here. False when it answered.
 */
static bool write_decide(struct ts_http_req *req, struct doc_work *w, const struct ts_doc *cur)
{
    json_t *new_doc = NULL, *old_doc = NULL;
    struct ts_doc *read = NULL;
    bool ok;
    if (w->op == OP_CREATE) {
        new_doc =
            json_pack("{s:s, s:s, s:O}", "id", w->id, "collection", w->collection, "data", w->data);
        ok = v1_doc_allowed(req, &w->caller, w->collection, V1_DOC_CREATE, new_doc, NULL, new_doc,
                            true);
    } else {
        if (!cur) {
            struct ts_api *api = ts_http_app(req);
            enum ts_rc rc = ts_store_doc_get(api->store, w->collection, w->id, ts_now_us(), &read);
            if (rc) {
                v1_fail(req, rc, "document get");
                return false;
            }
            cur = read;
        }
        old_doc = v1_doc_json(cur);
        new_doc = json_pack("{s:s, s:s, s:o}", "id", w->id, "collection", w->collection, "data",
                            data_after(w, cur));
        ok = v1_doc_allowed(req, &w->caller, w->collection, V1_DOC_WRITE, old_doc, old_doc, new_doc,
                            true);
        /* an expiry set by a write deletes the document later: that needs delete too */
        if (ok && w->ttl_given && w->expires_at)
            ok = v1_doc_allowed(req, &w->caller, w->collection, V1_DOC_DELETE, old_doc, old_doc,
                                NULL, true);
    }
    /* Writes that would raise an identity need profile:assign: a change of data.profiles, or
     * of anything that makes a membership predicate grant a role it did not grant before. */
    const json_t *before = json_object_get(json_object_get(old_doc, "data"), "profiles");
    const json_t *after = json_object_get(json_object_get(new_doc, "data"), "profiles");
    bool same = (!before && !after) || (before && after && json_equal(before, after));
    bool raises = false;
    if (ok && same && !v1_membership_raises(req, w->collection, old_doc, new_doc, &raises))
        ok = false; /* answered */
    if (ok && (!same || raises) && !v1_allowed(req, &w->caller, V1_ACT_PROFILE_ASSIGN)) {
        if (ts_http_status(req) == 0)
            v1_deny(req, &w->caller);
        ok = false;
    }
    json_decref(new_doc);
    json_decref(old_doc);
    ts_doc_free(read);
    return ok;
}

/* Writes the document (after hashing, when a password was given). */
static void doc_write_finish(struct ts_http_req *req, struct doc_work *w, const char *hash)
{
    struct ts_api *api = ts_http_app(req);
    if (is_users(w->collection) || (w->op == OP_PATCH && !w->data && !w->ttl_given)) {
        /* only the credential changes */
        if (!hash) {
            if (is_users(w->collection))
                respond_user_doc(req, w->id);
            else
                write_credential(req, w, NULL, NULL);
            return;
        }
        write_credential(req, w, hash, NULL);
        return;
    }
    struct ts_doc_write dw = {.collection = w->collection,
                              .id = w->id,
                              .data = w->data,
                              .expires_at = w->expires_at,
                              .password_hash = hash,
                              .now = ts_now_us()};
    struct ts_doc *out = NULL;
    enum ts_rc rc;
    if (w->op == OP_CREATE || (w->op == OP_PUT && !w->checked)) {
        dw.mode = w->op == OP_CREATE ? TS_DOC_CREATE : TS_DOC_REPLACE;
        rc = ts_store_doc_write(api->store, &dw, &out);
    } else {
        /* read, merge, (decide,) compare-and-swap: a concurrent writer makes us start again,
         * so that a decision is always about the version replaced */
        rc = TS_E_STALE;
        for (int i = 0; i < PATCH_RETRIES && rc == TS_E_STALE; i++) {
            struct ts_doc *cur = NULL;
            rc = ts_store_doc_get(api->store, w->collection, w->id, ts_now_us(), &cur);
            if (rc)
                break;
            if (w->checked && !write_decide(req, w, cur)) {
                ts_doc_free(cur);
                return;
            }
            json_t *data = data_after(w, cur);
            dw.mode = TS_DOC_REPLACE;
            dw.data = data;
            dw.expires_at = w->op == OP_PUT || w->ttl_given ? w->expires_at : cur->expires_at;
            dw.expect_ts = cur->ts;
            dw.now = ts_now_us();
            rc = ts_store_doc_write(api->store, &dw, &out);
            json_decref(data);
            ts_doc_free(cur);
        }
    }
    if (rc) {
        v1_fail(req, rc, "document write");
        return;
    }
    respond_doc(req, w->op == OP_CREATE ? 201 : 200, out);
    ts_doc_free(out);
}

static void doc_hashed(struct ts_http_req *req)
{
    struct doc_work *w = (struct doc_work *)api_hash_job(req);
    struct ts_hash_job *job = &w->job;
    api_lockout_settle(req, &w->lockout, job->rc, job->match);
    if (job->rc) {
        v1_fail(req, job->rc, "password hash");
        return;
    }
    if (w->self_change) {
        if (!job->match) {
            v1_error(req, 400, "invalid_credentials", "Invalid login credentials");
            return;
        }
        write_credential(req, w, job->new_hash, w->stored_hash);
        return;
    }
    doc_write_finish(req, w, job->new_hash);
}

/* Parses credentials: {password} | {hashed_password} | (own) {password, current_password}. */
static bool parse_credentials(struct ts_http_req *req, struct doc_work *w, json_t *cred)
{
    static const char *const allowed[] = {"password", "hashed_password", "current_password", NULL};
    if (!json_is_object(cred)) {
        v1_error(req, 400, "invalid_request", "credentials must be an object");
        return false;
    }
    if (!v1_only(req, cred, allowed))
        return false;
    bool bad = false;
    const char *pw = api_str(cred, "password", &bad);
    const char *hashed = api_str(cred, "hashed_password", &bad);
    const char *current = api_str(cred, "current_password", &bad);
    if (bad || (!pw && !hashed) || (pw && hashed)) {
        v1_error(req, 400, "invalid_request",
                 "credentials takes password (string) or hashed_password (string)");
        return false;
    }
    if (hashed) {
        if (w->caller.role < V1_ROLE_SERVER) {
            v1_forbidden(req);
            return false;
        }
        if (!ts_password_hash_format_ok(hashed)) {
            v1_error(req, 400, "invalid_request",
                     "hashed_password must be an argon2id or bcrypt ($2a$, $2b$, $2y$) hash");
            return false;
        }
        w->hashed_password = hashed;
        return true;
    }
    const char *msg = NULL;
    struct ts_api *api = ts_http_app(req);
    const char *reason = api_password_problem(api, pw, &msg);
    if (reason) {
        json_t *e = json_pack("{s:{s:s, s:s}, s:{s:[s]}}", "error", "code", "weak_password",
                              "message", msg, "weak_password", "reasons", reason);
        api_json(req, 422, e);
        return false;
    }
    w->password = api_secret_copy(req, pw);
    if (current)
        w->current_password = api_secret_copy(req, current);
    return true;
}

static void doc_write(struct ts_http_req *req, enum write_op op)
{
    struct ts_api *api = ts_http_app(req);
    struct ts_arena *a = ts_http_arena(req);
    struct doc_work *w = ts_arena_calloc(a, sizeof(*w));
    w->op = op;
    const char *coll = collection_param(req);
    if (!coll || !v1_caller(req, &w->caller))
        return;
    w->collection = coll;
    json_t *body = v1_body(req);
    if (!body)
        return;
    static const char *const create_members[] = {"id", "data", "ttl", "credentials", NULL};
    static const char *const write_members[] = {"data", "ttl", "credentials", NULL};
    if (!v1_only(req, body, op == OP_CREATE ? create_members : write_members))
        return;
    json_t *cred = json_object_get(body, "credentials");
    /* Who may write: server and admin keys; an identity its own password; anyone else as
     * its roles decide on the document (write_decide). Users change through /admin only. */
    if (w->caller.role < V1_ROLE_SERVER) {
        const char *id = ts_http_param(req, "id");
        bool own = op == OP_PATCH && id && v1_is_self(&w->caller, coll, id) && cred &&
                   json_object_size(body) == 1;
        if (own) {
            w->self_change = true;
        } else if (is_users(coll) || !v1_doc_may(req, &w->caller, coll,
                                                 op == OP_CREATE ? V1_DOC_CREATE : V1_DOC_WRITE)) {
            if (ts_http_status(req) == 0)
                v1_deny(req, &w->caller);
            return;
        } else {
            w->checked = true;
        }
    }
    /* a password set through a role would skip current_password (its own) or take over
     * another identity (anyone else's): only servers set credentials, and an identity its
     * own, with the credentials alone and its current password */
    if (w->checked && cred && !json_is_null(cred)) {
        v1_forbidden(req);
        return;
    }
    if (is_users(coll) && (op != OP_PATCH || !cred || json_object_size(body) != 1)) {
        v1_error(req, 400, "invalid_request",
                 "Users are created and changed through /admin/users; /v1 sets only their "
                 "credentials");
        return;
    }
    if (op == OP_CREATE) {
        const json_t *idv = json_object_get(body, "id");
        if (idv && !json_is_null(idv)) {
            if (!v1_doc_id_ok(json_string_value(idv))) {
                v1_error(req, 400, "invalid_request", "id must match ^[A-Za-z0-9._-]{1,128}$");
                return;
            }
            w->id = json_string_value(idv);
        } else {
            char *fresh = ts_arena_alloc(a, TS_UUID_STR_LEN + 1);
            ts_uuid_v4(fresh);
            w->id = fresh;
        }
    } else {
        w->id = ts_http_param(req, "id");
        if (!v1_doc_id_ok(w->id)) {
            v1_error(req, 404, "not_found", "Not found");
            return;
        }
    }
    json_t *data = json_object_get(body, "data");
    if (data && !json_is_object(data) && !(op == OP_PATCH && json_is_null(data))) {
        v1_error(req, 400, "invalid_request", "data must be an object");
        return;
    }
    if (op == OP_PATCH)
        w->data = json_is_object(data) ? data : NULL;
    else
        w->data = data;
    if (op != OP_PATCH && !data) {
        json_t *empty = json_object();
        ts_arena_defer(a, (void (*)(void *))json_decref, empty);
        w->data = empty;
    }
    const json_t *ttl = json_object_get(body, "ttl");
    int64_t now = ts_now_us();
    if (ttl && !json_is_null(ttl)) {
        if (!v1_ttl(req, ttl, now, &w->expires_at))
            return;
        w->ttl_given = true;
    } else if (ttl) {
        w->ttl_given = true; /* null: no expiry */
    }
    if (w->checked && !write_decide(req, w, NULL))
        return;
    if (cred && !json_is_null(cred) && !parse_credentials(req, w, cred))
        return;
    if (w->self_change) {
        enum ts_rc rc = ts_store_credential_get(api->store, coll, w->id, now, &w->stored_hash);
        if (rc && rc != TS_E_NOT_FOUND) {
            v1_fail(req, rc, "credential get");
            return;
        }
        ts_arena_defer(a, free_hash_text, &w->stored_hash);
        if (w->stored_hash && !w->current_password) {
            v1_error(req, 400, "invalid_credentials", "Invalid login credentials");
            return;
        }
        if (w->stored_hash) {
            bool users = strcmp(coll, "users") == 0;
            const char *account = users ? ts_arena_sprintf(a, "user:%s", w->id)
                                        : ts_arena_sprintf(a, "doc:%s/%s", coll, w->id);
            if (!api_account_checks(req, account, &w->lockout))
                return;
        }
        w->job.op = TS_HASH_CHANGE;
        w->job.hash = w->stored_hash;
        w->job.password = w->password;
        w->job.password_len = strlen(w->password);
        w->job.current_password = w->stored_hash ? w->current_password : NULL;
        w->job.current_password_len = w->job.current_password ? strlen(w->current_password) : 0;
        api_hash_async(req, &w->job, doc_hashed);
        return;
    }
    if (w->password) {
        w->job.op = TS_HASH_CREATE;
        w->job.password = w->password;
        w->job.password_len = strlen(w->password);
        api_hash_async(req, &w->job, doc_hashed);
        return;
    }
    doc_write_finish(req, w, w->hashed_password);
}

void v1_documents_create(struct ts_http_req *req)
{
    doc_write(req, OP_CREATE);
}

void v1_document_put(struct ts_http_req *req)
{
    doc_write(req, OP_PUT);
}

void v1_document_patch(struct ts_http_req *req)
{
    doc_write(req, OP_PATCH);
}

void v1_document_delete(struct ts_http_req *req)
{
    struct ts_api *api = ts_http_app(req);
    struct v1_caller c;
    const char *coll = collection_param(req);
    const char *id = ts_http_param(req, "id");
    if (!coll || !v1_caller(req, &c))
        return;
    bool direct = v1_doc_builtin(&c, V1_DOC_DELETE);
    if (!direct && (!v1_doc_may(req, &c, coll, V1_DOC_DELETE) || is_users(coll))) {
        if (ts_http_status(req) == 0)
            v1_deny(req, &c); /* users are deleted by servers only */
        return;
    }
    if (!v1_doc_id_ok(id)) {
        v1_error(req, 404, "not_found", "Not found");
        return;
    }
    if (!direct) {
        /* decided on the document as it is now (a write between this read and the delete
         * is not seen: deletes carry no version) */
        json_t *doc = read_doc_json(req, coll, id);
        if (!doc)
            return;
        bool ok = v1_doc_allowed(req, &c, coll, V1_DOC_DELETE, doc, doc, NULL, true);
        json_decref(doc);
        if (!ok)
            return;
    }
    enum ts_rc rc;
    if (is_users(coll))
        rc = ts_uuid_valid(id) ? ts_store_user_delete(api->store, id) : TS_E_NOT_FOUND;
    else
        rc = ts_store_doc_delete(api->store, coll, id, ts_now_us());
    if (rc) {
        v1_fail(req, rc, "document delete");
        return;
    }
    ts_store_audit(api->store, "document_deleted", c.secret_id[0] ? c.secret_id : NULL, id,
                   ts_http_client_ip(req), NULL);
    ts_http_respond(req, 204, NULL, "", 0);
}

/* ---- indexes ---- */

static json_t *index_json(const struct ts_index_def *d)
{
    return json_pack("{s:s, s:O, s:b, s:o}", "name", d->name, "terms", d->terms, "unique",
                     d->unique, "created_at", v1_time(d->created_at));
}

static json_t *users_by_email(void)
{
    return json_pack("{s:s, s:[s], s:b, s:b}", "name", "users_by_email", "terms", "data.email",
                     "unique", 1, "builtin", 1);
}

void v1_indexes_list(struct ts_http_req *req)
{
    struct ts_api *api = ts_http_app(req);
    struct v1_caller c;
    const char *coll = collection_param(req);
    if (!coll || !v1_require(req, &c, V1_ACT_INDEX_LIST))
        return;
    json_t *data = json_array();
    if (is_users(coll)) {
        json_array_append_new(data, users_by_email());
    } else {
        struct ts_index_def *defs = NULL;
        size_t n = 0;
        enum ts_rc rc = ts_store_index_list(api->store, coll, &defs, &n);
        if (rc) {
            json_decref(data);
            v1_fail(req, rc, "index list");
            return;
        }
        for (size_t i = 0; i < n; i++)
            json_array_append_new(data, index_json(&defs[i]));
        ts_index_defs_free(defs, n);
    }
    api_json(req, 200, json_pack("{s:o}", "data", data));
}

void v1_indexes_create(struct ts_http_req *req)
{
    struct ts_api *api = ts_http_app(req);
    struct v1_caller c;
    const char *coll = collection_param(req);
    if (!coll || !v1_require(req, &c, V1_ACT_INDEX_CREATE))
        return;
    json_t *body = v1_body(req);
    static const char *const allowed[] = {"name", "terms", "unique", NULL};
    if (!body || !v1_only(req, body, allowed))
        return;
    if (is_users(coll)) {
        v1_error(req, 400, "invalid_request", "The users collection has only built-in indexes");
        return;
    }
    const char *name = json_string_value(json_object_get(body, "name"));
    json_t *terms = json_object_get(body, "terms");
    json_t *unique = json_object_get(body, "unique");
    if (!v1_name_ok(name)) {
        v1_error(req, 400, "invalid_request", "name must match ^[A-Za-z_][A-Za-z0-9_-]{0,63}$");
        return;
    }
    if (!ts_store_index_terms_valid(terms)) {
        v1_error(req, 400, "invalid_request",
                 "terms must be 1 to 8 paths like \"data.email\" (segments of [A-Za-z0-9_-])");
        return;
    }
    if (unique && !json_is_boolean(unique)) {
        v1_error(req, 400, "invalid_request", "unique must be a boolean");
        return;
    }
    struct ts_index_def def = {ts_arena_strdup(ts_http_arena(req), name), terms,
                               json_is_true(unique), ts_now_us()};
    enum ts_rc rc = ts_store_index_create(api->store, coll, &def, def.created_at);
    if (rc) {
        v1_fail(req, rc, "index create");
        return;
    }
    api_json(req, 201, index_json(&def));
}

static void lookup_users(struct ts_http_req *req, const char *name, const char *term,
                         const struct v1_caller *filter)
{
    struct ts_api *api = ts_http_app(req);
    if (strcmp(name, "users_by_email") != 0) {
        v1_error(req, 404, "not_found", "No such index");
        return;
    }
    json_t *data = json_array();
    char *email = api_normalize_email(req, term);
    struct ts_user *u = NULL;
    enum ts_rc rc =
        email ? ts_store_user_get_by_email(api->store, email, &u, NULL) : TS_E_NOT_FOUND;
    if (rc && rc != TS_E_NOT_FOUND) {
        json_decref(data);
        v1_fail(req, rc, "user lookup");
        return;
    }
    if (!rc && !u->deleted_at)
        append_readable(req, data, v1_user_doc_json(u), filter, "users");
    ts_user_free(u);
    api_json(req, 200, json_pack("{s:o}", "data", data));
}

void v1_index_get(struct ts_http_req *req)
{
    struct ts_api *api = ts_http_app(req);
    struct v1_caller c;
    int64_t size;
    const char *coll = collection_param(req);
    const char *name = ts_http_param(req, "name");
    if (!coll || !v1_caller(req, &c) || !v1_page_size(req, &size))
        return;
    const char *terms[8];
    size_t nterms = ts_http_query_all(req, "term", terms, 8);
    /* the definition is the index controller's; a lookup lists documents */
    bool direct = nterms == 0 || v1_doc_builtin(&c, V1_DOC_LIST);
    if (nterms == 0 && !v1_allowed(req, &c, V1_ACT_INDEX_GET)) {
        if (ts_http_status(req) == 0)
            v1_deny(req, &c);
        return;
    }
    if (!direct && !v1_doc_allowed(req, &c, coll, V1_DOC_LIST, NULL, NULL, NULL, true))
        return;
    const struct v1_caller *filter = direct ? NULL : &c;
    if (!v1_name_ok(name)) {
        v1_error(req, 404, "not_found", "No such index");
        return;
    }
    if (nterms > 8) {
        v1_error(req, 400, "invalid_request", "At most 8 terms");
        return;
    }
    if (is_users(coll)) {
        if (nterms == 0) {
            if (strcmp(name, "users_by_email") == 0)
                api_json(req, 200, users_by_email());
            else
                v1_error(req, 404, "not_found", "No such index");
        } else {
            lookup_users(req, name, terms[0], filter);
        }
        return;
    }
    struct ts_index_def def = {0};
    enum ts_rc rc = ts_store_index_get(api->store, coll, name, &def);
    if (rc) {
        v1_fail(req, rc, "index get");
        return;
    }
    if (nterms == 0) {
        api_json(req, 200, index_json(&def));
        free(def.name);
        json_decref(def.terms);
        return;
    }
    size_t want = json_array_size(def.terms);
    free(def.name);
    json_decref(def.terms);
    if (nterms != want) {
        v1_error(req, 400, "invalid_request", "Give one term value per index term, in order");
        return;
    }
    json_t *values = json_array();
    for (size_t i = 0; i < nterms; i++)
        json_array_append_new(values, json_string(terms[i]));
    char *key = ts_store_index_key(values);
    json_decref(values);
    if (!key) {
        v1_error(req, 400, "invalid_request", "Bad term value");
        return;
    }
    struct ts_doc **list = NULL;
    size_t n = 0;
    rc = ts_store_index_lookup(api->store, coll, name, key, ts_http_query(req, "after"), size,
                               ts_now_us(), &list, &n);
    free(key);
    if (rc) {
        v1_fail(req, rc, "index lookup");
        return;
    }
    respond_doc_page(req, list, n, size, filter, coll);
    ts_doc_list_free(list, n);
}

void v1_index_delete(struct ts_http_req *req)
{
    struct ts_api *api = ts_http_app(req);
    struct v1_caller c;
    const char *coll = collection_param(req);
    const char *name = ts_http_param(req, "name");
    if (!coll || !v1_require(req, &c, V1_ACT_INDEX_DELETE))
        return;
    if (is_users(coll)) {
        v1_error(req, 400, "invalid_request", "Built-in indexes cannot be deleted");
        return;
    }
    enum ts_rc rc =
        v1_name_ok(name) ? ts_store_index_delete(api->store, coll, name) : TS_E_NOT_FOUND;
    if (rc) {
        v1_fail(req, rc, "index delete");
        return;
    }
    ts_http_respond(req, 204, NULL, "", 0);
}

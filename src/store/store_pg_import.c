/*
 * store_pg_import.c - `tessera import gotrue`: copies the users of a GoTrue (Supabase Auth)
 * `auth` schema into a Tessera store of either backend.
 *
 * The source is read with libpq in one REPEATABLE READ, read-only transaction, so the copy
 * is a consistent snapshot of a database that may still be serving. Each user goes through
 * ts_store_user_create, as if an administrator had created it: the same unique e-mails. bcrypt
 * hashes ($2a$/$2b$/$2y$, what GoTrue stores) and argon2id ones are kept as they are; Tessera
 * verifies them at the user's next sign-in and replaces them with a current argon2id hash.
 *
 * Must never: log a password hash, or write anything to the source.
 */
#include <libpq-fe.h>
#include <stdlib.h>
#include <string.h>

#include "store_int.h"

/* Microseconds since the epoch of a timestamptz column, 0 for NULL. */
#define MICROS(col) "coalesce((extract(epoch from " col ") * 1000000)::bigint, 0)"

/* The columns import_row reads, in its order; %s: is_anonymous or false, then the schema. */
/* clang-format off */
static const char users_query[] =
    "SELECT id::text, aud, role, email, phone, encrypted_password, " /* 0-5 */
    MICROS("email_confirmed_at") ", "                                /* 6 */
    MICROS("phone_confirmed_at") ", "                                /* 7 */
    MICROS("confirmation_sent_at") ", "                              /* 8 */
    MICROS("invited_at") ", "                                        /* 9 */
    MICROS("last_sign_in_at") ", "                                   /* 10 */
    MICROS("banned_until") ", "                                      /* 11 */
    MICROS("deleted_at") ", "                                        /* 12 */
    "raw_user_meta_data::text, raw_app_meta_data::text, "            /* 13, 14 */
    "%s, "                                                           /* 15 */
    MICROS("created_at") ", "                                        /* 16 */
    MICROS("updated_at") " "                                         /* 17 */
    "FROM \"%s\".users ORDER BY created_at, id";
/* clang-format on */

static bool identifier_ok(const char *s)
{
    if (!s || !*s || strlen(s) > 63 || (*s >= '0' && *s <= '9'))
        return false;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_'))
            return false;
    return true;
}

/* A stored hash we can verify later; anything else imports the user without a password. */
static bool hash_usable(const char *h)
{
    if (!h)
        return false;
    bool bcrypt =
        (strncmp(h, "$2a$", 4) == 0 || strncmp(h, "$2b$", 4) == 0 || strncmp(h, "$2y$", 4) == 0) &&
        strlen(h) == 60;
    return bcrypt || strncmp(h, "$argon2id$", 10) == 0;
}

static char *text_or_null(PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? NULL : ts_xstrdup(PQgetvalue(r, row, col));
}

static int64_t i64(PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? 0 : strtoll(PQgetvalue(r, row, col), NULL, 10);
}

static json_t *object_or_empty(PGresult *r, int row, int col)
{
    json_t *j = PQgetisnull(r, row, col) ? NULL : json_loads(PQgetvalue(r, row, col), 0, NULL);
    if (!json_is_object(j)) {
        json_decref(j);
        j = json_object();
    }
    return j;
}

static PGresult *run(PGconn *pg, const char *sql, ExecStatusType want, char **err)
{
    PGresult *r = PQexec(pg, sql);
    if (PQresultStatus(r) != want) {
        *err = ts_xasprintf("source database: %s", PQerrorMessage(pg));
        PQclear(r);
        return NULL;
    }
    return r;
}

/* Copies one row of auth.users; counts it in *stats. */
static enum ts_rc import_row(struct ts_store *dst, PGresult *r, int row,
                             struct ts_import_stats *stats)
{
    struct ts_user *u = ts_user_new();
    snprintf(u->id, sizeof(u->id), "%s", PQgetvalue(r, row, 0));
    u->aud = ts_xstrdup(PQgetisnull(r, row, 1) || !*PQgetvalue(r, row, 1) ? "authenticated"
                                                                          : PQgetvalue(r, row, 1));
    u->role = ts_xstrdup(PQgetisnull(r, row, 2) || !*PQgetvalue(r, row, 2) ? "authenticated"
                                                                           : PQgetvalue(r, row, 2));
    u->email = text_or_null(r, row, 3);
    if (u->email && !*u->email) {
        free(u->email);
        u->email = NULL;
    }
    if (u->email)
        for (char *c = u->email; *c; c++)
            *c = (char)(*c >= 'A' && *c <= 'Z' ? *c - 'A' + 'a' : *c);
    u->phone = text_or_null(r, row, 4);
    if (u->phone && !*u->phone) {
        free(u->phone);
        u->phone = NULL;
    }
    char *hash = text_or_null(r, row, 5);
    u->email_confirmed_at = i64(r, row, 6);
    u->phone_confirmed_at = i64(r, row, 7);
    u->confirmation_sent_at = i64(r, row, 8);
    u->invited_at = i64(r, row, 9);
    u->last_sign_in_at = i64(r, row, 10);
    u->banned_until = i64(r, row, 11);
    u->deleted_at = i64(r, row, 12);
    json_decref(u->user_metadata);
    json_decref(u->app_metadata);
    u->user_metadata = object_or_empty(r, row, 13);
    u->app_metadata = object_or_empty(r, row, 14);
    u->is_anonymous = strcmp(PQgetvalue(r, row, 15), "t") == 0;
    u->created_at = i64(r, row, 16);
    u->updated_at = i64(r, row, 17);
    if (!u->created_at)
        u->created_at = ts_now_us();
    if (u->updated_at < u->created_at)
        u->updated_at = u->created_at;
    bool with_password = hash_usable(hash);
    enum ts_rc rc = TS_OK;
    if (u->deleted_at) {
        stats->skipped_deleted++;
    } else {
        rc = ts_store_user_create(dst, u, with_password ? hash : NULL);
        if (rc == TS_OK) {
            stats->users++;
            if (with_password)
                stats->passwords++;
            else if (hash && *hash)
                stats->unusable_hashes++;
        } else if (rc == TS_E_CONFLICT) {
            stats->skipped_existing++;
            rc = TS_OK;
        }
    }
    if (hash) {
        ts_wipe(hash, strlen(hash));
        free(hash);
    }
    ts_user_free(u);
    return rc;
}

enum ts_rc ts_store_import_gotrue(struct ts_store *dst, const char *source_url,
                                  const char *source_schema, struct ts_import_stats *stats,
                                  char **err)
{
    memset(stats, 0, sizeof(*stats));
    if (!source_schema)
        source_schema = "auth";
    if (!identifier_ok(source_schema)) {
        *err = ts_xstrdup("the source schema must be a plain lower-case name");
        return TS_E_INVALID;
    }
    PGconn *pg = PQconnectdb(source_url);
    if (PQstatus(pg) != CONNECTION_OK) {
        *err = ts_xasprintf("cannot connect to the source database: %s", PQerrorMessage(pg));
        PQfinish(pg);
        return TS_E_UNAVAILABLE;
    }
    enum ts_rc rc = TS_E_STORE;
    PGresult *r = run(pg, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", PGRES_COMMAND_OK, err);
    if (!r)
        goto out;
    PQclear(r);
    /* is_anonymous arrived late in GoTrue's history: read it only where it exists. */
    char probe[512];
    snprintf(probe, sizeof(probe),
             "SELECT count(*) FROM information_schema.columns WHERE table_schema = '%s' AND "
             "table_name = 'users' AND column_name = 'is_anonymous'",
             source_schema);
    r = run(pg, probe, PGRES_TUPLES_OK, err);
    if (!r)
        goto out;
    bool has_anon = strcmp(PQgetvalue(r, 0, 0), "0") != 0;
    PQclear(r);
    char *sql = ts_xasprintf(users_query, has_anon ? "coalesce(is_anonymous, false)" : "false",
                             source_schema);
    r = run(pg, sql, PGRES_TUPLES_OK, err);
    free(sql);
    if (!r)
        goto out;
    int rows = PQntuples(r);
    rc = TS_OK;
    for (int i = 0; i < rows && !rc; i++)
        rc = import_row(dst, r, i, stats);
    PQclear(r);
    if (rc) {
        *err = ts_xasprintf("writing user %lld of %d failed (%s)",
                            (long long)(stats->users + stats->skipped_existing + 1), rows,
                            ts_rc_name(rc));
        goto out;
    }
    /* Identities of other providers (Google, GitHub...) have no table in Tessera yet: count
     * them so that the operator knows what was left behind. */
    snprintf(probe, sizeof(probe),
             "SELECT count(*) FROM \"%s\".identities WHERE provider NOT IN ('email', 'phone')",
             source_schema);
    r = PQexec(pg, probe);
    if (PQresultStatus(r) == PGRES_TUPLES_OK)
        stats->other_identities = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
out:
    PQclear(PQexec(pg, "ROLLBACK"));
    PQfinish(pg);
    return rc;
}

/*
 * store_fixture.h - the fixture both store test programs share (test_store.c,
 * test_store_docs.c): each test gets a fresh database, a file in a temporary directory while
 * the SQLite group runs, or a database made with createdb on the server named by
 * TESSERA_TEST_PG_HOST / TESSERA_TEST_PG_PORT (scripts/pg.sh starts a throwaway one) while
 * the PostgreSQL group runs, dropped by teardown. store_run_groups runs a program's tests as
 * both groups. Included by one .c file per program: everything here is static.
 */
#ifndef TS_TEST_STORE_FIXTURE_H
#define TS_TEST_STORE_FIXTURE_H

#include <dirent.h>
#include <fcntl.h>
#include <setjmp.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "store/store.h"

extern char **environ;

#define MAX_DBS 4

struct fix {
    char dir[64];
    char url[512];
    struct ts_store *st;
    char dbs[MAX_DBS][64]; /* PostgreSQL: the databases this test created, dropped after */
    int n_dbs;
};

/* ---- fixture ---- */

/* The PostgreSQL server of the group being run, or NULL while the SQLite group runs. */
static const char *pg_host;
static const char *pg_port;

/* Runs a PostgreSQL client tool (createdb, dropdb) against the test server as postgres,
 * its output discarded; returns its exit status. */
static int pg_tool(const char *tool, const char *opt1, const char *opt2, const char *db)
{
    const char *argv[12];
    int n = 0;
    argv[n++] = tool;
    argv[n++] = "-h";
    argv[n++] = pg_host;
    argv[n++] = "-p";
    argv[n++] = pg_port;
    argv[n++] = "-U";
    argv[n++] = "postgres";
    if (opt1)
        argv[n++] = opt1;
    if (opt2)
        argv[n++] = opt2;
    argv[n++] = db;
    argv[n] = NULL;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    pid_t pid;
    /* posix_spawnp's argv is char *const[] for historical reasons; it is not written. */
    int rc = posix_spawnp(&pid, tool, &fa, NULL, (char *const *)(uintptr_t)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0)
        return -1;
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* Percent-encodes s for a URI query value (the host is a socket directory). */
static void uri_encode(const char *s, char *out, size_t cap)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (; *s && o + 4 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '_' || c == '.') {
            out[o++] = (char)c;
        } else {
            out[o++] = '%';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    out[o] = '\0';
}

/* The URL of a new, empty database for f: a file named name in f's directory (SQLite), or a
 * database created for f on the test server (PostgreSQL), dropped by teardown. */
static void new_database(struct fix *f, const char *name, char *url, size_t cap)
{
    if (!pg_host) {
        snprintf(url, cap, "sqlite://%s/%s", f->dir, name);
        return;
    }
    static atomic_int seq;
    if (f->n_dbs == MAX_DBS)
        fail_msg("too many databases in one test");
    char *db = f->dbs[f->n_dbs];
    snprintf(db, sizeof(f->dbs[0]), "tessera_unit_%ld_%d", (long)getpid(),
             atomic_fetch_add(&seq, 1));
    if (pg_tool("createdb", NULL, NULL, db) != 0)
        fail_msg("createdb %s failed (server %s port %s)", db, pg_host, pg_port);
    f->n_dbs++;
    char host[256];
    uri_encode(pg_host, host, sizeof(host));
    snprintf(url, cap, "postgresql:///%s?host=%s&port=%s&user=postgres", db, host, pg_port);
}

static struct ts_store *open_store(const char *url)
{
    struct ts_store *st = NULL;
    char *err = NULL;
    if (ts_store_open(url, NULL, &st, &err) != TS_OK)
        fail_msg("ts_store_open(%s): %s", url, err ? err : "?");
    return st;
}

static struct ts_store *open_migrated(const char *url, int *applied)
{
    struct ts_store *st = open_store(url);
    char *err = NULL;
    int n = -1;
    if (ts_store_migrate(st, &n, &err) != TS_OK)
        fail_msg("ts_store_migrate: %s", err ? err : "?");
    if (applied)
        *applied = n;
    return st;
}

static int store_setup(void **state)
{
    struct fix *f = ts_xcalloc(1, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/tessera-test-store-XXXXXX");
    if (!mkdtemp(f->dir)) {
        free(f);
        return -1;
    }
    *state = f;
    new_database(f, "store.db", f->url, sizeof(f->url));
    f->st = open_migrated(f->url, NULL);
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

static int store_teardown(void **state)
{
    struct fix *f = *state;
    ts_store_close(f->st);
    for (int i = 0; i < f->n_dbs; i++) {
        if (pg_tool("dropdb", "--force", "--if-exists", f->dbs[i]) != 0)
            fprintf(stderr, "dropdb %s failed\n", f->dbs[i]);
    }
    remove_dir(f->dir);
    free(f);
    return 0;
}

/* Runs tests as the SQLite group, then, when a PostgreSQL server is named, as the PostgreSQL
 * group; returns the number of failures. */
static int store_run_groups(const char *name, const struct CMUnitTest *tests, size_t n)
{
    char title[128];
    snprintf(title, sizeof(title), "%s on sqlite", name);
    int failed = _cmocka_run_group_tests(title, tests, n, NULL, NULL);
    pg_host = getenv("TESSERA_TEST_PG_HOST");
    snprintf(title, sizeof(title), "%s on postgres", name);
    if (pg_host && *pg_host) {
        pg_port = getenv("TESSERA_TEST_PG_PORT");
        if (!pg_port || !*pg_port)
            pg_port = "5432";
        failed += _cmocka_run_group_tests(title, tests, n, NULL, NULL);
    } else {
        pg_host = NULL;
        printf("%s: skipped (TESSERA_TEST_PG_HOST is not set)\n", title);
    }
    return failed;
}

#endif

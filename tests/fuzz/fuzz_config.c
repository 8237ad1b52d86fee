/*
 * fuzz_config.c - the configuration loader of src/core/config.c under a fuzzer.
 *
 * Input: the text of a --config file (KEY=VALUE lines, '#' comments, optional TESSERA_ or
 * GOTRUE_ prefixes, quoted values, EXTERNAL_<NAME>_* providers). It is written to a memfd and
 * loaded with ts_config_load over the defaults, with every TESSERA_*, GOTRUE_* and PORT
 * variable removed from the environment first, so only the file counts. Then each of the first
 * 16 lines holding '=' is applied on its own with ts_config_set (name and value as the line has
 * them, untrimmed).
 * Properties (abort() when one fails): answers are TS_OK or TS_E_INVALID; an error comes with a
 * message and success without one; loading the same file twice gives the same answer and
 * message; a loaded configuration satisfies what ts_config_load validates (a known log level,
 * poll or epoll, normal or full durability, a JWT secret empty or of 32 bytes and more, a
 * HOST:PORT listen address, non-empty audience and issuer), numeric knobs within their bounds,
 * at most 16 external providers with lower-case names of 1 to 31 bytes; ts_config_free leaves
 * nothing behind (LeakSanitizer).
 *
 * Built with TS_FUZZ=ON as a libFuzzer program, otherwise with tests/fuzz/replay_main.c.
 * Seeds: tests/fuzz/corpus/config/; dictionary: tests/fuzz/dict/config.dict.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

extern char **environ;

/* Removes every variable the loader would read besides the file. */
static void clean_environment(void)
{
    static bool done;
    if (done)
        return;
    done = true;
    for (bool again = true; again;) {
        again = false;
        for (char **e = environ; e && *e; e++) {
            if (strncmp(*e, "TESSERA_", 8) == 0 || strncmp(*e, "GOTRUE_", 7) == 0 ||
                strncmp(*e, "PORT=", 5) == 0) {
                char name[256];
                size_t n = strcspn(*e, "=");
                snprintf(name, sizeof name, "%.*s", (int)n, *e);
                unsetenv(name);
                again = true; /* environ changed under us: start over */
                break;
            }
        }
    }
}

static bool in(int64_t v, int64_t lo, int64_t hi)
{
    return v >= lo && v <= hi;
}

static void check_valid(const struct ts_config *c)
{
    static const char *const levels[] = {"debug", "info", "warn", "error"};
    bool level = false;
    for (size_t i = 0; i < 4; i++)
        level = level || strcmp(c->log_level, levels[i]) == 0;
    if (!level)
        abort();
    if (strcmp(c->http_event_loop, "poll") != 0 && strcmp(c->http_event_loop, "epoll") != 0)
        abort();
    if (strcmp(c->database_durability, "normal") != 0 &&
        strcmp(c->database_durability, "full") != 0)
        abort();
    if (c->jwt_secret[0] && strlen(c->jwt_secret) < 32)
        abort();
    if (!strchr(c->listen, ':') || !c->jwt_aud[0] || !c->jwt_issuer[0])
        abort();
    if (!in(c->jwt_exp, 30, 7 * 24 * 3600) || !in(c->password_min_length, 6, 72) ||
        !in(c->refresh_token_reuse_interval, 0, 86400) || !in(c->password_hash_workers, 1, 256) ||
        !in(c->password_hash_nice, 0, 19) || !in(c->http_max_body, 1024, 64 * 1048576LL) ||
        !in(c->http_connection_timeout, 1, 3600) ||
        !in(c->token_default_ttl, 1, 100LL * 365 * 86400) || !in(c->sweep_interval, 0, 86400) ||
        !in(c->refresh_token_keep, 60, 10LL * 365 * 86400) || !in(c->authz_max_fetches, 1, 64))
        abort();
}

static void check_externals(const struct ts_config *c)
{
    if (c->n_externals < 0 || c->n_externals > TS_CONFIG_MAX_EXTERNAL)
        abort();
    for (int i = 0; i < c->n_externals; i++) {
        const char *n = c->externals[i].name;
        size_t len = strnlen(n, sizeof c->externals[i].name);
        if (len == 0 || len >= sizeof c->externals[i].name)
            abort();
        for (size_t j = 0; j < len; j++)
            if (n[j] >= 'A' && n[j] <= 'Z')
                abort();
    }
}

/* Loads the file at path over the defaults; checks the answer's shape. */
static enum ts_rc load(const char *path, char **msg)
{
    struct ts_config c;
    char *err = NULL;
    ts_config_defaults(&c);
    enum ts_rc rc = ts_config_load(&c, path, &err);
    if (rc != TS_OK && rc != TS_E_INVALID)
        abort();
    if ((rc == TS_OK) != (err == NULL) || (err && !err[0]))
        abort();
    if (rc == TS_OK)
        check_valid(&c);
    check_externals(&c);
    ts_config_free(&c);
    *msg = err;
    return rc;
}

static void set_lines(const uint8_t *data, size_t size)
{
    struct ts_config c;
    ts_config_defaults(&c);
    const uint8_t *p = data, *end = data + size;
    for (int lines = 0; p < end && lines < 16; lines++) {
        const uint8_t *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        char *line = strndup((const char *)p, n);
        char *eq = line ? strchr(line, '=') : NULL;
        if (eq) {
            char *err = NULL;
            *eq = '\0';
            enum ts_rc rc = ts_config_set(&c, line, eq + 1, &err);
            if (rc != TS_OK && rc != TS_E_INVALID)
                abort();
            if ((rc == TS_OK) != (err == NULL) || (err && !err[0]))
                abort();
            free(err);
        }
        free(line);
        p = nl ? nl + 1 : end;
    }
    check_externals(&c);
    ts_config_free(&c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    clean_environment();
    int fd = memfd_create("fuzz_config", 0);
    if (fd < 0)
        abort();
    for (size_t off = 0; off < size;) {
        ssize_t w = write(fd, data + off, size - off);
        if (w <= 0)
            abort();
        off += (size_t)w;
    }
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);

    char *m1 = NULL, *m2 = NULL;
    enum ts_rc r1 = load(path, &m1);
    enum ts_rc r2 = load(path, &m2);
    if (r1 != r2 || (m1 && strcmp(m1, m2) != 0))
        abort(); /* the loader depends on nothing but its input */
    free(m1);
    free(m2);
    close(fd);

    set_lines(data, size);
    return 0;
}

/*
 * cli_serve.c - shared start-up (configuration, store, keys) and `tessera serve`.
 */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "jwks/jwks.h"

#define KEY_RELOAD_US                                                                              \
    500000                      /* how often serve re-reads the signing keys: a rotation made      \
                                 * elsewhere must reach every node within a second */
#define EXTERNAL_POLL_US 100000 /* how often serve looks for other processes' commits */
#define SWEEP_PAUSE_US 2000     /* between two sweeper batches: requests get the database */

/* ---- the sweeper: a thread that deletes what has expired (store.h ts_store_sweep_pass) ---- */

struct sweeper {
    pthread_t thread;
    bool started;
    _Atomic bool stop;
    struct ts_store *store;
    const struct ts_config *cfg;
};

void cli_log_sweep(const struct ts_sweep_counts *c, int64_t took_us)
{
    ts_log_info("sweep: deleted %lld tokens, %lld keys, %lld documents, %lld sessions, %lld "
                "refresh tokens, %lld exchanges, %lld counters in %lld ms",
                (long long)c->tokens, (long long)c->keys, (long long)c->documents,
                (long long)c->sessions, (long long)c->refresh_tokens, (long long)c->exchanges,
                (long long)c->counters, (long long)(took_us / 1000));
}

/* EXTERNAL_<NAME>_ISSUER without _JWKS_URI: find the key set by OpenID discovery, once, at
 * start-up (a provider whose discovery fails is logged and stays unusable until a restart). */
static void discover_externals(struct ts_config *cfg)
{
    struct ts_jwks_options jo = ts_jwks_options_default();
    for (int i = 0; i < cfg->n_externals; i++) {
        struct ts_external_cfg *e = &cfg->externals[i];
        if (!e->enabled || !e->issuer || !*e->issuer || (e->jwks_uri && *e->jwks_uri))
            continue;
        char *uri = NULL, *err = NULL;
        if (ts_jwks_discover(&jo, e->issuer, &uri, &err) == TS_OK) {
            free(e->jwks_uri);
            e->jwks_uri = uri;
            ts_log_info("external provider %s: keys at %s (OpenID discovery)", e->name, uri);
        } else {
            ts_log_warn("external provider %s: discovery failed: %s", e->name, err ? err : "?");
            free(err);
        }
    }
}

static void *sweeper_main(void *arg)
{
    struct sweeper *sw = arg;
    int64_t interval = sw->cfg->sweep_interval * 1000000;
    int64_t next = ts_mono_us() + interval;
    while (!atomic_load(&sw->stop)) {
        struct timespec nap = {0, 50 * 1000 * 1000};
        nanosleep(&nap, NULL);
        if (ts_mono_us() < next)
            continue;
        int64_t start = ts_mono_us(), now = ts_now_us();
        struct ts_sweep_counts c;
        enum ts_rc rc =
            ts_store_sweep_pass(sw->store, now, now - sw->cfg->refresh_token_keep * 1000000,
                                sw->cfg->sweep_batch, SWEEP_PAUSE_US, &sw->stop, &c);
        if (rc)
            ts_log_warn("sweep: %s (will retry)", ts_rc_name(rc));
        else if (c.tokens || c.keys || c.documents || c.sessions || c.refresh_tokens ||
                 c.exchanges || c.counters)
            cli_log_sweep(&c, ts_mono_us() - start);
        next = ts_mono_us() + interval;
    }
    return NULL;
}

int cli_load_config(struct cli_env *env, int argc, char **argv, const char *usage, bool *done)
{
    memset(env, 0, sizeof(*env));
    ts_config_defaults(&env->cfg);
    *done = false;
    const char *file = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(usage, stdout);
            *done = true;
            return 0;
        }
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
            file = argv[++i];
        } else if (strncmp(argv[i], "--config=", 9) == 0) {
            file = argv[i] + 9;
        }
    }
    char *err = NULL;
    if (ts_config_load(&env->cfg, file, &err) != TS_OK) {
        fprintf(stderr, "tessera: configuration error: %s\n", err);
        free(err);
        return 2;
    }
    static const char *levels[] = {"debug", "info", "warn", "error"};
    for (int l = 0; l < 4; l++)
        if (strcmp(env->cfg.log_level, levels[l]) == 0)
            ts_log_set_level((enum ts_log_level)l);
    return 0;
}

struct ts_keys_config cli_keys_config(const struct cli_env *env)
{
    const struct ts_config *cfg = &env->cfg;
    struct ts_keys_config kc = {
        .hs256_secret = cfg->jwt_secret,
        .issuer = cfg->jwt_issuer,
        .audience = cfg->jwt_aud,
        .access_ttl = cfg->jwt_exp,
        .retired_keep = TS_KEYS_RETIRED_KEEP,
        .master = &env->master,
    };
    return kc;
}

int cli_bootstrap(struct cli_env *env)
{
    char *err = NULL;
    if (ts_master_keys_load(env->cfg.master_key, env->cfg.master_key_file,
                            env->cfg.master_key_previous, &env->master, &err) != TS_OK) {
        fprintf(stderr, "tessera: configuration error: %s\n", err);
        free(err);
        return 2;
    }
    struct ts_store_options so = {
        .durable_full = strcmp(env->cfg.database_durability, "full") == 0,
        .schema = env->cfg.database_schema,
    };
    if (ts_store_open(env->cfg.database_url, &so, &env->store, &err) != TS_OK) {
        fprintf(stderr, "tessera: %s\n", err);
        free(err);
        return 1;
    }
    int applied = 0;
    if (ts_store_migrate(env->store, &applied, &err) != TS_OK) {
        fprintf(stderr, "tessera: %s\n", err);
        free(err);
        return 1;
    }
    if (applied)
        ts_log_info("applied %d migration(s)", applied);
    struct ts_keys_config kc = cli_keys_config(env);
    enum ts_rc krc = ts_keyring_open(env->store, &kc, &env->keyring, &env->keys_created);
    if (krc == TS_E_DENIED || krc == TS_E_BAD_TOKEN || krc == TS_E_PARSE) {
        /* The log line above names the key and the master key ids; never start with fresh
         * keys instead, which would invalidate every token and API key in use. */
        fprintf(stderr, "tessera: the JWT signing keys in the database cannot be opened (see "
                        "the error above: TESSERA_MASTER_KEY); not starting\n");
        return 1;
    }
    if (krc) {
        fprintf(stderr, "tessera: cannot load or create the JWT signing keys\n");
        return 1;
    }
    char iat[32];
    snprintf(iat, sizeof(iat), "%lld", (long long)ts_now_s());
    enum ts_rc rc = ts_store_meta_insert(env->store, "api_keys_iat", iat);
    if (rc && rc != TS_E_CONFLICT) {
        fprintf(stderr, "tessera: cannot record the API keys' issue time\n");
        return 1;
    }
    env->api_keys_new = rc == TS_OK;
    return 0;
}

void cli_env_free(struct cli_env *env)
{
    ts_keyring_free(env->keyring);
    ts_store_close(env->store);
    ts_config_free(&env->cfg);
    ts_master_keys_wipe(&env->master);
}

int cli_print_api_keys(struct cli_env *env, bool json)
{
    char *iat_text = NULL;
    int64_t iat;
    if (ts_store_meta_get(env->store, "api_keys_iat", &iat_text) != TS_OK ||
        ts_parse_i64(iat_text, 0, INT64_MAX / 2, &iat) != TS_OK) {
        free(iat_text);
        fprintf(stderr, "tessera: the API keys' issue time is missing; run tessera migrate\n");
        return 1;
    }
    free(iat_text);
    char *anon = NULL, *service = NULL;
    if (ts_keyring_mint_api_key(env->keyring, "anon", iat, &anon) != TS_OK ||
        ts_keyring_mint_api_key(env->keyring, "service_role", iat, &service) != TS_OK) {
        free(anon);
        fprintf(stderr, "tessera: cannot sign the API keys\n");
        return 1;
    }
    if (json)
        printf("{\"anon_key\":\"%s\",\"service_role_key\":\"%s\"}\n", anon, service);
    else
        printf("anon key:         %s\nservice_role key: %s\n", anon, service);
    fflush(stdout);
    free(anon);
    ts_wipe(service, strlen(service));
    free(service);
    return 0;
}

static void announce_first_start(struct cli_env *env)
{
    if (!env->api_keys_new)
        return;
    printf("Tessera: new database. The API keys below are shown once; `tessera key show` prints "
           "them again.\nThe service_role key is an administrator's credential: keep it "
           "secret.\n");
    (void)cli_print_api_keys(env, false);
}

static const char serve_usage[] =
    "usage: tessera serve [--config FILE]\n"
    "\n"
    "Starts the server: the GoTrue-compatible API at / and /auth/v1/, /health, /ready,\n"
    "/metrics and /.well-known/jwks.json. An empty database is migrated and given signing\n"
    "keys; the anon and service_role keys are printed once. SIGTERM or SIGINT stops it\n"
    "gracefully (requests in flight finish, up to 10 s).\n"
    "\n";

int cli_serve(int argc, char **argv)
{
    struct cli_env env;
    bool done;
    int code = cli_load_config(&env, argc, argv, serve_usage, &done);
    if (done)
        ts_config_print_help(stdout);
    if (code || done) {
        ts_config_free(&env.cfg);
        return code;
    }
    /* Signals are taken synchronously by this thread; every thread started below inherits
     * the mask, so none of them is interrupted. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    code = cli_bootstrap(&env);
    struct ts_hashpool *pool = NULL;
    struct ts_api *api = NULL;
    struct ts_http_server *srv = NULL;
    if (code)
        goto out;
    announce_first_start(&env);
    if (env.master.set && !env.cfg.jwt_secret[0])
        ts_log_info("signing keys are encrypted at rest under master key %s", env.master.id);
    struct ts_password_params pp = {.memory_kib = (uint32_t)env.cfg.password_hash_memory_kib,
                                    .iterations = (uint32_t)env.cfg.password_hash_iterations};
    if (ts_hashpool_new((int)env.cfg.password_hash_workers, (int)env.cfg.password_hash_queue, &pp,
                        &pool) != TS_OK) {
        fprintf(stderr, "tessera: cannot start the password hash workers\n");
        code = 1;
        goto out;
    }
    discover_externals(&env.cfg);
    struct ts_api_deps deps = {
        .cfg = &env.cfg, .store = env.store, .keyring = env.keyring, .hashpool = pool};
    api = ts_api_new(&deps);
    char *err = NULL;
    if (ts_api_load_files(api, &err) != TS_OK) {
        fprintf(stderr, "tessera: %s\n", err);
        free(err);
        code = 1;
        goto out;
    }
    struct ts_http_options ho = {
        .listen = env.cfg.listen,
        .threads = (int)env.cfg.http_threads,
        .use_epoll = strcmp(env.cfg.http_event_loop, "epoll") == 0,
        .max_body = (size_t)env.cfg.http_max_body,
        .max_header_bytes = (size_t)env.cfg.http_max_header_bytes,
        .connection_timeout = (unsigned)env.cfg.http_connection_timeout,
        .header_timeout = (unsigned)env.cfg.http_header_timeout,
        .max_connections = (unsigned)env.cfg.http_max_connections,
    };
    ts_api_http_options(api, &ho);
    if (ts_http_start(&ho, &srv, &err) != TS_OK) {
        fprintf(stderr, "tessera: %s\n", err);
        free(err);
        code = 1;
        goto out;
    }
    ts_log_info("tessera %s listening on %s (port %u, %lld HTTP threads, %lld hash workers, "
                "JWT %s)",
                TS_VERSION, env.cfg.listen, (unsigned)ts_http_port(srv),
                (long long)env.cfg.http_threads, (long long)env.cfg.password_hash_workers,
                env.cfg.jwt_secret[0] ? "HS256" : "ES256");
    struct sweeper sw = {.store = env.store, .cfg = &env.cfg};
    if (env.cfg.sweep_interval > 0)
        sw.started = pthread_create(&sw.thread, NULL, sweeper_main, &sw) == 0;
    int64_t next_reload = ts_mono_us() + KEY_RELOAD_US;
    for (;;) {
        struct timespec wait = {.tv_sec = 0, .tv_nsec = EXTERNAL_POLL_US * 1000};
        int sig = sigtimedwait(&sigs, NULL, &wait);
        if (sig == SIGTERM || sig == SIGINT) {
            ts_log_info("signal %d: stopping", sig);
            break;
        }
        /* Changes committed by another process (the CLI deleting a user, say) reach this
         * server's caches within EXTERNAL_POLL_US. */
        ts_store_poll_external(env.store);
        /* A rotation by `tessera jwt rotate` reaches this server within KEY_RELOAD_US. */
        if (ts_mono_us() >= next_reload) {
            next_reload = ts_mono_us() + KEY_RELOAD_US;
            if (ts_keyring_reload(env.keyring) != TS_OK)
                ts_log_warn("signing keys could not be re-read; keeping the current set");
        }
    }
    atomic_store(&sw.stop, true);
    if (sw.started)
        pthread_join(sw.thread, NULL);
out:
    ts_http_stop(srv, 10000);
    ts_hashpool_free(pool);
    ts_api_free(api);
    cli_env_free(&env);
    return code;
}

static const char migrate_usage[] =
    "usage: tessera migrate [--config FILE]\n"
    "\n"
    "Creates or upgrades the database schema (DATABASE_URL), creates the JWT signing keys on\n"
    "an empty database, and exits. Safe to run again: applied migrations are skipped.\n";

int cli_migrate(int argc, char **argv)
{
    struct cli_env env;
    bool done;
    int code = cli_load_config(&env, argc, argv, migrate_usage, &done);
    if (!code && !done) {
        code = cli_bootstrap(&env);
        if (!code) {
            int current = 0, latest = 0;
            if (ts_store_schema_version(env.store, &current, &latest) == TS_OK)
                printf("schema at version %d of %d\n", current, latest);
            announce_first_start(&env);
        }
    }
    cli_env_free(&env);
    return code;
}

/*
 * cli.h - the tessera command line: serve, migrate, user, key, jwt, version.
 * Private to src/cli.
 */
#ifndef TS_CLI_H
#define TS_CLI_H

#include <stdbool.h>

#include "api/api.h"

/* What every command that touches the database needs. */
struct cli_env {
    struct ts_config cfg;
    struct ts_store *store;
    struct ts_keyring *keyring;
    bool keys_created;            /* this run created the signing keys (a first start) */
    bool api_keys_new;            /* this run minted the anon/service keys' issue time */
    struct ts_master_keys master; /* MASTER_KEY (and _PREVIOUS), decoded by cli_bootstrap */
};

/* Parses --config FILE (and --help) from argv into env->cfg; returns 0, or an exit code
 * (2 for bad usage, 0 after --help via *done). */
int cli_load_config(struct cli_env *env, int argc, char **argv, const char *usage, bool *done);
/* Opens the store, applies migrations, loads or creates the signing keys (sealing them under
 * MASTER_KEY when it is set). Returns an exit code (0 on success). */
int cli_bootstrap(struct cli_env *env);
void cli_env_free(struct cli_env *env);
/* The keyring's settings from env (its master keys included). */
struct ts_keys_config cli_keys_config(const struct cli_env *env);
/* Prints the anon and service_role keys (as JSON when json is true). */
int cli_print_api_keys(struct cli_env *env, bool json);

/* Logs one sweeper pass's counts. */
void cli_log_sweep(const struct ts_sweep_counts *c, int64_t took_us);

int cli_serve(int argc, char **argv);
int cli_token(int argc, char **argv);
int cli_migrate(int argc, char **argv);
int cli_user(int argc, char **argv);
int cli_key(int argc, char **argv);
int cli_jwt(int argc, char **argv);
int cli_import(int argc, char **argv);

#endif

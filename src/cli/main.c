/*
 * main.c - the single tessera binary: the server and its administration commands.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const char usage[] =
    "usage: tessera <command> [options]\n"
    "\n"
    "commands:\n"
    "  serve      start the HTTP server (GoTrue-compatible API at / and /auth/v1/)\n"
    "  migrate    create or upgrade the database schema, then exit\n"
    "  user       add | list | passwd | delete users\n"
    "  key        show the anon and service_role API keys; create | list | revoke /v1 keys\n"
    "  token      sweep: delete expired tokens, keys, documents and sessions now\n"
    "  jwt        rotate | list the JWT signing keys\n"
    "  import     gotrue SOURCE_URL: copy the users of a Supabase Auth database\n"
    "  version    print the version\n"
    "\n"
    "Every command takes --help. Settings come from TESSERA_* (or GOTRUE_*) environment\n"
    "variables or --config FILE; `tessera serve --help` lists them all.\n";

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs(usage, stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "serve") == 0)
        return cli_serve(argc - 1, argv + 1);
    if (strcmp(cmd, "migrate") == 0)
        return cli_migrate(argc - 1, argv + 1);
    if (strcmp(cmd, "user") == 0)
        return cli_user(argc - 1, argv + 1);
    if (strcmp(cmd, "key") == 0)
        return cli_key(argc - 1, argv + 1);
    if (strcmp(cmd, "token") == 0)
        return cli_token(argc - 1, argv + 1);
    if (strcmp(cmd, "jwt") == 0)
        return cli_jwt(argc - 1, argv + 1);
    if (strcmp(cmd, "import") == 0)
        return cli_import(argc - 1, argv + 1);
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        if (argc > 2 && strcmp(argv[2], "--help") == 0) {
            puts("usage: tessera version\n\nPrints the version of this binary.");
            return 0;
        }
        printf("tessera %s\n", TS_VERSION);
        return 0;
    }
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        fputs(usage, stdout);
        return 0;
    }
    fprintf(stderr, "tessera: unknown command %s\n\n%s", cmd, usage);
    return 2;
}

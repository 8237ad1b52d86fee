/*
 * cli_admin.c - `tessera user`, `tessera key`, `tessera jwt`: administration from
 * the shell, straight on the database (the server need not run; a running server
 * sees the changes at once, and rotated keys within seconds).
 */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "cli.h"

/* Reads one line (a password) from stdin without echo when it is a terminal. */
static char *read_secret_line(const char *prompt)
{
    struct termios old, quiet;
    bool tty = isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &old) == 0;
    if (tty) {
        fprintf(stderr, "%s", prompt);
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
    }
    char buf[1024];
    char *line = fgets(buf, sizeof(buf), stdin);
    if (tty) {
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
        fputc('\n', stderr);
    }
    if (!line)
        return NULL;
    buf[strcspn(buf, "\r\n")] = '\0';
    char *out = ts_xstrdup(buf);
    ts_wipe(buf, sizeof(buf));
    return out;
}

static void free_secret(char *s)
{
    if (s) {
        ts_wipe(s, strlen(s));
        free(s);
    }
}

static struct ts_password_params password_params(const struct ts_config *cfg)
{
    struct ts_password_params pp = {.memory_kib = (uint32_t)cfg->password_hash_memory_kib,
                                    .iterations = (uint32_t)cfg->password_hash_iterations};
    return pp;
}

/* Finds a user by id or e-mail. */
static enum ts_rc find_user(struct cli_env *env, const char *who, struct ts_user **out)
{
    if (ts_uuid_valid(who))
        return ts_store_user_get(env->store, who, out);
    char *lower = ts_xstrdup(who);
    for (char *c = lower; *c; c++)
        *c = (char)(*c >= 'A' && *c <= 'Z' ? *c - 'A' + 'a' : *c);
    enum ts_rc rc = ts_store_user_get_by_email(env->store, lower, out, NULL);
    free(lower);
    return rc;
}

static const char user_usage[] =
    "usage: tessera user add EMAIL [--unconfirmed]   (password read from stdin)\n"
    "       tessera user list [--json] [--filter TEXT]\n"
    "       tessera user passwd EMAIL|ID                (password read from stdin)\n"
    "       tessera user delete EMAIL|ID\n"
    "       (each also takes --config FILE)\n"
    "\n"
    "add creates a confirmed e-mail user; passwd sets a new password and ends the user's\n"
    "sessions; delete removes the user with every session and credential at once.\n";

/* The policy the API applies, for the CLI: length, and PASSWORD_BLOCKLIST. Returns 0 when pw
 * is acceptable, else an exit code after saying why. */
static int password_refused(struct cli_env *env, const char *pw)
{
    if (!pw || strlen(pw) < (size_t)env->cfg.password_min_length || strlen(pw) > 72) {
        fprintf(stderr, "tessera: the password must have %lld to 72 characters\n",
                (long long)env->cfg.password_min_length);
        return 2;
    }
    if (!env->cfg.password_blocklist[0])
        return 0;
    struct ts_pw_blocklist *bl = NULL;
    char *err = NULL;
    if (ts_pw_blocklist_open(env->cfg.password_blocklist, &bl, &err) != TS_OK) {
        fprintf(stderr, "tessera: configuration error: %s\n", err);
        free(err);
        return 2;
    }
    bool pwned = ts_pw_blocklist_contains(bl, pw, strlen(pw));
    ts_pw_blocklist_free(bl);
    if (pwned) {
        fprintf(stderr, "tessera: this password is on the list of breached passwords "
                        "(PASSWORD_BLOCKLIST); choose another\n");
        return 2;
    }
    return 0;
}

static int user_add(struct cli_env *env, const char *email, bool confirmed)
{
    if (!strchr(email, '@')) {
        fprintf(stderr, "tessera: %s is not an e-mail address\n", email);
        return 2;
    }
    char *pw = read_secret_line("password: ");
    int refused = password_refused(env, pw);
    if (refused) {
        free_secret(pw);
        return refused;
    }
    if (sodium_init() < 0)
        return 1;
    struct ts_password_params pp = password_params(&env->cfg);
    char *hash = NULL;
    enum ts_rc rc = ts_password_hash(&pp, pw, strlen(pw), &hash);
    free_secret(pw);
    if (rc)
        return 1;
    struct ts_user *u = ts_user_new();
    ts_uuid_v4(u->id);
    u->aud = ts_xstrdup(env->cfg.jwt_aud);
    u->role = ts_xstrdup(env->cfg.jwt_default_group_name);
    u->email = ts_xstrdup(email);
    for (char *c = u->email; *c; c++)
        *c = (char)(*c >= 'A' && *c <= 'Z' ? *c - 'A' + 'a' : *c);
    u->created_at = u->updated_at = ts_now_us();
    if (confirmed)
        u->email_confirmed_at = u->created_at;
    json_object_set_new(u->app_metadata, "provider", json_string("email"));
    json_object_set_new(u->app_metadata, "providers", json_pack("[s]", "email"));
    rc = ts_store_user_create(env->store, u, hash);
    free_secret(hash);
    int code = 0;
    if (rc == TS_E_CONFLICT) {
        fprintf(stderr, "tessera: a user with this e-mail already exists\n");
        code = 1;
    } else if (rc) {
        fprintf(stderr, "tessera: cannot create the user (%s)\n", ts_rc_name(rc));
        code = 1;
    } else {
        printf("%s\n", u->id);
    }
    ts_user_free(u);
    return code;
}

static int user_list(struct cli_env *env, bool json, const char *filter)
{
    int64_t offset = 0, total = 0;
    json_t *all = json ? json_array() : NULL;
    if (!json)
        printf("%-36s  %-32s  %-27s  %s\n", "id", "email", "created_at", "last_sign_in_at");
    for (;;) {
        struct ts_user **users = NULL;
        size_t n = 0;
        enum ts_rc rc = ts_store_user_list(env->store, offset, 500, filter, &users, &n, &total);
        if (rc) {
            fprintf(stderr, "tessera: cannot list users (%s)\n", ts_rc_name(rc));
            json_decref(all);
            return 1;
        }
        for (size_t i = 0; i < n; i++) {
            struct ts_user *u = users[i];
            char created[TS_TIME_STR_LEN], last[TS_TIME_STR_LEN] = "-";
            ts_time_format(u->created_at, created);
            if (u->last_sign_in_at)
                ts_time_format(u->last_sign_in_at, last);
            if (json)
                json_array_append_new(all,
                                      json_pack("{s:s, s:s?, s:s, s:s, s:b}", "id", u->id, "email",
                                                u->email, "created_at", created, "last_sign_in_at",
                                                last, "is_anonymous", u->is_anonymous));
            else
                printf("%-36s  %-32s  %-27s  %s\n", u->id,
                       u->email ? u->email : (u->is_anonymous ? "(anonymous)" : "-"), created,
                       last);
        }
        ts_user_list_free(users, n);
        offset += (int64_t)n;
        if (n < 500)
            break;
    }
    if (json) {
        char *s = json_dumps(all, JSON_COMPACT);
        printf("%s\n", s);
        free(s);
        json_decref(all);
    }
    return 0;
}

static int user_passwd(struct cli_env *env, const char *who)
{
    struct ts_user *u = NULL;
    if (find_user(env, who, &u) != TS_OK) {
        fprintf(stderr, "tessera: no such user\n");
        return 1;
    }
    char *pw = read_secret_line("new password: ");
    int code = password_refused(env, pw);
    if (code) {
        /* said why */
    } else if (sodium_init() < 0) {
        code = 1;
    } else {
        struct ts_password_params pp = password_params(&env->cfg);
        char *hash = NULL;
        enum ts_rc rc = ts_password_hash(&pp, pw, strlen(pw), &hash);
        if (!rc)
            rc = ts_store_password_set(env->store, u->id, hash, NULL, true, NULL, ts_now_us());
        free_secret(hash);
        if (rc) {
            fprintf(stderr, "tessera: cannot set the password (%s)\n", ts_rc_name(rc));
            code = 1;
        } else {
            printf("password changed; the user's sessions were ended\n");
        }
    }
    free_secret(pw);
    ts_user_free(u);
    return code;
}

static int user_delete(struct cli_env *env, const char *who)
{
    struct ts_user *u = NULL;
    if (find_user(env, who, &u) != TS_OK) {
        fprintf(stderr, "tessera: no such user\n");
        return 1;
    }
    enum ts_rc rc = ts_store_user_delete(env->store, u->id);
    if (!rc)
        printf("deleted %s\n", u->id);
    else
        fprintf(stderr, "tessera: cannot delete the user (%s)\n", ts_rc_name(rc));
    ts_user_free(u);
    return rc ? 1 : 0;
}

/* Removes --config FILE from argv so that positional arguments can be read simply. */
static int positional(int argc, char **argv, char **out, int max)
{
    int n = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0) {
            i++;
            continue;
        }
        if (strncmp(argv[i], "--", 2) == 0)
            continue;
        if (n < max)
            out[n] = argv[i];
        n++;
    }
    return n;
}

static bool has_flag(int argc, char **argv, const char *flag)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], flag) == 0)
            return true;
    return false;
}

static const char *flag_value(int argc, char **argv, const char *flag)
{
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], flag) == 0)
            return argv[i + 1];
    return NULL;
}

int cli_user(int argc, char **argv)
{
    struct cli_env env;
    bool done;
    int code = cli_load_config(&env, argc, argv, user_usage, &done);
    if (code || done) {
        ts_config_free(&env.cfg);
        return code;
    }
    char *pos[3] = {0};
    const char *filter = flag_value(argc, argv, "--filter");
    int n = positional(argc, argv, pos, 3);
    if (filter && n > 1 && strcmp(pos[n - 1], filter) == 0)
        n--; /* the value of --filter is not a positional argument */
    if (n < 1) {
        fputs(user_usage, stderr);
        ts_config_free(&env.cfg);
        return 2;
    }
    code = cli_bootstrap(&env);
    if (!code) {
        if (strcmp(pos[0], "add") == 0 && n == 2)
            code = user_add(&env, pos[1], !has_flag(argc, argv, "--unconfirmed"));
        else if (strcmp(pos[0], "list") == 0 && n == 1)
            code = user_list(&env, has_flag(argc, argv, "--json"), filter);
        else if (strcmp(pos[0], "passwd") == 0 && n == 2)
            code = user_passwd(&env, pos[1]);
        else if (strcmp(pos[0], "delete") == 0 && n == 2)
            code = user_delete(&env, pos[1]);
        else {
            fputs(user_usage, stderr);
            code = 2;
        }
    }
    cli_env_free(&env);
    return code;
}

static const char key_usage[] =
    "usage: tessera key show [--json] [--config FILE]\n"
    "       tessera key create --role ROLE [--ttl DURATION] [--description TEXT] [--config FILE]\n"
    "       tessera key list [--config FILE]\n"
    "       tessera key revoke ID [--config FILE]\n"
    "\n"
    "show prints the anon and service_role API keys: JWTs with role anon / service_role and no\n"
    "subject, as Supabase's. The service_role key is an administrator's credential (on /v1\n"
    "too). In ES256 mode each call signs them anew (ECDSA signatures differ every time; every\n"
    "printed key is valid). After `tessera jwt rotate`, keys printed before keep working\n"
    "while the retired signing key is kept (7 days).\n"
    "\n"
    "create makes a /v1 key (tsk_...) with ROLE admin, server, server-readonly or client and\n"
    "prints its secret once; the database keeps only its SHA-256. --ttl takes a duration\n"
    "(\"720h\"); without it the key does not expire. list shows the keys (never a secret);\n"
    "revoke deletes one, effective on the next request on every node.\n";

static int key_create(struct cli_env *env, const char *role, const char *ttl, const char *desc)
{
    if (!role || (strcmp(role, "admin") != 0 && strcmp(role, "server") != 0 &&
                  strcmp(role, "server-readonly") != 0 && strcmp(role, "client") != 0)) {
        fprintf(stderr, "tessera: --role must be admin, server, server-readonly or client\n");
        return 2;
    }
    int64_t now = ts_now_us(), life = 0;
    if (ttl && (ts_duration_parse(ttl, &life) != TS_OK || life <= 0)) {
        fprintf(stderr, "tessera: --ttl must be a positive duration such as 720h\n");
        return 2;
    }
    char secret[TS_SECRET_TEXT_LEN + 1];
    uint8_t hash[TS_SECRET_HASH_LEN];
    ts_opaque_secret_new("tsk_", secret, hash);
    struct ts_secret_row row = {.kind = TS_SECRET_KEY,
                                .role = (char *)(uintptr_t)role,
                                .origin = (char *)(uintptr_t) "cli",
                                .description = (char *)(uintptr_t)desc,
                                .created_at = now,
                                .expires_at = life ? now + life : 0};
    ts_uuid_v4(row.id);
    enum ts_rc rc = ts_store_secret_create(env->store, &row, hash, now);
    if (rc) {
        ts_wipe(secret, sizeof(secret));
        fprintf(stderr, "tessera: cannot create the key: %s\n", ts_rc_name(rc));
        return 1;
    }
    ts_store_audit(env->store, "key_created", "cli", row.id, NULL, NULL);
    printf("id:     %s\nrole:   %s\nsecret: %s\n(shown once: store it now)\n", row.id, role,
           secret);
    ts_wipe(secret, sizeof(secret));
    return 0;
}

static int key_list(struct cli_env *env)
{
    const char *after = NULL;
    char last[TS_STORE_ID_LEN + 1];
    for (;;) {
        struct ts_secret_filter f = {
            .kind = TS_SECRET_KEY, .after = after, .limit = 1000, .now = ts_now_us()};
        struct ts_secret_row **rows = NULL;
        size_t n = 0;
        enum ts_rc rc = ts_store_secret_list(env->store, &f, &rows, &n);
        if (rc) {
            fprintf(stderr, "tessera: cannot list keys: %s\n", ts_rc_name(rc));
            return 1;
        }
        for (size_t i = 0; i < n; i++) {
            char created[TS_TIME_STR_LEN], expires[TS_TIME_STR_LEN] = "never";
            ts_time_format(rows[i]->created_at, created);
            if (rows[i]->expires_at)
                ts_time_format(rows[i]->expires_at, expires);
            printf("%s  %-15s  created %s  expires %s  %s\n", rows[i]->id, rows[i]->role, created,
                   expires, rows[i]->description ? rows[i]->description : "");
        }
        bool more = n == 1000;
        if (more) {
            snprintf(last, sizeof(last), "%s", rows[n - 1]->id);
            after = last;
        }
        ts_secret_rows_free(rows, n);
        if (!more)
            return 0;
    }
}

static int key_revoke(struct cli_env *env, const char *id)
{
    enum ts_rc rc = ts_store_secret_delete(env->store, TS_SECRET_KEY, id);
    if (rc == TS_E_NOT_FOUND) {
        fprintf(stderr, "tessera: no key %s\n", id);
        return 1;
    }
    if (rc) {
        fprintf(stderr, "tessera: cannot revoke: %s\n", ts_rc_name(rc));
        return 1;
    }
    ts_store_audit(env->store, "key_revoked", "cli", id, NULL, NULL);
    printf("revoked %s\n", id);
    return 0;
}

int cli_key(int argc, char **argv)
{
    struct cli_env env;
    bool done;
    int code = cli_load_config(&env, argc, argv, key_usage, &done);
    if (code || done) {
        ts_config_free(&env.cfg);
        return code;
    }
    const char *role = flag_value(argc, argv, "--role");
    const char *ttl = flag_value(argc, argv, "--ttl");
    const char *desc = flag_value(argc, argv, "--description");
    char *pos[4] = {0};
    int n = positional(argc, argv, pos, 4);
    /* values of flags are not positional arguments */
    while (n > 1 && ((role && pos[n - 1] == role) || (ttl && pos[n - 1] == ttl) ||
                     (desc && pos[n - 1] == desc)))
        n--;
    const char *cmd = n >= 1 ? pos[0] : "";
    bool ok = (strcmp(cmd, "show") == 0 && n == 1) || (strcmp(cmd, "create") == 0 && n == 1) ||
              (strcmp(cmd, "list") == 0 && n == 1) || (strcmp(cmd, "revoke") == 0 && n == 2);
    if (!ok) {
        fputs(key_usage, stderr);
        ts_config_free(&env.cfg);
        return 2;
    }
    code = cli_bootstrap(&env);
    if (!code) {
        if (strcmp(cmd, "show") == 0)
            code = cli_print_api_keys(&env, has_flag(argc, argv, "--json"));
        else if (strcmp(cmd, "create") == 0)
            code = key_create(&env, role, ttl, desc);
        else if (strcmp(cmd, "list") == 0)
            code = key_list(&env);
        else
            code = key_revoke(&env, pos[1]);
    }
    cli_env_free(&env);
    return code;
}

static const char token_usage[] =
    "usage: tessera token sweep [--json] [--config FILE]\n"
    "\n"
    "Runs one pass of the sweeper now: deletes expired /v1 tokens, keys and documents,\n"
    "sessions past their not_after, refresh tokens used more than REFRESH_TOKEN_KEEP ago and\n"
    "idle rate-limit counters, in batches of SWEEP_BATCH rows, and prints the counts. The\n"
    "server runs the same pass every SWEEP_INTERVAL; expiry is enforced at every check\n"
    "whatever the sweeper does.\n";

int cli_token(int argc, char **argv)
{
    struct cli_env env;
    bool done;
    int code = cli_load_config(&env, argc, argv, token_usage, &done);
    if (code || done) {
        ts_config_free(&env.cfg);
        return code;
    }
    char *pos[2] = {0};
    int n = positional(argc, argv, pos, 2);
    if (n != 1 || strcmp(pos[0], "sweep") != 0) {
        fputs(token_usage, stderr);
        ts_config_free(&env.cfg);
        return 2;
    }
    code = cli_bootstrap(&env);
    if (!code) {
        int64_t start = ts_mono_us(), now = ts_now_us();
        struct ts_sweep_counts c;
        enum ts_rc rc =
            ts_store_sweep_pass(env.store, now, now - env.cfg.refresh_token_keep * 1000000,
                                env.cfg.sweep_batch, 0, NULL, &c);
        if (rc) {
            fprintf(stderr, "tessera: sweep failed: %s\n", ts_rc_name(rc));
            code = 1;
        } else if (has_flag(argc, argv, "--json")) {
            printf("{\"tokens\":%lld,\"keys\":%lld,\"documents\":%lld,\"sessions\":%lld,"
                   "\"refresh_tokens\":%lld,\"exchanges\":%lld,\"counters\":%lld,\"ms\":%lld}\n",
                   (long long)c.tokens, (long long)c.keys, (long long)c.documents,
                   (long long)c.sessions, (long long)c.refresh_tokens, (long long)c.exchanges,
                   (long long)c.counters, (long long)((ts_mono_us() - start) / 1000));
        } else {
            printf("deleted: %lld tokens, %lld keys, %lld documents, %lld sessions, %lld refresh "
                   "tokens, %lld exchanges, %lld counters (%lld ms)\n",
                   (long long)c.tokens, (long long)c.keys, (long long)c.documents,
                   (long long)c.sessions, (long long)c.refresh_tokens, (long long)c.exchanges,
                   (long long)c.counters, (long long)((ts_mono_us() - start) / 1000));
        }
    }
    cli_env_free(&env);
    return code;
}

static const char jwt_usage[] =
    "usage: tessera jwt list [--config FILE]\n"
    "       tessera jwt rotate [--config FILE]\n"
    "       tessera jwt rewrap [--config FILE]\n"
    "\n"
    "list shows the ES256 signing keys, their state (next, active, retired) and how each is\n"
    "stored: \"sealed:ID\" (encrypted under the master key whose id is ID) or \"clear\".\n"
    "rotate promotes the next key (already published in the JWKS) to active, retires the\n"
    "active one (it keeps verifying for 7 days), and publishes a new next key. Running\n"
    "servers pick the change up within a second. With JWT_SECRET (HS256) there is nothing\n"
    "to rotate here: change the secret instead.\n"
    "rewrap encrypts every signing key under TESSERA_MASTER_KEY: keys in clear, and keys\n"
    "under TESSERA_MASTER_KEY_PREVIOUS during a master key rotation (docs/DEPLOYMENT.md),\n"
    "then lists them. A server does the same when it starts.\n";

int cli_jwt(int argc, char **argv)
{
    struct cli_env env;
    bool done;
    int code = cli_load_config(&env, argc, argv, jwt_usage, &done);
    if (code || done) {
        ts_config_free(&env.cfg);
        return code;
    }
    char *pos[2] = {0};
    int n = positional(argc, argv, pos, 2);
    if (n != 1 || (strcmp(pos[0], "list") != 0 && strcmp(pos[0], "rotate") != 0 &&
                   strcmp(pos[0], "rewrap") != 0)) {
        fputs(jwt_usage, stderr);
        ts_config_free(&env.cfg);
        return 2;
    }
    code = cli_bootstrap(&env);
    if (!code && env.cfg.jwt_secret[0]) {
        fprintf(stderr, "tessera: JWT_SECRET is set (HS256): there are no stored keys to %s\n",
                pos[0]);
        code = 2;
    }
    if (!code && strcmp(pos[0], "rewrap") == 0 && !env.master.set) {
        fprintf(stderr, "tessera: TESSERA_MASTER_KEY is not set: nothing to encrypt under\n");
        code = 2;
    }
    if (!code && strcmp(pos[0], "rotate") == 0) {
        struct ts_keys_config kc = cli_keys_config(&env);
        char *kid = NULL;
        enum ts_rc rc = ts_keys_rotate(env.store, &kc, &kid);
        if (rc) {
            fprintf(stderr, "tessera: rotation failed (%s)\n", ts_rc_name(rc));
            code = 1;
        } else {
            printf("active signing key is now %s\n", kid);
        }
        free(kid);
    } else if (!code) {
        struct ts_signing_key_row *rows = NULL;
        size_t nrows = 0;
        if (ts_store_signing_keys_list(env.store, &rows, &nrows) != TS_OK) {
            code = 1;
        } else {
            /* rewrap: cli_bootstrap's keyring has sealed every row it could open. */
            printf("%-16s  %-6s  %-8s  %-24s  %s\n", "kid", "alg", "state", "since", "at rest");
            for (size_t i = 0; i < nrows; i++) {
                char since[TS_TIME_STR_LEN];
                ts_time_format(rows[i].state_changed_at, since);
                const char *st = rows[i].state == TS_KEY_ACTIVE ? "active"
                                 : rows[i].state == TS_KEY_NEXT ? "next"
                                                                : "retired";
                char id[TS_MASTER_KEY_ID_LEN + 1], at_rest[32];
                if (ts_key_is_sealed(rows[i].private_pem, id))
                    snprintf(at_rest, sizeof(at_rest), "sealed:%s", id);
                else
                    snprintf(at_rest, sizeof(at_rest), "clear");
                printf("%-16s  %-6s  %-8s  %-24s  %s\n", rows[i].kid, rows[i].alg, st, since,
                       at_rest);
            }
            ts_signing_key_rows_free(rows, nrows);
        }
    }
    cli_env_free(&env);
    return code;
}

static const char import_usage[] =
    "usage: tessera import gotrue SOURCE_URL [--schema auth] [--config FILE]\n"
    "\n"
    "Copies the users of a GoTrue (Supabase Auth) database into this Tessera's database\n"
    "(DATABASE_URL): ids, e-mails, phones, confirmation and sign-in times, bans, metadata\n"
    "and bcrypt password hashes, which keep working (they are replaced by argon2id at each\n"
    "user's next sign-in). SOURCE_URL is a PostgreSQL URI (postgres://user:pw@host/db); the\n"
    "source is only read, in one consistent snapshot. Users that exist already are skipped,\n"
    "so the command can be run again. Identities of other providers (Google, GitHub...) are\n"
    "counted but not copied yet.\n";

int cli_import(int argc, char **argv)
{
    struct cli_env env;
    bool done;
    int code = cli_load_config(&env, argc, argv, import_usage, &done);
    if (code || done) {
        ts_config_free(&env.cfg);
        return code;
    }
    char *pos[3] = {0};
    const char *schema = flag_value(argc, argv, "--schema");
    int n = positional(argc, argv, pos, 3);
    if (schema && n > 2 && strcmp(pos[n - 1], schema) == 0)
        n--;
    if (n != 2 || strcmp(pos[0], "gotrue") != 0) {
        fputs(import_usage, stderr);
        ts_config_free(&env.cfg);
        return 2;
    }
    code = cli_bootstrap(&env);
    if (!code) {
        struct ts_import_stats st;
        char *err = NULL;
        enum ts_rc rc = ts_store_import_gotrue(env.store, pos[1], schema, &st, &err);
        if (rc) {
            fprintf(stderr, "tessera: import failed: %s\n", err ? err : ts_rc_name(rc));
            code = 1;
        } else {
            printf("imported %lld users (%lld with a password); skipped %lld that exist "
                   "already and %lld deleted ones",
                   (long long)st.users, (long long)st.passwords, (long long)st.skipped_existing,
                   (long long)st.skipped_deleted);
            if (st.unusable_hashes)
                printf("; %lld password hashes in an unknown format were left out",
                       (long long)st.unusable_hashes);
            if (st.other_identities)
                printf("; %lld identities of other providers were not copied",
                       (long long)st.other_identities);
            printf("\n");
        }
        free(err);
    }
    cli_env_free(&env);
    return code;
}

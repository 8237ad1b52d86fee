/*
 * config.c - the knob table and its loaders (see config.h).
 */
#include <ctype.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config.h"
#include "log.h"
#include "mem.h"
#include "util.h"

extern char **environ;

enum knob_type { K_STRING, K_SECRET, K_INT, K_BOOL, K_SECONDS, K_RATE };

struct knob {
    const char *name; /* without prefix */
    enum knob_type type;
    size_t offset;    /* into struct ts_config */
    const char *def;  /* default, in string form; "" = empty, NULL = computed */
    int64_t min, max; /* for K_INT and K_SECONDS */
    const char *help;
};

#define OFF(f) offsetof(struct ts_config, f)

static const struct knob knobs[] = {
    {"LISTEN", K_STRING, OFF(listen), "127.0.0.1:9999", 0, 0, "address and port to listen on"},
    {"DATABASE_URL", K_STRING, OFF(database_url), "sqlite://./tessera.db", 0, 0,
     "sqlite://PATH (relative), sqlite:///ABS/PATH, or a PostgreSQL URI postgres://..."},
    {"DATABASE_SCHEMA", K_STRING, OFF(database_schema), "tessera", 0, 0,
     "PostgreSQL only: the schema that holds Tessera's tables (created by migrate)"},
    {"DATABASE_DURABILITY", K_STRING, OFF(database_durability), "normal", 0, 0,
     "normal: every acknowledged write survives kill -9; full: also a power loss (fsync per "
     "commit)"},
    {"JWT_SECRET", K_SECRET, OFF(jwt_secret), "", 0, 0,
     "HS256 signing secret (at least 32 bytes); empty = ES256 keys kept in the database"},
    {"MASTER_KEY", K_SECRET, OFF(master_key), "", 0, 0,
     "32 random bytes (64 hex digits or base64: openssl rand -hex 32) that encrypt the signing "
     "keys in the database; empty = kept in clear (docs/DEPLOYMENT.md: setting and rotating it)"},
    {"MASTER_KEY_FILE", K_STRING, OFF(master_key_file), "", 0, 0,
     "a file holding MASTER_KEY (a mounted secret), instead of MASTER_KEY itself"},
    {"MASTER_KEY_PREVIOUS", K_SECRET, OFF(master_key_previous), "", 0, 0,
     "during a master key rotation: the old key, which only opens keys so that they are "
     "re-encrypted under MASTER_KEY"},
    {"JWT_EXP", K_INT, OFF(jwt_exp), "3600", 30, 7 * 24 * 3600, "access-token lifetime, seconds"},
    {"JWT_AUD", K_STRING, OFF(jwt_aud), "authenticated", 0, 0, "aud claim of user tokens"},
    {"JWT_ISSUER", K_STRING, OFF(jwt_issuer), "tessera", 0, 0,
     "iss claim of every token signed; tokens with another iss are refused"},
    {"JWT_ADMIN_ROLES", K_STRING, OFF(jwt_admin_roles), "service_role,supabase_admin", 0, 0,
     "roles (comma list) whose bearer JWT may use /admin"},
    {"JWT_DEFAULT_GROUP_NAME", K_STRING, OFF(jwt_default_group_name), "authenticated", 0, 0,
     "role given to new users"},
    {"SITE_URL", K_STRING, OFF(site_url), "http://localhost:3000", 0, 0,
     "the application's URL, default redirect target"},
    {"URI_ALLOW_LIST", K_STRING, OFF(uri_allow_list), "", 0, 0,
     "comma list of glob patterns accepted as redirect_to"},
    {"DISABLE_SIGNUP", K_BOOL, OFF(disable_signup), "false", 0, 0, "refuse new sign-ups"},
    {"MAILER_AUTOCONFIRM", K_BOOL, OFF(mailer_autoconfirm), "false", 0, 0,
     "confirm e-mail addresses at sign-up (no confirmation mail)"},
    {"EXTERNAL_EMAIL_ENABLED", K_BOOL, OFF(external_email_enabled), "true", 0, 0,
     "allow e-mail + password sign-up and sign-in"},
    {"EXTERNAL_ANONYMOUS_USERS_ENABLED", K_BOOL, OFF(external_anonymous_users_enabled), "false", 0,
     0, "allow anonymous sign-in (POST /signup with no e-mail or phone)"},
    {"PASSWORD_MIN_LENGTH", K_INT, OFF(password_min_length), "6", 6, 72,
     "minimum password length in characters (6 is also the floor)"},
    {"PASSWORD_REQUIRED_CHARACTERS", K_STRING, OFF(password_required_characters), "", 0, 0,
     "character sets separated by ':' of which a password must use one character each"},
    {"PASSWORD_BLOCKLIST", K_STRING, OFF(password_blocklist), "", 0, 0,
     "a file of breached passwords refused wherever a password is set (weak_password, reason "
     "pwned): Have I Been Pwned's SHA1:COUNT file ordered by hash, searched in place, or a "
     "plain list, one password per line; empty = none"},
    {"PASSWORD_CHANGE_REVOKES_SESSIONS", K_BOOL, OFF(password_change_revokes_sessions), "true", 0,
     0, "a password change through PUT /user ends the user's other sessions"},
    {"SECURITY_REFRESH_TOKEN_ROTATION_ENABLED", K_BOOL, OFF(refresh_token_rotation_enabled), "true",
     0, 0, "reuse of a rotated refresh token past the interval revokes its session"},
    {"SECURITY_REFRESH_TOKEN_REUSE_INTERVAL", K_SECONDS, OFF(refresh_token_reuse_interval), "10", 0,
     86400, "seconds during which a rotated refresh token may still be used"},
    {"PASSWORD_HASH_WORKERS", K_INT, OFF(password_hash_workers), NULL, 1, 256,
     "password-hashing threads (default: the number of cores)"},
    {"PASSWORD_HASH_QUEUE", K_INT, OFF(password_hash_queue), "64", 1, 100000,
     "hash jobs that may wait for a worker; beyond, 429 over_request_rate_limit"},
    {"PASSWORD_HASH_MEMORY_KIB", K_INT, OFF(password_hash_memory_kib), "19456", 8, 4194304,
     "argon2id memory cost m, KiB"},
    {"PASSWORD_HASH_ITERATIONS", K_INT, OFF(password_hash_iterations), "2", 1, 100,
     "argon2id time cost t"},
    {"PASSWORD_HASH_NICE", K_INT, OFF(password_hash_nice), "10", 0, 19,
     "niceness of the hash workers: above 0, token checks win the CPU during a login storm"},
    {"HTTP_THREADS", K_INT, OFF(http_threads), NULL, 1, 256,
     "HTTP threads, each polling its share of connections (default: the number of cores)"},
    {"HTTP_MAX_BODY", K_INT, OFF(http_max_body), "1048576", 1024, 64 * 1048576LL,
     "largest request body in bytes; 413 beyond"},
    {"HTTP_MAX_HEADER_BYTES", K_INT, OFF(http_max_header_bytes), "16384", 4096, 1048576,
     "memory for one connection's request line and headers; 431 beyond (libmicrohttpd "
     "zeroes it for every request, so bigger costs time)"},
    {"HTTP_CONNECTION_TIMEOUT", K_SECONDS, OFF(http_connection_timeout), "30", 1, 3600,
     "seconds a connection may stay silent before it is closed"},
    {"HTTP_HEADER_TIMEOUT", K_SECONDS, OFF(http_header_timeout), "10", 0, 3600,
     "seconds a client has to send a request's headers, from its connection's accept or the end "
     "of the previous response, however steadily it sends (slowloris); 0 = no such deadline"},
    {"HTTP_MAX_CONNECTIONS", K_INT, OFF(http_max_connections), "10000", 16, 1000000,
     "concurrent connections accepted"},
    {"HTTP_EVENT_LOOP", K_STRING, OFF(http_event_loop), "poll", 0, 0,
     "poll or epoll; poll is the default because libmicrohttpd 0.9.75's epoll loop can stall "
     "(docs/internals/http.md)"},
    {"CORS_ALLOWED_ORIGINS", K_STRING, OFF(cors_allowed_origins), "*", 0, 0,
     "origins allowed by CORS: * or a comma list"},
    {"TOKEN_DEFAULT_TTL", K_SECONDS, OFF(token_default_ttl), "720h", 1, 100LL * 365 * 86400,
     "lifetime of a /v1 token created without ttl (Fauna had no default: tokens lived forever)"},
    {"TOKEN_MAX_TTL", K_SECONDS, OFF(token_max_ttl), "2160h", 1, 100LL * 365 * 86400,
     "the longest ttl a /v1 token may be given; longer requests get 400"},
    {"SWEEP_INTERVAL", K_SECONDS, OFF(sweep_interval), "60s", 0, 86400,
     "seconds between passes of the sweeper that deletes expired tokens, keys, documents, "
     "sessions and old refresh tokens; 0 turns it off (expiry is enforced regardless)"},
    {"SWEEP_BATCH", K_INT, OFF(sweep_batch), "1000", 1, 100000,
     "rows the sweeper deletes per transaction"},
    {"REFRESH_TOKEN_KEEP", K_SECONDS, OFF(refresh_token_keep), "168h", 60, 10LL * 365 * 86400,
     "how long a used refresh token is kept, so that its reuse is still recognised"},
    {"API_EXTERNAL_URL", K_STRING, OFF(api_external_url), "http://localhost:9999", 0, 0,
     "this instance's public URL: the audience external JWTs must name by default"},
    {"AUTHZ_MAX_FETCHES", K_INT, OFF(authz_max_fetches), "4", 1, 64,
     "distinct documents one decision's predicates may read (get, exists, lookup)"},
    {"GATEWAY_ROUTES", K_STRING, OFF(gateway_routes), "", 0, 0,
     "a JSON file of route rules for /v1/authz/gateway ([{\"route\": \"GET /posts/{id}\", "
     "\"resource\": \"collections/posts/{id}\", \"action\": \"read\"}...]); empty: none"},
    {"GATEWAY_METHOD_HEADER", K_STRING, OFF(gateway_method_header), "X-Original-Method", 0, 0,
     "the header that carries the original request's method to /v1/authz/gateway"},
    {"GATEWAY_URI_HEADER", K_STRING, OFF(gateway_uri_header), "X-Original-URI", 0, 0,
     "the header that carries the original request's URI to /v1/authz/gateway"},
    {"RATE_LIMIT_HEADER", K_STRING, OFF(rate_limit_header), "", 0, 0,
     "the header a trusted reverse proxy sets to the client's address (read from the right, "
     "past the addresses in RATE_LIMIT_EXEMPT); empty: the peer address. Never set it without "
     "such a proxy in front"},
    {"RATE_LIMIT_EXEMPT", K_STRING, OFF(rate_limit_exempt), "127.0.0.0/8,::1", 0, 0,
     "comma list of client networks (CIDR) the per-address limits skip: a local proxy's or a "
     "health checker's address, which stands for every client behind it"},
    {"RATE_LIMIT_TOKEN_REFRESH", K_RATE, OFF(rate_limit_token), "150/5m,30", 0, 0,
     "per client address: POST /token (every grant), /v1/login, /v1/identify, /v1/oauth/token"},
    {"RATE_LIMIT_OTP", K_RATE, OFF(rate_limit_otp), "30/5m,30", 0, 0,
     "per client address: sign-ups with an e-mail or phone, and PUT /user changing the e-mail, "
     "phone or password"},
    {"RATE_LIMIT_ANONYMOUS_USERS", K_RATE, OFF(rate_limit_anonymous), "30/1h,30", 0, 0,
     "per client address: anonymous sign-ins"},
    {"RATE_LIMIT_ACCOUNT", K_RATE, OFF(rate_limit_account), "600/5m,100", 0, 0,
     "per account (e-mail or identity), from any address: password checks and sign-ups naming "
     "it"},
    {"RATE_LIMIT_KEY", K_RATE, OFF(rate_limit_key), "6000/1m,1000", 0, 0,
     "per API key: /v1/login, /v1/identify and /v1/oauth/token calls made with it"},
    {"RATE_LIMIT_PROFILE_DEFAULT", K_INT, OFF(rate_limit_profile_default), "1000", 0, 1000000,
     "requests per second per identity on /v1 when none of its profiles sets rate_limit (a "
     "profile's null inherits the default profile's, then this); 0 = unlimited; per node"},
    {"PASSWORD_LOCKOUT_ATTEMPTS", K_INT, OFF(password_lockout_attempts), "20", 0, 1000000,
     "failed password checks an account may have in PASSWORD_LOCKOUT_WINDOW before it is "
     "locked until the window ends; 0 = no lockout"},
    {"PASSWORD_LOCKOUT_WINDOW", K_SECONDS, OFF(password_lockout_window), "15m", 1, 86400,
     "the lockout window; each lockout within a day doubles it, up to PASSWORD_LOCKOUT_MAX"},
    {"PASSWORD_LOCKOUT_MAX", K_SECONDS, OFF(password_lockout_max), "24h", 1, 30 * 86400,
     "the longest a lockout window may grow to"},
    {"LOG_LEVEL", K_STRING, OFF(log_level), "info", 0, 0, "debug, info, warn or error"},
    {"LOG_REQUESTS", K_BOOL, OFF(log_requests), "true", 0, 0, "one JSON log line per request"},
};

static const struct knob *find_knob(const char *name)
{
    for (size_t i = 0; i < TS_ARRAY_LEN(knobs); i++)
        if (strcmp(knobs[i].name, name) == 0)
            return &knobs[i];
    return NULL;
}

/* EXTERNAL_<NAME>_<FIELD>: one of a handful of providers named by the operator. */
static enum ts_rc apply_external(struct ts_config *c, const char *name, const char *value,
                                 const char *origin, char **err)
{
    static const char *const fields[] = {"_CLIENT_ID", "_JWKS_URI", "_REDIRECT_URI", "_ENABLED",
                                         "_ISSUER",    "_SECRET",   "_URL"};
    const char *rest = name + 9; /* after EXTERNAL_ */
    size_t len = strlen(rest);
    for (size_t f = 0; f < TS_ARRAY_LEN(fields); f++) {
        size_t fl = strlen(fields[f]);
        if (len <= fl || strcmp(rest + len - fl, fields[f]) != 0)
            continue;
        size_t nl = len - fl;
        if (nl >= sizeof(c->externals[0].name)) {
            *err = ts_xasprintf("%s: provider name too long", origin);
            return TS_E_INVALID;
        }
        char pname[sizeof(c->externals[0].name)];
        for (size_t i = 0; i < nl; i++)
            pname[i] = (char)tolower((unsigned char)rest[i]);
        pname[nl] = '\0';
        struct ts_external_cfg *e = NULL;
        for (int i = 0; i < c->n_externals && !e; i++)
            if (strcmp(c->externals[i].name, pname) == 0)
                e = &c->externals[i];
        if (!e) {
            if (c->n_externals == TS_CONFIG_MAX_EXTERNAL) {
                *err = ts_xasprintf("%s: at most %d external providers", origin,
                                    TS_CONFIG_MAX_EXTERNAL);
                return TS_E_INVALID;
            }
            e = &c->externals[c->n_externals++];
            memset(e, 0, sizeof(*e));
            snprintf(e->name, sizeof(e->name), "%s", pname);
            e->enabled = true;
        }
        char **dst = NULL;
        if (strcmp(fields[f], "_ENABLED") == 0) {
            if (ts_parse_bool(value, &e->enabled) != TS_OK) {
                *err = ts_xasprintf("%s: expected true or false", origin);
                return TS_E_INVALID;
            }
        } else if (strcmp(fields[f], "_ISSUER") == 0 || strcmp(fields[f], "_URL") == 0) {
            dst = &e->issuer;
        } else if (strcmp(fields[f], "_CLIENT_ID") == 0) {
            dst = &e->client_id;
        } else if (strcmp(fields[f], "_JWKS_URI") == 0) {
            dst = &e->jwks_uri;
        } /* _SECRET, _REDIRECT_URI: the OAuth code flow's, not used by the id_token grant */
        if (dst) {
            free(*dst);
            *dst = ts_xstrdup(value);
        }
        return TS_OK;
    }
    *err = ts_xasprintf("%s: unknown setting (EXTERNAL_<NAME>_ENABLED, _ISSUER, _CLIENT_ID, "
                        "_JWKS_URI)",
                        origin);
    return TS_E_INVALID;
}

static bool is_external(const char *name)
{
    return strncmp(name, "EXTERNAL_", 9) == 0 && strcmp(name, "EXTERNAL_EMAIL_ENABLED") != 0 &&
           strcmp(name, "EXTERNAL_ANONYMOUS_USERS_ENABLED") != 0;
}

static char **str_field(struct ts_config *c, const struct knob *k)
{
    return (char **)((char *)c + k->offset);
}

/*
 * A rate: "COUNT" (keeps the period, burst at most COUNT), "COUNT/PERIOD" or
 * "COUNT/PERIOD,BURST", PERIOD a duration ("5m", "1h", "30s"); "0" turns the limit off.
 * A bare count is GoTrue's form (GOTRUE_RATE_LIMIT_TOKEN_REFRESH=150: per five minutes).
 */
static enum ts_rc parse_rate(struct ts_rate *r, const char *value, const char *origin, char **err)
{
    char buf[64];
    snprintf(buf, sizeof(buf), "%s", value);
    char *slash = strchr(buf, '/');
    char *comma = strchr(buf, ',');
    if (slash)
        *slash = '\0';
    if (comma)
        *comma = '\0';
    struct ts_rate v = *r;
    int64_t period_us = 0;
    bool ok = strlen(value) < sizeof(buf) && (!comma || slash) &&
              ts_parse_i64(buf, 0, 1000000000, &v.count) == TS_OK;
    if (ok && slash)
        ok = ts_duration_parse(slash + 1, &period_us) == TS_OK && period_us >= 1000000 &&
             period_us <= INT64_C(30) * 86400 * 1000000 && period_us % 1000000 == 0;
    if (ok && slash)
        v.period_s = period_us / 1000000;
    if (ok && comma)
        ok = ts_parse_i64(comma + 1, 1, 1000000, &v.burst) == TS_OK;
    else if (ok && v.count > 0 && (v.burst <= 0 || v.burst > v.count))
        v.burst = v.count;
    /* a full bucket's worth of time must stay within the store's counters (2^61 us) */
    if (ok && v.count > 0)
        ok = v.burst <= (INT64_C(1) << 61) / (v.period_s * 1000000 / v.count + 1);
    if (!ok) {
        *err =
            ts_xasprintf("%s: expected COUNT, COUNT/PERIOD or COUNT/PERIOD,BURST (\"150/5m,30\"; "
                         "0 = off)",
                         origin);
        return TS_E_INVALID;
    }
    *r = v;
    return TS_OK;
}

static enum ts_rc apply(struct ts_config *c, const struct knob *k, const char *value,
                        const char *origin, char **err)
{
    char *base = (char *)c + k->offset;
    switch (k->type) {
    case K_STRING:
    case K_SECRET: {
        char **f = str_field(c, k);
        free(*f);
        *f = ts_xstrdup(value);
        return TS_OK;
    }
    case K_INT: {
        int64_t v;
        if (ts_parse_i64(value, k->min, k->max, &v) != TS_OK) {
            *err = ts_xasprintf("%s: expected an integer between %lld and %lld", origin,
                                (long long)k->min, (long long)k->max);
            return TS_E_INVALID;
        }
        *(int64_t *)(void *)base = v;
        return TS_OK;
    }
    case K_SECONDS: {
        int64_t us;
        if (ts_duration_parse(value, &us) != TS_OK || us % 1000000 != 0 || us / 1000000 < k->min ||
            us / 1000000 > k->max) {
            *err = ts_xasprintf("%s: expected whole seconds between %lld and %lld (\"10\" or "
                                "\"10s\")",
                                origin, (long long)k->min, (long long)k->max);
            return TS_E_INVALID;
        }
        *(int64_t *)(void *)base = us / 1000000;
        return TS_OK;
    }
    case K_RATE:
        return parse_rate((struct ts_rate *)(void *)base, value, origin, err);
    case K_BOOL: {
        bool v;
        if (ts_parse_bool(value, &v) != TS_OK) {
            *err = ts_xasprintf("%s: expected true or false", origin);
            return TS_E_INVALID;
        }
        *(bool *)(void *)base = v;
        return TS_OK;
    }
    }
    return TS_E_INTERNAL;
}

static enum ts_rc validate(struct ts_config *c, char **err)
{
    /* GoTrue's logrus names are accepted too, in any case (GOTRUE_LOG_LEVEL=DEBUG). */
    static const struct {
        const char *name, *level;
    } levels[] = {{"trace", "debug"},  {"debug", "debug"}, {"info", "info"},   {"warn", "warn"},
                  {"warning", "warn"}, {"error", "error"}, {"fatal", "error"}, {"panic", "error"}};
    const char *level = NULL;
    for (size_t i = 0; i < TS_ARRAY_LEN(levels) && !level; i++)
        if (strcasecmp(c->log_level, levels[i].name) == 0)
            level = levels[i].level;
    if (!level) {
        *err = ts_xstrdup("TESSERA_LOG_LEVEL: expected debug, info, warn or error");
        return TS_E_INVALID;
    }
    free(c->log_level);
    c->log_level = ts_xstrdup(level);
    if (strcmp(c->http_event_loop, "poll") != 0 && strcmp(c->http_event_loop, "epoll") != 0) {
        *err = ts_xstrdup("TESSERA_HTTP_EVENT_LOOP: expected poll or epoll");
        return TS_E_INVALID;
    }
    if (strcmp(c->database_durability, "normal") != 0 &&
        strcmp(c->database_durability, "full") != 0) {
        *err = ts_xstrdup("TESSERA_DATABASE_DURABILITY: expected normal or full");
        return TS_E_INVALID;
    }
    if (c->jwt_secret[0] && strlen(c->jwt_secret) < 32) {
        *err = ts_xstrdup("TESSERA_JWT_SECRET: must be at least 32 bytes (RFC 7518 §3.2)");
        return TS_E_INVALID;
    }
    if (!strchr(c->listen, ':')) {
        *err = ts_xstrdup("TESSERA_LISTEN: expected HOST:PORT");
        return TS_E_INVALID;
    }
    if (!c->jwt_aud[0] || !c->jwt_issuer[0]) {
        *err = ts_xstrdup("TESSERA_JWT_AUD and TESSERA_JWT_ISSUER must not be empty");
        return TS_E_INVALID;
    }
    return TS_OK;
}

void ts_config_defaults(struct ts_config *c)
{
    memset(c, 0, sizeof(*c));
    char cores[16];
    snprintf(cores, sizeof(cores), "%d", ts_cpu_count());
    for (size_t i = 0; i < TS_ARRAY_LEN(knobs); i++) {
        char *err = NULL;
        const char *def = knobs[i].def ? knobs[i].def : cores;
        if (apply(c, &knobs[i], def, knobs[i].name, &err) != TS_OK)
            ts_assert_fail(err, __FILE__, __LINE__);
    }
}

enum ts_rc ts_config_set(struct ts_config *c, const char *name, const char *value, char **err)
{
    const struct knob *k = find_knob(name);
    if (!k && is_external(name)) {
        char origin[160];
        snprintf(origin, sizeof(origin), "TESSERA_%s", name);
        return apply_external(c, name, value, origin, err);
    }
    if (!k) {
        *err = ts_xasprintf("unknown setting %s", name);
        return TS_E_INVALID;
    }
    char origin[128];
    snprintf(origin, sizeof(origin), "TESSERA_%s", name);
    return apply(c, k, value, origin, err);
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

static enum ts_rc load_file(struct ts_config *c, const char *path, char **err)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        *err = ts_xasprintf("--config %s: cannot open", path);
        return TS_E_INVALID;
    }
    char line[4096];
    int lineno = 0;
    enum ts_rc rc = TS_OK;
    while (fgets(line, sizeof(line), f)) {
        lineno++;
        if (!strchr(line, '\n') && !feof(f)) {
            *err = ts_xasprintf("%s:%d: line too long", path, lineno);
            rc = TS_E_INVALID;
            break;
        }
        char *s = trim(line);
        if (!*s || *s == '#')
            continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            *err = ts_xasprintf("%s:%d: expected KEY=VALUE", path, lineno);
            rc = TS_E_INVALID;
            break;
        }
        *eq = '\0';
        char *key = trim(s), *val = trim(eq + 1);
        size_t vl = strlen(val);
        if (vl >= 2 && (val[0] == '"' || val[0] == '\'') && val[vl - 1] == val[0]) {
            val[vl - 1] = '\0';
            val++;
        }
        const char *name = key;
        if (strncmp(name, "TESSERA_", 8) == 0)
            name += 8;
        else if (strncmp(name, "GOTRUE_", 7) == 0)
            name += 7;
        const struct knob *k = find_knob(name);
        if (!k && is_external(name)) {
            char origin[256];
            snprintf(origin, sizeof(origin), "%s:%d: %s", path, lineno, key);
            rc = apply_external(c, name, val, origin, err);
            if (rc)
                break;
            continue;
        }
        if (!k) {
            *err = ts_xasprintf("%s:%d: unknown setting %s", path, lineno, key);
            rc = TS_E_INVALID;
            break;
        }
        char origin[256];
        snprintf(origin, sizeof(origin), "%s:%d: %s", path, lineno, key);
        rc = apply(c, k, val, origin, err);
        if (rc)
            break;
    }
    fclose(f);
    return rc;
}

/* Applies every environment variable with the given prefix; unknown ones are fatal or warned. */
static enum ts_rc load_env(struct ts_config *c, const char *prefix, bool strict, char **err)
{
    size_t plen = strlen(prefix);
    for (char **e = environ; e && *e; e++) {
        if (strncmp(*e, prefix, plen) != 0)
            continue;
        const char *eq = strchr(*e, '=');
        if (!eq)
            continue;
        char name[128];
        size_t nlen = (size_t)(eq - *e) - plen;
        if (nlen >= sizeof(name))
            nlen = sizeof(name) - 1;
        memcpy(name, *e + plen, nlen);
        name[nlen] = '\0';
        const struct knob *k = find_knob(name);
        /* GoTrue reads its database from DB_DATABASE_URL as well. */
        if (!k && strcmp(name, "DB_DATABASE_URL") == 0)
            k = find_knob("DATABASE_URL");
        if (!k && !strict && strcmp(name, "API_HOST") == 0)
            continue; /* taken by load_gotrue_listen */
        if (!k && is_external(name)) {
            char origin[160];
            snprintf(origin, sizeof(origin), "%s%s", prefix, name);
            enum ts_rc rc = apply_external(c, name, eq + 1, origin, err);
            if (rc && !strict) { /* GoTrue's other EXTERNAL_ settings: not ours */
                ts_log_warn("%s%s is not a Tessera setting; ignored", prefix, name);
                free(*err);
                *err = NULL;
                continue;
            }
            if (rc)
                return rc;
            continue;
        }
        if (!k) {
            if (strict) {
                *err =
                    ts_xasprintf("%s%s: unknown setting (see tessera serve --help)", prefix, name);
                return TS_E_INVALID;
            }
            ts_log_warn("%s%s is not a Tessera setting; ignored", prefix, name);
            continue;
        }
        char origin[160];
        snprintf(origin, sizeof(origin), "%s%s", prefix, name);
        enum ts_rc rc = apply(c, k, eq + 1, origin, err);
        if (rc)
            return rc;
    }
    return TS_OK;
}

/* GoTrue listens on GOTRUE_API_HOST and the unprefixed PORT (its docker images set both);
 * honour them when LISTEN is not given, so that a GoTrue deployment keeps its address. */
static enum ts_rc load_gotrue_listen(struct ts_config *c, char **err)
{
    const char *host = getenv("GOTRUE_API_HOST");
    const char *port = getenv("PORT");
    if ((!host || !*host) && (!port || !*port))
        return TS_OK;
    int64_t p = 9999;
    if (port && *port && ts_parse_i64(port, 1, 65535, &p) != TS_OK) {
        *err = ts_xstrdup("PORT: expected a port number");
        return TS_E_INVALID;
    }
    if (!host || !*host)
        host = "0.0.0.0";
    free(c->listen);
    c->listen = strchr(host, ':') ? ts_xasprintf("[%s]:%lld", host, (long long)p)
                                  : ts_xasprintf("%s:%lld", host, (long long)p);
    return TS_OK;
}

enum ts_rc ts_config_load(struct ts_config *c, const char *file, char **err)
{
    enum ts_rc rc = TS_OK;
    if (file)
        rc = load_file(c, file, err);
    if (!rc)
        rc = load_gotrue_listen(c, err);
    if (!rc)
        rc = load_env(c, "GOTRUE_", false, err);
    if (!rc)
        rc = load_env(c, "TESSERA_", true, err);
    if (!rc)
        rc = validate(c, err);
    return rc;
}

void ts_config_print_help(FILE *out)
{
    fprintf(out, "Settings (environment TESSERA_<NAME>, also GOTRUE_<NAME>, or NAME=VALUE lines "
                 "in --config FILE):\n\n");
    for (size_t i = 0; i < TS_ARRAY_LEN(knobs); i++) {
        const struct knob *k = &knobs[i];
        const char *def = k->def ? (k->def[0] ? k->def : "(empty)") : "(number of cores)";
        fprintf(out, "  TESSERA_%-40s default %s\n      %s\n", k->name, def, k->help);
    }
    fprintf(out, "\nExternal OpenID providers for the id_token grant (signInWithIdToken), any "
                 "<NAME>:\n"
                 "  TESSERA_EXTERNAL_<NAME>_ENABLED    true once the provider is named\n"
                 "  TESSERA_EXTERNAL_<NAME>_ISSUER     the exact iss (google and apple have "
                 "defaults)\n"
                 "  TESSERA_EXTERNAL_<NAME>_CLIENT_ID  comma list of audiences accepted\n"
                 "  TESSERA_EXTERNAL_<NAME>_JWKS_URI   empty: OIDC discovery from the issuer\n");
}

void ts_config_free(struct ts_config *c)
{
    for (int i = 0; i < c->n_externals; i++) {
        free(c->externals[i].issuer);
        free(c->externals[i].client_id);
        free(c->externals[i].jwks_uri);
    }
    c->n_externals = 0;
    for (size_t i = 0; i < TS_ARRAY_LEN(knobs); i++) {
        if (knobs[i].type == K_STRING || knobs[i].type == K_SECRET) {
            char **f = str_field(c, &knobs[i]);
            if (knobs[i].type == K_SECRET && *f)
                ts_wipe(*f, strlen(*f));
            free(*f);
            *f = NULL;
        }
    }
}

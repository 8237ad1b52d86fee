/*
 * config.h - every knob of the server in one table (Redis's static_configs[]).
 *
 * Each knob is read from, in increasing precedence: its default, the --config
 * file (KEY=VALUE lines, '#' comments, names with or without the TESSERA_ prefix),
 * GOTRUE_<NAME> in the environment, then TESSERA_<NAME>. A malformed value, an
 * unknown key in the file or an unknown TESSERA_* variable stops the start with a
 * message naming it. Unknown GOTRUE_* variables are only warned about, so that a
 * GoTrue deployment can switch images without pruning its environment first.
 */
#ifndef TS_CORE_CONFIG_H
#define TS_CORE_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "rc.h"

/* An external OpenID provider for GoTrue's id_token grant (EXTERNAL_<NAME>_*). */
struct ts_external_cfg {
    char name[32];   /* <NAME> lower-cased: the "provider" of signInWithIdToken */
    bool enabled;    /* EXTERNAL_<NAME>_ENABLED (default true once anything is set) */
    char *issuer;    /* EXTERNAL_<NAME>_ISSUER (or _URL); google and apple have defaults */
    char *client_id; /* EXTERNAL_<NAME>_CLIENT_ID: comma list of accepted audiences */
    char *jwks_uri;  /* EXTERNAL_<NAME>_JWKS_URI; empty: OIDC discovery from the issuer */
};

#define TS_CONFIG_MAX_EXTERNAL 16

/* A rate limit: count requests per period_s seconds, at most burst at once; count 0 = off. */
struct ts_rate {
    int64_t count;
    int64_t period_s;
    int64_t burst;
};

struct ts_config {
    char *listen;                 /* "host:port" to bind */
    char *database_url;           /* sqlite://PATH, sqlite:///ABS/PATH or postgres://... */
    char *jwt_secret;             /* HS256 secret; empty = ES256 keys kept in the database */
    char *master_key;             /* seals signing keys at rest (authn.h); empty = in clear */
    char *master_key_file;        /* a file holding master_key instead */
    char *master_key_previous;    /* during a master key rotation: opens, never seals */
    int64_t jwt_exp;              /* access-token lifetime, seconds */
    char *jwt_aud;                /* aud of user access tokens */
    char *jwt_issuer;             /* iss of every token we sign, required on verify */
    char *jwt_admin_roles;        /* comma list of roles that may use /admin */
    char *jwt_default_group_name; /* role of new users */
    char *site_url;               /* where redirects go by default */
    char *uri_allow_list;         /* comma list of glob patterns allowed as redirect_to */
    bool disable_signup;
    bool mailer_autoconfirm;
    bool external_email_enabled;
    bool external_anonymous_users_enabled;
    int64_t password_min_length;
    char *password_required_characters;    /* GoTrue's ':'-separated character sets */
    char *password_blocklist;              /* file of breached passwords; "" = none */
    bool password_change_revokes_sessions; /* PUT /user password change ends other sessions */
    bool refresh_token_rotation_enabled;
    int64_t refresh_token_reuse_interval; /* seconds */
    int64_t password_hash_workers;
    int64_t password_hash_queue;      /* jobs waiting beyond the busy workers */
    int64_t password_hash_memory_kib; /* argon2id m */
    int64_t password_hash_iterations; /* argon2id t */
    int64_t password_hash_nice;       /* niceness of the hash workers, 0..19 */
    int64_t http_threads;
    int64_t http_max_body;           /* bytes; 413 beyond */
    int64_t http_max_header_bytes;   /* per-connection header memory */
    int64_t http_connection_timeout; /* seconds of silence before a connection is closed */
    int64_t http_header_timeout;     /* seconds to send a request's headers; 0 = no limit */
    int64_t http_max_connections;
    char *http_event_loop;       /* "poll" or "epoll" (libmicrohttpd's internal loop) */
    char *cors_allowed_origins;  /* "*" or a comma list */
    char *database_schema;       /* PostgreSQL schema holding Tessera's tables */
    char *database_durability;   /* "normal" (survives kill -9) or "full" (power loss) */
    int64_t token_default_ttl;   /* seconds: /v1 tokens created without ttl */
    int64_t token_max_ttl;       /* seconds: the longest ttl a /v1 token may ask for */
    int64_t sweep_interval;      /* seconds between sweeper passes; 0 = no sweeper */
    int64_t sweep_batch;         /* rows per sweeper transaction */
    int64_t refresh_token_keep;  /* seconds a used refresh token is kept (reuse detection) */
    char *api_external_url;      /* this instance's public URL (default audience of providers) */
    int64_t authz_max_fetches;   /* documents one decision's predicates may read */
    char *gateway_routes;        /* JSON file of /v1/authz/gateway route rules; "" = none */
    char *gateway_method_header; /* where the gateway finds the original method */
    char *gateway_uri_header;    /* ... and the original URI */
    char *rate_limit_header;     /* trusted proxy's client-address header; "" = peer */
    char *rate_limit_exempt;     /* CIDR list the per-address limits skip */
    struct ts_rate rate_limit_token;     /* per address: /token, /v1/login, identify, oauth */
    struct ts_rate rate_limit_otp;       /* per address: sign-ups, PUT /user secrets */
    struct ts_rate rate_limit_anonymous; /* per address: anonymous sign-ins */
    struct ts_rate rate_limit_account;   /* per account: password checks, sign-ups */
    struct ts_rate rate_limit_key;       /* per API key: login, identify, minting */
    int64_t rate_limit_profile_default;  /* req/s per identity when no profile sets one */
    int64_t password_lockout_attempts;   /* failures per window; 0 = no lockout */
    int64_t password_lockout_window;     /* seconds; doubles per lockout within a day */
    int64_t password_lockout_max;        /* seconds: the longest window */
    char *log_level;                     /* debug, info, warn, error */
    bool log_requests;                   /* one JSON line per request */
    struct ts_external_cfg externals[TS_CONFIG_MAX_EXTERNAL];
    int n_externals;
};

/* Fills c with the defaults (heap strings owned by c). */
void ts_config_defaults(struct ts_config *c);

/*
 * Applies file (may be NULL) and then the environment on top of c's current values.
 * On error returns TS_E_INVALID and sets *err to a heap message naming the knob.
 */
TS_NODISCARD enum ts_rc ts_config_load(struct ts_config *c, const char *file, char **err);

/* Sets one knob by name (without prefix) from its string form; for tests and the CLI. */
TS_NODISCARD enum ts_rc ts_config_set(struct ts_config *c, const char *name, const char *value,
                                      char **err);

/* Prints every knob, its default and its meaning (serve --help). */
void ts_config_print_help(FILE *out);

/* Frees the strings owned by c. */
void ts_config_free(struct ts_config *c);

#endif

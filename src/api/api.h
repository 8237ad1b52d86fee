/*
 * api.h - the HTTP API: GoTrue's endpoints (served at / and /auth/v1/), health,
 * readiness, metrics and JWKS. The only module that wires the others together.
 *
 * Contract: ../shared/reference/gotrue-api.md; every endpoint is listed in
 * docs/API.md. Must never: answer a client error with a 5xx, put a secret in a log
 * line or an error message, or skip the session check on an authenticated request.
 */
#ifndef TS_API_H
#define TS_API_H

#include "authn/authn.h"
#include "core/core.h"
#include "http/http.h"
#include "store/store.h"

struct ts_api_deps {
    const struct ts_config *cfg;
    struct ts_store *store;
    struct ts_keyring *keyring;
    struct ts_hashpool *hashpool;
};

struct ts_api;

struct ts_api *ts_api_new(const struct ts_api_deps *deps);
void ts_api_free(struct ts_api *api);
/* Reads the files the configuration names (GATEWAY_ROUTES, PASSWORD_BLOCKLIST); TS_E_INVALID
 * with *err (heap, for the operator) when one is unusable. Call before serving. */
TS_NODISCARD enum ts_rc ts_api_load_files(struct ts_api *api, char **err);

/* Fills the routing and hook fields of opt (routes, handlers, prefix, app). */
void ts_api_http_options(struct ts_api *api, struct ts_http_options *opt);

#endif

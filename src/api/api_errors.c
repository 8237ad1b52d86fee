/*
 * api_errors.c - error answers in the two shapes auth-js understands
 * (gotrue-api.md §1): {code, message} plus X-Supabase-Api-Version and
 * x-sb-error-code when the request carried the version header, the legacy
 * {code: <status>, error_code, msg} otherwise.
 */
#include <string.h>

#include "api_int.h"

static const struct {
    int status;
    const char *code;
    const char *msg;
} errors[] = {
#define API_ERROR_ROW(id, status, code, msg) {status, code, msg},
    API_ERROR_TABLE(API_ERROR_ROW)
#undef API_ERROR_ROW
};

static json_t *error_body(struct ts_http_req *req, enum api_error e, int status, const char *msg)
{
    struct api_req *ar = api_req(req);
    if (!msg)
        msg = errors[e].msg;
    if (ar->versioned) {
        ts_http_add_header(req, "x-sb-error-code", errors[e].code);
        return json_pack("{s:s, s:s}", "code", errors[e].code, "message", msg);
    }
    return json_pack("{s:i, s:s, s:s}", "code", status, "error_code", errors[e].code, "msg", msg);
}

void api_error_status(struct ts_http_req *req, enum api_error e, int status, const char *msg)
{
    api_json(req, status, error_body(req, e, status, msg));
}

void api_error(struct ts_http_req *req, enum api_error e, const char *msg)
{
    api_error_status(req, e, errors[e].status, msg);
}

void api_weak_password(struct ts_http_req *req, const char *reason, const char *msg)
{
    json_t *body = error_body(req, ERR_WEAK_PASSWORD, 422, msg);
    json_object_set_new(body, "weak_password",
                        json_pack("{s:[s], s:s}", "reasons", reason, "message", msg));
    api_json(req, 422, body);
}

void api_oauth_error(struct ts_http_req *req, const char *error, const char *description)
{
    api_json(req, 400, json_pack("{s:s, s:s}", "error", error, "error_description", description));
}

void api_fail(struct ts_http_req *req, enum ts_rc rc, const char *what)
{
    if (rc == TS_E_UNAVAILABLE) {
        ts_log_warn("%s: storage unavailable", what);
        ts_http_add_header(req, "Retry-After", "1");
        api_error(req, ERR_SERVICE_UNAVAILABLE, NULL);
        return;
    }
    if (rc == TS_E_BUSY) {
        ts_http_add_header(req, "Retry-After", "1");
        api_error(req, ERR_OVER_REQUEST_RATE_LIMIT,
                  "Too many password checks in progress, "
                  "please retry");
        return;
    }
    ts_log_error("%s: %s", what, ts_rc_name(rc));
    api_error(req, ERR_UNEXPECTED_FAILURE, NULL);
}

/*
 * limit.h - abuse controls: rate limits per client address, account and API key, account
 * lockout after failed password checks, and per-node request budgets per identity.
 *
 * Address, account and key limits are token buckets kept in the store (ts_store_bucket_take),
 * and lockout is a windowed counter with reservations (ts_store_counter_add): every decision is
 * one atomic read-modify-write in the database, so a limit holds for the whole cluster and
 * cannot be raced by parallel requests, on one node or many. The per-identity budgets of
 * profiles (ts_local_limits) are per node, as Kuzzle's rateLimit is: they apply to every /v1
 * request, where a database write per request would cost more than the request.
 *
 * Contract common to the calls below: a limit whose rate has count 0 is off (always allowed,
 * nothing stored); a store failure is returned as is (callers answer 503: a limit that cannot
 * be checked fails closed). Subjects are any text; they are never secrets (addresses,
 * e-mails, identity references, key ids).
 */
#ifndef TS_LIMIT_LIMIT_H
#define TS_LIMIT_LIMIT_H

#include <stdbool.h>
#include <stdint.h>

#include "core/config.h"
#include "core/rc.h"

struct ts_store;

enum ts_limit_class {
    TS_LIMIT_TOKEN,     /* per address: POST /token, /v1/login, /v1/identify, /v1/oauth/token */
    TS_LIMIT_OTP,       /* per address: sign-ups, PUT /user changing e-mail, phone or password */
    TS_LIMIT_ANONYMOUS, /* per address: anonymous sign-ins */
    TS_LIMIT_ACCOUNT,   /* per account: password checks and sign-ups naming it */
    TS_LIMIT_KEY,       /* per API key: logins, identifies and exchanges done with it */
    TS_LIMIT_CLASSES
};

/* The class's name in store keys, logs and metrics ("token", "otp", ...). */
const char *ts_limit_class_name(enum ts_limit_class cls);

struct ts_limit_verdict {
    bool allowed;
    int64_t retry_after_s; /* when refused: whole seconds to wait (>= 1), for Retry-After */
};

struct ts_limiter;

/*
 * Builds a limiter from cfg's RATE_LIMIT_* and PASSWORD_LOCKOUT_* knobs over store (both
 * borrowed, and must outlive it). TS_E_INVALID with *err (heap) naming the knob when
 * RATE_LIMIT_EXEMPT is not a list of addresses or CIDR networks.
 */
TS_NODISCARD enum ts_rc ts_limiter_new(const struct ts_config *cfg, struct ts_store *store,
                                       struct ts_limiter **out, char **err);
void ts_limiter_free(struct ts_limiter *l);

#define TS_LIMIT_ADDR_MAX 64 /* bytes of an address subject, NUL included */

/*
 * The subject the per-address limits count for a request from peer (the socket's address as
 * text) whose trusted proxy header (RATE_LIMIT_HEADER) held header_value (NULL when that
 * knob is empty or the header absent; several lines of it joined with ", " in order). With a
 * header, its entries are read from the right, skipping those in RATE_LIMIT_EXEMPT (our own
 * proxies): the first other one is the client (entries left of it are the client's to forge).
 * Entries may carry a port ("1.2.3.4:80", "[v6]:443"). An entry that is not an address counts
 * under one shared subject, "unparsable". IPv6 clients count per /64 (what one host usually
 * holds). Returns false when the client is exempt (then out is unspecified).
 */
bool ts_limit_client(const struct ts_limiter *l, const char *peer, const char *header_value,
                     char out[TS_LIMIT_ADDR_MAX]);

/* Takes one token from cls's bucket for subject at now_us. */
TS_NODISCARD enum ts_rc ts_limit_take(struct ts_limiter *l, enum ts_limit_class cls,
                                      const char *subject, int64_t now_us,
                                      struct ts_limit_verdict *v);

/*
 * Account lockout, counted before the password is checked (reserve, then verify): at most
 * PASSWORD_LOCKOUT_ATTEMPTS checks of an account fail in a window, however many run at once
 * on however many nodes. A reservation refused means the account is locked (v->allowed false,
 * retry_after_s until the window ends). The window starts at an account's first failure and
 * is PASSWORD_LOCKOUT_WINDOW long; each lockout within the last day doubles the next windows
 * (exponential back-off), up to PASSWORD_LOCKOUT_MAX. Accounts that do not exist are counted
 * like the others, so a lockout says nothing about whether an account exists.
 */
struct ts_lockout {
    bool reserved;        /* a slot is held (settle must be called) */
    int64_t value;        /* failures counted in the window, this reservation included */
    int64_t window_us;    /* the window length used */
    char key[208];        /* the failure counter's store key */
    char strike_key[208]; /* the lockouts-in-a-day counter's store key */
};
TS_NODISCARD enum ts_rc ts_lockout_reserve(struct ts_limiter *l, const char *account,
                                           int64_t now_us, struct ts_lockout *t,
                                           struct ts_limit_verdict *v);
enum ts_lockout_outcome {
    TS_LOCKOUT_FAILED,      /* the password was wrong: the slot stays counted */
    TS_LOCKOUT_SUCCEEDED,   /* it was right: the account's failures are cleared */
    TS_LOCKOUT_NOT_CHECKED, /* no check ran (a full hash queue, an error): the slot is given back */
};
/* Ends a reservation. The failure that reaches the threshold records a lockout (a strike, kept
 * for a day) for the back-off; a success clears the failures, not the strikes. Store failures
 * are logged (a slot then stays counted: the safe side). No-op when nothing was reserved. */
void ts_lockout_settle(struct ts_limiter *l, struct ts_lockout *t, enum ts_lockout_outcome outcome,
                       int64_t now_us);

/*
 * Per-node request budgets: a token bucket per subject of per_second tokens (one second's
 * burst), in a fixed-size table (set-associative, evicting the fullest bucket, so a flood of
 * new subjects can only forget budgets, never grow memory). Thread-safe.
 */
struct ts_local_limits;
struct ts_local_limits *ts_local_limits_new(void);
void ts_local_limits_free(struct ts_local_limits *t);
/* per_second 0 means unlimited (always allowed). */
void ts_local_take(struct ts_local_limits *t, const char *subject, int64_t per_second,
                   int64_t now_us, struct ts_limit_verdict *v);

#endif

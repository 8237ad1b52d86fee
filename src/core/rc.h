/*
 * rc.h - the result codes every Tessera function speaks.
 *
 * One X-macro table: each row is a code, the HTTP status a caller that cannot do
 * better should answer with, and a short stable name for logs. Fallible functions
 * return enum ts_rc and leave their output pointers untouched on error.
 */
#ifndef TS_CORE_RC_H
#define TS_CORE_RC_H

#define TS_RC_TABLE(X)                                                                             \
    X(TS_OK, 200, "ok")                                                                            \
    X(TS_AGAIN, 202, "again")           /* work continues asynchronously */                        \
    X(TS_E_INVALID, 400, "invalid")     /* malformed input from the client */                      \
    X(TS_E_PARSE, 400, "parse")         /* a syntax error in client input */                       \
    X(TS_E_TOO_BIG, 413, "too_big")     /* a capped buffer would overflow */                       \
    X(TS_E_BAD_TOKEN, 401, "bad_token") /* a credential failed verification */                     \
    X(TS_E_EXPIRED, 401, "expired")     /* a credential is past its expiry */                      \
    X(TS_E_DENIED, 403, "denied")       /* authenticated but not allowed */                        \
    X(TS_E_NOT_FOUND, 404, "not_found") /* the thing asked for does not exist */                   \
    X(TS_E_CONFLICT, 409, "conflict")   /* a unique constraint would be broken */                  \
    X(TS_E_STALE, 409, "stale")         /* the row changed since it was read: re-read, retry */    \
    X(TS_E_BUSY, 429, "busy")           /* a bounded queue is full */                              \
    X(TS_E_UNAVAILABLE, 503, "unavailable") /* storage unreachable, full or read-only */           \
    X(TS_E_STORE, 500, "store")             /* storage failed in an unexpected way */              \
    X(TS_E_CRYPTO, 500, "crypto")           /* the crypto library failed unexpectedly */           \
    X(TS_E_INTERNAL, 500, "internal")       /* a bug: an invariant did not hold */

enum ts_rc {
#define TS_RC_ENUM(name, status, str) name,
    TS_RC_TABLE(TS_RC_ENUM)
#undef TS_RC_ENUM
        TS_RC__COUNT
};

/* Returns the table's HTTP status for rc (500 for an unknown value). */
int ts_rc_http_status(enum ts_rc rc);

/* Returns the table's short name for rc; a static string, never NULL. */
const char *ts_rc_name(enum ts_rc rc);

#if defined(__GNUC__)
#define TS_NODISCARD __attribute__((warn_unused_result))
#define TS_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define TS_NODISCARD
#define TS_PRINTF(fmt, args)
#endif

#define TS_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Invariant check: never used on input, only on what the code itself guarantees. */
#define TS_ASSERT(cond)                                                                            \
    do {                                                                                           \
        if (!(cond))                                                                               \
            ts_assert_fail(#cond, __FILE__, __LINE__);                                             \
    } while (0)

_Noreturn void ts_assert_fail(const char *what, const char *file, int line);

#endif

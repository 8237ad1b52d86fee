/*
 * limit.c - rate limits and lockout over the store's counters (see limit.h).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/mem.h"
#include "core/util.h"
#include "limit.h"
#include "store/store.h"

#define MAX_EXEMPT 64
#define DAY_US (INT64_C(86400) * 1000000)
/* Back-off doubles at most this many times, whatever PASSWORD_LOCKOUT_MAX says. */
#define MAX_DOUBLINGS 16

struct network {
    int family; /* AF_INET or AF_INET6 */
    uint8_t addr[16];
    unsigned prefix; /* bits */
};

struct ts_limiter {
    struct ts_store *store;
    struct ts_rate rates[TS_LIMIT_CLASSES];
    struct network exempt[MAX_EXEMPT];
    size_t n_exempt;
    int64_t lockout_attempts;
    int64_t lockout_window_us;
    int64_t lockout_max_us;
};

static const char *const class_names[TS_LIMIT_CLASSES] = {"token", "otp", "anonymous", "account",
                                                          "key"};

const char *ts_limit_class_name(enum ts_limit_class cls)
{
    return cls < TS_LIMIT_CLASSES ? class_names[cls] : "?";
}

/* Parses "ADDR" or "ADDR/BITS" (IPv4 or IPv6). */
static bool parse_network(const char *text, struct network *n)
{
    char buf[INET6_ADDRSTRLEN + 8];
    if (strlen(text) >= sizeof(buf))
        return false;
    snprintf(buf, sizeof(buf), "%s", text);
    char *slash = strchr(buf, '/');
    if (slash)
        *slash = '\0';
    memset(n, 0, sizeof(*n));
    if (inet_pton(AF_INET, buf, n->addr) == 1) {
        n->family = AF_INET;
        n->prefix = 32;
    } else if (inet_pton(AF_INET6, buf, n->addr) == 1) {
        n->family = AF_INET6;
        n->prefix = 128;
    } else {
        return false;
    }
    if (slash) {
        int64_t bits;
        if (ts_parse_i64(slash + 1, 0, n->prefix, &bits) != TS_OK)
            return false;
        n->prefix = (unsigned)bits;
    }
    return true;
}

static bool in_network(const struct network *n, int family, const uint8_t *addr)
{
    if (n->family != family)
        return false;
    unsigned full = n->prefix / 8, rest = n->prefix % 8;
    for (unsigned i = 0; i < full; i++)
        if (n->addr[i] != addr[i])
            return false;
    if (rest) {
        uint8_t mask = (uint8_t)(0xFFu << (8 - rest));
        if ((n->addr[full] & mask) != (addr[full] & mask))
            return false;
    }
    return true;
}

enum ts_rc ts_limiter_new(const struct ts_config *cfg, struct ts_store *store,
                          struct ts_limiter **out, char **err)
{
    struct ts_limiter *l = ts_xcalloc(1, sizeof(*l));
    l->store = store;
    l->rates[TS_LIMIT_TOKEN] = cfg->rate_limit_token;
    l->rates[TS_LIMIT_OTP] = cfg->rate_limit_otp;
    l->rates[TS_LIMIT_ANONYMOUS] = cfg->rate_limit_anonymous;
    l->rates[TS_LIMIT_ACCOUNT] = cfg->rate_limit_account;
    l->rates[TS_LIMIT_KEY] = cfg->rate_limit_key;
    l->lockout_attempts = cfg->password_lockout_attempts;
    l->lockout_window_us = cfg->password_lockout_window * 1000000;
    l->lockout_max_us = cfg->password_lockout_max * 1000000;
    if (l->lockout_max_us < l->lockout_window_us)
        l->lockout_max_us = l->lockout_window_us;
    char *list = ts_xstrdup(cfg->rate_limit_exempt);
    char *save = NULL;
    enum ts_rc rc = TS_OK;
    for (char *t = strtok_r(list, ", \t", &save); t && !rc; t = strtok_r(NULL, ", \t", &save)) {
        if (l->n_exempt == MAX_EXEMPT) {
            *err = ts_xasprintf("TESSERA_RATE_LIMIT_EXEMPT: at most %d networks", MAX_EXEMPT);
            rc = TS_E_INVALID;
        } else if (!parse_network(t, &l->exempt[l->n_exempt++])) {
            *err = ts_xasprintf("TESSERA_RATE_LIMIT_EXEMPT: \"%s\" is not an address or a CIDR "
                                "network",
                                t);
            rc = TS_E_INVALID;
        }
    }
    free(list);
    if (rc) {
        free(l);
        return rc;
    }
    *out = l;
    return TS_OK;
}

void ts_limiter_free(struct ts_limiter *l)
{
    free(l);
}

/* Parses one address as a proxy writes it: "1.2.3.4", "1.2.3.4:5678", "2001:db8::1",
 * "[2001:db8::1]" or "[2001:db8::1]:443", with blanks around. IPv4-mapped IPv6 becomes IPv4.
 * Returns the family (AF_INET, AF_INET6) or 0 when it is not an address. */
static int parse_address(const char *s, size_t n, uint8_t addr[16])
{
    while (n && (*s == ' ' || *s == '\t')) {
        s++;
        n--;
    }
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    char buf[INET6_ADDRSTRLEN + 8];
    if (n && s[0] == '[') { /* [v6] or [v6]:port */
        const char *close = memchr(s, ']', n);
        if (!close)
            return 0;
        n = (size_t)(close - s - 1);
        s++;
    } else if (n && memchr(s, '.', n)) { /* v4:port has one colon (::ffff:1.2.3.4 more) */
        const char *colon = memchr(s, ':', n);
        if (colon && !memchr(colon + 1, ':', n - (size_t)(colon - s) - 1))
            n = (size_t)(colon - s);
    }
    if (!n || n >= sizeof(buf))
        return 0;
    memcpy(buf, s, n);
    buf[n] = '\0';
    memset(addr, 0, 16);
    if (inet_pton(AF_INET, buf, addr) == 1)
        return AF_INET;
    if (inet_pton(AF_INET6, buf, addr) != 1)
        return 0;
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};
    bool is_mapped = true;
    for (size_t i = 0; i < sizeof(mapped); i++)
        is_mapped = is_mapped && addr[i] == mapped[i];
    if (!is_mapped)
        return AF_INET6;
    memmove(addr, addr + 12, 4); /* ::ffff:a.b.c.d counts as the IPv4 address */
    memset(addr + 4, 0, 12);
    return AF_INET;
}

static bool exempt(const struct ts_limiter *l, int family, const uint8_t *addr)
{
    for (size_t i = 0; i < l->n_exempt; i++)
        if (in_network(&l->exempt[i], family, addr))
            return true;
    return false;
}

bool ts_limit_client(const struct ts_limiter *l, const char *peer, const char *header_value,
                     char out[TS_LIMIT_ADDR_MAX])
{
    uint8_t addr[16];
    int family = 0;
    if (!header_value) {
        family = parse_address(peer ? peer : "", peer ? strlen(peer) : 0, addr);
        if (family && exempt(l, family, addr))
            return false;
    } else {
        /* From the right: each proxy appends the address it saw, and only the entries our own
         * proxies wrote can be believed. The first one not in an exempt (trusted) network is
         * the client; everything left of it is the client's to forge. */
        size_t end = strlen(header_value);
        for (;;) {
            size_t start = end;
            while (start && header_value[start - 1] != ',')
                start--;
            family = parse_address(header_value + start, end - start, addr);
            if (!family || !exempt(l, family, addr))
                break;
            if (!start)
                return false; /* every hop is trusted */
            end = start - 1;
        }
    }
    if (!family) {
        snprintf(out, TS_LIMIT_ADDR_MAX, "unparsable");
        return true;
    }
    if (family == AF_INET6)
        memset(addr + 8, 0, 8); /* per /64 */
    char txt[INET6_ADDRSTRLEN];
    if (!inet_ntop(family, addr, txt, sizeof(txt)))
        snprintf(txt, sizeof(txt), "unparsable");
    snprintf(out, TS_LIMIT_ADDR_MAX, "%s%s", txt, family == AF_INET6 ? "/64" : "");
    return true;
}

/* A store key "prefix:subject"; a subject too long for the key keeps its first 120 bytes
 * and a 64-bit digest of the rest (two long subjects may then share a bucket: stricter,
 * never looser). */
static void make_key(char *out, size_t cap, const char *prefix, const char *subject)
{
    size_t n = strlen(subject), pn = strlen(prefix);
    if (pn + 1 + n <= TS_STORE_COUNTER_KEY_MAX && pn + 1 + n < cap) {
        memcpy(out, prefix, pn);
        out[pn] = ':';
        memcpy(out + pn + 1, subject, n + 1);
        return;
    }
    uint64_t h = UINT64_C(1469598103934665603);
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)subject[i];
        h *= UINT64_C(1099511628211);
    }
    /* keep whole UTF-8 characters: back off continuation bytes */
    size_t keep = 120;
    while (keep && ((unsigned char)subject[keep] & 0xC0) == 0x80)
        keep--;
    snprintf(out, cap, "%s:%.*s#%016llx", prefix, (int)keep, subject, (unsigned long long)h);
}

static int64_t ceil_seconds(int64_t us)
{
    int64_t s = (us + 999999) / 1000000;
    return s < 1 ? 1 : s;
}

enum ts_rc ts_limit_take(struct ts_limiter *l, enum ts_limit_class cls, const char *subject,
                         int64_t now_us, struct ts_limit_verdict *v)
{
    v->allowed = true;
    v->retry_after_s = 0;
    if (cls >= TS_LIMIT_CLASSES)
        return TS_E_INVALID;
    const struct ts_rate *r = &l->rates[cls];
    if (r->count <= 0)
        return TS_OK;
    int64_t refill = r->period_s * 1000000 / r->count;
    struct ts_bucket_rule rule = {.capacity = (uint32_t)r->burst, .refill_us = refill ? refill : 1};
    char prefix[32], key[TS_STORE_COUNTER_KEY_MAX + 1];
    snprintf(prefix, sizeof(prefix), "rl:%s", class_names[cls]);
    make_key(key, sizeof(key), prefix, subject);
    struct ts_bucket_result res;
    enum ts_rc rc = ts_store_bucket_take(l->store, key, &rule, now_us, 1, &res);
    if (rc)
        return rc;
    v->allowed = res.allowed;
    if (!res.allowed)
        v->retry_after_s = ceil_seconds(res.retry_after_us);
    return TS_OK;
}

enum ts_rc ts_lockout_reserve(struct ts_limiter *l, const char *account, int64_t now_us,
                              struct ts_lockout *t, struct ts_limit_verdict *v)
{
    memset(t, 0, sizeof(*t));
    v->allowed = true;
    v->retry_after_s = 0;
    if (l->lockout_attempts <= 0)
        return TS_OK;
    make_key(t->strike_key, sizeof(t->strike_key), "lk:strikes", account);
    struct ts_counter_result strikes;
    enum ts_rc rc = ts_store_counter_get(l->store, t->strike_key, now_us, &strikes);
    if (rc)
        return rc;
    /* the first lockout keeps the base window; each further one in the day doubles it */
    int64_t window = l->lockout_window_us;
    for (int64_t s = 1; s < strikes.value && s <= MAX_DOUBLINGS && window < l->lockout_max_us; s++)
        window *= 2;
    if (window > l->lockout_max_us)
        window = l->lockout_max_us;
    make_key(t->key, sizeof(t->key), "lk:failures", account);
    struct ts_counter_result res;
    rc = ts_store_counter_add(l->store, t->key, 1, window, now_us, l->lockout_attempts, &res);
    if (rc)
        return rc;
    if (!res.allowed) {
        v->allowed = false;
        v->retry_after_s = ceil_seconds(res.retry_after_us);
        return TS_OK;
    }
    t->reserved = true;
    t->value = res.value;
    t->window_us = window;
    return TS_OK;
}

void ts_lockout_settle(struct ts_limiter *l, struct ts_lockout *t, enum ts_lockout_outcome outcome,
                       int64_t now_us)
{
    if (!t->reserved)
        return;
    t->reserved = false;
    struct ts_counter_result res;
    enum ts_rc rc = TS_OK;
    if (outcome == TS_LOCKOUT_NOT_CHECKED) {
        rc = ts_store_counter_add(l->store, t->key, -1, t->window_us, now_us, 0, &res);
    } else if (outcome == TS_LOCKOUT_SUCCEEDED) {
        /* the account's owner proved the password: its failures are forgiven (the strikes,
         * which lengthen later windows, stay for their day). Reservations of guesses still in
         * flight go with them, so an attacker racing the owner's login may get up to N - 1
         * more checks per such login: fewer than the next window gives anyway. */
        rc = ts_store_counter_reset(l->store, t->key);
    } else if (t->value >= l->lockout_attempts) {
        /* this failure locked the account: remember it for a day, for the back-off */
        rc = ts_store_counter_add(l->store, t->strike_key, 1, DAY_US, now_us, 0, &res);
        ts_log_info("lockout: an account reached %lld failed password checks", (long long)t->value);
    }
    if (rc)
        ts_log_warn("lockout: settling a reservation failed: %s", ts_rc_name(rc));
}

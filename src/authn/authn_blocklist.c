/*
 * authn_blocklist.c - breached passwords, offline (PASSWORD_BLOCKLIST; see authn.h).
 *
 * Two formats, told apart by the first line:
 *
 * - Have I Been Pwned's "ordered by hash" file: "SHA1:COUNT" lines (40 hex digits), sorted
 *   by hash, as haveibeenpwned-downloader writes it (tens of GB). It is never read whole:
 *   it is mapped, and a lookup is a binary search over byte offsets, touching some 30 lines,
 *   i.e. a few pages of the hash prefix's neighbourhood. Hex digits in either case, CRLF or
 *   LF, the count optional. Start-up checks the first and last lines and a few thousand
 *   evenly spaced ones (format and order), so a wrong file (the NTLM edition, one sorted by
 *   count, a truncated download) stops the start instead of silently matching nothing.
 * - Anything else: a plain list of passwords, one per line (CRLF or LF), hashed with SHA-1
 *   when loaded into a sorted array. For small lists (at most PLAIN_MAX_BYTES).
 *
 * SHA-1 because that is what the published list is keyed by; the password never leaves the
 * process and nothing here is a stored credential.
 */
#include <errno.h>
#include <fcntl.h>
#include <openssl/sha.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "authn_int.h"

#define HEX_LEN 40      /* SHA-1 in hex */
#define NTLM_HEX_LEN 32 /* the other edition of the list */
#define SAMPLES 4096    /* lines checked at start-up in a hashed file */
#define MAX_LINE 1024   /* longest line of a plain list */
#define PLAIN_MAX_BYTES (64u << 20)

enum bl_kind { BL_HASHED, BL_PLAIN };

struct ts_pw_blocklist {
    enum bl_kind kind;
    const char *map; /* BL_HASHED: the mapped file */
    size_t size;
    uint8_t (*digests)[SHA_DIGEST_LENGTH]; /* BL_PLAIN: sorted */
    size_t n;
    atomic_bool warned; /* a malformed line met by a lookup was logged */
};

static size_t hex_run(const char *p, const char *end)
{
    size_t n = 0;
    while (p + n < end && ts_hex_digit(p[n]) >= 0)
        n++;
    return n;
}

/* The end of the line starting at p (the '\n', or end). */
static const char *line_end(const char *p, const char *end)
{
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    return nl ? nl : end;
}

/* True when [p, e) is "HEX40", "HEX40:DIGITS", each optionally followed by '\r'. */
static bool hashed_line_ok(const char *p, const char *e)
{
    if (e > p && e[-1] == '\r')
        e--;
    if (e - p < HEX_LEN || hex_run(p, e) != HEX_LEN)
        return false;
    p += HEX_LEN;
    if (p == e)
        return true;
    if (*p++ != ':' || p == e)
        return false;
    for (; p < e; p++)
        if (*p < '0' || *p > '9')
            return false;
    return true;
}

/* Compares the 40 hex digits at line with the upper-case target, ignoring case. */
static int hex_cmp(const char *line, const char *target)
{
    for (size_t i = 0; i < HEX_LEN; i++) {
        int a = ts_hex_digit(line[i]), b = ts_hex_digit(target[i]);
        if (a != b)
            return a < b ? -1 : 1;
    }
    return 0;
}

static void sha1_hex(const void *p, size_t n, char out[HEX_LEN + 1])
{
    static const char digits[] = "0123456789ABCDEF";
    uint8_t d[SHA_DIGEST_LENGTH];
    SHA1(p, n, d);
    for (size_t i = 0; i < sizeof(d); i++) {
        out[2 * i] = digits[d[i] >> 4];
        out[2 * i + 1] = digits[d[i] & 15];
    }
    out[HEX_LEN] = '\0';
    ts_wipe(d, sizeof(d));
}

/* Checks the first, last and SAMPLES evenly spaced lines: format and ascending order. */
static enum ts_rc check_hashed(const char *path, const char *map, size_t size, char **err)
{
    const char *end = map + size;
    const char *prev = NULL;
    for (size_t k = 0; k <= SAMPLES; k++) {
        const char *p;
        if (k == SAMPLES) {
            /* the last line: skip the final newline, then back to the line's start */
            const char *e = end;
            if (e > map && e[-1] == '\n')
                e--;
            p = e;
            while (p > map && p[-1] != '\n')
                p--;
        } else {
            p = map + size / SAMPLES * k + size % SAMPLES * k / SAMPLES;
            if (p > map && p[-1] != '\n')
                p = line_end(p, end) + 1;
            if (p >= end)
                continue;
        }
        const char *e = line_end(p, end);
        if (!hashed_line_ok(p, e)) {
            *err = ts_xasprintf("PASSWORD_BLOCKLIST %s: the line at byte %zu is not SHA1:COUNT "
                                "(40 hex digits, ':', a count)",
                                path, (size_t)(p - map));
            return TS_E_INVALID;
        }
        if (prev && hex_cmp(p, prev) < 0) {
            *err = ts_xasprintf("PASSWORD_BLOCKLIST %s: not sorted by hash near byte %zu "
                                "(download the list ordered by hash)",
                                path, (size_t)(p - map));
            return TS_E_INVALID;
        }
        prev = p;
    }
    return TS_OK;
}

static int digest_cmp(const void *a, const void *b)
{
    const uint8_t *x = a, *y = b;
    for (size_t i = 0; i < SHA_DIGEST_LENGTH; i++)
        if (x[i] != y[i])
            return x[i] < y[i] ? -1 : 1;
    return 0;
}

static enum ts_rc load_plain(const char *path, const char *map, size_t size,
                             struct ts_pw_blocklist *bl, char **err)
{
    if (size > PLAIN_MAX_BYTES) {
        *err = ts_xasprintf("PASSWORD_BLOCKLIST %s: a plain list of passwords may be at most %u "
                            "MiB; convert a larger one to SHA1:COUNT lines sorted by hash "
                            "(docs/DEPLOYMENT.md)",
                            path, PLAIN_MAX_BYTES >> 20);
        return TS_E_INVALID;
    }
    if (memchr(map, '\0', size)) {
        *err = ts_xasprintf("PASSWORD_BLOCKLIST %s: contains NUL bytes; expected text, one "
                            "password per line",
                            path);
        return TS_E_INVALID;
    }
    size_t cap = 1024;
    bl->digests = ts_xmalloc(cap * sizeof(*bl->digests));
    const char *end = map + size;
    size_t lineno = 0;
    for (const char *p = map; p < end;) {
        const char *e = line_end(p, end);
        lineno++;
        size_t len = (size_t)(e - p);
        if (len && p[len - 1] == '\r')
            len--;
        if (len > MAX_LINE) {
            *err = ts_xasprintf("PASSWORD_BLOCKLIST %s:%zu: longer than %d bytes; expected one "
                                "password per line",
                                path, lineno, MAX_LINE);
            return TS_E_INVALID;
        }
        if (len) {
            if (bl->n == cap) {
                cap *= 2;
                bl->digests = ts_xrealloc(bl->digests, cap * sizeof(*bl->digests));
            }
            SHA1((const unsigned char *)p, len, bl->digests[bl->n++]);
        }
        p = e + 1;
    }
    if (bl->n == 0) {
        *err = ts_xasprintf("PASSWORD_BLOCKLIST %s: no passwords in the file", path);
        return TS_E_INVALID;
    }
    qsort(bl->digests, bl->n, sizeof(*bl->digests), digest_cmp);
    return TS_OK;
}

enum ts_rc ts_pw_blocklist_open(const char *path, struct ts_pw_blocklist **out, char **err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        *err = ts_xasprintf("PASSWORD_BLOCKLIST %s: cannot open (%s)", path, strerror(errno));
        return TS_E_INVALID;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        *err = ts_xasprintf("PASSWORD_BLOCKLIST %s: not a regular file", path);
        return TS_E_INVALID;
    }
    size_t size = (size_t)sb.st_size;
    if (size == 0) {
        close(fd);
        *err = ts_xasprintf("PASSWORD_BLOCKLIST %s: the file is empty", path);
        return TS_E_INVALID;
    }
    void *m = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (m == MAP_FAILED) {
        *err = ts_xasprintf("PASSWORD_BLOCKLIST %s: cannot map (%s)", path, strerror(errno));
        return TS_E_INVALID;
    }
    const char *map = m, *end = map + size;
    struct ts_pw_blocklist *bl = ts_xcalloc(1, sizeof(*bl));
    atomic_init(&bl->warned, false);
    const char *first_end = line_end(map, end);
    size_t run = hex_run(map, first_end);
    enum ts_rc rc;
    if (run == HEX_LEN &&
        (first_end - map == HEX_LEN || map[HEX_LEN] == ':' || map[HEX_LEN] == '\r')) {
        bl->kind = BL_HASHED;
        rc = check_hashed(path, map, size, err);
        if (!rc) {
            bl->map = map;
            bl->size = size;
            /* Lookups jump around: read-ahead would only fill the page cache. */
            (void)madvise(m, size, MADV_RANDOM);
            *out = bl;
            return TS_OK;
        }
    } else if (run == NTLM_HEX_LEN && map[NTLM_HEX_LEN] == ':') {
        *err = ts_xasprintf("PASSWORD_BLOCKLIST %s: these are NTLM hashes; download the SHA-1 "
                            "edition of the list",
                            path);
        rc = TS_E_INVALID;
    } else {
        bl->kind = BL_PLAIN;
        rc = load_plain(path, map, size, bl, err);
    }
    munmap(m, size);
    if (rc) {
        ts_pw_blocklist_free(bl);
        return rc;
    }
    *out = bl;
    return TS_OK;
}

static bool hashed_contains(struct ts_pw_blocklist *bl, const char target[HEX_LEN + 1])
{
    const char *map = bl->map, *end = map + bl->size;
    size_t lo = 0, hi = bl->size; /* the line sought, if present, starts in [lo, hi) */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        size_t s = mid; /* the start of the line holding mid, not before lo */
        while (s > lo && map[s - 1] != '\n')
            s--;
        const char *e = line_end(map + s, end);
        if (!hashed_line_ok(map + s, e)) {
            if (!atomic_exchange(&bl->warned, true))
                ts_log_warn("PASSWORD_BLOCKLIST: a malformed line at byte %zu; lookups near it "
                            "find nothing",
                            s);
            return false;
        }
        int c = hex_cmp(map + s, target);
        if (c == 0)
            return true;
        if (c < 0)
            lo = (size_t)(e - map) + 1;
        else
            hi = s;
    }
    return false;
}

bool ts_pw_blocklist_contains(struct ts_pw_blocklist *bl, const char *password, size_t len)
{
    if (!bl)
        return false;
    if (bl->kind == BL_PLAIN) {
        uint8_t d[SHA_DIGEST_LENGTH];
        SHA1((const unsigned char *)password, len, d);
        bool found = bsearch(d, bl->digests, bl->n, sizeof(*bl->digests), digest_cmp) != NULL;
        ts_wipe(d, sizeof(d));
        return found;
    }
    char target[HEX_LEN + 1];
    sha1_hex(password, len, target);
    bool found = hashed_contains(bl, target);
    ts_wipe(target, sizeof(target));
    return found;
}

void ts_pw_blocklist_free(struct ts_pw_blocklist *bl)
{
    if (!bl)
        return;
    if (bl->map)
        munmap((void *)(uintptr_t)bl->map, bl->size);
    free(bl->digests);
    free(bl);
}

/*
 * util.c - randomness, UUIDs, clocks, number parsing (see util.h).
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

void ts_rand_bytes(void *p, size_t n)
{
    unsigned char *out = p;
    while (n > 0) {
        ssize_t got = getrandom(out, n, 0);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "{\"level\":\"fatal\",\"msg\":\"getrandom failed\"}\n");
            abort();
        }
        out += got;
        n -= (size_t)got;
    }
}

void ts_uuid_v4(char out[TS_UUID_STR_LEN + 1])
{
    unsigned char b[16];
    ts_rand_bytes(b, sizeof(b));
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40); /* RFC 4122 §4.4: version 4 */
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80); /* variant 10 */
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (size_t i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[o++] = '-';
        out[o++] = hex[b[i] >> 4];
        out[o++] = hex[b[i] & 15];
    }
    out[o] = '\0';
}

bool ts_uuid_valid(const char *s)
{
    if (!s || strlen(s) != TS_UUID_STR_LEN)
        return false;
    for (size_t i = 0; i < TS_UUID_STR_LEN; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-')
                return false;
        } else if (!isxdigit((unsigned char)s[i])) {
            return false;
        }
    }
    return true;
}

int64_t ts_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t ts_now_s(void)
{
    return ts_now_us() / 1000000;
}

int64_t ts_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Converts days since 1970-01-01 to a proleptic Gregorian date, by counting 400-year eras
 * of 146,097 days from 0000-03-01 (so that the leap day ends each year). */
static void civil_from_days(int64_t days, int64_t *y, int *m, int *d)
{
    days += 719468; /* days from 0000-03-01 to 1970-01-01 */
    int64_t era = (days >= 0 ? days : days - 146096) / 146097;
    int64_t doe = days - era * 146097;                                   /* [0, 146096] */
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365; /* [0, 399] */
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);               /* [0, 365] */
    int64_t mp = (5 * doy + 2) / 153;                                    /* March = 0 */
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

static char *put_digits(char *p, int64_t v, int width)
{
    for (int i = width - 1; i >= 0; i--) {
        p[i] = (char)('0' + v % 10);
        v /= 10;
    }
    return p + width;
}

void ts_time_format(int64_t us, char out[TS_TIME_STR_LEN])
{
    /* Hand-rolled rather than gmtime_r + snprintf: gmtime_r takes glibc's time-zone lock on
     * every call, and answers format several times per request from every thread. */
    int64_t secs = us / 1000000, frac = us % 1000000;
    if (frac < 0) {
        frac += 1000000;
        secs -= 1;
    }
    int64_t days = secs / 86400, rem = secs % 86400;
    if (rem < 0) {
        rem += 86400;
        days -= 1;
    }
    int64_t year;
    int month, day;
    civil_from_days(days, &year, &month, &day);
    if (year < 0 || year > 9999) {
        snprintf(out, TS_TIME_STR_LEN, "%s",
                 year < 0 ? "0000-01-01T00:00:00.000000Z" : "9999-12-31T23:59:59.999999Z");
        return;
    }
    char *p = put_digits(out, year, 4);
    *p++ = '-';
    p = put_digits(p, month, 2);
    *p++ = '-';
    p = put_digits(p, day, 2);
    *p++ = 'T';
    p = put_digits(p, rem / 3600, 2);
    *p++ = ':';
    p = put_digits(p, rem / 60 % 60, 2);
    *p++ = ':';
    p = put_digits(p, rem % 60, 2);
    *p++ = '.';
    p = put_digits(p, frac, 6);
    *p++ = 'Z';
    *p = '\0';
}

/* Days since 1970-01-01 of a proleptic Gregorian date (the inverse of civil_from_days). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* n decimal digits at s into *out; false if any is not a digit. */
static bool get_digits(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

enum ts_rc ts_time_parse(const char *s, int64_t *out_us)
{
    int y, mo, d, h, mi, se;
    if (!s || strlen(s) < 20 || !get_digits(s, 4, &y) || s[4] != '-' ||
        !get_digits(s + 5, 2, &mo) || s[7] != '-' || !get_digits(s + 8, 2, &d) ||
        (s[10] != 'T' && s[10] != 't' && s[10] != ' ') || !get_digits(s + 11, 2, &h) ||
        s[13] != ':' || !get_digits(s + 14, 2, &mi) || s[16] != ':' || !get_digits(s + 17, 2, &se))
        return TS_E_INVALID;
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || (mo == 2 && d == 29 && !leap) ||
        h > 23 || mi > 59 || se > 60)
        return TS_E_INVALID;
    const char *p = s + 19;
    int64_t frac = 0;
    if (*p == '.') {
        p++;
        int digits = 0;
        while (*p >= '0' && *p <= '9') {
            if (digits < 6) {
                frac = frac * 10 + (*p - '0');
            }
            digits++;
            p++;
        }
        if (digits == 0 || digits > 9)
            return TS_E_INVALID;
        for (int i = digits; i < 6; i++)
            frac *= 10;
    }
    int64_t offset = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int oh, om;
        if (!get_digits(p + 1, 2, &oh) || p[3] != ':' || !get_digits(p + 4, 2, &om) || oh > 23 ||
            om > 59)
            return TS_E_INVALID;
        offset = (int64_t)(oh * 60 + om) * 60 * (*p == '+' ? 1 : -1);
        p += 6;
    } else {
        return TS_E_INVALID;
    }
    if (*p)
        return TS_E_INVALID;
    int64_t secs =
        days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + (se > 59 ? 59 : se) - offset;
    *out_us = secs * 1000000 + frac;
    return TS_OK;
}

enum ts_rc ts_duration_parse(const char *s, int64_t *out_us)
{
    if (!s || !*s)
        return TS_E_INVALID;
    /* A bare integer is seconds, as GoTrue's integer knobs are. */
    int64_t plain;
    if (ts_parse_i64(s, 0, INT64_MAX / 1000000, &plain) == TS_OK) {
        *out_us = plain * 1000000;
        return TS_OK;
    }
    int64_t total = 0;
    const char *p = s;
    while (*p) {
        if (!isdigit((unsigned char)*p))
            return TS_E_INVALID;
        errno = 0;
        char *end;
        long long v = strtoll(p, &end, 10);
        if (errno || v < 0)
            return TS_E_INVALID;
        p = end;
        int64_t unit;
        if (strncmp(p, "ms", 2) == 0) {
            unit = 1000;
            p += 2;
        } else if (strncmp(p, "us", 2) == 0) {
            unit = 1;
            p += 2;
        } else if (*p == 's') {
            unit = 1000000;
            p++;
        } else if (*p == 'm') {
            unit = 60 * 1000000LL;
            p++;
        } else if (*p == 'h') {
            unit = 3600 * 1000000LL;
            p++;
        } else {
            return TS_E_INVALID;
        }
        if (v > (INT64_MAX - total) / unit)
            return TS_E_INVALID;
        total += v * unit;
    }
    *out_us = total;
    return TS_OK;
}

void ts_hex_encode(const uint8_t *in, size_t n, char *out)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[in[i] >> 4];
        out[2 * i + 1] = hex[in[i] & 15];
    }
    out[2 * n] = '\0';
}

int ts_hex_digit(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

enum ts_rc ts_parse_i64(const char *s, int64_t min, int64_t max, int64_t *out)
{
    if (!s || !*s || isspace((unsigned char)*s))
        return TS_E_INVALID;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno || *end != '\0' || v < min || v > max)
        return TS_E_INVALID;
    *out = v;
    return TS_OK;
}

enum ts_rc ts_parse_bool(const char *s, bool *out)
{
    static const char *yes[] = {"true", "1", "yes", "on", "t"};
    static const char *no[] = {"false", "0", "no", "off", "f"};
    for (size_t i = 0; i < TS_ARRAY_LEN(yes); i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return TS_OK;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return TS_OK;
        }
    }
    return TS_E_INVALID;
}

int ts_cpu_count(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (int)n;
}

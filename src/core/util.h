/*
 * util.h - randomness, identifiers, time and encodings that every module needs.
 *
 * Randomness comes only from the kernel CSPRNG (getrandom(2)); there is no
 * fallback, because a silently weaker source is worse than a stopped server.
 */
#ifndef TS_CORE_UTIL_H
#define TS_CORE_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rc.h"

/* Fills p with n bytes from the OS CSPRNG; aborts if the kernel refuses (it never should). */
void ts_rand_bytes(void *p, size_t n);

#define TS_UUID_STR_LEN 36
/* Writes a random (version 4) UUID in canonical lower-case form plus NUL into out[37]. */
void ts_uuid_v4(char out[TS_UUID_STR_LEN + 1]);
/* True when s is a canonical UUID string (any version, either case). */
bool ts_uuid_valid(const char *s);

/* Wall-clock time. */
int64_t ts_now_us(void);
int64_t ts_now_s(void);
/* Monotonic time for durations. */
int64_t ts_mono_us(void);

#define TS_TIME_STR_LEN 64
/* Formats microseconds since the epoch as RFC 3339 UTC with microseconds ("...T..:..:...123456Z").
 */
void ts_time_format(int64_t us, char out[TS_TIME_STR_LEN]);
/* Parses an RFC 3339 time ("2027-01-01T00:00:00Z", "...T10:00:00.5+02:00") into microseconds
 * since the epoch. TS_E_INVALID for anything else. */
TS_NODISCARD enum ts_rc ts_time_parse(const char *s, int64_t *out_us);
/* Parses a Go-style duration ("10s", "1h30m", "250ms", "0") or a bare number of seconds. */
TS_NODISCARD enum ts_rc ts_duration_parse(const char *s, int64_t *out_us);

/* Lower-case hex of n bytes into out (2n+1 bytes, NUL-terminated). */
void ts_hex_encode(const uint8_t *in, size_t n, char *out);
/* The value of one hex digit (either case), or -1 when c is not one. */
int ts_hex_digit(int c);

/* Parses a decimal integer in [min, max] with nothing after it. */
TS_NODISCARD enum ts_rc ts_parse_i64(const char *s, int64_t min, int64_t max, int64_t *out);
/* Parses true/false/1/0/yes/no/on/off (any case). */
TS_NODISCARD enum ts_rc ts_parse_bool(const char *s, bool *out);

/* Number of online CPUs, at least 1. */
int ts_cpu_count(void);

#endif

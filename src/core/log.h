/*
 * log.h - structured logging: one JSON object per line on stderr.
 *
 * Callers never pass secrets (tokens, passwords, hashes, keys) to these
 * functions; the request log is built from route names and ids only.
 */
#ifndef TS_CORE_LOG_H
#define TS_CORE_LOG_H

#include "rc.h"

enum ts_log_level { TS_LOG_DEBUG, TS_LOG_INFO, TS_LOG_WARN, TS_LOG_ERROR };

/* Messages below this level are dropped. Default TS_LOG_INFO. */
void ts_log_set_level(enum ts_log_level level);
enum ts_log_level ts_log_get_level(void);

/* Logs {"time":..,"level":..,"msg":<formatted>}. */
void ts_log(enum ts_log_level level, const char *fmt, ...) TS_PRINTF(2, 3);

/* Writes one ready-made JSON object (no newline) as a log line, atomically. */
void ts_log_line(const char *json, size_t len);

#define ts_log_debug(...) ts_log(TS_LOG_DEBUG, __VA_ARGS__)
#define ts_log_info(...) ts_log(TS_LOG_INFO, __VA_ARGS__)
#define ts_log_warn(...) ts_log(TS_LOG_WARN, __VA_ARGS__)
#define ts_log_error(...) ts_log(TS_LOG_ERROR, __VA_ARGS__)

#endif

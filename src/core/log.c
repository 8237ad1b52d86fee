/*
 * log.c - JSON lines on stderr. Each line goes out in one write(2) so lines from
 * different threads never interleave.
 */
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "mem.h"
#include "util.h"

static _Atomic int log_level = TS_LOG_INFO;

void ts_log_set_level(enum ts_log_level level)
{
    atomic_store(&log_level, (int)level);
}

enum ts_log_level ts_log_get_level(void)
{
    return (enum ts_log_level)atomic_load(&log_level);
}

void ts_log_line(const char *json, size_t len)
{
    char stackbuf[2048];
    char *line = len + 1 <= sizeof(stackbuf) ? stackbuf : ts_xmalloc(len + 1);
    memcpy(line, json, len);
    line[len] = '\n';
    size_t off = 0;
    while (off < len + 1) {
        ssize_t n = write(STDERR_FILENO, line + off, len + 1 - off);
        if (n <= 0)
            break; /* nowhere to report a failing log; drop the line */
        off += (size_t)n;
    }
    if (line != stackbuf)
        free(line);
}

void ts_log(enum ts_log_level level, const char *fmt, ...)
{
    if ((int)level < atomic_load(&log_level))
        return;
    static const char *names[] = {"debug", "info", "warn", "error"};
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    char when[TS_TIME_STR_LEN];
    ts_time_format(ts_now_us(), when);
    struct ts_buf b;
    ts_buf_init(&b, 8192);
    enum ts_rc rc =
        ts_buf_appendf(&b, "{\"time\":\"%s\",\"level\":\"%s\",\"msg\":\"", when, names[level]);
    if (!rc)
        rc = ts_buf_append_json_escaped(&b, msg);
    if (!rc)
        rc = ts_buf_append_str(&b, "\"}");
    if (!rc)
        ts_log_line(b.data, b.len);
    ts_buf_free(&b);
}

/* rc.c - the result-code table's lookups. */
#include <stdio.h>
#include <stdlib.h>

#include "rc.h"

static const struct {
    int status;
    const char *name;
} rc_rows[] = {
#define TS_RC_ROW(name, status, str) {status, str},
    TS_RC_TABLE(TS_RC_ROW)
#undef TS_RC_ROW
};

int ts_rc_http_status(enum ts_rc rc)
{
    if ((unsigned)rc >= TS_ARRAY_LEN(rc_rows))
        return 500;
    return rc_rows[rc].status;
}

const char *ts_rc_name(enum ts_rc rc)
{
    if ((unsigned)rc >= TS_ARRAY_LEN(rc_rows))
        return "unknown";
    return rc_rows[rc].name;
}

void ts_assert_fail(const char *what, const char *file, int line)
{
    fprintf(stderr, "{\"level\":\"fatal\",\"msg\":\"assertion failed: %s at %s:%d\"}\n", what, file,
            line);
    abort();
}

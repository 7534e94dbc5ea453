/* Status codes, per-thread error messages and the assertion hook. */
#include "trimodal/core.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>

static _Thread_local char last_error[1024];

const char *tm_last_error(void) { return last_error; }

void tm_clear_error(void) { last_error[0] = '\0'; }

tm_status tm_fail(tm_status s, const char *fmt, ...)
{
    /* format into a scratch buffer first: the arguments may point into
     * last_error itself (tm_fail(s, "context: %s", tm_last_error())) */
    char msg[sizeof last_error];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    memcpy(last_error, msg, sizeof msg);
    return s;
}

const char *tm_status_name(tm_status s)
{
    static const char *names[TM_STATUS_COUNT] = {
        [TM_OK] = "ok",
        [TM_ERR_INVALID] = "invalid argument",
        [TM_ERR_NOMEM] = "out of memory",
        [TM_ERR_IO] = "i/o error",
        [TM_ERR_FORMAT] = "bad format",
        [TM_ERR_LIMIT] = "limit exceeded",
        [TM_ERR_UNSUPPORTED] = "unsupported",
        [TM_ERR_INTERNAL] = "internal error",
    };
    _Static_assert(TM_STATUS_COUNT == 8, "update the status names");
    return (unsigned)s < TM_STATUS_COUNT ? names[s] : "unknown status";
}

/* The hook is set once at start-up by an application that wants it; it is
 * read with a relaxed atomic load so a concurrent set is not a data race. */
static _Atomic(tm_abort_hook) abort_hook;

void tm_set_abort_hook(tm_abort_hook hook) { abort_hook = hook; }

void tm_assert_fail(const char *file, int line, const char *expr)
{
    tm_abort_hook h = abort_hook;
    if (h) h(file, line, expr);
    fprintf(stderr, "trimodal: internal error at %s:%d: assertion '%s' failed\n", file, line,
            expr);
    abort();
}

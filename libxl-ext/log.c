/* log.c: logging back end, error strings, size parsing, clock.
 *
 * Messages are written whole with one fprintf under a lock so that lines
 * from several threads do not interleave.  Level 0 is an error and always
 * printed; 1 is progress (default); 2 is debug, with file:line.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "incmig-internal.h"

int incmig__verbosity = 1;
volatile sig_atomic_t incmig__stop_requested;

void incmig_stop(void)
{
    incmig__stop_requested = 1;
}
static FILE *log_file;
static char log_prefix[64] = "incmig";
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

void incmig_log_setup(int verbosity, FILE *f, const char *prefix)
{
    incmig__verbosity = verbosity;
    log_file = f;
    if (prefix)
        snprintf(log_prefix, sizeof log_prefix, "%s", prefix);
}

void incmig__log_name(const char *prefix)
{
    pthread_mutex_lock(&log_lock);
    snprintf(log_prefix, sizeof log_prefix, "%s", prefix);
    pthread_mutex_unlock(&log_lock);
}

static void vlog(int level, const char *file, int line, int err,
                 const char *fmt, va_list ap)
{
    char msg[2048];

    vsnprintf(msg, sizeof msg, fmt, ap);
    pthread_mutex_lock(&log_lock);
    FILE *f = log_file ? log_file : stderr;
    /* Debug lines carry CLOCK_MONOTONIC, the same clock in every process
     * of the machine: the switchover's steps line up across the source,
     * the receiver and the guest. */
    if (level >= 2)
        fprintf(f, "%s: [%.6f] %s:%d: %s", log_prefix, incmig__now(), file,
                line, msg);
    else
        fprintf(f, "%s: %s%s", log_prefix, level == 0 ? "error: " : "", msg);
    if (err)
        fprintf(f, ": %s", strerror(err));
    fputc('\n', f);
    fflush(f);
    pthread_mutex_unlock(&log_lock);
}

void incmig__log(int level, const char *file, int line, int err,
                 const char *fmt, ...)
{
    va_list ap;

    if (level > incmig__verbosity)
        return;
    va_start(ap, fmt);
    vlog(level, file, line, err, fmt, ap);
    va_end(ap);
}

/* The first message of an interval is printed; the others are counted,
 * and the first one after the interval says how many were left out. */
void incmig__log_limited(struct incmig__ratelimit *rl, int level,
                         const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    double now = incmig__now();
    unsigned long n = 0;

    if (level > incmig__verbosity)
        return;
    pthread_mutex_lock(&rl->lock);
    if (rl->t0 > 0 && now - rl->t0 < INCMIG_RATELIMIT_S) {
        rl->suppressed++;
        pthread_mutex_unlock(&rl->lock);
        return;
    }
    n = rl->suppressed;
    rl->suppressed = 0;
    rl->t0 = now;
    pthread_mutex_unlock(&rl->lock);
    va_start(ap, fmt);
    vlog(level, file, line, 0, fmt, ap);
    va_end(ap);
    if (n)
        incmig__log(level, file, line, 0, "(%lu more like the last message "
                    "suppressed in %.0f s)", n, INCMIG_RATELIMIT_S);
}

const char *incmig_strerror(int rc)
{
    switch (rc) {
    case INCMIG_OK: return "success";
    case INCMIG_EINVAL: return "invalid argument or configuration";
    case INCMIG_EIO: return "I/O error";
    case INCMIG_EPROTO: return "protocol error (malformed data from peer)";
    case INCMIG_ELINK: return "connection to peer lost";
    case INCMIG_ENOSPC: return "no space left on destination";
    case INCMIG_EVERSION: return "incompatible protocol version";
    case INCMIG_ESIZE: return "disk size or block size mismatch";
    case INCMIG_ENOMEM: return "out of memory";
    case INCMIG_EPEER: return "the peer reported a failure";
    case INCMIG_ENOTSUP: return "not supported";
    case INCMIG_ECANCEL: return "interrupted";
    default: return "unknown error";
    }
}

int incmig_parse_size(const char *s, uint64_t *val_r)
{
    char *end;
    uint64_t mult = 1;

    if (!s || !isdigit((unsigned char)*s))
        return INCMIG_EINVAL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno)
        return INCMIG_EINVAL;
    switch (*end) {
    case '\0': break;
    case 'k': case 'K': mult = UINT64_C(1) << 10; end++; break;
    case 'm': case 'M': mult = UINT64_C(1) << 20; end++; break;
    case 'g': case 'G': mult = UINT64_C(1) << 30; end++; break;
    case 't': case 'T': mult = UINT64_C(1) << 40; end++; break;
    default: return INCMIG_EINVAL;
    }
    if (*end == 'i' && mult > 1)
        end++;
    if ((*end == 'B' || *end == 'b') && end[1] == '\0')
        end++;
    if (*end != '\0')
        return INCMIG_EINVAL;
    if (v > UINT64_MAX / mult)
        return INCMIG_EINVAL;
    *val_r = v * mult;
    return 0;
}

double incmig__now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

void incmig__deadline(struct timespec *ts, clockid_t clk, double s)
{
    if (s > 1e9)
        s = 1e9;
    time_t sec = (time_t)s;
    clock_gettime(clk, ts);
    ts->tv_sec += sec;
    ts->tv_nsec += (long)((s - (double)sec) * 1e9);
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}
